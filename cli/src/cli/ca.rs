//! `calm ca`: the cluster's certificate authority.

use std::path::PathBuf;

use calm_kvs::tls;
use clap::Subcommand;

use super::CliResult;

/// Make a cluster CA, and certificates for nodes and clients (for clusters across machines).
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new cluster CA (ca.pem, and ca.key: keep it private).
    Init {
        /// Folder to write the CA into.
        #[arg(long, default_value = "calm-data/ca", value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a certificate signed by the CA, with its role in it: a node's (`--node`) or a
    /// client's (`--client`). Writes NAME.pem and NAME.key. Nodes accept peer messages
    /// only from node certificates, and every connection must present one or the other.
    #[command(group(clap::ArgGroup::new("role").required(true).args(["node", "client"])))]
    Issue {
        /// Folder of the CA (ca.pem and ca.key).
        #[arg(long, value_name = "DIR", default_value = "calm-data/ca")]
        ca: PathBuf,
        /// A node certificate for the host name or IP address the node is reached by.
        #[arg(long, visible_alias = "name", value_name = "ADDR")]
        node: Option<String>,
        /// A client certificate for user NAME.
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// Folder to write the certificate and key into (default: `nodes` or `clients`
        /// next to the CA's folder).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Runs a `calm ca` command.
pub fn run(cmd: CaCommand) -> CliResult<()> {
    match cmd {
        CaCommand::Init { out } => {
            let files = tls::init_ca(&out).map_err(|e| e.to_string())?;
            println!(
                "created cluster CA: {} (private key: {})",
                files.cert.display(),
                files.key.display()
            );
            Ok(())
        }
        CaCommand::Issue {
            ca,
            node,
            client,
            out,
        } => {
            let ca_files = tls::CaFiles::in_dir(&ca);
            if !ca_files.exist() {
                return Err(format!(
                    "no CA in {} (expected ca.pem and ca.key); create one with: calm ca init --out {}",
                    ca.display(),
                    ca.display()
                ));
            }
            let parent = ca.parent().unwrap_or_else(|| std::path::Path::new("."));
            let (role, name, files) = match (node, client) {
                (Some(name), _) => {
                    let out = out.unwrap_or_else(|| parent.join("nodes"));
                    let files = tls::issue(&ca_files, &name, &out);
                    ("node", name, files)
                }
                (None, Some(name)) => {
                    let out = out.unwrap_or_else(|| parent.join("clients"));
                    let files = tls::issue_client(&ca_files, &name, &out);
                    ("client", name, files)
                }
                (None, None) => return Err("name a role: --node ADDR or --client NAME".into()),
            };
            let files = files.map_err(|e| e.to_string())?;
            println!(
                "issued {role} certificate for {name}: {} (private key: {})",
                files.cert.display(),
                files.key.display()
            );
            Ok(())
        }
    }
}
