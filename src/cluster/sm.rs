//! A slot group's Raft state machine: committed entries are applied by the cores that own
//! the group's slots (through [`Cores`], the one crossing from Raft into the data path).
//!
//! Durability: each core writes its data changes and "group g applied up to log id L" in the
//! same storage batch, so after a crash every core knows exactly which entries its keys
//! already reflect. The group's applied state is the smallest of its cores' marks; entries
//! above it are applied again on restart and each core skips the ones at or below its own
//! mark — no entry is applied twice to the same key.
//!
//! Snapshots are streamed (see `snapshot`): a received one is installed in batches, so a
//! crash can stop an install half done. openraft cannot restart from that: at start it
//! trusts the applied state the cores report, and it purges the log the snapshot covers
//! while the install still runs, so a group whose keys were half replaced would either
//! claim an applied index it does not hold or find the entries it needs gone. So:
//! - The received file is checked whole and synced, then renamed to `g{g}.installing`
//!   before any key changes. Its presence at start means "finish this install": the first
//!   thing openraft asks at start ([`GroupSm::applied_state`]) runs the install again from
//!   it, so the group comes back at the snapshot's index without the leader's help and
//!   without forgetting its vote or log.
//! - The install's first step deletes the group's keys and clears its applied marks in one
//!   storage batch per core; the last sets the marks; only once those and the membership
//!   are synced does the file become the group's snapshot (`g{g}.snap`). A crash between
//!   the two leaves marks of none, which the next start ignores in favour of the file.
//! - A crash after openraft purged the log but before the file was renamed (the purge races
//!   the install) leaves the old keys and marks behind a purged log: [`GroupSm::open`]
//!   restarts the log at the applied mark (the vote stays), so the leader sends the
//!   snapshot again (its log going back is what openraft's `loosen-follower-log-revert`
//!   lets a leader take, as for a wiped node). It refuses to if entries follow the purged
//!   prefix: those may have counted towards a commit, and dropping them could lose a write.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::snapshot::{self, Meta, SnapshotFile, SnapshotFiles};
use super::types::{
    Entry, GroupId, LogId, Membership, NodeId, NodeInfo, Request, Response, StorageError,
    TypeConfig,
};
use crate::storage::Storage;

/// Records per batch an install hands the cores at most, and bytes of keys and values: a
/// batch is what the install holds in memory (twice: one read ahead), and what a core
/// applies in one go while its clients wait.
const INSTALL_BATCH_RECORDS: usize = 10_000;
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;

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
    /// value) and sets their applied mark for `group` to `last`, in one step on each core.
    /// For small installs only (dropping a group's copy: no records, `last` None); a
    /// snapshot is installed in the steps below.
    fn install(
        &self,
        group: GroupId,
        slots: Range<usize>,
        records: crate::storage::KeyValues,
        last: Option<LogId>,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// Installing a snapshot, step 1: deletes the keys of `slots` on their cores and clears
    /// their applied mark for `group`; each core hands both to storage in one batch before
    /// the future resolves, so a crash leaves the old keys and mark or neither.
    fn install_begin(
        &self,
        group: GroupId,
        slots: Range<usize>,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// Step 2, once per batch: adds `records` (stored key, stored value) of `slots` on
    /// their cores, handed to storage before the future resolves.
    fn install_records(
        &self,
        group: GroupId,
        slots: Range<usize>,
        records: crate::storage::KeyValues,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// Step 3: sets the applied mark for `group` of the cores owning `slots` to `last`,
    /// handed to storage (after every record) before the future resolves.
    fn install_finish(
        &self,
        group: GroupId,
        slots: Range<usize>,
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
    /// The meta of a snapshot whose install a crash cut short: finished before openraft
    /// hears the applied state (see the module doc).
    interrupted: Option<Meta>,
}

fn sm_err(e: String) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e)).into()
}

impl GroupSm {
    /// The state machine of `group` as storage holds it; see the module doc for what is
    /// repaired here when a snapshot install was cut short.
    pub fn open(
        group: GroupId,
        slots: Range<usize>,
        cores: Arc<dyn Cores>,
        storage: Arc<Storage>,
        files: Arc<SnapshotFiles>,
    ) -> Result<GroupSm, String> {
        let applied = cores.applied(group, slots.clone())?;
        let membership = cores.membership(group)?.unwrap_or_default();
        let interrupted = files.staged(group)?;
        if interrupted.is_none() {
            restart_log_if_purged(&storage, group, applied)?;
        }
        Ok(GroupSm {
            group,
            slots,
            cores,
            storage,
            files,
            applied,
            membership,
            interrupted,
        })
    }

    /// Installs group's snapshot from its `.installing` file (see
    /// [`SnapshotFiles::stage`]): deletes the group's keys, adds the file's records in
    /// bounded batches, stores the membership and applied marks, and once those are durable
    /// makes the file the group's snapshot. Returns the number of keys.
    async fn install_staged(&mut self, meta: &Meta) -> Result<u64, String> {
        let (g, slots) = (self.group, self.slots.clone());
        self.cores.install_begin(g, slots.clone()).await?;
        // The file is read on a blocking thread one batch ahead of the cores.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let path = self.files.installing_path(g);
        let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut r = snapshot::Reader::open(&path)?;
            loop {
                let batch = r.next_batch(INSTALL_BATCH_RECORDS, INSTALL_BATCH_BYTES)?;
                // A closed channel: the install failed, and says why itself.
                if batch.is_empty() || tx.blocking_send(batch).is_err() {
                    return Ok(());
                }
            }
        });
        let mut keys = 0u64;
        while let Some(batch) = rx.recv().await {
            keys += batch.len() as u64;
            self.cores.install_records(g, slots.clone(), batch).await?;
            // The cores hand records to the storage writer faster than it commits them:
            // wait for it rather than queue the whole snapshot in memory.
            if self.storage.backlogged() {
                self.storage.synced().await?;
            }
        }
        reader
            .await
            .map_err(|e| format!("reading the snapshot: {e}"))??;
        self.cores.save_membership(g, &meta.last_membership)?;
        self.cores
            .install_finish(g, slots, meta.last_log_id)
            .await?;
        self.storage.synced().await?;
        self.files.commit_staged(g)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(keys)
    }
}

/// Restarts `group`'s log at `applied` when its purged prefix is past it (an install cut
/// short before its file was staged: see the module doc).
fn restart_log_if_purged(
    storage: &Storage,
    group: GroupId,
    applied: Option<LogId>,
) -> Result<(), String> {
    let (purged, more) = storage.raft_log_purged(group)?;
    let Some(purged) = purged else { return Ok(()) };
    if applied.is_some_and(|a| a.index >= purged.index) {
        return Ok(());
    }
    let applied_text = applied.map_or("nothing".to_string(), |l| l.to_string());
    if more {
        return Err(format!(
            "slot group {group}: its log is purged up to {purged} and goes on after it, but \
             its data is only applied up to {applied_text} (a snapshot install was cut short); \
             the entries after {purged} may count towards a commit, so they are not dropped: \
             empty this node's dir to have it catch up from the other nodes"
        ));
    }
    tracing::warn!(
        "slot group {group}: its log is purged up to {purged} but its data is only applied \
         up to {applied_text} (a snapshot install was cut short): the log restarts there, \
         vote kept, and the leader sends a snapshot again"
    );
    storage.raft_restart_log(group, applied)
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
        let started = Instant::now();
        let meta2 = meta.clone();
        let (file, bytes, keys) = tokio::task::spawn_blocking(move || {
            // Written record by record as the view is read: the file, not memory, holds it.
            let mut out = files.create(g, &meta2)?;
            let mut keys = 0u64;
            let mut failed = None;
            storage.read_slots_at(&view, slots, |chunk| {
                keys += chunk.len() as u64;
                for (k, v) in chunk {
                    if let Err(e) = out.push(&k, &v) {
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            let (file, bytes) = out.commit()?;
            Ok::<_, String>((file, bytes, keys))
        })
        .await
        .map_err(|e| snapshot_err(e.to_string()))?
        .map_err(snapshot_err)?;
        tracing::info!(
            "slot group {g}: snapshot at log {} built: {keys} keys, {bytes} bytes in {} ms",
            meta.last_log_id.map_or("-".to_string(), |l| l.to_string()),
            started.elapsed().as_millis()
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = GroupSnapshotBuilder;

    /// openraft asks this first when the group starts, before it reads any entry: an
    /// install a crash cut short is finished here (see the module doc).
    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        if let Some(meta) = self.interrupted.take() {
            let (g, at) = (self.group, meta.last_log_id);
            let at_text = at.map_or("-".to_string(), |l| l.to_string());
            if self.applied.map(|l| l.index) >= at.map(|l| l.index) {
                // The last step was durable; only the file's rename was lost.
                self.files.commit_staged(g).map_err(sm_err)?;
                self.membership = meta.last_membership.clone();
            } else {
                tracing::warn!(
                    "slot group {g}: finishing the install of the snapshot at log {at_text} \
                     that a restart cut short"
                );
                let started = Instant::now();
                let keys = self.install_staged(&meta).await.map_err(sm_err)?;
                tracing::info!(
                    "slot group {g}: installed the snapshot at log {at_text} ({keys} keys) in \
                     {} ms",
                    started.elapsed().as_millis()
                );
            }
        }
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        Ok(Box::new(
            self.files.receive(self.group).map_err(snapshot_err)?,
        ))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let received = snapshot.finish_receiving().await.map_err(snapshot_err)?;
        // Checked whole before any key changes: a bad file leaves the group as it was.
        let (files, g, m) = (self.files.clone(), self.group, meta.clone());
        let records = tokio::task::spawn_blocking(move || files.stage(g, &received, &m))
            .await
            .map_err(|e| snapshot_err(e.to_string()))?
            .map_err(snapshot_err)?;
        tracing::info!(
            "slot group {g}: installing the leader's snapshot at log {} ({records} keys)",
            meta.last_log_id.map_or("-".to_string(), |l| l.to_string()),
        );
        let keys = self.install_staged(meta).await.map_err(sm_err)?;
        tracing::info!(
            "slot group {}: installed the leader's snapshot at log {} ({keys} keys) in {} ms",
            self.group,
            meta.last_log_id.map_or("-".to_string(), |l| l.to_string()),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .files
            .load(self.group)
            .map_err(snapshot_err)?
            .map(|(meta, file)| Snapshot {
                meta,
                snapshot: Box::new(file),
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, RaftLogReader};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::cluster::types::Vote;
    use crate::config::AppendFsync;
    use crate::storage::KeyValues;

    /// Cores whose every step is durable at once, as a kill -9 after that step leaves them.
    #[derive(Default)]
    struct FakeCores(Mutex<FakeState>);

    #[derive(Default)]
    struct FakeState {
        keys: BTreeMap<Vec<u8>, Vec<u8>>,
        mark: Option<LogId>,
        membership: Option<Membership>,
        /// The install steps seen: "begin", the size of each batch, "finish".
        steps: Vec<String>,
        /// Batches taken before the next one fails (the process "dies" there).
        die_after_batches: Option<usize>,
    }

    impl FakeCores {
        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().expect("fake cores lock")
        }
    }

    fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
        Box::pin(async move { v })
    }

    impl Cores for FakeCores {
        fn apply(
            &self,
            _: GroupId,
            _: Range<usize>,
            _: Vec<ApplyItem>,
            _: LogId,
        ) -> BoxFuture<'static, Result<Vec<Response>, String>> {
            ready(Err("these tests apply no entries".to_string()))
        }

        fn applied(&self, _: GroupId, _: Range<usize>) -> Result<Option<LogId>, String> {
            Ok(self.state().mark)
        }

        fn membership(&self, _: GroupId) -> Result<Option<Membership>, String> {
            Ok(self.state().membership.clone())
        }

        fn save_membership(&self, _: GroupId, m: &Membership) -> Result<(), String> {
            self.state().membership = Some(m.clone());
            Ok(())
        }

        fn flush(&self, _: Range<usize>) -> BoxFuture<'static, Result<(), String>> {
            ready(Ok(()))
        }

        fn install(
            &self,
            _: GroupId,
            _: Range<usize>,
            _: KeyValues,
            _: Option<LogId>,
        ) -> BoxFuture<'static, Result<(), String>> {
            ready(Err("snapshots install in steps".to_string()))
        }

        fn install_begin(
            &self,
            _: GroupId,
            _: Range<usize>,
        ) -> BoxFuture<'static, Result<(), String>> {
            let mut s = self.state();
            s.keys.clear();
            s.mark = None;
            s.steps.push("begin".into());
            ready(Ok(()))
        }

        fn install_records(
            &self,
            _: GroupId,
            _: Range<usize>,
            records: KeyValues,
        ) -> BoxFuture<'static, Result<(), String>> {
            let mut s = self.state();
            if let Some(n) = s.die_after_batches.as_mut() {
                if *n == 0 {
                    return ready(Err("killed".to_string()));
                }
                *n -= 1;
            }
            s.steps.push(records.len().to_string());
            s.keys.extend(records);
            ready(Ok(()))
        }

        fn install_finish(
            &self,
            _: GroupId,
            _: Range<usize>,
            last: Option<LogId>,
        ) -> BoxFuture<'static, Result<(), String>> {
            let mut s = self.state();
            s.mark = last;
            s.steps.push("finish".into());
            ready(Ok(()))
        }
    }

    const G: GroupId = 5;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    struct Node {
        _dir: tempfile::TempDir,
        storage: Arc<Storage>,
        files: Arc<SnapshotFiles>,
        cores: Arc<FakeCores>,
    }

    impl Node {
        fn new() -> Node {
            let dir = tempfile::tempdir().unwrap();
            let storage = Storage::open(dir.path(), Box::new(|| AppendFsync::EverySec)).unwrap();
            let files = Arc::new(SnapshotFiles::new(dir.path()));
            Node {
                _dir: dir,
                storage,
                files,
                cores: Arc::new(FakeCores::default()),
            }
        }

        fn open(&self) -> Result<GroupSm, String> {
            GroupSm::open(
                G,
                0..100,
                self.cores.clone(),
                self.storage.clone(),
                self.files.clone(),
            )
        }
    }

    fn record(i: u32) -> (Vec<u8>, Vec<u8>) {
        (i.to_be_bytes().to_vec(), format!("value {i}").into_bytes())
    }

    /// The leader's snapshot of `n` records at log 3-40, as the bytes it sends.
    fn leader_snapshot(n: u32) -> (Meta, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        let voters = BTreeSet::from([1, 2, 3]);
        let meta = Meta {
            last_log_id: Some(log_id(3, 40)),
            last_membership: Membership::new(
                Some(log_id(2, 7)),
                openraft::Membership::new(vec![voters], ()),
            ),
            snapshot_id: "5-40-1".into(),
        };
        let mut w = files.create(G, &meta).unwrap();
        for i in 0..n {
            let (k, v) = record(i);
            w.push(&k, &v).unwrap();
        }
        w.commit().unwrap();
        let bytes = std::fs::read(dir.path().join("raft-snapshots/g5.snap")).unwrap();
        (meta, bytes)
    }

    async fn receive(files: &SnapshotFiles, bytes: &[u8]) -> Box<SnapshotFile> {
        let mut f = files.receive(G).unwrap();
        f.write_all(bytes).await.unwrap();
        f.shutdown().await.unwrap();
        Box::new(f)
    }

    #[test]
    fn install_streams_in_batches_and_replaces_the_keys() {
        let node = Node::new();
        node.cores
            .state()
            .keys
            .insert(b"old".to_vec(), b"gone".to_vec());
        let (meta, bytes) = leader_snapshot(25_000);
        runtime().block_on(async {
            let mut sm = node.open().unwrap();
            let data = receive(&node.files, &bytes).await;
            sm.install_snapshot(&meta, data).await.unwrap();
            assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(3, 40)));
            let current = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta.snapshot_id, "5-40-1");
        });
        let s = node.cores.state();
        assert_eq!(s.steps, ["begin", "10000", "10000", "5000", "finish"]);
        assert_eq!(s.keys.len(), 25_000);
        assert_eq!(s.keys.first_key_value(), Some((&record(0).0, &record(0).1)));
        assert_eq!(s.mark, Some(log_id(3, 40)));
        assert_eq!(s.membership.as_ref(), Some(&meta.last_membership));
        assert!(node.files.staged(G).unwrap().is_none());
        // Only the installed snapshot is left: the received file became it.
        let left = std::fs::read_dir(node._dir.path().join("raft-snapshots"))
            .unwrap()
            .count();
        assert_eq!(left, 1);
    }

    #[test]
    fn an_install_cut_short_is_finished_at_the_next_start() {
        let node = Node::new();
        node.cores
            .state()
            .keys
            .insert(b"old".to_vec(), b"gone".to_vec());
        node.cores.state().mark = Some(log_id(1, 3));
        node.cores.state().die_after_batches = Some(1);
        let (meta, bytes) = leader_snapshot(25_000);
        let rt = runtime();
        rt.block_on(async {
            let mut sm = node.open().unwrap();
            let data = receive(&node.files, &bytes).await;
            assert!(sm.install_snapshot(&meta, data).await.is_err());
        });
        {
            // What the crash leaves: the old keys gone, some new ones, no applied mark, and
            // the received snapshot staged.
            let mut s = node.cores.state();
            assert_eq!((s.keys.len(), s.mark), (10_000, None));
            assert!(!s.keys.contains_key(b"old".as_slice()));
            s.die_after_batches = None;
            s.steps.clear();
        }
        assert!(node.files.staged(G).unwrap().is_some());
        assert!(node.files.load(G).unwrap().is_none());
        rt.block_on(async {
            // Restart: openraft's first question finishes the install.
            let mut sm = node.open().unwrap();
            let (applied, membership) = sm.applied_state().await.unwrap();
            assert_eq!(applied, Some(log_id(3, 40)));
            assert_eq!(membership, meta.last_membership);
            assert!(sm.get_current_snapshot().await.unwrap().is_some());
        });
        let s = node.cores.state();
        assert_eq!(s.steps, ["begin", "10000", "10000", "5000", "finish"]);
        assert_eq!((s.keys.len(), s.mark), (25_000, Some(log_id(3, 40))));
        assert!(node.files.staged(G).unwrap().is_none());
    }

    #[test]
    fn an_install_whose_last_step_was_durable_only_moves_its_file() {
        let node = Node::new();
        let (meta, bytes) = leader_snapshot(10);
        let staged = node.files.installing_path(G);
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::write(&staged, &bytes).unwrap();
        node.cores.state().mark = meta.last_log_id;
        node.cores.state().membership = Some(meta.last_membership.clone());
        runtime().block_on(async {
            let mut sm = node.open().unwrap();
            assert_eq!(sm.applied_state().await.unwrap().0, meta.last_log_id);
        });
        assert!(node.cores.state().steps.is_empty());
        assert!(!staged.exists());
        assert_eq!(node.files.load(G).unwrap().unwrap().0, meta);
    }

    /// A log purged past the applied mark with no install staged (the crash came between
    /// openraft's purge and the staging): the log restarts at the mark, vote kept, unless
    /// entries follow the purged prefix.
    #[test]
    fn a_log_purged_past_the_applied_state_restarts_there() {
        let node = Node::new();
        node.cores.state().mark = Some(log_id(1, 4));
        let vote = Vote::new_committed(3, 2);
        let entries = |r: std::ops::RangeInclusive<u64>| -> Vec<Entry> {
            r.map(|i| Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Blank,
            })
            .collect()
        };
        runtime().block_on(async {
            let mut log = node.storage.raft_log(G);
            log.save_vote(&vote).await.unwrap();
            log.blocking_append(entries(1..=10)).await.unwrap();
            log.save_committed(Some(log_id(1, 10))).await.unwrap();
            log.purge(log_id(1, 10)).await.unwrap();

            // Applied at or past the purged prefix: nothing to repair.
            node.cores.state().mark = Some(log_id(1, 10));
            node.open().unwrap();
            assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 10)));

            node.cores.state().mark = Some(log_id(1, 4));
            node.open().unwrap();
            let st = log.get_log_state().await.unwrap();
            assert_eq!(st.last_purged_log_id, Some(log_id(1, 4)));
            assert_eq!(st.last_log_id, Some(log_id(1, 4)));
            assert_eq!(log.read_committed().await.unwrap(), None);
            assert_eq!(log.read_vote().await.unwrap(), Some(vote));

            // Entries after a purged prefix the data is behind: refused, nothing dropped.
            log.purge(log_id(1, 10)).await.unwrap();
            log.blocking_append(entries(11..=12)).await.unwrap();
            let e = node.open().err().unwrap();
            assert!(e.contains("empty this node's dir"), "{e}");
            let got = log.try_get_log_entries(0..).await.unwrap();
            assert_eq!(got.len(), 2);
        });
    }
}
