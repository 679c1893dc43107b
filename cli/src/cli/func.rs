//! `calm fn` and `calm dag`: register functions and DAGs, and call them.

use std::io::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use calm_executor::api::{
    self, Arg, CallRequest, CallResult, DagSpec, ExecError, ExecRequest, ExecResponse,
};
use calm_executor::{Consistency, Dag};
use clap::{Args, Subcommand};
use serde_json::json;

use super::CliResult;
use super::target::Target;

/// The largest module or argument file the command line sends (the store's value limit).
const MAX_FILE: u64 = 8 << 20;

/// Register and call functions.
#[derive(Args, Debug)]
pub struct FnArgs {
    #[command(flatten)]
    target: Target,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: FnCommand,
}

#[derive(Subcommand, Debug)]
enum FnCommand {
    /// Store a WebAssembly module (binary `.wasm` or text `.wat`) as a function; every
    /// node's executors can then run it.
    Register {
        /// The function's name (letters, digits, '-', '_', '.').
        name: String,
        /// The module.
        file: PathBuf,
    },
    /// List registered functions and DAGs.
    Ls,
    /// Call one function.
    Call {
        /// The function.
        name: String,
        /// Its argument: text, `@FILE` for a file's bytes, or `ref:KEY` for the value of a key
        /// (read next to the executor).
        #[arg(allow_negative_numbers = true)]
        arg: Option<String>,
        /// How the call's reads relate: lww, repeatable-read or causal.
        #[arg(long, default_value = "lww", value_parser = parse_consistency)]
        consistency: Consistency,
    },
}

/// Register and call DAGs of functions.
#[derive(Args, Debug)]
pub struct DagArgs {
    #[command(flatten)]
    target: Target,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: DagCommand,
}

#[derive(Subcommand, Debug)]
enum DagCommand {
    /// Store a DAG: its edges F:G (the output of F is an input of G) and lone functions.
    /// Every function must be registered; cycles are refused.
    Register {
        /// The DAG's name.
        name: String,
        /// An edge F:G (repeatable).
        #[arg(long = "edge", value_name = "F:G", value_parser = parse_edge)]
        edges: Vec<(String, String)>,
        /// A function with no edge (repeatable).
        #[arg(long = "fn", value_name = "F")]
        lone: Vec<String>,
    },
    /// Call a DAG: its source functions get the arguments, the result is every sink's
    /// output.
    Call {
        /// The DAG.
        name: String,
        /// Arguments: text, `@FILE` for a file's bytes, or `ref:KEY` for the value of a key
        /// (read next to the executor that runs the function).
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
        /// How the call's reads relate: lww (default), repeatable-read (a key read twice in
        /// the call reads one version) or causal (reads form a causal cut).
        #[arg(long, default_value = "lww", value_parser = parse_consistency)]
        consistency: Consistency,
        /// Also store the result under this key (only if the call succeeds).
        #[arg(long, value_name = "KEY")]
        output_key: Option<String>,
    },
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    s.parse()
}

fn parse_edge(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("'{s}' is not an edge; write F:G")),
    }
}

fn read_file(path: &PathBuf) -> CliResult<Bytes> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{} is {} bytes; the limit is {MAX_FILE} bytes",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn parse_arg(text: &str) -> CliResult<Arg> {
    match text.strip_prefix('@') {
        Some(path) => Ok(Arg::Bytes(read_file(&PathBuf::from(path))?)),
        None => Ok(Arg::parse(text.as_bytes())),
    }
}

async fn ask(target: &Target, request: ExecRequest) -> CliResult<ExecResponse> {
    let client = target.connect().await?;
    let answer = api::request(&client, &request).await;
    client.close().await;
    answer.map_err(|e| match e {
        ExecError::Fn(e) => e.to_string(),
        ExecError::Kvs(e) => format!("{e} (is the cluster up, with executors?)"),
    })
}

pub async fn run_fn(args: FnArgs) -> CliResult<()> {
    match args.command {
        FnCommand::Register { name, file } => {
            let module = read_file(&file)?;
            ask(
                &args.target,
                ExecRequest::RegisterFn {
                    name: name.clone(),
                    module,
                },
            )
            .await?;
            if args.json {
                println!("{}", json!({ "registered": name }));
            } else {
                println!("registered function {name}");
            }
            Ok(())
        }
        FnCommand::Ls => {
            let ExecResponse::Listing(listing) = ask(&args.target, ExecRequest::List).await? else {
                return Err("unexpected answer from the executors".into());
            };
            let dag_json: Vec<_> = listing
                .dags
                .iter()
                .map(|d| json!({ "name": d.name, "functions": d.functions, "edges": d.edges }))
                .collect();
            if args.json {
                println!(
                    "{}",
                    json!({ "functions": listing.functions, "dags": dag_json })
                );
                return Ok(());
            }
            println!("functions:");
            for f in &listing.functions {
                println!("  {f}");
            }
            println!("dags:");
            for d in &listing.dags {
                let edges: Vec<String> = d.edges.iter().map(|(a, b)| format!("{a}:{b}")).collect();
                let lone: Vec<&String> = d
                    .functions
                    .iter()
                    .filter(|f| !d.edges.iter().any(|(a, b)| a == *f || b == *f))
                    .collect();
                let mut parts = edges;
                parts.extend(lone.iter().map(|f| f.to_string()));
                println!("  {}  {}", d.name, parts.join(" "));
            }
            Ok(())
        }
        FnCommand::Call {
            name,
            arg,
            consistency,
        } => {
            let args_ = arg
                .iter()
                .map(|a| parse_arg(a))
                .collect::<CliResult<Vec<_>>>()?;
            let call = CallRequest {
                dag: DagSpec::Inline(Dag::single(&name)),
                args: args_,
                consistency,
                output_key: None,
            };
            call_and_print(&args.target, call, args.json).await
        }
    }
}

pub async fn run_dag(args: DagArgs) -> CliResult<()> {
    match args.command {
        DagCommand::Register { name, edges, lone } => {
            if edges.is_empty() && lone.is_empty() {
                return Err("a DAG needs at least one --edge F:G or --fn F".into());
            }
            let dag = Dag::new(&name, edges, lone).map_err(|e| e.to_string())?;
            ask(&args.target, ExecRequest::RegisterDag(dag)).await?;
            if args.json {
                println!("{}", json!({ "registered": name }));
            } else {
                println!("registered dag {name}");
            }
            Ok(())
        }
        DagCommand::Call {
            name,
            args: call_args,
            consistency,
            output_key,
        } => {
            let call = CallRequest {
                dag: DagSpec::Named(name),
                args: call_args
                    .iter()
                    .map(|a| parse_arg(a))
                    .collect::<CliResult<Vec<_>>>()?,
                consistency,
                output_key: output_key.map(Bytes::from),
            };
            call_and_print(&args.target, call, args.json).await
        }
    }
}

async fn call_and_print(target: &Target, call: CallRequest, as_json: bool) -> CliResult<()> {
    let ExecResponse::Call(result) = ask(target, ExecRequest::Call(call)).await? else {
        return Err("unexpected answer from the executors".into());
    };
    print_result(&result, as_json);
    Ok(())
}

fn print_result(result: &CallResult, as_json: bool) {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    if as_json {
        let outputs: serde_json::Map<String, serde_json::Value> = result
            .outputs
            .iter()
            .map(|(f, o)| (f.clone(), json!(text(o))))
            .collect();
        let placement: Vec<_> = result
            .placement
            .iter()
            .map(|p| json!({ "function": p.function, "node": p.node, "reason": p.reason }))
            .collect();
        println!(
            "{}",
            json!({
                "result": text(&result.output()),
                "outputs": outputs,
                "placement": placement,
                "took_us": result.took_us,
            })
        );
        return;
    }
    let mut out = std::io::stdout().lock();
    if result.outputs.len() == 1 {
        let _ = out.write_all(&result.output());
        let _ = writeln!(out);
    } else {
        for (f, o) in &result.outputs {
            let _ = writeln!(out, "{f}: {}", text(o));
        }
    }
}
