//! `calm ca`: the cluster's certificate authority.

use std::path::PathBuf;

use calm_kvs::tls;
use clap::Subcommand;

use super::CliResult;

/// Make a cluster CA and node certificates (for clusters across machines).
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new cluster CA (ca.pem, and ca.key: keep it private).
    Init {
        /// Folder to write the CA into.
        #[arg(long, default_value = "calm-data/ca", value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a node certificate signed by the CA (NAME.pem, NAME.key).
    Issue {
        /// Folder of the CA (ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node's name: a host name or an IP address it is reached by.
        #[arg(long)]
        name: String,
        /// Folder to write the certificate and key into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
        CaCommand::Issue { ca, name, out } => {
            let ca_files = tls::CaFiles::in_dir(&ca);
            if !ca_files.exist() {
                return Err(format!(
                    "no CA in {} (expected ca.pem and ca.key); create one with: calm ca init --out {}",
                    ca.display(),
                    ca.display()
                ));
            }
            let files = tls::issue(&ca_files, &name, &out).map_err(|e| e.to_string())?;
            println!(
                "issued {}: {} (private key: {})",
                name,
                files.cert.display(),
                files.key.display()
            );
            Ok(())
        }
    }
}
