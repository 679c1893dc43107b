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
/// A map of one entry (most of them: a key's single write, a counter's single writer)
/// holds it in place, with no allocation: for entries of up to 16 bytes the map is no
/// larger for it (24 bytes, a vector's size).
#[derive(Clone)]
pub struct VecMap<K, V>(Slots<(K, V)>);

/// The entries of a [`VecMap`]: one in place, or any other number in a vector (never
/// exactly one, so each content has one form).
#[derive(Clone)]
enum Slots<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Slots<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Slots::One(one) => std::slice::from_ref(one),
            Slots::Many(many) => many,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Slots::One(one) => std::slice::from_mut(one),
            Slots::Many(many) => many,
        }
    }

    /// In the one form that fits `entries`.
    fn from_vec(mut entries: Vec<T>) -> Slots<T> {
        match entries.len() {
            1 => Slots::One(entries.pop().expect("one entry")),
            0 => Slots::Many(Vec::new()),
            _ => {
                entries.shrink_to_fit();
                Slots::Many(entries)
            }
        }
    }

    /// Back to the one form that fits, after entries were taken out of a vector.
    fn settle(&mut self) {
        if let Slots::Many(many) = self {
            match many.len() {
                0 => *many = Vec::new(),
                1 => *self = Slots::from_vec(std::mem::take(many)),
                n if n <= EXACT_UP_TO => many.shrink_to_fit(),
                _ => {}
            }
        }
    }
}

/// Maps up to this many entries grow one entry at a time (no spare room), up to four times
/// as many by a quarter, larger ones double as a vector does.
const EXACT_UP_TO: usize = 8;

/// Inserts `entry` at `at`, growing `entries` by the policy above.
fn insert_at<T>(entries: &mut Vec<T>, at: usize, entry: T) {
    let len = entries.len();
    if len == entries.capacity() && len < EXACT_UP_TO {
        entries.reserve_exact(1);
    } else if len == entries.capacity() && len < 4 * EXACT_UP_TO {
        entries.reserve_exact(len / 4);
    }
    entries.insert(at, entry);
}

/// Where `key` is in `entries` (sorted by key), or where it would go.
fn find<K: Borrow<Q>, V, Q: Ord + ?Sized>(entries: &[(K, V)], key: &Q) -> Result<usize, usize> {
    entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
}

/// `entries` sorted by key, the last of each key kept (as a `BTreeMap` built from them).
fn sorted<K: Ord, V>(entries: impl IntoIterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut entries: Vec<(K, V)> = entries.into_iter().collect();
    // Stable: equal keys keep their order, and the last of each is kept.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(K, V)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = v,
            _ => out.push((k, v)),
        }
    }
    out
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Slots::Many(Vec::new()))
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for VecMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl<K: Eq, V: Eq> Eq for VecMap<K, V> {}

impl<K: PartialOrd, V: PartialOrd> PartialOrd for VecMap<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.0.as_slice().partial_cmp(other.0.as_slice())
    }
}

impl<K: Ord, V: Ord> Ord for VecMap<K, V> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_slice().cmp(other.0.as_slice())
    }
}

impl<K: std::hash::Hash, V: std::hash::Hash> std::hash::Hash for VecMap<K, V> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_slice().hash(state);
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VecMap").field(&self.0.as_slice()).finish()
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        VecMap::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        find(self.0.as_slice(), key)
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0.as_slice()[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0.as_mut_slice()[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    fn insert_at(&mut self, at: usize, key: K, value: V) {
        let entries = match std::mem::replace(&mut self.0, Slots::Many(Vec::new())) {
            Slots::Many(many) if many.is_empty() => {
                self.0 = Slots::One((key, value));
                return;
            }
            Slots::One(one) => {
                let mut two = Vec::with_capacity(2);
                two.push(one);
                two
            }
            Slots::Many(many) => many,
        };
        self.0 = Slots::Many(entries);
        let Slots::Many(entries) = &mut self.0 else {
            unreachable!("just set")
        };
        insert_at(entries, at, (key, value));
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0.as_mut_slice()[i].1, value)),
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
        &mut self.0.as_mut_slice()[i].1
    }

    /// Takes `key` out; returns its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        let (_, v) = match &mut self.0 {
            Slots::Many(many) => many.remove(i),
            Slots::One(_) => match std::mem::replace(&mut self.0, Slots::Many(Vec::new())) {
                Slots::One(one) => one,
                Slots::Many(_) => unreachable!("matched one"),
            },
        };
        self.0.settle();
        Some(v)
    }

    /// Keeps the entries `keep` accepts (it may change their values), in key order.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        match &mut self.0 {
            Slots::Many(many) => many.retain_mut(|(k, v)| keep(k, v)),
            Slots::One((k, v)) => {
                if !keep(k, v) {
                    self.0 = Slots::Many(Vec::new());
                }
            }
        }
        self.0.settle();
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.as_slice().len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.as_slice().iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.as_slice().iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.as_slice().iter().map(|(_, v)| v)
    }

    /// The values in key order, to change.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.0.as_mut_slice().iter_mut().map(|(_, v)| v)
    }

    /// The keys in order, taken.
    pub fn into_keys(self) -> impl DoubleEndedIterator<Item = K> + ExactSizeIterator {
        self.into_iter().map(|(k, _)| k)
    }

    /// The values in key order, taken.
    pub fn into_values(self) -> impl DoubleEndedIterator<Item = V> + ExactSizeIterator {
        self.into_iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// Later entries of a key replace earlier ones, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        VecMap(Slots::from_vec(sorted(iter)))
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for VecMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

/// The entries of a [`VecMap`], taken, in key order.
pub enum IntoEntries<K, V> {
    /// Of a map of one entry.
    One(std::option::IntoIter<(K, V)>),
    /// Of any other.
    Many(std::vec::IntoIter<(K, V)>),
}

impl<K, V> Iterator for IntoEntries<K, V> {
    type Item = (K, V);
    fn next(&mut self) -> Option<(K, V)> {
        match self {
            IntoEntries::One(i) => i.next(),
            IntoEntries::Many(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IntoEntries::One(i) => i.size_hint(),
            IntoEntries::Many(i) => i.size_hint(),
        }
    }
}

impl<K, V> DoubleEndedIterator for IntoEntries<K, V> {
    fn next_back(&mut self) -> Option<(K, V)> {
        match self {
            IntoEntries::One(i) => i.next_back(),
            IntoEntries::Many(i) => i.next_back(),
        }
    }
}

impl<K, V> ExactSizeIterator for IntoEntries<K, V> {}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = IntoEntries<K, V>;
    fn into_iter(self) -> Self::IntoIter {
        match self.0 {
            Slots::One(one) => IntoEntries::One(Some(one).into_iter()),
            Slots::Many(many) => IntoEntries::Many(many.into_iter()),
        }
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.as_slice().iter().map(|(k, v)| (k, v))
    }
}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for VecMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.as_slice().iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(feature = "serde")]
impl<'de, K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>> serde::Deserialize<'de>
    for VecMap<K, V>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Sorted(entries) = Sorted::deserialize(d)?;
        Ok(VecMap(Slots::from_vec(entries)))
    }
}

/// A [`SmallMap`]'s entries while few: a vector sorted by key. Never in place as a
/// [`VecMap`]'s single entry is: a map of a set's members (each with its writes) would grow
/// every value that holds one.
#[derive(Clone)]
pub struct Sorted<K, V>(Vec<(K, V)>);

impl<K, V> Default for Sorted<K, V> {
    fn default() -> Self {
        Sorted(Vec::new())
    }
}

impl<K: Ord, V> Sorted<K, V> {
    fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        find(&self.0, key).ok().map(|i| &self.0[i].1)
    }

    fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        find(&self.0, key).ok().map(|i| &mut self.0[i].1)
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match find(&self.0, &key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                insert_at(&mut self.0, i, (key, value));
                None
            }
        }
    }

    fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = find(&self.0, key).ok()?;
        let (_, v) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(v)
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
        if self.0.is_empty() {
            self.0 = Vec::new();
        } else if self.0.len() <= EXACT_UP_TO {
            self.0.shrink_to_fit();
        }
    }
}

#[cfg(feature = "serde")]
impl<'de, K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>> serde::Deserialize<'de>
    for Sorted<K, V>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>>
            serde::de::Visitor<'de> for Visit<K, V>
        {
            type Value = Sorted<K, V>;
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
                let mut entries = sorted(entries);
                entries.shrink_to_fit();
                Ok(Sorted(entries))
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

    /// A map of one entry holds it in place, and each content has one form (so equal maps
    /// are equal whatever made them); a map of small entries is a vector's size.
    #[test]
    fn one_entry_in_place_and_one_form_per_content() {
        assert_eq!(std::mem::size_of::<VecMap<u64, u64>>(), 24);
        assert_eq!(std::mem::size_of::<VecMap<crate::Dot, ()>>(), 24);
        assert_eq!(std::mem::size_of::<SmallMap<u64, u64>>(), 24);
        let mut m = VecMap::new();
        assert!(matches!(m.0, Slots::Many(ref v) if v.capacity() == 0));
        m.insert(2u8, 'b');
        assert!(matches!(m.0, Slots::One(_)));
        m.insert(1, 'a');
        assert!(matches!(m.0, Slots::Many(ref v) if v.len() == 2));
        assert_eq!(m.remove(&1), Some('a'));
        assert!(matches!(m.0, Slots::One((2, 'b'))));
        m.insert(3, 'c');
        m.retain(|k, _| *k == 3);
        assert!(matches!(m.0, Slots::One((3, 'c'))));
        m.retain(|_, _| false);
        assert!(matches!(m.0, Slots::Many(ref v) if v.capacity() == 0));
        let one: VecMap<u8, char> = [(5, 'x'), (5, 'y')].into();
        assert!(matches!(one.0, Slots::One((5, 'y'))));
        assert_eq!(one.into_iter().rev().collect::<Vec<_>>(), [(5, 'y')]);
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
    Small(Sorted<K, V>),
    /// Many entries (boxed, so the map takes no more room than its small form: it sits in
    /// every value of a store).
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer keeps the map as small as its small form"
    )]
    Large(Box<BTreeMap<K, V>>),
}

/// The most entries a [`SmallMap`] keeps in a vector.
pub const SMALL: usize = 16;

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Small(Sorted::default())
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

    /// The value of `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Small(m) => m.get_mut(key),
            SmallMap::Large(m) => m.get_mut(key),
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
            SmallMap::Small(m) if m.0.len() < SMALL || m.get(&key).is_some() => {
                m.insert(key, value)
            }
            SmallMap::Small(m) => {
                let mut large: BTreeMap<K, V> = std::mem::take(&mut m.0).into_iter().collect();
                large.insert(key, value);
                *self = SmallMap::Large(Box::new(large));
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
            SmallMap::Large(m) => IntoIter::Large((*m).into_iter()),
        }
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SmallMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut small = sorted(iter);
        if small.len() <= SMALL {
            small.shrink_to_fit();
            SmallMap::Small(Sorted(small))
        } else {
            SmallMap::Large(Box::new(small.into_iter().collect()))
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
        let small = Sorted::<K, V>::deserialize(d)?;
        Ok(if small.0.len() <= SMALL {
            SmallMap::Small(small)
        } else {
            SmallMap::Large(Box::new(small.0.into_iter().collect()))
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
