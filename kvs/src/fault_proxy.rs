//! A UDP fault proxy for partition tests and experiments on one machine.
//!
//! Each node listens on its own loopback address and is known to the cluster by the proxy's
//! address in front of it (`--advertise`); nodes talk to their peers from their own
//! address, so the proxy knows which node sent each datagram. A [`Partition`] decides which
//! datagrams cross.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;

/// Which traffic is cut: while `on`, datagrams between a node of `side_a` and a node not in
/// it are dropped. Traffic from addresses that are not nodes (clients) always passes.
#[derive(Debug)]
pub struct Partition {
    on: AtomicBool,
    side_a: Vec<IpAddr>,
    nodes: Vec<IpAddr>,
}

impl Partition {
    /// A partition of `nodes` (their own IPs) separating `side_a` from the rest; initially
    /// healed.
    pub fn new(nodes: Vec<IpAddr>, side_a: Vec<IpAddr>) -> Arc<Partition> {
        Arc::new(Partition {
            on: AtomicBool::new(false),
            side_a,
            nodes,
        })
    }

    /// Cuts the network between the two sides.
    pub fn split(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// Heals it.
    pub fn heal(&self) {
        self.on.store(false, Ordering::Relaxed);
    }

    fn blocks(&self, from: IpAddr, to: IpAddr) -> bool {
        self.on.load(Ordering::Relaxed)
            && self.nodes.contains(&from)
            && self.side_a.contains(&from) != self.side_a.contains(&to)
    }
}

/// Relays datagrams arriving at `front` to the node at `node`, and its answers back,
/// dropping what `partition` cuts. `relay_ip` is the local address used towards the node.
/// Runs until the task is dropped.
pub async fn run_proxy(
    front: SocketAddr,
    node: SocketAddr,
    relay_ip: IpAddr,
    partition: Arc<Partition>,
) -> std::io::Result<()> {
    let front = Arc::new(UdpSocket::bind(front).await?);
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = front.recv_from(&mut buf).await?;
        if partition.blocks(src.ip(), node.ip()) {
            continue;
        }
        let back = match backs.get(&src) {
            Some(b) => b.clone(),
            None => {
                let b = Arc::new(UdpSocket::bind((relay_ip, 0)).await?);
                b.connect(node).await?;
                let (b2, front2, cut) = (b.clone(), front.clone(), partition.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = b2.recv(&mut buf).await {
                        if !cut.blocks(node.ip(), src.ip()) {
                            let _ = front2.send_to(&buf[..n], src).await;
                        }
                    }
                });
                backs.insert(src, b.clone());
                b
            }
        };
        let _ = back.send(&buf[..n]).await;
    }
}
