//! Probes: reads of only what a command needs from a key — whether some members are there,
//! or how many there are — so that answering `SADD` or `HGET` on a collection of a million
//! members costs a lookup, not a copy of the collection.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Kind, Score, Value, field_value, index_range, score_value};

/// What to read of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// The named members of a set, fields of a hash or members of a sorted set: whether
    /// each is there, with a field's value or a member's score. (A key of another kind
    /// answers "not there" for each.)
    Members(Vec<Bytes>),
    /// How many members, fields or elements the key holds; 1 for a key holding one value.
    Len,
    /// The elements of a list from `start` to `stop` (inclusive; negative counts from the
    /// end), as `LRANGE` reads them. (A key of another kind answers none.)
    Range {
        /// The first position.
        start: i64,
        /// The last position.
        stop: i64,
    },
}

/// What a [`Probe`] found in a key that exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probed {
    /// The kind of value the key holds.
    pub kind: Kind,
    /// The answer to the probe.
    pub answer: Answer,
}

/// The answer to a [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// For [`Probe::Members`]: one entry per member named, in order.
    Members(Vec<Option<Found>>),
    /// For [`Probe::Len`].
    Len(u64),
    /// For [`Probe::Range`]: the elements, in order.
    Values(Vec<Bytes>),
}

/// A member a [`Probe::Members`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Found {
    /// A member of a set.
    Member,
    /// A field of a hash, and what it reads as.
    Field(Bytes),
    /// A member of a sorted set, and its score.
    Score(Score),
}

impl Probed {
    /// The entries of a [`Probe::Members`] answer (none for a length).
    pub fn found(&self) -> &[Option<Found>] {
        match &self.answer {
            Answer::Members(found) => found,
            _ => &[],
        }
    }

    /// The length a [`Probe::Len`] answered (0 for another probe).
    pub fn length(&self) -> u64 {
        match self.answer {
            Answer::Len(n) => n,
            _ => 0,
        }
    }

    /// The elements a [`Probe::Range`] answered (none for another probe).
    pub fn values(&self) -> &[Bytes] {
        match &self.answer {
            Answer::Values(values) => values,
            _ => &[],
        }
    }
}

impl Value {
    /// Answers `probe` as [`read_at`](Self::read_at) would, without copying the value:
    /// `None` when the key reads as absent at `now_ms`.
    pub fn probe(&self, now_ms: u64, probe: &Probe) -> Option<Probed> {
        if !self.is_live(now_ms) {
            return None;
        }
        let value = self.inner();
        let answer = match probe {
            Probe::Len => Answer::Len(value.len()),
            Probe::Members(named) => Answer::Members(
                named
                    .iter()
                    .map(|m| value.find(m))
                    .collect::<Vec<Option<Found>>>(),
            ),
            Probe::Range { start, stop } => Answer::Values(match value {
                Value::List(v) => match index_range(v.len(), *start, *stop) {
                    Some((a, b)) => v.values().skip(a).take(b - a + 1).cloned().collect(),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            }),
        };
        Some(Probed {
            kind: value.kind(),
            answer,
        })
    }

    /// The number of members, fields or elements of a visible value (not a generation or
    /// an expiring value: see [`inner`](Self::inner)).
    fn len(&self) -> u64 {
        let n = match self {
            Value::Set(v) => v.get(&()).map_or(0, |s| s.len().into_reveal()),
            Value::OrSet(v) => v.len(),
            Value::Hash(v) => v.len(),
            Value::SortedSet(v) => v.len(),
            Value::List(v) => v.len(),
            _ => 1,
        };
        n as u64
    }

    /// `member` in a visible collection.
    fn find(&self, member: &Bytes) -> Option<Found> {
        match self {
            Value::Set(v) => v
                .get(&())?
                .contains(member)
                .into_reveal()
                .then_some(Found::Member),
            Value::OrSet(v) => v.contains(member).then_some(Found::Member),
            Value::Hash(v) => Some(Found::Field(field_value(&v.get(member)?)?)),
            Value::SortedSet(v) => Some(Found::Score(score_value(&v.get(member)?)?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod test {
    use calm_lattice::{Hlc, ReplicaId, Stamp};

    use super::*;
    use crate::value::{ReadValue, Write, WriteCtx, index_range};

    fn b(i: u8) -> Bytes {
        Bytes::from(format!("m{i}"))
    }

    /// A write of one of the collection kinds (and a string), to members `m0`..`m3`.
    fn write(kind: u8, what: u8, m: u8, x: i8) -> Write {
        let score = Score::new(f64::from(x)).unwrap();
        match (kind % 6, what % 3) {
            (0, _) => Write::Lww(b(m)),
            (1, 0) => Write::SetAdd(vec![b(m)]),
            (1, _) => Write::SetAdd(vec![b(m), b(m + 1)]),
            (2, 0 | 1) => Write::OrSetAdd(vec![b(m)]),
            (2, _) => Write::OrSetRemove(vec![b(m)]),
            (3, 0) => Write::HashSet(vec![(b(m), b(x as u8))]),
            (3, 1) => Write::HashIncr {
                field: b(m),
                by: i64::from(x),
            },
            (3, _) => Write::HashDel(vec![b(m)]),
            (4, 0) => Write::ZAdd(vec![(b(m), score)]),
            (4, 1) => Write::ZIncr {
                member: b(m),
                by: score,
            },
            (4, _) => Write::ZRem(vec![b(m)]),
            (_, 0 | 1) => Write::ListPush {
                front: x < 0,
                values: vec![b(m)],
            },
            (_, _) => Write::ListRem {
                count: 0,
                value: b(m),
            },
        }
    }

    /// What a whole read says a probe should answer.
    fn expected(read: Option<ReadValue>, probe: &Probe) -> Option<Probed> {
        let read = read?;
        let kind = read.kind();
        let answer = match probe {
            Probe::Len => Answer::Len(match &read {
                ReadValue::Set { members } | ReadValue::OrSet { members } => members.len(),
                ReadValue::Hash { fields } => fields.len(),
                ReadValue::SortedSet { members } => members.len(),
                ReadValue::List { values } => values.len(),
                _ => 1,
            } as u64),
            Probe::Range { start, stop } => Answer::Values(match &read {
                ReadValue::List { values } => match index_range(values.len(), *start, *stop) {
                    Some((a, b)) => values[a..=b].to_vec(),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            }),
            Probe::Members(named) => Answer::Members(
                named
                    .iter()
                    .map(|m| match &read {
                        ReadValue::Set { members } | ReadValue::OrSet { members } => {
                            members.contains(m).then_some(Found::Member)
                        }
                        ReadValue::Hash { fields } => fields
                            .iter()
                            .find(|(f, _)| f == m)
                            .map(|(_, v)| Found::Field(v.clone())),
                        ReadValue::SortedSet { members } => members
                            .iter()
                            .find(|(x, _)| x == m)
                            .map(|(_, s)| Found::Score(*s)),
                        _ => None,
                    })
                    .collect(),
            ),
        };
        Some(Probed { kind, answer })
    }

    proptest::proptest! {
        /// A probe answers what a whole read of the same value says, on values reached by
        /// random writes (of any kind, so also type changes after deletes), deletes,
        /// deadlines and merges on two replicas, read before and after the deadline.
        #[test]
        fn a_probe_answers_what_a_read_says(ops in proptest::collection::vec(
            (0u8..8, 0u8..6, 0u8..3, 0u8..4, -3i8..4), 1..24,
        )) {
            let mut replicas = [Value::empty(crate::value::Kind::OrSet), Value::empty(crate::value::Kind::OrSet)];
            for (t, (op, kind, what, m, x)) in ops.into_iter().enumerate() {
                let r = usize::from(m % 2);
                let ctx = WriteCtx {
                    replica: ReplicaId(r as u64 + 1),
                    stamp: Stamp::new(Hlc::new(t as u64 + 1, 0), ReplicaId(r as u64 + 1)),
                };
                match op {
                    0..=4 => drop(replicas[r].apply(write(kind, what, m, x), ctx)),
                    5 => drop(replicas[r].delete(ctx)),
                    6 => drop(replicas[r].expire(Some(50), ctx)),
                    _ => {
                        let other = replicas[1 - r].clone();
                        let _ = replicas[r].merge(other);
                    }
                }
            }
            let probes = [
                Probe::Members((0..5).map(b).collect()),
                Probe::Len,
                Probe::Range { start: 0, stop: -1 },
                Probe::Range { start: 1, stop: 2 },
                Probe::Range { start: -2, stop: 10 },
                Probe::Range { start: 3, stop: 1 },
            ];
            for v in &replicas {
                for now in [10, 60] {
                    for probe in &probes {
                        proptest::prop_assert_eq!(
                            v.probe(now, probe),
                            expected(v.read_at(now, false), probe),
                            "{:?} probing {:?}",
                            v,
                            probe
                        );
                    }
                }
            }
        }
    }
}
