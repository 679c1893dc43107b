//! The anomalies each consistency mode prevents, shown happening under `lww`.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_executor::scheduler::SchedulerConfig;
use calm_executor::{Consistency, Executor, ExecutorConfig};
use calm_kvs::value::{ReadValue, Write};
use calm_kvs::{ClusterClient, Store};
use common::{cluster, text};

/// Writes `key = value` from outside any call and waits until every executor's cache that
/// holds the key has the new value (so a read after this sees it unless pinned).
async fn put_and_settle(
    writer: &ClusterClient,
    executors: &[Arc<Executor>],
    key: &'static str,
    value: String,
) {
    writer.put(key, value.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for ex in executors {
        while ex.cache().holds(key.as_bytes()) {
            let seen = ex
                .cache()
                .get(&Bytes::from_static(key.as_bytes()))
                .await
                .unwrap();
            if matches!(&seen, Some(ReadValue::Lww { value: v, .. }) if *v == value) {
                break;
            }
            assert!(Instant::now() < deadline, "the push never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeatable_read_pins_a_version_across_the_dag_and_across_nodes() {
    // Random placement, so the two functions often run on different nodes.
    let config = ExecutorConfig {
        scheduler: SchedulerConfig {
            explore: 1.0,
            ..SchedulerConfig::default()
        },
        seed: Some(7),
        ..ExecutorConfig::default()
    };
    let c = cluster(3, config).await;
    let executors: Arc<OnceLock<Vec<Arc<Executor>>>> = Arc::new(OnceLock::new());
    let writer = c.client.clone();
    let round = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for ex in &c.executors {
        let (executors, writer, round) = (executors.clone(), writer.clone(), round.clone());
        let handle = tokio::runtime::Handle::current();
        // `first` reads the balance, then someone else changes it.
        ex.register_native(
            "first",
            Arc::new(move |host, _| {
                let seen = host
                    .get(b"balance")
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                handle.block_on(put_and_settle(
                    &writer,
                    executors.get().unwrap(),
                    "balance",
                    format!("changed-{n}"),
                ));
                Ok(seen)
            }),
        )
        .unwrap();
        // `second` reads the balance again.
        ex.register_native(
            "second",
            Arc::new(|host, args| {
                let seen = host
                    .get(b"balance")
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                Ok(Bytes::from(format!("{}|{}", text(&args[0]), text(&seen))))
            }),
        )
        .unwrap();
    }
    executors.set(c.executors.clone()).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.executors.iter().any(|e| e.known_nodes() < 3) {
        assert!(
            Instant::now() < deadline,
            "executors never saw each other: {:?}",
            c.executors
                .iter()
                .map(|e| e.known_nodes())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.register_dag("twice", &[("first", "second")], &[])
        .await
        .unwrap();
    let mut anomalies = 0;
    for _ in 0..3 {
        put_and_settle(&c.client, &c.executors, "balance", "100".into()).await;
        let r = c.call_on(0, "twice", &[], Consistency::Lww).await.unwrap();
        let out = text(&r.output());
        let (a, b) = out.split_once('|').unwrap();
        anomalies += usize::from(a != b);
    }
    assert_eq!(
        anomalies, 3,
        "under lww the second read sees the concurrent write"
    );
    let mut across_nodes = 0;
    for _ in 0..8 {
        put_and_settle(&c.client, &c.executors, "balance", "100".into()).await;
        let r = c
            .call_on(0, "twice", &[], Consistency::RepeatableRead)
            .await
            .unwrap();
        let out = text(&r.output());
        assert_eq!(
            out, "100|100",
            "repeatable read: one version in one call ({:?})",
            r.placement
        );
        across_nodes += usize::from(r.placement[0].node != r.placement[1].node);
    }
    assert!(
        across_nodes > 0,
        "some calls ran the two functions on different nodes"
    );
}

/// A Retwis-style anomaly: a reply visible with an older version of the tweet it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_reads_never_show_a_reply_without_its_tweet() {
    let c = cluster(1, ExecutorConfig::default()).await;
    let ex = &c.executors[0];
    ex.register_native(
        "read-reply",
        Arc::new(|host, _| {
            Ok(host
                .get(b"reply")
                .map_err(|e| e.to_string())?
                .unwrap_or_default())
        }),
    )
    .unwrap();
    ex.register_native(
        "read-tweet",
        Arc::new(|host, args| {
            let tweet = host
                .get(b"tweet")
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            Ok(Bytes::from(format!("{}|{}", text(&args[0]), text(&tweet))))
        }),
    )
    .unwrap();
    c.register_dag("timeline", &[("read-reply", "read-tweet")], &[])
        .await
        .unwrap();
    let run = |consistency: Consistency, round: usize| {
        let c = &c;
        async move {
            // The tweet's first version, cached next to the executor.
            let draft = format!("draft {round}");
            c.client
                .write(
                    "tweet",
                    Write::MultiCausal {
                        value: Bytes::from(draft),
                        deps: vec![],
                    },
                )
                .await
                .unwrap();
            let ex = &c.executors[0];
            ex.cache().clear();
            ex.cache().get(&Bytes::from_static(b"tweet")).await.unwrap();
            // The owner's pushes to this cache are lost from now on.
            ex.cache().set_pushes_paused(true);
            let text_v2 = format!("hello {round}");
            c.client
                .write(
                    "tweet",
                    Write::MultiCausal {
                        value: Bytes::from(text_v2.clone()),
                        deps: vec![],
                    },
                )
                .await
                .unwrap();
            let clock = match c.client.get_with_meta("tweet").await.unwrap() {
                Some(ReadValue::MultiCausal {
                    clock: Some(clock), ..
                }) => clock,
                other => panic!("{other:?}"),
            };
            c.client
                .write(
                    "reply",
                    Write::MultiCausal {
                        value: Bytes::from(format!("re: {text_v2}")),
                        deps: vec![(Bytes::from_static(b"tweet"), clock)],
                    },
                )
                .await
                .unwrap();
            let r = c.call_on(0, "timeline", &[], consistency).await;
            ex.cache().set_pushes_paused(false);
            let out = text(&r.unwrap().output());
            let (reply, tweet) = out.split_once('|').unwrap().to_owned();
            (reply.to_string(), tweet.to_string(), text_v2)
        }
    };
    let (reply, tweet, v2) = run(Consistency::Lww, 1).await;
    assert_eq!(reply, format!("re: {v2}"));
    assert_ne!(
        tweet, v2,
        "under lww the reply shows with the old tweet: the anomaly"
    );
    let (reply, tweet, v2) = run(Consistency::Causal, 2).await;
    assert_eq!(reply, format!("re: {v2}"));
    assert_eq!(
        tweet, v2,
        "causal: the tweet the reply depends on is visible"
    );
    // Writes of a causal call record what it read.
    ex.register_native(
        "echo",
        Arc::new(|host, _| {
            let tweet = host
                .get(b"tweet")
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            host.put(b"echoed", &tweet).map_err(|e| e.to_string())?;
            Ok(tweet)
        }),
    )
    .unwrap();
    c.register_dag("echo", &[], &["echo"]).await.unwrap();
    c.call_on(0, "echo", &[], Consistency::Causal)
        .await
        .unwrap();
    match c.client.get_with_meta("echoed").await.unwrap() {
        Some(ReadValue::MultiCausal { deps, .. }) => {
            assert!(deps.iter().any(|(k, _)| k == "tweet"), "{deps:?}")
        }
        other => panic!("a causal call writes causal values: {other:?}"),
    }
}
