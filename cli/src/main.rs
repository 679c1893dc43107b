//! The `calm` command line.

mod cli;
mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// calm: coordination-free cloud programming.
///
/// calm keeps state in lattices: values that only grow by merging, so replicas agree
/// without coordination. Start a local cluster with `calm up`, then read and write keys with
/// `calm kv`, and run functions next to the data with `calm fn` and `calm dag`. Errors print one line on stderr; exit status 0 is success, 1 an error, 2 a
/// `kv get` of a missing key.
#[derive(Parser, Debug)]
#[command(name = "calm", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster: N `calm server` nodes on 127.0.0.1, until Ctrl-C.
    Up(cli::up::UpArgs),
    /// Run one node in the foreground (creates the cluster CA in the data dir if absent).
    Server(cli::server::ServerArgs),
    /// Read and write keys.
    Kv(cli::kv::KvArgs),
    /// Functions: store WebAssembly modules, list them, call one.
    Fn(cli::func::FnArgs),
    /// DAGs of functions: register, call (with a consistency mode).
    Dag(cli::func::DagArgs),
    /// Show each node of the cluster: reachable or not, keys, operations, latency.
    Status(cli::status::StatusArgs),
    /// Autoscale a cluster running on Kubernetes: add and remove nodes as the load asks.
    Autoscaler(cli::autoscaler::AutoscalerArgs),
    /// Make a cluster CA and node certificates (for clusters across machines).
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Replicas of a shopping cart edit apart over a lossy network and converge.
    Demo(cli::demo::DemoArgs),
    /// Benchmarks: workloads against calm or Redis, with throughput and latency figures.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
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
    let result = match cli.command {
        Command::Demo(args) => return cli::demo::run(args),
        Command::Ca(cmd) => cli::ca::run(cmd).map(|()| ExitCode::SUCCESS),
        command => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    Command::Server(args) => {
                        cli::server::run(args).await.map(|()| ExitCode::SUCCESS)
                    }
                    Command::Kv(args) => cli::kv::run(args).await,
                    Command::Autoscaler(args) => {
                        cli::autoscaler::run(args).await.map(|()| ExitCode::SUCCESS)
                    }
                    Command::Fn(args) => cli::func::run_fn(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Dag(args) => {
                        cli::func::run_dag(args).await.map(|()| ExitCode::SUCCESS)
                    }
                    Command::Bench(cmd) => cli::bench::run(cmd).await.map(|()| ExitCode::SUCCESS),
                    Command::Up(args) => cli::up::run(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Status(args) => {
                        cli::status::run(args).await.map(|()| ExitCode::SUCCESS)
                    }
                    Command::Demo(_) | Command::Ca(_) => unreachable!("handled above"),
                }
            })
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `calm status | head` closes the pipe early; the next print then fails. Do what tools
/// killed by SIGPIPE do — stop, silently, with status 141 — rather than report a panic.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))
}
