//! Durability and tiers through a whole node: restarts keep every kind, a budget smaller
//! than the data moves values to disk and back, damaged logs keep every intact record, and
//! a data dir refuses a layout it was not written with.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use calm_kvs::storage::{Durability, wal};
use calm_kvs::{EmbeddedStore, NodeConfig, ReadValue, Score, Store, Write};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn config(dir: &Path, durability: Durability, threads: usize) -> NodeConfig {
    let mut c = NodeConfig {
        threads,
        data_dir: Some(dir.to_path_buf()),
        ..NodeConfig::default()
    };
    c.storage.durability = durability;
    c
}

fn score(x: f64) -> Score {
    Score::new(x).unwrap()
}

/// Writes one key of every kind.
async fn write_every_kind(store: &EmbeddedStore) {
    store.put("lww", "hello").await.unwrap();
    store.set_add("set", vec![b("a"), b("b")]).await.unwrap();
    store
        .orset_add("orset", vec![b("x"), b("y")])
        .await
        .unwrap();
    store.orset_remove("orset", vec![b("x")]).await.unwrap();
    store.increment("counter", 7).await.unwrap();
    store.increment("counter", -2).await.unwrap();
    store.put_max("max", 42).await.unwrap();
    store.put_priority("priority", 3, "three").await.unwrap();
    store.put_priority("priority", 1, "one").await.unwrap();
    store.put_causal("causal", "c1").await.unwrap();
    store
        .write(
            "multi",
            Write::MultiCausal {
                value: b("m1"),
                deps: vec![],
            },
        )
        .await
        .unwrap();
    store
        .write(
            "hash",
            Write::HashSet(vec![(b("f"), b("v")), (b("n"), b("1"))]),
        )
        .await
        .unwrap();
    store
        .write(
            "hash",
            Write::HashIncr {
                field: b("n"),
                by: 4,
            },
        )
        .await
        .unwrap();
    store
        .write("hash", Write::HashDel(vec![b("f")]))
        .await
        .unwrap();
    store
        .write(
            "zset",
            Write::ZAdd(vec![(b("a"), score(1.5)), (b("b"), score(-2.0))]),
        )
        .await
        .unwrap();
    store
        .write(
            "zset",
            Write::ZIncr {
                member: b("a"),
                by: score(0.25),
            },
        )
        .await
        .unwrap();
    for (front, v) in [(false, "b"), (false, "c"), (true, "a")] {
        store
            .write(
                "list",
                Write::ListPush {
                    front,
                    values: vec![b(v)],
                },
            )
            .await
            .unwrap();
    }
    store
        .write(
            "list",
            Write::ListRem {
                count: 0,
                value: b("b"),
            },
        )
        .await
        .unwrap();
    store.put("deleted", "gone").await.unwrap();
    assert!(store.delete("deleted").await.unwrap());
    // Far in the future: the key keeps its deadline across the restart.
    assert!(store.expire("hash", Some(FAR)).await.unwrap());
    store.put("expired", "soon").await.unwrap();
    assert!(store.expire("expired", Some(1)).await.unwrap());
}

/// A deadline in 2100.
const FAR: u64 = 4_102_444_800_000;

async fn deadline(store: &EmbeddedStore, key: &str) -> Option<u64> {
    match store.run(calm_kvs::Op::Raw { key: b(key) }).await.unwrap() {
        calm_kvs::Reply::Raw(v) => v.and_then(|v| v.deadline()),
        other => panic!("{other:?}"),
    }
}

const KEYS: [&str; 12] = [
    "lww", "set", "orset", "counter", "max", "priority", "causal", "multi", "hash", "zset", "list",
    "deleted",
];

async fn read_all(store: &EmbeddedStore) -> Vec<Option<ReadValue>> {
    let mut out = Vec::new();
    for k in KEYS {
        out.push(store.get(k).await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_restarted_node_has_every_kind_back() {
    for durability in [Durability::Sync, Durability::Async] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::start(config(dir.path(), durability, 2)).unwrap();
        write_every_kind(&store).await;
        let before = read_all(&store).await;
        assert!(before.iter().take(11).all(Option::is_some), "{before:?}");
        assert_eq!(
            before[10],
            Some(ReadValue::List {
                values: vec![b("a"), b("c")]
            })
        );
        assert_eq!(
            before[8]
                .as_ref()
                .and_then(|h| h.fields())
                .map(<[_]>::to_vec),
            Some(vec![(b("n"), b("5"))])
        );
        assert_eq!(
            before[9]
                .as_ref()
                .and_then(|z| z.scored())
                .map(<[_]>::to_vec),
            Some(vec![(b("b"), score(-2.0)), (b("a"), score(1.75))])
        );
        assert_eq!(before[11], None, "a deleted key reads as missing");
        assert_eq!(store.get("expired").await.unwrap(), None, "expired");
        store.node().shutdown();
        drop(store);

        let store = EmbeddedStore::start(config(dir.path(), durability, 2)).unwrap();
        assert_eq!(read_all(&store).await, before, "{durability}");
        assert_eq!(deadline(&store, "hash").await, Some(FAR), "{durability}");
        assert_eq!(store.get("expired").await.unwrap(), None, "{durability}");
        let recovery = store.node().recovery().clone();
        assert_eq!(recovery.incarnation, 2);
        assert!(recovery.records() >= 8, "{recovery:?}");
        // The new incarnation writes as a new replica: a counter keeps counting.
        store.increment("counter", 1).await.unwrap();
        assert_eq!(
            store.get("counter").await.unwrap(),
            Some(ReadValue::Counter { value: 6 })
        );
    }
}

#[tokio::test]
async fn memory_durability_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::start(config(dir.path(), Durability::Memory, 1)).unwrap();
    store.put("k", "v").await.unwrap();
    store.node().shutdown();
    drop(store);
    let store = EmbeddedStore::start(config(dir.path(), Durability::Memory, 1)).unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn a_budget_smaller_than_the_data_moves_values_to_disk_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), Durability::Async, 2);
    let budget = 64 << 10;
    c.storage.memory_budget = Some(budget);
    // Checkpoints happen during the test too.
    c.storage.checkpoint_log_bytes = 256 << 10;
    let store = EmbeddedStore::start(c.clone()).unwrap();
    let n = 3_000;
    let value = |i: usize| format!("{i:0>200}");
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .flat_map(|&i| {
                [
                    calm_kvs::Op::Write {
                        key: Bytes::from(format!("s{i}")),
                        write: Write::Lww(Bytes::from(value(i))),
                    },
                    calm_kvs::Op::Write {
                        key: Bytes::from(format!("c{i}")),
                        write: Write::Increment(i as i64),
                    },
                ]
            })
            .collect();
        for r in store.execute(ops).await.unwrap() {
            r.unwrap();
        }
    }
    let stats = store.stats().await.unwrap();
    let memory: u64 = stats.workers.iter().map(|w| w.storage.memory_bytes).sum();
    let on_disk: u64 = stats.workers.iter().map(|w| w.storage.disk_keys).sum();
    let keys: u64 = stats.workers.iter().map(|w| w.keys).sum();
    assert!(memory <= budget, "memory {memory} over budget {budget}");
    assert!(on_disk > (2 * n as u64) / 2, "only {on_disk} keys on disk");
    assert_eq!(keys, 2 * n as u64);

    // Cold keys change and read like hot ones.
    for i in (0..n).step_by(7) {
        store.increment(format!("c{i}"), 1).await.unwrap();
    }
    for i in 0..n {
        assert_eq!(
            store.get(format!("s{i}")).await.unwrap(),
            Some(ReadValue::Lww {
                value: Bytes::from(value(i)),
                stamp: None
            }),
            "s{i}"
        );
        let extra = i64::from(i % 7 == 0);
        assert_eq!(
            store.get(format!("c{i}")).await.unwrap(),
            Some(ReadValue::Counter {
                value: (i as i64 + extra).into()
            }),
            "c{i}"
        );
    }
    let stats = store.stats().await.unwrap();
    let promoted: u64 = stats.workers.iter().map(|w| w.storage.promotions).sum();
    let checkpoints: u64 = stats.workers.iter().map(|w| w.storage.checkpoints).sum();
    assert!(promoted >= n as u64, "{promoted} promotions");
    assert!(checkpoints > 0, "no checkpoint ran");

    // And all of it survives a restart.
    store.node().shutdown();
    drop(store);
    let store = EmbeddedStore::start(c).unwrap();
    for i in (0..n).step_by(13) {
        assert_eq!(
            store.get(format!("s{i}")).await.unwrap(),
            Some(ReadValue::Lww {
                value: Bytes::from(value(i)),
                stamp: None
            })
        );
    }
}

/// Keys given a time to live that were moved to disk and are still there after a restart
/// are collected at their deadline (the cold tier's index keeps deadlines), not only when
/// something touches them: the node's key count falls back to the keys without one.
#[tokio::test]
async fn keys_on_disk_are_collected_at_expiry_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), Durability::Async, 1);
    c.storage.memory_budget = Some(32 << 10);
    c.storage.checkpoint_log_bytes = 64 << 10;
    let store = EmbeddedStore::start(c.clone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let deadline = now + 3_000;
    let (n, filler) = (1_000, 1_000);
    let value = |i: usize| Bytes::from(format!("{i:0>200}"));
    // The keys that expire first, so the filler written after them pushes them to disk.
    for prefix in ["t", "f"] {
        let count = if prefix == "t" { n } else { filler };
        for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
            let mut ops = Vec::new();
            for &i in chunk {
                let key = Bytes::from(format!("{prefix}{i}"));
                ops.push(calm_kvs::Op::Write {
                    key: key.clone(),
                    write: Write::Lww(value(i)),
                });
                if prefix == "t" {
                    ops.push(calm_kvs::Op::Expire {
                        key,
                        at_ms: Some(deadline),
                    });
                }
            }
            for r in store.execute(ops).await.unwrap() {
                r.unwrap();
            }
        }
    }
    store.node().shutdown();
    drop(store);
    let store = EmbeddedStore::start(c).unwrap();
    let stats = store.stats().await.unwrap();
    let on_disk: u64 = stats.workers.iter().map(|w| w.storage.disk_keys).sum();
    assert!(on_disk > n as u64 / 2, "only {on_disk} keys on disk");
    let wait = std::time::Duration::from_millis(100);
    let mut keys = 0;
    for _ in 0..150 {
        let stats = store.stats().await.unwrap();
        keys = stats.workers.iter().map(|w| w.keys).sum::<u64>();
        if keys == filler as u64 && !stats.workers.is_empty() {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    assert_eq!(keys, filler as u64, "expired keys left on disk uncollected");
    for i in (0..filler).step_by(97) {
        assert_eq!(
            store.get(format!("f{i}")).await.unwrap(),
            Some(ReadValue::Lww {
                value: value(i),
                stamp: None
            })
        );
    }
}

/// Writes `n` keys one record each on one worker, stops cleanly, and returns the log's path.
async fn log_with_keys(dir: &Path, n: usize) -> PathBuf {
    let store = EmbeddedStore::start(config(dir, Durability::Sync, 1)).unwrap();
    for i in 0..n {
        store
            .put(format!("key{i:03}"), format!("v{i}"))
            .await
            .unwrap();
    }
    store.node().shutdown();
    dir.join("worker-0").join("wal.log")
}

async fn present(dir: &Path, n: usize) -> (Vec<usize>, calm_kvs::storage::Recovery) {
    let store = EmbeddedStore::start(config(dir, Durability::Sync, 1)).unwrap();
    let mut found = Vec::new();
    for i in 0..n {
        if store.get(format!("key{i:03}")).await.unwrap().is_some() {
            found.push(i);
        }
    }
    let recovery = store.node().recovery().workers[0].clone();
    store.node().shutdown();
    (found, recovery)
}

/// The log record holding `key`: its whole byte range (header included).
fn record_of(log: &[u8], key: &str) -> std::ops::Range<usize> {
    let scan = wal::scan(log);
    let r = scan
        .records
        .iter()
        .find(|r| {
            log[(*r).clone()]
                .windows(key.len())
                .any(|w| w == key.as_bytes())
        })
        .expect("the key is in the log");
    r.start - wal::HEADER..r.end
}

#[tokio::test]
async fn a_torn_log_tail_is_cut_and_every_earlier_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let n = 100;
    let path = log_with_keys(dir.path(), n).await;
    let len = std::fs::metadata(&path).unwrap().len();
    // The last write reached the disk only in part.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    let (found, recovery) = present(dir.path(), n).await;
    assert_eq!(found, (0..n - 1).collect::<Vec<_>>());
    assert!(recovery.tail_bytes > 0, "{recovery:?}");
    assert_eq!(recovery.skipped_bytes, 0);
    // The tail was cut from the file: the next start finds a clean log.
    let (found, recovery) = present(dir.path(), n).await;
    assert_eq!(found.len(), n - 1);
    assert_eq!(recovery.tail_bytes, 0, "{recovery:?}");
}

#[tokio::test]
async fn flipped_bytes_lose_only_the_records_they_touch() {
    let dir = tempfile::tempdir().unwrap();
    let n = 100;
    let path = log_with_keys(dir.path(), n).await;
    let mut log = std::fs::read(&path).unwrap();
    for key in ["key030", "key070"] {
        let r = record_of(&log, key);
        log[r.start + (r.end - r.start) / 2] ^= 0x40;
    }
    std::fs::write(&path, &log).unwrap();
    let (found, recovery) = present(dir.path(), n).await;
    let expected: Vec<usize> = (0..n).filter(|&i| i != 30 && i != 70).collect();
    assert_eq!(found, expected);
    assert!(recovery.skipped_bytes > 0, "{recovery:?}");
    // A checkpoint rewrote the state: the damage does not come back.
    let (found, recovery) = present(dir.path(), n).await;
    assert_eq!(found, expected);
    assert_eq!(recovery.skipped_bytes, 0, "{recovery:?}");
}

#[tokio::test]
async fn a_data_dir_refuses_another_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::start(config(dir.path(), Durability::Async, 2)).unwrap();
    store.put("k", "v").await.unwrap();
    store.node().shutdown();
    drop(store);
    let err = EmbeddedStore::start(config(dir.path(), Durability::Async, 3))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("--threads 2"), "{err}");
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = EmbeddedStore::start(config(dir.path(), Durability::Async, 1)).unwrap();
    let err = EmbeddedStore::start(config(dir.path(), Durability::Async, 1))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("worker 0"), "{err}");
}

#[test]
fn durability_names_parse() {
    for d in Durability::ALL {
        assert_eq!(d.name().parse::<Durability>(), Ok(d));
    }
    assert!(
        "fsync"
            .parse::<Durability>()
            .unwrap_err()
            .contains("memory, async or sync")
    );
}

/// A peer's merge (replication, anti-entropy, a hand-off) is answered only once the worker
/// committed it to its log: the sender of a hand-off drops its copy on that answer, so a
/// merge still in a queue must not be acknowledged (a `kill -9` would lose the key
/// everywhere).
#[test]
fn a_merge_is_answered_only_once_the_log_holds_it() {
    use calm_kvs::cluster::LocalStore;
    let dir = tempfile::tempdir().unwrap();
    // Async: the log is written at each commit and fsync'd later; nothing else writes it.
    let node = calm_kvs::Node::start(config(dir.path(), Durability::Async, 1)).unwrap();
    let mut pool = node.pool();
    let log = dir.path().join("worker-0").join("wal.log");
    let size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    // A delta as another node's worker would send it.
    let ring = std::sync::Arc::new(calm_kvs::HashRing::new([0], 1));
    let mut peer = calm_kvs::Worker::new(
        0,
        calm_lattice::ReplicaId(99),
        ring,
        calm_kvs::WorkerConfig::default(),
    );
    for round in 0..20 {
        let key = Bytes::from(format!("handed/{round}"));
        peer.handle_ops(
            1,
            [calm_kvs::Op::Write {
                key: key.clone(),
                write: Write::Lww(Bytes::from(vec![b'x'; 64 * 1024])),
            }],
        );
        let delta = peer.value(&key).unwrap();
        let before = size();
        pool.merge_entries(1, vec![(key, delta)]);
        assert!(
            size() >= before + 64 * 1024,
            "round {round}: the merge was answered before the log held it ({before} -> {} bytes)",
            size()
        );
    }
}

/// In memory only, a node counts what its keys hold (INFO's `used_memory`, the memory
/// budget's figure): each key's bytes, its value's encoding and its slot — not only the
/// keys' bytes, and not a value's history of changes.
#[test]
fn memory_counts_keys_values_and_slots_not_histories() {
    use calm_kvs::{HashRing, Op, Worker, WorkerConfig};
    let ring = std::sync::Arc::new(HashRing::new([0], 1));
    let mut w = Worker::new(0, calm_lattice::ReplicaId(1), ring, WorkerConfig::default());
    let memory = |w: &Worker| w.stats().storage.memory_bytes;
    let n = 1_000u64;
    let ops = (0..n).map(|i| Op::Write {
        key: Bytes::from(format!("key:{i:06}")),
        write: Write::Lww(Bytes::from(vec![b'x'; 100])),
    });
    w.handle_ops(1, ops);
    let per_key = memory(&w) / n;
    // 10 bytes of key, 100 of value, a stamp, and the slot.
    assert!((200..600).contains(&per_key), "{per_key} bytes a key");
    // Overwriting keeps the figure.
    let ops = (0..n).map(|i| Op::Write {
        key: Bytes::from(format!("key:{i:06}")),
        write: Write::Lww(Bytes::from(vec![b'y'; 100])),
    });
    w.handle_ops(2, ops);
    assert_eq!(memory(&w) / n, per_key);
    // A counter incremented ten thousand times, a hash field written over as often: each
    // costs what it holds now.
    let before = memory(&w);
    for t in 0..10_000u64 {
        w.handle_ops(
            3 + t,
            [
                Op::Write {
                    key: b("counter"),
                    write: Write::Increment(1),
                },
                Op::Write {
                    key: b("hash"),
                    write: Write::HashSet(vec![(b("field"), Bytes::from(t.to_string()))]),
                },
            ],
        );
    }
    let grown = memory(&w) - before;
    assert!(grown < 2_000, "two keys grew the count by {grown} bytes");
}
