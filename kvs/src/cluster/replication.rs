//! Per-key replication factors that differ from the cluster's default.
//!
//! The table is a lattice — key → last-writer-wins factor — carried on every message
//! between nodes, so every node holds all of it: replication metadata is replicated more
//! widely than any key's data.

use bytes::Bytes;
use calm_lattice::{Lww, MapUnion, Merge, Stamp};
use serde::{Deserialize, Serialize};

/// A key's replication vector: how many nodes hold it, and how many workers in each of
/// those nodes. `None` in either part means the default.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Factors {
    /// Nodes holding the key.
    pub global: Option<u8>,
    /// Workers holding the key within each of those nodes.
    pub local: Option<u8>,
}

/// Keys whose replication differs from the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationTable(MapUnion<Bytes, Lww<Factors>>);

impl ReplicationTable {
    /// Sets `key`'s factors (both `None`: back to the defaults) as a write stamped `stamp`.
    pub fn set(&mut self, key: Bytes, factors: Factors, stamp: Stamp) -> bool {
        let mut one = MapUnion::default();
        one.merge_key(key, Lww::new(stamp, factors));
        self.0.merge(one)
    }

    fn factors(&self, key: &[u8]) -> Option<Factors> {
        if self.0.as_reveal_ref().is_empty() {
            return None;
        }
        // Bytes borrows as [u8]: no copy of the key per lookup.
        self.0
            .as_reveal_ref()
            .get(key)
            .and_then(|l| l.get().copied())
    }

    /// The number of nodes holding `key`, if it differs from the default.
    pub fn factor(&self, key: &[u8]) -> Option<usize> {
        self.factors(key).and_then(|f| f.global).map(usize::from)
    }

    /// The number of workers holding `key` in each node, if it differs from the default.
    pub fn local_factor(&self, key: &[u8]) -> Option<usize> {
        self.factors(key).and_then(|f| f.local).map(usize::from)
    }

    /// Every key with factors of its own.
    pub fn overrides(&self) -> Vec<(Bytes, Factors)> {
        self.0
            .iter()
            .filter_map(|(k, l)| {
                l.get()
                    .copied()
                    .filter(|f| f.global.is_some() || f.local.is_some())
                    .map(|f| (k.clone(), f))
            })
            .collect()
    }

    /// Merges another node's table; returns whether this one changed.
    pub fn merge(&mut self, other: ReplicationTable) -> bool {
        self.0.merge(other.0)
    }
}

#[cfg(test)]
mod test {
    use calm_lattice::{Hlc, ReplicaId};

    use super::*;

    #[test]
    fn later_setting_wins_everywhere() {
        let at = |ms, r| Stamp::new(Hlc::new(ms, 0), ReplicaId(r));
        let three = Factors {
            global: Some(3),
            local: Some(2),
        };
        let mut a = ReplicationTable::default();
        let mut b = ReplicationTable::default();
        a.set(Bytes::from_static(b"hot"), three, at(10, 1));
        b.set(Bytes::from_static(b"hot"), Factors::default(), at(20, 2));
        let (a0, b0) = (a.clone(), b.clone());
        a.merge(b0);
        b.merge(a0);
        assert_eq!(a, b);
        assert_eq!(a.factor(b"hot"), None, "the later reset to default wins");
        assert!(a.overrides().is_empty());
        a.set(Bytes::from_static(b"hot"), three, at(30, 1));
        assert_eq!(
            (a.factor(b"hot"), a.local_factor(b"hot")),
            (Some(3), Some(2))
        );
        assert_eq!(a.overrides(), vec![(Bytes::from_static(b"hot"), three)]);
    }
}
