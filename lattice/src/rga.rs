//! [`Rga`]: a replicated growable array, the sequence CRDT behind calm's lists.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::{Atomize, IsBot, IsTop, Merge, ReplicaId, order_by_merge};

/// The id of an element of an [`Rga`]: a Lamport counter (greater than every counter its
/// replica had seen when it inserted the element) and the replica that inserted it. Ids are
/// unique and totally ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ElemId {
    /// The Lamport counter.
    pub counter: u64,
    /// The inserting replica.
    pub replica: ReplicaId,
}

/// Where an element was inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Anchor {
    /// At the front: among elements inserted there, the newest comes first.
    Front,
    /// Right after another element: among elements inserted after the same one, the newest
    /// comes first.
    After(ElemId),
    /// At the back: among elements inserted there, the newest comes last.
    Back,
}

/// One element: where it was inserted, its value, and whether it was removed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Elem<T> {
    /// Where it was inserted.
    pub anchor: Anchor,
    /// Its value.
    pub value: T,
    /// Removed (a tombstone: it stays, so that what was inserted after it keeps its place).
    pub removed: bool,
}

/// A sequence that replicas edit concurrently: inserts at the front, at the back or after
/// an element, and removals, in any order and any number of times, converge.
///
/// Every element ever inserted is kept (removed ones as tombstones) under a unique
/// [`ElemId`]; merge is the union of the elements, with "removed" winning. The order is a
/// tree walk: the elements inserted at the front (newest first), each followed by the
/// elements inserted after it (newest first, recursively), then those inserted at the back
/// (oldest first), each followed likewise. So two replicas that insert at the same place at
/// once both keep their element, in the order of their ids.
///
/// ```
/// use calm_lattice::{Merge, Rga, ReplicaId};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = Rga::default();
/// x.push_back(a, "milk");
/// let mut y = x.clone();
/// x.push_back(a, "eggs");
/// y.push_front(b, "bread");
/// x.merge(y.clone());
/// y.merge(x.clone());
/// assert_eq!(x, y);
/// assert_eq!(x.values().collect::<Vec<_>>(), [&"bread", &"milk", &"eggs"]);
/// ```
///
/// Beside the elements, an `Rga` keeps an index of them by anchor (so that reading the first
/// elements walks only those) and counts of what is visible (so that its length is not a
/// walk); both are derived from the elements and rebuilt when it is decoded.
#[derive(Clone)]
pub struct Rga<T> {
    elems: BTreeMap<ElemId, Elem<T>>,
    /// Every element under its anchor: the elements inserted at one place are a range.
    by_anchor: BTreeSet<(Anchor, ElemId)>,
    /// How many elements are not removed.
    live: usize,
    /// Elements not in the sequence (yet): their anchor, or one of its anchors, has not
    /// arrived.
    hidden: BTreeSet<ElemId>,
}

impl<T> Default for Rga<T> {
    fn default() -> Self {
        Rga {
            elems: BTreeMap::new(),
            by_anchor: BTreeSet::new(),
            live: 0,
            hidden: BTreeSet::new(),
        }
    }
}

impl<T: PartialEq> PartialEq for Rga<T> {
    fn eq(&self, other: &Self) -> bool {
        self.elems == other.elems
    }
}

impl<T: Eq> Eq for Rga<T> {}

impl<T: std::hash::Hash> std::hash::Hash for Rga<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.elems.hash(state);
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Rga<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Rga").field(&self.elems).finish()
    }
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize> serde::Serialize for Rga<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.elems.serialize(serializer)
    }
}

#[cfg(feature = "serde")]
impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Rga<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let elems = BTreeMap::<ElemId, Elem<T>>::deserialize(deserializer)?;
        let mut rga = Rga::default();
        for (id, elem) in elems {
            rga.add(id, elem);
        }
        Ok(rga)
    }
}

impl<T> Rga<T> {
    /// Adds an element not present yet, keeping the index and counts.
    fn add(&mut self, id: ElemId, elem: Elem<T>) {
        let anchor = elem.anchor;
        self.live += usize::from(!elem.removed);
        self.by_anchor.insert((anchor, id));
        self.elems.insert(id, elem);
        let placed = match anchor {
            Anchor::Front | Anchor::Back => true,
            Anchor::After(parent) => {
                self.elems.contains_key(&parent) && !self.hidden.contains(&parent)
            }
        };
        if !placed {
            self.hidden.insert(id);
            return;
        }
        // Elements that arrived before this one, inserted after it (or after those), now
        // have their place. (Ids only grow along anchors, so this is rare: a delta that
        // overtook another.)
        if self.hidden.is_empty() {
            return;
        }
        let mut found = vec![id];
        while let Some(parent) = found.pop() {
            for &(_, child) in self.by_anchor.range(children(parent)) {
                if self.hidden.remove(&child) {
                    found.push(child);
                }
            }
        }
    }

    /// Marks element `id` removed; whether it was not already.
    fn mark_removed(&mut self, id: &ElemId) -> bool {
        match self.elems.get_mut(id) {
            Some(elem) if !elem.removed => {
                elem.removed = true;
                self.live -= 1;
                true
            }
            _ => false,
        }
    }
}

/// The least and the greatest possible ids, to bound ranges of [`Rga::by_anchor`].
const FIRST: ElemId = ElemId {
    counter: 0,
    replica: ReplicaId(0),
};
const LAST: ElemId = ElemId {
    counter: u64::MAX,
    replica: ReplicaId(u64::MAX),
};

/// The range of [`Rga::by_anchor`] holding the elements inserted at `anchor`.
fn inserted_at(anchor: Anchor) -> std::ops::RangeInclusive<(Anchor, ElemId)> {
    (anchor, FIRST)..=(anchor, LAST)
}

/// The range of [`Rga::by_anchor`] holding the elements inserted after `parent`.
fn children(parent: ElemId) -> std::ops::RangeInclusive<(Anchor, ElemId)> {
    inserted_at(Anchor::After(parent))
}

impl<T: Clone> Rga<T> {
    /// A fresh id for an insert by `replica`: its counter is above every counter seen.
    fn next_id(&self, replica: ReplicaId) -> ElemId {
        let counter = self.elems.keys().next_back().map_or(0, |id| id.counter) + 1;
        ElemId { counter, replica }
    }

    /// Inserts `value` at `anchor` as a write of `replica`; returns the delta (the element).
    pub fn insert(&mut self, replica: ReplicaId, anchor: Anchor, value: T) -> Self {
        let id = self.next_id(replica);
        let elem = Elem {
            anchor,
            value,
            removed: false,
        };
        self.add(id, elem.clone());
        let mut delta = Rga::default();
        delta.add(id, elem);
        delta
    }

    /// Inserts `value` first; returns the delta.
    pub fn push_front(&mut self, replica: ReplicaId, value: T) -> Self {
        self.insert(replica, Anchor::Front, value)
    }

    /// Inserts `value` last; returns the delta.
    pub fn push_back(&mut self, replica: ReplicaId, value: T) -> Self {
        self.insert(replica, Anchor::Back, value)
    }

    /// Removes the element `id` (it stays as a tombstone); returns the delta, empty when
    /// there is no such element or it was removed already.
    pub fn remove(&mut self, id: ElemId) -> Self {
        let mut delta = Rga::default();
        if self.mark_removed(&id) {
            delta.add(id, self.elems[&id].clone());
        }
        delta
    }
}

/// The walk of an [`Rga`] in sequence order: a stack of the ranges of elements inserted
/// at one place still to visit, the innermost on top, each read newest first except the
/// elements inserted at the back.
struct Walk<'a> {
    by_anchor: &'a BTreeSet<(Anchor, ElemId)>,
    stack: Vec<(
        std::collections::btree_set::Range<'a, (Anchor, ElemId)>,
        bool,
    )>,
}

impl Iterator for Walk<'_> {
    type Item = ElemId;

    fn next(&mut self) -> Option<ElemId> {
        loop {
            let (range, newest_first) = self.stack.last_mut()?;
            let next = if *newest_first {
                range.next_back()
            } else {
                range.next()
            };
            match next {
                None => drop(self.stack.pop()),
                Some(&(_, id)) => {
                    self.stack.push((self.by_anchor.range(children(id)), true));
                    return Some(id);
                }
            }
        }
    }
}

impl<T> Rga<T> {
    fn walk(&self) -> Walk<'_> {
        let at = |anchor| self.by_anchor.range(inserted_at(anchor));
        Walk {
            by_anchor: &self.by_anchor,
            // The front's elements first (newest first), then the back's (oldest first).
            stack: vec![(at(Anchor::Back), false), (at(Anchor::Front), true)],
        }
    }

    /// Every element's id in sequence order, tombstones included.
    pub fn order(&self) -> Vec<ElemId> {
        self.walk().collect()
    }

    /// The elements not removed, in order, with their ids. Reading the first few walks
    /// only as far as they are (and the tombstones before them).
    pub fn iter(&self) -> impl Iterator<Item = (ElemId, &T)> {
        self.walk().filter_map(|id| {
            let elem = &self.elems[&id];
            (!elem.removed).then_some((id, &elem.value))
        })
    }

    /// The values not removed, in order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, v)| v)
    }

    /// How many elements are not removed (and in the sequence: an element whose anchor
    /// has not arrived yet is not). Cheap: counted as elements come and go.
    pub fn len(&self) -> usize {
        let waiting = self
            .hidden
            .iter()
            .filter(|id| !self.elems[*id].removed)
            .count();
        self.live - waiting
    }

    /// Whether every element was removed (or none inserted). An element waiting for its
    /// anchor counts.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Whether `replica` inserted any element (a replica that forgets its elements must
    /// insert under another id afterwards, or its ids could repeat).
    pub fn inserted_by(&self, replica: ReplicaId) -> bool {
        self.elems.keys().any(|id| id.replica == replica)
    }
}

impl<T: Clone + Ord> Merge for Rga<T> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        let mut conflicts = Vec::new();
        for (id, elem) in other.elems {
            match self.elems.get(&id) {
                None => {
                    self.add(id, elem);
                    changed = true;
                }
                Some(mine) if mine.anchor == elem.anchor && mine.value == elem.value => {
                    changed |= elem.removed && self.mark_removed(&id);
                }
                // Two elements under one id: never from replicas that mint ids as they
                // should, but a merge must still converge, whatever it is sent. The greater
                // (anchor, value) wins everywhere, and removal still wins.
                Some(_) => conflicts.push((id, elem)),
            }
        }
        if !conflicts.is_empty() {
            changed |= self.resolve(conflicts);
        }
        changed
    }
}

impl<T: Clone + Ord> Rga<T> {
    /// Settles ids that `self` and another replica hold with different contents (see
    /// [`merge`](Merge::merge)), then rebuilds the index (conflicts are rare enough).
    fn resolve(&mut self, conflicts: Vec<(ElemId, Elem<T>)>) -> bool {
        let mut elems = std::mem::take(&mut self.elems);
        let mut changed = false;
        for (id, theirs) in conflicts {
            let mine = elems
                .get_mut(&id)
                .expect("a conflict is on an id both hold");
            let removed = mine.removed || theirs.removed;
            if (theirs.anchor, &theirs.value) > (mine.anchor, &mine.value) {
                *mine = theirs;
                changed = true;
            }
            changed |= removed != mine.removed;
            mine.removed = removed;
        }
        *self = Rga::default();
        for (id, elem) in elems {
            self.add(id, elem);
        }
        changed
    }
}

impl<T: Clone + Ord> PartialOrd for Rga<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        order_by_merge(self, other)
    }
}

impl<T> IsBot for Rga<T> {
    fn is_bot(&self) -> bool {
        self.elems.is_empty()
    }
}

impl<T> IsTop for Rga<T> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<T: Clone + Ord> Atomize for Rga<T> {
    type Atom = Self;

    /// One atom per element (with its removal, if removed).
    fn atomize(self) -> impl Iterator<Item = Self> {
        self.elems.into_iter().map(|(id, elem)| {
            let mut atom = Rga::default();
            atom.add(id, elem);
            atom
        })
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    #[derive(Clone, Debug)]
    enum Op {
        Front(usize, u8),
        Back(usize, u8),
        After(usize, usize, u8),
        Remove(usize, usize),
        Sync(usize, usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..9).prop_map(|(r, v)| Op::Front(r, v)),
                (0usize..3, 0u8..9).prop_map(|(r, v)| Op::Back(r, v)),
                (0usize..3, 0usize..8, 0u8..9).prop_map(|(r, i, v)| Op::After(r, i, v)),
                (0usize..3, 0usize..8).prop_map(|(r, i)| Op::Remove(r, i)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Sync(a, b)),
            ],
            0..14,
        )
    }

    fn replay(ops: &[Op]) -> Vec<Rga<u8>> {
        let mut rs = vec![Rga::default(); 3];
        for op in ops {
            match *op {
                Op::Front(r, v) => drop(rs[r].push_front(ReplicaId(r as u64), v)),
                Op::Back(r, v) => drop(rs[r].push_back(ReplicaId(r as u64), v)),
                Op::After(r, i, v) => {
                    if let Some(id) = rs[r].order().get(i).copied() {
                        rs[r].insert(ReplicaId(r as u64), Anchor::After(id), v);
                    }
                }
                Op::Remove(r, i) => {
                    if let Some(id) = rs[r].order().get(i).copied() {
                        rs[r].remove(id);
                    }
                }
                Op::Sync(a, b) => {
                    let from = rs[b].clone();
                    rs[a].merge(from);
                }
            }
        }
        rs
    }

    /// One id held with different contents (hostile or damaged input; found by the
    /// `value_merge` fuzz target): merges still commute, are idempotent and associative.
    #[test]
    fn one_id_with_two_contents_still_converges() {
        let id = ElemId {
            counter: 1,
            replica: ReplicaId(1),
        };
        let elem = |anchor, value: &'static str, removed| Elem {
            anchor,
            value,
            removed,
        };
        let mut a = Rga::default();
        a.add(id, elem(Anchor::Back, "a", true));
        let mut b = Rga::default();
        b.add(id, elem(Anchor::After(FIRST), "b", false));
        b.push_back(ReplicaId(2), "after");
        let mut c = Rga::default();
        c.add(id, elem(Anchor::Front, "c", false));
        let merged = |x: &Rga<&'static str>, y: &Rga<&'static str>| {
            let mut m = x.clone();
            m.merge(y.clone());
            m
        };
        assert_eq!(merged(&a, &b), merged(&b, &a));
        assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        let ab = merged(&a, &b);
        assert_eq!(merged(&ab, &b), ab);
        assert_eq!(merged(&ab, &a), ab);
        // The greater content wins, removal wins, and the index follows the new anchor.
        assert_eq!(ab.elems[&id], elem(Anchor::Back, "a", true));
        assert_eq!(
            merged(&c, &b).elems[&id],
            elem(Anchor::After(FIRST), "b", false)
        );
        assert_eq!(merged(&c, &b).values().collect::<Vec<_>>(), [&"after"]);
        assert_eq!(ab.values().collect::<Vec<_>>(), [&"after"]);
    }

    proptest! {
        #[test]
        fn rga_laws(ops in ops()) {
            let items = replay(&ops);
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn rga_deltas(ops in ops(), r in 0u64..3, v in 0u8..9) {
            let items = replay(&ops);
            for m in &items {
                laws::check_delta(m, &items, |m| m.push_front(ReplicaId(r), v));
                laws::check_delta(m, &items, |m| m.push_back(ReplicaId(r), v));
                if let Some(id) = m.order().first().copied() {
                    laws::check_delta(m, &items, |m| m.insert(ReplicaId(r), Anchor::After(id), v));
                    laws::check_delta(m, &items, |m| m.remove(id));
                }
            }
        }

        /// Replicas that have merged everything agree on the sequence, and each replica's
        /// own edits appear where it made them relative to each other.
        #[test]
        fn rga_converges(ops in ops()) {
            let items = replay(&ops);
            let all = items.iter().cloned().fold(Rga::default(), |a: Rga<u8>, b| a.merge_owned(b));
            for r in &items {
                let mut x = r.clone();
                x.merge(all.clone());
                prop_assert_eq!(x.values().collect::<Vec<_>>(), all.values().collect::<Vec<_>>());
            }
        }
    }

    /// The order as the type's docs define it, computed from the elements alone: what
    /// the indexed walk is checked against.
    fn reference_order<T>(r: &Rga<T>) -> Vec<ElemId> {
        fn visit<T>(r: &Rga<T>, id: ElemId, out: &mut Vec<ElemId>) {
            out.push(id);
            let mut kids: Vec<ElemId> = r
                .elems
                .iter()
                .filter(|(_, e)| e.anchor == Anchor::After(id))
                .map(|(k, _)| *k)
                .collect();
            kids.sort_by(|a, b| b.cmp(a));
            for k in kids {
                visit(r, k, out);
            }
        }
        let roots = |anchor: Anchor| -> Vec<ElemId> {
            r.elems
                .iter()
                .filter(|(_, e)| e.anchor == anchor)
                .map(|(k, _)| *k)
                .collect()
        };
        let mut out = Vec::new();
        for id in roots(Anchor::Front).into_iter().rev() {
            visit(r, id, &mut out);
        }
        for id in roots(Anchor::Back) {
            visit(r, id, &mut out);
        }
        out
    }

    /// The walk, the length and the count of what is visible agree with the definition.
    fn check_derived(r: &Rga<u8>) -> Result<(), TestCaseError> {
        prop_assert_eq!(r.order(), reference_order(r));
        prop_assert_eq!(r.len(), r.iter().count());
        prop_assert_eq!(r.is_empty(), r.elems.values().all(|e| e.removed));
        Ok(())
    }

    proptest! {
        /// Elements delivered one at a time in any order (an element before the one it
        /// was inserted after, a removal before the insert it removes): after each, the
        /// index and counts agree with the elements; at the end the replica equals the
        /// source; decoding rebuilds them.
        #[test]
        fn index_and_counts_follow_any_delivery_order(ops in ops(), seed in any::<u64>()) {
            let items = replay(&ops);
            for r in &items {
                check_derived(r)?;
            }
            let all = items.iter().cloned().fold(Rga::default(), |a: Rga<u8>, b| a.merge_owned(b));
            let mut atoms: Vec<Rga<u8>> = all.clone().atomize().collect();
            // Removals as atoms of their own too: the element first without, then with it.
            let removals: Vec<Rga<u8>> = atoms.iter().filter(|a| a.live == 0).cloned().collect();
            for a in &mut atoms {
                for e in a.elems.values_mut() {
                    e.removed = false;
                }
                a.live = a.elems.len();
            }
            atoms.extend(removals);
            let mut x = seed | 1;
            for i in (1..atoms.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                atoms.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut r = Rga::default();
            for atom in atoms {
                r.merge(atom);
                check_derived(&r)?;
            }
            prop_assert_eq!(&r, &all);
            let bytes = bincode::serde::encode_to_vec(&all, bincode::config::standard()).unwrap();
            let (decoded, _): (Rga<u8>, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            check_derived(&decoded)?;
            prop_assert_eq!(decoded.order(), all.order());
        }
    }

    #[test]
    fn pushes_and_inserts_land_where_asked() {
        let a = ReplicaId(1);
        let mut l = Rga::default();
        l.push_back(a, 'b');
        l.push_back(a, 'c');
        l.push_front(a, 'a');
        let b_id = l.iter().nth(1).unwrap().0;
        l.insert(a, Anchor::After(b_id), 'x');
        assert_eq!(l.values().collect::<String>(), "abxc");
        let x_id = l.iter().nth(2).unwrap().0;
        l.remove(x_id);
        assert_eq!(l.values().collect::<String>(), "abc");
        assert_eq!(l.len(), 3);
        // Inserted after a removed element, an element keeps its place.
        l.insert(a, Anchor::After(x_id), 'y');
        assert_eq!(l.values().collect::<String>(), "abyc");
        // A long run of pushes at the back is walked without recursion.
        let mut long = Rga::default();
        for i in 0..100_000u32 {
            long.push_back(a, i);
        }
        assert_eq!(long.values().last(), Some(&99_999));
    }
}
