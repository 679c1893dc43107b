//! Mutual TLS against real `calm server` processes: every connection must present a
//! certificate the cluster CA issued, and only node certificates may speak for nodes.
//! Each refusal is checked by its effect too: what a refused connection sent is not in
//! the store, and the membership is what the real nodes made it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use calm::kvs::cluster::{Membership, PeerEnvelope, PeerRequest, ReplicationTable};
use calm::kvs::protocol::{ProtocolError, RequestBody};
use calm::kvs::tls::{self, Credentials};
use calm::kvs::value::WriteCtx;
use calm::kvs::{Client, Kind, KvsError, Op, ReadValue, Store, Value, Write};

/// Kills the node when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn calm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(args)
        .output()
        .expect("run calm")
}

fn issue_client(ca_dir: &Path, name: &str) -> Credentials {
    let out = calm(&[
        "ca",
        "issue",
        "--ca",
        ca_dir.to_str().unwrap(),
        "--client",
        name,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clients = ca_dir.parent().unwrap().join("clients");
    Credentials::new(
        ca_dir.join("ca.pem"),
        clients.join(format!("{name}.pem")),
        clients.join(format!("{name}.key")),
    )
}

/// A connection the node must refuse: either the handshake fails, or the first request
/// does, without an answer. Returns what the client was told.
async fn refused(addr: SocketAddr, config: quinn::ClientConfig, key: &str) -> String {
    let client = match Client::connect_within(addr, config, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    match tokio::time::timeout(
        Duration::from_secs(10),
        client.put(key.to_string(), "should not land"),
    )
    .await
    {
        Ok(Ok(())) => panic!("a connection without a valid certificate wrote {key}"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("a refused connection hung instead of failing"),
    }
}

fn forbidden(result: Result<calm::kvs::protocol::ResponseBody, KvsError>) -> String {
    match result {
        Err(KvsError::Refused(ProtocolError::Forbidden { who, what })) => {
            format!("{who} may not {what}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certificates_of_the_cluster_ca_get_in_and_only_nodes_speak_for_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_base_port(2);
    let first: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let second: SocketAddr = format!("127.0.0.1:{}", port + 1).parse().unwrap();
    let data_arg = data.to_str().unwrap();
    let (a, _) = common::server(&[
        "--listen",
        &first.to_string(),
        "--data-dir",
        data_arg,
        "--executors",
        "0",
    ]);
    let _a = Node(a);
    let (b, _) = common::server(&[
        "--listen",
        &second.to_string(),
        "--join",
        &first.to_string(),
        "--data-dir",
        data_arg,
        "--executors",
        "0",
    ]);
    let _b = Node(b);
    let ca_dir = data.join("ca");

    // A client certificate from the cluster CA, made with the command line, gets in.
    let alice = issue_client(&ca_dir, "alice");
    let client = Client::connect(first, &alice).await.unwrap();
    common::wait_for("both nodes alive", Duration::from_secs(20), || async {
        client.members().await.is_ok_and(|m| m.len() == 2)
    })
    .await;
    client.put("granted", "yes").await.unwrap();
    let second_arg = second.to_string();
    let kv_get = |extra: &[&str]| {
        let mut args = vec!["kv", "get", "granted", "--addr", &second_arg, "--ca"];
        args.push(alice.ca.to_str().unwrap());
        args.extend_from_slice(extra);
        calm(&args)
    };
    let out = kv_get(&["--cert", alice.cert.cert.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    // Without a certificate the command line says what to bring.
    let out = kv_get(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--cert"), "{stderr}");

    // No certificate at all: refused before any request is read.
    let anonymous = tls::anonymous_client_config(&alice.ca).unwrap();
    let why = refused(first, anonymous, "anonymous").await;
    println!("no certificate: {why}");
    assert!(why.contains("certificate"), "{why}");

    // A client certificate of another CA: refused too.
    let other_ca = dir.path().join("other").join("ca");
    assert!(
        calm(&["ca", "init", "--out", other_ca.to_str().unwrap()])
            .status
            .success()
    );
    let mallory = issue_client(&other_ca, "mallory");
    let posing = Credentials {
        ca: alice.ca.clone(),
        cert: mallory.cert.clone(),
    };
    let why = refused(second, tls::client_config(&posing).unwrap(), "other-ca").await;
    println!("another CA: {why}");
    assert!(why.contains("certificate"), "{why}");

    // A client certificate sending peer messages: refused, and nothing it carried lands.
    let mut injected = Value::empty(Kind::Max);
    injected
        .apply(
            Write::Max(666),
            WriteCtx {
                replica: calm::lattice::ReplicaId(9),
                stamp: Default::default(),
            },
        )
        .unwrap();
    let envelope = PeerEnvelope {
        from: "127.0.0.1:1".into(),
        membership: Membership::default(),
        replication: ReplicationTable::default(),
        load: Default::default(),
        body: PeerRequest::Deltas(vec![("injected".into(), injected)]),
    };
    let rogue = Client::connect(first, &alice).await.unwrap();
    let why = forbidden(rogue.send(RequestBody::Peer(envelope)).await);
    assert!(
        why.contains("client 'alice'") && why.contains("peer messages"),
        "{why}"
    );

    // A client certificate cannot pass for a node: a server started with one never joins.
    let third: SocketAddr = {
        let p = common::free_base_port(1);
        format!("127.0.0.1:{p}").parse().unwrap()
    };
    let impostor = Command::new(env!("CARGO_BIN_EXE_calm"))
        .args(["server", "--listen", &third.to_string(), "--join"])
        .arg(first.to_string())
        .arg("--data-dir")
        .arg(dir.path().join("impostor"))
        .arg("--cert")
        .arg(&alice.cert.cert)
        .arg("--key")
        .arg(&alice.cert.key)
        .arg("--ca")
        .arg(&alice.ca)
        .args(["--executors", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _impostor = Node(impostor);

    // A node given a node certificate and the CA's certificate alone (as a pod gets them
    // from cert-manager) joins, and makes no CA of its own.
    let pod = dir.path().join("pod");
    let pod_certs = dir.path().join("pod-certs");
    let out = calm(&[
        "ca",
        "issue",
        "--ca",
        ca_dir.to_str().unwrap(),
        "--node",
        "127.0.0.1",
        "--out",
        pod_certs.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fourth: SocketAddr = {
        let p = common::free_base_port(1);
        format!("127.0.0.1:{p}").parse().unwrap()
    };
    let (d, _) = common::server(&[
        "--listen",
        &fourth.to_string(),
        "--join",
        &first.to_string(),
        "--data-dir",
        pod.to_str().unwrap(),
        "--cert",
        pod_certs.join("127.0.0.1.pem").to_str().unwrap(),
        "--key",
        pod_certs.join("127.0.0.1.key").to_str().unwrap(),
        "--ca",
        alice.ca.to_str().unwrap(),
        "--executors",
        "0",
    ]);
    let _d = Node(d);
    common::wait_for("the fourth node alive", Duration::from_secs(20), || async {
        client.members().await.is_ok_and(|m| {
            m.iter().any(|m| {
                m.member.addr == fourth.to_string()
                    && m.member.status == calm::kvs::cluster::Status::Alive
            })
        })
    })
    .await;
    assert!(!pod.join("ca").join("ca.key").exists(), "the pod made a CA");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The history: what was acknowledged is there; nothing refused appeared; the
    // membership is the three real nodes.
    let check = Client::connect(second, &alice).await.unwrap();
    for key in ["anonymous", "other-ca", "injected"] {
        assert_eq!(check.get(key).await.unwrap(), None, "{key} landed");
    }
    match check.get("granted").await.unwrap() {
        Some(ReadValue::Lww { value, .. }) => assert_eq!(value.as_ref(), b"yes"),
        other => panic!("granted read as {other:?}"),
    }
    let members: Vec<String> = check
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.member.addr)
        .collect();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        !members.contains(&third.to_string()) && !members.contains(&"127.0.0.1:1".to_string()),
        "{members:?}"
    );
}

/// A function that reads the key its argument names and returns its value.
const READ_WAT: &str = r#"(module
  (import "calm" "arg_len" (func $arg_len (param i32) (result i32)))
  (import "calm" "arg_read" (func $arg_read (param i32 i32) (result i32)))
  (import "calm" "get" (func $get (param i32 i32) (result i64)))
  (import "calm" "get_read" (func $get_read (param i32)))
  (import "calm" "set_result" (func $set_result (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $kl i32) (local $vl i64)
    (local.set $kl (call $arg_len (i32.const 0)))
    (drop (call $arg_read (i32.const 0) (i32.const 0)))
    (local.set $vl (call $get (i32.const 0) (local.get $kl)))
    (if (i64.lt_s (local.get $vl) (i64.const 0)) (then (return (i32.const 0))))
    (call $get_read (i32.const 4096))
    (call $set_result (i32.const 4096) (i32.wrap_i64 (local.get $vl)))
    (i32.const 0)))"#;

const ACL: &str = r#"
[users.admin]
grants = [{ prefix = "", rights = ["read", "write", "admin", "register", "call"] }]

[users.alice]
password = "alice-pw"
grants = [{ prefix = "a/", rights = ["read", "write"] }, { prefix = "", rights = ["call"] }]

[users.bob]
password = "bob-pw"
grants = [{ prefix = "b/", rights = ["read", "write"] }, { prefix = "", rights = ["call"] }]
"#;

fn denied(result: Result<impl std::fmt::Debug, KvsError>, needle: &str) {
    match result {
        Err(e) => assert!(e.to_string().contains(needle), "{e}"),
        Ok(v) => panic!("expected a refusal containing {needle:?}, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_do_what_the_acl_grants_on_the_native_and_redis_ports_and_in_functions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL).unwrap();
    let port = common::free_base_port(1);
    let resp = common::free_tcp_base_port(1);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (node, _) = common::server(&[
        "--listen",
        &addr.to_string(),
        "--resp",
        &format!("127.0.0.1:{resp}"),
        "--data-dir",
        data.to_str().unwrap(),
        "--acl",
        acl.to_str().unwrap(),
        "--executors",
        "1",
    ]);
    let _node = Node(node);
    let ca_dir = data.join("ca");
    let cluster = data.join("cluster.toml");
    let as_admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--cluster", cluster.to_str().unwrap()]);
        calm(&all)
    };
    let alice = issue_client(&ca_dir, "alice");
    let bob = issue_client(&ca_dir, "bob");
    let as_alice = |args: &[&str]| {
        let mut all = args.to_vec();
        let addr = addr.to_string();
        all.extend(["--addr", &addr, "--ca", alice.ca.to_str().unwrap()]);
        all.extend(["--cert", alice.cert.cert.to_str().unwrap()]);
        calm(&all)
    };

    // Each tenant writes its own keys; neither reads, writes or lists the other's.
    let a = Client::connect(addr, &alice).await.unwrap();
    let b = Client::connect(addr, &bob).await.unwrap();
    b.put("b/secret", "bob's").await.unwrap();
    a.put("a/note", "alice's").await.unwrap();
    denied(
        a.get("b/secret").await,
        "user 'alice' may not read 'b/secret'",
    );
    denied(
        a.put("b/secret", "overwritten").await,
        "may not write 'b/secret'",
    );
    denied(a.put("b/planted", "x").await, "may not write 'b/planted'");
    // A batch with one refused operation runs none of them.
    let results = a
        .execute(vec![Op::put("a/in-batch", "x"), Op::put("b/in-batch", "x")])
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    denied(
        a.set_replication("a/note", Default::default()).await,
        "may not change the replication",
    );
    // The user's connection carries on after a refused operation... (set_replication's
    // refusal closes it: a fresh one).
    let a = Client::connect(addr, &alice).await.unwrap();
    let listed = as_alice(&["kv", "get", "a/note"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "alice's");

    // Functions run with their caller's rights: alice's call of a function that reads
    // bob's key is refused; bob's call of the same function reads it.
    let wat = dir.path().join("read.wat");
    std::fs::write(&wat, READ_WAT).unwrap();
    let out = as_admin(&["fn", "register", "read", wat.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_alice(&["fn", "register", "evil", wat.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("may not register 'evil'"), "{stderr}");
    let out = as_alice(&["fn", "call", "read", "b/secret"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("user 'alice' may not read 'b/secret'"),
        "{stderr}"
    );
    let out = as_alice(&["fn", "call", "read", "a/note"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice's");
    let mut all = vec!["fn", "call", "read", "b/secret"];
    let addr_s = addr.to_string();
    all.extend(["--addr", &addr_s, "--ca", bob.ca.to_str().unwrap()]);
    all.extend(["--cert", bob.cert.cert.to_str().unwrap()]);
    let out = calm(&all);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "bob's",
        "{out:?}"
    );

    // The Redis port: ACL users, the same grants.
    let url = format!("redis://127.0.0.1:{resp}/");
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // Before AUTH the connection is the user `default`, whom the file grants nothing.
    let err = redis::cmd("GET")
        .arg("a/note")
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert!(err.to_string().to_uppercase().contains("NOPERM"), "{err}");
    let err = redis::cmd("AUTH")
        .arg("alice")
        .arg("wrong")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().to_uppercase().contains("WRONGPASS"),
        "{err}"
    );
    let ok: String = redis::cmd("AUTH")
        .arg("alice")
        .arg("alice-pw")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let me: String = redis::cmd("ACL").arg("WHOAMI").query(&mut con).unwrap();
    assert_eq!(me, "alice");
    let got: Option<String> = redis::cmd("GET").arg("a/note").query(&mut con).unwrap();
    assert_eq!(got.as_deref(), Some("alice's"));
    let err = redis::cmd("GET")
        .arg("b/secret")
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("may not read 'b/secret'"), "{err}");
    let err = redis::cmd("SET")
        .arg("b/from-redis")
        .arg("x")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().to_uppercase().contains("NOPERM"), "{err}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(keys.iter().all(|k| k.starts_with("a/")), "{keys:?}");
    assert!(keys.contains(&"a/note".to_string()), "{keys:?}");
    let err = redis::cmd("FLUSHALL")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().to_uppercase().contains("NOPERM"), "{err}");
    let err = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("eve")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("ACL file"), "{err}");
    let users: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut con).unwrap();
    assert!(
        users
            .iter()
            .any(|u| u.starts_with("user alice on") && u.contains("~a/*")),
        "{users:?}"
    );

    // The history: everything acknowledged is there, nothing refused appeared.
    let admin = Client::connect(
        addr,
        &calm::kvs::cluster_file::ClusterFile::read(&cluster)
            .unwrap()
            .credentials()
            .unwrap(),
    )
    .await
    .unwrap();
    for (key, want) in [("b/secret", Some("bob's")), ("a/note", Some("alice's"))] {
        let got = admin.get(key).await.unwrap();
        let got = got.as_ref().and_then(|v| v.as_bytes()).map(|b| b.to_vec());
        assert_eq!(got.as_deref(), want.map(str::as_bytes), "{key}");
    }
    for key in ["b/planted", "a/in-batch", "b/in-batch", "b/from-redis"] {
        assert_eq!(admin.get(key).await.unwrap(), None, "{key} landed");
    }
    drop(a);
}

#[test]
fn redis_cli_speaks_tls_to_a_node_started_with_resp_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_base_port(1);
    let resp = common::free_tcp_base_port(1);
    let (node, _) = common::server(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--resp",
        &format!("127.0.0.1:{resp}"),
        "--resp-tls",
        "--resp-password",
        "pw",
        "--data-dir",
        data.to_str().unwrap(),
        "--executors",
        "0",
    ]);
    let _node = Node(node);
    let ca = data.join("ca").join("ca.pem");
    let cli = |tls: bool, args: &[&str]| {
        let mut cmd = Command::new("redis-cli");
        if tls {
            cmd.arg("--tls").arg("--cacert").arg(&ca);
        }
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &resp.to_string(),
            "--no-auth-warning",
        ])
        .args(["-a", "pw"])
        .args(args)
        .output()
        .expect("redis-cli is installed (scripts/test installs redis-tools)")
    };
    let out = cli(true, &["set", "over-tls", "yes"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let out = cli(true, &["get", "over-tls"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{out:?}"
    );
    // Plain text is not spoken there: no answer comes back.
    let out = cli(false, &["get", "over-tls"]);
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{out:?}"
    );
    // A client that does not trust the cluster CA refuses the node.
    let other = dir.path().join("other");
    assert!(
        calm(&["ca", "init", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(other.join("ca.pem"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &resp.to_string(),
            "get",
            "over-tls",
        ])
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{out:?}"
    );
}

const QUOTA_ACL: &str = r#"
[users.admin]
grants = [{ prefix = "", rights = ["read", "write", "admin", "register", "call"] }]

[users.alice]
password = "alice-pw"
grants = [{ prefix = "a/", rights = ["read", "write"] }]

[[quotas]]
prefix = "a/"
keys = 5
bytes = 300
"#;

/// What node `i` of `up` says the quota of prefix "a/" holds: (keys, bytes).
fn quota_of(up: &common::Up, i: usize) -> Option<(u64, u64)> {
    let status = up.status();
    let node = status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["address"] == up.addrs[i].to_string())?
        .clone();
    let q = node["stats"]["quotas"]
        .as_array()?
        .iter()
        .find(|q| q["prefix"] == "a/")?
        .clone();
    Some((q["keys"].as_u64()?, q["bytes"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_growth_past_a_limit_on_every_node_and_hold_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, QUOTA_ACL).unwrap();
    let base = common::free_base_port(2);
    let up = common::Up::start(
        2,
        &data,
        base,
        &["--acl", acl.to_str().unwrap(), "--restart-after", "1"],
    );
    let alice = issue_client(&data.join("ca"), "alice");
    let a0 = Client::connect(up.addrs[0], &alice).await.unwrap();

    // Five keys fit (two nodes, two replicas: each node holds every key).
    for i in 0..5 {
        a0.put(format!("a/{i}"), format!("v{i}")).await.unwrap();
    }
    let err = a0.put("a/5", "x").await.unwrap_err().to_string();
    assert!(
        err.contains("quota exceeded") && err.contains("\"a/\"") && err.contains("5 keys"),
        "{err}"
    );
    // The other node counted the keys it merged from the first, and refuses too.
    let limit = Duration::from_secs(20);
    common::wait_for("the second node to count five keys", limit, || async {
        quota_of(&up, 1).is_some_and(|(keys, _)| keys == 5)
    })
    .await;
    let a1 = Client::connect(up.addrs[1], &alice).await.unwrap();
    let err = a1.put("a/6", "x").await.unwrap_err().to_string();
    assert!(err.contains("quota exceeded"), "{err}");
    // Changing a key it holds adds no key; bytes still count.
    a1.put("a/0", "w0").await.unwrap();
    let err = a1
        .put("a/1", "y".repeat(400))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bytes") && err.contains("limit of 300"),
        "{err}"
    );

    // The Redis port: OOM, as Redis answers a write that would grow past maxmemory.
    let url = format!("redis://127.0.0.1:{}/", up.resp[1]);
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = redis::cmd("AUTH")
        .arg("alice")
        .arg("alice-pw")
        .query(&mut con)
        .unwrap();
    let err = redis::cmd("SET")
        .arg("a/7")
        .arg("x")
        .query::<String>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("OOM"), "{err}");
    assert!(err.to_string().contains("quota exceeded"), "{err}");
    // Deleting a key makes room again.
    let deleted: i64 = redis::cmd("DEL").arg("a/4").query(&mut con).unwrap();
    assert_eq!(deleted, 1);
    let ok: String = redis::cmd("SET")
        .arg("a/new")
        .arg("n")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(
        info.contains("quota0:prefix=a/,keys=5,max_keys=5,"),
        "{info}"
    );
    // Keys outside the quota's prefix are not limited by it.
    let admin = up.client(0).await;
    for i in 0..10 {
        admin.put(format!("b/{i}"), "free").await.unwrap();
    }

    // kill -9 the first node: restarted, it counts what it recovered from its disk.
    common::wait_for("the first node to count the new key", limit, || async {
        quota_of(&up, 0).is_some_and(|(keys, _)| keys == 5)
    })
    .await;
    let before = quota_of(&up, 0).unwrap();
    let (_, pid) = up.node_status(0);
    assert!(common::signal(pid.unwrap() as u32, "-9"));
    common::wait_for(
        "the first node to come back",
        Duration::from_secs(40),
        || async {
            let (state, new_pid) = up.node_status(0);
            state == "alive" && new_pid.is_some() && new_pid != pid
        },
    )
    .await;
    assert_eq!(quota_of(&up, 0), Some(before), "figures after recovery");
    let a0 = Client::connect(up.addrs[0], &alice).await.unwrap();
    let err = a0.put("a/8", "x").await.unwrap_err().to_string();
    assert!(err.contains("quota exceeded"), "{err}");
    let text = up.calm(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("quota \"a/\": 5 of 5 keys"), "{text}");

    // The history: every acknowledged write is there, nothing refused appeared.
    for (key, want) in [
        ("a/0", Some("w0")),
        ("a/1", Some("v1")),
        ("a/2", Some("v2")),
        ("a/3", Some("v3")),
        ("a/new", Some("n")),
        ("a/4", None),
        ("a/5", None),
        ("a/6", None),
        ("a/7", None),
        ("a/8", None),
        ("b/9", Some("free")),
    ] {
        for i in 0..2 {
            let got = up.client(i).await.get(key).await.unwrap();
            let got = got.as_ref().and_then(|v| v.as_bytes()).map(|b| b.to_vec());
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{key} on node {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_quotas_alone_limits_growth_and_leaves_access_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let quotas = dir.path().join("quotas.toml");
    std::fs::write(&quotas, "[[quotas]]\nprefix = \"\"\nkeys = 3\n").unwrap();
    let port = common::free_base_port(1);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (node, _) = common::server(&[
        "--listen",
        &addr.to_string(),
        "--data-dir",
        data.to_str().unwrap(),
        "--acl",
        quotas.to_str().unwrap(),
    ]);
    let _node = Node(node);
    let creds = calm::kvs::cluster_file::ClusterFile::read(&data.join("cluster.toml"))
        .unwrap()
        .credentials()
        .unwrap();
    let client = Client::connect(addr, &creds).await.unwrap();
    for key in ["x", "y", "z"] {
        client.put(key, "1").await.unwrap();
    }
    let err = client.put("w", "1").await.unwrap_err().to_string();
    assert!(err.contains("quota exceeded"), "{err}");
    assert_eq!(client.get("w").await.unwrap(), None);
    assert!(client.get("z").await.unwrap().is_some());
}
