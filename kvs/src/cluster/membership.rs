//! Cluster membership as a lattice, so it converges by gossip without coordination.
//!
//! Each member is a map entry `address -> (incarnation, status)`, ordered by incarnation
//! first (a [`DomPair`]): a node that restarts or refutes a suspicion raises its
//! incarnation, which overrides any older news about it. Within one incarnation the status
//! only moves forward: alive < suspect < dead < left.

use std::collections::BTreeMap;

use calm_lattice::{DomPair, MapUnion, Max, Merge};
use serde::{Deserialize, Serialize};

use crate::ring::key_hash;

/// A node's address on the native protocol: its identity in the cluster.
pub type NodeAddr = String;

/// What the cluster believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Answering probes.
    Alive,
    /// Missed a probe; still owns its keys until declared dead.
    Suspect,
    /// Missed probes for longer than the suspicion timeout; owns nothing.
    Dead,
    /// Left on purpose.
    Left,
}

impl Status {
    fn rank(self) -> u8 {
        self as u8
    }

    fn from_rank(r: u8) -> Status {
        match r {
            0 => Status::Alive,
            1 => Status::Suspect,
            2 => Status::Dead,
            _ => Status::Left,
        }
    }

    /// Whether a member in this state owns keys.
    pub fn owns_keys(self) -> bool {
        matches!(self, Status::Alive | Status::Suspect)
    }

    /// The name shown by `calm status`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Left => "left",
        }
    }
}

type Entry = DomPair<Max<u64>, Max<u8>>;

/// The membership lattice: address -> (incarnation, status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership(MapUnion<NodeAddr, Entry>);

/// One member as seen now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its address.
    pub addr: NodeAddr,
    /// Its current incarnation.
    pub incarnation: u64,
    /// What is believed about it.
    pub status: Status,
}

impl Membership {
    /// Records news about `addr`; returns whether anything changed.
    pub fn record(&mut self, addr: &str, incarnation: u64, status: Status) -> bool {
        let mut one = MapUnion::default();
        // Incarnation 0 with Alive would be bottom and vanish; incarnations start at 1.
        let entry = DomPair::new(Max::new(incarnation.max(1)), Max::new(status.rank()));
        one.merge_key(addr.to_string(), entry);
        self.0.merge(one)
    }

    /// What is believed about `addr`.
    pub fn get(&self, addr: &str) -> Option<Member> {
        self.0.get(&addr.to_string()).map(|e| Member {
            addr: addr.to_string(),
            incarnation: *e.key.as_reveal_ref(),
            status: Status::from_rank(*e.val.as_reveal_ref()),
        })
    }

    /// Every member, by address.
    pub fn members(&self) -> Vec<Member> {
        self.0
            .iter()
            .map(|(addr, e)| Member {
                addr: addr.clone(),
                incarnation: *e.key.as_reveal_ref(),
                status: Status::from_rank(*e.val.as_reveal_ref()),
            })
            .collect()
    }

    /// The members that own keys, by ring id.
    pub fn owners(&self) -> BTreeMap<u32, NodeAddr> {
        self.members()
            .into_iter()
            .filter(|m| m.status.owns_keys())
            .map(|m| (node_id(&m.addr), m.addr))
            .collect()
    }

    /// Merges another view; returns whether this one changed.
    pub fn merge(&mut self, other: Membership) -> bool {
        self.0.merge(other.0)
    }
}

/// A node's id on the global ring: a stable hash of its address.
pub fn node_id(addr: &str) -> u32 {
    key_hash(addr.as_bytes()) as u32
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn newer_incarnation_overrides_and_status_only_advances() {
        let mut m = Membership::default();
        m.record("a", 5, Status::Alive);
        assert!(m.record("a", 5, Status::Suspect));
        assert!(
            !m.record("a", 5, Status::Alive),
            "an older status cannot undo suspicion"
        );
        assert!(m.record("a", 6, Status::Alive), "a refutation wins");
        assert_eq!(m.get("a").unwrap().status, Status::Alive);
        assert!(m.record("a", 6, Status::Dead));
        assert!(m.owners().is_empty());
    }

    #[test]
    fn views_converge_in_any_order() {
        let mut x = Membership::default();
        let mut y = Membership::default();
        x.record("a", 1, Status::Alive);
        x.record("b", 2, Status::Suspect);
        y.record("b", 3, Status::Alive);
        y.record("c", 1, Status::Left);
        let (x0, y0) = (x.clone(), y.clone());
        x.merge(y0);
        y.merge(x0);
        assert_eq!(x, y);
        assert_eq!(
            x.get("b").unwrap(),
            Member {
                addr: "b".into(),
                incarnation: 3,
                status: Status::Alive
            }
        );
    }
}

/// One member of the cluster as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member.
    pub member: Member,
    /// Its share of primary ownership of the key space, in parts per thousand.
    pub ring_share_permille: u32,
    /// Whether this is the node that answered.
    pub is_self: bool,
}
