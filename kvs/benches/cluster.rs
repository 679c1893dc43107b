//! Cluster benchmarks that report figures and ratios (no timed assertions).
//!
//! ```text
//! cargo bench -p calm-kvs --bench cluster                 # all parts (about two minutes)
//! cargo bench -p calm-kvs --bench cluster -- throughput
//! cargo bench -p calm-kvs --bench cluster -- ack
//! ```
//!
//! Every node runs in this process on loopback (nodes, clients and proxies share the
//! machine's cores), each with one storage worker.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use calm_kvs::launch::{RunningNode, launch_local_cluster};
use calm_kvs::{Ack, Client, ClusterClient, Op, OpResult, Write};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const KEYS: usize = 10_000;

async fn start_cluster(
    n: u8,
    gossip_ms: u64,
    ip_of: impl Fn(u8) -> IpAddr,
    advertise_of: Option<&dyn Fn(u8) -> SocketAddr>,
    port: u16,
    dir: &std::path::Path,
) -> Vec<RunningNode> {
    launch_local_cluster(n, gossip_ms, ip_of, advertise_of, port, dir)
        .await
        .expect("the cluster starts")
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("user{i:08}"))
}

/// How the load reaches the cluster.
#[derive(Clone)]
enum Conn {
    /// A connection to one node, which forwards keys it does not own.
    Node(Client),
    /// The routing client: each key straight to an owner.
    Routed(ClusterClient),
}

impl Conn {
    async fn run(&self, ops: Vec<Op>, ack: Ack) -> Vec<OpResult> {
        match self {
            Conn::Node(c) => c.execute_with_ack(ops, ack).await.unwrap(),
            Conn::Routed(c) => c.execute_with_ack(ops, ack).await.unwrap(),
        }
    }

    async fn close(self) {
        if let Conn::Node(c) = self {
            c.close().await;
        }
    }
}

/// Runs `total` operations from `clients` tasks (batches of `batch`, spread over the
/// nodes, or routed by key); returns ops/s and the request latency histogram (µs).
async fn load(
    nodes: &[RunningNode],
    routed: bool,
    clients: usize,
    batch: usize,
    total: usize,
    reads: bool,
    ack: Ack,
) -> (f64, Histogram<u64>) {
    let value = Bytes::from(vec![b'x'; 100]);
    let per_client = total / clients;
    let mut conns = Vec::new();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for c in 0..clients {
        let n = &nodes[c % nodes.len()];
        conns.push(if routed {
            Conn::Routed(
                ClusterClient::connect(addrs.clone(), &n.credentials())
                    .await
                    .unwrap(),
            )
        } else {
            Conn::Node(Client::connect(n.addr, &n.credentials()).await.unwrap())
        });
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in conns.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for _ in 0..per_client / batch {
                let ops: Vec<Op> = (0..batch)
                    .map(|_| {
                        let k = key(rng.random_range(0..KEYS));
                        if reads && rng.random_bool(0.5) {
                            Op::Get {
                                key: k,
                                meta: false,
                            }
                        } else {
                            Op::Write {
                                key: k,
                                write: Write::Lww(value.clone()),
                            }
                        }
                    })
                    .collect();
                let sent = Instant::now();
                let r = client.run(ops, ack).await;
                hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                assert!(
                    r.iter().all(Result::is_ok),
                    "{:?}",
                    r.iter().find(|r| r.is_err())
                );
            }
            client.close().await;
            hist
        }));
    }
    let mut total_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        total_hist.add(t.await.unwrap()).unwrap();
    }
    (
        (per_client / batch * batch * clients) as f64 / started.elapsed().as_secs_f64(),
        total_hist,
    )
}

async fn stop_all(nodes: Vec<RunningNode>) {
    for n in nodes {
        n.stop().await;
    }
}

async fn throughput() {
    println!("\n## Throughput: 3-node cluster vs a single node (same load, same run)\n");
    println!(
        "YCSB-A-like (50% read / 50% LWW update, uniform over {KEYS} keys, 100-byte values), 8 clients spread over the nodes, 64 operations per request, ack `one`, 1 worker per node.\n"
    );
    println!("| cluster | client | ops/s | vs 1 node | request p50 | request p99 |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut single = 0.0;
    for (n, routed) in [(1u8, false), (3, false), (3, true)] {
        let dir = tempfile::tempdir().unwrap();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let nodes = start_cluster(n, 100, |_| ip, None, 0, dir.path()).await;
        load(&nodes, routed, 8, 64, 20_000, true, Ack::One).await; // warm-up
        let (rate, h) = load(&nodes, routed, 8, 64, 200_000, true, Ack::One).await;
        if n == 1 {
            single = rate;
        }
        let how = if routed {
            "routing (ClusterClient)"
        } else {
            "one node each (forwarding)"
        };
        println!(
            "| {n} node(s) | {how} | {rate:.0} | {:.2}x | {} µs | {} µs |",
            rate / single,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        );
        stop_all(nodes).await;
    }
}

async fn ack() {
    println!(
        "\n## The cost of ack `all` vs `one` (3 nodes, replication 2, write-only, routing client)\n"
    );
    println!("| ack | ops/s | request p50 | request p99 |");
    println!("|---|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let nodes = start_cluster(3, 100, |_| ip, None, 0, dir.path()).await;
    for (name, mode) in [("one", Ack::One), ("all", Ack::All)] {
        load(&nodes, true, 8, 64, 20_000, false, mode).await;
        let (rate, h) = load(&nodes, true, 8, 64, 100_000, false, mode).await;
        println!(
            "| {name} | {rate:.0} | {} µs | {} µs |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        );
    }
    stop_all(nodes).await;
}

fn main() {
    println!(
        "Machine: {} cores",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    common::run_parts(vec![
        ("throughput", Box::pin(throughput())),
        ("ack", Box::pin(ack())),
    ]);
}
