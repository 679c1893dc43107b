//! Redis commands mapped onto calm's lattices, and their replies.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::acl::{Access, Acl, Right};
use crate::op::{KeyFilter, Op, OpError, OpResult, Reply, glob_match};
use crate::value::{Found, Kind, Probe, Probed, ReadValue, Score, Write};

use super::docs::{Arg, arguments};

/// A reply, before it is encoded for the connection's protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    /// `+OK`-style status.
    Simple(Bytes),
    /// An error line: its first word is the code (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// Nil.
    Null,
    /// Nil where an array was expected: `*-1` in RESP2 (as Redis answers it), null in
    /// RESP3.
    NullArray,
    /// An array.
    Array(Vec<Out>),
    /// Out of band: a subscription's confirmation or message (RESP3 push; an array in
    /// RESP2).
    Push(Vec<Out>),
    /// A map (RESP3; a flat array in RESP2).
    Map(Vec<(Out, Out)>),
    /// A set (RESP3; an array in RESP2).
    Set(Vec<Out>),
}

impl Out {
    pub(crate) fn ok() -> Out {
        Out::Simple(Bytes::from_static(b"OK"))
    }

    pub(crate) fn simple(s: &'static str) -> Out {
        Out::Simple(Bytes::from_static(s.as_bytes()))
    }

    pub(crate) fn err(text: impl Into<String>) -> Out {
        Out::Error(text.into())
    }

    pub(crate) fn bulk(s: impl Into<Bytes>) -> Out {
        Out::Bulk(s.into())
    }
}

/// What a connection knows about its client.
#[derive(Debug)]
pub struct Session {
    /// The connection's number.
    pub id: u64,
    /// 2 or 3 (after `HELLO 3`).
    pub proto: u8,
    /// Whether the client has authenticated (always, without a password).
    pub authed: bool,
    /// What the connection's user may do (everything without an ACL).
    pub access: Access,
    /// The user the connection is authenticated as (`default` until `AUTH user ...`).
    pub user: String,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// Inside `MULTI`: commands are queued, never run (see [`plan`]).
    pub multi: bool,
    /// The keys of the `SCAN` under way on this connection: its filter and the keys it
    /// pages through (listed when it started, at cursor 0).
    pub scan: Option<(KeyFilter, Vec<Bytes>)>,
    /// Subscribed to a channel or pattern: in RESP2 only subscription commands, `PING`
    /// and `QUIT` are taken then.
    pub subscribed: bool,
    /// Where the commands that pick at random (`SRANDMEMBER`, ...) take their seeds from:
    /// set when the connection opens, advanced at each use (so that planning a command
    /// stays a function of its inputs).
    pub random: u64,
}

impl Session {
    /// A new connection's session: RESP2, not in a transaction, subscribed to nothing;
    /// `random` seeds the commands that pick at random.
    pub fn new(id: u64, authed: bool, random: u64) -> Session {
        Session {
            id,
            proto: 2,
            authed,
            access: Access::All,
            user: "default".into(),
            name: None,
            multi: false,
            scan: None,
            subscribed: false,
            random,
        }
    }

    /// The next seed (SplitMix64).
    fn next_seed(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How a data command's reply is made from its operations' results.
#[derive(Debug)]
pub enum Finish {
    /// `GET`.
    Get,
    /// `STRLEN`: the length of the string (0 when missing).
    StrLen,
    /// A write answered `+OK`.
    Ok,
    /// `DEL`: keys that existed.
    Deleted,
    /// `EXISTS`: keys present.
    Exists,
    /// `MGET`.
    MGet,
    /// `INCR` and friends: write, then read the counter.
    Counter,
    /// `SADD`/`SREM`: read, then write; the members that changed.
    SetChange {
        /// The distinct members named.
        members: BTreeSet<Bytes>,
        /// Adding (else removing).
        add: bool,
    },
    /// `SMEMBERS`.
    Members,
    /// `SRANDMEMBER`, `HRANDFIELD`, `ZRANDMEMBER`: members picked at random.
    Random {
        /// The kinds the command reads.
        wanted: Wanted,
        /// How many (negative: that many, repeats allowed); `None`: one, not in an array.
        count: Option<i64>,
        /// With each field's value or member's score.
        values: bool,
        /// The seed of the pick.
        seed: u64,
    },
    /// `SSCAN`, `HSCAN`, `ZSCAN`: every member (and value or score) in one page.
    ScanMembers {
        /// The kinds the command reads (`SSCAN`: sets, ...).
        wanted: Wanted,
        /// `MATCH`: only members that match.
        pattern: Option<Bytes>,
        /// With each field's value or member's score (not with `NOVALUES`/`NOSCORES`).
        values: bool,
        /// A cursor other than 0 (calm hands out none): nothing more.
        resumed: bool,
    },
    /// `SISMEMBER`.
    IsMember,
    /// `SCARD`.
    Card,
    /// `SMISMEMBER`, of this many members.
    AreMembers(usize),
    /// `SINTER`, `SUNION`, `SDIFF` (and `SINTERCARD`'s count, up to a limit) over the sets
    /// read.
    Combine {
        /// How the sets combine.
        how: SetOp,
        /// Answer the count (at most this many; 0: no limit) instead of the members.
        count: Option<usize>,
    },
    /// `LLEN` (and, after a write, `LPUSH`/`RPUSH`): the list's length.
    ListLen {
        /// Whether a write comes first.
        after_write: bool,
    },
    /// `LRANGE`.
    ListRange,
    /// `LPOS`: where `element` is, as asked.
    ListPos(ListPos),
    /// `LINDEX`.
    ListIndex,
    /// `LINSERT`: read, then write; the length after, -1 without the pivot, 0 without the
    /// key.
    ListInsert(Bytes),
    /// `LREM`: read, then write; how many were removed.
    ListRem(i64, Bytes),
    /// `LSET`: read, then write; an error without the key or the index.
    ListSet(i64),
    /// `MEMORY USAGE`: the key's stored value, encoded, and its name's length.
    MemoryUsage(usize),
    /// `GETRANGE`: the bytes from `start` to `end` (inclusive; negative from the end).
    GetRange(i64, i64),
    /// `TYPE`.
    Type,
    /// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME` from the key's stored copy: -2 when not
    /// found, -1 without a deadline.
    Ttl {
        /// The reply in milliseconds (else seconds).
        ms: bool,
        /// The deadline itself (else the time left).
        absolute: bool,
        /// Now, by the node's clock.
        now_ms: u64,
    },
    /// `EXPIRE`, `PERSIST` and friends: 1 when the deadline changed.
    Expiry,
    /// `CALM.KIND`.
    Kind,
    /// `CALM.VERSIONS`: every concurrent version of a causal key.
    Versions,
    /// `HSET`/`HDEL`: read, then write; the fields added (or removed).
    FieldChange {
        /// The distinct fields named.
        fields: BTreeSet<Bytes>,
        /// Setting (else removing).
        add: bool,
    },
    /// `HGET` (and `HSTRLEN` when `len`).
    Field {
        /// Answer its length instead.
        len: bool,
    },
    /// `HMGET`, of this many fields.
    Fields(usize),
    /// `HEXISTS`.
    FieldExists,
    /// `HGETALL`, `HKEYS`, `HVALS` (which halves).
    Hash {
        /// Include the field names.
        names: bool,
        /// Include the values.
        values: bool,
    },
    /// `HLEN`.
    HashLen,
    /// `HINCRBY`: write, then read the field.
    FieldCounter,
    /// `ZADD`: read, then write; the members added (and, with `changed`, those whose score
    /// changed).
    ZAdd {
        /// Each distinct member named, with the score it was given.
        scores: Vec<(Bytes, Score)>,
        /// `CH`: count changed scores too.
        changed: bool,
    },
    /// `ZREM`: read, then write; the members removed.
    ZRem,
    /// `ZSCORE` (or, after a write, `ZINCRBY` and `ZADD ... INCR`): the member's score.
    Score {
        /// Whether a write comes first.
        after_write: bool,
    },
    /// `ZMSCORE`, of this many members.
    Scores(usize),
    /// `ZCARD`.
    ZCard,
    /// `ZRANGE` and its older forms.
    ZRange(Range),
    /// `ZLEXCOUNT`: members from `min` to `max`.
    ZLexCount(LexBound, LexBound),
    /// `ZCOUNT`.
    ZCount(Bound, Bound),
    /// `ZRANK` and `ZREVRANK`.
    ZRank {
        /// The member.
        member: Bytes,
        /// Count from the greatest score.
        rev: bool,
        /// `WITHSCORE`: answer the rank and the score.
        with_score: bool,
    },
}

/// A score bound of `ZRANGE ... BYSCORE`, `ZCOUNT` and friends: `1.5`, `(1.5`, `-inf`.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    fn parse(b: &[u8]) -> Option<Bound> {
        let (exclusive, rest) = match b.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, b),
        };
        Some(Bound {
            value: float_arg(rest)?.get(),
            exclusive,
        })
    }

    fn below(self, score: f64) -> bool {
        if self.exclusive {
            self.value < score
        } else {
            self.value <= score
        }
    }

    fn above(self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}

/// Which members of a sorted set `ZRANGE` answers.
#[derive(Debug)]
pub struct Range {
    by: RangeBy,
    rev: bool,
    /// Offset and count (a negative count: all).
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

#[derive(Debug)]
enum RangeBy {
    Index(i64, i64),
    Score(Bound, Bound),
    Lex(LexBound, LexBound),
}

/// A bound of a range of members (`ZRANGEBYLEX`): `-` and `+` (no bound), `[m` (from or
/// to `m`, included) or `(m` (excluded). Members compare as bytes.
#[derive(Clone, Debug)]
pub enum LexBound {
    /// `-`.
    Least,
    /// `+`.
    Greatest,
    /// `[m`.
    Included(Bytes),
    /// `(m`.
    Excluded(Bytes),
}

impl LexBound {
    fn parse(b: &Bytes) -> Option<LexBound> {
        match b.first()? {
            b'-' if b.len() == 1 => Some(LexBound::Least),
            b'+' if b.len() == 1 => Some(LexBound::Greatest),
            b'[' => Some(LexBound::Included(b.slice(1..))),
            b'(' => Some(LexBound::Excluded(b.slice(1..))),
            _ => None,
        }
    }

    /// Whether `m` is at or after this lower bound.
    fn below(&self, m: &[u8]) -> bool {
        match self {
            LexBound::Least => true,
            LexBound::Greatest => false,
            LexBound::Included(x) => x.as_ref() <= m,
            LexBound::Excluded(x) => x.as_ref() < m,
        }
    }

    /// Whether `m` is at or before this upper bound.
    fn above(&self, m: &[u8]) -> bool {
        match self {
            LexBound::Least => false,
            LexBound::Greatest => true,
            LexBound::Included(x) => m <= x.as_ref(),
            LexBound::Excluded(x) => m < x.as_ref(),
        }
    }

    /// Both bounds of a range given as `min max`.
    fn pair(min: &Bytes, max: &Bytes) -> Result<(LexBound, LexBound), Out> {
        match (LexBound::parse(min), LexBound::parse(max)) {
            (Some(min), Some(max)) => Ok((min, max)),
            _ => Err(Out::err("ERR min or max not valid string range item")),
        }
    }
}

/// How `SINTER`, `SUNION` and `SDIFF` combine the sets they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    /// Members of every set.
    Inter,
    /// Members of any set.
    Union,
    /// Members of the first set and of none of the others.
    Diff,
}

/// What a listing of keys answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Listing {
    /// `KEYS`: every key.
    All,
    /// `SCAN`: `count` keys from `cursor` on, and the next cursor.
    Scan {
        /// Where the page starts (0: a new scan).
        cursor: u64,
        /// How many keys a page has.
        count: usize,
    },
    /// `DBSIZE`: how many keys.
    Count,
}

/// What running a command takes.
#[derive(Debug)]
pub enum Step {
    /// A reply that needs no data.
    Reply(Out),
    /// Operations to run with the others of the batch, and how to answer from their results.
    Data(Vec<Op>, Finish),
    /// `KEYS`, `SCAN` and `DBSIZE`: a listing of the cluster's keys.
    Keys(KeyFilter, Listing),
    /// `CONFIG GET pattern ...`: the settings whose names match (lowercase patterns).
    Config(Vec<Bytes>),
    /// `CLIENT LIST`: every connection of this node's Redis port.
    ClientList,
    /// `FLUSHALL`/`FLUSHDB`: delete every key of the cluster, one by one.
    Flush,
    /// `SUBSCRIBE`/`PSUBSCRIBE`: channels or patterns.
    Subscribe(Vec<Bytes>, bool),
    /// `UNSUBSCRIBE`/`PUNSUBSCRIBE`: channels or patterns (none: every one).
    Unsubscribe(Vec<Bytes>, bool),
    /// `PUBLISH channel message`: to the subscribers of every node.
    Publish(Bytes, Bytes),
    /// `INFO [section ...]`: needs the node's figures; the sections asked for, lowercase
    /// (none: the default ones).
    Info(Vec<String>),
    /// `QUIT`: answer `+OK` and close.
    Quit,
}

fn wrong_args(name: &str) -> Step {
    Step::Reply(Out::err(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )))
}

fn not_integer() -> Step {
    Step::Reply(Out::err("ERR value is not an integer or out of range"))
}

fn int_arg(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn refuse_uncoordinated(name: &str, why: &str) -> Step {
    Step::Reply(Out::err(format!(
        "ERR {name} is not supported: {why}; calm replicas never coordinate, so it could only give a wrong answer"
    )))
}

fn get(key: &Bytes) -> Op {
    Op::Get {
        key: key.clone(),
        meta: false,
    }
}

fn probe_op(key: &Bytes, probe: Probe) -> Op {
    Op::Probe {
        key: key.clone(),
        probe,
    }
}

/// Reads the named members of a collection (see [`Probe::Members`]).
fn probe_members(key: &Bytes, members: Vec<Bytes>) -> Op {
    probe_op(key, Probe::Members(members))
}

/// Reads how many members a key holds (see [`Probe::Len`]).
fn probe_len(key: &Bytes) -> Op {
    probe_op(key, Probe::Len)
}

fn write(key: &Bytes, w: Write) -> Op {
    Op::Write {
        key: key.clone(),
        write: w,
    }
}

/// Redis commands calm does not answer yet but will: they can be coordination-free.
pub const NOT_YET: &[&str] = &[
    "INCRBYFLOAT",
    "LCS",
    "HINCRBYFLOAT",
    "SINTERSTORE",
    "SUNIONSTORE",
    "SDIFFSTORE",
    "ZRANGESTORE",
    "ZUNION",
    "ZINTER",
    "ZDIFF",
    "ZUNIONSTORE",
    "ZINTERSTORE",
    "ZDIFFSTORE",
    "ZINTERCARD",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYLEX",
    "RANDOMKEY",
    "OBJECT",
    "DUMP",
    "RESTORE",
    "SORT",
    "SORT_RO",
    "RESET",
    "SAVE",
    "BGSAVE",
    "BGREWRITEAOF",
    "LASTSAVE",
    "SLOWLOG",
    "LATENCY",
    "ROLE",
    "LOLWUT",
    "FUNCTION",
    "FCALL",
    "FCALL_RO",
    "EVAL",
    "EVALSHA",
    "SCRIPT",
    "PUBSUB",
];

/// A command calm answers, as `COMMAND INFO` and `COMMAND DOCS` describe it.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Its name, lowercase.
    pub name: &'static str,
    /// Its arity as Redis counts it: the arguments with the name; negative, at least that
    /// many.
    pub arity: i64,
    /// Redis's flags (`write`, `readonly`, `fast`, ...).
    pub flags: &'static [&'static str],
    /// The first key argument, the last (-1: the last argument), and the step between
    /// (0, 0, 0: none).
    pub keys: (i64, i64, i64),
    /// Redis's command group.
    pub group: &'static str,
    /// One line about what it does in calm.
    pub summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
    }
}

const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write"];
const WF: &[&str] = &["write", "fast"];
const F: &[&str] = &["fast"];
const NONE: &[&str] = &[];
const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);
const NO_KEYS: (i64, i64, i64) = (0, 0, 0);

/// The commands calm answers (`COMMAND COUNT`, `COMMAND INFO`, `COMMAND DOCS`).
pub const COMMANDS: &[CommandSpec] = &[
    spec(
        "get",
        2,
        RF,
        ONE,
        "string",
        "Returns the string value of a key.",
    ),
    spec(
        "set",
        -3,
        W,
        ONE,
        "string",
        "Sets the string value of a key (EX/PX/EXAT/PXAT give it a time to live).",
    ),
    spec(
        "mget",
        -2,
        RF,
        ALL,
        "string",
        "Returns the string values of keys.",
    ),
    spec(
        "mset",
        -3,
        W,
        (1, -1, 2),
        "string",
        "Sets the string values of keys.",
    ),
    spec(
        "strlen",
        2,
        RF,
        ONE,
        "string",
        "Returns the length of a string value.",
    ),
    spec("incr", 2, WF, ONE, "string", "Adds one to a counter."),
    spec(
        "incrby",
        3,
        WF,
        ONE,
        "string",
        "Adds a number to a counter.",
    ),
    spec(
        "decr",
        2,
        WF,
        ONE,
        "string",
        "Subtracts one from a counter.",
    ),
    spec(
        "decrby",
        3,
        WF,
        ONE,
        "string",
        "Subtracts a number from a counter.",
    ),
    spec(
        "setex",
        4,
        W,
        ONE,
        "string",
        "Sets a string value with a time to live in seconds.",
    ),
    spec(
        "psetex",
        4,
        W,
        ONE,
        "string",
        "Sets a string value with a time to live in milliseconds.",
    ),
    spec("del", -2, W, ALL, "generic", "Deletes keys."),
    spec("unlink", -2, WF, ALL, "generic", "Deletes keys."),
    spec(
        "exists",
        -2,
        RF,
        ALL,
        "generic",
        "Counts the keys that exist.",
    ),
    spec(
        "type",
        2,
        RF,
        ONE,
        "generic",
        "Returns the type of a key's value.",
    ),
    spec(
        "keys",
        2,
        R,
        NO_KEYS,
        "generic",
        "Returns the keys of the whole cluster that match a pattern.",
    ),
    spec(
        "scan",
        -2,
        R,
        NO_KEYS,
        "generic",
        "Iterates over the keys of the whole cluster.",
    ),
    spec(
        "expire",
        -3,
        WF,
        ONE,
        "generic",
        "Gives a key a time to live in seconds.",
    ),
    spec(
        "pexpire",
        -3,
        WF,
        ONE,
        "generic",
        "Gives a key a time to live in milliseconds.",
    ),
    spec(
        "expireat",
        -3,
        WF,
        ONE,
        "generic",
        "Gives a key a deadline in Unix seconds.",
    ),
    spec(
        "pexpireat",
        -3,
        WF,
        ONE,
        "generic",
        "Gives a key a deadline in Unix milliseconds.",
    ),
    spec(
        "expiretime",
        2,
        RF,
        ONE,
        "generic",
        "Returns a key's deadline in Unix seconds.",
    ),
    spec(
        "pexpiretime",
        2,
        RF,
        ONE,
        "generic",
        "Returns a key's deadline in Unix milliseconds.",
    ),
    spec(
        "persist",
        2,
        WF,
        ONE,
        "generic",
        "Takes a key's time to live away.",
    ),
    spec(
        "ttl",
        2,
        RF,
        ONE,
        "generic",
        "Returns a key's time to live in seconds.",
    ),
    spec(
        "pttl",
        2,
        RF,
        ONE,
        "generic",
        "Returns a key's time to live in milliseconds.",
    ),
    spec(
        "lpush",
        -3,
        WF,
        ONE,
        "list",
        "Pushes values at the front of a list.",
    ),
    spec(
        "rpush",
        -3,
        WF,
        ONE,
        "list",
        "Pushes values at the back of a list.",
    ),
    spec("llen", 2, RF, ONE, "list", "Returns the length of a list."),
    spec(
        "lrange",
        4,
        R,
        ONE,
        "list",
        "Returns a range of a list's elements.",
    ),
    spec(
        "lindex",
        3,
        R,
        ONE,
        "list",
        "Returns a list's element by index.",
    ),
    spec(
        "lpos",
        -3,
        R,
        ONE,
        "list",
        "Returns the index of matching elements in a list.",
    ),
    spec(
        "linsert",
        5,
        W,
        ONE,
        "list",
        "Inserts a value before or after an element.",
    ),
    spec(
        "lrem",
        4,
        W,
        ONE,
        "list",
        "Removes elements equal to a value.",
    ),
    spec(
        "lset",
        4,
        W,
        ONE,
        "list",
        "Replaces a list's element by index.",
    ),
    spec(
        "ltrim",
        4,
        W,
        ONE,
        "list",
        "Keeps a range of a list's elements.",
    ),
    spec("sadd", -3, WF, ONE, "set", "Adds members to a set."),
    spec("srem", -3, WF, ONE, "set", "Removes members from a set."),
    spec(
        "smembers",
        2,
        R,
        ONE,
        "set",
        "Returns every member of a set.",
    ),
    spec(
        "srandmember",
        -2,
        R,
        ONE,
        "set",
        "Returns members of a set picked at random.",
    ),
    spec(
        "sscan",
        -3,
        R,
        ONE,
        "set",
        "Iterates over the members of a set (in one page).",
    ),
    spec(
        "sismember",
        3,
        RF,
        ONE,
        "set",
        "Says whether a member is in a set.",
    ),
    spec(
        "smismember",
        -3,
        RF,
        ONE,
        "set",
        "Says for each member whether it is in a set.",
    ),
    spec(
        "sinter",
        -2,
        R,
        ALL,
        "set",
        "Returns the members of every set given.",
    ),
    spec(
        "sunion",
        -2,
        R,
        ALL,
        "set",
        "Returns the members of any set given.",
    ),
    spec(
        "sdiff",
        -2,
        R,
        ALL,
        "set",
        "Returns the members of the first set and of none of the others.",
    ),
    spec(
        "sintercard",
        -3,
        R,
        NO_KEYS,
        "set",
        "Counts the members of every set given.",
    ),
    spec(
        "touch",
        -2,
        RF,
        ALL,
        "generic",
        "Counts the keys that exist.",
    ),
    spec(
        "getrange",
        4,
        R,
        ONE,
        "string",
        "Returns part of a string value.",
    ),
    spec(
        "substr",
        4,
        R,
        ONE,
        "string",
        "Returns part of a string value.",
    ),
    spec("time", 1, F, NO_KEYS, "server", "Returns the node's time."),
    spec(
        "publish",
        3,
        F,
        NO_KEYS,
        "pubsub",
        "Sends a message to the subscribers of every node.",
    ),
    spec(
        "subscribe",
        -2,
        F,
        NO_KEYS,
        "pubsub",
        "Listens for messages on channels.",
    ),
    spec(
        "psubscribe",
        -2,
        F,
        NO_KEYS,
        "pubsub",
        "Listens for messages on channels matching patterns.",
    ),
    spec(
        "unsubscribe",
        -1,
        F,
        NO_KEYS,
        "pubsub",
        "Stops listening on channels.",
    ),
    spec(
        "punsubscribe",
        -1,
        F,
        NO_KEYS,
        "pubsub",
        "Stops listening on patterns.",
    ),
    spec(
        "memory",
        -2,
        R,
        NO_KEYS,
        "server",
        "MEMORY USAGE: the bytes a key's value takes, encoded.",
    ),
    spec(
        "flushall",
        -1,
        W,
        NO_KEYS,
        "server",
        "Deletes every key of the cluster, as DEL would (not atomically).",
    ),
    spec(
        "flushdb",
        -1,
        W,
        NO_KEYS,
        "server",
        "Deletes every key of the cluster, as DEL would (not atomically).",
    ),
    spec(
        "scard",
        2,
        RF,
        ONE,
        "set",
        "Returns the number of members of a set.",
    ),
    spec("hset", -4, WF, ONE, "hash", "Sets fields of a hash."),
    spec("hmset", -4, WF, ONE, "hash", "Sets fields of a hash."),
    spec(
        "hget",
        3,
        RF,
        ONE,
        "hash",
        "Returns the value of a hash field.",
    ),
    spec(
        "hmget",
        -3,
        RF,
        ONE,
        "hash",
        "Returns the values of hash fields.",
    ),
    spec(
        "hgetall",
        2,
        R,
        ONE,
        "hash",
        "Returns every field and value of a hash.",
    ),
    spec(
        "hrandfield",
        -2,
        R,
        ONE,
        "hash",
        "Returns fields of a hash picked at random.",
    ),
    spec(
        "hscan",
        -3,
        R,
        ONE,
        "hash",
        "Iterates over the fields and values of a hash (in one page).",
    ),
    spec("hkeys", 2, R, ONE, "hash", "Returns every field of a hash."),
    spec("hvals", 2, R, ONE, "hash", "Returns every value of a hash."),
    spec(
        "hlen",
        2,
        RF,
        ONE,
        "hash",
        "Returns the number of fields of a hash.",
    ),
    spec(
        "hexists",
        3,
        RF,
        ONE,
        "hash",
        "Says whether a hash has a field.",
    ),
    spec(
        "hstrlen",
        3,
        RF,
        ONE,
        "hash",
        "Returns the length of a hash field's value.",
    ),
    spec("hdel", -3, WF, ONE, "hash", "Removes fields of a hash."),
    spec(
        "hincrby",
        4,
        WF,
        ONE,
        "hash",
        "Adds a number to a hash field.",
    ),
    spec(
        "zadd",
        -4,
        WF,
        ONE,
        "sorted-set",
        "Sets the scores of sorted set members.",
    ),
    spec(
        "zincrby",
        4,
        WF,
        ONE,
        "sorted-set",
        "Adds to a sorted set member's score.",
    ),
    spec(
        "zscore",
        3,
        RF,
        ONE,
        "sorted-set",
        "Returns a member's score.",
    ),
    spec(
        "zmscore",
        -3,
        RF,
        ONE,
        "sorted-set",
        "Returns members' scores.",
    ),
    spec(
        "zcard",
        2,
        RF,
        ONE,
        "sorted-set",
        "Returns the number of members of a sorted set.",
    ),
    spec(
        "zrem",
        -3,
        WF,
        ONE,
        "sorted-set",
        "Removes members of a sorted set.",
    ),
    spec(
        "zrange",
        -4,
        R,
        ONE,
        "sorted-set",
        "Returns members by rank or score.",
    ),
    spec(
        "zrandmember",
        -2,
        R,
        ONE,
        "sorted-set",
        "Returns members of a sorted set picked at random.",
    ),
    spec(
        "zscan",
        -3,
        R,
        ONE,
        "sorted-set",
        "Iterates over the members and scores of a sorted set (in one page).",
    ),
    spec(
        "zrangebyscore",
        -4,
        R,
        ONE,
        "sorted-set",
        "Returns members by score.",
    ),
    spec(
        "zrevrange",
        -4,
        R,
        ONE,
        "sorted-set",
        "Returns members by rank, highest first.",
    ),
    spec(
        "zrevrangebyscore",
        -4,
        R,
        ONE,
        "sorted-set",
        "Returns members by score, highest first.",
    ),
    spec(
        "zcount",
        4,
        RF,
        ONE,
        "sorted-set",
        "Counts members with scores in a range.",
    ),
    spec(
        "zrangebylex",
        -4,
        R,
        ONE,
        "sorted-set",
        "Returns members in a range of members (of a sorted set whose scores are equal).",
    ),
    spec(
        "zrevrangebylex",
        -4,
        R,
        ONE,
        "sorted-set",
        "Returns members in a range of members, greatest first.",
    ),
    spec(
        "zlexcount",
        4,
        RF,
        ONE,
        "sorted-set",
        "Counts members in a range of members.",
    ),
    spec(
        "zrank",
        -3,
        RF,
        ONE,
        "sorted-set",
        "Returns a member's rank.",
    ),
    spec(
        "zrevrank",
        -3,
        RF,
        ONE,
        "sorted-set",
        "Returns a member's rank, highest first.",
    ),
    spec("ping", -1, F, NO_KEYS, "connection", "Answers PONG."),
    spec("echo", 2, F, NO_KEYS, "connection", "Answers its argument."),
    spec(
        "auth",
        -2,
        F,
        NO_KEYS,
        "connection",
        "Authenticates the connection.",
    ),
    spec(
        "hello",
        -1,
        F,
        NO_KEYS,
        "connection",
        "Chooses the protocol version and authenticates.",
    ),
    spec(
        "client",
        -2,
        NONE,
        NO_KEYS,
        "connection",
        "Names the connection and lists connections.",
    ),
    spec(
        "acl",
        -2,
        NONE,
        NO_KEYS,
        "server",
        "Says who the connection is and lists the users of the ACL file.",
    ),
    spec(
        "select",
        2,
        F,
        NO_KEYS,
        "connection",
        "Selects database 0 (calm has one keyspace).",
    ),
    spec(
        "quit",
        -1,
        F,
        NO_KEYS,
        "connection",
        "Closes the connection.",
    ),
    spec(
        "info",
        -1,
        NONE,
        NO_KEYS,
        "server",
        "Returns the node's figures, in Redis's sections.",
    ),
    spec(
        "dbsize",
        1,
        R,
        NO_KEYS,
        "server",
        "Counts the keys of the whole cluster.",
    ),
    spec(
        "command",
        -1,
        NONE,
        NO_KEYS,
        "server",
        "Describes the commands calm answers.",
    ),
    spec(
        "config",
        -2,
        NONE,
        NO_KEYS,
        "server",
        "Returns settings (CONFIG GET).",
    ),
    spec(
        "multi",
        1,
        F,
        NO_KEYS,
        "transactions",
        "Starts a transaction (EXEC refuses it: nothing inside is applied).",
    ),
    spec(
        "exec",
        1,
        NONE,
        NO_KEYS,
        "transactions",
        "Refuses the transaction: calm does not run them.",
    ),
    spec(
        "discard",
        1,
        F,
        NO_KEYS,
        "transactions",
        "Drops the transaction.",
    ),
    spec("calm.max", 3, WF, ONE, "calm", "Raises a max register."),
    spec(
        "calm.priority",
        4,
        WF,
        ONE,
        "calm",
        "Offers a value at a priority (the lowest wins).",
    ),
    spec(
        "calm.causal",
        3,
        WF,
        ONE,
        "calm",
        "Writes a causal register (concurrent writes are all kept).",
    ),
    spec(
        "calm.versions",
        2,
        R,
        ONE,
        "calm",
        "Returns every concurrent version of a causal key.",
    ),
    spec(
        "calm.kind",
        2,
        RF,
        ONE,
        "calm",
        "Returns the calm kind of a key's value.",
    ),
];

fn command_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// `COMMAND INFO`'s entry for a command.
fn command_info(c: &CommandSpec) -> Out {
    let (first, last, step) = c.keys;
    Out::Array(vec![
        Out::bulk(c.name),
        Out::Int(c.arity),
        Out::Set(c.flags.iter().map(|f| Out::simple(f)).collect()),
        Out::Int(first),
        Out::Int(last),
        Out::Int(step),
        Out::Array(vec![]),
        Out::Array(vec![]),
        Out::Array(vec![]),
        Out::Array(vec![]),
    ])
}

/// An argument as `COMMAND DOCS` describes it.
fn arg_out(arg: &Arg) -> Out {
    let mut map = vec![
        (Out::bulk("name"), Out::bulk(arg.name.clone())),
        (Out::bulk("type"), Out::bulk(arg.kind)),
    ];
    if let Some(token) = &arg.token {
        map.push((Out::bulk("token"), Out::bulk(token.clone())));
    }
    let flags: Vec<Out> = [(arg.optional, "optional"), (arg.multiple, "multiple")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| Out::simple(f))
        .collect();
    if !flags.is_empty() {
        map.push((Out::bulk("flags"), Out::Set(flags)));
    }
    if !arg.args.is_empty() {
        let args = arg.args.iter().map(arg_out).collect();
        map.push((Out::bulk("arguments"), Out::Array(args)));
    }
    Out::Map(map)
}

/// `COMMAND`, `COMMAND COUNT|LIST|INFO|DOCS`.
fn command(a: &[Bytes]) -> Out {
    let Some(sub) = a.first() else {
        return Out::Array(COMMANDS.iter().map(command_info).collect());
    };
    let named = || -> Box<dyn Iterator<Item = Option<&'static CommandSpec>>> {
        if a.len() > 1 {
            Box::new(a[1..].iter().map(|n| command_spec(n)))
        } else {
            Box::new(COMMANDS.iter().map(Some))
        }
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => Out::Int(COMMANDS.len() as i64),
        b"LIST" => Out::Array(COMMANDS.iter().map(|c| Out::bulk(c.name)).collect()),
        b"INFO" => Out::Array(named().map(|c| c.map_or(Out::Null, command_info)).collect()),
        b"DOCS" => Out::Map(
            named()
                .flatten()
                .map(|c| {
                    let mut doc = vec![
                        (Out::bulk("summary"), Out::bulk(c.summary)),
                        (Out::bulk("since"), Out::bulk("1.0.0")),
                        (Out::bulk("group"), Out::bulk(c.group)),
                    ];
                    if let Some(args) = arguments(c.name)
                        && !args.is_empty()
                    {
                        let args = args.iter().map(arg_out).collect();
                        doc.push((Out::bulk("arguments"), Out::Array(args)));
                    }
                    let doc = Out::Map(doc);
                    (Out::bulk(c.name), doc)
                })
                .collect(),
        ),
        other => Out::err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Who may connect to the Redis port: the one password of the `default` user
/// (`requirepass`), and the users of the ACL file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gate<'a> {
    /// The `default` user's password, if any.
    pub password: Option<&'a str>,
    /// The users and their grants, if any.
    pub acl: Option<&'a Acl>,
}

/// Plans one command at `now_ms` (the node's clock, for times to live) for a session that
/// `gate` lets in; a command on keys its user may not touch is answered `NOPERM`.
pub fn plan(session: &mut Session, args: &[Bytes], gate: &Gate<'_>, now_ms: u64) -> Step {
    let step = plan_command(session, args, gate, now_ms);
    match &step {
        Step::Data(ops, _) => match session.access.check_ops(ops) {
            Ok(()) => step,
            Err(d) => Step::Reply(Out::err(format!("NOPERM {d}"))),
        },
        Step::Flush if !session.access.allows(Right::Admin, b"") => Step::Reply(Out::err(format!(
            "NOPERM user '{}' may not FLUSHALL (it needs the 'admin' right on every key)",
            session.user
        ))),
        _ => step,
    }
}

fn plan_command(session: &mut Session, args: &[Bytes], gate: &Gate<'_>, now_ms: u64) -> Step {
    let Some(name) = args.first() else {
        return Step::Reply(Out::err("ERR empty command"));
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let a = &args[1..];
    if !session.authed && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT") {
        return Step::Reply(Out::err("NOAUTH Authentication required."));
    }
    // Transactions follow the protocol so that nothing inside one is ever applied: MULTI
    // opens one, commands are QUEUED (not run), EXEC answers EXECABORT and DISCARD drops
    // them — calm replicas never agree on an order, so it could not run them as one.
    match (name.as_str(), session.multi) {
        ("MULTI", true) => return Step::Reply(Out::err("ERR MULTI calls can not be nested")),
        ("MULTI", false) if a.is_empty() => {
            session.multi = true;
            return Step::Reply(Out::ok());
        }
        ("EXEC", true) => {
            session.multi = false;
            return Step::Reply(Out::err(
                "EXECABORT Transaction discarded: calm does not run transactions (they need every replica to agree on an order); nothing in it was applied",
            ));
        }
        ("EXEC", false) => return Step::Reply(Out::err("ERR EXEC without MULTI")),
        ("DISCARD", true) => {
            session.multi = false;
            return Step::Reply(Out::ok());
        }
        ("DISCARD", false) => return Step::Reply(Out::err("ERR DISCARD without MULTI")),
        ("WATCH", true) => {
            return Step::Reply(Out::err("ERR WATCH inside MULTI is not allowed"));
        }
        ("QUIT", _) => {}
        (_, true) => return Step::Reply(Out::simple("QUEUED")),
        _ => {}
    }
    let subscription = matches!(
        name.as_str(),
        "SUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "PING" | "QUIT" | "RESET"
    );
    if session.subscribed && session.proto == 2 && !subscription {
        return Step::Reply(Out::err(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            name.to_ascii_lowercase()
        )));
    }
    match (name.as_str(), a.len()) {
        ("PING", n) if n <= 1 && session.subscribed && session.proto == 2 => {
            Step::Reply(Out::Array(vec![
                Out::bulk("pong"),
                Out::Bulk(a.first().cloned().unwrap_or_default()),
            ]))
        }
        ("PING", 0) => Step::Reply(Out::simple("PONG")),
        ("PING", 1) | ("ECHO", 1) => Step::Reply(Out::Bulk(a[0].clone())),
        ("PING" | "ECHO", _) => wrong_args(&name),
        ("QUIT", _) => Step::Quit,
        ("AUTH", 1 | 2) => Step::Reply(auth(session, a, gate)),
        ("AUTH", _) => wrong_args(&name),
        ("HELLO", _) => Step::Reply(hello(session, a, gate)),
        ("ACL", n) if n >= 1 => Step::Reply(acl_command(session, a, gate)),
        ("CLIENT", 1) if a[0].eq_ignore_ascii_case(b"LIST") => Step::ClientList,
        ("CLIENT", n) if n >= 1 => Step::Reply(client(session, a)),
        ("SELECT", 1) if a[0].as_ref() == b"0" => Step::Reply(Out::ok()),
        ("SELECT", 1) => Step::Reply(Out::err(
            "ERR calm has one keyspace: only SELECT 0 is supported",
        )),
        ("COMMAND", _) => Step::Reply(command(a)),
        ("CONFIG", n) if n >= 2 && a[0].eq_ignore_ascii_case(b"GET") => Step::Config(
            a[1..]
                .iter()
                .map(|p| Bytes::from(p.to_ascii_lowercase()))
                .collect(),
        ),
        // Redis's knobs for its compact encodings: calm has no such encodings, so setting
        // them changes nothing (and test suites that turn them can run). Likewise `save ""`
        // (no snapshots): calm takes none.
        ("CONFIG", n)
            if n >= 3
                && n % 2 == 1
                && a[0].eq_ignore_ascii_case(b"SET")
                && a[1..].chunks(2).all(|kv| {
                    encoding_knob(&kv[0])
                        || (kv[0].eq_ignore_ascii_case(b"save") && kv[1].is_empty())
                }) =>
        {
            Step::Reply(Out::ok())
        }
        ("CONFIG", n) if n >= 1 => Step::Reply(Out::err(format!(
            "ERR CONFIG {} is not supported: calm's settings are the flags of `calm server` (see calm server --help); CONFIG GET reads them",
            String::from_utf8_lossy(&a[0]).to_ascii_uppercase()
        ))),
        ("INFO", _) => Step::Info(
            a.iter()
                .flat_map(|s| {
                    String::from_utf8_lossy(s)
                        .split(',')
                        .map(|p| p.trim().to_ascii_lowercase())
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
        ("DBSIZE", 0) => Step::Keys(KeyFilter::default(), Listing::Count),
        ("KEYS", 1) => Step::Keys(
            KeyFilter {
                pattern: Some(a[0].clone()),
                kinds: None,
            },
            Listing::All,
        ),
        ("SCAN", n) if n >= 1 => scan(a),
        ("GET", 1) => Step::Data(vec![get(&a[0])], Finish::Get),
        ("STRLEN", 1) => Step::Data(vec![get(&a[0])], Finish::StrLen),
        ("SET", 2) => Step::Data(vec![write(&a[0], Write::Lww(a[1].clone()))], Finish::Ok),
        ("SET", n) if n > 2 => set_with_options(&a[0], &a[1], &a[2..], now_ms),
        ("SETEX" | "PSETEX", 3) => {
            let unit = if name == "SETEX" { 1000 } else { 1 };
            match int_arg(&a[1]).map(|t| (t > 0).then(|| deadline(now_ms, t, unit, false))) {
                None => not_integer(),
                Some(None | Some(None)) => invalid_expire(&name),
                Some(Some(Some(at))) => Step::Data(
                    vec![
                        write(&a[0], Write::Lww(a[2].clone())),
                        Op::Expire {
                            key: a[0].clone(),
                            at_ms: Some(at),
                        },
                    ],
                    Finish::Ok,
                ),
            }
        }
        ("EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT", n) if n >= 2 => {
            if let Some(option) = a.get(2) {
                if let Some(bad) = a[2..].iter().find(|o| {
                    !matches!(
                        o.to_ascii_uppercase().as_slice(),
                        b"NX" | b"XX" | b"GT" | b"LT"
                    )
                }) {
                    return Step::Reply(Out::err(format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(bad)
                    )));
                }
                let option = String::from_utf8_lossy(option).to_ascii_uppercase();
                return refuse_uncoordinated(
                    &format!("{name} ... {option}"),
                    "it depends on the key's current deadline at every replica at once",
                );
            }
            let unit = if name.contains("PEXPIRE") { 1 } else { 1000 };
            let absolute = name.ends_with("AT");
            match int_arg(&a[1]).map(|t| deadline(now_ms, t, unit, absolute)) {
                None => not_integer(),
                Some(None) => invalid_expire(&name),
                Some(Some(at)) => Step::Data(
                    vec![Op::Expire {
                        key: a[0].clone(),
                        at_ms: Some(at),
                    }],
                    Finish::Expiry,
                ),
            }
        }
        ("PERSIST", 1) => Step::Data(
            vec![Op::Expire {
                key: a[0].clone(),
                at_ms: None,
            }],
            Finish::Expiry,
        ),
        ("MSET", n) if n >= 2 && n % 2 == 0 => Step::Data(
            a.chunks(2)
                .map(|kv| write(&kv[0], Write::Lww(kv[1].clone())))
                .collect(),
            Finish::Ok,
        ),
        ("MGET", n) if n >= 1 => Step::Data(a.iter().map(get).collect(), Finish::MGet),
        // calm frees a deleted key's memory in the background anyway: UNLINK is DEL.
        ("DEL" | "UNLINK", n) if n >= 1 => Step::Data(
            a.iter().map(|k| Op::Delete { key: k.clone() }).collect(),
            Finish::Deleted,
        ),
        ("EXISTS", n) if n >= 1 => Step::Data(a.iter().map(probe_len).collect(), Finish::Exists),
        ("INCR", 1) => counter(&a[0], 1),
        ("DECR", 1) => counter(&a[0], -1),
        ("INCRBY", 2) => match int_arg(&a[1]) {
            Some(n) => counter(&a[0], n),
            None => not_integer(),
        },
        ("DECRBY", 2) => match int_arg(&a[1]).and_then(i64::checked_neg) {
            Some(n) => counter(&a[0], n),
            None => not_integer(),
        },
        ("SADD" | "SREM", n) if n >= 2 => {
            let add = name == "SADD";
            let members: BTreeSet<Bytes> = a[1..].iter().cloned().collect();
            let list: Vec<Bytes> = members.iter().cloned().collect();
            let w = if add {
                Write::OrSetAdd(list)
            } else {
                Write::OrSetRemove(list)
            };
            Step::Data(
                vec![probe_members(&a[0], list_of(&members)), write(&a[0], w)],
                Finish::SetChange { members, add },
            )
        }
        ("HSET" | "HMSET", n) if n >= 3 && n % 2 == 1 => {
            let pairs: Vec<(Bytes, Bytes)> = a[1..]
                .chunks(2)
                .map(|fv| (fv[0].clone(), fv[1].clone()))
                .collect();
            let fields: BTreeSet<Bytes> = pairs.iter().map(|(f, _)| f.clone()).collect();
            let w = write(&a[0], Write::HashSet(pairs));
            if name == "HMSET" {
                Step::Data(vec![w], Finish::Ok)
            } else {
                Step::Data(
                    vec![probe_members(&a[0], list_of(&fields)), w],
                    Finish::FieldChange { fields, add: true },
                )
            }
        }
        ("HDEL", n) if n >= 2 => {
            let fields: BTreeSet<Bytes> = a[1..].iter().cloned().collect();
            let w = Write::HashDel(list_of(&fields));
            Step::Data(
                vec![probe_members(&a[0], list_of(&fields)), write(&a[0], w)],
                Finish::FieldChange { fields, add: false },
            )
        }
        ("HGET" | "HSTRLEN", 2) => Step::Data(
            vec![probe_members(&a[0], vec![a[1].clone()])],
            Finish::Field {
                len: name == "HSTRLEN",
            },
        ),
        ("HMGET", n) if n >= 2 => Step::Data(
            vec![probe_members(&a[0], a[1..].to_vec())],
            Finish::Fields(n - 1),
        ),
        ("HEXISTS", 2) => Step::Data(
            vec![probe_members(&a[0], vec![a[1].clone()])],
            Finish::FieldExists,
        ),
        ("HGETALL" | "HKEYS" | "HVALS", 1) => Step::Data(
            vec![get(&a[0])],
            Finish::Hash {
                names: name != "HVALS",
                values: name != "HKEYS",
            },
        ),
        ("HLEN", 1) => Step::Data(vec![probe_len(&a[0])], Finish::HashLen),
        ("HINCRBY", 3) => match int_arg(&a[2]) {
            Some(by) => Step::Data(
                vec![
                    write(
                        &a[0],
                        Write::HashIncr {
                            field: a[1].clone(),
                            by,
                        },
                    ),
                    probe_members(&a[0], vec![a[1].clone()]),
                ],
                Finish::FieldCounter,
            ),
            None => not_integer(),
        },
        ("HSETNX", _) => refuse_uncoordinated(
            &name,
            "whether the field exists depends on every replica at once",
        ),
        ("HINCRBYFLOAT", _) => Step::Reply(Out::err(
            "ERR HINCRBYFLOAT is not supported yet: calm's hash counters are integers (HINCRBY)",
        )),
        ("ZADD", n) if n >= 3 => zadd(&a[0], &a[1..]),
        ("ZINCRBY", 3) => match float_arg(&a[1]) {
            Some(by) => Step::Data(
                vec![
                    write(
                        &a[0],
                        Write::ZIncr {
                            member: a[2].clone(),
                            by,
                        },
                    ),
                    probe_members(&a[0], vec![a[2].clone()]),
                ],
                Finish::Score { after_write: true },
            ),
            None => not_float(),
        },
        ("ZSCORE", 2) => Step::Data(
            vec![probe_members(&a[0], vec![a[1].clone()])],
            Finish::Score { after_write: false },
        ),
        ("ZMSCORE", n) if n >= 2 => Step::Data(
            vec![probe_members(&a[0], a[1..].to_vec())],
            Finish::Scores(n - 1),
        ),
        ("ZCARD", 1) => Step::Data(vec![probe_len(&a[0])], Finish::ZCard),
        ("ZREM", n) if n >= 2 => {
            let members: BTreeSet<Bytes> = a[1..].iter().cloned().collect();
            let w = Write::ZRem(list_of(&members));
            Step::Data(
                vec![probe_members(&a[0], list_of(&members)), write(&a[0], w)],
                Finish::ZRem,
            )
        }
        (
            "ZRANGE" | "ZRANGEBYSCORE" | "ZREVRANGE" | "ZREVRANGEBYSCORE" | "ZRANGEBYLEX"
            | "ZREVRANGEBYLEX",
            n,
        ) if n >= 3 => match zrange(&name, &a[1..]) {
            Ok(range) => Step::Data(vec![get(&a[0])], Finish::ZRange(range)),
            Err(e) => Step::Reply(e),
        },
        ("ZLEXCOUNT", 3) => match LexBound::pair(&a[1], &a[2]) {
            Ok((min, max)) => Step::Data(vec![get(&a[0])], Finish::ZLexCount(min, max)),
            Err(e) => Step::Reply(e),
        },
        ("ZCOUNT", 3) => match (Bound::parse(&a[1]), Bound::parse(&a[2])) {
            (Some(min), Some(max)) => Step::Data(vec![get(&a[0])], Finish::ZCount(min, max)),
            _ => Step::Reply(Out::err("ERR min or max is not a float")),
        },
        ("ZRANK" | "ZREVRANK", 2 | 3) => {
            let with_score = match a.get(2) {
                None => false,
                Some(w) if w.eq_ignore_ascii_case(b"WITHSCORE") => true,
                Some(_) => return Step::Reply(Out::err("ERR syntax error")),
            };
            Step::Data(
                vec![get(&a[0])],
                Finish::ZRank {
                    member: a[1].clone(),
                    rev: name == "ZREVRANK",
                    with_score,
                },
            )
        }
        (
            "ZPOPMIN" | "ZPOPMAX" | "BZPOPMIN" | "BZPOPMAX" | "ZMPOP" | "BZMPOP" | "LPOP" | "RPOP"
            | "BLPOP" | "BRPOP" | "LMPOP" | "BLMPOP" | "LMOVE" | "BLMOVE" | "RPOPLPUSH"
            | "BRPOPLPUSH" | "SPOP",
            _,
        ) => refuse_uncoordinated(
            &name,
            "a pop needs one winner among clients racing on different replicas",
        ),
        ("LPUSH" | "RPUSH", n) if n >= 2 => Step::Data(
            vec![
                write(
                    &a[0],
                    Write::ListPush {
                        front: name == "LPUSH",
                        values: a[1..].to_vec(),
                    },
                ),
                probe_len(&a[0]),
            ],
            Finish::ListLen { after_write: true },
        ),
        ("LLEN", 1) => Step::Data(
            vec![probe_len(&a[0])],
            Finish::ListLen { after_write: false },
        ),
        ("LRANGE", 3) => match (int_arg(&a[1]), int_arg(&a[2])) {
            (Some(start), Some(stop)) => {
                let probe = Probe::Range { start, stop };
                Step::Data(vec![probe_op(&a[0], probe)], Finish::ListRange)
            }
            _ => not_integer(),
        },
        ("LPOS", n) if n >= 2 => match lpos(&a[1], &a[2..]) {
            Ok(pos) => Step::Data(vec![get(&a[0])], Finish::ListPos(pos)),
            Err(e) => Step::Reply(e),
        },
        ("LINDEX", 2) => match int_arg(&a[1]) {
            Some(i) => {
                let probe = Probe::Range { start: i, stop: i };
                Step::Data(vec![probe_op(&a[0], probe)], Finish::ListIndex)
            }
            None => not_integer(),
        },
        ("LINSERT", 4) => {
            let before = match a[1].to_ascii_uppercase().as_slice() {
                b"BEFORE" => true,
                b"AFTER" => false,
                _ => return Step::Reply(Out::err("ERR syntax error")),
            };
            let w = Write::ListInsert {
                pivot: a[2].clone(),
                before,
                value: a[3].clone(),
            };
            Step::Data(
                vec![get(&a[0]), write(&a[0], w)],
                Finish::ListInsert(a[2].clone()),
            )
        }
        ("LREM", 3) => match int_arg(&a[1]) {
            Some(count) => Step::Data(
                vec![
                    get(&a[0]),
                    write(
                        &a[0],
                        Write::ListRem {
                            count,
                            value: a[2].clone(),
                        },
                    ),
                ],
                Finish::ListRem(count, a[2].clone()),
            ),
            None => not_integer(),
        },
        ("LSET", 3) => match int_arg(&a[1]) {
            Some(index) => Step::Data(
                vec![
                    get(&a[0]),
                    write(
                        &a[0],
                        Write::ListSet {
                            index,
                            value: a[2].clone(),
                        },
                    ),
                ],
                Finish::ListSet(index),
            ),
            None => not_integer(),
        },
        ("LTRIM", 3) => match (int_arg(&a[1]), int_arg(&a[2])) {
            (Some(start), Some(stop)) => Step::Data(
                vec![write(&a[0], Write::ListTrim { start, stop })],
                Finish::Ok,
            ),
            _ => not_integer(),
        },
        ("LPUSHX" | "RPUSHX", _) => refuse_uncoordinated(
            &name,
            "whether the list exists depends on every replica at once",
        ),
        ("SMEMBERS", 1) => Step::Data(vec![get(&a[0])], Finish::Members),
        ("SSCAN" | "HSCAN" | "ZSCAN", n) if n >= 2 => scan_members(&name, a),
        ("SRANDMEMBER", 1 | 2) | ("HRANDFIELD" | "ZRANDMEMBER", 1..=3) => {
            random_members(&name, a, session.next_seed())
        }
        ("SISMEMBER", 2) => Step::Data(
            vec![probe_members(&a[0], vec![a[1].clone()])],
            Finish::IsMember,
        ),
        ("SCARD", 1) => Step::Data(vec![probe_len(&a[0])], Finish::Card),
        ("SMISMEMBER", n) if n >= 2 => Step::Data(
            vec![probe_members(&a[0], a[1..].to_vec())],
            Finish::AreMembers(n - 1),
        ),
        ("SINTER" | "SUNION" | "SDIFF", n) if n >= 1 => Step::Data(
            a.iter().map(get).collect(),
            Finish::Combine {
                how: match name.as_str() {
                    "SINTER" => SetOp::Inter,
                    "SUNION" => SetOp::Union,
                    _ => SetOp::Diff,
                },
                count: None,
            },
        ),
        ("SINTERCARD", n) if n >= 2 => {
            let numkeys = match int_arg(&a[0]).map(usize::try_from) {
                Some(Ok(k)) if k >= 1 && k < n => k,
                Some(Ok(k)) if k >= n => {
                    return Step::Reply(Out::err(
                        "ERR Number of keys can't be greater than number of args",
                    ));
                }
                _ => return Step::Reply(Out::err("ERR numkeys should be greater than 0")),
            };
            let limit = match &a[1 + numkeys..] {
                [] => 0,
                [opt, l] if opt.eq_ignore_ascii_case(b"LIMIT") => match int_arg(l) {
                    Some(l) if l >= 0 => usize::try_from(l).unwrap_or(usize::MAX),
                    _ => return Step::Reply(Out::err("ERR LIMIT can't be negative")),
                },
                _ => return Step::Reply(Out::err("ERR syntax error")),
            };
            Step::Data(
                a[1..=numkeys].iter().map(get).collect(),
                Finish::Combine {
                    how: SetOp::Inter,
                    count: Some(limit),
                },
            )
        }
        ("TOUCH", n) if n >= 1 => Step::Data(a.iter().map(probe_len).collect(), Finish::Exists),
        ("GETRANGE" | "SUBSTR", 3) => match (int_arg(&a[1]), int_arg(&a[2])) {
            (Some(start), Some(end)) => Step::Data(vec![get(&a[0])], Finish::GetRange(start, end)),
            _ => not_integer(),
        },
        ("MEMORY", 2 | 4) if a[0].eq_ignore_ascii_case(b"USAGE") => Step::Data(
            vec![Op::Raw { key: a[1].clone() }],
            Finish::MemoryUsage(a[1].len()),
        ),
        // calm has no Redis functions (its functions are calm's own): nothing to flush.
        ("FUNCTION", 1 | 2) if a[0].eq_ignore_ascii_case(b"FLUSH") => Step::Reply(Out::ok()),
        ("SUBSCRIBE" | "PSUBSCRIBE", n) if n >= 1 => {
            Step::Subscribe(a.to_vec(), name == "PSUBSCRIBE")
        }
        ("UNSUBSCRIBE" | "PUNSUBSCRIBE", _) => {
            Step::Unsubscribe(a.to_vec(), name == "PUNSUBSCRIBE")
        }
        ("PUBLISH", 2) => Step::Publish(a[0].clone(), a[1].clone()),
        ("TIME", 0) => Step::Reply(Out::Array(vec![
            Out::bulk((now_ms / 1000).to_string()),
            Out::bulk((now_ms % 1000 * 1000).to_string()),
        ])),
        ("TYPE", 1) => Step::Data(vec![probe_len(&a[0])], Finish::Type),
        ("TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME", 1) => Step::Data(
            vec![Op::Raw { key: a[0].clone() }],
            Finish::Ttl {
                ms: name.starts_with('P'),
                absolute: name.ends_with("TIME"),
                now_ms,
            },
        ),
        ("CALM.MAX", 2) => match int_arg(&a[1]) {
            Some(n) => Step::Data(vec![write(&a[0], Write::Max(n))], Finish::Ok),
            None => not_integer(),
        },
        ("CALM.PRIORITY", 3) => match int_arg(&a[1]) {
            Some(priority) => Step::Data(
                vec![write(
                    &a[0],
                    Write::Priority {
                        priority,
                        value: a[2].clone(),
                    },
                )],
                Finish::Ok,
            ),
            None => not_integer(),
        },
        ("CALM.CAUSAL", 2) => Step::Data(
            vec![write(&a[0], Write::SingleCausal(a[1].clone()))],
            Finish::Ok,
        ),
        ("CALM.VERSIONS", 1) => Step::Data(vec![get(&a[0])], Finish::Versions),
        ("CALM.KIND", 1) => Step::Data(vec![get(&a[0])], Finish::Kind),
        ("SETNX" | "GETSET" | "GETDEL" | "GETEX" | "MSETNX" | "SETRANGE" | "APPEND", _) => {
            refuse_uncoordinated(&name, "it reads and writes a key's value in one step")
        }
        ("WATCH" | "UNWATCH", _) => refuse_uncoordinated(
            &name,
            "transactions need every replica to agree on an order",
        ),
        ("MULTI", _) => wrong_args(&name),
        // Not atomic: every key listed now is deleted as DEL deletes it (a write that
        // races it survives), which needs no replica to wait for another.
        ("FLUSHALL" | "FLUSHDB", 0) => Step::Flush,
        ("FLUSHALL" | "FLUSHDB", 1)
            if a[0].eq_ignore_ascii_case(b"SYNC") || a[0].eq_ignore_ascii_case(b"ASYNC") =>
        {
            Step::Flush
        }
        ("FLUSHALL" | "FLUSHDB", _) => Step::Reply(Out::err("ERR syntax error")),
        ("RENAME" | "RENAMENX" | "COPY" | "MOVE" | "SMOVE", _) => refuse_uncoordinated(
            &name,
            "it takes a value from one key to another in one step, which replicas of both keys would have to agree on",
        ),
        ("WAIT" | "WAITAOF", _) => refuse_uncoordinated(
            &name,
            "writes are answered once every replica seen alive holds them already (see --resp-ack)",
        ),
        ("SWAPDB" | "MIGRATE", _) => {
            refuse_uncoordinated(&name, "calm has one keyspace, spread over the cluster")
        }
        (
            "REPLICAOF" | "SLAVEOF" | "FAILOVER" | "PSYNC" | "SYNC" | "REPLCONF" | "SHUTDOWN"
            | "MONITOR" | "DEBUG" | "MODULE",
            _,
        ) => Step::Reply(Out::err(format!(
            "ERR {name} is not supported: calm replicates, stops and is watched its own way (calm status, calm server --help)"
        ))),
        (not_yet, _) if NOT_YET.contains(&not_yet) => Step::Reply(Out::err(format!(
            "ERR {not_yet} is not supported yet by calm (see the compatibility table in calm-kvs's README)"
        ))),
        // A command calm answers, with arguments it does not take.
        (known, _) if command_spec(known.as_bytes()).is_some() => wrong_args(&name),
        _ => {
            let start: Vec<String> = a
                .iter()
                .take(3)
                .map(|x| format!("'{}'", String::from_utf8_lossy(x)))
                .collect();
            Step::Reply(Out::err(format!(
                "ERR unknown command '{}', with args beginning with: {}",
                String::from_utf8_lossy(&args[0]),
                start.join(" ")
            )))
        }
    }
}

/// The kinds Redis's `TYPE` name stands for in calm (`string` covers every kind `GET`
/// reads).
fn kinds_of_type(name: &[u8]) -> Vec<Kind> {
    match name.to_ascii_lowercase().as_slice() {
        b"string" => vec![
            Kind::Lww,
            Kind::Counter,
            Kind::Max,
            Kind::Priority,
            Kind::SingleCausal,
            Kind::MultiCausal,
        ],
        b"set" => vec![Kind::Set, Kind::OrSet],
        b"hash" => vec![Kind::Hash],
        b"zset" => vec![Kind::SortedSet],
        _ => vec![],
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
fn scan(a: &[Bytes]) -> Step {
    let Some(cursor) = std::str::from_utf8(&a[0])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Step::Reply(Out::err("ERR invalid cursor"));
    };
    let (mut filter, mut count) = (KeyFilter::default(), 10usize);
    let mut rest = &a[1..];
    while let [option, value, more @ ..] = rest {
        match option.to_ascii_uppercase().as_slice() {
            b"MATCH" => filter.pattern = Some(value.clone()),
            b"COUNT" => match int_arg(value) {
                Some(n) if n >= 1 => count = usize::try_from(n).unwrap_or(usize::MAX),
                Some(_) => return Step::Reply(Out::err("ERR syntax error")),
                None => return not_integer(),
            },
            b"TYPE" => filter.kinds = Some(kinds_of_type(value)),
            _ => return Step::Reply(Out::err("ERR syntax error")),
        }
        rest = more;
    }
    if !rest.is_empty() {
        return Step::Reply(Out::err("ERR syntax error"));
    }
    Step::Keys(filter, Listing::Scan { cursor, count })
}

/// The most members a random pick with repeats answers (a negative count), so that one
/// command cannot make a node build a reply of any size.
const MAX_RANDOM_REPEATS: u64 = 10_000_000;

/// `SRANDMEMBER key [count]`, `HRANDFIELD key [count [WITHVALUES]]`, `ZRANDMEMBER key
/// [count [WITHSCORES]]`: from the key's copy that a read reaches.
fn random_members(name: &str, a: &[Bytes], seed: u64) -> Step {
    let (wanted, flag) = match name {
        "HRANDFIELD" => (HASH, &b"WITHVALUES"[..]),
        "ZRANDMEMBER" => (ZSET, &b"WITHSCORES"[..]),
        _ => (SET, &b""[..]),
    };
    let values = match a.get(2) {
        None => false,
        Some(f) if !flag.is_empty() && f.eq_ignore_ascii_case(flag) => true,
        Some(_) => return Step::Reply(Out::err("ERR syntax error")),
    };
    let count = match a.get(1).map(|c| int_arg(c)) {
        None => None,
        Some(None) => return not_integer(),
        Some(Some(c)) => {
            // As Redis: a count must be within ±i64::MAX (±i64::MAX/2 with values).
            if c == i64::MIN {
                return Step::Reply(Out::err(
                    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
                ));
            }
            if values && c < -(i64::MAX / 2) {
                return Step::Reply(Out::err("ERR value is out of range"));
            }
            if c < 0 && c.unsigned_abs() > MAX_RANDOM_REPEATS {
                return Step::Reply(Out::err(format!(
                    "ERR count is too large: calm answers at most {MAX_RANDOM_REPEATS} members with repeats"
                )));
            }
            Some(c)
        }
    };
    Step::Data(
        vec![get(&a[0])],
        Finish::Random {
            wanted,
            count,
            values,
            seed,
        },
    )
}

/// `SSCAN`, `HSCAN` and `ZSCAN key cursor [MATCH pattern] [COUNT n] [NOVALUES|NOSCORES]`.
/// The whole collection comes in one page, with cursor 0 back: that keeps SCAN's promise
/// (every member present from the first call to the last is returned) whatever changes in
/// between, which a cursor into a collection other replicas change could not. `COUNT` is a
/// hint, as in Redis.
fn scan_members(name: &str, a: &[Bytes]) -> Step {
    let Some(cursor) = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Step::Reply(Out::err("ERR invalid cursor"));
    };
    let (mut pattern, mut values) = (None, true);
    let mut rest = &a[2..];
    loop {
        match rest {
            [] => break,
            [flag, more @ ..]
                if (name == "HSCAN" && flag.eq_ignore_ascii_case(b"NOVALUES"))
                    || (name == "ZSCAN" && flag.eq_ignore_ascii_case(b"NOSCORES")) =>
            {
                values = false;
                rest = more;
            }
            [option, value, more @ ..] => {
                match option.to_ascii_uppercase().as_slice() {
                    b"MATCH" => pattern = Some(value.clone()),
                    b"COUNT" => match int_arg(value) {
                        Some(n) if n >= 1 => {}
                        Some(_) => return Step::Reply(Out::err("ERR syntax error")),
                        None => return not_integer(),
                    },
                    _ => return Step::Reply(Out::err("ERR syntax error")),
                }
                rest = more;
            }
            _ => return Step::Reply(Out::err("ERR syntax error")),
        }
    }
    Step::Data(
        vec![get(&a[0])],
        Finish::ScanMembers {
            wanted: match name {
                "HSCAN" => HASH,
                "ZSCAN" => ZSET,
                _ => SET,
            },
            pattern,
            values,
            resumed: cursor != 0,
        },
    )
}

/// The answer to a listing, from the keys that pass its filter (for a `SCAN`, the keys of
/// the scan under way).
pub fn listed(listing: &Listing, keys: &[Bytes]) -> Out {
    match listing {
        Listing::All => Out::Array(keys.iter().cloned().map(Out::Bulk).collect()),
        Listing::Count => Out::Int(keys.len() as i64),
        Listing::Scan { cursor, count } => {
            let from = usize::try_from(*cursor)
                .unwrap_or(usize::MAX)
                .min(keys.len());
            let to = from.saturating_add(*count).min(keys.len());
            let next = if to >= keys.len() { 0 } else { to };
            Out::Array(vec![
                Out::bulk(next.to_string()),
                Out::Array(keys[from..to].iter().cloned().map(Out::Bulk).collect()),
            ])
        }
    }
}

/// Whether a setting is one of Redis's knobs for its compact encodings of small values
/// (`hash-max-listpack-entries`, `set-max-intset-entries`, `list-compress-depth`, ...).
fn encoding_knob(name: &[u8]) -> bool {
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    ["hash-", "set-", "zset-", "list-", "stream-"]
        .iter()
        .any(|t| name.starts_with(t))
        && ["-max-", "-compress-", "-size"]
            .iter()
            .any(|k| name.contains(k))
}

fn invalid_expire(name: &str) -> Step {
    Step::Reply(Out::err(format!(
        "ERR invalid expire time in '{}' command",
        name.to_ascii_lowercase()
    )))
}

/// The deadline (milliseconds since the Unix epoch) of a time to live of `t` units of
/// `unit` ms from `now_ms`, or at `t` units since the epoch when `absolute`; `None` when it
/// overflows. A deadline in the past expires the key at once, as in Redis.
fn deadline(now_ms: u64, t: i64, unit: i64, absolute: bool) -> Option<u64> {
    let ms = t.checked_mul(unit)?;
    let at = if absolute {
        ms
    } else {
        i64::try_from(now_ms).ok()?.checked_add(ms)?
    };
    Some(u64::try_from(at).unwrap_or(0))
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
fn set_with_options(key: &Bytes, value: &Bytes, options: &[Bytes], now_ms: u64) -> Step {
    let mut at = None;
    let mut i = 0;
    while let Some(option) = options.get(i) {
        let option = String::from_utf8_lossy(option).to_ascii_uppercase();
        let (unit, absolute) = match option.as_str() {
            "NX" | "XX" | "GET" => {
                return refuse_uncoordinated(
                    &format!("SET ... {option}"),
                    "it depends on the key's current value at every replica at once",
                );
            }
            "KEEPTTL" => {
                return Step::Reply(Out::err(
                    "ERR SET ... KEEPTTL is not supported yet by calm (a SET removes the key's time to live)",
                ));
            }
            "EX" => (1000, false),
            "PX" => (1, false),
            "EXAT" => (1000, true),
            "PXAT" => (1, true),
            _ => return Step::Reply(Out::err("ERR syntax error")),
        };
        let Some(t) = options.get(i + 1) else {
            return Step::Reply(Out::err("ERR syntax error"));
        };
        if at.is_some() {
            return Step::Reply(Out::err("ERR syntax error"));
        }
        let Some(t) = int_arg(t) else {
            return not_integer();
        };
        if t <= 0 {
            return invalid_expire("set");
        }
        match deadline(now_ms, t, unit, absolute) {
            Some(d) => at = Some(d),
            None => return invalid_expire("set"),
        }
        i += 2;
    }
    let mut ops = vec![write(key, Write::Lww(value.clone()))];
    if let Some(at) = at {
        ops.push(Op::Expire {
            key: key.clone(),
            at_ms: Some(at),
        });
    }
    Step::Data(ops, Finish::Ok)
}

fn not_float() -> Step {
    Step::Reply(Out::err("ERR value is not a valid float"))
}

/// A score argument as Redis reads one: a decimal or `inf`, `+inf`, `-inf`; never NaN.
fn float_arg(b: &[u8]) -> Option<Score> {
    let s = std::str::from_utf8(b).ok()?;
    if s.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    Score::new(s.parse().ok()?)
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
fn zadd(key: &Bytes, a: &[Bytes]) -> Step {
    let (mut changed, mut incr, mut i) = (false, false, 0);
    while let Some(flag) = a.get(i) {
        match flag.to_ascii_uppercase().as_slice() {
            b"CH" => changed = true,
            b"INCR" => incr = true,
            f @ (b"NX" | b"XX" | b"GT" | b"LT") => {
                return refuse_uncoordinated(
                    &format!("ZADD ... {}", String::from_utf8_lossy(f)),
                    "it depends on the member's current score at every replica at once",
                );
            }
            _ => break,
        }
        i += 1;
    }
    let rest = &a[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Step::Reply(Out::err("ERR syntax error"));
    }
    let mut given = Vec::new();
    for pair in rest.chunks(2) {
        match float_arg(&pair[0]) {
            Some(score) => given.push((pair[1].clone(), score)),
            None => return not_float(),
        }
    }
    if incr {
        let [(member, by)] = given.as_slice() else {
            return Step::Reply(Out::err(
                "ERR INCR option supports a single increment-element pair",
            ));
        };
        return Step::Data(
            vec![
                write(
                    key,
                    Write::ZIncr {
                        member: member.clone(),
                        by: *by,
                    },
                ),
                probe_members(key, vec![member.clone()]),
            ],
            Finish::Score { after_write: true },
        );
    }
    // A member named twice takes its last score.
    let scores: Vec<(Bytes, Score)> = given
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    Step::Data(
        vec![
            probe_members(key, scores.iter().map(|(m, _)| m.clone()).collect()),
            write(key, Write::ZAdd(scores.clone())),
        ],
        Finish::ZAdd { scores, changed },
    )
}

/// The arguments of `ZRANGE`, `ZRANGEBYSCORE`, `ZREVRANGE` and `ZREVRANGEBYSCORE` after the
/// key.
fn zrange(name: &str, a: &[Bytes]) -> Result<Range, Out> {
    let syntax = || Out::err("ERR syntax error");
    let (mut by_score, mut rev, mut limit, mut with_scores) = (false, false, None, false);
    let mut by_lex = false;
    match name {
        "ZRANGEBYSCORE" => by_score = true,
        "ZREVRANGE" => rev = true,
        "ZREVRANGEBYSCORE" => (by_score, rev) = (true, true),
        "ZRANGEBYLEX" => by_lex = true,
        "ZREVRANGEBYLEX" => (by_lex, rev) = (true, true),
        _ => {}
    }
    let mut i = 2;
    while let Some(option) = a.get(i) {
        match option.to_ascii_uppercase().as_slice() {
            b"WITHSCORES" => with_scores = true,
            b"BYSCORE" if name == "ZRANGE" => by_score = true,
            b"REV" if name == "ZRANGE" => rev = true,
            b"BYLEX" if name == "ZRANGE" => by_lex = true,
            b"LIMIT" if name != "ZREVRANGE" => {
                let (Some(offset), Some(count)) = (
                    a.get(i + 1).and_then(|x| int_arg(x)),
                    a.get(i + 2).and_then(|x| int_arg(x)),
                ) else {
                    return Err(if a.len() < i + 3 {
                        syntax()
                    } else {
                        Out::err("ERR value is not an integer or out of range")
                    });
                };
                limit = Some((offset, count));
                i += 2;
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    if by_lex && by_score {
        return Err(syntax());
    }
    if by_lex && with_scores {
        return Err(Out::err(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    if limit.is_some() && !by_score && !by_lex {
        return Err(Out::err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    let by = if by_lex {
        // Reversed ranges name the greater bound first.
        let (lo, hi) = if rev { (&a[1], &a[0]) } else { (&a[0], &a[1]) };
        let (min, max) = LexBound::pair(lo, hi)?;
        RangeBy::Lex(min, max)
    } else if by_score {
        // Reversed ranges name the greater bound first.
        let (lo, hi) = if rev { (&a[1], &a[0]) } else { (&a[0], &a[1]) };
        match (Bound::parse(lo), Bound::parse(hi)) {
            (Some(min), Some(max)) => RangeBy::Score(min, max),
            _ => return Err(Out::err("ERR min or max is not a float")),
        }
    } else {
        match (int_arg(&a[0]), int_arg(&a[1])) {
            (Some(start), Some(stop)) => RangeBy::Index(start, stop),
            _ => return Err(Out::err("ERR value is not an integer or out of range")),
        }
    };
    Ok(Range {
        by,
        rev,
        limit,
        with_scores,
    })
}

/// The members `range` selects, in the order it answers them.
fn select<'a>(all: &'a [(Bytes, Score)], range: &Range) -> Vec<&'a (Bytes, Score)> {
    let ordered: Vec<&(Bytes, Score)> = if range.rev {
        all.iter().rev().collect()
    } else {
        all.iter().collect()
    };
    match range.by {
        RangeBy::Index(start, stop) => {
            let n = ordered.len() as i64;
            let start = if start < 0 { (start + n).max(0) } else { start };
            let stop = if stop < 0 { stop + n } else { stop.min(n - 1) };
            if start > stop || start >= n {
                return vec![];
            }
            ordered[start as usize..=stop as usize].to_vec()
        }
        RangeBy::Score(min, max) => limited(
            ordered
                .into_iter()
                .filter(|(_, s)| min.below(s.get()) && max.above(s.get())),
            range.limit,
        ),
        RangeBy::Lex(ref min, ref max) => limited(
            ordered
                .into_iter()
                .filter(|(m, _)| min.below(m) && max.above(m)),
            range.limit,
        ),
    }
}

/// What `LPOS key element [RANK r] [COUNT n] [MAXLEN m]` looks for.
#[derive(Debug)]
pub struct ListPos {
    element: Bytes,
    /// Skip the first `rank - 1` matches; negative: search from the end.
    rank: i64,
    /// How many matches to answer (0: all), when `COUNT` was given.
    count: Option<usize>,
    /// Compare at most this many elements (0: all).
    maxlen: usize,
}

impl ListPos {
    /// The indexes of the matches, in the order found.
    fn find(&self, list: &[Bytes]) -> Vec<usize> {
        let limit = if self.maxlen == 0 {
            list.len()
        } else {
            self.maxlen.min(list.len())
        };
        let indexes: Box<dyn Iterator<Item = usize>> = if self.rank > 0 {
            Box::new(0..limit)
        } else {
            Box::new((list.len() - limit..list.len()).rev())
        };
        let want = match self.count {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => 1,
        };
        indexes
            .filter(|&i| list[i] == self.element)
            .skip(usize::try_from(self.rank.unsigned_abs() - 1).unwrap_or(usize::MAX))
            .take(want)
            .collect()
    }
}

fn lpos(element: &Bytes, options: &[Bytes]) -> Result<ListPos, Out> {
    let mut pos = ListPos {
        element: element.clone(),
        rank: 1,
        count: None,
        maxlen: 0,
    };
    let mut pairs = options.chunks(2);
    for pair in &mut pairs {
        let [option, value] = pair else {
            return Err(Out::err("ERR syntax error"));
        };
        let option = option.to_ascii_uppercase();
        if !matches!(option.as_slice(), b"RANK" | b"COUNT" | b"MAXLEN") {
            return Err(Out::err("ERR syntax error"));
        }
        let n = int_arg(value)
            .ok_or_else(|| Out::err("ERR value is not an integer or out of range"))?;
        match option.as_slice() {
            b"RANK" if n == 0 => {
                return Err(Out::err(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                ));
            }
            b"RANK" if n == i64::MIN => {
                return Err(Out::err(
                    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
                ));
            }
            b"RANK" => pos.rank = n,
            b"COUNT" if n < 0 => return Err(Out::err("ERR COUNT can't be negative")),
            b"COUNT" => pos.count = Some(usize::try_from(n).unwrap_or(usize::MAX)),
            b"MAXLEN" if n < 0 => return Err(Out::err("ERR MAXLEN can't be negative")),
            b"MAXLEN" => pos.maxlen = usize::try_from(n).unwrap_or(usize::MAX),
            _ => return Err(Out::err("ERR syntax error")),
        }
    }
    Ok(pos)
}

/// The members `LIMIT offset count` keeps of those in a range (a negative count: all).
fn limited<'a>(
    within: impl Iterator<Item = &'a (Bytes, Score)>,
    limit: Option<(i64, i64)>,
) -> Vec<&'a (Bytes, Score)> {
    match limit {
        Some((offset, _)) if offset < 0 => vec![],
        Some((offset, count)) => within
            .skip(offset as usize)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect(),
        None => within.collect(),
    }
}

fn score_out(score: Score) -> Out {
    Out::bulk(format_double(score.get()))
}

/// A double as Redis 7.2 and Valkey write one: the shortest digits that read back as the
/// same number, plainly when the exponent is small (`0.1`, `3`, `1.5`) and in scientific
/// notation otherwise (`1e+20`, `1.5e-7`, `1.7976931348623157e+308`).
fn format_double(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust writes the shortest round-tripping digits as `d.ddde±N`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let e: i64 = exp.parse().unwrap_or(0);
    let n = digits.len() as i64;
    // The value is `digits * 10^k`.
    let k = e - (n - 1);
    let sign = if x < 0.0 { "-" } else { "" };
    let plain = if k >= 0 && e.abs() < n + 7 {
        Some(format!("{digits}{}", "0".repeat(k as usize)))
    } else if k < 0 && (k > -7 || e.abs() < 4) {
        let point = n + k;
        Some(if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        })
    } else {
        None
    };
    match plain {
        Some(p) => format!("{sign}{p}"),
        None => {
            let rest = if n > 1 {
                format!(".{}", &digits[1..])
            } else {
                String::new()
            };
            let esign = if e < 0 { '-' } else { '+' };
            format!("{sign}{}{rest}e{esign}{}", &digits[..1], e.abs())
        }
    }
}

fn counter(key: &Bytes, by: i64) -> Step {
    Step::Data(
        vec![write(key, Write::Increment(by)), get(key)],
        Finish::Counter,
    )
}

fn auth(session: &mut Session, a: &[Bytes], gate: &Gate<'_>) -> Out {
    let (user, pass) = match a {
        [pass] => (&b"default"[..], pass),
        [user, pass] => (user.as_ref(), pass),
        _ => return Out::err("ERR syntax error"),
    };
    if user == b"default" {
        let Some(expected) = gate.password else {
            return Out::err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        };
        // The one password of the port still lets its holder do everything.
        if pass.as_ref() == expected.as_bytes() {
            session.authed = true;
            session.access = Access::All;
            session.user = "default".into();
            return Out::ok();
        }
    } else if let Some(acl) = gate.acl
        && let Ok(name) = std::str::from_utf8(user)
        && let Some(access) = acl.authenticate(name, pass)
    {
        session.authed = true;
        session.access = access;
        session.user = name.to_string();
        return Out::ok();
    }
    Out::err("WRONGPASS invalid username-password pair or user is disabled.")
}

/// `ACL WHOAMI`, `ACL LIST`, `ACL USERS`. Users come from the ACL file every node reads
/// when it starts; changing them at run time (`ACL SETUSER`, ...) is refused: one node's
/// change would not reach the others without coordinating.
fn acl_command(session: &Session, a: &[Bytes], gate: &Gate<'_>) -> Out {
    let sub = a[0].to_ascii_uppercase();
    let users = || gate.acl.map(|acl| acl.users.iter()).into_iter().flatten();
    match (sub.as_slice(), a.len()) {
        (b"WHOAMI", 1) => Out::Bulk(Bytes::from(session.user.clone())),
        (b"USERS", 1) => Out::Array(
            std::iter::once("default".to_string())
                .chain(
                    users()
                        .map(|(name, _)| name.clone())
                        .filter(|n| n != "default"),
                )
                .map(|n| Out::Bulk(Bytes::from(n)))
                .collect(),
        ),
        (b"LIST", 1) => {
            let default = match gate.password {
                Some(_) => "user default on #<password> ~* &* +@all".to_string(),
                None if gate.acl.is_some() => {
                    let grants = gate
                        .acl
                        .map(|acl| acl.access("default"))
                        .map(|a| match a {
                            Access::User { grants, .. } => grants,
                            Access::All => Vec::new(),
                        })
                        .unwrap_or_default();
                    format!("user default on nopass{} &* +@all", key_patterns(&grants))
                }
                None => "user default on nopass ~* &* +@all".to_string(),
            };
            let mut lines = vec![default];
            for (name, user) in users().filter(|(n, _)| n.as_str() != "default") {
                let pass = if user.password.is_some() {
                    "#<password>"
                } else {
                    "nopass resetpass"
                };
                lines.push(format!(
                    "user {name} on {pass}{} &* +@all",
                    key_patterns(&user.grants)
                ));
            }
            Out::Array(
                lines
                    .into_iter()
                    .map(|l| Out::Bulk(Bytes::from(l)))
                    .collect(),
            )
        }
        (b"SETUSER" | b"DELUSER" | b"LOAD" | b"SAVE", _) => Out::err(format!(
            "ERR ACL {} is not supported: users come from the ACL file every node reads when it starts (--acl FILE); a change on one node would not reach the others without coordinating. Edit the file on every node and restart them",
            String::from_utf8_lossy(&sub)
        )),
        (b"WHOAMI" | b"USERS" | b"LIST", _) => Out::err(format!(
            "ERR wrong number of arguments for 'acl|{}' command",
            String::from_utf8_lossy(&sub).to_ascii_lowercase()
        )),
        _ => Out::err(format!(
            "ERR unknown subcommand '{}'. Try ACL WHOAMI, ACL LIST or ACL USERS.",
            String::from_utf8_lossy(&a[0])
        )),
    }
}

/// Redis's key patterns for grants: `~p*` read and write, `%R~p*` read only, `%W~p*`
/// write only (other rights are calm's own and not shown).
fn key_patterns(grants: &[crate::acl::Grant]) -> String {
    let mut out = String::new();
    for g in grants {
        let (r, w) = (
            g.rights.contains(&Right::Read),
            g.rights.contains(&Right::Write),
        );
        let mark = match (r, w) {
            (true, true) => "~",
            (true, false) => "%R~",
            (false, true) => "%W~",
            (false, false) => continue,
        };
        out.push_str(&format!(" {mark}{}*", g.prefix));
    }
    if out.is_empty() {
        out.push_str(" resetkeys");
    }
    out
}

fn hello(session: &mut Session, a: &[Bytes], gate: &Gate<'_>) -> Out {
    let mut rest = a;
    let mut proto = session.proto;
    if let Some(v) = rest.first() {
        match int_arg(v) {
            Some(2) => proto = 2,
            Some(3) => proto = 3,
            _ => return Out::err("NOPROTO unsupported protocol version"),
        }
        rest = &rest[1..];
    }
    let mut name = None;
    while let Some(option) = rest.first() {
        match option.to_ascii_uppercase().as_slice() {
            b"AUTH" if rest.len() >= 3 => {
                if let Out::Error(e) = auth(session, &rest[1..3], gate) {
                    return Out::Error(e);
                }
                rest = &rest[3..];
            }
            b"SETNAME" if rest.len() >= 2 => {
                name = Some(rest[1].clone());
                rest = &rest[2..];
            }
            _ => return Out::err("ERR syntax error in HELLO option"),
        }
    }
    if !session.authed {
        return Out::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    session.proto = proto;
    if name.is_some() {
        session.name = name;
    }
    Out::Map(vec![
        (Out::bulk("server"), Out::bulk("redis")),
        (Out::bulk("version"), Out::bulk(REDIS_VERSION)),
        (Out::bulk("proto"), Out::Int(i64::from(proto))),
        (Out::bulk("id"), Out::Int(session.id as i64)),
        (Out::bulk("mode"), Out::bulk("standalone")),
        (Out::bulk("role"), Out::bulk("master")),
        (Out::bulk("modules"), Out::Array(vec![])),
    ])
}

/// The Redis version calm answers as (the command set it follows).
pub const REDIS_VERSION: &str = "7.2.0";

fn client(session: &mut Session, a: &[Bytes]) -> Out {
    match (a[0].to_ascii_uppercase().as_slice(), a.len()) {
        (b"SETNAME", 2) => {
            if a[1].iter().any(|&b| b == b' ' || b == b'\n') {
                return Out::err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = (!a[1].is_empty()).then(|| a[1].clone());
            Out::ok()
        }
        (b"GETNAME", 1) => session.name.clone().map_or(Out::Null, Out::Bulk),
        (b"ID", 1) => Out::Int(session.id as i64),
        (b"SETINFO", 3) => Out::ok(),
        (b"INFO", 1) => Out::bulk(format!(
            "id={} name={} resp={}\n",
            session.id,
            session
                .name
                .as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default(),
            session.proto
        )),
        (sub, _) => Out::err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// The reply to a failed operation, in Redis's words where it has some.
fn op_error(e: &OpError) -> Out {
    match e {
        OpError::KindMismatch { stored, attempted } => Out::err(format!(
            "WRONGTYPE Operation against a key holding the wrong kind of value (it holds a calm {stored} value; this command needs a {attempted} value)"
        )),
        // Redis's code for a write refused because the store may not grow.
        OpError::QuotaExceeded { .. } => Out::err(format!("OOM {e}")),
        other => Out::err(format!("ERR {other}")),
    }
}

fn wrongtype(holds: &ReadValue, wanted: &str) -> Out {
    wrong_kind(holds.kind(), wanted)
}

fn wrong_kind(holds: Kind, wanted: &str) -> Out {
    Out::err(format!(
        "WRONGTYPE Operation against a key holding the wrong kind of value (it holds a calm {holds} value; this command needs {wanted})"
    ))
}

/// The kinds a command of one Redis type works on, and how its error names them.
type Wanted = (&'static [Kind], &'static str);
const SET: Wanted = (&[Kind::Set, Kind::OrSet], "a set");
const HASH: Wanted = (&[Kind::Hash], "a hash");
const ZSET: Wanted = (&[Kind::SortedSet], "a sorted set");
const LIST: Wanted = (&[Kind::List], "a list");

/// What a probe found (`Ok(None)` when the key is not found).
fn probed(r: &OpResult) -> Result<Option<&Probed>, Out> {
    match r {
        Ok(Reply::Probed(p)) => Ok(p.as_ref()),
        Ok(other) => Err(Out::err(format!("ERR unexpected result {other:?}"))),
        Err(e) => Err(op_error(e)),
    }
}

/// What a members probe found in a key of the `wanted` kinds (nothing when not found).
fn found_in(p: Option<&Probed>, (kinds, name): Wanted) -> Result<&[Option<Found>], Out> {
    match p {
        None => Ok(&[]),
        Some(p) if kinds.contains(&p.kind) => Ok(p.found()),
        Some(p) => Err(wrong_kind(p.kind, name)),
    }
}

fn in_set(p: Option<&Probed>) -> Result<&[Option<Found>], Out> {
    found_in(p, SET)
}

fn in_hash(p: Option<&Probed>) -> Result<&[Option<Found>], Out> {
    found_in(p, HASH)
}

fn in_zset(p: Option<&Probed>) -> Result<&[Option<Found>], Out> {
    found_in(p, ZSET)
}

/// The elements a range probe found in a list (none when the key is not found).
fn in_list(p: Option<&Probed>) -> Result<&[Bytes], Out> {
    match p {
        None => Ok(&[]),
        Some(p) if p.kind == Kind::List => Ok(p.values()),
        Some(p) => Err(wrong_kind(p.kind, LIST.1)),
    }
}

/// The length a probe found in a key of the `wanted` kinds (0 when not found).
fn len_of(p: Option<&Probed>, (kinds, name): Wanted) -> Result<i64, Out> {
    match p {
        None => Ok(0),
        Some(p) if kinds.contains(&p.kind) => Ok(i64::try_from(p.length()).unwrap_or(i64::MAX)),
        Some(p) => Err(wrong_kind(p.kind, name)),
    }
}

fn is_found(found: &[Option<Found>], i: usize) -> bool {
    found.get(i).is_some_and(Option::is_some)
}

fn field_at(found: &[Option<Found>], i: usize) -> Option<&Bytes> {
    match found.get(i) {
        Some(Some(Found::Field(v))) => Some(v),
        _ => None,
    }
}

fn score_at(found: &[Option<Found>], i: usize) -> Option<Score> {
    match found.get(i) {
        Some(Some(Found::Score(s))) => Some(*s),
        _ => None,
    }
}

/// How many of `named` distinct members an add (or a remove) changed, from what a probe
/// found before it.
fn changed(named: usize, found: &[Option<Found>], add: bool) -> i64 {
    let present = found.iter().filter(|f| f.is_some()).count();
    (if add { named - present } else { present }) as i64
}

fn list_of(members: &BTreeSet<Bytes>) -> Vec<Bytes> {
    members.iter().cloned().collect()
}

/// A value as Redis's string commands see it.
fn as_string(v: &ReadValue) -> Result<Bytes, Out> {
    match v {
        ReadValue::Lww { value, .. } | ReadValue::Priority { value, .. } => Ok(value.clone()),
        ReadValue::Counter { value } => Ok(Bytes::from(value.to_string())),
        ReadValue::Max { value } => Ok(Bytes::from(value.to_string())),
        ReadValue::SingleCausal { values, .. } | ReadValue::MultiCausal { values, .. } => {
            match values.as_slice() {
                [one] => Ok(one.clone()),
                many => Err(Out::err(format!(
                    "CONFLICT the key holds {} concurrent versions; CALM.VERSIONS returns them all",
                    many.len()
                ))),
            }
        }
        ReadValue::Set { .. }
        | ReadValue::OrSet { .. }
        | ReadValue::Hash { .. }
        | ReadValue::SortedSet { .. }
        | ReadValue::List { .. }
        | ReadValue::Custom(_) => Err(wrongtype(v, "a string")),
    }
}

/// A hash's fields (none when the key is not found).
fn fields(v: Option<&ReadValue>) -> Result<&[(Bytes, Bytes)], Out> {
    match v {
        None => Ok(&[]),
        Some(ReadValue::Hash { fields }) => Ok(fields),
        Some(other) => Err(wrongtype(other, "a hash")),
    }
}

/// A list's elements (none when the key is not found).
fn list(v: Option<&ReadValue>) -> Result<&[Bytes], Out> {
    match v {
        None => Ok(&[]),
        Some(ReadValue::List { values }) => Ok(values),
        Some(other) => Err(wrongtype(other, "a list")),
    }
}

/// A sorted set's members by score (none when the key is not found).
fn scored(v: Option<&ReadValue>) -> Result<&[(Bytes, Score)], Out> {
    match v {
        None => Ok(&[]),
        Some(ReadValue::SortedSet { members }) => Ok(members),
        Some(other) => Err(wrongtype(other, "a sorted set")),
    }
}

fn members(v: &ReadValue) -> Result<&[Bytes], Out> {
    match v {
        ReadValue::Set { members } | ReadValue::OrSet { members } => Ok(members),
        other => Err(wrongtype(other, "a set")),
    }
}

/// The value a read returned: `Ok(None)` when the key is not found.
fn read(r: &OpResult) -> Result<Option<&ReadValue>, Out> {
    match r {
        Ok(Reply::Value(v)) => Ok(v.as_ref()),
        Ok(other) => Err(Out::err(format!("ERR unexpected result {other:?}"))),
        Err(e) => Err(op_error(e)),
    }
}

fn written(r: &OpResult) -> Result<(), Out> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(op_error(e)),
    }
}

fn int(n: i128) -> Out {
    i64::try_from(n).map_or_else(|_| Out::bulk(n.to_string()), Out::Int)
}

/// Builds a data command's reply from its operations' results.
pub fn finish(f: Finish, results: &[OpResult], proto: u8) -> Out {
    finish_inner(f, results, proto).unwrap_or_else(|e| e)
}

fn finish_inner(f: Finish, r: &[OpResult], proto: u8) -> Result<Out, Out> {
    Ok(match f {
        Finish::Get => match read(&r[0])? {
            None => Out::Null,
            Some(v) => Out::Bulk(as_string(v)?),
        },
        Finish::StrLen => match read(&r[0])? {
            None => Out::Int(0),
            Some(v) => Out::Int(as_string(v)?.len() as i64),
        },
        Finish::Ok => {
            for x in r {
                written(x)?;
            }
            Out::ok()
        }
        Finish::Deleted => {
            let mut n = 0;
            for x in r {
                match x {
                    Ok(Reply::Deleted { existed }) => n += i64::from(*existed),
                    other => written(other)?,
                }
            }
            Out::Int(n)
        }
        Finish::Exists => {
            let mut n = 0;
            for x in r {
                n += i64::from(probed(x)?.is_some());
            }
            Out::Int(n)
        }
        Finish::MGet => Out::Array(
            r.iter()
                .map(|x| match read(x) {
                    Ok(Some(v)) => as_string(v).map_or(Out::Null, Out::Bulk),
                    _ => Out::Null,
                })
                .collect(),
        ),
        Finish::Counter => {
            written(&r[0])?;
            match read(&r[1])? {
                Some(ReadValue::Counter { value }) => int(*value),
                Some(other) => return Err(wrongtype(other, "a counter")),
                None => Out::Int(0),
            }
        }
        Finish::SetChange {
            members: named,
            add,
        } => {
            let found = in_set(probed(&r[0])?)?;
            written(&r[1])?;
            Out::Int(changed(named.len(), found, add))
        }
        Finish::Random {
            wanted,
            count,
            values,
            seed,
        } => {
            use rand::SeedableRng;
            use rand::seq::IndexedRandom;
            let v = read(&r[0])?;
            let items: Vec<(Bytes, Out)> = match v {
                None => Vec::new(),
                Some(v) if !wanted.0.contains(&v.kind()) => return Err(wrongtype(v, wanted.1)),
                Some(ReadValue::Hash { fields }) => fields
                    .iter()
                    .map(|(f, x)| (f.clone(), Out::Bulk(x.clone())))
                    .collect(),
                Some(ReadValue::SortedSet { members }) => members
                    .iter()
                    .map(|(m, s)| (m.clone(), score_out(*s)))
                    .collect(),
                Some(other) => members(other)?
                    .iter()
                    .map(|m| (m.clone(), Out::Null))
                    .collect(),
            };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let Some(count) = count else {
                return Ok(items
                    .choose(&mut rng)
                    .map_or(Out::Null, |(m, _)| Out::Bulk(m.clone())));
            };
            let chosen: Vec<&(Bytes, Out)> = if items.is_empty() {
                Vec::new()
            } else if count >= 0 {
                let n = usize::try_from(count).unwrap_or(usize::MAX);
                items.sample(&mut rng, n).collect()
            } else {
                (0..count.unsigned_abs())
                    .filter_map(|_| items.choose(&mut rng))
                    .collect()
            };
            Out::Array(match (values, proto) {
                (false, _) => chosen.iter().map(|(m, _)| Out::Bulk(m.clone())).collect(),
                (true, 3) => chosen
                    .iter()
                    .map(|(m, x)| Out::Array(vec![Out::Bulk(m.clone()), x.clone()]))
                    .collect(),
                (true, _) => chosen
                    .iter()
                    .flat_map(|(m, x)| [Out::Bulk(m.clone()), x.clone()])
                    .collect(),
            })
        }
        Finish::ScanMembers {
            wanted,
            pattern,
            values,
            resumed,
        } => {
            let matches = |m: &[u8]| pattern.as_ref().is_none_or(|p| glob_match(p, m));
            let v = read(&r[0])?;
            if let Some(v) = v
                && !wanted.0.contains(&v.kind())
            {
                return Err(wrongtype(v, wanted.1));
            }
            let mut items = Vec::new();
            match v {
                _ if resumed => {}
                None => {}
                Some(ReadValue::Hash { fields }) => {
                    for (f, x) in fields.iter().filter(|(f, _)| matches(f)) {
                        items.push(Out::Bulk(f.clone()));
                        if values {
                            items.push(Out::Bulk(x.clone()));
                        }
                    }
                }
                Some(ReadValue::SortedSet { members }) => {
                    for (m, score) in members.iter().filter(|(m, _)| matches(m)) {
                        items.push(Out::Bulk(m.clone()));
                        if values {
                            items.push(score_out(*score));
                        }
                    }
                }
                Some(other) => {
                    for m in members(other)?.iter().filter(|m| matches(m)) {
                        items.push(Out::Bulk(m.clone()));
                    }
                }
            }
            Out::Array(vec![Out::bulk("0"), Out::Array(items)])
        }
        Finish::Members => {
            let list: Vec<Out> = match read(&r[0])? {
                Some(v) => members(v)?.iter().cloned().map(Out::Bulk).collect(),
                None => vec![],
            };
            if proto == 3 {
                Out::Set(list)
            } else {
                Out::Array(list)
            }
        }
        Finish::AreMembers(named) => {
            let found = in_set(probed(&r[0])?)?;
            Out::Array(
                (0..named)
                    .map(|i| Out::Int(i64::from(is_found(found, i))))
                    .collect(),
            )
        }
        Finish::Combine { how, count } => {
            let mut sets = Vec::with_capacity(r.len());
            for x in r {
                sets.push(match read(x)? {
                    Some(v) => members(v)?.iter().cloned().collect::<BTreeSet<Bytes>>(),
                    None => BTreeSet::new(),
                });
            }
            let mut sets = sets.into_iter();
            let first = sets.next().unwrap_or_default();
            let combined = sets.fold(first, |acc, s| match how {
                SetOp::Inter => acc.intersection(&s).cloned().collect(),
                SetOp::Union => acc.union(&s).cloned().collect(),
                SetOp::Diff => acc.difference(&s).cloned().collect(),
            });
            match count {
                Some(0) => Out::Int(combined.len() as i64),
                Some(limit) => Out::Int(combined.len().min(limit) as i64),
                None => {
                    let list = combined.into_iter().map(Out::Bulk).collect();
                    if proto == 3 {
                        Out::Set(list)
                    } else {
                        Out::Array(list)
                    }
                }
            }
        }
        Finish::ListLen { after_write } => {
            let at = if after_write {
                written(&r[0])?;
                1
            } else {
                0
            };
            Out::Int(len_of(probed(&r[at])?, LIST)?)
        }
        Finish::ListRange => Out::Array(
            in_list(probed(&r[0])?)?
                .iter()
                .cloned()
                .map(Out::Bulk)
                .collect(),
        ),
        Finish::ListPos(pos) => {
            let found = pos.find(list(read(&r[0])?)?);
            match pos.count {
                Some(_) => Out::Array(found.into_iter().map(|i| Out::Int(i as i64)).collect()),
                None => found.first().map_or(Out::Null, |i| Out::Int(*i as i64)),
            }
        }
        Finish::ListIndex => match in_list(probed(&r[0])?)?.first() {
            Some(v) => Out::Bulk(v.clone()),
            None => Out::Null,
        },
        Finish::ListInsert(pivot) => {
            let before = read(&r[0])?;
            written(&r[1])?;
            match before {
                None => Out::Int(0),
                Some(v) => {
                    let all = list(Some(v))?;
                    if all.contains(&pivot) {
                        Out::Int(all.len() as i64 + 1)
                    } else {
                        Out::Int(-1)
                    }
                }
            }
        }
        Finish::ListRem(count, value) => {
            let all = list(read(&r[0])?)?;
            written(&r[1])?;
            let matching = all.iter().filter(|v| **v == value).count();
            Out::Int(match count {
                0 => matching,
                n => matching.min(n.unsigned_abs() as usize),
            } as i64)
        }
        Finish::ListSet(index) => {
            let before = read(&r[0])?;
            written(&r[1])?;
            match before {
                None => return Err(Out::err("ERR no such key")),
                Some(v) => {
                    let all = list(Some(v))?;
                    match crate::value::index_range(all.len(), index, index) {
                        Some(_) => Out::ok(),
                        None => return Err(Out::err("ERR index out of range")),
                    }
                }
            }
        }
        Finish::MemoryUsage(key_len) => match &r[0] {
            Ok(Reply::Raw(Some(v))) if v.is_visible() => {
                let encoded = bincode::serde::encode_to_vec(v, bincode::config::standard())
                    .map_or(0, |e| e.len());
                Out::Int((key_len + encoded) as i64)
            }
            Ok(_) => Out::Null,
            Err(e) => return Err(op_error(e)),
        },
        Finish::GetRange(start, end) => {
            let value = match read(&r[0])? {
                Some(v) => as_string(v)?,
                None => Bytes::new(),
            };
            let n = value.len() as i64;
            let from = if start < 0 { (n + start).max(0) } else { start };
            let to = if end < 0 { n + end } else { end.min(n - 1) };
            if n == 0 || from > to || from >= n {
                Out::bulk("")
            } else {
                Out::Bulk(value.slice(from as usize..=to as usize))
            }
        }
        Finish::IsMember => Out::Int(i64::from(is_found(in_set(probed(&r[0])?)?, 0))),
        Finish::Card => Out::Int(len_of(probed(&r[0])?, SET)?),
        Finish::Type => Out::simple(match probed(&r[0])?.map(|p| p.kind) {
            None => "none",
            Some(Kind::Set | Kind::OrSet) => "set",
            Some(Kind::Hash) => "hash",
            Some(Kind::SortedSet) => "zset",
            Some(Kind::List) => "list",
            Some(_) => "string",
        }),
        Finish::Ttl {
            ms,
            absolute,
            now_ms,
        } => {
            let stored = match &r[0] {
                Ok(Reply::Raw(v)) => v.as_ref(),
                Ok(other) => return Err(Out::err(format!("ERR unexpected result {other:?}"))),
                Err(e) => return Err(op_error(e)),
            };
            Out::Int(match stored {
                Some(v) if v.is_live(now_ms) => match v.deadline() {
                    None => -1,
                    Some(at) => {
                        let (at, now) = (i128::from(at), i128::from(now_ms));
                        let n = match (absolute, ms) {
                            (true, true) => at,
                            (true, false) => at / 1000,
                            (false, true) => at - now,
                            (false, false) => (at - now + 500) / 1000,
                        };
                        i64::try_from(n).unwrap_or(i64::MAX)
                    }
                },
                _ => -2,
            })
        }
        Finish::Expiry => match &r[0] {
            Ok(Reply::Expiry { changed }) => Out::Int(i64::from(*changed)),
            Ok(other) => return Err(Out::err(format!("ERR unexpected result {other:?}"))),
            Err(e) => return Err(op_error(e)),
        },
        Finish::Kind => match read(&r[0])? {
            None => Out::Null,
            Some(v) => Out::Simple(Bytes::copy_from_slice(v.kind().name().as_bytes())),
        },
        Finish::FieldChange { fields: named, add } => {
            let found = in_hash(probed(&r[0])?)?;
            written(&r[1])?;
            Out::Int(changed(named.len(), found, add))
        }
        Finish::Field { len } => match (field_at(in_hash(probed(&r[0])?)?, 0), len) {
            (Some(v), false) => Out::Bulk(v.clone()),
            (None, false) => Out::Null,
            (v, true) => Out::Int(v.map_or(0, |v| v.len() as i64)),
        },
        Finish::Fields(named) => {
            let found = in_hash(probed(&r[0])?)?;
            Out::Array(
                (0..named)
                    .map(|i| field_at(found, i).map_or(Out::Null, |v| Out::Bulk(v.clone())))
                    .collect(),
            )
        }
        Finish::FieldExists => Out::Int(i64::from(is_found(in_hash(probed(&r[0])?)?, 0))),
        Finish::Hash { names, values } => {
            let all = fields(read(&r[0])?)?;
            match (names, values) {
                (true, true) => Out::Map(
                    all.iter()
                        .map(|(f, v)| (Out::Bulk(f.clone()), Out::Bulk(v.clone())))
                        .collect(),
                ),
                (true, false) => {
                    Out::Array(all.iter().map(|(f, _)| Out::Bulk(f.clone())).collect())
                }
                _ => Out::Array(all.iter().map(|(_, v)| Out::Bulk(v.clone())).collect()),
            }
        }
        Finish::HashLen => Out::Int(len_of(probed(&r[0])?, HASH)?),
        Finish::FieldCounter => {
            written(&r[0])?;
            match field_at(in_hash(probed(&r[1])?)?, 0).map(|v| crate::value::parse_int(v)) {
                Some(Some(n)) => Out::Int(n),
                Some(None) => return Err(Out::err("ERR hash value is not an integer")),
                None => Out::Int(0),
            }
        }
        Finish::ZAdd { scores, changed } => {
            let found = in_zset(probed(&r[0])?)?;
            written(&r[1])?;
            let counted = scores
                .iter()
                .enumerate()
                .filter(|(i, (_, s))| match score_at(found, *i) {
                    None => true,
                    Some(old) => changed && old != *s,
                })
                .count();
            Out::Int(counted as i64)
        }
        Finish::ZRem => {
            let found = in_zset(probed(&r[0])?)?;
            written(&r[1])?;
            Out::Int(found.iter().filter(|f| f.is_some()).count() as i64)
        }
        Finish::Score { after_write } => {
            let at = if after_write {
                written(&r[0])?;
                1
            } else {
                0
            };
            score_at(in_zset(probed(&r[at])?)?, 0).map_or(Out::Null, score_out)
        }
        Finish::Scores(named) => {
            let found = in_zset(probed(&r[0])?)?;
            Out::Array(
                (0..named)
                    .map(|i| score_at(found, i).map_or(Out::Null, score_out))
                    .collect(),
            )
        }
        Finish::ZCard => Out::Int(len_of(probed(&r[0])?, ZSET)?),
        Finish::ZRange(range) => {
            let all = scored(read(&r[0])?)?;
            let chosen = select(all, &range);
            match (range.with_scores, proto) {
                (false, _) => {
                    Out::Array(chosen.iter().map(|(m, _)| Out::Bulk(m.clone())).collect())
                }
                (true, 3) => Out::Array(
                    chosen
                        .iter()
                        .map(|(m, s)| Out::Array(vec![Out::Bulk(m.clone()), score_out(*s)]))
                        .collect(),
                ),
                (true, _) => Out::Array(
                    chosen
                        .iter()
                        .flat_map(|(m, s)| [Out::Bulk(m.clone()), score_out(*s)])
                        .collect(),
                ),
            }
        }
        Finish::ZLexCount(min, max) => Out::Int(
            scored(read(&r[0])?)?
                .iter()
                .filter(|(m, _)| min.below(m) && max.above(m))
                .count() as i64,
        ),
        Finish::ZCount(min, max) => Out::Int(
            scored(read(&r[0])?)?
                .iter()
                .filter(|(_, s)| min.below(s.get()) && max.above(s.get()))
                .count() as i64,
        ),
        Finish::ZRank {
            member,
            rev,
            with_score,
        } => {
            let all = scored(read(&r[0])?)?;
            match all.iter().position(|(m, _)| *m == member) {
                Some(i) => {
                    let rank = Out::Int((if rev { all.len() - 1 - i } else { i }) as i64);
                    if with_score {
                        Out::Array(vec![rank, score_out(all[i].1)])
                    } else {
                        rank
                    }
                }
                None if with_score => Out::NullArray,
                None => Out::Null,
            }
        }
        Finish::Versions => match read(&r[0])? {
            None => Out::Array(vec![]),
            Some(
                ReadValue::SingleCausal { values, .. } | ReadValue::MultiCausal { values, .. },
            ) => Out::Array(values.iter().cloned().map(Out::Bulk).collect()),
            Some(v) => Out::Array(vec![Out::Bulk(as_string(v)?)]),
        },
    })
}

#[cfg(test)]
mod test {
    use super::*;

    /// Every command has its arguments written, they read, and they take as many words as
    /// its arity says: exactly that many for a positive arity, at least that many for a
    /// negative one.
    #[test]
    fn every_command_has_arguments_that_agree_with_its_arity() {
        for c in COMMANDS {
            let synopsis = super::super::docs::SYNOPSES
                .iter()
                .find(|(n, _)| *n == c.name);
            let (_, synopsis) = synopsis.unwrap_or_else(|| panic!("{} has no synopsis", c.name));
            let args =
                super::super::docs::parse(synopsis).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let (least, more) = args.iter().fold((1, false), |(n, v), a| {
                let (m, w) = a.words();
                (n + m, v || w)
            });
            if c.arity > 0 {
                assert_eq!((least, more), (c.arity as usize, false), "{}", c.name);
            } else {
                assert_eq!(least, c.arity.unsigned_abs() as usize, "{}", c.name);
            }
        }
        assert_eq!(
            super::super::docs::SYNOPSES.len(),
            COMMANDS.len(),
            "a synopsis of no command"
        );
    }

    #[test]
    fn random_picks_are_distinct_or_repeat_as_asked_and_follow_the_seed() {
        let members: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("m{i:02}"))).collect();
        let read = vec![Ok(Reply::Value(Some(ReadValue::OrSet {
            members: members.clone(),
        })))];
        let pick = |count: Option<i64>, seed: u64| {
            let f = Finish::Random {
                wanted: SET,
                count,
                values: false,
                seed,
            };
            match finish(f, &read, 2) {
                Out::Array(items) => items
                    .into_iter()
                    .map(|o| match o {
                        Out::Bulk(b) => b,
                        other => panic!("{other:?}"),
                    })
                    .collect::<Vec<_>>(),
                Out::Bulk(b) => vec![b],
                other => panic!("{other:?}"),
            }
        };
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let distinct = pick(Some(7), seed);
            assert_eq!(distinct.len(), 7);
            assert_eq!(distinct.iter().collect::<BTreeSet<_>>().len(), 7);
            assert_eq!(
                pick(Some(7), seed),
                distinct,
                "the same seed picks the same"
            );
            assert_eq!(pick(Some(50), seed).len(), 20, "at most every member");
            assert_eq!(pick(Some(-50), seed).len(), 50, "repeats allowed");
            seen.extend(pick(None, seed));
        }
        assert_eq!(seen.len(), 20, "every member is picked sometimes");
        let mut session = Session::new(1, true, 7);
        assert_ne!(session.next_seed(), session.next_seed());
    }

    #[test]
    fn doubles_are_written_as_redis_writes_them() {
        for (x, text) in [
            (0.1, "0.1"),
            (3.0, "3"),
            (-2.5, "-2.5"),
            (1e20, "1e+20"),
            (1e6, "1000000"),
            (1.5e-7, "1.5e-7"),
            (0.0001, "0.0001"),
            (1.25e-5, "1.25e-5"),
            (0.000125, "0.000125"),
            (123456789012345680.0, "123456789012345680"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_double(x), text, "{x:e}");
            if x.is_finite() {
                assert_eq!(format_double(x).parse::<f64>().unwrap(), x);
            }
        }
    }

    /// The compatibility table in `kvs/README.md` says, per Redis group, which commands calm
    /// supports, refuses and has not yet; every one of them is checked here, and every
    /// command calm answers must be in the table.
    #[test]
    fn the_compatibility_table_is_true() {
        let readme = include_str!("../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| group | supported | refused | not yet |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(rows.len() >= 9, "the table has a row per group: {rows:?}");
        let names = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let answer = |name: &str| -> Option<String> {
            let mut session = Session::new(1, true, 0);
            let args: Vec<Bytes> = [name, "k", "1", "x", "y"]
                .iter()
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect();
            match plan(&mut session, &args, &Gate::default(), 0) {
                Step::Reply(Out::Error(e)) => Some(e),
                _ => None,
            }
        };
        let mut supported = Vec::new();
        for row in rows {
            let cells: Vec<&str> = row.split('|').collect();
            let group = cells[1].trim();
            for name in names(cells[2]) {
                assert!(
                    command_spec(name.as_bytes()).is_some(),
                    "{group}: {name} is in the table as supported but not in COMMANDS"
                );
                let e = answer(&name).unwrap_or_default();
                assert!(
                    !e.contains("not supported yet") && !e.contains("unknown command"),
                    "{name}: {e}"
                );
                supported.push(name.to_ascii_lowercase());
            }
            for name in names(cells[3]) {
                let e = answer(&name).unwrap_or_default();
                assert!(
                    e.contains("is not supported:"),
                    "{group}: {name} is in the table as refused, but answers {e:?}"
                );
            }
            for name in names(cells[4]) {
                let e = answer(&name).unwrap_or_default();
                assert!(
                    e.contains("not supported yet"),
                    "{group}: {name} is in the table as not yet, but answers {e:?}"
                );
            }
        }
        for c in COMMANDS.iter().filter(|c| !c.name.starts_with("calm.")) {
            assert!(
                supported.iter().any(|s| s == c.name),
                "{} is answered but not in the compatibility table",
                c.name
            );
        }
    }
}
