//! The agent's thread: it feeds the sans-IO [`ClusterAgent`] its inputs (peers' messages
//! and answers, local writes, time), sends what it asks to send, and publishes its view of
//! the cluster for the node's request path. It reads the workers' data with blocking calls
//! ([`WorkerPool`]), so it has a thread of its own.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::autopilot::Autopilot;
use super::{Input, Peers, now_ms};
use crate::cluster::{
    ClusterAgent, ClusterView, LocalStore, Member, Outgoing, ReplicationTable, Status,
};
use crate::node::{Changes, WorkerPool};
use crate::op::OpError;

/// The longest the thread sleeps with nothing due.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// The agent and what its thread keeps between inputs.
pub(super) struct AgentThread {
    agent: ClusterAgent,
    pool: WorkerPool,
    inputs: mpsc::Receiver<Input>,
    out: UnboundedSender<Outgoing>,
    /// The view the request path reads, replaced when members, the table or settling
    /// change.
    published: Arc<RwLock<Arc<ClusterView>>>,
    /// Deltas of local writes, put there by the node's request path.
    local_changes: Arc<Mutex<Changes>>,
    peers: Arc<Peers>,
    autopilot: Option<Autopilot>,
    last_members: Vec<Member>,
    last_table: Arc<ReplicationTable>,
    last_settling: u64,
    /// Clients waiting for their writes to reach the owners, by the agent's ticket.
    replica_waiters: HashMap<u64, oneshot::Sender<Result<(), OpError>>>,
}

impl AgentThread {
    pub(super) fn new(
        agent: ClusterAgent,
        pool: WorkerPool,
        inputs: mpsc::Receiver<Input>,
        out: UnboundedSender<Outgoing>,
        published: Arc<RwLock<Arc<ClusterView>>>,
        local_changes: Arc<Mutex<Changes>>,
        peers: Arc<Peers>,
    ) -> AgentThread {
        AgentThread {
            autopilot: Autopilot::new(&pool, agent.me().to_string()),
            last_members: agent.members(),
            last_table: agent.replication_table().clone(),
            last_settling: agent.settling_until_ms(),
            agent,
            pool,
            inputs,
            out,
            published,
            local_changes,
            peers,
            replica_waiters: HashMap::new(),
        }
    }

    /// Runs until the node's handle is dropped.
    pub(super) fn run(mut self) {
        loop {
            match self.inputs.recv_timeout(self.until_due()) {
                Ok(Input::Leave(done)) => {
                    self.leave();
                    let _ = done.send(());
                    continue;
                }
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.after_input();
        }
    }

    /// How long to sleep: until the agent or the autopilot has something due, at most
    /// [`MAX_IDLE`].
    fn until_due(&self) -> Duration {
        let due = [
            self.agent.next_deadline_ms(),
            self.autopilot.as_ref().map(Autopilot::due_ms),
        ]
        .into_iter()
        .flatten()
        .min();
        due.map_or(MAX_IDLE, |d| {
            Duration::from_millis(d.saturating_sub(now_ms())).min(MAX_IDLE)
        })
    }

    fn handle(&mut self, input: Input) {
        let agent = &mut self.agent;
        match input {
            Input::Request { envelope, reply } => {
                let r = agent.handle_request(now_ms(), envelope, &mut self.pool);
                let _ = reply.send(r);
            }
            Input::Reply { id, from, reply } => {
                agent.handle_reply(now_ms(), id, &from, reply, &mut self.pool)
            }
            Input::SetReplication(key, factor) => agent.set_replication(now_ms(), key, factor),
            Input::Failed { id } => agent.handle_failure(id),
            Input::Replicate {
                changes,
                need,
                reply,
            } => {
                let ticket = agent.replicate(changes, need);
                self.replica_waiters.insert(ticket, reply);
                self.flush();
            }
            // The local writes waiting are taken after every input.
            Input::Wake | Input::Leave(_) | Input::Stop => {}
        }
    }

    /// What follows every input (or a timeout): answers to clients whose writes reached
    /// their owners, local writes, the autopilot, the agent's timers, its messages, and the
    /// published view.
    fn after_input(&mut self) {
        while let Some((ticket, outcome)) = self.agent.poll_replicated() {
            if let Some(waiter) = self.replica_waiters.remove(&ticket) {
                let _ = waiter.send(outcome.map_err(|(reached, wanted)| {
                    OpError::ReplicationIncomplete { reached, wanted }
                }));
            }
        }
        let local = self.take_local_changes();
        if !local.is_empty() {
            self.agent.on_local_changes(local);
        }
        if let Some(a) = self.autopilot.as_mut() {
            a.tick(now_ms(), &mut self.pool, &mut self.agent);
        }
        self.agent.handle_tick(now_ms(), &mut self.pool);
        self.flush();
        self.publish();
    }

    fn take_local_changes(&self) -> Changes {
        std::mem::take(&mut *self.local_changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends what the agent asks to send.
    fn flush(&mut self) {
        while let Some(out) = self.agent.poll_outgoing() {
            let _ = self.out.send(out);
        }
    }

    /// Publishes the agent's view when members, the table or settling changed; gives the
    /// workers a changed table; forgets the connection to a member that restarted.
    fn publish(&mut self) {
        let agent = &self.agent;
        let members = agent.members();
        let table_changed = **agent.replication_table() != *self.last_table;
        if table_changed {
            self.last_table = agent.replication_table().clone();
            // The workers need the per-key local factors.
            self.pool.set_table(self.last_table.clone());
        }
        let settling_changed = agent.settling_until_ms() != self.last_settling;
        let members_changed = members != self.last_members;
        if table_changed || settling_changed || members_changed {
            self.last_settling = agent.settling_until_ms();
            if let Ok(mut v) = self.published.write() {
                *v = Arc::new(agent.view());
            }
        }
        if members_changed {
            for m in &members {
                let restarted = self
                    .last_members
                    .iter()
                    .any(|o| o.addr == m.addr && o.incarnation < m.incarnation)
                    && m.status == Status::Alive;
                if restarted && m.addr != agent.me() {
                    self.peers.restarted_blocking(&m.addr);
                }
                if self
                    .last_members
                    .iter()
                    .all(|o| o.addr != m.addr || o.status != m.status)
                {
                    tracing::info!(member = %m.addr, status = m.status.name(), "membership changed");
                }
            }
            self.last_members = members;
        }
    }

    /// A graceful leave: hands every key to the owners it will have without this node and
    /// waits for them to take it; announces the leave (from then on this node forwards what
    /// it is sent); hands over again what was written meanwhile.
    fn leave(&mut self) {
        let local = self.take_local_changes();
        self.agent.on_local_changes(local);
        let first = self.hand_over_all(Instant::now() + Duration::from_secs(30));
        self.agent.leave();
        if let Ok(mut v) = self.published.write() {
            *v = Arc::new(self.agent.view());
        }
        self.flush();
        let local = self.take_local_changes();
        self.agent.on_local_changes(local);
        self.hand_over_all(Instant::now() + Duration::from_secs(5));
        if self.agent.handing_over() > 0 {
            tracing::warn!(
                unanswered = self.agent.handing_over(),
                "left before every key was handed over; the keys' other replicas and anti-entropy repair the rest"
            );
        } else if first > 0 {
            tracing::info!(
                keys = first,
                "handed every key to its next owners before leaving"
            );
        }
    }

    /// Hands every key this node holds to its owners without it, a chunk of buckets at a
    /// time, each waited for until `deadline` (messages lost on the way are sent again).
    /// Returns how many entries were handed.
    fn hand_over_all(&mut self, deadline: Instant) -> usize {
        let everything = self.agent.everything();
        let buckets: Vec<u16> = LocalStore::digest(&mut self.pool, &everything)
            .into_keys()
            .collect();
        let mut handed = 0;
        for chunk in buckets.chunks(256) {
            let set = chunk.iter().copied().collect();
            let entries = LocalStore::entries_in(&mut self.pool, &everything, &set, usize::MAX);
            handed += self.agent.hand_over(now_ms(), entries);
            self.flush();
            while self.agent.handing_over() > 0 && Instant::now() < deadline {
                match self.inputs.recv_timeout(Duration::from_millis(20)) {
                    Ok(Input::Request { envelope, reply }) => {
                        let r = self
                            .agent
                            .handle_request(now_ms(), envelope, &mut self.pool);
                        let _ = reply.send(r);
                    }
                    Ok(Input::Reply { id, from, reply }) => {
                        self.agent
                            .handle_reply(now_ms(), id, &from, reply, &mut self.pool)
                    }
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                self.agent.resend_hand_over(now_ms(), 2_000);
                self.flush();
            }
        }
        handed
    }
}
