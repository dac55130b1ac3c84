//! One key and its value, as a shard stores it.
//!
//! Layout (32 bytes in the table, one heap allocation per key): the allocation holds the key
//! bytes followed by the payload — the string bytes, an 8-byte integer, or the pointer to a
//! hash. Compared with a boxed key plus a boxed value this saves an allocation (and its
//! rounding to jemalloc's size classes) per key, and a GET finds its value in the cache line
//! it just compared the key in. Measured in BENCHMARKS.md (memory per key).
//!
//! All unsafe code of the shard is in this file; everything else goes through the methods.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error, realloc};
use std::ptr::NonNull;

use super::hash::HashObj;
use super::list::ListObj;
use super::set::SetObj;
use super::zset::ZSetObj;

/// An owned value, for moving a value between shards (COPY, RENAME across cores) and for
/// building entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Box<[u8]>),
    Int(i64),
    Hash(Box<HashObj>),
    List(Box<ListObj>),
    Set(Box<SetObj>),
    ZSet(Box<ZSetObj>),
}

/// A borrowed view of a stored value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Str(&'a [u8]),
    Int(i64),
    Hash(&'a HashObj),
    List(&'a ListObj),
    Set(&'a SetObj),
    ZSet(&'a ZSetObj),
}

/// The type name TYPE reports and SCAN ... TYPE filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Hash,
    List,
    Set,
    ZSet,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
        }
    }

    /// The kind TYPE names `name` (SCAN ... TYPE), case-insensitively.
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        [Kind::String, Kind::Hash, Kind::List, Kind::Set, Kind::ZSet]
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k.name().as_bytes()))
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
        self.as_ref().kind()
    }

    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Str(s) => ValueRef::Str(s),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Hash(h) => ValueRef::Hash(h),
            Value::List(l) => ValueRef::List(l),
            Value::Set(x) => ValueRef::Set(x),
            Value::ZSet(z) => ValueRef::ZSet(z),
        }
    }
}

impl<'a> ValueRef<'a> {
    /// The hash, if this is one.
    pub fn hash(self) -> Option<&'a HashObj> {
        match self {
            ValueRef::Hash(h) => Some(h),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn list(self) -> Option<&'a ListObj> {
        match self {
            ValueRef::List(l) => Some(l),
            _ => None,
        }
    }

    /// The set, if this is one.
    pub fn set(self) -> Option<&'a SetObj> {
        match self {
            ValueRef::Set(x) => Some(x),
            _ => None,
        }
    }

    /// The sorted set, if this is one.
    pub fn zset(self) -> Option<&'a ZSetObj> {
        match self {
            ValueRef::ZSet(z) => Some(z),
            _ => None,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            ValueRef::Str(_) | ValueRef::Int(_) => Kind::String,
            ValueRef::Hash(_) => Kind::Hash,
            ValueRef::List(_) => Kind::List,
            ValueRef::Set(_) => Kind::Set,
            ValueRef::ZSet(_) => Kind::ZSet,
        }
    }

    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Str(s) => Value::Str(s.into()),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Hash(h) => Value::Hash(Box::new(h.clone())),
            ValueRef::List(l) => Value::List(Box::new(l.clone())),
            ValueRef::Set(x) => Value::Set(Box::new(x.clone())),
            ValueRef::ZSet(z) => Value::ZSet(Box::new(z.clone())),
        }
    }

    /// OBJECT ENCODING's answer.
    pub fn encoding(self) -> &'static str {
        match self {
            ValueRef::Int(_) => "int",
            ValueRef::Str(s) if s.len() <= 44 => "embstr",
            ValueRef::Str(_) => "raw",
            ValueRef::Hash(h) => h.encoding(),
            ValueRef::List(l) => l.encoding(),
            ValueRef::Set(x) => x.encoding(),
            ValueRef::ZSet(z) => z.encoding(),
        }
    }

    /// The string form of a string value (decimal for integers); None for other types.
    pub fn string_bytes(self, scratch: &'a mut itoa::Buffer) -> Option<&'a [u8]> {
        match self {
            ValueRef::Str(s) => Some(s),
            ValueRef::Int(i) => Some(scratch.format(i).as_bytes()),
            _ => None,
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
const KIND_LIST: u8 = 3;
const KIND_SET: u8 = 4;
const KIND_ZSET: u8 = 5;

/// Whether a kind byte says the payload is a pointer to a boxed collection.
fn is_boxed(kind: u8) -> bool {
    kind >= KIND_HASH
}

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

// SAFETY: an Entry exclusively owns its allocation and the collection it may point to (all
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
            boxed => {
                let (kind, word) = into_boxed_word(boxed);
                Entry::raw(key, kind, PayloadSrc::Word(word), expire_at, access)
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

    fn ptr_of<T>(&self) -> *mut T {
        self.word() as usize as *mut T
    }

    pub fn value(&self) -> ValueRef<'_> {
        // SAFETY (boxed kinds): the payload is the pointer Box::into_raw gave for the type the
        // kind byte names, owned by this entry until `drop_boxed`.
        unsafe {
            match self.kind {
                KIND_STR => ValueRef::Str(self.payload()),
                KIND_INT => ValueRef::Int(self.word() as i64),
                KIND_HASH => ValueRef::Hash(&*self.ptr_of::<HashObj>()),
                KIND_LIST => ValueRef::List(&*self.ptr_of::<ListObj>()),
                KIND_SET => ValueRef::Set(&*self.ptr_of::<SetObj>()),
                _ => ValueRef::ZSet(&*self.ptr_of::<ZSetObj>()),
            }
        }
    }

    pub fn kind(&self) -> Kind {
        self.value().kind()
    }

    /// The hash value for modification, None for other types.
    pub fn hash_mut(&mut self) -> Option<&mut HashObj> {
        // SAFETY: as in `value`, and `&mut self` makes the access exclusive.
        (self.kind == KIND_HASH).then(|| unsafe { &mut *self.ptr_of::<HashObj>() })
    }

    /// The list value for modification, None for other types.
    pub fn list_mut(&mut self) -> Option<&mut ListObj> {
        // SAFETY: as in `hash_mut`.
        (self.kind == KIND_LIST).then(|| unsafe { &mut *self.ptr_of::<ListObj>() })
    }

    /// The set value for modification, None for other types.
    pub fn set_mut(&mut self) -> Option<&mut SetObj> {
        // SAFETY: as in `hash_mut`.
        (self.kind == KIND_SET).then(|| unsafe { &mut *self.ptr_of::<SetObj>() })
    }

    /// The sorted-set value for modification, None for other types.
    pub fn zset_mut(&mut self) -> Option<&mut ZSetObj> {
        // SAFETY: as in `hash_mut`.
        (self.kind == KIND_ZSET).then(|| unsafe { &mut *self.ptr_of::<ZSetObj>() })
    }

    /// Replaces the value, reusing the allocation when the payload size is unchanged (a SET of
    /// a same-length string, any integer over an integer).
    pub fn set_value(&mut self, value: Value) {
        self.drop_boxed();
        match value {
            Value::Str(s) => self.set_str(&s),
            Value::Int(i) => self.set_int(i),
            boxed => {
                let (kind, word) = into_boxed_word(boxed);
                self.resize_payload(8);
                self.kind = kind;
                self.write_word(word);
            }
        }
    }

    /// Sets a string value from bytes (no intermediate box).
    pub fn set_str(&mut self, bytes: &[u8]) {
        self.drop_boxed();
        self.resize_payload(bytes.len());
        self.kind = KIND_STR;
        self.payload_mut().copy_from_slice(bytes);
    }

    /// The bytes of a string value for changing in place (SETRANGE, SETBIT, BITFIELD), first
    /// lengthened with zeros to at least `len`; None for other kinds (an integer is rewritten
    /// as a string by the caller). Growing reallocates, which the allocator often does
    /// without moving the bytes, so writing near the end of a large string costs what it
    /// writes, not the whole string.
    pub fn str_mut_at_least(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.kind != KIND_STR {
            return None;
        }
        let old = self.plen as usize;
        if len > old {
            let (old_total, total) = (self.klen as usize + old, self.klen as usize + len);
            self.ptr = if old_total == 0 {
                allocate(total)
            } else {
                // SAFETY: the allocation was made with `layout(old_total)`; the new size is
                // non-zero and bounded by proto-max-bulk-len. realloc keeps the first
                // `old_total` bytes (the key and the string so far).
                let p = unsafe { realloc(self.ptr.as_ptr(), layout(old_total), total) };
                NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout(total)))
            };
            self.plen = u32::try_from(len).expect("values are smaller than 4 GiB");
            self.payload_mut()[old..].fill(0);
        }
        Some(self.payload_mut())
    }

    /// Sets an integer value, in place when it already is one.
    pub fn set_int(&mut self, v: i64) {
        if self.kind != KIND_INT {
            self.drop_boxed();
            self.resize_payload(8);
            self.kind = KIND_INT;
        }
        self.write_word(v as u64);
    }

    /// The value, consuming the entry (a collection moves without a copy).
    pub fn into_value(mut self) -> Value {
        if is_boxed(self.kind) {
            // SAFETY: the pointer came from Box::into_raw for the type the kind names;
            // switching the kind first means Drop will not free it again.
            let v = unsafe { self.take_boxed() };
            self.kind = KIND_STR;
            return v;
        }
        self.to_value()
    }

    /// Rebuilds the Box of a boxed payload.
    ///
    /// # Safety
    /// The kind must be a boxed kind, and the caller must make sure the pointer is not used
    /// or freed again (switch the kind away at once).
    unsafe fn take_boxed(&mut self) -> Value {
        // SAFETY: per the contract, the pointer is the Box::into_raw of the named type.
        unsafe {
            match self.kind {
                KIND_HASH => Value::Hash(Box::from_raw(self.ptr_of())),
                KIND_LIST => Value::List(Box::from_raw(self.ptr_of())),
                KIND_SET => Value::Set(Box::from_raw(self.ptr_of())),
                _ => Value::ZSet(Box::from_raw(self.ptr_of())),
            }
        }
    }

    /// A copy of the value.
    pub fn to_value(&self) -> Value {
        self.value().to_owned()
    }

    /// Frees a boxed payload. The 8 payload bytes stay allocated (plen unchanged, so the
    /// allocation's recorded size stays right for dealloc); every caller overwrites or resizes
    /// the payload next.
    fn drop_boxed(&mut self) {
        if is_boxed(self.kind) {
            // SAFETY: dropped exactly once: the kind is switched away right here.
            drop(unsafe { self.take_boxed() });
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

    /// Bytes this key and its value take (MEMORY USAGE): its slot in the shard's table, its
    /// allocation (the key and an inline string or integer) and a collection's internals,
    /// sampled as `samples` says (see `shard::usage`).
    pub fn memory_usage(&self, samples: usize) -> usize {
        // A slot of the table plus its control byte.
        std::mem::size_of::<Entry>()
            + 1
            + super::usage::alloc_size(self.klen as usize + self.plen as usize)
            + self.value().mem_usage(samples)
    }

    /// Takes a collection out of the entry, leaving eight zero bytes as a string in its place
    /// until the caller stores the new value (the allocation keeps its size, as `drop_boxed`
    /// leaves it); None for strings and integers.
    pub fn take_collection(&mut self) -> Option<Value> {
        if !is_boxed(self.kind) {
            return None;
        }
        // SAFETY: a boxed kind; the kind is switched away at once, so the pointer is neither
        // used nor freed again by this entry.
        let v = unsafe { self.take_boxed() };
        self.kind = KIND_STR;
        self.payload_mut().fill(0);
        Some(v)
    }

    /// Bytes this entry owns on the heap (estimate for memory reports).
    pub fn heap_size(&self) -> usize {
        self.klen as usize
            + self.plen as usize
            + match self.value() {
                ValueRef::Hash(h) => h.heap_size(),
                ValueRef::List(l) => l.heap_size(),
                ValueRef::Set(x) => x.heap_size(),
                ValueRef::ZSet(z) => z.heap_size(),
                _ => 0,
            }
    }
}

impl ValueRef<'_> {
    /// Bytes a collection value takes beyond the entry's own allocation (its box and its
    /// internals; see `shard::usage`); 0 for strings, which live in the entry.
    pub fn mem_usage(self, samples: usize) -> usize {
        use super::usage::alloc_size;
        use std::mem::size_of;
        match self {
            ValueRef::Str(_) | ValueRef::Int(_) => 0,
            ValueRef::Hash(h) => alloc_size(size_of::<HashObj>()) + h.mem_usage(samples),
            ValueRef::List(l) => alloc_size(size_of::<ListObj>()) + l.mem_usage(samples),
            ValueRef::Set(x) => alloc_size(size_of::<SetObj>()) + x.mem_usage(samples),
            ValueRef::ZSet(z) => alloc_size(size_of::<ZSetObj>()) + z.mem_usage(samples),
        }
    }

    /// Valkey's free effort (lazyfreeGetFreeEffort): roughly how many allocations dropping
    /// the value walks and frees — a member per member of a hashtable or skiplist, a node
    /// per quicklist node, 1 for everything stored in one or two allocations.
    pub fn free_effort(self) -> usize {
        match self {
            ValueRef::Str(_) | ValueRef::Int(_) => 1,
            ValueRef::Hash(h) => h.free_effort(),
            ValueRef::List(l) => l.free_effort(),
            ValueRef::Set(x) => x.free_effort(),
            ValueRef::ZSet(z) => z.free_effort(),
        }
    }
}

/// The kind byte and payload word of a boxed value (the pointer from Box::into_raw, which the
/// entry owns from then on).
fn into_boxed_word(v: Value) -> (u8, u64) {
    match v {
        Value::Hash(h) => (KIND_HASH, Box::into_raw(h) as u64),
        Value::List(l) => (KIND_LIST, Box::into_raw(l) as u64),
        Value::Set(x) => (KIND_SET, Box::into_raw(x) as u64),
        Value::ZSet(z) => (KIND_ZSET, Box::into_raw(z) as u64),
        Value::Str(_) | Value::Int(_) => unreachable!("strings are stored inline"),
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
        self.drop_boxed();
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
        assert!(matches!(e.value(), ValueRef::Hash(h) if h.get(b"f", 0) == Some(&b"v"[..])));
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
    fn strings_grow_and_change_in_place() {
        for key in [&b""[..], b"k"] {
            let mut e = Entry::with(key, NewValue::Str(b""), 0, 0);
            e.str_mut_at_least(3).unwrap()[1] = b'x';
            assert_eq!(e.value(), ValueRef::Str(b"\0x\0"));
            // Never shorter: a smaller length leaves the string alone.
            assert_eq!(e.str_mut_at_least(1).unwrap().len(), 3);
            e.str_mut_at_least(100_000).unwrap()[99_999] = 1;
            assert_eq!(e.key(), key);
            let ValueRef::Str(s) = e.value() else {
                panic!("still a string")
            };
            assert_eq!((&s[..3], s.len(), s[99_999]), (&b"\0x\0"[..], 100_000, 1));
        }
        let mut n = Entry::with(b"n", NewValue::Int(5), 0, 0);
        assert!(n.str_mut_at_least(1).is_none());
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
