//! Keys as a whole: DEL/UNLINK/EXISTS/TOUCH/TYPE, RENAME/RENAMENX/COPY within a core,
//! the per-core parts of KEYS/SCAN/RANDOMKEY/DBSIZE/FLUSHALL, and OBJECT.

use bytes::Bytes;

use super::{Ctx, NO_SUCH_KEY, SYNTAX_ERROR, is};
use crate::cluster::SLOT_COUNT;
use crate::protocol::Out;
use crate::shard::{AccessMode, Kind, Mutation, Value};

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

pub fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let n = args[1..].iter().filter(|k| ctx.read(k).is_some()).count();
    ctx.out.int(n as i64);
}

pub fn touch(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let n = args[1..].iter().filter(|k| ctx.write(k).is_some()).count();
    ctx.out.int(n as i64);
}

pub fn type_(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let name = match ctx.shard.peek(&args[1], ctx.now) {
        Some(e) => e.value.kind().name(),
        None => "none",
    };
    ctx.out.simple(name);
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

/// Parsed COPY options: Ok(replace) or the error text.
pub fn copy_options(args: &[Bytes]) -> Result<bool, &'static str> {
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if is(&args[i], "REPLACE") {
            replace = true;
            i += 1;
        } else if is(&args[i], "DB") && i + 1 < args.len() {
            match crate::util::parse_i64(&args[i + 1]) {
                Some(0) => {}
                Some(_) => return Err("ERR DB index is out of range"),
                None => return Err(super::NOT_INTEGER),
            }
            i += 2;
        } else {
            return Err(SYNTAX_ERROR);
        }
    }
    Ok(replace)
}

/// COPY with both keys on this core.
pub fn copy(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let replace = match copy_options(args) {
        Ok(r) => r,
        Err(e) => {
            ctx.out.error(e);
            return;
        }
    };
    let (from, to) = (&args[1], &args[2]);
    if from == to {
        ctx.out
            .error("ERR source and destination objects are the same");
        return;
    }
    let Some((value, expire_at)) = ctx.write(from).map(|e| (e.value.clone(), e.expire_at())) else {
        ctx.out.int(0);
        return;
    };
    if !replace && ctx.write(to).is_some() {
        ctx.out.int(0);
        return;
    }
    ctx.apply(Mutation::Restore {
        key: to,
        value,
        expire_at,
    });
    ctx.out.int(1);
}

/// Per-core KEYS: the matching keys of this core, as an array.
pub fn keys_local(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let pattern = &args[1];
    let all = &pattern[..] == b"*";
    let mut found: Vec<Vec<u8>> = Vec::new();
    for slot in ctx.shard.owned_slots() {
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

/// Per-core DBSIZE.
pub fn dbsize_local(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    ctx.out.int(ctx.shard.len() as i64);
}

/// Per-core FLUSHALL/FLUSHDB.
pub fn flush_local(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    ctx.apply(Mutation::FlushAll);
    ctx.out.ok();
}

/// Per-core RANDOMKEY: a random key of this core, or nil.
pub fn randomkey_local(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    match ctx.shard.random_entry(ctx.now).map(|e| e.key().to_vec()) {
        Some(k) => ctx.out.bulk(&k),
        None => ctx.out.nil(),
    }
}

/// Parsed SCAN/HSCAN options.
pub struct ScanOptions {
    pub cursor: u64,
    pub pattern: Option<Vec<u8>>,
    pub count: usize,
    pub kind: Option<Vec<u8>>,
    pub no_values: bool,
}

/// Parses `cursor [MATCH p] [COUNT n] [TYPE t]` (TYPE only when `allow_type`, NOVALUES only
/// for HSCAN), with Valkey's error texts.
pub fn parse_scan_options(
    cursor: &[u8],
    rest: &[Bytes],
    allow_type: bool,
) -> Result<ScanOptions, &'static str> {
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("ERR invalid cursor")?;
    let mut o = ScanOptions {
        cursor,
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
                return Err(SYNTAX_ERROR);
            }
            o.count = n as usize;
            i += 2;
        } else if is(&rest[i], "MATCH") && more {
            // A lone "*" matches everything: skip the matcher.
            o.pattern = (&rest[i + 1][..] != b"*").then(|| rest[i + 1].to_vec());
            i += 2;
        } else if allow_type && is(&rest[i], "TYPE") && more {
            o.kind = Some(rest[i + 1].to_ascii_lowercase());
            i += 2;
        } else if !allow_type && is(&rest[i], "NOVALUES") {
            o.no_values = true;
            i += 1;
        } else {
            return Err(SYNTAX_ERROR);
        }
    }
    Ok(o)
}

pub fn reply_cursor(out: &mut Out, cursor: u64) {
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
    let opts = match parse_scan_options(&args[1], &args[2..], true) {
        Ok(o) => o,
        Err(e) => {
            ctx.out.error(e);
            return;
        }
    };
    let owned = ctx.shard.owned_slots();
    let mut slot = scan_cursor_slot(opts.cursor);
    let mut in_slot = opts.cursor >> SLOT_BITS;
    if !owned.contains(&slot) {
        // A cursor this core does not own (a stale or made-up cursor): start at our range.
        slot = owned.start;
        in_slot = 0;
    }
    let mut keys: Vec<(Vec<u8>, Kind, bool)> = Vec::new();
    let now = ctx.now;
    let next = loop {
        let want = opts.count.saturating_sub(keys.len()).max(1);
        let n = ctx.shard.scan_slot(slot, in_slot, want, |e| {
            keys.push((e.key().to_vec(), e.value.kind(), e.is_expired(now)));
        });
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
    reply_cursor(ctx.out, next);
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

fn object_info(ctx: &Ctx<'_>, key: &[u8]) -> Option<ObjectInfo> {
    let e = ctx.shard.peek(key, ctx.now)?;
    let encoding = match &e.value {
        Value::Int(_) => "int",
        // Valkey embeds strings of up to 44 bytes in the object header.
        Value::Str(s) if s.len() <= 44 => "embstr",
        Value::Str(_) => "raw",
        Value::Hash(h) => h.encoding(),
    };
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
