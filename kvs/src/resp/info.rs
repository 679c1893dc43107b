//! `INFO`: the node's figures in Redis's sections and field names, so the tools that read
//! them (monitoring agents, `redis-cli --stat`) find what they look for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

use super::commands::REDIS_VERSION;
use crate::cluster::Status;
use crate::cluster_runtime::Cluster;
use crate::metrics::StatsSnapshot;

/// The Redis port's clients: connected now (with what `CLIENT LIST` shows of each), and
/// accepted since the node started.
#[derive(Debug, Default)]
pub(super) struct Clients {
    connected: AtomicU64,
    total: AtomicU64,
    list: Mutex<BTreeMap<u64, Client>>,
}

/// What `CLIENT LIST` shows of a connection.
#[derive(Debug)]
struct Client {
    peer: SocketAddr,
    local: SocketAddr,
    since: Instant,
    last: Instant,
    name: Option<Bytes>,
    proto: u8,
    cmd: String,
}

/// A connection being served: counted and listed until dropped.
pub(super) struct Connected<'a> {
    clients: &'a Clients,
    id: u64,
}

impl Clients {
    /// Counts and lists a connection for as long as the guard lives.
    pub(super) fn connected(&self, id: u64, peer: SocketAddr, local: SocketAddr) -> Connected<'_> {
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.lock().insert(
            id,
            Client {
                peer,
                local,
                since: now,
                last: now,
                name: None,
                proto: 2,
                cmd: String::new(),
            },
        );
        Connected { clients: self, id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Client>> {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a connection's last command (lowercase) and its name and protocol now.
    pub(super) fn touch(&self, id: u64, cmd: &[u8], name: Option<&Bytes>, proto: u8) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.last = Instant::now();
            c.cmd = String::from_utf8_lossy(cmd).to_ascii_lowercase();
            c.name = name.cloned();
            c.proto = proto;
        }
    }

    /// `CLIENT LIST`: a line per connection, with Redis's field names.
    pub(super) fn render_list(&self) -> String {
        let now = Instant::now();
        let mut out = String::new();
        for (id, c) in self.lock().iter() {
            out.push_str(&format!(
                "id={id} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 cmd={} user=default resp={}\n",
                c.peer,
                c.local,
                c.name
                    .as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default(),
                now.duration_since(c.since).as_secs(),
                now.duration_since(c.last).as_secs(),
                if c.cmd.is_empty() { "NULL" } else { &c.cmd },
                c.proto,
            ));
        }
        out
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.clients.connected.fetch_sub(1, Ordering::Relaxed);
        self.clients.lock().remove(&self.id);
    }
}

/// The sections `INFO` prints without arguments (and with `default`), in order.
const DEFAULT: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "stats",
    "replication",
    "cluster",
    "keyspace",
];

/// Renders the sections asked for (none, `default`, `all` or `everything`: every one);
/// unknown sections are left out, as Redis does.
pub(super) fn render(
    asked: &[String],
    s: &StatsSnapshot,
    clients: &Clients,
    cluster: Option<&Cluster>,
) -> String {
    let all = asked.is_empty()
        || asked
            .iter()
            .any(|a| matches!(a.as_str(), "default" | "all" | "everything"));
    let mut out = String::new();
    for section in DEFAULT {
        if !all && !asked.iter().any(|a| a == section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let fields = match section {
            "server" => server(s),
            "clients" => vec![
                field(
                    "connected_clients",
                    clients.connected.load(Ordering::Relaxed),
                ),
                field("blocked_clients", 0),
            ],
            "memory" => memory(s),
            "stats" => stats(s, clients),
            "replication" => vec![field("role", "master"), field("connected_slaves", 0)],
            "cluster" => cluster_section(cluster),
            _ => keyspace(s),
        };
        out.push_str(&format!("# {}\r\n", title(section)));
        for f in fields {
            out.push_str(&f);
            out.push_str("\r\n");
        }
    }
    out
}

fn title(section: &str) -> String {
    let mut t = section.to_string();
    if let Some(first) = t.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    t
}

fn field(name: &str, value: impl std::fmt::Display) -> String {
    format!("{name}:{value}")
}

fn server(s: &StatsSnapshot) -> Vec<String> {
    vec![
        field("redis_version", REDIS_VERSION),
        field("calm_version", env!("CARGO_PKG_VERSION")),
        field("redis_mode", "standalone"),
        field("os", std::env::consts::OS),
        field("arch_bits", usize::BITS),
        field("process_id", s.pid),
        field("uptime_in_seconds", s.uptime_ms / 1000),
        field("uptime_in_days", s.uptime_ms / 86_400_000),
    ]
}

/// `used_memory` is what calm counts for the keys and values its workers hold in memory
/// (each key's bytes, its value's encoding, and its slot in the worker's map), the figure
/// `--memory-budget` holds the memory tier to, with or without a disk. It is not, as in
/// Redis, the allocator's total, which calm does not read (its code is free of `unsafe`).
/// `used_memory_rss` is the process's resident memory.
fn memory(s: &StatsSnapshot) -> Vec<String> {
    let used: u64 = s.workers.iter().map(|w| w.storage.memory_bytes).sum();
    let peak: u64 = s
        .workers
        .iter()
        .map(|w| w.storage.memory_peak_bytes)
        .sum::<u64>()
        .max(used);
    let rss = resident_bytes().unwrap_or(0);
    let ratio = if used > 0 {
        rss as f64 / used as f64
    } else {
        0.0
    };
    vec![
        field("used_memory", used),
        field("used_memory_human", human(used)),
        field("used_memory_rss", rss),
        field("used_memory_rss_human", human(rss)),
        field("used_memory_peak", peak),
        field("used_memory_peak_human", human(peak)),
        field("mem_fragmentation_ratio", format!("{ratio:.2}")),
        field(
            "calm_disk_keys",
            s.workers.iter().map(|w| w.storage.disk_keys).sum::<u64>(),
        ),
    ]
}

fn stats(s: &StatsSnapshot, clients: &Clients) -> Vec<String> {
    let ops: u64 = s.ops.iter().map(|o| o.count).sum();
    vec![
        field(
            "total_connections_received",
            clients.total.load(Ordering::Relaxed),
        ),
        field("total_commands_processed", ops),
        field("total_net_input_bytes", s.bytes_in),
        field("total_net_output_bytes", s.bytes_out),
        field("rejected_connections", 0),
        field(
            "expired_keys",
            s.workers.iter().map(|w| w.expired).sum::<u64>(),
        ),
        field("evicted_keys", 0),
    ]
}

/// Redis's cluster section, with calm's cluster: `cluster_enabled` stays 0, since calm's
/// Redis port is not Redis Cluster (no `MOVED`: any node answers for any key).
fn cluster_section(cluster: Option<&Cluster>) -> Vec<String> {
    let mut out = vec![field("cluster_enabled", 0)];
    if let Some(c) = cluster {
        let view = c.view();
        let alive = view
            .members
            .iter()
            .filter(|m| m.status == Status::Alive)
            .count();
        out.push(field("calm_cluster", "yes"));
        out.push(field("calm_cluster_members", view.members.len()));
        out.push(field("calm_cluster_members_alive", alive));
        out.push(field("calm_cluster_replication", view.replication));
    } else {
        out.push(field("calm_cluster", "no"));
    }
    out
}

fn keyspace(s: &StatsSnapshot) -> Vec<String> {
    let keys: u64 = s.workers.iter().map(|w| w.keys).sum();
    let mut out = vec![field("db0", format!("keys={keys},expires=0,avg_ttl=0"))];
    let limit = |l: Option<u64>| l.map_or("none".to_string(), |l| l.to_string());
    for (i, q) in s.quotas.iter().enumerate() {
        out.push(field(
            &format!("quota{i}"),
            format!(
                "prefix={},keys={},max_keys={},bytes={},max_bytes={}",
                q.prefix,
                q.keys,
                limit(q.max_keys),
                q.bytes,
                limit(q.max_bytes)
            ),
        ));
    }
    out
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", UNITS[unit])
    }
}

/// This process's resident memory, from `/proc/self/statm` (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sections_are_chosen_by_name_and_named_as_redis_does() {
        let s = StatsSnapshot::default();
        let clients = Clients::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let one = clients.connected(7, addr, addr);
        let all = render(&[], &s, &clients, None);
        for header in [
            "# Server",
            "# Clients",
            "# Memory",
            "# Stats",
            "# Replication",
            "# Cluster",
            "# Keyspace",
        ] {
            assert!(all.contains(header), "{header} missing from {all}");
        }
        assert!(all.contains("connected_clients:1\r\n"));
        assert!(clients.render_list().starts_with("id=7 addr=127.0.0.1:1 "));
        drop(one);
        assert_eq!(clients.render_list(), "");
        assert!(all.contains("cluster_enabled:0\r\n"));
        let memory = render(&["memory".into()], &s, &clients, None);
        assert!(
            memory.starts_with("# Memory\r\nused_memory:0\r\n"),
            "{memory}"
        );
        assert!(!memory.contains("# Server"));
        for f in [
            "used_memory_rss:",
            "used_memory_peak:",
            "mem_fragmentation_ratio:",
        ] {
            assert!(memory.contains(f), "{f} missing");
        }
        assert_eq!(render(&["nonsense".into()], &s, &clients, None), "");
        assert_eq!(human(512), "512B");
        assert_eq!(human(3 << 20), "3.00M");
    }
}
