//! In-memory Raft log and state machine for the probe: a `BTreeMap` each, shared through
//! `Rc<RefCell<_>>` with the log reader and snapshot builder openraft asks for. No borrow is
//! held across an `.await`.
//!
//! "Durable" means "in the map": `append` reports the flush at once. The probe measures openraft,
//! not a disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::rc::Rc;

use futures_util::Stream;
use futures_util::TryStreamExt;
use openraft::EntryPayload;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::SnapshotMeta;
use openraft::StoredMembership;
use openraft::entry::RaftEntry;
use openraft::storage::EntryResponder;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::storage::Snapshot;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::StoredMembershipOf;
use openraft::type_config::alias::VoteOf;

use crate::Entry;
use crate::TypeConfig;

/// The state machine's data, and the payload of a snapshot.
pub type Kv = BTreeMap<u64, u64>;

#[derive(Default)]
struct Log {
    vote: Option<VoteOf<TypeConfig>>,
    committed: Option<LogIdOf<TypeConfig>>,
    last_purged: Option<LogIdOf<TypeConfig>>,
    entries: BTreeMap<u64, Entry>,
}

/// The log store and, as a clone, its reader.
#[derive(Clone, Default)]
pub struct LogStore {
    log: Rc<RefCell<Log>>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let log = self.log.borrow();
        Ok(log
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(self.log.borrow().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.log.borrow();
        let last = log.entries.values().next_back().map(|entry| entry.log_id());
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last.or_else(|| log.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.log.borrow_mut().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        self.log.borrow_mut().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self.log.borrow().committed)
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
            let mut log = self.log.borrow_mut();
            for entry in entries {
                log.entries.insert(entry.index(), entry);
            }
        }
        // In memory, stored is flushed. (The callback is `!Send` on this runtime: a real store
        // that flushes on another thread must report back to this one first.)
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |log_id| log_id.index() + 1);
        self.log.borrow_mut().entries.split_off(&first_removed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let mut log = self.log.borrow_mut();
        let kept = log.entries.split_off(&(log_id.index() + 1));
        log.entries = kept;
        log.last_purged = Some(log_id);
        Ok(())
    }
}

#[derive(Default)]
struct Applied {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    kv: Kv,
    snapshot: Option<SnapshotOf<TypeConfig, Kv>>,
}

/// The state machine and, as a clone, its snapshot builder.
#[derive(Clone, Default)]
pub struct StateMachine {
    applied: Rc<RefCell<Applied>>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Kv;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Kv>, io::Error> {
        let mut applied = self.applied.borrow_mut();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            },
            snapshot: applied.kv.clone(),
        };
        applied.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Kv;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let applied = self.applied.borrow();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let response = {
                let mut applied = self.applied.borrow_mut();
                applied.last_applied = Some(log_id);
                match entry.payload {
                    EntryPayload::Blank => 0,
                    // The response is the key's previous value (0 for none), like a GETSET.
                    EntryPayload::Normal(set) => applied.kv.insert(set.key, set.value).unwrap_or(0),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(log_id), membership);
                        0
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Kv,
    ) -> Result<(), io::Error> {
        let mut applied = self.applied.borrow_mut();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.kv = snapshot.clone();
        applied.snapshot = Some(Snapshot {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Kv>>, io::Error> {
        Ok(self.applied.borrow().snapshot.clone())
    }
}
