//! `calm bench autoscale`: the autoscaling timeline in this process.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, write_json};
use crate::cli::CliResult;

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

pub(super) async fn autoscale(args: AutoscaleArgs) -> CliResult<()> {
    use calm_kvs::policy::PolicyConfig;
    if let Some(p) = &args.plot {
        calm_bench::plot::check_svg(p)?;
    }
    if args.duration < Duration::from_secs(10) || !(100..=60_000).contains(&args.period_ms) {
        return Err("--duration must be at least 10s and --period-ms 100 to 60000".into());
    }
    let config = match &args.policy {
        Some(p) => crate::cli::shared::read_policy(p)?,
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
