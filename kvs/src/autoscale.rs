//! Node elasticity: the controller that turns the policy's node decisions into nodes, and
//! the provisioners that make and remove them.
//!
//! Every node with `--autoscale` samples its own load and gossips it in a
//! [`LoadTable`](crate::policy::LoadTable) lattice, so any node holds the cluster's picture.
//! A [`Controller`] reads that picture from any node, runs the [`Policy`]'s node part on it
//! (hot keys are the nodes' own part) and asks its [`Provisioner`] for a node more or one
//! fewer: `calm up --autoscale` acts through a local provisioner that starts and stops
//! `calm server` processes, `calm autoscaler` through the [`KubernetesProvisioner`], which
//! scales a StatefulSet through the Kubernetes API, and [`RecordingProvisioner`] records
//! what it was asked (for tests).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::policy::{Decision, NodeSample, Policy, PolicyConfig};

/// The cluster as one node sees it: the fresh load samples of the members alive, and how
/// many members there are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Picture {
    /// The latest sample of each alive member, if fresh.
    pub samples: Vec<NodeSample>,
    /// Members alive.
    pub alive: usize,
    /// Members that own keys (alive or suspected).
    pub members: usize,
}

/// Milliseconds since the Unix epoch (the clock load samples are stamped with).
pub use crate::tasks::now_ms;

/// Asks the node behind `client` for the cluster's picture (nodes gossip their samples to
/// each other: any node has all of them); samples older than `max_age_ms` are left out.
pub async fn picture(client: &crate::Client, max_age_ms: u64) -> Result<Picture, crate::KvsError> {
    let stats = crate::Store::stats(client).await?;
    let members = client.members().await?;
    let alive: Vec<String> = members
        .iter()
        .filter(|m| m.member.status == crate::cluster::Status::Alive)
        .map(|m| m.member.addr.clone())
        .collect();
    Ok(Picture {
        samples: stats.cluster_load.fresh(now_ms(), max_age_ms, &alive),
        alive: alive.len(),
        members: members
            .iter()
            .filter(|m| m.member.status.owns_keys())
            .count(),
    })
}

/// Makes and removes nodes.
pub trait Provisioner: Send {
    /// Adds a node; says which (or what was asked for).
    fn add_node(&mut self) -> Result<String, String>;
    /// Removes `node` (gracefully: it leaves the cluster first). A provisioner that cannot
    /// choose which node goes (a StatefulSet removes its last pod) says which went.
    fn remove_node(&mut self, node: &str) -> Result<String, String>;
}

/// A provisioner that only records what it was asked, for tests.
#[derive(Debug, Default)]
pub struct RecordingProvisioner {
    /// `add` and `remove NODE`, in order.
    pub asked: Vec<String>,
    /// Nodes it pretends to run.
    pub nodes: usize,
}

impl Provisioner for RecordingProvisioner {
    fn add_node(&mut self) -> Result<String, String> {
        self.nodes += 1;
        self.asked.push("add".into());
        Ok(format!("node-{}", self.nodes))
    }

    fn remove_node(&mut self, node: &str) -> Result<String, String> {
        self.nodes = self.nodes.saturating_sub(1);
        self.asked.push(format!("remove {node}"));
        Ok(node.to_string())
    }
}

/// The policy's node part. Call [`step`](Self::step) every period with the cluster's
/// fresh samples and the provisioner to act through.
pub struct Controller {
    policy: Policy,
    log: VecDeque<String>,
    /// After adding or removing a node: how many nodes the cluster should show, and since
    /// when. No other node decision is acted on until it does (or a minute passed).
    expecting: Option<(usize, u64)>,
}

/// How long the controller waits for a node it added or removed to show in the membership.
const SETTLE_MS: u64 = 60_000;

impl Controller {
    /// A controller deciding nodes with `config` (its hot-key part is left to the nodes).
    pub fn new(config: PolicyConfig) -> Controller {
        Controller {
            policy: Policy::new(PolicyConfig {
                decide_keys: false,
                decide_nodes: true,
                ..config
            }),
            log: VecDeque::new(),
            expecting: None,
        }
    }

    /// Decides at `now_ms` from `samples` of a cluster of `nodes` members and acts through
    /// `provisioner`; returns what it did, one line each (also kept: see
    /// [`log`](Self::log)).
    pub fn step(
        &mut self,
        now_ms: u64,
        samples: &[NodeSample],
        nodes: usize,
        provisioner: &mut dyn Provisioner,
    ) -> Vec<String> {
        let mut done = Vec::new();
        self.policy.set_cluster_size(nodes);
        let size = nodes.max(samples.len());
        if let Some((want, since)) = self.expecting
            && (size == want || now_ms.saturating_sub(since) > SETTLE_MS)
        {
            self.expecting = None;
        }
        for decision in self.policy.tick(now_ms, samples) {
            let line = match decision {
                // The last change has not shown yet: it may be the answer to this load too.
                Decision::AddNode { .. } | Decision::RemoveNode { .. }
                    if self.expecting.is_some() =>
                {
                    continue;
                }
                Decision::AddNode { reason } => match provisioner.add_node() {
                    Ok(node) => {
                        self.expecting = Some((size + 1, now_ms));
                        format!("added {node}: {reason}")
                    }
                    Err(e) => format!("could not add a node ({e}): {reason}"),
                },
                Decision::RemoveNode { node, reason } => match provisioner.remove_node(&node) {
                    Ok(gone) => {
                        self.expecting = Some((size.saturating_sub(1), now_ms));
                        format!("removed {gone}: {reason}")
                    }
                    Err(e) => format!("could not remove {node} ({e}): {reason}"),
                },
                Decision::Replicate { .. }
                | Decision::ReplicateLocally { .. }
                | Decision::Restore { .. } => continue,
            };
            if self.log.len() == 20 {
                self.log.pop_front();
            }
            self.log.push_back(line.clone());
            done.push(line);
        }
        done
    }

    /// The latest actions, oldest first.
    pub fn log(&self) -> impl Iterator<Item = &String> {
        self.log.iter()
    }
}

/// Scales a StatefulSet through the Kubernetes API (`PATCH .../statefulsets/NAME/scale`).
/// Kubernetes removes the highest-numbered pod when scaling down, whichever node the policy
/// named; the pod's SIGTERM makes its `calm server` leave the cluster first.
///
/// It speaks plain HTTP/1.1 to `api`: run it next to `kubectl proxy` (which adds the
/// credentials and TLS), as the manifests in `deploy/k8s/` do.
#[derive(Clone, Debug)]
pub struct KubernetesProvisioner {
    /// Where the API is served (`kubectl proxy`: 127.0.0.1:8001).
    pub api: SocketAddr,
    /// The namespace.
    pub namespace: String,
    /// The StatefulSet.
    pub statefulset: String,
    /// Never more replicas.
    pub max_replicas: u32,
    /// Never fewer replicas.
    pub min_replicas: u32,
}

impl KubernetesProvisioner {
    fn path(&self) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/statefulsets/{}/scale",
            self.namespace, self.statefulset
        )
    }

    fn request(&self, method: &str, body: Option<&str>) -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&self.api, Duration::from_secs(5))
            .map_err(|e| format!("cannot reach the Kubernetes API at {}: {e}", self.api))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path(),
            self.api,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .map_err(|e| format!("Kubernetes API: {e}"))?;
        let mut answer = Vec::new();
        stream
            .take(1 << 20)
            .read_to_end(&mut answer)
            .map_err(|e| format!("Kubernetes API: {e}"))?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or("Kubernetes API: not an HTTP answer")?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(format!(
                "Kubernetes API answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        Ok(body)
    }

    /// The StatefulSet's replicas now.
    pub fn replicas(&self) -> Result<u32, String> {
        let body = self.request("GET", None)?;
        let doc: serde_json::Value = serde_json::from_str(body.trim())
            .map_err(|e| format!("Kubernetes API: unreadable scale ({e})"))?;
        doc["spec"]["replicas"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| "Kubernetes API: the scale has no spec.replicas".to_string())
    }

    fn scale_to(&self, replicas: u32) -> Result<(), String> {
        let body = format!("{{\"spec\":{{\"replicas\":{replicas}}}}}");
        self.request("PATCH", Some(&body)).map(|_| ())
    }
}

impl Provisioner for KubernetesProvisioner {
    fn add_node(&mut self) -> Result<String, String> {
        let now = self.replicas()?;
        if now >= self.max_replicas {
            return Err(format!("already {now} replicas, the most allowed"));
        }
        self.scale_to(now + 1)?;
        Ok(format!("{}-{now}", self.statefulset))
    }

    fn remove_node(&mut self, _node: &str) -> Result<String, String> {
        let now = self.replicas()?;
        if now <= self.min_replicas {
            return Err(format!("only {now} replicas, the fewest allowed"));
        }
        self.scale_to(now - 1)?;
        Ok(format!("{}-{}", self.statefulset, now - 1))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn sample(node: &str, occupancy: f64, p99_us: u64) -> NodeSample {
        NodeSample {
            node: node.into(),
            occupancy,
            p99_us,
            ops: 0,
            cpu: 0.0,
            hot_keys: Vec::new(),
        }
    }

    #[test]
    fn a_load_spike_adds_a_node_and_its_end_removes_one() {
        let config = PolicyConfig {
            sustain_ms: 2_000,
            grace_ms: 5_000,
            ..PolicyConfig::default()
        };
        let mut c = Controller::new(config);
        let mut p = RecordingProvisioner::default();
        let mut t = 0;
        // Overloaded: p99 over the target with busy workers, sustained.
        while p.asked.is_empty() {
            t += 1_000;
            c.step(t, &[sample("a", 0.95, 50_000)], 1, &mut p);
            assert!(t < 10_000, "no node added");
        }
        assert_eq!(p.asked, vec!["add"]);
        assert_eq!(t, 3_000, "after the condition held for sustain_ms");
        // Still overloaded within the grace period: nothing more.
        for _ in 0..4 {
            t += 1_000;
            c.step(
                t,
                &[sample("a", 0.95, 50_000), sample("b", 0.9, 50_000)],
                2,
                &mut p,
            );
        }
        assert_eq!(p.asked.len(), 1, "no flapping within the grace period");
        // The spike ends: idle for long enough, the least busy node goes.
        while p.asked.len() < 2 {
            t += 1_000;
            c.step(
                t,
                &[sample("a", 0.05, 100), sample("b", 0.01, 100)],
                2,
                &mut p,
            );
            assert!(t < 30_000, "no node removed");
        }
        assert_eq!(p.asked[1], "remove b");
        assert!(c.log().any(|l| l.starts_with("removed b")));
        // Hot keys are not the controller's business.
        let hot = NodeSample {
            hot_keys: (0..10)
                .map(|i| crate::hot_keys::HotKey {
                    key: bytes::Bytes::from(format!("k{i}")),
                    count: if i == 0 { 10_000 } else { 10 },
                })
                .collect(),
            ..sample("a", 0.5, 100)
        };
        assert!(c.step(t + 100_000, &[hot], 1, &mut p).is_empty());
    }

    /// A one-request HTTP server that answers `reply` and hands back the request it read.
    fn fake_api(reply: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            s.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (addr, handle)
    }

    #[test]
    fn the_kubernetes_provisioner_reads_and_patches_the_scale() {
        let k = |api| KubernetesProvisioner {
            api,
            namespace: "calm".into(),
            statefulset: "calm".into(),
            max_replicas: 5,
            min_replicas: 1,
        };
        let (api, seen) = fake_api(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"spec\":{\"replicas\":3}}",
        );
        assert_eq!(k(api).replicas(), Ok(3));
        let req = seen.join().unwrap();
        assert!(
            req.starts_with("GET /apis/apps/v1/namespaces/calm/statefulsets/calm/scale HTTP/1.1"),
            "{req}"
        );
        let (api, seen) = fake_api("HTTP/1.1 200 OK\r\n\r\n{}");
        k(api).scale_to(4).unwrap();
        let req = seen.join().unwrap();
        assert!(req.starts_with("PATCH /apis/apps/v1/namespaces/calm/statefulsets/calm/scale"));
        assert!(req.contains("Content-Type: application/merge-patch+json"));
        assert!(req.ends_with("{\"spec\":{\"replicas\":4}}"), "{req}");
        let (api, _) = fake_api("HTTP/1.1 403 Forbidden\r\n\r\nstatefulsets.apps is forbidden");
        let err = k(api).replicas().unwrap_err();
        assert!(err.contains("403") && err.contains("forbidden"), "{err}");
        // Bounds are kept without asking to scale.
        let (api, _) = fake_api("HTTP/1.1 200 OK\r\n\r\n{\"spec\":{\"replicas\":5}}");
        assert!(k(api).add_node().unwrap_err().contains("most allowed"));
    }
}
