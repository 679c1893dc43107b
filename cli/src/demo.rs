//! `calm demo`: replicas of a shopping cart edit apart over a lossy network and converge.
//!
//! Each replica holds an `OrMap<item, PNCounter>`. Every edit produces a delta that is sent
//! to every other replica through a simulated network that drops, duplicates and reorders
//! messages. After the edits, replicas run anti-entropy rounds (each sends its full state to
//! one peer over the same lossy network) until all are equal. Everything is driven by one
//! seeded RNG, so a run is replayed exactly from its seed.

use calm_lattice::{Merge, OrMap, PNCounter, ReplicaId};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

/// The cart every replica holds.
pub type Cart = OrMap<String, PNCounter>;

const ITEMS: &[&str] = &["apple", "bread", "coffee", "dates", "eggs", "figs"];

/// What to simulate.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Number of replicas.
    pub replicas: usize,
    /// Edits made across all replicas.
    pub edits: usize,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a delivered message is delivered twice.
    pub duplicate: f64,
    /// Seed of the run.
    pub seed: u64,
}

/// What happened.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// Messages handed to the network.
    pub sent: usize,
    /// Messages the network lost.
    pub dropped: usize,
    /// Extra copies the network delivered.
    pub duplicated: usize,
    /// Anti-entropy rounds needed after the edits.
    pub repair_rounds: usize,
    /// Whether every replica ended equal.
    pub converged: bool,
    /// The final cart of replica 0, item by item.
    pub cart: Vec<(String, i128)>,
}

/// A message in flight: a delta or a full state, for one replica.
struct Message {
    to: usize,
    state: Cart,
}

/// A network that loses, duplicates and reorders what it carries.
struct LossyNetwork {
    in_flight: Vec<Message>,
    drop: f64,
    duplicate: f64,
    sent: usize,
    dropped: usize,
    duplicated: usize,
}

impl LossyNetwork {
    fn send(&mut self, rng: &mut StdRng, to: usize, state: Cart) {
        self.sent += 1;
        if rng.random_bool(self.drop) {
            self.dropped += 1;
            return;
        }
        if rng.random_bool(self.duplicate) {
            self.duplicated += 1;
            self.in_flight.push(Message {
                to,
                state: state.clone(),
            });
        }
        self.in_flight.push(Message { to, state });
    }

    /// Delivers one message chosen at random (reordering), if any is in flight.
    fn deliver_one(&mut self, rng: &mut StdRng, replicas: &mut [Cart]) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let i = rng.random_range(0..self.in_flight.len());
        let msg = self.in_flight.swap_remove(i);
        replicas[msg.to].merge(msg.state);
        true
    }
}

/// Runs the demo.
pub fn run(config: &DemoConfig) -> DemoReport {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let n = config.replicas.max(1);
    let mut replicas = vec![Cart::default(); n];
    let mut net = LossyNetwork {
        in_flight: Vec::new(),
        drop: config.drop.clamp(0.0, 1.0),
        duplicate: config.duplicate.clamp(0.0, 1.0),
        sent: 0,
        dropped: 0,
        duplicated: 0,
    };

    for _ in 0..config.edits {
        let r = rng.random_range(0..n);
        let id = ReplicaId(r as u64);
        let item = ITEMS
            .choose(&mut rng)
            .copied()
            .unwrap_or("apple")
            .to_string();
        let delta = match rng.random_range(0..10) {
            0 => replicas[r].remove(&item),
            1..=6 => replicas[r].update(id, item, |c| {
                c.increment(id, 1);
            }),
            _ => replicas[r].update(id, item, |c| {
                c.decrement(id, 1);
            }),
        };
        for to in (0..n).filter(|&to| to != r) {
            net.send(&mut rng, to, delta.clone());
        }
        // Deliver some of what is in flight, so edits interleave with delivery.
        for _ in 0..rng.random_range(0..3) {
            net.deliver_one(&mut rng, &mut replicas);
        }
    }
    while net.deliver_one(&mut rng, &mut replicas) {}

    // Anti-entropy: whole states to random peers until everyone agrees. The network keeps
    // losing messages; repair only needs some of them through.
    let mut repair_rounds = 0;
    let max_rounds = 10_000;
    while replicas.iter().any(|r| *r != replicas[0]) && repair_rounds < max_rounds {
        repair_rounds += 1;
        for (from, state) in replicas.iter().enumerate() {
            let to = (from + rng.random_range(1..n.max(2))) % n;
            if to != from {
                net.send(&mut rng, to, state.clone());
            }
        }
        while net.deliver_one(&mut rng, &mut replicas) {}
    }

    let converged = replicas.iter().all(|r| *r == replicas[0]);
    let cart = replicas[0]
        .iter()
        .map(|(item, count)| (item.clone(), count.value()))
        .collect();
    DemoReport {
        sent: net.sent,
        dropped: net.dropped,
        duplicated: net.duplicated,
        repair_rounds,
        converged,
        cart,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lossy_runs_converge_and_replay_from_seed() {
        for seed in 0..20 {
            let config = DemoConfig {
                replicas: 4,
                edits: 200,
                drop: 0.3,
                duplicate: 0.2,
                seed,
            };
            let report = run(&config);
            assert!(report.converged, "seed {seed} did not converge");
            assert!(report.dropped > 0, "seed {seed}: the network lost nothing");
            let again = run(&config);
            assert_eq!(report.cart, again.cart, "seed {seed} did not replay");
        }
    }
}
