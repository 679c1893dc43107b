//! `calm kv`: read and write keys.

use std::io::Write as _;
use std::process::ExitCode;

use bytes::Bytes;
use calm_kvs::{Ack, Op, ReadValue, Reply, Store, Write};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use super::CliResult;
use super::target::Target;

/// Read and write keys.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    target: Target,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// For writes: how many replicas must merge the write before it is acknowledged —
    /// `one` (fast), `all`, or a number.
    #[arg(long, global = true, default_value = "one", value_parser = parse_ack)]
    ack: Ack,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Write a value: last-writer-wins bytes (default), a max integer, a priority, or a
    /// causal (multi-value) register.
    Put {
        /// The key.
        key: String,
        /// The value (an integer for --type max).
        value: String,
        /// The kind of value; fixed by the key's first write.
        #[arg(long = "type", value_enum, default_value_t = PutKind::Lww)]
        kind: PutKind,
        /// The priority, with --type priority: the lowest wins.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i64>,
    },
    /// Print a key's value (a set prints one member a line, a hash one field a line: its
    /// name, a tab, its value; a sorted set one member a line by score: the member, a tab,
    /// its score). Exit status 2 if not found.
    Get {
        /// The key.
        key: String,
        /// `one`: read the first replica that answers; `all`: merge every replica's value.
        #[arg(long, default_value = "one", value_parser = ["one", "all"])]
        read: String,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// Add members to a set.
    Add {
        /// The key.
        key: String,
        /// The members to add.
        #[arg(required = true)]
        members: Vec<String>,
        /// A grow-only set, or an add-wins set with removal.
        #[arg(long = "type", value_enum, default_value_t = SetKind::Orset)]
        kind: SetKind,
    },
    /// Remove members from an add-wins set.
    Rem {
        /// The key.
        key: String,
        /// The members to remove.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add to a counter (default 1) and print its new value.
    Incr {
        /// The key.
        key: String,
        /// How much to add.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
    /// Give a key its own number of replicas across the cluster (a hot key, a precious
    /// one), or `default` to go back to the cluster's default.
    Replicate {
        /// The key.
        key: String,
        /// The number of nodes that hold the key, or `default`.
        factor: String,
        /// The number of storage workers that hold it within each of those nodes, or
        /// `default`.
        #[arg(long, default_value = "default")]
        local: String,
    },
    /// Subtract from a counter (default 1) and print its new value.
    Decr {
        /// The key.
        key: String,
        /// How much to subtract.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum PutKind {
    /// Last-writer-wins bytes.
    Lww,
    /// An integer that only grows.
    Max,
    /// A value with a priority; the lowest priority wins.
    Priority,
    /// A multi-value register: concurrent writes are all kept.
    Causal,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SetKind {
    /// Grow-only set.
    Set,
    /// Add-wins set with removal.
    Orset,
}

fn parse_ack(s: &str) -> Result<Ack, String> {
    match s {
        "one" => Ok(Ack::One),
        "all" => Ok(Ack::All),
        n => n
            .parse::<u8>()
            .ok()
            .filter(|k| *k >= 1)
            .map(Ack::Replicas)
            .ok_or_else(|| format!("'{n}' is not one, all, or a number of replicas")),
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn members(ms: &[String]) -> Vec<Bytes> {
    ms.iter().map(|m| bytes(m)).collect()
}

/// Bytes as JSON: a string when they are UTF-8, else `{"hex": "..."}`.
fn bytes_json(b: &Bytes) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => json!({ "hex": hex(b) }),
    }
}

fn read_json(key: &str, value: &ReadValue) -> Json {
    let mut doc = json!({ "key": key, "found": true, "type": value.kind().name() });
    let extra = match value {
        ReadValue::Lww { value, stamp } => json!({
            "value": bytes_json(value),
            "stamp": stamp.map(|s| json!({"wall_ms": s.hlc.wall_ms(), "logical": s.hlc.logical(), "replica": s.replica.0})),
        }),
        ReadValue::Set { members } | ReadValue::OrSet { members } => {
            json!({ "members": members.iter().map(bytes_json).collect::<Vec<_>>() })
        }
        ReadValue::List { values } => {
            json!({ "values": values.iter().map(bytes_json).collect::<Vec<_>>() })
        }
        ReadValue::Counter { value } => {
            json!({ "value": value.to_string().parse::<Json>().unwrap_or(Json::Null) })
        }
        ReadValue::Max { value } => json!({ "value": value }),
        ReadValue::Priority { priority, value } => {
            json!({ "priority": priority, "value": bytes_json(value) })
        }
        ReadValue::SingleCausal { values, clock }
        | ReadValue::MultiCausal { values, clock, .. } => json!({
            "values": values.iter().map(bytes_json).collect::<Vec<_>>(),
            "clock": clock.as_ref().map(|c| c.iter().map(|(r, n)| (r.0.to_string(), Json::from(n))).collect::<serde_json::Map<_, _>>()),
        }),
        ReadValue::Hash { fields } => json!({
            "fields": fields.iter().map(|(f, v)| json!({"field": bytes_json(f), "value": bytes_json(v)})).collect::<Vec<_>>(),
        }),
        ReadValue::SortedSet { members } => json!({
            "members": members.iter().map(|(m, s)| json!({"member": bytes_json(m), "score": s.get()})).collect::<Vec<_>>(),
        }),
        // An application's own lattice: its encoding, which only its type reads.
        ReadValue::Custom(v) => json!({ "encoded": hex(&v.state) }),
    };
    if let (Some(d), Json::Object(e)) = (doc.as_object_mut(), extra) {
        d.extend(e);
    }
    doc
}

fn print_text(value: &ReadValue) {
    let mut out = std::io::stdout().lock();
    let mut line = |b: &[u8]| {
        let _ = out.write_all(b);
        let _ = out.write_all(b"\n");
    };
    match value {
        ReadValue::Lww { value, .. } => line(value),
        ReadValue::Set { members } | ReadValue::OrSet { members } => {
            members.iter().for_each(|m| line(m))
        }
        ReadValue::List { values } => values.iter().for_each(|v| line(v)),
        ReadValue::Counter { value } => line(value.to_string().as_bytes()),
        ReadValue::Max { value } => line(value.to_string().as_bytes()),
        ReadValue::Priority { value, .. } => line(value),
        ReadValue::SingleCausal { values, .. } | ReadValue::MultiCausal { values, .. } => {
            values.iter().for_each(|v| line(v))
        }
        ReadValue::Hash { fields } => fields
            .iter()
            .for_each(|(f, v)| line(&[&f[..], b"\t", &v[..]].concat())),
        ReadValue::SortedSet { members } => members
            .iter()
            .for_each(|(m, s)| line(&[&m[..], b"\t", s.to_string().as_bytes()].concat())),
        ReadValue::Custom(v) => line(hex(&v.state).as_bytes()),
    }
}

/// Bytes in hexadecimal.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs a `calm kv` command.
pub async fn run(args: KvArgs) -> CliResult<ExitCode> {
    let json = args.json;
    let client = args.target.connect().await?;
    let result = execute(&client, args.command, json, args.ack).await;
    client.close().await;
    result
}

async fn execute(
    client: &calm_kvs::Client,
    command: KvCommand,
    json: bool,
    ack: Ack,
) -> CliResult<ExitCode> {
    let err = |e: calm_kvs::KvsError| e.to_string();
    // One write, acknowledged as asked.
    let write = |key: String, write: Write| async move {
        let mut r = client
            .execute_with_ack(
                vec![Op::Write {
                    key: bytes(&key),
                    write,
                }],
                ack,
            )
            .await
            .map_err(|e| e.to_string())?;
        match r.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no reply".to_string()),
        }
    };
    let written = |key: &str| {
        if json {
            println!("{}", json!({ "key": key, "written": true }));
        } else {
            println!("OK");
        }
        Ok(ExitCode::SUCCESS)
    };
    match command {
        KvCommand::Put {
            key,
            value,
            kind,
            priority,
        } => {
            let w = match kind {
                PutKind::Lww => Write::Lww(bytes(&value)),
                PutKind::Causal => Write::SingleCausal(bytes(&value)),
                PutKind::Max => Write::Max(value.parse().map_err(|_| {
                    format!(
                        "'{value}' is not an integer; --type max takes a whole number such as 42"
                    )
                })?),
                PutKind::Priority => Write::Priority {
                    priority: priority
                        .ok_or("--type priority needs --priority P (the lowest priority wins)")?,
                    value: bytes(&value),
                },
            };
            if priority.is_some() && !matches!(kind, PutKind::Priority) {
                return Err("--priority goes with --type priority".into());
            }
            write(key.clone(), w).await?;
            written(&key)
        }
        KvCommand::Get { key, read } => {
            let op = if read == "all" {
                Op::GetAll {
                    key: bytes(&key),
                    meta: true,
                }
            } else {
                Op::Get {
                    key: bytes(&key),
                    meta: true,
                }
            };
            let value = match client.execute(vec![op]).await.map_err(err)?.pop() {
                Some(Ok(Reply::Value(v))) => v,
                Some(Err(e)) => return Err(e.to_string()),
                other => return Err(format!("unexpected reply: {other:?}")),
            };
            match value {
                Some(value) => {
                    if json {
                        println!("{}", read_json(&key, &value));
                    } else {
                        print_text(&value);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    if json {
                        println!("{}", json!({ "key": key, "found": false }));
                    } else {
                        eprintln!("not found: {key}");
                    }
                    Ok(ExitCode::from(2))
                }
            }
        }
        KvCommand::Del { key } => {
            let existed = client.delete(bytes(&key)).await.map_err(err)?;
            if json {
                println!("{}", json!({ "key": key, "deleted": existed }));
            } else {
                println!(
                    "{}",
                    if existed {
                        "deleted"
                    } else {
                        "not found (nothing to delete)"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KvCommand::Add {
            key,
            members: ms,
            kind,
        } => {
            let w = match kind {
                SetKind::Set => Write::SetAdd(members(&ms)),
                SetKind::Orset => Write::OrSetAdd(members(&ms)),
            };
            write(key.clone(), w).await?;
            written(&key)
        }
        KvCommand::Rem { key, members: ms } => {
            write(key.clone(), Write::OrSetRemove(members(&ms))).await?;
            written(&key)
        }
        KvCommand::Incr { key, by } => count(client, key, by, json, ack).await,
        KvCommand::Replicate { key, factor, local } => {
            let parse = |n: &str| -> Result<Option<u8>, String> {
                match n {
                    "default" => Ok(None),
                    n => n
                        .parse::<u8>()
                        .ok()
                        .filter(|f| (1..=16).contains(f))
                        .map(Some)
                        .ok_or(format!(
                            "'{n}' is not a number of replicas from 1 to 16, or 'default'"
                        )),
                }
            };
            let factors = calm_kvs::cluster::Factors {
                global: parse(&factor)?,
                local: parse(&local)?,
            };
            client
                .set_replication(bytes(&key), factors)
                .await
                .map_err(err)?;
            let show = |f: Option<u8>| f.map_or("the default".to_string(), |n| n.to_string());
            if json {
                println!(
                    "{}",
                    json!({ "key": key, "nodes": factors.global, "workers": factors.local })
                );
            } else {
                println!(
                    "OK: {key} is kept on {} nodes, {} workers each",
                    show(factors.global),
                    show(factors.local)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KvCommand::Decr { key, by } => {
            count(
                client,
                key,
                by.checked_neg().ok_or("decrement too large")?,
                json,
                ack,
            )
            .await
        }
    }
}

/// Adds `by` and reads the new value in one round trip.
async fn count(
    client: &calm_kvs::Client,
    key: String,
    by: i64,
    json: bool,
    ack: Ack,
) -> CliResult<ExitCode> {
    let k = bytes(&key);
    let mut results = client
        .execute_with_ack(
            vec![
                Op::Write {
                    key: k.clone(),
                    write: Write::Increment(by),
                },
                Op::Get {
                    key: k,
                    meta: false,
                },
            ],
            ack,
        )
        .await
        .map_err(|e| e.to_string())?;
    let read = results.pop().ok_or("no reply")?;
    results
        .pop()
        .ok_or("no reply")?
        .map_err(|e| e.to_string())?;
    match read.map_err(|e| e.to_string())? {
        Reply::Value(Some(ReadValue::Counter { value })) => {
            if json {
                println!(
                    "{}",
                    json!({ "key": key, "value": value.to_string().parse::<Json>().unwrap_or(Json::Null) })
                );
            } else {
                println!("{value}");
            }
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unexpected reply: {other:?}")),
    }
}
