//! What one node's cluster agent sends another: every message between agents is a
//! [`PeerEnvelope`] (the sender's membership, replication table and load ride on each)
//! carrying a [`PeerRequest`], answered by a [`PeerReply`].

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::{Membership, NodeAddr};
use super::replication::ReplicationTable;
use crate::value::Value;

/// A request from one node's agent to another's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEnvelope {
    /// The sender.
    pub from: NodeAddr,
    /// The sender's view of the membership.
    pub membership: Membership,
    /// The sender's table of per-key replication factors.
    pub replication: ReplicationTable,
    /// The sender's picture of every node's load.
    pub load: crate::policy::LoadTable,
    /// What it asks.
    pub body: PeerRequest,
}

/// What one agent asks another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Are you there? (Answered with the membership.)
    Ping,
    /// Merge these deltas (keys you own).
    Deltas(Vec<(Bytes, Value)>),
    /// My digest of the keys we both own; send me what differs.
    Digest(BTreeMap<u16, u64>),
}

/// An agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// Received (and merged, for deltas).
    Ack {
        /// The answering node's view of the membership.
        membership: Membership,
    },
    /// My entries of the buckets that differ.
    Repair {
        /// The answering node's view of the membership.
        membership: Membership,
        /// Its entries in the differing buckets (up to the batch limit).
        entries: Vec<(Bytes, Value)>,
        /// The buckets that differ.
        mismatched: Vec<u16>,
    },
    /// Deltas received, but those of `keys` not merged: they hold an application's kind
    /// this node was not built with (see [`custom`](crate::value::custom)). The sender
    /// keeps them, as for a message that was lost.
    Refused {
        /// The answering node's view of the membership.
        membership: Membership,
        /// The keys whose values were not merged.
        keys: Vec<Bytes>,
    },
}
