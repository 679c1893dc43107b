//! No acknowledged write is lost: a 3-node `calm up` with its default settings (two
//! replicas per key, ack one, durability async) takes concurrent writes through random
//! nodes — native clients and Redis clients — while a random `calm server` is `kill -9`'d
//! every 7-9 s and `calm up` restarts it 6 s later (long enough for the others to declare
//! it dead, so keys change owners and change back), and the whole cluster is stopped and
//! started once. Then every acknowledged counter increment, set member and register write
//! must be there, nothing unwritten may appear, and every replica must hold the same. The
//! same again with durability `sync` and ack `all`, which lose nothing acknowledged at all.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calm::kvs::Ack;
use calm_bench::failures::{FailuresConfig, check, run_load};
use common::{Up, free_base_port, free_tcp_base_port, signal};
use rand::{RngExt, SeedableRng};

const NODES: u16 = 3;

fn start(data: &std::path::Path, base: u16, resp: u16, extra: &[&str]) -> Up {
    let mut args = vec!["--threads", "1", "--restart-after", "6"];
    args.extend_from_slice(extra);
    Up::start_with_resp(NODES, data, base, resp, &args)
}

/// Kills a random running node with SIGKILL; returns which, if one was running.
fn kill_one(up: &Up, rng: &mut impl RngExt) -> Option<usize> {
    let first = rng.random_range(0..NODES as usize);
    (0..NODES as usize)
        .map(|k| (first + k) % NODES as usize)
        .find_map(|i| {
            let pid = up.node_status(i).1?;
            signal(pid as u32, "-KILL").then_some(i)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_a_full_restart() {
    kill_restart_and_check(Ack::One, &[], Duration::from_secs(75)).await;
}

/// With durability `sync` (the Redis clients' writes, ack one) and ack `all` (the native
/// clients'), nothing acknowledged may be lost at all: not even a write whose acknowledging
/// node dies before it gossiped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_and_ack_all_nothing_acknowledged_is_lost() {
    kill_restart_and_check(Ack::All, &["--durability", "sync"], Duration::from_secs(45)).await;
}

/// Writes through random nodes for `run` while nodes are killed and restarted and the whole
/// cluster restarts once (after 20 s), then checks the history.
async fn kill_restart_and_check(ack: Ack, extra: &[&str], run: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = free_base_port(NODES);
    let resp = free_tcp_base_port(NODES);
    let seed = std::process::id() as u64;
    println!("seed {seed}");
    let mut up = start(&data, base, resp, extra);
    let config = FailuresConfig {
        nodes: up.addrs.clone(),
        resp_ports: up.resp.clone(),
        ca: up.credentials(),
        native_clients: 3,
        resp_clients: 3,
        keys: 12,
        ack,
        pause: Duration::from_millis(5),
        prefix: format!("failures/{seed}"),
        seed,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (config, stop) = (config.clone(), stop.clone());
        tokio::spawn(async move { run_load(&config, stop).await })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut kills = 0;
    let mut restarted = false;
    // At least `run`, and until 3 kills happened (a slow machine restarts nodes slowly).
    while started.elapsed() < run || (kills < 3 && started.elapsed() < 3 * run) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(7_000..9_000))).await;
        if !restarted && started.elapsed() > Duration::from_secs(20) {
            // The whole cluster stops (Ctrl-C) and comes back on its data.
            let status = tokio::task::block_in_place(|| up.interrupt());
            assert!(status.success(), "calm up stopped with {status}");
            up = tokio::task::block_in_place(|| start(&data, base, resp, extra));
            restarted = true;
            continue;
        }
        if tokio::task::block_in_place(|| kill_one(&up, &mut rng)).is_some() {
            kills += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let history = load.await.expect("the clients finish");
    // Every node back and alive before the check.
    common::wait_for("every node to be alive", Duration::from_secs(30), || {
        let up = &up;
        async move { (0..NODES as usize).all(|i| up.node_status(i).0 == "alive") }
    })
    .await;
    let report = check(&config, &history, Duration::from_secs(60)).await;
    println!("{kills} kills, one full restart: {report:#?}");
    assert!(kills >= 3, "only {kills} kills happened");
    assert!(
        history.acked > 1_000,
        "too little load to say anything: {} writes acknowledged",
        history.acked
    );
    assert!(
        !report.lost_anything(),
        "acknowledged writes lost or unwritten values seen (seed {seed}): {report:#?}"
    );
    assert_eq!(report.diverged, 0, "nodes answer differently: {report:#?}");
    assert_eq!(
        report.unequal_replicas, 0,
        "replicas differ after converging: {report:#?}"
    );
}

/// After one node of three dies, every acknowledged key is found through either survivor,
/// also in the moment after the death is declared, when keys change owners and a new owner
/// may not have received them yet (it asks the key's other and previous owners instead of
/// answering "not found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_while_their_owners_change() {
    use bytes::Bytes;
    use calm::kvs::{Op, ReadValue, Reply, Write};

    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        NODES,
        &dir.path().join("data"),
        free_base_port(NODES),
        &["--threads", "1", "--restart-after", "600"],
    );
    let c0 = up.client(0).await;
    let keys: Vec<Bytes> = (0..200)
        .map(|i| Bytes::from(format!("found/{i}")))
        .collect();
    let ops = keys
        .iter()
        .map(|k| Op::Write {
            key: k.clone(),
            write: Write::Lww(k.clone()),
        })
        .collect();
    let written = c0.execute_with_ack(ops, Ack::One).await.unwrap();
    assert!(written.iter().all(|r| *r == Ok(Reply::Written)));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let c1 = up.client(1).await;
    let (_, pid) = up.node_status(2);
    assert!(signal(pid.expect("node 2 runs") as u32, "-KILL"));
    // Read every key through both survivors, again and again, from the kill until two
    // seconds after node 2 is declared dead (the moment keys change owners).
    let dead = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (dead, status) = (dead.clone(), up.cluster_file());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_calm"))
                    .args(["status", "--json", "--cluster"])
                    .arg(&status)
                    .output();
                if let Ok(out) = out
                    && String::from_utf8_lossy(&out.stdout).contains("\"dead\"")
                {
                    dead.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut dead_since: Option<Instant> = None;
    let mut rounds = 0;
    while dead_since.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        if dead_since.is_none() && dead.load(Ordering::Relaxed) {
            dead_since = Some(Instant::now());
        }
        assert!(rounds < 100_000, "node 2 was never declared dead");
        rounds += 1;
        let client = if rounds % 2 == 0 { &c0 } else { &c1 };
        let ops = keys
            .iter()
            .map(|k| Op::Get {
                key: k.clone(),
                meta: false,
            })
            .collect();
        let Ok(results) = client.execute_with_ack(ops, Ack::One).await else {
            continue;
        };
        let missing: Vec<&Bytes> = keys
            .iter()
            .zip(&results)
            .filter(|(_, r)| **r == Ok(Reply::Value(None)))
            .map(|(k, _)| k)
            .collect();
        assert!(
            missing.is_empty(),
            "node {} answered \"not found\" for {} acknowledged keys (round {rounds}, declared dead: {}): {missing:?}",
            rounds % 2,
            missing.len(),
            dead_since.is_some()
        );
        for (k, r) in keys.iter().zip(&results) {
            if let Ok(Reply::Value(Some(v))) = r {
                assert_eq!(
                    *v,
                    ReadValue::Lww {
                        value: k.clone(),
                        stamp: None
                    }
                );
            }
        }
    }
    watcher.join().unwrap();
}
