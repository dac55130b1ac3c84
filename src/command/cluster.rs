//! The Redis Cluster protocol's commands: CLUSTER INFO/MYID/SLOTS/SHARDS/NODES/KEYSLOT/
//! COUNTKEYSINSLOT/GETKEYSINSLOT, READONLY and READWRITE.
//!
//! Each slot group is shown as a shard whose primary is the group's current Raft leader and
//! whose replicas are its other voters, so cluster-aware clients route by themselves. A node
//! leads some groups and follows others; CLUSTER NODES, which has one line per node, shows a
//! node as a primary with the slots of the groups it leads.
//!
//! Ports follow Valkey's rule: a client connected over TLS is shown each node's TLS port, any
//! other client its plain port, in CLUSTER SLOTS and NODES as in MOVED (see
//! `NodeInfo::client_port` for a node without a port of that kind); CLUSTER SHARDS lists
//! both, as `port` and `tls-port`, each when the node has it.

use std::fmt::Write;

use bytes::Bytes;

use super::connection::ConnCtx;
use super::{Ctx, NOT_INTEGER, arg_i64};
use crate::cluster::node::ClusterNode;
use crate::cluster::topology::Layout;
use crate::cluster::types::{GroupId, NodeId, NodeInfo};
use crate::cluster::{SLOT_COUNT, key_slot};
use crate::protocol::Out;

const NOT_ENABLED: &str = "ERR This instance has cluster support disabled";

/// The node, or the error a non-cluster (or still starting) node answers.
fn node(ctx: &mut ConnCtx<'_>) -> Option<std::sync::Arc<ClusterNode>> {
    if !ctx.shared.config.cluster.enabled {
        ctx.out.error(NOT_ENABLED);
        return None;
    }
    match ctx.shared.cluster() {
        Some(c) => Some(c.clone()),
        None => {
            ctx.out.error(crate::cluster::CLUSTERDOWN);
            None
        }
    }
}

/// The primary shown for group `g`: its leader, or (during an election) its first voter.
fn primary(c: &ClusterNode, map: &Layout, g: GroupId) -> NodeId {
    c.leader(g)
        .filter(|l| map.nodes.contains_key(l))
        .unwrap_or_else(|| map.groups[g as usize].members[0])
}

fn replicas(c: &ClusterNode, map: &Layout, g: GroupId) -> Vec<NodeId> {
    let p = primary(c, map, g);
    map.groups[g as usize]
        .members
        .iter()
        .copied()
        .filter(move |&m| m != p)
        .collect()
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

pub fn readonly(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    if !ctx.shared.config.cluster.enabled {
        ctx.out.error(NOT_ENABLED);
        return;
    }
    ctx.client.readonly = true;
    ctx.out.ok();
}

pub fn readwrite(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    if !ctx.shared.config.cluster.enabled {
        ctx.out.error(NOT_ENABLED);
        return;
    }
    ctx.client.readonly = false;
    ctx.out.ok();
}

pub fn keyslot(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    ctx.out.int(key_slot(&args[2]) as i64);
}

pub fn myid(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let Some(c) = node(ctx) else { return };
    let name = c.me().name.clone();
    ctx.out.bulk(name.as_bytes());
}

pub fn info(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    if !ctx.shared.config.cluster.enabled {
        ctx.out.error(NOT_ENABLED);
        return;
    }
    let text = info_text(ctx.shared.cluster().map(|c| &**c));
    ctx.out.verbatim(text.as_bytes());
}

/// CLUSTER INFO's text (also used by INFO cluster); `None` while the node is starting.
pub fn info_text(c: Option<&ClusterNode>) -> String {
    let Some(c) = c else {
        return "cluster_state:fail\r\ncluster_slots_assigned:0\r\ncluster_slots_ok:0\r\n\
                cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:0\r\n\
                cluster_size:0\r\ncluster_current_epoch:0\r\ncluster_my_epoch:0\r\n"
            .to_string();
    };
    let mut ok = 0;
    let mut leaders = std::collections::BTreeSet::new();
    let mut epoch = 0;
    let mut my_epoch = 0;
    let map = c.layout();
    for (g, gl) in map.groups.iter().enumerate() {
        let g = g as GroupId;
        epoch = epoch.max(c.term(g));
        // A leader here that no quorum has acknowledged for a node timeout is likely
        // deposed on the other side of a partition: its slots are down here (Valkey's
        // minority side reports cluster_state:fail too).
        if let Some(l) = c.leader(g).filter(|&l| l != c.id || !c.quorum_lost_in(g)) {
            ok += gl.slots.len();
            leaders.insert(l);
            if l == c.id {
                my_epoch = my_epoch.max(c.term(g));
            }
        }
    }
    let state = if ok == SLOT_COUNT { "ok" } else { "fail" };
    format!(
        "cluster_state:{state}\r\n\
         cluster_slots_assigned:{SLOT_COUNT}\r\n\
         cluster_slots_ok:{ok}\r\n\
         cluster_slots_pfail:0\r\n\
         cluster_slots_fail:{}\r\n\
         cluster_known_nodes:{}\r\n\
         cluster_size:{}\r\n\
         cluster_current_epoch:{epoch}\r\n\
         cluster_my_epoch:{my_epoch}\r\n\
         cluster_slot_groups:{}\r\n\
         cluster_map_epoch:{}\r\n",
        SLOT_COUNT - ok,
        map.nodes.len(),
        leaders.len(),
        c.group_count(),
        map.epoch,
    )
}

/// One node of a CLUSTER SLOTS range: endpoint, port (the TLS one for a client on `tls`), id,
/// and metadata (its hostname).
fn slots_node(out: &mut Out, n: &NodeInfo, tls: bool) {
    out.array(4);
    out.bulk(n.host.as_bytes());
    out.int(n.client_port(tls) as i64);
    out.bulk(n.name.as_bytes());
    if is_ip(&n.host) {
        out.map(0);
    } else {
        out.map(1);
        out.bulk(b"hostname");
        out.bulk(n.host.as_bytes());
    }
}

/// CLUSTER SLOTS: each group's slots with its leader, and no replicas. Every node leads
/// some groups and follows others, so listing followers would show most nodes as a replica
/// of some range, and clients that classify a node by its role (redis-py marks it by the
/// last range it appears in) would then miss primaries: `scan_iter`, `keys` and `dbsize`
/// through redis-py's cluster client covered one node's share. A READONLY connection to a
/// follower still reads the follower's copy (see `engine::routing`); CLUSTER SHARDS lists
/// every replica with its role, per shard.
pub fn slots(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let Some(c) = node(ctx) else { return };
    let tls = ctx.client.info.tls;
    let mut out = Out::new(ctx.out.resp3);
    out.array(c.group_count());
    let map = c.layout();
    for (g, gl) in map.groups.iter().enumerate() {
        let g = g as GroupId;
        out.array(3);
        out.int(gl.slots.start as i64);
        out.int(gl.slots.end as i64 - 1);
        let default = NodeInfo::default();
        slots_node(
            &mut out,
            map.nodes.get(&primary(&c, &map, g)).unwrap_or(&default),
            tls,
        );
    }
    ctx.out.raw(&out.buf);
}

pub fn shards(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let Some(c) = node(ctx) else { return };
    let mut out = Out::new(ctx.out.resp3);
    out.array(c.group_count());
    let map = c.layout();
    let default = NodeInfo::default();
    for (g, gl) in map.groups.iter().enumerate() {
        let g = g as GroupId;
        out.map(2);
        out.bulk(b"slots");
        out.array(2);
        out.int(gl.slots.start as i64);
        out.int(gl.slots.end as i64 - 1);
        out.bulk(b"nodes");
        out.array(gl.members.len());
        let p = primary(&c, &map, g);
        for id in std::iter::once(p).chain(replicas(&c, &map, g)) {
            let n = map.nodes.get(&id).unwrap_or(&default);
            let hostname = !is_ip(&n.host);
            // Each port the node has (Valkey: at least one of the two).
            let ports = [(&b"port"[..], n.port), (b"tls-port", n.tls_port)];
            let ports = ports.iter().filter(|(_, p)| *p != 0);
            out.map(6 + ports.clone().count() + hostname as usize);
            out.bulk(b"id");
            out.bulk(n.name.as_bytes());
            for (name, port) in ports {
                out.bulk(name);
                out.int(*port as i64);
            }
            out.bulk(b"ip");
            out.bulk(n.host.as_bytes());
            out.bulk(b"endpoint");
            out.bulk(n.host.as_bytes());
            if hostname {
                out.bulk(b"hostname");
                out.bulk(n.host.as_bytes());
            }
            out.bulk(b"role");
            out.bulk(if id == p { &b"master"[..] } else { b"replica" });
            out.bulk(b"replication-offset");
            out.int(c.replication_offset(g, id) as i64);
            out.bulk(b"health");
            let online = c.leader(g).is_some() || id == c.id;
            out.bulk(if online { &b"online"[..] } else { b"loading" });
        }
    }
    ctx.out.raw(&out.buf);
}

pub fn nodes(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let Some(c) = node(ctx) else { return };
    let text = nodes_text(&c, ctx.client.info.tls);
    ctx.out.verbatim(text.as_bytes());
}

/// CLUSTER NODES: one line per node; a node leading groups is a primary with their slots,
/// one leading none is shown as a replica of the leader of its first group. `tls`: asked by
/// a client on TLS (each node's TLS port is shown).
pub fn nodes_text(c: &ClusterNode, tls: bool) -> String {
    let mut text = String::new();
    let map = c.layout();
    for (&id, n) in &map.nodes {
        let led: Vec<(GroupId, &std::ops::Range<usize>)> = map
            .groups
            .iter()
            .enumerate()
            .filter(|(g, _)| c.leader(*g as GroupId) == Some(id))
            .map(|(g, gl)| (g as GroupId, &gl.slots))
            .collect();
        let myself = if id == c.id { "myself," } else { "" };
        let (role, master) = if led.is_empty() {
            let master = map
                .groups
                .iter()
                .enumerate()
                .find(|(_, gl)| gl.members.contains(&id))
                .and_then(|(g, _)| c.leader(g as GroupId))
                .and_then(|l| c.node(l))
                .map_or("-".to_string(), |m| m.name.clone());
            ("slave", master)
        } else {
            ("master", "-".to_string())
        };
        let epoch = led.iter().map(|(g, _)| c.term(*g)).max().unwrap_or(0);
        let _ = write!(
            text,
            "{} {}:{}@{}{} {myself}{role} {master} 0 0 {epoch} connected",
            n.name,
            n.host,
            n.client_port(tls),
            n.bus_port,
            if is_ip(&n.host) {
                String::new()
            } else {
                format!(",{}", n.host)
            },
        );
        for (_, r) in led {
            if r.end - r.start == 1 {
                let _ = write!(text, " {}", r.start);
            } else {
                let _ = write!(text, " {}-{}", r.start, r.end - 1);
            }
        }
        text.push('\n');
    }
    text
}

/// A slot argument: an integer in 0..16384, else Valkey's errors.
fn slot_arg(out: &mut Out, arg: &[u8]) -> Option<usize> {
    match arg_i64(arg) {
        None => {
            out.error(NOT_INTEGER);
            None
        }
        Some(s) if !(0..SLOT_COUNT as i64).contains(&s) => {
            out.error("ERR Invalid slot");
            None
        }
        Some(s) => Some(s as usize),
    }
}

/// Per-core CLUSTER COUNTKEYSINSLOT (the core owning the slot counts; others answer 0).
pub fn countkeysinslot_local(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(slot) = slot_arg(ctx.out, &args[2]) else {
        return;
    };
    let n = if ctx.shard.owned_slots().contains(&slot) {
        let mut n = 0;
        ctx.shard.for_each_in_slot(slot, ctx.now, |_| n += 1);
        n
    } else {
        0
    };
    ctx.out.int(n);
}

/// Per-core CLUSTER GETKEYSINSLOT.
pub fn getkeysinslot_local(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(slot) = slot_arg(ctx.out, &args[2]) else {
        return;
    };
    let count = match arg_i64(&args[3]) {
        Some(n) if n >= 0 => n as usize,
        _ => {
            ctx.out.error("ERR Invalid number of keys");
            return;
        }
    };
    let mut keys: Vec<Vec<u8>> = Vec::new();
    if ctx.shard.owned_slots().contains(&slot) {
        ctx.shard.for_each_in_slot(slot, ctx.now, |e| {
            if keys.len() < count {
                keys.push(e.key().to_vec());
            }
        });
    }
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k);
    }
}

/// CLUSTER MEET ip port [cluster-bus-port] and CLUSTER FORGET node-id. MEET makes the
/// unassigned node at that address (a node started with `cluster-enabled yes` and no
/// `cluster-peers`) a member; replicas then move to it until they are spread evenly. FORGET
/// moves every replica off the node, then removes it from the cluster. Both reply once the
/// cluster map holds the change; the moves follow in the background (CLUSTER INFO's
/// `cluster_map_epoch` and the log show them).
pub fn admin(shared: &crate::state::Shared, args: &[Bytes], out: &mut Out) -> Option<AdminRequest> {
    if !shared.config.cluster.enabled {
        out.error(NOT_ENABLED);
        return None;
    }
    let Some(c) = shared.cluster().cloned() else {
        out.error(crate::cluster::CLUSTERDOWN);
        return None;
    };
    let sub = args[1].to_ascii_lowercase();
    if sub == b"meet" {
        let host = String::from_utf8_lossy(&args[2]).into_owned();
        let port = std::str::from_utf8(&args[3])
            .ok()
            .and_then(|p| p.parse::<u16>().ok());
        let bus_port = match (args.get(4), port) {
            (Some(b), _) => std::str::from_utf8(b)
                .ok()
                .and_then(|p| p.parse::<u16>().ok()),
            (None, Some(p)) => p.checked_add(10000),
            (None, None) => None,
        };
        let (Some(port), Some(bus_port)) = (port, bus_port) else {
            out.error(&format!(
                "ERR Invalid base port specified: {}",
                String::from_utf8_lossy(&args[3])
            ));
            return None;
        };
        if args.len() > 5 {
            out.error(crate::command::SYNTAX_ERROR);
            return None;
        }
        Some(AdminRequest::Meet {
            host,
            port,
            bus_port,
        })
    } else {
        let name = String::from_utf8_lossy(&args[2]).into_owned();
        let Some(id) = c.node_id_by_name(&name) else {
            out.error(&format!("ERR Unknown node {name}"));
            return None;
        };
        Some(AdminRequest::Forget { id })
    }
}

/// A change of the cluster map a client asked for, parsed (see [`admin`]); the engine runs
/// it on the node's core 0, which hosts the meta group.
pub enum AdminRequest {
    Meet {
        host: String,
        port: u16,
        bus_port: u16,
    },
    Forget {
        id: NodeId,
    },
}
