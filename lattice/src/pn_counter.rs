//! [`PNCounter`]: a counter that goes up and down.

use crate::{Atomize, GCounter, IsBot, IsTop, Lattice, Merge, ReplicaId};

/// An increment/decrement counter: two [`GCounter`]s, one of increments and one of
/// decrements; the value is their difference. Like a bank balance kept by several tellers,
/// it converges to the same total whatever order the tellers' updates arrive in.
///
/// ```
/// use calm_lattice::{Merge, PNCounter, ReplicaId};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = PNCounter::default();
/// let mut y = PNCounter::default();
/// let d1 = x.increment(a, 10);
/// let d2 = y.decrement(b, 4);
/// x.merge(d2);
/// y.merge(d1);
/// assert_eq!(x, y);
/// assert_eq!(x.value(), 6);
/// ```
///
/// A counter that has never counted takes one word: its halves live behind a pointer,
/// allocated at the first count (a hash field that is only ever set holds one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PNCounter(Option<Box<Halves>>);

/// The two halves of a [`PNCounter`] that has counted (never both empty). Encoded as the
/// counter is.
#[derive(Lattice, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename = "PNCounter")
)]
struct Halves {
    increments: GCounter,
    decrements: GCounter,
}

/// The halves of a counter that has never counted.
static NONE: std::sync::LazyLock<Halves> = std::sync::LazyLock::new(Halves::default);

impl PNCounter {
    /// Adds `by` at `replica`; returns the delta.
    pub fn increment(&mut self, replica: ReplicaId, by: u64) -> Self {
        let delta = self.halves_mut().increments.increment(replica, by);
        self.settle();
        PNCounter::new(delta, GCounter::default())
    }

    /// Subtracts `by` at `replica`; returns the delta.
    pub fn decrement(&mut self, replica: ReplicaId, by: u64) -> Self {
        let delta = self.halves_mut().decrements.increment(replica, by);
        self.settle();
        PNCounter::new(GCounter::default(), delta)
    }

    /// The current value: increments minus decrements.
    pub fn value(&self) -> i128 {
        i128::from(self.increments().value()) - i128::from(self.decrements().value())
    }

    /// The increments, per replica.
    pub fn increments(&self) -> &GCounter {
        &self.halves().increments
    }

    /// The decrements, per replica.
    pub fn decrements(&self) -> &GCounter {
        &self.halves().decrements
    }

    /// A counter from its two halves.
    pub fn new(increments: GCounter, decrements: GCounter) -> Self {
        PNCounter::of(Halves {
            increments,
            decrements,
        })
    }

    fn of(halves: Halves) -> Self {
        if halves.is_bot() {
            PNCounter(None)
        } else {
            PNCounter(Some(Box::new(halves)))
        }
    }

    fn halves(&self) -> &Halves {
        self.0.as_deref().unwrap_or(&NONE)
    }

    fn halves_mut(&mut self) -> &mut Halves {
        self.0.get_or_insert_default()
    }

    /// Drops halves that stayed empty (a count of 0 on a counter that had never counted),
    /// so equal counters are equal in form.
    fn settle(&mut self) {
        if self.0.as_deref().is_some_and(IsBot::is_bot) {
            self.0 = None;
        }
    }
}

impl Merge for PNCounter {
    fn merge(&mut self, other: Self) -> bool {
        match (&mut self.0, other.0) {
            (_, None) => false,
            (Some(mine), Some(theirs)) => mine.merge(*theirs),
            // `theirs` has counted (never both halves empty), so this one grows.
            (mine @ None, theirs) => {
                *mine = theirs;
                true
            }
        }
    }
}

impl PartialOrd for PNCounter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.halves().partial_cmp(other.halves())
    }
}

impl IsBot for PNCounter {
    fn is_bot(&self) -> bool {
        self.0.is_none()
    }
}

impl IsTop for PNCounter {
    fn is_top(&self) -> bool {
        self.halves().is_top()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PNCounter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.halves().serialize(s)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for PNCounter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Halves::deserialize(d).map(PNCounter::of)
    }
}

impl Atomize for PNCounter {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        let Halves {
            increments,
            decrements,
        } = self.0.map(|h| *h).unwrap_or_default();
        let ups = increments
            .atomize()
            .map(|i| PNCounter::new(i, GCounter::default()));
        let downs = decrements
            .atomize()
            .map(|d| PNCounter::new(GCounter::default(), d));
        ups.chain(downs)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    fn counters() -> impl Strategy<Value = PNCounter> {
        (
            proptest::collection::btree_map(0u64..3, 0u64..4, 0..3),
            proptest::collection::btree_map(0u64..3, 0u64..4, 0..3),
        )
            .prop_map(|(p, n)| {
                PNCounter::new(
                    GCounter::new_from(p.into_iter().map(|(r, c)| (ReplicaId(r), c))),
                    GCounter::new_from(n.into_iter().map(|(r, c)| (ReplicaId(r), c))),
                )
            })
    }

    #[test]
    #[cfg(feature = "serde")]
    fn a_counter_that_never_counted_is_one_word_and_encodes_as_both_halves_empty() {
        assert_eq!(std::mem::size_of::<PNCounter>(), 8);
        let mut c = PNCounter::default();
        assert!(c.increment(ReplicaId(1), 0).is_bot());
        assert_eq!(c, PNCounter::default());
        assert_eq!(c.value(), 0);
        let both_empty = (GCounter::default(), GCounter::default());
        let bytes = bincode::serde::encode_to_vec(&both_empty, bincode::config::standard());
        let empty = bytes.unwrap();
        let encoded = bincode::serde::encode_to_vec(&c, bincode::config::standard()).unwrap();
        assert_eq!(encoded, empty);
        let (decoded, _): (PNCounter, _) =
            bincode::serde::decode_from_slice(&empty, bincode::config::standard()).unwrap();
        assert_eq!(decoded, PNCounter::default());
        c.decrement(ReplicaId(2), 3);
        assert_eq!(c.value(), -3);
        assert_eq!(
            c,
            PNCounter::new(GCounter::default(), c.decrements().clone())
        );
    }

    proptest! {
        #[test]
        fn pn_counter_laws(items in proptest::collection::vec(counters(), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        #[test]
        fn deltas(items in proptest::collection::vec(counters(), 0..5), r in 0u64..3, by in 0u64..3) {
            for c in &items {
                laws::check_delta(c, &items, |c| c.increment(ReplicaId(r), by));
                laws::check_delta(c, &items, |c| c.decrement(ReplicaId(r), by));
            }
        }
    }
}
