//! Time to live: EXPIRE family, TTL family, PERSIST, and the expiry-argument parsing that SET,
//! GETEX and INCREX share. Every expiry is stored as an absolute Unix time in milliseconds.

use bytes::Bytes;

use super::{Ctx, is};
use crate::shard::Mutation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireUnit {
    /// EX: relative seconds.
    Seconds,
    /// PX: relative milliseconds.
    Millis,
    /// EXAT: absolute Unix seconds.
    UnixSeconds,
    /// PXAT: absolute Unix milliseconds.
    UnixMillis,
}

/// Parses an EX/PX/EXAT/PXAT argument into an absolute Unix time in ms, with Valkey's checks
/// and error texts (`cmd` is the lowercase command name used in the message).
pub fn parse_expire(arg: &[u8], unit: ExpireUnit, now: u64, cmd: &str) -> Result<u64, String> {
    let Some(v) = super::arg_i64(arg) else {
        return Err(super::NOT_INTEGER.to_string());
    };
    let invalid = || format!("ERR invalid expire time in '{cmd}' command");
    let seconds = matches!(unit, ExpireUnit::Seconds | ExpireUnit::UnixSeconds);
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        return Err(invalid());
    }
    let mut ms = if seconds { v * 1000 } else { v };
    if matches!(unit, ExpireUnit::Seconds | ExpireUnit::Millis) {
        ms = ms.checked_add(now as i64).ok_or_else(invalid)?;
    }
    Ok(ms as u64)
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT], checked in Valkey's order: the
/// options first, then the time. A time at or before now deletes the key (and replies 1).
fn expire_generic(ctx: &mut Ctx<'_>, args: &[Bytes], unit: ExpireUnit, cmd: &str) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in &args[3..] {
        if is(a, "NX") {
            nx = true;
        } else if is(a, "XX") {
            xx = true;
        } else if is(a, "GT") {
            gt = true;
        } else if is(a, "LT") {
            lt = true;
        } else {
            ctx.out
                .error(&format!("ERR Unsupported option {}", super::lossy(a, 128)));
            return;
        }
    }
    if nx && (xx || gt || lt) {
        ctx.out
            .error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if gt && lt {
        ctx.out
            .error("ERR GT and LT options at the same time are not compatible");
        return;
    }
    let Some(mut when) = super::arg_i64(&args[2]) else {
        ctx.out.error(super::NOT_INTEGER);
        return;
    };
    // Negative times are allowed (they delete); only overflow is an error.
    let invalid = || format!("ERR invalid expire time in '{cmd}' command");
    if matches!(unit, ExpireUnit::Seconds | ExpireUnit::UnixSeconds) {
        match when.checked_mul(1000) {
            Some(ms) => when = ms,
            None => {
                ctx.out.error(&invalid());
                return;
            }
        }
    }
    if matches!(unit, ExpireUnit::Seconds | ExpireUnit::Millis) {
        match when.checked_add(ctx.now as i64) {
            Some(w) => when = w,
            None => {
                ctx.out.error(&invalid());
                return;
            }
        }
    }
    let key = &args[1];
    let Some(e) = ctx.write(key) else {
        ctx.out.int(0);
        return;
    };
    let refused = match e.expire_at() {
        Some(cur) => nx || (gt && when <= cur as i64) || (lt && when >= cur as i64),
        // No expiry counts as an infinite TTL: never less (GT), always greater (LT).
        None => xx || gt,
    };
    if refused {
        ctx.out.int(0);
        return;
    }
    if when <= ctx.now as i64 {
        ctx.apply(Mutation::Del { key });
    } else {
        ctx.apply(Mutation::Expire {
            key,
            at: Some(when as u64),
        });
    }
    ctx.out.int(1);
}

pub fn expire(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    expire_generic(ctx, args, ExpireUnit::Seconds, "expire");
}

pub fn pexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    expire_generic(ctx, args, ExpireUnit::Millis, "pexpire");
}

pub fn expireat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    expire_generic(ctx, args, ExpireUnit::UnixSeconds, "expireat");
}

pub fn pexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    expire_generic(ctx, args, ExpireUnit::UnixMillis, "pexpireat");
}

/// TTL/PTTL/EXPIRETIME/PEXPIRETIME: -2 for a missing key, -1 without expiry. Seconds are
/// rounded to the nearest (Valkey's (ms + 500) / 1000), the absolute forms included.
fn ttl_generic(ctx: &mut Ctx<'_>, args: &[Bytes], millis: bool, absolute: bool) {
    let now = ctx.now;
    // Valkey's TTL does not count as an access (LOOKUP_NOTOUCH), but does expire lazily.
    let Some(e) = super::keyspace::read_notouch(ctx, &args[1]) else {
        ctx.out.int(-2);
        return;
    };
    let Some(at) = e.expire_at() else {
        ctx.out.int(-1);
        return;
    };
    let v = if absolute {
        at as i64
    } else {
        (at as i64 - now as i64).max(0)
    };
    ctx.out.int(if millis { v } else { (v + 500) / 1000 });
}

pub fn ttl(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ttl_generic(ctx, args, false, false);
}

pub fn pttl(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ttl_generic(ctx, args, true, false);
}

pub fn expiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ttl_generic(ctx, args, false, true);
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ttl_generic(ctx, args, true, true);
}

pub fn persist(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    match ctx.write(key).map(|e| e.expire_at().is_some()) {
        Some(true) => {
            ctx.apply(Mutation::Expire { key, at: None });
            ctx.out.int(1);
        }
        _ => ctx.out.int(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_arguments() {
        assert_eq!(
            parse_expire(b"10", ExpireUnit::Seconds, 1000, "set"),
            Ok(11_000)
        );
        assert_eq!(
            parse_expire(b"10", ExpireUnit::Millis, 1000, "set"),
            Ok(1010)
        );
        assert_eq!(
            parse_expire(b"10", ExpireUnit::UnixSeconds, 1000, "set"),
            Ok(10_000)
        );
        assert_eq!(
            parse_expire(b"10", ExpireUnit::UnixMillis, 1000, "set"),
            Ok(10)
        );
        let bad = Err("ERR invalid expire time in 'set' command".to_string());
        assert_eq!(parse_expire(b"0", ExpireUnit::Seconds, 1000, "set"), bad);
        assert_eq!(parse_expire(b"-5", ExpireUnit::Millis, 1000, "set"), bad);
        assert_eq!(
            parse_expire(b"9223372036854775807", ExpireUnit::Seconds, 1000, "set"),
            bad
        );
        assert_eq!(
            parse_expire(b"9223372036854775807", ExpireUnit::Millis, 1000, "set"),
            bad
        );
        assert_eq!(
            parse_expire(b"x", ExpireUnit::Seconds, 1000, "set"),
            Err("ERR value is not an integer or out of range".to_string())
        );
    }
}
