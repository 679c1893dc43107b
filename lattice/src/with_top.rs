//! [`WithTop`]: a lattice with a new top added above it.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// Adds a new greatest element above a lattice: "saturated", "closed", "poisoned". Once a
/// value reaches top it stays there whatever is merged into it.
///
/// ```
/// use calm_lattice::{IsTop, Merge, SetUnionBTreeSet, WithTop};
/// let mut ballot = WithTop::new_from(SetUnionBTreeSet::new_from(["ann"]));
/// ballot.merge(WithTop::top()); // the ballot is closed
/// ballot.merge(WithTop::new_from(SetUnionBTreeSet::new_from(["bob"])));
/// assert!(ballot.is_top());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct WithTop<L>(Option<L>);

impl<L: Default> Default for WithTop<L> {
    fn default() -> Self {
        WithTop(Some(L::default()))
    }
}

impl<L> WithTop<L> {
    /// The new top.
    pub fn top() -> Self {
        WithTop(None)
    }

    /// Wraps a value below the new top.
    pub fn new_from(value: L) -> Self {
        WithTop(Some(value))
    }

    /// Borrows the value, `None` at top.
    pub fn as_reveal_ref(&self) -> Option<&L> {
        self.0.as_ref()
    }

    /// Unwraps the value, `None` at top.
    pub fn into_reveal(self) -> Option<L> {
        self.0
    }
}

impl<L: Merge> Merge for WithTop<L> {
    fn merge(&mut self, other: Self) -> bool {
        match (&mut self.0, other.0) {
            (None, _) => false,
            (Some(_), None) => {
                self.0 = None;
                true
            }
            (Some(a), Some(b)) => a.merge(b),
        }
    }
}

impl<L: PartialOrd> PartialOrd for WithTop<L> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (&self.0, &other.0) {
            (None, None) => Some(Ordering::Equal),
            (None, Some(_)) => Some(Ordering::Greater),
            (Some(_), None) => Some(Ordering::Less),
            (Some(a), Some(b)) => a.partial_cmp(b),
        }
    }
}

impl<L: IsBot> IsBot for WithTop<L> {
    fn is_bot(&self) -> bool {
        self.0.as_ref().is_some_and(IsBot::is_bot)
    }
}

impl<L> IsTop for WithTop<L> {
    fn is_top(&self) -> bool {
        self.0.is_none()
    }
}

impl<L: Atomize + Merge + IsBot + Default> Atomize for WithTop<L> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        let (top, inner) = match self.0 {
            None => (Some(WithTop(None)), None),
            Some(l) => (None, Some(l)),
        };
        let atoms = inner.into_iter().flat_map(|l| {
            l.atomize()
                .map(|a| WithTop(Some(L::default().merge_owned(a))))
        });
        top.into_iter().chain(atoms)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::{SetUnionBTreeSet, laws};

    proptest! {
        #[test]
        fn with_top_laws(items in proptest::collection::vec(
            proptest::option::of(proptest::collection::btree_set(0u8..4, 0..3))
                .prop_map(|s| match s {
                    Some(s) => WithTop::new_from(SetUnionBTreeSet::new(s)),
                    None => WithTop::top(),
                }), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }
    }
}
