//! [`GCounter`]: a counter that only goes up.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge, ReplicaId, VectorClock};

/// A grow-only counter: each replica counts its own increments, merge takes each replica's
/// maximum, and the value is the sum. Increments made anywhere are never lost or counted
/// twice, however deltas are delivered.
///
/// ```
/// use calm_lattice::{GCounter, Merge, ReplicaId};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = GCounter::default();
/// let mut y = GCounter::default();
/// let d = x.increment(a, 3);
/// y.increment(b, 2);
/// y.merge(d.clone());
/// y.merge(d); // a duplicate changes nothing
/// assert_eq!(y.value(), 5);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct GCounter(VectorClock);

impl GCounter {
    /// A counter with the given per-replica counts.
    pub fn new_from(counts: impl IntoIterator<Item = (ReplicaId, u64)>) -> Self {
        GCounter(VectorClock::new_from(counts))
    }

    /// Adds `by` at `replica`; returns the delta (that replica's new count).
    pub fn increment(&mut self, replica: ReplicaId, by: u64) -> Self {
        let n = self.0.get(replica).saturating_add(by);
        let delta = GCounter::new_from([(replica, n)]);
        self.0.merge(delta.0.clone());
        delta
    }

    /// The total count (saturating at `u64::MAX`).
    pub fn value(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |acc, (_, n)| acc.saturating_add(n))
    }

    /// The count of one replica.
    pub fn count_of(&self, replica: ReplicaId) -> u64 {
        self.0.get(replica)
    }

    /// The per-replica counts.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter()
    }
}

impl Merge for GCounter {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl PartialOrd for GCounter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

impl IsBot for GCounter {
    fn is_bot(&self) -> bool {
        self.0.is_bot()
    }
}

impl IsTop for GCounter {
    fn is_top(&self) -> bool {
        false
    }
}

impl Atomize for GCounter {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0.atomize().map(GCounter)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    pub(crate) fn counters() -> impl Strategy<Value = GCounter> {
        proptest::collection::btree_map(0u64..3, 0u64..4, 0..3)
            .prop_map(|m| GCounter::new_from(m.into_iter().map(|(r, n)| (ReplicaId(r), n))))
    }

    proptest! {
        #[test]
        fn g_counter_laws(items in proptest::collection::vec(counters(), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_monotone(|c: &GCounter| crate::Max::new(c.value()), &items);
        }

        #[test]
        fn increment_delta(items in proptest::collection::vec(counters(), 0..5), r in 0u64..3, by in 0u64..3) {
            for c in &items {
                laws::check_delta(c, &items, |c| c.increment(ReplicaId(r), by));
            }
        }
    }
}
