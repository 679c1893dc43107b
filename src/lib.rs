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
//!
//! ```
//! use calm::lattice::{Merge, Max};
//! let mut m = Max::new(1);
//! assert!(m.merge(Max::new(2)));
//! ```

/// The byte strings keys, values and members are made of.
pub use bytes::{self, Bytes};
pub use calm_kvs as kvs;
pub use calm_lattice as lattice;

pub use calm_kvs::cluster_file;

pub mod demo;
