//! A crate that depends on `calm` alone, as a user's does: `#[derive(Lattice)]` and the
//! store's vocabulary (`Op`, `ReadValue`, `Bytes`) through the facade must not need a
//! second dependency.

use calm::lattice::{Deltas, Lattice, Max, SetUnionBTreeSet};

/// A shopping cart as a product lattice: items ever added, and the largest quantity seen.
#[derive(
    Lattice,
    Deltas,
    Default,
    Clone,
    Debug,
    PartialEq,
    Eq,
    calm::serde::Serialize,
    calm::serde::Deserialize,
)]
#[serde(crate = "calm::serde")]
pub struct Cart {
    /// Items ever added.
    pub items: SetUnionBTreeSet<String>,
    /// The largest quantity seen.
    pub most: Max<u64>,
}

/// Carts are stored as a kind of their own, merged by this type's code.
impl calm::kvs::value::CustomLattice for Cart {
    const KIND: &'static str = "cart";
}

#[cfg(test)]
mod test {
    use super::*;
    use calm::lattice::{IsBot, Merge};

    #[test]
    fn the_store_s_vocabulary_comes_through_the_facade() {
        use calm::Bytes;
        use calm::kvs::{Op, ReadValue, Write};
        let op = Op::orset_add("tags", ["a", "b"]);
        let members = vec![Bytes::from("a"), Bytes::from("b")];
        assert_eq!(op, Op::write("tags", Write::OrSetAdd(members.clone())));
        let read = ReadValue::OrSet { members };
        assert_eq!(read.members().map(<[Bytes]>::len), Some(2));
    }

    #[tokio::test]
    async fn the_store_keeps_a_derived_lattice_through_the_facade() {
        use calm::prelude::*;
        let config = NodeConfig {
            kinds: Kinds::new().with::<Cart>().unwrap(),
            ..NodeConfig::default()
        };
        let store = EmbeddedStore::start(config).unwrap();
        let mut phone = Cart::default();
        let delta = phone.update_items(|items| items.insert("fig".to_string()));
        store.merge_custom("cart", &delta).await.unwrap();
        store
            .merge_custom("cart", &Cart::with_most(Max::new(3)))
            .await
            .unwrap();
        let held: Option<Cart> = store.get_custom("cart").await.unwrap();
        let mut want = phone.clone();
        want.merge(Cart::with_most(Max::new(3)));
        assert_eq!(held, Some(want));
    }

    #[test]
    fn derived_delta_mutators_work_through_the_facade() {
        let mut cart = Cart::default();
        let delta = cart.update_items(|items| items.insert("fig".to_string()));
        assert!(delta.most.is_bot());
        let mut other = Cart::default();
        other.merge(delta);
        assert_eq!(other, cart);
        assert_eq!(Cart::with_most(Max::new(4)).most, Max::new(4));
    }

    #[test]
    fn a_derived_lattice_merges_through_the_facade() {
        let mut a = Cart {
            items: SetUnionBTreeSet::new_from(["apple".to_string()]),
            most: Max::new(2),
        };
        let b = Cart {
            items: SetUnionBTreeSet::new_from(["pear".to_string()]),
            most: Max::new(5),
        };
        assert!(a.merge(b.clone()));
        assert_eq!(a.items.len(), Max::new(2));
        assert_eq!(a.most, Max::new(5));
        assert!(!a.merge(b.clone()), "merging again changes nothing");
        assert!(b < a);
        assert!(Cart::default().is_bot());
    }
}
