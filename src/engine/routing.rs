//! Cluster mode in the dispatcher: which node serves a command, and running a connection's
//! commands for one slot group through that group's Raft log (writes) or behind its read
//! index (reads).

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;

use super::core::{BatchReply, Core, OOM, Op, slot_owner};
use crate::cluster::node::{ClusterNode, Refusal};
use crate::cluster::types::{GroupId, Request};
use crate::cluster::{CLUSTERDOWN, key_slot};
use crate::command::table::registry;
use crate::command::{CommandDef, flags};
use crate::protocol::Out;

/// Where a keyed command goes in cluster mode.
pub enum Route {
    /// This node leads the slot's group: through the group.
    Group(GroupId),
    /// A READONLY connection reading a slot this node replicates: serve it from here.
    LocalRead,
    /// An error reply (MOVED, CROSSSLOT, TRYAGAIN, CLUSTERDOWN).
    Refuse(String),
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The route of a command with keys at `positions` of `args`.
pub fn route(
    cluster: &ClusterNode,
    def: &CommandDef,
    args: &[Bytes],
    readonly_client: bool,
) -> Option<Route> {
    let mut positions = def.keys.positions(args.len());
    let slot = key_slot(&args[positions.next()?]);
    if positions.any(|p| key_slot(&args[p]) != slot) {
        return Some(Route::Refuse(CROSSSLOT.to_string()));
    }
    let g = cluster.group_of(slot as usize);
    let leader = cluster.leader(g);
    let read = def.flags & flags::READONLY != 0 && def.flags & flags::WRITE == 0;
    if leader == Some(cluster.id) {
        return Some(Route::Group(g));
    }
    // A replica in the middle of a snapshot install holds part of the group: the read goes
    // to the leader instead.
    if readonly_client && read && cluster.is_member(g) && !cluster.installing(g) {
        return Some(Route::LocalRead);
    }
    Some(Route::Refuse(match leader {
        Some(id) => moved(cluster, slot as usize, id),
        None => no_leader(g),
    }))
}

fn moved(cluster: &ClusterNode, slot: usize, leader: u64) -> String {
    match cluster.node(leader) {
        Some(n) => format!("MOVED {slot} {}", n.client_addr()),
        None => CLUSTERDOWN.to_string(),
    }
}

fn no_leader(g: GroupId) -> String {
    format!("TRYAGAIN slot group {g} is electing a leader; retry shortly")
}

/// The slot of an op's first key (routed ops always have one).
fn op_slot(op: &Op) -> usize {
    let def = registry().def(op.cmd_id as usize);
    def.keys
        .positions(op.args.len())
        .next()
        .map_or(0, |p| key_slot(&op.args[p]) as usize)
}

/// The error for a refused op on `slot`.
fn refusal_text(cluster: &ClusterNode, slot: usize, why: &Refusal) -> String {
    match why {
        Refusal::Moved(id) => moved(cluster, slot, *id),
        Refusal::NoLeader => no_leader(cluster.group_of(slot)),
        // What a Valkey primary cut off from the majority answers (cluster_state:fail);
        // cluster clients take it as their cue to reload the slot map from other nodes.
        Refusal::NoQuorum => format!(
            "{CLUSTERDOWN} (slot group {} has no quorum on this node)",
            cluster.group_of(slot)
        ),
        Refusal::Uncertain => "UNCERTAIN the write was not confirmed in time: it may or may not \
                               have been applied (leadership changed or no quorum)"
            .to_string(),
        Refusal::Down => CLUSTERDOWN.to_string(),
    }
}

/// The same refusal for every op, given their slots.
fn refused(cluster: &ClusterNode, slots: &[usize], why: &Refusal, resp3: bool) -> BatchReply {
    let mut out = Out::new(resp3);
    let mut ends = Vec::with_capacity(slots.len());
    for &slot in slots {
        out.error(&refusal_text(cluster, slot, why));
        ends.push(out.buf.len() as u32);
    }
    BatchReply { buf: out.buf, ends }
}

/// Runs one connection batch's ops for group `g`, in order: any write sends them all through
/// the log as one entry (the replies come from applying it); reads alone wait for the read
/// index, then run on the cores that hold the keys.
pub async fn run_group(
    core: &Rc<Core>,
    cluster: &ClusterNode,
    g: GroupId,
    ops: Vec<Op>,
    now: u64,
    resp3: bool,
) -> BatchReply {
    let writes = ops.iter().any(|op| op.flags & flags::WRITE != 0);
    if ops.iter().any(grows) && super::replica::refuse_growth(core) {
        return refuse_growing(core, cluster, g, ops, now, resp3).await;
    }
    if writes {
        // The slots are kept for the error replies; the arguments move into the entry.
        let slots: Vec<usize> = ops.iter().map(op_slot).collect();
        let cmds: Vec<Vec<Bytes>> = ops.into_iter().map(|op| op.args).collect();
        let n = cmds.len();
        match propose(core, cluster, g, now, resp3, cmds).await {
            Ok(replies) if replies.len() == n => {
                let mut buf = Vec::new();
                let mut ends = Vec::with_capacity(n);
                for r in &replies {
                    buf.extend_from_slice(r);
                    ends.push(buf.len() as u32);
                }
                BatchReply { buf, ends }
            }
            Ok(_) => refused(cluster, &slots, &Refusal::Down, resp3),
            Err(why) => refused(cluster, &slots, &why, resp3),
        }
    } else {
        match cluster.read_barrier(g).await {
            Ok(Ok(())) => run_here(core, ops, resp3).await,
            Ok(Err(why)) => refused(cluster, &slots_of(&ops), &why, resp3),
            Err(_) => refused(cluster, &slots_of(&ops), &Refusal::Down, resp3),
        }
    }
}

/// Log entries one core keeps in flight per slot group; the writes that arrive meanwhile
/// wait and go together as the next entry. Each entry costs fixed work whatever it holds (a
/// task and a hop to the Raft runtime, the leader's append and its journal write, openraft's
/// bookkeeping, the reply's hop back); merging while the group is busy spends it once per
/// round trip instead of once per connection batch. A lone write still goes at once.
/// Measured with 50 clients at -P 1: about 8 writes per entry instead of 1, and 10-20% more
/// throughput; one in flight beat 2, 4 and unlimited. (Most of a write's cost is per
/// replication round, which merging does not change: see BENCHMARKS.md.)
const IN_FLIGHT: usize = 1;

/// This core's writes to each (slot group, RESP version): how many entries are in flight
/// and the commands waiting for the next.
#[derive(Default)]
pub struct Proposals {
    groups: HashMap<(GroupId, bool), Queue>,
}

#[derive(Default)]
struct Queue {
    in_flight: usize,
    waiting: Option<Waiting>,
}

/// Where one connection batch's replies (or the entry's refusal) go.
type ReplyTo = oneshot::Sender<Result<Vec<Bytes>, Refusal>>;

/// The connection batches waiting to be proposed together as one entry.
struct Waiting {
    now: u64,
    cmds: Vec<Vec<Bytes>>,
    /// Each batch's first command and where its replies go.
    batches: Vec<(usize, ReplyTo)>,
}

/// Proposes one connection batch's commands to group `g` and resolves with their replies:
/// as its own entry when fewer than [`IN_FLIGHT`] of this core's entries for `g` are in
/// flight, else merged with the batches that wait for the next (which carries the latest of
/// their times).
async fn propose(
    core: &Rc<Core>,
    cluster: &ClusterNode,
    g: GroupId,
    now: u64,
    resp3: bool,
    cmds: Vec<Vec<Bytes>>,
) -> Result<Vec<Bytes>, Refusal> {
    let key = (g, resp3);
    let wait = {
        let mut proposals = core.proposals.borrow_mut();
        let queue = proposals.groups.entry(key).or_default();
        if queue.in_flight >= IN_FLIGHT {
            if cluster.quorum_lost_in(g) {
                // The entry in flight waits for a quorum that is gone (up to the write
                // timeout): refuse now, as an entry of its own would be.
                return Err(Refusal::NoQuorum);
            }
            let (tx, rx) = oneshot::channel();
            let w = queue.waiting.get_or_insert_with(|| Waiting {
                now,
                cmds: Vec::new(),
                batches: Vec::new(),
            });
            w.now = w.now.max(now);
            w.batches.push((w.cmds.len(), tx));
            w.cmds.extend(cmds);
            Err(rx)
        } else {
            queue.in_flight += 1;
            Ok(cmds)
        }
    };
    let cmds = match wait {
        Ok(cmds) => cmds,
        Err(rx) => return rx.await.unwrap_or(Err(Refusal::Down)),
    };
    let _done = EntryDone {
        core: core.clone(),
        key,
    };
    propose_entry(cluster, g, now, resp3, cmds).await
}

/// Ends an entry's turn in flight when dropped: also when the connection that proposed it
/// goes away mid-write, so the batches behind it are never stranded.
struct EntryDone {
    core: Rc<Core>,
    key: (GroupId, bool),
}

impl Drop for EntryDone {
    fn drop(&mut self) {
        entry_done(&self.core, self.key);
    }
}

/// One entry's commands through the log: their replies, or why they were refused.
async fn propose_entry(
    cluster: &ClusterNode,
    g: GroupId,
    now: u64,
    resp3: bool,
    cmds: Vec<Vec<Bytes>>,
) -> Result<Vec<Bytes>, Refusal> {
    let n = cmds.len();
    match cluster
        .propose(g, Request::Commands { now, resp3, cmds })
        .await
    {
        Ok(Ok(resp)) if resp.replies.len() == n => Ok(resp.replies),
        Ok(Ok(_)) | Err(_) => Err(Refusal::Down),
        Ok(Err(why)) => Err(why),
    }
}

/// An entry of this core for `key` finished: the batches waiting take its place, as one
/// entry proposed from a task of their own.
fn entry_done(core: &Rc<Core>, key: (GroupId, bool)) {
    let waiting = {
        let mut proposals = core.proposals.borrow_mut();
        let Some(queue) = proposals.groups.get_mut(&key) else {
            return;
        };
        match queue.waiting.take() {
            Some(w) => w,
            None => {
                queue.in_flight -= 1;
                if queue.in_flight == 0 {
                    proposals.groups.remove(&key);
                }
                return;
            }
        }
    };
    let core = core.clone();
    glommio::spawn_local(async move {
        let done = EntryDone { core, key };
        let (g, resp3) = key;
        let total = waiting.cmds.len();
        let replies = match done.core.shared.cluster().cloned() {
            Some(cluster) => propose_entry(&cluster, g, waiting.now, resp3, waiting.cmds).await,
            None => Err(Refusal::Down),
        };
        drop(done);
        let mut ends: Vec<usize> = waiting.batches.iter().skip(1).map(|b| b.0).collect();
        ends.push(total);
        for ((start, tx), end) in waiting.batches.into_iter().zip(ends) {
            let _ = tx.send(match &replies {
                Ok(all) => Ok(all[start..end].to_vec()),
                Err(why) => Err(why.clone()),
            });
        }
    })
    .detach();
}

/// Whether `op` may grow memory (refused over maxmemory).
fn grows(op: &Op) -> bool {
    op.flags & flags::DENYOOM != 0
}

/// Over maxmemory: the ops that may grow memory get Valkey's OOM error, the others run.
async fn refuse_growing(
    core: &Rc<Core>,
    cluster: &ClusterNode,
    g: GroupId,
    ops: Vec<Op>,
    now: u64,
    resp3: bool,
) -> BatchReply {
    let refused: Vec<bool> = ops.iter().map(grows).collect();
    let rest: Vec<Op> = ops.into_iter().filter(|op| !grows(op)).collect();
    let ran = if rest.is_empty() {
        BatchReply::default()
    } else {
        Box::pin(run_group(core, cluster, g, rest, now, resp3)).await
    };
    let mut out = Out::new(resp3);
    let mut ends = Vec::with_capacity(refused.len());
    let mut next = 0;
    for refused in refused {
        if refused {
            out.error(OOM);
        } else if next < ran.ends.len() {
            out.buf.extend_from_slice(ran.reply(next));
            next += 1;
        } else {
            out.error("ERR internal error: no reply");
        }
        ends.push(out.buf.len() as u32);
    }
    BatchReply { buf: out.buf, ends }
}

fn slots_of(ops: &[Op]) -> Vec<usize> {
    ops.iter().map(op_slot).collect()
}

/// Runs ops on the cores owning their keys (this node's copy) and returns their replies in
/// order.
async fn run_here(core: &Rc<Core>, ops: Vec<Op>, resp3: bool) -> BatchReply {
    let cores = core.cores();
    let owner = |op: &Op| slot_owner(op_slot(op), cores);
    let n = ops.len();
    let mut per_core: Vec<Vec<(usize, Op)>> = (0..cores).map(|_| Vec::new()).collect();
    for (i, op) in ops.into_iter().enumerate() {
        per_core[owner(&op)].push((i, op));
    }
    let mut replies: Vec<Vec<u8>> = vec![Vec::new(); n];
    for (c, list) in per_core.into_iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        let (idx, ops): (Vec<usize>, Vec<Op>) = list.into_iter().unzip();
        let reply = if c == core.id {
            let mut out = Out::new(resp3);
            let mut ends = Vec::new();
            let now = core.prepare();
            core.execute(&ops, now, &mut out, &mut ends);
            BatchReply { buf: out.buf, ends }
        } else {
            core.send_batch(c, ops, resp3).await
        };
        for (k, i) in idx.into_iter().enumerate() {
            if k < reply.ends.len() {
                replies[i] = reply.reply(k).to_vec();
            }
        }
    }
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(n);
    for r in replies {
        if r.is_empty() {
            buf.extend_from_slice(b"-ERR internal error: core unavailable\r\n");
        } else {
            buf.extend_from_slice(&r);
        }
        ends.push(buf.len() as u32);
    }
    BatchReply { buf, ends }
}
