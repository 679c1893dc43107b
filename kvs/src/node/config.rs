//! How a node runs: [`NodeConfig`], its defaults and its TOML file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::KvsError;
use crate::storage::{Durability, StorageConfig};
use crate::worker::WorkerConfig;

/// How a node runs. Every field has a default; a TOML file can set any of them.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Storage worker threads (default: the number of cores).
    pub threads: usize,
    /// This node's id, unique in its cluster; worker replica ids are derived from it.
    pub node_id: u32,
    /// Virtual nodes per worker on the local ring.
    pub vnodes: u32,
    /// The largest frame accepted from the network, bytes.
    pub max_frame_bytes: usize,
    /// Requests one stream may have in flight before the node stops reading from it.
    pub max_in_flight_per_stream: usize,
    /// Worker behaviour: local replication, gossip period, size limits.
    pub worker: WorkerConfig,
    /// Where the workers keep their logs and cold tiers (`worker-<i>/` each). Without one
    /// the node keeps everything in memory, whatever `storage.durability` says.
    pub data_dir: Option<PathBuf>,
    /// Durability, memory budget and checkpoints.
    pub storage: StorageConfig,
    /// How often the autoscaling policy looks at this node's figures, milliseconds (0: the
    /// policy is off).
    pub autoscale_period_ms: u64,
    /// The autoscaling policy's knobs for hot keys (`hot_sigma`, `hot_factor`,
    /// `hot_workers`, `cool_ms`, `sustain_ms`); a node never decides the number of nodes
    /// (that is the controller's part).
    pub policy: crate::policy::PolicyConfig,
    /// This node is alone in its process (`calm server`), so the process's processor time
    /// is the node's and goes into its load samples.
    pub own_process: bool,
    /// How often changes of subscribed keys are pushed to their subscribers, milliseconds
    /// (see [`subscribe`](crate::subscribe)).
    pub push_period_ms: u64,
    /// Who may do what (see [`acl`](crate::acl)); `None`: every client may do everything.
    pub acl: Option<std::sync::Arc<crate::acl::Acl>>,
    /// Limits on what the keys under a prefix hold on this node (see
    /// [`quota`](crate::storage::quota)); the ACL file's `[[quotas]]`.
    pub quotas: Vec<crate::storage::Quota>,
    /// The application's own lattices this node stores (see
    /// [`custom`](crate::value::custom)); none by default. A node refuses writes and
    /// replicated values of other kinds with [`OpError::UnknownKind`](crate::OpError),
    /// and will not start from a log holding a kind whose code the process lacks.
    pub kinds: crate::value::Kinds,
}

/// The TOML form of [`NodeConfig`]: one flat table, every field optional, unknown fields
/// refused.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NodeConfigFile {
    threads: usize,
    vnodes: u32,
    max_frame_bytes: usize,
    max_in_flight_per_stream: usize,
    local_replication: usize,
    gossip_period_ms: u64,
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_clock_drift_ms: u64,
    durability: Durability,
    flush_ms: u64,
    memory_budget: Option<u64>,
    checkpoint_log_bytes: u64,
    /// A `[policy]` table.
    policy: crate::policy::PolicyConfig,
}

impl Default for NodeConfigFile {
    fn default() -> Self {
        let n = NodeConfig::default();
        NodeConfigFile {
            threads: n.threads,
            vnodes: n.vnodes,
            max_frame_bytes: n.max_frame_bytes,
            max_in_flight_per_stream: n.max_in_flight_per_stream,
            local_replication: n.worker.local_replication,
            gossip_period_ms: n.worker.gossip_period_ms,
            max_key_bytes: n.worker.max_key_bytes,
            max_value_bytes: n.worker.max_value_bytes,
            max_clock_drift_ms: n.worker.max_clock_drift_ms,
            durability: n.storage.durability,
            flush_ms: n.storage.flush_ms,
            memory_budget: n.storage.memory_budget,
            checkpoint_log_bytes: n.storage.checkpoint_log_bytes,
            policy: n.policy,
        }
    }
}

impl From<NodeConfigFile> for NodeConfig {
    fn from(f: NodeConfigFile) -> Self {
        NodeConfig {
            threads: f.threads,
            vnodes: f.vnodes,
            max_frame_bytes: f.max_frame_bytes,
            max_in_flight_per_stream: f.max_in_flight_per_stream,
            worker: WorkerConfig {
                local_replication: f.local_replication,
                gossip_period_ms: f.gossip_period_ms,
                max_key_bytes: f.max_key_bytes,
                max_value_bytes: f.max_value_bytes,
                max_clock_drift_ms: f.max_clock_drift_ms,
            },
            storage: StorageConfig {
                durability: f.durability,
                flush_ms: f.flush_ms,
                memory_budget: f.memory_budget,
                checkpoint_log_bytes: f.checkpoint_log_bytes,
                ..StorageConfig::default()
            },
            policy: f.policy,
            ..NodeConfig::default()
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            node_id: 0,
            vnodes: 64,
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME,
            max_in_flight_per_stream: 256,
            worker: WorkerConfig::default(),
            data_dir: None,
            storage: StorageConfig::default(),
            autoscale_period_ms: 0,
            policy: crate::policy::PolicyConfig::default(),
            own_process: false,
            push_period_ms: 5,
            acl: None,
            quotas: Vec::new(),
            kinds: crate::value::Kinds::default(),
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; fields it leaves out keep their defaults, unknown fields are an
    /// error (a typo should not be silently ignored).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, KvsError> {
        let text = std::fs::read_to_string(path).map_err(|e| KvsError::io(path, e))?;
        let file: NodeConfigFile = toml::from_str(&text)
            .map_err(|e| KvsError::Config(format!("{}: {e}", path.display())))?;
        let config = NodeConfig::from(file);
        config.validate()?;
        Ok(config)
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), KvsError> {
        let fail = |m: String| Err(KvsError::Config(m));
        if self.threads == 0 || self.threads > 1024 {
            return fail(format!(
                "threads = {} must be between 1 and 1024",
                self.threads
            ));
        }
        if self.worker.local_replication == 0 || self.worker.local_replication > self.threads {
            return fail(format!(
                "local_replication = {} must be between 1 and threads ({})",
                self.worker.local_replication, self.threads
            ));
        }
        if self.worker.gossip_period_ms == 0 {
            return fail("gossip_period_ms must be at least 1".into());
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > crate::wire::DEFAULT_MAX_FRAME {
            return fail(format!(
                "max_frame_bytes = {} must be between 1024 and {}",
                self.max_frame_bytes,
                crate::wire::DEFAULT_MAX_FRAME
            ));
        }
        if self.max_in_flight_per_stream == 0 {
            return fail("max_in_flight_per_stream must be at least 1".into());
        }
        if self.storage.flush_ms == 0 || self.storage.flush_ms > 60_000 {
            return fail(format!(
                "flush_ms = {} must be between 1 and 60000",
                self.storage.flush_ms
            ));
        }
        if self.storage.memory_budget.is_some() && self.storage.durability == Durability::Memory {
            return fail(
                "memory_budget needs a disk to move cold keys to: use durability async or sync"
                    .into(),
            );
        }
        if self.storage.checkpoint_log_bytes < 4096 {
            return fail("checkpoint_log_bytes must be at least 4096".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::worker::WorkerConfig;

    fn parse(text: &str) -> Result<NodeConfig, KvsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::from_toml_file(&path)
    }

    #[test]
    fn toml_sets_fields_and_keeps_defaults_for_the_rest() {
        let config = parse("threads = 2\nlocal_replication = 2\ngossip_period_ms = 20\n").unwrap();
        assert_eq!(config.threads, 2);
        assert_eq!(config.worker.local_replication, 2);
        assert_eq!(config.worker.gossip_period_ms, 20);
        assert_eq!(config.policy, crate::policy::PolicyConfig::default());
        let with_policy = parse("threads = 1\n[policy]\nhot_factor = 5\n").unwrap();
        assert_eq!(with_policy.policy.hot_factor, 5);
        assert_eq!(with_policy.policy.cool_ms, 30_000);
        assert!(parse("[policy]\nhot_factr = 5\n").is_err());
        assert_eq!(
            config.worker.max_key_bytes,
            WorkerConfig::default().max_key_bytes
        );
        assert_eq!(
            config.max_frame_bytes,
            NodeConfig::default().max_frame_bytes
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let typo = parse("thread = 2\n").unwrap_err().to_string();
        assert!(typo.contains("thread"), "{typo}");
        let nonsense = parse("threads = 2\nlocal_replication = 3\n")
            .unwrap_err()
            .to_string();
        assert!(nonsense.contains("local_replication"), "{nonsense}");
        let wrong_type = parse("threads = \"many\"\n").unwrap_err().to_string();
        assert!(wrong_type.contains("threads"), "{wrong_type}");
        let missing = NodeConfig::from_toml_file(std::path::Path::new("/nonexistent.toml"));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("/nonexistent.toml")
        );
    }
}
