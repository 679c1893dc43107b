//! A map from keys to entries laid out densely: the entries in fixed-size pages, found
//! through a table of 4-byte positions.
//!
//! A hash map keeps its entries in its table, which runs 45–87% full and doubles when it
//! fills: with an entry of over a hundred bytes per key (a tier's slot), a key paid for one
//! and a half to two slots, and every doubling allocated the table anew beside the old one,
//! which the allocator then kept. Here the table holds only positions (4 bytes and a control
//! byte a bucket, so its spare room and its doublings cost little), and the entries sit one
//! after another in pages of [`PAGE`] entries that never move or grow once full. Removing
//! an entry moves the last one into its place, so the pages stay dense and shrink from the
//! end.
//!
//! Positions are 32 bits: a worker holds fewer than 2^32 keys (each costs over a hundred
//! bytes, so that is hundreds of gigabytes per worker).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Entries per page. The first page grows as a vector does, up to this; every later page
/// is allocated at this size, once.
const PAGE: usize = 1024;

/// Keys up to this long are held in the entry itself.
const INLINE: usize = 22;

/// A key as the map holds it: a short key (most are) in the entry itself, a longer one in
/// an allocation of its own (which costs its bytes rounded up, and the allocator's header:
/// 32 bytes for a key of 16). 24 bytes in the entry either way.
#[derive(Clone)]
pub(crate) enum Key {
    /// Up to [`INLINE`] bytes: the first `len` of `bytes`.
    Inline {
        /// How many of `bytes` are the key.
        len: u8,
        /// The key, then zeros.
        bytes: [u8; INLINE],
    },
    /// A longer key.
    Heap(Box<[u8]>),
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(key.into()),
        }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(key) => key,
        }
    }
}

impl From<Key> for bytes::Bytes {
    fn from(key: Key) -> bytes::Bytes {
        match key {
            Key::Inline { .. } => bytes::Bytes::copy_from_slice(&key),
            Key::Heap(key) => key.into(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// The map: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct DenseMap<V> {
    /// Positions of the entries, by the hash of their key. SipHash with a random key, as
    /// `std`'s maps use: keys come from the network.
    index: HashTable<u32>,
    /// The entries: every page but the last holds exactly [`PAGE`].
    pages: Vec<Vec<(Key, V)>>,
    len: usize,
    hasher: RandomState,
}

/// The entry at `pos`.
fn at<V>(pages: &[Vec<(Key, V)>], pos: u32) -> &(Key, V) {
    let pos = pos as usize;
    &pages[pos / PAGE][pos % PAGE]
}

fn at_mut<V>(pages: &mut [Vec<(Key, V)>], pos: u32) -> &mut (Key, V) {
    let pos = pos as usize;
    &mut pages[pos / PAGE][pos % PAGE]
}

impl<V> DenseMap<V> {
    /// An empty map.
    pub(crate) fn new() -> DenseMap<V> {
        DenseMap {
            index: HashTable::new(),
            pages: Vec::new(),
            len: 0,
            hasher: RandomState::new(),
        }
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The position of `key`'s entry.
    fn position(&self, key: &[u8]) -> Option<u32> {
        let pages = &self.pages;
        (self.index)
            .find(self.hash(key), |&pos| *at(pages, pos).0 == *key)
            .copied()
    }

    /// Whether `key` has an entry.
    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&V> {
        let pos = self.position(key)?;
        Some(&at(&self.pages, pos).1)
    }

    /// The value of `key`, to change.
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let pos = self.position(key)?;
        Some(&mut at_mut(&mut self.pages, pos).1)
    }

    /// Sets `key`'s value; the value it replaces, if it had one.
    pub(crate) fn insert(&mut self, key: Key, value: V) -> Option<V> {
        match self.find_or_place(&key) {
            Ok(pos) => Some(std::mem::replace(
                &mut at_mut(&mut self.pages, pos).1,
                value,
            )),
            Err(_) => {
                self.push((key, value));
                None
            }
        }
    }

    /// The value of `key`, to change; `value()` under `owned()` (the key, owned) first if
    /// it has none.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: &[u8],
        owned: impl FnOnce() -> Key,
        value: impl FnOnce() -> V,
    ) -> &mut V {
        let pos = match self.find_or_place(key) {
            Ok(pos) => pos,
            Err(pos) => {
                self.push((owned(), value()));
                pos
            }
        };
        &mut at_mut(&mut self.pages, pos).1
    }

    /// The position of `key`'s entry, or (`Err`) the position its entry is to take, already
    /// in the index: the caller pushes the entry. One lookup, the key hashed once.
    fn find_or_place(&mut self, key: &[u8]) -> Result<u32, u32> {
        let hash = self.hash(key);
        let next = u32::try_from(self.len).expect("fewer than 2^32 keys in one map");
        let (pages, hasher) = (&self.pages, &self.hasher);
        match (self.index).entry(
            hash,
            |&pos| *at(pages, pos).0 == *key,
            |&pos| hasher.hash_one(&*at(pages, pos).0),
        ) {
            Entry::Occupied(found) => Ok(*found.get()),
            Entry::Vacant(vacant) => {
                // `push` puts the entry at position `len`.
                vacant.insert(next);
                Err(next)
            }
        }
    }

    /// Appends an entry at position `len`.
    fn push(&mut self, entry: (Key, V)) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => {
                if page.len() == page.capacity() {
                    // Grow as a vector would, but never past a page.
                    let to = (page.capacity() * 2).clamp(4, PAGE);
                    page.reserve_exact(to - page.len());
                }
                page.push(entry);
            }
            _ => {
                let mut page = Vec::with_capacity(if self.pages.is_empty() { 4 } else { PAGE });
                page.push(entry);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    /// Takes `key`'s entry out of the map.
    pub(crate) fn remove_entry(&mut self, key: &[u8]) -> Option<(Key, V)> {
        let hash = self.hash(key);
        let pages = &self.pages;
        let found = (self.index).find_entry(hash, |&pos| *at(pages, pos).0 == *key);
        let pos = found.ok()?.remove().0;
        let last = u32::try_from(self.len - 1).expect("positions are 32-bit");
        let tail = self.pop();
        let removed = if pos == last {
            tail
        } else {
            // The last entry moves into the hole; its position in the index follows it.
            let moved = self.hash(&tail.0);
            *(self.index)
                .find_mut(moved, |&p| p == last)
                .expect("every entry has its position in the index") = pos;
            std::mem::replace(at_mut(&mut self.pages, pos), tail)
        };
        if self.index.capacity() > 64 && self.len < self.index.capacity() / 4 {
            // Most keys are gone: give the index's room back (the pages already were).
            let (pages, hasher) = (&self.pages, &self.hasher);
            (self.index).shrink_to(self.len, |&p| hasher.hash_one(&*at(pages, p).0));
        }
        Some(removed)
    }

    /// Takes the last entry off its page (dropping the page once empty).
    fn pop(&mut self) -> (Key, V) {
        let page = self.pages.last_mut().expect("a map with entries has pages");
        let entry = page.pop().expect("pages are never left empty");
        if page.is_empty() {
            self.pages.pop();
        }
        self.len -= 1;
        entry
    }

    /// Removes `key`; its value, if it had one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.remove_entry(key).map(|(_, v)| v)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        fn split<V>((key, value): &(Key, V)) -> (&Key, &V) {
            (key, value)
        }
        self.pages.iter().flatten().map(split)
    }

    /// Every key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, to change.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.pages.iter_mut().flatten().map(|(_, v)| v)
    }

    /// The bytes one entry costs besides what its key and value allocate: its place in a
    /// page, and its position in the index with the index's spare room (at most 7/8 full,
    /// half full just after doubling).
    pub(crate) const fn entry_bytes() -> usize {
        std::mem::size_of::<(Key, V)>() + (std::mem::size_of::<u32>() + 1) * 3 / 2
    }
}

/// The entries of a [`DenseMap`], page by page.
pub(crate) type Iter<'a, V> = std::iter::Map<
    std::iter::Flatten<std::slice::Iter<'a, Vec<(Key, V)>>>,
    fn(&'a (Key, V)) -> (&'a Key, &'a V),
>;

impl<'a, V> IntoIterator for &'a DenseMap<V> {
    type Item = (&'a Key, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u16, u32),
        /// `get_or_insert_with`: the value becomes `v` if absent, then grows by one.
        Bump(u16, u32),
        Remove(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Keys from a small range, so removes and overwrites find their keys.
        prop_oneof![
            3 => (0..3000u16, any::<u32>()).prop_map(|(k, v)| Step::Insert(k, v)),
            2 => (0..3000u16, any::<u32>()).prop_map(|(k, v)| Step::Bump(k, v)),
            2 => (0..3000u16).prop_map(Step::Remove),
        ]
    }

    /// Keys short and long (held in the entry and on their own).
    fn key(k: u16) -> Key {
        let key = if k.is_multiple_of(3) {
            format!("a key long enough not to fit in its entry: {k}")
        } else {
            format!("key:{k}")
        };
        Key::from(key.as_bytes())
    }

    /// Checks the map against `HashMap` after every step: lookups, lengths, iteration.
    fn check(steps: &[Step]) {
        let mut dense = DenseMap::new();
        let mut model: HashMap<Vec<u8>, u32> = HashMap::new();
        for step in steps {
            match *step {
                Step::Insert(k, v) => {
                    assert_eq!(dense.insert(key(k), v), model.insert(key(k).to_vec(), v));
                }
                Step::Bump(k, v) => {
                    let slot = dense.get_or_insert_with(&key(k), || key(k), || v);
                    *slot = slot.wrapping_add(1);
                    let slot = model.entry(key(k).to_vec()).or_insert(v);
                    *slot = slot.wrapping_add(1);
                }
                Step::Remove(k) => {
                    let removed = dense.remove_entry(&key(k));
                    let removed = removed.map(|(k, v)| (k.to_vec(), v));
                    assert_eq!(removed, model.remove_entry(&key(k).to_vec()));
                }
            }
            assert_eq!(dense.len(), model.len());
            assert_eq!(dense.is_empty(), model.is_empty());
        }
        for (k, v) in &model {
            assert_eq!(dense.get(k), Some(v));
            assert!(dense.contains_key(k));
        }
        let mut listed: Vec<(Vec<u8>, u32)> = dense.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        listed.sort();
        let mut expected: Vec<(Vec<u8>, u32)> = model.into_iter().collect();
        expected.sort();
        assert_eq!(listed, expected);
        // Every page but the last is full; none is empty.
        let pages = &dense.pages;
        for (i, page) in pages.iter().enumerate() {
            assert!(!page.is_empty());
            assert!(page.capacity() <= PAGE, "a page never grows past PAGE");
            if i + 1 < pages.len() {
                assert_eq!(page.len(), PAGE);
            }
        }
    }

    proptest! {
        #[test]
        fn behaves_as_a_hash_map(steps in prop::collection::vec(step(), 0..6000)) {
            check(&steps);
        }
    }

    #[test]
    fn fills_pages_then_empties_them_and_gives_the_index_back() {
        let mut dense = DenseMap::new();
        let n = 5 * PAGE + 17;
        for i in 0..n {
            dense.insert(Key::from(format!("k{i}").as_bytes()), i);
        }
        assert_eq!(dense.pages.len(), 6);
        for v in dense.values_mut() {
            *v += 1;
        }
        for i in 0..n {
            assert_eq!(dense.get(format!("k{i}").as_bytes()), Some(&(i + 1)));
        }
        let grown = dense.index.capacity();
        for i in 0..n - 10 {
            assert_eq!(dense.remove(format!("k{i}").as_bytes()), Some(i + 1));
        }
        assert_eq!(dense.len(), 10);
        assert_eq!(dense.pages.len(), 1);
        assert!(dense.index.capacity() < grown / 8, "the index shrank");
        for i in n - 10..n {
            assert_eq!(dense.get(format!("k{i}").as_bytes()), Some(&(i + 1)));
        }
        assert_eq!(dense.keys().count(), 10);
    }

    #[test]
    fn keys_short_and_long_read_back_and_order_as_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        let lengths = [0, 1, INLINE - 1, INLINE, INLINE + 1, 300];
        let keys: Vec<Vec<u8>> = lengths.iter().map(|&n| vec![b'k'; n]).collect();
        for key in &keys {
            let held = Key::from(&key[..]);
            assert_eq!(&*held, &key[..]);
            assert_eq!(matches!(held, Key::Inline { .. }), key.len() <= INLINE);
            assert_eq!(bytes::Bytes::from(held.clone()), &key[..]);
            assert_eq!(
                format!("{held:?}"),
                format!("{:?}", String::from_utf8_lossy(key))
            );
        }
        let mut held: Vec<Key> = keys.iter().rev().map(|k| Key::from(&k[..])).collect();
        held.sort();
        assert_eq!(held.iter().map(|k| k.to_vec()).collect::<Vec<_>>(), keys);
        // A short key that is a prefix of a long one, with zeros after it, stays apart.
        assert_ne!(Key::from(&b"k"[..]), Key::from(&b"k\0"[..]));
    }
}
