//! The autoscaling policy on a node's cluster thread, and how much processor time the
//! node's process used (from `/proc`).

use crate::cluster::{ClusterAgent, NodeAddr, Status};
use crate::node::WorkerPool;

use super::now_ms;

/// The autoscaling policy on a node's cluster thread: every period it reads the node's own
/// figures, asks the policy, and applies what it can — replication changes go through the
/// replicated table like `calm kv replicate`; node decisions are recorded (no provisioner is
/// attached yet). Every decision is logged and kept for `calm status`.
pub(super) struct Autopilot {
    policy: crate::policy::Policy,
    rates: crate::policy::HotRates,
    me: NodeAddr,
    period_ms: u64,
    next_ms: u64,
    last_busy_us: u64,
    last_ms: u64,
    /// Requests served before the current period.
    last_ops: u64,
    /// The process's processor time, when the node is alone in its process.
    cpu: Option<ProcessCpu>,
}

/// The processor time of this process (all its threads), from `/proc/self/stat`.
struct ProcessCpu {
    last_ticks: u64,
    last_at: std::time::Instant,
}

/// Linux's unit for process times in `/proc` (USER_HZ, 100 on every architecture Linux
/// runs on).
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessCpu {
    fn new() -> Option<ProcessCpu> {
        Some(ProcessCpu {
            last_ticks: process_ticks()?,
            last_at: std::time::Instant::now(),
        })
    }

    /// Processor time since the last call over the time passed and the cores this process
    /// may use (0 to 1; 0 if `/proc` cannot be read).
    fn share_since_last(&mut self) -> f64 {
        let Some(ticks) = process_ticks() else {
            return 0.0;
        };
        let seconds = self.last_at.elapsed().as_secs_f64();
        let used = ticks.saturating_sub(self.last_ticks) as f64 / TICKS_PER_SECOND;
        self.last_ticks = ticks;
        self.last_at = std::time::Instant::now();
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        if seconds <= 0.0 {
            return 0.0;
        }
        (used / seconds / cores).clamp(0.0, 1.0)
    }
}

fn process_ticks() -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User plus system time, in ticks, from a `/proc/PID/stat` line: the fields after the
/// command name (which may hold spaces and parentheses) are state, then 10 others, then
/// utime and stime.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Autopilot {
    pub(super) fn new(pool: &WorkerPool, me: NodeAddr) -> Option<Autopilot> {
        (pool.autoscale_period_ms > 0).then(|| Autopilot {
            // Nodes decide hot keys; adding and removing nodes is the controller's part
            // (`calm up --autoscale`, `calm autoscaler`), which reads the same picture.
            policy: crate::policy::Policy::new(crate::policy::PolicyConfig {
                decide_nodes: false,
                ..pool.policy.clone()
            }),
            rates: crate::policy::HotRates::default(),
            me,
            period_ms: pool.autoscale_period_ms,
            next_ms: now_ms() + pool.autoscale_period_ms,
            last_busy_us: 0,
            last_ms: now_ms(),
            last_ops: 0,
            cpu: if pool.own_process {
                ProcessCpu::new()
            } else {
                None
            },
        })
    }

    /// When the policy next runs.
    pub(super) fn due_ms(&self) -> u64 {
        self.next_ms
    }

    pub(super) fn tick(&mut self, now: u64, pool: &mut WorkerPool, agent: &mut ClusterAgent) {
        if now < self.next_ms {
            return;
        }
        self.next_ms = now + self.period_ms;
        let workers = pool.worker_stats();
        let busy: u64 = workers.iter().map(|w| w.busy_us).sum();
        let wall_us = now.saturating_sub(self.last_ms).max(1) * 1000 * workers.len().max(1) as u64;
        let occupancy = busy.saturating_sub(self.last_busy_us) as f64 / wall_us as f64;
        self.last_busy_us = busy;
        self.last_ms = now;
        let metrics = pool.metrics.snapshot(Vec::new());
        let ops: u64 = metrics.ops.iter().map(|o| o.count).sum();
        let sample = crate::policy::NodeSample {
            node: self.me.clone(),
            occupancy,
            p99_us: metrics.ops.iter().map(|o| o.p99_us).max().unwrap_or(0),
            ops: ops.saturating_sub(std::mem::replace(&mut self.last_ops, ops)),
            cpu: self.cpu.as_mut().map_or(0.0, |c| c.share_since_last()),
            hot_keys: self
                .rates
                .rates(workers.into_iter().flat_map(|w| w.hot_keys)),
        };
        agent.record_load(now, sample);
        let alive: Vec<String> = agent
            .members()
            .iter()
            .filter(|m| m.status == Status::Alive)
            .map(|m| m.addr.clone())
            .collect();
        let samples = agent.load().fresh(now, self.period_ms * 3, &alive);
        pool.metrics.set_cluster_load(agent.load().clone());
        for decision in self.policy.tick(now, &samples) {
            use crate::policy::Decision;
            let text = match &decision {
                Decision::Replicate {
                    key,
                    factor,
                    reason,
                } => {
                    // The value goes to the new owners before clients are sent there.
                    agent.widen_replication(
                        now,
                        key.clone(),
                        crate::cluster::Factors {
                            global: Some(*factor),
                            local: None,
                        },
                        pool,
                    );
                    format!(
                        "replicate {:?} on {factor} nodes: {reason}",
                        String::from_utf8_lossy(key)
                    )
                }
                Decision::ReplicateLocally {
                    key,
                    factor,
                    workers,
                    reason,
                } => {
                    agent.set_replication(
                        now,
                        key.clone(),
                        crate::cluster::Factors {
                            global: Some(*factor),
                            local: Some(*workers),
                        },
                    );
                    format!(
                        "replicate {:?} on {workers} workers in each of its {factor} nodes: {reason}",
                        String::from_utf8_lossy(key)
                    )
                }
                Decision::Restore { key, reason } => {
                    agent.set_replication(now, key.clone(), crate::cluster::Factors::default());
                    format!(
                        "back to default replication for {:?}: {reason}",
                        String::from_utf8_lossy(key)
                    )
                }
                Decision::AddNode { reason } => {
                    format!("a node should be added (no provisioner attached): {reason}")
                }
                Decision::RemoveNode { node, reason } => {
                    format!("{node} could be given back (no provisioner attached): {reason}")
                }
            };
            tracing::info!(decision = %text, "autoscaling policy");
            pool.metrics.record_decision(text);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn process_times_are_read_past_any_command_name() {
        let line = "4242 (calm (node) 1) S 1 4242 4242 0 -1 4194560 1204 0 0 0 250 75 0 0 20 0 9 0 \
                    123 456 789";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("4242 (calm) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_uses_processor_time() {
        let Some(mut cpu) = ProcessCpu::new() else {
            panic!("/proc/self/stat is readable on Linux");
        };
        // Half a second of work on this thread: a measurable share of the cores.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(500) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let share = cpu.share_since_last();
        assert!(share > 0.05 && share <= 1.0, "{share}");
    }
}
