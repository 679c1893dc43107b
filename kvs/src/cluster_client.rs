//! A client that sends each key straight to its owners.
//!
//! It keeps the cluster's routing table (members, replication factor, and the keys whose
//! replication was raised, refreshed every second), computes every key's owners exactly as
//! the nodes do, and sends each operation to an alive owner: no forwarding hop. Reads of a
//! key with raised replication (a hot key) go round its replicas, except the client's
//! reads of a key it wrote in the last second, which go where the write went. When its table is stale the node answers
//! [`OpError::NotOwner`]; the client refreshes the table and retries (a redirect). When a
//! node does not answer, the client refreshes and tries the next owner — except for a
//! write that may already have been applied, which answers [`OpError::Timeout`] rather
//! than risk running twice.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::cluster::{Status, node_id};
use crate::coordinator::{Coordinator, Item, Outcome, Target};
use crate::error::KvsError;
use crate::metrics::StatsSnapshot;
use crate::op::{Ack, Op, OpError, OpResult};
use crate::protocol::{RequestBody, ResponseBody, Route, RoutingTable};
use crate::ring::HashRing;
use crate::store::Store;
use crate::subscribe::{Fetched, Pushed};
use crate::tasks::join_all;
use crate::tls;
use bytes::Bytes;

/// How long one node may take to answer before the client treats it as down.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per operation (each after a refresh of the table).
const ATTEMPTS: usize = 4;
/// A table older than this is fetched again in the background, so replication the
/// autoscaling policy raised (or lowered) reaches the client without a redirect.
const TABLE_MAX_AGE: Duration = Duration::from_secs(1);
/// A key this client wrote this recently is read from the replica it wrote to, not any
/// replica (read-your-writes while the write spreads to the others).
const OWN_WRITE_WINDOW: Duration = Duration::from_secs(1);
/// Keys remembered as recently written before old entries are dropped.
const OWN_WRITES_KEPT: usize = 4096;

struct Table {
    fetched: Instant,
    ring: HashRing,
    replication: usize,
    overrides: HashMap<bytes::Bytes, usize>,
    nodes: BTreeMap<u32, SocketAddr>,
    alive: Vec<SocketAddr>,
}

impl Table {
    fn from(t: RoutingTable) -> Table {
        let owners: BTreeMap<u32, SocketAddr> = t
            .members
            .iter()
            .filter(|m| m.status.owns_keys())
            .filter_map(|m| m.addr.parse().ok().map(|a| (node_id(&m.addr), a)))
            .collect();
        Table {
            fetched: Instant::now(),
            ring: HashRing::new(owners.keys().copied(), 64),
            replication: t.replication,
            overrides: t
                .overrides
                .into_iter()
                .filter_map(|(k, f)| f.global.map(|g| (k, usize::from(g))))
                .collect(),
            alive: t
                .members
                .iter()
                .filter(|m| m.status == Status::Alive)
                .filter_map(|m| m.addr.parse().ok())
                .collect(),
            nodes: owners,
        }
    }

    /// The owners of `key`, alive ones first.
    fn owners(&self, key: &[u8]) -> Vec<SocketAddr> {
        let mut owners: Vec<SocketAddr> = self
            .ring
            .owners(
                key,
                self.overrides.get(key).copied().unwrap_or(self.replication),
            )
            .into_iter()
            .filter_map(|id| self.nodes.get(&id).copied())
            .collect();
        owners.sort_by_key(|a| !self.alive.contains(a));
        owners
    }

    /// Whether `key` has more replicas than the default (a hot key the policy, or
    /// `calm kv replicate`, spread out).
    fn raised(&self, key: &[u8]) -> bool {
        self.overrides
            .get(key)
            .is_some_and(|&f| f > self.replication)
    }
}

struct Inner {
    config: quinn::ClientConfig,
    known: RwLock<Vec<SocketAddr>>,
    conns: tokio::sync::Mutex<HashMap<SocketAddr, Client>>,
    table: RwLock<Option<Arc<Table>>>,
    redirects: AtomicU64,
    push: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Pushed>>>,
    /// Whether a background refresh of the table is under way.
    refreshing: AtomicBool,
    /// Turns reads of raised keys around their replicas.
    spread: AtomicU64,
    /// Raised keys this client wrote lately, and when.
    own_writes: std::sync::Mutex<HashMap<Bytes, Instant>>,
}

/// A client of a whole cluster that routes each key to its owners. Cheap to clone.
///
/// ```no_run
/// use calm_kvs::{ClusterClient, Store};
/// # async fn demo() -> Result<(), calm_kvs::KvsError> {
/// let nodes = vec!["127.0.0.1:7400".parse().unwrap(), "127.0.0.1:7401".parse().unwrap()];
/// let me = calm_kvs::tls::Credentials::new(
///     "calm-data/ca/ca.pem",
///     "calm-data/clients/admin.pem",
///     "calm-data/clients/admin.key",
/// );
/// let cluster = ClusterClient::connect(nodes, &me).await?;
/// cluster.put("k", "v").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

impl ClusterClient {
    /// Connects to the cluster a cluster file describes (`calm-data/cluster.toml` after
    /// `calm up`; see [`cluster_file`](crate::cluster_file)).
    pub async fn connect_file(path: impl AsRef<Path>) -> Result<ClusterClient, KvsError> {
        let file = crate::cluster_file::ClusterFile::read(path.as_ref())?;
        ClusterClient::connect(file.nodes.clone(), &file.credentials()?).await
    }

    /// Connects through any of `nodes` with the client certificate in `creds`, trusting
    /// nodes its CA issued.
    pub async fn connect(
        nodes: Vec<SocketAddr>,
        creds: &tls::Credentials,
    ) -> Result<ClusterClient, KvsError> {
        let client = ClusterClient {
            inner: Arc::new(Inner {
                config: tls::client_config(creds)?,
                known: RwLock::new(nodes),
                conns: tokio::sync::Mutex::new(HashMap::new()),
                table: RwLock::new(None),
                redirects: AtomicU64::new(0),
                push: std::sync::Mutex::new(None),
                refreshing: AtomicBool::new(false),
                spread: AtomicU64::new(0),
                own_writes: std::sync::Mutex::new(HashMap::new()),
            }),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// How many operations were sent again after a stale table or a failed node.
    pub fn redirects(&self) -> u64 {
        self.inner.redirects.load(Ordering::Relaxed)
    }

    async fn conn(&self, addr: SocketAddr) -> Result<Client, KvsError> {
        {
            let mut conns = self.inner.conns.lock().await;
            match conns.get(&addr) {
                Some(c) if !c.is_closed() => return Ok(c.clone()),
                // A connection that ended sends nothing: reconnect.
                Some(_) => {
                    conns.remove(&addr);
                }
                None => {}
            }
        }
        let c = Client::connect_within(addr, self.inner.config.clone(), NODE_TIMEOUT).await?;
        if let Some(sink) = self.inner.push.lock().ok().and_then(|p| p.clone()) {
            c.set_push_sink(sink);
        }
        self.inner.conns.lock().await.insert(addr, c.clone());
        Ok(c)
    }

    /// The connection to one node (made if needed), for requests about that node itself.
    pub async fn node(&self, addr: SocketAddr) -> Result<Client, KvsError> {
        self.conn(addr).await
    }

    /// The addresses of the nodes alive as the routing table has them.
    pub fn alive_nodes(&self) -> Vec<SocketAddr> {
        self.table().map(|t| t.alive.clone()).unwrap_or_default()
    }

    /// Sends changes pushed for this client's subscriptions, from every node, to `sink`.
    pub async fn set_push_sink(&self, sink: tokio::sync::mpsc::Sender<Pushed>) {
        if let Ok(mut p) = self.inner.push.lock() {
            *p = Some(sink.clone());
        }
        for c in self.inner.conns.lock().await.values() {
            c.set_push_sink(sink.clone());
        }
    }

    /// Ends subscriptions to `keys` at every owner of each (best effort: leases end them
    /// anyway).
    pub async fn unsubscribe(&self, keys: Vec<Bytes>) -> Result<(), KvsError> {
        let Some(table) = self.table() else {
            return Ok(());
        };
        let mut groups: BTreeMap<SocketAddr, Vec<Bytes>> = BTreeMap::new();
        for key in keys {
            for owner in table.owners(&key) {
                groups.entry(owner).or_default().push(key.clone());
            }
        }
        for (addr, keys) in groups {
            if let Ok(c) = self.conn(addr).await {
                let _ = tokio::time::timeout(NODE_TIMEOUT, c.unsubscribe(keys)).await;
            }
        }
        Ok(())
    }

    /// Subscribes to changes of `keys` at an owner of each (see [`Client::subscribe`]),
    /// following the cluster's routing; per key, its value or unchanged.
    pub async fn subscribe(
        &self,
        keys: Vec<(Bytes, Option<u64>)>,
        lease_ms: u32,
    ) -> Result<Vec<Result<Fetched, OpError>>, KvsError> {
        self.route(
            keys,
            |(key, _)| key,
            |_, _, _| {},
            move |c: Client, batch| async move {
                match tokio::time::timeout(NODE_TIMEOUT, c.subscribe(batch, lease_ms)).await {
                    Ok(Ok(r)) => Outcome::Answered(r),
                    _ => Outcome::MaybeSent,
                }
            },
        )
        .await
    }

    async fn drop_conn(&self, addr: SocketAddr) {
        self.inner.conns.lock().await.remove(&addr);
    }

    /// The owners of `key` as the routing table has them, alive ones first (the table is
    /// fetched first if this client has none yet).
    pub async fn owners(&self, key: &[u8]) -> Result<Vec<SocketAddr>, KvsError> {
        let known = self.inner.table.read().ok().and_then(|t| t.clone());
        let table = match known {
            Some(t) => t,
            None => {
                self.refresh().await?;
                self.inner
                    .table
                    .read()
                    .ok()
                    .and_then(|t| t.clone())
                    .ok_or_else(|| KvsError::UnexpectedReply("no routing table".into()))?
            }
        };
        Ok(table.owners(key))
    }

    /// Fetches the routing table from the first node that answers.
    pub async fn refresh(&self) -> Result<(), KvsError> {
        let mut candidates: Vec<SocketAddr> = self
            .inner
            .known
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        if let Some(t) = self.table() {
            for a in t.alive.iter().chain(t.nodes.values()) {
                if !candidates.contains(a) {
                    candidates.insert(0, *a);
                }
            }
        }
        let mut last = KvsError::Connect {
            addr: "the cluster".into(),
            reason: "no node address known".into(),
        };
        for addr in candidates {
            let answer = match self.conn(addr).await {
                Ok(c) => tokio::time::timeout(NODE_TIMEOUT, c.request(RequestBody::Routing)).await,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match answer {
                Ok(Ok(ResponseBody::Routing(t))) if !t.members.is_empty() => {
                    let table = Table::from(t);
                    if let Ok(mut known) = self.inner.known.write() {
                        for a in table.nodes.values() {
                            if !known.contains(a) {
                                known.push(*a);
                            }
                        }
                    }
                    if let Ok(mut slot) = self.inner.table.write() {
                        *slot = Some(Arc::new(table));
                    }
                    return Ok(());
                }
                Ok(Ok(other)) => {
                    last = KvsError::UnexpectedReply(format!(
                        "asked for the routing table, got {other:?}"
                    ))
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = KvsError::ConnectionLost(format!("{addr} did not answer")),
            }
            self.drop_conn(addr).await;
        }
        Err(last)
    }

    fn table(&self) -> Option<Arc<Table>> {
        self.inner.table.read().ok().and_then(|t| t.clone())
    }

    /// Fetches the table again in the background when it is older than
    /// [`TABLE_MAX_AGE`] (one fetch at a time).
    fn refresh_if_old(&self, table: &Table) {
        if table.fetched.elapsed() < TABLE_MAX_AGE
            || self.inner.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.refresh().await;
            this.inner.refreshing.store(false, Ordering::Release);
        });
    }

    /// Puts the owner `op` should try first in front. Reads of a key with raised
    /// replication go round its alive replicas (that is what the replicas are for), except
    /// a key this client wrote within [`OWN_WRITE_WINDOW`]: that read goes where the write
    /// went, so the client reads its own writes. Everything else goes to the first owner.
    fn order_owners(&self, table: &Table, op: &Op, owners: &mut [SocketAddr]) {
        let key = op.key();
        if !table.raised(key) {
            return;
        }
        let Ok(mut own) = self.inner.own_writes.lock() else {
            return;
        };
        match op {
            Op::Get { .. } | Op::Probe { .. } => {
                if own.get(key).is_some_and(|t| t.elapsed() < OWN_WRITE_WINDOW) {
                    return;
                }
                let alive = owners.iter().filter(|a| table.alive.contains(a)).count();
                if alive > 1 {
                    let turn = self.inner.spread.fetch_add(1, Ordering::Relaxed);
                    owners[..alive].rotate_left((turn % alive as u64) as usize);
                }
            }
            Op::Write { .. } | Op::Delete { .. } | Op::Expire { .. } => {
                if own.len() >= OWN_WRITES_KEPT {
                    own.retain(|_, t| t.elapsed() < OWN_WRITE_WINDOW);
                }
                own.insert(key.clone(), Instant::now());
            }
            Op::GetAll { .. } | Op::Raw { .. } => {}
        }
    }

    /// Runs a batch with an acknowledgement level; each operation goes to an owner of its
    /// key. Results in the order of `ops`.
    pub async fn execute_with_ack(
        &self,
        ops: Vec<Op>,
        ack: Ack,
    ) -> Result<Vec<OpResult>, KvsError> {
        self.route(
            ops,
            Op::key,
            |table, op, owners| self.order_owners(table, op, owners),
            move |c: Client, batch| async move {
                match c
                    .start_request(RequestBody::Batch {
                        ops: batch,
                        ack,
                        route: Route::Direct,
                    })
                    .await
                {
                    Ok(rx) => match tokio::time::timeout(NODE_TIMEOUT, rx).await {
                        Ok(Ok(Ok(ResponseBody::Results(r)))) => Outcome::Answered(r),
                        _ => Outcome::MaybeSent,
                    },
                    Err(_) => Outcome::MaybeSent,
                }
            },
        )
        .await
    }

    /// Sends every item to an owner of its key, in one batch per node, and gathers the
    /// answers in the order of `items`, following the request [`Coordinator`]'s rules: the
    /// first owner after `order` that has not failed the item; an item a node answers
    /// `NotOwner` for goes again after a refresh of the table (a redirect); one whose node
    /// could not be reached goes to its next owner, as does one whose node may have received
    /// it without answering if it may run twice, and otherwise it answers
    /// [`OpError::Timeout`]. At most [`ATTEMPTS`] rounds.
    async fn route<I, R, S, Fut>(
        &self,
        items: Vec<I>,
        key: impl Fn(&I) -> &Bytes,
        order: impl Fn(&Table, &I, &mut [SocketAddr]),
        send: S,
    ) -> Result<Vec<Result<R, OpError>>, KvsError>
    where
        I: Item + Send + 'static,
        R: Clone + Send + 'static,
        S: Fn(Client, Vec<I>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Outcome<R>> + Send,
    {
        let mut coordinator: Coordinator<SocketAddr, I, R> = Coordinator::new(items, ATTEMPTS);
        let mut first = true;
        loop {
            if !first {
                self.inner
                    .redirects
                    .fetch_add(coordinator.pending().count() as u64, Ordering::Relaxed);
                let _ = self.refresh().await;
            }
            let table = self.table().ok_or_else(|| KvsError::Connect {
                addr: "the cluster".into(),
                reason: "no routing table".into(),
            })?;
            if first {
                self.refresh_if_old(&table);
                first = false;
            }
            let sends = coordinator.plan(|_, item| {
                let mut owners = table.owners(key(item));
                order(&table, item, &mut owners);
                owners.into_iter().map(Target::Node).collect()
            });
            if sends.is_empty() {
                break;
            }
            let sends = sends.into_iter().map(|group| {
                let this = self.clone();
                let send = send.clone();
                async move {
                    let Target::Node(addr) = group.target else {
                        // Never planned: the candidates are nodes.
                        return (group.id, Outcome::NotSent);
                    };
                    let outcome = match this.conn(addr).await {
                        Ok(c) => send(c, group.ops).await,
                        Err(_) => Outcome::NotSent,
                    };
                    if !matches!(outcome, Outcome::Answered(_)) {
                        this.drop_conn(addr).await;
                    }
                    (group.id, outcome)
                }
            });
            for (id, outcome) in join_all(sends).await {
                coordinator.handle(id, outcome);
            }
            if !coordinator.needs_round() {
                break;
            }
        }
        Ok(coordinator.into_results())
    }
}

impl Store for ClusterClient {
    fn execute(
        &self,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<Vec<OpResult>, KvsError>> + Send {
        self.execute_with_ack(ops, Ack::One)
    }

    async fn stats(&self) -> Result<StatsSnapshot, KvsError> {
        let table = self.table();
        let first = table
            .as_ref()
            .and_then(|t| t.alive.first().copied())
            .or_else(|| {
                self.inner
                    .known
                    .read()
                    .ok()
                    .and_then(|k| k.first().copied())
            })
            .ok_or(KvsError::ShutDown)?;
        self.conn(first).await?.stats().await
    }
}
