//! This node's view of the cluster, shared by every core: who it is, the cluster map, who
//! leads each slot group, and a few per-group facts the cores hosting the groups publish.
//! The dispatcher of any core reads it (lock-free, except the map) to route and redirect
//! commands; the Raft groups themselves live on their host cores (`host`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::snapshot::SnapshotFiles;
use super::topology::{Layout, group_of};
use super::types::{GroupId, NodeId, NodeInfo};
use crate::config::ClusterConfig;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How logs name a group.
pub fn group_name(g: GroupId) -> String {
    if g == super::meta::META {
        "meta group".to_string()
    } else {
        format!("slot group {g}")
    }
}

/// Per slot group, what its host core last published.
struct GroupFacts {
    leader: AtomicU64,
    term: AtomicU64,
    /// This node replicates the group (its Raft is open on the host core).
    member: AtomicBool,
    /// This node leads it but no quorum acknowledged it for a node timeout.
    quorum_lost: AtomicBool,
    /// A leadership hand-off runs: its commands wait on the host core.
    handing: AtomicBool,
    /// The last log index this node applied, and (while it leads) each follower's matched
    /// index: CLUSTER SHARDS' replication-offset.
    offsets: Mutex<Vec<(NodeId, u64)>>,
    /// The last log index this node applied, as its state machine applies it (the offsets
    /// above are refreshed per tick).
    applied: AtomicU64,
}

pub struct ClusterNode {
    pub id: NodeId,
    groups: usize,
    map: RwLock<Arc<Layout>>,
    facts: Box<[GroupFacts]>,
    /// The meta group's leader as last seen (0: none).
    meta_leader: AtomicU64,
    /// INFO cluster's per-group lines, as the host cores last wrote them.
    lines: Mutex<Vec<String>>,
    pub timeout_ms: u64,
    /// Leader lease for reads (ms): a quarter of the node timeout, half the voters lease
    /// (see `Host::raft_config`).
    pub lease_ms: u64,
    /// `cluster-leader-balance-delay` (zero: leaders are never handed over).
    pub balance_delay: Duration,
    pub snapshot_after: u64,
    pub files: Arc<SnapshotFiles>,
    /// When this node last became leader of each group it leads.
    pub(super) led_since: Mutex<HashMap<GroupId, Instant>>,
    /// Since when the leaders have been unevenly spread (the meta leader's balancer).
    pub(super) imbalanced_since: Mutex<Option<Instant>>,
    /// This node's asks to the leaders of its groups to evict (see `cluster::evict`).
    pub(super) evict_round: Mutex<super::evict::Round>,
    /// Until when this node refuses to vote: see [`ClusterNode::votes_allowed`].
    abstain_until: Instant,
}

impl ClusterNode {
    pub fn new(
        id: NodeId,
        map: Layout,
        config: &ClusterConfig,
        files: Arc<SnapshotFiles>,
    ) -> ClusterNode {
        let groups = map.group_count();
        ClusterNode {
            id,
            groups,
            map: RwLock::new(Arc::new(map)),
            facts: (0..groups)
                .map(|_| GroupFacts {
                    leader: AtomicU64::new(0),
                    term: AtomicU64::new(0),
                    member: AtomicBool::new(false),
                    quorum_lost: AtomicBool::new(false),
                    handing: AtomicBool::new(false),
                    offsets: Mutex::new(Vec::new()),
                    applied: AtomicU64::new(0),
                })
                .collect(),
            meta_leader: AtomicU64::new(0),
            lines: Mutex::new(vec![String::new(); groups]),
            timeout_ms: config.node_timeout_ms,
            lease_ms: config.node_timeout_ms / 4,
            balance_delay: Duration::from_millis(config.leader_balance_delay_ms),
            snapshot_after: config.snapshot_after,
            files,
            led_since: Mutex::new(HashMap::new()),
            imbalanced_since: Mutex::new(None),
            evict_round: Mutex::new(Default::default()),
            abstain_until: Instant::now() + Duration::from_millis(2 * config.node_timeout_ms),
        }
    }

    /// Whether vote requests are answered now. A follower that acknowledged a leader promises
    /// not to vote for another one for half the node timeout (openraft's leader lease, which
    /// the read leases rely on); a restarted node — or one whose data dir was lost — has
    /// forgotten that promise (and maybe its vote), so it abstains for twice the node timeout
    /// after it starts: by then any live leader has reached it.
    pub fn votes_allowed(&self) -> bool {
        Instant::now() >= self.abstain_until
    }

    pub fn group_count(&self) -> usize {
        self.groups
    }

    #[inline]
    pub fn group_of(&self, slot: usize) -> GroupId {
        group_of(slot, self.groups)
    }

    /// The current cluster map.
    pub fn layout(&self) -> Arc<Layout> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_layout(&self, map: Arc<Layout>) {
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    /// The group's leader as last seen (None during an election).
    #[inline]
    pub fn leader(&self, g: GroupId) -> Option<NodeId> {
        match self.facts.get(g as usize)?.leader.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub fn term(&self, g: GroupId) -> u64 {
        self.facts
            .get(g as usize)
            .map_or(0, |f| f.term.load(Relaxed))
    }

    /// Records who leads group `g` (its host core, or a poll of its members when this node
    /// does not replicate it).
    pub(super) fn note_leader(&self, g: GroupId, leader: Option<NodeId>, term: u64) {
        if let Some(f) = self.facts.get(g as usize) {
            let before = f.leader.swap(leader.unwrap_or(0), Relaxed);
            f.term.store(term, Relaxed);
            if leader == Some(self.id) && before != self.id {
                lock(&self.led_since).insert(g, Instant::now());
            }
        }
    }

    pub(super) fn note_meta_leader(&self, leader: Option<NodeId>) {
        self.meta_leader.store(leader.unwrap_or(0), Relaxed);
    }

    pub fn meta_leader(&self) -> Option<NodeId> {
        match self.meta_leader.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub(super) fn set_member(&self, g: GroupId, on: bool) {
        if let Some(f) = self.facts.get(g as usize) {
            f.member.store(on, Relaxed);
            if !on {
                f.leader.store(0, Relaxed);
                f.quorum_lost.store(false, Relaxed);
            }
        }
    }

    pub fn is_member(&self, g: GroupId) -> bool {
        self.facts
            .get(g as usize)
            .is_some_and(|f| f.member.load(Relaxed))
    }

    pub(super) fn set_quorum_lost(&self, g: GroupId, lost: bool) {
        if let Some(f) = self.facts.get(g as usize) {
            f.quorum_lost.store(lost, Relaxed);
        }
    }

    /// Whether this node leads group `g` without a quorum's acknowledgement for a node
    /// timeout (cut off from its followers: its commands are refused, CLUSTER INFO says
    /// fail).
    pub fn quorum_lost_in(&self, g: GroupId) -> bool {
        self.facts
            .get(g as usize)
            .is_some_and(|f| f.quorum_lost.load(Relaxed))
    }

    pub(super) fn set_handing(&self, g: GroupId, on: bool) -> bool {
        self.facts
            .get(g as usize)
            .is_some_and(|f| f.handing.swap(on, Relaxed) != on)
    }

    pub fn handing(&self, g: GroupId) -> bool {
        self.facts
            .get(g as usize)
            .is_some_and(|f| f.handing.load(Relaxed))
    }

    /// Whether this node's copy of group `g` is being replaced by a snapshot (partial until
    /// the install finishes): not a state READONLY reads may see.
    pub fn installing(&self, g: GroupId) -> bool {
        self.files.is_staged(g)
    }

    /// Whether this node serves `slot` as its primary: it leads the slot's group.
    #[inline]
    pub fn serves(&self, slot: usize) -> bool {
        self.leader(self.group_of(slot)) == Some(self.id)
    }

    pub fn node(&self, id: NodeId) -> Option<NodeInfo> {
        self.layout().nodes.get(&id).cloned()
    }

    pub fn me(&self) -> NodeInfo {
        self.node(self.id).unwrap_or_default()
    }

    /// The node with this 40-hex name (CLUSTER FORGET's argument).
    pub fn node_id_by_name(&self, name: &str) -> Option<NodeId> {
        self.layout()
            .nodes
            .iter()
            .find(|(_, n)| n.name.eq_ignore_ascii_case(name))
            .map(|(&id, _)| id)
    }

    /// How many slot groups node `n` leads, as this node last saw.
    pub(super) fn led_count(&self, n: NodeId) -> usize {
        (0..self.groups as GroupId)
            .filter(|&g| self.leader(g) == Some(n))
            .count()
    }

    /// The slots of the groups this node leads now, as ranges.
    pub fn led_slots(&self) -> Vec<std::ops::Range<usize>> {
        self.layout()
            .groups
            .iter()
            .enumerate()
            .filter(|(g, _)| self.leader(*g as GroupId) == Some(self.id))
            .map(|(_, gl)| gl.slots.clone())
            .collect()
    }

    /// Group `g`'s state machine here applied through log index `index`.
    pub(super) fn set_applied(&self, g: GroupId, index: u64) {
        if let Some(f) = self.facts.get(g as usize) {
            f.applied.store(index, Relaxed);
        }
    }

    /// The last log index of group `g` this node applied (0: none, or not a member).
    pub fn applied(&self, g: GroupId) -> u64 {
        self.facts
            .get(g as usize)
            .map_or(0, |f| f.applied.load(Relaxed))
    }

    pub(super) fn set_offsets(&self, g: GroupId, offsets: Vec<(NodeId, u64)>) {
        if let Some(f) = self.facts.get(g as usize) {
            *lock(&f.offsets) = offsets;
        }
    }

    /// How far node `id` has group `g`'s log, as far as this node knows (its own applied
    /// index; a follower's matched index while this node leads; else 0).
    pub fn replication_offset(&self, g: GroupId, id: NodeId) -> u64 {
        self.facts.get(g as usize).map_or(0, |f| {
            lock(&f.offsets)
                .iter()
                .find(|(n, _)| *n == id)
                .map_or(0, |(_, o)| *o)
        })
    }

    pub(super) fn set_group_line(&self, g: GroupId, line: String) {
        if let Some(l) = lock(&self.lines).get_mut(g as usize) {
            *l = line;
        }
    }

    /// INFO cluster's per-group lines: slots, role, term, leader, log and apply positions,
    /// and (on the leader) each follower's lag in entries.
    pub fn group_lines(&self) -> Vec<String> {
        let map = self.layout();
        let lines = lock(&self.lines);
        map.groups
            .iter()
            .enumerate()
            .map(|(g, gl)| {
                let slots = format!("{}-{}", gl.slots.start, gl.slots.end - 1);
                match lines.get(g) {
                    Some(l) if !l.is_empty() && self.is_member(g as GroupId) => {
                        format!("group{g}:slots={slots},{l}")
                    }
                    _ => {
                        let leader = self
                            .leader(g as GroupId)
                            .and_then(|l| map.nodes.get(&l))
                            .map_or("-".to_string(), |n| n.name.clone());
                        format!(
                            "group{g}:slots={slots},role=none,term={},leader={leader}",
                            self.term(g as GroupId)
                        )
                    }
                }
            })
            .collect()
    }
}
