//! Typed lattice values: what a key holds, how writes and deletes change it, what reads see.
//!
//! Every kind has a real delete that merges correctly with concurrent writes:
//!
//! | kind | lattice | delete |
//! |---|---|---|
//! | `lww` | [`Lww`] of optional bytes | a tombstone write, ordered by (HLC, replica) like any write |
//! | `set` | grow-only set in a [`Resettable`] cell | observed reset: removes what this replica saw |
//! | `orset` | [`OrSet`] of bytes | the set's own clear (observed remove) |
//! | `counter` | [`PNCounter`] in a [`Resettable`] cell | observed reset |
//! | `max` | [`Max`] of `i64` in a [`Resettable`] cell | observed reset |
//! | `priority` | [`Priority`] in a [`Resettable`] cell | observed reset |
//! | `causal` | [`SingleKeyCausal`] of optional bytes | a tombstone version after everything seen |
//! | `multicausal` | [`MultiKeyCausal`] of optional bytes | a tombstone version after everything seen |
//! | `hash` | [`OrMap`] of fields, each a [`HashField`] | the map's own clear (observed remove) |
//! | `zset` | [`OrMap`] of members, each a [`ScoreCell`] | the map's own clear (observed remove) |
//! | `list` | [`Rga`] of bytes | removes every element seen (tombstones) |
//!
//! A write concurrent with an observed reset survives it (add-wins); a read of a deleted or
//! emptied key says "not found", never an empty value.
//!
//! A key's kind is fixed by its first write, and again by the first write after it was
//! deleted or emptied: a write of another kind to a key that reads as absent starts a new
//! *generation* ([`Value::Generation`]) of its own kind, stamped with the write's HLC
//! stamp. A newer generation replaces an older one wholesale wherever they meet, so replicas
//! converge whatever order they see them in; writes of the older generation that were
//! concurrent with the change (made on a replica that had not yet seen it) are dropped,
//! as a last-writer-wins overwrite drops the writes it follows. Two generations started
//! at once on two replicas: the later stamp wins.
//!
//! # Expiry
//!
//! A key can be given a deadline ([`Value::expire`], Redis's `EXPIRE`): a last-writer-wins
//! register of milliseconds since the Unix epoch, stamped by the HLC like any write, kept
//! beside the value ([`Value::Expiring`]). `SET` (an lww write) and a delete remove it,
//! other writes keep it (and carry it in their deltas), `PERSIST` writes "none". Once the
//! deadline has passed by a node's clock, that node reads the key as absent
//! ([`Value::read_at`]) and a write to it starts a new generation, as after a delete: the
//! old value, and any write of it that arrives late, is gone for good. Expired keys are
//! collected by each replica on its own: dropping an expired copy changes no other
//! replica (merging nothing is merging bottom), so it can never undo a write elsewhere —
//! in particular a `PERSIST` or `SET` that reached another replica before the deadline
//! and this one not yet keeps the key alive, and comes back to this replica with
//! anti-entropy. Nodes whose clocks differ see a key expire that much apart.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use calm_lattice::{
    DomPair, IsBot, Lww, MapUnion, Max, Merge, MultiKeyCausal, OrMap, OrSet, PNCounter, Pair,
    Priority, ReplicaId, Rga, SetUnionBTreeSet, SingleKeyCausal, Stamp, VectorClock,
};
use serde::{Deserialize, Serialize};

mod counter;
pub mod custom;
mod probe;
pub use counter::Counter;
pub use custom::{CustomError, CustomKind, CustomLattice, CustomValue, Kinds};
pub use probe::{Answer, Found, Probe, Probed};

/// The largest stored byte string a write's delta copies rather than shares (see
/// [`for_delta`]).
const COPIED_FOR_DELTA: usize = 4096;

/// Stored bytes as a write's delta carries them: a copy when small, a share when large. A
/// stored value holds its bytes in an allocation of its own; sharing them once gives it a
/// reference count, a header of 32 bytes kept for as long as the key is, and every write
/// would do that, while a copy of a few kilobytes costs less than the header is worth.
/// (Reads share: a copy per read, made on the worker's thread and freed on the
/// connection's, cost a quarter more CPU per pipelined `GET`; a key read once keeps the
/// header.)
fn for_delta(bytes: &Bytes) -> Bytes {
    if bytes.len() <= COPIED_FOR_DELTA {
        Bytes::copy_from_slice(bytes)
    } else {
        bytes.clone()
    }
}

/// A lattice in a cell that can be reset: an observed-remove map with a single key. Writes
/// replace the writes they have seen; a reset removes them; a write the reset has not seen
/// survives it.
pub type Resettable<L> = OrMap<(), L>;

/// A field of a hash: the bytes last set (`HSET`, ordered by HLC stamp like any
/// last-writer-wins write) and the increments made since (`HINCRBY`). Each field lives in an
/// observed-remove map, whose update replaces what its replica had seen: a set starts the
/// field afresh (no increments), an increment adds to what it saw. An increment concurrent
/// with a set survives it and is added to the set's number; a set of bytes that are not an
/// integer, concurrent with increments, reads as those bytes (the increments are ignored
/// until the field is set to a number again).
pub type HashField = Pair<Lww<Bytes>, PNCounter>;

/// What a hash field reads as (see [`HashField`]): a field only ever incremented by 0 reads
/// as `0`, as in Redis.
pub fn field_value(field: &HashField) -> Option<Bytes> {
    let base = field.a.get();
    if field.b.is_bot()
        && let Some(bytes) = base
    {
        return Some(bytes.clone());
    }
    let sum = match base {
        None => field.b.value(),
        Some(bytes) => match parse_int(bytes) {
            Some(n) => i128::from(n) + field.b.value(),
            None => return Some(bytes.clone()),
        },
    };
    Some(Bytes::from(sum.to_string()))
}

/// Parses bytes as Redis parses an integer argument or value: a canonical decimal `i64`
/// (no sign but `-`, no leading zeros, no spaces).
pub fn parse_int(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// A sorted set's score: a 64-bit float that is never NaN, so scores are totally ordered
/// (`-0.0` sorts before `0.0`, as `f64::total_cmp` orders them).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Score(f64);

impl Score {
    /// A score, unless `value` is NaN.
    pub fn new(value: f64) -> Option<Score> {
        (!value.is_nan()).then_some(Score(value))
    }

    /// The score's value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Score {
    type Error = &'static str;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Score::new(value).ok_or("a score is never NaN")
    }
}

impl From<Score> for f64 {
    fn from(score: Score) -> f64 {
        score.0
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Display for Score {
    /// The shortest decimal that reads back as the same float; `inf` and `-inf`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The increments made to a score: each replica's running total (as `f64` bits), guarded by
/// how many increments it has made, so a replica's later total replaces its earlier one.
pub type FloatSum = MapUnion<ReplicaId, DomPair<Max<u64>, Max<u64>>>;

/// A member of a sorted set: the score last set (`ZADD`, ordered by HLC stamp like any
/// last-writer-wins write) and the increments made since (`ZINCRBY`), kept in an
/// observed-remove map as [`HashField`]s are: a `ZADD` starts the score afresh, an increment
/// adds to what its replica saw, and one concurrent with a `ZADD` is added to it.
pub type ScoreCell = Pair<Lww<Score>, FloatSum>;

fn float_sum(sum: &FloatSum) -> f64 {
    sum.iter()
        .map(|(_, total)| f64::from_bits(*total.val.as_reveal_ref()))
        .sum()
}

/// What a sorted set member's score reads as; `None` for a member never written.
pub fn score_value(cell: &ScoreCell) -> Option<Score> {
    if cell.a.get().is_none() && cell.b.is_bot() {
        return None;
    }
    Score::new(cell.a.get().map_or(0.0, |s| s.get()) + float_sum(&cell.b))
}

fn add_to_sum(sum: &mut FloatSum, replica: ReplicaId, by: f64) {
    let (count, total) = sum.get(&replica).map_or((0, 0.0), |t| {
        (
            *t.key.as_reveal_ref(),
            f64::from_bits(*t.val.as_reveal_ref()),
        )
    });
    sum.merge_key(
        replica,
        DomPair::new(Max::new(count + 1), Max::new((total + by).to_bits())),
    );
}

/// Sets each entry of a map of counting registers (hash fields, scores) afresh: the value
/// given, stamped by the write, and no increments; returns the delta.
fn set_afresh<T: Ord + Clone, S: Merge + Clone + Default>(
    map: &mut OrMap<Bytes, Pair<Lww<T>, S>>,
    ctx: WriteCtx,
    entries: Vec<(Bytes, T)>,
) -> OrMap<Bytes, Pair<Lww<T>, S>> {
    let mut delta = OrMap::default();
    for (key, value) in entries {
        delta.merge(map.update(ctx.replica, key, |cell| {
            *cell = Pair::new(Lww::new(ctx.stamp, value), S::default());
        }));
    }
    delta
}

/// Removes `keys` from an observed-remove map as far as this replica has seen them; returns
/// the delta.
fn remove_all<L: Merge + Clone + Default>(
    map: &mut OrMap<Bytes, L>,
    keys: &[Bytes],
) -> OrMap<Bytes, L> {
    let mut delta = OrMap::default();
    for key in keys {
        delta.merge(map.remove(key));
    }
    delta
}

/// The positions `start..=stop` of a sequence of `len` elements, as Redis reads list and
/// range indexes (negative ones count from the end); `None` when the range is empty.
pub fn index_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 { (start + n).max(0) } else { start };
    let stop = if stop < 0 { stop + n } else { stop.min(n - 1) };
    (start <= stop && start < n && stop >= 0).then_some((start as usize, stop as usize))
}

/// Applies a list write to `list` as `replica`; returns the delta.
fn edit_list(list: &mut Rga<Bytes>, replica: ReplicaId, write: Write) -> Rga<Bytes> {
    let mut delta = Rga::default();
    let visible: Vec<(calm_lattice::ElemId, Bytes)> = if matches!(write, Write::ListPush { .. }) {
        Vec::new()
    } else {
        list.iter().map(|(id, v)| (id, v.clone())).collect()
    };
    match write {
        Write::ListPush { front, values } => {
            for value in values {
                delta.merge(if front {
                    list.push_front(replica, value)
                } else {
                    list.push_back(replica, value)
                });
            }
        }
        Write::ListInsert {
            pivot,
            before,
            value,
        } => {
            if let Some((pivot, _)) = visible.iter().find(|(_, v)| *v == pivot) {
                let anchor = if before {
                    let order = list.order();
                    match order.iter().position(|id| id == pivot) {
                        Some(0) | None => calm_lattice::Anchor::Front,
                        Some(i) => calm_lattice::Anchor::After(order[i - 1]),
                    }
                } else {
                    calm_lattice::Anchor::After(*pivot)
                };
                delta.merge(list.insert(replica, anchor, value));
            }
        }
        Write::ListRem { count, value } => {
            let matching = visible
                .iter()
                .filter(|(_, v)| *v == value)
                .map(|(id, _)| *id);
            let chosen: Vec<_> = match count {
                0 => matching.collect(),
                n if n > 0 => matching.take(n.unsigned_abs() as usize).collect(),
                n => {
                    let all: Vec<_> = matching.collect();
                    all.into_iter()
                        .rev()
                        .take(n.unsigned_abs() as usize)
                        .collect()
                }
            };
            for id in chosen {
                delta.merge(list.remove(id));
            }
        }
        Write::ListSet { index, value } => {
            if let Some((i, _)) = index_range(visible.len(), index, index) {
                let old = visible[i].0;
                delta.merge(list.remove(old));
                delta.merge(list.insert(replica, calm_lattice::Anchor::After(old), value));
            }
        }
        Write::ListTrim { start, stop } => {
            let keep = index_range(visible.len(), start, stop);
            for (i, (id, _)) in visible.iter().enumerate() {
                if keep.is_none_or(|(a, b)| i < a || i > b) {
                    delta.merge(list.remove(*id));
                }
            }
        }
        _ => {}
    }
    delta
}

/// An increment refused before it changed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncrementRefused {
    /// The hash field holds bytes that are not an integer.
    NotInteger,
    /// The score would be NaN (infinity added to its opposite).
    NotANumber,
    /// The result would leave the 64-bit range.
    Overflow {
        /// The value as this replica sees it.
        value: i128,
        /// The increment refused.
        by: i64,
    },
}

/// The kind of a key's value, fixed by its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Last-writer-wins bytes.
    Lww,
    /// Grow-only set of byte strings.
    Set,
    /// Add-wins set of byte strings with removal.
    OrSet,
    /// Increment/decrement counter.
    Counter,
    /// Integer that only grows.
    Max,
    /// Bytes with a priority; the lowest priority wins.
    Priority,
    /// Multi-value register: concurrent writes are all kept.
    SingleCausal,
    /// Multi-value register whose writes record their dependencies.
    MultiCausal,
    /// Map of fields to bytes or counters, with removal (Redis's hash).
    Hash,
    /// Members with scores, with removal (Redis's sorted set).
    SortedSet,
    /// A sequence of byte strings (Redis's list).
    List,
    /// An application's own lattice (see [`custom`]).
    Custom(CustomKind),
}

impl Kind {
    /// Every kind of calm's own, in order (an application's kinds are [`Kind::Custom`]).
    pub const ALL: [Kind; 11] = [
        Kind::Lww,
        Kind::Set,
        Kind::OrSet,
        Kind::Counter,
        Kind::Max,
        Kind::Priority,
        Kind::SingleCausal,
        Kind::MultiCausal,
        Kind::Hash,
        Kind::SortedSet,
        Kind::List,
    ];

    /// The name users type and see (`lww`, `set`, `orset`, `counter`, `max`, `priority`,
    /// `causal`, `multicausal`, `hash`, `zset`, `list`; an application's kind by its own).
    pub fn name(&self) -> &str {
        match self {
            Kind::Custom(kind) => kind.as_str(),
            Kind::Lww => "lww",
            Kind::Set => "set",
            Kind::OrSet => "orset",
            Kind::Counter => "counter",
            Kind::Max => "max",
            Kind::Priority => "priority",
            Kind::SingleCausal => "causal",
            Kind::MultiCausal => "multicausal",
            Kind::Hash => "hash",
            Kind::SortedSet => "zset",
            Kind::List => "list",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that is not one of calm's kinds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown value type '{0}'; expected one of lww, set, orset, counter, max, priority, causal, multicausal, hash, zset, list"
)]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// The lattice value stored under a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Last-writer-wins bytes; `None` is a delete.
    Lww(Lww<Option<Bytes>>),
    /// Grow-only set.
    Set(Resettable<SetUnionBTreeSet<Bytes>>),
    /// Add-wins set with removal.
    OrSet(OrSet<Bytes>),
    /// Increment/decrement counter (a [`PNCounter`] in a [`Resettable`] cell, held in
    /// place while one replica wrote it).
    Counter(Counter),
    /// Integer that only grows.
    Max(Resettable<Max<i64>>),
    /// Lowest priority wins.
    Priority(Resettable<Priority<i64, Bytes>>),
    /// Concurrent writes kept; `None` versions are deletes.
    SingleCausal(SingleKeyCausal<Option<Bytes>>),
    /// Concurrent writes kept with their dependencies; `None` versions are deletes.
    MultiCausal(MultiKeyCausal<Bytes, Option<Bytes>>),
    /// Fields with removal: an update concurrent with a removal keeps the field.
    Hash(OrMap<Bytes, HashField>),
    /// Members with scores: an update concurrent with a removal keeps the member.
    SortedSet(OrMap<Bytes, ScoreCell>),
    /// A sequence: concurrent inserts at one place are all kept (boxed: its indexes make
    /// it the largest variant, and every key's value is as large as the largest).
    List(Box<Rga<Bytes>>),
    /// A key whose kind changed after it was deleted: `value` (never itself a generation)
    /// holds what was written since `since`. It replaces every value of an earlier
    /// generation (a value of any other variant is generation zero) and merges with values
    /// of its own (see the [module docs](self)).
    Generation {
        /// The stamp of the write that changed the kind.
        since: Stamp,
        /// What this generation holds.
        #[serde(deserialize_with = "nested")]
        value: Box<Value>,
    },
    /// A key that was given a time to live (see [Expiry](self#expiry)): `value` (neither a
    /// generation nor expiring itself) with a deadline. Once the deadline passes, the key
    /// reads as absent and a write to it starts a new generation.
    Expiring {
        /// Milliseconds since the Unix epoch at which the key expires (`None`: it does
        /// not, since a `PERSIST` or a `SET`), last writer wins by HLC stamp.
        deadline: Lww<Option<u64>>,
        /// What the key holds.
        #[serde(deserialize_with = "nested")]
        value: Box<Value>,
    },
    /// An application's own lattice (see [`custom`]), merged by its type's code; a delete
    /// starts a new generation.
    Custom(Box<CustomValue>),
}

thread_local! {
    /// How deep the value being decoded on this thread is nested.
    static NESTING: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Decodes the value inside a generation or an expiring value. Values nest at most two
/// deep (a generation holding an expiring value), and decoding must not recurse as deep as
/// its input says: a frame of nested generations would overflow the decoding thread's stack
/// and abort the node (a debug replay of grown fuzz corpora overflowed a test thread's
/// stack; this is the recursion an input controls).
fn nested<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<Value>, D::Error> {
    struct Level(u8);
    impl Drop for Level {
        fn drop(&mut self) {
            NESTING.with(|n| n.set(self.0));
        }
    }
    let depth = NESTING.with(|n| n.get());
    if depth >= 2 {
        return Err(serde::de::Error::custom(
            "a value nested more than two deep (a generation holds at most an expiring value)",
        ));
    }
    NESTING.with(|n| n.set(depth + 1));
    let _restore = Level(depth);
    Value::deserialize(d).map(Box::new)
}

/// A write of one kind met a key of another; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindMismatch {
    /// The kind the key holds.
    pub stored: Kind,
    /// The kind the write was for.
    pub attempted: Kind,
}

/// Who is writing and when: the worker's replica id and a fresh HLC stamp.
#[derive(Clone, Copy, Debug)]
pub struct WriteCtx {
    /// The replica making the write.
    pub replica: ReplicaId,
    /// The stamp of the write (for last-writer-wins values).
    pub stamp: Stamp,
}

/// What the errors of a write whose outcome is unknown say about sending it again (see
/// [`Write::is_idempotent`]).
pub const RETRY_ADVICE: &str = "writes that set or remove (registers, set members, hash fields, scores, max) are safe to retry; a retried increment (counter, hash field, score) or list change may apply twice";

/// A change to a key, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Set last-writer-wins bytes.
    Lww(Bytes),
    /// Add members to a grow-only set.
    SetAdd(Vec<Bytes>),
    /// Add members to an add-wins set.
    OrSetAdd(Vec<Bytes>),
    /// Remove members from an add-wins set (as far as this replica has seen them).
    OrSetRemove(Vec<Bytes>),
    /// Add to a counter (negative to subtract).
    Increment(i64),
    /// Raise an integer to at least this value.
    Max(i64),
    /// Offer a value at a priority; the lowest priority wins.
    Priority {
        /// The priority; lower wins.
        priority: i64,
        /// The value offered.
        value: Bytes,
    },
    /// Write a causal register after everything the replica has seen.
    SingleCausal(Bytes),
    /// Write a causal register recording what the writer had read.
    MultiCausal {
        /// The value.
        value: Bytes,
        /// Each key the writer read, with the clock of the version it read.
        deps: Vec<(Bytes, VectorClock)>,
    },
    /// Set hash fields (a field named twice takes the last value).
    HashSet(Vec<(Bytes, Bytes)>),
    /// Remove hash fields (as far as this replica has seen them).
    HashDel(Vec<Bytes>),
    /// Add to a hash field (negative to subtract); the field must be absent or an integer.
    HashIncr {
        /// The field.
        field: Bytes,
        /// How much to add.
        by: i64,
    },
    /// Set members' scores (a member named twice takes the last score).
    ZAdd(Vec<(Bytes, Score)>),
    /// Remove members of a sorted set (as far as this replica has seen them).
    ZRem(Vec<Bytes>),
    /// Add to a member's score (a new member starts at 0).
    ZIncr {
        /// The member.
        member: Bytes,
        /// How much to add.
        by: Score,
    },
    /// Push values at the front (each becomes the first, as `LPUSH` does) or at the back.
    ListPush {
        /// At the front (else the back).
        front: bool,
        /// The values, in the order they are pushed.
        values: Vec<Bytes>,
    },
    /// Insert a value before or after the first element equal to `pivot` (nothing when
    /// there is none).
    ListInsert {
        /// The element to insert next to.
        pivot: Bytes,
        /// Before it (else after).
        before: bool,
        /// The value.
        value: Bytes,
    },
    /// Remove elements equal to `value`: the first `count` (from the back when negative;
    /// all when 0), as far as this replica has seen them.
    ListRem {
        /// How many, and from which end.
        count: i64,
        /// The value.
        value: Bytes,
    },
    /// Replace the element at `index` (from the back when negative): removed, and the new
    /// value inserted in its place. Nothing when there is none.
    ListSet {
        /// The index.
        index: i64,
        /// The value.
        value: Bytes,
    },
    /// Keep only the elements from `start` to `stop` (inclusive; negative from the back).
    ListTrim {
        /// The first index kept.
        start: i64,
        /// The last index kept.
        stop: i64,
    },
    /// Merge a whole lattice value (for replication, import, or values built by clients).
    Merge(Value),
    /// Merge a value of an application's kind (see [`custom`]): a delta or a whole state.
    Custom(CustomValue),
}

impl Write {
    /// A write merging `value`, of the application's lattice `T`, into a key (see
    /// [`custom`]); refused if `T::KIND` cannot name a kind.
    pub fn custom<T: CustomLattice>(value: &T) -> Result<Write, CustomError> {
        Ok(Write::Custom(CustomValue {
            kind: CustomKind::new(T::KIND)?,
            state: custom::encode(value),
        }))
    }

    /// The write with every byte string the value will keep in an allocation of its own
    /// (a worker applies writes so): a front-end may decode requests without copying,
    /// their strings slices of a connection's read buffer, and no stored value may keep a
    /// whole buffer alive. What a write only looks for (members to remove, a pivot) is not
    /// copied.
    pub fn owned(self) -> Write {
        fn own(b: Bytes) -> Bytes {
            Bytes::copy_from_slice(&b)
        }
        /// Members (names a set or sorted set keeps, never values a later write
        /// replaces) in one allocation when they are small together: a share of it per
        /// member, so reading them out shares too instead of giving each its own header.
        fn all(v: Vec<Bytes>) -> Vec<Bytes> {
            let total: usize = v.iter().map(Bytes::len).sum();
            if v.len() < 2 || total > COPIED_FOR_DELTA {
                return v.into_iter().map(own).collect();
            }
            let mut buf = bytes::BytesMut::with_capacity(total);
            for member in &v {
                buf.extend_from_slice(member);
            }
            let mut buf = buf.freeze();
            v.iter().map(|member| buf.split_to(member.len())).collect()
        }
        match self {
            Write::Lww(v) => Write::Lww(own(v)),
            Write::SetAdd(v) => Write::SetAdd(all(v)),
            Write::OrSetAdd(v) => Write::OrSetAdd(all(v)),
            Write::Priority { priority, value } => Write::Priority {
                priority,
                value: own(value),
            },
            Write::SingleCausal(v) => Write::SingleCausal(own(v)),
            Write::MultiCausal { value, deps } => Write::MultiCausal {
                value: own(value),
                deps: deps.into_iter().map(|(k, c)| (own(k), c)).collect(),
            },
            Write::HashSet(v) => {
                Write::HashSet(v.into_iter().map(|(f, x)| (own(f), own(x))).collect())
            }
            Write::HashIncr { field, by } => Write::HashIncr {
                field: own(field),
                by,
            },
            Write::ZAdd(v) => {
                let (members, scores): (Vec<Bytes>, Vec<_>) = v.into_iter().unzip();
                Write::ZAdd(all(members).into_iter().zip(scores).collect())
            }
            Write::ZIncr { member, by } => Write::ZIncr {
                member: own(member),
                by,
            },
            Write::ListPush { front, values } => Write::ListPush {
                front,
                values: all(values),
            },
            Write::ListInsert {
                pivot,
                before,
                value,
            } => Write::ListInsert {
                pivot,
                before,
                value: own(value),
            },
            Write::ListSet { index, value } => Write::ListSet {
                index,
                value: own(value),
            },
            Write::Custom(CustomValue { kind, state }) => Write::Custom(CustomValue {
                kind,
                state: own(state),
            }),
            other @ (Write::OrSetRemove(_)
            | Write::Increment(_)
            | Write::Max(_)
            | Write::HashDel(_)
            | Write::ZRem(_)
            | Write::ListRem { .. }
            | Write::ListTrim { .. }
            | Write::Merge(_)) => other,
        }
    }

    /// Whether applying this write twice has the effect of applying it once, so a write
    /// whose outcome is unknown (a lost connection, a timeout) may be sent again: writes
    /// that set or remove (registers, set members, hash fields, scores, the maximum, a
    /// priority offer, causal registers, a list element set by index) and merges (a whole
    /// value, a value of an application's kind). Writes that add to what is there
    /// (counter, hash-field and score increments) or change a list by position or count
    /// would apply twice. See [`RETRY_ADVICE`].
    pub fn is_idempotent(&self) -> bool {
        match self {
            Write::Lww(_)
            | Write::SetAdd(_)
            | Write::OrSetAdd(_)
            | Write::OrSetRemove(_)
            | Write::Max(_)
            | Write::Priority { .. }
            | Write::SingleCausal(_)
            | Write::MultiCausal { .. }
            | Write::HashSet(_)
            | Write::HashDel(_)
            | Write::ZAdd(_)
            | Write::ZRem(_)
            | Write::ListSet { .. }
            | Write::Merge(_)
            | Write::Custom(_) => true,
            Write::Increment(_)
            | Write::HashIncr { .. }
            | Write::ZIncr { .. }
            | Write::ListPush { .. }
            | Write::ListInsert { .. }
            | Write::ListRem { .. }
            | Write::ListTrim { .. } => false,
        }
    }

    /// The kind this write applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Write::Lww(_) => Kind::Lww,
            Write::SetAdd(_) => Kind::Set,
            Write::OrSetAdd(_) | Write::OrSetRemove(_) => Kind::OrSet,
            Write::Increment(_) => Kind::Counter,
            Write::Max(_) => Kind::Max,
            Write::Priority { .. } => Kind::Priority,
            Write::SingleCausal(_) => Kind::SingleCausal,
            Write::MultiCausal { .. } => Kind::MultiCausal,
            Write::HashSet(_) | Write::HashDel(_) | Write::HashIncr { .. } => Kind::Hash,
            Write::ZAdd(_) | Write::ZRem(_) | Write::ZIncr { .. } => Kind::SortedSet,
            Write::ListPush { .. }
            | Write::ListInsert { .. }
            | Write::ListRem { .. }
            | Write::ListSet { .. }
            | Write::ListTrim { .. } => Kind::List,
            Write::Merge(v) => v.kind(),
            Write::Custom(v) => Kind::Custom(v.kind),
        }
    }

    /// Whether the write can bring a key into being (or a new generation of it). Removals
    /// cannot, and neither can merges, which bring their own value.
    pub fn creates(&self) -> bool {
        !matches!(
            self,
            Write::Merge(_)
                | Write::OrSetRemove(_)
                | Write::HashDel(_)
                | Write::ZRem(_)
                | Write::ListInsert { .. }
                | Write::ListRem { .. }
                | Write::ListSet { .. }
                | Write::ListTrim { .. }
        )
    }

    /// The number of payload bytes the write carries (for size limits).
    pub fn payload_len(&self) -> usize {
        let sum = |ms: &[Bytes]| ms.iter().map(Bytes::len).sum::<usize>();
        match self {
            Write::Lww(b) | Write::SingleCausal(b) => b.len(),
            Write::SetAdd(ms)
            | Write::OrSetAdd(ms)
            | Write::OrSetRemove(ms)
            | Write::HashDel(ms)
            | Write::ZRem(ms) => sum(ms),
            Write::ZAdd(members) => members.iter().map(|(m, _)| m.len() + 8).sum(),
            Write::ZIncr { member, .. } => member.len() + 8,
            Write::ListPush { values, .. } => sum(values),
            Write::ListInsert { pivot, value, .. } => pivot.len() + value.len(),
            Write::ListRem { value, .. } | Write::ListSet { value, .. } => value.len() + 8,
            Write::ListTrim { .. } => 16,
            Write::HashSet(fields) => fields.iter().map(|(f, v)| f.len() + v.len()).sum(),
            Write::HashIncr { field, .. } => field.len() + 8,
            Write::Increment(_) | Write::Max(_) => 8,
            Write::Priority { value, .. } => 8 + value.len(),
            Write::Custom(v) => v.state.len(),
            Write::MultiCausal { value, deps } => {
                value.len() + deps.iter().map(|(k, _)| k.len()).sum::<usize>()
            }
            // A merged value is bounded by the frame size it arrived in.
            Write::Merge(_) => 0,
        }
    }
}

/// What a read returns: the visible value, and its version metadata when asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadValue {
    /// Last-writer-wins bytes.
    Lww {
        /// The value.
        value: Bytes,
        /// When and where it was written (when asked for).
        stamp: Option<Stamp>,
    },
    /// Members of a grow-only set, in order.
    Set {
        /// The members.
        members: Vec<Bytes>,
    },
    /// Members of an add-wins set, in order.
    OrSet {
        /// The members.
        members: Vec<Bytes>,
    },
    /// A counter's value.
    Counter {
        /// Increments minus decrements.
        value: i128,
    },
    /// An integer that only grows.
    Max {
        /// The value.
        value: i64,
    },
    /// The winning (lowest-priority) value.
    Priority {
        /// Its priority.
        priority: i64,
        /// The value.
        value: Bytes,
    },
    /// The concurrent values of a causal register.
    SingleCausal {
        /// Each concurrent value, in order.
        values: Vec<Bytes>,
        /// Everything the register has seen (when asked for).
        clock: Option<VectorClock>,
    },
    /// The concurrent values of a causal register with dependencies.
    MultiCausal {
        /// Each concurrent value, in order.
        values: Vec<Bytes>,
        /// Everything the register has seen (when asked for).
        clock: Option<VectorClock>,
        /// What a reader must have seen to read it causally (when asked for).
        deps: Vec<(Bytes, VectorClock)>,
    },
    /// A hash's fields and what each reads as, in field order.
    Hash {
        /// The fields and their values.
        fields: Vec<(Bytes, Bytes)>,
    },
    /// A sorted set's members, by score and then by member.
    SortedSet {
        /// The members and their scores.
        members: Vec<(Bytes, Score)>,
    },
    /// A list's elements, in order.
    List {
        /// The elements.
        values: Vec<Bytes>,
    },
    /// A value of an application's kind, encoded (read it with [`ReadValue::custom`]).
    Custom(CustomValue),
}

impl ReadValue {
    /// The bytes of a last-writer-wins register, or of a priority register's winner.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            ReadValue::Lww { value, .. } | ReadValue::Priority { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A counter's value, as the `i64` increments are written in. Each increment is refused
    /// if it would take the counter past the 64-bit range as its replica sees it, but
    /// increments admitted on different replicas at once can together pass it: such a
    /// counter reads as `i64::MAX` (or `i64::MIN`) here, and exactly in
    /// [`ReadValue::Counter`]'s `value`.
    pub fn as_counter(&self) -> Option<i64> {
        match self {
            ReadValue::Counter { value } => {
                Some(i64::try_from(*value).unwrap_or(if *value > 0 { i64::MAX } else { i64::MIN }))
            }
            _ => None,
        }
    }

    /// A max register's value.
    pub fn as_max(&self) -> Option<i64> {
        match self {
            ReadValue::Max { value } => Some(*value),
            _ => None,
        }
    }

    /// A set's members (grow-only or add-wins), in order.
    pub fn members(&self) -> Option<&[Bytes]> {
        match self {
            ReadValue::Set { members } | ReadValue::OrSet { members } => Some(members),
            _ => None,
        }
    }

    /// A hash's fields and their values, in field order.
    pub fn fields(&self) -> Option<&[(Bytes, Bytes)]> {
        match self {
            ReadValue::Hash { fields } => Some(fields),
            _ => None,
        }
    }

    /// A sorted set's members and scores, by score and then by member.
    pub fn scored(&self) -> Option<&[(Bytes, Score)]> {
        match self {
            ReadValue::SortedSet { members } => Some(members),
            _ => None,
        }
    }

    /// A value of the application's kind `T`; an error if the key holds another kind or
    /// the bytes are not a `T`.
    pub fn custom<T: CustomLattice>(&self) -> Result<T, CustomError> {
        let wanted = CustomKind::new(T::KIND)?;
        match self {
            ReadValue::Custom(v) if v.kind == wanted => custom::decode(&v.state),
            other => Err(CustomError::OtherKind {
                stored: other.kind().name().to_string(),
                wanted,
            }),
        }
    }

    /// The kind of value read.
    pub fn kind(&self) -> Kind {
        match self {
            ReadValue::Custom(v) => Kind::Custom(v.kind),
            ReadValue::Lww { .. } => Kind::Lww,
            ReadValue::Set { .. } => Kind::Set,
            ReadValue::OrSet { .. } => Kind::OrSet,
            ReadValue::Counter { .. } => Kind::Counter,
            ReadValue::Max { .. } => Kind::Max,
            ReadValue::Priority { .. } => Kind::Priority,
            ReadValue::SingleCausal { .. } => Kind::SingleCausal,
            ReadValue::MultiCausal { .. } => Kind::MultiCausal,
            ReadValue::Hash { .. } => Kind::Hash,
            ReadValue::SortedSet { .. } => Kind::SortedSet,
            ReadValue::List { .. } => Kind::List,
        }
    }
}

impl Value {
    /// An empty value of `kind` (bottom), ready for a first write.
    pub fn empty(kind: Kind) -> Self {
        match kind {
            Kind::Lww => Value::Lww(Lww::default()),
            Kind::Set => Value::Set(Resettable::default()),
            Kind::OrSet => Value::OrSet(OrSet::default()),
            Kind::Counter => Value::Counter(Counter::default()),
            Kind::Max => Value::Max(Resettable::default()),
            Kind::Priority => Value::Priority(Resettable::default()),
            Kind::SingleCausal => Value::SingleCausal(SingleKeyCausal::default()),
            Kind::MultiCausal => Value::MultiCausal(MultiKeyCausal::default()),
            Kind::Hash => Value::Hash(OrMap::default()),
            Kind::SortedSet => Value::SortedSet(OrMap::default()),
            Kind::List => Value::List(Box::default()),
            Kind::Custom(kind) => Value::Custom(Box::new(CustomValue::empty(kind))),
        }
    }

    /// The kind of this value.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Lww(_) => Kind::Lww,
            Value::Set(_) => Kind::Set,
            Value::OrSet(_) => Kind::OrSet,
            Value::Counter(_) => Kind::Counter,
            Value::Max(_) => Kind::Max,
            Value::Priority(_) => Kind::Priority,
            Value::SingleCausal(_) => Kind::SingleCausal,
            Value::MultiCausal(_) => Kind::MultiCausal,
            Value::Hash(_) => Kind::Hash,
            Value::SortedSet(_) => Kind::SortedSet,
            Value::List(_) => Kind::List,
            Value::Custom(v) => Kind::Custom(v.kind),
            Value::Generation { value, .. } | Value::Expiring { value, .. } => value.kind(),
        }
    }

    /// When the key's current kind took over after a delete (`None`: with its first write).
    pub fn generation(&self) -> Option<Stamp> {
        match self {
            Value::Generation { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// The value of the key's current generation, without its deadline.
    pub fn inner(&self) -> &Value {
        match self {
            Value::Generation { value, .. } => value.inner(),
            Value::Expiring { value, .. } => value,
            other => other,
        }
    }

    /// When the key expires (milliseconds since the Unix epoch), if it was given a time to
    /// live.
    pub fn deadline(&self) -> Option<u64> {
        match self {
            Value::Generation { value, .. } => value.deadline(),
            Value::Expiring { deadline, .. } => deadline.get().copied().flatten(),
            _ => None,
        }
    }

    /// Whether the key's deadline has passed at `now_ms`: it then reads as absent.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.deadline().is_some_and(|d| d <= now_ms)
    }

    /// Whether a read at `now_ms` would find something.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.is_visible() && !self.expired(now_ms)
    }

    /// The visible value at `now_ms` (`None` once expired): [`read`](Self::read) with the
    /// clock.
    pub fn read_at(&self, now_ms: u64, meta: bool) -> Option<ReadValue> {
        if self.expired(now_ms) {
            None
        } else {
            self.read(meta)
        }
    }

    /// Starts a new, empty generation of `kind` at the write's stamp: for a write to a key
    /// that expired, which finds it absent as a write after a delete does.
    pub fn restart(&mut self, kind: Kind, ctx: WriteCtx) {
        *self = Value::Generation {
            since: ctx.stamp,
            value: Box::new(Value::empty(kind)),
        };
    }

    /// Sets (or, with `None`, removes) the key's deadline as far as this replica has seen
    /// it; returns the delta, or `None` when there was nothing visible to expire.
    pub fn expire(&mut self, at_ms: Option<u64>, ctx: WriteCtx) -> Option<Value> {
        if !self.is_visible() {
            return None;
        }
        Some(match self {
            Value::Generation { since, value } => Value::Generation {
                since: *since,
                value: Box::new(value.expire(at_ms, ctx)?),
            },
            Value::Expiring { deadline, value } => {
                deadline.write(ctx.stamp, at_ms);
                Value::Expiring {
                    deadline: deadline.clone(),
                    value: Box::new(Value::empty(value.kind())),
                }
            }
            plain => {
                let kind = plain.kind();
                let value = std::mem::replace(plain, Value::Lww(Lww::default()));
                *plain = Value::Expiring {
                    deadline: Lww::new(ctx.stamp, at_ms),
                    value: Box::new(value),
                };
                Value::Expiring {
                    deadline: Lww::new(ctx.stamp, at_ms),
                    value: Box::new(Value::empty(kind)),
                }
            }
        })
    }

    /// Merges a value: of a newer generation, it replaces this one; of an older, it changes
    /// nothing; of the same, it merges if it is of the same kind and is refused (changing
    /// nothing) if not.
    pub fn merge(&mut self, other: Value) -> Result<bool, KindMismatch> {
        match self.generation().cmp(&other.generation()) {
            std::cmp::Ordering::Less => {
                *self = other;
                return Ok(true);
            }
            std::cmp::Ordering::Greater => return Ok(false),
            std::cmp::Ordering::Equal => {}
        }
        if self.kind() != other.kind() {
            return Err(KindMismatch {
                stored: self.kind(),
                attempted: other.kind(),
            });
        }
        Ok(match (self, other) {
            (Value::Generation { value: a, .. }, Value::Generation { value: b, .. }) => {
                a.merge(*b)?
            }
            (
                Value::Expiring {
                    deadline: d1,
                    value: a,
                },
                Value::Expiring {
                    deadline: d2,
                    value: b,
                },
            ) => {
                let later = d1.merge(d2);
                a.merge(*b)? || later
            }
            (Value::Expiring { value: a, .. }, b) => a.merge(b)?,
            (me, Value::Expiring { deadline, value: b }) => {
                let mut value = Box::new(std::mem::replace(me, Value::Lww(Lww::default())));
                value.merge(*b)?;
                *me = Value::Expiring { deadline, value };
                true
            }
            (Value::Lww(a), Value::Lww(b)) => a.merge(b),
            (Value::Set(a), Value::Set(b)) => a.merge(b),
            (Value::OrSet(a), Value::OrSet(b)) => a.merge(b),
            (Value::Counter(a), Value::Counter(b)) => a.merge(b),
            (Value::Max(a), Value::Max(b)) => a.merge(b),
            (Value::Priority(a), Value::Priority(b)) => a.merge(b),
            (Value::SingleCausal(a), Value::SingleCausal(b)) => a.merge(b),
            (Value::MultiCausal(a), Value::MultiCausal(b)) => a.merge(b),
            (Value::Hash(a), Value::Hash(b)) => a.merge(b),
            (Value::SortedSet(a), Value::SortedSet(b)) => a.merge(b),
            (Value::List(a), Value::List(b)) => a.merge(*b),
            (Value::Custom(a), Value::Custom(b)) => match a.merge(*b) {
                Ok(changed) => changed,
                // Refused before it gets here on a node (the kind's code is missing, or
                // the bytes are not its type): nothing changes.
                Err(e) => {
                    tracing::warn!(error = %e, "could not merge a value of an application's kind");
                    false
                }
            },
            (a, b) => {
                return Err(KindMismatch {
                    stored: a.kind(),
                    attempted: b.kind(),
                });
            }
        })
    }

    /// Merges a value arriving from another replica. Replicas can only disagree on a key's
    /// kind if two first writes of different kinds raced on different nodes; then every
    /// replica keeps the greater kind, so they still converge. Returns whether `self`
    /// changed and whether a kind conflict was resolved (so the caller can report it).
    pub fn merge_replicated(&mut self, other: Value) -> (bool, Option<KindMismatch>) {
        match self.merge(other.clone()) {
            Ok(changed) => (changed, None),
            Err(mismatch) => {
                if other.kind() > self.kind() {
                    *self = other;
                    (true, Some(mismatch))
                } else {
                    (false, Some(mismatch))
                }
            }
        }
    }

    /// Applies `write` and returns its delta (what to ship to other replicas). A write of
    /// another kind is refused and changes nothing, unless the key reads as absent (deleted
    /// or emptied): then the write starts a new generation of its kind (see the
    /// [module docs](self)), and the delta carries it.
    pub fn apply(&mut self, write: Write, ctx: WriteCtx) -> Result<Value, KindMismatch> {
        // A removal creates nothing: it never starts a generation.
        if write.creates() && write.kind() != self.kind() && !self.is_visible() {
            *self = Value::Generation {
                since: ctx.stamp,
                value: Box::new(Value::empty(write.kind())),
            };
        }
        if let (Value::Generation { since, value }, false) =
            (&mut *self, matches!(write, Write::Merge(_)))
        {
            let delta = value.apply(write, ctx)?;
            return Ok(Value::Generation {
                since: *since,
                value: Box::new(delta),
            });
        }
        // A write to a key with a deadline carries the deadline, so that a delta arriving
        // after the key expired (and was collected) there expires too; a `SET` (an lww
        // write) removes the deadline, as in Redis.
        if let (Value::Expiring { deadline, value }, false) =
            (&mut *self, matches!(write, Write::Merge(_)))
        {
            let clears = matches!(write, Write::Lww(_));
            let delta = value.apply(write, ctx)?;
            if clears {
                deadline.write(ctx.stamp, None);
            }
            return Ok(Value::Expiring {
                deadline: deadline.clone(),
                value: Box::new(delta),
            });
        }
        let attempted = write.kind();
        let mismatch = |stored: Kind| KindMismatch { stored, attempted };
        let r = ctx.replica;
        Ok(match (self, write) {
            (Value::Lww(v), Write::Lww(bytes)) => {
                let delta = for_delta(&bytes);
                v.merge(Lww::new(ctx.stamp, Some(bytes)));
                Value::Lww(Lww::new(ctx.stamp, Some(delta)))
            }
            (Value::Set(v), Write::SetAdd(members)) => Value::Set(v.update(r, (), |s| {
                for m in members {
                    s.insert(m);
                }
            })),
            (Value::OrSet(v), Write::OrSetAdd(members)) => {
                let mut delta = OrSet::default();
                for m in members {
                    delta.merge(v.add(r, m));
                }
                Value::OrSet(delta)
            }
            (Value::OrSet(v), Write::OrSetRemove(members)) => {
                let mut delta = OrSet::default();
                for m in &members {
                    delta.merge(v.remove(m));
                }
                Value::OrSet(delta)
            }
            (Value::Counter(v), Write::Increment(by)) => Value::Counter(v.add(r, by)),
            (Value::Max(v), Write::Max(n)) => Value::Max(v.update(r, (), |m| {
                m.merge(Max::new(n));
            })),
            (Value::Priority(v), Write::Priority { priority, value }) => {
                Value::Priority(v.update(r, (), |p| {
                    p.offer(priority, value);
                }))
            }
            (Value::SingleCausal(v), Write::SingleCausal(bytes)) => {
                Value::SingleCausal(v.write(r, Some(bytes)))
            }
            (Value::MultiCausal(v), Write::MultiCausal { value, deps }) => {
                Value::MultiCausal(v.write(r, Some(value), deps))
            }
            (Value::Hash(v), Write::HashSet(fields)) => Value::Hash(set_afresh(v, ctx, fields)),
            (Value::Hash(v), Write::HashDel(fields)) => Value::Hash(remove_all(v, &fields)),
            (Value::Hash(v), Write::HashIncr { field, by }) => {
                Value::Hash(v.update(r, field, |f| {
                    if by >= 0 {
                        f.b.increment(r, by.unsigned_abs());
                    } else {
                        f.b.decrement(r, by.unsigned_abs());
                    }
                }))
            }
            (Value::SortedSet(v), Write::ZAdd(members)) => {
                Value::SortedSet(set_afresh(v, ctx, members))
            }
            (Value::SortedSet(v), Write::ZRem(members)) => {
                Value::SortedSet(remove_all(v, &members))
            }
            (Value::SortedSet(v), Write::ZIncr { member, by }) => {
                Value::SortedSet(v.update(r, member, |c| add_to_sum(&mut c.b, r, by.get())))
            }
            (
                Value::List(v),
                w @ (Write::ListPush { .. }
                | Write::ListInsert { .. }
                | Write::ListRem { .. }
                | Write::ListSet { .. }
                | Write::ListTrim { .. }),
            ) => Value::List(Box::new(edit_list(v, r, w))),
            (Value::Custom(v), Write::Custom(delta)) => {
                v.merge(delta.clone())
                    .map_err(|_| mismatch(Kind::Custom(v.kind)))?;
                Value::Custom(Box::new(delta))
            }
            (me, Write::Merge(value)) => {
                me.merge(value.clone())?;
                value
            }
            (me, _) => return Err(mismatch(me.kind())),
        })
    }

    /// Deletes the value as far as this replica has seen it; returns the delta, or `None`
    /// when there was nothing visible to delete.
    pub fn delete(&mut self, ctx: WriteCtx) -> Option<Value> {
        if !self.is_visible() {
            return None;
        }
        // An application's lattice has no delete of its own: the key starts afresh, a new
        // generation replacing the old wherever they meet (see [`custom`]).
        if let Value::Custom(v) = self.inner() {
            *self = Value::Generation {
                since: ctx.stamp,
                value: Box::new(Value::Custom(Box::new(CustomValue::empty(v.kind)))),
            };
            return Some(self.clone());
        }
        let r = ctx.replica;
        Some(match self {
            Value::Generation { since, value } => Value::Generation {
                since: *since,
                value: Box::new(value.delete(ctx)?),
            },
            // A delete takes the deadline with it: the next write makes a key that does
            // not expire.
            Value::Expiring { deadline, value } => {
                let delta = value.delete(ctx)?;
                deadline.write(ctx.stamp, None);
                Value::Expiring {
                    deadline: deadline.clone(),
                    value: Box::new(delta),
                }
            }
            Value::Lww(v) => Value::Lww(v.write(ctx.stamp, None)),
            Value::Set(v) => Value::Set(v.remove(&())),
            Value::OrSet(v) => Value::OrSet(v.clear()),
            Value::Counter(v) => Value::Counter(v.reset()),
            Value::Max(v) => Value::Max(v.remove(&())),
            Value::Priority(v) => Value::Priority(v.remove(&())),
            Value::SingleCausal(v) => Value::SingleCausal(v.write(r, None)),
            Value::MultiCausal(v) => Value::MultiCausal(v.write(r, None, [])),
            Value::Hash(v) => Value::Hash(v.clear()),
            Value::SortedSet(v) => Value::SortedSet(v.clear()),
            Value::Custom(_) => return None,
            Value::List(v) => {
                let ids: Vec<_> = v.iter().map(|(id, _)| id).collect();
                let mut delta = Rga::default();
                for id in ids {
                    delta.merge(v.remove(id));
                }
                Value::List(Box::new(delta))
            }
        })
    }

    /// Whether `replica` wrote this value under causal metadata that its next writes build
    /// on (dots, vector clocks). A worker that drops such a value must write under another
    /// id afterwards: its next writes would start from scratch and repeat old dots, which
    /// the replicas holding the old ones take for writes already seen (and so drop them).
    /// Last-writer-wins registers are stamped by the clock, not by the value: never.
    pub fn written_by(&self, replica: ReplicaId) -> bool {
        match self {
            Value::Lww(_) => false,
            Value::Set(v) => v.context().has_seen(replica),
            Value::OrSet(v) => v.context().has_seen(replica),
            Value::Counter(v) => v.has_seen(replica),
            Value::Max(v) => v.context().has_seen(replica),
            Value::Priority(v) => v.context().has_seen(replica),
            Value::SingleCausal(v) => v.clock().get(replica) > 0,
            Value::MultiCausal(v) => v.clock().get(replica) > 0,
            Value::Hash(v) => v.context().has_seen(replica),
            Value::SortedSet(v) => v.context().has_seen(replica),
            Value::List(v) => v.inserted_by(replica),
            // The application's lattice carries whatever ids it uses itself.
            Value::Custom(_) => false,
            Value::Generation { value, .. } | Value::Expiring { value, .. } => {
                value.written_by(replica)
            }
        }
    }

    /// Whether a read would find something.
    pub fn is_visible(&self) -> bool {
        match self {
            Value::Lww(v) => matches!(v.get(), Some(Some(_))),
            Value::Set(v) => v.contains_key(&()),
            Value::OrSet(v) => !v.is_empty(),
            Value::Counter(v) => v.is_set(),
            Value::Max(v) => v.contains_key(&()),
            Value::Priority(v) => v.contains_key(&()),
            Value::SingleCausal(v) => v.values().any(Option::is_some),
            Value::MultiCausal(v) => v.values().any(Option::is_some),
            Value::Hash(v) => !v.is_empty(),
            Value::SortedSet(v) => !v.is_empty(),
            Value::List(v) => !v.is_empty(),
            Value::Custom(v) => !v.state.is_empty(),
            Value::Generation { value, .. } | Value::Expiring { value, .. } => value.is_visible(),
        }
    }

    /// The bytes a read of the value returns: a register's bytes; each member, field and
    /// field value, list element; 8 for each number (a counter, a score, a priority); 0 when
    /// nothing is visible. What a [quota](crate::storage::quota) counts, besides the key.
    pub fn payload_bytes(&self) -> usize {
        // The common kinds without building what a read returns.
        match self {
            Value::Generation { value, .. } | Value::Expiring { value, .. } => {
                return value.payload_bytes();
            }
            Value::Lww(v) => return v.get().and_then(Option::as_ref).map_or(0, Bytes::len),
            Value::Set(v) => {
                return v.get(&()).map_or(0, |m| m.iter().map(Bytes::len).sum());
            }
            Value::OrSet(v) => return v.iter().map(Bytes::len).sum(),
            Value::Counter(v) => return if v.is_set() { 8 } else { 0 },
            Value::Custom(v) => return v.state.len(),
            _ => {}
        }
        let Some(read) = self.read(false) else {
            return 0;
        };
        let sum = |vs: &[Bytes]| vs.iter().map(Bytes::len).sum::<usize>();
        match read {
            ReadValue::Lww { value, .. } => value.len(),
            ReadValue::Set { members } | ReadValue::OrSet { members } => sum(&members),
            ReadValue::Counter { .. } | ReadValue::Max { .. } => 8,
            ReadValue::Priority { value, .. } => 8 + value.len(),
            ReadValue::SingleCausal { values, .. } | ReadValue::MultiCausal { values, .. } => {
                sum(&values)
            }
            ReadValue::Hash { fields } => fields.iter().map(|(f, v)| f.len() + v.len()).sum(),
            ReadValue::SortedSet { members } => members.iter().map(|(m, _)| m.len() + 8).sum(),
            ReadValue::List { values } => sum(&values),
            ReadValue::Custom(v) => v.state.len(),
        }
    }

    /// The visible value, with version metadata if `meta`; `None` when deleted or empty.
    pub fn read(&self, meta: bool) -> Option<ReadValue> {
        if !self.is_visible() {
            return None;
        }
        let live = |vals: &mut dyn Iterator<Item = &Option<Bytes>>| -> Vec<Bytes> {
            vals.filter_map(Clone::clone).collect()
        };
        Some(match self {
            Value::Generation { value, .. } | Value::Expiring { value, .. } => {
                return value.read(meta);
            }
            Value::Lww(v) => ReadValue::Lww {
                value: v.get()?.clone()?,
                stamp: if meta { v.stamp() } else { None },
            },
            Value::Set(v) => ReadValue::Set {
                members: v.get(&())?.iter().cloned().collect(),
            },
            Value::OrSet(v) => ReadValue::OrSet {
                members: v.iter().cloned().collect(),
            },
            Value::Counter(v) => ReadValue::Counter { value: v.value()? },
            Value::Max(v) => ReadValue::Max {
                value: v.get(&())?.into_reveal(),
            },
            Value::Priority(v) => {
                let (priority, value) = v.get_with(&(), |p| {
                    let (priority, value) = p.get()?;
                    Some((*priority, value.clone()))
                })??;
                ReadValue::Priority { priority, value }
            }
            Value::SingleCausal(v) => ReadValue::SingleCausal {
                values: live(&mut v.values()),
                clock: meta.then(|| v.clock()),
            },
            Value::MultiCausal(v) => ReadValue::MultiCausal {
                values: live(&mut v.values()),
                clock: meta.then(|| v.clock()),
                deps: if meta {
                    v.dependencies().into_iter().collect()
                } else {
                    Vec::new()
                },
            },
            Value::Hash(v) => ReadValue::Hash {
                fields: v
                    .keys()
                    .filter_map(|k| Some((k.clone(), v.get_with(k, field_value)??)))
                    .collect(),
            },
            Value::SortedSet(v) => {
                let mut members: Vec<(Bytes, Score)> = v
                    .iter()
                    .filter_map(|(m, c)| Some((m.clone(), score_value(&c)?)))
                    .collect();
                members.sort_by(|(m1, s1), (m2, s2)| s1.cmp(s2).then_with(|| m1.cmp(m2)));
                ReadValue::SortedSet { members }
            }
            Value::List(v) => ReadValue::List {
                values: v.values().cloned().collect(),
            },
            Value::Custom(v) => ReadValue::Custom(CustomValue::clone(v)),
        })
    }

    /// Refuses an increment that would take a counter or a hash field, as this replica
    /// sees it, out of the 64-bit range, that targets a hash field holding bytes that are
    /// not an integer, or that would make a score NaN. Other writes pass.
    pub fn check_increment(&self, write: &Write) -> Result<(), IncrementRefused> {
        let (now, by) = match (self.inner(), write) {
            (Value::Counter(_), Write::Increment(by)) => match self.read(false) {
                Some(ReadValue::Counter { value }) => (value, *by),
                _ => (0, *by),
            },
            (Value::Hash(v), Write::HashIncr { field, by }) => {
                match v.get(field).as_ref().and_then(field_value) {
                    None => (0, *by),
                    Some(bytes) => match parse_int(&bytes) {
                        Some(n) => (i128::from(n), *by),
                        None => return Err(IncrementRefused::NotInteger),
                    },
                }
            }
            (Value::SortedSet(v), Write::ZIncr { member, by }) => {
                let now = v
                    .get(member)
                    .as_ref()
                    .and_then(score_value)
                    .map_or(0.0, Score::get);
                return match Score::new(now + by.get()) {
                    Some(_) => Ok(()),
                    None => Err(IncrementRefused::NotANumber),
                };
            }
            _ => return Ok(()),
        };
        match i64::try_from(now + i128::from(by)) {
            Ok(_) => Ok(()),
            Err(_) => Err(IncrementRefused::Overflow { value: now, by }),
        }
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn read_values_answer_what_they_hold() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let lww = ReadValue::Lww {
            value: b("v"),
            stamp: None,
        };
        assert_eq!(lww.as_bytes(), Some(&b("v")));
        assert_eq!(lww.as_counter(), None);
        assert_eq!(lww.members(), None);
        let set = ReadValue::OrSet {
            members: vec![b("a"), b("b")],
        };
        assert_eq!(set.members(), Some(&[b("a"), b("b")][..]));
        assert_eq!(set.as_bytes(), None);
        assert_eq!(ReadValue::Counter { value: -3 }.as_counter(), Some(-3));
        // Past the 64-bit range (concurrent increments on two replicas), read at its edge.
        let past = i128::from(i64::MAX) + 5;
        assert_eq!(
            ReadValue::Counter { value: past }.as_counter(),
            Some(i64::MAX)
        );
        assert_eq!(
            ReadValue::Counter { value: -past }.as_counter(),
            Some(i64::MIN)
        );
        assert_eq!(ReadValue::Max { value: 9 }.as_max(), Some(9));
        let winner = ReadValue::Priority {
            priority: 1,
            value: b("w"),
        };
        assert_eq!(winner.as_bytes(), Some(&b("w")));
    }

    use calm_lattice::Hlc;

    use super::*;

    fn ctx(r: u64, ms: u64) -> WriteCtx {
        WriteCtx {
            replica: ReplicaId(r),
            stamp: Stamp::new(Hlc::new(ms, 0), ReplicaId(r)),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Values nest at most two deep; a deeper encoding (which a peer could make as deep as
    /// a frame allows, to overflow the decoder's stack) is refused, not recursed into.
    #[test]
    fn decoding_refuses_values_nested_deeper_than_they_can_be() {
        let config = bincode::config::standard();
        let encode = |v: &Value| bincode::serde::encode_to_vec(v, config).unwrap();
        let decode = |b: &[u8]| bincode::serde::decode_from_slice::<Value, _>(b, config);
        let since = ctx(1, 5).stamp;
        let expiring = |v: Value| Value::Expiring {
            deadline: Lww::new(since, Some(9)),
            value: Box::new(v),
        };
        let generation = |v: Value| Value::Generation {
            since,
            value: Box::new(v),
        };
        let plain = Value::Lww(Lww::new(since, Some(b("v"))));
        let legal = generation(expiring(plain.clone()));
        assert_eq!(decode(&encode(&legal)).unwrap().0, legal);
        let mut deep = legal;
        for _ in 0..100 {
            deep = generation(deep);
            let err = decode(&encode(&deep)).unwrap_err().to_string();
            assert!(err.contains("nested more than two deep"), "{err}");
        }
        // The refusal leaves nothing behind: the next value decodes.
        assert_eq!(decode(&encode(&plain)).unwrap().0, plain);
    }

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(k.name().parse::<Kind>(), Ok(k));
        }
        let err = "stream".parse::<Kind>().unwrap_err();
        assert!(err.to_string().contains("'stream'"));
    }

    #[test]
    fn write_of_another_kind_changes_nothing() {
        let mut v = Value::empty(Kind::Lww);
        v.apply(Write::Lww(b("x")), ctx(1, 1)).unwrap();
        let before = v.clone();
        let err = v.apply(Write::Increment(1), ctx(1, 2)).unwrap_err();
        assert_eq!(
            err,
            KindMismatch {
                stored: Kind::Lww,
                attempted: Kind::Counter
            }
        );
        assert_eq!(v, before);
    }

    /// An application's lattice for the tests of [`custom`]: the most seen, and who.
    #[derive(
        calm_lattice::Lattice, Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize,
    )]
    struct Tally {
        most: Max<u64>,
        who: calm_lattice::SetUnionBTreeSet<String>,
    }

    impl CustomLattice for Tally {
        const KIND: &'static str = "tally";
    }

    fn tally(most: u64, who: &str) -> Tally {
        Tally {
            most: Max::new(most),
            who: calm_lattice::SetUnionBTreeSet::new_from([who.to_string()]),
        }
    }

    fn read_tally(v: &Value) -> Option<Tally> {
        v.read(false).map(|r| r.custom::<Tally>().unwrap())
    }

    /// A value of an application's kind merges as its type does, on every replica in any
    /// order; a delete starts it afresh there and wherever the delete goes; it keeps its
    /// kind against writes of calm's kinds, and a key deleted of another kind takes it.
    #[test]
    fn an_applications_kind_merges_deletes_and_keeps_its_kind() {
        Kinds::new().with::<Tally>().unwrap();
        let kind = Kind::Custom(CustomKind::new("tally").unwrap());
        let w = |t: &Tally| Write::custom(t).unwrap();
        assert!(w(&tally(1, "a")).is_idempotent());
        let (mut here, mut there) = (Value::empty(kind), Value::empty(kind));
        assert_eq!(read_tally(&here), None, "bottom reads as not found");
        let d1 = here.apply(w(&tally(3, "ann")), ctx(1, 10)).unwrap();
        let d2 = there.apply(w(&tally(5, "bob")), ctx(2, 11)).unwrap();
        let d3 = here.apply(w(&tally(1, "cy")), ctx(1, 12)).unwrap();
        // Deltas arrive in any order, some twice.
        there.merge(d3.clone()).unwrap();
        there.merge(d1.clone()).unwrap();
        here.merge(d2.clone()).unwrap();
        here.merge(d1).unwrap();
        let both = Tally {
            most: Max::new(5),
            who: calm_lattice::SetUnionBTreeSet::new_from(["ann", "bob", "cy"].map(String::from)),
        };
        assert_eq!(read_tally(&here), Some(both.clone()));
        assert_eq!(here, there);
        assert_eq!(here.kind(), kind);
        assert!(!here.written_by(ReplicaId(1)));

        // Calm's own kinds are refused, and change nothing.
        let before = here.clone();
        let err = here.apply(Write::Lww(b("x")), ctx(1, 13)).unwrap_err();
        assert_eq!(err.stored, kind);
        assert_eq!(here, before);

        // A delete: not found here and where it goes; a later write starts afresh, a
        // write concurrent with the delete is dropped.
        let del = here.delete(ctx(1, 20)).expect("something to delete");
        assert_eq!(read_tally(&here), None);
        let late = there.apply(w(&tally(9, "dan")), ctx(2, 19)).unwrap();
        there.merge(del.clone()).unwrap();
        assert_eq!(
            read_tally(&there),
            None,
            "the delete replaces the older generation"
        );
        here.merge(late).unwrap();
        assert_eq!(
            read_tally(&here),
            None,
            "a write the delete did not see is dropped"
        );
        assert!(here.delete(ctx(1, 21)).is_none(), "nothing left to delete");
        let after = here.apply(w(&tally(2, "eve")), ctx(1, 22)).unwrap();
        there.merge(after).unwrap();
        assert_eq!(read_tally(&here), Some(tally(2, "eve")));
        assert_eq!(here, there);

        // An expiring value of the kind, deleted and written again: a delete removes the
        // deadline too.
        here.expire(Some(1_000), ctx(1, 23)).unwrap();
        assert_eq!(here.deadline(), Some(1_000));
        assert_eq!(here.read_at(1_000, false), None);
        here.delete(ctx(1, 24)).unwrap();
        assert_eq!(here.deadline(), None);

        // A string key, deleted, becomes a tally with the next write of one.
        let mut string = Value::empty(Kind::Lww);
        let put = string.apply(Write::Lww(b("v")), ctx(3, 30)).unwrap();
        string.delete(ctx(3, 31)).unwrap();
        let mut elsewhere = Value::empty(Kind::Lww);
        elsewhere.merge(put).unwrap();
        let d = string.apply(w(&tally(4, "fay")), ctx(3, 32)).unwrap();
        elsewhere.merge(d).unwrap();
        assert_eq!(read_tally(&elsewhere), Some(tally(4, "fay")));
        assert_eq!(elsewhere.kind(), kind);

        // Encodings round-trip, and the state is the type's own encoding.
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&here, config).unwrap();
        let (back, _) = bincode::serde::decode_from_slice::<Value, _>(&bytes, config).unwrap();
        assert_eq!(back, here);
    }

    /// For every kind: a delete makes the key read as not found, on the replica that deleted
    /// and on any replica that receives the delta; a write after the delete is visible again.
    #[test]
    fn delete_is_real_for_every_kind() {
        let writes = [
            Write::Lww(b("v")),
            Write::SetAdd(vec![b("a")]),
            Write::OrSetAdd(vec![b("a")]),
            Write::Increment(3),
            Write::Max(9),
            Write::Priority {
                priority: 1,
                value: b("p"),
            },
            Write::SingleCausal(b("c")),
            Write::MultiCausal {
                value: b("m"),
                deps: vec![],
            },
            Write::HashSet(vec![(b("f"), b("v"))]),
            Write::ZAdd(vec![(b("m"), Score::new(1.0).unwrap())]),
            Write::ListPush {
                front: false,
                values: vec![b("x")],
            },
        ];
        for w in writes {
            let kind = w.kind();
            let mut here = Value::empty(kind);
            let d1 = here.apply(w.clone(), ctx(1, 10)).unwrap();
            let mut there = Value::empty(kind);
            there.merge(d1).unwrap();
            assert!(here.read(false).is_some(), "{kind}: written value visible");
            let del = here.delete(ctx(1, 11)).expect("something to delete");
            assert_eq!(here.read(false), None, "{kind}: not found after delete");
            there.merge(del).unwrap();
            assert_eq!(there.read(false), None, "{kind}: delete replicates");
            assert!(
                here.delete(ctx(1, 12)).is_none(),
                "{kind}: nothing left to delete"
            );
            here.apply(w, ctx(1, 13)).unwrap();
            assert!(
                here.read(false).is_some(),
                "{kind}: write after delete is visible"
            );
        }
    }

    /// `is_idempotent` tells the truth: a write retried (sent again, through another
    /// replica) after it was applied reads as it did after the first time exactly when it
    /// says so. Every kind of write, each on a value it changes.
    #[test]
    fn a_retried_write_applies_twice_exactly_when_not_idempotent() {
        let list = || Write::ListPush {
            front: false,
            values: vec![b("a"), b("a"), b("c")],
        };
        let score = |n| Score::new(n).unwrap();
        let mut merged = Value::empty(Kind::Set);
        merged
            .apply(Write::SetAdd(vec![b("m")]), ctx(3, 1))
            .unwrap();
        let cases: Vec<(Vec<Write>, Write)> = vec![
            (vec![Write::Lww(b("x"))], Write::Lww(b("y"))),
            (vec![], Write::SetAdd(vec![b("x")])),
            (vec![], Write::OrSetAdd(vec![b("x")])),
            (
                vec![Write::OrSetAdd(vec![b("x"), b("y")])],
                Write::OrSetRemove(vec![b("x")]),
            ),
            (vec![Write::Increment(2)], Write::Increment(1)),
            (vec![Write::Max(1)], Write::Max(5)),
            (
                vec![],
                Write::Priority {
                    priority: 3,
                    value: b("p"),
                },
            ),
            (
                vec![Write::SingleCausal(b("x"))],
                Write::SingleCausal(b("y")),
            ),
            (
                vec![],
                Write::MultiCausal {
                    value: b("y"),
                    deps: vec![],
                },
            ),
            (vec![], Write::HashSet(vec![(b("f"), b("v"))])),
            (
                vec![Write::HashSet(vec![(b("f"), b("v")), (b("g"), b("w"))])],
                Write::HashDel(vec![b("f")]),
            ),
            (
                vec![Write::HashSet(vec![(b("f"), b("1"))])],
                Write::HashIncr {
                    field: b("f"),
                    by: 2,
                },
            ),
            (vec![], Write::ZAdd(vec![(b("m"), score(1.5))])),
            (
                vec![Write::ZAdd(vec![
                    (b("m"), score(1.0)),
                    (b("n"), score(2.0)),
                ])],
                Write::ZRem(vec![b("m")]),
            ),
            (
                vec![Write::ZAdd(vec![(b("m"), score(1.0))])],
                Write::ZIncr {
                    member: b("m"),
                    by: score(2.0),
                },
            ),
            (
                vec![list()],
                Write::ListPush {
                    front: true,
                    values: vec![b("z")],
                },
            ),
            (
                vec![list()],
                Write::ListInsert {
                    pivot: b("c"),
                    before: true,
                    value: b("z"),
                },
            ),
            (
                vec![list()],
                Write::ListRem {
                    count: 1,
                    value: b("a"),
                },
            ),
            (
                vec![list()],
                Write::ListSet {
                    index: 0,
                    value: b("z"),
                },
            ),
            (vec![list()], Write::ListTrim { start: 1, stop: -1 }),
            (vec![], Write::Merge(merged)),
        ];
        for (setup, write) in cases {
            let mut once = Value::empty(write.kind());
            for (t, w) in setup.into_iter().enumerate() {
                once.apply(w, ctx(1, t as u64 + 1)).unwrap();
            }
            let before = once.read(false);
            once.apply(write.clone(), ctx(1, 10)).unwrap();
            assert_ne!(once.read(false), before, "{write:?} changes the value");
            let mut twice = once.clone();
            twice.apply(write.clone(), ctx(2, 11)).unwrap();
            assert_eq!(
                twice.read(false) == once.read(false),
                write.is_idempotent(),
                "{write:?}: once {:?}, twice {:?}",
                once.read(false),
                twice.read(false)
            );
        }
    }

    #[test]
    fn concurrent_write_survives_an_observed_reset() {
        let mut a = Value::empty(Kind::Counter);
        let d = a.apply(Write::Increment(5), ctx(1, 1)).unwrap();
        let mut b_ = Value::empty(Kind::Counter);
        b_.merge(d).unwrap();
        let del = a.delete(ctx(1, 2)).unwrap();
        let inc = b_.apply(Write::Increment(1), ctx(2, 2)).unwrap();
        a.merge(inc).unwrap();
        b_.merge(del).unwrap();
        assert_eq!(a, b_);
        // b's increment had seen the 5, so the surviving count is what b wrote: 6.
        assert_eq!(a.read(false), Some(ReadValue::Counter { value: 6 }));
    }

    #[test]
    fn lww_delete_is_ordered_like_writes() {
        let mut v = Value::empty(Kind::Lww);
        v.apply(Write::Lww(b("old")), ctx(1, 5)).unwrap();
        let del = v.delete(ctx(1, 6)).unwrap();
        // A write stamped before the delete, arriving late, stays deleted...
        let mut late = Value::empty(Kind::Lww);
        let old_write = late.apply(Write::Lww(b("older")), ctx(2, 4)).unwrap();
        v.merge(old_write).unwrap();
        assert_eq!(v.read(false), None);
        // ...and a write stamped after it wins.
        let mut newer = Value::empty(Kind::Lww);
        newer.merge(del).unwrap();
        let w = newer.apply(Write::Lww(b("new")), ctx(2, 7)).unwrap();
        v.merge(w).unwrap();
        assert!(
            matches!(v.read(true), Some(ReadValue::Lww { value, stamp: Some(_) }) if value == b("new"))
        );
    }

    #[test]
    fn replicated_kind_conflicts_converge() {
        let mut a = Value::empty(Kind::Lww);
        a.apply(Write::Lww(b("x")), ctx(1, 1)).unwrap();
        let mut c = Value::empty(Kind::Counter);
        c.apply(Write::Increment(1), ctx(2, 1)).unwrap();
        let (a0, c0) = (a.clone(), c.clone());
        let (_, conflict) = a.merge_replicated(c0);
        assert!(conflict.is_some());
        c.merge_replicated(a0);
        assert_eq!(a, c);
    }

    #[test]
    fn a_deleted_key_takes_any_kind() {
        // SADD x a; DEL x; SET x v — and then INCR on the string is refused again.
        let mut v = Value::empty(Kind::OrSet);
        v.apply(Write::OrSetAdd(vec![b("a")]), ctx(1, 1)).unwrap();
        v.delete(ctx(1, 2)).unwrap();
        let delta = v.apply(Write::Lww(b("v")), ctx(1, 3)).unwrap();
        assert_eq!(v.kind(), Kind::Lww);
        assert_eq!(
            v.read(false).and_then(|r| r.as_bytes().cloned()),
            Some(b("v"))
        );
        assert_eq!(delta.generation(), Some(ctx(1, 3).stamp));
        let err = v.apply(Write::Increment(1), ctx(1, 4)).unwrap_err();
        assert_eq!(err.stored, Kind::Lww);
        // A removal from the deleted string creates nothing.
        v.delete(ctx(1, 5)).unwrap();
        v.apply(Write::OrSetRemove(vec![b("a")]), ctx(1, 6))
            .unwrap_err();
        assert_eq!(v.kind(), Kind::Lww);
        // Deleted again, it takes a counter: a newer generation.
        let d = v.apply(Write::Increment(2), ctx(1, 7)).unwrap();
        assert_eq!(d.generation(), Some(ctx(1, 7).stamp));
        assert_eq!(v.read(false).and_then(|r| r.as_counter()), Some(2));
    }

    /// Orders to deliver `n` deltas in: every rotation and its reverse.
    fn orders(n: usize) -> Vec<Vec<usize>> {
        let mut all = Vec::new();
        for start in 0..n {
            let order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
            all.push(order.iter().rev().copied().collect());
            all.push(order);
        }
        all
    }

    fn hash_fields(v: &Value) -> Vec<(String, String)> {
        let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        match v.read(false) {
            Some(ReadValue::Hash { fields }) => fields.iter().map(|(f, x)| (s(f), s(x))).collect(),
            None => vec![],
            Some(other) => panic!("not a hash: {other:?}"),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hash_fields_set_count_and_go() {
        let mut h = Value::empty(Kind::Hash);
        let set =
            |fs: &[(&str, &str)]| Write::HashSet(fs.iter().map(|(f, v)| (b(f), b(v))).collect());
        h.apply(set(&[("a", "1"), ("b", "x")]), ctx(1, 1)).unwrap();
        h.apply(
            Write::HashIncr {
                field: b("a"),
                by: 4,
            },
            ctx(1, 2),
        )
        .unwrap();
        h.apply(
            Write::HashIncr {
                field: b("c"),
                by: -2,
            },
            ctx(1, 3),
        )
        .unwrap();
        assert_eq!(
            hash_fields(&h),
            pairs(&[("a", "5"), ("b", "x"), ("c", "-2")])
        );
        // A set starts the field afresh.
        h.apply(set(&[("a", "100")]), ctx(1, 4)).unwrap();
        h.apply(
            Write::HashIncr {
                field: b("a"),
                by: 1,
            },
            ctx(1, 5),
        )
        .unwrap();
        assert_eq!(hash_fields(&h)[0], ("a".into(), "101".into()));
        // Increments of bytes that are not an integer, or past the 64-bit range, are refused.
        let incr = |field: &str, by| Write::HashIncr {
            field: b(field),
            by,
        };
        assert_eq!(
            h.check_increment(&incr("b", 1)),
            Err(IncrementRefused::NotInteger)
        );
        assert_eq!(
            h.check_increment(&incr("a", i64::MAX)),
            Err(IncrementRefused::Overflow {
                value: 101,
                by: i64::MAX
            })
        );
        assert_eq!(h.check_increment(&incr("new", i64::MAX)), Ok(()));
        // Removing fields; removing the last one leaves nothing to read.
        h.apply(Write::HashDel(vec![b("a"), b("b"), b("zz")]), ctx(1, 6))
            .unwrap();
        assert_eq!(hash_fields(&h), pairs(&[("c", "-2")]));
        h.apply(Write::HashDel(vec![b("c")]), ctx(1, 7)).unwrap();
        assert_eq!(h.read(false), None);
        assert!(!h.is_visible());
        // A removal from a deleted hash creates nothing; a string may take the key.
        let d = h.apply(Write::Lww(b("s")), ctx(1, 8)).unwrap();
        assert_eq!(d.kind(), Kind::Lww);
    }

    /// Two replicas change one hash at once: set against increment, set against set,
    /// increment against increment, removal against a concurrent set. Every order of
    /// delivery converges, and to the documented rules.
    #[test]
    fn concurrent_hash_writes_converge_to_the_rules() {
        let set = |f: &str, v: &str| Write::HashSet(vec![(b(f), b(v))]);
        let incr = |f: &str, by| Write::HashIncr { field: b(f), by };
        let mut base = Value::empty(Kind::Hash);
        let mut deltas = vec![
            base.apply(set("n", "10"), ctx(1, 1)).unwrap(),
            base.apply(set("s", "old"), ctx(1, 2)).unwrap(),
            base.apply(set("gone", "x"), ctx(1, 3)).unwrap(),
            base.apply(set("word", "5"), ctx(1, 4)).unwrap(),
        ];
        let (mut r1, mut r2) = (base.clone(), base.clone());
        // n: a set to 20 (r1) against an increment by 3 (r2): 23.
        deltas.push(r1.apply(set("n", "20"), ctx(1, 10)).unwrap());
        deltas.push(r2.apply(incr("n", 3), ctx(2, 10)).unwrap());
        // s: two sets, the later stamp wins.
        deltas.push(r1.apply(set("s", "early"), ctx(1, 11)).unwrap());
        deltas.push(r2.apply(set("s", "late"), ctx(2, 12)).unwrap());
        // gone: removed on r1, set on r2 at once: the set wins.
        deltas.push(
            r1.apply(Write::HashDel(vec![b("gone")]), ctx(1, 13))
                .unwrap(),
        );
        deltas.push(r2.apply(set("gone", "kept"), ctx(2, 13)).unwrap());
        // word: set to bytes that are not a number on r1, incremented on r2: the bytes.
        deltas.push(r1.apply(set("word", "text"), ctx(1, 14)).unwrap());
        deltas.push(r2.apply(incr("word", 1), ctx(2, 14)).unwrap());
        // c: incremented on both: the sum.
        deltas.push(r1.apply(incr("c", 2), ctx(1, 15)).unwrap());
        deltas.push(r2.apply(incr("c", 5), ctx(2, 15)).unwrap());
        let expected = pairs(&[
            ("c", "7"),
            ("gone", "kept"),
            ("n", "23"),
            ("s", "late"),
            ("word", "text"),
        ]);
        for (k, order) in orders(deltas.len()).into_iter().enumerate() {
            let mut v = Value::empty(Kind::Hash);
            for i in order {
                v.merge(deltas[i].clone()).unwrap();
            }
            assert_eq!(hash_fields(&v), expected, "order {k}");
        }
        r1.merge(r2.clone()).unwrap();
        r2.merge(r1.clone()).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(hash_fields(&r1), expected);
    }

    fn zset(v: &Value) -> Vec<(String, f64)> {
        match v.read(false) {
            Some(ReadValue::SortedSet { members }) => members
                .iter()
                .map(|(m, s)| (String::from_utf8_lossy(m).into_owned(), s.get()))
                .collect(),
            None => vec![],
            Some(other) => panic!("not a sorted set: {other:?}"),
        }
    }

    fn score(x: f64) -> Score {
        Score::new(x).unwrap()
    }

    fn zadd(m: &str, x: f64) -> Write {
        Write::ZAdd(vec![(b(m), score(x))])
    }

    fn zincr(m: &str, by: f64) -> Write {
        Write::ZIncr {
            member: b(m),
            by: score(by),
        }
    }

    /// Sorted sets under racing writes: a `ZADD` against a `ZINCRBY` adds up, two
    /// `ZINCRBY`s add up, two `ZADD`s take the later stamp, a `ZREM` against a `ZADD` keeps
    /// the member; every order of delivery gives the same members in score order.
    #[test]
    fn concurrent_sorted_set_writes_converge_to_the_rules() {
        let mut base = Value::empty(Kind::SortedSet);
        let mut deltas = vec![
            base.apply(zadd("a", 1.0), ctx(1, 1)).unwrap(),
            base.apply(zadd("b", 2.0), ctx(1, 2)).unwrap(),
            base.apply(zadd("c", 3.0), ctx(1, 3)).unwrap(),
        ];
        let (mut r1, mut r2) = (base.clone(), base.clone());
        deltas.push(r1.apply(zadd("a", 10.0), ctx(1, 10)).unwrap());
        deltas.push(r2.apply(zincr("a", 0.5), ctx(2, 10)).unwrap());
        deltas.push(r1.apply(zincr("b", 1.0), ctx(1, 11)).unwrap());
        deltas.push(r2.apply(zincr("b", 2.5), ctx(2, 11)).unwrap());
        deltas.push(r1.apply(Write::ZRem(vec![b("c")]), ctx(1, 12)).unwrap());
        deltas.push(r2.apply(zadd("c", -4.0), ctx(2, 12)).unwrap());
        deltas.push(r1.apply(zadd("d", 7.0), ctx(1, 13)).unwrap());
        deltas.push(r2.apply(zadd("d", 8.0), ctx(2, 14)).unwrap());
        let expected = vec![
            ("c".to_string(), -4.0),
            ("b".to_string(), 5.5),
            ("d".to_string(), 8.0),
            ("a".to_string(), 10.5),
        ];
        for (k, order) in orders(deltas.len()).into_iter().enumerate() {
            let mut v = Value::empty(Kind::SortedSet);
            for i in order {
                v.merge(deltas[i].clone()).unwrap();
            }
            assert_eq!(zset(&v), expected, "order {k}");
        }
        r1.merge(r2).unwrap();
        assert_eq!(zset(&r1), expected);
        // A score never becomes NaN; a removal from a missing member changes nothing.
        r1.apply(zadd("inf", f64::INFINITY), ctx(1, 20)).unwrap();
        assert_eq!(
            r1.check_increment(&zincr("inf", f64::NEG_INFINITY)),
            Err(IncrementRefused::NotANumber)
        );
        assert_eq!(r1.check_increment(&zincr("inf", 1.0)), Ok(()));
        assert!(Score::new(f64::NAN).is_none());
        let nan: Result<Score, _> = serde_json::from_str("NaN");
        assert!(nan.is_err());
    }

    fn sorted_sets(ops: &[(u8, u8, u8, i8)]) -> Vec<OrMap<Bytes, ScoreCell>> {
        let mut replicas = vec![Value::empty(Kind::SortedSet); 3];
        for (time, &(op, r, m, x)) in ops.iter().enumerate() {
            let (r, member) = (usize::from(r % 3), format!("m{}", m % 3));
            let c = ctx(r as u64, time as u64 + 1);
            match op % 4 {
                0 => drop(replicas[r].apply(zadd(&member, f64::from(x)), c)),
                1 => drop(replicas[r].apply(zincr(&member, f64::from(x) / 4.0), c)),
                2 => drop(replicas[r].apply(Write::ZRem(vec![b(&member)]), c)),
                _ => {
                    let from = replicas[usize::from(m % 3)].clone();
                    replicas[r].merge(from).unwrap();
                }
            }
        }
        replicas
            .into_iter()
            .map(|v| match v {
                Value::SortedSet(m) => m,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    proptest::proptest! {
        /// The lattice laws for the map a sorted set keeps, over states reached by random
        /// adds, increments, removals and merges on three replicas.
        #[test]
        fn sorted_set_lattice_laws(ops in proptest::collection::vec(
            (0u8..4, 0u8..3, 0u8..3, -8i8..8), 0..10,
        )) {
            let items = sorted_sets(&ops);
            calm_lattice::laws::check_all(&items);
            calm_lattice::laws::check_atomize(&items);
        }
    }

    /// Expiry: a deadline is a last-writer-wins register beside the value; a `SET` and a
    /// delete take it away, other writes keep it and carry it; the key reads as absent once
    /// it has passed; a write after that starts a new generation, which a late write of the
    /// old one cannot come back into.
    #[test]
    fn deadlines_merge_and_expire() {
        let mut v = Value::empty(Kind::Counter);
        let mut deltas = vec![v.apply(Write::Increment(5), ctx(1, 1)).unwrap()];
        deltas.push(v.expire(Some(100), ctx(1, 2)).unwrap());
        assert_eq!(v.deadline(), Some(100));
        // An increment keeps the deadline, and its delta carries it.
        let inc = v.apply(Write::Increment(1), ctx(1, 3)).unwrap();
        assert_eq!(inc.deadline(), Some(100));
        deltas.push(inc);
        assert_eq!(v.read_at(99, false).and_then(|r| r.as_counter()), Some(6));
        assert_eq!(v.read_at(100, false), None);
        assert!(!v.is_live(100) && v.is_live(99));
        // Every order of the deltas gives the same, expiring value.
        for order in orders(deltas.len()) {
            let mut w = Value::empty(Kind::Counter);
            for i in order {
                w.merge(deltas[i].clone()).unwrap();
            }
            assert_eq!(w, v);
        }
        // A delta arriving alone (where the key was collected) expires as the key did.
        let mut lone = Value::empty(Kind::Counter);
        lone.merge(deltas[2].clone()).unwrap();
        assert_eq!(lone.read_at(100, false), None);
        // A later PERSIST beats the EXPIRE in any order; an earlier one loses.
        let mut a = v.clone();
        let persist = a.expire(None, ctx(2, 4)).unwrap();
        let mut c = v.clone();
        let again = c.expire(Some(50), ctx(3, 3)).unwrap();
        for (mut x, d1, d2) in [
            (v.clone(), persist.clone(), again.clone()),
            (v.clone(), again.clone(), persist.clone()),
        ] {
            x.merge(d1).unwrap();
            x.merge(d2).unwrap();
            assert_eq!(x.deadline(), None);
        }
        // A SET takes the deadline away; a delete too.
        let mut s = Value::empty(Kind::Lww);
        s.apply(Write::Lww(b("x")), ctx(1, 1)).unwrap();
        s.expire(Some(10), ctx(1, 2)).unwrap();
        let set = s.apply(Write::Lww(b("y")), ctx(1, 3)).unwrap();
        assert_eq!((s.deadline(), set.deadline()), (None, None));
        s.expire(Some(10), ctx(1, 4)).unwrap();
        s.delete(ctx(1, 5)).unwrap();
        assert_eq!(s.deadline(), None);
        // After the deadline, a write restarts the key: the old value's late writes (and
        // its deadline) stay out of it.
        let mut e = v.clone();
        let late = {
            let mut other = v.clone();
            other.apply(Write::Increment(100), ctx(2, 50)).unwrap()
        };
        e.restart(Kind::Counter, ctx(1, 200));
        let fresh = e.apply(Write::Increment(1), ctx(1, 200)).unwrap();
        e.merge(late).unwrap();
        assert_eq!(e.read_at(300, false).and_then(|r| r.as_counter()), Some(1));
        assert_eq!(e.deadline(), None);
        let mut old = v.clone();
        old.merge(fresh).unwrap();
        assert_eq!(old.read_at(300, false), e.read_at(300, false));
        assert_eq!(old.generation(), e.generation());
    }

    fn list_values(v: &Value) -> Vec<String> {
        match v.read(false) {
            Some(ReadValue::List { values }) => values
                .iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect(),
            None => vec![],
            Some(other) => panic!("not a list: {other:?}"),
        }
    }

    /// Lists: pushes at both ends, inserts next to a pivot, removals by value, replacement
    /// and trimming, as Redis does them on one replica; and two replicas editing at once
    /// converge in every order of delivery, keeping both sides' inserts.
    #[test]
    fn lists_edit_as_redis_and_converge() {
        let push = |front: bool, vs: &[&str]| Write::ListPush {
            front,
            values: vs.iter().map(|x| b(x)).collect(),
        };
        let mut l = Value::empty(Kind::List);
        l.apply(push(false, &["b", "c"]), ctx(1, 1)).unwrap();
        l.apply(push(true, &["a", "z"]), ctx(1, 2)).unwrap();
        assert_eq!(list_values(&l), ["z", "a", "b", "c"]);
        let insert = |pivot: &str, before: bool, value: &str| Write::ListInsert {
            pivot: b(pivot),
            before,
            value: b(value),
        };
        l.apply(insert("b", true, "x"), ctx(1, 3)).unwrap();
        l.apply(insert("c", false, "y"), ctx(1, 4)).unwrap();
        l.apply(insert("z", true, "w"), ctx(1, 5)).unwrap();
        l.apply(insert("nope", true, "never"), ctx(1, 6)).unwrap();
        assert_eq!(list_values(&l), ["w", "z", "a", "x", "b", "c", "y"]);
        l.apply(push(false, &["a", "a"]), ctx(1, 7)).unwrap();
        l.apply(
            Write::ListRem {
                count: -2,
                value: b("a"),
            },
            ctx(1, 8),
        )
        .unwrap();
        assert_eq!(list_values(&l), ["w", "z", "a", "x", "b", "c", "y"]);
        l.apply(
            Write::ListSet {
                index: -1,
                value: b("Y"),
            },
            ctx(1, 9),
        )
        .unwrap();
        l.apply(
            Write::ListSet {
                index: 99,
                value: b("no"),
            },
            ctx(1, 10),
        )
        .unwrap();
        l.apply(Write::ListTrim { start: 1, stop: -2 }, ctx(1, 11))
            .unwrap();
        assert_eq!(list_values(&l), ["z", "a", "x", "b", "c"]);
        // Two replicas at once: one pushes at both ends and inserts after "a", the other
        // removes "x" and inserts after "a" too.
        let (mut r1, mut r2) = (l.clone(), l.clone());
        let mut deltas = vec![
            r1.apply(push(true, &["first"]), ctx(1, 20)).unwrap(),
            r1.apply(push(false, &["last"]), ctx(1, 21)).unwrap(),
            r1.apply(insert("a", false, "one"), ctx(1, 22)).unwrap(),
            r2.apply(
                Write::ListRem {
                    count: 0,
                    value: b("x"),
                },
                ctx(2, 20),
            )
            .unwrap(),
            r2.apply(insert("a", false, "two"), ctx(2, 21)).unwrap(),
        ];
        deltas.push(r2.apply(push(false, &["end2"]), ctx(2, 22)).unwrap());
        let mut outcomes = Vec::new();
        for order in orders(deltas.len()) {
            let mut v = l.clone();
            for i in order {
                v.merge(deltas[i].clone()).unwrap();
            }
            outcomes.push(list_values(&v));
        }
        for o in &outcomes {
            assert_eq!(o, &outcomes[0]);
        }
        let got = &outcomes[0];
        assert_eq!(got.first().map(String::as_str), Some("first"));
        assert!(!got.contains(&"x".to_string()));
        for x in ["one", "two", "last", "end2"] {
            assert!(got.contains(&x.to_string()), "{x} in {got:?}");
        }
        // Both inserts after "a" sit right after it, in some order both replicas agree on.
        let a = got.iter().position(|x| x == "a").unwrap();
        let mut next: Vec<&str> = got[a + 1..a + 3].iter().map(String::as_str).collect();
        next.sort();
        assert_eq!(next, ["one", "two"]);
        // A delete removes every element seen; the key takes any kind afterwards.
        let mut d = l.clone();
        d.delete(ctx(1, 30)).unwrap();
        assert_eq!(d.read(false), None);
        d.apply(Write::Lww(b("s")), ctx(1, 31)).unwrap();
        assert_eq!(d.kind(), Kind::Lww);
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        for ok in [
            "0",
            "-1",
            "42",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_int(ok.as_bytes()), ok.parse().ok(), "{ok}");
        }
        for bad in [
            "",
            "+1",
            "01",
            "-0",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
            "x",
        ] {
            assert_eq!(parse_int(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn generations_converge_in_any_order() {
        // Three replicas hold set x. Replica 1 deletes it and writes a string; replica 2,
        // concurrently, deletes it and increments a counter (a later stamp); replica 3,
        // not having seen either, adds a member. Every order of delivery ends in replica
        // 2's counter, and an old generation's delta arriving late changes nothing.
        let mut base = Value::empty(Kind::OrSet);
        let first = base
            .apply(Write::OrSetAdd(vec![b("a")]), ctx(3, 1))
            .unwrap();
        let mut deltas = Vec::new();
        let mut r1 = base.clone();
        deltas.push(r1.delete(ctx(1, 10)).unwrap());
        deltas.push(r1.apply(Write::Lww(b("s")), ctx(1, 11)).unwrap());
        let mut r2 = base.clone();
        deltas.push(r2.delete(ctx(2, 12)).unwrap());
        deltas.push(r2.apply(Write::Increment(5), ctx(2, 13)).unwrap());
        let mut r3 = base.clone();
        deltas.push(
            r3.apply(Write::OrSetAdd(vec![b("late")]), ctx(3, 14))
                .unwrap(),
        );
        deltas.push(first);
        let mut outcomes = Vec::new();
        for order in orders(deltas.len()) {
            let mut v = Value::empty(Kind::OrSet);
            for i in order {
                v.merge_replicated(deltas[i].clone());
            }
            outcomes.push(v);
        }
        for (i, v) in outcomes.iter().enumerate() {
            assert_eq!(v.kind(), Kind::Counter, "order {i}");
            assert_eq!(v.read(false).and_then(|r| r.as_counter()), Some(5));
            assert_eq!(v, &outcomes[0], "order {i} converges");
        }
        // Whole states merge to the same value too.
        for (mut a, b_) in [(r1.clone(), r2.clone()), (r2.clone(), r1.clone()), (r3, r2)] {
            a.merge_replicated(b_);
            assert_eq!(a.read(false), outcomes[0].read(false));
        }
    }
}
