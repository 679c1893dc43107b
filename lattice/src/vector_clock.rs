//! [`VectorClock`]: causal history as one counter per replica.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::vec_map::VecMap;

use crate::{Atomize, IsBot, IsTop, Merge, ReplicaId, product_order};

/// One counter per replica; merge takes the maximum of each. `a < b` means every event `a`
/// knows of, `b` knows of too (`a` happened before `b`); incomparable clocks are concurrent.
///
/// Zero counters are never stored, so equal histories are equal values.
///
/// ```
/// use calm_lattice::{Merge, ReplicaId, VectorClock};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = VectorClock::default();
/// x.increment(a);
/// let mut y = x.clone();
/// y.increment(b);
/// assert!(x < y);                  // y has seen everything x has
/// x.increment(a);
/// assert!(x.concurrent(&y));       // now neither has seen the other's latest
/// x.merge(y);
/// assert_eq!((x.get(a), x.get(b)), (2, 1));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "BTreeMap<ReplicaId, u64>"))]
pub struct VectorClock(VecMap<ReplicaId, u64>);

// Decoding drops explicit zero counters, so a decoded clock is canonical.
impl From<BTreeMap<ReplicaId, u64>> for VectorClock {
    fn from(entries: BTreeMap<ReplicaId, u64>) -> Self {
        VectorClock::new_from(entries)
    }
}

impl VectorClock {
    /// A clock with the given counters (zeros left out).
    pub fn new_from(entries: impl IntoIterator<Item = (ReplicaId, u64)>) -> Self {
        VectorClock(entries.into_iter().filter(|(_, n)| *n > 0).collect())
    }

    /// The counter of `replica` (0 if it never wrote).
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.0.get(&replica).copied().unwrap_or(0)
    }

    /// Counts one more event at `replica`; returns the delta (that one entry).
    pub fn increment(&mut self, replica: ReplicaId) -> Self {
        let n = self.0.get_or_insert_with(replica, || 0);
        *n = n.saturating_add(1);
        VectorClock(VecMap::from([(replica, *n)]))
    }

    /// Whether neither clock has seen all of the other.
    pub fn concurrent(&self, other: &Self) -> bool {
        self.partial_cmp(other).is_none()
    }

    /// The non-zero counters, by replica.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter().map(|(r, n)| (*r, *n))
    }

    /// A total order used only to keep collections of clocks in a canonical order (it is not
    /// the causal order: see [`PartialOrd`]).
    pub fn canonical_cmp(&self, other: &Self) -> Ordering {
        self.0.iter().cmp(other.0.iter())
    }
}

impl Merge for VectorClock {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        // Zero counters are skipped so the result stays canonical even if `other` is not
        // (a decoded value may carry explicit zeros).
        for (r, n) in other.0.into_iter().filter(|(_, n)| *n > 0) {
            let mine = self.0.get_or_insert_with(r, || 0);
            if n > *mine {
                *mine = n;
                changed = true;
            }
        }
        changed
    }
}

impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let replicas = self
            .0
            .keys()
            .chain(other.0.keys().filter(|r| !self.0.contains_key(r)));
        product_order(replicas.map(|r| Some(self.get(*r).cmp(&other.get(*r)))))
    }
}

impl IsBot for VectorClock {
    fn is_bot(&self) -> bool {
        self.0.is_empty()
    }
}

impl IsTop for VectorClock {
    fn is_top(&self) -> bool {
        false
    }
}

impl Atomize for VectorClock {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0
            .into_iter()
            .map(|(r, n)| VectorClock(VecMap::from([(r, n)])))
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    pub(crate) fn clocks() -> impl Strategy<Value = VectorClock> {
        proptest::collection::btree_map(0u64..3, 0u64..3, 0..3)
            .prop_map(|m| VectorClock::new_from(m.into_iter().map(|(r, n)| (ReplicaId(r), n))))
    }

    proptest! {
        #[test]
        fn vector_clock_laws(items in proptest::collection::vec(clocks(), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn increment_delta(items in proptest::collection::vec(clocks(), 0..5), r in 0u64..3) {
            for c in &items {
                laws::check_delta(c, &items, |c| c.increment(ReplicaId(r)));
            }
        }
    }
}
