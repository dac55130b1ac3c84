//! The on-disk encoding of keys and values (format version 1).
//!
//! A stored key is the key's hash slot (2 bytes, big-endian) followed by the key itself, so a
//! slot, a core's slot range or a future slot group is one contiguous range of a keyspace.
//!
//! A stored value is:
//!
//! ```text
//! byte 0      format version (1)
//! byte 1      type: 0 string, 1 integer, 2 hash, 3 list, 4 set, 5 sorted set,
//!             6 hash with field expiry; bit 7 set when an expiry follows, bit 6 when an
//!             epoch follows
//! [8 bytes]   absolute expiry, Unix ms, little-endian (only with bit 7)
//! [8 bytes]   delta epoch, little-endian (only with bit 6; see below)
//! payload     string: the bytes; integer: i64 little-endian;
//!             hash: u32 field count, then per field u32 length + bytes, u32 length + bytes
//!             list, set: u32 count, then per element u32 length + bytes (a list in order)
//!             sorted set: u32 count, then per member f64 score (LE) + u32 length + bytes
//!             hash with field expiry: u32 field count, then per field u32 length + bytes,
//!             u32 length + bytes, u64 absolute expiry of the field (Unix ms, LE; 0 = none)
//! ```
//!
//! Types 3–6 were added without a version bump: a version-1 reader from before them refuses
//! them by type ("unknown value type"), which is the failure a version bump would give. Type
//! 6 is written only for a hash some of whose fields have a time to live (any other hash is
//! still type 2, so files stay readable by builds from before field expiry as long as no
//! field TTL was ever used). Its fields are stored as they are, expired or not: a field whose
//! time passed while the node was down is hidden from the first read and deleted by the
//! write path's field expiry, like an expired key in a cluster.
//!
//! A large value (a collection of many elements, a long string) that changes a little at a
//! time is not rewritten whole on every change: its stored form carries an epoch, and each
//! later change is stored as a delta in the `deltas` keyspace, keyed
//!
//! ```text
//! [slot u16 BE][key length u32 BE][key][epoch u64 BE][sequence u32 BE]
//! ```
//!
//! whose value is the change's mutation records (the Raft log's record encoding, one after
//! the other). Loading applies a key's deltas of its value's epoch in sequence order on top
//! of the value; deltas of another epoch are left over from before the value was last
//! rewritten, and are ignored (and deleted). The key length keeps one key's deltas apart from
//! a longer key that starts with the same bytes.
//!
//! A reader refuses a version it does not know instead of guessing, so a file written by a
//! future release fails loudly; a future release keeps reading version 1.

use crate::shard::{Encodings, HashLimits, HashObj, ListObj, SetObj, Value, ValueRef, ZSetObj};

pub const FORMAT_VERSION: u8 = 1;

const TYPE_STR: u8 = 0;
const TYPE_INT: u8 = 1;
const TYPE_HASH: u8 = 2;
const TYPE_LIST: u8 = 3;
const TYPE_SET: u8 = 4;
const TYPE_ZSET: u8 = 5;
const TYPE_HASH_TTL: u8 = 6;
const HAS_EXPIRY: u8 = 0x80;
const HAS_EPOCH: u8 = 0x40;

/// The longest key storage holds. fjall keys are at most 65535 bytes (a `u16` length; a
/// longer one panics inside fjall), and the longest stored form of a key is a delta's
/// ([`encode_delta_key`]: slot, key length, key, epoch, sequence), 18 bytes more than the key.
/// Write commands refuse longer keys before they run.
pub const MAX_KEY_LEN: usize = u16::MAX as usize - DELTA_KEY_OVERHEAD;
const DELTA_KEY_OVERHEAD: usize = 2 + 4 + 8 + 4;

/// The longest string storage holds, the most `proto-max-bulk-len` may be set to. fjall
/// values are below 4 GiB (a `u32` length, as is a shard entry's string length); a stored
/// value adds its header, a delta its record framing and the key (at most [`MAX_KEY_LEN`]):
/// 1 MiB of room covers them.
pub const MAX_STRING_LEN: usize = (1 << 32) - 1024 * 1024;

/// Appends the stored form of `key` in `slot` to `out`.
pub fn encode_key(slot: u16, key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&slot.to_be_bytes());
    out.extend_from_slice(key);
}

/// Marks an [`crate::storage::Item`] key of a numbered database other than 0: the marker,
/// the database (u32 BE), then the key as [`encode_key`] stores it. Database 0's stored keys
/// start with their slot, below 0x4000, so the marker cannot be mistaken for one.
pub const DB_MARKER: u8 = 0xFF;

/// Appends the stored form of `key` in `slot` of database `db` to `out`: [`encode_key`]'s
/// for database 0, else [`DB_MARKER`] and the database first (storage keeps those in a
/// keyspace of their own, keyed by database, slot, key).
pub fn encode_db_key(db: u32, slot: u16, key: &[u8], out: &mut Vec<u8>) {
    if db != 0 {
        out.push(DB_MARKER);
        out.extend_from_slice(&db.to_be_bytes());
    }
    encode_key(slot, key, out);
}

/// The first key of `slot` of database `db` in the numbered databases' keyspace.
pub fn db_slot_prefix(db: u32, slot: usize) -> [u8; 6] {
    let mut p = [0u8; 6];
    p[..4].copy_from_slice(&db.to_be_bytes());
    p[4..].copy_from_slice(&(slot as u16).to_be_bytes());
    p
}

/// The database of a key of the numbered databases' keyspace, and the rest of it (as
/// [`decode_key`] reads it).
pub fn decode_db(stored: &[u8]) -> Result<(u32, &[u8]), String> {
    if stored.len() < 6 {
        return Err(format!("stored key of {} bytes is too short", stored.len()));
    }
    let db = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
    Ok((db, &stored[4..]))
}

/// The slot and user key of a stored key.
pub fn decode_key(stored: &[u8]) -> Result<(u16, &[u8]), String> {
    if stored.len() < 2 {
        return Err(format!("stored key of {} bytes is too short", stored.len()));
    }
    Ok((u16::from_be_bytes([stored[0], stored[1]]), &stored[2..]))
}

/// The first stored key of `slot` (a range bound).
pub fn slot_prefix(slot: usize) -> [u8; 2] {
    (slot as u16).to_be_bytes()
}

/// Appends the stored form of a value and its expiry to `out`.
pub fn encode_value(value: ValueRef<'_>, expire_at: Option<u64>, out: &mut Vec<u8>) {
    encode_value_at(value, expire_at, None, out)
}

/// [`encode_value`] for a value whose later changes are stored as deltas of `epoch`.
pub fn encode_value_at(
    value: ValueRef<'_>,
    expire_at: Option<u64>,
    epoch: Option<u64>,
    out: &mut Vec<u8>,
) {
    let ty = match value {
        ValueRef::Str(_) => TYPE_STR,
        ValueRef::Int(_) => TYPE_INT,
        ValueRef::Hash(h) if h.has_field_ttls() => TYPE_HASH_TTL,
        ValueRef::Hash(_) => TYPE_HASH,
        ValueRef::List(_) => TYPE_LIST,
        ValueRef::Set(_) => TYPE_SET,
        ValueRef::ZSet(_) => TYPE_ZSET,
    };
    out.push(FORMAT_VERSION);
    let flags = expire_at.map_or(0, |_| HAS_EXPIRY) | epoch.map_or(0, |_| HAS_EPOCH);
    out.push(ty | flags);
    if let Some(at) = expire_at {
        out.extend_from_slice(&at.to_le_bytes());
    }
    if let Some(e) = epoch {
        out.extend_from_slice(&e.to_le_bytes());
    }
    match value {
        ValueRef::Str(s) => out.extend_from_slice(s),
        ValueRef::Int(i) => out.extend_from_slice(&i.to_le_bytes()),
        ValueRef::Hash(h) if h.has_field_ttls() => {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
            for (f, v, at) in h.entries() {
                put(out, f);
                put(out, v);
                out.extend_from_slice(&at.unwrap_or(0).to_le_bytes());
            }
        }
        ValueRef::Hash(h) => {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
            for (f, v) in h.iter() {
                out.extend_from_slice(&(f.len() as u32).to_le_bytes());
                out.extend_from_slice(f);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        ValueRef::List(l) => {
            out.extend_from_slice(&(l.len() as u32).to_le_bytes());
            for e in l.iter() {
                put(out, &e);
            }
        }
        ValueRef::Set(x) => {
            out.extend_from_slice(&(x.len() as u32).to_le_bytes());
            for m in x.iter() {
                put(out, &m);
            }
        }
        ValueRef::ZSet(z) => {
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            for (m, score) in z.iter() {
                out.extend_from_slice(&score.to_le_bytes());
                put(out, m);
            }
        }
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// The absolute expiry of a stored value, without decoding the value (None: persistent).
pub fn peek_expiry(stored: &[u8]) -> Result<Option<u64>, String> {
    Ok(header(stored)?.expire_at)
}

struct Header<'a> {
    ty: u8,
    expire_at: Option<u64>,
    epoch: Option<u64>,
    payload: &'a [u8],
}

fn header(stored: &[u8]) -> Result<Header<'_>, String> {
    let [version, ty, rest @ ..] = stored else {
        return Err(format!(
            "stored value of {} bytes is too short",
            stored.len()
        ));
    };
    if *version != FORMAT_VERSION {
        return Err(format!(
            "stored value has format version {version}; this build reads version {FORMAT_VERSION} \
             (was the data written by a newer tallykv?)"
        ));
    }
    let mut payload = rest;
    let mut word = |what: &str| match payload.split_first_chunk::<8>() {
        Some((w, tail)) => {
            payload = tail;
            Ok(u64::from_le_bytes(*w))
        }
        None => Err(format!("stored value is cut short inside its {what}")),
    };
    let expire_at = (ty & HAS_EXPIRY != 0).then(|| word("expiry")).transpose()?;
    let epoch = (ty & HAS_EPOCH != 0).then(|| word("epoch")).transpose()?;
    Ok(Header {
        ty: ty & !(HAS_EXPIRY | HAS_EPOCH),
        expire_at,
        epoch,
        payload,
    })
}

/// Decodes a stored value; hashes are built with `limits` (listpack or table, as a write of
/// the same fields would have made them).
pub fn decode_value(stored: &[u8], limits: Encodings) -> Result<(Value, Option<u64>), String> {
    decode_value_at(stored, limits).map(|(v, at, _)| (v, at))
}

/// [`decode_value`], and the epoch of the value's deltas (None: it has none).
pub fn decode_value_at(
    stored: &[u8],
    limits: Encodings,
) -> Result<(Value, Option<u64>, Option<u64>), String> {
    let Header {
        ty,
        expire_at,
        epoch,
        payload,
    } = header(stored)?;
    let value = match ty {
        TYPE_STR => Value::from_bytes(payload),
        TYPE_INT => {
            let b: [u8; 8] = payload
                .try_into()
                .map_err(|_| format!("integer value has {} bytes, not 8", payload.len()))?;
            Value::Int(i64::from_le_bytes(b))
        }
        TYPE_HASH => Value::Hash(Box::new(decode_hash(payload, limits.hash, false)?)),
        TYPE_HASH_TTL => Value::Hash(Box::new(decode_hash(payload, limits.hash, true)?)),
        TYPE_LIST | TYPE_SET => {
            let elems = decode_elements(payload)?;
            if ty == TYPE_LIST {
                let mut l = ListObj::new();
                for e in elems {
                    l.push_back(e, limits.list);
                }
                Value::List(Box::new(l))
            } else {
                let mut x = SetObj::for_first(elems[0], limits.set);
                for m in &elems {
                    x.insert(m, limits.set);
                }
                if x.len() != elems.len() {
                    return Err("set value repeats a member".into());
                }
                Value::Set(Box::new(x))
            }
        }
        TYPE_ZSET => Value::ZSet(Box::new(decode_zset(payload, limits)?)),
        other => return Err(format!("unknown value type {other}")),
    };
    Ok((value, expire_at, epoch))
}

/// Appends the first stored key of `key`'s deltas (every delta of the key starts with it).
pub fn encode_delta_prefix(slot: u16, key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&slot.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// Appends the stored key of `key`'s delta number `seq` of `epoch`.
pub fn encode_delta_key(slot: u16, key: &[u8], epoch: u64, seq: u32, out: &mut Vec<u8>) {
    encode_delta_prefix(slot, key, out);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// A delta's stored key, read back.
pub struct DeltaKey<'a> {
    pub slot: u16,
    pub key: &'a [u8],
    pub epoch: u64,
    pub seq: u32,
}

pub fn decode_delta_key(stored: &[u8]) -> Result<DeltaKey<'_>, String> {
    let bad = || format!("stored delta key of {} bytes is malformed", stored.len());
    let (slot, rest) = stored.split_first_chunk::<2>().ok_or_else(bad)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() != len + 12 {
        return Err(bad());
    }
    let (key, rest) = rest.split_at(len);
    let (epoch, seq) = rest.split_at(8);
    Ok(DeltaKey {
        slot: u16::from_be_bytes(*slot),
        key,
        epoch: u64::from_be_bytes(epoch.try_into().map_err(|_| bad())?),
        seq: u32::from_be_bytes(seq.try_into().map_err(|_| bad())?),
    })
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if p.len() < n {
        return Err("value is cut short".into());
    }
    let (head, tail) = p.split_at(n);
    *p = tail;
    Ok(head)
}

fn take_len(p: &mut &[u8]) -> Result<usize, String> {
    let b = take(p, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The elements of a list or set payload (at least one).
fn decode_elements(mut p: &[u8]) -> Result<Vec<&[u8]>, String> {
    let count = take_len(&mut p)?;
    if count == 0 {
        return Err("collection value has no elements".into());
    }
    // Each element takes at least its 4-byte length: a larger count is damage.
    if count > p.len() / 4 {
        return Err("collection value is cut short".into());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_len(&mut p)?;
        out.push(take(&mut p, n)?);
    }
    if !p.is_empty() {
        return Err(format!("collection value has {} stray bytes", p.len()));
    }
    Ok(out)
}

fn decode_zset(mut p: &[u8], limits: Encodings) -> Result<ZSetObj, String> {
    let count = take_len(&mut p)?;
    if count == 0 || count > p.len() / 12 {
        return Err("sorted set value is empty or cut short".into());
    }
    // Sized up front as Valkey loads one (a large set keeps its skiplist's -0).
    let mut z = ZSetObj::with_hint(count, 0, limits.zset);
    for _ in 0..count {
        let score = f64::from_le_bytes(take(&mut p, 8)?.try_into().expect("8 bytes"));
        if score.is_nan() {
            return Err("sorted set value holds a NaN score".into());
        }
        let n = take_len(&mut p)?;
        z.insert(take(&mut p, n)?, score, limits.zset);
    }
    if !p.is_empty() || z.len() != count {
        return Err("sorted set value has stray bytes or repeats a member".into());
    }
    Ok(z)
}

/// A hash payload (type 2, or type 6 when `with_ttls`: an expiry after each field).
fn decode_hash(mut p: &[u8], limits: HashLimits, with_ttls: bool) -> Result<HashObj, String> {
    let count = take_len(&mut p)?;
    if count == 0 {
        return Err("hash value has no fields".into());
    }
    let mut h = HashObj::new();
    let mut ttls = Vec::new();
    for _ in 0..count {
        let flen = take_len(&mut p)?;
        let field = take(&mut p, flen)?;
        let vlen = take_len(&mut p)?;
        let value = take(&mut p, vlen)?;
        h.set(field, value, limits);
        if with_ttls {
            let at = u64::from_le_bytes(take(&mut p, 8)?.try_into().expect("8 bytes"));
            if at != 0 {
                ttls.push((field, at));
            }
        }
    }
    // After every field is in, so the encoding is the one the fields alone give before the
    // first TTL makes it a table (as a replayed write would).
    for (field, at) in ttls {
        h.set_ttl(field, Some(at));
    }
    if !p.is_empty() {
        return Err(format!(
            "hash value has {} stray bytes after its fields",
            p.len()
        ));
    }
    if h.len() != count {
        return Err("hash value repeats a field".into());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value, exp: Option<u64>) {
        let mut buf = Vec::new();
        encode_value(v.as_ref(), exp, &mut buf);
        let (back, e) = decode_value(&buf, Encodings::default()).unwrap();
        assert_eq!(&back, v);
        assert_eq!(e, exp);
        assert_eq!(peek_expiry(&buf).unwrap(), exp);
        for epoch in [0, 7, u64::MAX] {
            let mut buf = Vec::new();
            encode_value_at(v.as_ref(), exp, Some(epoch), &mut buf);
            let (back, e, ep) = decode_value_at(&buf, Encodings::default()).unwrap();
            assert_eq!((&back, e, ep), (v, exp, Some(epoch)));
            assert_eq!(peek_expiry(&buf).unwrap(), exp);
        }
    }

    #[test]
    fn the_longest_key_fits_every_stored_form() {
        let key = vec![b'k'; MAX_KEY_LEN];
        let mut stored = Vec::new();
        encode_delta_key(16383, &key, u64::MAX, u32::MAX, &mut stored);
        assert_eq!(stored.len(), u16::MAX as usize);
        for db in [0, u32::MAX] {
            stored.clear();
            encode_db_key(db, 16383, &key, &mut stored);
            // The database marker is taken off before the key reaches fjall.
            assert!(stored.len() - usize::from(db != 0) <= u16::MAX as usize);
        }
        // A stored string value's header is far below the room left for it.
        let mut value = Vec::new();
        encode_value(ValueRef::Str(b""), Some(u64::MAX), &mut value);
        assert!(MAX_STRING_LEN + value.len() + MAX_KEY_LEN < u32::MAX as usize);
    }

    #[test]
    fn delta_keys_round_trip_and_sort_by_key_then_epoch_then_sequence() {
        let enc = |key: &[u8], epoch, seq| {
            let mut out = Vec::new();
            encode_delta_key(9, key, epoch, seq, &mut out);
            out
        };
        let k = enc(b"list", 3, 258);
        let d = decode_delta_key(&k).unwrap();
        assert_eq!((d.slot, d.key, d.epoch, d.seq), (9, &b"list"[..], 3, 258));
        assert!(enc(b"list", 3, 2) < enc(b"list", 3, 10));
        assert!(enc(b"list", 3, u32::MAX) < enc(b"list", 4, 0));
        // A longer key sharing the first bytes never sorts inside another key's deltas.
        let mut prefix = Vec::new();
        encode_delta_prefix(9, b"list", &mut prefix);
        assert!(!enc(b"lists", 0, 0).starts_with(&prefix));
        for cut in 0..k.len() {
            assert!(decode_delta_key(&k[..cut]).is_err());
        }
    }

    #[test]
    fn values_round_trip() {
        round_trip(&Value::Str(b"hello\0\xff".as_slice().into()), None);
        round_trip(&Value::Str(Box::default()), Some(1));
        round_trip(&Value::Int(i64::MIN), Some(u64::MAX));
        round_trip(&Value::Int(42), None);
        let mut h = HashObj::new();
        for i in 0..300 {
            h.set(
                format!("f{i}").as_bytes(),
                format!("v{i}").as_bytes(),
                HashLimits::default(),
            );
        }
        round_trip(&Value::Hash(Box::new(h)), Some(1_700_000_000_000));
        let limits = Encodings::default();
        let mut l = ListObj::new();
        let mut ints = SetObj::new();
        let mut x = SetObj::new();
        let mut z = ZSetObj::new();
        for i in 0..300 {
            let m = format!("m{i}");
            l.push_back(m.as_bytes(), limits.list);
            l.push_back(b"dup", limits.list);
            ints.insert(i.to_string().as_bytes(), limits.set);
            x.insert(m.as_bytes(), limits.set);
            z.insert(m.as_bytes(), (i % 7) as f64 * 0.5, limits.zset);
        }
        z.insert(b"inf", f64::INFINITY, limits.zset);
        z.insert(b"-inf", f64::NEG_INFINITY, limits.zset);
        for v in [
            Value::List(Box::new(l)),
            Value::Set(Box::new(ints)),
            Value::Set(Box::new(x)),
            Value::ZSet(Box::new(z)),
        ] {
            round_trip(&v, Some(7));
            round_trip(&v, None);
        }
    }

    #[test]
    fn hashes_with_field_ttls_are_type_6_and_keep_them() {
        let limits = Encodings::default();
        let mut h = HashObj::new();
        h.set_pairs(&[b"a", b"1", b"b", b"2", b"c", b"3"], limits.hash);
        let mut plain = Vec::new();
        encode_value(ValueRef::Hash(&h), None, &mut plain);
        assert_eq!(
            plain[1], TYPE_HASH,
            "a hash without field TTLs keeps type 2"
        );
        h.set_ttl(b"a", Some(1_700_000_000_123));
        h.set_ttl(b"c", Some(5));
        let mut buf = Vec::new();
        encode_value(ValueRef::Hash(&h), Some(9), &mut buf);
        assert_eq!(buf[1], TYPE_HASH_TTL | HAS_EXPIRY);
        let (back, exp) = decode_value(&buf, limits).unwrap();
        assert_eq!((&back, exp), (&Value::Hash(Box::new(h.clone())), Some(9)));
        let Value::Hash(back) = back else {
            unreachable!("decoded a hash")
        };
        assert_eq!(back.encoding(), "hashtable");
        assert_eq!(back.field_ttl(b"a", 0), Some(Some(1_700_000_000_123)));
        assert_eq!(back.field_ttl(b"b", 0), Some(None));
        // Stored as it was: the long-expired field is there, hidden from reads.
        assert_eq!((back.len(), back.live_len(6)), (3, 2));
        for cut in 0..buf.len() {
            assert!(decode_value(&buf[..cut], limits).is_err(), "cut at {cut}");
        }
        // A type-2 value written before field expiry existed still loads.
        let (old, _) = decode_value(&plain, limits).unwrap();
        assert!(matches!(old, Value::Hash(h) if !h.has_field_ttls() && h.len() == 3));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        let mut h = HashObj::new();
        h.set(b"f", b"v", HashLimits::default());
        encode_value(ValueRef::Hash(&h), Some(5), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_value(&buf[..cut], Encodings::default()).is_err());
        }
        let mut newer = buf.clone();
        newer[0] = 2;
        let err = decode_value(&newer, Encodings::default()).unwrap_err();
        assert!(err.contains("format version 2"), "{err}");
        let mut bad_type = buf.clone();
        bad_type[1] = 0x85;
        assert!(decode_value(&bad_type, Encodings::default()).is_err());
        proptest::proptest!(|(bytes: Vec<u8>)| {
            let _ = decode_value(&bytes, Encodings::default());
        });
    }

    #[test]
    fn keys_carry_their_slot() {
        let mut k = Vec::new();
        encode_key(16383, b"abc", &mut k);
        assert_eq!(decode_key(&k).unwrap(), (16383, b"abc".as_slice()));
        assert!(decode_key(b"x").is_err());
        assert!(slot_prefix(1) > slot_prefix(0));
    }
}
