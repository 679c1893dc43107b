//! Entry points for calm's fuzz targets (`fuzz/`, run by `scripts/fuzz`), and for the test
//! that replays their corpora on every build. Each takes arbitrary bytes the way a node
//! takes them from the network or its disk, and runs them as far into the node as they
//! go: decoding, then the sans-IO cores (a worker's store, the cluster agent, the Redis
//! command planner). None may panic, hang or allocate what the input merely claims; where
//! a property must hold for every input (lattice merges commute), it is asserted.
//!
//! Only with the `fuzzing` feature; not a stable API.

use std::sync::Arc;

use bytes::BytesMut;
use calm_lattice::ReplicaId;

use crate::cluster::agent::{ClusterAgent, ClusterConfig};
use crate::cluster::messages::{PeerEnvelope, PeerReply};
use crate::protocol::{Request, RequestBody};
use crate::resp::commands::{self, Session, Step};
use crate::resp::framing::Limits;
use crate::storage::{MemDisk, Quota, Quotas, StorageConfig, Tiered, wal};
use crate::value::Value;
use crate::{HashRing, Worker, WorkerConfig};

/// The clock every target runs at (a fixed time: runs must be repeatable).
const NOW_MS: u64 = 1_700_000_000_000;

/// A worker whose node has quotas (small ones, so inputs reach the limits): what it
/// counts is [audited](audited) when a target is done with it.
fn worker() -> Worker {
    let ring = Arc::new(HashRing::new([0], 1));
    let mut w = Worker::new(0, ReplicaId(1), ring, WorkerConfig::default()).accepting(kinds());
    w.count_quotas(quotas())
        .expect("a worker in memory counts its keys");
    w
}

fn quotas() -> Arc<Quotas> {
    let quota = |prefix: &str, keys, bytes| Quota {
        prefix: prefix.into(),
        keys,
        bytes,
    };
    Quotas::new(vec![
        quota("a", Some(4), Some(256)),
        quota("", None, Some(1 << 16)),
    ])
}

/// The quota figures of `w` must match a recount of what it holds, whatever it was sent.
fn audited(mut w: Worker) {
    let counted = w.audit_quotas().unwrap_or_else(|e| panic!("{e}"));
    let usage: Vec<(u64, u64)> = w.quota_usage().iter().map(|u| (u.keys, u.bytes)).collect();
    assert_eq!(
        counted, usage,
        "a node's quota figures and its worker's record differ"
    );
}

/// A native request frame body (version byte, then the message), as a node's server reads
/// it: decoded, and a batch of operations run on a worker, which then ticks past every
/// deadline the operations set.
pub fn native_request(data: &[u8]) {
    let Ok(request) = crate::wire::decode_body::<Request>(data) else {
        return;
    };
    let mut w = worker();
    match request.body {
        RequestBody::Batch { ops, .. } => {
            w.handle_ops(NOW_MS, ops);
            let _ = w.commit(NOW_MS);
            w.handle_tick(u64::MAX / 2);
        }
        RequestBody::Peer(envelope) => {
            let mut agent = agent();
            agent.handle_request(NOW_MS, envelope, &mut w);
        }
        RequestBody::Subscribe { keys, .. } => {
            w.watch(keys.into_iter().map(|k| k.0).collect(), true)
        }
        RequestBody::Unsubscribe { keys } => w.watch(keys, false),
        _ => {}
    }
    audited(w);
}

fn agent() -> ClusterAgent {
    let config = ClusterConfig {
        replication: 2,
        ..ClusterConfig::default()
    };
    ClusterAgent::new("127.0.0.1:7000".into(), vec![], config, NOW_MS, 1)
}

/// Messages between cluster agents: the first byte chooses a request envelope or a reply
/// (to the agent's own first message), the rest is its frame body. The agent handles it
/// with a worker as its store and then runs its timers.
pub fn peer_message(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let mut agent = agent();
    let mut w = worker();
    if which % 2 == 0 {
        let Ok(envelope) = crate::wire::decode_body::<PeerEnvelope>(body) else {
            return;
        };
        agent.handle_request(NOW_MS, envelope, &mut w);
    } else {
        let Ok(reply) = crate::wire::decode_body::<PeerReply>(body) else {
            return;
        };
        agent.handle_tick(NOW_MS + 10_000, &mut w);
        let sent: Vec<_> = std::iter::from_fn(|| agent.poll_outgoing()).collect();
        let (id, to) = sent
            .first()
            .map(|o| (o.id, o.to.clone()))
            .unwrap_or((1, "127.0.0.1:7001".into()));
        agent.handle_reply(NOW_MS + 10_001, id, &to, reply, &mut w);
    }
    for step in 1..=3 {
        agent.handle_tick(NOW_MS + step * 60_000, &mut w);
        while agent.poll_outgoing().is_some() {}
    }
    audited(w);
}

/// Bytes from a Redis client: split into requests with the server's limits, each planned as
/// the connection would, its operations run on a worker and the reply encoded in RESP2, or
/// RESP3 after `HELLO 3`.
pub fn resp(data: &[u8]) {
    let limits = Limits {
        max_args: 1 << 10,
        max_bulk: 1 << 16,
        max_inline: 1 << 12,
    };
    let mut buf = BytesMut::from(data);
    let mut session = Session::new(1, true, 7);
    let mut w = worker();
    let mut out = BytesMut::new();
    // A password and an ACL, so inputs can authenticate as users whose commands are checked.
    let acl = crate::acl::Acl::parse(
        "[users.alice]\npassword = \"pw\"\ngrants = [{ prefix = \"a\", rights = [\"read\", \"write\"] }]",
    )
    .expect("the fuzz target's ACL parses");
    let gate = commands::Gate {
        password: Some("pw"),
        acl: Some(&acl),
    };
    while let Ok(Some(args)) = crate::resp::next_request(&mut buf, limits) {
        let reply = match commands::plan(&mut session, &args, &gate, NOW_MS) {
            Step::Reply(reply) => reply,
            Step::Data(ops, finish) => {
                let results = w.handle_ops(NOW_MS, ops);
                commands::finish(finish, &results, session.proto)
            }
            Step::Keys(filter, listing) => match w.live_keys(NOW_MS, &filter) {
                Ok(keys) => commands::listed(&listing, &keys),
                Err(_) => continue,
            },
            Step::Quit => break,
            _ => continue,
        };
        crate::resp::encode_reply(&reply, session.proto, &mut out);
    }
    w.handle_tick(u64::MAX / 2);
    audited(w);
}

/// A worker's write-ahead log after a crash, recovered. The first byte chooses the form
/// of the rest: even, the log's bytes as they are (mostly damage); odd, payloads separated
/// by `0xFF 0xFE`, each framed as an intact record (so recovery decodes and merges them).
/// What recovery keeps must survive a second recovery unchanged.
pub fn wal_recovery(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let log = if form % 2 == 0 {
        rest.to_vec()
    } else {
        let mut log = Vec::new();
        let mut start = 0;
        for end in (0..rest.len()).filter(|&i| rest[i..].starts_with(&[0xFF, 0xFE])) {
            if end >= start {
                wal::encode_record(&rest[start..end], &mut log);
                start = end + 2;
            }
        }
        wal::encode_record(&rest[start.min(rest.len())..], &mut log);
        log
    };
    let disk = MemDisk::new();
    disk.damage_log(|l| *l = log);
    let config = StorageConfig::default();
    let Ok((mut first, _)) = Tiered::open(Box::new(disk.clone()), config, None) else {
        return;
    };
    let mut kept = first.collect(|_| true, usize::MAX);
    let _ = first.flush(NOW_MS);
    drop(first);
    let (mut second, _) =
        Tiered::open(Box::new(disk), config, None).expect("a recovered log recovers again");
    let mut again = second.collect(|_| true, usize::MAX);
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(kept, again, "a second recovery changed what the first kept");
    // What recovery kept is counted toward the quotas as a recount finds it.
    let quotas = quotas();
    let ring = Arc::new(HashRing::new([0], 1));
    second
        .count_quotas(quotas.clone(), ring, 0)
        .expect("a recovered store counts its keys");
    let counted = second.audit_quotas().unwrap_or_else(|e| panic!("{e}"));
    let usage: Vec<(u64, u64)> = quotas.usage().iter().map(|u| (u.keys, u.bytes)).collect();
    assert_eq!(counted, usage, "recovered keys counted wrongly");
}

/// An application's lattice the fuzz targets' nodes store (kind `fuzz`): the most seen,
/// and names.
#[derive(
    calm_lattice::Lattice,
    Default,
    Clone,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FuzzLattice {
    most: calm_lattice::Max<u64>,
    names: calm_lattice::SetUnionBTreeSet<bytes::Bytes>,
}

impl crate::value::CustomLattice for FuzzLattice {
    const KIND: &'static str = "fuzz";
}

/// The kinds of the fuzz targets' nodes: [`FuzzLattice`].
pub fn kinds() -> crate::value::Kinds {
    static KINDS: std::sync::OnceLock<crate::value::Kinds> = std::sync::OnceLock::new();
    KINDS
        .get_or_init(|| {
            crate::value::Kinds::new()
                .with::<FuzzLattice>()
                .expect("the fuzz kind registers")
        })
        .clone()
}

/// Two values of a key as a peer sends them (bincode, one after the other): decoded,
/// admitted as a node with the kind `fuzz` admits them (values of other applications'
/// kinds, or bytes that are no value of theirs, are refused before any merge), merged both
/// ways and each with itself. Replicas must converge whatever they are sent, so the merge
/// of what a node takes must commute and be idempotent.
pub fn value_merge(data: &[u8]) {
    let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
    let Ok((mut a, used)) = bincode::serde::decode_from_slice::<Value, _>(data, config) else {
        return;
    };
    let Ok((mut b, _)) = bincode::serde::decode_from_slice::<Value, _>(&data[used..], config)
    else {
        return;
    };
    let kinds = kinds();
    if kinds.admit(&mut a).is_err() || kinds.admit(&mut b).is_err() {
        return;
    }
    let mut ab = a.clone();
    ab.merge_replicated(b.clone());
    let mut ba = b.clone();
    ba.merge_replicated(a.clone());
    assert_eq!(ab, ba, "merge does not commute");
    let mut aa = a.clone();
    aa.merge_replicated(a.clone());
    assert_eq!(aa, a, "merging a value with itself changed it");
    let mut ab_again = ab.clone();
    ab_again.merge_replicated(b);
    assert_eq!(ab_again, ab, "merging a value twice changed it");
}

/// Redis command streams the seeds are made of: every kind of value, reads, listings,
/// times to live, a protocol switch, an inline command.
const RESP_SEEDS: &[&[&str]] = &[
    &[
        "SET s hello",
        "GET s",
        "APPEND s !",
        "STRLEN s",
        "GETRANGE s 0 2",
        "DEL s",
    ],
    &[
        "SET t v EX 100",
        "TTL t",
        "PERSIST t",
        "EXPIRE t 5",
        "PEXPIREAT t 1",
    ],
    &["INCR c", "INCRBY c 41", "DECRBY c 2", "GET c"],
    &[
        "SADD a x y z",
        "SREM a y",
        "SMEMBERS a",
        "SISMEMBER a x",
        "SCARD a",
    ],
    &["HSET h f 1 g 2", "HINCRBY h f 5", "HDEL h g", "HGETALL h"],
    &[
        "ZADD z 1 a 2 b",
        "ZINCRBY z 3 a",
        "ZRANGE z 0 -1 WITHSCORES",
        "ZREM z b",
    ],
    &[
        "RPUSH l a b c",
        "LPUSH l z",
        "LINSERT l BEFORE b q",
        "LRANGE l 0 -1",
        "LSET l 0 y",
    ],
    &[
        "MSET a 1 b 2",
        "MGET a b c",
        "EXISTS a b",
        "TYPE a",
        "KEYS *",
        "SCAN 0",
        "DBSIZE",
    ],
    &[
        "HELLO 3",
        "HSET h f v",
        "HGETALL h",
        "SMEMBERS none",
        "ZSCORE z a",
    ],
    &["MULTI", "SET a 1", "EXEC", "PING", "ECHO x"],
];

fn resp_array(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

/// A Redis command stream, with its commands as arrays (and the first also inline).
fn resp_stream(commands: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        if i == 0 {
            out.extend_from_slice(format!("{c}\r\n").as_bytes());
        } else {
            out.extend(resp_array(&c.split(' ').collect::<Vec<_>>()));
        }
    }
    out
}

/// The operations the seed commands plan, per stream.
fn seed_ops() -> Vec<Vec<crate::Op>> {
    RESP_SEEDS
        .iter()
        .map(|stream| {
            let mut session = Session::new(1, true, 7);
            let mut ops = Vec::new();
            for c in stream.iter() {
                let args: Vec<bytes::Bytes> =
                    c.split(' ').map(|w| w.as_bytes().to_vec().into()).collect();
                if let Step::Data(more, _) =
                    commands::plan(&mut session, &args, &commands::Gate::default(), NOW_MS)
                {
                    ops.extend(more);
                }
            }
            ops
        })
        .collect()
}

fn body<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let frame = crate::wire::encode_frame(msg).expect("seeds encode");
    frame[4..].to_vec()
}

/// Starting inputs for each target (by name): valid inputs of every shape the target
/// reads, from which the fuzzer mutates. The replay test runs them too.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::cluster::messages::PeerRequest;
    let mut out = Vec::new();
    let planned = seed_ops();
    for stream in RESP_SEEDS {
        out.push(("resp", resp_stream(stream)));
    }
    // Workers holding the values the streams write, on two replicas (their merges differ).
    let mut a = worker();
    let ring = Arc::new(HashRing::new([0], 1));
    let mut b = Worker::new(0, ReplicaId(2), ring, WorkerConfig::default());
    for ops in &planned {
        a.handle_ops(NOW_MS, ops.clone());
        b.handle_ops(NOW_MS + 1, ops.clone());
        out.push((
            "native_request",
            body(&Request {
                id: 1,
                body: RequestBody::ops(ops.clone()),
            }),
        ));
    }
    let mut entries = Vec::new();
    for key in ["s", "t", "c", "a", "h", "z", "l", "b"] {
        let (Some(va), Some(vb)) = (a.value(key.as_bytes()), b.value(key.as_bytes())) else {
            continue;
        };
        let config = bincode::config::standard();
        let mut pair = bincode::serde::encode_to_vec(&va, config).expect("seeds encode");
        pair.extend(bincode::serde::encode_to_vec(&vb, config).expect("seeds encode"));
        out.push(("value_merge", pair));
        entries.push((bytes::Bytes::from(key), va));
    }
    // Two values of an application's kind.
    let fuzz = |most: u64, name: &'static str| {
        let value = FuzzLattice {
            most: calm_lattice::Max::new(most),
            names: calm_lattice::SetUnionBTreeSet::new_from([bytes::Bytes::from(name)]),
        };
        let kinds = kinds();
        let mut v = Value::empty(crate::value::Kind::Custom(
            crate::value::CustomKind::new("fuzz").expect("a kind's name"),
        ));
        let write = crate::value::Write::custom(&value).expect("a kind's name");
        let ctx = crate::value::WriteCtx {
            replica: ReplicaId(1),
            stamp: calm_lattice::Stamp::new(calm_lattice::Hlc::new(NOW_MS, 0), ReplicaId(1)),
        };
        let mut write = write;
        kinds.admit_write(&mut write).expect("the kind is admitted");
        v.apply(write, ctx).expect("a write of its kind");
        v
    };
    let config = bincode::config::standard();
    let mut pair = bincode::serde::encode_to_vec(fuzz(3, "ann"), config).expect("seeds encode");
    pair.extend(bincode::serde::encode_to_vec(fuzz(5, "bob"), config).expect("seeds encode"));
    out.push(("value_merge", pair));
    entries.push((bytes::Bytes::from("fuzz"), fuzz(1, "cy")));
    // Peer messages: what an agent sends (a probe), deltas, a digest, and replies.
    let mut sender = agent();
    sender.handle_tick(NOW_MS + 10_000, &mut a);
    let probe = sender.poll_outgoing().map(|o| o.envelope);
    for envelope in probe.into_iter().chain([
        deltas_envelope(PeerRequest::Deltas(entries.clone())),
        deltas_envelope(PeerRequest::Digest([(1, 7), (2, 9)].into())),
    ]) {
        let mut seed = vec![0];
        seed.extend(body(&envelope));
        out.push((
            "native_request",
            body(&Request {
                id: 2,
                body: RequestBody::Peer(envelope.clone()),
            }),
        ));
        out.push(("peer_message", seed));
    }
    let membership = sender.membership().clone();
    for reply in [
        PeerReply::Ack {
            membership: membership.clone(),
        },
        PeerReply::Repair {
            membership: membership.clone(),
            entries,
            mismatched: vec![1, 2],
        },
        PeerReply::Refused {
            membership,
            keys: vec![bytes::Bytes::from("fuzz")],
        },
    ] {
        let mut seed = vec![1];
        seed.extend(body(&reply));
        out.push(("peer_message", seed));
    }
    // A worker's log after the streams' writes, intact.
    let disk = MemDisk::new();
    let (store, _) = Tiered::open(Box::new(disk.clone()), StorageConfig::default(), None)
        .expect("an empty disk opens");
    let ring = Arc::new(HashRing::new([0], 1));
    let mut w = Worker::with_store(0, ReplicaId(3), ring, WorkerConfig::default(), store);
    for ops in &planned {
        w.handle_ops(NOW_MS, ops.clone());
        let _ = w.commit(NOW_MS);
    }
    let _ = w.flush(NOW_MS);
    let log = crate::storage::Disk::log_read(&mut disk.clone()).expect("a memory disk reads");
    // As it is, with a byte flipped in the middle, cut short, and as the payloads of its
    // records (the form that frames them intact).
    let mut seed = vec![0];
    seed.extend(&log);
    out.push(("wal_recovery", seed.clone()));
    let mut flipped = seed.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    out.push(("wal_recovery", flipped));
    out.push(("wal_recovery", seed[..seed.len() - 3].to_vec()));
    let mut payloads = vec![1];
    for (i, range) in wal::scan(&log).records.into_iter().enumerate() {
        if i > 0 {
            payloads.extend([0xFF, 0xFE]);
        }
        payloads.extend(&log[range]);
    }
    out.push(("wal_recovery", payloads));
    out
}

fn deltas_envelope(body: crate::cluster::messages::PeerRequest) -> PeerEnvelope {
    let mut membership = agent().membership().clone();
    membership.record("127.0.0.1:7001", NOW_MS, crate::cluster::Status::Alive);
    PeerEnvelope {
        from: "127.0.0.1:7001".into(),
        membership,
        replication: Default::default(),
        load: Default::default(),
        body,
    }
}
