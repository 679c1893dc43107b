//! Heap bytes per key held by one worker, kind by kind: what the store itself allocates for
//! a key and its value (the map entry, the key, the lattice), counted by dhat's allocator,
//! without the process around it (`scripts/bench-memory` measures whole processes beside
//! redis-server). Run: `cargo bench -p calm-kvs --bench heap_per_key [KEYS]`.

use std::sync::Arc;

use bytes::Bytes;
use calm_kvs::{HashRing, Op, Worker, WorkerConfig, Write};
use calm_lattice::ReplicaId;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Writes `keys` keys made by `op` (100 to a batch, as a node does) into a fresh worker,
/// then reads each once if `read`; returns heap bytes and blocks per key.
fn per_key(keys: usize, op: impl Fn(usize) -> Op, read: bool) -> (f64, f64) {
    let ring = Arc::new(HashRing::new([0], 32));
    let mut worker = Worker::new(0, ReplicaId(1), ring, WorkerConfig::default());
    let before = dhat::HeapStats::get();
    for start in (0..keys).step_by(100) {
        let ops: Vec<Op> = (start..(start + 100).min(keys)).map(&op).collect();
        for result in worker.handle_ops(1_000, ops) {
            result.expect("a write of a fresh key");
        }
        worker.handle_tick(1_000);
        while worker.poll_gossip().is_some() {}
    }
    if read {
        // What a read leaves behind in the store (nothing, if it copies or shares well).
        for start in (0..keys).step_by(100) {
            let reads: Vec<Op> = (start..(start + 100).min(keys))
                .map(|i| match op(i) {
                    Op::Write { key, .. } => Op::get(key),
                    other => other,
                })
                .collect();
            for result in worker.handle_ops(1_000, reads) {
                result.expect("a read");
            }
        }
    }
    let after = dhat::HeapStats::get();
    let n = keys as f64;
    (
        (after.curr_bytes as f64 - before.curr_bytes as f64) / n,
        (after.curr_blocks as f64 - before.curr_blocks as f64) / n,
    )
}

/// Makes the write of the i-th key.
type MakeOp = Box<dyn Fn(usize) -> Op>;

fn write(key: String, write: Write) -> Op {
    Op::Write {
        key: Bytes::from(key),
        write,
    }
}

fn main() {
    let keys: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let _profiler = dhat::Profiler::builder().testing().build();
    let string =
        |len: usize| move |i| write(format!("str:{i:012}"), Write::Lww(vec![b'x'; len].into()));
    let kinds: Vec<(&str, MakeOp)> = vec![
        ("string-16", Box::new(string(16))),
        ("string-100", Box::new(string(100))),
        ("string-1000", Box::new(string(1000))),
        (
            "counter",
            Box::new(|i| write(format!("counter:{i:012}"), Write::Increment(1))),
        ),
        (
            "set-10",
            Box::new(|i| {
                let members = (0..10).map(|m| Bytes::from(format!("m{m}"))).collect();
                write(format!("set:{i:012}"), Write::OrSetAdd(members))
            }),
        ),
        (
            "hash-10",
            Box::new(|i| {
                let fields = (0..10)
                    .map(|f| {
                        (
                            Bytes::from(format!("f{f}")),
                            Bytes::from(format!("value{f}")),
                        )
                    })
                    .collect();
                write(format!("hash:{i:012}"), Write::HashSet(fields))
            }),
        ),
    ];
    println!("heap bytes per key held by one worker ({keys} keys a kind; key 16-20 bytes)");
    println!("{:<18} {:>12} {:>14}", "kind", "bytes/key", "blocks/key");
    for (name, op) in kinds {
        for read in [false, true] {
            let (bytes, blocks) = per_key(keys, &op, read);
            let name = if read {
                format!("{name}, read")
            } else {
                name.to_string()
            };
            println!("{name:<18} {bytes:>12.0} {blocks:>14.1}");
        }
    }
}
