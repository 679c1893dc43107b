//! How client commands find a node: a cluster file, or an address with a CA and a client
//! certificate.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use calm::cluster_file::{ClusterFile, ClusterFileError};
use calm_kvs::Client;
use calm_kvs::tls::Credentials;
use clap::Args;

use super::CliResult;

/// Reads a cluster file for a command; a missing one says how to name another.
pub fn read_cluster_file(path: &std::path::Path) -> CliResult<ClusterFile> {
    ClusterFile::read(path).map_err(|e| match e {
        ClusterFileError::NotFound(_) => {
            format!(
                "{e}; or name one with --cluster FILE, or a node with --addr HOST:PORT --ca FILE --cert FILE"
            )
        }
        e => e.to_string(),
    })
}

/// Which cluster to talk to.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The cluster file listing the nodes and the CA.
    #[arg(
        long,
        global = true,
        default_value = "calm-data/cluster.toml",
        value_name = "FILE"
    )]
    pub cluster: PathBuf,
    /// Talk to this node directly instead of the cluster file's nodes (needs --ca and
    /// --cert).
    #[arg(long, global = true, value_name = "HOST:PORT", requires = "ca")]
    pub addr: Option<String>,
    /// The cluster CA certificate, with --addr.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Your client certificate, with --addr (calm ca issue --client NAME makes one).
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (default: the certificate's path ending in .key).
    #[arg(
        long = "key",
        id = "cert_key",
        global = true,
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
}

impl Target {
    /// The nodes to try, and the CA and client certificate to connect with.
    pub fn resolve(&self) -> CliResult<(Vec<SocketAddr>, Credentials)> {
        match (&self.addr, &self.ca, &self.cert) {
            (Some(addr), Some(ca), Some(cert)) => {
                let addrs: Vec<SocketAddr> = addr
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {addr}: {e}"))?
                    .collect();
                let key = self.key.clone().unwrap_or_else(|| cert.with_extension("key"));
                Ok((addrs, Credentials::new(ca, cert, key)))
            }
            (Some(_), _, None) => Err(
                "--addr needs your client certificate too: --cert FILE (nodes refuse clients without one; calm ca issue --client NAME makes one)".into(),
            ),
            (None, Some(_), _) | (None, _, Some(_)) => {
                Err("--ca and --cert go with --addr HOST:PORT".into())
            }
            _ => {
                let file = read_cluster_file(&self.cluster)?;
                let creds = file.credentials().map_err(|e| e.to_string())?;
                Ok((file.nodes, creds))
            }
        }
    }

    /// Connects to the first node that answers.
    pub async fn connect(&self) -> CliResult<Client> {
        let (nodes, ca) = self.resolve()?;
        let mut last = String::from("no node address to try");
        for addr in nodes {
            match Client::connect(addr, &ca).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}
