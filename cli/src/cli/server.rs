//! `calm server`: one node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use calm::cluster_file::ClusterFile;
use calm_cache::CacheConfig;
use calm_executor::{ExecService, Executor, ExecutorConfig};
use calm_kvs::ClusterClient;
use calm_kvs::NodeConfig;
use calm_kvs::cluster::ClusterConfig;
use calm_kvs::launch::{NodeLaunch, launch, store_dir};
use calm_kvs::storage::Durability;
use calm_kvs::tls::{CertFiles, Credentials};
use clap::Args;

use super::CliResult;

/// Run one node in the foreground.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address for the native protocol (QUIC).
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Folder for the cluster CA, this node's certificate, cluster.toml and the node's keys
    /// (DIR/store/node-IP-PORT).
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
    /// The certificate of the CA that issued --cert (default: DIR/ca/ca.pem). Its key is
    /// not needed: nodes and clients are checked against the certificate alone.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub ca: Option<PathBuf>,
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
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Also serve Redis clients (RESP2/RESP3 over TCP) on this address, e.g. 127.0.0.1:6400.
    #[arg(long, value_name = "ADDR")]
    pub resp: Option<SocketAddr>,
    /// Run the autoscaling policy on this node: hot keys get more replicas and go back when
    /// they cool; node decisions are logged (shown by `calm status`).
    #[arg(long)]
    pub autoscale: bool,
    /// With --autoscale: how often the node samples its load and runs the policy,
    /// milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub autoscale_ms: u64,
    /// With --autoscale: the policy's knobs as TOML (hot_sigma, hot_factor, hot_workers,
    /// cool_ms, sustain_ms); fields left out keep their defaults.
    #[arg(long, value_name = "FILE.toml", requires = "autoscale")]
    pub policy: Option<PathBuf>,
    /// Redis clients must AUTH with this password (Redis's requirepass).
    #[arg(long, value_name = "PASSWORD", requires = "resp")]
    pub resp_password: Option<String>,
    /// Redis clients speak TLS (redis-cli --tls --cacert DIR/ca/ca.pem), with this node's
    /// certificate.
    #[arg(long, requires = "resp")]
    pub resp_tls: bool,
    /// Users and their rights per key prefix (TOML; see calm_kvs::acl): clients may do
    /// what the file grants the name in their certificate, Redis clients what it grants the
    /// user they AUTH as. Its `[[quotas]]` (prefix, keys, bytes) limit what the keys under
    /// a prefix hold on each node: writes that would grow past a limit are refused (Redis:
    /// OOM). Give every node the same file. Without one (or with quotas but no users),
    /// every client may do everything.
    #[arg(long, value_name = "FILE.toml")]
    pub acl: Option<PathBuf>,
    /// When Redis clients' writes are answered: `visible` once every owner seen alive holds
    /// them (a read through any node finds them); `one` once the first owner does (faster;
    /// a read through another node may miss the write for about a millisecond).
    #[arg(long, value_name = "WHEN", default_value = "visible", value_parser = ["visible", "one"], requires = "resp")]
    pub resp_ack: String,
    /// Function executor threads next to this node's cache (0: no executors).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub executors: u16,
    /// The most bytes of values the node's function cache holds (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256MiB")]
    pub cache_size: u64,
}

/// Where and when a node's data reaches the disk (under DIR/store/).
#[derive(Args, Debug, Clone, Default)]
pub struct StorageArgs {
    /// When writes reach the disk: memory (never; a stopped node loses its data, its
    /// replicas keep theirs), async (logged at once, fsync'd every --flush-ms: a crashed
    /// process loses nothing, a power cut at most the last --flush-ms; the default), sync
    /// (fsync'd before the write is acknowledged).
    #[arg(long, value_name = "MODE")]
    pub durability: Option<Durability>,
    /// With async durability: how often the log is fsync'd, milliseconds (default 100).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_ms: Option<u64>,
    /// Memory for keys and values per node (what INFO used_memory counts), e.g. 512MiB or
    /// 2GiB; colder keys then live only on disk and are loaded back when used (default: no
    /// limit).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<u64>,
}

impl StorageArgs {
    /// Sets the fields given on the command line.
    pub fn apply(&self, config: &mut NodeConfig) {
        if let Some(d) = self.durability {
            config.storage.durability = d;
        }
        if let Some(ms) = self.flush_ms {
            config.storage.flush_ms = ms;
        }
        if let Some(b) = self.memory_budget {
            config.storage.memory_budget = Some(b);
        }
    }

    /// The same settings as `calm server` arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = self.durability {
            out.extend(["--durability".to_string(), d.to_string()]);
        }
        if let Some(ms) = self.flush_ms {
            out.extend(["--flush-ms".to_string(), ms.to_string()]);
        }
        if let Some(b) = self.memory_budget {
            out.extend(["--memory-budget".to_string(), b.to_string()]);
        }
        out
    }
}

/// A size in bytes: a number with an optional unit (B, KiB, MiB, GiB, TiB; K, M, G, T and
/// KB, MB, GB, TB mean the same powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 512MiB, 2GiB or 1000000"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
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
    args.storage.apply(&mut config);
    if args.autoscale {
        config.autoscale_period_ms = args.autoscale_ms;
    }
    if let Some(path) = &args.policy {
        config.policy = super::shared::read_policy(path)?;
    }
    if let Some(path) = &args.acl {
        let mut acl = calm_kvs::acl::Acl::read(path).map_err(|e| e.to_string())?;
        config.quotas = std::mem::take(&mut acl.quotas);
        // A file of quotas alone leaves access as without a file.
        if !acl.users.is_empty() {
            config.acl = Some(Arc::new(acl));
        }
    }
    // One node per process: its processor time is the node's, for the load samples.
    config.own_process = true;
    config.data_dir = Some(store_dir(
        &args.data_dir,
        args.advertise.unwrap_or(args.listen),
    ));
    config.validate().map_err(|e| e.to_string())?;
    let durability = config.storage.durability;

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
            (Some(cert), Some(key)) => Some(Credentials {
                ca: args
                    .ca
                    .clone()
                    .unwrap_or_else(|| args.data_dir.join("ca").join("ca.pem")),
                cert: CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
            }),
            _ => None,
        },
        resp: args.resp,
        resp_config: calm_kvs::resp::RespConfig {
            password: args.resp_password.clone(),
            ack: if args.resp_ack == "one" {
                calm_kvs::protocol::Ack::One
            } else {
                calm_kvs::protocol::Ack::Visible
            },
            tls: if args.resp_tls {
                calm_kvs::resp::RespTls::NodeCertificate
            } else {
                calm_kvs::resp::RespTls::Off
            },
        },
    })
    .map_err(|e| e.to_string())?;
    let (addr, advertised) = (running.addr, running.advertised);
    let recovery = running.node.recovery();
    if durability != Durability::Memory {
        tracing::info!(
            records = recovery.records(),
            incarnation = recovery.incarnation,
            took_ms = recovery.took.as_millis() as u64,
            "recovered from disk ({durability} durability)"
        );
    }

    let executor = if args.executors > 0 {
        let client = ClusterClient::connect(vec![advertised], &running.credentials())
            .await
            .map_err(|e| format!("executors cannot reach their own node: {e}"))?;
        let config = ExecutorConfig {
            executors: usize::from(args.executors),
            cache: CacheConfig {
                capacity_bytes: usize::try_from(args.cache_size).unwrap_or(usize::MAX),
                ..CacheConfig::default()
            },
            ..ExecutorConfig::default()
        };
        let executor = Executor::start(advertised, client, config)
            .await
            .map_err(|e| format!("cannot start the executors: {e}"))?;
        running.server.services().register(
            calm_executor::api::SERVICE,
            Arc::new(ExecService(executor.clone())),
        );
        Some(executor)
    } else {
        None
    };

    let cluster_path = args.data_dir.join("cluster.toml");
    if args.join.is_empty() {
        // The cluster file names a client certificate, issued from the CA: without the
        // CA's key here (a node given its certificate), clients bring their own.
        if running.ca.exist() {
            let file = ClusterFile::for_data_dir(&args.data_dir, vec![advertised])
                .map_err(|e| e.to_string())?;
            file.write(&cluster_path).map_err(|e| e.to_string())?;
        } else {
            tracing::info!(
                "no CA key in {}: no cluster file written; clients connect with --addr, --ca and a client certificate",
                args.data_dir.join("ca").display()
            );
        }
    }
    tracing::info!(%addr, %advertised, threads, executors = args.executors, joining = ?args.join, "node listening (QUIC)");
    let resp = running
        .resp
        .as_ref()
        .map(|r| format!(", RESP {}", r.local_addr()))
        .unwrap_or_default();
    println!(
        "ready: {advertised} (cluster file {}{resp})",
        cluster_path.display()
    );

    super::shared::wait_for_stop().await;
    tracing::info!("leaving the cluster and stopping");
    if let Some(executor) = executor {
        executor.shutdown();
    }
    running.stop().await;
    Ok(())
}

#[cfg(test)]
mod test {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4 kb"), Ok(4096));
        assert!(parse_size("12XB").unwrap_err().contains("unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
