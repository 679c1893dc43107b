//! [`Lww`]: the last-writer-wins register, with a total order on writes.

use std::cmp::Ordering;

use crate::{Atomize, Hlc, IsBot, IsTop, Merge, ReplicaId};

/// When and where a write happened: a hybrid logical clock timestamp and the writing
/// replica. Ordered by timestamp, then replica id, so two writes never tie unless they are
/// the same write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stamp {
    /// When the write happened.
    pub hlc: Hlc,
    /// Which replica made it.
    pub replica: ReplicaId,
}

impl Stamp {
    /// A stamp from its parts.
    pub fn new(hlc: Hlc, replica: ReplicaId) -> Self {
        Stamp { hlc, replica }
    }
}

/// A register where the write with the greatest [`Stamp`] wins.
///
/// Ties are broken the same way on every replica: by timestamp, then replica id, then (for
/// the impossible case of one stamp reused with two values) by the value itself. So merge is
/// commutative even when two replicas write in the same millisecond — unlike registers that
/// let the later *arrival* win, which can leave replicas different forever.
///
/// Bottom is the empty register.
///
/// ```
/// use calm_lattice::{Hlc, Lww, Merge, ReplicaId, Stamp};
/// let at = |ms, r| Stamp::new(Hlc::new(ms, 0), ReplicaId(r));
/// let mut a = Lww::new(at(100, 1), "blue");
/// let mut b = Lww::new(at(100, 2), "green"); // same millisecond, other replica
/// let a0 = a.clone();
/// a.merge(b.clone());
/// b.merge(a0);
/// assert_eq!(a, b);
/// assert_eq!(a.get(), Some(&"green")); // replica 2 > replica 1, everywhere
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Lww<T>(Option<(Stamp, T)>);

impl<T> Default for Lww<T> {
    fn default() -> Self {
        Lww(None)
    }
}

impl<T> Lww<T> {
    /// A register holding `value`, written at `stamp`.
    pub fn new(stamp: Stamp, value: T) -> Self {
        Lww(Some((stamp, value)))
    }

    /// The current value, if any write happened.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref().map(|(_, v)| v)
    }

    /// The stamp of the current value.
    pub fn stamp(&self) -> Option<Stamp> {
        self.0.as_ref().map(|(s, _)| *s)
    }

    /// Unwraps the stamp and value.
    pub fn into_reveal(self) -> Option<(Stamp, T)> {
        self.0
    }
}

impl<T: Ord + Clone> Lww<T> {
    /// Writes `value` at `stamp`; returns the delta (the write itself). A write older than
    /// the current value changes nothing, as it would on any other replica.
    pub fn write(&mut self, stamp: Stamp, value: T) -> Self {
        let delta = Lww::new(stamp, value);
        self.merge(delta.clone());
        delta
    }
}

impl<T: Ord> Merge for Lww<T> {
    fn merge(&mut self, other: Self) -> bool {
        let Some((stamp, value)) = other.0 else {
            return false;
        };
        // Stamps almost always differ; the value is compared only on a reused stamp.
        let wins = match &self.0 {
            None => true,
            Some((mine, my_value)) => match stamp.cmp(mine) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => value > *my_value,
            },
        };
        if wins {
            self.0 = Some((stamp, value));
        }
        wins
    }
}

impl<T: Ord> PartialOrd for Lww<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.0.cmp(&other.0))
    }
}

impl<T> IsBot for Lww<T> {
    fn is_bot(&self) -> bool {
        self.0.is_none()
    }
}

impl<T> IsTop for Lww<T> {
    /// Always `false`: the greatest stamp is never issued by a clock.
    fn is_top(&self) -> bool {
        false
    }
}

impl<T: Ord> Atomize for Lww<T> {
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

    fn registers() -> impl Strategy<Value = Vec<Lww<u8>>> {
        proptest::collection::vec(
            proptest::option::of((0u64..3, 0u64..3, 0u8..3)).prop_map(|w| match w {
                Some((ms, r, v)) => Lww::new(Stamp::new(Hlc::new(ms, 0), ReplicaId(r)), v),
                None => Lww::default(),
            }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn lww_laws(items in registers()) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn lww_write_delta(items in registers(), ms in 0u64..4, r in 0u64..3, v in 0u8..3) {
            for reg in &items {
                laws::check_delta(reg, &items, |reg| reg.write(Stamp::new(Hlc::new(ms, 0), ReplicaId(r)), v));
            }
        }
    }

    /// What Anna's register did: equal timestamps resolved by arrival order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct ArrivalOrderLww {
        ms: u64,
        value: u8,
    }

    impl Merge for ArrivalOrderLww {
        fn merge(&mut self, other: Self) -> bool {
            if other.ms >= self.ms && other != *self {
                *self = other;
                true
            } else {
                false
            }
        }
    }

    /// The negative test the docs promise: arrival-order ties are not commutative.
    #[test]
    #[should_panic(expected = "not commutative")]
    fn arrival_order_ties_break_commutativity() {
        let a = ArrivalOrderLww { ms: 5, value: 1 };
        let b = ArrivalOrderLww { ms: 5, value: 2 };
        laws::check_lattice_properties(&[a, b]);
    }
}
