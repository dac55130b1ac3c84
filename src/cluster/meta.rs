//! The meta group: one more Raft group, replicated on every node (the first
//! [`META_VOTERS`](super::topology::META_VOTERS) vote, the rest follow as learners), whose
//! state is the cluster map ([`Layout`]): the nodes, and which nodes replicate each slot
//! group. Every change to the map (a node joining or leaving, a replica moving) is one
//! committed entry carrying the whole new map with a higher epoch; an entry whose epoch is
//! not newer than the current map's is ignored, so two racing changes cannot both land and
//! a node that joined with a recent map can replay older entries harmlessly.
//!
//! The state (map, applied log id, membership) is one record in the `raft` keyspace, written
//! with each apply; after a crash the log replays on top of it.

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::snapshot::{self, Meta, SnapshotFile, SnapshotFiles};
use super::topology::Layout;
use super::types::{
    Entry, GroupId, LogId, Membership, NodeId, NodeInfo, Request, Response, StorageError,
    TypeConfig,
};
use crate::storage::{Batch, Item, Storage};

/// The meta group's id (slot groups count up from 0; 0xFFFF holds node-wide records).
pub const META: GroupId = 0xFFFE;

/// The state record's tag under the meta group's prefix (state-machine tags start at 0x10;
/// 0x10 and 0x11 are the slot groups' applied marks and membership).
const TAG_STATE: u8 = 0x12;
/// This node's id, under the node-wide prefix.
const TAG_SELF: u8 = 0x13;
const NODE_WIDE: GroupId = 0xFFFF;

fn key(group: GroupId, tag: u8) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(tag);
    k
}

/// What the meta state machine keeps on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    pub applied: Option<LogId>,
    pub membership: Membership,
    pub map: Layout,
}

/// The stored meta state, if this node has one (it joined or bootstrapped before).
pub fn load(storage: &Storage) -> Result<Option<Stored>, String> {
    storage
        .raft_get(&key(META, TAG_STATE))?
        .map(|v| bincode::deserialize(&v).map_err(|e| format!("bad stored cluster map: {e}")))
        .transpose()
}

/// This node's id, once it has one.
pub fn load_self(storage: &Storage) -> Result<Option<NodeId>, String> {
    storage
        .raft_get(&key(NODE_WIDE, TAG_SELF))?
        .map(|v| {
            <[u8; 8]>::try_from(v.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| "bad stored node id".to_string())
        })
        .transpose()
}

/// Stores this node's id and `stored` as its meta state, and waits until that is durable.
pub async fn save_joined(storage: &Storage, id: NodeId, stored: &Stored) -> Result<(), String> {
    let state = bincode::serialize(stored).map_err(|e| e.to_string())?;
    storage.write(Batch {
        wipe: None,
        items: Vec::new(),
        raft: vec![
            Item {
                key: key(NODE_WIDE, TAG_SELF),
                value: Some(id.to_be_bytes().to_vec()),
            },
            Item {
                key: key(META, TAG_STATE),
                value: Some(state),
            },
        ],
        done: None,
    });
    storage.synced().await
}

pub struct MetaSm {
    storage: Arc<Storage>,
    files: Arc<SnapshotFiles>,
    state: Stored,
    publish: watch::Sender<Arc<Layout>>,
}

fn sm_err(e: String) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e)).into()
}

fn snapshot_err(e: String) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e)).into()
}

/// A RESP simple string or error, as a meta entry's reply.
fn reply(ok: bool) -> Response {
    let text: &[u8] = if ok {
        b"+OK\r\n"
    } else {
        b"-STALE the cluster map changed meanwhile\r\n"
    };
    Response {
        replies: vec![bytes::Bytes::from_static(text)],
    }
}

impl MetaSm {
    /// The meta state machine starting from `state`; every applied map is sent on `publish`.
    pub fn new(
        storage: Arc<Storage>,
        files: Arc<SnapshotFiles>,
        state: Stored,
        publish: watch::Sender<Arc<Layout>>,
    ) -> MetaSm {
        MetaSm {
            storage,
            files,
            state,
            publish,
        }
    }

    fn persist(&self) -> Result<(), String> {
        let value = bincode::serialize(&self.state).map_err(|e| e.to_string())?;
        self.storage.write(Batch {
            wipe: None,
            items: Vec::new(),
            raft: vec![Item {
                key: key(META, TAG_STATE),
                value: Some(value),
            }],
            done: None,
        });
        Ok(())
    }

    fn take_map(&mut self, map: Layout) -> bool {
        if map.epoch <= self.state.map.epoch {
            return false;
        }
        tracing::info!(
            "cluster map epoch {}: {} nodes{}, groups {}",
            map.epoch,
            map.nodes.len(),
            if map.leaving.is_empty() {
                String::new()
            } else {
                format!(" ({:?} leaving)", map.leaving)
            },
            map.groups
                .iter()
                .enumerate()
                .map(|(g, gl)| format!("{g}:{:?}", gl.members))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.state.map = map;
        self.publish.send_replace(Arc::new(self.state.map.clone()));
        true
    }
}

pub struct MetaSnapshotBuilder {
    storage: Arc<Storage>,
    files: Arc<SnapshotFiles>,
    state: Stored,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // openraft purges the log up to the snapshot once it is built, straight to fjall; the
        // state it was built from went through the storage writer. Synced first, so a crash
        // can never find the log purged past the stored state.
        self.storage.synced().await.map_err(snapshot_err)?;
        let meta = Meta {
            last_log_id: self.state.applied,
            last_membership: self.state.membership.clone(),
            snapshot_id: format!(
                "meta-{}-{}",
                self.state.applied.map_or(0, |l| l.index),
                self.state.map.epoch
            ),
        };
        let map = bincode::serialize(&self.state.map).map_err(|e| snapshot_err(e.to_string()))?;
        // Small (one map): written in place, but to a file like a slot group's, since both
        // share openraft's snapshot data type.
        let mut out = self.files.create(META, &meta).map_err(snapshot_err)?;
        out.push(b"map", &map).map_err(snapshot_err)?;
        let (file, _) = out.commit().map_err(snapshot_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaSm {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        for entry in entries {
            self.state.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Response::default()),
                EntryPayload::Normal(Request::Map(map)) => {
                    let taken = self.take_map(*map);
                    replies.push(reply(taken));
                }
                EntryPayload::Normal(_) => replies.push(reply(false)),
                EntryPayload::Membership(m) => {
                    self.state.membership = Membership::new(Some(entry.log_id), m);
                    tracing::info!(
                        "meta group: voters now {:?}",
                        self.state
                            .membership
                            .membership()
                            .voter_ids()
                            .collect::<Vec<_>>()
                    );
                    replies.push(Response::default());
                }
            }
        }
        self.persist().map_err(sm_err)?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetaSnapshotBuilder {
            storage: self.storage.clone(),
            files: self.files.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        Ok(Box::new(self.files.receive(META).map_err(snapshot_err)?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let received = snapshot.finish_receiving().await.map_err(snapshot_err)?;
        let map = read_map(&received);
        if map.is_err() {
            let _ = std::fs::remove_file(&received);
        }
        let map = map.map_err(snapshot_err)?;
        self.state.applied = meta.last_log_id;
        self.state.membership = meta.last_membership.clone();
        self.take_map(map);
        self.persist().map_err(sm_err)?;
        // The state is stored before the file replaces the old snapshot: a crash between the
        // two must not leave a snapshot newer than what the state machine restarts from.
        self.storage.synced().await.map_err(sm_err)?;
        self.files.adopt(META, &received).map_err(snapshot_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .files
            .load(META)
            .map_err(snapshot_err)?
            .map(|(meta, file)| Snapshot {
                meta,
                snapshot: Box::new(file),
            }))
    }
}

/// The cluster map in a received meta snapshot file.
fn read_map(path: &std::path::Path) -> Result<Layout, String> {
    let mut reader = snapshot::Reader::open(path)?;
    while let Some((k, v)) = reader.next_record()? {
        if k == b"map" {
            return bincode::deserialize(&v)
                .map_err(|e| format!("{}: the cluster map: {e}", path.display()));
        }
    }
    Err(format!("{}: the meta snapshot has no map", path.display()))
}
