//! The messages between clients and nodes. All encoding lives in [`wire`](crate::wire);
//! these are the plain serde types it carries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The members as a node sees them (defined in [`cluster`](crate::cluster)).
pub use crate::cluster::MemberStatus;
use crate::cluster::{Member, PeerEnvelope, PeerReply};
use crate::metrics::StatsSnapshot;
/// The operations requests carry (defined in [`op`](crate::op)).
pub use crate::op::{Ack, Op, OpError, OpKind, OpResult, Reply};

impl RequestBody {
    /// A batch as most clients send it: routed by the node that receives it, writes
    /// acknowledged once every owner seen alive holds them ([`Ack::Visible`]: a read
    /// through any node finds them).
    pub fn ops(ops: Vec<Op>) -> RequestBody {
        RequestBody::Batch {
            ops,
            ack: Ack::Visible,
            route: Route::Coordinate,
        }
    }
}

/// Who routes a batch's operations to the owners of their keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// The node that receives the batch: it runs what it owns and forwards the rest to an
    /// owner (what clients that do not know the ring send).
    #[default]
    Coordinate,
    /// Another node already did: run everything here, forward nothing.
    Forwarded,
    /// The client did (it holds the routing table): keys this node does not own are
    /// answered [`OpError::NotOwner`], so the client refreshes its table.
    Direct,
}

/// A request from a client: an id (echoed in the response, so many requests can be in
/// flight on one stream) and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What to do.
    pub body: RequestBody,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// The node's counters and latency percentiles.
    Stats,
    /// A batch of operations, run in order per key; results come back in the same order.
    Batch {
        /// The operations.
        ops: Vec<Op>,
        /// How many replicas must merge each write before the answer.
        ack: Ack,
        /// Who routes the operations to the owners of their keys.
        route: Route,
    },
    /// A message between the cluster agents of two nodes.
    Peer(PeerEnvelope),
    /// The membership as this node sees it.
    Members,
    /// What a client needs to send each key to its owners itself.
    Routing,
    /// Gives a key its own replication vector (`None` parts: the cluster's defaults).
    SetReplication {
        /// The key.
        key: Bytes,
        /// Nodes holding it, and workers holding it within each.
        factors: crate::cluster::Factors,
    },
    /// Subscribes this stream to changes of keys the node owns, or renews the lease: the
    /// answer has each key's value, or [`Fetched::Unchanged`](crate::subscribe::Fetched)
    /// when it has the fingerprint sent. Changes are then pushed on this stream with id
    /// [`PUSH_ID`](crate::subscribe::PUSH_ID). Keys the node does not own are answered
    /// [`OpError::NotOwner`].
    Subscribe {
        /// Each key, with the fingerprint of the copy the subscriber holds, if any.
        keys: Vec<(Bytes, Option<u64>)>,
        /// How long the subscription lasts unless renewed, milliseconds.
        lease_ms: u32,
    },
    /// Ends this stream's subscriptions to keys (a cache dropped them).
    Unsubscribe {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// A request for a service the node serves next to the store (see
    /// [`service`](crate::service)).
    Service {
        /// The service's name.
        name: String,
        /// The request, in the service's own encoding.
        body: Bytes,
    },
    /// The keys this node holds that read as something and pass the filter (this node's
    /// copies only: a listing of the cluster asks every node).
    Keys(crate::op::KeyFilter),
}

/// The routing table: enough for a client to compute every key's owners as nodes do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// Replicas per key, by default.
    pub replication: usize,
    /// Every member; those alive or suspect own keys.
    pub members: Vec<Member>,
    /// Keys with replication factors of their own.
    pub overrides: Vec<(Bytes, crate::cluster::Factors)>,
}

/// A node's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the request (0 when the request could not be read).
    pub id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// One result per operation, in order.
    Results(Vec<OpResult>),
    /// The node's statistics.
    Stats(StatsSnapshot),
    /// A cluster agent's answer.
    Peer(PeerReply),
    /// The members as this node sees them, with each one's share of the key space.
    Members(Vec<MemberStatus>),
    /// The routing table.
    Routing(RoutingTable),
    /// Done.
    Done,
    /// The request could not be read; the node closes the stream after this.
    Refused(ProtocolError),
    /// The answer to a subscription: per key, its value or that the copy is current.
    Subscribed(Vec<Result<crate::subscribe::Fetched, OpError>>),
    /// Changes of subscribed keys (sent with id [`PUSH_ID`](crate::subscribe::PUSH_ID)).
    Pushed(crate::subscribe::Pushed),
    /// A service's answer.
    Service(crate::service::ServiceResult),
    /// Keys, in order, or why they could not be listed.
    Keys(Result<Vec<Bytes>, OpError>),
}

/// A request the node could not read. The stream is closed after it is reported, since
/// the byte stream cannot be trusted past it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProtocolError {
    /// The frame's protocol version is not one this node speaks.
    #[error(
        "protocol version {got} is not supported (this node speaks {supported}); upgrade the client or the node"
    )]
    UnsupportedVersion {
        /// The version received.
        got: u8,
        /// The version this node speaks.
        supported: u8,
    },
    /// The frame is larger than the node accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes; send smaller batches")]
    FrameTooLarge {
        /// The frame's declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame's bytes are not a valid request (garbage, or an unknown request type).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The certificate the connection was made with does not allow the request (a client
    /// certificate sending a peer message, say).
    #[error("{who} may not {what}")]
    Forbidden {
        /// Who sent it, as its certificate says (role and name).
        who: String,
        /// What it was refused.
        what: String,
    },
}
