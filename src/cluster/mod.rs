//! Hash slots, slot groups and their Raft replication, and the Redis Cluster protocol. This
//! room never touches a shard's data directly: it drives the shards through the cores.

pub mod bus;
pub mod link;
pub mod membership;
pub mod meta;
pub mod node;
pub mod slot;
pub mod sm;
pub mod snapshot;
pub mod topology;
pub mod types;

pub use slot::{SLOT_COUNT, Slot, key_slot};

/// Valkey's reply when the cluster cannot serve (here: this node has not started its groups).
pub const CLUSTERDOWN: &str = "CLUSTERDOWN The cluster is down";
