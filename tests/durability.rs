//! End to end with real processes: `kill -9` of a node in the middle of a write stream
//! loses no acknowledged write with `--durability sync`, and with `async` loses at most what
//! was acknowledged in the last flush interval (the test prints how much); a whole `calm up`
//! cluster stopped with Ctrl-C and started again on the same data dir has every key, of
//! every kind, back.

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm::kvs::{Client, Op, ReadValue, Reply, Store, Write};
use common::Up;

fn start_server(data: &Path, port: u16, durability: &str) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let data = data.to_str().unwrap();
    let args = [
        "--threads",
        "2",
        "--durability",
        durability,
        "--flush-ms",
        "100",
        "--listen",
        &listen,
        "--data-dir",
        data,
    ];
    common::server(&args).0
}

/// What a write stream saw: each acknowledged key with when it was acknowledged.
type Acked = Arc<Mutex<Vec<(Bytes, Instant)>>>;

/// Writers that keep writing distinct keys (one batch of 8 at a time each) until their
/// connection breaks.
fn write_stream(
    client: &Client,
    writers: usize,
    acked: &Acked,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let keys: Vec<Bytes> = (0..8)
                        .map(|j| Bytes::from(format!("w{w}/{i}/{j}")))
                        .collect();
                    let ops = keys
                        .iter()
                        .map(|k| Op::Write {
                            key: k.clone(),
                            write: Write::Lww(k.clone()),
                        })
                        .collect();
                    let Ok(results) = client.execute(ops).await else {
                        return;
                    };
                    let now = Instant::now();
                    let mut a = acked.lock().unwrap();
                    for (k, r) in keys.into_iter().zip(results) {
                        if r == Ok(Reply::Written) {
                            a.push((k, now));
                        }
                    }
                }
            })
        })
        .collect()
}

/// Writes, kills the node with `kill -9` mid-stream, restarts it and reads back every
/// acknowledged key: (acknowledged, missing, acknowledged in the last 100 ms).
async fn kill_mid_stream(durability: &str) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_base_port(1);
    let mut server = start_server(&data, port, durability);
    // The node started a cluster: its cluster file names the CA and a client certificate.
    let ca = calm::kvs::cluster_file::ClusterFile::read(&data.join("cluster.toml"))
        .unwrap()
        .credentials()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = Client::connect(addr, &ca).await.unwrap();
    let acked: Acked = Arc::default();
    let writers = write_stream(&client, 4, &acked);
    // Let the stream run, then kill while writes are in flight.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(common::signal(server.id(), "-9"));
    let killed = Instant::now();
    server.wait().unwrap();
    for w in writers {
        let _ = w.await;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let recent = acked
        .iter()
        .filter(|(_, at)| killed.duration_since(*at) < Duration::from_millis(100))
        .count();

    let mut server = start_server(&data, port, durability);
    let client = Client::connect(addr, &ca).await.unwrap();
    let mut missing = 0;
    for chunk in acked.chunks(500) {
        let ops = chunk
            .iter()
            .map(|(k, _)| Op::Get {
                key: k.clone(),
                meta: false,
            })
            .collect();
        let results = client.execute(ops).await.unwrap();
        for ((k, _), r) in chunk.iter().zip(results) {
            let expected = Ok(Reply::Value(Some(ReadValue::Lww {
                value: k.clone(),
                stamp: None,
            })));
            missing += usize::from(r != expected);
        }
    }
    client.close().await;
    assert!(common::signal(server.id(), "-TERM"));
    server.wait().unwrap();
    (acked.len(), missing, recent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_write_with_sync() {
    let (acked, missing, _) = kill_mid_stream("sync").await;
    eprintln!("sync: {acked} writes acknowledged before kill -9, {missing} missing after restart");
    assert!(acked > 100, "the stream barely ran: {acked} writes");
    assert_eq!(missing, 0, "acknowledged writes lost with sync durability");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_with_async_loses_at_most_the_last_flush_interval() {
    let (acked, missing, recent) = kill_mid_stream("async").await;
    eprintln!(
        "async: {acked} writes acknowledged before kill -9, {missing} missing after restart \
         ({recent} were acknowledged in the last 100 ms flush interval)"
    );
    assert!(acked > 100, "the stream barely ran: {acked} writes");
    assert!(
        missing <= recent,
        "{missing} writes missing, more than the {recent} of the last flush interval"
    );
}

fn kv(up: &Up, args: &[&str]) -> String {
    let mut all = vec!["kv"];
    all.extend_from_slice(args);
    let out = up.calm(&all);
    assert!(
        out.status.success(),
        "calm kv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The keys a user writes with `calm kv`, one of every kind.
const WRITES: &[&[&str]] = &[
    &["put", "greeting", "hello world"],
    &["put", "top", "7", "--type", "max"],
    &[
        "put",
        "job",
        "urgent",
        "--type",
        "priority",
        "--priority",
        "2",
    ],
    &["put", "note", "draft", "--type", "causal"],
    &["add", "tags", "red", "green"],
    &["add", "cart", "milk", "eggs", "--type", "orset"],
    &["rem", "cart", "milk"],
    &["incr", "visits", "41"],
    &["incr", "visits"],
];

const KEYS: &[&str] = &["greeting", "top", "job", "note", "tags", "cart", "visits"];

fn read_all(up: &Up) -> Vec<String> {
    KEYS.iter().map(|k| kv(up, &["get", k, "--json"])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calm_up_again_on_the_same_data_dir_brings_every_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = common::free_base_port(3);
    let opts = ["--threads", "1"];
    let up = Up::start(3, &data, base, &opts);
    for w in WRITES {
        kv(&up, w);
    }
    // Many keys through a client too, so every node holds some.
    let client = up.client(0).await;
    let ops = (0..300)
        .map(|i| Op::Write {
            key: Bytes::from(format!("bulk/{i}")),
            write: Write::Increment(i),
        })
        .collect();
    for r in client.execute(ops).await.unwrap() {
        assert_eq!(r, Ok(Reply::Written));
    }
    client.close().await;
    let before = read_all(&up);
    assert!(before[6].contains("42"), "{}", before[6]);
    assert!(up.interrupt().success(), "calm up did not stop cleanly");

    let up = Up::start(3, &data, base, &opts);
    assert_eq!(read_all(&up), before);
    let client = up.client(2).await;
    let ops = (0..300)
        .map(|i| Op::Get {
            key: Bytes::from(format!("bulk/{i}")),
            meta: false,
        })
        .collect();
    let results = client.execute(ops).await.unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(
            r,
            Ok(Reply::Value(Some(ReadValue::Counter { value: i as i128 }))),
            "bulk/{i}"
        );
    }
    client.close().await;
    // Each node recovered its own keys from disk.
    let status = up.status();
    for node in status["nodes"].as_array().unwrap() {
        assert!(node["keys"].as_u64().unwrap_or(0) > 0, "{node}");
    }
}
