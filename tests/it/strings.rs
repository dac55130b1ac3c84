//! String commands through a real client: GET/SET and every SET option, SETNX/SETEX/PSETEX,
//! GETEX/GETDEL/GETSET, MGET/MSET/MSETNX across cores, APPEND/STRLEN, GETRANGE/SUBSTR,
//! SETRANGE, WRONGTYPE, binary safety and TTL interactions — replies and error texts as
//! Valkey gives them.

use crate::common;

use std::io::{Read, Write};

use common::{Server, err, int, now_ms, ok, run, ttl_after};
use redis::Value;

/// With `--threads 2`, slots 0..8191 belong to core 0 and 8192..16383 to core 1.
/// CRC16("bar") % 16384 = 5061 (core 0), CRC16("foo") % 16384 = 12182 (core 1).
const CORE0: &str = "{bar}";
const CORE1: &str = "{foo}";

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

fn bulk(c: &mut redis::Connection, args: &[&str]) -> Option<String> {
    run::<Option<String>>(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    bulk(c, &["GET", key])
}

/// A command with binary arguments, raw reply.
fn bin(c: &mut redis::Connection, args: &[&[u8]]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("ascii command name"));
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn hash_key(c: &mut redis::Connection, key: &str) {
    assert_eq!(int(c, &["HSET", key, "f", "v"]), 1);
}

/// Sends `req` (raw RESP) followed by a PING and returns everything the server answered
/// before the PONG, as text.
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

#[test]
fn get_and_set_basics() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(get(&mut c, "k"), None);
    ok(&mut c, &["SET", "k", "v1"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("v1"));
    ok(&mut c, &["SET", "k", "v2"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("v2"));
    // Integers read back exactly (stored int-encoded).
    ok(&mut c, &["SET", "n", "-9223372036854775808"]);
    assert_eq!(get(&mut c, "n").as_deref(), Some("-9223372036854775808"));
    ok(&mut c, &["SET", "z", "007"]);
    assert_eq!(get(&mut c, "z").as_deref(), Some("007"));
    // SET overwrites any type.
    hash_key(&mut c, "h");
    ok(&mut c, &["SET", "h", "now a string"]);
    assert_eq!(get(&mut c, "h").as_deref(), Some("now a string"));
    assert_eq!(
        err(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&mut c, &["GET", "a", "b"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&mut c, &["SET", "k"]),
        "ERR wrong number of arguments for 'set' command"
    );

    // RESP3: nil is the null type, values are bulk strings, OK a simple string.
    let mut c3 = s.conn3();
    assert_eq!(
        run::<Value>(&mut c3, &["GET", "missing"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c3, &["GET", "k"]).unwrap(),
        Value::BulkString(b"v2".to_vec())
    );
    assert_eq!(
        run::<Value>(&mut c3, &["SET", "k", "x"]).unwrap(),
        Value::Okay
    );
    assert_eq!(
        run::<Value>(&mut c3, &["SET", "k", "y", "NX"]).unwrap(),
        Value::Nil
    );
}

#[test]
fn set_nx_xx_get() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // NX: only when missing; the abort reply is nil.
    ok(&mut c, &["SET", "k", "1", "NX"]);
    assert_eq!(
        run::<Value>(&mut c, &["SET", "k", "2", "nx"]).unwrap(),
        Value::Nil
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some("1"));
    // XX: only when present.
    assert_eq!(
        run::<Value>(&mut c, &["SET", "x", "1", "XX"]).unwrap(),
        Value::Nil
    );
    assert_eq!(get(&mut c, "x"), None);
    ok(&mut c, &["SET", "k", "3", "XX"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("3"));
    // Repeating a flag is fine; NX with XX is not.
    ok(&mut c, &["SET", "k", "4", "XX", "XX"]);
    assert_eq!(err(&mut c, &["SET", "k", "5", "NX", "XX"]), SYNTAX);
    assert_eq!(err(&mut c, &["SET", "k", "5", "XX", "NX"]), SYNTAX);
    assert_eq!(err(&mut c, &["SET", "k", "5", "BOGUS"]), SYNTAX);
    assert_eq!(get(&mut c, "k").as_deref(), Some("4"));

    // GET returns the old value (nil when missing) and sets.
    assert_eq!(bulk(&mut c, &["SET", "g", "a", "GET"]), None);
    assert_eq!(
        bulk(&mut c, &["SET", "g", "b", "GET"]).as_deref(),
        Some("a")
    );
    assert_eq!(
        bulk(&mut c, &["SET", "g", "c", "GET", "GET"]).as_deref(),
        Some("b")
    );
    assert_eq!(get(&mut c, "g").as_deref(), Some("c"));
    ok(&mut c, &["SET", "gi", "12"]);
    assert_eq!(
        bulk(&mut c, &["SET", "gi", "13", "GET"]).as_deref(),
        Some("12")
    );
    // NX + GET: the old value, and no write when it exists.
    assert_eq!(
        bulk(&mut c, &["SET", "g", "d", "NX", "GET"]).as_deref(),
        Some("c")
    );
    assert_eq!(get(&mut c, "g").as_deref(), Some("c"));
    assert_eq!(bulk(&mut c, &["SET", "g2", "d", "NX", "GET"]), None);
    assert_eq!(get(&mut c, "g2").as_deref(), Some("d"));
    // XX + GET on a missing key: nil and no write.
    assert_eq!(bulk(&mut c, &["SET", "g3", "d", "XX", "GET"]), None);
    assert_eq!(get(&mut c, "g3"), None);
    assert_eq!(
        bulk(&mut c, &["SET", "g", "e", "XX", "GET"]).as_deref(),
        Some("c")
    );
    assert_eq!(get(&mut c, "g").as_deref(), Some("e"));
    // GET on a non-string: WRONGTYPE and the hash is left alone.
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["SET", "h", "v", "GET"]), WRONGTYPE);
    assert_eq!(int(&mut c, &["HLEN", "h"]), 1);
    // Without GET a non-string is simply replaced.
    ok(&mut c, &["SET", "h", "v", "XX"]);
    assert_eq!(get(&mut c, "h").as_deref(), Some("v"));
}

#[test]
fn set_ifeq() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "old"]);
    assert_eq!(
        run::<Value>(&mut c, &["SET", "k", "new", "IFEQ", "nope"]).unwrap(),
        Value::Nil
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some("old"));
    ok(&mut c, &["SET", "k", "new", "IFEQ", "old"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("new"));
    // A missing key is never created.
    assert_eq!(
        run::<Value>(&mut c, &["SET", "m", "v", "IFEQ", "v"]).unwrap(),
        Value::Nil
    );
    assert_eq!(int(&mut c, &["EXISTS", "m"]), 0);
    // Integer-encoded values compare by their string form.
    ok(&mut c, &["SET", "n", "42"]);
    ok(&mut c, &["SET", "n", "43", "IFEQ", "42"]);
    assert_eq!(get(&mut c, "n").as_deref(), Some("43"));
    // With GET: the old value whether or not the comparison matched.
    assert_eq!(
        bulk(&mut c, &["SET", "k", "x", "IFEQ", "zzz", "GET"]).as_deref(),
        Some("new")
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some("new"));
    assert_eq!(
        bulk(&mut c, &["SET", "k", "x", "IFEQ", "new", "GET"]).as_deref(),
        Some("new")
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some("x"));
    // With an expiry.
    ok(&mut c, &["SET", "k", "y", "IFEQ", "x", "EX", "100"]);
    assert!((1..=100).contains(&int(&mut c, &["TTL", "k"])));
    // Against a hash: WRONGTYPE.
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["SET", "h", "v", "IFEQ", "v"]), WRONGTYPE);
    assert_eq!(
        err(&mut c, &["SET", "h", "v", "IFEQ", "v", "GET"]),
        WRONGTYPE
    );
    // IFEQ excludes NX/XX and needs a value.
    assert_eq!(err(&mut c, &["SET", "k", "v", "IFEQ", "x", "NX"]), SYNTAX);
    assert_eq!(err(&mut c, &["SET", "k", "v", "XX", "IFEQ", "x"]), SYNTAX);
    assert_eq!(err(&mut c, &["SET", "k", "v", "IFEQ"]), SYNTAX);
}

#[test]
fn set_expire_options() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "v", "EX", "100"]);
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "k"])));
    ok(&mut c, &["SET", "k", "v", "PX", "100000"]);
    assert!((99_000..=100_000).contains(&int(&mut c, &["PTTL", "k"])));
    let at = now_ms() / 1000 + 200;
    ok(&mut c, &["SET", "k", "v", "EXAT", &at.to_string()]);
    assert_eq!(int(&mut c, &["EXPIRETIME", "k"]), at);
    let pat = now_ms() + 300_000;
    ok(&mut c, &["SET", "k", "v", "pxat", &pat.to_string()]);
    assert_eq!(int(&mut c, &["PEXPIRETIME", "k"]), pat);
    // KEEPTTL keeps it, a plain SET clears it.
    ok(&mut c, &["SET", "k", "v2", "KEEPTTL"]);
    assert_eq!(int(&mut c, &["PEXPIRETIME", "k"]), pat);
    assert_eq!(get(&mut c, "k").as_deref(), Some("v2"));
    ok(&mut c, &["SET", "k", "v3"]);
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    // KEEPTTL on a missing key: no TTL.
    ok(&mut c, &["SET", "fresh", "v", "KEEPTTL"]);
    assert_eq!(int(&mut c, &["TTL", "fresh"]), -1);
    // The same unit twice is accepted and the last one wins; only it is validated.
    ok(&mut c, &["SET", "k", "v", "EX", "5", "EX", "1000"]);
    assert!(ttl_after(1000).contains(&int(&mut c, &["TTL", "k"])));
    ok(&mut c, &["SET", "k", "v", "EX", "abc", "EX", "500"]);
    assert!((499..=500).contains(&int(&mut c, &["TTL", "k"])));
    // Conflicts and missing values are syntax errors.
    for bad in [
        &["SET", "k", "v", "EX", "10", "PX", "100"][..],
        &["SET", "k", "v", "PX", "10", "EXAT", "100"],
        &["SET", "k", "v", "EXAT", "10", "PXAT", "100"],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "KEEPTTL", "PX", "10"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "NX", "PXAT"],
        &["SET", "k", "v", "PERSIST"],
        // A syntax error anywhere wins over an invalid expire time.
        &["SET", "k", "v", "EX", "0", "BLAH"],
    ] {
        assert_eq!(err(&mut c, bad), SYNTAX, "{bad:?}");
    }
    // Invalid expire times: zero, negative, overflowing.
    let invalid = "ERR invalid expire time in 'set' command";
    for (unit, v) in [
        ("EX", "0"),
        ("EX", "-1"),
        ("PX", "0"),
        ("PX", "-100"),
        ("EXAT", "0"),
        ("PXAT", "-1"),
        ("EX", "9223372036854775807"),
        ("EX", "9223372036854776"),
        ("EXAT", "9223372036854776"),
        ("PX", "9223372036854775807"),
    ] {
        assert_eq!(
            err(&mut c, &["SET", "e", "v", unit, v]),
            invalid,
            "{unit} {v}"
        );
    }
    for v in ["abc", "1.5", "", "9223372036854775808"] {
        assert_eq!(
            err(&mut c, &["SET", "e", "v", "EX", v]),
            NOT_INTEGER,
            "{v:?}"
        );
    }
    assert_eq!(int(&mut c, &["EXISTS", "e"]), 0);
    // The largest PXAT is fine.
    ok(&mut c, &["SET", "e", "v", "PXAT", "9223372036854775807"]);
    assert_eq!(int(&mut c, &["PEXPIRETIME", "e"]), i64::MAX);

    // An EXAT/PXAT in the past deletes an existing key and creates nothing (DBSIZE counts
    // keys not yet reclaimed, so it tells a delete from a store of an expired key).
    let keys = int(&mut c, &["DBSIZE"]);
    ok(&mut c, &["SET", "p", "v", "EXAT", "1"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), keys);
    ok(&mut c, &["SET", "p", "v"]);
    ok(&mut c, &["SET", "p", "w", "EXAT", "1"]);
    assert_eq!(int(&mut c, &["EXISTS", "p"]), 0);
    ok(
        &mut c,
        &["SET", "p", "w", "PXAT", &(now_ms() - 1000).to_string()],
    );
    assert_eq!(int(&mut c, &["EXISTS", "p"]), 0);
    // ... and with GET still replies the old value.
    ok(&mut c, &["SET", "p", "old"]);
    assert_eq!(
        bulk(&mut c, &["SET", "p", "w", "GET", "EXAT", "1"]).as_deref(),
        Some("old")
    );
    assert_eq!(int(&mut c, &["EXISTS", "p"]), 0);
    // NX abort wins over the past expiry: the key stays.
    ok(&mut c, &["SET", "p", "stay"]);
    assert_eq!(
        run::<Value>(&mut c, &["SET", "p", "w", "NX", "EXAT", "1"]).unwrap(),
        Value::Nil
    );
    assert_eq!(get(&mut c, "p").as_deref(), Some("stay"));

    // A short PX really expires.
    ok(&mut c, &["SET", "short", "v", "PX", "50"]);
    assert!(common::wait_until(common::DEADLINE, || {
        run::<Option<String>>(&mut c, &["GET", "short"])
            .unwrap()
            .is_none()
    }));
}

#[test]
fn setnx_setex_psetex() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["SETNX", "k", "a"]), 1);
    assert_eq!(int(&mut c, &["SETNX", "k", "b"]), 0);
    assert_eq!(get(&mut c, "k").as_deref(), Some("a"));
    hash_key(&mut c, "h");
    assert_eq!(int(&mut c, &["SETNX", "h", "b"]), 0);
    assert_eq!(
        err(&mut c, &["SETNX", "k"]),
        "ERR wrong number of arguments for 'setnx' command"
    );

    ok(&mut c, &["SETEX", "k", "100", "v"]);
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "k"])));
    assert_eq!(get(&mut c, "k").as_deref(), Some("v"));
    ok(&mut c, &["PSETEX", "k", "100000", "w"]);
    assert!((99_000..=100_000).contains(&int(&mut c, &["PTTL", "k"])));
    assert_eq!(get(&mut c, "k").as_deref(), Some("w"));
    // SETEX replaces a hash.
    ok(&mut c, &["SETEX", "h", "100", "v"]);
    assert_eq!(get(&mut c, "h").as_deref(), Some("v"));
    for (cmd, v) in [
        ("SETEX", "0"),
        ("SETEX", "-10"),
        ("SETEX", "9223372036854775807"),
        ("PSETEX", "0"),
        ("PSETEX", "-1"),
        ("PSETEX", "9223372036854775807"),
    ] {
        assert_eq!(
            err(&mut c, &[cmd, "e", v, "x"]),
            format!(
                "ERR invalid expire time in '{}' command",
                cmd.to_lowercase()
            ),
            "{cmd} {v}"
        );
    }
    assert_eq!(err(&mut c, &["SETEX", "e", "ten", "x"]), NOT_INTEGER);
    assert_eq!(int(&mut c, &["EXISTS", "e"]), 0);
    assert_eq!(
        err(&mut c, &["SETEX", "e", "10"]),
        "ERR wrong number of arguments for 'setex' command"
    );
    assert_eq!(
        err(&mut c, &["PSETEX", "e", "10", "x", "y"]),
        "ERR wrong number of arguments for 'psetex' command"
    );
}

#[test]
fn getex_options() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(bulk(&mut c, &["GETEX", "missing"]), None);
    assert_eq!(bulk(&mut c, &["GETEX", "missing", "EX", "10"]), None);
    ok(&mut c, &["SET", "k", "v"]);
    // No option: like GET, TTL untouched.
    assert_eq!(bulk(&mut c, &["GETEX", "k"]).as_deref(), Some("v"));
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "EX", "100"]).as_deref(),
        Some("v")
    );
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "k"])));
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "PX", "200000"]).as_deref(),
        Some("v")
    );
    assert!((199_000..=200_000).contains(&int(&mut c, &["PTTL", "k"])));
    let at = now_ms() / 1000 + 300;
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "EXAT", &at.to_string()]).as_deref(),
        Some("v")
    );
    assert_eq!(int(&mut c, &["EXPIRETIME", "k"]), at);
    let pat = now_ms() + 400_000;
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "PXAT", &pat.to_string()]).as_deref(),
        Some("v")
    );
    assert_eq!(int(&mut c, &["PEXPIRETIME", "k"]), pat);
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "PERSIST"]).as_deref(),
        Some("v")
    );
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    // PERSIST on a key without TTL, and PERSIST twice, are fine.
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "PERSIST", "PERSIST"]).as_deref(),
        Some("v")
    );
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    // The same unit twice: the last wins.
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "EX", "x", "EX", "50"]).as_deref(),
        Some("v")
    );
    assert!((49..=50).contains(&int(&mut c, &["TTL", "k"])));
    // Integer values read back as strings.
    ok(&mut c, &["SET", "n", "123"]);
    assert_eq!(
        bulk(&mut c, &["GETEX", "n", "EX", "10"]).as_deref(),
        Some("123")
    );
    // A past EXAT/PXAT replies the value and deletes the key.
    let keys = int(&mut c, &["DBSIZE"]);
    assert_eq!(
        bulk(&mut c, &["GETEX", "k", "EXAT", "1"]).as_deref(),
        Some("v")
    );
    assert_eq!(int(&mut c, &["DBSIZE"]), keys - 1);
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    ok(&mut c, &["SET", "k", "v"]);
    assert_eq!(
        bulk(
            &mut c,
            &["GETEX", "k", "PXAT", &(now_ms() - 10).to_string()]
        )
        .as_deref(),
        Some("v")
    );
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);

    ok(&mut c, &["SET", "k", "v", "EX", "100"]);
    for bad in [
        &["GETEX", "k", "EX", "10", "PX", "100"][..],
        &["GETEX", "k", "PERSIST", "EX", "10"],
        &["GETEX", "k", "EX", "10", "PERSIST"],
        &["GETEX", "k", "NX"],
        &["GETEX", "k", "KEEPTTL"],
        &["GETEX", "k", "GET"],
        &["GETEX", "k", "EX"],
        &["GETEX", "k", "EX", "0", "BLAH"],
    ] {
        assert_eq!(err(&mut c, bad), SYNTAX, "{bad:?}");
    }
    // Valkey 9 validates the time before looking the key up: even a missing key errs.
    let invalid = "ERR invalid expire time in 'getex' command";
    assert_eq!(err(&mut c, &["GETEX", "k", "EX", "0"]), invalid);
    assert_eq!(err(&mut c, &["GETEX", "k", "PXAT", "-5"]), invalid);
    assert_eq!(err(&mut c, &["GETEX", "missing", "EX", "-1"]), invalid);
    assert_eq!(
        err(&mut c, &["GETEX", "k", "EX", "9223372036854775807"]),
        invalid
    );
    assert_eq!(err(&mut c, &["GETEX", "k", "EX", "soon"]), NOT_INTEGER);
    // The failed calls left the TTL alone.
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "k"])));
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["GETEX", "h"]), WRONGTYPE);
    assert_eq!(err(&mut c, &["GETEX", "h", "EX", "10"]), WRONGTYPE);
    assert_eq!(int(&mut c, &["TTL", "h"]), -1);
    assert_eq!(
        err(&mut c, &["GETEX"]),
        "ERR wrong number of arguments for 'getex' command"
    );
}

#[test]
fn getdel_and_getset() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(bulk(&mut c, &["GETDEL", "missing"]), None);
    ok(&mut c, &["SET", "k", "v", "EX", "100"]);
    assert_eq!(bulk(&mut c, &["GETDEL", "k"]).as_deref(), Some("v"));
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    ok(&mut c, &["SET", "n", "77"]);
    assert_eq!(bulk(&mut c, &["GETDEL", "n"]).as_deref(), Some("77"));
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["GETDEL", "h"]), WRONGTYPE);
    assert_eq!(int(&mut c, &["EXISTS", "h"]), 1);

    assert_eq!(bulk(&mut c, &["GETSET", "g", "1"]), None);
    assert_eq!(get(&mut c, "g").as_deref(), Some("1"));
    ok(&mut c, &["SET", "g", "old", "EX", "100"]);
    assert_eq!(
        bulk(&mut c, &["GETSET", "g", "new"]).as_deref(),
        Some("old")
    );
    assert_eq!(get(&mut c, "g").as_deref(), Some("new"));
    // GETSET is a plain SET: the TTL goes.
    assert_eq!(int(&mut c, &["TTL", "g"]), -1);
    assert_eq!(err(&mut c, &["GETSET", "h", "v"]), WRONGTYPE);
    assert_eq!(int(&mut c, &["HLEN", "h"]), 1);
    assert_eq!(
        err(&mut c, &["GETSET", "g"]),
        "ERR wrong number of arguments for 'getset' command"
    );
    assert_eq!(
        err(&mut c, &["GETDEL", "a", "b"]),
        "ERR wrong number of arguments for 'getdel' command"
    );
}

#[test]
fn mget_mset_msetnx_across_cores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let a0 = format!("{CORE0}a");
    let b0 = format!("{CORE0}b");
    let a1 = format!("{CORE1}a");
    let b1 = format!("{CORE1}b");
    let h1 = format!("{CORE1}h");
    // MSET spread over both cores.
    ok(&mut c, &["MSET", &a0, "1", &a1, "2", &b0, "3", &b1, "4"]);
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["MGET", &a0, &a1, &b0, &b1]).unwrap(),
        vec![
            Some("1".into()),
            Some("2".into()),
            Some("3".into()),
            Some("4".into())
        ]
    );
    // Missing and wrong-type keys read as nil, in argument order, on both cores.
    hash_key(&mut c, &h1);
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["MGET", &h1, &a0, "{bar}none", &a1, &h1]).unwrap(),
        vec![None, Some("1".into()), None, Some("2".into()), None]
    );
    // A duplicated key: the last value wins, even across cores.
    ok(&mut c, &["MSET", &a1, "x", &a0, "y", &a1, "z"]);
    assert_eq!(get(&mut c, &a1).as_deref(), Some("z"));
    assert_eq!(get(&mut c, &a0).as_deref(), Some("y"));
    // MSET clears TTLs and replaces other types.
    ok(&mut c, &["SET", &b1, "v", "EX", "100"]);
    ok(&mut c, &["MSET", &b1, "w", &h1, "s"]);
    assert_eq!(int(&mut c, &["TTL", &b1]), -1);
    assert_eq!(get(&mut c, &h1).as_deref(), Some("s"));
    // An odd number of arguments is an arity error, on one core or several.
    let mset_arity = "ERR wrong number of arguments for 'mset' command";
    assert_eq!(err(&mut c, &["MSET", &a0, "1", &b0]), mset_arity);
    assert_eq!(err(&mut c, &["MSET", &a0, "1", &a1]), mset_arity);
    assert_eq!(err(&mut c, &["MSET", &a0]), mset_arity);
    assert_eq!(get(&mut c, &a0).as_deref(), Some("y"));
    assert_eq!(
        err(&mut c, &["MGET"]),
        "ERR wrong number of arguments for 'mget' command"
    );

    // MSETNX: all or nothing, across cores.
    let n0 = format!("{CORE0}n");
    let n1 = format!("{CORE1}n");
    let m0 = format!("{CORE0}m");
    assert_eq!(int(&mut c, &["MSETNX", &n0, "1", &n1, "2"]), 1);
    assert_eq!(get(&mut c, &n0).as_deref(), Some("1"));
    assert_eq!(get(&mut c, &n1).as_deref(), Some("2"));
    // One existing key (on the other core) blocks every write.
    assert_eq!(int(&mut c, &["MSETNX", &m0, "x", &n1, "y"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", &m0]), 0);
    assert_eq!(get(&mut c, &n1).as_deref(), Some("2"));
    // An existing key of another type blocks too.
    assert_eq!(int(&mut c, &["MSETNX", &m0, "x", &h1, "y"]), 0);
    let msetnx_arity = "ERR wrong number of arguments for 'msetnx' command";
    assert_eq!(err(&mut c, &["MSETNX", &m0, "x", &n1]), msetnx_arity);
    assert_eq!(err(&mut c, &["MSETNX", &m0, "x", "{bar}z"]), msetnx_arity);
    // Same key twice in one MSETNX: the last value.
    assert_eq!(int(&mut c, &["MSETNX", &m0, "1", &m0, "2"]), 1);
    assert_eq!(get(&mut c, &m0).as_deref(), Some("2"));

    // RESP3 MGET: an array with null elements.
    let mut c3 = s.conn3();
    assert_eq!(
        run::<Value>(&mut c3, &["MGET", &a0, "{foo}none", &h1]).unwrap(),
        Value::Array(vec![
            Value::BulkString(b"y".to_vec()),
            Value::Nil,
            Value::BulkString(b"s".to_vec())
        ])
    );
}

#[test]
fn append_and_strlen() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["STRLEN", "k"]), 0);
    assert_eq!(int(&mut c, &["APPEND", "k", "Hello"]), 5);
    assert_eq!(int(&mut c, &["APPEND", "k", " World"]), 11);
    assert_eq!(get(&mut c, "k").as_deref(), Some("Hello World"));
    assert_eq!(int(&mut c, &["STRLEN", "k"]), 11);
    // Appending nothing creates an empty string.
    assert_eq!(int(&mut c, &["APPEND", "e", ""]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "e"]), 1);
    assert_eq!(int(&mut c, &["STRLEN", "e"]), 0);
    // Integer values: length of the decimal form, appended as text.
    ok(&mut c, &["SET", "n", "-123"]);
    assert_eq!(int(&mut c, &["STRLEN", "n"]), 4);
    assert_eq!(int(&mut c, &["APPEND", "n", "45"]), 6);
    assert_eq!(get(&mut c, "n").as_deref(), Some("-12345"));
    assert_eq!(int(&mut c, &["INCR", "n"]), -12344);
    // APPEND keeps the TTL.
    ok(&mut c, &["SET", "t", "a", "EX", "100"]);
    assert_eq!(int(&mut c, &["APPEND", "t", "b"]), 2);
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "t"])));
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["APPEND", "h", "x"]), WRONGTYPE);
    assert_eq!(err(&mut c, &["STRLEN", "h"]), WRONGTYPE);
    assert_eq!(
        err(&mut c, &["APPEND", "k"]),
        "ERR wrong number of arguments for 'append' command"
    );
    assert_eq!(
        err(&mut c, &["STRLEN"]),
        "ERR wrong number of arguments for 'strlen' command"
    );
}

#[test]
fn getrange_and_substr() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "This is a string"]);
    let cases: &[(&str, &str, &str)] = &[
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("5", "3", ""),
        ("16", "20", ""),
        ("15", "15", "g"),
        ("-100", "2", "Thi"),
        ("0", "-100", "T"),
        ("-100", "-100", "T"),
        ("-1", "-5", ""),
        ("-5", "-5", "t"),
        ("-1", "0", ""),
        ("3", "-14", ""),
        (
            "-9223372036854775808",
            "9223372036854775807",
            "This is a string",
        ),
        ("9223372036854775807", "-9223372036854775808", ""),
        ("-9223372036854775808", "-9223372036854775808", "T"),
    ];
    for (start, end, want) in cases {
        assert_eq!(
            bulk(&mut c, &["GETRANGE", "k", start, end]).as_deref(),
            Some(*want),
            "GETRANGE {start} {end}"
        );
        assert_eq!(
            bulk(&mut c, &["SUBSTR", "k", start, end]).as_deref(),
            Some(*want),
            "SUBSTR {start} {end}"
        );
    }
    // Missing key: an empty string, not nil.
    assert_eq!(
        bulk(&mut c, &["GETRANGE", "missing", "0", "-1"]).as_deref(),
        Some("")
    );
    // An empty value.
    ok(&mut c, &["SET", "empty", ""]);
    assert_eq!(
        bulk(&mut c, &["GETRANGE", "empty", "0", "-1"]).as_deref(),
        Some("")
    );
    assert_eq!(
        bulk(&mut c, &["GETRANGE", "empty", "-1", "0"]).as_deref(),
        Some("")
    );
    // Integer-encoded values are ranged over their decimal form.
    ok(&mut c, &["SET", "n", "-1234"]);
    assert_eq!(
        bulk(&mut c, &["GETRANGE", "n", "1", "2"]).as_deref(),
        Some("12")
    );
    assert_eq!(
        bulk(&mut c, &["GETRANGE", "n", "-2", "-1"]).as_deref(),
        Some("34")
    );
    // Index arguments must be integers; checked before the key.
    assert_eq!(err(&mut c, &["GETRANGE", "k", "a", "1"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["GETRANGE", "k", "0", "1.5"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["GETRANGE", "missing", "x", "1"]), NOT_INTEGER);
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["GETRANGE", "h", "0", "1"]), WRONGTYPE);
    assert_eq!(err(&mut c, &["GETRANGE", "h", "x", "1"]), NOT_INTEGER);
    assert_eq!(
        err(&mut c, &["GETRANGE", "k", "0"]),
        "ERR wrong number of arguments for 'getrange' command"
    );
    assert_eq!(
        err(&mut c, &["SUBSTR", "k", "0"]),
        "ERR wrong number of arguments for 'substr' command"
    );
}

#[test]
fn setrange() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "Hello World"]);
    assert_eq!(int(&mut c, &["SETRANGE", "k", "6", "Redis"]), 11);
    assert_eq!(get(&mut c, "k").as_deref(), Some("Hello Redis"));
    // Past the end: zero padding.
    assert_eq!(int(&mut c, &["SETRANGE", "p", "5", "ab"]), 7);
    assert_eq!(
        run::<Vec<u8>>(&mut c, &["GET", "p"]).unwrap(),
        b"\0\0\0\0\0ab".to_vec()
    );
    assert_eq!(int(&mut c, &["SETRANGE", "k", "13", "!"]), 14);
    assert_eq!(
        run::<Vec<u8>>(&mut c, &["GET", "k"]).unwrap(),
        b"Hello Redis\0\0!".to_vec()
    );
    // An empty value: missing key -> 0 and nothing created; existing -> its length.
    assert_eq!(int(&mut c, &["SETRANGE", "none", "0", ""]), 0);
    assert_eq!(int(&mut c, &["SETRANGE", "none", "100", ""]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "none"]), 0);
    assert_eq!(int(&mut c, &["SETRANGE", "k", "1000", ""]), 14);
    // Even an empty value must not hit a hash.
    hash_key(&mut c, "h");
    assert_eq!(err(&mut c, &["SETRANGE", "h", "0", ""]), WRONGTYPE);
    assert_eq!(err(&mut c, &["SETRANGE", "h", "0", "x"]), WRONGTYPE);
    // Integer values are edited as text.
    ok(&mut c, &["SET", "n", "12345"]);
    assert_eq!(int(&mut c, &["SETRANGE", "n", "0", "9"]), 5);
    assert_eq!(get(&mut c, "n").as_deref(), Some("92345"));
    assert_eq!(int(&mut c, &["SETRANGE", "n", "1", "x"]), 5);
    assert_eq!(get(&mut c, "n").as_deref(), Some("9x345"));
    // SETRANGE keeps the TTL.
    ok(&mut c, &["SET", "t", "abc", "EX", "100"]);
    assert_eq!(int(&mut c, &["SETRANGE", "t", "1", "X"]), 3);
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "t"])));
    // Offset errors.
    assert_eq!(
        err(&mut c, &["SETRANGE", "k", "-1", "x"]),
        "ERR offset is out of range"
    );
    assert_eq!(
        err(&mut c, &["SETRANGE", "k", "-1", ""]),
        "ERR offset is out of range"
    );
    assert_eq!(err(&mut c, &["SETRANGE", "k", "abc", "x"]), NOT_INTEGER);
    assert_eq!(
        err(&mut c, &["SETRANGE", "k", "9223372036854775808", "x"]),
        NOT_INTEGER
    );
    let too_big = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
    // Default limit is 512 MB.
    assert_eq!(err(&mut c, &["SETRANGE", "big", "536870912", "x"]), too_big);
    assert_eq!(
        err(&mut c, &["SETRANGE", "big", "9223372036854775807", "x"]),
        too_big
    );
    assert_eq!(err(&mut c, &["SETRANGE", "k", "536870911", "xy"]), too_big);
    // A smaller limit (1 MB is the minimum Valkey allows).
    ok(&mut c, &["CONFIG", "SET", "proto-max-bulk-len", "1mb"]);
    assert_eq!(err(&mut c, &["SETRANGE", "big", "1048576", "x"]), too_big);
    assert_eq!(err(&mut c, &["SETRANGE", "big", "1048575", "xy"]), too_big);
    assert_eq!(int(&mut c, &["EXISTS", "big"]), 0);
    assert_eq!(int(&mut c, &["SETRANGE", "big", "1048575", "x"]), 1_048_576);
    assert_eq!(int(&mut c, &["STRLEN", "big"]), 1_048_576);
    // APPEND obeys the same limit.
    assert_eq!(err(&mut c, &["APPEND", "big", "x"]), too_big);
    assert_eq!(int(&mut c, &["STRLEN", "big"]), 1_048_576);
    assert_eq!(int(&mut c, &["APPEND", "k", "x"]), 15);
    assert_eq!(
        err(&mut c, &["SETRANGE", "k", "0"]),
        "ERR wrong number of arguments for 'setrange' command"
    );
}

#[test]
fn binary_safe_keys_and_values() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let all: Vec<u8> = (0..=255u8).collect();
    // Every byte value in a value and in a key.
    assert_eq!(bin(&mut c, &[b"SET", &all, &all]).unwrap(), Value::Okay);
    assert_eq!(
        bin(&mut c, &[b"GET", &all]).unwrap(),
        Value::BulkString(all.clone())
    );
    assert_eq!(bin(&mut c, &[b"STRLEN", &all]).unwrap(), Value::Int(256));
    assert_eq!(
        bin(&mut c, &[b"GETRANGE", &all, b"250", b"-1"]).unwrap(),
        Value::BulkString(vec![250, 251, 252, 253, 254, 255])
    );
    assert_eq!(
        bin(&mut c, &[b"APPEND", &all, b"\r\n\0"]).unwrap(),
        Value::Int(259)
    );
    assert_eq!(
        bin(&mut c, &[b"SETRANGE", &all, b"0", b"\r\n"]).unwrap(),
        Value::Int(259)
    );
    let mut want = all.clone();
    want[0] = b'\r';
    want[1] = b'\n';
    want.extend_from_slice(b"\r\n\0");
    assert_eq!(
        bin(&mut c, &[b"GETDEL", &all]).unwrap(),
        Value::BulkString(want)
    );
    // Each single byte as its own key, spread over both cores.
    let mut p = redis::pipe();
    for b in 0..=255u8 {
        p.cmd("SET").arg(&[b][..]).arg(&[b, b][..]).ignore();
    }
    p.query::<()>(&mut c).unwrap();
    let mut mget = redis::cmd("MGET");
    for b in 0..=255u8 {
        mget.arg(&[b][..]);
    }
    let got: Vec<Vec<u8>> = mget.query(&mut c).unwrap();
    assert_eq!(got.len(), 256);
    for (b, v) in got.iter().enumerate() {
        assert_eq!(v, &vec![b as u8, b as u8]);
    }
    // A 1 MiB value.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(bin(&mut c, &[b"SET", b"big", &big]).unwrap(), Value::Okay);
    assert_eq!(
        bin(&mut c, &[b"GET", b"big"]).unwrap(),
        Value::BulkString(big.clone())
    );
    assert_eq!(int(&mut c, &["STRLEN", "big"]), 1024 * 1024);
    // The empty key and the empty value.
    ok(&mut c, &["SET", "", "empty key"]);
    assert_eq!(get(&mut c, "").as_deref(), Some("empty key"));
    ok(&mut c, &["SET", "ev", ""]);
    assert_eq!(get(&mut c, "ev").as_deref(), Some(""));
    assert_eq!(int(&mut c, &["EXISTS", "ev"]), 1);
    assert_eq!(int(&mut c, &["STRLEN", "ev"]), 0);
    ok(&mut c, &["SET", "", ""]);
    assert_eq!(get(&mut c, "").as_deref(), Some(""));
    assert_eq!(int(&mut c, &["DEL", ""]), 1);
    assert_eq!(get(&mut c, ""), None);
}

#[test]
fn wrongtype_on_a_hash() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    hash_key(&mut c, "h");
    for args in [
        &["GET", "h"][..],
        &["GETEX", "h"],
        &["GETEX", "h", "PERSIST"],
        &["GETDEL", "h"],
        &["GETSET", "h", "v"],
        &["SET", "h", "v", "GET"],
        &["APPEND", "h", "v"],
        &["STRLEN", "h"],
        &["GETRANGE", "h", "0", "-1"],
        &["SUBSTR", "h", "0", "-1"],
        &["SETRANGE", "h", "0", "v"],
        &["INCR", "h"],
        &["DECR", "h"],
        &["INCRBY", "h", "1"],
        &["DECRBY", "h", "1"],
        &["INCRBYFLOAT", "h", "1"],
        &["INCREX", "h"],
    ] {
        assert_eq!(err(&mut c, args), WRONGTYPE, "{args:?}");
    }
    // Still the same hash.
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HGETALL", "h"]).unwrap(),
        vec!["f".to_string(), "v".to_string()]
    );
    // MGET reads it as nil; SETNX/MSETNX see it as existing.
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["MGET", "h"]).unwrap(),
        vec![None]
    );
    assert_eq!(int(&mut c, &["SETNX", "h", "v"]), 0);
    assert_eq!(int(&mut c, &["MSETNX", "h", "v"]), 0);
    assert_eq!(int(&mut c, &["HLEN", "h"]), 1);
}

#[test]
fn resp3_wire_format() {
    let s = Server::start(&[]);
    let mut raw = s.raw();
    assert!(raw_exchange(&mut raw, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n").starts_with('%'));
    assert_eq!(
        raw_exchange(&mut raw, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        "_\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n42\r\n"),
        "+OK\r\n"
    );
    // An integer-encoded value is still a bulk string.
    assert_eq!(
        raw_exchange(&mut raw, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        "$2\r\n42\r\n"
    );
    assert_eq!(
        raw_exchange(
            &mut raw,
            "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nXX\r\n"
        ),
        "+OK\r\n"
    );
    assert_eq!(
        raw_exchange(
            &mut raw,
            "*4\r\n$3\r\nSET\r\n$1\r\nn\r\n$1\r\nv\r\n$2\r\nXX\r\n"
        ),
        "_\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, "*3\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\nn\r\n"),
        "*2\r\n$1\r\nv\r\n_\r\n"
    );
    assert_eq!(
        raw_exchange(&mut raw, "*2\r\n$6\r\nSTRLEN\r\n$1\r\nk\r\n"),
        ":1\r\n"
    );
}
