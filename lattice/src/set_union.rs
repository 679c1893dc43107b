//! Grow-only sets: [`SetUnion`] over a choice of backends.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;

use crate::{Atomize, IsBot, IsTop, Max, Merge};

/// Read access to a set backend. Any two backends with the same `Item` can be merged into
/// each other and compared.
pub trait SetRead {
    /// The element type.
    type Item;
    /// Whether `item` is in the set.
    fn contains(&self, item: &Self::Item) -> bool;
    /// The number of elements.
    fn len(&self) -> usize;
    /// Whether the set has no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The elements, by reference.
    fn iter(&self) -> impl Iterator<Item = &Self::Item>;
    /// The elements, by value.
    fn into_items(self) -> impl Iterator<Item = Self::Item>;
}

/// A set backend that can grow; every such backend can be the target of a merge.
pub trait SetWrite: SetRead + Default {
    /// Adds `item`; returns whether it was new.
    fn insert(&mut self, item: Self::Item) -> bool;
}

impl<T: Eq + Hash> SetRead for HashSet<T> {
    type Item = T;
    fn contains(&self, item: &T) -> bool {
        HashSet::contains(self, item)
    }
    fn len(&self) -> usize {
        HashSet::len(self)
    }
    fn iter(&self) -> impl Iterator<Item = &T> {
        HashSet::iter(self)
    }
    fn into_items(self) -> impl Iterator<Item = T> {
        self.into_iter()
    }
}

impl<T: Eq + Hash> SetWrite for HashSet<T> {
    fn insert(&mut self, item: T) -> bool {
        HashSet::insert(self, item)
    }
}

impl<T: Ord> SetRead for BTreeSet<T> {
    type Item = T;
    fn contains(&self, item: &T) -> bool {
        BTreeSet::contains(self, item)
    }
    fn len(&self) -> usize {
        BTreeSet::len(self)
    }
    fn iter(&self) -> impl Iterator<Item = &T> {
        BTreeSet::iter(self)
    }
    fn into_items(self) -> impl Iterator<Item = T> {
        self.into_iter()
    }
}

impl<T: Ord> SetWrite for BTreeSet<T> {
    fn insert(&mut self, item: T) -> bool {
        BTreeSet::insert(self, item)
    }
}

/// A set of exactly one element: the cheapest representation of a set delta. It has no
/// bottom of its own, so it is merged *into* other sets rather than used as a lattice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Single<T>(pub T);

impl<T: PartialEq> SetRead for Single<T> {
    type Item = T;
    fn contains(&self, item: &T) -> bool {
        self.0 == *item
    }
    fn len(&self) -> usize {
        1
    }
    fn iter(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.0)
    }
    fn into_items(self) -> impl Iterator<Item = T> {
        std::iter::once(self.0)
    }
}

/// A grow-only set: merge is union.
///
/// The backend `S` picks the representation: [`HashSet`] (fast, unordered),
/// [`BTreeSet`] (ordered, deterministic serialization) or [`Single`] (a one-element delta).
/// Sets with different backends merge into each other.
///
/// Monotone reads return lattices, so code built from them stays monotone:
/// [`len`](SetUnion::len) is a [`Max<usize>`] and [`contains`](SetUnion::contains) a
/// [`Max<bool>`]. [`map`](SetUnion::map) and [`filter`](SetUnion::filter) are morphisms.
///
/// ```
/// use calm_lattice::{Max, Merge, SetUnionHashSet, SetUnionSingle, Single, SetUnion};
///
/// let mut tags = SetUnionHashSet::new_from(["red", "blue"]);
/// let delta: SetUnionSingle<&str> = tags.insert("green");
/// let mut elsewhere = SetUnionHashSet::new_from(["red"]);
/// assert!(elsewhere.merge(delta));               // one-element delta into a full set
/// assert!(elsewhere.contains(&"green").into_reveal());
/// assert_eq!(tags.len(), Max::new(3));
/// assert!(tags.len().at_least(2).into_reveal());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SetUnion<S>(S);

/// A grow-only set backed by a [`HashSet`].
pub type SetUnionHashSet<T> = SetUnion<HashSet<T>>;
/// A grow-only set backed by a [`BTreeSet`].
pub type SetUnionBTreeSet<T> = SetUnion<BTreeSet<T>>;
/// A one-element set: the delta of one insert.
pub type SetUnionSingle<T> = SetUnion<Single<T>>;

impl<S> SetUnion<S> {
    /// Wraps a backend set.
    pub fn new(set: S) -> Self {
        SetUnion(set)
    }

    /// Borrows the backend set.
    pub fn as_reveal_ref(&self) -> &S {
        &self.0
    }

    /// Unwraps the backend set.
    pub fn into_reveal(self) -> S {
        self.0
    }
}

impl<S: SetWrite> SetUnion<S> {
    /// A set of the given elements.
    pub fn new_from(items: impl IntoIterator<Item = S::Item>) -> Self {
        let mut set = S::default();
        for item in items {
            set.insert(item);
        }
        SetUnion(set)
    }

    /// Adds `item` and returns the delta, a one-element set.
    pub fn insert(&mut self, item: S::Item) -> SetUnionSingle<S::Item>
    where
        S::Item: Clone,
    {
        self.0.insert(item.clone());
        SetUnion(Single(item))
    }

    /// Morphism: the set of `f(x)` for every element `x`.
    /// `(a ∪ b).map(f) == a.map(f) ∪ b.map(f)`.
    pub fn map<R: SetWrite>(&self, f: impl Fn(&S::Item) -> R::Item) -> SetUnion<R> {
        SetUnion::new_from(self.0.iter().map(f))
    }

    /// Morphism: the elements for which `keep` is true.
    pub fn filter(&self, keep: impl Fn(&S::Item) -> bool) -> Self
    where
        S::Item: Clone,
    {
        SetUnion::new_from(self.0.iter().filter(|x| keep(x)).cloned())
    }
}

impl<S: SetRead> SetUnion<S> {
    /// Monotone size: a [`Max`] that grows with the set.
    pub fn len(&self) -> Max<usize> {
        Max::new(self.0.len())
    }

    /// Monotone emptiness test, inverted so it only grows: `Max(true)` once non-empty.
    pub fn is_non_empty(&self) -> Max<bool> {
        Max::new(!self.0.is_empty())
    }

    /// Monotone membership: once `Max(true)`, true forever after any merge.
    pub fn contains(&self, item: &S::Item) -> Max<bool> {
        Max::new(self.0.contains(item))
    }

    /// The elements.
    pub fn iter(&self) -> impl Iterator<Item = &S::Item> {
        self.0.iter()
    }
}

impl<A: SetWrite, B: SetRead<Item = A::Item>> Merge<SetUnion<B>> for SetUnion<A> {
    fn merge(&mut self, other: SetUnion<B>) -> bool {
        let mut changed = false;
        for item in other.0.into_items() {
            changed |= self.0.insert(item);
        }
        changed
    }
}

impl<S: SetRead + PartialEq> PartialOrd for SetUnion<S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let subset = |a: &S, b: &S| a.len() <= b.len() && a.iter().all(|x| b.contains(x));
        match (subset(&self.0, &other.0), subset(&other.0, &self.0)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl<S: SetRead> IsBot for SetUnion<S> {
    fn is_bot(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S> IsTop for SetUnion<S> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<S: SetWrite> Atomize for SetUnion<S>
where
    S::Item: PartialEq,
{
    type Atom = SetUnionSingle<S::Item>;

    fn atomize(self) -> impl Iterator<Item = Self::Atom> {
        self.0.into_items().map(|x| SetUnion(Single(x)))
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    fn hash_sets() -> impl Strategy<Value = Vec<SetUnionHashSet<u8>>> {
        proptest::collection::vec(
            proptest::collection::hash_set(0u8..8, 0..4).prop_map(SetUnion::new),
            0..6,
        )
    }

    fn btree_sets() -> impl Strategy<Value = Vec<SetUnionBTreeSet<u8>>> {
        proptest::collection::vec(
            proptest::collection::btree_set(0u8..8, 0..4).prop_map(SetUnion::new),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn hash_set_laws(items in hash_sets()) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_monotone(|s: &SetUnionHashSet<u8>| s.len(), &items);
            laws::check_monotone(|s: &SetUnionHashSet<u8>| s.contains(&3), &items);
            laws::check_monotone(|s: &SetUnionHashSet<u8>| s.len().at_least(2), &items);
            laws::check_morphism(|s: &SetUnionHashSet<u8>| s.map::<HashSet<u8>>(|x| x / 2), &items);
            laws::check_morphism(|s: &SetUnionHashSet<u8>| s.filter(|x| x % 2 == 0), &items);
        }

        #[test]
        fn btree_set_laws(items in btree_sets()) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_morphism(|s: &SetUnionBTreeSet<u8>| s.map::<BTreeSet<u8>>(|x| x % 3), &items);
        }

        #[test]
        fn insert_delta(items in btree_sets(), x in 0u8..10) {
            for s in &items {
                laws::check_delta(s, &items, |s| s.insert(x));
            }
        }

        #[test]
        fn single_merges_like_full_set(items in hash_sets(), x in 0u8..10) {
            for s in &items {
                let via_single = s.clone().merge_owned(SetUnion(Single(x)));
                let via_full = s.clone().merge_owned(SetUnionHashSet::new_from([x]));
                prop_assert_eq!(via_single, via_full);
            }
        }
    }

    #[test]
    fn backends_merge_into_each_other() {
        let mut h = SetUnionHashSet::new_from([1, 2]);
        assert!(h.merge(SetUnionBTreeSet::new_from([2, 3])));
        assert!(!h.merge(SetUnionBTreeSet::new_from([1, 3])));
        assert_eq!(h, SetUnionHashSet::new_from([1, 2, 3]));
    }
}
