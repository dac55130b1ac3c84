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

use super::snapshot::{self, Meta, SnapshotFiles};
use super::types::{
    Entry, GroupId, LogId, Membership, NodeId, NodeInfo, Request, Response, StorageError,
    TypeConfig,
};
use crate::storage::Storage;

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

    /// Has the cores owning `slots` hand their pending changes to storage now.
    fn flush(&self, slots: Range<usize>) -> BoxFuture<'static, Result<(), String>>;

    /// Replaces the keys of `slots` on their cores with `records` (stored key, stored
    /// value) and sets their applied mark for `group` to `last`.
    fn install(
        &self,
        group: GroupId,
        slots: Range<usize>,
        records: crate::storage::KeyValues,
        last: Option<LogId>,
    ) -> BoxFuture<'static, Result<(), String>>;
}

pub struct GroupSm {
    group: GroupId,
    slots: Range<usize>,
    cores: Arc<dyn Cores>,
    storage: Arc<Storage>,
    files: Arc<SnapshotFiles>,
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
        storage: Arc<Storage>,
        files: Arc<SnapshotFiles>,
    ) -> Result<GroupSm, String> {
        let applied = cores.applied(group, slots.clone())?;
        let membership = cores.membership(group)?.unwrap_or_default();
        Ok(GroupSm {
            group,
            slots,
            cores,
            storage,
            files,
            applied,
            membership,
        })
    }
}

/// Builds a group's snapshot from a point-in-time view of storage taken while applying was
/// paused (see [`GroupSm::get_snapshot_builder`]); runs beside the state machine.
pub struct GroupSnapshotBuilder {
    group: GroupId,
    slots: Range<usize>,
    storage: Arc<Storage>,
    files: Arc<SnapshotFiles>,
    prepared: Result<(fjall::Snapshot, Meta), String>,
}

fn snapshot_err(e: String) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for GroupSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (view, meta) = self.prepared.clone().map_err(snapshot_err)?;
        let (storage, files, slots, g) = (
            self.storage.clone(),
            self.files.clone(),
            self.slots.clone(),
            self.group,
        );
        let started = std::time::Instant::now();
        let meta2 = meta.clone();
        let (bytes, keys) = tokio::task::spawn_blocking(move || {
            let mut out = snapshot::begin(&meta2)?;
            let mut keys = 0u64;
            storage.read_slots_at(&view, slots, |chunk| {
                keys += chunk.len() as u64;
                for (k, v) in chunk {
                    snapshot::push_record(&mut out, &k, &v);
                }
                true
            })?;
            files.save(g, &out)?;
            Ok::<_, String>((out, keys))
        })
        .await
        .map_err(|e| snapshot_err(e.to_string()))?
        .map_err(snapshot_err)?;
        tracing::info!(
            "slot group {g}: snapshot at log {} built: {keys} keys, {} bytes in {} ms",
            meta.last_log_id.map_or("-".to_string(), |l| l.to_string()),
            bytes.len(),
            started.elapsed().as_millis()
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = GroupSnapshotBuilder;

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

    /// Called between applies: the cores hand their changes to storage, and a read view is
    /// taken once those are committed, so it holds exactly the state at `applied`.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let flushed = self.cores.flush(self.slots.clone()).await;
        let prepared = match flushed {
            Err(e) => Err(e),
            Ok(()) => {
                let (tx, rx) = futures::channel::oneshot::channel();
                self.storage.view_after_queued(move |r| {
                    let _ = tx.send(r);
                });
                match rx.await {
                    Ok(Ok(view)) => Ok((
                        view,
                        Meta {
                            last_log_id: self.applied,
                            last_membership: self.membership.clone(),
                            snapshot_id: format!(
                                "{}-{}-{}",
                                self.group,
                                self.applied.map_or(0, |l| l.index),
                                crate::util::now_ms()
                            ),
                        },
                    )),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("the storage writer stopped".to_string()),
                }
            }
        };
        GroupSnapshotBuilder {
            group: self.group,
            slots: self.slots.clone(),
            storage: self.storage.clone(),
            files: self.files.clone(),
            prepared,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let records = snapshot::records(&bytes).map_err(snapshot_err)?;
        let keys = records.len();
        self.cores
            .install(self.group, self.slots.clone(), records, meta.last_log_id)
            .await
            .map_err(sm_err)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.cores
            .save_membership(self.group, &self.membership)
            .map_err(sm_err)?;
        self.files.save(self.group, &bytes).map_err(snapshot_err)?;
        tracing::info!(
            "slot group {}: installed the leader's snapshot at log {} ({keys} keys)",
            self.group,
            meta.last_log_id.map_or("-".to_string(), |l| l.to_string()),
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .files
            .load(self.group)
            .map_err(snapshot_err)?
            .map(|(meta, bytes)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }))
    }
}
