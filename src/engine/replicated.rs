//! The replicated side of the seam: a slot group's commands on the core that hosts the group,
//! while this node leads it.
//!
//! The leader evaluates a batch once, against its current state, with the shard journaling
//! (records + before-images, see `spec`); what the batches of one event-loop pass recorded
//! for a group becomes ONE proposal, handed to the group's Raft log when the pass ends. A reply
//! waits until the last proposal that changed any key it depends on has committed: so no
//! reply ever shows a write that could still be lost, reads never wait for writes to other
//! keys, and writers never wait for each other — a later write's entry commits after an
//! earlier one's anyway (one log), so evaluating it against the uncommitted state is safe.
//! Replicas apply the records; no node executes a command from the log.
//!
//! If the leadership is lost with proposals pending, `lost` undoes them (the shard goes back
//! to its committed state) before the node applies anything else, and their waiting replies
//! get a refusal: UNCERTAIN for a write whose entry reached Raft (it may still commit under
//! the next leader), a redirect for everything else.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use super::core::{BatchReply, Core, Op};
use super::spec::{Pid, Spec};
use crate::cluster::types::{GroupId, NodeId};
use crate::command::table::registry;
use crate::protocol::Out;

/// Why a slot group's command was not served here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another node leads the group: redirect there.
    Moved(NodeId),
    /// No leader is known (an election is running, or no quorum).
    NoLeader,
    /// This node leads the group but no quorum has acknowledged it for a node timeout (cut
    /// off from its followers, which may have elected another leader meanwhile).
    NoQuorum,
    /// The write may or may not commit (its leader lost the leadership or the quorum with
    /// the entry in flight): the client must not assume either.
    Uncertain,
    /// Raft stopped on this node (shutting down, or a fatal storage error).
    Down,
}

/// Whether this node may evaluate a group's commands now.
pub enum Admit {
    /// Yes: it leads the group (in this term), has applied every entry of earlier leaders,
    /// and a quorum acknowledged it recently enough that no other leader can exist (the
    /// lease).
    Now(u64),
    /// It leads the group but must first confirm it with a quorum (Raft's read index), and
    /// have applied everything committed before: call [`Consensus::confirm`], then admit again.
    Confirm,
    Refuse(Refusal),
}

/// What the engine needs from consensus: implemented by the cluster room on each core.
pub trait Consensus {
    fn admit(&self, g: GroupId) -> Admit;

    /// Resolves once a quorum confirmed this node's leadership of `g` and every entry
    /// committed before the call is applied here.
    fn confirm(&self, g: GroupId) -> LocalBoxFuture<'static, Result<(), Refusal>>;

    /// Hands a proposal to `g`'s log (in the order of the calls). Its fate comes back through
    /// [`committed`] (when the entry applies) or [`lost`].
    fn propose(&self, g: GroupId, pid: Pid, payload: Vec<u8>);
}

/// A reply waiting for a proposal to commit.
struct Waiter {
    gate: Pid,
    /// Whether the batch changed anything (its refusal may then be UNCERTAIN).
    wrote: bool,
    tx: oneshot::Sender<Result<(), Refusal>>,
}

/// One core's replicated writes: the uncommitted proposals and the replies waiting for them.
#[derive(Default)]
pub struct Replicated {
    pub spec: Spec,
    waiters: HashMap<GroupId, Vec<Waiter>>,
    /// Per group, the last proposal handed to Raft and when the oldest unanswered one was.
    sent: HashMap<GroupId, (Pid, Option<Instant>)>,
    propose_scheduled: bool,
}

/// How long a reply waits for its proposal to commit before it is answered UNCERTAIN (a
/// leader cut off from its followers neither commits nor learns that it lost).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one connection batch's ops for group `g` on the core hosting it.
pub async fn run_batch(core: &Rc<Core>, g: GroupId, ops: Vec<Op>, resp3: bool) -> BatchReply {
    let Some(consensus) = core.consensus() else {
        return refused(core, &ops, &Refusal::Down, resp3);
    };
    match consensus.admit(g) {
        Admit::Now(_) => {}
        Admit::Refuse(why) => return refused(core, &ops, &why, resp3),
        Admit::Confirm => {
            if let Err(why) = consensus.confirm(g).await {
                return refused(core, &ops, &why, resp3);
            }
            // Admitted again, now: the confirmation renewed the lease.
            if let Admit::Refuse(why) = consensus.admit(g) {
                return refused(core, &ops, &why, resp3);
            }
        }
    }
    if ops.iter().any(super::routing::grows) && core.refuse_growth() {
        return super::routing::refuse_growing(&ops, resp3, |ops| {
            Box::pin(run_batch(core, g, ops, resp3))
        })
        .await;
    }
    if core.gate.blocks(None) {
        // A script paused on this core (see `pause`) ends first; then this batch is admitted
        // again, its leadership having had time to change.
        if let Err(busy) = core.wait_unless_busy(None).await {
            return super::core::busy_replies(ops.len(), resp3, busy);
        }
        return Box::pin(run_batch(core, g, ops, resp3)).await;
    }
    let ends = Vec::with_capacity(ops.len());
    let now = core.prepare();
    let (ops, out, ends, journal) = {
        let mut shard = core.shard.borrow_mut();
        shard.start_journal();
        // The leader's lazy expiry deletes what it finds expired, and the deletion is a
        // record like any other: every replica deletes the key at the same point.
        shard.expire_deletes = true;
        drop(shard);
        // A script among the ops may pause, holding the core's gate (see `pause`).
        let ran = core.execute_or_pause(ops, now, Out::new(resp3), ends, None);
        let (ops, out, ends) = ran.done().await;
        let mut shard = core.shard.borrow_mut();
        shard.expire_deletes = false;
        (ops, out, ends, shard.take_journal().unwrap_or_default())
    };
    core.publish_memory();
    let wrote = absorb(core, g, journal, now);
    let gate = {
        let mut rep = core.replicated.borrow_mut();
        let read = ops
            .iter()
            .filter_map(|op| read_gate(&rep.spec, g, op))
            .max();
        let gate = wrote.max(read);
        match gate {
            Some(gate) if gate > rep.spec.committed(g) => {
                let (tx, rx) = oneshot::channel();
                rep.waiters.entry(g).or_default().push(Waiter {
                    gate,
                    wrote: wrote.is_some(),
                    tx,
                });
                Some(rx)
            }
            _ => None,
        }
    };
    if let Some(rx) = gate {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return refused(core, &ops, &why, resp3),
            Err(_) => return refused(core, &ops, &Refusal::Down, resp3),
        }
    }
    BatchReply { buf: out.buf, ends }
}

/// Adds what a journal recorded for group `g` to this pass's proposal for it (opened if
/// needed, handed to Raft when the pass ends); the proposal's id, if anything was recorded.
pub fn absorb(
    core: &Rc<Core>,
    g: GroupId,
    journal: crate::shard::Journal,
    now: u64,
) -> Option<Pid> {
    // Debug builds (the tests) check that a group's journal changed only the group's keys:
    // a key of another group in it would be deleted or written on this node only.
    #[cfg(debug_assertions)]
    if let Some(cluster) = core.shared.cluster() {
        for (db, key, _) in &journal.images {
            let other = cluster.group_of(crate::cluster::key_slot(key) as usize);
            if other != g {
                tracing::error!(
                    "journal of slot group {g} changes {} (db {db}) of group {other}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }
    let mut rep = core.replicated.borrow_mut();
    let pid = rep.spec.absorb(g, journal, now);
    if pid.is_some() && !rep.propose_scheduled {
        rep.propose_scheduled = true;
        schedule_proposals(core);
    }
    pid
}

/// The last pending proposal `op`'s reply depends on through the keys it names (None: its
/// keys have nothing pending). A command whose keys the table cannot name depends on
/// everything pending in the group.
fn read_gate(spec: &Spec, g: GroupId, op: &Op) -> Option<Pid> {
    let Some(def) = registry().get(op.cmd_id as usize) else {
        return spec.group_last(g);
    };
    def.keys
        .positions(&op.args)
        .filter_map(|p| spec.last_pid(op.db, &op.args[p]))
        .max()
}

/// The same refusal for every op (a batch whose replies could not be confirmed).
pub fn refused_all(core: &Core, ops: &[Op], why: &Refusal, resp3: bool) -> BatchReply {
    refused(core, ops, why, resp3)
}

/// The same refusal for every op.
fn refused(core: &Core, ops: &[Op], why: &Refusal, resp3: bool) -> BatchReply {
    let cluster = core.shared.cluster().map(|c| &**c);
    let mut out = Out::new(resp3);
    let mut ends = Vec::with_capacity(ops.len());
    for op in ops {
        out.error(&super::routing::refusal_text(cluster, op, why));
        ends.push(out.buf.len());
    }
    BatchReply { buf: out.buf, ends }
}

/// Hands every group's proposal of this pass to Raft once the pass's other tasks have run
/// (so all the connections served in the pass share one entry per group).
fn schedule_proposals(core: &Rc<Core>) {
    let core = core.clone();
    glommio::spawn_local(async move {
        super::persist::yield_now().await;
        propose_filled(&core);
    })
    .detach();
}

/// Proposes what every group of this core collected since the last call.
pub fn propose_filled(core: &Rc<Core>) {
    let Some(consensus) = core.consensus() else {
        return;
    };
    let proposals: Vec<(GroupId, Pid, Vec<u8>)> = {
        let mut rep = core.replicated.borrow_mut();
        rep.propose_scheduled = false;
        let groups = rep.spec.filling_groups();
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            if let Some((pid, payload)) = rep.spec.take_filling(g) {
                let sent = rep.sent.entry(g).or_insert((0, None));
                sent.0 = pid;
                sent.1.get_or_insert_with(Instant::now);
                out.push((g, pid, payload));
            }
        }
        out
    };
    for (g, pid, payload) in proposals {
        consensus.propose(g, pid, payload);
    }
}

/// Whether `pid` is group `g`'s oldest pending proposal on this core: the entry being applied
/// is this leader's own, applied already.
pub fn is_own(core: &Core, g: GroupId, pid: Pid) -> bool {
    core.replicated.borrow().spec.front(g) == Some(pid)
}

/// Group `g`'s proposal `pid` committed (its entry is being applied here, where it was
/// evaluated): its keys are persisted as of now, and the replies it gated go out.
pub fn committed(core: &Core, g: GroupId, pid: Pid) {
    let mut rep = core.replicated.borrow_mut();
    let Some(keys) = rep.spec.commit(g, pid) else {
        return;
    };
    {
        let mut shard = core.shard.borrow_mut();
        for (db, key) in &keys {
            shard.select(*db as usize);
            shard.mark_changed(key);
        }
        shard.select(0);
    }
    if let Some(sent) = rep.sent.get_mut(&g) {
        sent.1 = if sent.0 > pid {
            Some(Instant::now())
        } else {
            None
        };
    }
    if let Some(waiters) = rep.waiters.get_mut(&g) {
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].gate <= pid {
                let w = waiters.swap_remove(i);
                let _ = w.tx.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }
}

/// This node lost group `g`'s leadership (or openraft refused or dropped its proposals):
/// undoes every pending proposal of the group, and answers the replies waiting for them —
/// `why` for those that wrote nothing or whose entry never reached Raft, UNCERTAIN for the
/// writes whose entry did.
pub fn lost(core: &Core, g: GroupId, why: Refusal) {
    let mut rep = core.replicated.borrow_mut();
    if rep.spec.is_clear(g) && rep.waiters.get(&g).is_none_or(Vec::is_empty) {
        return;
    }
    let undone = {
        let mut shard = core.shard.borrow_mut();
        rep.spec.rollback(g, &mut shard)
    };
    if !undone.is_empty() {
        tracing::info!(
            "slot group {g}: {} uncommitted proposal(s) undone ({why:?})",
            undone.len()
        );
    }
    let sent_upto = rep.sent.remove(&g).map_or(0, |s| s.0);
    for w in rep.waiters.remove(&g).unwrap_or_default() {
        let refusal = if w.wrote && w.gate <= sent_upto {
            Refusal::Uncertain
        } else {
            why.clone()
        };
        let _ = w.tx.send(Err(refusal));
    }
}

/// Replies that waited too long for their proposal (WRITE_TIMEOUT), or whose leader has no
/// quorum: answered UNCERTAIN. The proposals stay pending (they may still commit). Called
/// from the core's periodic tick with the groups whose quorum is gone.
pub fn expire_waiters(core: &Core, no_quorum: &[GroupId]) {
    let mut rep = core.replicated.borrow_mut();
    let now = Instant::now();
    let stale: Vec<GroupId> = rep
        .sent
        .iter()
        .filter(|(g, (_, since))| {
            no_quorum.contains(g) || since.is_some_and(|t| now.duration_since(t) > WRITE_TIMEOUT)
        })
        .map(|(g, _)| *g)
        .collect();
    for g in stale {
        let committed = rep.spec.committed(g);
        if let Some(waiters) = rep.waiters.get_mut(&g) {
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].gate > committed {
                    let w = waiters.swap_remove(i);
                    let _ = w.tx.send(Err(if w.wrote {
                        Refusal::Uncertain
                    } else {
                        Refusal::NoQuorum
                    }));
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// Waits until group `g`'s proposal `pid` (made on this core) has committed: Err when it
/// was lost (leadership gone, no quorum in time).
pub async fn wait_committed(core: &Core, g: GroupId, pid: Pid) -> Result<(), Refusal> {
    let rx = {
        let mut rep = core.replicated.borrow_mut();
        if pid <= rep.spec.committed(g) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        rep.waiters.entry(g).or_default().push(Waiter {
            gate: pid,
            wrote: true,
            tx,
        });
        rx
    };
    rx.await.unwrap_or(Err(Refusal::Down))
}

/// Waits until every proposal pending on this core now has committed (fan-out reads: KEYS,
/// SCAN, DBSIZE and RANDOMKEY ran over the whole shard, pending writes included).
pub async fn settle_all(core: &Rc<Core>) -> Result<(), Refusal> {
    let waits: Vec<oneshot::Receiver<Result<(), Refusal>>> = {
        let mut rep = core.replicated.borrow_mut();
        let groups: Vec<(GroupId, Pid)> = rep
            .sent
            .keys()
            .copied()
            .chain(rep.spec.filling_groups())
            .filter_map(|g| rep.spec.group_last(g).map(|p| (g, p)))
            .collect();
        let groups: Vec<(GroupId, Pid)> = groups
            .into_iter()
            .filter(|(g, p)| *p > rep.spec.committed(*g))
            .collect();
        groups
            .into_iter()
            .map(|(g, gate)| {
                let (tx, rx) = oneshot::channel();
                rep.waiters.entry(g).or_default().push(Waiter {
                    gate,
                    wrote: false,
                    tx,
                });
                rx
            })
            .collect()
    };
    for rx in waits {
        rx.await.unwrap_or(Err(Refusal::Down))?;
    }
    Ok(())
}
