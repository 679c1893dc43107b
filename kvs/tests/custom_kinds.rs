//! An application's own lattice as a kind of value (`calm_kvs::value::custom`): stored and
//! merged by nodes started with its code, kept across a restart, refused — writes and
//! replicated values alike — by nodes without it, and never lost to a refusal: what a
//! node acknowledged stays on the nodes that took it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::launch::TestCluster;
use calm_kvs::storage::{Durability, MemDisk, StorageConfig, StorageError, Tiered};
use calm_kvs::value::{CustomKind, CustomLattice, CustomValue, Kinds};
use calm_kvs::{Ack, EmbeddedStore, KvsError, NodeConfig, Op, OpError, Reply, Store, Value, Write};
use calm_lattice::{Lattice, Max, SetUnionBTreeSet};
use serde::{Deserialize, Serialize};

/// The application's lattice: the highest score seen, and who played.
#[derive(Lattice, Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Board {
    best: Max<u64>,
    players: SetUnionBTreeSet<String>,
}

impl CustomLattice for Board {
    const KIND: &'static str = "board";
}

fn board(best: u64, players: &[&str]) -> Board {
    Board {
        best: Max::new(best),
        players: SetUnionBTreeSet::new_from(players.iter().map(|p| p.to_string())),
    }
}

fn kinds() -> Kinds {
    Kinds::new().with::<Board>().unwrap()
}

#[tokio::test]
async fn the_embedded_store_keeps_an_applications_lattice_and_refuses_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig {
        threads: 2,
        data_dir: Some(dir.path().to_path_buf()),
        kinds: kinds(),
        ..NodeConfig::default()
    };
    config.storage.durability = Durability::Sync;
    let store = EmbeddedStore::start(config.clone()).unwrap();
    store
        .merge_custom("game", &board(10, &["ann"]))
        .await
        .unwrap();
    store
        .merge_custom("game", &board(7, &["bob"]))
        .await
        .unwrap();
    // Sent again (as after a lost answer): merging is idempotent.
    store
        .merge_custom("game", &board(7, &["bob"]))
        .await
        .unwrap();
    let want = board(10, &["ann", "bob"]);
    assert_eq!(
        store.get_custom::<Board>("game").await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(store.get_custom::<Board>("nothing").await.unwrap(), None);

    // Kinds stay apart: a string write is refused, a string read as a board is an error.
    let err = store.put("game", "x").await.unwrap_err();
    assert!(
        matches!(err, KvsError::Op(OpError::KindMismatch { .. })),
        "{err}"
    );
    store.put("text", "x").await.unwrap();
    let err = store.get_custom::<Board>("text").await.unwrap_err();
    assert!(err.to_string().contains("'lww', not 'board'"), "{err}");

    // Bytes that are no board are refused, and change nothing.
    let junk = Write::Custom(CustomValue {
        kind: CustomKind::new("board").unwrap(),
        state: Bytes::from_static(&[0xff; 5]),
    });
    let err = store.write("game", junk).await.unwrap_err();
    assert!(
        matches!(err, KvsError::Op(OpError::BadValue { .. })),
        "{err}"
    );

    // A delete, then a write afresh.
    assert!(store.delete("game").await.unwrap());
    assert_eq!(store.get_custom::<Board>("game").await.unwrap(), None);
    store
        .merge_custom("game", &board(3, &["cy"]))
        .await
        .unwrap();
    store.merge_custom("kept", &want).await.unwrap();
    drop(store);

    // A restart keeps them.
    let store = EmbeddedStore::start(config).unwrap();
    assert_eq!(
        store.get_custom::<Board>("game").await.unwrap(),
        Some(board(3, &["cy"]))
    );
    assert_eq!(store.get_custom::<Board>("kept").await.unwrap(), Some(want));
    drop(store);

    // A node not started with the kind refuses its writes, whole values merged included,
    // and changes nothing.
    let plain = EmbeddedStore::start(NodeConfig::default()).unwrap();
    let err = plain
        .merge_custom("game", &board(1, &["dan"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KvsError::Op(OpError::UnknownKind { kind }) if kind == "board"),
        "{err}"
    );
    let whole = Value::Custom(Box::new(CustomValue {
        kind: CustomKind::new("board").unwrap(),
        state: calm_kvs::value::custom::encode(&board(1, &["dan"])),
    }));
    let err = plain.merge("game", whole).await.unwrap_err();
    assert!(
        matches!(err, KvsError::Op(OpError::UnknownKind { .. })),
        "{err}"
    );
    assert_eq!(plain.get("game").await.unwrap(), None);
}

/// A node restarted without the code of a kind its log holds refuses to start, rather
/// than serve values it cannot merge.
#[test]
fn a_log_holding_a_kind_without_code_is_refused_at_start() {
    let disk = MemDisk::new();
    let config = StorageConfig::default();
    let (mut store, _) = Tiered::open(Box::new(disk.clone()), config, None).unwrap();
    let kind = CustomKind::new("no-code-anywhere").unwrap();
    store
        .merge(
            Bytes::from_static(b"k"),
            Value::Custom(Box::new(CustomValue {
                kind,
                state: Bytes::from_static(b"\x01"),
            })),
        )
        .unwrap();
    store.flush(0).unwrap();
    drop(store);
    match Tiered::open(Box::new(disk), config, None) {
        Err(StorageError::UnknownKind(name)) => assert_eq!(name, "no-code-anywhere"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("started from a log it cannot merge"),
    }
}

/// What a node holds of `key`, from its own workers.
async fn held(node: &calm_kvs::Node, key: &Bytes) -> Option<Value> {
    match node
        .execute(vec![Op::Raw { key: key.clone() }])
        .await
        .unwrap()
        .pop()
    {
        Some(Ok(Reply::Raw(value))) => value,
        other => panic!("a raw read answered {other:?}"),
    }
}

/// Nodes 0 and 1 are started with the kind, node 2 without. Each key is written through
/// the client with ack `all`; every outcome is recorded and checked against what each node
/// holds: a write node 2 was asked to run is refused and applied nowhere; a write that
/// node 2 was to replicate is refused there (the write says so: it reached 1 of 2
/// replicas) and kept by the node that took it, through gossip, anti-entropy and
/// hand-offs; a write that only nodes with the kind own is acknowledged, and merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_a_kind_refuse_it_and_no_acknowledged_write_is_lost() {
    let with = kinds();
    let cluster = TestCluster::start_with(3, |i| NodeConfig {
        kinds: if i < 2 { with.clone() } else { Kinds::new() },
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    let key = |i: usize| Bytes::from(format!("board:{i}"));
    let write = |i: usize, best: u64, player: &str| Op::Write {
        key: key(i),
        write: Write::custom(&board(best, &[player])).unwrap(),
    };
    let n = 60;
    let mut acknowledged = Vec::new();
    let mut partial = Vec::new();
    let mut refused = Vec::new();
    for i in 0..n {
        let r = client
            .execute_with_ack(vec![write(i, 10, "ann")], Ack::All)
            .await
            .unwrap();
        match &r[0] {
            Ok(Reply::Written) => acknowledged.push(i),
            Err(OpError::ReplicationIncomplete {
                reached: 1,
                wanted: 2,
            }) => partial.push(i),
            Err(OpError::UnknownKind { kind }) if kind == "board" => refused.push(i),
            other => panic!("key {i}: {other:?}"),
        }
    }
    assert!(
        !acknowledged.is_empty() && !partial.is_empty() && !refused.is_empty(),
        "every case is met: acknowledged {acknowledged:?}, partial {partial:?}, refused {refused:?}"
    );

    // A second write to each acknowledged key merges with the first.
    for &i in &acknowledged {
        let r = client
            .execute_with_ack(vec![write(i, 3, "bob")], Ack::All)
            .await
            .unwrap();
        assert_eq!(r, vec![Ok(Reply::Written)], "key {i}");
    }

    // Give gossip, hints, anti-entropy and hand-offs time to act, then check every key
    // on every node, twice.
    let nodes: Vec<_> = cluster.nodes().iter().map(|n| n.node.clone()).collect();
    for round in 0..2 {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..n {
            let k = key(i);
            let on: Vec<Option<Board>> = {
                let mut on = Vec::new();
                for node in &nodes {
                    on.push(
                        held(node, &k)
                            .await
                            .and_then(|v| v.read(false).map(|r| r.custom::<Board>().unwrap())),
                    );
                }
                on
            };
            assert_eq!(on[2], None, "round {round}: node 2 holds key {i}");
            let held_by = on.iter().filter(|b| b.is_some()).count();
            if acknowledged.contains(&i) {
                assert_eq!(held_by, 2, "round {round}: acknowledged key {i} on {on:?}");
                let want = board(10, &["ann", "bob"]);
                assert!(on.iter().flatten().all(|b| *b == want), "key {i}: {on:?}");
            } else if partial.contains(&i) {
                assert_eq!(held_by, 1, "round {round}: partial key {i} on {on:?}");
                let want = board(10, &["ann"]);
                assert!(on.iter().flatten().all(|b| *b == want), "key {i}: {on:?}");
            } else {
                assert_eq!(held_by, 0, "round {round}: refused key {i} on {on:?}");
            }
        }
    }
    // Reads through the client find the acknowledged boards, merged.
    for &i in &acknowledged {
        assert_eq!(
            client.get_custom::<Board>(key(i)).await.unwrap(),
            Some(board(10, &["ann", "bob"])),
            "key {i}"
        );
    }
}
