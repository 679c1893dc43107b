//! [`Conflict`]: a value that must be agreed on; two different ones make a conflict.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A write-once value. Merging equal values keeps it; merging two different values gives
/// `Conflicted`, the top, which nothing undoes. Use it to detect what should never happen
/// (two different values for one immutable key) instead of silently picking one.
///
/// ```
/// use calm_lattice::{Conflict, IsTop, Merge};
/// let mut owner = Conflict::new("node-a");
/// assert!(!owner.merge(Conflict::new("node-a")));
/// assert!(owner.merge(Conflict::new("node-b")));
/// assert!(owner.is_top());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Conflict<T> {
    /// No value yet (bottom).
    #[default]
    Empty,
    /// One agreed value.
    Value(T),
    /// Two different values met (top).
    Conflicted,
}

impl<T> Conflict<T> {
    /// An agreed value.
    pub fn new(value: T) -> Self {
        Conflict::Value(value)
    }

    /// The value if there is exactly one.
    pub fn as_reveal_ref(&self) -> Option<&T> {
        match self {
            Conflict::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl<T: PartialEq> Merge for Conflict<T> {
    fn merge(&mut self, other: Self) -> bool {
        match (&*self, other) {
            (Conflict::Conflicted, _) | (_, Conflict::Empty) => false,
            (Conflict::Value(a), Conflict::Value(b)) if *a == b => false,
            (Conflict::Empty, v) => {
                *self = v;
                true
            }
            (Conflict::Value(_), _) => {
                *self = Conflict::Conflicted;
                true
            }
        }
    }
}

impl<T: PartialEq> PartialOrd for Conflict<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let rank = |c: &Self| match c {
            Conflict::Empty => 0,
            Conflict::Value(_) => 1,
            Conflict::Conflicted => 2,
        };
        match (self, other) {
            (Conflict::Value(a), Conflict::Value(b)) => (a == b).then_some(Ordering::Equal),
            _ => Some(rank(self).cmp(&rank(other))),
        }
    }
}

impl<T> IsBot for Conflict<T> {
    fn is_bot(&self) -> bool {
        matches!(self, Conflict::Empty)
    }
}

impl<T> IsTop for Conflict<T> {
    fn is_top(&self) -> bool {
        matches!(self, Conflict::Conflicted)
    }
}

impl<T: PartialEq> Atomize for Conflict<T> {
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
        fn conflict_laws(items in proptest::collection::vec(
            prop_oneof![Just(Conflict::Empty), Just(Conflict::Conflicted), (0u8..3).prop_map(Conflict::new)],
            0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }
    }
}
