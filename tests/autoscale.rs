//! End to end: `calm up --autoscale` with real processes adds a node under a sustained load
//! (visible in `calm status`) and gives it back when the load stops; nothing written is lost.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Up, free_base_port};

fn alive(up: &Up) -> Vec<String> {
    let status = up.status();
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "alive")
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_sustained_load_adds_a_node_and_its_end_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    // A benchmark client keeps a node's process well over 15% of the machine's cores busy
    // (a debug build on a shared 2-core machine); an idle node stays under 6%.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "slo_p99_us = 1\nbusy = 0.15\nidle = 0.06\nsustain_ms = 1500\ngrace_ms = 4000\nmax_nodes = 2\n",
    )
    .unwrap();
    let up = Up::start(
        1,
        &dir.path().join("data"),
        free_base_port(2),
        &[
            "--autoscale",
            "--autoscale-ms",
            "500",
            "--policy",
            policy.to_str().unwrap(),
            "--executors",
            "0",
        ],
    );
    let before = alive(&up);
    assert_eq!(before.len(), 1);
    for i in 0..20 {
        let out = up.calm(&["kv", "put", &format!("kept-{i}"), &format!("v{i}")]);
        assert!(out.status.success());
    }
    let mut load = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args([
            "bench",
            "run",
            "--target",
            "cluster",
            "--workload",
            "a",
            "--keys",
            "1000",
        ])
        .args(["--clients", "8", "--duration", "120s", "--cluster"])
        .arg(up.cluster_file())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a node added under load", Duration::from_secs(60), || {
        alive(&up).len() == 2
    });
    // The controller's action shows in `calm status`, with its reason.
    let status = String::from_utf8_lossy(&up.calm(&["status"]).stdout).into_owned();
    assert!(
        status.contains("autoscale: added 127.0.0.1:") && status.contains("over the"),
        "{status}"
    );
    let _ = load.kill();
    let _ = load.wait();
    wait_until(
        "the node given back after the load",
        Duration::from_secs(90),
        || alive(&up).len() == 1,
    );
    // Nothing written before was lost.
    for i in 0..20 {
        let out = up.calm(&["kv", "get", &format!("kept-{i}")]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("v{i}"),
            "kept-{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
