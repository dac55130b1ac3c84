//! The bitmap handlers against a shard, compared with a model that keeps each key as a plain
//! vector of bits and implements every command the slow, obvious way.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::bits::Overflow;
use crate::cluster::SLOT_COUNT;
use crate::command::{Ctx, NodeView};
use crate::protocol::Out;
use crate::shard::entry::string_bytes;
use crate::shard::{Mutation, Shard, ShardStats, Ttl};

struct Node;

impl NodeView for Node {
    fn proto_max_bulk_len(&self) -> usize {
        512 * 1024 * 1024
    }
    fn clustered(&self) -> bool {
        false
    }
    fn serves(&self, _slot: usize) -> bool {
        true
    }
    fn scripts(&self) -> &crate::command::script::Scripts {
        static SCRIPTS: std::sync::OnceLock<crate::command::script::Scripts> =
            std::sync::OnceLock::new();
        SCRIPTS.get_or_init(|| crate::command::script::Scripts::new(1))
    }
}

/// A decoded RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Int(i64),
    Nil,
    Err(String),
    Array(Vec<Reply>),
}

fn decode(buf: &[u8], pos: &mut usize) -> Reply {
    let line_end = buf[*pos..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a complete reply")
        + *pos;
    let line = std::str::from_utf8(&buf[*pos + 1..line_end]).expect("ascii header");
    let kind = buf[*pos];
    *pos = line_end + 2;
    match kind {
        b':' => Reply::Int(line.parse().expect("integer")),
        b'-' => Reply::Err(line.to_string()),
        b'$' if line == "-1" => Reply::Nil,
        b'*' => {
            let n: usize = line.parse().expect("array length");
            Reply::Array((0..n).map(|_| decode(buf, pos)).collect())
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

struct Harness {
    shard: Shard,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            shard: Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default())),
        }
    }

    fn run(&mut self, args: &[&[u8]]) -> Reply {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let def = crate::command::table::registry()
            .def(crate::command::lookup(&args[0]).expect("a bitmap command"));
        let crate::command::Exec::Shard(handler) = def.exec else {
            panic!("bitmap commands run on a shard");
        };
        let mut out = Out::new(false);
        let mut ctx = Ctx {
            shard: &mut self.shard,
            now: 1,
            out: &mut out,
            node: &Node,
        };
        handler(&mut ctx, &args);
        let mut pos = 0;
        let r = decode(&out.buf, &mut pos);
        assert_eq!(pos, out.buf.len(), "exactly one reply");
        r
    }

    fn string(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let mut scratch = itoa::Buffer::new();
        self.shard.peek(key, 1).map(|e| {
            string_bytes(e.value(), &mut scratch)
                .expect("a string")
                .to_vec()
        })
    }
}

fn run(h: &mut Harness, args: &[&str]) -> Reply {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    h.run(&args)
}

use Reply::{Array, Err as E, Int, Nil};

#[test]
fn replies_and_errors() {
    let mut h = Harness::new();
    assert_eq!(run(&mut h, &["setbit", "k", "7", "1"]), Int(0));
    assert_eq!(run(&mut h, &["setbit", "k", "7", "1"]), Int(1));
    assert_eq!(h.string(b"k"), Some(vec![1]));
    assert_eq!(
        run(&mut h, &["setbit", "k", "-1", "1"]),
        E("ERR bit offset is not an integer or out of range".into())
    );
    assert_eq!(
        run(&mut h, &["setbit", "k", "4294967296", "1"]),
        E("ERR bit offset is not an integer or out of range".into())
    );
    assert_eq!(
        run(&mut h, &["setbit", "k", "1", "2"]),
        E("ERR bit is not an integer or out of range".into())
    );
    assert_eq!(
        run(&mut h, &["getbit", "k", "#1"]),
        E("ERR bit offset is not an integer or out of range".into())
    );
    // Clearing a bit far away still lengthens the string.
    assert_eq!(run(&mut h, &["setbit", "k", "100", "0"]), Int(0));
    assert_eq!(h.string(b"k").map(|s| s.len()), Some(13));
    assert_eq!(
        run(&mut h, &["bitcount", "k", "0", "1", "bits"]),
        E("ERR syntax error".into())
    );
    assert_eq!(
        run(&mut h, &["bitcount", "k", "0", "1", "bit", "x"]),
        E("ERR syntax error".into())
    );
    assert_eq!(
        run(&mut h, &["bitpos", "k", "2"]),
        E("ERR The bit argument must be 1 or 0.".into())
    );
    assert_eq!(
        run(&mut h, &["bitfield", "k", "get", "u64", "0"]),
        E("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.".into())
    );
    assert_eq!(
        run(&mut h, &["bitfield", "k", "overflow", "nope"]),
        E("ERR Invalid OVERFLOW type specified".into())
    );
    assert_eq!(
        run(&mut h, &["bitfield", "k", "get", "u8"]),
        E("ERR syntax error".into())
    );
    assert_eq!(
        run(&mut h, &["bitfield_ro", "k", "set", "u8", "0", "1"]),
        E("ERR BITFIELD_RO only supports the GET subcommand".into())
    );
    assert_eq!(
        run(
            &mut h,
            &["bitfield", "k", "get", "u8", "#1", "get", "i8", "0"]
        ),
        Array(vec![Int(0), Int(1)])
    );
    assert_eq!(run(&mut h, &["bitfield", "k"]), Array(vec![]));
    assert_eq!(
        run(&mut h, &["bitop", "not", "d", "a", "b"]),
        E("ERR BITOP NOT must be called with a single source key.".into())
    );
    assert_eq!(
        run(&mut h, &["bitop", "diff1", "d", "a"]),
        E("ERR BITOP DIFF1 must be called with at least two source keys.".into())
    );
    assert_eq!(
        run(&mut h, &["bitop", "nand", "d", "a"]),
        E("ERR syntax error".into())
    );

    h.shard.apply(Mutation::ListPush {
        key: b"l",
        left: true,
        elems: &[b"x"],
    });
    let wrongtype = E("WRONGTYPE Operation against a key holding the wrong kind of value".into());
    for args in [
        &["setbit", "l", "0", "1"][..],
        &["getbit", "l", "0"],
        &["bitcount", "l"],
        &["bitpos", "l", "1"],
        &["bitfield", "l", "get", "u8", "0"],
        &["bitfield", "l"],
        &["bitfield_ro", "l", "get", "u8", "0"],
        &["bitop", "or", "d", "k", "l"],
    ] {
        assert_eq!(run(&mut h, args), wrongtype, "{args:?}");
    }
    // Argument errors come before the type check.
    assert_eq!(
        run(&mut h, &["bitcount", "l", "x"]),
        E("ERR value is not an integer or out of range".into())
    );
    // BITOP overwrites any type, and an empty result deletes the destination.
    assert_eq!(run(&mut h, &["bitop", "or", "l", "k"]), Int(13));
    assert_eq!(
        run(&mut h, &["bitop", "and", "l", "missing", "other"]),
        Int(0)
    );
    assert!(h.shard.peek(b"l", 1).is_none());
}

#[test]
fn integer_strings_read_as_their_digits() {
    let mut h = Harness::new();
    h.shard.apply(Mutation::SetInt {
        key: b"n",
        value: 12,
        ttl: Ttl::Clear,
    });
    // "12" = 0x31 0x32.
    assert_eq!(run(&mut h, &["bitcount", "n"]), Int(6));
    assert_eq!(run(&mut h, &["getbit", "n", "2"]), Int(1));
    assert_eq!(
        run(&mut h, &["bitfield", "n", "get", "u16", "0"]),
        Array(vec![Int(0x3132)])
    );
    assert_eq!(run(&mut h, &["bitpos", "n", "1"]), Int(2));
    assert_eq!(run(&mut h, &["setbit", "n", "15", "1"]), Int(0));
    assert_eq!(h.string(b"n"), Some(b"13".to_vec()));
    assert_eq!(run(&mut h, &["bitop", "xor", "x", "n", "n"]), Int(2));
    assert_eq!(h.string(b"x"), Some(vec![0, 0]));
}

#[test]
fn bitfield_writes_only_what_changes_and_grows_on_failure() {
    let mut h = Harness::new();
    assert_eq!(
        run(
            &mut h,
            &[
                "bitfield", "k", "overflow", "fail", "set", "u8", "800", "300"
            ]
        ),
        Array(vec![Nil])
    );
    assert_eq!(h.string(b"k"), Some(vec![0; 101]));
    assert_eq!(
        run(
            &mut h,
            &[
                "bitfield", "k", "set", "u8", "#0", "255", "incrby", "u8", "0", "1", "get", "u4",
                "4"
            ]
        ),
        Array(vec![Int(0), Int(0), Int(0)])
    );
    assert_eq!(h.string(b"k").map(|s| s.len()), Some(101));
    assert_eq!(
        run(
            &mut h,
            &[
                "bitfield",
                "k",
                "overflow",
                "sat",
                "set",
                "i8",
                "0",
                "-9223372036854775808",
                "get",
                "i8",
                "0"
            ]
        ),
        Array(vec![Int(0), Int(127)])
    );
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
enum Op {
    SetStr(usize, Vec<u8>),
    SetInt(usize, i64),
    SetBit(usize, u64, bool),
    GetBit(usize, u64),
    BitCount(usize, RangeArg),
    BitPos(usize, bool, RangeArg),
    BitField(usize, Vec<Sub>),
    Bitop(super::bits::BitOp, usize, Vec<usize>),
}

#[derive(Debug, Clone)]
enum Sub {
    Overflow(Overflow),
    Get(bool, u32, u64, bool),
    Set(bool, u32, u64, bool, i64),
    IncrBy(bool, u32, u64, bool, i64),
}

/// `[start [end [BIT|BYTE]]]`: true for BIT.
type RangeArg = Option<(i64, Option<(i64, Option<bool>)>)>;

const KEYS: [&str; 3] = ["a", "b", "c"];

/// Each key as bits, most significant bit of the first byte first.
#[derive(Default)]
struct Model {
    keys: BTreeMap<usize, Vec<bool>>,
}

fn to_bits(s: &[u8]) -> Vec<bool> {
    s.iter()
        .flat_map(|b| (0..8).map(move |i| b & (0x80 >> i) != 0))
        .collect()
}

fn to_bytes(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|c| c.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
        .collect()
}

/// Valkey's range rules, written out for bits.
fn model_range(len_bytes: i64, start: i64, end: i64, bit_unit: bool) -> Option<(usize, usize)> {
    let total = if bit_unit { len_bytes * 8 } else { len_bytes };
    let norm = |i: i64| if i < 0 { (total + i).max(0) } else { i };
    let (s, e) = (norm(start), norm(end).min(total - 1));
    if s > e {
        return None;
    }
    Some(if bit_unit {
        (s as usize, e as usize)
    } else {
        (s as usize * 8, e as usize * 8 + 7)
    })
}

fn field_range(signed: bool, bits: u32) -> (i128, i128) {
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

impl Model {
    fn grow(&mut self, key: usize, to_bits: usize) -> &mut Vec<bool> {
        let v = self.keys.entry(key).or_default();
        let bytes = to_bits.div_ceil(8);
        if v.len() < bytes * 8 {
            v.resize(bytes * 8, false);
        }
        v
    }

    fn run(&mut self, op: &Op) -> Reply {
        match op {
            Op::SetStr(k, s) => {
                self.keys.insert(*k, to_bits(s));
                Nil
            }
            Op::SetInt(k, i) => {
                self.keys.insert(*k, to_bits(i.to_string().as_bytes()));
                Nil
            }
            Op::SetBit(k, off, on) => {
                let v = self.grow(*k, *off as usize + 1);
                let was = v[*off as usize];
                v[*off as usize] = *on;
                Int(i64::from(was))
            }
            Op::GetBit(k, off) => Int(i64::from(
                self.keys
                    .get(k)
                    .and_then(|v| v.get(*off as usize))
                    .copied()
                    .unwrap_or(false),
            )),
            Op::BitCount(k, range) => {
                let Some(v) = self.keys.get(k) else {
                    return Int(0);
                };
                let len = (v.len() / 8) as i64;
                let (start, end, unit) = match range {
                    None => (0, len - 1, false),
                    Some((s, None)) => (*s, len - 1, false),
                    Some((s, Some((e, u)))) => {
                        if *s < 0 && *e < 0 && s > e {
                            return Int(0);
                        }
                        (*s, *e, u.unwrap_or(false))
                    }
                };
                Int(match model_range(len, start, end, unit) {
                    Some((a, b)) => v[a..=b].iter().filter(|&&x| x).count() as i64,
                    None => 0,
                })
            }
            Op::BitPos(k, bit, range) => {
                let Some(v) = self.keys.get(k) else {
                    return Int(if *bit { -1 } else { 0 });
                };
                let len = (v.len() / 8) as i64;
                let (start, end, unit, end_given) = match range {
                    None => (0, len - 1, false, false),
                    Some((s, None)) => (*s, len - 1, false, false),
                    Some((s, Some((e, u)))) => (*s, *e, u.unwrap_or(false), true),
                };
                let Some((a, b)) = model_range(len, start, end, unit) else {
                    return Int(-1);
                };
                Int(match v[a..=b].iter().position(|x| x == bit) {
                    Some(p) => (a + p) as i64,
                    None if !bit && !end_given => b as i64 + 1,
                    None => -1,
                })
            }
            Op::BitField(k, subs) => {
                let mut ow = Overflow::Wrap;
                let mut replies = Vec::new();
                let writes = subs
                    .iter()
                    .any(|s| matches!(s, Sub::Set(..) | Sub::IncrBy(..)));
                if writes {
                    let far = subs
                        .iter()
                        .filter_map(|s| match s {
                            Sub::Set(_, bits, off, hash, _)
                            | Sub::IncrBy(_, bits, off, hash, _) => {
                                Some(offset(*bits, *off, *hash) + *bits as u64)
                            }
                            _ => None,
                        })
                        .max()
                        .unwrap_or(0);
                    self.grow(*k, far as usize);
                }
                for s in subs {
                    let (signed, bits, off, hash) = match s {
                        Sub::Overflow(o) => {
                            ow = *o;
                            continue;
                        }
                        Sub::Get(sg, b, o, h)
                        | Sub::Set(sg, b, o, h, _)
                        | Sub::IncrBy(sg, b, o, h, _) => (*sg, *b, *o, *h),
                    };
                    let off = offset(bits, off, hash) as usize;
                    let v = self.keys.get(k).cloned().unwrap_or_default();
                    let raw = (0..bits as usize).fold(0i128, |acc, i| {
                        acc << 1 | i128::from(v.get(off + i).copied().unwrap_or(false))
                    });
                    let old = if signed && raw >> (bits - 1) == 1 {
                        raw - (1i128 << bits)
                    } else {
                        raw
                    };
                    let (min, max) = field_range(signed, bits);
                    let (new, set) = match s {
                        Sub::Get(..) => {
                            replies.push(Int(old as i64));
                            continue;
                        }
                        // An unsigned SET takes its value as a 64-bit unsigned number.
                        Sub::Set(_, _, _, _, val) if !signed => (i128::from(*val as u64), true),
                        Sub::Set(_, _, _, _, val) => (i128::from(*val), true),
                        Sub::IncrBy(_, _, _, _, incr) => (old + i128::from(*incr), false),
                        Sub::Overflow(_) => unreachable!("handled above"),
                    };
                    let new = if (min..=max).contains(&new) {
                        new
                    } else {
                        match ow {
                            Overflow::Fail => {
                                replies.push(Nil);
                                continue;
                            }
                            Overflow::Sat => {
                                if new > max {
                                    max
                                } else {
                                    min
                                }
                            }
                            Overflow::Wrap => {
                                let m = new.rem_euclid(1i128 << bits);
                                if m > max { m - (1i128 << bits) } else { m }
                            }
                        }
                    };
                    replies.push(Int(if set { old } else { new } as i64));
                    let v = self.keys.get_mut(k).expect("grown above");
                    for i in 0..bits as usize {
                        v[off + i] = (new >> (bits as usize - 1 - i)) & 1 == 1;
                    }
                }
                Array(replies)
            }
            Op::Bitop(op, dest, srcs) => {
                let vs: Vec<Vec<bool>> = srcs
                    .iter()
                    .map(|s| self.keys.get(s).cloned().unwrap_or_default())
                    .collect();
                let len = vs.iter().map(|v| v.len()).max().unwrap_or(0);
                use super::bits::BitOp as B;
                let result: Vec<bool> = (0..len)
                    .map(|i| {
                        let b: Vec<bool> = vs
                            .iter()
                            .map(|v| v.get(i).copied().unwrap_or(false))
                            .collect();
                        let ones = b.iter().filter(|&&x| x).count();
                        let others = b[1..].iter().any(|&x| x);
                        match op {
                            B::And => ones == b.len(),
                            B::Or => ones > 0,
                            B::Xor => ones % 2 == 1,
                            B::Not => !b[0],
                            B::Diff => b[0] && !others,
                            B::Diff1 => !b[0] && others,
                            B::AndOr => b[0] && others,
                            B::One => ones == 1,
                        }
                    })
                    .collect();
                if result.is_empty() {
                    self.keys.remove(dest);
                } else {
                    self.keys.insert(*dest, result);
                }
                Int((len / 8) as i64)
            }
        }
    }
}

fn offset(bits: u32, off: u64, hash: bool) -> u64 {
    if hash { off * u64::from(bits) } else { off }
}

fn type_arg(signed: bool, bits: u32) -> String {
    format!("{}{bits}", if signed { 'i' } else { 'u' })
}

fn off_arg(off: u64, hash: bool) -> String {
    if hash {
        format!("#{off}")
    } else {
        off.to_string()
    }
}

fn range_args(range: &RangeArg) -> Vec<String> {
    let mut a = Vec::new();
    if let Some((s, rest)) = range {
        a.push(s.to_string());
        if let Some((e, unit)) = rest {
            a.push(e.to_string());
            if let Some(bit) = unit {
                a.push(if *bit { "BIT" } else { "byte" }.to_string());
            }
        }
    }
    a
}

/// The command line for `op` (None for the direct writes).
fn command(op: &Op) -> Option<Vec<String>> {
    let s = |x: &str| x.to_string();
    Some(match op {
        Op::SetStr(..) | Op::SetInt(..) => return None,
        Op::SetBit(k, off, on) => vec![
            s("SETBIT"),
            s(KEYS[*k]),
            off.to_string(),
            s(if *on { "1" } else { "0" }),
        ],
        Op::GetBit(k, off) => vec![s("GETBIT"), s(KEYS[*k]), off.to_string()],
        Op::BitCount(k, r) => [vec![s("BITCOUNT"), s(KEYS[*k])], range_args(r)].concat(),
        Op::BitPos(k, bit, r) => [
            vec![s("BITPOS"), s(KEYS[*k]), s(if *bit { "1" } else { "0" })],
            range_args(r),
        ]
        .concat(),
        Op::BitField(k, subs) => {
            let mut a = vec![s("BITFIELD"), s(KEYS[*k])];
            for sub in subs {
                match sub {
                    Sub::Overflow(o) => a.extend([s("OVERFLOW"), format!("{o:?}")]),
                    Sub::Get(sg, b, o, h) => {
                        a.extend([s("GET"), type_arg(*sg, *b), off_arg(*o, *h)])
                    }
                    Sub::Set(sg, b, o, h, v) => {
                        a.extend([s("SET"), type_arg(*sg, *b), off_arg(*o, *h), v.to_string()])
                    }
                    Sub::IncrBy(sg, b, o, h, v) => a.extend([
                        s("INCRBY"),
                        type_arg(*sg, *b),
                        off_arg(*o, *h),
                        v.to_string(),
                    ]),
                }
            }
            a
        }
        Op::Bitop(op, dest, srcs) => {
            let mut a = vec![s("BITOP"), format!("{op:?}"), s(KEYS[*dest])];
            a.extend(srcs.iter().map(|k| s(KEYS[*k])));
            a
        }
    })
}

fn key_strategy() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn range_strategy() -> impl Strategy<Value = RangeArg> {
    prop::option::of((
        -40i64..40,
        prop::option::of((-40i64..40, prop::option::of(any::<bool>()))),
    ))
}

fn field_type() -> impl Strategy<Value = (bool, u32)> {
    prop_oneof![
        (Just(true), 1u32..=64),
        (Just(false), 1u32..=63),
        Just((true, 64)),
        Just((false, 63)),
        Just((true, 8)),
        Just((false, 8)),
    ]
}

fn value_strategy() -> impl Strategy<Value = i64> {
    // Signed SETs far below the field's minimum hit a Valkey quirk (see `bits::signed_result`)
    // the model does not copy, so SET values stay within ±2^62.
    prop_oneof![
        -300i64..300,
        -(1i64 << 62)..(1i64 << 62),
        Just(i64::MAX),
        Just(i64::MIN + 1)
    ]
}

fn sub_strategy() -> impl Strategy<Value = Sub> {
    let place = || (field_type(), 0u64..120, any::<bool>());
    prop_oneof![
        prop_oneof![
            Just(Overflow::Wrap),
            Just(Overflow::Sat),
            Just(Overflow::Fail)
        ]
        .prop_map(Sub::Overflow),
        place().prop_map(|((sg, b), o, h)| Sub::Get(sg, b, if h { o % 4 } else { o }, h)),
        (place(), value_strategy()).prop_map(|(((sg, b), o, h), v)| {
            // Keep unsigned SET values in reach of the quirk-free path too.
            Sub::Set(
                sg,
                b,
                if h { o % 4 } else { o },
                h,
                if sg { v.max(-(1 << 62)) } else { v },
            )
        }),
        (place(), value_strategy()).prop_map(|(((sg, b), o, h), v)| Sub::IncrBy(
            sg,
            b,
            if h { o % 4 } else { o },
            h,
            v
        )),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    use super::bits::BitOp as B;
    prop_oneof![
        1 => (key_strategy(), prop::collection::vec(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 0..24))
            .prop_map(|(k, s)| Op::SetStr(k, s)),
        1 => (key_strategy(), any::<i64>()).prop_map(|(k, i)| Op::SetInt(k, i)),
        3 => (key_strategy(), 0u64..300, any::<bool>()).prop_map(|(k, o, b)| Op::SetBit(k, o, b)),
        1 => (key_strategy(), 0u64..300).prop_map(|(k, o)| Op::GetBit(k, o)),
        2 => (key_strategy(), range_strategy()).prop_map(|(k, r)| Op::BitCount(k, r)),
        2 => (key_strategy(), any::<bool>(), range_strategy()).prop_map(|(k, b, r)| Op::BitPos(k, b, r)),
        3 => (key_strategy(), prop::collection::vec(sub_strategy(), 0..6)).prop_map(|(k, s)| Op::BitField(k, s)),
        1 => (
            prop_oneof![
                Just(B::And), Just(B::Or), Just(B::Xor), Just(B::Not),
                Just(B::Diff), Just(B::Diff1), Just(B::AndOr), Just(B::One)
            ],
            key_strategy(),
            prop::collection::vec(key_strategy(), 1..4)
        )
            .prop_map(|(op, d, mut s)| {
                match op {
                    B::Not => s.truncate(1),
                    B::Diff | B::Diff1 | B::AndOr if s.len() < 2 => s.push((s[0] + 1) % KEYS.len()),
                    _ => {}
                }
                Op::Bitop(op, d, s)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn handlers_match_the_bit_vector_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut h = Harness::new();
        let mut model = Model::default();
        for op in &ops {
            let want = model.run(op);
            match command(op) {
                None => {
                    match op {
                        Op::SetStr(k, s) => h.shard.apply(Mutation::SetStr { key: KEYS[*k].as_bytes(), value: s, ttl: Ttl::Clear }),
                        Op::SetInt(k, i) => h.shard.apply(Mutation::SetInt { key: KEYS[*k].as_bytes(), value: *i, ttl: Ttl::Clear }),
                        _ => unreachable!("only direct writes have no command"),
                    };
                }
                Some(args) => {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let got = run(&mut h, &args);
                    prop_assert_eq!(&got, &want, "{:?}", args);
                }
            }
            for (i, key) in KEYS.iter().enumerate() {
                let want = model.keys.get(&i).map(|v| to_bytes(v));
                prop_assert_eq!(h.string(key.as_bytes()), want, "key {} after {:?}", key, op);
            }
        }
    }
}
