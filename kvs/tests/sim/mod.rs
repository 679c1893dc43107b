//! The simulation harness every simulated test shares: seeds and their replay, a simulated
//! network (delay, loss, duplication, reordering, partitions, crashed receivers), and nodes
//! made of the real sans-IO cores — a cluster agent, a storage worker on a simulated disk,
//! and the request path ([`BatchRun`]) that the node's QUIC listener and Redis front-end
//! drive — wired to that network. Time is a number passed in; randomness comes from one
//! seeded RNG; so a seed replays exactly.

#![allow(dead_code)]

pub mod history;

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use calm_kvs::cluster::{ClusterAgent, ClusterConfig, PeerEnvelope, PeerReply};
use calm_kvs::coordinator::{Outcome, Target};
use calm_kvs::protocol::{Ack, Op, OpError, OpResult, Route};
use calm_kvs::request::{Action, BatchRun};
use calm_kvs::storage::{Durability, MemDisk, Quota, Quotas, StorageConfig, Tiered};
use calm_kvs::{HashRing, Worker, WorkerConfig};
use calm_lattice::ReplicaId;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The seeds to run: `CALM_SIM_SEED=N` replays one, `CALM_SIM_SEEDS=N` runs `0..N`, else
/// `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("CALM_SIM_SEED") {
        return vec![s.parse().expect("CALM_SIM_SEED is a number")];
    }
    let n = std::env::var("CALM_SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("CALM_SIM_SEEDS is a number"))
        .unwrap_or(default);
    (0..n).collect()
}

/// Runs `run` for every seed of [`seeds`]; the first failure panics with its seed and the
/// command that replays it.
pub fn run_seeds(test: &str, default: u64, run: impl Fn(u64) -> Result<(), String>) {
    for seed in seeds(default) {
        if let Err(e) = run(seed) {
            panic!(
                "simulation failed with seed {seed}: {e}\nreplay: CALM_SIM_SEED={seed} cargo test -p calm-kvs --test {test}"
            );
        }
    }
}

/// A seeded RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// What a faulty network does to a message.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Chance a message is lost.
    pub loss: f64,
    /// Chance a message arrives twice (the copy a little later).
    pub duplicate: f64,
    /// Delay, milliseconds.
    pub delay: Range<u64>,
}

struct InFlight<M> {
    at: u64,
    from: usize,
    to: usize,
    to_epoch: u32,
    msg: M,
}

/// A message arriving.
pub struct Delivery<M> {
    /// The sender.
    pub from: usize,
    /// The receiver.
    pub to: usize,
    /// The receiver's incarnation it was sent to (a restarted receiver never gets it).
    pub to_epoch: u32,
    /// The message.
    pub msg: M,
}

/// A simulated network between endpoints `0..n`.
pub struct Network<M> {
    in_flight: Vec<InFlight<M>>,
    /// Faults in force (`None`: delay only, within `calm`).
    pub faults: Option<Faults>,
    /// Delay when no fault is in force, milliseconds.
    pub calm: Range<u64>,
    cut: HashSet<(usize, usize)>,
    /// Which messages a fault may deliver twice (datagrams: a request on a QUIC stream
    /// arrives once or the stream fails).
    pub may_duplicate: fn(&M) -> bool,
}

impl<M: Clone> Network<M> {
    /// A network that delivers within `calm` milliseconds.
    pub fn new(calm: Range<u64>) -> Self {
        Network {
            in_flight: Vec::new(),
            faults: None,
            calm,
            cut: HashSet::new(),
            may_duplicate: |_| true,
        }
    }

    /// Whether `a` and `b` can talk (no partition between them).
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Cuts every link between `side` and the endpoints `0..n` not in it.
    pub fn partition(&mut self, side: &[usize], n: usize) {
        for &a in side {
            for b in (0..n).filter(|b| !side.contains(b)) {
                self.cut.insert((a, b));
            }
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Sends `msg`: lost when cut off, or by the faults in force; else delayed, maybe
    /// duplicated.
    pub fn send(
        &mut self,
        rng: &mut StdRng,
        now: u64,
        from: usize,
        to: usize,
        to_epoch: u32,
        msg: M,
    ) {
        if !self.reachable(from, to) {
            return;
        }
        let delay = match self.faults.clone() {
            Some(f) => {
                if rng.random_bool(f.loss) {
                    return;
                }
                if (self.may_duplicate)(&msg) && rng.random_bool(f.duplicate) {
                    let at = now + rng.random_range(f.delay.clone()) + rng.random_range(1..50);
                    self.push(at, from, to, to_epoch, msg.clone());
                }
                rng.random_range(f.delay)
            }
            None => rng.random_range(self.calm.clone()),
        };
        self.push(now + delay, from, to, to_epoch, msg);
    }

    fn push(&mut self, at: u64, from: usize, to: usize, to_epoch: u32, msg: M) {
        self.in_flight.push(InFlight {
            at,
            from,
            to,
            to_epoch,
            msg,
        });
    }

    /// Forgets what `from` sent and has not arrived (it crashed: its send buffers are gone).
    pub fn forget_from(&mut self, from: usize) {
        self.in_flight.retain(|m| m.from != from);
    }

    /// What is due by `now`, in a random order.
    pub fn due(&mut self, rng: &mut StdRng, now: u64) -> Vec<Delivery<M>> {
        let (due, later): (Vec<InFlight<M>>, Vec<InFlight<M>>) =
            std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|m| m.at <= now);
        self.in_flight = later;
        let mut due = due;
        let mut out = Vec::with_capacity(due.len());
        while !due.is_empty() {
            let m = due.swap_remove(rng.random_range(0..due.len()));
            out.push(Delivery {
                from: m.from,
                to: m.to,
                to_epoch: m.to_epoch,
                msg: m.msg,
            });
        }
        out
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}

/// What nodes (and clients) send each other.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A cluster agent's message.
    Peer { id: u64, envelope: PeerEnvelope },
    /// Its answer.
    PeerReply { id: u64, reply: PeerReply },
    /// A batch of operations, as a client or another node sends it.
    Batch {
        id: u64,
        ops: Vec<Op>,
        ack: Ack,
        route: Route,
    },
    /// The answer to a batch.
    Results { id: u64, results: Vec<OpResult> },
}

impl Msg {
    /// Whether a fault may deliver it twice: the agents' messages (their merges are
    /// idempotent, and the simulation checks so); a batch and its answer travel on a
    /// stream, which delivers them once or fails.
    pub fn may_duplicate(&self) -> bool {
        matches!(self, Msg::Peer { .. } | Msg::PeerReply { .. })
    }
}

/// How long a node waits for another node's answer before it counts as maybe sent.
pub const NODE_TIMEOUT: u64 = 1_000;

/// Node `i`'s address.
pub fn addr(i: usize) -> String {
    format!("n{i}")
}

/// The endpoint of address `a`.
pub fn index(a: &str) -> usize {
    a.trim_start_matches('n')
        .parse()
        .expect("sim addresses are n0..nN")
}

/// How a node stores its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: a crash loses everything.
    Memory,
    /// On a simulated disk with durability `sync`, a tiny memory budget (keys move between
    /// memory and disk all the time) and frequent checkpoints; a crash loses what was not
    /// synced and may leave a torn log tail.
    Disk,
}

/// A batch this node runs, and who gets the answer.
struct Running {
    run: BatchRun,
    reply_to: (usize, u64),
}

/// What a node waits for from another node.
enum Wait {
    Forward { run: u64, group: u64 },
    Inspect { run: u64, ticket: u64 },
}

/// One simulated node: the real cluster agent, storage worker and request path.
pub struct Node {
    /// Its endpoint.
    pub index: usize,
    pub agent: ClusterAgent,
    pub store: Worker,
    pub up: bool,
    /// Bumped on every restart; messages addressed to an older epoch are lost.
    pub epoch: u32,
    /// When it crashed.
    pub crashed_at: Vec<u64>,
    /// Its disk, which survives its crashes.
    pub disk: Option<MemDisk>,
    /// Every write it ran for a client: (time, key, what was asked).
    pub ran: Vec<(u64, bytes::Bytes, calm_kvs::Write)>,
    /// Leaving gracefully: since when, and whether it has announced the leave (then it
    /// owns nothing, hands over once more, and goes once that is acknowledged).
    pub leaving: Option<(u64, bool)>,
    config: ClusterConfig,
    runs: BTreeMap<u64, Running>,
    next_run: u64,
    next_msg: u64,
    /// Batches sent to other nodes: message id → (what for, when it counts as lost, to).
    waits: BTreeMap<u64, (Wait, u64)>,
    /// Agent messages not yet answered: id → when they count as failed.
    agent_waits: BTreeMap<u64, u64>,
    /// Replications the agent runs for batches: agent ticket → (run, batch ticket).
    replicating: BTreeMap<u64, (u64, u64)>,
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
    w.count_quotas(Quotas::new(quotas()))
        .expect("a memory disk always reads");
    w
}

/// The simulated nodes' quotas: at most 3 keys starting with "key1" (of 7), and 200 bytes
/// for "key4" (a set that grows by a member with every write), so that some writes are
/// refused, while replicas merge what other nodes admitted and keys move between nodes.
pub fn quotas() -> Vec<Quota> {
    vec![
        Quota {
            prefix: "key1".into(),
            keys: Some(3),
            bytes: None,
        },
        Quota {
            prefix: "key4".into(),
            keys: None,
            bytes: Some(200),
        },
    ]
}

impl Node {
    /// Checks the node's quota figures against what it holds, if it is up.
    pub fn audit_quotas(&mut self) -> Result<(), String> {
        if !self.up {
            return Ok(());
        }
        let counted = self.store.audit_quotas()?;
        let usage: Vec<(u64, u64)> = (self.store.quota_usage().iter())
            .map(|u| (u.keys, u.bytes))
            .collect();
        if counted != usage {
            return Err(format!(
                "node {}: quota figures {usage:?}, but its keys add up to {counted:?}",
                self.index
            ));
        }
        Ok(())
    }
}

impl Node {
    /// Starts node `i` at `now`, joining through `seeds`.
    pub fn start(
        i: usize,
        seeds: Vec<String>,
        config: ClusterConfig,
        storage: Storage,
        now: u64,
        rng: &mut StdRng,
    ) -> Node {
        let disk = (storage == Storage::Disk).then(MemDisk::new);
        Node {
            index: i,
            agent: ClusterAgent::new(addr(i), seeds, config, now.max(1), rng.random()),
            store: new_store(i, 0, disk.as_ref()),
            up: true,
            epoch: 0,
            crashed_at: Vec::new(),
            disk,
            ran: Vec::new(),
            leaving: None,
            config,
            runs: BTreeMap::new(),
            next_run: 1,
            next_msg: 1,
            waits: BTreeMap::new(),
            agent_waits: BTreeMap::new(),
            replicating: BTreeMap::new(),
        }
    }

    /// `kill -9`: everything in memory is gone, and part of an unsynced write may have
    /// reached the disk (a torn tail).
    pub fn crash<M: Clone>(&mut self, now: u64, net: &mut Network<M>, rng: &mut StdRng) {
        net.forget_from(self.index);
        self.up = false;
        self.crashed_at.push(now);
        self.runs.clear();
        self.waits.clear();
        self.agent_waits.clear();
        self.replicating.clear();
        if let Some(disk) = &self.disk {
            disk.crash(rng.random_range(0..64));
        }
    }

    /// Starts again from its disk (or empty), joining through `seeds`.
    pub fn restart(&mut self, seeds: Vec<String>, now: u64, rng: &mut StdRng) {
        self.epoch += 1;
        self.store = new_store(self.index, self.epoch, self.disk.as_ref());
        self.agent = ClusterAgent::new(addr(self.index), seeds, self.config, now, rng.random());
        self.up = true;
    }

    /// Starts a graceful leave (what an operator's `calm leave` or the autoscaler's
    /// give-back does): hands every key it holds to the keys' next owners; [`tick`](Self::tick)
    /// announces the leave once they acknowledged (or after 5 s), hands over what was written
    /// meanwhile, and stops the node once that is acknowledged too.
    pub fn begin_leave(&mut self, now: u64) {
        self.hand_over_everything(now);
        self.leaving = Some((now, false));
    }

    fn hand_over_everything(&mut self, now: u64) {
        use calm_kvs::cluster::LocalStore;
        let everything = self.agent.everything();
        let buckets = self.store.digest(&everything).into_keys().collect();
        let entries = self.store.entries_in(&everything, &buckets, usize::MAX);
        self.agent.hand_over(now, entries);
    }

    /// Whether it is leaving or gone after a leave.
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }

    /// Starts a batch received from endpoint `from` (a client or a node) as request `id`.
    #[allow(clippy::too_many_arguments)]
    pub fn receive_batch(
        nodes: &mut [Node],
        i: usize,
        from: usize,
        id: u64,
        ops: Vec<Op>,
        ack: Ack,
        route: Route,
        cx: &mut Cx<'_>,
    ) {
        let n = &mut nodes[i];
        let view = n.agent.view();
        let run = BatchRun::new(ops, ack, route, Some(&view));
        let r = n.next_run;
        n.next_run += 1;
        n.runs.insert(
            r,
            Running {
                run,
                reply_to: (from, id),
            },
        );
        Node::drive(nodes, i, r, cx);
    }

    /// Does what run `r` asks until it waits for something; answers it when done.
    fn drive(nodes: &mut [Node], i: usize, r: u64, cx: &mut Cx<'_>) {
        let ups: Vec<(bool, u32)> = nodes.iter().map(|n| (n.up, n.epoch)).collect();
        let n = &mut nodes[i];
        loop {
            let Some(running) = n.runs.get_mut(&r) else {
                return;
            };
            let Some(action) = running.run.poll_action() else {
                break;
            };
            let now = cx.now;
            match action {
                Action::Run { group, ops } => {
                    for op in &ops {
                        if let Op::Write { key, write } = op {
                            n.ran.push((now, key.clone(), write.clone()));
                        }
                    }
                    let mut results = n.store.handle_ops(now, ops);
                    if let Err(e) = n.store.commit(now) {
                        for r in results.iter_mut().filter(|r| r.is_ok()) {
                            *r = Err(OpError::Storage {
                                reason: e.to_string(),
                            });
                        }
                    }
                    let changes = n.store.take_changes();
                    for (k, d) in &changes {
                        (cx.on_applied)(k, d);
                    }
                    let view = n.agent.view();
                    if let Some(running) = n.runs.get_mut(&r) {
                        running
                            .run
                            .ran(group, Ok((results, changes)), Some(&view), now);
                    }
                }
                Action::Forward {
                    group,
                    to,
                    ops,
                    ack,
                } => {
                    let wait = Wait::Forward { run: r, group };
                    let sent = Outbox {
                        next_msg: &mut n.next_msg,
                        waits: &mut n.waits,
                        from: i,
                        ups: &ups,
                    }
                    .send(index(&to), wait, ops, ack, cx);
                    if !sent {
                        let view = n.agent.view();
                        running.run.forwarded(group, Outcome::NotSent, Some(&view));
                    }
                }
                Action::Gossip(changes) => n.agent.on_local_changes(changes),
                Action::Replicate {
                    ticket,
                    changes,
                    need,
                } => {
                    let t = n.agent.replicate(changes, need);
                    n.replicating.insert(t, (r, ticket));
                }
                Action::Inspect { ticket, at, key } => {
                    let raw = Op::Raw { key };
                    match at {
                        Target::Here => {
                            let answer = n.store.handle_ops(now, [raw]).pop();
                            let view = n.agent.view();
                            running.run.inspected(ticket, answer, Some(&view), now);
                        }
                        Target::Node(a) => {
                            let wait = Wait::Inspect { run: r, ticket };
                            let sent = Outbox {
                                next_msg: &mut n.next_msg,
                                waits: &mut n.waits,
                                from: i,
                                ups: &ups,
                            }
                            .send(
                                index(&a),
                                wait,
                                vec![raw],
                                Ack::One,
                                cx,
                            );
                            if !sent {
                                let view = n.agent.view();
                                running.run.inspected(ticket, None, Some(&view), now);
                            }
                        }
                    }
                }
            }
        }
        if n.runs.get(&r).is_some_and(|x| x.run.is_done()) {
            let done = n.runs.remove(&r).expect("present");
            let (to, id) = done.reply_to;
            let results = done.run.into_results();
            let epoch = ups.get(to).map_or(0, |u| u.1);
            cx.net
                .send(cx.rng, cx.now, i, to, epoch, Msg::Results { id, results });
        }
    }

    /// An answer from another node to batch message `id`: `None` when it counts as lost.
    fn answered(
        nodes: &mut [Node],
        i: usize,
        id: u64,
        results: Option<Vec<OpResult>>,
        cx: &mut Cx<'_>,
    ) {
        let n = &mut nodes[i];
        let Some((wait, _)) = n.waits.remove(&id) else {
            return; // late, or a duplicate
        };
        let view = n.agent.view();
        let r = match wait {
            Wait::Forward { run, group } => {
                let outcome = match results {
                    Some(r) => Outcome::Answered(r),
                    None => Outcome::MaybeSent,
                };
                if let Some(running) = n.runs.get_mut(&run) {
                    running.run.forwarded(group, outcome, Some(&view));
                }
                run
            }
            Wait::Inspect { run, ticket } => {
                let answer = results.and_then(|mut r| r.pop());
                if let Some(running) = n.runs.get_mut(&run) {
                    running.run.inspected(ticket, answer, Some(&view), cx.now);
                }
                run
            }
        };
        Node::drive(nodes, i, r, cx);
    }

    /// Delivers a message to node `d.to`.
    pub fn deliver(nodes: &mut [Node], d: Delivery<Msg>, cx: &mut Cx<'_>) {
        let i = d.to;
        let n = &mut nodes[i];
        if !n.up || n.epoch != d.to_epoch {
            return;
        }
        match d.msg {
            Msg::Peer { id, envelope } => {
                let reply = n.agent.handle_request(cx.now, envelope, &mut n.store);
                let _ = n.store.commit(cx.now);
                let epoch = nodes.get(d.from).map_or(0, |f| f.epoch);
                cx.net.send(
                    cx.rng,
                    cx.now,
                    i,
                    d.from,
                    epoch,
                    Msg::PeerReply { id, reply },
                );
            }
            Msg::PeerReply { id, reply } => {
                if n.agent_waits.remove(&id).is_some() {
                    n.agent
                        .handle_reply(cx.now, id, &addr(d.from), reply, &mut n.store);
                    let _ = n.store.commit(cx.now);
                }
            }
            Msg::Batch {
                id,
                ops,
                ack,
                route,
            } => Node::receive_batch(nodes, i, d.from, id, ops, ack, route, cx),
            Msg::Results { id, results } => Node::answered(nodes, i, id, Some(results), cx),
        }
    }

    /// A step of node `i`'s time: its agent's and worker's ticks, answers that are late,
    /// replications that finished, and the agent's messages.
    pub fn tick(nodes: &mut [Node], i: usize, cx: &mut Cx<'_>) {
        if !nodes[i].up {
            return;
        }
        let now = cx.now;
        let late: Vec<u64> = nodes[i]
            .waits
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            Node::answered(nodes, i, id, None, cx);
        }
        let n = &mut nodes[i];
        let failed: Vec<u64> = n
            .agent_waits
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            n.agent_waits.remove(&id);
            n.agent.handle_failure(id);
        }
        n.agent.handle_tick(now, &mut n.store);
        n.store.handle_tick(now);
        // What the node merged from its peers reaches the disk too.
        let _ = n.store.commit(now);
        let mut gone = false;
        if let Some((since, announced)) = n.leaving {
            n.agent.resend_hand_over(now, 200);
            let handed = n.agent.handing_over() == 0 || now - since > 5_000;
            if handed && !announced {
                // Announce, then hand over what was written meanwhile.
                n.agent.leave();
                n.hand_over_everything(now);
                n.leaving = Some((now, true));
            } else if handed {
                gone = true;
            }
        }
        Node::flush(nodes, i, cx);
        if gone {
            // Its last messages went out; now it is gone.
            nodes[i].up = false;
        }
    }

    /// Sends the agent's messages and hands finished replications to their batches.
    pub fn flush(nodes: &mut [Node], i: usize, cx: &mut Cx<'_>) {
        let ups: Vec<(bool, u32)> = nodes.iter().map(|n| (n.up, n.epoch)).collect();
        let n = &mut nodes[i];
        if !n.up {
            return;
        }
        while let Some(out) = n.agent.poll_outgoing() {
            let to = index(&out.to);
            if to >= ups.len() || !ups[to].0 || !cx.net.reachable(i, to) {
                // The connection is refused at once.
                n.agent.handle_failure(out.id);
                continue;
            }
            n.agent_waits.insert(out.id, cx.now + 2 * NODE_TIMEOUT);
            let msg = Msg::Peer {
                id: out.id,
                envelope: out.envelope,
            };
            cx.net.send(cx.rng, cx.now, i, to, ups[to].1, msg);
        }
        let mut finished = Vec::new();
        while let Some((t, outcome)) = n.agent.poll_replicated() {
            if let Some((r, ticket)) = n.replicating.remove(&t) {
                let result = outcome.map_err(|(reached, wanted)| OpError::ReplicationIncomplete {
                    reached,
                    wanted,
                });
                let view = n.agent.view();
                if let Some(running) = n.runs.get_mut(&r) {
                    running.run.replicated(ticket, result, Some(&view), cx.now);
                }
                finished.push(r);
            }
        }
        for r in finished {
            Node::drive(nodes, i, r, cx);
        }
        // Driving may have queued more agent messages (gossip of ack-one writes is queued
        // by the agent itself and sent on its next tick).
    }
}

/// Where a node sends batches to other nodes from.
struct Outbox<'a> {
    next_msg: &'a mut u64,
    waits: &'a mut BTreeMap<u64, (Wait, u64)>,
    from: usize,
    /// Every node's (up, epoch).
    ups: &'a [(bool, u32)],
}

impl Outbox<'_> {
    /// Sends `ops` to node `to` as a forwarded batch awaited as `wait`; false when `to`
    /// cannot be reached (the connection is refused: certainly not sent).
    fn send(&mut self, to: usize, wait: Wait, ops: Vec<Op>, ack: Ack, cx: &mut Cx<'_>) -> bool {
        if !self.ups[to].0 || !cx.net.reachable(self.from, to) {
            return false;
        }
        let id = *self.next_msg;
        *self.next_msg += 1;
        self.waits.insert(id, (wait, cx.now + NODE_TIMEOUT));
        let msg = Msg::Batch {
            id,
            ops,
            ack,
            route: Route::Forwarded,
        };
        cx.net
            .send(cx.rng, cx.now, self.from, to, self.ups[to].1, msg);
        true
    }
}

/// What a node needs from the world while it handles something.
pub struct Cx<'a> {
    pub now: u64,
    pub net: &'a mut Network<Msg>,
    pub rng: &'a mut StdRng,
    /// Told of every delta a node's workers applied for a client.
    pub on_applied: &'a mut dyn FnMut(&bytes::Bytes, &calm_kvs::Value),
}
