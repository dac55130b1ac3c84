//! A slot group's Raft state machine: committed entries are applied by the cores that own
//! the group's slots (through [`Cores`], the one crossing from Raft into the data path).
//!
//! Durability: each core writes its data changes and "group g applied up to log id L" in the
//! same storage batch, so after a crash every core knows exactly which entries its keys
//! already reflect. The group's applied state is the smallest of its cores' marks; entries
//! above it are applied again on restart and each core skips the ones at or below its own
//! mark — no entry is applied twice to the same key.

use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use futures::future::BoxFuture;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::types::{
    Entry, GroupId, LogId, Membership, NodeId, NodeInfo, Request, Response, StorageError,
    TypeConfig,
};

/// One committed entry for the cores: its log index and request.
pub struct ApplyItem {
    pub index: u64,
    pub request: Arc<Request>,
}

/// How the state machine reaches the data path (implemented by the server room).
pub trait Cores: Send + Sync + 'static {
    /// Applies `items` (in log order) on the cores owning `slots`, then records `last` as
    /// those cores' applied mark for `group` (also when `items` is empty: blank and
    /// membership entries advance it). Returns one reply set per item.
    fn apply(
        &self,
        group: GroupId,
        slots: Range<usize>,
        items: Vec<ApplyItem>,
        last: LogId,
    ) -> BoxFuture<'static, Result<Vec<Response>, String>>;

    /// The applied mark of `group` that every core owning `slots` has reached (None if
    /// some core has none: the whole log is applied again, each core skipping what it has).
    fn applied(&self, group: GroupId, slots: Range<usize>) -> Result<Option<LogId>, String>;

    /// The last membership stored for `group`.
    fn membership(&self, group: GroupId) -> Result<Option<Membership>, String>;

    /// Stores the membership of `group` (rare; written through the storage queue).
    fn save_membership(&self, group: GroupId, m: &Membership) -> Result<(), String>;
}

pub struct GroupSm {
    group: GroupId,
    slots: Range<usize>,
    cores: Arc<dyn Cores>,
    applied: Option<LogId>,
    membership: Membership,
}

fn sm_err(e: String) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e)).into()
}

impl GroupSm {
    pub fn open(
        group: GroupId,
        slots: Range<usize>,
        cores: Arc<dyn Cores>,
    ) -> Result<GroupSm, String> {
        let applied = cores.applied(group, slots.clone())?;
        let membership = cores.membership(group)?.unwrap_or_default();
        Ok(GroupSm {
            group,
            slots,
            cores,
            applied,
            membership,
        })
    }
}

/// Snapshots are not built yet: the log is kept whole (snapshot policy `Never`), so a
/// lagging follower always catches up from the log.
pub struct NoSnapshots {
    group: GroupId,
}

fn no_snapshot(group: GroupId) -> StorageError {
    StorageIOError::read_snapshot(
        None,
        &std::io::Error::other(format!(
            "slot group {group}: snapshots are not supported yet (logs are never purged)"
        )),
    )
    .into()
}

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(no_snapshot(self.group))
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Which response slot each entry's reply goes to: None for blank/membership.
        let mut slots: Vec<Option<usize>> = Vec::new();
        let mut items = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => slots.push(None),
                EntryPayload::Normal(request) => {
                    slots.push(Some(items.len()));
                    items.push(ApplyItem {
                        index: entry.log_id.index,
                        request: Arc::new(request),
                    });
                }
                EntryPayload::Membership(m) => {
                    slots.push(None);
                    self.membership = Membership::new(Some(entry.log_id), m);
                    self.cores
                        .save_membership(self.group, &self.membership)
                        .map_err(sm_err)?;
                    tracing::info!(
                        "slot group {}: membership now {:?} (log {})",
                        self.group,
                        self.membership.membership().voter_ids().collect::<Vec<_>>(),
                        entry.log_id
                    );
                }
            }
        }
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        let mut replies = self
            .cores
            .apply(self.group, self.slots.clone(), items, last)
            .await
            .map_err(sm_err)?
            .into_iter();
        self.applied = Some(last);
        Ok(slots
            .into_iter()
            .map(|s| match s {
                Some(_) => replies.next().unwrap_or_default(),
                None => Response::default(),
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots { group: self.group }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Err(no_snapshot(self.group))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, NodeInfo>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        Err(no_snapshot(self.group))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}
