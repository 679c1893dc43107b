//! Bad modules, bad DAGs and misbehaving guests: each a typed error with a clear message;
//! the executor keeps serving; nothing stored changes.

mod common;

use calm_executor::wasm::Limits;
use calm_executor::{ExecutorConfig, FnError};
use calm_kvs::Store;
use common::{Cluster, cluster, text};

/// A module or guest, and what its error must be.
type Case = (&'static str, String, fn(&FnError) -> bool);

fn config() -> ExecutorConfig {
    ExecutorConfig {
        limits: Limits {
            fuel: 50_000_000,
            memory_bytes: 4 << 20,
            deadline_ms: 2_000,
        },
        ..ExecutorConfig::default()
    }
}

/// The executor still answers: increment works after whatever happened.
async fn still_serves(c: &Cluster) {
    assert_eq!(
        text(&c.call_fn("increment", "1").await.unwrap().output()),
        "2"
    );
}

const IMPORTS: &str = r#"
  (import "calm" "put" (func $put (param i32 i32 i32 i32)))
  (import "calm" "set_result" (func $set_result (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "victim")
  (data (i32.const 16) "changed")
"#;

fn guest(body: &str) -> String {
    format!("(module {IMPORTS} (func (export \"run\") (result i32) {body}))")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_are_refused_at_registration() {
    let c = cluster(1, config()).await;
    c.register_example("increment").await;
    let cases: Vec<Case> = vec![
        ("garbage", "this is not wasm".into(), |e| matches!(e, FnError::NotWasm { .. })),
        ("binary-garbage", "\0asm\x01\0\0\0\x7f\x7f".into(), |e| matches!(e, FnError::NotWasm { .. })),
        (
            "no-run",
            "(module (memory (export \"memory\") 1))".into(),
            |e| matches!(e, FnError::MissingExport { what, .. } if what.contains("run")),
        ),
        (
            "wrong-run",
            "(module (memory (export \"memory\") 1) (func (export \"run\") (param i32)))".into(),
            |e| matches!(e, FnError::MissingExport { .. }),
        ),
        (
            "no-memory",
            "(module (func (export \"run\") (result i32) (i32.const 0)))".into(),
            |e| matches!(e, FnError::MissingExport { what, .. } if what.contains("memory")),
        ),
        (
            "wasi",
            "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32))) (memory (export \"memory\") 1) (func (export \"run\") (result i32) (i32.const 0)))".into(),
            |e| matches!(e, FnError::ForbiddenImport { import, .. } if import.contains("fd_write")),
        ),
    ];
    for (name, module, ok) in cases {
        let err = c.register_wat(name, &module).await.unwrap_err();
        assert!(ok(&err), "{name}: {err}");
        assert!(!err.to_string().is_empty());
        // Nothing was stored under the name.
        assert_eq!(
            c.client.get(format!("calm/fn/{name}")).await.unwrap(),
            None,
            "{name}"
        );
    }
    let err = c.register_wat("bad name!", "(module)").await.unwrap_err();
    assert!(matches!(err, FnError::InvalidName { .. }), "{err}");
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dags_and_unknown_names_are_refused() {
    let c = cluster(1, config()).await;
    c.register_example("increment").await;
    c.register_example("square").await;
    let err = c
        .register_dag(
            "loop",
            &[("increment", "square"), ("square", "increment")],
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FnError::InvalidDag(m) if m.contains("cycle")),
        "{err}"
    );
    let err = c
        .register_dag("ghost", &[("increment", "nobody")], &[])
        .await
        .unwrap_err();
    assert_eq!(err, FnError::UnknownFunction("nobody".into()));
    assert_eq!(c.client.get("calm/dag/ghost").await.unwrap(), None);
    let err = c.call("never-registered", &["1"]).await.unwrap_err();
    assert_eq!(err, FnError::UnknownDag("never-registered".into()));
    let err = c.call_fn("nobody", "1").await.unwrap_err();
    assert_eq!(err, FnError::UnknownFunction("nobody".into()));
    assert!(err.to_string().contains("calm fn register"));
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_guests_get_typed_errors_and_change_nothing() {
    let c = cluster(1, config()).await;
    c.register_example("increment").await;
    c.client.put("victim", "original").await.unwrap();
    // Each guest first writes `victim`, then misbehaves: the write must not be stored.
    let put = "(call $put (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 7))";
    let cases: Vec<Case> = vec![
        (
            "spin",
            guest(&format!("{put} (loop $l (br $l)) (i32.const 0)")),
            |e| matches!(e, FnError::OutOfFuel { .. }),
        ),
        (
            "bomb",
            guest(&format!(
                "{put} (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0)"
            )),
            |e| matches!(e, FnError::MemoryLimit { .. }),
        ),
        ("trap", guest(&format!("{put} unreachable")), |e| {
            matches!(e, FnError::Trap { .. })
        }),
        (
            "divide",
            guest(&format!(
                "{put} (drop (i32.div_s (i32.const 1) (i32.const 0))) (i32.const 0)"
            )),
            |e| matches!(e, FnError::Trap { message, .. } if message.contains("divide")),
        ),
        (
            "garbage-result",
            guest(&format!(
                "{put} (call $set_result (i32.const 65530) (i32.const 100)) (i32.const 0)"
            )),
            |e| matches!(e, FnError::BadGuestCall { .. }),
        ),
        (
            "garbage-key",
            guest(
                "(call $put (i32.const -5) (i32.const 6) (i32.const 16) (i32.const 7)) (i32.const 0)",
            ),
            |e| matches!(e, FnError::BadGuestCall { .. }),
        ),
        ("fails", guest(&format!("{put} (i32.const 7)")), |e| {
            matches!(e, FnError::GuestFailed { code: 7, .. })
        }),
    ];
    for (name, module, ok) in cases {
        c.register_wat(name, &module).await.unwrap();
        let err = c.call_fn(name, "").await.unwrap_err();
        assert!(ok(&err), "{name}: {err}");
        let victim = c.client.get("victim").await.unwrap();
        assert!(
            matches!(&victim, Some(calm_kvs::ReadValue::Lww { value, .. }) if value == "original"),
            "{name} changed the store: {victim:?}"
        );
        still_serves(&c).await;
    }
    // A module that asks for more memory up front than the limit cannot even start.
    c.register_wat("huge", "(module (memory (export \"memory\") 1000) (func (export \"run\") (result i32) (i32.const 0)))")
        .await
        .unwrap();
    let err = c.call_fn("huge", "").await.unwrap_err();
    assert!(matches!(err, FnError::MemoryLimit { .. }), "{err}");
    // The same guest without misbehaving stores its write.
    c.register_wat("honest", &guest(&format!("{put} (i32.const 0)")))
        .await
        .unwrap();
    c.call_fn("honest", "").await.unwrap();
    let victim = c.client.get("victim").await.unwrap();
    assert!(matches!(&victim, Some(calm_kvs::ReadValue::Lww { value, .. }) if value == "changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_a_guest_with_fuel_to_spare() {
    let c = cluster(
        1,
        ExecutorConfig {
            limits: Limits {
                fuel: u64::MAX / 2,
                memory_bytes: 4 << 20,
                deadline_ms: 200,
            },
            ..ExecutorConfig::default()
        },
    )
    .await;
    c.register_example("increment").await;
    c.register_wat("spin", &guest("(loop $l (br $l)) (i32.const 0)"))
        .await
        .unwrap();
    let err = c.call_fn("spin", "").await.unwrap_err();
    assert_eq!(
        err,
        FnError::DeadlineExceeded {
            name: "spin".into(),
            ms: 200
        }
    );
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_function_that_panics_fails_its_call_only() {
    let c = cluster(1, config()).await;
    c.register_example("increment").await;
    c.executors[0]
        .register_native("boom", std::sync::Arc::new(|_, _| panic!("kaboom")))
        .unwrap();
    let err = c.call_fn("boom", "").await.unwrap_err();
    assert!(
        matches!(&err, FnError::Failed { message, .. } if message.contains("kaboom")),
        "{err}"
    );
    still_serves(&c).await;
}
