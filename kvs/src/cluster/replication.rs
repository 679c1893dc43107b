//! Per-key replication factors that differ from the cluster's default.
//!
//! The table is a lattice — key → last-writer-wins factor — carried on every message
//! between nodes, so every node holds all of it: replication metadata is replicated more
//! widely than any key's data.

use bytes::Bytes;
use calm_lattice::{Lww, MapUnion, Merge, Stamp};
use serde::{Deserialize, Serialize};

/// Keys whose number of replicas differs from the default. `None` restores the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationTable(MapUnion<Bytes, Lww<Option<u8>>>);

impl ReplicationTable {
    /// Sets `key`'s factor (`None`: back to the default) as a write stamped `stamp`.
    pub fn set(&mut self, key: Bytes, factor: Option<u8>, stamp: Stamp) -> bool {
        let mut one = MapUnion::default();
        one.merge_key(key, Lww::new(stamp, factor));
        self.0.merge(one)
    }

    /// The factor of `key`, if it differs from the default.
    pub fn factor(&self, key: &[u8]) -> Option<usize> {
        if self.0.as_reveal_ref().is_empty() {
            return None;
        }
        self.0
            .get(&Bytes::copy_from_slice(key))
            .and_then(|l| l.get().copied().flatten())
            .map(usize::from)
    }

    /// Every key with a factor of its own.
    pub fn overrides(&self) -> Vec<(Bytes, u8)> {
        self.0
            .iter()
            .filter_map(|(k, l)| l.get().copied().flatten().map(|f| (k.clone(), f)))
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
        let mut a = ReplicationTable::default();
        let mut b = ReplicationTable::default();
        a.set(Bytes::from_static(b"hot"), Some(3), at(10, 1));
        b.set(Bytes::from_static(b"hot"), None, at(20, 2));
        let (a0, b0) = (a.clone(), b.clone());
        a.merge(b0);
        b.merge(a0);
        assert_eq!(a, b);
        assert_eq!(a.factor(b"hot"), None, "the later reset to default wins");
        a.set(Bytes::from_static(b"hot"), Some(3), at(30, 1));
        assert_eq!(a.factor(b"hot"), Some(3));
        assert_eq!(a.overrides(), vec![(Bytes::from_static(b"hot"), 3)]);
    }
}
