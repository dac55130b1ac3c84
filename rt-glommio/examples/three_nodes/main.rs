//! Probe: three openraft 0.10 nodes in ONE glommio executor thread, to measure what openraft
//! itself costs per entry (storage and network are in-memory; see `store.rs`, `network.rs`).
//!
//! ```text
//! cargo run --release -p tallykv-rt-glommio --example three_nodes [SEQUENTIAL] [PER_TASK] [FF]
//! ```
//!
//! Phases: (a) SEQUENTIAL `client_write`s one after the other; (b) 50 tasks doing PER_TASK
//! `client_write`s each; (c) FF `client_write_ff`s from one task with a window of replies in
//! flight. CPU is the process's (getrusage), so it covers all three nodes, the leader's
//! replication and both followers' appends and applies: everything openraft does for an entry on
//! a 3-replica group, on one thread. Then two behaviours with a custom responder: a leader cut
//! off from its followers, and a leader shut down with writes pending.

mod network;
mod store;

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::EmptyNode;
use openraft::OptionalSend;
use openraft::RaftTypeConfig;
use openraft::ServerState;
use openraft::async_runtime::Watch;
use openraft::async_runtime::WatchReceiver;
use openraft::async_runtime::WatchSender;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardReason;
use openraft::errors::RaftError;
use openraft::raft::ClientWriteResult;
use openraft::raft::responder::Responder;
use openraft_rt::AsyncRuntime;
use tallykv_rt_glommio::GlommioRuntime as Rt;

use crate::network::Network;
use crate::network::Router;
use crate::store::LogStore;
use crate::store::StateMachine;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;
pub type Entry = <TypeConfig as RaftTypeConfig>::Entry;

/// Written by hand: `declare_raft_types!` cannot set `Responder<T>` (it takes `Name = Type`
/// pairs, and a generic associated type is not a plain name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TypeConfig;

impl RaftTypeConfig for TypeConfig {
    type D = Set;
    type R = u64;
    type NodeId = NodeId;
    type Node = EmptyNode;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Set, NodeId, EmptyNode>;
    // With `leader_id_adv` the committed leader id is the leader id itself.
    type Entry = openraft::Entry<Self::LeaderId, Self::Payload>;
    type AsyncRuntime = Rt;
    type Responder<T>
        = Reply<T>
    where
        T: OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// A small entry: SET key value. Serde, for openraft built with its `serde` feature (as the
/// workspace builds it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Set {
    pub key: u64,
    pub value: u64,
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SET {} {}", self.key, self.value)
    }
}

/// Distinct keys written: keeps the state machine, and so each snapshot (openraft builds one
/// every 5000 entries by default), small.
const KEYS: u64 = 1024;

fn set(i: u64) -> Set {
    Set {
        key: i % KEYS,
        value: i,
    }
}

/// A responder that answers exactly once: `Some(result)` when openraft completes it, `None`
/// when openraft drops it unanswered (its core stopped). Without the `Drop` a writer would
/// never hear about such a write.
pub struct Reply<T> {
    answer: Option<Box<dyn FnOnce(Option<T>)>>,
}

impl<T> Reply<T> {
    fn new(answer: impl FnOnce(Option<T>) + 'static) -> Self {
        Reply {
            answer: Some(Box::new(answer)),
        }
    }
}

impl<T: 'static> Responder<TypeConfig, T> for Reply<T> {
    fn on_complete(mut self, result: T) {
        if let Some(answer) = self.answer.take() {
            answer(Some(result));
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer(None);
        }
    }
}

/// How the writes handed to `client_write_ff` ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Outcomes {
    applied: u64,
    forward_to_leader: u64,
    discarded: u64,
    other_error: u64,
    dropped_unanswered: u64,
}

impl Outcomes {
    fn total(&self) -> u64 {
        self.applied
            + self.forward_to_leader
            + self.discarded
            + self.other_error
            + self.dropped_unanswered
    }

    fn record(&mut self, answer: Option<ClientWriteResult<TypeConfig>>) {
        let count = match answer {
            Some(Ok(_)) => &mut self.applied,
            Some(Err(ClientWriteError::ForwardToLeader(_))) => &mut self.forward_to_leader,
            Some(Err(ClientWriteError::LogEntryDiscarded(_))) => &mut self.discarded,
            Some(Err(_)) => &mut self.other_error,
            None => &mut self.dropped_unanswered,
        };
        *count += 1;
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "applied {}, ForwardToLeader {}, LogEntryDiscarded {}, other error {}, dropped unanswered {}",
            self.applied,
            self.forward_to_leader,
            self.discarded,
            self.other_error,
            self.dropped_unanswered
        )
    }
}

type Tally = <<Rt as AsyncRuntime>::Watch as Watch>::Sender<Outcomes>;
type TallyRx = <<Rt as AsyncRuntime>::Watch as Watch>::Receiver<Outcomes>;

fn new_tally() -> (Tally, TallyRx) {
    <Rt as AsyncRuntime>::Watch::channel(Outcomes::default())
}

fn reply(tally: &Tally) -> Reply<ClientWriteResult<TypeConfig>> {
    let tally = tally.clone();
    Reply::new(move |answer| {
        tally.send_if_modified(|outcomes| {
            outcomes.record(answer);
            true
        });
    })
}

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given; all-zero bytes are a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Time this thread spent runnable but waiting for a CPU (second field of its schedstat), or
/// None where the kernel does not say. On a shared machine this is the gap between wall time
/// and CPU time, so it tells whether entries/s measured openraft or the neighbours.
fn runqueue_wait() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let waited_ns = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(waited_ns))
}

/// One measured phase.
struct Phase {
    name: &'static str,
    entries: u64,
    wall: Duration,
    cpu: Duration,
    /// Time runnable but not running (another process had the core).
    waited: Option<Duration>,
    /// Sorted per-write latencies, where the phase records them.
    latencies: Vec<Duration>,
    /// AppendEntries RPCs (to both followers) per entry: how much openraft batched.
    appends_per_entry: f64,
}

impl Phase {
    fn percentile(&self, p: f64) -> String {
        if self.latencies.is_empty() {
            return "-".to_string();
        }
        let at = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        format!("{:.0}", self.latencies[at].as_secs_f64() * 1e6)
    }
}

/// Runs a phase and measures it: wall and CPU time, and AppendEntries RPCs per entry.
async fn measure<F>(name: &'static str, entries: u64, router: &Router, phase: F) -> Result<Phase>
where
    F: Future<Output = Result<Vec<Duration>>>,
{
    let rpcs = router.append_rpcs.get();
    let (cpu, waited, start) = (cpu_time(), runqueue_wait(), Instant::now());
    let mut latencies = phase.await?;
    let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
    let waited = runqueue_wait()
        .zip(waited)
        .map(|(after, before)| after - before);
    latencies.sort();
    let rpcs = router.append_rpcs.get() - rpcs;
    Ok(Phase {
        name,
        entries,
        wall,
        cpu,
        waited,
        latencies,
        appends_per_entry: rpcs as f64 / entries as f64,
    })
}

/// (a) One write at a time: openraft's latency for an entry on an idle group.
async fn sequential(leader: &Raft, n: u64) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        leader.client_write(set(i)).await?;
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

/// (b) `tasks` writers, each awaiting one `client_write` at a time.
async fn concurrent(leader: &Raft, tasks: u64, per_task: u64) -> Result<Vec<Duration>> {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let leader = leader.clone();
            Rt::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let start = Instant::now();
                    leader.client_write(set(task * per_task + i)).await?;
                    latencies.push(start.elapsed());
                }
                Ok::<_, Box<dyn Error>>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Ok(latencies)
}

/// (c) One task handing writes to `client_write_ff` with a `Reply` each, keeping at most
/// `window` unanswered.
async fn fire_and_forget(leader: &Raft, n: u64, window: u64) -> Result<Vec<Duration>> {
    let (tally, mut answered) = new_tally();
    for i in 0..n {
        while i - answered.borrow_watched().total() >= window {
            answered.changed().await?;
        }
        leader.client_write_ff(set(i), Some(reply(&tally))).await?;
    }
    let outcomes = answered.wait_until(|o| o.total() == n).await?;
    if outcomes.applied != n {
        return Err(format!("fire-and-forget writes not all applied: {outcomes}").into());
    }
    Ok(Vec::new())
}

/// Writes one entry, retrying while the leader says its lease has expired. A new leader reports
/// itself in the metrics as soon as it has won the vote, but refuses writes (ForwardToLeader,
/// reason LeaseExpired, no leader id) until a quorum has acknowledged it. Returns the refusals.
async fn write_when_writable(leader: &Raft, entry: Set) -> Result<u32> {
    let mut refused = 0;
    loop {
        match leader.client_write(entry.clone()).await {
            Ok(_) => return Ok(refused),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))
                if forward.reason == ForwardReason::LeaseExpired && refused < 1000 =>
            {
                refused += 1;
                Rt::sleep(Duration::from_millis(1)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

async fn wait_for_leader(observer: &Raft, other_than: Option<NodeId>) -> Result<NodeId> {
    let mut metrics = observer.metrics();
    let found =
        metrics.wait_until(|m| matches!(m.current_leader, Some(id) if Some(id) != other_than));
    let metrics = Rt::timeout(Duration::from_secs(10), found).await??;
    metrics.current_leader.ok_or_else(|| "no leader".into())
}

fn state(raft: &Raft) -> ServerState {
    raft.metrics().borrow_watched().state
}

/// (d) The leader is cut off with writes in flight; the others elect a new leader; then the
/// partition heals. Prints when and how the cut-off leader's writes are answered.
async fn lose_leadership(nodes: &[Raft], router: &Router, old: NodeId) -> Result<NodeId> {
    const WRITES: u64 = 100;
    let old_leader = &nodes[(old - 1) as usize];
    let observer = nodes
        .iter()
        .find(|raft| *raft.node_id() != old)
        .ok_or("no other node")?;

    router.isolate(old);
    let (tally, mut answered) = new_tally();
    for i in 0..WRITES {
        old_leader
            .client_write_ff(set(i), Some(reply(&tally)))
            .await?;
    }
    Rt::sleep(Duration::from_millis(200)).await;
    println!(
        "  leader {old} cut off, {WRITES} writes handed to it; after 200 ms: {}",
        answered.borrow_watched()
    );

    let cut = Instant::now();
    let new = wait_for_leader(observer, Some(old)).await?;
    println!(
        "  node {new} elected after {:.2} s; the cut-off node {old} is still {:?}",
        cut.elapsed().as_secs_f64(),
        state(old_leader)
    );
    // Its lease (election_timeout_max) has run out by now: it refuses new writes.
    let (late_tally, late) = new_tally();
    old_leader
        .client_write_ff(set(0), Some(reply(&late_tally)))
        .await?;
    Rt::sleep(Duration::from_millis(10)).await;
    println!(
        "  one more write handed to node {old} now: {}",
        late.borrow_watched()
    );
    // A write the old leader's log does not have.
    let refused = write_when_writable(&nodes[(new - 1) as usize], set(WRITES)).await?;
    println!(
        "  a write on node {new}: refused {refused} times with LeaseExpired before it was accepted"
    );

    router.heal();
    let healed = Instant::now();
    let waited = Rt::timeout(
        Duration::from_secs(10),
        answered.wait_until(|o| o.total() == WRITES),
    )
    .await;
    println!(
        "  healed; {} {:.2} s later: {}; node {old} is now {:?}",
        if waited.is_ok() {
            "all answered"
        } else {
            "NOT all answered"
        },
        healed.elapsed().as_secs_f64(),
        answered.borrow_watched(),
        state(old_leader)
    );
    Ok(new)
}

/// (e) The leader is cut off with writes in flight and then shut down.
async fn shut_down_with_writes_pending(
    nodes: &[Raft],
    router: &Router,
    leader: NodeId,
) -> Result<()> {
    const WRITES: u64 = 100;
    let raft = &nodes[(leader - 1) as usize];
    router.isolate(leader);
    let (tally, answered) = new_tally();
    for i in 0..WRITES {
        raft.client_write_ff(set(i), Some(reply(&tally))).await?;
    }
    Rt::sleep(Duration::from_millis(50)).await;
    raft.shutdown().await?;
    Rt::sleep(Duration::from_millis(50)).await;
    println!(
        "  leader {leader} cut off with {WRITES} writes pending, then shut down: {}",
        answered.borrow_watched()
    );
    router.heal();
    Ok(())
}

fn print_table(phases: &[Phase]) {
    println!();
    println!(
        "{:<34} {:>7} {:>12} {:>9} {:>7} {:>9} {:>7} {:>7} {:>7}",
        "phase (3 nodes, 1 thread)",
        "entries",
        "wall s",
        "entries/",
        "CPU µs",
        "entries/",
        "p50 µs",
        "p99 µs",
        "AE RPCs"
    );
    println!(
        "{:<34} {:>7} {:>12} {:>9} {:>7} {:>9} {:>7} {:>7} {:>7}",
        "", "", "(runq wait)", "wall-s", "/entry", "CPU-s", "", "", "/entry"
    );
    for p in phases {
        let wall = match p.waited {
            Some(waited) => format!(
                "{:.2} ({:.0}%)",
                p.wall.as_secs_f64(),
                100.0 * waited.as_secs_f64() / p.wall.as_secs_f64()
            ),
            None => format!("{:.2}", p.wall.as_secs_f64()),
        };
        println!(
            "{:<34} {:>7} {:>12} {:>9.0} {:>7.1} {:>9.0} {:>7} {:>7} {:>7.2}",
            p.name,
            p.entries,
            wall,
            p.entries as f64 / p.wall.as_secs_f64(),
            p.cpu.as_secs_f64() * 1e6 / p.entries as f64,
            p.entries as f64 / p.cpu.as_secs_f64(),
            p.percentile(0.5),
            p.percentile(0.99),
            p.appends_per_entry,
        );
    }
    println!(
        "CPU µs/entry: process CPU (user+sys) per entry, for the leader and both followers together."
    );
    println!(
        "entries/CPU-s: what one core running only this thread would do. runq wait: share of the"
    );
    println!(
        "wall time the thread was runnable but another process had the CPU (inflates wall, p99)."
    );
    println!("AE RPCs/entry: AppendEntries calls (both followers, heartbeats included) per entry.");
}

async fn run(sequential_writes: u64, per_task: u64, ff_writes: u64) -> Result<()> {
    let config = openraft::Config {
        cluster_name: "probe".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 1000,
        election_timeout_max: 1500,
        ..Default::default()
    }
    .validate()?;
    let config = Arc::new(config);

    let router = Rc::new(Router::default());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let network = Network {
            from: id,
            router: router.clone(),
        };
        let raft = Raft::new(
            id,
            config.clone(),
            network,
            LogStore::default(),
            StateMachine::default(),
        )
        .await?;
        router.add(id, raft.clone());
        nodes.push(raft);
    }
    nodes[0].initialize(BTreeSet::from([1, 2, 3])).await?;
    let leader_id = wait_for_leader(&nodes[0], None).await?;
    let leader = nodes[(leader_id - 1) as usize].clone();
    let elected = Instant::now();
    let refused = write_when_writable(&leader, set(0)).await?;
    println!(
        "leader: node {leader_id}; heartbeat 100 ms, election timeout 1000-1500 ms; first write refused \
         {refused} times (LeaseExpired), accepted {:.1} ms after the leader showed in the metrics",
        elected.elapsed().as_secs_f64() * 1e3
    );

    // Warm up allocators and caches; not measured.
    sequential(&leader, 500).await?;

    let tasks = 50;
    let phases = vec![
        measure(
            "(a) sequential client_write",
            sequential_writes,
            &router,
            async { sequential(&leader, sequential_writes).await },
        )
        .await?,
        measure(
            "(b) 50 tasks x client_write",
            tasks * per_task,
            &router,
            async { concurrent(&leader, tasks, per_task).await },
        )
        .await?,
        measure(
            "(c) client_write_ff, 1024 in flight",
            ff_writes,
            &router,
            async { fire_and_forget(&leader, ff_writes, 1024).await },
        )
        .await?,
    ];
    print_table(&phases);

    println!();
    println!("(d) leadership lost with writes in flight (custom Reply responder):");
    let new_leader = lose_leadership(&nodes, &router, leader_id).await?;
    println!("(e) leader shut down with writes in flight:");
    shut_down_with_writes_pending(&nodes, &router, new_leader).await?;

    router.clear();
    for raft in &nodes {
        raft.shutdown().await?;
    }
    Ok(())
}

fn arg(at: usize, default: u64) -> Result<u64> {
    match std::env::args().nth(at) {
        Some(value) => Ok(value
            .parse()
            .map_err(|_| format!("argument {at}: not a count: {value}"))?),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let sequential_writes = arg(1, 5_000)?;
    let per_task = arg(2, 1_000)?;
    let ff_writes = arg(3, 50_000)?;
    Rt::new(1).block_on(run(sequential_writes, per_task, ff_writes))
}
