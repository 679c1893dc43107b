//! [`Rga`]: a replicated growable array, the sequence CRDT behind calm's lists.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: serde::Serialize",
        deserialize = "T: serde::Deserialize<'de>"
    ))
)]
pub struct Rga<T> {
    elems: BTreeMap<ElemId, Elem<T>>,
}

impl<T> Default for Rga<T> {
    fn default() -> Self {
        Rga {
            elems: BTreeMap::new(),
        }
    }
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
        self.elems.insert(id, elem.clone());
        Rga {
            elems: BTreeMap::from([(id, elem)]),
        }
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
        match self.elems.get_mut(&id) {
            Some(elem) if !elem.removed => {
                elem.removed = true;
                Rga {
                    elems: BTreeMap::from([(id, elem.clone())]),
                }
            }
            _ => Rga::default(),
        }
    }
}

impl<T> Rga<T> {
    /// Every element's id in sequence order, tombstones included.
    pub fn order(&self) -> Vec<ElemId> {
        let mut front = Vec::new();
        let mut back = Vec::new();
        let mut after: HashMap<ElemId, Vec<ElemId>> = HashMap::new();
        // Ids ascend in the map: newest-first lists are built by reversing.
        for (id, elem) in &self.elems {
            match elem.anchor {
                Anchor::Front => front.push(*id),
                Anchor::Back => back.push(*id),
                Anchor::After(parent) => after.entry(parent).or_default().push(*id),
            }
        }
        let mut out = Vec::with_capacity(self.elems.len());
        // Depth first, without recursion: a stack of the ids still to visit, the next on
        // top. An element whose anchor was never received is not shown until it is.
        let mut walk = |roots: &mut dyn Iterator<Item = ElemId>| {
            let mut stack: Vec<ElemId> = roots.collect();
            stack.reverse();
            while let Some(id) = stack.pop() {
                out.push(id);
                if let Some(children) = after.get(&id) {
                    // Newest first: the greatest id on top of the stack.
                    stack.extend(children.iter().copied());
                }
            }
        };
        walk(&mut front.into_iter().rev());
        walk(&mut back.into_iter());
        out
    }

    /// The elements not removed, in order, with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (ElemId, &T)> {
        self.order().into_iter().filter_map(|id| {
            let elem = &self.elems[&id];
            (!elem.removed).then_some((id, &elem.value))
        })
    }

    /// The values not removed, in order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, v)| v)
    }

    /// How many elements are not removed (and in the sequence: an element whose anchor
    /// has not arrived yet is not).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether every element was removed (or none inserted). Cheap: it does not walk the
    /// sequence, so an element waiting for its anchor counts.
    pub fn is_empty(&self) -> bool {
        self.elems.values().all(|e| e.removed)
    }

    /// Whether `replica` inserted any element (a replica that forgets its elements must
    /// insert under another id afterwards, or its ids could repeat).
    pub fn inserted_by(&self, replica: ReplicaId) -> bool {
        self.elems.keys().any(|id| id.replica == replica)
    }
}

impl<T: Clone> Merge for Rga<T> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (id, elem) in other.elems {
            match self.elems.get_mut(&id) {
                Some(mine) => {
                    if elem.removed && !mine.removed {
                        mine.removed = true;
                        changed = true;
                    }
                }
                None => {
                    self.elems.insert(id, elem);
                    changed = true;
                }
            }
        }
        changed
    }
}

impl<T: Clone + Eq> PartialOrd for Rga<T> {
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

impl<T: Clone> Atomize for Rga<T> {
    type Atom = Self;

    /// One atom per element (with its removal, if removed).
    fn atomize(self) -> impl Iterator<Item = Self> {
        self.elems.into_iter().map(|(id, elem)| Rga {
            elems: BTreeMap::from([(id, elem)]),
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
