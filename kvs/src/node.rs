//! A node's storage workers on their own threads: the thin shell around [`Worker`].
//!
//! Each worker runs on one OS thread and owns its keys outright; other threads reach it only
//! by message (no lock on the data path). A batch of operations is split by owning worker,
//! sent as one message per worker, and the results reassembled in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use calm_lattice::ReplicaId;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::cluster::{LocalStore, OwnerFilter, ReplicationTable};
use crate::error::KvsError;
use crate::metrics::{Metrics, StatsSnapshot, WorkerStats};
use crate::protocol::{Op, OpError, OpKind, OpResult};
use crate::ring::HashRing;
use crate::value::Value;
use crate::worker::{GossipBatch, Worker, WorkerConfig};

/// How a node runs. Every field has a default; a TOML file can set any of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Storage worker threads (default: the number of cores).
    pub threads: usize,
    /// This node's id, unique in its cluster; worker replica ids are derived from it.
    pub node_id: u32,
    /// Virtual nodes per worker on the local ring.
    pub vnodes: u32,
    /// The largest frame accepted from the network, bytes.
    pub max_frame_bytes: usize,
    /// Requests one stream may have in flight before the node stops reading from it.
    pub max_in_flight_per_stream: usize,
    /// Worker behaviour: local replication, gossip period, size limits.
    pub worker: WorkerConfig,
}

/// The TOML form of [`NodeConfig`]: one flat table, every field optional, unknown fields
/// refused.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NodeConfigFile {
    threads: usize,
    vnodes: u32,
    max_frame_bytes: usize,
    max_in_flight_per_stream: usize,
    local_replication: usize,
    gossip_period_ms: u64,
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_clock_drift_ms: u64,
}

impl Default for NodeConfigFile {
    fn default() -> Self {
        let n = NodeConfig::default();
        NodeConfigFile {
            threads: n.threads,
            vnodes: n.vnodes,
            max_frame_bytes: n.max_frame_bytes,
            max_in_flight_per_stream: n.max_in_flight_per_stream,
            local_replication: n.worker.local_replication,
            gossip_period_ms: n.worker.gossip_period_ms,
            max_key_bytes: n.worker.max_key_bytes,
            max_value_bytes: n.worker.max_value_bytes,
            max_clock_drift_ms: n.worker.max_clock_drift_ms,
        }
    }
}

impl From<NodeConfigFile> for NodeConfig {
    fn from(f: NodeConfigFile) -> Self {
        NodeConfig {
            threads: f.threads,
            vnodes: f.vnodes,
            max_frame_bytes: f.max_frame_bytes,
            max_in_flight_per_stream: f.max_in_flight_per_stream,
            worker: WorkerConfig {
                local_replication: f.local_replication,
                gossip_period_ms: f.gossip_period_ms,
                max_key_bytes: f.max_key_bytes,
                max_value_bytes: f.max_value_bytes,
                max_clock_drift_ms: f.max_clock_drift_ms,
            },
            ..NodeConfig::default()
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            node_id: 0,
            vnodes: 64,
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME,
            max_in_flight_per_stream: 256,
            worker: WorkerConfig::default(),
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; fields it leaves out keep their defaults, unknown fields are an
    /// error (a typo should not be silently ignored).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, KvsError> {
        let text = std::fs::read_to_string(path).map_err(|e| KvsError::io(path, e))?;
        let file: NodeConfigFile = toml::from_str(&text)
            .map_err(|e| KvsError::Config(format!("{}: {e}", path.display())))?;
        let config = NodeConfig::from(file);
        config.validate()?;
        Ok(config)
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), KvsError> {
        let fail = |m: String| Err(KvsError::Config(m));
        if self.threads == 0 || self.threads > 1024 {
            return fail(format!(
                "threads = {} must be between 1 and 1024",
                self.threads
            ));
        }
        if self.worker.local_replication == 0 || self.worker.local_replication > self.threads {
            return fail(format!(
                "local_replication = {} must be between 1 and threads ({})",
                self.worker.local_replication, self.threads
            ));
        }
        if self.worker.gossip_period_ms == 0 {
            return fail("gossip_period_ms must be at least 1".into());
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > crate::wire::DEFAULT_MAX_FRAME {
            return fail(format!(
                "max_frame_bytes = {} must be between 1024 and {}",
                self.max_frame_bytes,
                crate::wire::DEFAULT_MAX_FRAME
            ));
        }
        if self.max_in_flight_per_stream == 0 {
            return fail("max_in_flight_per_stream must be at least 1".into());
        }
        Ok(())
    }
}

/// Deltas of the writes a batch made: `(key, delta)`.
pub type Changes = Vec<(Bytes, Value)>;

/// A worker's answer to a batch: one result per operation, and the deltas of its writes.
type WorkerAnswer = (Vec<OpResult>, Changes);

enum WorkerMsg {
    Ops {
        ops: Vec<Op>,
        reply: oneshot::Sender<WorkerAnswer>,
    },
    Gossip(GossipBatch),
    Stats(oneshot::Sender<WorkerStats>),
    Merge(Changes),
    Digest(OwnerFilter, oneshot::Sender<BTreeMap<u16, u64>>),
    EntriesIn(OwnerFilter, BTreeSet<u16>, usize, oneshot::Sender<Changes>),
    NotOwned(OwnerFilter, usize, oneshot::Sender<Changes>),
    DropIfUnchanged(Changes),
    Table(Arc<ReplicationTable>),
    CollectChanges,
    Stop,
}

/// The storage workers of one node, running on their own threads.
pub struct Node {
    senders: Vec<mpsc::Sender<WorkerMsg>>,
    ring: Arc<HashRing>,
    config: NodeConfig,
    metrics: Arc<Metrics>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_read_replica: AtomicUsize,
    /// Per-key replication factors (the local part decides which workers hold a key).
    table: SharedTable,
}

type SharedTable = Arc<std::sync::RwLock<Arc<ReplicationTable>>>;

fn local_factor(table: &SharedTable, key: &[u8], default: usize) -> usize {
    table
        .read()
        .ok()
        .and_then(|t| t.local_factor(key))
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Node {
    /// Starts the workers.
    pub fn start(config: NodeConfig) -> Result<Node, KvsError> {
        config.validate()?;
        let n = u32::try_from(config.threads)
            .map_err(|_| KvsError::Config("too many threads".into()))?;
        let ring = Arc::new(HashRing::new(0..n, config.vnodes));
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let mut threads = Vec::new();
        for (id, rx) in (0..n).zip(receivers) {
            let replica = ReplicaId((u64::from(config.node_id) << 16) | u64::from(id));
            let worker = Worker::new(id, replica, ring.clone(), config.worker);
            let peers = senders.clone();
            let handle = std::thread::Builder::new()
                .name(format!("calm-worker-{id}"))
                .spawn(move || run_worker(worker, rx, peers))
                .map_err(|e| KvsError::Config(format!("cannot start worker thread: {e}")))?;
            threads.push(handle);
        }
        Ok(Node {
            senders,
            ring,
            config,
            metrics: Arc::new(Metrics::default()),
            threads: Mutex::new(threads),
            next_read_replica: AtomicUsize::new(0),
            table: Arc::new(std::sync::RwLock::new(
                Arc::new(ReplicationTable::default()),
            )),
        })
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's metrics (the network layer adds its byte counts).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The worker that runs `op`: writes go to the key's primary, so the first write fixes
    /// the kind in one place; reads spread over the key's local replicas.
    fn route(&self, op: &Op) -> usize {
        let key = op.key();
        // Only reads spread over local replicas; writes never need the table.
        if matches!(op, Op::Get { .. }) {
            let r = local_factor(&self.table, key, self.config.worker.local_replication);
            if r > 1 {
                let owners = self.ring.owners(key, r);
                let pick = self.next_read_replica.fetch_add(1, Ordering::Relaxed) % owners.len();
                return owners[pick] as usize;
            }
        }
        self.ring.primary(key).unwrap_or(0) as usize
    }

    /// Hands a batch to the workers, one message per worker involved, and returns at once.
    /// Batches submitted one after another reach each worker in that order, so a client's
    /// pipelined requests on one key run in the order it sent them.
    pub fn submit(&self, ops: Vec<Op>) -> Result<PendingBatch, KvsError> {
        let started = Instant::now();
        let mut op_kinds = Vec::with_capacity(ops.len());
        let mut per_worker: Vec<(Vec<Op>, Vec<usize>)> =
            vec![(Vec::new(), Vec::new()); self.senders.len()];
        for (i, op) in ops.into_iter().enumerate() {
            op_kinds.push(op.op_kind());
            let w = self.route(&op);
            per_worker[w].0.push(op);
            per_worker[w].1.push(i);
        }
        let mut waiting = Vec::new();
        for (w, (ops, positions)) in per_worker.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            self.senders[w]
                .send(WorkerMsg::Ops { ops, reply: tx })
                .map_err(|_| KvsError::ShutDown)?;
            waiting.push((rx, positions));
        }
        Ok(PendingBatch {
            waiting,
            op_kinds,
            started,
            metrics: self.metrics.clone(),
        })
    }

    /// Runs a batch: one result per operation, in the order of `ops`.
    pub async fn execute(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, KvsError> {
        self.submit(ops)?.results().await
    }

    /// The node's statistics, with each worker's figures.
    pub async fn stats(&self) -> Result<StatsSnapshot, KvsError> {
        let mut workers = Vec::new();
        for tx in &self.senders {
            let (reply, rx) = oneshot::channel();
            tx.send(WorkerMsg::Stats(reply))
                .map_err(|_| KvsError::ShutDown)?;
            workers.push(rx.await.map_err(|_| KvsError::ShutDown)?);
        }
        Ok(self.metrics.snapshot(workers))
    }

    /// Blocking access to the workers' data for the cluster agent's thread. From then on
    /// the workers keep the deltas of their writes for the cluster to ship (a node outside
    /// a cluster does not pay for that copy).
    pub fn pool(&self) -> WorkerPool {
        for tx in &self.senders {
            let _ = tx.send(WorkerMsg::CollectChanges);
        }
        WorkerPool {
            senders: self.senders.clone(),
            ring: self.ring.clone(),
            local_replication: self.config.worker.local_replication,
            table: self.table.clone(),
        }
    }

    /// Stops the workers after the messages already sent to them; waits for their threads.
    pub fn shutdown(&self) {
        for tx in &self.senders {
            let _ = tx.send(WorkerMsg::Stop);
        }
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A batch the workers are running; [`results`](PendingBatch::results) waits for it.
pub struct PendingBatch {
    waiting: Vec<(oneshot::Receiver<WorkerAnswer>, Vec<usize>)>,
    op_kinds: Vec<OpKind>,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl PendingBatch {
    /// Waits for every worker involved; one result per operation, in order.
    pub async fn results(self) -> Result<Vec<OpResult>, KvsError> {
        Ok(self.results_and_changes().await?.0)
    }

    /// Waits for every worker involved; the results, and the deltas the writes made (for
    /// replication to other nodes).
    pub async fn results_and_changes(self) -> Result<(Vec<OpResult>, Changes), KvsError> {
        let mut results: Vec<OpResult> = vec![Err(OpError::ShuttingDown); self.op_kinds.len()];
        let mut all_changes = Vec::new();
        for (rx, positions) in self.waiting {
            let (answers, changes) = rx.await.map_err(|_| KvsError::ShutDown)?;
            all_changes.extend(changes);
            for (pos, answer) in positions.into_iter().zip(answers) {
                results[pos] = answer;
            }
        }
        let latency = self.started.elapsed();
        let mut counts = [0u64; 3];
        let mut errors = [0u64; 3];
        for (kind, result) in self.op_kinds.iter().zip(&results) {
            counts[kind.index()] += 1;
            errors[kind.index()] += u64::from(result.is_err());
        }
        for kind in OpKind::ALL {
            let i = kind.index();
            if counts[i] > 0 {
                self.metrics.record(kind, counts[i], errors[i], latency);
            }
        }
        Ok((results, all_changes))
    }
}

/// The node's workers seen as one [`LocalStore`], for the cluster agent. Its calls block
/// until the workers answer, so it is used from the agent's own thread, never from async
/// code.
pub struct WorkerPool {
    senders: Vec<mpsc::Sender<WorkerMsg>>,
    ring: Arc<HashRing>,
    local_replication: usize,
    table: SharedTable,
}

impl WorkerPool {
    /// Installs new per-key replication factors: the node routes by them, and each worker
    /// copies keys it leads to the local replicas they gain.
    pub fn set_table(&self, table: Arc<ReplicationTable>) {
        if let Ok(mut slot) = self.table.write() {
            *slot = table.clone();
        }
        for tx in &self.senders {
            let _ = tx.send(WorkerMsg::Table(table.clone()));
        }
    }

    fn ask<T>(&self, make: impl Fn(oneshot::Sender<T>) -> WorkerMsg) -> Vec<T> {
        let mut waiting = Vec::new();
        for tx in &self.senders {
            let (reply, rx) = oneshot::channel();
            if tx.send(make(reply)).is_ok() {
                waiting.push(rx);
            }
        }
        waiting
            .into_iter()
            .filter_map(|rx| rx.blocking_recv().ok())
            .collect()
    }

    /// Splits entries by the local workers that hold each key.
    fn by_worker(&self, entries: Changes) -> Vec<Changes> {
        let mut out: Vec<Changes> = vec![Vec::new(); self.senders.len()];
        for (key, value) in entries {
            let replicas = local_factor(&self.table, &key, self.local_replication);
            for w in self.ring.owners(&key, replicas) {
                out[w as usize].push((key.clone(), value.clone()));
            }
        }
        out
    }
}

impl LocalStore for WorkerPool {
    fn merge_entries(&mut self, _now_ms: u64, entries: Changes) {
        // Every local replica merges: they are not gossiped to locally.
        for (w, part) in self.by_worker(entries).into_iter().enumerate() {
            if !part.is_empty() {
                let _ = self.senders[w].send(WorkerMsg::Merge(part));
            }
        }
    }

    fn digest(&mut self, filter: &OwnerFilter) -> BTreeMap<u16, u64> {
        // Only primaries answer for their keys, so local replicas are not counted twice.
        let mut total = BTreeMap::new();
        for digest in self.ask(|reply| WorkerMsg::Digest(filter.clone(), reply)) {
            for (bucket, h) in digest {
                *total.entry(bucket).or_insert(0u64) ^= h;
            }
        }
        total
    }

    fn entries_in(
        &mut self,
        filter: &OwnerFilter,
        buckets: &BTreeSet<u16>,
        limit: usize,
    ) -> Changes {
        let mut all: Changes = self
            .ask(|reply| WorkerMsg::EntriesIn(filter.clone(), buckets.clone(), limit, reply))
            .into_iter()
            .flatten()
            .collect();
        all.truncate(limit);
        all
    }

    fn entries_not_owned(&mut self, mine: &OwnerFilter, limit: usize) -> Changes {
        let mut all: Changes = self
            .ask(|reply| WorkerMsg::NotOwned(mine.clone(), limit, reply))
            .into_iter()
            .flatten()
            .collect();
        all.truncate(limit);
        all
    }

    fn drop_if_unchanged(&mut self, entries: Changes) {
        for (w, part) in self.by_worker(entries).into_iter().enumerate() {
            if !part.is_empty() {
                let _ = self.senders[w].send(WorkerMsg::DropIfUnchanged(part));
            }
        }
    }
}

fn run_worker(
    mut worker: Worker,
    rx: mpsc::Receiver<WorkerMsg>,
    peers: Vec<mpsc::Sender<WorkerMsg>>,
) {
    loop {
        let msg = match worker.next_deadline_ms() {
            Some(deadline) => {
                let wait = deadline.saturating_sub(now_ms());
                match rx.recv_timeout(Duration::from_millis(wait)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // Nothing scheduled: sleep until a message arrives (no busy polling when idle).
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        match msg {
            Some(WorkerMsg::Ops { ops, reply }) => {
                let results = worker.handle_ops(now_ms(), ops);
                let _ = reply.send((results, worker.take_changes()));
            }
            Some(WorkerMsg::Merge(entries)) => worker.merge_replicated(now_ms(), entries),
            Some(WorkerMsg::Digest(filter, reply)) => {
                let _ = reply.send(worker.digest(&filter));
            }
            Some(WorkerMsg::EntriesIn(filter, buckets, limit, reply)) => {
                let _ = reply.send(worker.entries_in(&filter, &buckets, limit));
            }
            Some(WorkerMsg::NotOwned(filter, limit, reply)) => {
                let _ = reply.send(worker.entries_not_owned(&filter, limit));
            }
            Some(WorkerMsg::DropIfUnchanged(entries)) => worker.drop_if_unchanged(entries),
            Some(WorkerMsg::Table(table)) => worker.set_table(now_ms(), table),
            Some(WorkerMsg::CollectChanges) => worker.collect_changes(),
            Some(WorkerMsg::Gossip(batch)) => worker.handle_gossip(now_ms(), batch),
            Some(WorkerMsg::Stats(reply)) => {
                let _ = reply.send(worker.stats());
            }
            Some(WorkerMsg::Stop) => return,
            None => {}
        }
        worker.handle_tick(now_ms());
        while let Some(batch) = worker.poll_gossip() {
            if let Some(peer) = peers.get(batch.to as usize) {
                let _ = peer.send(WorkerMsg::Gossip(batch));
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, KvsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::from_toml_file(&path)
    }

    #[test]
    fn toml_sets_fields_and_keeps_defaults_for_the_rest() {
        let config = parse("threads = 2\nlocal_replication = 2\ngossip_period_ms = 20\n").unwrap();
        assert_eq!(config.threads, 2);
        assert_eq!(config.worker.local_replication, 2);
        assert_eq!(config.worker.gossip_period_ms, 20);
        assert_eq!(
            config.worker.max_key_bytes,
            WorkerConfig::default().max_key_bytes
        );
        assert_eq!(
            config.max_frame_bytes,
            NodeConfig::default().max_frame_bytes
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let typo = parse("thread = 2\n").unwrap_err().to_string();
        assert!(typo.contains("thread"), "{typo}");
        let nonsense = parse("threads = 2\nlocal_replication = 3\n")
            .unwrap_err()
            .to_string();
        assert!(nonsense.contains("local_replication"), "{nonsense}");
        let wrong_type = parse("threads = \"many\"\n").unwrap_err().to_string();
        assert!(wrong_type.contains("threads"), "{wrong_type}");
        let missing = NodeConfig::from_toml_file(std::path::Path::new("/nonexistent.toml"));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("/nonexistent.toml")
        );
    }
}
