//! End to end: `calm bench run` against the embedded store and against a real redis-server
//! (installed by `scripts/test` when missing), with the JSON report and the plot read back;
//! `calm bench consistency staleness` against `calm up`.

mod common;

use std::process::{Command, Stdio};

fn bench(args: &[&str], out: &std::path::Path) -> serde_json::Value {
    let run = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args([
            "bench",
            "run",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--keys",
            "2000",
        ])
        .args(["--clients", "4", "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("run calm bench");
    assert!(
        run.status.success(),
        "calm bench {args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(
        summary.contains("ops/s") && summary.contains("p99"),
        "{summary}"
    );
    serde_json::from_slice(&std::fs::read(out).unwrap()).expect("the report is JSON")
}

fn check(report: &serde_json::Value, target: &str) {
    assert_eq!(report["target"], target);
    let m = &report["measured"];
    assert!(m["ops"].as_u64().unwrap() > 100, "{m}");
    assert_eq!(m["errors"].as_u64(), Some(0), "{m}");
    assert!(m["ops_per_sec"].as_f64().unwrap() > 100.0, "{m}");
    let l = &m["latency_us"];
    let p50 = l["p50"].as_u64().unwrap();
    let p99 = l["p99"].as_u64().unwrap();
    assert!(
        p50 >= 1 && p50 <= p99 && p99 <= l["max"].as_u64().unwrap(),
        "{l}"
    );
    assert!(!m["per_second"].as_array().unwrap().is_empty());
    assert_eq!(report["workload"]["mix"], "a");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
}

#[test]
fn bench_run_against_the_embedded_store_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let plot = dir.path().join("run.svg");
    let report = bench(
        &[
            "--target",
            "embedded",
            "--workload",
            "a",
            "--plot",
            plot.to_str().unwrap(),
        ],
        &out,
    );
    check(&report, "embedded");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("throughput"),
        "{svg:.200}"
    );
}

#[test]
fn bench_run_against_redis_server() {
    let dir = tempfile::tempdir().unwrap();
    let redis = common::RedisServer::start();
    let port = redis.port;
    let url = format!("redis://127.0.0.1:{port}");
    let out = dir.path().join("r.json");
    let report = bench(&["--target", &url, "--workload", "a"], &out);
    drop(redis);
    check(&report, &url);
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, says) in [
        (
            &["--target", "embedded", "--workload", "e"][..],
            "range scans",
        ),
        (&["--target", "mongodb://x"][..], "unknown target"),
        (
            &["--target", "embedded", "--duration", "soon"][..],
            "not a duration",
        ),
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_calm"))
            .args(["bench", "run"])
            .args(args)
            .output()
            .unwrap();
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_runs_against_calm_up() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port(3);
    let up = common::Up::start(
        3,
        &dir.path().join("data"),
        base,
        &["--threads", "1", "--gossip-ms", "20"],
    );
    let out = dir.path().join("s.json");
    let plot = dir.path().join("s.svg");
    let run = up.calm(&[
        "bench",
        "consistency",
        "staleness",
        "--trials",
        "20",
        "--gossip-ms",
        "20",
        "--out",
        out.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(printed.contains("t-visibility over 20 writes"), "{printed}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let s = &report["staleness"];
    assert_eq!(s["never_visible"].as_u64(), Some(0), "{s}");
    assert_eq!(s["samples_us"].as_array().unwrap().len(), 20);
    // Every write was seen at the other replica some time after its acknowledgement, and
    // the percentiles are of those samples.
    let samples: Vec<u64> = s["samples_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(samples.iter().all(|&us| us > 0), "{s}");
    let pct = |p: &str| s["visibility_us"][p].as_u64().unwrap();
    assert!(pct("p50") <= pct("p90") && pct("p90") <= pct("p99"), "{s}");
    assert!(pct("max") >= *samples.iter().max().unwrap() / 2, "{s}");
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
}

#[test]
fn contention_replicates_the_hot_key_and_spreads_its_reads() {
    // Three `calm server` processes of half a core each; Zipf 4 sends nine reads in ten to
    // one key. Without the policy its node serves them all; with it, the key gets a replica
    // on every node and the reads spread.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.json");
    let run = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(["bench", "consistency", "contention", "--zipf", "4"])
        .args(["--nodes", "3", "--node-cpu", "0.5", "--keys", "1000"])
        .args(["--clients", "16", "--warmup", "5s", "--duration", "2s"])
        .args(["--rounds", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let points = report["contention"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    let (off, on) = (&points[0]["off"], &points[0]["on"]);
    assert_eq!(points[0]["zipf"].as_f64(), Some(4.0));
    for s in [off, on] {
        assert!(s["ops_per_sec"].as_f64().unwrap() > 100.0, "{s}");
        assert_eq!(s["errors"].as_u64(), Some(0), "{s}");
        assert_eq!(s["served"].as_array().unwrap().len(), 3, "{s}");
    }
    assert_eq!(off["replicated"], serde_json::json!([]), "{off}");
    assert!(
        on["replicated"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["user000000000000", 3])),
        "the hottest key is not on every node: {on}"
    );
    let (busiest_off, busiest_on) = (
        off["busiest_share"].as_f64().unwrap(),
        on["busiest_share"].as_f64().unwrap(),
    );
    assert!(busiest_off > 0.85, "{off}");
    assert!(
        busiest_on < 0.6,
        "reads of the hot key did not spread: {busiest_off} then {busiest_on}"
    );
}

#[test]
fn partition_heals_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.json");
    let run = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args([
            "bench",
            "consistency",
            "partition",
            "--gossip-ms",
            "50",
            "--keys",
            "20",
        ])
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let r = &report["partition"][0];
    assert_eq!(r["lost"].as_u64(), Some(0), "{r}");
    assert_eq!(r["acknowledged"].as_u64(), Some(40), "{r}");
    assert!(r["converged_after_ms"].as_u64().is_some(), "{r}");
}

/// Runs `calm bench ARGS --out FILE` and reads the report back.
fn report_of(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = dir.join(format!("{}.json", args[1]));
    let run = Command::new(env!("CARGO_BIN_EXE_calm"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run calm bench");
    assert!(
        run.status.success(),
        "calm bench {args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("the report is JSON")
}

#[test]
fn function_experiments_report_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/functions");
    let series = |r: &serde_json::Value| -> Vec<(String, u64)> {
        r["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["what"].as_str().unwrap().to_string(),
                    s["p50_us"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let r = report_of(
        &[
            "functions",
            "composition",
            "--calls",
            "20",
            "--examples",
            examples,
        ],
        dir.path(),
    );
    let s = series(&r);
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(s.iter().all(|(_, p50)| *p50 > 0), "{s:?}");
    let r = report_of(
        &[
            "functions",
            "locality",
            "--calls",
            "4",
            "--array-bytes",
            "80000",
            "--examples",
            examples,
        ],
        dir.path(),
    );
    assert_eq!(series(&r).len(), 4);
    assert_eq!(r["ratios"].as_array().unwrap().len(), 2);
    let r = report_of(&["functions", "freshness", "--calls", "10"], dir.path());
    assert_eq!(r["series"][0]["calls"], 20);
}

#[test]
fn retwis_shows_no_anomaly_under_causal() {
    let dir = tempfile::tempdir().unwrap();
    let r = report_of(&["consistency", "retwis", "--rounds", "40"], dir.path());
    let modes = r["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    assert_eq!(modes[0]["consistency"], "lww");
    assert_eq!(modes[1]["consistency"], "causal");
    assert_eq!(modes[1]["timelines"], 40);
    assert_eq!(
        modes[1]["anomalies"], 0,
        "causal timelines never show a reply alone"
    );
}

#[test]
fn the_autoscaling_timeline_reports_every_second_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("timeline.svg");
    let r = report_of(
        &[
            "autoscale",
            "--duration",
            "10s",
            "--period-ms",
            "500",
            "--plot",
            plot.to_str().unwrap(),
        ],
        dir.path(),
    );
    let seconds = r["seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 10);
    assert!(seconds.iter().all(|s| s["nodes"].as_u64().unwrap() >= 1));
    assert!(
        seconds.iter().any(|s| s["ops"].as_u64().unwrap() > 0),
        "the load ran"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("replicas"));
}
