//! Durability and storage tiers for a worker's keys.
//!
//! Each worker keeps its hot keys in memory and, when it has a [`Disk`], logs every change
//! to a write-ahead log ([`wal`]) and keeps cold keys only in a cold tier on disk (a redb
//! database). A node's [`Durability`] says when a write is on disk:
//!
//! - `memory`: never (replicas are the only copies, as in Anna);
//! - `async`: written to the log at once and fsync'd every `flush_ms` (default);
//! - `sync`: fsync'd before the write is acknowledged (one fsync per group of batches).
//!
//! With a memory budget, keys are promoted to memory when read or written and the least
//! recently and least frequently used are demoted to disk when the budget is exceeded;
//! reads and writes behave the same whichever tier holds a key. Once the log outgrows
//! `checkpoint_log_bytes`, every changed key is written to the cold tier durably and the log
//! starts over. Recovery loads the cold tier's key index and replays the log; lattice merges
//! are idempotent, so replaying a record twice is harmless.

mod dense;
mod disk;
pub mod quota;
mod tiered;
pub mod wal;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use disk::{ColdKey, ColdPut, Disk, FileDisk, MemDisk};
pub use quota::{Quota, QuotaUsage, Quotas};
pub(crate) use tiered::entry_hash;
pub use tiered::{Recovery, TierStats, Tiered};

/// When a write is on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Nothing on disk: a node that stops loses its data (other replicas keep theirs).
    Memory,
    /// Logged at once, fsync'd every `flush_ms`: a process crash loses nothing, a power
    /// cut loses at most the last `flush_ms`.
    #[default]
    Async,
    /// fsync'd before the acknowledgement: nothing acknowledged is lost.
    Sync,
}

impl Durability {
    /// Every setting.
    pub const ALL: [Durability; 3] = [Durability::Memory, Durability::Async, Durability::Sync];

    /// The setting's name, as the command line and config files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Async => "async",
            Durability::Sync => "sync",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Durability::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown durability {s:?}; use memory, async or sync"))
    }
}

/// How a node stores its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    /// When writes reach the disk.
    pub durability: Durability,
    /// With `async`: how often the log is fsync'd, milliseconds.
    pub flush_ms: u64,
    /// Bytes of keys and values (each key's bytes, its value's encoding and its slot: what
    /// `INFO used_memory` counts) the node keeps in memory (split among its workers); colder keys live
    /// only on disk. `None`: everything stays in memory too.
    pub memory_budget: Option<u64>,
    /// Log size after which changed keys are written to the cold tier and the log restarts.
    pub checkpoint_log_bytes: u64,
    /// Page cache of each worker's cold tier, bytes.
    pub disk_cache_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Async,
            flush_ms: 100,
            memory_budget: None,
            checkpoint_log_bytes: 64 << 20,
            disk_cache_bytes: 16 << 20,
        }
    }
}

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The cold tier's engine failed.
    #[error("disk tier: {0}")]
    Engine(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt data on disk: {0}")]
    Corrupt(String),
    /// The log holds values of an application's kind this process has no code for (see
    /// [`custom`](crate::value::custom)): the node refuses to start rather than serve
    /// them without being able to merge them.
    #[error(
        "the log holds values of kind '{0}', which this node was not built with; start it with the kind's code (Kinds::with in its NodeConfig)"
    )]
    UnknownKind(String),
}

impl StorageError {
    pub(crate) fn io(path: impl AsRef<Path>, e: std::io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().to_path_buf(),
            reason: e.to_string(),
        }
    }
}
