//! One key and its value, as a shard stores it.
//!
//! Everything outside this file reaches an entry through its methods, so the in-memory layout
//! can be compacted (see BENCHMARKS.md, memory per key) without touching the command code.

use super::hash::HashObj;

/// A stored value. Strings that are canonical decimal integers are kept as `Int`, which is
/// what OBJECT ENCODING reports as `int` and what makes INCR an in-place update.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Box<[u8]>),
    Int(i64),
    Hash(Box<HashObj>),
}

/// The type name TYPE reports and SCAN ... TYPE filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Hash,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
        }
    }
}

impl Value {
    /// A string value, stored as `Int` when its bytes are the canonical form of an i64
    /// (Valkey's rule: at most 20 chars, no leading zeros or '+', fits in i64).
    pub fn from_bytes(data: &[u8]) -> Value {
        match crate::util::parse_i64(data) {
            Some(v) if data.len() <= 20 => Value::Int(v),
            _ => Value::Str(data.into()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Value::Str(_) | Value::Int(_) => Kind::String,
            Value::Hash(_) => Kind::Hash,
        }
    }

    /// Bytes this value accounts for beyond the entry itself (an estimate used for
    /// OBJECT/MEMORY figures only; maxmemory uses the allocator's own statistics).
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Int(_) => 0,
            Value::Hash(h) => h.heap_size(),
        }
    }
}

/// Appends the string form of a string value to `out`; `None` for non-strings.
pub fn string_bytes<'a>(value: &'a Value, scratch: &'a mut itoa::Buffer) -> Option<&'a [u8]> {
    match value {
        Value::Str(s) => Some(s),
        Value::Int(i) => Some(scratch.format(*i).as_bytes()),
        Value::Hash(_) => None,
    }
}

/// A key, its value, its absolute expiry and its access metadata (LRU clock or LFU counter).
#[derive(Debug)]
pub struct Entry {
    key: Box<[u8]>,
    pub value: Value,
    /// Absolute expiry in Unix milliseconds; 0 means the key does not expire.
    expire_at: u64,
    /// LRU clock (seconds, 24 bits) under LRU policies, or LFU data (16-bit minutes of last
    /// decrement << 8 | 8-bit log counter) under LFU policies — Valkey's `lru` field.
    pub access: u32,
}

impl Entry {
    pub fn new(key: &[u8], value: Value, expire_at: u64, access: u32) -> Entry {
        Entry {
            key: key.into(),
            value,
            expire_at,
            access,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Absolute expiry in Unix ms, `None` for a persistent key.
    pub fn expire_at(&self) -> Option<u64> {
        (self.expire_at != 0).then_some(self.expire_at)
    }

    pub(super) fn set_expire_raw(&mut self, at: Option<u64>) {
        self.expire_at = at.unwrap_or(0);
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at != 0 && now_ms > self.expire_at
    }
}
