//! `cmsgpack`: lua-cmsgpack 0.4.0 as bundled with Valkey.
//!
//! Encoding follows the C library's choices, which are not the only valid MessagePack: an
//! integral Lua number becomes the smallest int encoding, any other number a float32 when that
//! is exact and a float64 otherwise; a table whose keys are exactly 1..n becomes an array,
//! anything else a map; tables nested 16 deep become nil (the library's guard against
//! cycles). Decoding knows no bin/ext types ("Bad data format in input.") and, Lua 5.1 having
//! only doubles, turns a uint64 above 2^63 into a negative number as the C code does.

use mlua::{Lua, Table, Value};
use rmp::Marker;

use super::{LUA_C_STACK, STACK_BUDGET, deep};

use super::raise::{Args, LibResult, Raise, c_double_to_i64, lib_function, lua_bytes, number_of};

/// `LUACMSGPACK_MAX_NESTING`.
const MAX_NESTING: u32 = 16;

const VEC_WRITE: &str = "writing to a Vec cannot fail";

fn encode_number(n: f64, out: &mut Vec<u8>) {
    // IS_INT64_EQUIVALENT: not infinite and (int64_t)n == n.
    let i = c_double_to_i64(n);
    if !n.is_infinite() && i as f64 == n {
        rmp::encode::write_sint(out, i).expect(VEC_WRITE);
    } else if n == (n as f32) as f64 {
        rmp::encode::write_f32(out, n as f32).expect(VEC_WRITE);
    } else {
        rmp::encode::write_f64(out, n).expect(VEC_WRITE);
    }
}

/// `table_is_an_array`: every key a number in 1..=INT_MAX, integral, and max key == count.
fn is_array(t: &Table) -> LibResult<bool> {
    let (mut count, mut max) = (0i64, 0i64);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let Some(n) = number_of(&k) else {
            return Ok(false);
        };
        // `(int)n == n` for a positive n: integral and below 2^31.
        if n <= 0.0 || n >= 2_147_483_648.0 || n.fract() != 0.0 {
            return Ok(false);
        }
        max = max.max(n as i64);
        count += 1;
    }
    Ok(max == count)
}

fn encode(v: &Value, level: u32, out: &mut Vec<u8>) -> LibResult<()> {
    match v {
        Value::String(s) => {
            let b = s.as_bytes();
            rmp::encode::write_str_len(out, b.len() as u32).expect(VEC_WRITE);
            out.extend_from_slice(&b);
        }
        Value::Boolean(b) => rmp::encode::write_bool(out, *b).expect(VEC_WRITE),
        Value::Integer(_) | Value::Number(_) => {
            encode_number(number_of(v).expect("matched a number"), out)
        }
        Value::Table(t) if level < MAX_NESTING => {
            if is_array(t)? {
                let len = t.raw_len();
                rmp::encode::write_array_len(out, len as u32).expect(VEC_WRITE);
                for j in 1..=len {
                    // lua_gettable: an __index metamethod is honoured, as in C.
                    let item: Value = t.get(j)?;
                    encode(&item, level + 1, out)?;
                }
            } else {
                // Counted first, as in C; walking twice holds no more than a pair at a time.
                let mut len = 0u32;
                for pair in t.pairs::<Value, Value>() {
                    pair?;
                    len += 1;
                }
                rmp::encode::write_map_len(out, len).expect(VEC_WRITE);
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    encode(&k, level + 1, out)?;
                    encode(&v, level + 1, out)?;
                }
            }
        }
        // nil, functions, userdata, and tables past the nesting limit.
        _ => rmp::encode::write_nil(out).expect(VEC_WRITE),
    }
    Ok(())
}

fn pack(lua: &Lua, args: &Args) -> LibResult<Value> {
    if args.is_empty() {
        return Err(Raise::arg(0, "MessagePack pack needs input."));
    }
    // lua_checkstack(L, nargs) with the nargs arguments already on the stack.
    if args.len() * 2 > LUA_C_STACK {
        return Err(Raise::arg(0, "Too many arguments for MessagePack pack."));
    }
    let mut out = Vec::new();
    for i in 1..=args.len() {
        let v = args.get(i).unwrap_or(Value::Nil);
        encode(&v, 0, &mut out)?;
    }
    Ok(lua_bytes(lua, out)?)
}

/// Why decoding stopped (`MP_CUR_ERROR_*`), or a Lua error raised mid-way.
enum DecodeError {
    Eof,
    BadFormat,
    Raise(Raise),
}

impl From<mlua::Error> for DecodeError {
    fn from(e: mlua::Error) -> Self {
        DecodeError::Raise(e.into())
    }
}

/// `luaL_checkstack(L, 1, msg)` with `used` slots already on the C function's stack.
fn check_stack(used: usize, msg: &str) -> Result<(), DecodeError> {
    if used + 1 > STACK_BUDGET {
        Err(DecodeError::Raise(Raise::error(format!(
            "stack overflow ({msg})"
        ))))
    } else {
        Ok(())
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Eof);
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    /// `mp_decode_to_lua_type`, with `used` stack slots below the value being decoded.
    fn decode(&mut self, lua: &Lua, used: usize) -> Result<Value, DecodeError> {
        if self.left() < 1 {
            return Err(DecodeError::Eof);
        }
        check_stack(
            used,
            "too many return values at once; use unpack_one or unpack_limit instead.",
        )?;
        let marker = Marker::from_u8(self.data[self.pos]);
        // Scalars need their whole encoding present before anything is consumed.
        let num = |n: f64| Ok(Value::Number(n));
        match marker {
            Marker::FixPos(n) => {
                self.pos += 1;
                num(n as f64)
            }
            Marker::FixNeg(n) => {
                self.pos += 1;
                num(n as f64)
            }
            Marker::Null => {
                self.pos += 1;
                Ok(Value::Nil)
            }
            Marker::True | Marker::False => {
                self.pos += 1;
                Ok(Value::Boolean(marker == Marker::True))
            }
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                let width = match marker {
                    Marker::U8 => 1,
                    Marker::U16 => 2,
                    Marker::U32 => 4,
                    _ => 8,
                };
                self.need(1 + width)?;
                self.pos += 1;
                // lua_pushunsigned is lua_pushinteger on 64-bit: a uint64 wraps to signed.
                num(self.be(width)? as i64 as f64)
            }
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                let width = match marker {
                    Marker::I8 => 1,
                    Marker::I16 => 2,
                    Marker::I32 => 4,
                    _ => 8,
                };
                self.need(1 + width)?;
                self.pos += 1;
                let raw = self.be(width)?;
                let shift = 64 - 8 * width as u32;
                num(((raw << shift) as i64 >> shift) as f64)
            }
            Marker::F32 => {
                self.need(5)?;
                self.pos += 1;
                num(f32::from_bits(self.be(4)? as u32) as f64)
            }
            Marker::F64 => {
                self.need(9)?;
                self.pos += 1;
                num(f64::from_bits(self.be(8)?))
            }
            Marker::FixStr(len) => {
                self.need(1 + len as usize)?;
                self.pos += 1;
                let s = self.take(len as usize)?.to_vec();
                Ok(lua_bytes(lua, s)?)
            }
            Marker::Str8 | Marker::Str16 => {
                let width = if marker == Marker::Str8 { 1 } else { 2 };
                self.need(1 + width)?;
                let len = self.peek_be(1, width) as usize;
                self.need(1 + width + len)?;
                self.pos += 1 + width;
                let s = self.take(len)?.to_vec();
                Ok(lua_bytes(lua, s)?)
            }
            Marker::Str32 => {
                self.need(5)?;
                self.pos += 1;
                let len = self.be(4)? as usize;
                let s = self.take(len)?.to_vec();
                Ok(lua_bytes(lua, s)?)
            }
            Marker::FixArray(len) => {
                self.pos += 1;
                self.array(lua, used, len as usize)
            }
            Marker::Array16 | Marker::Array32 => {
                let width = if marker == Marker::Array16 { 2 } else { 4 };
                self.need(1 + width)?;
                self.pos += 1;
                let len = self.be(width)? as usize;
                self.array(lua, used, len)
            }
            Marker::FixMap(len) => {
                self.pos += 1;
                self.map(lua, used, len as usize)
            }
            Marker::Map16 | Marker::Map32 => {
                let width = if marker == Marker::Map16 { 2 } else { 4 };
                self.need(1 + width)?;
                self.pos += 1;
                let len = self.be(width)? as usize;
                self.map(lua, used, len)
            }
            _ => Err(DecodeError::BadFormat),
        }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.left() < n {
            Err(DecodeError::Eof)
        } else {
            Ok(())
        }
    }

    fn peek_be(&self, offset: usize, n: usize) -> u64 {
        self.data[self.pos + offset..self.pos + offset + n]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64)
    }

    fn array(&mut self, lua: &Lua, used: usize, len: usize) -> Result<Value, DecodeError> {
        let t = lua.create_table()?;
        // The table and, while an element decodes, its index sit on the stack.
        check_stack(used + 1, "in function mp_decode_to_lua_array")?;
        for i in 1..=len {
            let v = deep(|| self.decode(lua, used + 2))?;
            t.raw_set(i, v)?;
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, lua: &Lua, used: usize, len: usize) -> Result<Value, DecodeError> {
        let t = lua.create_table()?;
        for _ in 0..len {
            let k = deep(|| self.decode(lua, used + 1))?;
            let v = deep(|| self.decode(lua, used + 2))?;
            // lua_settable: a nil or NaN key is Lua's own error.
            t.raw_set(k, v)?;
        }
        Ok(Value::Table(t))
    }
}

/// `mp_unpack_full`: all values (`limit == 0 && offset == 0`), or up to `limit` values from
/// `offset` preceded by the next offset (-1 once the input is used up).
fn unpack_full(lua: &Lua, data: &[u8], limit: i64, offset: i64) -> LibResult<mlua::MultiValue> {
    let len = data.len() as i64;
    if offset < 0 || limit < 0 {
        // The C message prints the input length where it says "limit".
        return Err(Raise::error(format!(
            "Invalid request to unpack with offset of {} and limit of {}.",
            offset as i32, len as i32
        )));
    } else if offset > len {
        return Err(Raise::error(format!(
            "Start offset {} greater than input length {}.",
            offset as i32, len as i32
        )));
    }
    let decode_all = limit == 0 && offset == 0;
    let limit = if decode_all { i32::MAX as i64 } else { limit };
    let mut c = Cursor {
        data,
        pos: offset as usize,
    };
    let mut values = Vec::new();
    while c.left() > 0 && (values.len() as i64) < limit {
        // One slot for the input string, one per value already decoded.
        match c.decode(lua, 1 + values.len()) {
            Ok(v) => values.push(v),
            Err(DecodeError::Eof) => return Err(Raise::error("Missing bytes in input.")),
            Err(DecodeError::BadFormat) => {
                return Err(Raise::error("Bad data format in input."));
            }
            Err(DecodeError::Raise(r)) => return Err(r),
        }
    }
    if !decode_all {
        if 1 + values.len() + 1 > STACK_BUDGET {
            return Err(Raise::error("stack overflow (in function mp_unpack_full)"));
        }
        let next = if c.left() == 0 { -1 } else { c.pos as i64 };
        values.insert(0, Value::Number(next as f64));
    }
    Ok(mlua::MultiValue::from_vec(values))
}

/// Builds the `cmsgpack` table.
pub fn create(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", lib_function(lua, |lua, a| pack(lua, &a))?)?;
    t.raw_set(
        "unpack",
        lib_function(lua, |lua, a| {
            let data = a.check_bytes(lua, 1)?;
            unpack_full(lua, &data, 0, 0)
        })?,
    )?;
    t.raw_set(
        "unpack_one",
        lib_function(lua, |lua, a| {
            let offset = a.opt_integer(lua, 2, 0)?;
            let data = a.check_bytes(lua, 1)?;
            unpack_full(lua, &data, 1, offset)
        })?,
    )?;
    t.raw_set(
        "unpack_limit",
        lib_function(lua, |lua, a| {
            let limit = a.check_integer(lua, 2)?;
            let offset = a.opt_integer(lua, 3, 0)?;
            let data = a.check_bytes(lua, 1)?;
            unpack_full(lua, &data, limit, offset)
        })?,
    )?;
    t.raw_set("_NAME", "cmsgpack")?;
    t.raw_set("_VERSION", "lua-cmsgpack 0.4.0")?;
    t.raw_set("_COPYRIGHT", "Copyright (C) 2012, Redis Ltd.")?;
    t.raw_set("_DESCRIPTION", "MessagePack C implementation for Lua")?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use crate::script::test_support::{eval, eval_err};

    /// The packed bytes of a Lua expression, as hex.
    fn packed(expr: &str) -> String {
        eval(&format!(
            "local s = cmsgpack.pack({expr}) local t = {{}} \
             for i = 1, #s do t[#t + 1] = string.format('%02x', s:byte(i)) end \
             return table.concat(t)"
        ))
    }

    #[test]
    fn integers_use_the_smallest_encoding() {
        assert_eq!(packed("0"), "00");
        assert_eq!(packed("127"), "7f");
        assert_eq!(packed("128"), "cc80");
        assert_eq!(packed("256"), "cd0100");
        assert_eq!(packed("65536"), "ce00010000");
        assert_eq!(packed("4294967296"), "cf0000000100000000");
        assert_eq!(packed("-1"), "ff");
        assert_eq!(packed("-32"), "e0");
        assert_eq!(packed("-33"), "d0df");
        assert_eq!(packed("-129"), "d1ff7f");
        assert_eq!(packed("-32769"), "d2ffff7fff");
        assert_eq!(packed("-2147483649"), "d3ffffffff7fffffff");
    }

    #[test]
    fn floats_strings_tables() {
        assert_eq!(packed("1.5"), "ca3fc00000");
        assert_eq!(packed("0.1"), "cb3fb999999999999a");
        assert_eq!(packed("'abc'"), "a3616263");
        assert_eq!(
            packed("string.rep('x', 32)"),
            format!("d920{}", "78".repeat(32))
        );
        assert_eq!(packed("true, false, nil"), "c3c2c0");
        assert_eq!(packed("{}"), "90");
        assert_eq!(packed("{1, 2, 3}"), "93010203");
        assert_eq!(packed("{a = 1}"), "81a16101");
        assert_eq!(packed("{[2] = 1}"), "810201");
        assert_eq!(packed("{1, nil, 3}"), "8201010303");
    }

    #[test]
    fn nesting_is_cut_at_16() {
        // 17 nested tables: the innermost becomes nil.
        let code = "local t = {} local c = t for i = 1, 16 do c[1] = {} c = c[1] end \
                    local s = cmsgpack.pack(t) return #s .. ':' .. s:byte(#s)";
        assert_eq!(eval(code), "17:192");
    }

    #[test]
    fn round_trips() {
        assert_eq!(
            eval(
                "local a, b, c = cmsgpack.unpack(cmsgpack.pack(1, 'x', {1, 2})) \
                  return a .. b .. #c .. c[2]"
            ),
            "1x22"
        );
        assert_eq!(
            eval("local t = cmsgpack.unpack(cmsgpack.pack({a = {b = 1.25}})) return t.a.b"),
            "1.25"
        );
        assert_eq!(
            eval("return cmsgpack.unpack(cmsgpack.pack(-2147483649))"),
            "-2147483649"
        );
        assert_eq!(
            eval("return cmsgpack.unpack('\\207\\255\\255\\255\\255\\255\\255\\255\\255')"),
            "-1"
        );
        assert_eq!(eval("return select('#', cmsgpack.unpack(''))"), "0");
    }

    #[test]
    fn unpack_one_and_limit_report_offsets() {
        assert_eq!(
            eval(
                "local s = cmsgpack.pack(1, 2, 3) \
                  local o, v = cmsgpack.unpack_one(s) local o2, v2 = cmsgpack.unpack_one(s, o) \
                  return o .. ',' .. v .. ',' .. o2 .. ',' .. v2"
            ),
            "1,1,2,2"
        );
        assert_eq!(
            eval(
                "local s = cmsgpack.pack(1, 2, 3) \
                  return table.concat({cmsgpack.unpack_limit(s, 5)}, ',')"
            ),
            "-1,1,2,3"
        );
        assert_eq!(
            eval(
                "local s = cmsgpack.pack(1, 2, 3) \
                  return table.concat({cmsgpack.unpack_limit(s, 2, 1)}, ',')"
            ),
            "-1,2,3"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            eval_err("return cmsgpack.pack()"),
            "ERR user_script:1: bad argument #0 to 'pack' (MessagePack pack needs input.)"
        );
        assert_eq!(
            eval_err("return cmsgpack.unpack('\\205\\1')"),
            "ERR user_script:1: Missing bytes in input."
        );
        assert_eq!(
            eval_err("return cmsgpack.unpack('\\193')"),
            "ERR user_script:1: Bad data format in input."
        );
        assert_eq!(
            eval_err("return cmsgpack.unpack_one('\\1', 5)"),
            "ERR user_script:1: Start offset 5 greater than input length 1."
        );
        assert_eq!(
            eval_err("return cmsgpack.unpack_limit('\\1', -1)"),
            "ERR user_script:1: Invalid request to unpack with offset of 0 and limit of 1."
        );
        assert_eq!(
            eval_err("return cmsgpack.unpack(nil)"),
            "ERR user_script:1: bad argument #1 to 'unpack' (string expected, got nil)"
        );
    }

    #[test]
    fn stack_limits_fail_cleanly() {
        let err = eval_err("return cmsgpack.unpack(string.rep('\\145', 10000) .. '\\0')");
        assert!(
            err.starts_with("ERR user_script:1: stack overflow ("),
            "{err}"
        );
        let err = eval_err("return cmsgpack.unpack(string.rep(cmsgpack.pack('a'), 9000))");
        assert_eq!(
            err,
            "ERR user_script:1: stack overflow (too many return values at once; \
             use unpack_one or unpack_limit instead.)"
        );
        assert_eq!(
            eval(
                "local s = string.rep(cmsgpack.pack('a'), 9000) \
                  return select('#', cmsgpack.unpack_limit(s, 100))"
            ),
            "101"
        );
    }
}
