//! The cluster: membership, failure detection, replication between nodes, anti-entropy.
//!
//! [`ClusterAgent`] is the sans-IO core of one node; the simulation test drives several of
//! them through a faulty simulated network.

pub mod agent;
pub mod membership;
pub mod replication;
pub mod runtime;
pub mod view;

pub use agent::{
    AgentStats, ClusterAgent, ClusterConfig, DIGEST_BUCKETS, LocalStore, Need, Outgoing,
    OwnerFilter, PeerEnvelope, PeerReply, PeerRequest, Replicated, bucket,
};
pub use membership::{Member, Membership, NodeAddr, Status, node_id};
pub use replication::{Factors, ReplicationTable};
pub use runtime::{Cluster, PeerFailure, Peers};
pub use view::ClusterView;
