//! How a node runs one batch of operations, as a sans-IO state machine: the node's QUIC
//! listener, its Redis front-end and the simulation all drive this one core.
//!
//! A batch arrives with an acknowledgement level and a [`Route`]. [`BatchRun`] decides, with
//! the [`Coordinator`], where each operation runs (this node's workers, or an owner it is
//! forwarded to), and asks its driver to do the I/O through [`Action`]s:
//!
//! - [`Action::Run`]: run a group on this node's workers; answer with
//!   [`ran`](BatchRun::ran) (the results and the deltas of the writes);
//! - [`Action::Forward`]: send a group to another node, which runs it there; answer with
//!   [`forwarded`](BatchRun::forwarded) and what became of it ([`Outcome`]);
//! - [`Action::Gossip`]: hand the deltas of local writes acknowledged by one replica to the
//!   cluster agent, which replicates them in the background; no answer;
//! - [`Action::Replicate`]: have the owners `need` asks for merge the deltas before the
//!   writes are acknowledged (ack `all`, `replicas` or `visible`); answer with
//!   [`replicated`](BatchRun::replicated);
//! - [`Action::Inspect`]: read one holder's stored copy of a key (for a read merged over
//!   every replica, `GetAll`, and for a key this node misses while it settles after a ring
//!   change); answer with [`inspected`](BatchRun::inspected).
//!
//! A read that finds nothing here while this node [settles](ClusterView::settling) (it
//! started, or the ring changed, a moment ago, and its catch-up may not have brought every
//! key it now owns) is answered by merging the copies of the key's other and previous
//! owners: ownership never answers "not found" ahead of the data.
//!
//! Time comes in as arguments and nothing here does I/O, so a simulation drives it with
//! simulated nodes, network and clock.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::cluster::{ClusterView, Need, NodeAddr, Status};
use crate::coordinator::{self, Coordinator, Outcome, Target};
use crate::op::{Ack, Op, OpError, OpResult, Reply};
use crate::protocol::Route;
use crate::value::{Probe, Value};
use crate::worker::Changes;

/// Rounds a batch may take: every owner of a key once, and a try again.
pub const MAX_ROUNDS: usize = 4;

/// What a [`BatchRun`] asks its driver to do. See the [module docs](self).
#[derive(Debug)]
pub enum Action {
    /// Run `ops` on this node's workers, in the order batches arrive.
    Run {
        /// Answer with this.
        group: u64,
        /// The operations.
        ops: Vec<Op>,
    },
    /// Send `ops` to node `to` as a [`Route::Forwarded`] batch with the same ack.
    Forward {
        /// Answer with this.
        group: u64,
        /// The node.
        to: NodeAddr,
        /// The operations.
        ops: Vec<Op>,
        /// The batch's acknowledgement level.
        ack: Ack,
    },
    /// Hand these deltas to the cluster agent's gossip.
    Gossip(Changes),
    /// Have the owners `need` asks for merge the deltas.
    Replicate {
        /// Answer with this.
        ticket: u64,
        /// The deltas.
        changes: Changes,
        /// Which owners must hold them.
        need: Need,
    },
    /// Read the stored copy of `key` on `at`.
    Inspect {
        /// Answer with this.
        ticket: u64,
        /// The holder.
        at: Target<NodeAddr>,
        /// The key.
        key: Bytes,
    },
}

/// A group that ran here and waits for its replication or for reads of other holders.
struct LocalGroup {
    group: u64,
    results: Vec<OpResult>,
    /// Where the group's operations sit among the coordinator's.
    positions: Vec<usize>,
    /// Reads still to come back before the group is answered.
    reads: usize,
    /// The replication ticket it waits for.
    replicating: Option<u64>,
}

/// Where a merged read's answer goes.
#[derive(Clone, Copy, Debug)]
enum ReadFor {
    /// The batch's result at this position (`GetAll`).
    Batch(usize),
    /// A local group's result (the group's id and the index in its results).
    Group(u64, usize),
}

/// A read merged over several holders' copies.
struct MergedRead {
    to: ReadFor,
    shape: Shape,
    waiting: usize,
    answered: usize,
    merged: Option<Value>,
    error: Option<OpError>,
}

/// What a merged read answers: the whole value (with metadata or not), or a probe of it.
#[derive(Clone)]
enum Shape {
    Whole { meta: bool },
    Probe(Probe),
}

impl Shape {
    fn of(op: &Op) -> Option<Shape> {
        match op {
            Op::Get { meta, .. } => Some(Shape::Whole { meta: *meta }),
            Op::Probe { probe, .. } => Some(Shape::Probe(probe.clone())),
            _ => None,
        }
    }

    /// Whether `reply` says the key was not found.
    fn not_found(reply: &Reply) -> bool {
        matches!(reply, Reply::Value(None) | Reply::Probed(None))
    }

    fn answer(&self, merged: Option<Value>, now_ms: u64) -> Reply {
        match self {
            Shape::Whole { meta } => Reply::Value(merged.and_then(|v| v.read_at(now_ms, *meta))),
            Shape::Probe(probe) => Reply::Probed(merged.and_then(|v| v.probe(now_ms, probe))),
        }
    }
}

enum Ticket {
    Replicate(u64),
    Inspect(usize),
}

/// One batch as a node runs it. See the [module docs](self).
pub struct BatchRun {
    /// This node left the cluster.
    left: bool,
    ack: Ack,
    route: Route,
    coordinator: Coordinator<NodeAddr>,
    /// Where each of the coordinator's operations sits in the batch.
    at: Vec<usize>,
    results: Vec<Option<OpResult>>,
    locals: Vec<LocalGroup>,
    reads: Vec<MergedRead>,
    tickets: Vec<(u64, Ticket)>,
    next_ticket: u64,
    actions: VecDeque<Action>,
}

impl BatchRun {
    /// Starts a batch received with `ack` and `route`, as this node sees the cluster
    /// (`None`: a node on its own). The first actions are ready at once.
    pub fn new(ops: Vec<Op>, ack: Ack, route: Route, view: Option<&ClusterView>) -> BatchRun {
        let count = ops.len();
        // A node that left (it hands its keys over and goes) keeps nothing new: what another
        // node forwards to it with an older view goes on to the owners, and it keeps no
        // hints.
        let left = view.is_some_and(|v| {
            v.members
                .iter()
                .any(|m| m.addr == v.me && m.status == Status::Left)
        });
        let route = match route {
            Route::Forwarded if left => Route::Coordinate,
            r => r,
        };
        let mut run = BatchRun {
            left,
            ack,
            route,
            coordinator: Coordinator::new(Vec::new(), MAX_ROUNDS),
            at: Vec::with_capacity(count),
            results: (0..count).map(|_| None).collect(),
            locals: Vec::new(),
            reads: Vec::new(),
            tickets: Vec::new(),
            next_ticket: 1,
            actions: VecDeque::new(),
        };
        let mut rest = Vec::with_capacity(count);
        for (i, op) in ops.into_iter().enumerate() {
            match (op, view) {
                (Op::GetAll { key, meta }, Some(view)) if route != Route::Forwarded => {
                    let holders = view
                        .owners(&key)
                        .into_iter()
                        .map(|a| {
                            if a == view.me {
                                Target::Here
                            } else {
                                Target::Node(a)
                            }
                        })
                        .collect();
                    run.read(ReadFor::Batch(i), key, Shape::Whole { meta }, holders);
                }
                (op, Some(view)) if route == Route::Direct && (left || !owned(view, op.key())) => {
                    let mut owners = view.owners(op.key());
                    owners.retain(|a| *a != view.me);
                    run.results[i] = Some(Err(OpError::NotOwner { owners }));
                }
                (op, _) => {
                    run.at.push(i);
                    rest.push(op);
                }
            }
        }
        run.coordinator = Coordinator::new(rest, MAX_ROUNDS);
        run.plan(view);
        run
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether every operation has its final result (and nothing is left to do).
    pub fn is_done(&self) -> bool {
        self.actions.is_empty()
            && self.locals.is_empty()
            && self.reads.is_empty()
            && self.coordinator.is_done()
    }

    /// The results, one per operation, in order. An operation left without one (the
    /// driver stopped early) answers `Unavailable`.
    pub fn into_results(self) -> Vec<OpResult> {
        let mut results = self.results;
        for (i, r) in self.at.into_iter().zip(self.coordinator.into_results()) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(OpError::Unavailable {
                        reason: "the batch stopped before this operation ran".into(),
                    })
                })
            })
            .collect()
    }

    /// What became of group `group` run on this node's workers: the results and the deltas
    /// of its writes, or why the workers could not run it.
    pub fn ran(
        &mut self,
        group: u64,
        answer: Result<(Vec<OpResult>, Changes), OpError>,
        view: Option<&ClusterView>,
        now_ms: u64,
    ) {
        let Some(positions) = self.coordinator.positions(group) else {
            return;
        };
        let (results, changes) = match answer {
            Ok(a) => a,
            Err(e) => {
                let n = positions.len();
                self.coordinator
                    .handle(group, Outcome::Answered(vec![Err(e); n]));
                self.next_round(view);
                return;
            }
        };
        let mut local = LocalGroup {
            group,
            results,
            positions,
            reads: 0,
            replicating: None,
        };
        let need = match self.ack {
            Ack::One | Ack::Replicas(0 | 1) => None,
            Ack::All => Some(Need::Owners(usize::MAX)),
            Ack::Replicas(k) => Some(Need::Owners(usize::from(k))),
            Ack::Visible => Some(Need::Live),
        };
        if view.is_some() && !changes.is_empty() {
            if let Some(need) = need {
                let ticket = self.ticket(Ticket::Replicate(group));
                local.replicating = Some(ticket);
                self.actions.push_back(Action::Replicate {
                    ticket,
                    changes,
                    need,
                });
            } else {
                self.actions.push_back(Action::Gossip(changes));
            }
        }
        self.locals.push(local);
        if self.locals.last().is_some_and(|l| l.replicating.is_none()) {
            self.look_elsewhere(group, view, now_ms);
        }
    }

    /// What became of group `group` forwarded to another node.
    pub fn forwarded(&mut self, group: u64, outcome: Outcome, view: Option<&ClusterView>) {
        self.coordinator.handle(group, outcome);
        self.next_round(view);
    }

    /// Whether the deltas of replication `ticket` reached as many owners as asked (else the
    /// writes of its group fail with the error).
    pub fn replicated(
        &mut self,
        ticket: u64,
        result: Result<(), OpError>,
        view: Option<&ClusterView>,
        now_ms: u64,
    ) {
        let Some(Ticket::Replicate(group)) = self.take_ticket(ticket) else {
            return;
        };
        let Some(local) = self.locals.iter_mut().find(|l| l.group == group) else {
            return;
        };
        local.replicating = None;
        if let Err(e) = result {
            for r in local
                .results
                .iter_mut()
                .filter(|r| matches!(r, Ok(Reply::Written | Reply::Deleted { .. })))
            {
                *r = Err(e.clone());
            }
        }
        self.look_elsewhere(group, view, now_ms);
    }

    /// What holder `ticket` answered for a key's stored copy at `now_ms`: `None` when it
    /// did not answer.
    pub fn inspected(
        &mut self,
        ticket: u64,
        answer: Option<OpResult>,
        view: Option<&ClusterView>,
        now_ms: u64,
    ) {
        let Some(Ticket::Inspect(read)) = self.take_ticket(ticket) else {
            return;
        };
        let r = &mut self.reads[read];
        r.waiting -= 1;
        match answer {
            Some(Ok(Reply::Raw(value))) => {
                r.answered += 1;
                if let Some(v) = value {
                    match &mut r.merged {
                        Some(m) => {
                            m.merge_replicated(v);
                        }
                        None => r.merged = Some(v),
                    }
                }
            }
            Some(Err(e)) => {
                r.error.get_or_insert(e);
            }
            _ => {}
        }
        if self.reads.iter().all(|r| r.waiting == 0) {
            self.finish_reads(view, now_ms);
        }
    }

    fn ticket(&mut self, t: Ticket) -> u64 {
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.push((id, t));
        id
    }

    fn take_ticket(&mut self, id: u64) -> Option<Ticket> {
        let i = self.tickets.iter().position(|(t, _)| *t == id)?;
        Some(self.tickets.swap_remove(i).1)
    }

    /// Starts a read of `key` merged over `holders`' copies.
    fn read(&mut self, to: ReadFor, key: Bytes, shape: Shape, holders: Vec<Target<NodeAddr>>) {
        let index = self.reads.len();
        self.reads.push(MergedRead {
            to,
            shape,
            waiting: holders.len(),
            answered: 0,
            merged: None,
            error: None,
        });
        if holders.is_empty() {
            self.reads[index].error = Some(OpError::Unavailable {
                reason: "the cluster has no node that owns the key".into(),
            });
        }
        for at in holders {
            let ticket = self.ticket(Ticket::Inspect(index));
            self.actions.push_back(Action::Inspect {
                ticket,
                at,
                key: key.clone(),
            });
        }
    }

    /// A local group whose writes are settled: reads that found nothing while this node
    /// settles ask the key's other and previous owners; then the group is answered.
    fn look_elsewhere(&mut self, group: u64, view: Option<&ClusterView>, now_ms: u64) {
        let Some(i) = self.locals.iter().position(|l| l.group == group) else {
            return;
        };
        let mut asks = Vec::new();
        if let Some(view) = view.filter(|v| v.settling(now_ms)) {
            let local = &self.locals[i];
            // Every holder's copy, this node's included, may hold the group's own later
            // writes: a read followed by a write of its key in the group (as Redis's `SADD`
            // runs) keeps what it found here, which is what came before them.
            let written_after = |j: usize, key: &Bytes| {
                local.positions[j + 1..].iter().any(|&p| {
                    self.coordinator
                        .op(p)
                        .is_some_and(|op| coordinator::is_write(op) && op.key() == key)
                })
            };
            for (j, (&p, r)) in local.positions.iter().zip(&local.results).enumerate() {
                if let (Some(op), Ok(reply)) = (self.coordinator.op(p), r)
                    && let Some(shape) = Shape::of(op)
                    && Shape::not_found(reply)
                    && !written_after(j, op.key())
                {
                    let key = op.key();
                    let others = view.other_holders(key);
                    if !others.is_empty() {
                        let mut holders = vec![Target::Here];
                        holders.extend(others.into_iter().map(Target::Node));
                        asks.push((j, key.clone(), shape, holders));
                    }
                }
            }
        }
        if asks.is_empty() {
            let local = self.locals.swap_remove(i);
            self.coordinator
                .handle(local.group, Outcome::Answered(local.results));
            self.next_round(view);
            return;
        }
        self.locals[i].reads = asks.len();
        for (j, key, shape, holders) in asks {
            self.read(ReadFor::Group(group, j), key, shape, holders);
        }
    }

    /// Every read has its answers: each goes where it was asked for (a key whose deadline
    /// has passed at `now_ms` is not found).
    fn finish_reads(&mut self, view: Option<&ClusterView>, now_ms: u64) {
        for r in std::mem::take(&mut self.reads) {
            let result = match (r.error, r.answered) {
                (Some(e), _) => Err(e),
                (None, 0) => Err(OpError::Unavailable {
                    reason: "no replica of the key answered".into(),
                }),
                (None, _) => Ok(r.shape.answer(r.merged, now_ms)),
            };
            match r.to {
                ReadFor::Batch(i) => self.results[i] = Some(result),
                ReadFor::Group(group, j) => {
                    if let Some(local) = self.locals.iter_mut().find(|l| l.group == group) {
                        local.results[j] = result;
                        local.reads -= 1;
                    }
                }
            }
        }
        let (done, waiting): (Vec<LocalGroup>, Vec<LocalGroup>) = std::mem::take(&mut self.locals)
            .into_iter()
            .partition(|l| l.reads == 0 && l.replicating.is_none());
        self.locals = waiting;
        for local in done {
            self.coordinator
                .handle(local.group, Outcome::Answered(local.results));
        }
        self.next_round(view);
    }

    fn next_round(&mut self, view: Option<&ClusterView>) {
        if self.coordinator.needs_round() && self.locals.is_empty() {
            self.plan(view);
        }
    }

    /// Plans a round and queues its groups.
    fn plan(&mut self, view: Option<&ClusterView>) {
        let (ack, route) = (self.ack, self.route);
        // Writes acknowledged by one replica are kept here when no owner takes them.
        let hints = matches!(ack, Ack::One | Ack::Visible) && !self.left;
        let sends = self
            .coordinator
            .plan(|_, op| candidates(view, hints, route, self.left, op));
        for send in sends {
            match send.target {
                Target::Here => self.actions.push_back(Action::Run {
                    group: send.id,
                    ops: send.ops,
                }),
                Target::Node(to) => self.actions.push_back(Action::Forward {
                    group: send.id,
                    to,
                    ops: send.ops,
                    ack,
                }),
            }
        }
    }
}

/// Whether this node owns `key` (a key without owners yet is everyone's).
fn owned(view: &ClusterView, key: &[u8]) -> bool {
    let owners = view.owners_seen(key);
    owners.is_empty() || owners.iter().any(|(a, _)| *a == view.me)
}

/// Where an operation may run, preferred first (see [`coordinator::candidates`]): a
/// forwarded or directly routed batch (or a node outside a cluster) runs everything here.
fn candidates(
    view: Option<&ClusterView>,
    hints: bool,
    route: Route,
    left: bool,
    op: &Op,
) -> Vec<Target<NodeAddr>> {
    let Some(view) = view.filter(|_| route == Route::Coordinate) else {
        return vec![Target::Here];
    };
    // Any owner serves (`preferred` false): sending every key to its first live owner gives
    // read-your-writes through any node but forwards twice as many operations — measured
    // through one node of `calm up` with redis-benchmark: GET throughput about 60% lower.
    let mut owners = view.owners_seen(op.key());
    if left {
        // Its view may have it in the ring until its agent's next tick.
        owners.retain(|(a, _)| *a != view.me);
    }
    coordinator::candidates(&view.me, &owners, op, hints, false)
}

#[cfg(test)]
mod test {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use calm_lattice::ReplicaId;

    use super::*;
    use crate::cluster::{Member, ReplicationTable, Status, node_id};
    use crate::ring::HashRing;
    use crate::storage::Tiered;
    use crate::value::Write;
    use crate::worker::{Worker, WorkerConfig};

    /// `me`'s view of a cluster of `alive` members (every one alive), replication 2; when
    /// `before` is given, the ring changed from those members a moment ago and `me` settles
    /// until 1,000.
    fn view(me: &str, alive: &[&str], before: Option<&[&str]>) -> ClusterView {
        let ring_of = |addrs: &[&str]| {
            let nodes: BTreeMap<u32, NodeAddr> =
                addrs.iter().map(|a| (node_id(a), a.to_string())).collect();
            (Arc::new(HashRing::new(nodes.keys().copied(), 64)), nodes)
        };
        let (ring, nodes) = ring_of(alive);
        ClusterView {
            me: me.to_string(),
            ring,
            replication: 2,
            nodes,
            members: alive
                .iter()
                .map(|a| Member {
                    addr: a.to_string(),
                    incarnation: 1,
                    status: Status::Alive,
                })
                .collect(),
            table: Arc::new(ReplicationTable::default()),
            previous: before.map(ring_of),
            settling_until_ms: if before.is_some() { 1_000 } else { 0 },
        }
    }

    /// A key `view`'s node owns, and one it does not.
    fn keys(view: &ClusterView) -> (Bytes, Bytes) {
        let owned = |k: &Bytes| view.owners(k).contains(&view.me);
        let mut mine = None;
        let mut other = None;
        for i in 0..1000 {
            let k = Bytes::from(format!("key{i}"));
            if owned(&k) {
                mine.get_or_insert(k);
            } else {
                other.get_or_insert(k);
            }
        }
        (mine.unwrap(), other.unwrap())
    }

    fn incr(key: &Bytes) -> Op {
        Op::Write {
            key: key.clone(),
            write: Write::Increment(1),
        }
    }

    fn get(key: &Bytes) -> Op {
        Op::Get {
            key: key.clone(),
            meta: false,
        }
    }

    /// A stored copy of a counter incremented by `by`.
    fn copy(key: &Bytes, by: i64, replica: u64) -> Value {
        let ring = Arc::new(HashRing::new([0], 1));
        let mut w = Worker::with_store(
            0,
            ReplicaId(replica),
            ring,
            WorkerConfig::default(),
            Tiered::memory(),
        );
        w.handle_ops(
            1,
            [Op::Write {
                key: key.clone(),
                write: Write::Increment(by),
            }],
        );
        w.value(key).unwrap()
    }

    fn counter(r: &OpResult) -> Option<i128> {
        match r {
            Ok(Reply::Value(Some(crate::value::ReadValue::Counter { value }))) => Some(*value),
            _ => None,
        }
    }

    #[test]
    fn a_write_here_with_ack_one_is_gossiped_and_answered() {
        let v = view("n1", &["n1", "n2", "n3"], None);
        let (mine, _) = keys(&v);
        let mut run = BatchRun::new(vec![incr(&mine)], Ack::One, Route::Coordinate, Some(&v));
        let Some(Action::Run { group, ops }) = run.poll_action() else {
            panic!("the write runs here");
        };
        assert_eq!(ops, vec![incr(&mine)]);
        assert!(run.poll_action().is_none());
        assert!(!run.is_done());
        let delta = copy(&mine, 1, 1);
        run.ran(
            group,
            Ok((vec![Ok(Reply::Written)], vec![(mine.clone(), delta)])),
            Some(&v),
            5_000,
        );
        assert!(matches!(run.poll_action(), Some(Action::Gossip(c)) if c.len() == 1));
        assert!(run.is_done());
        assert_eq!(run.into_results(), vec![Ok(Reply::Written)]);
    }

    #[test]
    fn a_write_with_ack_all_fails_when_its_replication_does() {
        let v = view("n1", &["n1", "n2", "n3"], None);
        let (mine, _) = keys(&v);
        let mut run = BatchRun::new(vec![incr(&mine)], Ack::All, Route::Coordinate, Some(&v));
        let Some(Action::Run { group, .. }) = run.poll_action() else {
            panic!("the write runs here");
        };
        let delta = copy(&mine, 1, 1);
        run.ran(
            group,
            Ok((vec![Ok(Reply::Written)], vec![(mine.clone(), delta)])),
            Some(&v),
            5_000,
        );
        let Some(Action::Replicate { ticket, need, .. }) = run.poll_action() else {
            panic!("ack all replicates before answering");
        };
        assert_eq!(need, Need::Owners(usize::MAX));
        assert!(!run.is_done(), "no answer before the replicas merged");
        let refused = OpError::ReplicationIncomplete {
            reached: 1,
            wanted: 2,
        };
        run.replicated(ticket, Err(refused.clone()), Some(&v), 5_000);
        assert!(run.is_done());
        assert_eq!(run.into_results(), vec![Err(refused)]);
    }

    #[test]
    fn a_key_owned_elsewhere_is_forwarded_and_goes_to_the_next_owner_when_not_sent() {
        let v = view("n1", &["n1", "n2", "n3"], None);
        let (_, other) = keys(&v);
        let owners = v.owners(&other);
        let mut run = BatchRun::new(vec![get(&other)], Ack::One, Route::Coordinate, Some(&v));
        let Some(Action::Forward { group, to, .. }) = run.poll_action() else {
            panic!("forwarded to an owner");
        };
        assert_eq!(to, owners[0]);
        run.forwarded(group, Outcome::NotSent, Some(&v));
        let Some(Action::Forward { group, to, .. }) = run.poll_action() else {
            panic!("forwarded to the next owner");
        };
        assert_eq!(to, owners[1]);
        run.forwarded(
            group,
            Outcome::Answered(vec![Ok(Reply::Value(None))]),
            Some(&v),
        );
        assert!(run.is_done());
        assert_eq!(run.into_results(), vec![Ok(Reply::Value(None))]);
    }

    #[test]
    fn a_directly_routed_key_this_node_does_not_own_answers_not_owner() {
        let v = view("n1", &["n1", "n2", "n3"], None);
        let (mine, other) = keys(&v);
        let mut run = BatchRun::new(
            vec![get(&other), get(&mine)],
            Ack::One,
            Route::Direct,
            Some(&v),
        );
        let Some(Action::Run { group, ops }) = run.poll_action() else {
            panic!("the owned key runs here");
        };
        assert_eq!(ops, vec![get(&mine)]);
        run.ran(
            group,
            Ok((vec![Ok(Reply::Value(None))], vec![])),
            Some(&v),
            0,
        );
        let results = run.into_results();
        assert_eq!(
            results[0],
            Err(OpError::NotOwner {
                owners: v.owners(&other)
            })
        );
        assert_eq!(results[1], Ok(Reply::Value(None)));
    }

    #[test]
    fn a_miss_while_settling_is_answered_by_the_other_and_previous_owners() {
        // n4 just joined: it owns keys it has not received yet.
        let v = view("n4", &["n1", "n2", "n3", "n4"], Some(&["n1", "n2", "n3"]));
        let (mine, _) = keys(&v);
        for (now, settling) in [(500, true), (5_000, false)] {
            let mut run = BatchRun::new(vec![get(&mine)], Ack::One, Route::Forwarded, Some(&v));
            let Some(Action::Run { group, .. }) = run.poll_action() else {
                panic!("runs here");
            };
            run.ran(
                group,
                Ok((vec![Ok(Reply::Value(None))], vec![])),
                Some(&v),
                now,
            );
            if !settling {
                assert!(run.is_done());
                assert_eq!(run.into_results(), vec![Ok(Reply::Value(None))]);
                continue;
            }
            let mut asked = Vec::new();
            while let Some(a) = run.poll_action() {
                let Action::Inspect { ticket, at, key } = a else {
                    panic!("only reads of other holders: {a:?}");
                };
                assert_eq!(key, mine);
                asked.push((ticket, at));
            }
            let others = v.other_holders(&mine);
            assert!(!others.is_empty());
            assert_eq!(asked.len(), 1 + others.len(), "here and every other holder");
            assert!(!run.is_done());
            // Two previous owners hold copies written by different replicas.
            for (i, (ticket, at)) in asked.into_iter().enumerate() {
                let answer = match at {
                    Target::Here => Some(Ok(Reply::Raw(None))),
                    Target::Node(_) if i == 1 => Some(Ok(Reply::Raw(Some(copy(&mine, 2, 7))))),
                    Target::Node(_) if i == 2 => Some(Ok(Reply::Raw(Some(copy(&mine, 3, 8))))),
                    Target::Node(_) => None,
                };
                run.inspected(ticket, answer, Some(&v), 1);
            }
            assert!(run.is_done());
            let results = run.into_results();
            assert_eq!(counter(&results[0]), Some(5), "{results:?}");
        }
    }

    #[test]
    fn a_miss_followed_by_a_write_of_its_key_keeps_what_it_found() {
        // `SADD` reads the set, then adds: while the node settles, asking the holders
        // would find the batch's own addition (here at once, elsewhere once replicated).
        let v = view("n4", &["n1", "n2", "n3", "n4"], Some(&["n1", "n2", "n3"]));
        let (mine, _) = keys(&v);
        let mut run = BatchRun::new(
            vec![get(&mine), incr(&mine)],
            Ack::One,
            Route::Forwarded,
            Some(&v),
        );
        let Some(Action::Run { group, .. }) = run.poll_action() else {
            panic!("runs here");
        };
        run.ran(
            group,
            Ok((
                vec![Ok(Reply::Value(None)), Ok(Reply::Written)],
                vec![(mine.clone(), copy(&mine, 1, 1))],
            )),
            Some(&v),
            500,
        );
        while let Some(a) = run.poll_action() {
            assert!(
                matches!(a, Action::Gossip(_)),
                "no read of other holders: {a:?}"
            );
        }
        assert!(run.is_done());
        assert_eq!(
            run.into_results(),
            vec![Ok(Reply::Value(None)), Ok(Reply::Written)]
        );
    }

    #[test]
    fn a_node_that_left_passes_forwarded_writes_on_and_keeps_no_hints() {
        let before = view("n1", &["n1", "n2", "n3"], None);
        let (mine, _) = keys(&before);
        // n1 left: just after (its ring still has it, until its agent's next tick), and
        // once the ring no longer has it.
        let mut just_left = before.clone();
        just_left.members[0].status = Status::Left;
        let mut rebuilt = view("n1", &["n2", "n3"], None);
        rebuilt.members = just_left.members.clone();
        for v in [just_left, rebuilt] {
            let mut others = v.owners(&mine);
            others.retain(|a| *a != v.me);
            let mut run = BatchRun::new(vec![incr(&mine)], Ack::One, Route::Forwarded, Some(&v));
            let Some(Action::Forward { group, to, .. }) = run.poll_action() else {
                panic!("passed on to an owner, not run here");
            };
            assert_eq!(to, others[0]);
            run.forwarded(group, Outcome::NotSent, Some(&v));
            // No owner reachable: no hint here; only owners are tried.
            for _ in 0..4 {
                match run.poll_action() {
                    Some(Action::Forward { group, to, .. }) => {
                        assert!(others.contains(&to));
                        run.forwarded(group, Outcome::NotSent, Some(&v));
                    }
                    None => break,
                    Some(other) => panic!("a node that left runs nothing: {other:?}"),
                }
            }
            // A client that routes itself is told the owners.
            let run = BatchRun::new(vec![incr(&mine)], Ack::One, Route::Direct, Some(&v));
            assert_eq!(
                run.into_results(),
                vec![Err(OpError::NotOwner { owners: others })]
            );
        }
    }

    #[test]
    fn a_read_of_every_replica_merges_their_copies() {
        let v = view("n1", &["n1", "n2", "n3"], None);
        let (_, other) = keys(&v);
        let op = Op::GetAll {
            key: other.clone(),
            meta: false,
        };
        let mut run = BatchRun::new(vec![op], Ack::One, Route::Coordinate, Some(&v));
        let mut n = 0;
        while let Some(Action::Inspect { ticket, at, .. }) = run.poll_action() {
            assert!(matches!(at, Target::Node(_)), "this node is not an owner");
            n += 1;
            run.inspected(
                ticket,
                Some(Ok(Reply::Raw(Some(copy(&other, n, n as u64))))),
                Some(&v),
                1,
            );
        }
        assert_eq!(n, 2);
        assert!(run.is_done());
        assert_eq!(counter(&run.into_results()[0]), Some(3));
    }
}
