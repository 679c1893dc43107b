//! The workers on their threads: the messages they take, a batch in flight
//! ([`PendingBatch`]), the pool the cluster agent reads through ([`WorkerPool`]) and each
//! worker's loop (group commit).

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::cluster::{LocalStore, OwnerFilter, ReplicationTable};
use crate::error::KvsError;
use crate::metrics::{Metrics, WorkerStats};
use crate::op::{KeyFilter, Op, OpError, OpKind, OpResult, Reply};
use crate::ring::HashRing;
use crate::subscribe::Pushed;
use crate::value::Value;
use crate::worker::{Changes, GossipBatch, Worker};

use super::{SharedTable, local_factor, now_ms};

/// A worker's answer to a batch: one result per operation, and the deltas of its writes.
pub(super) type WorkerAnswer = (Vec<OpResult>, Changes);

pub(super) enum WorkerMsg {
    Ops {
        ops: Vec<Op>,
        reply: oneshot::Sender<WorkerAnswer>,
    },
    Gossip(GossipBatch),
    Stats(oneshot::Sender<WorkerStats>),
    Watch(Vec<Bytes>, bool),
    Value(Bytes, oneshot::Sender<Option<Value>>),
    Keys(KeyFilter, oneshot::Sender<Result<Vec<Bytes>, OpError>>),
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

/// A batch the workers are running; [`results`](PendingBatch::results) waits for it.
pub struct PendingBatch {
    pub(super) waiting: Vec<(oneshot::Receiver<WorkerAnswer>, Vec<usize>)>,
    pub(super) op_kinds: Vec<OpKind>,
    pub(super) started: Instant,
    pub(super) metrics: Arc<Metrics>,
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
    pub(super) senders: Vec<mpsc::Sender<WorkerMsg>>,
    pub(super) ring: Arc<HashRing>,
    pub(super) local_replication: usize,
    pub(super) table: SharedTable,
    /// The node's metrics (the policy reads them and records its decisions there).
    pub(crate) metrics: Arc<Metrics>,
    /// See [`NodeConfig::autoscale_period_ms`].
    pub(crate) autoscale_period_ms: u64,
    /// See [`NodeConfig::policy`].
    pub(crate) policy: crate::policy::PolicyConfig,
    /// See [`NodeConfig::own_process`].
    pub(crate) own_process: bool,
    /// See [`NodeConfig::kinds`].
    pub(crate) kinds: crate::value::Kinds,
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

    fn merge_entries(&mut self, _now_ms: u64, entries: Changes) -> Vec<Bytes> {
        let (entries, refused) = crate::worker::split_refused(&self.kinds, entries);
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
        refused
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
pub(super) const GROUP_COMMIT: usize = 64;

pub(super) fn run_worker(
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
                WorkerMsg::Keys(filter, reply) => {
                    let _ = reply.send(worker.live_keys(now_ms(), &filter));
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
pub(super) fn commit_and_answer(
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
