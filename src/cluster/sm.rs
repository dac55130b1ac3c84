//! A group's Raft state machine, on the core that hosts the group.
//!
//! A slot group's state is the core's shard (its keys in the group's slots): a committed
//! entry's records are applied to it — except on the leader that proposed them, which applied
//! them while it evaluated the commands and only marks them committed here (see
//! `engine::replicated`). The meta group's state is the cluster map.
//!
//! Durability: the group's "applied up to log id L" (and its membership) is written in the
//! same storage batch as the data changes it covers, so after a crash the group restarts
//! exactly at L and openraft applies the log after it again.
//!
//! Snapshots are files (see `snapshot`): built from a point-in-time view of storage taken once
//! the core handed over everything applied; received into a file, checked whole, then
//! installed in bounded batches. A crash can stop an install half done, and openraft cannot
//! restart from that (it would trust an applied state the data does not hold, or find the log
//! it needs purged), so:
//! - the received file is checked whole and synced, then renamed to `g{g}.installing` before
//!   any key changes; its presence at start means "finish this install", which the first
//!   thing openraft asks at start ([`GroupSm::applied_state`]) does;
//! - the install's first step deletes the group's keys and clears its applied mark in one
//!   storage batch; the last sets the mark; only once those are durable does the file become
//!   the group's snapshot (`g{g}.snap`).

use std::ops::Range;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;
use std::{fmt, io};

use futures::{StreamExt, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::type_config::alias::SnapshotOf;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use openraft10 as openraft;
use serde::{Deserialize, Serialize};

use super::meta::{self, MetaState};
use super::node::{ClusterNode, group_name};
use super::snapshot::{Meta, SnapshotFile, SnapshotFiles, show_log_id};
use super::types::{Data, GroupId, LogId, Membership, TypeConfig};
use super::wire;
use crate::engine::core::Core;
use crate::engine::record::{self, Payload};
use crate::engine::replicated::{self, Refusal};
use crate::engine::{libraries, users};
use crate::shard::Mutation;
use crate::storage::{Storage, codec};

/// Records per batch an install applies at most, and bytes of keys and values: a batch is
/// what the install holds in memory (twice: one read ahead), and what the core applies in one
/// go while its clients wait.
const INSTALL_BATCH_RECORDS: usize = 10_000;
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The state-machine record of a slot group: `[group BE][TAG_APPLIED]`.
const TAG_APPLIED: u8 = 0x20;

pub fn applied_key(g: GroupId) -> Vec<u8> {
    let mut k = g.to_be_bytes().to_vec();
    k.push(TAG_APPLIED);
    k
}

/// What a slot group stores beside its data: how far it applied, and its membership.
#[derive(Serialize, Deserialize, Default)]
struct Applied {
    applied: Option<LogId>,
    membership: Membership,
}

fn err(e: impl fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

enum Machine {
    Slots(Range<usize>),
    Meta(MetaState),
}

pub struct GroupSm {
    g: GroupId,
    core: Weak<Core>,
    node: Arc<ClusterNode>,
    storage: Arc<Storage>,
    applied: Option<LogId>,
    membership: Membership,
    machine: Machine,
    /// The snapshot whose install a crash cut short: finished before openraft hears the
    /// applied state.
    interrupted: Option<Meta>,
}

impl GroupSm {
    /// Slot group `g`'s state machine as storage holds it.
    pub fn open_slots(
        g: GroupId,
        slots: Range<usize>,
        core: &Rc<Core>,
        node: Arc<ClusterNode>,
        storage: Arc<Storage>,
    ) -> Result<GroupSm, String> {
        let stored: Applied = match storage.raft_get(&applied_key(g))? {
            Some(v) => wire::decode(&v, "slot group applied state").map_err(|e| e.0)?,
            None => Applied::default(),
        };
        let interrupted = node.files.staged(g)?;
        Ok(GroupSm {
            g,
            core: Rc::downgrade(core),
            node,
            storage,
            applied: stored.applied,
            membership: stored.membership,
            machine: Machine::Slots(slots),
            interrupted,
        })
    }

    /// The meta group's state machine, starting from `state`.
    pub fn open_meta(
        core: &Rc<Core>,
        node: Arc<ClusterNode>,
        storage: Arc<Storage>,
        state: MetaState,
    ) -> GroupSm {
        GroupSm {
            g: meta::META,
            core: Rc::downgrade(core),
            node,
            storage,
            applied: state.stored.applied,
            membership: state.stored.membership.clone(),
            machine: Machine::Meta(state),
            interrupted: None,
        }
    }

    fn core(&self) -> io::Result<Rc<Core>> {
        self.core
            .upgrade()
            .ok_or_else(|| err("the core hosting the group stopped"))
    }

    /// Tells the node how far this group is applied here (see `ClusterNode::applied`).
    fn publish_applied(&self) {
        self.node
            .set_applied(self.g, self.applied.map_or(0, |l| l.index));
    }

    /// Hands the applied mark and membership to storage with the core's next data batch.
    fn stage_applied(&self, core: &Core) {
        let v = wire::encode(&Applied {
            applied: self.applied,
            membership: self.membership.clone(),
        });
        core.stage_raft_item(applied_key(self.g), Some(v));
    }

    /// Applies one normal entry of a slot group.
    fn apply_data(&mut self, core: &Core, log_id: &LogId, data: &Data) -> io::Result<()> {
        match record::decode(&data.0) {
            Ok(Payload::Records(r)) => {
                let own = log_id.leader_id.node_id == self.node.id
                    && replicated::is_own(core, self.g, r.proposal);
                if own {
                    replicated::committed(core, self.g, r.proposal);
                    return Ok(());
                }
                // Another leader's entry: whatever this node still holds uncommitted from
                // its own leadership is not in the log any more and goes first.
                replicated::lost(core, self.g, Refusal::NoLeader);
                let mut shard = core.shard.borrow_mut();
                r.validate(shard.limits).map_err(err)?;
                shard.clock_ms = r.now;
                let applied = r.apply(&mut shard).map_err(err);
                // Each unit ends in database 0; a damaged entry must not leave another.
                shard.select(0);
                applied
            }
            Ok(Payload::Opaque(_)) => Ok(()),
            Err(e) => Err(err(format!("{}: entry {log_id}: {e}", group_name(self.g)))),
        }
    }

    /// Installs the group's snapshot from its `.installing` file (see
    /// [`SnapshotFiles::stage`]): deletes the group's keys, adds the file's records in
    /// bounded batches, stores the membership and applied mark, and once those are durable
    /// makes the file the group's snapshot. Returns the number of keys.
    async fn install_staged(&mut self, meta: &Meta) -> Result<u64, String> {
        let Machine::Slots(slots) = &self.machine else {
            return Err("the meta group installs its map in place".into());
        };
        let slots = slots.clone();
        let core = self.core().map_err(|e| e.to_string())?;
        let g = self.g;
        // A script paused on this core (see `engine::pause`) ends first.
        core.gate.wait_open(None).await;
        // Anything uncommitted of this node's leadership goes first (a snapshot replaces it).
        replicated::lost(&core, g, Refusal::NoLeader);
        core.shard.borrow_mut().for_each_db(|shard| {
            shard.apply(Mutation::FlushSlots {
                slots: slots.start as u16..slots.end as u16,
            });
        });
        self.applied = None;
        self.stage_applied(&core);
        core.flush_changes();
        // The file is read on a thread of its own, one batch ahead of the core.
        let (tx, mut rx) =
            futures::channel::mpsc::channel::<Result<crate::storage::KeyValues, String>>(1);
        let (files, path) = (self.node.files.clone(), self.node.files.installing_path(g));
        std::thread::Builder::new()
            .name("tallykv-install".into())
            .spawn(move || {
                let mut tx = tx;
                let mut r = match files.reader(&path) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = futures::executor::block_on(futures::SinkExt::send(
                            &mut tx,
                            Err(e.to_string()),
                        ));
                        return;
                    }
                };
                loop {
                    let batch = r.next_batch(INSTALL_BATCH_RECORDS, INSTALL_BATCH_BYTES);
                    let last = !matches!(&batch, Ok(b) if !b.is_empty());
                    if futures::executor::block_on(futures::SinkExt::send(&mut tx, batch)).is_err()
                        || last
                    {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the install thread: {e}"))?;
        let mut keys = 0u64;
        while let Some(batch) = rx.next().await {
            let batch = batch?;
            if batch.is_empty() {
                break;
            }
            keys += batch.len() as u64;
            core.gate.wait_open(None).await;
            {
                let mut shard = core.shard.borrow_mut();
                let limits = shard.limits;
                for (k, v) in &batch {
                    // Numbered databases' keys carry theirs (see `SnapshotBuilder`).
                    let (db, k) = match k.first() {
                        Some(&codec::DB_MARKER) => codec::decode_db(&k[1..])?,
                        _ => (0, &k[..]),
                    };
                    let (slot, key) = codec::decode_key(k)?;
                    if !slots.contains(&(slot as usize)) {
                        continue;
                    }
                    let (value, expire_at) = codec::decode_value(v, limits)?;
                    shard.select(db as usize);
                    shard.apply(Mutation::Restore {
                        key,
                        value,
                        expire_at,
                    });
                }
                shard.select(0);
            }
            core.flush_changes();
            // The core hands records over faster than the writer commits them: wait for it
            // rather than queue the whole snapshot in memory.
            if self.storage.backlogged() {
                self.storage.synced().await?;
            }
            crate::engine::persist::yield_now().await;
        }
        core.gate.wait_open(None).await;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.stage_applied(&core);
        self.publish_applied();
        core.flush_changes();
        core.finish();
        self.storage.synced().await?;
        self.node.files.commit_staged(g)?;
        Ok(keys)
    }
}

/// Builds a group's snapshot file from a point-in-time view of storage, on a thread of its own.
pub struct SnapshotBuilder {
    g: GroupId,
    slots: Option<Range<usize>>,
    storage: Arc<Storage>,
    files: Arc<SnapshotFiles>,
    /// The meta group's map, function libraries and ACL users (its whole state).
    map: Option<Vec<u8>>,
    functions: Option<Vec<u8>>,
    users: Option<Vec<u8>>,
    prepared: Result<(Option<fjall::Snapshot>, Meta), String>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, SnapshotFile>> {
        let (view, meta) = self.prepared.clone().map_err(err)?;
        let (storage, files, slots, g, map, functions, users) = (
            self.storage.clone(),
            self.files.clone(),
            self.slots.clone(),
            self.g,
            self.map.clone(),
            self.functions.clone(),
            self.users.clone(),
        );
        let started = Instant::now();
        let meta2 = meta.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::Builder::new()
            .name("tallykv-snapshot".into())
            .spawn(move || {
                let built = (|| {
                    // Written record by record as the view is read: the file, not memory,
                    // holds it.
                    let mut out = files.create(g, &meta2)?;
                    let mut keys = 0u64;
                    if let Some(map) = map {
                        out.push(b"map", &map)?;
                    }
                    if let Some(functions) = functions {
                        out.push(b"functions", &functions)?;
                    }
                    if let Some(users) = users {
                        out.push(b"users", &users)?;
                    }
                    if let (Some(view), Some(slots)) = (view, slots) {
                        let mut failed = None;
                        storage.read_slots_at(&view, slots.clone(), |chunk| {
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
                        // The numbered databases' keys, marked with theirs (`cluster-databases`).
                        let mut marked = Vec::new();
                        storage.read_db_slots_at(&view, slots, |db, chunk| {
                            keys += chunk.len() as u64;
                            for (k, v) in chunk {
                                marked.clear();
                                marked.push(codec::DB_MARKER);
                                marked.extend_from_slice(&db.to_be_bytes());
                                marked.extend_from_slice(&k);
                                if let Err(e) = out.push(&marked, &v) {
                                    failed = Some(e);
                                    return false;
                                }
                            }
                            true
                        })?;
                        if let Some(e) = failed {
                            return Err(e);
                        }
                    }
                    let (file, bytes) = out.commit()?;
                    Ok::<_, String>((file, bytes, keys))
                })();
                let _ = tx.send(built);
            })
            .map_err(err)?;
        let (file, bytes, keys) = rx
            .await
            .map_err(|_| err("the snapshot thread stopped"))?
            .map_err(err)?;
        tracing::info!(
            "{}: snapshot at log {} built: {keys} keys, {bytes} bytes in {} ms",
            group_name(g),
            show_log_id(&meta),
            started.elapsed().as_millis()
        );
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    /// openraft asks this first when the group starts, before it reads any entry: an
    /// install a crash cut short is finished here (see the module doc).
    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, Membership)> {
        if let Some(meta) = self.interrupted.take() {
            let g = self.g;
            let at = show_log_id(&meta);
            if self.applied.map(|l| l.index) >= meta.last_log_id.map(|l| l.index) {
                // The last step was durable; only the file's rename was lost.
                self.node.files.commit_staged(g).map_err(err)?;
                self.membership = meta.last_membership.clone();
            } else {
                tracing::warn!(
                    "{}: finishing the install of the snapshot at log {at} that a restart cut \
                     short",
                    group_name(g)
                );
                let started = Instant::now();
                let keys = self.install_staged(&meta).await.map_err(err)?;
                tracing::info!(
                    "{}: installed the snapshot at log {at} ({keys} keys) in {} ms",
                    group_name(g),
                    started.elapsed().as_millis()
                );
            }
        }
        self.publish_applied();
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let core = self.core()?;
        let mut meta_changed = false;
        while let Some((entry, responder)) = entries.try_next().await? {
            // A script paused on this core (see `engine::pause`) ends first: the shard is its.
            core.gate.wait_open(None).await;
            let log_id = entry.log_id();
            match &entry.payload {
                EntryPayload::Blank => {
                    // A new term's first entry: a leader that speculated under an earlier
                    // term is not leading any more.
                    if log_id.leader_id.node_id != self.node.id {
                        replicated::lost(&core, self.g, Refusal::NoLeader);
                    }
                }
                EntryPayload::Normal(data) => match &mut self.machine {
                    Machine::Slots(_) => self.apply_data(&core, &log_id, data)?,
                    Machine::Meta(state) => {
                        meta_changed |= state.apply(&core, &data.0, log_id);
                    }
                },
                EntryPayload::Membership(m) => {
                    self.membership = Membership::new(Some(log_id), m.clone());
                    tracing::info!(
                        "{}: voters now {:?} (log {log_id})",
                        group_name(self.g),
                        self.membership.membership().voter_ids().collect::<Vec<_>>()
                    );
                }
            }
            self.applied = Some(log_id);
            if let Some(r) = responder {
                r.send(());
            }
        }
        self.publish_applied();
        core.gate.wait_open(None).await;
        match &mut self.machine {
            Machine::Slots(_) => {
                self.stage_applied(&core);
                core.finish();
            }
            Machine::Meta(state) => {
                state.stored.applied = self.applied;
                state.stored.membership = self.membership.clone();
                state.persist(&core);
                if meta_changed {
                    state.publish();
                }
            }
        }
        Ok(())
    }

    /// Called between applies: the core hands its changes to storage, and a read view is
    /// taken once those are committed, so it holds exactly the state at `applied`.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let meta = Meta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        let (slots, map, functions, users) = match &self.machine {
            Machine::Slots(slots) => (Some(slots.clone()), None, None, None),
            Machine::Meta(state) => {
                let core = self.core().ok();
                (
                    None,
                    Some(wire::encode(&state.stored.map)),
                    core.as_ref().map(|c| {
                        let (set, applied) = c.shared.scripts.libraries.snapshot_applied();
                        libraries::encode(&set, applied)
                    }),
                    // None until the cluster committed users.
                    core.and_then(|c| c.shared.acl.committed_rules())
                        .map(|(set, applied)| users::encode(&set, applied)),
                )
            }
        };
        let prepared = if slots.is_some() {
            match self.core() {
                Err(e) => Err(e.to_string()),
                Ok(core) => {
                    core.gate.wait_open(None).await;
                    self.stage_applied(&core);
                    core.flush_changes();
                    let (tx, rx) = futures::channel::oneshot::channel();
                    self.storage.view_after_queued(move |r| {
                        let _ = tx.send(r);
                    });
                    match rx.await {
                        Ok(Ok(view)) => Ok((Some(view), meta)),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err("the storage writer stopped".to_string()),
                    }
                }
            }
        } else {
            Ok((None, meta))
        };
        SnapshotBuilder {
            g: self.g,
            slots,
            storage: self.storage.clone(),
            files: self.node.files.clone(),
            map,
            functions,
            users,
            prepared,
        }
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: SnapshotFile) -> io::Result<()> {
        let started = Instant::now();
        let g = self.g;
        let received = snapshot.finish_receiving().map_err(err)?;
        if matches!(self.machine, Machine::Meta(_)) {
            let core = self.core()?;
            let Machine::Meta(state) = &mut self.machine else {
                return Ok(());
            };
            let read = self
                .node
                .files
                .reader(&received)
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    let (mut map, mut functions, mut users) = (None, None, None);
                    while let Some((k, v)) = r.next_record()? {
                        if k == b"map" {
                            map = Some(wire::decode(&v, "cluster map").map_err(|e| e.0)?);
                        } else if k == b"functions" {
                            functions = Some(libraries::decode(&v)?);
                        } else if k == b"users" {
                            users = Some(users::decode(&v)?);
                        }
                    }
                    let map = map.ok_or("the meta snapshot has no map")?;
                    // A snapshot from before functions existed: there were none. One without
                    // users: the cluster had committed none yet (this node keeps its own).
                    Ok((map, functions.unwrap_or_default(), users))
                });
            let (map, (functions, functions_applied), users) = match read {
                Ok(r) => r,
                Err(e) => {
                    let _ = std::fs::remove_file(&received);
                    return Err(err(e));
                }
            };
            meta::install_functions(&core, functions, functions_applied);
            if let Some((set, applied)) = users {
                meta::install_users(&core, &set, applied);
            }
            self.applied = meta.last_log_id;
            self.membership = meta.last_membership.clone();
            state.stored.applied = self.applied;
            state.stored.membership = self.membership.clone();
            state.take(map);
            state.persist(&core);
            state.publish();
            // Stored before the file replaces the old snapshot: a crash between the two must
            // not leave a snapshot newer than the state the group restarts from.
            self.storage.synced().await.map_err(err)?;
            self.node.files.adopt(g, &received).map_err(err)?;
            return Ok(());
        }
        // Checked whole before any key changes: a bad file leaves the group as it was.
        let (files, m) = (self.node.files.clone(), meta.clone());
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(files.stage(g, &received, &m));
        });
        let records = rx
            .await
            .map_err(|_| err("the staging thread stopped"))?
            .map_err(err)?;
        tracing::info!(
            "{}: installing the leader's snapshot at log {} ({records} keys)",
            group_name(g),
            show_log_id(meta),
        );
        let keys = self.install_staged(meta).await.map_err(err)?;
        tracing::info!(
            "{}: installed the leader's snapshot at log {} ({keys} keys) in {} ms",
            group_name(g),
            show_log_id(meta),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<TypeConfig, SnapshotFile>>> {
        Ok(self
            .node
            .files
            .load(self.g)
            .map_err(err)?
            .map(|(meta, file)| Snapshot {
                meta,
                snapshot: file,
            }))
    }
}
