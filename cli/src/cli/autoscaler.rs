//! `calm autoscaler`: the autoscaling controller for a cluster it does not start itself
//! (on Kubernetes, it scales the nodes' StatefulSet).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use calm_kvs::autoscale::{Controller, KubernetesProvisioner};
use calm_kvs::cluster::Status;
use calm_kvs::policy::{NodeSample, PolicyConfig};
use calm_kvs::{Client, Store};
use clap::Args;

use super::CliResult;
use super::target::Target;

/// Run the autoscaling controller against a running cluster: it reads the cluster's load
/// from any node and scales a Kubernetes StatefulSet (through `kubectl proxy`).
#[derive(Args, Debug)]
pub struct AutoscalerArgs {
    #[command(flatten)]
    target: Target,
    /// Where `kubectl proxy` serves the Kubernetes API.
    #[arg(long, default_value = "127.0.0.1:8001", value_name = "HOST:PORT")]
    api: SocketAddr,
    /// The namespace of the StatefulSet.
    #[arg(long, default_value = "calm")]
    namespace: String,
    /// The StatefulSet running the calm nodes.
    #[arg(long, default_value = "calm")]
    statefulset: String,
    /// The policy's knobs as TOML (see `calm up --help`); min_nodes and max_nodes bound the
    /// StatefulSet's replicas.
    #[arg(long, value_name = "FILE.toml")]
    policy: Option<PathBuf>,
    /// How often the policy runs, milliseconds (the nodes' --autoscale-ms).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    period_ms: u64,
}

pub use calm_kvs::autoscale::now_ms;

/// The cluster's picture from the first node that answers (see
/// [`picture`](calm_kvs::autoscale::picture)).
pub async fn cluster_samples(
    addrs: &[SocketAddr],
    ca: &calm_kvs::tls::Credentials,
    period_ms: u64,
) -> (Vec<NodeSample>, usize) {
    for addr in addrs {
        let Ok(client) = Client::connect(*addr, ca).await else {
            continue;
        };
        let picture = calm_kvs::autoscale::picture(&client, period_ms * 3).await;
        client.close().await;
        if let Ok(p) = picture {
            return (p.samples, p.members);
        }
    }
    (Vec::new(), 0)
}

/// The key the controller keeps its actions under (a set of "TIME_MS ACTION" lines), so
/// `calm status` shows them from any node.
pub const DECISIONS_KEY: &str = "calm/autoscale/decisions";

/// Logs the controller's actions: on stderr, and in the cluster for `calm status`.
pub async fn record(
    addrs: &[SocketAddr],
    ca: &calm_kvs::tls::Credentials,
    now_ms: u64,
    lines: Vec<String>,
) {
    if lines.is_empty() {
        return;
    }
    for line in &lines {
        eprintln!("autoscale: {line}");
    }
    let members: Vec<bytes::Bytes> = lines
        .iter()
        .map(|l| bytes::Bytes::from(format!("{now_ms:013} {l}")))
        .collect();
    for addr in addrs {
        if let Ok(c) = Client::connect(*addr, ca).await {
            let ok = c.set_add(DECISIONS_KEY, members.clone()).await.is_ok();
            c.close().await;
            if ok {
                return;
            }
        }
    }
}

pub async fn run(args: AutoscalerArgs) -> CliResult<()> {
    let config = match &args.policy {
        Some(p) => super::shared::read_policy(p)?,
        None => PolicyConfig::default(),
    };
    let (mut addrs, ca) = args.target.resolve()?;
    let mut provisioner = KubernetesProvisioner {
        api: args.api,
        namespace: args.namespace.clone(),
        statefulset: args.statefulset.clone(),
        max_replicas: u32::try_from(config.max_nodes).unwrap_or(u32::MAX),
        min_replicas: u32::try_from(config.min_nodes).unwrap_or(1),
    };
    let replicas = provisioner.replicas()?;
    println!(
        "ready: autoscaling {}/{} ({replicas} replicas) every {} ms",
        args.namespace, args.statefulset, args.period_ms
    );
    let mut controller = Controller::new(config);
    loop {
        tokio::select! {
            _ = super::shared::wait_for_stop() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(args.period_ms)) => {}
        }
        // Follow the membership: nodes come and go.
        if let Some(first) = addrs.first().copied()
            && let Ok(c) = Client::connect(first, &ca).await
        {
            if let Ok(members) = c.members().await {
                let now: Vec<SocketAddr> = members
                    .iter()
                    .filter(|m| m.member.status == Status::Alive)
                    .filter_map(|m| m.member.addr.parse().ok())
                    .collect();
                if !now.is_empty() {
                    addrs = now;
                }
            }
            c.close().await;
        }
        let (samples, members) = cluster_samples(&addrs, &ca, args.period_ms).await;
        let now = now_ms();
        let lines = controller.step(now, &samples, members, &mut provisioner);
        record(&addrs, &ca, now, lines).await;
    }
}
