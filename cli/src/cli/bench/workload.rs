//! `calm bench run`: a YCSB-style workload against calm or Redis.

use std::path::PathBuf;
use std::time::Duration;

use calm_bench::{CalmTarget, Machine, Mix, RedisTarget, Report, RunConfig, ValueKind, Workload};
use calm_kvs::{ClusterClient, EmbeddedStore, NodeConfig};
use clap::Args;

use super::{parse_duration, write_json};
use crate::cli::CliResult;

/// `calm bench run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// embedded (a store in this process), cluster (the nodes of --cluster, through the
    /// routing client) or redis://HOST:PORT (Redis, or a calm node's --resp port).
    #[arg(long, value_name = "TARGET")]
    target: String,
    /// YCSB workload: a (50% updates), b (5% updates), c (reads), d (read latest), f
    /// (read-modify-write). e needs range scans, which calm does not offer.
    #[arg(long, default_value = "a")]
    workload: Mix,
    /// Keys loaded before the run.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// The share of reads (0 to 1), instead of the workload's own mix.
    #[arg(long, value_name = "F")]
    read_fraction: Option<f64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Zipf skew of key choice (0 = uniform).
    #[arg(long, default_value_t = 0.99)]
    zipf: f64,
    /// The values' lattice: lww, counter or set.
    #[arg(long, default_value = "lww")]
    kind: ValueKind,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Open loop at this many operations per second in total (default: closed loop).
    #[arg(long, value_name = "OPS")]
    rate: Option<f64>,
    /// Measured time (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Time before measuring starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Seed of the operation traces.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip loading the keys (they are already there).
    #[arg(long)]
    no_load: bool,
    /// Write every figure, the configuration and the machine to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Plot throughput and p99 latency over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Storage workers of the embedded store (default: one per core).
    #[arg(long, value_name = "T")]
    threads: Option<usize>,
    /// The cluster file, with --target cluster.
    #[arg(long, default_value = "calm-data/cluster.toml", value_name = "FILE")]
    cluster: PathBuf,
}

pub(super) async fn run_workload(args: RunArgs) -> CliResult<()> {
    let workload = Workload {
        mix: args.workload,
        keys: args.keys,
        value_size: args.value_size,
        zipf: args.zipf,
        kind: args.kind,
        seed: args.seed,
        read_fraction: args.read_fraction,
    };
    workload.validate()?;
    if let Some(p) = &args.plot
        && p.extension().and_then(|e| e.to_str()) != Some("svg")
    {
        return Err(format!(
            "{}: plots are SVG files; name it with .svg",
            p.display()
        ));
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let config = RunConfig {
        clients: args.clients,
        duration: args.duration,
        warmup: args.warmup,
        rate: args.rate,
    };
    let measured = match args.target.as_str() {
        "embedded" => {
            let mut node = NodeConfig::default();
            if let Some(t) = args.threads {
                node.threads = t;
            }
            let store = EmbeddedStore::start(node).map_err(|e| e.to_string())?;
            let target = CalmTarget::new(store, args.kind, args.value_size);
            drive(&args, &workload, &config, |_| {
                let t = target.clone();
                async move { Ok(t) }
            })
            .await?
        }
        "cluster" => {
            let file = crate::cli::target::read_cluster_file(&args.cluster)?;
            let creds = file.credentials().map_err(|e| e.to_string())?;
            let client = ClusterClient::connect(file.nodes, &creds)
                .await
                .map_err(|e| e.to_string())?;
            let target = CalmTarget::new(client, args.kind, args.value_size);
            drive(&args, &workload, &config, |_| {
                let t = target.clone();
                async move { Ok(t) }
            })
            .await?
        }
        url if url.starts_with("redis://") => {
            let first = RedisTarget::connect(url, args.kind, args.value_size).await?;
            drive(&args, &workload, &config, |i| {
                let first = first.clone();
                async move {
                    if i == 0 {
                        Ok(first)
                    } else {
                        first.reconnect(url).await
                    }
                }
            })
            .await?
        }
        other => {
            return Err(format!(
                "unknown target {other:?}; use embedded, cluster or redis://HOST:PORT"
            ));
        }
    };
    let report = Report {
        target: args.target.clone(),
        workload,
        run: config,
        machine: Machine::here(),
        measured,
    };
    println!("{}", report.summary());
    if let Some(path) = &args.plot {
        calm_bench::plot::run_timeline(&report, path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.out {
        write_json(path, &report)?;
    }
    Ok(())
}

pub(super) async fn drive<T, F, Fut>(
    args: &RunArgs,
    workload: &Workload,
    config: &RunConfig,
    make: F,
) -> CliResult<calm_bench::Measured>
where
    T: calm_bench::Target,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    if !args.no_load {
        eprintln!("loading {} keys...", workload.keys);
        make(0).await?.load(workload.keys).await?;
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {percent}% {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_message(format!(
        "workload {:?}, {} clients, {:?} (+{:?} warm-up)",
        workload.mix, config.clients, config.duration, config.warmup
    ));
    let measured = calm_bench::run(workload, config, make, |done| {
        bar.set_position((done * 1000.0) as u64);
    })
    .await;
    bar.finish_and_clear();
    measured
}
