//! [`SingleKeyCausal`]: a multi-value register ordered by vector clocks.

use std::cmp::Ordering;

use crate::versions::{Versions, antichain_order};
use crate::{Atomize, IsBot, IsTop, Merge, ReplicaId, VectorClock};

/// A register that keeps every concurrent write: a write that causally follows another
/// replaces it; writes that are concurrent (neither saw the other) are all kept until a
/// later write that has seen them all replaces them. The reader decides how to reconcile.
///
/// This is Anna's `SINGLE_CAUSAL` and the value type of Cloudburst's causal mode, built so
/// that merge is associative (it keeps the causally maximal versions of the union).
///
/// ```
/// use calm_lattice::{Merge, ReplicaId, SingleKeyCausal};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = SingleKeyCausal::default();
/// x.write(a, "v1");
/// let mut y = x.clone();
/// x.write(a, "v2-from-a");
/// y.write(b, "v2-from-b"); // concurrent with a's second write
/// x.merge(y.clone());
/// assert_eq!(x.values().count(), 2); // both kept
/// x.write(b, "resolved");      // has seen both: replaces them
/// assert_eq!(x.values().collect::<Vec<_>>(), vec![&"resolved"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: serde::Serialize",
        deserialize = "T: serde::Deserialize<'de> + Ord"
    ))
)]
pub struct SingleKeyCausal<T>(Versions<T>);

impl<T> Default for SingleKeyCausal<T> {
    fn default() -> Self {
        SingleKeyCausal(Versions::default())
    }
}

impl<T: Ord + Clone> SingleKeyCausal<T> {
    /// A register holding one version.
    pub fn new(clock: VectorClock, value: T) -> Self {
        SingleKeyCausal(Versions::single(clock, value))
    }

    /// Writes `value` at `replica`, after everything this register has seen; returns the
    /// delta (the new version, which replaces every current one).
    pub fn write(&mut self, replica: ReplicaId, value: T) -> Self {
        let mut clock = self.0.clock();
        clock.increment(replica);
        *self = SingleKeyCausal::new(clock, value);
        self.clone()
    }

    /// The concurrent values, in order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }

    /// The versions: each value with the clock of its write.
    pub fn versions(&self) -> impl Iterator<Item = (&VectorClock, &T)> {
        self.0.iter().map(|(c, v)| (c, v))
    }

    /// Everything this register has seen: the merge of its versions' clocks.
    pub fn clock(&self) -> VectorClock {
        self.0.clock()
    }
}

impl<T: Ord> Merge for SingleKeyCausal<T> {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl<T: Ord> PartialOrd for SingleKeyCausal<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        antichain_order(&self.0, &other.0)
    }
}

impl<T: Ord> IsBot for SingleKeyCausal<T> {
    fn is_bot(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> IsTop for SingleKeyCausal<T> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<T: Ord> Atomize for SingleKeyCausal<T> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0
            .into_items()
            .map(|(c, v)| SingleKeyCausal(Versions::single(c, v)))
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    #[derive(Clone, Debug)]
    enum Op {
        Write(usize, u8),
        Sync(usize, usize),
    }

    fn replay(ops: &[Op]) -> Vec<SingleKeyCausal<u8>> {
        let mut replicas = vec![SingleKeyCausal::default(); 3];
        for op in ops {
            match *op {
                Op::Write(r, v) => {
                    replicas[r].write(ReplicaId(r as u64), v);
                }
                Op::Sync(a, b) => {
                    let from = replicas[b].clone();
                    replicas[a].merge(from);
                }
            }
        }
        replicas
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..3).prop_map(|(r, v)| Op::Write(r, v)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Sync(a, b)),
            ],
            0..10,
        )
    }

    /// Arbitrary (not only reachable) antichains, to exercise merge beyond what writes make.
    fn arbitrary() -> impl Strategy<Value = Vec<SingleKeyCausal<u8>>> {
        proptest::collection::vec(
            proptest::collection::vec(
                (
                    proptest::collection::btree_map(0u64..3, 0u64..3, 0..3),
                    0u8..3,
                ),
                0..3,
            )
            .prop_map(|vs| {
                vs.into_iter()
                    .fold(SingleKeyCausal::default(), |acc, (m, v)| {
                        let clock =
                            VectorClock::new_from(m.into_iter().map(|(r, n)| (ReplicaId(r), n)));
                        acc.merge_owned(SingleKeyCausal::new(clock, v))
                    })
            }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn single_key_causal_laws(ops in ops()) {
            let items = replay(&ops);
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn single_key_causal_laws_arbitrary(items in arbitrary()) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_monotone(|s: &SingleKeyCausal<u8>| s.clock(), &items);
        }

        #[test]
        fn write_delta(ops in ops(), r in 0u64..3, v in 0u8..3) {
            let items = replay(&ops);
            for s in &items {
                laws::check_delta(s, &items, |s| s.write(ReplicaId(r), v));
            }
        }
    }
}
