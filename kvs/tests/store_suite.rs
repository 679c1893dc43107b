//! One suite, two stores: the embedded store and the network client must behave the same.

mod common;

use bytes::Bytes;
use calm_kvs::{EmbeddedStore, Kind, KvsError, Op, OpError, ReadValue, Reply, Store, Write};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn suite<S: Store>(store: &S) {
    // Not found is not an empty value.
    assert_eq!(store.get("missing").await.unwrap(), None);

    // Last-writer-wins bytes, with metadata on request.
    store.put("greeting", "hello").await.unwrap();
    store.put("greeting", "hello again").await.unwrap();
    assert_eq!(
        store.get("greeting").await.unwrap(),
        Some(ReadValue::Lww {
            value: b("hello again"),
            stamp: None
        })
    );
    match store.get_with_meta("greeting").await.unwrap() {
        Some(ReadValue::Lww {
            stamp: Some(stamp), ..
        }) => assert!(stamp.hlc.wall_ms() > 0),
        other => panic!("expected a stamp, got {other:?}"),
    }

    // Delete is real.
    assert!(store.delete("greeting").await.unwrap());
    assert_eq!(store.get("greeting").await.unwrap(), None);
    assert!(!store.delete("greeting").await.unwrap());
    store.put("greeting", "back").await.unwrap();
    assert!(store.get("greeting").await.unwrap().is_some());

    // Sets.
    store.set_add("tags", vec![b("b"), b("a")]).await.unwrap();
    store.set_add("tags", vec![b("c")]).await.unwrap();
    assert_eq!(
        store.get("tags").await.unwrap(),
        Some(ReadValue::Set {
            members: vec![b("a"), b("b"), b("c")]
        })
    );
    store
        .orset_add("cart", vec![b("milk"), b("eggs")])
        .await
        .unwrap();
    store.orset_remove("cart", vec![b("milk")]).await.unwrap();
    assert_eq!(
        store.get("cart").await.unwrap(),
        Some(ReadValue::OrSet {
            members: vec![b("eggs")]
        })
    );
    store.orset_remove("cart", vec![b("eggs")]).await.unwrap();
    assert_eq!(
        store.get("cart").await.unwrap(),
        None,
        "an emptied set is not found"
    );

    // Counters, max, priority, causal.
    store.increment("hits", 5).await.unwrap();
    store.increment("hits", -2).await.unwrap();
    assert_eq!(
        store.get("hits").await.unwrap(),
        Some(ReadValue::Counter { value: 3 })
    );
    store.put_max("peak", 7).await.unwrap();
    store.put_max("peak", 4).await.unwrap();
    assert_eq!(
        store.get("peak").await.unwrap(),
        Some(ReadValue::Max { value: 7 })
    );
    store.put_priority("route", 9, "slow").await.unwrap();
    store.put_priority("route", 2, "fast").await.unwrap();
    assert_eq!(
        store.get("route").await.unwrap(),
        Some(ReadValue::Priority {
            priority: 2,
            value: b("fast")
        })
    );
    store.put_causal("doc", "v1").await.unwrap();
    store.put_causal("doc", "v2").await.unwrap();
    match store.get_with_meta("doc").await.unwrap() {
        Some(ReadValue::SingleCausal {
            values,
            clock: Some(clock),
        }) => {
            assert_eq!(values, vec![b("v2")]);
            assert_eq!(clock.iter().map(|(_, n)| n).sum::<u64>(), 2);
        }
        other => panic!("expected a causal value, got {other:?}"),
    }

    // The first write fixes the kind; another kind is refused, naming both, changing nothing.
    let err = store.increment("greeting", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            KvsError::Op(OpError::KindMismatch {
                stored: Kind::Lww,
                attempted: Kind::Counter
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("lww") && err.to_string().contains("counter"));
    assert_eq!(
        store.get("greeting").await.unwrap(),
        Some(ReadValue::Lww {
            value: b("back"),
            stamp: None
        })
    );

    // Batches: many keys in one request, results in order, one failure does not spoil the rest.
    let mut ops: Vec<Op> = (0..200)
        .map(|i| Op::Write {
            key: Bytes::from(format!("batch/{i}")),
            write: Write::Lww(Bytes::from(format!("{i}"))),
        })
        .collect();
    ops.push(Op::Write {
        key: b("hits"),
        write: Write::Lww(b("x")),
    });
    ops.push(Op::Get {
        key: b("batch/7"),
        meta: false,
    });
    ops.push(Op::Get {
        key: Bytes::new(),
        meta: false,
    });
    let results = store.execute(ops).await.unwrap();
    assert_eq!(results.len(), 203);
    assert!(results[..200].iter().all(|r| *r == Ok(Reply::Written)));
    assert!(matches!(results[200], Err(OpError::KindMismatch { .. })));
    assert_eq!(
        results[201],
        Ok(Reply::Value(Some(ReadValue::Lww {
            value: b("7"),
            stamp: None
        })))
    );
    assert!(matches!(results[202], Err(OpError::EmptyKey { .. })));

    // Stats are kept by the node.
    let stats = store.stats().await.unwrap();
    let writes = stats
        .ops
        .iter()
        .find(|o| o.kind == calm_kvs::OpKind::Write)
        .unwrap();
    assert!(writes.count >= 200, "{stats:?}");
    assert!(writes.errors >= 2, "{stats:?}");
    assert!(stats.workers.iter().map(|w| w.keys).sum::<u64>() >= 200);
}

#[tokio::test]
async fn embedded_store_passes_the_suite() {
    let store = EmbeddedStore::start(common::small_config()).unwrap();
    suite(&store).await;
}

/// The same suite with a disk and a memory budget of one byte: after every batch each key
/// is moved to disk, and every read or write loads it back.
#[tokio::test]
async fn embedded_store_on_disk_with_no_memory_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::small_config();
    config.data_dir = Some(dir.path().to_path_buf());
    config.storage.memory_budget = Some(1);
    let store = EmbeddedStore::start(config).unwrap();
    suite(&store).await;
    let stats = store.stats().await.unwrap();
    let demoted: u64 = stats.workers.iter().map(|w| w.storage.demotions).sum();
    let promoted: u64 = stats.workers.iter().map(|w| w.storage.promotions).sum();
    assert!(demoted > 10 && promoted > 10, "{stats:?}");
}

#[tokio::test]
async fn network_client_passes_the_suite() {
    let server = common::LocalServer::start(common::small_config()).await;
    let client = server.client().await;
    suite(&client).await;
    client.close().await;
}

#[tokio::test]
async fn pipelined_requests_keep_their_order_per_key() {
    let server = common::LocalServer::start(common::small_config()).await;
    let client = server.client().await;
    // Many requests in flight at once on one connection, not awaited one by one.
    let mut tasks = Vec::new();
    for i in 0..500i64 {
        let c = client.clone();
        tasks.push(tokio::spawn(
            async move { c.increment("pipelined", i).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        client.get("pipelined").await.unwrap(),
        Some(ReadValue::Counter {
            value: (0..500).sum::<i64>().into()
        })
    );
    // A write then a read sent back to back without waiting for the write's answer: both
    // are in flight together, and the read sees the write.
    for i in 0..50 {
        let value = format!("v{i}");
        let (w, r) = tokio::join!(client.put("order", value.clone()), client.get("order"));
        w.unwrap();
        assert_eq!(
            r.unwrap(),
            Some(ReadValue::Lww {
                value: Bytes::from(value),
                stamp: None
            })
        );
    }
}

#[tokio::test]
async fn local_replication_serves_reads_from_every_replica() {
    let config = calm_kvs::NodeConfig {
        threads: 3,
        worker: calm_kvs::WorkerConfig {
            local_replication: 3,
            gossip_period_ms: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let store = EmbeddedStore::start(config).unwrap();
    for i in 0..30 {
        store.increment(format!("c{i}"), i).await.unwrap();
    }
    // Reads rotate over the three replicas; after a gossip period all agree.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for i in 0..30i64 {
        for _ in 0..3 {
            assert_eq!(
                store.get(format!("c{i}")).await.unwrap(),
                Some(ReadValue::Counter { value: i.into() })
            );
        }
    }
    let stats = store.stats().await.unwrap();
    assert!(
        stats.workers.iter().all(|w| w.gossip_received > 0),
        "{stats:?}"
    );
    // The node measures its own occupancy: every worker was busy for some time.
    assert!(stats.workers.iter().all(|w| w.busy_us > 0), "{stats:?}");
}
