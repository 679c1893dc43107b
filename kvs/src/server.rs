//! The QUIC listener of a node: accepts connections, reads request frames, runs them on the
//! node's workers, writes response frames.
//!
//! Each bidirectional stream carries request frames one way and response frames the other.
//! Many requests may be in flight on a stream (responses carry the request id); at most
//! `max_in_flight_per_stream` are, after which the node stops reading that stream until
//! answers drain, so a client that sends without reading holds bounded memory and stalls
//! only itself. A frame the node cannot read is answered with a typed
//! [`ProtocolError`](crate::ProtocolError) and the stream is closed; the connection, other
//! streams and other clients carry on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::error::KvsError;
use crate::node::Node;
use crate::protocol::{OpError, Request, RequestBody, Response, ResponseBody};
use crate::wire::{WireError, decode_body, encode_frame, read_frame};

/// A running listener.
pub struct Server {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl Server {
    /// Listens on `listen` with the TLS configuration `config`, serving `node`.
    pub fn start(
        node: Arc<Node>,
        listen: SocketAddr,
        config: quinn::ServerConfig,
    ) -> Result<Server, KvsError> {
        let endpoint = quinn::Endpoint::server(config, listen).map_err(|e| KvsError::Connect {
            addr: listen.to_string(),
            reason: format!("cannot listen: {e}"),
        })?;
        let local_addr = endpoint.local_addr().map_err(|e| KvsError::Connect {
            addr: listen.to_string(),
            reason: e.to_string(),
        })?;
        let accepting = endpoint.clone();
        let accept_task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(serve_connection(incoming, node.clone()));
            }
        });
        Ok(Server {
            endpoint,
            local_addr,
            accept_task,
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

async fn serve_connection(incoming: quinn::Incoming, node: Arc<Node>) {
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
                tokio::spawn(serve_stream(send, recv, node.clone()));
            }
            Err(e) => {
                tracing::debug!(%peer, "connection closed: {e}");
                return;
            }
        }
    }
}

async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, node: Arc<Node>) {
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
            RequestBody::Ops(ops) => {
                let count = ops.len();
                // Submitted here, in arrival order; answered whenever the workers finish.
                let pending = node.submit(ops);
                tokio::spawn(async move {
                    let results = match pending {
                        Ok(p) => p.results().await,
                        Err(e) => Err(e),
                    };
                    let results =
                        results.unwrap_or_else(|_| vec![Err(OpError::ShuttingDown); count]);
                    reply(&tx, id, ResponseBody::Results(results)).await;
                    drop(permit);
                });
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
        }
    }
    drop(tx);
    let _ = writer.await;
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
