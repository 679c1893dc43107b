//! The errors of the store's public API.

use std::path::PathBuf;

use crate::op::OpError;
use crate::protocol::ProtocolError;
use crate::wire::WireError;

/// Everything that can go wrong talking to a store, embedded or over the network.
#[derive(Debug, thiserror::Error)]
pub enum KvsError {
    /// One operation failed (the kind of the key, a size limit, ...).
    #[error(transparent)]
    Op(#[from] OpError),
    /// A value of an application's kind could not be written or read as its type (see
    /// [`custom`](crate::value::custom)).
    #[error(transparent)]
    Custom(#[from] crate::value::CustomError),
    /// The node could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The cluster file could not be read.
    #[error(transparent)]
    ClusterFile(#[from] ClusterFileError),
    /// The connection broke while a request was in flight; the request may or may not have
    /// been applied. Whether sending a write again is safe:
    /// [`Write::is_idempotent`](crate::value::Write::is_idempotent).
    #[error(
        "connection lost: {0}; the request may or may not have been applied ({advice})",
        advice = crate::value::RETRY_ADVICE
    )]
    ConnectionLost(String),
    /// The node refused a request it could not read.
    #[error("the node refused the request: {0}")]
    Refused(#[from] ProtocolError),
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The reply did not match the request (a bug on one side).
    #[error("unexpected reply from the node: {0}")]
    UnexpectedReply(String),
    /// Certificates or keys could not be made, read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A configuration file or value is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The node's disk could not be opened or recovered.
    #[error("storage: {0}")]
    Storage(String),
    /// The store has been shut down.
    #[error("the store is shut down")]
    ShutDown,
    /// A service the node serves answered with an error (its message says what was
    /// wrong).
    #[error("{0}")]
    Service(String),
}

impl KvsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KvsError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why a cluster file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    /// There is no file at the path.
    #[error(
        "no cluster file at {0}: a node that starts a cluster writes one into its data directory (calm up, or calm server)"
    )]
    NotFound(std::path::PathBuf),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a cluster file.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
