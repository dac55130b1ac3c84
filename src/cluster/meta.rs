//! The meta group: one more Raft group, replicated on every node (the first
//! [`META_VOTERS`](super::topology::META_VOTERS) vote, the rest follow as learners) and hosted
//! on core 0, whose state is the cluster map ([`Layout`]): the nodes, and which nodes
//! replicate each slot group. Every change to the map (a node joining or leaving, a replica
//! moving) is one committed entry carrying the whole new map with a higher epoch; an entry
//! whose epoch is not newer than the current map's is ignored, so two racing changes cannot
//! both land and a node that joined with a recent map can replay older entries harmlessly.
//!
//! The state (map, applied log id, membership) is one record in storage's `raft` keyspace,
//! written with each apply; after a crash the log replays on top of it. This node's id is
//! another record.

use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::topology::Layout;
use super::types::{GroupId, LogId, Membership, NodeId};
use super::wire;
use crate::engine::core::Core;
use crate::engine::record::{self, Payload};
use crate::storage::{Batch, Item, Storage};

/// The meta group's id (slot groups count up from 0; 0xFFFF holds node-wide records).
pub const META: GroupId = 0xFFFE;

/// The state record's tag under the meta group's prefix, and this node's id under the
/// node-wide prefix. (0x12 and 0x13 were the 0.9-based cluster's bincode records: see
/// [`older_cluster`].)
const TAG_STATE: u8 = 0x22;
const TAG_SELF: u8 = 0x23;
const OLD_TAG_STATE: u8 = 0x12;
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
        .map(|v| wire::decode(&v, "stored cluster map").map_err(|e| e.0))
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

/// Whether the data dir holds a cluster written by the 0.9-based build (bincode records,
/// command entries in a fjall log): this build cannot read its log or map.
pub fn older_cluster(storage: &Storage) -> Result<bool, String> {
    Ok(storage.raft_get(&key(META, OLD_TAG_STATE))?.is_some()
        && storage.raft_get(&key(META, TAG_STATE))?.is_none())
}

/// Stores this node's id and `stored` as its meta state, and waits until that is durable.
pub async fn save_joined(storage: &Storage, id: NodeId, stored: &Stored) -> Result<(), String> {
    storage.write(Batch {
        raft: vec![
            Item {
                key: key(NODE_WIDE, TAG_SELF),
                value: Some(id.to_be_bytes().to_vec()),
            },
            Item {
                key: key(META, TAG_STATE),
                value: Some(wire::encode(stored)),
            },
        ],
        ..Batch::default()
    });
    storage.synced().await
}

/// A meta entry's payload: the whole new map.
pub fn entry(map: &Layout) -> Vec<u8> {
    record::opaque(&wire::encode(map))
}

/// The meta state machine's state, and who hears about each new map.
pub struct MetaState {
    pub stored: Stored,
    on_map: Rc<dyn Fn(Arc<Layout>)>,
}

impl MetaState {
    pub fn new(stored: Stored, on_map: Rc<dyn Fn(Arc<Layout>)>) -> MetaState {
        MetaState { stored, on_map }
    }

    /// Applies one meta entry; true if it changed the map.
    pub fn apply(&mut self, payload: &[u8], at: LogId) -> bool {
        let map = match record::decode(payload) {
            Ok(Payload::Opaque(bytes)) => wire::decode::<Layout>(bytes, "cluster map"),
            Ok(Payload::Records(_)) => return false,
            Err(e) => Err(wire::WireError(e.to_string())),
        };
        match map {
            Ok(map) => self.take(map),
            Err(e) => {
                tracing::error!("meta group: entry {at}: {e}; ignored");
                false
            }
        }
    }

    /// Takes `map` if its epoch is newer; true if it did.
    pub fn take(&mut self, map: Layout) -> bool {
        if map.epoch <= self.stored.map.epoch {
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
        self.stored.map = map;
        true
    }

    /// Hands the state to storage now (core 0's next data batch).
    pub fn persist(&self, core: &Core) {
        core.stage_raft_item(key(META, TAG_STATE), Some(wire::encode(&self.stored)));
        core.flush_changes();
    }

    pub fn publish(&self) {
        (self.on_map)(Arc::new(self.stored.map.clone()));
    }
}
