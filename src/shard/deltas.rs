//! Large values persisted as a stored base plus deltas (see `storage::codec`).
//!
//! Rewriting a 1M-element list on disk for every LPUSH costs megabytes per write. So once a
//! value is large (many elements, or a long string), storage keeps its last full form (the
//! base, tagged with an epoch) and, after it, each turn's changes to it as a delta: the
//! turn's mutation records for that key, which loading applies on top of the base. When a
//! key's deltas add up to half its base, the next change rewrites the base under a new epoch,
//! so disk writes per change stay proportional to the change (amortized) and loading replays
//! at most about half a base's worth of records per key.
//!
//! The shard decides, as each record is applied, whether it goes to the turn's deltas or
//! marks the key for a full rewrite; the core's flush (`engine::persist`) writes them and
//! keeps each key's [`DeltaState`]. Only standalone nodes use deltas: in a cluster, storage
//! is a checkpoint written in bulk, where a key written many times is written once anyway.

use super::entry::ValueRef;
use super::{Entry, Mutation};

/// A collection with at least this many elements persists through deltas.
pub const MIN_ELEMS: usize = 256;
/// A string of at least this many bytes persists through deltas (SETRANGE, SETBIT, APPEND).
pub const MIN_STR_BYTES: usize = 16 * 1024;

/// Where a large key's stored form stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaState {
    /// The epoch its base was written with (its deltas' keys carry it).
    pub epoch: u64,
    /// The sequence number of the next delta.
    pub next_seq: u32,
    /// Bytes of the stored base, and of the deltas written since.
    pub base_bytes: u64,
    pub delta_bytes: u64,
}

impl DeltaState {
    pub fn new(epoch: u64, base_bytes: u64) -> DeltaState {
        DeltaState {
            epoch,
            next_seq: 0,
            base_bytes,
            delta_bytes: 0,
        }
    }

    /// How many more delta bytes this key takes before its base is rewritten.
    pub fn budget(&self) -> u64 {
        (self.base_bytes / 2).saturating_sub(self.delta_bytes)
    }
}

/// Whether `entry` is large enough for its changes to persist as deltas.
pub fn worth_deltas(entry: &Entry) -> bool {
    match entry.value() {
        ValueRef::Str(s) => s.len() >= MIN_STR_BYTES,
        ValueRef::Int(_) => false,
        ValueRef::Hash(h) => h.len() >= MIN_ELEMS,
        ValueRef::List(l) => l.len() >= MIN_ELEMS,
        ValueRef::Set(x) => x.len() >= MIN_ELEMS,
        ValueRef::ZSet(z) => z.len() >= MIN_ELEMS,
    }
}

/// Whether `m` changes part of its key's value (a delta can carry it) rather than replacing
/// or deleting the value whole.
pub fn is_partial(m: &Mutation<'_>) -> bool {
    match m {
        Mutation::Append { .. }
        | Mutation::SetRange { .. }
        | Mutation::HSet { .. }
        | Mutation::HDel { .. }
        | Mutation::HSetEx { .. }
        | Mutation::HExpire { .. }
        | Mutation::HExpired { .. }
        | Mutation::ListPush { .. }
        | Mutation::ListPop { .. }
        | Mutation::ListSet { .. }
        | Mutation::ListInsert { .. }
        | Mutation::ListRem { .. }
        | Mutation::ListTrim { .. }
        | Mutation::SetAdd { .. }
        | Mutation::SetRem { .. }
        | Mutation::ZAdd { .. }
        | Mutation::ZRem { .. }
        | Mutation::ZRemRange { .. }
        | Mutation::Expire { .. } => true,
        Mutation::Select { .. } => false,
        Mutation::SetStr { .. }
        | Mutation::SetInt { .. }
        | Mutation::Del { .. }
        | Mutation::Expired { .. }
        | Mutation::Evicted { .. }
        | Mutation::Rename { .. }
        | Mutation::Restore { .. }
        | Mutation::FlushAll
        | Mutation::FlushSlots { .. } => false,
    }
}
