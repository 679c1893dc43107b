//! Publish/subscribe across the cluster: each node's Redis port keeps its own subscribers
//! (a [`Hub`]); a `PUBLISH` through any node reaches the subscribers of every node — the
//! node that takes it hands the message to its hub and to every other node's, through the
//! node service [`SERVICE`]. Like Redis's, delivery is at most once: messages are not
//! stored, a node that cannot be reached misses them, and a subscriber that does not read
//! loses what overflows its queue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::op::glob_match;
use crate::service::{Service, ServiceFuture};

/// The node service that takes messages published through other nodes.
pub const SERVICE: &str = "redis-pubsub";

/// Messages a subscriber may have waiting before newer ones are dropped.
const QUEUE: usize = 4096;

/// A message for one subscriber.
#[derive(Clone, Debug)]
pub(super) struct Message {
    /// The pattern it matched (`PSUBSCRIBE`), if any.
    pub pattern: Option<Bytes>,
    /// The channel it was published on.
    pub channel: Bytes,
    /// The message.
    pub payload: Bytes,
}

/// A connection's end: where its messages go.
pub(super) type Inbox = mpsc::Receiver<Message>;

/// This node's subscribers, by channel and by pattern.
#[derive(Default)]
pub(super) struct Hub {
    inner: Mutex<Subscribers>,
}

#[derive(Default)]
struct Subscribers {
    /// Per connection, where its messages go.
    senders: HashMap<u64, mpsc::Sender<Message>>,
    channels: HashMap<Bytes, HashSet<u64>>,
    patterns: HashMap<Bytes, HashSet<u64>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connection `id`'s inbox, made on its first subscription.
    pub(super) fn inbox(&self, id: u64) -> Inbox {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().senders.insert(id, tx);
        rx
    }

    /// Subscribes connection `id` to a channel (or, with `pattern`, to the channels a glob
    /// pattern matches).
    pub(super) fn subscribe(&self, id: u64, name: Bytes, pattern: bool) {
        let mut s = self.lock();
        let table = if pattern {
            &mut s.patterns
        } else {
            &mut s.channels
        };
        table.entry(name).or_default().insert(id);
    }

    /// Ends a subscription of connection `id`.
    pub(super) fn unsubscribe(&self, id: u64, name: &Bytes, pattern: bool) {
        let mut s = self.lock();
        let table = if pattern {
            &mut s.patterns
        } else {
            &mut s.channels
        };
        if let Some(ids) = table.get_mut(name) {
            ids.remove(&id);
            if ids.is_empty() {
                table.remove(name);
            }
        }
    }

    /// Forgets connection `id` (it closed).
    pub(super) fn leave(&self, id: u64) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.senders.remove(&id);
        for table in [&mut s.channels, &mut s.patterns] {
            table.retain(|_, ids| {
                ids.remove(&id);
                !ids.is_empty()
            });
        }
    }

    /// Hands a message to this node's subscribers; how many took it.
    pub(super) fn publish(&self, channel: &Bytes, payload: &Bytes) -> u64 {
        let s = self.lock();
        let mut delivered = 0;
        let mut send = |id: &u64, pattern: Option<&Bytes>| {
            if let Some(tx) = s.senders.get(id) {
                let message = Message {
                    pattern: pattern.cloned(),
                    channel: channel.clone(),
                    payload: payload.clone(),
                };
                if tx.try_send(message).is_ok() {
                    delivered += 1;
                }
            }
        };
        for id in s.channels.get(channel).into_iter().flatten() {
            send(id, None);
        }
        for (pattern, ids) in &s.patterns {
            if glob_match(pattern, channel) {
                for id in ids {
                    send(id, Some(pattern));
                }
            }
        }
        delivered
    }
}

/// The node service in front of a hub: takes a message published through another node.
pub(super) struct HubService(pub Arc<Hub>);

/// Encodes a message for [`SERVICE`].
pub(super) fn encode(channel: &Bytes, payload: &Bytes) -> Bytes {
    let body = (channel.to_vec(), payload.to_vec());
    Bytes::from(
        bincode::serde::encode_to_vec(&body, bincode::config::standard()).unwrap_or_default(),
    )
}

impl Service for HubService {
    fn call(&self, _access: &crate::acl::Access, body: Bytes) -> ServiceFuture {
        let decoded = bincode::serde::decode_from_slice::<(Vec<u8>, Vec<u8>), _>(
            &body,
            bincode::config::standard(),
        );
        let answer = match decoded {
            Ok(((channel, payload), _)) => {
                let n = self.0.publish(&Bytes::from(channel), &Bytes::from(payload));
                Ok(Bytes::copy_from_slice(&n.to_le_bytes()))
            }
            Err(e) => Err(format!("not a published message: {e}")),
        };
        Box::pin(async move { answer })
    }
}

/// How many subscribers a node's answer to [`SERVICE`] says took the message.
pub(super) fn delivered(answer: &[u8]) -> u64 {
    answer
        .try_into()
        .map(u64::from_le_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn messages_reach_channel_and_pattern_subscribers_once_each() {
        let hub = Hub::default();
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut one = hub.inbox(1);
        let mut two = hub.inbox(2);
        hub.subscribe(1, b("news"), false);
        hub.subscribe(2, b("n*"), true);
        hub.subscribe(2, b("x*"), true);
        assert_eq!(hub.publish(&b("news"), &b("hi")), 2);
        assert_eq!(hub.publish(&b("other"), &b("no")), 0);
        let m = one.try_recv().unwrap();
        assert_eq!(
            (m.channel, m.payload, m.pattern),
            (b("news"), b("hi"), None)
        );
        let m = two.try_recv().unwrap();
        assert_eq!(m.pattern, Some(b("n*")));
        assert!(one.try_recv().is_err() && two.try_recv().is_err());
        hub.unsubscribe(1, &b("news"), false);
        hub.leave(2);
        assert_eq!(hub.publish(&b("news"), &b("gone")), 0);
        // The node service decodes what another node sends.
        let service = HubService(Arc::new(Hub::default()));
        let mut three = service.0.inbox(3);
        service.0.subscribe(3, b("c"), false);
        let answer = futures_lite(service.call(&crate::acl::Access::All, encode(&b("c"), &b("m"))));
        assert_eq!(delivered(&answer.unwrap()), 1);
        assert_eq!(three.try_recv().unwrap().payload, b("m"));
    }

    /// Runs a future that is ready at once.
    fn futures_lite(f: ServiceFuture) -> crate::service::ServiceResult {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
