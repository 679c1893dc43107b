//! `calm server`: one node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use calm::cluster_file::ClusterFile;
use calm_kvs::cluster::{Cluster, ClusterConfig, Peers};
use calm_kvs::server::Server;
use calm_kvs::tls::{self, NodeCertFiles};
use calm_kvs::{Node, NodeConfig};
use clap::Args;

use super::CliResult;

/// Run one node in the foreground.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address for the native protocol (QUIC).
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Folder for the cluster CA, this node's certificate and cluster.toml.
    #[arg(long, default_value = "calm-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Storage worker threads (default: the number of cores).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// A TOML file of node settings (threads, local_replication, gossip_period_ms,
    /// max_key_bytes, max_value_bytes, max_frame_bytes, ...); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's certificate, issued by `calm ca issue` (default: issued from DIR/ca).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// This node's private key, with --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The address other nodes and clients reach this node at, if not --listen (behind a
    /// proxy or NAT). It is the node's identity in the cluster.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// A node of the cluster to join (repeatable); without it the node starts a new cluster
    /// and writes DIR/cluster.toml.
    #[arg(long = "join", value_name = "ADDR")]
    pub join: Vec<SocketAddr>,
    /// Nodes holding each key (when the cluster has that many).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replication: u16,
    /// How often changed keys are sent to their other replicas, milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub gossip_ms: u64,
}

/// Runs a node until Ctrl-C or SIGTERM.
pub async fn run(args: ServerArgs) -> CliResult<()> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_toml_file(path).map_err(|e| e.to_string())?,
        None => NodeConfig::default(),
    };
    if let Some(t) = args.threads {
        config.threads = t;
    }
    // Replica ids must differ between nodes; the address a node listens on does.
    config.node_id = calm_kvs::ring::key_hash(args.listen.to_string().as_bytes()) as u32;
    config.validate().map_err(|e| e.to_string())?;

    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let ca_dir = args.data_dir.join("ca");
    let ca_existed = tls::CaFiles::in_dir(&ca_dir).exist();
    let ca = tls::ensure_ca(&ca_dir).map_err(|e| e.to_string())?;
    if !ca_existed {
        tracing::info!("created a cluster CA in {}", ca_dir.display());
    }
    let certs = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => NodeCertFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let name =
                format!("node-{}-{}", args.listen.ip(), args.listen.port()).replace(':', "_");
            let files = NodeCertFiles::in_dir(&args.data_dir.join("nodes"), &name);
            if files.exist() {
                files
            } else {
                tls::issue(&ca, &name, &args.data_dir.join("nodes")).map_err(|e| e.to_string())?
            }
        }
    };
    let tls_config = tls::server_config(&certs).map_err(|e| e.to_string())?;
    if args.listen.ip().is_unspecified() && args.advertise.is_none() {
        return Err(format!(
            "--listen {} names no single address; other nodes and clients reach a node by its address, so give a concrete one such as 127.0.0.1:{}, or name it with --advertise",
            args.listen,
            args.listen.port()
        ));
    }
    let threads = config.threads;
    let node = Arc::new(Node::start(config).map_err(|e| e.to_string())?);
    let bound = Server::bind(args.listen, tls_config).map_err(|e| e.to_string())?;
    let addr = bound.local_addr();
    let advertised = args.advertise.unwrap_or(addr);
    // Peers see this node's traffic come from its own address.
    let peers = Arc::new(Peers::new(
        tls::client_config(&ca.cert).map_err(|e| e.to_string())?,
        (!addr.ip().is_unspecified()).then(|| addr.ip()),
    ));
    let cluster_config = ClusterConfig {
        replication: usize::from(args.replication),
        gossip_period_ms: args.gossip_ms,
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(
        advertised.to_string(),
        args.join.iter().map(|a| a.to_string()).collect(),
        cluster_config,
        node.pool(),
        peers,
        tokio::runtime::Handle::current(),
    )
    .map_err(|e| e.to_string())?;
    let server = bound.serve(node.clone(), Some(cluster.clone()));

    let cluster_path = args.data_dir.join("cluster.toml");
    if args.join.is_empty() {
        let file = ClusterFile {
            nodes: vec![advertised],
            ca: PathBuf::from("ca").join("ca.pem"),
        };
        file.write(&cluster_path)?;
    }
    tracing::info!(%addr, %advertised, threads, joining = ?args.join, "node listening (QUIC)");
    println!(
        "ready: {advertised} (cluster file {})",
        cluster_path.display()
    );

    wait_for_stop().await;
    tracing::info!("leaving the cluster and stopping");
    cluster.leave().await;
    server.shutdown().await;
    node.shutdown();
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
