//! Convergence under a hostile network: replicas apply random operations and ship each
//! delta to every other replica through a channel that duplicates, reorders, and drops
//! messages (a dropped message is resent later, as acknowledged gossip would). Once every
//! message is through, all replicas must be equal — and equal to the merge of every delta.
//!
//! A failing case prints its seed; rerun it with that seed to replay it exactly.

use std::fmt::Debug;

use calm_lattice::{
    BoundedSet, GCounter, Hlc, Lww, MapUnion, Max, Merge, MultiKeyCausal, OrMap, OrSet, PNCounter,
    Priority, ReplicaId, SetUnionBTreeSet, SingleKeyCausal, Stamp, TopK, VectorClock,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const REPLICAS: usize = 4;
const OPS: usize = 60;

struct Message<L> {
    to: usize,
    delta: L,
}

/// Runs one seeded scenario; returns an error naming the seed if replicas disagree.
fn converge<L, F>(seed: u64, mut op: F) -> Result<(), String>
where
    L: Merge + Clone + Eq + Debug + Default,
    F: FnMut(&mut L, &mut StdRng, ReplicaId) -> L,
{
    let mut rng = StdRng::seed_from_u64(seed);
    let mut replicas = vec![L::default(); REPLICAS];
    let mut truth = L::default();
    let mut in_flight: Vec<Message<L>> = Vec::new();
    let mut retry: Vec<Message<L>> = Vec::new();

    let step = |rng: &mut StdRng,
                replicas: &mut Vec<L>,
                in_flight: &mut Vec<Message<L>>,
                retry: &mut Vec<Message<L>>| {
        if in_flight.is_empty() {
            return false;
        }
        let msg = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
        match rng.random_range(0..10) {
            0 | 1 => retry.push(msg), // dropped: the sender will resend it later
            2 => {
                // duplicated
                replicas[msg.to].merge(msg.delta.clone());
                in_flight.push(msg);
            }
            _ => {
                replicas[msg.to].merge(msg.delta);
            }
        }
        true
    };

    for _ in 0..OPS {
        let r = rng.random_range(0..REPLICAS);
        let delta = op(&mut replicas[r], &mut rng, ReplicaId(r as u64));
        truth.merge(delta.clone());
        for to in (0..REPLICAS).filter(|&to| to != r) {
            in_flight.push(Message {
                to,
                delta: delta.clone(),
            });
        }
        for _ in 0..rng.random_range(0..4) {
            step(&mut rng, &mut replicas, &mut in_flight, &mut retry);
        }
        if rng.random_bool(0.2) {
            in_flight.append(&mut retry);
        }
    }
    loop {
        in_flight.append(&mut retry);
        if !step(&mut rng, &mut replicas, &mut in_flight, &mut retry) && retry.is_empty() {
            break;
        }
    }
    for (i, r) in replicas.iter().enumerate() {
        if *r != truth {
            return Err(format!(
                "seed {seed}: replica {i} differs from the merge of all deltas\n  replica = {r:?}\n  truth   = {truth:?}"
            ));
        }
    }
    Ok(())
}

fn hlc(rng: &mut StdRng) -> Hlc {
    // Few distinct milliseconds: ties between replicas are common, on purpose.
    Hlc::new(rng.random_range(0..5), 0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn or_set(seed in any::<u64>()) {
        converge(seed, |s: &mut OrSet<u8>, rng, id| {
            let x = rng.random_range(0..6);
            match rng.random_range(0..4) {
                0 => s.remove(&x),
                1 if rng.random_bool(0.1) => s.clear(),
                _ => s.add(id, x),
            }
        }).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn or_map_of_counters(seed in any::<u64>()) {
        converge(seed, |m: &mut OrMap<u8, PNCounter>, rng, id| {
            let k = rng.random_range(0..4);
            match rng.random_range(0..5) {
                0 => m.remove(&k),
                1 => m.update(id, k, |c| { c.decrement(id, 1); }),
                _ => m.update(id, k, |c| { c.increment(id, 2); }),
            }
        }).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn counters(seed in any::<u64>()) {
        converge(seed, |c: &mut PNCounter, rng, id| {
            let by = rng.random_range(1..5);
            if rng.random_bool(0.5) { c.increment(id, by) } else { c.decrement(id, by) }
        }).map_err(TestCaseError::fail)?;
        converge(seed, |c: &mut GCounter, rng, id| c.increment(id, rng.random_range(1..5)))
            .map_err(TestCaseError::fail)?;
    }

    #[test]
    fn registers(seed in any::<u64>()) {
        converge(seed, |reg: &mut Lww<u8>, rng, id| {
            let at = Stamp::new(hlc(rng), id);
            reg.write(at, rng.random_range(0..4))
        }).map_err(TestCaseError::fail)?;
        converge(seed, |reg: &mut SingleKeyCausal<u8>, rng, id| reg.write(id, rng.random_range(0..4)))
            .map_err(TestCaseError::fail)?;
        converge(seed, |reg: &mut MultiKeyCausal<u8, u8>, rng, id| {
            let dep = (rng.random_range(0..3), VectorClock::new_from([(ReplicaId(9), rng.random_range(1..4))]));
            reg.write(id, rng.random_range(0..4), [dep])
        }).map_err(TestCaseError::fail)?;
        converge(seed, |p: &mut Priority<u8, u8>, rng, _| p.offer(rng.random_range(0..10), rng.random_range(0..3)))
            .map_err(TestCaseError::fail)?;
    }

    #[test]
    fn grow_only_collections(seed in any::<u64>()) {
        converge(seed, |c: &mut VectorClock, _, id| c.increment(id)).map_err(TestCaseError::fail)?;
        converge(seed, |s: &mut SetUnionBTreeSet<u8>, rng, _| {
            SetUnionBTreeSet::default().merge_owned(s.insert(rng.random_range(0..20)))
        }).map_err(TestCaseError::fail)?;
        converge(seed, |m: &mut MapUnion<u8, Max<u8>>, rng, _| m.merge_key(rng.random_range(0..5), Max::new(rng.random())))
            .map_err(TestCaseError::fail)?;
        converge(seed, |t: &mut TopK<u8, 3>, rng, _| t.insert(rng.random()))
            .map_err(TestCaseError::fail)?;
        converge(seed, |b: &mut BoundedSet<u8, 8>, rng, _| b.insert(rng.random_range(0..10)))
            .map_err(TestCaseError::fail)?;
    }
}
