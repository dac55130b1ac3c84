//! `struct`: Roberto Ierusalimschy's struct library (1.4, with Redis's hardening) as bundled
//! with Valkey: `pack`, `unpack`, `size` over the format letters `< > ! x b B h H l L T i I c s
//! f d` and spaces, with x86-64 sizes (`long`, `size_t` 8; `int` 4) and native little endian.

use mlua::{Lua, Table, Value};

use super::raise::{
    Args, LibResult, Raise, TWO_POW_63, c_double_to_i64, lib_function, lua_bytes, to_lua_number,
};

/// Largest `iN` size the library accepts.
const MAXINTSIZE: i64 = 32;
/// `MAXALIGN` on x86-64: the padding before a double in a struct.
const MAXALIGN: i64 = 8;

struct Header {
    little: bool,
    align: u64,
}

impl Header {
    fn new() -> Header {
        Header {
            little: true,
            align: 1,
        }
    }
}

/// The format string as C sees it: up to the first NUL.
fn c_string(bytes: Vec<u8>) -> Vec<u8> {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => bytes[..end].to_vec(),
        None => bytes,
    }
}

/// A format cursor (the C code advances a `const char *`).
struct Format {
    fmt: Vec<u8>,
    pos: usize,
}

impl Format {
    fn next_opt(&mut self) -> Option<u8> {
        let opt = self.fmt.get(self.pos).copied()?;
        self.pos += 1;
        Some(opt)
    }

    /// `getnum`: an optional decimal count after an option, `df` when absent.
    fn getnum(&mut self, df: i64) -> LibResult<i64> {
        if !self.fmt.get(self.pos).is_some_and(u8::is_ascii_digit) {
            return Ok(df);
        }
        let mut a: i64 = 0;
        while let Some(&d) = self.fmt.get(self.pos).filter(|d| d.is_ascii_digit()) {
            let digit = (d - b'0') as i64;
            if a > i32::MAX as i64 / 10 || a * 10 > i32::MAX as i64 - digit {
                return Err(Raise::error("integral size overflow"));
            }
            a = a * 10 + digit;
            self.pos += 1;
        }
        Ok(a)
    }

    /// `optsize`: the size an option occupies (0 for control options).
    fn optsize(&mut self, opt: u8) -> LibResult<u64> {
        Ok(match opt {
            b'B' | b'b' => 1,
            b'H' | b'h' => 2,
            b'L' | b'l' | b'T' => 8,
            b'f' => 4,
            b'd' => 8,
            b'x' => 1,
            b'c' => self.getnum(1)? as u64,
            b'i' | b'I' => {
                let sz = self.getnum(4)?;
                if sz > MAXINTSIZE {
                    return Err(Raise::error(format!(
                        "integral size {sz} is larger than limit of {MAXINTSIZE}"
                    )));
                }
                sz as u64
            }
            _ => 0,
        })
    }

    /// `controloptions`: endianness, alignment and spaces; anything else is invalid.
    fn control(&mut self, opt: u8, h: &mut Header) -> LibResult<()> {
        match opt {
            b' ' => {}
            b'>' => h.little = false,
            b'<' => h.little = true,
            b'!' => {
                let a = self.getnum(MAXALIGN)?;
                if !(a > 0 && a & (a - 1) == 0) {
                    return Err(Raise::error(format!("alignment {a} is not a power of 2")));
                }
                h.align = a as u64;
            }
            _ => {
                let mut msg = b"invalid format option '".to_vec();
                msg.push(opt);
                msg.push(b'\'');
                return Err(Raise::arg(1, msg));
            }
        }
        Ok(())
    }
}

/// `gettoalign`: padding needed before an item of `size` at offset `len`. Sizes need not be
/// powers of two (`i3`); the C arithmetic is unsigned and wraps, and so does this.
fn gettoalign(len: u64, h: &Header, opt: u8, size: u64) -> u64 {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    size.wrapping_sub(len & size.wrapping_sub(1)) & size.wrapping_sub(1)
}

/// C's `(unsigned long)d` on x86-64 (values from 2^63 go through the high-bit path).
fn c_double_to_u64(d: f64) -> u64 {
    if d < TWO_POW_63 {
        c_double_to_i64(d) as u64
    } else {
        (c_double_to_i64(d - TWO_POW_63) as u64) ^ (1 << 63)
    }
}

fn putinteger(out: &mut Vec<u8>, n: f64, little: bool, size: usize) {
    let mut value = if n < 0.0 {
        c_double_to_i64(n) as u64
    } else {
        c_double_to_u64(n)
    };
    let mut buf = vec![0u8; size];
    let order: Box<dyn Iterator<Item = usize>> = if little {
        Box::new(0..size)
    } else {
        Box::new((0..size).rev())
    };
    for i in order {
        buf[i] = (value & 0xff) as u8;
        value = value.checked_shr(8).unwrap_or(0);
    }
    out.extend_from_slice(&buf);
}

fn getinteger(buf: &[u8], little: bool, signed: bool) -> f64 {
    let size = buf.len();
    let mut l: u64 = 0;
    let bytes: Box<dyn Iterator<Item = &u8>> = if little {
        Box::new(buf.iter().rev())
    } else {
        Box::new(buf.iter())
    };
    for &b in bytes {
        l = (l << 8) | b as u64;
    }
    if !signed {
        return l as f64;
    }
    // `~0 << (size*8 - 1)`: x86 masks the shift count, wrapping_shl does the same.
    let mask = u64::MAX.wrapping_shl((size as i32 * 8 - 1) as u32);
    if l & mask != 0 {
        l |= mask;
    }
    l as i64 as f64
}

fn pack(lua: &Lua, args: &Args) -> LibResult<Value> {
    let mut f = Format {
        fmt: c_string(args.check_bytes(lua, 1)?),
        pos: 0,
    };
    let mut h = Header::new();
    let mut arg = 2usize;
    let mut total: u64 = 0;
    let mut out = Vec::new();
    while let Some(opt) = f.next_opt() {
        let mut size = f.optsize(opt)?;
        let toalign = gettoalign(total, &h, opt, size);
        total = total.wrapping_add(toalign);
        out.resize(out.len() + toalign as usize, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = args.check_number(lua, arg)?;
                arg += 1;
                putinteger(&mut out, n, h.little, size as usize);
            }
            b'x' => out.push(0),
            b'f' => {
                let v = args.check_number(lua, arg)? as f32;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'd' => {
                let v = args.check_number(lua, arg)?;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'c' | b's' => {
                let s = args.check_bytes(lua, arg)?;
                arg += 1;
                if size == 0 {
                    size = s.len() as u64;
                }
                // The C code checks after advancing `arg`, so it names the next argument.
                if (s.len() as u64) < size {
                    return Err(Raise::arg(arg as i32, "string too short"));
                }
                out.extend_from_slice(&s[..size as usize]);
                if opt == b's' {
                    out.push(0);
                    size += 1;
                }
            }
            _ => f.control(opt, &mut h)?,
        }
        total = total.wrapping_add(size);
    }
    Ok(lua_bytes(lua, out)?)
}

fn unpack(lua: &Lua, args: &Args) -> LibResult<Vec<Value>> {
    let mut f = Format {
        fmt: c_string(args.check_bytes(lua, 1)?),
        pos: 0,
    };
    let data = args.check_bytes(lua, 2)?;
    let ld = data.len() as u64;
    let mut pos = args.opt_integer(lua, 3, 1)? as u64;
    if pos == 0 {
        return Err(Raise::arg(3, "offset must be 1 or greater"));
    }
    pos -= 1;
    let mut h = Header::new();
    let mut results: Vec<Value> = Vec::new();
    let fits = |pos: u64, size: u64| size <= ld && pos <= ld - size;
    while let Some(opt) = f.next_opt() {
        let mut size = f.optsize(opt)?;
        pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
        if !fits(pos, size) {
            return Err(Raise::arg(2, "data string too short"));
        }
        if args.len() + results.len() + 2 > super::STACK_BUDGET {
            return Err(Raise::error("stack overflow (too many results)"));
        }
        let at = pos as usize;
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let signed = opt.is_ascii_lowercase();
                let n = getinteger(&data[at..at + size as usize], h.little, signed);
                results.push(Value::Number(n));
            }
            b'x' => {}
            b'f' => {
                let b: [u8; 4] = data[at..at + 4].try_into().expect("size 4 checked above");
                let v = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                results.push(Value::Number(v as f64));
            }
            b'd' => {
                let b: [u8; 8] = data[at..at + 8].try_into().expect("size 8 checked above");
                let v = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                results.push(Value::Number(v));
            }
            b'c' => {
                if size == 0 {
                    let prev = match results.last() {
                        Some(v) => to_lua_number(lua, v)?,
                        None => None,
                    };
                    let Some(prev) = prev else {
                        return Err(Raise::error("format 'c0' needs a previous size"));
                    };
                    size = c_double_to_u64(prev);
                    results.pop();
                    if !fits(pos, size) {
                        return Err(Raise::arg(2, "data string too short"));
                    }
                }
                results.push(lua_bytes(lua, &data[at..at + size as usize])?);
            }
            b's' => {
                let Some(len) = data[at..].iter().position(|&b| b == 0) else {
                    return Err(Raise::error("unfinished string in data"));
                };
                size = len as u64 + 1;
                results.push(lua_bytes(lua, &data[at..at + len])?);
            }
            _ => f.control(opt, &mut h)?,
        }
        pos = pos.wrapping_add(size);
    }
    results.push(Value::Number(pos.wrapping_add(1) as i64 as f64));
    Ok(results)
}

fn size(lua: &Lua, args: &Args) -> LibResult<f64> {
    let mut f = Format {
        fmt: c_string(args.check_bytes(lua, 1)?),
        pos: 0,
    };
    let mut h = Header::new();
    let mut pos: u64 = 0;
    while let Some(opt) = f.next_opt() {
        let size = f.optsize(opt)?;
        pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
        if opt == b's' {
            return Err(Raise::arg(1, "option 's' has no fixed size"));
        } else if opt == b'c' && size == 0 {
            return Err(Raise::arg(1, "option 'c0' has no fixed size"));
        }
        if !opt.is_ascii_alphanumeric() {
            f.control(opt, &mut h)?;
        }
        pos = pos.wrapping_add(size);
    }
    Ok(pos as i64 as f64)
}

/// Builds the `struct` table.
pub fn create(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", lib_function(lua, |lua, a| pack(lua, &a))?)?;
    t.raw_set(
        "unpack",
        lib_function(lua, |lua, a| {
            unpack(lua, &a).map(mlua::MultiValue::from_vec)
        })?,
    )?;
    t.raw_set("size", lib_function(lua, |lua, a| size(lua, &a))?)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use crate::script::test_support::{eval, eval_err};

    #[test]
    fn pack_known_bytes() {
        // The encoded bytes, shown as decimal byte values for exactness.
        let bytes = |code: &str| {
            eval(&format!(
                "return table.concat({{string.byte({code}, 1, -1)}}, ',')"
            ))
        };
        assert_eq!(bytes("struct.pack('>I2', 258)"), "1,2");
        assert_eq!(bytes("struct.pack('<I2', 258)"), "2,1");
        assert_eq!(bytes("struct.pack('i', -1)"), "255,255,255,255");
        assert_eq!(bytes("struct.pack('>i3', -2)"), "255,255,254");
        assert_eq!(bytes("struct.pack('b', 200)"), "200");
        assert_eq!(bytes("struct.pack('>h', -2)"), "255,254");
        assert_eq!(bytes("struct.pack('s', 'ab')"), "97,98,0");
        assert_eq!(bytes("struct.pack('c0', 'abc')"), "97,98,99");
        assert_eq!(bytes("struct.pack('c2', 'abc')"), "97,98");
        assert_eq!(bytes("struct.pack('!4 b i', 1, 2)"), "1,0,0,0,2,0,0,0");
        assert_eq!(bytes("struct.pack('bxb', 1, 2)"), "1,0,2");
        assert_eq!(bytes("struct.pack('>d', 1.5)"), "63,248,0,0,0,0,0,0");
        assert_eq!(bytes("struct.pack('<f', 1.5)"), "0,0,192,63");
        assert_eq!(
            bytes("struct.pack('>I16', 1)"),
            "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1"
        );
    }

    #[test]
    fn unpack_round_trips_and_positions() {
        assert_eq!(
            eval("return table.concat({struct.unpack('>I2', struct.pack('>I2', 258))}, ',')"),
            "258,3"
        );
        assert_eq!(
            eval("return table.concat({struct.unpack('<i', struct.pack('<i', -5))}, ',')"),
            "-5,5"
        );
        assert_eq!(
            eval("local a, b, n = struct.unpack('bs', '\\5hi\\0'); return a .. b .. n"),
            "5hi5"
        );
        assert_eq!(
            eval("local s, n = struct.unpack('b c0', '\\3abcd'); return s .. n"),
            "abc5"
        );
        assert_eq!(
            eval("return table.concat({struct.unpack('>d', struct.pack('>d', 0.25))}, ',')"),
            "0.25,9"
        );
        assert_eq!(
            eval("return select('#', struct.unpack('x', 'abc', 2))"),
            "1"
        );
        assert_eq!(eval("return (struct.unpack('x', 'abc', 2))"), "3");
        assert_eq!(eval("return (struct.unpack('B', 'abc', 3))"), "99");
    }

    #[test]
    fn size_of_formats() {
        assert_eq!(eval("return struct.size('i')"), "4");
        assert_eq!(eval("return struct.size('!8 b d')"), "16");
        assert_eq!(eval("return struct.size('bhlT')"), "19");
        assert_eq!(eval("return struct.size('c10')"), "10");
    }

    #[test]
    fn errors_as_the_c_library_raises_them() {
        assert_eq!(
            eval_err("return struct.pack('z', 1)"),
            "ERR user_script:1: bad argument #1 to 'pack' (invalid format option 'z')"
        );
        assert_eq!(
            eval_err("return struct.pack('c5', 'ab')"),
            "ERR user_script:1: bad argument #3 to 'pack' (string too short)"
        );
        assert_eq!(
            eval_err("return struct.unpack('I4', 'ab')"),
            "ERR user_script:1: bad argument #2 to 'unpack' (data string too short)"
        );
        assert_eq!(
            eval_err("return struct.unpack('b', 'a', 0)"),
            "ERR user_script:1: bad argument #3 to 'unpack' (offset must be 1 or greater)"
        );
        assert_eq!(
            eval_err("return struct.pack('i33', 1)"),
            "ERR user_script:1: integral size 33 is larger than limit of 32"
        );
        assert_eq!(
            eval_err("return struct.pack('!3', 1)"),
            "ERR user_script:1: alignment 3 is not a power of 2"
        );
        assert_eq!(
            eval_err("return struct.pack('i99999999999', 1)"),
            "ERR user_script:1: integral size overflow"
        );
        assert_eq!(
            eval_err("return struct.unpack('c0', 'abc')"),
            "ERR user_script:1: format 'c0' needs a previous size"
        );
        assert_eq!(
            eval_err("return struct.unpack('s', 'abc')"),
            "ERR user_script:1: unfinished string in data"
        );
        assert_eq!(
            eval_err("return struct.size('s')"),
            "ERR user_script:1: bad argument #1 to 'size' (option 's' has no fixed size)"
        );
        assert_eq!(
            eval_err("return struct.pack('i', 'x')"),
            "ERR user_script:1: bad argument #2 to 'pack' (number expected, got string)"
        );
    }

    #[test]
    fn too_many_results_fail_cleanly() {
        assert_eq!(
            eval_err("return struct.unpack(string.rep('b', 9000), string.rep('\\1', 9000))"),
            "ERR user_script:1: stack overflow (too many results)"
        );
    }
}
