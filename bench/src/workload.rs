//! YCSB-style workloads: which key each operation touches and what it does, from a seed.
//!
//! Workloads A, B, C, D and F of the YCSB core set. E is absent: it needs range scans, and
//! calm places keys by hash (no ordered index across a cluster), so a scan would be a read
//! of every node; a scan workload would measure that broadcast, not the store.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

/// A YCSB core workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Update heavy: 50% reads, 50% updates.
    A,
    /// Read mostly: 95% reads, 5% updates.
    B,
    /// Read only.
    C,
    /// Read latest: 95% reads skewed to recent inserts, 5% inserts.
    D,
    /// Read-modify-write: 50% reads, 50% read-modify-writes.
    F,
}

impl Mix {
    /// The fraction of operations that read (the rest write).
    pub fn read_fraction(self) -> f64 {
        match self {
            Mix::A | Mix::F => 0.5,
            Mix::B | Mix::D => 0.95,
            Mix::C => 1.0,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "a" => Ok(Mix::A),
            "b" => Ok(Mix::B),
            "c" => Ok(Mix::C),
            "d" => Ok(Mix::D),
            "f" => Ok(Mix::F),
            "e" => Err("workload e needs range scans, which calm does not offer (keys are placed by hash); use a, b, c, d or f".into()),
            other => Err(format!("unknown workload {other:?}; use a, b, c, d or f")),
        }
    }
}

/// Which lattice the workload's values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// Last-writer-wins bytes (Redis strings).
    Lww,
    /// A counter: updates increment.
    Counter,
    /// An add-wins set: updates add a member.
    Set,
}

impl std::str::FromStr for ValueKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lww" => Ok(ValueKind::Lww),
            "counter" => Ok(ValueKind::Counter),
            "set" | "orset" => Ok(ValueKind::Set),
            other => Err(format!(
                "unknown value kind {other:?}; use lww, counter or set"
            )),
        }
    }
}

/// Everything that fixes an operation trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// The operation mix.
    pub mix: Mix,
    /// Keys loaded before the run (and the key space of A, B, C, F).
    pub keys: u64,
    /// Bytes per value written.
    pub value_size: usize,
    /// Zipf skew of key choice: 0 is uniform; Anna used up to 4.
    pub zipf: f64,
    /// The values' lattice.
    pub kind: ValueKind,
    /// The trace's seed: the same seed gives the same trace.
    pub seed: u64,
    /// The share of reads, if not the mix's own.
    #[serde(default)]
    pub read_fraction: Option<f64>,
}

/// One operation of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    /// Read key `n`.
    Read(u64),
    /// Write key `n`.
    Update(u64),
    /// Write a new key `n`.
    Insert(u64),
    /// Read key `n`, then write it.
    ReadModifyWrite(u64),
}

impl BenchOp {
    /// The key index the operation touches.
    pub fn key(self) -> u64 {
        match self {
            BenchOp::Read(k)
            | BenchOp::Update(k)
            | BenchOp::Insert(k)
            | BenchOp::ReadModifyWrite(k) => k,
        }
    }

    /// Whether the operation reads only.
    pub fn is_read(self) -> bool {
        matches!(self, BenchOp::Read(_))
    }
}

/// The name of key `n`.
pub fn key_name(n: u64) -> String {
    format!("user{n:012}")
}

/// An endless, deterministic stream of operations for one client.
pub struct Trace {
    mix: Mix,
    reads: f64,
    keys: u64,
    inserted: u64,
    zipf: Option<Zipf<f64>>,
    rng: StdRng,
}

impl Workload {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), String> {
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if !(0.0..=10.0).contains(&self.zipf) {
            return Err(format!("--zipf {} must be between 0 and 10", self.zipf));
        }
        if let Some(r) = self.read_fraction
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!("--read-fraction {r} must be between 0 and 1"));
        }
        if self.value_size == 0 || self.value_size > 4 << 20 {
            return Err(format!(
                "--value-size {} must be between 1 byte and 4 MiB",
                self.value_size
            ));
        }
        Ok(())
    }

    /// The trace of client `client` (clients of one run get different, reproducible traces).
    pub fn trace(&self, client: u64) -> Trace {
        Trace {
            mix: self.mix,
            reads: self.read_fraction.unwrap_or(self.mix.read_fraction()),
            keys: self.keys,
            inserted: self.keys,
            zipf: (self.zipf > 0.0).then(|| {
                Zipf::new(self.keys as f64, self.zipf).expect("validated: keys >= 1, zipf >= 0")
            }),
            rng: StdRng::seed_from_u64(self.seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }
}

impl Trace {
    /// A key rank: 0 is the most popular.
    fn rank(&mut self) -> u64 {
        match &self.zipf {
            Some(z) => (z.sample(&mut self.rng) as u64)
                .saturating_sub(1)
                .min(self.keys - 1),
            None => self.rng.random_range(0..self.keys),
        }
    }
}

impl Iterator for Trace {
    type Item = BenchOp;

    fn next(&mut self) -> Option<BenchOp> {
        let read = self.rng.random_bool(self.reads);
        let rank = self.rank();
        Some(match (self.mix, read) {
            (Mix::D, true) => BenchOp::Read(self.inserted - 1 - rank.min(self.inserted - 1)),
            (Mix::D, false) => {
                self.inserted += 1;
                BenchOp::Insert(self.inserted - 1)
            }
            (Mix::F, false) => BenchOp::ReadModifyWrite(rank),
            (_, true) => BenchOp::Read(rank),
            (_, false) => BenchOp::Update(rank),
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn workload(mix: Mix, zipf: f64) -> Workload {
        Workload {
            mix,
            keys: 1000,
            value_size: 10,
            zipf,
            kind: ValueKind::Lww,
            seed: 7,
            read_fraction: None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let w = workload(Mix::A, 0.99);
        let a: Vec<BenchOp> = w.trace(3).take(1000).collect();
        let b: Vec<BenchOp> = w.trace(3).take(1000).collect();
        let other: Vec<BenchOp> = w.trace(4).take(1000).collect();
        assert_eq!(a, b);
        assert_ne!(a, other);
    }

    /// The read share is within 5 standard deviations of what the mix asks for.
    #[test]
    fn mixes_match_what_was_asked() {
        let n = 20_000;
        for mix in [Mix::A, Mix::B, Mix::C, Mix::D, Mix::F] {
            let reads = workload(mix, 0.0)
                .trace(0)
                .take(n)
                .filter(|o| o.is_read())
                .count();
            let p = mix.read_fraction();
            let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
            let expected = n as f64 * p;
            assert!(
                (reads as f64 - expected).abs() <= 5.0 * sd,
                "{mix:?}: {reads} reads, expected {expected}"
            );
        }
        // A mix of one's own.
        let w = Workload {
            read_fraction: Some(0.8),
            ..workload(Mix::A, 0.0)
        };
        let reads = w.trace(0).take(n).filter(|o| o.is_read()).count() as f64;
        let sd = (n as f64 * 0.8 * 0.2).sqrt();
        assert!((reads - 0.8 * n as f64).abs() <= 5.0 * sd, "{reads}");
        let ops: Vec<BenchOp> = workload(Mix::F, 0.0).trace(0).take(1000).collect();
        assert!(ops.iter().any(|o| matches!(o, BenchOp::ReadModifyWrite(_))));
        let ops: Vec<BenchOp> = workload(Mix::D, 0.0).trace(0).take(1000).collect();
        assert!(
            ops.iter()
                .any(|o| matches!(o, BenchOp::Insert(k) if *k >= 1000))
        );
    }

    /// Uniform keys fill the key space evenly; Zipf keys follow 1/rank^theta: the share of
    /// the most popular key matches theory within 5 standard deviations.
    #[test]
    fn skew_matches_what_was_asked() {
        let n = 50_000;
        let keys = 1000u64;
        let uniform: Vec<u64> = workload(Mix::C, 0.0)
            .trace(0)
            .take(n)
            .map(BenchOp::key)
            .collect();
        let hot = uniform.iter().filter(|&&k| k == 0).count() as f64;
        assert!(hot < 5.0 * (n as f64 / keys as f64), "{hot}");
        for theta in [0.99, 2.0, 4.0] {
            let harmonic: f64 = (1..=keys).map(|k| 1.0 / (k as f64).powf(theta)).sum();
            let p = 1.0 / harmonic;
            let top = workload(Mix::C, theta)
                .trace(0)
                .take(n)
                .filter(|o| o.key() == 0)
                .count() as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (top - n as f64 * p).abs() <= 5.0 * sd,
                "theta {theta}: key 0 drawn {top} times, expected {}",
                n as f64 * p
            );
        }
    }

    #[test]
    fn workload_e_is_refused_with_the_reason() {
        assert!("e".parse::<Mix>().unwrap_err().contains("range scans"));
        assert_eq!("A".parse::<Mix>(), Ok(Mix::A));
    }
}
