//! Ranges of a sorted set — by rank, by score (`(` exclusive bounds, `-inf`/`+inf`), by lex
//! (`[`/`(`/`-`/`+`) — for ZRANGE and its older forms, ZRANGESTORE, ZCOUNT, ZLEXCOUNT and
//! ZREMRANGEBY*. A score or lex range resolves to a span of ranks (`start..end`), found by
//! binary search on the set's order.

use std::ffi::c_char;

use bytes::Bytes;

use super::{Shape, exists_for_write, peek, zset_for_read};
use crate::command::{Ctx, NOT_INTEGER, arg_i64, is};
use crate::shard::{Mutation, Value, ZSetObj};

const NOT_FLOAT_RANGE: &str = "ERR min or max is not a float";
const NOT_LEX_RANGE: &str = "ERR min or max not valid string range item";

/// A score interval, as Valkey's zrangespec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRange {
    min: f64,
    max: f64,
    min_ex: bool,
    max_ex: bool,
}

/// A bound as Valkey's zslParseRange reads it: C `strtod` over the whole argument (up to a
/// NUL byte, as C sees it), so leading spaces, hex floats, `inf`/`infinity` and overflow to
/// infinity are accepted while trailing bytes and NaN are not; the empty string reads as 0.
fn strtod(arg: &[u8]) -> Option<f64> {
    let mut buf = Vec::with_capacity(arg.len() + 1);
    buf.extend_from_slice(arg);
    buf.push(0);
    let mut end: *mut c_char = std::ptr::null_mut();
    // SAFETY: `buf` is NUL-terminated and outlives the call; strtod only reads up to the NUL
    // and sets `end` to a position inside `buf`.
    let v = unsafe { libc::strtod(buf.as_ptr().cast(), &mut end) };
    let used = end as usize - buf.as_ptr() as usize;
    (buf[used] == 0 && !v.is_nan()).then_some(v)
}

impl ScoreRange {
    pub fn parse(min: &[u8], max: &[u8]) -> Option<ScoreRange> {
        let bound = |a: &[u8]| match a.split_first() {
            Some((b'(', rest)) => Some((strtod(rest)?, true)),
            _ => Some((strtod(a)?, false)),
        };
        let (min, min_ex) = bound(min)?;
        let (max, max_ex) = bound(max)?;
        Some(ScoreRange {
            min,
            max,
            min_ex,
            max_ex,
        })
    }

    fn above_min(&self, s: f64) -> bool {
        if self.min_ex {
            s > self.min
        } else {
            s >= self.min
        }
    }

    fn below_max(&self, s: f64) -> bool {
        if self.max_ex {
            s < self.max
        } else {
            s <= self.max
        }
    }

    /// The ranks `start..end` of the members in range.
    pub fn ranks(&self, z: &ZSetObj) -> (usize, usize) {
        let start = z.partition_point(|s, _| !self.above_min(s));
        let end = z.partition_point(|s, _| self.below_max(s));
        (start, end.max(start))
    }
}

/// One end of a lex range.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lex<'a> {
    /// `-`: below every string.
    Least,
    /// `+`: above every string.
    Most,
    /// `[value`.
    Incl(&'a [u8]),
    /// `(value`.
    Excl(&'a [u8]),
}

impl<'a> Lex<'a> {
    fn parse(arg: &'a [u8]) -> Option<Lex<'a>> {
        match arg {
            b"-" => Some(Lex::Least),
            b"+" => Some(Lex::Most),
            [b'[', rest @ ..] => Some(Lex::Incl(rest)),
            [b'(', rest @ ..] => Some(Lex::Excl(rest)),
            _ => None,
        }
    }
}

/// A lex interval, as Valkey's zlexrangespec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexRange<'a> {
    min: Lex<'a>,
    max: Lex<'a>,
}

impl<'a> LexRange<'a> {
    pub fn parse(min: &'a [u8], max: &'a [u8]) -> Option<LexRange<'a>> {
        Some(LexRange {
            min: Lex::parse(min)?,
            max: Lex::parse(max)?,
        })
    }

    fn above_min(&self, m: &[u8]) -> bool {
        match self.min {
            Lex::Least => true,
            Lex::Most => false,
            Lex::Incl(v) => m >= v,
            Lex::Excl(v) => m > v,
        }
    }

    fn below_max(&self, m: &[u8]) -> bool {
        match self.max {
            Lex::Least => false,
            Lex::Most => true,
            Lex::Incl(v) => m <= v,
            Lex::Excl(v) => m < v,
        }
    }

    /// Whether no string can be in range (Valkey's first test in zslIsInLexRange).
    fn is_empty(&self) -> bool {
        use std::cmp::Ordering::*;
        let rank = |b: Lex<'_>| match b {
            Lex::Least => 0,
            Lex::Incl(_) | Lex::Excl(_) => 1,
            Lex::Most => 2,
        };
        let text = |b: Lex<'a>| match b {
            Lex::Incl(v) | Lex::Excl(v) => v,
            _ => &[][..],
        };
        let cmp = rank(self.min)
            .cmp(&rank(self.max))
            .then_with(|| text(self.min).cmp(text(self.max)));
        let exclusive = |b: Lex<'_>| !matches!(b, Lex::Incl(_));
        cmp == Greater || (cmp == Equal && (exclusive(self.min) || exclusive(self.max)))
    }

    /// The ranks `start..end` of the members in range. Meaningful when all scores are equal,
    /// as Valkey documents; with mixed scores Valkey's answer hangs on its skiplist's shape,
    /// and only its first checks are reproduced here (the last member must reach the minimum
    /// and the first must stay under the maximum).
    pub fn ranks(&self, z: &ZSetObj) -> (usize, usize) {
        let (Some((first, _)), Some((last, _))) = (z.get(0), z.get(z.len().saturating_sub(1)))
        else {
            return (0, 0);
        };
        if self.is_empty() || !self.above_min(last) || !self.below_max(first) {
            return (0, 0);
        }
        let start = z.partition_point(|_, m| !self.above_min(m));
        let end = z.partition_point(|_, m| self.below_max(m));
        (start, end.max(start))
    }
}

/// Valkey's rank sanitizing (ZRANGE, ZREMRANGEBYRANK): negative indexes count from the end,
/// then clamp; None when the range is empty. Returns inclusive ranks.
fn clamp_ranks(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let end = if end < 0 { end + len } else { end };
    if start > end || start >= len {
        return None;
    }
    Some((start as usize, end.min(len - 1) as usize))
}

pub fn zcount(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(range) = ScoreRange::parse(&args[2], &args[3]) else {
        ctx.out.error(NOT_FLOAT_RANGE);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    if let Ok(z) = zset_for_read(shard, *now, out, &args[1]) {
        let (start, end) = z.map_or((0, 0), |z| range.ranks(z));
        out.int((end - start) as i64);
    }
}

pub fn zlexcount(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(range) = LexRange::parse(&args[2], &args[3]) else {
        ctx.out.error(NOT_LEX_RANGE);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    if let Ok(z) = zset_for_read(shard, *now, out, &args[1]) {
        let (start, end) = z.map_or((0, 0), |z| range.ranks(z));
        out.int((end - start) as i64);
    }
}

pub fn zremrangebyrank(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let (Some(start), Some(end)) = (arg_i64(&args[2]), arg_i64(&args[3])) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    zremrange(ctx, args, |z| match clamp_ranks(start, end, z.len()) {
        Some((s, e)) => (s, e + 1),
        None => (0, 0),
    });
}

pub fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(range) = ScoreRange::parse(&args[2], &args[3]) else {
        ctx.out.error(NOT_FLOAT_RANGE);
        return;
    };
    zremrange(ctx, args, |z| range.ranks(z));
}

pub fn zremrangebylex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(range) = LexRange::parse(&args[2], &args[3]) else {
        ctx.out.error(NOT_LEX_RANGE);
        return;
    };
    zremrange(ctx, args, |z| range.ranks(z));
}

/// Removes the ranks `ranks` picks (one `ZRemRange` record) and replies how many went.
fn zremrange(ctx: &mut Ctx<'_>, args: &[Bytes], ranks: impl FnOnce(&ZSetObj) -> (usize, usize)) {
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
    let (start, end) = ranks(z);
    if end > start {
        ctx.apply(Mutation::ZRemRange { key, start, end });
    }
    ctx.out.int((end - start) as i64);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum By {
    /// ZRANGE / ZRANGESTORE before their options are read: rank unless BYSCORE or BYLEX.
    Auto,
    Rank,
    Score,
    Lex,
}

pub fn zrange(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, false, By::Auto, None);
}

pub fn zrangestore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, true, By::Auto, None);
}

pub fn zrevrange(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, false, By::Rank, Some(true));
}

pub fn zrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, false, By::Score, Some(false));
}

pub fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, false, By::Score, Some(true));
}

pub fn zrangebylex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, false, By::Lex, Some(false));
}

pub fn zrevrangebylex(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    zrange_generic(ctx, args, false, By::Lex, Some(true));
}

/// A parsed range of any kind.
enum Spec<'a> {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange<'a>),
}

/// ZRANGE, ZRANGESTORE and the older Z[REV]RANGE[BYSCORE|BYLEX], as Valkey's
/// zrangeGenericCommand: options first, then their conflicts, then the range, then the key.
/// `rev` is None where REV is an option (ZRANGE, ZRANGESTORE).
fn zrange_generic(ctx: &mut Ctx<'_>, args: &[Bytes], store: bool, by: By, rev: Option<bool>) {
    let src = if store { 2 } else { 1 };
    let mut by = by;
    let mut reverse = rev.unwrap_or(false);
    let mut with_scores = false;
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut j = src + 3;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = &args[j];
        if !store && is(a, "WITHSCORES") {
            with_scores = true;
        } else if is(a, "LIMIT") && left >= 2 {
            let (Some(o), Some(l)) = (arg_i64(&args[j + 1]), arg_i64(&args[j + 2])) else {
                ctx.out.error(NOT_INTEGER);
                return;
            };
            (offset, limit) = (o, l);
            j += 2;
        } else if rev.is_none() && !reverse && is(a, "REV") {
            reverse = true;
        } else if by == By::Auto && is(a, "BYLEX") {
            by = By::Lex;
        } else if by == By::Auto && is(a, "BYSCORE") {
            by = By::Score;
        } else {
            ctx.syntax_error();
            return;
        }
        j += 1;
    }
    if by == By::Auto {
        by = By::Rank;
    }
    // Valkey tells "no LIMIT" by a count of -1, so `LIMIT 0 -1` passes with ranks.
    if limit != -1 && by == By::Rank {
        ctx.out.error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
        return;
    }
    if with_scores && by == By::Lex {
        ctx.out
            .error("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
        return;
    }
    // Reversed score and lex ranges are given as max, min.
    let (lo, hi) = if reverse && by != By::Rank {
        (&args[src + 2], &args[src + 1])
    } else {
        (&args[src + 1], &args[src + 2])
    };
    let spec = match by {
        By::Score => match ScoreRange::parse(lo, hi) {
            Some(r) => Spec::Score(r),
            None => {
                ctx.out.error(NOT_FLOAT_RANGE);
                return;
            }
        },
        By::Lex => match LexRange::parse(lo, hi) {
            Some(r) => Spec::Lex(r),
            None => {
                ctx.out.error(NOT_LEX_RANGE);
                return;
            }
        },
        _ => match (arg_i64(lo), arg_i64(hi)) {
            (Some(s), Some(e)) => Spec::Rank(s, e),
            _ => {
                ctx.out.error(NOT_INTEGER);
                return;
            }
        },
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(z) = zset_for_read(shard, *now, out, &args[src]) else {
        return;
    };
    // The selected ranks, ascending, and whether to walk them from the top.
    let ranks = z.map_or(0..0, |z| select(z, &spec, reverse, offset, limit));
    if store {
        let pairs: Vec<(f64, Box<[u8]>)> = z.map_or(Vec::new(), |z| {
            z.range(ranks.start, ranks.end)
                .map(|(m, s)| (s, m.into()))
                .collect()
        });
        store_result(ctx, &args[1], pairs);
        return;
    }
    let shape = Shape::new(out, with_scores);
    shape.header(out, ranks.len());
    if let Some(z) = z {
        let members = z.range(ranks.start, ranks.end);
        if reverse {
            members.rev().for_each(|(m, s)| shape.item(out, m, s));
        } else {
            members.for_each(|(m, s)| shape.item(out, m, s));
        }
    }
}

/// The ranks a range with LIMIT selects, ascending (walked from the top when `reverse`).
fn select(
    z: &ZSetObj,
    spec: &Spec<'_>,
    reverse: bool,
    offset: i64,
    limit: i64,
) -> std::ops::Range<usize> {
    let len = z.len();
    let (start, end) = match spec {
        Spec::Rank(s, e) => {
            return match clamp_ranks(*s, *e, len) {
                // A reversed rank range counts its indexes from the top.
                Some((s, e)) if reverse => len - 1 - e..len - s,
                Some((s, e)) => s..e + 1,
                None => 0..0,
            };
        }
        Spec::Score(r) => r.ranks(z),
        Spec::Lex(r) => r.ranks(z),
    };
    // A negative offset selects nothing (Valkey walks off the end of the range).
    let Ok(offset) = usize::try_from(offset) else {
        return 0..0;
    };
    let available = (end - start).saturating_sub(offset);
    let n = match usize::try_from(limit) {
        Ok(l) => l.min(available),
        Err(_) => available,
    };
    if reverse {
        let top = end - offset.min(end - start);
        top - n..top
    } else {
        let first = start + offset.min(end - start);
        first..first + n
    }
}

/// Replaces `dst` with the sorted set of `pairs` (in order), or deletes it when there are
/// none, and replies the count — the ending of every STORE command.
pub(super) fn store_result(ctx: &mut Ctx<'_>, dst: &[u8], pairs: Vec<(f64, Box<[u8]>)>) {
    let n = pairs.len();
    if n == 0 {
        if ctx.write(dst).is_some() {
            ctx.apply(Mutation::Del { key: dst });
        }
    } else {
        let z = ZSetObj::from_sorted(pairs, ctx.shard.limits.zset);
        ctx.apply(Mutation::Restore {
            key: dst,
            value: Value::ZSet(Box::new(z)),
            expire_at: None,
        });
    }
    ctx.out.int(n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bounds_read_as_strtod_does() {
        let r = |a: &str, b: &str| ScoreRange::parse(a.as_bytes(), b.as_bytes());
        assert_eq!(
            r("(1.5", "+inf"),
            Some(ScoreRange {
                min: 1.5,
                max: f64::INFINITY,
                min_ex: true,
                max_ex: false
            })
        );
        assert_eq!(r("-inf", "(5").map(|x| x.min), Some(f64::NEG_INFINITY));
        assert_eq!(r("", "(").map(|x| (x.min, x.max_ex)), Some((0.0, true)));
        assert_eq!(r(" 1", "0x10").map(|x| (x.min, x.max)), Some((1.0, 16.0)));
        assert_eq!(r("1e400", "infinity").map(|x| x.min), Some(f64::INFINITY));
        for bad in ["1 ", "nan", "(nan", "abc", "1e", "((1", " "] {
            assert_eq!(r(bad, "1"), None, "{bad:?}");
        }
        // C sees the argument end at a NUL byte.
        assert_eq!(r("2\0junk", "3").map(|x| x.min), Some(2.0));
    }

    #[test]
    fn lex_bounds() {
        assert!(LexRange::parse(b"-", b"+").is_some());
        assert!(LexRange::parse(b"[a", b"(b").is_some());
        assert!(LexRange::parse(b"[", b"(").is_some());
        for bad in [&b"a"[..], b"", b"+x", b"-x", b"1"] {
            assert!(LexRange::parse(bad, b"+").is_none(), "{bad:?}");
        }
        let empty = |a: &str, b: &str| {
            LexRange::parse(a.as_bytes(), b.as_bytes())
                .unwrap()
                .is_empty()
        };
        assert!(!empty("-", "+") && !empty("[a", "[a") && !empty("[a", "(b") && !empty("-", "[a"));
        assert!(empty("+", "-") && empty("-", "-") && empty("+", "+"));
        assert!(empty("(a", "[a") && empty("[a", "(a") && empty("[b", "[a") && empty("[a", "-"));
    }

    #[test]
    fn rank_clamping_follows_valkey() {
        assert_eq!(clamp_ranks(0, -1, 3), Some((0, 2)));
        assert_eq!(clamp_ranks(-100, 100, 3), Some((0, 2)));
        assert_eq!(clamp_ranks(2, 1, 3), None);
        assert_eq!(clamp_ranks(3, 5, 3), None);
        assert_eq!(clamp_ranks(0, -4, 3), None);
        assert_eq!(clamp_ranks(i64::MIN, i64::MAX, 3), Some((0, 2)));
    }
}
