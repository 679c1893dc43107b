//! End to end: a 3-node `calm up` cluster of real processes on loopback. A write at node 0
//! is readable at node 2; after `kill -9` of a node every key can still be read and
//! written (replication factor 2); `calm up` restarts the node, `calm status` shows each
//! state along the way, and the restarted node catches up from its peers.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm::kvs::{Ack, Client, Op, ReadValue, Reply, Write};

const KEYS: usize = 60;

struct Up {
    child: Child,
    dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
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

/// Three consecutive free UDP ports on loopback.
fn free_base_port() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_mul(37).wrapping_add(attempt * 97)) % 30_000;
        let free = (0..3).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no three free consecutive ports found");
}

impl Up {
    fn start() -> Up {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_calm"))
            .args([
                "up",
                "--nodes",
                "3",
                "--threads",
                "1",
                "--restart-after",
                "6",
                "--base-port",
            ])
            .arg(base.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
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
            line.starts_with("ready: 3 nodes"),
            "unexpected first line: {line}"
        );
        let addrs = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
            .collect();
        Up { child, dir, addrs }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn ca(&self) -> PathBuf {
        self.data().join("ca").join("ca.pem")
    }

    async fn client(&self, i: usize) -> Client {
        Client::connect(self.addrs[i], &self.ca())
            .await
            .expect("connect")
    }

    /// `calm status --json`, as a user would run it.
    fn status(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_calm"))
            .args(["status", "--json", "--cluster"])
            .arg(self.data().join("cluster.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status prints JSON")
    }

    fn node_status(&self, i: usize) -> (String, Option<u64>) {
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
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i}"))
}

/// Reads every key through `client`; returns how many hold the expected count.
async fn count_correct(client: &Client, expected: i128) -> usize {
    let ops = (0..KEYS)
        .map(|i| Op::Get {
            key: key(i),
            meta: false,
        })
        .collect();
    match client.execute_with_ack(ops, Ack::One).await {
        Ok(results) => results
            .iter()
            .filter(|r| **r == Ok(Reply::Value(Some(ReadValue::Counter { value: expected }))))
            .count(),
        Err(_) => 0,
    }
}

async fn increment_all(client: &Client, ack: Ack) -> Vec<calm::kvs::OpResult> {
    let ops = (0..KEYS)
        .map(|i| Op::Write {
            key: key(i),
            write: Write::Increment(1),
        })
        .collect();
    client
        .execute_with_ack(ops, ack)
        .await
        .expect("the batch is answered")
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_kill_9_and_catch_up() {
    let up = Up::start();
    let c0 = up.client(0).await;
    let c2 = up.client(2).await;

    // Writes at node 0 (half acknowledged by every replica), readable at node 2.
    assert!(
        increment_all(&c0, Ack::All)
            .await
            .iter()
            .all(|r| *r == Ok(Reply::Written))
    );
    wait_for(
        "node 2 to read node 0's writes",
        Duration::from_secs(5),
        || count_correct_is(&c2, 1, KEYS),
    )
    .await;
    for (i, (state, _)) in (0..3).map(|i| (i, up.node_status(i))) {
        assert_eq!(state, "alive", "node {i} should be alive at start");
    }

    // kill -9 node 1.
    let (_, pid) = up.node_status(1);
    let pid = pid.expect("node 1 reports its pid");
    assert!(
        Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );

    // Every key can still be read and written through the survivors.
    let started = Instant::now();
    wait_for(
        "every key readable after kill -9",
        Duration::from_secs(10),
        || count_correct_is(&c0, 1, KEYS),
    )
    .await;
    let results = increment_all(&c2, Ack::One).await;
    assert!(
        results.iter().all(|r| *r == Ok(Reply::Written)),
        "writes after kill -9: {results:?}"
    );
    wait_for(
        "the new writes readable everywhere",
        Duration::from_secs(10),
        || count_correct_is(&c0, 2, KEYS),
    )
    .await;
    eprintln!(
        "reads and writes of every key succeeded {:?} after kill -9",
        started.elapsed()
    );

    // The cluster notices, and calm status says so.
    wait_for(
        "node 1 to be seen as failed",
        Duration::from_secs(15),
        || {
            let state = up.node_status(1).0;
            async move { state == "suspect" || state == "dead" }
        },
    )
    .await;

    // calm up restarts it; it rejoins with a new process and catches up.
    wait_for(
        "node 1 to be restarted and alive",
        Duration::from_secs(30),
        || {
            let (state, new_pid) = up.node_status(1);
            async move { state == "alive" && new_pid.is_some_and(|p| p != pid) }
        },
    )
    .await;
    let c1 = up.client(1).await;
    let restarted = Instant::now();
    wait_for("node 1 to catch up", Duration::from_secs(15), || {
        count_correct_is(&c1, 2, KEYS)
    })
    .await;
    eprintln!(
        "the restarted node served every key {:?} after it was up",
        restarted.elapsed()
    );
    // Its own copies: the keys it owns are held locally, not fetched from others.
    let keys_held = up.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == up.addrs[1].to_string())
        .and_then(|n| n["keys"].as_u64())
        .unwrap_or(0);
    assert!(keys_held > 0, "the restarted node holds no keys of its own");
}

/// Whether `client` reads `count` keys at `expected`.
async fn count_correct_is(client: &Client, expected: i128, count: usize) -> bool {
    count_correct(client, expected).await == count
}
