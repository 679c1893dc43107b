//! [`OrSet`]: the add-wins observed-remove set.

use std::cmp::Ordering;

use crate::dot_store::DotStore;
use crate::{Atomize, IsBot, IsTop, Merge, ReplicaId, order_by_merge};

/// A set with removal where a concurrent add wins over a remove (add-wins observed-remove
/// set, in its delta-state form without tombstones).
///
/// Each add is tagged with a fresh [`Dot`](crate::Dot); a remove drops the dots it has
/// observed. A causal context remembers which dots were seen, so removed elements leave no
/// tombstone: the state holds the live elements, their dots (at most one per replica that
/// added them since the last remove) and a compact version vector.
///
/// Every mutator returns a delta to ship to other replicas; deltas and states merge in any
/// order, any number of times.
///
/// ```
/// use calm_lattice::{Merge, OrSet, ReplicaId};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut here = OrSet::default();
/// let add = here.add(a, "apple");
/// let mut there = OrSet::default();
/// there.merge(add);
/// // Concurrently: `here` removes apple, `there` adds it again.
/// let rm = here.remove(&"apple");
/// let readd = there.add(b, "apple");
/// here.merge(readd);
/// there.merge(rm);
/// assert_eq!(here, there);
/// assert!(here.contains(&"apple")); // the concurrent add wins
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
pub struct OrSet<T>(DotStore<T, ()>);

impl<T> Default for OrSet<T> {
    fn default() -> Self {
        OrSet(DotStore::default())
    }
}

impl<T: Ord + Clone> OrSet<T> {
    /// Adds `item` as a write of `replica`; returns the delta.
    pub fn add(&mut self, replica: ReplicaId, item: T) -> Self {
        OrSet(self.0.write(replica, item, ()))
    }

    /// Removes `item` as far as this replica has seen it; returns the delta. Adds this
    /// replica has not seen survive the remove.
    pub fn remove<Q: Ord + ?Sized>(&mut self, item: &Q) -> Self
    where
        T: std::borrow::Borrow<Q>,
    {
        OrSet(self.0.remove(item))
    }

    /// Removes every element seen; returns the delta.
    pub fn clear(&mut self) -> Self {
        OrSet(self.0.clear())
    }

    /// Whether `item` is in the set. Not monotone: a later remove can make it false.
    pub fn contains<Q: Ord + ?Sized>(&self, item: &Q) -> bool
    where
        T: std::borrow::Borrow<Q>,
    {
        self.0.entries.contains_key(item)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether the set has no element.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.entries.keys()
    }

    /// The causal context: every add and remove this replica has seen.
    pub fn context(&self) -> &crate::CausalContext {
        &self.0.context
    }
}

impl<T: Ord> Merge for OrSet<T> {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl<T: Ord + Clone> PartialOrd for OrSet<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        order_by_merge(self, other)
    }
}

impl<T: Ord + Clone> IsBot for OrSet<T> {
    fn is_bot(&self) -> bool {
        self.0.is_bot()
    }
}

impl<T> IsTop for OrSet<T> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<T: Ord + Clone> Atomize for OrSet<T> {
    type Atom = Self;

    /// One atom per live (element, dot) and one per removed dot. Removed dots are listed one
    /// by one, so this costs as much as the number of writes ever seen.
    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0.atomize().map(OrSet)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    /// An operation on one of three replicas: add, remove, or pull another replica's state.
    #[derive(Clone, Debug)]
    pub(crate) enum Op {
        Add(usize, u8),
        Remove(usize, u8),
        Sync(usize, usize),
    }

    pub(crate) fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..4).prop_map(|(r, x)| Op::Add(r, x)),
                (0usize..3, 0u8..4).prop_map(|(r, x)| Op::Remove(r, x)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Sync(a, b)),
            ],
            0..12,
        )
    }

    /// Reachable states: replay the operations, return every replica's final state.
    pub(crate) fn replay(ops: &[Op]) -> Vec<OrSet<u8>> {
        let mut replicas = vec![OrSet::default(); 3];
        for op in ops {
            match *op {
                Op::Add(r, x) => {
                    replicas[r].add(ReplicaId(r as u64), x);
                }
                Op::Remove(r, x) => {
                    replicas[r].remove(&x);
                }
                Op::Sync(a, b) => {
                    let from = replicas[b].clone();
                    replicas[a].merge(from);
                }
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn or_set_laws(ops in ops()) {
            let items = replay(&ops);
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn or_set_deltas(ops in ops(), r in 0u64..3, x in 0u8..4) {
            let items = replay(&ops);
            for s in &items {
                laws::check_delta(s, &items, |s| s.add(ReplicaId(r), x));
                laws::check_delta(s, &items, |s| s.remove(&x));
                laws::check_delta(s, &items, |s| s.clear());
            }
        }
    }

    #[test]
    fn remove_then_merge_with_stale_replica_stays_removed() {
        let mut a = OrSet::default();
        a.add(ReplicaId(1), 7);
        let stale = a.clone();
        a.remove(&7);
        assert!(!a.clone().merge_owned(stale).contains(&7));
    }

    #[test]
    fn no_tombstones_after_remove() {
        let mut a = OrSet::default();
        for i in 0..100u32 {
            a.add(ReplicaId(1), i);
            a.remove(&i);
        }
        assert!(a.is_empty());
        // The context compacts to one version-vector entry: no per-element leftovers.
        assert_eq!(
            a.context(),
            &crate::CausalContext::from_dots((1..=100).map(|c| crate::Dot::new(ReplicaId(1), c)))
        );
        assert_eq!(a.context().next_dot(ReplicaId(1)).counter, 101);
    }
}
