//! Interop with the [`crdts`] crate (feature `crdts`).
//!
//! - [`Crdt`] wraps any `crdts` state-based type (`Orswot`, `GCounter`, `PNCounter`,
//!   `MVReg`, `VClock`, ...) so it can be used where this crate's traits are expected: in
//!   generic code, in [`MapUnion`](crate::MapUnion) values, and under the law checkers.
//! - Conversions move clocks and counters between the two crates, with replica ids as
//!   `crdts` actors (`u64`).
//!
//! ```
//! use calm_lattice::crdts_interop::Crdt;
//! use calm_lattice::{IsBot, Merge};
//! use crdts::{CmRDT, Orswot};
//!
//! let mut a = Crdt(Orswot::<&str, u64>::new());
//! let add = a.0.add("x", a.0.read_ctx().derive_add_ctx(1));
//! a.0.apply(add);
//! let mut b = Crdt::default();
//! assert!(b.is_bot());
//! assert!(b.merge(a.clone())); // our Merge, with an honest "changed"
//! assert!(!b.merge(a));
//! ```

use std::cmp::Ordering;

use crdts::{CmRDT, CvRDT};

use crate::{GCounter, IsBot, IsTop, Merge, PNCounter, ReplicaId, VectorClock, order_by_merge};

/// A `crdts` type seen through this crate's traits.
///
/// `merge` uses the type's own `CvRDT::merge` and reports a change by comparing with the
/// state before (one clone per merge). The order is derived from merge, so it agrees with it
/// by construction. `crdts` types have no top.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Crdt<T>(pub T);

impl<T: CvRDT + Clone + PartialEq> Merge for Crdt<T> {
    fn merge(&mut self, other: Self) -> bool {
        let before = self.0.clone();
        self.0.merge(other.0);
        self.0 != before
    }
}

impl<T: CvRDT + Clone + Eq> PartialOrd for Crdt<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        order_by_merge(self, other)
    }
}

impl<T: Default + PartialEq> IsBot for Crdt<T> {
    fn is_bot(&self) -> bool {
        self.0 == T::default()
    }
}

impl<T> IsTop for Crdt<T> {
    fn is_top(&self) -> bool {
        false
    }
}

impl From<&crdts::VClock<u64>> for VectorClock {
    fn from(clock: &crdts::VClock<u64>) -> Self {
        VectorClock::new_from(clock.dots.iter().map(|(a, n)| (ReplicaId(*a), *n)))
    }
}

impl From<&VectorClock> for crdts::VClock<u64> {
    fn from(clock: &VectorClock) -> Self {
        let mut out = crdts::VClock::new();
        for (r, n) in clock.iter() {
            out.apply(crdts::Dot::new(r.0, n));
        }
        out
    }
}

impl From<&GCounter> for crdts::GCounter<u64> {
    fn from(counter: &GCounter) -> Self {
        let mut out = crdts::GCounter::new();
        for (r, n) in counter.iter() {
            out.apply(crdts::Dot::new(r.0, n));
        }
        out
    }
}

impl From<&PNCounter> for crdts::PNCounter<u64> {
    fn from(counter: &PNCounter) -> Self {
        use crdts::pncounter::{Dir, Op};
        let mut out = crdts::PNCounter::new();
        for (r, n) in counter.increments().iter() {
            out.apply(Op {
                dot: crdts::Dot::new(r.0, n),
                dir: Dir::Pos,
            });
        }
        for (r, n) in counter.decrements().iter() {
            out.apply(Op {
                dot: crdts::Dot::new(r.0, n),
                dir: Dir::Neg,
            });
        }
        out
    }
}
