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
use calm::kvs::protocol::{ProtocolError, RequestBody, Route};
use calm::kvs::tls::{self, Credentials};
use calm::kvs::value::WriteCtx;
use calm::kvs::{Ack, Client, Kind, KvsError, Op, ReadValue, Store, Value, Write};

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
    // Nor may it send a batch as if a node had routed it.
    let rogue = Client::connect(first, &alice).await.unwrap();
    let why = forbidden(
        rogue
            .send(RequestBody::Batch {
                ops: vec![Op::Write {
                    key: "forwarded".into(),
                    write: Write::Lww("no".into()),
                }],
                ack: Ack::One,
                route: Route::Forwarded,
            })
            .await,
    );
    assert!(why.contains("forwarded"), "{why}");

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
    for key in ["anonymous", "other-ca", "injected", "forwarded"] {
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
