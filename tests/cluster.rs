//! End to end: a 3-node `calm up` cluster of real processes on loopback. A write at node 0
//! is readable at node 2; after `kill -9` of a node every key can still be read and
//! written (replication factor 2); `calm up` restarts the node, `calm status` shows each
//! state along the way, and the restarted node catches up from its peers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm::kvs::{Ack, Client, Op, ReadValue, Reply, Write};
use common::{Up, wait_for};

const KEYS: usize = 60;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_kill_9_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port(3);
    let up = Up::start(
        3,
        &dir.path().join("data"),
        base,
        &["--threads", "1", "--restart-after", "6"],
    );
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
    // A counter increment sent to the dead node is not silently run elsewhere (it might
    // count twice): writes go around it once node 2 suspects it.
    let dead = up.addrs[1].to_string();
    wait_for("node 2 to suspect node 1", Duration::from_secs(15), || {
        let (c2, dead) = (&c2, dead.clone());
        async move {
            c2.members().await.unwrap_or_default().iter().any(|m| {
                m.member.addr == dead && m.member.status != calm_kvs::cluster::Status::Alive
            })
        }
    })
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
