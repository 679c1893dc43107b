//! The driver of the sans-IO request path ([`BatchRun`]): it does the I/O each action asks
//! for (runs on the workers, forwards to other nodes, replicates, inspects copies) and
//! feeds back what became of it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{Backend, now_ms, reply};
use crate::cluster::ClusterView;
use crate::cluster_runtime::PeerFailure;
use crate::coordinator::{Outcome, Target};
use crate::error::KvsError;
use crate::node::Changes;
use crate::op::{Ack, Op, OpError, OpResult};
use crate::protocol::{RequestBody, ResponseBody, Route};
use crate::request::{Action, BatchRun};

/// Runs a batch for a client stream: everything is handed out before this returns, in
/// arrival order (so a client's pipelined operations on a key keep their order); the answer
/// is assembled in a task.
#[allow(clippy::too_many_arguments)]
pub(super) async fn dispatch(
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
#[cfg(feature = "resp")]
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
            Answer::Inspected(ticket, raw) => batch.run.inspected(ticket, raw, view, now_ms()),
        }
        hand_out(service, &mut batch).await;
    }
    batch.run.into_results()
}
