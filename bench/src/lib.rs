//! calm's benchmark harness: YCSB-style workloads run against calm (embedded, or a cluster)
//! and against Redis through one [`Target`] trait, closed or open loop, with latency in HDR
//! histograms and a JSON report that holds every figure, the configuration and the machine.
//!
//! `calm bench run` is the command line over this crate; [`functions`] holds the function
//! experiments (`calm bench functions`).

pub mod autoscale;
pub mod consistency;
pub mod contention;
pub mod failures;
pub mod functions;
pub mod plot;
pub mod runner;
pub mod target;
pub mod workload;

use serde::{Deserialize, Serialize};

pub use runner::{Latency, Machine, Measured, RunConfig, run};
pub use target::{CalmTarget, RedisTarget, Target};
pub use workload::{BenchOp, Mix, ValueKind, Workload};

/// A run's report: what was asked, where, and what was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The target, as given (`embedded`, `cluster`, `redis://HOST:PORT`).
    pub target: String,
    /// The workload.
    pub workload: Workload,
    /// How it was driven.
    pub run: RunConfig,
    /// The machine.
    pub machine: Machine,
    /// The figures.
    pub measured: Measured,
}

impl Report {
    /// The summary table, as printed at the end of a run.
    pub fn summary(&self) -> String {
        let m = &self.measured;
        let l = &m.latency_us;
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        format!(
            "{:<20} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n{:<20} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "target",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            self.target,
            m.ops_per_sec,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            m.errors
        )
    }
}
