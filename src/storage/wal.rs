//! A segmented append-only write-ahead log per core, shared by every Raft group the core
//! hosts: TiKV's raft-engine in miniature. It knows no openraft type: entries, votes,
//! committed ids and purged ids are opaque bytes; the `RaftLogStorage` adapter lives above it.
//!
//! ```text
//! dir/00000000000000000001.wal   segments, numbered in the order they were started
//! dir/00000000000000000002.wal   each: a header, a checkpoint, then records (see `record`)
//! ```
//!
//! The core thread that owns a [`Wal`] never waits for the disk:
//! - `append`, `save_vote`, `save_committed`, `truncate_after`, `purge` and `remove_group`
//!   change the in-memory state at once and encode a record into a buffer;
//! - [`Wal::write`], once per event-loop pass, hands the buffer to the kernel with one
//!   `pwrite` at the end of the current segment (a copy into the page cache);
//! - [`Wal::sync`] returns a future that a thread of the log's own completes after an
//!   fdatasync; requests that arrive while one runs share the next (group commit).
//!
//! A segment past `segment_bytes` is closed and the next one starts with a checkpoint of every
//! group, so an older segment matters only for the entries it holds; once none of them is live
//! (purged, truncated, group removed) and the records saying so are synced, it is deleted.
//! Recent entries stay in memory (up to `cache_bytes`, oldest dropped first); older ones are
//! read back with `pread` through an index of where each live entry sits.
//!
//! The contract the Raft adapter builds on:
//! - **Contiguity.** `append(g, i, ..)` is accepted when `i` is one past the group's last
//!   entry; with no entry, one past its purge point; with neither, any `i`. Replacing entries
//!   from `i` on takes `truncate_after(g, Some(i - 1))` first. A purge past the last entry
//!   empties the log (the next append is `upto + 1`); a purge at or below the current purge
//!   point is ignored.
//! - **Visibility.** Every call changes what the getters and `entries` return at once, before
//!   anything is written: a vote read back may not be durable yet.
//! - **Durability.** After `write()` the records are in the kernel (they survive the process,
//!   not the machine). A [`SyncFuture`] from `sync()` resolves once everything `write()` wrote
//!   before `sync()` was called is on disk; records queued but not written are not covered, so
//!   a pass is `write()` then `sync()`. After a machine crash the log comes back as a prefix
//!   of its records, holding at least everything a resolved sync covered.
//! - **Failure.** After a failed write or fdatasync every call fails with
//!   [`WalError::Failed`]: reopen, which replays what really reached the disk.
//! - **Blocking.** `open` blocks (it reads every segment). `entries` may `pread` entries that
//!   left the cache, on the calling thread (usually a page-cache hit). Dropping a `Wal` waits
//!   for the sync round under way, if any; records queued but not written are lost.
//!
//! Encryption at rest (`WalOptions::at_rest`): every entry is sealed (`storage::at_rest`,
//! AES-256-GCM bound to its group and index) as it is queued, straight into the write buffer,
//! and opened when it is read back from a segment; the cache of recent entries holds
//! plaintext. Votes, committed and purged ids and checkpoints stay plaintext: they hold Raft
//! terms, node ids and indexes, no user data. A log written before encryption was on opens
//! with it on (its plaintext entries read as before); a log holding a live sealed entry does
//! not open without the key file, nor with one lacking its key or holding another key under
//! its id: `open` fails with the reason, never returns garbage later.
//!
//! Key rotation: [`Wal::reseal_step`], called now and then, moves the live entries of every
//! segment holding a record under another key than the active one (or in plaintext) into the
//! current segment, sealed under the active key, as Resealed records that take the place of
//! the earlier ones. The old segments then hold nothing live and go the usual way (deleted
//! once the records that emptied them are synced). Moving changes no entry, index or bound,
//! so the contract above holds throughout: a crash anywhere in a rotation reopens the same
//! log (see `recover`).

mod error;
mod record;
mod recover;
mod state;
mod syncer;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ahash::AHashMap;
use bytes::Bytes;

pub use error::WalError;
use record::{
    Checkpoint, ENTRY_DATA_AT, GroupCheckpoint, Kind, MAX_ENTRY_LEN, MAX_SEALED_ENTRY_LEN, Record,
};
use state::{Cache, Group, Loc, Next, SealedUnder, Segment, Segments};
pub use syncer::SyncFuture;
use syncer::{SegmentFile, Syncer};

use crate::storage::at_rest::{self, AtRest};

/// A Raft group (a slot group) whose log, vote and ids the log holds.
pub type GroupId = u16;

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A segment this long is closed and the next one started.
    pub segment_bytes: u64,
    /// Bytes of the most recent entries kept in memory for reads.
    pub cache_bytes: usize,
    /// Encryption at rest: entries are sealed under its active key (None: written in
    /// plaintext, and a sealed entry does not open).
    pub at_rest: Option<Arc<AtRest>>,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: 64 << 20,
            cache_bytes: 64 << 20,
            at_rest: None,
        }
    }
}

/// Figures for INFO and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub groups: usize,
    /// Segments on disk (including dead ones not yet unlinked) and their total length.
    pub segments: usize,
    pub segment_bytes: u64,
    /// `write` calls that wrote something (one `pwrite` each, two on rotation).
    pub writes: u64,
    pub bytes_written: u64,
    /// Bytes queued for the next `write`.
    pub bytes_queued: usize,
    /// The sequence number of the last write, and of the last one known to be on disk.
    pub write_seq: u64,
    pub synced_through: u64,
    /// Rounds of the syncer thread that called fdatasync, and the fdatasyncs they made (more
    /// than rounds only when a round covered a rotation).
    pub sync_rounds: u64,
    pub fdatasyncs: u64,
    pub sync_us_total: u64,
    pub sync_us_max: u64,
    pub sync_us_last: u64,
    pub cache_bytes: usize,
    pub cached_entries: usize,
    /// Entries read back from a segment because they had left the cache.
    pub preads: u64,
    pub segments_deleted: u64,
}

/// The write-ahead log of one core. Single-threaded: every method runs on the owning thread;
/// only fdatasync and unlink run on the log's syncer thread.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    groups: AHashMap<GroupId, Group>,
    segs: Segments,
    /// Records queued for the next `write`, to go at the end of the current segment.
    buf: Vec<u8>,
    write_seq: u64,
    /// Files written since the last sync request, oldest first.
    unsynced: Vec<Arc<SegmentFile>>,
    /// A segment was created since the last sync request.
    dir_dirty: bool,
    cache: Cache,
    /// The first failed write: nothing is accepted after it (see [`WalError::Failed`]).
    failed: Option<Arc<WalError>>,
    writes: u64,
    bytes_written: u64,
    preads: Cell<u64>,
    segments_deleted: u64,
    /// Where [`Wal::reseal_step`] goes on looking for entries to move: group and index.
    reseal_at: (GroupId, u64),
    /// The next `write` closes the current segment (it holds records under an old key).
    roll_pending: bool,
    syncer: Syncer,
}

/// A buffer that grew past this for one big pass is not kept at that size.
const KEEP_BUF_BYTES: usize = 4 << 20;

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

impl Wal {
    /// Opens the log in `dir` (created if missing), replaying every segment: each group's
    /// entries, vote, committed id and purge point come back as they were last written.
    /// Blocks (reads every segment, fsyncs them): call it before the core's loop starts.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::io("creating", dir, e))?;
        let recovered = recover::recover(dir, opts.at_rest.as_deref())?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            groups: recovered.groups.into_iter().collect(),
            segs: Segments {
                map: BTreeMap::new(),
                current: 0,
                dying: Vec::new(),
            },
            buf: Vec::new(),
            write_seq: 0,
            unsynced: Vec::new(),
            dir_dirty: false,
            cache: Cache::default(),
            failed: None,
            writes: 0,
            bytes_written: 0,
            preads: Cell::new(0),
            segments_deleted: 0,
            reseal_at: (0, 0),
            roll_pending: false,
            syncer: Syncer::start(dir)?,
        };
        let mut prev = (0, 0);
        for s in recovered.segments {
            prev = (s.seq, s.len);
            wal.segs.current = s.seq;
            wal.segs.map.insert(
                s.seq,
                Segment {
                    file: s.file,
                    len: s.len,
                    live: 0,
                    sealed_under: s.sealed_under,
                },
            );
        }
        for g in wal.groups.values() {
            for loc in &g.locs {
                if let Some(seg) = wal.segs.map.get_mut(&loc.seg) {
                    seg.live += 1;
                }
            }
        }
        if wal.segs.map.is_empty() {
            wal.start_segment(1, (0, 0))?;
        } else if recovered.last_needs_checkpoint {
            // Its first write was cut short: it holds nothing, so it is started afresh.
            let seq = wal.segs.current;
            let before = wal.segs.map.range(..seq).next_back();
            let prev = before.map_or((0, 0), |(&s, seg)| (s, seg.len));
            wal.segs.map.remove(&seq);
            wal.start_segment(seq, prev)?;
        } else if prev.1 >= wal.opts.segment_bytes {
            wal.start_segment(prev.0 + 1, prev)?;
        }
        // What replay read may still be only in the page cache (a restart after a process
        // crash): make it durable before a segment it supersedes is deleted.
        for seg in wal.segs.map.values() {
            seg.file
                .file
                .sync_data()
                .map_err(|e| WalError::io("syncing", &seg.file.path, e))?;
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| WalError::io("syncing the directory", dir, e))?;
        wal.unsynced.clear();
        wal.dir_dirty = false;
        let current = wal.segs.current;
        let dead: Vec<u64> = wal
            .segs
            .map
            .iter()
            .filter(|(seq, seg)| seg.live == 0 && **seq != current)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in dead {
            if let Some(seg) = wal.segs.map.remove(&seq) {
                std::fs::remove_file(&seg.file.path)
                    .map_err(|e| WalError::io("deleting", &seg.file.path, e))?;
                wal.segments_deleted += 1;
            }
        }
        Ok(wal)
    }

    /// Creates segment `seq` and writes its header and a checkpoint of every group into it.
    /// `prev` is the segment before it and the length it ends at. Only called with the buffer
    /// empty, so the checkpoint is exactly the state the records before it built.
    fn start_segment(&mut self, seq: u64, prev: (u64, u64)) -> Result<(), WalError> {
        debug_assert!(self.buf.is_empty());
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| WalError::io("creating", &path, e))?;
        let mut head = record::header().to_vec();
        record::put_checkpoint(&mut head, &self.checkpoint(prev));
        file.write_all_at(&head, 0)
            .map_err(|e| WalError::io("writing", &path, e))?;
        self.bytes_written += head.len() as u64;
        let file = Arc::new(SegmentFile { file, path });
        self.unsynced.push(file.clone());
        self.dir_dirty = true;
        self.segs.map.insert(
            seq,
            Segment {
                file,
                len: head.len() as u64,
                live: 0,
                sealed_under: SealedUnder::default(),
            },
        );
        let old = std::mem::replace(&mut self.segs.current, seq);
        if let Some(seg) = self.segs.map.get(&old)
            && seg.live == 0
            && old != seq
        {
            // Its last entry died while it was current; this write carries the checkpoint
            // that supersedes its other records.
            self.segs.dying.push((old, self.write_seq));
        }
        Ok(())
    }

    fn checkpoint(&self, (prev_seq, prev_len): (u64, u64)) -> Checkpoint {
        let mut groups: Vec<GroupCheckpoint> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(&id, g)| g.checkpoint(id))
            .collect();
        groups.sort_unstable_by_key(|g| g.group);
        Checkpoint {
            prev_seq,
            prev_len,
            groups,
        }
    }

    /// The groups that have any state: entries, a vote, a committed or a purged id.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn check(&self) -> Result<(), WalError> {
        if let Some(e) = &self.failed {
            return Err(WalError::Failed(e.clone()));
        }
        if let Some(e) = self.syncer.shared.failure() {
            return Err(WalError::Failed(Arc::new(e.clone())));
        }
        Ok(())
    }

    /// Queues `entry` as entry `index` of `group`'s log; it is readable at once. The index
    /// must continue the log: one past its last entry; with no entries, one past the purge
    /// point; with neither, any index.
    pub fn append(&mut self, group: GroupId, index: u64, entry: Bytes) -> Result<(), WalError> {
        self.check()?;
        let max = match self.opts.at_rest {
            Some(_) => MAX_SEALED_ENTRY_LEN,
            None => MAX_ENTRY_LEN,
        };
        if entry.len() > max {
            return Err(WalError::EntryTooLarge {
                group,
                index,
                len: entry.len(),
            });
        }
        let g = self.groups.entry(group).or_default();
        let next = g.next();
        if !next.accepts(index) {
            return Err(WalError::NotContiguous {
                group,
                index,
                expected: next.expected(),
            });
        }
        let seq = self.segs.current;
        let seg = self
            .segs
            .map
            .get_mut(&seq)
            .expect("the current segment is never removed from the map");
        let start = self.buf.len();
        let at = seg.len + start as u64;
        let len = match &self.opts.at_rest {
            Some(at_rest) => {
                let len = record::put_sealed(
                    &mut self.buf,
                    Kind::SealedEntry,
                    group,
                    index,
                    &entry,
                    at_rest,
                );
                seg.sealed_under
                    .note(at_rest::key_id_of(&self.buf[start + ENTRY_DATA_AT..]));
                len
            }
            None => {
                seg.sealed_under.note(None);
                record::put(
                    &mut self.buf,
                    Kind::Entry,
                    group,
                    &[&index.to_le_bytes(), &entry],
                )
            }
        };
        seg.live += 1;
        if g.locs.is_empty() {
            g.first = index;
        }
        let loc = Loc {
            seg: seq,
            at,
            len: len as u32,
        };
        g.locs.push_back(loc);
        if self.opts.cache_bytes > 0 && entry.len() <= self.opts.cache_bytes {
            self.cache.bytes += entry.len();
            self.cache.entries += 1;
            self.cache.order.push_back((group, index, loc));
            g.cached.push_back(entry);
            if self.cache.bytes > self.opts.cache_bytes {
                self.cache.evict(&mut self.groups, self.opts.cache_bytes);
            }
        } else {
            // The cache holds a suffix of each log: an entry too big for it ends the suffix.
            for b in g.cached.drain(..) {
                self.cache.forget(b);
            }
        }
        Ok(())
    }

    /// Queues the group's vote (skipped when it is the one already saved).
    pub fn save_vote(&mut self, group: GroupId, vote: &[u8]) {
        let g = self.groups.entry(group).or_default();
        if g.vote.as_deref() != Some(vote) {
            g.vote = Some(vote.to_vec());
            record::put(&mut self.buf, Kind::Vote, group, &[vote]);
        }
    }

    /// Queues the group's committed id (skipped when it is the one already saved).
    pub fn save_committed(&mut self, group: GroupId, committed: &[u8]) {
        let g = self.groups.entry(group).or_default();
        if g.committed.as_deref() != Some(committed) {
            g.committed = Some(committed.to_vec());
            record::put(&mut self.buf, Kind::Committed, group, &[committed]);
        }
    }

    /// Drops the entries with an index above `after` (all of them for None).
    pub fn truncate_after(&mut self, group: GroupId, after: Option<u64>) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        let Some(last) = g.last() else { return };
        if after.is_some_and(|a| a >= last) {
            return;
        }
        let dead_at = self.write_seq + 1;
        while let Some(last) = g.last()
            && after.is_none_or(|a| last > a)
        {
            let loc = g
                .locs
                .pop_back()
                .expect("a log with a last index has entries");
            self.segs.release(loc, dead_at);
            // The cached entries are the newest: the suffix loses its last one.
            if let Some(b) = g.cached.pop_back() {
                self.cache.forget(b);
            }
        }
        match after {
            None => record::put(&mut self.buf, Kind::Truncate, group, &[&[0]]),
            Some(a) => record::put(
                &mut self.buf,
                Kind::Truncate,
                group,
                &[&[1], &a.to_le_bytes()],
            ),
        };
        self.cache.compact(&self.groups);
    }

    /// Drops the entries with an index up to `upto` and remembers `upto_log_id` as the group's
    /// last purged id; the next append then carries `upto + 1` if no entry is left. A purge
    /// point at or below the current one is ignored (purging never goes back).
    pub fn purge(&mut self, group: GroupId, upto: u64, upto_log_id: &[u8]) {
        let g = self.groups.entry(group).or_default();
        if g.purged.as_ref().is_some_and(|p| p.0 >= upto) {
            return;
        }
        let dead_at = self.write_seq + 1;
        while !g.locs.is_empty() && g.first <= upto {
            let loc = g
                .locs
                .pop_front()
                .expect("the loop runs while entries are left");
            g.first += 1;
            self.segs.release(loc, dead_at);
            // Cached only if the whole log was: the suffix is now longer than the log.
            if g.cached.len() > g.locs.len()
                && let Some(b) = g.cached.pop_front()
            {
                self.cache.forget(b);
            }
        }
        g.purged = Some((upto, upto_log_id.to_vec()));
        record::put(
            &mut self.buf,
            Kind::Purge,
            group,
            &[&upto.to_le_bytes(), upto_log_id],
        );
        self.cache.compact(&self.groups);
    }

    /// Forgets a group entirely (this node no longer replicates it).
    pub fn remove_group(&mut self, group: GroupId) {
        let Some(g) = self.groups.remove(&group) else {
            return;
        };
        let dead_at = self.write_seq + 1;
        for loc in g.locs {
            self.segs.release(loc, dead_at);
        }
        for b in g.cached {
            self.cache.forget(b);
        }
        record::put(&mut self.buf, Kind::RemoveGroup, group, &[]);
        self.cache.compact(&self.groups);
    }

    /// Writes everything queued since the last call with one `pwrite` at the end of the
    /// current segment, and returns the sequence number of that write (the previous one's
    /// when nothing was queued). The records are then in the kernel: they survive the process
    /// but not the machine until [`Wal::sync`] covers them. Starts a new segment when the
    /// current one is full (or [`Wal::reseal_step`] asked for one), and hands dead segments to
    /// the syncer for deletion.
    pub fn write(&mut self) -> Result<u64, WalError> {
        self.check()?;
        if !self.buf.is_empty() {
            let seg = self.segs.current();
            if let Err(e) = seg.file.file.write_all_at(&self.buf, seg.len) {
                let e = WalError::io("writing", &seg.file.path, e);
                return Err(self.fail(e));
            }
            seg.len += self.buf.len() as u64;
            let full = seg.len >= self.opts.segment_bytes;
            let file = seg.file.clone();
            if !self.unsynced.last().is_some_and(|f| Arc::ptr_eq(f, &file)) {
                self.unsynced.push(file);
            }
            self.write_seq += 1;
            self.writes += 1;
            self.bytes_written += self.buf.len() as u64;
            self.buf.clear();
            if self.buf.capacity() > KEEP_BUF_BYTES {
                self.buf = Vec::new();
            }
            if full || self.roll_pending {
                self.roll_pending = false;
                let prev = (self.segs.current, self.segs.current().len);
                if let Err(e) = self.start_segment(prev.0 + 1, prev) {
                    return Err(self.fail(e));
                }
            }
        } else if self.roll_pending {
            self.roll()?;
        }
        self.collect_garbage();
        Ok(self.write_seq)
    }

    /// After a failed write the file may hold part of the buffer: nothing more is accepted.
    fn fail(&mut self, e: WalError) -> WalError {
        tracing::error!("{e}; the write-ahead log accepts no more writes");
        self.failed = Some(Arc::new(e.clone()));
        e
    }

    /// A future that resolves once everything written (by [`Wal::write`]) before this call is
    /// on disk. It needs no access to the log: await it anywhere, on any executor.
    pub fn sync(&mut self) -> SyncFuture {
        if let Err(e) = self.check() {
            return SyncFuture::ready(Err(e));
        }
        self.collect_garbage();
        let shared = &self.syncer.shared;
        if shared.synced() >= self.write_seq {
            return SyncFuture::ready(Ok(()));
        }
        shared.request(
            self.write_seq,
            std::mem::take(&mut self.unsynced),
            std::mem::take(&mut self.dir_dirty),
        )
    }

    /// The sequence number of the last write known to be on disk.
    pub fn synced_through(&self) -> u64 {
        self.syncer.shared.synced()
    }

    /// The sequence number of the last write.
    pub fn write_seq(&self) -> u64 {
        self.write_seq
    }

    /// Deletes the dead segments the syncer has made safe to delete: the records that killed
    /// their last entries, and the checkpoint after them, are on disk.
    fn collect_garbage(&mut self) {
        if self.segs.dying.is_empty() {
            return;
        }
        let synced = self.syncer.shared.synced();
        let mut paths = Vec::new();
        let map = &mut self.segs.map;
        self.segs.dying.retain(|&(seq, dead_at)| {
            if dead_at > synced {
                return true;
            }
            if let Some(seg) = map.remove(&seq) {
                paths.push(seg.file.path.clone());
            }
            false
        });
        if !paths.is_empty() {
            self.segments_deleted += paths.len() as u64;
            self.syncer.shared.unlink(paths);
        }
    }

    /// One step of a key rotation (or of encrypting a log written in plaintext): moves up to
    /// about `budget_bytes` of live entries out of the segments that hold a record in
    /// plaintext or sealed under another key than the active one, into the current segment,
    /// sealed under the active key. Returns true once no segment holds such a record, dead or
    /// live; until then, call it again after the log was written and synced (the emptied
    /// segments go only once the records that moved their entries are on disk). Always true
    /// without encryption at rest.
    ///
    /// Nothing is written here: the moved entries are queued like appends (readable at once,
    /// on disk after the next `write`), and a current segment holding such a record is closed
    /// by the next `write` (the next one started), so that the step after it moves its
    /// entries too. Each call looks at every live entry's place (a few ms per million
    /// entries): call it now and then, off the hot path.
    pub fn reseal_step(&mut self, budget_bytes: usize) -> Result<bool, WalError> {
        self.check()?;
        let Some(at_rest) = self.opts.at_rest.clone() else {
            return Ok(true);
        };
        // A sync may have completed since the last call: the segments it made safe go now.
        self.collect_garbage();
        let active = at_rest.active_key_id();
        if self.segs.current().sealed_under.stale(&active) {
            // Its entries can move only once it is closed; what this step moved would land in
            // it and have to move again.
            self.roll_pending = true;
            return Ok(false);
        }
        let stale: Vec<u64> = self
            .segs
            .map
            .iter()
            .filter(|(_, seg)| seg.sealed_under.stale(&active))
            .map(|(&seq, _)| seq)
            .collect();
        if stale.is_empty() {
            return Ok(true);
        }
        // (None is the current segment, checked above.)
        let sources: Vec<u64> = stale
            .into_iter()
            .filter(|seq| self.segs.map[seq].live > 0)
            .collect();
        if sources.is_empty() {
            // Emptied: waiting for a sync to cover the records that emptied them.
            return Ok(false);
        }
        let picked = self.pick_for_reseal(&sources, budget_bytes.max(1));
        self.reseal(&at_rest, picked)?;
        Ok(false)
    }

    /// The live entries in `sources` (sorted segment numbers) to move next, about `budget`
    /// bytes of them, from where the last call stopped: each pass over the log looks at
    /// every entry once, however small the budget.
    fn pick_for_reseal(&mut self, sources: &[u64], budget: usize) -> Vec<(GroupId, u64)> {
        let (from_group, from_index) = self.reseal_at;
        let mut ids: Vec<GroupId> = self
            .groups
            .keys()
            .copied()
            .filter(|&g| g >= from_group)
            .collect();
        ids.sort_unstable();
        let mut picked = Vec::new();
        let mut bytes = 0;
        for g in ids {
            let grp = &self.groups[&g];
            let skip = match g == from_group {
                true => from_index
                    .saturating_sub(grp.first)
                    .min(grp.locs.len() as u64) as usize,
                false => 0,
            };
            for (i, loc) in grp.locs.iter().enumerate().skip(skip) {
                if sources.binary_search(&loc.seg).is_err() {
                    continue;
                }
                let index = grp.first + i as u64;
                picked.push((g, index));
                bytes += loc.len as usize;
                if bytes >= budget {
                    self.reseal_at = (g, index.saturating_add(1));
                    return picked;
                }
            }
        }
        // The pass is over: the next one starts from the beginning (a segment may have
        // become stale behind it, after a key reload).
        self.reseal_at = (0, 0);
        picked
    }

    /// Moves `picked` (live entries) into the current segment, sealed under the active key.
    fn reseal(&mut self, at_rest: &AtRest, picked: Vec<(GroupId, u64)>) -> Result<(), WalError> {
        // The write that carries the moved records: once it is synced, the old places die.
        let dead_at = self.write_seq + 1;
        let current = self.segs.current;
        let mut moved_cached = AHashMap::new();
        let mut moved = 0;
        for (group, index) in picked {
            let g = &self.groups[&group];
            let pos = (index - g.first) as usize;
            let old = g.locs[pos];
            let cached_from = g.cached_from();
            let cached = index >= cached_from;
            let plain = match cached {
                true => g.cached[(index - cached_from) as usize].clone(),
                // Read before anything changes: a failed read leaves the log as it was.
                false => self.read_entry(group, index, old)?,
            };
            if plain.len() > MAX_SEALED_ENTRY_LEN {
                // Written in plaintext, too large to seal (no Raft entry comes near 4 GiB).
                return Err(WalError::EntryTooLarge {
                    group,
                    index,
                    len: plain.len(),
                });
            }
            let seg = self
                .segs
                .map
                .get_mut(&current)
                .expect("the current segment is never removed from the map");
            let start = self.buf.len();
            let at = seg.len + start as u64;
            let len =
                record::put_sealed(&mut self.buf, Kind::Resealed, group, index, &plain, at_rest);
            seg.sealed_under
                .note(at_rest::key_id_of(&self.buf[start + ENTRY_DATA_AT..]));
            seg.live += 1;
            let new = Loc {
                seg: current,
                at,
                len: len as u32,
            };
            if let Some(g) = self.groups.get_mut(&group) {
                g.locs[pos] = new;
            }
            self.segs.release(old, dead_at);
            if cached {
                moved_cached.insert((group, index), (old, new));
            }
            moved += 1;
        }
        // The cache knows its entries by place too (to tell an entry from one appended at its
        // index after a truncation): one pass over it, whatever the number moved.
        if !moved_cached.is_empty() {
            for (group, index, loc) in self.cache.order.iter_mut() {
                if let Some((old, new)) = moved_cached.get(&(*group, *index))
                    && loc == old
                {
                    *loc = *new;
                }
            }
        }
        at_rest.resealed.fetch_add(moved, Relaxed);
        Ok(())
    }

    /// Closes the current segment (with nothing queued) and starts the next one.
    fn roll(&mut self) -> Result<(), WalError> {
        debug_assert!(self.buf.is_empty());
        self.roll_pending = false;
        // The new segment's checkpoint counts as a write of its own: the old segment, if
        // it is dead, may go only once a sync covers the checkpoint that supersedes it (the
        // last write may be synced already).
        self.write_seq += 1;
        let prev = (self.segs.current, self.segs.current().len);
        if let Err(e) = self.start_segment(prev.0 + 1, prev) {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// The entries of `range` the group's log holds (the range is clipped to the log), from
    /// memory when recent, else read back from their segment.
    pub fn entries(&self, group: GroupId, range: Range<u64>) -> Result<Vec<Bytes>, WalError> {
        let Some(g) = self.groups.get(&group) else {
            return Ok(Vec::new());
        };
        let Some(last) = g.last() else {
            return Ok(Vec::new());
        };
        let start = range.start.max(g.first);
        let end = range.end.min(last.saturating_add(1));
        if start >= end {
            return Ok(Vec::new());
        }
        let cached_from = g.cached_from();
        let mut out = Vec::with_capacity((end - start) as usize);
        for index in start..end {
            if index >= cached_from {
                out.push(g.cached[(index - cached_from) as usize].clone());
            } else {
                let loc = g.locs[(index - g.first) as usize];
                out.push(self.read_entry(group, index, loc)?);
            }
        }
        Ok(out)
    }

    fn read_entry(&self, group: GroupId, index: u64, loc: Loc) -> Result<Bytes, WalError> {
        let seg = self
            .segs
            .map
            .get(&loc.seg)
            .expect("a segment stays in the map while it holds live entries");
        let len = loc.len as usize;
        let path = &seg.file.path;
        let unwritten = loc.seg == self.segs.current && loc.at >= seg.len;
        let read = if unwritten {
            Vec::new()
        } else {
            let mut data = vec![0; len];
            seg.file
                .file
                .read_exact_at(&mut data, loc.at)
                .map_err(|e| WalError::io("reading", path, e))?;
            self.preads.set(self.preads.get() + 1);
            data
        };
        let data = if unwritten {
            // Not written yet: still in the buffer.
            let from = (loc.at - seg.len) as usize;
            &self.buf[from..from + len]
        } else {
            &read[..]
        };
        let sealed = match record::read(data, 0) {
            Ok(Some(f)) if f.group == group && f.len == len => match f.record {
                Record::Entry {
                    index: i, sealed, ..
                } if i == index => Some(sealed),
                Record::Resealed { index: i, .. } if i == index => Some(true),
                _ => None,
            },
            Ok(_) => None,
            Err(record::Bad::Frame(reason) | record::Bad::Contents(reason)) => {
                return Err(WalError::corrupt(path, loc.at, reason));
            }
        };
        let Some(sealed) = sealed else {
            return Err(WalError::corrupt(
                path,
                loc.at,
                format!("expected entry {index} of group {group}"),
            ));
        };
        if sealed {
            let plain = record::unseal(
                self.opts.at_rest.as_deref(),
                group,
                index,
                &data[ENTRY_DATA_AT..],
            )
            .map_err(|error| WalError::Sealed {
                path: path.clone(),
                offset: loc.at,
                group,
                index,
                error,
            })?;
            return Ok(Bytes::from(plain));
        }
        if unwritten {
            return Ok(Bytes::copy_from_slice(&data[ENTRY_DATA_AT..]));
        }
        // The read buffer becomes the entry's bytes: no copy.
        Ok(Bytes::from(read).slice(ENTRY_DATA_AT..))
    }

    pub fn first_index(&self, group: GroupId) -> Option<u64> {
        let g = self.groups.get(&group)?;
        g.last().map(|_| g.first)
    }

    pub fn last_index(&self, group: GroupId) -> Option<u64> {
        self.groups.get(&group)?.last()
    }

    pub fn vote(&self, group: GroupId) -> Option<&[u8]> {
        self.groups.get(&group)?.vote.as_deref()
    }

    pub fn committed(&self, group: GroupId) -> Option<&[u8]> {
        self.groups.get(&group)?.committed.as_deref()
    }

    /// The group's last purged index and log id.
    pub fn purged(&self, group: GroupId) -> Option<(u64, &[u8])> {
        let (upto, id) = self.groups.get(&group)?.purged.as_ref()?;
        Some((*upto, id))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of log entries held in memory: the cache of recent entries and what is queued
    /// for the next write.
    pub fn buffered_bytes(&self) -> u64 {
        (self.cache.bytes + self.buf.len()) as u64
    }

    pub fn stats(&self) -> WalStats {
        let s = &self.syncer.shared;
        WalStats {
            groups: self.groups.values().filter(|g| !g.is_empty()).count(),
            segments: self.segs.map.len(),
            segment_bytes: self.segs.map.values().map(|s| s.len).sum(),
            writes: self.writes,
            bytes_written: self.bytes_written,
            bytes_queued: self.buf.len(),
            write_seq: self.write_seq,
            synced_through: s.synced(),
            sync_rounds: s.rounds.load(Relaxed),
            fdatasyncs: s.fdatasyncs.load(Relaxed),
            sync_us_total: s.sync_us_total.load(Relaxed),
            sync_us_max: s.sync_us_max.load(Relaxed),
            sync_us_last: s.sync_us_last.load(Relaxed),
            cache_bytes: self.cache.bytes,
            cached_entries: self.cache.entries,
            preads: self.preads.get(),
            segments_deleted: self.segments_deleted,
        }
    }
}
