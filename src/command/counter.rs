//! Counters: INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT (and INCREX, the fixed-window counter).
//! Integers are stored as `Value::Int`, so a hot counter is updated in place.

use bytes::Bytes;

use super::{Ctx, NOT_INTEGER, OVERFLOW, WRONGTYPE};
use crate::shard::entry::string_bytes;
use crate::shard::{Mutation, Ttl, Value};

/// The integer value of `key` (0 when missing), or the error reply to send.
pub(super) fn current_int(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<i64, &'static str> {
    match ctx.write(key).map(|e| &e.value) {
        None => Ok(0),
        Some(Value::Int(i)) => Ok(*i),
        Some(Value::Str(s)) => crate::util::parse_i64(s).ok_or(NOT_INTEGER),
        Some(Value::Hash(_)) => Err(WRONGTYPE),
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
    let current: Option<Vec<u8>> = match ctx.write(key) {
        None => None,
        Some(e) => match string_bytes(&e.value, &mut scratch) {
            Some(s) => Some(s.to_vec()),
            None => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        },
    };
    match crate::util::incr_by_float(current.as_deref(), &args[2]) {
        Ok(result) => {
            // The record carries the result, not the increment (DESIGN.md).
            ctx.apply(Mutation::SetStr {
                key,
                value: &result,
                ttl: Ttl::Keep,
            });
            ctx.out.bulk(&result);
        }
        Err(e) => ctx.out.error(e.incrbyfloat_msg()),
    }
}
