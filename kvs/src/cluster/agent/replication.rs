//! Replication of local writes to the keys' other owners: deltas merged per key and sent
//! at once on an idle link, batched on a busy one; hints for keys this node does not own;
//! and writes whose client waits until enough owners merged them ([`Need`]).

use super::*;

/// Whether writes reached the replicas asked for (`Err((reached, wanted))`: too few).
pub type Replicated = Result<(), (usize, usize)>;

/// Writes waiting for their replicas (ack `all`, k or `visible`): per key, how many
/// replicas it needs and how many hold it (this node counts), and the owners not yet heard
/// from with the keys each is sent. Counted per key: a batch whose keys have different
/// owners is acknowledged only when every key reached its replicas.
pub(super) struct ReplicaWait {
    pub(super) keys: BTreeMap<Bytes, (usize, usize)>,
    /// The owners whose answer is awaited, with the keys they are sent.
    pub(super) owed: BTreeMap<NodeAddr, BTreeSet<Bytes>>,
    /// Whether replicas that could not be reached fail the writes (`Need::Owners`) or
    /// not (`Need::Live`).
    pub(super) strict: bool,
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
    /// Sends the deltas queued for `to` (if it still owns keys), remembering the hints among
    /// them (see `hints_in_flight`).
    pub(super) fn send_deltas(&mut self, to: NodeAddr, entries: HashMap<Bytes, Value>) {
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
    pub(super) fn owner_answered(&mut self, owner: &str, tickets: Vec<u64>, merged: bool) {
        self.owner_answered_but(owner, tickets, merged, &BTreeSet::new());
    }

    /// [`owner_answered`](Self::owner_answered), except that the values of `refused` keys
    /// were not merged.
    fn owner_answered_but(
        &mut self,
        owner: &str,
        tickets: Vec<u64>,
        merged: bool,
        refused: &BTreeSet<Bytes>,
    ) {
        for ticket in tickets {
            if let Some(w) = self.replica_waits.get_mut(&ticket)
                && let Some(keys) = w.owed.remove(owner)
                && merged
            {
                for key in keys.into_iter().filter(|k| !refused.contains(k)) {
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
    pub(super) fn queue_changes(&mut self, changes: Vec<(Bytes, Value)>) {
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

    pub(super) fn settle_replication(&mut self, ticket: u64) {
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

    /// A peer's answer to deltas: hints it did not keep (it has left) go to the owners
    /// again, the link is free for what piled up, and writes waiting for it count it.
    /// Values of `refused` keys were not merged there: as for a lost message, hints among
    /// them are queued again and writes waiting for them do not count that owner.
    pub(super) fn deltas_answered(&mut self, id: u64, gone: bool, refused: &BTreeSet<Bytes>) {
        let hints = self.hints_in_flight.remove(&id);
        if gone && let Some(hints) = hints.clone() {
            self.queue_changes(hints);
        }
        if let Some(to) = self.deltas_in_flight.remove(&id) {
            // The link is free: what piled up meanwhile goes now.
            if let Some(entries) = self.pending.remove(&to) {
                self.send_deltas(to.clone(), entries);
            }
            // Refused hints wait for that owner's next message (not sent at once: it
            // would refuse them again at once).
            if !gone && !refused.is_empty() {
                let per_key = self.pending.entry(to).or_default();
                for (key, value) in hints.into_iter().flatten() {
                    if refused.contains(&key) {
                        match per_key.get_mut(&key) {
                            Some(existing) => {
                                existing.merge_replicated(value);
                            }
                            None => {
                                per_key.insert(key, value);
                            }
                        }
                    }
                }
            }
        }
        if let Some((owner, tickets)) = self.message_tickets.remove(&id) {
            self.owner_answered_but(&owner, tickets, !gone, refused);
        }
    }
}
