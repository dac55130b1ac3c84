//! Admin calls between nodes over the bus (request kind `net::KIND_ADMIN`): joining a node
//! (CLUSTER MEET), removing one (CLUSTER FORGET), asking a node how it sees a group, handing
//! a group's leadership over, asking a leader to evict, changes of the function libraries
//! and ACL users sent on to the meta leader, and a member announcing its TLS port to it. A
//! call about a slot group runs on the core hosting the group; the others on core 0 (which
//! hosts the meta group).

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft10 as openraft;
use serde::{Deserialize, Serialize};

use super::host::Host;
use super::meta::{self, META};
use super::net::KIND_ADMIN;
use super::node::group_name;
use super::topology::{Layout, random_node_name};
use super::types::{GroupId, NodeId, NodeInfo, join_host_port};
use super::wire;
use crate::command::function::library::LibraryChange;
use crate::security::acl::{Outcome, UsersChange};

/// How long a peer has to answer an admin call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a change of the cluster map may take to commit.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    /// What a node announces, and its id if it belongs to a cluster already.
    Hello,
    /// Makes an unassigned node a member with `id`, starting from `map`.
    Join { id: NodeId, map: Box<Layout> },
    /// CLUSTER MEET, sent on to the meta leader.
    Meet {
        host: String,
        port: u16,
        bus_port: u16,
    },
    /// CLUSTER FORGET, sent on to the meta leader.
    Forget { id: NodeId },
    /// The responder's view of a group: (leader, term, members if it leads).
    Group { group: GroupId },
    /// To a group's leader: hand the leadership to node `to` (leader balancing).
    HandOff { group: GroupId, to: NodeId },
    /// To a group's leader: the sender is over maxmemory by `excess` bytes while holding
    /// `keys` keys over all its groups; evict the group's part of the excess, in proportion
    /// to the keys the group holds (through its log, so every replica frees them). `seen`:
    /// how far the sender applied the group's log.
    Evict {
        group: GroupId,
        excess: u64,
        keys: u64,
        seen: u64,
    },
    /// FUNCTION LOAD / DELETE / FLUSH / RESTORE, sent on to the meta leader.
    Functions { change: LibraryChange },
    /// ACL SETUSER / DELUSER / LOAD, sent on to the meta leader.
    Users { change: UsersChange },
    /// Member `id` announces its TLS port (its `tls-port`, 0: none), which a map computed
    /// from `cluster-peers` cannot know; sent on to the meta leader.
    Announce { id: NodeId, tls_port: u16 },
}

impl Call {
    /// The group whose host core answers the call (None: core 0).
    pub fn group(&self) -> Option<GroupId> {
        match self {
            Call::Group { group } | Call::HandOff { group, .. } | Call::Evict { group, .. } => {
                (*group != META).then_some(*group)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HelloReply {
    pub info: NodeInfo,
    pub id: Option<NodeId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupReply {
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The committed membership (voters and learners), when the responder leads the group.
    pub members: Option<BTreeSet<NodeId>>,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    wire::decode(bytes, "admin reply").map_err(|e| e.0)
}

/// Sends `call` to the node at bus address `addr` and decodes its reply.
pub async fn call<T: serde::de::DeserializeOwned>(
    host: &Host,
    addr: &str,
    call: &Call,
    timeout: Duration,
) -> Result<T, String> {
    let group = call.group().unwrap_or(META);
    let reply = host
        .links
        .call(addr, KIND_ADMIN, group, wire::encode(call), timeout)
        .await
        .map_err(|e| e.to_string())?;
    decode(&reply)
}

/// Answers an admin call that reached this core (`host`), forwarding it to the core it
/// belongs to if that is another one.
pub fn serve(host: Rc<Host>, payload: Bytes) -> LocalBoxFuture<'static, Result<Vec<u8>, String>> {
    Box::pin(async move {
        let call: Call = wire::decode(&payload, "admin call").map_err(|e| e.0)?;
        let Some(core) = host.core_rc() else {
            return Err("this node is stopping".into());
        };
        let target = match call.group() {
            Some(g) => core.owner(
                host.node
                    .layout()
                    .groups
                    .get(g as usize)
                    .map_or(0, |gl| gl.slots.start),
            ),
            None => 0,
        };
        if target != core.id {
            return core
                .on_core(target, move |core| {
                    Box::pin(async move {
                        match core.host() {
                            Some(host) => answer(&host, call).await,
                            None => Err("this node has not joined a cluster yet".to_string()),
                        }
                    })
                })
                .await
                .unwrap_or_else(|| Err("the core hosting it stopped".to_string()));
        }
        answer(&host, call).await
    })
}

/// Answers `call` on the core it belongs to.
async fn answer(host: &Rc<Host>, call: Call) -> Result<Vec<u8>, String> {
    Ok(match call {
        Call::Hello => wire::encode(&HelloReply {
            info: host.node.me(),
            id: Some(host.node.id),
        }),
        Call::Join { id, .. } if id == host.node.id => wire::encode(&()),
        Call::Join { .. } => {
            return Err(format!(
                "this node already belongs to a cluster as node {}",
                host.node.id
            ));
        }
        Call::Group { group } => wire::encode(&group_view(host, group)),
        Call::HandOff { group, to } => wire::encode(&hand_off(host, group, to).await?),
        Call::Evict {
            group,
            excess,
            keys,
            seen,
        } => wire::encode(&host.evict_led(group, excess, keys, seen).await),
        Call::Meet {
            host: h,
            port,
            bus_port,
        } => wire::encode(&meet(host, h, port, bus_port).await?),
        Call::Forget { id } => {
            forget(host, id).await?;
            wire::encode(&())
        }
        Call::Functions { change } => wire::encode(&commit_functions(host, change).await),
        Call::Users { change } => wire::encode(&commit_users(host, change).await),
        Call::Announce { id, tls_port } => {
            set_tls_port(host, id, tls_port).await?;
            wire::encode(&())
        }
    })
}

/// This node's view of `group` (on its host core), for a peer asking.
pub fn group_view(host: &Host, group: GroupId) -> GroupReply {
    let Some(raft) = host.raft(group) else {
        return GroupReply {
            leader: host.node.leader(group),
            term: host.node.term(group),
            members: None,
        };
    };
    let m = raft.metrics();
    let m = m.borrow_watched();
    let members = (m.state == ServerState::Leader).then(|| {
        let c = m.membership_config.membership();
        c.voter_ids().chain(c.learner_ids()).collect()
    });
    GroupReply {
        leader: m.current_leader,
        term: m.current_term,
        members,
    }
}

/// This node's view of group `g`, from the core that hosts it (None if it does not
/// replicate the group).
async fn local_view(host: &Rc<Host>, g: GroupId, map: &Layout) -> Option<GroupReply> {
    if host.raft(g).is_some() || g == META {
        return host.raft(g).map(|_| group_view(host, g));
    }
    let core = host.core_rc()?;
    let target = core.owner(map.groups.get(g as usize)?.slots.start);
    if target == core.id {
        return None;
    }
    core.on_core(target, move |core| {
        Box::pin(async move {
            let host = core.host()?;
            host.raft(g).map(|_| group_view(&host, g))
        })
    })
    .await
    .flatten()
}

/// Asks the nodes the map lists for group `g` (and then any other node) how they see it;
/// returns the answer from the highest term (a leader's carries the membership).
pub async fn ask_group(host: &Rc<Host>, g: GroupId, map: &Layout) -> Option<GroupReply> {
    let mut best: Option<GroupReply> = None;
    let listed: Vec<NodeId> = if g == META {
        map.nodes.keys().copied().collect()
    } else {
        map.groups.get(g as usize)?.members.clone()
    };
    for id in listed {
        let reply = if id == host.node.id {
            local_view(host, g, map).await
        } else {
            let Some(info) = map.nodes.get(&id) else {
                continue;
            };
            call::<GroupReply>(
                host,
                &info.bus_addr(),
                &Call::Group { group: g },
                CALL_TIMEOUT,
            )
            .await
            .ok()
        };
        let Some(reply) = reply else { continue };
        if reply.members.is_some() {
            return Some(reply);
        }
        if best.as_ref().is_none_or(|b| reply.term > b.term) {
            best = Some(reply);
        }
    }
    best
}

/// As group `g`'s leader: hands the leadership to node `to` if it has caught up and this
/// node has led for a while (openraft's leadership transfer: the group's commands wait while
/// the target takes over). Returns whether the transfer was started.
pub async fn hand_off(host: &Rc<Host>, g: GroupId, to: NodeId) -> Result<bool, String> {
    let raft = host.raft(g).ok_or("not a member")?;
    let settled = super::node::lock(&host.node.led_since)
        .get(&g)
        .is_some_and(|t| t.elapsed() > Duration::from_millis(2 * host.node.timeout_ms));
    {
        let m = raft.metrics();
        let m = m.borrow_watched();
        let replicating = m
            .replication
            .as_ref()
            .is_some_and(|r| r.get(&to).is_some_and(Option::is_some));
        if m.state != ServerState::Leader || !settled || !replicating {
            return Ok(false);
        }
    }
    if !host.node.set_handing(g, true) {
        return Ok(false);
    }
    tracing::info!("{}: handing the leadership to node {to}", group_name(g));
    let started = raft.trigger().transfer_leader(to).await;
    // Held until this node has stepped down (or the transfer failed and it still leads).
    let deadline = std::time::Instant::now() + Duration::from_millis(host.node.timeout_ms);
    while started.is_ok()
        && raft.metrics().borrow_watched().state == ServerState::Leader
        && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    host.node.set_handing(g, false);
    started.map_err(|e| e.to_string())?;
    Ok(true)
}

/// Commits `next` through the meta group (this node must lead it: core 0).
pub async fn commit_map(host: &Host, next: Layout) -> Result<(), String> {
    let raft = host.raft(META).ok_or("the meta group is not hosted here")?;
    let before = host.node.layout().epoch;
    let wanted = next.epoch;
    let written = glommio::timer::timeout(STEP_TIMEOUT, async {
        Ok(raft
            .client_write(super::types::Data(Bytes::from(meta::entry(&next))))
            .await)
    })
    .await
    .map_err(|_| "the meta group did not commit in time".to_string())?;
    written.map_err(|e| e.to_string())?;
    // Applied (and published) by the time client_write returns; a map with a newer epoch
    // committed meanwhile means this one lost the race.
    if host.node.layout().epoch == wanted || before >= wanted {
        Ok(())
    } else {
        Err("the cluster map changed meanwhile; try again".to_string())
    }
}

/// Runs `call` on the meta leader; None when this node (core 0) leads the meta group.
async fn on_meta_leader(host: &Host, call: &Call) -> Result<Option<Vec<u8>>, String> {
    let raft = host.raft(META).ok_or("the meta group is not hosted here")?;
    let leader = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        if m.state == ServerState::Leader {
            return Ok(None);
        }
        m.current_leader
    };
    let leader = leader
        .and_then(|l| host.node.node(l))
        .ok_or("the meta group has no leader now; try again")?;
    let reply = host
        .links
        .call(
            &leader.bus_addr(),
            KIND_ADMIN,
            META,
            wire::encode(call),
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(reply.to_vec()))
}

/// CLUSTER MEET: makes the unassigned node at `host:port` (bus at `bus_port`) a member.
/// Returns its node id. Runs on core 0.
pub async fn meet(host: &Rc<Host>, h: String, port: u16, bus_port: u16) -> Result<NodeId, String> {
    let call_meet = Call::Meet {
        host: h.clone(),
        port,
        bus_port,
    };
    if let Some(reply) = on_meta_leader(host, &call_meet).await? {
        return decode(&reply);
    }
    let bus = join_host_port(&h, bus_port);
    let hello: HelloReply = call(host, &bus, &Call::Hello, CALL_TIMEOUT)
        .await
        .map_err(|e| format!("cannot reach the node's bus at {bus}: {e}"))?;
    let map = host.node.layout();
    let known = map
        .nodes
        .iter()
        .find(|(_, n)| n.host == h && n.port == port)
        .map(|(&id, _)| id);
    if let Some(id) = hello.id {
        return match known {
            Some(k) if k == id => Ok(id),
            _ => Err(format!(
                "the node at {bus} already belongs to a cluster (node {id})"
            )),
        };
    }
    let id = match known {
        Some(id) => id,
        None => {
            let id = map.next_id;
            let mut next = (*map).clone();
            next.epoch += 1;
            next.next_id += 1;
            next.nodes.insert(
                id,
                NodeInfo {
                    name: random_node_name(),
                    host: h.clone(),
                    port,
                    bus_port,
                    tls_port: hello.info.tls_port,
                },
            );
            tracing::info!("cluster map: node {id} ({h}:{port}) joins");
            commit_map(host, next).await?;
            id
        }
    };
    let join = Call::Join {
        id,
        map: Box::new((*host.node.layout()).clone()),
    };
    call::<()>(host, &bus, &join, CALL_TIMEOUT)
        .await
        .map_err(|e| format!("node {id} did not take the join: {e}"))?;
    Ok(id)
}

/// Makes the cluster map name `tls_port` as this node's TLS port, through the meta leader.
/// Runs on core 0.
pub async fn announce(host: &Rc<Host>, tls_port: u16) -> Result<(), String> {
    let id = host.node.id;
    let call = Call::Announce { id, tls_port };
    if let Some(reply) = on_meta_leader(host, &call).await? {
        return decode(&reply);
    }
    set_tls_port(host, id, tls_port).await
}

/// As the meta leader: commits a map in which node `id`'s TLS port is `tls_port` (nothing
/// if it is already).
async fn set_tls_port(host: &Host, id: NodeId, tls_port: u16) -> Result<(), String> {
    let map = host.node.layout();
    match map.nodes.get(&id) {
        None => return Err(format!("Unknown node {id}")),
        Some(n) if n.tls_port == tls_port => return Ok(()),
        Some(_) => {}
    }
    let mut next = (*map).clone();
    next.epoch += 1;
    if let Some(n) = next.nodes.get_mut(&id) {
        n.tls_port = tls_port;
    }
    tracing::info!("cluster map: node {id} announces TLS port {tls_port}");
    commit_map(host, next).await
}

/// CLUSTER FORGET: moves every replica off node `id`, then removes it from the map. Runs on
/// core 0.
pub async fn forget(host: &Rc<Host>, id: NodeId) -> Result<(), String> {
    if let Some(reply) = on_meta_leader(host, &Call::Forget { id }).await? {
        return decode(&reply);
    }
    let map = host.node.layout();
    if !map.nodes.contains_key(&id) {
        return Err(format!("Unknown node {id}"));
    }
    if map.leaving.contains(&id) {
        return Ok(());
    }
    let remaining = map.nodes.len() - map.leaving.len() - 1;
    let needed = map
        .groups
        .iter()
        .map(|g| g.members.len())
        .max()
        .unwrap_or(0);
    if remaining < needed {
        return Err(format!(
            "cannot forget node {id}: {remaining} nodes would remain, fewer than the {needed} \
             replicas of each slot group"
        ));
    }
    let mut next = (*map).clone();
    next.epoch += 1;
    next.leaving.insert(id);
    tracing::info!("cluster map: node {id} is leaving; its replicas move first");
    commit_map(host, next).await
}

/// FUNCTION LOAD / DELETE / FLUSH / RESTORE in a cluster: commits `change` through the meta
/// group (on its leader) and waits until this node applied it too. Runs on core 0. The error
/// is the reply text.
pub async fn change_functions(host: &Rc<Host>, change: LibraryChange) -> Result<(), String> {
    let call = Call::Functions { change };
    let index = match on_meta_leader(host, &call).await {
        Err(e) => return Err(format!("ERR {e}")),
        Ok(Some(reply)) => {
            decode::<Result<u64, String>>(&reply).map_err(|e| format!("ERR {e}"))??
        }
        Ok(None) => {
            let Call::Functions { change } = call else {
                unreachable!("built above")
            };
            commit_functions(host, change).await?
        }
    };
    wait_applied(host, index).await
}

/// Waits until this node applied the meta log up to `index` (a change it had committed).
/// The error is the reply text.
async fn wait_applied(host: &Host, index: u64) -> Result<(), String> {
    let raft = host
        .raft(META)
        .ok_or("ERR the meta group is not hosted here")?;
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    while raft
        .metrics()
        .borrow_watched()
        .last_applied
        .is_none_or(|l| l.index < index)
    {
        if std::time::Instant::now() > deadline {
            return Err("ERR the change committed, but this node did not apply it in time".into());
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// As the meta leader: commits `change` and returns its entry's log index once applied here,
/// or the reply refusing it (by the current set, at once, or by the set it applied to).
async fn commit_functions(host: &Host, change: LibraryChange) -> Result<u64, String> {
    let raft = host
        .raft(META)
        .ok_or("ERR the meta group is not hosted here")?;
    let core = host.core_rc().ok_or("ERR this node is stopping")?;
    let libraries = &core.shared.scripts.libraries;
    // What the current set refuses needs no log entry.
    libraries.snapshot().apply(&change)?;
    let nonce = fastrand::u64(..);
    let written = glommio::timer::timeout(STEP_TIMEOUT, async {
        Ok(raft
            .client_write(super::types::Data(Bytes::from(meta::functions_entry(
                nonce, &change,
            ))))
            .await)
    })
    .await
    .map_err(|_| "ERR the meta group did not commit in time".to_string())?;
    let written = written.map_err(|e| format!("ERR {e}"))?;
    // Applied here by the time client_write returns.
    match libraries.applied(nonce) {
        Some(Ok(())) => Ok(written.log_id.index),
        Some(Err(e)) => Err(e),
        None => {
            Err("ERR the change committed but its outcome is unknown: see FUNCTION LIST".into())
        }
    }
}

/// ACL SETUSER / DELUSER / LOAD in a cluster: commits `change` through the meta group (on its
/// leader) and waits until this node applied it too. Runs on core 0. The outcome is DELUSER's
/// count, or the error reply (the proposer's, or the one the committed users gave).
pub async fn change_users(host: &Rc<Host>, change: UsersChange) -> Outcome {
    let call = Call::Users { change };
    let (index, outcome) = match on_meta_leader(host, &call).await {
        Err(e) => return Err(format!("ERR {e}")),
        Ok(Some(reply)) => {
            decode::<Result<(u64, usize), String>>(&reply).map_err(|e| format!("ERR {e}"))??
        }
        Ok(None) => {
            let Call::Users { change } = call else {
                unreachable!("built above")
            };
            commit_users(host, change).await?
        }
    };
    wait_applied(host, index).await?;
    Ok(outcome)
}

/// As the meta leader: commits `change` and returns its entry's log index once applied here
/// with the outcome, or the reply refusing it (by the users it applied to). The cluster's
/// first users are committed before any change to them: every node then applies a change
/// to the same users.
async fn commit_users(host: &Host, change: UsersChange) -> Result<(u64, usize), String> {
    let core = host.core_rc().ok_or("ERR this node is stopping")?;
    let users = &core.shared.acl;
    if users.committed_at().is_none() && !matches!(change, UsersChange::Seed { .. }) {
        propose_users(host, &users.seed()).await?;
    }
    let (nonce, index) = propose_users(host, &change).await?;
    match users.outcome(nonce) {
        Some(Ok(n)) => Ok((index, n)),
        Some(Err(e)) => Err(e),
        None => Err("ERR the change committed but its outcome is unknown: see ACL LIST".into()),
    }
}

/// As the meta leader: proposes `change`; its nonce and log index once committed and applied
/// here.
async fn propose_users(host: &Host, change: &UsersChange) -> Result<(u64, u64), String> {
    let raft = host
        .raft(META)
        .ok_or("ERR the meta group is not hosted here")?;
    let nonce = fastrand::u64(..);
    let written = glommio::timer::timeout(STEP_TIMEOUT, async {
        Ok(raft
            .client_write(super::types::Data(Bytes::from(meta::users_entry(
                nonce, change,
            ))))
            .await)
    })
    .await
    .map_err(|_| "ERR the meta group did not commit in time".to_string())?;
    // Applied here by the time client_write returns.
    let written = written.map_err(|e| format!("ERR {e}"))?;
    Ok((nonce, written.log_id.index))
}

/// When this node becomes the meta leader: if the cluster has no users yet (it just formed,
/// or formed before users were shared), commits this node's configured users as its first
/// ones, retrying while it leads (a leader elected a moment ago may not take writes yet).
/// Racing seeds are harmless: only the first committed takes effect.
pub async fn seed_users(host: Rc<Host>) {
    for attempt in 1u64.. {
        let Some(core) = host.core_rc() else { return };
        let Some(raft) = host.raft(META) else { return };
        if core.shared.acl.committed_at().is_some()
            || raft.metrics().borrow_watched().state != ServerState::Leader
        {
            return;
        }
        match commit_users(&host, core.shared.acl.seed()).await {
            Ok(_) => {
                tracing::info!(
                    "the cluster's ACL users are committed through the meta group ({} users)",
                    core.shared.acl.all().len()
                );
                return;
            }
            Err(e) if attempt < 10 => {
                tracing::debug!("the cluster's first ACL users were not committed yet: {e}")
            }
            Err(e) => tracing::warn!("the cluster's first ACL users were not committed: {e}"),
        }
        glommio::timer::sleep(Duration::from_millis(500)).await;
    }
}
