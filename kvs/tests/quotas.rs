//! Quotas per key prefix (`calm_kvs::storage::quota`): client writes that would grow past a
//! limit are refused with nothing changed, shrinking writes always pass, values merged from
//! replicas are counted but never refused, and the figures follow every path that adds or
//! drops a key (checked against a recount of what the store holds after each step).

use std::sync::Arc;

use bytes::Bytes;
use calm_kvs::acl::Acl;
use calm_kvs::storage::{Quota, Quotas};
use calm_kvs::{
    EmbeddedStore, HashRing, NodeConfig, Op, OpError, QuotaMeasure, Reply, Worker, WorkerConfig,
    Write,
};
use calm_lattice::ReplicaId;

fn quota(prefix: &str, keys: Option<u64>, bytes: Option<u64>) -> Quota {
    Quota {
        prefix: prefix.into(),
        keys,
        bytes,
    }
}

fn worker(replica: u64, quotas: Vec<Quota>) -> Worker {
    let ring = Arc::new(HashRing::new([0], 1));
    let mut w = Worker::new(0, ReplicaId(replica), ring, WorkerConfig::default());
    w.count_quotas(Quotas::new(quotas)).unwrap();
    w
}

fn write(key: &str, write: Write) -> Op {
    Op::Write {
        key: Bytes::from(key.to_string()),
        write,
    }
}

fn lww(key: &str, value: &str) -> Op {
    write(key, Write::Lww(Bytes::from(value.to_string())))
}

/// Runs one operation, then checks the figures against a recount.
fn run(w: &mut Worker, now: u64, op: Op) -> Result<Reply, OpError> {
    let r = w.handle_ops(now, [op]).remove(0);
    let counted = w.audit_quotas().expect("figures match the store");
    let usage: Vec<(u64, u64)> = w.quota_usage().iter().map(|u| (u.keys, u.bytes)).collect();
    assert_eq!(counted, usage);
    r
}

fn usage(w: &Worker) -> (u64, u64) {
    let u = &w.quota_usage()[0];
    (u.keys, u.bytes)
}

fn exceeded(r: Result<Reply, OpError>, measure: QuotaMeasure) {
    match r {
        Err(OpError::QuotaExceeded { measure: m, .. }) if m == measure => {}
        other => panic!("expected a {measure} quota refusal, got {other:?}"),
    }
}

#[test]
fn keys_past_the_limit_are_refused_until_one_is_deleted() {
    let mut w = worker(1, vec![quota("t/", Some(2), None)]);
    run(&mut w, 1, lww("t/a", "1")).unwrap();
    run(&mut w, 2, lww("t/b", "22")).unwrap();
    assert_eq!(usage(&w), (2, 3 + 1 + 3 + 2));
    exceeded(run(&mut w, 3, lww("t/c", "3")), QuotaMeasure::Keys);
    assert_eq!(w.value(b"t/c"), None, "a refused write leaves nothing");
    exceeded(
        run(&mut w, 3, write("t/c", Write::Increment(1))),
        QuotaMeasure::Keys,
    );
    // Keys elsewhere are not limited; keys it holds may change.
    run(&mut w, 4, lww("u/c", "3")).unwrap();
    run(&mut w, 5, lww("t/a", "changed")).unwrap();
    // A delete frees a key: the next new key fits.
    run(
        &mut w,
        6,
        Op::Delete {
            key: Bytes::from_static(b"t/b"),
        },
    )
    .unwrap();
    assert_eq!(usage(&w), (1, 3 + 7));
    run(&mut w, 7, lww("t/c", "3")).unwrap();
    assert_eq!(usage(&w).0, 2);
}

#[test]
fn bytes_are_checked_exactly_near_the_limit() {
    let mut w = worker(1, vec![quota("t/", None, Some(100))]);
    let ninety = "x".repeat(90);
    run(&mut w, 1, lww("t/a", &ninety)).unwrap();
    assert_eq!(usage(&w), (1, 93));
    // Overwriting with as many bytes: the bound (3 + 90 + slack) is over the limit, the
    // exact figure is not.
    run(&mut w, 2, lww("t/a", &"y".repeat(90))).unwrap();
    run(&mut w, 3, lww("t/a", &"y".repeat(97))).unwrap();
    exceeded(
        run(&mut w, 4, lww("t/a", &"z".repeat(98))),
        QuotaMeasure::Bytes,
    );
    assert_eq!(usage(&w), (1, 100));
    // Shrinking always passes, even over the limit.
    run(&mut w, 5, lww("t/a", "small")).unwrap();
    // Sets: a member already there adds nothing.
    run(
        &mut w,
        6,
        write("t/s", Write::OrSetAdd(vec![Bytes::from("m".repeat(80))])),
    )
    .unwrap();
    run(
        &mut w,
        7,
        write("t/s", Write::OrSetAdd(vec![Bytes::from("m".repeat(80))])),
    )
    .unwrap();
    exceeded(
        run(
            &mut w,
            8,
            write("t/s", Write::OrSetAdd(vec![Bytes::from("n".repeat(20))])),
        ),
        QuotaMeasure::Bytes,
    );
    // Hash increments read back as text: counted as such.
    run(
        &mut w,
        9,
        write("t/s", Write::OrSetRemove(vec![Bytes::from("m".repeat(80))])),
    )
    .unwrap();
    run(
        &mut w,
        10,
        write(
            "t/h",
            Write::HashIncr {
                field: Bytes::from_static(b"f"),
                by: -1_000_000_000_000,
            },
        ),
    )
    .unwrap();
    let (_, bytes) = usage(&w);
    assert_eq!(bytes, (3 + 5) + 3 + 1 + "-1000000000000".len() as u64);
}

#[test]
fn merges_from_replicas_count_but_are_never_refused() {
    let mut w = worker(1, vec![quota("t/", Some(1), None)]);
    run(&mut w, 1, lww("t/a", "1")).unwrap();
    // Another replica admitted t/b (its own figures allowed it): merged here all the same.
    let mut other = worker(2, Vec::new());
    run(&mut other, 1, lww("t/b", "2")).unwrap();
    let copy = other.value(b"t/b").unwrap();
    w.merge_replicated(2, vec![(Bytes::from_static(b"t/b"), copy)]);
    w.audit_quotas().unwrap();
    assert_eq!(usage(&w).0, 2, "over the limit, counted");
    exceeded(run(&mut w, 3, lww("t/c", "3")), QuotaMeasure::Keys);
    // A client's merge of a whole value is a client write: checked.
    let mut third = worker(3, Vec::new());
    run(&mut third, 1, lww("t/d", "4")).unwrap();
    exceeded(
        run(
            &mut w,
            4,
            write("t/d", Write::Merge(third.value(b"t/d").unwrap())),
        ),
        QuotaMeasure::Keys,
    );
    // A delete merged from a replica frees the key here.
    run(
        &mut other,
        5,
        Op::Delete {
            key: Bytes::from_static(b"t/b"),
        },
    )
    .unwrap();
    let tombstone = other.value(b"t/b").unwrap();
    w.merge_replicated(6, vec![(Bytes::from_static(b"t/b"), tombstone)]);
    w.audit_quotas().unwrap();
    assert_eq!(usage(&w).0, 1);
}

#[test]
fn keys_collected_at_expiry_stop_counting() {
    let mut w = worker(1, vec![quota("t/", Some(1), None)]);
    run(&mut w, 1_000, lww("t/a", "1")).unwrap();
    run(
        &mut w,
        1_001,
        Op::Expire {
            key: Bytes::from_static(b"t/a"),
            at_ms: Some(2_000),
        },
    )
    .unwrap();
    exceeded(run(&mut w, 1_002, lww("t/b", "2")), QuotaMeasure::Keys);
    w.handle_tick(2_500);
    w.audit_quotas().unwrap();
    assert_eq!(usage(&w).0, 0);
    run(&mut w, 2_501, lww("t/b", "2")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_counts_each_key_once_whatever_its_workers_hold() {
    let acl = Acl::parse(
        r#"
[[quotas]]
prefix = "t/"
keys = 10
"#,
    )
    .unwrap();
    let mut quotas = acl.quotas.clone();
    quotas.push(quota("", None, Some(1 << 20)));
    let config = NodeConfig {
        threads: 3,
        worker: WorkerConfig {
            // Every key on two of the three workers.
            local_replication: 2,
            ..WorkerConfig::default()
        },
        quotas,
        ..NodeConfig::default()
    };
    let store = EmbeddedStore::start(config).unwrap();
    let node = store.node();
    let ops: Vec<Op> = (0..10).map(|i| lww(&format!("t/{i}"), "v")).collect();
    let results = node.execute(ops).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let usage = node.quota_usage();
    assert_eq!((usage[0].keys, usage[0].bytes), (10, 10 * 4));
    assert_eq!(usage[1].keys, 10);
    let refused = node.execute(vec![lww("t/10", "v")]).await.unwrap();
    assert!(
        matches!(refused[0], Err(OpError::QuotaExceeded { .. })),
        "{refused:?}"
    );
    let stats = node.stats().await.unwrap();
    assert_eq!(stats.quotas, node.quota_usage());
    // A file that sets a quota without a limit, or two for one prefix, is refused.
    let err = Acl::parse("[[quotas]]\nprefix = \"t/\"\n").unwrap_err();
    assert!(err.contains("sets no limit"), "{err}");
    let err = Acl::parse(
        "[[quotas]]\nprefix = \"t/\"\nkeys = 1\n[[quotas]]\nprefix = \"t/\"\nbytes = 1\n",
    )
    .unwrap_err();
    assert!(err.contains("two quotas"), "{err}");
}
