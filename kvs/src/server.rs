//! The QUIC listener of a node: accepts connections, reads request frames, runs them on the
//! node's workers, writes response frames.
//!
//! Each bidirectional stream carries request frames one way and response frames the other.
//! Many requests may be in flight on a stream (responses carry the request id); at most
//! `max_in_flight_per_stream` are, after which the node stops reading that stream until
//! answers drain, so a client that sends without reading holds bounded memory and stalls
//! only itself. A frame the node cannot read is answered with a typed
//! [`ProtocolError`] and the stream is closed; the connection, other
//! streams and other clients carry on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use crate::cluster::ClusterView;
use crate::cluster_runtime::{Cluster, PeerFailure};
use crate::coordinator::{Outcome, Target};
use crate::error::KvsError;
use crate::node::{Changes, Node};
use crate::op::{Ack, Op, OpError, OpResult, Reply};
use crate::protocol::{
    ProtocolError, Request, RequestBody, Response, ResponseBody, Route, RoutingTable,
};
use crate::request::{Action, BatchRun};
use crate::service::Services;
use crate::subscribe::{Fetched, PUSH_ID, PushSink, Pushed, SubscriberId, fingerprint};
use crate::wire::{WireError, decode_body, encode_frame, read_frame};

/// What a listener serves: the node's workers, its cluster agent when it has one, and the
/// other request handlers registered with it.
pub(crate) struct Backend {
    pub(crate) node: Arc<Node>,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) services: Services,
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
        self.endpoint.close(0u32.into(), b"node shutting down");
        self.accept_task.abort();
        self.endpoint.wait_idle().await;
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
    tracing::debug!(%peer, "client connected");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(send, recv, service.clone()));
            }
            Err(e) => {
                tracing::debug!(%peer, "connection closed: {e}");
                return;
            }
        }
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<Backend>,
) {
    let node = service.node.clone();
    let limit = node.config().max_in_flight_per_stream;
    let max_frame = node.config().max_frame_bytes;
    let metrics = node.metrics().clone();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(limit);
    let writer_metrics = metrics.clone();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if send.write_all(&frame).await.is_err() {
                // The client went away; in-flight requests still complete on the workers.
                return;
            }
            writer_metrics.add_bytes_out(frame.len());
        }
        let _ = send.finish();
    });
    let in_flight = Arc::new(Semaphore::new(limit));
    // Set once this stream subscribes to keys; its subscriptions end with it.
    let mut subscriber: Option<SubscriberId> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let body = match read_frame(&mut recv, max_frame).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                refuse(&tx, &e, &metrics).await;
                break;
            }
        };
        metrics.add_bytes_in(body.len() + 4);
        let request: Request = match decode_body(&body) {
            Ok(r) => r,
            Err(e) => {
                refuse(&tx, &e, &metrics).await;
                break;
            }
        };
        let id = request.id;
        let tx = tx.clone();
        match request.body {
            RequestBody::Batch { ops, ack, route } => {
                dispatch(&service, id, ops, ack, route, tx, permit).await
            }
            RequestBody::Stats => {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Ok(stats) = node.stats().await {
                        reply(&tx, id, ResponseBody::Stats(stats)).await;
                    }
                    drop(permit);
                });
            }
            RequestBody::Peer(envelope) => match service.cluster.clone() {
                Some(cluster) => {
                    tokio::spawn(async move {
                        if let Ok(answer) = cluster.handle_peer(envelope).await {
                            reply(&tx, id, ResponseBody::Peer(answer)).await;
                        }
                        drop(permit);
                    });
                }
                None => {
                    let refusal =
                        ProtocolError::Malformed("this node is not part of a cluster".into());
                    reply(&tx, id, ResponseBody::Refused(refusal)).await;
                    break;
                }
            },
            RequestBody::Routing => {
                let table = match &service.cluster {
                    Some(c) => {
                        let view = c.view();
                        RoutingTable {
                            replication: view.replication,
                            members: view.members.clone(),
                            overrides: view.table.overrides(),
                        }
                    }
                    None => RoutingTable {
                        replication: 1,
                        members: Vec::new(),
                        overrides: Vec::new(),
                    },
                };
                reply(&tx, id, ResponseBody::Routing(table)).await;
                drop(permit);
            }
            RequestBody::SetReplication { key, factors } => {
                match &service.cluster {
                    Some(c) if c.set_replication(key, factors).is_ok() => {
                        reply(&tx, id, ResponseBody::Done).await;
                    }
                    _ => {
                        let refusal =
                            ProtocolError::Malformed("this node is not part of a cluster".into());
                        reply(&tx, id, ResponseBody::Refused(refusal)).await;
                    }
                }
                drop(permit);
            }
            RequestBody::Subscribe { keys, lease_ms } => {
                let sub = *subscriber.get_or_insert_with(|| {
                    node.add_subscriber(Arc::new(StreamSink {
                        tx: tx.clone(),
                        max_frame,
                    }))
                });
                let service = service.clone();
                let answers = subscribe(&service, sub, keys, lease_ms);
                tokio::spawn(async move {
                    let answers = answers.await;
                    reply(&tx, id, ResponseBody::Subscribed(answers)).await;
                    drop(permit);
                });
            }
            RequestBody::Unsubscribe { keys } => {
                if let Some(sub) = subscriber {
                    node.unsubscribe(sub, keys);
                }
                reply(&tx, id, ResponseBody::Done).await;
                drop(permit);
            }
            RequestBody::Service { name, body } => {
                let call = service.services.call(&name, body);
                tokio::spawn(async move {
                    let answer = call.await;
                    reply(&tx, id, ResponseBody::Service(answer)).await;
                    drop(permit);
                });
            }
            RequestBody::Members => {
                let members = service
                    .cluster
                    .as_ref()
                    .map(|c| c.view().member_status())
                    .unwrap_or_default();
                reply(&tx, id, ResponseBody::Members(members)).await;
                drop(permit);
            }
        }
    }
    if let Some(sub) = subscriber {
        node.remove_subscriber(sub);
    }
    drop(tx);
    let _ = writer.await;
}

/// Pushes to a client stream. A stream whose client does not read fills up: pushes are
/// then dropped (its renewals repair the copies), never queued without bound.
struct StreamSink {
    tx: mpsc::Sender<Vec<u8>>,
    max_frame: usize,
}

impl PushSink for StreamSink {
    fn push(&self, changes: Pushed) -> bool {
        let frame = match encode_frame(&Response {
            id: PUSH_ID,
            body: ResponseBody::Pushed(changes.clone()),
        }) {
            Ok(f) => f,
            Err(_) => return true,
        };
        if frame.len() > self.max_frame && changes.len() > 1 {
            // Too large for one frame: halve it.
            let mut first = changes;
            let second = first.split_off(first.len() / 2);
            return self.push(first) && self.push(second);
        }
        match self.tx.try_send(frame) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Subscribes `sub` to the keys this node owns among `keys` (before reading them, so no
/// change falls in between), and answers each with its value, or unchanged when the
/// fingerprint matches, or not owner.
fn subscribe(
    service: &Arc<Backend>,
    sub: SubscriberId,
    keys: Vec<(bytes::Bytes, Option<u64>)>,
    lease_ms: u32,
) -> impl std::future::Future<Output = Vec<Result<Fetched, OpError>>> + Send + 'static {
    let mut answers: Vec<Result<Fetched, OpError>> = vec![Err(OpError::ShuttingDown); keys.len()];
    let mut mine = Vec::new();
    let view = service
        .cluster
        .as_ref()
        .map(|c| (c.view(), c.me().to_string()));
    for (i, (key, print)) in keys.into_iter().enumerate() {
        let owners = view
            .as_ref()
            .map(|(v, _)| v.owners(&key))
            .unwrap_or_default();
        let owned = owners.is_empty()
            || view
                .as_ref()
                .is_some_and(|(_, me)| owners.iter().any(|o| o == me));
        if owned {
            mine.push((i, key, print));
        } else {
            answers[i] = Err(OpError::NotOwner { owners });
        }
    }
    let node = service.node.clone();
    node.subscribe(
        sub,
        mine.iter().map(|(_, k, _)| k.clone()).collect(),
        lease_ms,
    );
    let reads: Vec<Op> = mine
        .iter()
        .map(|(_, key, _)| Op::Get {
            key: key.clone(),
            meta: true,
        })
        .collect();
    let pending = node.submit(reads);
    async move {
        let results = match pending {
            Ok(p) => p.results().await.ok(),
            Err(_) => None,
        };
        if let Some(results) = results {
            for ((i, _, print), result) in mine.into_iter().zip(results) {
                answers[i] = result.map(|reply| match reply {
                    Reply::Value(v) if print == Some(fingerprint(&v)) => Fetched::Unchanged,
                    Reply::Value(v) => Fetched::Value(v),
                    _ => Fetched::Value(None),
                });
            }
        }
        answers
    }
}

/// Runs a batch for a client stream: everything is handed out before this returns, in
/// arrival order (so a client's pipelined operations on a key keep their order); the answer
/// is assembled in a task.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    service: &Arc<Backend>,
    id: u64,
    ops: Vec<Op>,
    ack: Ack,
    route: Route,
    tx: mpsc::Sender<Vec<u8>>,
    permit: OwnedSemaphorePermit,
) {
    let batch = start_batch(service, ops, ack, route).await;
    let service = service.clone();
    tokio::spawn(async move {
        let results = finish_batch(&service, batch).await;
        reply(&tx, id, ResponseBody::Results(results)).await;
        drop(permit);
    });
}

/// Runs a batch as a client of this node would have it run (other front-ends use this):
/// one result per operation, in order.
pub(crate) async fn execute(service: &Arc<Backend>, ops: Vec<Op>, ack: Ack) -> Vec<OpResult> {
    let batch = start_batch(service, ops, ack, Route::Coordinate).await;
    finish_batch(service, batch).await
}

/// A batch being run: the sans-IO [`BatchRun`] and what it waits for, in the order it was
/// handed out.
struct InFlight {
    run: BatchRun,
    waiting: VecDeque<Waiting>,
}

/// Something handed out for a batch, to be awaited.
type Waiting = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// What came back for a batch.
enum Answer {
    Ran(u64, Result<(Vec<OpResult>, Changes), OpError>),
    Forwarded(u64, Outcome),
    Replicated(u64, Result<(), OpError>),
    Inspected(u64, Option<OpResult>),
}

fn view(service: &Backend) -> Option<Arc<ClusterView>> {
    service.cluster.as_ref().map(|c| c.view())
}

/// Starts a batch and hands its first actions out.
async fn start_batch(service: &Arc<Backend>, ops: Vec<Op>, ack: Ack, route: Route) -> InFlight {
    let view = view(service);
    let run = BatchRun::new(ops, ack, route, view.as_deref());
    let mut batch = InFlight {
        run,
        waiting: VecDeque::new(),
    };
    hand_out(service, &mut batch).await;
    batch
}

/// Does what the batch asks: runs groups on this node's workers at once (so batches keep
/// their arrival order), sends groups to other nodes, and queues what to await.
async fn hand_out(service: &Arc<Backend>, batch: &mut InFlight) {
    while let Some(action) = batch.run.poll_action() {
        let waiting: Waiting = match action {
            Action::Run { group, ops } => {
                let pending = service.node.submit(ops);
                Box::pin(async move {
                    let answer = match pending {
                        Ok(p) => p
                            .results_and_changes()
                            .await
                            .map_err(|_| OpError::ShuttingDown),
                        Err(_) => Err(OpError::ShuttingDown),
                    };
                    Answer::Ran(group, answer)
                })
            }
            Action::Forward {
                group,
                to,
                ops,
                ack,
            } => {
                let body = RequestBody::Batch {
                    ops,
                    ack,
                    route: Route::Forwarded,
                };
                let cluster = service.cluster.clone();
                let sent = match &cluster {
                    Some(cluster) => match cluster.peers().client(&to).await {
                        Ok(client) => client
                            .start_request(body)
                            .await
                            .map_err(PeerFailure::MaybeSent),
                        Err(e) => Err(PeerFailure::NotSent(e)),
                    },
                    None => Err(PeerFailure::NotSent(KvsError::ShutDown)),
                };
                Box::pin(async move {
                    let answer = match (sent, &cluster) {
                        (Ok(rx), Some(cluster)) => cluster.peers().await_answer(&to, rx).await,
                        (Ok(_), None) => Err(PeerFailure::NotSent(KvsError::ShutDown)),
                        (Err(e), _) => Err(e),
                    };
                    let outcome = match answer {
                        Ok(ResponseBody::Results(r)) => Outcome::Answered(r),
                        Ok(other) => {
                            // Not an answer to the batch: it may still have been applied.
                            tracing::warn!(peer = %to, "unexpected answer to a forwarded batch: {other:?}");
                            Outcome::MaybeSent
                        }
                        Err(PeerFailure::NotSent(_)) => Outcome::NotSent,
                        Err(PeerFailure::MaybeSent(_)) => Outcome::MaybeSent,
                    };
                    Answer::Forwarded(group, outcome)
                })
            }
            Action::Gossip(changes) => {
                if let Some(cluster) = &service.cluster {
                    cluster.local_changes(changes);
                }
                continue;
            }
            Action::Replicate {
                ticket,
                changes,
                need,
            } => {
                let cluster = service.cluster.clone();
                Box::pin(async move {
                    let result = match cluster {
                        Some(c) => c.replicate_now(changes, need).await,
                        None => Ok(()),
                    };
                    Answer::Replicated(ticket, result)
                })
            }
            Action::Inspect { ticket, at, key } => {
                let service = service.clone();
                Box::pin(async move {
                    let ops = vec![Op::Raw { key }];
                    let raw = match (at, &service.cluster) {
                        (Target::Here, _) => match service.node.execute(ops).await {
                            Ok(mut r) => r.pop(),
                            Err(_) => None,
                        },
                        (Target::Node(addr), Some(cluster)) => {
                            let body = RequestBody::Batch {
                                ops,
                                ack: Ack::One,
                                route: Route::Forwarded,
                            };
                            match cluster.peers().request(&addr, body).await {
                                Ok(ResponseBody::Results(mut r)) => r.pop(),
                                _ => None,
                            }
                        }
                        (Target::Node(_), None) => None,
                    };
                    Answer::Inspected(ticket, raw)
                })
            }
        };
        batch.waiting.push_back(waiting);
    }
}

/// Awaits what a batch handed out, feeds it back, and hands out what follows, until every
/// operation has its result; one result per operation, in order.
async fn finish_batch(service: &Arc<Backend>, mut batch: InFlight) -> Vec<OpResult> {
    while let Some(waiting) = batch.waiting.pop_front() {
        let answer = waiting.await;
        let view = view(service);
        let view = view.as_deref();
        match answer {
            Answer::Ran(group, a) => batch.run.ran(group, a, view, now_ms()),
            Answer::Forwarded(group, outcome) => batch.run.forwarded(group, outcome, view),
            Answer::Replicated(ticket, r) => batch.run.replicated(ticket, r, view, now_ms()),
            Answer::Inspected(ticket, raw) => batch.run.inspected(ticket, raw, view),
        }
        hand_out(service, &mut batch).await;
    }
    batch.run.into_results()
}

/// Milliseconds since the Unix epoch: the clock the cluster agent's settling time uses.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
