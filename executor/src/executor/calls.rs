//! A DAG call: its sources dispatched, each function run here or sent to the node it was
//! placed on, successors triggered directly, joins waited for, and the call's writes
//! committed once every sink answered.

use super::*;

/// How long a function with several predecessors waits for all of them.
pub(super) const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct Join {
    pub(super) inputs: HashMap<String, Bytes>,
    pub(super) session: Session,
    pub(super) since: Instant,
}

impl Executor {
    /// Calls a DAG: places its functions, runs them (executors trigger their successors
    /// directly), and once every sink has answered stores the call's writes and answers.
    pub async fn call(self: &Arc<Self>, request: CallRequest) -> Result<CallResult, FnError> {
        self.call_as(request, Access::All).await
    }

    /// Runs a call for a caller with `access`: it must have the right to call the DAG and
    /// each of its functions, and its functions read and write only what it may.
    pub async fn call_as(
        self: &Arc<Self>,
        request: CallRequest,
        access: Access,
    ) -> Result<CallResult, FnError> {
        let started = Instant::now();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = self.call_inner(request, access, started).await;
        if outcome.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    pub(super) async fn call_inner(
        self: &Arc<Self>,
        request: CallRequest,
        access: Access,
        started: Instant,
    ) -> Result<CallResult, FnError> {
        let session = Session::for_caller(request.consistency, access);
        let dag = match request.dag {
            DagSpec::Named(name) => {
                session.check(Right::Call, name.as_bytes())?;
                self.load_dag(&name).await?
            }
            DagSpec::Inline(dag) => dag,
        };
        for f in &dag.functions {
            session.check(Right::Call, f.as_bytes())?;
        }
        if let Some(key) = &request.output_key {
            session.check(Right::Write, key)?;
        }
        dag.validate()?;
        self.check_functions(&dag).await?;
        let placement = self.place(&dag, &request.args);
        let call_id: u64 = rand::random();
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

    /// Runs a task where it was placed: here, or sent to that node's executors.
    pub(super) fn dispatch(
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
    pub(super) fn deliver(&self, task: &Task, preds: &[String]) -> Option<(Vec<Arg>, Session)> {
        let mut joins = lock(&self.joins);
        joins.retain(|_, j| j.since.elapsed() < JOIN_TIMEOUT);
        let key = (task.call_id, task.function.clone());
        let join = joins.entry(key.clone()).or_insert_with(|| Join {
            inputs: HashMap::new(),
            session: Session::for_caller(task.session.consistency, task.session.access.clone()),
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
    pub(super) async fn run_function(
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
}
