//! [`VecMap`]: an ordered map in one sorted vector, for the small maps every value carries
//! (a counter's replicas, a key's concurrent writes).
//!
//! A `BTreeMap` allocates a whole node (room for 11 entries) for its first entry: a counter
//! with one writer paid for about 200 bytes per map where 16 are used, and a store holds one
//! such map per key. A sorted vector grows one entry at a time while small, and encodes
//! exactly as a `BTreeMap` does (a map in key order), so stored and replicated values are
//! unchanged. Lookups are binary searches; inserts shift the entries after them, so it is
//! meant for maps of a few entries (per replica, per concurrent write), not per member.

use std::borrow::Borrow;
use std::collections::BTreeMap;

/// An ordered map kept as a vector of entries sorted by key (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VecMap<K, V>(Vec<(K, V)>);

/// Maps up to this many entries grow one entry at a time (no spare room), up to four times
/// as many by a quarter, larger ones double as a vector does.
const EXACT_UP_TO: usize = 8;

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        VecMap(Vec::new())
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    fn insert_at(&mut self, at: usize, key: K, value: V) {
        let len = self.0.len();
        if len == self.0.capacity() && len < EXACT_UP_TO {
            self.0.reserve_exact(1);
        } else if len == self.0.capacity() && len < 4 * EXACT_UP_TO {
            self.0.reserve_exact(len / 4);
        }
        self.0.insert(at, (key, value));
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.insert_at(i, key, value);
                None
            }
        }
    }

    /// The value of `key`, set to `make()` first if it had none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, key, make());
                i
            }
        };
        &mut self.0[i].1
    }

    /// Takes `key` out; returns its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        let (_, v) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(v)
    }

    /// Keeps the entries `keep` accepts (it may change their values), in key order.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
        if self.0.is_empty() {
            self.0 = Vec::new();
        } else if self.0.len() <= EXACT_UP_TO {
            self.0.shrink_to_fit();
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// The values in key order, to change.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// The keys in order, taken.
    pub fn into_keys(self) -> impl DoubleEndedIterator<Item = K> + ExactSizeIterator {
        self.0.into_iter().map(|(k, _)| k)
    }

    /// The values in key order, taken.
    pub fn into_values(self) -> impl DoubleEndedIterator<Item = V> + ExactSizeIterator {
        self.0.into_iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// Later entries of a key replace earlier ones, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: equal keys keep their order, and the last of each is kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        VecMap(out)
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for VecMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for VecMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(feature = "serde")]
impl<'de, K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>> serde::Deserialize<'de>
    for VecMap<K, V>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>>
            serde::de::Visitor<'de> for Visit<K, V>
        {
            type Value = VecMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                // The length comes from the input: reserve only a little of it up front.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    proptest! {
        /// Any sequence of inserts, removals and retains leaves the same entries, in the
        /// same order, as in a `BTreeMap`.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec((0u8..4, 0u8..12, 0u16..30_000), 0..60)) {
            let mut v = VecMap::new();
            let mut b = BTreeMap::new();
            for (op, k, x) in ops {
                match op {
                    0 => prop_assert_eq!(v.insert(k, x), b.insert(k, x)),
                    1 => prop_assert_eq!(v.remove(&k), b.remove(&k)),
                    2 => {
                        let x = x / 2;
                        *v.get_or_insert_with(k, || x) += 1;
                        *b.entry(k).or_insert(x) += 1;
                    }
                    _ => {
                        v.retain(|key, val| (u16::from(*key) + *val % 7) % 3 != 0);
                        b.retain(|key, val| (u16::from(*key) + *val % 7) % 3 != 0);
                    }
                }
                prop_assert_eq!(v.get(&k), b.get(&k));
                prop_assert_eq!(v.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            }
            let collected: VecMap<u8, u16> = b.clone().into_iter().rev().collect();
            prop_assert_eq!(collected.into_iter().collect::<Vec<_>>(), b.into_iter().collect::<Vec<_>>());
        }
    }

    /// It encodes byte for byte as a `BTreeMap` does, so stored values keep their form.
    #[cfg(feature = "serde")]
    #[test]
    fn encodes_as_a_btree_map() {
        let b: BTreeMap<u64, u64> = [(3, 30), (1, 10), (2, 20)].into();
        let v: VecMap<u64, u64> = [(3, 30), (1, 10), (2, 20)].into();
        let config = bincode::config::standard();
        let eb = bincode::serde::encode_to_vec(&b, config).unwrap();
        let ev = bincode::serde::encode_to_vec(&v, config).unwrap();
        assert_eq!(eb, ev);
        let (back, _): (VecMap<u64, u64>, usize) =
            bincode::serde::decode_from_slice(&eb, config).unwrap();
        assert_eq!(back, v);
    }
}

/// An ordered map that is a [`VecMap`] while it holds at most [`SMALL`] entries and a
/// `BTreeMap` beyond: the keys of an observed-remove set or map are often one (a counter's
/// single cell) or a few, and sometimes millions.
#[derive(Clone)]
pub enum SmallMap<K, V> {
    /// Few entries, in one vector.
    Small(VecMap<K, V>),
    /// Many entries.
    Large(BTreeMap<K, V>),
}

/// The most entries a [`SmallMap`] keeps in a vector.
pub const SMALL: usize = 16;

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Small(VecMap::default())
    }
}

/// The entries of a [`SmallMap`], in key order.
pub enum Iter<'a, K, V> {
    /// Of a small map.
    Small(std::slice::Iter<'a, (K, V)>),
    /// Of a large one.
    Large(std::collections::btree_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(i) => i.size_hint(),
            Iter::Large(i) => i.size_hint(),
        }
    }
}

/// The entries of a [`SmallMap`], taken, in key order.
pub enum IntoIter<K, V> {
    /// Of a small map.
    Small(std::vec::IntoIter<(K, V)>),
    /// Of a large one.
    Large(std::collections::btree_map::IntoIter<K, V>),
}

impl<K, V> Iterator for IntoIter<K, V> {
    type Item = (K, V);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            IntoIter::Small(i) => i.next(),
            IntoIter::Large(i) => i.next(),
        }
    }
}

impl<K, V> SmallMap<K, V> {
    /// The number of entries.
    pub fn len(&self) -> usize {
        match self {
            SmallMap::Small(m) => m.0.len(),
            SmallMap::Large(m) => m.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        match self {
            SmallMap::Small(m) => Iter::Small(m.0.iter()),
            SmallMap::Large(m) => Iter::Large(m.iter()),
        }
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Small(m) => m.get(key),
            SmallMap::Large(m) => m.get(key),
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Small(m) if m.len() < SMALL || m.contains_key(&key) => m.insert(key, value),
            SmallMap::Small(m) => {
                let mut large: BTreeMap<K, V> = std::mem::take(m).into_iter().collect();
                large.insert(key, value);
                *self = SmallMap::Large(large);
                None
            }
            SmallMap::Large(m) => m.insert(key, value),
        }
    }

    /// Takes `key` out; returns its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Small(m) => m.remove(key),
            SmallMap::Large(m) => m.remove(key),
        }
    }

    /// Keeps the entries `keep` accepts (it may change their values), in key order.
    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        match self {
            SmallMap::Small(m) => m.retain(keep),
            SmallMap::Large(m) => m.retain(keep),
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// The values in key order, taken.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.into_iter().map(|(_, v)| v)
    }
}

impl<K, V> IntoIterator for SmallMap<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;
    fn into_iter(self) -> IntoIter<K, V> {
        match self {
            SmallMap::Small(m) => IntoIter::Small(m.0.into_iter()),
            SmallMap::Large(m) => IntoIter::Large(m.into_iter()),
        }
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SmallMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let small: VecMap<K, V> = iter.into_iter().collect();
        if small.len() <= SMALL {
            SmallMap::Small(small)
        } else {
            SmallMap::Large(small.into_iter().collect())
        }
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SmallMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

/// Equal when they hold the same entries, whichever form each is in.
impl<K: PartialEq, V: PartialEq> PartialEq for SmallMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: Eq, V: Eq> Eq for SmallMap<K, V> {}

impl<K: std::hash::Hash, V: std::hash::Hash> std::hash::Hash for SmallMap<K, V> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for entry in self.iter() {
            entry.hash(state);
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for SmallMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for SmallMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

#[cfg(feature = "serde")]
impl<'de, K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>> serde::Deserialize<'de>
    for SmallMap<K, V>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let small = VecMap::<K, V>::deserialize(d)?;
        Ok(if small.len() <= SMALL {
            SmallMap::Small(small)
        } else {
            SmallMap::Large(small.into_iter().collect())
        })
    }
}

#[cfg(test)]
mod small_test {
    use super::*;
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    proptest! {
        /// Across the switch from a vector to a tree (and back out through removals), it
        /// holds and orders entries as a `BTreeMap` does, and equal contents are equal
        /// values with equal encodings whichever form each is in.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec((0u8..3, 0u8..40, any::<u16>()), 0..120)) {
            let mut s = SmallMap::default();
            let mut b = BTreeMap::new();
            for (op, k, x) in ops {
                match op {
                    0 | 1 => prop_assert_eq!(s.insert(k, x), b.insert(k, x)),
                    _ => prop_assert_eq!(s.remove(&k), b.remove(&k)),
                }
                prop_assert_eq!(s.get(&k), b.get(&k));
                prop_assert_eq!(s.len(), b.len());
                prop_assert!(s.iter().eq(b.iter()));
            }
            let rebuilt: SmallMap<u8, u16> = b.clone().into_iter().collect();
            prop_assert_eq!(&rebuilt, &s);
            #[cfg(feature = "serde")]
            {
                let config = bincode::config::standard();
                let es = bincode::serde::encode_to_vec(&s, config).unwrap();
                prop_assert_eq!(&es, &bincode::serde::encode_to_vec(&b, config).unwrap());
                prop_assert_eq!(&es, &bincode::serde::encode_to_vec(&rebuilt, config).unwrap());
            }
            prop_assert!(s.into_iter().eq(b.into_iter()));
        }
    }
}
