//! [`PNCounter`]: a counter that goes up and down.

use crate::{Atomize, GCounter, Lattice, ReplicaId};

/// An increment/decrement counter: two [`GCounter`]s, one of increments and one of
/// decrements; the value is their difference. Like a bank balance kept by several tellers,
/// it converges to the same total whatever order the tellers' updates arrive in.
///
/// ```
/// use calm_lattice::{Merge, PNCounter, ReplicaId};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = PNCounter::default();
/// let mut y = PNCounter::default();
/// let d1 = x.increment(a, 10);
/// let d2 = y.decrement(b, 4);
/// x.merge(d2);
/// y.merge(d1);
/// assert_eq!(x, y);
/// assert_eq!(x.value(), 6);
/// ```
#[derive(Lattice, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PNCounter {
    increments: GCounter,
    decrements: GCounter,
}

impl PNCounter {
    /// Adds `by` at `replica`; returns the delta.
    pub fn increment(&mut self, replica: ReplicaId, by: u64) -> Self {
        PNCounter {
            increments: self.increments.increment(replica, by),
            decrements: GCounter::default(),
        }
    }

    /// Subtracts `by` at `replica`; returns the delta.
    pub fn decrement(&mut self, replica: ReplicaId, by: u64) -> Self {
        PNCounter {
            increments: GCounter::default(),
            decrements: self.decrements.increment(replica, by),
        }
    }

    /// The current value: increments minus decrements.
    pub fn value(&self) -> i128 {
        i128::from(self.increments.value()) - i128::from(self.decrements.value())
    }

    /// The increments, per replica.
    pub fn increments(&self) -> &GCounter {
        &self.increments
    }

    /// The decrements, per replica.
    pub fn decrements(&self) -> &GCounter {
        &self.decrements
    }

    /// A counter from its two halves.
    pub fn new(increments: GCounter, decrements: GCounter) -> Self {
        PNCounter {
            increments,
            decrements,
        }
    }
}

impl Atomize for PNCounter {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        let ups = self
            .increments
            .atomize()
            .map(|i| PNCounter::new(i, GCounter::default()));
        let downs = self
            .decrements
            .atomize()
            .map(|d| PNCounter::new(GCounter::default(), d));
        ups.chain(downs)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    fn counters() -> impl Strategy<Value = PNCounter> {
        (
            proptest::collection::btree_map(0u64..3, 0u64..4, 0..3),
            proptest::collection::btree_map(0u64..3, 0u64..4, 0..3),
        )
            .prop_map(|(p, n)| {
                PNCounter::new(
                    GCounter::new_from(p.into_iter().map(|(r, c)| (ReplicaId(r), c))),
                    GCounter::new_from(n.into_iter().map(|(r, c)| (ReplicaId(r), c))),
                )
            })
    }

    proptest! {
        #[test]
        fn pn_counter_laws(items in proptest::collection::vec(counters(), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn deltas(items in proptest::collection::vec(counters(), 0..5), r in 0u64..3, by in 0u64..3) {
            for c in &items {
                laws::check_delta(c, &items, |c| c.increment(ReplicaId(r), by));
                laws::check_delta(c, &items, |c| c.decrement(ReplicaId(r), by));
            }
        }
    }
}
