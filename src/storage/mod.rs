//! Durable state on fjall: the current value and absolute expiry of every key.
//!
//! Layout of a data directory (`dir`):
//!
//! ```text
//! dir/tallykv.db/     the live fjall database
//! dir/snapshot/       the last SAVE/BGSAVE: itself a complete data directory
//! ```
//!
//! The database holds a `meta` keyspace (format version, slot-group count) and one keyspace
//! per slot group: slots `[g*16384/G, (g+1)*16384/G)` live in keyspace `g{g}`, keyed by slot
//! then key (see [`codec`]). Keyspaces follow slot groups, not cores, so a restart with a
//! different `--threads` reads the same files, and the Raft cluster can give each slot group
//! its own keyspace (dropping a group whose replica moved away is dropping a keyspace).
//! The `raft` keyspace holds the cluster's state-machine records, keyed
//! `[group u16 BE][tag u8]..` (a slot group's applied mark, the cluster map, this node's id),
//! written through [`Batch::raft`] in the same atomic batch as the data they describe. The Raft
//! logs themselves are not here: each core writes its groups' log to a write-ahead log of its
//! own ([`wal`]), from the core's thread. (Tags below 0x10 held the 0.9-based cluster's log.)
//! The numbered databases other than 0 (SELECT) live in the `dbs` keyspace, keyed by
//! database (u32 BE), slot, key; a [`Batch`] item names one with [`codec::DB_MARKER`].
//! The `deltas` keyspace holds the changes of large values since their last full write
//! (see [`codec`]), keyed by slot first like the groups, so a slot range covers both.
//! Node-wide records use the group prefix 0xFFFF: this node's cluster id (tag 0x23, see
//! `cluster::meta`), the function libraries ([`FUNCTIONS_RECORD`], tag 0x24), which are
//! part of the data set: SAVE copies them with the keys, and in a cluster the ACL users its
//! meta group committed ([`USERS_RECORD`], tag 0x25), which are not (Valkey's RDB holds no
//! users either).
//!
//! fjall blocks, so nothing here runs on a glommio core. Cores send [`Batch`]es to one writer
//! thread; it commits everything queued as one atomic fjall batch and, for
//! `appendfsync always`, fsyncs once for all of them before completing their tickets (group
//! commit). `everysec` syncs at most a second after a write; `no` leaves it to the OS.
//! Loading runs on one thread per core, each reading that core's slot ranges.

pub mod at_rest;
pub mod codec;

/// Tags of the `raft` keyspace's state-machine records start here.
pub const FIRST_STATE_MACHINE_TAG: u8 = 0x10;

/// The node's function libraries (FUNCTION LOAD), one node-wide record of the `raft` keyspace
/// in the format `engine::libraries` gives it; written standalone by the FUNCTION commands, in
/// a cluster with the meta group's state.
pub const FUNCTIONS_RECORD: [u8; 3] = [0xFF, 0xFF, 0x24];

/// A cluster node's ACL users as its meta group committed them, one node-wide record of the
/// `raft` keyspace in the format `engine::users` gives it, written with the meta group's
/// state; absent while the node enforces its configured users.
pub const USERS_RECORD: [u8; 3] = [0xFF, 0xFF, 0x25];
mod rotation;
mod snapshot;
pub mod wal;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use futures::channel::oneshot;

use crate::cluster::SLOT_COUNT;
use crate::config::AppendFsync;

/// Keyspaces per database, fixed when the database is created (stored in `meta`).
const DEFAULT_GROUPS: usize = 16;
const DB_DIR: &str = "tallykv.db";
/// The keyspace of every slot group's Raft log, vote and state-machine bookkeeping.
const RAFT_KEYSPACE: &str = "raft";
/// The keyspace of large values' deltas (see [`codec`]).
const DELTAS_KEYSPACE: &str = "deltas";
/// The keyspace of the numbered databases other than 0 (SELECT), keyed by database (u32 BE),
/// slot, key ([`codec::db_slot_prefix`]); values as in the groups' keyspaces.
const DBS_KEYSPACE: &str = "dbs";
pub const SNAPSHOT_DIR: &str = "snapshot";
/// Queued batches the writer takes into one commit at most.
const MAX_MSGS_PER_COMMIT: usize = 4096;

/// One key's new state: its stored value, or None when the key is gone.
pub struct Item {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Item {
    fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 64
    }
}

impl Batch {
    /// What this batch counts against the writer's queue ([`MAX_BACKLOG_BYTES`]).
    fn backlog_bytes(&self) -> usize {
        let items = self.items.iter().chain(&self.raft).chain(&self.deltas);
        items.map(Item::bytes).sum::<usize>() + self.delta_gc.len() * 64
    }
}

/// Queued bytes past which writers wait for the disk. Under `everysec` the queue is what a
/// kill -9 can lose, so it stays well under a second of the writer's throughput (~30 MB/s).
const MAX_BACKLOG_BYTES: u64 = 8 * 1024 * 1024;

/// (key, value) pairs read back from the database.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Old deltas of a key to delete: every delta stored under `prefix` (the key's delta
/// prefix, [`codec::encode_delta_prefix`]) whose epoch is not `keep`. Only tidying: loading
/// ignores deltas of another epoch than their base's, so one missed here does no harm.
pub struct DeltaGc {
    pub prefix: Vec<u8>,
    pub keep: Option<u64>,
}

/// The changes of one core's event-loop turn.
#[derive(Default)]
pub struct Batch {
    /// Slots whose keys are all deleted first (FLUSHALL on that core).
    pub wipe: Option<Range<usize>>,
    /// The same for numbered databases other than 0: (database, slots).
    pub wipe_dbs: Vec<(u32, Range<usize>)>,
    pub items: Vec<Item>,
    /// Writes to the `raft` keyspace (state-machine keys, tag >= 0x10: see the module doc),
    /// committed atomically with `items`.
    pub raft: Vec<Item>,
    /// New deltas of large values (stored keys from [`codec::encode_delta_key`]).
    pub deltas: Vec<Item>,
    /// Deltas left behind by values rewritten or deleted in this batch.
    pub delta_gc: Vec<DeltaGc>,
    /// Completed once the batch is durable (appendfsync always).
    pub done: Option<oneshot::Sender<()>>,
}

type Callback = Box<dyn FnOnce(Result<(), String>) + Send>;

enum WriteMsg {
    Batch(Box<Batch>),
    /// Runs once everything queued before it is committed (and synced). Barriers that arrive
    /// together share one fsync.
    Barrier(Callback),
    /// Takes a snapshot of everything queued before it and writes it out on its own thread.
    Snapshot(Callback),
    /// Re-seals values under the active at-rest key (rotation): each (keyspace, stored key,
    /// stored value as the rotation read it) is rewritten only if the value is still that
    /// one, so a write that came meanwhile is never undone. The callback gets the count.
    Reseal(
        Vec<(Space, Vec<u8>, fjall::Slice)>,
        Box<dyn FnOnce(u64) + Send>,
    ),
}

/// Which keyspace a stored value lives in: part of its at-rest associated data, with its
/// stored key, so a sealed value moved to another key or keyspace does not open.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Space {
    Data = 0,
    Dbs = 1,
    Deltas = 2,
    Raft = 3,
}

/// The at-rest associated data of the value stored under `key` in `space`.
fn value_aad(space: Space, key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(space as u8);
    out.extend_from_slice(key);
}

/// Figures for INFO persistence; written by the writer and snapshot threads.
#[derive(Default)]
pub struct PersistStats {
    pub commits: AtomicU64,
    pub keys_written: AtomicU64,
    /// Deltas of large values written (see [`codec`]).
    pub deltas_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_us_total: AtomicU64,
    pub fsync_us_last: AtomicU64,
    pub fsync_us_max: AtomicU64,
    /// Pending changes since the last snapshot (Valkey's rdb_changes_since_last_save).
    pub changes_since_save: AtomicU64,
    pub bgsave_in_progress: AtomicBool,
    pub compaction_in_progress: AtomicBool,
    pub last_bgsave_ok: AtomicBool,
    pub last_save_unix: AtomicU64,
    pub last_save_duration_ms: AtomicU64,
    pub last_save_keys: AtomicU64,
    pub save_keys_processed: AtomicU64,
    pub save_keys_total: AtomicU64,
    pub saves: AtomicU64,
    /// Unix seconds of the last successful everysec sync (Valkey's aof_last_fsync-ish).
    pub last_fsync_unix: AtomicU64,
}

pub struct Storage {
    db: Database,
    /// Format version, group count and the at-rest records (see `rotation`).
    meta: Keyspace,
    groups: Vec<Keyspace>,
    raft: Keyspace,
    deltas: Keyspace,
    dbs: Keyspace,
    dir: PathBuf,
    tx: Mutex<Option<Sender<WriteMsg>>>,
    /// Bytes sent to the writer and not yet committed.
    backlog_bytes: AtomicU64,
    fsync_mode: Box<dyn Fn() -> AppendFsync + Send + Sync>,
    /// The node's keys for encryption at rest (`encryption-at-rest-key-file`), if on.
    at_rest: Option<Arc<at_rest::AtRest>>,
    /// Encryption at rest was turned on for a dir holding plaintext values that the
    /// background pass has not sealed yet: loading accepts them until it has.
    plaintext_ok: AtomicBool,
    /// Rotation passes of other parts of the disk state (the cluster's snapshot files), run
    /// by the rotation thread after its own.
    reseal_passes: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// Wakes the rotation thread after a reload (see `rotation`).
    reseal_wake: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    pub stats: PersistStats,
}

/// Fails when another process holds the lock of the database under `dir` (fjall takes the
/// same lock when it opens; this check only reports it before anything else starts).
pub fn check_not_locked(dir: &Path) -> Result<(), String> {
    let lock = dir.join(DB_DIR).join("lock");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
    else {
        return Ok(()); // no database yet, or unreadable: open() reports the real error
    };
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Err(in_use(dir)),
        _ => Ok(()),
    }
}

fn in_use(dir: &Path) -> String {
    format!(
        "dir {} is in use by another tallykv-server (its lock file is held); \
         give each server its own dir",
        dir.display()
    )
}

/// An error from fjall, with the directory it concerns.
fn db_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl Storage {
    /// Opens (creating if needed) the database under `dir` and starts its writer thread.
    /// `fsync_mode` reads the current appendfsync setting (CONFIG SET may change it).
    pub fn open(
        dir: &Path,
        fsync_mode: Box<dyn Fn() -> AppendFsync + Send + Sync>,
        at_rest: Option<Arc<at_rest::AtRest>>,
    ) -> Result<Arc<Storage>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create dir {}: {e}", dir.display()))?;
        let path = dir.join(DB_DIR);
        let db = Database::builder(&path)
            // The block cache only serves loading and snapshots (reads are served from
            // memory); keep it small so it counts little against maxmemory.
            .cache_size(BLOCK_CACHE_BYTES)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => in_use(dir),
                e => format!(
                    "cannot open the data in {}: {e} (if a file is damaged, restore `{}` \
                     from a snapshot or backup)",
                    path.display(),
                    path.display()
                ),
            })?;
        let groups = open_layout(&db, &path)?;
        // Created on first use, so data directories from before Raft open unchanged.
        let raft = db
            .keyspace(RAFT_KEYSPACE, group_options)
            .map_err(|e| db_err(&path, e))?;
        let deltas = db
            .keyspace(DELTAS_KEYSPACE, group_options)
            .map_err(|e| db_err(&path, e))?;
        let dbs = db
            .keyspace(DBS_KEYSPACE, group_options)
            .map_err(|e| db_err(&path, e))?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(|e| db_err(&path, e))?;
        let plaintext_ok = rotation::check_keys(
            &db,
            &meta,
            groups.iter().chain([&raft, &deltas, &dbs]),
            at_rest.as_deref(),
            &path,
        )?;
        let (tx, rx) = std::sync::mpsc::channel();
        let storage = Arc::new(Storage {
            db,
            meta,
            groups,
            raft,
            deltas,
            dbs,
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            backlog_bytes: AtomicU64::new(0),
            fsync_mode,
            at_rest,
            plaintext_ok: AtomicBool::new(plaintext_ok),
            reseal_passes: Mutex::new(Vec::new()),
            reseal_wake: Mutex::new(None),
            stats: PersistStats {
                last_bgsave_ok: AtomicBool::new(true),
                ..Default::default()
            },
        });
        let writer = storage.clone();
        std::thread::Builder::new()
            .name("tallykv-writer".into())
            .spawn(move || {
                crate::metrics::memory::bind_storage_arena();
                writer.run_writer(rx)
            })
            .map_err(|e| format!("cannot start the storage writer: {e}"))?;
        rotation::start(&storage)?;
        Ok(storage)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a rotation pass the rotation thread runs after its own (each reports its part
    /// done to [`at_rest::AtRest::part_done`] itself).
    pub fn add_reseal_pass(&self, pass: impl Fn() + Send + Sync + 'static) {
        let mut passes = self.reseal_passes.lock().unwrap_or_else(|e| e.into_inner());
        passes.push(Box::new(pass));
    }

    /// The node's keys for encryption at rest, when `encryption-at-rest-key-file` is set: the
    /// Raft logs and snapshot files seal with them too.
    pub fn at_rest(&self) -> Option<&Arc<at_rest::AtRest>> {
        self.at_rest.as_ref()
    }

    /// Bytes the database occupies on disk.
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// Memory fjall holds for writes and reads: memtables (active and sealed) as allocated
    /// in the storage arena (with the Raft log's and bus's buffers, see
    /// [`crate::metrics::memory::bind_storage_arena`]) — fjall's own estimate if that arena
    /// cannot be read — and the block cache's current contents.
    pub fn memory_bytes(&self) -> u64 {
        let writes = crate::metrics::memory::storage_arena_allocated()
            .unwrap_or_else(|| self.db.write_buffer_size());
        writes + self.db.cache_size()
    }

    /// Approximate number of stored keys (for loading progress).
    pub fn approximate_len(&self) -> u64 {
        let groups: u64 = self.groups.iter().map(|g| g.approximate_len() as u64).sum();
        groups + self.dbs.approximate_len() as u64
    }

    fn group_of(&self, slot: usize) -> usize {
        slot * self.groups.len() / SLOT_COUNT
    }

    /// Hands `msg` to the writer, or back when the writer is gone: that happens only after a
    /// fatal error (which exits the process) or during shutdown; either way nothing more may
    /// be acknowledged as stored.
    fn try_send(&self, msg: WriteMsg) -> Result<(), WriteMsg> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(msg).map_err(|e| e.0),
            None => Err(msg),
        }
    }

    fn send(&self, msg: WriteMsg) {
        if self.try_send(msg).is_err() {
            tracing::error!("storage writer is not running; a write was not persisted");
        }
    }

    /// Queues one core's changes for the next commit.
    pub fn write(&self, batch: Batch) {
        self.backlog_bytes
            .fetch_add(batch.backlog_bytes() as u64, Relaxed);
        self.send(WriteMsg::Batch(Box::new(batch)));
    }

    /// Whether more is queued for the writer than it should hold in memory: writers then
    /// wait for their batches (backpressure) instead of growing the queue without bound.
    pub fn backlogged(&self) -> bool {
        self.backlog_bytes.load(Relaxed) > MAX_BACKLOG_BYTES
    }

    /// Calls `done` once everything queued so far is committed and synced to disk (with an
    /// error if the writer has stopped). Syncs requested together share one fsync.
    pub fn sync(&self, done: impl FnOnce(Result<(), String>) + Send + 'static) {
        if let Err(WriteMsg::Barrier(done)) = self.try_send(WriteMsg::Barrier(Box::new(done))) {
            done(Err("the storage writer is not running".into()));
        }
    }

    /// Resolves once everything queued so far is committed and synced to disk ([`sync`] as
    /// a future).
    ///
    /// [`sync`]: Storage::sync
    pub async fn synced(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.sync(move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .unwrap_or_else(|_| Err("the storage writer dropped a sync request".into()))
    }

    /// The value of `key` in the `raft` keyspace, as last committed (a [`Batch`] still queued
    /// for the writer is not visible yet).
    pub fn raft_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let v = (self.raft.get(key)).map_err(|e| db_err(self.raft.path(), e))?;
        v.map(|v| Ok(self.open_value(Space::Raft, key, v)?.to_vec()))
            .transpose()
    }

    /// Every committed (key, value) of the `raft` keyspace whose key starts with `prefix`, in
    /// key order.
    pub fn raft_scan(&self, prefix: &[u8]) -> Result<KeyValues, String> {
        self.raft
            .prefix(prefix)
            .map(|guard| {
                let (k, v) = guard
                    .into_inner()
                    .map_err(|e| db_err(self.raft.path(), e))?;
                let v = self.open_value(Space::Raft, &k, v)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Writes a point-in-time snapshot of everything queued so far into `dir/snapshot`
    /// (through a temporary directory and a rename) on a background thread; `done` gets the
    /// outcome. Refused while another snapshot runs.
    pub fn snapshot(&self, done: impl FnOnce(Result<(), String>) + Send + 'static) -> bool {
        if self.stats.bgsave_in_progress.swap(true, Relaxed) {
            return false;
        }
        self.send(WriteMsg::Snapshot(Box::new(done)));
        true
    }

    /// Compacts every keyspace on a background thread (BGREWRITEAOF); false if one runs.
    pub fn compact_in_background(self: &Arc<Self>) -> bool {
        if self.stats.compaction_in_progress.swap(true, Relaxed) {
            return false;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("tallykv-compact".into())
            .spawn(move || {
                let started = Instant::now();
                // The raft keyspace too: it is where purged log prefixes leave tombstones.
                for ks in me.groups.iter().chain([&me.raft, &me.deltas, &me.dbs]) {
                    if let Err(e) = ks.major_compact() {
                        tracing::error!("compaction of {} failed: {e}", ks.path().display());
                    }
                }
                tracing::info!(
                    "Background compaction finished in {} ms",
                    started.elapsed().as_millis()
                );
                me.stats.compaction_in_progress.store(false, Relaxed);
            });
        if spawned.is_err() {
            self.stats.compaction_in_progress.store(false, Relaxed);
            return false;
        }
        true
    }

    /// Stops the writer after it has committed and synced everything queued; blocks until
    /// then (bounded by `timeout`).
    pub fn close(&self, timeout: Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.sync(move |r| {
            let _ = tx.send(r);
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("final sync failed: {e}"),
            Err(_) => tracing::error!("final sync did not finish within {timeout:?}"),
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Write the memtables out as tables so the next start reads tables instead of
        // replaying the journal (the slow part of opening: ~2.5 s per 70 MB here).
        // Best effort and bounded: everything is already synced in the journal, and fjall's
        // wait spins forever if its flush worker has died (e.g. the dir was removed).
        let started = Instant::now();
        let keyspaces: Vec<Keyspace> = (self.groups.iter())
            .chain([&self.raft, &self.deltas])
            .cloned()
            .collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let flusher = std::thread::Builder::new()
            .name("tallykv-close".into())
            .spawn(move || {
                for ks in keyspaces {
                    if let Err(e) = ks.rotate_memtable_and_wait() {
                        tracing::warn!("flushing {} at shutdown: {e}", ks.path().display());
                    }
                }
                let _ = done_tx.send(());
            });
        match flusher.map(|_| done_rx.recv_timeout(timeout)) {
            Ok(Ok(())) => tracing::info!(
                "storage flushed to tables in {} ms",
                started.elapsed().as_millis()
            ),
            _ => tracing::warn!(
                "storage tables not flushed within {timeout:?}: the next start replays the \
                 journal instead"
            ),
        }
    }

    /// Reads every stored key of `slots` in slot order, handing chunks of raw (key, value)
    /// pairs to `emit`; stops early when `emit` returns false.
    pub fn load_slots(
        &self,
        slots: Range<usize>,
        emit: impl FnMut(Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        self.scan_slots(None, slots, emit)
    }

    /// Reads every stored delta of `slots` (after [`Storage::load_slots`]: they apply on top
    /// of the values), in key order, so a key's deltas come in sequence order; in chunks.
    pub fn load_deltas(
        &self,
        slots: Range<usize>,
        mut emit: impl FnMut(Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        const CHUNK: usize = 1024;
        let lo = codec::slot_prefix(slots.start);
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = if slots.end >= SLOT_COUNT {
            Box::new(self.deltas.range(lo..))
        } else {
            Box::new(self.deltas.range(lo..codec::slot_prefix(slots.end)))
        };
        let mut chunk = Vec::with_capacity(CHUNK);
        for guard in iter {
            let (k, v) = guard
                .into_inner()
                .map_err(|e| db_err(self.deltas.path(), e))?;
            let v = self.open_value(Space::Deltas, &k, v)?;
            chunk.push((k, v));
            if chunk.len() == CHUNK && !emit(std::mem::take(&mut chunk)) {
                return Ok(());
            }
        }
        if !chunk.is_empty() {
            emit(chunk);
        }
        Ok(())
    }

    /// The keyspace directory holding deltas (for error messages).
    pub fn deltas_path(&self) -> PathBuf {
        self.deltas.path().to_path_buf()
    }

    /// Calls `done` with a point-in-time read view taken once everything queued for the
    /// writer so far is committed (a Raft group's snapshot: its cores flushed first).
    pub fn view_after_queued(
        self: &Arc<Self>,
        done: impl FnOnce(Result<fjall::Snapshot, String>) + Send + 'static,
    ) {
        let me = self.clone();
        self.sync(move |r| done(r.map(|()| me.db.snapshot())));
    }

    /// Every stored (key, value) of `slots` in `view`, in key order, in chunks.
    pub fn read_slots_at(
        &self,
        view: &fjall::Snapshot,
        slots: Range<usize>,
        emit: impl FnMut(Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        self.scan_slots(Some(view), slots, emit)
    }

    fn scan_slots(
        &self,
        view: Option<&fjall::Snapshot>,
        slots: Range<usize>,
        mut emit: impl FnMut(Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        const CHUNK: usize = 4096;
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut g = self.group_of(slots.start);
        while g < self.groups.len() {
            let ks = &self.groups[g];
            let lo = codec::slot_prefix(slots.start);
            let hi = slots.end.min(SLOT_COUNT);
            let iter: Box<dyn Iterator<Item = fjall::Guard>> = match (view, hi == SLOT_COUNT) {
                (None, true) => Box::new(ks.range(lo..)),
                (None, false) => Box::new(ks.range(lo..codec::slot_prefix(hi))),
                (Some(v), true) => Box::new(v.range(ks, lo..)),
                (Some(v), false) => Box::new(v.range(ks, lo..codec::slot_prefix(hi))),
            };
            for guard in iter {
                let (k, v) = guard.into_inner().map_err(|e| db_err(ks.path(), e))?;
                let v = self.open_value(Space::Data, &k, v)?;
                chunk.push((k, v));
                if chunk.len() == CHUNK
                    && !emit(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                {
                    return Ok(());
                }
            }
            g += 1;
            if g < self.groups.len() && g * SLOT_COUNT / self.groups.len() >= slots.end {
                break;
            }
        }
        if !chunk.is_empty() {
            emit(chunk);
        }
        Ok(())
    }

    /// The keyspace directory holding `slot` (for error messages).
    pub fn path_of_slot(&self, slot: usize) -> PathBuf {
        self.groups[self.group_of(slot)].path().to_path_buf()
    }

    fn run_writer(self: Arc<Self>, rx: Receiver<WriteMsg>) {
        let mut unsynced = false;
        let mut last_sync = Instant::now();
        let mut msgs = Vec::new();
        loop {
            let wait = if unsynced {
                Duration::from_secs(1).saturating_sub(last_sync.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(m) => msgs.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while msgs.len() < MAX_MSGS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            let mode = (self.fsync_mode)();
            let mut wrote = false;
            let mut wants_sync = false;
            let mut dones = Vec::new();
            let mut barriers = Vec::new();
            let mut resealed = Vec::new();
            let mut batch = self.db.batch();
            for msg in msgs.drain(..) {
                match msg {
                    WriteMsg::Batch(b) => {
                        let done = self.add_batch(&mut batch, *b);
                        wrote = true;
                        if let Some(d) = done {
                            // Tickets also serve backpressure; only `always` needs the fsync.
                            wants_sync |= mode == AppendFsync::Always;
                            dones.push(d);
                        }
                    }
                    // Deferred to the one commit and fsync below: still after everything
                    // queued before the barrier, and shared by every barrier taken this round.
                    WriteMsg::Barrier(cb) => barriers.push(cb),
                    WriteMsg::Reseal(values, cb) => {
                        // What the rotation read must be compared with what is committed:
                        // commit this round's writes first.
                        self.commit(std::mem::replace(&mut batch, self.db.batch()));
                        let n = self.reseal(&mut batch, values);
                        wrote |= n > 0;
                        resealed.push((cb, n));
                    }
                    WriteMsg::Snapshot(cb) => {
                        self.commit(std::mem::replace(&mut batch, self.db.batch()));
                        let snap = self.db.snapshot();
                        let me = self.clone();
                        std::thread::Builder::new()
                            .name("tallykv-snapshot".into())
                            .spawn(move || {
                                let r = me.write_snapshot(snap);
                                cb(r);
                            })
                            .expect("spawn snapshot thread");
                    }
                }
            }
            self.commit(batch);
            if wrote {
                unsynced = mode != AppendFsync::No;
            }
            let due = unsynced && last_sync.elapsed() >= Duration::from_secs(1);
            if wants_sync || due || !barriers.is_empty() {
                self.sync_now();
                unsynced = false;
                last_sync = Instant::now();
            }
            for d in dones {
                let _ = d.send(());
            }
            for cb in barriers {
                cb(Ok(()));
            }
            for (cb, n) in resealed {
                cb(n);
            }
        }
        tracing::debug!("storage writer stopped");
    }

    /// Adds `b` to the commit being built; returns its ticket.
    fn add_batch(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        b: Batch,
    ) -> Option<oneshot::Sender<()>> {
        self.backlog_bytes
            .fetch_sub(b.backlog_bytes() as u64, Relaxed);
        let Batch {
            wipe,
            wipe_dbs,
            items,
            raft,
            deltas,
            delta_gc,
            done,
        } = b;
        if let Some(slots) = wipe {
            self.wipe(batch, slots);
        }
        for (db, slots) in wipe_dbs {
            self.wipe_db(batch, db, slots);
        }
        let stats = &self.stats;
        let mut aad = Vec::new();
        stats.keys_written.fetch_add(items.len() as u64, Relaxed);
        stats
            .changes_since_save
            .fetch_add((items.len() + deltas.len()) as u64, Relaxed);
        for mut item in items {
            let (ks, space) = if item.key[0] == codec::DB_MARKER {
                item.key.remove(0);
                (&self.dbs, Space::Dbs)
            } else {
                let slot = u16::from_be_bytes([item.key[0], item.key[1]]) as usize;
                (&self.groups[self.group_of(slot)], Space::Data)
            };
            if !fits_fjall(&mut item) {
                continue;
            }
            match item.value {
                Some(v) => {
                    let v = self.seal_value(space, &item.key, v, &mut aad);
                    stats
                        .bytes_written
                        .fetch_add((item.key.len() + v.len()) as u64, Relaxed);
                    batch.insert(ks, item.key, v);
                }
                None => batch.remove(ks, item.key),
            }
        }
        for mut item in deltas {
            if !fits_fjall(&mut item) {
                continue;
            }
            match item.value {
                Some(v) => {
                    stats.deltas_written.fetch_add(1, Relaxed);
                    let v = self.seal_value(Space::Deltas, &item.key, v, &mut aad);
                    stats
                        .bytes_written
                        .fetch_add((item.key.len() + v.len()) as u64, Relaxed);
                    batch.insert(&self.deltas, item.key, v);
                }
                None => batch.remove(&self.deltas, item.key),
            }
        }
        for gc in delta_gc {
            for guard in self.deltas.prefix(&gc.prefix) {
                let Ok(k) = guard.key() else { continue };
                let stale = codec::decode_delta_key(&k).map_or(true, |d| Some(d.epoch) != gc.keep);
                if stale {
                    batch.remove(&self.deltas, k);
                }
            }
        }
        // Raft bookkeeping is not user data: it stays out of the key and change counts.
        for item in raft {
            debug_assert!(
                item.key
                    .get(2)
                    .is_some_and(|&tag| tag >= FIRST_STATE_MACHINE_TAG),
                "Batch::raft may only write state-machine keys"
            );
            match item.value {
                Some(v) => {
                    let v = self.seal_value(Space::Raft, &item.key, v, &mut aad);
                    batch.insert(&self.raft, item.key, v)
                }
                None => batch.remove(&self.raft, item.key),
            }
        }
        done
    }

    /// Deletes every stored key of `slots` (FLUSHALL): part of the same atomic batch as the
    /// writes that follow it.
    fn wipe(&self, batch: &mut fjall::OwnedWriteBatch, slots: Range<usize>) {
        let snap = self.db.snapshot();
        for ks in self.groups.iter().chain([&self.deltas]) {
            let lo = codec::slot_prefix(slots.start);
            let iter: Box<dyn Iterator<Item = fjall::Guard>> = if slots.end >= SLOT_COUNT {
                Box::new(snap.range(ks, lo..))
            } else {
                Box::new(snap.range(ks, lo..codec::slot_prefix(slots.end)))
            };
            for guard in iter {
                match guard.key() {
                    Ok(k) => batch.remove(ks, k),
                    Err(e) => fatal(&db_err(ks.path(), e)),
                }
            }
        }
    }

    /// Deletes every stored key of `slots` in numbered database `db` (FLUSHALL, FLUSHDB,
    /// SWAPDB), in the same atomic batch as the writes that follow it.
    fn wipe_db(&self, batch: &mut fjall::OwnedWriteBatch, db: u32, slots: Range<usize>) {
        let snap = self.db.snapshot();
        let range = codec::db_slot_prefix(db, slots.start)..codec::db_slot_prefix(db, slots.end);
        for guard in snap.range(&self.dbs, range) {
            match guard.key() {
                Ok(k) => batch.remove(&self.dbs, k),
                Err(e) => fatal(&db_err(self.dbs.path(), e)),
            }
        }
    }

    /// Reads every stored key of `slots` in the numbered databases other than 0, database
    /// by database, handing chunks of (database, raw (key, value) pairs) to `emit` (keys
    /// without their database prefix, as [`Storage::load_slots`] gives them).
    pub fn load_db_slots(
        &self,
        slots: Range<usize>,
        emit: impl FnMut(u32, Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        self.scan_db_slots(None, slots, emit)
    }

    /// [`Storage::load_db_slots`] in a point-in-time view (a slot group's snapshot).
    pub fn read_db_slots_at(
        &self,
        view: &fjall::Snapshot,
        slots: Range<usize>,
        emit: impl FnMut(u32, Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        self.scan_db_slots(Some(view), slots, emit)
    }

    fn scan_db_slots(
        &self,
        view: Option<&fjall::Snapshot>,
        slots: Range<usize>,
        mut emit: impl FnMut(u32, Vec<(fjall::Slice, fjall::Slice)>) -> bool,
    ) -> Result<(), String> {
        const CHUNK: usize = 4096;
        let err = |e| db_err(self.dbs.path(), e);
        let range_of = |r: Range<[u8; 6]>| -> Box<dyn Iterator<Item = fjall::Guard>> {
            match view {
                Some(v) => Box::new(v.range(&self.dbs, r)),
                None => Box::new(self.dbs.range(r)),
            }
        };
        let mut db = 1u32;
        loop {
            // The next database holding anything: databases are sparse, and `databases`
            // may be large.
            let from = codec::db_slot_prefix(db, 0)..codec::db_slot_prefix(u32::MAX, SLOT_COUNT);
            let Some(first) = range_of(from).next() else {
                return Ok(());
            };
            db = codec::decode_db(&first.key().map_err(err)?)?.0;
            let range =
                codec::db_slot_prefix(db, slots.start)..codec::db_slot_prefix(db, slots.end);
            let mut chunk = Vec::with_capacity(CHUNK);
            for guard in range_of(range) {
                let (k, v) = guard.into_inner().map_err(err)?;
                let v = self.open_value(Space::Dbs, &k, v)?;
                chunk.push((k.as_ref()[4..].into(), v));
                if chunk.len() == CHUNK
                    && !emit(db, std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                {
                    return Ok(());
                }
            }
            if !chunk.is_empty() && !emit(db, chunk) {
                return Ok(());
            }
            match db.checked_add(1) {
                Some(next) => db = next,
                None => return Ok(()),
            }
        }
    }

    /// `v` as it is stored: sealed under the active at-rest key when encryption at rest is
    /// on (`aad` is scratch space).
    fn seal_value(&self, space: Space, key: &[u8], v: Vec<u8>, aad: &mut Vec<u8>) -> Vec<u8> {
        match &self.at_rest {
            None => v,
            Some(a) => {
                value_aad(space, key, aad);
                a.seal(aad, &v)
            }
        }
    }

    /// The plaintext of the value stored under `key` in `space`. A sealed value read without
    /// the key file, or a plaintext one in a dir whose values are all sealed, is an error:
    /// never handed on as if it were data.
    pub(crate) fn open_value(
        &self,
        space: Space,
        key: &[u8],
        v: fjall::Slice,
    ) -> Result<fjall::Slice, String> {
        let bad = |e: at_rest::OpenError| format!("{}: {e}", self.dir.join(DB_DIR).display());
        match &self.at_rest {
            None if at_rest::is_sealed(&v) => Err(bad(at_rest::OpenError::NoKeyFile(
                at_rest::key_id_of(&v).unwrap_or("?").to_owned(),
            ))),
            None => Ok(v),
            Some(a) if at_rest::is_sealed(&v) => {
                let mut aad = Vec::with_capacity(key.len() + 1);
                value_aad(space, key, &mut aad);
                a.open(&aad, &v).map(fjall::Slice::from).map_err(bad)
            }
            Some(_) if self.plaintext_ok.load(Relaxed) => Ok(v),
            Some(_) => Err(format!(
                "{}: a value is stored in plaintext in a data dir encrypted at rest (was a \
                 file changed?)",
                self.dir.join(DB_DIR).display()
            )),
        }
    }

    /// The writer's half of a rotation step (see [`WriteMsg::Reseal`]); returns how many
    /// values it re-sealed.
    fn reseal(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        values: Vec<(Space, Vec<u8>, fjall::Slice)>,
    ) -> u64 {
        let Some(a) = &self.at_rest else { return 0 };
        let mut aad = Vec::new();
        let mut n = 0;
        for (space, key, read) in values {
            let ks = match space {
                Space::Data => {
                    let slot = u16::from_be_bytes([key[0], key[1]]) as usize;
                    &self.groups[self.group_of(slot)]
                }
                Space::Dbs => &self.dbs,
                Space::Deltas => &self.deltas,
                Space::Raft => &self.raft,
            };
            // Unchanged since the rotation read it? Otherwise a newer write (sealed under the
            // active key already) or a delete stands.
            match ks.get(&key) {
                Ok(Some(now)) if now == read => {}
                Ok(_) => continue,
                Err(e) => fatal(&db_err(ks.path(), e)),
            }
            let plain = match self.open_value(space, &key, read) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("encryption at rest: cannot re-seal a value: {e}");
                    continue;
                }
            };
            value_aad(space, &key, &mut aad);
            batch.insert(ks, key, a.seal(&aad, &plain));
            n += 1;
        }
        a.resealed.fetch_add(n, Relaxed);
        n
    }

    fn commit(&self, batch: fjall::OwnedWriteBatch) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = batch.commit() {
            fatal(&format!(
                "writing to {}: {e}",
                self.dir.join(DB_DIR).display()
            ));
        }
        self.stats.commits.fetch_add(1, Relaxed);
    }

    fn sync_now(&self) {
        let started = Instant::now();
        if let Err(e) = self.db.persist(PersistMode::SyncData) {
            fatal(&format!("syncing {}: {e}", self.dir.join(DB_DIR).display()));
        }
        let us = started.elapsed().as_micros() as u64;
        let s = &self.stats;
        s.fsyncs.fetch_add(1, Relaxed);
        s.fsync_us_total.fetch_add(us, Relaxed);
        s.fsync_us_last.store(us, Relaxed);
        s.fsync_us_max.fetch_max(us, Relaxed);
        s.last_fsync_unix
            .store(crate::util::now_ms() / 1000, Relaxed);
    }
}

/// Whether `item` is within fjall's limits (keys up to 65535 bytes, values below 4 GiB),
/// which fjall enforces by panicking, on this writer thread, for everyone's writes. Write
/// commands refuse keys longer than [`codec::MAX_KEY_LEN`] and strings longer than
/// `proto-max-bulk-len` (capped at [`codec::MAX_STRING_LEN`]), so this is the last guard, for
/// what those checks cannot see (a collection whose stored form passed 4 GiB): an item with
/// a key too long is dropped (no such key can be stored), one with a value too long becomes
/// a delete, so a restart does not bring back an older value. Both are logged.
fn fits_fjall(item: &mut Item) -> bool {
    if item.key.len() > u16::MAX as usize {
        tracing::error!(
            "a key of {} bytes is longer than storage holds; it is not persisted",
            item.key.len()
        );
        return false;
    }
    if item
        .value
        .as_ref()
        .is_some_and(|v| v.len() > u32::MAX as usize)
    {
        tracing::error!(
            "a value of {} bytes is larger than storage holds; its key is not persisted",
            item.value.as_ref().map_or(0, Vec::len)
        );
        item.value = None;
    }
    true
}

/// A write or sync error: fjall refuses further writes after one (it cannot tell what reached
/// the disk), and a node that kept acknowledging writes it cannot store would lose them. Like
/// Valkey with an AOF write error under `appendfsync always`, stop; a restart recovers from
/// the journal.
fn fatal(msg: &str) -> ! {
    tracing::error!("{msg}; the data directory can no longer be written; exiting");
    eprintln!("tallykv-server: fatal storage error: {msg}");
    std::process::exit(1);
}

/// Options of a slot-group keyspace. Memtables are the bulk of fjall's memory; 8 MiB per
/// group bounds them at 128 MiB for the default 16 groups (see the README on maxmemory).
pub(crate) fn group_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
}

/// Journal bytes past which fjall flushes memtables: bounds the replay after a crash.
pub const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024; // fjall's minimum
pub const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
pub const BLOCK_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Writes the meta keyspace of a new database: format version and group count.
fn write_layout(db: &Database, path: &Path, groups: usize) -> Result<(), String> {
    let meta = db
        .keyspace("meta", KeyspaceCreateOptions::default)
        .map_err(|e| db_err(path, e))?;
    let mut b = db.batch();
    b.insert(&meta, "format", [codec::FORMAT_VERSION]);
    b.insert(&meta, "groups", (groups as u32).to_le_bytes());
    b.commit().map_err(|e| db_err(path, e))?;
    db.persist(PersistMode::SyncAll)
        .map_err(|e| db_err(path, e))
}

/// Checks (or, for a new database, writes) the format version and opens the group keyspaces.
fn open_layout(db: &Database, path: &Path) -> Result<Vec<Keyspace>, String> {
    let meta = db
        .keyspace("meta", KeyspaceCreateOptions::default)
        .map_err(|e| db_err(path, e))?;
    let version = meta.get("format").map_err(|e| db_err(path, e))?;
    let groups = match version {
        None => {
            write_layout(db, path, DEFAULT_GROUPS)?;
            DEFAULT_GROUPS
        }
        Some(v) => {
            if v.as_ref() != [codec::FORMAT_VERSION] {
                return Err(format!(
                    "{}: data format version {:?} is not one this build reads ({}); \
                     was it written by a newer tallykv?",
                    path.display(),
                    v.as_ref(),
                    codec::FORMAT_VERSION
                ));
            }
            let g = meta
                .get("groups")
                .map_err(|e| db_err(path, e))?
                .and_then(|g| <[u8; 4]>::try_from(g.as_ref()).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| {
                    format!(
                        "{}: meta keyspace lacks a valid group count",
                        path.display()
                    )
                })?;
            if g == 0 || g as usize > SLOT_COUNT {
                return Err(format!("{}: invalid group count {g}", path.display()));
            }
            g as usize
        }
    };
    (0..groups)
        .map(|g| {
            db.keyspace(&format!("g{g}"), group_options)
                .map_err(|e| db_err(path, e))
        })
        .collect()
}
