//! The agent's unit tests: several agents and workers exchanging messages by hand.

use super::*;
use crate::{HashRing, Worker, WorkerConfig, Write};
use calm_lattice::ReplicaId;

/// Two nodes, both owning every key, run for `seconds` of simulated time with `keys`
/// keys each; returns node 0's anti-entropy rounds.
fn rounds_with(keys: usize, seconds: u64) -> u64 {
    let config = ClusterConfig {
        replication: 2,
        anti_entropy_period_ms: 200,
        ..ClusterConfig::default()
    };
    let mut agents = [
        ClusterAgent::new("n0".into(), vec![], config, 1, 1),
        ClusterAgent::new("n1".into(), vec!["n0".into()], config, 1, 2),
    ];
    let mut stores: Vec<Worker> = (0..2)
        .map(|i| {
            let ring = Arc::new(HashRing::new([0], 1));
            let mut w = Worker::new(0, ReplicaId(i + 1), ring, WorkerConfig::default());
            let ops: Vec<crate::Op> = (0..keys)
                .map(|k| crate::Op::Write {
                    key: Bytes::from(format!("k{k}")),
                    write: Write::Lww(Bytes::from_static(b"v")),
                })
                .collect();
            w.handle_ops(1, ops);
            w
        })
        .collect();
    let mut now = 1;
    while now < seconds * 1000 {
        now += 50;
        for i in 0..2 {
            agents[i].handle_tick(now, &mut stores[i]);
            while let Some(out) = agents[i].poll_outgoing() {
                let j = if out.to == "n0" { 0 } else { 1 };
                let reply = agents[j].handle_request(now, out.envelope, &mut stores[j]);
                let me = agents[j].me().to_string();
                agents[i].handle_reply(now, out.id, &me, reply, &mut stores[i]);
            }
        }
    }
    agents[0].stats().anti_entropy_rounds
}

/// Writes acknowledged by all replicas: the agent sends them to every other owner and
/// settles the ticket once enough merged them, or once every owner answered or failed.
/// Three agents (and their workers) with `replication` that have met each other.
fn three_that_met(replication: usize) -> (Vec<ClusterAgent>, Vec<Worker>, u64) {
    let config = ClusterConfig {
        replication,
        ..ClusterConfig::default()
    };
    let mut agents: Vec<ClusterAgent> = (0..3u64)
        .map(|i| {
            let seeds = if i == 0 { vec![] } else { vec!["n0".into()] };
            ClusterAgent::new(format!("n{i}"), seeds, config, 1, i)
        })
        .collect();
    let ring = Arc::new(HashRing::new([0], 1));
    let mut stores: Vec<Worker> = (0..3)
        .map(|i| Worker::new(0, ReplicaId(i + 1), ring.clone(), WorkerConfig::default()))
        .collect();
    let index = |to: &str| to[1..].parse::<usize>().unwrap();
    let mut now = 1;
    while now < 3_000 {
        now += 50;
        for i in 0..3 {
            agents[i].handle_tick(now, &mut stores[i]);
            while let Some(out) = agents[i].poll_outgoing() {
                let j = index(&out.to);
                let reply = agents[j].handle_request(now, out.envelope, &mut stores[j]);
                let me = agents[j].me().to_string();
                agents[i].handle_reply(now, out.id, &me, reply, &mut stores[i]);
            }
        }
    }
    (agents, stores, now)
}

/// A key `agent` sees owned by `owners`, in that order.
fn key_owned_by(agent: &ClusterAgent, owners: &[&str]) -> Bytes {
    (0..1000)
        .map(|i| Bytes::from(format!("key{i}")))
        .find(|k| agent.owners(k).iter().eq(owners))
        .expect("some key has these owners")
}

/// Increments `keys` on `store`; the deltas.
fn increment(
    store: &mut Worker,
    now: u64,
    keys: impl IntoIterator<Item = Bytes>,
) -> crate::worker::Changes {
    store.collect_changes();
    let ops: Vec<crate::Op> = keys
        .into_iter()
        .map(|key| crate::Op::Write {
            key,
            write: Write::Increment(1),
        })
        .collect();
    store.handle_ops(now, ops);
    store.take_changes()
}

#[test]
fn an_idle_link_replicates_at_once_and_a_busy_one_batches() {
    let (mut agents, mut stores, now) = three_that_met(2);
    let key = key_owned_by(&agents[0], &["n0", "n1"]);
    stores[0].collect_changes();
    let write = |agents: &mut Vec<ClusterAgent>, stores: &mut Vec<Worker>| {
        stores[0].handle_ops(
            now,
            [crate::Op::Write {
                key: key.clone(),
                write: Write::Increment(1),
            }],
        );
        agents[0].on_local_changes(stores[0].take_changes());
        let mut deltas = Vec::new();
        while let Some(out) = agents[0].poll_outgoing() {
            if matches!(out.envelope.body, PeerRequest::Deltas(_)) {
                deltas.push(out);
            }
        }
        deltas
    };
    // No tick in between: the write goes at once.
    let first = write(&mut agents, &mut stores);
    assert_eq!(
        first.len(),
        1,
        "the idle link to n1 carries the write at once"
    );
    // While that message is in flight, writes wait, merged per key.
    assert!(write(&mut agents, &mut stores).is_empty());
    assert!(write(&mut agents, &mut stores).is_empty());
    // Its answer frees the link: what piled up goes in one message.
    let out = first.into_iter().next().unwrap();
    let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
    agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
    let next: Vec<Outgoing> = std::iter::from_fn(|| agents[0].poll_outgoing())
        .filter(|o| matches!(o.envelope.body, PeerRequest::Deltas(_)))
        .collect();
    assert_eq!(next.len(), 1);
    assert!(matches!(&next[0].envelope.body, PeerRequest::Deltas(d) if d.len() == 1));
}

#[test]
fn a_hint_whose_gossip_fails_is_sent_again_at_the_next_gossip() {
    // n0 keeps a write for a key n1 and n2 own (a hint): a gossip message to them that
    // fails must not drop it.
    let (mut agents, mut stores, mut now) = three_that_met(2);
    let key = (0..1000)
        .map(|i| Bytes::from(format!("key{i}")))
        .find(|k| !agents[0].owns(k))
        .expect("some key is not n0's");
    stores[0].collect_changes();
    stores[0].handle_ops(
        now,
        [crate::Op::Write {
            key: key.clone(),
            write: Write::Increment(1),
        }],
    );
    agents[0].on_local_changes(stores[0].take_changes());
    let carries = |envelope: &PeerEnvelope| matches!(&envelope.body, PeerRequest::Deltas(d) if d.iter().any(|(k, _)| *k == key));
    for round in 0..3 {
        now += 200;
        agents[0].handle_tick(now, &mut stores[0]);
        let mut sent = 0;
        while let Some(out) = agents[0].poll_outgoing() {
            if carries(&out.envelope) {
                sent += 1;
                agents[0].handle_failure(out.id);
            }
        }
        assert_eq!(sent, 2, "round {round}: the hint goes to both owners again");
    }
}

#[test]
fn a_node_that_left_is_no_replica_of_a_write() {
    // n1 owns the key with n0 but has announced its leave (its hand-over is done): it
    // still answers what it is sent, and must not count as the write's second replica.
    let (mut agents, mut stores, now) = three_that_met(2);
    let key = key_owned_by(&agents[0], &["n0", "n1"]);
    agents[1].leave();
    let changes = increment(&mut stores[0], now, [key]);
    let ticket = agents[0].replicate(changes, Need::Owners(usize::MAX));
    while let Some(out) = agents[0].poll_outgoing() {
        if out.to == "n1" {
            let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
            agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
        }
    }
    assert_eq!(agents[0].poll_replicated(), Some((ticket, Err((1, 2)))));
}

#[test]
fn a_batch_is_acknowledged_only_when_each_key_reached_its_replicas() {
    // Two keys n0 owns, one with n1 and one with n2: n1 merging its key must not count
    // as a second replica of the other.
    let (mut agents, mut stores, now) = three_that_met(2);
    let k1 = key_owned_by(&agents[0], &["n0", "n1"]);
    let k2 = key_owned_by(&agents[0], &["n0", "n2"]);
    let changes = increment(&mut stores[0], now, [k1, k2]);
    let ticket = agents[0].replicate(changes, Need::Owners(usize::MAX));
    while let Some(out) = agents[0].poll_outgoing() {
        if out.to == "n1" {
            let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
            agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
        } else {
            agents[0].handle_failure(out.id);
        }
    }
    assert_eq!(
        agents[0].poll_replicated(),
        Some((ticket, Err((1, 2)))),
        "the key owned with n2 has one replica"
    );
}

#[test]
fn writes_wait_for_their_replicas_through_the_agent() {
    let (mut agents, mut stores, now) = three_that_met(3);
    let index = |to: &str| to[1..].parse::<usize>().unwrap();
    assert_eq!(agents[0].owners(b"k").len(), 3);
    stores[0].collect_changes();
    stores[0].handle_ops(
        now,
        [crate::Op::Write {
            key: Bytes::from_static(b"k"),
            write: Write::Increment(5),
        }],
    );
    let changes = stores[0].take_changes();
    // All replicas asked; n1 merges, the message to n2 is lost.
    let run = |agents: &mut Vec<ClusterAgent>, stores: &mut Vec<Worker>, need| {
        let ticket = agents[0].replicate(changes.clone(), need);
        while let Some(out) = agents[0].poll_outgoing() {
            if !matches!(out.envelope.body, PeerRequest::Deltas(_)) {
                continue;
            }
            let j = index(&out.to);
            if j == 1 {
                let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
                agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
            } else {
                agents[0].handle_failure(out.id);
            }
        }
        (ticket, agents[0].poll_replicated())
    };
    let (t, outcome) = run(&mut agents, &mut stores, Need::Owners(usize::MAX));
    assert_eq!(
        outcome,
        Some((t, Err((2, 3)))),
        "two of three replicas hold it"
    );
    let (t, outcome) = run(&mut agents, &mut stores, Need::Owners(2));
    assert_eq!(outcome, Some((t, Ok(()))), "two replicas were asked for");
    assert!(stores[1].value(b"k").is_some(), "n1 merged the write");
    assert!(agents[0].poll_replicated().is_none());
}

#[test]
fn visible_writes_wait_for_every_owner_seen_alive_and_never_fail() {
    // Ack `visible`: n0's write to a key all three own is answered only once n1 and n2
    // merged it (or their messages failed, which does not fail it); a suspected owner
    // is not waited for.
    let (mut agents, mut stores, now) = three_that_met(3);
    let changes = increment(&mut stores[0], now, [Bytes::from_static(b"k")]);
    let ticket = agents[0].replicate(changes.clone(), Need::Live);
    let sent: Vec<Outgoing> = std::iter::from_fn(|| agents[0].poll_outgoing()).collect();
    assert_eq!(
        sent.len(),
        2,
        "both other owners are sent the write at once"
    );
    for out in sent {
        assert!(agents[0].poll_replicated().is_none(), "answered too early");
        if out.to == "n1" {
            let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
            agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
        } else {
            agents[0].handle_failure(out.id);
        }
    }
    assert_eq!(agents[0].poll_replicated(), Some((ticket, Ok(()))));
    assert!(stores[1].value(b"k").is_some(), "n1 merged the write");

    // n2 suspected: the write is answered once n1 merged it.
    let incarnation = agents[0].membership.get("n2").unwrap().incarnation;
    agents[0]
        .membership
        .record("n2", incarnation, Status::Suspect);
    let ticket = agents[0].replicate(changes, Need::Live);
    for out in std::iter::from_fn(|| agents[0].poll_outgoing()).collect::<Vec<_>>() {
        if out.to == "n1" {
            let reply = agents[1].handle_request(now, out.envelope, &mut stores[1]);
            agents[0].handle_reply(now, out.id, "n1", reply, &mut stores[0]);
        }
    }
    assert_eq!(
        agents[0].poll_replicated(),
        Some((ticket, Ok(()))),
        "n2's answer is not waited for"
    );
}

#[test]
fn waiting_writes_share_a_busy_link() {
    // Clients' writes go to n1 at once while fewer than WAITED_DELTAS_IN_FLIGHT messages
    // are unanswered; then the next ones wait and share the message that follows the
    // first answer. Each write is answered when the message carrying it is.
    let (mut agents, mut stores, now) = three_that_met(2);
    let key = key_owned_by(&agents[0], &["n0", "n1"]);
    let mut tickets = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..WAITED_DELTAS_IN_FLIGHT {
        let changes = increment(&mut stores[0], now, [key.clone()]);
        tickets.push(agents[0].replicate(changes, Need::Live));
        sent.push(agents[0].poll_outgoing().expect("sent at once"));
    }
    let later: Vec<u64> = (0..2)
        .map(|_| {
            let changes = increment(&mut stores[0], now, [key.clone()]);
            agents[0].replicate(changes, Need::Live)
        })
        .collect();
    assert!(agents[0].poll_outgoing().is_none(), "the busy link batches");
    for (i, m) in sent.into_iter().enumerate() {
        let reply = agents[1].handle_request(now, m.envelope, &mut stores[1]);
        agents[0].handle_reply(now, m.id, "n1", reply, &mut stores[0]);
        assert_eq!(agents[0].poll_replicated(), Some((tickets[i], Ok(()))));
    }
    assert!(
        agents[0].poll_replicated().is_none(),
        "the later writes are not merged yet"
    );
    let next = agents[0].poll_outgoing().expect("an answer frees the link");
    assert!(
        agents[0].poll_outgoing().is_none(),
        "one message for both later writes"
    );
    let reply = agents[1].handle_request(now, next.envelope, &mut stores[1]);
    agents[0].handle_reply(now, next.id, "n1", reply, &mut stores[0]);
    for t in later {
        assert_eq!(agents[0].poll_replicated(), Some((t, Ok(()))));
    }
    assert_eq!(
        stores[1].value(&key).and_then(|v| v.read(false)),
        stores[0].value(&key).and_then(|v| v.read(false)),
        "n1 holds every increment"
    );
}

#[test]
fn nothing_happens_between_the_deadlines_the_agent_gives() {
    // The shell sleeps until next_deadline_ms: a tick before it must have nothing to
    // do, and the agent must still probe its peers as often as configured.
    let (mut agents, mut stores, mut now) = three_that_met(2);
    let mut probes = 0;
    let start = now;
    while now < start + 10_000 {
        let due = agents[0]
            .next_deadline_ms()
            .expect("a member has work scheduled");
        assert!(due > now, "the deadline {due} is not after {now}");
        agents[0].handle_tick(due - 1, &mut stores[0]);
        assert!(
            agents[0].poll_outgoing().is_none(),
            "a tick before the deadline sent something"
        );
        now = due;
        agents[0].handle_tick(now, &mut stores[0]);
        for out in std::iter::from_fn(|| agents[0].poll_outgoing()).collect::<Vec<_>>() {
            probes += usize::from(matches!(out.envelope.body, PeerRequest::Ping));
            let i: usize = out.to[1..].parse().unwrap();
            let reply = agents[i].handle_request(now, out.envelope, &mut stores[i]);
            agents[0].handle_reply(now, out.id, &out.to, reply, &mut stores[0]);
        }
    }
    let period = ClusterConfig::default().probe_period_ms as usize;
    assert!(probes + 1 >= 10_000 / period, "{probes} probes in 10 s");
}

#[test]
fn a_big_store_spaces_its_anti_entropy_rounds_out() {
    // A round every gossip period for the first second (catch-up), then every 200 ms
    // for a small store, and every 1.2 s for 30,000 keys (25,000 keys a second).
    let small = rounds_with(100, 20);
    let big = rounds_with(30_000, 20);
    assert!((95..=115).contains(&small), "{small} rounds in 20 s");
    assert!((20..=32).contains(&big), "{big} rounds in 20 s");
}

/// An application's lattice for the tests of refusals: the most seen.
#[derive(
    calm_lattice::Lattice,
    Default,
    Clone,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
struct Most {
    most: calm_lattice::Max<u64>,
}

impl crate::value::CustomLattice for Most {
    const KIND: &'static str = "most";
}

#[test]
fn what_an_owner_refuses_stays_with_the_sender_and_the_rest_goes() {
    // n0 holds writes for keys n1 and n2 own (hints): a counter, and a value of a kind
    // only n0 was started with. The owners merge the counter and refuse the other; n0
    // keeps sending it, and keeps its copy through every hand-off, while it has no owner
    // that takes it.
    let (mut agents, mut stores, mut now) = three_that_met(2);
    let kinds = crate::value::Kinds::new().with::<Most>().unwrap();
    let ring = Arc::new(HashRing::new([0], 1));
    stores[0] = Worker::new(0, ReplicaId(1), ring, WorkerConfig::default()).accepting(kinds);
    let mut theirs = (0..1000)
        .map(|i| Bytes::from(format!("key{i}")))
        .filter(|k| !agents[0].owns(k));
    let (counter, custom) = (theirs.next().unwrap(), theirs.next().unwrap());
    stores[0].collect_changes();
    let results = stores[0].handle_ops(
        now,
        [
            crate::Op::Write {
                key: counter.clone(),
                write: Write::Increment(1),
            },
            crate::Op::Write {
                key: custom.clone(),
                write: Write::custom(&Most {
                    most: calm_lattice::Max::new(7),
                })
                .unwrap(),
            },
        ],
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    agents[0].on_local_changes(stores[0].take_changes());
    let carries = |envelope: &PeerEnvelope, key: &Bytes| matches!(&envelope.body, PeerRequest::Deltas(d) if d.iter().any(|(k, _)| k == key));
    let index = |to: &str| to[1..].parse::<usize>().unwrap();
    let mut custom_sent = 0;
    let mut refusals = 0;
    while now < 20_000 {
        now += 50;
        for i in 0..3 {
            agents[i].handle_tick(now, &mut stores[i]);
            while let Some(out) = agents[i].poll_outgoing() {
                custom_sent += usize::from(i == 0 && carries(&out.envelope, &custom));
                let j = index(&out.to);
                let reply = agents[j].handle_request(now, out.envelope, &mut stores[j]);
                refusals += usize::from(matches!(reply, PeerReply::Refused { .. }));
                let me = agents[j].me().to_string();
                agents[i].handle_reply(now, out.id, &me, reply, &mut stores[i]);
            }
        }
    }
    let read = |store: &mut Worker, key: &Bytes| store.value(key).and_then(|v| v.read(false));
    for owner in [1, 2] {
        assert_eq!(
            read(&mut stores[owner], &counter).and_then(|r| r.as_counter()),
            Some(1),
            "n{owner} merged the counter"
        );
        assert_eq!(read(&mut stores[owner], &custom), None, "n{owner} refused");
    }
    assert_eq!(
        read(&mut stores[0], &custom).map(|r| r.custom::<Most>().unwrap()),
        Some(Most {
            most: calm_lattice::Max::new(7)
        }),
        "the sender keeps what no owner took"
    );
    assert!(refusals >= 2, "both owners refused ({refusals} refusals)");
    assert!(
        custom_sent > 4,
        "the refused value is sent again ({custom_sent} times)"
    );
}
