//! Test support: a `calm up` cluster of real processes on loopback ports.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use calm::kvs::Client;

/// `n` consecutive free UDP ports on loopback; the first.
pub fn free_base_port(n: u16) -> u16 {
    free_ports(n, |p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

/// `n` consecutive free TCP ports on loopback; the first.
pub fn free_tcp_base_port(n: u16) -> u16 {
    free_ports(n, |p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

fn free_ports(n: u16, free: impl Fn(u16) -> bool) -> u16 {
    // Tests of one binary run at once: each call starts its search elsewhere.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u16).wrapping_add(call.wrapping_mul(7_919));
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_mul(37).wrapping_add(attempt * 97)) % 30_000;
        if (0..n).all(|i| free(base + i)) {
            return base;
        }
    }
    panic!("no {n} free consecutive ports found");
}

/// A running `calm up`; stopped (SIGTERM, then kill) when dropped.
pub struct Up {
    pub child: Child,
    pub data: PathBuf,
    pub addrs: Vec<SocketAddr>,
    /// Node i's RESP port.
    pub resp: Vec<u16>,
}

impl Drop for Up {
    fn drop(&mut self) {
        signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

/// Sends a signal (`-TERM`, `-INT`, `-9`) to a process.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

impl Up {
    /// Starts `nodes` nodes at `base`.. (RESP at `resp_base`..) with `data` as the data dir,
    /// and waits for `ready:`.
    pub fn start_with_resp(
        nodes: u16,
        data: &Path,
        base: u16,
        resp_base: u16,
        extra: &[&str],
    ) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_calm"))
            .arg("up")
            .arg("--nodes")
            .arg(nodes.to_string())
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--resp-port")
            .arg(resp_base.to_string())
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start calm up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("calm up printed nothing");
        assert!(
            line.starts_with(&format!("ready: {nodes} nodes")),
            "unexpected first line: {line}"
        );
        let addrs = (0..nodes)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
            .collect();
        Up {
            child,
            data: data.to_path_buf(),
            addrs,
            resp: (0..nodes).map(|i| resp_base + i).collect(),
        }
    }

    /// Like [`start_with_resp`](Self::start_with_resp) with free RESP ports.
    pub fn start(nodes: u16, data: &Path, base: u16, extra: &[&str]) -> Up {
        Up::start_with_resp(nodes, data, base, free_tcp_base_port(nodes), extra)
    }

    pub fn ca(&self) -> PathBuf {
        self.data.join("ca").join("ca.pem")
    }

    /// The CA and the client certificate `calm up` issued and named in the cluster file.
    pub fn credentials(&self) -> calm::kvs::tls::Credentials {
        calm::kvs::cluster_file::ClusterFile::read(&self.cluster_file())
            .expect("cluster file")
            .credentials()
            .expect("the cluster file names a client certificate")
    }

    pub fn cluster_file(&self) -> PathBuf {
        self.data.join("cluster.toml")
    }

    pub async fn client(&self, i: usize) -> Client {
        Client::connect(self.addrs[i], &self.credentials())
            .await
            .expect("connect")
    }

    /// Runs `calm ARGS --cluster DIR/cluster.toml`, as a user would.
    pub fn calm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_calm"))
            .args(args)
            .arg("--cluster")
            .arg(self.cluster_file())
            .output()
            .expect("run calm")
    }

    /// `calm status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.calm(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status prints JSON")
    }

    /// Node `i`'s state and process id, as `calm status` reports them.
    pub fn node_status(&self, i: usize) -> (String, Option<u64>) {
        let status = self.status();
        let node = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == self.addrs[i].to_string())
            .cloned()
            .unwrap_or_default();
        (
            node["state"].as_str().unwrap_or("missing").to_string(),
            node["pid"].as_u64(),
        )
    }

    /// Ctrl-C: SIGINT, then waits until `calm up` has stopped every node.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        assert!(signal(self.child.id(), "-INT"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "calm up did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts `calm server` with `args` and waits for its `ready:` line; returns the process and
/// that line.
pub fn server(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calm"))
        .arg("server")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start calm server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("ready:"),
        "unexpected first line: {line:?}"
    );
    (child, line)
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `redis-server` on a free loopback port with persistence off (installed by
/// `scripts/test` when missing); killed when dropped.
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_base_port(1);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
