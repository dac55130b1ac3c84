//! Cluster mode in the dispatcher: which node serves a command, and running a connection's
//! commands for one slot group on the core that hosts the group (see `replicated`).

use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;

use super::core::{BatchReply, Core, OOM, Op};
use super::replicated::{self, Refusal};
use crate::cluster::node::ClusterNode;
use crate::cluster::types::GroupId;
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

/// The route of a command with keys at `positions` of `args`, from a client that sent
/// READONLY (`readonly_client`) and is connected over TLS or not (`tls_client`: which port a
/// MOVED names).
pub fn route(
    cluster: &ClusterNode,
    def: &CommandDef,
    args: &[Bytes],
    readonly_client: bool,
    tls_client: bool,
) -> Option<Route> {
    let mut positions = def.keys.positions(args);
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
        Some(id) => moved(cluster, slot as usize, id, tls_client),
        None => no_leader(g),
    }))
}

/// MOVED to `leader`, at its TLS port for a client on TLS (see `NodeInfo::client_port`).
fn moved(cluster: &ClusterNode, slot: usize, leader: u64, tls: bool) -> String {
    match cluster.node(leader) {
        Some(n) => format!("MOVED {slot} {}", n.client_addr(tls)),
        None => CLUSTERDOWN.to_string(),
    }
}

fn no_leader(g: GroupId) -> String {
    format!("TRYAGAIN slot group {g} is electing a leader; retry shortly")
}

/// The slot of an op's first key (routed ops always have one).
fn op_slot(op: &Op) -> usize {
    let Some(def) = registry().get(op.cmd_id as usize) else {
        return 0;
    };
    def.keys
        .positions(&op.args)
        .next()
        .map_or(0, |p| key_slot(&op.args[p]) as usize)
}

/// The error reply for `op` refused for `why`.
pub fn refusal_text(cluster: Option<&ClusterNode>, op: &Op, why: &Refusal) -> String {
    let slot = op_slot(op);
    let g = cluster.map_or(0, |c| c.group_of(slot));
    match why {
        Refusal::Moved(id) => match cluster {
            Some(c) => moved(c, slot, *id, op.tls),
            None => CLUSTERDOWN.to_string(),
        },
        Refusal::NoLeader => no_leader(g),
        // What a Valkey primary cut off from the majority answers (cluster_state:fail);
        // cluster clients take it as their cue to reload the slot map from other nodes.
        Refusal::NoQuorum => format!("{CLUSTERDOWN} (slot group {g} has no quorum on this node)"),
        Refusal::Uncertain => "UNCERTAIN the write was not confirmed in time: it may or may not \
                               have been applied (leadership changed or no quorum)"
            .to_string(),
        Refusal::Down => CLUSTERDOWN.to_string(),
    }
}

/// Runs one connection batch's ops for group `g` on the core hosting it.
pub async fn run_group(core: &Rc<Core>, g: GroupId, ops: Vec<Op>, resp3: bool) -> BatchReply {
    let target = core
        .shared
        .cluster()
        .and_then(|c| c.layout().groups.get(g as usize).map(|gl| gl.slots.start))
        .map_or(core.id, |slot| core.owner(slot));
    if target == core.id {
        return replicated::run_batch(core, g, ops, resp3).await;
    }
    core.send_group_batch(target, g, ops, resp3).await
}

/// Whether `op` may grow memory (refused over maxmemory).
pub fn grows(op: &Op) -> bool {
    op.flags & flags::DENYOOM != 0
}

/// Over maxmemory: the ops that may grow memory get Valkey's OOM error, the others run
/// (through `run`).
pub async fn refuse_growing<'a>(
    ops: &[Op],
    resp3: bool,
    run: impl FnOnce(Vec<Op>) -> LocalBoxFuture<'a, BatchReply>,
) -> BatchReply {
    let refused: Vec<bool> = ops.iter().map(grows).collect();
    let rest: Vec<Op> = ops
        .iter()
        .filter(|op| !grows(op))
        .map(|op| Op {
            exec: op.exec,
            args: op.args.clone(),
            flags: op.flags,
            cmd_id: op.cmd_id,
            db: op.db,
            user: op.user.clone(),
            tls: op.tls,
        })
        .collect();
    let ran = if rest.is_empty() {
        BatchReply::default()
    } else {
        run(rest).await
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
        ends.push(out.buf.len());
    }
    BatchReply { buf: out.buf, ends }
}
