//! The history check every simulated test shares: what clients asked, what nodes applied,
//! what clients were told was written — and, at the end, whether the value the replicas
//! hold agrees: every acknowledged write that must survive is there (a counter at least the
//! sum of its acknowledged increments, every acknowledged set member, every acknowledged
//! register write contained in the register), and nothing nobody wrote (no counter above
//! the sum of every increment asked, no member nobody added, no register value nobody
//! wrote, nothing beyond the merge of every delta applied).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use calm_kvs::{ReadValue, Value, Write};

/// A write a client was told was applied.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: Bytes,
    pub write: Write,
    /// Acknowledged with `all` (else `one`).
    pub all: bool,
    /// When the client was told.
    pub at: u64,
}

/// What clients asked, what nodes applied, and what clients were told.
#[derive(Default)]
pub struct History {
    /// Every delta any node applied for a client, merged per key.
    applied: BTreeMap<Bytes, Value>,
    /// The delta of each register write, by its value (tests write unique values).
    registers: HashMap<Bytes, Value>,
    /// The writes clients were told were applied.
    pub acked: Vec<Acked>,
    /// Per key, every increment and member asked, answered or not.
    sums: BTreeMap<Bytes, i128>,
    members: BTreeMap<Bytes, HashSet<Bytes>>,
}

impl History {
    /// A client asks for `write` (whatever becomes of it).
    pub fn attempt(&mut self, key: &Bytes, write: &Write) {
        match write {
            Write::Increment(by) => *self.sums.entry(key.clone()).or_default() += i128::from(*by),
            Write::OrSetAdd(ms) => self
                .members
                .entry(key.clone())
                .or_default()
                .extend(ms.iter().cloned()),
            _ => {}
        }
    }

    /// A node applied `delta` to `key` for a client.
    pub fn applied(&mut self, key: &Bytes, delta: &Value) {
        self.applied
            .entry(key.clone())
            .or_insert_with(|| Value::empty(delta.kind()))
            .merge_replicated(delta.clone());
        if let Some(ReadValue::Lww { value, .. }) = delta.read(false) {
            self.registers.insert(value, delta.clone());
        }
    }

    /// A client was told `write` was applied.
    pub fn acknowledge(&mut self, key: Bytes, write: Write, all: bool, at: u64) {
        self.acked.push(Acked {
            key,
            write,
            all,
            at,
        });
    }

    /// Every key a node applied something to.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.applied.keys()
    }

    /// Whether `key` has an acknowledged write that `must` keeps.
    pub fn has_surviving_write(&self, key: &Bytes, must: impl Fn(&Acked) -> bool) -> bool {
        self.acked.iter().any(|a| a.key == *key && must(a))
    }

    /// Checks the value the replicas hold for `key` (`None`: none holds it): every
    /// acknowledged write `must` keeps is there, and nothing nobody wrote.
    pub fn check(
        &self,
        key: &Bytes,
        value: Option<&Value>,
        must: impl Fn(&Acked) -> bool,
    ) -> Result<(), String> {
        let musts: Vec<&Acked> = self
            .acked
            .iter()
            .filter(|a| a.key == *key && must(a))
            .collect();
        let Some(value) = value else {
            return match musts.first() {
                Some(a) => Err(format!(
                    "key {key:?} is gone, with an acknowledged write: {a:?}"
                )),
                None => Ok(()),
            };
        };
        if let Some(everything) = self.applied.get(key) {
            let mut x = everything.clone();
            if x.merge(value.clone()) != Ok(false) {
                return Err(format!(
                    "key {key:?} holds something never written: {value:?}"
                ));
            }
        }
        let (mut sum, mut members) = (0i128, Vec::new());
        for a in &musts {
            match &a.write {
                Write::Increment(by) => sum += i128::from(*by),
                Write::OrSetAdd(ms) => members.extend(ms.iter().map(|m| (m, *a))),
                Write::Lww(v) => {
                    let delta = self
                        .registers
                        .get(v)
                        .ok_or_else(|| format!("acknowledged {v:?} was never applied"))?;
                    let mut x = value.clone();
                    if x.merge(delta.clone()) != Ok(false) {
                        return Err(format!(
                            "key {key:?}: acknowledged register write {v:?} lost ({a:?}): {value:?}"
                        ));
                    }
                }
                _ => {}
            }
        }
        match value.read(false) {
            Some(ReadValue::Counter { value }) => {
                let most = self.sums.get(key).copied().unwrap_or(0);
                if value < sum || value > most {
                    return Err(format!(
                        "key {key:?}: counter {value}, acknowledged {sum}, asked {most}"
                    ));
                }
            }
            Some(ReadValue::OrSet { members: held }) => {
                if let Some((m, a)) = members.iter().find(|(m, _)| !held.contains(m)) {
                    return Err(format!(
                        "key {key:?}: acknowledged member {m:?} missing ({a:?}) from {held:?}"
                    ));
                }
                let asked = self.members.get(key);
                if let Some(m) = held.iter().find(|m| !asked.is_some_and(|a| a.contains(*m))) {
                    return Err(format!("key {key:?}: member {m:?} was never added"));
                }
            }
            Some(ReadValue::Lww { value, .. }) if !self.registers.contains_key(&value) => {
                return Err(format!("key {key:?}: register {value:?} was never written"));
            }
            None if !musts.is_empty() => {
                return Err(format!(
                    "key {key:?} reads as absent, with an acknowledged write: {:?}",
                    musts[0]
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
