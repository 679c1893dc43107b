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
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "CausalContextParts"))]
pub struct CausalContext(Repr);

/// A context's dots: per replica a prefix `1..=n` (replicas at 0 absent), and the dots
/// seen beyond their replica's prefix, never `prefix + 1` (that would be compacted). Dots
/// out of order are rare, so the usual context is its prefix alone (24 bytes, in every
/// value of a store), and the others keep both behind a pointer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Repr {
    /// No dot out of order.
    Prefix(VecMap<ReplicaId, u64>),
    /// A prefix and a cloud of dots out of order (never empty).
    Clouded(Box<(VecMap<ReplicaId, u64>, BTreeSet<Dot>)>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Prefix(VecMap::new())
    }
}

/// The cloud of a context with none.
static NO_CLOUD: BTreeSet<Dot> = BTreeSet::new();

#[cfg(feature = "serde")]
impl serde::Serialize for CausalContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The form a context always had: its prefix, then its cloud.
        #[derive(serde::Serialize)]
        #[serde(rename = "CausalContext")]
        struct Parts<'a> {
            prefix: &'a VecMap<ReplicaId, u64>,
            cloud: &'a BTreeSet<Dot>,
        }
        serde::Serialize::serialize(
            &Parts {
                prefix: self.prefix(),
                cloud: self.cloud(),
            },
            s,
        )
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
        let prefix = parts.prefix.into_iter().filter(|(_, n)| *n > 0).collect();
        let cloud: BTreeSet<Dot> = parts.cloud.into_iter().filter(|d| d.counter > 0).collect();
        let mut cc = CausalContext(if cloud.is_empty() {
            Repr::Prefix(prefix)
        } else {
            Repr::Clouded(Box::new((prefix, cloud)))
        });
        cc.compact();
        cc
    }
}

impl CausalContext {
    /// A context holding exactly `dots`.
    pub fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let cloud: BTreeSet<Dot> = dots.into_iter().filter(|d| d.counter > 0).collect();
        let mut cc = CausalContext::default();
        if !cloud.is_empty() {
            cc.0 = Repr::Clouded(Box::new((VecMap::new(), cloud)));
            cc.compact();
        }
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
        CausalContext(Repr::Prefix(if n == 0 {
            VecMap::new()
        } else {
            VecMap::from([(replica, n)])
        }))
    }

    /// `Some((replica, n))` when this context is exactly [`up_to(replica, n)`](Self::up_to)
    /// with `n > 0`: one replica's dots, all of them from the first.
    pub fn only_prefix(&self) -> Option<(ReplicaId, u64)> {
        match &self.0 {
            Repr::Prefix(prefix) if prefix.len() == 1 => {
                prefix.iter().next().map(|(&r, &n)| (r, n))
            }
            _ => None,
        }
    }

    /// Whether `dot` has been seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.prefix_of(dot.replica) || self.cloud().contains(dot)
    }

    /// Records `dot` as seen; returns whether it was new.
    pub fn insert(&mut self, dot: Dot) -> bool {
        if dot.counter == 0 || self.contains(&dot) {
            return false;
        }
        if dot.counter == self.prefix_of(dot.replica) + 1 {
            // The next of its replica's: the prefix grows, nothing goes to the cloud.
            *self.prefix_mut().get_or_insert_with(dot.replica, || 0) += 1;
        } else {
            self.cloud_mut().insert(dot);
        }
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
        let in_cloud = (self.cloud())
            .range(Dot::new(replica, 0)..=Dot::new(replica, u64::MAX))
            .next_back()
            .map_or(0, |d| d.counter);
        Dot::new(
            replica,
            self.prefix_of(replica).max(in_cloud).saturating_add(1),
        )
    }

    /// Every dot seen, replica by replica. Its length is the number of writes ever seen, so
    /// this is for small contexts and tests.
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.prefix()
            .iter()
            .flat_map(|(&r, &n)| (1..=n).map(move |c| Dot::new(r, c)))
            .chain(self.cloud().iter().copied())
    }

    fn prefix_of(&self, replica: ReplicaId) -> u64 {
        self.prefix().get(&replica).copied().unwrap_or(0)
    }

    fn prefix(&self) -> &VecMap<ReplicaId, u64> {
        match &self.0 {
            Repr::Prefix(prefix) => prefix,
            Repr::Clouded(both) => &both.0,
        }
    }

    fn prefix_mut(&mut self) -> &mut VecMap<ReplicaId, u64> {
        match &mut self.0 {
            Repr::Prefix(prefix) => prefix,
            Repr::Clouded(both) => &mut both.0,
        }
    }

    fn cloud(&self) -> &BTreeSet<Dot> {
        match &self.0 {
            Repr::Prefix(_) => &NO_CLOUD,
            Repr::Clouded(both) => &both.1,
        }
    }

    /// The cloud, to add to ([`compact`](Self::compact) restores the form after).
    fn cloud_mut(&mut self) -> &mut BTreeSet<Dot> {
        if let Repr::Prefix(prefix) = &mut self.0 {
            self.0 = Repr::Clouded(Box::new((std::mem::take(prefix), BTreeSet::new())));
        }
        match &mut self.0 {
            Repr::Clouded(both) => &mut both.1,
            Repr::Prefix(_) => unreachable!("made clouded above"),
        }
    }

    /// Restores the canonical form: cloud dots covered by or adjacent to the prefix move in,
    /// and a context whose cloud is empty is its prefix alone.
    fn compact(&mut self) {
        let Repr::Clouded(both) = &mut self.0 else {
            return;
        };
        let (prefix, cloud) = &mut **both;
        // BTreeSet::retain visits dots in order, so a run r:5, r:6, r:7 folds in one pass.
        cloud.retain(|dot| {
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
        if cloud.is_empty()
            && let Repr::Clouded(both) = std::mem::take(&mut self.0)
        {
            self.0 = Repr::Prefix(both.0);
        }
    }
}

impl Merge for CausalContext {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        let (prefix, cloud) = match other.0 {
            Repr::Prefix(prefix) => (prefix, BTreeSet::new()),
            Repr::Clouded(both) => *both,
        };
        let mine = self.prefix_mut();
        for (r, n) in prefix {
            let m = mine.get_or_insert_with(r, || 0);
            if n > *m {
                *m = n;
                changed = true;
            }
        }
        for dot in cloud {
            if !self.contains(&dot) {
                self.cloud_mut().insert(dot);
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
            a.prefix().iter().all(|(r, n)| *n <= b.prefix_of(*r))
                && a.cloud().iter().all(|d| b.contains(d))
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
        self.prefix().is_empty() && self.cloud().is_empty()
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
