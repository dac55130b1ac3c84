//! Mutation records: the only way a shard's data changes.
//!
//! A write command reads what it needs, decides, and turns its decision into one or more
//! records; applying a record is deterministic (absolute expiry times, computed results such as
//! the INCRBYFLOAT value, never "now" or a random choice). Standalone mode applies a record at
//! once; persistence and Raft replication drive the same `Shard::apply` from their logs.

use super::Encodings;
use super::entry::{Value, ValueRef};
use super::hash::HashObj;
use super::list::ListObj;
use super::set::SetObj;
use super::zset::ZSetObj;
use crate::cluster::SLOT_COUNT;

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
    /// Set hash fields (`pairs` alternates field, value), each expiring at the absolute time
    /// `at` (HSETEX with a time, and HINCRBY of a field that has one, which keeps it).
    HSetEx {
        key: &'a [u8],
        at: u64,
        pairs: &'a [&'a [u8]],
    },
    /// Give stored hash fields the absolute expiry `at`, or remove theirs (None); fields not
    /// stored are skipped. A time in the past does not delete here: the leader writes
    /// [`Mutation::HExpired`] for that.
    HExpire {
        key: &'a [u8],
        at: Option<u64>,
        fields: &'a [&'a [u8]],
    },
    /// Delete hash fields found expired (counted in `expired_fields` wherever it is applied);
    /// the key goes when its last field does.
    HExpired {
        key: &'a [u8],
        fields: &'a [&'a [u8]],
    },
    /// Push elements onto a list (creating it), at the head (`left`, each element in turn, as
    /// LPUSH) or the tail.
    ListPush {
        key: &'a [u8],
        left: bool,
        elems: &'a [&'a [u8]],
    },
    /// Pop `count` elements from the head (`left`) or tail; the key goes with its last one.
    ListPop {
        key: &'a [u8],
        left: bool,
        count: usize,
    },
    /// Replace the element at `index` (LSET, after the leader checked it exists).
    ListSet {
        key: &'a [u8],
        index: usize,
        value: &'a [u8],
    },
    /// Insert before position `index` (`index == len` appends): LINSERT, resolved.
    ListInsert {
        key: &'a [u8],
        index: usize,
        value: &'a [u8],
    },
    /// LREM as decided: remove `count` (0 = all; negative = from the tail) copies of `elem`.
    ListRem {
        key: &'a [u8],
        count: i64,
        elem: &'a [u8],
    },
    /// Keep the elements in `start..end` (LTRIM, normalized); an empty list goes.
    ListTrim {
        key: &'a [u8],
        start: usize,
        end: usize,
    },
    /// Add members to a set (creating it).
    SetAdd {
        key: &'a [u8],
        members: &'a [&'a [u8]],
    },
    /// Remove members from a set; the key goes with its last member.
    SetRem {
        key: &'a [u8],
        members: &'a [&'a [u8]],
    },
    /// Set members' scores in a sorted set (creating it): absolute scores, never increments.
    ZAdd {
        key: &'a [u8],
        pairs: &'a [(f64, &'a [u8])],
    },
    /// Remove members from a sorted set; the key goes with its last member.
    ZRem {
        key: &'a [u8],
        members: &'a [&'a [u8]],
    },
    /// Remove the members of ranks `start..end` from a sorted set (ZREMRANGEBY*, ZPOPMIN,
    /// ZPOPMAX, ZMPOP, as the leader resolved them against the same state): a range
    /// record stays a few bytes however many members go, where a ZRem would name them all.
    /// The key goes with its last member.
    ZRemRange {
        key: &'a [u8],
        start: usize,
        end: usize,
    },
    /// Set (Some) or remove (None) the key's absolute expiry. A time in the past deletes.
    Expire { key: &'a [u8], at: Option<u64> },
    /// Delete a key (DEL, UNLINK, RENAME's source...).
    Del { key: &'a [u8] },
    /// Delete a key found expired (counted in `expired_keys` wherever it is applied).
    Expired { key: &'a [u8] },
    /// Delete a key chosen by eviction (counted in `evicted_keys` wherever it is applied).
    Evicted { key: &'a [u8] },
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
    /// Delete every key of these slots (FLUSHALL through a slot group's log).
    FlushSlots { slots: SlotRange },
    /// The records that follow act on numbered database `db` (a slot group's log with
    /// `cluster-databases` above 1; every unit of records ends in database 0).
    Select { db: u32 },
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
            | Mutation::HSetEx { key, .. }
            | Mutation::HExpire { key, .. }
            | Mutation::HExpired { key, .. }
            | Mutation::ListPush { key, .. }
            | Mutation::ListPop { key, .. }
            | Mutation::ListSet { key, .. }
            | Mutation::ListInsert { key, .. }
            | Mutation::ListRem { key, .. }
            | Mutation::ListTrim { key, .. }
            | Mutation::SetAdd { key, .. }
            | Mutation::SetRem { key, .. }
            | Mutation::ZAdd { key, .. }
            | Mutation::ZRem { key, .. }
            | Mutation::ZRemRange { key, .. }
            | Mutation::Expire { key, .. }
            | Mutation::Del { key }
            | Mutation::Expired { key }
            | Mutation::Evicted { key }
            | Mutation::Restore { key, .. } => Some(key),
            Mutation::Rename { to, .. } => Some(to),
            Mutation::FlushAll | Mutation::FlushSlots { .. } | Mutation::Select { .. } => None,
        }
    }
}

/// Deletes every key of these slots (FLUSHALL through a slot group's log: the group's keys).
/// See [`Mutation::FlushSlots`].
pub type SlotRange = std::ops::Range<u16>;

/// Why a record could not be decoded (a log entry from a newer build, or damaged bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable mutation record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

// The wire form of a record (format version 1, carried inside the log entry's envelope, see
// `engine::record`): a tag byte, then the fields in order. Lengths and integers are LEB128
// varints (a dozen lines, so not worth a crate); an i64 value is zigzag-encoded; a TTL is a
// byte (0 keep, 1 clear, 2 at) followed by the time for "at". Absolute times only: applying a
// record never reads the clock.
const TAG_SET_STR: u8 = 1;
const TAG_SET_INT: u8 = 2;
const TAG_APPEND: u8 = 3;
const TAG_SET_RANGE: u8 = 4;
const TAG_HSET: u8 = 5;
const TAG_HDEL: u8 = 6;
const TAG_EXPIRE: u8 = 7;
const TAG_DEL: u8 = 8;
const TAG_RENAME: u8 = 9;
const TAG_RESTORE: u8 = 10;
const TAG_FLUSH_ALL: u8 = 11;
const TAG_FLUSH_SLOTS: u8 = 12;
const TAG_SELECT: u8 = 90;
const TAG_EXPIRED: u8 = 13;
const TAG_EVICTED: u8 = 14;
const TAG_LIST_PUSH: u8 = 15;
const TAG_LIST_POP: u8 = 16;
const TAG_LIST_SET: u8 = 17;
const TAG_LIST_INSERT: u8 = 18;
const TAG_LIST_REM: u8 = 19;
const TAG_LIST_TRIM: u8 = 20;
const TAG_SET_ADD: u8 = 21;
const TAG_SET_REM: u8 = 22;
const TAG_ZADD: u8 = 23;
const TAG_ZREM: u8 = 24;
// 50-59: sorted sets.
const TAG_ZREM_RANGE: u8 = 50;
// 70-79: hash field expiry.
const TAG_HSETEX: u8 = 70;
const TAG_HEXPIRE: u8 = 71;
const TAG_HEXPIRED: u8 = 72;

const VALUE_STR: u8 = 0;
const VALUE_INT: u8 = 1;
const VALUE_HASH: u8 = 2;
const VALUE_LIST: u8 = 3;
const VALUE_SET: u8 = 4;
const VALUE_ZSET: u8 = 5;
/// A hash some of whose fields have a time to live: a count, then per field its name, value
/// and time (0, or 1 and the absolute time).
const VALUE_HASH_TTL: u8 = 6;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_ttl(out: &mut Vec<u8>, ttl: Ttl) {
    match ttl {
        Ttl::Keep => out.push(0),
        Ttl::Clear => out.push(1),
        Ttl::At(at) => {
            out.push(2);
            put_varint(out, at);
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over encoded records.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn err(what: &str) -> DecodeError {
        DecodeError(format!("cut short or malformed in {what}"))
    }

    pub fn byte(&mut self, what: &str) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| Self::err(what))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn varint(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Self::err(what))
    }

    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.varint(what)?;
        if n > self.buf.len() as u64 {
            return Err(Self::err(what));
        }
        let (b, rest) = self.buf.split_at(n as usize);
        self.buf = rest;
        Ok(b)
    }

    fn ttl(&mut self) -> Result<Ttl, DecodeError> {
        match self.byte("ttl")? {
            0 => Ok(Ttl::Keep),
            1 => Ok(Ttl::Clear),
            2 => Ok(Ttl::At(self.varint("ttl")?)),
            t => Err(DecodeError(format!("unknown ttl kind {t}"))),
        }
    }

    fn list(&mut self, what: &str) -> Result<Vec<&'a [u8]>, DecodeError> {
        let n = self.varint(what)?;
        // Every element takes at least one byte: a count above that is damage, not a reason
        // to allocate.
        if n > self.buf.len() as u64 {
            return Err(Self::err(what));
        }
        (0..n).map(|_| self.bytes(what)).collect()
    }

    fn flag(&mut self, what: &str) -> Result<bool, DecodeError> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError(format!("bad {what} flag {b}"))),
        }
    }

    fn usize(&mut self, what: &str) -> Result<usize, DecodeError> {
        usize::try_from(self.varint(what)?).map_err(|_| DecodeError(format!("{what} out of range")))
    }

    fn score(&mut self) -> Result<f64, DecodeError> {
        let b = self
            .buf
            .split_first_chunk::<8>()
            .ok_or_else(|| Self::err("score"))?;
        let v = f64::from_le_bytes(*b.0);
        self.buf = b.1;
        if v.is_nan() {
            return Err(DecodeError("a NaN score".into()));
        }
        Ok(v)
    }

    fn scored(&mut self, what: &str) -> Result<Vec<(f64, &'a [u8])>, DecodeError> {
        let n = self.varint(what)?;
        // Each pair takes at least nine bytes.
        if n > self.buf.len() as u64 / 9 {
            return Err(Self::err(what));
        }
        (0..n)
            .map(|_| Ok((self.score()?, self.bytes(what)?)))
            .collect()
    }

    fn value(&mut self, limits: Encodings) -> Result<Value, DecodeError> {
        let nonempty = |n: usize, what: &str| {
            if n == 0 {
                Err(DecodeError(format!("an empty {what} value")))
            } else {
                Ok(())
            }
        };
        match self.byte("value")? {
            VALUE_STR => Ok(Value::Str(self.bytes("string value")?.into())),
            VALUE_INT => Ok(Value::Int(unzigzag(self.varint("integer value")?))),
            VALUE_HASH => {
                let pairs = self.list("hash value")?;
                if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
                    return Err(DecodeError("a hash value needs field/value pairs".into()));
                }
                let mut h = HashObj::new();
                h.set_pairs(&pairs, limits.hash);
                Ok(Value::Hash(Box::new(h)))
            }
            VALUE_HASH_TTL => {
                let n = self.varint("hash value")?;
                // Every field takes at least three bytes: a larger count is damage.
                if n == 0 || n > self.buf.len() as u64 {
                    return Err(DecodeError("a hash value needs field/value pairs".into()));
                }
                let mut fields = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let f = self.bytes("hash field")?;
                    let v = self.bytes("hash value")?;
                    let at = match self.byte("field ttl")? {
                        0 => None,
                        1 => Some(self.varint("field ttl")?),
                        t => return Err(DecodeError(format!("unknown field ttl kind {t}"))),
                    };
                    fields.push((f, v, at));
                }
                let mut h = HashObj::new();
                for (f, v, _) in &fields {
                    h.set(f, v, limits.hash);
                }
                if h.len() != fields.len() {
                    return Err(DecodeError("a hash value repeats a field".into()));
                }
                for (f, _, at) in fields {
                    if at.is_some() {
                        h.set_ttl(f, at);
                    }
                }
                Ok(Value::Hash(Box::new(h)))
            }
            VALUE_LIST => {
                let elems = self.list("list value")?;
                nonempty(elems.len(), "list")?;
                let mut l = ListObj::new();
                for e in elems {
                    l.push_back(e, limits.list);
                }
                Ok(Value::List(Box::new(l)))
            }
            VALUE_SET => {
                let members = self.list("set value")?;
                nonempty(members.len(), "set")?;
                let mut x = SetObj::for_first(members[0], limits.set);
                for m in members {
                    x.insert(m, limits.set);
                }
                Ok(Value::Set(Box::new(x)))
            }
            VALUE_ZSET => {
                let pairs = self.scored("sorted set value")?;
                nonempty(pairs.len(), "sorted set")?;
                // Sized up front as Valkey loads one (a large set keeps its skiplist's -0).
                let mut z = ZSetObj::with_hint(pairs.len(), 0, limits.zset);
                for (score, m) in pairs {
                    z.insert(m, score, limits.zset);
                }
                Ok(Value::ZSet(Box::new(z)))
            }
            t => Err(DecodeError(format!("unknown value type {t}"))),
        }
    }
}

/// One decoded record: the mutation borrows from the encoded bytes, except the few fields a
/// shard needs owned (a restored value, the list of hash fields).
pub enum Decoded<'a> {
    SetStr(&'a [u8], &'a [u8], Ttl),
    SetInt(&'a [u8], i64, Ttl),
    Append(&'a [u8], &'a [u8]),
    SetRange(&'a [u8], usize, &'a [u8]),
    HSet(&'a [u8], Vec<&'a [u8]>),
    HDel(&'a [u8], Vec<&'a [u8]>),
    HSetEx(&'a [u8], u64, Vec<&'a [u8]>),
    HExpire(&'a [u8], Option<u64>, Vec<&'a [u8]>),
    HExpired(&'a [u8], Vec<&'a [u8]>),
    ListPush(&'a [u8], bool, Vec<&'a [u8]>),
    ListPop(&'a [u8], bool, usize),
    ListSet(&'a [u8], usize, &'a [u8]),
    ListInsert(&'a [u8], usize, &'a [u8]),
    ListRem(&'a [u8], i64, &'a [u8]),
    ListTrim(&'a [u8], usize, usize),
    SetAdd(&'a [u8], Vec<&'a [u8]>),
    SetRem(&'a [u8], Vec<&'a [u8]>),
    ZAdd(&'a [u8], Vec<(f64, &'a [u8])>),
    ZRem(&'a [u8], Vec<&'a [u8]>),
    ZRemRange(&'a [u8], usize, usize),
    Expire(&'a [u8], Option<u64>),
    Del(&'a [u8]),
    Expired(&'a [u8]),
    Evicted(&'a [u8]),
    Rename(&'a [u8], &'a [u8]),
    Restore(&'a [u8], Value, Option<u64>),
    FlushAll,
    FlushSlots(SlotRange),
    Select(u32),
}

impl<'a> Decoded<'a> {
    /// The mutation to apply.
    pub fn mutation(&self) -> Mutation<'_> {
        match self {
            Decoded::SetStr(key, value, ttl) => Mutation::SetStr {
                key,
                value,
                ttl: *ttl,
            },
            Decoded::SetInt(key, value, ttl) => Mutation::SetInt {
                key,
                value: *value,
                ttl: *ttl,
            },
            Decoded::Append(key, tail) => Mutation::Append { key, tail },
            Decoded::SetRange(key, offset, data) => Mutation::SetRange {
                key,
                offset: *offset,
                data,
            },
            Decoded::HSet(key, pairs) => Mutation::HSet { key, pairs },
            Decoded::HDel(key, fields) => Mutation::HDel { key, fields },
            Decoded::HSetEx(key, at, pairs) => Mutation::HSetEx {
                key,
                at: *at,
                pairs,
            },
            Decoded::HExpire(key, at, fields) => Mutation::HExpire {
                key,
                at: *at,
                fields,
            },
            Decoded::HExpired(key, fields) => Mutation::HExpired { key, fields },
            Decoded::ListPush(key, left, elems) => Mutation::ListPush {
                key,
                left: *left,
                elems,
            },
            Decoded::ListPop(key, left, count) => Mutation::ListPop {
                key,
                left: *left,
                count: *count,
            },
            Decoded::ListSet(key, index, value) => Mutation::ListSet {
                key,
                index: *index,
                value,
            },
            Decoded::ListInsert(key, index, value) => Mutation::ListInsert {
                key,
                index: *index,
                value,
            },
            Decoded::ListRem(key, count, elem) => Mutation::ListRem {
                key,
                count: *count,
                elem,
            },
            Decoded::ListTrim(key, start, end) => Mutation::ListTrim {
                key,
                start: *start,
                end: *end,
            },
            Decoded::SetAdd(key, members) => Mutation::SetAdd { key, members },
            Decoded::SetRem(key, members) => Mutation::SetRem { key, members },
            Decoded::ZAdd(key, pairs) => Mutation::ZAdd { key, pairs },
            Decoded::ZRem(key, members) => Mutation::ZRem { key, members },
            Decoded::ZRemRange(key, start, end) => Mutation::ZRemRange {
                key,
                start: *start,
                end: *end,
            },
            Decoded::Expire(key, at) => Mutation::Expire { key, at: *at },
            Decoded::Del(key) => Mutation::Del { key },
            Decoded::Expired(key) => Mutation::Expired { key },
            Decoded::Evicted(key) => Mutation::Evicted { key },
            Decoded::Rename(from, to) => Mutation::Rename { from, to },
            Decoded::Restore(key, value, expire_at) => Mutation::Restore {
                key,
                value: value.clone(),
                expire_at: *expire_at,
            },
            Decoded::FlushAll => Mutation::FlushAll,
            Decoded::FlushSlots(r) => Mutation::FlushSlots { slots: r.clone() },
            Decoded::Select(db) => Mutation::Select { db: *db },
        }
    }
}

impl Mutation<'_> {
    /// Appends this record's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Mutation::SetStr { key, value, ttl } => {
                out.push(TAG_SET_STR);
                put_bytes(out, key);
                put_bytes(out, value);
                put_ttl(out, *ttl);
            }
            Mutation::SetInt { key, value, ttl } => {
                out.push(TAG_SET_INT);
                put_bytes(out, key);
                put_varint(out, zigzag(*value));
                put_ttl(out, *ttl);
            }
            Mutation::Append { key, tail } => {
                out.push(TAG_APPEND);
                put_bytes(out, key);
                put_bytes(out, tail);
            }
            Mutation::SetRange { key, offset, data } => {
                out.push(TAG_SET_RANGE);
                put_bytes(out, key);
                put_varint(out, *offset as u64);
                put_bytes(out, data);
            }
            Mutation::HSet { key, pairs } | Mutation::HDel { key, fields: pairs } => {
                out.push(if matches!(self, Mutation::HSet { .. }) {
                    TAG_HSET
                } else {
                    TAG_HDEL
                });
                put_bytes(out, key);
                put_varint(out, pairs.len() as u64);
                for p in pairs.iter() {
                    put_bytes(out, p);
                }
            }
            Mutation::HSetEx { key, at, pairs } => {
                out.push(TAG_HSETEX);
                put_bytes(out, key);
                put_varint(out, *at);
                put_list(out, pairs);
            }
            Mutation::HExpire { key, at, fields } => {
                out.push(TAG_HEXPIRE);
                put_bytes(out, key);
                put_opt_time(out, *at);
                put_list(out, fields);
            }
            Mutation::HExpired { key, fields } => {
                out.push(TAG_HEXPIRED);
                put_bytes(out, key);
                put_list(out, fields);
            }
            Mutation::ListPush { key, left, elems } => {
                out.push(TAG_LIST_PUSH);
                put_bytes(out, key);
                out.push(*left as u8);
                put_list(out, elems);
            }
            Mutation::ListPop { key, left, count } => {
                out.push(TAG_LIST_POP);
                put_bytes(out, key);
                out.push(*left as u8);
                put_varint(out, *count as u64);
            }
            Mutation::ListSet { key, index, value }
            | Mutation::ListInsert { key, index, value } => {
                out.push(if matches!(self, Mutation::ListSet { .. }) {
                    TAG_LIST_SET
                } else {
                    TAG_LIST_INSERT
                });
                put_bytes(out, key);
                put_varint(out, *index as u64);
                put_bytes(out, value);
            }
            Mutation::ListRem { key, count, elem } => {
                out.push(TAG_LIST_REM);
                put_bytes(out, key);
                put_varint(out, zigzag(*count));
                put_bytes(out, elem);
            }
            Mutation::ListTrim { key, start, end } => {
                out.push(TAG_LIST_TRIM);
                put_bytes(out, key);
                put_varint(out, *start as u64);
                put_varint(out, *end as u64);
            }
            Mutation::SetAdd { key, members }
            | Mutation::SetRem { key, members }
            | Mutation::ZRem { key, members } => {
                out.push(match self {
                    Mutation::SetAdd { .. } => TAG_SET_ADD,
                    Mutation::SetRem { .. } => TAG_SET_REM,
                    _ => TAG_ZREM,
                });
                put_bytes(out, key);
                put_list(out, members);
            }
            Mutation::ZRemRange { key, start, end } => {
                out.push(TAG_ZREM_RANGE);
                put_bytes(out, key);
                put_varint(out, *start as u64);
                put_varint(out, *end as u64);
            }
            Mutation::ZAdd { key, pairs } => {
                out.push(TAG_ZADD);
                put_bytes(out, key);
                put_scored(out, pairs.len(), pairs.iter().copied());
            }
            Mutation::Expire { key, at } => {
                out.push(TAG_EXPIRE);
                put_bytes(out, key);
                match at {
                    Some(at) => {
                        out.push(1);
                        put_varint(out, *at);
                    }
                    None => out.push(0),
                }
            }
            Mutation::Del { key } | Mutation::Expired { key } | Mutation::Evicted { key } => {
                out.push(match self {
                    Mutation::Expired { .. } => TAG_EXPIRED,
                    Mutation::Evicted { .. } => TAG_EVICTED,
                    _ => TAG_DEL,
                });
                put_bytes(out, key);
            }
            Mutation::Rename { from, to } => {
                out.push(TAG_RENAME);
                put_bytes(out, from);
                put_bytes(out, to);
            }
            Mutation::Restore {
                key,
                value,
                expire_at,
            } => {
                out.push(TAG_RESTORE);
                put_bytes(out, key);
                encode_value(value.as_ref(), out);
                match expire_at {
                    Some(at) => {
                        out.push(1);
                        put_varint(out, *at);
                    }
                    None => out.push(0),
                }
            }
            Mutation::FlushAll => out.push(TAG_FLUSH_ALL),
            Mutation::FlushSlots { slots } => {
                out.push(TAG_FLUSH_SLOTS);
                put_varint(out, slots.start as u64);
                put_varint(out, slots.end as u64);
            }
            Mutation::Select { db } => {
                out.push(TAG_SELECT);
                put_varint(out, *db as u64);
            }
        }
    }

    /// Decodes the next record of `r`; hashes of restored values are built with `limits`.
    pub fn decode<'a>(r: &mut Reader<'a>, limits: Encodings) -> Result<Decoded<'a>, DecodeError> {
        let opt_time = |r: &mut Reader<'a>| -> Result<Option<u64>, DecodeError> {
            match r.byte("time")? {
                0 => Ok(None),
                1 => Ok(Some(r.varint("time")?)),
                t => Err(DecodeError(format!("unknown time kind {t}"))),
            }
        };
        let tag = r.byte("record tag")?;
        Ok(match tag {
            TAG_SET_STR => Decoded::SetStr(r.bytes("key")?, r.bytes("value")?, r.ttl()?),
            TAG_SET_INT => {
                Decoded::SetInt(r.bytes("key")?, unzigzag(r.varint("integer")?), r.ttl()?)
            }
            TAG_APPEND => Decoded::Append(r.bytes("key")?, r.bytes("tail")?),
            TAG_SET_RANGE => {
                let key = r.bytes("key")?;
                let offset = usize::try_from(r.varint("offset")?)
                    .map_err(|_| DecodeError("offset out of range".into()))?;
                Decoded::SetRange(key, offset, r.bytes("data")?)
            }
            TAG_HSET => {
                let key = r.bytes("key")?;
                let pairs = r.list("hash fields")?;
                if !pairs.len().is_multiple_of(2) {
                    return Err(DecodeError("HSET record with an odd field list".into()));
                }
                Decoded::HSet(key, pairs)
            }
            TAG_HDEL => Decoded::HDel(r.bytes("key")?, r.list("hash fields")?),
            TAG_HSETEX => {
                let key = r.bytes("key")?;
                let at = r.varint("field ttl")?;
                let pairs = r.list("hash fields")?;
                if !pairs.len().is_multiple_of(2) {
                    return Err(DecodeError("HSETEX record with an odd field list".into()));
                }
                Decoded::HSetEx(key, at, pairs)
            }
            TAG_HEXPIRE => {
                let key = r.bytes("key")?;
                let at = opt_time(r)?;
                Decoded::HExpire(key, at, r.list("hash fields")?)
            }
            TAG_HEXPIRED => Decoded::HExpired(r.bytes("key")?, r.list("hash fields")?),
            TAG_LIST_PUSH => {
                let key = r.bytes("key")?;
                let left = r.flag("side")?;
                Decoded::ListPush(key, left, r.list("list elements")?)
            }
            TAG_LIST_POP => {
                let key = r.bytes("key")?;
                let left = r.flag("side")?;
                Decoded::ListPop(key, left, r.usize("count")?)
            }
            TAG_LIST_SET | TAG_LIST_INSERT => {
                let key = r.bytes("key")?;
                let index = r.usize("index")?;
                let value = r.bytes("element")?;
                if tag == TAG_LIST_SET {
                    Decoded::ListSet(key, index, value)
                } else {
                    Decoded::ListInsert(key, index, value)
                }
            }
            TAG_LIST_REM => {
                let key = r.bytes("key")?;
                let count = unzigzag(r.varint("count")?);
                Decoded::ListRem(key, count, r.bytes("element")?)
            }
            TAG_LIST_TRIM => {
                let key = r.bytes("key")?;
                let start = r.usize("start")?;
                let end = r.usize("end")?;
                Decoded::ListTrim(key, start, end)
            }
            TAG_SET_ADD => Decoded::SetAdd(r.bytes("key")?, r.list("set members")?),
            TAG_SET_REM => Decoded::SetRem(r.bytes("key")?, r.list("set members")?),
            TAG_ZADD => Decoded::ZAdd(r.bytes("key")?, r.scored("sorted set members")?),
            TAG_ZREM => Decoded::ZRem(r.bytes("key")?, r.list("sorted set members")?),
            TAG_ZREM_RANGE => {
                let key = r.bytes("key")?;
                let start = r.usize("start")?;
                let end = r.usize("end")?;
                Decoded::ZRemRange(key, start, end)
            }
            TAG_EXPIRE => {
                let key = r.bytes("key")?;
                Decoded::Expire(key, opt_time(r)?)
            }
            TAG_DEL => Decoded::Del(r.bytes("key")?),
            TAG_EXPIRED => Decoded::Expired(r.bytes("key")?),
            TAG_EVICTED => Decoded::Evicted(r.bytes("key")?),
            TAG_RENAME => Decoded::Rename(r.bytes("key")?, r.bytes("key")?),
            TAG_RESTORE => {
                let key = r.bytes("key")?;
                let value = r.value(limits)?;
                Decoded::Restore(key, value, opt_time(r)?)
            }
            TAG_FLUSH_ALL => Decoded::FlushAll,
            TAG_FLUSH_SLOTS => {
                let start = r.varint("slot")?;
                let end = r.varint("slot")?;
                if start > end || end > SLOT_COUNT as u64 {
                    return Err(DecodeError(format!("bad slot range {start}..{end}")));
                }
                Decoded::FlushSlots(start as u16..end as u16)
            }
            TAG_SELECT => {
                let db = r.varint("database")?;
                let db =
                    u32::try_from(db).map_err(|_| DecodeError(format!("bad database {db}")))?;
                Decoded::Select(db)
            }
            t => {
                return Err(DecodeError(format!(
                    "unknown record tag {t} (written by a newer tallykv?)"
                )));
            }
        })
    }
}

fn encode_value(value: ValueRef<'_>, out: &mut Vec<u8>) {
    match value {
        ValueRef::Str(s) => {
            out.push(VALUE_STR);
            put_bytes(out, s);
        }
        ValueRef::Int(i) => {
            out.push(VALUE_INT);
            put_varint(out, zigzag(i));
        }
        ValueRef::Hash(h) if h.has_field_ttls() => {
            out.push(VALUE_HASH_TTL);
            put_varint(out, h.len() as u64);
            for (f, v, at) in h.entries() {
                put_bytes(out, f);
                put_bytes(out, v);
                put_opt_time(out, at);
            }
        }
        ValueRef::Hash(h) => {
            out.push(VALUE_HASH);
            put_varint(out, 2 * h.len() as u64);
            for (f, v) in h.iter() {
                put_bytes(out, f);
                put_bytes(out, v);
            }
        }
        ValueRef::List(l) => {
            out.push(VALUE_LIST);
            put_varint(out, l.len() as u64);
            for e in l.iter() {
                put_bytes(out, &e);
            }
        }
        ValueRef::Set(x) => {
            out.push(VALUE_SET);
            put_varint(out, x.len() as u64);
            for m in x.iter() {
                put_bytes(out, &m);
            }
        }
        ValueRef::ZSet(z) => {
            out.push(VALUE_ZSET);
            put_scored(out, z.len(), z.iter().map(|(m, s)| (s, m)));
        }
    }
}

/// An optional absolute time: 0, or 1 and the time.
fn put_opt_time(out: &mut Vec<u8>, at: Option<u64>) {
    match at {
        Some(at) => {
            out.push(1);
            put_varint(out, at);
        }
        None => out.push(0),
    }
}

fn put_list(out: &mut Vec<u8>, items: &[&[u8]]) {
    put_varint(out, items.len() as u64);
    for i in items {
        put_bytes(out, i);
    }
}

/// A count, then per pair the score (f64, little-endian: exact, no decimal round trip) and
/// the member.
fn put_scored<'m>(out: &mut Vec<u8>, n: usize, pairs: impl Iterator<Item = (f64, &'m [u8])>) {
    put_varint(out, n as u64);
    for (s, m) in pairs {
        out.extend_from_slice(&s.to_le_bytes());
        put_bytes(out, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Mutation<'_>) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let mut r = Reader::new(&buf);
        let d = Mutation::decode(&mut r, Encodings::default()).expect("decodes");
        assert!(r.is_empty(), "{m:?} left bytes");
        assert_eq!(d.mutation(), m);
        // Every strict prefix is refused, never misread.
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            assert!(
                Mutation::decode(&mut r, Encodings::default()).is_err(),
                "{m:?} cut at {cut}"
            );
        }
    }

    /// A list, a set and a sorted set with a few members each.
    fn collections() -> (Value, Value, Value) {
        let limits = Encodings::default();
        let mut l = ListObj::new();
        let mut x = SetObj::new();
        let mut z = ZSetObj::new();
        for m in [&b"a"[..], b"7", b"", b"\x00\xff"] {
            l.push_back(m, limits.list);
            x.insert(m, limits.set);
            z.insert(m, m.len() as f64 - 1.5, limits.zset);
        }
        (
            Value::List(Box::new(l)),
            Value::Set(Box::new(x)),
            Value::ZSet(Box::new(z)),
        )
    }

    #[test]
    fn records_roundtrip() {
        let mut h = HashObj::new();
        h.set_pairs(&[b"f", b"v", b"g", b""], Encodings::default().hash);
        let mut volatile = h.clone();
        volatile.set_ttl(b"g", Some(1_700_000_000_000));
        for m in [
            Mutation::SetStr {
                key: b"k",
                value: b"v\0\xff",
                ttl: Ttl::Keep,
            },
            Mutation::SetStr {
                key: b"",
                value: b"",
                ttl: Ttl::At(1_700_000_000_123),
            },
            Mutation::SetInt {
                key: b"n",
                value: i64::MIN,
                ttl: Ttl::Clear,
            },
            Mutation::SetInt {
                key: b"n",
                value: -1,
                ttl: Ttl::Keep,
            },
            Mutation::SetInt {
                key: b"n",
                value: i64::MAX,
                ttl: Ttl::Keep,
            },
            Mutation::Append {
                key: b"a",
                tail: b"xyz",
            },
            Mutation::SetRange {
                key: b"r",
                offset: 1 << 20,
                data: b"d",
            },
            Mutation::HSet {
                key: b"h",
                pairs: &[b"f", b"1", b"g", b"2"],
            },
            Mutation::HDel {
                key: b"h",
                fields: &[b"f"],
            },
            Mutation::HSetEx {
                key: b"h",
                at: 1_700_000_000_123,
                pairs: &[b"f", b"1", b"", b"\xff"],
            },
            Mutation::HExpire {
                key: b"h",
                at: Some(1_700_000_000_123),
                fields: &[b"f", b"g"],
            },
            Mutation::HExpire {
                key: b"h",
                at: None,
                fields: &[b"f"],
            },
            Mutation::HExpired {
                key: b"h",
                fields: &[b"g", b""],
            },
            Mutation::Restore {
                key: b"h",
                value: Value::Hash(Box::new(volatile.clone())),
                expire_at: Some(7),
            },
            Mutation::Expire {
                key: b"e",
                at: Some(5),
            },
            Mutation::Expire {
                key: b"e",
                at: None,
            },
            Mutation::Del { key: b"d" },
            Mutation::Expired { key: b"x" },
            Mutation::Evicted { key: b"v" },
            Mutation::Rename {
                from: b"a",
                to: b"b",
            },
            Mutation::Restore {
                key: b"s",
                value: Value::Str(b"x".to_vec().into()),
                expire_at: Some(9),
            },
            Mutation::Restore {
                key: b"i",
                value: Value::Int(-7),
                expire_at: None,
            },
            Mutation::Restore {
                key: b"h",
                value: Value::Hash(Box::new(h.clone())),
                expire_at: None,
            },
            Mutation::FlushAll,
            Mutation::FlushSlots { slots: 10..20 },
            Mutation::ListPush {
                key: b"l",
                left: true,
                elems: &[b"a", b"", b"\xff"],
            },
            Mutation::ListPop {
                key: b"l",
                left: false,
                count: 3,
            },
            Mutation::ListSet {
                key: b"l",
                index: 2,
                value: b"x",
            },
            Mutation::ListInsert {
                key: b"l",
                index: 0,
                value: b"y",
            },
            Mutation::ListRem {
                key: b"l",
                count: -2,
                elem: b"a",
            },
            Mutation::ListTrim {
                key: b"l",
                start: 1,
                end: 9,
            },
            Mutation::SetAdd {
                key: b"s",
                members: &[b"1", b"m"],
            },
            Mutation::SetRem {
                key: b"s",
                members: &[b"m"],
            },
            Mutation::ZAdd {
                key: b"z",
                pairs: &[(1.5, b"a"), (f64::INFINITY, b"b"), (-0.0, b"c")],
            },
            Mutation::ZRemRange {
                key: b"z",
                start: 3,
                end: 300,
            },
            Mutation::ZRem {
                key: b"z",
                members: &[b"a"],
            },
            Mutation::Restore {
                key: b"c",
                value: collections().0,
                expire_at: None,
            },
            Mutation::Restore {
                key: b"c",
                value: collections().1,
                expire_at: Some(3),
            },
            Mutation::Restore {
                key: b"c",
                value: collections().2,
                expire_at: None,
            },
        ] {
            roundtrip(m);
        }
    }

    #[test]
    fn unknown_tags_and_damage_are_refused() {
        let mut r = Reader::new(&[200]);
        let e = Mutation::decode(&mut r, Encodings::default())
            .err()
            .expect("refused");
        assert!(e.0.contains("unknown record tag 200"), "{e}");
        // A list count far beyond the bytes present is refused without allocating.
        let mut buf = vec![TAG_HDEL];
        put_bytes(&mut buf, b"h");
        put_varint(&mut buf, u64::MAX >> 1);
        let mut r = Reader::new(&buf);
        assert!(Mutation::decode(&mut r, Encodings::default()).is_err());
    }
}
