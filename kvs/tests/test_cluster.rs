//! `TestCluster`, the cluster applications start in their own tests: it serves through
//! every node, and dropping it stops every node and removes its folder.

use std::time::Duration;

use calm_kvs::launch::TestCluster;
use calm_kvs::{Client, ReadValue, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_cluster_serves_and_stops_when_dropped() {
    let cluster = TestCluster::start(3).await.unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    let client = cluster.client().await.unwrap();
    client.put("greeting", "hello").await.unwrap();
    client.increment("visits", 2).await.unwrap();
    // Every node answers (forwarding to the owners).
    for addr in cluster.addrs() {
        let one = Client::connect(addr, cluster.credentials()).await.unwrap();
        assert_eq!(
            one.get("visits").await.unwrap(),
            Some(ReadValue::Counter { value: 2 }),
            "through {addr}"
        );
        one.close().await;
    }
    drop(client);

    // Keep the credentials to try again once the cluster (and its folder) is gone.
    let kept = tempfile::tempdir().unwrap();
    let creds = cluster.credentials();
    let mine = calm_kvs::tls::Credentials::new(
        kept.path().join("ca.pem"),
        kept.path().join("test.pem"),
        kept.path().join("test.key"),
    );
    std::fs::copy(&creds.ca, &mine.ca).unwrap();
    std::fs::copy(&creds.cert.cert, &mine.cert.cert).unwrap();
    std::fs::copy(&creds.cert.key, &mine.cert.key).unwrap();
    let folder = creds.ca.parent().unwrap().parent().unwrap().to_path_buf();
    let addrs = cluster.addrs();
    drop(cluster);
    assert!(!folder.exists(), "{} is left behind", folder.display());
    for addr in addrs {
        let reached = tokio::time::timeout(Duration::from_secs(3), async {
            match Client::connect(addr, &mine).await {
                Ok(c) => c.get("visits").await.is_ok(),
                Err(_) => false,
            }
        })
        .await
        .unwrap_or(false);
        assert!(
            !reached,
            "{addr} still answers after the cluster was dropped"
        );
    }
}
