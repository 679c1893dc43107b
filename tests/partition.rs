//! End to end: a network partition between real `calm server` processes, made by a UDP
//! fault proxy in front of each node.
//!
//! Node i listens on 127.0.0.(20+i) and is known to the cluster by the proxy's address
//! 127.0.0.(10+i) (`--advertise`); every node talks to its peers from its own address, so
//! the proxy knows who sends each datagram and can drop traffic between the two sides of a
//! partition. Clients reach each node directly. Both sides accept writes while split; after
//! the heal every replica converges, and no acknowledged write is lost. The time to
//! converge is printed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm::kvs::cluster::Status;
use calm::kvs::fault_proxy::{Partition, run_proxy};
use calm::kvs::{Ack, Client, Op, ReadValue, Reply, Write};

const KEYS: usize = 30;

fn real(i: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 20 + i], port))
}

fn advertised(i: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 10 + i], port))
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    for attempt in 0..500u16 {
        let port = 20_000
            + (std::process::id() as u16)
                .wrapping_mul(31)
                .wrapping_add(attempt * 101)
                % 30_000;
        let free = (0..3u8).all(|i| {
            StdUdp::bind(real(i, port)).is_ok() && StdUdp::bind(advertised(i, port)).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no free port");
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i}"))
}

async fn increment_all(client: &Client, by: i64) -> Vec<calm::kvs::OpResult> {
    let ops = (0..KEYS)
        .map(|i| Op::Write {
            key: key(i),
            write: Write::Increment(by),
        })
        .collect();
    client
        .execute_with_ack(ops, Ack::One)
        .await
        .expect("answered")
}

/// Each node's own copy of every key (`None` where it holds none).
async fn local_copies(clients: &[Client]) -> Vec<Vec<Option<i128>>> {
    let mut out = Vec::new();
    for c in clients {
        let ops = (0..KEYS)
            .map(|i| Op::Get {
                key: key(i),
                meta: false,
            })
            .collect();
        let results = c.execute_here(ops).await.expect("local read");
        out.push(
            results
                .into_iter()
                .map(|r| match r {
                    Ok(Reply::Value(Some(ReadValue::Counter { value }))) => Some(value),
                    _ => None,
                })
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_accept_writes_and_converge_after_heal() {
    let port = free_port();
    let node_ips: Vec<IpAddr> = (0..3).map(|i| real(i, port).ip()).collect();
    let cut = Partition::new(node_ips.clone(), vec![node_ips[0]]);
    for i in 0..3u8 {
        let relay = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30 + i));
        tokio::spawn(run_proxy(
            advertised(i, port),
            real(i, port),
            relay,
            cut.clone(),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut nodes = Nodes(Vec::new());
    for i in 0..3u8 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calm"));
        cmd.args(["server", "--threads", "1", "--listen"])
            .arg(real(i, port).to_string())
            .arg("--advertise")
            .arg(advertised(i, port).to_string())
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if i > 0 {
            cmd.arg("--join").arg(advertised(0, port).to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut first).expect("node prints ready");
        assert_eq!(&first, b"ready:");
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        nodes.0.push(child);
    }
    let ca = calm::kvs::cluster_file::ClusterFile::read(&data.join("cluster.toml"))
        .unwrap()
        .credentials()
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(Client::connect(real(i, port), &ca).await.unwrap());
    }
    let all_alive = |members: &[calm::kvs::MemberStatus]| {
        members.len() == 3 && members.iter().all(|m| m.member.status == Status::Alive)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_alive(&clients[0].members().await.unwrap()) {
        assert!(Instant::now() < deadline, "the three nodes did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Before the split: one increment per key, acknowledged by every replica.
    let ops = (0..KEYS)
        .map(|i| Op::Write {
            key: key(i),
            write: Write::Increment(1),
        })
        .collect();
    let r = clients[0].execute_with_ack(ops, Ack::All).await.unwrap();
    assert!(r.iter().all(|r| *r == Ok(Reply::Written)), "{r:?}");

    // Split node 0 from nodes 1 and 2, and wait until each side has noticed (a write sent
    // across in the first instant of a split may time out, and is then reported as
    // possibly applied rather than run twice).
    cut.split();
    let split = Instant::now();
    let sees_split = |members: Vec<calm::kvs::MemberStatus>, other: SocketAddr| {
        members
            .iter()
            .any(|m| m.member.addr == other.to_string() && m.member.status != Status::Alive)
    };
    loop {
        let left = clients[0].members().await.unwrap();
        let left_sees =
            sees_split(left.clone(), advertised(1, port)) && sees_split(left, advertised(2, port));
        let right_sees = sees_split(clients[1].members().await.unwrap(), advertised(0, port));
        if left_sees && right_sees {
            break;
        }
        assert!(
            split.elapsed() < Duration::from_secs(15),
            "the split went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("both sides noticed the split within {:?}", split.elapsed());
    let left = increment_all(&clients[0], 10).await;
    assert!(
        left.iter().all(|r| *r == Ok(Reply::Written)),
        "node 0's side refused writes: {left:?}"
    );
    let right = increment_all(&clients[1], 100).await;
    assert!(
        right.iter().all(|r| *r == Ok(Reply::Written)),
        "the other side refused writes: {right:?}"
    );
    eprintln!("both sides accepted every write");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Heal, and wait until every copy of every key holds all three writes, on at least two
    // nodes (the replication factor).
    cut.heal();
    let healed = Instant::now();
    loop {
        let copies = local_copies(&clients).await;
        let converged = (0..KEYS).all(|k| {
            let held: Vec<i128> = copies.iter().filter_map(|c| c[k]).collect();
            held.len() >= 2 && held.iter().all(|v| *v == 111)
        });
        if converged {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "replicas did not converge within 30 s of the heal: {copies:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "all replicas converged {:?} after the heal",
        healed.elapsed()
    );
    // And every node reads every key as 111.
    for c in &clients {
        let ops = (0..KEYS)
            .map(|i| Op::Get {
                key: key(i),
                meta: false,
            })
            .collect();
        let r = c.execute_with_ack(ops, Ack::One).await.unwrap();
        assert!(
            r.iter()
                .all(|r| *r == Ok(Reply::Value(Some(ReadValue::Counter { value: 111 })))),
            "{r:?}"
        );
    }
}
