//! Membership while serving: CLUSTER MEET adds a node, CLUSTER FORGET removes one, and the
//! replicas follow the cluster map.
//!
//! The map (committed through the meta group, see `meta`) says which nodes should replicate
//! each slot group. Loops make that true, each idempotent so a crash at any point is picked
//! up where it stopped; each core runs them for the groups it hosts:
//! - a core opens a group's Raft when the map lists this node for it, and drops its copy of
//!   a group once the group's leader confirms the node is no longer a member;
//! - each group's leader changes the group's Raft membership to the map's (a new node is
//!   added as a learner first and becomes a voter once it has caught up, by log or snapshot);
//! - core 0, while this node leads the meta group, plans one replica move at a time (off
//!   leaving nodes first, then toward an even spread) and commits it as a new map once the
//!   previous move is done everywhere, removes a leaving node from the map once it holds
//!   nothing, and hands leaderships over while they stay unevenly spread;
//! - core 0 keeps the map's entry for this node naming its TLS port (`tls-port`), which the
//!   map computed from `cluster-peers` cannot know: it asks the meta leader to commit it
//!   while the map says otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use openraft10 as openraft;

use super::admin::{self, CALL_TIMEOUT, Call, STEP_TIMEOUT};
use super::host::Host;
use super::meta::META;
use super::node::{group_name, lock};
use super::topology::Layout;
use super::types::{GroupId, NodeId};

impl Host {
    /// Starts this core's membership loop (on core 0, the TLS port's announcement too).
    pub fn spawn_membership(self: &Rc<Self>) {
        let me = self.clone();
        let tick = Duration::from_millis((self.node.timeout_ms / 2).clamp(100, 500));
        if self.raft(META).is_some() {
            self.spawn_announce(tick);
        }
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                if me.core_rc().is_none() {
                    return;
                }
                me.membership_round().await;
            }
        })
        .detach();
    }

    /// Core 0: while the map names another TLS port for this node than the one it serves,
    /// asks the meta leader to commit its own (a task of its own, so an unreachable leader
    /// holds up nothing else).
    fn spawn_announce(self: &Rc<Self>, tick: Duration) {
        let me = self.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                let Some(core) = me.core_rc() else { return };
                let Some(boot) = core.shared.cluster_boot.get() else {
                    return;
                };
                let tls_port = boot.me.tls_port;
                if me.node.me().tls_port == tls_port {
                    continue;
                }
                if let Err(e) = admin::announce(&me, tls_port).await {
                    tracing::debug!("cluster map: TLS port not announced yet: {e}");
                }
            }
        })
        .detach();
    }

    /// One round of the loops above for this core's groups.
    pub async fn membership_round(self: &Rc<Self>) {
        self.open_listed_groups().await;
        self.reconcile_led_groups();
        self.retire_groups().await;
        self.poll_leaders().await;
        if self
            .raft(META)
            .is_some_and(|r| r.metrics().borrow_watched().state == ServerState::Leader)
            && let Err(e) = plan(self).await
        {
            tracing::warn!("cluster map: {e}");
        }
    }

    /// The groups whose slots this core owns.
    fn my_groups(&self, map: &Layout) -> Vec<GroupId> {
        let Some(core) = self.core_rc() else {
            return Vec::new();
        };
        map.groups
            .iter()
            .enumerate()
            .filter(|(_, gl)| core.owner(gl.slots.start) == core.id)
            .map(|(g, _)| g as GroupId)
            .collect()
    }

    /// Opens this node's Raft for every group of this core the map lists it in.
    async fn open_listed_groups(&self) {
        let map = self.node.layout();
        for g in self.my_groups(&map) {
            let gl = &map.groups[g as usize];
            if gl.members.contains(&self.node.id)
                && self.raft(g).is_none()
                && let Err(e) = self.open_group(g, gl.slots.clone()).await
            {
                tracing::error!("{}: {e}", group_name(g));
            }
        }
    }

    /// For each group this node leads here whose Raft membership differs from the map's:
    /// adds the missing nodes as learners (waiting until they caught up), then makes the
    /// map's nodes the voters. The meta group's voters are the map's first few nodes and
    /// every other node follows it as a learner.
    fn reconcile_led_groups(self: &Rc<Self>) {
        let map = self.node.layout();
        for g in self.hosted() {
            let Some(raft) = self.raft(g) else { continue };
            let (voters, learners) = {
                let m = raft.metrics();
                let m = m.borrow_watched();
                if m.state != ServerState::Leader {
                    continue;
                }
                let config = m.membership_config.membership();
                if config.get_joint_config().len() > 1 {
                    continue; // a change is still in progress
                }
                let voters: BTreeSet<NodeId> = config.voter_ids().collect();
                let learners: BTreeSet<NodeId> = config.learner_ids().collect();
                (voters, learners)
            };
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
            if !self.begin_change(g) {
                continue;
            }
            let me = self.clone();
            let map = map.clone();
            glommio::spawn_local(async move {
                let r = glommio::timer::timeout(STEP_TIMEOUT, async {
                    Ok(me
                        .change_group(g, &map, &voters, &learners, want_voters, want_learners)
                        .await)
                })
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()));
                if let Err(e) = r {
                    tracing::warn!("{}: membership change not done: {e}", group_name(g));
                }
                me.end_change(g);
            })
            .detach();
        }
    }

    async fn change_group(
        self: &Rc<Self>,
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
        if *voters != want_voters && !want_voters.contains(&self.node.id) && g != META {
            // This leader leaves the group: hand the leadership to a staying voter first
            // (a blip of a few milliseconds), which then makes the change, rather than
            // stepping down after it and leaving the group to an election.
            let mut staying: Vec<NodeId> = voters
                .intersection(&want_voters)
                .copied()
                .filter(|&n| n != self.node.id)
                .collect();
            staying.sort_by_key(|&n| (self.node.led_count(n), n));
            for to in staying {
                if admin::hand_off(self, g, to).await? {
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

    /// Drops this node's copy of each group of this core the map no longer gives it, once
    /// the group's leader confirms the membership change is done.
    async fn retire_groups(self: &Rc<Self>) {
        let map = self.node.layout();
        for g in self.hosted() {
            if g == META || map.groups[g as usize].members.contains(&self.node.id) {
                continue;
            }
            let Some(view) = admin::ask_group(self, g, &map).await else {
                continue;
            };
            match view.members {
                Some(members) if !members.contains(&self.node.id) => {}
                _ => continue,
            }
            if self.node.layout().groups[g as usize]
                .members
                .contains(&self.node.id)
            {
                continue; // given back meanwhile
            }
            let slots = map.groups[g as usize].slots.clone();
            match self.close_group(g, slots).await {
                Ok(()) => tracing::info!(
                    "{}: no longer replicated here; this node's copy was dropped",
                    group_name(g)
                ),
                Err(e) => tracing::error!("{}: dropping this node's copy: {e}", group_name(g)),
            }
        }
    }

    /// Learns who leads the groups of this core this node does not replicate (for MOVED
    /// redirects).
    async fn poll_leaders(self: &Rc<Self>) {
        let map = self.node.layout();
        for g in self.my_groups(&map) {
            if self.raft(g).is_some() {
                continue;
            }
            match admin::ask_group(self, g, &map).await {
                Some(v) => self.node.note_leader(g, v.leader, v.term),
                None => self.node.note_leader(g, None, self.node.term(g)),
            }
        }
    }
}

/// The meta leader's planner (core 0): once every group's membership matches the map,
/// removes a leaving node that holds nothing any more, or commits the next replica move.
async fn plan(host: &Rc<Host>) -> Result<(), String> {
    let map = host.node.layout();
    for g in 0..map.group_count() as GroupId {
        let want: BTreeSet<NodeId> = map.groups[g as usize].members.iter().copied().collect();
        match admin::ask_group(host, g, &map)
            .await
            .and_then(|v| v.members)
        {
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
        return admin::commit_map(host, next).await;
    }
    if let Some((g, from, to)) = map.next_move(|g| host.node.leader(g)) {
        tracing::info!(
            "cluster map: moving slot group {g}'s replica from node {from} to node {to}"
        );
        return admin::commit_map(host, map.with_move(g, from, to)).await;
    }
    balance_leaders(host, &map).await
}

/// Once the replicas are in place: if one node leads two groups more than another that
/// replicates one of them, and that lasts `cluster-leader-balance-delay`, asks the first to
/// hand that group's leadership over.
async fn balance_leaders(host: &Rc<Host>, map: &Layout) -> Result<(), String> {
    let mut led: BTreeMap<NodeId, Vec<GroupId>> = map
        .nodes
        .keys()
        .filter(|id| !map.leaving.contains(id))
        .map(|&id| (id, Vec::new()))
        .collect();
    for g in 0..map.group_count() as GroupId {
        match host.node.leader(g).and_then(|l| led.get_mut(&l)) {
            Some(groups) => groups.push(g),
            None => return Ok(()), // an election is running: wait
        }
    }
    let Some((&most, from)) = led.iter().max_by_key(|(id, gs)| (gs.len(), **id)) else {
        return Ok(());
    };
    let fewest = led.values().map(Vec::len).min().unwrap_or(0);
    // Only an imbalance that lasts: right after a failover the old leader may be back soon,
    // and each hand-off is a transfer round.
    let lasting = host.node.balance_delay;
    if lasting.is_zero() {
        return Ok(());
    }
    {
        let mut since = lock(&host.node.imbalanced_since);
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
            let info = map.nodes.get(&most).ok_or("the leader is not in the map")?;
            let done: bool = admin::call(
                host,
                &info.bus_addr(),
                &Call::HandOff { group: g, to },
                CALL_TIMEOUT,
            )
            .await?;
            if done {
                *lock(&host.node.imbalanced_since) = None;
                return Ok(());
            }
        }
    }
    Ok(())
}
