//! Hash slots: which slot a key belongs to. Slot groups, Raft and the Redis Cluster protocol
//! will live here; this room never touches a shard's data directly.

pub mod slot;

pub use slot::{SLOT_COUNT, Slot, key_slot};
