//! Conversions between RESP replies and Lua values, with Valkey's rules (`script_lua.c`).
//!
//! Command reply → Lua (what `redis.call` returns): integer → number, bulk → string, null
//! bulk / null array → false, array → table, status → `{ok=...}`, error → `{err=...}`; RESP3
//! map → `{map={k=v}}`, set → `{set={v=true}}`, null → nil, boolean → boolean, double →
//! `{double=n}`, big number → `{big_number=s}`, verbatim → `{verbatim_string={format=, string=}}`;
//! attributes are skipped.
//!
//! Lua → reply (a script's return value): number → integer (truncated), string → bulk, table
//! with `err` / `ok` → error / status, `double` / `big_number` / `verbatim_string` / `map` /
//! `set` fields → those RESP3 types (downgraded by the client's protocol), any other table →
//! array up to its first nil, true → `:1` and false → null while the script speaks RESP2
//! (`redis.setresp`), booleans under RESP3; anything else → null.

use mlua::{Lua, Table, Value};

use super::raise::{c_double_to_i64, number_of};
use super::redis_api::error_table;
use super::{STACK_BUDGET, deep};
use crate::protocol::Out;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed() -> mlua::Error {
    mlua::Error::runtime("malformed RESP reply")
}

impl Reader<'_> {
    /// The rest of the current line, without its CRLF.
    fn line(&mut self) -> mlua::Result<&[u8]> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(malformed)?;
        self.pos += end + 2;
        Ok(&rest[..end])
    }

    fn int(&mut self) -> mlua::Result<i64> {
        let line = self.line()?;
        crate::util::parse_i64(line).ok_or_else(malformed)
    }

    fn bytes(&mut self, len: usize) -> mlua::Result<&[u8]> {
        let end = self.pos.checked_add(len).ok_or_else(malformed)?;
        if self.buf.len() < end + 2 || &self.buf[end..end + 2] != b"\r\n" {
            return Err(malformed());
        }
        let s = &self.buf[self.pos..end];
        self.pos = end + 2;
        Ok(s)
    }

    fn count(&mut self) -> mlua::Result<Option<usize>> {
        let n = self.int()?;
        Ok(if n < 0 { None } else { Some(n as usize) })
    }

    fn value(&mut self, lua: &Lua) -> mlua::Result<Value> {
        let kind = *self.buf.get(self.pos).ok_or_else(malformed)?;
        self.pos += 1;
        let one_field = |name: &str, v: Value| -> mlua::Result<Value> {
            let t = lua.create_table()?;
            t.raw_set(name, v)?;
            Ok(Value::Table(t))
        };
        match kind {
            b'+' => {
                let s = lua.create_string(self.line()?)?;
                one_field("ok", Value::String(s))
            }
            b'-' => {
                let text = [b"-".as_slice(), self.line()?].concat();
                let t = error_table(lua, &text)?;
                // The command already counted its error in the stats.
                t.raw_set("ignore_error_stats_update", true)?;
                Ok(Value::Table(t))
            }
            b':' => Ok(Value::Number(self.int()? as f64)),
            b'$' => match self.count()? {
                None => Ok(Value::Boolean(false)),
                Some(len) => Ok(Value::String(lua.create_string(self.bytes(len)?)?)),
            },
            b'*' => match self.count()? {
                None => Ok(Value::Boolean(false)),
                Some(n) => {
                    let t = lua.create_table_with_capacity(n, 0)?;
                    for i in 1..=n {
                        let v = deep(|| self.value(lua))?;
                        t.raw_set(i, v)?;
                    }
                    Ok(Value::Table(t))
                }
            },
            b'%' => {
                let n = self.count()?.ok_or_else(malformed)?;
                let map = lua.create_table_with_capacity(0, n)?;
                for _ in 0..n {
                    let k = deep(|| self.value(lua))?;
                    let v = deep(|| self.value(lua))?;
                    map.raw_set(k, v)?;
                }
                one_field("map", Value::Table(map))
            }
            b'~' => {
                let n = self.count()?.ok_or_else(malformed)?;
                let set = lua.create_table_with_capacity(0, n)?;
                for _ in 0..n {
                    let k = deep(|| self.value(lua))?;
                    set.raw_set(k, true)?;
                }
                one_field("set", Value::Table(set))
            }
            b'_' => {
                self.line()?;
                Ok(Value::Nil)
            }
            b'#' => match self.line()? {
                b"t" => Ok(Value::Boolean(true)),
                b"f" => Ok(Value::Boolean(false)),
                _ => Err(malformed()),
            },
            b',' => {
                let d = c_strtod(self.line()?);
                one_field("double", Value::Number(d))
            }
            b'(' => {
                let s = lua.create_string(self.line()?)?;
                one_field("big_number", Value::String(s))
            }
            b'=' => {
                let len = self.count()?.ok_or_else(malformed)?;
                let payload = self.bytes(len)?;
                if payload.len() < 4 {
                    return Err(malformed());
                }
                let inner = lua.create_table()?;
                inner.raw_set("string", lua.create_string(&payload[4..])?)?;
                inner.raw_set("format", lua.create_string(&payload[..3])?)?;
                one_field("verbatim_string", Value::Table(inner))
            }
            b'|' => {
                // Attributes are not exposed to scripts: parse them, keep the reply.
                let n = self.count()?.ok_or_else(malformed)?;
                for _ in 0..2 * n {
                    deep(|| self.value(lua))?;
                }
                self.value(lua)
            }
            _ => Err(malformed()),
        }
    }
}

/// C's `strtod` over a RESP3 double line (`inf`, `-inf` and `nan` included).
fn c_strtod(text: &[u8]) -> f64 {
    let mut z = text.to_vec();
    z.push(0);
    // Safety: `z` is NUL-terminated; strtod reads no further and does not keep the pointer.
    unsafe { libc::strtod(z.as_ptr() as *const std::ffi::c_char, std::ptr::null_mut()) }
}

/// Converts one encoded reply (RESP2 or RESP3 framing, as a command wrote it for the script's
/// client) into the value `redis.call` returns. Both framings are self-describing, so
/// `_resp3` only documents which one the caller asked the command for.
pub fn reply_to_lua(lua: &Lua, reply: &[u8], _resp3: bool) -> mlua::Result<Value> {
    let mut r = Reader { buf: reply, pos: 0 };
    r.value(lua)
}

/// The bytes of a Lua string as C's `lua_tostring` hands them to `sdsnew`: up to the first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(end) => &b[..end],
        None => b,
    }
}

fn crlf_to_spaces(b: &[u8]) -> Vec<u8> {
    b.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect()
}

/// An error reply the way `addReplyErrorFormatEx("-%s", msg)` writes it: no `ERR` added (the
/// text carries its code), trailing CR/LF trimmed, inner ones turned into spaces.
pub fn write_error(out: &mut Out, msg: &[u8]) {
    let end = msg
        .iter()
        .rposition(|&c| c != b'\r' && c != b'\n')
        .map_or(0, |e| e + 1);
    out.raw(b"-");
    out.raw(&crlf_to_spaces(&msg[..end]));
    out.raw(b"\r\n");
}

fn string_field(t: &Table, name: &str) -> mlua::Result<Option<Vec<u8>>> {
    Ok(match t.raw_get::<Value>(name)? {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    })
}

/// Writes a script's return value as a reply (`luaReplyToServerReply`). `script_resp3` is the
/// protocol the script chose with `redis.setresp` (it decides how booleans come out);
/// `out.resp3` is the client's protocol.
pub fn lua_to_reply(value: &Value, script_resp3: bool, out: &mut Out) -> mlua::Result<()> {
    // The error handler and the result sit on the Lua stack when Valkey starts converting.
    write_value(value, script_resp3, out, 2)
}

/// `used` counts the Lua stack slots Valkey would hold at this point: it refuses to go deeper
/// when `lua_checkstack(4)` fails, which bounds cyclic tables.
fn write_value(value: &Value, script_resp3: bool, out: &mut Out, used: usize) -> mlua::Result<()> {
    if used + 4 > STACK_BUDGET {
        // addReplyError: a message without a code gets ERR.
        write_error(out, b"ERR reached lua stack limit");
        return Ok(());
    }
    match value {
        Value::String(s) => out.bulk(&s.as_bytes()),
        Value::Boolean(b) => {
            if script_resp3 {
                out.boolean(*b);
            } else if *b {
                out.int(1);
            } else {
                out.nil();
            }
        }
        Value::Integer(_) | Value::Number(_) => {
            out.int(c_double_to_i64(number_of(value).expect("matched a number")))
        }
        Value::Table(t) => write_table(t, script_resp3, out, used)?,
        _ => out.nil(),
    }
    Ok(())
}

fn count_pairs(t: &Table) -> mlua::Result<usize> {
    let mut n = 0;
    for pair in t.pairs::<Value, Value>() {
        pair?;
        n += 1;
    }
    Ok(n)
}

fn write_table(t: &Table, script_resp3: bool, out: &mut Out, used: usize) -> mlua::Result<()> {
    if let Some(msg) = string_field(t, "err")? {
        write_error(out, c_str(&msg));
        return Ok(());
    }
    if let Some(ok) = string_field(t, "ok")? {
        out.raw(b"+");
        out.raw(&crlf_to_spaces(c_str(&ok)));
        out.raw(b"\r\n");
        return Ok(());
    }
    if let Some(d) = number_of(&t.raw_get::<Value>("double")?) {
        out.double(d);
        return Ok(());
    }
    if let Some(num) = string_field(t, "big_number")? {
        let num = crlf_to_spaces(&num);
        if out.resp3 {
            out.raw(b"(");
            out.raw(&num);
            out.raw(b"\r\n");
        } else {
            out.bulk(&num);
        }
        return Ok(());
    }
    if let Value::Table(v) = t.raw_get::<Value>("verbatim_string")?
        && let (Some(format), Some(s)) = (string_field(&v, "format")?, string_field(&v, "string")?)
    {
        if out.resp3 {
            // Exactly three format characters: short ones are padded with spaces.
            let format = c_str(&format);
            let mut ext = [b' '; 3];
            for (slot, &c) in ext.iter_mut().zip(format) {
                *slot = c;
            }
            out.raw(format!("={}\r\n", s.len() + 4).as_bytes());
            out.raw(&ext);
            out.raw(b":");
            out.raw(&s);
            out.raw(b"\r\n");
        } else {
            out.bulk(&s);
        }
        return Ok(());
    }
    // Maps, sets and arrays are counted first and walked a second time, so that no more than
    // a few values per level are held at once (see STACK_BUDGET). The slot counts below are
    // those references, which exceed the slots Valkey's C code uses.
    if let Value::Table(map) = t.raw_get::<Value>("map")? {
        out.map(count_pairs(&map)?);
        for pair in map.pairs::<Value, Value>() {
            let (k, v) = pair?;
            deep(|| write_value(&k, script_resp3, out, used + 5))?;
            deep(|| write_value(&v, script_resp3, out, used + 5))?;
        }
        return Ok(());
    }
    if let Value::Table(set) = t.raw_get::<Value>("set")? {
        out.set(count_pairs(&set)?);
        for pair in set.pairs::<Value, Value>() {
            let (k, _) = pair?;
            deep(|| write_value(&k, script_resp3, out, used + 5))?;
        }
        return Ok(());
    }
    // An array: elements 1, 2, ... up to the first nil.
    let mut len = 0;
    while !t.raw_get::<Value>(len + 1)?.is_nil() {
        len += 1;
    }
    out.array(len);
    for i in 1..=len {
        let v: Value = t.raw_get(i)?;
        deep(|| write_value(&v, script_resp3, out, used + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::test_support::sealed_vm;

    fn to_reply(lua: &Lua, code: &str, script_resp3: bool, client_resp3: bool) -> String {
        let v: Value = lua.load(code).eval().unwrap();
        let mut out = Out::new(client_resp3);
        lua_to_reply(&v, script_resp3, &mut out).unwrap();
        String::from_utf8_lossy(&out.buf).into_owned()
    }

    /// The value `redis.call` would return, rendered by cjson for comparison.
    fn from_reply(lua: &Lua, reply: &str) -> String {
        let v = reply_to_lua(lua, reply.as_bytes(), true).unwrap();
        let describe: mlua::Function = lua
            .load(
                "return function(v) \
                   if type(v) == 'table' then return cjson.encode(v) end \
                   return type(v) .. ':' .. tostring(v) end",
            )
            .eval()
            .unwrap();
        describe.call(v).unwrap()
    }

    #[test]
    fn replies_become_lua_values() {
        let lua = sealed_vm();
        assert_eq!(from_reply(&lua, ":42\r\n"), "number:42");
        assert_eq!(from_reply(&lua, "$3\r\nfoo\r\n"), "string:foo");
        assert_eq!(from_reply(&lua, "$-1\r\n"), "boolean:false");
        assert_eq!(from_reply(&lua, "*-1\r\n"), "boolean:false");
        assert_eq!(from_reply(&lua, "+OK\r\n"), r#"{"ok":"OK"}"#);
        assert_eq!(
            from_reply(&lua, "*3\r\n:1\r\n$1\r\na\r\n*1\r\n:2\r\n"),
            r#"[1,"a",[2]]"#
        );
        assert_eq!(from_reply(&lua, "*0\r\n"), "{}");
        assert_eq!(from_reply(&lua, "_\r\n"), "nil:nil");
        assert_eq!(from_reply(&lua, "#t\r\n"), "boolean:true");
        assert_eq!(from_reply(&lua, ",1.5\r\n"), r#"{"double":1.5}"#);
        assert_eq!(
            from_reply(&lua, "(123456789012345678901\r\n"),
            r#"{"big_number":"123456789012345678901"}"#
        );
        assert_eq!(
            from_reply(&lua, "%1\r\n$1\r\nk\r\n:7\r\n"),
            r#"{"map":{"k":7}}"#
        );
        assert_eq!(
            from_reply(&lua, "~1\r\n$1\r\nx\r\n"),
            r#"{"set":{"x":true}}"#
        );
        assert_eq!(
            from_reply(&lua, "=8\r\ntxt:abcd\r\n"),
            r#"{"verbatim_string":{"format":"txt","string":"abcd"}}"#
        );
        assert_eq!(from_reply(&lua, "|1\r\n+a\r\n+b\r\n:5\r\n"), "number:5");
        let err = reply_to_lua(&lua, b"-WRONGTYPE Operation\r\n", false).unwrap();
        let Value::Table(err) = err else {
            panic!("error reply is a table")
        };
        assert_eq!(err.raw_get::<String>("err").unwrap(), "WRONGTYPE Operation");
        assert!(err.raw_get::<bool>("ignore_error_stats_update").unwrap());
        assert!(reply_to_lua(&lua, b"$5\r\nab\r\n", false).is_err());
    }

    #[test]
    fn lua_values_become_replies() {
        let lua = sealed_vm();
        assert_eq!(to_reply(&lua, "return 3.99", false, false), ":3\r\n");
        assert_eq!(to_reply(&lua, "return -3.99", false, false), ":-3\r\n");
        assert_eq!(to_reply(&lua, "return 'x'", false, false), "$1\r\nx\r\n");
        assert_eq!(to_reply(&lua, "return nil", false, false), "$-1\r\n");
        assert_eq!(to_reply(&lua, "return true", false, false), ":1\r\n");
        assert_eq!(to_reply(&lua, "return false", false, false), "$-1\r\n");
        assert_eq!(to_reply(&lua, "return false", false, true), "_\r\n");
        assert_eq!(to_reply(&lua, "return false", true, true), "#f\r\n");
        assert_eq!(to_reply(&lua, "return false", true, false), ":0\r\n");
        assert_eq!(
            to_reply(&lua, "return {1, 'a', {2}, nil, 5}", false, false),
            "*3\r\n:1\r\n$1\r\na\r\n*1\r\n:2\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {ok='FINE'}", false, false),
            "+FINE\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {ok='a\\r\\nb'}", false, false),
            "+a  b\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {err='My Error'}", false, false),
            "-My Error\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return redis.error_reply('My Error')", false, false),
            "-My Error\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {err='x\\n'}", false, false),
            "-x\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {double=1.5}", false, true),
            ",1.5\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {double=1.5}", false, false),
            "$3\r\n1.5\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {big_number='123'}", false, true),
            "(123\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {big_number='123'}", false, false),
            "$3\r\n123\r\n"
        );
        assert_eq!(
            to_reply(
                &lua,
                "return {verbatim_string={format='md', string='hi'}}",
                false,
                true
            ),
            "=6\r\nmd :hi\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {map={a=1}}", false, true),
            "%1\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {map={a=1}}", false, false),
            "*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            to_reply(&lua, "return {set={a=true}}", false, true),
            "~1\r\n$1\r\na\r\n"
        );
        assert_eq!(to_reply(&lua, "return {}", false, false), "*0\r\n");
        assert_eq!(to_reply(&lua, "return cjson.null", false, false), "$-1\r\n");
    }

    #[test]
    fn cyclic_tables_stop_at_the_stack_limit() {
        let lua = sealed_vm();
        let reply = to_reply(&lua, "local t = {} t[1] = t return t", false, false);
        assert!(
            reply.ends_with("-ERR reached lua stack limit\r\n"),
            "{}",
            &reply[reply.len() - 40..]
        );
        assert_eq!(reply.matches("*1\r\n").count(), STACK_BUDGET - 2 - 4 + 1);
    }

    #[test]
    fn large_values_convert_without_holding_every_element() {
        let lua = sealed_vm();
        let reply = to_reply(
            &lua,
            "local t = {} for i = 1, 50000 do t[i] = {tostring(i)} end return t",
            false,
            false,
        );
        assert!(reply.starts_with("*50000\r\n*1\r\n$1\r\n1\r\n"));
        assert!(reply.ends_with("*1\r\n$5\r\n50000\r\n"));
        let reply = to_reply(
            &lua,
            "local m = {} for i = 1, 20000 do m['k' .. i] = {i} end return {map = m}",
            false,
            true,
        );
        assert!(reply.starts_with("%20000\r\n"));
        let mut big = b"*30000\r\n".to_vec();
        for _ in 0..30000 {
            big.extend_from_slice(b"$2\r\nab\r\n");
        }
        let Value::Table(t) = reply_to_lua(&lua, &big, false).unwrap() else {
            panic!("an array")
        };
        assert_eq!(t.raw_len(), 30000);
    }
}
