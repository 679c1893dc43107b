//! `cluster.toml`: how clients find a cluster.
//!
//! A node that starts a new cluster (`calm server` without `--join`, and `calm up`) writes
//! it into its data directory; [`ClusterClient::connect_file`](crate::ClusterClient::connect_file)
//! and the `calm` commands read it.
//!
//! ```toml
//! nodes = ["127.0.0.1:7400"]
//! ca = "ca/ca.pem"          # relative to this file's folder
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a cluster file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    /// There is no file at the path.
    #[error(
        "no cluster file at {0}: a node that starts a cluster writes one into its data directory (calm up, or calm server)"
    )]
    NotFound(PathBuf),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a cluster file.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The contents of a cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Native-protocol (QUIC) addresses of the nodes.
    pub nodes: Vec<SocketAddr>,
    /// The cluster CA certificate; relative paths are relative to the file's folder.
    pub ca: PathBuf,
}

impl ClusterFile {
    /// Reads a cluster file; the CA path comes back resolved against the file's folder.
    pub fn read(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ClusterFileError::NotFound(path.to_path_buf())
            } else {
                ClusterFileError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        let invalid = |reason: String| ClusterFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut file: ClusterFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.nodes.is_empty() {
            return Err(invalid("lists no nodes".into()));
        }
        if file.ca.is_relative() {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            file.ca = base.join(&file.ca);
        }
        Ok(file)
    }

    /// Writes the file atomically (a reader never sees half of it).
    pub fn write(&self, path: &Path) -> Result<(), ClusterFileError> {
        let text = toml::to_string(self).map_err(|e| ClusterFileError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let text = format!("# Written by calm; clients read it to find the cluster.\n{text}");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClusterFileError::Io { path, source }
        };
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip_resolves_the_ca_next_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        let file = ClusterFile {
            nodes: vec!["127.0.0.1:7400".parse().unwrap()],
            ca: PathBuf::from("ca/ca.pem"),
        };
        file.write(&path).unwrap();
        let back = ClusterFile::read(&path).unwrap();
        assert_eq!(back.nodes, file.nodes);
        assert_eq!(back.ca, dir.path().join("ca/ca.pem"));
    }

    #[test]
    fn errors_are_typed_and_say_what_to_do() {
        let err = ClusterFile::read(Path::new("/nonexistent/cluster.toml")).unwrap_err();
        assert!(matches!(err, ClusterFileError::NotFound(_)));
        assert!(err.to_string().contains("calm up"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, "nodes = []\nca = \"x\"\n").unwrap();
        let err = ClusterFile::read(&path).unwrap_err();
        assert!(err.to_string().contains("no nodes"), "{err}");
        std::fs::write(&path, "nodes = [\"nope\"]\nca = \"x\"\n").unwrap();
        assert!(matches!(
            ClusterFile::read(&path),
            Err(ClusterFileError::Invalid { .. })
        ));
    }
}
