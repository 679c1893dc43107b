//! A node's storage workers on their own threads: the thin shell around [`Worker`].
//!
//! Each worker runs on one OS thread and owns its keys outright; other threads reach it only
//! by message (no lock on the data path). A batch of operations is split by owning worker,
//! sent as one message per worker, and the results reassembled in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use calm_lattice::ReplicaId;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::cluster::{LocalStore, OwnerFilter, ReplicationTable};
use crate::error::KvsError;
use crate::metrics::{Metrics, StatsSnapshot, WorkerStats};
use crate::protocol::{Op, OpError, OpKind, OpResult, Reply};
use crate::ring::HashRing;
use crate::storage::{Durability, FileDisk, Recovery, StorageConfig, Tiered};
use crate::subscribe::{PushSink, Pushed, SubscriberId, SubscriptionTable};
use crate::value::Value;
use crate::worker::{GossipBatch, Worker, WorkerConfig};

/// How a node runs. Every field has a default; a TOML file can set any of them.
#[derive(Clone, Debug, PartialEq)]
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
    /// Where the workers keep their logs and cold tiers (`worker-<i>/` each). Without one
    /// the node keeps everything in memory, whatever `storage.durability` says.
    pub data_dir: Option<PathBuf>,
    /// Durability, memory budget and checkpoints.
    pub storage: StorageConfig,
    /// How often the autoscaling policy looks at this node's figures, milliseconds (0: the
    /// policy is off).
    pub autoscale_period_ms: u64,
    /// The autoscaling policy's knobs for hot keys (`hot_sigma`, `hot_factor`,
    /// `hot_workers`, `cool_ms`, `sustain_ms`); a node never decides the number of nodes
    /// (that is the controller's part).
    pub policy: crate::policy::PolicyConfig,
    /// This node is alone in its process (`calm server`), so the process's processor time
    /// is the node's and goes into its load samples.
    pub own_process: bool,
    /// How often changes of subscribed keys are pushed to their subscribers, milliseconds
    /// (see [`subscribe`](crate::subscribe)).
    pub push_period_ms: u64,
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
    durability: Durability,
    flush_ms: u64,
    memory_budget: Option<u64>,
    checkpoint_log_bytes: u64,
    /// A `[policy]` table.
    policy: crate::policy::PolicyConfig,
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
            durability: n.storage.durability,
            flush_ms: n.storage.flush_ms,
            memory_budget: n.storage.memory_budget,
            checkpoint_log_bytes: n.storage.checkpoint_log_bytes,
            policy: n.policy,
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
            storage: StorageConfig {
                durability: f.durability,
                flush_ms: f.flush_ms,
                memory_budget: f.memory_budget,
                checkpoint_log_bytes: f.checkpoint_log_bytes,
                ..StorageConfig::default()
            },
            policy: f.policy,
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
            data_dir: None,
            storage: StorageConfig::default(),
            autoscale_period_ms: 0,
            policy: crate::policy::PolicyConfig::default(),
            own_process: false,
            push_period_ms: 5,
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
        if self.storage.flush_ms == 0 || self.storage.flush_ms > 60_000 {
            return fail(format!(
                "flush_ms = {} must be between 1 and 60000",
                self.storage.flush_ms
            ));
        }
        if self.storage.memory_budget.is_some() && self.storage.durability == Durability::Memory {
            return fail(
                "memory_budget needs a disk to move cold keys to: use durability async or sync"
                    .into(),
            );
        }
        if self.storage.checkpoint_log_bytes < 4096 {
            return fail("checkpoint_log_bytes must be at least 4096".into());
        }
        Ok(())
    }
}

/// Deltas of the writes a batch made: `(key, delta)`.
pub use crate::worker::Changes;

/// A worker's answer to a batch: one result per operation, and the deltas of its writes.
type WorkerAnswer = (Vec<OpResult>, Changes);

enum WorkerMsg {
    Ops {
        ops: Vec<Op>,
        reply: oneshot::Sender<WorkerAnswer>,
    },
    Gossip(GossipBatch),
    Stats(oneshot::Sender<WorkerStats>),
    Watch(Vec<Bytes>, bool),
    Value(Bytes, oneshot::Sender<Option<Value>>),
    TakeDirty(oneshot::Sender<Pushed>),
    Merge(Changes, Option<oneshot::Sender<()>>),
    Digest(OwnerFilter, oneshot::Sender<BTreeMap<u16, u64>>),
    EntriesIn(OwnerFilter, BTreeSet<u16>, usize, oneshot::Sender<Changes>),
    NotOwned(OwnerFilter, usize, oneshot::Sender<Changes>),
    DropIfUnchanged(Changes),
    Table(Arc<ReplicationTable>),
    CollectChanges,
    Stop,
}

/// What a node found on its disk when it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecovery {
    /// How many times this data dir has been started, this start included.
    pub incarnation: u64,
    /// Per worker, what recovery found (empty without a disk).
    pub workers: Vec<Recovery>,
    /// How long recovery took.
    pub took: Duration,
}

impl NodeRecovery {
    /// Keys recovered, over all workers (cold keys and keys replayed from logs may overlap).
    pub fn records(&self) -> u64 {
        self.workers.iter().map(|w| w.records).sum()
    }
}

/// The node's data dir: which layout it has, and how often it has been started.
#[derive(serde::Serialize, Deserialize)]
struct DirMeta {
    threads: usize,
    incarnation: u64,
}

/// Reads and bumps the data dir's incarnation; refuses a dir written with another number
/// of workers (their keys would be on the wrong workers).
fn bump_incarnation(dir: &Path, threads: usize, disk: bool) -> Result<u64, KvsError> {
    std::fs::create_dir_all(dir).map_err(|e| KvsError::io(dir, e))?;
    let path = dir.join("node.toml");
    let mut meta = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<DirMeta>(&text)
            .map_err(|e| KvsError::Config(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirMeta {
            threads,
            incarnation: 0,
        },
        Err(e) => return Err(KvsError::io(&path, e)),
    };
    if disk && meta.threads != threads && dir.join("worker-0").exists() {
        return Err(KvsError::Config(format!(
            "{} holds the data of {} workers; start the node with --threads {} (keys are placed by worker)",
            dir.display(),
            meta.threads,
            meta.threads
        )));
    }
    meta.threads = threads;
    meta.incarnation += 1;
    let text = toml::to_string(&meta).map_err(|e| KvsError::Config(e.to_string()))?;
    let tmp = dir.join("node.toml.tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            use std::io::Write as _;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| KvsError::io(&path, e))?;
    Ok(meta.incarnation)
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
    recovery: NodeRecovery,
    subscriptions: Arc<Subscriptions>,
    services: crate::service::Services,
}

/// The node's subscribers and the thread that pushes to them (started by the first).
struct Subscriptions {
    table: Mutex<SubscriptionTable>,
    sinks: Mutex<HashMap<SubscriberId, Arc<dyn PushSink>>>,
    next_id: AtomicU64,
    started: Instant,
    pusher: Mutex<Option<JoinHandle<()>>>,
    stop: AtomicBool,
}

impl Subscriptions {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
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
    /// Starts the workers. With a data dir and durability `async` or `sync`, each worker
    /// first recovers its keys from its disk (in parallel).
    pub fn start(config: NodeConfig) -> Result<Node, KvsError> {
        config.validate()?;
        let started = Instant::now();
        let n = u32::try_from(config.threads)
            .map_err(|_| KvsError::Config("too many threads".into()))?;
        let ring = Arc::new(HashRing::new(0..n, config.vnodes));
        let use_disk = config.data_dir.is_some() && config.storage.durability != Durability::Memory;
        // A restarted node writes as new replicas: what it wrote before may have reached
        // peers without reaching its disk, and reusing the ids could hide new writes.
        let incarnation = match &config.data_dir {
            Some(dir) => bump_incarnation(dir, config.threads, use_disk)?,
            None => u64::from(rand::random::<u16>()),
        };
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let budget = config
            .storage
            .memory_budget
            .map(|b| usize::try_from(b / u64::from(n)).unwrap_or(usize::MAX));
        let mut threads = Vec::new();
        let mut opened = Vec::new();
        for (id, rx) in (0..n).zip(receivers) {
            let replica = ReplicaId(
                ((incarnation & 0xffff) << 48) | (u64::from(config.node_id) << 16) | u64::from(id),
            );
            let peers = senders.clone();
            let dir = config
                .data_dir
                .as_ref()
                .filter(|_| use_disk)
                .map(|d| d.join(format!("worker-{id}")));
            let (ring, worker_config, storage) = (ring.clone(), config.worker, config.storage);
            let (ready_tx, ready_rx) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("calm-worker-{id}"))
                .spawn(move || {
                    let store = match dir {
                        None => Ok((Tiered::memory(), Recovery::default())),
                        Some(dir) => FileDisk::open(&dir, storage.disk_cache_bytes)
                            .and_then(|disk| Tiered::open(Box::new(disk), storage, budget)),
                    };
                    match store {
                        Ok((store, recovery)) => {
                            let _ = ready_tx.send(Ok(recovery));
                            let worker =
                                Worker::with_store(id, replica, ring, worker_config, store);
                            run_worker(worker, rx, peers);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| KvsError::Config(format!("cannot start worker thread: {e}")))?;
            threads.push(handle);
            opened.push(ready_rx);
        }
        let mut recovery = NodeRecovery {
            incarnation,
            ..NodeRecovery::default()
        };
        let mut failure = None;
        for (id, ready) in opened.into_iter().enumerate() {
            match ready.recv() {
                Ok(Ok(r)) => recovery.workers.push(r),
                Ok(Err(e)) => failure = Some(KvsError::Storage(format!("worker {id}: {e}"))),
                Err(_) => {
                    failure = Some(KvsError::Storage(format!(
                        "worker {id} stopped while starting"
                    )))
                }
            }
        }
        if let Some(e) = failure {
            for tx in &senders {
                let _ = tx.send(WorkerMsg::Stop);
            }
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        recovery.took = started.elapsed();
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
            recovery,
            subscriptions: Arc::new(Subscriptions {
                table: Mutex::new(SubscriptionTable::default()),
                sinks: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                started: Instant::now(),
                pusher: Mutex::new(None),
                stop: AtomicBool::new(false),
            }),
            services: crate::service::Services::default(),
        })
    }

    /// Extra request handlers served next to the store (the function executors register
    /// theirs here).
    pub fn services(&self) -> &crate::service::Services {
        &self.services
    }

    /// Adds a subscriber whose pushes go to `sink`; it watches nothing until it
    /// [`subscribe`](Self::subscribe)s.
    pub fn add_subscriber(&self, sink: Arc<dyn PushSink>) -> SubscriberId {
        let subs = &self.subscriptions;
        let id = subs.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&subs.sinks).insert(id, sink);
        let mut pusher = lock(&subs.pusher);
        if pusher.is_none() {
            let subs = subs.clone();
            let senders = self.senders.clone();
            let period = Duration::from_millis(self.config.push_period_ms.max(1));
            *pusher = std::thread::Builder::new()
                .name("calm-push".into())
                .spawn(move || run_pusher(subs, senders, period))
                .ok();
        }
        id
    }

    /// Subscribes `sub` to `keys` for `lease_ms` (renewing the leases it had). Clamped to
    /// [`LEASE_RANGE_MS`](crate::subscribe::LEASE_RANGE_MS).
    pub fn subscribe(&self, sub: SubscriberId, keys: Vec<Bytes>, lease_ms: u32) {
        let subs = &self.subscriptions;
        let (lo, hi) = crate::subscribe::LEASE_RANGE_MS;
        let expiry = subs.now_ms() + u64::from(lease_ms.clamp(lo, hi));
        let new = lock(&subs.table).subscribe(sub, keys, expiry);
        self.watch(new, true);
    }

    /// How many keys some subscriber watches on this node.
    pub fn watched_keys(&self) -> usize {
        lock(&self.subscriptions.table).watched_keys()
    }

    /// Ends `sub`'s subscriptions to `keys`.
    pub fn unsubscribe(&self, sub: SubscriberId, keys: Vec<Bytes>) {
        let gone = lock(&self.subscriptions.table).unsubscribe(sub, keys);
        self.watch(gone, false);
    }

    /// Ends every subscription of `sub` and forgets its sink.
    pub fn remove_subscriber(&self, sub: SubscriberId) {
        let gone = lock(&self.subscriptions.table).remove_subscriber(sub);
        lock(&self.subscriptions.sinks).remove(&sub);
        self.watch(gone, false);
    }

    fn watch(&self, keys: Vec<Bytes>, on: bool) {
        if keys.is_empty() {
            return;
        }
        // Every worker watches: a key's local replicas may be any of them.
        for tx in &self.senders {
            let _ = tx.send(WorkerMsg::Watch(keys.clone(), on));
        }
    }

    /// What the node found on its disk when it started.
    pub fn recovery(&self) -> &NodeRecovery {
        &self.recovery
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
            metrics: self.metrics.clone(),
            autoscale_period_ms: self.config.autoscale_period_ms,
            policy: self.config.policy.clone(),
            own_process: self.config.own_process,
        }
    }

    /// Installs per-key replication factors on a node outside a cluster (inside one, the
    /// cluster agent does this): the local part decides how many workers hold each key, and
    /// reads of a key spread over them.
    pub fn set_replication_table(&self, table: Arc<ReplicationTable>) {
        if let Ok(mut slot) = self.table.write() {
            *slot = table.clone();
        }
        for tx in &self.senders {
            let _ = tx.send(WorkerMsg::Table(table.clone()));
        }
    }

    /// Stops the workers after the messages already sent to them; waits for their threads.
    pub fn shutdown(&self) {
        self.subscriptions.stop.store(true, Ordering::Relaxed);
        if let Some(pusher) = lock(&self.subscriptions.pusher).take() {
            let _ = pusher.join();
        }
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
    /// The node's metrics (the policy reads them and records its decisions there).
    pub(crate) metrics: Arc<Metrics>,
    /// See [`NodeConfig::autoscale_period_ms`].
    pub(crate) autoscale_period_ms: u64,
    /// See [`NodeConfig::policy`].
    pub(crate) policy: crate::policy::PolicyConfig,
    /// See [`NodeConfig::own_process`].
    pub(crate) own_process: bool,
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

    /// Every worker's figures.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.ask(WorkerMsg::Stats)
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
    fn value_of(&mut self, key: &[u8]) -> Option<Value> {
        // Any worker holding it (its local replicas) answers; merged, they are the node's.
        let key = Bytes::copy_from_slice(key);
        let mut merged: Option<Value> = None;
        for v in self
            .ask(|reply| WorkerMsg::Value(key.clone(), reply))
            .into_iter()
            .flatten()
        {
            match &mut merged {
                Some(m) => {
                    m.merge_replicated(v);
                }
                None => merged = Some(v),
            }
        }
        merged
    }

    fn key_count(&mut self) -> usize {
        self.worker_stats().iter().map(|w| w.keys as usize).sum()
    }

    fn merge_entries(&mut self, _now_ms: u64, entries: Changes) {
        // Every local replica merges: they are not gossiped to locally.
        let mut waiting = Vec::new();
        for (w, part) in self.by_worker(entries).into_iter().enumerate() {
            if !part.is_empty() {
                // Answered once the worker committed the merge (on disk with durability
                // sync, in the log otherwise): the sender may drop its copy on that answer
                // (a hand-off), so a merge still in a queue must not be acknowledged.
                let (done, rx) = oneshot::channel();
                let _ = self.senders[w].send(WorkerMsg::Merge(part, Some(done)));
                waiting.push(rx);
            }
        }
        for rx in waiting {
            let _ = rx.blocking_recv();
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

/// Messages a worker handles before one commit (group commit: one fsync for all of them).
const GROUP_COMMIT: usize = 64;

fn run_worker(
    mut worker: Worker,
    rx: mpsc::Receiver<WorkerMsg>,
    peers: Vec<mpsc::Sender<WorkerMsg>>,
) {
    // Answers held until the batch's log records are committed.
    let mut answers: Vec<(oneshot::Sender<WorkerAnswer>, WorkerAnswer)> = Vec::new();
    let mut merged: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = match worker.next_deadline_ms() {
            Some(deadline) => {
                let wait = deadline.saturating_sub(now_ms());
                match rx.recv_timeout(Duration::from_millis(wait)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Nothing scheduled: sleep until a message arrives (no busy polling when idle).
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        let busy_from = Instant::now();
        let mut next = first;
        let mut handled = 0;
        let mut stop = false;
        while let Some(msg) = next.take() {
            handled += 1;
            match msg {
                WorkerMsg::Ops { ops, reply } => {
                    let results = worker.handle_ops(now_ms(), ops);
                    answers.push((reply, (results, worker.take_changes())));
                }
                WorkerMsg::Merge(entries, done) => {
                    worker.merge_replicated(now_ms(), entries);
                    merged.extend(done);
                }
                WorkerMsg::Digest(filter, reply) => {
                    let _ = reply.send(worker.digest(&filter));
                }
                WorkerMsg::EntriesIn(filter, buckets, limit, reply) => {
                    let _ = reply.send(worker.entries_in(&filter, &buckets, limit));
                }
                WorkerMsg::NotOwned(filter, limit, reply) => {
                    let _ = reply.send(worker.entries_not_owned(&filter, limit));
                }
                WorkerMsg::DropIfUnchanged(entries) => worker.drop_if_unchanged(entries),
                WorkerMsg::Table(table) => worker.set_table(now_ms(), table),
                WorkerMsg::CollectChanges => worker.collect_changes(),
                WorkerMsg::Gossip(batch) => worker.handle_gossip(now_ms(), batch),
                WorkerMsg::Stats(reply) => {
                    let _ = reply.send(worker.stats());
                }
                WorkerMsg::Watch(keys, on) => worker.watch(keys, on),
                WorkerMsg::Value(key, reply) => {
                    let _ = reply.send(worker.value(&key));
                }
                WorkerMsg::TakeDirty(reply) => {
                    let _ = reply.send(worker.take_dirty());
                }
                WorkerMsg::Stop => {
                    stop = true;
                    break;
                }
            }
            // More messages already waiting join this commit.
            if handled < GROUP_COMMIT {
                next = rx.try_recv().ok();
            }
        }
        commit_and_answer(&mut worker, &mut answers, &mut merged);
        worker.add_busy(busy_from.elapsed());
        if stop {
            break;
        }
        worker.handle_tick(now_ms());
        while let Some(batch) = worker.poll_gossip() {
            if let Some(peer) = peers.get(batch.to as usize) {
                let _ = peer.send(WorkerMsg::Gossip(batch));
            }
        }
    }
    if let Err(e) = worker.flush(now_ms()) {
        tracing::error!(worker = worker.id(), error = %e, "could not flush the write-ahead log at shutdown");
    }
}

/// Commits the log records of the messages just handled, then answers them: a write whose
/// records could not be committed answers a storage error instead of success.
fn commit_and_answer(
    worker: &mut Worker,
    answers: &mut Vec<(oneshot::Sender<WorkerAnswer>, WorkerAnswer)>,
    merged: &mut Vec<oneshot::Sender<()>>,
) {
    let committed = worker.commit(now_ms());
    for (reply, (mut results, changes)) in answers.drain(..) {
        if let Err(e) = &committed {
            for r in &mut results {
                if matches!(r, Ok(Reply::Written | Reply::Deleted { .. })) {
                    *r = Err(OpError::Storage {
                        reason: e.to_string(),
                    });
                }
            }
        }
        let _ = reply.send((results, changes));
    }
    for done in merged.drain(..) {
        let _ = done.send(());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every `period` while anyone subscribes: expires leases, collects the watched keys the
/// workers changed, and pushes them to their subscribers.
fn run_pusher(subs: Arc<Subscriptions>, workers: Vec<mpsc::Sender<WorkerMsg>>, period: Duration) {
    while !subs.stop.load(Ordering::Relaxed) {
        std::thread::sleep(period);
        let expired = {
            let mut table = lock(&subs.table);
            if table.is_empty() {
                continue;
            }
            table.expire(subs.now_ms())
        };
        if !expired.is_empty() {
            for tx in &workers {
                let _ = tx.send(WorkerMsg::Watch(expired.clone(), false));
            }
        }
        let mut changed = Vec::new();
        for tx in &workers {
            let (reply, rx) = oneshot::channel();
            if tx.send(WorkerMsg::TakeDirty(reply)).is_err() {
                return;
            }
            match rx.blocking_recv() {
                Ok(c) => changed.extend(c),
                Err(_) => return,
            }
        }
        if changed.is_empty() {
            continue;
        }
        let routed = lock(&subs.table).route(&changed);
        let mut gone = Vec::new();
        for (sub, changes) in routed {
            let sink = lock(&subs.sinks).get(&sub).cloned();
            match sink {
                Some(sink) if sink.push(changes) => {}
                _ => gone.push(sub),
            }
        }
        for sub in gone {
            let keys = lock(&subs.table).remove_subscriber(sub);
            lock(&subs.sinks).remove(&sub);
            for tx in &workers {
                let _ = tx.send(WorkerMsg::Watch(keys.clone(), false));
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
        assert_eq!(config.policy, crate::policy::PolicyConfig::default());
        let with_policy = parse("threads = 1\n[policy]\nhot_factor = 5\n").unwrap();
        assert_eq!(with_policy.policy.hot_factor, 5);
        assert_eq!(with_policy.policy.cool_ms, 30_000);
        assert!(parse("[policy]\nhot_factr = 5\n").is_err());
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
