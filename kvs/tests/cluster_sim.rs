//! Deterministic simulation of a whole cluster: the real sans-IO cores (cluster agents and
//! storage workers) wired through a simulated network and clock driven by one seeded RNG.
//!
//! Faults: message loss, duplication, reordering and delay; a partition that heals; nodes
//! that crash and restart, often after the others declared them dead (so keys move to
//! other owners, and back). Odd seeds run the nodes in memory (a crash loses everything
//! the node held); even seeds give each node a disk with durability `sync`, a tiny memory
//! budget (keys move between memory and disk all the time) and frequent checkpoints, and a
//! crash loses what was not synced, leaving a torn log tail. Clients write throughout, with
//! ack `one` or `all`, and in a burst through a node right after its view of the ring
//! changes; each write goes through the request coordinator of a random node (the rules a
//! node follows: here if it owns the key, else a live owner, the next owner when one is down
//! or cut off, a hint when none answers, `Timeout` — never a second run — when a request or
//! its answer is lost). After the faults stop and the cluster is quiet, for every key:
//!
//! - every owner holds the same value (convergence);
//! - that value contains every acknowledged write that must survive: all `all` writes, and
//!   every `one` write, except, in memory, one whose acknowledging node crashed afterwards —
//!   checked twice: as lattice states (the write's delta is contained), and as a client
//!   reads them (every acknowledged member is there; a counter is at least the sum of its
//!   acknowledged increments) — the second catches a write lost while its dot looks seen;
//! - it contains nothing that was never written (no member nobody added, no counter above
//!   the sum of every increment attempted).
//!
//! `cargo test -p calm-kvs --test cluster_sim` runs 200 seeds. A failure prints its seed;
//! `CALM_SIM_SEED=N` replays one seed and `CALM_SIM_SEEDS=N` runs N seeds.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use calm_kvs::cluster::Status;
use calm_kvs::cluster::{ClusterAgent, ClusterConfig, LocalStore, PeerEnvelope, PeerReply};
use calm_kvs::coordinator::{Coordinator, Outcome, Target, candidates};
use calm_kvs::storage::{Durability, MemDisk, StorageConfig, Tiered};
use calm_kvs::{HashRing, Op, OpError, ReadValue, Reply, Value, Worker, WorkerConfig, Write};
use calm_lattice::ReplicaId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 4;
const KEYS: usize = 16;
const STEP_MS: u64 = 10;
const FAULTS_FROM: u64 = 2_000;
const FAULTS_UNTIL: u64 = 14_000;
const END: u64 = 26_000;

fn config() -> ClusterConfig {
    ClusterConfig {
        replication: 2,
        gossip_period_ms: 100,
        anti_entropy_period_ms: 300,
        probe_period_ms: 200,
        probe_timeout_ms: 400,
        suspect_timeout_ms: 1_500,
        repair_batch: 64,
    }
}

struct SimNode {
    agent: ClusterAgent,
    store: Worker,
    up: bool,
    /// Bumped on every restart; messages addressed to an older epoch are lost.
    epoch: u32,
    crashed_at: Vec<u64>,
    /// The node's disk, which survives its crashes (in durable runs).
    disk: Option<MemDisk>,
}

fn new_store(i: usize, epoch: u32, disk: Option<&MemDisk>) -> Worker {
    let ring = Arc::new(HashRing::new([0], 1));
    // Replica ids differ per node and per restart, as they do for a new process.
    let replica = ReplicaId(((i as u64) << 32) | u64::from(epoch));
    let store = match disk {
        None => Tiered::memory(),
        Some(disk) => {
            let config = StorageConfig {
                durability: Durability::Sync,
                memory_budget: Some(300),
                checkpoint_log_bytes: 4096,
                ..StorageConfig::default()
            };
            Tiered::open(Box::new(disk.clone()), config, Some(300))
                .expect("a memory disk always opens")
                .0
        }
    };
    let mut w = Worker::with_store(0, replica, ring, WorkerConfig::default(), store);
    w.collect_changes();
    w
}

fn new_agent(i: usize, now: u64, rng: &mut StdRng) -> ClusterAgent {
    let seeds = if i == 0 {
        vec![]
    } else {
        vec!["n0".to_string()]
    };
    ClusterAgent::new(format!("n{i}"), seeds, config(), now.max(1), rng.random())
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

struct InFlight {
    at: u64,
    to_epoch: u32,
    msg: Msg,
}

struct Network {
    in_flight: Vec<InFlight>,
    faulty: bool,
    cut: HashSet<(usize, usize)>,
}

impl Network {
    fn reachable(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    fn send(&mut self, rng: &mut StdRng, now: u64, to_epoch: u32, msg: Msg) {
        let (from, to) = match &msg {
            Msg::Request { from, to, .. } | Msg::Reply { from, to, .. } => (*from, *to),
        };
        if !self.reachable(from, to) {
            return;
        }
        let delay = if self.faulty {
            if rng.random_bool(0.1) {
                return; // lost
            }
            if rng.random_bool(0.05) {
                // duplicated, the copy arriving a little later
                let copy = clone_msg(&msg);
                self.push(now + rng.random_range(1..100), to_epoch, copy);
            }
            rng.random_range(1..80)
        } else {
            rng.random_range(1..5)
        };
        self.push(now + delay, to_epoch, msg);
    }

    fn push(&mut self, at: u64, to_epoch: u32, msg: Msg) {
        self.in_flight.push(InFlight { at, to_epoch, msg });
    }
}

fn clone_msg(m: &Msg) -> Msg {
    match m {
        Msg::Request {
            id,
            from,
            to,
            envelope,
        } => Msg::Request {
            id: *id,
            from: *from,
            to: *to,
            envelope: envelope.clone(),
        },
        Msg::Reply {
            id,
            from,
            to,
            reply,
        } => Msg::Reply {
            id: *id,
            from: *from,
            to: *to,
            reply: reply.clone(),
        },
    }
}

fn index(addr: &str) -> usize {
    addr.trim_start_matches('n')
        .parse()
        .expect("sim addresses are n0..nN")
}

/// `a` is contained in `b`: merging `a` into `b` changes nothing.
fn contained(a: &Value, b: &Value) -> bool {
    let mut x = b.clone();
    x.merge(a.clone()) == Ok(false)
}

struct Acked {
    key: Bytes,
    delta: Value,
    /// What the client asked (the delta of a counter is its whole state, not the increment).
    write: Write,
    /// Acknowledged with `all` (else `one`).
    all: bool,
    target: usize,
    at: u64,
}

fn flush(nodes: &mut [SimNode], net: &mut Network, rng: &mut StdRng, now: u64) {
    for i in 0..nodes.len() {
        if !nodes[i].up {
            continue;
        }
        while let Some(out) = nodes[i].agent.poll_outgoing() {
            let to = index(&out.to);
            let epoch = nodes[to].epoch;
            net.send(
                rng,
                now,
                epoch,
                Msg::Request {
                    id: out.id,
                    from: i,
                    to,
                    envelope: out.envelope,
                },
            );
        }
    }
}

fn run(seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let durable = seed.is_multiple_of(2);
    let mut nodes: Vec<SimNode> = (0..NODES)
        .map(|i| {
            let disk = durable.then(MemDisk::new);
            SimNode {
                agent: new_agent(i, 1, &mut rng),
                store: new_store(i, 0, disk.as_ref()),
                up: true,
                epoch: 0,
                crashed_at: Vec::new(),
                disk,
            }
        })
        .collect();
    let mut net = Network {
        in_flight: Vec::new(),
        faulty: false,
        cut: HashSet::new(),
    };
    let mut ledger = Ledger::default();
    let mut rings: Vec<Vec<u32>> = vec![Vec::new(); NODES];

    // Crashes of different nodes, one after the other — two with disks, one in memory (two
    // crashes in memory can take both copies of a write before anti-entropy made a third) —
    // and one partition, at random times inside the fault window. A crashed node stays down for 0.5 to 4 s: often long
    // enough to be declared dead (about 2 s), so its keys move to other owners and move
    // back when it returns — and a node that handed a key off may get it back.
    // Steps fall at 1, 1 + STEP_MS, ...: events are put on steps so they happen.
    let step = |t: u64| t / STEP_MS * STEP_MS + 1;
    let first = rng.random_range(0..NODES);
    let second = (first + rng.random_range(1..NODES)) % NODES;
    let mut crashes: Vec<(usize, u64, u64)> = Vec::new();
    let mut from = FAULTS_FROM;
    for node in [first, second]
        .into_iter()
        .take(if durable { 2 } else { 1 })
    {
        let at = step(rng.random_range(from..from + 2_000));
        let back = at + rng.random_range(500..4_000) / STEP_MS * STEP_MS;
        crashes.push((node, at, back));
        from = back + 500;
    }
    let cut_at = step(rng.random_range(FAULTS_FROM..FAULTS_UNTIL - 2_000));
    let heal_at = cut_at + rng.random_range(300..2_000) / STEP_MS * STEP_MS;
    let side: Vec<usize> = (0..NODES).filter(|_| rng.random_bool(0.5)).collect();

    let mut now = 1;
    while now <= END {
        net.faulty = (FAULTS_FROM..FAULTS_UNTIL).contains(&now);
        if now == cut_at {
            for &a in &side {
                for b in (0..NODES).filter(|b| !side.contains(b)) {
                    net.cut.insert((a, b));
                }
            }
        }
        if now == heal_at {
            net.cut.clear();
        }
        for &(crash_node, _, _) in crashes.iter().filter(|c| c.1 == now) {
            // Just before it crashes, the node acknowledges writes (ack `one`) to every key
            // it leads, and its deltas to the other owners never leave it.
            for k in 0..KEYS {
                let key = format!("key{k}");
                if nodes[crash_node].agent.owners(key.as_bytes()).first()
                    == Some(&format!("n{crash_node}"))
                {
                    client_write(
                        &mut nodes,
                        &net,
                        &mut rng,
                        now,
                        crash_node,
                        &mut ledger,
                        Some(k),
                    );
                }
            }
            net.in_flight.retain(|m| !matches!(m.msg, Msg::Request { from, .. } | Msg::Reply { from, .. } if from == crash_node));
            nodes[crash_node].up = false;
            nodes[crash_node].crashed_at.push(now);
            if let Some(disk) = &nodes[crash_node].disk {
                // Part of an unsynced write may have reached the disk: a torn tail.
                disk.crash(rng.random_range(0..64));
            }
        }
        for &(crash_node, _, _) in crashes.iter().filter(|c| c.2 == now) {
            let n = &mut nodes[crash_node];
            n.epoch += 1;
            n.store = new_store(crash_node, n.epoch, n.disk.as_ref());
            n.agent = new_agent(crash_node, now, &mut rng);
            n.up = true;
        }

        // Deliver what is due, in a random order among equals.
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut net.in_flight)
            .into_iter()
            .partition(|m| m.at <= now);
        net.in_flight = later;
        let mut due = due;
        while !due.is_empty() {
            let m = due.swap_remove(rng.random_range(0..due.len()));
            match m.msg {
                Msg::Request {
                    id,
                    from,
                    to,
                    envelope,
                } => {
                    let n = &mut nodes[to];
                    if !n.up || n.epoch != m.to_epoch {
                        continue;
                    }
                    let reply = n.agent.handle_request(now, envelope, &mut n.store);
                    let epoch = nodes[from].epoch;
                    net.send(
                        &mut rng,
                        now,
                        epoch,
                        Msg::Reply {
                            id,
                            from: to,
                            to: from,
                            reply,
                        },
                    );
                }
                Msg::Reply {
                    id,
                    from,
                    to,
                    reply,
                } => {
                    let n = &mut nodes[to];
                    if !n.up || n.epoch != m.to_epoch {
                        continue;
                    }
                    let from_addr = format!("n{from}");
                    n.agent
                        .handle_reply(now, id, &from_addr, reply, &mut n.store);
                }
            }
        }

        // Clients write until the faults stop.
        if now < FAULTS_UNTIL && rng.random_bool(0.3) {
            let c = rng.random_range(0..NODES);
            if nodes[c].up {
                client_write(&mut nodes, &net, &mut rng, now, c, &mut ledger, None);
            }
        }

        // Right after a node's view of the ring changes (a death, a return, a join), clients
        // write every key it now leads through it: the moment its new keys may not have
        // reached it yet, when busy clients do write.
        for c in 0..NODES {
            let ring: Vec<u32> = nodes[c].agent.ring().2.into_keys().collect();
            if ring != rings[c] {
                rings[c] = ring;
                if nodes[c].up && now < FAULTS_UNTIL {
                    for k in 0..KEYS {
                        let key = format!("key{k}");
                        if nodes[c].agent.owners(key.as_bytes()).first() == Some(&format!("n{c}")) {
                            client_write(&mut nodes, &net, &mut rng, now, c, &mut ledger, Some(k));
                        }
                    }
                }
            }
        }

        for n in nodes.iter_mut().filter(|n| n.up) {
            n.agent.handle_tick(now, &mut n.store);
            n.store.handle_tick(now);
            // What the node merged from its peers reaches the disk too.
            let _ = n.store.commit(now);
        }
        flush(&mut nodes, &mut net, &mut rng, now);
        now += STEP_MS;
    }

    // Every node must agree on the owners, and every owner on the value.
    let views: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            n.agent
                .members()
                .into_iter()
                .filter(|m| m.status.owns_keys())
                .map(|m| m.addr)
                .collect()
        })
        .collect();
    if views.iter().any(|v| *v != views[0]) {
        return Err(format!("membership views differ after quiet: {views:?}"));
    }
    for (key, everything) in &ledger.attempted {
        let owners = nodes[0].agent.owners(key);
        let values: Vec<Option<Value>> = owners
            .iter()
            .map(|o| nodes[index(o)].store.value(key))
            .collect();
        let first = values[0]
            .clone()
            .ok_or_else(|| format!("owner {} lacks key {key:?}", owners[0]))?;
        let first = &first;
        for (o, v) in owners.iter().zip(&values) {
            if v.as_ref() != Some(first) {
                return Err(format!(
                    "key {key:?}: owners disagree: {} has {v:?}, {} has {first:?}",
                    o, owners[0]
                ));
            }
        }
        if !contained(first, everything) {
            return Err(format!(
                "key {key:?} holds something never written: {first:?}"
            ));
        }
        // What a client reads: every acknowledged member there, a counter at least the sum
        // of its acknowledged increments — whatever the dots say (a write can be lost while
        // its dot looks seen: a replica that reuses a dot has its new write taken for an old
        // one), and nothing nobody asked for.
        let read = first.read(false);
        let (mut must_sum, mut must_members) = (0i128, Vec::new());
        for a in ledger.acked.iter().filter(|a| a.key == *key) {
            let crashed_after = nodes[a.target].crashed_at.iter().any(|&t| t >= a.at);
            if !a.all && crashed_after && !durable {
                continue;
            }
            match &a.write {
                Write::Increment(by) => must_sum += i128::from(*by),
                Write::OrSetAdd(ms) => must_members.extend(ms.iter().cloned()),
                _ => {}
            }
        }
        match &read {
            Some(ReadValue::Counter { value }) => {
                let most = ledger.asked.sums.get(key).copied().unwrap_or(0);
                if *value < must_sum || *value > most {
                    return Err(format!(
                        "key {key:?}: counter {value}, acknowledged {must_sum}, attempted {most}"
                    ));
                }
            }
            Some(ReadValue::OrSet { members }) => {
                if let Some(m) = must_members.iter().find(|m| !members.contains(m)) {
                    return Err(format!(
                        "key {key:?}: acknowledged member {m:?} missing from {members:?}"
                    ));
                }
                let asked = ledger.asked.members.get(key);
                if let Some(m) = members
                    .iter()
                    .find(|m| !asked.is_some_and(|a| a.contains(*m)))
                {
                    return Err(format!("key {key:?}: member {m:?} was never added"));
                }
            }
            _ => {}
        }
        for a in ledger.acked.iter().filter(|a| a.key == *key) {
            // With ack `one` in memory, only the acknowledging node held the write until
            // gossip; if it crashed afterwards the write may be gone. With a disk it was
            // synced before the ack. Everything else must be there.
            let crashed_after = nodes[a.target].crashed_at.iter().any(|&t| t >= a.at);
            if !a.all && crashed_after && !durable {
                continue;
            }
            if !contained(&a.delta, first) {
                return Err(format!(
                    "key {key:?}: an acknowledged write is missing (acked at {}ms by n{}): {:?}\n  value: {first:?}",
                    a.at, a.target, a.delta
                ));
            }
        }
    }
    Ok(())
}

/// What the clients did: every write applied somewhere (merged per key), the writes
/// acknowledged, and what they asked of each key.
#[derive(Default)]
struct Ledger {
    attempted: BTreeMap<Bytes, Value>,
    acked: Vec<Acked>,
    asked: Attempts,
}

/// What clients asked of each key, whether acknowledged or not.
#[derive(Default)]
struct Attempts {
    sums: BTreeMap<Bytes, i128>,
    members: BTreeMap<Bytes, HashSet<Bytes>>,
}

impl Attempts {
    fn attempt(&mut self, key: &Bytes, write: &Write) {
        match write {
            Write::Increment(by) => *self.sums.entry(key.clone()).or_default() += i128::from(*by),
            Write::OrSetAdd(ms) => self
                .members
                .entry(key.clone())
                .or_default()
                .extend(ms.iter().cloned()),
            _ => {}
        }
    }
}

/// A client's write through node `coordinator`, as a node runs it: the request
/// coordinator picks the target (this node if it owns the key, else an owner it sees alive,
/// else a hint here for ack `one`); a target that is down or cut off is never reached (next
/// owner); during faults a request may be lost on the way (not applied) or its answer lost
/// (applied): either way the coordinator cannot tell, so the write answers `Timeout` and is
/// never run again. Only writes answered `Written` are acknowledged.
fn client_write(
    nodes: &mut [SimNode],
    net: &Network,
    rng: &mut StdRng,
    now: u64,
    coordinator: usize,
    ledger: &mut Ledger,
    only_key: Option<usize>,
) {
    let k = only_key.unwrap_or_else(|| rng.random_range(0..KEYS));
    let key = Bytes::from(format!("key{k}"));
    let write = match k % 3 {
        0 => Write::Increment(rng.random_range(1..5)),
        1 => Write::OrSetAdd(vec![Bytes::from(format!("m{}", rng.random_range(0..4)))]),
        _ => Write::Lww(Bytes::from(format!("v{}", rng.random_range(0..100)))),
    };
    let all = only_key.is_none() && rng.random_bool(0.5);
    // Every request counts towards what clients asked, applied or not.
    ledger.asked.attempt(&key, &write);
    let op = Op::Write {
        key: key.clone(),
        write: write.clone(),
    };
    let mut c: Coordinator<usize> = Coordinator::new(vec![op], 4);
    let view: Vec<(usize, bool)> = nodes[coordinator]
        .agent
        .owners(&key)
        .iter()
        .map(|a| {
            let alive = nodes[coordinator]
                .agent
                .members()
                .iter()
                .any(|m| m.addr == *a && m.status == Status::Alive);
            (index(a), alive)
        })
        .collect();
    loop {
        let sends = c.plan(|_, op| candidates(&coordinator, &view, op, !all, false));
        if sends.is_empty() {
            break;
        }
        for send in sends {
            let target = match send.target {
                Target::Here => coordinator,
                Target::Node(o) => o,
            };
            if target != coordinator && (!nodes[target].up || !net.reachable(coordinator, target)) {
                c.handle(send.id, Outcome::NotSent);
                continue;
            }
            let lost_request = target != coordinator && net.faulty && rng.random_bool(0.05);
            if lost_request {
                c.handle(send.id, Outcome::MaybeSent);
                continue;
            }
            let result = apply(nodes, net, now, target, &key, write.clone(), all, ledger);
            let lost_answer = target != coordinator && net.faulty && rng.random_bool(0.05);
            if lost_answer {
                // Applied (and maybe acknowledged by the target), but the client never
                // hears: not acknowledged.
                if result {
                    ledger.acked.pop();
                }
                c.handle(send.id, Outcome::MaybeSent);
            } else {
                let answer = if result {
                    Ok(Reply::Written)
                } else {
                    Err(OpError::ReplicationIncomplete {
                        reached: 1,
                        wanted: 2,
                    })
                };
                c.handle(send.id, Outcome::Answered(vec![answer]));
            }
        }
        if !c.needs_round() {
            break;
        }
    }
}

/// Runs a client's write on node `target` and replicates it as the ack asks; records it as
/// acknowledged (last in `acked`) and returns true when the client would be told so.
#[allow(clippy::too_many_arguments)]
fn apply(
    nodes: &mut [SimNode],
    net: &Network,
    now: u64,
    target: usize,
    key: &Bytes,
    write: Write,
    all: bool,
    ledger: &mut Ledger,
) -> bool {
    let asked = write.clone();
    let results = nodes[target].store.handle_ops(
        now,
        [Op::Write {
            key: key.clone(),
            write,
        }],
    );
    if results[0].is_err() || nodes[target].store.commit(now).is_err() {
        return false;
    }
    let changes = nodes[target].store.take_changes();
    for (k, d) in &changes {
        ledger
            .attempted
            .entry(k.clone())
            .or_insert_with(|| Value::empty(d.kind()))
            .merge_replicated(d.clone());
    }
    let replicas: Vec<usize> = nodes[target]
        .agent
        .owners(key)
        .iter()
        .map(|a| index(a))
        .filter(|&o| o != target)
        .collect();
    nodes[target].agent.on_local_changes(changes.clone());
    let mut reached_all = true;
    if all {
        // Ack `all`: the deltas are merged on every other owner before the client is told.
        for o in replicas {
            if nodes[o].up && net.reachable(target, o) {
                nodes[o].store.merge_entries(now, changes.clone());
                let _ = nodes[o].store.commit(now);
            } else {
                reached_all = false;
            }
        }
    }
    if all && !reached_all {
        return false; // the client is told the write did not reach every replica
    }
    let Some((k, delta)) = changes.into_iter().next() else {
        return false;
    };
    ledger.acked.push(Acked {
        key: k,
        delta,
        write: asked,
        all,
        target,
        at: now,
    });
    true
}

#[test]
fn acknowledged_writes_survive_faults_and_replicas_converge() {
    let seeds: Vec<u64> = match std::env::var("CALM_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("CALM_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("CALM_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (0..n).collect()
        }
    };
    for seed in seeds {
        if let Err(e) = run(seed) {
            panic!(
                "simulation failed with seed {seed}: {e}\nreplay: CALM_SIM_SEED={seed} cargo test -p calm-kvs --test cluster_sim"
            );
        }
    }
}
