//! The cache against a real in-process cluster: hits and misses, pushes from the owners,
//! eviction by bytes, and subscriptions that end with the keys.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_cache::{Cache, CacheConfig};
use calm_kvs::launch::{RunningNode, launch_local_cluster};
use calm_kvs::protocol::Ack;
use calm_kvs::value::{ReadValue, Write};
use calm_kvs::{ClusterClient, Store};

async fn cluster(n: u8, dir: &std::path::Path) -> (Vec<RunningNode>, ClusterClient) {
    let nodes = launch_local_cluster(n, 20, |_| IpAddr::V4(Ipv4Addr::LOCALHOST), None, 0, dir)
        .await
        .expect("cluster starts");
    let addrs = nodes.iter().map(|n| n.addr).collect();
    let client = ClusterClient::connect(addrs, &nodes[0].credentials())
        .await
        .expect("client connects");
    (nodes, client)
}

fn lww(value: &Option<ReadValue>) -> Option<Vec<u8>> {
    match value {
        Some(ReadValue::Lww { value, .. }) => Some(value.to_vec()),
        _ => None,
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_hit_after_the_first_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, client) = cluster(1, dir.path()).await;
    client.put("k", "v1").await.unwrap();
    let cache = Cache::new(client.clone(), CacheConfig::default()).await;
    assert_eq!(
        lww(&cache.get(&b("k")).await.unwrap()),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        lww(&cache.get(&b("k")).await.unwrap()),
        Some(b"v1".to_vec())
    );
    assert_eq!(cache.get(&b("missing")).await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.keys), (1, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_push_changes_to_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, client) = cluster(3, dir.path()).await;
    client.put("pushed", "old").await.unwrap();
    // A long lease: renewals (every 20 s) cannot be what refreshes the copy here.
    let config = CacheConfig {
        lease_ms: 60_000,
        ..CacheConfig::default()
    };
    let cache = Cache::new(client.clone(), config).await;
    assert_eq!(
        lww(&cache.get(&b("pushed")).await.unwrap()),
        Some(b"old".to_vec())
    );
    let watched: usize = nodes.iter().map(|n| n.node.watched_keys()).sum();
    assert_eq!(watched, 1, "one owner holds the subscription");
    // Another client writes; the cache's copy follows without fetching again.
    let other = ClusterClient::connect(vec![nodes[1].addr], &nodes[0].credentials())
        .await
        .unwrap();
    let misses = cache.stats().misses;
    let mut took = None;
    for round in 0..20 {
        let value = format!("new-{round}");
        let written = Instant::now();
        other.put("pushed", value.clone()).await.unwrap();
        let deadline = written + Duration::from_secs(5);
        while Instant::now() < deadline {
            if lww(&cache.get(&b("pushed")).await.unwrap()) == Some(value.clone().into_bytes()) {
                took.get_or_insert(Vec::new()).push(written.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let took = took.expect("pushed values arrive");
    assert_eq!(took.len(), 20, "every write reached the cache by push");
    assert_eq!(cache.stats().misses, misses, "no read went to the owners");
    assert!(cache.stats().pushes >= 20);
    let mut sorted = took.clone();
    sorted.sort();
    println!(
        "write-to-cache visibility over 20 writes: median {:?}, max {:?}",
        sorted[10], sorted[19]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_cache_within_its_bytes_and_ends_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, client) = cluster(1, dir.path()).await;
    let value = vec![7u8; 1000];
    for i in 0..20 {
        client.put(format!("e{i}"), value.clone()).await.unwrap();
    }
    let config = CacheConfig {
        capacity_bytes: 5_000,
        ..CacheConfig::default()
    };
    let cache = Cache::new(client.clone(), config).await;
    for i in 0..20 {
        cache.get(&Bytes::from(format!("e{i}"))).await.unwrap();
        // e0 is read again and again: the most recently used, it stays.
        cache.get(&b("e0")).await.unwrap();
    }
    let stats = cache.stats();
    assert!(stats.bytes <= 5_000, "{stats:?}");
    assert!(stats.evictions >= 15, "{stats:?}");
    assert!(cache.holds(b"e0"), "the most used key survives");
    assert!(cache.holds(b"e19"), "the newest key is held");
    assert!(!cache.holds(b"e1"), "an old key was evicted");
    // The owners stop watching evicted keys.
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes[0].node.watched_keys() as u64 != stats.keys && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nodes[0].node.watched_keys() as u64, stats.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_owners_and_the_writer_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, client) = cluster(1, dir.path()).await;
    let cache = Cache::new(client.clone(), CacheConfig::default()).await;
    cache
        .write(vec![(b("w"), Write::Lww(b("mine")))], Ack::One)
        .await
        .unwrap();
    assert_eq!(
        lww(&cache.get(&b("w")).await.unwrap()),
        Some(b"mine".to_vec())
    );
    assert_eq!(cache.stats().misses, 0);
    assert_eq!(lww(&client.get("w").await.unwrap()), Some(b"mine".to_vec()));
    // A write of the wrong kind is refused with the reason, and the copy is dropped.
    let err = cache
        .write(vec![(b("w"), Write::Increment(1))], Ack::One)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lww"), "{err}");
    assert!(!cache.holds(b"w"));
}
