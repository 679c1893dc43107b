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
//! - **Failure detection** (SWIM-style): each probe period the agent pings the next member
//!   in a shuffled round; no answer within the probe timeout makes it *suspect*; suspect for
//!   longer than the suspicion timeout makes it *dead*. A node that hears it is suspected
//!   raises its incarnation, which refutes the suspicion. Membership rides on every message.
//! - **Replication**: deltas of local writes are merged per key and sent to the key's other
//!   owners at once when no deltas are in flight to them, else together when the message
//!   in flight is answered or at the next gossip period, one batch per destination. Writes
//!   whose client waits for their replicas ([`replicate`](ClusterAgent::replicate)) ride
//!   the same messages.
//! - **Anti-entropy**: each period the agent sends one peer a digest (per bucket of keys both
//!   own, a hash of keys and values); the peer answers with its entries of the buckets that
//!   differ, and the agent pushes its own. This repairs whatever gossip lost, and fills a
//!   node that restarted empty.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

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
/// Keys a node walks per second for anti-entropy digests at most (on average, each round
/// walks the node's keys twice: for its own digest and for a peer's), about 2.5% of a core
/// per walk at a microsecond a key; a store bigger than this has rounds further apart than
/// the configured period.
const ANTI_ENTROPY_KEYS_PER_SECOND: u64 = 25_000;
/// A node looks for entries it holds but does not own at least every this many
/// anti-entropy rounds, even when nothing suggests there are any.
const HANDOFF_SWEEP_ROUNDS: u32 = 30;

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
    /// Merges entries received from a peer.
    fn merge_entries(&mut self, now_ms: u64, entries: Vec<(Bytes, Value)>);
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
    /// Drops entries handed off to every owner, unless they changed since (a write that
    /// arrived meanwhile must be handed off too).
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
    /// Entries handed off to their owners and dropped here.
    pub handed_off: u64,
}

/// Entries being handed to their owners: what was sent, and which owners have not yet
/// acknowledged each key.
#[derive(Default)]
struct Handoff {
    sent: HashMap<Bytes, (Value, BTreeSet<NodeAddr>)>,
    requests: HashMap<u64, (NodeAddr, Vec<Bytes>)>,
}

struct Probe {
    id: u64,
    to: NodeAddr,
    deadline_ms: u64,
}

/// A copy sent to an owner a key gains when its replication widens.
struct Widening {
    key: Bytes,
    value: Value,
    /// The factors the key gets once every gained owner took its copy.
    factors: super::replication::Factors,
    owner: NodeAddr,
    sent_ms: u64,
}

/// How long a widening copy or a hand-over message waits for its answer before it is sent
/// again (lost on the way).
const RESEND_AFTER_MS: u64 = 1_000;

/// A hand-over message of a graceful leave.
struct HandOver {
    owner: NodeAddr,
    entries: Vec<(Bytes, Value)>,
    sent_ms: u64,
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
    handoff: Handoff,
    /// Whether the next anti-entropy round must look for entries to hand off.
    handoff_due: bool,
    /// Rounds since the last look.
    rounds_since_handoff: u32,
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
    /// the next hand-off walk.
    hints_in_flight: HashMap<u64, Vec<(Bytes, Value)>>,
    /// Gossip messages of deltas not yet answered, and to whom: a peer with none gets the
    /// deltas of new writes at once (an idle link replicates eagerly); a busy one gets them
    /// batched, when its message is answered or at the next gossip period.
    deltas_in_flight: HashMap<u64, NodeAddr>,
    /// Tickets settled: reached enough replicas (`Ok`), or not (`Err(reached, wanted)`).
    replicated: VecDeque<(u64, Replicated)>,
    next_ticket: u64,
}

/// Whether writes reached the replicas asked for (`Err((reached, wanted))`: too few).
pub type Replicated = Result<(), (usize, usize)>;

/// Writes waiting for their replicas (ack `all`, k or `visible`): per key, how many
/// replicas it needs and how many hold it (this node counts), and the owners not yet heard
/// from with the keys each is sent. Counted per key: a batch whose keys have different
/// owners is acknowledged only when every key reached its replicas.
struct ReplicaWait {
    keys: BTreeMap<Bytes, (usize, usize)>,
    /// The owners whose answer is awaited, with the keys they are sent.
    owed: BTreeMap<NodeAddr, BTreeSet<Bytes>>,
    /// Whether replicas that could not be reached fail the writes (`Need::Owners`) or
    /// not (`Need::Live`).
    strict: bool,
}

/// Deltas messages a node keeps in flight to one owner while clients wait for their writes
/// to reach it: a client's write goes out at once unless this many are unanswered (then in
/// the next one, with every write that arrives meanwhile). Background gossip keeps one.
pub const WAITED_DELTAS_IN_FLIGHT: usize = 4;

/// Which owners must merge writes before a client is answered (see
/// [`ClusterAgent::replicate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// At least this many replicas of each key, counting this node (`usize::MAX`: every
    /// owner); if fewer take them, the writes fail.
    Owners(usize),
    /// Every owner seen alive, so that a read through any node finds the writes. An owner
    /// that does not answer does not fail them: it gets them later, as with ack `one`.
    Live,
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
            handoff: Handoff::default(),
            handoff_due: true,
            rounds_since_handoff: 0,
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

    /// Gives `key` its own replication vector (`None` parts: the defaults); spreads to every
    /// node with the next messages, and the data follows by anti-entropy.
    pub fn set_replication(
        &mut self,
        now_ms: u64,
        key: Bytes,
        factors: super::replication::Factors,
    ) {
        let stamp = calm_lattice::Stamp::new(
            self.clock.tick(now_ms),
            calm_lattice::ReplicaId(u64::from(node_id(&self.me))),
        );
        Arc::make_mut(&mut self.table).set(key, factors, stamp);
        self.handoff_due = true;
        // Tell everyone now rather than at the next probe.
        for peer in self.live_peers() {
            self.send(peer, PeerRequest::Ping);
        }
    }

    /// Gives `key` more replicas, moving the data first: this node (if it holds the key)
    /// sends its value to the owners the key gains, and changes the table — which sends
    /// clients to them — only once they all took it (copies lost on the way are sent again).
    /// A node that does not hold the key leaves it to the key's owners; an owner with no
    /// value (a key read but never written) changes the table at once. Fewer replicas need no move: use
    /// [`set_replication`](Self::set_replication).
    pub fn widen_replication(
        &mut self,
        now_ms: u64,
        key: Bytes,
        factors: super::replication::Factors,
        store: &mut impl LocalStore,
    ) {
        let Some(value) = store.value_of(&key) else {
            // An owner without a value has nothing to move (a key read but never written).
            if self.owns(&key) {
                self.set_replication(now_ms, key, factors);
            }
            return;
        };
        if self.widening.values().any(|w| w.key == key) {
            return;
        }
        let rf = factors
            .global
            .map(usize::from)
            .unwrap_or(self.config.replication);
        let now_owners = self.owners(&key);
        let gained: Vec<NodeAddr> = self
            .ring
            .owners(&key, rf)
            .into_iter()
            .filter_map(|id| self.ring_nodes.get(&id).cloned())
            .filter(|a| *a != self.me && !now_owners.contains(a))
            .collect();
        if gained.is_empty() {
            self.set_replication(now_ms, key, factors);
            return;
        }
        for owner in gained {
            let id = self.send(
                owner.clone(),
                PeerRequest::Deltas(vec![(key.clone(), value.clone())]),
            );
            self.widening.insert(
                id,
                Widening {
                    key: key.clone(),
                    value: value.clone(),
                    factors,
                    owner,
                    sent_ms: now_ms,
                },
            );
        }
    }

    /// Sends again the copies of [`widen_replication`](Self::widen_replication) unanswered
    /// for a second (lost on the way).
    fn resend_widening(&mut self, now_ms: u64) {
        let late: Vec<u64> = self
            .widening
            .iter()
            .filter(|(_, w)| now_ms.saturating_sub(w.sent_ms) >= RESEND_AFTER_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(w) = self.widening.remove(&id) {
                let id = self.send(
                    w.owner.clone(),
                    PeerRequest::Deltas(vec![(w.key.clone(), w.value.clone())]),
                );
                self.widening.insert(
                    id,
                    Widening {
                        sent_ms: now_ms,
                        ..w
                    },
                );
            }
        }
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
            self.handoff_due = true;
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

    /// Sends the deltas queued for `to` (if it still owns keys), remembering the hints among
    /// them (see `hints_in_flight`).
    fn send_deltas(&mut self, to: NodeAddr, entries: HashMap<Bytes, Value>) {
        let tickets = self.awaiting.remove(&to).unwrap_or_default();
        if entries.is_empty() || !self.ring_nodes.values().any(|a| *a == to) {
            self.owner_answered(&to, tickets, false);
            return;
        }
        self.stats.delta_batches += 1;
        let hints: Vec<(Bytes, Value)> = entries
            .iter()
            .filter(|(k, _)| !self.owns(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let id = self.send(
            to.clone(),
            PeerRequest::Deltas(entries.into_iter().collect()),
        );
        if !hints.is_empty() {
            self.hints_in_flight.insert(id, hints);
        }
        if !tickets.is_empty() {
            self.message_tickets.insert(id, (to.clone(), tickets));
        }
        self.deltas_in_flight.insert(id, to);
    }

    /// `owner` merged (`merged`), or will not be heard from about, the writes of `tickets`.
    fn owner_answered(&mut self, owner: &str, tickets: Vec<u64>, merged: bool) {
        for ticket in tickets {
            if let Some(w) = self.replica_waits.get_mut(&ticket)
                && let Some(keys) = w.owed.remove(owner)
                && merged
            {
                for key in keys {
                    if let Some((_, reached)) = w.keys.get_mut(&key) {
                        *reached += 1;
                    }
                }
            }
            self.settle_replication(ticket);
        }
    }

    /// Queues deltas of writes merged here for the keys' other owners, and sends them at
    /// once to an owner with no deltas in flight (an idle link replicates eagerly; a busy
    /// one batches).
    pub fn on_local_changes(&mut self, changes: Vec<(Bytes, Value)>) {
        self.queue_changes(changes);
        let idle: Vec<NodeAddr> = self
            .pending
            .keys()
            .filter(|to| !self.deltas_in_flight.values().any(|a| a == *to))
            .cloned()
            .collect();
        for to in idle {
            if let Some(entries) = self.pending.remove(&to) {
                self.send_deltas(to, entries);
            }
        }
    }

    /// Queues deltas of writes merged here for the keys' other owners (sent at the next
    /// gossip period, or when the link is free).
    fn queue_changes(&mut self, changes: Vec<(Bytes, Value)>) {
        for (key, delta) in changes {
            for owner in self.owners(&key) {
                if owner == self.me {
                    continue;
                }
                let per_key = self.pending.entry(owner).or_default();
                match per_key.get_mut(&key) {
                    Some(existing) => {
                        existing.merge_replicated(delta.clone());
                    }
                    None => {
                        per_key.insert(key.clone(), delta.clone());
                    }
                }
            }
        }
    }

    /// Sends writes merged here to their other owners for a client waiting until the owners
    /// `need` asks for merged them: at once, unless [`WAITED_DELTAS_IN_FLIGHT`] deltas
    /// messages to the owner are unanswered (then with the next one, sent when one is
    /// answered), so a busy link carries many clients' writes in one message. Returns a ticket;
    /// [`poll_replicated`](Self::poll_replicated) says when enough owners merged them, or
    /// what became of them once every owner answered or failed
    /// ([`handle_failure`](Self::handle_failure)).
    pub fn replicate(&mut self, changes: Vec<(Bytes, Value)>, need: Need) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let mut wait = ReplicaWait {
            keys: BTreeMap::new(),
            owed: BTreeMap::new(),
            strict: matches!(need, Need::Owners(_)),
        };
        for (key, _) in &changes {
            let others: Vec<NodeAddr> = self
                .owners(key)
                .into_iter()
                .filter(|o| *o != self.me)
                .collect();
            let wanted = match need {
                Need::Owners(k) => {
                    let owners = others.len() + usize::from(self.owns(key));
                    k.min(owners.max(1))
                }
                Need::Live => {
                    1 + others
                        .iter()
                        .filter(|o| {
                            self.membership
                                .get(o)
                                .is_some_and(|m| m.status == Status::Alive)
                        })
                        .count()
                }
            };
            wait.keys.insert(key.clone(), (wanted, 1));
            for o in others {
                wait.owed.entry(o).or_default().insert(key.clone());
            }
        }
        self.queue_changes(changes);
        let owners: Vec<NodeAddr> = wait.owed.keys().cloned().collect();
        self.replica_waits.insert(ticket, wait);
        for o in owners {
            self.awaiting.entry(o.clone()).or_default().push(ticket);
            let in_flight = self.deltas_in_flight.values().filter(|a| **a == o).count();
            if in_flight < WAITED_DELTAS_IN_FLIGHT {
                let entries = self.pending.remove(&o).unwrap_or_default();
                self.send_deltas(o, entries);
            }
        }
        self.settle_replication(ticket);
        ticket
    }

    /// Request `id` was lost (no answer will come): a node's shell reports what its
    /// transport gave up on.
    pub fn handle_failure(&mut self, id: u64) {
        self.deltas_in_flight.remove(&id);
        if let Some(hints) = self.hints_in_flight.remove(&id) {
            // Queued again for the keys' owners as they are now, for the next gossip period
            // (not at once: an owner still cut off would fail it again at once).
            self.queue_changes(hints);
        }
        if let Some((owner, tickets)) = self.message_tickets.remove(&id) {
            self.owner_answered(&owner, tickets, false);
        }
    }

    /// Writes that reached enough replicas (`Ok`), or could not (`Err((reached, wanted))`),
    /// by the ticket of [`replicate`](Self::replicate).
    pub fn poll_replicated(&mut self) -> Option<(u64, Replicated)> {
        self.replicated.pop_front()
    }

    fn settle_replication(&mut self, ticket: u64) {
        let Some(w) = self.replica_waits.get(&ticket) else {
            return;
        };
        // The key furthest from its replicas decides.
        let short = w
            .keys
            .values()
            .filter(|(need, reached)| reached < need)
            .min_by_key(|(need, reached)| (*reached, std::cmp::Reverse(*need)));
        let outcome = match short {
            None => Ok(()),
            Some(_) if w.owed.is_empty() && !w.strict => Ok(()),
            Some(&(need, reached)) if w.owed.is_empty() => Err((reached, need)),
            Some(_) => return,
        };
        self.replica_waits.remove(&ticket);
        self.replicated.push_back((ticket, outcome));
    }

    /// Merges a peer's membership view; refutes news of this node's failure.
    fn absorb(&mut self, now_ms: u64, view: Membership) {
        self.membership.merge(view);
        if let Some(me) = self.membership.get(&self.me)
            && me.status != Status::Alive
            && !self.left
        {
            // Someone thinks this node is suspect or dead: it is not.
            self.incarnation = me.incarnation + 1;
            self.membership
                .record(&self.me, self.incarnation, Status::Alive);
            self.stats.refutations += 1;
        }
        for m in self.membership.members() {
            if m.status == Status::Suspect {
                self.suspect_since.entry(m.addr).or_insert(now_ms);
            } else {
                self.suspect_since.remove(&m.addr);
            }
        }
        self.rebuild_ring(now_ms);
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
            self.handoff_due = true;
        }
        calm_lattice::Merge::merge(&mut self.load, envelope.load);
        match envelope.body {
            PeerRequest::Ping => PeerReply::Ack {
                membership: self.membership.clone(),
            },
            PeerRequest::Deltas(entries) => {
                self.handoff_due |= !self.owns_all(&entries);
                store.merge_entries(now_ms, entries);
                PeerReply::Ack {
                    membership: self.membership.clone(),
                }
            }
            PeerRequest::Digest(theirs) => {
                let filter = self.filter_with(&from);
                let mine = store.digest(&filter);
                let mismatched: BTreeSet<u16> = theirs
                    .keys()
                    .chain(mine.keys())
                    .copied()
                    .filter(|b| theirs.get(b) != mine.get(b))
                    .collect();
                let entries = store.entries_in(&filter, &mismatched, self.config.repair_batch);
                PeerReply::Repair {
                    membership: self.membership.clone(),
                    entries,
                    mismatched: mismatched.into_iter().collect(),
                }
            }
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
        self.draining.remove(&id);
        // A node that has left takes what it is sent and answers, but it will not keep it:
        // it is no replica of a write, and hints sent to it go to the owners that stay.
        let gone = matches!(&reply, PeerReply::Ack { membership }
            if membership.get(from).is_some_and(|m| m.status == Status::Left));
        if let Some(hints) = self.hints_in_flight.remove(&id)
            && gone
        {
            self.queue_changes(hints);
        }
        if let Some(to) = self.deltas_in_flight.remove(&id) {
            // The link is free: what piled up meanwhile goes now.
            if let Some(entries) = self.pending.remove(&to) {
                self.send_deltas(to, entries);
            }
        }
        if let Some((owner, tickets)) = self.message_tickets.remove(&id) {
            self.owner_answered(&owner, tickets, !gone);
        }
        if let Some(Widening { key, factors, .. }) = self.widening.remove(&id)
            && !self.widening.values().any(|w| w.key == key)
        {
            // Every gained owner holds the value: now clients may go there.
            self.set_replication(now_ms, key, factors);
        }
        if let Some((owner, keys)) = self.handoff.requests.remove(&id) {
            // Learn first whether the owner is still one: a node that is leaving takes what
            // it is handed and answers, but it will not keep it; a key handed to it stays
            // here until it reaches an owner that stays.
            if let PeerReply::Ack { membership } = &reply {
                self.absorb(now_ms, membership.clone());
            }
            let mut done = Vec::new();
            for key in keys {
                let still_owner = self.owners(&key).contains(&owner);
                if let Some((_, waiting)) = self.handoff.sent.get_mut(&key)
                    && still_owner
                {
                    waiting.remove(&owner);
                    if waiting.is_empty()
                        && let Some((value, _)) = self.handoff.sent.remove(&key)
                        // An owner again (the ring changed while the key was on its way:
                        // a leaving node handed it here): it keeps its copy.
                        && !self.owns(&key)
                    {
                        done.push((key, value));
                    }
                }
            }
            if !done.is_empty() {
                self.stats.handed_off += done.len() as u64;
                store.drop_if_unchanged(done);
            }
        }
        match reply {
            PeerReply::Ack { membership } => self.absorb(now_ms, membership),
            PeerReply::Repair {
                membership,
                entries,
                mismatched,
            } => {
                self.absorb(now_ms, membership);
                self.stats.repaired_entries += entries.len() as u64;
                self.handoff_due |= !self.owns_all(&entries);
                store.merge_entries(now_ms, entries);
                if !mismatched.is_empty() {
                    // Push our side of the differing buckets.
                    let filter = self.filter_with(from);
                    let buckets: BTreeSet<u16> = mismatched.into_iter().collect();
                    let mine = store.entries_in(&filter, &buckets, self.config.repair_batch);
                    if !mine.is_empty() {
                        self.send(from.to_string(), PeerRequest::Deltas(mine));
                    }
                }
            }
        }
    }

    fn live_peers(&self) -> Vec<NodeAddr> {
        self.membership
            .members()
            .into_iter()
            .filter(|m| m.addr != self.me && m.status.owns_keys())
            .map(|m| m.addr)
            .collect()
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
        // An unanswered probe makes its target suspect.
        if let Some(p) = &self.probe
            && now_ms >= p.deadline_ms
        {
            let to = p.to.clone();
            self.probe = None;
            if let Some(m) = self.membership.get(&to)
                && m.status == Status::Alive
            {
                self.membership.record(&to, m.incarnation, Status::Suspect);
                self.suspect_since.insert(to, now_ms);
            }
        }
        // Suspect for too long: dead.
        let expired: Vec<NodeAddr> = self
            .suspect_since
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) >= self.config.suspect_timeout_ms)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in expired {
            self.suspect_since.remove(&addr);
            if let Some(m) = self.membership.get(&addr)
                && m.status == Status::Suspect
            {
                self.membership.record(&addr, m.incarnation, Status::Dead);
                self.pending.remove(&addr);
                let tickets = self.awaiting.remove(&addr).unwrap_or_default();
                self.owner_answered(&addr, tickets, false);
            }
        }
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
            // A digest walks every key: a big store spaces its rounds out so the walks stay
            // a small, fixed part of the node's work — ten times that while catching up
            // (after a start or a ring change), when rounds come every gossip period.
            let keys = store.key_count() as u64;
            let period = if now_ms < self.catch_up_until_ms {
                self.config
                    .gossip_period_ms
                    .max(keys.saturating_mul(1000) / (10 * ANTI_ENTROPY_KEYS_PER_SECOND))
            } else {
                self.config
                    .anti_entropy_period_ms
                    .max(keys.saturating_mul(1000) / ANTI_ENTROPY_KEYS_PER_SECOND)
            };
            self.next_anti_entropy_ms = now_ms + period;
            self.hand_off(store);
            // Only peers this node shares keys with: the others have nothing to compare.
            let peers: Vec<NodeAddr> = self
                .live_peers()
                .into_iter()
                .filter(|p| {
                    self.filter_with(p)
                        .candidates()
                        .is_none_or(|keys| !keys.is_empty())
                })
                .collect();
            if !peers.is_empty() {
                let peer = peers[self.rng.random_range(0..peers.len())].clone();
                let digest = store.digest(&self.filter_with(&peer));
                self.stats.anti_entropy_rounds += 1;
                self.send(peer, PeerRequest::Digest(digest));
            }
        }
    }

    /// Sends entries this node holds but does not own to their owners (a new round each
    /// anti-entropy period; a round whose answers were lost is simply sent again).
    fn hand_off(&mut self, store: &mut impl LocalStore) {
        // Walking every key is the expensive part: only when something may have left
        // entries here that another node owns (the ring or the table changed, entries came
        // from peers, the last round sent some), and once in a while anyway.
        self.rounds_since_handoff += 1;
        if !self.handoff_due && self.rounds_since_handoff < HANDOFF_SWEEP_ROUNDS {
            return;
        }
        self.handoff_due = false;
        self.rounds_since_handoff = 0;
        self.handoff = Handoff::default();
        if self.ring_nodes.is_empty() {
            return;
        }
        let mine = OwnerFilter {
            ring: self.ring.clone(),
            replication: self.config.replication,
            table: self.table.clone(),
            nodes: vec![node_id(&self.me)],
            overrides_only: false,
        };
        let mut per_owner: BTreeMap<NodeAddr, Vec<(Bytes, Value)>> = BTreeMap::new();
        for (key, value) in store.entries_not_owned(&mine, self.config.repair_batch) {
            let owners: BTreeSet<NodeAddr> = self.owners(&key).into_iter().collect();
            if owners.is_empty() {
                continue;
            }
            for o in &owners {
                per_owner
                    .entry(o.clone())
                    .or_default()
                    .push((key.clone(), value.clone()));
            }
            self.handoff.sent.insert(key, (value, owners));
        }
        // Until a round finds nothing, the next one looks again (answers may be lost).
        self.handoff_due |= !per_owner.is_empty();
        for (owner, entries) in per_owner {
            let keys = entries.iter().map(|(k, _)| k.clone()).collect();
            let id = self.send(owner.clone(), PeerRequest::Deltas(entries));
            self.handoff.requests.insert(id, (owner, keys));
        }
    }

    fn probe_next(&mut self, now_ms: u64) {
        // Seeds not yet known are pinged to join through them; they are not suspected.
        let known: BTreeSet<NodeAddr> = self
            .membership
            .members()
            .into_iter()
            .map(|m| m.addr)
            .collect();
        for seed in self.seeds.clone() {
            if !known.contains(&seed) {
                self.send(seed, PeerRequest::Ping);
            }
        }
        // Dead members are pinged now and then (without suspicion): after a partition heals,
        // the two sides rediscover each other this way. A node that hears it was declared
        // dead refutes it, and its answer carries the refutation back.
        let dead: Vec<NodeAddr> = self
            .membership
            .members()
            .into_iter()
            .filter(|m| m.addr != self.me && m.status == Status::Dead)
            .map(|m| m.addr)
            .collect();
        if !dead.is_empty() {
            let pick = dead[self.rng.random_range(0..dead.len())].clone();
            self.send(pick, PeerRequest::Ping);
        }
        if self.probe.is_some() {
            return;
        }
        if self.probe_round.is_empty() {
            self.probe_round = self
                .membership
                .members()
                .into_iter()
                .filter(|m| m.addr != self.me && m.status.owns_keys())
                .map(|m| m.addr)
                .collect();
            self.probe_round.shuffle(&mut self.rng);
        }
        if let Some(to) = self.probe_round.pop() {
            let id = self.send(to.clone(), PeerRequest::Ping);
            self.probe = Some(Probe {
                id,
                to,
                deadline_ms: now_ms + self.config.probe_timeout_ms,
            });
        }
    }

    /// A filter every key matches (to walk everything this node holds).
    pub fn everything(&self) -> OwnerFilter {
        OwnerFilter {
            ring: self.ring.clone(),
            replication: self.config.replication,
            table: self.table.clone(),
            nodes: Vec::new(),
            overrides_only: false,
        }
    }

    /// Before a graceful leave: sends `entries` at `now_ms` to the owners their keys will
    /// have once this node is gone (it stays a member, and keeps its copies, until
    /// [`leave`](Self::leave)). Returns how many keys were sent;
    /// [`handing_over`](Self::handing_over) counts the messages not yet answered, and
    /// [`resend_hand_over`](Self::resend_hand_over) sends again those that were lost.
    pub fn hand_over(&mut self, now_ms: u64, entries: Vec<(Bytes, Value)>) -> usize {
        let mut nodes = self.membership.owners();
        let me = node_id(&self.me);
        nodes.remove(&me);
        if nodes.is_empty() {
            return 0;
        }
        let ring = HashRing::new(nodes.keys().copied(), 64);
        let mut per_owner: BTreeMap<NodeAddr, Vec<(Bytes, Value)>> = BTreeMap::new();
        let count = entries.len();
        for (key, value) in entries {
            let rf = self.table.factor(&key).unwrap_or(self.config.replication);
            for id in ring.owners(&key, rf) {
                if let Some(addr) = nodes.get(&id) {
                    per_owner
                        .entry(addr.clone())
                        .or_default()
                        .push((key.clone(), value.clone()));
                }
            }
        }
        for (owner, entries) in per_owner {
            let id = self.send(owner.clone(), PeerRequest::Deltas(entries.clone()));
            self.draining.insert(
                id,
                HandOver {
                    owner,
                    entries,
                    sent_ms: now_ms,
                },
            );
        }
        count
    }

    /// Sends again the hand-over messages unanswered for `after_ms` (lost on the way).
    pub fn resend_hand_over(&mut self, now_ms: u64, after_ms: u64) {
        let late: Vec<u64> = self
            .draining
            .iter()
            .filter(|(_, h)| now_ms.saturating_sub(h.sent_ms) >= after_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(h) = self.draining.remove(&id) {
                let id = self.send(h.owner.clone(), PeerRequest::Deltas(h.entries.clone()));
                self.draining.insert(
                    id,
                    HandOver {
                        sent_ms: now_ms,
                        ..h
                    },
                );
            }
        }
    }

    /// Hand-over messages not yet answered.
    pub fn handing_over(&self) -> usize {
        self.draining.len()
    }

    /// Leaves the cluster on purpose: marks this node as left and tells every live peer.
    pub fn leave(&mut self) {
        self.left = true;
        self.membership
            .record(&self.me, self.incarnation, Status::Left);
        // Writes acknowledged here but not yet gossiped go out now.
        for (to, entries) in std::mem::take(&mut self.pending) {
            let id = self.send(
                to.clone(),
                PeerRequest::Deltas(entries.into_iter().collect()),
            );
            if let Some(tickets) = self.awaiting.remove(&to) {
                self.message_tickets.insert(id, (to, tickets));
            }
        }
        for peer in self.live_peers() {
            self.send(peer, PeerRequest::Ping);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::{HashRing, Worker, WorkerConfig, Write};
    use calm_lattice::ReplicaId;

    /// Two nodes, both owning every key, run for `seconds` of simulated time with `keys`
    /// keys each; returns node 0's anti-entropy rounds.
    fn rounds_with(keys: usize, seconds: u64) -> u64 {
        let config = ClusterConfig {
            replication: 2,
            anti_entropy_period_ms: 200,
            ..ClusterConfig::default()
        };
        let mut agents = [
            ClusterAgent::new("n0".into(), vec![], config, 1, 1),
            ClusterAgent::new("n1".into(), vec!["n0".into()], config, 1, 2),
        ];
        let mut stores: Vec<Worker> = (0..2)
            .map(|i| {
                let ring = Arc::new(HashRing::new([0], 1));
                let mut w = Worker::new(0, ReplicaId(i + 1), ring, WorkerConfig::default());
                let ops: Vec<crate::Op> = (0..keys)
                    .map(|k| crate::Op::Write {
                        key: Bytes::from(format!("k{k}")),
                        write: Write::Lww(Bytes::from_static(b"v")),
                    })
                    .collect();
                w.handle_ops(1, ops);
                w
            })
            .collect();
        let mut now = 1;
        while now < seconds * 1000 {
            now += 50;
            for i in 0..2 {
                agents[i].handle_tick(now, &mut stores[i]);
                while let Some(out) = agents[i].poll_outgoing() {
                    let j = if out.to == "n0" { 0 } else { 1 };
                    let reply = agents[j].handle_request(now, out.envelope, &mut stores[j]);
                    let me = agents[j].me().to_string();
                    agents[i].handle_reply(now, out.id, &me, reply, &mut stores[i]);
                }
            }
        }
        agents[0].stats().anti_entropy_rounds
    }

    /// Writes acknowledged by all replicas: the agent sends them to every other owner and
    /// settles the ticket once enough merged them, or once every owner answered or failed.
    /// Three agents (and their workers) with `replication` that have met each other.
    fn three_that_met(replication: usize) -> (Vec<ClusterAgent>, Vec<Worker>, u64) {
        let config = ClusterConfig {
            replication,
            ..ClusterConfig::default()
        };
        let mut agents: Vec<ClusterAgent> = (0..3u64)
            .map(|i| {
                let seeds = if i == 0 { vec![] } else { vec!["n0".into()] };
                ClusterAgent::new(format!("n{i}"), seeds, config, 1, i)
            })
            .collect();
        let ring = Arc::new(HashRing::new([0], 1));
        let mut stores: Vec<Worker> = (0..3)
            .map(|i| Worker::new(0, ReplicaId(i + 1), ring.clone(), WorkerConfig::default()))
            .collect();
        let index = |to: &str| to[1..].parse::<usize>().unwrap();
        let mut now = 1;
        while now < 3_000 {
            now += 50;
            for i in 0..3 {
                agents[i].handle_tick(now, &mut stores[i]);
                while let Some(out) = agents[i].poll_outgoing() {
                    let j = index(&out.to);
                    let reply = agents[j].handle_request(now, out.envelope, &mut stores[j]);
                    let me = agents[j].me().to_string();
                    agents[i].handle_reply(now, out.id, &me, reply, &mut stores[i]);
                }
            }
        }
        (agents, stores, now)
    }

    /// A key `agent` sees owned by `owners`, in that order.
    fn key_owned_by(agent: &ClusterAgent, owners: &[&str]) -> Bytes {
        (0..1000)
            .map(|i| Bytes::from(format!("key{i}")))
            .find(|k| agent.owners(k).iter().eq(owners))
            .expect("some key has these owners")
    }

    /// Increments `keys` on `store`; the deltas.
    fn increment(
        store: &mut Worker,
        now: u64,
        keys: impl IntoIterator<Item = Bytes>,
    ) -> crate::worker::Changes {
        store.collect_changes();
        let ops: Vec<crate::Op> = keys
            .into_iter()
            .map(|key| crate::Op::Write {
                key,
                write: Write::Increment(1),
            })
            .collect();
        store.handle_ops(now, ops);
        store.take_changes()
    }

    #[test]
    fn an_idle_link_replicates_at_once_and_a_busy_one_batches() {
        let (mut agents, mut stores, now) = three_that_met(2);
        let key = key_owned_by(&agents[0], &["n0", "n1"]);
        stores[0].collect_changes();
        let write = |agents: &mut Vec<ClusterAgent>, stores: &mut Vec<Worker>| {
            stores[0].handle_ops(
                now,
                [crate::Op::Write {
                    key: key.clone(),
                    write: Write::Increment(1),
                }],
            );
            agents[0].on_local_changes(stores[0].take_changes());
            let mut deltas = Vec::new();
            while let Some(out) = agents[0].poll_outgoing() {
                if matches!(out.envelope.body, PeerRequest::Deltas(_)) {
                    deltas.push(out);
                }
            }
            deltas
        };
        // No tick in between: the write goes at once.
        let first = write(&mut agents, &mut stores);
        assert_eq!(
            first.len(),
            1,
            "the idle link to n1 carries the write at once"
        );
        // While that message is in flight, writes wait, merged per key.
        assert!(write(&mut agents, &mut stores).is_empty());
        assert!(write(&mut agents, &mut stores).is_empty());
        // Its answer frees the link: what piled up goes in one message.
        let out = first.into_iter().next().unwrap();
        let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
        agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
        let next: Vec<Outgoing> = std::iter::from_fn(|| agents[0].poll_outgoing())
            .filter(|o| matches!(o.envelope.body, PeerRequest::Deltas(_)))
            .collect();
        assert_eq!(next.len(), 1);
        assert!(matches!(&next[0].envelope.body, PeerRequest::Deltas(d) if d.len() == 1));
    }

    #[test]
    fn a_hint_whose_gossip_fails_is_sent_again_at_the_next_gossip() {
        // n0 keeps a write for a key n1 and n2 own (a hint): a gossip message to them that
        // fails must not drop it.
        let (mut agents, mut stores, mut now) = three_that_met(2);
        let key = (0..1000)
            .map(|i| Bytes::from(format!("key{i}")))
            .find(|k| !agents[0].owns(k))
            .expect("some key is not n0's");
        stores[0].collect_changes();
        stores[0].handle_ops(
            now,
            [crate::Op::Write {
                key: key.clone(),
                write: Write::Increment(1),
            }],
        );
        agents[0].on_local_changes(stores[0].take_changes());
        let carries = |envelope: &PeerEnvelope| matches!(&envelope.body, PeerRequest::Deltas(d) if d.iter().any(|(k, _)| *k == key));
        for round in 0..3 {
            now += 200;
            agents[0].handle_tick(now, &mut stores[0]);
            let mut sent = 0;
            while let Some(out) = agents[0].poll_outgoing() {
                if carries(&out.envelope) {
                    sent += 1;
                    agents[0].handle_failure(out.id);
                }
            }
            assert_eq!(sent, 2, "round {round}: the hint goes to both owners again");
        }
    }

    #[test]
    fn a_node_that_left_is_no_replica_of_a_write() {
        // n1 owns the key with n0 but has announced its leave (its hand-over is done): it
        // still answers what it is sent, and must not count as the write's second replica.
        let (mut agents, mut stores, now) = three_that_met(2);
        let key = key_owned_by(&agents[0], &["n0", "n1"]);
        agents[1].leave();
        let changes = increment(&mut stores[0], now, [key]);
        let ticket = agents[0].replicate(changes, Need::Owners(usize::MAX));
        while let Some(out) = agents[0].poll_outgoing() {
            if out.to == "n1" {
                let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
                agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
            }
        }
        assert_eq!(agents[0].poll_replicated(), Some((ticket, Err((1, 2)))));
    }

    #[test]
    fn a_batch_is_acknowledged_only_when_each_key_reached_its_replicas() {
        // Two keys n0 owns, one with n1 and one with n2: n1 merging its key must not count
        // as a second replica of the other.
        let (mut agents, mut stores, now) = three_that_met(2);
        let k1 = key_owned_by(&agents[0], &["n0", "n1"]);
        let k2 = key_owned_by(&agents[0], &["n0", "n2"]);
        let changes = increment(&mut stores[0], now, [k1, k2]);
        let ticket = agents[0].replicate(changes, Need::Owners(usize::MAX));
        while let Some(out) = agents[0].poll_outgoing() {
            if out.to == "n1" {
                let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
                agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
            } else {
                agents[0].handle_failure(out.id);
            }
        }
        assert_eq!(
            agents[0].poll_replicated(),
            Some((ticket, Err((1, 2)))),
            "the key owned with n2 has one replica"
        );
    }

    #[test]
    fn writes_wait_for_their_replicas_through_the_agent() {
        let (mut agents, mut stores, now) = three_that_met(3);
        let index = |to: &str| to[1..].parse::<usize>().unwrap();
        assert_eq!(agents[0].owners(b"k").len(), 3);
        stores[0].collect_changes();
        stores[0].handle_ops(
            now,
            [crate::Op::Write {
                key: Bytes::from_static(b"k"),
                write: Write::Increment(5),
            }],
        );
        let changes = stores[0].take_changes();
        // All replicas asked; n1 merges, the message to n2 is lost.
        let run = |agents: &mut Vec<ClusterAgent>, stores: &mut Vec<Worker>, need| {
            let ticket = agents[0].replicate(changes.clone(), need);
            while let Some(out) = agents[0].poll_outgoing() {
                if !matches!(out.envelope.body, PeerRequest::Deltas(_)) {
                    continue;
                }
                let j = index(&out.to);
                if j == 1 {
                    let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
                    agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
                } else {
                    agents[0].handle_failure(out.id);
                }
            }
            (ticket, agents[0].poll_replicated())
        };
        let (t, outcome) = run(&mut agents, &mut stores, Need::Owners(usize::MAX));
        assert_eq!(
            outcome,
            Some((t, Err((2, 3)))),
            "two of three replicas hold it"
        );
        let (t, outcome) = run(&mut agents, &mut stores, Need::Owners(2));
        assert_eq!(outcome, Some((t, Ok(()))), "two replicas were asked for");
        assert!(stores[1].value(b"k").is_some(), "n1 merged the write");
        assert!(agents[0].poll_replicated().is_none());
    }

    #[test]
    fn visible_writes_wait_for_every_owner_seen_alive_and_never_fail() {
        // Ack `visible`: n0's write to a key all three own is answered only once n1 and n2
        // merged it (or their messages failed, which does not fail it); a suspected owner
        // is not waited for.
        let (mut agents, mut stores, now) = three_that_met(3);
        let changes = increment(&mut stores[0], now, [Bytes::from_static(b"k")]);
        let ticket = agents[0].replicate(changes.clone(), Need::Live);
        let sent: Vec<Outgoing> = std::iter::from_fn(|| agents[0].poll_outgoing()).collect();
        assert_eq!(
            sent.len(),
            2,
            "both other owners are sent the write at once"
        );
        for out in sent {
            assert!(agents[0].poll_replicated().is_none(), "answered too early");
            if out.to == "n1" {
                let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
                agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
            } else {
                agents[0].handle_failure(out.id);
            }
        }
        assert_eq!(agents[0].poll_replicated(), Some((ticket, Ok(()))));
        assert!(stores[1].value(b"k").is_some(), "n1 merged the write");

        // n2 suspected: the write is answered once n1 merged it.
        let incarnation = agents[0].membership.get("n2").unwrap().incarnation;
        agents[0]
            .membership
            .record("n2", incarnation, Status::Suspect);
        let ticket = agents[0].replicate(changes, Need::Live);
        for out in std::iter::from_fn(|| agents[0].poll_outgoing()).collect::<Vec<_>>() {
            if out.to == "n1" {
                let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
                agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
            }
        }
        assert_eq!(
            agents[0].poll_replicated(),
            Some((ticket, Ok(()))),
            "n2's answer is not waited for"
        );
    }

    #[test]
    fn waiting_writes_share_a_busy_link() {
        // Clients' writes go to n1 at once while fewer than WAITED_DELTAS_IN_FLIGHT messages
        // are unanswered; then the next ones wait and share the message that follows the
        // first answer. Each write is answered when the message carrying it is.
        let (mut agents, mut stores, now) = three_that_met(2);
        let key = key_owned_by(&agents[0], &["n0", "n1"]);
        let mut tickets = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..WAITED_DELTAS_IN_FLIGHT {
            let changes = increment(&mut stores[0], now, [key.clone()]);
            tickets.push(agents[0].replicate(changes, Need::Live));
            sent.push(agents[0].poll_outgoing().expect("sent at once"));
        }
        let later: Vec<u64> = (0..2)
            .map(|_| {
                let changes = increment(&mut stores[0], now, [key.clone()]);
                agents[0].replicate(changes, Need::Live)
            })
            .collect();
        assert!(agents[0].poll_outgoing().is_none(), "the busy link batches");
        for (i, m) in sent.into_iter().enumerate() {
            let reply = agents[1].handle_request(now, m.envelope, &mut stores[1]);
            agents[0].handle_reply(now, m.id, "n1", reply, &mut stores[0]);
            assert_eq!(agents[0].poll_replicated(), Some((tickets[i], Ok(()))));
        }
        assert!(
            agents[0].poll_replicated().is_none(),
            "the later writes are not merged yet"
        );
        let next = agents[0].poll_outgoing().expect("an answer frees the link");
        assert!(
            agents[0].poll_outgoing().is_none(),
            "one message for both later writes"
        );
        let reply = agents[1].handle_request(now, next.envelope, &mut stores[1]);
        agents[0].handle_reply(now, next.id, "n1", reply, &mut stores[0]);
        for t in later {
            assert_eq!(agents[0].poll_replicated(), Some((t, Ok(()))));
        }
        assert_eq!(
            stores[1].value(&key).and_then(|v| v.read(false)),
            stores[0].value(&key).and_then(|v| v.read(false)),
            "n1 holds every increment"
        );
    }

    #[test]
    fn nothing_happens_between_the_deadlines_the_agent_gives() {
        // The shell sleeps until next_deadline_ms: a tick before it must have nothing to
        // do, and the agent must still probe its peers as often as configured.
        let (mut agents, mut stores, mut now) = three_that_met(2);
        let mut probes = 0;
        let start = now;
        while now < start + 10_000 {
            let due = agents[0]
                .next_deadline_ms()
                .expect("a member has work scheduled");
            assert!(due > now, "the deadline {due} is not after {now}");
            agents[0].handle_tick(due - 1, &mut stores[0]);
            assert!(
                agents[0].poll_outgoing().is_none(),
                "a tick before the deadline sent something"
            );
            now = due;
            agents[0].handle_tick(now, &mut stores[0]);
            for out in std::iter::from_fn(|| agents[0].poll_outgoing()).collect::<Vec<_>>() {
                probes += usize::from(matches!(out.envelope.body, PeerRequest::Ping));
                let i: usize = out.to[1..].parse().unwrap();
                let reply = agents[i].handle_request(now, out.envelope, &mut stores[i]);
                agents[0].handle_reply(now, out.id, &out.to, reply, &mut stores[0]);
            }
        }
        let period = ClusterConfig::default().probe_period_ms as usize;
        assert!(probes + 1 >= 10_000 / period, "{probes} probes in 10 s");
    }

    #[test]
    fn a_big_store_spaces_its_anti_entropy_rounds_out() {
        // A round every gossip period for the first second (catch-up), then every 200 ms
        // for a small store, and every 1.2 s for 30,000 keys (25,000 keys a second).
        let small = rounds_with(100, 20);
        let big = rounds_with(30_000, 20);
        assert!((95..=115).contains(&small), "{small} rounds in 20 s");
        assert!((20..=32).contains(&big), "{big} rounds in 20 s");
    }
}
