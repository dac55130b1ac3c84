//! Hash field expiry (Valkey 9.0): HEXPIRE, HPEXPIRE, HEXPIREAT, HPEXPIREAT, HTTL, HPTTL,
//! HEXPIRETIME, HPEXPIRETIME, HPERSIST, HGETEX and HSETEX.
//!
//! Replies, error texts and the order in which arguments are checked follow Valkey 9.0's
//! t_hash.c. Each command first decides what happens to every field it names — in argument
//! order, so a field named twice sees the effect of its first mention — and then writes
//! records with absolute times: [`Mutation::HSetEx`] (fields set with an expiry),
//! [`Mutation::HExpire`] (an expiry given or removed) and [`Mutation::HExpired`] (fields
//! deleted because the time given had already passed, counted in `expired_fields` as Valkey
//! counts them).

use std::collections::HashMap;

use bytes::Bytes;

use super::super::expire::ExpireUnit;
use super::super::string::expire_unit;
use super::super::{Ctx, NOT_INTEGER, SYNTAX_ERROR, arg_i64, is, lossy};
use crate::shard::{HashObj, Mutation, Shard, ValueRef};

const NUMFIELDS: &str =
    "ERR numfields should be greater than 0 and match the provided number of fields";

/// A field's state as a command goes: None gone (or never there), Some(None) live without a
/// time to live, Some(Some(at)) live until `at`.
type FieldState = Option<Option<u64>>;

/// The fields' states as one command changes them, over the hash as it was looked up.
struct Fields<'h, 'a> {
    hash: Option<&'h HashObj>,
    now: u64,
    changed: HashMap<&'a [u8], FieldState>,
}

impl<'h, 'a> Fields<'h, 'a> {
    fn new(hash: Option<&'h HashObj>, now: u64) -> Self {
        Fields {
            hash,
            now,
            changed: HashMap::new(),
        }
    }

    fn state(&self, field: &[u8]) -> FieldState {
        match self.changed.get(field) {
            Some(s) => *s,
            None => self.hash.and_then(|h| h.field_ttl(field, self.now)),
        }
    }

    /// Records the field's new state; true the first time the command changes it (so each
    /// field appears once in the records).
    fn change(&mut self, field: &'a [u8], state: FieldState) -> bool {
        self.changed.insert(field, state).is_none()
    }
}

/// Where the `FIELDS` keyword is: the first argument from `from` on that reads FIELDS and has
/// an argument after it (Valkey's scan, so a trailing FIELDS is no block at all).
fn fields_keyword(args: &[Bytes], from: usize) -> Option<usize> {
    (from..args.len().saturating_sub(1)).find(|&i| is(&args[i], "FIELDS"))
}

/// Valkey's convertExpireArgumentToUnixTime: an integer, not negative, converted to an
/// absolute Unix time in milliseconds without overflowing (`cmd` names the command in the
/// error). Zero is allowed: it expires at once.
fn unix_time(arg: &[u8], unit: ExpireUnit, now: u64, cmd: &str) -> Result<u64, String> {
    let Some(v) = arg_i64(arg) else {
        return Err(NOT_INTEGER.to_string());
    };
    let invalid = || format!("ERR invalid expire time in '{cmd}' command");
    if v < 0 {
        return Err(invalid());
    }
    let mut ms = match unit {
        ExpireUnit::Seconds | ExpireUnit::UnixSeconds => v.checked_mul(1000).ok_or_else(invalid)?,
        ExpireUnit::Millis | ExpireUnit::UnixMillis => v,
    };
    if matches!(unit, ExpireUnit::Seconds | ExpireUnit::Millis) {
        ms = ms.checked_add(now as i64).ok_or_else(invalid)?;
    }
    Ok(ms as u64)
}

/// The hash at `key` (None when missing), looked up for a write; Err after replying
/// WRONGTYPE.
fn lookup<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c HashObj>, ()> {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    super::super::typed(shard.get(key, *now).map(|e| e.value()), out, ValueRef::hash)
}

/// Writes the records of one command: fields deleted as expired, and fields given `at` as
/// their expiry (None: their expiry removed).
fn write_records(
    shard: &mut Shard,
    key: &[u8],
    expired: &[&[u8]],
    at: Option<u64>,
    retimed: &[&[u8]],
) {
    if !expired.is_empty() {
        shard.apply(Mutation::HExpired {
            key,
            fields: expired,
        });
    }
    if !retimed.is_empty() {
        shard.apply(Mutation::HExpire {
            key,
            at,
            fields: retimed,
        });
    }
}

/// NX | XX | GT | LT of the HEXPIRE family.
#[derive(Default)]
struct Condition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Condition {
    /// Valkey's parseExtendedExpireArgumentsOrReply over the options before FIELDS.
    fn parse(opts: &[Bytes]) -> Result<Condition, String> {
        let mut c = Condition::default();
        for a in opts {
            if is(a, "NX") {
                c.nx = true;
            } else if is(a, "XX") {
                c.xx = true;
            } else if is(a, "GT") {
                c.gt = true;
            } else if is(a, "LT") {
                c.lt = true;
            } else {
                return Err(format!("ERR Unsupported option {}", lossy(a, 128)));
            }
        }
        if c.nx && (c.xx || c.gt || c.lt) {
            return Err(
                "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
            );
        }
        if c.gt && c.lt {
            return Err("ERR GT and LT options at the same time are not compatible".into());
        }
        Ok(c)
    }

    /// Whether the condition refuses giving a field whose expiry is `current` the expiry
    /// `when`. No expiry counts as an infinite one: never less (GT refuses), always greater
    /// (LT accepts) — and a listpack's fields never have one.
    fn refuses(&self, current: Option<u64>, when: u64) -> bool {
        match current {
            Some(cur) => self.nx || (self.gt && when <= cur) || (self.lt && when >= cur),
            None => self.xx || self.gt,
        }
    }
}

/// HEXPIRE key seconds [NX | XX | GT | LT] FIELDS numfields field [field ...], and its
/// PEXPIRE/EXPIREAT/PEXPIREAT siblings. Per field: -2 no such field, 0 condition not met,
/// 1 expiry set, 2 deleted (the time is now or past).
fn hexpire_generic(ctx: &mut Ctx<'_>, args: &[Bytes], unit: ExpireUnit, cmd: &str) {
    let mut cond = Condition::default();
    let mut declared = 0;
    let mut fields: &[Bytes] = &[];
    if let Some(at) = fields_keyword(args, 3) {
        cond = match Condition::parse(&args[3..at]) {
            Ok(c) => c,
            Err(e) => {
                ctx.out.error(&e);
                return;
            }
        };
        let Some(n) = arg_i64(&args[at + 1]) else {
            ctx.out.error(NOT_INTEGER);
            return;
        };
        declared = n;
        fields = &args[at + 2..];
    }
    if declared == 0 || declared != fields.len() as i64 {
        ctx.out.error(NUMFIELDS);
        return;
    }
    let now = ctx.now;
    let when = match unix_time(&args[2], unit, now, cmd) {
        Ok(w) => w,
        Err(e) => {
            ctx.out.error(&e);
            return;
        }
    };
    let key = &args[1];
    let Ok(hash) = lookup(ctx, key) else {
        return;
    };
    // Valkey's checkAlreadyExpired: a time at or before now deletes.
    let past = when <= now;
    let mut state = Fields::new(hash, now);
    let mut changed: Vec<&[u8]> = Vec::new();
    let mut replies = Vec::with_capacity(fields.len());
    for f in fields {
        let reply = match state.state(f) {
            None => -2,
            Some(current) if cond.refuses(current, when) => 0,
            Some(_) => {
                let next = if past { None } else { Some(Some(when)) };
                if state.change(f, next) {
                    changed.push(f);
                }
                if past { 2 } else { 1 }
            }
        };
        replies.push(reply);
    }
    if past {
        write_records(ctx.shard, key, &changed, None, &[]);
    } else {
        write_records(ctx.shard, key, &[], Some(when), &changed);
    }
    ctx.out.array(replies.len());
    for r in replies {
        ctx.out.int(r);
    }
}

pub fn hexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hexpire_generic(ctx, args, ExpireUnit::Seconds, "hexpire");
}

pub fn hpexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hexpire_generic(ctx, args, ExpireUnit::Millis, "hpexpire");
}

pub fn hexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hexpire_generic(ctx, args, ExpireUnit::UnixSeconds, "hexpireat");
}

pub fn hpexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    hexpire_generic(ctx, args, ExpireUnit::UnixMillis, "hpexpireat");
}

/// The `numfields field...` of HTTL, HPTTL, HEXPIRETIME, HPEXPIRETIME and HPERSIST: Valkey
/// reads the count at argument 3 whatever argument 2 says, and the fields after it. Err
/// after replying (`mismatch` is the error for a count that does not match).
fn counted_fields<'a>(
    ctx: &mut Ctx<'_>,
    args: &'a [Bytes],
    mismatch: &str,
) -> Result<&'a [Bytes], ()> {
    let Some(declared) = arg_i64(&args[3]) else {
        ctx.out.error(NOT_INTEGER);
        return Err(());
    };
    let fields = &args[4..];
    if declared == 0 || declared != fields.len() as i64 {
        ctx.out.error(mismatch);
        return Err(());
    }
    Ok(fields)
}

/// HTTL, HPTTL, HEXPIRETIME, HPEXPIRETIME key FIELDS numfields field [field ...]: per field -2
/// no such field, -1 no expiry, else the time left (or the Unix time), at least 0, seconds
/// rounded to the nearest.
fn httl_generic(ctx: &mut Ctx<'_>, args: &[Bytes], millis: bool, absolute: bool) {
    // Valkey answers a count mismatch here with a plain syntax error.
    let Ok(fields) = counted_fields(ctx, args, SYNTAX_ERROR) else {
        return;
    };
    let now = ctx.now;
    let Ctx { shard, out, .. } = ctx;
    let Ok(hash) = super::hash_for_read(shard, now, out, &args[1]) else {
        return;
    };
    out.array(fields.len());
    for f in fields {
        match hash.and_then(|h| h.field_ttl(f, now)) {
            None => out.int(-2),
            Some(None) => out.int(-1),
            Some(Some(at)) => {
                let base = if absolute { 0 } else { now };
                let left = at.saturating_sub(base) as i64;
                out.int(if millis { left } else { (left + 500) / 1000 });
            }
        }
    }
}

pub fn httl(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    httl_generic(ctx, args, false, false);
}

pub fn hpttl(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    httl_generic(ctx, args, true, false);
}

pub fn hexpiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    httl_generic(ctx, args, false, true);
}

pub fn hpexpiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    httl_generic(ctx, args, true, true);
}

/// HPERSIST key FIELDS numfields field [field ...]: per field -2 no such field, -1 no
/// expiry, 1 expiry removed.
pub fn hpersist(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(fields) = counted_fields(ctx, args, NUMFIELDS) else {
        return;
    };
    let now = ctx.now;
    let key = &args[1];
    let Ok(hash) = lookup(ctx, key) else {
        return;
    };
    let mut state = Fields::new(hash, now);
    let mut changed: Vec<&[u8]> = Vec::new();
    let mut replies = Vec::with_capacity(fields.len());
    for f in fields {
        replies.push(match state.state(f) {
            None => -2,
            Some(None) => -1,
            Some(Some(_)) => {
                if state.change(f, Some(None)) {
                    changed.push(f);
                }
                1
            }
        });
    }
    write_records(ctx.shard, key, &[], None, &changed);
    ctx.out.array(replies.len());
    for r in replies {
        ctx.out.int(r);
    }
}

/// The options of HGETEX and HSETEX before FIELDS, by Valkey's grammar: an option conflicting
/// with one already seen is a syntax error (`EX 5 PX 10`, `FNX FXX`, `EX 5 KEEPTTL`), a
/// repeated one is not (`EX 5 EX 10`: the last wins); a time needs an argument before FIELDS.
#[derive(Default)]
struct ExOptions<'a> {
    expire: Option<(ExpireUnit, &'a [u8])>,
    persist: bool,
    keep_ttl: bool,
    fnx: bool,
    fxx: bool,
}

impl<'a> ExOptions<'a> {
    fn parse(opts: &'a [Bytes], for_set: bool) -> Option<ExOptions<'a>> {
        let mut o = ExOptions::default();
        let mut i = 0;
        while i < opts.len() {
            let a = &opts[i];
            if let Some(unit) = expire_unit(a) {
                let other_unit = o.expire.is_some_and(|(u, _)| u != unit);
                let next = opts
                    .get(i + 1)
                    .filter(|_| !o.keep_ttl && !o.persist && !other_unit)?;
                o.expire = Some((unit, next));
                i += 2;
                continue;
            }
            if for_set && is(a, "KEEPTTL") && o.expire.is_none() {
                o.keep_ttl = true;
            } else if for_set && is(a, "FNX") && !o.fxx {
                o.fnx = true;
            } else if for_set && is(a, "FXX") && !o.fnx {
                o.fxx = true;
            } else if !for_set && is(a, "PERSIST") && o.expire.is_none() {
                o.persist = true;
            } else {
                return None;
            }
            i += 1;
        }
        Some(o)
    }
}

/// The options and the fields block of HGETEX (`for_set` false) or HSETEX: Err after
/// replying.
fn ex_arguments<'a>(
    ctx: &mut Ctx<'_>,
    args: &'a [Bytes],
    for_set: bool,
) -> Result<(ExOptions<'a>, i64, &'a [Bytes]), ()> {
    let Some(at) = fields_keyword(args, 2) else {
        // No FIELDS block: Valkey's count stays at its initial value, which never matches.
        ctx.out.error(NUMFIELDS);
        return Err(());
    };
    let Some(opts) = ExOptions::parse(&args[2..at], for_set) else {
        ctx.out.error(SYNTAX_ERROR);
        return Err(());
    };
    let Some(declared) = arg_i64(&args[at + 1]) else {
        ctx.out.error(NOT_INTEGER);
        return Err(());
    };
    Ok((opts, declared, &args[at + 2..]))
}

/// HGETEX key [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT
/// unix-time-milliseconds | PERSIST] FIELDS numfields field [field ...]: the fields' values
/// (nil when missing), and then their expiry set, removed, or — for a time already past —
/// the fields deleted.
pub fn hgetex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok((opts, declared, fields)) = ex_arguments(ctx, args, false) else {
        return;
    };
    if declared == 0 || declared != fields.len() as i64 {
        ctx.out.error(NUMFIELDS);
        return;
    }
    let now = ctx.now;
    let key = &args[1];
    let Ctx { shard, out, .. } = ctx;
    let Ok(hash) = super::hash_for_read(shard, now, out, key) else {
        return;
    };
    let when = match opts.expire {
        Some((unit, arg)) => match unix_time(arg, unit, now, "hgetex") {
            Ok(w) => Some(w),
            Err(e) => {
                out.error(&e);
                return;
            }
        },
        None => None,
    };
    let mut state = Fields::new(hash, now);
    let mut changed: Vec<&[u8]> = Vec::new();
    out.array(fields.len());
    for f in fields {
        let current = state.state(f);
        match current.and_then(|_| hash.and_then(|h| h.get(f, now))) {
            Some(v) => out.bulk(v),
            None => out.nil(),
        }
        let next = match (current, when) {
            (None, _) => continue,
            // A time at or before now deletes.
            (Some(_), Some(w)) if w <= now => None,
            (Some(_), Some(w)) => Some(Some(w)),
            (Some(Some(_)), None) if opts.persist => Some(None),
            (Some(_), None) => continue,
        };
        if state.change(f, next) {
            changed.push(f);
        }
    }
    match when {
        Some(w) if w <= now => write_records(shard, key, &changed, None, &[]),
        Some(w) => write_records(shard, key, &[], Some(w), &changed),
        None => write_records(shard, key, &[], None, &changed),
    }
}

/// HSETEX key [FNX | FXX] [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT
/// unix-time-milliseconds | KEEPTTL] FIELDS numfields field value [field value ...]: 1 once
/// every field is set (each with the expiry given, its own kept with KEEPTTL, or none) — or,
/// for a time already past, deleted — and 0 when FNX or FXX refuses the whole write.
pub fn hsetex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok((opts, declared, pairs)) = ex_arguments(ctx, args, true) else {
        return;
    };
    if declared == 0 || declared > i64::MAX / 2 || declared * 2 != pairs.len() as i64 {
        ctx.out.error(NUMFIELDS);
        return;
    }
    let now = ctx.now;
    let key = &args[1];
    let Ok(hash) = lookup(ctx, key) else {
        return;
    };
    let when = match opts.expire.filter(|_| !opts.keep_ttl) {
        Some((unit, arg)) => match unix_time(arg, unit, now, "hsetex") {
            Ok(w) => Some(w),
            Err(e) => {
                ctx.out.error(&e);
                return;
            }
        },
        None => None,
    };
    let names = || pairs.chunks_exact(2).map(|p| &p[0][..]);
    let live = |f: &[u8]| hash.and_then(|h| h.field_ttl(f, now));
    let refused = match hash {
        Some(_) => {
            (opts.fnx && names().any(|f| live(f).is_some()))
                || (opts.fxx && names().any(|f| live(f).is_none()))
        }
        None => opts.fxx,
    };
    if refused {
        ctx.out.int(0);
        return;
    }
    if when.is_some_and(|w| w <= now) {
        // A time already past: the fields go (stored ones, expired or not), as Valkey's
        // active expiry would delete them.
        let mut seen = std::collections::HashSet::new();
        let stored: Vec<&[u8]> = names()
            .filter(|f| hash.is_some_and(|h| h.contains(f)) && seen.insert(*f))
            .collect();
        write_records(ctx.shard, key, &stored, None, &[]);
        ctx.out.int(1);
        return;
    }
    // Each field's expiry after the write: the one given, the live one it has (KEEPTTL), or
    // none. Consecutive fields with the same one share a record.
    let ttls: Vec<Option<u64>> = names()
        .map(|f| match when {
            Some(w) => Some(w),
            None if opts.keep_ttl => live(f).flatten(),
            None => None,
        })
        .collect();
    let flat: Vec<&[u8]> = pairs.iter().map(|a| &a[..]).collect();
    let mut start = 0;
    while start < ttls.len() {
        let mut end = start + 1;
        while end < ttls.len() && ttls[end] == ttls[start] {
            end += 1;
        }
        let group = &flat[2 * start..2 * end];
        match ttls[start] {
            Some(at) => ctx.shard.apply(Mutation::HSetEx {
                key,
                at,
                pairs: group,
            }),
            None => ctx.shard.apply(Mutation::HSet { key, pairs: group }),
        };
        start = end;
    }
    ctx.out.int(1);
}
