//! Store benchmarks that report figures and ratios (no timed assertions).
//!
//! ```text
//! cargo bench -p calm-kvs --bench store            # both parts
//! cargo bench -p calm-kvs --bench store -- embedded
//! cargo bench -p calm-kvs --bench store -- quic
//! ```
//!
//! - `embedded`: a YCSB-A-like trace (50% read, 50% update, Zipf 0.99 over 100k keys,
//!   100-byte values) on the embedded store with 1 and 2 workers, beside a single-threaded
//!   `HashMap<Vec<u8>, Vec<u8>>` running the same trace in the same run.
//! - `quic`: the same trace against a node over QUIC on loopback, with pipelining and
//!   batching off and on; throughput and per-request latency percentiles.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::server::Server;
use calm_kvs::{Client, EmbeddedStore, NodeConfig, Op, Store, Write, tls};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

const KEYS: usize = 100_000;
const VALUE_BYTES: usize = 100;
const ZIPF_THETA: f64 = 0.99;
const SEED: u64 = 42;

#[derive(Clone, Copy)]
enum TraceOp {
    Read(usize),
    Update(usize),
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("user{i:010}"))
}

/// The same seed gives the same trace.
fn trace(len: usize) -> Vec<TraceOp> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let zipf = Zipf::new(KEYS as f64, ZIPF_THETA).expect("valid Zipf parameters");
    (0..len)
        .map(|_| {
            // Zipf ranks start at 1; scatter ranks over the key space so hot keys are not
            // neighbours.
            let rank = zipf.sample(&mut rng) as usize - 1;
            let k = rank.wrapping_mul(2_654_435_761) % KEYS;
            if rng.random_bool(0.5) {
                TraceOp::Read(k)
            } else {
                TraceOp::Update(k)
            }
        })
        .collect()
}

fn value(i: usize) -> Bytes {
    let mut v = vec![b'x'; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(v)
}

fn to_op(op: TraceOp, keys: &[Bytes], val: &Bytes) -> Op {
    match op {
        TraceOp::Read(k) => Op::Get {
            key: keys[k].clone(),
            meta: false,
        },
        TraceOp::Update(k) => Op::Write {
            key: keys[k].clone(),
            write: Write::Lww(val.clone()),
        },
    }
}

fn raw_map(ops: &[TraceOp], keys: &[Bytes], val: &Bytes) -> f64 {
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for k in keys {
        map.insert(k.to_vec(), val.to_vec());
    }
    let mut found = 0usize;
    let started = Instant::now();
    for op in ops {
        match *op {
            TraceOp::Read(k) => found += usize::from(map.contains_key(keys[k].as_ref())),
            TraceOp::Update(k) => {
                map.insert(keys[k].to_vec(), val.to_vec());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(found > 0);
    ops.len() as f64 / secs
}

/// Runs the trace through `store` from `clients` concurrent tasks, each sending batches of
/// `batch` operations; returns ops/s and the latency histogram of requests (µs).
async fn drive<S: Store + Clone + 'static>(
    store: S,
    ops: Arc<Vec<TraceOp>>,
    keys: Arc<Vec<Bytes>>,
    clients: usize,
    batch: usize,
) -> (f64, Histogram<u64>) {
    let val = value(7);
    let per_client = ops.len() / clients;
    // Batches are built before the clock starts: the load generator's own work should not
    // compete with the store for the machine's cores while it is measured.
    let prepared: Vec<Vec<Vec<Op>>> = (0..clients)
        .map(|c| {
            ops[c * per_client..(c + 1) * per_client]
                .chunks(batch)
                .map(|chunk| chunk.iter().map(|op| to_op(*op, &keys, &val)).collect())
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for batches in prepared {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for batch in batches {
                let sent = Instant::now();
                let results = store.execute(batch).await.expect("store answers");
                hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                assert!(results.iter().all(Result::is_ok));
            }
            hist
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        total.add(t.await.unwrap()).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    ((per_client * clients) as f64 / secs, total)
}

async fn load<S: Store>(store: &S, keys: &[Bytes], val: &Bytes) {
    for chunk in keys.chunks(1000) {
        let ops = chunk
            .iter()
            .map(|k| Op::Write {
                key: k.clone(),
                write: Write::Lww(val.clone()),
            })
            .collect();
        store.execute(ops).await.unwrap();
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    format!("{cores} cores, {cpu}")
}

async fn embedded() {
    let ops = Arc::new(trace(1_000_000));
    let keys: Arc<Vec<Bytes>> = Arc::new((0..KEYS).map(key).collect());
    let val = value(7);
    println!(
        "\n## Embedded store, YCSB-A-like (50% read / 50% update, Zipf {ZIPF_THETA}, {KEYS} keys, {VALUE_BYTES}-byte values, {} ops)\n",
        ops.len()
    );
    println!("Machine: {}\n", machine());
    println!("| run | ops/s | vs HashMap | per worker vs HashMap |");
    println!("|---|---:|---:|---:|");
    let raw = raw_map(&ops, &keys, &val);
    println!("| single-threaded HashMap<Vec<u8>, Vec<u8>> | {raw:.0} | 1.00x | |");
    for workers in [1usize, 2] {
        for (clients, batch) in [(1usize, 1usize), (4, 256)] {
            let store = EmbeddedStore::start(NodeConfig {
                threads: workers,
                ..NodeConfig::default()
            })
            .unwrap();
            load(&store, &keys, &val).await;
            // Warm-up, excluded.
            drive(
                store.clone(),
                Arc::new(ops[..50_000].to_vec()),
                keys.clone(),
                clients,
                batch,
            )
            .await;
            let (rate, _) = drive(store.clone(), ops.clone(), keys.clone(), clients, batch).await;
            println!(
                "| calm embedded, {workers} worker(s), {clients} client(s), batch {batch} | {rate:.0} | {:.2}x | {:.2}x |",
                rate / raw,
                rate / raw / workers as f64
            );
            store.node().shutdown();
        }
    }
}

async fn quic() {
    let ops = Arc::new(trace(200_000));
    let keys: Arc<Vec<Bytes>> = Arc::new((0..KEYS).map(key).collect());
    let val = value(7);
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::init_ca(&dir.path().join("ca")).unwrap();
    let certs = tls::issue(&ca, "bench", &dir.path().join("nodes")).unwrap();
    let user = tls::issue_client(&ca, "bench", &dir.path().join("clients")).unwrap();
    let node = Arc::new(calm_kvs::Node::start(NodeConfig::default()).unwrap());
    let server = Server::start(
        node.clone(),
        "127.0.0.1:0".parse().unwrap(),
        tls::server_config(&tls::Credentials {
            ca: ca.cert.clone(),
            cert: certs,
        })
        .unwrap(),
    )
    .unwrap();
    let client = Client::connect(
        server.local_addr(),
        &tls::Credentials {
            ca: ca.cert.clone(),
            cert: user,
        },
    )
    .await
    .unwrap();
    load(&client, &keys, &val).await;
    println!(
        "\n## Over QUIC on loopback (one connection, same trace, {} ops, client and node in one process)\n",
        ops.len()
    );
    println!("Machine: {}\n", machine());
    println!("| pipelining | batching | ops/s | request p50 | request p99 | request max |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name_p, name_b, clients, batch) in [
        ("off (1 in flight)", "off", 1usize, 1usize),
        ("on (64 in flight)", "off", 64, 1),
        ("off (1 in flight)", "64 ops/request", 1, 64),
        ("on (16 in flight)", "64 ops/request", 16, 64),
    ] {
        drive(
            client.clone(),
            Arc::new(ops[..20_000].to_vec()),
            keys.clone(),
            clients,
            batch,
        )
        .await;
        let (rate, hist) = drive(client.clone(), ops.clone(), keys.clone(), clients, batch).await;
        println!(
            "| {name_p} | {name_b} | {rate:.0} | {} µs | {} µs | {} µs |",
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.max()
        );
    }
    client.close().await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .ok();
    node.shutdown();
}

fn main() {
    common::run_parts(vec![
        ("embedded", Box::pin(embedded())),
        ("quic", Box::pin(quic())),
    ]);
}
