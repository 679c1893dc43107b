//! A node that leaves on purpose hands its keys to their next owners first: with one replica
//! per key, nothing is lost.

use std::net::{Ipv4Addr, SocketAddr};

use calm_kvs::cluster::ClusterConfig;
use calm_kvs::launch::{NodeLaunch, launch};
use calm_kvs::resp::RespConfig;
use calm_kvs::{Client, ClusterClient, NodeConfig, ReadValue, Store};

fn node(dir: &std::path::Path, join: Vec<SocketAddr>) -> NodeLaunch {
    NodeLaunch {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        advertise: None,
        join,
        node: NodeConfig {
            threads: 2,
            ..NodeConfig::default()
        },
        cluster: ClusterConfig {
            replication: 1,
            gossip_period_ms: 20,
            ..ClusterConfig::default()
        },
        data_dir: dir.to_path_buf(),
        cert: None,
        resp: None,
        resp_config: RespConfig::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_over_every_key_first() {
    let dir = tempfile::tempdir().unwrap();
    let a = launch(node(dir.path(), Vec::new())).unwrap();
    let b = launch(node(dir.path(), vec![a.advertised])).unwrap();
    let client = ClusterClient::connect(vec![a.addr], &a.credentials())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client.alive_nodes().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "b never joined");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = client.refresh().await;
    }
    let keys = 2_000;
    for i in 0..keys {
        client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    // Some keys live only on b (one replica each).
    let on_b = Client::connect(b.addr, &a.credentials()).await.unwrap();
    let mut only_b = 0;
    for i in (0..keys).step_by(50) {
        let r = on_b
            .execute_here(vec![calm_kvs::Op::Get {
                key: format!("k{i}").into(),
                meta: false,
            }])
            .await
            .unwrap();
        only_b += usize::from(matches!(r[0], Ok(calm_kvs::Reply::Value(Some(_)))));
    }
    assert!(only_b > 0, "b holds some keys");
    on_b.close().await;
    b.stop().await;
    let a_alone = Client::connect(a.addr, &a.credentials()).await.unwrap();
    for i in 0..keys {
        let v = a_alone.get(format!("k{i}")).await.unwrap();
        assert!(
            matches!(&v, Some(ReadValue::Lww { value, .. }) if *value == format!("v{i}")),
            "k{i} lost when b left: {v:?}"
        );
    }
    a.stop().await;
}
