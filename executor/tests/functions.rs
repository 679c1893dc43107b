//! WebAssembly and native functions, DAGs and references, against an in-process cluster.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use calm_executor::{ExecutorConfig, FnError};
use calm_kvs::Store;
use common::{cluster, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn square_of_increment_through_a_three_node_cluster() {
    let c = cluster(3, ExecutorConfig::default()).await;
    c.register_example("increment").await;
    c.register_example("square").await;
    c.register_dag("sq-inc", &[("increment", "square")], &[])
        .await
        .unwrap();
    for (x, want) in [("3", "16"), ("-5", "16"), ("0", "1"), ("99", "10000")] {
        let r = c.call("sq-inc", &[x]).await.unwrap();
        assert_eq!(text(&r.output()), want, "square(increment({x}))");
        assert_eq!(r.placement.len(), 2);
    }
    // Every node can be the entry.
    for i in 0..3 {
        let r = c
            .call_on(i, "sq-inc", &["4"], calm_executor::Consistency::Lww)
            .await
            .unwrap();
        assert_eq!(text(&r.output()), "25");
    }
    // A lone function, without registering a DAG.
    assert_eq!(
        text(&c.call_fn("increment", "41").await.unwrap().output()),
        "42"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_functions_compose_and_read_through_the_cache() {
    let c = cluster(1, ExecutorConfig::default()).await;
    let ex = &c.executors[0];
    ex.register_native(
        "greet",
        Arc::new(|host, args| {
            let name = host
                .get(b"name")
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let mut out = args.first().cloned().unwrap_or_default().to_vec();
            out.extend_from_slice(&name);
            Ok(Bytes::from(out))
        }),
    )
    .unwrap();
    ex.register_native(
        "shout",
        Arc::new(|host, args| {
            let up = args[0].to_ascii_uppercase();
            host.put(b"shouted", &up).map_err(|e| e.to_string())?;
            Ok(Bytes::from(up))
        }),
    )
    .unwrap();
    c.client.put("name", "calm").await.unwrap();
    c.register_dag("hello", &[("greet", "shout")], &[])
        .await
        .unwrap();
    let r = c.call("hello", &["hello, "]).await.unwrap();
    assert_eq!(text(&r.output()), "HELLO, CALM");
    // The call's write is stored once the call succeeded.
    let stored = c.client.get("shouted").await.unwrap();
    assert!(
        matches!(stored, Some(calm_kvs::ReadValue::Lww { value, .. }) if value == "HELLO, CALM")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sources_and_sinks_and_a_join() {
    let c = cluster(3, ExecutorConfig::default()).await;
    c.register_example("increment").await;
    c.register_example("square").await;
    c.register_example("sum").await;
    // increment feeds square and a second increment; both feed... not sum (it reads
    // arrays); the DAG has two sinks.
    c.register_dag(
        "fan",
        &[("increment", "square"), ("increment", "inc2")],
        &[],
    )
    .await
    .unwrap_err();
    let wat = std::fs::read_to_string(format!(
        "{}/../examples/functions/increment.wat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    c.register_wat("inc2", &wat).await.unwrap();
    c.register_dag(
        "fan",
        &[("increment", "square"), ("increment", "inc2")],
        &[],
    )
    .await
    .unwrap();
    let r = c.call("fan", &["2"]).await.unwrap();
    let outs: Vec<(String, String)> = r
        .outputs
        .iter()
        .map(|(f, o)| (f.clone(), text(o)))
        .collect();
    assert_eq!(
        outs,
        vec![("square".into(), "9".into()), ("inc2".into(), "4".into())]
    );
    // A join: two branches meet in a native function that sees both inputs in edge order.
    for ex in &c.executors {
        ex.register_native(
            "pair",
            Arc::new(|_, args| {
                let parts: Vec<String> = args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                Ok(Bytes::from(parts.join("+")))
            }),
        )
        .unwrap();
    }
    c.register_dag(
        "diamond",
        &[
            ("increment", "square"),
            ("increment", "inc2"),
            ("inc2", "pair"),
            ("square", "pair"),
        ],
        &[],
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let r = c.call("diamond", &["2"]).await.unwrap();
        assert_eq!(text(&r.output()), "4+9");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_resolved_next_to_the_executor() {
    let c = cluster(1, ExecutorConfig::default()).await;
    c.register_example("sum").await;
    let array = |xs: &[i64]| -> Vec<u8> { xs.iter().flat_map(|x| x.to_le_bytes()).collect() };
    c.client.put("a1", array(&[1, 2, 3])).await.unwrap();
    c.client.put("a2", array(&[10, -20])).await.unwrap();
    let big: Vec<i64> = (0..1_000_000).collect();
    c.client.put("big", array(&big)).await.unwrap();
    let r = c.call_fn("sum", "ref:a1").await.unwrap();
    assert_eq!(text(&r.output()), "6");
    c.register_dag("total", &[], &["sum"]).await.unwrap();
    let r = c.call("total", &["ref:a1", "ref:a2"]).await.unwrap();
    assert_eq!(text(&r.output()), "-4");
    let misses = c.executors[0].cache().stats().misses;
    let r = c.call("total", &["ref:big"]).await.unwrap();
    assert_eq!(text(&r.output()), (999_999i64 * 1_000_000 / 2).to_string());
    let r = c.call("total", &["ref:big", "ref:a1"]).await.unwrap();
    assert_eq!(
        text(&r.output()),
        (999_999i64 * 1_000_000 / 2 + 6).to_string()
    );
    assert_eq!(
        c.executors[0].cache().stats().misses,
        misses + 1,
        "the second call read the 8 MB array from the cache"
    );
    let err = c.call("total", &["ref:nope"]).await.unwrap_err();
    assert_eq!(err, FnError::MissingRef("nope".into()));
}
