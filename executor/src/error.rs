//! What can go wrong in a function call, as the caller sees it.

use serde::{Deserialize, Serialize};

/// Why a function or DAG call failed. Every failure is one of these, with a message that
/// says what was wrong; the executor keeps serving, and nothing the call wrote is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FnError {
    /// No function of this name is registered (natively on the node, or in the store).
    #[error("no function named '{0}' is registered (calm fn register NAME FILE.wasm)")]
    UnknownFunction(String),
    /// No DAG of this name is registered.
    #[error("no DAG named '{0}' is registered (calm dag register NAME --edge F:G)")]
    UnknownDag(String),
    /// The DAG is not well formed.
    #[error("invalid DAG: {0}")]
    InvalidDag(String),
    /// A name is not allowed.
    #[error("invalid name '{name}': {why}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The module is not WebAssembly (binary or text) that calm can run.
    #[error("'{name}' is not a WebAssembly module calm can run: {reason}")]
    NotWasm {
        /// The function.
        name: String,
        /// What the compiler said.
        reason: String,
    },
    /// The module lacks an export calm needs, or has it with the wrong type.
    #[error(
        "'{name}' does not export {what}; a calm function exports `memory` and `run: () -> i32` (the guest SDK does this)"
    )]
    MissingExport {
        /// The function.
        name: String,
        /// The missing export.
        what: String,
    },
    /// The module imports something calm does not give guests.
    #[error(
        "'{name}' imports {import}, which calm does not provide (guests get only the `calm` host API: no WASI files, sockets or clocks)"
    )]
    ForbiddenImport {
        /// The function.
        name: String,
        /// The import, `module::name`.
        import: String,
    },
    /// The call used up its fuel (CPU budget): an endless loop, or too much work.
    #[error(
        "'{name}' ran out of fuel after {fuel} units (an endless loop, or too much work for one call)"
    )]
    OutOfFuel {
        /// The function.
        name: String,
        /// The budget.
        fuel: u64,
    },
    /// The call ran past its deadline.
    #[error("'{name}' ran past its deadline of {ms} ms")]
    DeadlineExceeded {
        /// The function.
        name: String,
        /// The deadline.
        ms: u64,
    },
    /// The call tried to grow its memory beyond the limit.
    #[error("'{name}' tried to use more than its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The function.
        name: String,
        /// The limit.
        limit: usize,
    },
    /// The guest trapped (an unreachable, a division by zero, an access out of bounds...).
    #[error("'{name}' trapped: {message}")]
    Trap {
        /// The function.
        name: String,
        /// The trap.
        message: String,
    },
    /// The guest passed the host a pointer or length outside its memory, or other
    /// nonsense.
    #[error("'{name}' passed the host a bad {what}")]
    BadGuestCall {
        /// The function.
        name: String,
        /// What was wrong.
        what: String,
    },
    /// The guest reported a failure (its `run` returned non-zero).
    #[error("'{name}' failed with code {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    GuestFailed {
        /// The function.
        name: String,
        /// Its return code.
        code: i32,
        /// Its last log line, if any.
        message: String,
    },
    /// A native function returned an error.
    #[error("'{name}' failed: {message}")]
    Failed {
        /// The function.
        name: String,
        /// Its message.
        message: String,
    },
    /// The caller may not do this (see `calm_kvs::acl`): register or call a function, or,
    /// from a function it called, read or write a key.
    #[error("{0}")]
    Forbidden(String),
    /// An argument `ref:KEY` names a key that is not in the store.
    #[error("argument ref:{0} names a key that is not in the store")]
    MissingRef(String),
    /// A causal read could not form a causal cut.
    #[error("causal read of '{key}': {why}")]
    Causal {
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
    /// The store could not be reached or refused an operation.
    #[error("store: {0}")]
    Store(String),
    /// Another executor could not be reached.
    #[error("executor at {node}: {reason}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// A request the executor could not read.
    #[error("malformed request: {0}")]
    Malformed(String),
}

impl From<calm_cache::CacheError> for FnError {
    fn from(e: calm_cache::CacheError) -> Self {
        FnError::Store(e.to_string())
    }
}
