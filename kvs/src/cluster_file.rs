//! `cluster.toml`: how clients find a cluster.
//!
//! A node that starts a new cluster (`calm server` without `--join`, and `calm up`) writes
//! it into its data directory; [`ClusterClient::connect_file`](crate::ClusterClient::connect_file)
//! and the `calm` commands read it.
//!
//! ```toml
//! nodes = ["127.0.0.1:7400"]
//! ca = "ca/ca.pem"              # paths are relative to this file's folder
//! cert = "clients/admin.pem"    # the client certificate to present (calm ca issue --client)
//! key = "clients/admin.key"     # its key (default: the certificate's path ending in .key)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tls::Credentials;

/// Why a cluster file could not be read or written (defined with the crate's errors).
pub use crate::error::ClusterFileError;

/// The contents of a cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Native-protocol (QUIC) addresses of the nodes.
    pub nodes: Vec<SocketAddr>,
    /// The cluster CA certificate; relative paths are relative to the file's folder.
    pub ca: PathBuf,
    /// The client certificate to present (nodes refuse connections without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (default: the certificate's path ending in `.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Where the file was read from (to name it in errors).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// The user whose client certificate a node that starts a cluster issues and names in the
/// cluster file (`clients/admin.pem` in its data directory).
pub const FIRST_USER: &str = "admin";

impl ClusterFile {
    /// The cluster file of a cluster started in `data_dir` with its CA in `ca/`: it names
    /// `nodes`, and the client certificate of [`FIRST_USER`] (issued now if absent), by
    /// paths relative to the file.
    pub fn for_data_dir(
        data_dir: &Path,
        nodes: Vec<SocketAddr>,
    ) -> Result<ClusterFile, crate::KvsError> {
        let ca = crate::tls::CaFiles::in_dir(&data_dir.join("ca"));
        crate::tls::ensure_client(&ca, FIRST_USER, &data_dir.join("clients"))?;
        Ok(ClusterFile {
            nodes,
            ca: PathBuf::from("ca").join("ca.pem"),
            cert: Some(PathBuf::from("clients").join(format!("{FIRST_USER}.pem"))),
            key: Some(PathBuf::from("clients").join(format!("{FIRST_USER}.key"))),
            path: None,
        })
    }

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
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut file.ca);
        file.cert.iter_mut().for_each(resolve);
        file.key.iter_mut().for_each(resolve);
        file.path = Some(path.to_path_buf());
        Ok(file)
    }

    /// What a client presents and trusts: the CA, and the client certificate and key the
    /// file names. A file without a client certificate is refused with what to add.
    pub fn credentials(&self) -> Result<Credentials, ClusterFileError> {
        let Some(cert) = &self.cert else {
            return Err(ClusterFileError::Invalid {
                path: self.path.clone().unwrap_or_default(),
                reason: "names no client certificate, and nodes refuse clients without one; issue one with `calm ca issue --client NAME` and add `cert = \"clients/NAME.pem\"`".into(),
            });
        };
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| cert.with_extension("key"));
        Ok(Credentials::new(&self.ca, cert, key))
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
            cert: Some(PathBuf::from("clients/admin.pem")),
            key: None,
            path: None,
        };
        file.write(&path).unwrap();
        let back = ClusterFile::read(&path).unwrap();
        assert_eq!(back.nodes, file.nodes);
        assert_eq!(back.ca, dir.path().join("ca/ca.pem"));
        let creds = back.credentials().unwrap();
        assert_eq!(creds.cert.cert, dir.path().join("clients/admin.pem"));
        assert_eq!(creds.cert.key, dir.path().join("clients/admin.key"));
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
        std::fs::write(&path, "nodes = [\"127.0.0.1:1\"]\nca = \"x\"\n").unwrap();
        let err = ClusterFile::read(&path).unwrap().credentials().unwrap_err();
        assert!(err.to_string().contains("calm ca issue --client"), "{err}");
        std::fs::write(&path, "nodes = [\"nope\"]\nca = \"x\"\n").unwrap();
        assert!(matches!(
            ClusterFile::read(&path),
            Err(ClusterFileError::Invalid { .. })
        ));
    }
}
