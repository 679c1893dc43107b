//! The cache index executors share: each node's large cached keys and its load, so a
//! call can be placed where its data is.

use super::*;

/// Keys at least this large count for locality (smaller ones cost little to fetch, and
/// leaving them out keeps the index small).
pub(super) const INDEX_MIN_BYTES: u64 = 16 << 10;
/// The most keys one node's index carries.
pub(super) const INDEX_MAX_KEYS: usize = 4096;

impl Executor {
    /// This node's load and large cached keys.
    pub fn index(&self) -> NodeIndex {
        let mut held: Vec<(Bytes, u64)> = self
            .cache
            .index()
            .into_iter()
            .filter(|(_, b)| *b >= INDEX_MIN_BYTES)
            .collect();
        held.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
        held.truncate(INDEX_MAX_KEYS);
        NodeIndex {
            executors: self.config.executors.max(1),
            queued: self.queued.load(Ordering::Relaxed),
            held,
        }
    }

    pub(super) async fn refresh_others(&self) {
        let mut loads = Vec::new();
        for addr in self.cluster.alive_nodes() {
            let name = api::node_name(addr);
            if name == self.me {
                continue;
            }
            let Ok(client) = self.cluster.node(addr).await else {
                continue;
            };
            let asked = tokio::time::timeout(
                Duration::from_secs(1),
                api::request(&client, &ExecRequest::Index),
            )
            .await;
            if let Ok(Ok(ExecResponse::Index(index))) = asked {
                loads.push(NodeLoad {
                    addr: name,
                    executors: index.executors,
                    queued: index.queued,
                    held: index.held.into_iter().collect(),
                });
            }
        }
        *self.others.write().unwrap_or_else(|p| p.into_inner()) = loads;
    }
}
