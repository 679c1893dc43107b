//! Anna's contention experiment: read throughput of a cluster against Zipf skew, with the
//! autoscaling policy's selective replication off and on.
//!
//! Each node is its own `calm server` process on 127.0.0.1 with one storage worker and one
//! replica per key, so without the policy every read of the hottest key lands on one node.
//! With the policy, nodes sample their load every period, gossip it, and give keys hot
//! enough more replicas; the routing clients learn the new factors and spread reads of
//! those keys over their replicas.
//!
//! A hot key only hurts when its node runs out of processor while others have some to
//! spare. On a machine with fewer cores than nodes (every node and the load generator
//! sharing them) that never happens: every node draws on the same cores. So each node can
//! be given a share of a core (`node_cpu`, through a Linux control group's CPU quota, like
//! a small VM or a container's limit), which makes the nodes' capacities independent of
//! each other as they are on separate machines, while the load generator keeps the rest.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use calm_kvs::cluster::Status;
use calm_kvs::{Client, ClusterClient, OpKind, Store, tls};
use serde::{Deserialize, Serialize};

use crate::target::CalmTarget;
use crate::{Mix, RunConfig, ValueKind, Workload};

/// How to run the experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentionConfig {
    /// The `calm` binary that runs the nodes (`calm server`).
    #[serde(skip)]
    pub exe: PathBuf,
    /// Nodes, one process each.
    pub nodes: usize,
    /// Each node's CPU quota in cores (e.g. 0.15), or none (every node may use every core).
    pub node_cpu: Option<f64>,
    /// Zipf skews to measure.
    pub zipfs: Vec<f64>,
    /// Keys loaded.
    pub keys: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Load before the measurement (the policy reacts in it).
    pub warmup: Duration,
    /// Measured time per setting.
    pub duration: Duration,
    /// How often nodes sample their load and run the policy, milliseconds.
    pub autoscale_ms: u64,
    /// Replicas a hot key gets (the policy's `hot_factor`).
    pub hot_factor: u8,
    /// Runs of each setting (alternating off and on, each on a fresh cluster); the median
    /// run is reported, so one noisy run on a shared machine does not decide the ratio.
    pub rounds: usize,
}

/// One setting at one skew.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Reads per second.
    pub ops_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Reads that failed.
    pub errors: u64,
    /// Reads each node served while measured.
    pub served: Vec<u64>,
    /// The busiest node's share of them.
    pub busiest_share: f64,
    /// Keys with more replicas than the default at the end, and how many.
    pub replicated: Vec<(String, u8)>,
    /// Reads per second of every round (this setting is the median one).
    pub rounds_ops_per_sec: Vec<f64>,
}

/// One skew: the policy off, then on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentionPoint {
    /// Zipf skew.
    pub zipf: f64,
    /// Without the policy: one replica per key.
    pub off: Setting,
    /// With the policy.
    pub on: Setting,
}

impl ContentionPoint {
    /// Throughput with the policy over throughput without.
    pub fn ratio(&self) -> f64 {
        self.on.ops_per_sec / self.off.ops_per_sec.max(1e-9)
    }
}

/// Runs the experiment: for each skew, a fresh cluster without the policy, then one with it.
pub async fn run(
    config: &ContentionConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<ContentionPoint>, String> {
    if config.nodes < 2 {
        return Err("the experiment needs at least 2 nodes".into());
    }
    if let Some(cpu) = config.node_cpu
        && !(0.01..=64.0).contains(&cpu)
    {
        return Err(format!(
            "a node's CPU quota must be 0.01 to 64 cores, not {cpu}"
        ));
    }
    let mut points = Vec::new();
    for &zipf in &config.zipfs {
        let workload = Workload {
            mix: Mix::C,
            keys: config.keys,
            value_size: 100,
            zipf,
            kind: ValueKind::Lww,
            seed: 1,
            read_fraction: None,
        };
        workload.validate()?;
        let (mut offs, mut ons) = (Vec::new(), Vec::new());
        for round in 1..=config.rounds.max(1) {
            progress(&format!("zipf {zipf}, round {round}: policy off"));
            offs.push(setting(config, &workload, false).await?);
            progress(&format!("zipf {zipf}, round {round}: policy on"));
            ons.push(setting(config, &workload, true).await?);
        }
        points.push(ContentionPoint {
            zipf,
            off: median(offs),
            on: median(ons),
        });
    }
    Ok(points)
}

/// The run with the median throughput, carrying every run's throughput.
fn median(mut runs: Vec<Setting>) -> Setting {
    let all: Vec<f64> = runs.iter().map(|r| r.ops_per_sec).collect();
    runs.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    let mut mid = runs.swap_remove(runs.len() / 2);
    mid.rounds_ops_per_sec = all;
    mid
}

async fn setting(
    config: &ContentionConfig,
    workload: &Workload,
    policy: bool,
) -> Result<Setting, String> {
    let cluster = LocalCluster::start(config, policy)?;
    cluster.wait_alive().await?;
    let client = ClusterClient::connect(cluster.addrs.clone(), &cluster.ca)
        .await
        .map_err(|e| e.to_string())?;
    let target = CalmTarget::new(client, workload.kind, workload.value_size);
    crate::Target::load(&target, workload.keys).await?;
    let drive = |duration: Duration| {
        let target = target.clone();
        let run = RunConfig {
            clients: config.clients,
            duration,
            warmup: Duration::ZERO,
            rate: None,
        };
        async move {
            crate::run(
                workload,
                &run,
                move |_| {
                    let t = target.clone();
                    async move { Ok(t) }
                },
                |_| {},
            )
            .await
        }
    };
    drive(config.warmup).await?;
    let before = cluster.reads_served().await?;
    let measured = drive(config.duration).await?;
    let after = cluster.reads_served().await?;
    let served: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = served.iter().sum();
    let replicated = cluster.replicated().await?;
    Ok(Setting {
        ops_per_sec: measured.ops_per_sec,
        p50_us: measured.latency_us.p50,
        p99_us: measured.latency_us.p99,
        errors: measured.errors,
        busiest_share: served.iter().copied().max().unwrap_or(0) as f64 / total.max(1) as f64,
        served,
        replicated,
        rounds_ops_per_sec: vec![measured.ops_per_sec],
    })
}

/// Node processes, each in its own CPU control group when asked; all stopped (and the
/// groups and data removed) when dropped.
struct LocalCluster {
    children: Vec<Child>,
    groups: Vec<CpuGroup>,
    addrs: Vec<SocketAddr>,
    ca: tls::Credentials,
    dir: PathBuf,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for group in &self.groups {
            group.remove();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LocalCluster {
    fn start(config: &ContentionConfig, policy: bool) -> Result<LocalCluster, String> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "calm-contention-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca = tls::ensure_ca(&dir.join("ca")).map_err(|e| e.to_string())?;
        let user =
            tls::issue_client(&ca, "bench", &dir.join("clients")).map_err(|e| e.to_string())?;
        let policy_file = dir.join("policy.toml");
        std::fs::write(
            &policy_file,
            format!(
                "hot_factor = {}\nhot_workers = 0\ncool_ms = 600000\n",
                config.hot_factor
            ),
        )
        .map_err(|e| format!("{}: {e}", policy_file.display()))?;
        let base = free_ports(config.nodes)?;
        let addrs: Vec<SocketAddr> = (0..config.nodes)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i as u16)))
            .collect();
        let mut cluster = LocalCluster {
            children: Vec::new(),
            groups: Vec::new(),
            addrs: addrs.clone(),
            ca: tls::Credentials {
                ca: ca.cert.clone(),
                cert: user,
            },
            dir: dir.clone(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let mut cmd = Command::new(&config.exe);
            cmd.arg("server")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(&dir)
                .args(["--replication", "1", "--threads", "1", "--executors", "0"])
                .args(["--durability", "memory"])
                .stderr(Stdio::null());
            if i > 0 {
                cmd.arg("--join").arg(addrs[0].to_string());
            }
            if policy {
                cmd.arg("--autoscale")
                    .arg("--autoscale-ms")
                    .arg(config.autoscale_ms.to_string())
                    .arg("--policy")
                    .arg(&policy_file);
            }
            let child = calm_kvs::launch::spawn_ready(&mut cmd)
                .map_err(|e| format!("node {addr} did not start: {e}"))?;
            let pid = child.id();
            cluster.children.push(child);
            if let Some(cpu) = config.node_cpu {
                // Every thread of the process moves with it.
                let group = CpuGroup::create(&format!("calm-bench-{pid}-{i}"), cpu)?;
                let joined = group.add(pid);
                cluster.groups.push(group);
                joined?;
            }
        }
        Ok(cluster)
    }

    async fn wait_alive(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut alive = 0;
            if let Ok(c) = Client::connect(self.addrs[0], &self.ca).await {
                alive = c
                    .members()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .filter(|m| m.member.status == Status::Alive)
                    .count();
                c.close().await;
            }
            if alive == self.addrs.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {alive} of {} nodes joined within 30 s",
                    self.addrs.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads each node has served so far.
    async fn reads_served(&self) -> Result<Vec<u64>, String> {
        let mut out = Vec::new();
        for addr in &self.addrs {
            let c = Client::connect(*addr, &self.ca)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            let stats = c.stats().await.map_err(|e| format!("{addr}: {e}"))?;
            c.close().await;
            out.push(
                stats
                    .ops
                    .iter()
                    .filter(|o| o.kind == OpKind::Get)
                    .map(|o| o.count)
                    .sum(),
            );
        }
        Ok(out)
    }

    /// Keys whose replication factor is not the default, as the first node has them.
    async fn replicated(&self) -> Result<Vec<(String, u8)>, String> {
        let c = Client::connect(self.addrs[0], &self.ca)
            .await
            .map_err(|e| e.to_string())?;
        let table = c.routing().await.map_err(|e| e.to_string())?;
        c.close().await;
        Ok(table
            .overrides
            .into_iter()
            .filter_map(|(k, f)| {
                f.global
                    .map(|g| (String::from_utf8_lossy(&k).into_owned(), g))
            })
            .collect())
    }
}

/// The first of `n` consecutive free UDP ports on 127.0.0.1.
fn free_ports(n: usize) -> Result<u16, String> {
    (0..200u16)
        .map(|k| {
            21_000
                + (std::process::id() as u16)
                    .wrapping_mul(17)
                    .wrapping_add(k * 97)
                    % 30_000
        })
        .find(|&p| {
            (0..n as u16).all(|i| UdpSocket::bind(("127.0.0.1", p.saturating_add(i))).is_ok())
        })
        .ok_or_else(|| format!("no {n} free consecutive ports on 127.0.0.1"))
}

/// A Linux control group with a CPU quota (cgroup v2, or the v1 `cpu` controller).
struct CpuGroup {
    path: PathBuf,
}

const CGROUP_V1_CPU: &str = "/sys/fs/cgroup/cpu";
const CGROUP_V2: &str = "/sys/fs/cgroup";
/// The quota's accounting period, µs: short, so a node waits at most about this long
/// when it has used its share (longer for shares under 0.1 core: Linux grants at least
/// 1 ms per period).
const PERIOD_US: u64 = 10_000;
/// The least quota per period Linux accepts, µs.
const MIN_QUOTA_US: u64 = 1_000;

impl CpuGroup {
    fn create(name: &str, cores: f64) -> Result<CpuGroup, String> {
        let period = PERIOD_US.max((MIN_QUOTA_US as f64 / cores).ceil() as u64);
        let quota = ((cores * period as f64) as u64).max(MIN_QUOTA_US);
        let v1 = Path::new(CGROUP_V1_CPU).join("cpu.cfs_quota_us").exists();
        let path = if v1 {
            Path::new(CGROUP_V1_CPU).join(name)
        } else {
            Path::new(CGROUP_V2).join(name)
        };
        let hint = "a node's CPU quota needs a writable Linux control group with the cpu \
                    controller (run as root; --node-cpu 0 runs without quotas)";
        if !v1 {
            let controllers =
                std::fs::read_to_string(Path::new(CGROUP_V2).join("cgroup.controllers"))
                    .map_err(|e| format!("{hint}: {e}"))?;
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                return Err(format!("{hint}: no cpu controller"));
            }
            let _ = std::fs::write(Path::new(CGROUP_V2).join("cgroup.subtree_control"), "+cpu");
        }
        std::fs::create_dir_all(&path).map_err(|e| format!("{hint}: {}: {e}", path.display()))?;
        let group = CpuGroup { path };
        let set = if v1 {
            std::fs::write(group.path.join("cpu.cfs_period_us"), period.to_string()).and_then(
                |()| std::fs::write(group.path.join("cpu.cfs_quota_us"), quota.to_string()),
            )
        } else {
            std::fs::write(group.path.join("cpu.max"), format!("{quota} {period}"))
        };
        if let Err(e) = set {
            group.remove();
            return Err(format!("{hint}: {e}"));
        }
        Ok(group)
    }

    fn add(&self, pid: u32) -> Result<(), String> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move node {pid} into {}: {e}", self.path.display()))
    }

    fn remove(&self) {
        // The directory goes once its processes have exited.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
