//! The storage worker: a sans-IO state machine that owns a shard of keys.
//!
//! A worker holds the values of the keys its node's local ring gives it, and is the only
//! code that touches them. It has no threads, sockets, clock or randomness of its own:
//!
//! - [`Worker::handle_ops`] runs a batch of client operations at time `now_ms` and returns
//!   their results;
//! - [`Worker::handle_gossip`] merges deltas from another worker;
//! - [`Worker::handle_tick`] lets time pass (gossip is sent once per period);
//! - [`Worker::poll_gossip`] yields the batches to send, one per destination worker;
//! - [`Worker::commit`] hands the batch's log records to its disk (see [`storage`](crate::storage)).
//!
//! A worker with a disk reaches it only through the [`Disk`](crate::storage::Disk) trait;
//! the simulation gives it one in memory that can crash.
//!
//! The thread shell in [`node`](crate::node) moves messages between workers; tests and the
//! cluster simulation drive the same code directly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use calm_lattice::{HlcClock, ReplicaId, Stamp};
use serde::{Deserialize, Serialize};

use crate::cluster::{LocalStore, OwnerFilter, ReplicationTable, bucket};
use crate::hot_keys::HotKeys;
use crate::metrics::WorkerStats;
use crate::op::{KeyFilter, Op, OpError, OpResult, Reply};
use crate::ring::HashRing;

/// The deltas of writes, per key, as a worker hands them on for replication.
pub type Changes = Vec<(Bytes, Value)>;
use crate::storage::quota::{self, Quotas};
use crate::storage::{StorageError, Tiered};
use crate::value::{IncrementRefused, Kinds, Value, Write, WriteCtx};

/// How a worker behaves; the same for every worker of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// How many workers of the node hold each key (1 = no local replication).
    pub local_replication: usize,
    /// How often changed keys are gossiped to the other replicas, milliseconds.
    pub gossip_period_ms: u64,
    /// The longest key accepted, bytes.
    pub max_key_bytes: usize,
    /// The largest value a single write may carry, bytes.
    pub max_value_bytes: usize,
    /// How far ahead of local time a replicated timestamp may be, milliseconds.
    pub max_clock_drift_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            local_replication: 1,
            gossip_period_ms: 100,
            max_key_bytes: 4096,
            max_value_bytes: 8 << 20,
            max_clock_drift_ms: 60_000,
        }
    }
}

/// Deltas for one worker, merged per key over one gossip period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipBatch {
    /// The sending worker.
    pub from: u32,
    /// The receiving worker.
    pub to: u32,
    /// Each changed key with the merge of its deltas since the last batch.
    pub entries: Vec<(Bytes, Value)>,
}

/// A storage worker. See the [module docs](self).
#[derive(Debug)]
pub struct Worker {
    id: u32,
    /// The id this worker writes under now; it changes when the worker drops a copy it
    /// wrote (see [`drop_if_unchanged`](LocalStore::drop_if_unchanged)).
    replica: ReplicaId,
    /// How many times the id changed (the next id is derived from the current one and this).
    replica_changes: u64,
    ring: Arc<HashRing>,
    config: WorkerConfig,
    store: Tiered,
    clock: HlcClock,
    /// Per destination worker, the merged deltas not yet sent.
    pending: BTreeMap<u32, HashMap<Bytes, Value>>,
    outbox: VecDeque<GossipBatch>,
    next_gossip_ms: Option<u64>,
    stats: WorkerStats,
    /// Deltas of writes made here, for the cluster layer (when it asks for them).
    changes: Option<Vec<(Bytes, Value)>>,
    /// Per-key replication factors (the local part: how many workers hold a key).
    table: Arc<ReplicationTable>,
    /// Which keys clients use most, in bounded memory.
    hot: HotKeys,
    /// Keys some cache subscribed to (see [`subscribe`](crate::subscribe)).
    watched: HashSet<Bytes>,
    /// Deadlines to collect expired keys at, and the keys collected lately.
    expiry: Expiry,
    /// Watched keys changed since the last [`take_dirty`](Self::take_dirty).
    dirty: HashSet<Bytes>,
    /// The application's kinds this worker takes (see [`custom`](crate::value::custom)).
    kinds: Kinds,
}

impl Worker {
    /// Worker `id` of a node whose local ring is `ring`, writing as `replica` (unique across
    /// the cluster).
    pub fn new(id: u32, replica: ReplicaId, ring: Arc<HashRing>, config: WorkerConfig) -> Self {
        Worker::with_store(id, replica, ring, config, Tiered::memory())
    }

    /// Like [`new`](Self::new), with keys kept in `store` (opened on a disk, and recovered).
    pub fn with_store(
        id: u32,
        replica: ReplicaId,
        ring: Arc<HashRing>,
        config: WorkerConfig,
        store: Tiered,
    ) -> Self {
        Worker {
            id,
            replica,
            replica_changes: 0,
            ring,
            config,
            store,
            clock: HlcClock::new(config.max_clock_drift_ms),
            pending: BTreeMap::new(),
            outbox: VecDeque::new(),
            next_gossip_ms: None,
            stats: WorkerStats {
                worker: id,
                ..WorkerStats::default()
            },
            changes: None,
            table: Arc::new(ReplicationTable::default()),
            hot: HotKeys::new(4096, 16, 100_000),
            watched: HashSet::new(),
            dirty: HashSet::new(),
            expiry: Expiry::default(),
            kinds: Kinds::default(),
        }
        .watching_recovered()
    }

    /// The worker, taking values of `kinds` (see [`custom`](crate::value::custom)); it
    /// refuses the others with [`OpError::UnknownKind`].
    pub fn accepting(mut self, kinds: Kinds) -> Self {
        self.kinds = kinds;
        self
    }

    /// Watches the deadlines of the keys recovered from the disk, in memory or only on disk
    /// (the cold tier's index keeps deadlines), so each is collected when it expires.
    fn watching_recovered(mut self) -> Self {
        for (at, key) in self.store.deadlines() {
            self.expiry.watch(at, &key);
        }
        self
    }

    /// The number of local replicas of `key`.
    fn local_factor(&self, key: &[u8]) -> usize {
        self.table
            .local_factor(key)
            .unwrap_or(self.config.local_replication)
    }

    /// Installs new per-key replication factors. For keys this worker leads whose local
    /// factor grew, the whole value goes to the new local replicas with the next gossip.
    pub fn set_table(&mut self, now_ms: u64, table: Arc<ReplicationTable>) {
        let old = std::mem::replace(&mut self.table, table);
        for (key, _) in self.table.overrides() {
            let before = old
                .local_factor(&key)
                .unwrap_or(self.config.local_replication);
            let after = self.local_factor(&key);
            if after <= before || !self.is_local_primary(&key) {
                continue;
            }
            let Ok(Some(value)) = self.store.peek(&key) else {
                continue;
            };
            let had: Vec<u32> = self.ring.owners(&key, before);
            for owner in self.ring.owners(&key, after) {
                if owner != self.id && !had.contains(&owner) {
                    self.pending
                        .entry(owner)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
            }
        }
        if !self.pending.is_empty() && self.next_gossip_ms.is_none() {
            self.next_gossip_ms = Some(now_ms);
        }
    }

    /// Starts keeping the deltas of local writes for [`take_changes`](Self::take_changes)
    /// (a node in a cluster ships them to the keys' other owners).
    pub fn collect_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The deltas of local writes since the last call.
    pub fn take_changes(&mut self) -> Changes {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// This worker's index in its node.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Runs `ops` in order at time `now_ms` (milliseconds since the Unix epoch); one result
    /// per operation.
    /// Call [`commit`](Self::commit) before acknowledging writes.
    pub fn handle_ops(&mut self, now_ms: u64, ops: impl IntoIterator<Item = Op>) -> Vec<OpResult> {
        let results = ops.into_iter().map(|op| self.run(now_ms, op)).collect();
        self.store.maintain();
        results
    }

    /// Hands the log records of the batches run since the last commit to the disk. With
    /// durability `sync` they are on disk when this returns, so their writes may be
    /// acknowledged; an error means they may not be.
    pub fn commit(&mut self, now_ms: u64) -> Result<(), StorageError> {
        self.store.commit(now_ms)
    }

    /// Makes everything durable (a clean shutdown).
    pub fn flush(&mut self, now_ms: u64) -> Result<(), StorageError> {
        self.store.flush(now_ms)
    }

    fn run(&mut self, now_ms: u64, op: Op) -> OpResult {
        self.stats.ops += 1;
        self.check_key(op.key())?;
        self.hot.record(op.key());
        match op {
            // Merging replicas is the node's job; a worker alone answers with its own copy.
            Op::Get { key, meta } | Op::GetAll { key, meta } => Ok(Reply::Value(
                self.store
                    .get(&key)
                    .map_err(storage_error)?
                    .and_then(|v| v.read_at(now_ms, meta)),
            )),
            Op::Probe { key, probe } => Ok(Reply::Probed(
                self.store
                    .get(&key)
                    .map_err(storage_error)?
                    .and_then(|v| v.probe(now_ms, &probe)),
            )),
            Op::Expire { key, at_ms } => {
                let Some(value) = self.store.get_mut(&key).map_err(storage_error)? else {
                    return Ok(Reply::Expiry { changed: false });
                };
                if !value.is_live(now_ms) || (at_ms.is_none() && value.deadline().is_none()) {
                    return Ok(Reply::Expiry { changed: false });
                }
                let ctx = WriteCtx {
                    replica: self.replica,
                    stamp: Stamp::new(self.clock.tick(now_ms), self.replica),
                };
                let Some(delta) = value.expire(at_ms, ctx) else {
                    return Ok(Reply::Expiry { changed: false });
                };
                self.store.changed(&key, &delta);
                if let Some(at) = at_ms {
                    self.expiry.watch(at, &key);
                }
                self.replicate(now_ms, &key, delta);
                Ok(Reply::Expiry { changed: true })
            }
            Op::Write { key, write } => self.write(now_ms, key, write),
            Op::Raw { key } => Ok(Reply::Raw(self.store.peek(&key).map_err(storage_error)?)),
            Op::Delete { key } => {
                let Some(value) = self.store.get_mut(&key).map_err(storage_error)? else {
                    return Ok(Reply::Deleted { existed: false });
                };
                if value.expired(now_ms) {
                    return Ok(Reply::Deleted { existed: false });
                }
                let stamp = Stamp::new(self.clock.tick(now_ms), self.replica);
                let ctx = WriteCtx {
                    replica: self.replica,
                    stamp,
                };
                match value.delete(ctx) {
                    Some(delta) => {
                        self.store.changed(&key, &delta);
                        self.replicate(now_ms, &key, delta);
                        Ok(Reply::Deleted { existed: true })
                    }
                    None => Ok(Reply::Deleted { existed: false }),
                }
            }
        }
    }

    fn write(&mut self, now_ms: u64, key: Bytes, mut write: Write) -> OpResult {
        let len = write.payload_len();
        if len > self.config.max_value_bytes {
            return Err(OpError::ValueTooLarge {
                len,
                max: self.config.max_value_bytes,
            });
        }
        self.kinds.admit_write(&mut write)?;
        // Removing members or fields from a key that does not exist (or was deleted)
        // changes nothing, and must not create the key.
        if !write.creates()
            && !matches!(write, Write::Merge(_))
            && !self
                .store
                .get(&key)
                .map_err(storage_error)?
                .is_some_and(|v| v.is_live(now_ms))
        {
            return Ok(Reply::Written);
        }
        let ctx = WriteCtx {
            replica: self.replica,
            stamp: Stamp::new(self.clock.tick(now_ms), self.replica),
        };
        self.admit(now_ms, &key, &write, ctx)?;
        // What the value keeps is copied here, on the worker's thread: a request's strings
        // may be slices of a connection's read buffer (which a stored slice would keep
        // alive), and memory allocated by the thread that frees it (when the value is
        // overwritten) costs the allocator no lock between threads.
        let write = write.owned();
        let swept = self.expiry.take_swept(&key);
        let value = self
            .store
            .get_or_insert(&key, write.kind())
            .map_err(storage_error)?;
        // A write to a key that expired here, or that this worker collected when it expired,
        // finds it absent, as after a delete: it starts a new generation, which replaces the
        // old value wherever they meet. (After a collection, a plain first write would
        // repeat this worker's old dots and counts, which replicas still holding the old
        // value would take for writes they have seen.)
        if write.creates() && (value.expired(now_ms) || (swept && !value.is_visible())) {
            value.restart(write.kind(), ctx);
        }
        match value.check_increment(&write) {
            Ok(()) => {}
            Err(IncrementRefused::Overflow { value, by }) => {
                return Err(OpError::Overflow { value, by });
            }
            Err(IncrementRefused::NotInteger) => return Err(OpError::NotInteger),
            Err(IncrementRefused::NotANumber) => return Err(OpError::NotANumber),
        }
        let delta = value.apply(write, ctx)?;
        self.store.changed(&key, &delta);
        self.replicate(now_ms, &key, delta);
        Ok(Reply::Written)
    }

    /// Refuses a client write that would take a quota covering `key` past its limit (see
    /// [`quota`](crate::storage::quota)). The write's growth is first bounded from what it
    /// carries; only near a limit is it applied to a copy, for the exact figure.
    fn admit(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        write: &Write,
        ctx: WriteCtx,
    ) -> Result<(), OpError> {
        let Some(quotas) = self.store.quotas().filter(|q| q.covers(key)).cloned() else {
            return Ok(());
        };
        // Writes run at the key's first local worker, which counts it: its record says
        // what the key counts for without reading the value.
        let before = match self.store.quota_charge(key) {
            Some(charge) => charge,
            None => {
                (self.store.get(key).map_err(storage_error)?).map_or(0, |v| quota::charge(key, v))
            }
        };
        if !matches!(write, Write::Merge(_)) {
            // Numbers read back as text (a hash field's integer) may outgrow their 8 bytes.
            let most = before + (key.len() + write.payload_len()) as u64 + 32;
            if quotas.admit(key, before, most).is_ok() {
                return Ok(());
            }
        }
        let current = self.store.get(key).map_err(storage_error)?;
        let mut copy = current
            .cloned()
            .unwrap_or_else(|| Value::empty(write.kind()));
        if write.creates()
            && (copy.expired(now_ms) || (self.expiry.is_swept(key) && !copy.is_visible()))
        {
            copy.restart(write.kind(), ctx);
        }
        if copy.check_increment(write).is_err() || copy.apply(write.clone(), ctx).is_err() {
            // Refused for another reason, which the write itself reports.
            return Ok(());
        }
        quotas.admit(key, before, quota::charge(key, &copy))
    }

    /// Starts counting the keys under `quotas` this worker is the first local owner of
    /// (shared by the node's workers); client writes are checked against them from now on.
    pub fn count_quotas(&mut self, quotas: Arc<Quotas>) -> Result<(), StorageError> {
        self.store.count_quotas(quotas, self.ring.clone(), self.id)
    }

    /// What the keys under each quota hold on this worker's node, as the node's figures
    /// say (empty without quotas).
    pub fn quota_usage(&self) -> Vec<quota::QuotaUsage> {
        self.store.quotas().map(|q| q.usage()).unwrap_or_default()
    }

    /// Checks the quota figures against the keys this worker holds (see
    /// [`Tiered::audit_quotas`]); per quota, the keys and bytes it counts.
    pub fn audit_quotas(&mut self) -> Result<Vec<(u64, u64)>, String> {
        self.store.audit_quotas()
    }

    fn check_key(&self, key: &Bytes) -> Result<(), OpError> {
        let max = self.config.max_key_bytes;
        if key.is_empty() {
            Err(OpError::EmptyKey { max })
        } else if key.len() > max {
            Err(OpError::KeyTooLong {
                len: key.len(),
                max,
            })
        } else {
            Ok(())
        }
    }

    /// Starts (`true`) or stops marking changes of `keys` for subscribers.
    pub fn watch(&mut self, keys: Vec<Bytes>, on: bool) {
        for key in keys {
            if on {
                self.watched.insert(key);
            } else {
                self.dirty.remove(&key);
                self.watched.remove(&key);
            }
        }
    }

    /// The watched keys changed since the last call, with their values now (`None`: not
    /// found or deleted).
    pub fn take_dirty(&mut self) -> crate::subscribe::Pushed {
        let keys: Vec<Bytes> = self.dirty.drain().collect();
        keys.into_iter()
            .map(|key| {
                let value = self
                    .store
                    .get(&key)
                    .ok()
                    .flatten()
                    .and_then(|v| v.read(true));
                (key, value)
            })
            .collect()
    }

    fn mark(&mut self, key: &Bytes) {
        if !self.watched.is_empty() && self.watched.contains(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// Queues `delta` for the key's other local replicas and the cluster layer.
    fn replicate(&mut self, now_ms: u64, key: &Bytes, delta: Value) {
        self.mark(key);
        if let Some(changes) = &mut self.changes {
            changes.push((key.clone(), delta.clone()));
        }
        let replicas = self.local_factor(key);
        if replicas <= 1 {
            return;
        }
        for owner in self.ring.owners(key, replicas) {
            if owner == self.id {
                continue;
            }
            let per_key = self.pending.entry(owner).or_default();
            match per_key.get_mut(key) {
                Some(existing) => {
                    existing.merge_replicated(delta.clone());
                }
                None => {
                    per_key.insert(key.clone(), delta.clone());
                }
            }
        }
        if self.next_gossip_ms.is_none() && !self.pending.is_empty() {
            self.next_gossip_ms = Some(now_ms.saturating_add(self.config.gossip_period_ms));
        }
    }

    /// Merges deltas gossiped by another worker.
    pub fn handle_gossip(&mut self, now_ms: u64, batch: GossipBatch) {
        self.stats.gossip_received += 1;
        self.merge_replicated(now_ms, batch.entries);
    }

    /// Merges values that come from other replicas (workers or nodes).
    pub fn merge_replicated(&mut self, now_ms: u64, entries: Vec<(Bytes, Value)>) {
        self.merge_entries_inner(now_ms, entries);
        self.store.maintain();
    }

    fn merge_entries_inner(&mut self, now_ms: u64, entries: Vec<(Bytes, Value)>) {
        for (key, value) in entries {
            // Later local writes must be stamped after what we have seen; a stamp from too
            // far in the future is still merged, but not adopted.
            if let Some(stamp) = value.generation() {
                let _ = self.clock.observe(stamp.hlc, now_ms);
            }
            if let Value::Lww(lww) = value.inner()
                && let Some(stamp) = lww.stamp()
            {
                let _ = self.clock.observe(stamp.hlc, now_ms);
            }
            let watched =
                (!self.watched.is_empty() && self.watched.contains(&key)).then(|| key.clone());
            let expiring = value.deadline().is_some().then(|| key.clone());
            let merged = self.store.merge(key, value);
            if let (Some(key), Ok((true, _))) = (expiring, &merged)
                && let Ok(Some(at)) = self.store.get(&key).map(|v| v.and_then(Value::deadline))
            {
                self.expiry.watch(at, &key);
            }
            if let (Some(key), Ok((true, _))) = (watched, &merged) {
                self.dirty.insert(key);
            }
            match merged {
                Ok((_, Some(c))) => {
                    self.stats.kind_conflicts += 1;
                    tracing::warn!(
                        worker = self.id,
                        stored = %c.stored,
                        replicated = %c.attempted,
                        "replicas disagreed on a key's kind; kept the greater kind"
                    );
                }
                Ok((_, None)) => {}
                Err(e) => {
                    // Anti-entropy brings the value again later.
                    tracing::warn!(worker = self.id, error = %e, "could not merge a replicated value");
                }
            }
        }
    }

    /// Lets time pass: once per gossip period, pending deltas become batches to send;
    /// expired keys are collected.
    pub fn handle_tick(&mut self, now_ms: u64) {
        self.store.handle_tick(now_ms);
        self.collect_expired(now_ms);
        if self.next_gossip_ms.is_some_and(|t| now_ms >= t) {
            self.next_gossip_ms = None;
            for (to, entries) in std::mem::take(&mut self.pending) {
                self.outbox.push_back(GossipBatch {
                    from: self.id,
                    to,
                    entries: entries.into_iter().collect(),
                });
            }
        }
    }

    /// The keys this worker holds that read as something at `now_ms` and pass `filter`.
    pub fn live_keys(&mut self, now_ms: u64, filter: &KeyFilter) -> Result<Vec<Bytes>, OpError> {
        self.store
            .live_keys(now_ms, |k, v| {
                filter.kind_matches(v.kind()) && filter.name_matches(k)
            })
            .map_err(storage_error)
    }

    /// Drops the keys whose deadline has passed, here only: dropping a copy changes no
    /// other replica, so a `PERSIST` or `SET` this replica has not seen yet survives it
    /// and comes back (see [Expiry](crate::value#expiry)).
    fn collect_expired(&mut self, now_ms: u64) {
        for key in self.expiry.due(now_ms) {
            let Ok(Some(value)) = self.store.get(&key) else {
                continue;
            };
            if !value.expired(now_ms) {
                continue;
            }
            let mine = value.written_by(self.replica);
            self.store.remove(&key);
            self.stats.expired += 1;
            if mine {
                self.expiry.swept(key, now_ms);
            }
        }
        self.expiry.prune(now_ms);
    }

    /// The next gossip batch to send, if any.
    pub fn poll_gossip(&mut self) -> Option<GossipBatch> {
        let batch = self.outbox.pop_front();
        if batch.is_some() {
            self.stats.gossip_sent += 1;
        }
        batch
    }

    /// When [`handle_tick`](Self::handle_tick) next has work to do, if ever.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        [
            self.next_gossip_ms,
            self.store.next_deadline_ms(),
            self.expiry.next_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Counts time the worker's shell spent handling its messages (the worker has no clock
    /// of its own).
    pub fn add_busy(&mut self, busy: std::time::Duration) {
        self.stats.busy_us = self
            .stats
            .busy_us
            .saturating_add(u64::try_from(busy.as_micros()).unwrap_or(u64::MAX));
    }

    /// The worker's figures.
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            keys: self.store.len() as u64,
            storage: self.store.stats(),
            hot_keys: self.hot.top(),
            ..self.stats.clone()
        }
    }

    /// The stored value of `key`, tombstones included, from whichever tier holds it (for
    /// tests and repair).
    pub fn value(&mut self, key: &[u8]) -> Option<Value> {
        self.store.peek(key).ok().flatten()
    }

    /// Whether this worker is the first of the key's local replicas: the one that speaks
    /// for the node about it (digests, repair, handoff), so local copies count once.
    fn is_local_primary(&self, key: &[u8]) -> bool {
        self.ring.primary(key) == Some(self.id)
    }
}

/// How long a worker remembers that it collected an expired key it had written (so that
/// its next write there starts a new generation). Replicas whose clocks lag collect the
/// key themselves well within it.
const SWEPT_MEMORY_MS: u64 = 60_000;

/// The deadlines a worker collects expired keys at, and the keys it collected lately.
#[derive(Debug, Default)]
struct Expiry {
    /// (deadline, key), soonest first; a key may appear more than once.
    due: BinaryHeap<Reverse<(u64, Bytes)>>,
    /// Keys collected that this worker had written, until when they are remembered.
    swept: HashMap<Bytes, u64>,
    /// The same, in the order they were collected.
    swept_order: VecDeque<(u64, Bytes)>,
}

impl Expiry {
    fn watch(&mut self, at: u64, key: &Bytes) {
        // A copy: the key may be a slice of a connection's read buffer, kept until then.
        self.due.push(Reverse((at, Bytes::copy_from_slice(key))));
    }

    /// The keys whose deadline has come (to check: a deadline may have moved since).
    fn due(&mut self, now_ms: u64) -> Vec<Bytes> {
        let mut keys = Vec::new();
        while let Some(Reverse((at, _))) = self.due.peek()
            && *at <= now_ms
        {
            let Reverse((_, key)) = self.due.pop().expect("peeked");
            keys.push(key);
        }
        keys
    }

    fn next_ms(&self) -> Option<u64> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    fn swept(&mut self, key: Bytes, now_ms: u64) {
        let until = now_ms.saturating_add(SWEPT_MEMORY_MS);
        self.swept.insert(key.clone(), until);
        self.swept_order.push_back((until, key));
    }

    /// Whether this worker collected `key` lately.
    fn is_swept(&self, key: &[u8]) -> bool {
        !self.swept.is_empty() && self.swept.contains_key(key)
    }

    /// Whether this worker collected `key` lately (and forgets it: the next write restarts
    /// the key).
    fn take_swept(&mut self, key: &[u8]) -> bool {
        !self.swept.is_empty() && self.swept.remove(key).is_some()
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some((until, _)) = self.swept_order.front()
            && *until <= now_ms
        {
            let (until, key) = self.swept_order.pop_front().expect("peeked");
            if self.swept.get(&key) == Some(&until) {
                self.swept.remove(&key);
            }
        }
    }
}

/// A fresh replica id for a worker that forgot some of what it wrote under `current`:
/// 64 well-mixed bits (splitmix64 of the id and a change count), so two ids collide with
/// odds of about n²/2⁶⁵ over n ids ever used, as with random actor ids.
fn next_replica(current: ReplicaId, changes: &mut u64) -> ReplicaId {
    *changes += 1;
    let mut z = current
        .0
        .wrapping_add(changes.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ReplicaId(z ^ (z >> 31))
}

/// Entries a node with `kinds` merges, and the keys of those it refuses (see
/// [`Kinds::admit`]).
pub(crate) fn split_refused(
    kinds: &Kinds,
    entries: Vec<(Bytes, Value)>,
) -> (Vec<(Bytes, Value)>, Vec<Bytes>) {
    let mut refused = Vec::new();
    let mut why = None;
    let entries = entries
        .into_iter()
        .filter_map(|(key, mut value)| match kinds.admit(&mut value) {
            Ok(()) => Some((key, value)),
            Err(e) => {
                why.get_or_insert(e);
                refused.push(key);
                None
            }
        })
        .collect();
    if let Some(why) = why {
        tracing::warn!(keys = refused.len(), first = ?refused[0], error = %why, "refused replicated values");
    }
    (entries, refused)
}

fn storage_error(e: StorageError) -> OpError {
    OpError::Storage {
        reason: e.to_string(),
    }
}

impl LocalStore for Worker {
    fn merge_entries(&mut self, now_ms: u64, entries: Vec<(Bytes, Value)>) -> Vec<Bytes> {
        let (entries, refused) = split_refused(&self.kinds, entries);
        self.merge_replicated(now_ms, entries);
        refused
    }

    fn digest(&mut self, filter: &OwnerFilter) -> BTreeMap<u16, u64> {
        let mut digest = BTreeMap::new();
        if let Some(keys) = filter.candidates() {
            for key in keys {
                if self.is_local_primary(&key)
                    && filter.matches(&key)
                    && let Some(value) = self.value(&key)
                {
                    *digest.entry(bucket(&key)).or_insert(0u64) ^=
                        crate::storage::entry_hash(&key, &value);
                }
            }
            return digest;
        }
        self.store.for_each_hash(
            |key| self.is_local_primary(key) && filter.matches(key),
            |key, hash| *digest.entry(bucket(key)).or_insert(0u64) ^= hash,
        );
        digest
    }

    fn entries_in(
        &mut self,
        filter: &OwnerFilter,
        buckets: &BTreeSet<u16>,
        limit: usize,
    ) -> Vec<(Bytes, Value)> {
        let ring = self.ring.clone();
        let id = self.id;
        let keep = |k: &[u8]| {
            buckets.contains(&bucket(k)) && ring.primary(k) == Some(id) && filter.matches(k)
        };
        match filter.candidates() {
            Some(keys) => keys
                .into_iter()
                .filter(|k| keep(k))
                .filter_map(|k| self.value(&k).map(|v| (k, v)))
                .take(limit)
                .collect(),
            None => self.store.collect(keep, limit),
        }
    }

    fn value_of(&mut self, key: &[u8]) -> Option<Value> {
        self.value(key)
    }

    fn key_count(&mut self) -> usize {
        self.store.len()
    }

    fn entries_not_owned(&mut self, mine: &OwnerFilter, limit: usize) -> Vec<(Bytes, Value)> {
        let ring = self.ring.clone();
        let id = self.id;
        self.store
            .collect(|k| ring.primary(k) == Some(id) && !mine.matches(k), limit)
    }

    fn drop_if_unchanged(&mut self, entries: Vec<(Bytes, Value)>) {
        let mut forgot_own = false;
        for (key, sent) in entries {
            if self.store.remove_if_equal(&key, &sent) {
                forgot_own |= sent.written_by(self.replica);
            }
        }
        if forgot_own {
            // This worker no longer knows what it wrote to those keys; should one come back
            // to it (its owner dies, a client's write is forwarded here), its next write
            // would repeat the dots and counts of the old ones and be taken for them.
            self.replica = next_replica(self.replica, &mut self.replica_changes);
            self.stats.replica_changes += 1;
        }
        self.store.maintain();
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::value::{Kind, ReadValue};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn workers(n: u32, config: WorkerConfig) -> Vec<Worker> {
        let ring = Arc::new(HashRing::new(0..n, 32));
        (0..n)
            .map(|i| Worker::new(i, ReplicaId(u64::from(i)), ring.clone(), config))
            .collect()
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Write {
            key: b(key),
            write: Write::Lww(b(value)),
        }
    }

    fn get(key: &str) -> Op {
        Op::Get {
            key: b(key),
            meta: false,
        }
    }

    fn expire(key: &str, at_ms: Option<u64>) -> Op {
        Op::Expire { key: b(key), at_ms }
    }

    fn incr(key: &str, by: i64) -> Op {
        Op::Write {
            key: b(key),
            write: Write::Increment(by),
        }
    }

    fn counter(w: &mut Worker, now: u64, key: &str) -> Option<i64> {
        match w.handle_ops(now, [get(key)]).remove(0) {
            Ok(Reply::Value(v)) => v.and_then(|v| v.as_counter()),
            other => panic!("{other:?}"),
        }
    }

    /// Two workers replicate a counter that is given a time to live. Once it passes, it
    /// reads as absent on both; each collects its copy on its own at its next tick; a write
    /// after that starts afresh (at 1, not at the old count), also on the replica that
    /// still held the old value and on one that receives a late write of the old one.
    #[test]
    fn expired_keys_read_as_absent_are_collected_and_start_afresh() {
        let config = WorkerConfig {
            local_replication: 2,
            gossip_period_ms: 0,
            ..WorkerConfig::default()
        };
        let mut ws = workers(2, config);
        let gossip = |ws: &mut Vec<Worker>, now: u64| {
            for i in 0..2 {
                ws[i].handle_tick(now);
                while let Some(batch) = ws[i].poll_gossip() {
                    let to = batch.to as usize;
                    ws[to].handle_gossip(now, batch);
                }
            }
        };
        assert!(ws[0].handle_ops(10, [incr("c", 5)])[0].is_ok());
        let set = ws[0].handle_ops(11, [expire("c", Some(1_000)), expire("none", Some(5))]);
        assert_eq!(
            set,
            vec![
                Ok(Reply::Expiry { changed: true }),
                Ok(Reply::Expiry { changed: false })
            ]
        );
        assert!(ws[0].handle_ops(12, [incr("c", 1)])[0].is_ok());
        gossip(&mut ws, 20);
        gossip(&mut ws, 30);
        assert_eq!(counter(&mut ws[1], 999, "c"), Some(6));
        assert_eq!(ws[1].next_deadline_ms(), Some(1_000));
        // Replica 1's write made just before the deadline, delivered late.
        let late = ws[1].handle_ops(999, [incr("c", 100)]);
        assert!(late[0].is_ok());
        ws[1].handle_tick(999);
        let late: Vec<GossipBatch> = std::iter::from_fn(|| ws[1].poll_gossip()).collect();
        assert!(!late.is_empty());
        // At the deadline both read nothing, before any collection.
        assert_eq!(counter(&mut ws[0], 1_000, "c"), None);
        assert_eq!(counter(&mut ws[1], 1_000, "c"), None);
        // Worker 0 collects its copy; worker 1 (its tick comes later) still holds one.
        ws[0].handle_tick(1_000);
        assert!(ws[0].value(b"c").is_none(), "collected");
        assert_eq!(ws[0].stats().expired, 1);
        assert!(ws[1].value(b"c").is_some());
        // The late write arrives at worker 0, which collected the key: it stays expired.
        for batch in late {
            ws[0].handle_gossip(1_001, batch);
        }
        assert_eq!(counter(&mut ws[0], 1_001, "c"), None);
        // A write after the deadline on worker 0 starts afresh, everywhere.
        assert!(ws[0].handle_ops(1_002, [incr("c", 1)])[0].is_ok());
        gossip(&mut ws, 1_003);
        gossip(&mut ws, 1_004);
        assert_eq!(counter(&mut ws[0], 1_005, "c"), Some(1));
        assert_eq!(counter(&mut ws[1], 1_005, "c"), Some(1));
        assert_eq!(ws[0].value(b"c"), ws[1].value(b"c"));
        // A key the writer collected, written again before the other replica collected its
        // copy: the write must not look like one the other has seen (it would repeat the
        // writer's old dots).
        assert!(ws[0].handle_ops(1_010, [incr("d", 7)])[0].is_ok());
        assert!(ws[0].handle_ops(1_011, [expire("d", Some(2_000))])[0].is_ok());
        gossip(&mut ws, 1_012);
        ws[0].handle_tick(2_000);
        assert!(ws[0].value(b"d").is_none(), "collected");
        assert!(ws[0].handle_ops(2_001, [incr("d", 1)])[0].is_ok());
        gossip(&mut ws, 2_002);
        assert_eq!(counter(&mut ws[1], 2_003, "d"), Some(1));
        assert_eq!(counter(&mut ws[0], 2_003, "d"), Some(1));
        // PERSIST takes a deadline away (and answers whether there was one).
        let p = ws[0].handle_ops(
            1_006,
            [
                expire("c", Some(5_000)),
                expire("c", None),
                expire("c", None),
            ],
        );
        assert_eq!(
            p,
            vec![
                Ok(Reply::Expiry { changed: true }),
                Ok(Reply::Expiry { changed: true }),
                Ok(Reply::Expiry { changed: false })
            ]
        );
        assert_eq!(counter(&mut ws[0], 10_000, "c"), Some(1));
    }

    /// What a write stores is copied out of the request: a value or member that is a slice
    /// of a connection's read buffer (as the Redis port hands them) must not keep the
    /// buffer alive for as long as the key lives.
    #[test]
    fn stored_values_do_not_keep_the_request_buffer_alive() {
        let buffer = Bytes::from(vec![b'x'; 16 << 10]);
        let inside = |v: &Bytes| buffer.as_ptr_range().contains(&v.as_ptr());
        let mut w = workers(1, WorkerConfig::default()).remove(0);
        w.handle_ops(
            1,
            [
                Op::Write {
                    key: buffer.slice(0..4),
                    write: Write::Lww(buffer.slice(100..200)),
                },
                Op::Write {
                    key: b("set"),
                    write: Write::OrSetAdd(vec![buffer.slice(300..310)]),
                },
            ],
        );
        let r = w.handle_ops(2, [get("xxxx"), get("set")]);
        let Ok(Reply::Value(Some(ReadValue::Lww { value, .. }))) = &r[0] else {
            panic!("{:?}", r[0]);
        };
        assert_eq!(value.len(), 100);
        assert!(!inside(value), "the stored value is a slice of the request");
        let Ok(Reply::Value(Some(ReadValue::OrSet { members, .. }))) = &r[1] else {
            panic!("{:?}", r[1]);
        };
        assert_eq!(members.len(), 1);
        assert!(
            !members.iter().any(inside),
            "a stored member is a slice of the request"
        );
    }

    /// A worker that handed a key off (and dropped its copy) and later writes the key again
    /// must not reuse what it wrote before: its set adds, counter increments and causal
    /// writes would look already seen (and removed) to the replicas that hold the old ones.
    #[test]
    fn writes_after_a_dropped_copy_are_not_hidden_by_the_old_ones() {
        let ring = Arc::new(HashRing::new([0], 1));
        let mut a = Worker::new(0, ReplicaId(1), ring.clone(), WorkerConfig::default());
        let mut other = Worker::new(0, ReplicaId(2), ring, WorkerConfig::default());
        a.collect_changes();
        let writes = |m: &str| {
            vec![
                Op::Write {
                    key: b("set"),
                    write: Write::OrSetAdd(vec![b(m)]),
                },
                Op::Write {
                    key: b("count"),
                    write: Write::Increment(1),
                },
                Op::Write {
                    key: b("causal"),
                    write: Write::SingleCausal(b(m)),
                },
            ]
        };
        a.handle_ops(1, writes("first"));
        let first = a.take_changes();
        other.merge_replicated(1, first);
        // Handed off: the owners took it, so this worker drops its copies.
        let copies: Vec<(Bytes, Value)> = ["set", "count", "causal"]
            .into_iter()
            .map(|k| (b(k), a.value(k.as_bytes()).unwrap()))
            .collect();
        a.drop_if_unchanged(copies);
        assert!(a.value(b"set").is_none());
        // The key comes back to this worker (its owner died): new writes, without the old state.
        a.handle_ops(2, writes("second"));
        let second = a.take_changes();
        other.merge_replicated(2, second);
        let read = |w: &mut Worker, k: &str| w.handle_ops(3, [get(k)]).remove(0).unwrap();
        assert_eq!(
            read(&mut other, "set"),
            Reply::Value(Some(ReadValue::OrSet {
                members: vec![b("first"), b("second")]
            })),
            "the second add must survive"
        );
        assert_eq!(
            read(&mut other, "count"),
            Reply::Value(Some(ReadValue::Counter { value: 2 })),
            "both increments count"
        );
        match read(&mut other, "causal") {
            Reply::Value(Some(ReadValue::SingleCausal { values, .. })) => {
                assert!(
                    values.contains(&b("second")),
                    "the later write is seen: {values:?}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn put_get_delete() {
        let mut w = workers(1, WorkerConfig::default()).remove(0);
        let r = w.handle_ops(
            1,
            [
                put("k", "v"),
                get("k"),
                Op::Delete { key: b("k") },
                get("k"),
            ],
        );
        assert_eq!(r[0], Ok(Reply::Written));
        assert_eq!(
            r[1],
            Ok(Reply::Value(Some(ReadValue::Lww {
                value: b("v"),
                stamp: None
            })))
        );
        assert_eq!(r[2], Ok(Reply::Deleted { existed: true }));
        assert_eq!(r[3], Ok(Reply::Value(None)));
        assert_eq!(
            w.handle_ops(2, [Op::Delete { key: b("k") }]),
            vec![Ok(Reply::Deleted { existed: false })]
        );
    }

    #[test]
    fn wrong_kind_is_refused_and_changes_nothing() {
        let mut w = workers(1, WorkerConfig::default()).remove(0);
        w.handle_ops(1, [put("k", "v")]);
        let before = w.value(b"k");
        let r = w.handle_ops(
            2,
            [Op::Write {
                key: b("k"),
                write: Write::Increment(1),
            }],
        );
        assert_eq!(
            r[0],
            Err(OpError::KindMismatch {
                stored: Kind::Lww,
                attempted: Kind::Counter
            })
        );
        assert_eq!(w.value(b"k"), before);
    }

    #[test]
    fn limits_are_enforced() {
        let config = WorkerConfig {
            max_key_bytes: 4,
            max_value_bytes: 3,
            ..WorkerConfig::default()
        };
        let mut w = workers(1, config).remove(0);
        let r = w.handle_ops(
            1,
            [
                put("", "v"),
                put("12345", "v"),
                put("k", "1234"),
                put("k", "123"),
            ],
        );
        assert_eq!(r[0], Err(OpError::EmptyKey { max: 4 }));
        assert_eq!(r[1], Err(OpError::KeyTooLong { len: 5, max: 4 }));
        assert_eq!(r[2], Err(OpError::ValueTooLarge { len: 4, max: 3 }));
        assert_eq!(r[3], Ok(Reply::Written));
    }

    #[test]
    fn the_most_used_keys_show_in_the_stats() {
        let mut w = workers(1, WorkerConfig::default()).remove(0);
        for i in 0..50 {
            w.handle_ops(1, [put(&format!("k{i}"), "v")]);
        }
        for _ in 0..100 {
            w.handle_ops(2, [get("popular"), put("second", "v")]);
        }
        let hot = w.stats().hot_keys;
        assert_eq!(hot[0].key, b("popular"), "{hot:?}");
        assert!(hot[0].count >= 100);
        assert_eq!(hot[1].key, b("second"), "{hot:?}");
    }

    #[test]
    fn removing_from_a_missing_set_does_not_create_it() {
        let mut w = workers(1, WorkerConfig::default()).remove(0);
        w.handle_ops(
            1,
            [Op::Write {
                key: b("s"),
                write: Write::OrSetRemove(vec![b("x")]),
            }],
        );
        assert!(w.value(b"s").is_none());
    }

    /// Local replication: a write on one owner reaches the other owners by gossip once per
    /// period, batched per destination, and replicas end equal.
    #[test]
    fn local_replicas_converge_by_gossip() {
        let config = WorkerConfig {
            local_replication: 3,
            gossip_period_ms: 100,
            ..WorkerConfig::default()
        };
        let mut ws = workers(3, config);
        let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            let owner = i % 3;
            ws[owner].handle_ops(
                1_000,
                [
                    put(k, "v"),
                    Op::Write {
                        key: b(&format!("{k}/n")),
                        write: Write::Increment(i as i64),
                    },
                ],
            );
        }
        // Before the period ends, nothing is sent.
        for w in &mut ws {
            w.handle_tick(1_050);
            assert!(w.poll_gossip().is_none());
        }
        let mut sent = 0;
        for now in [1_100, 1_200] {
            let mut batches = Vec::new();
            for w in &mut ws {
                w.handle_tick(now);
                while let Some(b) = w.poll_gossip() {
                    batches.push(b);
                }
            }
            sent += batches.len();
            for batch in batches {
                let to = batch.to as usize;
                ws[to].handle_gossip(now, batch);
            }
        }
        // One batch per (sender, destination) pair, not one per key.
        assert_eq!(sent, 6);
        for k in &keys {
            let first = ws[0].value(k.as_bytes());
            assert!(first.is_some());
            for w in &mut ws[1..] {
                assert_eq!(w.value(k.as_bytes()), first, "{k}");
            }
        }
    }
}
