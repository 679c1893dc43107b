//! The cluster: membership, failure detection, replication between nodes, anti-entropy.
//!
//! [`ClusterAgent`] is the sans-IO core of one node; the simulation test drives several of
//! them through a faulty simulated network.

pub mod agent;
pub mod membership;
pub mod messages;
pub mod replication;
pub mod view;

pub use agent::{
    AgentStats, ClusterAgent, ClusterConfig, DIGEST_BUCKETS, LocalStore, Need, Outgoing,
    OwnerFilter, Replicated, bucket,
};
pub use membership::{Member, MemberStatus, Membership, NodeAddr, Status, node_id};
pub use messages::{PeerEnvelope, PeerReply, PeerRequest};
pub use replication::{Factors, ReplicationTable};
pub use view::ClusterView;
