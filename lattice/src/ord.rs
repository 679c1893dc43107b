//! Totally ordered lattices: [`Max`] only goes up, [`Min`] only goes down.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A type with a least value: the bottom of [`Max`] and the top of [`Min`].
pub trait Least: Ord {
    /// The least value of the type.
    fn least() -> Self;
}

/// A type with a greatest value: the top of [`Max`] and the bottom of [`Min`].
pub trait Greatest: Ord {
    /// The greatest value of the type.
    fn greatest() -> Self;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(
        impl Least for $t { fn least() -> Self { <$t>::MIN } }
        impl Greatest for $t { fn greatest() -> Self { <$t>::MAX } }
    )*};
}
bounded!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, char
);

impl Least for bool {
    fn least() -> Self {
        false
    }
}
impl Greatest for bool {
    fn greatest() -> Self {
        true
    }
}
impl Least for String {
    fn least() -> Self {
        String::new()
    }
}
impl<T: Ord> Least for Vec<T> {
    fn least() -> Self {
        Vec::new()
    }
}
impl Least for () {
    fn least() -> Self {}
}
impl Greatest for () {
    fn greatest() -> Self {}
}

/// A value that only grows: merge keeps the greater of the two.
///
/// Bottom is the type's least value ([`Least`]); top is its greatest value where it has one
/// ([`Greatest`]). `Max<bool>` is the monotone boolean: once true, always true.
///
/// ```
/// use calm_lattice::{Max, Merge};
/// let mut m = Max::new(3);
/// assert!(m.merge(Max::new(5)));
/// assert!(!m.merge(Max::new(4)));
/// assert_eq!(m.into_reveal(), 5);
/// assert_eq!(Max::new(5u32).at_least(4), Max::new(true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Max<T>(T);

impl<T> Max<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Max(value)
    }

    /// Wraps a value convertible into `T`.
    pub fn new_from(value: impl Into<T>) -> Self {
        Max(value.into())
    }

    /// Borrows the value.
    pub fn as_reveal_ref(&self) -> &T {
        &self.0
    }

    /// The value (the same as [`as_reveal_ref`](Self::as_reveal_ref); counters and
    /// registers read with `value()` too).
    pub fn value(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_reveal(self) -> T {
        self.0
    }
}

impl<T: Ord> Max<T> {
    /// Monotone threshold test: `Max(true)` once the value reaches `threshold`, and it stays
    /// true as the value grows.
    pub fn at_least(&self, threshold: T) -> Max<bool> {
        Max(self.0 >= threshold)
    }
}

impl<T: Ord> Merge for Max<T> {
    fn merge(&mut self, other: Self) -> bool {
        if other.0 > self.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

impl<T: Ord> PartialOrd for Max<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.0.cmp(&other.0))
    }
}

impl<T: Least> Default for Max<T> {
    fn default() -> Self {
        Max(T::least())
    }
}

impl<T: Least> IsBot for Max<T> {
    fn is_bot(&self) -> bool {
        self.0 == T::least()
    }
}

impl<T: Greatest> IsTop for Max<T> {
    fn is_top(&self) -> bool {
        self.0 == T::greatest()
    }
}

// Unbounded types: a `Max` of them never reaches top.
impl IsTop for Max<String> {
    fn is_top(&self) -> bool {
        false
    }
}
impl<T: Ord> IsTop for Max<Vec<T>> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<T: Least> Atomize for Max<T> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        (!self.is_bot()).then_some(self).into_iter()
    }
}

/// A value that only shrinks: merge keeps the lesser of the two.
///
/// Bottom is the type's greatest value ([`Greatest`]), top its least ([`Least`]).
///
/// ```
/// use calm_lattice::{Merge, Min};
/// let mut deadline = Min::new(500u64);
/// assert!(deadline.merge(Min::new(200)));
/// assert!(!deadline.merge(Min::new(300)));
/// assert_eq!(deadline.into_reveal(), 200);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Min<T>(T);

impl<T> Min<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Min(value)
    }

    /// Wraps a value convertible into `T`.
    pub fn new_from(value: impl Into<T>) -> Self {
        Min(value.into())
    }

    /// Borrows the value.
    pub fn as_reveal_ref(&self) -> &T {
        &self.0
    }

    /// The value (the same as [`as_reveal_ref`](Self::as_reveal_ref); counters and
    /// registers read with `value()` too).
    pub fn value(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_reveal(self) -> T {
        self.0
    }
}

impl<T: Ord> Min<T> {
    /// Monotone threshold test: `Max(true)` once the value has come down to `threshold`.
    pub fn at_most(&self, threshold: T) -> Max<bool> {
        Max(self.0 <= threshold)
    }
}

impl<T: Ord> Merge for Min<T> {
    fn merge(&mut self, other: Self) -> bool {
        if other.0 < self.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

impl<T: Ord> PartialOrd for Min<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(other.0.cmp(&self.0))
    }
}

impl<T: Greatest> Default for Min<T> {
    fn default() -> Self {
        Min(T::greatest())
    }
}

impl<T: Greatest> IsBot for Min<T> {
    fn is_bot(&self) -> bool {
        self.0 == T::greatest()
    }
}

impl<T: Least> IsTop for Min<T> {
    fn is_top(&self) -> bool {
        self.0 == T::least()
    }
}

impl<T: Greatest> Atomize for Min<T> {
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
        fn max_laws(items in proptest::collection::vec(any::<u8>().prop_map(Max::new), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_monotone(|m: &Max<u8>| m.at_least(100), &items);
        }

        #[test]
        fn max_bool_laws(items in proptest::collection::vec(any::<bool>().prop_map(Max::new), 0..4)) {
            laws::check_all(&items);
        }

        #[test]
        fn min_laws(items in proptest::collection::vec(any::<u8>().prop_map(Min::new), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_monotone(|m: &Min<u8>| m.at_most(100), &items);
        }
    }

    #[test]
    fn min_top_is_least_value() {
        assert!(Min::new(0u8).is_top());
        laws::check_top(&Min::new(0u8), &[Min::new(3), Min::default()]);
        assert!(Max::new(u8::MAX).is_top());
        laws::check_top(&Max::new(u8::MAX), &[Max::new(3), Max::default()]);
        assert!(!Max::new("zzz".to_string()).is_top());
    }
}
