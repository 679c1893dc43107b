//! Subscriptions: caches next to functions ask the owners of the keys they hold to push
//! every change to them.
//!
//! A subscriber (a client stream, or an in-process sink) subscribes to keys for a lease;
//! it renews the lease by subscribing again, sending for each key a fingerprint of the
//! value it holds, and the node answers with the value only where it differs. The owning
//! workers mark watched keys they change (by a client write, a replica's delta or gossip);
//! every push period the node collects those keys with their values and pushes them to each
//! subscriber of the key. So a subscriber's copy is behind the owner by at most one push
//! period plus the network; if a push is lost (a subscriber that does not read, a
//! connection that broke) the next renewal repairs it, so the worst case is one lease
//! renewal period.
//!
//! [`SubscriptionTable`] is the sans-IO core: who watches what, until when.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::value::ReadValue;

/// Changed keys with their values as of the push (`None`: deleted).
pub type Pushed = Vec<(Bytes, Option<ReadValue>)>;

/// The request id that marks a pushed frame on a client stream (requests never use it).
pub const PUSH_ID: u64 = u64::MAX;

/// The shortest and longest leases a node grants, in milliseconds.
pub const LEASE_RANGE_MS: (u32, u32) = (100, 600_000);

/// The answer for one key of a subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fetched {
    /// The key's current value (`None`: not found).
    Value(Option<ReadValue>),
    /// The value has the fingerprint the subscriber sent: it is current.
    Unchanged,
}

/// A fingerprint of a read value (with its metadata), to tell whether a copy is current
/// without sending it.
pub fn fingerprint(value: &Option<ReadValue>) -> u64 {
    match bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        Ok(bytes) => xxhash_rust::xxh3::xxh3_64(&bytes),
        // Never equal to a real fingerprint's expectation: the value is sent.
        Err(_) => 0,
    }
}

/// Where pushes for one subscriber go.
pub trait PushSink: Send + Sync {
    /// Delivers changes; `false` when the subscriber is gone (its subscriptions end). A
    /// sink that cannot keep up may drop changes and return `true`: the subscriber's next
    /// renewal repairs its copies.
    fn push(&self, changes: Pushed) -> bool;
}

/// Identifies a subscriber within one node.
pub type SubscriberId = u64;

/// Who watches which keys, until when (sans-IO: times are given).
#[derive(Debug, Default)]
pub struct SubscriptionTable {
    by_key: HashMap<Bytes, HashMap<SubscriberId, u64>>,
    by_subscriber: HashMap<SubscriberId, HashSet<Bytes>>,
}

impl SubscriptionTable {
    /// Subscribes `sub` to `keys` until `expiry_ms`. Returns the keys nobody watched
    /// before (the workers must start marking them).
    pub fn subscribe(
        &mut self,
        sub: SubscriberId,
        keys: impl IntoIterator<Item = Bytes>,
        expiry_ms: u64,
    ) -> Vec<Bytes> {
        let mut new = Vec::new();
        for key in keys {
            let watchers = self.by_key.entry(key.clone()).or_default();
            if watchers.is_empty() {
                new.push(key.clone());
            }
            watchers.insert(sub, expiry_ms);
            self.by_subscriber.entry(sub).or_default().insert(key);
        }
        new
    }

    /// Ends `sub`'s subscriptions to `keys`. Returns the keys nobody watches any more.
    pub fn unsubscribe(
        &mut self,
        sub: SubscriberId,
        keys: impl IntoIterator<Item = Bytes>,
    ) -> Vec<Bytes> {
        let mut gone = Vec::new();
        for key in keys {
            if let Some(watchers) = self.by_key.get_mut(&key) {
                watchers.remove(&sub);
                if watchers.is_empty() {
                    self.by_key.remove(&key);
                    gone.push(key.clone());
                }
            }
            if let Some(keys) = self.by_subscriber.get_mut(&sub) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_subscriber.remove(&sub);
                }
            }
        }
        gone
    }

    /// Ends every subscription of `sub`. Returns the keys nobody watches any more.
    pub fn remove_subscriber(&mut self, sub: SubscriberId) -> Vec<Bytes> {
        let keys: Vec<Bytes> = self
            .by_subscriber
            .get(&sub)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        self.unsubscribe(sub, keys)
    }

    /// Ends the subscriptions whose lease ran out by `now_ms`. Returns the keys nobody
    /// watches any more.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Bytes> {
        let expired: Vec<(SubscriberId, Bytes)> = self
            .by_key
            .iter()
            .flat_map(|(key, watchers)| {
                watchers
                    .iter()
                    .filter(|(_, expiry)| **expiry <= now_ms)
                    .map(|(sub, _)| (*sub, key.clone()))
            })
            .collect();
        let mut gone = Vec::new();
        for (sub, key) in expired {
            gone.extend(self.unsubscribe(sub, [key]));
        }
        gone
    }

    /// Whether anyone watches anything.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// How many keys are watched.
    pub fn watched_keys(&self) -> usize {
        self.by_key.len()
    }

    /// Splits changes by subscriber: each gets the changed keys it watches.
    pub fn route(&self, changes: &Pushed) -> HashMap<SubscriberId, Pushed> {
        let mut out: HashMap<SubscriberId, Pushed> = HashMap::new();
        for (key, value) in changes {
            if let Some(watchers) = self.by_key.get(key) {
                for sub in watchers.keys() {
                    out.entry(*sub)
                        .or_default()
                        .push((key.clone(), value.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn lww(s: &str) -> Option<ReadValue> {
        Some(ReadValue::Lww {
            value: b(s),
            stamp: None,
        })
    }

    #[test]
    fn keys_are_watched_while_someone_subscribes() {
        let mut t = SubscriptionTable::default();
        assert_eq!(t.subscribe(1, [b("a"), b("b")], 100), vec![b("a"), b("b")]);
        // A second subscriber to a watched key starts nothing new.
        assert_eq!(t.subscribe(2, [b("a")], 200), Vec::<Bytes>::new());
        assert_eq!(t.unsubscribe(1, [b("a")]), Vec::<Bytes>::new());
        assert_eq!(t.remove_subscriber(1), vec![b("b")]);
        assert_eq!(t.watched_keys(), 1);
        assert_eq!(t.remove_subscriber(2), vec![b("a")]);
        assert!(t.is_empty());
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let mut t = SubscriptionTable::default();
        t.subscribe(1, [b("a"), b("b")], 100);
        t.subscribe(1, [b("b")], 300);
        let mut gone = t.expire(100);
        gone.sort();
        assert_eq!(gone, vec![b("a")]);
        assert_eq!(t.expire(299), Vec::<Bytes>::new());
        assert_eq!(t.expire(300), vec![b("b")]);
        assert!(t.is_empty());
    }

    #[test]
    fn changes_go_to_each_subscriber_of_their_key() {
        let mut t = SubscriptionTable::default();
        t.subscribe(1, [b("a")], 100);
        t.subscribe(2, [b("a"), b("b")], 100);
        let routed = t.route(&vec![
            (b("a"), lww("1")),
            (b("b"), None),
            (b("c"), lww("x")),
        ]);
        assert_eq!(routed[&1], vec![(b("a"), lww("1"))]);
        assert_eq!(routed[&2], vec![(b("a"), lww("1")), (b("b"), None)]);
        assert_eq!(routed.len(), 2);
    }

    #[test]
    fn fingerprints_tell_values_apart() {
        assert_eq!(fingerprint(&lww("x")), fingerprint(&lww("x")));
        assert_ne!(fingerprint(&lww("x")), fingerprint(&lww("y")));
        assert_ne!(fingerprint(&lww("x")), fingerprint(&None));
    }
}
