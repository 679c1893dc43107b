//! The antichain of causally maximal versions behind the multi-value registers.

use std::cmp::Ordering;

use crate::{Merge, VectorClock};

/// Versions of a value, each tagged with the vector clock of its write, of which only the
/// causally maximal ones are kept: a version whose clock is strictly dominated by another's
/// is dropped; concurrent versions (and distinct values written with the same clock) stay.
///
/// Merge is "maximal elements of the union", which is associative, commutative and
/// idempotent — unlike the dominate-or-union merge of a single (clock, value set) pair.
/// Versions are kept sorted so equal states are equal values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "Vec<(VectorClock, P)>"))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "P: serde::Serialize",
        deserialize = "P: serde::Deserialize<'de> + Ord"
    ))
)]
pub(crate) struct Versions<P>(Vec<(VectorClock, P)>);

// Decoding rebuilds the antichain: dominated versions and duplicates are dropped and the
// order is made canonical, whatever the encoding held.
impl<P: Ord> From<Vec<(VectorClock, P)>> for Versions<P> {
    fn from(items: Vec<(VectorClock, P)>) -> Self {
        let mut versions = Versions::default();
        for (clock, payload) in items {
            versions.insert(clock, payload);
        }
        versions
    }
}

impl<P> Default for Versions<P> {
    fn default() -> Self {
        Versions(Vec::new())
    }
}

impl<P: Ord> Versions<P> {
    pub(crate) fn single(clock: VectorClock, payload: P) -> Self {
        Versions(vec![(clock, payload)])
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(VectorClock, P)> {
        self.0.iter()
    }

    pub(crate) fn into_items(self) -> impl Iterator<Item = (VectorClock, P)> {
        self.0.into_iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The merge of every version's clock: everything this state has seen.
    pub(crate) fn clock(&self) -> VectorClock {
        self.0.iter().fold(VectorClock::default(), |acc, (c, _)| {
            acc.merge_owned(c.clone())
        })
    }

    fn canonical(a: &(VectorClock, P), b: &(VectorClock, P)) -> Ordering {
        a.0.canonical_cmp(&b.0).then_with(|| a.1.cmp(&b.1))
    }

    /// Adds one version; returns whether the state changed.
    fn insert(&mut self, clock: VectorClock, payload: P) -> bool {
        let covered = self.0.iter().any(|(c, p)| {
            matches!(clock.partial_cmp(c), Some(Ordering::Less)) || (*c == clock && *p == payload)
        });
        if covered {
            return false;
        }
        self.0
            .retain(|(c, _)| !matches!(c.partial_cmp(&clock), Some(Ordering::Less)));
        let item = (clock, payload);
        let at = self
            .0
            .binary_search_by(|probe| Self::canonical(probe, &item))
            .unwrap_or_else(|i| i);
        self.0.insert(at, item);
        true
    }

    /// Whether every version of `self` is dominated by or equal to one of `other`.
    pub(crate) fn le(&self, other: &Self) -> bool {
        self.0.iter().all(|(c, p)| {
            other.0.iter().any(|(oc, op)| {
                matches!(c.partial_cmp(oc), Some(Ordering::Less)) || (c == oc && p == op)
            })
        })
    }
}

impl<P: Ord> Merge for Versions<P> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        for (clock, payload) in other.0 {
            changed |= self.insert(clock, payload);
        }
        changed
    }
}

/// The order of antichains: `a <= b` when each of `a`'s versions is covered in `b`.
pub(crate) fn antichain_order<P: Ord>(a: &Versions<P>, b: &Versions<P>) -> Option<Ordering> {
    match (a.le(b), b.le(a)) {
        (true, true) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        (false, false) => None,
    }
}
