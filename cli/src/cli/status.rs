//! `calm status`: the cluster's membership and what each node reports about itself.

use calm_executor::api::{self, ExecRequest, ExecResponse, ExecStats};
use calm_kvs::{Client, MemberStatus, OpKind, StatsSnapshot, Store};
use clap::Args;
use serde_json::json;

use super::CliResult;
use super::target::Target;

/// Show the members (address, state, incarnation, share of the keys) and each node's keys,
/// operations and latency.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

async fn stats_of(
    addr: std::net::SocketAddr,
    ca: &calm_kvs::tls::Credentials,
) -> Result<(StatsSnapshot, Option<ExecStats>), String> {
    let client = Client::connect(addr, ca).await.map_err(|e| e.to_string())?;
    let s = client.stats().await.map_err(|e| e.to_string());
    // A node without executors answers no service: it has no function figures.
    let exec = match api::request(&client, &ExecRequest::Stats).await {
        Ok(ExecResponse::Stats(e)) => Some(e),
        _ => None,
    };
    client.close().await;
    Ok((s?, exec))
}

fn print_exec(e: &ExecStats) {
    let reads = (e.cache_hits + e.cache_misses).max(1);
    println!(
        "  functions: {} executors, {} calls ({} failed), {} functions run, {} modules compiled",
        e.executors, e.calls, e.failed, e.functions_run, e.modules_compiled
    );
    println!(
        "  cache: {} KiB, {:.0}% hits ({} hits, {} misses), {} evictions, {} pushed updates",
        e.cache_bytes >> 10,
        100.0 * e.cache_hits as f64 / reads as f64,
        e.cache_hits,
        e.cache_misses,
        e.cache_evictions,
        e.cache_pushes
    );
    for p in e.recent_placements.iter().rev().take(4) {
        println!("  placed {} on {}: {}", p.function, p.node, p.reason);
    }
}

/// Runs `calm status`.
pub async fn run(args: StatusArgs) -> CliResult<()> {
    let (nodes, ca) = args.target.resolve()?;
    // The membership as the first reachable node sees it.
    let mut members: Vec<MemberStatus> = Vec::new();
    let mut routing = None;
    let mut asked = None;
    for addr in &nodes {
        if let Ok(client) = Client::connect(*addr, &ca).await {
            if let Ok(m) = client.members().await {
                members = m;
                asked = Some(*addr);
            }
            routing = client.routing().await.ok();
            client.close().await;
            break;
        }
    }
    let overrides: Vec<(String, calm_kvs::cluster::Factors)> = routing
        .as_ref()
        .map(|r| {
            r.overrides
                .iter()
                .map(|(k, f)| (String::from_utf8_lossy(k).into_owned(), *f))
                .collect()
        })
        .unwrap_or_default();
    let default_replication = routing.as_ref().map(|r| r.replication);
    // The autoscaling controller's latest actions (nodes added and removed), if any.
    let mut scaling: Vec<String> = Vec::new();
    if let Some(addr) = asked
        && let Ok(c) = Client::connect(addr, &ca).await
    {
        if let Ok(Some(calm_kvs::ReadValue::Set { members })) =
            c.get(super::autoscaler::DECISIONS_KEY).await
        {
            scaling = members
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
        }
        c.close().await;
    }
    let recent_scaling: Vec<String> = scaling.iter().rev().take(5).rev().cloned().collect();
    let Some(asked) = asked else {
        return Err(format!(
            "no node answered ({}); is the cluster running?",
            nodes
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    // Every address known: the members, plus listed nodes a lone node does not report.
    let mut addrs: Vec<std::net::SocketAddr> = members
        .iter()
        .filter_map(|m| m.member.addr.parse().ok())
        .collect();
    for a in &nodes {
        if !addrs.contains(a) {
            addrs.push(*a);
        }
    }
    let mut docs = Vec::new();
    if !args.json {
        println!("membership as seen by {asked}:");
        println!(
            "  {:<22} {:<8} {:>15} {:>6}",
            "node", "state", "incarnation", "keys%"
        );
        for m in &members {
            println!(
                "  {:<22} {:<8} {:>15} {:>5.1}%",
                m.member.addr,
                m.member.status.name(),
                m.member.incarnation,
                f64::from(m.ring_share_permille) / 10.0
            );
        }
        if let Some(rf) = default_replication {
            println!("replication: {rf} nodes per key by default");
        }
        let show = |f: Option<u8>| f.map_or("default".to_string(), |n| n.to_string());
        for (key, f) in &overrides {
            println!(
                "  {key}: {} nodes, {} workers each",
                show(f.global),
                show(f.local)
            );
        }
        for d in &recent_scaling {
            let action = d.split_once(' ').map_or(d.as_str(), |(_, a)| a);
            println!("autoscale: {action}");
        }
        println!();
    }
    for addr in addrs {
        let member = members.iter().find(|m| m.member.addr == addr.to_string());
        match stats_of(addr, &ca).await {
            Ok((s, exec)) => {
                let keys: u64 = s.workers.iter().map(|w| w.keys).sum();
                if args.json {
                    docs.push(json!({
                        "address": addr.to_string(),
                        "state": member.map_or("up", |m| m.member.status.name()),
                        "incarnation": member.map(|m| m.member.incarnation),
                        "ring_share_permille": member.map(|m| m.ring_share_permille),
                        "reachable": true,
                        "pid": s.pid,
                        "keys": keys,
                        "stats": s,
                        "functions": exec.as_ref().map(|e| json!({
                            "executors": e.executors,
                            "calls": e.calls,
                            "failed": e.failed,
                            "functions_run": e.functions_run,
                            "modules_compiled": e.modules_compiled,
                            "cache": {
                                "hits": e.cache_hits,
                                "misses": e.cache_misses,
                                "evictions": e.cache_evictions,
                                "pushes": e.cache_pushes,
                                "bytes": e.cache_bytes,
                            },
                            "recent_placements": e.recent_placements.iter().map(|p| json!({
                                "function": p.function, "node": p.node, "reason": p.reason,
                            })).collect::<Vec<_>>(),
                        })),
                    }));
                } else {
                    println!(
                        "{addr}  pid {}  up {:.0}s  {keys} keys  {} workers",
                        s.pid,
                        s.uptime_ms as f64 / 1000.0,
                        s.workers.len()
                    );
                    let st = |f: fn(&calm_kvs::storage::TierStats) -> u64| -> u64 {
                        s.workers.iter().map(|w| f(&w.storage)).sum()
                    };
                    let (disk_keys, log) = (st(|t| t.disk_keys), st(|t| t.log_bytes));
                    if disk_keys > 0 || log > 0 {
                        println!(
                            "  storage: {} keys in memory ({} KiB), {disk_keys} only on disk, log {} KiB, {} loaded, {} moved out, {} checkpoints, {} disk errors",
                            st(|t| t.memory_keys),
                            st(|t| t.memory_bytes) >> 10,
                            log >> 10,
                            st(|t| t.promotions),
                            st(|t| t.demotions),
                            st(|t| t.checkpoints),
                            st(|t| t.disk_errors)
                        );
                    }
                    let renewed: u64 = s.workers.iter().map(|w| w.replica_changes).sum();
                    if renewed > 0 {
                        println!(
                            "  new replica ids after handing keys off: {renewed} (so later writes to those keys are never taken for old ones)"
                        );
                    }
                    let busy: u64 = s.workers.iter().map(|w| w.busy_us).sum();
                    let capacity = (s.uptime_ms * 1000).max(1) * s.workers.len().max(1) as u64;
                    let mut hot: Vec<&calm_kvs::hot_keys::HotKey> =
                        s.workers.iter().flat_map(|w| &w.hot_keys).collect();
                    hot.sort_by_key(|h| std::cmp::Reverse(h.count));
                    let hot: Vec<String> = hot
                        .iter()
                        .take(5)
                        .map(|h| format!("{} (~{})", String::from_utf8_lossy(&h.key), h.count))
                        .collect();
                    println!(
                        "  workers busy {:.1}% of the time; hottest keys: {}",
                        100.0 * busy as f64 / capacity as f64,
                        if hot.is_empty() {
                            "none yet".to_string()
                        } else {
                            hot.join(", ")
                        }
                    );
                    if let Some((_, _, sample)) = s
                        .cluster_load
                        .entries()
                        .find(|(node, _, _)| **node == addr.to_string())
                    {
                        println!(
                            "  last load sample: workers {:.1}% busy, process {:.1}% of its cores, {} requests, p99 {}us",
                            sample.occupancy * 100.0,
                            sample.cpu * 100.0,
                            sample.ops,
                            sample.p99_us
                        );
                    }
                    for q in &s.quotas {
                        let of = |n: u64, max: Option<u64>| match max {
                            Some(max) => format!("{n} of {max}"),
                            None => n.to_string(),
                        };
                        println!(
                            "  quota {:?}: {} keys, {} bytes",
                            q.prefix,
                            of(q.keys, q.max_keys),
                            of(q.bytes, q.max_bytes)
                        );
                    }
                    for d in s.decisions.iter().rev().take(5) {
                        println!("  policy: {d}");
                    }
                    if let Some(e) = &exec {
                        print_exec(e);
                    }
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
                    docs.push(json!({
                        "address": addr.to_string(),
                        "state": member.map_or("unreachable", |m| m.member.status.name()),
                        "incarnation": member.map(|m| m.member.incarnation),
                        "reachable": false,
                        "error": e,
                    }));
                } else {
                    println!("{addr}  unreachable: {e}");
                }
            }
        }
    }
    if args.json {
        let overrides: serde_json::Map<String, serde_json::Value> = overrides
            .into_iter()
            .map(|(k, f)| (k, json!({ "nodes": f.global, "workers": f.local })))
            .collect();
        println!(
            "{}",
            json!({
                "asked": asked.to_string(),
                "replication": default_replication,
                "replication_overrides": overrides,
                "autoscale_actions": recent_scaling,
                "nodes": docs,
            })
        );
    }
    Ok(())
}
