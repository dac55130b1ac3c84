//! This node's part of the cluster: one openraft `Raft` per slot group it replicates, on a
//! tokio runtime beside the glommio cores, the bus they talk over, and the leader table the
//! cores read (lock-free) to route and redirect commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
    /// Bumped by each election hold, so only the latest one lifts it.
    hold_generation: AtomicU64,
    /// Leader lease for reads (ms); see [`ClusterNode::lease_holds`].
    lease_ms: u64,
}

/// How long a node that was away waits before it may stand for election: the longest
/// election timeout (a leader's heartbeats reach it well within that), and at least 1.5 s
/// (peers redial a restarted node with up to 1 s backoff).
fn election_hold(timeout_ms: u64) -> Duration {
    Duration::from_millis((2 * timeout_ms).max(1500))
}

struct Handler {
    rafts: Vec<Option<Raft>>,
    started: std::time::Instant,
    /// How long after start this node abstains from voting.
    abstain: Duration,
}

impl BusHandler for Handler {
    fn raft(&self, group: GroupId) -> Option<Raft> {
        self.rafts.get(group as usize).cloned().flatten()
    }

    /// A follower that acknowledged a leader promises not to vote for another one for the
    /// longest election timeout (openraft's leader lease, which our read leases rely on).
    /// A restarted node has forgotten that promise, so it abstains for that long.
    fn votes_allowed(&self) -> bool {
        self.started.elapsed() >= self.abstain
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
        let raft_config = openraft::Config {
            cluster_name: "tallykv".to_string(),
            heartbeat_interval: (timeout / 10).max(20),
            election_timeout_min: timeout,
            election_timeout_max: timeout * 2,
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
        handle.spawn(super::bus::serve(
            listener,
            Arc::new(Handler {
                rafts: rafts.clone(),
                started: std::time::Instant::now(),
                abstain: Duration::from_millis(2 * timeout),
            }),
        ));
        let node = Arc::new(ClusterNode {
            id,
            leaders: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            terms: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            layout,
            rafts,
            handle,
            hold_generation: AtomicU64::new(0),
            lease_ms: timeout / 2,
        });
        for g in 0..groups {
            node.spawn_watcher(g as GroupId);
            node.spawn_bootstrap(g as GroupId, timeout);
        }
        node.hold_elections(election_hold(timeout));
        node.spawn_pause_watch(timeout);
        Ok(node)
    }

    /// Keeps this node from standing for election for `hold`. openraft 0.9 has no pre-vote:
    /// a node that was away (restarted, paused, starved of CPU) and finds its election timer
    /// expired would stand at once with a higher term and depose healthy leaders as soon as
    /// they see that term. Holding back for a while first lets it hear the current leaders'
    /// heartbeats, which resets its timer; if there is no leader, it stands after the hold.
    fn hold_elections(self: &Arc<Self>, hold: Duration) {
        let generation = self.hold_generation.fetch_add(1, Relaxed) + 1;
        for raft in self.rafts.iter().flatten() {
            raft.runtime_config().elect(false);
        }
        let node = self.clone();
        self.handle.spawn(async move {
            tokio::time::sleep(hold).await;
            // A later hold extends this one.
            if node.hold_generation.load(Relaxed) == generation {
                for raft in node.rafts.iter().flatten() {
                    raft.runtime_config().elect(true);
                }
            }
        });
    }

    /// Notices that this process did not run for a while (SIGSTOP, a stalled VM) and holds
    /// elections, from a plain thread so it wakes as soon as the process runs again, before
    /// Raft's own timers are handled.
    fn spawn_pause_watch(self: &Arc<Self>, timeout_ms: u64) {
        let node = Arc::downgrade(self);
        let threshold = Duration::from_millis((timeout_ms / 2).max(50));
        let spawned = std::thread::Builder::new()
            .name("tallykv-pausewatch".into())
            .spawn(move || {
                let mut last = std::time::Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                    let Some(node) = node.upgrade() else { return };
                    let gap = last.elapsed();
                    last = std::time::Instant::now();
                    if gap > threshold {
                        tracing::warn!(
                            "this node did not run for {} ms: holding elections until it hears \
                             from the current leaders",
                            gap.as_millis()
                        );
                        node.hold_elections(election_hold(timeout_ms));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the pause watch: {e}");
        }
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
    /// one. The lease is half of that, which stays safe as long as no node's clock runs
    /// twice as fast as another's (the drift bound). It also needs this term's first entry
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
