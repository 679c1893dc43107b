//! [`OrderedSet`]: a grow-only set kept in order (Anna's `ORDERED_SET`).

use std::collections::BTreeSet;
use std::ops::RangeBounds;

use crate::SetUnion;

/// A grow-only set whose elements are kept in order, with first/last and range reads.
///
/// It is [`SetUnion`] over a [`BTreeSet`]: merge is union, the order is inclusion, and its
/// serialized form is deterministic (the same set always encodes to the same bytes).
///
/// ```
/// use calm_lattice::{Merge, OrderedSet};
/// let mut log = OrderedSet::new_from([30, 10]);
/// log.merge(OrderedSet::new_from([20, 40]));
/// assert_eq!(log.first(), Some(&10));
/// assert_eq!(log.range(15..35).copied().collect::<Vec<_>>(), vec![20, 30]);
/// ```
pub type OrderedSet<T> = SetUnion<BTreeSet<T>>;

impl<T: Ord> SetUnion<BTreeSet<T>> {
    /// The least element.
    pub fn first(&self) -> Option<&T> {
        self.as_reveal_ref().first()
    }

    /// The greatest element.
    pub fn last(&self) -> Option<&T> {
        self.as_reveal_ref().last()
    }

    /// The elements within `range`, in order.
    pub fn range<R: RangeBounds<T>>(&self, range: R) -> impl Iterator<Item = &T> {
        self.as_reveal_ref().range(range)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::{Merge, laws};

    proptest! {
        #[test]
        fn ordered_set_laws(items in proptest::collection::vec(
            proptest::collection::btree_set(0u8..8, 0..4).prop_map(OrderedSet::new), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            // `first` of a growing set only goes down: a monotone read into `Min`.
            laws::check_monotone(
                |s: &OrderedSet<u8>| crate::Min::new(s.first().copied().unwrap_or(u8::MAX)),
                &items,
            );
        }

        #[test]
        fn range_reads_agree_with_filter(a in proptest::collection::btree_set(0u8..50, 0..20),
                                          b in proptest::collection::btree_set(0u8..50, 0..20)) {
            let merged = OrderedSet::new(a).merge_owned(OrderedSet::new(b));
            let expected: Vec<u8> = merged.iter().copied().filter(|x| (10..30).contains(x)).collect();
            prop_assert_eq!(merged.range(10..30).copied().collect::<Vec<_>>(), expected);
        }
    }
}
