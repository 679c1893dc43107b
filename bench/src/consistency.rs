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
