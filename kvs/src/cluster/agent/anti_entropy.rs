//! Anti-entropy: digests of the keys two nodes share, compared bucket by bucket, and the
//! entries of the buckets that differ sent both ways; and the return of entries this
//! node holds but no longer owns to their owners.

use super::*;

/// Keys a node walks per second for anti-entropy digests at most (on average, each round
/// walks the node's keys twice: for its own digest and for a peer's), about 2.5% of a core
/// per walk at a microsecond a key; a store bigger than this has rounds further apart than
/// the configured period.
pub(super) const ANTI_ENTROPY_KEYS_PER_SECOND: u64 = 25_000;
/// A node looks for entries it holds but does not own at least every this many
/// anti-entropy rounds, even when nothing suggests there are any.
pub(super) const UNOWNED_SWEEP_ROUNDS: u32 = 30;

/// Entries this node holds but does not own, being returned to their owners (a routine of
/// anti-entropy; not a graceful leave's hand-over, `moves.rs`): what was sent, and which
/// owners have not yet acknowledged each key.
#[derive(Default)]
pub(super) struct Returning {
    pub(super) sent: HashMap<Bytes, (Value, BTreeSet<NodeAddr>)>,
    pub(super) requests: HashMap<u64, (NodeAddr, Vec<Bytes>)>,
}

impl ClusterAgent {
    /// An owner took unowned entries returned to it: those every owner took are dropped
    /// here (unless they changed meanwhile).
    pub(super) fn unowned_returned(
        &mut self,
        now_ms: u64,
        id: u64,
        reply: &PeerReply,
        store: &mut impl LocalStore,
    ) {
        let Some((owner, keys)) = self.returning.requests.remove(&id) else {
            return;
        };
        // Learn first whether the owner is still one: a node that is leaving takes what
        // it is handed and answers, but it will not keep it; a key handed to it stays
        // here until it reaches an owner that stays.
        let refused: &[Bytes] = match reply {
            PeerReply::Ack { membership } | PeerReply::Refused { membership, .. } => {
                self.absorb(now_ms, membership.clone());
                match reply {
                    PeerReply::Refused { keys, .. } => keys,
                    _ => &[],
                }
            }
            PeerReply::Repair { .. } => &[],
        };
        let mut done = Vec::new();
        // A refused key stays here, waiting for that owner.
        for key in keys.into_iter().filter(|k| !refused.contains(k)) {
            let still_owner = self.owners(&key).contains(&owner);
            if let Some((_, waiting)) = self.returning.sent.get_mut(&key)
                && still_owner
            {
                waiting.remove(&owner);
                if waiting.is_empty()
                    && let Some((value, _)) = self.returning.sent.remove(&key)
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

    /// Answers a peer's digest with this node's entries of the buckets that differ.
    pub(super) fn answer_digest(
        &mut self,
        from: &str,
        theirs: BTreeMap<u16, u64>,
        store: &mut impl LocalStore,
    ) -> PeerReply {
        let filter = self.filter_with(from);
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

    /// Merges a peer's side of the buckets that differ, and pushes this node's side.
    pub(super) fn repair(
        &mut self,
        now_ms: u64,
        from: &str,
        entries: Vec<(Bytes, Value)>,
        mismatched: Vec<u16>,
        store: &mut impl LocalStore,
    ) {
        self.stats.repaired_entries += entries.len() as u64;
        self.unowned_walk_due |= !self.owns_all(&entries);
        // What this node refuses (an application's kind it lacks) stays with the peer.
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

    /// Hands off what this node holds but does not own, and sends one peer it shares keys
    /// with a digest to compare; spaced out by the store's size.
    pub(super) fn anti_entropy_round(&mut self, now_ms: u64, store: &mut impl LocalStore) {
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
        self.return_unowned(store);
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

    /// Sends entries this node holds but does not own to their owners (a new round each
    /// anti-entropy period; a round whose answers were lost is simply sent again).
    pub(super) fn return_unowned(&mut self, store: &mut impl LocalStore) {
        // Walking every key is the expensive part: only when something may have left
        // entries here that another node owns (the ring or the table changed, entries came
        // from peers, the last round sent some), and once in a while anyway.
        self.rounds_since_unowned_walk += 1;
        if !self.unowned_walk_due && self.rounds_since_unowned_walk < UNOWNED_SWEEP_ROUNDS {
            return;
        }
        self.unowned_walk_due = false;
        self.rounds_since_unowned_walk = 0;
        self.returning = Returning::default();
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
            self.returning.sent.insert(key, (value, owners));
        }
        // Until a round finds nothing, the next one looks again (answers may be lost).
        self.unowned_walk_due |= !per_owner.is_empty();
        for (owner, entries) in per_owner {
            let keys = entries.iter().map(|(k, _)| k.clone()).collect();
            let id = self.send(owner.clone(), PeerRequest::Deltas(entries));
            self.returning.requests.insert(id, (owner, keys));
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
}
