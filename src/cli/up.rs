//! `calm up`: a local cluster of `calm server` processes in the foreground.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calm::cluster_file::ClusterFile;
use calm_kvs::cluster::Status;
use calm_kvs::{Client, tls};
use clap::Args;

use super::CliResult;

/// Start a local cluster: N nodes on 127.0.0.1, one `calm server` process each.
#[derive(Args, Debug)]
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
    /// Run the autoscaling policy on every node (hot keys get more replicas; node decisions
    /// are logged and shown by `calm status`).
    #[arg(long)]
    autoscale: bool,
    /// Do not listen for Redis clients.
    #[arg(long, conflicts_with = "resp_port")]
    no_resp: bool,
    /// Redis clients must AUTH with this password.
    #[arg(long, value_name = "PASSWORD")]
    resp_password: Option<String>,
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

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
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
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], args.base_port + i as u16)))
        .collect();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the calm binary: {e}"))?;

    let mut nodes = Nodes(Vec::new());
    for i in 0..n {
        // The first node starts the cluster; the others join through it.
        let join: Vec<SocketAddr> = if i == 0 { Vec::new() } else { vec![addrs[0]] };
        nodes.0.push(spawn_node(&exe, &args, addrs[i], &join)?);
    }

    // Wait until the first node sees every node alive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = match Client::connect(addrs[0], &ca.cert).await {
            Ok(c) => {
                let m = c.members().await.unwrap_or_default();
                c.close().await;
                m.iter()
                    .filter(|m| m.member.status == Status::Alive)
                    .count()
            }
            Err(_) => 0,
        };
        if alive == n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {alive} of {n} nodes joined within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cluster_path = args.data_dir.join("cluster.toml");
    ClusterFile {
        nodes: addrs.clone(),
        ca: PathBuf::from("ca").join("ca.pem"),
    }
    .write(&cluster_path)?;
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
        "try, from another shell here: calm kv put hello world && calm kv get hello && calm status\n  (from a source checkout: cargo run --release -- kv put hello world)   Ctrl-C stops the cluster"
    );
    if !args.no_resp {
        println!(
            "  or with any Redis client: redis-cli -p {} set hello world",
            args.resp_port
        );
    }

    // Run until asked to stop; restart nodes that die.
    tokio::select! {
        _ = super::server::wait_for_stop() => {}
        _ = supervise(&mut nodes, &exe, &args, &addrs) => {}
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
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = args.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    cmd.args(args.storage.to_args());
    if args.autoscale {
        cmd.arg("--autoscale");
    }
    if !args.no_resp {
        let i = addr.port() - args.base_port;
        cmd.arg("--resp")
            .arg(SocketAddr::from(([127, 0, 0, 1], args.resp_port + i)).to_string());
        if let Some(p) = &args.resp_password {
            cmd.arg("--resp-password").arg(p);
        }
    }
    for j in join {
        cmd.arg("--join").arg(j.to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start node {addr}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from a node")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("ready:") => {}
        _ => {
            let _ = child.kill();
            return Err(format!(
                "node {addr} did not start (is the port free? its log is above)"
            ));
        }
    }
    // Keep draining the node's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

/// Restarts any node that exits on its own, after the configured delay.
async fn supervise(nodes: &mut Nodes, exe: &std::path::Path, args: &UpArgs, addrs: &[SocketAddr]) {
    loop {
        let (i, status) = watch(nodes).await;
        eprintln!(
            "node {} exited ({status}); restarting it in {} s",
            addrs[i], args.restart_after
        );
        tokio::time::sleep(Duration::from_secs(args.restart_after)).await;
        let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != addrs[i]).collect();
        match spawn_node(exe, args, addrs[i], &others) {
            Ok(child) => {
                nodes.0[i] = child;
                eprintln!("node {} restarted", addrs[i]);
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

/// Waits until a node exits; returns which, and how.
async fn watch(nodes: &mut Nodes) -> (usize, std::process::ExitStatus) {
    loop {
        for (i, child) in nodes.0.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return (i, status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to every node, then wait for each (killing any that hangs).
fn stop(nodes: &mut Nodes) {
    for child in &nodes.0 {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    for child in &mut nodes.0 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    eprintln!("cluster stopped");
}
