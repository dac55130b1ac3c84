//! One key and its value, as a shard stores it.
//!
//! Layout (32 bytes in the table, one heap allocation per key): the allocation holds the key
//! bytes followed by the payload — the string bytes, an 8-byte integer, or the pointer to a
//! hash. Compared with a boxed key plus a boxed value this saves an allocation (and its
//! rounding to jemalloc's size classes) per key, and a GET finds its value in the cache line
//! it just compared the key in. Measured in BENCHMARKS.md (memory per key).
//!
//! All unsafe code of the shard is in this file; everything else goes through the methods.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

use super::hash::HashObj;

/// An owned value, for moving a value between shards (COPY, RENAME across cores) and for
/// building entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Box<[u8]>),
    Int(i64),
    Hash(Box<HashObj>),
}

/// A borrowed view of a stored value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Str(&'a [u8]),
    Int(i64),
    Hash(&'a HashObj),
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

    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Str(s) => ValueRef::Str(s),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Hash(h) => ValueRef::Hash(h),
        }
    }
}

impl<'a> ValueRef<'a> {
    pub fn kind(self) -> Kind {
        match self {
            ValueRef::Str(_) | ValueRef::Int(_) => Kind::String,
            ValueRef::Hash(_) => Kind::Hash,
        }
    }

    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Str(s) => Value::Str(s.into()),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Hash(h) => Value::Hash(Box::new(h.clone())),
        }
    }

    /// The string form of a string value (decimal for integers); None for other types.
    pub fn string_bytes(self, scratch: &'a mut itoa::Buffer) -> Option<&'a [u8]> {
        match self {
            ValueRef::Str(s) => Some(s),
            ValueRef::Int(i) => Some(scratch.format(i).as_bytes()),
            ValueRef::Hash(_) => None,
        }
    }
}

/// The string form of a string value (decimal for integers); None for other types.
pub fn string_bytes<'a>(value: ValueRef<'a>, scratch: &'a mut itoa::Buffer) -> Option<&'a [u8]> {
    value.string_bytes(scratch)
}

const KIND_STR: u8 = 0;
const KIND_INT: u8 = 1;
const KIND_HASH: u8 = 2;

/// A key, its value, its absolute expiry and its access metadata (LRU clock or LFU counter).
pub struct Entry {
    /// `klen + plen` bytes: the key, then the payload. Dangling when that length is 0.
    ptr: NonNull<u8>,
    klen: u32,
    plen: u32,
    /// Absolute expiry in Unix milliseconds; 0 means the key does not expire.
    expire_at: u64,
    /// LRU clock (seconds, 24 bits) under LRU policies, or LFU data (16-bit minutes of last
    /// decrement << 8 | 8-bit log counter) under LFU policies — Valkey's `lru` field.
    pub access: u32,
    kind: u8,
}

// SAFETY: an Entry exclusively owns its allocation and the HashObj it may point to (which is
// Send); nothing is shared, so moving it to another thread is sound.
unsafe impl Send for Entry {}

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len, 1)
        .expect("key and value lengths are bounded by proto-max-bulk-len")
}

/// Allocates `len` bytes (dangling for 0).
fn allocate(len: usize) -> NonNull<u8> {
    if len == 0 {
        return NonNull::dangling();
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout(len)) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout(len)))
}

/// A value about to be stored: borrowed bytes or an integer are written straight into the
/// entry's allocation; an owned value (a whole hash) is moved in.
pub enum NewValue<'a> {
    Str(&'a [u8]),
    Int(i64),
    Owned(Value),
}

impl<'a> NewValue<'a> {
    /// A string, as an integer when canonical (Valkey's rule, see `Value::from_bytes`).
    pub fn from_bytes(data: &'a [u8]) -> NewValue<'a> {
        match crate::util::parse_i64(data) {
            Some(v) if data.len() <= 20 => NewValue::Int(v),
            _ => NewValue::Str(data),
        }
    }
}

impl Entry {
    /// An entry for `key` holding `value`.
    pub fn with(key: &[u8], value: NewValue<'_>, expire_at: u64, access: u32) -> Entry {
        match value {
            NewValue::Owned(v) => Entry::new(key, v, expire_at, access),
            NewValue::Int(i) => {
                Entry::raw(key, KIND_INT, PayloadSrc::Word(i as u64), expire_at, access)
            }
            NewValue::Str(b) => Entry::raw(key, KIND_STR, PayloadSrc::Bytes(b), expire_at, access),
        }
    }

    /// Replaces the value (see `set_str`, `set_int`, `set_value`).
    pub fn assign(&mut self, value: NewValue<'_>) {
        match value {
            NewValue::Str(b) => self.set_str(b),
            NewValue::Int(i) => self.set_int(i),
            NewValue::Owned(v) => self.set_value(v),
        }
    }

    pub fn new(key: &[u8], value: Value, expire_at: u64, access: u32) -> Entry {
        match value {
            Value::Str(s) => Entry::raw(key, KIND_STR, PayloadSrc::Bytes(&s), expire_at, access),
            Value::Int(i) => {
                Entry::raw(key, KIND_INT, PayloadSrc::Word(i as u64), expire_at, access)
            }
            Value::Hash(h) => {
                let word = Box::into_raw(h) as u64;
                Entry::raw(key, KIND_HASH, PayloadSrc::Word(word), expire_at, access)
            }
        }
    }

    /// One allocation holding `key` then `payload`.
    fn raw(key: &[u8], kind: u8, payload: PayloadSrc<'_>, expire_at: u64, access: u32) -> Entry {
        let plen = payload.len();
        let ptr = allocate(key.len() + plen);
        let mut e = Entry {
            ptr,
            klen: u32::try_from(key.len()).expect("keys are smaller than 4 GiB"),
            plen: u32::try_from(plen).expect("values are smaller than 4 GiB"),
            expire_at,
            access,
            kind,
        };
        // SAFETY: the allocation holds klen + plen bytes; the key goes first.
        unsafe { std::ptr::copy_nonoverlapping(key.as_ptr(), e.ptr.as_ptr(), key.len()) };
        e.write_payload(payload);
        e
    }

    pub fn key(&self) -> &[u8] {
        // SAFETY: the first klen bytes of the allocation are the key (dangling ok for 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.klen as usize) }
    }

    fn payload(&self) -> &[u8] {
        // SAFETY: the payload follows the key inside the allocation.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(self.klen as usize),
                self.plen as usize,
            )
        }
    }

    fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `payload`, and `&mut self` gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.klen as usize),
                self.plen as usize,
            )
        }
    }

    fn word(&self) -> u64 {
        u64::from_ne_bytes(
            self.payload()
                .try_into()
                .expect("word payloads are 8 bytes"),
        )
    }

    fn write_word(&mut self, w: u64) {
        self.payload_mut().copy_from_slice(&w.to_ne_bytes());
    }

    fn write_payload(&mut self, p: PayloadSrc<'_>) {
        match p {
            PayloadSrc::Bytes(b) => self.payload_mut().copy_from_slice(b),
            PayloadSrc::Word(w) => self.write_word(w),
        }
    }

    fn hash_ptr(&self) -> *mut HashObj {
        self.word() as usize as *mut HashObj
    }

    pub fn value(&self) -> ValueRef<'_> {
        match self.kind {
            KIND_STR => ValueRef::Str(self.payload()),
            KIND_INT => ValueRef::Int(self.word() as i64),
            // SAFETY: a KIND_HASH payload is the pointer from Box::into_raw, owned by us.
            _ => ValueRef::Hash(unsafe { &*self.hash_ptr() }),
        }
    }

    pub fn kind(&self) -> Kind {
        if self.kind == KIND_HASH {
            Kind::Hash
        } else {
            Kind::String
        }
    }

    /// The hash value for modification, None for strings.
    pub fn hash_mut(&mut self) -> Option<&mut HashObj> {
        // SAFETY: as in `value`, and `&mut self` makes the access exclusive.
        (self.kind == KIND_HASH).then(|| unsafe { &mut *self.hash_ptr() })
    }

    /// Replaces the value, reusing the allocation when the payload size is unchanged (a SET of
    /// a same-length string, any integer over an integer).
    pub fn set_value(&mut self, value: Value) {
        let (kind, src) = match &value {
            Value::Str(s) => (KIND_STR, PayloadSrc::Bytes(s)),
            Value::Int(i) => (KIND_INT, PayloadSrc::Word(*i as u64)),
            Value::Hash(_) => (KIND_HASH, PayloadSrc::Word(0)),
        };
        self.drop_hash();
        self.resize_payload(src.len());
        self.kind = kind;
        match value {
            Value::Hash(h) => self.write_word(Box::into_raw(h) as u64),
            _ => self.write_payload(src),
        }
    }

    /// Sets a string value from bytes (no intermediate box).
    pub fn set_str(&mut self, bytes: &[u8]) {
        self.drop_hash();
        self.resize_payload(bytes.len());
        self.kind = KIND_STR;
        self.payload_mut().copy_from_slice(bytes);
    }

    /// Sets an integer value, in place when it already is one.
    pub fn set_int(&mut self, v: i64) {
        if self.kind != KIND_INT {
            self.drop_hash();
            self.resize_payload(8);
            self.kind = KIND_INT;
        }
        self.write_word(v as u64);
    }

    /// The value, consuming the entry (a hash moves without a copy).
    pub fn into_value(mut self) -> Value {
        if self.kind == KIND_HASH {
            // SAFETY: the pointer came from Box::into_raw; switching the kind first means
            // Drop will not free it again.
            let h = unsafe { Box::from_raw(self.hash_ptr()) };
            self.kind = KIND_STR;
            return Value::Hash(h);
        }
        self.to_value()
    }

    /// A copy of the value.
    pub fn to_value(&self) -> Value {
        self.value().to_owned()
    }

    /// Frees a hash payload. The 8 payload bytes stay allocated (plen unchanged, so the
    /// allocation's recorded size stays right for dealloc); every caller overwrites or resizes
    /// the payload next.
    fn drop_hash(&mut self) {
        if self.kind == KIND_HASH {
            // SAFETY: the pointer came from Box::into_raw and is dropped exactly once: the
            // kind is switched away from hash right here.
            drop(unsafe { Box::from_raw(self.hash_ptr()) });
            self.kind = KIND_STR;
        }
    }

    fn resize_payload(&mut self, plen: usize) {
        if plen != self.plen as usize {
            let total = self.klen as usize + plen;
            self.realloc_exact(total);
            self.plen = u32::try_from(plen).expect("values are smaller than 4 GiB");
        }
    }

    /// Moves the allocation to `total` bytes, keeping the key (payload contents undefined).
    fn realloc_exact(&mut self, total: usize) {
        let old_total = self.klen as usize + self.plen as usize;
        if total == old_total {
            return;
        }
        let new = allocate(total);
        let keep = (self.klen as usize).min(total);
        // SAFETY: both allocations hold at least `keep` bytes; the old one is freed with the
        // layout it was allocated with.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), keep);
            if old_total != 0 {
                dealloc(self.ptr.as_ptr(), layout(old_total));
            }
        }
        self.ptr = new;
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

    /// Bytes this entry owns on the heap (estimate for memory reports).
    pub fn heap_size(&self) -> usize {
        self.klen as usize
            + self.plen as usize
            + match self.value() {
                ValueRef::Hash(h) => h.heap_size(),
                _ => 0,
            }
    }
}

enum PayloadSrc<'a> {
    Bytes(&'a [u8]),
    Word(u64),
}

impl PayloadSrc<'_> {
    fn len(&self) -> usize {
        match self {
            PayloadSrc::Bytes(b) => b.len(),
            PayloadSrc::Word(_) => 8,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.kind == KIND_HASH {
            // SAFETY: the pointer came from Box::into_raw and this is the last use.
            drop(unsafe { Box::from_raw(self.hash_ptr()) });
        }
        let total = self.klen as usize + self.plen as usize;
        if total != 0 {
            // SAFETY: allocated with exactly this layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout(total)) };
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value", &self.value())
            .field("expire_at", &self.expire_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_compact() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn values_round_trip_and_change_kind() {
        let mut e = Entry::new(b"key", Value::Str(b"hello".to_vec().into()), 0, 0);
        assert_eq!(e.key(), b"key");
        assert_eq!(e.value(), ValueRef::Str(b"hello"));
        e.set_int(42);
        assert_eq!(e.value(), ValueRef::Int(42));
        e.set_int(-7);
        assert_eq!(e.value(), ValueRef::Int(-7));
        e.set_value(Value::Hash(Box::default()));
        assert_eq!(e.kind(), Kind::Hash);
        e.hash_mut().unwrap().set(b"f", b"v", Default::default());
        assert!(matches!(e.value(), ValueRef::Hash(h) if h.get(b"f") == Some(&b"v"[..])));
        e.set_str(b"");
        assert_eq!(e.value(), ValueRef::Str(b""));
        // Hash to string and back, many times: the allocation's size must stay consistent.
        for i in 0..100 {
            e.set_value(Value::Hash(Box::default()));
            if i % 2 == 0 {
                e.set_str(b"abcdefghij");
            } else {
                e.set_int(i);
            }
        }
        e.set_value(Value::Hash(Box::default()));
        e.set_value(Value::Hash(Box::default()));
        assert_eq!(e.kind(), Kind::Hash);
        assert_eq!(e.key(), b"key");
        e.set_str(&[7u8; 1000]);
        assert_eq!(e.value(), ValueRef::Str(&[7u8; 1000]));
        assert_eq!(e.to_value(), Value::Str(vec![7u8; 1000].into()));
    }

    #[test]
    fn empty_key_and_value() {
        let e = Entry::new(b"", Value::Str(Box::default()), 5, 1);
        assert_eq!(e.key(), b"");
        assert_eq!(e.value(), ValueRef::Str(b""));
        assert_eq!(e.expire_at(), Some(5));
        let h = Entry::new(b"", Value::Hash(Box::default()), 0, 0);
        drop(h);
    }
}
