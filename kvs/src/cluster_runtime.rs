//! The cluster agent of a real node: it runs on its own thread (it reads the workers'
//! data with blocking calls), and talks to other nodes through QUIC connections kept by
//! [`Peers`].

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::client::Client;
use crate::cluster::{
    ClusterAgent, ClusterConfig, ClusterView, LocalStore, NodeAddr, Outgoing, PeerEnvelope,
    PeerReply, Status, node_id,
};
use crate::error::KvsError;
use crate::node::{Changes, WorkerPool};
use crate::op::OpError;
use crate::protocol::{RequestBody, ResponseBody};

/// How long a message to another node may take before it counts as lost.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest the agent's thread sleeps with nothing due.
const MAX_IDLE: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

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

enum Input {
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
        mut pool: WorkerPool,
        peers: Arc<Peers>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Cluster, KvsError> {
        let (inbox, rx) = mpsc::channel::<Input>();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
        let mut agent = ClusterAgent::new(
            me.clone(),
            seeds,
            config,
            now_ms(),
            now_ms() ^ u64::from(node_id(&me)),
        );
        let view = Arc::new(RwLock::new(Arc::new(agent.view())));

        let published = view.clone();
        let restart_peers = peers.clone();
        let me_for_policy = me.clone();
        let changes: Arc<Mutex<Changes>> = Arc::default();
        let pending = changes.clone();
        let take_pending =
            move || std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        std::thread::Builder::new()
            .name("calm-cluster".into())
            .spawn(move || {
                let mut autopilot = Autopilot::new(&pool, me_for_policy);
                let mut last_members = agent.members();
                let mut last_table = agent.replication_table().clone();
                let mut last_settling = agent.settling_until_ms();
                let mut replica_waiters: HashMap<u64, oneshot::Sender<Result<(), OpError>>> =
                    HashMap::new();
                loop {
                    // Sleep until the agent or the autopilot has something due, or an input
                    // arrives.
                    let due = [
                        agent.next_deadline_ms(),
                        autopilot.as_ref().map(|a| a.next_ms),
                    ]
                    .into_iter()
                    .flatten()
                    .min();
                    let wait = due.map_or(MAX_IDLE, |d| {
                        Duration::from_millis(d.saturating_sub(now_ms())).min(MAX_IDLE)
                    });
                    match rx.recv_timeout(wait) {
                        Ok(Input::Request { envelope, reply }) => {
                            let r = agent.handle_request(now_ms(), envelope, &mut pool);
                            let _ = reply.send(r);
                        }
                        Ok(Input::Reply { id, from, reply }) => {
                            agent.handle_reply(now_ms(), id, &from, reply, &mut pool)
                        }
                        Ok(Input::SetReplication(key, factor)) => {
                            agent.set_replication(now_ms(), key, factor)
                        }
                        Ok(Input::Failed { id }) => agent.handle_failure(id),
                        Ok(Input::Replicate {
                            changes,
                            need,
                            reply,
                        }) => {
                            let ticket = agent.replicate(changes, need);
                            replica_waiters.insert(ticket, reply);
                            while let Some(out) = agent.poll_outgoing() {
                                let _ = out_tx.send(out);
                            }
                        }
                        Ok(Input::Leave(done)) => {
                            // Hand every key to the owners it will have without this node
                            // and wait for them to take it; announce the leave (from then on
                            // this node forwards what it is sent); hand over again what was
                            // written meanwhile.
                            agent.on_local_changes(take_pending());
                            let deadline = std::time::Instant::now() + Duration::from_secs(30);
                            let first = hand_over_all(&mut agent, &mut pool, &rx, &out_tx, deadline);
                            agent.leave();
                            if let Ok(mut v) = published.write() {
                                *v = Arc::new(agent.view());
                            }
                            while let Some(out) = agent.poll_outgoing() {
                                let _ = out_tx.send(out);
                            }
                            agent.on_local_changes(take_pending());
                            let deadline = std::time::Instant::now() + Duration::from_secs(5);
                            hand_over_all(&mut agent, &mut pool, &rx, &out_tx, deadline);
                            if agent.handing_over() > 0 {
                                tracing::warn!(unanswered = agent.handing_over(), "left before every key was handed over; the keys' other replicas and anti-entropy repair the rest");
                            } else if first > 0 {
                                tracing::info!(keys = first, "handed every key to its next owners before leaving");
                            }
                            let _ = done.send(());
                            continue;
                        }
                        // The local writes waiting are taken below.
                        Ok(Input::Wake) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    while let Some((ticket, outcome)) = agent.poll_replicated() {
                        if let Some(waiter) = replica_waiters.remove(&ticket) {
                            let _ = waiter.send(outcome.map_err(|(reached, wanted)| {
                                OpError::ReplicationIncomplete { reached, wanted }
                            }));
                        }
                    }
                    let local = take_pending();
                    if !local.is_empty() {
                        agent.on_local_changes(local);
                    }
                    if let Some(a) = autopilot.as_mut() {
                        a.tick(now_ms(), &mut pool, &mut agent);
                    }
                    agent.handle_tick(now_ms(), &mut pool);
                    while let Some(out) = agent.poll_outgoing() {
                        let _ = out_tx.send(out);
                    }
                    let members = agent.members();
                    let table_changed = **agent.replication_table() != *last_table;
                    if table_changed {
                        last_table = agent.replication_table().clone();
                        // The workers need the per-key local factors.
                        pool.set_table(last_table.clone());
                    }
                    let settling_changed = agent.settling_until_ms() != last_settling;
                    let members_changed = members != last_members;
                    if table_changed || settling_changed || members_changed {
                        last_settling = agent.settling_until_ms();
                        if let Ok(mut v) = published.write() {
                            *v = Arc::new(agent.view());
                        }
                    }
                    if members_changed {
                        for m in &members {
                            let restarted = last_members.iter().any(|o| {
                                o.addr == m.addr && o.incarnation < m.incarnation
                            }) && m.status == Status::Alive;
                            if restarted && m.addr != agent.me() {
                                restart_peers.restarted_blocking(&m.addr);
                            }
                            if last_members.iter().all(|o| o.addr != m.addr || o.status != m.status) {
                                tracing::info!(member = %m.addr, status = m.status.name(), "membership changed");
                            }
                        }
                        last_members = members;
                    }
                }
            })
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

/// Sends everything this node holds to the owners its keys will have without it, bucket
/// by bucket, answering peers meanwhile, until every hand-over is answered or `deadline`.
/// Returns how many keys were sent.
fn hand_over_all(
    agent: &mut ClusterAgent,
    pool: &mut WorkerPool,
    rx: &mpsc::Receiver<Input>,
    out_tx: &tokio::sync::mpsc::UnboundedSender<Outgoing>,
    deadline: std::time::Instant,
) -> usize {
    let everything = agent.everything();
    let buckets: Vec<u16> = LocalStore::digest(pool, &everything).into_keys().collect();
    let mut handed = 0;
    for chunk in buckets.chunks(256) {
        let set = chunk.iter().copied().collect();
        let entries = LocalStore::entries_in(pool, &everything, &set, usize::MAX);
        handed += agent.hand_over(now_ms(), entries);
        while let Some(out) = agent.poll_outgoing() {
            let _ = out_tx.send(out);
        }
        while agent.handing_over() > 0 && std::time::Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Input::Request { envelope, reply }) => {
                    let r = agent.handle_request(now_ms(), envelope, pool);
                    let _ = reply.send(r);
                }
                Ok(Input::Reply { id, from, reply }) => {
                    agent.handle_reply(now_ms(), id, &from, reply, pool)
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            agent.resend_hand_over(now_ms(), 2_000);
            while let Some(out) = agent.poll_outgoing() {
                let _ = out_tx.send(out);
            }
        }
    }
    handed
}

/// The autoscaling policy on a node's cluster thread: every period it reads the node's own
/// figures, asks the policy, and applies what it can — replication changes go through the
/// replicated table like `calm kv replicate`; node decisions are recorded (no provisioner is
/// attached yet). Every decision is logged and kept for `calm status`.
struct Autopilot {
    policy: crate::policy::Policy,
    rates: crate::policy::HotRates,
    me: NodeAddr,
    period_ms: u64,
    next_ms: u64,
    last_busy_us: u64,
    last_ms: u64,
    /// Requests served before the current period.
    last_ops: u64,
    /// The process's processor time, when the node is alone in its process.
    cpu: Option<ProcessCpu>,
}

/// The processor time of this process (all its threads), from `/proc/self/stat`.
struct ProcessCpu {
    last_ticks: u64,
    last_at: std::time::Instant,
}

/// Linux's unit for process times in `/proc` (USER_HZ, 100 on every architecture Linux
/// runs on).
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessCpu {
    fn new() -> Option<ProcessCpu> {
        Some(ProcessCpu {
            last_ticks: process_ticks()?,
            last_at: std::time::Instant::now(),
        })
    }

    /// Processor time since the last call over the time passed and the cores this process
    /// may use (0 to 1; 0 if `/proc` cannot be read).
    fn share_since_last(&mut self) -> f64 {
        let Some(ticks) = process_ticks() else {
            return 0.0;
        };
        let seconds = self.last_at.elapsed().as_secs_f64();
        let used = ticks.saturating_sub(self.last_ticks) as f64 / TICKS_PER_SECOND;
        self.last_ticks = ticks;
        self.last_at = std::time::Instant::now();
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        if seconds <= 0.0 {
            return 0.0;
        }
        (used / seconds / cores).clamp(0.0, 1.0)
    }
}

fn process_ticks() -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User plus system time, in ticks, from a `/proc/PID/stat` line: the fields after the
/// command name (which may hold spaces and parentheses) are state, then 10 others, then
/// utime and stime.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Autopilot {
    fn new(pool: &WorkerPool, me: NodeAddr) -> Option<Autopilot> {
        (pool.autoscale_period_ms > 0).then(|| Autopilot {
            // Nodes decide hot keys; adding and removing nodes is the controller's part
            // (`calm up --autoscale`, `calm autoscaler`), which reads the same picture.
            policy: crate::policy::Policy::new(crate::policy::PolicyConfig {
                decide_nodes: false,
                ..pool.policy.clone()
            }),
            rates: crate::policy::HotRates::default(),
            me,
            period_ms: pool.autoscale_period_ms,
            next_ms: now_ms() + pool.autoscale_period_ms,
            last_busy_us: 0,
            last_ms: now_ms(),
            last_ops: 0,
            cpu: if pool.own_process {
                ProcessCpu::new()
            } else {
                None
            },
        })
    }

    fn tick(&mut self, now: u64, pool: &mut WorkerPool, agent: &mut ClusterAgent) {
        if now < self.next_ms {
            return;
        }
        self.next_ms = now + self.period_ms;
        let workers = pool.worker_stats();
        let busy: u64 = workers.iter().map(|w| w.busy_us).sum();
        let wall_us = now.saturating_sub(self.last_ms).max(1) * 1000 * workers.len().max(1) as u64;
        let occupancy = busy.saturating_sub(self.last_busy_us) as f64 / wall_us as f64;
        self.last_busy_us = busy;
        self.last_ms = now;
        let metrics = pool.metrics.snapshot(Vec::new());
        let ops: u64 = metrics.ops.iter().map(|o| o.count).sum();
        let sample = crate::policy::NodeSample {
            node: self.me.clone(),
            occupancy,
            p99_us: metrics.ops.iter().map(|o| o.p99_us).max().unwrap_or(0),
            ops: ops.saturating_sub(std::mem::replace(&mut self.last_ops, ops)),
            cpu: self.cpu.as_mut().map_or(0.0, |c| c.share_since_last()),
            hot_keys: self
                .rates
                .rates(workers.into_iter().flat_map(|w| w.hot_keys)),
        };
        agent.record_load(now, sample);
        let alive: Vec<String> = agent
            .members()
            .iter()
            .filter(|m| m.status == Status::Alive)
            .map(|m| m.addr.clone())
            .collect();
        let samples = agent.load().fresh(now, self.period_ms * 3, &alive);
        pool.metrics.set_cluster_load(agent.load().clone());
        for decision in self.policy.tick(now, &samples) {
            use crate::policy::Decision;
            let text = match &decision {
                Decision::Replicate {
                    key,
                    factor,
                    reason,
                } => {
                    // The value goes to the new owners before clients are sent there.
                    agent.widen_replication(
                        now,
                        key.clone(),
                        crate::cluster::Factors {
                            global: Some(*factor),
                            local: None,
                        },
                        pool,
                    );
                    format!(
                        "replicate {:?} on {factor} nodes: {reason}",
                        String::from_utf8_lossy(key)
                    )
                }
                Decision::ReplicateLocally {
                    key,
                    factor,
                    workers,
                    reason,
                } => {
                    agent.set_replication(
                        now,
                        key.clone(),
                        crate::cluster::Factors {
                            global: Some(*factor),
                            local: Some(*workers),
                        },
                    );
                    format!(
                        "replicate {:?} on {workers} workers in each of its {factor} nodes: {reason}",
                        String::from_utf8_lossy(key)
                    )
                }
                Decision::Restore { key, reason } => {
                    agent.set_replication(now, key.clone(), crate::cluster::Factors::default());
                    format!(
                        "back to default replication for {:?}: {reason}",
                        String::from_utf8_lossy(key)
                    )
                }
                Decision::AddNode { reason } => {
                    format!("a node should be added (no provisioner attached): {reason}")
                }
                Decision::RemoveNode { node, reason } => {
                    format!("{node} could be given back (no provisioner attached): {reason}")
                }
            };
            tracing::info!(decision = %text, "autoscaling policy");
            pool.metrics.record_decision(text);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn process_times_are_read_past_any_command_name() {
        let line = "4242 (calm (node) 1) S 1 4242 4242 0 -1 4194560 1204 0 0 0 250 75 0 0 20 0 9 0 \
                    123 456 789";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("4242 (calm) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_uses_processor_time() {
        let Some(mut cpu) = ProcessCpu::new() else {
            panic!("/proc/self/stat is readable on Linux");
        };
        // Half a second of work on this thread: a measurable share of the cores.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(500) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let share = cpu.share_since_last();
        assert!(share > 0.05 && share <= 1.0, "{share}");
    }
}
