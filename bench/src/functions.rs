//! Function experiments (Cloudburst's): the latency of a two-function composition, and
//! what a cache next to the executor and locality-aware placement gain when functions read
//! large values by reference.
//!
//! Every cluster here runs in this process (nodes talk QUIC over loopback), with the
//! example functions of `examples/functions` (WebAssembly text).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use calm_executor::api::{self, Arg, CallRequest, DagSpec, ExecRequest, ExecResponse};
use calm_executor::scheduler::SchedulerConfig;
use calm_executor::{Consistency, Dag, ExecService, Executor, ExecutorConfig};
use calm_kvs::launch::{RunningNode, launch_local_cluster};
use calm_kvs::{ClusterClient, Store};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency of a series of calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// What was measured.
    pub what: String,
    /// Calls measured (after warm-up).
    pub calls: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Mean, microseconds.
    pub mean_us: u64,
}

impl Latencies {
    fn from(what: &str, h: &Histogram<u64>) -> Latencies {
        Latencies {
            what: what.to_string(),
            calls: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            mean_us: h.mean() as u64,
        }
    }

    /// One line of the summary table.
    pub fn line(&self) -> String {
        format!(
            "{:<62} {:>6} {:>9.3} {:>9.3} {:>9.3}",
            self.what,
            self.calls,
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.mean_us as f64 / 1000.0
        )
    }
}

/// The header of the summary table.
pub fn header() -> String {
    format!(
        "{:<62} {:>6} {:>9} {:>9} {:>9}",
        "what", "calls", "p50 ms", "p99 ms", "mean ms"
    )
}

/// What an experiment measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionsReport {
    /// The experiment.
    pub experiment: String,
    /// Each series.
    pub series: Vec<Latencies>,
    /// Ratios between series, named.
    pub ratios: Vec<(String, f64)>,
    /// Other figures (hit rates), named.
    pub notes: Vec<(String, f64)>,
    /// The machine.
    pub machine: crate::Machine,
}

struct Bed {
    nodes: Vec<RunningNode>,
    executors: Vec<Arc<Executor>>,
    client: ClusterClient,
    _dir: TempDir,
}

/// A directory removed when dropped (the bench crate has no tempfile dependency).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn bed(n: u8, config: ExecutorConfig) -> Result<Bed, String> {
    let dir = std::env::temp_dir().join(format!(
        "calm-bench-fn-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let nodes = launch_local_cluster(n, 50, |_| IpAddr::V4(Ipv4Addr::LOCALHOST), None, 0, &dir)
        .await
        .map_err(fail)?;
    let mut executors = Vec::new();
    for node in &nodes {
        let client = ClusterClient::connect(vec![node.addr], &node.credentials())
            .await
            .map_err(fail)?;
        let ex = Executor::start(node.advertised, client, config)
            .await
            .map_err(fail)?;
        node.server
            .services()
            .register(api::SERVICE, Arc::new(ExecService(ex.clone())));
        executors.push(ex);
    }
    let client = ClusterClient::connect(
        nodes.iter().map(|n| n.addr).collect(),
        &nodes[0].credentials(),
    )
    .await
    .map_err(fail)?;
    // Let every executor learn of the others.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while executors.iter().any(|e| e.known_nodes() < usize::from(n)) && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(Bed {
        nodes,
        executors,
        client,
        _dir: TempDir(dir),
    })
}

impl Bed {
    async fn register(&self, examples: &Path, name: &str) -> Result<(), String> {
        let wat = std::fs::read(examples.join(format!("{name}.wat"))).map_err(|e| {
            format!(
                "cannot read the example {name}.wat in {}: {e}",
                examples.display()
            )
        })?;
        self.executors[0]
            .register_wasm(name, Bytes::from(wat))
            .await
            .map_err(fail)
    }

    async fn call_remote(&self, node: usize, request: CallRequest) -> Result<Bytes, String> {
        let client = self
            .client
            .node(self.nodes[node].addr)
            .await
            .map_err(fail)?;
        match api::request(&client, &ExecRequest::Call(request)).await {
            Ok(ExecResponse::Call(r)) => Ok(r.output()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn stop(self) {
        for e in &self.executors {
            e.shutdown();
        }
        for n in self.nodes {
            n.stop().await;
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
    })
}

fn record(h: &mut Histogram<u64>, started: Instant) {
    let _ = h.record(
        u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1),
    );
}

fn call(dag: &str, args: Vec<Arg>) -> CallRequest {
    CallRequest {
        dag: DagSpec::Named(dag.to_string()),
        args,
        consistency: Consistency::Lww,
        output_key: None,
    }
}

/// `square(increment(x))`: native functions called in-process, then the WebAssembly
/// examples through a 3-node cluster (client → entry node → executors, over QUIC).
pub async fn composition(calls: u64, examples: &Path) -> Result<FunctionsReport, String> {
    let warm = (calls / 10).max(10);
    // In-process, native.
    let one = bed(1, ExecutorConfig::default()).await?;
    let ex = one.executors[0].clone();
    let parse = |a: &Bytes| -> Result<i64, String> {
        std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "not an integer".to_string())
    };
    ex.register_native(
        "increment",
        Arc::new(move |_, args| Ok(Bytes::from((parse(&args[0])? + 1).to_string()))),
    )
    .map_err(fail)?;
    ex.register_native(
        "square",
        Arc::new(move |_, args| {
            let x = parse(&args[0])?;
            Ok(Bytes::from((x * x).to_string()))
        }),
    )
    .map_err(fail)?;
    let dag = Dag::new(
        "sq-inc",
        vec![("increment".into(), "square".into())],
        vec![],
    )
    .map_err(fail)?;
    ex.register_dag(dag.clone()).await.map_err(fail)?;
    let mut native = histogram();
    for i in 0..warm + calls {
        let started = Instant::now();
        let r = ex
            .call(call("sq-inc", vec![Arg::Bytes(Bytes::from(i.to_string()))]))
            .await
            .map_err(fail)?;
        if i >= warm {
            record(&mut native, started);
        }
        let want = ((i + 1) * (i + 1)).to_string();
        if r.output() != want.as_bytes() {
            return Err(format!("square(increment({i})) gave {:?}", r.output()));
        }
    }
    one.stop().await;
    // A 3-node cluster, WebAssembly.
    let three = bed(3, ExecutorConfig::default()).await?;
    three.register(examples, "increment").await?;
    three.register(examples, "square").await?;
    three.executors[0].register_dag(dag).await.map_err(fail)?;
    let mut wasm = histogram();
    for i in 0..warm + calls {
        let started = Instant::now();
        let out = three
            .call_remote(
                0,
                call("sq-inc", vec![Arg::Bytes(Bytes::from(i.to_string()))]),
            )
            .await?;
        if i >= warm {
            record(&mut wasm, started);
        }
        if out != ((i + 1) * (i + 1)).to_string().as_bytes() {
            return Err(format!("square(increment({i})) gave {out:?}"));
        }
    }
    // The network part alone: one read through the same client and node.
    three.client.put("k", "v").await.map_err(fail)?;
    let node0 = three.client.node(three.nodes[0].addr).await.map_err(fail)?;
    let mut trip = histogram();
    for i in 0..warm + calls {
        let started = Instant::now();
        node0.get("k").await.map_err(fail)?;
        if i >= warm {
            record(&mut trip, started);
        }
    }
    three.stop().await;
    let native = Latencies::from("native, in-process (Executor::call)", &native);
    let wasm = Latencies::from("WebAssembly, 3-node cluster, client over QUIC", &wasm);
    let trip = Latencies::from("baseline: one kv get, same client and node", &trip);
    Ok(FunctionsReport {
        experiment: "composition".into(),
        ratios: vec![
            (
                "wasm cluster p50 / native in-process p50".into(),
                wasm.p50_us as f64 / native.p50_us.max(1) as f64,
            ),
            (
                "wasm cluster p50 / kv get p50".into(),
                wasm.p50_us as f64 / trip.p50_us.max(1) as f64,
            ),
        ],
        series: vec![native, wasm, trip],
        notes: Vec::new(),
        machine: crate::Machine::here(),
    })
}

fn array(seed: u64, bytes: usize) -> Bytes {
    let words = bytes / 8;
    let mut out = Vec::with_capacity(words * 8);
    for i in 0..words as u64 {
        out.extend_from_slice(&(i ^ seed).to_le_bytes());
    }
    Bytes::from(out)
}

/// Summing arrays passed by reference (`array_bytes` each): with the cache cold (cleared
/// before every call) and hot, on one node; then six arrays over a 3-node cluster whose
/// caches hold two each, placed with and without locality.
pub async fn locality(
    calls: u64,
    array_bytes: usize,
    examples: &Path,
) -> Result<FunctionsReport, String> {
    let sum_dag = Dag::new("total", vec![], vec!["sum".into()]).map_err(fail)?;
    // Hot and cold, one node.
    let one = bed(1, ExecutorConfig::default()).await?;
    one.register(examples, "sum").await?;
    one.executors[0]
        .register_dag(sum_dag.clone())
        .await
        .map_err(fail)?;
    one.client
        .put("arr-0", array(0, array_bytes))
        .await
        .map_err(fail)?;
    let refs = || vec![Arg::Ref(Bytes::from_static(b"arr-0"))];
    let (mut cold, mut hot) = (histogram(), histogram());
    for i in 0..calls + 2 {
        one.executors[0].cache().clear();
        let started = Instant::now();
        one.call_remote(0, call("total", refs())).await?;
        if i >= 2 {
            record(&mut cold, started);
        }
    }
    for i in 0..calls + 2 {
        let started = Instant::now();
        one.call_remote(0, call("total", refs())).await?;
        if i >= 2 {
            record(&mut hot, started);
        }
    }
    one.stop().await;
    // Locality on and off, three nodes, caches too small for every array.
    let arrays = 6u64;
    let mut series = vec![
        Latencies::from(
            &format!(
                "1 node, cache cold, 1 array of {} MB",
                array_bytes / 1_000_000
            ),
            &cold,
        ),
        Latencies::from(
            &format!(
                "1 node, cache hot, 1 array of {} MB",
                array_bytes / 1_000_000
            ),
            &hot,
        ),
    ];
    let mut notes = Vec::new();
    for locality in [true, false] {
        let config = ExecutorConfig {
            scheduler: SchedulerConfig {
                explore: 0.0,
                locality,
                ..SchedulerConfig::default()
            },
            cache: calm_cache::CacheConfig {
                capacity_bytes: array_bytes * 2 + array_bytes / 2,
                ..calm_cache::CacheConfig::default()
            },
            index_period_ms: 50,
            seed: Some(1),
            ..ExecutorConfig::default()
        };
        let three = bed(3, config).await?;
        three.register(examples, "sum").await?;
        three.executors[0]
            .register_dag(sum_dag.clone())
            .await
            .map_err(fail)?;
        for a in 0..arrays {
            three
                .client
                .put(format!("arr-{a}"), array(a, array_bytes))
                .await
                .map_err(fail)?;
        }
        let mut h = histogram();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
        let misses_before: u64 = three
            .executors
            .iter()
            .map(|e| e.cache().stats().misses)
            .sum();
        let warm = arrays * 2;
        for i in 0..warm + calls {
            let a = rand::RngExt::random_range(&mut rng, 0..arrays);
            let entry = (i % 3) as usize;
            let started = Instant::now();
            three
                .call_remote(
                    entry,
                    call("total", vec![Arg::Ref(Bytes::from(format!("arr-{a}")))]),
                )
                .await?;
            if i >= warm {
                record(&mut h, started);
            }
            // Give the index a chance to follow the caches, as calls arriving over time would.
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
        let misses: u64 = three
            .executors
            .iter()
            .map(|e| e.cache().stats().misses)
            .sum::<u64>()
            - misses_before;
        let name = if locality {
            "with locality"
        } else {
            "without locality"
        };
        notes.push((
            format!("calls that fetched their array from its owner, {name}"),
            misses as f64 / (warm + calls) as f64,
        ));
        series.push(Latencies::from(
            &format!("3 nodes, {arrays} arrays, caches hold 2; {name}"),
            &h,
        ));
        three.stop().await;
    }
    let ratio = |a: usize, b: usize| series[a].p50_us as f64 / series[b].p50_us.max(1) as f64;
    let ratios = vec![
        ("cold p50 / hot p50".to_string(), ratio(0, 1)),
        (
            "without locality p50 / with locality p50".to_string(),
            ratio(3, 2),
        ),
    ];
    Ok(FunctionsReport {
        experiment: "locality".into(),
        series,
        ratios,
        notes,
        machine: crate::Machine::here(),
    })
}

/// How far behind its owner a cached copy runs: a client writes a key the cache holds
/// (at another node of a 3-node cluster), and the time until the cache serves the new value
/// is measured, `writes` times. Nothing is read from the owners meanwhile.
pub async fn freshness(writes: u64) -> Result<FunctionsReport, String> {
    let three = bed(3, ExecutorConfig::default()).await?;
    let key = Bytes::from_static(b"fresh");
    three.client.put(key.clone(), "0").await.map_err(fail)?;
    let mut h = histogram();
    let mut notes = Vec::new();
    for (name, ex) in [("entry", &three.executors[0]), ("far", &three.executors[2])] {
        ex.cache().get(&key).await.map_err(fail)?;
        let misses = ex.cache().stats().misses;
        for i in 1..=writes {
            let value = Bytes::from(format!("{name}-{i}"));
            let started = Instant::now();
            three
                .client
                .put(key.clone(), value.clone())
                .await
                .map_err(fail)?;
            loop {
                let seen = ex.cache().get(&key).await.map_err(fail)?;
                if matches!(&seen, Some(calm_kvs::ReadValue::Lww { value: v, .. }) if *v == value) {
                    break;
                }
                if started.elapsed() > std::time::Duration::from_secs(10) {
                    return Err("a write did not reach the cache within 10 s".into());
                }
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
            record(&mut h, started);
        }
        notes.push((
            format!("reads fetched from owners while waiting ({name} cache)"),
            (ex.cache().stats().misses - misses) as f64,
        ));
    }
    three.stop().await;
    Ok(FunctionsReport {
        experiment: "freshness".into(),
        series: vec![Latencies::from(
            "write sent -> new value served by a subscribed cache",
            &h,
        )],
        ratios: Vec::new(),
        notes,
        machine: crate::Machine::here(),
    })
}

/// What the Retwis experiment found in one consistency mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetwisMode {
    /// The mode.
    pub consistency: String,
    /// Timelines read.
    pub timelines: u64,
    /// Timelines that showed a reply without the tweet it answers.
    pub anomalies: u64,
    /// Latency of the timeline calls.
    pub latency: Latencies,
}

/// The Retwis experiment's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetwisReport {
    /// Each mode's figures.
    pub modes: Vec<RetwisMode>,
    /// The machine.
    pub machine: crate::Machine,
}

/// Retwis (Cloudburst's anomaly experiment), on a 3-node cluster with replication 2: for
/// each of `rounds` tweets, a reader's timeline function first looks for the reply (its
/// node's cache now holds "not found" for the reply and the tweet), a user posts the tweet
/// and another user, having read it, posts a reply; the timeline function then runs again
/// at a random node, reading the reply and then its tweet. An anomaly is a reply shown
/// without its tweet. Under `lww` the cache can serve a reply fetched just now beside a
/// tweet it still holds as "not found"; under `causal` the reply's dependency makes the read
/// of the tweet fetch it.
pub async fn retwis(rounds: u64) -> Result<RetwisReport, String> {
    use calm_kvs::value::{ReadValue, Write};
    let three = bed(3, ExecutorConfig::default()).await?;
    for ex in &three.executors {
        ex.register_native(
            "timeline",
            Arc::new(|host, args| {
                let (reply, tweet) = (&args[0], &args[1]);
                // The reply first, then the tweets shown with it.
                let reply_text = host.get(reply).map_err(|e| e.to_string())?;
                let tweet_text = host.get(tweet).map_err(|e| e.to_string())?;
                Ok(match (reply_text, tweet_text) {
                    (None, _) => Bytes::from_static(b"none"),
                    (Some(_), Some(_)) => Bytes::from_static(b"ok"),
                    (Some(r), None) => {
                        Bytes::from(format!("anomaly: {}", String::from_utf8_lossy(&r)))
                    }
                })
            }),
        )
        .map_err(fail)?;
    }
    let dag = Dag::new("timeline", vec![], vec!["timeline".into()]).map_err(fail)?;
    three.executors[0].register_dag(dag).await.map_err(fail)?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let mut modes = Vec::new();
    for consistency in [Consistency::Lww, Consistency::Causal] {
        let mut h = histogram();
        let mut anomalies = 0;
        for i in 0..rounds {
            let tweet = Bytes::from(format!("{}:tweet:{i}", consistency.name()));
            let reply = Bytes::from(format!("{}:reply:{i}", consistency.name()));
            let reader = rand::RngExt::random_range(&mut rng, 0..3usize);
            let timeline = |node: usize| {
                let request = CallRequest {
                    dag: DagSpec::Named("timeline".into()),
                    args: vec![Arg::Bytes(reply.clone()), Arg::Bytes(tweet.clone())],
                    consistency,
                    output_key: None,
                };
                three.call_remote(node, request)
            };
            timeline(reader).await?;
            let text = Bytes::from(format!("tweet {i}"));
            let reply_text = Bytes::from(format!("re: tweet {i}"));
            match consistency {
                Consistency::Causal => {
                    three
                        .client
                        .write(
                            tweet.clone(),
                            Write::MultiCausal {
                                value: text,
                                deps: vec![],
                            },
                        )
                        .await
                        .map_err(fail)?;
                    let clock = match three
                        .client
                        .get_with_meta(tweet.clone())
                        .await
                        .map_err(fail)?
                    {
                        Some(ReadValue::MultiCausal { clock: Some(c), .. }) => c,
                        other => return Err(format!("the tweet reads back as {other:?}")),
                    };
                    three
                        .client
                        .write(
                            reply.clone(),
                            Write::MultiCausal {
                                value: reply_text,
                                deps: vec![(tweet.clone(), clock)],
                            },
                        )
                        .await
                        .map_err(fail)?;
                }
                _ => {
                    three.client.put(tweet.clone(), text).await.map_err(fail)?;
                    three.client.get(tweet.clone()).await.map_err(fail)?;
                    three
                        .client
                        .put(reply.clone(), reply_text)
                        .await
                        .map_err(fail)?;
                }
            }
            let started = Instant::now();
            let out = timeline(reader).await?;
            record(&mut h, started);
            anomalies += u64::from(out.starts_with(b"anomaly"));
        }
        modes.push(RetwisMode {
            consistency: consistency.name().into(),
            timelines: rounds,
            anomalies,
            latency: Latencies::from(&format!("timeline, {}", consistency.name()), &h),
        });
    }
    three.stop().await;
    Ok(RetwisReport {
        modes,
        machine: crate::Machine::here(),
    })
}
