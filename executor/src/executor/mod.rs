//! A node's executors: threads that run functions next to the node's cache, the entry
//! point of DAG calls, and the service other nodes and clients reach them by.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_cache::{Cache, CacheConfig};
use calm_kvs::ClusterClient;
use calm_kvs::acl::{Access, Right};
use calm_kvs::protocol::Ack;
use calm_kvs::service::{Service, ServiceFuture};
use calm_kvs::tasks::join_all;
use calm_kvs::value::Write;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

mod calls;
mod index;
mod placement;
mod registry;

use calls::Join;
use registry::fn_key;

use crate::api::{
    self, Arg, CallRequest, CallResult, DAG_INDEX, DAG_PREFIX, DagSpec, ExecRequest, ExecResponse,
    ExecStats, FN_INDEX, FN_PREFIX, Listing, NodeIndex, Placement, Task, TaskOutcome,
};
use crate::dag::{Dag, check_name};
use crate::error::FnError;
use crate::host::{Host, SessionHost};
use crate::scheduler::{NodeLoad, SchedulerConfig, place};
use crate::session::{Session, value_bytes};
use crate::wasm::{Limits, WasmRuntime};

/// A function written in Rust and registered in-process: it gets the host (reads, writes,
/// logs) and its inputs, and returns its output or a message saying why it failed.
pub type NativeFn = Arc<dyn Fn(&mut dyn Host, &[Bytes]) -> Result<Bytes, String> + Send + Sync>;

/// How a node's executors behave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExecutorConfig {
    /// Executor threads (default 1).
    pub executors: usize,
    /// Limits of each WebAssembly call.
    pub limits: Limits,
    /// Placement knobs.
    pub scheduler: SchedulerConfig,
    /// The cache's size and leases.
    pub cache: CacheConfig,
    /// How often other nodes' load and cache contents are fetched, milliseconds.
    pub index_period_ms: u64,
    /// Seed of the scheduler's exploration (none: from the system).
    pub seed: Option<u64>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            executors: 1,
            limits: Limits::default(),
            scheduler: SchedulerConfig::default(),
            cache: CacheConfig::default(),
            index_period_ms: 200,
            seed: None,
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    failed: AtomicU64,
    functions_run: AtomicU64,
}

/// A node's executors. See the [crate docs](crate).
pub struct Executor {
    me: String,
    config: ExecutorConfig,
    cache: Cache,
    cluster: ClusterClient,
    runtime: WasmRuntime,
    natives: RwLock<HashMap<String, NativeFn>>,
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    handle: Handle,
    joins: Mutex<HashMap<(u64, String), Join>>,
    others: RwLock<Vec<NodeLoad>>,
    rng: Mutex<StdRng>,
    counters: Counters,
    recent: Mutex<VecDeque<Placement>>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Executor {
    /// Starts the executors of the node known as `me`, reading and writing through a cache
    /// over `cluster`. Call from within a Tokio runtime.
    pub async fn start(
        me: SocketAddr,
        cluster: ClusterClient,
        config: ExecutorConfig,
    ) -> Result<Arc<Executor>, FnError> {
        let runtime = WasmRuntime::new()?;
        let cache = Cache::new(cluster.clone(), config.cache).await;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.executors.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("calm-executor-{i}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            rx.recv()
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| FnError::Store(format!("cannot start an executor thread: {e}")))?;
        }
        let seed = config.seed.unwrap_or_else(rand::random);
        let executor = Arc::new(Executor {
            me: api::node_name(me),
            config,
            cache,
            cluster,
            runtime,
            natives: RwLock::new(HashMap::new()),
            jobs: Mutex::new(Some(tx)),
            queued: Arc::new(AtomicUsize::new(0)),
            handle: Handle::current(),
            joins: Mutex::new(HashMap::new()),
            others: RwLock::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counters: Counters::default(),
            recent: Mutex::new(VecDeque::new()),
            refresher: Mutex::new(None),
        });
        let weak = Arc::downgrade(&executor);
        let period = Duration::from_millis(config.index_period_ms.max(10));
        let refresher = tokio::spawn(async move {
            for round in 0u64.. {
                tokio::time::sleep(period).await;
                let Some(executor) = weak.upgrade() else {
                    return;
                };
                // Nodes join and leave: the membership is read again every few rounds.
                if round % 5 == 0 {
                    let _ = executor.cluster.refresh().await;
                }
                executor.refresh_others().await;
            }
        });
        *lock(&executor.refresher) = Some(refresher);
        Ok(executor)
    }

    /// Stops the executor threads (after the calls they run) and the index refresher.
    pub fn shutdown(&self) {
        lock(&self.jobs).take();
        if let Some(r) = lock(&self.refresher).take() {
            r.abort();
        }
    }

    /// How many nodes' executors this one can place functions on, itself included.
    pub fn known_nodes(&self) -> usize {
        1 + self.others.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// This node's name in placements.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The node's cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// This node's counters.
    pub fn stats(&self) -> ExecStats {
        let c = self.cache.stats();
        ExecStats {
            executors: self.config.executors.max(1),
            calls: self.counters.calls.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            functions_run: self.counters.functions_run.load(Ordering::Relaxed),
            modules_compiled: self.runtime.compiled_modules(),
            cache_hits: c.hits,
            cache_misses: c.misses,
            cache_evictions: c.evictions,
            cache_pushes: c.pushes,
            cache_bytes: c.bytes,
            recent_placements: lock(&self.recent).iter().cloned().collect(),
        }
    }

    /// Answers one request of the executor service from a caller with `access` (see
    /// `calm_kvs::acl`): registering needs the `register` right on the name, calling the
    /// `call` right on the DAG and its functions, which then run with the caller's rights.
    /// Tasks (one executor handing a call's function to another) come only from nodes.
    pub async fn handle(
        self: &Arc<Self>,
        request: ExecRequest,
        access: &Access,
    ) -> Result<ExecResponse, FnError> {
        let may = |right: Right, name: &str| {
            access
                .check(right, name.as_bytes())
                .map_err(|d| FnError::Forbidden(d.to_string()))
        };
        match request {
            ExecRequest::RegisterFn { name, module } => {
                may(Right::Register, &name)?;
                self.register_wasm(&name, module).await?;
                Ok(ExecResponse::Registered)
            }
            ExecRequest::RegisterDag(dag) => {
                may(Right::Register, &dag.name)?;
                self.register_dag(dag).await?;
                Ok(ExecResponse::Registered)
            }
            ExecRequest::List => Ok(ExecResponse::Listing(self.list().await?)),
            ExecRequest::Call(call) => Ok(ExecResponse::Call(
                self.call_as(call, access.clone()).await?,
            )),
            ExecRequest::Task(_) if *access != Access::All => Err(FnError::Forbidden(
                "tasks of a call are handed between executors on nodes only; a client calls (calm fn call)".into(),
            )),
            ExecRequest::Task(task) => Ok(ExecResponse::Task(self.clone().run_task(task).await?)),
            ExecRequest::Index => Ok(ExecResponse::Index(self.index())),
            ExecRequest::Stats => Ok(ExecResponse::Stats(self.stats())),
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The executor service a node serves (register it on the node's
/// [`Services`](calm_kvs::service::Services) as [`SERVICE`](crate::api::SERVICE)).
pub struct ExecService(pub Arc<Executor>);

impl Service for ExecService {
    fn call(&self, access: &Access, body: Bytes) -> ServiceFuture {
        let executor = self.0.clone();
        let access = access.clone();
        Box::pin(async move {
            let answer = match api::decode::<ExecRequest>(&body) {
                Ok(request) => executor.handle(request, &access).await,
                Err(e) => Err(e),
            };
            Ok(api::encode(&answer))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
