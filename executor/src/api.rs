//! The executor service's messages (carried as bytes by the node's `calm.exec` service),
//! and a typed client for them.

use std::net::SocketAddr;

use bytes::Bytes;
use calm_kvs::{Client, KvsError};
use serde::{Deserialize, Serialize};

use crate::dag::Dag;
use crate::error::FnError;
use crate::session::{Consistency, Session};

/// The name of the executor service on a node.
pub const SERVICE: &str = "calm.exec";

/// The key prefix calm keeps functions and DAGs under (reserved).
pub const FN_PREFIX: &str = "calm/fn/";
/// The set of registered function names.
pub const FN_INDEX: &str = "calm/fns";
/// The key prefix of registered DAGs.
pub const DAG_PREFIX: &str = "calm/dag/";
/// The set of registered DAG names.
pub const DAG_INDEX: &str = "calm/dags";

/// An argument of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arg {
    /// Bytes passed as they are.
    Bytes(Bytes),
    /// A reference to a key, resolved through the cache next to the executor that runs
    /// the function.
    Ref(Bytes),
}

impl Arg {
    /// Reads a command-line argument: `ref:KEY` is a reference, anything else bytes.
    pub fn parse(text: &[u8]) -> Arg {
        match text.strip_prefix(b"ref:") {
            Some(key) if !key.is_empty() => Arg::Ref(Bytes::copy_from_slice(key)),
            _ => Arg::Bytes(Bytes::copy_from_slice(text)),
        }
    }
}

/// Which DAG a call runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DagSpec {
    /// A registered DAG.
    Named(String),
    /// A DAG given with the call (`calm fn call` runs one function this way).
    Inline(Dag),
}

/// A call of a DAG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The DAG.
    pub dag: DagSpec,
    /// The arguments of its source functions.
    pub args: Vec<Arg>,
    /// The consistency mode.
    pub consistency: Consistency,
    /// Also store the result under this key (as the call's writes are: only on success).
    pub output_key: Option<Bytes>,
}

/// Where one function of a call ran, and why there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The function.
    pub function: String,
    /// The node.
    pub node: String,
    /// Why the scheduler picked it.
    pub reason: String,
}

/// The answer to a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// Each sink function's output, in the DAG's order of functions.
    pub outputs: Vec<(String, Bytes)>,
    /// Where each function ran.
    pub placement: Vec<Placement>,
    /// Time from the call's arrival to its answer at the entry node, microseconds.
    pub took_us: u64,
}

impl CallResult {
    /// The output of a call with one sink (the first sink's otherwise).
    pub fn output(&self) -> Bytes {
        self.outputs
            .first()
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    }
}

/// One function of a call, sent to the executor that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Identifies the call (joins are matched by it).
    pub call_id: u64,
    /// The DAG.
    pub dag: Dag,
    /// Each function's node.
    pub placement: Vec<(String, String)>,
    /// The function to run.
    pub function: String,
    /// Its inputs.
    pub inputs: Vec<Arg>,
    /// The predecessor that sent this (for functions with several).
    pub from: Option<String>,
    /// The call's session so far.
    pub session: Session,
}

/// What a task and everything downstream of it produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Outputs of sinks reached.
    pub sinks: Vec<(String, Bytes)>,
    /// The session after them.
    pub session: Session,
}

/// What one node's executors tell schedulers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIndex {
    /// Executor threads.
    pub executors: usize,
    /// Calls queued or running.
    pub queued: usize,
    /// Large keys its cache holds, with their bytes.
    pub held: Vec<(Bytes, u64)>,
}

/// A registered function or DAG, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Registered functions.
    pub functions: Vec<String>,
    /// Registered DAGs with their edges.
    pub dags: Vec<Dag>,
}

/// The executors' counters on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStats {
    /// Executor threads.
    pub executors: usize,
    /// DAG calls that entered here.
    pub calls: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Functions run here.
    pub functions_run: u64,
    /// Distinct WebAssembly modules compiled here.
    pub modules_compiled: usize,
    /// Cache reads served from the cache.
    pub cache_hits: u64,
    /// Cache reads fetched from owners.
    pub cache_misses: u64,
    /// Cache evictions.
    pub cache_evictions: u64,
    /// Changes pushed to the cache.
    pub cache_pushes: u64,
    /// Bytes cached.
    pub cache_bytes: u64,
    /// The most recent placements decided here (newest last).
    pub recent_placements: Vec<Placement>,
}

/// A request to the executor service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecRequest {
    /// Stores a WebAssembly module (binary or text) as a function, after checking it.
    RegisterFn {
        /// Its name.
        name: String,
        /// The module.
        module: Bytes,
    },
    /// Stores a DAG, after checking its shape and that its functions exist.
    RegisterDag(Dag),
    /// Lists functions and DAGs.
    List,
    /// Calls a DAG.
    Call(CallRequest),
    /// Runs one function of a call (between executors).
    Task(Task),
    /// This node's load and cache contents (between executors).
    Index,
    /// This node's counters.
    Stats,
}

/// An answer of the executor service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecResponse {
    /// Stored.
    Registered,
    /// Functions and DAGs.
    Listing(Listing),
    /// A call's result.
    Call(CallResult),
    /// A task's outcome.
    Task(TaskOutcome),
    /// A node's index.
    Index(NodeIndex),
    /// A node's counters.
    Stats(ExecStats),
}

/// Encodes a message of the service.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Encoding plain data into a vector cannot fail.
    Bytes::from(
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default(),
    )
}

/// Decodes a message of the service.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FnError> {
    bincode::serde::decode_from_slice(
        bytes,
        bincode::config::standard().with_limit::<{ 64 << 20 }>(),
    )
    .map(|(v, _)| v)
    .map_err(|e| FnError::Malformed(e.to_string()))
}

/// Why a request to an executor failed: it did not get there, or the executor said no.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The node could not be reached.
    #[error(transparent)]
    Kvs(#[from] KvsError),
    /// The executor refused or the call failed.
    #[error(transparent)]
    Fn(#[from] FnError),
}

/// Sends `request` to the executors of the node `client` is connected to.
pub async fn request(client: &Client, request: &ExecRequest) -> Result<ExecResponse, ExecError> {
    let answer = client.call_service(SERVICE, encode(request)).await?;
    let answer: Result<ExecResponse, FnError> = decode(&answer)?;
    Ok(answer?)
}

/// The address a node is known by, as text (placements name nodes this way).
pub fn node_name(addr: SocketAddr) -> String {
    addr.to_string()
}
