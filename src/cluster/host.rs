//! One core's part of the cluster: the Raft groups it hosts (the slot groups whose slots it
//! owns; core 0 also hosts the meta group), their log (`logstore`), their links to the peers
//! (`link`, `net`), and the engine's view of them ([`Consensus`]).
//!
//! Everything here runs on the core's glommio executor: openraft's tasks, the log writes,
//! the bus. A write goes from a client's socket to its reply without leaving the core's
//! thread, except for the fdatasync of `appendfsync always`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use openraft::raft::ReadPolicy;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{ServerState, SnapshotPolicy};
use openraft10 as openraft;

use super::link::Links;
use super::logstore::{LogStore, WalPump};
use super::meta::{self, META, MetaState};
use super::net::{Groups, NetFactory, RaftServer};
use super::node::{ClusterNode, group_name};
use super::sm::GroupSm;
use super::topology::Layout;
use super::types::{ClientWriteResult, Data, GroupId, NodeId, NodeInfo, Raft, Reply};
use crate::config::AppendFsync;
use crate::engine::core::Core;
use crate::engine::replicated::{self, Admit, Consensus, Refusal};
use crate::engine::spec::Pid;
use crate::storage::Storage;

/// Keys a leader's active expiry checks per group and tick at most.
const EXPIRE_SAMPLE: usize = 200;
/// During an at-rest key rotation, a core moves this much of its Raft log to the active key
/// per step, at most one step per `RESEAL_EVERY` (and per tick): the step runs on the core's
/// thread between requests, a millisecond or so of sealing and copying.
const RESEAL_BYTES: usize = 1 << 20;
const RESEAL_EVERY: Duration = Duration::from_millis(20);

pub struct Host {
    core: Weak<Core>,
    pub node: Arc<ClusterNode>,
    pub storage: Arc<Storage>,
    pub pump: Rc<WalPump>,
    pub links: Rc<Links>,
    pub server: Rc<RaftServer>,
    groups: RefCell<BTreeMap<GroupId, Raft>>,
    /// Settings every group shares (each gets its own copy named after it).
    config: openraft::Config,
    /// Proposals waiting to be handed to their group's Raft, in order.
    proposals: RefCell<VecDeque<(GroupId, Pid, Vec<u8>)>>,
    proposing: Cell<bool>,
    /// Groups being opened or closed here (one change at a time per group).
    changing: RefCell<BTreeSet<GroupId>>,
    /// Groups whose membership this node is changing now (as their leader).
    busy: RefCell<BTreeSet<GroupId>>,
    /// When the log was last synced by the periodic (everysec) sync.
    last_sync: Cell<Instant>,
    /// Per led group, where its active expiry continues.
    expire_cursors: RefCell<BTreeMap<(GroupId, usize), crate::shard::ExpireCursor>>,
    /// Per led group, its last eviction (see [`Host::evict_led`]).
    evictions: RefCell<BTreeMap<GroupId, Eviction>>,
    /// The log's at-rest key rotation (see [`Host::reseal_log`]).
    reseal: Cell<Reseal>,
    me: Weak<Host>,
}

/// Where a core's Raft log stands in at-rest key rotations.
#[derive(Clone, Copy)]
struct Reseal {
    /// No step before this.
    next: Instant,
    /// The write and sync after a step are under way.
    syncing: bool,
    /// The key generation the pass under way started at (read before its first step, so a
    /// reload during the pass is not reported as done).
    pass: Option<u64>,
    /// The last generation a pass finished (0: none yet).
    done: u64,
}

/// A leader's last eviction in a group: awaiting its commit (with the asks answered when it
/// commits), or committed, by log index (an upper bound of its entry's index).
enum Eviction {
    InFlight(Vec<oneshot::Sender<Option<u64>>>),
    Committed(u64),
}

impl Host {
    pub fn new(
        core: &Rc<Core>,
        node: Arc<ClusterNode>,
        storage: Arc<Storage>,
        pump: Rc<WalPump>,
        links: Rc<Links>,
        config: openraft::Config,
    ) -> Rc<Host> {
        Rc::new_cyclic(|me: &Weak<Host>| {
            let groups: Weak<dyn Groups> = me.clone();
            Host {
                core: Rc::downgrade(core),
                node,
                storage,
                pump,
                links,
                server: Rc::new(RaftServer::new(groups)),
                groups: RefCell::new(BTreeMap::new()),
                config,
                proposals: RefCell::new(VecDeque::new()),
                proposing: Cell::new(false),
                changing: RefCell::new(BTreeSet::new()),
                busy: RefCell::new(BTreeSet::new()),
                expire_cursors: RefCell::new(BTreeMap::new()),
                evictions: RefCell::new(BTreeMap::new()),
                last_sync: Cell::new(Instant::now()),
                reseal: Cell::new(Reseal {
                    next: Instant::now(),
                    syncing: false,
                    pass: None,
                    done: 0,
                }),
                me: me.clone(),
            }
        })
    }

    fn core(&self) -> Option<Rc<Core>> {
        self.core.upgrade()
    }

    /// The core this host belongs to (None once it stopped).
    pub fn core_rc(&self) -> Option<Rc<Core>> {
        self.core.upgrade()
    }

    /// Marks a membership change of group `g` as running; false if one already is.
    pub(super) fn begin_change(&self, g: GroupId) -> bool {
        self.busy.borrow_mut().insert(g)
    }

    pub(super) fn end_change(&self, g: GroupId) {
        self.busy.borrow_mut().remove(&g);
    }

    /// The Raft settings every group shares, from the node's cluster settings.
    pub fn raft_config(config: &crate::config::ClusterConfig) -> Result<openraft::Config, String> {
        let timeout = config.node_timeout_ms;
        let heartbeat = (timeout / 10).max(20);
        openraft::Config {
            cluster_name: "tallykv".to_string(),
            heartbeat_interval: heartbeat,
            // openraft's leader lease is election_timeout_max: a voter refuses other
            // candidates that long after hearing from its leader, and a follower stands only
            // once the lease *and* its election timeout have passed since it heard from the
            // leader. Half the node timeout each, so a follower stands after 0.8-1x the node
            // timeout (with the lease at the node timeout it took 1.8-2x: failover measured
            // 1.9 s at 1000 ms). The leader's read lease (`ClusterNode::lease_ms`) is half of
            // the voters' lease, for clocks that drift apart up to 2x.
            election_timeout_min: (timeout * 3 / 10).max(heartbeat + 1),
            election_timeout_max: (timeout / 2).max(heartbeat + 2),
            enable_pre_vote: Some(true),
            // Heartbeats are sent by the core for all the groups it leads at once (one frame
            // per peer and pass), and only to followers that did not acknowledge an append
            // within the interval: see `Host::spawn_heartbeats`.
            enable_heartbeat: false,
            // Entries go to the followers as soon as they are appended here, not after the
            // local write: the leader's own write and the followers' run side by side (the
            // commit still counts the leader only once its write is done).
            broadcast_submitted_on_append: Some(true),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after),
            // Keep a tenth of a snapshot interval of log behind each snapshot, so a replica
            // just briefly behind catches up from the log rather than a whole snapshot.
            max_in_snapshot_log_to_keep: (config.snapshot_after / 10).min(1000),
            // A snapshot's last chunk waits for the install (seconds for a large group).
            install_snapshot_timeout: 30_000,
            // A node whose data dir was lost rejoins with an empty log: its leaders must take
            // its log going back (it then catches up by snapshot). Safe here because such a
            // node abstains from voting until it must have heard from any live leader (see
            // `ClusterNode::votes_allowed`).
            allow_log_reversion: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("Raft settings: {e}"))
    }

    fn config_for(&self, g: GroupId) -> Arc<openraft::Config> {
        Arc::new(openraft::Config {
            cluster_name: group_name(g),
            ..self.config.clone()
        })
    }

    /// This core's Raft of group `g`.
    pub fn raft(&self, g: GroupId) -> Option<Raft> {
        self.groups.borrow().get(&g).cloned()
    }

    pub fn hosted(&self) -> Vec<GroupId> {
        self.groups.borrow().keys().copied().collect()
    }

    /// Opens slot group `g` here (its log and applied state; elections run on after).
    pub async fn open_group(&self, g: GroupId, slots: Range<usize>) -> Result<(), String> {
        if self.raft(g).is_some() || !self.changing.borrow_mut().insert(g) {
            return Ok(());
        }
        let opened = self.open_group_inner(g, slots).await;
        self.changing.borrow_mut().remove(&g);
        opened
    }

    async fn open_group_inner(&self, g: GroupId, slots: Range<usize>) -> Result<(), String> {
        let core = self.core().ok_or("the core stopped")?;
        let log = LogStore::open(g, self.pump.clone()).map_err(|e| e.to_string())?;
        let sm = GroupSm::open_slots(g, slots, &core, self.node.clone(), self.storage.clone())?;
        self.start_raft(g, log, sm).await
    }

    /// Opens the meta group here (core 0), starting from `state`.
    pub async fn open_meta(
        &self,
        state: meta::Stored,
        on_map: Rc<dyn Fn(Arc<Layout>)>,
    ) -> Result<(), String> {
        let core = self.core().ok_or("the core stopped")?;
        let log = LogStore::open(META, self.pump.clone()).map_err(|e| e.to_string())?;
        let sm = GroupSm::open_meta(
            &core,
            self.node.clone(),
            self.storage.clone(),
            MetaState::new(state, on_map),
        );
        self.start_raft(META, log, sm).await
    }

    async fn start_raft(&self, g: GroupId, log: LogStore, sm: GroupSm) -> Result<(), String> {
        let net = NetFactory {
            group: g,
            links: self.links.clone(),
            node: self.node.clone(),
        };
        let raft = Raft::new(self.node.id, self.config_for(g), net, log, sm)
            .await
            .map_err(|e| format!("{}: cannot start Raft: {e}", group_name(g)))?;
        self.groups.borrow_mut().insert(g, raft.clone());
        if g != META {
            self.node.set_member(g, true);
        }
        self.spawn_watcher(g, raft);
        Ok(())
    }

    /// Stops group `g` here and drops this node's copy of it: its keys, applied mark, log
    /// and snapshot (the node no longer replicates it).
    pub async fn close_group(&self, g: GroupId, slots: Range<usize>) -> Result<(), String> {
        if !self.changing.borrow_mut().insert(g) {
            return Ok(());
        }
        let raft = self.groups.borrow_mut().remove(&g);
        self.node.set_member(g, false);
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        let result = match self.core() {
            Some(core) => {
                // A script paused on this core (see `engine::pause`) ends first.
                core.gate.wait_open(None).await;
                replicated::lost(&core, g, Refusal::NoLeader);
                core.shard.borrow_mut().for_each_db(|shard| {
                    shard.apply(crate::shard::Mutation::FlushSlots {
                        slots: slots.start as u16..slots.end as u16,
                    });
                });
                core.stage_raft_item(super::sm::applied_key(g), None);
                core.flush_changes();
                self.pump.wal().remove_group(g);
                self.node.files.remove(g)
            }
            None => Ok(()),
        };
        self.changing.borrow_mut().remove(&g);
        result
    }

    /// Keeps the node's leader table current, undoes a lost leadership's proposals, and logs
    /// elections.
    fn spawn_watcher(&self, g: GroupId, raft: Raft) {
        let Some(me) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            let mut rx = raft.metrics();
            let mut before: Option<NodeId> = None;
            let mut was_leader = false;
            loop {
                let (leader, term, state) = {
                    let m = rx.borrow_watched();
                    (m.current_leader, m.current_term, m.state)
                };
                if g == META {
                    me.node.note_meta_leader(leader);
                } else {
                    me.node.note_leader(g, leader, term);
                }
                let leading = state == ServerState::Leader;
                if was_leader
                    && !leading
                    && let Some(core) = me.core()
                {
                    let why = leader
                        .filter(|&l| l != me.node.id)
                        .map_or(Refusal::NoLeader, Refusal::Moved);
                    replicated::lost(&core, g, why);
                }
                if g == META && leading && !was_leader {
                    // A cluster with no users yet takes this node's configured ones.
                    glommio::spawn_local(super::admin::seed_users(me.clone())).detach();
                }
                was_leader = leading;
                if before != leader {
                    let name = group_name(g);
                    match (leader, leading) {
                        (None, _) => tracing::warn!("{name}: no leader (term {term})"),
                        (Some(_), true) => {
                            tracing::info!("{name}: this node is the leader (term {term})")
                        }
                        (Some(l), false) => {
                            tracing::info!("{name}: leader is node {l} (term {term})")
                        }
                    }
                }
                before = leader;
                if state == ServerState::Shutdown || rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }

    /// Forms a group on first start: if no leader has made itself heard after two election
    /// timeouts, the group's first member proposes the computed membership; the others do so
    /// after four (the first member may be down). A node that already has a log refuses, so
    /// proposing twice is harmless; and before forming, a node asks the other members, so a
    /// wiped node whose leader is slow to reach it does not form a rival group.
    pub fn spawn_bootstrap(&self, g: GroupId, members: Vec<NodeId>) {
        let Some(me) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            let map = me.node.layout();
            let first = members.first() == Some(&me.node.id);
            let wait = if first { 2 } else { 4 };
            glommio::timer::sleep(Duration::from_millis(me.node.timeout_ms * wait)).await;
            let Some(raft) = me.raft(g) else { return };
            if raft.metrics().borrow_watched().current_leader.is_some() {
                return;
            }
            match raft.is_initialized().await {
                Ok(false) => {
                    if let Some(seen) = super::admin::ask_group(&me, g, &map).await
                        && (seen.term > 0 || seen.leader.is_some())
                    {
                        tracing::info!(
                            "{}: formed already (term {}); waiting for its leader",
                            group_name(g),
                            seen.term
                        );
                        return;
                    }
                    let members: BTreeMap<NodeId, NodeInfo> = members
                        .iter()
                        .filter_map(|m| map.nodes.get(m).map(|n| (*m, n.clone())))
                        .collect();
                    match raft.initialize(members).await {
                        Ok(()) => tracing::info!("{}: formed", group_name(g)),
                        Err(e) => tracing::debug!("{}: not formed here: {e}", group_name(g)),
                    }
                }
                Ok(true) => {}
                Err(e) => tracing::error!("{}: {e}", group_name(g)),
            }
        })
        .detach();
    }

    /// Sends the heartbeats of every group this core leads at the same moment, so that
    /// they leave in one write per peer, and only for groups with a follower that has not
    /// acknowledged anything (an append counts) within the heartbeat interval: while writes
    /// flow, and for idle groups between intervals, no heartbeat is sent.
    pub fn spawn_heartbeats(self: &Rc<Self>) {
        let me = self.clone();
        let interval = Duration::from_millis(self.config.heartbeat_interval);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                if me.core_rc().is_none() {
                    return;
                }
                let now = Instant::now();
                let due: Vec<Raft> = me
                    .groups
                    .borrow()
                    .values()
                    .filter(|raft| {
                        let m = raft.metrics();
                        let m = m.borrow_watched();
                        m.state == ServerState::Leader
                            && m.heartbeat.as_ref().is_none_or(|acks| {
                                acks.iter().any(|(id, at)| {
                                    *id != me.node.id
                                        && at.as_ref().is_none_or(|t| {
                                            now.saturating_duration_since(**t) >= interval
                                        })
                                })
                            })
                    })
                    .cloned()
                    .collect();
                for raft in due {
                    let _ = raft.trigger().heartbeat().await;
                }
            }
        })
        .detach();
    }

    /// Periodic work (the core's tick): refuses promptly for groups whose quorum is gone,
    /// answers replies that waited too long, refreshes INFO's group lines, and runs the
    /// leader's active expiry.
    pub fn tick(&self) {
        let Some(core) = self.core() else { return };
        let mut no_quorum = Vec::new();
        let now = Instant::now();
        for (g, raft) in self.groups.borrow().iter() {
            let m = raft.metrics();
            let m = m.borrow_watched();
            let leading = m.state == ServerState::Leader;
            let lost = leading
                && m.last_quorum_acked
                    .as_ref()
                    .is_none_or(|t| now.saturating_duration_since(**t) > self.timeout());
            if *g != META {
                self.node.set_quorum_lost(*g, lost);
                self.node.set_group_line(*g, group_line(&m, &self.node));
                let mut offsets = vec![(self.node.id, m.last_applied.map_or(0, |l| l.index))];
                if let Some(repl) = &m.replication {
                    offsets.extend(
                        repl.iter()
                            .filter(|(id, _)| **id != self.node.id)
                            .map(|(id, matched)| (*id, matched.as_ref().map_or(0, |l| l.index))),
                    );
                }
                self.node.set_offsets(*g, offsets);
            }
            if lost {
                no_quorum.push(*g);
            }
        }
        replicated::expire_waiters(&core, &no_quorum);
        self.expire_led(&core);
        self.publish_raft_buffers(&core);
        self.periodic_sync();
        self.reseal_log(core.id);
    }

    /// Encryption at rest: while the key generation is newer than the last one this core's
    /// log finished, moves a slice of the log to the active key (`Wal::reseal_step`), then
    /// writes and syncs it, so the segments under the old key (or in plaintext) empty and go;
    /// once a step finds nothing left, reports the pass's generation done (an old key may
    /// leave the key file once every part has).
    fn reseal_log(&self, core_id: usize) {
        let Some(at_rest) = self.storage.at_rest() else {
            return;
        };
        let mut r = self.reseal.get();
        let now = Instant::now();
        if r.syncing || now < r.next {
            return;
        }
        let pass = match r.pass {
            Some(pass) => pass,
            None => {
                let generation = at_rest.generation();
                if generation <= r.done {
                    return;
                }
                generation
            }
        };
        r.pass = Some(pass);
        r.next = now + RESEAL_EVERY;
        let step = self.pump.wal().reseal_step(RESEAL_BYTES);
        match step {
            Ok(true) => {
                at_rest.part_done(&super::start::wal_part(core_id), pass);
                r.done = pass;
                r.pass = None;
            }
            Ok(false) => r.syncing = true,
            Err(e) => {
                tracing::error!(
                    "Raft log: moving entries to the active at-rest key: {e}; trying again in 10 s"
                );
                r.next = now + Duration::from_secs(10);
            }
        }
        // Stored before the task below starts: glommio runs a spawned task at once, and it
        // may finish before `spawn_local` returns (when a write of the pump's synced the
        // moved entries already).
        self.reseal.set(r);
        if r.syncing {
            // Synced here whatever appendfsync says: the old segments go only once the moved
            // entries are on disk (under `no` nothing else would sync them soon).
            let me = self.me.clone();
            let pump = self.pump.clone();
            glommio::spawn_local(async move {
                if let Err(e) = pump.write_and_sync().await {
                    tracing::error!("Raft log: {e}");
                }
                if let Some(me) = me.upgrade() {
                    let mut r = me.reseal.get();
                    r.syncing = false;
                    me.reseal.set(r);
                }
            })
            .detach();
        }
    }

    /// Tells the memory accounting how many bytes of log entries this core holds: they are
    /// left out of the maxmemory comparison, and must be as current as the allocations
    /// (which include them) or a write burst looks like data and makes leaders evict keys.
    pub fn publish_raft_buffers(&self, core: &Core) {
        if let Some(bytes) = self.pump.buffered_bytes() {
            core.shared.memory.set_raft_buffers(core.id, bytes);
        }
    }

    /// `appendfsync everysec`: what the log wrote in the last second reaches the disk.
    /// (`always` syncs on every write; `no` leaves it to the OS, as Valkey.)
    fn periodic_sync(&self) {
        if self.storage_fsync() != AppendFsync::EverySec {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_sync.get()) < Duration::from_secs(1) {
            return;
        }
        self.last_sync.set(now);
        let pump = self.pump.clone();
        glommio::spawn_local(async move {
            if let Err(e) = pump.write_and_sync().await {
                tracing::error!("Raft log: {e}");
            }
        })
        .detach();
    }

    fn storage_fsync(&self) -> AppendFsync {
        self.core().map_or(AppendFsync::EverySec, |c| {
            c.shared.config.runtime.appendfsync()
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.node.timeout_ms)
    }

    /// The leader's active expiry, for each group it leads here and may write to now: the
    /// expired keys it finds are deleted (journaled) and the deletions proposed like a write.
    fn expire_led(&self, core: &Rc<Core>) {
        let led: Vec<GroupId> = self
            .hosted()
            .into_iter()
            .filter(|&g| g != META && matches!(self.admit(g), Admit::Now(_)))
            .collect();
        if led.is_empty() {
            return;
        }
        let map = self.node.layout();
        let now = crate::util::now_ms();
        for g in led {
            let Some(slots) = map.groups.get(g as usize).map(|gl| gl.slots.clone()) else {
                continue;
            };
            let journal = {
                let mut shard = core.shard.borrow_mut();
                shard.start_journal();
                let mut cursors = self.expire_cursors.borrow_mut();
                // Each numbered database keeps its own cursor per group.
                shard.for_each_db(|shard| {
                    let cursor = cursors.entry((g, shard.db())).or_default();
                    shard.expire_step_in(slots.clone(), cursor, now, EXPIRE_SAMPLE);
                });
                if let Some(j) = shard.journal_mut() {
                    j.close_unit();
                }
                shard.take_journal().unwrap_or_default()
            };
            replicated::absorb(core, g, journal, now);
        }
    }

    /// As the leader of group `g`: evicts about `bytes` of its keys by the maxmemory-policy
    /// (journaled deletions, proposed like a write), so every replica evicts the same keys.
    /// Returns, once the deletions committed, a log index the asking node must apply before
    /// its memory shows them (None: nothing was evicted).
    ///
    /// `seen` is how far the asking node has applied the group's log. Every node over the
    /// limit asks, and evicting for each ask would evict the excess several times over: an
    /// ask that comes while an eviction is in flight, or from a node that has not applied
    /// the last one yet, is answered with that eviction instead.
    pub async fn evict_led(&self, g: GroupId, excess: u64, keys: u64, seen: u64) -> Option<u64> {
        let core = self.core()?;
        // A script paused on this core (see `engine::pause`) ends first.
        core.gate.wait_open(None).await;
        if !matches!(self.admit(g), Admit::Now(_)) {
            return None;
        }
        let wait = match self.evictions.borrow_mut().get_mut(&g) {
            Some(Eviction::InFlight(waiting)) => {
                let (tx, rx) = oneshot::channel();
                waiting.push(tx);
                Some(rx)
            }
            Some(Eviction::Committed(index)) if seen < *index => return Some(*index),
            _ => None,
        };
        if let Some(rx) = wait {
            return rx.await.ok().flatten();
        }
        let slots = self
            .node
            .layout()
            .groups
            .get(g as usize)
            .map(|gl| gl.slots.clone())?;
        let pid = core.evict_in(g, slots, excess, keys)?;
        self.evictions
            .borrow_mut()
            .insert(g, Eviction::InFlight(Vec::new()));
        let outcome = replicated::wait_committed(&core, g, pid).await;
        let index = match (outcome, self.raft(g)) {
            // The entry is in the log: the last index bounds it.
            (Ok(()), Some(raft)) => raft.metrics().borrow_watched().last_log_index,
            _ => None,
        };
        let last = match index {
            Some(i) => self
                .evictions
                .borrow_mut()
                .insert(g, Eviction::Committed(i)),
            None => self.evictions.borrow_mut().remove(&g),
        };
        if let Some(Eviction::InFlight(waiting)) = last {
            for tx in waiting {
                let _ = tx.send(index);
            }
        }
        index
    }

    /// Hands the queued proposals to their groups' Raft, in order (one task at a time, so a
    /// full channel never reorders them).
    fn run_proposals(&self) {
        if self.proposing.replace(true) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            loop {
                let next = me.proposals.borrow_mut().pop_front();
                let Some((g, pid, payload)) = next else { break };
                let Some(raft) = me.raft(g) else {
                    if let Some(core) = me.core() {
                        replicated::lost(&core, g, Refusal::NoLeader);
                    }
                    continue;
                };
                let core = me.core.clone();
                let me_id = me.node.id;
                let reply = Reply::new(move |r: Option<ClientWriteResult>| {
                    let Some(core) = core.upgrade() else { return };
                    let why = match r {
                        Some(Ok(_)) => return,
                        Some(Err(openraft::errors::ClientWriteError::ForwardToLeader(f))) => f
                            .leader_id
                            .filter(|&l| l != me_id)
                            .map_or(Refusal::NoLeader, Refusal::Moved),
                        Some(Err(_)) => Refusal::Uncertain,
                        None => Refusal::Down,
                    };
                    tracing::debug!("{}: proposal {pid} not committed: {why:?}", group_name(g));
                    replicated::lost(&core, g, why);
                });
                if raft
                    .client_write_ff(Data(Bytes::from(payload)), Some(reply))
                    .await
                    .is_err()
                    && let Some(core) = me.core()
                {
                    replicated::lost(&core, g, Refusal::Down);
                }
            }
            me.proposing.set(false);
        })
        .detach();
    }

    /// Stops every group here (SHUTDOWN) and writes the log out.
    pub async fn shutdown(&self) {
        let rafts: Vec<Raft> = self.groups.borrow().values().cloned().collect();
        for r in rafts {
            let _ = r.shutdown().await;
        }
        let _ = self.pump.write_and_sync().await;
    }
}

/// INFO cluster's line for a group this node replicates: role, term, leader, log and apply
/// positions, and (on the leader) each follower's lag in entries.
fn group_line(m: &openraft::RaftMetrics<super::types::TypeConfig>, node: &ClusterNode) -> String {
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let leader = m
        .current_leader
        .and_then(|l| node.node(l))
        .map_or("-".to_string(), |n| n.name.clone());
    let last = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map_or(0, |l| l.index);
    let mut line = format!(
        "role={role},term={},leader={leader},last_log={last},applied={applied}",
        m.current_term
    );
    if m.state == ServerState::Leader
        && let Some(t) = &m.last_quorum_acked
    {
        line.push_str(&format!(
            ",quorum_ack_ms={}",
            Instant::now().saturating_duration_since(**t).as_millis()
        ));
    }
    if let Some(repl) = &m.replication {
        let lags: Vec<String> = repl
            .iter()
            .filter(|(id, _)| **id != node.id)
            .map(|(id, matched)| {
                let lag = last.saturating_sub(matched.as_ref().map_or(0, |l| l.index));
                format!("{id}:{lag}")
            })
            .collect();
        line.push_str(&format!(",lag={}", lags.join("/")));
    }
    line
}

impl Consensus for Host {
    fn admit(&self, g: GroupId) -> Admit {
        let Some(raft) = self.raft(g) else {
            return Admit::Refuse(
                self.node
                    .leader(g)
                    .filter(|&l| l != self.node.id)
                    .map_or(Refusal::NoLeader, Refusal::Moved),
            );
        };
        let m = raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader {
            return Admit::Refuse(
                m.current_leader
                    .filter(|&l| l != self.node.id)
                    .map_or(Refusal::NoLeader, Refusal::Moved),
            );
        }
        let age = m
            .last_quorum_acked
            .as_ref()
            .map(|t| Instant::now().saturating_duration_since(**t));
        if age.is_some_and(|a| a > self.timeout()) {
            return Admit::Refuse(Refusal::NoQuorum);
        }
        if self.node.handing(g) {
            return Admit::Confirm;
        }
        // Everything the earlier leaders committed is applied once an entry of this
        // leadership is (its first, blank entry commits them all).
        let ready = m
            .last_applied
            .is_some_and(|l| l.leader_id == m.vote.leader_id);
        let lease = Duration::from_millis(self.node.lease_ms);
        if ready && age.is_some_and(|a| a < lease) {
            Admit::Now(m.current_term)
        } else {
            Admit::Confirm
        }
    }

    fn confirm(&self, g: GroupId) -> LocalBoxFuture<'static, Result<(), Refusal>> {
        let raft = self.raft(g);
        let node = self.node.clone();
        Box::pin(async move {
            let Some(raft) = raft else {
                return Err(Refusal::NoLeader);
            };
            // A hand-off holds the group's commands until it is over (see `admin`).
            let deadline = Instant::now() + Duration::from_millis(2 * node.timeout_ms);
            while node.handing(g) && Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            let confirmed = glommio::timer::timeout(replicated::WRITE_TIMEOUT, async {
                Ok(raft.ensure_linearizable(ReadPolicy::ReadIndex).await)
            })
            .await;
            match confirmed {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(match e.forward_to_leader() {
                    Some(f) => f
                        .leader_id
                        .filter(|&l| l != node.id)
                        .map_or(Refusal::NoLeader, Refusal::Moved),
                    None => Refusal::NoLeader,
                }),
                Err(_) => Err(Refusal::NoLeader),
            }
        })
    }

    fn propose(&self, g: GroupId, pid: Pid, payload: Vec<u8>) {
        self.proposals.borrow_mut().push_back((g, pid, payload));
        self.run_proposals();
    }
}

impl Groups for Host {
    fn raft(&self, g: GroupId) -> Option<Raft> {
        Host::raft(self, g)
    }

    fn node(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    fn admin(&self, payload: Bytes) -> LocalBoxFuture<'static, Result<Vec<u8>, String>> {
        match self.me.upgrade() {
            Some(me) => super::admin::serve(me, payload),
            None => Box::pin(async { Err("this node is stopping".to_string()) }),
        }
    }
}
