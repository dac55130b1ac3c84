//! Counters through a real client: INCR/DECR/INCRBY/DECRBY, INCRBYFLOAT and Valkey 9.2's
//! INCREX (NX/XX, EX/PX/EXAT/PXAT/PERSIST, ENX, BYINT/BYFLOAT, LBOUND/UBOUND, SATURATE),
//! with Valkey's replies, error texts and TTL rules.

use crate::common;

use std::io::{Read, Write};
use std::ops::RangeInclusive;

use common::{Server, err, int, now_ms, ok, pttl_after, run, ttl_after};
use redis::Value;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const OVERFLOW: &str = "ERR increment or decrement would overflow";
const MAX: &str = "9223372036854775807";
const MIN: &str = "-9223372036854775808";
/// Twice this overflows an x87 long double (LDBL_MAX is about 1.19e4932).
const BIG: &str = "1e4932";

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    run::<Option<String>>(c, &["GET", key]).unwrap()
}

fn bulk(c: &mut redis::Connection, args: &[&str]) -> String {
    run::<String>(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// INCREX in integer mode: (new value, applied increment), both integer replies.
fn increx(c: &mut redis::Connection, args: &[&str]) -> (i64, i64) {
    let mut full = vec!["INCREX"];
    full.extend_from_slice(args);
    match run::<Value>(c, &full).unwrap_or_else(|e| panic!("{full:?}: {e}")) {
        Value::Array(v) => match v.as_slice() {
            [Value::Int(a), Value::Int(b)] => (*a, *b),
            other => panic!("{full:?}: not two integers: {other:?}"),
        },
        other => panic!("{full:?}: not an array: {other:?}"),
    }
}

/// INCREX in float mode over RESP2: (new value, applied increment), both bulk strings.
fn increx_f(c: &mut redis::Connection, args: &[&str]) -> (String, String) {
    let mut full = vec!["INCREX"];
    full.extend_from_slice(args);
    match run::<Value>(c, &full).unwrap_or_else(|e| panic!("{full:?}: {e}")) {
        Value::Array(v) => match v.as_slice() {
            [Value::BulkString(a), Value::BulkString(b)] => (
                String::from_utf8(a.clone()).unwrap(),
                String::from_utf8(b.clone()).unwrap(),
            ),
            other => panic!("{full:?}: not two bulk strings: {other:?}"),
        },
        other => panic!("{full:?}: not an array: {other:?}"),
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

fn ttl_in(c: &mut redis::Connection, key: &str, want: RangeInclusive<i64>) {
    let t = int(c, &["TTL", key]);
    assert!(want.contains(&t), "TTL {key} = {t}, want {want:?}");
}

/// Sends `req` (raw RESP) followed by a PING and returns everything answered before PONG.
fn raw_exchange(s: &mut std::net::TcpStream, req: &str) -> String {
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"+PONG\r\n") {
        let n = s.read(&mut buf).expect("reply before the read timeout");
        assert!(
            n > 0,
            "connection closed; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got.truncate(got.len() - b"+PONG\r\n".len());
    String::from_utf8(got).unwrap()
}

/// RESP encoding of a command.
fn resp(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

#[test]
fn incr_decr_basics() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["INCR", "n"]), 1);
    assert_eq!(get(&mut c, "n").as_deref(), Some("1"));
    assert_eq!(int(&mut c, &["INCR", "n"]), 2);
    assert_eq!(int(&mut c, &["DECR", "n"]), 1);
    assert_eq!(int(&mut c, &["DECR", "d"]), -1);
    assert_eq!(int(&mut c, &["INCR", "d"]), 0);
    assert_eq!(int(&mut c, &["INCRBY", "n", "17179869184"]), 17179869185);
    assert_eq!(int(&mut c, &["DECRBY", "n", "17179869186"]), -1);
    assert_eq!(int(&mut c, &["INCRBY", "n", "-5"]), -6);
    assert_eq!(int(&mut c, &["DECRBY", "n", "-10"]), 4);
    assert_eq!(int(&mut c, &["DECRBY", "m", "1"]), -1);
    assert_eq!(int(&mut c, &["INCRBY", "z", "0"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "z"]), 1);
    // A value set with SET (also a long one) counts on.
    ok(&mut c, &["SET", "s", "100"]);
    assert_eq!(int(&mut c, &["INCR", "s"]), 101);
    ok(&mut c, &["SET", "s", "-9223372036854775807"]);
    assert_eq!(int(&mut c, &["DECR", "s"]), i64::MIN);
    // APPEND makes it a raw string; INCR parses it again.
    ok(&mut c, &["SET", "a", "1"]);
    assert_eq!(int(&mut c, &["APPEND", "a", "2"]), 2);
    assert_eq!(int(&mut c, &["INCR", "a"]), 13);
    assert_eq!(get(&mut c, "a").as_deref(), Some("13"));
    // RESP3: plain integers.
    let mut c3 = s.conn3();
    assert_eq!(
        run::<Value>(&mut c3, &["INCR", "r"]).unwrap(),
        Value::Int(1)
    );
    assert_eq!(
        run::<Value>(&mut c3, &["DECRBY", "r", "3"]).unwrap(),
        Value::Int(-2)
    );
    for (cmd, n) in [("incr", 2), ("decr", 2), ("incrby", 3), ("decrby", 3)] {
        let mut args = vec![cmd; 1];
        args.extend(std::iter::repeat_n("x", n));
        assert_eq!(
            err(&mut c, &args),
            format!("ERR wrong number of arguments for '{cmd}' command")
        );
    }
}

#[test]
fn incr_errors_and_overflow() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Values that are not canonical 64-bit integers.
    for v in [
        "abc",
        "    11",
        "11    ",
        " 11 ",
        "1.5",
        "",
        "01",
        "+1",
        "-0",
        "0x10",
        "9223372036854775808",
        "1e3",
    ] {
        ok(&mut c, &["SET", "v", v]);
        assert_eq!(err(&mut c, &["INCR", "v"]), NOT_INTEGER, "{v:?}");
        assert_eq!(err(&mut c, &["DECRBY", "v", "1"]), NOT_INTEGER, "{v:?}");
        assert_eq!(get(&mut c, "v").as_deref(), Some(v));
    }
    // Increments that are not integers.
    ok(&mut c, &["SET", "n", "5"]);
    for by in ["abc", "1.5", "", " 1", "9223372036854775808", "1e3"] {
        assert_eq!(err(&mut c, &["INCRBY", "n", by]), NOT_INTEGER, "{by:?}");
        assert_eq!(err(&mut c, &["DECRBY", "n", by]), NOT_INTEGER, "{by:?}");
    }
    assert_eq!(err(&mut c, &["INCRBY", "missing", "x"]), NOT_INTEGER);
    assert_eq!(int(&mut c, &["EXISTS", "missing"]), 0);
    // Overflow both ways, the value untouched.
    ok(&mut c, &["SET", "n", MAX]);
    assert_eq!(err(&mut c, &["INCR", "n"]), OVERFLOW);
    assert_eq!(err(&mut c, &["INCRBY", "n", "1"]), OVERFLOW);
    assert_eq!(err(&mut c, &["DECRBY", "n", "-1"]), OVERFLOW);
    assert_eq!(get(&mut c, "n").as_deref(), Some(MAX));
    assert_eq!(int(&mut c, &["INCRBY", "n", MIN]), -1);
    ok(&mut c, &["SET", "n", MIN]);
    assert_eq!(err(&mut c, &["DECR", "n"]), OVERFLOW);
    assert_eq!(err(&mut c, &["INCRBY", "n", "-1"]), OVERFLOW);
    assert_eq!(err(&mut c, &["DECRBY", "n", "1"]), OVERFLOW);
    assert_eq!(get(&mut c, "n").as_deref(), Some(MIN));
    assert_eq!(int(&mut c, &["INCRBY", "n", MAX]), -1);
    ok(&mut c, &["SET", "n", "1"]);
    assert_eq!(err(&mut c, &["INCRBY", "n", MAX]), OVERFLOW);
    assert_eq!(
        err(&mut c, &["DECRBY", "n", "-9223372036854775807"]),
        OVERFLOW
    );
    // DECRBY of i64::MIN cannot be negated: its own error, whatever the value.
    ok(&mut c, &["SET", "x", "0"]);
    assert_eq!(
        err(&mut c, &["DECRBY", "x", MIN]),
        "ERR decrement would overflow"
    );
    assert_eq!(
        err(&mut c, &["DECRBY", "none", MIN]),
        "ERR decrement would overflow"
    );
    assert_eq!(get(&mut c, "x").as_deref(), Some("0"));
    assert_eq!(int(&mut c, &["EXISTS", "none"]), 0);
    // DECRBY of i64::MIN+1 is fine.
    assert_eq!(
        int(&mut c, &["DECRBY", "x", "-9223372036854775807"]),
        i64::MAX
    );
    let h = "h";
    assert_eq!(int(&mut c, &["HSET", h, "f", "1"]), 1);
    for args in [
        &["INCR", h][..],
        &["DECR", h],
        &["INCRBY", h, "2"],
        &["DECRBY", h, "2"],
        &["INCRBYFLOAT", h, "2"],
    ] {
        assert_eq!(err(&mut c, args), WRONGTYPE, "{args:?}");
    }
    // The increment is parsed before the type is checked.
    assert_eq!(err(&mut c, &["INCRBY", h, "x"]), NOT_INTEGER);
    assert_eq!(
        err(&mut c, &["DECRBY", h, MIN]),
        "ERR decrement would overflow"
    );
}

#[test]
fn counters_and_ttl() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "n", "10", "EX", "100"]);
    assert_eq!(int(&mut c, &["INCR", "n"]), 11);
    ttl_in(&mut c, "n", ttl_after(100));
    assert_eq!(int(&mut c, &["DECRBY", "n", "5"]), 6);
    ttl_in(&mut c, "n", ttl_after(100));
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "n", "0.5"]), "6.5");
    ttl_in(&mut c, "n", ttl_after(100));
    // A failed increment leaves value and TTL alone.
    assert_eq!(err(&mut c, &["INCR", "n"]), NOT_INTEGER);
    ttl_in(&mut c, "n", ttl_after(100));
    // SET without KEEPTTL clears it; with KEEPTTL it stays.
    ok(&mut c, &["SET", "n", "1", "EX", "100"]);
    ok(&mut c, &["SET", "n", "2", "KEEPTTL"]);
    assert_eq!(int(&mut c, &["INCR", "n"]), 3);
    ttl_in(&mut c, "n", ttl_after(100));
    ok(&mut c, &["SET", "n", "2"]);
    assert_eq!(int(&mut c, &["INCR", "n"]), 3);
    assert_eq!(int(&mut c, &["TTL", "n"]), -1);
    // An expired counter starts again from zero.
    ok(&mut c, &["SET", "e", "41", "PX", "30"]);
    assert!(common::wait_until(common::DEADLINE, || {
        run::<i64>(&mut c, &["EXISTS", "e"]).unwrap() == 0
    }));
    assert_eq!(int(&mut c, &["INCR", "e"]), 1);
    assert_eq!(int(&mut c, &["TTL", "e"]), -1);
}

#[test]
fn incrbyfloat() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // The examples of Valkey's INCRBYFLOAT page.
    ok(&mut c, &["SET", "mykey", "10.50"]);
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "mykey", "0.1"]), "10.6");
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "mykey", "-5"]), "5.6");
    ok(&mut c, &["SET", "mykey", "5.0e3"]);
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "mykey", "2.0e2"]), "5200");
    assert_eq!(get(&mut c, "mykey").as_deref(), Some("5200"));
    // Missing key starts at 0; integers and floats mix; long double precision.
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "f", "1"]), "1");
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "f", "0.25"]), "1.25");
    ok(&mut c, &["SET", "f", "17179869184"]);
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "f", "1.5"]), "17179869185.5");
    ok(&mut c, &["SET", "f", "0.1"]);
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "f", "0.2"]), "0.3");
    ok(&mut c, &["SET", "f", "1"]);
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "f", "-1.1"]), "-0.1");
    assert_eq!(
        bulk(&mut c, &["INCRBYFLOAT", "f", "1e-17"]),
        "-0.09999999999999999"
    );
    ok(&mut c, &["SET", "f", "1e20"]);
    assert_eq!(
        bulk(&mut c, &["INCRBYFLOAT", "f", "7"]),
        "100000000000000000008"
    );
    ok(&mut c, &["SET", "f", MAX]);
    assert_eq!(
        bulk(&mut c, &["INCRBYFLOAT", "f", "1"]),
        "9223372036854775808"
    );
    // No negative zero.
    assert_eq!(
        bulk(&mut c, &["INCRBYFLOAT", "z", "0.024390243902439025"]),
        "0.02439024390243902"
    );
    assert_eq!(
        bulk(&mut c, &["INCRBYFLOAT", "z", "-0.024390243902439025"]),
        "0"
    );
    ok(&mut c, &["SET", "z", "10"]);
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "z", "-10.0"]), "0");
    // Errors: the stored value, the increment, NaN/Infinity; nothing changes.
    for v in ["abc", " 11", "11 ", "1.5.5", "", "nan"] {
        ok(&mut c, &["SET", "bad", v]);
        assert_eq!(
            err(&mut c, &["INCRBYFLOAT", "bad", "1"]),
            NOT_FLOAT,
            "{v:?}"
        );
        assert_eq!(get(&mut c, "bad").as_deref(), Some(v));
    }
    ok(&mut c, &["SET", "g", "1"]);
    for by in ["abc", "", " 1", "1 ", "nan", "1e99999"] {
        assert_eq!(err(&mut c, &["INCRBYFLOAT", "g", by]), NOT_FLOAT, "{by:?}");
    }
    let nan_inf = "ERR increment would produce NaN or Infinity";
    assert_eq!(err(&mut c, &["INCRBYFLOAT", "g", "+inf"]), nan_inf);
    assert_eq!(err(&mut c, &["INCRBYFLOAT", "g", "-inf"]), nan_inf);
    ok(&mut c, &["SET", "g", BIG]);
    assert_eq!(err(&mut c, &["INCRBYFLOAT", "g", BIG]), nan_inf);
    assert_eq!(get(&mut c, "g").as_deref(), Some(BIG));
    assert_eq!(err(&mut c, &["INCRBYFLOAT", "missing", "inf"]), nan_inf);
    assert_eq!(int(&mut c, &["EXISTS", "missing"]), 0);
    // INCR on the float result fails; INCRBYFLOAT on an integer works.
    ok(&mut c, &["SET", "i", "3"]);
    assert_eq!(bulk(&mut c, &["OBJECT", "ENCODING", "i"]), "int");
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "i", "0.5"]), "3.5");
    assert_eq!(err(&mut c, &["INCR", "i"]), NOT_INTEGER);
    // An integral float result stays a string object, as in Valkey.
    assert_eq!(bulk(&mut c, &["INCRBYFLOAT", "i", "0.5"]), "4");
    assert_eq!(bulk(&mut c, &["OBJECT", "ENCODING", "i"]), "embstr");
    assert_eq!(int(&mut c, &["INCR", "i"]), 5);
    assert_eq!(bulk(&mut c, &["OBJECT", "ENCODING", "i"]), "int");
    // RESP3: still a bulk string.
    let mut c3 = s.conn3();
    assert_eq!(
        run::<Value>(&mut c3, &["INCRBYFLOAT", "r", "2.5"]).unwrap(),
        Value::BulkString(b"2.5".to_vec())
    );
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "r"]),
        "ERR wrong number of arguments for 'incrbyfloat' command"
    );
}

#[test]
fn increx_defaults_byint_byfloat() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(increx(&mut c, &["foo"]), (1, 1));
    assert_eq!(increx(&mut c, &["foo"]), (2, 1));
    assert_eq!(increx(&mut c, &["bar", "BYINT", "5"]), (5, 5));
    assert_eq!(increx(&mut c, &["bar", "byint", "5"]), (10, 5));
    assert_eq!(increx(&mut c, &["bar", "BYINT", "-15"]), (-5, -15));
    assert_eq!(increx(&mut c, &["bar", "BYINT", "0"]), (-5, 0));
    assert_eq!(get(&mut c, "bar").as_deref(), Some("-5"));
    // Float mode: bulk strings over RESP2, human long double form.
    assert_eq!(
        increx_f(&mut c, &["f", "BYFLOAT", "0.1"]),
        pair("0.1", "0.1")
    );
    assert_eq!(
        increx_f(&mut c, &["f", "BYFLOAT", "0.2"]),
        pair("0.3", "0.2")
    );
    assert_eq!(get(&mut c, "f").as_deref(), Some("0.3"));
    ok(&mut c, &["SET", "k", "10"]);
    assert_eq!(increx(&mut c, &["k", "BYINT", "5"]), (15, 5));
    assert_eq!(
        increx_f(&mut c, &["k", "BYFLOAT", "-2.5"]),
        pair("12.5", "-2.5")
    );
    assert_eq!(
        increx_f(&mut c, &["k", "BYFLOAT", "-0.5"]),
        pair("12", "-0.5")
    );
    // ... and the float result counts on as an integer.
    assert_eq!(increx(&mut c, &["k"]), (13, 1));
    // No negative zero.
    assert_eq!(
        increx_f(&mut c, &["z", "BYFLOAT", "0.024390243902439025"]),
        pair("0.02439024390243902", "0.02439024390243902")
    );
    assert_eq!(
        increx_f(&mut c, &["z", "BYFLOAT", "-0.024390243902439025"]).0,
        "0"
    );
    assert_eq!(get(&mut c, "z").as_deref(), Some("0"));
    // The increment actually applied is reported when long double rounds.
    ok(&mut c, &["SET", "r", "1e20"]);
    assert_eq!(
        increx_f(&mut c, &["r", "BYFLOAT", "0"]),
        pair("100000000000000000000", "0")
    );
    assert_eq!(get(&mut c, "r").as_deref(), Some("100000000000000000000"));
    assert_eq!(
        increx_f(&mut c, &["r", "BYFLOAT", "7"]),
        pair("100000000000000000008", "8")
    );
    // A raw string that parses as an integer becomes an integer again.
    ok(&mut c, &["SET", "a", "1"]);
    assert_eq!(int(&mut c, &["APPEND", "a", "2"]), 2);
    assert_eq!(increx(&mut c, &["a"]), (13, 1));
    assert_eq!(bulk(&mut c, &["OBJECT", "ENCODING", "a"]), "int");
    assert_eq!(increx_f(&mut c, &["a", "BYFLOAT", "1"]), pair("14", "1"));
    assert_eq!(bulk(&mut c, &["OBJECT", "ENCODING", "a"]), "embstr");
    // RESP3 integer mode: integers.
    let mut c3 = s.conn3();
    assert_eq!(
        run::<Value>(&mut c3, &["INCREX", "r3", "BYINT", "4"]).unwrap(),
        Value::Array(vec![Value::Int(4), Value::Int(4)])
    );
    // RESP3 float mode: doubles.
    assert_eq!(
        run::<Value>(&mut c3, &["INCREX", "r3", "BYFLOAT", "0.5"]).unwrap(),
        Value::Array(vec![Value::Double(4.5), Value::Double(0.5)])
    );
    assert_eq!(
        err(&mut c, &["INCREX"]),
        "ERR wrong number of arguments for 'increx' command"
    );
    // The table row: arity -2, write/denyoom/fast, one key, @write @string @fast.
    let info: Value = run(&mut c, &["COMMAND", "INFO", "increx"]).unwrap();
    let Value::Array(outer) = info else {
        panic!("COMMAND INFO answers an array: {info:?}")
    };
    let Some(Value::Array(row)) = outer.first() else {
        panic!("no entry for increx: {outer:?}")
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    };
    let texts = |v: &Value| match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect::<Vec<_>>(),
        other => panic!("not a list: {other:?}"),
    };
    assert_eq!(text(&row[0]), "increx");
    assert_eq!(row[1], Value::Int(-2));
    assert_eq!(texts(&row[2]), ["write", "denyoom", "fast"]);
    assert_eq!(row[3..6], [Value::Int(1), Value::Int(1), Value::Int(1)]);
    let cats = texts(&row[6]);
    for cat in ["@write", "@string", "@fast"] {
        assert!(cats.contains(&cat.to_string()), "{cats:?}");
    }
}

#[test]
fn increx_wire_format() {
    let s = Server::start(&[]);
    let mut raw = s.raw();
    // RESP2.
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "foo", "BYINT", "5"])),
        "*2\r\n:5\r\n:5\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "fl", "BYFLOAT", "2.5"])),
        "*2\r\n$3\r\n2.5\r\n$3\r\n2.5\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "nope", "XX"])),
        "*2\r\n:0\r\n:0\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "nope", "XX", "BYFLOAT", "1.5"])),
        "*2\r\n$1\r\n0\r\n$1\r\n0\r\n"
    );
    // RESP3.
    assert!(raw_exchange(&mut raw, &resp(&["HELLO", "3"])).starts_with('%'));
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "foo"])),
        "*2\r\n:6\r\n:1\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "fl", "BYFLOAT", "2.5"])),
        "*2\r\n,5\r\n,2.5\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "nope", "XX", "BYFLOAT", "1.5"])),
        "*2\r\n,0\r\n,0\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, &resp(&["INCREX", "fl", "NX", "BYFLOAT", "1"])),
        "*2\r\n,5\r\n,0\r\n"
    );
}

#[test]
fn increx_nx_xx() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(increx(&mut c, &["foo", "NX"]), (1, 1));
    assert_eq!(increx(&mut c, &["foo", "NX"]), (1, 0));
    assert_eq!(get(&mut c, "foo").as_deref(), Some("1"));
    assert_eq!(
        increx_f(&mut c, &["ff", "nx", "BYFLOAT", "0.1"]),
        pair("0.1", "0.1")
    );
    assert_eq!(
        increx_f(&mut c, &["ff", "nx", "BYFLOAT", "0.1"]),
        pair("0.1", "0")
    );
    assert_eq!(increx(&mut c, &["bar", "XX"]), (0, 0));
    assert_eq!(int(&mut c, &["EXISTS", "bar"]), 0);
    assert_eq!(
        increx_f(&mut c, &["bar", "XX", "BYFLOAT", "0.1"]),
        pair("0", "0")
    );
    assert_eq!(int(&mut c, &["EXISTS", "bar"]), 0);
    ok(&mut c, &["SET", "bar", "10"]);
    assert_eq!(increx(&mut c, &["bar", "XX"]), (11, 1));
    ok(&mut c, &["SET", "bar", "0.1"]);
    assert_eq!(
        increx_f(&mut c, &["bar", "XX", "BYFLOAT", "0.1"]),
        pair("0.2", "0.1")
    );
    // The declined reply shows the stored value in human form.
    ok(&mut c, &["SET", "h", "10.50"]);
    assert_eq!(
        increx_f(&mut c, &["h", "NX", "BYFLOAT", "1"]),
        pair("10.5", "0")
    );
    assert_eq!(get(&mut c, "h").as_deref(), Some("10.50"));
    // NX not met: no TTL either.
    ok(&mut c, &["SET", "t", "3"]);
    assert_eq!(
        increx(&mut c, &["t", "NX", "EX", "100", "BYINT", "3"]),
        (3, 0)
    );
    assert_eq!(int(&mut c, &["TTL", "t"]), -1);
    assert_eq!(
        increx(&mut c, &["t2", "NX", "EX", "100", "BYINT", "3"]),
        (3, 3)
    );
    ttl_in(&mut c, "t2", ttl_after(100));
    assert_eq!(err(&mut c, &["INCREX", "foo", "NX", "XX"]), SYNTAX);
    assert_eq!(err(&mut c, &["INCREX", "foo", "XX", "NX"]), SYNTAX);
    assert_eq!(err(&mut c, &["INCREX", "foo", "NX", "NX"]), SYNTAX);
}

#[test]
fn increx_expiration() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(increx(&mut c, &["foo", "EX", "100"]), (1, 1));
    ttl_in(&mut c, "foo", ttl_after(100));
    assert_eq!(increx(&mut c, &["p", "PX", "100000"]), (1, 1));
    let pttl = int(&mut c, &["PTTL", "p"]);
    assert!(pttl_after(100_000).contains(&pttl), "{pttl}");
    let at = now_ms() / 1000 + 500;
    assert_eq!(increx(&mut c, &["e", "EXAT", &at.to_string()]), (1, 1));
    assert_eq!(int(&mut c, &["EXPIRETIME", "e"]), at);
    let pat = now_ms() + 600_000;
    assert_eq!(
        increx(&mut c, &["e", "PXAT", &pat.to_string(), "BYINT", "2"]),
        (3, 2)
    );
    assert_eq!(int(&mut c, &["PEXPIRETIME", "e"]), pat);
    // Without an expiration option the TTL is kept.
    assert_eq!(increx(&mut c, &["e", "BYINT", "1"]), (4, 1));
    assert_eq!(int(&mut c, &["PEXPIRETIME", "e"]), pat);
    // Options combine in any order.
    assert_eq!(increx(&mut c, &["x", "EX", "100", "BYINT", "7"]), (7, 7));
    assert_eq!(get(&mut c, "x").as_deref(), Some("7"));
    ttl_in(&mut c, "x", ttl_after(100));
    assert_eq!(
        increx_f(&mut c, &["y", "BYFLOAT", "2.5", "EX", "100"]),
        pair("2.5", "2.5")
    );
    ttl_in(&mut c, "y", ttl_after(100));
    // A past EXAT: the reply is the increment, but the key is gone.
    // (DBSIZE counts keys not yet reclaimed: a past expiry must delete, not store.)
    // Lookups reclaim expired keys, so DBSIZE is checked before EXISTS.
    let keys = int(&mut c, &["DBSIZE"]);
    ok(&mut c, &["SET", "old", "5"]);
    assert_eq!(increx(&mut c, &["old", "EXAT", "1"]), (6, 1));
    assert_eq!(increx(&mut c, &["never", "EXAT", "1"]), (1, 1));
    assert_eq!(
        increx_f(&mut c, &["neverf", "PXAT", "1", "BYFLOAT", "1.5"]),
        pair("1.5", "1.5")
    );
    assert_eq!(int(&mut c, &["DBSIZE"]), keys);
    assert_eq!(int(&mut c, &["EXISTS", "old", "never", "neverf"]), 0);
    // Type and value errors win over the past expiry.
    assert_eq!(int(&mut c, &["HSET", "h", "f", "v"]), 1);
    assert_eq!(err(&mut c, &["INCREX", "h", "EXAT", "1"]), WRONGTYPE);
    ok(&mut c, &["SET", "str", "abc"]);
    assert_eq!(err(&mut c, &["INCREX", "str", "EXAT", "1"]), NOT_INTEGER);
    assert_eq!(get(&mut c, "str").as_deref(), Some("abc"));
    // Invalid times.
    let invalid = "ERR invalid expire time in 'increx' command";
    for (unit, v) in [
        ("EX", "0"),
        ("EX", "-1"),
        ("PX", "0"),
        ("EXAT", "0"),
        ("PXAT", "-10"),
        ("EX", MAX),
        ("PX", MAX),
    ] {
        assert_eq!(
            err(&mut c, &["INCREX", "k", unit, v]),
            invalid,
            "{unit} {v}"
        );
    }
    assert_eq!(err(&mut c, &["INCREX", "k", "EX", "soon"]), NOT_INTEGER);
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    for bad in [
        &["INCREX", "k", "EX"][..],
        &["INCREX", "k", "EX", "10", "EX", "20"],
        &["INCREX", "k", "EX", "10", "PX", "20"],
        &["INCREX", "k", "PXAT", "9999999999000", "EXAT", "9999999999"],
    ] {
        assert_eq!(err(&mut c, bad), SYNTAX, "{bad:?}");
    }
}

#[test]
fn increx_persist_and_enx() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // PERSIST removes a TTL.
    ok(&mut c, &["SET", "k", "10", "EX", "500"]);
    assert_eq!(increx(&mut c, &["k", "PERSIST"]), (11, 1));
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    assert_eq!(get(&mut c, "k").as_deref(), Some("11"));
    ok(&mut c, &["SET", "k", "10.5", "EX", "500"]);
    assert_eq!(
        increx_f(&mut c, &["k", "BYFLOAT", "1.0", "PERSIST"]),
        pair("11.5", "1")
    );
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    ok(&mut c, &["SET", "k", "10"]);
    assert_eq!(increx(&mut c, &["k", "persist"]), (11, 1));
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    assert_eq!(increx(&mut c, &["new", "PERSIST"]), (1, 1));
    assert_eq!(int(&mut c, &["TTL", "new"]), -1);
    // A declined increment keeps the TTL even with PERSIST.
    ok(&mut c, &["SET", "k", MAX, "EX", "500"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "1", "PERSIST"]),
        (i64::MAX, 0)
    );
    ttl_in(&mut c, "k", 400..=500);
    ok(&mut c, &["SET", "k", "10", "EX", "500"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "5", "UBOUND", "5", "PERSIST"]),
        (10, 0)
    );
    ttl_in(&mut c, "k", 400..=500);
    for bad in [
        &["INCREX", "k", "EX", "10", "PERSIST"][..],
        &["INCREX", "k", "PERSIST", "EX", "10"],
        &["INCREX", "k", "PERSIST", "ENX"],
        &["INCREX", "k", "ENX", "PERSIST"],
        &["INCREX", "k", "PERSIST", "PERSIST"],
    ] {
        assert_eq!(err(&mut c, bad), SYNTAX, "{bad:?}");
    }

    // ENX: set the expiry only on a key without one.
    let enx_alone = "ERR ENX flag requires an expiration";
    assert_eq!(err(&mut c, &["INCREX", "k", "ENX"]), enx_alone);
    assert_eq!(
        err(&mut c, &["INCREX", "k", "BYINT", "1", "ENX"]),
        enx_alone
    );
    assert_eq!(
        err(&mut c, &["INCREX", "k", "ENX", "ENX", "EX", "10"]),
        SYNTAX
    );
    ok(&mut c, &["SET", "k", "10"]);
    assert_eq!(increx(&mut c, &["k", "EX", "100", "ENX"]), (11, 1));
    ttl_in(&mut c, "k", 1..=100);
    ok(&mut c, &["SET", "k", "10", "EX", "500"]);
    assert_eq!(increx(&mut c, &["k", "EX", "100", "ENX"]), (11, 1));
    ttl_in(&mut c, "k", 400..=500);
    ok(&mut c, &["SET", "k", "10", "EX", "500"]);
    assert_eq!(increx(&mut c, &["k", "ENX", "PX", "100000"]), (11, 1));
    ttl_in(&mut c, "k", 400..=500);
    assert_eq!(increx(&mut c, &["absent", "EX", "100", "ENX"]), (1, 1));
    ttl_in(&mut c, "absent", 1..=100);
    // A past EXAT with ENX: deletes a key without TTL, leaves a key with one.
    ok(&mut c, &["SET", "k", "10"]);
    assert_eq!(increx(&mut c, &["k", "EXAT", "100", "ENX"]), (11, 1));
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    ok(&mut c, &["SET", "k", "10", "EX", "500"]);
    assert_eq!(increx(&mut c, &["k", "EXAT", "100", "ENX"]), (11, 1));
    assert_eq!(get(&mut c, "k").as_deref(), Some("11"));
    ttl_in(&mut c, "k", 400..=500);
    // A declined increment does not apply the expiry.
    ok(&mut c, &["SET", "k", MAX]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "1", "EX", "100", "ENX"]),
        (i64::MAX, 0)
    );
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
}

#[test]
fn increx_integer_bounds() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let cases: &[(&[&str], (i64, i64), i64)] = &[
        (&["BYINT", "5", "UBOUND", "20"], (15, 5), 15),
        (&["BYINT", "5", "UBOUND", "15"], (15, 5), 15),
        // Exceeds UBOUND without SATURATE: declined.
        (&["BYINT", "5", "UBOUND", "12"], (10, 0), 10),
        (&["BYINT", "5", "UBOUND", "10"], (10, 0), 10),
        (&["BYINT", "5", "UBOUND", "5"], (10, 0), 10),
        // The bound constrains the result, not the direction.
        (&["BYINT", "-5", "UBOUND", "5"], (5, -5), 5),
        (&["BYINT", "-5", "LBOUND", "0"], (5, -5), 5),
        (&["BYINT", "-5", "LBOUND", "5"], (5, -5), 5),
        (&["BYINT", "-5", "LBOUND", "8"], (10, 0), 10),
        (&["BYINT", "5", "LBOUND", "20"], (10, 0), 10),
        (&["BYINT", "5", "LBOUND", "0", "UBOUND", "20"], (15, 5), 15),
        (&["BYINT", "5", "LBOUND", "10", "UBOUND", "10"], (10, 0), 10),
        // SATURATE clamps to the bound crossed, even against the increment's direction.
        (&["BYINT", "5", "UBOUND", "12", "SATURATE"], (12, 2), 12),
        (&["BYINT", "5", "UBOUND", "10", "SATURATE"], (10, 0), 10),
        (&["BYINT", "5", "UBOUND", "5", "SATURATE"], (5, -5), 5),
        (&["BYINT", "-5", "LBOUND", "8", "SATURATE"], (8, -2), 8),
        (&["BYINT", "-5", "LBOUND", "20", "SATURATE"], (20, 10), 20),
        (
            &["SATURATE", "BYINT", "5", "LBOUND", "10", "UBOUND", "10"],
            (10, 0),
            10,
        ),
        // SATURATE without bounds is a plain increment.
        (&["BYINT", "5", "SATURATE"], (15, 5), 15),
        (&["SATURATE"], (11, 1), 11),
        // Overflow clamps to the bound given, or is declined without SATURATE.
        (&["BYINT", MAX, "UBOUND", "100", "SATURATE"], (100, 90), 100),
        (&["BYINT", MAX, "UBOUND", "100"], (10, 0), 10),
        (&["BYINT", MAX], (10, 0), 10),
    ];
    for (opts, want, stored) in cases {
        ok(&mut c, &["SET", "k", "10"]);
        let mut args = vec!["k"];
        args.extend_from_slice(opts);
        assert_eq!(increx(&mut c, &args), *want, "{opts:?}");
        assert_eq!(get(&mut c, "k"), Some(stored.to_string()), "{opts:?}");
    }
    // Type limits.
    ok(&mut c, &["SET", "k", MAX]);
    assert_eq!(increx(&mut c, &["k", "BYINT", "1"]), (i64::MAX, 0));
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "1", "SATURATE"]),
        (i64::MAX, 0)
    );
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "1", "UBOUND", MAX, "SATURATE"]),
        (i64::MAX, 0)
    );
    ok(&mut c, &["SET", "k", "9223372036854775800"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "10", "SATURATE"]),
        (i64::MAX, 7)
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some(MAX));
    ok(&mut c, &["SET", "k", "-9223372036854775801"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "-10", "SATURATE"]),
        (i64::MIN, -7)
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some(MIN));
    ok(&mut c, &["SET", "k", "-10"]);
    assert_eq!(
        increx(
            &mut c,
            &[
                "k",
                "BYINT",
                "-9223372036854775807",
                "LBOUND",
                "-100",
                "SATURATE"
            ]
        ),
        (-100, -90)
    );
    ok(&mut c, &["SET", "k", "-10"]);
    assert_eq!(
        increx(
            &mut c,
            &["k", "BYINT", "-9223372036854775807", "LBOUND", "-100"]
        ),
        (-10, 0)
    );
    // A stored value already outside the bounds.
    ok(&mut c, &["SET", "k", "10000"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "-500", "UBOUND", "200"]),
        (10000, 0)
    );
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "-500", "UBOUND", "200", "SATURATE"]),
        (200, -9800)
    );
    // Missing key: a declined result creates nothing, a saturated one does.
    type FreshCase<'a> = (&'a [&'a str], (i64, i64), Option<&'a str>);
    let fresh: &[FreshCase] = &[
        (&["UBOUND", "5"], (1, 1), Some("1")),
        (&["UBOUND", "0"], (0, 0), None),
        (&["UBOUND", "0", "SATURATE"], (0, 0), Some("0")),
        (&["LBOUND", "5"], (0, 0), None),
        (&["LBOUND", "5", "SATURATE"], (5, 5), Some("5")),
    ];
    for (opts, want, stored) in fresh {
        int(&mut c, &["DEL", "m"]);
        let mut args = vec!["m"];
        args.extend_from_slice(opts);
        assert_eq!(increx(&mut c, &args), *want, "{opts:?}");
        assert_eq!(get(&mut c, "m").as_deref(), *stored, "{opts:?}");
    }
    // Bounds and expiry: a declined call sets no TTL, a saturated one does.
    ok(&mut c, &["SET", "k", "10"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "5", "UBOUND", "5", "EX", "100"]),
        (10, 0)
    );
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    ok(&mut c, &["SET", "k", "10", "EX", "500"]);
    assert_eq!(
        increx(&mut c, &["k", "BYINT", "5", "UBOUND", "5", "EX", "100"]),
        (10, 0)
    );
    ttl_in(&mut c, "k", 400..=500);
    ok(&mut c, &["SET", "k", "10"]);
    assert_eq!(
        increx(
            &mut c,
            &["k", "BYINT", "5", "UBOUND", "12", "SATURATE", "EX", "100"]
        ),
        (12, 2)
    );
    ttl_in(&mut c, "k", 1..=100);
    // The applied increment must fit in 64 bits.
    ok(&mut c, &["SET", "k", MAX]);
    assert_eq!(
        err(
            &mut c,
            &["INCREX", "k", "BYINT", "-5", "UBOUND", MIN, "SATURATE"]
        ),
        "ERR applied increment would overflow"
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some(MAX));
}

#[test]
fn increx_float_bounds() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let cases: &[(&[&str], (&str, &str), &str)] = &[
        (
            &["BYFLOAT", "2.5", "LBOUND", "5.0", "UBOUND", "15.0"],
            ("12.5", "2.5"),
            "12.5",
        ),
        (&["BYFLOAT", "5.5", "UBOUND", "12.5"], ("10", "0"), "10"),
        (
            &["BYFLOAT", "5.5", "UBOUND", "12.5", "SATURATE"],
            ("12.5", "2.5"),
            "12.5",
        ),
        (
            &["BYFLOAT", "-6.0", "LBOUND", "8.0", "SATURATE"],
            ("8", "-2"),
            "8",
        ),
        (
            &["BYFLOAT", BIG, "UBOUND", "100", "SATURATE"],
            ("100", "90"),
            "100",
        ),
        (&["BYFLOAT", BIG, "UBOUND", "100"], ("10", "0"), "10"),
        (
            &["BYFLOAT", "-1e4932", "LBOUND", "-100", "SATURATE"],
            ("-100", "-110"),
            "-100",
        ),
        (&["BYFLOAT", "-1e4932", "LBOUND", "-100"], ("10", "0"), "10"),
        (
            &["BYFLOAT", "1.0", "LBOUND", "0.5", "UBOUND", "15.5"],
            ("11", "1"),
            "11",
        ),
        // Infinite bounds are fine in float mode.
        (&["BYFLOAT", "1.0", "UBOUND", "inf"], ("11", "1"), "11"),
        (&["BYFLOAT", "1.0", "UBOUND", "+inf"], ("11", "1"), "11"),
        (&["BYFLOAT", "1.0", "LBOUND", "-inf"], ("11", "1"), "11"),
        (
            &["BYFLOAT", "1.0", "LBOUND", "-inf", "UBOUND", "-inf"],
            ("10", "0"),
            "10",
        ),
        (
            &["BYFLOAT", "1.0", "LBOUND", "inf", "UBOUND", "inf"],
            ("10", "0"),
            "10",
        ),
    ];
    for (opts, want, stored) in cases {
        ok(&mut c, &["SET", "k", "10"]);
        let mut args = vec!["k"];
        args.extend_from_slice(opts);
        assert_eq!(increx_f(&mut c, &args), pair(want.0, want.1), "{opts:?}");
        assert_eq!(get(&mut c, "k").as_deref(), Some(*stored), "{opts:?}");
    }
    // Overflowing the long double: declined, value and TTL untouched, no new TTL.
    ok(&mut c, &["SET", "k", BIG]);
    let (v, applied) = increx_f(&mut c, &["k", "BYFLOAT", BIG]);
    assert_eq!(applied, "0");
    assert!(
        v.len() == 4933 && v.starts_with("1000000000000000000006"),
        "{}",
        v.len()
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some(BIG));
    ok(&mut c, &["SET", "k", "-1e4932"]);
    assert_eq!(increx_f(&mut c, &["k", "BYFLOAT", "-1e4932"]).1, "0");
    assert_eq!(get(&mut c, "k").as_deref(), Some("-1e4932"));
    ok(&mut c, &["SET", "k", BIG, "EX", "100"]);
    assert_eq!(increx_f(&mut c, &["k", "BYFLOAT", BIG, "EX", "60"]).1, "0");
    ttl_in(&mut c, "k", 61..=100);
    ok(&mut c, &["SET", "k", BIG]);
    assert_eq!(increx_f(&mut c, &["k", "BYFLOAT", BIG, "EX", "60"]).1, "0");
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    // ... and with SATURATE and no bound it stops at the type's limit (LDBL_MAX).
    let (v, applied) = increx_f(&mut c, &["k", "BYFLOAT", BIG, "SATURATE"]);
    assert_eq!(get(&mut c, "k"), Some(v.clone()));
    assert_eq!(v.len(), 4933);
    assert!(v.starts_with("118973149535723176"), "{}", &v[..30]);
    assert!(
        applied.starts_with("189731495357231765"),
        "{}",
        &applied[..30]
    );
    // An applied increment that is itself infinite is an error.
    let applied_inf = "ERR applied increment would be Infinity";
    ok(&mut c, &["SET", "k", "-1e4932"]);
    assert_eq!(
        err(
            &mut c,
            &["INCREX", "k", "BYFLOAT", BIG, "LBOUND", BIG, "SATURATE"]
        ),
        applied_inf
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some("-1e4932"));
    ok(&mut c, &["SET", "k", "10"]);
    for bounds in [["-inf", "-inf"], ["inf", "inf"]] {
        assert_eq!(
            err(
                &mut c,
                &[
                    "INCREX", "k", "BYFLOAT", "1.0", "LBOUND", bounds[0], "UBOUND", bounds[1],
                    "SATURATE"
                ]
            ),
            applied_inf
        );
    }
    assert_eq!(get(&mut c, "k").as_deref(), Some("10"));
}

#[test]
fn increx_argument_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "10"]);
    let inverted = "ERR LBOUND can't be greater than UBOUND";
    let cases: &[(&[&str], &str)] = &[
        (&["BYINT"], SYNTAX),
        (&["BYFLOAT"], SYNTAX),
        (&["LBOUND"], SYNTAX),
        (&["UBOUND"], SYNTAX),
        (&["BYINT", "1", "BYFLOAT", "1.0"], SYNTAX),
        (&["BYINT", "1", "BYINT", "2"], SYNTAX),
        (&["LBOUND", "1", "LBOUND", "2"], SYNTAX),
        (&["SATURATE", "SATURATE"], SYNTAX),
        (&["FOO"], SYNTAX),
        (&["GET"], SYNTAX),
        (&["KEEPTTL"], SYNTAX),
        (
            &["BYINT", "abc"],
            "ERR Increment is not an integer or out of range",
        ),
        (
            &["BYINT", "1.5"],
            "ERR Increment is not an integer or out of range",
        ),
        (
            &["BYINT", "9223372036854775808"],
            "ERR Increment is not an integer or out of range",
        ),
        (&["BYFLOAT", "abc"], "ERR Increment is not a valid float"),
        (&["BYFLOAT", "nan"], "ERR Increment is not a valid float"),
        (
            &["BYFLOAT", "1e99999"],
            "ERR Increment is not a valid float",
        ),
        (
            &["BYFLOAT", "+inf"],
            "ERR BYFLOAT increment cannot be Infinity",
        ),
        (
            &["BYFLOAT", "-inf"],
            "ERR BYFLOAT increment cannot be Infinity",
        ),
        (&["BYINT", "5", "LBOUND", "20", "UBOUND", "0"], inverted),
        (
            &["BYINT", "5", "LBOUND", "20", "UBOUND", "0", "SATURATE"],
            inverted,
        ),
        (
            &["BYFLOAT", "1.0", "LBOUND", "20.0", "UBOUND", "0.0"],
            inverted,
        ),
        (
            &["BYINT", "5", "UBOUND", "12.5"],
            "ERR UBOUND is not an integer or out of range",
        ),
        (
            &["UBOUND", "abc"],
            "ERR UBOUND is not an integer or out of range",
        ),
        (
            &["LBOUND", "abc"],
            "ERR LBOUND is not an integer or out of range",
        ),
        (
            &["UBOUND", "inf"],
            "ERR UBOUND is not an integer or out of range",
        ),
        (
            &["LBOUND", "inf"],
            "ERR LBOUND is not an integer or out of range",
        ),
        (
            &["BYFLOAT", "1.0", "UBOUND", "abc"],
            "ERR UBOUND is not a valid float",
        ),
        (
            &["BYFLOAT", "1.0", "LBOUND", "abc"],
            "ERR LBOUND is not a valid float",
        ),
        (
            &["BYFLOAT", "1.0", "LBOUND", "nan"],
            "ERR LBOUND is not a valid float",
        ),
        (&["BYFLOAT", "1.0", "UBOUND", "-inf"], inverted),
        (&["BYFLOAT", "1.0", "LBOUND", "inf"], inverted),
        (&["BYFLOAT", "1.0", "LBOUND", "+inf"], inverted),
        (
            &["BYFLOAT", "1.0", "LBOUND", "inf", "UBOUND", "-inf"],
            inverted,
        ),
    ];
    for (opts, want) in cases {
        let mut args = vec!["INCREX", "k"];
        args.extend_from_slice(opts);
        assert_eq!(err(&mut c, &args), *want, "{opts:?}");
    }
    assert_eq!(get(&mut c, "k").as_deref(), Some("10"));
    // A bad argument and a bad stored value say different things.
    assert_eq!(
        err(&mut c, &["INCREX", "k", "BYINT", "abc"]),
        "ERR Increment is not an integer or out of range"
    );
    ok(&mut c, &["SET", "k", "abc"]);
    assert_eq!(err(&mut c, &["INCREX", "k", "BYINT", "1"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["INCREX", "k", "BYFLOAT", "1"]), NOT_FLOAT);
    // Stored infinity / floats.
    ok(&mut c, &["SET", "k", "inf"]);
    assert_eq!(
        err(&mut c, &["INCREX", "k", "BYFLOAT", "1"]),
        "ERR value cannot be Infinity"
    );
    assert_eq!(err(&mut c, &["INCREX", "k", "BYINT", "1"]), NOT_INTEGER);
    ok(&mut c, &["SET", "k", "1.5"]);
    assert_eq!(err(&mut c, &["INCREX", "k"]), NOT_INTEGER);
    assert_eq!(increx_f(&mut c, &["k", "BYFLOAT", "1"]), pair("2.5", "1"));
    // Argument errors come before the type check; the value check after it.
    assert_eq!(int(&mut c, &["HSET", "h", "f", "v"]), 1);
    assert_eq!(
        err(&mut c, &["INCREX", "h", "BYINT", "x"]),
        "ERR Increment is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["INCREX", "h", "EX", "0"]),
        "ERR invalid expire time in 'increx' command"
    );
    assert_eq!(err(&mut c, &["INCREX", "h", "BYFLOAT", "1"]), WRONGTYPE);
    assert_eq!(err(&mut c, &["INCREX", "h", "XX"]), WRONGTYPE);
    assert_eq!(int(&mut c, &["HLEN", "h"]), 1);
}
