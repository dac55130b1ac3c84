//! This node's part of the cluster: one openraft `Raft` per slot group it replicates, on a
//! tokio runtime beside the glommio cores, the bus they talk over, and the leader table the
//! cores read (lock-free) to route and redirect commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};

use super::bus::{BusClient, BusHandler, Network};
use super::sm::{Cores, GroupSm};
use super::snapshot::SnapshotFiles;
use super::topology::{Layout, group_of};
use super::types::{GroupId, NodeId, NodeInfo, Raft, Request, Response};
use crate::config::ClusterConfig;
use crate::storage::Storage;

/// How long a proposer waits for its entry to commit before answering that the outcome is
/// unknown (a leader cut off from its followers neither commits nor learns it lost).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a group did not take a request here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another node leads the group: redirect there.
    Moved(NodeId),
    /// No leader is known (an election is running, or no quorum).
    NoLeader,
    /// The entry may or may not commit later (timeout, or the leader changed meanwhile
    /// without truncating it): the client must not assume either.
    Uncertain,
    /// Raft stopped on this node (shutting down, or a fatal storage error).
    Down,
}

impl Refusal {
    /// A redirect to `leader`, or NoLeader when none is known.
    fn to(leader: Option<NodeId>) -> Refusal {
        leader.map_or(Refusal::NoLeader, Refusal::Moved)
    }
}

pub struct ClusterNode {
    pub id: NodeId,
    pub layout: Layout,
    /// Current leader of each group as this node last saw it (0 = none known).
    leaders: Box<[AtomicU64]>,
    terms: Box<[AtomicU64]>,
    /// Per group, this node's Raft when it is a member.
    rafts: Vec<Option<Raft>>,
    handle: tokio::runtime::Handle,
    /// Leader lease for reads (ms); see [`ClusterNode::lease_holds`].
    lease_ms: u64,
}

/// How long a node that was away waits before it may stand for election: twice the
/// timeout (a leader's heartbeats reach it well within that), and at least 1.5 s (peers
/// redial a restarted node with up to 1 s backoff).
fn election_hold(timeout_ms: u64) -> Duration {
    Duration::from_millis((2 * timeout_ms).max(1500))
}

/// When this node last accepted each group's leader (its heartbeats, entries or snapshot),
/// written by the bus handler and read by the election driver.
struct Heard {
    epoch: Instant,
    ms: Box<[AtomicU64]>,
}

impl Heard {
    fn new(groups: usize) -> Heard {
        Heard {
            epoch: Instant::now(),
            ms: (0..groups).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn touch(&self, g: GroupId) {
        if let Some(at) = self.ms.get(g as usize) {
            at.fetch_max(self.epoch.elapsed().as_millis() as u64, Relaxed);
        }
    }

    fn at(&self, g: GroupId) -> Instant {
        self.epoch + Duration::from_millis(self.ms[g as usize].load(Relaxed))
    }
}

struct Handler {
    rafts: Vec<Option<Raft>>,
    started: Instant,
    /// How long after start this node abstains from voting.
    abstain: Duration,
    heard: Arc<Heard>,
}

impl BusHandler for Handler {
    fn raft(&self, group: GroupId) -> Option<Raft> {
        self.rafts.get(group as usize).cloned().flatten()
    }

    /// A follower that acknowledged a leader promises not to vote for another one for the
    /// election timeout (openraft's leader lease, which our read leases rely on). A
    /// restarted node has forgotten that promise, so it abstains for longer than that.
    fn votes_allowed(&self) -> bool {
        self.started.elapsed() >= self.abstain
    }

    fn leader_heard(&self, group: GroupId) {
        self.heard.touch(group);
    }

    fn call(
        &self,
        _payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async { Err("no admin calls are defined yet".to_string()) })
    }
}

impl ClusterNode {
    /// Starts Raft for every group this node replicates and serves the bus on `bus`.
    /// Blocks until the groups are open (their logs read); elections run on afterwards.
    pub fn start(
        config: &ClusterConfig,
        id: NodeId,
        layout: Layout,
        bus: std::net::TcpListener,
        storage: Arc<Storage>,
        cores: Arc<dyn Cores>,
    ) -> Result<Arc<ClusterNode>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tallykv-raft")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Raft runtime: {e}"))?;
        // The runtime lives as long as the process.
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
        let handle = runtime.handle().clone();
        let timeout = config.node_timeout_ms;
        let heartbeat = (timeout / 10).max(20);
        let raft_config = openraft::Config {
            cluster_name: "tallykv".to_string(),
            heartbeat_interval: heartbeat,
            // openraft makes a voter refuse other candidates for `election_timeout_max`
            // after hearing from its leader (its "leader lease"): that is the node timeout.
            // Elections themselves are started by this module's driver, not openraft's
            // timer (see `spawn_elections`), so the minimum only has to be valid.
            election_timeout_min: (timeout / 2).max(heartbeat + 1),
            election_timeout_max: timeout,
            enable_elect: false,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after),
            // Keep a tenth of a snapshot interval of log behind each snapshot, so a replica
            // just briefly behind catches up from the log rather than a whole snapshot.
            max_in_snapshot_log_to_keep: (config.snapshot_after / 10).min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("Raft settings: {e}"))?;
        let raft_config = Arc::new(raft_config);
        let local_ip = bus
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let client = Arc::new(BusClient::new(local_ip));
        let groups = layout.group_count();
        let files = Arc::new(SnapshotFiles::new(storage.dir()));
        let rafts = handle.block_on(async {
            let mut rafts = Vec::with_capacity(groups);
            for (g, gl) in layout.groups.iter().enumerate() {
                if !gl.members.contains(&id) {
                    rafts.push(None);
                    continue;
                }
                let g = g as GroupId;
                let sm = GroupSm::open(
                    g,
                    gl.slots.clone(),
                    cores.clone(),
                    storage.clone(),
                    files.clone(),
                )?;
                let log = storage.raft_log(g);
                let net = Network::new(client.clone(), g);
                let raft = Raft::new(id, raft_config.clone(), net, log, sm)
                    .await
                    .map_err(|e| format!("slot group {g}: cannot start Raft: {e}"))?;
                rafts.push(Some(raft));
            }
            Ok::<_, String>(rafts)
        })?;
        bus.set_nonblocking(true)
            .map_err(|e| format!("cluster bus: {e}"))?;
        let listener = {
            let _guard = handle.enter();
            tokio::net::TcpListener::from_std(bus).map_err(|e| format!("cluster bus: {e}"))?
        };
        let heard = Arc::new(Heard::new(groups));
        handle.spawn(super::bus::serve(
            listener,
            Arc::new(Handler {
                rafts: rafts.clone(),
                started: Instant::now(),
                abstain: Duration::from_millis(2 * timeout),
                heard: heard.clone(),
            }),
        ));
        let node = Arc::new(ClusterNode {
            id,
            leaders: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            terms: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            layout,
            rafts,
            handle,
            lease_ms: timeout / 2,
        });
        for g in 0..groups {
            node.spawn_watcher(g as GroupId);
            node.spawn_bootstrap(g as GroupId, timeout);
        }
        node.spawn_elections(heard, timeout);
        Ok(node)
    }

    /// Starts elections for the groups this node votes in, in place of openraft's own
    /// timer (disabled with `enable_elect: false`). openraft 0.9 has no pre-vote: a node
    /// that was away (paused, starved of CPU, restarted) finds its timer long expired and
    /// would stand at once with a higher term, and healthy leaders step down as soon as they
    /// see that term. Here a single loop decides, and before deciding it checks that it
    /// itself ran on time: after a gap it holds every election until the current leaders
    /// have had time to be heard. A group's election is due when its leader has been silent
    /// for the node timeout (voters refuse other candidates until then anyway) plus a random
    /// quarter of it (so the followers do not split the vote); a failed attempt is retried
    /// after half the timeout plus the same jitter.
    fn spawn_elections(self: &Arc<Self>, heard: Arc<Heard>, timeout_ms: u64) {
        let node = self.clone();
        let tick = Duration::from_millis((timeout_ms / 10).max(20));
        let late = Duration::from_millis((timeout_ms / 2).max(100));
        let timeout = Duration::from_millis(timeout_ms);
        let jitter = move || Duration::from_millis(fastrand::u64(0..=timeout_ms / 4));
        self.handle.spawn(async move {
            let groups = node.rafts.len();
            let mut hold_until = Instant::now() + election_hold(timeout_ms);
            let mut attempted: Vec<Option<Instant>> = vec![None; groups];
            let mut jitters: Vec<Duration> = (0..groups).map(|_| jitter()).collect();
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let now = Instant::now();
                let gap = now - std::mem::replace(&mut last, now);
                if gap > late {
                    tracing::warn!(
                        "this node did not run for {} ms: holding elections until it hears \
                         from the current leaders",
                        gap.as_millis()
                    );
                    hold_until = now + election_hold(timeout_ms);
                }
                for (g, raft) in node.rafts.iter().enumerate() {
                    let Some(raft) = raft else { continue };
                    let standing = {
                        let m = raft.metrics();
                        let m = m.borrow();
                        m.state != ServerState::Leader
                            && m.membership_config
                                .membership()
                                .voter_ids()
                                .any(|v| v == node.id)
                    };
                    if !standing {
                        continue;
                    }
                    let heard_at = heard.at(g as GroupId);
                    let due = match attempted[g] {
                        Some(at) if at > heard_at => at + timeout / 2,
                        _ => heard_at + timeout,
                    } + jitters[g];
                    if now < due.max(hold_until) {
                        continue;
                    }
                    attempted[g] = Some(now);
                    jitters[g] = jitter();
                    tracing::debug!("slot group {g}: no leader heard from, standing for election");
                    if let Err(e) = raft.trigger().elect().await {
                        tracing::debug!("slot group {g}: cannot stand: {e}");
                    }
                }
            }
        });
    }

    /// Keeps the leader table current and logs elections.
    fn spawn_watcher(self: &Arc<Self>, g: GroupId) {
        let Some(raft) = self.rafts[g as usize].clone() else {
            return;
        };
        let node = self.clone();
        self.handle.spawn(async move {
            let mut rx = raft.metrics();
            loop {
                let (leader, term, state) = {
                    let m = rx.borrow_and_update();
                    (m.current_leader.unwrap_or(0), m.current_term, m.state)
                };
                let before = node.leaders[g as usize].swap(leader, Relaxed);
                node.terms[g as usize].store(term, Relaxed);
                if before != leader {
                    match (leader, state) {
                        (0, _) => tracing::warn!("slot group {g}: no leader (term {term})"),
                        (_, ServerState::Leader) => {
                            tracing::info!("slot group {g}: this node is the leader (term {term})")
                        }
                        (l, _) => {
                            tracing::info!("slot group {g}: leader is node {l} (term {term})")
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    node.leaders[g as usize].store(0, Relaxed);
                    return;
                }
            }
        });
    }

    /// Forms the group on first start: if no leader has made itself heard after two election
    /// timeouts, the group's first member proposes the computed membership; the others do
    /// so after four (the first member may be down). Proposing the same membership twice is
    /// harmless: a node that already has a log refuses. Waiting first keeps a node whose data
    /// dir was emptied from forming a rival group: it hears the leader and catches up.
    fn spawn_bootstrap(self: &Arc<Self>, g: GroupId, timeout_ms: u64) {
        let Some(raft) = self.rafts[g as usize].clone() else {
            return;
        };
        let gl = &self.layout.groups[g as usize];
        let members: BTreeMap<NodeId, NodeInfo> = gl
            .members
            .iter()
            .map(|m| (*m, self.layout.nodes[m].clone()))
            .collect();
        let first = gl.members[0] == self.id;
        let node = self.clone();
        self.handle.spawn(async move {
            let wait = if first { 2 } else { 4 };
            tokio::time::sleep(Duration::from_millis(timeout_ms * wait)).await;
            if node.leader(g).is_some() {
                return;
            }
            match raft.is_initialized().await {
                Ok(false) => match raft.initialize(members).await {
                    Ok(()) => tracing::info!("slot group {g}: formed"),
                    Err(e) => tracing::debug!("slot group {g}: not formed here: {e}"),
                },
                Ok(true) => {}
                Err(e) => tracing::error!("slot group {g}: {e}"),
            }
        });
    }

    pub fn group_count(&self) -> usize {
        self.layout.group_count()
    }

    #[inline]
    pub fn group_of(&self, slot: usize) -> GroupId {
        group_of(slot, self.layout.group_count())
    }

    /// The group's leader as last seen (None during an election).
    #[inline]
    pub fn leader(&self, g: GroupId) -> Option<NodeId> {
        match self.leaders[g as usize].load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub fn term(&self, g: GroupId) -> u64 {
        self.terms[g as usize].load(Relaxed)
    }

    pub fn is_member(&self, g: GroupId) -> bool {
        self.rafts[g as usize].is_some()
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.layout.nodes.get(&id)
    }

    pub fn me(&self) -> &NodeInfo {
        &self.layout.nodes[&self.id]
    }

    /// Proposes `req` to group `g` and resolves with the replies once it is committed and
    /// applied here (callable from any thread; the work runs on the Raft runtime).
    pub fn propose(
        &self,
        g: GroupId,
        req: Request,
    ) -> oneshot::Receiver<Result<Response, Refusal>> {
        let (tx, rx) = oneshot::channel();
        let Some(raft) = self.rafts[g as usize].clone() else {
            let _ = tx.send(Err(Refusal::to(self.leader(g))));
            return rx;
        };
        self.handle.spawn(async move {
            let r = match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(req)).await {
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    // Refused before it was appended, or truncated from the log: not applied.
                    Err(Refusal::to(f.leader_id))
                }
                Ok(Err(RaftError::APIError(e))) => {
                    tracing::warn!("slot group {g}: write refused: {e}");
                    Err(Refusal::NoLeader)
                }
                Ok(Err(RaftError::Fatal(e))) => {
                    tracing::error!("slot group {g}: Raft stopped: {e}");
                    Err(Refusal::Down)
                }
                Err(_) => Err(Refusal::Uncertain),
            };
            let _ = tx.send(r);
        });
        rx
    }

    /// Resolves once this node is confirmed leader of `g` by a quorum and has applied every
    /// entry committed before the call (Raft's read index): a read run after it is
    /// linearizable.
    pub fn read_barrier(&self, g: GroupId) -> oneshot::Receiver<Result<(), Refusal>> {
        let (tx, rx) = oneshot::channel();
        let Some(raft) = self.rafts[g as usize].clone() else {
            let _ = tx.send(Err(Refusal::to(self.leader(g))));
            return rx;
        };
        if self.lease_holds(&raft) {
            let _ = tx.send(Ok(()));
            return rx;
        }
        self.handle.spawn(async move {
            let r = match tokio::time::timeout(WRITE_TIMEOUT, raft.ensure_linearizable()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(RaftError::APIError(e))) => {
                    let leader = match e {
                        openraft::error::CheckIsLeaderError::ForwardToLeader(f) => f.leader_id,
                        _ => None,
                    };
                    Err(Refusal::to(leader))
                }
                Ok(Err(RaftError::Fatal(_))) => Err(Refusal::Down),
                Err(_) => Err(Refusal::NoLeader),
            };
            let _ = tx.send(r);
        });
        rx
    }

    /// INFO cluster's per-group lines: slots, role, term, leader, log and apply positions,
    /// and (on the leader) each follower's lag in entries.
    pub fn group_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (g, gl) in self.layout.groups.iter().enumerate() {
            let slots = format!("{}-{}", gl.slots.start, gl.slots.end - 1);
            let Some(raft) = &self.rafts[g] else {
                lines.push(format!("group{g}:slots={slots},role=none"));
                continue;
            };
            let m = raft.metrics().borrow().clone();
            let role = match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            };
            let leader = m
                .current_leader
                .and_then(|l| self.node(l))
                .map_or("-".to_string(), |n| n.name.clone());
            let last = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map_or(0, |l| l.index);
            let mut line = format!(
                "group{g}:slots={slots},role={role},term={},leader={leader},last_log={last},\
                 applied={applied}",
                m.current_term
            );
            if let Some(repl) = &m.replication {
                let lags: Vec<String> = repl
                    .iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(id, matched)| {
                        let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                        format!("{id}:{lag}")
                    })
                    .collect();
                line.push_str(&format!(",lag={}", lags.join("/")));
            }
            lines.push(line);
        }
        lines
    }

    /// Whether this node may serve a linearizable read of the group from its own state
    /// without asking a quorum (a leader lease). A follower refuses to vote for anyone while
    /// it has heard from its leader within the election timeout (`cluster-node-timeout`),
    /// so no other leader can exist until that long after the last quorum acknowledged this
    /// one (openraft's `election_timeout_max`). The lease is half of that, which stays safe
    /// as long as no node's clock runs twice as fast as another's (the drift bound). It also needs this term's first entry
    /// applied, so every write acknowledged by an earlier leader is in the state read.
    fn lease_holds(&self, raft: &Raft) -> bool {
        let m = raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.millis_since_quorum_ack
                .is_some_and(|ms| ms < self.lease_ms)
            && m.last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// The slots of the groups this node leads now, as ranges.
    pub fn led_slots(&self) -> Vec<std::ops::Range<usize>> {
        self.layout
            .groups
            .iter()
            .enumerate()
            .filter(|(g, _)| self.leader(*g as GroupId) == Some(self.id))
            .map(|(_, gl)| gl.slots.clone())
            .collect()
    }

    /// Stops every group this node replicates (SHUTDOWN); the others elect new leaders when
    /// their election timers fire.
    pub fn shutdown(&self, timeout: Duration) {
        let rafts: Vec<Raft> = self.rafts.iter().flatten().cloned().collect();
        let _ = self.handle.block_on(async move {
            tokio::time::timeout(timeout, async {
                for r in rafts {
                    let _ = r.shutdown().await;
                }
            })
            .await
        });
    }
}
