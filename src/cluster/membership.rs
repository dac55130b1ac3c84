//! Membership while serving: CLUSTER MEET adds a node, CLUSTER FORGET removes one, and the
//! replicas follow the cluster map.
//!
//! The map (committed through the meta group, see `cluster::meta`) says which nodes should
//! replicate each slot group. Three loops make that true, each idempotent so a crash at any
//! point is picked up where it stopped:
//! - every node opens a group's Raft when the map lists it, and drops its copy of a group
//!   once the group's leader confirms it is no longer a member;
//! - each group's leader changes the group's Raft membership to the map's (the new node is
//!   added as a learner first and becomes a voter once it has caught up, by log or
//!   snapshot);
//! - the meta leader plans one replica move at a time (off leaving nodes first, then toward
//!   an even spread) and commits it as a new map once the previous move is done everywhere,
//!   and removes a leaving node from the map once it holds nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use tokio::sync::watch;

use super::meta::META;
use super::node::{Call, ClusterNode, GroupReply, HelloReply, encode, group_name, lock};
use super::topology::{Layout, random_node_name};
use super::types::{GroupId, NodeId, NodeInfo, Request, join_host_port};

/// How long a membership step may take (a new replica catching up included).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a peer has to answer an admin call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| format!("undecodable reply: {e}"))
}

impl ClusterNode {
    /// Starts following the cluster map (`maps`) and the membership loops.
    pub(super) fn spawn_membership(self: &Arc<Self>, mut maps: watch::Receiver<Arc<Layout>>) {
        let node = self.clone();
        self.handle.spawn(async move {
            loop {
                let map = maps.borrow_and_update().clone();
                node.set_layout(map);
                node.open_listed_groups().await;
                if maps.changed().await.is_err() {
                    return;
                }
            }
        });
        let node = self.clone();
        let tick = Duration::from_millis((self.timeout_ms / 2).clamp(100, 500));
        self.handle.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                // Also here: a group dropped while the map gave it back is reopened.
                node.open_listed_groups().await;
                node.reconcile_led_groups();
                node.retire_groups().await;
                node.poll_leaders().await;
                if node.meta.metrics().borrow().state == ServerState::Leader
                    && let Err(e) = node.plan().await
                {
                    tracing::warn!("cluster map: {e}");
                }
            }
        });
    }

    /// Opens this node's Raft for every group the map lists it in.
    async fn open_listed_groups(self: &Arc<Self>) {
        let _opening = self.opening.lock().await;
        let map = self.layout();
        for (g, gl) in map.groups.iter().enumerate() {
            let g = g as GroupId;
            if gl.members.contains(&self.id)
                && self.raft(g).is_none()
                && let Err(e) = self.open_group(g).await
            {
                tracing::error!("{}: {e}", group_name(g));
            }
        }
    }

    /// For each group this node leads whose Raft membership differs from the map's: adds
    /// the missing nodes as learners (waiting until they caught up), then makes the map's
    /// nodes the voters. The meta group's voters are the map's first few nodes and every
    /// other node follows it as a learner.
    fn reconcile_led_groups(self: &Arc<Self>) {
        let map = self.layout();
        for (g, raft) in self.all_rafts() {
            let m = raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                continue;
            }
            let config = m.membership_config.membership();
            if config.get_joint_config().len() > 1 {
                continue; // a change is still in progress
            }
            let voters: BTreeSet<NodeId> = config.voter_ids().collect();
            let learners: BTreeSet<NodeId> = config.learner_ids().collect();
            let (want_voters, want_learners): (BTreeSet<NodeId>, BTreeSet<NodeId>) = if g == META {
                let v = map.meta_voters();
                let l = map
                    .nodes
                    .keys()
                    .filter(|id| !v.contains(id))
                    .copied()
                    .collect();
                (v, l)
            } else {
                let v = map.groups[g as usize].members.iter().copied().collect();
                (v, BTreeSet::new())
            };
            if voters == want_voters && learners == want_learners {
                continue;
            }
            if !lock(&self.busy).insert(g) {
                continue;
            }
            let node = self.clone();
            let map = map.clone();
            self.handle.spawn(async move {
                let r = tokio::time::timeout(
                    STEP_TIMEOUT,
                    node.change_group(g, &map, &voters, &learners, want_voters, want_learners),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()));
                if let Err(e) = r {
                    tracing::warn!("{}: membership change not done: {e}", group_name(g));
                }
                lock(&node.busy).remove(&g);
            });
        }
    }

    async fn change_group(
        &self,
        g: GroupId,
        map: &Layout,
        voters: &BTreeSet<NodeId>,
        learners: &BTreeSet<NodeId>,
        want_voters: BTreeSet<NodeId>,
        want_learners: BTreeSet<NodeId>,
    ) -> Result<(), String> {
        let raft = self.raft(g).ok_or("not a member")?;
        let name = group_name(g);
        for &n in want_voters.iter().chain(&want_learners) {
            if voters.contains(&n) || learners.contains(&n) {
                continue;
            }
            let info = map
                .nodes
                .get(&n)
                .ok_or("a member is not in the map")?
                .clone();
            tracing::info!("{name}: adding node {n} as a learner");
            raft.add_learner(n, info, true)
                .await
                .map_err(|e| format!("adding node {n}: {e}"))?;
            tracing::info!("{name}: node {n} caught up");
        }
        if *voters != want_voters && !want_voters.contains(&self.id) && g != META {
            // This leader leaves the group: hand the leadership to a staying voter first
            // (a blip of a few milliseconds), which then makes the change, rather than
            // stepping down after it and leaving the group to an election.
            let mut staying: Vec<NodeId> = voters
                .intersection(&want_voters)
                .copied()
                .filter(|&n| n != self.id)
                .collect();
            staying.sort_by_key(|&n| (self.led_count(n), n));
            for to in staying {
                if self.hand_off(g, to).await? {
                    return Ok(());
                }
            }
        }
        if *voters != want_voters {
            tracing::info!("{name}: changing voters {voters:?} -> {want_voters:?}");
            // The meta group keeps a removed voter as a learner (it may still be in the
            // map); a slot group drops it.
            raft.change_membership(want_voters.clone(), g == META)
                .await
                .map_err(|e| format!("changing voters: {e}"))?;
            tracing::info!("{name}: voters now {want_voters:?}");
        }
        let gone: BTreeSet<NodeId> = learners
            .iter()
            .chain(voters)
            .filter(|n| !want_voters.contains(n) && !want_learners.contains(n))
            .copied()
            .collect();
        if g == META && !gone.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(gone.clone()), false)
                .await
                .map_err(|e| format!("removing {gone:?}: {e}"))?;
            tracing::info!("{name}: removed nodes {gone:?}");
        }
        Ok(())
    }

    /// Asks the nodes the map lists for group `g` (and then any other node) how they see
    /// it; returns the answer from the highest term (a leader's carries the membership).
    pub(super) async fn ask_group(&self, g: GroupId, map: &Layout) -> Option<GroupReply> {
        let mut best: Option<GroupReply> = None;
        let listed: Vec<NodeId> = if g == META {
            map.nodes.keys().copied().collect()
        } else {
            map.groups[g as usize].members.clone()
        };
        for id in listed {
            let reply = if id == self.id {
                self.raft(g).map(|_| self.group_view(g))
            } else {
                let Some(info) = map.nodes.get(&id) else {
                    continue;
                };
                let call = encode(&Call::Group { group: g }).ok()?;
                match self
                    .parts
                    .client
                    .call(&info.bus_addr(), call, CALL_TIMEOUT)
                    .await
                {
                    Ok(bytes) => decode::<GroupReply>(&bytes).ok(),
                    Err(_) => None,
                }
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

    /// Drops this node's copy of each group the map no longer gives it, once the group's
    /// leader confirms the membership change is done: stops its Raft, deletes its keys,
    /// log and snapshot here.
    async fn retire_groups(&self) {
        let map = self.layout();
        for g in 0..self.group_count() as GroupId {
            if self.raft(g).is_none() || map.groups[g as usize].members.contains(&self.id) {
                continue;
            }
            let Some(view) = self.ask_group(g, &map).await else {
                continue;
            };
            match view.members {
                Some(members) if !members.contains(&self.id) => {}
                _ => continue,
            }
            let _opening = self.opening.lock().await;
            if self.layout().groups[g as usize].members.contains(&self.id) {
                continue; // given back meanwhile
            }
            self.close_group(g).await;
            let slots = map.groups[g as usize].slots.clone();
            let r = self.parts.cores.install(g, slots, Vec::new(), None).await;
            let purged = self.purge_group_log(g);
            match r.and(purged) {
                Ok(()) => tracing::info!(
                    "{}: no longer replicated here; this node's copy was dropped",
                    group_name(g)
                ),
                Err(e) => tracing::error!("{}: dropping this node's copy: {e}", group_name(g)),
            }
        }
    }

    /// Deletes group `g`'s Raft log, vote, applied marks and snapshot from this node.
    fn purge_group_log(&self, g: GroupId) -> Result<(), String> {
        self.parts.storage.raft_clear_group(g)?;
        self.parts.files.remove(g)
    }

    /// Learns who leads the groups this node does not replicate (for MOVED redirects).
    async fn poll_leaders(&self) {
        let map = self.layout();
        for g in 0..self.group_count() as GroupId {
            if self.raft(g).is_some() {
                continue;
            }
            let view = self.ask_group(g, &map).await;
            self.note_leader(g, view.and_then(|v| v.leader.map(|l| (l, v.term))));
        }
    }

    /// The meta leader's planner: once every group's membership matches the map, removes
    /// a leaving node that holds nothing any more, or commits the next replica move.
    async fn plan(&self) -> Result<(), String> {
        let map = self.layout();
        for g in 0..self.group_count() as GroupId {
            let want: BTreeSet<NodeId> = map.groups[g as usize].members.iter().copied().collect();
            match self.ask_group(g, &map).await.and_then(|v| v.members) {
                Some(members) if members == want => {}
                _ => return Ok(()), // a change in progress, or no leader: wait
            }
        }
        if let Some(&gone) = map.leaving.iter().find(|&&id| map.holds_nothing(id)) {
            let mut next = (*map).clone();
            next.epoch += 1;
            next.nodes.remove(&gone);
            next.leaving.remove(&gone);
            tracing::info!("cluster map: node {gone} holds no replica any more: removing it");
            return self.commit_map(next).await;
        }
        if let Some((g, from, to)) = map.next_move(|g| self.leader(g)) {
            tracing::info!(
                "cluster map: moving slot group {g}'s replica from node {from} to node {to}"
            );
            return self.commit_map(map.with_move(g, from, to)).await;
        }
        self.balance_leaders(&map).await
    }

    /// Once the replicas are in place: if one node leads two groups more than another that
    /// replicates one of them, asks the first to hand that group's leadership over.
    async fn balance_leaders(&self, map: &Layout) -> Result<(), String> {
        let mut led: BTreeMap<NodeId, Vec<GroupId>> = map
            .nodes
            .keys()
            .filter(|id| !map.leaving.contains(id))
            .map(|&id| (id, Vec::new()))
            .collect();
        for g in 0..self.group_count() as GroupId {
            match self.leader(g).and_then(|l| led.get_mut(&l)) {
                Some(groups) => groups.push(g),
                None => return Ok(()), // an election is running: wait
            }
        }
        let Some((&most, from)) = led.iter().max_by_key(|(id, gs)| (gs.len(), **id)) else {
            return Ok(());
        };
        let fewest = led.values().map(Vec::len).min().unwrap_or(0);
        // Only an imbalance that lasts (cluster-leader-balance-delay): right after a
        // failover the old leader may be back soon, and each hand-off is an election round.
        let lasting = self.balance_delay;
        if lasting.is_zero() {
            return Ok(());
        }
        {
            let mut since = lock(&self.imbalanced_since);
            if fewest + 1 >= from.len() {
                *since = None;
                return Ok(());
            }
            if since.get_or_insert_with(std::time::Instant::now).elapsed() < lasting {
                return Ok(());
            }
        }
        for &g in from {
            let least = led
                .iter()
                .filter(|(id, _)| map.groups[g as usize].members.contains(id))
                .min_by_key(|(id, gs)| (gs.len(), **id));
            if let Some((&to, gs)) = least
                && gs.len() + 1 < from.len()
            {
                let done = if most == self.id {
                    self.hand_off(g, to).await?
                } else {
                    let info = map.nodes.get(&most).ok_or("the leader is not in the map")?;
                    let call = encode(&Call::HandOff { group: g, to })?;
                    let reply = self
                        .parts
                        .client
                        .call(&info.bus_addr(), call, CALL_TIMEOUT)
                        .await
                        .map_err(|e| e.to_string())?;
                    decode::<bool>(&reply)?
                };
                if done {
                    *lock(&self.imbalanced_since) = None;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// As group `g`'s leader: hands the leadership to node `to` if it catches up and this
    /// node has led for a while (the old leader's own vote lease must have run out, or it
    /// would refuse the vote). The group's writes and reads wait meanwhile, so the target's
    /// log matches this node's when it stands (Raft's leadership transfer); they resume,
    /// redirected, once this node has stepped down. Returns whether `to` was asked to stand.
    pub(super) async fn hand_off(&self, g: GroupId, to: NodeId) -> Result<bool, String> {
        let raft = self.raft(g).ok_or("not a member")?;
        let matched = |m: &openraft::RaftMetrics<NodeId, NodeInfo>| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&to).copied().flatten())
                .is_some_and(|matched| Some(matched.index) == m.last_log_index)
        };
        let settled = lock(&self.led_since)
            .get(&g)
            .is_some_and(|t| t.elapsed() > Duration::from_millis(2 * self.timeout_ms));
        {
            let m = raft.metrics().borrow().clone();
            let replicating = m
                .replication
                .as_ref()
                .is_some_and(|r| r.get(&to).copied().flatten().is_some());
            if m.state != ServerState::Leader || !settled || !replicating {
                return Ok(false);
            }
        }
        let info = self.node(to).ok_or("the target is not in the map")?;
        let Some(_held) = self.handing.begin(g) else {
            return Ok(false);
        };
        // Proposals already made still reach the log: wait until `to` has them all.
        let wait = Duration::from_millis(self.timeout_ms / 2);
        let mut metrics = raft.metrics();
        let caught_up = matches!(
            tokio::time::timeout(wait, metrics.wait_for(|m| matched(m))).await,
            Ok(Ok(_))
        );
        if !caught_up {
            tracing::info!(
                "{}: not handing the leadership to node {to}: it did not catch up",
                group_name(g)
            );
            return Ok(false);
        }
        tracing::info!("{}: handing the leadership to node {to}", group_name(g));
        let call = encode(&Call::TakeLead { group: g })?;
        self.parts
            .client
            .call(&info.bus_addr(), call, CALL_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        // Hold the group until this node has granted the vote and stepped down (or the
        // election failed and it still leads).
        let wait = Duration::from_millis(self.timeout_ms);
        let _ =
            tokio::time::timeout(wait, metrics.wait_for(|m| m.state != ServerState::Leader)).await;
        Ok(true)
    }

    /// Commits `next` through the meta group (this node must lead it).
    async fn commit_map(&self, next: Layout) -> Result<(), String> {
        let resp = tokio::time::timeout(
            STEP_TIMEOUT,
            self.meta.client_write(Request::Map(Box::new(next))),
        )
        .await
        .map_err(|_| "the meta group did not commit in time".to_string())?
        .map_err(|e| e.to_string())?;
        match resp.data.replies.first() {
            Some(r) if r.starts_with(b"+") => Ok(()),
            _ => Err("the cluster map changed meanwhile; try again".to_string()),
        }
    }

    /// Runs `call` on the meta leader (here if this node leads the meta group).
    async fn on_meta_leader(&self, call: Call) -> Result<Option<Vec<u8>>, String> {
        let m = self.meta.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return Ok(None);
        }
        let leader = m
            .current_leader
            .and_then(|l| self.node(l))
            .ok_or("the meta group has no leader now; try again")?;
        let payload = encode(&call)?;
        self.parts
            .client
            .call(&leader.bus_addr(), payload, STEP_TIMEOUT)
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// CLUSTER MEET: makes the unassigned node at `host:port` (bus at `bus_port`) a member.
    /// Returns its node id.
    pub async fn meet(&self, host: String, port: u16, bus_port: u16) -> Result<NodeId, String> {
        let call = Call::Meet {
            host: host.clone(),
            port,
            bus_port,
        };
        if let Some(reply) = self.on_meta_leader(call).await? {
            return decode(&reply);
        }
        let bus = join_host_port(&host, bus_port);
        let hello: HelloReply = decode(
            &self
                .parts
                .client
                .call(&bus, encode(&Call::Hello)?, CALL_TIMEOUT)
                .await
                .map_err(|e| format!("cannot reach the node's bus at {bus}: {e}"))?,
        )?;
        let map = self.layout();
        let known = map
            .nodes
            .iter()
            .find(|(_, n)| n.host == host && n.port == port)
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
                        host: host.clone(),
                        port,
                        bus_port,
                    },
                );
                tracing::info!("cluster map: node {id} ({host}:{port}) joins");
                self.commit_map(next).await?;
                id
            }
        };
        let join = Call::Join {
            id,
            map: Box::new((*self.layout()).clone()),
        };
        self.parts
            .client
            .call(&bus, encode(&join)?, CALL_TIMEOUT)
            .await
            .map_err(|e| format!("node {id} did not take the join: {e}"))?;
        Ok(id)
    }

    /// CLUSTER FORGET: moves every replica off node `id`, then removes it from the map.
    pub async fn forget(&self, id: NodeId) -> Result<(), String> {
        if let Some(reply) = self.on_meta_leader(Call::Forget { id }).await? {
            return decode(&reply);
        }
        let map = self.layout();
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
        self.commit_map(next).await
    }

    /// Node ids by name (CLUSTER FORGET takes a name).
    pub fn node_id_by_name(&self, name: &str) -> Option<NodeId> {
        self.layout()
            .nodes
            .iter()
            .find(|(_, n)| n.name == name)
            .map(|(&id, _)| id)
    }
}
