//! One core: its shard, its links to the other cores, and batch execution.
//!
//! Commands for another core's keys travel as one message per (connection read batch,
//! destination core), never one per command: waking a parked core costs 150+ µs on this VM,
//! a message in a batch ~100 ns. The destination runs the batch without yielding, so the
//! commands of one batch that touch one core are atomic with respect to each other there.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use glommio::channels::channel_mesh::{Receivers, Senders};

use super::gate::{Gate, TxId};
use super::replicated::{Consensus, Replicated};
use crate::cluster::host::Host;
use crate::cluster::types::GroupId;
use crate::command::{Ctx, ShardFn, flags};
use crate::config::MaxmemoryPolicy;
use crate::protocol::Out;
use crate::shard::{AccessMode, EvictPolicy, Shard};
use crate::state::Shared;

/// One command for a shard: its handler, arguments, flags and registry id (for statistics;
/// `NO_STATS` for the parts of a split command, which are counted once where they were split).
pub struct Op {
    pub exec: ShardFn,
    pub args: Vec<Bytes>,
    pub flags: u32,
    pub cmd_id: u32,
    /// The numbered database it runs in (SELECT).
    pub db: u32,
    /// A script's caller when its ACL user is restricted (`redis.call` checks each command
    /// against it); None for any other op, and for a caller allowed everything.
    pub user: Option<crate::security::acl::Caller>,
    /// Its client is connected over TLS: a MOVED refusing it names the TLS port (see
    /// `routing::refusal_text`).
    pub tls: bool,
}

pub const NO_STATS: u32 = u32::MAX;

/// A batch that ran: its ops, their replies and where each reply ends.
type Ran = (Vec<Op>, Out, Vec<usize>);

/// The batch passed to [`Core::execute_or_pause`], after it ran or while its script pauses.
pub enum Executed {
    Done(Vec<Op>, Out, Vec<usize>),
    Paused(super::pause::Paused, Rc<RefCell<Option<Ran>>>),
}

impl Executed {
    /// The ops, their replies and the replies' ends, once the batch has ended.
    pub async fn done(self) -> Ran {
        match self {
            Executed::Done(ops, out, ends) => (ops, out, ends),
            Executed::Paused(p, cell) => {
                p.finish().await;
                cell.borrow_mut().take().expect("the batch ended")
            }
        }
    }
}

/// A -BUSY reply for each of `n` ops.
pub fn busy_replies(n: usize, resp3: bool, error: &str) -> BatchReply {
    let mut out = Out::new(resp3);
    let mut ends = Vec::with_capacity(n);
    for _ in 0..n {
        out.error(error);
        ends.push(out.buf.len());
    }
    BatchReply { buf: out.buf, ends }
}

/// The replies of a batch: one buffer, and where each op's reply ends in it.
///
/// Offsets are `usize`, as every reply offset of a read batch is: one batch's replies may
/// pass 4 GiB (a few GETs of large strings, a big KEYS), and a `u32` offset would wrap and
/// hand out the wrong bytes.
#[derive(Default)]
pub struct BatchReply {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
}

impl BatchReply {
    pub fn reply(&self, idx: usize) -> &[u8] {
        let start = if idx == 0 { 0 } else { self.ends[idx - 1] };
        &self.buf[start..self.ends[idx]]
    }
}

/// Work sent to a core.
pub enum CoreMsg {
    /// Ops to execute in order, replies encoded in RESP2 or RESP3.
    /// `tx`: the gated transaction the batch belongs to, if any (see `gate`).
    Batch {
        ops: Vec<Op>,
        resp3: bool,
        reply: oneshot::Sender<BatchReply>,
        tx: Option<TxId>,
    },
    /// A closure to run against the core (multi-phase cross-core commands such as RENAME),
    /// as part of gated transaction `tx` if given.
    Call(Box<dyn FnOnce(&Core) + Send>, Option<TxId>),
    /// Async work to run on the core (cluster admin calls and start-up).
    Task(Box<dyn FnOnce(Rc<Core>) -> LocalBoxFuture<'static, ()> + Send>),
    /// One connection batch's ops for slot group `g`, which this core hosts.
    Group {
        g: GroupId,
        ops: Vec<Op>,
        resp3: bool,
        reply: oneshot::Sender<BatchReply>,
    },
}

/// Valkey's refusal of a command that may grow memory when over maxmemory.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

pub struct Core {
    pub id: usize,
    pub shard: RefCell<Shard>,
    pub shared: Arc<Shared>,
    senders: Senders<CoreMsg>,
    /// When this core last asked each other core to evict (ms), so a write flood sends at
    /// most one request per core per millisecond.
    evict_asked_ms: Vec<Cell<u64>>,
    /// The link to storage (None with `appendonly no`).
    pub(super) persist: Option<super::persist::Persist>,
    /// This core itself, for tasks it spawns.
    pub(super) me: std::rc::Weak<Core>,
    /// State-machine records (Raft applied marks, the cluster map) to write with the next
    /// data batch, so a batch and the mark saying what it covers are durable together.
    raft_items: RefCell<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// The uncommitted writes of the slot groups this core leads (cluster mode).
    pub replicated: RefCell<Replicated>,
    /// This core's part of the cluster, once started.
    host: RefCell<Option<Rc<Host>>>,
    /// Held by a transaction spanning several cores while it runs (standalone).
    pub gate: Gate,
    /// A shard of no core's own, for running one command whose keys live on several cores
    /// (see `scratch`): kept between uses, emptied after each.
    pub(super) scratch: RefCell<Option<Shard>>,
}

impl Core {
    pub fn new(id: usize, shared: Arc<Shared>, senders: Senders<CoreMsg>) -> Rc<Core> {
        let stats = shared.shard_stats[id].clone();
        let mut shard = Shard::new(shared.slot_map.range(id), stats);
        shard.core = Some(id);
        // In a cluster, expired keys are deleted only by records: the leader journals the
        // deletions it decides (lazily or actively) and replicas apply them.
        shard.expire_deletes = !shared.config.cluster.enabled;
        Rc::new_cyclic(|me| Core {
            id,
            shard: RefCell::new(shard),
            evict_asked_ms: (0..shared.cores).map(|_| Cell::new(0)).collect(),
            persist: shared
                .config
                .runtime
                .appendonly()
                .then(super::persist::Persist::default),
            me: me.clone(),
            raft_items: RefCell::default(),
            replicated: RefCell::default(),
            host: RefCell::new(None),
            gate: Gate::default(),
            scratch: RefCell::new(None),
            shared,
            senders,
        })
    }

    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    /// The core that owns `slot`.
    #[inline]
    pub fn owner(&self, slot: usize) -> usize {
        self.shared.slot_map.core_of(slot)
    }

    /// This core's part of the cluster, once started.
    pub fn host(&self) -> Option<Rc<Host>> {
        self.host.borrow().clone()
    }

    pub fn set_host(&self, host: Rc<Host>) {
        *self.host.borrow_mut() = Some(host);
    }

    /// The consensus the engine proposes through (cluster mode, once started).
    pub fn consensus(&self) -> Option<Rc<dyn Consensus>> {
        self.host().map(|h| h as Rc<dyn Consensus>)
    }

    /// Queues a state-machine record (`None`: delete it) for the next data batch.
    pub fn stage_raft_item(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.raft_items.borrow_mut().insert(key, value);
    }

    /// The records staged since the last call.
    pub(super) fn take_raft_items(&self) -> Vec<crate::storage::Item> {
        std::mem::take(&mut *self.raft_items.borrow_mut())
            .into_iter()
            .map(|(key, value)| crate::storage::Item { key, value })
            .collect()
    }

    pub(super) fn has_raft_items(&self) -> bool {
        !self.raft_items.borrow().is_empty()
    }

    /// Whether this core holds replicated writes that have not committed yet.
    pub fn pending_replicated(&self) -> bool {
        !self.replicated.borrow().spec.is_empty()
    }

    /// Publishes this core's allocation counter (maxmemory accounting).
    pub fn publish_memory(&self) {
        self.shared.memory.publish(self.id);
    }

    /// Copies runtime settings that shards cache (encoding limits, LRU/LFU mode).
    pub(super) fn sync_settings(&self, shard: &mut Shard) {
        let rt = &self.shared.config.runtime;
        shard.limits = rt.encodings();
        shard.lazyfree = rt.lazyfree();
        shard.access_mode = if matches!(
            rt.maxmemory_policy(),
            MaxmemoryPolicy::AllKeysLfu | MaxmemoryPolicy::VolatileLfu
        ) {
            AccessMode::Lfu {
                log_factor: rt.lfu_log_factor(),
                decay_minutes: rt.lfu_decay_time(),
            }
        } else {
            AccessMode::Lru
        };
    }

    /// Starts a batch: refreshes cached settings and returns the time the batch runs at
    /// (Valkey also fixes the time per command; one clock read per batch is cheaper).
    pub fn prepare(&self) -> u64 {
        let now = crate::util::now_ms();
        let mut shard = self.shard.borrow_mut();
        self.sync_settings(&mut shard);
        shard.clock_ms = now;
        // A command that set its own free mode and panicked before clearing it.
        shard.set_free_mode(None);
        now
    }

    /// Ends a batch: publishes this core's allocation counter for maxmemory accounting and
    /// arranges for the batch's changes to reach storage.
    pub fn finish(&self) {
        self.shared.memory.publish(self.id);
        self.schedule_flush();
    }

    /// Runs `ops` against this core's shard at time `now` (from [`Core::prepare`]), appending
    /// each reply to `out` and its end offset to `ends`. Never yields: the batch is atomic on
    /// this core (a script in it pauses only when run by [`Core::execute_or_pause`]).
    pub fn execute(&self, ops: &[Op], now: u64, out: &mut Out, ends: &mut Vec<usize>) {
        let mut shard = self.shard.borrow_mut();
        let stats = &self.shared.core_stats[self.id];
        let mut last = Instant::now();
        // A transaction whose WATCH guard failed: its remaining ops are skipped.
        let mut tx_aborted = false;
        for (i, op) in ops.iter().enumerate() {
            let start = out.buf.len();
            if op.flags & flags::TX == 0 || op.flags & flags::TX_BEGIN != 0 {
                tx_aborted = false;
            }
            if op.flags & flags::TX != 0 && tx_aborted {
                ends.push(out.buf.len());
                continue;
            }
            shard.select(op.db as usize);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                // In a cluster only a group's leader evicts, through the group's log (see
                // `cluster::evict`); the engine refused growth before evaluating.
                if op.flags & flags::DENYOOM != 0
                    && !self.shared.config.cluster.enabled
                    && !self.make_room(&mut shard, now)
                {
                    out.error(OOM);
                    return false;
                }
                if op.flags & flags::SCRIPT != 0 {
                    crate::command::script::set_caller(op.user.clone());
                    let oom = if self.shared.config.cluster.enabled {
                        self.growth_refused()
                    } else {
                        !self.make_room(&mut shard, now)
                    };
                    crate::command::script::set_pre_oom(oom);
                }
                let mut ctx = Ctx {
                    shard: &mut shard,
                    now,
                    out,
                    node: &*self.shared,
                };
                (op.exec)(&mut ctx, &op.args);
                true
            }));
            let ran = match result {
                Ok(ran) => ran,
                Err(_) => {
                    // The panic hook has logged it; the shard stays usable for other commands.
                    out.buf.truncate(start);
                    out.error(
                        "ERR internal error while executing the command (see the server log)",
                    );
                    true
                }
            };
            // One clock read per op: each op is charged the time since the previous one ended.
            let ended = Instant::now();
            if op.cmd_id != NO_STATS {
                let s = &stats.commands[op.cmd_id as usize];
                if ran {
                    s.calls.inc();
                    s.usec.add(ended.duration_since(last).as_micros() as u64);
                    if out.buf.get(start) == Some(&b'-') {
                        s.failed_calls.inc();
                    }
                } else {
                    s.rejected_calls.inc();
                }
                stats.commands_processed.inc();
            }
            last = ended;
            if op.flags & flags::TX_GUARD != 0 {
                tx_aborted = &out.buf[start..] == b":0\r\n";
            }
            // A leader's journal keeps each command's records as one unit, and a transaction's
            // (its consecutive TX ops) as one.
            let tx_continues = op.flags & flags::TX != 0
                && ops
                    .get(i + 1)
                    .is_some_and(|n| n.flags & flags::TX != 0 && n.flags & flags::TX_BEGIN == 0);
            if !tx_continues && let Some(j) = shard.journal_mut() {
                j.close_unit();
            }
            ends.push(out.buf.len());
        }
        // Everything else that touches the shard works in database 0.
        shard.select(0);
    }

    /// Runs `ops` like [`Core::execute`], except that a script among them may pause (see
    /// `pause`): the batch then runs on a stack of its own, and between its slices this
    /// core's other tasks run while the gate keeps everything else off the shard. `held`: the
    /// gated transaction the batch belongs to. The caller checked that the gate is open to it
    /// and has not yielded since; a batch without a script runs here and now.
    pub fn execute_or_pause(
        self: &Rc<Self>,
        ops: Vec<Op>,
        now: u64,
        mut out: Out,
        mut ends: Vec<usize>,
        held: Option<TxId>,
    ) -> Executed {
        if !ops.iter().any(|op| op.flags & flags::SCRIPT != 0) {
            self.execute(&ops, now, &mut out, &mut ends);
            return Executed::Done(ops, out, ends);
        }
        let cell = Rc::new(RefCell::new(Some((ops, out, ends))));
        let (core, batch) = (self.clone(), cell.clone());
        let paused = super::pause::start(self, held, move || {
            let mut batch = batch.borrow_mut();
            let (ops, out, ends) = batch.as_mut().expect("taken only once the batch ended");
            core.execute(ops, now, out, ends);
        });
        match paused {
            None => {
                let (ops, out, ends) = cell.borrow_mut().take().expect("the batch ended");
                Executed::Done(ops, out, ends)
            }
            Some(p) => Executed::Paused(p, cell),
        }
    }

    /// Waits until work carrying `tx` may touch this core's shard; while a script paused here
    /// (see `pause`) has run past `busy-reply-threshold`, returns its -BUSY error instead:
    /// Valkey answers everything but SCRIPT KILL and FUNCTION KILL with it then.
    pub async fn wait_unless_busy(&self, tx: Option<TxId>) -> Result<(), &'static str> {
        while self.gate.blocks(tx) {
            let scripts = &self.shared.scripts;
            let threshold = self.shared.config.runtime.busy_reply_threshold();
            match scripts.busy_in(self.id, threshold) {
                // A gated transaction holds the gate (or the script just ended).
                None => self.gate.wait_open(tx).await,
                Some(0) => return Err(scripts.busy_error(self.id)),
                Some(left) => {
                    let open = std::pin::pin!(self.gate.wait_open(tx));
                    let late = std::pin::pin!(glommio::timer::sleep(
                        std::time::Duration::from_millis(left)
                    ));
                    futures::future::select(open, late).await;
                }
            }
        }
        Ok(())
    }

    /// Evicts keys until used memory is below maxmemory; false when that is impossible (the
    /// policy is noeviction, or no core has anything the policy may evict).
    ///
    /// Memory is global but each core evicts only its own keys. A core evicts only while it
    /// holds at least its fair share of the evictable keys; a core below its share lets the
    /// write in and asks the cores above it to evict instead. Without that rule the core that
    /// happens to run when memory is tight (e.g. the one executing a pipeline's remote part,
    /// whose buffers are still held) would evict far more than the others and end up empty,
    /// which is neither LRU nor fair. The others answer asynchronously and may be slow (a busy
    /// or descheduled core): past a small slack over the limit this core evicts its own keys
    /// after all, so the overshoot stays bounded whatever the others do.
    fn make_room(&self, shard: &mut Shard, now: u64) -> bool {
        let rt = &self.shared.config.runtime;
        let limit = rt.maxmemory();
        if limit == 0 {
            return true;
        }
        let mem = &self.shared.memory;
        mem.publish(self.id);
        if mem.used_for_eviction() <= limit {
            return true;
        }
        let Some(policy) = evict_policy(rt.maxmemory_policy()) else {
            return false;
        };
        let samples = rt.maxmemory_samples();
        let slack = limit / 32;
        let mut asked = false;
        loop {
            let used = mem.used_for_eviction();
            if used <= limit {
                return true;
            }
            let (mine, total) = self.evictable_keys(shard, policy);
            if total == 0 {
                return false;
            }
            let others_have = total > mine;
            if mine * (self.cores() as u64) < total {
                // Below its share: the others should evict.
                if !asked {
                    asked = true;
                    self.ask_others_to_evict(policy);
                }
                if used <= limit + slack {
                    return true;
                }
            }
            if !shard.evict_one_any_db(policy, samples, now) {
                if !asked {
                    self.ask_others_to_evict(policy);
                }
                return others_have;
            }
            mem.publish(self.id);
        }
    }

    /// Keys `policy` may evict: (on this core, on all cores), from the per-shard counts.
    fn evictable_keys(&self, shard: &Shard, policy: EvictPolicy) -> (u64, u64) {
        let volatile = policy.volatile_only();
        let mine = if volatile {
            shard.total_volatile_len()
        } else {
            shard.total_len()
        } as u64;
        let others: u64 = self
            .shared
            .shard_stats
            .iter()
            .enumerate()
            .filter(|(c, _)| *c != self.id)
            .map(|(_, s)| {
                if volatile {
                    s.expires.get()
                } else {
                    s.keys.get()
                }
            })
            .sum();
        (mine, mine + others)
    }

    /// Asks the cores holding at least their share of the evictable keys to evict (without
    /// waiting for them).
    fn ask_others_to_evict(&self, policy: EvictPolicy) {
        let volatile = policy.volatile_only();
        let counts: Vec<u64> = self
            .shared
            .shard_stats
            .iter()
            .map(|s| {
                if volatile {
                    s.expires.get()
                } else {
                    s.keys.get()
                }
            })
            .collect();
        let total: u64 = counts.iter().sum();
        let now = crate::util::now_ms();
        for (c, &n) in counts.iter().enumerate() {
            if c != self.id
                && n > 0
                && n * self.cores() as u64 >= total
                && self.evict_asked_ms[c].get() != now
            {
                self.evict_asked_ms[c].set(now);
                let ask = CoreMsg::Call(Box::new(|core: &Core| core.evict_if_over_limit()), None);
                // A full channel means the core is busy with requests already: skip.
                let _ = self.senders.try_send_to(c, ask);
            }
        }
    }

    /// Eviction outside a write: when another core asks, and on every tick (so lowering
    /// maxmemory takes effect without waiting for writes, as Valkey's eviction time proc).
    /// Each core frees its part of the excess, in proportion to the evictable keys it holds,
    /// so the cores converge together instead of taking turns.
    pub fn evict_if_over_limit(&self) {
        let rt = &self.shared.config.runtime;
        let limit = rt.maxmemory();
        if limit == 0 {
            return;
        }
        let Ok(mut shard) = self.shard.try_borrow_mut() else {
            return;
        };
        let Some(policy) = evict_policy(rt.maxmemory_policy()) else {
            return;
        };
        let mem = &self.shared.memory;
        mem.publish(self.id);
        let used = mem.used_for_eviction();
        if used <= limit {
            return;
        }
        let (mine, total) = self.evictable_keys(&shard, policy);
        if mine == 0 {
            return;
        }
        self.sync_settings(&mut shard);
        let part = ((used - limit) as u128 * mine as u128 / total as u128) as u64;
        let target = used - part.max(1);
        let now = crate::util::now_ms();
        let samples = rt.maxmemory_samples();
        // Bounded, so a large drop of maxmemory does not stall this core's clients: the next
        // tick or request goes on.
        let started = Instant::now();
        while mem.used_for_eviction() > target && started.elapsed() < EVICTION_SLICE {
            if !shard.evict_one_any_db(policy, samples, now) {
                break;
            }
            mem.publish(self.id);
        }
    }

    /// Sends a batch to another core and waits for its replies.
    pub async fn send_batch(
        &self,
        core: usize,
        ops: Vec<Op>,
        resp3: bool,
        gated: Option<TxId>,
    ) -> BatchReply {
        let (tx, rx) = oneshot::channel();
        if self
            .senders
            .send_to(
                core,
                CoreMsg::Batch {
                    ops,
                    resp3,
                    reply: tx,
                    tx: gated,
                },
            )
            .await
            .is_err()
        {
            return BatchReply::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Sends one connection batch's ops for slot group `g` to the core hosting it and waits
    /// for their replies (see `replicated::run_batch`).
    pub async fn send_group_batch(
        &self,
        core: usize,
        g: GroupId,
        ops: Vec<Op>,
        resp3: bool,
    ) -> BatchReply {
        let (tx, rx) = oneshot::channel();
        let msg = CoreMsg::Group {
            g,
            ops,
            resp3,
            reply: tx,
        };
        if self.senders.send_to(core, msg).await.is_err() {
            return BatchReply::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Runs the async `f` on core `core` (here if it is this core) and returns its result.
    pub async fn on_core<T: Send + 'static>(
        self: &Rc<Self>,
        core: usize,
        f: impl FnOnce(Rc<Core>) -> LocalBoxFuture<'static, T> + Send + 'static,
    ) -> Option<T> {
        if core == self.id {
            return Some(f(self.clone()).await);
        }
        let (tx, rx) = oneshot::channel();
        let msg = CoreMsg::Task(Box::new(move |c: Rc<Core>| {
            Box::pin(async move {
                let _ = tx.send(f(c).await);
            })
        }));
        if self.senders.send_to(core, msg).await.is_err() {
            return None;
        }
        rx.await.ok()
    }

    /// Sends the async `f` to run on core `core` without waiting for it. When that core's
    /// channel is full, a task here delivers it once there is room: callers rely on it
    /// running (dropping WATCH or blocking registrations, answering an eviction round).
    pub fn spawn_on(
        self: &Rc<Self>,
        core: usize,
        f: impl FnOnce(Rc<Core>) -> LocalBoxFuture<'static, ()> + Send + 'static,
    ) {
        if core == self.id {
            glommio::spawn_local(f(self.clone())).detach();
            return;
        }
        let msg = CoreMsg::Task(Box::new(f));
        if let Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) =
            self.senders.try_send_to(core, msg)
        {
            let me = self.clone();
            glommio::spawn_local(async move {
                // Closed: the server is shutting down.
                let _ = me.senders.send_to(core, msg).await;
            })
            .detach();
        }
    }

    /// As group `g`'s leader (its slots `slots`, on this core), for a node over maxmemory by
    /// `excess` bytes that holds `node_keys` keys: evicts the group's part of the excess (its
    /// share of those keys) by the maxmemory-policy, journaled, and proposes the deletions
    /// like a write, so every replica evicts the same keys and none decides on its own.
    /// Returns the proposal holding the deletions (None: nothing was evicted).
    pub fn evict_in(
        self: &Rc<Self>,
        g: GroupId,
        slots: std::ops::Range<usize>,
        excess: u64,
        node_keys: u64,
    ) -> Option<super::spec::Pid> {
        let rt = &self.shared.config.runtime;
        let policy = evict_policy(rt.maxmemory_policy())?;
        let now = crate::util::now_ms();
        let journal = {
            let mut shard = self.shard.borrow_mut();
            self.sync_settings(&mut shard);
            let mut group_keys = 0u64;
            shard.for_each_db(|shard| {
                group_keys += slots
                    .clone()
                    .map(|s| shard.count_in_slot(s) as u64)
                    .sum::<u64>();
            });
            // At least a key's worth, at most the whole excess (the asker counted its keys a
            // moment ago, and may hold fewer of this group's than this leader does).
            let bytes = (excess as u128 * group_keys as u128 / node_keys.max(1) as u128)
                .clamp(1, excess.max(1) as u128) as u64;
            let in_group = |k: &[u8]| slots.contains(&(crate::cluster::key_slot(k) as usize));
            // Each numbered database gives its share of the bytes, by its share of the keys.
            let total = shard.total_len().max(1) as u64;
            let mut victims = Vec::new();
            shard.for_each_db(|shard| {
                let share = (bytes as u128 * shard.len() as u128 / total as u128) as u64;
                let samples = rt.maxmemory_samples();
                let picked = shard.pick_victims(policy, samples, now, &in_group, share, 512);
                victims.extend(picked.into_iter().map(|k| (shard.db(), k)));
            });
            if victims.is_empty() {
                return None;
            }
            shard.start_journal();
            for (db, key) in &victims {
                shard.select(*db);
                shard.evict_decided(key);
            }
            shard.select(0);
            if let Some(j) = shard.journal_mut() {
                j.close_unit();
            }
            shard.take_journal().unwrap_or_default()
        };
        crate::metrics::memory::flush_thread_cache();
        super::replicated::absorb(self, g, journal, now)
    }

    /// Whether writes that may grow memory (DENYOOM) are refused now in cluster mode, as a
    /// leader checks before evaluating them: over maxmemory with noeviction, or over it by
    /// more than an eighth with an evicting policy (the evictions, which go through the log,
    /// have not kept up). Over the limit with an evicting policy also asks the leaders to
    /// evict.
    pub fn refuse_growth(self: &Rc<Self>) -> bool {
        if self.over_limit().is_some()
            && evict_policy(self.shared.config.runtime.maxmemory_policy()).is_some()
        {
            crate::cluster::evict::pressure(self);
        }
        self.growth_refused()
    }

    /// [`Core::refuse_growth`]'s verdict, without asking the leaders to evict.
    pub fn growth_refused(&self) -> bool {
        let Some((used, limit)) = self.over_limit() else {
            return false;
        };
        evict_policy(self.shared.config.runtime.maxmemory_policy()).is_none()
            || used > limit + limit / 8
    }

    /// Whether memory is out for commands that may grow it, as Valkey decides before running
    /// a command (`performEvictions` failing): standalone, over `maxmemory` once this core
    /// tried to evict; in a cluster, [`Core::refuse_growth`]'s verdict.
    pub fn out_of_memory(self: &Rc<Self>) -> bool {
        if self.shared.config.runtime.maxmemory() == 0 {
            return false;
        }
        if self.shared.config.cluster.enabled {
            return self.refuse_growth();
        }
        let Ok(mut shard) = self.shard.try_borrow_mut() else {
            return false;
        };
        !self.make_room(&mut shard, crate::util::now_ms())
    }

    /// (used, limit) when this node's memory is over `maxmemory` (set).
    pub fn over_limit(&self) -> Option<(u64, u64)> {
        let limit = self.shared.config.runtime.maxmemory();
        if limit == 0 {
            return None;
        }
        if let Some(host) = self.host() {
            host.publish_raft_buffers(self);
        }
        let mem = &self.shared.memory;
        mem.publish(self.id);
        let used = mem.used_for_eviction();
        (used > limit).then_some((used, limit))
    }

    /// Runs `f` on core `core` (here if it is this core) and returns its result.
    pub async fn call<T: Send + 'static>(
        self: &Rc<Self>,
        core: usize,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Option<T> {
        self.call_as(core, None, f).await
    }

    /// `call` as part of gated transaction `gated` (None: an ordinary call, which waits while
    /// another transaction holds that core's gate). A transaction's call answers at once: the
    /// transaction waits for durability once, at its end (`durable_barrier`).
    pub async fn call_as<T: Send + 'static>(
        self: &Rc<Self>,
        core: usize,
        gated: Option<TxId>,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Option<T> {
        if core == self.id {
            self.gate.wait_open(gated).await;
            return Some(f(self));
        }
        let (tx, rx) = oneshot::channel();
        let msg = CoreMsg::Call(
            Box::new(move |c: &Core| {
                let before = c.change_count();
                let v = f(c);
                c.finish();
                if gated.is_some() {
                    let _ = tx.send(v);
                    return;
                }
                c.when_durable(before, move || {
                    let _ = tx.send(v);
                });
            }),
            gated,
        );
        if self.senders.send_to(core, msg).await.is_err() {
            return None;
        }
        rx.await.ok()
    }

    /// Serves messages from the other cores until they hang up.
    pub fn spawn_receivers(self: &Rc<Self>, mut receivers: Receivers<CoreMsg>) {
        for (_peer, mut stream) in receivers.streams() {
            let core = self.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = stream.next().await {
                    match msg {
                        CoreMsg::Batch {
                            ops,
                            resp3,
                            reply,
                            tx,
                        } => {
                            if core.gate.blocks(tx) {
                                let c = core.clone();
                                core.gate
                                    .park(Box::new(move || c.run_batch_msg(ops, resp3, reply, tx)));
                                continue;
                            }
                            core.run_batch_msg(ops, resp3, reply, tx);
                        }
                        CoreMsg::Call(f, tx) => {
                            if core.gate.blocks(tx) {
                                let c = core.clone();
                                core.gate.park(Box::new(move || c.run_call(f)));
                                continue;
                            }
                            core.run_call(f);
                        }
                        CoreMsg::Task(f) => {
                            // Started now, in arrival order (bus requests forwarded here
                            // rely on it), and run on as a task of its own.
                            glommio::spawn_local(f(core.clone())).detach();
                        }
                        CoreMsg::Group {
                            g,
                            ops,
                            resp3,
                            reply,
                        } => {
                            let core = core.clone();
                            glommio::spawn_local(async move {
                                let r = super::replicated::run_batch(&core, g, ops, resp3).await;
                                let _ = reply.send(r);
                            })
                            .detach();
                        }
                    }
                }
            })
            .detach();
        }
    }

    fn run_call(&self, f: Box<dyn FnOnce(&Core) + Send>) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            tracing::error!("a cross-core call panicked; its caller gets no reply");
        }
    }

    /// Runs a batch another core sent and answers it (once durable, unless it is part of a
    /// gated transaction, which waits for durability once at its end).
    fn run_batch_msg(
        self: &Rc<Self>,
        ops: Vec<Op>,
        resp3: bool,
        reply: oneshot::Sender<BatchReply>,
        tx: Option<TxId>,
    ) {
        let before = self.change_count();
        let now = self.prepare();
        let ends = Vec::with_capacity(ops.len());
        match self.execute_or_pause(ops, now, Out::new(resp3), ends, tx) {
            Executed::Done(ops, out, ends) => self.answer_batch(ops, out, ends, before, reply, tx),
            paused => {
                // Its script paused, holding the gate: later messages wait for it.
                let core = self.clone();
                glommio::spawn_local(async move {
                    let (ops, out, ends) = paused.done().await;
                    // The next batch may have started meanwhile and its script paused, holding
                    // the shard: answering reads the shard's change count, so it waits.
                    core.gate.wait_open(tx).await;
                    core.answer_batch(ops, out, ends, before, reply, tx);
                })
                .detach();
            }
        }
    }

    /// Answers a batch another core sent, once it ran.
    fn answer_batch(
        self: &Rc<Self>,
        ops: Vec<Op>,
        out: Out,
        ends: Vec<usize>,
        before: u64,
        reply: oneshot::Sender<BatchReply>,
        tx: Option<TxId>,
    ) {
        let resp3 = out.resp3;
        self.finish();
        if self.pending_replicated() {
            // Fan-out reads (KEYS, SCAN, DBSIZE...) and READONLY reads saw this core's whole
            // shard, uncommitted writes included: their replies wait until those commit.
            let core = self.clone();
            glommio::spawn_local(async move {
                let r = match super::replicated::settle_all(&core).await {
                    Ok(()) => BatchReply { buf: out.buf, ends },
                    Err(why) => super::replicated::refused_all(&core, &ops, &why, resp3),
                };
                let _ = reply.send(r);
            })
            .detach();
            return;
        }
        if tx.is_some() {
            let _ = reply.send(BatchReply { buf: out.buf, ends });
            return;
        }
        self.when_durable(before, move || {
            let _ = reply.send(BatchReply { buf: out.buf, ends });
        });
    }
}

/// The longest one background eviction pass runs.
const EVICTION_SLICE: std::time::Duration = std::time::Duration::from_millis(5);

/// The shard's eviction policy for a maxmemory-policy (None for noeviction).
pub fn evict_policy(p: MaxmemoryPolicy) -> Option<EvictPolicy> {
    Some(match p {
        MaxmemoryPolicy::NoEviction => return None,
        MaxmemoryPolicy::AllKeysLru => EvictPolicy::AllKeysLru,
        MaxmemoryPolicy::VolatileLru => EvictPolicy::VolatileLru,
        MaxmemoryPolicy::AllKeysLfu => EvictPolicy::AllKeysLfu,
        MaxmemoryPolicy::VolatileLfu => EvictPolicy::VolatileLfu,
        MaxmemoryPolicy::AllKeysRandom => EvictPolicy::AllKeysRandom,
        MaxmemoryPolicy::VolatileRandom => EvictPolicy::VolatileRandom,
        MaxmemoryPolicy::VolatileTtl => EvictPolicy::VolatileTtl,
    })
}

#[cfg(test)]
mod batch_reply_tests {
    use super::BatchReply;

    #[test]
    fn replies_are_cut_at_their_ends() {
        let r = BatchReply {
            buf: b"+OK\r\n$1\r\na\r\n:1\r\n".to_vec(),
            ends: vec![5, 5, 12, 16],
        };
        assert_eq!(r.reply(0), b"+OK\r\n");
        assert_eq!(r.reply(1), b"");
        assert_eq!(r.reply(2), b"$1\r\na\r\n");
        assert_eq!(r.reply(3), b":1\r\n");
    }

    #[test]
    fn offsets_past_four_gib_are_kept_as_they_are() {
        // A batch whose replies pass u32::MAX bytes: a 32-bit offset would wrap to a small
        // number and hand out the wrong bytes (measuring it would take 4 GiB of replies).
        let past = u32::MAX as usize + 6;
        let r = BatchReply {
            buf: Vec::new(),
            ends: vec![u32::MAX as usize, past],
        };
        assert_eq!(r.ends[1] - r.ends[0], 6);
        assert_ne!(r.ends[1], past as u32 as usize);
    }
}
