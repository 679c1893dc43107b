//! Where each function of a call runs: the sans-IO placement policy.
//!
//! For each function the scheduler looks at every node's executors: nodes whose load
//! (calls queued or running per executor) is at or above the busy threshold are skipped
//! (load backoff); with probability `explore` a random remaining node is picked, so the
//! picture of where data is keeps being tested; otherwise the node whose cache holds the
//! most bytes of the keys the call references wins (locality), then the node of the
//! function's predecessor (its input is already there), then the least loaded. Randomness
//! is given as numbers, so a decision is a pure function of its inputs.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What the scheduler knows of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// The node's address.
    pub addr: String,
    /// Its executors.
    pub executors: usize,
    /// Calls queued or running there.
    pub queued: usize,
    /// Keys its cache holds, with their bytes.
    pub held: HashMap<Bytes, u64>,
}

impl NodeLoad {
    fn load(&self) -> f64 {
        self.queued as f64 / self.executors.max(1) as f64
    }
}

/// The scheduler's knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The chance of a random placement (default 0.1).
    pub explore: f64,
    /// Calls per executor at which a node counts as busy and is skipped (default 4).
    pub busy_at: f64,
    /// Whether referenced bytes count at all (turned off to measure what locality gains).
    pub locality: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            explore: 0.1,
            busy_at: 4.0,
            locality: true,
        }
    }
}

/// Why a node was picked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The only node.
    Only,
    /// Its cache held the most referenced bytes.
    Locality {
        /// The bytes it held.
        bytes: u64,
    },
    /// A random pick (exploration).
    Explore,
    /// Where the function's predecessor ran.
    Predecessor,
    /// The least loaded node.
    LeastLoaded,
    /// Every node was busy: the least loaded anyway.
    AllBusy,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Only => f.write_str("the only node"),
            Reason::Locality { bytes } => write!(f, "its cache holds {bytes} referenced bytes"),
            Reason::Explore => f.write_str("exploration"),
            Reason::Predecessor => f.write_str("its input is there"),
            Reason::LeastLoaded => f.write_str("least loaded"),
            Reason::AllBusy => f.write_str("every node busy; least loaded"),
        }
    }
}

/// Picks a node for a function referencing `refs` whose predecessor ran on `pred` (if
/// any). `nodes[0]` is the node deciding (the call's entry): it wins ties, so an idle
/// cluster runs a call where it arrived. `roll` in [0, 1) decides exploration; `pick`
/// breaks other ties and picks explored nodes. Returns the index into `nodes` (which must
/// not be empty) and why.
pub fn place(
    config: &SchedulerConfig,
    nodes: &[NodeLoad],
    refs: &[Bytes],
    pred: Option<&str>,
    roll: f64,
    pick: usize,
) -> (usize, Reason) {
    if nodes.len() <= 1 {
        return (0, Reason::Only);
    }
    let free: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].load() < config.busy_at)
        .collect();
    let least_loaded = |among: &[usize]| -> usize {
        let best = among
            .iter()
            .map(|&i| nodes[i].load())
            .fold(f64::INFINITY, f64::min);
        let ties: Vec<usize> = among
            .iter()
            .copied()
            .filter(|&i| nodes[i].load() <= best)
            .collect();
        // The entry node (index 0) wins a tie: no hop. Otherwise `pick` spreads the load.
        if ties.contains(&0) {
            0
        } else {
            ties[pick % ties.len()]
        }
    };
    if free.is_empty() {
        let all: Vec<usize> = (0..nodes.len()).collect();
        return (least_loaded(&all), Reason::AllBusy);
    }
    if roll < config.explore {
        return (free[pick % free.len()], Reason::Explore);
    }
    if config.locality && !refs.is_empty() {
        let held = |i: usize| -> u64 {
            refs.iter()
                .filter_map(|k| nodes[i].held.get(k))
                .sum::<u64>()
        };
        let best = free.iter().map(|&i| held(i)).max().unwrap_or(0);
        if best > 0 {
            let ties: Vec<usize> = free.iter().copied().filter(|&i| held(i) == best).collect();
            return (least_loaded(&ties), Reason::Locality { bytes: best });
        }
    }
    if let Some(p) = pred
        && let Some(&i) = free.iter().find(|&&i| nodes[i].addr == p)
    {
        return (i, Reason::Predecessor);
    }
    (least_loaded(&free), Reason::LeastLoaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str, queued: usize, held: &[(&str, u64)]) -> NodeLoad {
        NodeLoad {
            addr: addr.into(),
            executors: 1,
            queued,
            held: held
                .iter()
                .map(|(k, b)| (Bytes::copy_from_slice(k.as_bytes()), *b))
                .collect(),
        }
    }

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    const NO_EXPLORE: f64 = 0.99;

    #[test]
    fn the_node_holding_the_most_referenced_bytes_wins() {
        let c = SchedulerConfig::default();
        let nodes = [
            node("a", 0, &[("x", 10)]),
            node("b", 1, &[("x", 10), ("y", 8_000_000)]),
            node("c", 0, &[]),
        ];
        let (i, why) = place(&c, &nodes, &[k("x"), k("y")], None, NO_EXPLORE, 0);
        assert_eq!((i, why), (1, Reason::Locality { bytes: 8_000_010 }));
    }

    #[test]
    fn busy_nodes_are_skipped_even_with_the_data() {
        let c = SchedulerConfig::default();
        let nodes = [node("a", 9, &[("y", 100)]), node("b", 0, &[])];
        assert_eq!(
            place(&c, &nodes, &[k("y")], None, NO_EXPLORE, 0),
            (1, Reason::LeastLoaded)
        );
        let all_busy = [node("a", 9, &[]), node("b", 5, &[])];
        assert_eq!(
            place(&c, &all_busy, &[], None, NO_EXPLORE, 0),
            (1, Reason::AllBusy)
        );
    }

    #[test]
    fn exploration_and_predecessors_and_locality_off() {
        let c = SchedulerConfig::default();
        let nodes = [
            node("a", 0, &[("y", 100)]),
            node("b", 0, &[]),
            node("c", 0, &[]),
        ];
        assert_eq!(
            place(&c, &nodes, &[k("y")], None, 0.05, 2),
            (2, Reason::Explore)
        );
        assert_eq!(
            place(&c, &nodes, &[], Some("b"), NO_EXPLORE, 0),
            (1, Reason::Predecessor)
        );
        let off = SchedulerConfig {
            locality: false,
            ..c
        };
        // Without locality, idle nodes tie and the entry node wins; among the others
        // `pick` decides.
        assert_eq!(
            place(&off, &nodes, &[k("y")], None, NO_EXPLORE, 4),
            (0, Reason::LeastLoaded)
        );
        let busy_entry = [node("a", 2, &[]), node("b", 0, &[]), node("c", 0, &[])];
        assert_eq!(
            place(&off, &busy_entry, &[], None, NO_EXPLORE, 3),
            (2, Reason::LeastLoaded)
        );
        assert_eq!(place(&c, &nodes[..1], &[], None, 0.0, 0), (0, Reason::Only));
    }
}
