//! `calm bench`: run a workload against calm or Redis and report throughput and latency.

use std::path::PathBuf;
use std::time::Duration;

use calm_bench::{CalmTarget, Machine, Mix, RedisTarget, Report, RunConfig, ValueKind, Workload};
use calm_kvs::{ClusterClient, EmbeddedStore, NodeConfig};
use clap::{Args, Subcommand};

use super::CliResult;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Run a YCSB-style workload against a target and report ops/s and latency percentiles.
    Run(RunArgs),
    /// Consistency experiments against a running cluster.
    #[command(subcommand)]
    Consistency(ConsistencyCommand),
    /// The autoscaling timeline: a cluster in this process starting with one node, load
    /// rising then falling while its hot spot moves, the policy on; per second throughput,
    /// p99, nodes and hot keys' replicas.
    Autoscale(AutoscaleArgs),
    /// Function experiments (in-process clusters): `composition` times square(increment(x));
    /// `locality` sums 8 MB arrays passed by reference, cache cold vs hot and placement with
    /// vs without locality; `freshness` times writes until a subscribed cache serves them.
    Functions(FunctionsArgs),
}

/// `calm bench autoscale`.
#[derive(Args, Debug)]
pub struct AutoscaleArgs {
    /// How long the timeline runs.
    #[arg(long, default_value = "80s", value_parser = parse_duration)]
    duration: Duration,
    /// How often nodes sample their load and the policy runs, milliseconds.
    #[arg(long, default_value_t = 1_000)]
    period_ms: u64,
    /// The policy's knobs as TOML (defaults here: server p99 target 300 µs, busy 2%, idle
    /// 1%, sustain 3 s, grace 8 s, cool 8 s, 1 to 3 nodes: the workers of an in-process
    /// node are a small part of its work, which is mostly QUIC).
    #[arg(long, value_name = "FILE.toml")]
    policy: Option<PathBuf>,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Plot the timeline to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// `calm bench consistency retwis`.
#[derive(Args, Debug)]
pub struct RetwisArgs {
    /// Tweets (each with one reply and one timeline read) per mode.
    #[arg(long, default_value_t = 500)]
    rounds: u64,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
}

/// `calm bench functions`.
#[derive(Args, Debug)]
pub struct FunctionsArgs {
    /// composition, locality or freshness (how far a cached copy runs behind its owner).
    #[arg(value_parser = ["composition", "locality", "freshness"])]
    experiment: String,
    /// Calls measured per series (after warm-up).
    #[arg(long, default_value_t = 1000)]
    calls: u64,
    /// Bytes of each array for `locality`.
    #[arg(long, default_value_t = 8_000_000)]
    array_bytes: usize,
    /// The folder of the example functions (WebAssembly text).
    #[arg(long, default_value = "examples/functions", value_name = "DIR")]
    examples: PathBuf,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
}

/// `calm bench consistency ...`.
#[derive(Subcommand, Debug)]
pub enum ConsistencyCommand {
    /// Write at one replica, read another replica's copy until the write shows: the
    /// distribution of the time to visibility (t-visibility).
    Staleness(StalenessArgs),
    /// Split a 3-node cluster (in this process, behind UDP fault proxies), write on both
    /// sides, heal: the time until every replica holds every write, and nothing lost.
    Partition(PartitionArgs),
    /// Retwis: replies shown without the tweet they answer, under lww and under causal
    /// (functions on a 3-node cluster in this process).
    Retwis(RetwisArgs),
    /// Anna's contention experiment: read throughput of a cluster of `calm server`
    /// processes against Zipf skew, with the autoscaling policy's selective replication off
    /// and on (each node may be held to a share of a core, as on separate small machines).
    Contention(ContentionArgs),
    /// Acknowledged writes through failures: clients write unique counter increments, set
    /// members and register values through random nodes (native protocol and, with
    /// --resp-ports, Redis) for --duration while you kill, restart or partition nodes; then,
    /// once the replicas agree, every acknowledged write must be there and nothing unwritten
    /// may appear. Reports acknowledged, uncertain (failed or timed out: maybe applied) and
    /// lost writes and the time to converge; exits 1 if anything acknowledged was lost.
    Failures(FailuresArgs),
}

/// `calm bench consistency failures`.
#[derive(Args, Debug)]
pub struct FailuresArgs {
    /// How long the clients write.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Clients over the native protocol.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Clients over the Redis port (needs --resp-ports).
    #[arg(long, default_value_t = 4)]
    resp_clients: usize,
    /// The nodes' Redis ports on 127.0.0.1, comma-separated (calm up: 6400,6401,6402).
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    resp_ports: Vec<u16>,
    /// Counters, sets and registers written (each as many).
    #[arg(long, default_value_t = 20)]
    keys: usize,
    /// Acknowledgement asked of native writes: one or all.
    #[arg(long, default_value = "one", value_parser = ["one", "all"])]
    ack: String,
    /// How long the replicas may take to agree after the load.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    converge_within: Duration,
    /// The cluster file.
    #[arg(long, default_value = "calm-data/cluster.toml", value_name = "FILE")]
    cluster: PathBuf,
    /// Write the report to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
}

/// `calm bench consistency partition`.
#[derive(Args, Debug)]
pub struct PartitionArgs {
    /// Gossip periods to measure, milliseconds, comma-separated.
    #[arg(long, default_value = "50,100,250,500", value_delimiter = ',')]
    gossip_ms: Vec<u64>,
    /// Keys written on each side.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Give up on convergence after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Plot convergence time against the gossip period to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// `calm bench consistency contention`.
#[derive(Args, Debug)]
pub struct ContentionArgs {
    /// Zipf skews to measure, comma-separated.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    zipf: Vec<f64>,
    /// Nodes (one `calm server` process each, one storage worker, one replica per key).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=32))]
    nodes: u16,
    /// Each node's CPU quota in cores, through a Linux control group (needs root): nodes
    /// then have capacities of their own, as on separate machines, and the load generator
    /// keeps the rest of the cores. 0: no quota (every node shares every core).
    #[arg(long, default_value_t = 0.1)]
    node_cpu: f64,
    /// Replicas the policy gives a hot key (default: every node).
    #[arg(long)]
    hot_factor: Option<u8>,
    /// Keys loaded.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Concurrent clients (closed loop; enough to keep every node busy although each
    /// waits out its quota's pauses).
    #[arg(long, default_value_t = 1024)]
    clients: usize,
    /// Load before each measurement, in which the policy sees the skew and reacts.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    warmup: Duration,
    /// Measured time per setting.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    duration: Duration,
    /// How often nodes sample their load and run the policy, milliseconds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    autoscale_ms: u64,
    /// Runs of each setting at each skew (alternating, each on a fresh cluster); the
    /// median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=99))]
    rounds: u16,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Plot throughput against skew to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// `calm bench consistency staleness`.
#[derive(Args, Debug)]
pub struct StalenessArgs {
    /// Writes to time.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Give up on a write not visible after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// The gossip period the cluster runs with, milliseconds (recorded in the report).
    #[arg(long, value_name = "MS")]
    gossip_ms: Option<u64>,
    /// The cluster file.
    #[arg(long, default_value = "calm-data/cluster.toml", value_name = "FILE")]
    cluster: PathBuf,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Plot the distribution (CDF) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

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

/// A duration: a number with a unit (ms, s, m), or seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 10s, 500ms or 2m"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{text:?}: a duration must be positive"));
    }
    Ok(Duration::from_secs_f64(n * scale))
}

/// Runs `calm bench ...`.
pub async fn run(cmd: BenchCommand) -> CliResult<()> {
    match cmd {
        BenchCommand::Run(args) => run_workload(args).await,
        BenchCommand::Consistency(ConsistencyCommand::Staleness(args)) => staleness(args).await,
        BenchCommand::Consistency(ConsistencyCommand::Contention(args)) => contention(args).await,
        BenchCommand::Consistency(ConsistencyCommand::Partition(args)) => partition(args).await,
        BenchCommand::Consistency(ConsistencyCommand::Failures(args)) => failures(args).await,
        BenchCommand::Functions(args) => functions(args).await,
        BenchCommand::Autoscale(args) => autoscale(args).await,
        BenchCommand::Consistency(ConsistencyCommand::Retwis(args)) => retwis(args).await,
    }
}

async fn autoscale(args: AutoscaleArgs) -> CliResult<()> {
    use calm_kvs::policy::PolicyConfig;
    check_svg_name(&args.plot)?;
    if args.duration < Duration::from_secs(10) || !(100..=60_000).contains(&args.period_ms) {
        return Err("--duration must be at least 10s and --period-ms 100 to 60000".into());
    }
    let config = match &args.policy {
        Some(p) => super::shared::read_policy(p)?,
        None => PolicyConfig {
            slo_p99_us: 300,
            busy: 0.02,
            idle: 0.01,
            sustain_ms: 3_000,
            grace_ms: 8_000,
            cool_ms: 8_000,
            min_nodes: 1,
            max_nodes: 3,
            ..PolicyConfig::default()
        },
    };
    eprintln!(
        "running the autoscaling timeline for {:?}...",
        args.duration
    );
    let timeline = calm_bench::autoscale::timeline(args.duration, args.period_ms, config).await?;
    println!(
        "{:>4} {:>7} {:>8} {:>9} {:>6} {:>8} {:>5} {:>5} {:>5}",
        "s", "clients", "ops/s", "p99 ms", "busy%", "srv p99", "nodes", "rf a", "rf b"
    );
    for s in &timeline.seconds {
        println!(
            "{:>4} {:>7} {:>8} {:>9.3} {:>6.1} {:>8} {:>5} {:>5} {:>5}",
            s.t,
            s.clients,
            s.ops,
            s.p99_us as f64 / 1000.0,
            s.occupancy * 100.0,
            s.server_p99_us,
            s.nodes,
            s.rf_a,
            s.rf_b
        );
    }
    for (t, a) in &timeline.actions {
        println!("at {t} s: {a}");
    }
    if let Some(out) = &args.out {
        write_json(out, &timeline)?;
    }
    if let Some(plot) = &args.plot {
        calm_bench::autoscale::plot(&timeline, plot)?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}

async fn retwis(args: RetwisArgs) -> CliResult<()> {
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    eprintln!("running Retwis ({} tweets per mode)...", args.rounds);
    let report = calm_bench::functions::retwis(args.rounds).await?;
    println!(
        "{:<16} {:>10} {:>10} {:>9} {:>9}",
        "mode", "timelines", "anomalies", "p50 ms", "p99 ms"
    );
    for m in &report.modes {
        println!(
            "{:<16} {:>10} {:>10} {:>9.3} {:>9.3}",
            m.consistency,
            m.timelines,
            m.anomalies,
            m.latency.p50_us as f64 / 1000.0,
            m.latency.p99_us as f64 / 1000.0
        );
    }
    if let Some(out) = &args.out {
        write_json(out, &report)?;
    }
    Ok(())
}

async fn functions(args: FunctionsArgs) -> CliResult<()> {
    use calm_bench::functions;
    if args.calls == 0 {
        return Err("--calls must be at least 1".into());
    }
    if !(8..=8 << 20).contains(&args.array_bytes) {
        return Err("--array-bytes must be between 8 and 8388608 (the store's value limit)".into());
    }
    eprintln!(
        "running the {} experiment ({} calls per series)...",
        args.experiment, args.calls
    );
    let report = match args.experiment.as_str() {
        "composition" => functions::composition(args.calls, &args.examples).await?,
        "freshness" => functions::freshness(args.calls).await?,
        _ => functions::locality(args.calls, args.array_bytes, &args.examples).await?,
    };
    println!("{}", functions::header());
    for s in &report.series {
        println!("{}", s.line());
    }
    for (name, r) in &report.ratios {
        println!("{name}: {r:.2}x");
    }
    for (name, v) in &report.notes {
        if name.starts_with("calls") {
            println!("{name}: {:.0}%", v * 100.0);
        } else {
            println!("{name}: {v}");
        }
    }
    if let Some(out) = &args.out {
        write_json(out, &report)?;
    }
    Ok(())
}

/// Writes a report as pretty JSON, and says so on stderr.
fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> CliResult<()> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn check_svg_name(plot: &Option<PathBuf>) -> CliResult<()> {
    match plot {
        Some(p) if p.extension().and_then(|e| e.to_str()) != Some("svg") => Err(format!(
            "{}: plots are SVG files; name it with .svg",
            p.display()
        )),
        _ => Ok(()),
    }
}

async fn partition(args: PartitionArgs) -> CliResult<()> {
    check_svg_name(&args.plot)?;
    println!(
        "{:>10} {:>14} {:>22} {:>6}",
        "gossip ms", "acknowledged", "converged after heal", "lost"
    );
    let mut runs = Vec::new();
    let mut failed = false;
    for &g in &args.gossip_ms {
        let r = calm_bench::consistency::partition(g, args.keys, args.timeout).await?;
        println!(
            "{:>10} {:>14} {:>22} {:>6}",
            g,
            format!("{}/{}", r.acknowledged, 2 * r.writes_per_side),
            r.converged_after_ms
                .map_or(format!("not within {:?}", args.timeout), |ms| format!(
                    "{ms} ms"
                )),
            r.lost
        );
        failed |= r.lost > 0 || r.converged_after_ms.is_none();
        runs.push(r);
    }
    if let Some(path) = &args.out {
        let report = serde_json::json!({ "partition": runs, "machine": Machine::here() });
        write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        let pts = runs
            .iter()
            .filter_map(|r| {
                r.converged_after_ms
                    .map(|ms| (r.gossip_ms as f64, ms as f64))
            })
            .collect();
        calm_bench::plot::lines(
            "convergence after a partition heals",
            "gossip period, ms",
            "ms from heal to convergence",
            &[("3 nodes, node 0 cut from the others".to_string(), pts)],
            path,
        )?;
        eprintln!("wrote {}", path.display());
    }
    if failed {
        return Err("an acknowledged write was lost or the cluster did not converge".into());
    }
    Ok(())
}

async fn contention(args: ContentionArgs) -> CliResult<()> {
    use calm_bench::contention::{ContentionConfig, ContentionPoint, Setting};
    check_svg_name(&args.plot)?;
    let nodes = usize::from(args.nodes);
    let config = ContentionConfig {
        exe: std::env::current_exe().map_err(|e| format!("cannot find the calm binary: {e}"))?,
        nodes,
        node_cpu: (args.node_cpu > 0.0).then_some(args.node_cpu),
        zipfs: args.zipf.clone(),
        keys: args.keys,
        clients: args.clients,
        warmup: args.warmup,
        duration: args.duration,
        autoscale_ms: args.autoscale_ms,
        hot_factor: args
            .hot_factor
            .unwrap_or(u8::try_from(nodes).unwrap_or(u8::MAX)),
        rounds: usize::from(args.rounds),
    };
    eprintln!(
        "{nodes} nodes{}, {} skews, policy off then on ({} rounds, median kept): {:?} of load then {:?} measured each...",
        config
            .node_cpu
            .map(|c| format!(" of {c} core each"))
            .unwrap_or_default(),
        args.zipf.len(),
        args.rounds,
        args.warmup,
        args.duration
    );
    let points = calm_bench::contention::run(&config, |step| eprintln!("  {step}")).await?;
    println!(
        "{:>5} {:>11} {:>8} {:>8} {:>11} {:>8} {:>8} {:>10} {:>7}",
        "zipf",
        "off ops/s",
        "p99 µs",
        "busiest",
        "on ops/s",
        "p99 µs",
        "busiest",
        "hot keys",
        "ratio"
    );
    for p in &points {
        println!(
            "{:>5} {:>11.0} {:>8} {:>7.0}% {:>11.0} {:>8} {:>7.0}% {:>10} {:>6.2}x",
            p.zipf,
            p.off.ops_per_sec,
            p.off.p99_us,
            p.off.busiest_share * 100.0,
            p.on.ops_per_sec,
            p.on.p99_us,
            p.on.busiest_share * 100.0,
            p.on.replicated.len(),
            p.ratio()
        );
    }
    if let Some(path) = &args.out {
        let report = serde_json::json!({
            "contention": points,
            "config": config,
            "machine": Machine::here(),
        });
        write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        let line = |f: fn(&ContentionPoint) -> &Setting| {
            points
                .iter()
                .map(|p| (p.zipf, f(p).ops_per_sec))
                .collect::<Vec<_>>()
        };
        calm_bench::plot::lines(
            &format!("read throughput against skew, {nodes} nodes"),
            "zipf",
            "ops/s",
            &[
                (
                    "policy off (one replica per key)".to_string(),
                    line(|p| &p.off),
                ),
                (
                    "policy on (hot keys replicated)".to_string(),
                    line(|p| &p.on),
                ),
            ],
            path,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn failures(args: FailuresArgs) -> CliResult<()> {
    use calm_bench::failures::{FailuresConfig, check, run_load};
    let file = super::target::read_cluster_file(&args.cluster)?;
    let seed = std::process::id() as u64;
    let config = FailuresConfig {
        nodes: file.nodes,
        resp_ports: args.resp_ports.clone(),
        ca: file.ca,
        native_clients: args.clients,
        resp_clients: args.resp_clients,
        keys: args.keys,
        ack: if args.ack == "all" {
            calm_kvs::Ack::All
        } else {
            calm_kvs::Ack::One
        },
        pause: Duration::from_millis(5),
        prefix: format!("failures/{seed}"),
        seed,
    };
    eprintln!(
        "writing for {:?} (kill, restart or partition nodes now)...",
        args.duration
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (config, stop) = (config.clone(), stop.clone());
        tokio::spawn(async move { run_load(&config, stop).await })
    };
    tokio::time::sleep(args.duration).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let history = load.await.map_err(|e| e.to_string())?;
    eprintln!("checking {} acknowledged writes...", history.acked);
    let report = check(&config, &history, args.converge_within).await;
    println!(
        "{} writes acknowledged, {} uncertain; lost: {} set members, {} counters below their acknowledged sum (short by {}), {} registers; {} counters above, {} values nobody wrote; {} keys answered differently by different nodes; converged in {} ms",
        report.acked,
        report.uncertain,
        report.lost_members,
        report.counters_below,
        report.counters_short_by,
        report.lost_registers,
        report.counters_above,
        report.unwritten,
        report.diverged,
        report.converge_ms
    );
    for e in &report.examples {
        println!("  {e}");
    }
    if let Some(path) = &args.out {
        write_json(path, &report)?;
    }
    if report.lost_anything() || report.diverged > 0 {
        return Err("an acknowledged write was lost, an unwritten value appeared, or the replicas did not agree".into());
    }
    Ok(())
}

async fn staleness(args: StalenessArgs) -> CliResult<()> {
    if let Some(p) = &args.plot {
        // Refuse a bad plot name before the experiment runs.
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(format!(
                "{}: plots are SVG files; name it with .svg",
                p.display()
            ));
        }
    }
    let file = super::target::read_cluster_file(&args.cluster)?;
    eprintln!("timing {} writes...", args.trials);
    let s = calm_bench::consistency::staleness(
        file.nodes,
        &file.ca,
        args.trials,
        args.timeout,
        args.gossip_ms,
    )
    .await?;
    let l = &s.visibility_us;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "t-visibility over {} writes (gossip period {}): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} never visible within {:?}",
        s.trials,
        s.gossip_ms
            .map_or("not given".to_string(), |g| format!("{g} ms")),
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max),
        s.never_visible,
        args.timeout
    );
    if let Some(path) = &args.out {
        let report = serde_json::json!({ "staleness": s, "machine": Machine::here() });
        write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        let label = s
            .gossip_ms
            .map_or("t-visibility".to_string(), |g| format!("gossip {g} ms"));
        let samples = s.samples_us.iter().map(|&us| ms(us)).collect();
        calm_bench::plot::cdf(
            "time from a write's acknowledgement to its visibility at another replica",
            "ms",
            &[(label, samples)],
            path,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn run_workload(args: RunArgs) -> CliResult<()> {
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
            let file = super::target::read_cluster_file(&args.cluster)?;
            let client = ClusterClient::connect(file.nodes, &file.ca)
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

async fn drive<T, F, Fut>(
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

#[cfg(test)]
mod test {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
