//! What one DAG call has read and written, carried from function to function (and from
//! node to node) so the call's consistency mode holds across the whole DAG.
//!
//! - `lww`: every read comes from the cache next to the executor as it is.
//! - `repeatable-read`: the first read of a key pins the version read; every later read of
//!   that key in the same call, on any node, sees the pinned version (the pins travel with
//!   the call).
//! - `causal`: keys hold `multicausal` values (a vector clock and the versions their writer
//!   had read). A read whose dependencies name a key makes every later read of that key
//!   see at least that version (fetched from the owners when the cached copy is older), so
//!   the reads form a causal cut; the cut travels with the call and the call's writes
//!   record it as their dependencies. Reading a value whose dependency is newer than a
//!   version this call already read cannot form a cut (calm keeps no old versions) and
//!   fails with a typed error; read parents before their children.
//!
//! Writes are buffered in the session (a later read in the call sees them) and stored only
//! when the whole call has succeeded: a failed call changes nothing.

use std::collections::BTreeMap;
use std::str::FromStr;

use bytes::Bytes;
use calm_cache::{Backend, Cache};
use calm_kvs::acl::{Access, Right};
use calm_kvs::protocol::Ack;
use calm_kvs::value::{ReadValue, Write};
use calm_lattice::{Merge, VectorClock};
use serde::{Deserialize, Serialize};

use crate::error::FnError;

/// How a DAG call's reads relate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Each read sees the cache's copy (default).
    #[default]
    Lww,
    /// A key read twice in one call reads one version, across nodes.
    RepeatableRead,
    /// The call's reads form a causal cut; its writes depend on them.
    Causal,
}

impl Consistency {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Lww => "lww",
            Consistency::RepeatableRead => "repeatable-read",
            Consistency::Causal => "causal",
        }
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lww" => Ok(Consistency::Lww),
            "repeatable-read" => Ok(Consistency::RepeatableRead),
            "causal" => Ok(Consistency::Causal),
            other => Err(format!(
                "unknown consistency '{other}'; expected lww, repeatable-read or causal"
            )),
        }
    }
}

/// The state of one DAG call. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The call's mode.
    pub consistency: Consistency,
    /// Versions read (repeatable read and causal): key -> value (`None`: not found).
    pins: BTreeMap<Bytes, Option<Bytes>>,
    /// Causal: the clock of each key's version read.
    cut: BTreeMap<Bytes, VectorClock>,
    /// Causal: the least version of each key later reads must see.
    required: BTreeMap<Bytes, VectorClock>,
    /// Writes not yet stored, in order.
    writes: Vec<(Bytes, Bytes)>,
    /// What the call's caller may read and write: its functions run with its rights.
    pub access: Access,
}

/// The bytes a function sees for a stored value: lww and priority values as they are;
/// causal registers their greatest concurrent value; counters and max registers in
/// decimal; sets their members and lists their elements, one per line; hashes one field per
/// line, its name, a tab and its value; sorted sets one member per line by score, the
/// member, a tab and its score; an application's own kind its encoded bytes.
pub fn value_bytes(value: &ReadValue) -> Bytes {
    let lines = |ms: &[Bytes]| {
        Bytes::from(
            ms.iter()
                .map(|m| m.to_vec())
                .collect::<Vec<_>>()
                .join(&b'\n'),
        )
    };
    match value {
        ReadValue::Lww { value, .. } | ReadValue::Priority { value, .. } => value.clone(),
        ReadValue::SingleCausal { values, .. } | ReadValue::MultiCausal { values, .. } => {
            values.iter().max().cloned().unwrap_or_default()
        }
        ReadValue::Counter { value } => Bytes::from(value.to_string()),
        ReadValue::Max { value } => Bytes::from(value.to_string()),
        ReadValue::Set { members } | ReadValue::OrSet { members } => lines(members),
        ReadValue::List { values } => lines(values),
        ReadValue::Hash { fields } => lines(
            &fields
                .iter()
                .map(|(f, v)| Bytes::from([&f[..], b"\t", &v[..]].concat()))
                .collect::<Vec<_>>(),
        ),
        ReadValue::SortedSet { members } => lines(
            &members
                .iter()
                .map(|(m, s)| Bytes::from([&m[..], b"\t", s.to_string().as_bytes()].concat()))
                .collect::<Vec<_>>(),
        ),
        ReadValue::Custom(v) => v.state.clone(),
    }
}

impl Session {
    /// A new call's session.
    pub fn new(consistency: Consistency) -> Session {
        Session {
            consistency,
            ..Session::default()
        }
    }

    /// A new call's session, for a caller with `access`.
    pub fn for_caller(consistency: Consistency, access: Access) -> Session {
        Session {
            consistency,
            access,
            ..Session::default()
        }
    }

    /// `Ok` if the caller may do `right` to `key`.
    pub fn check(&self, right: Right, key: &[u8]) -> Result<(), FnError> {
        self.access
            .check(right, key)
            .map_err(|d| FnError::Forbidden(d.to_string()))
    }

    /// Reads `key` as the call's mode says, if the caller may read it.
    pub async fn read<B: Backend>(
        &mut self,
        cache: &Cache<B>,
        key: &Bytes,
    ) -> Result<Option<Bytes>, FnError> {
        self.check(Right::Read, key)?;
        if let Some((_, v)) = self.writes.iter().rev().find(|(k, _)| k == key) {
            return Ok(Some(v.clone()));
        }
        if self.consistency != Consistency::Lww
            && let Some(pinned) = self.pins.get(key)
        {
            return Ok(pinned.clone());
        }
        let value = cache.get(key).await?;
        let value = match self.consistency {
            Consistency::Lww => return Ok(value.as_ref().map(value_bytes)),
            Consistency::RepeatableRead => value,
            Consistency::Causal => self.causal_read(cache, key, value).await?,
        };
        let bytes = value.as_ref().map(value_bytes);
        self.pins.insert(key.clone(), bytes.clone());
        Ok(bytes)
    }

    async fn causal_read<B: Backend>(
        &mut self,
        cache: &Cache<B>,
        key: &Bytes,
        mut value: Option<ReadValue>,
    ) -> Result<Option<ReadValue>, FnError> {
        let name = || String::from_utf8_lossy(key).into_owned();
        if let Some(need) = self.required.get(key).cloned() {
            if !covers(&value, &need) {
                // The cached copy is older than a version this call depends on.
                value = cache.refresh(key).await?;
            }
            if !covers(&value, &need) {
                return Err(FnError::Causal {
                    key: name(),
                    why: "the version this call depends on has not reached the key's owners yet; retry".into(),
                });
            }
        }
        if let Some(ReadValue::MultiCausal { clock, deps, .. }) = &value {
            for (dep, at) in deps {
                if let Some(read) = self.cut.get(dep)
                    && !matches!(
                        at.partial_cmp(read),
                        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                    )
                {
                    return Err(FnError::Causal {
                        key: name(),
                        why: format!(
                            "it depends on a version of '{}' newer than the one this call already read (read parents before children)",
                            String::from_utf8_lossy(dep)
                        ),
                    });
                }
                self.required
                    .entry(dep.clone())
                    .or_default()
                    .merge(at.clone());
            }
            if let Some(clock) = clock {
                self.cut.insert(key.clone(), clock.clone());
            }
        }
        Ok(value)
    }

    /// Buffers a write, if the caller may write the key; it is stored when the call
    /// succeeds.
    pub fn write(&mut self, key: Bytes, value: Bytes) -> Result<(), FnError> {
        self.check(Right::Write, &key)?;
        self.write_unchecked(key, value);
        Ok(())
    }

    fn write_unchecked(&mut self, key: Bytes, value: Bytes) {
        if self.consistency != Consistency::Lww {
            self.pins.insert(key.clone(), Some(value.clone()));
        }
        self.writes.push((key, value));
    }

    /// Joins the session of a parallel branch of the same call (at a function with several
    /// predecessors, and at the end): pins and writes of both, cuts merged.
    pub fn join(&mut self, other: Session) {
        for (k, v) in other.pins {
            self.pins.entry(k).or_insert(v);
        }
        for (k, c) in other.cut {
            self.cut.entry(k).or_default().merge(c);
        }
        for (k, c) in other.required {
            self.required.entry(k).or_default().merge(c);
        }
        // Both branches are of one call: one caller.
        for w in other.writes {
            if !self.writes.contains(&w) {
                self.writes.push(w);
            }
        }
    }

    /// How many writes are buffered.
    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// Stores the buffered writes (and `extra`), last write of a key winning: plain
    /// last-writer-wins values, or with `causal`, values that record the call's cut as
    /// their dependencies.
    pub async fn commit<B: Backend>(
        &self,
        cache: &Cache<B>,
        extra: Option<(Bytes, Bytes)>,
    ) -> Result<(), FnError> {
        let mut last: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        for (k, v) in self.writes.iter().cloned().chain(extra) {
            last.insert(k, v);
        }
        if last.is_empty() {
            return Ok(());
        }
        let deps: Vec<(Bytes, VectorClock)> = self
            .cut
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        let writes = last
            .into_iter()
            .map(|(k, value)| {
                let w = match self.consistency {
                    Consistency::Causal => Write::MultiCausal {
                        value,
                        deps: deps.iter().filter(|(d, _)| *d != k).cloned().collect(),
                    },
                    _ => Write::Lww(value),
                };
                (k, w)
            })
            .collect();
        cache.write(writes, Ack::One).await?;
        Ok(())
    }
}

fn covers(value: &Option<ReadValue>, need: &VectorClock) -> bool {
    match value {
        Some(ReadValue::MultiCausal {
            clock: Some(clock), ..
        })
        | Some(ReadValue::SingleCausal {
            clock: Some(clock), ..
        }) => need <= clock,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_bytes_a_function_can_use() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert_eq!(value_bytes(&ReadValue::Counter { value: -3 }), b("-3"));
        assert_eq!(
            value_bytes(&ReadValue::Set {
                members: vec![b("a"), b("b")]
            }),
            b("a\nb")
        );
        assert_eq!(
            value_bytes(&ReadValue::MultiCausal {
                values: vec![b("x"), b("y")],
                clock: None,
                deps: vec![]
            }),
            b("y")
        );
    }

    #[test]
    fn joined_sessions_keep_both_branches() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut a = Session::new(Consistency::RepeatableRead);
        a.write(b("k1"), b("1")).unwrap();
        let mut c = Session::new(Consistency::RepeatableRead);
        c.write(b("k2"), b("2")).unwrap();
        c.write(b("k1"), b("1")).unwrap();
        a.join(c);
        assert_eq!(a.pending_writes(), 2);
        assert_eq!(a.pins.len(), 2);
    }

    #[test]
    fn modes_parse_from_their_names() {
        for m in [
            Consistency::Lww,
            Consistency::RepeatableRead,
            Consistency::Causal,
        ] {
            assert_eq!(m.name().parse::<Consistency>(), Ok(m));
        }
        assert!("serializable".parse::<Consistency>().is_err());
    }
}
