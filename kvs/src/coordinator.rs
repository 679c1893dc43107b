//! Request coordination as a sans-IO state machine: which node runs each operation of a
//! batch, what happens when a node does not answer, and when the batch is done.
//!
//! The node that receives a client's batch (forwarding what it does not own) and the
//! routing client (sending each operation straight to an owner) follow the same rules, so
//! both drive this one core; it does no I/O and reads no clock, so a simulation can drive
//! it too.
//!
//! - [`plan`](Coordinator::plan) groups the operations still to run by target: the first
//!   of each operation's candidates (its owners, in the caller's order of preference; the
//!   caller's own node as [`Target::Here`]) that has not failed it yet.
//! - [`handle`](Coordinator::handle) takes what became of one group:
//!   - answered: each result is final, except [`OpError::NotOwner`] (the target's view
//!     differs: the operation is planned again, after the caller refreshed its view);
//!   - [`Outcome::NotSent`] (certainly never arrived): every operation goes to its next
//!     candidate;
//!   - [`Outcome::MaybeSent`] (may have arrived, no usable answer): reads go to their next
//!     candidate; writes answer [`OpError::Timeout`] — a write that may have been applied
//!     is never run a second time (an increment would count twice: see
//!     [`Write::is_idempotent`](crate::value::Write::is_idempotent)).
//! - When every candidate failed an operation, the next round tries its first candidate
//!   again; after `max_rounds` rounds it answers [`OpError::Unavailable`].

use crate::op::{Op, OpError, Reply};

/// What a coordinator routes: an operation, or a key to subscribe to.
pub trait Item: Clone {
    /// Whether running it twice is harmless (a read, a subscription): one whose request
    /// may have arrived unanswered then goes to the next owner; otherwise it answers
    /// [`OpError::Timeout`].
    fn repeatable(&self) -> bool;
}

impl Item for Op {
    fn repeatable(&self) -> bool {
        !is_write(self)
    }
}

/// A subscription to a key (with the fingerprint of the value the subscriber holds):
/// asking twice is harmless.
impl Item for (bytes::Bytes, Option<u64>) {
    fn repeatable(&self) -> bool {
        true
    }
}

/// Where a group of operations runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target<A> {
    /// On the caller's own node (it owns the keys, or keeps a write as a hint).
    Here,
    /// On this node.
    Node(A),
}

/// A group of operations to send (or to run here): answer it with
/// [`handle`](Coordinator::handle) and its `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Send<A, I = Op> {
    /// The group's id.
    pub id: u64,
    /// Where it runs.
    pub target: Target<A>,
    /// The positions of its operations in the batch.
    pub positions: Vec<usize>,
    /// The operations.
    pub ops: Vec<I>,
}

/// What became of a group.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<R = Reply> {
    /// The target answered: one result per operation, in order.
    Answered(Vec<Result<R, OpError>>),
    /// The request certainly never reached the target (no connection).
    NotSent,
    /// It may have reached the target, but no usable answer came.
    MaybeSent,
}

/// One batch's coordination. See the [module docs](self).
#[derive(Debug)]
pub struct Coordinator<A, I = Op, R = Reply> {
    ops: Vec<I>,
    results: Vec<Option<Result<R, OpError>>>,
    /// Positions to plan in the next round.
    pending: Vec<usize>,
    /// Per position, the targets that failed it.
    failed: Vec<Vec<A>>,
    /// Groups sent and not yet answered: id → (target, positions).
    in_flight: Vec<(u64, Target<A>, Vec<usize>)>,
    next_id: u64,
    rounds: usize,
    max_rounds: usize,
}

impl<A: Clone + Eq + Ord + std::fmt::Display, I: Item, R: Clone> Coordinator<A, I, R> {
    /// Coordinates `ops` over at most `max_rounds` rounds of sends.
    pub fn new(ops: Vec<I>, max_rounds: usize) -> Self {
        let n = ops.len();
        Coordinator {
            ops,
            results: vec![None; n],
            pending: (0..n).collect(),
            failed: vec![Vec::new(); n],
            in_flight: Vec::new(),
            next_id: 1,
            rounds: 0,
            max_rounds: max_rounds.max(1),
        }
    }

    /// The positions of the operations of group `id`, while it is in flight.
    pub fn positions(&self, id: u64) -> Option<Vec<usize>> {
        self.in_flight
            .iter()
            .find(|g| g.0 == id)
            .map(|g| g.2.clone())
    }

    /// The operation at `position`.
    pub fn op(&self, position: usize) -> Option<&I> {
        self.ops.get(position)
    }

    /// The operations still to plan, with their positions.
    pub fn pending(&self) -> impl Iterator<Item = (usize, &I)> + '_ {
        self.pending.iter().map(|&p| (p, &self.ops[p]))
    }

    /// Plans the next round: `candidates(position, op)` lists where the operation may run,
    /// preferred first. Returns the groups to send, one per target (none when the batch is
    /// done or waits for answers).
    pub fn plan(&mut self, candidates: impl Fn(usize, &I) -> Vec<Target<A>>) -> Vec<Send<A, I>> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.rounds += 1;
        let last_round = self.rounds > self.max_rounds;
        let mut groups: std::collections::BTreeMap<Target<A>, Vec<usize>> =
            std::collections::BTreeMap::new();
        for p in std::mem::take(&mut self.pending) {
            let options = candidates(p, &self.ops[p]);
            let untried = options.iter().find(|t| match t {
                Target::Here => true,
                Target::Node(a) => !self.failed[p].contains(a),
            });
            let pick = untried.or(options.first()).filter(|_| !last_round);
            match pick {
                Some(t) => groups.entry(t.clone()).or_default().push(p),
                None => {
                    let reason = if options.is_empty() {
                        "the cluster has no node that owns the key".to_string()
                    } else {
                        let tried: Vec<String> =
                            self.failed[p].iter().map(|a| a.to_string()).collect();
                        format!("no owner answered (tried {})", tried.join(", "))
                    };
                    self.results[p] = Some(Err(OpError::Unavailable { reason }));
                }
            }
        }
        groups
            .into_iter()
            .map(|(target, positions)| {
                let id = self.next_id;
                self.next_id += 1;
                let ops = positions.iter().map(|&p| self.ops[p].clone()).collect();
                self.in_flight.push((id, target.clone(), positions.clone()));
                Send {
                    id,
                    target,
                    positions,
                    ops,
                }
            })
            .collect()
    }

    /// Takes in what became of group `id`.
    pub fn handle(&mut self, id: u64, outcome: Outcome<R>) {
        let Some(i) = self.in_flight.iter().position(|g| g.0 == id) else {
            return;
        };
        let (_, target, positions) = self.in_flight.swap_remove(i);
        let outcome = match outcome {
            Outcome::Answered(r) if r.len() != positions.len() => Outcome::MaybeSent,
            other => other,
        };
        let node = match &target {
            Target::Here => None,
            Target::Node(a) => Some(a.clone()),
        };
        match outcome {
            Outcome::Answered(results) => {
                for (p, r) in positions.into_iter().zip(results) {
                    if matches!(r, Err(OpError::NotOwner { .. })) {
                        self.pending.push(p);
                    } else {
                        self.results[p] = Some(r);
                    }
                }
            }
            Outcome::NotSent => {
                for p in positions {
                    self.failed[p].extend(node.clone());
                    self.pending.push(p);
                }
            }
            Outcome::MaybeSent => {
                for p in positions {
                    if !self.ops[p].repeatable() {
                        self.results[p] = Some(Err(OpError::Timeout {
                            node: node.as_ref().map_or("this node".into(), |a| a.to_string()),
                        }));
                    } else {
                        self.failed[p].extend(node.clone());
                        self.pending.push(p);
                    }
                }
            }
        }
        self.pending.sort_unstable();
    }

    /// Whether some operation waits for another round (the caller may refresh its view
    /// first, then [`plan`](Self::plan)).
    pub fn needs_round(&self) -> bool {
        !self.pending.is_empty() && self.in_flight.is_empty()
    }

    /// Whether every operation has its result.
    pub fn is_done(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }

    /// The results, one per operation, in order (an operation without one, which a caller
    /// that stops early leaves, answers `Unavailable`).
    pub fn into_results(self) -> Vec<Result<R, OpError>> {
        self.results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(OpError::Unavailable {
                        reason: "no owner answered".into(),
                    })
                })
            })
            .collect()
    }
}

/// Where a node may run `op`, preferred first, given the key's `owners` as it sees them
/// (ring order, each with whether it is seen alive):
///
/// - with `preferred` (keys without replication of their own), the owners seen alive, in
///   ring order, then the others (suspected): a key's reads and writes all go to its first
///   live owner — this node when it is that owner — so a client reads its own writes through
///   any node while no owner fails (the other replicas get them by gossip);
/// - without (a hot key with more replicas), here if this node owns the key, so the
///   replicas share the key's reads;
/// - a key without owners yet runs here;
/// - with `hints` (ack `one`), a write that no owner takes is kept here as a *hint* — at
///   once when no owner is seen alive — and handed to the owners once they are reachable,
///   so both sides of a partition keep accepting writes.
pub fn candidates<A: Clone + PartialEq>(
    me: &A,
    owners: &[(A, bool)],
    op: &Op,
    hints: bool,
    preferred: bool,
) -> Vec<Target<A>> {
    let mine = owners.iter().any(|(a, _)| a == me);
    if owners.is_empty() || (mine && !preferred) {
        return vec![Target::Here];
    }
    let hint = hints && is_write(op);
    if hint && !owners.iter().any(|(_, alive)| *alive) {
        return vec![Target::Here];
    }
    let alive = owners.iter().filter(|(a, alive)| *alive || a == me);
    let suspect = owners.iter().filter(|(a, alive)| !*alive && a != me);
    let mut out: Vec<Target<A>> = alive
        .chain(suspect)
        .map(|(a, _)| {
            if a == me {
                Target::Here
            } else {
                Target::Node(a.clone())
            }
        })
        .collect();
    if hint && !mine {
        out.push(Target::Here);
    }
    out
}

/// Whether an operation changes state (and so must not run twice).
pub fn is_write(op: &Op) -> bool {
    matches!(op, Op::Write { .. } | Op::Delete { .. } | Op::Expire { .. })
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::value::Write;
    use bytes::Bytes;

    fn put(k: &str) -> Op {
        Op::Write {
            key: Bytes::copy_from_slice(k.as_bytes()),
            write: Write::Increment(1),
        }
    }

    fn get(k: &str) -> Op {
        Op::Get {
            key: Bytes::copy_from_slice(k.as_bytes()),
            meta: false,
        }
    }

    type C = Coordinator<String>;

    fn node(a: &str) -> Target<String> {
        Target::Node(a.to_string())
    }

    /// Owners by the key's first letter: a → [n1, n2], b → [here], c → [n2, n1].
    fn owners(_: usize, op: &Op) -> Vec<Target<String>> {
        match op.key()[0] {
            b'a' => vec![node("n1"), node("n2")],
            b'b' => vec![Target::Here],
            _ => vec![node("n2"), node("n1")],
        }
    }

    #[test]
    fn a_batch_goes_out_one_group_per_target_and_comes_back_in_order() {
        let mut c = C::new(vec![put("a1"), get("b1"), put("c1"), get("a2")], 3);
        let sends = c.plan(owners);
        let targets: Vec<_> = sends
            .iter()
            .map(|s| (s.target.clone(), s.positions.clone()))
            .collect();
        assert_eq!(
            targets,
            vec![
                (Target::Here, vec![1]),
                (node("n1"), vec![0, 3]),
                (node("n2"), vec![2])
            ]
        );
        for s in sends {
            let answers = s
                .positions
                .iter()
                .map(|p| Ok(Reply::Deleted { existed: *p == 0 }))
                .collect();
            c.handle(s.id, Outcome::Answered(answers));
        }
        assert!(c.is_done());
        let r = c.into_results();
        assert_eq!(r[0], Ok(Reply::Deleted { existed: true }));
        assert_eq!(r[3], Ok(Reply::Deleted { existed: false }));
    }

    #[test]
    fn never_sent_goes_to_the_next_owner_and_maybe_sent_writes_are_not_run_twice() {
        let mut c = C::new(vec![put("a1"), get("a2")], 3);
        let first = c.plan(owners);
        assert_eq!(first.len(), 1);
        c.handle(first[0].id, Outcome::MaybeSent);
        // The write may have been applied: it times out; the read goes to n2.
        assert!(c.needs_round());
        let second = c.plan(owners);
        assert_eq!(second.len(), 1);
        assert_eq!(
            (second[0].target.clone(), second[0].positions.clone()),
            (node("n2"), vec![1])
        );
        c.handle(second[0].id, Outcome::NotSent);
        // n1 and n2 both failed the read: the first owner is tried again, then it gives up.
        let third = c.plan(owners);
        assert_eq!(third[0].target, node("n1"));
        c.handle(third[0].id, Outcome::NotSent);
        assert!(c.plan(owners).is_empty());
        let r = c.into_results();
        assert_eq!(r[0], Err(OpError::Timeout { node: "n1".into() }));
        assert!(matches!(&r[1], Err(OpError::Unavailable { reason }) if reason.contains("n1, n2")));
    }

    #[test]
    fn not_sent_writes_go_elsewhere_and_not_owner_is_planned_again() {
        let mut c = C::new(vec![put("a1"), put("c1")], 3);
        let sends = c.plan(owners);
        for s in &sends {
            if s.target == node("n1") {
                c.handle(s.id, Outcome::NotSent);
            } else {
                c.handle(
                    s.id,
                    Outcome::Answered(vec![Err(OpError::NotOwner { owners: vec![] })]),
                );
            }
        }
        let again = c.plan(owners);
        let targets: Vec<_> = again
            .iter()
            .map(|s| (s.target.clone(), s.positions.clone()))
            .collect();
        // a1 (never reached n1) goes to n2; c1 (n2 said not mine) goes to n2 again, whose
        // view the caller refreshed meanwhile.
        assert_eq!(targets, vec![(node("n2"), vec![0, 1])]);
        c.handle(
            again[0].id,
            Outcome::Answered(vec![Ok(Reply::Written), Ok(Reply::Written)]),
        );
        assert_eq!(
            c.into_results(),
            vec![Ok(Reply::Written), Ok(Reply::Written)]
        );
    }

    #[test]
    fn reads_and_writes_go_to_the_first_live_owner() {
        let me = "n2".to_string();
        let owners = |a: bool, b: bool| vec![("n1".to_string(), a), ("n2".to_string(), b)];
        // This node is the second owner: the first, alive, takes the key.
        assert_eq!(
            candidates(&me, &owners(true, true), &put("k"), true, true),
            vec![node("n1"), Target::Here]
        );
        // A hot key's replicas share it: here.
        assert_eq!(
            candidates(&me, &owners(true, true), &get("k"), true, false),
            vec![Target::Here]
        );
        // The first owner is suspected: here first.
        assert_eq!(
            candidates(&me, &owners(false, true), &get("k"), true, true),
            vec![Target::Here, node("n1")]
        );
        // Not an owner, none alive: a write with ack one is kept here as a hint.
        let others = vec![("n1".to_string(), false), ("n3".to_string(), false)];
        assert_eq!(
            candidates(&me, &others, &put("k"), true, true),
            vec![Target::Here]
        );
        assert_eq!(
            candidates(&me, &others, &put("k"), false, true),
            vec![node("n1"), node("n3")]
        );
        let one_alive = vec![("n1".to_string(), false), ("n3".to_string(), true)];
        assert_eq!(
            candidates(&me, &one_alive, &put("k"), true, true),
            vec![node("n3"), node("n1"), Target::Here]
        );
    }

    #[test]
    fn a_short_answer_counts_as_maybe_sent() {
        let mut c = C::new(vec![put("a1"), put("a2")], 3);
        let s = c.plan(owners);
        c.handle(s[0].id, Outcome::Answered(vec![Ok(Reply::Written)]));
        assert!(c.is_done());
        assert!(
            c.into_results()
                .iter()
                .all(|r| matches!(r, Err(OpError::Timeout { .. })))
        );
    }
}
