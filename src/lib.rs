//! calm: coordination-free cloud programming.
//!
//! calm is named after the CALM theorem (Consistency As Logical Monotonicity): programs
//! whose state only grows in a lattice need no coordination to be consistent. This facade
//! crate re-exports calm's members:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`lattice`] | `calm-lattice` | lattices and delta-state CRDTs, monotone functions, law checkers |
//! | [`kvs`] | `calm-kvs` | the store: typed lattice values on shared-nothing workers, QUIC, client, embedded mode |
//! | `cache` (feature `cache`) | `calm-cache` | per-node caches that keep keys next to functions |
//! | `executor` (feature `executor`) | `calm-executor` | function executors, native and WebAssembly |
//!
//! The default features are the lattices and the store only (feature `resp` adds the Redis
//! port to the nodes an application launches); the command line is the `calm-cli` package.
//!
//! ```
//! use calm::lattice::{Merge, Max};
//! let mut m = Max::new(1);
//! assert!(m.merge(Max::new(2)));
//! ```

/// The byte strings keys, values and members are made of.
pub use bytes::{self, Bytes};
#[cfg(feature = "cache")]
pub use calm_cache as cache;
#[cfg(feature = "executor")]
pub use calm_executor as executor;
pub use calm_kvs as kvs;
pub use calm_lattice as lattice;

pub use calm_kvs::cluster_file;

/// serde, with its derives: an application's own lattice stored as a kind of its own
/// ([`kvs::value::custom`]) derives its encoding with it, through calm alone:
///
/// ```
/// use calm::lattice::{Lattice, Max};
///
/// #[derive(Lattice, Default, Clone, Debug, PartialEq, Eq)]
/// #[derive(calm::serde::Serialize, calm::serde::Deserialize)]
/// #[serde(crate = "calm::serde")]
/// struct Highest {
///     score: Max<u64>,
/// }
///
/// impl calm::kvs::value::CustomLattice for Highest {
///     const KIND: &'static str = "highest";
/// }
/// ```
pub use serde;

/// What an application needs, in one import: the store's types (`calm_kvs`'s prelude) and
/// the lattice traits with `#[derive(Lattice)]`.
///
/// ```
/// use calm::prelude::*;
///
/// #[derive(Lattice, Default, Clone, Debug, PartialEq, Eq)]
/// struct Seen {
///     most: calm::lattice::Max<u64>,
/// }
/// let mut a = Seen::default();
/// assert!(a.merge(Seen { most: calm::lattice::Max::new(3) }));
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = EmbeddedStore::start(NodeConfig::default()).unwrap();
/// store.increment("seen", 3).await.unwrap();
/// # });
/// ```
pub mod prelude {
    pub use calm_kvs::prelude::*;
    pub use calm_lattice::{Atomize, IsBot, IsTop, Lattice, Merge};
}
