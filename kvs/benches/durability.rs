//! Durability and tier benchmarks that report figures and ratios (no timed assertions).
//!
//! ```text
//! cargo bench -p calm-kvs --bench durability               # all parts (about two minutes)
//! cargo bench -p calm-kvs --bench durability -- writes     # memory vs async vs sync
//! cargo bench -p calm-kvs --bench durability -- reads      # 10% of keys in memory vs all
//! cargo bench -p calm-kvs --bench durability -- recovery   # restart time per GB
//! ```
//!
//! One embedded node with two storage workers, its data dir in the system's temp folder
//! (set TMPDIR to measure another disk).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::storage::Durability;
use calm_kvs::{EmbeddedStore, NodeConfig, Op, Store, Write};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

const THREADS: usize = 2;

fn config(dir: Option<&std::path::Path>, durability: Durability) -> NodeConfig {
    let mut c = NodeConfig {
        threads: THREADS,
        data_dir: dir.map(|d| d.to_path_buf()),
        ..NodeConfig::default()
    };
    c.storage.durability = durability;
    c
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("user{i:010}"))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// `clients` tasks, each sending one-operation requests made by `make` until `duration`
/// has passed; ops/s and the request latency histogram (µs).
async fn closed_loop(
    store: &EmbeddedStore,
    clients: usize,
    duration: Duration,
    make: Arc<dyn Fn(&mut StdRng) -> Op + Send + Sync>,
) -> (f64, Histogram<u64>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = store.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            let mut hist = histogram();
            let mut n = 0u64;
            while started.elapsed() < duration {
                let op = make(&mut rng);
                let sent = Instant::now();
                let r = store.execute(vec![op]).await.expect("store answers");
                hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                assert!(r[0].is_ok(), "{r:?}");
                n += 1;
            }
            (n, hist)
        }));
    }
    let mut total = histogram();
    let mut ops = 0;
    for t in tasks {
        let (n, h) = t.await.unwrap();
        ops += n;
        total.add(h).unwrap();
    }
    (ops as f64 / started.elapsed().as_secs_f64(), total)
}

async fn load(store: &EmbeddedStore, keys: usize, value: &Bytes) {
    for start in (0..keys).step_by(1000) {
        let ops = (start..(start + 1000).min(keys))
            .map(|i| Op::Write {
                key: key(i),
                write: Write::Lww(value.clone()),
            })
            .collect();
        for r in store.execute(ops).await.unwrap() {
            r.unwrap();
        }
    }
}

async fn writes() {
    let clients = 16;
    let duration = Duration::from_secs(4);
    let value = Bytes::from(vec![b'v'; 100]);
    println!(
        "\nwrites: {clients} clients, one 100-byte LWW write per request, 100k keys, {} s each, {THREADS} workers",
        duration.as_secs()
    );
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>10} {:>14}",
        "durability", "writes/s", "p50 µs", "p99 µs", "max µs", "vs memory"
    );
    let mut baseline = None;
    for durability in Durability::ALL {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::start(config(Some(dir.path()), durability)).unwrap();
        let v = value.clone();
        let make = Arc::new(move |rng: &mut StdRng| Op::Write {
            key: key(rng.random_range(0..100_000)),
            write: Write::Lww(v.clone()),
        });
        let (rate, hist) = closed_loop(&store, clients, duration, make).await;
        let base = *baseline.get_or_insert(rate);
        println!(
            "{:<10} {:>12.0} {:>10} {:>10} {:>10} {:>13.2}x",
            durability.name(),
            rate,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.max(),
            rate / base
        );
        store.node().shutdown();
    }
}

async fn reads() {
    let keys = 200_000;
    let value = Bytes::from(vec![b'r'; 200]);
    let data_bytes = (keys * (200 + 14)) as u64;
    let clients = 16;
    let duration = Duration::from_secs(4);
    println!(
        "\nreads: {keys} keys of 200 bytes (~{} MiB of values), {clients} clients, one read per request, {} s each",
        data_bytes >> 20,
        duration.as_secs()
    );
    println!(
        "{:<22} {:<9} {:>12} {:>10} {:>10} {:>14} {:>12}",
        "memory", "access", "reads/s", "p50 µs", "p99 µs", "vs all memory", "from disk"
    );
    for (name, make_dist) in [("uniform", None), ("zipf 0.99", Some(0.99))] {
        let mut baseline = None;
        for budget in [None, Some(data_bytes / 10)] {
            let dir = tempfile::tempdir().unwrap();
            let mut c = config(Some(dir.path()), Durability::Async);
            c.storage.memory_budget = budget;
            let store = EmbeddedStore::start(c).unwrap();
            load(&store, keys, &value).await;
            let zipf = make_dist.map(|s| Zipf::new(keys as f64, s).unwrap());
            let make = Arc::new(move |rng: &mut StdRng| {
                let i = match &zipf {
                    Some(z) => (z.sample(rng) as usize - 1).min(keys - 1),
                    None => rng.random_range(0..keys),
                };
                Op::Get {
                    key: key(i),
                    meta: false,
                }
            });
            // Warm up (the hot set settles into memory), then measure.
            closed_loop(&store, clients, Duration::from_secs(1), make.clone()).await;
            let before: u64 = promotions(&store).await;
            let (rate, hist) = closed_loop(&store, clients, duration, make).await;
            let loaded = promotions(&store).await - before;
            let base = *baseline.get_or_insert(rate);
            let total = rate * duration.as_secs_f64();
            println!(
                "{:<22} {:<9} {:>12.0} {:>10} {:>10} {:>13.2}x {:>11.1}%",
                match budget {
                    None => "all keys".to_string(),
                    Some(b) => format!("10% ({} MiB budget)", b >> 20),
                },
                name,
                rate,
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99),
                rate / base,
                100.0 * loaded as f64 / total
            );
            store.node().shutdown();
        }
    }
}

async fn promotions(store: &EmbeddedStore) -> u64 {
    let stats = store.stats().await.unwrap();
    stats.workers.iter().map(|w| w.storage.promotions).sum()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

async fn recovery() {
    let keys = 600_000;
    let value = Bytes::from(vec![b'x'; 200]);
    println!("\nrecovery: {keys} keys of 200 bytes written with async durability, then a restart");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "", "data MiB", "on disk MiB", "restart s", "s per GB"
    );
    for (name, checkpoint) in [
        ("default (64 MiB log)", None),
        ("log only (no checkpoint)", Some(u64::MAX)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(Some(dir.path()), Durability::Async);
        if let Some(b) = checkpoint {
            c.storage.checkpoint_log_bytes = b;
        }
        let store = EmbeddedStore::start(c.clone()).unwrap();
        load(&store, keys, &value).await;
        store.node().shutdown();
        drop(store);
        let data = (keys * (value.len() + 14)) as f64;
        let disk = dir_bytes(dir.path()) as f64;
        let started = Instant::now();
        let store = EmbeddedStore::start(c).unwrap();
        let secs = started.elapsed().as_secs_f64();
        let got = store.get(key(keys - 1)).await.unwrap();
        assert!(got.is_some());
        println!(
            "{:<28} {:>12.0} {:>12.0} {:>12.2} {:>12.2}",
            name,
            data / 1048576.0,
            disk / 1048576.0,
            secs,
            secs / (data / 1e9)
        );
        store.node().shutdown();
    }
}

fn main() {
    common::run_parts(vec![
        ("writes", Box::pin(writes())),
        ("reads", Box::pin(reads())),
        ("recovery", Box::pin(recovery())),
    ]);
}
