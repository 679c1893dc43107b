//! Deterministic simulation of autoscaling: the real sans-IO cores (cluster agents, storage
//! workers, the request path, the policy, the controller) on the shared simulation harness
//! (`sim/`: a simulated network with delay, reordering and loss, and a clock driven by one
//! seeded RNG). Clients' operations travel as batches to the node that serves them.
//!
//! Each node samples its load every period and gossips it (the load lattice); each runs the
//! hot-key policy on the cluster's picture; a controller reads node 0's picture and asks a
//! recording provisioner for nodes, which the harness then starts (joining) or drains
//! (hand-over, then leave). The workload, with one replica per key by default:
//!
//! 1. reads skewed to `hot-a`: its replication factor rises and the busiest node's share of
//!    the work falls;
//! 2. the skew moves to `hot-b`: it is replicated, and `hot-a` goes back to the default;
//! 3. a load spike: a node is added; 4. the load ends: a node is given back;
//!
//! and no acknowledged write is lost throughout. A failure prints its seed;
//! `CALM_SIM_SEED=N` replays one seed and `CALM_SIM_SEEDS=N` runs N seeds.

mod sim;

use bytes::Bytes;
use calm_kvs::autoscale::{Controller, RecordingProvisioner};
use calm_kvs::cluster::{ClusterConfig, Factors, Status};
use calm_kvs::policy::{Decision, HotRates, NodeSample, Policy, PolicyConfig};
use calm_kvs::protocol::{Ack, Route};
use calm_kvs::{Op, ReadValue, Value, Write};
use rand::RngExt;
use rand::rngs::StdRng;
use sim::history::History;
use sim::{Cx, Faults, Msg, Network, Node, Storage, addr, index};

const MAX_NODES: usize = 5;
const FIRST_NODES: usize = 3;
const STEP: u64 = 10;
const PERIOD: u64 = 500;
/// Operations a node serves per period at full occupancy.
const CAPACITY: f64 = 800.0;
const KEYS: usize = 40;

// Phases, in simulated milliseconds.
const SKEW_A: u64 = 3_000;
const SKEW_B: u64 = 13_000;
const SPIKE: u64 = 25_000;
const LOW: u64 = 33_000;
const QUIET: u64 = 48_000;
const END: u64 = 52_000;

fn config() -> ClusterConfig {
    ClusterConfig {
        replication: 1,
        gossip_period_ms: 100,
        anti_entropy_period_ms: 300,
        probe_period_ms: 200,
        probe_timeout_ms: 400,
        suspect_timeout_ms: 3_000,
        repair_batch: 256,
    }
}

fn hot_policy() -> PolicyConfig {
    PolicyConfig {
        cool_ms: 3_000,
        // One worker per simulated node: the step within nodes is the unit tests' part.
        hot_workers: 0,
        decide_nodes: false,
        ..PolicyConfig::default()
    }
}

fn node_policy() -> PolicyConfig {
    PolicyConfig {
        slo_p99_us: 5_000,
        busy: 0.6,
        idle: 0.15,
        sustain_ms: 1_500,
        grace_ms: 3_000,
        min_nodes: FIRST_NODES,
        max_nodes: FIRST_NODES + 1,
        ..PolicyConfig::default()
    }
}

/// What a node runs besides the harness's node: its hot-key policy and its load.
struct Extra {
    policy: Policy,
    rates: HotRates,
    /// Operations served this period.
    served: u64,
}

fn start_node(i: usize, now: u64, rng: &mut StdRng) -> (Node, Extra) {
    let seeds = if i == 0 { vec![] } else { vec![addr(0)] };
    let node = Node::start(i, seeds, config(), Storage::Memory, now, rng);
    let extra = Extra {
        policy: Policy::new(hot_policy()),
        rates: HotRates::default(),
        served: 0,
    };
    (node, extra)
}

/// The endpoint the clients' batches come from.
const CLIENT: usize = 100;

/// Runs `f` with a node's context; every delta a node applies for a client is acknowledged.
fn with_cx(
    nodes: &mut Vec<Node>,
    net: &mut Network<Msg>,
    rng: &mut StdRng,
    history: &mut History,
    now: u64,
    f: impl FnOnce(&mut Vec<Node>, &mut Cx<'_>),
) {
    // Writes are acknowledged once applied (the clients do not wait for the answer).
    let mut on_applied = |k: &Bytes, d: &Value| {
        history.applied(k, d);
        if let Some(ReadValue::Lww { value, .. }) = d.read(false) {
            let write = Write::Lww(value);
            history.attempt(k, &write);
            history.acknowledge(k.clone(), write, false, now);
        }
    };
    let mut cx = Cx {
        now,
        net,
        rng,
        on_applied: &mut on_applied,
    };
    f(nodes, &mut cx);
}

fn key(k: usize) -> Bytes {
    Bytes::from(format!("key{k}"))
}

/// What the run saw, for the assertions.
#[derive(Default)]
struct Seen {
    a_replicated_at: Option<u64>,
    b_replicated_at: Option<u64>,
    a_restored_at: Option<u64>,
    /// The busiest node's share of the work, per period: (time, share).
    busiest: Vec<(u64, f64)>,
    added_at: Option<u64>,
    removed_at: Option<u64>,
}

fn run(seed: u64) -> Result<(), String> {
    let mut rng = sim::rng(seed);
    let mut nodes: Vec<Node> = Vec::new();
    let mut extra: Vec<Extra> = Vec::new();
    for i in 0..FIRST_NODES {
        let (n, e) = start_node(i, 1, &mut rng);
        nodes.push(n);
        extra.push(e);
    }
    // 1% of messages are lost.
    let mut net: Network<Msg> = Network::new(1..20);
    net.faults = Some(Faults {
        loss: 0.01,
        duplicate: 0.0,
        delay: 1..20,
    });
    let mut history = History::default();
    let mut controller = Controller::new(node_policy());
    let mut provisioner = RecordingProvisioner {
        nodes: FIRST_NODES,
        ..RecordingProvisioner::default()
    };
    let mut seen = Seen::default();
    let factor = |nodes: &[Node], k: &str| nodes[0].agent.replication_table().factor(k.as_bytes());

    let mut now = 1;
    while now <= END {
        // Deliver what is due, in a random order.
        for d in net.due(&mut rng, now) {
            if d.to < nodes.len() {
                with_cx(
                    &mut nodes,
                    &mut net,
                    &mut rng,
                    &mut history,
                    now,
                    |nodes, cx| Node::deliver(nodes, d, cx),
                );
            }
        }

        // The workload.
        let (ops, hot) = match now {
            t if t < SKEW_A => (4, None),
            t if t < SKEW_B => (8, Some("hot-a")),
            t if t < SPIKE => (8, Some("hot-b")),
            t if t < LOW => (50, None),
            t if t < QUIET => (1, None),
            _ => (0, None),
        };
        for _ in 0..ops {
            let k = match hot {
                Some(h) if rng.random_bool(0.7) => Bytes::from(h),
                _ => key(rng.random_range(0..KEYS)),
            };
            let coordinator = loop {
                let c = rng.random_range(0..nodes.len());
                if nodes[c].up && !nodes[c].is_leaving() {
                    break c;
                }
            };
            // The owners of `k` that node `n` sees, and that are up.
            let up_owners = |n: usize| -> Vec<usize> {
                nodes[n]
                    .agent
                    .owners(&k)
                    .iter()
                    .map(|a| index(a))
                    .filter(|&o| nodes[o].up)
                    .collect()
            };
            let owners = up_owners(coordinator);
            if owners.is_empty() {
                continue;
            }
            let write = rng.random_bool(0.2);
            // Writes go to the first owner; reads to any.
            let mut target = if write {
                owners[0]
            } else {
                owners[rng.random_range(0..owners.len())]
            };
            // A node that announced its leave forwards to the owners it sees.
            if matches!(nodes[target].leaving, Some((_, true))) {
                match up_owners(target).first() {
                    Some(&t) => target = t,
                    None => continue,
                }
            }
            extra[target].served += 1;
            let op = if write {
                let value = Bytes::from(format!("v{}", rng.random::<u32>()));
                Op::Write {
                    key: k.clone(),
                    write: Write::Lww(value),
                }
            } else {
                Op::Get {
                    key: k.clone(),
                    meta: false,
                }
            };
            // The node that serves it runs it (the clients route by the owners they see).
            with_cx(
                &mut nodes,
                &mut net,
                &mut rng,
                &mut history,
                now,
                |nodes, cx| {
                    Node::receive_batch(
                        nodes,
                        target,
                        CLIENT,
                        0,
                        vec![op],
                        Ack::One,
                        Route::Forwarded,
                        cx,
                    )
                },
            );
        }

        // Every period: samples, the nodes' hot-key policy, the controller.
        if now % PERIOD == 1 && now > 1 {
            let served = |i: usize| if nodes[i].up { extra[i].served } else { 0 };
            let total: u64 = (0..nodes.len()).map(served).sum();
            if total > 0 {
                let max = (0..nodes.len()).map(served).max().unwrap_or(0);
                seen.busiest.push((now, max as f64 / total as f64));
            }
            for (n, x) in nodes.iter_mut().zip(extra.iter_mut()).filter(|(n, _)| n.up) {
                let occupancy = x.served as f64 / CAPACITY;
                let sample = NodeSample {
                    node: n.agent.me().to_string(),
                    occupancy,
                    // Latency grows as the node fills up.
                    p99_us: if occupancy > 0.8 { 20_000 } else { 500 },
                    ops: x.served,
                    cpu: 0.0,
                    hot_keys: x.rates.rates(n.store.stats().hot_keys),
                };
                x.served = 0;
                n.agent.record_load(now, sample);
                let alive: Vec<String> = n
                    .agent
                    .members()
                    .into_iter()
                    .filter(|m| m.status == Status::Alive)
                    .map(|m| m.addr)
                    .collect();
                let samples = n.agent.load().fresh(now, PERIOD * 3, &alive);
                for d in x.policy.tick(now, &samples) {
                    match d {
                        Decision::Replicate { key, factor, .. } => n.agent.widen_replication(
                            now,
                            key,
                            Factors {
                                global: Some(factor),
                                local: None,
                            },
                            &mut n.store,
                        ),
                        Decision::Restore { key, .. } => {
                            n.agent.set_replication(now, key, Factors::default())
                        }
                        _ => {}
                    }
                }
            }
            let alive: Vec<String> = nodes[0]
                .agent
                .members()
                .into_iter()
                .filter(|m| m.status == Status::Alive)
                .map(|m| m.addr)
                .collect();
            let picture = nodes[0].agent.load().fresh(now, PERIOD * 3, &alive);
            let asked = provisioner.asked.len();
            let members = nodes[0]
                .agent
                .members()
                .iter()
                .filter(|m| m.status.owns_keys())
                .count();
            controller.step(now, &picture, members, &mut provisioner);
            let new: Vec<String> = provisioner.asked.split_off(asked);
            provisioner.asked.extend(new.iter().cloned());
            for request in new {
                if request == "add" {
                    if nodes.len() == MAX_NODES {
                        return Err("asked for more nodes than the simulation has".into());
                    }
                    let i = nodes.len();
                    let (n, e) = start_node(i, now, &mut rng);
                    nodes.push(n);
                    extra.push(e);
                    seen.added_at.get_or_insert(now);
                } else if let Some(node) = request.strip_prefix("remove ") {
                    let i = index(node);
                    // Drain: hand every key to its next owners, then leave.
                    nodes[i].begin_leave(now);
                    seen.removed_at.get_or_insert(now);
                }
            }
        }
        // Data moves before clients are redirected: while the membership holds still, every
        // owner a node routes the hot key to already holds it.
        if now % PERIOD == 1
            && (SKEW_A + 1_000..SKEW_B).contains(&now)
            && history.keys().any(|k| k.as_ref() == b"hot-a")
        {
            let routes: Vec<(usize, Vec<String>)> = nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.up)
                .map(|(v, n)| (v, n.agent.owners(b"hot-a")))
                .collect();
            for (v, owners) in routes {
                for o in owners {
                    if nodes[index(&o)].store.value(b"hot-a").is_none() {
                        return Err(format!(
                            "at {now} ms n{v} routes hot-a to {o}, which does not hold it"
                        ));
                    }
                }
            }
        }
        if factor(&nodes, "hot-a") == Some(3) {
            seen.a_replicated_at.get_or_insert(now);
        } else if seen.a_replicated_at.is_some() {
            seen.a_restored_at.get_or_insert(now);
        }
        if factor(&nodes, "hot-b") == Some(3) {
            seen.b_replicated_at.get_or_insert(now);
        }

        for i in 0..nodes.len() {
            if !nodes[i].up {
                continue;
            }
            with_cx(
                &mut nodes,
                &mut net,
                &mut rng,
                &mut history,
                now,
                |nodes, cx| Node::tick(nodes, i, cx),
            );
        }
        now += STEP;
    }

    // 1. The hot key got more replicas, and the work spread.
    let a_at = seen.a_replicated_at.ok_or("hot-a was never replicated")?;
    if !(SKEW_A..SKEW_B).contains(&a_at) {
        return Err(format!("hot-a replicated at {a_at} ms, outside its skew"));
    }
    let share = |from: u64, to: u64| -> f64 {
        let v: Vec<f64> = seen
            .busiest
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, s)| *s)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let before = share(SKEW_A, a_at);
    let after = share(a_at + 2 * PERIOD, SKEW_B);
    if after >= before - 0.1 {
        return Err(format!(
            "the busiest node's share did not fall: {before:.2} before replication, {after:.2} after"
        ));
    }
    // 2. The skew moved.
    let b_at = seen.b_replicated_at.ok_or("hot-b was never replicated")?;
    if !(SKEW_B..SPIKE).contains(&b_at) {
        return Err(format!("hot-b replicated at {b_at} ms, outside its skew"));
    }
    let restored = seen
        .a_restored_at
        .ok_or("hot-a never went back to the default")?;
    if restored < SKEW_B {
        return Err(format!("hot-a restored at {restored} ms, while still hot"));
    }
    // 3 and 4. A node for the spike, given back after it.
    let added = seen.added_at.ok_or("the spike added no node")?;
    if !(SPIKE..LOW).contains(&added) {
        return Err(format!(
            "a node was added at {added} ms, not during the spike"
        ));
    }
    let removed = seen
        .removed_at
        .ok_or("no node was given back after the spike")?;
    if removed < LOW {
        return Err(format!(
            "a node was removed at {removed} ms, before the load ended"
        ));
    }
    if provisioner.asked.len() != 2 {
        return Err(format!("the controller flapped: {:?}", provisioner.asked));
    }
    // Nothing acknowledged was lost: each key's owners hold every acknowledged write, and
    // nothing nobody wrote.
    let live = nodes.iter().position(|n| n.up).ok_or("no node left")?;
    let keys: Vec<Bytes> = history.keys().cloned().collect();
    for k in &keys {
        for o in nodes[live].agent.owners(k) {
            let held = nodes[index(&o)].store.value(k);
            history.check(k, held.as_ref(), |_| true).map_err(|e| {
                let ups: Vec<bool> = nodes.iter().map(|n| n.up).collect();
                format!(
                    "on {o}: {e}; up {ups:?}; factor {:?}; removed at {:?}, added at {:?}",
                    nodes[live].agent.replication_table().factor(k),
                    seen.removed_at,
                    seen.added_at
                )
            })?;
        }
    }
    Ok(())
}

#[test]
fn skew_replicates_hot_keys_and_load_adds_and_removes_nodes() {
    sim::run_seeds("autoscale_sim", 6, run);
}
