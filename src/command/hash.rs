//! Hashes: HSET/HGET and friends, HINCRBY(FLOAT), HRANDFIELD, HSCAN — their table rows and
//! handlers — and Valkey 9's hash field expiry (HEXPIRE, HTTL, HPERSIST, HGETEX, HSETEX...),
//! whose handlers are in [`expiry`].
//!
//! A field whose time to live has passed is invisible to every command here: reads are given
//! `now` and skip it, and on the node that owns the write path the lookup itself deletes it
//! (a record, as for an expired key) before the command sees the hash.

mod expiry;

use bytes::Bytes;

use super::flags::{FAST, READONLY, WRITE};
use super::keyspace::{INVALID_CURSOR, ScanOf, parse_cursor, parse_scan_options, reply_scan_head};
use super::table::{CommandDef, K1, RF, WF, def};
use super::{Ctx, Exec::Shard as S, KeyAccess, NOT_INTEGER, OVERFLOW, WRONGTYPE};
use crate::protocol::Out;
use crate::shard::{HashObj, Mutation, ValueRef};

const FIELDS_COMPLEXITY: &str = "O(N) where N is the number of specified fields.";

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "hset",
        -4,
        WF,
        K1,
        "hash",
        "2.0.0",
        "Creates or modifies the value of a field in a hash.",
        "O(1) for each field/value pair added, so O(N) to add N field/value pairs when the command is called with multiple field/value pairs.",
        S(hset),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hsetnx",
        4,
        WF,
        K1,
        "hash",
        "2.0.0",
        "Sets the value of a field in a hash only when the field doesn't exist.",
        "O(1)",
        S(hsetnx),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hmset",
        -4,
        WF,
        K1,
        "hash",
        "2.0.0",
        "Sets the values of multiple fields.",
        "O(N) where N is the number of fields being set.",
        S(hmset),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hget",
        3,
        RF,
        K1,
        "hash",
        "2.0.0",
        "Returns the value of a field in a hash.",
        "O(1)",
        S(hget),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hmget",
        -3,
        RF,
        K1,
        "hash",
        "2.0.0",
        "Returns the values of all fields in a hash.",
        "O(N) where N is the number of fields being requested.",
        S(hmget),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hgetall",
        2,
        READONLY,
        K1,
        "hash",
        "2.0.0",
        "Returns all fields and values in a hash.",
        "O(N) where N is the size of the hash.",
        S(hgetall),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hdel",
        -3,
        WRITE | FAST,
        K1,
        "hash",
        "2.0.0",
        "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.",
        "O(N) where N is the number of fields to be removed.",
        S(hdel),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hlen",
        2,
        RF,
        K1,
        "hash",
        "2.0.0",
        "Returns the number of fields in a hash.",
        "O(1)",
        S(hlen),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "hexists",
        3,
        RF,
        K1,
        "hash",
        "2.0.0",
        "Determines whether a field exists in a hash.",
        "O(1)",
        S(hexists),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "hkeys",
        2,
        READONLY,
        K1,
        "hash",
        "2.0.0",
        "Returns all fields in a hash.",
        "O(N) where N is the size of the hash.",
        S(hkeys),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hvals",
        2,
        READONLY,
        K1,
        "hash",
        "2.0.0",
        "Returns all values in a hash.",
        "O(N) where N is the size of the hash.",
        S(hvals),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hstrlen",
        3,
        RF,
        K1,
        "hash",
        "3.2.0",
        "Returns the length of the value of a field.",
        "O(1)",
        S(hstrlen),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "hincrby",
        4,
        WF,
        K1,
        "hash",
        "2.0.0",
        "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.",
        "O(1)",
        S(hincrby),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "hincrbyfloat",
        4,
        WF,
        K1,
        "hash",
        "2.6.0",
        "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.",
        "O(1)",
        S(hincrbyfloat),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "hrandfield",
        -2,
        READONLY,
        K1,
        "hash",
        "6.2.0",
        "Returns one or more random fields from a hash.",
        "O(N) where N is the number of fields returned",
        S(hrandfield),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hscan",
        -3,
        READONLY,
        K1,
        "hash",
        "2.8.0",
        "Iterates over fields and values of a hash.",
        "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
        S(hscan),
    )
    .key_access(KeyAccess::READ_ONLY),
    // hash field expiry (Valkey 9.0)
    def(
        "hexpire",
        -6,
        WRITE | FAST,
        K1,
        "hash",
        "9.0.0",
        "Sets expiry time on hash fields.",
        FIELDS_COMPLEXITY,
        S(expiry::hexpire),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hpexpire",
        -6,
        WRITE | FAST,
        K1,
        "hash",
        "9.0.0",
        "Set expiry time on hash object.",
        "O(1) for each field assigned with TTL, so O(N) to add N TTLs when the command is called with multiple fields.",
        S(expiry::hpexpire),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hexpireat",
        -6,
        WRITE | FAST,
        K1,
        "hash",
        "9.0.0",
        "Set expiry time on hash fields.",
        FIELDS_COMPLEXITY,
        S(expiry::hexpireat),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hpexpireat",
        -6,
        WRITE | FAST,
        K1,
        "hash",
        "9.0.0",
        "Sets expiration time on hash field.",
        FIELDS_COMPLEXITY,
        S(expiry::hpexpireat),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "httl",
        -5,
        RF,
        K1,
        "hash",
        "9.0.0",
        "Returns the remaining time to live (in seconds) of a hash key's field(s) that have an associated expiration.",
        FIELDS_COMPLEXITY,
        S(expiry::httl),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hpttl",
        -5,
        RF,
        K1,
        "hash",
        "9.0.0",
        "Returns the remaining time to live in milliseconds of a hash key's field(s) that have an associated expiration.",
        FIELDS_COMPLEXITY,
        S(expiry::hpttl),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hexpiretime",
        -5,
        RF,
        K1,
        "hash",
        "9.0.0",
        "Returns the Unix timestamp in seconds since the epoch at which the given key's field(s) will expire",
        "O(1) for each field, so O(N) for N items when the command is called with multiple fields.",
        S(expiry::hexpiretime),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hpexpiretime",
        -5,
        RF,
        K1,
        "hash",
        "9.0.0",
        "Returns the Unix timestamp in milliseconds since Unix epoch at which the given key's field(s) will expire",
        "O(1) for each field, so O(N) for N items when the command is called with multiple fields.",
        S(expiry::hpexpiretime),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "hpersist",
        -5,
        WRITE | FAST,
        K1,
        "hash",
        "9.0.0",
        "Remove the existing expiration on a hash key's field(s).",
        FIELDS_COMPLEXITY,
        S(expiry::hpersist),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "hgetex",
        -5,
        WRITE | FAST,
        K1,
        "hash",
        "9.0.0",
        "Get the value of one or more fields of a given hash key, and optionally set their expiration time or time-to-live (TTL).",
        FIELDS_COMPLEXITY,
        S(expiry::hgetex),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "hsetex",
        -6,
        WF,
        K1,
        "hash",
        "9.0.0",
        "Set the value of one or more fields of a given hash key, and optionally set their expiration time.",
        FIELDS_COMPLEXITY,
        S(expiry::hsetex),
    )
    .key_access(KeyAccess::WRITE_ONLY),
];

/// The hash at `key` for reading: Ok(None) when missing, Err after replying WRONGTYPE.
fn read_hash<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c HashObj>, ()> {
    hash_for_read(ctx.shard, ctx.now, ctx.out, key)
}

/// `read_hash` on split borrows, so the caller can read the hash in place while writing the
/// reply to `out`.
fn hash_for_read<'s>(
    shard: &'s mut crate::shard::Shard,
    now: u64,
    out: &mut crate::protocol::Out,
    key: &[u8],
) -> Result<Option<&'s HashObj>, ()> {
    super::typed(
        shard.get_read(key, now).map(|e| e.value()),
        out,
        ValueRef::hash,
    )
}

/// For writes (lazy expiry, no hit/miss accounting): the number of live fields of the hash
/// at `key`, 0 when missing; Err after replying WRONGTYPE.
fn hash_len_for_write(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<usize, ()> {
    let now = ctx.now;
    match ctx.write(key).map(|e| e.value()) {
        None => Ok(0),
        Some(ValueRef::Hash(h)) => Ok(h.live_len(now)),
        Some(_) => {
            ctx.out.error(WRONGTYPE);
            Err(())
        }
    }
}

/// The number of live fields of the hash at `key` (0 when missing), without side effects.
fn hash_len(ctx: &Ctx<'_>, key: &[u8]) -> usize {
    match ctx.shard.peek(key, ctx.now).map(|e| e.value()) {
        Some(ValueRef::Hash(h)) => h.live_len(ctx.now),
        _ => 0,
    }
}

fn as_slices(args: &[Bytes]) -> Vec<&[u8]> {
    args.iter().map(|a| &a[..]).collect()
}

pub fn hset(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hset_generic(ctx, args, false);
}

pub fn hmset(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hset_generic(ctx, args, true);
}

fn hset_generic(ctx: &mut Ctx<'_>, args: &[Bytes], ok_reply: bool) {
    if !args.len().is_multiple_of(2) {
        super::arity_error(ctx.out, if ok_reply { "hmset" } else { "hset" });
        return;
    }
    let key = &args[1];
    let Ok(before) = hash_len_for_write(ctx, key) else {
        return;
    };
    let pairs = as_slices(&args[2..]);
    ctx.apply(Mutation::HSet { key, pairs: &pairs });
    if ok_reply {
        ctx.out.ok()
    } else {
        // HSET only adds or updates, so the new fields (a field repeated in one call counting
        // once) are exactly how much the hash grew.
        let after = hash_len(ctx, key);
        ctx.out.int((after - before) as i64)
    }
}

pub fn hsetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Ok(len) = hash_len_for_write(ctx, key) else {
        return;
    };
    if len > 0 && field_value(ctx, key, &args[2]).is_some() {
        ctx.out.int(0);
        return;
    }
    ctx.apply(Mutation::HSet {
        key,
        pairs: &[&args[2], &args[3]],
    });
    ctx.out.int(1);
}

pub fn hget(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (field, now) = (&args[2], ctx.now);
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    match h.and_then(|h| h.get(field, now)) {
        Some(v) => {
            let v = v.to_vec();
            ctx.out.bulk(&v);
        }
        None => ctx.out.nil(),
    }
}

pub fn hmget(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(h) = hash_for_read(shard, *now, out, &args[1]) else {
        return;
    };
    out.array(args.len() - 2);
    for f in &args[2..] {
        match h.and_then(|h| h.get(f, *now)) {
            Some(v) => out.bulk(v),
            None => out.nil(),
        }
    }
}

pub fn hgetall(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hget_all_parts(ctx, args, true, true);
}

pub fn hkeys(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hget_all_parts(ctx, args, true, false);
}

pub fn hvals(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hget_all_parts(ctx, args, false, true);
}

fn hget_all_parts(ctx: &mut Ctx<'_>, args: &[Bytes], fields: bool, values: bool) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(h) = hash_for_read(shard, *now, out, &args[1]) else {
        return;
    };
    let n = h.map_or(0, |h| h.live_len(*now));
    if fields && values {
        out.map(n);
    } else {
        out.array(n);
    }
    if let Some(h) = h {
        for (f, v) in h.iter_live(*now) {
            if fields {
                out.bulk(f);
            }
            if values {
                out.bulk(v);
            }
        }
    }
}

pub fn hdel(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Ok(before) = hash_len_for_write(ctx, key) else {
        return;
    };
    let fields = &args[2..];
    // Only write a record when something goes (a missing key or fields change nothing).
    let any = before > 0 && fields.iter().any(|f| field_value(ctx, key, f).is_some());
    if !any {
        ctx.out.int(0);
        return;
    }
    let fields = as_slices(fields);
    ctx.apply(Mutation::HDel {
        key,
        fields: &fields,
    });
    // A field named twice goes once: the count is how much the hash shrank (the key itself
    // goes with its last field, and then reads as 0 fields).
    let after = hash_len(ctx, key);
    ctx.out.int((before - after) as i64);
}

pub fn hlen(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let now = ctx.now;
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let n = h.map_or(0, |h| h.live_len(now));
    ctx.out.int(n as i64);
}

pub fn hexists(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let now = ctx.now;
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let present = h.is_some_and(|h| h.get(&args[2], now).is_some());
    ctx.out.int(present as i64);
}

pub fn hstrlen(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let now = ctx.now;
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let n = h.and_then(|h| h.get(&args[2], now)).map_or(0, |v| v.len());
    ctx.out.int(n as i64);
}

pub fn hincrby(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(by) = super::arg_i64(&args[3]) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    let key = &args[1];
    if hash_len_for_write(ctx, key).is_err() {
        return;
    }
    let current = field_value(ctx, key, &args[2]);
    let cur = match current {
        None => 0,
        Some(v) => match crate::util::parse_i64(v) {
            Some(i) => i,
            None => {
                ctx.out.error("ERR hash value is not an integer");
                return;
            }
        },
    };
    let Some(new) = cur.checked_add(by) else {
        ctx.out.error(OVERFLOW);
        return;
    };
    let mut buf = itoa::Buffer::new();
    let text = buf.format(new).as_bytes();
    set_keeping_ttl(ctx, key, &args[2], text);
    ctx.out.int(new);
}

pub fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    // The increment is validated before the key's type, as in Valkey.
    if let Err(e) = crate::util::check_hincrbyfloat_increment(&args[3]) {
        ctx.out.error(e.hincrbyfloat_msg());
        return;
    }
    let key = &args[1];
    if hash_len_for_write(ctx, key).is_err() {
        return;
    }
    let current = field_value(ctx, key, &args[2]);
    match crate::util::hincr_by_float(current, &args[3]) {
        Ok(result) => {
            set_keeping_ttl(ctx, key, &args[2], &result);
            ctx.out.bulk(&result);
        }
        Err(e) => ctx.out.error(e.hincrbyfloat_msg()),
    }
}

/// Sets `field` to `value` keeping the time to live the field has (HINCRBY and
/// HINCRBYFLOAT, as Valkey 9): the record names the absolute time, never "keep".
fn set_keeping_ttl(ctx: &mut Ctx<'_>, key: &[u8], field: &[u8], value: &[u8]) {
    let pairs: &[&[u8]] = &[field, value];
    match field_ttl(ctx, key, field) {
        Some(Some(at)) => ctx.apply(Mutation::HSetEx { key, at, pairs }),
        _ => ctx.apply(Mutation::HSet { key, pairs }),
    };
}

/// The value of `field` in the hash at `key`, without side effects (None when either is
/// missing, or the field expired).
fn field_value<'c>(ctx: &'c Ctx<'_>, key: &[u8], field: &[u8]) -> Option<&'c [u8]> {
    match ctx.shard.peek(key, ctx.now).map(|e| e.value()) {
        Some(ValueRef::Hash(h)) => h.get(field, ctx.now),
        _ => None,
    }
}

/// The time to live of `field` in the hash at `key`, as [`HashObj::field_ttl`].
fn field_ttl(ctx: &Ctx<'_>, key: &[u8], field: &[u8]) -> Option<Option<u64>> {
    match ctx.shard.peek(key, ctx.now).map(|e| e.value()) {
        Some(ValueRef::Hash(h)) => h.field_ttl(field, ctx.now),
        _ => None,
    }
}

/// The `[count [WITHVALUES|WITHSCORES]]` of HRANDFIELD and ZRANDMEMBER (`with` names the
/// flag), checked in Valkey's order: Ok(None) without a count, Ok(Some((count, flag)));
/// Err after replying the error.
pub(super) fn rand_count(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    with: &str,
) -> Result<Option<(i64, bool)>, ()> {
    if args.len() < 3 {
        return Ok(None);
    }
    let Some(c) = super::arg_i64(&args[2]) else {
        ctx.out.error(NOT_INTEGER);
        return Err(());
    };
    if c == i64::MIN {
        ctx.out.error(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        );
        return Err(());
    }
    if args.len() > 4 || (args.len() == 4 && !super::is(&args[3], with)) {
        ctx.out.error(super::SYNTAX_ERROR);
        return Err(());
    }
    let flag = args.len() == 4;
    if flag && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&c) {
        ctx.out.error("ERR value is out of range");
        return Err(());
    }
    Ok(Some((c, flag)))
}

/// HRANDFIELD key [count [WITHVALUES]], with Valkey's argument checks in Valkey's order.
pub fn hrandfield(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(parsed) = rand_count(ctx, args, "WITHVALUES") else {
        return;
    };
    let count = parsed.map(|(c, _)| c);
    let with_values = parsed.is_some_and(|(_, w)| w);
    // Split the borrows: the hash is read in place while the reply is written.
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(h) = hash_for_read(shard, *now, out, &args[1]) else {
        return;
    };
    // A hash whose fields all expired (not deleted yet) answers as a missing key.
    let h = h.filter(|h| h.live_len(*now) > 0);
    let Some(count) = count else {
        match h.and_then(|h| h.random(*now)) {
            Some((f, _)) => out.bulk(f),
            None => out.nil(),
        }
        return;
    };
    let Some(h) = h.filter(|_| count != 0) else {
        out.array(0);
        return;
    };
    // RESP2 flattens field/value pairs; RESP3 nests each pair in a two-element array.
    let nested = with_values && out.resp3;
    let header = |out: &mut Out, n: usize| {
        out.array(if with_values && !nested { n * 2 } else { n });
    };
    let emit = |out: &mut Out, (f, v): (&[u8], &[u8])| {
        if nested {
            out.array(2);
        }
        out.bulk(f);
        if with_values {
            out.bulk(v);
        }
    };
    if count < 0 {
        // Negative: that many independent picks, repeats allowed.
        let n = count.unsigned_abs() as usize;
        header(out, n);
        for _ in 0..n {
            emit(out, h.random(*now).expect("the hash has a live field"));
        }
    } else if count as usize >= h.live_len(*now) {
        header(out, h.live_len(*now));
        for pair in h.iter_live(*now) {
            emit(out, pair);
        }
    } else {
        // Distinct picks: a partial Fisher-Yates shuffle of the pairs.
        let n = count as usize;
        let mut all: Vec<(&[u8], &[u8])> = h.iter_live(*now).collect();
        header(out, n);
        for i in 0..n {
            let j = i + fastrand::usize(..all.len() - i);
            all.swap(i, j);
            emit(out, all[i]);
        }
    }
}

/// HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]. As in Valkey, the cursor is
/// checked first, then the key, and only then the options (so a missing key answers an empty
/// page whatever options follow).
pub fn hscan(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(cursor) = parse_cursor(&args[2]) else {
        ctx.out.error(INVALID_CURSOR);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let h = match shard.get_read(&args[1], *now).map(|e| e.value()) {
        None => {
            reply_scan_head(out, 0);
            out.array(0);
            return;
        }
        Some(ValueRef::Hash(h)) => h,
        Some(_) => {
            out.error(WRONGTYPE);
            return;
        }
    };
    let opts = match parse_scan_options(&args[3..], ScanOf::Hash) {
        Ok(o) => o,
        Err(e) => {
            out.error(&e);
            return;
        }
    };
    // Encode the page into a scratch buffer: the array header needs the count first.
    let mut page = Out::new(out.resp3);
    let mut found = 0;
    let next = h.scan(cursor, opts.count, *now, |f, v| {
        if opts
            .pattern
            .as_ref()
            .is_none_or(|p| crate::util::glob_match(p, f, false))
        {
            found += 1;
            page.bulk(f);
            if !opts.no_values {
                page.bulk(v);
            }
        }
    });
    reply_scan_head(out, next);
    out.array(if opts.no_values { found } else { found * 2 });
    out.raw(&page.buf);
}
