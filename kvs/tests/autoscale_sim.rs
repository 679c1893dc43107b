//! Deterministic simulation of autoscaling: the real sans-IO cores (cluster agents, storage
//! workers, the policy, the controller) wired through a simulated network (delay, reordering,
//! loss) and clock driven by one seeded RNG.
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

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use calm_kvs::autoscale::{Controller, RecordingProvisioner};
use calm_kvs::cluster::{
    ClusterAgent, ClusterConfig, Factors, LocalStore, PeerEnvelope, PeerReply, Status,
};
use calm_kvs::policy::{Decision, HotRates, NodeSample, Policy, PolicyConfig};
use calm_kvs::{HashRing, Op, Value, Worker, WorkerConfig, Write};
use calm_lattice::ReplicaId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

struct SimNode {
    agent: ClusterAgent,
    store: Worker,
    up: bool,
    policy: Policy,
    rates: HotRates,
    /// Operations served this period.
    served: u64,
    /// Draining before a graceful leave: when it started, and whether it has announced
    /// the leave (then it hands over once more, and forwards what it is sent).
    leaving: Option<(u64, bool)>,
}

fn start_node(i: usize, now: u64, rng: &mut StdRng) -> SimNode {
    let seeds = if i == 0 {
        vec![]
    } else {
        vec!["n0".to_string()]
    };
    let ring = Arc::new(HashRing::new([0], 1));
    let mut store = Worker::new(0, ReplicaId(i as u64 + 1), ring, WorkerConfig::default());
    store.collect_changes();
    SimNode {
        agent: ClusterAgent::new(format!("n{i}"), seeds, config(), now.max(1), rng.random()),
        store,
        up: true,
        policy: Policy::new(hot_policy()),
        rates: HotRates::default(),
        served: 0,
        leaving: None,
    }
}

enum Msg {
    Request {
        id: u64,
        from: usize,
        to: usize,
        envelope: PeerEnvelope,
    },
    Reply {
        id: u64,
        from: usize,
        to: usize,
        reply: PeerReply,
    },
}

fn index(addr: &str) -> usize {
    addr.trim_start_matches('n')
        .parse()
        .expect("node names are nN")
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
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nodes: Vec<SimNode> = Vec::new();
    for i in 0..FIRST_NODES {
        nodes.push(start_node(i, 1, &mut rng));
    }
    let mut in_flight: Vec<(u64, Msg)> = Vec::new();
    let mut acked: Vec<(Bytes, Value)> = Vec::new();
    let mut controller = Controller::new(node_policy());
    let mut provisioner = RecordingProvisioner {
        nodes: FIRST_NODES,
        ..RecordingProvisioner::default()
    };
    let mut seen = Seen::default();
    let factor =
        |nodes: &[SimNode], k: &str| nodes[0].agent.replication_table().factor(k.as_bytes());

    let mut now = 1;
    while now <= END {
        // Deliver what is due, in a random order; 1% of messages are lost.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut in_flight)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        in_flight = later;
        let mut due = due;
        while !due.is_empty() {
            let (_, m) = due.swap_remove(rng.random_range(0..due.len()));
            match m {
                Msg::Request {
                    id,
                    from,
                    to,
                    envelope,
                } => {
                    let n = &mut nodes[to];
                    if !n.up {
                        continue;
                    }
                    let reply = n.agent.handle_request(now, envelope, &mut n.store);
                    if rng.random_bool(0.99) {
                        in_flight.push((
                            now + rng.random_range(1..20),
                            Msg::Reply {
                                id,
                                from: to,
                                to: from,
                                reply,
                            },
                        ));
                    }
                }
                Msg::Reply {
                    id,
                    from,
                    to,
                    reply,
                } => {
                    let n = &mut nodes[to];
                    if n.up {
                        n.agent
                            .handle_reply(now, id, &format!("n{from}"), reply, &mut n.store);
                    }
                }
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
                if nodes[c].up && nodes[c].leaving.is_none() {
                    break c;
                }
            };
            let owners: Vec<usize> = nodes[coordinator]
                .agent
                .owners(&k)
                .iter()
                .map(|a| index(a))
                .filter(|&o| nodes[o].up)
                .collect();
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
                let theirs: Vec<usize> = nodes[target]
                    .agent
                    .owners(&k)
                    .iter()
                    .map(|a| index(a))
                    .filter(|&o| nodes[o].up)
                    .collect();
                match theirs.first() {
                    Some(&t) => target = t,
                    None => continue,
                }
            }
            let n = &mut nodes[target];
            n.served += 1;
            if write {
                let value = Bytes::from(format!("v{}", rng.random::<u32>()));
                let results = n.store.handle_ops(
                    now,
                    [Op::Write {
                        key: k.clone(),
                        write: Write::Lww(value),
                    }],
                );
                if results[0].is_ok() {
                    let changes = n.store.take_changes();
                    acked.extend(changes.iter().cloned());
                    n.agent.on_local_changes(changes);
                }
            } else {
                n.store.handle_ops(
                    now,
                    [Op::Get {
                        key: k.clone(),
                        meta: false,
                    }],
                );
            }
        }

        // Every period: samples, the nodes' hot-key policy, the controller.
        if now % PERIOD == 1 && now > 1 {
            let total: u64 = nodes.iter().filter(|n| n.up).map(|n| n.served).sum();
            if total > 0 {
                let max = nodes
                    .iter()
                    .filter(|n| n.up)
                    .map(|n| n.served)
                    .max()
                    .unwrap_or(0);
                seen.busiest.push((now, max as f64 / total as f64));
            }
            for n in nodes.iter_mut().filter(|n| n.up) {
                let occupancy = n.served as f64 / CAPACITY;
                let sample = NodeSample {
                    node: n.agent.me().to_string(),
                    occupancy,
                    // Latency grows as the node fills up.
                    p99_us: if occupancy > 0.8 { 20_000 } else { 500 },
                    ops: n.served,
                    cpu: 0.0,
                    hot_keys: n.rates.rates(n.store.stats().hot_keys),
                };
                n.served = 0;
                n.agent.record_load(now, sample);
                let alive: Vec<String> = n
                    .agent
                    .members()
                    .into_iter()
                    .filter(|m| m.status == Status::Alive)
                    .map(|m| m.addr)
                    .collect();
                let samples = n.agent.load().fresh(now, PERIOD * 3, &alive);
                for d in n.policy.tick(now, &samples) {
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
                    nodes.push(start_node(i, now, &mut rng));
                    seen.added_at.get_or_insert(now);
                } else if let Some(node) = request.strip_prefix("remove ") {
                    let i = index(node);
                    // Drain: hand every key to its next owners, then leave.
                    let n = &mut nodes[i];
                    let everything = n.agent.everything();
                    let buckets = n.store.digest(&everything).into_keys().collect();
                    let entries = n.store.entries_in(&everything, &buckets, usize::MAX);
                    n.agent.hand_over(now, entries);
                    n.leaving = Some((now, false));
                    seen.removed_at.get_or_insert(now);
                }
            }
        }
        // Data moves before clients are redirected: while the membership holds still, every
        // owner a node routes the hot key to already holds it.
        if now % PERIOD == 1
            && (SKEW_A + 1_000..SKEW_B).contains(&now)
            && acked.iter().any(|(k, _)| k.as_ref() == b"hot-a")
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

        for n in nodes.iter_mut().filter(|n| n.up) {
            n.agent.handle_tick(now, &mut n.store);
            n.store.handle_tick(now);
            if n.leaving.is_some() {
                n.agent.resend_hand_over(now, 200);
            }
            match n.leaving {
                Some((since, false)) if n.agent.handing_over() == 0 || now - since > 5_000 => {
                    // Announce, then hand over what was written meanwhile.
                    n.agent.leave();
                    let everything = n.agent.everything();
                    let buckets = n.store.digest(&everything).into_keys().collect();
                    let entries = n.store.entries_in(&everything, &buckets, usize::MAX);
                    n.agent.hand_over(now, entries);
                    n.leaving = Some((now, true));
                }
                Some((since, true)) if n.agent.handing_over() == 0 || now - since > 5_000 => {
                    n.leaving = None;
                    // Its last messages go out below; then it is gone.
                    while let Some(out) = n.agent.poll_outgoing() {
                        in_flight.push((
                            now + 1,
                            Msg::Request {
                                id: out.id,
                                from: index(n.agent.me()),
                                to: index(&out.to),
                                envelope: out.envelope,
                            },
                        ));
                    }
                    n.up = false;
                }
                _ => {}
            }
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.up {
                continue;
            }
            while let Some(out) = node.agent.poll_outgoing() {
                if rng.random_bool(0.99) {
                    in_flight.push((
                        now + rng.random_range(1..20),
                        Msg::Request {
                            id: out.id,
                            from: i,
                            to: index(&out.to),
                            envelope: out.envelope,
                        },
                    ));
                }
            }
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
    // Nothing acknowledged was lost: each key's owners hold every acknowledged write.
    let mut last: BTreeMap<Bytes, Value> = BTreeMap::new();
    for (k, d) in &acked {
        last.entry(k.clone())
            .or_insert_with(|| Value::empty(d.kind()))
            .merge_replicated(d.clone());
    }
    let live = nodes.iter().position(|n| n.up).ok_or("no node left")?;
    for (k, want) in &last {
        for o in nodes[live].agent.owners(k) {
            let n = &mut nodes[index(&o)];
            let Some(mut have) = n.store.value(k) else {
                let holders: Vec<usize> = (0..nodes.len())
                    .filter(|&j| nodes[j].store.value(k).is_some())
                    .collect();
                let ups: Vec<bool> = nodes.iter().map(|n| n.up).collect();
                let views: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| {
                        n.agent
                            .members()
                            .iter()
                            .map(|m| format!("{}:{}", m.addr, m.status.name()))
                            .collect()
                    })
                    .collect();
                return Err(format!(
                    "{o} lacks {k:?}; held by {holders:?}; up {ups:?}; factor {:?}; views {views:?}; seen removed {:?} added {:?}",
                    nodes[live].agent.replication_table().factor(k),
                    seen.removed_at,
                    seen.added_at
                ));
            };
            let (changed, _) = have.merge_replicated(want.clone());
            if changed {
                return Err(format!("{o} lost an acknowledged write of {k:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn skew_replicates_hot_keys_and_load_adds_and_removes_nodes() {
    let seeds: Vec<u64> = match (
        std::env::var("CALM_SIM_SEED"),
        std::env::var("CALM_SIM_SEEDS"),
    ) {
        (Ok(s), _) => vec![s.parse().expect("CALM_SIM_SEED is a number")],
        (_, Ok(n)) => (0..n.parse().expect("CALM_SIM_SEEDS is a number")).collect(),
        _ => (0..6).collect(),
    };
    for seed in seeds {
        if let Err(e) = run(seed) {
            panic!("seed {seed}: {e}\n  replay with CALM_SIM_SEED={seed}");
        }
    }
}
