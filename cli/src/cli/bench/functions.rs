//! `calm bench functions`: composition, locality and freshness of function calls.

use std::path::PathBuf;

use clap::Args;

use super::write_json;
use crate::cli::CliResult;

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

pub(super) async fn functions(args: FunctionsArgs) -> CliResult<()> {
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
