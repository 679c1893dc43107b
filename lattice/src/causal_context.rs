//! Dots and causal contexts: which writes a replica has seen, in compact form.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::vec_map::VecMap;
use crate::{IsBot, IsTop, Merge, ReplicaId};

/// One write event: the `counter`-th write by `replica`. Each dot is created once, by its
/// replica, so it names that write everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Dot {
    /// The replica that made the write.
    pub replica: ReplicaId,
    /// Its sequence number at that replica, from 1.
    pub counter: u64,
}

impl Dot {
    /// The `counter`-th write of `replica`.
    pub fn new(replica: ReplicaId, counter: u64) -> Self {
        Dot { replica, counter }
    }
}

/// The set of dots a replica has seen, stored compactly: for each replica a contiguous
/// prefix `1..=n` (a version vector) plus the few dots seen out of order (the "cloud").
///
/// It is a lattice (a grow-only set of dots). Observed-remove CRDTs use it instead of
/// tombstones: a dot that is in the context but no longer in the state was removed.
///
/// ```
/// use calm_lattice::{CausalContext, Dot, ReplicaId};
/// let r = ReplicaId(1);
/// let mut cc = CausalContext::default();
/// cc.insert(Dot::new(r, 2)); // out of order: kept in the cloud
/// assert!(!cc.contains(&Dot::new(r, 1)));
/// cc.insert(Dot::new(r, 1)); // fills the gap: compacts to 1..=2
/// assert!(cc.contains(&Dot::new(r, 2)));
/// assert_eq!(cc.next_dot(r), Dot::new(r, 3));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "CausalContextParts"))]
pub struct CausalContext {
    /// Per replica, every dot `1..=n` has been seen. Replicas at 0 are absent.
    prefix: VecMap<ReplicaId, u64>,
    /// Dots seen beyond their replica's prefix, never `prefix + 1` (that would be compacted).
    cloud: Cloud,
}

/// The dots seen out of order: almost always none, so a context holds a pointer for them
/// (8 bytes, not a set's 24) and allocates only when there are some. Never an empty set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(from = "BTreeSet<Dot>", into = "BTreeSet<Dot>")
)]
// The point of the box: a thin pointer where a set would take 24 bytes.
#[allow(clippy::box_collection)]
struct Cloud(Option<Box<BTreeSet<Dot>>>);

impl From<BTreeSet<Dot>> for Cloud {
    fn from(dots: BTreeSet<Dot>) -> Cloud {
        Cloud((!dots.is_empty()).then(|| Box::new(dots)))
    }
}

impl From<Cloud> for BTreeSet<Dot> {
    fn from(cloud: Cloud) -> BTreeSet<Dot> {
        cloud.0.map(|b| *b).unwrap_or_default()
    }
}

impl Cloud {
    fn contains(&self, dot: &Dot) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(dot))
    }

    fn insert(&mut self, dot: Dot) -> bool {
        self.0.get_or_insert_default().insert(dot)
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &Dot> {
        self.0.iter().flat_map(|s| s.iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The last dot of `replica`'s.
    fn last_of(&self, replica: ReplicaId) -> Option<&Dot> {
        let set = self.0.as_ref()?;
        set.range(Dot::new(replica, 0)..=Dot::new(replica, u64::MAX))
            .next_back()
    }

    fn retain(&mut self, keep: impl FnMut(&Dot) -> bool) {
        if let Some(set) = &mut self.0 {
            set.retain(keep);
            if set.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl IntoIterator for Cloud {
    type Item = Dot;
    type IntoIter = std::collections::btree_set::IntoIter<Dot>;
    fn into_iter(self) -> Self::IntoIter {
        BTreeSet::from(self).into_iter()
    }
}

/// The encoded form of a [`CausalContext`], which may not be canonical (zero prefixes,
/// cloud dots that belong in the prefix); decoding restores the canonical form.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct CausalContextParts {
    prefix: BTreeMap<ReplicaId, u64>,
    cloud: BTreeSet<Dot>,
}

#[cfg(feature = "serde")]
impl From<CausalContextParts> for CausalContext {
    fn from(parts: CausalContextParts) -> Self {
        let mut cc = CausalContext {
            prefix: parts.prefix.into_iter().filter(|(_, n)| *n > 0).collect(),
            cloud: Cloud::from(
                (parts.cloud.into_iter())
                    .filter(|d| d.counter > 0)
                    .collect::<BTreeSet<Dot>>(),
            ),
        };
        cc.compact();
        cc
    }
}

impl CausalContext {
    /// A context holding exactly `dots`.
    pub fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut cc = CausalContext::default();
        for dot in dots.into_iter().filter(|d| d.counter > 0) {
            cc.cloud.insert(dot);
        }
        cc.compact();
        cc
    }

    /// The context that has seen `replica`'s dots 1 to `n` and nothing else.
    ///
    /// ```
    /// use calm_lattice::{CausalContext, Dot, ReplicaId};
    /// let r = ReplicaId(7);
    /// let cc = CausalContext::up_to(r, 3);
    /// assert_eq!(cc, CausalContext::from_dots((1..=3).map(|n| Dot::new(r, n))));
    /// assert_eq!(cc.only_prefix(), Some((r, 3)));
    /// ```
    pub fn up_to(replica: ReplicaId, n: u64) -> Self {
        CausalContext {
            prefix: if n == 0 {
                VecMap::new()
            } else {
                VecMap::from([(replica, n)])
            },
            cloud: Cloud::default(),
        }
    }

    /// `Some((replica, n))` when this context is exactly [`up_to(replica, n)`](Self::up_to)
    /// with `n > 0`: one replica's dots, all of them from the first.
    pub fn only_prefix(&self) -> Option<(ReplicaId, u64)> {
        if !self.cloud.is_empty() || self.prefix.len() != 1 {
            return None;
        }
        self.prefix.iter().next().map(|(&r, &n)| (r, n))
    }

    /// Whether `dot` has been seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.prefix_of(dot.replica) || self.cloud.contains(dot)
    }

    /// Records `dot` as seen; returns whether it was new.
    pub fn insert(&mut self, dot: Dot) -> bool {
        if dot.counter == 0 || self.contains(&dot) {
            return false;
        }
        self.cloud.insert(dot);
        self.compact();
        true
    }

    /// Whether any dot of `replica` has been seen: a replica that wrote under this context
    /// must keep it (or write under another id), or its next dots repeat old ones.
    pub fn has_seen(&self, replica: ReplicaId) -> bool {
        self.next_dot(replica).counter > 1
    }

    /// The next dot `replica` should use for a new write.
    pub fn next_dot(&self, replica: ReplicaId) -> Dot {
        let in_cloud = self.cloud.last_of(replica).map_or(0, |d| d.counter);
        Dot::new(
            replica,
            self.prefix_of(replica).max(in_cloud).saturating_add(1),
        )
    }

    /// Every dot seen, replica by replica. Its length is the number of writes ever seen, so
    /// this is for small contexts and tests.
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.prefix
            .iter()
            .flat_map(|(&r, &n)| (1..=n).map(move |c| Dot::new(r, c)))
            .chain(self.cloud.iter().copied())
    }

    fn prefix_of(&self, replica: ReplicaId) -> u64 {
        self.prefix.get(&replica).copied().unwrap_or(0)
    }

    /// Restores the canonical form: cloud dots covered by or adjacent to the prefix move in.
    fn compact(&mut self) {
        let prefix = &mut self.prefix;
        // BTreeSet::retain visits dots in order, so a run r:5, r:6, r:7 folds in one pass.
        self.cloud.retain(|dot| {
            let n = prefix.get_or_insert_with(dot.replica, || 0);
            let keep = if dot.counter <= *n {
                false
            } else if dot.counter == *n + 1 {
                *n += 1;
                false
            } else {
                true
            };
            if *n == 0 {
                prefix.remove(&dot.replica);
            }
            keep
        });
    }
}

impl Merge for CausalContext {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (r, n) in other.prefix {
            let mine = self.prefix.get_or_insert_with(r, || 0);
            if n > *mine {
                *mine = n;
                changed = true;
            }
        }
        for dot in other.cloud {
            if !self.contains(&dot) {
                self.cloud.insert(dot);
                changed = true;
            }
        }
        self.compact();
        changed
    }
}

impl PartialOrd for CausalContext {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Canonical form: `a`'s prefix for r is covered by `b` only through `b`'s prefix.
        let le = |a: &Self, b: &Self| {
            a.prefix.iter().all(|(r, n)| *n <= b.prefix_of(*r))
                && a.cloud.iter().all(|d| b.contains(d))
        };
        match (le(self, other), le(other, self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl IsBot for CausalContext {
    fn is_bot(&self) -> bool {
        self.prefix.is_empty() && self.cloud.is_empty()
    }
}

impl IsTop for CausalContext {
    fn is_top(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    fn contexts() -> impl Strategy<Value = Vec<CausalContext>> {
        proptest::collection::vec(
            proptest::collection::vec((0u64..3, 1u64..6), 0..6).prop_map(|dots| {
                CausalContext::from_dots(dots.into_iter().map(|(r, c)| Dot::new(ReplicaId(r), c)))
            }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn causal_context_laws(items in contexts()) {
            laws::check_all(&items);
        }

        #[test]
        fn compact_form_is_canonical(dots in proptest::collection::vec((0u64..3, 1u64..8), 0..12)) {
            let dots: Vec<Dot> = dots.into_iter().map(|(r, c)| Dot::new(ReplicaId(r), c)).collect();
            let all_at_once = CausalContext::from_dots(dots.iter().copied());
            let mut one_by_one = CausalContext::default();
            for d in dots.iter().rev() {
                one_by_one.insert(*d);
            }
            prop_assert_eq!(&all_at_once, &one_by_one);
            for d in &dots {
                prop_assert!(all_at_once.contains(d));
            }
            let listed: BTreeSet<Dot> = all_at_once.dots().collect();
            prop_assert_eq!(listed, dots.into_iter().collect::<BTreeSet<_>>());
        }
    }
}
