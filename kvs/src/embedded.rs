//! The store in-process: a [`Node`]'s workers behind the [`Store`] trait.

use std::future::Future;
use std::sync::Arc;

use crate::error::KvsError;
use crate::metrics::StatsSnapshot;
use crate::node::{Node, NodeConfig};
use crate::op::{Op, OpResult};
use crate::store::Store;

/// The store in-process: the same workers as a server, no network. For applications that
/// embed calm, for tests, and as the baseline of the benchmarks.
///
/// ```
/// use calm_kvs::{EmbeddedStore, NodeConfig, ReadValue, Store};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = EmbeddedStore::start(NodeConfig::default()).unwrap();
/// store.put("greeting", "hello").await.unwrap();
/// store.increment("visits", 2).await.unwrap();
/// assert!(matches!(store.get("greeting").await.unwrap(), Some(ReadValue::Lww { .. })));
/// assert_eq!(store.get("visits").await.unwrap(), Some(ReadValue::Counter { value: 2 }));
/// assert!(store.delete("greeting").await.unwrap());
/// assert_eq!(store.get("greeting").await.unwrap(), None);
/// # });
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    node: Arc<Node>,
}

impl EmbeddedStore {
    /// Starts the workers.
    pub fn start(config: NodeConfig) -> Result<Self, KvsError> {
        Ok(EmbeddedStore {
            node: Arc::new(Node::start(config)?),
        })
    }

    /// The node under this store.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Store for EmbeddedStore {
    fn execute(
        &self,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<Vec<OpResult>, KvsError>> + Send {
        self.node.execute(ops)
    }

    fn stats(&self) -> impl Future<Output = Result<StatsSnapshot, KvsError>> + Send {
        self.node.stats()
    }
}
