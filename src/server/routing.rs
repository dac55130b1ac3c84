//! Cluster mode in the dispatcher: which node serves a command, and running a connection's
//! commands for one slot group through that group's Raft log (writes) or behind its read
//! index (reads).

use std::rc::Rc;

use bytes::Bytes;

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
    if readonly_client && read && cluster.is_member(g) {
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
        match cluster
            .propose(g, Request::Commands { now, resp3, cmds })
            .await
        {
            Ok(Ok(resp)) if resp.replies.len() == n => {
                let mut buf = Vec::new();
                let mut ends = Vec::with_capacity(n);
                for r in &resp.replies {
                    buf.extend_from_slice(r);
                    ends.push(buf.len() as u32);
                }
                BatchReply { buf, ends }
            }
            Ok(Ok(_)) => refused(cluster, &slots, &Refusal::Down, resp3),
            Ok(Err(why)) => refused(cluster, &slots, &why, resp3),
            Err(_) => refused(cluster, &slots, &Refusal::Down, resp3),
        }
    } else {
        match cluster.read_barrier(g).await {
            Ok(Ok(())) => run_here(core, ops, resp3).await,
            Ok(Err(why)) => refused(cluster, &slots_of(&ops), &why, resp3),
            Err(_) => refused(cluster, &slots_of(&ops), &Refusal::Down, resp3),
        }
    }
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
