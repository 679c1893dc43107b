//! What the request path needs to know of the cluster, as of its last change: who owns
//! which key, who is alive, and whether this node may still lack keys it gained. A plain
//! value (no clock, no I/O): the runtime publishes a new one after every change, and a
//! simulation builds one from its agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::membership::{Member, MemberStatus, NodeAddr, Status, node_id};
use super::replication::ReplicationTable;
use crate::ring::HashRing;

/// What the request path needs of the cluster: who owns what, as of the last change.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node.
    pub me: NodeAddr,
    /// The ring of nodes that own keys.
    pub ring: Arc<HashRing>,
    /// Replicas per key.
    pub replication: usize,
    /// Ring ids to addresses.
    pub nodes: BTreeMap<u32, NodeAddr>,
    /// Every member.
    pub members: Vec<Member>,
    /// Per-key replication factors.
    pub table: Arc<ReplicationTable>,
    /// The ring before the last change, with its nodes.
    pub previous: Option<(Arc<HashRing>, BTreeMap<u32, NodeAddr>)>,
    /// Until then (milliseconds since the Unix epoch) this node may lack keys it owns (it
    /// started or the ring changed a moment ago): a key it misses is looked up at the key's
    /// other and previous owners before it answers "not found".
    pub settling_until_ms: u64,
}

impl ClusterView {
    /// The owners of `key` in ring order (primary first), each with whether it is seen
    /// alive.
    pub fn owners_seen(&self, key: &[u8]) -> Vec<(NodeAddr, bool)> {
        self.ring
            .owners(key, self.factor(key))
            .into_iter()
            .filter_map(|id| self.nodes.get(&id))
            .map(|a| (a.clone(), self.is_alive(a)))
            .collect()
    }

    /// The owners of `key`: alive ones first (primary first among them), then suspects.
    pub fn owners(&self, key: &[u8]) -> Vec<NodeAddr> {
        let mut owners: Vec<NodeAddr> = self
            .ring
            .owners(key, self.factor(key))
            .into_iter()
            .filter_map(|id| self.nodes.get(&id).cloned())
            .collect();
        let suspect = |a: &NodeAddr| {
            self.members
                .iter()
                .any(|m| &m.addr == a && m.status == Status::Suspect)
        };
        owners.sort_by_key(suspect);
        owners
    }

    /// How many replicas `key` has.
    pub fn factor(&self, key: &[u8]) -> usize {
        self.table.factor(key).unwrap_or(self.replication)
    }

    /// Whether this node may still lack keys it owns (see
    /// [`settling_until_ms`](Self::settling_until_ms)).
    pub fn settling(&self, now_ms: u64) -> bool {
        now_ms < self.settling_until_ms
    }

    /// The nodes besides this one that hold or held `key` and are seen alive: its owners
    /// now and under the ring before the last change.
    pub fn other_holders(&self, key: &[u8]) -> Vec<NodeAddr> {
        let rf = self.factor(key);
        let mut out: Vec<NodeAddr> = Vec::new();
        let now = self
            .ring
            .owners(key, rf)
            .into_iter()
            .map(|id| (id, &self.nodes));
        let before = self
            .previous
            .iter()
            .flat_map(|(ring, nodes)| ring.owners(key, rf).into_iter().map(move |id| (id, nodes)));
        for (id, nodes) in now.chain(before) {
            if let Some(addr) = nodes.get(&id)
                && *addr != self.me
                && self.is_alive(addr)
                && !out.contains(addr)
            {
                out.push(addr.clone());
            }
        }
        out
    }

    /// Whether `addr` is a member seen alive.
    pub fn is_alive(&self, addr: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.addr == addr && m.status == Status::Alive)
    }

    /// Every member with its share of the key space.
    pub fn member_status(&self) -> Vec<MemberStatus> {
        const SAMPLES: u32 = 4096;
        let mut primaries: HashMap<u32, u32> = HashMap::new();
        for i in 0..SAMPLES {
            if let Some(p) = self.ring.primary(&i.to_be_bytes()) {
                *primaries.entry(p).or_default() += 1;
            }
        }
        self.members
            .iter()
            .map(|m| MemberStatus {
                member: m.clone(),
                ring_share_permille: if m.status.owns_keys() {
                    primaries.get(&node_id(&m.addr)).copied().unwrap_or(0) * 1000 / SAMPLES
                } else {
                    0
                },
                is_self: m.addr == self.me,
            })
            .collect()
    }
}
