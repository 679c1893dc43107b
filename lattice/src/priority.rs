//! [`Priority`]: the value with the lowest priority wins.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A register where the write with the *lowest* priority wins (Anna's `PRIORITY`): a
/// shortest distance, the earliest deadline, the cheapest bid. Equal priorities are broken by
/// the smaller value, the same way on every replica, so merge is commutative.
///
/// Bottom is the empty register; merging into it takes the other side.
///
/// ```
/// use calm_lattice::{Merge, Priority};
/// let mut route = Priority::new(12, "via-b");
/// route.merge(Priority::new(7, "via-c"));
/// route.merge(Priority::new(9, "via-d"));
/// assert_eq!(route.get(), Some((&7, &"via-c")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Priority<P, T>(Option<(P, T)>);

impl<P, T> Default for Priority<P, T> {
    fn default() -> Self {
        Priority(None)
    }
}

impl<P, T> Priority<P, T> {
    /// A register holding `value` at `priority`.
    pub fn new(priority: P, value: T) -> Self {
        Priority(Some((priority, value)))
    }

    /// The winning priority and value.
    pub fn get(&self) -> Option<(&P, &T)> {
        self.0.as_ref().map(|(p, v)| (p, v))
    }

    /// Unwraps the winning priority and value.
    pub fn into_reveal(self) -> Option<(P, T)> {
        self.0
    }
}

impl<P: Ord + Clone, T: Ord + Clone> Priority<P, T> {
    /// Offers `value` at `priority`; returns the delta (the offer itself).
    pub fn offer(&mut self, priority: P, value: T) -> Self {
        let delta = Priority::new(priority, value);
        self.merge(delta.clone());
        delta
    }
}

impl<P: Ord, T: Ord> Merge for Priority<P, T> {
    fn merge(&mut self, other: Self) -> bool {
        let wins = match (&self.0, &other.0) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(mine), Some(theirs)) => theirs < mine,
        };
        if wins {
            self.0 = other.0;
        }
        wins
    }
}

impl<P: Ord, T: Ord> PartialOrd for Priority<P, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(match (&self.0, &other.0) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            // Lower priority is higher in the lattice.
            (Some(a), Some(b)) => b.cmp(a),
        })
    }
}

impl<P, T> IsBot for Priority<P, T> {
    fn is_bot(&self) -> bool {
        self.0.is_none()
    }
}

impl<P, T> IsTop for Priority<P, T> {
    /// Always `false`: top would be the least (priority, value) of both types, which no
    /// real write uses.
    fn is_top(&self) -> bool {
        false
    }
}

impl<P: Ord, T: Ord> Atomize for Priority<P, T> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        (!self.is_bot()).then_some(self).into_iter()
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    proptest! {
        #[test]
        fn priority_laws(items in proptest::collection::vec(
            proptest::option::of((0u8..3, 0u8..3)).prop_map(|o| match o {
                Some((p, v)) => Priority::new(p, v),
                None => Priority::default(),
            }), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            for p in &items {
                laws::check_delta(p, &items, |p| p.offer(1, 1));
            }
        }
    }
}
