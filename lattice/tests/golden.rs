//! Golden wire vectors: the bincode 2 bytes of a fixed set of values are checked in under
//! `tests/golden/`, so any change to how a lattice is encoded fails here until the vectors
//! are regenerated on purpose:
//!
//! ```text
//! CALM_BLESS_GOLDEN=1 cargo test -p calm-lattice --test golden
//! ```
//!
//! Each vector also decodes back to its value, and every truncation of it is refused with
//! an error (never a panic).

use std::fmt::Debug;
use std::path::PathBuf;

use calm_lattice::{
    BoundedSet, CausalContext, Conflict, DomPair, Dot, GCounter, Hlc, Lww, MapUnion, Max, Min,
    MultiKeyCausal, OrMap, OrSet, OrderedSet, PNCounter, Pair, Priority, ReplicaId,
    SetUnionBTreeSet, SingleKeyCausal, Stamp, TopK, VectorClock, WithBot, WithTop,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 32 == 0 {
            out.push('\n');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out.push('\n');
    out
}

/// Checks one value against its vector; returns a description of any mismatch.
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    name: &str,
    value: &T,
) -> Option<String> {
    let bytes = bincode::serde::encode_to_vec(value, config()).expect("encoding a value in memory");
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "golden",
        &format!("{name}.hex"),
    ]
    .iter()
    .collect();
    let encoded = hex(&bytes);
    if std::env::var_os("CALM_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, &encoded).expect("writing a golden vector");
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => return Some(format!("{name}: cannot read {}: {e}", path.display())),
    };
    if expected != encoded {
        return Some(format!(
            "{name}: encoding changed\n  expected: {}\n  now:      {}",
            expected.trim(),
            encoded.trim()
        ));
    }
    let (decoded, used): (T, usize) = match bincode::serde::decode_from_slice(&bytes, config()) {
        Ok(d) => d,
        Err(e) => return Some(format!("{name}: does not decode: {e}")),
    };
    if decoded != *value || used != bytes.len() {
        return Some(format!(
            "{name}: decodes to {decoded:?} using {used} of {} bytes",
            bytes.len()
        ));
    }
    for cut in 0..bytes.len() {
        if bincode::serde::decode_from_slice::<T, _>(&bytes[..cut], config()).is_ok() {
            return Some(format!(
                "{name}: a truncation to {cut} bytes decoded without error"
            ));
        }
    }
    None
}

#[test]
fn golden_vectors() {
    let (a, b, c) = (ReplicaId(1), ReplicaId(2), ReplicaId(3));
    let stamp = Stamp::new(Hlc::new(1_700_000_000_000, 2), b);

    let mut or_set = OrSet::default();
    or_set.add(a, "milk".to_string());
    or_set.add(b, "eggs".to_string());
    or_set.remove(&"milk".to_string());
    let mut cart = OrMap::<String, PNCounter>::default();
    cart.update(a, "apple".to_string(), |n| {
        n.increment(a, 3);
    });
    cart.update(c, "pear".to_string(), |n| {
        n.decrement(c, 1);
    });
    let mut single = SingleKeyCausal::default();
    single.write(a, "v1".to_string());
    let mut other = SingleKeyCausal::default();
    other.write(b, "v2".to_string());
    single = calm_lattice::Merge::merge_owned(single, other);
    let mut multi = MultiKeyCausal::<String, String>::default();
    multi.write(
        c,
        "reply".to_string(),
        [("tweet/1".to_string(), VectorClock::new_from([(a, 4)]))],
    );
    let mut pn = PNCounter::default();
    pn.increment(a, 10);
    pn.decrement(b, 4);

    let failures: Vec<String> = [
        check("max", &Max::new(42u64)),
        check("min", &Min::new(7i32)),
        check(
            "set_union",
            &SetUnionBTreeSet::new_from(["a".to_string(), "b".to_string()]),
        ),
        check("ordered_set", &OrderedSet::new_from([3u32, 1, 2])),
        check(
            "map_union",
            &MapUnion::new_from([("x".to_string(), Max::new(5u64))]),
        ),
        check("pair", &Pair::new(Max::new(1u8), Min::new(9u8))),
        check(
            "dom_pair",
            &DomPair::new(Max::new(3u64), SetUnionBTreeSet::new_from([1u8])),
        ),
        check("with_bot", &WithBot::new_from(Max::new(-5i64))),
        check("with_top", &WithTop::<Max<u8>>::top()),
        check("conflict", &Conflict::new("owner".to_string())),
        check("hlc", &Hlc::new(1_700_000_000_000, 3)),
        check("lww", &Lww::new(stamp, b"value".to_vec())),
        check("vector_clock", &VectorClock::new_from([(a, 3), (c, 1)])),
        check("single_key_causal", &single),
        check("multi_key_causal", &multi),
        check("priority", &Priority::new(5u32, "route".to_string())),
        check("top_k", &TopK::<u32, 3>::new_from([5, 1, 9, 7])),
        check("bounded_set", &BoundedSet::<u8, 4>::new_from([1, 2])),
        check(
            "bounded_set_overflow",
            &BoundedSet::<u8, 1>::new_from([1, 2]),
        ),
        check("g_counter", &GCounter::new_from([(a, 5), (b, 2)])),
        check("pn_counter", &pn),
        check(
            "causal_context",
            &CausalContext::from_dots([Dot::new(a, 1), Dot::new(a, 2), Dot::new(b, 5)]),
        ),
        check("or_set", &or_set),
        check("or_map", &cart),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        failures.is_empty(),
        "golden vectors differ (if the change is deliberate, regenerate with CALM_BLESS_GOLDEN=1):\n{}",
        failures.join("\n")
    );
}
