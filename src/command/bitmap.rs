//! Bitmaps: SETBIT/GETBIT, BITCOUNT, BITPOS, BITOP and BITFIELD(_RO) on string values.
//!
//! A bitmap is a string (TYPE says "string"; an integer-encoded string reads as its decimal
//! bytes). Writes are string records: SETBIT and BITFIELD write the bytes they change with
//! `SetRange` (which zero-pads a string it lengthens), BITOP stores its result with `SetStr`
//! (or deletes the destination when the result is empty). The bit arithmetic is in `bits`.

mod bits;

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;

use self::bits::{BitOp, Overflow};
use super::flags::READONLY;
use super::table::{K1, RF, W, def, k};
use super::{
    CommandDef, Ctx, Exec, KeyAccess, NOT_INTEGER, Refine, SYNTAX_ERROR, WRONGTYPE, arg_i64, is,
};
use crate::protocol::Out;
use crate::shard::entry::string_bytes;
use crate::shard::{Entry, Kind, Mutation, Ttl, ValueRef};

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "setbit",
        4,
        W,
        K1,
        "bitmap",
        "2.2.0",
        "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.",
        "O(1)",
        Exec::Shard(setbit),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "getbit",
        3,
        RF,
        K1,
        "bitmap",
        "2.2.0",
        "Returns a bit value by offset.",
        "O(1)",
        Exec::Shard(getbit),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "bitcount",
        -2,
        READONLY,
        K1,
        "bitmap",
        "2.6.0",
        "Counts the number of set bits (population counting) in a string.",
        "O(N)",
        Exec::Shard(bitcount),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "bitpos",
        -3,
        READONLY,
        K1,
        "bitmap",
        "2.8.7",
        "Finds the first set (1) or clear (0) bit in a string.",
        "O(N)",
        Exec::Shard(bitpos),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "bitop",
        -4,
        W,
        // The destination, then every source.
        k(2, -1, 1),
        "bitmap",
        "2.6.0",
        "Performs bitwise operations on multiple strings, and stores the result.",
        "O(N)",
        Exec::Shard(bitop),
    )
    .key_access(KeyAccess::STORE),
    def(
        "bitfield",
        -2,
        W,
        K1,
        "bitmap",
        "3.2.0",
        "Performs arbitrary bitfield integer operations on strings.",
        "O(1) for each subcommand specified",
        Exec::Shard(bitfield),
    )
    .key_access(KeyAccess::READ_WRITE.refined(Refine::BitfieldWrites)),
    def(
        "bitfield_ro",
        -2,
        RF,
        K1,
        "bitmap",
        "6.0.0",
        "Performs arbitrary read-only bitfield integer operations on strings.",
        "O(1) for each subcommand specified",
        Exec::Shard(bitfield_ro),
    )
    .key_access(KeyAccess::READ_ONLY),
];

const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const BAD_BIT: &str = "ERR bit is not an integer or out of range";
const BAD_BITPOS_BIT: &str = "ERR The bit argument must be 1 or 0.";
const BAD_TYPE: &str = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
const BAD_OVERFLOW: &str = "ERR Invalid OVERFLOW type specified";
const RO_ONLY_GET: &str = "ERR BITFIELD_RO only supports the GET subcommand";

/// Valkey's getBitOffsetFromArgument: a bit offset whose byte is below `proto-max-bulk-len`.
/// With `hash_bits`, `#n` means the n-th field of that width (`n * bits`; the product wraps
/// as Valkey's C arithmetic does, so a huge `#n` may land on a small offset there too).
fn parse_offset(arg: &[u8], hash_bits: Option<u32>, max_bytes: usize) -> Option<u64> {
    let (digits, times) = match (arg.first(), hash_bits) {
        (Some(b'#'), Some(bits)) => (&arg[1..], i64::from(bits)),
        _ => (arg, 1),
    };
    let offset = arg_i64(digits)?.wrapping_mul(times);
    (offset >= 0 && (offset as u64 >> 3) < max_bytes as u64).then_some(offset as u64)
}

/// The bytes of the string a lookup found (None when the key is missing; an integer-encoded
/// string reads as its digits, written into `scratch`), or Err after replying WRONGTYPE.
fn string_of<'a>(
    entry: Option<&'a mut Entry>,
    scratch: &'a mut itoa::Buffer,
    out: &mut Out,
) -> Result<Option<&'a [u8]>, ()> {
    match entry {
        None => Ok(None),
        Some(e) => match string_bytes(e.value(), scratch) {
            Some(s) => Ok(Some(s)),
            None => {
                out.error(WRONGTYPE);
                Err(())
            }
        },
    }
}

pub fn setbit(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let key = &args[1];
    let Some(offset) = parse_offset(&args[2], None, ctx.node.proto_max_bulk_len()) else {
        ctx.out.error(BAD_OFFSET);
        return;
    };
    let on = match arg_i64(&args[3]) {
        Some(0) => false,
        Some(1) => true,
        _ => {
            ctx.out.error(BAD_BIT);
            return;
        }
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let mut scratch = itoa::Buffer::new();
    let Ok(current) = string_of(shard.get(key, *now), &mut scratch, out) else {
        return;
    };
    let byte_index = (offset / 8) as usize;
    let byte = current.and_then(|s| s.get(byte_index)).copied();
    let was = bits::get_bit(current.unwrap_or_default(), offset);
    // Written when the bit changes or the string must grow to reach it (Valkey creates or
    // lengthens the string even to clear a bit).
    if byte.is_none() || was != on {
        let new = bits::with_bit(byte.unwrap_or(0), offset, on);
        shard.apply(Mutation::SetRange {
            key,
            offset: byte_index,
            data: &[new],
        });
    }
    out.int(i64::from(was));
}

pub fn getbit(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(offset) = parse_offset(&args[2], None, ctx.node.proto_max_bulk_len()) else {
        ctx.out.error(BAD_OFFSET);
        return;
    };
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let mut scratch = itoa::Buffer::new();
    let Ok(s) = string_of(shard.get_read(&args[1], *now), &mut scratch, out) else {
        return;
    };
    out.int(i64::from(bits::get_bit(s.unwrap_or_default(), offset)));
}

/// BYTE (false) or BIT (true), the unit of BITCOUNT's and BITPOS's range.
fn parse_unit(arg: &[u8]) -> Option<bool> {
    if is(arg, "BIT") {
        Some(true)
    } else if is(arg, "BYTE") {
        Some(false)
    } else {
        None
    }
}

/// A range as given: start, optional end, unit (true for BIT).
struct RangeArgs {
    start: i64,
    end: Option<i64>,
    bit_unit: bool,
}

/// Parses `start [end [BYTE|BIT]]` in Valkey's order (start, unit, then end), replying the
/// error itself. `rest` has at most three arguments.
fn parse_range(out: &mut Out, rest: &[Bytes]) -> Result<Option<RangeArgs>, ()> {
    let Some(start) = rest.first() else {
        return Ok(None);
    };
    let Some(start) = arg_i64(start) else {
        out.error(NOT_INTEGER);
        return Err(());
    };
    let bit_unit = match rest.get(2) {
        None => false,
        Some(u) => parse_unit(u).ok_or_else(|| out.error(SYNTAX_ERROR))?,
    };
    let end = match rest.get(1) {
        None => None,
        Some(e) => Some(arg_i64(e).ok_or_else(|| out.error(NOT_INTEGER))?),
    };
    Ok(Some(RangeArgs {
        start,
        end,
        bit_unit,
    }))
}

/// A range resolved against a string of `len` bytes, as Valkey resolves it (negative indexes
/// from the end, clamped): the first and last bit, or None when it is empty.
fn resolve(r: &RangeArgs, len: u64) -> Option<(u64, u64)> {
    let total = if r.bit_unit { len * 8 } else { len } as i64;
    let (mut start, mut end) = (r.start, r.end.unwrap_or(len as i64 - 1));
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    let (start, end) = (start.max(0), end.max(0).min(total - 1));
    if start > end {
        return None;
    }
    let (start, end) = (start as u64, end as u64);
    Some(if r.bit_unit {
        (start, end)
    } else {
        (start * 8, end * 8 + 7)
    })
}

pub fn bitcount(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if args.len() > 5 {
        ctx.out.error(SYNTAX_ERROR);
        return;
    }
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(range) = parse_range(out, &args[2..]) else {
        return;
    };
    let mut scratch = itoa::Buffer::new();
    let Ok(found) = string_of(shard.get_read(&args[1], *now), &mut scratch, out) else {
        return;
    };
    let Some(s) = found else {
        out.int(0);
        return;
    };
    let count = match range {
        None => bits::popcount(s),
        // Valkey answers 0 at once when both indexes count from the end and cross.
        Some(RangeArgs {
            start,
            end: Some(end),
            ..
        }) if start < 0 && end < 0 && start > end => 0,
        Some(r) => match resolve(&r, s.len() as u64) {
            Some((first, last)) => bits::count_range(s, first, last),
            None => 0,
        },
    };
    out.int(count as i64);
}

pub fn bitpos(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let bit = match arg_i64(&args[2]) {
        Some(0) => false,
        Some(1) => true,
        Some(_) => {
            ctx.out.error(BAD_BITPOS_BIT);
            return;
        }
        None => {
            ctx.out.error(NOT_INTEGER);
            return;
        }
    };
    if args.len() > 6 {
        ctx.out.error(SYNTAX_ERROR);
        return;
    }
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(range) = parse_range(out, &args[3..]) else {
        return;
    };
    let mut scratch = itoa::Buffer::new();
    let Ok(found) = string_of(shard.get_read(&args[1], *now), &mut scratch, out) else {
        return;
    };
    let Some(s) = found else {
        // A missing key is an endless run of zeros, whatever the range.
        out.int(if bit { -1 } else { 0 });
        return;
    };
    let range = range.unwrap_or(RangeArgs {
        start: 0,
        end: None,
        bit_unit: false,
    });
    let Some((first, last)) = resolve(&range, s.len() as u64) else {
        out.int(-1);
        return;
    };
    let pos = match bits::position(s, bit, first, last) {
        Some(p) => p as i64,
        // Looking for a 0 without an explicit end: the string continues with zeros, so the
        // first one is just past the range. With an end, the range had none.
        None if !bit && range.end.is_none() => last as i64 + 1,
        None => -1,
    };
    out.int(pos);
}

pub fn bitop(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(op) = BitOp::parse(&args[1]) else {
        ctx.out.error(SYNTAX_ERROR);
        return;
    };
    let (dest, sources) = (&args[2], &args[3..]);
    if op == BitOp::Not && sources.len() != 1 {
        ctx.out
            .error("ERR BITOP NOT must be called with a single source key.");
        return;
    }
    if matches!(op, BitOp::Diff | BitOp::Diff1 | BitOp::AndOr) && sources.len() < 2 {
        ctx.out.error(&format!(
            "ERR BITOP {} must be called with at least two source keys.",
            String::from_utf8_lossy(&args[1]).to_ascii_uppercase()
        ));
        return;
    }
    // Look every source up as a read (hits, misses, lazy expiry) and check its type first;
    // then borrow them all at once to compute.
    for key in sources {
        if ctx.read(key).is_some_and(|e| e.kind() != Kind::String) {
            ctx.out.error(WRONGTYPE);
            return;
        }
    }
    let result = {
        let shard = &*ctx.shard;
        let values: Vec<Cow<'_, [u8]>> = sources
            .iter()
            .map(|key| match shard.peek(key, ctx.now).map(|e| e.value()) {
                Some(ValueRef::Str(s)) => Cow::Borrowed(s),
                Some(ValueRef::Int(i)) => Cow::Owned(itoa::Buffer::new().format(i).into()),
                // Missing (other types were refused above).
                _ => Cow::Borrowed(&[][..]),
            })
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
        bits::bitop(op, &refs)
    };
    if result.is_empty() {
        if ctx.write(dest).is_some() {
            ctx.apply(Mutation::Del { key: dest });
        }
    } else {
        ctx.apply(Mutation::SetStr {
            key: dest,
            value: &result,
            ttl: Ttl::Clear,
        });
    }
    ctx.out.int(result.len() as i64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldCmd {
    Get,
    Set,
    IncrBy,
}

/// One BITFIELD subcommand, parsed.
#[derive(Debug, Clone, Copy)]
struct FieldOp {
    cmd: FieldCmd,
    signed: bool,
    bits: u32,
    offset: u64,
    /// SET's value or INCRBY's increment.
    arg: i64,
    overflow: Overflow,
}

/// `i<bits>` (1..=64) or `u<bits>` (1..=63).
fn parse_type(arg: &[u8]) -> Option<(bool, u32)> {
    let (&sign, rest) = arg.split_first()?;
    let signed = match sign {
        b'i' => true,
        b'u' => false,
        _ => return None,
    };
    // Valkey reads the width as a C string: it ends at a NUL byte.
    let rest = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
    let bits = arg_i64(rest)?;
    let max = if signed { 64 } else { 63 };
    (1..=max).contains(&bits).then_some((signed, bits as u32))
}

/// Parses the subcommands after the key, replying the first error (Valkey's order: each
/// subcommand's type, then offset, then value).
fn parse_field_ops(out: &mut Out, args: &[Bytes], max_bytes: usize) -> Result<Vec<FieldOp>, ()> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 0;
    while j < args.len() {
        let remaining = args.len() - j - 1;
        let sub = &args[j];
        let cmd = if is(sub, "GET") && remaining >= 2 {
            FieldCmd::Get
        } else if is(sub, "SET") && remaining >= 3 {
            FieldCmd::Set
        } else if is(sub, "INCRBY") && remaining >= 3 {
            FieldCmd::IncrBy
        } else if is(sub, "OVERFLOW") && remaining >= 1 {
            let name = &args[j + 1];
            overflow = if is(name, "WRAP") {
                Overflow::Wrap
            } else if is(name, "SAT") {
                Overflow::Sat
            } else if is(name, "FAIL") {
                Overflow::Fail
            } else {
                out.error(BAD_OVERFLOW);
                return Err(());
            };
            j += 2;
            continue;
        } else {
            out.error(SYNTAX_ERROR);
            return Err(());
        };
        let (signed, bits) = parse_type(&args[j + 1]).ok_or_else(|| out.error(BAD_TYPE))?;
        let offset = parse_offset(&args[j + 2], Some(bits), max_bytes)
            .ok_or_else(|| out.error(BAD_OFFSET))?;
        let arg = if cmd == FieldCmd::Get {
            0
        } else {
            arg_i64(&args[j + 3]).ok_or_else(|| out.error(NOT_INTEGER))?
        };
        ops.push(FieldOp {
            cmd,
            signed,
            bits,
            offset,
            arg,
            overflow,
        });
        j += if cmd == FieldCmd::Get { 3 } else { 4 };
    }
    Ok(ops)
}

pub fn bitfield(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    bitfield_generic(ctx, args, false);
}

pub fn bitfield_ro(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    bitfield_generic(ctx, args, true);
}

fn bitfield_generic(ctx: &mut Ctx<'_>, args: &[Bytes], read_only: bool) {
    let key = &args[1];
    let max_bytes = ctx.node.proto_max_bulk_len();
    let Ctx {
        shard, now, out, ..
    } = ctx;
    let Ok(ops) = parse_field_ops(out, &args[2..], max_bytes) else {
        return;
    };
    let writes = ops.iter().any(|op| op.cmd != FieldCmd::Get);
    if writes && read_only {
        out.error(RO_ONLY_GET);
        return;
    }
    let mut scratch = itoa::Buffer::new();
    let entry = if writes {
        shard.get(key, *now)
    } else {
        shard.get_read(key, *now)
    };
    let Ok(base) = string_of(entry, &mut scratch, out) else {
        return;
    };
    let base_len = base.map_or(0, |s| s.len() as u64);

    // The bytes the writes give new values, over the string as it was; every read goes
    // through them, so later subcommands see earlier ones.
    let mut written: BTreeMap<u64, u8> = BTreeMap::new();
    let byte_at = |written: &BTreeMap<u64, u8>, i: u64| {
        written
            .get(&i)
            .copied()
            .or_else(|| base.and_then(|s| s.get(i as usize).copied()))
            .unwrap_or(0)
    };
    out.array(ops.len());
    for op in &ops {
        let raw = bits::get_field(|i| byte_at(&written, i), op.offset, op.bits);
        // (value to store, reply) or None for an OVERFLOW FAIL.
        let outcome = match (op.cmd, op.signed) {
            (FieldCmd::Get, true) => {
                out.int(bits::sign_extend(raw, op.bits));
                continue;
            }
            (FieldCmd::Get, false) => {
                out.int(raw as i64);
                continue;
            }
            (cmd, true) => {
                let old = bits::sign_extend(raw, op.bits);
                let (value, incr) = match cmd {
                    FieldCmd::Set => (op.arg, 0),
                    _ => (old, op.arg),
                };
                bits::signed_result(value, incr, op.bits, op.overflow).map(|new| {
                    let reply = if cmd == FieldCmd::Set { old } else { new };
                    (new as u64, reply)
                })
            }
            (cmd, false) => {
                let (value, incr) = match cmd {
                    FieldCmd::Set => (op.arg as u64, 0),
                    _ => (raw, op.arg),
                };
                bits::unsigned_result(value, incr, op.bits, op.overflow).map(|new| {
                    let reply = if cmd == FieldCmd::Set { raw } else { new };
                    (new, reply as i64)
                })
            }
        };
        let Some((new, reply)) = outcome else {
            out.nil();
            continue;
        };
        out.int(reply);
        let first = op.offset / 8;
        let last = (op.offset + u64::from(op.bits) - 1) / 8;
        let mut field = [0u8; 9];
        for (k, b) in field
            .iter_mut()
            .enumerate()
            .take((last - first + 1) as usize)
        {
            *b = byte_at(&written, first + k as u64);
        }
        bits::set_field(&mut field, first, op.offset, op.bits, new);
        for (k, &b) in field.iter().enumerate().take((last - first + 1) as usize) {
            written.insert(first + k as u64, b);
        }
    }
    if !writes {
        return;
    }
    // Valkey lengthens (or creates) the string to the farthest byte a write reaches, even
    // when the write failed with OVERFLOW FAIL or wrote zeros.
    let end = ops
        .iter()
        .filter(|op| op.cmd != FieldCmd::Get)
        .map(|op| (op.offset + u64::from(op.bits) - 1) / 8)
        .max()
        .expect("a write is among the subcommands");
    let grow_to = (base.is_none() || end >= base_len).then_some(end);
    // Keep the bytes that differ from what the string reads now, plus the last one when the
    // string grows: SetRange zero-pads up to it.
    let changed: Vec<(u64, u8)> = written
        .iter()
        .map(|(&i, &b)| (i, b))
        .filter(|&(i, b)| Some(i) == grow_to || b != byte_at(&BTreeMap::new(), i))
        .chain(grow_to.filter(|e| !written.contains_key(e)).map(|e| (e, 0)))
        .collect();
    // One SetRange per run of adjacent bytes.
    let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, b) in changed {
        match runs.last_mut() {
            Some((start, bytes)) if *start + bytes.len() as u64 == i => bytes.push(b),
            _ => runs.push((i, vec![b])),
        }
    }
    for (offset, data) in &runs {
        shard.apply(Mutation::SetRange {
            key,
            offset: *offset as usize,
            data,
        });
    }
}

#[cfg(test)]
mod tests;
