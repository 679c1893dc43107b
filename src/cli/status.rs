//! `calm status`: what each node of the cluster reports about itself.

use calm_kvs::{Client, OpKind, Store};
use clap::Args;
use serde_json::json;

use super::CliResult;
use super::target::Target;

/// Show each node: reachable or not, uptime, keys, operations and latency.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `calm status`.
pub async fn run(args: StatusArgs) -> CliResult<()> {
    let (nodes, ca) = args.target.resolve()?;
    let mut docs = Vec::new();
    for addr in nodes {
        let stats = match Client::connect(addr, &ca).await {
            Ok(client) => {
                let s = client.stats().await;
                client.close().await;
                s.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match stats {
            Ok(s) => {
                let keys: u64 = s.workers.iter().map(|w| w.keys).sum();
                if args.json {
                    docs.push(json!({ "address": addr.to_string(), "state": "up", "keys": keys, "stats": s }));
                } else {
                    println!(
                        "{addr}  up  {:.0}s  {keys} keys  {} workers",
                        s.uptime_ms as f64 / 1000.0,
                        s.workers.len()
                    );
                    for op in s.ops.iter().filter(|o| o.count > 0) {
                        println!(
                            "  {:<6} {:>10} ops {:>6} errors  p50 {}us  p99 {}us",
                            match op.kind {
                                OpKind::Get => "get",
                                OpKind::Write => "write",
                                OpKind::Delete => "delete",
                            },
                            op.count,
                            op.errors,
                            op.p50_us,
                            op.p99_us
                        );
                    }
                }
            }
            Err(e) => {
                if args.json {
                    docs.push(
                        json!({ "address": addr.to_string(), "state": "unreachable", "error": e }),
                    );
                } else {
                    println!("{addr}  unreachable: {e}");
                }
            }
        }
    }
    if args.json {
        println!("{}", json!({ "nodes": docs }));
    }
    Ok(())
}
