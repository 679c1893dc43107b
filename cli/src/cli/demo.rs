//! `calm demo`: replicas of a shopping cart converge over a lossy network.

use std::process::ExitCode;

use crate::demo::{DemoConfig, DemoReport, run as run_demo};
use clap::Args;

/// Replicas of a shopping cart edit apart over a lossy network and converge.
///
/// Each replica holds an observed-remove map of item -> counter. Every edit ships a delta
/// through a simulated network that drops, duplicates and reorders messages; then
/// anti-entropy rounds repair what was lost. The run is replayed exactly from --seed.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of replicas.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    replicas: u16,
    /// Number of edits across all replicas.
    #[arg(long, default_value_t = 1000)]
    edits: usize,
    /// Probability (0 to below 1) that the network loses a message.
    #[arg(long, default_value_t = 0.2, value_parser = loss_probability)]
    drop: f64,
    /// Probability (0..=1) that the network delivers a message twice.
    #[arg(long, default_value_t = 0.1, value_parser = probability)]
    duplicate: f64,
    /// Seed of the run; the same seed gives the same run. Random if absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number; give a probability such as 0.2"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not between 0 and 1"))
    }
}

/// A loss rate below 1: a network that loses everything cannot converge.
fn loss_probability(s: &str) -> Result<f64, String> {
    let p = probability(s)?;
    if p < 1.0 {
        Ok(p)
    } else {
        Err("a network that loses every message can never converge; give a value below 1".into())
    }
}

/// Runs the demo; exit status 1 if the replicas did not converge (a bug).
pub fn run(args: DemoArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(rand::random);
    let config = DemoConfig {
        replicas: usize::from(args.replicas),
        edits: args.edits,
        drop: args.drop,
        duplicate: args.duplicate,
        seed,
    };
    let report = run_demo(&config);
    if args.json {
        println!("{}", demo_json(&config, &report));
    } else {
        print_demo(&config, &report);
    }
    if report.converged {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: replicas did not converge (seed {seed}); this is a bug in calm, please report it with the seed"
        );
        ExitCode::FAILURE
    }
}

fn print_demo(config: &DemoConfig, report: &DemoReport) {
    println!(
        "{} replicas, {} edits, seed {}",
        config.replicas, config.edits, config.seed
    );
    println!(
        "network: {} messages sent, {} lost, {} delivered twice, all reordered",
        report.sent, report.dropped, report.duplicated
    );
    println!("anti-entropy rounds to converge: {}", report.repair_rounds);
    println!("converged: {}", if report.converged { "yes" } else { "NO" });
    println!("cart:");
    for (item, count) in &report.cart {
        println!("  {item:<8} {count}");
    }
}

fn demo_json(config: &DemoConfig, report: &DemoReport) -> String {
    let cart: Vec<String> = report
        .cart
        .iter()
        .map(|(item, count)| format!("{{\"item\":{item:?},\"count\":{count}}}"))
        .collect();
    format!(
        "{{\"replicas\":{},\"edits\":{},\"seed\":{},\"sent\":{},\"dropped\":{},\"duplicated\":{},\"repair_rounds\":{},\"converged\":{},\"cart\":[{}]}}",
        config.replicas,
        config.edits,
        config.seed,
        report.sent,
        report.dropped,
        report.duplicated,
        report.repair_rounds,
        report.converged,
        cart.join(",")
    )
}
