//! The subcommands of the `calm` binary.

pub mod autoscaler;
pub mod bench;
pub mod ca;
pub mod demo;
pub mod func;
pub mod kv;
pub mod server;
pub mod shared;
pub mod status;
pub mod target;
pub mod up;

/// A failed command: one line for stderr, exit status 1.
pub type CliResult<T> = Result<T, String>;
