//! Sorted sets: the commands, their table rows and their handlers. This file holds the
//! member commands (ZADD, ZINCRBY, ZREM, ZSCORE, ZRANK...), the pops, ZRANDMEMBER and ZSCAN;
//! `range` holds the range commands (ZRANGE and its older forms, ZCOUNT, ZREMRANGEBY*...),
//! `algebra` the set operations (ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD).
//!
//! Writes go through three records: `ZAdd` with absolute scores (ZINCRBY's result, never the
//! increment), `ZRem` naming members, and `ZRemRange` naming a rank range for pops and range
//! removals; a STORE command replaces its destination with `Restore`.

mod algebra;
mod range;

use bytes::Bytes;
use hashbrown::HashMap;

use super::Exec::Shard as S;
use super::flags::{FAST, READONLY, WRITE};
use super::keyspace::{INVALID_CURSOR, ScanOf, parse_cursor, parse_scan_options, reply_scan_head};
use super::table::{K1, RF, W, WF, def, k, kn};
use super::{CommandDef, Ctx, KeyAccess, NOT_FLOAT, WRONGTYPE, is};
use crate::protocol::Out;
use crate::shard::{Mutation, Shard, ValueRef, ZSetObj};

/// The group COMMAND DOCS reports (Valkey's "sorted_set" group prints as "sorted-set").
const G: &str = "sorted-set";

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "zadd",
        -4,
        WF,
        K1,
        G,
        "1.2.0",
        "Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.",
        "O(log(N)) for each item added, where N is the number of elements in the sorted set.",
        S(zadd),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "zcard",
        2,
        RF,
        K1,
        G,
        "1.2.0",
        "Returns the number of members in a sorted set.",
        "O(1)",
        S(zcard),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "zcount",
        4,
        RF,
        K1,
        G,
        "2.0.0",
        "Returns the count of members in a sorted set that have scores within a range.",
        "O(log(N)) with N being the number of elements in the sorted set.",
        S(range::zcount),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zdiff",
        -3,
        READONLY,
        kn(0, 0, 0, 1),
        G,
        "6.2.0",
        "Returns the difference between multiple sorted sets.",
        "O(L + (N-K)log(N)) worst case where L is the total number of elements in all the sets, N is the size of the first set, and K is the size of the result set.",
        S(algebra::zdiff),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zdiffstore",
        -4,
        W,
        kn(1, 1, 1, 2),
        G,
        "6.2.0",
        "Stores the difference of multiple sorted sets in a key.",
        "O(L + (N-K)log(N)) worst case where L is the total number of elements in all the sets, N is the size of the first set, and K is the size of the result set.",
        S(algebra::zdiffstore),
    )
    .key_access(KeyAccess::STORE),
    def(
        "zincrby",
        4,
        WF,
        K1,
        G,
        "1.2.0",
        "Increments the score of a member in a sorted set.",
        "O(log(N)) where N is the number of elements in the sorted set.",
        S(zincrby),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "zinter",
        -3,
        READONLY,
        kn(0, 0, 0, 1),
        G,
        "6.2.0",
        "Returns the intersect of multiple sorted sets.",
        "O(N*K)+O(M*log(M)) worst case with N being the smallest input sorted set, K being the number of input sorted sets and M being the number of elements in the resulting sorted set.",
        S(algebra::zinter),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zintercard",
        -3,
        READONLY,
        kn(0, 0, 0, 1),
        G,
        "7.0.0",
        "Returns the number of members of the intersect of multiple sorted sets.",
        "O(N*K) worst case with N being the smallest input sorted set, K being the number of input sorted sets.",
        S(algebra::zintercard),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zinterstore",
        -4,
        W,
        kn(1, 1, 1, 2),
        G,
        "2.0.0",
        "Stores the intersect of multiple sorted sets in a key.",
        "O(N*K)+O(M*log(M)) worst case with N being the smallest input sorted set, K being the number of input sorted sets and M being the number of elements in the resulting sorted set.",
        S(algebra::zinterstore),
    )
    .key_access(KeyAccess::STORE),
    def(
        "zlexcount",
        4,
        RF,
        K1,
        G,
        "2.8.9",
        "Returns the number of members in a sorted set within a lexicographical range.",
        "O(log(N)) with N being the number of elements in the sorted set.",
        S(range::zlexcount),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zmpop",
        -4,
        WRITE,
        kn(0, 0, 0, 1),
        G,
        "7.0.0",
        "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped.",
        "O(K) + O(M*log(N)) where K is the number of provided keys, N being the number of elements in the sorted set, and M being the number of elements popped.",
        S(zmpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "bzpopmin",
        -3,
        WRITE | FAST | super::flags::BLOCKING,
        k(1, -2, 1),
        G,
        "5.0.0",
        "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
        "O(log(N)) with N being the number of elements in the sorted set.",
        S(bzpopmin),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "bzpopmax",
        -3,
        WRITE | FAST | super::flags::BLOCKING,
        k(1, -2, 1),
        G,
        "5.0.0",
        "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise.  Deletes the sorted set if the last element was popped.",
        "O(log(N)) with N being the number of elements in the sorted set.",
        S(bzpopmax),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "bzmpop",
        -5,
        WRITE | super::flags::BLOCKING,
        kn(0, 0, 0, 2),
        G,
        "7.0.0",
        "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
        "O(K) + O(M*log(N)) where K is the number of provided keys, N being the number of elements in the sorted set, and M being the number of elements popped.",
        S(bzmpop),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "zmscore",
        -3,
        RF,
        K1,
        G,
        "6.2.0",
        "Returns the score of one or more members in a sorted set.",
        "O(N) where N is the number of members being requested.",
        S(zmscore),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zpopmax",
        -2,
        WRITE | FAST,
        K1,
        G,
        "5.0.0",
        "Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
        "O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped.",
        S(zpopmax),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "zpopmin",
        -2,
        WRITE | FAST,
        K1,
        G,
        "5.0.0",
        "Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
        "O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped.",
        S(zpopmin),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "zrandmember",
        -2,
        READONLY,
        K1,
        G,
        "6.2.0",
        "Returns one or more random members from a sorted set.",
        "O(N) where N is the number of members returned",
        S(zrandmember),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrange",
        -4,
        READONLY,
        K1,
        G,
        "1.2.0",
        "Returns members in a sorted set within a range of indexes.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.",
        S(range::zrange),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrangebylex",
        -4,
        READONLY,
        K1,
        G,
        "2.8.9",
        "Returns members in a sorted set within a lexicographical range.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
        S(range::zrangebylex),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrangebyscore",
        -4,
        READONLY,
        K1,
        G,
        "1.0.5",
        "Returns members in a sorted set within a range of scores.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
        S(range::zrangebyscore),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrangestore",
        -5,
        W,
        k(1, 2, 1),
        G,
        "6.2.0",
        "Stores a range of members from sorted set in a key.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements stored into the destination key.",
        S(range::zrangestore),
    )
    .key_access(KeyAccess::STORE),
    def(
        "zrank",
        -3,
        RF,
        K1,
        G,
        "2.0.0",
        "Returns the index of a member in a sorted set ordered by ascending scores.",
        "O(log(N))",
        S(zrank),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrem",
        -3,
        WRITE | FAST,
        K1,
        G,
        "1.2.0",
        "Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.",
        "O(M*log(N)) with N being the number of elements in the sorted set and M the number of elements to be removed.",
        S(zrem),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "zremrangebylex",
        4,
        WRITE,
        K1,
        G,
        "2.8.9",
        "Removes members in a sorted set within a lexicographical range. Deletes the sorted set if all members were removed.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation.",
        S(range::zremrangebylex),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "zremrangebyrank",
        4,
        WRITE,
        K1,
        G,
        "2.0.0",
        "Removes members in a sorted set within a range of indexes. Deletes the sorted set if all members were removed.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation.",
        S(range::zremrangebyrank),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "zremrangebyscore",
        4,
        WRITE,
        K1,
        G,
        "1.2.0",
        "Removes members in a sorted set within a range of scores. Deletes the sorted set if all members were removed.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation.",
        S(range::zremrangebyscore),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "zrevrange",
        -4,
        READONLY,
        K1,
        G,
        "1.2.0",
        "Returns members in a sorted set within a range of indexes in reverse order.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.",
        S(range::zrevrange),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrevrangebylex",
        -4,
        READONLY,
        K1,
        G,
        "2.8.9",
        "Returns members in a sorted set within a lexicographical range in reverse order.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
        S(range::zrevrangebylex),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrevrangebyscore",
        -4,
        READONLY,
        K1,
        G,
        "2.2.0",
        "Returns members in a sorted set within a range of scores in reverse order.",
        "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
        S(range::zrevrangebyscore),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zrevrank",
        -3,
        RF,
        K1,
        G,
        "2.0.0",
        "Returns the index of a member in a sorted set ordered by descending scores.",
        "O(log(N))",
        S(zrevrank),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zscan",
        -3,
        READONLY,
        K1,
        G,
        "2.8.0",
        "Iterates over members and scores of a sorted set.",
        "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection..",
        S(zscan),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zscore",
        3,
        RF,
        K1,
        G,
        "1.2.0",
        "Returns the score of a member in a sorted set.",
        "O(1)",
        S(zscore),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zunion",
        -3,
        READONLY,
        kn(0, 0, 0, 1),
        G,
        "6.2.0",
        "Returns the union of multiple sorted sets.",
        "O(N)+O(M*log(M)) with N being the sum of the sizes of the input sorted sets, and M being the number of elements in the resulting sorted set.",
        S(algebra::zunion),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "zunionstore",
        -4,
        W,
        kn(1, 1, 1, 2),
        G,
        "2.0.0",
        "Stores the union of multiple sorted sets in a key.",
        "O(N)+O(M log(M)) with N being the sum of the sizes of the input sorted sets, and M being the number of elements in the resulting sorted set.",
        S(algebra::zunionstore),
    )
    .key_access(KeyAccess::STORE),
];

/// The sorted set at `key` for reading (hit/miss counted, lazy expiry): Ok(None) when
/// missing, Err after replying WRONGTYPE. Takes split borrows so the caller can read the set
/// in place while writing the reply to `out`.
fn zset_for_read<'s>(
    shard: &'s mut Shard,
    now: u64,
    out: &mut Out,
    key: &[u8],
) -> Result<Option<&'s ZSetObj>, ()> {
    super::typed(
        shard.get_read(key, now).map(|e| e.value()),
        out,
        ValueRef::zset,
    )
}

/// For writes (lazy expiry, no hit/miss accounting): whether `key` holds a sorted set
/// (false when missing); Err after replying WRONGTYPE.
fn exists_for_write(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<bool, ()> {
    match ctx.write(key).map(|e| e.value()) {
        None => Ok(false),
        Some(ValueRef::ZSet(_)) => Ok(true),
        Some(_) => {
            ctx.out.error(WRONGTYPE);
            Err(())
        }
    }
}

/// The sorted set at `key`, without side effects (None when missing or another type).
fn peek<'s>(shard: &'s Shard, now: u64, key: &[u8]) -> Option<&'s ZSetObj> {
    match shard.peek(key, now).map(|e| e.value()) {
        Some(ValueRef::ZSet(z)) => Some(z),
        _ => None,
    }
}

/// How a list of (member, score) pairs is replied: members alone, or with scores — a flat
/// array in RESP2, and in RESP3 a two-element array per pair (Valkey 7+), or nested in both
/// protocols (ZMPOP).
#[derive(Clone, Copy)]
struct Shape {
    scores: bool,
    nested: bool,
}

impl Shape {
    fn new(out: &Out, scores: bool) -> Shape {
        Shape {
            scores,
            nested: scores && out.resp3,
        }
    }

    fn header(self, out: &mut Out, n: usize) {
        out.array(if self.scores && !self.nested {
            n * 2
        } else {
            n
        });
    }

    fn item(self, out: &mut Out, member: &[u8], score: f64) {
        if self.nested {
            out.array(2);
        }
        out.bulk(member);
        if self.scores {
            out.double(score);
        }
    }
}

pub fn zadd(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zadd_generic(ctx, args, false);
}

pub fn zincrby(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zadd_generic(ctx, args, true);
}

#[derive(Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// ZADD and ZINCRBY, as Valkey's zaddGenericCommand: options, then the pairs (all scores
/// parsed before anything changes), then each pair in turn against the set as the earlier
/// pairs of the same command left it.
fn zadd_generic(ctx: &mut Ctx<'_>, args: &[Bytes], incr: bool) {
    let mut f = AddFlags {
        incr,
        ..AddFlags::default()
    };
    // ZINCRBY's arguments go through the same option scan (Valkey shares the parser).
    let mut i = 2;
    while let Some(a) = args.get(i) {
        let flag = match () {
            _ if is(a, "NX") => &mut f.nx,
            _ if is(a, "XX") => &mut f.xx,
            _ if is(a, "CH") => &mut f.ch,
            _ if is(a, "INCR") => &mut f.incr,
            _ if is(a, "GT") => &mut f.gt,
            _ if is(a, "LT") => &mut f.lt,
            _ => break,
        };
        *flag = true;
        i += 1;
    }
    let rest = &args[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        ctx.syntax_error();
        return;
    }
    if f.nx && f.xx {
        ctx.out
            .error("ERR XX and NX options at the same time are not compatible");
        return;
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        ctx.out
            .error("ERR GT, LT, and/or NX options at the same time are not compatible");
        return;
    }
    if f.incr && rest.len() > 2 {
        ctx.out
            .error("ERR INCR option supports a single increment-element pair");
        return;
    }
    let mut pairs: Vec<(f64, &[u8])> = Vec::with_capacity(rest.len() / 2);
    for p in rest.chunks_exact(2) {
        let Some(score) = crate::util::parse_f64(&p[0]) else {
            ctx.out.error(NOT_FLOAT);
            return;
        };
        pairs.push((score, &p[1][..]));
    }
    let key = &args[1];
    let Ok(exists) = exists_for_write(ctx, key) else {
        return;
    };
    if !exists && f.xx {
        if f.incr {
            ctx.out.nil();
        } else {
            ctx.out.int(0);
        }
        return;
    }

    let limits = ctx.shard.limits.zset;
    let z = peek(ctx.shard, ctx.now, key);
    // Scores this command set so far, for members named more than once.
    let mut touched: HashMap<&[u8], f64> = HashMap::new();
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0i64);
    let mut effective: Vec<(f64, &[u8])> = Vec::new();
    let mut last = 0.0;
    for &(score, m) in &pairs {
        let current = match touched.get(m) {
            Some(&s) => Some(s),
            None => z.and_then(|z| z.score(m)),
        };
        let new = match current {
            Some(_) if f.nx => continue,
            Some(cur) => {
                let new = if f.incr { score + cur } else { score };
                if new.is_nan() {
                    ctx.out.error("ERR resulting score is not a number (NaN)");
                    return;
                }
                if (f.lt && new >= cur) || (f.gt && new <= cur) {
                    continue;
                }
                if new != cur {
                    updated += 1;
                    effective.push((new, m));
                }
                new
            }
            None if f.xx => continue,
            None => {
                added += 1;
                effective.push((score, m));
                score
            }
        };
        processed += 1;
        last = new;
        if pairs.len() > 1 {
            touched.insert(m, new);
        }
    }
    // Without conditions every pair sets its score, so the record can name them all: the
    // apply then sizes the encoding by the whole write, as Valkey's ZADD does.
    let plain = !(f.nx || f.xx || f.gt || f.lt || f.incr);
    let longest = pairs.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
    let converts =
        z.is_none_or(|z| z.encoding() == "listpack") && !limits.fits_listpack(pairs.len(), longest);
    let record: &[(f64, &[u8])] = if plain && (!effective.is_empty() || converts) {
        &pairs
    } else {
        &effective
    };
    if !record.is_empty() {
        ctx.apply(Mutation::ZAdd { key, pairs: record });
    }
    if f.incr {
        if processed > 0 {
            ctx.out.double(last);
        } else {
            ctx.out.nil();
        }
    } else {
        ctx.out.int(if f.ch { added + updated } else { added });
    }
}

pub fn zrem(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    match exists_for_write(ctx, key) {
        Err(()) => return,
        Ok(false) => {
            ctx.out.int(0);
            return;
        }
        Ok(true) => {}
    }
    let z = peek(ctx.shard, ctx.now, key).expect("checked above");
    // A member named twice goes once.
    let mut seen: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::new();
    let gone: Vec<&[u8]> = args[2..]
        .iter()
        .map(|m| &m[..])
        .filter(|m| z.score(m).is_some() && seen.insert(m))
        .collect();
    if !gone.is_empty() {
        ctx.apply(Mutation::ZRem {
            key,
            members: &gone,
        });
    }
    ctx.out.int(gone.len() as i64);
}

pub fn zcard(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    if let Ok(z) = zset_for_read(shard, *now, out, &args[1]) {
        out.int(z.map_or(0, |z| z.len()) as i64);
    }
}

pub fn zscore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    if let Ok(z) = zset_for_read(shard, *now, out, &args[1]) {
        match z.and_then(|z| z.score(&args[2])) {
            Some(s) => out.double(s),
            None => out.nil(),
        }
    }
}

pub fn zmscore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(z) = zset_for_read(shard, *now, out, &args[1]) else {
        return;
    };
    out.array(args.len() - 2);
    for m in &args[2..] {
        match z.and_then(|z| z.score(m)) {
            Some(s) => out.double(s),
            None => out.nil(),
        }
    }
}

pub fn zrank(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrank_generic(ctx, args, false);
}

pub fn zrevrank(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrank_generic(ctx, args, true);
}

/// ZRANK / ZREVRANK key member [WITHSCORE].
fn zrank_generic(ctx: &mut Ctx<'_>, args: &[Bytes], reverse: bool) {
    if args.len() > 4 {
        super::arity_error(ctx.out, if reverse { "zrevrank" } else { "zrank" });
        return;
    }
    let with_score = args.len() == 4;
    if with_score && !is(&args[3], "WITHSCORE") {
        ctx.syntax_error();
        return;
    }
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(z) = zset_for_read(shard, *now, out, &args[1]) else {
        return;
    };
    let found = z.and_then(|z| {
        let rank = z.rank(&args[2])?;
        let (_, score) = z.get(rank)?;
        Some((if reverse { z.len() - 1 - rank } else { rank }, score))
    });
    match (found, with_score) {
        (Some((rank, score)), true) => {
            out.array(2);
            out.int(rank as i64);
            out.double(score);
        }
        (Some((rank, _)), false) => out.int(rank as i64),
        (None, true) => out.nil_array(),
        (None, false) => out.nil(),
    }
}

// The blocking pops: the handler is the non-blocking attempt (a null when every key is
// empty); the engine blocks the connection and retries (`engine::blocking`).

/// BZPOPMIN / BZPOPMAX key [key ...] timeout: [key, member, score] from the first non-empty
/// sorted set.
fn bzpop(ctx: &mut Ctx<'_>, args: &[Bytes], max: bool) {
    if let Err(e) = super::parse_timeout(&args[args.len() - 1]) {
        ctx.out.error(e);
        return;
    }
    for key in &args[1..args.len() - 1] {
        match pop_scored(ctx, key, max, 1) {
            Popped::Missing => continue,
            Popped::WrongType => {
                ctx.out.error(WRONGTYPE);
                return;
            }
            Popped::Members(m) => {
                let Some((member, score)) = m.into_iter().next() else {
                    continue;
                };
                ctx.out.array(3);
                ctx.out.bulk(key);
                ctx.out.bulk(&member);
                ctx.out.double(score);
                return;
            }
        }
    }
    ctx.out.nil_array();
}

pub fn bzpopmin(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    bzpop(ctx, args, false);
}

pub fn bzpopmax(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    bzpop(ctx, args, true);
}

/// BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]: ZMPOP after the timeout.
pub fn bzmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if let Err(e) = super::parse_timeout(&args[1]) {
        ctx.out.error(e);
        return;
    }
    let mut rest = Vec::with_capacity(args.len() - 1);
    rest.push(args[0].clone());
    rest.extend_from_slice(&args[2..]);
    zmpop(ctx, &rest);
}

/// What [`pop_scored`] found at a key.
pub enum Popped {
    Missing,
    WrongType,
    /// The popped members with their scores, in pop order (possibly none, for a count of 0).
    Members(Vec<(Box<[u8]>, f64)>),
}

/// Pops up to `count` members from the low end (or the high end, `max`) of the sorted set at
/// `key` with one `ZRemRange` record, and returns them in pop order; writes no reply. The
/// blocking pops (BZPOPMIN, BZPOPMAX, BZMPOP) call this once their key holds data.
pub fn pop_scored(ctx: &mut Ctx<'_>, key: &[u8], max: bool, count: usize) -> Popped {
    match ctx.write(key).map(|e| e.value()) {
        None => return Popped::Missing,
        Some(ValueRef::ZSet(_)) => {}
        Some(_) => return Popped::WrongType,
    }
    let z = peek(ctx.shard, ctx.now, key).expect("a sorted set, checked above");
    let len = z.len();
    let n = count.min(len);
    let (start, end) = if max { (len - n, len) } else { (0, n) };
    let mut popped: Vec<(Box<[u8]>, f64)> =
        z.range(start, end).map(|(m, s)| (m.into(), s)).collect();
    if max {
        popped.reverse();
    }
    if n > 0 {
        ctx.apply(Mutation::ZRemRange { key, start, end });
    }
    Popped::Members(popped)
}

pub fn zpopmin(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zpop(ctx, args, false);
}

pub fn zpopmax(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zpop(ctx, args, true);
}

const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";

/// ZPOPMIN / ZPOPMAX key [count]: a flat member, score array, except that RESP3 nests the
/// pairs when a count is given.
fn zpop(ctx: &mut Ctx<'_>, args: &[Bytes], max: bool) {
    if args.len() > 3 {
        ctx.syntax_error();
        return;
    }
    let count = match args.get(2) {
        None => None,
        Some(a) => match super::arg_i64(a) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => {
                ctx.out.error(NOT_POSITIVE);
                return;
            }
        },
    };
    match pop_scored(ctx, &args[1], max, count.unwrap_or(1)) {
        Popped::Missing => ctx.out.array(0),
        Popped::WrongType => ctx.wrong_type(),
        Popped::Members(popped) => {
            let shape = Shape {
                scores: true,
                nested: count.is_some() && ctx.out.resp3,
            };
            shape.header(ctx.out, popped.len());
            for (m, s) in &popped {
                shape.item(ctx.out, m, *s);
            }
        }
    }
}

/// ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]: pops from the first non-empty key and
/// replies [key, [[member, score], ...]] (nested in both protocols), or a null array.
pub fn zmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let numkeys = match super::arg_i64(&args[1]) {
        Some(n) if n >= 1 => n as u64,
        _ => {
            ctx.out.error("ERR numkeys should be greater than 0");
            return;
        }
    };
    let where_at = numkeys.saturating_add(2);
    if where_at >= args.len() as u64 {
        ctx.syntax_error();
        return;
    }
    let where_at = where_at as usize;
    let max = if is(&args[where_at], "MAX") {
        true
    } else if is(&args[where_at], "MIN") {
        false
    } else {
        ctx.syntax_error();
        return;
    };
    let mut count = None;
    let mut j = where_at + 1;
    while j < args.len() {
        if count.is_none() && is(&args[j], "COUNT") && j + 1 < args.len() {
            match super::arg_i64(&args[j + 1]) {
                Some(n) if n >= 1 => count = Some(n as usize),
                _ => {
                    ctx.out.error("ERR count should be greater than 0");
                    return;
                }
            }
            j += 2;
        } else {
            ctx.syntax_error();
            return;
        }
    }
    for key in &args[2..where_at] {
        match pop_scored(ctx, key, max, count.unwrap_or(1)) {
            Popped::Missing => continue,
            Popped::WrongType => ctx.wrong_type(),
            Popped::Members(popped) => {
                let out = &mut *ctx.out;
                out.array(2);
                out.bulk(key);
                out.array(popped.len());
                for (m, s) in &popped {
                    out.array(2);
                    out.bulk(m);
                    out.double(*s);
                }
            }
        }
        return;
    }
    ctx.out.nil_array();
}

/// ZRANDMEMBER key [count [WITHSCORES]], with Valkey's argument checks in Valkey's order.
pub fn zrandmember(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Ok(parsed) = super::hash::rand_count(ctx, args, "WITHSCORES") else {
        return;
    };
    let count = parsed.map(|(c, _)| c);
    let with_scores = parsed.is_some_and(|(_, w)| w);
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(z) = zset_for_read(shard, *now, out, &args[1]) else {
        return;
    };
    let Some(count) = count else {
        match z.and_then(|z| z.random()) {
            Some((m, _)) => out.bulk(m),
            None => out.nil(),
        }
        return;
    };
    let Some(z) = z.filter(|_| count != 0) else {
        out.array(0);
        return;
    };
    let shape = Shape::new(out, with_scores);
    let len = z.len();
    if count < 0 || count == 1 {
        // Independent picks, repeats allowed (a count of 1 is one pick either way).
        let n = count.unsigned_abs() as usize;
        shape.header(out, n);
        for _ in 0..n {
            let (m, s) = z.random().expect("a stored sorted set is never empty");
            shape.item(out, m, s);
        }
    } else if count as usize >= len {
        // The whole set, highest first (Valkey walks a sorted set from its tail here).
        shape.header(out, len);
        for (m, s) in z.iter().rev() {
            shape.item(out, m, s);
        }
    } else {
        let n = count as usize;
        shape.header(out, n);
        let mut emit = |rank: usize| {
            let (m, s) = z.get(rank).expect("a rank below the length");
            shape.item(out, m, s);
        };
        if n * 3 <= len {
            // Few of many (Valkey's CASE 4): random ranks, skipping repeats.
            let mut picked = hashbrown::HashSet::with_capacity(n);
            while picked.len() < n {
                let rank = fastrand::usize(..len);
                if picked.insert(rank) {
                    emit(rank);
                }
            }
        } else {
            // Most of the set: a partial Fisher-Yates shuffle of the ranks.
            let mut ranks: Vec<usize> = (0..len).collect();
            for i in 0..n {
                let j = i + fastrand::usize(..len - i);
                ranks.swap(i, j);
                emit(ranks[i]);
            }
        }
    }
}

/// ZSCAN key cursor [MATCH pattern] [COUNT count] [NOSCORES]: the cursor is checked first,
/// then the key, then the options (as in Valkey). Scores come as bulk strings in both
/// protocols, as Valkey's scan replies do.
pub fn zscan(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(cursor) = parse_cursor(&args[2]) else {
        ctx.out.error(INVALID_CURSOR);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let z = match zset_for_read(shard, *now, out, &args[1]) {
        Err(()) => return,
        Ok(None) => {
            reply_scan_head(out, 0);
            out.array(0);
            return;
        }
        Ok(Some(z)) => z,
    };
    let opts = match parse_scan_options(&args[3..], ScanOf::ZSet) {
        Ok(o) => o,
        Err(e) => {
            out.error(&e);
            return;
        }
    };
    // Encode the page into a scratch buffer: the array header needs the count first.
    let mut page = Out::new(out.resp3);
    let mut found = 0;
    let mut text = Vec::with_capacity(24);
    let next = z.scan(cursor, opts.count, |m, s| {
        if opts
            .pattern
            .as_ref()
            .is_none_or(|p| crate::util::glob_match(p, m, false))
        {
            found += 1;
            page.bulk(m);
            if !opts.no_values {
                text.clear();
                crate::util::format_double(s, &mut text);
                page.bulk(&text);
            }
        }
    });
    reply_scan_head(out, next);
    out.array(if opts.no_values { found } else { found * 2 });
    out.raw(&page.buf);
}
