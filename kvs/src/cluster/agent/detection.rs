//! Failure detection, SWIM-style: probes round a shuffled list of members, suspicion of
//! a member that does not answer, death of one suspect for too long, and refutation of
//! news of this node's own failure. Membership rides on every message.

use super::*;

pub(super) struct Probe {
    pub(super) id: u64,
    pub(super) to: NodeAddr,
    pub(super) deadline_ms: u64,
}

impl ClusterAgent {
    /// Merges a peer's membership view; refutes news of this node's failure.
    pub(super) fn absorb(&mut self, now_ms: u64, view: Membership) {
        self.membership.merge(view);
        if let Some(me) = self.membership.get(&self.me)
            && me.status != Status::Alive
            && !self.left
        {
            // Someone thinks this node is suspect or dead: it is not. (Saturating: a peer
            // may claim the largest incarnation, which no refutation can pass; found by the
            // `peer_message` fuzz target. Only authenticated peers rule that out.)
            self.incarnation = me.incarnation.saturating_add(1);
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

    pub(super) fn live_peers(&self) -> Vec<NodeAddr> {
        self.membership
            .members()
            .into_iter()
            .filter(|m| m.addr != self.me && m.status.owns_keys())
            .map(|m| m.addr)
            .collect()
    }

    /// An unanswered probe makes its target suspect; a suspect for too long is dead.
    pub(super) fn detect_failures(&mut self, now_ms: u64) {
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
    }

    pub(super) fn probe_next(&mut self, now_ms: u64) {
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
}
