//! `cluster.toml`: how clients find a cluster.
//!
//! A node that starts a new cluster (and later `calm up`) writes it into the data
//! directory; `calm kv` and other client commands read `./calm-data/cluster.toml` unless
//! told otherwise.
//!
//! ```toml
//! nodes = ["127.0.0.1:7400"]
//! ca = "ca/ca.pem"          # relative to this file's folder
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    pub fn read(path: &Path) -> Result<ClusterFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "no cluster file at {}; start a node first (calm server), or name one with --cluster FILE or --addr HOST:PORT --ca FILE",
                    path.display()
                )
            } else {
                format!("{}: {e}", path.display())
            }
        })?;
        let mut file: ClusterFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.nodes.is_empty() {
            return Err(format!("{}: lists no nodes", path.display()));
        }
        if file.ca.is_relative() {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            file.ca = base.join(&file.ca);
        }
        Ok(file)
    }

    /// Writes the file atomically (a reader never sees half of it).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = format!(
            "# Written by calm; clients read it to find the cluster.\n{}",
            toml::to_string(self).map_err(|e| e.to_string())?
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
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
    fn errors_say_what_to_do() {
        let err = ClusterFile::read(Path::new("/nonexistent/cluster.toml")).unwrap_err();
        assert!(err.contains("calm server"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, "nodes = []\nca = \"x\"\n").unwrap();
        assert!(ClusterFile::read(&path).unwrap_err().contains("no nodes"));
        std::fs::write(&path, "nodes = [\"nope\"]\nca = \"x\"\n").unwrap();
        assert!(ClusterFile::read(&path).is_err());
    }
}
