//! A RESP (Redis protocol) front-end: every Redis client and tool can talk to a node.
//!
//! Each node may listen for RESP2 (and RESP3 after `HELLO 3`) over TCP. Commands map onto
//! lattices: strings are last-writer-wins registers, `INCR` and friends a PN-counter, sets
//! an add-wins set; calm's other kinds have `CALM.*` commands. A command that cannot be
//! coordination-free (`SET ... NX`, `WATCH`, `MULTI`, ...) answers an error that says why.
//! Any node serves any key, forwarding to the key's owners as for native clients.
//!
//! Requests are framed with limits before they are decoded (by the `redis-protocol`
//! crate): an over-long argument, too many arguments, nesting or malformed framing is
//! answered `-ERR Protocol error: ...` and the connection closed. Pipelined commands are
//! answered in order; consecutive data commands run as one batch on the workers. A client
//! that sends without reading stalls only its own connection: the node stops reading from
//! it until its replies are written.

pub(crate) mod commands;
mod docs;
pub(crate) mod framing;
mod info;
mod pubsub;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::{BytesFrame as Frame2, Resp2Frame};
use redis_protocol::resp3::types::BytesFrame as Frame3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster_runtime::Cluster;
use crate::error::KvsError;
use crate::node::Node;
use crate::op::{Ack, KeyFilter, Op};
use crate::protocol::{RequestBody, ResponseBody};
use crate::server::{Backend, execute};

pub use commands::{COMMANDS, Out, REDIS_VERSION};
use commands::{Finish, Listing, Session, Step};
use framing::{Framed, Limits};

/// How the RESP front-end behaves.
#[derive(Clone, Debug)]
pub struct RespConfig {
    /// Clients must `AUTH` with this password first (`requirepass` in Redis).
    pub password: Option<String>,
    /// When writes are answered: [`Ack::Visible`] (the default) once every owner seen alive
    /// holds them, so a read through any node finds them; [`Ack::One`] once the first
    /// owner does (faster writes; a read through another node may miss a write for about a
    /// millisecond).
    pub ack: Ack,
    /// Whether clients speak TLS (`redis-cli --tls`), and with which certificate.
    pub tls: RespTls,
}

/// TLS on the Redis port.
#[derive(Clone, Debug, Default)]
pub enum RespTls {
    /// Plain TCP, as Redis by default.
    #[default]
    Off,
    /// TLS with the node's own certificate ([`launch`](crate::launch) resolves it to a
    /// configuration; `calm server --resp-tls`).
    NodeCertificate,
    /// TLS with this configuration.
    Config(Arc<rustls::ServerConfig>),
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            password: None,
            ack: Ack::Visible,
            tls: RespTls::Off,
        }
    }
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// Commands run as one batch at most; their replies are written before more are read.
const MAX_BATCH: usize = 512;

/// Encoded replies held before they are written to the socket: a client asking for large
/// values costs this much memory, not the size of everything it asked for.
const OUT_LIMIT: usize = 256 << 10;

/// A running RESP listener.
pub struct RespServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl RespServer {
    /// Listens on `listen`, serving `node` (as a member of `cluster`, if given). Must be
    /// called inside a Tokio runtime.
    /// Messages published through other nodes arrive through `services` (the node
    /// server's, [`Server::services`](crate::server::Server::services)).
    pub fn start(
        listen: SocketAddr,
        node: Arc<Node>,
        cluster: Option<Cluster>,
        config: RespConfig,
        services: crate::service::Services,
    ) -> Result<RespServer, KvsError> {
        let cannot = |e: std::io::Error| KvsError::Connect {
            addr: listen.to_string(),
            reason: format!("cannot listen for RESP: {e}"),
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(cannot)?;
        std_listener.set_nonblocking(true).map_err(cannot)?;
        let listener = TcpListener::from_std(std_listener).map_err(cannot)?;
        let local_addr = listener.local_addr().map_err(|e| KvsError::io("RESP", e))?;
        let hub = Arc::new(pubsub::Hub::default());
        services.register(pubsub::SERVICE, Arc::new(pubsub::HubService(hub.clone())));
        let service = Arc::new(Backend {
            node,
            cluster,
            services,
        });
        let (stop, stopped) = watch::channel(false);
        let acceptor = match &config.tls {
            RespTls::Off => None,
            RespTls::Config(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.clone())),
            RespTls::NodeCertificate => {
                return Err(KvsError::Config(
                    "TLS on the Redis port with the node's certificate: start the node with launch(), which reads it".into(),
                ));
            }
        };
        let config = Arc::new(config);
        let ids = Arc::new(AtomicU64::new(1));
        let clients = Arc::new(info::Clients::default());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let mut session = Session::new(id, config.password.is_none(), rand::random());
                // With an ACL, a connection that has not said who it is acts as the user
                // `default`: what the file grants that name, nothing if it lists none.
                if let Some(acl) = &service.node.config().acl {
                    session.access = acl.access("default");
                }
                let conn = Connection {
                    service: service.clone(),
                    config: config.clone(),
                    clients: clients.clone(),
                    session,
                    peer,
                    local: local_addr,
                    hub: hub.clone(),
                    inbox: None,
                    channels: BTreeSet::new(),
                    patterns: BTreeSet::new(),
                };
                let mut stopped = stopped.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let serving = async move {
                        match acceptor {
                            None => {
                                let (rd, wr) = stream.into_split();
                                conn.serve(rd, wr).await
                            }
                            Some(acceptor) => {
                                let tls =
                                    tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream));
                                match tls.await {
                                    Ok(Ok(tls)) => {
                                        let (rd, wr) = tokio::io::split(tls);
                                        conn.serve(rd, wr).await
                                    }
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, "RESP TLS handshake failed: {e}")
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "RESP TLS handshake timed out")
                                    }
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = serving => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Ok(RespServer {
            local_addr,
            stop,
            accept,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and closes every connection.
    pub fn shutdown(self) {
        self.accept.abort();
        let _ = self.stop.send(true);
    }
}

struct Connection {
    service: Arc<Backend>,
    config: Arc<RespConfig>,
    clients: Arc<info::Clients>,
    session: Session,
    /// The client's address, and this port's.
    peer: SocketAddr,
    local: SocketAddr,
    /// This node's subscribers; this connection's messages, once it subscribed; its
    /// channels and patterns.
    hub: Arc<pubsub::Hub>,
    inbox: Option<pubsub::Inbox>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

impl Connection {
    fn limits(&self) -> Limits {
        let max_frame = self.service.node.config().max_frame_bytes;
        Limits {
            max_args: 1 << 20,
            max_bulk: max_frame,
            max_inline: 64 << 10,
        }
    }

    async fn serve<R, W>(mut self, mut rd: R, mut wr: W)
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let clients = self.clients.clone();
        let _connected = clients.connected(self.session.id, self.peer, self.local);
        let limits = self.limits();
        let mut buf = BytesMut::with_capacity(16 << 10);
        let mut out = BytesMut::with_capacity(16 << 10);
        let _leaves = Leaves(self.hub.clone(), self.session.id);
        loop {
            tokio::select! {
                read = rd.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                Some(message) = next_message(&mut self.inbox) => {
                    self.encode(&message_out(message), &mut out);
                    while let Some(Ok(more)) = self.inbox.as_mut().map(|i| i.try_recv()) {
                        self.encode(&message_out(more), &mut out);
                        if out.len() > OUT_LIMIT {
                            break;
                        }
                    }
                    if wr.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                    continue;
                }
            }
            loop {
                let mut requests = Vec::new();
                let mut close = None;
                while requests.len() < MAX_BATCH {
                    match next_request(&mut buf, limits) {
                        Ok(Some(args)) => requests.push(args),
                        Ok(None) => break,
                        Err(e) => {
                            close = Some(e);
                            break;
                        }
                    }
                }
                let more = requests.len() == MAX_BATCH;
                let Ok(quit) = self.run(requests, &mut out, &mut wr).await else {
                    return;
                };
                if let Some(e) = &close {
                    self.encode(&Out::err(format!("ERR Protocol error: {e}")), &mut out);
                }
                if !out.is_empty() {
                    if wr.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                if quit || close.is_some() {
                    let _ = wr.shutdown().await;
                    return;
                }
                if !more {
                    break;
                }
            }
        }
    }

    /// Runs commands in order, consecutive data commands as one batch; true after `QUIT`.
    /// Replies go to `out`, written to `wr` whenever it holds more than [`OUT_LIMIT`].
    async fn run(
        &mut self,
        requests: Vec<Vec<Bytes>>,
        out: &mut BytesMut,
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> std::io::Result<bool> {
        let mut ops: Vec<Op> = Vec::new();
        let mut waiting: Vec<(usize, Finish)> = Vec::new();
        let last = requests.last().and_then(|r| r.first()).cloned();
        for args in requests {
            let gate = commands::Gate {
                password: self.config.password.as_deref(),
                acl: self.service.node.config().acl.as_deref(),
            };
            let step = commands::plan(&mut self.session, &args, &gate, crate::tasks::now_ms());
            if let Step::Data(more, finish) = step {
                waiting.push((more.len(), finish));
                ops.extend(more);
                continue;
            }
            self.flush(&mut ops, &mut waiting, out, wr).await?;
            let reply = match step {
                Step::Reply(r) => r,
                Step::Quit => {
                    self.encode(&Out::ok(), out);
                    return Ok(true);
                }
                Step::Keys(filter, listing) => self.list_keys(filter, listing).await,
                Step::Config(patterns) => self.config_get(&patterns),
                Step::ClientList => Out::Bulk(Bytes::from(self.clients.render_list())),
                Step::Flush => self.flush_all().await,
                Step::Subscribe(names, pattern) => {
                    for name in names {
                        let confirm = self.subscribe(name, pattern);
                        self.encode(&confirm, out);
                    }
                    continue;
                }
                Step::Unsubscribe(names, pattern) => {
                    for confirm in self.unsubscribe(names, pattern) {
                        self.encode(&confirm, out);
                    }
                    continue;
                }
                Step::Publish(channel, message) => self.publish(channel, message).await,
                Step::Info(sections) => match self.service.node.stats().await {
                    Ok(s) => Out::Bulk(Bytes::from(info::render(
                        &sections,
                        &s,
                        &self.clients,
                        self.service.cluster.as_ref(),
                    ))),
                    Err(e) => Out::err(format!("ERR {e}")),
                },
                Step::Data(..) => unreachable!("handled above"),
            };
            self.encode(&reply, out);
        }
        self.flush(&mut ops, &mut waiting, out, wr).await?;
        if let Some(cmd) = last {
            self.clients.touch(
                self.session.id,
                &cmd,
                self.session.name.as_ref(),
                self.session.proto,
            );
        }
        Ok(false)
    }

    /// Lists the cluster's keys for `KEYS`, `SCAN` or `DBSIZE`. A `SCAN` lists them when it
    /// starts (cursor 0) and pages through that list: every key present for the whole scan
    /// is returned once, as Redis promises.
    async fn list_keys(&mut self, filter: KeyFilter, listing: Listing) -> Out {
        if let Listing::Scan { cursor, .. } = listing
            && cursor != 0
            && let Some((scanning, keys)) = &self.session.scan
            && *scanning == filter
        {
            return commands::listed(&listing, keys);
        }
        match self.service.cluster_keys(&filter).await {
            Ok(mut keys) => {
                // A user lists only what it may read.
                keys.retain(|k| self.session.access.lists(k));
                let out = commands::listed(&listing, &keys);
                if matches!(listing, Listing::Scan { .. }) {
                    self.session.scan = Some((filter, keys));
                }
                out
            }
            Err(e) => Out::err(format!("ERR {e}")),
        }
    }

    fn subscribed_to(&self) -> i64 {
        (self.channels.len() + self.patterns.len()) as i64
    }

    /// `SUBSCRIBE`/`PSUBSCRIBE` of one name: the confirmation.
    fn subscribe(&mut self, name: Bytes, pattern: bool) -> Out {
        if self.inbox.is_none() {
            self.inbox = Some(self.hub.inbox(self.session.id));
        }
        let set = if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        };
        if set.insert(name.clone()) {
            self.hub.subscribe(self.session.id, name.clone(), pattern);
        }
        self.session.subscribed = true;
        let kind = if pattern { "psubscribe" } else { "subscribe" };
        Out::Push(vec![
            Out::Bulk(Bytes::from_static(kind.as_bytes())),
            Out::Bulk(name),
            Out::Int(self.subscribed_to()),
        ])
    }

    /// `UNSUBSCRIBE`/`PUNSUBSCRIBE` (no names: every one): a confirmation per name.
    fn unsubscribe(&mut self, names: Vec<Bytes>, pattern: bool) -> Vec<Out> {
        let kind = Bytes::from_static(if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        });
        let names: Vec<Bytes> = if names.is_empty() {
            let set = if pattern {
                &self.patterns
            } else {
                &self.channels
            };
            set.iter().cloned().collect()
        } else {
            names
        };
        if names.is_empty() {
            return vec![Out::Push(vec![
                Out::Bulk(kind),
                Out::Null,
                Out::Int(self.subscribed_to()),
            ])];
        }
        let mut confirms = Vec::new();
        for name in names {
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if set.remove(&name) {
                self.hub.unsubscribe(self.session.id, &name, pattern);
            }
            confirms.push(Out::Push(vec![
                Out::Bulk(kind.clone()),
                Out::Bulk(name),
                Out::Int(self.subscribed_to()),
            ]));
        }
        self.session.subscribed = self.subscribed_to() > 0;
        confirms
    }

    /// `PUBLISH`: to this node's subscribers and, at once, every other node's; how many
    /// took it (a node that does not answer counts none).
    async fn publish(&self, channel: Bytes, message: Bytes) -> Out {
        let mut delivered = self.hub.publish(&channel, &message);
        if let Some(cluster) = &self.service.cluster {
            let view = cluster.view();
            let body = pubsub::encode(&channel, &message);
            let asks = view.nodes.values().filter(|a| **a != view.me).map(|addr| {
                let (peers, addr, body) = (cluster.peers().clone(), addr.clone(), body.clone());
                async move {
                    let request = RequestBody::Service {
                        name: pubsub::SERVICE.to_string(),
                        body,
                    };
                    match peers.request(&addr, request).await {
                        Ok(ResponseBody::Service(Ok(answer))) => pubsub::delivered(&answer),
                        _ => 0,
                    }
                }
            });
            delivered += crate::tasks::join_all(asks).await.into_iter().sum::<u64>();
        }
        Out::Int(i64::try_from(delivered).unwrap_or(i64::MAX))
    }

    /// `FLUSHALL`: deletes every key the cluster lists now, as `DEL` would, a batch at a
    /// time. Not atomic: a write racing it may survive, as it would a `DEL`.
    async fn flush_all(&self) -> Out {
        let keys = match self.service.cluster_keys(&KeyFilter::default()).await {
            Ok(keys) => keys,
            Err(e) => return Out::err(format!("ERR {e}")),
        };
        for chunk in keys.chunks(MAX_BATCH) {
            let ops = chunk
                .iter()
                .map(|key| Op::Delete { key: key.clone() })
                .collect();
            for result in execute(&self.service, ops, self.config.ack).await {
                if let Err(e) = result {
                    return Out::err(format!("ERR {e}"));
                }
            }
        }
        Out::ok()
    }

    /// `CONFIG GET`: calm's settings under the names Redis gives the closest ones.
    fn config_get(&self, patterns: &[Bytes]) -> Out {
        let node = self.service.node.config();
        let storage = &node.storage;
        let durable = storage.durability != crate::storage::Durability::Memory;
        let settings: Vec<(&str, String)> = vec![
            ("bind", self.local.ip().to_string()),
            ("port", self.local.port().to_string()),
            ("databases", "1".into()),
            ("maxmemory", storage.memory_budget.unwrap_or(0).to_string()),
            // Over its budget a node moves values to its disk; it never evicts.
            ("maxmemory-policy", "noeviction".into()),
            ("appendonly", if durable { "yes" } else { "no" }.into()),
            (
                "appendfsync",
                match storage.durability {
                    crate::storage::Durability::Sync => "always",
                    crate::storage::Durability::Async => "everysec",
                    crate::storage::Durability::Memory => "no",
                }
                .into(),
            ),
            ("save", String::new()),
            (
                "dir",
                node.data_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            ("io-threads", node.threads.to_string()),
            (
                "proto-max-bulk-len",
                node.worker.max_value_bytes.to_string(),
            ),
            (
                "requirepass",
                self.config.password.clone().unwrap_or_default(),
            ),
            ("cluster-enabled", "no".into()),
            ("timeout", "0".into()),
        ];
        let chosen = settings
            .into_iter()
            .filter(|(name, _)| {
                patterns
                    .iter()
                    .any(|p| crate::op::glob_match(p, name.as_bytes()))
            })
            .map(|(name, value)| (Out::Bulk(Bytes::from(name)), Out::Bulk(Bytes::from(value))))
            .collect();
        Out::Map(chosen)
    }

    /// Runs the batched data commands and encodes their replies.
    async fn flush(
        &self,
        ops: &mut Vec<Op>,
        waiting: &mut Vec<(usize, Finish)>,
        out: &mut BytesMut,
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        if waiting.is_empty() {
            return Ok(());
        }
        let results = execute(&self.service, std::mem::take(ops), self.config.ack).await;
        let mut at = 0;
        for (n, finish) in waiting.drain(..) {
            let reply = commands::finish(finish, &results[at..at + n], self.session.proto);
            at += n;
            self.encode(&reply, out);
            if out.len() > OUT_LIMIT {
                wr.write_all(out).await?;
                out.clear();
            }
        }
        Ok(())
    }

    fn encode(&self, reply: &Out, out: &mut BytesMut) {
        encode_reply(reply, self.session.proto, out);
    }
}

/// Appends `reply` to `out`, encoded for protocol version `proto` (2 or 3).
pub(crate) fn encode_reply(reply: &Out, proto: u8, out: &mut BytesMut) {
    let encoded = if proto == 3 {
        redis_protocol::resp3::encode::complete::extend_encode(out, &to_resp3(reply), false)
            .map(|_| ())
    } else if matches!(reply, Out::NullArray) {
        // RESP2's null array, which the codec does not write.
        out.extend_from_slice(b"*-1\r\n");
        Ok(())
    } else {
        redis_protocol::resp2::encode::extend_encode(out, &to_resp2(reply), false).map(|_| ())
    };
    if let Err(e) = encoded {
        tracing::error!(error = %e, "could not encode a RESP reply");
    }
}

/// Forgets a connection's subscriptions when it ends.
struct Leaves(Arc<pubsub::Hub>, u64);

impl Drop for Leaves {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// The next message for a connection that subscribed; never, for one that did not.
async fn next_message(inbox: &mut Option<pubsub::Inbox>) -> Option<pubsub::Message> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// A message as Redis pushes it: `message channel payload`, or `pmessage pattern channel
/// payload`.
fn message_out(m: pubsub::Message) -> Out {
    match m.pattern {
        None => Out::Push(vec![
            Out::Bulk(Bytes::from_static(b"message")),
            Out::Bulk(m.channel),
            Out::Bulk(m.payload),
        ]),
        Some(pattern) => Out::Push(vec![
            Out::Bulk(Bytes::from_static(b"pmessage")),
            Out::Bulk(pattern),
            Out::Bulk(m.channel),
            Out::Bulk(m.payload),
        ]),
    }
}

/// Takes the next whole request out of `buf`: its arguments, `None` when more bytes are
/// needed, or why the bytes are not a request (the connection is then answered and closed).
/// Blank inline lines are skipped.
pub(crate) fn next_request(
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<Vec<Bytes>>, String> {
    loop {
        match framing::frame(buf, limits) {
            Framed::Array(len) => return decode(buf.split_to(len).freeze()).map(Some),
            Framed::Inline(len) => {
                let args = inline_args(&buf.split_to(len).freeze());
                if !args.is_empty() {
                    return Ok(Some(args));
                }
            }
            Framed::Incomplete => return Ok(None),
            Framed::Invalid(e) => return Err(e),
        }
    }
}

/// The arguments of an array request the framing step has checked.
fn decode(frame: Bytes) -> Result<Vec<Bytes>, String> {
    match redis_protocol::resp2::decode::decode_bytes(&frame) {
        Ok(Some((Frame2::Array(items), _))) => items
            .into_iter()
            .map(|f| match f {
                // Slices of the read buffer, not copies: a worker copies what it keeps
                // (see `Write::owned`), so no stored value keeps the buffer alive.
                Frame2::BulkString(b) => Ok(b),
                other => Err(format!("expected a bulk string, got {:?}", other.kind())),
            })
            .collect(),
        Ok(Some((other, _))) => Err(format!("expected an array, got {:?}", other.kind())),
        Ok(None) => Err("incomplete request".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The words of an inline request (`PING`, `SET k v` typed into telnet).
fn inline_args(line: &Bytes) -> Vec<Bytes> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| line.slice_ref(w))
        .collect()
}

fn to_resp2(o: &Out) -> Frame2 {
    match o {
        Out::Simple(s) => Frame2::SimpleString(s.clone()),
        Out::Error(e) => Frame2::Error(e.clone().into()),
        Out::Int(n) => Frame2::Integer(*n),
        Out::Bulk(b) => Frame2::BulkString(b.clone()),
        Out::Null | Out::NullArray => Frame2::Null,
        Out::Array(items) | Out::Set(items) | Out::Push(items) => {
            Frame2::Array(items.iter().map(to_resp2).collect())
        }
        Out::Map(pairs) => Frame2::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [to_resp2(k), to_resp2(v)])
                .collect(),
        ),
    }
}

fn to_resp3(o: &Out) -> Frame3 {
    match o {
        Out::Simple(s) => Frame3::SimpleString {
            data: s.clone(),
            attributes: None,
        },
        Out::Error(e) => Frame3::SimpleError {
            data: e.clone().into(),
            attributes: None,
        },
        Out::Int(n) => Frame3::Number {
            data: *n,
            attributes: None,
        },
        Out::Bulk(b) => Frame3::BlobString {
            data: b.clone(),
            attributes: None,
        },
        Out::Null | Out::NullArray => Frame3::Null,
        Out::Array(items) => Frame3::Array {
            data: items.iter().map(to_resp3).collect(),
            attributes: None,
        },
        Out::Set(items) => Frame3::Set {
            data: items.iter().map(to_resp3).collect(),
            attributes: None,
        },
        Out::Push(items) => Frame3::Push {
            data: items.iter().map(to_resp3).collect(),
            attributes: None,
        },
        Out::Map(pairs) => Frame3::Map {
            data: pairs
                .iter()
                .map(|(k, v)| (to_resp3(k), to_resp3(v)))
                .collect(),
            attributes: None,
        },
    }
}
