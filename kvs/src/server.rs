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

use crate::cluster::{Cluster, ClusterView, NodeAddr, PeerFailure};
use crate::coordinator::{self, Coordinator, Outcome, Target};
use crate::error::KvsError;
use crate::node::Node;
use crate::protocol::{
    Ack, Op, OpError, OpResult, ProtocolError, Reply, Request, RequestBody, Response, ResponseBody,
    RoutingTable,
};
use crate::subscribe::{Fetched, PUSH_ID, PushSink, Pushed, SubscriberId, fingerprint};
use crate::wire::{WireError, decode_body, encode_frame, read_frame};

/// What a listener serves: the node's workers, and its cluster agent when it has one.
pub(crate) struct Service {
    pub(crate) node: Arc<Node>,
    pub(crate) cluster: Option<Cluster>,
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
        let service = Arc::new(Service { node, cluster });
        let accept_task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(serve_connection(incoming, service.clone()));
            }
        });
        Server {
            endpoint: self.endpoint,
            local_addr: self.local_addr,
            accept_task,
        }
    }
}

/// A running listener.
pub struct Server {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl Server {
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

async fn serve_connection(incoming: quinn::Incoming, service: Arc<Service>) {
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
    service: Arc<Service>,
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
            RequestBody::Ops(ops) => dispatch(&service, id, ops, Ack::One, false, tx, permit).await,
            RequestBody::Batch {
                ops,
                ack,
                forwarded,
            } => dispatch(&service, id, ops, ack, forwarded, tx, permit).await,
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
            RequestBody::Routed { ops, ack } => {
                // Keys this node does not own are answered NotOwner; the rest run here.
                let mut not_owned = Vec::new();
                let mut mine = Vec::new();
                let mut merged_reads = Vec::new();
                match &service.cluster {
                    Some(c) => {
                        let view = c.view();
                        for (i, op) in ops.into_iter().enumerate() {
                            if let Op::GetAll { key, meta } = op {
                                merged_reads.push((i, key, meta));
                                continue;
                            }
                            let owners = view.owners(op.key());
                            if owners.is_empty() || owners.iter().any(|o| o == c.me()) {
                                mine.push((i, op));
                            } else {
                                not_owned.push((i, owners));
                            }
                        }
                    }
                    None => mine = ops.into_iter().enumerate().collect(),
                }
                let count = mine.len() + not_owned.len() + merged_reads.len();
                let (at, local): (Vec<usize>, Vec<Op>) = mine.into_iter().unzip();
                let service2 = service.clone();
                let pending = service.node.submit(local.clone());
                tokio::spawn(async move {
                    let mut results: Vec<OpResult> = vec![Err(OpError::ShuttingDown); count];
                    for (i, owners) in not_owned {
                        results[i] = Err(OpError::NotOwner { owners });
                    }
                    for (i, key, meta) in merged_reads {
                        results[i] = read_all_replicas(&service2, key, meta).await;
                    }
                    let local = finish_local(&service2, local, pending, ack).await;
                    for (i, r) in at.into_iter().zip(local) {
                        results[i] = r;
                    }
                    reply(&tx, id, ResponseBody::Results(results)).await;
                    drop(permit);
                });
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
                let call = node.services().call(&name, body);
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
    service: &Arc<Service>,
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
    service: &Arc<Service>,
    id: u64,
    ops: Vec<Op>,
    ack: Ack,
    forwarded: bool,
    tx: mpsc::Sender<Vec<u8>>,
    permit: OwnedSemaphorePermit,
) {
    let batch = start_batch(service, ops, ack, forwarded).await;
    let service = service.clone();
    tokio::spawn(async move {
        let results = finish_batch(&service, batch).await;
        reply(&tx, id, ResponseBody::Results(results)).await;
        drop(permit);
    });
}

/// Runs a batch as a client of this node would have it run (other front-ends use this):
/// one result per operation, in order.
pub(crate) async fn execute(service: &Arc<Service>, ops: Vec<Op>, ack: Ack) -> Vec<OpResult> {
    let batch = start_batch(service, ops, ack, false).await;
    finish_batch(service, batch).await
}

/// A batch whose first round has been handed out, to this node's workers or to owners;
/// [`finish_batch`] waits for it and runs further rounds.
struct InFlight {
    ack: Ack,
    forwarded: bool,
    coordinator: Coordinator<NodeAddr>,
    /// Where each of the coordinator's operations sits in the batch.
    at: Vec<usize>,
    /// Reads of every replica (`GetAll`), by position: run when the rest is done.
    merged_reads: Vec<(usize, bytes::Bytes, bool)>,
    count: usize,
    started: Vec<Started>,
}

/// One group of a round, handed out.
enum Started {
    /// Running on this node's workers.
    Here(u64, Vec<Op>, Result<crate::node::PendingBatch, KvsError>),
    /// Sent to another node (or certainly not: `Err`).
    Remote(
        u64,
        NodeAddr,
        Result<tokio::sync::oneshot::Receiver<Result<ResponseBody, KvsError>>, PeerFailure>,
    ),
}

/// Rounds a batch may take: every owner of a key once, and a try again.
const MAX_ROUNDS: usize = 4;

/// Where an operation may run, preferred first (see [`coordinator::candidates`]): a
/// forwarded batch (or a node outside a cluster) runs everything here.
fn candidates(view: Option<&ClusterView>, ack: Ack, op: &Op) -> Vec<Target<NodeAddr>> {
    let Some(view) = view else {
        return vec![Target::Here];
    };
    let owners: Vec<(NodeAddr, bool)> = view
        .ring
        .owners(
            op.key(),
            view.table.factor(op.key()).unwrap_or(view.replication),
        )
        .into_iter()
        .filter_map(|id| view.nodes.get(&id))
        .map(|a| (a.clone(), view.is_alive(a)))
        .collect();
    // Any owner serves (`preferred` false): sending every key to its first live owner gives
    // read-your-writes through any node but forwards twice as many operations — measured
    // through one node of `calm up` with redis-benchmark: GET throughput about 60% lower.
    coordinator::candidates(&view.me, &owners, op, ack == Ack::One, false)
}

/// Plans a round and hands its groups out: to this node's workers (in the order batches
/// arrive, so a client's pipelined requests on one key run in the order it sent them) and
/// to other nodes.
async fn start_round(
    service: &Arc<Service>,
    coordinator: &mut Coordinator<NodeAddr>,
    forwarded: bool,
    ack: Ack,
) -> Vec<Started> {
    // One view for the round; a forwarded batch runs here, whoever owns its keys.
    let view = service
        .cluster
        .as_ref()
        .filter(|_| !forwarded)
        .map(|c| c.view());
    let sends = coordinator.plan(|_, op| candidates(view.as_deref(), ack, op));
    let mut started = Vec::new();
    for send in sends {
        match send.target {
            Target::Here => {
                let pending = service.node.submit(send.ops.clone());
                started.push(Started::Here(send.id, send.ops, pending));
            }
            Target::Node(addr) => {
                let body = RequestBody::Batch {
                    ops: send.ops,
                    ack,
                    forwarded: true,
                };
                let sent = match &service.cluster {
                    Some(cluster) => match cluster.peers().client(&addr).await {
                        Ok(client) => client
                            .start_request(body)
                            .await
                            .map_err(PeerFailure::MaybeSent),
                        Err(e) => Err(PeerFailure::NotSent(e)),
                    },
                    None => Err(PeerFailure::NotSent(KvsError::ShutDown)),
                };
                started.push(Started::Remote(send.id, addr, sent));
            }
        }
    }
    started
}

/// Hands a batch's first round out.
async fn start_batch(service: &Arc<Service>, ops: Vec<Op>, ack: Ack, forwarded: bool) -> InFlight {
    let count = ops.len();
    let mut merged_reads = Vec::new();
    let mut at = Vec::new();
    let mut rest = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::GetAll { key, meta } if service.cluster.is_some() && !forwarded => {
                merged_reads.push((i, key, meta));
            }
            op => {
                at.push(i);
                rest.push(op);
            }
        }
    }
    let mut coordinator = Coordinator::new(rest, MAX_ROUNDS);
    let started = start_round(service, &mut coordinator, forwarded, ack).await;
    InFlight {
        ack,
        forwarded,
        coordinator,
        at,
        merged_reads,
        count,
        started,
    }
}

/// Waits for every part of a batch, running further rounds for what failed; one result
/// per operation, in order.
async fn finish_batch(service: &Arc<Service>, batch: InFlight) -> Vec<OpResult> {
    let InFlight {
        ack,
        forwarded,
        mut coordinator,
        at,
        merged_reads,
        count,
        mut started,
    } = batch;
    loop {
        for group in std::mem::take(&mut started) {
            let (id, outcome) = match group {
                Started::Here(id, ops, pending) => (
                    id,
                    Outcome::Answered(finish_local(service, ops, pending, ack).await),
                ),
                Started::Remote(id, addr, sent) => {
                    let answer = match (sent, &service.cluster) {
                        (Ok(rx), Some(cluster)) => cluster.peers().await_answer(&addr, rx).await,
                        (Ok(_), None) => Err(PeerFailure::NotSent(KvsError::ShutDown)),
                        (Err(e), _) => Err(e),
                    };
                    let outcome = match answer {
                        Ok(ResponseBody::Results(r)) => Outcome::Answered(r),
                        Ok(other) => {
                            // Not an answer to the batch: it may still have been applied.
                            tracing::warn!(peer = %addr, "unexpected answer to a forwarded batch: {other:?}");
                            Outcome::MaybeSent
                        }
                        Err(PeerFailure::NotSent(_)) => Outcome::NotSent,
                        Err(PeerFailure::MaybeSent(_)) => Outcome::MaybeSent,
                    };
                    (id, outcome)
                }
            };
            coordinator.handle(id, outcome);
        }
        if !coordinator.needs_round() {
            break;
        }
        started = start_round(service, &mut coordinator, forwarded, ack).await;
        if started.is_empty() {
            break;
        }
    }
    let mut results: Vec<OpResult> = vec![Err(OpError::ShuttingDown); count];
    for (i, r) in at.into_iter().zip(coordinator.into_results()) {
        results[i] = r;
    }
    for (i, key, meta) in merged_reads {
        results[i] = read_all_replicas(service, key, meta).await;
    }
    results
}

/// Waits for a group run on this node's workers and hands its deltas on ([`settle`]); a
/// read that finds nothing while this node may still lack keys it owns is answered by the
/// key's other and previous owners. If the workers are gone, every operation answers
/// `ShuttingDown`.
async fn finish_local(
    service: &Service,
    ops: Vec<Op>,
    pending: Result<crate::node::PendingBatch, KvsError>,
    ack: Ack,
) -> Vec<OpResult> {
    let results = match pending {
        Ok(p) => match p.results_and_changes().await {
            Ok((local, changes)) => settle(service, local, changes, ack).await,
            Err(_) => vec![Err(OpError::ShuttingDown); ops.len()],
        },
        Err(_) => vec![Err(OpError::ShuttingDown); ops.len()],
    };
    let Some(cluster) = &service.cluster else {
        return results;
    };
    let view = cluster.view();
    if !view.settling() {
        return results;
    }
    let mut results = results;
    for (op, r) in ops.into_iter().zip(results.iter_mut()) {
        if let Op::Get { key, meta } = op
            && *r == Ok(Reply::Value(None))
        {
            let mut holders = view.other_holders(&key);
            if !holders.is_empty() {
                holders.insert(0, cluster.me().to_string());
                *r = read_replicas(service, key, meta, holders).await;
            }
        }
    }
    results
}

/// Hands the deltas of local writes on: to the agent's gossip (ack `one`), or to every other
/// owner before answering (ack `all`, whose writes fail if an owner did not merge them).
async fn settle(
    service: &Service,
    mut local: Vec<OpResult>,
    changes: crate::node::Changes,
    ack: Ack,
) -> Vec<OpResult> {
    let Some(cluster) = &service.cluster else {
        return local;
    };
    let need = match ack {
        Ack::One => None,
        Ack::All => Some(usize::MAX),
        Ack::Replicas(k) => Some(usize::from(k)),
    };
    match need {
        Some(k) if k > 1 && !changes.is_empty() => {
            if let Err(e) = cluster.replicate_now(changes, k).await {
                for r in local
                    .iter_mut()
                    .filter(|r| matches!(r, Ok(Reply::Written | Reply::Deleted { .. })))
                {
                    *r = Err(e.clone());
                }
            }
        }
        _ => cluster.local_changes(changes),
    }
    local
}

/// Reads a key as the merge of every reachable replica's stored value.
async fn read_all_replicas(service: &Service, key: bytes::Bytes, meta: bool) -> OpResult {
    let Some(cluster) = &service.cluster else {
        return Err(OpError::ShuttingDown);
    };
    let owners = cluster.view().owners(&key);
    read_replicas(service, key, meta, owners).await
}

/// Reads a key as the merge of the stored values of the reachable nodes among `holders`.
async fn read_replicas(
    service: &Service,
    key: bytes::Bytes,
    meta: bool,
    holders: Vec<NodeAddr>,
) -> OpResult {
    let Some(cluster) = &service.cluster else {
        return Err(OpError::ShuttingDown);
    };
    let mut merged: Option<crate::value::Value> = None;
    let mut answered = 0;
    for owner in holders {
        let raw = if owner == cluster.me() {
            match service
                .node
                .execute(vec![Op::Raw { key: key.clone() }])
                .await
            {
                Ok(mut r) => r.pop(),
                Err(_) => None,
            }
        } else {
            let body = RequestBody::Batch {
                ops: vec![Op::Raw { key: key.clone() }],
                ack: Ack::One,
                forwarded: true,
            };
            match cluster.peers().request(&owner, body).await {
                Ok(ResponseBody::Results(mut r)) => r.pop(),
                _ => None,
            }
        };
        match raw {
            Some(Ok(Reply::Raw(value))) => {
                answered += 1;
                if let Some(v) = value {
                    match &mut merged {
                        Some(m) => {
                            m.merge_replicated(v);
                        }
                        None => merged = Some(v),
                    }
                }
            }
            Some(Err(e)) => return Err(e),
            _ => {}
        }
    }
    if answered == 0 {
        return Err(OpError::Unavailable {
            reason: "no replica of the key answered".into(),
        });
    }
    Ok(Reply::Value(merged.and_then(|v| v.read(meta))))
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
