//! ZUNION, ZINTER, ZDIFF, their STORE forms and ZINTERCARD, as Valkey's
//! zunionInterDiffGenericCommand: plain sets are accepted as inputs (every member scoring
//! 1), a missing key is an empty input, WEIGHTS multiply and AGGREGATE SUM|MIN|MAX combines
//! (a SUM that meets +inf and -inf yields 0, not NaN).

use std::borrow::Cow;

use bytes::Bytes;
use hashbrown::HashMap;

use super::Shape;
use super::range::store_result;
use crate::command::{Ctx, NOT_INTEGER, SYNTAX_ERROR, WRONGTYPE, arg_i64, is};
use crate::shard::zset::cmp_entry;
use crate::shard::{SetObj, ValueRef, ZSetObj};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Union,
    Inter,
    Diff,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// What the command does with the result.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Output {
    /// ZUNION, ZINTER, ZDIFF: reply the members (WITHSCORES allowed).
    Reply,
    /// The STORE forms: replace the destination (args[1]).
    Store,
    /// ZINTERCARD: reply the count (LIMIT allowed).
    Card,
}

pub fn zunion(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zunion", Op::Union, Output::Reply);
}

pub fn zinter(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zinter", Op::Inter, Output::Reply);
}

pub fn zdiff(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zdiff", Op::Diff, Output::Reply);
}

pub fn zunionstore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zunionstore", Op::Union, Output::Store);
}

pub fn zinterstore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zinterstore", Op::Inter, Output::Store);
}

pub fn zdiffstore(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zdiffstore", Op::Diff, Output::Store);
}

pub fn zintercard(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    generic(ctx, args, "zintercard", Op::Inter, Output::Card);
}

/// An input: a sorted set, or a set whose members all score 1.
#[derive(Clone, Copy)]
enum Src<'a> {
    ZSet(&'a ZSetObj),
    Set(&'a SetObj),
}

impl<'a> Src<'a> {
    fn len(self) -> usize {
        match self {
            Src::ZSet(z) => z.len(),
            Src::Set(s) => s.len(),
        }
    }

    fn score(self, m: &[u8]) -> Option<f64> {
        match self {
            Src::ZSet(z) => z.score(m),
            Src::Set(s) => s.contains(m).then_some(1.0),
        }
    }

    fn members(self) -> Box<dyn Iterator<Item = (Cow<'a, [u8]>, f64)> + 'a> {
        match self {
            Src::ZSet(z) => Box::new(z.iter().map(|(m, s)| (Cow::Borrowed(m), s))),
            Src::Set(s) => Box::new(s.iter().map(|m| (Cow::Owned(m.to_vec()), 1.0))),
        }
    }
}

struct Input<'a> {
    src: Option<Src<'a>>,
    weight: f64,
}

impl Input<'_> {
    fn len(&self) -> usize {
        self.src.map_or(0, |s| s.len())
    }
}

/// Folds `value` into `target` (Valkey's zunionInterAggregate).
fn aggregate(target: &mut f64, value: f64, how: Aggregate) {
    match how {
        Aggregate::Sum => {
            *target += value;
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => {
            if value < *target {
                *target = value;
            }
        }
        Aggregate::Max => {
            if value > *target {
                *target = value;
            }
        }
    }
}

/// A weighted input score, NaN (0 × inf) read as 0.
fn weighted(weight: f64, score: f64) -> f64 {
    let v = weight * score;
    if v.is_nan() { 0.0 } else { v }
}

fn generic(ctx: &mut Ctx<'_>, args: &[Bytes], name: &str, op: Op, output: Output) {
    let at = if output == Output::Store { 2 } else { 1 };
    let Some(numkeys) = arg_i64(&args[at]) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    if numkeys < 1 {
        ctx.out.error(&format!(
            "ERR at least 1 input key is needed for '{name}' command"
        ));
        return;
    }
    if numkeys as u64 > (args.len() - at - 1) as u64 {
        ctx.out.error(SYNTAX_ERROR);
        return;
    }
    let keys = &args[at + 1..at + 1 + numkeys as usize];
    // The inputs' types are checked before the options are read, as in Valkey.
    for key in keys {
        match ctx.read(key).map(|e| e.value()) {
            None | Some(ValueRef::ZSet(_)) | Some(ValueRef::Set(_)) => {}
            Some(_) => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        }
    }
    let mut weights = vec![1.0; keys.len()];
    let mut how = Aggregate::Sum;
    let mut with_scores = false;
    let mut limit = 0usize;
    let mut j = at + 1 + keys.len();
    while j < args.len() {
        let left = args.len() - j;
        let a = &args[j];
        let weighs = op != Op::Diff && output != Output::Card;
        if weighs && left > keys.len() && is(a, "WEIGHTS") {
            for (w, arg) in weights.iter_mut().zip(&args[j + 1..]) {
                let Some(v) = crate::util::parse_f64(arg) else {
                    ctx.out.error("ERR weight value is not a float");
                    return;
                };
                *w = v;
            }
            j += 1 + keys.len();
        } else if weighs && left >= 2 && is(a, "AGGREGATE") {
            let v = &args[j + 1];
            how = if is(v, "SUM") {
                Aggregate::Sum
            } else if is(v, "MIN") {
                Aggregate::Min
            } else if is(v, "MAX") {
                Aggregate::Max
            } else {
                ctx.syntax_error();
                return;
            };
            j += 2;
        } else if output == Output::Reply && is(a, "WITHSCORES") {
            with_scores = true;
            j += 1;
        } else if output == Output::Card && left >= 2 && is(a, "LIMIT") {
            match arg_i64(&args[j + 1]) {
                Some(n) if n >= 0 => limit = n as usize,
                _ => {
                    ctx.out.error("ERR LIMIT can't be negative");
                    return;
                }
            }
            j += 2;
        } else {
            ctx.syntax_error();
            return;
        }
    }

    let Ctx {
        shard, now, out, ..
    } = ctx;
    let shard: &crate::shard::Shard = shard;
    let mut inputs: Vec<Input<'_>> = keys
        .iter()
        .zip(weights)
        .map(|(key, weight)| Input {
            src: match shard.peek(key, *now).map(|e| e.value()) {
                Some(ValueRef::ZSet(z)) => Some(Src::ZSet(z)),
                Some(ValueRef::Set(s)) => Some(Src::Set(s)),
                _ => None,
            },
            weight,
        })
        .collect();
    if output == Output::Card {
        inputs.sort_by_key(Input::len);
        out.int(inter_card(&inputs, limit) as i64);
        return;
    }
    let result = compute(&mut inputs, op, how);
    if output == Output::Store {
        let pairs = result
            .into_iter()
            .map(|(s, m)| (s, Box::<[u8]>::from(m)))
            .collect();
        store_result(ctx, &args[1], pairs);
        return;
    }
    let shape = Shape::new(out, with_scores);
    shape.header(out, result.len());
    for (s, m) in &result {
        shape.item(out, m, *s);
    }
}

/// The result of `op` over `inputs`, in (score, member) order.
fn compute<'a>(inputs: &mut [Input<'a>], op: Op, how: Aggregate) -> Vec<(f64, Cow<'a, [u8]>)> {
    if op != Op::Diff {
        // Smallest first, as Valkey orders them (a stable sort, as glibc's qsort is here):
        // the order in which scores are summed can change a float's last bit.
        inputs.sort_by_key(Input::len);
    }
    let mut result = match op {
        Op::Union => union(inputs, how),
        Op::Inter => inter(inputs, how),
        Op::Diff => diff(inputs),
    };
    result.sort_by(|a, b| cmp_entry(a.0, &a.1, b.0, &b.1));
    result
}

fn union<'a>(inputs: &[Input<'a>], how: Aggregate) -> Vec<(f64, Cow<'a, [u8]>)> {
    let biggest = inputs.iter().map(Input::len).max().unwrap_or(0);
    let mut acc: HashMap<Cow<'a, [u8]>, f64> = HashMap::with_capacity(biggest);
    for input in inputs {
        let Some(src) = input.src else { continue };
        for (m, s) in src.members() {
            let v = weighted(input.weight, s);
            match acc.entry(m) {
                hashbrown::hash_map::Entry::Occupied(mut e) => aggregate(e.get_mut(), v, how),
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
            }
        }
    }
    acc.into_iter().map(|(m, s)| (s, m)).collect()
}

/// Calls `found` with each member of the smallest input present in every input, and its
/// aggregated score; stops when `found` returns false.
fn each_common<'a>(
    inputs: &[Input<'a>],
    how: Aggregate,
    mut found: impl FnMut(Cow<'a, [u8]>, f64) -> bool,
) {
    let Some((first, rest)) = inputs.split_first() else {
        return;
    };
    let Some(src) = first.src else { return };
    'members: for (m, s) in src.members() {
        let mut score = weighted(first.weight, s);
        for input in rest {
            match input.src.and_then(|x| x.score(&m)) {
                Some(v) => aggregate(&mut score, v * input.weight, how),
                None => continue 'members,
            }
        }
        if !found(m, score) {
            return;
        }
    }
}

fn inter<'a>(inputs: &[Input<'a>], how: Aggregate) -> Vec<(f64, Cow<'a, [u8]>)> {
    let mut out = Vec::new();
    each_common(inputs, how, |m, s| {
        out.push((s, m));
        true
    });
    out
}

/// ZINTERCARD: the intersection's size, stopping at `limit` (0: no limit).
fn inter_card(inputs: &[Input<'_>], limit: usize) -> usize {
    let mut n = 0;
    each_common(inputs, Aggregate::Sum, |_, _| {
        n += 1;
        limit == 0 || n < limit
    });
    n
}

/// The first input's members found in no other input, with their own scores (DIFF ignores
/// weights).
fn diff<'a>(inputs: &[Input<'a>]) -> Vec<(f64, Cow<'a, [u8]>)> {
    let Some((first, rest)) = inputs.split_first() else {
        return Vec::new();
    };
    let Some(src) = first.src else {
        return Vec::new();
    };
    src.members()
        .filter(|(m, _)| {
            !rest
                .iter()
                .any(|i| i.src.is_some_and(|x| x.score(m).is_some()))
        })
        .map(|(m, s)| (s, m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{SetLimits, ZSetLimits};

    fn zset(pairs: &[(f64, &str)]) -> ZSetObj {
        let mut z = ZSetObj::new();
        for (s, m) in pairs {
            z.insert(m.as_bytes(), *s, ZSetLimits::default());
        }
        z
    }

    fn set(members: &[&str]) -> SetObj {
        let mut x = SetObj::for_first(members[0].as_bytes(), SetLimits::default());
        for m in members {
            x.insert(m.as_bytes(), SetLimits::default());
        }
        x
    }

    fn run(inputs: &[Src<'_>], op: Op, how: Aggregate) -> Vec<(String, f64)> {
        let mut inputs: Vec<Input<'_>> = inputs
            .iter()
            .map(|&src| Input {
                src: Some(src),
                weight: 1.0,
            })
            .collect();
        compute(&mut inputs, op, how)
            .into_iter()
            .map(|(s, m)| (String::from_utf8(m.into_owned()).unwrap(), s))
            .collect()
    }

    fn want(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(m, s)| (m.to_string(), *s)).collect()
    }

    /// Plain sets (listpack and intset encoded) score 1 each; the replies are
    /// redis-server's for the same inputs.
    #[test]
    fn plain_sets_score_one() {
        let z1 = zset(&[(1.0, "a"), (2.0, "b"), (3.0, "c")]);
        let z2 = zset(&[(10.0, "b"), (20.0, "c"), (30.0, "d")]);
        let s1 = set(&["a", "b", "x"]);
        let (z1, z2, s1) = (Src::ZSet(&z1), Src::ZSet(&z2), Src::Set(&s1));
        assert_eq!(
            run(&[z1, z2, s1], Op::Union, Aggregate::Sum),
            want(&[
                ("x", 1.0),
                ("a", 2.0),
                ("b", 13.0),
                ("c", 23.0),
                ("d", 30.0)
            ])
        );
        assert_eq!(
            run(&[z1, z2, s1], Op::Inter, Aggregate::Sum),
            want(&[("b", 13.0)])
        );
        assert_eq!(
            run(&[z1, s1], Op::Diff, Aggregate::Sum),
            want(&[("c", 3.0)])
        );
        assert_eq!(
            run(&[s1, z1], Op::Diff, Aggregate::Sum),
            want(&[("x", 1.0)])
        );
        let ints = set(&["3", "1", "2"]);
        assert_eq!(ints.encoding(), "intset");
        let z = zset(&[(5.0, "2"), (6.0, "9")]);
        assert_eq!(
            run(&[Src::Set(&ints), Src::ZSet(&z)], Op::Inter, Aggregate::Max),
            want(&[("2", 5.0)])
        );
        let mut inputs = [
            Input {
                src: Some(Src::Set(&ints)),
                weight: 1.0,
            },
            Input {
                src: Some(Src::ZSet(&z)),
                weight: 1.0,
            },
        ];
        assert_eq!(inter_card(&inputs, 0), 1);
        inputs.swap(0, 1);
        assert_eq!(inter_card(&inputs, 1), 1);
    }
}
