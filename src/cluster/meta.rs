//! The meta group: one more Raft group, replicated on every node (the first
//! [`META_VOTERS`](super::topology::META_VOTERS) vote, the rest follow as learners) and hosted
//! on core 0, whose state is the cluster map ([`Layout`]): the nodes, and which nodes
//! replicate each slot group. Every change to the map (a node joining or leaving, a replica
//! moving) is one committed entry carrying the whole new map with a higher epoch; an entry
//! whose epoch is not newer than the current map's is ignored, so two racing changes cannot
//! both land and a node that joined with a recent map can replay older entries harmlessly.
//!
//! The meta group also carries the node's function libraries (FUNCTION LOAD and friends): an
//! entry holds one validated change to the library set, applied on every node in log order
//! (the outcome is the same everywhere, and the proposer reads it back by the entry's nonce).
//! The set is persisted with the meta state and travels in the group's snapshot, so a node
//! that joins later gets it either way. The cluster's ACL users travel the same way (ACL
//! SETUSER / DELUSER / LOAD, and the first meta leader's configured users as the first set:
//! `security::acl::UsersChange`).
//!
//! The state (map, applied log id, membership) is one record in storage's `raft` keyspace,
//! written with each apply; after a crash the log replays on top of it. This node's id is
//! another record, the library set a third (`storage::FUNCTIONS_RECORD`) and the users a
//! fourth (`storage::USERS_RECORD`), both written in the same batch as the state.

use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::topology::Layout;
use super::types::{GroupId, LogId, Membership, NodeId};
use super::wire;
use crate::command::function::library::{LibraryChange, LibrarySet};
use crate::engine::core::Core;
use crate::engine::record::{self, Payload};
use crate::engine::{libraries, users};
use crate::security::acl::{UserRules, UsersChange};
use crate::storage::{Batch, FUNCTIONS_RECORD, Item, Storage, USERS_RECORD};

/// The meta group's id (slot groups count up from 0; 0xFFFF holds node-wide records).
pub const META: GroupId = 0xFFFE;

/// The state record's tag under the meta group's prefix, and this node's id under the
/// node-wide prefix (where the function libraries are tag 0x24, the ACL users 0x25). (0x12
/// and 0x13 were the 0.9-based cluster's bincode records: see [`older_cluster`].)
const TAG_STATE: u8 = 0x22;
const TAG_SELF: u8 = 0x23;
const OLD_TAG_STATE: u8 = 0x12;
const NODE_WIDE: GroupId = 0xFFFF;

fn key(group: GroupId, tag: u8) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(tag);
    k
}

/// Audit log lines for the nodes that joined or left between two cluster maps.
fn audit_membership(before: &Layout, after: &Layout) {
    use crate::security::audit::{Event, record};
    for (id, node) in &after.nodes {
        if !before.nodes.contains_key(id) {
            let address = format!("{}:{}@{}", node.host, node.port, node.bus_port);
            record(&Event::Membership {
                change: "joined",
                node: &node.name,
                address: Some(&address),
            });
        }
    }
    for (id, node) in &before.nodes {
        if !after.nodes.contains_key(id) {
            record(&Event::Membership {
                change: "left",
                node: &node.name,
                address: None,
            });
        }
    }
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

/// Stores this node's id and `stored` as its meta state, with no function libraries and no
/// committed users (the meta log or snapshot brings the cluster's), and waits until that is
/// durable.
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
            libraries::record(&LibrarySet::default(), 0),
            users::record(None),
        ],
        ..Batch::default()
    });
    storage.synced().await
}

/// A meta entry's payload: the whole new map.
pub fn entry(map: &Layout) -> Vec<u8> {
    record::opaque(&wire::encode(map))
}

/// The first byte of a function-libraries entry's opaque data, and of an ACL users entry's
/// (a map entry's is its wire version, 1).
const ENTRY_FUNCTIONS: u8 = 0xF0;
const ENTRY_USERS: u8 = 0xF1;

/// A change to the function libraries or the users, and the nonce its proposer finds the
/// outcome by.
#[derive(Serialize, Deserialize)]
struct ChangeEntry<C> {
    nonce: u64,
    change: C,
}

fn change_entry<C: Serialize>(kind: u8, nonce: u64, change: &C) -> Vec<u8> {
    let mut data = vec![kind];
    data.extend_from_slice(&wire::encode(&ChangeEntry { nonce, change }));
    record::opaque(&data)
}

/// A meta entry's payload: one change to the function libraries.
pub fn functions_entry(nonce: u64, change: &LibraryChange) -> Vec<u8> {
    change_entry(ENTRY_FUNCTIONS, nonce, change)
}

/// A meta entry's payload: one change to the cluster's ACL users.
pub fn users_entry(nonce: u64, change: &UsersChange) -> Vec<u8> {
    change_entry(ENTRY_USERS, nonce, change)
}

/// Applies the function-libraries change at log index `at` on this node: the node's set,
/// and its record (which names `at`, see `Libraries::apply_replicated`) staged for the next
/// storage batch.
fn apply_functions(core: &Core, nonce: u64, at: u64, change: &LibraryChange) {
    let libraries = &core.shared.scripts.libraries;
    if let Some(set) = libraries.apply_replicated(nonce, at, change) {
        core.stage_raft_item(FUNCTIONS_RECORD.to_vec(), Some(libraries::encode(&set, at)));
    }
}

/// Takes `set` (holding the changes up to log index `applied`) as the node's libraries: a
/// snapshot's, staged like [`apply_functions`].
pub fn install_functions(core: &Core, set: LibrarySet, applied: u64) {
    core.stage_raft_item(
        FUNCTIONS_RECORD.to_vec(),
        Some(libraries::encode(&set, applied)),
    );
    core.shared.scripts.libraries.replace(set, applied);
}

/// Applies the change to the users committed at log index `at` on this node: the node's
/// users, and their record staged for the next storage batch (with the meta state).
fn apply_users(core: &Core, nonce: u64, at: u64, change: &UsersChange) {
    if let Some(set) = core.shared.acl.apply_replicated(nonce, at, change) {
        core.stage_raft_item(USERS_RECORD.to_vec(), Some(users::encode(&set, at)));
    }
}

/// Takes `set` (holding the changes up to log index `applied`) as the cluster's users: a
/// snapshot's, staged like [`apply_users`]. Users this node cannot make leave its own in
/// force (logged).
pub fn install_users(core: &Core, set: &[UserRules], applied: u64) {
    match core.shared.acl.install_committed(set, applied) {
        Ok(()) => core.stage_raft_item(USERS_RECORD.to_vec(), Some(users::encode(set, applied))),
        Err(e) => tracing::error!(
            "the meta snapshot's ACL users cannot be made here, this node keeps its users: {e}"
        ),
    }
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
    pub fn apply(&mut self, core: &Core, payload: &[u8], at: LogId) -> bool {
        let map = match record::decode(payload) {
            Ok(Payload::Opaque([ENTRY_FUNCTIONS, rest @ ..])) => {
                match wire::decode::<ChangeEntry<LibraryChange>>(rest, "function change") {
                    Ok(e) => apply_functions(core, e.nonce, at.index, &e.change),
                    Err(e) => tracing::error!("meta group: entry {at}: {e}; ignored"),
                }
                return false;
            }
            Ok(Payload::Opaque([ENTRY_USERS, rest @ ..])) => {
                match wire::decode::<ChangeEntry<UsersChange>>(rest, "ACL users change") {
                    Ok(e) => apply_users(core, e.nonce, at.index, &e.change),
                    Err(e) => tracing::error!("meta group: entry {at}: {e}; ignored"),
                }
                return false;
            }
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
        if crate::security::audit::enabled() {
            audit_membership(&self.stored.map, &map);
        }
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
