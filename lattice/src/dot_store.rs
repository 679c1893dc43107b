//! The state shared by the observed-remove CRDTs: entries tagged with dots, and the causal
//! context of every dot seen. Private: [`OrSet`](crate::OrSet) and
//! [`OrMap`](crate::OrMap) wrap it.

use crate::vec_map::{SmallMap, VecMap};
use crate::{CausalContext, Dot, Merge, ReplicaId};

/// Keys, each with the dots that wrote it and the value written under each dot, plus the
/// causal context. A dot in the context but not among the entries was removed; merge uses
/// that instead of tombstones.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "DotStoreParts<K, V>"))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: serde::Serialize, V: serde::Serialize",
        deserialize = "K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>"
    ))
)]
pub(crate) struct DotStore<K, V> {
    pub(crate) entries: SmallMap<K, VecMap<Dot, V>>,
    pub(crate) context: CausalContext,
}

/// The encoded form of a [`DotStore`]. Decoding restores the invariants merge relies on:
/// no key without dots, and every live dot recorded in the context.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(bound(deserialize = "K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>"))]
struct DotStoreParts<K, V> {
    entries: SmallMap<K, VecMap<Dot, V>>,
    context: CausalContext,
}

#[cfg(feature = "serde")]
impl<K: Ord, V> From<DotStoreParts<K, V>> for DotStore<K, V> {
    fn from(parts: DotStoreParts<K, V>) -> Self {
        let mut store = DotStore {
            entries: parts.entries,
            context: parts.context,
        };
        store.entries.retain(|_, dots| {
            dots.retain(|dot, _| dot.counter > 0);
            !dots.is_empty()
        });
        for dot in store.entries.values().flat_map(VecMap::keys) {
            store.context.insert(*dot);
        }
        store
    }
}

impl<K, V> Default for DotStore<K, V> {
    fn default() -> Self {
        DotStore {
            entries: SmallMap::default(),
            context: CausalContext::default(),
        }
    }
}

impl<K: Ord + Clone, V: Merge + Clone> DotStore<K, V> {
    /// Replaces every observed write of `key` with one new write of `value` by `replica`;
    /// returns the delta.
    pub(crate) fn write(&mut self, replica: ReplicaId, key: K, value: V) -> Self {
        let dot = self.context.next_dot(replica);
        let old = self
            .entries
            .insert(key.clone(), VecMap::from([(dot, value.clone())]));
        self.context.insert(dot);
        let seen = old.into_iter().flat_map(VecMap::into_keys);
        DotStore {
            entries: SmallMap::from([(key, VecMap::from([(dot, value)]))]),
            context: CausalContext::from_dots(seen.chain([dot])),
        }
    }

    /// Removes every observed write of `key`; returns the delta (empty if it was absent).
    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Self
    where
        K: std::borrow::Borrow<Q>,
    {
        let old = self.entries.remove(key);
        DotStore {
            entries: SmallMap::default(),
            context: CausalContext::from_dots(old.into_iter().flat_map(VecMap::into_keys)),
        }
    }

    /// Removes every observed write of every key; returns the delta.
    pub(crate) fn clear(&mut self) -> Self {
        let old = std::mem::take(&mut self.entries);
        DotStore {
            entries: SmallMap::default(),
            context: CausalContext::from_dots(old.into_values().flat_map(VecMap::into_keys)),
        }
    }

    /// Splits the state into atoms: one per live (key, dot), plus one per removed dot.
    pub(crate) fn atomize(self) -> impl Iterator<Item = Self> {
        let live: Vec<Dot> = self
            .entries
            .values()
            .flat_map(|d| d.keys().copied())
            .collect();
        let removed: Vec<Dot> = self.context.dots().filter(|d| !live.contains(d)).collect();
        let entry_atoms = self.entries.into_iter().flat_map(|(k, dots)| {
            dots.into_iter().map(move |(dot, v)| DotStore {
                entries: SmallMap::from([(k.clone(), VecMap::from([(dot, v)]))]),
                context: CausalContext::from_dots([dot]),
            })
        });
        let removal_atoms = removed.into_iter().map(|dot| DotStore {
            entries: SmallMap::default(),
            context: CausalContext::from_dots([dot]),
        });
        entry_atoms.chain(removal_atoms)
    }

    pub(crate) fn is_bot(&self) -> bool {
        use crate::IsBot;
        self.entries.is_empty() && self.context.is_bot()
    }
}

impl<K: Ord, V: Merge> Merge for DotStore<K, V> {
    fn merge(&mut self, other: Self) -> bool {
        let mut changed = false;
        // A dot survives if both sides have it, or one side has it and the other has never
        // seen it. One the other side has seen but dropped was removed there.
        let mut incoming = other.entries;
        self.entries.retain(|key, dots| {
            let theirs = incoming.remove(key);
            let before = dots.len();
            dots.retain(|dot, _| {
                theirs.as_ref().is_some_and(|t| t.contains_key(dot)) || !other.context.contains(dot)
            });
            changed |= dots.len() != before;
            for (dot, v) in theirs.into_iter().flatten() {
                if let Some(mine) = dots.get_mut(&dot) {
                    changed |= mine.merge(v);
                } else if !self.context.contains(&dot) {
                    dots.insert(dot, v);
                    changed = true;
                }
            }
            !dots.is_empty()
        });
        for (key, theirs) in incoming {
            let fresh: VecMap<Dot, V> = theirs
                .into_iter()
                .filter(|(dot, _)| !self.context.contains(dot))
                .collect();
            if !fresh.is_empty() {
                self.entries.insert(key, fresh);
                changed = true;
            }
        }
        changed |= self.context.merge(other.context);
        changed
    }
}
