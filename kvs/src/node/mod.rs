//! A node's storage workers on their own threads: the thin shell around [`Worker`].
//!
//! Each worker runs on one OS thread and owns its keys outright; other threads reach it only
//! by message (no lock on the data path). A batch of operations is split by owning worker,
//! sent as one message per worker, and the results reassembled in order.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use bytes::Bytes;
use calm_lattice::ReplicaId;
use tokio::sync::oneshot;

use crate::cluster::ReplicationTable;
use crate::error::KvsError;
use crate::metrics::{Metrics, StatsSnapshot};
use crate::op::{KeyFilter, Op, OpResult};
use crate::ring::HashRing;
use crate::storage::{Durability, FileDisk, QuotaUsage, Quotas, Recovery, Tiered};
use crate::subscribe::{PushSink, SubscriberId, SubscriptionTable};
use crate::worker::Worker;

mod config;
mod incarnation;
mod pool;
mod push;

pub use config::NodeConfig;
use incarnation::bump_incarnation;
pub use pool::{PendingBatch, WorkerPool};
use pool::{WorkerMsg, run_worker};
use push::{Subscriptions, run_pusher};

/// Deltas of the writes a batch made: `(key, delta)`.
pub use crate::worker::Changes;

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
    /// What the keys under each quota hold here (kept by the workers).
    quotas: Arc<Quotas>,
}

pub(super) type SharedTable = Arc<std::sync::RwLock<Arc<ReplicationTable>>>;

pub(super) fn local_factor(table: &SharedTable, key: &[u8], default: usize) -> usize {
    table
        .read()
        .ok()
        .and_then(|t| t.local_factor(key))
        .unwrap_or(default)
}

pub(super) use crate::tasks::now_ms;

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
        let quotas = Quotas::new(config.quotas.clone());
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
            let kinds = config.kinds.clone();
            let quotas = quotas.clone();
            let (ready_tx, ready_rx) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("calm-worker-{id}"))
                .spawn(move || {
                    let store = match dir {
                        None => Ok((Tiered::memory(), Recovery::default())),
                        Some(dir) => FileDisk::open(&dir, storage.disk_cache_bytes)
                            .and_then(|disk| Tiered::open(Box::new(disk), storage, budget)),
                    };
                    let worker = store.and_then(|(store, recovery)| {
                        let mut worker =
                            Worker::with_store(id, replica, ring, worker_config, store)
                                .accepting(kinds);
                        if !quotas.is_empty() {
                            worker.count_quotas(quotas)?;
                        }
                        Ok((worker, recovery))
                    });
                    match worker {
                        Ok((worker, recovery)) => {
                            let _ = ready_tx.send(Ok(recovery));
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
            quotas,
            subscriptions: Arc::new(Subscriptions {
                table: Mutex::new(SubscriptionTable::default()),
                sinks: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                started: Instant::now(),
                pusher: Mutex::new(None),
                stop: AtomicBool::new(false),
            }),
        })
    }

    /// What the keys under each quota of the ACL file hold on this node now (see
    /// [`quota`](crate::storage::quota)).
    pub fn quota_usage(&self) -> Vec<QuotaUsage> {
        self.quotas.usage()
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
        if op.is_read() {
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
        Ok(StatsSnapshot {
            quotas: self.quotas.usage(),
            ..self.metrics.snapshot(workers)
        })
    }

    /// The keys this node holds that read as something now and pass `filter`, once each
    /// (workers holding copies of the same key count once), in order.
    pub async fn keys(&self, filter: &KeyFilter) -> Result<Vec<Bytes>, KvsError> {
        let mut keys = std::collections::BTreeSet::new();
        for tx in &self.senders {
            let (reply, rx) = oneshot::channel();
            tx.send(WorkerMsg::Keys(filter.clone(), reply))
                .map_err(|_| KvsError::ShutDown)?;
            let held = rx.await.map_err(|_| KvsError::ShutDown)?;
            keys.extend(held?);
        }
        Ok(keys.into_iter().collect())
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
            kinds: self.config.kinds.clone(),
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
