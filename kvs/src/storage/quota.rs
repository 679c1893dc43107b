//! Quotas per key prefix (a tenant's namespace): how many keys, and how many bytes, the keys
//! under a prefix may hold on each node.
//!
//! Every path that adds, changes or drops a key keeps the figures: client writes, deletes,
//! values merged from other replicas, hand-offs, expired keys collected, recovery from the
//! disk (moving a key between memory and disk changes nothing). A key counts once per node:
//! at the worker that is its first local owner. What counts is what a read returns: a
//! visible key counts as one key and as its own length plus its value's
//! [payload](crate::Value::payload_bytes); a deleted key counts nothing.
//!
//! Client writes are checked against the figures before they run, and refused with
//! [`OpError::QuotaExceeded`] (nothing changed) if they would take a quota past its limit;
//! writes that shrink what a prefix holds always pass. Values merged from other replicas are
//! never refused (a replica that refused one would diverge from the others, and an
//! acknowledged write could be lost): they are counted, and a node over a limit refuses
//! further growth until keys are deleted. The check is local, so no node asks another:
//! writes admitted at the same moment on different nodes may together overshoot a limit
//! by what they add.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use crate::op::{OpError, QuotaMeasure};
use crate::ring::HashRing;
use crate::value::Value;

/// A limit on what the keys under a prefix hold on each node (from the ACL file's
/// `[[quotas]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// The keys it covers: those that start with it (empty: every key).
    pub prefix: String,
    /// The most keys, if limited.
    #[serde(default)]
    pub keys: Option<u64>,
    /// The most bytes (keys and their values' payloads), if limited.
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// What the keys under a quota's prefix hold on a node now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// The quota's prefix.
    pub prefix: String,
    /// Keys held.
    pub keys: u64,
    /// Bytes held (keys and payloads).
    pub bytes: u64,
    /// The key limit, if any.
    pub max_keys: Option<u64>,
    /// The byte limit, if any.
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    keys: AtomicI64,
    bytes: AtomicI64,
}

/// A node's quotas and what each covers now, shared by the node's workers.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: Vec<Quota>,
    used: Vec<Counters>,
}

/// What a key counts for: 0 when nothing is visible, else its length plus its payload.
pub fn charge(key: &[u8], value: &Value) -> u64 {
    if value.is_visible() {
        (key.len() + value.payload_bytes()) as u64
    } else {
        0
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Quotas {
    /// Quotas with nothing counted yet.
    pub fn new(limits: Vec<Quota>) -> Arc<Quotas> {
        let used = limits.iter().map(|_| Counters::default()).collect();
        Arc::new(Quotas { limits, used })
    }

    /// Whether there is no quota.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Whether some quota covers `key`.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.matching(key).next().is_some()
    }

    fn matching<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        (self.limits.iter().enumerate())
            .filter(move |(_, q)| key.starts_with(q.prefix.as_bytes()))
            .map(|(i, _)| i)
    }

    /// Counts a key's charge going from `before` to `after`.
    fn add(&self, key: &[u8], before: u64, after: u64) {
        if before == after {
            return;
        }
        let keys = i64::from(after > 0) - i64::from(before > 0);
        let bytes = signed(after) - signed(before);
        for i in self.matching(key) {
            if keys != 0 {
                self.used[i].keys.fetch_add(keys, Ordering::Relaxed);
            }
            self.used[i].bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Whether a client write that takes `key`'s charge from `before` to `after` keeps
    /// every quota covering it within its limit (or does not grow what it holds).
    pub fn admit(&self, key: &[u8], before: u64, after: u64) -> Result<(), OpError> {
        let get = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        let refuse = |q: &Quota, measure, used, wanted, max| OpError::QuotaExceeded {
            prefix: q.prefix.clone(),
            measure,
            used,
            wanted,
            max,
        };
        for i in self.matching(key) {
            let q = &self.limits[i];
            if let Some(max) = q.keys
                && before == 0
                && after > 0
            {
                let used = get(&self.used[i].keys);
                if used + 1 > max {
                    return Err(refuse(q, QuotaMeasure::Keys, used, used + 1, max));
                }
            }
            if let Some(max) = q.bytes
                && after > before
            {
                let used = get(&self.used[i].bytes);
                let wanted = used.saturating_add(after - before);
                if wanted > max {
                    return Err(refuse(q, QuotaMeasure::Bytes, used, wanted, max));
                }
            }
        }
        Ok(())
    }

    fn used_of(&self, i: usize) -> QuotaUsage {
        let q = &self.limits[i];
        let get = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        QuotaUsage {
            prefix: q.prefix.clone(),
            keys: get(&self.used[i].keys),
            bytes: get(&self.used[i].bytes),
            max_keys: q.keys,
            max_bytes: q.bytes,
        }
    }

    /// What each quota covers now, in the order they were given.
    pub fn usage(&self) -> Vec<QuotaUsage> {
        (0..self.limits.len()).map(|i| self.used_of(i)).collect()
    }
}

/// A worker's part of its node's figures: the charge of each key it counts (those under
/// a quota that it is the first local owner of).
#[derive(Debug)]
pub(crate) struct Usage {
    quotas: Arc<Quotas>,
    ring: Arc<HashRing>,
    worker: u32,
    charges: HashMap<Box<[u8]>, u64>,
}

impl Usage {
    pub(crate) fn new(quotas: Arc<Quotas>, ring: Arc<HashRing>, worker: u32) -> Usage {
        Usage {
            quotas,
            ring,
            worker,
            charges: HashMap::new(),
        }
    }

    pub(crate) fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    /// Whether this worker counts `key`.
    pub(crate) fn counts(&self, key: &[u8]) -> bool {
        self.quotas.covers(key) && self.ring.primary(key) == Some(self.worker)
    }

    /// `key` now holds `value` (`None`: dropped here).
    pub(crate) fn set(&mut self, key: &[u8], value: Option<&Value>) {
        if !self.counts(key) {
            return;
        }
        let after = value.map_or(0, |v| charge(key, v));
        let before = match (self.charges.get_mut(key), after) {
            (Some(c), 1..) => std::mem::replace(c, after),
            (Some(_), 0) => self.charges.remove(key).unwrap_or(0),
            (None, 1..) => {
                self.charges.insert(Box::from(key), after);
                0
            }
            (None, 0) => 0,
        };
        self.quotas.add(key, before, after);
    }

    /// What `key` counts for now, if this worker counts it.
    pub(crate) fn charge_of(&self, key: &[u8]) -> Option<u64> {
        self.counts(key)
            .then(|| self.charges.get(key).copied().unwrap_or(0))
    }

    /// Per quota, what this worker counts, from its record of each key.
    pub(crate) fn totals(&self) -> Vec<(u64, u64)> {
        self.quotas
            .limits
            .iter()
            .map(|q| {
                (self.charges.iter())
                    .filter(|(k, _)| k.starts_with(q.prefix.as_bytes()))
                    .fold((0, 0), |(keys, bytes), (_, c)| (keys + 1, bytes + c))
            })
            .collect()
    }
}

impl Drop for Usage {
    /// A worker that goes takes what it counted with it (its node's figures may outlive it).
    fn drop(&mut self) {
        for (key, charge) in std::mem::take(&mut self.charges) {
            self.quotas.add(&key, charge, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> Arc<Quotas> {
        Quotas::new(vec![
            Quota {
                prefix: "a/".into(),
                keys: Some(2),
                bytes: Some(100),
            },
            Quota {
                prefix: "".into(),
                keys: None,
                bytes: Some(1_000),
            },
        ])
    }

    #[test]
    fn a_key_counts_toward_every_quota_whose_prefix_it_has() {
        let q = quotas();
        q.add(b"a/1", 0, 10);
        q.add(b"b/1", 0, 20);
        let usage = q.usage();
        assert_eq!((usage[0].keys, usage[0].bytes), (1, 10));
        assert_eq!((usage[1].keys, usage[1].bytes), (2, 30));
        q.add(b"a/1", 10, 0);
        assert_eq!((q.usage()[0].keys, q.usage()[0].bytes), (0, 0));
    }

    #[test]
    fn growth_past_a_limit_is_refused_and_shrinking_always_passes() {
        let q = quotas();
        q.add(b"a/1", 0, 40);
        q.add(b"a/2", 0, 40);
        let third = q.admit(b"a/3", 0, 5).unwrap_err();
        assert!(
            matches!(
                third,
                OpError::QuotaExceeded {
                    measure: QuotaMeasure::Keys,
                    used: 2,
                    wanted: 3,
                    max: 2,
                    ..
                }
            ),
            "{third:?}"
        );
        assert!(third.to_string().contains("\"a/\""), "{third}");
        // Changing a key it holds: bytes count, keys do not.
        assert!(q.admit(b"a/1", 40, 60).is_ok());
        let big = q.admit(b"a/1", 40, 61).unwrap_err();
        assert!(
            matches!(
                big,
                OpError::QuotaExceeded {
                    measure: QuotaMeasure::Bytes,
                    wanted: 101,
                    max: 100,
                    ..
                }
            ),
            "{big:?}"
        );
        // Over the limit (merged from replicas), a shrinking write passes.
        q.add(b"a/3", 0, 50);
        assert!(q.admit(b"a/1", 40, 10).is_ok());
        assert!(q.admit(b"a/1", 40, 0).is_ok());
        // Keys outside every prefix but the empty one only count bytes there.
        assert!(q.admit(b"zzz", 0, 800).is_ok());
        assert!(q.admit(b"zzz", 0, 900).is_err());
    }
}
