//! End to end: `calm up`, then functions and DAGs through the command line as a newcomer
//! would use them (README), functions written with the Rust guest SDK, a repeatable-read
//! anomaly between real processes, and bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Up, free_base_port};

/// The repository's root (these tests belong to `cli/`).
fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Exit status 1 and one line on stderr containing `needle`.
fn fails_with(out: Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    usage_error(out, needle);
}

/// Exit status 1 and `needle` on stderr (usage errors add a hint line).
fn usage_error(out: Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

fn example(name: &str) -> String {
    repo()
        .join("examples/functions")
        .join(format!("{name}.wat"))
        .display()
        .to_string()
}

#[test]
fn a_newcomer_registers_and_calls_square_of_increment() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(3, &dir.path().join("data"), free_base_port(3), &[]);
    // The README's steps.
    assert_eq!(
        ok(up.calm(&["fn", "register", "increment", &example("increment")])),
        "registered function increment"
    );
    ok(up.calm(&["fn", "register", "square", &example("square")]));
    ok(up.calm(&[
        "dag",
        "register",
        "square-inc",
        "--edge",
        "increment:square",
    ]));
    assert_eq!(ok(up.calm(&["dag", "call", "square-inc", "3"])), "16");
    assert_eq!(ok(up.calm(&["fn", "call", "increment", "41"])), "42");
    let ls = ok(up.calm(&["fn", "ls"]));
    assert!(
        ls.contains("increment") && ls.contains("square-inc  increment:square"),
        "{ls}"
    );
    // JSON: the result and where each function ran.
    let doc: serde_json::Value =
        serde_json::from_str(&ok(up.calm(&["dag", "call", "square-inc", "-7", "--json"]))).unwrap();
    assert_eq!(doc["result"], "36");
    assert_eq!(doc["placement"].as_array().unwrap().len(), 2);
    // An output key is written when the call succeeds.
    ok(up.calm(&["dag", "call", "square-inc", "9", "--output-key", "answer"]));
    assert_eq!(ok(up.calm(&["kv", "get", "answer"])), "100");
    // calm status shows the executors' figures.
    let status = ok(up.calm(&["status"]));
    assert!(status.contains("functions: 1 executors"), "{status}");
    assert!(status.contains("placed "), "{status}");
    // Arguments by reference and from a file.
    let array: Vec<u8> = [5i64, 6, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    let file = dir.path().join("array.bin");
    std::fs::write(&file, &array).unwrap();
    ok(up.calm(&["fn", "register", "sum", &example("sum")]));
    assert_eq!(
        ok(up.calm(&["fn", "call", "sum", &format!("@{}", file.display())])),
        "18"
    );
    ok(up.calm(&["dag", "register", "total", "--fn", "sum"]));
    let client = tokio::runtime::Runtime::new().unwrap();
    client.block_on(async {
        // On every replica before the call (the executor may read the key at another one).
        let c = up.client(1).await;
        let put = calm_kvs::Op::Write {
            key: "numbers".into(),
            write: calm_kvs::Write::Lww(array.clone().into()),
        };
        let done = c
            .execute_with_ack(vec![put], calm_kvs::Ack::All)
            .await
            .unwrap();
        assert_eq!(done, vec![Ok(calm_kvs::Reply::Written)]);
    });
    assert_eq!(
        ok(up.calm(&["dag", "call", "total", "ref:numbers", "ref:numbers"])),
        "36"
    );
}

/// Builds the guest SDK's examples (installing the wasm32 target if needed).
fn build_guests() -> PathBuf {
    let out = Command::new(repo().join("scripts/build-guests"))
        .output()
        .expect("run scripts/build-guests");
    assert!(
        out.status.success(),
        "scripts/build-guests failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo().join("target/guests")
}

#[test]
fn functions_written_in_rust_with_the_guest_sdk() {
    let guests = build_guests();
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(2, &dir.path().join("data"), free_base_port(2), &[]);
    let wasm = |name: &str| guests.join(format!("{name}.wasm")).display().to_string();
    for f in ["increment", "square", "sum", "word-count"] {
        ok(up.calm(&["fn", "register", f, &wasm(f)]));
    }
    ok(up.calm(&["dag", "register", "sq-inc", "--edge", "increment:square"]));
    assert_eq!(ok(up.calm(&["dag", "call", "sq-inc", "11"])), "144");
    fails_with(
        up.calm(&["fn", "call", "increment", "eleven"]),
        "the argument is not an integer",
    );
    // A guest that reads and writes keys.
    assert_eq!(
        ok(up.calm(&["fn", "call", "word-count", "one two three"])),
        "3"
    );
    assert_eq!(ok(up.calm(&["fn", "call", "word-count", "four five"])), "5");
    assert_eq!(ok(up.calm(&["kv", "get", "words"])), "5");
}

const READER: &str = r#"(module
  (import "calm" "get" (func $get (param i32 i32) (result i64)))
  (import "calm" "get_read" (func $get_read (param i32)))
  (import "calm" "set_result" (func $set_result (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "balance")
  (data (i32.const 16) "go")
  ;; Reads balance, then waits (a bounded number of reads) until the key `go` exists;
  ;; returns the balance it read first.
  (func (export "run") (result i32)
    (local $len i64) (local $i i32)
    (local.set $len (call $get (i32.const 0) (i32.const 7)))
    (call $get_read (i32.const 1024))
    (block $done
      (loop $wait
        (br_if $done (i64.ge_s (call $get (i32.const 16) (i32.const 2)) (i64.const 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $wait (i32.lt_u (local.get $i) (i32.const 300000)))))
    (call $set_result (i32.const 1024) (i32.wrap_i64 (local.get $len)))
    (i32.const 0)))"#;

const REREADER: &str = r#"(module
  (import "calm" "arg_len" (func $arg_len (param i32) (result i32)))
  (import "calm" "arg_read" (func $arg_read (param i32 i32) (result i32)))
  (import "calm" "get" (func $get (param i32 i32) (result i64)))
  (import "calm" "get_read" (func $get_read (param i32)))
  (import "calm" "set_result" (func $set_result (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "balance")
  ;; Returns "<what the predecessor read>|<what this reads now>".
  (func (export "run") (result i32)
    (local $a i32) (local $b i32)
    (local.set $a (call $arg_len (i32.const 0)))
    (drop (call $arg_read (i32.const 0) (i32.const 1024)))
    (i32.store8 (i32.add (i32.const 1024) (local.get $a)) (i32.const 124))
    (local.set $b (i32.wrap_i64 (call $get (i32.const 0) (i32.const 7))))
    (call $get_read (i32.add (i32.const 1025) (local.get $a)))
    (call $set_result (i32.const 1024) (i32.add (i32.add (local.get $a) (local.get $b)) (i32.const 1)))
    (i32.const 0)))"#;

/// Calls `read-twice` while another client changes `balance`; the first function has read
/// it before the change, the second after (under lww).
fn call_during_a_write(up: &Up, consistency: &str, round: u32) -> String {
    ok(up.calm(&["kv", "del", "go"]));
    ok(up.calm(&["kv", "put", "balance", "100"]));
    // Let the caches that hold the key catch up with the reset.
    std::thread::sleep(Duration::from_millis(300));
    let mut call = Command::new(env!("CARGO_BIN_EXE_calm"));
    call.args([
        "dag",
        "call",
        "read-twice",
        "--consistency",
        consistency,
        "--cluster",
    ])
    .arg(up.cluster_file());
    let child = call
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(up.calm(&["kv", "put", "balance", &format!("{}", 200 + round)]));
    // The change reaches every cache (a push takes milliseconds) before `go` is set.
    std::thread::sleep(Duration::from_millis(500));
    ok(up.calm(&["kv", "put", "go", "1"]));
    let started = std::time::Instant::now();
    let out = ok(child.wait_with_output().unwrap());
    println!("{consistency}: answered {:?} after go", started.elapsed());
    out
}

#[test]
fn repeatable_read_prevents_the_anomaly_lww_shows() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(2, &dir.path().join("data"), free_base_port(2), &[]);
    let write = |name: &str, text: &str| -> String {
        let path = dir.path().join(format!("{name}.wat"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    ok(up.calm(&["fn", "register", "reader", &write("reader", READER)]));
    ok(up.calm(&["fn", "register", "rereader", &write("rereader", REREADER)]));
    ok(up.calm(&["dag", "register", "read-twice", "--edge", "reader:rereader"]));
    let lww = call_during_a_write(&up, "lww", 1);
    assert_eq!(
        lww, "100|201",
        "under lww the second read sees the concurrent write"
    );
    let rr = call_during_a_write(&up, "repeatable-read", 2);
    assert_eq!(rr, "100|100", "repeatable read: one version per call");
}

#[test]
fn bad_input_gets_one_clear_line_and_the_cluster_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(1, &dir.path().join("data"), free_base_port(1), &[]);
    let file = |name: &str, bytes: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    ok(up.calm(&["fn", "register", "increment", &example("increment")]));
    fails_with(
        up.calm(&["fn", "register", "notes", &file("notes.txt", b"hello")]),
        "is not a WebAssembly module",
    );
    fails_with(
        up.calm(&["fn", "register", "x", "/nonexistent/file.wasm"]),
        "cannot read /nonexistent/file.wasm",
    );
    fails_with(
        up.calm(&[
            "fn",
            "register",
            "no-run",
            &file("no-run.wat", b"(module (memory (export \"memory\") 1))"),
        ]),
        "does not export `run",
    );
    fails_with(
        up.calm(&["fn", "call", "nobody", "1"]),
        "no function named 'nobody'",
    );
    fails_with(
        up.calm(&["dag", "call", "nothing", "1"]),
        "no DAG named 'nothing'",
    );
    fails_with(
        up.calm(&["dag", "register", "loop", "--edge", "increment:increment"]),
        "cycle",
    );
    fails_with(
        up.calm(&["dag", "register", "ghost", "--edge", "increment:ghost"]),
        "no function named 'ghost'",
    );
    usage_error(
        up.calm(&["dag", "register", "bad", "--edge", "increment"]),
        "not an edge",
    );
    usage_error(
        up.calm(&["dag", "call", "x", "--consistency", "serializable"]),
        "unknown consistency",
    );
    let spin = file(
        "spin.wat",
        b"(module (memory (export \"memory\") 1) (func (export \"run\") (result i32) (loop $l (br $l)) (i32.const 0)))",
    );
    ok(up.calm(&["fn", "register", "spin", &spin]));
    // Stopped by its fuel, or by its deadline when a loaded machine burns fuel slowly:
    // either way one clear line, and the node carries on.
    let out = up.calm(&["fn", "call", "spin"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let needle = if err.contains("ran past its deadline") {
        "ran past its deadline"
    } else {
        "ran out of fuel"
    };
    fails_with(out, needle);
    let bomb = file(
        "bomb.wat",
        b"(module (memory (export \"memory\") 1) (func (export \"run\") (result i32) (loop $l (drop (memory.grow (i32.const 64))) (br $l)) (i32.const 0)))",
    );
    ok(up.calm(&["fn", "register", "bomb", &bomb]));
    fails_with(up.calm(&["fn", "call", "bomb"]), "memory limit");
    fails_with(
        up.calm(&["fn", "call", "increment", "ref:missing"]),
        "ref:missing",
    );
    assert_eq!(ok(up.calm(&["fn", "call", "increment", "1"])), "2");
}
