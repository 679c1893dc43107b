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
use calm_kvs::protocol::Ack;
use calm_kvs::service::{Service, ServiceFuture};
use calm_kvs::tasks::join_all;
use calm_kvs::value::Write;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

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

/// Keys at least this large count for locality (smaller ones cost little to fetch, and
/// leaving them out keeps the index small).
const INDEX_MIN_BYTES: u64 = 16 << 10;
/// The most keys one node's index carries.
const INDEX_MAX_KEYS: usize = 4096;
/// How long a function with several predecessors waits for all of them.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce() + Send>;

struct Join {
    inputs: HashMap<String, Bytes>,
    session: Session,
    since: Instant,
}

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

    /// Registers a Rust function under `name` on this node (it shadows a stored
    /// WebAssembly function of the same name here).
    pub fn register_native(&self, name: &str, f: NativeFn) -> Result<(), FnError> {
        check_name(name)?;
        self.natives
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), f);
        Ok(())
    }

    fn native(&self, name: &str) -> Option<NativeFn> {
        self.natives
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Checks a WebAssembly module (binary or text) and stores it as the function `name`.
    pub async fn register_wasm(&self, name: &str, module: Bytes) -> Result<(), FnError> {
        check_name(name)?;
        self.runtime.compile(name, &module)?;
        self.cache
            .write(vec![(fn_key(name), Write::Lww(module))], Ack::One)
            .await?;
        self.cache
            .write(
                vec![(
                    Bytes::from_static(FN_INDEX.as_bytes()),
                    Write::SetAdd(vec![Bytes::from(name.to_string())]),
                )],
                Ack::One,
            )
            .await?;
        Ok(())
    }

    /// Checks a DAG (shape, and that its functions exist) and stores it.
    pub async fn register_dag(&self, dag: Dag) -> Result<(), FnError> {
        dag.validate()?;
        self.check_functions(&dag).await?;
        self.cache
            .write(
                vec![(dag_key(&dag.name), Write::Lww(api::encode(&dag)))],
                Ack::One,
            )
            .await?;
        self.cache
            .write(
                vec![(
                    Bytes::from_static(DAG_INDEX.as_bytes()),
                    Write::SetAdd(vec![Bytes::from(dag.name.clone())]),
                )],
                Ack::One,
            )
            .await?;
        Ok(())
    }

    /// Registered functions (stored and native here) and DAGs.
    pub async fn list(&self) -> Result<Listing, FnError> {
        let names = |v: Option<calm_kvs::value::ReadValue>| -> Vec<String> {
            match v {
                Some(calm_kvs::value::ReadValue::Set { members }) => members
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut functions = names(
            self.cache
                .refresh(&Bytes::from_static(FN_INDEX.as_bytes()))
                .await?,
        );
        functions.extend(
            self.natives
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        functions.sort();
        functions.dedup();
        let mut dags = Vec::new();
        for name in names(
            self.cache
                .refresh(&Bytes::from_static(DAG_INDEX.as_bytes()))
                .await?,
        ) {
            if let Ok(dag) = self.load_dag(&name).await {
                dags.push(dag);
            }
        }
        Ok(Listing { functions, dags })
    }

    async fn load_dag(&self, name: &str) -> Result<Dag, FnError> {
        check_name(name)?;
        match self.cache.get(&dag_key(name)).await? {
            Some(v) => api::decode(&value_bytes(&v)),
            None => Err(FnError::UnknownDag(name.to_string())),
        }
    }

    async fn check_functions(&self, dag: &Dag) -> Result<(), FnError> {
        for f in &dag.functions {
            if self.native(f).is_none() && self.cache.get(&fn_key(f)).await?.is_none() {
                return Err(FnError::UnknownFunction(f.clone()));
            }
        }
        Ok(())
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

    /// This node's load and large cached keys.
    pub fn index(&self) -> NodeIndex {
        let mut held: Vec<(Bytes, u64)> = self
            .cache
            .index()
            .into_iter()
            .filter(|(_, b)| *b >= INDEX_MIN_BYTES)
            .collect();
        held.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
        held.truncate(INDEX_MAX_KEYS);
        NodeIndex {
            executors: self.config.executors.max(1),
            queued: self.queued.load(Ordering::Relaxed),
            held,
        }
    }

    async fn refresh_others(&self) {
        let mut loads = Vec::new();
        for addr in self.cluster.alive_nodes() {
            let name = api::node_name(addr);
            if name == self.me {
                continue;
            }
            let Ok(client) = self.cluster.node(addr).await else {
                continue;
            };
            let asked = tokio::time::timeout(
                Duration::from_secs(1),
                api::request(&client, &ExecRequest::Index),
            )
            .await;
            if let Ok(Ok(ExecResponse::Index(index))) = asked {
                loads.push(NodeLoad {
                    addr: name,
                    executors: index.executors,
                    queued: index.queued,
                    held: index.held.into_iter().collect(),
                });
            }
        }
        *self.others.write().unwrap_or_else(|p| p.into_inner()) = loads;
    }

    /// Calls a DAG: places its functions, runs them (executors trigger their successors
    /// directly), and once every sink has answered stores the call's writes and answers.
    pub async fn call(self: &Arc<Self>, request: CallRequest) -> Result<CallResult, FnError> {
        let started = Instant::now();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = self.call_inner(request, started).await;
        if outcome.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn call_inner(
        self: &Arc<Self>,
        request: CallRequest,
        started: Instant,
    ) -> Result<CallResult, FnError> {
        let dag = match request.dag {
            DagSpec::Named(name) => self.load_dag(&name).await?,
            DagSpec::Inline(dag) => dag,
        };
        dag.validate()?;
        self.check_functions(&dag).await?;
        let placement = self.place(&dag, &request.args);
        let call_id: u64 = rand::random();
        let session = Session::new(request.consistency);
        let placement_pairs: Vec<(String, String)> = placement
            .iter()
            .map(|p| (p.function.clone(), p.node.clone()))
            .collect();
        let runs = dag.sources().into_iter().map(|source| {
            let task = Task {
                call_id,
                dag: dag.clone(),
                placement: placement_pairs.clone(),
                function: source,
                inputs: request.args.clone(),
                from: None,
                session: session.clone(),
            };
            self.clone().dispatch(task)
        });
        let runs: Vec<_> = runs.collect();
        let mut sinks = Vec::new();
        let mut total = session;
        let mut first_error = None;
        for outcome in join_all(runs).await {
            match outcome {
                Ok(o) => {
                    sinks.extend(o.sinks);
                    total.join(o.session);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let order = dag.sinks();
        sinks.sort_by_key(|(f, _)| order.iter().position(|s| s == f));
        sinks.dedup_by(|a, b| a.0 == b.0);
        let result = CallResult {
            outputs: sinks,
            placement,
            took_us: 0,
        };
        let output = request.output_key.map(|k| (k, result.output()));
        total.commit(&self.cache, output).await?;
        Ok(CallResult {
            took_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ..result
        })
    }

    /// Picks a node for every function, in the DAG's order.
    fn place(&self, dag: &Dag, args: &[Arg]) -> Vec<Placement> {
        let mut nodes = vec![self.self_load()];
        nodes.extend(
            self.others
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        let refs: Vec<Bytes> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Ref(k) => Some(k.clone()),
                Arg::Bytes(_) => None,
            })
            .collect();
        let mut out: Vec<Placement> = Vec::new();
        let mut rng = lock(&self.rng);
        for f in dag.order() {
            let preds = dag.predecessors(&f);
            let pred_node = preds
                .first()
                .and_then(|p| out.iter().find(|x| &x.function == p))
                .map(|x| x.node.clone());
            let my_refs: &[Bytes] = if preds.is_empty() { &refs } else { &[] };
            let roll: f64 = rng.random();
            let pick: usize = rng.random_range(0..1 << 16);
            let (i, reason) = place(
                &self.config.scheduler,
                &nodes,
                my_refs,
                pred_node.as_deref(),
                roll,
                pick,
            );
            // Count the placement as load, so the next functions spread.
            nodes[i].queued += 1;
            tracing::debug!(function = %f, node = %nodes[i].addr, %reason, "placed");
            out.push(Placement {
                function: f,
                node: nodes[i].addr.clone(),
                reason: reason.to_string(),
            });
        }
        drop(rng);
        let mut recent = lock(&self.recent);
        for p in &out {
            recent.push_back(p.clone());
            if recent.len() > 16 {
                recent.pop_front();
            }
        }
        out
    }

    fn self_load(&self) -> NodeLoad {
        let index = self.index();
        NodeLoad {
            addr: self.me.clone(),
            executors: index.executors,
            queued: index.queued,
            held: index.held.into_iter().collect(),
        }
    }

    /// Runs a task where it was placed: here, or sent to that node's executors.
    fn dispatch(
        self: Arc<Self>,
        task: Task,
    ) -> Pin<Box<dyn Future<Output = Result<TaskOutcome, FnError>> + Send>> {
        Box::pin(async move {
            let node = task
                .placement
                .iter()
                .find(|(f, _)| *f == task.function)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| self.me.clone());
            if node == self.me {
                return self.run_task(task).await;
            }
            let unreachable = |reason: String| FnError::Unreachable {
                node: node.clone(),
                reason,
            };
            let addr: SocketAddr = node
                .parse()
                .map_err(|_| unreachable("bad address".into()))?;
            let client = self
                .cluster
                .node(addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            match api::request(&client, &ExecRequest::Task(task)).await {
                Ok(ExecResponse::Task(outcome)) => Ok(outcome),
                Ok(other) => Err(unreachable(format!("unexpected answer {other:?}"))),
                Err(api::ExecError::Fn(e)) => Err(e),
                Err(api::ExecError::Kvs(e)) => Err(unreachable(e.to_string())),
            }
        })
    }

    /// Runs a task here, then its successors (wherever they were placed).
    pub async fn run_task(self: Arc<Self>, task: Task) -> Result<TaskOutcome, FnError> {
        let preds = task.dag.predecessors(&task.function);
        let (inputs, session) = if preds.len() > 1 {
            match self.deliver(&task, &preds) {
                Some(ready) => ready,
                // Another predecessor will run the function; this branch's session goes
                // back to the entry with its answer.
                None => {
                    return Ok(TaskOutcome {
                        sinks: Vec::new(),
                        session: task.session,
                    });
                }
            }
        } else {
            (task.inputs.clone(), task.session.clone())
        };
        let (output, session) = self
            .clone()
            .run_function(task.function.clone(), inputs, session)
            .await?;
        let successors = task.dag.successors(&task.function);
        if successors.is_empty() {
            return Ok(TaskOutcome {
                sinks: vec![(task.function.clone(), output)],
                session,
            });
        }
        let runs = successors.into_iter().map(|s| {
            self.clone().dispatch(Task {
                call_id: task.call_id,
                dag: task.dag.clone(),
                placement: task.placement.clone(),
                function: s,
                inputs: vec![Arg::Bytes(output.clone())],
                from: Some(task.function.clone()),
                session: session.clone(),
            })
        });
        let runs: Vec<_> = runs.collect();
        let mut total = TaskOutcome {
            sinks: Vec::new(),
            session,
        };
        for outcome in join_all(runs).await {
            let o = outcome?;
            total.sinks.extend(o.sinks);
            total.session.join(o.session);
        }
        Ok(total)
    }

    /// Records one predecessor's output for a function with several; once all have
    /// arrived, their outputs (in edge order) and joined sessions.
    fn deliver(&self, task: &Task, preds: &[String]) -> Option<(Vec<Arg>, Session)> {
        let mut joins = lock(&self.joins);
        joins.retain(|_, j| j.since.elapsed() < JOIN_TIMEOUT);
        let key = (task.call_id, task.function.clone());
        let join = joins.entry(key.clone()).or_insert_with(|| Join {
            inputs: HashMap::new(),
            session: Session::new(task.session.consistency),
            since: Instant::now(),
        });
        let input = match task.inputs.first() {
            Some(Arg::Bytes(b)) => b.clone(),
            _ => Bytes::new(),
        };
        join.inputs
            .insert(task.from.clone().unwrap_or_default(), input);
        join.session.join(task.session.clone());
        if preds.iter().all(|p| join.inputs.contains_key(p)) {
            let join = joins.remove(&key)?;
            let inputs = preds
                .iter()
                .map(|p| Arg::Bytes(join.inputs.get(p).cloned().unwrap_or_default()))
                .collect();
            Some((inputs, join.session))
        } else {
            None
        }
    }

    /// Runs one function on an executor thread: resolves references, runs native or
    /// WebAssembly code, returns the output and the session after it.
    async fn run_function(
        self: Arc<Self>,
        name: String,
        inputs: Vec<Arg>,
        mut session: Session,
    ) -> Result<(Bytes, Session), FnError> {
        let mut args = Vec::with_capacity(inputs.len());
        for input in inputs {
            match input {
                Arg::Bytes(b) => args.push(b),
                Arg::Ref(key) => match session.read(&self.cache, &key).await? {
                    Some(v) => args.push(v),
                    None => {
                        return Err(FnError::MissingRef(
                            String::from_utf8_lossy(&key).into_owned(),
                        ));
                    }
                },
            }
        }
        let native = self.native(&name);
        let module = match native {
            Some(_) => None,
            None => match self.cache.get(&fn_key(&name)).await? {
                Some(v) => Some(self.runtime.compile(&name, &value_bytes(&v))?),
                None => return Err(FnError::UnknownFunction(name)),
            },
        };
        let host = Box::new(SessionHost {
            name: name.clone(),
            session,
            cache: self.cache.clone(),
            handle: self.handle.clone(),
        });
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let queued = self.queued.clone();
        queued.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move || {
            let (result, host) = match (native, module) {
                (Some(f), _) => {
                    let mut host: Box<dyn Host> = host;
                    // A native function that panics fails its call, not the executor.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        f(host.as_mut(), &args)
                    }));
                    let result = match ran {
                        Ok(r) => r,
                        Err(panic) => Err(format!(
                            "panicked: {}",
                            panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        )),
                    }
                    .map_err(|message| FnError::Failed {
                        name: name.clone(),
                        message,
                    });
                    (result, host)
                }
                (None, Some(module)) => {
                    this.runtime
                        .run(&name, &module, args, host, this.config.limits)
                }
                (None, None) => (
                    Err(FnError::UnknownFunction(name.clone())),
                    host as Box<dyn Host>,
                ),
            };
            queued.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send((result, host.into_session()));
        });
        let sent = lock(&self.jobs).as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(FnError::Store("the executors are shut down".into()));
        }
        let (result, session) = rx
            .await
            .map_err(|_| FnError::Store("an executor thread stopped".into()))?;
        self.counters.functions_run.fetch_add(1, Ordering::Relaxed);
        Ok((result?, session))
    }

    /// Answers one request of the executor service.
    pub async fn handle(self: &Arc<Self>, request: ExecRequest) -> Result<ExecResponse, FnError> {
        match request {
            ExecRequest::RegisterFn { name, module } => {
                self.register_wasm(&name, module).await?;
                Ok(ExecResponse::Registered)
            }
            ExecRequest::RegisterDag(dag) => {
                self.register_dag(dag).await?;
                Ok(ExecResponse::Registered)
            }
            ExecRequest::List => Ok(ExecResponse::Listing(self.list().await?)),
            ExecRequest::Call(call) => Ok(ExecResponse::Call(self.call(call).await?)),
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
    fn call(&self, body: Bytes) -> ServiceFuture {
        let executor = self.0.clone();
        Box::pin(async move {
            let answer = match api::decode::<ExecRequest>(&body) {
                Ok(request) => executor.handle(request).await,
                Err(e) => Err(e),
            };
            Ok(api::encode(&answer))
        })
    }
}

fn fn_key(name: &str) -> Bytes {
    Bytes::from(format!("{FN_PREFIX}{name}"))
}

fn dag_key(name: &str) -> Bytes {
    Bytes::from(format!("{DAG_PREFIX}{name}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
