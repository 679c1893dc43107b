//! Driving a target: closed loop (C clients, each sending when the last answer came) or
//! open loop (a fixed rate, latency measured from each operation's intended send time, so a
//! stalled server is charged for the operations it delayed: no coordinated omission).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::target::Target;
use crate::workload::Workload;

/// How a run drives its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before measuring starts (not counted).
    pub warmup: Duration,
    /// Open loop at this many operations per second in total; `None`: closed loop.
    pub rate: Option<f64>,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Highest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram (µs).
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Operations completed in the measured time.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Latency of every operation, µs.
    pub latency_us: Latency,
    /// Operations completed in each second of the measured time.
    pub per_second: Vec<u64>,
    /// p99 latency in each second, µs.
    pub p99_per_second_us: Vec<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

struct ClientResult {
    total: Histogram<u64>,
    per_second: Vec<Histogram<u64>>,
    errors: u64,
}

/// Runs `workload` against `make(i)` for client `i`; see the [module docs](self).
/// `progress` is called about every 100 ms with the fraction of the run done.
pub async fn run<T, F, Fut>(
    workload: &Workload,
    config: &RunConfig,
    make: F,
    mut progress: impl FnMut(f64),
) -> Result<Measured, String>
where
    T: Target,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    if config.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let seconds = config.duration.as_secs_f64().ceil().max(1.0) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let interval = config
        .rate
        .map(|r| Duration::from_secs_f64(config.clients as f64 / r.max(1e-9)));
    let mut tasks = Vec::new();
    for c in 0..config.clients {
        let target = make(c).await?;
        let mut trace = workload.trace(c as u64);
        tasks.push(tokio::spawn(async move {
            let mut out = ClientResult {
                total: histogram(),
                per_second: (0..seconds).map(|_| histogram()).collect(),
                errors: 0,
            };
            // Open-loop clients start staggered across one interval.
            let mut intended =
                start + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / 8.0));
            loop {
                let sent = match interval {
                    Some(i) => {
                        tokio::time::sleep_until(intended.into()).await;
                        let at = intended;
                        intended += i;
                        at
                    }
                    None => Instant::now(),
                };
                if sent >= end {
                    break;
                }
                let op = trace.next().expect("traces are endless");
                let ok = target.run(op).await.is_ok();
                let done = Instant::now();
                if sent < measure_from || done > end {
                    continue;
                }
                out.errors += u64::from(!ok);
                let us = done.duration_since(sent).as_micros().max(1) as u64;
                out.total.saturating_record(us);
                let second =
                    (done.duration_since(measure_from).as_secs() as usize).min(seconds - 1);
                out.per_second[second].saturating_record(us);
            }
            out
        }));
    }
    let total_time = end.duration_since(Instant::now());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = end.saturating_duration_since(Instant::now());
        progress(1.0 - left.as_secs_f64() / total_time.as_secs_f64().max(1e-9));
    }
    let mut total = histogram();
    let mut per_second: Vec<Histogram<u64>> = (0..seconds).map(|_| histogram()).collect();
    let mut errors = 0;
    for t in tasks {
        let r = t.await.map_err(|e| format!("a client failed: {e}"))?;
        total.add(&r.total).map_err(|e| e.to_string())?;
        for (s, h) in per_second.iter_mut().zip(&r.per_second) {
            s.add(h).map_err(|e| e.to_string())?;
        }
        errors += r.errors;
    }
    let ops = total.len();
    Ok(Measured {
        ops,
        errors,
        ops_per_sec: ops as f64 / config.duration.as_secs_f64(),
        latency_us: Latency::of(&total),
        per_second: per_second.iter().map(|h| h.len()).collect(),
        p99_per_second_us: per_second
            .iter()
            .map(|h| h.value_at_quantile(0.99))
            .collect(),
    })
}

/// The machine a run was made on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Cores available.
    pub cores: usize,
    /// The CPU model.
    pub cpu: String,
    /// The operating system.
    pub os: String,
}

impl Machine {
    /// This machine.
    pub fn here() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            os: std::env::consts::OS.to_string(),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::workload::{BenchOp, Mix, ValueKind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A target that answers at once, except that the first operation after 300 ms of the
    /// run stalls for 500 ms.
    #[derive(Clone)]
    struct Stalling {
        started: Instant,
        stalled: Arc<AtomicBool>,
    }

    impl Target for Stalling {
        async fn run(&self, _op: BenchOp) -> Result<(), String> {
            if self.started.elapsed() > Duration::from_millis(300)
                && !self.stalled.swap(true, Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(())
        }

        async fn load(&self, _n: u64) -> Result<(), String> {
            Ok(())
        }
    }

    fn workload() -> Workload {
        Workload {
            mix: Mix::A,
            keys: 100,
            value_size: 10,
            zipf: 0.0,
            kind: ValueKind::Lww,
            seed: 1,
            read_fraction: None,
        }
    }

    async fn measure(rate: Option<f64>) -> Measured {
        let target = Stalling {
            started: Instant::now(),
            stalled: Arc::default(),
        };
        let config = RunConfig {
            clients: 1,
            duration: Duration::from_millis(1500),
            warmup: Duration::ZERO,
            rate,
        };
        run(
            &workload(),
            &config,
            |_| {
                let t = target.clone();
                async move { Ok(t) }
            },
            |_| {},
        )
        .await
        .unwrap()
    }

    /// Open loop: the operations a stall delayed are charged from when they should have
    /// been sent, so the stall shows in the percentiles (no coordinated omission); closed
    /// loop, the same stall is one slow operation among many.
    #[tokio::test]
    async fn open_loop_charges_a_stall_to_every_delayed_operation() {
        let open = measure(Some(200.0)).await;
        // 1.5 s at 200/s: about 300 operations, never more.
        assert!(open.ops <= 301 && open.ops >= 150, "{open:?}");
        // The stall delayed ~100 operations (a third of the run) by up to 500 ms.
        assert!(open.latency_us.p90 >= 100_000, "{:?}", open.latency_us);
        let closed = measure(None).await;
        assert!(closed.ops > open.ops, "{closed:?}");
        assert!(closed.latency_us.max >= 500_000, "{:?}", closed.latency_us);
        assert!(closed.latency_us.p99 < 100_000, "{:?}", closed.latency_us);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert!((495..=505).contains(&l.p50), "{l:?}");
        assert!((985..=995).contains(&l.p99), "{l:?}");
        assert!((995..=1001).contains(&l.p999), "{l:?}");
        assert!((1000..=1001).contains(&l.max), "{l:?}");
    }
}
