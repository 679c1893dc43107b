//! [`MapUnion`]: a map whose values are lattices, merged key by key.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::{Atomize, IsBot, IsTop, Max, Merge, SetUnionBTreeSet, product_order};

/// A map from keys to lattice values; merge unions the keys and merges the values of keys
/// present on both sides. `a <= b` when every key of `a` is in `b` with a value `<=` b's.
///
/// Bottom values are never stored, so a key mapped to bottom and an absent key are the same
/// state (and compare equal). Keys are kept in a [`BTreeMap`], so iteration and serialized
/// bytes are deterministic.
///
/// ```
/// use calm_lattice::{MapUnion, Max, Merge};
/// let mut scores = MapUnion::new_from([("ann", Max::new(3)), ("bob", Max::new(5))]);
/// let delta = scores.merge_key("ann", Max::new(9));
/// assert_eq!(scores.get(&"ann"), Some(&Max::new(9)));
/// let mut replica = MapUnion::new_from([("ann", Max::new(4))]);
/// replica.merge(delta);
/// assert_eq!(replica.get(&"ann"), Some(&Max::new(9)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "BTreeMap<K, V>"))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: serde::Serialize, V: serde::Serialize",
        deserialize = "K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de> + IsBot"
    ))
)]
pub struct MapUnion<K, V>(BTreeMap<K, V>);

// Decoding drops bottom values, so a decoded map is canonical.
impl<K: Ord, V: IsBot> From<BTreeMap<K, V>> for MapUnion<K, V> {
    fn from(mut entries: BTreeMap<K, V>) -> Self {
        entries.retain(|_, v| !v.is_bot());
        MapUnion(entries)
    }
}

impl<K, V> Default for MapUnion<K, V> {
    fn default() -> Self {
        MapUnion(BTreeMap::new())
    }
}

impl<K: Ord, V: IsBot> MapUnion<K, V> {
    /// A map of the given entries, with bottom values left out.
    pub fn new_from(entries: impl IntoIterator<Item = (K, V)>) -> Self
    where
        V: Merge,
    {
        let mut map = MapUnion::default();
        for (k, v) in entries {
            map.merge_entry(k, v);
        }
        map
    }

    /// Borrows the underlying map.
    pub fn as_reveal_ref(&self) -> &BTreeMap<K, V> {
        &self.0
    }

    /// Unwraps the underlying map.
    pub fn into_reveal(self) -> BTreeMap<K, V> {
        self.0
    }

    /// The value of `key`, if it is above bottom (`&str` for `String` keys, as in a
    /// `BTreeMap`).
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.get(key)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter()
    }

    /// Monotone count of keys.
    pub fn len(&self) -> Max<usize> {
        Max::new(self.0.len())
    }

    /// Merges `value` into the value of `key` and returns the delta: a one-entry map.
    pub fn merge_key(&mut self, key: K, value: V) -> Self
    where
        K: Clone,
        V: Merge + Clone,
    {
        self.merge_entry(key.clone(), value.clone());
        let mut delta = MapUnion::default();
        delta.merge_entry(key, value);
        delta
    }

    fn merge_entry(&mut self, key: K, value: V) -> bool
    where
        V: Merge,
    {
        if value.is_bot() {
            return false;
        }
        match self.0.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(value),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(value);
                true
            }
        }
    }

    /// Morphism: the set of keys.
    pub fn key_set(&self) -> SetUnionBTreeSet<K>
    where
        K: Clone,
    {
        SetUnionBTreeSet::new_from(self.0.keys().cloned())
    }

    /// Morphism when `f` is a morphism of the values: applies `f` to every value.
    pub fn map_values<W: IsBot + Merge>(&self, f: impl Fn(&V) -> W) -> MapUnion<K, W>
    where
        K: Clone,
    {
        MapUnion::new_from(self.0.iter().map(|(k, v)| (k.clone(), f(v))))
    }

    /// Morphism: the entries whose key passes `keep`.
    pub fn filter_keys(&self, keep: impl Fn(&K) -> bool) -> Self
    where
        K: Clone,
        V: Clone,
    {
        MapUnion(
            self.0
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

impl<K: Ord, V: Merge + IsBot> Merge for MapUnion<K, V> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (k, v) in other.0 {
            changed |= self.merge_entry(k, v);
        }
        changed
    }
}

impl<K: Ord, V: PartialOrd> PartialOrd for MapUnion<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Keys on one side only make that side greater for that key.
        let keys = self
            .0
            .keys()
            .chain(other.0.keys().filter(|k| !self.0.contains_key(k)));
        product_order(keys.map(|k| match (self.0.get(k), other.0.get(k)) {
            (Some(a), Some(b)) => a.partial_cmp(b),
            (Some(_), None) => Some(Ordering::Greater),
            (None, _) => Some(Ordering::Less),
        }))
    }
}

impl<K, V> IsBot for MapUnion<K, V> {
    fn is_bot(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K, V> IsTop for MapUnion<K, V> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<K: Ord + Clone, V: Atomize + Merge + IsBot + Default> Atomize for MapUnion<K, V> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0.into_iter().flat_map(|(k, v)| {
            v.atomize().map(move |atom| {
                let mut one = MapUnion::default();
                one.merge_entry(k.clone(), V::default().merge_owned(atom));
                one
            })
        })
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    type Scores = MapUnion<u8, Max<u8>>;

    fn maps() -> impl Strategy<Value = Vec<Scores>> {
        proptest::collection::vec(
            proptest::collection::vec((0u8..4, any::<u8>().prop_map(Max::new)), 0..4)
                .prop_map(MapUnion::new_from),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn map_union_laws(items in maps()) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_morphism(|m: &Scores| m.key_set(), &items);
            laws::check_morphism(|m: &Scores| m.filter_keys(|k| *k < 2), &items);
            laws::check_morphism(|m: &Scores| m.map_values(|v| v.at_least(100)), &items);
            laws::check_monotone(|m: &Scores| m.len(), &items);
        }

        #[test]
        fn merge_key_delta(items in maps(), k in 0u8..5, v in any::<u8>()) {
            for m in &items {
                laws::check_delta(m, &items, |m| m.merge_key(k, Max::new(v)));
            }
        }
    }

    #[test]
    fn bottom_values_are_not_stored() {
        let m = MapUnion::new_from([(1, Max::new(0u8))]);
        assert_eq!(m, MapUnion::default());
    }
}
