//! The routing client against a real in-process cluster: keys go straight to their owners;
//! a stale routing table is corrected by NotOwner redirects; a node that leaves is routed
//! around.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::cluster::{ClusterConfig, Factors, Status};
use calm_kvs::launch::{NodeLaunch, RunningNode, launch};
use calm_kvs::{Client, ClusterClient, NodeConfig, Op, ReadValue, Reply, Store, Write};

fn start(dir: &std::path::Path, join: Option<SocketAddr>, replication: usize) -> RunningNode {
    start_with(dir, join, replication, 0)
}

fn start_with(
    dir: &std::path::Path,
    join: Option<SocketAddr>,
    replication: usize,
    autoscale_period_ms: u64,
) -> RunningNode {
    launch(NodeLaunch {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        join: join.into_iter().collect(),
        node: NodeConfig {
            threads: 1,
            autoscale_period_ms,
            ..NodeConfig::default()
        },
        cluster: ClusterConfig {
            replication,
            ..ClusterConfig::default()
        },
        data_dir: dir.to_path_buf(),
        cert: None,
        resp: None,
        resp_config: Default::default(),
    })
    .expect("node starts")
}

async fn wait_alive(node: &RunningNode, n: usize) {
    let client = Client::connect(node.addr, &node.credentials())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members = client.members().await.unwrap();
        if members
            .iter()
            .filter(|m| m.member.status == Status::Alive)
            .count()
            == n
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not reach {n} alive nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i}"))
}

async fn write_all(client: &ClusterClient, n: usize, by: i64) {
    let ops = (0..n)
        .map(|i| Op::Write {
            key: key(i),
            write: Write::Increment(by),
        })
        .collect();
    let r = client.execute(ops).await.unwrap();
    assert!(
        r.iter().all(|r| *r == Ok(Reply::Written)),
        "{:?}",
        r.iter().find(|r| r.is_err())
    );
}

async fn read_all(client: &ClusterClient, n: usize) -> Vec<Option<i128>> {
    let ops = (0..n)
        .map(|i| Op::Get {
            key: key(i),
            meta: false,
        })
        .collect();
    client
        .execute(ops)
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Ok(Reply::Value(Some(ReadValue::Counter { value }))) => Some(value),
            _ => None,
        })
        .collect()
}

async fn settle(client: &ClusterClient, n: usize, want: i128, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while read_all(client, n).await.iter().any(|v| *v != Some(want)) {
        assert!(
            Instant::now() < deadline,
            "values did not settle at {want} {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_to_owners_and_around_a_node_that_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), None, 2);
    let b = start(dir.path(), Some(a.advertised), 2);
    let c = start(dir.path(), Some(a.advertised), 2);
    wait_alive(&a, 3).await;
    wait_alive(&c, 3).await;

    let client = ClusterClient::connect(vec![a.addr], &a.credentials())
        .await
        .unwrap();
    write_all(&client, 200, 1).await;
    assert_eq!(
        client.redirects(),
        0,
        "a fresh table routes every key to an owner"
    );
    assert!(read_all(&client, 200).await.iter().all(|v| *v == Some(1)));

    // Node b leaves; the client routes around it, and nothing is lost (replication 2).
    b.stop().await;
    write_all(&client, 200, 10).await;
    settle(&client, 200, 11, "after a leave").await;
    assert!(client.stats().await.is_ok());
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_table_is_corrected_by_redirects() {
    // With one replica per key, a joining node takes keys away from their old owner.
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), None, 1);
    let b = start(dir.path(), Some(a.advertised), 1);
    wait_alive(&a, 2).await;
    // Connected from a cluster file, as applications find `calm up`'s cluster.
    let file = dir.path().join("cluster.toml");
    calm_kvs::cluster_file::ClusterFile {
        nodes: vec![a.addr],
        ca: a.ca.cert.clone(),
        cert: Some(a.cert.cert.clone()),
        key: Some(a.cert.key.clone()),
        path: None,
    }
    .write(&file)
    .unwrap();
    let client = ClusterClient::connect_file(&file).await.unwrap();
    write_all(&client, 200, 1).await;
    assert_eq!(client.redirects(), 0);

    let c = start(dir.path(), Some(a.advertised), 1);
    wait_alive(&a, 3).await;
    wait_alive(&b, 3).await;
    wait_alive(&c, 3).await;
    write_all(&client, 200, 10).await;
    assert!(
        client.redirects() > 0,
        "the stale table should have been corrected by redirects"
    );
    let redirects = client.redirects();
    write_all(&client, 200, 100).await;
    assert_eq!(
        client.redirects(),
        redirects,
        "after the refresh, routing is direct again"
    );
    // Keys that moved are handed to their new owner; every value ends complete.
    settle(&client, 200, 111, "after a join").await;
    for n in [a, b, c] {
        n.stop().await;
    }
}

/// Three nodes, replication 2, all seen alive by each other.
async fn three_nodes(dir: &std::path::Path) -> (RunningNode, RunningNode, RunningNode) {
    let a = start(dir, None, 2);
    let b = start(dir, Some(a.advertised), 2);
    let c = start(dir, Some(a.advertised), 2);
    for n in [&a, &b, &c] {
        wait_alive(n, 3).await;
    }
    (a, b, c)
}

/// How many nodes hold `key` locally.
async fn holders(nodes: &[&RunningNode], key: &Bytes) -> usize {
    let mut n = 0;
    for node in nodes {
        let c = Client::connect(node.addr, &node.credentials())
            .await
            .unwrap();
        let r = c
            .execute_here(vec![Op::Get {
                key: key.clone(),
                meta: false,
            }])
            .await
            .unwrap();
        if matches!(r[0], Ok(Reply::Value(Some(_)))) {
            n += 1;
        }
        c.close().await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_can_have_its_own_replication_factor() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = three_nodes(dir.path()).await;
    let hot = Bytes::from_static(b"hot");
    let admin = Client::connect(a.addr, &a.credentials()).await.unwrap();
    admin.put(hot.clone(), "v").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while holders(&[&a, &b, &c], &hot).await != 2 {
        assert!(Instant::now() < deadline, "the default factor is 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Three replicas for this key: every node learns it, and the data follows.
    admin
        .set_replication(
            hot.clone(),
            Factors {
                global: Some(3),
                local: None,
            },
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while holders(&[&a, &b, &c], &hot).await != 3 {
        assert!(
            Instant::now() < deadline,
            "the key did not reach a third replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in [&a, &b, &c] {
        let t = Client::connect(n.addr, &n.credentials())
            .await
            .unwrap()
            .routing()
            .await
            .unwrap();
        assert_eq!(
            t.overrides,
            vec![(
                hot.clone(),
                Factors {
                    global: Some(3),
                    local: None
                }
            )],
            "every node holds the metadata"
        );
    }

    // Back to the default: the copy that is no longer an owner is handed off and dropped.
    admin
        .set_replication(hot.clone(), Factors::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while holders(&[&a, &b, &c], &hot).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the extra replica was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        admin.get(hot).await.unwrap(),
        Some(ReadValue::Lww { .. })
    ));
    admin.close().await;
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_count_replicas_and_reads_can_merge_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = three_nodes(dir.path()).await;
    let key = Bytes::from_static(b"everywhere");
    let admin = Client::connect(a.addr, &a.credentials()).await.unwrap();
    admin
        .set_replication(
            key.clone(),
            Factors {
                global: Some(3),
                local: None,
            },
        )
        .await
        .unwrap();
    for n in [&a, &b, &c] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = Client::connect(n.addr, &n.credentials()).await.unwrap();
        while client.routing().await.unwrap().overrides.is_empty() {
            assert!(Instant::now() < deadline, "the factor did not spread");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let write = |by| Op::Write {
        key: key.clone(),
        write: Write::Increment(by),
    };
    let r = admin
        .execute_with_ack(vec![write(1)], calm_kvs::Ack::Replicas(3))
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![Ok(Reply::Written)],
        "three replicas merged the write before the answer"
    );
    assert_eq!(holders(&[&a, &b, &c], &key).await, 3);

    // Node c stops answering (without leaving): 3 replicas cannot be reached, 2 can.
    c.server.shutdown().await;
    c.node.shutdown();
    let r = admin
        .execute_with_ack(vec![write(10)], calm_kvs::Ack::Replicas(3))
        .await
        .unwrap();
    assert!(
        matches!(
            r[0],
            Err(calm_kvs::OpError::ReplicationIncomplete {
                reached: 2,
                wanted: 3
            })
        ),
        "{r:?}"
    );
    let r = admin
        .execute_with_ack(vec![write(100)], calm_kvs::Ack::Replicas(2))
        .await
        .unwrap();
    assert_eq!(r, vec![Ok(Reply::Written)]);

    // A merged read sees every write any reachable replica holds.
    let r = admin
        .execute(vec![Op::GetAll {
            key: key.clone(),
            meta: false,
        }])
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![Ok(Reply::Value(Some(ReadValue::Counter { value: 111 })))]
    );
    admin.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_can_have_its_own_number_of_local_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let node = launch(NodeLaunch {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        join: Vec::new(),
        node: NodeConfig {
            threads: 2,
            ..NodeConfig::default()
        },
        cluster: ClusterConfig::default(),
        data_dir: dir.path().to_path_buf(),
        cert: None,
        resp: None,
        resp_config: Default::default(),
    })
    .unwrap();
    let client = Client::connect(node.addr, &node.credentials())
        .await
        .unwrap();
    let key = Bytes::from_static(b"busy");
    client.put(key.clone(), "v").await.unwrap();
    let workers_holding =
        |stats: calm_kvs::StatsSnapshot| stats.workers.iter().filter(|w| w.keys > 0).count();
    assert_eq!(workers_holding(client.stats().await.unwrap()), 1);

    // Two local replicas: the key's lead worker copies it to the other, and reads, which
    // rotate over a key's local replicas, all find it.
    client
        .set_replication(
            key.clone(),
            Factors {
                global: None,
                local: Some(2),
            },
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers_holding(client.stats().await.unwrap()) != 2 {
        assert!(
            Instant::now() < deadline,
            "the second worker never got the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        assert!(matches!(
            client.get(key.clone()).await.unwrap(),
            Some(ReadValue::Lww { .. })
        ));
    }
    // Writes now reach both local replicas.
    client.put(key.clone(), "w").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6 {
        assert_eq!(
            client.get(key.clone()).await.unwrap(),
            Some(ReadValue::Lww {
                value: Bytes::from_static(b"w"),
                stamp: None
            })
        );
    }
    client.close().await;
    node.stop().await;
}

/// With the policy on, a key clients hammer gets more replicas (on every node, through the
/// replicated table), and the decision is recorded with its reason: either rule may fire
/// first (far above the mean of the sampled keys, or most of a node's accesses), depending
/// on whether the cold keys' reads still fall in the sampling window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_replicates_a_hot_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_with(dir.path(), None, 1, 300);
    let b = start_with(dir.path(), Some(a.advertised), 1, 300);
    let c = start_with(dir.path(), Some(a.advertised), 1, 300);
    wait_alive(&a, 3).await;
    let client = ClusterClient::connect(vec![a.addr], &a.credentials())
        .await
        .unwrap();
    for i in 0..40 {
        client.put(format!("cold{i}"), "v").await.unwrap();
    }
    client.put("hot", "v").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ops = (0..200)
            .map(|_| Op::Get {
                key: Bytes::from_static(b"hot"),
                meta: false,
            })
            .collect();
        client.execute(ops).await.unwrap();
        let table = Client::connect(b.addr, &b.credentials())
            .await
            .unwrap()
            .routing()
            .await
            .unwrap();
        if let Some((_, f)) = table.overrides.iter().find(|(k, _)| k.as_ref() == b"hot") {
            assert_eq!(f.global, Some(3));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hot key was never replicated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut decisions = Vec::new();
    for n in [&a, &b, &c] {
        decisions.extend(n.node.stats().await.unwrap().decisions);
    }
    assert!(
        decisions
            .iter()
            .any(|d| d.contains("replicate \"hot\" on 3 nodes")
                && d.contains("recent accesses")
                && (d.contains("above mean") || d.contains("of a node's"))),
        "{decisions:?}"
    );

    // The client learns the new factor without a redirect, and its reads of the hot key
    // then go round the three replicas rather than all to the first owner.
    let gets = |n: &RunningNode| {
        let node = n.node.clone();
        async move {
            let s = node.stats().await.unwrap();
            s.ops
                .iter()
                .filter(|o| o.kind == calm_kvs::OpKind::Get)
                .map(|o| o.count)
                .sum::<u64>()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = [gets(&a).await, gets(&b).await, gets(&c).await];
        for _ in 0..60 {
            let r = client.get("hot").await.unwrap();
            assert!(r.is_some(), "every replica holds the hot key's value");
        }
        let after = [gets(&a).await, gets(&b).await, gets(&c).await];
        let served: Vec<u64> = (0..3).map(|i| after[i] - before[i]).collect();
        if served.iter().all(|&s| s >= 10) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads of the hot key did not spread over its replicas: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A client reads its own writes of the hot key, although its reads go round replicas
    // the write reaches only with the next gossip.
    for i in 0..30 {
        let value = format!("v{i}");
        client.put("hot", value.clone()).await.unwrap();
        match client.get("hot").await.unwrap() {
            Some(ReadValue::Lww { value: got, .. }) => {
                assert_eq!(got, Bytes::from(value), "write {i} not read back")
            }
            other => panic!("write {i} read back as {other:?}"),
        }
    }
    for n in [a, b, c] {
        n.stop().await;
    }
}
