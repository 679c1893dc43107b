//! Subscriptions: the node's subscribers, and the thread that pushes changed keys to them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::subscribe::{PushSink, SubscriberId, SubscriptionTable};

use super::lock;
use super::pool::WorkerMsg;

/// The node's subscribers and the thread that pushes to them (started by the first).
pub(super) struct Subscriptions {
    pub(super) table: Mutex<SubscriptionTable>,
    pub(super) sinks: Mutex<HashMap<SubscriberId, Arc<dyn PushSink>>>,
    pub(super) next_id: AtomicU64,
    pub(super) started: Instant,
    pub(super) pusher: Mutex<Option<JoinHandle<()>>>,
    pub(super) stop: AtomicBool,
}

impl Subscriptions {
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Every `period` while anyone subscribes: expires leases, collects the watched keys the
/// workers changed, and pushes them to their subscribers.
pub(super) fn run_pusher(
    subs: Arc<Subscriptions>,
    workers: Vec<mpsc::Sender<WorkerMsg>>,
    period: Duration,
) {
    while !subs.stop.load(Ordering::Relaxed) {
        std::thread::sleep(period);
        let expired = {
            let mut table = lock(&subs.table);
            if table.is_empty() {
                continue;
            }
            table.expire(subs.now_ms())
        };
        if !expired.is_empty() {
            for tx in &workers {
                let _ = tx.send(WorkerMsg::Watch(expired.clone(), false));
            }
        }
        let mut changed = Vec::new();
        for tx in &workers {
            let (reply, rx) = oneshot::channel();
            if tx.send(WorkerMsg::TakeDirty(reply)).is_err() {
                return;
            }
            match rx.blocking_recv() {
                Ok(c) => changed.extend(c),
                Err(_) => return,
            }
        }
        if changed.is_empty() {
            continue;
        }
        let routed = lock(&subs.table).route(&changed);
        let mut gone = Vec::new();
        for (sub, changes) in routed {
            let sink = lock(&subs.sinks).get(&sub).cloned();
            match sink {
                Some(sink) if sink.push(changes) => {}
                _ => gone.push(sub),
            }
        }
        for sub in gone {
            let keys = lock(&subs.table).remove_subscriber(sub);
            lock(&subs.sinks).remove(&sub);
            for tx in &workers {
                let _ = tx.send(WorkerMsg::Watch(keys.clone(), false));
            }
        }
    }
}
