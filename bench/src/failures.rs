//! Acknowledged writes through failures: a history checker for a running cluster.
//!
//! Clients write through random nodes — over the native protocol and over the Redis port
//! — while the caller kills and restarts nodes. Every write is unique and recorded as
//! *acknowledged* (the cluster said it was done) or *uncertain* (an error or a timeout:
//! it may or may not have been applied). Afterwards, once the replicas agree, the checker
//! compares what the cluster holds with that history:
//!
//! - a counter holds at least the sum of its acknowledged increments and at most that plus
//!   its uncertain ones;
//! - a set holds every acknowledged member, and nothing nobody added;
//! - a register holds a value somebody wrote (and one, if any write was acknowledged);
//! - every node answers the same for every key (replicas converged).
//!
//! Anything acknowledged and missing is *lost*: a store that loses acknowledged writes has
//! failed, whatever else it does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calm_kvs::{Ack, Client, ClusterClient, Op, OpResult, ReadValue, Reply, Write};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// The cluster and the load.
#[derive(Clone, Debug)]
pub struct FailuresConfig {
    /// The nodes' native addresses.
    pub nodes: Vec<SocketAddr>,
    /// The nodes' Redis ports on 127.0.0.1 (none: no Redis clients).
    pub resp_ports: Vec<u16>,
    /// The cluster CA's certificate and a client certificate.
    pub ca: calm_kvs::tls::Credentials,
    /// Clients over the native protocol.
    pub native_clients: usize,
    /// Clients over the Redis port.
    pub resp_clients: usize,
    /// Counters, sets and registers written (each as many).
    pub keys: usize,
    /// Acknowledgement asked of native writes.
    pub ack: Ack,
    /// Pause between one client's writes.
    pub pause: Duration,
    /// A prefix that makes this run's keys its own.
    pub prefix: String,
    /// Seed of the clients' choices (nodes, keys).
    pub seed: u64,
}

/// What one client wrote: per key, the acknowledged and the uncertain writes.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Per counter: increments acknowledged, increments uncertain.
    pub counters: BTreeMap<String, (i128, i128)>,
    /// Per set: members acknowledged, members uncertain.
    pub sets: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Per register: values acknowledged, values uncertain.
    pub registers: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Writes acknowledged.
    pub acked: u64,
    /// Writes that failed or timed out (maybe applied).
    pub uncertain: u64,
}

impl History {
    fn absorb(&mut self, other: History) {
        for (k, (a, u)) in other.counters {
            let e = self.counters.entry(k).or_default();
            e.0 += a;
            e.1 += u;
        }
        for (k, (a, u)) in other.sets {
            let e = self.sets.entry(k).or_default();
            e.0.extend(a);
            e.1.extend(u);
        }
        for (k, (a, u)) in other.registers {
            let e = self.registers.entry(k).or_default();
            e.0.extend(a);
            e.1.extend(u);
        }
        self.acked += other.acked;
        self.uncertain += other.uncertain;
    }
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailuresReport {
    /// Writes acknowledged.
    pub acked: u64,
    /// Writes that failed or timed out (maybe applied).
    pub uncertain: u64,
    /// Acknowledged set members missing.
    pub lost_members: u64,
    /// Counters below their acknowledged sum, and by how much in all.
    pub counters_below: u64,
    /// The sum of what those counters lack.
    pub counters_short_by: i128,
    /// Counters above acknowledged plus uncertain (counted twice, or never written).
    pub counters_above: u64,
    /// Registers with no value although a write was acknowledged.
    pub lost_registers: u64,
    /// Members or values nobody wrote.
    pub unwritten: u64,
    /// Keys whose nodes still answered differently at the end.
    pub diverged: u64,
    /// Keys whose owners still held different copies at the end (`u64::MAX`: not known,
    /// the nodes' answers differed or an owner did not answer).
    pub unequal_replicas: u64,
    /// Time from the end of the load until every node answered alike, milliseconds.
    pub converge_ms: u64,
    /// A few of the problems, for the report.
    pub examples: Vec<String>,
}

impl FailuresReport {
    /// Whether anything acknowledged was lost, or anything unwritten appeared.
    pub fn lost_anything(&self) -> bool {
        self.lost_members + self.counters_below + self.lost_registers + self.unwritten > 0
            || self.counters_above > 0
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 20 {
            self.examples.push(text);
        }
    }
}

/// Runs the clients until `stop` is set; returns what they wrote.
pub async fn run_load(config: &FailuresConfig, stop: Arc<AtomicBool>) -> History {
    let mut tasks = Vec::new();
    for c in 0..config.native_clients {
        let (config, stop) = (config.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            native_client(&config, c, stop).await
        }));
    }
    if !config.resp_ports.is_empty() {
        for c in 0..config.resp_clients {
            let (config, stop) = (config.clone(), stop.clone());
            let id = config.native_clients + c;
            tasks.push(tokio::spawn(
                async move { resp_client(&config, id, stop).await },
            ));
        }
    }
    let mut history = History::default();
    for t in tasks {
        if let Ok(h) = t.await {
            history.absorb(h);
        }
    }
    history
}

/// A connection to one node, given up after `timeout`.
async fn connect(
    addr: SocketAddr,
    config: &FailuresConfig,
    timeout: Duration,
) -> Result<Client, calm_kvs::KvsError> {
    let tls = calm_kvs::tls::client_config(&config.ca)?;
    Client::connect_within(addr, tls, timeout).await
}

/// One write: a counter increment, a set member or a register value, all unique.
enum Planned {
    Incr(String),
    Add(String, String),
    Set(String, String),
}

fn plan(config: &FailuresConfig, rng: &mut StdRng, client: usize, n: u64) -> Planned {
    let k = rng.random_range(0..config.keys.max(1));
    let unique = format!("c{client}-{n}");
    match rng.random_range(0..3) {
        0 => Planned::Incr(format!("{}/counter/{k}", config.prefix)),
        1 => Planned::Add(format!("{}/set/{k}", config.prefix), unique),
        _ => Planned::Set(format!("{}/register/{k}", config.prefix), unique),
    }
}

fn record(history: &mut History, planned: Planned, acked: bool) {
    if acked {
        history.acked += 1;
    } else {
        history.uncertain += 1;
    }
    let slot = usize::from(!acked);
    match planned {
        Planned::Incr(key) => {
            let e = history.counters.entry(key).or_default();
            if acked { e.0 += 1 } else { e.1 += 1 }
        }
        Planned::Add(key, member) => {
            let e = history.sets.entry(key).or_default();
            [&mut e.0, &mut e.1][slot].insert(member);
        }
        Planned::Set(key, value) => {
            let e = history.registers.entry(key).or_default();
            [&mut e.0, &mut e.1][slot].insert(value);
        }
    }
}

async fn native_client(config: &FailuresConfig, id: usize, stop: Arc<AtomicBool>) -> History {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (id as u64).wrapping_mul(0x9e37_79b9));
    let mut clients: BTreeMap<SocketAddr, Client> = BTreeMap::new();
    let mut history = History::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let addr = config.nodes[rng.random_range(0..config.nodes.len())];
        if clients.get(&addr).is_none_or(|c| c.is_closed()) {
            match connect(addr, config, Duration::from_secs(1)).await {
                Ok(c) => {
                    clients.insert(addr, c);
                }
                Err(_) => {
                    // Down (killed): nothing was sent.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(client) = clients.get(&addr) else {
            continue;
        };
        n += 1;
        let planned = plan(config, &mut rng, id, n);
        let op = match &planned {
            Planned::Incr(key) => Op::Write {
                key: Bytes::from(key.clone()),
                write: Write::Increment(1),
            },
            Planned::Add(key, member) => Op::Write {
                key: Bytes::from(key.clone()),
                write: Write::OrSetAdd(vec![Bytes::from(member.clone())]),
            },
            Planned::Set(key, value) => Op::Write {
                key: Bytes::from(key.clone()),
                write: Write::Lww(Bytes::from(value.clone())),
            },
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.execute_with_ack(vec![op], config.ack),
        )
        .await;
        let acked = matches!(&answer, Ok(Ok(r)) if r.first() == Some(&Ok(Reply::Written)));
        if !matches!(answer, Ok(Ok(_))) {
            clients.remove(&addr);
        }
        record(&mut history, planned, acked);
        tokio::time::sleep(config.pause).await;
    }
    history
}

async fn resp_client(config: &FailuresConfig, id: usize, stop: Arc<AtomicBool>) -> History {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (id as u64).wrapping_mul(0x9e37_79b9));
    let mut conns: BTreeMap<u16, redis::aio::MultiplexedConnection> = BTreeMap::new();
    let mut history = History::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let port = config.resp_ports[rng.random_range(0..config.resp_ports.len())];
        let con = match conns.entry(port) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let url = format!("redis://127.0.0.1:{port}/");
                let connected = match redis::Client::open(url) {
                    Ok(c) => tokio::time::timeout(
                        Duration::from_secs(1),
                        c.get_multiplexed_async_connection(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok),
                    Err(_) => None,
                };
                match connected {
                    Some(c) => e.insert(c),
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        n += 1;
        let planned = plan(config, &mut rng, id, n);
        let cmd = match &planned {
            Planned::Incr(key) => redis::cmd("INCRBY").arg(key).arg(1).clone(),
            Planned::Add(key, member) => redis::cmd("SADD").arg(key).arg(member).clone(),
            Planned::Set(key, value) => redis::cmd("SET").arg(key).arg(value).clone(),
        };
        let answer =
            tokio::time::timeout(Duration::from_secs(5), cmd.query_async::<redis::Value>(con))
                .await;
        let acked = match &answer {
            Ok(Ok(v)) => !matches!(v, redis::Value::ServerError(_)),
            _ => false,
        };
        if !matches!(answer, Ok(Ok(_))) {
            conns.remove(&port);
        }
        record(&mut history, planned, acked);
        tokio::time::sleep(config.pause).await;
    }
    history
}

/// How many keys have owners holding different copies (or owners that did not answer).
async fn unequal_replicas(config: &FailuresConfig, keys: &[String]) -> Result<u64, String> {
    let cluster = ClusterClient::connect(config.nodes.clone(), &config.ca)
        .await
        .map_err(|e| e.to_string())?;
    cluster.refresh().await.map_err(|e| e.to_string())?;
    let mut clients: BTreeMap<SocketAddr, Client> = BTreeMap::new();
    let mut unequal = 0;
    for key in keys {
        let owners = cluster
            .owners(key.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut copies = Vec::new();
        for owner in owners {
            if let std::collections::btree_map::Entry::Vacant(e) = clients.entry(owner) {
                let c = connect(owner, config, Duration::from_secs(2))
                    .await
                    .map_err(|e| e.to_string())?;
                e.insert(c);
            }
            let op = Op::Raw {
                key: Bytes::from(key.clone()),
            };
            let copy = match clients[&owner].execute_here(vec![op]).await {
                Ok(mut r) => match r.pop() {
                    Some(Ok(Reply::Raw(v))) => Some(v),
                    _ => None,
                },
                Err(_) => None,
            };
            copies.push(copy);
        }
        if copies.iter().any(|c| c.is_none() || *c != copies[0]) {
            unequal += 1;
        }
    }
    Ok(unequal)
}

/// Each key's value as every node answers a read of it (`None` per node that did not
/// answer).
async fn read_everywhere(
    config: &FailuresConfig,
    keys: &[String],
) -> Vec<Vec<Option<Option<ReadValue>>>> {
    let mut per_node = Vec::new();
    for addr in &config.nodes {
        let client = connect(*addr, config, Duration::from_secs(2)).await.ok();
        let mut answers = Vec::new();
        for chunk in keys.chunks(100) {
            let ops = chunk
                .iter()
                .map(|k| Op::Get {
                    key: Bytes::from(k.clone()),
                    meta: false,
                })
                .collect();
            let got: Option<Vec<OpResult>> = match &client {
                Some(c) => c.execute_with_ack(ops, Ack::One).await.ok(),
                None => None,
            };
            match got {
                Some(results) => answers.extend(results.into_iter().map(|r| match r {
                    Ok(Reply::Value(v)) => Some(v),
                    _ => None,
                })),
                None => answers.extend(chunk.iter().map(|_| None)),
            }
        }
        per_node.push(answers);
    }
    (0..keys.len())
        .map(|i| per_node.iter().map(|answers| answers[i].clone()).collect())
        .collect()
}

/// Waits (at most `converge_within`) until every node answers alike for every key the
/// history names, then checks what they answer against it.
pub async fn check(
    config: &FailuresConfig,
    history: &History,
    converge_within: Duration,
) -> FailuresReport {
    let keys: Vec<String> = history
        .counters
        .keys()
        .chain(history.sets.keys())
        .chain(history.registers.keys())
        .cloned()
        .collect();
    let started = Instant::now();
    let mut answers;
    let mut unequal;
    loop {
        answers = read_everywhere(config, &keys).await;
        let agreed = answers
            .iter()
            .all(|per_node| per_node.iter().all(|a| a.is_some() && *a == per_node[0]));
        unequal = if agreed {
            unequal_replicas(config, &keys).await.unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        if unequal == 0 || started.elapsed() > converge_within {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut report = FailuresReport {
        acked: history.acked,
        uncertain: history.uncertain,
        converge_ms: started.elapsed().as_millis() as u64,
        unequal_replicas: unequal,
        ..FailuresReport::default()
    };
    for (key, per_node) in keys.iter().zip(&answers) {
        let first = per_node.iter().flatten().next().cloned().flatten();
        if !per_node.iter().all(|a| a.is_some() && *a == per_node[0]) {
            report.diverged += 1;
            report.example(format!("{key}: nodes answered {per_node:?}"));
        }
        if let Some((acked, uncertain)) = history.counters.get(key) {
            let value = match &first {
                Some(ReadValue::Counter { value }) => *value,
                _ => 0,
            };
            if value < *acked {
                report.counters_below += 1;
                report.counters_short_by += acked - value;
                report.example(format!("{key}: {value}, acknowledged {acked}"));
            } else if value > acked + uncertain {
                report.counters_above += 1;
                report.example(format!("{key}: {value}, at most {}", acked + uncertain));
            }
        }
        if let Some((acked, uncertain)) = history.sets.get(key) {
            let members: BTreeSet<String> = match &first {
                Some(ReadValue::OrSet { members }) => members
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect(),
                _ => BTreeSet::new(),
            };
            let lost: Vec<&String> = acked.difference(&members).collect();
            if !lost.is_empty() {
                report.lost_members += lost.len() as u64;
                report.example(format!("{key}: lost {lost:?}"));
            }
            for m in &members {
                if !acked.contains(m) && !uncertain.contains(m) {
                    report.unwritten += 1;
                    report.example(format!("{key}: {m} was never written"));
                }
            }
        }
        if let Some((acked, uncertain)) = history.registers.get(key) {
            match &first {
                Some(ReadValue::Lww { value, .. }) => {
                    let v = String::from_utf8_lossy(value).into_owned();
                    if !acked.contains(&v) && !uncertain.contains(&v) {
                        report.unwritten += 1;
                        report.example(format!("{key}: {v} was never written"));
                    }
                }
                _ if !acked.is_empty() => {
                    report.lost_registers += 1;
                    report.example(format!(
                        "{key}: no value, {} writes acknowledged",
                        acked.len()
                    ));
                }
                _ => {}
            }
        }
    }
    report
}
