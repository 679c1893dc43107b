//! A counter key's state, held in the entry while one replica wrote it.

use calm_lattice::{CausalContext, Dot, GCounter, Merge, PNCounter, ReplicaId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Resettable;

/// The state of a counter key: an increment/decrement counter ([`PNCounter`]) in a cell a
/// delete resets ([`Resettable`]). While one replica wrote it and it was never reset (the
/// usual case) it is held in 32 bytes with no allocation; otherwise as the whole cell
/// behind a pointer. The form follows from the state alone, so both compare as the state
/// does, and it encodes as `Resettable<PNCounter>` either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter(Form);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Form {
    /// A cell written only by `replica`: its writes `1..=writes` seen, the last one
    /// surviving with counts `up` and `down` (each 0 when absent). `writes == 0` is the
    /// empty counter (and then every field is 0).
    Lone {
        replica: ReplicaId,
        writes: u64,
        up: u64,
        down: u64,
    },
    /// Anything else.
    Full(Box<Resettable<PNCounter>>),
}

impl Default for Counter {
    fn default() -> Self {
        Counter(Form::Lone {
            replica: ReplicaId(0),
            writes: 0,
            up: 0,
            down: 0,
        })
    }
}

fn g_counter(replica: ReplicaId, n: u64) -> GCounter {
    if n == 0 {
        GCounter::default()
    } else {
        GCounter::new_from([(replica, n)])
    }
}

impl Counter {
    /// The cell this counter is.
    pub fn to_cell(&self) -> Resettable<PNCounter> {
        match &self.0 {
            Form::Lone { writes: 0, .. } => Resettable::default(),
            &Form::Lone {
                replica,
                writes,
                up,
                down,
            } => {
                let counter = PNCounter::new(g_counter(replica, up), g_counter(replica, down));
                Resettable::from_writes(
                    [((), Dot::new(replica, writes), counter)],
                    CausalContext::up_to(replica, writes),
                )
            }
            Form::Full(cell) => (**cell).clone(),
        }
    }

    /// The cell this counter is, taken out of it.
    fn into_cell(self) -> Resettable<PNCounter> {
        match self.0 {
            Form::Full(cell) => *cell,
            Form::Lone { .. } => self.to_cell(),
        }
    }

    /// The counter holding `cell`, in the entry when it can be.
    pub fn from_cell(cell: Resettable<PNCounter>) -> Counter {
        Counter::lone_of(&cell).unwrap_or_else(|| Counter(Form::Full(Box::new(cell))))
    }

    /// `cell` held in the entry, if it can be.
    fn lone_of(cell: &Resettable<PNCounter>) -> Option<Counter> {
        if *cell == Resettable::default() {
            return Some(Counter::default());
        }
        if let Some((replica, writes)) = cell.context().only_prefix() {
            let mut writes_of = cell.writes_of(&());
            if let (Some((dot, counter)), None) = (writes_of.next(), writes_of.next())
                && dot == Dot::new(replica, writes)
            {
                let lone = Counter(Form::Lone {
                    replica,
                    writes,
                    up: counter.increments().count_of(replica),
                    down: counter.decrements().count_of(replica),
                });
                // Held so only if it is exactly this cell (no other replica's counts, no
                // count of 0 recorded).
                if lone.to_cell() == *cell {
                    return Some(lone);
                }
            }
        }
        None
    }

    /// Changes the cell with `change` (as `replica`'s write); returns the delta. A cell
    /// behind its pointer is changed there, then held in the entry if it now can be.
    fn update(
        &mut self,
        change: impl FnOnce(&mut Resettable<PNCounter>) -> Resettable<PNCounter>,
    ) -> Counter {
        let delta = match &mut self.0 {
            Form::Full(cell) => {
                let delta = change(cell);
                if let Some(lone) = Counter::lone_of(cell) {
                    *self = lone;
                }
                delta
            }
            Form::Lone { .. } => {
                let mut cell = self.to_cell();
                let delta = change(&mut cell);
                *self = Counter::from_cell(cell);
                delta
            }
        };
        Counter::from_cell(delta)
    }

    /// Adds `by` (subtracts when negative) as `replica`'s write; returns the delta.
    pub fn add(&mut self, replica: ReplicaId, by: i64) -> Counter {
        self.update(|cell| {
            cell.update(replica, (), |c| {
                if by >= 0 {
                    c.increment(replica, by.unsigned_abs());
                } else {
                    c.decrement(replica, by.unsigned_abs());
                }
            })
        })
    }

    /// Resets it as far as this replica has seen; returns the delta.
    pub fn reset(&mut self) -> Counter {
        self.update(|cell| cell.remove(&()))
    }

    /// Whether `replica` wrote under its causal context.
    pub fn has_seen(&self, replica: ReplicaId) -> bool {
        match &self.0 {
            Form::Lone { writes: 0, .. } => false,
            Form::Lone { replica: r, .. } => *r == replica,
            Form::Full(cell) => cell.context().has_seen(replica),
        }
    }

    /// The count, or `None` when it was never written or was reset since.
    pub fn value(&self) -> Option<i128> {
        match &self.0 {
            Form::Lone { writes: 0, .. } => None,
            &Form::Lone { up, down, .. } => Some(i128::from(up) - i128::from(down)),
            Form::Full(cell) => cell.get_with(&(), PNCounter::value),
        }
    }

    /// Whether it holds a count (see [`value`](Self::value)).
    pub fn is_set(&self) -> bool {
        match &self.0 {
            Form::Lone { writes, .. } => *writes > 0,
            Form::Full(cell) => cell.contains_key(&()),
        }
    }
}

impl Merge for Counter {
    fn merge(&mut self, other: Self) -> bool {
        if let Form::Lone { writes: 0, .. } = self.0 {
            let changed = other != *self;
            *self = other;
            return changed;
        }
        if let Form::Lone { writes: 0, .. } = other.0 {
            return false;
        }
        match &mut self.0 {
            Form::Full(cell) => {
                let changed = cell.merge(other.into_cell());
                if changed && let Some(lone) = Counter::lone_of(cell) {
                    *self = lone;
                }
                changed
            }
            Form::Lone { .. } => {
                let mut cell = self.to_cell();
                let changed = cell.merge(other.into_cell());
                if changed {
                    *self = Counter::from_cell(cell);
                }
                changed
            }
        }
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Form::Full(cell) => cell.serialize(s),
            Form::Lone { .. } => self.to_cell().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Resettable::<PNCounter>::deserialize(d).map(Counter::from_cell)
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;

    /// A counter and the cell it stands for, changed alike by random writes, resets and
    /// merges among three replicas: they read, compare and encode alike, and a counter
    /// written by one replica and never reset is held without an allocation.
    #[derive(Clone, Debug)]
    enum Step {
        Add(usize, u64, i64),
        Reset(usize),
        Sync(usize, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..3usize, 1..3u64, -5..6i64).prop_map(|(at, r, by)| Step::Add(at, r, by)),
            1 => (0..3usize).prop_map(Step::Reset),
            2 => (0..3usize, 0..3usize).prop_map(|(a, b)| Step::Sync(a, b)),
        ]
    }

    fn encoded<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    proptest! {
        #[test]
        fn behaves_as_its_cell(steps in prop::collection::vec(step(), 0..40)) {
            let mut counters: Vec<Counter> = vec![Counter::default(); 3];
            let mut cells: Vec<Resettable<PNCounter>> = vec![Resettable::default(); 3];
            for step in steps {
                match step {
                    Step::Add(at, r, by) => {
                        let delta = counters[at].add(ReplicaId(r), by);
                        let cell_delta = cells[at].update(ReplicaId(r), (), |c| {
                            if by >= 0 {
                                c.increment(ReplicaId(r), by.unsigned_abs());
                            } else {
                                c.decrement(ReplicaId(r), by.unsigned_abs());
                            }
                        });
                        prop_assert_eq!(delta.to_cell(), cell_delta);
                    }
                    Step::Reset(at) => {
                        let delta = counters[at].reset();
                        prop_assert_eq!(delta.to_cell(), cells[at].remove(&()));
                    }
                    Step::Sync(from, to) => {
                        let (c, cell) = (counters[from].clone(), cells[from].clone());
                        let changed = counters[to].merge(c);
                        prop_assert_eq!(changed, cells[to].merge(cell));
                    }
                }
                for (counter, cell) in counters.iter().zip(&cells) {
                    prop_assert_eq!(&counter.to_cell(), cell);
                    prop_assert_eq!(counter, &Counter::from_cell(cell.clone()));
                    prop_assert_eq!(counter.value(), cell.get(&()).map(|c| c.value()));
                    prop_assert_eq!(counter.is_set(), cell.contains_key(&()));
                    for r in 0..4 {
                        prop_assert_eq!(counter.has_seen(ReplicaId(r)), cell.context().has_seen(ReplicaId(r)));
                    }
                    prop_assert_eq!(encoded(counter), encoded(cell));
                    let (back, _): (Counter, usize) = bincode::serde::decode_from_slice(
                        &encoded(cell), bincode::config::standard()).unwrap();
                    prop_assert_eq!(&back, counter);
                }
            }
        }
    }

    #[test]
    fn one_writer_is_held_in_place() {
        assert_eq!(std::mem::size_of::<Counter>(), 40);
        let mut c = Counter::default();
        for by in [5, -2, 7] {
            c.add(ReplicaId(9), by);
        }
        assert!(
            matches!(
                c.0,
                Form::Lone {
                    writes: 3,
                    up: 12,
                    down: 2,
                    ..
                }
            ),
            "{c:?}"
        );
        assert_eq!(c.value(), Some(10));
        // Another replica's write, or a reset, needs the whole cell.
        let mut other = c.clone();
        other.add(ReplicaId(4), 1);
        assert!(matches!(other.0, Form::Full(_)));
        assert_eq!(other.value(), Some(11));
        c.reset();
        assert!(matches!(c.0, Form::Full(_)));
        assert_eq!(c.value(), None);
    }
}
