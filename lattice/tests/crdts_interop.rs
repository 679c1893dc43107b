//! Differential tests against the `crdts` crate: the same random operations, applied to our
//! types and to theirs on several replicas that sync at random, give the same visible values
//! at every step. Also: `crdts` types through our adapter obey the lattice laws.

use std::collections::BTreeSet;

use calm_lattice::crdts_interop::Crdt;
use calm_lattice::{
    GCounter, Merge, OrSet, PNCounter, ReplicaId, SingleKeyCausal, VectorClock, laws,
};
use crdts::{CmRDT, CvRDT, MVReg, Orswot};
use proptest::prelude::*;

const REPLICAS: usize = 3;

#[derive(Clone, Debug)]
enum SetOp {
    Add(usize, u8),
    Remove(usize, u8),
    Sync(usize, usize),
}

fn set_ops() -> impl Strategy<Value = Vec<SetOp>> {
    proptest::collection::vec(
        prop_oneof![
            (0..REPLICAS, 0u8..5).prop_map(|(r, x)| SetOp::Add(r, x)),
            (0..REPLICAS, 0u8..5).prop_map(|(r, x)| SetOp::Remove(r, x)),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(a, b)| SetOp::Sync(a, b)),
        ],
        0..40,
    )
}

#[derive(Clone, Debug)]
enum CountOp {
    Incr(usize, u8),
    Decr(usize, u8),
    Sync(usize, usize),
}

fn count_ops() -> impl Strategy<Value = Vec<CountOp>> {
    proptest::collection::vec(
        prop_oneof![
            (0..REPLICAS, 1u8..10).prop_map(|(r, n)| CountOp::Incr(r, n)),
            (0..REPLICAS, 1u8..10).prop_map(|(r, n)| CountOp::Decr(r, n)),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(a, b)| CountOp::Sync(a, b)),
        ],
        0..40,
    )
}

proptest! {
    #[test]
    fn or_set_matches_orswot(ops in set_ops()) {
        let mut ours = vec![OrSet::<u8>::default(); REPLICAS];
        let mut theirs = vec![Orswot::<u8, u64>::new(); REPLICAS];
        for op in &ops {
            match *op {
                SetOp::Add(r, x) => {
                    ours[r].add(ReplicaId(r as u64), x);
                    let ctx = theirs[r].read_ctx().derive_add_ctx(r as u64);
                    let add = theirs[r].add(x, ctx);
                    theirs[r].apply(add);
                }
                SetOp::Remove(r, x) => {
                    ours[r].remove(&x);
                    let ctx = theirs[r].contains(&x).derive_rm_ctx();
                    let rm = theirs[r].rm(x, ctx);
                    theirs[r].apply(rm);
                }
                SetOp::Sync(a, b) => {
                    let (o, t) = (ours[b].clone(), theirs[b].clone());
                    ours[a].merge(o);
                    theirs[a].merge(t);
                }
            }
            for r in 0..REPLICAS {
                let mine: BTreeSet<u8> = ours[r].iter().copied().collect();
                let other: BTreeSet<u8> = theirs[r].read().val.into_iter().collect();
                prop_assert_eq!(mine, other, "replica {} after {:?}", r, op);
            }
        }
    }

    #[test]
    fn counters_match_crdts(ops in count_ops()) {
        let mut ours = vec![PNCounter::default(); REPLICAS];
        let mut theirs = vec![crdts::PNCounter::<u64>::new(); REPLICAS];
        let mut ours_g = vec![GCounter::default(); REPLICAS];
        let mut theirs_g = vec![crdts::GCounter::<u64>::new(); REPLICAS];
        for op in &ops {
            match *op {
                CountOp::Incr(r, n) => {
                    ours[r].increment(ReplicaId(r as u64), u64::from(n));
                    let inc = theirs[r].inc_many(r as u64, u64::from(n));
                    theirs[r].apply(inc);
                    ours_g[r].increment(ReplicaId(r as u64), u64::from(n));
                    let inc = theirs_g[r].inc_many(r as u64, u64::from(n));
                    theirs_g[r].apply(inc);
                }
                CountOp::Decr(r, n) => {
                    ours[r].decrement(ReplicaId(r as u64), u64::from(n));
                    let dec = theirs[r].dec_many(r as u64, u64::from(n));
                    theirs[r].apply(dec);
                }
                CountOp::Sync(a, b) => {
                    let (o, t) = (ours[b].clone(), theirs[b].clone());
                    ours[a].merge(o);
                    theirs[a].merge(t);
                    let (o, t) = (ours_g[b].clone(), theirs_g[b].clone());
                    ours_g[a].merge(o);
                    theirs_g[a].merge(t);
                }
            }
            for r in 0..REPLICAS {
                prop_assert_eq!(ours[r].value().to_string(), theirs[r].read().to_string());
                prop_assert_eq!(ours_g[r].value().to_string(), theirs_g[r].read().to_string());
                // And the conversion gives exactly their state.
                prop_assert_eq!(crdts::PNCounter::from(&ours[r]), theirs[r].clone());
                prop_assert_eq!(crdts::GCounter::from(&ours_g[r]), theirs_g[r].clone());
            }
        }
    }

    #[test]
    fn single_key_causal_matches_mvreg(ops in proptest::collection::vec(
        prop_oneof![
            (0..REPLICAS, 0u8..4).prop_map(|(r, v)| (r, Some(v), 0)),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(a, b)| (a, None, b)),
        ], 0..30)) {
        let mut ours = vec![SingleKeyCausal::<u8>::default(); REPLICAS];
        let mut theirs = vec![MVReg::<u8, u64>::new(); REPLICAS];
        for &(r, write, from) in &ops {
            match write {
                Some(v) => {
                    ours[r].write(ReplicaId(r as u64), v);
                    let ctx = theirs[r].read_ctx().derive_add_ctx(r as u64);
                    let w = theirs[r].write(v, ctx);
                    theirs[r].apply(w);
                }
                None => {
                    let (o, t) = (ours[from].clone(), theirs[from].clone());
                    ours[r].merge(o);
                    theirs[r].merge(t);
                }
            }
            for r in 0..REPLICAS {
                let mut mine: Vec<u8> = ours[r].values().copied().collect();
                let mut other = theirs[r].read().val;
                mine.sort();
                other.sort();
                prop_assert_eq!(mine, other);
                prop_assert_eq!(ours[r].clock(), VectorClock::from(&theirs[r].read_ctx().add_clock));
            }
        }
    }

    #[test]
    fn vclock_conversion_keeps_order(a in proptest::collection::btree_map(0u64..3, 1u64..4, 0..3),
                                     b in proptest::collection::btree_map(0u64..3, 1u64..4, 0..3)) {
        let ours_a = VectorClock::new_from(a.iter().map(|(r, n)| (ReplicaId(*r), *n)));
        let ours_b = VectorClock::new_from(b.iter().map(|(r, n)| (ReplicaId(*r), *n)));
        let theirs_a = crdts::VClock::from(&ours_a);
        let theirs_b = crdts::VClock::from(&ours_b);
        prop_assert_eq!(VectorClock::from(&theirs_a), ours_a.clone());
        prop_assert_eq!(ours_a.partial_cmp(&ours_b), theirs_a.partial_cmp(&theirs_b));
    }

    /// crdts' Orswot, through our adapter, obeys our lattice laws.
    #[test]
    fn adapter_obeys_laws(ops in set_ops()) {
        let mut replicas = vec![Orswot::<u8, u64>::new(); REPLICAS];
        for op in &ops {
            match *op {
                SetOp::Add(r, x) => {
                    let ctx = replicas[r].read_ctx().derive_add_ctx(r as u64);
                    let add = replicas[r].add(x, ctx);
                    replicas[r].apply(add);
                }
                SetOp::Remove(r, x) => {
                    let ctx = replicas[r].contains(&x).derive_rm_ctx();
                    let rm = replicas[r].rm(x, ctx);
                    replicas[r].apply(rm);
                }
                SetOp::Sync(a, b) => {
                    let from = replicas[b].clone();
                    replicas[a].merge(from);
                }
            }
        }
        let items: Vec<Crdt<Orswot<u8, u64>>> = replicas.into_iter().map(Crdt).collect();
        laws::check_lattice_properties(&items);
        laws::check_order(&items);
        laws::check_bot(&items);
    }
}
