//! The autoscaling policy: a sans-IO core that turns what the nodes measure into decisions,
//! each with its reason. Deterministic given its inputs (time is passed in).
//!
//! - **Hot keys**: a key whose access rate (accesses per sampling period, [`HotRates`]) is
//!   above the mean plus `hot_sigma` standard deviations of the keys reported hot gets
//!   `hot_factor` replicas; once it has not been hot for `cool_ms`, it goes back to the
//!   default.
//! - **Nodes**: when the worst p99 breaks the latency SLO while the nodes are busy (mean
//!   [`NodeSample::load`] — worker occupancy or the process's processor share, whichever
//!   is larger — above `busy`) for `sustain_ms`, ask for a node; when the load stays below
//!   `idle` for `sustain_ms`, give the least busy node back. Node decisions are at least
//!   `grace_ms` apart, and stay within `min_nodes..=max_nodes`.
//!
//! Nodes exchange their samples as a lattice ([`LoadTable`]). The mechanism that applies
//! decisions lives elsewhere: the cluster runtime applies hot-key decisions, and the
//! [`autoscale`](crate::autoscale) controller node decisions; this module only decides.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hot_keys::HotKey;

/// The policy's knobs. In a TOML file (`calm up --autoscale --policy FILE`), any field
/// left out keeps its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Standard deviations above the mean (of the heaviest keys' rates) that make a key
    /// hot.
    pub hot_sigma: f64,
    /// A key also counts as hot when it alone takes more than this share of an average
    /// node's requests (0: only `hot_sigma` decides). One key at half a node's load is a
    /// node's worth of work waiting on one replica, whatever the other keys do.
    pub hot_share: f64,
    /// Replicas a hot key gets across nodes.
    pub hot_factor: u8,
    /// Workers within each node a key still hot after `sustain_ms` with `hot_factor`
    /// replicas gets (0: never).
    pub hot_workers: u8,
    /// How long a replicated key must stay cool before it goes back to the default.
    pub cool_ms: u64,
    /// The latency target: the worst node's p99, microseconds.
    pub slo_p99_us: u64,
    /// Mean load ([`NodeSample::load`]) above which nodes count as busy.
    pub busy: f64,
    /// Mean load below which the cluster counts as idle.
    pub idle: f64,
    /// How long a condition must hold before a node is added or removed.
    pub sustain_ms: u64,
    /// The least time between two node decisions.
    pub grace_ms: u64,
    /// Never fewer nodes.
    pub min_nodes: usize,
    /// Never more nodes.
    pub max_nodes: usize,
    /// Whether this policy decides hot keys' replication (the nodes' part).
    pub decide_keys: bool,
    /// Whether this policy decides the number of nodes (the controller's part).
    pub decide_nodes: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            hot_sigma: 2.0,
            hot_share: 0.5,
            hot_factor: 3,
            hot_workers: 4,
            cool_ms: 30_000,
            slo_p99_us: 10_000,
            busy: 0.7,
            idle: 0.2,
            sustain_ms: 10_000,
            grace_ms: 60_000,
            min_nodes: 1,
            max_nodes: 16,
            decide_keys: true,
            decide_nodes: true,
        }
    }
}

/// What one node reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// The node.
    pub node: String,
    /// Mean worker occupancy over the last period (0 to 1).
    pub occupancy: f64,
    /// The node's p99 latency, microseconds.
    pub p99_us: u64,
    /// Requests it served over the last period.
    pub ops: u64,
    /// Processor time of the node's process over the last period, as a share of the cores
    /// the process may use (0 to 1); 0 when unknown (a node sharing its process with
    /// others, or not on Linux). Worker occupancy misses the network and TLS work, which is
    /// most of a node's.
    pub cpu: f64,
    /// Its hottest keys.
    pub hot_keys: Vec<HotKey>,
}

impl NodeSample {
    /// How busy the node is: the larger of its workers' occupancy and its processor share.
    pub fn load(&self) -> f64 {
        self.occupancy.max(self.cpu)
    }
}

/// Turns the hot-key sketch's running counts into accesses per sampling period: the policy
/// compares access rates, so a key that was hot long ago is not hot now.
#[derive(Clone, Debug, Default)]
pub struct HotRates {
    last: BTreeMap<Bytes, u64>,
}

impl HotRates {
    /// The accesses of each key since the previous call (`counts` may name a key more than
    /// once, e.g. once per worker: they are added up).
    pub fn rates(&mut self, counts: impl IntoIterator<Item = HotKey>) -> Vec<HotKey> {
        let mut now: BTreeMap<Bytes, u64> = BTreeMap::new();
        for h in counts {
            *now.entry(h.key).or_insert(0) += h.count;
        }
        let out = now
            .iter()
            .filter_map(|(key, &count)| {
                let delta = count.saturating_sub(self.last.get(key).copied().unwrap_or(0));
                (delta > 0).then(|| HotKey {
                    key: key.clone(),
                    count: delta,
                })
            })
            .collect();
        self.last = now;
        out
    }
}

/// Every node's latest sample, as a lattice the nodes gossip to each other, so every node
/// (and any controller that asks one) sees the cluster's picture without a central
/// collector: a map from node to (time, sample) whose merge keeps, per node, the later
/// sample (ties broken by the sample's figures, so merging is commutative).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadTable {
    entries: BTreeMap<String, (u64, NodeSample)>,
}

// Occupancies are never NaN (busy time over wall time), so equality is an equivalence.
impl Eq for LoadTable {}

fn sample_order(a: &(u64, NodeSample), b: &(u64, NodeSample)) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then(a.1.p99_us.cmp(&b.1.p99_us))
        .then(a.1.occupancy.total_cmp(&b.1.occupancy))
        .then(a.1.cpu.total_cmp(&b.1.cpu))
        .then(a.1.hot_keys.len().cmp(&b.1.hot_keys.len()))
}

impl calm_lattice::Merge for LoadTable {
    fn merge(&mut self, other: LoadTable) -> bool {
        let mut changed = false;
        for (node, theirs) in other.entries {
            match self.entries.get_mut(&node) {
                Some(mine) => {
                    if sample_order(&theirs, mine) == std::cmp::Ordering::Greater {
                        *mine = theirs;
                        changed = true;
                    }
                }
                None => {
                    self.entries.insert(node, theirs);
                    changed = true;
                }
            }
        }
        changed
    }
}

impl LoadTable {
    /// Records a node's own sample taken at `at_ms`.
    pub fn record(&mut self, at_ms: u64, sample: NodeSample) {
        let mut one = LoadTable::default();
        one.entries.insert(sample.node.clone(), (at_ms, sample));
        calm_lattice::Merge::merge(self, one);
    }

    /// The samples no older than `max_age_ms` at `now_ms`, for the nodes in `alive` (all
    /// nodes when `alive` is empty).
    pub fn fresh(&self, now_ms: u64, max_age_ms: u64, alive: &[String]) -> Vec<NodeSample> {
        self.entries
            .iter()
            .filter(|(node, (at, _))| {
                now_ms.saturating_sub(*at) <= max_age_ms
                    && (alive.is_empty() || alive.contains(node))
            })
            .map(|(_, (_, s))| s.clone())
            .collect()
    }

    /// Every entry: node, time of its sample, the sample.
    pub fn entries(&self) -> impl Iterator<Item = (&String, u64, &NodeSample)> {
        self.entries.iter().map(|(n, (at, s))| (n, *at, s))
    }
}

/// A decision, with why it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Decision {
    /// Give `key` `factor` replicas.
    Replicate {
        /// The key.
        key: Bytes,
        /// Its new number of replicas.
        factor: u8,
        /// Why.
        reason: String,
    },
    /// `key` is still hot with `factor` replicas across nodes: also hold it on `workers`
    /// workers within each of those nodes (reads spread over them).
    ReplicateLocally {
        /// The key.
        key: Bytes,
        /// Its number of replicas across nodes (unchanged).
        factor: u8,
        /// Workers holding it in each node.
        workers: u8,
        /// Why.
        reason: String,
    },
    /// Put `key` back to the default replication.
    Restore {
        /// The key.
        key: Bytes,
        /// Why.
        reason: String,
    },
    /// Ask for one more node.
    AddNode {
        /// Why.
        reason: String,
    },
    /// Give `node` back (after moving its keys).
    RemoveNode {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Policy {
    config: PolicyConfig,
    /// Replicated keys and when they were last hot.
    replicated: BTreeMap<Bytes, u64>,
    /// Replicated keys, when they were replicated across nodes and whether they were then
    /// replicated within nodes too.
    stage: BTreeMap<Bytes, (u64, bool)>,
    overloaded_since: Option<u64>,
    idle_since: Option<u64>,
    last_node_decision: Option<u64>,
    /// Nodes in the cluster, when known from the membership (a node whose sample is late
    /// still counts).
    cluster_size: Option<usize>,
}

impl Policy {
    /// A policy with `config`.
    pub fn new(config: PolicyConfig) -> Policy {
        Policy {
            config,
            replicated: BTreeMap::new(),
            stage: BTreeMap::new(),
            overloaded_since: None,
            idle_since: None,
            last_node_decision: None,
            cluster_size: None,
        }
    }

    /// Tells the policy how many nodes the cluster has (by default, the number of samples).
    pub fn set_cluster_size(&mut self, nodes: usize) {
        self.cluster_size = Some(nodes);
    }

    /// Keys the policy has replicated.
    pub fn replicated(&self) -> impl Iterator<Item = &Bytes> {
        self.replicated.keys()
    }

    /// Decides, at `now_ms`, from the latest sample of every node.
    pub fn tick(&mut self, now_ms: u64, samples: &[NodeSample]) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.config.decide_keys {
            out.extend(self.hot_keys(now_ms, samples));
        }
        if self.config.decide_nodes {
            out.extend(self.nodes(now_ms, samples));
        }
        out
    }

    fn hot_keys(&mut self, now_ms: u64, samples: &[NodeSample]) -> Vec<Decision> {
        let mut counts: BTreeMap<&Bytes, u64> = BTreeMap::new();
        for h in samples.iter().flat_map(|s| &s.hot_keys) {
            *counts.entry(&h.key).or_insert(0) += h.count;
        }
        let n = counts.len() as f64;
        let mut out = Vec::new();
        let mut hot_now = BTreeSet::new();
        if n >= 2.0 {
            let mean = counts.values().sum::<u64>() as f64 / n;
            let var = counts
                .values()
                .map(|&c| (c as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let threshold = mean + self.config.hot_sigma * var.sqrt();
            let per_node = samples.iter().map(|s| s.ops).sum::<u64>() as f64 / samples.len() as f64;
            let share = self.config.hot_share * per_node;
            for (&key, &count) in &counts {
                let by_sigma = count as f64 > threshold && var > 0.0;
                let by_share = self.config.hot_share > 0.0 && share > 0.0 && count as f64 > share;
                if by_sigma || by_share {
                    hot_now.insert(key.clone());
                    let stage = self.stage.get(key).copied();
                    if let Some((since, false)) = stage
                        && self.config.hot_workers > 1
                        && now_ms.saturating_sub(since) >= self.config.sustain_ms
                    {
                        // Still hot with replicas on several nodes: spread within nodes too.
                        self.stage.insert(key.clone(), (since, true));
                        out.push(Decision::ReplicateLocally {
                            key: key.clone(),
                            factor: self.config.hot_factor,
                            workers: self.config.hot_workers,
                            reason: format!(
                                "still hot ({count} recent accesses) {} s after its replicas across nodes",
                                now_ms.saturating_sub(since) / 1000
                            ),
                        });
                    }
                    if self.replicated.insert(key.clone(), now_ms).is_none() {
                        self.stage.insert(key.clone(), (now_ms, false));
                        out.push(Decision::Replicate {
                            key: key.clone(),
                            factor: self.config.hot_factor,
                            reason: if by_sigma {
                                format!(
                                    "{count} recent accesses, above mean {mean:.0} + {} x sd {:.0} = {threshold:.0}",
                                    self.config.hot_sigma,
                                    var.sqrt()
                                )
                            } else {
                                format!(
                                    "{count} recent accesses, more than {} of a node's {per_node:.0}",
                                    self.config.hot_share
                                )
                            },
                        });
                    }
                }
            }
        }
        let cool_ms = self.config.cool_ms;
        let cooled: Vec<Bytes> = self
            .replicated
            .iter()
            .filter(|(k, last)| !hot_now.contains(*k) && now_ms.saturating_sub(**last) >= cool_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in cooled {
            self.replicated.remove(&key);
            self.stage.remove(&key);
            out.push(Decision::Restore {
                key,
                reason: format!("not hot for {} s", cool_ms / 1000),
            });
        }
        out
    }

    fn nodes(&mut self, now_ms: u64, samples: &[NodeSample]) -> Vec<Decision> {
        if samples.is_empty() {
            return Vec::new();
        }
        let c = &self.config;
        let occupancy = samples.iter().map(NodeSample::load).sum::<f64>() / samples.len() as f64;
        let worst_p99 = samples.iter().map(|s| s.p99_us).max().unwrap_or(0);
        let overloaded = worst_p99 > c.slo_p99_us && occupancy > c.busy;
        let idle = occupancy < c.idle;
        self.overloaded_since = if overloaded {
            Some(self.overloaded_since.unwrap_or(now_ms))
        } else {
            None
        };
        self.idle_since = if idle {
            Some(self.idle_since.unwrap_or(now_ms))
        } else {
            None
        };
        let in_grace = self
            .last_node_decision
            .is_some_and(|t| now_ms.saturating_sub(t) < c.grace_ms);
        if in_grace {
            return Vec::new();
        }
        let held =
            |since: Option<u64>| since.is_some_and(|t| now_ms.saturating_sub(t) >= c.sustain_ms);
        let n = self
            .cluster_size
            .unwrap_or(samples.len())
            .max(samples.len());
        if held(self.overloaded_since) && n < c.max_nodes {
            self.last_node_decision = Some(now_ms);
            self.overloaded_since = None;
            return vec![Decision::AddNode {
                reason: format!(
                    "p99 {} µs over the {} µs target with nodes {:.0}% busy for {} s",
                    worst_p99,
                    c.slo_p99_us,
                    occupancy * 100.0,
                    c.sustain_ms / 1000
                ),
            }];
        }
        if held(self.idle_since) && n > c.min_nodes {
            let least = samples
                .iter()
                .min_by(|a, b| a.load().total_cmp(&b.load()).then(b.node.cmp(&a.node)))
                .expect("samples is not empty");
            self.last_node_decision = Some(now_ms);
            self.idle_since = None;
            return vec![Decision::RemoveNode {
                node: least.node.clone(),
                reason: format!(
                    "nodes {:.0}% busy, under {:.0}%, for {} s",
                    occupancy * 100.0,
                    c.idle * 100.0,
                    c.sustain_ms / 1000
                ),
            }];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_key_still_hot_spreads_across_workers_after_nodes() {
        let mut p = Policy::new(PolicyConfig {
            sustain_ms: 5_000,
            ..PolicyConfig::default()
        });
        let hot = keys(&[("hot", 500)]);
        let d = p.tick(1_000, &[sample("n0", 0.5, 100, &hot)]);
        assert!(matches!(&d[..], [Decision::Replicate { .. }]), "{d:?}");
        assert!(p.tick(3_000, &[sample("n0", 0.5, 100, &hot)]).is_empty());
        let d = p.tick(6_000, &[sample("n0", 0.5, 100, &hot)]);
        assert!(
            matches!(&d[..], [Decision::ReplicateLocally { key, factor: 3, workers: 4, .. }] if key.as_ref() == b"hot"),
            "{d:?}"
        );
        assert!(
            p.tick(9_000, &[sample("n0", 0.5, 100, &hot)]).is_empty(),
            "once"
        );
    }

    #[test]
    fn a_key_with_half_a_node_of_load_is_hot_even_beside_another() {
        // Two keys equally hot: neither stands out by standard deviations (each is exactly
        // mean + 2 sd), but each takes 80% of an average node's requests.
        let mut heavy = vec![("a", 800), ("b", 800)];
        let cold: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        heavy.extend(cold.iter().map(|c| (c.as_str(), 10)));
        let samples: Vec<NodeSample> = (0..4)
            .map(|i| NodeSample {
                ops: 1_000,
                ..sample(
                    &format!("n{i}"),
                    0.5,
                    100,
                    if i == 0 { &heavy } else { &[] },
                )
            })
            .collect();
        let mut sigma_only = Policy::new(PolicyConfig {
            hot_share: 0.0,
            ..PolicyConfig::default()
        });
        assert!(sigma_only.tick(1_000, &samples).is_empty());
        let mut p = Policy::new(PolicyConfig::default());
        let d = p.tick(1_000, &samples);
        let replicated: Vec<&[u8]> = d
            .iter()
            .filter_map(|d| match d {
                Decision::Replicate { key, reason, .. } => {
                    assert!(reason.contains("of a node's 1000"), "{reason}");
                    Some(key.as_ref())
                }
                _ => None,
            })
            .collect();
        assert_eq!(replicated, vec![&b"a"[..], &b"b"[..]], "{d:?}");
        // Without a request count (ops 0) the share rule stays out of it.
        let unknown: Vec<NodeSample> = samples
            .into_iter()
            .map(|s| NodeSample { ops: 0, ..s })
            .collect();
        assert!(
            Policy::new(PolicyConfig::default())
                .tick(1_000, &unknown)
                .is_empty()
        );
    }

    #[test]
    fn a_node_busy_outside_its_workers_counts_as_busy() {
        // Workers 5% busy, the process at 90% of its cores (network and TLS work).
        let config = PolicyConfig {
            slo_p99_us: 1_000,
            busy: 0.7,
            sustain_ms: 1_000,
            ..PolicyConfig::default()
        };
        let busy = |cpu: f64| NodeSample {
            cpu,
            ..sample("n0", 0.05, 5_000, &[])
        };
        let mut p = Policy::new(config.clone());
        assert!(p.tick(0, &[busy(0.9)]).is_empty());
        let d = p.tick(1_000, &[busy(0.9)]);
        assert!(
            matches!(&d[..], [Decision::AddNode { reason }] if reason.contains("90% busy")),
            "{d:?}"
        );
        let mut q = Policy::new(config);
        q.tick(0, &[busy(0.0)]);
        assert!(
            q.tick(1_000, &[busy(0.0)]).is_empty(),
            "workers alone: not busy"
        );
    }

    #[test]
    fn rates_are_accesses_since_the_last_sample() {
        let hk = |k: &str, c: u64| HotKey {
            key: Bytes::copy_from_slice(k.as_bytes()),
            count: c,
        };
        let mut r = HotRates::default();
        assert_eq!(
            r.rates([hk("a", 10), hk("a", 5), hk("b", 3)]),
            vec![hk("a", 15), hk("b", 3)]
        );
        // "a" was not used since; "b" was, twice.
        assert_eq!(r.rates([hk("a", 15), hk("b", 5)]), vec![hk("b", 2)]);
    }

    #[test]
    fn load_tables_merge_as_a_lattice() {
        use calm_lattice::Merge;
        let mut a = LoadTable::default();
        a.record(10, sample("n0", 0.5, 100, &[]));
        a.record(12, sample("n1", 0.1, 50, &[]));
        let mut b = LoadTable::default();
        b.record(11, sample("n0", 0.9, 900, &[]));
        b.record(5, sample("n1", 0.2, 10, &[]));
        let (mut ab, mut ba) = (a.clone(), b.clone());
        assert!(ab.merge(b.clone()));
        assert!(ba.merge(a.clone()));
        assert_eq!(ab, ba, "commutative");
        assert!(!ab.clone().merge(ab.clone()), "idempotent");
        let fresh = ab.fresh(12, 1, &[]);
        assert_eq!(fresh.len(), 2);
        assert!(
            fresh.iter().any(|s| s.node == "n0" && s.p99_us == 900),
            "the later n0 wins"
        );
        assert_eq!(
            ab.fresh(20, 5, &[]),
            Vec::<NodeSample>::new(),
            "stale samples are left out"
        );
        assert_eq!(
            ab.fresh(12, 100, &["n1".to_string()]).len(),
            1,
            "only alive nodes"
        );
    }

    fn sample(node: &str, occupancy: f64, p99_us: u64, hot: &[(&str, u64)]) -> NodeSample {
        NodeSample {
            node: node.into(),
            occupancy,
            p99_us,
            ops: 0,
            cpu: 0.0,
            hot_keys: hot
                .iter()
                .map(|(k, c)| HotKey {
                    key: Bytes::copy_from_slice(k.as_bytes()),
                    count: *c,
                })
                .collect(),
        }
    }

    fn keys(spread: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&str, u64)> = vec![
            ("a", 10),
            ("b", 12),
            ("c", 9),
            ("d", 11),
            ("e", 10),
            ("f", 8),
        ];
        v.extend_from_slice(spread);
        v
    }

    #[test]
    fn a_hot_key_is_replicated_then_restored_when_it_cools() {
        let mut p = Policy::new(PolicyConfig::default());
        let hot = keys(&[("hot", 500)]);
        let d = p.tick(1_000, &[sample("n0", 0.5, 100, &hot)]);
        assert!(
            matches!(&d[..], [Decision::Replicate { key, factor: 3, .. }] if key.as_ref() == b"hot"),
            "{d:?}"
        );
        // Still hot: no new decision.
        assert!(p.tick(2_000, &[sample("n0", 0.5, 100, &hot)]).is_empty());
        // The skew moves: "other" becomes hot; "hot" cools and, after cool_ms, is restored.
        let moved = keys(&[("other", 500), ("hot", 10)]);
        let d = p.tick(3_000, &[sample("n0", 0.5, 100, &moved)]);
        assert!(
            matches!(&d[..], [Decision::Replicate { key, .. }] if key.as_ref() == b"other"),
            "{d:?}"
        );
        // Still hot after sustain_ms: "other" spreads within nodes too.
        let d = p.tick(20_000, &[sample("n0", 0.5, 100, &moved)]);
        assert!(
            matches!(&d[..], [Decision::ReplicateLocally { key, .. }] if key.as_ref() == b"other"),
            "{d:?}"
        );
        let d = p.tick(32_001, &[sample("n0", 0.5, 100, &moved)]);
        assert!(
            matches!(&d[..], [Decision::Restore { key, .. }] if key.as_ref() == b"hot"),
            "{d:?}"
        );
        // An even load makes nothing hot.
        let mut p = Policy::new(PolicyConfig::default());
        assert!(
            p.tick(1_000, &[sample("n0", 0.5, 100, &keys(&[]))])
                .is_empty()
        );
    }

    #[test]
    fn sustained_overload_adds_a_node_and_idleness_removes_one_without_flapping() {
        let config = PolicyConfig::default();
        let mut p = Policy::new(config.clone());
        let busy = |t: u64, p: &mut Policy| {
            p.tick(
                t,
                &[
                    sample("n0", 0.9, 50_000, &[]),
                    sample("n1", 0.8, 20_000, &[]),
                ],
            )
        };
        // Not yet sustained.
        assert!(busy(0, &mut p).is_empty());
        assert!(busy(5_000, &mut p).is_empty());
        let d = busy(10_000, &mut p);
        assert!(
            matches!(&d[..], [Decision::AddNode { reason }] if reason.contains("50000 µs")),
            "{d:?}"
        );
        // Within the grace period nothing more happens, however loaded.
        for t in (11_000..70_000).step_by(1_000) {
            assert!(busy(t, &mut p).is_empty(), "at {t}");
        }
        // Busy without breaking the SLO: no node.
        let mut q = Policy::new(config.clone());
        for t in (0..100_000).step_by(1_000) {
            assert!(q.tick(t, &[sample("n0", 0.95, 1_000, &[])]).is_empty());
        }
        // Idle: the least busy node goes, once, after sustain_ms; never below min_nodes.
        let mut r = Policy::new(config);
        let idle = |t: u64, r: &mut Policy| {
            r.tick(
                t,
                &[sample("n0", 0.10, 100, &[]), sample("n1", 0.05, 100, &[])],
            )
        };
        assert!(idle(0, &mut r).is_empty());
        let d = idle(10_000, &mut r);
        assert!(
            matches!(&d[..], [Decision::RemoveNode { node, .. }] if node == "n1"),
            "{d:?}"
        );
        assert!(idle(20_000, &mut r).is_empty());
        let single = r.tick(200_000, &[sample("n0", 0.0, 100, &[])]);
        let single2 = r.tick(300_000, &[sample("n0", 0.0, 100, &[])]);
        assert!(
            single.is_empty() && single2.is_empty(),
            "{single:?} {single2:?}"
        );
    }

    #[test]
    fn decisions_depend_only_on_inputs() {
        let run = || {
            let mut p = Policy::new(PolicyConfig::default());
            let mut all = Vec::new();
            for t in (0..100_000u64).step_by(1_000) {
                let hot = if t < 50_000 {
                    keys(&[("x", 400)])
                } else {
                    keys(&[("y", 400)])
                };
                let occ = if t < 30_000 { 0.9 } else { 0.1 };
                all.extend(p.tick(
                    t,
                    &[sample("n0", occ, 40_000, &hot), sample("n1", occ, 500, &[])],
                ));
            }
            all
        };
        assert_eq!(run(), run());
    }
}
