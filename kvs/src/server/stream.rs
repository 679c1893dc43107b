//! One client stream: request frames in, response frames (and pushes) out, each request
//! answered by its kind.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Caller;
use super::batch::dispatch;
use super::{Backend, refuse, reply};
use crate::acl::{Access, Right};
use crate::op::{Op, OpError, Reply};
use crate::protocol::{ProtocolError, Request, RequestBody, Response, ResponseBody, RoutingTable};
use crate::subscribe::{Fetched, PUSH_ID, PushSink, Pushed, SubscriberId, fingerprint};
use crate::tls::{Principal, Role};
use crate::wire::{decode_body, encode_frame, read_frame};

pub(super) async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<Backend>,
    caller: Arc<Caller>,
) {
    let principal = &caller.principal;
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
        if let Some(what) = forbidden(principal, &request.body) {
            metrics.add_refused_frame();
            tracing::warn!(%principal, "refused: {what}");
            let refusal = ProtocolError::Forbidden {
                who: principal.to_string(),
                what: what.into(),
            };
            reply(&tx, request.id, ResponseBody::Refused(refusal)).await;
            break;
        }
        match denied(&caller.access, &request.body) {
            None => {}
            Some(Err(refusal)) => {
                tracing::info!(%principal, "refused: {refusal}");
                reply(&tx, request.id, ResponseBody::Refused(refusal)).await;
                break;
            }
            Some(Ok(answer)) => {
                tracing::debug!(%principal, "refused by the ACL");
                reply(&tx, request.id, answer).await;
                continue;
            }
        }
        let stream = Answering {
            service: &service,
            access: &caller.access,
            id: request.id,
            tx: tx.clone(),
            permit,
        };
        let open = match request.body {
            RequestBody::Batch { ops, ack, route } => {
                let Answering { id, tx, permit, .. } = stream;
                dispatch(&service, id, ops, ack, route, tx, permit).await;
                true
            }
            RequestBody::Stats => stream.stats(),
            RequestBody::Peer(envelope) => stream.peer(envelope).await,
            RequestBody::Routing => stream.routing().await,
            RequestBody::SetReplication { key, factors } => {
                stream.set_replication(key, factors).await
            }
            RequestBody::Subscribe { keys, lease_ms } => {
                let sub = *subscriber.get_or_insert_with(|| {
                    node.add_subscriber(Arc::new(StreamSink {
                        tx: tx.clone(),
                        max_frame,
                    }))
                });
                stream.subscribe(sub, keys, lease_ms)
            }
            RequestBody::Unsubscribe { keys } => stream.unsubscribe(subscriber, keys).await,
            RequestBody::Service { name, body } => stream.service(&name, body),
            RequestBody::Members => stream.members().await,
            RequestBody::Keys(filter) => stream.keys(filter),
        };
        if !open {
            break;
        }
    }
    if let Some(sub) = subscriber {
        node.remove_subscriber(sub);
    }
    drop(tx);
    let _ = writer.await;
}

/// Why `principal` may not send `body`, if it may not: peer messages come only from nodes.
/// (Batches marked as routed are not among them: a client reads one replica that way,
/// with [`Client::execute_here`](crate::Client::execute_here), and the ACL checks each
/// operation whichever way it comes.)
fn forbidden(principal: &Principal, body: &RequestBody) -> Option<&'static str> {
    if principal.role == Role::Node {
        return None;
    }
    match body {
        RequestBody::Peer(_) => Some(
            "send peer messages (membership, replication, hand-offs): only node certificates may",
        ),
        _ => None,
    }
}

/// What the ACL refuses of `body`: an answer that says why (the stream carries on), or,
/// for requests whose answers cannot carry a refusal, a refusal that closes the stream.
fn denied(access: &Access, body: &RequestBody) -> Option<Result<ResponseBody, ProtocolError>> {
    fn refusals<T>(d: crate::acl::Denied, n: usize, what: &str) -> Vec<Result<T, OpError>> {
        let reason = format!("{d}; nothing in the {what} was run");
        (0..n)
            .map(|_| {
                Err(OpError::Forbidden {
                    reason: reason.clone(),
                })
            })
            .collect()
    }
    if matches!(access, Access::All) {
        return None;
    }
    match body {
        RequestBody::Batch { ops, .. } => access
            .check_ops(ops)
            .err()
            .map(|d| Ok(ResponseBody::Results(refusals(d, ops.len(), "batch")))),
        RequestBody::Subscribe { keys, .. } => keys
            .iter()
            .find_map(|(k, _)| access.check(Right::Read, k).err())
            .map(|d| {
                Ok(ResponseBody::Subscribed(refusals(
                    d,
                    keys.len(),
                    "subscription",
                )))
            }),
        RequestBody::SetReplication { key, .. } => access.check(Right::Admin, key).err().map(|d| {
            Err(ProtocolError::Forbidden {
                who: format!("user '{}'", d.user),
                what: format!(
                    "change the replication of '{}' (no 'admin' grant on a prefix of it)",
                    d.key
                ),
            })
        }),
        _ => None,
    }
}

/// One request of a stream being answered: each kind but batches (see [`dispatch`]) has
/// its method, which returns whether the stream stays open. The stream's in-flight permit
/// is released once the answer is sent.
struct Answering<'a> {
    service: &'a Arc<Backend>,
    access: &'a Access,
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    permit: OwnedSemaphorePermit,
}

impl Answering<'_> {
    /// Answers with what `answer` gives (nothing: no answer), in a task of its own.
    fn later(self, answer: impl Future<Output = Option<ResponseBody>> + Send + 'static) -> bool {
        let Answering { id, tx, permit, .. } = self;
        tokio::spawn(async move {
            if let Some(body) = answer.await {
                reply(&tx, id, body).await;
            }
            drop(permit);
        });
        true
    }

    async fn now(self, body: ResponseBody) -> bool {
        reply(&self.tx, self.id, body).await;
        true
    }

    fn stats(self) -> bool {
        let node = self.service.node.clone();
        self.later(async move { node.stats().await.ok().map(ResponseBody::Stats) })
    }

    /// This node's keys, those the caller may read.
    fn keys(self, filter: crate::op::KeyFilter) -> bool {
        let node = self.service.node.clone();
        let access = self.access.clone();
        self.later(async move {
            let keys = node
                .keys(&filter)
                .await
                .map(|mut keys| {
                    keys.retain(|k| access.lists(k));
                    keys
                })
                .map_err(|e| OpError::Unavailable {
                    reason: e.to_string(),
                });
            Some(ResponseBody::Keys(keys))
        })
    }

    /// A peer's message for the cluster agent. A node outside a cluster refuses it and
    /// closes the stream (the peer is misconfigured).
    async fn peer(self, envelope: crate::cluster::PeerEnvelope) -> bool {
        match self.service.cluster.clone() {
            Some(cluster) => self.later(async move {
                cluster
                    .handle_peer(envelope)
                    .await
                    .ok()
                    .map(ResponseBody::Peer)
            }),
            None => {
                self.now(ResponseBody::Refused(not_in_a_cluster())).await;
                false
            }
        }
    }

    async fn routing(self) -> bool {
        let table = match &self.service.cluster {
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
        self.now(ResponseBody::Routing(table)).await
    }

    async fn set_replication(self, key: bytes::Bytes, factors: crate::cluster::Factors) -> bool {
        let done = match &self.service.cluster {
            Some(c) => c.set_replication(key, factors).is_ok(),
            None => false,
        };
        if done {
            self.now(ResponseBody::Done).await
        } else {
            self.now(ResponseBody::Refused(not_in_a_cluster())).await
        }
    }

    fn subscribe(
        self,
        sub: SubscriberId,
        keys: Vec<(bytes::Bytes, Option<u64>)>,
        lease_ms: u32,
    ) -> bool {
        let answers = subscribe(self.service, sub, keys, lease_ms);
        self.later(async move { Some(ResponseBody::Subscribed(answers.await)) })
    }

    async fn unsubscribe(self, sub: Option<SubscriberId>, keys: Vec<bytes::Bytes>) -> bool {
        if let Some(sub) = sub {
            self.service.node.unsubscribe(sub, keys);
        }
        self.now(ResponseBody::Done).await
    }

    fn service(self, name: &str, body: bytes::Bytes) -> bool {
        let call = self.service.services.call(name, self.access, body);
        self.later(async move { Some(ResponseBody::Service(call.await)) })
    }

    async fn members(self) -> bool {
        let members = self
            .service
            .cluster
            .as_ref()
            .map(|c| c.view().member_status())
            .unwrap_or_default();
        self.now(ResponseBody::Members(members)).await
    }
}

fn not_in_a_cluster() -> ProtocolError {
    ProtocolError::Malformed("this node is not part of a cluster".into())
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
