//! calm's function executors: code shipped to the data.
//!
//! Every node runs one [`Cache`](calm_cache::Cache) and E executor threads next to it.
//! Functions are native Rust ([`NativeFn`], registered in-process) or WebAssembly modules
//! stored in the store itself (code is data), compiled once per node and run in a sandbox
//! that sees only calm's small host API, with fuel, memory and deadline limits
//! ([`wasm`]). Functions compose into [`Dag`]s; a DAG call is placed function by function
//! where the bytes it references are cached, with load backoff and some exploration
//! ([`scheduler`]); executors trigger their successors directly, and the caller gets the
//! result as the answer to its request (no polling). Each call runs under a
//! [`Consistency`] mode whose [`Session`] travels with it ([`session`]); its writes are
//! stored only when the whole call succeeded.
//!
//! Nodes serve the executors as the `calm.exec` service ([`ExecService`]); [`api`] has the
//! messages and a typed client.
//!
//! ```
//! use std::sync::Arc;
//! use calm_executor::api::{Arg, CallRequest, DagSpec};
//! use calm_executor::{Consistency, Dag, Executor, ExecutorConfig};
//! use calm_kvs::launch::TestCluster;
//! use calm_kvs::Store;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cluster = TestCluster::start(1).await.unwrap();
//! let me = cluster.nodes()[0].advertised;
//! let client = cluster.client().await.unwrap();
//! let executor = Executor::start(me, client.clone(), ExecutorConfig::default())
//!     .await
//!     .unwrap();
//! // A native function: greets the user stored under the key its argument names, read
//! // through the cache next to it.
//! executor
//!     .register_native(
//!         "greet",
//!         Arc::new(|host, args| {
//!             let name = host.get(&args[0]).map_err(|e| e.to_string())?;
//!             let name = String::from_utf8_lossy(&name.unwrap_or_default()).into_owned();
//!             Ok(format!("hello, {name}").into())
//!         }),
//!     )
//!     .unwrap();
//! client.put("user/1", "ada").await.unwrap();
//! let result = executor
//!     .call(CallRequest {
//!         dag: DagSpec::Inline(Dag::single("greet")),
//!         args: vec![Arg::Bytes("user/1".into())],
//!         consistency: Consistency::Lww,
//!         output_key: None,
//!     })
//!     .await
//!     .unwrap();
//! assert_eq!(result.output(), "hello, ada");
//! # });
//! ```

pub mod api;
pub mod dag;
pub mod error;
pub mod executor;
pub mod host;
pub mod scheduler;
pub mod session;
pub mod wasm;

pub use dag::Dag;
pub use error::FnError;
pub use executor::{ExecService, Executor, ExecutorConfig, NativeFn};
pub use host::Host;
pub use session::{Consistency, Session};
