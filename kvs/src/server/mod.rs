//! The QUIC listener of a node: accepts connections, reads request frames, runs them on the
//! node's workers, writes response frames.
//!
//! Each bidirectional stream carries request frames one way and response frames the other.
//! Many requests may be in flight on a stream (responses carry the request id); at most
//! `max_in_flight_per_stream` are, after which the node stops reading that stream until
//! answers drain, so a client that sends without reading holds bounded memory and stalls
//! only itself. A frame the node cannot read is answered with a typed
//! [`ProtocolError`](crate::protocol::ProtocolError) and the stream is closed; the connection, other
//! streams and other clients carry on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::acl::Access;
use crate::cluster_runtime::Cluster;
use crate::error::KvsError;
use crate::node::Node;
use crate::protocol::{Response, ResponseBody};
use crate::service::Services;
use crate::tasks::now_ms;
use crate::tls::{Principal, Role};
use crate::wire::{WireError, encode_frame};

mod batch;
mod stream;

#[cfg(feature = "resp")]
pub(crate) use batch::execute;
use stream::serve_stream;

/// What a listener serves: the node's workers, its cluster agent when it has one, and the
/// other request handlers registered with it.
pub(crate) struct Backend {
    pub(crate) node: Arc<Node>,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) services: Services,
}

impl Backend {
    /// The keys of the whole cluster that read as something and pass `filter`, once each,
    /// in order: this node's, and those of every other node that owns keys, asked at once.
    /// A node that does not answer is left out while fewer nodes than a key's replicas
    /// fail (every key then has an owner that answered); beyond that the listing could
    /// miss keys, and is refused. (The Redis port's `KEYS` and `SCAN`.)
    #[cfg(feature = "resp")]
    pub(crate) async fn cluster_keys(
        &self,
        filter: &crate::op::KeyFilter,
    ) -> Result<Vec<bytes::Bytes>, KvsError> {
        let mut keys: std::collections::BTreeSet<bytes::Bytes> =
            self.node.keys(filter).await?.into_iter().collect();
        let Some(cluster) = &self.cluster else {
            return Ok(keys.into_iter().collect());
        };
        let view = cluster.view();
        let asks = view.nodes.values().filter(|a| **a != view.me).map(|addr| {
            let (peers, addr, filter) = (cluster.peers().clone(), addr.clone(), filter.clone());
            async move {
                match peers
                    .request(&addr, crate::protocol::RequestBody::Keys(filter))
                    .await
                {
                    Ok(ResponseBody::Keys(Ok(keys))) => Ok(keys),
                    Ok(other) => Err(format!("{addr} answered {other:?}")),
                    Err(e) => Err(format!("{addr}: {e}")),
                }
            }
        });
        let mut failed = Vec::new();
        for answer in crate::tasks::join_all(asks).await {
            match answer {
                Ok(theirs) => keys.extend(theirs),
                Err(why) => failed.push(why),
            }
        }
        if !failed.is_empty() && failed.len() >= view.replication {
            return Err(KvsError::ConnectionLost(format!(
                "{} nodes did not list their keys, as many as a key has replicas, so keys could be missing: {}",
                failed.len(),
                failed.join("; ")
            )));
        }
        for why in failed {
            tracing::warn!(%why, "a node did not list its keys; its keys' other owners did");
        }
        Ok(keys.into_iter().collect())
    }
}

/// A listener bound to its address, not yet serving.
pub struct BoundServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
}

impl BoundServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts serving `node` (as a member of `cluster`, if given).
    pub fn serve(self, node: Arc<Node>, cluster: Option<Cluster>) -> Server {
        let accepting = self.endpoint.clone();
        let services = Services::default();
        let service = Arc::new(Backend {
            node,
            cluster,
            services: services.clone(),
        });
        let accept_task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(serve_connection(incoming, service.clone()));
            }
        });
        Server {
            endpoint: self.endpoint,
            local_addr: self.local_addr,
            accept_task,
            services,
        }
    }
}

/// A running listener.
pub struct Server {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
    services: Services,
}

impl Server {
    /// The request handlers served next to the store, by name (the function executors
    /// register theirs here); clients reach them with
    /// [`Client::call_service`](crate::Client::call_service).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Listens on `listen` with the TLS configuration `config`, serving `node` alone.
    pub fn start(
        node: Arc<Node>,
        listen: SocketAddr,
        config: quinn::ServerConfig,
    ) -> Result<Server, KvsError> {
        Server::start_in_cluster(node, None, listen, config)
    }

    /// Listens on `listen`, serving `node` as a member of `cluster`: operations on keys
    /// this node does not own are forwarded to an owner, and peers' messages reach the
    /// cluster agent.
    pub fn start_in_cluster(
        node: Arc<Node>,
        cluster: Option<Cluster>,
        listen: SocketAddr,
        config: quinn::ServerConfig,
    ) -> Result<Server, KvsError> {
        Ok(Server::bind(listen, config)?.serve(node, cluster))
    }

    /// Binds the listener without serving yet, so the bound address (with port 0, the one
    /// the system picked) can name the node before its cluster agent starts.
    pub fn bind(listen: SocketAddr, config: quinn::ServerConfig) -> Result<BoundServer, KvsError> {
        let endpoint = quinn::Endpoint::server(config, listen).map_err(|e| KvsError::Connect {
            addr: listen.to_string(),
            reason: format!("cannot listen: {e}"),
        })?;
        let local_addr = endpoint.local_addr().map_err(|e| KvsError::Connect {
            addr: listen.to_string(),
            reason: e.to_string(),
        })?;
        Ok(BoundServer {
            endpoint,
            local_addr,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, and waits until the peers are told.
    pub async fn shutdown(self) {
        self.close();
        self.endpoint.wait_idle().await;
    }

    /// Stops accepting and closes every connection, without waiting for the peers to be
    /// told.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        self.accept_task.abort();
    }
}

async fn serve_connection(incoming: quinn::Incoming, service: Arc<Backend>) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
    };
    let peer = conn.remote_address();
    // The handshake verified the certificate against the cluster CA; its role and name
    // decide what the connection may ask.
    let caller = match identify(&conn) {
        Ok(principal) => {
            let access = match (&service.node.config().acl, principal.role) {
                (Some(acl), Role::Client) => acl.access(&principal.name),
                _ => Access::All,
            };
            Arc::new(Caller { principal, access })
        }
        Err(e) => {
            tracing::warn!(%peer, "refusing a connection: {e}");
            conn.close(1u32.into(), b"certificate names no calm role");
            return;
        }
    };
    tracing::debug!(%peer, principal = %caller.principal, "connected");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(send, recv, service.clone(), caller.clone()));
            }
            Err(e) => {
                tracing::debug!(%peer, "connection closed: {e}");
                return;
            }
        }
    }
}

/// Who is at the other end of a connection, and what it may do.
pub(crate) struct Caller {
    /// As its certificate says.
    pub(crate) principal: Principal,
    /// What the ACL grants it (everything for nodes, or without an ACL).
    pub(crate) access: Access,
}

/// Who holds the connection's certificate.
fn identify(conn: &quinn::Connection) -> Result<Principal, KvsError> {
    let chain = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| KvsError::Tls("the connection presented no certificate".into()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| KvsError::Tls("the connection presented no certificate".into()))?;
    crate::tls::principal(leaf)
}

async fn reply(tx: &mpsc::Sender<Vec<u8>>, id: u64, body: ResponseBody) {
    match encode_frame(&Response { id, body }) {
        Ok(frame) => {
            let _ = tx.send(frame).await;
        }
        Err(e) => tracing::error!("cannot encode a response: {e}"),
    }
}

/// Tells the client why its frame was refused (when it can still be told).
async fn refuse(tx: &mpsc::Sender<Vec<u8>>, error: &WireError, metrics: &crate::Metrics) {
    if let Some(reason) = error.to_protocol_error() {
        metrics.add_refused_frame();
        tracing::debug!("refusing a frame: {reason}");
        reply(tx, 0, ResponseBody::Refused(reason)).await;
    } else {
        tracing::debug!("stream ended: {error}");
    }
}
