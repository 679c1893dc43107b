//! Cluster benchmarks that report figures and ratios (no timed assertions).
//!
//! ```text
//! cargo bench -p calm-kvs --bench cluster                 # all parts (about two minutes)
//! cargo bench -p calm-kvs --bench cluster -- throughput
//! cargo bench -p calm-kvs --bench cluster -- ack
//! cargo bench -p calm-kvs --bench cluster -- convergence
//! ```
//!
//! Every node runs in this process on loopback (nodes, clients and proxies share the
//! machine's cores), each with one storage worker.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::cluster::{ClusterConfig, Status};
use calm_kvs::fault_proxy::{Partition, run_proxy};
use calm_kvs::launch::{NodeLaunch, RunningNode, launch};
use calm_kvs::{Ack, Client, ClusterClient, NodeConfig, Op, OpResult, ReadValue, Reply, Write};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 10_000;

fn free_port(ips: &[IpAddr]) -> u16 {
    let mut rng = StdRng::seed_from_u64(u64::from(std::process::id()));
    loop {
        let port = rng.random_range(20_000..50_000);
        if ips.iter().all(|ip| StdUdp::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
}

async fn start_cluster(
    n: u8,
    gossip_ms: u64,
    ip_of: impl Fn(u8) -> IpAddr,
    advertise_of: Option<&dyn Fn(u8) -> SocketAddr>,
    port: u16,
    dir: &std::path::Path,
) -> Vec<RunningNode> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..n {
        let first = nodes.first().map(|f: &RunningNode| f.advertised);
        let running = launch(NodeLaunch {
            listen: SocketAddr::new(ip_of(i), port),
            advertise: advertise_of.map(|a| a(i)),
            join: first.into_iter().collect(),
            node: NodeConfig {
                threads: 1,
                ..NodeConfig::default()
            },
            cluster: ClusterConfig {
                gossip_period_ms: gossip_ms,
                ..ClusterConfig::default()
            },
            data_dir: dir.to_path_buf(),
            cert: None,
            resp: None,
            resp_config: Default::default(),
        })
        .expect("node starts");
        nodes.push(running);
    }
    // Wait until the first node sees every node alive.
    let client = Client::connect(nodes[0].addr, &nodes[0].ca.cert)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = client.members().await.unwrap();
        if members
            .iter()
            .filter(|m| m.member.status == Status::Alive)
            .count()
            == usize::from(n)
        {
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
    nodes
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
                ClusterClient::connect(addrs.clone(), &n.ca.cert)
                    .await
                    .unwrap(),
            )
        } else {
            Conn::Node(Client::connect(n.addr, &n.ca.cert).await.unwrap())
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

async fn convergence() {
    println!("\n## Convergence after a partition heals, against the gossip period\n");
    println!(
        "3 nodes behind UDP fault proxies; node 0 is cut from nodes 1 and 2; each side increments the same 100 counters; then the network heals. Time from the heal until every replica of every key holds all the writes (probe 500 ms, suspicion 3 s, anti-entropy 1 s).\n"
    );
    println!("| gossip period | converged after heal |");
    println!("|---:|---:|");
    for gossip in [50u64, 100, 250, 500] {
        let real = |i: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + i));
        let front = |i: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i));
        let ips: Vec<IpAddr> = (0..3).flat_map(|i| [real(i), front(i)]).collect();
        let port = free_port(&ips);
        let node_ips: Vec<IpAddr> = (0..3).map(real).collect();
        let cut = Partition::new(node_ips.clone(), vec![node_ips[0]]);
        let mut proxies = Vec::new();
        for i in 0..3u8 {
            let relay = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30 + i));
            proxies.push(tokio::spawn(run_proxy(
                SocketAddr::new(front(i), port),
                SocketAddr::new(real(i), port),
                relay,
                cut.clone(),
            )));
        }
        let dir = tempfile::tempdir().unwrap();
        let advertise = move |i: u8| SocketAddr::new(front(i), port);
        let nodes = start_cluster(3, gossip, real, Some(&advertise), port, dir.path()).await;
        let clients = [
            Client::connect(nodes[0].addr, &nodes[0].ca.cert)
                .await
                .unwrap(),
            Client::connect(nodes[1].addr, &nodes[1].ca.cert)
                .await
                .unwrap(),
            Client::connect(nodes[2].addr, &nodes[2].ca.cert)
                .await
                .unwrap(),
        ];
        cut.split();
        // Let both sides notice the split, so writes become hints instead of timing out.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let incr = |by| {
            (0..100)
                .map(|i| Op::Write {
                    key: key(i),
                    write: Write::Increment(by),
                })
                .collect::<Vec<_>>()
        };
        let a = clients[0]
            .execute_with_ack(incr(1), Ack::One)
            .await
            .unwrap();
        let b = clients[1]
            .execute_with_ack(incr(10), Ack::One)
            .await
            .unwrap();
        let accepted = a
            .iter()
            .chain(&b)
            .filter(|r| **r == Ok(Reply::Written))
            .count();
        cut.heal();
        let healed = Instant::now();
        let converged = loop {
            let mut ok = true;
            for k in 0..100 {
                let mut held = Vec::new();
                for c in &clients {
                    let r = c
                        .execute_here(vec![Op::Get {
                            key: key(k),
                            meta: false,
                        }])
                        .await
                        .unwrap();
                    if let Ok(Reply::Value(Some(ReadValue::Counter { value }))) = &r[0] {
                        held.push(*value);
                    }
                }
                if held.len() < 2 || held.iter().any(|v| *v != 11) {
                    ok = false;
                    break;
                }
            }
            if ok {
                break Some(healed.elapsed());
            }
            if healed.elapsed() > Duration::from_secs(30) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match converged {
            Some(t) => println!(
                "| {gossip} ms | {} ms ({accepted}/200 writes accepted while split) |",
                t.as_millis()
            ),
            None => println!("| {gossip} ms | did not converge within 30 s |"),
        }
        for c in clients {
            c.close().await;
        }
        stop_all(nodes).await;
        for p in proxies {
            p.abort();
        }
    }
}

fn main() {
    println!(
        "Machine: {} cores",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    common::run_parts(vec![
        ("throughput", Box::pin(throughput())),
        ("ack", Box::pin(ack())),
        ("convergence", Box::pin(convergence())),
    ]);
}
