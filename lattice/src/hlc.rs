//! Hybrid logical clocks: timestamps that follow physical time yet never go backwards.

use std::cmp::Ordering;
use std::num::NonZeroU64;

use crate::{Atomize, IsBot, IsTop, Merge};

/// A hybrid logical clock timestamp: milliseconds of physical time and a logical counter that
/// orders events within the same millisecond. Compared by ([`wall_ms`](Hlc::wall_ms),
/// [`logical`](Hlc::logical)).
///
/// Held in 8 bytes (a stamp of the store's every value is one of these and a replica id):
/// the milliseconds in the high 48 bits, up to [`Hlc::MAX_WALL_MS`] (the year 10889), the
/// logical counter in the low 16. A clock whose counter is exhausted moves to the next
/// millisecond.
///
/// As a lattice it is a [`Max`](crate::Max): merge keeps the later timestamp.
///
/// ```
/// use calm_lattice::{Hlc, Merge};
/// let mut t = Hlc::new(1_000, 0);
/// assert!(t.merge(Hlc::new(1_000, 3)));
/// assert!(Hlc::new(999, 50) < t);
/// assert_eq!((t.wall_ms(), t.logical()), (1_000, 3));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "HlcParts", into = "HlcParts")
)]
// The milliseconds and the counter packed in one `u64` (milliseconds above), held
// complemented so that it is never zero: `Option<Hlc>`, and an optional register holding
// a stamp, take no more room than the timestamp (a register's bottom is `None`). The one
// packing that would complement to zero, the last millisecond's last count, is never made.
pub struct Hlc(NonZeroU64);

impl Default for Hlc {
    fn default() -> Self {
        Hlc::ZERO
    }
}

impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.packed().cmp(&other.packed())
    }
}

/// The bits of an [`Hlc`] that hold the logical counter.
const LOGICAL_BITS: u32 = 16;

impl Hlc {
    /// The zero timestamp (bottom).
    pub const ZERO: Hlc = Hlc::from_packed(0);

    /// The latest timestamp: the last millisecond, its counter at `u16::MAX - 1` (its last
    /// count is never used).
    const TOP: u64 = u64::MAX - 1;

    /// The latest physical time a timestamp holds: 2^48 - 1 milliseconds after the epoch.
    pub const MAX_WALL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

    /// A timestamp from its parts; a `wall_ms` beyond [`Hlc::MAX_WALL_MS`] is taken as it
    /// (and at that millisecond, a `logical` of `u16::MAX` as `u16::MAX - 1`).
    pub const fn new(wall_ms: u64, logical: u16) -> Self {
        let wall_ms = if wall_ms > Self::MAX_WALL_MS {
            Self::MAX_WALL_MS
        } else {
            wall_ms
        };
        Hlc::from_packed((wall_ms << LOGICAL_BITS) | logical as u64)
    }

    /// The timestamp packed as `packed` (at most [`Hlc::TOP`]).
    const fn from_packed(packed: u64) -> Hlc {
        let packed = if packed > Self::TOP {
            Self::TOP
        } else {
            packed
        };
        match NonZeroU64::new(!packed) {
            Some(complement) => Hlc(complement),
            // `!packed` is at least 1 for every packing up to `TOP`.
            None => Hlc(NonZeroU64::MAX),
        }
    }

    /// The milliseconds above the counter.
    const fn packed(self) -> u64 {
        !self.0.get()
    }

    /// Physical time in milliseconds (since the Unix epoch, by convention).
    pub const fn wall_ms(self) -> u64 {
        self.packed() >> LOGICAL_BITS
    }

    /// Orders events that share [`wall_ms`](Hlc::wall_ms).
    pub const fn logical(self) -> u16 {
        self.packed() as u16
    }

    /// The next timestamp after this one within the same millisecond, or the first of the
    /// next millisecond when the logical counter is exhausted (the same step, as the
    /// millisecond sits just above the counter).
    fn successor(self) -> Hlc {
        Hlc::from_packed(self.packed().saturating_add(1))
    }
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("wall_ms", &self.wall_ms())
            .field("logical", &self.logical())
            .finish()
    }
}

/// How an [`Hlc`] is encoded: as its two parts, the logical counter in 32 bits (the form it
/// always had, so stored and sent values are unchanged).
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "Hlc")]
struct HlcParts {
    wall_ms: u64,
    logical: u32,
}

#[cfg(feature = "serde")]
impl From<Hlc> for HlcParts {
    fn from(hlc: Hlc) -> Self {
        HlcParts {
            wall_ms: hlc.wall_ms(),
            logical: u32::from(hlc.logical()),
        }
    }
}

/// An encoded [`Hlc`] whose parts do not fit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HlcOutOfRange {
    /// The encoded milliseconds.
    pub wall_ms: u64,
    /// The encoded logical counter.
    pub logical: u32,
}

impl std::fmt::Display for HlcOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timestamp out of range: {} ms (at most {}) and logical counter {} (at most {}, and {} at the last millisecond)",
            self.wall_ms,
            Hlc::MAX_WALL_MS,
            self.logical,
            u16::MAX,
            u16::MAX - 1
        )
    }
}

impl std::error::Error for HlcOutOfRange {}

#[cfg(feature = "serde")]
impl TryFrom<HlcParts> for Hlc {
    type Error = HlcOutOfRange;

    fn try_from(parts: HlcParts) -> Result<Self, Self::Error> {
        match u16::try_from(parts.logical) {
            Ok(logical)
                if parts.wall_ms < Hlc::MAX_WALL_MS
                    || (parts.wall_ms == Hlc::MAX_WALL_MS && logical < u16::MAX) =>
            {
                Ok(Hlc::new(parts.wall_ms, logical))
            }
            _ => Err(HlcOutOfRange {
                wall_ms: parts.wall_ms,
                logical: parts.logical,
            }),
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
        self.packed() == Hlc::TOP
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
            self.remote.wall_ms(),
            self.remote.wall_ms().saturating_sub(self.local_wall_ms),
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
        // A physical time past the range is its end (taken there afresh each time, the
        // timestamps would not grow).
        let wall_ms = wall_ms.min(Hlc::MAX_WALL_MS);
        self.last = if wall_ms > self.last.wall_ms() {
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
        if remote.wall_ms() > wall_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockDrift {
                remote,
                local_wall_ms: wall_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let latest = self.last.max(remote);
        self.last = match wall_ms.min(Hlc::MAX_WALL_MS).cmp(&latest.wall_ms()) {
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
            (0u64..4, 0u16..3).prop_map(|(w, l)| Hlc::new(w, l)), 0..6)) {
            laws::check_all(&items);
            laws::check_atomize(&items);
        }

        /// Whatever the physical clock does, issued timestamps strictly increase and exceed
        /// everything observed.
        #[test]
        fn clock_is_monotone(events in proptest::collection::vec(
            (any::<bool>(), 0u64..100, 0u64..120, 0u16..3), 1..40)) {
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
                prop_assert!(t.wall_ms() >= wall, "an HLC never runs behind physical time");
                prev = t;
            }
        }
    }

    proptest! {
        /// Packed in 8 bytes, a timestamp orders and reads back as its two parts did (all
        /// but the very last, see `the_last_count_is_never_made`).
        #[test]
        fn packed_orders_as_its_parts(a in (0u64..=Hlc::MAX_WALL_MS, any::<u16>()),
                                      b in (0u64..=Hlc::MAX_WALL_MS, any::<u16>())) {
            let last = (Hlc::MAX_WALL_MS, u16::MAX);
            prop_assume!(a != last && b != last);
            let (x, y) = (Hlc::new(a.0, a.1), Hlc::new(b.0, b.1));
            prop_assert_eq!((x.wall_ms(), x.logical()), a);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }
    }

    #[test]
    fn is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Hlc>(), 8);
        assert_eq!(std::mem::size_of::<crate::Stamp>(), 16);
        // Never zero inside: an optional stamp is no larger.
        assert_eq!(std::mem::size_of::<Option<crate::Stamp>>(), 16);
    }

    /// The last millisecond's last count is the one timestamp not held: made, it is the
    /// count before (the top); decoded, it is refused.
    #[test]
    fn the_last_count_is_never_made() {
        let top = Hlc::new(Hlc::MAX_WALL_MS, u16::MAX);
        assert_eq!(top, Hlc::new(Hlc::MAX_WALL_MS, u16::MAX - 1));
        assert!(top.is_top() && !Hlc::new(Hlc::MAX_WALL_MS, 3).is_top());
        assert!(Hlc::ZERO.is_bot() && Hlc::default() == Hlc::ZERO);
        assert!(Hlc::ZERO < Hlc::new(0, 1) && Hlc::new(0, 1) < top);
        let mut clock = HlcClock::new(0);
        assert_eq!(clock.tick(u64::MAX), Hlc::new(Hlc::MAX_WALL_MS, 0));
        for _ in 0..70_000 {
            assert!(clock.tick(u64::MAX) <= top);
        }
        assert_eq!(clock.last(), top, "a clock at the top stays there");
        #[cfg(feature = "serde")]
        {
            let config = bincode::config::standard();
            let parts = (Hlc::MAX_WALL_MS, u32::from(u16::MAX));
            let bytes = bincode::serde::encode_to_vec(parts, config).unwrap();
            assert!(bincode::serde::decode_from_slice::<Hlc, _>(&bytes, config).is_err());
            let bytes = bincode::serde::encode_to_vec(top, config).unwrap();
            let (back, _): (Hlc, usize) =
                bincode::serde::decode_from_slice(&bytes, config).unwrap();
            assert_eq!(back, top);
        }
    }

    /// The encoding is the two parts with a 32-bit counter, as before the packing; parts that
    /// do not fit are refused with a typed error.
    #[cfg(feature = "serde")]
    #[test]
    fn encodes_as_its_parts_and_refuses_what_does_not_fit() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Parts {
            wall_ms: u64,
            logical: u32,
        }
        let config = bincode::config::standard();
        let hlc = Hlc::new(1_764_000_000_123, 7);
        let encoded = bincode::serde::encode_to_vec(hlc, config).unwrap();
        let parts = Parts {
            wall_ms: 1_764_000_000_123,
            logical: 7,
        };
        assert_eq!(
            encoded,
            bincode::serde::encode_to_vec(&parts, config).unwrap()
        );
        let (back, _): (Hlc, usize) = bincode::serde::decode_from_slice(&encoded, config).unwrap();
        assert_eq!(back, hlc);
        assert_eq!(
            serde_json::to_string(&hlc).unwrap(),
            r#"{"wall_ms":1764000000123,"logical":7}"#
        );
        for (wall_ms, logical) in [(Hlc::MAX_WALL_MS + 1, 0), (5, u32::from(u16::MAX) + 1)] {
            let bytes = bincode::serde::encode_to_vec(Parts { wall_ms, logical }, config).unwrap();
            let err = bincode::serde::decode_from_slice::<Hlc, _>(&bytes, config).unwrap_err();
            assert!(err.to_string().contains("timestamp out of range"), "{err}");
        }
    }

    #[test]
    fn wall_time_beyond_the_range_saturates() {
        assert_eq!(Hlc::new(u64::MAX, 3).wall_ms(), Hlc::MAX_WALL_MS);
        let mut top = HlcClock::new(0);
        let t = top.tick(u64::MAX);
        assert_eq!(t, Hlc::new(Hlc::MAX_WALL_MS, 0));
    }

    #[test]
    fn logical_overflow_moves_to_next_millisecond() {
        let mut clock = HlcClock::new(0);
        assert_eq!(
            clock.observe(Hlc::new(10, u16::MAX), 10),
            Ok(Hlc::new(11, 0))
        );
        assert_eq!(clock.tick(10), Hlc::new(11, 1));
    }
}
