//! Sets: SADD/SREM and the membership reads, SPOP/SRANDMEMBER, the algebra (SINTER, SUNION,
//! SDIFF, their STORE forms and SINTERCARD), SMOVE and SSCAN — their table rows and handlers.
//!
//! Replies, errors and the order keys are looked up in follow Valkey 8's t_set.c. Writes are
//! records naming their effect: SPOP decides which members go and removes exactly those; a
//! STORE writes the computed set whole (or deletes the destination when it is empty).

use bytes::Bytes;

use super::flags::{FAST, READONLY, WRITE};
use super::keyspace::{INVALID_CURSOR, ScanOf, parse_cursor, parse_scan_options, reply_scan_head};
use super::table::{K1, RF, W, WF, def, k, numkeys};
use super::{CommandDef, Ctx, Exec::Shard as S, KeyAccess, NOT_INTEGER, SYNTAX_ERROR, WRONGTYPE};
use crate::protocol::Out;
use crate::shard::set::Elem;
use crate::shard::{Kind, Mutation, SetObj, Shard, Value, ValueRef};

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "sadd",
        -3,
        WF,
        K1,
        "set",
        "1.0.0",
        "Adds one or more members to a set. Creates the key if it doesn't exist.",
        "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.",
        S(sadd),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "srem",
        -3,
        WRITE | FAST,
        K1,
        "set",
        "1.0.0",
        "Removes one or more members from a set. Deletes the set if the last member was removed.",
        "O(N) where N is the number of members to be removed.",
        S(srem),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "scard",
        2,
        RF,
        K1,
        "set",
        "1.0.0",
        "Returns the number of members in a set.",
        "O(1)",
        S(scard),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "sismember",
        3,
        RF,
        K1,
        "set",
        "1.0.0",
        "Determines whether a member belongs to a set.",
        "O(1)",
        S(sismember),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "smismember",
        -3,
        RF,
        K1,
        "set",
        "6.2.0",
        "Determines whether multiple members belong to a set.",
        "O(N) where N is the number of elements being checked for membership",
        S(smismember),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "smembers",
        2,
        READONLY,
        K1,
        "set",
        "1.0.0",
        "Returns all members of a set.",
        "O(N) where N is the set cardinality.",
        S(smembers),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "spop",
        -2,
        WRITE | FAST,
        K1,
        "set",
        "1.0.0",
        "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.",
        "Without the count argument O(1), otherwise O(N) where N is the value of the passed count.",
        S(spop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "srandmember",
        -2,
        READONLY,
        K1,
        "set",
        "1.0.0",
        "Get one or multiple random members from a set",
        "Without the count argument O(1), otherwise O(N) where N is the absolute value of the passed count.",
        S(srandmember),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "sinter",
        -2,
        READONLY,
        k(1, -1, 1),
        "set",
        "1.0.0",
        "Returns the intersect of multiple sets.",
        "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets.",
        S(sinter),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "sintercard",
        -3,
        READONLY,
        numkeys(1),
        "set",
        "7.0.0",
        "Returns the number of members of the intersect of multiple sets.",
        "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets.",
        S(sintercard),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "sinterstore",
        -3,
        W,
        k(1, -1, 1),
        "set",
        "1.0.0",
        "Stores the intersect of multiple sets in a key.",
        "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets.",
        S(sinterstore),
    )
    .key_access(KeyAccess::STORE),
    def(
        "sunion",
        -2,
        READONLY,
        k(1, -1, 1),
        "set",
        "1.0.0",
        "Returns the union of multiple sets.",
        "O(N) where N is the total number of elements in all given sets.",
        S(sunion),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "sunionstore",
        -3,
        W,
        k(1, -1, 1),
        "set",
        "1.0.0",
        "Stores the union of multiple sets in a key.",
        "O(N) where N is the total number of elements in all given sets.",
        S(sunionstore),
    )
    .key_access(KeyAccess::STORE),
    def(
        "sdiff",
        -2,
        READONLY,
        k(1, -1, 1),
        "set",
        "1.0.0",
        "Returns the difference of multiple sets.",
        "O(N) where N is the total number of elements in all given sets.",
        S(sdiff),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "sdiffstore",
        -3,
        W,
        k(1, -1, 1),
        "set",
        "1.0.0",
        "Stores the difference of multiple sets in a key.",
        "O(N) where N is the total number of elements in all given sets.",
        S(sdiffstore),
    )
    .key_access(KeyAccess::STORE),
    def(
        "smove",
        4,
        WRITE | FAST,
        k(1, 2, 1),
        "set",
        "1.0.0",
        "Moves a member from one set to another.",
        "O(1)",
        S(smove),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "sscan",
        -3,
        READONLY,
        K1,
        "set",
        "2.8.0",
        "Iterates over members of a set.",
        "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
        S(sscan),
    )
    .key_access(KeyAccess::READ_ONLY),
];

const POSITIVE_COUNT: &str = "ERR value is out of range, must be positive";

/// The set at `key` for reading (lazy expiry, hit/miss counted): Ok(None) when missing, Err
/// after replying WRONGTYPE. Takes the shard and the reply buffer apart so the caller can
/// read the set in place while it writes the reply.
fn set_for_read<'s>(
    shard: &'s mut Shard,
    now: u64,
    out: &mut Out,
    key: &[u8],
) -> Result<Option<&'s SetObj>, ()> {
    as_set(shard.get_read(key, now).map(|e| e.value()), out)
}

/// As `set_for_read`, for a write (lazy expiry, no hit/miss accounting).
fn set_for_write<'s>(
    shard: &'s mut Shard,
    now: u64,
    out: &mut Out,
    key: &[u8],
) -> Result<Option<&'s SetObj>, ()> {
    as_set(shard.get(key, now).map(|e| e.value()), out)
}

fn as_set<'s>(value: Option<ValueRef<'s>>, out: &mut Out) -> Result<Option<&'s SetObj>, ()> {
    super::typed(value, out, ValueRef::set)
}

/// The set at `key` as it is now, without side effects.
fn peek_set<'s>(shard: &'s Shard, now: u64, key: &[u8]) -> Option<&'s SetObj> {
    match shard.peek(key, now).map(|e| e.value()) {
        Some(ValueRef::Set(x)) => Some(x),
        _ => None,
    }
}

fn as_slices(args: &[Bytes]) -> Vec<&[u8]> {
    args.iter().map(|a| &a[..]).collect()
}

pub fn sadd(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let members = &args[2..];
    let before = match set_for_write(ctx.shard, ctx.now, ctx.out, key) {
        Err(()) => return,
        Ok(None) => 0,
        Ok(Some(x)) => {
            // Nothing new: no record (and no rewrite of a big set for nothing).
            if members.iter().all(|m| x.contains(m)) {
                ctx.out.int(0);
                return;
            }
            x.len()
        }
    };
    ctx.apply(Mutation::SetAdd {
        key,
        members: &as_slices(members),
    });
    // SADD only adds, so the new members (a member named twice counting once) are exactly
    // how much the set grew.
    let after = peek_set(ctx.shard, ctx.now, key).map_or(0, SetObj::len);
    ctx.out.int((after - before) as i64);
}

pub fn srem(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let members = &args[2..];
    let before = match set_for_write(ctx.shard, ctx.now, ctx.out, key) {
        Err(()) => return,
        Ok(Some(x)) if members.iter().any(|m| x.contains(m)) => x.len(),
        Ok(_) => {
            ctx.out.int(0);
            return;
        }
    };
    ctx.apply(Mutation::SetRem {
        key,
        members: &as_slices(members),
    });
    // The key goes with its last member and then reads as empty.
    let after = peek_set(ctx.shard, ctx.now, key).map_or(0, SetObj::len);
    ctx.out.int((before - after) as i64);
}

pub fn scard(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
        return;
    };
    ctx.out.int(x.map_or(0, SetObj::len) as i64);
}

pub fn sismember(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
        return;
    };
    ctx.out.int(x.is_some_and(|x| x.contains(&args[2])) as i64);
}

pub fn smismember(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
        return;
    };
    ctx.out.array(args.len() - 2);
    for m in &args[2..] {
        ctx.out.int(x.is_some_and(|x| x.contains(m)) as i64);
    }
}

pub fn smembers(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
        return;
    };
    reply_members(
        ctx.out,
        x.map(SetObj::iter).into_iter().flatten(),
        x.map_or(0, SetObj::len),
    );
}

/// A set reply (`~` in RESP3) of `n` members.
fn reply_members<'a>(out: &mut Out, members: impl Iterator<Item = Elem<'a>>, n: usize) {
    out.set(n);
    for m in members {
        out.bulk(&m);
    }
}

/// SPOP key [count]: the count is checked before the key, as in Valkey.
pub fn spop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if args.len() > 3 {
        ctx.out.error(SYNTAX_ERROR);
        return;
    }
    let count = match args.get(2).map(|a| super::arg_i64(a)) {
        None => None,
        Some(Some(c)) if c >= 0 => Some(c as u64),
        Some(_) => {
            ctx.out.error(POSITIVE_COUNT);
            return;
        }
    };
    let key = &args[1];
    let limits = ctx.shard.limits.set;
    let x = match set_for_write(ctx.shard, ctx.now, ctx.out, key) {
        Err(()) => return,
        Ok(None) => {
            match count {
                None => ctx.out.nil(),
                Some(_) => ctx.out.set(0),
            }
            return;
        }
        Ok(Some(x)) => x,
    };
    let Some(count) = count else {
        let m = x.random().expect("a stored set is never empty").to_vec();
        ctx.out.bulk(&m);
        ctx.apply(Mutation::SetRem {
            key,
            members: &[&m],
        });
        return;
    };
    if count == 0 {
        ctx.out.set(0);
        return;
    }
    if count >= x.len() as u64 {
        // Everything goes: the record is the key's deletion (Valkey propagates a DEL too).
        // Valkey answers with SUNION's reply of the one set, which rebuilds a listpack from
        // an intset first (integers ascending, then the rest in order); other encodings
        // come back in their own order.
        if let SetObj::Listpack(_) = x {
            let mut rebuilt = SetObj::new();
            for e in x.iter() {
                rebuilt.insert(&e, limits);
            }
            reply_members(ctx.out, rebuilt.iter(), rebuilt.len());
        } else {
            reply_members(ctx.out, x.iter(), x.len());
        }
        ctx.apply(Mutation::Del { key });
        return;
    }
    // Decide the members here; the record names them, so every replica removes the same.
    let popped: Vec<Vec<u8>> = x
        .sample_distinct(count as usize)
        .iter()
        .map(|m| m.to_vec())
        .collect();
    ctx.out.set(popped.len());
    for m in &popped {
        ctx.out.bulk(m);
    }
    let refs: Vec<&[u8]> = popped.iter().map(|m| &m[..]).collect();
    ctx.apply(Mutation::SetRem {
        key,
        members: &refs,
    });
}

/// SRANDMEMBER key [count]: a positive count picks distinct members, a negative one picks
/// independently (repeats allowed), its absolute value many times.
pub fn srandmember(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if args.len() > 3 {
        ctx.out.error(SYNTAX_ERROR);
        return;
    }
    let Some(count) = args.get(2) else {
        let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
            return;
        };
        match x.and_then(SetObj::random) {
            Some(m) => ctx.out.bulk(&m),
            None => ctx.out.nil(),
        }
        return;
    };
    let Some(count) = super::arg_i64(count) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    if count == i64::MIN {
        ctx.out.error(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        );
        return;
    }
    let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
        return;
    };
    let Some(x) = x.filter(|_| count != 0) else {
        ctx.out.array(0);
        return;
    };
    if count < 0 {
        let n = count.unsigned_abs() as usize;
        ctx.out.array(n);
        for _ in 0..n {
            let m = x.random().expect("a stored set is never empty");
            ctx.out.bulk(&m);
        }
    } else {
        let picked = x.sample_distinct(count as usize);
        ctx.out.array(picked.len());
        for m in &picked {
            ctx.out.bulk(m);
        }
    }
}

/// What the intersection is for.
enum Inter<'k> {
    /// SINTER: reply the members.
    Reply,
    /// SINTERCARD: reply how many, stopping at the limit (0: none).
    Count(usize),
    /// SINTERSTORE: store them at this key.
    Store(&'k [u8]),
}

pub fn sinter(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    sinter_generic(ctx, &args[1..], Inter::Reply);
}

pub fn sinterstore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    sinter_generic(ctx, &args[2..], Inter::Store(&args[1]));
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit], with Valkey's checks in Valkey's order.
pub fn sintercard(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let numkeys = match super::arg_i64(&args[1]) {
        Some(n) if n >= 1 => n as u64,
        _ => {
            ctx.out.error("ERR numkeys should be greater than 0");
            return;
        }
    };
    if numkeys > (args.len() - 2) as u64 {
        ctx.out
            .error("ERR Number of keys can't be greater than number of args");
        return;
    }
    let keys_end = 2 + numkeys as usize;
    let mut limit = 0;
    let mut j = keys_end;
    while j < args.len() {
        if super::is(&args[j], "LIMIT") && j + 1 < args.len() {
            j += 1;
            match super::arg_i64(&args[j]) {
                Some(l) if l >= 0 => limit = l as usize,
                _ => {
                    ctx.out.error("ERR LIMIT can't be negative");
                    return;
                }
            }
        } else {
            ctx.out.error(SYNTAX_ERROR);
            return;
        }
        j += 1;
    }
    sinter_generic(ctx, &args[2..keys_end], Inter::Count(limit));
}

/// Looks the source keys up in order, as Valkey's lookupKeyRead does (lazy expiry, hit/miss
/// counted), checking every one's type even after a missing one. Returns whether one was
/// missing; Err after replying WRONGTYPE.
fn check_sources(ctx: &mut Ctx<'_>, keys: &[Bytes]) -> Result<bool, ()> {
    let mut missing = false;
    for key in keys {
        match ctx.shard.get_read(key, ctx.now).map(|e| e.value().kind()) {
            None => missing = true,
            Some(Kind::Set) => {}
            Some(_) => {
                ctx.out.error(WRONGTYPE);
                return Err(());
            }
        }
    }
    Ok(missing)
}

/// The source sets, after `check_sources` (None: missing, an empty set).
fn sources<'s>(shard: &'s Shard, now: u64, keys: &[Bytes]) -> Vec<Option<&'s SetObj>> {
    keys.iter().map(|k| peek_set(shard, now, k)).collect()
}

/// Valkey's sinterGenericCommand: walk the smallest set and keep what every other set holds.
fn sinter_generic(ctx: &mut Ctx<'_>, keys: &[Bytes], what: Inter<'_>) {
    let Ok(missing) = check_sources(ctx, keys) else {
        return;
    };
    let limits = ctx.shard.limits.set;
    let found: Option<Vec<&SetObj>> = if missing {
        None
    } else {
        sources(ctx.shard, ctx.now, keys).into_iter().collect()
    };
    let Some(mut sets) = found else {
        // An intersection with an empty set is empty.
        match what {
            Inter::Reply => ctx.out.set(0),
            Inter::Count(_) => ctx.out.int(0),
            Inter::Store(dst) => store(ctx, dst, SetObj::new()),
        }
        return;
    };
    sets.sort_by_key(|s| s.len());
    let (smallest, others) = (sets[0], &sets[1..]);
    // The same key named twice is the same set: no need to look it up in itself.
    let in_all = |e: &Elem<'_>| {
        others
            .iter()
            .all(|o| std::ptr::eq(*o, smallest) || o.contains_elem(e))
    };
    match what {
        Inter::Count(limit) => {
            let mut n = 0;
            for e in smallest.iter() {
                if in_all(&e) {
                    n += 1;
                    if n == limit {
                        break;
                    }
                }
            }
            ctx.out.int(n as i64);
        }
        Inter::Reply => {
            let members: Vec<Elem<'_>> = smallest.iter().filter(|e| in_all(e)).collect();
            reply_members(ctx.out, members.iter().copied(), members.len());
        }
        Inter::Store(dst) => {
            // Valkey builds the result as an intset when the smallest set is one, else as a
            // listpack that converts as it grows, and makes it an intset at the end when every
            // member turned out to be an integer.
            let mut result = match smallest {
                SetObj::IntSet(_) => SetObj::IntSet(Vec::new()),
                _ => SetObj::Listpack(Vec::new()),
            };
            let mut only_integers = true;
            for e in smallest.iter().filter(|e| in_all(e)) {
                only_integers &= e.as_int().is_some() || crate::util::parse_i64(&e).is_some();
                result.insert(&e, limits);
            }
            if only_integers {
                result.maybe_to_intset(limits);
            }
            store(ctx, dst, result);
        }
    }
}

/// Writes a STORE result at `dst`, replacing whatever is there and clearing its TTL; an
/// empty result deletes `dst`. Replies the result's size.
fn store(ctx: &mut Ctx<'_>, dst: &[u8], result: SetObj) {
    let n = result.len();
    if n == 0 {
        if ctx.write(dst).is_some() {
            ctx.apply(Mutation::Del { key: dst });
        }
    } else {
        ctx.apply(Mutation::Restore {
            key: dst,
            value: Value::Set(Box::new(result)),
            expire_at: None,
        });
    }
    ctx.out.int(n as i64);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Diff,
}

pub fn sunion(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    sunion_diff(ctx, &args[1..], None, Op::Union);
}

pub fn sunionstore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    sunion_diff(ctx, &args[2..], Some(&args[1]), Op::Union);
}

pub fn sdiff(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    sunion_diff(ctx, &args[1..], None, Op::Diff);
}

pub fn sdiffstore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    sunion_diff(ctx, &args[2..], Some(&args[1]), Op::Diff);
}

/// Valkey's sunionDiffGenericCommand. The result is built as a set that starts as an intset
/// and converts as members join (so its encoding, and a reply's order, are Valkey's), with
/// Valkey's choice between its two SDIFF algorithms.
fn sunion_diff(ctx: &mut Ctx<'_>, keys: &[Bytes], dst: Option<&[u8]>, op: Op) {
    if check_sources(ctx, keys).is_err() {
        return;
    }
    let limits = ctx.shard.limits.set;
    let mut sets = sources(ctx.shard, ctx.now, keys);
    let first = sets[0];
    let same_as_first =
        |s: Option<&SetObj>| matches!((first, s), (Some(a), Some(b)) if std::ptr::eq(a, b));
    let sameset = sets[1..].iter().any(|s| same_as_first(*s));
    let mut result = SetObj::new();
    match (op, first) {
        (Op::Union, _) => {
            for s in sets.iter().flatten() {
                for e in s.iter() {
                    result.insert(&e, limits);
                }
            }
        }
        // The first set minus itself (named again later) is empty; so is a missing first set.
        (Op::Diff, None) => {}
        (Op::Diff, Some(_)) if sameset => {}
        (Op::Diff, Some(first)) => {
            let present = sets.iter().flatten().count();
            let one_work = present * first.len() / 2;
            let two_work: usize = sets.iter().flatten().map(|s| s.len()).sum();
            if one_work <= two_work {
                // Algorithm 1: each member of the first set not in any other, the others
                // biggest first (likelier to find a member early).
                sets[1..].sort_by_key(|s| std::cmp::Reverse(s.map_or(0, SetObj::len)));
                for e in first.iter() {
                    if !sets[1..].iter().flatten().any(|o| o.contains_elem(&e)) {
                        result.insert(&e, limits);
                    }
                }
            } else {
                // Algorithm 2: all of the first set, then take every other set's members out.
                for (j, s) in sets.iter().enumerate() {
                    let Some(s) = s else { continue };
                    for e in s.iter() {
                        if j == 0 {
                            result.insert(&e, limits);
                        } else {
                            result.remove(&e);
                        }
                    }
                    if result.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    match dst {
        Some(dst) => store(ctx, dst, result),
        None => reply_members(ctx.out, result.iter(), result.len()),
    }
}

/// SMOVE source destination member. Both keys are looked up before either type is checked,
/// and a missing source answers 0 whatever the destination holds, as in Valkey.
pub fn smove(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (src, dst, m) = (&args[1], &args[2], &args[3]);
    let src_kind = ctx.write(src).map(|e| e.value().kind());
    let dst_kind = ctx.write(dst).map(|e| e.value().kind());
    let Some(src_kind) = src_kind else {
        ctx.out.int(0);
        return;
    };
    if src_kind != Kind::Set || dst_kind.is_some_and(|k| k != Kind::Set) {
        ctx.out.error(WRONGTYPE);
        return;
    }
    let in_src = peek_set(ctx.shard, ctx.now, src).is_some_and(|x| x.contains(m));
    if src == dst || !in_src {
        ctx.out.int(in_src as i64);
        return;
    }
    let in_dst = peek_set(ctx.shard, ctx.now, dst).is_some_and(|x| x.contains(m));
    ctx.apply(Mutation::SetRem {
        key: src,
        members: &[m],
    });
    if !in_dst {
        ctx.apply(Mutation::SetAdd {
            key: dst,
            members: &[m],
        });
    }
    ctx.out.int(1);
}

/// SSCAN key cursor [MATCH pattern] [COUNT count]. As in Valkey, the cursor is checked first,
/// then the key, and only then the options; an intset or listpack is answered whole, with
/// cursor 0.
pub fn sscan(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(cursor) = parse_cursor(&args[2]) else {
        ctx.out.error(INVALID_CURSOR);
        return;
    };
    let Ok(x) = set_for_read(ctx.shard, ctx.now, ctx.out, &args[1]) else {
        return;
    };
    let Some(x) = x else {
        reply_scan_head(ctx.out, 0);
        ctx.out.array(0);
        return;
    };
    let opts = match parse_scan_options(&args[3..], ScanOf::Set) {
        Ok(o) => o,
        Err(e) => {
            ctx.out.error(&e);
            return;
        }
    };
    // Encode the page into a scratch buffer: the array header needs the count first.
    let mut page = Out::new(ctx.out.resp3);
    let mut found = 0;
    let next = x.scan(cursor, opts.count, |m| {
        if opts
            .pattern
            .as_ref()
            .is_none_or(|p| crate::util::glob_match(p, m, false))
        {
            found += 1;
            page.bulk(m);
        }
    });
    reply_scan_head(ctx.out, next);
    ctx.out.array(found);
    ctx.out.raw(&page.buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn row(name: &str) -> &'static CommandDef {
        COMMANDS
            .iter()
            .find(|d| d.name == name)
            .expect("a set command")
    }

    #[test]
    fn sintercard_keys_are_the_counted_ones() {
        let keys =
            |a: &[&str]| -> Vec<usize> { row("sintercard").keys.positions(&args(a)).collect() };
        assert_eq!(keys(&["sintercard", "2", "a", "b", "LIMIT", "1"]), [2, 3]);
        assert_eq!(keys(&["sintercard", "1", "a"]), [2]);
        // A count the command will refuse names no keys (it replies the error itself).
        assert!(keys(&["sintercard", "3", "a", "b"]).is_empty());
        assert!(keys(&["sintercard", "0", "a"]).is_empty());
        assert!(keys(&["sintercard", "-1", "a"]).is_empty());
        assert!(keys(&["sintercard", "x", "a"]).is_empty());
        let (f, l, s) = {
            let k = row("sintercard").keys;
            (k.first, k.last, k.step)
        };
        assert_eq!(
            (f, l, s),
            (0, 0, 0),
            "Valkey's legacy triple for SINTERCARD"
        );
    }

    #[test]
    fn store_and_move_rows_name_all_their_keys() {
        let pos =
            |name: &str, a: &[&str]| -> Vec<usize> { row(name).keys.positions(&args(a)).collect() };
        assert_eq!(
            pos("sinterstore", &["sinterstore", "d", "a", "b"]),
            [1, 2, 3]
        );
        assert_eq!(pos("sdiff", &["sdiff", "a", "b"]), [1, 2]);
        assert_eq!(pos("smove", &["smove", "a", "b", "m"]), [1, 2]);
        assert_eq!(pos("sadd", &["sadd", "k", "m1", "m2"]), [1]);
    }
}
