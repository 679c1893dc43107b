//! Keys moving on purpose: a key's replication widened (its value is copied to the owners
//! it gains before clients are sent there) or narrowed, and a graceful leave (everything
//! handed to the owners that stay before the node goes).

use super::*;

/// A copy sent to an owner a key gains when its replication widens.
pub(super) struct Widening {
    pub(super) key: Bytes,
    pub(super) value: Value,
    /// The factors the key gets once every gained owner took its copy.
    pub(super) factors: crate::cluster::Factors,
    pub(super) owner: NodeAddr,
    pub(super) sent_ms: u64,
}

/// How long a widening copy or a hand-over message waits for its answer before it is sent
/// again (lost on the way).
pub(super) const RESEND_AFTER_MS: u64 = 1_000;

/// A hand-over message of a graceful leave.
pub(super) struct HandOver {
    pub(super) owner: NodeAddr,
    pub(super) entries: Vec<(Bytes, Value)>,
    pub(super) sent_ms: u64,
}

impl ClusterAgent {
    /// Gives `key` its own replication vector (`None` parts: the defaults); spreads to every
    /// node with the next messages, and the data follows by anti-entropy.
    pub fn set_replication(&mut self, now_ms: u64, key: Bytes, factors: crate::cluster::Factors) {
        let stamp = calm_lattice::Stamp::new(
            self.clock.tick(now_ms),
            calm_lattice::ReplicaId(u64::from(node_id(&self.me))),
        );
        Arc::make_mut(&mut self.table).set(key, factors, stamp);
        self.unowned_walk_due = true;
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
        factors: crate::cluster::Factors,
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
    pub(super) fn resend_widening(&mut self, now_ms: u64) {
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

    /// A gained owner took its copy of a widening key: once every one has, the key's new
    /// factors take effect.
    pub(super) fn widening_answered(&mut self, now_ms: u64, id: u64) {
        if let Some(Widening { key, factors, .. }) = self.widening.remove(&id)
            && !self.widening.values().any(|w| w.key == key)
        {
            // Every gained owner holds the value: now clients may go there.
            self.set_replication(now_ms, key, factors);
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
