//! `calm bench consistency`: staleness, contention, partitions, failures and Retwis
//! against a running cluster.

use std::path::PathBuf;
use std::time::Duration;

use calm_bench::Machine;
use clap::{Args, Subcommand};

use super::{parse_duration, write_json};
use crate::cli::CliResult;

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

pub(super) async fn retwis(args: RetwisArgs) -> CliResult<()> {
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

pub(super) async fn partition(args: PartitionArgs) -> CliResult<()> {
    if let Some(p) = &args.plot {
        calm_bench::plot::check_svg(p)?;
    }
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

pub(super) async fn contention(args: ContentionArgs) -> CliResult<()> {
    use calm_bench::contention::{ContentionConfig, ContentionPoint, Setting};
    if let Some(p) = &args.plot {
        calm_bench::plot::check_svg(p)?;
    }
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

pub(super) async fn failures(args: FailuresArgs) -> CliResult<()> {
    use calm_bench::failures::{FailuresConfig, check, run_load};
    let file = crate::cli::target::read_cluster_file(&args.cluster)?;
    let seed = std::process::id() as u64;
    let config = FailuresConfig {
        ca: file.credentials().map_err(|e| e.to_string())?,
        nodes: file.nodes,
        resp_ports: args.resp_ports.clone(),
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

pub(super) async fn staleness(args: StalenessArgs) -> CliResult<()> {
    if let Some(p) = &args.plot {
        // Refuse a bad plot name before the experiment runs.
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(format!(
                "{}: plots are SVG files; name it with .svg",
                p.display()
            ));
        }
    }
    let file = crate::cli::target::read_cluster_file(&args.cluster)?;
    eprintln!("timing {} writes...", args.trials);
    let s = calm_bench::consistency::staleness(
        file.nodes.clone(),
        &file.credentials().map_err(|e| e.to_string())?,
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
