//! Mutation records: the only way a shard's data changes.
//!
//! A write command reads what it needs, decides, and turns its decision into one or more
//! records; applying a record is deterministic (absolute expiry times, computed results such as
//! the INCRBYFLOAT value, never "now" or a random choice). Standalone mode applies a record at
//! once; persistence and Raft replication drive the same `Shard::apply` from their logs.

use super::entry::Value;

/// What happens to a key's time-to-live when its value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Keep the current expiry (SET ... KEEPTTL, INCR, APPEND).
    Keep,
    /// Remove any expiry (plain SET).
    Clear,
    /// Expire at this absolute Unix time in milliseconds.
    At(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mutation<'a> {
    /// Replace the key's value with a string (stored as an integer when canonical).
    SetStr {
        key: &'a [u8],
        value: &'a [u8],
        ttl: Ttl,
    },
    /// Replace the key's value with an integer (INCR and friends).
    SetInt { key: &'a [u8], value: i64, ttl: Ttl },
    /// Append bytes to a string (creating it when missing); TTL kept.
    Append { key: &'a [u8], tail: &'a [u8] },
    /// Overwrite a string at `offset`, zero-padding as needed (creating it when missing).
    SetRange {
        key: &'a [u8],
        offset: usize,
        data: &'a [u8],
    },
    /// Set hash fields: `pairs` alternates field, value.
    HSet {
        key: &'a [u8],
        pairs: &'a [&'a [u8]],
    },
    /// Remove hash fields; the key goes when its last field does.
    HDel {
        key: &'a [u8],
        fields: &'a [&'a [u8]],
    },
    /// Set (Some) or remove (None) the key's absolute expiry. A time in the past deletes.
    Expire { key: &'a [u8], at: Option<u64> },
    /// Delete a key (DEL, expiry, eviction).
    Del { key: &'a [u8] },
    /// Move a key within this shard, replacing the destination (RENAME).
    Rename { from: &'a [u8], to: &'a [u8] },
    /// Store a whole value with its expiry (COPY, and RENAME across cores).
    Restore {
        key: &'a [u8],
        value: Value,
        expire_at: Option<u64>,
    },
    /// Delete every key of this shard.
    FlushAll,
}

impl Mutation<'_> {
    /// The key this record writes (None for FLUSHALL).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Mutation::SetStr { key, .. }
            | Mutation::SetInt { key, .. }
            | Mutation::Append { key, .. }
            | Mutation::SetRange { key, .. }
            | Mutation::HSet { key, .. }
            | Mutation::HDel { key, .. }
            | Mutation::Expire { key, .. }
            | Mutation::Del { key }
            | Mutation::Restore { key, .. } => Some(key),
            Mutation::Rename { to, .. } => Some(to),
            Mutation::FlushAll => None,
        }
    }
}
