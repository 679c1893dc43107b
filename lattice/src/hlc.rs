//! Hybrid logical clocks: timestamps that follow physical time yet never go backwards.

use std::cmp::Ordering;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A hybrid logical clock timestamp: milliseconds of physical time and a logical counter that
/// orders events within the same millisecond. Compared by (`wall_ms`, `logical`).
///
/// As a lattice it is a [`Max`](crate::Max): merge keeps the later timestamp.
///
/// ```
/// use calm_lattice::{Hlc, Merge};
/// let mut t = Hlc::new(1_000, 0);
/// assert!(t.merge(Hlc::new(1_000, 3)));
/// assert!(Hlc::new(999, 50) < t);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hlc {
    /// Physical time in milliseconds (since the Unix epoch, by convention).
    pub wall_ms: u64,
    /// Orders events that share `wall_ms`.
    pub logical: u32,
}

impl Hlc {
    /// The zero timestamp (bottom).
    pub const ZERO: Hlc = Hlc {
        wall_ms: 0,
        logical: 0,
    };

    /// A timestamp from its parts.
    pub fn new(wall_ms: u64, logical: u32) -> Self {
        Hlc { wall_ms, logical }
    }

    /// The next timestamp after this one within the same millisecond, or the first of the
    /// next millisecond when the logical counter is exhausted.
    fn successor(self) -> Hlc {
        match self.logical.checked_add(1) {
            Some(logical) => Hlc::new(self.wall_ms, logical),
            None => Hlc::new(self.wall_ms.saturating_add(1), 0),
        }
    }
}

impl Merge for Hlc {
    fn merge(&mut self, other: Self) -> bool {
        if other > *self {
            *self = other;
            true
        } else {
            false
        }
    }
}

impl IsBot for Hlc {
    fn is_bot(&self) -> bool {
        *self == Hlc::ZERO
    }
}

impl IsTop for Hlc {
    fn is_top(&self) -> bool {
        self.wall_ms == u64::MAX && self.logical == u32::MAX
    }
}

impl Atomize for Hlc {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        (!self.is_bot()).then_some(self).into_iter()
    }
}

/// A remote timestamp was further ahead of the local physical clock than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockDrift {
    /// The timestamp that was refused.
    pub remote: Hlc,
    /// The local physical time when it arrived.
    pub local_wall_ms: u64,
    /// The allowed drift.
    pub max_drift_ms: u64,
}

impl std::fmt::Display for ClockDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "remote timestamp {}ms is {}ms ahead of the local clock ({}ms), more than the allowed {}ms; check the clocks of both machines",
            self.remote.wall_ms,
            self.remote.wall_ms.saturating_sub(self.local_wall_ms),
            self.local_wall_ms,
            self.max_drift_ms
        )
    }
}

impl std::error::Error for ClockDrift {}

/// The clock of one replica. Sans-IO: the caller passes the physical time in, so the clock
/// is deterministic under test and in simulation.
///
/// Timestamps it issues strictly increase, even if physical time stands still or steps back,
/// and they are later than every remote timestamp it has observed.
///
/// ```
/// use calm_lattice::{Hlc, HlcClock};
/// let mut clock = HlcClock::new(60_000);
/// let a = clock.tick(1_000);
/// let b = clock.tick(900); // the wall clock stepped back
/// assert!(b > a);
/// let c = clock.observe(Hlc::new(5_000, 7), 1_000).unwrap();
/// assert!(c > Hlc::new(5_000, 7));
/// assert!(clock.observe(Hlc::new(500_000, 0), 1_000).is_err()); // too far ahead
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock that refuses remote timestamps more than `max_drift_ms` ahead of local time.
    pub fn new(max_drift_ms: u64) -> Self {
        HlcClock {
            last: Hlc::ZERO,
            max_drift_ms,
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A timestamp for a local event (a write) at physical time `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        self.last = if wall_ms > self.last.wall_ms {
            Hlc::new(wall_ms, 0)
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Takes in a timestamp received from another replica at physical time `wall_ms`, and
    /// returns a local timestamp later than both. Refuses (and changes nothing) when the
    /// remote timestamp is too far in the future.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> Result<Hlc, ClockDrift> {
        if remote.wall_ms > wall_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockDrift {
                remote,
                local_wall_ms: wall_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let latest = self.last.max(remote);
        self.last = match wall_ms.cmp(&latest.wall_ms) {
            Ordering::Greater => Hlc::new(wall_ms, 0),
            _ => latest.successor(),
        };
        Ok(self.last)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    proptest! {
        #[test]
        fn hlc_laws(items in proptest::collection::vec(
            (0u64..4, 0u32..3).prop_map(|(w, l)| Hlc::new(w, l)), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        /// Whatever the physical clock does, issued timestamps strictly increase and exceed
        /// everything observed.
        #[test]
        fn clock_is_monotone(events in proptest::collection::vec(
            (any::<bool>(), 0u64..100, 0u64..120, 0u32..3), 1..40)) {
            let mut clock = HlcClock::new(50);
            let mut prev = Hlc::ZERO;
            for (is_remote, wall, remote_wall, remote_logical) in events {
                let remote = Hlc::new(remote_wall, remote_logical);
                let t = if is_remote {
                    match clock.observe(remote, wall) {
                        Ok(t) => {
                            prop_assert!(t > remote);
                            t
                        }
                        Err(e) => {
                            prop_assert!(remote_wall > wall + 50, "refused {e}");
                            prop_assert_eq!(clock.last(), prev);
                            continue;
                        }
                    }
                } else {
                    clock.tick(wall)
                };
                prop_assert!(t > prev);
                prop_assert!(t.wall_ms >= wall, "an HLC never runs behind physical time");
                prev = t;
            }
        }
    }

    #[test]
    fn logical_overflow_moves_to_next_millisecond() {
        let mut clock = HlcClock::new(0);
        assert_eq!(
            clock.observe(Hlc::new(10, u32::MAX), 10),
            Ok(Hlc::new(11, 0))
        );
        assert_eq!(clock.tick(10), Hlc::new(11, 1));
    }
}
