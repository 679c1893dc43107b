//! `calm server`: one node.

use std::net::SocketAddr;
use std::path::PathBuf;

use calm::cluster_file::ClusterFile;
use calm_kvs::NodeConfig;
use calm_kvs::cluster::ClusterConfig;
use calm_kvs::launch::{NodeLaunch, launch};
use calm_kvs::tls::NodeCertFiles;
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
    config.validate().map_err(|e| e.to_string())?;

    let threads = config.threads;
    let running = launch(NodeLaunch {
        listen: args.listen,
        advertise: args.advertise,
        join: args.join.clone(),
        node: config,
        cluster: ClusterConfig {
            replication: usize::from(args.replication),
            gossip_period_ms: args.gossip_ms,
            ..ClusterConfig::default()
        },
        data_dir: args.data_dir.clone(),
        cert: match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => Some(NodeCertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
    })
    .map_err(|e| e.to_string())?;
    let (addr, advertised) = (running.addr, running.advertised);

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
    running.stop().await;
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
