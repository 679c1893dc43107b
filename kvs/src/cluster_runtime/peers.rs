//! Connections to the other nodes: one QUIC client per peer, opened on first use, dropped
//! when it fails, and requests that say whether they may have arrived ([`PeerFailure`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::client::Client;
use crate::cluster::NodeAddr;
use crate::error::KvsError;
use crate::protocol::{RequestBody, ResponseBody};

/// How long a message to another node may take before it counts as lost.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to the other nodes, opened on first use and dropped when they fail.
pub struct Peers {
    config: quinn::ClientConfig,
    local_ip: Option<std::net::IpAddr>,
    clients: tokio::sync::Mutex<HashMap<NodeAddr, Client>>,
    /// Peers that just failed, and until when to fail fast instead of waiting on them again.
    down_until: std::sync::Mutex<HashMap<NodeAddr, std::time::Instant>>,
}

/// How long a peer that failed is skipped before it is tried again.
const DOWN_FOR: Duration = Duration::from_secs(2);

impl Peers {
    /// Peers trusted through the cluster CA's client configuration, reached from
    /// `local_ip` (the node's own address) when given.
    pub fn new(config: quinn::ClientConfig, local_ip: Option<std::net::IpAddr>) -> Self {
        Peers {
            config,
            local_ip,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            down_until: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn recently_down(&self, addr: &str) -> bool {
        self.down_until
            .lock()
            .map(|d| d.get(addr).is_some_and(|t| std::time::Instant::now() < *t))
            .unwrap_or(false)
    }

    fn mark_down(&self, addr: &str) {
        if let Ok(mut d) = self.down_until.lock() {
            d.insert(addr.to_string(), std::time::Instant::now() + DOWN_FOR);
        }
    }

    /// The connection to `addr`.
    pub async fn client(&self, addr: &str) -> Result<Client, KvsError> {
        if self.recently_down(addr) {
            return Err(KvsError::Connect {
                addr: addr.to_string(),
                reason: "did not answer a moment ago".into(),
            });
        }
        {
            let mut clients = self.clients.lock().await;
            match clients.get(addr) {
                Some(c) if !c.is_closed() => return Ok(c.clone()),
                Some(_) => {
                    clients.remove(addr);
                }
                None => {}
            }
        }
        let sock = addr.parse().map_err(|_| KvsError::Connect {
            addr: addr.to_string(),
            reason: "not an IP address and port".into(),
        })?;
        // Peers answer fast or are down: do not hold a request for long on a dead node.
        let client = Client::connect_from(
            sock,
            self.config.clone(),
            Duration::from_secs(1),
            self.local_ip,
        )
        .await
        .inspect_err(|_| self.mark_down(addr))?;
        self.clients
            .lock()
            .await
            .insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// A message came from `addr`: it is up, so it is no longer skipped (a restarted node
    /// would otherwise miss the probes sent in the moment after it came back, and be
    /// suspected again).
    pub fn heard_from(&self, addr: &str) {
        if let Ok(mut d) = self.down_until.lock() {
            d.remove(addr);
        }
    }

    /// `addr` restarted (it came back with a new incarnation): a connection kept from
    /// before leads to the old process, so the next use connects anew. For threads outside
    /// the async runtime.
    pub fn restarted_blocking(&self, addr: &str) {
        self.heard_from(addr);
        self.clients.blocking_lock().remove(addr);
    }

    /// Forgets a connection that failed: the peer is skipped for a moment, then the next
    /// use reconnects.
    pub async fn forget(&self, addr: &str) {
        self.mark_down(addr);
        self.clients.lock().await.remove(addr);
    }

    /// Sends a request to `addr` and waits for the answer, at most [`PEER_TIMEOUT`].
    pub async fn request(&self, addr: &str, body: RequestBody) -> Result<ResponseBody, KvsError> {
        self.try_request(addr, body)
            .await
            .map_err(PeerFailure::into_error)
    }

    /// Like [`request`](Self::request), but says whether a failed request may have reached
    /// the peer (a write that may have been applied must not be run again elsewhere).
    pub async fn try_request(
        &self,
        addr: &str,
        body: RequestBody,
    ) -> Result<ResponseBody, PeerFailure> {
        let client = self.client(addr).await.map_err(PeerFailure::NotSent)?;
        let rx = match client.start_request(body).await {
            Ok(rx) => rx,
            Err(e) => {
                self.forget(addr).await;
                return Err(PeerFailure::MaybeSent(e));
            }
        };
        self.await_answer(addr, rx).await
    }

    /// Waits at most [`PEER_TIMEOUT`] for the answer to a request sent to `addr`.
    pub async fn await_answer(
        &self,
        addr: &str,
        rx: oneshot::Receiver<Result<ResponseBody, KvsError>>,
    ) -> Result<ResponseBody, PeerFailure> {
        match tokio::time::timeout(PEER_TIMEOUT, rx).await {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(e))) => {
                self.forget(addr).await;
                Err(PeerFailure::MaybeSent(e))
            }
            Ok(Err(_)) | Err(_) => {
                self.forget(addr).await;
                Err(PeerFailure::MaybeSent(KvsError::ConnectionLost(format!(
                    "{addr} did not answer within {PEER_TIMEOUT:?}"
                ))))
            }
        }
    }
}

/// Why a request to a peer failed.
#[derive(Debug)]
pub enum PeerFailure {
    /// It was never sent (no connection): safe to send elsewhere.
    NotSent(KvsError),
    /// It may have reached the peer.
    MaybeSent(KvsError),
}

impl PeerFailure {
    /// The underlying error.
    pub fn into_error(self) -> KvsError {
        match self {
            PeerFailure::NotSent(e) | PeerFailure::MaybeSent(e) => e,
        }
    }
}
