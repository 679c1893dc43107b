//! `#[derive(Lattice)]`, `#[derive(Atomize)]` and `#[derive(Deltas)]` on named, tuple and
//! generic structs: the derived impls obey the laws.

use calm_lattice::{
    Atomize, Deltas, IsBot, IsTop, Lattice, Max, Merge, Min, OrSet, PNCounter, ReplicaId,
    SetUnionBTreeSet, laws,
};
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

/// Fields that atomize and have delta mutators.
#[derive(Lattice, Atomize, Deltas, Clone, Debug, Default, PartialEq, Eq)]
struct Cart {
    items: OrSet<u8>,
    tags: SetUnionBTreeSet<u8>,
    count: PNCounter,
}

#[derive(Lattice, Atomize, Deltas, Clone, Debug, Default, PartialEq, Eq)]
struct Pair(SetUnionBTreeSet<u8>, PNCounter);

#[derive(Lattice, Atomize, Deltas, Clone, Debug, Default, PartialEq, Eq)]
struct Wrapped<T: Ord + Clone> {
    set: OrSet<T>,
}

fn cart() -> impl Strategy<Value = Cart> {
    (
        proptest::collection::vec((1u64..4, 0u8..4, any::<bool>()), 0..5),
        proptest::collection::btree_set(0u8..4, 0..3),
        proptest::collection::vec((1u64..4, 1u64..5, any::<bool>()), 0..4),
    )
        .prop_map(|(adds, tags, counts)| {
            let mut c = Cart {
                tags: SetUnionBTreeSet::new(tags),
                ..Cart::default()
            };
            for (r, item, remove) in adds {
                c.items.add(ReplicaId(r), item);
                if remove {
                    c.items.remove(&item);
                }
            }
            for (r, by, down) in counts {
                if down {
                    c.count.decrement(ReplicaId(r), by);
                } else {
                    c.count.increment(ReplicaId(r), by);
                }
            }
            c
        })
}

proptest! {
    #[test]
    fn derived_atoms_are_non_bottom_and_merge_back(items in proptest::collection::vec(cart(), 0..6)) {
        laws::check_atomize(&items);
        laws::check_all(&items);
        let pairs: Vec<Pair> = items.iter().map(|c| Pair(c.tags.clone(), c.count.clone())).collect();
        laws::check_atomize(&pairs);
        let wrapped: Vec<Wrapped<u8>> = items.iter().map(|c| Wrapped { set: c.items.clone() }).collect();
        laws::check_atomize(&wrapped);
    }

    #[test]
    fn derived_delta_mutators_are_deltas(
        state in cart(),
        others in proptest::collection::vec(cart(), 0..4),
        item in 0u8..4,
        by in 1u64..5,
    ) {
        laws::check_delta(&state, &others, |c| c.update_items(|s| s.add(ReplicaId(9), item)));
        laws::check_delta(&state, &others, |c| c.update_tags(|s| s.insert(item)));
        laws::check_delta(&state, &others, |c| c.update_count(|n| n.decrement(ReplicaId(9), by)));
        laws::check_delta(&state, &others, |c| c.update_items(|s| s.clear()));
        let pair = Pair(state.tags.clone(), state.count.clone());
        let pairs: Vec<Pair> = others.iter().map(|c| Pair(c.tags.clone(), c.count.clone())).collect();
        laws::check_delta(&pair, &pairs, |p| p.update_0(|s| s.insert(item)));
        laws::check_delta(&pair, &pairs, |p| p.update_1(|n| n.increment(ReplicaId(9), by)));
    }
}

#[test]
fn a_delta_changes_only_its_field() {
    let mut cart = Cart::default();
    let d = cart.update_tags(|t| t.insert(3));
    assert_eq!(d, Cart::with_tags(SetUnionBTreeSet::new_from([3])));
    assert!(d.items.is_bot() && d.count.is_bot());
    let w = Wrapped::<u8>::with_set(OrSet::default());
    assert!(w.is_bot());
}
