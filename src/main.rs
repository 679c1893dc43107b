//! The `calm` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// calm: coordination-free cloud programming.
///
/// calm builds state from lattices: values that only grow by merging, so replicas agree
/// without coordination. Today this binary runs the lattice demo; the store, the cluster
/// and functions arrive as their own subcommands.
#[derive(Parser, Debug)]
#[command(name = "calm", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replicas of a shopping cart edit apart over a lossy network and converge.
    ///
    /// Each replica holds an observed-remove map of item -> counter. Every edit ships a
    /// delta through a simulated network that drops, duplicates and reorders messages; then
    /// anti-entropy rounds repair what was lost. The run is replayed exactly from --seed.
    Demo {
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
    },
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

fn main() -> ExitCode {
    // Usage errors exit 1 (CLI.md keeps 2 for "key not found"); --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Demo {
            replicas,
            edits,
            drop,
            duplicate,
            seed,
            json,
        } => {
            let seed = seed.unwrap_or_else(rand::random);
            let config = calm::demo::DemoConfig {
                replicas: usize::from(replicas),
                edits,
                drop,
                duplicate,
                seed,
            };
            let report = calm::demo::run(&config);
            if json {
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
    }
}

fn print_demo(config: &calm::demo::DemoConfig, report: &calm::demo::DemoReport) {
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

fn demo_json(config: &calm::demo::DemoConfig, report: &calm::demo::DemoReport) -> String {
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
