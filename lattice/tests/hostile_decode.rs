//! Decoding never trusts the bytes: encodings of non-canonical or invalid states decode to
//! the canonical state they stand for, and random bytes give an error or a value, never a
//! panic. Values arrive from the network and from disk, so this matters.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use calm_lattice::{
    BoundedSet, CausalContext, Dot, MapUnion, Max, Merge, MultiKeyCausal, OrMap, OrSet, PNCounter,
    ReplicaId, SingleKeyCausal, TopK, VectorClock, laws,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn reencode<From: Serialize, To: DeserializeOwned>(raw: &From) -> To {
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(raw, cfg).expect("encoding in memory");
    bincode::serde::decode_from_slice(&bytes, cfg)
        .expect("a well-formed encoding decodes")
        .0
}

/// Same shape as a causal context on the wire.
#[derive(Serialize)]
struct RawContext {
    prefix: BTreeMap<ReplicaId, u64>,
    cloud: BTreeSet<Dot>,
}

/// Same shape as an observed-remove set on the wire.
#[derive(Serialize)]
struct RawDotStore {
    entries: BTreeMap<String, BTreeMap<Dot, ()>>,
    context: RawContext,
}

#[derive(Serialize)]
enum RawBoundedSet {
    Elements(BTreeSet<u8>),
    #[allow(dead_code)]
    Overflow,
}

fn r(n: u64) -> ReplicaId {
    ReplicaId(n)
}

#[test]
fn zero_counters_are_dropped_from_clocks() {
    let clock: VectorClock = reencode(&BTreeMap::from([(r(1), 0u64), (r(2), 3)]));
    assert_eq!(clock, VectorClock::new_from([(r(2), 3)]));
}

#[test]
fn causal_context_is_compacted() {
    let raw = RawContext {
        prefix: BTreeMap::from([(r(1), 2), (r(5), 0)]),
        cloud: BTreeSet::from([Dot::new(r(1), 3), Dot::new(r(1), 1), Dot::new(r(2), 0)]),
    };
    let cc: CausalContext = reencode(&raw);
    assert_eq!(
        cc,
        CausalContext::from_dots((1..=3).map(|c| Dot::new(r(1), c)))
    );
}

#[test]
fn or_set_live_dots_join_the_context_and_empty_keys_go() {
    let raw = RawDotStore {
        entries: BTreeMap::from([
            ("x".to_string(), BTreeMap::from([(Dot::new(r(1), 5), ())])),
            ("y".to_string(), BTreeMap::new()),
        ]),
        context: RawContext {
            prefix: BTreeMap::new(),
            cloud: BTreeSet::new(),
        },
    };
    let set: OrSet<String> = reencode(&raw);
    assert_eq!(set.iter().collect::<Vec<_>>(), vec!["x"]);
    assert!(set.context().contains(&Dot::new(r(1), 5)));
    // A replica that saw dot 5 and removed it wins over the decoded state, as it should.
    let mut removed = OrSet::<String>::default();
    removed.merge(set.clone());
    removed.remove(&"x".to_string());
    assert!(!set.clone().merge_owned(removed).contains(&"x".to_string()));
}

#[test]
fn bounded_collections_respect_their_bound() {
    let top: TopK<u8, 2> = reencode(&BTreeSet::from([1u8, 2, 3, 4]));
    assert_eq!(top.iter().copied().collect::<Vec<_>>(), vec![3, 4]);
    let bounded: BoundedSet<u8, 2> = reencode(&RawBoundedSet::Elements(BTreeSet::from([1, 2, 3])));
    assert_eq!(bounded, BoundedSet::Overflow);
}

#[test]
fn bottom_values_are_dropped_from_maps() {
    let map: MapUnion<u8, Max<u8>> = reencode(&BTreeMap::from([(1u8, 0u8), (2, 5)]));
    assert_eq!(map, MapUnion::new_from([(2, Max::new(5))]));
}

#[test]
fn dominated_and_duplicate_versions_are_dropped() {
    let raw = vec![
        (BTreeMap::from([(r(1), 1u64)]), 10u8),
        (BTreeMap::from([(r(1), 2)]), 20),
        (BTreeMap::from([(r(1), 2)]), 20),
        (BTreeMap::from([(r(2), 1)]), 30),
    ];
    let reg: SingleKeyCausal<u8> = reencode(&raw);
    assert_eq!(reg.values().copied().collect::<Vec<_>>(), vec![20, 30]);
}

/// Decoding untrusted bytes must bound what a length prefix may claim: without a limit,
/// bincode allocates whatever a hostile prefix asks for and the process aborts. This is the
/// configuration calm uses for anything read from the network or from disk.
fn untrusted() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

fn survives<T: DeserializeOwned + Merge + Clone + Eq + Debug>(bytes: &[u8]) {
    let cfg = untrusted();
    if let Ok((value, _)) = bincode::serde::decode_from_slice::<T, _>(bytes, cfg) {
        // Whatever decoded is a proper lattice value: the laws hold with itself.
        laws::check_lattice_properties(&[value]);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        survives::<OrSet<String>>(&bytes);
        survives::<OrMap<String, PNCounter>>(&bytes);
        survives::<MultiKeyCausal<String, String>>(&bytes);
        survives::<SingleKeyCausal<Vec<u8>>>(&bytes);
        survives::<TopK<u16, 3>>(&bytes);
        survives::<BoundedSet<u8, 2>>(&bytes);
        survives::<MapUnion<u8, Max<u64>>>(&bytes);
        survives::<VectorClock>(&bytes);
    }
}
