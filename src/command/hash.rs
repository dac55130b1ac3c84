//! Hashes: HSET/HGET and friends, HINCRBY(FLOAT), HRANDFIELD, HSCAN.

use bytes::Bytes;

use super::keyspace::{parse_scan_options, reply_cursor};
use super::{Ctx, NOT_INTEGER, OVERFLOW, WRONGTYPE};
use crate::shard::{HashObj, Mutation, Value};

/// The hash at `key` for reading: Ok(None) when missing, Err after replying WRONGTYPE.
fn read_hash<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c HashObj>, ()> {
    match ctx.shard.get_read(key, ctx.now).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Hash(h)) => Ok(Some(h)),
        Some(_) => {
            ctx.out.error(WRONGTYPE);
            Err(())
        }
    }
}

/// For writes: checks the key is a hash or missing (Ok(false) = missing).
fn check_hash_for_write(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<bool, ()> {
    match ctx.write(key).map(|e| matches!(e.value, Value::Hash(_))) {
        None => Ok(false),
        Some(true) => Ok(true),
        Some(false) => {
            ctx.out.error(WRONGTYPE);
            Err(())
        }
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
    if args.len() % 2 != 0 {
        super::arity_error(ctx.out, if ok_reply { "hmset" } else { "hset" });
        return;
    }
    let key = &args[1];
    let Ok(exists) = check_hash_for_write(ctx, key) else {
        return;
    };
    // Count new fields before applying (duplicates within one call count once).
    let mut new_fields = 0;
    {
        let existing = if exists {
            match ctx.shard.peek(key, ctx.now).map(|e| &e.value) {
                Some(Value::Hash(h)) => Some(&**h),
                _ => None,
            }
        } else {
            None
        };
        let mut seen: Vec<&[u8]> = Vec::new();
        for pair in args[2..].chunks_exact(2) {
            let f = &pair[0][..];
            if existing.is_some_and(|h| h.get(f).is_some()) || seen.contains(&f) {
                continue;
            }
            if args.len() > 34 {
                // Large calls: avoid the quadratic `seen` scan; count via a set.
                seen.clear();
                new_fields = count_new_fields(existing, &args[2..]);
                break;
            }
            seen.push(f);
            new_fields += 1;
        }
    }
    let pairs = as_slices(&args[2..]);
    ctx.apply(Mutation::HSet { key, pairs: &pairs });
    if ok_reply {
        ctx.out.ok()
    } else {
        ctx.out.int(new_fields)
    }
}

fn count_new_fields(existing: Option<&HashObj>, pairs: &[Bytes]) -> i64 {
    let mut seen = std::collections::HashSet::new();
    pairs
        .chunks_exact(2)
        .filter(|p| existing.is_none_or(|h| h.get(&p[0]).is_none()) && seen.insert(&p[0][..]))
        .count() as i64
}

pub fn hsetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Ok(exists) = check_hash_for_write(ctx, key) else {
        return;
    };
    if exists {
        let present = matches!(ctx.shard.peek(key, ctx.now).map(|e| &e.value), Some(Value::Hash(h)) if h.get(&args[2]).is_some());
        if present {
            ctx.out.int(0);
            return;
        }
    }
    ctx.apply(Mutation::HSet {
        key,
        pairs: &[&args[2], &args[3]],
    });
    ctx.out.int(1);
}

pub fn hget(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let field = &args[2];
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    match h.and_then(|h| h.get(field)) {
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
    let h = match shard.get_read(&args[1], *now).map(|e| &e.value) {
        None => None,
        Some(Value::Hash(h)) => Some(&**h),
        Some(_) => {
            out.error(WRONGTYPE);
            return;
        }
    };
    out.array(args.len() - 2);
    for f in &args[2..] {
        match h.and_then(|h| h.get(f)) {
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
    let h = match shard.get_read(&args[1], *now).map(|e| &e.value) {
        None => None,
        Some(Value::Hash(h)) => Some(&**h),
        Some(_) => {
            out.error(WRONGTYPE);
            return;
        }
    };
    let n = h.map_or(0, |h| h.len());
    if fields && values {
        out.map(n);
    } else {
        out.array(n);
    }
    if let Some(h) = h {
        for (f, v) in h.iter() {
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
    let Ok(exists) = check_hash_for_write(ctx, key) else {
        return;
    };
    if !exists {
        ctx.out.int(0);
        return;
    }
    let removed = match ctx.shard.peek(key, ctx.now).map(|e| &e.value) {
        Some(Value::Hash(h)) => {
            let mut seen: Vec<&[u8]> = Vec::new();
            args[2..]
                .iter()
                .filter(|f| {
                    let fresh = h.get(f).is_some() && !seen.contains(&&f[..]);
                    if fresh {
                        seen.push(f);
                    }
                    fresh
                })
                .count()
        }
        _ => 0,
    };
    if removed > 0 {
        let fields = as_slices(&args[2..]);
        ctx.apply(Mutation::HDel {
            key,
            fields: &fields,
        });
    }
    ctx.out.int(removed as i64);
}

pub fn hlen(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let n = h.map_or(0, |h| h.len());
    ctx.out.int(n as i64);
}

pub fn hexists(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let present = h.is_some_and(|h| h.get(&args[2]).is_some());
    ctx.out.int(present as i64);
}

pub fn hstrlen(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let n = h.and_then(|h| h.get(&args[2])).map_or(0, |v| v.len());
    ctx.out.int(n as i64);
}

pub fn hincrby(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(by) = super::arg_i64(&args[3]) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    let key = &args[1];
    let Ok(exists) = check_hash_for_write(ctx, key) else {
        return;
    };
    let current = if exists {
        field_value(ctx, key, &args[2])
    } else {
        None
    };
    let cur = match current {
        None => 0,
        Some(v) => match crate::util::parse_i64(&v) {
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
    ctx.apply(Mutation::HSet {
        key,
        pairs: &[&args[2], text],
    });
    ctx.out.int(new);
}

pub fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    // The increment is validated before the key's type, as in Valkey.
    if let Err(e) = crate::util::check_hincrbyfloat_increment(&args[3]) {
        ctx.out.error(e.hincrbyfloat_msg());
        return;
    }
    let key = &args[1];
    let Ok(exists) = check_hash_for_write(ctx, key) else {
        return;
    };
    let current = if exists {
        field_value(ctx, key, &args[2])
    } else {
        None
    };
    match crate::util::hincr_by_float(current.as_deref(), &args[3]) {
        Ok(result) => {
            ctx.apply(Mutation::HSet {
                key,
                pairs: &[&args[2], &result],
            });
            ctx.out.bulk(&result);
        }
        Err(e) => ctx.out.error(e.hincrbyfloat_msg()),
    }
}

fn field_value(ctx: &Ctx<'_>, key: &[u8], field: &[u8]) -> Option<Vec<u8>> {
    match ctx.shard.peek(key, ctx.now).map(|e| &e.value) {
        Some(Value::Hash(h)) => h.get(field).map(|v| v.to_vec()),
        _ => None,
    }
}

pub fn hrandfield(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (count, with_values) = match args.len() {
        2 => (None, false),
        3 | 4 => {
            let Some(c) = super::arg_i64(&args[2]) else {
                ctx.out.error(NOT_INTEGER);
                return;
            };
            if args.len() == 4 && !super::is(&args[3], "WITHVALUES") {
                ctx.out.error(super::SYNTAX_ERROR);
                return;
            }
            (Some(c), args.len() == 4)
        }
        _ => {
            ctx.out.error(super::SYNTAX_ERROR);
            return;
        }
    };
    if let Some(c) = count
        && with_values
        && (c < -(i64::MAX / 2) || c > i64::MAX / 2)
    {
        ctx.out.error("ERR value is out of range");
        return;
    }
    let resp3 = ctx.out.resp3;
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let Some(h) = h else {
        match count {
            None => ctx.out.nil(),
            Some(_) => ctx.out.array(0),
        }
        return;
    };
    let h = h.clone();
    let out = &mut *ctx.out;
    let emit = |out: &mut crate::protocol::Out, f: &[u8], v: &[u8]| {
        if with_values {
            if resp3 {
                out.array(2);
            }
            out.bulk(f);
            out.bulk(v);
        } else {
            out.bulk(f);
        }
    };
    let header = |out: &mut crate::protocol::Out, n: usize| {
        out.array(if with_values && !resp3 { n * 2 } else { n });
    };
    match count {
        None => {
            let (f, _) = h.random().expect("non-empty hash");
            out.bulk(f);
        }
        Some(0) => out.array(0),
        Some(c) if c < 0 => {
            let n = c.unsigned_abs() as usize;
            header(out, n);
            for _ in 0..n {
                let (f, v) = h.random().expect("non-empty hash");
                emit(out, f, v);
            }
        }
        Some(c) => {
            let n = (c as usize).min(h.len());
            header(out, n);
            if n == h.len() {
                for (f, v) in h.iter() {
                    emit(out, f, v);
                }
            } else {
                // Distinct picks: a partial Fisher-Yates over the positions.
                let mut idx: Vec<usize> = (0..h.len()).collect();
                let all: Vec<(&[u8], &[u8])> = h.iter().collect();
                for i in 0..n {
                    let j = i + fastrand::usize(..idx.len() - i);
                    idx.swap(i, j);
                    let (f, v) = all[idx[i]];
                    emit(out, f, v);
                }
            }
        }
    }
}

pub fn hscan(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let opts = match parse_scan_options(&args[2], &args[3..], false) {
        Ok(o) => o,
        Err(e) => {
            ctx.out.error(e);
            return;
        }
    };
    let Ok(h) = read_hash(ctx, &args[1]) else {
        return;
    };
    let Some(h) = h else {
        reply_cursor(ctx.out, 0);
        ctx.out.array(0);
        return;
    };
    let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let next = h.scan(opts.cursor, opts.count, |f, v| {
        if opts
            .pattern
            .as_ref()
            .is_none_or(|p| crate::util::glob_match(p, f, false))
        {
            items.push((f.to_vec(), v.to_vec()));
        }
    });
    reply_cursor(ctx.out, next);
    ctx.out.array(if opts.no_values {
        items.len()
    } else {
        items.len() * 2
    });
    for (f, v) in &items {
        ctx.out.bulk(f);
        if !opts.no_values {
            ctx.out.bulk(v);
        }
    }
}
