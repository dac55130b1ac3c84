//! Hash slots, slot groups and their Raft replication, and the Redis Cluster protocol.
//!
//! Every slot group is an openraft group (0.10, single-threaded) hosted on the core that owns
//! its slots: its Raft state, log (`logstore` over the core's write-ahead log), peer links
//! (`link`, `net`) and state machine (`sm`, the core's shard) all run on that core's glommio
//! executor, so a write never leaves the core's thread between the client's socket and its
//! reply. The engine (`engine::replicated`) evaluates commands into records and proposes them
//! through `host`; this room never executes commands and never touches sockets of clients.

pub mod admin;
pub mod evict;
pub mod host;
pub mod link;
pub mod logstore;
pub mod membership;
pub mod meta;
pub mod net;
pub mod node;
pub mod sm;
pub mod snapshot;
pub mod start;
pub mod topology;
pub mod types;
pub mod wire;

pub use crate::slot::{SLOT_COUNT, Slot, key_slot};

/// Valkey's reply when the cluster cannot serve (here: this node has not started its groups).
pub const CLUSTERDOWN: &str = "CLUSTERDOWN The cluster is down";
