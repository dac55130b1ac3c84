//! Behaviours Valkey's own scripting tests pin down (`tests/unit/scripting.tcl`), checked
//! against this VM with the expected values those tests use.

use crate::protocol::Out;
use crate::script::test_support::{eval, eval_err, sealed_vm};
use crate::script::{compile_script, lua_to_reply, run_script};

/// The reply a script's return value becomes for a RESP2 client.
fn reply_of(code: &str) -> String {
    let lua = sealed_vm();
    let f = compile_script(&lua, code.as_bytes()).unwrap();
    let v = run_script(&lua, &f, ()).unwrap();
    let mut out = Out::new(false);
    lua_to_reply(&v, false, &mut out).unwrap();
    String::from_utf8(out.buf).unwrap()
}

fn hex_of(expr: &str) -> String {
    eval(&format!(
        "local s = {expr} local h = {{}} \
         for i = 1, #s do h[#h + 1] = string.format('%02x', s:byte(i)) end \
         return table.concat(h)"
    ))
}

#[test]
fn return_values() {
    assert_eq!(reply_of("return _G"), "*0\r\n");
    assert_eq!(
        reply_of("local a = {} setmetatable(a, {__index = function() foo() end}) return a"),
        "*0\r\n"
    );
    assert_eq!(reply_of("return 100.5"), ":100\r\n");
    assert_eq!(
        reply_of("return {1, 2, 3, 'ciao', {1, 2}}"),
        "*5\r\n:1\r\n:2\r\n:3\r\n$4\r\nciao\r\n*2\r\n:1\r\n:2\r\n"
    );
    assert_eq!(
        reply_of("return {err = 'ERR this is an error'}"),
        "-ERR this is an error\r\n"
    );
}

#[test]
fn json_numbers_and_smoke() {
    assert_eq!(
        eval("return table.concat(cjson.decode('[0.0, -5e3, -1, 0.3e-3, 1023.2, 0e10]'), ' ')"),
        "0 -5000 -1 0.0003 1023.2 0"
    );
    // Round trips, invalid keys, depth limits and invalid numbers, as the smoke test walks them.
    let code = "
        local m = {s1 = 'text', n1 = 100, a1 = {'x', 'y', 'z'}, b1 = true, b2 = false}
        local d = cjson.decode(cjson.encode(m))
        assert(d.s1 == 'text' and d.n1 == 100 and d.a1[3] == 'z' and d.b2 == false)
        cjson.encode_keep_buffer(false)
        assert(cjson.decode(cjson.encode(m)).a1[2] == 'y')
        local t = cjson.decode(cjson.encode({one = 'one', [1] = 'one'}))
        assert(t['one'] == 'one' and t['1'] == 'one')
        local bad = {} bad[false] = 'false'
        assert(pcall(cjson.encode, bad) == false)
        cjson.encode_max_depth(1)
        assert(pcall(cjson.encode, m) == false)
        cjson.decode_max_depth(1)
        assert(pcall(cjson.decode, '{\"obj\": {\"array\": [1,2,3,4]}}') == false)
        assert(pcall(cjson.encode, {num1 = 0/0}) == false)
        cjson.encode_invalid_numbers(true)
        assert(pcall(cjson.encode, {num1 = 0/0}) == true)
        return 'ok'";
    assert_eq!(eval(code), "ok");
}

#[test]
fn msgpack_cases() {
    assert_eq!(hex_of("cmsgpack.pack(0.1)"), "cb3fb999999999999a");
    assert_eq!(
        hex_of("cmsgpack.pack(-1099511627776)"),
        "d3ffffff0000000000"
    );
    // Two tables referencing each other: encoded 16 levels deep, then nil.
    assert_eq!(
        hex_of(
            "(function() local a = {x = nil, y = 5} local b = {x = a} a['x'] = b \
                return cmsgpack.pack(a) end)()"
        ),
        "82a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a17882\
         a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a178c0"
    );
    let code = "
        local big = {} for i = 1, 100000 do big[i] = i end
        local bigmap = {} for i = 1, 100000 do bigmap[tostring(i)] = i end
        local m = {s1 = string.rep('x', 30), s2 = string.rep('x', 250),
                   s3 = string.rep('x', 65530), s4 = string.rep('x', 100000), d1 = 0.1,
                   i1 = 1, i2 = 250, i3 = 65530, i4 = 100000, i5 = 2^40, i6 = -1, i7 = -120,
                   i8 = -32000, i9 = -100000, i10 = -3147483648, a1 = {1, 2, 3, 4, 5},
                   a3 = big, m1 = {a = 1, b = 2}, m2 = bigmap, b1 = false, b2 = true}
        local d = cmsgpack.unpack(cmsgpack.pack(m))
        for k, v in pairs(m) do
          if type(v) ~= 'table' then assert(d[k] == v, k) end
        end
        assert(#d.a3 == 100000 and d.a3[99999] == 99999 and d.m2['5000'] == 5000)
        local offset, one = cmsgpack.unpack_one(cmsgpack.pack(m), 0)
        assert(offset == -1 and one.s4 == m.s4)
        local multi = cmsgpack.pack(m.s1, m.s2, m.s3, m.s4)
        local o, v = cmsgpack.unpack_limit(multi, 1, 0) assert(v == m.s1)
        o, v = cmsgpack.unpack_limit(multi, 1, o) assert(v == m.s2)
        o, v = cmsgpack.unpack_limit(multi, 1, o) assert(v == m.s3)
        o, v = cmsgpack.unpack_limit(multi, 1, o) assert(v == m.s4 and o == -1)
        return 'ok'";
    assert_eq!(eval(code), "ok");
}

#[test]
fn bit_and_sha1_cases() {
    assert_eq!(eval("return bit.tohex(65535, -2147483648)"), "0000FFFF");
    assert_eq!(
        eval(
            "return tostring(bit.tobit(1) == 1 and bit.band(1) == 1 and bit.bxor(1, 2) == 3 \
              and bit.bor(1, 2, 4, 8, 16, 32, 64, 128) == 255)"
        ),
        "true"
    );
    assert_eq!(
        eval("return redis.sha1hex('Pizza & Mandolino')"),
        "74822d82031af7493c20eefa13bd07ec4fada82f"
    );
}

#[test]
fn sandbox_cases() {
    for f in [
        "execute",
        "exit",
        "getenv",
        "remove",
        "rename",
        "setlocale",
        "tmpname",
    ] {
        let err = eval_err(&format!("os.{f}()"));
        assert!(
            err.contains(&format!("attempt to call field '{f}' (a nil value)")),
            "{err}"
        );
    }
    assert!(
        eval_err("return loadstring(string.dump(function() return 1 end))()")
            .contains("attempt to call a nil value")
    );
    for code in [
        "redis.call = function() return 1 end",
        "cjson.encode = function() return 1 end",
        "cmsgpack.pack = function() return 1 end",
        "bit.lshift = function() return 1 end",
        "redis = function() return 1 end",
        "a = 10",
    ] {
        assert!(
            eval_err(code).contains("Attempt to modify a readonly table"),
            "{code}"
        );
    }
    for name in ["loadfile", "dofile", "print", "getfenv"] {
        assert!(
            eval_err(&format!("{name}('x')")).contains(&format!(
                "Script attempted to access nonexistent global variable '{name}'"
            )),
            "{name}"
        );
    }
    assert!(
        eval_err("getmetatable('').__index = function() return 1 end")
            .contains("Attempt to modify a readonly table")
    );
    assert!(
        eval_err("getmetatable(123.222).__index = function() return 1 end")
            .contains("attempt to index a nil value")
    );
}

#[test]
fn error_prefixes() {
    assert_eq!(
        eval("local ok, err = pcall(redis.setresp, 4) return err"),
        "ERR RESP version must be 2 or 3."
    );
    assert_eq!(
        eval("local ok, err = pcall(redis.log, 1) return err"),
        "ERR server.log() requires two arguments or more."
    );
    assert_eq!(
        eval("local ok, err = pcall(redis.set_repl) return err"),
        "ERR server.set_repl() requires one argument."
    );
    assert!(eval_err("redis.set_repl(12345)").contains("Invalid replication flags"));
    assert_eq!(reply_of("redis.set_repl(redis.REPL_ALL)"), "$-1\r\n");
    assert_eq!(reply_of("return redis.replicate_commands()"), ":1\r\n");
}
