//! How client commands find a node: a cluster file, or an address and a CA.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use calm::cluster_file::{ClusterFile, ClusterFileError};
use calm_kvs::Client;
use clap::Args;

use super::CliResult;

/// Reads a cluster file for a command; a missing one says how to name another.
pub fn read_cluster_file(path: &std::path::Path) -> CliResult<ClusterFile> {
    ClusterFile::read(path).map_err(|e| match e {
        ClusterFileError::NotFound(_) => {
            format!(
                "{e}; or name one with --cluster FILE, or a node with --addr HOST:PORT --ca FILE"
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
    /// Talk to this node directly instead of the cluster file's nodes (needs --ca).
    #[arg(long, global = true, value_name = "HOST:PORT", requires = "ca")]
    pub addr: Option<String>,
    /// The cluster CA certificate, with --addr.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl Target {
    /// The nodes to try and the CA to trust.
    pub fn resolve(&self) -> CliResult<(Vec<SocketAddr>, PathBuf)> {
        match (&self.addr, &self.ca) {
            (Some(addr), Some(ca)) => {
                let addrs: Vec<SocketAddr> = addr
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {addr}: {e}"))?
                    .collect();
                Ok((addrs, ca.clone()))
            }
            (None, Some(_)) => Err("--ca goes with --addr HOST:PORT".into()),
            _ => {
                let file = read_cluster_file(&self.cluster)?;
                Ok((file.nodes, file.ca))
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
