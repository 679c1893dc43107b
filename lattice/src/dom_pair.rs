//! [`DomPair`]: a pair ordered by its key first (lexicographic), the value breaking ties.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A key and a value where a greater key *dominates*: it replaces the value outright. Equal
/// keys merge their values. This is how a version or a timestamp guards a value.
///
/// **A lattice only when the key is totally ordered** (for example [`Max`](crate::Max),
/// [`Hlc`](crate::Hlc)). With a partially ordered key (a set, a vector clock), two
/// incomparable keys merge both halves, and merge is then not associative: the tests show a
/// counterexample. Use [`Pair`](crate::Pair) or a causal type for such keys.
///
/// ```
/// use calm_lattice::{DomPair, Max, Merge, SetUnionBTreeSet};
/// let mut v = DomPair::new(Max::new(1), SetUnionBTreeSet::new_from(["a"]));
/// v.merge(DomPair::new(Max::new(1), SetUnionBTreeSet::new_from(["b"]))); // same key: merge
/// v.merge(DomPair::new(Max::new(2), SetUnionBTreeSet::new_from(["c"]))); // newer key wins
/// assert_eq!(v.val, SetUnionBTreeSet::new_from(["c"]));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DomPair<K, V> {
    /// The dominating part: a greater key replaces the value.
    pub key: K,
    /// The guarded value.
    pub val: V,
}

impl<K, V> DomPair<K, V> {
    /// Pairs a key and a value.
    pub fn new(key: K, val: V) -> Self {
        DomPair { key, val }
    }

    /// Unwraps both parts.
    pub fn into_reveal(self) -> (K, V) {
        (self.key, self.val)
    }
}

impl<K: Merge + PartialOrd, V: Merge> Merge for DomPair<K, V> {
    fn merge(&mut self, other: Self) -> bool {
        match other.key.partial_cmp(&self.key) {
            Some(Ordering::Greater) => {
                *self = other;
                true
            }
            Some(Ordering::Equal) => self.val.merge(other.val),
            Some(Ordering::Less) => false,
            None => {
                self.key.merge(other.key);
                self.val.merge(other.val);
                true
            }
        }
    }
}

impl<K: PartialOrd, V: PartialOrd> PartialOrd for DomPair<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.key.partial_cmp(&other.key)? {
            Ordering::Equal => self.val.partial_cmp(&other.val),
            o => Some(o),
        }
    }
}

impl<K: IsBot, V: IsBot> IsBot for DomPair<K, V> {
    fn is_bot(&self) -> bool {
        self.key.is_bot() && self.val.is_bot()
    }
}

impl<K: IsTop, V: IsTop> IsTop for DomPair<K, V> {
    fn is_top(&self) -> bool {
        self.key.is_top() && self.val.is_top()
    }
}

impl<K: Merge + PartialOrd + IsBot, V: Merge + IsBot> Atomize for DomPair<K, V> {
    type Atom = Self;

    /// A dominating pair does not split: a smaller part would be dominated by its key.
    fn atomize(self) -> impl Iterator<Item = Self> {
        (!self.is_bot()).then_some(self).into_iter()
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::{Max, SetUnionBTreeSet, laws};

    proptest! {
        #[test]
        fn dom_pair_laws_with_total_key(items in proptest::collection::vec(
            (0u8..4, proptest::collection::btree_set(0u8..4, 0..3))
                .prop_map(|(k, s)| DomPair::new(Max::new(k), SetUnionBTreeSet::new(s))), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }
    }

    /// The documented caveat, shown: with a partially ordered key, merge is not associative.
    #[test]
    #[should_panic(expected = "not associative")]
    fn partially_ordered_key_breaks_associativity() {
        let a = DomPair::new(SetUnionBTreeSet::new_from([1u8]), Max::new(5u8));
        let b = DomPair::new(SetUnionBTreeSet::new_from([2u8]), Max::new(3u8));
        let c = DomPair::new(SetUnionBTreeSet::new_from([1u8, 2]), Max::new(0u8));
        laws::check_lattice_properties(&[a, b, c]);
    }
}
