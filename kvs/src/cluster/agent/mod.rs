//! The cluster agent of one node: membership, failure detection, replication between
//! nodes and anti-entropy, as a sans-IO state machine.
//!
//! Inputs: [`handle_tick`](ClusterAgent::handle_tick) (time passes),
//! [`handle_request`](ClusterAgent::handle_request) (a peer asks),
//! [`handle_reply`](ClusterAgent::handle_reply) (a peer answered),
//! [`on_local_changes`](ClusterAgent::on_local_changes) (writes merged here). Output:
//! [`poll_outgoing`](ClusterAgent::poll_outgoing) (requests to send). Time is passed in and
//! randomness comes from a seeded RNG given at construction, so a whole cluster of agents
//! runs deterministically in the simulation test.
//!
//! This file holds the agent's state, its inputs and outputs, and the ring; each concern
//! is in a file of its own, all `impl ClusterAgent`:
//!
//! - **Failure detection** (`detection.rs`, SWIM-style): each probe period the agent pings the next member
//!   in a shuffled round; no answer within the probe timeout makes it *suspect*; suspect for
//!   longer than the suspicion timeout makes it *dead*. A node that hears it is suspected
//!   raises its incarnation, which refutes the suspicion. Membership rides on every message.
//! - **Replication** (`replication.rs`): deltas of local writes are merged per key and sent to the key's other
//!   owners at once when no deltas are in flight to them, else together when the message
//!   in flight is answered or at the next gossip period, one batch per destination. Writes
//!   whose client waits for their replicas ([`replicate`](ClusterAgent::replicate)) ride
//!   the same messages.
//! - **Anti-entropy** (`anti_entropy.rs`): each period the agent sends one peer a digest (per bucket of keys both
//!   own, a hash of keys and values); the peer answers with its entries of the buckets that
//!   differ, and the agent pushes its own. This repairs whatever gossip lost, and fills a
//!   node that restarted empty. Entries a node holds but no longer owns are returned to their owners.
//! - **Keys moving on purpose** (`moves.rs`): a hot key's replication widened (copies go to
//!   the owners it gains before clients are sent there), and a graceful leave.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

mod anti_entropy;
mod detection;
mod moves;
mod replication;
#[cfg(test)]
mod tests;

use anti_entropy::Returning;
use detection::Probe;
use moves::{HandOver, RESEND_AFTER_MS, Widening};
use replication::ReplicaWait;
pub use replication::{Need, Replicated, WAITED_DELTAS_IN_FLIGHT};

use super::membership::{Member, Membership, NodeAddr, Status, node_id};
use super::messages::{PeerEnvelope, PeerReply, PeerRequest};
use super::replication::ReplicationTable;
use crate::ring::{HashRing, key_hash};
use crate::value::Value;

/// How a cluster behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Nodes holding each key (when the cluster has that many).
    pub replication: usize,
    /// How often changed keys are sent to their other owners, milliseconds.
    pub gossip_period_ms: u64,
    /// How often a digest is exchanged with one peer, milliseconds.
    pub anti_entropy_period_ms: u64,
    /// How often one peer is probed, milliseconds.
    pub probe_period_ms: u64,
    /// How long a probe may go unanswered before the peer is suspected, milliseconds.
    pub probe_timeout_ms: u64,
    /// How long a peer stays suspect before it is declared dead, milliseconds.
    pub suspect_timeout_ms: u64,
    /// The most entries one repair message carries.
    pub repair_batch: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replication: 2,
            gossip_period_ms: 100,
            anti_entropy_period_ms: 1_000,
            probe_period_ms: 500,
            probe_timeout_ms: 1_000,
            suspect_timeout_ms: 3_000,
            repair_batch: 1_000,
        }
    }
}

/// Buckets of keys compared by anti-entropy.
pub const DIGEST_BUCKETS: u64 = 64;
/// The anti-entropy bucket of a key.
pub fn bucket(key: &[u8]) -> u16 {
    // The ring uses the hash's position; buckets use its low bits.
    (key_hash(key) % DIGEST_BUCKETS) as u16
}

/// The keys that every node in `nodes` owns, under one view of the ring.
#[derive(Clone, Debug)]
pub struct OwnerFilter {
    ring: Arc<HashRing>,
    replication: usize,
    table: Arc<ReplicationTable>,
    nodes: Vec<u32>,
    /// The ring gives the nodes no key in common at the default factor: only keys with
    /// factors of their own can match.
    overrides_only: bool,
}

impl OwnerFilter {
    /// Whether every node of the filter owns `key`.
    pub fn matches(&self, key: &[u8]) -> bool {
        let rf = self.table.factor(key).unwrap_or(self.replication);
        let owners = self.ring.owners(key, rf);
        self.nodes.iter().all(|n| owners.contains(n))
    }

    /// The only keys that can match, when that is a short list (the keys with factors of
    /// their own, because the ring gives the nodes nothing in common otherwise); `None`:
    /// any key can. Stores look at these rather than walk every key.
    pub fn candidates(&self) -> Option<Vec<Bytes>> {
        self.overrides_only
            .then(|| self.table.overrides().into_iter().map(|(k, _)| k).collect())
    }
}

/// What the agent needs of the node's storage.
pub trait LocalStore {
    /// Merges entries received from a peer; returns the keys whose values it refused (of
    /// an application's kind this node was not built with), which it did not merge.
    fn merge_entries(&mut self, now_ms: u64, entries: Vec<(Bytes, Value)>) -> Vec<Bytes>;
    /// Per bucket, a hash of the keys matching `filter` and their values.
    fn digest(&mut self, filter: &OwnerFilter) -> BTreeMap<u16, u64>;
    /// Up to `limit` entries matching `filter` in `buckets`.
    fn entries_in(
        &mut self,
        filter: &OwnerFilter,
        buckets: &BTreeSet<u16>,
        limit: usize,
    ) -> Vec<(Bytes, Value)>;
    /// Up to `limit` entries this node holds but does not own (`mine` matches the keys it
    /// owns): they must be handed to their owners.
    fn entries_not_owned(&mut self, mine: &OwnerFilter, limit: usize) -> Vec<(Bytes, Value)>;
    /// Drops entries returned to every owner, unless they changed since (a write that
    /// arrived meanwhile must be returned too).
    fn drop_if_unchanged(&mut self, entries: Vec<(Bytes, Value)>);
    /// The value of `key`, if this node holds it.
    fn value_of(&mut self, key: &[u8]) -> Option<Value>;
    /// How many keys this node holds (anti-entropy paces its walks of them by it).
    fn key_count(&mut self) -> usize;
}

/// A request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Its id; the reply is handed back with it.
    pub id: u64,
    /// The destination.
    pub to: NodeAddr,
    /// The request.
    pub envelope: PeerEnvelope,
}

/// What an agent has done, for `calm status` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Delta batches sent.
    pub delta_batches: u64,
    /// Anti-entropy exchanges started.
    pub anti_entropy_rounds: u64,
    /// Entries received in repairs.
    pub repaired_entries: u64,
    /// Times this node refuted a suspicion about itself.
    pub refutations: u64,
    /// Entries returned to their owners and dropped here.
    pub handed_off: u64,
}

/// One node's cluster agent. See the [module docs](self).
pub struct ClusterAgent {
    me: NodeAddr,
    /// Per-key replication factors, shared with every node.
    table: Arc<ReplicationTable>,
    /// Every node's latest load sample, gossiped as a lattice.
    load: crate::policy::LoadTable,
    /// Hand-over messages of a graceful leave not yet answered, by message id.
    draining: BTreeMap<u64, HandOver>,
    /// Copies sent to the owners a key gains, by message id: the key and the factors it
    /// gets once every copy was taken.
    widening: BTreeMap<u64, Widening>,
    clock: calm_lattice::HlcClock,
    incarnation: u64,
    membership: Membership,
    seeds: Vec<NodeAddr>,
    config: ClusterConfig,
    ring: Arc<HashRing>,
    ring_nodes: BTreeMap<u32, NodeAddr>,
    pending: BTreeMap<NodeAddr, HashMap<Bytes, Value>>,
    outbox: VecDeque<Outgoing>,
    next_id: u64,
    probe: Option<Probe>,
    probe_round: Vec<NodeAddr>,
    suspect_since: HashMap<NodeAddr, u64>,
    next_probe_ms: u64,
    next_gossip_ms: u64,
    next_anti_entropy_ms: u64,
    rng: StdRng,
    stats: AgentStats,
    left: bool,
    /// Unowned entries on their way back to their owners.
    returning: Returning,
    /// Whether the next anti-entropy round must look for entries this node does not own.
    unowned_walk_due: bool,
    /// Rounds since the last look.
    rounds_since_unowned_walk: u32,
    /// Until then, anti-entropy runs every gossip period: a node that (re)started empty
    /// catches up from its peers quickly.
    catch_up_until_ms: u64,
    /// The ring before the last change, and its nodes: a key's previous owners may hold
    /// data its new owners have not received yet.
    previous_ring: Option<(Arc<HashRing>, BTreeMap<u32, NodeAddr>)>,
    /// When the ring last changed (or the node started).
    ring_changed_ms: u64,
    /// Until then this node may lack keys it owns (see
    /// [`settling_until_ms`](ClusterAgent::settling_until_ms)).
    settle_until_ms: u64,
    /// Writes waiting for their replicas, by ticket.
    replica_waits: BTreeMap<u64, ReplicaWait>,
    /// Per owner, the tickets whose writes wait in `pending` for the next deltas message to
    /// it (which takes them along in `message_tickets`).
    awaiting: HashMap<NodeAddr, Vec<u64>>,
    /// The tickets each deltas message answers for, and its owner.
    message_tickets: HashMap<u64, (NodeAddr, Vec<u64>)>,
    /// Hints in gossip messages not yet answered (writes kept here for keys this node does
    /// not own): a message that fails, or reaches a node that has left, queues them again,
    /// so they reach their owners a gossip period after the owners are reachable — not at
    /// the next walk for unowned entries.
    hints_in_flight: HashMap<u64, Vec<(Bytes, Value)>>,
    /// Gossip messages of deltas not yet answered, and to whom: a peer with none gets the
    /// deltas of new writes at once (an idle link replicates eagerly); a busy one gets them
    /// batched, when its message is answered or at the next gossip period.
    deltas_in_flight: HashMap<u64, NodeAddr>,
    /// Tickets settled: reached enough replicas (`Ok`), or not (`Err(reached, wanted)`).
    replicated: VecDeque<(u64, Replicated)>,
    next_ticket: u64,
}

impl ClusterAgent {
    /// The agent of the node at `me`, joining through `seeds` (none: a new cluster). The
    /// incarnation starts at `now_ms`, so a restarted node's news overrides its old death.
    pub fn new(
        me: NodeAddr,
        seeds: Vec<NodeAddr>,
        config: ClusterConfig,
        now_ms: u64,
        rng_seed: u64,
    ) -> Self {
        let incarnation = now_ms.max(1);
        let mut membership = Membership::default();
        membership.record(&me, incarnation, Status::Alive);
        let mut agent = ClusterAgent {
            table: Arc::new(ReplicationTable::default()),
            load: crate::policy::LoadTable::default(),
            draining: BTreeMap::new(),
            widening: BTreeMap::new(),
            clock: calm_lattice::HlcClock::new(60_000),
            seeds: seeds.into_iter().filter(|s| *s != me).collect(),
            me,
            incarnation,
            membership,
            config,
            ring: Arc::new(HashRing::new([], 1)),
            ring_nodes: BTreeMap::new(),
            pending: BTreeMap::new(),
            outbox: VecDeque::new(),
            next_id: 1,
            probe: None,
            probe_round: Vec::new(),
            suspect_since: HashMap::new(),
            next_probe_ms: now_ms,
            next_gossip_ms: now_ms + config.gossip_period_ms,
            next_anti_entropy_ms: now_ms + config.anti_entropy_period_ms,
            rng: StdRng::seed_from_u64(rng_seed),
            stats: AgentStats::default(),
            left: false,
            returning: Returning::default(),
            unowned_walk_due: true,
            rounds_since_unowned_walk: 0,
            catch_up_until_ms: now_ms + 5 * config.anti_entropy_period_ms,
            previous_ring: None,
            ring_changed_ms: now_ms,
            settle_until_ms: now_ms + 5 * config.anti_entropy_period_ms,
            replica_waits: BTreeMap::new(),
            awaiting: HashMap::new(),
            message_tickets: HashMap::new(),
            hints_in_flight: HashMap::new(),
            deltas_in_flight: HashMap::new(),
            replicated: VecDeque::new(),
            next_ticket: 1,
        };
        agent.rebuild_ring(now_ms);
        agent
    }

    /// This node's address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The current membership view.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Every member as seen now.
    pub fn members(&self) -> Vec<Member> {
        self.membership.members()
    }

    /// The agent's figures.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The ring of nodes that own keys, and the replication factor in force.
    pub fn ring(&self) -> (Arc<HashRing>, usize, BTreeMap<u32, NodeAddr>) {
        (
            self.ring.clone(),
            self.config.replication,
            self.ring_nodes.clone(),
        )
    }

    /// Whether this node owns every key of `entries` as it sees the ring (entries it does
    /// not own, e.g. from a peer with another view, must be handed on).
    fn owns_all(&self, entries: &[(Bytes, Value)]) -> bool {
        let me = node_id(&self.me);
        entries
            .iter()
            .all(|(k, _)| self.ring.owners(k, self.replication_of(k)).contains(&me))
    }

    /// The number of nodes holding `key`: its own factor, or the default.
    pub fn replication_of(&self, key: &[u8]) -> usize {
        self.table.factor(key).unwrap_or(self.config.replication)
    }

    /// The per-key replication factors.
    pub fn replication_table(&self) -> &Arc<ReplicationTable> {
        &self.table
    }

    /// The nodes that own `key`, primary first.
    pub fn owners(&self, key: &[u8]) -> Vec<NodeAddr> {
        self.ring
            .owners(key, self.replication_of(key))
            .into_iter()
            .filter_map(|id| self.ring_nodes.get(&id).cloned())
            .collect()
    }

    /// Whether this node owns `key`.
    pub fn owns(&self, key: &[u8]) -> bool {
        let me = node_id(&self.me);
        self.ring
            .owners(key, self.replication_of(key))
            .contains(&me)
    }

    fn filter_with(&self, peer: &str) -> OwnerFilter {
        let (me, peer) = (node_id(&self.me), node_id(peer));
        OwnerFilter {
            ring: self.ring.clone(),
            replication: self.config.replication,
            table: self.table.clone(),
            nodes: vec![me, peer],
            overrides_only: !self.ring.shares_keys(me, peer, self.config.replication),
        }
    }

    fn rebuild_ring(&mut self, now_ms: u64) {
        let nodes = self.membership.owners();
        let same = nodes.keys().eq(self.ring_nodes.keys());
        if !same {
            let ring = Arc::new(HashRing::new(nodes.keys().copied(), 64));
            let old = std::mem::replace(&mut self.ring, ring);
            if !self.ring_nodes.is_empty() {
                self.previous_ring = Some((old, self.ring_nodes.clone()));
            }
            self.unowned_walk_due = true;
            // Owners that gained keys fetch them from their peers quickly, and until they
            // have, a key they miss is looked up at its other and previous owners.
            self.ring_changed_ms = now_ms;
            self.catch_up_until_ms = now_ms + 5 * self.config.anti_entropy_period_ms;
            self.settle_until_ms = self.catch_up_until_ms;
        }
        self.ring_nodes = nodes;
    }

    /// Until when (milliseconds) this node may lack keys it owns: 5 anti-entropy periods
    /// after it started or the ring changed (its fast catch-up).
    pub fn settling_until_ms(&self) -> u64 {
        self.settle_until_ms
    }

    /// What the request path needs of this node's view of the cluster, as of now.
    pub fn view(&self) -> super::ClusterView {
        let (ring, replication, nodes) = self.ring();
        super::ClusterView {
            me: self.me().to_string(),
            ring,
            replication,
            nodes,
            members: self.members(),
            table: self.replication_table().clone(),
            previous: self.previous_ring().cloned(),
            settling_until_ms: self.settling_until_ms(),
        }
    }

    /// The ring before the last change, with its nodes.
    pub fn previous_ring(&self) -> Option<&(Arc<HashRing>, BTreeMap<u32, NodeAddr>)> {
        self.previous_ring.as_ref()
    }

    fn envelope(&self, body: PeerRequest) -> PeerEnvelope {
        PeerEnvelope {
            from: self.me.clone(),
            membership: self.membership.clone(),
            replication: (*self.table).clone(),
            load: self.load.clone(),
            body,
        }
    }

    /// Records this node's load sample (it reaches the others with the next messages).
    pub fn record_load(&mut self, at_ms: u64, sample: crate::policy::NodeSample) {
        self.load.record(at_ms, sample);
    }

    /// The cluster's load picture as this node has it.
    pub fn load(&self) -> &crate::policy::LoadTable {
        &self.load
    }

    fn send(&mut self, to: NodeAddr, body: PeerRequest) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let envelope = self.envelope(body);
        self.outbox.push_back(Outgoing { id, to, envelope });
        id
    }

    /// The next request to send, if any.
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    /// Answers a peer's request, merging what it carries.
    pub fn handle_request(
        &mut self,
        now_ms: u64,
        envelope: PeerEnvelope,
        store: &mut impl LocalStore,
    ) -> PeerReply {
        let from = envelope.from.clone();
        self.absorb(now_ms, envelope.membership);
        if envelope.replication != *self.table {
            Arc::make_mut(&mut self.table).merge(envelope.replication);
            self.unowned_walk_due = true;
        }
        calm_lattice::Merge::merge(&mut self.load, envelope.load);
        match envelope.body {
            PeerRequest::Ping => PeerReply::Ack {
                membership: self.membership.clone(),
            },
            PeerRequest::Deltas(entries) => {
                self.unowned_walk_due |= !self.owns_all(&entries);
                let refused = store.merge_entries(now_ms, entries);
                if refused.is_empty() {
                    PeerReply::Ack {
                        membership: self.membership.clone(),
                    }
                } else {
                    PeerReply::Refused {
                        membership: self.membership.clone(),
                        keys: refused,
                    }
                }
            }
            PeerRequest::Digest(theirs) => self.answer_digest(&from, theirs, store),
        }
    }

    /// Takes in a peer's answer to request `id`.
    pub fn handle_reply(
        &mut self,
        now_ms: u64,
        id: u64,
        from: &str,
        reply: PeerReply,
        store: &mut impl LocalStore,
    ) {
        if self.probe.as_ref().is_some_and(|p| p.id == id) {
            self.probe = None;
        }
        let refused: BTreeSet<Bytes> = match &reply {
            PeerReply::Refused { keys, .. } => keys.iter().cloned().collect(),
            _ => BTreeSet::new(),
        };
        // A hand-over's refused entries stay to be sent again; the rest arrived.
        if let Some(mut h) = self.draining.remove(&id)
            && !refused.is_empty()
        {
            h.entries.retain(|(k, _)| refused.contains(k));
            self.draining.insert(id, h);
        }
        // A node that has left takes what it is sent and answers, but it will not keep it:
        // it is no replica of a write, and hints sent to it go to the owners that stay.
        let gone = matches!(&reply, PeerReply::Ack { membership }
            if membership.get(from).is_some_and(|m| m.status == Status::Left));
        self.deltas_answered(id, gone, &refused);
        self.widening_answered(now_ms, id);
        self.unowned_returned(now_ms, id, &reply, store);
        match reply {
            PeerReply::Ack { membership } => self.absorb(now_ms, membership),
            PeerReply::Repair {
                membership,
                entries,
                mismatched,
            } => {
                self.absorb(now_ms, membership);
                self.repair(now_ms, from, entries, mismatched, store);
            }
            PeerReply::Refused { membership, keys } => {
                self.absorb(now_ms, membership);
                tracing::warn!(
                    node = from,
                    keys = keys.len(),
                    "a peer refused values of an application's kind it was not built with; they stay here"
                );
            }
        }
    }

    /// When [`handle_tick`](Self::handle_tick) next has something to do (a probe, a
    /// probe's timeout, a suspect's end, a gossip or anti-entropy round, a copy to send
    /// again): the shell may sleep until then unless a message arrives. `None`: nothing is
    /// scheduled (a node that has left).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let widening = self
            .widening
            .values()
            .map(|w| w.sent_ms + RESEND_AFTER_MS)
            .min();
        if self.left {
            return widening;
        }
        let probe = self.probe.as_ref().map(|p| p.deadline_ms);
        let suspects = self
            .suspect_since
            .values()
            .map(|since| since + self.config.suspect_timeout_ms)
            .min();
        [
            Some(self.next_probe_ms),
            Some(self.next_gossip_ms),
            Some(self.next_anti_entropy_ms),
            widening,
            probe,
            suspects,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Lets time pass: probes, suspicion timeouts, delta batches, anti-entropy.
    pub fn handle_tick(&mut self, now_ms: u64, store: &mut impl LocalStore) {
        self.resend_widening(now_ms);
        if self.left {
            return;
        }
        self.detect_failures(now_ms);
        self.rebuild_ring(now_ms);

        if now_ms >= self.next_probe_ms {
            self.next_probe_ms = now_ms + self.config.probe_period_ms;
            self.probe_next(now_ms);
        }
        if now_ms >= self.next_gossip_ms {
            self.next_gossip_ms = now_ms + self.config.gossip_period_ms;
            for (to, entries) in std::mem::take(&mut self.pending) {
                self.send_deltas(to, entries);
            }
        }
        if now_ms >= self.next_anti_entropy_ms {
            self.anti_entropy_round(now_ms, store);
        }
    }
}
