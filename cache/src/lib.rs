//! calm's per-node cache: the store's values next to the functions that read them.
//!
//! One [`Cache`] per node is shared by the node's executors (cheap to clone; values are
//! [`Bytes`] underneath, so a read copies nothing).
//!
//! - **Read**: from the cache when it holds the key (a hit); otherwise fetched from the
//!   key's owners and kept (a miss). Missing keys are kept too, as "not found".
//! - **Write**: sent to the key's owners; [`write`](Cache::write) returns once they
//!   acknowledged. A last-writer-wins write also replaces the cached copy at once, so the
//!   writer reads it back; other kinds drop the copy, and the next read fetches the merge.
//! - **Freshness**: fetching a key subscribes the cache to it at its owner (subscriptions are
//!   partitioned like the keys), for a lease the cache renews. The owner's workers push
//!   every change to the subscribed caches, so a cached copy is behind its owner by at most
//!   the node's push period (5 ms by default) plus a network trip; a write that reached
//!   another replica first arrives after that replica's gossip. Should a push be lost, the
//!   renewal (every third of the lease) sends fingerprints and gets back what changed: the
//!   worst case is one renewal period. [`CacheStats`] counts pushes and refreshes, and the
//!   tests measure the push path.
//! - **Eviction**: least recently used first, bounded by bytes
//!   ([`CacheConfig::capacity_bytes`]); an evicted key's subscription is ended.
//!
//! ```
//! use calm_cache::{Cache, CacheConfig};
//! use calm_kvs::launch::TestCluster;
//! use calm_kvs::protocol::Ack;
//! use calm_kvs::value::{ReadValue, Write};
//! use calm_kvs::Store;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cluster = TestCluster::start(1).await.unwrap();
//! let cache = Cache::new(cluster.client().await.unwrap(), CacheConfig::default()).await;
//! let greeting = bytes::Bytes::from("greeting");
//! cache
//!     .write(vec![(greeting.clone(), Write::Lww("hello".into()))], Ack::One)
//!     .await
//!     .unwrap();
//! // The writer reads its own write from the cache, without asking the owners.
//! let read = cache.get(&greeting).await.unwrap();
//! assert!(matches!(read, Some(ReadValue::Lww { ref value, .. }) if value == "hello"));
//! assert_eq!((cache.stats().hits, cache.stats().misses), (1, 0));
//! // A key written elsewhere is fetched once (a miss), then pushed to the cache on change.
//! let other = cluster.client().await.unwrap();
//! other.put("visits", "1").await.unwrap();
//! let read = cache.get(&"visits".into()).await.unwrap();
//! assert!(read.is_some());
//! assert_eq!(cache.stats().misses, 1);
//! # });
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use calm_kvs::protocol::{Ack, Op, OpError, OpResult, Reply};
use calm_kvs::subscribe::{Fetched, Pushed, fingerprint};
use calm_kvs::value::{ReadValue, Write};
use calm_kvs::{ClusterClient, KvsError};
use lru::LruCache;
use tokio::sync::mpsc;

/// How a cache behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most bytes of values held; least recently used keys go first (default 256 MiB).
    pub capacity_bytes: usize,
    /// How long a subscription lasts unless renewed, milliseconds (default 9 s); the cache
    /// renews every third of it.
    pub lease_ms: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity_bytes: 256 << 20,
            lease_ms: 9_000,
        }
    }
}

/// What a cache failed to do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The store could not be reached, or refused.
    #[error(transparent)]
    Store(#[from] KvsError),
    /// One key's read or write failed.
    #[error("{key}: {error}")]
    Op {
        /// The key (lossy UTF-8).
        key: String,
        /// Why.
        error: OpError,
    },
}

/// Where a cache gets its values and sends its writes: the keys' owners.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Subscribes to `keys` (with the fingerprints of copies held) for `lease_ms`: per key,
    /// its value or unchanged.
    fn subscribe(
        &self,
        keys: Vec<(Bytes, Option<u64>)>,
        lease_ms: u32,
    ) -> impl Future<Output = Result<Vec<Result<Fetched, OpError>>, KvsError>> + Send;

    /// Ends subscriptions to `keys` (best effort: leases end them anyway).
    fn unsubscribe(&self, keys: Vec<Bytes>) -> impl Future<Output = ()> + Send;

    /// Runs writes at the keys' owners; one result each.
    fn write(
        &self,
        ops: Vec<Op>,
        ack: Ack,
    ) -> impl Future<Output = Result<Vec<OpResult>, KvsError>> + Send;

    /// Sends pushed changes to `sink`.
    fn set_push_sink(&self, sink: mpsc::Sender<Pushed>) -> impl Future<Output = ()> + Send;
}

impl Backend for ClusterClient {
    fn subscribe(
        &self,
        keys: Vec<(Bytes, Option<u64>)>,
        lease_ms: u32,
    ) -> impl Future<Output = Result<Vec<Result<Fetched, OpError>>, KvsError>> + Send {
        ClusterClient::subscribe(self, keys, lease_ms)
    }

    async fn unsubscribe(&self, keys: Vec<Bytes>) {
        let _ = ClusterClient::unsubscribe(self, keys).await;
    }

    fn write(
        &self,
        ops: Vec<Op>,
        ack: Ack,
    ) -> impl Future<Output = Result<Vec<OpResult>, KvsError>> + Send {
        self.execute_with_ack(ops, ack)
    }

    fn set_push_sink(&self, sink: mpsc::Sender<Pushed>) -> impl Future<Output = ()> + Send {
        ClusterClient::set_push_sink(self, sink)
    }
}

/// A cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that fetched from the owners.
    pub misses: u64,
    /// Keys dropped to stay within the capacity.
    pub evictions: u64,
    /// Changes pushed by owners and applied to cached copies.
    pub pushes: u64,
    /// Copies a lease renewal found stale and replaced (pushes that were lost).
    pub repaired: u64,
    /// Keys held.
    pub keys: u64,
    /// Bytes of values held.
    pub bytes: u64,
}

struct Entry {
    value: Option<ReadValue>,
    size: usize,
    /// The fingerprint of the owner's copy this came from (0: written here, not yet seen
    /// back from the owner).
    print: u64,
}

struct State {
    entries: LruCache<Bytes, Entry>,
    bytes: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    pushes: AtomicU64,
    repaired: AtomicU64,
}

struct Inner<B> {
    backend: B,
    config: CacheConfig,
    state: Mutex<State>,
    counters: Counters,
    /// Fault injection: pushes are dropped while set (as a network that loses them).
    paused: std::sync::atomic::AtomicBool,
}

/// A node's cache over `B` (by default the cluster). Cheap to clone; clones share it.
pub struct Cache<B: Backend = ClusterClient> {
    inner: Arc<Inner<B>>,
    tasks: Arc<Tasks>,
}

impl<B: Backend> Clone for Cache<B> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

/// The cache's background tasks (applying pushes, renewing leases), stopped with the last
/// clone.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// How many bytes a read value holds, roughly (for the capacity).
pub fn value_size(value: &Option<ReadValue>) -> usize {
    let sum = |ms: &[Bytes]| ms.iter().map(|m| m.len() + 8).sum::<usize>();
    64 + match value {
        None => 0,
        Some(ReadValue::Lww { value, .. }) | Some(ReadValue::Priority { value, .. }) => value.len(),
        Some(ReadValue::Set { members }) | Some(ReadValue::OrSet { members }) => sum(members),
        Some(ReadValue::Counter { .. }) | Some(ReadValue::Max { .. }) => 16,
        Some(ReadValue::SingleCausal { values, clock }) => {
            sum(values) + clock.as_ref().map_or(0, |c| c.iter().count() * 16)
        }
        Some(ReadValue::MultiCausal {
            values,
            clock,
            deps,
        }) => {
            sum(values)
                + clock.as_ref().map_or(0, |c| c.iter().count() * 16)
                + deps
                    .iter()
                    .map(|(k, c)| k.len() + c.iter().count() * 16)
                    .sum::<usize>()
        }
        Some(ReadValue::Hash { fields }) => {
            fields.iter().map(|(f, v)| f.len() + v.len() + 16).sum()
        }
        Some(ReadValue::SortedSet { members }) => members.iter().map(|(m, _)| m.len() + 16).sum(),
        Some(ReadValue::List { values }) => sum(values),
        Some(ReadValue::Custom(v)) => v.state.len() + 24,
    }
}

fn op_error(key: &Bytes, error: OpError) -> CacheError {
    CacheError::Op {
        key: String::from_utf8_lossy(key).into_owned(),
        error,
    }
}

impl<B: Backend> Cache<B> {
    /// A cache over `backend`; starts its push and renewal tasks on the current Tokio
    /// runtime.
    pub async fn new(backend: B, config: CacheConfig) -> Cache<B> {
        let inner = Arc::new(Inner {
            backend,
            config,
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            counters: Counters::default(),
            paused: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, mut rx) = mpsc::channel::<Pushed>(1024);
        inner.backend.set_push_sink(tx).await;
        let weak = Arc::downgrade(&inner);
        let pushes = tokio::spawn(async move {
            while let Some(changes) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                if !inner.paused.load(Ordering::Relaxed) {
                    inner.apply_pushed(changes);
                }
            }
        });
        let weak = Arc::downgrade(&inner);
        let every = Duration::from_millis(u64::from(config.lease_ms / 3).max(10));
        let renewals = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if !inner.paused.load(Ordering::Relaxed) {
                    inner.renew().await;
                }
            }
        });
        Cache {
            inner,
            tasks: Arc::new(Tasks(vec![pushes, renewals])),
        }
    }

    /// Reads `key`: from the cache when held, else from its owners (then kept).
    pub async fn get(&self, key: &Bytes) -> Result<Option<ReadValue>, CacheError> {
        Ok(self
            .get_many(std::slice::from_ref(key))
            .await?
            .pop()
            .flatten())
    }

    /// Reads several keys, fetching every one not held in one round.
    pub async fn get_many(&self, keys: &[Bytes]) -> Result<Vec<Option<ReadValue>>, CacheError> {
        let mut out: Vec<Option<Option<ReadValue>>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        {
            let mut state = self.inner.lock();
            for (i, key) in keys.iter().enumerate() {
                match state.entries.get(key) {
                    Some(e) => {
                        self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                        out.push(Some(e.value.clone()));
                    }
                    None => {
                        out.push(None);
                        missing.push(i);
                    }
                }
            }
        }
        if !missing.is_empty() {
            self.inner
                .counters
                .misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            let fetched = self.fetch(missing.iter().map(|&i| keys[i].clone())).await?;
            for (i, value) in missing.into_iter().zip(fetched) {
                out[i] = Some(value);
            }
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    /// Reads `key` from its owners whatever the cache holds, and keeps what it gets (for
    /// a reader that knows its copy is too old).
    pub async fn refresh(&self, key: &Bytes) -> Result<Option<ReadValue>, CacheError> {
        Ok(self.fetch([key.clone()]).await?.pop().flatten())
    }

    async fn fetch(
        &self,
        keys: impl IntoIterator<Item = Bytes>,
    ) -> Result<Vec<Option<ReadValue>>, CacheError> {
        let keys: Vec<Bytes> = keys.into_iter().collect();
        let answers = self
            .inner
            .backend
            .subscribe(
                keys.iter().map(|k| (k.clone(), None)).collect(),
                self.inner.config.lease_ms,
            )
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut evicted = Vec::new();
        for (key, answer) in keys.into_iter().zip(answers) {
            let value = match answer {
                Ok(Fetched::Value(v)) => v,
                // Asked without a fingerprint: cannot happen; treat as not found.
                Ok(Fetched::Unchanged) => None,
                Err(e) => return Err(op_error(&key, e)),
            };
            evicted.extend(self.inner.insert(key, value.clone()));
            out.push(value);
        }
        self.end_subscriptions(evicted);
        Ok(out)
    }

    fn end_subscriptions(&self, keys: Vec<Bytes>) {
        if keys.is_empty() {
            return;
        }
        let backend = self.inner.backend.clone();
        tokio::spawn(async move { backend.unsubscribe(keys).await });
    }

    /// Sends writes to their keys' owners and returns once they acknowledged (`ack`).
    /// Last-writer-wins values replace the cached copy at once; other kinds drop it.
    pub async fn write(&self, writes: Vec<(Bytes, Write)>, ack: Ack) -> Result<(), CacheError> {
        let ops = writes
            .iter()
            .map(|(key, write)| Op::Write {
                key: key.clone(),
                write: write.clone(),
            })
            .collect();
        let results = self.inner.backend.write(ops, ack).await?;
        let mut first_error = None;
        let mut evicted = Vec::new();
        for ((key, write), result) in writes.into_iter().zip(results) {
            match result {
                Ok(Reply::Written) => match write {
                    Write::Lww(value) => {
                        let read = Some(ReadValue::Lww { value, stamp: None });
                        evicted.extend(self.inner.insert_written(key, read));
                    }
                    _ => self.inner.forget(&key),
                },
                Ok(_) => {}
                Err(e) => {
                    self.inner.forget(&key);
                    first_error.get_or_insert(op_error(&key, e));
                }
            }
        }
        self.end_subscriptions(evicted);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the cache holds `key` (without counting a read).
    pub fn holds(&self, key: &[u8]) -> bool {
        self.inner.lock().entries.contains(key)
    }

    /// The keys held with the bytes of each (for the scheduler's locality picture).
    pub fn index(&self) -> Vec<(Bytes, u64)> {
        self.inner
            .lock()
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.size as u64))
            .collect()
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let state = self.inner.lock();
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            pushes: c.pushes.load(Ordering::Relaxed),
            repaired: c.repaired.load(Ordering::Relaxed),
            keys: state.entries.len() as u64,
            bytes: state.bytes as u64,
        }
    }

    /// Drops pushes while `paused` (and stops renewals from repairing copies): a network
    /// that loses the owners' pushes, for tests and staleness experiments.
    pub fn set_pushes_paused(&self, paused: bool) {
        self.inner.paused.store(paused, Ordering::Relaxed);
    }

    /// Drops every cached copy (and its subscription).
    pub fn clear(&self) {
        let keys: Vec<Bytes> = {
            let mut state = self.inner.lock();
            let keys = state.entries.iter().map(|(k, _)| k.clone()).collect();
            state.entries.clear();
            state.bytes = 0;
            keys
        };
        self.end_subscriptions(keys);
    }
}

impl<B: Backend> Inner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `value` for `key` as the owner sent it; returns the keys evicted.
    fn insert(&self, key: Bytes, value: Option<ReadValue>) -> Vec<Bytes> {
        let print = fingerprint(&value);
        self.put(key, value, print)
    }

    fn insert_written(&self, key: Bytes, value: Option<ReadValue>) -> Vec<Bytes> {
        self.put(key, value, 0)
    }

    fn put(&self, key: Bytes, value: Option<ReadValue>, print: u64) -> Vec<Bytes> {
        let size = value_size(&value) + key.len();
        let mut state = self.lock();
        if let Some(old) = state.entries.put(key, Entry { value, size, print }) {
            state.bytes -= old.size;
        }
        state.bytes += size;
        let mut evicted = Vec::new();
        // The key just used is the most recent: it goes last, and only if it alone is
        // larger than the capacity.
        while state.bytes > self.config.capacity_bytes {
            match state.entries.pop_lru() {
                Some((k, e)) => {
                    state.bytes -= e.size;
                    evicted.push(k);
                }
                None => break,
            }
        }
        self.counters
            .evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        evicted
    }

    fn forget(&self, key: &Bytes) {
        let mut state = self.lock();
        if let Some(e) = state.entries.pop(key) {
            state.bytes -= e.size;
        }
    }

    /// Replaces held copies with pushed values (keys no longer held are ignored).
    fn apply_pushed(&self, changes: Pushed) {
        let mut state = self.lock();
        for (key, value) in changes {
            let size = value_size(&value) + key.len();
            let print = fingerprint(&value);
            let Some(entry) = state.entries.peek_mut(&key) else {
                continue;
            };
            let old = std::mem::replace(&mut entry.size, size);
            entry.value = value;
            entry.print = print;
            state.bytes = state.bytes - old + size;
            self.counters.pushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renews every subscription, sending fingerprints; copies found stale are replaced.
    async fn renew(&self) {
        let held: Vec<(Bytes, Option<u64>)> = self
            .lock()
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), Some(e.print)))
            .collect();
        // Small rounds: a round's answer carries every stale value in one frame.
        for chunk in held.chunks(32) {
            let answers = match self
                .backend
                .subscribe(chunk.to_vec(), self.config.lease_ms)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "could not renew cache subscriptions");
                    continue;
                }
            };
            let mut state = self.lock();
            for ((key, _), answer) in chunk.iter().zip(answers) {
                if let Ok(Fetched::Value(value)) = answer {
                    let size = value_size(&value) + key.len();
                    let print = fingerprint(&value);
                    if let Some(entry) = state.entries.peek_mut(key) {
                        let old = std::mem::replace(&mut entry.size, size);
                        entry.value = value;
                        // A copy written here and not yet pushed back is not "lost".
                        if entry.print != 0 {
                            self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                        }
                        entry.print = print;
                        state.bytes = state.bytes - old + size;
                    }
                }
            }
        }
    }
}
