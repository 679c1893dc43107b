//! What quotas cost a worker's write path, as ratios against the same writes without
//! quotas in the same run (no timed assertions).
//!
//! ```text
//! cargo bench -p calm-kvs --bench quotas
//! ```
//!
//! One worker in memory (no threads, no network), driven directly. Each workload runs
//! alternately with and without quotas, five rounds each, and the median of each side is
//! compared:
//!
//! - `strings`: 100-byte string writes to 20,000 keys under a quota far from its limits;
//! - `near-limit`: the same with the byte limit just above what the keys hold, so each
//!   write is checked exactly (applied to a copy first);
//! - `set-1000`: adds to sets of 1,000 members (the quota counts a value's bytes by reading
//!   it: a pass over the set per write).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use calm_kvs::storage::{Quota, Quotas};
use calm_kvs::{HashRing, Op, Worker, WorkerConfig, Write};
use calm_lattice::ReplicaId;

const KEYS: usize = 20_000;
const ROUNDS: usize = 5;

fn worker(quota: Option<Quota>) -> Worker {
    let ring = Arc::new(HashRing::new([0], 1));
    let mut w = Worker::new(0, ReplicaId(1), ring, WorkerConfig::default());
    if let Some(q) = quota {
        w.count_quotas(Quotas::new(vec![q])).expect("in memory");
    }
    w
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("t/{i:08}"))
}

/// The batches of a workload: (key, write) in batches of 100.
fn workload(name: &str) -> Vec<Vec<Op>> {
    let ops: Vec<Op> = match name {
        "set-1000" => (0..KEYS * 2)
            .map(|i| Op::Write {
                key: key(i % 20),
                write: Write::SetAdd(vec![Bytes::from(format!("member-{:06}", i % 1_000))]),
            })
            .collect(),
        _ => (0..KEYS * 2)
            .map(|i| Op::Write {
                key: key(i % KEYS),
                write: Write::Lww(Bytes::from(vec![b'a' + (i % 26) as u8; 100])),
            })
            .collect(),
    };
    ops.chunks(100).map(<[Op]>::to_vec).collect()
}

/// Operations per second of one run of `batches` on a fresh worker.
fn run(batches: &[Vec<Op>], quota: Option<Quota>) -> f64 {
    let mut w = worker(quota);
    let started = Instant::now();
    let mut n = 0;
    for (t, batch) in batches.iter().enumerate() {
        n += batch.len();
        for r in w.handle_ops(t as u64 + 1, batch.iter().cloned()) {
            r.expect("every write is admitted");
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    println!(
        "{:<12} {:>16} {:>16} {:>8}",
        "workload", "no quota op/s", "quota op/s", "ratio"
    );
    for name in ["strings", "near-limit", "set-1000"] {
        let batches = workload(name);
        let quota = Quota {
            prefix: "t/".into(),
            keys: Some(1_000_000),
            bytes: Some(match name {
                // What the keys hold (each about 110 bytes), and a little more.
                "near-limit" => (KEYS * 110 + 1_000) as u64,
                _ => 1 << 40,
            }),
        };
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            without.push(run(&batches, None));
            with.push(run(&batches, Some(quota.clone())));
        }
        let (a, b) = (median(without), median(with));
        println!("{name:<12} {a:>16.0} {b:>16.0} {:>7.2}x", b / a);
    }
}
