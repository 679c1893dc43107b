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
