//! Where a core meets storage: handing each turn's changes to the writer, waiting for
//! durability under `appendfsync always`, and loading the shard at startup.
//!
//! The shard records which keys changed; once per event-loop turn (a task spawned behind the
//! turn's other ready tasks) the core encodes those keys' current state and sends one batch
//! to the storage writer. A key written 10,000 times in a turn is encoded and written once.
//! With `always`, every reply that follows a write waits for a ticket: a future completed
//! when the writer has fsynced the batch holding that write (one fsync serves every batch
//! queued meanwhile: group commit). Replies of read-only batches do not wait.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use futures::{SinkExt, StreamExt};

use super::core::Core;
use crate::cluster::key_slot;
use crate::config::AppendFsync;
use crate::shard::deltas::DeltaState;
use crate::shard::{Mutation, Shard};
use crate::storage::{Batch, DeltaGc, Item, Storage, codec};

/// In a cluster, a core hands its pending changes to storage once this many keys are
/// pending (see [`Core::schedule_flush`]; the hand-over encodes every pending key on the
/// core thread, so this bounds that pause)...
pub const CLUSTER_FLUSH_KEYS: usize = 65_536;
/// ...or at least this often.
pub const CLUSTER_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// Completes when the batch it belongs to is durable (Err: the writer is gone).
pub type Ticket = Shared<oneshot::Receiver<()>>;

#[derive(Default)]
pub struct Persist {
    scheduled: Cell<bool>,
    /// The ticket of the changes not yet handed to the writer (made when someone waits).
    next: RefCell<Option<(oneshot::Sender<()>, Ticket)>>,
    /// The ticket of the last batch handed over (covers everything handed over before it:
    /// the writer completes tickets in order).
    last: RefCell<Option<Ticket>>,
}

fn new_ticket() -> (oneshot::Sender<()>, Ticket) {
    let (tx, rx) = oneshot::channel();
    (tx, rx.shared())
}

/// Yields once: the task goes to the back of the run queue, behind this turn's other work.
pub async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

impl Core {
    fn always(&self) -> bool {
        self.shared.config.runtime.appendfsync() == AppendFsync::Always
    }

    /// Arranges for this turn's changes to reach storage (at most one pending task).
    ///
    /// In a cluster, the Raft log is what makes a write durable: storage is the checkpoint
    /// the log is replayed onto at restart (from each group's applied mark). So changes are
    /// handed over in bulk rather than every turn — when many keys are pending, on the tick
    /// every [`CLUSTER_FLUSH_INTERVAL`], before a snapshot and at shutdown — and a key
    /// written many times meanwhile is written once. Over `maxmemory` they go every turn:
    /// the set of pending keys is memory eviction cannot free (it holds the evicted keys
    /// too), and a node evicting to make room must not keep it growing. (Standalone, storage
    /// is the log: every turn.)
    pub fn schedule_flush(&self) {
        let Some(p) = &self.persist else { return };
        // A batch whose script paused holds the shard (see `pause`): it schedules the flush
        // itself once it ends.
        let Ok(shard) = self.shard.try_borrow() else {
            return;
        };
        if p.scheduled.get() || !(shard.has_changes() || self.has_raft_items()) {
            return;
        }
        let pending = shard.pending_changes();
        drop(shard);
        if self.shared.config.cluster.enabled
            && pending < CLUSTER_FLUSH_KEYS
            && self.over_limit().is_none()
        {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        p.scheduled.set(true);
        glommio::spawn_local(async move {
            yield_now().await;
            // Storage never receives half of a gated transaction: hand over once it is done.
            me.gate.wait_open(None).await;
            me.flush_changes();
        })
        .detach();
    }

    /// Hands the shard's pending changes (of every database) to the storage writer now.
    pub fn flush_changes(&self) {
        let Some(p) = &self.persist else { return };
        p.scheduled.set(false);
        let Some(storage) = self.shared.storage() else {
            return;
        };
        let shard = &mut *self.shard.borrow_mut();
        let marks = self.take_raft_items();
        let dbs = shard.changed_dbs();
        if dbs.is_empty() && marks.is_empty() {
            return;
        }
        let mut batch = Batch {
            raft: marks,
            ..Batch::default()
        };
        let rep = self.replicated.borrow();
        let was = shard.db();
        for db in dbs {
            shard.select(db);
            if let Some(changes) = shard.take_changes() {
                encode_changes(shard, &rep.spec, db as u32, changes, &mut batch);
            }
        }
        shard.select(was);
        drop(rep);
        let pair = p.next.borrow_mut().take();
        let wait = self.always() || storage.backlogged();
        let pair = pair.or_else(|| wait.then(new_ticket));
        batch.done = pair.map(|(tx, ticket)| {
            *p.last.borrow_mut() = Some(ticket);
            tx
        });
        storage.write(batch);
    }

    /// The ticket a reply must wait for when records were applied since `before` (a reading
    /// of [`Core::change_count`]): with `appendfsync always`, or when the writer is behind
    /// (backpressure). None when nothing needs waiting.
    pub fn ticket_since(&self, before: u64) -> Option<Ticket> {
        let p = self.persist.as_ref()?;
        // In a cluster a reply waits for the Raft commit instead (see `replicated`).
        if self.shared.config.cluster.enabled {
            return None;
        }
        let backlogged = self.shared.storage().is_some_and(|s| s.backlogged());
        if self.change_count() == before || !(self.always() || backlogged) {
            return None;
        }
        if self.shard.borrow().has_changes() {
            self.schedule_flush();
            let mut next = p.next.borrow_mut();
            Some(next.get_or_insert_with(new_ticket).1.clone())
        } else {
            p.last.borrow().clone()
        }
    }

    pub fn change_count(&self) -> u64 {
        self.shard.borrow().change_count()
    }

    /// Runs `reply` once the records applied since `before` are as durable as appendfsync
    /// promises (at once unless it is `always`).
    pub fn when_durable(&self, before: u64, reply: impl FnOnce() + 'static) {
        match self.ticket_since(before) {
            None => reply(),
            Some(t) => {
                glommio::spawn_local(async move {
                    // A failed ticket means the writer died (the process is exiting): no
                    // reply, so nothing unstored is acknowledged.
                    if t.await.is_ok() {
                        reply();
                    }
                })
                .detach();
            }
        }
    }

    /// Loads this core's slots from storage, then starts recording changes. Connections are
    /// served meanwhile (commands get -LOADING until every core is done).
    pub fn start_loading(self: &Rc<Self>) {
        if self.persist.is_none() {
            return;
        }
        let (tx, mut rx) = futures::channel::mpsc::channel(2);
        let (result_tx, result_rx) = oneshot::channel();
        let runtime = self.shared.config.runtime.clone();
        let core = self.clone();
        glommio::spawn_local(async move {
            // The data dir opens on a thread of its own (see server::run).
            let storage = loop {
                if let Some(s) = core.shared.storage() {
                    break s.clone();
                }
                glommio::timer::sleep(Duration::from_millis(2)).await;
            };
            // A cluster node's slot groups decide which core owns which slots: known once
            // the data dir (and its cluster map) is open.
            let slots = core.shared.slot_map.range(core.id);
            core.shard.borrow_mut().set_owned(slots.clone());
            let reader = storage.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tallykv-load-{}", core.id))
                .spawn(move || {
                    let mut tx = tx;
                    let r = reader.load_slots(slots.clone(), |chunk| {
                        let delay = runtime.key_load_delay() as u64;
                        if delay > 0 {
                            std::thread::sleep(Duration::from_micros(delay * chunk.len() as u64));
                        }
                        futures::executor::block_on(tx.send(Chunk::Values(chunk))).is_ok()
                    });
                    // Large values' later changes, applied on top of the values.
                    let r = r.and_then(|()| {
                        reader.load_deltas(slots.clone(), |chunk| {
                            futures::executor::block_on(tx.send(Chunk::Deltas(chunk))).is_ok()
                        })
                    });
                    // The numbered databases other than 0.
                    let r = r.and_then(|()| {
                        reader.load_db_slots(slots, |db, chunk| {
                            futures::executor::block_on(tx.send(Chunk::DbValues(db, chunk))).is_ok()
                        })
                    });
                    let _ = result_tx.send(r);
                });
            if let Err(e) = spawned {
                fatal_load(&format!("cannot start a loader thread: {e}"));
            }
            // A cluster replica drops nothing on its own: expired keys stay (hidden from
            // reads) until the group's leader deletes them through the log.
            let now = if core.shared.config.cluster.enabled {
                0
            } else {
                crate::util::now_ms()
            };
            let mut expired = Vec::new();
            let mut stale = Vec::new();
            while let Some(chunk) = rx.next().await {
                match chunk {
                    Chunk::Values(chunk) => {
                        let n = chunk.len() as u64;
                        core.load_chunk(&storage, 0, chunk, now, &mut expired);
                        let total = core.shared.loading_keys.fetch_add(n, Relaxed) + n;
                        log_progress(&core, total);
                    }
                    Chunk::DbValues(db, chunk) => {
                        let databases = core.shared.config.effective_databases();
                        if db >= databases {
                            fatal_load(&format!(
                                "the data set holds keys of database {db}, but `databases` is \
                                 {databases}: start with databases {} or more",
                                db as u64 + 1
                            ));
                        }
                        let n = chunk.len() as u64;
                        core.load_chunk(&storage, db, chunk, now, &mut expired);
                        let total = core.shared.loading_keys.fetch_add(n, Relaxed) + n;
                        log_progress(&core, total);
                    }
                    Chunk::Deltas(chunk) => core.load_deltas(&storage, chunk, &mut stale),
                }
                core.shared.memory.publish(core.id);
                glommio::yield_if_needed().await;
            }
            match result_rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fatal_load(&e),
                Err(_) => fatal_load("a loader thread stopped unexpectedly"),
            }
            core.settle_deltas(now, &mut expired);
            if !stale.is_empty() {
                storage.write(Batch {
                    deltas: stale
                        .into_iter()
                        .map(|key| Item { key, value: None })
                        .collect(),
                    ..Batch::default()
                });
            }
            // Keys that expired while the node was down: gone from memory, now from disk.
            if !expired.is_empty() {
                core.shared
                    .loading_expired
                    .fetch_add(expired.len() as u64, Relaxed);
                core.shared.shard_stats[core.id]
                    .expired_keys
                    .add(expired.len() as u64);
                storage.write(Batch {
                    items: expired
                        .into_iter()
                        .map(|key| Item { key, value: None })
                        .collect(),
                    ..Batch::default()
                });
            }
            {
                let mut shard = core.shard.borrow_mut();
                shard.track_changes(true);
                // Standalone, storage is the log: a large value's changes go as deltas.
                shard.use_deltas = !core.shared.config.cluster.enabled;
            }
            core.finish_loading();
        })
        .detach();
    }

    /// Loads a chunk of stored keys of database `db` (their stored form without the database).
    fn load_chunk(
        &self,
        storage: &Storage,
        db: u32,
        chunk: Vec<(fjall::Slice, fjall::Slice)>,
        now: u64,
        expired: &mut Vec<Vec<u8>>,
    ) {
        let mut shard = self.shard.borrow_mut();
        shard.select(db as usize);
        let limits = shard.limits;
        for (k, v) in chunk {
            let decoded = codec::decode_key(&k).and_then(|(slot, key)| {
                let actual = key_slot(key);
                if actual != slot {
                    return Err(format!(
                        "key stored under slot {slot} hashes to slot {actual}"
                    ));
                }
                let (value, expire_at, epoch) = codec::decode_value_at(&v, limits)?;
                Ok((slot, key, value, expire_at, epoch))
            });
            let (slot, key, value, expire_at, epoch) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    let slot = codec::decode_key(&k).map(|(s, _)| s as usize).unwrap_or(0);
                    fatal_load(&format!(
                        "corrupt record in {} (key {:?}): {e}",
                        storage.path_of_slot(slot).display(),
                        String::from_utf8_lossy(&k[2.min(k.len())..])
                    ));
                }
            };
            debug_assert!(shard.owned_slots().contains(&(slot as usize)));
            // A value with deltas is judged once they are applied (one may have removed
            // its expiry): see `settle_deltas`.
            if let Some(epoch) = epoch {
                let state = DeltaState::new(epoch, v.len() as u64);
                shard.delta_keys.insert(key.into(), state);
            } else if expire_at.is_some_and(|at| now > at) {
                let mut stored = Vec::with_capacity(7 + key.len());
                codec::encode_db_key(db, slot, key, &mut stored);
                expired.push(stored);
                continue;
            }
            shard.apply(Mutation::Restore {
                key,
                value,
                expire_at,
            });
        }
        shard.select(0);
    }

    /// Applies a chunk of stored deltas to the values loaded before them; deltas of an
    /// epoch their value no longer has are collected in `stale` (to delete).
    fn load_deltas(
        &self,
        storage: &Storage,
        chunk: Vec<(fjall::Slice, fjall::Slice)>,
        stale: &mut Vec<Vec<u8>>,
    ) {
        let mut shard = self.shard.borrow_mut();
        let limits = shard.limits;
        // Replaying a record is not the event happening again: what it counts (fields that
        // expired, before the restart) stays out of this process's statistics.
        let stats = &self.shared.shard_stats[self.id];
        let counted = [
            &stats.expired_keys,
            &stats.expired_fields,
            &stats.evicted_keys,
        ];
        let before = counted.map(|c| c.get());
        for (k, v) in chunk {
            let corrupt = |e: &dyn std::fmt::Display| -> ! {
                fatal_load(&format!(
                    "corrupt delta in {} (stored key {:?}): {e}",
                    storage.deltas_path().display(),
                    String::from_utf8_lossy(&k)
                ))
            };
            let d = codec::decode_delta_key(&k).unwrap_or_else(|e| corrupt(&e));
            let state = match shard.delta_keys.get(d.key) {
                Some(s) if s.epoch == d.epoch => *s,
                _ => {
                    stale.push(k.to_vec());
                    continue;
                }
            };
            if d.seq != state.next_seq {
                corrupt(&format!(
                    "delta {} follows delta {} of its value (one is missing)",
                    d.seq,
                    state.next_seq as i64 - 1
                ));
            }
            let mut r = crate::shard::mutation::Reader::new(&v);
            while !r.is_empty() {
                let decoded = Mutation::decode(&mut r, limits).unwrap_or_else(|e| corrupt(&e));
                let m = decoded.mutation();
                if m.key() != Some(d.key) {
                    corrupt(&"a record of another key");
                }
                shard.apply(m);
            }
            if let Some(s) = shard.delta_keys.get_mut(d.key) {
                s.next_seq += 1;
                s.delta_bytes += v.len() as u64;
            }
        }
        for (c, n) in counted.iter().zip(before) {
            c.set(n);
        }
    }

    /// Once every delta is applied: values with deltas that are gone (a delta deleted the
    /// value) or expired while the node was down are deleted, on disk too.
    fn settle_deltas(&self, now: u64, expired: &mut Vec<Vec<u8>>) {
        let shard = &mut *self.shard.borrow_mut();
        if shard.delta_keys.is_empty() {
            return;
        }
        let keys: Vec<Box<[u8]>> = shard.delta_keys.keys().cloned().collect();
        for key in keys {
            let gone = match shard.peek_stored(&key) {
                None => true,
                Some(e) if e.expire_at().is_some_and(|at| now > at) => {
                    shard.apply(Mutation::Del { key: &key });
                    true
                }
                Some(_) => false,
            };
            if gone {
                shard.delta_keys.remove(&key);
                let mut stored = Vec::with_capacity(2 + key.len());
                codec::encode_key(key_slot(&key), &key, &mut stored);
                expired.push(stored);
            }
        }
    }

    fn finish_loading(&self) {
        let shared = &self.shared;
        if shared.loading_cores.fetch_sub(1, Relaxed) == 1 {
            let started = LOAD_STARTED.get().copied().unwrap_or_else(Instant::now);
            let secs = started.elapsed().as_secs_f64();
            let keys: usize = shared
                .shard_stats
                .iter()
                .map(|s| s.keys.get() as usize)
                .sum();
            let expired = shared.loading_expired.load(Relaxed);
            tracing::info!(
                "DB loaded from disk: {secs:.3} seconds, {keys} keys ({expired} expired while \
                 down, dropped)"
            );
        }
    }
}

/// Adds what changed in the selected database `db` of `shard` to `batch`: each changed key's
/// current state (as of the last commit for a key a leader's uncommitted proposal changed),
/// or the deltas of a large value. Database 0 only keeps large values as deltas.
fn encode_changes(
    shard: &mut Shard,
    spec: &super::spec::Spec,
    db: u32,
    changes: crate::shard::Changes,
    batch: &mut Batch,
) {
    if changes.flushed {
        match db {
            0 => batch.wipe = Some(shard.owned_slots()),
            _ => batch.wipe_dbs.push((db, shard.owned_slots())),
        }
    }
    let (items, deltas, delta_gc) = (&mut batch.items, &mut batch.deltas, &mut batch.delta_gc);
    for (key, records) in changes.deltas {
        let slot = key_slot(&key);
        let present = shard.peek_stored(&key).is_some();
        match shard.delta_keys.get_mut(&key[..]) {
            // Still there: the turn's records go on top of the stored base.
            Some(state) if present => {
                let mut stored = Vec::with_capacity(16 + key.len());
                codec::encode_delta_key(slot, &key, state.epoch, state.next_seq, &mut stored);
                state.next_seq += 1;
                state.delta_bytes += records.len() as u64;
                deltas.push(Item {
                    key: stored,
                    value: Some(records),
                });
            }
            // Gone (its last element popped): a delete says it more simply.
            _ => {
                let mut stored = Vec::with_capacity(2 + key.len());
                codec::encode_db_key(db, slot, &key, &mut stored);
                items.push(Item {
                    key: stored,
                    value: None,
                });
                forget_deltas(shard, &key, None, delta_gc);
            }
        }
    }
    for key in changes.keys {
        let slot = key_slot(&key);
        let mut stored = Vec::with_capacity(7 + key.len());
        codec::encode_db_key(db, slot, &key, &mut stored);
        // A key a leader's uncommitted proposal changed since is stored as of the last
        // commit (storage never holds what may be undone).
        let value = match spec.committed_image(db, &key) {
            Some(image) => image.as_ref().map(|img| {
                let mut v = Vec::with_capacity(16);
                codec::encode_value(img.value.as_ref(), img.expire_at, &mut v);
                v
            }),
            None => match shard.peek_stored(&key) {
                // A large value: stored under a new epoch, its next changes as deltas.
                Some(e) if shard.use_deltas && db == 0 && crate::shard::deltas::worth_deltas(e) => {
                    let epoch = fastrand::u64(..);
                    let mut v = Vec::with_capacity(24 + e.heap_size());
                    codec::encode_value_at(e.value(), e.expire_at(), Some(epoch), &mut v);
                    let state = DeltaState::new(epoch, v.len() as u64);
                    forget_deltas(shard, &key, Some(state), delta_gc);
                    items.push(Item {
                        key: stored,
                        value: Some(v),
                    });
                    continue;
                }
                Some(e) => {
                    let mut v = Vec::with_capacity(16 + e.heap_size());
                    codec::encode_value(e.value(), e.expire_at(), &mut v);
                    Some(v)
                }
                None => None,
            },
        };
        if !shard.delta_keys.is_empty() {
            forget_deltas(shard, &key, None, delta_gc);
        }
        items.push(Item { key: stored, value });
    }
}

/// Sets (or clears) `key`'s delta state; asks storage to delete the deltas the old state
/// left (any of another epoch than the new one's).
fn forget_deltas(shard: &mut Shard, key: &[u8], new: Option<DeltaState>, gc: &mut Vec<DeltaGc>) {
    let old = match new {
        Some(state) => shard.delta_keys.insert(key.into(), state),
        None => shard.delta_keys.remove(key),
    };
    if old.is_some_and(|s| s.next_seq > 0) {
        let mut prefix = Vec::with_capacity(6 + key.len());
        codec::encode_delta_prefix(key_slot(key), key, &mut prefix);
        gc.push(DeltaGc {
            prefix,
            keep: new.map(|s| s.epoch),
        });
    }
}

/// What a core's loader thread sends it: stored values, then stored deltas (database 0),
/// then the other databases' values.
enum Chunk {
    Values(Vec<(fjall::Slice, fjall::Slice)>),
    Deltas(Vec<(fjall::Slice, fjall::Slice)>),
    DbValues(u32, Vec<(fjall::Slice, fjall::Slice)>),
}

static LOAD_STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
static LOAD_LOGGED_MS: AtomicU64 = AtomicU64::new(0);

/// Marks the start of loading (before any core starts).
pub fn loading_begins(shared: &crate::state::Shared, cores: usize) {
    let _ = LOAD_STARTED.set(Instant::now());
    shared.loading_cores.store(cores, Relaxed);
    shared
        .loading_started_unix
        .store(crate::util::now_ms() / 1000, Relaxed);
    if let Some(s) = shared.storage() {
        shared.loading_expected.store(s.approximate_len(), Relaxed);
    }
}

/// A progress line every few seconds for large data sets (from whichever core gets there).
fn log_progress(core: &Core, total: u64) {
    let Some(started) = LOAD_STARTED.get() else {
        return;
    };
    let ms = started.elapsed().as_millis() as u64;
    let last = LOAD_LOGGED_MS.load(Relaxed);
    if ms < last + 2000
        || LOAD_LOGGED_MS
            .compare_exchange(last, ms, Relaxed, Relaxed)
            .is_err()
    {
        return;
    }
    let rate = total * 1000 / ms.max(1);
    let expected = core.shared.loading_expected.load(Relaxed);
    tracing::info!("Loading: {total} of ~{expected} keys ({rate} keys/s)");
}

fn fatal_load(msg: &str) -> ! {
    tracing::error!("cannot load the data set: {msg}");
    eprintln!("tallykv-server: cannot load the data set: {msg}");
    std::process::exit(1);
}

/// SAVE (`background` false) and BGSAVE [SCHEDULE].
pub async fn snapshot_command(
    core: &Rc<Core>,
    background: bool,
    args: &[bytes::Bytes],
    out: &mut crate::protocol::Out,
) {
    let schedule = match args.get(1) {
        None => false,
        Some(a) if background && args.len() == 2 && crate::command::is(a, "schedule") => true,
        Some(_) => {
            out.error("ERR syntax error");
            return;
        }
    };
    let Some(storage) = core.shared.storage().cloned() else {
        out.error("ERR persistence is off (appendonly no): there is no data dir to save to");
        return;
    };
    if storage.stats.bgsave_in_progress.load(Relaxed) {
        if schedule {
            core.shared.bgsave_scheduled.store(true, Relaxed);
            out.simple("Background saving scheduled");
        } else {
            out.error("ERR Background save already in progress");
        }
        return;
    }
    // Everything applied before this command, on every core, goes into the snapshot.
    for c in 0..core.cores() {
        core.call(c, |c| c.flush_changes()).await;
    }
    if background {
        if storage.snapshot(|_| {}) {
            out.simple("Background saving started");
        } else {
            out.error("ERR Background save already in progress");
        }
        return;
    }
    let (tx, rx) = oneshot::channel();
    if !storage.snapshot(move |r| {
        let _ = tx.send(r);
    }) {
        out.error("ERR Background save already in progress");
        return;
    }
    match rx.await {
        Ok(Ok(())) => out.ok(),
        Ok(Err(e)) => out.error(&format!("ERR {e}")),
        Err(_) => out.error("ERR the snapshot did not finish"),
    }
}

/// Core 0, once a tick: a BGSAVE that was scheduled while another ran, and the `save`
/// rules (snapshot after `seconds` if at least `changes` keys were written meanwhile).
pub fn snapshot_tick(core: &Rc<Core>) {
    let shared = &core.shared;
    let Some(storage) = shared.storage() else {
        return;
    };
    if shared.loading() || storage.stats.bgsave_in_progress.load(Relaxed) {
        return;
    }
    let scheduled = shared.bgsave_scheduled.swap(false, Relaxed);
    let since = crate::util::now_ms() / 1000 - shared.lastsave_unix().min(u64::MAX / 2);
    let changes = storage.stats.changes_since_save.load(Relaxed);
    let due = shared
        .config
        .runtime
        .save_params()
        .iter()
        .any(|&(secs, min_changes)| changes >= min_changes.max(1) && since >= secs);
    if !scheduled && !due {
        return;
    }
    tracing::info!("{} changes in {since} seconds. Saving...", changes);
    let core = core.clone();
    glommio::spawn_local(async move {
        for c in 0..core.cores() {
            core.call(c, |c| c.flush_changes()).await;
        }
        if let Some(storage) = core.shared.storage() {
            storage.snapshot(|_| {});
        }
    })
    .detach();
}
