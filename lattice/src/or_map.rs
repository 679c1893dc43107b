//! [`OrMap`]: an observed-remove map whose values are lattices.

use std::cmp::Ordering;

use crate::dot_store::DotStore;
use crate::vec_map::{SmallMap, VecMap};
use crate::{Atomize, Dot, IsBot, IsTop, Merge, ReplicaId, order_by_merge};

/// A map from keys to lattice values with removal: updates merge, a remove drops what it has
/// observed, and an update concurrent with a remove wins (the key stays).
///
/// An update reads the key's current value, changes it, and writes the result under a fresh
/// [`Dot`](crate::Dot) that replaces every write of that key this replica has seen. A key's
/// value is the merge of its surviving writes: concurrent updates on different replicas
/// both survive and merge. A remove concurrent with an update keeps the key with the value
/// that update wrote (which includes what it had seen before).
///
/// ```
/// use calm_lattice::{Merge, OrMap, PNCounter, ReplicaId};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut cart_a = OrMap::<String, PNCounter>::default();
/// let mut cart_b = cart_a.clone();
/// let d1 = cart_a.update(a, "apple".into(), |n| n.increment(a, 2));
/// let d2 = cart_b.update(b, "apple".into(), |n| n.increment(b, 1));
/// cart_a.merge(d2);
/// cart_b.merge(d1);
/// assert_eq!(cart_a, cart_b);
/// assert_eq!(cart_a.get("apple").unwrap().value(), 3); // a &str for String keys
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: serde::Serialize, L: serde::Serialize",
        deserialize = "K: serde::Deserialize<'de> + Ord, L: serde::Deserialize<'de>"
    ))
)]
pub struct OrMap<K, L>(DotStore<K, L>);

impl<K, L> Default for OrMap<K, L> {
    fn default() -> Self {
        OrMap(DotStore::default())
    }
}

impl<K: Ord + Clone, L: Merge + Clone + Default> OrMap<K, L> {
    /// Applies `change` to the current value of `key` (bottom if absent) as a write of
    /// `replica`; returns the delta.
    /// The closure may return anything (a mutator's delta, say); it is dropped.
    pub fn update<R>(
        &mut self,
        replica: ReplicaId,
        key: K,
        change: impl FnOnce(&mut L) -> R,
    ) -> Self {
        let mut value = self.get(&key).unwrap_or_default();
        let _ = change(&mut value);
        OrMap(self.0.write(replica, key, value))
    }

    /// Removes `key` as far as this replica has seen it; returns the delta.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Self
    where
        K: std::borrow::Borrow<Q>,
    {
        OrMap(self.0.remove(key))
    }

    /// Removes every key seen; returns the delta.
    pub fn clear(&mut self) -> Self {
        OrMap(self.0.clear())
    }

    /// The value of `key`: the merge of its surviving writes.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<L>
    where
        K: std::borrow::Borrow<Q>,
    {
        let writes = self.0.entries.get(key)?;
        Some(
            writes
                .values()
                .cloned()
                .fold(L::default(), |acc, v| acc.merge_owned(v)),
        )
    }

    /// Calls `f` with the value of `key`, as [`get`](Self::get) would return it, without
    /// cloning it when one write holds it (the usual case): for reading a value whose clone
    /// costs, or a part of it.
    ///
    /// ```
    /// use calm_lattice::{Merge, OrMap, PNCounter, ReplicaId};
    /// let (a, b) = (ReplicaId(1), ReplicaId(2));
    /// let mut map = OrMap::<String, PNCounter>::default();
    /// let mut other = map.clone();
    /// map.update(a, "x".into(), |n| n.increment(a, 2));
    /// assert_eq!(map.get_with("x", PNCounter::value), Some(2)); // one write: no clone
    /// let concurrent = other.update(b, "x".into(), |n| n.increment(b, 5));
    /// map.merge(concurrent);
    /// assert_eq!(map.get_with("x", PNCounter::value), Some(7)); // two: merged, as `get`
    /// assert_eq!(map.get_with("y", PNCounter::value), None);
    /// ```
    pub fn get_with<Q: Ord + ?Sized, R>(&self, key: &Q, f: impl FnOnce(&L) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
    {
        let writes = self.0.entries.get(key)?;
        let mut each = writes.values();
        match (each.next(), each.next()) {
            (Some(only), None) => Some(f(only)),
            _ => Some(f(&self.get(key)?)),
        }
    }

    /// The causal context: every write and removal this replica has seen.
    pub fn context(&self) -> &crate::CausalContext {
        &self.0.context
    }

    /// The surviving writes of `key`, each with the dot that made it, in dot order (what
    /// [`get`](Self::get) merges). With [`context`](Self::context) and
    /// [`from_writes`](Self::from_writes), the map's whole state.
    pub fn writes_of<Q: Ord + ?Sized>(&self, key: &Q) -> impl Iterator<Item = (Dot, &L)>
    where
        K: std::borrow::Borrow<Q>,
    {
        (self.0.entries.get(key).into_iter()).flat_map(|writes| writes.iter().map(|(d, v)| (*d, v)))
    }

    /// A map from its state: its writes (a key, the dot that wrote it, the value) and its
    /// causal context. As a decoded map is, it is made whole: dots of writes missing from
    /// the context are added to it, writes under dot counter 0 dropped, and a key written
    /// twice under one dot keeps the last value.
    ///
    /// ```
    /// use calm_lattice::{CausalContext, Dot, Merge, OrMap, ReplicaId};
    /// let mut map = OrMap::<&str, calm_lattice::Max<u8>>::default();
    /// map.update(ReplicaId(1), "x", |m| m.merge(calm_lattice::Max::new(3)));
    /// let writes = map.writes_of("x").map(|(d, v)| ("x", d, *v));
    /// assert_eq!(OrMap::from_writes(writes, map.context().clone()), map);
    /// ```
    pub fn from_writes(
        writes: impl IntoIterator<Item = (K, Dot, L)>,
        context: crate::CausalContext,
    ) -> Self {
        let mut entries: SmallMap<K, VecMap<Dot, L>> = SmallMap::default();
        for (key, dot, value) in writes {
            if dot.counter == 0 {
                continue;
            }
            match entries.get_mut(&key) {
                Some(dots) => {
                    dots.insert(dot, value);
                }
                None => {
                    entries.insert(key, VecMap::from([(dot, value)]));
                }
            }
        }
        let mut store = DotStore { entries, context };
        for dot in store
            .entries
            .values()
            .flat_map(VecMap::keys)
            .copied()
            .collect::<Vec<_>>()
        {
            store.context.insert(dot);
        }
        OrMap(store)
    }

    /// Whether `key` is present. Not monotone: a later remove can make it false.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.entries.contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.entries.keys()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether the map has no key.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }

    /// The entries in key order, with each value merged from its writes.
    pub fn iter(&self) -> impl Iterator<Item = (&K, L)> {
        self.0
            .entries
            .keys()
            .map(|k| (k, self.get(k).unwrap_or_default()))
    }
}

impl<K: Ord, L: Merge> Merge for OrMap<K, L> {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl<K: Ord + Clone, L: Merge + Clone + Eq> PartialOrd for OrMap<K, L> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        order_by_merge(self, other)
    }
}

impl<K: Ord + Clone, L: Merge + Clone> IsBot for OrMap<K, L> {
    fn is_bot(&self) -> bool {
        self.0.is_bot()
    }
}

impl<K, L> IsTop for OrMap<K, L> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<K: Ord + Clone, L: Merge + Clone> Atomize for OrMap<K, L> {
    type Atom = Self;

    /// One atom per surviving write and one per removed dot; costs as much as the number of
    /// writes ever seen.
    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0.atomize().map(OrMap)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::{PNCounter, laws};

    type Cart = OrMap<u8, PNCounter>;

    #[derive(Clone, Debug)]
    enum Op {
        Incr(usize, u8, u8),
        Decr(usize, u8, u8),
        Remove(usize, u8),
        Sync(usize, usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..3, 1u8..4).prop_map(|(r, k, n)| Op::Incr(r, k, n)),
                (0usize..3, 0u8..3, 1u8..4).prop_map(|(r, k, n)| Op::Decr(r, k, n)),
                (0usize..3, 0u8..3).prop_map(|(r, k)| Op::Remove(r, k)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Sync(a, b)),
            ],
            0..10,
        )
    }

    fn replay(ops: &[Op]) -> Vec<Cart> {
        let mut replicas = vec![Cart::default(); 3];
        for op in ops {
            match *op {
                Op::Incr(r, k, n) => {
                    let id = ReplicaId(r as u64);
                    replicas[r].update(id, k, |c| {
                        c.increment(id, u64::from(n));
                    });
                }
                Op::Decr(r, k, n) => {
                    let id = ReplicaId(r as u64);
                    replicas[r].update(id, k, |c| {
                        c.decrement(id, u64::from(n));
                    });
                }
                Op::Remove(r, k) => {
                    replicas[r].remove(&k);
                }
                Op::Sync(a, b) => {
                    let from = replicas[b].clone();
                    replicas[a].merge(from);
                }
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn or_map_laws(ops in ops()) {
            let items = replay(&ops);
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        /// A map's writes and context make the map again.
        #[test]
        fn from_writes_of_its_state_is_the_map(ops in ops()) {
            for map in replay(&ops) {
                let writes: Vec<(u8, Dot, PNCounter)> = (map.keys())
                    .flat_map(|k| map.writes_of(k).map(move |(d, v)| (*k, d, v.clone())))
                    .collect();
                prop_assert_eq!(Cart::from_writes(writes, map.context().clone()), map);
            }
        }

        #[test]
        fn or_map_deltas(ops in ops(), r in 0u64..3, k in 0u8..3) {
            let items = replay(&ops);
            let id = ReplicaId(r);
            for m in &items {
                laws::check_delta(m, &items, |m| m.update(id, k, |c| { c.increment(id, 1); }));
                laws::check_delta(m, &items, |m| m.remove(&k));
                laws::check_delta(m, &items, |m| m.clear());
            }
        }
    }

    /// The map calm's store keeps for a Redis hash: each field the bytes last set and the
    /// increments made since (a set replaces both).
    type Hash = OrMap<u8, crate::Pair<crate::Lww<u8>, PNCounter>>;

    #[derive(Clone, Debug)]
    enum HashOp {
        Set(usize, u8, u8),
        Incr(usize, u8, u8),
        Remove(usize, u8),
        Sync(usize, usize),
    }

    fn hash_ops() -> impl Strategy<Value = Vec<HashOp>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..3, 0u8..4).prop_map(|(r, k, v)| HashOp::Set(r, k, v)),
                (0usize..3, 0u8..3, 1u8..4).prop_map(|(r, k, n)| HashOp::Incr(r, k, n)),
                (0usize..3, 0u8..3).prop_map(|(r, k)| HashOp::Remove(r, k)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| HashOp::Sync(a, b)),
            ],
            0..10,
        )
    }

    fn replay_hash(ops: &[HashOp]) -> Vec<Hash> {
        let mut replicas = vec![Hash::default(); 3];
        for (time, op) in ops.iter().enumerate() {
            match *op {
                HashOp::Set(r, k, v) => {
                    let id = ReplicaId(r as u64);
                    let stamp = crate::Stamp::new(crate::Hlc::new(time as u64, 0), id);
                    replicas[r].update(id, k, |f| {
                        *f = crate::Pair::new(crate::Lww::new(stamp, v), PNCounter::default());
                    });
                }
                HashOp::Incr(r, k, n) => {
                    let id = ReplicaId(r as u64);
                    replicas[r].update(id, k, |f| {
                        f.b.increment(id, u64::from(n));
                    });
                }
                HashOp::Remove(r, k) => {
                    replicas[r].remove(&k);
                }
                HashOp::Sync(a, b) => {
                    let from = replicas[b].clone();
                    replicas[a].merge(from);
                }
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn hash_of_counting_registers_laws(ops in hash_ops(), r in 0u64..3, k in 0u8..3) {
            let items = replay_hash(&ops);
            laws::check_all(&items);
            laws::check_atomize(&items);
            let id = ReplicaId(r);
            for m in &items {
                laws::check_delta(m, &items, |m| m.update(id, k, |f| { f.b.increment(id, 1); }));
                laws::check_delta(m, &items, |m| m.remove(&k));
            }
        }
    }

    #[test]
    fn remove_wins_over_what_it_observed() {
        let a = ReplicaId(1);
        let mut m = Cart::default();
        m.update(a, 1, |c| {
            c.increment(a, 5);
        });
        let stale = m.clone();
        m.remove(&1);
        assert!(!m.clone().merge_owned(stale).contains_key(&1));
    }
}
