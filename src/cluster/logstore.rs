//! The Raft log of the slot groups a core hosts: openraft's [`RaftLogStorage`] over the
//! core's write-ahead log (`storage::wal`), shared by those groups.
//!
//! Appends only queue records in memory; a task that runs once the event-loop pass has done
//! its other work writes everything the pass queued — every group's entries, votes, commit
//! marks — with one write(2), then (with `appendfsync always`) waits for the fdatasync that
//! covers it, and only then tells openraft the entries are flushed. So a pass's appends of all
//! groups cost one syscall, and under `always` one fsync on the log's syncer thread (the one
//! hop off the core on the write path). Votes are always synced before `save_vote` returns.
//!
//! Entries are stored as [`wire`](super::wire) encodings of openraft's `Entry`; vote,
//! committed and purged ids likewise.

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::rc::Rc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use openraft10 as openraft;

use super::types::{Entry, GroupId, LogId, TypeConfig, Vote};
use super::wire;
use crate::storage::wal::{Wal, WalError};

fn io_err(e: WalError) -> io::Error {
    io::Error::other(e.to_string())
}

/// One core's write-ahead log and the flushes waiting for its next write.
pub struct WalPump {
    wal: RefCell<Wal>,
    waiting: RefCell<Vec<IOFlushed<TypeConfig>>>,
    scheduled: Cell<bool>,
    /// Whether appends wait for the fdatasync (`appendfsync always`).
    always: Box<dyn Fn() -> bool>,
    me: std::rc::Weak<WalPump>,
}

impl WalPump {
    pub fn new(wal: Wal, always: Box<dyn Fn() -> bool>) -> Rc<WalPump> {
        Rc::new_cyclic(|me| WalPump {
            wal: RefCell::new(wal),
            waiting: RefCell::new(Vec::new()),
            scheduled: Cell::new(false),
            always,
            me: me.clone(),
        })
    }

    /// The log, for the few callers outside this file (opening and dropping groups, stats).
    pub fn wal(&self) -> std::cell::RefMut<'_, Wal> {
        self.wal.borrow_mut()
    }

    /// [`Wal::buffered_bytes`] (None while the log is in use).
    pub fn buffered_bytes(&self) -> Option<u64> {
        self.wal.try_borrow().ok().map(|w| w.buffered_bytes())
    }

    /// Reports `flushed` once this pass's records are written (and synced, under `always`).
    fn after_write(&self, flushed: IOFlushed<TypeConfig>) {
        self.waiting.borrow_mut().push(flushed);
        self.schedule();
    }

    fn schedule(&self) {
        if self.scheduled.replace(true) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            // Behind the pass's other work, and behind the replication tasks the appends woke:
            // the entries go to the followers before the leader's own write, which runs
            // beside their round trip.
            crate::engine::persist::yield_now().await;
            crate::engine::persist::yield_now().await;
            me.pump().await;
        })
        .detach();
    }

    async fn pump(&self) {
        self.scheduled.set(false);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        let written = self.wal.borrow_mut().write();
        let result = match written {
            Err(e) => Err(e),
            Ok(_) if (self.always)() => {
                let sync = self.wal.borrow_mut().sync();
                sync.await
            }
            Ok(_) => Ok(()),
        };
        for flushed in waiting {
            flushed.io_completed(result.clone().map_err(io_err));
        }
    }

    /// Writes what is queued and waits until it is on disk (votes; shutdown).
    pub async fn write_and_sync(&self) -> Result<(), WalError> {
        self.wal.borrow_mut().write()?;
        let sync = self.wal.borrow_mut().sync();
        sync.await
    }

    /// Writes what is queued now (the committed marks openraft saved; the periodic flush of
    /// `everysec` follows with a sync).
    pub fn write_now(&self) -> Result<(), WalError> {
        self.wal.borrow_mut().write().map(|_| ())
    }
}

/// One group's log in its core's write-ahead log (and, as a clone, its reader).
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    pump: Rc<WalPump>,
    /// The last entry's log id (None: the log is empty, see `purged`).
    last: Rc<Cell<Option<LogId>>>,
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, io::Error> {
    Ok(wire::decode(bytes, "log entry")?)
}

impl LogStore {
    /// Group `group`'s log in `pump`'s write-ahead log, as the log holds it.
    pub fn open(group: GroupId, pump: Rc<WalPump>) -> Result<LogStore, io::Error> {
        let last = {
            let wal = pump.wal.borrow();
            match wal.last_index(group) {
                Some(i) => {
                    let entries = wal.entries(group, i..i + 1).map_err(io_err)?;
                    let bytes = entries.first().ok_or_else(|| {
                        io::Error::other(format!("slot group {group}: entry {i} missing"))
                    })?;
                    Some(decode_entry(bytes)?.log_id())
                }
                None => None,
            }
        };
        Ok(LogStore {
            group,
            pump,
            last: Rc::new(Cell::new(last)),
        })
    }

    fn purged(&self) -> Result<Option<LogId>, io::Error> {
        let wal = self.pump.wal.borrow();
        match wal.purged(self.group) {
            Some((_, bytes)) => Ok(Some(wire::decode(bytes, "purged log id")?)),
            None => Ok(None),
        }
    }
}

/// `range` as start..end (exclusive), clamped to what can exist.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        let wal = self.pump.wal.borrow();
        let first = wal.first_index(self.group);
        let last = wal.last_index(self.group);
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Vec::new());
        };
        let (start, end) = (start.max(first), end.min(last + 1));
        if start >= end {
            return Ok(Vec::new());
        }
        wal.entries(self.group, start..end)
            .map_err(io_err)?
            .iter()
            .map(|b| decode_entry(b))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let wal = self.pump.wal.borrow();
        match wal.vote(self.group) {
            Some(bytes) => Ok(Some(wire::decode(bytes, "vote")?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = self.purged()?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: self.last.get().or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.pump
            .wal
            .borrow_mut()
            .save_vote(self.group, &wire::encode(vote));
        // A vote must survive a crash before it is acted on (Raft's one-vote-per-term rule),
        // whatever appendfsync says: votes are rare, so always synced.
        self.pump.write_and_sync().await.map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Rides the next write: losing it in a crash only makes the restart re-learn the
        // commit from the leader.
        self.pump
            .wal
            .borrow_mut()
            .save_committed(self.group, &wire::encode(&committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let wal = self.pump.wal.borrow();
        match wal.committed(self.group) {
            Some(bytes) => Ok(wire::decode(bytes, "committed log id")?),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut wal = self.pump.wal.borrow_mut();
            for entry in entries {
                let log_id = entry.log_id();
                wal.append(
                    self.group,
                    log_id.index,
                    bytes::Bytes::from(wire::encode(&entry)),
                )
                .map_err(io_err)?;
                self.last.set(Some(log_id));
            }
        }
        self.pump.after_write(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.pump
            .wal
            .borrow_mut()
            .truncate_after(self.group, last_log_id.as_ref().map(|l| l.index));
        let kept = match last_log_id {
            Some(l) => Some(l),
            None => self.purged()?,
        };
        self.last.set(kept);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut wal = self.pump.wal.borrow_mut();
        wal.purge(self.group, log_id.index, &wire::encode(&log_id));
        if self.last.get().is_none_or(|l| l.index <= log_id.index) {
            self.last.set(None);
        }
        Ok(())
    }
}
