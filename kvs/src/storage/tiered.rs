//! A worker's keys in two tiers: hot in memory, cold on disk, with a write-ahead log.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::dense::{DenseMap, Key};
use super::quota::{Quotas, Usage};
use super::{ColdPut, Disk, Durability, StorageConfig, StorageError, wal};
use crate::ring::HashRing;
use crate::value::{Kind, KindMismatch, Value};

/// The largest encoded value read back from disk; a larger length prefix is corruption.
const MAX_STORED_VALUE: usize = 1 << 28;

/// One change, as the log holds it.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    /// A delta (or a whole value) merged into a key.
    Merge(Bytes, Value),
    /// A key dropped from this worker (handed to its new owners).
    Remove(Bytes),
}

/// Logged payloads are borrowed when written, owned when read back.
#[derive(Serialize)]
enum LogRecordRef<'a> {
    Merge(&'a Bytes, &'a Value),
    Remove(&'a Bytes),
}

#[derive(Debug)]
struct Hot {
    value: Value,
    /// Approximate bytes: the key, the value's encoding and the key's slot ([`PER_KEY`]);
    /// exact whenever it was `measured`, grown by each change's encoded delta since.
    size: u32,
    /// `size` when it was last exact; when changes have taken `size` past twice this, the
    /// value is measured again (so a counter incremented a million times, or a hash
    /// written over and over, is not counted as its history).
    measured: u32,
    /// When it was last used, in accesses (the low 32 bits of the tier's access clock;
    /// compared by age, so it wraps harmlessly).
    touched: u32,
    /// Uses since it was loaded, halved at every demotion round.
    hits: u16,
    /// Changed since the disk last had it, or never on it. (A clean key's hash is not
    /// kept: 8 bytes in every key's entry, to save hashing a clean key again when it is
    /// demoted or a digest is taken.)
    dirty: bool,
}

impl Hot {
    /// `dirty`: whether the disk lacks this value (it did not come from the disk).
    fn new(value: Value, size: usize, touched: u32, dirty: bool) -> Hot {
        Hot {
            value,
            size: bytes32(size),
            measured: bytes32(size),
            touched,
            hits: 0,
            dirty,
        }
    }

    /// Marks it changed since the disk had it.
    fn changed(&mut self) {
        self.dirty = true;
    }

    fn size(&self) -> usize {
        self.size as usize
    }

    /// Grows `size` by `len` bytes of change, measuring the value again once the estimate
    /// has doubled since it was last exact. Returns the new size.
    fn grow(&mut self, key: &[u8], len: usize) -> usize {
        let size = self.size() + len;
        let size = if size > 2 * (self.measured as usize).max(PER_KEY + 64) {
            let exact = key.len() + encoded_len(&self.value) + PER_KEY;
            self.measured = bytes32(exact);
            exact
        } else {
            size
        };
        self.size = bytes32(size);
        size
    }
}

/// What a key costs in memory besides its bytes and its value's encoding: its entry in the
/// hot map (the key, inline when short, and a `Hot`; its position in the map's index).
/// Part of every key's size, so the memory budget and `INFO used_memory` count what keys
/// cost, not only their bytes.
const PER_KEY: usize = DenseMap::<Hot>::entry_bytes();

/// A size in bytes as a `Hot` keeps it (stored values are far below 4 GiB).
fn bytes32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What recovery found in a worker's log and cold tier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// Keys in the cold tier.
    pub cold_keys: u64,
    /// Log records replayed.
    pub records: u64,
    /// Bytes of damaged records skipped in the middle of the log.
    pub skipped_bytes: u64,
    /// Bytes cut from the end of the log (a torn write or damage).
    pub tail_bytes: u64,
    /// Records whose checksum held but that could not be decoded.
    pub undecodable: u64,
}

/// Figures of a worker's tiers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStats {
    /// Keys in memory.
    pub memory_keys: u64,
    /// Approximate bytes of values in memory.
    pub memory_bytes: u64,
    /// The most `memory_bytes` has been, as of the end of a batch.
    pub memory_peak_bytes: u64,
    /// Keys only on disk.
    pub disk_keys: u64,
    /// Bytes in the write-ahead log.
    pub log_bytes: u64,
    /// Keys loaded from disk into memory.
    pub promotions: u64,
    /// Keys moved out of memory to disk.
    pub demotions: u64,
    /// Times the changed keys were written to the cold tier and the log restarted.
    pub checkpoints: u64,
    /// Disk operations that failed.
    pub disk_errors: u64,
}

/// A worker's keys: see the [module docs](super).
#[derive(Debug)]
pub struct Tiered {
    hot: DenseMap<Hot>,
    /// Keys only on disk, with the hash of their stored value (for anti-entropy digests).
    cold: DenseMap<u64>,
    /// The deadlines the cold tier's index held when it was opened (so keys that expire
    /// while only on disk are collected on time after a restart).
    cold_deadlines: Vec<(u64, Bytes)>,
    disk: Option<Box<dyn Disk>>,
    config: StorageConfig,
    /// This worker's share of the memory budget.
    budget: Option<usize>,
    hot_bytes: usize,
    /// The most `hot_bytes` has been at the end of a batch.
    hot_peak: usize,
    clock: u64,
    /// Records not yet handed to the disk.
    log_buf: Vec<u8>,
    log_len: u64,
    unsynced: bool,
    next_fsync_ms: Option<u64>,
    /// Keys to delete from the cold tier with its next transaction.
    removes: HashSet<Bytes>,
    /// A disk write failed: the next maintenance writes a checkpoint.
    failed: bool,
    replaying: bool,
    stats: TierStats,
    /// What the keys under quotas hold, when the node has quotas.
    usage: Option<Usage>,
}

/// The hash of one entry for anti-entropy digests, from the value's encoding.
pub(crate) fn entry_hash_encoded(key: &[u8], encoded: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(key);
    h.update(&[0xff]);
    h.update(encoded);
    h.digest()
}

/// What the cold tier stores for `key`'s `value`.
fn cold_put(key: &[u8], value: &Value) -> ColdPut {
    let bytes = encode_value(value);
    ColdPut {
        key: Bytes::copy_from_slice(key),
        hash: entry_hash_encoded(key, &bytes),
        bytes,
        deadline: value.deadline(),
    }
}

fn encode_value(value: &Value) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("values always encode")
}

fn decode_value(key: &[u8], bytes: &[u8]) -> Result<Value, StorageError> {
    let config = bincode::config::standard().with_limit::<{ MAX_STORED_VALUE }>();
    bincode::serde::decode_from_slice(bytes, config)
        .map(|(v, _)| v)
        .map_err(|e| {
            StorageError::Corrupt(format!(
                "the stored value of key {:?} does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        })
}

/// The hash of one entry for anti-entropy digests: equal keys with equal values hash equal
/// on every node (values are canonical, so their encodings are too).
pub(crate) fn entry_hash(key: &[u8], value: &Value) -> u64 {
    entry_hash_encoded(key, &encode_value(value))
}

impl Tiered {
    /// Keys in memory only, nothing on disk.
    pub fn memory() -> Tiered {
        Tiered {
            hot: DenseMap::new(),
            cold: DenseMap::new(),
            cold_deadlines: Vec::new(),
            disk: None,
            config: StorageConfig {
                durability: Durability::Memory,
                ..StorageConfig::default()
            },
            budget: None,
            hot_bytes: 0,
            hot_peak: 0,
            clock: 0,
            log_buf: Vec::new(),
            log_len: 0,
            unsynced: false,
            next_fsync_ms: None,
            removes: HashSet::new(),
            failed: false,
            replaying: false,
            stats: TierStats::default(),
            usage: None,
        }
    }

    /// Opens a worker's disk and recovers its keys: the cold tier's key index is loaded
    /// and the log replayed. A torn or damaged tail is cut off; damaged records in the middle
    /// are skipped (every intact record is kept) and a checkpoint then rewrites the state.
    /// `budget` is this worker's share of the memory budget.
    pub fn open(
        mut disk: Box<dyn Disk>,
        config: StorageConfig,
        budget: Option<usize>,
    ) -> Result<(Tiered, Recovery), StorageError> {
        let index = disk.cold_keys()?;
        let cold_deadlines = index
            .iter()
            .filter_map(|c| Some((c.deadline?, c.key.clone())))
            .collect();
        let mut cold = DenseMap::new();
        for c in index {
            cold.insert(Key::from(&c.key[..]), c.hash);
        }
        let log = disk.log_read()?;
        let scan = wal::scan(&log);
        let mut recovery = Recovery {
            cold_keys: cold.len() as u64,
            skipped_bytes: scan.skipped.iter().map(|r| r.len() as u64).sum(),
            tail_bytes: scan.tail_len(log.len()) as u64,
            ..Recovery::default()
        };
        let mut t = Tiered {
            cold,
            cold_deadlines,
            disk: Some(disk),
            config,
            budget,
            replaying: true,
            ..Tiered::memory()
        };
        let decode = bincode::config::standard().with_limit::<{ MAX_STORED_VALUE }>();
        for range in &scan.records {
            match bincode::serde::decode_from_slice::<LogRecord, _>(&log[range.clone()], decode) {
                Ok((LogRecord::Merge(key, value), _)) => {
                    if let crate::value::Kind::Custom(kind) = value.kind()
                        && !crate::value::custom::has_code(kind)
                    {
                        return Err(StorageError::UnknownKind(kind.to_string()));
                    }
                    t.merge(key, value)?;
                }
                Ok((LogRecord::Remove(key), _)) => t.remove(&key),
                Err(_) => recovery.undecodable += 1,
            }
            recovery.records += 1;
            if t.over_budget() {
                t.demote();
            }
        }
        t.replaying = false;
        t.log_len = scan.valid_len as u64;
        if recovery.skipped_bytes > 0 || recovery.undecodable > 0 {
            tracing::warn!(
                skipped_bytes = recovery.skipped_bytes,
                undecodable = recovery.undecodable,
                tail_bytes = recovery.tail_bytes,
                "the write-ahead log was damaged; kept every intact record and wrote a checkpoint (peers repair what was lost)"
            );
            t.checkpoint()?;
        } else if recovery.tail_bytes > 0 {
            tracing::warn!(
                tail_bytes = recovery.tail_bytes,
                torn = scan.torn,
                "cut a torn or damaged tail off the write-ahead log"
            );
            t.disk_mut()?.log_truncate(scan.valid_len as u64)?;
        }
        Ok((t, recovery))
    }

    fn disk_mut(&mut self) -> Result<&mut Box<dyn Disk>, StorageError> {
        self.disk
            .as_mut()
            .ok_or_else(|| StorageError::Engine("no disk".into()))
    }

    /// Keys held, in memory and on disk.
    pub fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is held (in either tier).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.hot.contains_key(key) || self.cold.contains_key(key)
    }

    fn tick(&mut self) -> u32 {
        self.clock += 1;
        self.clock as u32
    }

    /// Brings a cold key into memory; true if the key is now hot.
    fn promote(&mut self, key: &[u8]) -> Result<bool, StorageError> {
        if self.hot.contains_key(key) {
            return Ok(true);
        }
        if !self.cold.contains_key(key) {
            return Ok(false);
        }
        let bytes = self.disk_mut()?.cold_get(key)?.ok_or_else(|| {
            StorageError::Corrupt(format!(
                "key {:?} is in the cold tier's index but not in its values",
                String::from_utf8_lossy(key)
            ))
        })?;
        let value = decode_value(key, &bytes)?;
        let (key, _) = self
            .cold
            .remove_entry(key)
            .expect("checked to be in the cold index");
        let size = key.len() + bytes.len() + PER_KEY;
        self.hot_bytes += size;
        self.stats.promotions += 1;
        let touched = self.tick();
        self.hot.insert(key, Hot::new(value, size, touched, false));
        Ok(true)
    }

    fn use_hot(&mut self, key: &[u8]) -> Option<&mut Hot> {
        let now = self.tick();
        let hot = self.hot.get_mut(key)?;
        hot.touched = now;
        hot.hits = hot.hits.saturating_add(1);
        Some(hot)
    }

    /// The hot entry of `key`, loading it from disk first if it is cold.
    fn hot_entry(&mut self, key: &[u8]) -> Result<Option<&mut Hot>, StorageError> {
        // One lookup when the key is hot (the common case).
        if !self.cold.is_empty() && !self.hot.contains_key(key) {
            self.promote(key)?;
        }
        Ok(self.use_hot(key))
    }

    /// The value of `key`, loaded into memory if it was on disk.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&Value>, StorageError> {
        Ok(self.hot_entry(key)?.map(|h| &h.value))
    }

    /// The value of `key` to change in place; call [`changed`](Self::changed) with the
    /// delta of the change.
    pub fn get_mut(&mut self, key: &[u8]) -> Result<Option<&mut Value>, StorageError> {
        Ok(self.hot_entry(key)?.map(|h| &mut h.value))
    }

    /// The value of `key`, created empty of `kind` if absent; call
    /// [`changed`](Self::changed) after changing it.
    pub fn get_or_insert(&mut self, key: &Bytes, kind: Kind) -> Result<&mut Value, StorageError> {
        if !self.cold.is_empty() {
            self.promote(key)?;
        }
        let now = self.tick();
        let size = key.len() + PER_KEY;
        let mut added = false;
        let hot = self.hot.get_or_insert_with(
            key,
            || Key::from(&key[..]),
            || {
                added = true;
                Hot::new(Value::empty(kind), size, now, true)
            },
        );
        if added {
            self.hot_bytes += size;
        }
        hot.touched = now;
        hot.hits = hot.hits.saturating_add(1);
        Ok(&mut hot.value)
    }

    /// A copy of the value of `key`, read from whichever tier holds it without promoting it
    /// (for anti-entropy and repair).
    pub fn peek(&mut self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        if let Some(h) = self.hot.get(key) {
            return Ok(Some(h.value.clone()));
        }
        if !self.cold.contains_key(key) {
            return Ok(None);
        }
        match self.disk_mut()?.cold_get(key)? {
            Some(bytes) => decode_value(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Appends a record to the log buffer; its payload length.
    fn log(&mut self, record: LogRecordRef<'_>) -> usize {
        if self.replaying || self.disk.is_none() {
            // Nothing to write (recovering, or keys in memory only); the change's size
            // still counts toward what the key holds.
            return encoded_len(&record);
        }
        let start = self.log_buf.len();
        self.log_buf.extend_from_slice(&[0; wal::HEADER]);
        bincode::serde::encode_into_std_write(
            &record,
            &mut self.log_buf,
            bincode::config::standard(),
        )
        .expect("writing to a Vec cannot fail");
        let payload = self.log_buf.split_off(start + wal::HEADER);
        self.log_buf.truncate(start);
        wal::encode_record(&payload, &mut self.log_buf);
        payload.len()
    }

    /// Records that the hot value of `key` changed by `delta` (logged, marked for the disk).
    pub fn changed(&mut self, key: &Bytes, delta: &Value) {
        let len = self.log(LogRecordRef::Merge(key, delta));
        let Some(hot) = self.hot.get_mut(&key[..]) else {
            return;
        };
        hot.changed();
        let before = hot.size();
        let size = if matches!(delta.inner(), Value::Lww(_)) {
            // A register's delta is its whole value (the record holds the key too).
            hot.size = bytes32(len + PER_KEY);
            hot.measured = hot.size;
            hot.size()
        } else {
            hot.grow(key, len)
        };
        self.hot_bytes = self.hot_bytes + size - before;
        self.recharge(key);
    }

    /// Counts what `key` holds now toward the quotas that cover it.
    fn recharge(&mut self, key: &[u8]) {
        if let Some(usage) = &mut self.usage {
            usage.set(key, self.hot.get(key).map(|h| &h.value));
        }
    }

    /// Merges a value from another replica (or the log): whether it changed anything, and
    /// the kinds if they disagreed (the greater kind is kept).
    pub fn merge(
        &mut self,
        key: Bytes,
        value: Value,
    ) -> Result<(bool, Option<KindMismatch>), StorageError> {
        let mark = self.log_buf.len();
        let len = self.log(LogRecordRef::Merge(&key, &value));
        let outcome = if self.promote(&key)? {
            let hot = self.use_hot(&key).expect("promoted");
            let outcome = hot.value.merge_replicated(value);
            if outcome.0 {
                hot.changed();
                let before = hot.size();
                let after = hot.grow(&key, len);
                self.hot_bytes = self.hot_bytes + after - before;
            }
            outcome
        } else {
            // The record holds the key and the whole value.
            let size = len + PER_KEY;
            self.hot_bytes += size;
            let touched = self.tick();
            self.hot
                .insert(Key::from(&key[..]), Hot::new(value, size, touched, true));
            (true, None)
        };
        if outcome.0 {
            self.recharge(&key);
        } else {
            self.log_buf.truncate(mark);
        }
        Ok(outcome)
    }

    /// The keys `keep` accepts whose value reads as something at `now_ms`, from both
    /// tiers (values on the disk are read for the keys `keep` accepts).
    pub fn live_keys(
        &mut self,
        now_ms: u64,
        keep: impl Fn(&[u8], &Value) -> bool,
    ) -> Result<Vec<Bytes>, StorageError> {
        let mut keys: Vec<Bytes> = self
            .hot
            .iter()
            .filter(|(k, h)| h.value.is_live(now_ms) && keep(k, &h.value))
            .map(|(k, _)| Bytes::copy_from_slice(k))
            .collect();
        let cold: Vec<Bytes> = self
            .cold
            .keys()
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        for key in cold {
            if let Some(value) = self.peek(&key)?
                && value.is_live(now_ms)
                && keep(&key, &value)
            {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// The deadlines of the keys that were given one, with the keys: those held in memory,
    /// and those only on disk as the cold tier's index held them when it was opened.
    pub fn deadlines(&self) -> Vec<(u64, Bytes)> {
        let hot = self
            .hot
            .iter()
            .filter_map(|(key, hot)| Some((hot.value.deadline()?, Bytes::copy_from_slice(key))));
        let cold = (self.cold_deadlines.iter())
            .filter(|(_, key)| self.cold.contains_key(&key[..]) && !self.hot.contains_key(&key[..]))
            .cloned();
        hot.chain(cold).collect()
    }

    /// Drops `key` from both tiers.
    pub fn remove(&mut self, key: &[u8]) {
        let key = match (self.hot.remove_entry(key), self.cold.remove_entry(key)) {
            (Some((k, hot)), _) => {
                self.hot_bytes -= hot.size();
                k
            }
            (None, Some((k, _))) => k,
            (None, None) => return,
        };
        if let Some(usage) = &mut self.usage {
            usage.set(&key, None);
        }
        if self.disk.is_some() {
            let key = Bytes::from(key);
            self.log(LogRecordRef::Remove(&key));
            self.removes.insert(key);
        }
    }

    /// The digest hash of every key `keep` accepts (hot values are hashed now, cold ones
    /// were hashed when stored).
    pub fn for_each_hash(&self, keep: impl Fn(&[u8]) -> bool, mut f: impl FnMut(&[u8], u64)) {
        for (key, hot) in &self.hot {
            if keep(key) {
                f(key, entry_hash(key, &hot.value));
            }
        }
        for (key, &hash) in &self.cold {
            if keep(key) {
                f(key, hash);
            }
        }
    }

    /// Up to `limit` entries that `keep` accepts, from both tiers (cold ones are read, not
    /// promoted).
    pub fn collect(&mut self, keep: impl Fn(&[u8]) -> bool, limit: usize) -> Vec<(Bytes, Value)> {
        let mut out: Vec<(Bytes, Value)> = self
            .hot
            .iter()
            .filter(|(k, _)| keep(k))
            .take(limit)
            .map(|(k, h)| (Bytes::copy_from_slice(k), h.value.clone()))
            .collect();
        let cold: Vec<Bytes> = self
            .cold
            .keys()
            .filter(|k| keep(k))
            .take(limit.saturating_sub(out.len()))
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        for key in cold {
            match self.peek(&key) {
                Ok(Some(v)) => out.push((key, v)),
                Ok(None) => {}
                Err(e) => {
                    self.stats.disk_errors += 1;
                    tracing::warn!(error = %e, "could not read a cold key");
                }
            }
        }
        out
    }

    /// Drops `key` if it still holds exactly `sent`.
    pub fn remove_if_equal(&mut self, key: &[u8], sent: &Value) -> bool {
        let equal = match (self.hot.get(key), self.cold.get(key)) {
            (Some(h), _) => h.value == *sent,
            (None, Some(&hash)) => hash == entry_hash(key, sent),
            (None, None) => false,
        };
        if equal {
            self.remove(key);
        }
        equal
    }

    fn over_budget(&self) -> bool {
        self.disk.is_some() && self.budget.is_some_and(|b| self.hot_bytes > b)
    }

    /// Keeps the tiers in shape after a batch: demotes keys while memory is over budget,
    /// and writes a checkpoint once the log is long (or after a disk error).
    pub fn maintain(&mut self) {
        self.hot_peak = self.hot_peak.max(self.hot_bytes);
        if self.disk.is_none() {
            return;
        }
        if self.over_budget() {
            self.demote();
        }
        let log = self.log_len + self.log_buf.len() as u64;
        if (self.failed || log > self.config.checkpoint_log_bytes)
            && let Err(e) = self.checkpoint()
        {
            self.stats.disk_errors += 1;
            tracing::warn!(error = %e, "checkpoint failed; keys stay in memory and the log");
        }
    }

    /// Moves the least recently and least frequently used keys to disk until memory is at
    /// 90% of the budget. Keys used once since loading go before keys used more often;
    /// within each group, the least recently used first.
    fn demote(&mut self) {
        let Some(budget) = self.budget else {
            return;
        };
        let target = budget / 10 * 9;
        // Oldest first: by age in accesses (the 32-bit stamps wrap; their difference does not).
        let now = self.clock as u32;
        let mut order: Vec<(bool, std::cmp::Reverse<u32>, Key)> = self
            .hot
            .iter()
            .map(|(k, h)| {
                (
                    h.hits > 1,
                    std::cmp::Reverse(now.wrapping_sub(h.touched)),
                    k.clone(),
                )
            })
            .collect();
        order.sort_unstable();
        let mut freed = 0;
        let mut victims = Vec::new();
        let mut puts: Vec<ColdPut> = Vec::new();
        for (_, _, key) in order {
            if self.hot_bytes - freed <= target {
                break;
            }
            let hot = self.hot.get(&key).expect("chosen among the hot keys");
            freed += hot.size();
            let hash = if hot.dirty {
                let put = cold_put(&key, &hot.value);
                let hash = put.hash;
                puts.push(put);
                hash
            } else {
                // The disk has this value: only its hash, for the cold index.
                entry_hash(&key, &hot.value)
            };
            victims.push((key, hash));
        }
        let removes = self.pending_removes(&puts);
        let disk = self.disk.as_mut().expect("demotion needs a disk");
        if let Err(e) = disk.cold_write(&puts, &removes, false) {
            self.stats.disk_errors += 1;
            tracing::warn!(error = %e, "could not move keys to disk; they stay in memory");
            return;
        }
        self.removes.clear();
        for (key, hash) in victims {
            if let Some(hot) = self.hot.remove(&key) {
                self.hot_bytes -= hot.size();
                self.cold.insert(key, hash);
                self.stats.demotions += 1;
            }
        }
        for hot in self.hot.values_mut() {
            hot.hits /= 2;
        }
    }

    /// The keys to delete from the cold tier, minus those being stored again.
    fn pending_removes(&self, puts: &[ColdPut]) -> Vec<Bytes> {
        let stored: HashSet<&Bytes> = puts.iter().map(|p| &p.key).collect();
        self.removes
            .iter()
            .filter(|k| !stored.contains(k))
            .cloned()
            .collect()
    }

    /// Writes every changed key to the cold tier durably, then restarts the log.
    pub fn checkpoint(&mut self) -> Result<(), StorageError> {
        let mut puts: Vec<ColdPut> = Vec::new();
        for (key, hot) in &self.hot {
            if hot.dirty {
                puts.push(cold_put(key, &hot.value));
            }
        }
        let removes = self.pending_removes(&puts);
        let disk = self.disk_mut()?;
        disk.cold_write(&puts, &removes, true)?;
        disk.log_truncate(0)?;
        self.removes.clear();
        for ColdPut { key, bytes, .. } in puts {
            if let Some(hot) = self.hot.get_mut(&key[..]) {
                hot.dirty = false;
                let size = key.len() + bytes.len() + PER_KEY;
                self.hot_bytes = self.hot_bytes + size - hot.size();
                hot.size = bytes32(size);
                hot.measured = hot.size;
            }
        }
        self.log_buf.clear();
        self.log_len = 0;
        self.unsynced = false;
        self.next_fsync_ms = None;
        self.failed = false;
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Hands the logged records to the disk: with `sync`, they are on disk when this
    /// returns; with `async`, an fsync is scheduled within `flush_ms` of `now_ms`.
    pub fn commit(&mut self, now_ms: u64) -> Result<(), StorageError> {
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        if !self.log_buf.is_empty() {
            let appended = disk.log_append(&self.log_buf);
            let len = self.log_buf.len() as u64;
            self.log_buf.clear();
            if let Err(e) = appended {
                // The log may now end in a partial record; a checkpoint makes the state
                // durable another way.
                self.failed = true;
                self.stats.disk_errors += 1;
                return Err(e);
            }
            self.log_len += len;
            self.unsynced = true;
        }
        if !self.unsynced {
            return Ok(());
        }
        match self.config.durability {
            Durability::Sync => self.sync(),
            _ => {
                if self.next_fsync_ms.is_none() {
                    self.next_fsync_ms = Some(now_ms.saturating_add(self.config.flush_ms));
                }
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.next_fsync_ms = None;
        let disk = self.disk_mut()?;
        match disk.log_sync() {
            Ok(()) => {
                self.unsynced = false;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                self.stats.disk_errors += 1;
                Err(e)
            }
        }
    }

    /// Lets time pass: the scheduled fsync runs when due.
    pub fn handle_tick(&mut self, now_ms: u64) {
        if self.next_fsync_ms.is_some_and(|t| now_ms >= t)
            && let Err(e) = self.sync()
        {
            tracing::warn!(error = %e, "fsync of the write-ahead log failed; a checkpoint follows");
        }
    }

    /// When [`handle_tick`](Self::handle_tick) next has work to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.next_fsync_ms
    }

    /// Makes everything durable now (a clean shutdown).
    pub fn flush(&mut self, now_ms: u64) -> Result<(), StorageError> {
        self.commit(now_ms)?;
        if self.unsynced { self.sync() } else { Ok(()) }
    }

    /// The tiers' figures.
    pub fn stats(&self) -> TierStats {
        TierStats {
            memory_keys: self.hot.len() as u64,
            memory_bytes: self.hot_bytes as u64,
            memory_peak_bytes: self.hot_peak.max(self.hot_bytes) as u64,
            disk_keys: self.cold.len() as u64,
            log_bytes: self.log_len + self.log_buf.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Starts counting the keys under `quotas` that worker `worker` of `ring` is the first
    /// local owner of: those held now (values only on disk are read once) and, from now
    /// on, every change.
    pub fn count_quotas(
        &mut self,
        quotas: Arc<Quotas>,
        ring: Arc<HashRing>,
        worker: u32,
    ) -> Result<(), StorageError> {
        let mut usage = Usage::new(quotas, ring, worker);
        for (key, hot) in &self.hot {
            usage.set(key, Some(&hot.value));
        }
        let cold: Vec<Bytes> = (self.cold.keys())
            .filter(|k| usage.counts(k))
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        for key in cold {
            let value = self.peek(&key)?;
            usage.set(&key, value.as_ref());
        }
        self.usage = Some(usage);
        Ok(())
    }

    /// What `key` counts for toward the quotas now, if this store counts it (see
    /// [`count_quotas`](Self::count_quotas)).
    pub fn quota_charge(&self, key: &[u8]) -> Option<u64> {
        self.usage.as_ref()?.charge_of(key)
    }

    /// The node's quotas, if it has some.
    pub fn quotas(&self) -> Option<&Arc<Quotas>> {
        self.usage.as_ref().map(Usage::quotas)
    }

    /// Checks the quota figures against the keys held: per quota, what this store's record
    /// of each key adds up to, and what counting every key again from its value gives; an
    /// error says where they differ. (For tests and the simulation: it reads every value,
    /// from disk too.)
    pub fn audit_quotas(&mut self) -> Result<Vec<(u64, u64)>, String> {
        let Some(usage) = self.usage.take() else {
            return Ok(Vec::new());
        };
        let recorded = usage.totals();
        let keys: Vec<Bytes> = (self.hot.keys().chain(self.cold.keys()))
            .filter(|k| usage.counts(k))
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        let prefixes: Vec<String> = (usage.quotas().usage().into_iter())
            .map(|u| u.prefix)
            .collect();
        let mut recount = vec![(0u64, 0u64); recorded.len()];
        let mut failure = None;
        for key in keys {
            match self.peek(&key) {
                Ok(Some(value)) => {
                    let c = super::quota::charge(&key, &value);
                    if c == 0 {
                        continue;
                    }
                    for (i, prefix) in prefixes.iter().enumerate() {
                        if key.starts_with(prefix.as_bytes()) {
                            recount[i].0 += 1;
                            recount[i].1 += c;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => failure = Some(format!("could not read {key:?}: {e}")),
            }
        }
        self.usage = Some(usage);
        if let Some(f) = failure {
            return Err(f);
        }
        if recorded != recount {
            return Err(format!(
                "quota figures (keys, bytes) per quota: recorded {recorded:?}, counted again {recount:?}"
            ));
        }
        Ok(recount)
    }
}
/// The size of `record` encoded as the log encodes it, counted without writing it.
fn encoded_len(record: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = bincode::serde::encode_into_std_write(record, &mut count, bincode::config::standard());
    count.0
}

#[cfg(test)]
mod test {
    use super::*;

    /// Every key in memory is one entry of these sizes: the 56-byte value (its largest
    /// common variants are 48: a register, its 16-byte stamp and its bytes, the stamp's
    /// niche marking the empty register; an observed-remove map, its 24-byte causal context
    /// and its entries) and 16 bytes of bookkeeping beside the 24-byte key.
    #[test]
    fn an_entry_is_96_bytes() {
        use calm_lattice::{CausalContext, Lww};
        assert_eq!(std::mem::size_of::<Lww<Option<Bytes>>>(), 48);
        assert_eq!(std::mem::size_of::<CausalContext>(), 24);
        assert_eq!(std::mem::size_of::<Value>(), 56);
        assert_eq!(std::mem::size_of::<Hot>(), 72);
        assert_eq!(std::mem::size_of::<(Key, Hot)>(), 96);
    }
}
