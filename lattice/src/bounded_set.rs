//! [`BoundedSet`]: a grow-only set that saturates when it would exceed a bound.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A grow-only set of at most `N` elements. A merge that would hold more than `N` turns it
/// into `Overflow`, the top, for good: "more than N distinct" is a monotone fact, and what
/// the set reports once it has happened.
///
/// Use it to count distinct things up to a threshold (quorum members, distinct voters)
/// without unbounded memory.
///
/// ```
/// use calm_lattice::{BoundedSet, IsTop, Merge};
/// let mut voters = BoundedSet::<&str, 2>::new_from(["ann"]);
/// voters.insert("bob");
/// assert_eq!(voters.elements().map(|s| s.len()), Some(2));
/// voters.insert("cid");
/// assert!(voters.is_top()); // more than 2
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "BoundedSetParts<T>"))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: serde::Serialize",
        deserialize = "T: serde::Deserialize<'de> + Ord"
    ))
)]
pub enum BoundedSet<T, const N: usize> {
    /// At most `N` elements.
    Elements(BTreeSet<T>),
    /// More than `N` distinct elements were seen (top).
    Overflow,
}

/// The encoded form of a [`BoundedSet`]; decoding turns more than `N` elements into
/// `Overflow`, as merging them would.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(bound(deserialize = "T: serde::Deserialize<'de> + Ord"))]
enum BoundedSetParts<T> {
    Elements(BTreeSet<T>),
    Overflow,
}

#[cfg(feature = "serde")]
impl<T: Ord, const N: usize> From<BoundedSetParts<T>> for BoundedSet<T, N> {
    fn from(parts: BoundedSetParts<T>) -> Self {
        match parts {
            BoundedSetParts::Elements(items) => BoundedSet::new_from(items),
            BoundedSetParts::Overflow => BoundedSet::Overflow,
        }
    }
}

impl<T, const N: usize> Default for BoundedSet<T, N> {
    fn default() -> Self {
        BoundedSet::Elements(BTreeSet::new())
    }
}

impl<T: Ord, const N: usize> BoundedSet<T, N> {
    /// A set of `items`, or `Overflow` if there are more than `N` distinct ones.
    pub fn new_from(items: impl IntoIterator<Item = T>) -> Self {
        let mut set = BoundedSet::default();
        for item in items {
            set.insert_one(item);
        }
        set
    }

    /// The elements, unless the set overflowed.
    pub fn elements(&self) -> Option<&BTreeSet<T>> {
        match self {
            BoundedSet::Elements(s) => Some(s),
            BoundedSet::Overflow => None,
        }
    }

    /// Inserts `item`; returns the delta (a set of that item).
    pub fn insert(&mut self, item: T) -> Self
    where
        T: Clone,
    {
        self.insert_one(item.clone());
        BoundedSet::new_from([item])
    }

    fn insert_one(&mut self, item: T) -> bool {
        match self {
            BoundedSet::Overflow => false,
            BoundedSet::Elements(set) => {
                if set.contains(&item) {
                    false
                } else if set.len() >= N {
                    *self = BoundedSet::Overflow;
                    true
                } else {
                    set.insert(item)
                }
            }
        }
    }
}

impl<T: Ord, const N: usize> Merge for BoundedSet<T, N> {
    fn merge(&mut self, other: Self) -> bool {
        match other {
            BoundedSet::Overflow => {
                let changed = !matches!(self, BoundedSet::Overflow);
                *self = BoundedSet::Overflow;
                changed
            }
            BoundedSet::Elements(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.insert_one(item);
                }
                changed
            }
        }
    }
}

impl<T: Ord, const N: usize> PartialOrd for BoundedSet<T, N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (BoundedSet::Overflow, BoundedSet::Overflow) => Some(Ordering::Equal),
            (BoundedSet::Overflow, _) => Some(Ordering::Greater),
            (_, BoundedSet::Overflow) => Some(Ordering::Less),
            (BoundedSet::Elements(a), BoundedSet::Elements(b)) => {
                match (a.is_subset(b), b.is_subset(a)) {
                    (true, true) => Some(Ordering::Equal),
                    (true, false) => Some(Ordering::Less),
                    (false, true) => Some(Ordering::Greater),
                    (false, false) => None,
                }
            }
        }
    }
}

impl<T, const N: usize> IsBot for BoundedSet<T, N> {
    fn is_bot(&self) -> bool {
        matches!(self, BoundedSet::Elements(s) if s.is_empty())
    }
}

impl<T, const N: usize> IsTop for BoundedSet<T, N> {
    fn is_top(&self) -> bool {
        matches!(self, BoundedSet::Overflow)
    }
}

impl<T: Ord, const N: usize> Atomize for BoundedSet<T, N> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        let (top, items) = match self {
            BoundedSet::Overflow => (Some(BoundedSet::Overflow), BTreeSet::new()),
            BoundedSet::Elements(s) => (None, s),
        };
        top.into_iter().chain(
            items
                .into_iter()
                .map(|x| BoundedSet::Elements(BTreeSet::from([x]))),
        )
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    proptest! {
        #[test]
        fn bounded_set_laws(items in proptest::collection::vec(
            proptest::collection::vec(0u8..5, 0..4).prop_map(BoundedSet::<u8, 3>::new_from), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            for s in &items {
                laws::check_delta(s, &items, |s| s.insert(4));
            }
        }
    }
}
