//! `calm up`: a local cluster of `calm server` processes in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calm::cluster_file::ClusterFile;
use calm_kvs::autoscale::{Controller, Provisioner};
use calm_kvs::cluster::Status;
use calm_kvs::policy::PolicyConfig;
use calm_kvs::{Client, tls};
use clap::Args;

use super::CliResult;

/// Start a local cluster: N nodes on 127.0.0.1, one `calm server` process each.
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// Node i listens on 127.0.0.1:(P+i) for the native protocol (QUIC).
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Node i listens on 127.0.0.1:(R+i) for Redis clients (RESP over TCP).
    #[arg(long, default_value_t = 6400)]
    resp_port: u16,
    /// Autoscale: every node gives its hot keys more replicas, and this command adds a node
    /// when the cluster is overloaded (p99 over the target with busy workers) and gives one
    /// back when it is idle (see --policy).
    #[arg(long)]
    autoscale: bool,
    /// With --autoscale: the policy's knobs as TOML (slo_p99_us, busy, idle, sustain_ms,
    /// grace_ms, max_nodes for nodes; hot_sigma, hot_factor, hot_workers, cool_ms for hot
    /// keys, passed to every node); fields left out keep their defaults, and min_nodes
    /// defaults to --nodes.
    #[arg(long, value_name = "FILE.toml", requires = "autoscale")]
    policy: Option<PathBuf>,
    /// With --autoscale: how often nodes sample their load and the policy runs,
    /// milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    autoscale_ms: u64,
    /// Do not listen for Redis clients.
    #[arg(long, conflicts_with = "resp_port")]
    no_resp: bool,
    /// Redis clients must AUTH with this password.
    #[arg(long, value_name = "PASSWORD")]
    resp_password: Option<String>,
    /// Redis clients speak TLS (redis-cli --tls --cacert DIR/ca/ca.pem).
    #[arg(long, conflicts_with = "no_resp")]
    resp_tls: bool,
    /// Users and their rights per key prefix, and quotas per prefix, for every node (see
    /// `calm server --help`).
    /// `calm up`'s own client (user admin) needs a grant there to keep working.
    #[arg(long, value_name = "FILE.toml")]
    acl: Option<PathBuf>,
    /// When Redis clients' writes are answered: `visible` once every owner seen alive holds
    /// them (a read through any node finds them); `one` once the first owner does (faster;
    /// a read through another node may miss the write for about a millisecond).
    #[arg(long, value_name = "WHEN", default_value = "visible", value_parser = ["visible", "one"])]
    resp_ack: String,
    /// Folder for the CA, node certificates, cluster.toml and every node's keys (a second
    /// `calm up` on the same folder brings the data back).
    #[arg(long, default_value = "calm-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Storage worker threads per node (default: the number of cores).
    #[arg(long, value_name = "T")]
    threads: Option<usize>,
    /// Nodes holding each key.
    #[arg(long, default_value_t = 2)]
    replication: u16,
    /// How often changed keys are sent to their other replicas, milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    gossip_ms: u64,
    /// A node that dies is restarted after this many seconds (long enough for the others
    /// to notice); it recovers its keys from disk and catches up from its peers.
    #[arg(long, default_value_t = 5)]
    restart_after: u64,
    /// Function executor threads in every node, next to the node's cache (0: none).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    executors: u16,
    #[command(flatten)]
    storage: super::server::StorageArgs,
}

/// The node processes of a local cluster, by address. It is also the provisioner of
/// `calm up --autoscale`: it starts nodes (joining the cluster) and stops them (SIGTERM: the
/// node leaves the cluster before it exits), and keeps the cluster file current.
struct Nodes {
    children: Vec<(SocketAddr, Child)>,
    exe: PathBuf,
    args: UpArgs,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Nodes {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.children.iter().map(|(a, _)| *a).collect()
    }

    fn write_cluster_file(&self) -> CliResult<()> {
        ClusterFile::for_data_dir(&self.args.data_dir, self.addrs())
            .map_err(|e| e.to_string())?
            .write(&self.args.data_dir.join("cluster.toml"))
            .map_err(|e| e.to_string())
    }
}

impl Provisioner for Nodes {
    fn add_node(&mut self) -> Result<String, String> {
        let used = self.addrs();
        let addr = (0..64u16)
            .filter_map(|i| self.args.base_port.checked_add(i))
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .find(|a| !used.contains(a))
            .ok_or("no free port for another node")?;
        let child = spawn_node(&self.exe, &self.args, addr, &used)?;
        self.children.push((addr, child));
        self.write_cluster_file()?;
        Ok(addr.to_string())
    }

    fn remove_node(&mut self, node: &str) -> Result<String, String> {
        if self.children.len() <= 1 {
            return Err("it is the last node".into());
        }
        let i = self
            .children
            .iter()
            .position(|(a, _)| a.to_string() == node)
            .ok_or_else(|| format!("{node} is not one of this cluster's nodes"))?;
        let (addr, mut child) = self.children.remove(i);
        self.write_cluster_file()?;
        stop_child(&mut child);
        Ok(addr.to_string())
    }
}

/// Runs the cluster until Ctrl-C or SIGTERM, then stops every node gracefully.
pub async fn run(args: UpArgs) -> CliResult<()> {
    let n = usize::from(args.nodes);
    for (flag, base) in [
        ("--base-port", args.base_port),
        ("--resp-port", args.resp_port),
    ] {
        if u32::from(base) + u32::from(args.nodes) - 1 > u32::from(u16::MAX) {
            return Err(format!("{flag} {base} leaves no room for {n} nodes"));
        }
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let ca = tls::ensure_ca(&args.data_dir.join("ca")).map_err(|e| e.to_string())?;
    // Issued before any node starts, so the nodes never race to issue it.
    let me = tls::Credentials {
        ca: ca.cert.clone(),
        cert: tls::ensure_client(
            &ca,
            calm_kvs::cluster_file::FIRST_USER,
            &args.data_dir.join("clients"),
        )
        .map_err(|e| e.to_string())?,
    };
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], args.base_port + i as u16)))
        .collect();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the calm binary: {e}"))?;

    let policy = match &args.policy {
        Some(path) => {
            let mut config = super::shared::read_policy(path)?;
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if !text.contains("min_nodes") {
                config.min_nodes = n;
            }
            config
        }
        None => PolicyConfig {
            min_nodes: n,
            ..PolicyConfig::default()
        },
    };
    let mut nodes = Nodes {
        children: Vec::new(),
        exe: exe.clone(),
        args: args.clone(),
    };
    for i in 0..n {
        // The first node starts the cluster; the others join through it.
        let join: Vec<SocketAddr> = if i == 0 { Vec::new() } else { vec![addrs[0]] };
        nodes
            .children
            .push((addrs[i], spawn_node(&exe, &args, addrs[i], &join)?));
    }

    // Wait until every node sees every node alive: until then a node may not know all of
    // a key's owners, and a write through it may not reach one that another node reads.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut fewest = n;
        for addr in &addrs {
            let alive = match Client::connect(*addr, &me).await {
                Ok(c) => {
                    let m = c.members().await.unwrap_or_default();
                    c.close().await;
                    m.iter()
                        .filter(|m| m.member.status == Status::Alive)
                        .count()
                }
                Err(_) => 0,
            };
            fewest = fewest.min(alive);
        }
        if fewest == n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the nodes did not all see each other within 30 s (one sees {fewest} of {n})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cluster_path = args.data_dir.join("cluster.toml");
    nodes.write_cluster_file()?;
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let resp = if args.no_resp {
        String::new()
    } else {
        let ports: Vec<String> = (0..args.nodes)
            .map(|i| (args.resp_port + i).to_string())
            .collect();
        format!(", Redis clients on ports {}", ports.join(", "))
    };
    println!(
        "ready: {n} nodes ({}), replication {}{resp}, cluster file {}",
        list.join(", "),
        args.replication.min(args.nodes),
        cluster_path.display()
    );
    println!(
        "try, from another shell here: calm kv put hello world && calm kv get hello && calm status\n  functions: calm fn register increment examples/functions/increment.wat && calm fn call increment 41\n  (from a source checkout: cargo run --release -- kv put hello world)   Ctrl-C stops the cluster"
    );
    if !args.no_resp {
        println!(
            "  or with any Redis client: redis-cli -p {} set hello world",
            args.resp_port
        );
    }

    // Run until asked to stop; restart nodes that die; with --autoscale, add and remove
    // nodes as the policy decides.
    let stopping = Arc::new(tokio::sync::Notify::new());
    {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            super::shared::wait_for_stop().await;
            stopping.notify_one();
        });
    }
    let mut controller = Controller::new(policy);
    let mut next_step = Instant::now() + Duration::from_millis(args.autoscale_ms);
    let mut died: Vec<(SocketAddr, Instant)> = Vec::new();
    loop {
        tokio::select! {
            _ = stopping.notified() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        supervise(&mut nodes, &mut died);
        if args.autoscale && Instant::now() >= next_step {
            next_step = Instant::now() + Duration::from_millis(args.autoscale_ms);
            let (samples, members) =
                super::autoscaler::cluster_samples(&nodes.addrs(), &me, args.autoscale_ms).await;
            let now = super::autoscaler::now_ms();
            let lines = controller.step(now, &samples, members, &mut nodes);
            super::autoscaler::record(&nodes.addrs(), &me, now, lines).await;
        }
    }
    stop(&mut nodes);
    Ok(())
}

/// Starts one `calm server` and waits for its `ready:` line.
fn spawn_node(
    exe: &std::path::Path,
    args: &UpArgs,
    addr: SocketAddr,
    join: &[SocketAddr],
) -> CliResult<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--replication")
        .arg(args.replication.to_string())
        .arg("--gossip-ms")
        .arg(args.gossip_ms.to_string())
        .arg("--executors")
        .arg(args.executors.to_string())
        .stderr(Stdio::inherit());
    if let Some(t) = args.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    cmd.args(args.storage.to_args());
    if args.autoscale {
        cmd.arg("--autoscale")
            .arg("--autoscale-ms")
            .arg(args.autoscale_ms.to_string());
        if let Some(policy) = &args.policy {
            // The nodes read the hot-key knobs; the file's node knobs are this command's.
            cmd.arg("--policy").arg(policy);
        }
    }
    if let Some(acl) = &args.acl {
        cmd.arg("--acl").arg(acl);
    }
    if !args.no_resp {
        let i = addr.port() - args.base_port;
        cmd.arg("--resp")
            .arg(SocketAddr::from(([127, 0, 0, 1], args.resp_port + i)).to_string());
        cmd.arg("--resp-ack").arg(&args.resp_ack);
        if let Some(p) = &args.resp_password {
            cmd.arg("--resp-password").arg(p);
        }
        if args.resp_tls {
            cmd.arg("--resp-tls");
        }
    }
    for j in join {
        cmd.arg("--join").arg(j.to_string());
    }
    calm_kvs::launch::spawn_ready(&mut cmd)
        .map_err(|e| format!("node {addr} did not start ({e}; is the port free? its log is above)"))
}

/// Restarts any node that exits on its own, once it has been gone for the configured delay
/// (long enough for the others to notice).
fn supervise(nodes: &mut Nodes, died: &mut Vec<(SocketAddr, Instant)>) {
    for (addr, child) in &mut nodes.children {
        if died.iter().any(|(a, _)| a == addr) {
            continue;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "node {addr} exited ({status}); restarting it in {} s",
                nodes.args.restart_after
            );
            died.push((*addr, Instant::now()));
        }
    }
    let due: Vec<SocketAddr> = died
        .iter()
        .filter(|(_, at)| at.elapsed() >= Duration::from_secs(nodes.args.restart_after))
        .map(|(a, _)| *a)
        .collect();
    for addr in due {
        died.retain(|(a, _)| *a != addr);
        let others: Vec<SocketAddr> = nodes.addrs().into_iter().filter(|a| *a != addr).collect();
        let Some(slot) = nodes.children.iter().position(|(a, _)| *a == addr) else {
            continue;
        };
        match spawn_node(&nodes.exe, &nodes.args, addr, &others) {
            Ok(child) => {
                nodes.children[slot].1 = child;
                eprintln!("node {addr} restarted");
            }
            Err(e) => {
                eprintln!("error: {e}");
                died.push((addr, Instant::now()));
            }
        }
    }
}

/// SIGTERM to one node, then wait for it (killing it if it hangs).
fn stop_child(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// SIGTERM to every node, then wait for each (killing any that hangs).
fn stop(nodes: &mut Nodes) {
    for (_, child) in &nodes.children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    for (_, child) in &mut nodes.children {
        stop_child(child);
    }
    eprintln!("cluster stopped");
}
