//! [`Pair`]: the product of two lattices.

use crate::{Atomize, IsBot, Lattice, Merge};

/// Two lattices side by side; each half merges with its own kind. `a <= b` when both halves
/// are `<=` (the product order, not the lexicographic one: see [`DomPair`](crate::DomPair)
/// for that).
///
/// For structs with named fields, `#[derive(Lattice)]` builds the same thing.
///
/// ```
/// use calm_lattice::{Max, Merge, Min, Pair};
/// let mut range = Pair::new(Min::new(10), Max::new(20));
/// range.merge(Pair::new(Min::new(5), Max::new(15)));
/// assert_eq!(range, Pair::new(Min::new(5), Max::new(20)));
/// ```
#[derive(Lattice, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Pair<A, B> {
    /// The first half.
    pub a: A,
    /// The second half.
    pub b: B,
}

impl<A, B> Pair<A, B> {
    /// Pairs two values.
    pub fn new(a: A, b: B) -> Self {
        Pair { a, b }
    }

    /// Unwraps both halves.
    pub fn into_reveal(self) -> (A, B) {
        (self.a, self.b)
    }
}

impl<A, B> Atomize for Pair<A, B>
where
    A: Atomize + Merge + IsBot + Default,
    B: Atomize + Merge + IsBot + Default,
{
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        let left = self
            .a
            .atomize()
            .map(|x| Pair::new(A::default().merge_owned(x), B::default()));
        let right = self
            .b
            .atomize()
            .map(|y| Pair::new(A::default(), B::default().merge_owned(y)));
        left.chain(right)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::{Max, SetUnionBTreeSet, laws};

    type P = Pair<Max<u8>, SetUnionBTreeSet<u8>>;

    proptest! {
        #[test]
        fn pair_laws(items in proptest::collection::vec(
            (any::<u8>(), proptest::collection::btree_set(0u8..5, 0..3))
                .prop_map(|(m, s)| Pair::new(Max::new(m), SetUnionBTreeSet::new(s))), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_morphism(|p: &P| p.a, &items);
        }
    }
}
