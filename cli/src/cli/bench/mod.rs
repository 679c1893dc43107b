//! `calm bench`: run a workload against calm or Redis and report throughput and latency.

use std::time::Duration;

use clap::Subcommand;

use super::CliResult;

mod autoscale;
mod consistency;
mod functions;
mod workload;

pub use autoscale::AutoscaleArgs;
use autoscale::autoscale;
pub use consistency::ConsistencyCommand;
use consistency::{contention, failures, partition, retwis, staleness};
pub use functions::FunctionsArgs;
use functions::functions;
pub use workload::RunArgs;
use workload::run_workload;

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

/// Writes a report as pretty JSON, and says so on stderr.
fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> CliResult<()> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
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
