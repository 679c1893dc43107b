//! calm's store: typed lattice values on shared-nothing workers, served over QUIC.
//!
//! **Start here**: `use calm_kvs::prelude::*;` brings the handful of types an application
//! uses — the [`Store`] trait and its three stores ([`EmbeddedStore`] in this process,
//! [`ClusterClient`] routed to each key's owners, [`Client`] through one node), batches of
//! [`Op`]s and their [`ReadValue`] answers, [`KvsError`], [`NodeConfig`], and
//! [`TestCluster`](launch::TestCluster) for an application's own tests:
//!
//! ```
//! use calm_kvs::prelude::*;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = EmbeddedStore::start(NodeConfig::default()).unwrap();
//! // or a cluster: ClusterClient::connect_file("calm-data/cluster.toml").await?
//! store.put("greeting", "hello").await.unwrap();
//! store.increment("visits", 2).await.unwrap();
//! store.orset_add("cart", ["milk", "eggs"]).await.unwrap();
//! let visits = store.get("visits").await.unwrap();
//! assert_eq!(visits.and_then(|v| v.as_counter()), Some(2));
//! let answers = store.execute(vec![Op::get("greeting"), Op::incr("visits", 1)]).await.unwrap();
//! assert_eq!(answers.len(), 2);
//! # });
//! ```
//!
//! The rest is how the store is built, for those who extend or study it.
//!
//! A key (bytes) holds one typed lattice value — last-writer-wins bytes, sets, counters,
//! max registers, priorities, causal registers — whose kind is fixed by its first write.
//! Every write merges, so replicas converge without coordination. See [`value`] for the
//! kinds and how each deletes.
//!
//! - [`Worker`]: the sans-IO core that owns a shard of keys;
//! - [`Node`]: the workers on their own threads, reached only by message;
//! - [`cluster`]: membership, failure detection, replication between nodes, anti-entropy
//!   (the sans-IO [`ClusterAgent`](cluster::ClusterAgent) and its runtime);
//! - [`storage`]: the write-ahead log, the disk tier, durability settings and recovery;
//! - `resp` (feature `resp`): the Redis protocol front-end; [`hot_keys`]: per-key access
//!   frequency in fixed memory; [`policy`]: the autoscaling policy's sans-IO core and the
//!   load lattice nodes gossip; [`autoscale`]: the controller and provisioners that add and
//!   remove nodes;
//! - [`launch`]: a whole node in one call; [`server`]: the QUIC listener; [`service`]:
//!   other request handlers a node serves (function executors); [`subscribe`]: pushes of
//!   changed keys to the caches that hold them;
//! - [`tls`]: the cluster CA, certificates with their roles, and the
//!   [`Credentials`](tls::Credentials) clients connect with (every connection is mutual
//!   TLS); [`acl`]: users and their rights per key prefix; [`wire`]: frames and the codec;
//!   [`protocol`]: the messages; [`fault_proxy`]: partitions for tests and experiments.

/// What an application needs, in one import: `use calm_kvs::prelude::*;`.
pub mod prelude {
    pub use crate::cluster_file::{ClusterFile, ClusterFileError};
    pub use crate::launch::TestCluster;
    pub use crate::tls::Credentials;
    pub use crate::value::{CustomLattice, Kinds};
    pub use crate::{
        Bytes, Client, ClusterClient, EmbeddedStore, KvsError, NodeConfig, Op, OpError, ReadValue,
        Reply, Store, Write,
    };
}

pub mod acl;
pub mod autoscale;
pub mod client;
pub mod cluster;
pub mod cluster_client;
pub mod cluster_file;
pub mod cluster_runtime;
pub mod coordinator;
pub mod embedded;
pub mod error;
pub mod fault_proxy;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hot_keys;
pub mod launch;
pub mod metrics;
pub mod node;
pub mod op;
pub mod policy;
pub mod protocol;
pub mod request;
#[cfg(feature = "resp")]
pub mod resp;
pub mod ring;
pub mod server;
pub mod service;
pub mod storage;
pub mod store;
pub mod subscribe;
pub mod tasks;
pub mod tls;
pub mod value;
pub mod wire;
pub mod worker;

/// The byte strings keys, values and members are made of.
pub use bytes::{self, Bytes};
pub use client::Client;
pub use cluster_client::ClusterClient;
pub use embedded::EmbeddedStore;
pub use error::KvsError;
pub use metrics::{Metrics, OpStats, StatsSnapshot, WorkerStats};
pub use node::{Node, NodeConfig};
pub use op::{Ack, Op, OpError, OpKind, OpResult, QuotaMeasure, Reply};
pub use protocol::{
    MemberStatus, ProtocolError, Request, RequestBody, Response, ResponseBody, RoutingTable,
};
pub use ring::HashRing;
pub use store::Store;
pub use value::{Kind, KindMismatch, ReadValue, Score, Value, Write};
pub use worker::{GossipBatch, Worker, WorkerConfig};
