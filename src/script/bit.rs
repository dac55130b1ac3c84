//! `bit`: LuaBitOp 1.0.2 as bundled with Valkey (32-bit operations, signed 32-bit results).

use mlua::{Lua, Table};

use super::raise::{Args, LibResult, lib_function, lua_bytes, to_lua_number};

/// LuaBitOp's `barg`: the number's low 32 bits after rounding to the nearest integer, taken
/// with the 2^52+2^51 trick (so 2^32 wraps to 0 and 0.5 rounds to even, exactly as in C).
fn barg(lua: &Lua, args: &Args, n: usize) -> LibResult<u32> {
    let num = match args.get(n) {
        Some(v) => to_lua_number(lua, &v)?,
        None => None,
    };
    let b = (num.unwrap_or(0.0) + 6_755_399_441_055_744.0).to_bits() as u32;
    // A zero result from something that is not a number is LuaBitOp's type error.
    if b == 0 && num.is_none() {
        return Err(args.type_error(n, "number"));
    }
    Ok(b)
}

/// `BRET`: results are signed 32-bit numbers.
fn bret(b: u32) -> f64 {
    b as i32 as f64
}

fn fold(lua: &Lua, args: &Args, op: fn(u32, u32) -> u32) -> LibResult<f64> {
    let mut b = barg(lua, args, 1)?;
    // LuaBitOp reads the operands from the last one down to the second.
    for i in (2..=args.len()).rev() {
        b = op(b, barg(lua, args, i)?);
    }
    Ok(bret(b))
}

fn shift(lua: &Lua, args: &Args, op: fn(u32, u32) -> u32) -> LibResult<f64> {
    let b = barg(lua, args, 1)?;
    let n = barg(lua, args, 2)? & 31;
    Ok(bret(op(b, n)))
}

fn tohex(lua: &Lua, args: &Args) -> LibResult<mlua::Value> {
    let mut b = barg(lua, args, 1)?;
    let mut n: i32 = if args.get(2).is_none() {
        8
    } else {
        barg(lua, args, 2)? as i32
    };
    let mut digits = b"0123456789abcdef";
    if n == i32::MIN {
        n = i32::MIN + 1;
    }
    if n < 0 {
        n = -n;
        digits = b"0123456789ABCDEF";
    }
    let n = n.min(8) as usize;
    let mut buf = vec![0u8; n];
    for slot in buf.iter_mut().rev() {
        *slot = digits[(b & 15) as usize];
        b >>= 4;
    }
    Ok(lua_bytes(lua, buf)?)
}

/// Builds the `bit` table.
pub fn create(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "tobit",
        lib_function(lua, |lua, a| Ok(bret(barg(lua, &a, 1)?)))?,
    )?;
    t.raw_set(
        "bnot",
        lib_function(lua, |lua, a| Ok(bret(!barg(lua, &a, 1)?)))?,
    )?;
    t.raw_set(
        "band",
        lib_function(lua, |lua, a| fold(lua, &a, |x, y| x & y))?,
    )?;
    t.raw_set(
        "bor",
        lib_function(lua, |lua, a| fold(lua, &a, |x, y| x | y))?,
    )?;
    t.raw_set(
        "bxor",
        lib_function(lua, |lua, a| fold(lua, &a, |x, y| x ^ y))?,
    )?;
    t.raw_set(
        "lshift",
        lib_function(lua, |lua, a| shift(lua, &a, |b, n| b << n))?,
    )?;
    t.raw_set(
        "rshift",
        lib_function(lua, |lua, a| shift(lua, &a, |b, n| b >> n))?,
    )?;
    t.raw_set(
        "arshift",
        lib_function(lua, |lua, a| {
            shift(lua, &a, |b, n| ((b as i32) >> n) as u32)
        })?,
    )?;
    // C's `b >> (32-n)` with n == 0 shifts by 32, which x86 masks to 0: wrapping_shr does too.
    t.raw_set(
        "rol",
        lib_function(lua, |lua, a| {
            shift(lua, &a, |b, n| (b << n) | b.wrapping_shr(32 - n))
        })?,
    )?;
    t.raw_set(
        "ror",
        lib_function(lua, |lua, a| {
            shift(lua, &a, |b, n| b.wrapping_shl(32 - n) | (b >> n))
        })?,
    )?;
    t.raw_set(
        "bswap",
        lib_function(lua, |lua, a| Ok(bret(barg(lua, &a, 1)?.swap_bytes())))?,
    )?;
    t.raw_set("tohex", lib_function(lua, |lua, a| tohex(lua, &a))?)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use crate::script::test_support::{eval, eval_err};

    #[test]
    fn known_values() {
        assert_eq!(eval("return bit.tohex(-1)"), "ffffffff");
        assert_eq!(eval("return bit.tohex(255, 4)"), "00ff");
        assert_eq!(eval("return bit.tohex(255, -4)"), "00FF");
        assert_eq!(eval("return bit.tohex(0x12345678, 0)"), "");
        assert_eq!(eval("return bit.band(0xffffffff, 1)"), "1");
        assert_eq!(eval("return bit.tobit(0xffffffff)"), "-1");
        assert_eq!(eval("return bit.tobit(2^32 + 5)"), "5");
        assert_eq!(eval("return bit.bnot(0)"), "-1");
        assert_eq!(eval("return bit.bor(1, 2, 4, 8)"), "15");
        assert_eq!(eval("return bit.bxor(0xff, 0x0f)"), "240");
        assert_eq!(eval("return bit.lshift(1, 31)"), "-2147483648");
        assert_eq!(eval("return bit.lshift(1, 33)"), "2");
        assert_eq!(eval("return bit.rshift(-1, 28)"), "15");
        assert_eq!(eval("return bit.arshift(-256, 4)"), "-16");
        assert_eq!(eval("return bit.rol(0x12345678, 12)"), "1164411171");
        assert_eq!(eval("return bit.ror(0x12345678, 12)"), "1736516421");
        assert_eq!(eval("return bit.rol(7, 0)"), "7");
        assert_eq!(eval("return bit.bswap(0x12345678)"), "2018915346");
        assert_eq!(eval("return bit.tobit('12')"), "12");
        assert_eq!(eval("return bit.tobit(1.5)"), "2");
        assert_eq!(eval("return bit.tobit(2.5)"), "2");
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            eval_err("return bit.band(1, nil)"),
            "ERR user_script:1: bad argument #2 to 'band' (number expected, got nil)"
        );
        assert_eq!(
            eval_err("return bit.tobit()"),
            "ERR user_script:1: bad argument #1 to 'tobit' (number expected, got no value)"
        );
        assert_eq!(
            eval_err("return bit.tobit('x')"),
            "ERR user_script:1: bad argument #1 to 'tobit' (number expected, got string)"
        );
    }
}
