//! This node's part of the cluster: one openraft `Raft` per slot group it replicates, on a
//! tokio runtime beside the glommio cores, the bus they talk over, and the leader table the
//! cores read (lock-free) to route and redirect commands.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use super::bus::{BusClient, BusHandler, Network};
use super::meta::{self, META, MetaSm};
use super::sm::{Cores, GroupSm};
use super::snapshot::SnapshotFiles;
use super::topology::{Layout, group_of};
use super::types::{GroupId, LogId, NodeId, NodeInfo, Raft, Request, Response};
use crate::config::ClusterConfig;
use crate::storage::Storage;
use openraft::storage::RaftLogStorage;

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
    /// This node leads the group but no quorum has acknowledged it for a node timeout
    /// (cut off from its followers, which may have elected another leader meanwhile).
    NoQuorum,
    /// The entry may or may not commit later (timeout, or the leader changed meanwhile
    /// without truncating it): the client must not assume either.
    Uncertain,
    /// Raft stopped on this node (shutting down, or a fatal storage error).
    Down,
}

/// What `client_write` under the write timeout returns.
type Written = Result<
    Result<
        openraft::raft::ClientWriteResponse<super::types::TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
    >,
    tokio::time::error::Elapsed,
>;

/// What a finished (or timed out) `client_write` of group `g` means for its proposer.
fn written_outcome(g: GroupId, written: Written) -> Result<Response, Refusal> {
    match written {
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
    }
}

/// Whether `raft` leads its group without a quorum's acknowledgement for `timeout_ms` (see
/// [`ClusterNode::quorum_lost_in`]).
fn no_quorum(raft: &Raft, timeout_ms: u64) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Leader && m.millis_since_quorum_ack.is_some_and(|ms| ms > timeout_ms)
}

/// How logs name a group.
pub(super) fn group_name(g: GroupId) -> String {
    if g == META {
        "meta group".to_string()
    } else {
        format!("slot group {g}")
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Refusal {
    /// A redirect to `leader`, or NoLeader when none is known.
    fn to(leader: Option<NodeId>) -> Refusal {
        leader.map_or(Refusal::NoLeader, Refusal::Moved)
    }
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
    at: Mutex<HashMap<GroupId, Instant>>,
}

impl Heard {
    fn touch(&self, g: GroupId) {
        lock(&self.at).insert(g, Instant::now());
    }

    fn at(&self, g: GroupId) -> Instant {
        lock(&self.at).get(&g).copied().unwrap_or(self.epoch)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Admin calls between nodes, over the bus.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Call {
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
    /// To a caught-up follower: stand for election now (the leader is handing off).
    TakeLead { group: GroupId },
    /// Would the responder vote for a candidate whose last log id is `last_log`? (Pre-vote.)
    PreVote {
        group: GroupId,
        last_log: Option<LogId>,
    },
    /// To a group's leader: the sender is over maxmemory; evict about `bytes` of the
    /// group's keys (through its log, so every replica frees them).
    Evict { group: GroupId, bytes: u64 },
}

/// How a leader's cores are asked to evict about `bytes` of group `g`'s keys (its `slots`)
/// through the group's log; set by the server once the cores run.
pub type Evictor = Box<dyn Fn(GroupId, std::ops::Range<usize>, u64) + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct HelloReply {
    pub info: NodeInfo,
    pub id: Option<NodeId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct GroupReply {
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The committed membership (voters and learners), when the responder leads the group.
    pub members: Option<BTreeSet<NodeId>>,
}

/// Serves the bus for this node, before and after it has a cluster node (an unassigned
/// node answers Hello and Join only).
pub struct Handler {
    node: OnceLock<Arc<ClusterNode>>,
    started: Instant,
    /// How long after start this node abstains from voting.
    abstain: Duration,
    heard: Arc<Heard>,
    /// The announced address (name empty until assigned).
    me: NodeInfo,
    /// Set while an unassigned node waits for Join.
    joiner: Mutex<Option<oneshot::Sender<(NodeId, Layout)>>>,
}

impl BusHandler for Handler {
    fn raft(&self, group: GroupId) -> Option<Raft> {
        self.node.get()?.raft(group)
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

    fn call(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let call: Call = match bincode::deserialize(&payload) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(format!("undecodable call: {e}")) }),
        };
        let node = self.node.get().cloned();
        let reply: Result<Vec<u8>, String> = match (call, node) {
            (Call::Hello, node) => encode(&HelloReply {
                info: self.me.clone(),
                id: node.map(|n| n.id),
            }),
            (Call::Join { id, map }, None) => match lock(&self.joiner).take() {
                Some(tx) => {
                    let _ = tx.send((id, *map));
                    encode(&())
                }
                None => Err("this node is not waiting to join".to_string()),
            },
            (Call::Join { id, .. }, Some(node)) if node.id == id => encode(&()),
            (Call::Join { .. }, Some(node)) => Err(format!(
                "this node already belongs to a cluster as node {}",
                node.id
            )),
            (_, None) => Err("this node has not joined a cluster yet".to_string()),
            (Call::Group { group }, Some(node)) => encode(&node.group_view(group)),
            (Call::HandOff { group, to }, Some(node)) => {
                return Box::pin(async move { encode(&node.hand_off(group, to).await?) });
            }
            (Call::TakeLead { group }, Some(node)) => {
                return Box::pin(async move {
                    let raft = node.raft(group).ok_or("not a member")?;
                    tracing::info!("{}: taking the leadership over", group_name(group));
                    raft.trigger().elect().await.map_err(|e| e.to_string())?;
                    encode(&())
                });
            }
            (Call::Evict { group, bytes }, Some(node)) => {
                node.evict_led(group, bytes);
                encode(&())
            }
            (Call::PreVote { group, last_log }, Some(node)) => {
                let quiet =
                    self.heard.at(group).elapsed() >= Duration::from_millis(node.timeout_ms);
                return Box::pin(async move {
                    let Some(raft) = node.raft(group) else {
                        return encode(&false);
                    };
                    if !quiet || raft.metrics().borrow().state == ServerState::Leader {
                        return encode(&false);
                    }
                    let mine = node
                        .parts
                        .storage
                        .raft_log(group)
                        .get_log_state()
                        .await
                        .map_err(|e| e.to_string())?
                        .last_log_id;
                    encode(&(last_log >= mine))
                });
            }
            (
                Call::Meet {
                    host,
                    port,
                    bus_port,
                },
                Some(node),
            ) => {
                return Box::pin(async move {
                    let id = node.meet(host, port, bus_port).await?;
                    encode(&id)
                });
            }
            (Call::Forget { id }, Some(node)) => {
                return Box::pin(async move {
                    node.forget(id).await?;
                    encode(&())
                });
            }
        };
        Box::pin(async move { reply })
    }
}

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(v).map_err(|e| e.to_string())
}

/// The Raft runtime and bus of a node that may not have joined a cluster yet.
pub struct Startup {
    handle: tokio::runtime::Handle,
    handler: Arc<Handler>,
    client: Arc<BusClient>,
    joined: Mutex<Option<oneshot::Receiver<(NodeId, Layout)>>>,
}

impl Parts {
    /// Group `g`'s Raft settings: the shared ones, named after the group. openraft puts the
    /// name in the span of everything it logs (shown at loglevel debug), so its lines say
    /// which group they are about; the name never goes over the wire.
    fn config_for(&self, g: GroupId) -> Arc<openraft::Config> {
        Arc::new(openraft::Config {
            cluster_name: group_name(g),
            ..(*self.raft_config).clone()
        })
    }
}

impl Startup {
    /// Starts the Raft runtime and serves the bus on `bus`; `me` is what this node
    /// announces.
    pub fn new(
        bus: std::net::TcpListener,
        me: NodeInfo,
        timeout_ms: u64,
    ) -> Result<Startup, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tallykv-raft")
            .on_thread_start(crate::metrics::memory::bind_storage_arena)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Raft runtime: {e}"))?;
        // The runtime lives as long as the process.
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
        let handle = runtime.handle().clone();
        let local_ip = bus
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let client = Arc::new(BusClient::new(local_ip));
        bus.set_nonblocking(true)
            .map_err(|e| format!("cluster bus: {e}"))?;
        let listener = {
            let _guard = handle.enter();
            tokio::net::TcpListener::from_std(bus).map_err(|e| format!("cluster bus: {e}"))?
        };
        let (tx, rx) = oneshot::channel();
        let handler = Arc::new(Handler {
            node: OnceLock::new(),
            started: Instant::now(),
            abstain: Duration::from_millis(2 * timeout_ms),
            heard: Arc::new(Heard {
                epoch: Instant::now(),
                at: Mutex::new(HashMap::new()),
            }),
            me,
            joiner: Mutex::new(Some(tx)),
        });
        handle.spawn(super::bus::serve(listener, handler.clone()));
        Ok(Startup {
            handle,
            handler,
            client,
            joined: Mutex::new(Some(rx)),
        })
    }

    /// Blocks until another node's CLUSTER MEET makes this node a member: its id and the
    /// cluster map it starts from.
    pub fn wait_join(&self) -> Result<(NodeId, Layout), String> {
        let rx = lock(&self.joined).take().ok_or("already joined")?;
        self.handle
            .block_on(rx)
            .map_err(|_| "the bus stopped".to_string())
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// What starting a slot group's Raft on this node takes.
pub(super) struct Parts {
    /// The settings every group shares; see [`Parts::config_for`].
    raft_config: Arc<openraft::Config>,
    pub client: Arc<BusClient>,
    pub storage: Arc<Storage>,
    pub files: Arc<SnapshotFiles>,
    pub cores: Arc<dyn Cores>,
}

pub struct ClusterNode {
    pub id: NodeId,
    /// Slot groups (fixed when the cluster formed).
    groups: usize,
    /// The cluster map this node last applied.
    map: RwLock<Arc<Layout>>,
    /// Current leader of each group as this node last saw it (0 = none known).
    leaders: Box<[AtomicU64]>,
    terms: Box<[AtomicU64]>,
    /// Per group, this node's Raft when it replicates the group.
    rafts: RwLock<Vec<Option<Raft>>>,
    /// The meta group's Raft (every node has one).
    pub(super) meta: Raft,
    pub(super) handle: tokio::runtime::Handle,
    /// Leader lease for reads (ms); see [`ClusterNode::lease_holds`].
    lease_ms: u64,
    pub(super) timeout_ms: u64,
    /// `cluster-leader-balance-delay` (0: leaders are never handed over).
    pub(super) balance_delay: Duration,
    pub(super) parts: Parts,
    /// Groups whose membership this node is changing now (as their leader).
    pub(super) busy: Mutex<BTreeSet<GroupId>>,
    /// When this node last became leader of each group it leads.
    pub(super) led_since: Mutex<HashMap<GroupId, Instant>>,
    /// Since when the leaders have been unevenly spread (the meta leader's balancer).
    pub(super) imbalanced_since: Mutex<Option<Instant>>,
    /// Held while groups are opened or dropped here, so the two never interleave.
    pub(super) opening: tokio::sync::Mutex<()>,
    /// Groups whose leadership this node is handing over now (see [`HandOffs`]).
    pub(super) handing: Arc<HandOffs>,
    evictor: OnceLock<Evictor>,
    /// When this node last asked the leaders of its groups to evict (ms).
    evict_asked_ms: AtomicU64,
}

/// The groups whose leadership this node is handing to another voter. While a hand-off
/// runs, the group's new writes and reads wait here: the target's log must match the
/// leader's when it stands (a voter refuses a candidate whose log is behind, and a failed
/// hand-off costs an election round), and no lease read may overlap the change of leader.
pub(super) struct HandOffs {
    on: Box<[AtomicBool]>,
    ended: tokio::sync::Notify,
}

impl HandOffs {
    fn new(groups: usize) -> Self {
        HandOffs {
            on: (0..groups).map(|_| AtomicBool::new(false)).collect(),
            ended: tokio::sync::Notify::new(),
        }
    }

    #[inline]
    fn running(&self, g: GroupId) -> bool {
        self.on.get(g as usize).is_some_and(|f| f.load(Acquire))
    }

    /// Resolves once no hand-off of `g` runs.
    async fn wait(&self, g: GroupId) {
        loop {
            let ended = self.ended.notified();
            if !self.running(g) {
                return;
            }
            ended.await;
        }
    }

    /// Marks a hand-off of `g` as running until the returned guard drops.
    pub(super) fn begin(self: &Arc<Self>, g: GroupId) -> Option<HandOffGuard> {
        let flag = self.on.get(g as usize)?;
        (!flag.swap(true, AcqRel)).then(|| HandOffGuard {
            offs: self.clone(),
            g,
        })
    }
}

pub(super) struct HandOffGuard {
    offs: Arc<HandOffs>,
    g: GroupId,
}

impl Drop for HandOffGuard {
    fn drop(&mut self) {
        self.offs.on[self.g as usize].store(false, Release);
        self.offs.ended.notify_waiters();
    }
}

impl ClusterNode {
    /// Starts Raft for the meta group and every slot group this node replicates in `state`'s
    /// map. `bootstrap`: the map is the one computed from `cluster-peers` and this node may
    /// form the groups if nobody else has. Blocks until the groups are open (their logs
    /// read); elections run on afterwards.
    pub fn start(
        config: &ClusterConfig,
        id: NodeId,
        state: meta::Stored,
        startup: &Startup,
        storage: Arc<Storage>,
        cores: Arc<dyn Cores>,
        bootstrap: bool,
    ) -> Result<Arc<ClusterNode>, String> {
        let handle = startup.handle.clone();
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
            // The last chunk's reply waits for the install, which streams the whole snapshot
            // into the cores (seconds for a large group); openraft's 200 ms default had the
            // leader time out and send it all again.
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("Raft settings: {e}"))?;
        let parts = Parts {
            raft_config: Arc::new(raft_config),
            client: startup.client.clone(),
            files: Arc::new(SnapshotFiles::new(storage.dir())),
            storage,
            cores,
        };
        let map = Arc::new(state.map.clone());
        let groups = map.group_count();
        let (publish, maps) = tokio::sync::watch::channel(map.clone());
        let meta_raft = handle.block_on(async {
            let sm = MetaSm::new(parts.storage.clone(), parts.files.clone(), state, publish);
            Raft::new(
                id,
                parts.config_for(META),
                Network::new(parts.client.clone(), META),
                parts.storage.raft_log(META),
                sm,
            )
            .await
            .map_err(|e| format!("meta group: cannot start Raft: {e}"))
        })?;
        let node = Arc::new(ClusterNode {
            id,
            groups,
            map: RwLock::new(map.clone()),
            leaders: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            terms: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            rafts: RwLock::new(vec![None; groups]),
            meta: meta_raft,
            handle: handle.clone(),
            lease_ms: timeout / 2,
            timeout_ms: timeout,
            balance_delay: Duration::from_millis(config.leader_balance_delay_ms),
            parts,
            busy: Mutex::new(BTreeSet::new()),
            led_since: Mutex::new(HashMap::new()),
            imbalanced_since: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            handing: Arc::new(HandOffs::new(groups)),
            evictor: OnceLock::new(),
            evict_asked_ms: AtomicU64::new(0),
        });
        for g in 0..groups as GroupId {
            if map.groups[g as usize].members.contains(&id) {
                handle.block_on(node.open_group(g))?;
            }
        }
        if startup.handler.node.set(node.clone()).is_err() {
            return Err("the cluster node started twice".to_string());
        }
        node.spawn_watcher(META, node.meta.clone());
        if bootstrap {
            let voters = map.meta_voters();
            node.spawn_bootstrap(META, node.meta.clone(), voters.into_iter().collect());
            for (g, gl) in map.groups.iter().enumerate() {
                if let Some(raft) = node.raft(g as GroupId) {
                    node.spawn_bootstrap(g as GroupId, raft, gl.members.clone());
                }
            }
        }
        node.spawn_elections(startup.handler.heard.clone(), timeout);
        node.spawn_membership(maps);
        Ok(node)
    }

    /// Opens this node's Raft for slot group `g` (its log and applied state from storage)
    /// and starts watching its leader.
    pub(super) async fn open_group(self: &Arc<Self>, g: GroupId) -> Result<(), String> {
        if self.raft(g).is_some() {
            return Ok(());
        }
        let slots = self.layout().groups[g as usize].slots.clone();
        let p = &self.parts;
        let sm = GroupSm::open(
            g,
            slots,
            p.cores.clone(),
            p.storage.clone(),
            p.files.clone(),
        )?;
        let raft = Raft::new(
            self.id,
            p.config_for(g),
            Network::new(p.client.clone(), g),
            p.storage.raft_log(g),
            sm,
        )
        .await
        .map_err(|e| format!("slot group {g}: cannot start Raft: {e}"))?;
        write(&self.rafts)[g as usize] = Some(raft.clone());
        self.spawn_watcher(g, raft);
        Ok(())
    }

    /// Stops this node's Raft for slot group `g` (it no longer replicates it).
    pub(super) async fn close_group(&self, g: GroupId) {
        let raft = write(&self.rafts)[g as usize].take();
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        self.leaders[g as usize].store(0, Relaxed);
    }

    /// Runs `fut` on the Raft runtime.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.handle.spawn(fut);
    }

    /// The current cluster map.
    pub fn layout(&self) -> Arc<Layout> {
        read(&self.map).clone()
    }

    pub(super) fn set_layout(&self, map: Arc<Layout>) {
        *write(&self.map) = map;
    }

    /// This node's Raft of `group` (the meta group's too), if it replicates it.
    pub fn raft(&self, group: GroupId) -> Option<Raft> {
        if group == META {
            return Some(self.meta.clone());
        }
        read(&self.rafts).get(group as usize).cloned().flatten()
    }

    /// Every Raft this node runs: (group, raft), the meta group's first.
    pub(super) fn all_rafts(&self) -> Vec<(GroupId, Raft)> {
        let mut all = vec![(META, self.meta.clone())];
        all.extend(
            read(&self.rafts)
                .iter()
                .enumerate()
                .filter_map(|(g, r)| r.clone().map(|r| (g as GroupId, r))),
        );
        all
    }

    /// This node's view of `group`, for a peer asking.
    pub(super) fn group_view(&self, group: GroupId) -> GroupReply {
        let Some(raft) = self.raft(group) else {
            let (leader, term) = if (group as usize) < self.groups {
                (self.leader(group), self.term(group))
            } else {
                (None, 0)
            };
            return GroupReply {
                leader,
                term,
                members: None,
            };
        };
        let m = raft.metrics().borrow().clone();
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

    fn spawn_elections(self: &Arc<Self>, heard: Arc<Heard>, timeout_ms: u64) {
        let node = self.clone();
        let tick = Duration::from_millis((timeout_ms / 10).max(20));
        let late = Duration::from_millis((timeout_ms / 2).max(100));
        let timeout = Duration::from_millis(timeout_ms);
        let jitter = move || Duration::from_millis(fastrand::u64(0..=timeout_ms / 4));
        self.handle.spawn(async move {
            let mut hold_until = Instant::now() + election_hold(timeout_ms);
            let mut attempted: HashMap<GroupId, Instant> = HashMap::new();
            let mut jitters: HashMap<GroupId, Duration> = HashMap::new();
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
                for (g, raft) in node.all_rafts() {
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
                    let heard_at = heard.at(g);
                    let due = match attempted.get(&g) {
                        Some(&at) if at > heard_at => at + timeout / 2,
                        _ => heard_at + timeout,
                    } + *jitters.entry(g).or_insert_with(jitter);
                    if now < due.max(hold_until) {
                        continue;
                    }
                    attempted.insert(g, now);
                    jitters.insert(g, jitter());
                    let node = node.clone();
                    let heard = heard.clone();
                    node.handle.clone().spawn(async move {
                        if !node.pre_vote(g, &raft).await {
                            return;
                        }
                        // A leader elected while the pre-vote ran has been heard from by now
                        // (its first entry): standing anyway would depose it.
                        if heard.at(g) > now {
                            return;
                        }
                        tracing::debug!("{}: no leader heard from, standing", group_name(g));
                        if let Err(e) = raft.trigger().elect().await {
                            tracing::debug!("{}: cannot stand: {e}", group_name(g));
                        }
                    });
                }
            }
        });
    }

    /// Raft's pre-vote, outside openraft 0.9 (which has none): asks the group's other voters
    /// whether they would vote for this node now — only if they have not heard from a leader
    /// within the node timeout and this node's log is at least as up to date as theirs. Only
    /// with a majority of yes (in every configuration of a joint membership) does the node
    /// stand, so a node cut off from the others, or one that is behind, never raises the
    /// term and never deposes a leader when it comes back.
    async fn pre_vote(&self, g: GroupId, raft: &Raft) -> bool {
        let configs = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_joint_config()
            .clone();
        let Ok(state) = self.parts.storage.raft_log(g).get_log_state().await else {
            return false;
        };
        let last_log = state.last_log_id;
        let map = self.layout();
        let timeout = Duration::from_millis((self.timeout_ms / 2).max(100));
        let peers: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
        let asks = peers.iter().filter(|&&p| p != self.id).map(|&p| {
            let addr = map.nodes.get(&p).map(NodeInfo::bus_addr);
            let call = encode(&Call::PreVote { group: g, last_log });
            let client = self.parts.client.clone();
            async move {
                let (Some(addr), Ok(call)) = (addr, call) else {
                    return (p, false);
                };
                let granted = match client.call(&addr, call, timeout).await {
                    Ok(reply) => bincode::deserialize::<bool>(&reply).unwrap_or(false),
                    Err(_) => false,
                };
                (p, granted)
            }
        });
        // Decided as soon as every configuration has its majority (a peer that is down
        // would otherwise hold the round up for the whole call timeout).
        let won = |granted: &BTreeSet<NodeId>| {
            configs
                .iter()
                .all(|c| c.iter().filter(|v| granted.contains(v)).count() * 2 > c.len())
        };
        let mut granted = BTreeSet::from([self.id]);
        let mut pending: futures::stream::FuturesUnordered<_> = asks.collect();
        while !won(&granted) {
            match futures::StreamExt::next(&mut pending).await {
                Some((p, true)) => {
                    granted.insert(p);
                }
                Some((_, false)) => {}
                None => return false,
            }
        }
        true
    }

    /// Keeps the leader table current and logs elections.
    fn spawn_watcher(self: &Arc<Self>, g: GroupId, raft: Raft) {
        let node = self.clone();
        self.handle.spawn(async move {
            let mut rx = raft.metrics();
            let mut before = 0;
            loop {
                let (leader, term, state) = {
                    let m = rx.borrow_and_update();
                    (m.current_leader.unwrap_or(0), m.current_term, m.state)
                };
                if let Some(slot) = node.leaders.get(g as usize) {
                    slot.store(leader, Relaxed);
                    node.terms[g as usize].store(term, Relaxed);
                }
                let name = group_name(g);
                if before != leader && state == ServerState::Leader {
                    lock(&node.led_since).insert(g, Instant::now());
                }
                if before != leader {
                    match (leader, state) {
                        (0, _) => tracing::warn!("{name}: no leader (term {term})"),
                        (_, ServerState::Leader) => {
                            tracing::info!("{name}: this node is the leader (term {term})")
                        }
                        (l, _) => tracing::info!("{name}: leader is node {l} (term {term})"),
                    }
                }
                before = leader;
                if state == ServerState::Shutdown || rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Forms a group on first start: if no leader has made itself heard after two election
    /// timeouts, the group's first member proposes the computed membership; the others do
    /// so after four (the first member may be down). Proposing the same membership twice is
    /// harmless: a node that already has a log refuses. A node whose data dir was emptied
    /// must not form a rival group: the wait lets it hear the leader, and before forming it
    /// asks the other members, so a leader slow to reach it (a busy machine, a reconnect
    /// backoff) does not make it form anyway — any member past term 0 or naming a leader
    /// means the group exists, and its leader will bring this node up to date.
    fn spawn_bootstrap(self: &Arc<Self>, g: GroupId, raft: Raft, members: Vec<NodeId>) {
        let map = self.layout();
        // The layout's first member is the group's preferred leader (they spread).
        let first = members.first() == Some(&self.id);
        let members: BTreeMap<NodeId, NodeInfo> = members
            .iter()
            .filter_map(|m| map.nodes.get(m).map(|n| (*m, n.clone())))
            .collect();
        let timeout_ms = self.timeout_ms;
        let node = self.clone();
        self.handle.spawn(async move {
            let wait = if first { 2 } else { 4 };
            tokio::time::sleep(Duration::from_millis(timeout_ms * wait)).await;
            if raft.metrics().borrow().current_leader.is_some() {
                return;
            }
            match raft.is_initialized().await {
                Ok(false) => {
                    if let Some(seen) = node.ask_group(g, &node.layout()).await
                        && (seen.term > 0 || seen.leader.is_some())
                    {
                        tracing::info!(
                            "{}: formed already (term {}); waiting for its leader",
                            group_name(g),
                            seen.term
                        );
                        return;
                    }
                    match raft.initialize(members).await {
                        Ok(()) => tracing::info!("{}: formed", group_name(g)),
                        Err(e) => tracing::debug!("{}: not formed here: {e}", group_name(g)),
                    }
                }
                Ok(true) => {}
                Err(e) => tracing::error!("{}: {e}", group_name(g)),
            }
        });
    }

    pub fn group_count(&self) -> usize {
        self.groups
    }

    #[inline]
    pub fn group_of(&self, slot: usize) -> GroupId {
        group_of(slot, self.groups)
    }

    pub fn set_evictor(&self, evictor: Evictor) {
        let _ = self.evictor.set(evictor);
    }

    /// As group `g`'s leader: has the cores evict about `bytes` of its keys.
    fn evict_led(&self, g: GroupId, bytes: u64) {
        if self.leader(g) != Some(self.id) {
            return;
        }
        let Some(evict) = self.evictor.get() else {
            return;
        };
        let Some(slots) = self
            .layout()
            .groups
            .get(g as usize)
            .map(|gl| gl.slots.clone())
        else {
            return;
        };
        evict(g, slots, bytes);
    }

    /// This node is `excess` bytes over maxmemory. Only a group's leader may evict (every
    /// replica must delete the same keys), and the replicas of a group hold the same keys, so
    /// the node asks the leader of each group it replicates — itself or another node — to
    /// evict that group's even part of the excess. At most every 20 ms: the leaders' deletes
    /// take a log round trip to show here, and a repeated request before then would evict
    /// the same part twice.
    pub fn request_evictions(&self, excess: u64) {
        let now = crate::util::now_ms();
        let last = self.evict_asked_ms.load(Relaxed);
        if now < last + 20
            || self
                .evict_asked_ms
                .compare_exchange(last, now, AcqRel, Relaxed)
                .is_err()
        {
            return;
        }
        let held: Vec<GroupId> = (0..self.groups as GroupId)
            .filter(|&g| self.is_member(g))
            .collect();
        if held.is_empty() {
            return;
        }
        let bytes = excess / held.len() as u64 + 1;
        let map = self.layout();
        for g in held {
            match self.leader(g) {
                Some(l) if l == self.id => self.evict_led(g, bytes),
                Some(l) => {
                    let (Some(info), Ok(call)) =
                        (map.nodes.get(&l), encode(&Call::Evict { group: g, bytes }))
                    else {
                        continue;
                    };
                    let (client, addr) = (self.parts.client.clone(), info.bus_addr());
                    // Fire and forget: while still over, the next request goes out soon.
                    self.handle.spawn(async move {
                        let _ = client.call(&addr, call, Duration::from_secs(2)).await;
                    });
                }
                None => {} // an election runs: asked again on a later tick
            }
        }
    }

    /// How many slot groups node `n` leads, as this node last saw.
    pub(super) fn led_count(&self, n: NodeId) -> usize {
        (0..self.groups as GroupId)
            .filter(|&g| self.leader(g) == Some(n))
            .count()
    }

    /// Whether this node's copy of group `g` is being replaced by a snapshot (partial until
    /// the install finishes): not a state READONLY reads may see.
    pub fn installing(&self, g: GroupId) -> bool {
        self.parts.files.is_staged(g)
    }

    /// Whether this node serves `slot` as its primary: it leads the slot's group.
    #[inline]
    pub fn serves(&self, slot: usize) -> bool {
        self.leader(self.group_of(slot)) == Some(self.id)
    }

    /// The group's leader as last seen (None during an election).
    #[inline]
    pub fn leader(&self, g: GroupId) -> Option<NodeId> {
        match self.leaders[g as usize].load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// Records who leads a group this node does not replicate (learned from its members).
    pub(super) fn note_leader(&self, g: GroupId, leader: Option<(NodeId, u64)>) {
        let (l, t) = leader.unwrap_or((0, self.term(g)));
        self.leaders[g as usize].store(l, Relaxed);
        self.terms[g as usize].store(t, Relaxed);
    }

    pub fn term(&self, g: GroupId) -> u64 {
        self.terms[g as usize].load(Relaxed)
    }

    pub fn is_member(&self, g: GroupId) -> bool {
        g == META
            || read(&self.rafts)
                .get(g as usize)
                .is_some_and(Option::is_some)
    }

    pub fn node(&self, id: NodeId) -> Option<NodeInfo> {
        read(&self.map).nodes.get(&id).cloned()
    }

    pub fn me(&self) -> NodeInfo {
        self.node(self.id).unwrap_or_default()
    }

    /// Proposes `req` to group `g` and resolves with the replies once it is committed and
    /// applied here (callable from any thread; the work runs on the Raft runtime).
    pub fn propose(
        &self,
        g: GroupId,
        req: Request,
    ) -> oneshot::Receiver<Result<Response, Refusal>> {
        let (tx, rx) = oneshot::channel();
        let Some(raft) = self.raft(g) else {
            let _ = tx.send(Err(Refusal::to(self.leader(g))));
            return rx;
        };
        if self.quorum_lost(&raft) {
            // Not proposed, so certainly not applied: a definite refusal now, instead of an
            // UNCERTAIN after the write timeout.
            let _ = tx.send(Err(Refusal::NoQuorum));
            return rx;
        }
        let handing = self.handing.running(g).then(|| self.handing.clone());
        let timeout_ms = self.timeout_ms;
        self.handle.spawn(async move {
            if let Some(handing) = handing {
                handing.wait(g).await;
            }
            // A leader that loses its quorum with the write in flight cannot know its fate:
            // say so once the quorum is clearly gone (about a node timeout), not only at the
            // write timeout.
            let cut_off = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(timeout_ms / 2)).await;
                    if no_quorum(&raft, timeout_ms) {
                        break;
                    }
                }
            };
            let r = tokio::select! {
                written = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(req)) => {
                    written_outcome(g, written)
                }
                () = cut_off => {
                    tracing::warn!("slot group {g}: lost its quorum with a write in flight");
                    Err(Refusal::Uncertain)
                }
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
        let Some(raft) = self.raft(g) else {
            let _ = tx.send(Err(Refusal::to(self.leader(g))));
            return rx;
        };
        let handing = self.handing.running(g).then(|| self.handing.clone());
        if handing.is_none() && self.lease_holds(&raft) {
            let _ = tx.send(Ok(()));
            return rx;
        }
        if self.quorum_lost(&raft) {
            let _ = tx.send(Err(Refusal::NoQuorum));
            return rx;
        }
        self.handle.spawn(async move {
            if let Some(handing) = handing {
                handing.wait(g).await;
            }
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
        let map = self.layout();
        for (g, gl) in map.groups.iter().enumerate() {
            let slots = format!("{}-{}", gl.slots.start, gl.slots.end - 1);
            let Some(raft) = self.raft(g as GroupId) else {
                // Not a member: who leads it, as learned from its members.
                let leader = self
                    .leader(g as GroupId)
                    .and_then(|l| map.nodes.get(&l))
                    .map_or("-".to_string(), |n| n.name.clone());
                lines.push(format!(
                    "group{g}:slots={slots},role=none,term={},leader={leader}",
                    self.term(g as GroupId)
                ));
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
                .and_then(|l| map.nodes.get(&l))
                .map_or("-".to_string(), |n| n.name.clone());
            let last = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map_or(0, |l| l.index);
            let mut line = format!(
                "group{g}:slots={slots},role={role},term={},leader={leader},last_log={last},\
                 applied={applied}",
                m.current_term
            );
            if let Some(ms) = m
                .millis_since_quorum_ack
                .filter(|_| m.state == ServerState::Leader)
            {
                line.push_str(&format!(",quorum_ack_ms={ms}"));
            }
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

    /// Whether this node leads the group but no quorum has acknowledged it for a whole node
    /// timeout: its followers stand for election after that long without hearing from it,
    /// so it is likely deposed already and would only learn so once it reaches them. Writes
    /// and reads it gets meanwhile are refused at once (a write is not proposed, so it is
    /// certainly not applied) rather than left waiting for the write timeout.
    pub fn quorum_lost_in(&self, g: GroupId) -> bool {
        self.raft(g).is_some_and(|raft| self.quorum_lost(&raft))
    }

    /// [`ClusterNode::quorum_lost_in`] for a group's Raft at hand.
    fn quorum_lost(&self, raft: &Raft) -> bool {
        no_quorum(raft, self.timeout_ms)
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

    /// Stops every group this node replicates (SHUTDOWN); the others elect new leaders when
    /// their election timers fire.
    pub fn shutdown(&self, timeout: Duration) {
        let rafts: Vec<Raft> = self.all_rafts().into_iter().map(|(_, r)| r).collect();
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
