//! Consistency experiments against a running calm cluster.
//!
//! `staleness`: write a key at one of its replicas (acknowledged by that replica alone, ack
//! `one`), then read another replica's own copy until the write is visible there; the time
//! from the acknowledgement to visibility is the write's t-visibility. Its distribution is
//! what the gossip period buys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::{Client, ClusterClient, Op, ReadValue, Reply, Write};
use serde::{Deserialize, Serialize};

use crate::runner::Latency;

/// What a staleness experiment found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Staleness {
    /// Writes made.
    pub trials: usize,
    /// Writes never seen at the other replica within the timeout.
    pub never_visible: usize,
    /// t-visibility percentiles, µs.
    pub visibility_us: Latency,
    /// Every t-visibility, µs.
    pub samples_us: Vec<u64>,
    /// The gossip period the cluster was started with, as given (for the report).
    pub gossip_ms: Option<u64>,
}

/// Runs `trials` writes against the cluster of `nodes` (as `ca`'s client); see the module
/// docs.
pub async fn staleness(
    nodes: Vec<SocketAddr>,
    ca: &calm_kvs::tls::Credentials,
    trials: usize,
    timeout: Duration,
    gossip_ms: Option<u64>,
) -> Result<Staleness, String> {
    let cluster = ClusterClient::connect(nodes, ca)
        .await
        .map_err(|e| e.to_string())?;
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let run = std::process::id();
    let mut samples_us = Vec::new();
    let mut never_visible = 0;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| e.to_string())?;
    for i in 0..trials {
        let key = Bytes::from(format!("staleness/{run}/{i}"));
        let owners = cluster.owners(&key).await.map_err(|e| e.to_string())?;
        let [writer, reader, ..] = owners.as_slice() else {
            return Err(
                "each key needs two replicas: start the cluster with --replication 2 or more and at least two nodes".into(),
            );
        };
        for addr in [writer, reader] {
            if !clients.contains_key(addr) {
                let c = Client::connect(*addr, ca)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                clients.insert(*addr, c);
            }
        }
        let value = Bytes::from(format!("v{i}"));
        let written = clients[writer]
            .execute_here(vec![Op::Write {
                key: key.clone(),
                write: Write::Lww(value.clone()),
            }])
            .await
            .map_err(|e| e.to_string())?;
        if written.first() != Some(&Ok(Reply::Written)) {
            return Err(format!("the write was refused: {written:?}"));
        }
        let acked = Instant::now();
        let expected = Ok(Reply::Value(Some(ReadValue::Lww { value, stamp: None })));
        loop {
            let read = clients[reader]
                .execute_here(vec![Op::Get {
                    key: key.clone(),
                    meta: false,
                }])
                .await
                .map_err(|e| e.to_string())?;
            if read.first() == Some(&expected) {
                let us = acked.elapsed().as_micros().max(1) as u64;
                samples_us.push(us);
                hist.saturating_record(us);
                break;
            }
            if acked.elapsed() > timeout {
                never_visible += 1;
                break;
            }
        }
    }
    Ok(Staleness {
        trials,
        never_visible,
        visibility_us: Latency::of(&hist),
        samples_us,
        gossip_ms,
    })
}

/// What one partition experiment found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionRun {
    /// The gossip period, milliseconds.
    pub gossip_ms: u64,
    /// Writes each side was asked to make (one increment per key).
    pub writes_per_side: usize,
    /// Writes acknowledged while the cluster was split.
    pub acknowledged: usize,
    /// Time from the heal until every replica of every key held every acknowledged write,
    /// milliseconds (`None`: not within the timeout).
    pub converged_after_ms: Option<u64>,
    /// Acknowledged writes missing from some replica when the experiment ended.
    pub lost: usize,
}

/// Three nodes in this process behind UDP fault proxies on loopback addresses (127.0.0.x);
/// node 0 is cut from nodes 1 and 2; each side increments the same `keys` counters (node 0
/// by 1, node 1 by 10); the network heals; the time until every replica of every key holds
/// every acknowledged increment. Nothing acknowledged may be lost.
pub async fn partition(
    gossip_ms: u64,
    keys: usize,
    timeout: Duration,
) -> Result<PartitionRun, String> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

    use calm_kvs::Ack;
    use calm_kvs::fault_proxy::{Partition, run_proxy};
    use calm_kvs::launch::launch_local_cluster;

    let real = |i: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + i));
    let front = |i: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i));
    let ips: Vec<IpAddr> = (0..3).flat_map(|i| [real(i), front(i)]).collect();
    let port = (0..1000u16)
        .map(|k| {
            20_000
                + (std::process::id() as u16)
                    .wrapping_mul(31)
                    .wrapping_add(k * 53)
                    % 30_000
        })
        .find(|&p| ips.iter().all(|ip| UdpSocket::bind((*ip, p)).is_ok()))
        .ok_or("no free port on the loopback addresses 127.0.0.10-22")?;
    let node_ips: Vec<IpAddr> = (0..3).map(real).collect();
    let cut = Partition::new(node_ips.clone(), vec![node_ips[0]]);
    let mut proxies = Vec::new();
    for i in 0..3u8 {
        let relay = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30 + i));
        proxies.push(tokio::spawn(run_proxy(
            SocketAddr::new(front(i), port),
            SocketAddr::new(real(i), port),
            relay,
            cut.clone(),
        )));
    }
    let dir =
        std::env::temp_dir().join(format!("calm-partition-{}-{gossip_ms}", std::process::id()));
    let advertise = move |i: u8| SocketAddr::new(front(i), port);
    let nodes = launch_local_cluster(3, gossip_ms, real, Some(&advertise), port, &dir)
        .await
        .map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(
            Client::connect(n.addr, &n.credentials())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let key = |i: usize| Bytes::from(format!("partition/{i:06}"));
    cut.split();
    // Let both sides notice the split, so writes become hints instead of timing out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let incr = |by| {
        (0..keys)
            .map(|i| Op::Write {
                key: key(i),
                write: Write::Increment(by),
            })
            .collect::<Vec<_>>()
    };
    let mut expected = vec![0i128; keys];
    let mut acknowledged = 0;
    for (c, by) in [(0usize, 1i64), (1, 10)] {
        let results = clients[c]
            .execute_with_ack(incr(by), Ack::One)
            .await
            .map_err(|e| e.to_string())?;
        for (i, r) in results.iter().enumerate() {
            if *r == Ok(Reply::Written) {
                expected[i] += i128::from(by);
                acknowledged += 1;
            }
        }
    }
    cut.heal();
    let healed = Instant::now();
    let mut lost;
    let converged_after_ms = loop {
        lost = 0;
        let mut converged = true;
        for (k, &want) in expected.iter().enumerate() {
            let mut held = Vec::new();
            for c in &clients {
                let r = c
                    .execute_here(vec![Op::Get {
                        key: key(k),
                        meta: false,
                    }])
                    .await
                    .map_err(|e| e.to_string())?;
                if let Ok(Reply::Value(Some(ReadValue::Counter { value }))) = &r[0] {
                    held.push(*value);
                }
            }
            // Two replicas per key hold it once converged, each with every increment.
            if held.len() < 2 || held.iter().any(|v| *v != want) {
                converged = false;
            }
            if held.iter().copied().max().unwrap_or(0) < want {
                lost += 1;
            }
        }
        if converged {
            break Some(healed.elapsed().as_millis() as u64);
        }
        if healed.elapsed() > timeout {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for c in clients {
        c.close().await;
    }
    for n in nodes {
        n.stop().await;
    }
    for p in proxies {
        p.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PartitionRun {
        gossip_ms,
        writes_per_side: keys,
        acknowledged,
        converged_after_ms,
        lost,
    })
}
