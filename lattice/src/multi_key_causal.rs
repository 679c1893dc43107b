//! [`MultiKeyCausal`]: a causal multi-value register that also records what each write
//! depended on, for causally consistent reads across keys.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::versions::{Versions, antichain_order};
use crate::{Atomize, IsBot, IsTop, Merge, ReplicaId, VectorClock};

/// One version of a [`MultiKeyCausal`] value: the value and the versions of other keys the
/// writer had read (its dependencies).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: serde::Serialize, T: serde::Serialize",
        deserialize = "K: serde::Deserialize<'de> + Ord, T: serde::Deserialize<'de>"
    ))
)]
pub struct CausalVersion<K, T> {
    /// For each key this write depended on, the clock of the version it had read.
    pub deps: BTreeMap<K, VectorClock>,
    /// The value written.
    pub value: T,
}

// A total order only to keep versions in a canonical order; not a lattice order.
impl<K: Ord, T: Ord> Ord for CausalVersion<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        let deps = self
            .deps
            .iter()
            .zip(other.deps.iter())
            .map(|((ka, ca), (kb, cb))| ka.cmp(kb).then_with(|| ca.canonical_cmp(cb)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| self.deps.len().cmp(&other.deps.len()));
        deps.then_with(|| self.value.cmp(&other.value))
    }
}

impl<K: Ord, T: Ord> PartialOrd for CausalVersion<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A causal multi-value register whose writes carry their dependencies: Anna's
/// `MULTI_CAUSAL`, the value type of Cloudburst's causal consistency mode.
///
/// Like [`SingleKeyCausal`](crate::SingleKeyCausal), it keeps the causally maximal versions
/// (concurrent writes are all kept); each version also records, for every other key its
/// writer had read, the clock of that read. A cache uses the dependencies to expose only a
/// causal cut: it shows this version only once it holds versions of the dependencies at
/// least as new.
///
/// ```
/// use calm_lattice::{MultiKeyCausal, ReplicaId, VectorClock};
/// let r = ReplicaId(1);
/// let mut tweet = MultiKeyCausal::<&str, &str>::default();
/// tweet.write(r, "hi", [("alice/profile", VectorClock::new_from([(ReplicaId(9), 3)]))]);
/// let mut reply = MultiKeyCausal::<&str, &str>::default();
/// reply.write(r, "hello back", [("tweet/1", tweet.clock())]);
/// assert_eq!(reply.dependencies().get("tweet/1"), Some(&tweet.clock()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: serde::Serialize, T: serde::Serialize",
        deserialize = "K: serde::Deserialize<'de> + Ord, T: serde::Deserialize<'de> + Ord"
    ))
)]
pub struct MultiKeyCausal<K, T>(Versions<CausalVersion<K, T>>);

impl<K, T> Default for MultiKeyCausal<K, T> {
    fn default() -> Self {
        MultiKeyCausal(Versions::default())
    }
}

impl<K: Ord + Clone, T: Ord + Clone> MultiKeyCausal<K, T> {
    /// A register holding one version.
    pub fn new(clock: VectorClock, version: CausalVersion<K, T>) -> Self {
        MultiKeyCausal(Versions::single(clock, version))
    }

    /// Writes `value` at `replica` after everything this register has seen, recording
    /// `deps` (key, clock of the version read); returns the delta.
    pub fn write(
        &mut self,
        replica: ReplicaId,
        value: T,
        deps: impl IntoIterator<Item = (K, VectorClock)>,
    ) -> Self {
        let mut clock = self.0.clock();
        clock.increment(replica);
        let mut merged: BTreeMap<K, VectorClock> = BTreeMap::new();
        for (k, c) in deps {
            merged.entry(k).or_default().merge(c);
        }
        *self = MultiKeyCausal::new(
            clock,
            CausalVersion {
                deps: merged,
                value,
            },
        );
        self.clone()
    }

    /// The concurrent values, in order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| &v.value)
    }

    /// The versions: each with the clock of its write.
    pub fn versions(&self) -> impl Iterator<Item = (&VectorClock, &CausalVersion<K, T>)> {
        self.0.iter().map(|(c, v)| (c, v))
    }

    /// Everything this register has seen: the merge of its versions' clocks.
    pub fn clock(&self) -> VectorClock {
        self.0.clock()
    }

    /// What a reader must have seen to read this value causally: for each dependency key,
    /// the merge of the clocks every current version depends on.
    pub fn dependencies(&self) -> BTreeMap<K, VectorClock> {
        let mut all: BTreeMap<K, VectorClock> = BTreeMap::new();
        for (_, v) in self.0.iter() {
            for (k, c) in &v.deps {
                all.entry(k.clone()).or_default().merge(c.clone());
            }
        }
        all
    }
}

impl<K: Ord, T: Ord> Merge for MultiKeyCausal<K, T> {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl<K: Ord, T: Ord> PartialOrd for MultiKeyCausal<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        antichain_order(&self.0, &other.0)
    }
}

impl<K: Ord, T: Ord> IsBot for MultiKeyCausal<K, T> {
    fn is_bot(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K, T> IsTop for MultiKeyCausal<K, T> {
    fn is_top(&self) -> bool {
        false
    }
}

impl<K: Ord, T: Ord> Atomize for MultiKeyCausal<K, T> {
    type Atom = Self;

    fn atomize(self) -> impl Iterator<Item = Self> {
        self.0
            .into_items()
            .map(|(c, v)| MultiKeyCausal(Versions::single(c, v)))
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::laws;

    type Reg = MultiKeyCausal<u8, u8>;

    #[derive(Clone, Debug)]
    enum Op {
        Write(usize, u8, Option<(u8, u64)>),
        Sync(usize, usize),
    }

    fn replay(ops: &[Op]) -> Vec<Reg> {
        let mut replicas = vec![Reg::default(); 3];
        for op in ops {
            match *op {
                Op::Write(r, v, dep) => {
                    let deps = dep.map(|(k, n)| (k, VectorClock::new_from([(ReplicaId(7), n)])));
                    replicas[r].write(ReplicaId(r as u64), v, deps);
                }
                Op::Sync(a, b) => {
                    let from = replicas[b].clone();
                    replicas[a].merge(from);
                }
            }
        }
        replicas
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..3, proptest::option::of((0u8..2, 1u64..3)))
                    .prop_map(|(r, v, d)| Op::Write(r, v, d)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Sync(a, b)),
            ],
            0..10,
        )
    }

    proptest! {
        #[test]
        fn multi_key_causal_laws(ops in ops()) {
            let items = replay(&ops);
            laws::check_all(&items);
            laws::check_atomize(&items);
            laws::check_monotone(|m: &Reg| m.clock(), &items);
        }

        #[test]
        fn write_delta(ops in ops(), r in 0u64..3, v in 0u8..3) {
            let items = replay(&ops);
            for m in &items {
                laws::check_delta(m, &items, |m| m.write(ReplicaId(r), v, [(1, VectorClock::new_from([(ReplicaId(7), 1)]))]));
            }
        }
    }

    #[test]
    fn concurrent_writes_keep_their_own_dependencies() {
        let (a, b) = (ReplicaId(1), ReplicaId(2));
        let mut x = Reg::default();
        let mut y = Reg::default();
        x.write(a, 1, [(10, VectorClock::new_from([(a, 1)]))]);
        y.write(b, 2, [(11, VectorClock::new_from([(b, 4)]))]);
        x.merge(y);
        assert_eq!(x.values().count(), 2);
        let deps = x.dependencies();
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[&11], VectorClock::new_from([(b, 4)]));
    }
}
