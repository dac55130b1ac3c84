//! Lists: the commands, their table rows and their handlers.
//!
//! A pop replies from the list in place and then applies a `ListPop` naming how many went; a
//! move (LMOVE, RPOPLPUSH) is a pop record then a push record. The blocking forms (BLPOP,
//! BRPOP, BLMOVE, BLMPOP) are built elsewhere on [`pop_from`], [`move_element`],
//! [`first_nonempty`] and [`list_len`], which do the work once a list has data.

use bytes::Bytes;

use super::flags::{READONLY, WRITE};
use super::table::{CommandDef, K1, RF, W, WF, def, k, numkeys};
use super::{Ctx, Exec, KeyAccess, NO_SUCH_KEY, NOT_INTEGER, arg_i64, is};
use crate::protocol::Out;
use crate::shard::{ListObj, Mutation, Shard, ValueRef};

const OUT_OF_RANGE_POSITIVE: &str = "ERR value is out of range, must be positive";
const OUT_OF_RANGE_LONG: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

/// A lookup failed and its error (WRONGTYPE) is already in the reply: the command stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replied;

/// The list at `key`, looked up for a read (counting a keyspace hit or miss) or a write;
/// Ok(None) when missing, Err after replying WRONGTYPE. Split borrows, so the caller can read
/// the list in place while it writes the reply.
fn list_at<'s>(
    shard: &'s mut Shard,
    now: u64,
    out: &mut Out,
    key: &[u8],
    read: bool,
) -> Result<Option<&'s ListObj>, Replied> {
    let entry = if read {
        shard.get_read(key, now)
    } else {
        shard.get(key, now)
    };
    super::typed(entry.map(|e| e.value()), out, ValueRef::list).map_err(|()| Replied)
}

/// For a write: the length of the list at `key` (None when missing); Err after replying
/// WRONGTYPE.
pub fn list_len(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<usize>, Replied> {
    list_at(ctx.shard, ctx.now, ctx.out, key, false).map(|l| l.map(ListObj::len))
}

/// The index in `keys` of the first key holding a list, looked up for a write in order as
/// Valkey's LMPOP/BLPOP do: None when none does; Err after replying WRONGTYPE for a key of
/// another type met before any list.
pub fn first_nonempty(ctx: &mut Ctx<'_>, keys: &[Bytes]) -> Result<Option<usize>, Replied> {
    for (i, key) in keys.iter().enumerate() {
        if list_len(ctx, key)?.is_some_and(|n| n > 0) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Pops up to `count` elements from the head (`left`) or tail of the list at `key` and
/// replies them: a bare bulk string when `count` is None (LPOP without a count, BLPOP's
/// element), else an array, in popping order. The key should hold a list (a missing one
/// replies a null and pops nothing). Returns how many were popped.
pub fn pop_from(ctx: &mut Ctx<'_>, key: &[u8], left: bool, count: Option<usize>) -> usize {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let n = match shard.get(key, *now).map(|e| e.value()) {
        Some(ValueRef::List(l)) if !l.is_empty() => {
            let len = l.len();
            let n = count.unwrap_or(1).min(len);
            if count.is_some() {
                out.array(n);
            }
            if left {
                l.range(0, n).for_each(|e| out.bulk(&e));
            } else {
                l.range(len - n, len).rev().for_each(|e| out.bulk(&e));
            }
            n
        }
        _ => {
            if count.is_some() {
                out.nil_array();
            } else {
                out.nil();
            }
            0
        }
    };
    if n > 0 {
        ctx.apply(Mutation::ListPop {
            key,
            left,
            count: n,
        });
    }
    n
}

/// Pops an element from the head (`from_left`) or tail of the list at `src`, pushes it at the
/// head (`to_left`) or tail of `dst` and replies it (LMOVE). The destination's type is checked
/// before anything is popped. Ok(false) when `src` is missing: nothing was written or
/// replied (LMOVE replies a null, BLMOVE waits). Err after replying WRONGTYPE.
pub fn move_element(
    ctx: &mut Ctx<'_>,
    src: &[u8],
    dst: &[u8],
    from_left: bool,
    to_left: bool,
) -> Result<bool, Replied> {
    let Some(len) = list_len(ctx, src)? else {
        return Ok(false);
    };
    list_len(ctx, dst)?;
    let elem = match ctx.shard.peek(src, ctx.now).map(|e| e.value()) {
        Some(ValueRef::List(l)) => l
            .get(if from_left { 0 } else { len - 1 })
            .map(|e| e.to_vec())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    // Rotating a one-element list onto itself changes nothing; as two records it would delete
    // the key (and its TTL) in between.
    if src != dst || len > 1 {
        ctx.apply(Mutation::ListPop {
            key: src,
            left: from_left,
            count: 1,
        });
        ctx.apply(Mutation::ListPush {
            key: dst,
            left: to_left,
            elems: &[&elem],
        });
    }
    ctx.out.bulk(&elem);
    Ok(true)
}

/// LPUSH, RPUSH, LPUSHX, RPUSHX (`xx`: only onto an existing list).
fn push_generic(ctx: &mut Ctx<'_>, args: &[Bytes], left: bool, xx: bool) {
    let key = &args[1];
    let Ok(before) = list_len(ctx, key) else {
        return;
    };
    if xx && before.is_none() {
        ctx.out.int(0);
        return;
    }
    let elems: Vec<&[u8]> = args[2..].iter().map(|a| &a[..]).collect();
    ctx.apply(Mutation::ListPush {
        key,
        left,
        elems: &elems,
    });
    ctx.out.int((before.unwrap_or(0) + elems.len()) as i64);
}

pub fn lpush(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    push_generic(ctx, args, true, false);
}

pub fn rpush(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    push_generic(ctx, args, false, false);
}

pub fn lpushx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    push_generic(ctx, args, true, true);
}

pub fn rpushx(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    push_generic(ctx, args, false, true);
}

/// LPOP / RPOP key [count]: the count is checked before the key, as in Valkey; with a count
/// the reply is an array (a null array for a missing key), without it a bulk string.
fn pop_generic(ctx: &mut Ctx<'_>, args: &[Bytes], left: bool) {
    if args.len() > 3 {
        super::arity_error(ctx.out, if left { "lpop" } else { "rpop" });
        return;
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match arg_i64(a).filter(|&c| c >= 0) {
            Some(c) => Some(c as usize),
            None => {
                ctx.out.error(OUT_OF_RANGE_POSITIVE);
                return;
            }
        },
    };
    let key = &args[1];
    match list_len(ctx, key) {
        Err(Replied) => {}
        Ok(None) if count.is_some() => ctx.out.nil_array(),
        Ok(None) => ctx.out.nil(),
        Ok(Some(_)) if count == Some(0) => ctx.out.array(0),
        Ok(Some(_)) => {
            pop_from(ctx, key, left, count);
        }
    }
}

pub fn lpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    pop_generic(ctx, args, true);
}

pub fn rpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    pop_generic(ctx, args, false);
}

/// Valkey's start/stop arithmetic for LRANGE and LTRIM: negative counts from the end; the
/// inclusive range clamped to the list, or None when it is empty.
fn clamp_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 { stop + len } else { stop };
    if start > stop || start >= len {
        return None;
    }
    Some((start as usize, stop.min(len - 1) as usize))
}

pub fn lrange(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (Some(start), Some(stop)) = (arg_i64(&args[2]), arg_i64(&args[3])) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(l) = list_at(shard, *now, out, &args[1], true) else {
        return;
    };
    match l.and_then(|l| Some((l, clamp_range(start, stop, l.len())?))) {
        None => out.array(0),
        Some((l, (from, to))) => {
            out.array(to - from + 1);
            l.range(from, to + 1).for_each(|e| out.bulk(&e));
        }
    }
}

pub fn llen(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    if let Ok(l) = list_at(shard, *now, out, &args[1], true) {
        out.int(l.map_or(0, |l| l.len()) as i64);
    }
}

/// A list index (negative: from the end) as a position, if it is inside a list of `len`.
fn position(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 {
        index.checked_add(len as i64)?
    } else {
        index
    };
    usize::try_from(i).ok().filter(|&i| i < len)
}

/// LINDEX key index: the key is looked up before the index is parsed, as in Valkey.
pub fn lindex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let l = match list_at(shard, *now, out, &args[1], true) {
        Err(Replied) => return,
        Ok(None) => return out.nil(),
        Ok(Some(l)) => l,
    };
    let Some(index) = arg_i64(&args[2]) else {
        return out.error(NOT_INTEGER);
    };
    match position(index, l.len()).and_then(|i| l.get(i)) {
        Some(e) => out.bulk(&e),
        None => out.nil(),
    }
}

pub fn lset(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let len = match list_len(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.error(NO_SUCH_KEY),
        Ok(Some(n)) => n,
    };
    let Some(index) = arg_i64(&args[2]) else {
        return ctx.out.error(NOT_INTEGER);
    };
    let Some(index) = position(index, len) else {
        return ctx.out.error("ERR index out of range");
    };
    ctx.apply(Mutation::ListSet {
        key,
        index,
        value: &args[3],
    });
    ctx.out.ok();
}

/// LINSERT key BEFORE|AFTER pivot element: the list's new length, 0 when the key is missing,
/// -1 when the pivot is not in the list.
pub fn linsert(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let after = if is(&args[2], "AFTER") {
        true
    } else if is(&args[2], "BEFORE") {
        false
    } else {
        return ctx.syntax_error();
    };
    let key = &args[1];
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let (len, found) = match list_at(shard, *now, out, key, false) {
        Err(Replied) => return,
        Ok(None) => return out.int(0),
        Ok(Some(l)) => (l.len(), l.matches(&args[3]).position(|m| m)),
    };
    let Some(pivot) = found else {
        return ctx.out.int(-1);
    };
    ctx.apply(Mutation::ListInsert {
        key,
        index: pivot + usize::from(after),
        value: &args[4],
    });
    ctx.out.int(len as i64 + 1);
}

/// A count or rank that may be any i64 but i64::MIN (whose magnitude Valkey cannot negate).
fn arg_long(out: &mut Out, arg: &[u8]) -> Option<i64> {
    match arg_i64(arg) {
        None => {
            out.error(NOT_INTEGER);
            None
        }
        Some(i64::MIN) => {
            out.error(OUT_OF_RANGE_LONG);
            None
        }
        Some(v) => Some(v),
    }
}

/// LREM key count element: removes `count` matches from the head (from the tail when
/// negative; all of them when 0).
pub fn lrem(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(count) = arg_long(ctx.out, &args[2]) else {
        return;
    };
    let (key, elem) = (&args[1], &args[3]);
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let hits = match list_at(shard, *now, out, key, false) {
        Err(Replied) => return,
        Ok(None) => 0,
        Ok(Some(l)) => l.matches(elem).filter(|&m| m).count(),
    };
    let removed = if count == 0 {
        hits
    } else {
        hits.min(count.unsigned_abs() as usize)
    };
    if removed > 0 {
        ctx.apply(Mutation::ListRem { key, count, elem });
    }
    ctx.out.int(removed as i64);
}

pub fn ltrim(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (Some(start), Some(stop)) = (arg_i64(&args[2]), arg_i64(&args[3])) else {
        return ctx.out.error(NOT_INTEGER);
    };
    let key = &args[1];
    let len = match list_len(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.ok(),
        Ok(Some(n)) => n,
    };
    let (start, end) = clamp_range(start, stop, len).map_or((0, 0), |(s, e)| (s, e + 1));
    if (start, end) != (0, len) {
        ctx.apply(Mutation::ListTrim { key, start, end });
    }
    ctx.out.ok();
}

/// LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len], options checked before the
/// key as in Valkey.
pub fn lpos(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let mut rank: i64 = 1;
    let mut count: Option<u64> = None;
    let mut maxlen: u64 = 0;
    let mut j = 3;
    while j < args.len() {
        let has_value = j + 1 < args.len();
        let opt = &args[j];
        if is(opt, "RANK") && has_value {
            j += 1;
            let Some(r) = arg_long(ctx.out, &args[j]) else {
                return;
            };
            if r == 0 {
                return ctx.out.error(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                     second ... or use negative to start from the end of the list",
                );
            }
            rank = r;
        } else if is(opt, "COUNT") && has_value {
            j += 1;
            match arg_i64(&args[j]).filter(|&c| c >= 0) {
                Some(c) => count = Some(c as u64),
                None => return ctx.out.error("ERR COUNT can't be negative"),
            }
        } else if is(opt, "MAXLEN") && has_value {
            j += 1;
            match arg_i64(&args[j]).filter(|&c| c >= 0) {
                Some(m) => maxlen = m as u64,
                None => return ctx.out.error("ERR MAXLEN can't be negative"),
            }
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let l = match list_at(shard, *now, out, &args[1], true) {
        Err(Replied) => return,
        Ok(None) if count.is_some() => return out.array(0),
        Ok(None) => return out.nil(),
        Ok(Some(l)) => l,
    };
    let from_tail = rank < 0;
    let rank = rank.unsigned_abs();
    let found = matching_positions(l, &args[2], from_tail, rank, count.unwrap_or(1), maxlen);
    match count {
        Some(_) => {
            out.array(found.len());
            found.iter().for_each(|&i| out.int(i as i64));
        }
        None => match found.first() {
            Some(&i) => out.int(i as i64),
            None => out.nil(),
        },
    }
}

/// LPOS's scan: the indexes (from the head) of matches `rank`, `rank + 1`, ... counted from
/// the head or the tail, at most `count` of them (0: all), among the first `maxlen` elements
/// looked at (0: all).
fn matching_positions(
    l: &ListObj,
    elem: &[u8],
    from_tail: bool,
    rank: u64,
    count: u64,
    maxlen: u64,
) -> Vec<usize> {
    let len = l.len();
    let scan: Box<dyn Iterator<Item = bool>> = if from_tail {
        Box::new(l.matches(elem).rev())
    } else {
        Box::new(l.matches(elem))
    };
    let limit = if maxlen == 0 {
        len
    } else {
        len.min(maxlen as usize)
    };
    let mut found = Vec::new();
    let mut seen: u64 = 0;
    for (i, hit) in scan.take(limit).enumerate() {
        if !hit {
            continue;
        }
        seen += 1;
        if seen >= rank {
            found.push(if from_tail { len - 1 - i } else { i });
            if count != 0 && found.len() as u64 >= count {
                break;
            }
        }
    }
    found
}

/// `LEFT` or `RIGHT`: whether it is the head; None after replying a syntax error.
fn side(ctx: &mut Ctx<'_>, arg: &[u8]) -> Option<bool> {
    if is(arg, "LEFT") {
        Some(true)
    } else if is(arg, "RIGHT") {
        Some(false)
    } else {
        ctx.syntax_error();
        None
    }
}

pub fn lmove(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(from_left) = side(ctx, &args[3]) else {
        return;
    };
    let Some(to_left) = side(ctx, &args[4]) else {
        return;
    };
    if let Ok(false) = move_element(ctx, &args[1], &args[2], from_left, to_left) {
        ctx.out.nil();
    }
}

pub fn rpoplpush(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if let Ok(false) = move_element(ctx, &args[1], &args[2], false, true) {
        ctx.out.nil();
    }
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]: pops from the first non-empty list
/// and replies [key, [elements]], or a null array when every list is empty.
pub fn lmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(numkeys) = arg_i64(&args[1]).filter(|&n| n >= 1) else {
        return ctx.out.error("ERR numkeys should be greater than 0");
    };
    let where_at = match usize::try_from(numkeys) {
        Ok(n) if n < args.len() - 2 => n + 2,
        _ => return ctx.syntax_error(),
    };
    let Some(left) = side(ctx, &args[where_at]) else {
        return;
    };
    let mut count = None;
    let mut j = where_at + 1;
    while j < args.len() {
        if count.is_none() && is(&args[j], "COUNT") && j + 1 < args.len() {
            j += 1;
            match arg_i64(&args[j]).filter(|&c| c >= 1) {
                Some(c) => count = Some(c as usize),
                None => return ctx.out.error("ERR count should be greater than 0"),
            }
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    let keys = &args[2..where_at];
    match first_nonempty(ctx, keys) {
        Err(Replied) => {}
        Ok(None) => ctx.out.nil_array(),
        Ok(Some(i)) => {
            ctx.out.array(2);
            ctx.out.bulk(&keys[i]);
            pop_from(ctx, &keys[i], left, Some(count.unwrap_or(1)));
        }
    }
}

// The blocking forms. Each handler is the command's non-blocking attempt: it serves when
// there is data and answers a null otherwise; the engine blocks the connection on a null and
// retries when a key may have received data (`engine::blocking`). Inside MULTI or a script the
// null is the answer, as in Valkey.

/// Checks a blocking command's timeout argument; Err after replying its error.
fn check_timeout(ctx: &mut Ctx<'_>, arg: &[u8]) -> Result<(), Replied> {
    super::parse_timeout(arg).map(drop).map_err(|e| {
        ctx.out.error(e);
        Replied
    })
}

/// BLPOP / BRPOP key [key ...] timeout: [key, element] from the first non-empty list.
fn blocking_pop(ctx: &mut Ctx<'_>, args: &[Bytes], left: bool) {
    if check_timeout(ctx, &args[args.len() - 1]).is_err() {
        return;
    }
    let keys = &args[1..args.len() - 1];
    match first_nonempty(ctx, keys) {
        Err(Replied) => {}
        Ok(None) => ctx.out.nil_array(),
        Ok(Some(i)) => {
            ctx.out.array(2);
            ctx.out.bulk(&keys[i]);
            pop_from(ctx, &keys[i], left, None);
        }
    }
}

pub fn blpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    blocking_pop(ctx, args, true);
}

pub fn brpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    blocking_pop(ctx, args, false);
}

pub fn brpoplpush(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if check_timeout(ctx, &args[3]).is_ok() {
        rpoplpush(ctx, &args[..3]);
    }
}

pub fn blmove(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if check_timeout(ctx, &args[5]).is_ok() {
        lmove(ctx, &args[..5]);
    }
}

/// BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]: LMPOP after the timeout.
pub fn blmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if check_timeout(ctx, &args[1]).is_err() {
        return;
    }
    let mut rest = Vec::with_capacity(args.len() - 1);
    rest.push(args[0].clone());
    rest.extend_from_slice(&args[2..]);
    lmpop(ctx, &rest);
}

use Exec::Shard as S;

const BLOCKING_WRITE: u32 = WRITE | super::flags::BLOCKING;

const PUSH_COMPLEXITY: &str = "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.";

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "lpush",
        -3,
        WF,
        K1,
        "list",
        "1.0.0",
        "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
        PUSH_COMPLEXITY,
        S(lpush),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "rpush",
        -3,
        WF,
        K1,
        "list",
        "1.0.0",
        "Appends one or more elements to a list. Creates the key if it doesn't exist.",
        PUSH_COMPLEXITY,
        S(rpush),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "lpushx",
        -3,
        WF,
        K1,
        "list",
        "2.2.0",
        "Prepends one or more elements to a list only when the list exists.",
        PUSH_COMPLEXITY,
        S(lpushx),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "rpushx",
        -3,
        WF,
        K1,
        "list",
        "2.2.0",
        "Appends one or more elements to a list only when the list exists.",
        PUSH_COMPLEXITY,
        S(rpushx),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "lpop",
        -2,
        WRITE | super::flags::FAST,
        K1,
        "list",
        "1.0.0",
        "Returns and removes one or more elements from the beginning of a list. Deletes the list if the last element was popped.",
        "O(N) where N is the number of elements returned",
        S(lpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "rpop",
        -2,
        WRITE | super::flags::FAST,
        K1,
        "list",
        "1.0.0",
        "Returns and removes the last elements of a list or up to count elements if the optional count argument is provided. Deletes the list if the last element was popped.",
        "O(N) where N is the number of elements returned",
        S(rpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "lrange",
        4,
        READONLY,
        K1,
        "list",
        "1.0.0",
        "Returns a range of elements from a list.",
        "O(S+N) where S is the distance of start offset from HEAD for small lists, from nearest end (HEAD or TAIL) for large lists; and N is the number of elements in the specified range.",
        S(lrange),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "llen",
        2,
        RF,
        K1,
        "list",
        "1.0.0",
        "Returns the length of a list.",
        "O(1)",
        S(llen),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "lindex",
        3,
        READONLY,
        K1,
        "list",
        "1.0.0",
        "Returns an element from a list by its index.",
        "O(N) where N is the number of elements to traverse to get to the element at index. This makes asking for the first or the last element of the list O(1).",
        S(lindex),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "lset",
        4,
        W,
        K1,
        "list",
        "1.0.0",
        "Sets the value of an element in a list by its index.",
        "O(N) where N is the length of the list. Setting either the first or the last element of the list is O(1).",
        S(lset),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "linsert",
        5,
        W,
        K1,
        "list",
        "2.2.0",
        "Inserts an element before or after another element in a list.",
        "O(N) where N is the number of elements to traverse before seeing the value pivot. This means that inserting somewhere on the left end on the list (head) can be considered O(1) and inserting somewhere on the right end (tail) is O(N).",
        S(linsert),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "lrem",
        4,
        WRITE,
        K1,
        "list",
        "1.0.0",
        "Removes elements from a list. Deletes the list if the last element was removed.",
        "O(N+M) where N is the length of the list and M is the number of elements removed.",
        S(lrem),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "ltrim",
        4,
        WRITE,
        K1,
        "list",
        "1.0.0",
        "Removes elements from both ends of a list. Deletes the list if all elements were trimmed.",
        "O(N) where N is the number of elements to be removed by the operation.",
        S(ltrim),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "lpos",
        -3,
        READONLY,
        K1,
        "list",
        "6.0.6",
        "Returns the index of matching elements in a list.",
        "O(N) where N is the number of elements in the list, for the average case. When searching for elements near the head or the tail of the list, or when the MAXLEN option is provided, the command may run in constant time.",
        S(lpos),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "lmove",
        5,
        W,
        k(1, 2, 1),
        "list",
        "6.2.0",
        "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.",
        "O(1)",
        S(lmove),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "rpoplpush",
        3,
        W,
        k(1, 2, 1),
        "list",
        "1.2.0",
        "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.",
        "O(1)",
        S(rpoplpush),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "lmpop",
        -4,
        WRITE,
        numkeys(1),
        "list",
        "7.0.0",
        "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.",
        "O(N+M) where N is the number of provided keys and M is the number of elements returned.",
        S(lmpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "blpop",
        -3,
        BLOCKING_WRITE,
        k(1, -2, 1),
        "list",
        "2.0.0",
        "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        "O(N) where N is the number of provided keys.",
        S(blpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "brpop",
        -3,
        BLOCKING_WRITE,
        k(1, -2, 1),
        "list",
        "2.0.0",
        "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        "O(N) where N is the number of provided keys.",
        S(brpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "brpoplpush",
        4,
        BLOCKING_WRITE | super::flags::DENYOOM,
        k(1, 2, 1),
        "list",
        "2.2.0",
        "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.",
        "O(1)",
        S(brpoplpush),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "blmove",
        6,
        BLOCKING_WRITE | super::flags::DENYOOM,
        k(1, 2, 1),
        "list",
        "6.2.0",
        "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.",
        "O(1)",
        S(blmove),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "blmpop",
        -5,
        BLOCKING_WRITE,
        numkeys(2),
        "list",
        "7.0.0",
        "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        "O(N+M) where N is the number of provided keys and M is the number of elements returned.",
        S(blmpop),
    )
    .key_access(KeyAccess::READ_WRITE),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_valkeys_arithmetic() {
        assert_eq!(clamp_range(0, -1, 5), Some((0, 4)));
        assert_eq!(clamp_range(-100, 100, 5), Some((0, 4)));
        assert_eq!(clamp_range(2, 1, 5), None);
        assert_eq!(clamp_range(5, 10, 5), None);
        assert_eq!(clamp_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(clamp_range(0, -6, 5), None);
        assert_eq!(clamp_range(i64::MIN, i64::MAX, 5), Some((0, 4)));
        assert_eq!(clamp_range(0, 0, 0), None);
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(-4, 3), None);
        assert_eq!(position(3, 3), None);
        assert_eq!(position(i64::MIN, 3), None);
    }

    #[test]
    fn lpos_scan_ranks_counts_and_maxlen() {
        let lim = crate::shard::ListLimits::default();
        let mut l = ListObj::new();
        for v in ["a", "b", "a", "c", "a", "1", "a"] {
            l.push_back(v.as_bytes(), lim);
        }
        assert_eq!(matching_positions(&l, b"a", false, 1, 1, 0), [0]);
        assert_eq!(matching_positions(&l, b"a", false, 2, 0, 0), [2, 4, 6]);
        assert_eq!(matching_positions(&l, b"a", true, 1, 2, 0), [6, 4]);
        assert_eq!(matching_positions(&l, b"a", false, 1, 0, 3), [0, 2]);
        assert_eq!(
            matching_positions(&l, b"a", true, 5, 0, 0),
            Vec::<usize>::new()
        );
        assert_eq!(matching_positions(&l, b"1", false, 1, 1, 0), [5]);
        assert_eq!(
            matching_positions(&l, b"a", false, u64::MAX, 0, 0),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn rows_name_their_keys() {
        let lmpop = COMMANDS.iter().find(|d| d.name == "lmpop").unwrap();
        let args: Vec<Bytes> = ["lmpop", "2", "a", "b", "LEFT"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        assert_eq!(lmpop.keys.positions(&args).collect::<Vec<_>>(), [2, 3]);
        let bad: Vec<Bytes> = ["lmpop", "x", "a", "LEFT"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        assert_eq!(lmpop.keys.positions(&bad).count(), 0);
        let huge: Vec<Bytes> = ["lmpop", "99999999999", "a", "LEFT"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        // A count beyond the arguments names no keys: the command replies the error itself.
        assert_eq!(lmpop.keys.positions(&huge).count(), 0);
        let lmove = COMMANDS.iter().find(|d| d.name == "lmove").unwrap();
        let args: Vec<Bytes> = ["lmove", "s", "d", "LEFT", "RIGHT"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        assert_eq!(lmove.keys.positions(&args).collect::<Vec<_>>(), [1, 2]);
    }
}
