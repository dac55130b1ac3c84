//! Strings: GET, SET and friends, MGET/MSET, APPEND, STRLEN, GETRANGE/SETRANGE.

use bytes::Bytes;

use super::expire::{ExpireUnit, parse_expire};
use super::{Ctx, SYNTAX_ERROR, WRONGTYPE, is};
use crate::shard::entry::string_bytes;
use crate::shard::{Mutation, Ttl, Value, ValueRef};

/// Appends the value of a string entry as a bulk reply, or WRONGTYPE for other types.
fn reply_string(ctx: &mut Ctx<'_>, value: &Value) {
    reply_string_to(ctx.out, value.as_ref());
}

fn reply_string_to(out: &mut crate::protocol::Out, value: ValueRef<'_>) {
    match value {
        ValueRef::Str(s) => out.bulk(s),
        ValueRef::Int(i) => out.bulk_int(i),
        _ => out.error(WRONGTYPE),
    }
}

pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    // Split borrows: the entry borrows the shard, the reply goes to `out`.
    let Ctx {
        shard, now, out, ..
    } = ctx;
    match shard.get_read(&args[1], *now).map(|e| e.value()) {
        Some(ValueRef::Str(s)) => out.bulk(s),
        Some(ValueRef::Int(i)) => out.bulk_int(i),
        Some(_) => out.error(WRONGTYPE),
        None => out.nil(),
    }
}

/// Which command's options are being parsed: SET's or GETEX's (Valkey's COMMAND_SET and
/// COMMAND_GET in `parseExtendedCommandArgumentsOrReply`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OptionsFor {
    Set,
    GetEx,
}

/// The options SET and GETEX accept after their fixed arguments.
#[derive(Default)]
struct StringOptions<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    /// IFEQ comparison-value.
    ifeq: Option<&'a [u8]>,
    /// The last EX/PX/EXAT/PXAT and its unvalidated argument.
    expire: Option<(ExpireUnit, &'a [u8])>,
}

/// The unit an EX/PX/EXAT/PXAT keyword stands for (SET, GETEX and INCREX share them).
pub(super) fn expire_unit(arg: &[u8]) -> Option<ExpireUnit> {
    if is(arg, "EX") {
        Some(ExpireUnit::Seconds)
    } else if is(arg, "PX") {
        Some(ExpireUnit::Millis)
    } else if is(arg, "EXAT") {
        Some(ExpireUnit::UnixSeconds)
    } else if is(arg, "PXAT") {
        Some(ExpireUnit::UnixMillis)
    } else {
        None
    }
}

/// Valkey's option grammar: each option is refused (syntax error) only when it conflicts
/// with one already seen, so `EX 5 EX 10` is accepted and the last one wins, while `EX 5
/// PX 10` is not. The expire argument is validated after the whole line has parsed, so a
/// syntax error anywhere wins over an invalid expire time.
fn parse_options(args: &[Bytes], for_cmd: OptionsFor) -> Option<StringOptions<'_>> {
    let set = for_cmd == OptionsFor::Set;
    let mut o = StringOptions::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let next = args.get(i + 1);
        if let Some(unit) = expire_unit(a) {
            let other_unit = o.expire.is_some_and(|(u, _)| u != unit);
            let next = next.filter(|_| !o.keep_ttl && !o.persist && !other_unit)?;
            o.expire = Some((unit, next));
            i += 2;
            continue;
        }
        if set && is(a, "NX") && !o.xx && o.ifeq.is_none() {
            o.nx = true;
        } else if set && is(a, "XX") && !o.nx && o.ifeq.is_none() {
            o.xx = true;
        } else if set && is(a, "IFEQ") && next.is_some() && !o.nx && !o.xx && o.ifeq.is_none() {
            o.ifeq = next.map(|b| &b[..]);
            i += 1;
        } else if set && is(a, "GET") {
            o.get = true;
        } else if set && is(a, "KEEPTTL") && o.expire.is_none() {
            o.keep_ttl = true;
        } else if !set && is(a, "PERSIST") && o.expire.is_none() {
            o.persist = true;
        } else {
            return None;
        }
        i += 1;
    }
    Some(o)
}

/// The absolute expiry of a parsed EX/PX/EXAT/PXAT, or the error reply already sent.
fn validate_expire(ctx: &mut Ctx<'_>, o: &StringOptions<'_>, cmd: &str) -> Result<Option<u64>, ()> {
    match o.expire {
        None => Ok(None),
        Some((unit, arg)) => match parse_expire(arg, unit, ctx.now, cmd) {
            Ok(at) => Ok(Some(at)),
            Err(e) => {
                ctx.out.error(&e);
                Err(())
            }
        },
    }
}

pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(o) = parse_options(&args[3..], OptionsFor::Set) else {
        ctx.out.error(SYNTAX_ERROR);
        return;
    };
    let Ok(expire_at) = validate_expire(ctx, &o, "set") else {
        return;
    };
    let key = &args[1];
    if o.get {
        // SET ... GET replies first with the old value (a read, as Valkey's GET), which must
        // be a string; nothing is written after a WRONGTYPE.
        let Ctx {
            shard, now, out, ..
        } = ctx;
        match shard.get_read(key, *now).map(|e| e.value()) {
            Some(ValueRef::Hash(_)) => {
                out.error(WRONGTYPE);
                return;
            }
            Some(v) => reply_string_to(out, v),
            None => out.nil(),
        }
    }
    // What SET finds: None (no key), Some(None) (not a string: only IFEQ without GET cares,
    // with WRONGTYPE), or Some(Some(equal)) (a string, and whether it equals IFEQ's value).
    let found = match ctx.write(key) {
        None => None,
        Some(e) => {
            let mut scratch = itoa::Buffer::new();
            Some(string_bytes(e.value(), &mut scratch).map(|s| o.ifeq == Some(s)))
        }
    };
    let aborted = match (o.ifeq.is_some(), found) {
        (true, Some(None)) if !o.get => {
            ctx.out.error(WRONGTYPE);
            return;
        }
        (true, Some(equal)) => equal != Some(true),
        (true, None) => true,
        (false, _) => (o.nx && found.is_some()) || (o.xx && found.is_none()),
    };
    if aborted {
        if !o.get {
            ctx.out.nil();
        }
        return;
    }
    let ttl = match (o.keep_ttl, expire_at) {
        (_, Some(at)) => Ttl::At(at),
        (true, None) => Ttl::Keep,
        (false, None) => Ttl::Clear,
    };
    write_string(ctx, key, &args[2], ttl);
    if !o.get {
        ctx.out.ok();
    }
}

/// Stores a string value; an expiry already in the past deletes the key instead, as Valkey
/// does for SET ... EXAT/PXAT with a past time.
fn write_string(ctx: &mut Ctx<'_>, key: &[u8], value: &[u8], ttl: Ttl) {
    if let Ttl::At(at) = ttl
        && at <= ctx.now
    {
        ctx.apply(Mutation::Del { key });
        return;
    }
    ctx.apply(Mutation::SetStr { key, value, ttl });
}

pub fn setnx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if ctx.write(&args[1]).is_some() {
        ctx.out.int(0);
        return;
    }
    ctx.apply(Mutation::SetStr {
        key: &args[1],
        value: &args[2],
        ttl: Ttl::Clear,
    });
    ctx.out.int(1);
}

fn setex_generic(ctx: &mut Ctx<'_>, args: &[Bytes], unit: ExpireUnit, cmd: &str) {
    match parse_expire(&args[2], unit, ctx.now, cmd) {
        Ok(at) => {
            write_string(ctx, &args[1], &args[3], Ttl::At(at));
            ctx.out.ok();
        }
        Err(e) => ctx.out.error(&e),
    }
}

pub fn setex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    setex_generic(ctx, args, ExpireUnit::Seconds, "setex");
}

pub fn psetex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    setex_generic(ctx, args, ExpireUnit::Millis, "psetex");
}

pub fn getex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(o) = parse_options(&args[2..], OptionsFor::GetEx) else {
        ctx.out.error(SYNTAX_ERROR);
        return;
    };
    // Valkey 9 validates the expire time before looking the key up.
    let Ok(expire_at) = validate_expire(ctx, &o, "getex") else {
        return;
    };
    let key = &args[1];
    let Some(e) = ctx.read(key) else {
        ctx.out.nil();
        return;
    };
    let value = e.to_value();
    let had_ttl = e.expire_at().is_some();
    if let Value::Hash(_) = value {
        ctx.out.error(WRONGTYPE);
        return;
    }
    reply_string(ctx, &value);
    let absolute = matches!(
        o.expire,
        Some((ExpireUnit::UnixSeconds | ExpireUnit::UnixMillis, _))
    );
    match expire_at {
        Some(at) if absolute && at <= ctx.now => {
            ctx.apply(Mutation::Del { key });
        }
        Some(at) => {
            ctx.apply(Mutation::Expire { key, at: Some(at) });
        }
        None if o.persist && had_ttl => {
            ctx.apply(Mutation::Expire { key, at: None });
        }
        None => {}
    }
}

pub fn getdel(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Some(e) = ctx.read(key) else {
        ctx.out.nil();
        return;
    };
    let value = e.to_value();
    if let Value::Hash(_) = value {
        ctx.out.error(WRONGTYPE);
        return;
    }
    reply_string(ctx, &value);
    ctx.apply(Mutation::Del { key });
}

pub fn getset(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    match ctx.read(key).map(|e| e.to_value()) {
        Some(Value::Hash(_)) => {
            ctx.out.error(WRONGTYPE);
            return;
        }
        Some(v) => reply_string(ctx, &v),
        None => ctx.out.nil(),
    }
    ctx.apply(Mutation::SetStr {
        key,
        value: &args[2],
        ttl: Ttl::Clear,
    });
}

/// MGET with all keys on this core.
pub fn mget(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    ctx.out.array(args.len() - 1);
    for key in &args[1..] {
        mget_element(ctx, key);
    }
}

/// One element of an MGET split across cores: args = ["mget", key].
pub fn mget_one(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    mget_element(ctx, &args[1]);
}

fn mget_element(ctx: &mut Ctx<'_>, key: &[u8]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    match shard.get_read(key, *now).map(|e| e.value()) {
        Some(ValueRef::Str(s)) => out.bulk(s),
        Some(ValueRef::Int(i)) => out.bulk_int(i),
        // MGET never fails: a non-string reads as nil.
        Some(_) | None => out.nil(),
    }
}

/// MSET with all keys on this core (atomic here).
pub fn mset(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if args.len().is_multiple_of(2) {
        super::arity_error(ctx.out, "mset");
        return;
    }
    for pair in args[1..].chunks_exact(2) {
        ctx.apply(Mutation::SetStr {
            key: &pair[0],
            value: &pair[1],
            ttl: Ttl::Clear,
        });
    }
    ctx.out.ok();
}

/// MSETNX with all keys on this core (atomic here).
pub fn msetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if args.len().is_multiple_of(2) {
        super::arity_error(ctx.out, "msetnx");
        return;
    }
    let any = args[1..]
        .chunks_exact(2)
        .any(|p| ctx.shard.peek(&p[0], ctx.now).is_some());
    if any {
        ctx.out.int(0);
        return;
    }
    for pair in args[1..].chunks_exact(2) {
        ctx.apply(Mutation::SetStr {
            key: &pair[0],
            value: &pair[1],
            ttl: Ttl::Clear,
        });
    }
    ctx.out.int(1);
}

/// The string length a value would have, or None for non-strings.
fn string_len(v: ValueRef<'_>) -> Option<usize> {
    match v {
        ValueRef::Str(s) => Some(s.len()),
        ValueRef::Int(i) => Some(itoa::Buffer::new().format(i).len()),
        _ => None,
    }
}

/// The string length at `key` for a write (None when missing); Err after replying WRONGTYPE.
fn current_len_for_write(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<usize>, ()> {
    match ctx.write(key).map(|e| string_len(e.value())) {
        None => Ok(None),
        Some(Some(n)) => Ok(Some(n)),
        Some(None) => {
            ctx.out.error(WRONGTYPE);
            Err(())
        }
    }
}

const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// Bytes of the stored string on either side of a change that the PAN guard looks at, beyond
/// the longest grouped card number (19 digits, 18 separators); extended over a run of digits
/// that goes on, so a run is judged whole.
const GUARD_MARGIN: usize = 40;
/// How far the margin extends over a run of digits at most.
const GUARD_RUN_LIMIT: usize = 4096;

fn digit_or_separator(b: u8) -> bool {
    b.is_ascii_digit() || b == b' ' || b == b'-'
}

/// `card-pan-guard` on APPEND's or SETRANGE's result: `data` written at `offset` of the
/// string stored at `key`, judged with the stored bytes around it (the arguments alone were
/// judged before the command ran). True when the write must not happen (the refusal is
/// already in the reply).
fn pan_in_result(ctx: &mut Ctx<'_>, key: &[u8], offset: usize, data: &[u8]) -> bool {
    let Some(guard) = ctx.node.pan_guard().filter(|g| g.on()) else {
        return false;
    };
    let mut scratch = itoa::Buffer::new();
    let old: &[u8] = match ctx.shard.get_read(key, ctx.now) {
        Some(e) => string_bytes(e.value(), &mut scratch).unwrap_or(b""),
        None => b"",
    };
    let end = offset + data.len();
    let mut lo = offset.saturating_sub(GUARD_MARGIN).min(old.len());
    while lo > 0 && offset - lo < GUARD_RUN_LIMIT && digit_or_separator(old[lo - 1]) {
        lo -= 1;
    }
    let mut hi = (end + GUARD_MARGIN).min(old.len()).max(end.min(old.len()));
    while hi < old.len() && hi - end < GUARD_RUN_LIMIT && digit_or_separator(old[hi]) {
        hi += 1;
    }
    let mut window = Vec::with_capacity(hi.saturating_sub(lo) + data.len() + 1);
    window.extend_from_slice(&old[lo..offset.min(old.len())]);
    if offset > old.len() {
        // SETRANGE past the end pads with zero bytes: not digits.
        window.push(0);
    }
    window.extend_from_slice(data);
    if end < hi {
        window.extend_from_slice(&old[end..hi]);
    }
    let Some(finding) = guard.inspect_value(key, &window) else {
        return false;
    };
    if guard.decide(&finding, "toplevel", "", "") == crate::security::pan_guard::Verdict::Refuse {
        ctx.out.error(crate::security::pan_guard::REFUSED);
        return true;
    }
    false
}

pub fn append(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Ok(cur) = current_len_for_write(ctx, key) else {
        return;
    };
    if let Some(len) = cur
        && pan_in_result(ctx, key, len, &args[2])
    {
        return;
    }
    match cur {
        None => {
            ctx.apply(Mutation::SetStr {
                key,
                value: &args[2],
                ttl: Ttl::Clear,
            });
            ctx.out.int(args[2].len() as i64);
        }
        Some(len) => {
            let total = len + args[2].len();
            if total > ctx.node.proto_max_bulk_len() {
                ctx.out.error(TOO_BIG);
                return;
            }
            ctx.apply(Mutation::Append {
                key,
                tail: &args[2],
            });
            ctx.out.int(total as i64);
        }
    }
}

pub fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    match ctx.read(&args[1]).map(|e| string_len(e.value())) {
        None => ctx.out.int(0),
        Some(Some(n)) => ctx.out.int(n as i64),
        Some(None) => ctx.out.error(WRONGTYPE),
    }
}

pub fn getrange(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (Some(mut start), Some(mut end)) = (super::arg_i64(&args[2]), super::arg_i64(&args[3]))
    else {
        ctx.out.error(super::NOT_INTEGER);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Some(e) = shard.get_read(&args[1], *now) else {
        out.bulk(b"");
        return;
    };
    let mut scratch = itoa::Buffer::new();
    let Some(s) = string_bytes(e.value(), &mut scratch) else {
        out.error(WRONGTYPE);
        return;
    };
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        out.bulk(b"");
        return;
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if len == 0 || start > end {
        out.bulk(b"");
        return;
    }
    out.bulk(&s[start as usize..=end as usize]);
}

pub fn setrange(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Some(offset) = super::arg_i64(&args[2]) else {
        ctx.out.error(super::NOT_INTEGER);
        return;
    };
    if offset < 0 {
        ctx.out.error("ERR offset is out of range");
        return;
    }
    let data = &args[3];
    let Ok(cur) = current_len_for_write(ctx, key) else {
        return;
    };
    if data.is_empty() {
        ctx.out.int(cur.unwrap_or(0) as i64);
        return;
    }
    let offset = offset as usize;
    if offset.saturating_add(data.len()) > ctx.node.proto_max_bulk_len() {
        ctx.out.error(TOO_BIG);
        return;
    }
    if pan_in_result(ctx, key, offset, data) {
        return;
    }
    ctx.apply(Mutation::SetRange { key, offset, data });
    ctx.out
        .int(cur.unwrap_or(0).max(offset + data.len()) as i64);
}
