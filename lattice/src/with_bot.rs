//! [`WithBot`]: a lattice with a new bottom added below it.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// Adds a new least element (`None`) below a lattice, or gives a bottom to a type that has
/// none (a non-empty-by-construction value, a `Max` of a type without least value).
///
/// ```
/// use calm_lattice::{IsBot, Max, Merge, WithBot};
/// let mut first_seen = WithBot::<Max<i64>>::default();
/// assert!(first_seen.is_bot());
/// first_seen.merge(WithBot::new_from(Max::new(-40)));
/// assert_eq!(first_seen.as_reveal_ref(), Some(&Max::new(-40)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct WithBot<L>(Option<L>);

impl<L> Default for WithBot<L> {
    fn default() -> Self {
        WithBot(None)
    }
}

impl<L> WithBot<L> {
    /// Wraps an optional value; `None` is the new bottom.
    pub fn new(value: Option<L>) -> Self {
        WithBot(value)
    }

    /// Wraps a value above bottom.
    pub fn new_from(value: L) -> Self {
        WithBot(Some(value))
    }

    /// Borrows the value, `None` at bottom.
    pub fn as_reveal_ref(&self) -> Option<&L> {
        self.0.as_ref()
    }

    /// Unwraps the value, `None` at bottom.
    pub fn into_reveal(self) -> Option<L> {
        self.0
    }
}

impl<L: Merge> Merge for WithBot<L> {
    fn merge(&mut self, other: Self) -> bool {
        match (&mut self.0, other.0) {
            (_, None) => false,
            (None, Some(b)) => {
                self.0 = Some(b);
                true
            }
            (Some(a), Some(b)) => a.merge(b),
        }
    }
}

impl<L: PartialOrd> PartialOrd for WithBot<L> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (&self.0, &other.0) {
            (None, None) => Some(Ordering::Equal),
            (None, Some(_)) => Some(Ordering::Less),
            (Some(_), None) => Some(Ordering::Greater),
            (Some(a), Some(b)) => a.partial_cmp(b),
        }
    }
}

impl<L> IsBot for WithBot<L> {
    fn is_bot(&self) -> bool {
        self.0.is_none()
    }
}

impl<L: IsTop> IsTop for WithBot<L> {
    fn is_top(&self) -> bool {
        self.0.as_ref().is_some_and(IsTop::is_top)
    }
}

impl<L: Atomize + Merge + IsBot + Default> Atomize for WithBot<L> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        // The inner bottom is above the new bottom, so it is an atom of its own.
        let (inner_bot, inner) = match self.0 {
            None => (None, None),
            Some(l) if l.is_bot() => (Some(WithBot(Some(l))), None),
            Some(l) => (None, Some(l)),
        };
        let atoms = inner.into_iter().flat_map(|l| {
            l.atomize()
                .map(|a| WithBot(Some(L::default().merge_owned(a))))
        });
        inner_bot.into_iter().chain(atoms)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::{Max, SetUnionBTreeSet, laws};

    proptest! {
        #[test]
        fn with_bot_laws(items in proptest::collection::vec(
            proptest::option::of(proptest::collection::btree_set(0u8..4, 0..3))
                .prop_map(|s| WithBot::new(s.map(SetUnionBTreeSet::new))), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn with_bot_over_signed_max(items in proptest::collection::vec(
            proptest::option::of(any::<i8>()).prop_map(|v| WithBot::new(v.map(Max::new))), 0..6)) {
            laws::check_lattice_properties(&items);
            laws::check_order(&items);
        }
    }
}
