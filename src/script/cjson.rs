//! `cjson`: Lua CJSON 2.1.0 as bundled with Valkey.
//!
//! Numbers are printed with C's `%.14g` and read with C's `strtod` (through libc, so `1e400`,
//! hex and the default-accepted `nan`/`inf` behave as in Valkey). A table is an array when all
//! its keys are positive integers and it is not "excessively sparse"; an empty table encodes as
//! `{}`. `/` is escaped as `\/`. JSON null is `cjson.null`, a NULL light userdata. Each table
//! made by `cjson.new()` has its own configuration, as in C.

use std::cell::RefCell;
use std::ffi::c_char;
use std::rc::Rc;

use mlua::{LightUserData, Lua, Table, Value};

use super::raise::{Args, LibResult, Raise, lib_function, lua_bytes, number_of, type_name};
use super::{STACK_BUDGET, deep};

#[derive(Debug, Clone)]
struct Config {
    sparse_convert: bool,
    sparse_ratio: i32,
    sparse_safe: i32,
    encode_max_depth: i32,
    decode_max_depth: i32,
    /// 0 refuse, 1 allow (`nan`, `inf`), 2 encode as `null`.
    encode_invalid_numbers: i32,
    decode_invalid_numbers: bool,
    keep_buffer: bool,
    precision: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            encode_invalid_numbers: 0,
            decode_invalid_numbers: true,
            keep_buffer: true,
            precision: 14,
        }
    }
}

type Shared = Rc<RefCell<Config>>;

pub fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

// ===== configuration functions =====

/// `json_arg_init`: at most `n` arguments.
fn arg_init(args: &Args, n: usize) -> LibResult<()> {
    if args.len() > n {
        return Err(Raise::arg(n as i32 + 1, "found too many arguments"));
    }
    Ok(())
}

/// `json_integer_option`. The range check always names argument 1, as in C.
fn integer_option(
    lua: &Lua,
    args: &Args,
    idx: usize,
    setting: &mut i32,
    min: i32,
    max: i32,
) -> LibResult<Value> {
    if !args.is_none_or_nil(idx) {
        let value = args.check_integer(lua, idx)? as i32;
        if !(min <= value && value <= max) {
            return Err(Raise::arg(
                1,
                format!("expected integer between {min} and {max}"),
            ));
        }
        *setting = value;
    }
    Ok(Value::Number(*setting as f64))
}

/// `json_enum_option` with `bool_true == 1`: a boolean, or one of `options` by name.
fn enum_option(
    lua: &Lua,
    args: &Args,
    idx: usize,
    setting: &mut i32,
    options: &[&str],
) -> LibResult<Value> {
    if !args.is_none_or_nil(idx) {
        if let Some(Value::Boolean(b)) = args.get(idx) {
            *setting = b as i32;
        } else {
            let name = args.check_bytes(lua, idx)?;
            match options.iter().position(|o| o.as_bytes() == name.as_slice()) {
                Some(i) => *setting = i as i32,
                None => {
                    let mut msg = b"invalid option '".to_vec();
                    msg.extend_from_slice(&name);
                    msg.push(b'\'');
                    return Err(Raise::arg(idx as i32, msg));
                }
            }
        }
    }
    if *setting == 0 || *setting == 1 {
        Ok(Value::Boolean(*setting == 1))
    } else {
        Ok(lua_bytes(lua, options[*setting as usize])?)
    }
}

const ON_OFF: &[&str] = &["off", "on"];

fn bool_option(lua: &Lua, args: &Args, idx: usize, setting: &mut bool) -> LibResult<Value> {
    let mut v = *setting as i32;
    let r = enum_option(lua, args, idx, &mut v, ON_OFF)?;
    *setting = v != 0;
    Ok(r)
}

// ===== encoding =====

/// C's `snprintf("%.<precision>g", num)`.
fn format_g(num: f64, precision: i32, out: &mut Vec<u8>) {
    let mut buf = [0u8; 64];
    let fmt = format!("%.{precision}g\0");
    // Safety: the buffer size is passed to snprintf, which NUL-terminates within it; the
    // format string is NUL-terminated and takes exactly one double.
    let len = unsafe {
        libc::snprintf(
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
            fmt.as_ptr() as *const c_char,
            num,
        )
    };
    let len = (len.max(0) as usize).min(buf.len() - 1);
    out.extend_from_slice(&buf[..len]);
}

fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

struct Encoder<'a> {
    cfg: &'a Config,
    out: Vec<u8>,
}

impl Encoder<'_> {
    fn number(&mut self, num: f64) -> LibResult<()> {
        match self.cfg.encode_invalid_numbers {
            0 if num.is_infinite() || num.is_nan() => {
                return Err(Raise::error(
                    "Cannot serialise number: must not be NaN or Inf",
                ));
            }
            1 if num.is_nan() => {
                self.out.extend_from_slice(b"nan");
                return Ok(());
            }
            2 if num.is_infinite() || num.is_nan() => {
                self.out.extend_from_slice(b"null");
                return Ok(());
            }
            _ => {}
        }
        format_g(num, self.cfg.precision, &mut self.out);
        Ok(())
    }

    /// `lua_array_length`: the array length, or `None` for an object.
    fn array_length(&self, t: &Table) -> LibResult<Option<i64>> {
        let (mut max, mut items) = (0i64, 0i64);
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair?;
            match number_of(&k) {
                Some(k) if k != 0.0 && k.floor() == k && k >= 1.0 => {
                    max = max.max(k.min(i64::MAX as f64) as i64);
                    items += 1;
                }
                _ => return Ok(None),
            }
        }
        let ratio = self.cfg.sparse_ratio as i64;
        if ratio > 0 && max > items * ratio && max > self.cfg.sparse_safe as i64 {
            if !self.cfg.sparse_convert {
                return Err(Raise::error(
                    "Cannot serialise table: excessively sparse array",
                ));
            }
            return Ok(None);
        }
        Ok(Some(max))
    }

    /// `json_append_data`. `used` counts the Lua stack slots the C code would hold here (the
    /// argument, then a value per array level and a key and value per object level), as the
    /// references the Rust side holds instead (two per array level, four per object level:
    /// the iterator keeps the table and key too): C fails `lua_checkstack` at its limit with
    /// the nesting error.
    fn value(&mut self, v: &Value, depth: i32, used: usize) -> LibResult<()> {
        match v {
            Value::String(s) => escape_into(&s.as_bytes(), &mut self.out),
            Value::Integer(_) | Value::Number(_) => {
                self.number(number_of(v).expect("matched a number"))?
            }
            Value::Boolean(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Nil => self.out.extend_from_slice(b"null"),
            Value::LightUserData(p) if p.0.is_null() => self.out.extend_from_slice(b"null"),
            Value::Table(t) => {
                let depth = depth + 1;
                if depth > self.cfg.encode_max_depth || used + 3 > STACK_BUDGET {
                    return Err(Raise::error(format!(
                        "Cannot serialise, excessive nesting ({depth})"
                    )));
                }
                match self.array_length(t)? {
                    Some(len) if len > 0 => {
                        self.out.push(b'[');
                        for i in 1..=len {
                            if i > 1 {
                                self.out.push(b',');
                            }
                            let item: Value = t.raw_get(i)?;
                            deep(|| self.value(&item, depth, used + 2))?;
                        }
                        self.out.push(b']');
                    }
                    _ => {
                        self.out.push(b'{');
                        let mut first = true;
                        for pair in t.pairs::<Value, Value>() {
                            let (k, item) = pair?;
                            if !first {
                                self.out.push(b',');
                            }
                            first = false;
                            match &k {
                                Value::Integer(_) | Value::Number(_) => {
                                    self.out.push(b'"');
                                    self.number(number_of(&k).expect("matched a number"))?;
                                    self.out.extend_from_slice(b"\":");
                                }
                                Value::String(s) => {
                                    escape_into(&s.as_bytes(), &mut self.out);
                                    self.out.push(b':');
                                }
                                other => {
                                    return Err(Raise::error(format!(
                                        "Cannot serialise {}: table key must be a number or string",
                                        type_name(other)
                                    )));
                                }
                            }
                            deep(|| self.value(&item, depth, used + 4))?;
                        }
                        self.out.push(b'}');
                    }
                }
            }
            other => {
                return Err(Raise::error(format!(
                    "Cannot serialise {}: type not supported",
                    type_name(other)
                )));
            }
        }
        Ok(())
    }
}

fn encode(lua: &Lua, cfg: &Config, args: &Args) -> LibResult<Value> {
    if args.len() != 1 {
        return Err(Raise::arg(1, "expected 1 argument"));
    }
    let mut enc = Encoder {
        cfg,
        out: Vec::new(),
    };
    enc.value(&args.get(1).unwrap_or(Value::Nil), 0, 1)?;
    Ok(lua_bytes(lua, enc.out)?)
}

// ===== decoding =====

#[derive(Debug)]
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Tok {
    /// What a parse error says was found.
    fn found(&self) -> &'static str {
        match self {
            Tok::ObjBegin => "T_OBJ_BEGIN",
            Tok::ObjEnd => "T_OBJ_END",
            Tok::ArrBegin => "T_ARR_BEGIN",
            Tok::ArrEnd => "T_ARR_END",
            Tok::Str(_) => "T_STRING",
            Tok::Num(_) => "T_NUMBER",
            Tok::Bool(_) => "T_BOOLEAN",
            Tok::Null => "T_NULL",
            Tok::Colon => "T_COLON",
            Tok::Comma => "T_COMMA",
            Tok::End => "T_END",
            Tok::Error(what) => what,
        }
    }
}

struct Token {
    tok: Tok,
    /// 0-based offset the error message reports (plus one).
    index: usize,
}

struct Parser<'a> {
    lua: &'a Lua,
    cfg: &'a Config,
    /// The JSON text followed by a NUL, which ends parsing as in C.
    data: Vec<u8>,
    ptr: usize,
    depth: i32,
}

fn hexdigit(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as u32),
        _ => match c | 0x20 {
            c @ b'a'..=b'f' => Some((c - b'a' + 10) as u32),
            _ => None,
        },
    }
}

fn codepoint_to_utf8(cp: u32, out: &mut Vec<u8>) -> bool {
    if cp <= 0x7f {
        out.push(cp as u8);
    } else if cp <= 0x7ff {
        out.extend_from_slice(&[(cp >> 6) as u8 | 0xc0, (cp & 0x3f) as u8 | 0x80]);
    } else if cp <= 0xffff {
        out.extend_from_slice(&[
            (cp >> 12) as u8 | 0xe0,
            ((cp >> 6) & 0x3f) as u8 | 0x80,
            (cp & 0x3f) as u8 | 0x80,
        ]);
    } else if cp <= 0x1f_ffff {
        out.extend_from_slice(&[
            (cp >> 18) as u8 | 0xf0,
            ((cp >> 12) & 0x3f) as u8 | 0x80,
            ((cp >> 6) & 0x3f) as u8 | 0x80,
            (cp & 0x3f) as u8 | 0x80,
        ]);
    } else {
        return false;
    }
    true
}

impl Parser<'_> {
    fn at(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        (0..4).try_fold(0u32, |acc, i| Some((acc << 4) | hexdigit(self.at(at + i))?))
    }

    /// `json_append_unicode_escape` at `\uXXXX`: appends UTF-8, advances past the escape(s).
    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(mut cp) = self.hex4(self.ptr + 2) else {
            return false;
        };
        let mut escape_len = 6;
        if cp & 0xf800 == 0xd800 {
            // A surrogate: must be a high one, followed by `\u` and a low one.
            if cp & 0x400 != 0 {
                return false;
            }
            if self.at(self.ptr + 6) != b'\\' || self.at(self.ptr + 7) != b'u' {
                return false;
            }
            let Some(low) = self.hex4(self.ptr + 8) else {
                return false;
            };
            if low & 0xfc00 != 0xdc00 {
                return false;
            }
            cp = (((cp & 0x3ff) << 10) | (low & 0x3ff)) + 0x10000;
            escape_len = 12;
        }
        if !codepoint_to_utf8(cp, out) {
            return false;
        }
        self.ptr += escape_len;
        true
    }

    fn string_token(&mut self) -> Tok {
        self.ptr += 1;
        let mut s = Vec::new();
        loop {
            let ch = self.at(self.ptr);
            if ch == b'"' {
                break;
            }
            if ch == 0 {
                return Tok::Error("unexpected end of string");
            }
            let mut c = ch;
            if ch == b'\\' {
                c = match self.at(self.ptr + 1) {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'u' => {
                        if self.unicode_escape(&mut s) {
                            continue;
                        }
                        return Tok::Error("invalid unicode escape code");
                    }
                    _ => return Tok::Error("invalid escape code"),
                };
                self.ptr += 1;
            }
            s.push(c);
            self.ptr += 1;
        }
        self.ptr += 1;
        Tok::Str(s)
    }

    /// `json_is_invalid_number`: forms strtod accepts but strict JSON does not.
    fn is_invalid_number(&self) -> bool {
        let mut p = self.ptr;
        if self.at(p) == b'+' {
            return true;
        }
        if self.at(p) == b'-' {
            p += 1;
        }
        if self.at(p) == b'0' {
            let ch2 = self.at(p + 1);
            return ch2 | 0x20 == b'x' || ch2.is_ascii_digit();
        }
        // `*p <= '9'` on a signed char: bytes from 0x80 count as "ordinary number" too.
        if (self.at(p) as i8) <= b'9' as i8 {
            return false;
        }
        let word = |w: &[u8]| (0..3).all(|i| self.at(p + i).to_ascii_lowercase() == w[i]);
        word(b"inf") || word(b"nan")
    }

    fn number_token(&mut self) -> Tok {
        let start = self.data[self.ptr..].as_ptr() as *const c_char;
        let mut end: *mut c_char = std::ptr::null_mut();
        // Safety: `data` ends with a NUL, so strtod stops inside the buffer.
        let v = unsafe { libc::strtod(start, &mut end) };
        let consumed = end as usize - start as usize;
        if consumed == 0 {
            return Tok::Error("invalid number");
        }
        self.ptr += consumed;
        Tok::Num(v)
    }

    fn next_token(&mut self) -> Token {
        while matches!(self.at(self.ptr), b' ' | b'\t' | b'\n' | b'\r') {
            self.ptr += 1;
        }
        let index = self.ptr;
        let ch = self.at(self.ptr);
        let single = match ch {
            b'{' => Some(Tok::ObjBegin),
            b'}' => Some(Tok::ObjEnd),
            b'[' => Some(Tok::ArrBegin),
            b']' => Some(Tok::ArrEnd),
            b',' => Some(Tok::Comma),
            b':' => Some(Tok::Colon),
            _ => None,
        };
        if let Some(tok) = single {
            self.ptr += 1;
            return Token { tok, index };
        }
        let tok = match ch {
            0 => Tok::End,
            b'"' => self.string_token(),
            b'-' | b'0'..=b'9' => {
                if !self.cfg.decode_invalid_numbers && self.is_invalid_number() {
                    Tok::Error("invalid number")
                } else {
                    self.number_token()
                }
            }
            b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+' => {
                let rest = &self.data[self.ptr..];
                if rest.starts_with(b"true") {
                    self.ptr += 4;
                    Tok::Bool(true)
                } else if rest.starts_with(b"false") {
                    self.ptr += 5;
                    Tok::Bool(false)
                } else if rest.starts_with(b"null") {
                    self.ptr += 4;
                    Tok::Null
                } else if self.cfg.decode_invalid_numbers && self.is_invalid_number() {
                    self.number_token()
                } else {
                    Tok::Error("invalid token")
                }
            }
            _ => Tok::Error("invalid token"),
        };
        // An error token reports where the scan stopped (inside a bad string, say).
        let index = if matches!(tok, Tok::Error(_)) {
            self.ptr
        } else {
            index
        };
        Token { tok, index }
    }

    fn parse_error(&self, expected: &str, token: &Token) -> Raise {
        Raise::error(format!(
            "Expected {expected} but found {} at character {}",
            token.tok.found(),
            token.index + 1
        ))
    }

    /// `json_decode_descend`: one more nesting level, with `slots` stack slots needed on top
    /// of the `used` ones.
    fn descend(&mut self, used: usize, slots: usize) -> LibResult<()> {
        self.depth += 1;
        if self.depth <= self.cfg.decode_max_depth && used + slots <= STACK_BUDGET {
            return Ok(());
        }
        Err(Raise::error(format!(
            "Found too many nested data structures ({}) at character {}",
            self.depth, self.ptr
        )))
    }

    fn value(&mut self, token: Token, used: usize) -> LibResult<Value> {
        Ok(match token.tok {
            Tok::Str(s) => lua_bytes(self.lua, s)?,
            Tok::Num(n) => Value::Number(n),
            Tok::Bool(b) => Value::Boolean(b),
            Tok::Null => null(),
            Tok::ObjBegin => deep(|| self.object(used))?,
            Tok::ArrBegin => deep(|| self.array(used))?,
            _ => return Err(self.parse_error("value", &token)),
        })
    }

    fn object(&mut self, used: usize) -> LibResult<Value> {
        self.descend(used, 3)?;
        let t = self.lua.create_table()?;
        let mut token = self.next_token();
        if matches!(token.tok, Tok::ObjEnd) {
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        loop {
            let Tok::Str(key) = token.tok else {
                return Err(self.parse_error("object key string", &token));
            };
            let colon = self.next_token();
            if !matches!(colon.tok, Tok::Colon) {
                return Err(self.parse_error("colon", &colon));
            }
            let next = self.next_token();
            let v = self.value(next, used + 2)?;
            t.raw_set(lua_bytes(self.lua, key)?, v)?;
            token = self.next_token();
            match token.tok {
                Tok::ObjEnd => {
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                Tok::Comma => token = self.next_token(),
                _ => return Err(self.parse_error("comma or object end", &token)),
            }
        }
    }

    fn array(&mut self, used: usize) -> LibResult<Value> {
        self.descend(used, 2)?;
        let t = self.lua.create_table()?;
        let mut token = self.next_token();
        if matches!(token.tok, Tok::ArrEnd) {
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        let mut i = 1i64;
        loop {
            let v = self.value(token, used + 1)?;
            t.raw_set(i, v)?;
            i += 1;
            token = self.next_token();
            match token.tok {
                Tok::ArrEnd => {
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                Tok::Comma => token = self.next_token(),
                _ => return Err(self.parse_error("comma or array end", &token)),
            }
        }
    }
}

fn decode(lua: &Lua, cfg: &Config, args: &Args) -> LibResult<Value> {
    if args.len() != 1 {
        return Err(Raise::arg(1, "expected 1 argument"));
    }
    let text = args.check_bytes(lua, 1)?;
    if text.len() >= 2 && (text[0] == 0 || text[1] == 0) {
        return Err(Raise::error(
            "JSON parser does not support UTF-16 or UTF-32",
        ));
    }
    let mut data = text;
    data.push(0);
    let mut p = Parser {
        lua,
        cfg,
        data,
        ptr: 0,
        depth: 0,
    };
    let first = p.next_token();
    let v = p.value(first, 1)?;
    let last = p.next_token();
    if !matches!(last.tok, Tok::End) {
        return Err(p.parse_error("the end", &last));
    }
    Ok(v)
}

// ===== module =====

/// Builds a `cjson` table with its own configuration (`luaopen_cjson`, `cjson.new`).
pub fn create(lua: &Lua) -> mlua::Result<Table> {
    let cfg: Shared = Rc::new(RefCell::new(Config::default()));
    let t = lua.create_table()?;
    let c = cfg.clone();
    t.raw_set(
        "encode",
        lib_function(lua, move |lua, a| encode(lua, &c.borrow().clone(), &a))?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "decode",
        lib_function(lua, move |lua, a| decode(lua, &c.borrow().clone(), &a))?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_sparse_array",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 3)?;
            let mut cfg = c.borrow_mut();
            let mut convert = cfg.sparse_convert as i32;
            let r1 = enum_option(lua, &a, 1, &mut convert, ON_OFF)?;
            cfg.sparse_convert = convert != 0;
            let r2 = integer_option(lua, &a, 2, &mut cfg.sparse_ratio, 0, i32::MAX)?;
            let r3 = integer_option(lua, &a, 3, &mut cfg.sparse_safe, 0, i32::MAX)?;
            Ok(mlua::MultiValue::from_vec(vec![r1, r2, r3]))
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_max_depth",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 1)?;
            integer_option(
                lua,
                &a,
                1,
                &mut c.borrow_mut().encode_max_depth,
                1,
                i32::MAX,
            )
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "decode_max_depth",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 1)?;
            integer_option(
                lua,
                &a,
                1,
                &mut c.borrow_mut().decode_max_depth,
                1,
                i32::MAX,
            )
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_number_precision",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 1)?;
            integer_option(lua, &a, 1, &mut c.borrow_mut().precision, 1, 14)
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_keep_buffer",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 1)?;
            bool_option(lua, &a, 1, &mut c.borrow_mut().keep_buffer)
        })?,
    )?;
    let c = cfg.clone();
    t.raw_set(
        "encode_invalid_numbers",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 1)?;
            let mut cfg = c.borrow_mut();
            enum_option(
                lua,
                &a,
                1,
                &mut cfg.encode_invalid_numbers,
                &["off", "on", "null"],
            )
        })?,
    )?;
    let c = cfg;
    t.raw_set(
        "decode_invalid_numbers",
        lib_function(lua, move |lua, a| {
            arg_init(&a, 1)?;
            bool_option(lua, &a, 1, &mut c.borrow_mut().decode_invalid_numbers)
        })?,
    )?;
    t.raw_set("new", lib_function(lua, |lua, _a| Ok(create(lua)?))?)?;
    t.raw_set("null", null())?;
    t.raw_set("_NAME", "cjson")?;
    t.raw_set("_VERSION", "2.1.0")?;
    Ok(t)
}

/// Used by the byte-exact tests: C's `%.14g` for a value.
#[cfg(test)]
pub(crate) fn g14(v: f64) -> String {
    let mut out = Vec::new();
    format_g(v, 14, &mut out);
    String::from_utf8(out).expect("printf output is ASCII")
}

#[cfg(test)]
mod tests {
    use super::g14;
    use crate::script::test_support::{eval, eval_err};

    #[test]
    fn percent_g_formatting() {
        assert_eq!(g14(1.0), "1");
        assert_eq!(g14(0.1), "0.1");
        assert_eq!(g14(1e20), "1e+20");
        assert_eq!(g14(123456789012345.0), "1.2345678901234e+14");
        assert_eq!(g14(-0.0), "-0");
    }

    #[test]
    fn encode_values() {
        assert_eq!(eval("return cjson.encode({1,2,3})"), "[1,2,3]");
        assert_eq!(eval("return cjson.encode({a=1})"), r#"{"a":1}"#);
        assert_eq!(eval("return cjson.encode({})"), "{}");
        assert_eq!(eval("return cjson.encode('a/b\"c\\\\')"), r#""a\/b\"c\\""#);
        assert_eq!(
            eval("return cjson.encode('\\1\\8\\127')"),
            r#""\u0001\b\u007f""#
        );
        assert_eq!(eval("return cjson.encode(0.1)"), "0.1");
        assert_eq!(eval("return cjson.encode(1/3)"), "0.33333333333333");
        assert_eq!(
            eval("return cjson.encode({true, false, cjson.null})"),
            "[true,false,null]"
        );
        assert_eq!(eval("return cjson.encode(nil)"), "null");
        assert_eq!(eval("return cjson.encode({[1]=1, [3]=3})"), "[1,null,3]");
        assert_eq!(eval("return cjson.encode({[2]=2})"), "[null,2]");
        assert_eq!(eval("return cjson.encode({[1.5]=1})"), r#"{"1.5":1}"#);
        assert_eq!(eval("return cjson.encode({[0]=1})"), r#"{"0":1}"#);
        assert_eq!(eval("return cjson.encode({{a={}}})"), r#"[{"a":{}}]"#);
    }

    #[test]
    fn encode_errors() {
        assert_eq!(
            eval_err("return cjson.encode({[20]=1})"),
            "ERR user_script:1: Cannot serialise table: excessively sparse array"
        );
        assert_eq!(
            eval_err("return cjson.encode(1/0)"),
            "ERR user_script:1: Cannot serialise number: must not be NaN or Inf"
        );
        assert_eq!(
            eval_err("return cjson.encode(function() end)"),
            "ERR user_script:1: Cannot serialise function: type not supported"
        );
        assert_eq!(
            eval_err("return cjson.encode({[true]=1})"),
            "ERR user_script:1: Cannot serialise boolean: table key must be a number or string"
        );
        assert_eq!(
            eval_err("return cjson.encode()"),
            "ERR user_script:1: bad argument #1 to 'encode' (expected 1 argument)"
        );
        assert_eq!(
            eval_err("local t = {} t[1] = t return cjson.encode(t)"),
            "ERR user_script:1: Cannot serialise, excessive nesting (1001)"
        );
    }

    #[test]
    fn encode_configuration() {
        assert_eq!(
            eval("cjson.encode_sparse_array(true) return cjson.encode({[20]=1})"),
            r#"{"20":1}"#
        );
        assert_eq!(
            eval("cjson.encode_invalid_numbers('null') return cjson.encode({1/0})"),
            "[null]"
        );
        assert_eq!(
            eval("cjson.encode_invalid_numbers(true) return cjson.encode({1/0, 0/0})"),
            "[inf,nan]"
        );
        assert_eq!(
            eval("cjson.encode_number_precision(3) return cjson.encode(3.14159)"),
            "3.14"
        );
        assert_eq!(
            eval("cjson.encode_max_depth(2) return (pcall(cjson.encode, {{{}}}))"),
            "false"
        );
        assert_eq!(
            eval("return table.concat({tostring(cjson.encode_sparse_array())}, ',')"),
            "false"
        );
        assert_eq!(
            eval_err("return cjson.encode_number_precision(15)"),
            "ERR user_script:1: bad argument #1 to 'encode_number_precision' \
             (expected integer between 1 and 14)"
        );
        assert_eq!(
            eval_err("return cjson.encode_keep_buffer('maybe')"),
            "ERR user_script:1: bad argument #1 to 'encode_keep_buffer' (invalid option 'maybe')"
        );
        // Each cjson.new() table has its own configuration.
        assert_eq!(
            eval(
                "local c = cjson.new() c.encode_number_precision(2) \
                  return c.encode(3.14159) .. ' ' .. cjson.encode(3.14159)"
            ),
            "3.1 3.14159"
        );
    }

    #[test]
    fn decode_values() {
        assert_eq!(
            eval(
                "local t = cjson.decode('[1,\"a\",null]') \
                  return #t .. t[2] .. tostring(t[3] == cjson.null)"
            ),
            "3atrue"
        );
        assert_eq!(
            eval("return cjson.decode('{\"a\":{\"b\":[10]}}').a.b[1]"),
            "10"
        );
        assert_eq!(eval("return cjson.decode(' 12.5e1 ')"), "125");
        assert_eq!(
            eval("return cjson.decode('\"\\\\u00e9\\\\n\"')"),
            "\u{e9}\n"
        );
        assert_eq!(
            eval("return cjson.decode('\"\\\\ud83d\\\\ude00\"')"),
            "\u{1f600}"
        );
        assert_eq!(eval("return tostring(cjson.decode('true'))"), "true");
        // strtod's extras are accepted while decode_invalid_numbers is on (the default).
        assert_eq!(eval("return cjson.decode('0x10')"), "16");
        assert_eq!(eval("return tostring(cjson.decode('-Infinity'))"), "-inf");
        assert_eq!(eval("return cjson.decode('+5')"), "5");
        assert_eq!(eval("return cjson.decode(42)"), "42");
    }

    #[test]
    fn decode_errors() {
        let err = |json: &str| eval_err(&format!("return cjson.decode('{json}')"));
        assert_eq!(
            err("x"),
            "ERR user_script:1: Expected value but found invalid token at character 1"
        );
        assert_eq!(
            err(""),
            "ERR user_script:1: Expected value but found T_END at character 1"
        );
        assert_eq!(
            err("[1,]"),
            "ERR user_script:1: Expected value but found T_ARR_END at character 4"
        );
        assert_eq!(
            err("{\"a\" 1}"),
            "ERR user_script:1: Expected colon but found T_NUMBER at character 6"
        );
        assert_eq!(
            err("{1:2}"),
            "ERR user_script:1: Expected object key string but found T_NUMBER at character 2"
        );
        assert_eq!(
            err("[1 2]"),
            "ERR user_script:1: Expected comma or array end but found T_NUMBER at character 4"
        );
        assert_eq!(
            err("[1] x"),
            "ERR user_script:1: Expected the end but found invalid token at character 5"
        );
        assert_eq!(
            err("\"abc"),
            "ERR user_script:1: Expected value but found unexpected end of string at character 5"
        );
        assert_eq!(
            err("\"a\\\\qb\""),
            "ERR user_script:1: Expected value but found invalid escape code at character 3"
        );
        assert_eq!(
            err("\"\\\\ud800\""),
            "ERR user_script:1: Expected value but found invalid unicode escape code at character 2"
        );
        assert_eq!(
            eval_err("cjson.decode_max_depth(1) return cjson.decode('[[1]]')"),
            "ERR user_script:1: Found too many nested data structures (2) at character 2"
        );
        assert_eq!(
            eval_err("cjson.decode_invalid_numbers(false) return cjson.decode('0x10')"),
            "ERR user_script:1: Expected value but found invalid number at character 1"
        );
        assert_eq!(
            eval_err("return cjson.decode('\\0a')"),
            "ERR user_script:1: JSON parser does not support UTF-16 or UTF-32"
        );
    }

    #[test]
    fn deep_nesting_fails_cleanly_past_the_stack_budget() {
        let err = eval_err(
            "cjson.decode_max_depth(100000) \
             return cjson.decode(string.rep('[', 10000) .. string.rep(']', 10000))",
        );
        assert!(
            err.contains("Found too many nested data structures"),
            "{err}"
        );
        let err = eval_err(
            "cjson.encode_max_depth(100000) local t = {} local c = t \
             for i = 1, 10000 do c[1] = {} c = c[1] end return cjson.encode(t)",
        );
        assert!(err.contains("Cannot serialise, excessive nesting"), "{err}");
        // Within the budget, deep documents work both ways.
        assert_eq!(
            eval(
                "cjson.decode_max_depth(3000) cjson.encode_max_depth(3000) \
                  local s = string.rep('[', 2500) .. string.rep(']', 2500) \
                  return tostring(cjson.encode(cjson.decode(s)) == string.rep('[', 2499) .. '{}' .. string.rep(']', 2499))"
            ),
            "true"
        );
    }
}
