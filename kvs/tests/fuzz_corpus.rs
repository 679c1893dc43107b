//! The fuzz targets (`fuzz/`, run by `scripts/fuzz`) replayed on every build: their seeds,
//! their checked-in corpora (`fuzz/corpus/TARGET`) and every input that once made one fail
//! (`fuzz/regressions/TARGET`, kept when the failure was fixed). None may fail again.
//!
//! `CALM_FUZZ_WRITE_SEEDS=1 cargo test -p calm-kvs --test fuzz_corpus` also writes the
//! seeds into the corpora (after the inputs the fuzz targets read change).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use calm_kvs::fuzzing;

/// A fuzz target: bytes in, a panic if they break it.
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("native_request", fuzzing::native_request),
    ("peer_message", fuzzing::peer_message),
    ("resp", fuzzing::resp),
    ("wal_recovery", fuzzing::wal_recovery),
    ("value_merge", fuzzing::value_merge),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
        .1
}

/// Runs `input` through `name`, naming the input if it fails.
fn replay(name: &str, what: &str, input: &[u8]) -> Result<(), String> {
    let run = target(name);
    catch_unwind(AssertUnwindSafe(|| run(input))).map_err(|e| {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{name}: {what} ({} bytes) failed: {why}", input.len())
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn seeds_cover_every_target_and_pass() {
    let seeds = fuzzing::seeds();
    let write = std::env::var_os("CALM_FUZZ_WRITE_SEEDS").is_some();
    let mut failures = Vec::new();
    for (name, _) in TARGETS {
        let mine: Vec<_> = seeds.iter().filter(|(n, _)| n == name).collect();
        assert!(mine.len() >= 2, "target {name} has {} seeds", mine.len());
        for (i, (_, input)) in mine.iter().enumerate() {
            if let Err(e) = replay(name, &format!("seed {i}"), input) {
                failures.push(e);
            }
            if write {
                let dir = fuzz_dir().join("corpus").join(name);
                std::fs::create_dir_all(&dir).unwrap();
                let hash = xxhash_rust::xxh3::xxh3_64(input);
                std::fs::write(dir.join(format!("seed-{hash:016x}")), input).unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpora_and_regressions_replay() {
    let mut failures = Vec::new();
    for (name, _) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "the corpus of {name} is missing: run scripts/fuzz (or write the seeds, see the module docs)"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let input = std::fs::read(path).unwrap();
            if let Err(e) = replay(name, &path.display().to_string(), &input) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small mutation fuzzer on the seeds, without libFuzzer's coverage guidance, so every
/// build runs each target on thousands of inputs it has not seen (a short run; `scripts/fuzz`
/// runs the real thing): bytes flipped, set, inserted, removed, cut, repeated, and splices
/// of two seeds. `CALM_FUZZ_MUTATIONS=N` per target (default 3,000), `CALM_FUZZ_SEED=S`
/// for another sequence; a failure prints the seed and the input's number.
#[test]
fn mutated_seeds_pass() {
    let count: usize = std::env::var("CALM_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed: u64 = std::env::var("CALM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let seeds = fuzzing::seeds();
    let mut failures = Vec::new();
    for (t, (name, _)) in TARGETS.iter().enumerate() {
        let mine: Vec<&[u8]> = (seeds.iter())
            .filter(|(n, _)| n == name)
            .map(|(_, s)| &s[..])
            .collect();
        let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in 0..count {
            let input = mutate(&mut rng, &mine);
            if let Err(e) = replay(
                name,
                &format!("mutation {i} of CALM_FUZZ_SEED={seed}"),
                &input,
            ) {
                failures.push(format!("{e}\n  input: {input:?}"));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// xorshift64*: a fixed sequence for a seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 if at < input.len() => {
                input[at] = [0, 1, 0x7F, 0x80, 0xFF, b'*', b'$', b'\r', b'\n'][rng.below(9)]
            }
            2 => input.insert(at, rng.next() as u8),
            3 if at < input.len() => {
                input.remove(at);
            }
            4 => input.truncate(at),
            5 if at < input.len() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                let piece = input[at..end].to_vec();
                input.splice(at..at, piece);
            }
            _ => {
                let other = seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
    input
}
