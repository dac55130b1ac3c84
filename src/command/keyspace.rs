//! Keys as a whole: DEL/UNLINK/EXISTS/TOUCH/TYPE, RENAME/RENAMENX/COPY within a core,
//! the per-core parts of KEYS/SCAN/RANDOMKEY/DBSIZE/FLUSHALL, and OBJECT.

use bytes::Bytes;

use super::{Ctx, NO_SUCH_KEY, SYNTAX_ERROR, is};
use crate::cluster::SLOT_COUNT;
use crate::protocol::Out;
use crate::shard::{AccessMode, Entry, Kind, Mutation};

pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let mut n = 0;
    for key in &args[1..] {
        // Lazy expiry first, so an expired key does not count as deleted.
        if ctx.write(key).is_some() && ctx.apply(Mutation::Del { key }) {
            n += 1;
        }
    }
    ctx.out.int(n);
}

/// UNLINK: DEL whose big values are freed in the background, whatever
/// `lazyfree-lazy-user-del` says (see `shard::lazyfree`).
pub fn unlink(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ctx.shard.set_free_mode(Some(true));
    del(ctx, args);
    ctx.shard.set_free_mode(None);
}

pub fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    // A key named twice counts twice, as in Valkey.
    let n = args[1..]
        .iter()
        .filter(|k| read_notouch(ctx, k).is_some())
        .count();
    ctx.out.int(n as i64);
}

pub fn touch(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let n = args[1..].iter().filter(|k| ctx.read(k).is_some()).count();
    ctx.out.int(n as i64);
}

pub fn type_(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let name = match read_notouch(ctx, &args[1]) {
        Some(e) => e.kind().name(),
        None => "none",
    };
    ctx.out.simple(name);
}

/// Valkey's lookupKeyReadWithFlags(LOOKUP_NOTOUCH), used by EXISTS, TYPE, TTL and OBJECT: the
/// live entry without updating its access time, counting a keyspace hit or miss, and deleting
/// the key when it has expired.
pub fn read_notouch<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Option<&'c Entry> {
    let stats = &ctx.shard.stats;
    if ctx.shard.peek(key, ctx.now).is_none() {
        stats.keyspace_misses.inc();
        // Lazy expiry: deletes the key if it is present but expired (no statistics here).
        ctx.shard.get(key, ctx.now);
        return None;
    }
    stats.keyspace_hits.inc();
    ctx.shard.peek(key, ctx.now)
}

/// RENAME/RENAMENX with both keys on this core.
pub fn rename(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    rename_generic(ctx, args, false);
}

pub fn renamenx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    rename_generic(ctx, args, true);
}

fn rename_generic(ctx: &mut Ctx<'_>, args: &[Bytes], nx: bool) {
    let (from, to) = (&args[1], &args[2]);
    if ctx.write(from).is_none() {
        ctx.out.error(NO_SUCH_KEY);
        return;
    }
    if from == to {
        if nx {
            ctx.out.int(0)
        } else {
            ctx.out.ok()
        }
        return;
    }
    if nx && ctx.write(to).is_some() {
        ctx.out.int(0);
        return;
    }
    ctx.apply(Mutation::Rename { from, to });
    if nx { ctx.out.int(1) } else { ctx.out.ok() }
}

/// Parsed COPY options: Ok(replace) or the error text. Only database 0 exists.
/// COPY's options: (REPLACE given, the destination database: `db` unless DB names one).
pub fn copy_options(
    node: &dyn super::NodeView,
    db: usize,
    args: &[Bytes],
) -> Result<(bool, usize), &'static str> {
    let mut replace = false;
    let mut to_db = db;
    let mut i = 3;
    while i < args.len() {
        if is(&args[i], "REPLACE") {
            replace = true;
            i += 1;
        } else if is(&args[i], "DB") && i + 1 < args.len() {
            // Valkey's getIntFromObjectOrReply, then selectDb.
            match crate::util::parse_i64(&args[i + 1]) {
                None => return Err(super::NOT_INTEGER),
                Some(db) if i32::try_from(db).is_err() => {
                    return Err(
                        "ERR value is out of range, value must between -2147483648 and 2147483647",
                    );
                }
                Some(0) => to_db = 0,
                Some(n) if n > 0 && n < node.databases() as i64 => to_db = n as usize,
                Some(_) => return Err("ERR DB index is out of range"),
            }
            i += 2;
        } else {
            return Err(SYNTAX_ERROR);
        }
    }
    Ok((replace, to_db))
}

/// COPY with both keys on this core.
pub fn copy(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let db = ctx.shard.db();
    let (replace, to_db) = match copy_options(ctx.node, db, args) {
        Ok(r) => r,
        Err(e) => {
            ctx.out.error(e);
            return;
        }
    };
    let (from, to) = (&args[1], &args[2]);
    if from == to && db == to_db {
        ctx.out.error(SAME_OBJECT);
        return;
    }
    let Some((value, expire_at)) = ctx.write(from).map(|e| (e.to_value(), e.expire_at())) else {
        ctx.out.int(0);
        return;
    };
    ctx.shard.select(to_db);
    if !replace && ctx.write(to).is_some() {
        ctx.shard.select(db);
        ctx.out.int(0);
        return;
    }
    ctx.apply(Mutation::Restore {
        key: to,
        value,
        expire_at,
    });
    ctx.shard.select(db);
    ctx.out.int(1);
}

/// Valkey's shared.sameobjecterr.
pub const SAME_OBJECT: &str = "ERR source and destination objects are the same";

/// MOVE key db: the key goes to another database with its value and expiry; 0 when it does
/// not exist here or exists there already.
pub fn move_(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if ctx.node.clustered() && ctx.node.databases() == 1 {
        ctx.out.error("ERR MOVE is not allowed in cluster mode");
        return;
    }
    let db = ctx.shard.db();
    let to_db = match crate::util::parse_i64(&args[2]).filter(|n| i32::try_from(*n).is_ok()) {
        None => return ctx.out.error(super::NOT_INTEGER),
        Some(n) if n < 0 || n >= ctx.node.databases() as i64 => {
            return ctx.out.error("ERR DB index is out of range");
        }
        Some(n) => n as usize,
    };
    if to_db == db {
        ctx.out.error(SAME_OBJECT);
        return;
    }
    let key = &args[1];
    let Some((value, expire_at)) = ctx.write(key).map(|e| (e.to_value(), e.expire_at())) else {
        ctx.out.int(0);
        return;
    };
    ctx.shard.select(to_db);
    let moved = ctx.write(key).is_none();
    if moved {
        ctx.apply(Mutation::Restore {
            key,
            value,
            expire_at,
        });
    }
    ctx.shard.select(db);
    if moved {
        ctx.apply(Mutation::Del { key });
    }
    ctx.out.int(moved as i64);
}

/// Per-core KEYS: the matching keys of this core, as an array.
pub fn keys_local(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let pattern = &args[1];
    let all = &pattern[..] == b"*";
    let mut found: Vec<Vec<u8>> = Vec::new();
    let served = served(ctx);
    for slot in ctx.shard.owned_slots().filter(|&s| served(s)) {
        ctx.shard.for_each_in_slot(slot, ctx.now, |e| {
            if all || crate::util::glob_match(pattern, e.key(), false) {
                found.push(e.key().to_vec());
            }
        });
    }
    ctx.out.array(found.len());
    for k in &found {
        ctx.out.bulk(k);
    }
}

/// Which slots are this node's keyspace. Standalone: all of them. In a cluster, the slots of
/// the groups it leads, which it serves as primary: KEYS, SCAN, DBSIZE and RANDOMKEY see only
/// those, as a Valkey cluster primary's dataset holds only its own slots. The copies it keeps
/// as a replica of other groups are left out, so that a cluster client scanning every
/// primary, or `redis-cli --cluster info` adding up their DBSIZEs, sees each key once.
fn served<'a>(ctx: &Ctx<'a>) -> impl Fn(usize) -> bool + use<'a> {
    let node = ctx.node;
    move |slot| node.serves(slot)
}

/// Per-core DBSIZE.
pub fn dbsize_local(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    let n = if ctx.node.clustered() {
        let served = served(ctx);
        ctx.shard
            .owned_slots()
            .filter(|&s| served(s))
            .map(|s| ctx.shard.count_in_slot(s))
            .sum()
    } else {
        ctx.shard.len()
    };
    ctx.out.int(n as i64);
}

/// How a FLUSHALL/FLUSHDB frees: ASYNC in the background, SYNC at once, neither as
/// `lazyfree-lazy-user-flush` says (None). The command was checked (`flush_args_ok`).
fn flush_mode(arg: Option<&Bytes>) -> Option<bool> {
    arg.map(|a| is(a, "ASYNC"))
}

/// Per-core FLUSHALL/FLUSHDB [SYNC|ASYNC].
pub fn flush_local(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ctx.shard.set_free_mode(flush_mode(args.get(1)));
    if is(&args[0], "flushall") {
        // Every database; FLUSHDB only the selected one.
        ctx.shard.for_each_db(|shard| {
            shard.apply(Mutation::FlushAll);
        });
    } else {
        ctx.apply(Mutation::FlushAll);
    }
    ctx.shard.set_free_mode(None);
    ctx.out.ok();
}

/// FLUSHALL of one slot group in a cluster (through its log): `args` are the command's name,
/// the group's slot range, start and end, and the command's SYNC or ASYNC if it had one, as
/// the dispatcher built them. (The mode frees the leader's copy; replicas applying the
/// record follow their own `lazyfree-lazy-user-flush`.)
pub fn flush_slots(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let bound = |i: usize| {
        args.get(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<u16>().ok())
    };
    match (bound(1), bound(2)) {
        (Some(start), Some(end)) if start <= end => {
            ctx.shard.set_free_mode(flush_mode(args.get(3)));
            if is(&args[0], "flushall") {
                // Every database; FLUSHDB only the selected one.
                ctx.shard.for_each_db(|shard| {
                    shard.apply(Mutation::FlushSlots { slots: start..end });
                });
            } else {
                ctx.apply(Mutation::FlushSlots { slots: start..end });
            }
            ctx.shard.set_free_mode(None);
            ctx.out.ok();
        }
        _ => ctx.out.error("ERR internal error: bad slot range"),
    }
}

/// Tries of RANDOMKEY on a cluster node for a key of a slot it serves (a node leading one
/// group in three finds one in the first try or two; nil after this many misses).
const RANDOMKEY_TRIES: usize = 64;

/// Per-core RANDOMKEY: a random key of this core (of a slot it serves), or nil.
pub fn randomkey_local(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    let served = served(ctx);
    let tries = if ctx.node.clustered() {
        RANDOMKEY_TRIES
    } else {
        1
    };
    let mut found = None;
    for _ in 0..tries {
        match ctx.shard.random_entry(ctx.now).map(|e| e.key().to_vec()) {
            Some(k) if served(crate::cluster::key_slot(&k) as usize) => {
                found = Some(k);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    match found {
        Some(k) => ctx.out.bulk(&k),
        None => ctx.out.nil(),
    }
}

pub const INVALID_CURSOR: &str = "ERR invalid cursor";

/// Parses a SCAN cursor as Valkey's string2ull: a canonical non-negative integer, or anything
/// C's strtoull takes whole (leading blanks, a sign: "+5", " 7" and "-0" are cursors; "-1" is
/// not). Valkey wraps a negative strtoull result, and so does this.
pub fn parse_cursor(arg: &[u8]) -> Option<u64> {
    if let Some(v) = crate::util::parse_i64(arg) {
        return u64::try_from(v).ok();
    }
    let start = arg
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))?;
    let rest = &arg[start..];
    let (negative, digits) = match rest.first()? {
        b'-' => (true, &rest[1..]),
        b'+' => (false, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { v.wrapping_neg() } else { v })
}

/// What a SCAN-family command iterates (options differ: TYPE for keys, NOVALUES for hashes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ScanOf {
    Keys,
    Hash,
    Set,
    ZSet,
}

/// Parsed SCAN/HSCAN options.
pub struct ScanOptions {
    pub pattern: Option<Vec<u8>>,
    pub count: usize,
    /// SCAN ... TYPE, lowercased and known to be a Valkey type name.
    pub kind: Option<Vec<u8>>,
    /// HSCAN NOVALUES or ZSCAN NOSCORES.
    pub no_values: bool,
}

/// The type names SCAN ... TYPE accepts (Valkey's, whether or not tallykv stores them).
const TYPE_NAMES: &[&str] = &["string", "list", "set", "zset", "hash", "stream"];

/// Parses `[MATCH p] [COUNT n] [TYPE t] [NOVALUES]` (the arguments after the cursor), with
/// Valkey's checks and error texts in Valkey's order.
pub fn parse_scan_options(rest: &[Bytes], of: ScanOf) -> Result<ScanOptions, String> {
    let mut o = ScanOptions {
        pattern: None,
        count: 10,
        kind: None,
        no_values: false,
    };
    let mut i = 0;
    while i < rest.len() {
        let more = i + 1 < rest.len();
        if is(&rest[i], "COUNT") && more {
            let n = crate::util::parse_i64(&rest[i + 1]).ok_or(super::NOT_INTEGER)?;
            if n < 1 {
                return Err(SYNTAX_ERROR.into());
            }
            o.count = usize::try_from(n).unwrap_or(usize::MAX);
            i += 2;
        } else if is(&rest[i], "MATCH") && more {
            // A lone "*" matches everything: skip the matcher.
            o.pattern = (&rest[i + 1][..] != b"*").then(|| rest[i + 1].to_vec());
            i += 2;
        } else if of == ScanOf::Keys && is(&rest[i], "TYPE") && more {
            let name = rest[i + 1].to_ascii_lowercase();
            if !TYPE_NAMES.iter().any(|t| t.as_bytes() == name.as_slice()) {
                return Err(format!(
                    "ERR unknown type name '{}'",
                    super::lossy(&rest[i + 1], 128)
                ));
            }
            o.kind = Some(name);
            i += 2;
        } else if is(&rest[i], "NOVALUES") {
            if of != ScanOf::Hash {
                return Err("ERR NOVALUES option can only be used in HSCAN".into());
            }
            o.no_values = true;
            i += 1;
        } else if is(&rest[i], "NOSCORES") {
            if of != ScanOf::ZSet {
                return Err("ERR NOSCORES option can only be used in ZSCAN".into());
            }
            o.no_values = true;
            i += 1;
        } else {
            return Err(SYNTAX_ERROR.into());
        }
    }
    Ok(o)
}

/// The start of a SCAN-family reply: a two-element array whose first element is the next
/// cursor (as a bulk string); the caller adds the page as the second.
pub fn reply_scan_head(out: &mut Out, cursor: u64) {
    out.array(2);
    let mut b = itoa::Buffer::new();
    out.bulk(b.format(cursor).as_bytes());
}

const SLOT_BITS: u32 = 14;

/// The slot a keyspace SCAN cursor points into (the dispatcher routes SCAN to its owner).
pub fn scan_cursor_slot(cursor: u64) -> usize {
    (cursor & ((1 << SLOT_BITS) - 1)) as usize
}

/// SCAN on the core owning the cursor's slot: walks this core's slots in order from the
/// cursor. The cursor is (position within the slot's table << 14) | slot, so it stays valid
/// across inserts, deletes and table growth (see shard::scan).
pub fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(cursor) = parse_cursor(&args[1]) else {
        ctx.out.error(INVALID_CURSOR);
        return;
    };
    let opts = match parse_scan_options(&args[2..], ScanOf::Keys) {
        Ok(o) => o,
        Err(e) => {
            ctx.out.error(&e);
            return;
        }
    };
    let owned = ctx.shard.owned_slots();
    let mut slot = scan_cursor_slot(cursor);
    let mut in_slot = cursor >> SLOT_BITS;
    if !owned.contains(&slot) {
        // A cursor this core does not own (a stale or made-up cursor): start at our range.
        slot = owned.start;
        in_slot = 0;
    }
    let mut keys: Vec<(Vec<u8>, Kind, bool)> = Vec::new();
    let now = ctx.now;
    let served = served(ctx);
    let next = loop {
        let want = opts.count.saturating_sub(keys.len()).max(1);
        let n = if served(slot) {
            ctx.shard.scan_slot(slot, in_slot, want, |e| {
                keys.push((e.key().to_vec(), e.kind(), e.is_expired(now)));
            })
        } else {
            0
        };
        if n != 0 {
            break (n << SLOT_BITS) | slot as u64;
        }
        slot += 1;
        in_slot = 0;
        if slot >= owned.end {
            break if slot >= SLOT_COUNT { 0 } else { slot as u64 };
        }
        if keys.len() >= opts.count {
            break slot as u64;
        }
    };
    // Filter after collecting, as Valkey does; expired keys found on the way are deleted.
    let mut reply: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
    for (key, kind, expired) in keys {
        if expired {
            ctx.shard.get(&key, now);
            continue;
        }
        if opts
            .pattern
            .as_ref()
            .is_some_and(|p| !crate::util::glob_match(p, &key, false))
        {
            continue;
        }
        if opts
            .kind
            .as_ref()
            .is_some_and(|t| t.as_slice() != kind.name().as_bytes())
        {
            continue;
        }
        reply.push(key);
    }
    reply_scan_head(ctx.out, next);
    ctx.out.array(reply.len());
    for k in &reply {
        ctx.out.bulk(k);
    }
}

const LFU_NOT_SELECTED: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
const LFU_SELECTED: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

/// What OBJECT reports about a key, copied out of the shard.
struct ObjectInfo {
    encoding: &'static str,
    access: u32,
}

fn object_info(ctx: &mut Ctx<'_>, key: &[u8]) -> Option<ObjectInfo> {
    let e = read_notouch(ctx, key)?;
    // Valkey embeds strings of up to 44 bytes in the object header (embstr).
    let encoding = e.value().encoding();
    Some(ObjectInfo {
        encoding,
        access: e.access,
    })
}

fn object_generic(ctx: &mut Ctx<'_>, args: &[Bytes], what: fn(&mut Ctx<'_>, ObjectInfo)) {
    match object_info(ctx, &args[2]) {
        Some(info) => what(ctx, info),
        None => ctx.out.nil(),
    }
}

pub fn object_encoding(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    object_generic(ctx, args, |ctx, info| {
        ctx.out.bulk(info.encoding.as_bytes())
    });
}

pub fn object_freq(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    object_generic(ctx, args, |ctx, info| match ctx.shard.access_mode {
        AccessMode::Lfu { decay_minutes, .. } => {
            ctx.out
                .int(crate::shard::lfu_decayed(info.access, ctx.now, decay_minutes) as i64)
        }
        AccessMode::Lru => ctx.out.error(LFU_NOT_SELECTED),
    });
}

pub fn object_idletime(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    object_generic(ctx, args, |ctx, info| match ctx.shard.access_mode {
        AccessMode::Lru => ctx
            .out
            .int((crate::shard::idle_ms(info.access, ctx.now) / 1000) as i64),
        AccessMode::Lfu { .. } => ctx.out.error(LFU_SELECTED),
    });
}

pub fn object_refcount(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    // Every value has exactly one owner here (no shared integer objects).
    object_generic(ctx, args, |ctx, _| ctx.out.int(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_as_valkeys_string2ull() {
        for (text, want) in [
            ("0", Some(0)),
            ("123", Some(123)),
            ("18446744073709551615", Some(u64::MAX)),
            ("+5", Some(5)),
            (" 7", Some(7)),
            ("007", Some(7)),
            ("-0", Some(0)),
            ("-01", Some(u64::MAX)),
            ("-1", None),
            ("18446744073709551616", None),
            ("", None),
            (" ", None),
            ("+", None),
            ("5 ", None),
            ("1.5", None),
            ("x", None),
        ] {
            assert_eq!(parse_cursor(text.as_bytes()), want, "{text:?}");
        }
    }
}
