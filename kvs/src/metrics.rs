//! Counters and latency histograms kept by the node itself (not fed by clients).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::op::OpKind;

/// A node's operation counters and per-kind latency histograms (microseconds, measured
/// from the moment a batch reaches the node until its results are ready).
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    ops: [AtomicU64; 3],
    errors: [AtomicU64; 3],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    refused_frames: AtomicU64,
    // One lock per operation kind, taken once per batch: off the data path, which is the
    // workers' alone.
    latency_us: [Mutex<Histogram<u64>>; 3],
    /// The autoscaling policy's latest decisions, with their reasons.
    decisions: Mutex<std::collections::VecDeque<String>>,
    /// Every node's latest load sample as this node has it (with `--autoscale`).
    cluster_load: Mutex<crate::policy::LoadTable>,
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || {
            Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3)
                    .expect("constant histogram bounds are valid"),
            )
        };
        Metrics {
            started: Instant::now(),
            ops: Default::default(),
            errors: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            refused_frames: AtomicU64::new(0),
            latency_us: [histogram(), histogram(), histogram()],
            decisions: Mutex::default(),
            cluster_load: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts `count` operations of `kind`, `errors` of which failed, that took `latency`.
    pub fn record(&self, kind: OpKind, count: u64, errors: u64, latency: Duration) {
        let i = kind.index();
        self.ops[i].fetch_add(count, Ordering::Relaxed);
        self.errors[i].fetch_add(errors, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Ok(mut h) = self.latency_us[i].lock() {
            h.saturating_record(us);
        }
    }

    /// Counts bytes received in frames.
    pub fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes sent in frames.
    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a frame refused as unreadable.
    pub fn add_refused_frame(&self) {
        self.refused_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps a policy decision (the latest 20 are kept).
    pub fn record_decision(&self, text: String) {
        if let Ok(mut d) = self.decisions.lock() {
            if d.len() == 20 {
                d.pop_front();
            }
            d.push_back(text);
        }
    }

    /// Keeps the cluster's load picture (the autoscaling loop sets it every period).
    pub fn set_cluster_load(&self, load: crate::policy::LoadTable) {
        if let Ok(mut l) = self.cluster_load.lock() {
            *l = load;
        }
    }

    /// A copy of every figure.
    pub fn snapshot(&self, workers: Vec<WorkerStats>) -> StatsSnapshot {
        let ops = OpKind::ALL
            .into_iter()
            .map(|kind| {
                let i = kind.index();
                let (p50_us, p99_us, max_us) = match self.latency_us[i].lock() {
                    Ok(h) if !h.is_empty() => {
                        (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
                    }
                    _ => (0, 0, 0),
                };
                OpStats {
                    kind,
                    count: self.ops[i].load(Ordering::Relaxed),
                    errors: self.errors[i].load(Ordering::Relaxed),
                    p50_us,
                    p99_us,
                    max_us,
                }
            })
            .collect();
        StatsSnapshot {
            pid: std::process::id(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ops,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            refused_frames: self.refused_frames.load(Ordering::Relaxed),
            workers,
            decisions: self
                .decisions
                .lock()
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default(),
            cluster_load: self
                .cluster_load
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default(),
            quotas: Vec::new(),
        }
    }
}

/// Figures for one kind of operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStats {
    /// The kind of operation.
    pub kind: OpKind,
    /// How many ran.
    pub count: u64,
    /// How many failed.
    pub errors: u64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Highest latency seen, microseconds.
    pub max_us: u64,
}

/// Figures for one storage worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// The worker's index in its node.
    pub worker: u32,
    /// Keys it holds (including deleted ones kept for merging).
    pub keys: u64,
    /// Operations it ran.
    pub ops: u64,
    /// Gossip batches it sent to other workers.
    pub gossip_sent: u64,
    /// Gossip batches it received.
    pub gossip_received: u64,
    /// Replicated values whose kind disagreed with the local one (resolved by kind order).
    pub kind_conflicts: u64,
    /// Its memory and disk tiers.
    pub storage: crate::storage::TierStats,
    /// The keys clients used most recently, heaviest first (estimates).
    pub hot_keys: Vec<crate::hot_keys::HotKey>,
    /// Time spent handling messages since the worker started, microseconds (occupancy is
    /// this over the node's uptime).
    pub busy_us: u64,
    /// Times it took a new replica id after dropping copies it had written (handed to
    /// their owners).
    pub replica_changes: u64,
    /// Expired keys it collected.
    pub expired: u64,
}

/// A node's statistics at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// The node's operating-system process id.
    pub pid: u32,
    /// Time since the node started, milliseconds.
    pub uptime_ms: u64,
    /// Per kind of operation.
    pub ops: Vec<OpStats>,
    /// Bytes received in frames.
    pub bytes_in: u64,
    /// Bytes sent in frames.
    pub bytes_out: u64,
    /// Frames refused as unreadable.
    pub refused_frames: u64,
    /// Per storage worker.
    pub workers: Vec<WorkerStats>,
    /// The autoscaling policy's latest decisions on this node, oldest first.
    pub decisions: Vec<String>,
    /// Every node's latest load sample as this node has it, gossiped between nodes (empty
    /// without `--autoscale`).
    pub cluster_load: crate::policy::LoadTable,
    /// What the keys under each quota of the ACL file hold on this node.
    #[serde(default)]
    pub quotas: Vec<crate::storage::QuotaUsage>,
}
