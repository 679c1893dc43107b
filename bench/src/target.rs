//! What a benchmark runs against: a calm store (embedded, or a cluster through the routing
//! client) or a Redis server, behind one trait.

use std::future::Future;

use bytes::Bytes;
use calm_kvs::{Op, Store, Write};

use crate::workload::{BenchOp, ValueKind, key_name};

/// A store a benchmark drives. Clones share the store; each client of a run has one.
pub trait Target: Clone + Send + Sync + 'static {
    /// Runs one operation.
    fn run(&self, op: BenchOp) -> impl Future<Output = Result<(), String>> + Send;
    /// Writes keys `0..n` before the run.
    fn load(&self, n: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// Any calm [`Store`]: the embedded store, a node's client, the routing cluster client.
#[derive(Clone)]
pub struct CalmTarget<S> {
    store: S,
    kind: ValueKind,
    value: Bytes,
}

impl<S: Store + Clone + Send + Sync + 'static> CalmTarget<S> {
    /// Writes values of `kind`, `value_size` bytes each.
    pub fn new(store: S, kind: ValueKind, value_size: usize) -> Self {
        CalmTarget {
            store,
            kind,
            value: Bytes::from(vec![b'x'; value_size]),
        }
    }

    fn write(&self, key: u64) -> Op {
        Op::Write {
            key: Bytes::from(key_name(key)),
            write: match self.kind {
                ValueKind::Lww => Write::Lww(self.value.clone()),
                ValueKind::Counter => Write::Increment(1),
                ValueKind::Set => Write::OrSetAdd(vec![Bytes::from(format!("m{}", key % 16))]),
            },
        }
    }

    async fn ops(&self, ops: Vec<Op>) -> Result<(), String> {
        let results = self.store.execute(ops).await.map_err(|e| e.to_string())?;
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }
}

impl<S: Store + Clone + Send + Sync + 'static> Target for CalmTarget<S> {
    async fn run(&self, op: BenchOp) -> Result<(), String> {
        let get = |k: u64| Op::Get {
            key: Bytes::from(key_name(k)),
            meta: false,
        };
        match op {
            BenchOp::Read(k) => self.ops(vec![get(k)]).await,
            BenchOp::Update(k) | BenchOp::Insert(k) => self.ops(vec![self.write(k)]).await,
            BenchOp::ReadModifyWrite(k) => {
                self.ops(vec![get(k)]).await?;
                self.ops(vec![self.write(k)]).await
            }
        }
    }

    async fn load(&self, n: u64) -> Result<(), String> {
        let mut start = 0;
        while start < n {
            let end = (start + 1000).min(n);
            self.ops((start..end).map(|k| self.write(k)).collect())
                .await?;
            start = end;
        }
        Ok(())
    }
}

/// A Redis server (or anything that speaks RESP, calm's `--resp` port included).
#[derive(Clone)]
pub struct RedisTarget {
    con: redis::aio::MultiplexedConnection,
    kind: ValueKind,
    value: Bytes,
}

impl RedisTarget {
    /// Connects to `url` (`redis://HOST:PORT`).
    pub async fn connect(url: &str, kind: ValueKind, value_size: usize) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
        let con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(RedisTarget {
            con,
            kind,
            value: Bytes::from(vec![b'x'; value_size]),
        })
    }

    /// Another connection to the same server (each benchmark client has its own).
    pub async fn reconnect(&self, url: &str) -> Result<Self, String> {
        RedisTarget::connect(url, self.kind, self.value.len()).await
    }

    fn write_cmd(&self, key: u64) -> redis::Cmd {
        let name = key_name(key);
        match self.kind {
            ValueKind::Lww => {
                let mut c = redis::cmd("SET");
                c.arg(name).arg(self.value.as_ref());
                c
            }
            ValueKind::Counter => {
                let mut c = redis::cmd("INCR");
                c.arg(name);
                c
            }
            ValueKind::Set => {
                let mut c = redis::cmd("SADD");
                c.arg(name).arg(format!("m{}", key % 16));
                c
            }
        }
    }

    fn read_cmd(&self, key: u64) -> redis::Cmd {
        let mut c = redis::cmd(match self.kind {
            ValueKind::Set => "SMEMBERS",
            _ => "GET",
        });
        c.arg(key_name(key));
        c
    }
}

impl Target for RedisTarget {
    async fn run(&self, op: BenchOp) -> Result<(), String> {
        let mut con = self.con.clone();
        let cmds = match op {
            BenchOp::Read(k) => vec![self.read_cmd(k)],
            BenchOp::Update(k) | BenchOp::Insert(k) => vec![self.write_cmd(k)],
            BenchOp::ReadModifyWrite(k) => vec![self.read_cmd(k), self.write_cmd(k)],
        };
        for c in cmds {
            c.query_async::<redis::Value>(&mut con)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn load(&self, n: u64) -> Result<(), String> {
        let mut con = self.con.clone();
        let mut start = 0;
        while start < n {
            let end = (start + 1000).min(n);
            let mut pipe = redis::pipe();
            for k in start..end {
                pipe.add_command(self.write_cmd(k)).ignore();
            }
            pipe.query_async::<()>(&mut con)
                .await
                .map_err(|e| e.to_string())?;
            start = end;
        }
        Ok(())
    }
}
