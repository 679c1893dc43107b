//! `#[derive(Lattice)]` on named, tuple and generic structs: the derived impls obey the laws.

use calm_lattice::{IsBot, IsTop, Lattice, Max, Merge, Min, SetUnionBTreeSet, laws};
use proptest::prelude::*;

#[derive(Lattice, Clone, Debug, Default, PartialEq, Eq)]
struct Named {
    high: Max<u8>,
    low: Min<u8>,
    tags: SetUnionBTreeSet<u8>,
}

#[derive(Lattice, Clone, Debug, Default, PartialEq, Eq)]
struct Tuple(Max<u8>, SetUnionBTreeSet<u8>);

#[derive(Lattice, Clone, Debug, Default, PartialEq, Eq)]
struct Generic<A, B> {
    a: A,
    b: B,
}

fn named() -> impl Strategy<Value = Named> {
    (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::btree_set(0u8..4, 0..3),
    )
        .prop_map(|(h, l, t)| Named {
            high: Max::new(h % 4),
            low: Min::new(l % 4),
            tags: SetUnionBTreeSet::new(t),
        })
}

proptest! {
    #[test]
    fn named_struct_laws(items in proptest::collection::vec(named(), 0..6)) {
        laws::check_all(&items);
    }

    #[test]
    fn tuple_struct_laws(items in proptest::collection::vec(
        (0u8..4, proptest::collection::btree_set(0u8..4, 0..3))
            .prop_map(|(m, s)| Tuple(Max::new(m), SetUnionBTreeSet::new(s))), 0..6)) {
        laws::check_all(&items);
    }

    #[test]
    fn generic_struct_laws(items in proptest::collection::vec(
        (0u8..4, 0u8..4).prop_map(|(a, b)| Generic { a: Max::new(a), b: Min::new(b) }), 0..6)) {
        laws::check_all(&items);
    }
}

#[test]
fn product_order_is_not_lexicographic() {
    let a = Tuple(Max::new(1), SetUnionBTreeSet::new_from([5]));
    let b = Tuple(Max::new(2), SetUnionBTreeSet::new_from([6]));
    // a is smaller in the first field, but not a subset in the second: incomparable.
    assert_eq!(a.partial_cmp(&b), None);
    let c = a.clone().merge_owned(b.clone());
    assert!(a < c && b < c);
}

#[test]
fn top_needs_every_field_at_top() {
    let t = Generic {
        a: Max::new(u8::MAX),
        b: Min::new(0u8),
    };
    assert!(t.is_top());
    assert!(
        !Generic {
            a: Max::new(u8::MAX),
            b: Min::new(1u8)
        }
        .is_top()
    );
    assert!(Generic::<Max<u8>, Min<u8>>::default().is_bot());
}
