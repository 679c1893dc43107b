//! The vocabulary every layer speaks: one operation on one key ([`Op`]), what became of it
//! ([`Reply`], [`OpError`], [`OpResult`]), the kinds metrics count ([`OpKind`]) and how
//! many replicas acknowledge a write ([`Ack`]). Nothing here depends on anything above it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::value::{Kind, KindMismatch, Probe, Probed, ReadValue, Write};

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
        /// Also return version metadata (timestamp, vector clock).
        meta: bool,
    },
    /// Change a key.
    Write {
        /// The key.
        key: Bytes,
        /// The change.
        write: Write,
    },
    /// Delete a key (as far as its replica has seen it).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Read a key as the merge of every replica's value (slower than [`Op::Get`], but it
    /// sees every write any replica has merged).
    GetAll {
        /// The key.
        key: Bytes,
        /// Also return version metadata.
        meta: bool,
    },
    /// The stored lattice value of a key on this replica, deletions included (used by
    /// [`Op::GetAll`]).
    Raw {
        /// The key.
        key: Bytes,
    },
    /// Give a key a deadline, or (`None`) take its deadline away. A key that is not found
    /// is left alone.
    Expire {
        /// The key.
        key: Bytes,
        /// Milliseconds since the Unix epoch at which the key expires.
        at_ms: Option<u64>,
    },
    /// Read only part of a key: some members, or how many there are (see [`Probe`]). It
    /// goes where an [`Op::Get`] goes and sees what it would see, at the cost of a lookup
    /// rather than a copy of the whole value.
    Probe {
        /// The key.
        key: Bytes,
        /// What to read.
        probe: Probe,
    },
}

/// Constructors for the common operations:
///
/// ```
/// use calm_kvs::{Op, Write};
///
/// let batch = [
///     Op::put("greeting", "hello"),
///     Op::incr("visits", 1),
///     Op::orset_add("tags", ["new", "red"]),
///     Op::get("greeting"),
/// ];
/// assert_eq!(batch[1], Op::Write { key: "visits".into(), write: Write::Increment(1) });
/// assert_eq!(batch[3].key().as_ref(), b"greeting");
/// ```
impl Op {
    /// Reads `key`.
    pub fn get(key: impl Into<Bytes>) -> Op {
        Op::Get {
            key: key.into(),
            meta: false,
        }
    }

    /// Sets `key` to `value` (last writer wins).
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::write(key, Write::Lww(value.into()))
    }

    /// Adds `by` to the counter `key` (negative to subtract).
    pub fn incr(key: impl Into<Bytes>, by: i64) -> Op {
        Op::write(key, Write::Increment(by))
    }

    /// Adds `members` to the grow-only set `key`.
    pub fn set_add<M: Into<Bytes>>(
        key: impl Into<Bytes>,
        members: impl IntoIterator<Item = M>,
    ) -> Op {
        Op::write(
            key,
            Write::SetAdd(members.into_iter().map(Into::into).collect()),
        )
    }

    /// Adds `members` to the add-wins set `key`.
    pub fn orset_add<M: Into<Bytes>>(
        key: impl Into<Bytes>,
        members: impl IntoIterator<Item = M>,
    ) -> Op {
        Op::write(
            key,
            Write::OrSetAdd(members.into_iter().map(Into::into).collect()),
        )
    }

    /// Removes `members` from the add-wins set `key` (as far as its replica has seen them).
    pub fn orset_remove<M: Into<Bytes>>(
        key: impl Into<Bytes>,
        members: impl IntoIterator<Item = M>,
    ) -> Op {
        Op::write(
            key,
            Write::OrSetRemove(members.into_iter().map(Into::into).collect()),
        )
    }

    /// Applies `write` to `key`.
    pub fn write(key: impl Into<Bytes>, write: Write) -> Op {
        Op::Write {
            key: key.into(),
            write,
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Bytes>) -> Op {
        Op::Delete { key: key.into() }
    }

    /// The key this operation is about.
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Get { key, .. }
            | Op::Write { key, .. }
            | Op::Delete { key }
            | Op::GetAll { key, .. }
            | Op::Raw { key }
            | Op::Expire { key, .. }
            | Op::Probe { key, .. } => key,
        }
    }

    /// Whether this is a read of one replica's copy ([`Op::Get`] or [`Op::Probe`]).
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. } | Op::Probe { .. })
    }

    /// The kind of operation, for metrics.
    pub fn op_kind(&self) -> OpKind {
        match self {
            Op::Get { .. } | Op::GetAll { .. } | Op::Raw { .. } | Op::Probe { .. } => OpKind::Get,
            Op::Write { .. } | Op::Expire { .. } => OpKind::Write,
            Op::Delete { .. } => OpKind::Delete,
        }
    }
}

/// The kinds of operation, as counted by metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Reads.
    Get,
    /// Writes of every value kind.
    Write,
    /// Deletes.
    Delete,
}

impl OpKind {
    /// Every kind of operation.
    pub const ALL: [OpKind; 3] = [OpKind::Get, OpKind::Write, OpKind::Delete];

    /// Its name in stats.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Write => "write",
            OpKind::Delete => "delete",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A read: the value, or `None` when the key is not found.
    Value(Option<ReadValue>),
    /// A write was merged.
    Written,
    /// A replica's stored value (for [`Op::Raw`]).
    Raw(Option<crate::value::Value>),
    /// A delete; `existed` says whether there was a visible value.
    Deleted {
        /// Whether the key had a visible value.
        existed: bool,
    },
    /// An [`Op::Expire`]: whether it changed the key's deadline (a key not found, or
    /// `None` for a key without a deadline, changes nothing).
    Expiry {
        /// Whether the deadline was set or taken away.
        changed: bool,
    },
    /// An [`Op::Probe`]: what it found, or `None` when the key is not found.
    Probed(Option<Probed>),
}

/// Why one operation failed. Other operations of the same batch are unaffected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// The key holds another kind of value; nothing was changed.
    #[error(
        "key holds a {stored} value; a {attempted} write cannot change it (delete the key first, or use a new key)"
    )]
    KindMismatch {
        /// The kind the key holds.
        stored: Kind,
        /// The kind of the refused write.
        attempted: Kind,
    },
    /// The key is empty.
    #[error("empty key; keys are 1 to {max} bytes")]
    EmptyKey {
        /// The longest key allowed.
        max: usize,
    },
    /// The key is too long.
    #[error("key of {len} bytes is longer than the limit of {max} bytes")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is too large.
    #[error("value of {len} bytes is larger than the limit of {max} bytes")]
    ValueTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node is shutting down and did not run the operation.
    #[error("the node is shutting down; retry on another node")]
    ShuttingDown,
    /// No node that owns the key could be reached.
    #[error("no replica of the key is reachable ({reason}); retry shortly")]
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// This node does not own the key (the client's routing table is stale).
    #[error("this node does not own the key; its owners are {owners:?}")]
    NotOwner {
        /// The key's owners as this node sees them.
        owners: Vec<String>,
    },
    /// The node a write was forwarded to did not answer in time: the write may or may not
    /// have been applied, so it is not silently run elsewhere. Whether sending it again is
    /// safe: [`Write::is_idempotent`](crate::value::Write::is_idempotent).
    #[error(
        "{node} did not answer in time; the write may or may not have been applied ({})",
        crate::value::RETRY_ADVICE
    )]
    Timeout {
        /// The node that did not answer.
        node: String,
    },
    /// The node could not read or write its disk. A write that answers this was applied in
    /// memory but may not be durable; whether sending it again is safe:
    /// [`Write::is_idempotent`](crate::value::Write::is_idempotent).
    #[error(
        "the node's storage failed: {reason}; the write is applied in memory but may not be on disk ({})",
        crate::value::RETRY_ADVICE
    )]
    Storage {
        /// What failed.
        reason: String,
    },
    /// With ack `all`: the write was merged where it reached, but not on every replica; it
    /// spreads from there. Whether sending it again is safe:
    /// [`Write::is_idempotent`](crate::value::Write::is_idempotent).
    #[error(
        "the write reached {reached} of {wanted} replicas; it is applied where it reached and will spread ({})",
        crate::value::RETRY_ADVICE
    )]
    ReplicationIncomplete {
        /// Replicas that merged the write.
        reached: usize,
        /// Replicas that own the key.
        wanted: usize,
    },
    /// A counter increment that would take the counter, as the replica that ran it sees it,
    /// past the range of a 64-bit integer; nothing was changed. (Concurrent increments on
    /// different replicas are each checked only against what their replica had seen.)
    #[error(
        "increment or decrement would overflow (the counter is {value}; adding {by} leaves the 64-bit range)"
    )]
    Overflow {
        /// The counter as this replica sees it.
        value: i128,
        /// The increment refused.
        by: i64,
    },
    /// An increment of a hash field that holds bytes that are not an integer; nothing was
    /// changed.
    #[error("hash value is not an integer")]
    NotInteger,
    /// An increment of a sorted set member's score that would make it NaN (infinity added
    /// to its opposite); nothing was changed.
    #[error("resulting score is not a number (NaN)")]
    NotANumber,
    /// The connection's user may not do this (see [`acl`](crate::acl)); nothing in the
    /// batch was run.
    #[error("{reason}")]
    Forbidden {
        /// Who may not do what, and which operation of the batch it was.
        reason: String,
    },
    /// The write would take what the keys under a quota's prefix hold on this node past
    /// its limit (see [`quota`](crate::storage::quota)); nothing was changed.
    #[error(
        "quota exceeded: the keys under {prefix:?} hold {used} {measure} on this node and this write would take them to {wanted}, over the limit of {max} (delete keys under the prefix, or raise its quota in the ACL file)"
    )]
    QuotaExceeded {
        /// The quota's prefix.
        prefix: String,
        /// Which limit.
        measure: QuotaMeasure,
        /// What the prefix holds on the node.
        used: u64,
        /// What it would hold after the write.
        wanted: u64,
        /// The limit.
        max: u64,
    },
    /// A write of an application's kind this node was not built with (see
    /// [`custom`](crate::value::custom)); nothing was changed.
    #[error(
        "this node does not take values of kind '{kind}' (it was not started with that kind's code: NodeConfig::kinds); nothing was changed"
    )]
    UnknownKind {
        /// The kind's name.
        kind: String,
    },
    /// A value of an application's kind whose bytes are not a value of its type; nothing
    /// was changed.
    #[error("{reason}; nothing was changed")]
    BadValue {
        /// What is wrong with it.
        reason: String,
    },
}

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuotaMeasure {
    /// Keys held.
    Keys,
    /// Bytes held (keys and payloads).
    Bytes,
}

impl std::fmt::Display for QuotaMeasure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaMeasure::Keys => "keys",
            QuotaMeasure::Bytes => "bytes",
        })
    }
}

/// How many replicas must merge a write before it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ack {
    /// The first replica (fastest; the other owners get the write within about a
    /// millisecond at low load, within a gossip period under load). A read through another
    /// owner may miss it for that long: for the routing client, whose reads go to a key's
    /// first owner too.
    #[default]
    One,
    /// Every replica of the key (survives the loss of all but one of them).
    All,
    /// At least this many replicas of the key, counting the first (survives the loss of
    /// one fewer).
    Replicas(u8),
    /// The first replica, once every other owner of the key seen alive merged the write
    /// too, so that a read through any node finds it while no owner fails. An owner that
    /// does not answer (it is down but not yet declared so) neither fails the write nor
    /// holds it up for longer than the peer timeout; it gets the write from the hints and
    /// anti-entropy as with `One`. What the Redis port and
    /// [`RequestBody::ops`](crate::protocol::RequestBody::ops) use.
    Visible,
}

impl From<KindMismatch> for OpError {
    fn from(m: KindMismatch) -> Self {
        OpError::KindMismatch {
            stored: m.stored,
            attempted: m.attempted,
        }
    }
}

/// The result of one operation.
pub type OpResult = Result<Reply, OpError>;

/// Which keys a listing (`KEYS`, `SCAN`) wants: names matching a glob-style pattern, of one
/// kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyFilter {
    /// Redis's glob-style pattern: `*` any run of bytes, `?` one byte, `[abc]`, `[^a]`,
    /// `[a-z]` one of (or none of) a class, `\\` before a byte to take it literally.
    /// `None`: every name.
    pub pattern: Option<Bytes>,
    /// Only keys of these kinds (`None`: of any kind).
    pub kinds: Option<Vec<Kind>>,
}

impl KeyFilter {
    /// Whether a key's name passes the pattern.
    pub fn name_matches(&self, key: &[u8]) -> bool {
        self.pattern.as_ref().is_none_or(|p| glob_match(p, key))
    }

    /// Whether a key of `kind` passes.
    pub fn kind_matches(&self, kind: Kind) -> bool {
        self.kinds.as_ref().is_none_or(|ks| ks.contains(&kind))
    }
}

/// Redis's glob-style match of `text` against `pattern` (see [`KeyFilter::pattern`]).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative, with one backtracking point for the last `*`: linear in practice and
    // never recursive, whatever the pattern.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    let (matched, next) = class_match(pattern, p, text[t]);
                    if matched {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class opening at `pattern[open]` (`[`): whether it matched and
/// where the pattern goes on (a class that is not closed is a literal `[`).
fn class_match(pattern: &[u8], open: usize, c: u8) -> (bool, usize) {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() && (pattern[i] != b']' || first) {
        first = false;
        let lo = if pattern[i] == b'\\' && i + 1 < pattern.len() {
            i += 1;
            pattern[i]
        } else {
            pattern[i]
        };
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    if i >= pattern.len() {
        // Not closed: the `[` stands for itself.
        return (c == b'[', open + 1);
    }
    (matched != negate, i + 1)
}

#[cfg(test)]
mod glob_test {
    use super::glob_match;

    #[test]
    fn globs_match_as_redis_matches_them() {
        let yes = [
            ("*", ""),
            ("*", "anything"),
            ("user:*", "user:42"),
            ("h?llo", "hello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("*:*:end", "a:b:c:end"),
            ("a\\*b", "a*b"),
            ("*llo", "hello"),
        ];
        let no = [
            ("user:*", "users"),
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("a\\*b", "axb"),
            ("*llo", "hell"),
            ("", "x"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p.as_bytes(), t.as_bytes()), "{p} ~ {t}");
        }
        for (p, t) in no {
            assert!(!glob_match(p.as_bytes(), t.as_bytes()), "{p} !~ {t}");
        }
    }
}
