//! Consistency experiments against a running calm cluster.
//!
//! `staleness`: write a key at one of its replicas (acknowledged by that replica alone, ack
//! `one`), then read another replica's own copy until the write is visible there; the time
//! from the acknowledgement to visibility is the write's t-visibility. Its distribution is
//! what the gossip period buys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
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

/// Runs `trials` writes against the cluster of `nodes` (CA `ca`); see the module docs.
pub async fn staleness(
    nodes: Vec<SocketAddr>,
    ca: &Path,
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

/// One point of the contention experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentionPoint {
    /// Zipf skew.
    pub zipf: f64,
    /// Operations per second with every key on one worker.
    pub plain_ops_per_sec: f64,
    /// p99 latency then, µs.
    pub plain_p99_us: u64,
    /// Operations per second with the hottest keys on every worker.
    pub replicated_ops_per_sec: f64,
    /// p99 latency then, µs.
    pub replicated_p99_us: u64,
}

/// Anna's contention experiment on one node, with replication set by hand: for each skew,
/// throughput with every key held by one worker, then with the `hot` most popular keys
/// held by every worker (reads of them spread over all workers). The node's data is the
/// same in both runs.
pub async fn contention(
    workload: &crate::Workload,
    run: &crate::RunConfig,
    threads: usize,
    zipfs: &[f64],
    hot: u64,
) -> Result<Vec<ContentionPoint>, String> {
    use std::sync::Arc;

    use calm_kvs::cluster::{Factors, ReplicationTable};
    use calm_kvs::{EmbeddedStore, NodeConfig};
    use calm_lattice::{Hlc, ReplicaId, Stamp};

    use crate::target::{CalmTarget, Target};
    use crate::workload::key_name;

    let mut points = Vec::new();
    for &zipf in zipfs {
        let w = crate::Workload {
            zipf,
            ..workload.clone()
        };
        w.validate()?;
        let store = EmbeddedStore::start(NodeConfig {
            threads,
            ..NodeConfig::default()
        })
        .map_err(|e| e.to_string())?;
        let target = CalmTarget::new(store.clone(), w.kind, w.value_size);
        target.load(w.keys).await?;
        let measure = |t: CalmTarget<EmbeddedStore>| {
            let w = w.clone();
            async move {
                crate::run(
                    &w,
                    run,
                    move |_| {
                        let t = t.clone();
                        async move { Ok(t) }
                    },
                    |_| {},
                )
                .await
            }
        };
        let plain = measure(target.clone()).await?;
        let mut table = ReplicationTable::default();
        for rank in 0..hot.min(w.keys) {
            table.set(
                Bytes::from(key_name(rank)),
                Factors {
                    global: None,
                    local: Some(u8::try_from(threads).unwrap_or(u8::MAX)),
                },
                Stamp::new(Hlc::new(1, 0), ReplicaId(0)),
            );
        }
        store.node().set_replication_table(Arc::new(table));
        // The hot keys' values reach their new local replicas with the next gossip.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let replicated = measure(target).await?;
        store.node().shutdown();
        points.push(ContentionPoint {
            zipf,
            plain_ops_per_sec: plain.ops_per_sec,
            plain_p99_us: plain.latency_us.p99,
            replicated_ops_per_sec: replicated.ops_per_sec,
            replicated_p99_us: replicated.latency_us.p99,
        });
    }
    Ok(points)
}
