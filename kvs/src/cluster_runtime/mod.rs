//! The cluster agent of a real node: it runs on its own thread (it reads the workers'
//! data with blocking calls), and talks to other nodes through QUIC connections kept by
//! [`Peers`].

mod agent_thread;
mod autopilot;
mod peers;

use agent_thread::AgentThread;
pub use peers::{PEER_TIMEOUT, PeerFailure, Peers};

use std::sync::mpsc::{self};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cluster::{
    ClusterAgent, ClusterConfig, ClusterView, NodeAddr, Outgoing, PeerEnvelope, PeerReply, node_id,
};
use crate::error::KvsError;
use crate::node::{Changes, WorkerPool};
use crate::op::OpError;
use crate::protocol::{RequestBody, ResponseBody};

pub(super) use crate::tasks::now_ms;

pub(super) enum Input {
    Request {
        envelope: PeerEnvelope,
        reply: oneshot::Sender<PeerReply>,
    },
    Reply {
        id: u64,
        from: NodeAddr,
        reply: PeerReply,
    },
    /// A request to a peer got no answer (lost, or the peer is down).
    Failed {
        id: u64,
    },
    /// Writes to send to their other owners now; the answer says whether enough took them.
    Replicate {
        changes: Changes,
        need: crate::cluster::Need,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    Leave(oneshot::Sender<()>),
    SetReplication(bytes::Bytes, crate::cluster::Factors),
    /// Deltas of local writes are waiting (sent when the buffer was empty: a busy node's
    /// writes pile up and go with the next wake-up, an idle node's go at once).
    Wake,
    /// The node stops: the agent's thread ends.
    Stop,
}

/// A node's handle on its cluster agent. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inbox: mpsc::Sender<Input>,
    /// Deltas of local writes, picked up by the agent at its next wake-up: the first into an
    /// empty buffer wakes it, the rest wait for it (writes do not wake the agent's thread
    /// one by one).
    changes: Arc<Mutex<Changes>>,
    view: Arc<RwLock<Arc<ClusterView>>>,
    peers: Arc<Peers>,
    me: NodeAddr,
}

impl Cluster {
    /// Starts the agent of the node at `me`, joining through `seeds`, on its own thread,
    /// and its outgoing messages on `runtime`.
    pub fn start(
        me: NodeAddr,
        seeds: Vec<NodeAddr>,
        config: ClusterConfig,
        pool: WorkerPool,
        peers: Arc<Peers>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Cluster, KvsError> {
        let (inbox, rx) = mpsc::channel::<Input>();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
        let agent = ClusterAgent::new(
            me.clone(),
            seeds,
            config,
            now_ms(),
            now_ms() ^ u64::from(node_id(&me)),
        );
        let view = Arc::new(RwLock::new(Arc::new(agent.view())));

        let changes: Arc<Mutex<Changes>> = Arc::default();
        let thread = AgentThread::new(
            agent,
            pool,
            rx,
            out_tx,
            view.clone(),
            changes.clone(),
            peers.clone(),
        );
        std::thread::Builder::new()
            .name("calm-cluster".into())
            .spawn(move || thread.run())
            .map_err(|e| KvsError::Config(format!("cannot start the cluster thread: {e}")))?;

        let transport_peers = peers.clone();
        let transport_inbox = inbox.clone();
        runtime.spawn(async move {
            while let Some(out) = out_rx.recv().await {
                let peers = transport_peers.clone();
                let inbox = transport_inbox.clone();
                tokio::spawn(async move {
                    match peers.request(&out.to, RequestBody::Peer(out.envelope)).await {
                        Ok(ResponseBody::Peer(reply)) => {
                            let _ = inbox.send(Input::Reply {
                                id: out.id,
                                from: out.to,
                                reply,
                            });
                        }
                        Ok(other) => {
                            tracing::warn!(peer = %out.to, "unexpected answer to a peer message: {other:?}");
                            let _ = inbox.send(Input::Failed { id: out.id });
                        }
                        // Lost: the agent's timeouts and anti-entropy deal with it.
                        Err(e) => {
                            tracing::debug!(peer = %out.to, "peer message lost: {e}");
                            let _ = inbox.send(Input::Failed { id: out.id });
                        }
                    }
                });
            }
        });

        Ok(Cluster {
            inbox,
            changes,
            view,
            peers,
            me,
        })
    }

    /// Ends the agent's thread (without leaving: see [`leave`](Self::leave)); the node
    /// no longer takes part in the cluster.
    pub fn stop(&self) {
        let _ = self.inbox.send(Input::Stop);
    }

    /// This node's address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Who owns what, as of the last membership change.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The connections to other nodes.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Answers a message from another node's agent.
    pub async fn handle_peer(&self, envelope: PeerEnvelope) -> Result<PeerReply, KvsError> {
        self.peers.heard_from(&envelope.from);
        let (reply, rx) = oneshot::channel();
        self.inbox
            .send(Input::Request { envelope, reply })
            .map_err(|_| KvsError::ShutDown)?;
        rx.await.map_err(|_| KvsError::ShutDown)
    }

    /// Hands the deltas of local writes to the agent, to send to the keys' other owners.
    pub fn local_changes(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let was_empty = {
            let mut buffer = self.changes.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = buffer.is_empty();
            buffer.extend(changes);
            was_empty
        };
        if was_empty {
            let _ = self.inbox.send(Input::Wake);
        }
    }

    /// Sends deltas to every other owner of their keys now, and waits until the owners
    /// `need` asks for merged them. The agent sends them ([`ClusterAgent::replicate`]), as
    /// every message between nodes; a message that fails queues them for its gossip, so
    /// owners missed now are repaired.
    pub async fn replicate_now(
        &self,
        changes: Changes,
        need: crate::cluster::Need,
    ) -> Result<(), OpError> {
        let (reply, rx) = oneshot::channel();
        self.inbox
            .send(Input::Replicate {
                changes,
                need,
                reply,
            })
            .map_err(|_| OpError::ShuttingDown)?;
        rx.await.map_err(|_| OpError::ShuttingDown)?
    }

    /// Gives `key` its own replication vector (`None` parts: the defaults).
    pub fn set_replication(
        &self,
        key: bytes::Bytes,
        factor: crate::cluster::Factors,
    ) -> Result<(), KvsError> {
        self.inbox
            .send(Input::SetReplication(key, factor))
            .map_err(|_| KvsError::ShutDown)
    }

    /// Leaves the cluster: tells the peers this node is going, before it stops.
    pub async fn leave(&self) {
        let (done, rx) = oneshot::channel();
        if self.inbox.send(Input::Leave(done)).is_ok() {
            let _ = rx.await;
            // Give the goodbye messages a moment to go out.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
