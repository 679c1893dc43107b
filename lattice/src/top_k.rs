//! [`TopK`]: the `K` greatest elements seen.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::{Atomize, IsBot, IsTop, Merge, order_by_merge};

/// The `K` greatest distinct elements ever inserted: a leaderboard, the most recent `K`
/// timestamps. Merge keeps the `K` greatest of the union, which is associative: an element
/// dropped from the top `K` of a set never re-enters the top `K` of a larger set.
///
/// ```
/// use calm_lattice::{Merge, TopK};
/// let mut best = TopK::<u32, 3>::new_from([10, 50, 20]);
/// best.merge(TopK::new_from([40, 5]));
/// assert_eq!(best.iter().copied().collect::<Vec<_>>(), vec![20, 40, 50]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "BTreeSet<T>"))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: serde::Serialize",
        deserialize = "T: serde::Deserialize<'de> + Ord"
    ))
)]
pub struct TopK<T, const K: usize>(BTreeSet<T>);

// Decoding keeps only the `K` greatest, whatever the encoding held.
impl<T: Ord, const K: usize> From<BTreeSet<T>> for TopK<T, K> {
    fn from(items: BTreeSet<T>) -> Self {
        TopK::new_from(items)
    }
}

impl<T, const K: usize> Default for TopK<T, K> {
    fn default() -> Self {
        TopK(BTreeSet::new())
    }
}

impl<T: Ord, const K: usize> TopK<T, K> {
    /// The `K` greatest of `items`.
    pub fn new_from(items: impl IntoIterator<Item = T>) -> Self {
        let mut top = TopK::default();
        for item in items {
            top.insert_one(item);
        }
        top
    }

    /// The kept elements, smallest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    /// The number of kept elements (at most `K`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Inserts `item`; returns the delta (the item alone, which merges to the same result).
    pub fn insert(&mut self, item: T) -> Self
    where
        T: Clone,
    {
        self.insert_one(item.clone());
        TopK::new_from([item])
    }

    fn insert_one(&mut self, item: T) -> bool {
        if K == 0 {
            return false;
        }
        if self.0.len() == K && self.0.first().is_some_and(|min| &item <= min) {
            return false;
        }
        if !self.0.insert(item) {
            return false;
        }
        if self.0.len() > K {
            self.0.pop_first();
        }
        true
    }
}

impl<T: Ord, const K: usize> Merge for TopK<T, K> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for item in other.0 {
            changed |= self.insert_one(item);
        }
        changed
    }
}

impl<T: Ord + Clone, const K: usize> PartialOrd for TopK<T, K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        order_by_merge(self, other)
    }
}

impl<T, const K: usize> IsBot for TopK<T, K> {
    fn is_bot(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T, const K: usize> IsTop for TopK<T, K> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<T: Ord, const K: usize> Atomize for TopK<T, K> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0.into_iter().map(|x| TopK(BTreeSet::from([x])))
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    proptest! {
        #[test]
        fn top_k_laws(items in proptest::collection::vec(
            proptest::collection::vec(0u8..8, 0..5).prop_map(TopK::<u8, 2>::new_from), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            for t in &items {
                laws::check_delta(t, &items, |t| t.insert(5));
            }
        }

        #[test]
        fn keeps_the_k_greatest(xs in proptest::collection::vec(any::<u16>(), 0..30)) {
            let top = TopK::<u16, 4>::new_from(xs.iter().copied());
            let mut sorted: Vec<u16> = xs.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
            let expected = sorted.split_off(sorted.len().saturating_sub(4));
            prop_assert_eq!(top.iter().copied().collect::<Vec<_>>(), expected);
        }
    }
}
