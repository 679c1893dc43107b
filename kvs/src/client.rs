//! The network client: a [`Store`] over one QUIC connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::KvsError;
use crate::metrics::StatsSnapshot;
use crate::op::{Ack, Op, OpError, OpResult, Reply};
use crate::protocol::{Request, RequestBody, Response, ResponseBody, Route};
use crate::store::Store;
use crate::subscribe::{Fetched, PUSH_ID, Pushed};
use crate::tls;
use crate::wire::{DEFAULT_MAX_FRAME, decode_body, encode_frame, read_frame};

type Waiter = oneshot::Sender<Result<ResponseBody, KvsError>>;

struct Shared {
    pending: Mutex<HashMap<u64, Waiter>>,
    /// Where changes pushed for this connection's subscriptions go.
    push: Mutex<Option<tokio::sync::mpsc::Sender<Pushed>>>,
    /// Why the connection ended, once it has.
    closed: Mutex<Option<String>>,
}

impl Shared {
    fn fail_all(&self, reason: &str) {
        if let Ok(mut closed) = self.closed.lock() {
            closed.get_or_insert_with(|| reason.to_string());
        }
        let waiters: Vec<Waiter> = match self.pending.lock() {
            Ok(mut p) => p.drain().map(|(_, w)| w).collect(),
            Err(_) => return,
        };
        for w in waiters {
            let _ = w.send(Err(KvsError::ConnectionLost(reason.to_string())));
        }
    }
}

/// A connection to one node. Cheap to clone; clones share the connection.
///
/// Requests are pipelined: any number of callers may have requests in flight at once on
/// the one stream, each matched to its response by id. A batch
/// ([`execute`](Store::execute) with many operations) is one request.
///
/// ```no_run
/// use calm_kvs::{Client, Store};
/// # async fn demo() -> Result<(), calm_kvs::KvsError> {
/// let me = calm_kvs::tls::Credentials::new(
///     "calm-data/ca/ca.pem",
///     "calm-data/clients/admin.pem",
///     "calm-data/clients/admin.key",
/// );
/// let client = Client::connect("127.0.0.1:7400".parse().unwrap(), &me).await?;
/// client.put("k", "v").await?;
/// println!("{:?}", client.get("k").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    send: Arc<tokio::sync::Mutex<quinn::SendStream>>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
}

impl Client {
    /// Connects to the node at `addr` with the certificate in `creds`, trusting nodes its
    /// CA issued.
    pub async fn connect(addr: SocketAddr, creds: &tls::Credentials) -> Result<Client, KvsError> {
        Client::connect_with(addr, tls::client_config(creds)?).await
    }

    /// Connects with a prepared QUIC client configuration.
    pub async fn connect_with(
        addr: SocketAddr,
        config: quinn::ClientConfig,
    ) -> Result<Client, KvsError> {
        Client::connect_within(addr, config, Duration::from_secs(5)).await
    }

    /// Connects, giving up after `timeout` without an answer.
    pub async fn connect_within(
        addr: SocketAddr,
        config: quinn::ClientConfig,
        timeout: Duration,
    ) -> Result<Client, KvsError> {
        Client::connect_from(addr, config, timeout, None).await
    }

    /// Connects from a chosen local IP (a node talks to its peers from its own address, so
    /// they and any network in between see who is talking).
    pub async fn connect_from(
        addr: SocketAddr,
        config: quinn::ClientConfig,
        timeout: Duration,
        local_ip: Option<IpAddr>,
    ) -> Result<Client, KvsError> {
        let connect_err = |reason: String| KvsError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let bind: SocketAddr = match (local_ip, addr.ip()) {
            (Some(ip), _) => (ip, 0).into(),
            (None, IpAddr::V4(ip)) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            (None, IpAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (None, IpAddr::V6(ip)) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            (None, IpAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connect_err(e.to_string())),
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {timeout:?}; is a calm server running there?"
                )));
            }
        };
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            push: Mutex::new(None),
            closed: Mutex::new(None),
        });
        tokio::spawn(read_responses(recv, conn.clone(), shared.clone()));
        Ok(Client {
            conn,
            endpoint,
            send: Arc::new(tokio::sync::Mutex::new(send)),
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Whether the connection has ended (requests would fail without being sent).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
            || self
                .shared
                .closed
                .lock()
                .map(|c| c.is_some())
                .unwrap_or(true)
    }

    /// The address of the node.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Sends any request as it is and returns the node's answer as it is, for tools and
    /// tests of the protocol (the other methods are the way to use a node).
    pub async fn send(&self, body: RequestBody) -> Result<ResponseBody, KvsError> {
        self.request(body).await
    }

    /// Sends a request and waits for its answer.
    pub(crate) async fn request(&self, body: RequestBody) -> Result<ResponseBody, KvsError> {
        self.start_request(body)
            .await?
            .await
            .map_err(|_| KvsError::ConnectionLost("the response reader stopped".into()))?
    }

    /// Sends a request and returns once it is written: requests started one after another
    /// reach the node in that order. The receiver yields the answer.
    pub(crate) async fn start_request(
        &self,
        body: RequestBody,
    ) -> Result<oneshot::Receiver<Result<ResponseBody, KvsError>>, KvsError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&Request { id, body })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .map_err(|_| KvsError::ConnectionLost("client state poisoned".into()))?;
            if let Ok(closed) = self.shared.closed.lock()
                && let Some(reason) = closed.as_ref()
            {
                return Err(KvsError::ConnectionLost(reason.clone()));
            }
            pending.insert(id, tx);
        }
        let written = {
            let mut send = self.send.lock().await;
            send.write_all(&frame).await
        };
        if let Err(e) = written {
            self.shared
                .fail_all(&close_reason(&self.conn, e.to_string()));
        }
        Ok(rx)
    }

    /// The cluster's members as this node sees them (empty for a node outside a cluster).
    pub async fn members(&self) -> Result<Vec<crate::protocol::MemberStatus>, KvsError> {
        match self.request(RequestBody::Members).await? {
            ResponseBody::Members(m) => Ok(m),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked for members, got {other:?}"
            ))),
        }
    }

    /// The cluster's routing table as this node sees it.
    pub async fn routing(&self) -> Result<crate::protocol::RoutingTable, KvsError> {
        match self.request(RequestBody::Routing).await? {
            ResponseBody::Routing(t) => Ok(t),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked for routing, got {other:?}"
            ))),
        }
    }

    /// Gives `key` its own replication vector: how many nodes hold it, and how many workers
    /// in each (`None` parts: the cluster's defaults).
    pub async fn set_replication(
        &self,
        key: impl Into<bytes::Bytes>,
        factors: crate::cluster::Factors,
    ) -> Result<(), KvsError> {
        match self
            .request(RequestBody::SetReplication {
                key: key.into(),
                factors,
            })
            .await?
        {
            ResponseBody::Done => Ok(()),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked to set replication, got {other:?}"
            ))),
        }
    }

    /// Runs a batch with an explicit acknowledgement level.
    pub async fn execute_with_ack(
        &self,
        ops: Vec<Op>,
        ack: Ack,
    ) -> Result<Vec<OpResult>, KvsError> {
        let expected = ops.len();
        match self
            .request(RequestBody::Batch {
                ops,
                ack,
                route: Route::Coordinate,
            })
            .await?
        {
            ResponseBody::Results(results) if results.len() == expected => Ok(results),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked for {expected} results, got {other:?}"
            ))),
        }
    }

    /// Runs a batch on this node's own workers only, whoever owns the keys. For inspecting
    /// one replica: a read answers with this node's own copy (a forwarded read that finds
    /// nothing may instead ask the key's other owners, while the node settles after a ring
    /// change; this one never does).
    pub async fn execute_here(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, KvsError> {
        let expected = ops.len();
        // Reads travel as `Raw` (the stored copy) and are answered as reads here.
        let mut reads = Vec::new();
        let ops: Vec<Op> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| match op {
                Op::Get { key, meta } => {
                    reads.push((i, meta));
                    Op::Raw { key }
                }
                other => other,
            })
            .collect();
        match self
            .request(RequestBody::Batch {
                ops,
                ack: Ack::One,
                route: Route::Forwarded,
            })
            .await?
        {
            ResponseBody::Results(mut results) if results.len() == expected => {
                for (i, meta) in reads {
                    if let Ok(Reply::Raw(copy)) = &results[i] {
                        results[i] = Ok(Reply::Value(
                            copy.as_ref()
                                .and_then(|v| v.read_at(crate::tasks::now_ms(), meta)),
                        ));
                    }
                }
                Ok(results)
            }
            other => Err(KvsError::UnexpectedReply(format!(
                "asked for {expected} results, got {other:?}"
            ))),
        }
    }

    /// Sends changes pushed for this connection's subscriptions to `sink`.
    pub fn set_push_sink(&self, sink: tokio::sync::mpsc::Sender<Pushed>) {
        if let Ok(mut p) = self.shared.push.lock() {
            *p = Some(sink);
        }
    }

    /// Subscribes this connection to changes of `keys` (each with the fingerprint of the
    /// copy held, if any) for `lease_ms`, or renews the lease. Per key: its value, or
    /// unchanged, or [`OpError::NotOwner`] when this node does not own it. Changes then go
    /// to the [push sink](Self::set_push_sink).
    pub async fn subscribe(
        &self,
        keys: Vec<(bytes::Bytes, Option<u64>)>,
        lease_ms: u32,
    ) -> Result<Vec<Result<Fetched, OpError>>, KvsError> {
        let expected = keys.len();
        match self
            .request(RequestBody::Subscribe { keys, lease_ms })
            .await?
        {
            ResponseBody::Subscribed(r) if r.len() == expected => Ok(r),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked to subscribe to {expected} keys, got {other:?}"
            ))),
        }
    }

    /// Ends this connection's subscriptions to `keys`.
    pub async fn unsubscribe(&self, keys: Vec<bytes::Bytes>) -> Result<(), KvsError> {
        match self.request(RequestBody::Unsubscribe { keys }).await? {
            ResponseBody::Done => Ok(()),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked to unsubscribe, got {other:?}"
            ))),
        }
    }

    /// Calls the service `name` the node serves (see [`service`](crate::service)).
    pub async fn call_service(
        &self,
        name: &str,
        body: bytes::Bytes,
    ) -> Result<bytes::Bytes, KvsError> {
        match self
            .request(RequestBody::Service {
                name: name.to_string(),
                body,
            })
            .await?
        {
            ResponseBody::Service(Ok(answer)) => Ok(answer),
            ResponseBody::Service(Err(message)) => Err(KvsError::Service(message)),
            other => Err(KvsError::UnexpectedReply(format!(
                "called the service {name}, got {other:?}"
            ))),
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        if let Ok(mut send) = self.send.try_lock() {
            let _ = send.finish();
        }
        self.conn.close(0u32.into(), b"client done");
        self.endpoint.wait_idle().await;
    }
}

/// Why the connection ended, as the node said when it closed it (a refused certificate,
/// say), or else `fallback`.
fn close_reason(conn: &quinn::Connection, fallback: String) -> String {
    use quinn::ConnectionError as E;
    match conn.close_reason() {
        Some(e @ (E::ConnectionClosed(_) | E::TransportError(_))) => {
            format!("the node refused the connection: {e}")
        }
        Some(E::ApplicationClosed(c)) if !c.reason.is_empty() => {
            format!(
                "the node closed the connection: {}",
                String::from_utf8_lossy(&c.reason)
            )
        }
        _ => fallback,
    }
}

async fn read_responses(mut recv: quinn::RecvStream, conn: quinn::Connection, shared: Arc<Shared>) {
    let reason = loop {
        let body = match read_frame(&mut recv, DEFAULT_MAX_FRAME).await {
            Ok(Some(body)) => body,
            Ok(None) => break "the node closed the stream".to_string(),
            Err(e) => break close_reason(&conn, e.to_string()),
        };
        let response: Response = match decode_body(&body) {
            Ok(r) => r,
            Err(e) => break format!("unreadable response: {e}"),
        };
        if let ResponseBody::Refused(reason) = &response.body {
            // The node could not read one of our frames and closes the stream: every
            // request in flight fails with the reason.
            let reason = reason.clone();
            let waiters: Vec<Waiter> = match shared.pending.lock() {
                Ok(mut p) => p.drain().map(|(_, w)| w).collect(),
                Err(_) => Vec::new(),
            };
            for w in waiters {
                let _ = w.send(Err(KvsError::Refused(reason.clone())));
            }
            break format!("the node refused a request: {reason}");
        }
        if response.id == PUSH_ID {
            if let ResponseBody::Pushed(changes) = response.body {
                let sink = shared.push.lock().ok().and_then(|p| p.clone());
                // A subscriber that cannot keep up loses pushes; its renewals repair it.
                if let Some(sink) = sink {
                    let _ = sink.try_send(changes);
                }
            }
            continue;
        }
        let waiter = shared
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&response.id));
        if let Some(w) = waiter {
            let _ = w.send(Ok(response.body));
        }
    };
    shared.fail_all(&reason);
}

impl Store for Client {
    fn execute(
        &self,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<Vec<OpResult>, KvsError>> + Send {
        let expected = ops.len();
        async move {
            match self.request(RequestBody::ops(ops)).await? {
                ResponseBody::Results(results) if results.len() == expected => Ok(results),
                other => Err(KvsError::UnexpectedReply(format!(
                    "asked for {expected} results, got {other:?}"
                ))),
            }
        }
    }

    async fn stats(&self) -> Result<StatsSnapshot, KvsError> {
        match self.request(RequestBody::Stats).await? {
            ResponseBody::Stats(s) => Ok(s),
            other => Err(KvsError::UnexpectedReply(format!(
                "asked for stats, got {other:?}"
            ))),
        }
    }
}
