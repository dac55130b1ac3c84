//! Counters: INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT, and Valkey 9.2's INCREX (an increment
//! with an expiry and optional bounds in one command: the rate limiter's primitive).
//! Integers are stored as `Value::Int`, so a hot counter is updated in place; float results
//! stay strings, as in Valkey.

use bytes::Bytes;

use super::expire::{ExpireUnit, parse_expire};
use super::{Ctx, NOT_FLOAT, NOT_INTEGER, OVERFLOW, SYNTAX_ERROR, WRONGTYPE, is};
use crate::shard::entry::string_bytes;
use crate::shard::{Mutation, Ttl, Value, ValueRef};

/// The integer value of `key` (0 when missing), or the error reply to send.
pub(super) fn current_int(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<i64, &'static str> {
    match ctx.write(key).map(|e| e.value()) {
        None => Ok(0),
        Some(ValueRef::Int(i)) => Ok(i),
        Some(ValueRef::Str(s)) => crate::util::parse_i64(s).ok_or(NOT_INTEGER),
        Some(_) => Err(WRONGTYPE),
    }
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) {
    let cur = match current_int(ctx, key) {
        Ok(v) => v,
        Err(e) => {
            ctx.out.error(e);
            return;
        }
    };
    let Some(new) = cur.checked_add(by) else {
        ctx.out.error(OVERFLOW);
        return;
    };
    ctx.apply(Mutation::SetInt {
        key,
        value: new,
        ttl: Ttl::Keep,
    });
    ctx.out.int(new);
}

pub fn incr(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    incr_by(ctx, &args[1], 1);
}

pub fn decr(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    incr_by(ctx, &args[1], -1);
}

pub fn incrby(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    match super::arg_i64(&args[2]) {
        Some(by) => incr_by(ctx, &args[1], by),
        None => ctx.out.error(NOT_INTEGER),
    }
}

pub fn decrby(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    match super::arg_i64(&args[2]) {
        Some(i64::MIN) => ctx.out.error("ERR decrement would overflow"),
        Some(by) => incr_by(ctx, &args[1], -by),
        None => ctx.out.error(NOT_INTEGER),
    }
}

pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let mut scratch = itoa::Buffer::new();
    let (current, expire_at): (Option<Vec<u8>>, Option<u64>) = match ctx.write(key) {
        None => (None, None),
        Some(e) => match string_bytes(e.value(), &mut scratch) {
            Some(s) => (Some(s.to_vec()), e.expire_at()),
            None => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        },
    };
    match crate::util::incr_by_float(current.as_deref(), &args[2]) {
        Ok(result) => {
            store_float_result(ctx, key, &result, expire_at);
            ctx.out.bulk(&result);
        }
        Err(e) => ctx.out.error(e.incrbyfloat_msg()),
    }
}

/// Stores a float result (INCRBYFLOAT, INCREX BYFLOAT). Valkey keeps it a string object even
/// when it reads like an integer ("3"), so it is not int-encoded here either. The record
/// carries the result, not the increment, and the key's absolute expiry (DESIGN.md).
fn store_float_result(ctx: &mut Ctx<'_>, key: &[u8], value: &[u8], expire_at: Option<u64>) {
    ctx.apply(Mutation::Restore {
        key,
        value: Value::Str(value.into()),
        expire_at,
    });
}

/// INCREX's arguments as given, before any number is parsed.
#[derive(Default)]
struct IncrexArgs<'a> {
    nx: bool,
    xx: bool,
    /// EX/PX/EXAT/PXAT and its unvalidated argument.
    expire: Option<(ExpireUnit, &'a [u8])>,
    persist: bool,
    enx: bool,
    by_int: Option<&'a [u8]>,
    by_float: Option<&'a [u8]>,
    lbound: Option<&'a [u8]>,
    ubound: Option<&'a [u8]>,
    saturate: bool,
}

/// Parses the options after the key. Unlike SET, every option may appear once and each
/// group is exclusive (NX|XX, EX|PX|EXAT|PXAT|PERSIST, BYINT|BYFLOAT, PERSIST|ENX): any
/// repetition, conflict, unknown word or missing value is a syntax error.
fn parse_increx(args: &[Bytes]) -> Result<IncrexArgs<'_>, &'static str> {
    let mut o = IncrexArgs::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let next = args.get(i + 1).map(|b| &b[..]);
        let unit = super::string::expire_unit(a);
        let ok = if let Some(unit) = unit {
            let free = o.expire.is_none() && !o.persist;
            match next {
                Some(v) if free => {
                    o.expire = Some((unit, v));
                    true
                }
                _ => false,
            }
        } else if is(a, "NX") {
            let free = !o.nx && !o.xx;
            o.nx = true;
            free
        } else if is(a, "XX") {
            let free = !o.nx && !o.xx;
            o.xx = true;
            free
        } else if is(a, "PERSIST") {
            let free = o.expire.is_none() && !o.persist && !o.enx;
            o.persist = true;
            free
        } else if is(a, "ENX") {
            let free = !o.enx && !o.persist;
            o.enx = true;
            free
        } else if is(a, "SATURATE") {
            let free = !o.saturate;
            o.saturate = true;
            free
        } else if is(a, "BYINT") {
            let taken = o.by_int.is_some() || o.by_float.is_some();
            take_value(&mut o.by_int, next, taken)
        } else if is(a, "BYFLOAT") {
            let taken = o.by_int.is_some() || o.by_float.is_some();
            take_value(&mut o.by_float, next, taken)
        } else if is(a, "LBOUND") {
            let taken = o.lbound.is_some();
            take_value(&mut o.lbound, next, taken)
        } else if is(a, "UBOUND") {
            let taken = o.ubound.is_some();
            take_value(&mut o.ubound, next, taken)
        } else {
            false
        };
        if !ok {
            return Err(SYNTAX_ERROR);
        }
        let takes_value = unit.is_some()
            || ["BYINT", "BYFLOAT", "LBOUND", "UBOUND"]
                .iter()
                .any(|k| is(a, k));
        i += if takes_value { 2 } else { 1 };
    }
    if o.enx && o.expire.is_none() {
        return Err("ERR ENX flag requires an expiration");
    }
    Ok(o)
}

/// Stores an option's value unless the option (or its group) was already given or the value
/// is missing.
fn take_value<'a>(slot: &mut Option<&'a [u8]>, next: Option<&'a [u8]>, taken: bool) -> bool {
    match next {
        Some(v) if !taken => {
            *slot = Some(v);
            true
        }
        _ => false,
    }
}

const BOUNDS_INVERTED: &str = "ERR LBOUND can't be greater than UBOUND";

/// A parsed INCREX bound or increment in integer mode.
fn int_arg(arg: Option<&[u8]>, default: i64, err: &'static str) -> Result<i64, &'static str> {
    match arg {
        None => Ok(default),
        Some(a) => crate::util::parse_i64(a).ok_or(err),
    }
}

/// The numbers of an integer-mode INCREX.
struct IntPlan {
    incr: i64,
    lbound: i64,
    ubound: i64,
}

fn int_plan(o: &IncrexArgs<'_>) -> Result<IntPlan, &'static str> {
    let incr = int_arg(
        o.by_int,
        1,
        "ERR Increment is not an integer or out of range",
    )?;
    let lbound = int_arg(
        o.lbound,
        i64::MIN,
        "ERR LBOUND is not an integer or out of range",
    )?;
    let ubound = int_arg(
        o.ubound,
        i64::MAX,
        "ERR UBOUND is not an integer or out of range",
    )?;
    if lbound > ubound {
        return Err(BOUNDS_INVERTED);
    }
    Ok(IntPlan {
        incr,
        lbound,
        ubound,
    })
}

fn increx_float_msg(e: crate::util::IncrexFloatError) -> &'static str {
    use crate::util::IncrexFloatError as E;
    match e {
        E::BadIncrement => "ERR Increment is not a valid float",
        E::IncrementNotFinite => "ERR BYFLOAT increment cannot be Infinity",
        E::BadLbound => "ERR LBOUND is not a valid float",
        E::BadUbound => "ERR UBOUND is not a valid float",
        E::BoundsInverted => BOUNDS_INVERTED,
        E::BadCurrent => NOT_FLOAT,
        E::CurrentNotFinite => "ERR value cannot be Infinity",
        E::AppliedNotFinite => "ERR applied increment would be Infinity",
    }
}

/// The outcome of an integer-mode INCREX on `old`: Ok((new, applied, written)).
fn int_step(old: i64, p: &IntPlan, saturate: bool) -> Result<(i64, i64, bool), &'static str> {
    let (out_of_bounds, upper) = match old.checked_add(p.incr) {
        // An overflowing sum is past the type limit the increment points at.
        None => (true, p.incr > 0),
        Some(v) => (v < p.lbound || v > p.ubound, v > p.ubound),
    };
    if !out_of_bounds {
        return Ok((old + p.incr, p.incr, true));
    }
    if !saturate {
        return Ok((old, 0, false));
    }
    let new = if upper { p.ubound } else { p.lbound };
    match new.checked_sub(old) {
        Some(applied) => Ok((new, applied, true)),
        None => Err("ERR applied increment would overflow"),
    }
}

/// Appends one element of a float-mode INCREX reply: a RESP3 double or a RESP2 bulk string,
/// in Valkey's human long double form.
fn reply_human_long_double(out: &mut crate::protocol::Out, text: &[u8]) {
    if out.resp3 {
        out.raw(b",");
        out.raw(text);
        out.raw(b"\r\n");
    } else {
        out.bulk(text);
    }
}

/// INCREX key [NX | XX] [EX s | PX ms | EXAT s | PXAT ms | PERSIST] [ENX]
///        [BYINT n | BYFLOAT f] [LBOUND l] [UBOUND u] [SATURATE]
///
/// Valkey 9.2's counter-with-expiry. The reply is always [new value, increment applied];
/// a result outside [LBOUND, UBOUND] (or past the type's limits) is declined — key and TTL
/// untouched, reply [current value, 0] — unless SATURATE clamps it to the bound it crossed.
/// NX/XX not met also replies [current value, 0]. The write is one record carrying the
/// result and an absolute expiry (or a DEL when that expiry is already past).
pub fn increx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let o = match parse_increx(&args[2..]) {
        Ok(o) => o,
        Err(e) => {
            ctx.out.error(e);
            return;
        }
    };
    // Argument checks come before the key lookup: increment, bounds, then expire time.
    let float_args = o.by_float.map(|incr| crate::util::IncrexFloatArgs {
        current: None,
        incr,
        lbound: o.lbound,
        ubound: o.ubound,
        saturate: o.saturate,
    });
    let int_plan = match &float_args {
        Some(fa) => {
            if let Err(e) = crate::util::increx_float_check(fa) {
                ctx.out.error(increx_float_msg(e));
                return;
            }
            None
        }
        None => match int_plan(&o) {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.out.error(e);
                return;
            }
        },
    };
    let expire_at = match o.expire {
        None => None,
        Some((unit, arg)) => match parse_expire(arg, unit, ctx.now, "increx") {
            Ok(at) => Some(at),
            Err(e) => {
                ctx.out.error(&e);
                return;
            }
        },
    };

    let key = &args[1];
    let (current, current_expire) = match ctx.write(key) {
        None => (None, None),
        Some(e) if matches!(e.value(), crate::shard::ValueRef::Hash(_)) => {
            ctx.out.error(WRONGTYPE);
            return;
        }
        Some(e) => (Some(e.to_value()), e.expire_at()),
    };
    let had_ttl = current_expire.is_some();
    let exists = current.is_some();
    let condition_met = !((o.nx && exists) || (o.xx && !exists));

    let ttl = match expire_at {
        Some(_) if o.enx && had_ttl => Ttl::Keep,
        Some(at) => Ttl::At(at),
        None if o.persist => Ttl::Clear,
        None => Ttl::Keep,
    };
    // A new expiry already in the past deletes the key instead of writing it.
    let past = matches!(ttl, Ttl::At(at) if at <= ctx.now);

    if let Some(plan) = int_plan {
        let old = match &current {
            None => 0,
            Some(Value::Int(i)) => *i,
            Some(Value::Str(s)) => match crate::util::parse_i64(s) {
                Some(v) => v,
                None => {
                    ctx.out.error(NOT_INTEGER);
                    return;
                }
            },
            Some(_) => unreachable!("WRONGTYPE answered above"),
        };
        let (new, applied, written) = if condition_met {
            match int_step(old, &plan, o.saturate) {
                Ok(step) => step,
                Err(e) => {
                    ctx.out.error(e);
                    return;
                }
            }
        } else {
            (old, 0, false)
        };
        if written {
            if past {
                ctx.apply(Mutation::Del { key });
            } else {
                ctx.apply(Mutation::SetInt {
                    key,
                    value: new,
                    ttl,
                });
            }
        }
        ctx.out.array(2);
        ctx.out.int(new);
        ctx.out.int(applied);
        return;
    }

    // Float mode: the long double arithmetic lives in util (C long double).
    let Some(mut fa) = float_args else {
        unreachable!("integer mode returned above")
    };
    let mut scratch = itoa::Buffer::new();
    fa.current = current
        .as_ref()
        .and_then(|v| string_bytes(v.as_ref(), &mut scratch));
    let result = if condition_met {
        crate::util::increx_float(&fa)
    } else {
        crate::util::increx_float_declined(&fa)
    };
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            ctx.out.error(increx_float_msg(e));
            return;
        }
    };
    if r.written {
        if past {
            ctx.apply(Mutation::Del { key });
        } else {
            let expire_at = match ttl {
                Ttl::Keep => current_expire,
                Ttl::Clear => None,
                Ttl::At(at) => Some(at),
            };
            store_float_result(ctx, key, &r.value, expire_at);
        }
    }
    ctx.out.array(2);
    reply_human_long_double(ctx.out, &r.value);
    reply_human_long_double(ctx.out, &r.applied);
}
