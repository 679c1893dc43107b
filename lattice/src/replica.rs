//! Replica identities.

/// Names one replica (a process, a device, a storage worker) that mutates CRDT state.
///
/// Every replica that writes must have its own id: CRDTs use it to tell concurrent writes
/// apart and to break ties the same way everywhere.
///
/// ```
/// use calm_lattice::ReplicaId;
/// assert!(ReplicaId(1) < ReplicaId(2));
/// assert_eq!(ReplicaId::from(7), ReplicaId(7));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct ReplicaId(pub u64);

impl From<u64> for ReplicaId {
    fn from(id: u64) -> Self {
        ReplicaId(id)
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}
