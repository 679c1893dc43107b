//! End to end: a real `calm server` process, and every `calm kv` command of CLI.md run
//! against it as a user would, checking output and exit status.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct ServerProcess {
    child: Child,
    cluster: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_calm"))
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--threads",
                "2",
                "--data-dir",
            ])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start calm server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("ready: 127.0.0.1:"),
            "unexpected first line: {line:?}"
        );
        ServerProcess {
            child,
            cluster: data.join("cluster.toml"),
            _dir: dir,
        }
    }

    fn kv(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_calm"))
            .arg("kv")
            .args(args)
            .arg("--cluster")
            .arg(&self.cluster)
            .output()
            .expect("run calm kv")
    }

    fn stop(mut self) -> std::process::ExitStatus {
        // SIGTERM, as a service manager would send.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn every_kv_command_against_a_real_server() {
    let server = ServerProcess::start();

    // put / get / del (lww)
    assert_eq!(ok(server.kv(&["put", "k", "v"])), "OK\n");
    assert_eq!(ok(server.kv(&["get", "k"])), "v\n");
    let json: serde_json::Value =
        serde_json::from_str(&ok(server.kv(&["get", "k", "--json"]))).unwrap();
    assert_eq!(json["value"], "v");
    assert_eq!(json["type"], "lww");
    assert!(json["stamp"]["wall_ms"].as_u64().unwrap() > 0);
    assert_eq!(ok(server.kv(&["del", "k"])), "deleted\n");
    let missing = server.kv(&["get", "k"]);
    assert_eq!(missing.status.code(), Some(2), "a missing key exits 2");
    assert!(stdout(&missing).is_empty());
    let missing = server.kv(&["get", "k", "--json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stdout(&missing).contains("\"found\":false"));

    // add / rem (orset by default, set on request)
    ok(server.kv(&["add", "s", "b", "a", "c"]));
    ok(server.kv(&["rem", "s", "b"]));
    assert_eq!(ok(server.kv(&["get", "s"])), "a\nc\n");
    ok(server.kv(&["add", "g", "x", "--type", "set"]));
    assert!(ok(server.kv(&["get", "g", "--json"])).contains("\"type\":\"set\""));

    // incr / decr (counter, BY defaults to 1, prints the new value)
    assert_eq!(ok(server.kv(&["incr", "n"])), "1\n");
    assert_eq!(ok(server.kv(&["incr", "n", "10"])), "11\n");
    assert_eq!(ok(server.kv(&["decr", "n"])), "10\n");
    assert_eq!(ok(server.kv(&["decr", "n", "15"])), "-5\n");

    // put --type max | priority | causal
    ok(server.kv(&["put", "m", "3", "--type", "max"]));
    ok(server.kv(&["put", "m", "1", "--type", "max"]));
    assert_eq!(ok(server.kv(&["get", "m"])), "3\n");
    ok(server.kv(&["put", "p", "slow", "--type", "priority", "--priority", "9"]));
    ok(server.kv(&["put", "p", "fast", "--type", "priority", "--priority", "-1"]));
    assert_eq!(ok(server.kv(&["get", "p"])), "fast\n");
    ok(server.kv(&["put", "c", "one", "--type", "causal"]));
    assert_eq!(ok(server.kv(&["get", "c"])), "one\n");

    // A write of another type fails with exit 1 and names both types.
    let clash = server.kv(&["incr", "m"]);
    assert_eq!(clash.status.code(), Some(1));
    let err = stderr(&clash);
    assert!(err.contains("max") && err.contains("counter"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(
        ok(server.kv(&["get", "m"])),
        "3\n",
        "the refused write changed nothing"
    );

    // Bad arguments: exit 1, one clear line.
    let bad = server.kv(&["put", "m2", "many", "--type", "max"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("not an integer"));
    let bad = server.kv(&["put", "p2", "x", "--type", "priority"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("--priority"));

    // Acknowledgement levels and merged reads (on one node, every level is met by it).
    assert_eq!(
        ok(server.kv(&["put", "acked", "yes", "--ack", "all"])),
        "OK\n"
    );
    assert_eq!(ok(server.kv(&["incr", "acked-n", "--ack", "2"])), "1\n");
    assert_eq!(ok(server.kv(&["get", "acked", "--read", "all"])), "yes\n");
    let bad = server.kv(&["put", "x", "y", "--ack", "some"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("not one, all, or a number"));

    // Graceful stop on SIGTERM.
    let status = server.stop();
    assert!(status.success(), "server exit: {status:?}");
}

#[test]
fn client_commands_without_a_cluster_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(["kv", "get", "k", "--cluster"])
        .arg(dir.path().join("cluster.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("calm server"), "{}", stderr(&out));
    // A node that is not running: a clear error, not a hang.
    let ca = dir.path().join("ca");
    Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(["ca", "init", "--out"])
        .arg(&ca)
        .output()
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(["ca", "issue", "--client", "me", "--ca"])
        .arg(&ca)
        .output()
        .unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(["kv", "get", "k", "--addr", "127.0.0.1:9", "--ca"])
        .arg(Path::new(&ca).join("ca.pem"))
        .arg("--cert")
        .arg(dir.path().join("clients").join("me.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn ca_commands_make_a_usable_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_calm"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(out.status.success());
    // A second init refuses to replace the CA.
    let again = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));
    let nodes = dir.path().join("nodes");
    let out = run(&[
        "ca",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "db1.example",
        "--out",
        nodes.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(nodes.join("db1.example.pem").is_file() && nodes.join("db1.example.key").is_file());
    let bad = run(&[
        "ca",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "../evil",
        "--out",
        nodes.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
}
