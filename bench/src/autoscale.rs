//! The autoscaling timeline: a cluster in this process that starts with one node, under a
//! load whose hot spot moves and which rises and then stops, with the autoscaling
//! policy on; per second, the throughput, the clients' p99 latency, the number of nodes and
//! the replication factor of each hot spot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::autoscale::{Controller, Provisioner};
use calm_kvs::cluster::ClusterConfig;
use calm_kvs::launch::{NodeLaunch, RunningNode, launch};
use calm_kvs::policy::PolicyConfig;
use calm_kvs::resp::RespConfig;
use calm_kvs::{Client, ClusterClient, NodeConfig, Store};
use hdrhistogram::Histogram;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// One second of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Clients running.
    pub clients: usize,
    /// Operations completed.
    pub ops: u64,
    /// The clients' p99 latency, microseconds.
    pub p99_us: u64,
    /// Nodes alive.
    pub nodes: usize,
    /// Replicas of the first hot spot's key.
    pub rf_a: usize,
    /// Replicas of the second hot spot's key.
    pub rf_b: usize,
    /// Mean worker occupancy over the nodes' latest samples (0 to 1).
    pub occupancy: f64,
    /// The worst server-side p99 in the nodes' latest samples, microseconds.
    pub server_p99_us: u64,
}

/// The timeline and what the controller did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Per second.
    pub seconds: Vec<Second>,
    /// The controller's actions, with the second they happened.
    pub actions: Vec<(u64, String)>,
    /// The machine.
    pub machine: crate::Machine,
}

struct LocalNodes {
    nodes: Vec<RunningNode>,
    dir: std::path::PathBuf,
    handle: tokio::runtime::Handle,
    period_ms: u64,
}

fn node_launch(dir: &std::path::Path, join: Vec<SocketAddr>, period_ms: u64) -> NodeLaunch {
    NodeLaunch {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        advertise: None,
        join,
        node: NodeConfig {
            threads: 1,
            autoscale_period_ms: period_ms,
            ..NodeConfig::default()
        },
        cluster: ClusterConfig {
            replication: 1,
            gossip_period_ms: 50,
            ..ClusterConfig::default()
        },
        data_dir: dir.to_path_buf(),
        cert: None,
        resp: None,
        resp_config: RespConfig::default(),
    }
}

impl Provisioner for LocalNodes {
    fn add_node(&mut self) -> Result<String, String> {
        let join = self.nodes.iter().map(|n| n.advertised).collect();
        let _guard = self.handle.enter();
        let n = launch(node_launch(&self.dir, join, self.period_ms)).map_err(|e| e.to_string())?;
        let name = n.advertised.to_string();
        self.nodes.push(n);
        Ok(name)
    }

    fn remove_node(&mut self, node: &str) -> Result<String, String> {
        if self.nodes.len() <= 1 {
            return Err("it is the last node".into());
        }
        let i = self
            .nodes
            .iter()
            .position(|n| n.advertised.to_string() == node)
            .ok_or_else(|| format!("{node} is not one of these nodes"))?;
        let n = self.nodes.remove(i);
        let handle = self.handle.clone();
        tokio::task::block_in_place(|| handle.block_on(n.stop()));
        Ok(node.to_string())
    }
}

/// The clients per phase: (from second, clients, hot key).
fn phase(t: f64, duration: f64) -> (usize, &'static str) {
    let f = t / duration;
    if f < 0.15 {
        (2, "hot-a")
    } else if f < 0.45 {
        (16, "hot-a")
    } else if f < 0.7 {
        (16, "hot-b")
    } else {
        (0, "hot-b")
    }
}

/// Runs the timeline for `duration` with the policy `config`, sampling every `period_ms`.
pub async fn timeline(
    duration: Duration,
    period_ms: u64,
    config: PolicyConfig,
) -> Result<Timeline, String> {
    let dir = std::env::temp_dir().join(format!("calm-bench-autoscale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let first = launch(node_launch(&dir, Vec::new(), period_ms)).map_err(|e| e.to_string())?;
    let seed = first.advertised;
    let ca = first.credentials();
    let provisioner = Arc::new(Mutex::new(LocalNodes {
        nodes: vec![first],
        dir: dir.clone(),
        handle: tokio::runtime::Handle::current(),
        period_ms,
    }));
    let client = ClusterClient::connect(vec![seed], &ca)
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..1000 {
        client
            .put(format!("k{i}"), vec![7u8; 100])
            .await
            .map_err(|e| e.to_string())?;
    }
    client.put("hot-a", "a").await.map_err(|e| e.to_string())?;
    client.put("hot-b", "b").await.map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let ops = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let active = Arc::new(AtomicUsize::new(0));
    let secs = duration.as_secs_f64();
    // Up to 16 clients; client i runs while the phase asks for more than i.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (client, stop, ops, latency, active) = (
            client.clone(),
            stop.clone(),
            ops.clone(),
            latency.clone(),
            active.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(i as u64);
            while !stop.load(Ordering::Relaxed) {
                let (clients, hot) = phase(started.elapsed().as_secs_f64(), secs);
                if i >= clients {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                active.fetch_max(i + 1, Ordering::Relaxed);
                let key: Bytes = if rng.random_bool(0.8) {
                    Bytes::from_static(hot.as_bytes())
                } else {
                    Bytes::from(format!("k{}", rng.random_range(0..1000)))
                };
                let t = Instant::now();
                let ok = if rng.random_bool(0.9) {
                    client.get(key).await.is_ok()
                } else {
                    client.put(key, "v").await.is_ok()
                };
                if ok {
                    ops.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut h) = latency.lock() {
                        let _ = h.record(
                            u64::try_from(t.elapsed().as_micros())
                                .unwrap_or(u64::MAX)
                                .max(1),
                        );
                    }
                }
            }
        }));
    }

    let mut controller = Controller::new(config);
    let mut seconds = Vec::new();
    let mut actions = Vec::new();
    let mut next_step = Instant::now() + Duration::from_millis(period_ms);
    let mut last_ops = 0;
    for t in 1..=duration.as_secs() {
        tokio::time::sleep_until((started + Duration::from_secs(t)).into()).await;
        let addrs: Vec<SocketAddr> = provisioner
            .lock()
            .map(|p| p.nodes.iter().map(|n| n.addr).collect())
            .unwrap_or_default();
        let node = Client::connect(addrs[0], &ca)
            .await
            .map_err(|e| e.to_string())?;
        let picture = calm_kvs::autoscale::picture(&node, period_ms * 3)
            .await
            .map_err(|e| e.to_string())?;
        let owning = picture.members;
        let routing = node.routing().await.map_err(|e| e.to_string())?;
        let rf = |k: &str| {
            routing
                .overrides
                .iter()
                .find(|(key, _)| key.as_ref() == k.as_bytes())
                .and_then(|(_, f)| f.global)
                .map_or(routing.replication, usize::from)
                .min(owning.max(1))
        };
        let now_ms = calm_kvs::autoscale::now_ms();
        let samples = picture.samples;
        let occupancy =
            samples.iter().map(|s| s.occupancy).sum::<f64>() / samples.len().max(1) as f64;
        let server_p99_us = samples.iter().map(|s| s.p99_us).max().unwrap_or(0);
        if Instant::now() >= next_step {
            next_step = Instant::now() + Duration::from_millis(period_ms);
            let mut p = provisioner
                .lock()
                .map_err(|_| "provisioner poisoned".to_string())?;
            for line in controller.step(now_ms, &samples, owning, &mut *p) {
                actions.push((t, line));
            }
        }
        node.close().await;
        let now_ops = ops.load(Ordering::Relaxed);
        let p99 = latency
            .lock()
            .map(|mut h| {
                let p = h.value_at_quantile(0.99);
                h.reset();
                p
            })
            .unwrap_or(0);
        seconds.push(Second {
            t,
            clients: phase(t as f64, secs).0,
            ops: now_ops - last_ops,
            p99_us: p99,
            nodes: picture.alive,
            rf_a: rf("hot-a"),
            rf_b: rf("hot-b"),
            occupancy,
            server_p99_us,
        });
        last_ops = now_ops;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let nodes = provisioner
        .lock()
        .map(|mut p| std::mem::take(&mut p.nodes))
        .unwrap_or_default();
    for n in nodes {
        n.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Timeline {
        seconds,
        actions,
        machine: crate::Machine::here(),
    })
}

/// Plots a timeline: throughput, p99, nodes and replication factors, one panel each.
pub fn plot(timeline: &Timeline, path: &std::path::Path) -> Result<(), String> {
    let series = |f: &dyn Fn(&Second) -> f64| -> Vec<(f64, f64)> {
        timeline
            .seconds
            .iter()
            .map(|s| (s.t as f64, f(s)))
            .collect()
    };
    crate::plot::panels(
        "calm up --autoscale: load rises, its hot spot moves (hot-a, then hot-b), load falls",
        "seconds",
        &[
            (
                "ops/s".into(),
                vec![("throughput".into(), series(&|s| s.ops as f64))],
            ),
            (
                "p99 ms".into(),
                vec![("client p99".into(), series(&|s| s.p99_us as f64 / 1000.0))],
            ),
            (
                "count".into(),
                vec![
                    ("nodes".into(), series(&|s| s.nodes as f64)),
                    ("clients / 4".into(), series(&|s| s.clients as f64 / 4.0)),
                ],
            ),
            (
                "replicas".into(),
                vec![
                    ("hot-a".into(), series(&|s| s.rf_a as f64)),
                    ("hot-b".into(), series(&|s| s.rf_b as f64)),
                ],
            ),
        ],
        path,
    )
}
