//! Lists through a real client: pushes and pops (with counts), LRANGE/LINDEX/LSET/LINSERT/
//! LREM/LTRIM/LPOS, LMOVE/RPOPLPUSH/LMPOP, Valkey's exact replies and errors in RESP2 and
//! RESP3, the listpack → quicklist encoding rule, persistence across a restart, and random
//! command streams against a `Vec` model.

use crate::common;

use std::io::{Read, Write};

use common::{Server, err, int, ok, run};
use proptest::prelude::*;
use redis::Value;

fn lrange(c: &mut redis::Connection, key: &str) -> Vec<String> {
    run(c, &["LRANGE", key, "0", "-1"]).unwrap()
}

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    run(c, &["OBJECT", "ENCODING", key]).unwrap()
}

fn exists(c: &mut redis::Connection, key: &str) -> bool {
    int(c, &["EXISTS", key]) == 1
}

/// Sends one command as RESP on a raw connection and returns the reply's bytes (enough for
/// the one-line replies compared here).
fn raw_reply(s: &Server, args: &[&str]) -> Vec<u8> {
    let mut r = s.raw();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    r.write_all(req.as_bytes()).unwrap();
    let mut buf = vec![0u8; 256];
    let n = r.read(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn pushes_and_pops() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["LPUSH", "l", "a", "b", "c"]), 3);
    assert_eq!(lrange(&mut c, "l"), ["c", "b", "a"]);
    assert_eq!(int(&mut c, &["RPUSH", "l", "d", "e"]), 5);
    assert_eq!(lrange(&mut c, "l"), ["c", "b", "a", "d", "e"]);
    assert_eq!(int(&mut c, &["LPUSHX", "l", "x"]), 6);
    assert_eq!(int(&mut c, &["RPUSHX", "l", "y", "z"]), 8);
    assert_eq!(int(&mut c, &["LPUSHX", "nope", "x"]), 0);
    assert_eq!(int(&mut c, &["RPUSHX", "nope", "x"]), 0);
    assert!(!exists(&mut c, "nope"));
    assert_eq!(int(&mut c, &["LLEN", "l"]), 8);
    assert_eq!(int(&mut c, &["LLEN", "nope"]), 0);
    assert_eq!(run::<String>(&mut c, &["TYPE", "l"]).unwrap(), "list");

    assert_eq!(run::<String>(&mut c, &["LPOP", "l"]).unwrap(), "x");
    assert_eq!(run::<String>(&mut c, &["RPOP", "l"]).unwrap(), "z");
    assert_eq!(
        run::<Vec<String>>(&mut c, &["LPOP", "l", "2"]).unwrap(),
        ["c", "b"]
    );
    // RPOP with a count replies from the tail inwards.
    assert_eq!(
        run::<Vec<String>>(&mut c, &["RPOP", "l", "2"]).unwrap(),
        ["y", "e"]
    );
    assert_eq!(
        run::<Value>(&mut c, &["LPOP", "l", "0"]).unwrap(),
        Value::Array(vec![])
    );
    // A count past the length (even absurd) takes what there is; the key goes with it.
    assert_eq!(
        run::<Vec<String>>(&mut c, &["RPOP", "l", "9223372036854775807"]).unwrap(),
        ["d", "a"]
    );
    assert!(!exists(&mut c, "l"));
    assert_eq!(run::<Value>(&mut c, &["LPOP", "l"]).unwrap(), Value::Nil);
    assert_eq!(
        run::<Value>(&mut c, &["RPOP", "l", "3"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["LPOP", "l", "0"]).unwrap(),
        Value::Nil
    );

    // Binary-safe, and integer-looking text comes back byte for byte.
    let odd: Vec<Vec<u8>> = vec![
        b"\0\r\n\xff".to_vec(),
        b"".to_vec(),
        b"007".to_vec(),
        b"-0".to_vec(),
        b"+5".to_vec(),
        b"9223372036854775808".to_vec(),
        b"-9223372036854775808".to_vec(),
        b"12".to_vec(),
        b" 12".to_vec(),
        vec![b'b'; 10_000],
    ];
    let n: i64 = redis::cmd("RPUSH")
        .arg("bin")
        .arg(&odd)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, odd.len() as i64);
    let back: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("bin")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(back, odd);
    let pos: i64 = redis::cmd("LPOS")
        .arg("bin")
        .arg(b"\0\r\n\xff")
        .query(&mut c)
        .unwrap();
    assert_eq!(pos, 0);
    assert_eq!(int(&mut c, &["LPOS", "bin", "12"]), 7);
    assert_eq!(
        run::<Value>(&mut c, &["LPOS", "bin", "012"]).unwrap(),
        Value::Nil
    );
}

#[test]
fn null_replies_in_resp2_and_resp3() {
    let s = Server::start(&[]);
    assert_eq!(raw_reply(&s, &["LPOP", "missing"]), b"$-1\r\n");
    assert_eq!(raw_reply(&s, &["LPOP", "missing", "2"]), b"*-1\r\n");
    assert_eq!(raw_reply(&s, &["RPOP", "missing", "0"]), b"*-1\r\n");
    assert_eq!(
        raw_reply(&s, &["LMPOP", "1", "missing", "LEFT"]),
        b"*-1\r\n"
    );
    assert_eq!(raw_reply(&s, &["LINDEX", "missing", "0"]), b"$-1\r\n");
    assert_eq!(raw_reply(&s, &["LPOS", "missing", "x"]), b"$-1\r\n");
    assert_eq!(
        raw_reply(&s, &["LPOS", "missing", "x", "COUNT", "0"]),
        b"*0\r\n"
    );
    assert_eq!(
        raw_reply(&s, &["LMOVE", "{n}missing", "{n}d", "LEFT", "LEFT"]),
        b"$-1\r\n"
    );
    let mut c3 = s.conn3();
    for args in [
        &["LPOP", "missing"][..],
        &["LPOP", "missing", "2"],
        &["LMPOP", "1", "missing", "RIGHT"],
        &["LINDEX", "missing", "0"],
        &["LPOS", "missing", "x"],
        &["RPOPLPUSH", "{n}missing", "{n}d"],
    ] {
        assert_eq!(run::<Value>(&mut c3, args).unwrap(), Value::Nil, "{args:?}");
    }
    int(&mut c3, &["RPUSH", "l", "a", "b"]);
    assert_eq!(
        run::<Vec<String>>(&mut c3, &["LPOP", "l", "5"]).unwrap(),
        ["a", "b"]
    );
}

#[test]
fn reads_and_in_place_writes() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["RPUSH", "l", "a", "b", "c", "d", "e"]);
    for (start, stop, want) in [
        ("0", "-1", &["a", "b", "c", "d", "e"][..]),
        ("1", "2", &["b", "c"]),
        ("-2", "-1", &["d", "e"]),
        ("-100", "1", &["a", "b"]),
        ("3", "100", &["d", "e"]),
        ("3", "1", &[]),
        ("5", "10", &[]),
        ("0", "-6", &[]),
        (
            "-9223372036854775808",
            "9223372036854775807",
            &["a", "b", "c", "d", "e"],
        ),
    ] {
        assert_eq!(
            run::<Vec<String>>(&mut c, &["LRANGE", "l", start, stop]).unwrap(),
            want,
            "LRANGE {start} {stop}"
        );
    }
    assert_eq!(
        run::<Vec<String>>(&mut c, &["LRANGE", "missing", "0", "-1"]).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(run::<String>(&mut c, &["LINDEX", "l", "0"]).unwrap(), "a");
    assert_eq!(run::<String>(&mut c, &["LINDEX", "l", "-1"]).unwrap(), "e");
    assert_eq!(
        run::<Value>(&mut c, &["LINDEX", "l", "5"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["LINDEX", "l", "-6"]).unwrap(),
        Value::Nil
    );
    // The key is looked up before the index is parsed.
    assert_eq!(
        run::<Value>(&mut c, &["LINDEX", "missing", "x"]).unwrap(),
        Value::Nil
    );

    ok(&mut c, &["LSET", "l", "0", "A"]);
    ok(&mut c, &["LSET", "l", "-1", "E"]);
    assert_eq!(lrange(&mut c, "l"), ["A", "b", "c", "d", "E"]);
    assert_eq!(
        err(&mut c, &["LSET", "l", "5", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        err(&mut c, &["LSET", "l", "-6", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        err(&mut c, &["LSET", "missing", "0", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        err(&mut c, &["LSET", "l", "x", "x"]),
        "ERR value is not an integer or out of range"
    );

    assert_eq!(int(&mut c, &["LINSERT", "l", "BEFORE", "c", "bc"]), 6);
    assert_eq!(int(&mut c, &["LINSERT", "l", "after", "E", "F"]), 7);
    assert_eq!(int(&mut c, &["LINSERT", "l", "AFTER", "nope", "x"]), -1);
    assert_eq!(int(&mut c, &["LINSERT", "missing", "AFTER", "a", "x"]), 0);
    assert!(!exists(&mut c, "missing"));
    assert_eq!(lrange(&mut c, "l"), ["A", "b", "bc", "c", "d", "E", "F"]);
    assert_eq!(
        err(&mut c, &["LINSERT", "l", "MIDDLE", "c", "x"]),
        "ERR syntax error"
    );

    int(&mut c, &["RPUSH", "r", "x", "y", "x", "z", "x", "x"]);
    assert_eq!(int(&mut c, &["LREM", "r", "-2", "x"]), 2);
    assert_eq!(lrange(&mut c, "r"), ["x", "y", "x", "z"]);
    assert_eq!(int(&mut c, &["LREM", "r", "1", "x"]), 1);
    assert_eq!(lrange(&mut c, "r"), ["y", "x", "z"]);
    assert_eq!(int(&mut c, &["LREM", "r", "0", "nope"]), 0);
    assert_eq!(int(&mut c, &["LREM", "missing", "0", "x"]), 0);
    assert_eq!(int(&mut c, &["LREM", "r", "-9223372036854775807", "x"]), 1);
    assert_eq!(int(&mut c, &["LREM", "r", "0", "y"]), 1);
    assert_eq!(int(&mut c, &["LREM", "r", "0", "z"]), 1);
    assert!(!exists(&mut c, "r"), "the last LREM deletes the key");

    int(&mut c, &["RPUSH", "t", "1", "2", "3", "4", "5"]);
    ok(&mut c, &["LTRIM", "t", "1", "-2"]);
    assert_eq!(lrange(&mut c, "t"), ["2", "3", "4"]);
    ok(&mut c, &["LTRIM", "t", "0", "100"]);
    assert_eq!(lrange(&mut c, "t"), ["2", "3", "4"]);
    ok(&mut c, &["LTRIM", "missing", "0", "1"]);
    ok(&mut c, &["LTRIM", "t", "2", "1"]);
    assert!(!exists(&mut c, "t"), "an empty range deletes the key");
}

#[test]
fn lpos_options() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(
        &mut c,
        &["RPUSH", "l", "a", "b", "c", "1", "2", "3", "c", "c"],
    );
    assert_eq!(int(&mut c, &["LPOS", "l", "c"]), 2);
    assert_eq!(int(&mut c, &["LPOS", "l", "c", "RANK", "2"]), 6);
    assert_eq!(int(&mut c, &["LPOS", "l", "c", "RANK", "-1"]), 7);
    assert_eq!(int(&mut c, &["LPOS", "l", "3"]), 5);
    assert_eq!(
        run::<Value>(&mut c, &["LPOS", "l", "c", "RANK", "4"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["LPOS", "l", "c", "COUNT", "2"]).unwrap(),
        [2, 6]
    );
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["LPOS", "l", "c", "COUNT", "0"]).unwrap(),
        [2, 6, 7]
    );
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["LPOS", "l", "c", "RANK", "-2", "COUNT", "0"]).unwrap(),
        [6, 2]
    );
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["LPOS", "l", "c", "COUNT", "0", "MAXLEN", "7"]).unwrap(),
        [2, 6]
    );
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["LPOS", "l", "nope", "COUNT", "1"]).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        run::<Value>(&mut c, &["LPOS", "l", "c", "MAXLEN", "2"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Vec<i64>>(
            &mut c,
            &[
                "LPOS",
                "l",
                "c",
                "rank",
                "9223372036854775807",
                "count",
                "1"
            ]
        )
        .unwrap(),
        Vec::<i64>::new()
    );
    let rank0 = "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                 second ... or use negative to start from the end of the list";
    assert_eq!(err(&mut c, &["LPOS", "l", "c", "RANK", "0"]), rank0);
    // Options are checked before the key.
    assert_eq!(err(&mut c, &["LPOS", "missing", "c", "RANK", "0"]), rank0);
    assert_eq!(
        err(&mut c, &["LPOS", "l", "c", "RANK", "-9223372036854775808"]),
        "ERR value is out of range, value must between -9223372036854775807 and \
         9223372036854775807"
    );
    assert_eq!(
        err(&mut c, &["LPOS", "l", "c", "RANK", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["LPOS", "l", "c", "COUNT", "-1"]),
        "ERR COUNT can't be negative"
    );
    assert_eq!(
        err(&mut c, &["LPOS", "l", "c", "COUNT", "x"]),
        "ERR COUNT can't be negative"
    );
    assert_eq!(
        err(&mut c, &["LPOS", "l", "c", "MAXLEN", "-1"]),
        "ERR MAXLEN can't be negative"
    );
    assert_eq!(err(&mut c, &["LPOS", "l", "c", "RANK"]), "ERR syntax error");
    assert_eq!(
        err(&mut c, &["LPOS", "l", "c", "FOO", "1"]),
        "ERR syntax error"
    );
}

#[test]
fn moves_and_multi_pops() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Multi-key commands take keys of one slot (hash tags), as in a cluster.
    int(&mut c, &["RPUSH", "{t}src", "a", "b", "c"]);
    assert_eq!(
        run::<String>(&mut c, &["LMOVE", "{t}src", "{t}dst", "LEFT", "RIGHT"]).unwrap(),
        "a"
    );
    assert_eq!(
        run::<String>(&mut c, &["LMOVE", "{t}src", "{t}dst", "right", "left"]).unwrap(),
        "c"
    );
    assert_eq!(lrange(&mut c, "{t}dst"), ["c", "a"]);
    assert_eq!(
        run::<String>(&mut c, &["RPOPLPUSH", "{t}src", "{t}dst"]).unwrap(),
        "b"
    );
    assert!(
        !exists(&mut c, "{t}src"),
        "the last move deletes the source"
    );
    assert_eq!(lrange(&mut c, "{t}dst"), ["b", "c", "a"]);
    assert_eq!(
        run::<Value>(&mut c, &["RPOPLPUSH", "{t}src", "{t}dst"]).unwrap(),
        Value::Nil
    );
    // Same key: a rotation.
    assert_eq!(
        run::<String>(&mut c, &["RPOPLPUSH", "{t}dst", "{t}dst"]).unwrap(),
        "a"
    );
    assert_eq!(lrange(&mut c, "{t}dst"), ["a", "b", "c"]);
    assert_eq!(
        run::<String>(&mut c, &["LMOVE", "{t}dst", "{t}dst", "LEFT", "RIGHT"]).unwrap(),
        "a"
    );
    assert_eq!(lrange(&mut c, "{t}dst"), ["b", "c", "a"]);
    // A one-element list rotated onto itself keeps its TTL.
    int(&mut c, &["RPUSH", "one", "x"]);
    int(&mut c, &["EXPIRE", "one", "1000"]);
    assert_eq!(
        run::<String>(&mut c, &["LMOVE", "one", "one", "LEFT", "RIGHT"]).unwrap(),
        "x"
    );
    assert!(int(&mut c, &["TTL", "one"]) > 0);
    // The destination's type is checked before anything is popped.
    ok(&mut c, &["SET", "{t}str", "v"]);
    assert_eq!(
        err(&mut c, &["LMOVE", "{t}dst", "{t}str", "LEFT", "LEFT"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(lrange(&mut c, "{t}dst"), ["b", "c", "a"]);
    assert_eq!(
        err(&mut c, &["LMOVE", "{t}dst", "{t}dst", "UP", "LEFT"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["LMOVE", "{t}dst", "{t}dst", "LEFT", "DOWN"]),
        "ERR syntax error"
    );

    // LMPOP: the first non-empty list of the keys given.
    int(&mut c, &["RPUSH", "{m}b", "1", "2", "3"]);
    let v: Value = run(&mut c, &["LMPOP", "2", "{m}a", "{m}b", "LEFT"]).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            Value::BulkString(b"{m}b".to_vec()),
            Value::Array(vec![Value::BulkString(b"1".to_vec())]),
        ])
    );
    let (key, elems): (String, Vec<String>) = run(
        &mut c,
        &["LMPOP", "2", "{m}a", "{m}b", "RIGHT", "COUNT", "10"],
    )
    .unwrap();
    assert_eq!(
        (key.as_str(), elems),
        ("{m}b", vec!["3".into(), "2".into()])
    );
    assert!(!exists(&mut c, "{m}b"));
    assert_eq!(
        run::<Value>(&mut c, &["LMPOP", "2", "{m}a", "{m}b", "LEFT"]).unwrap(),
        Value::Nil
    );
    ok(&mut c, &["SET", "{m}s", "v"]);
    assert_eq!(
        err(&mut c, &["LMPOP", "2", "{m}a", "{m}s", "LEFT"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    for (args, want) in [
        (
            &["LMPOP", "0", "{m}a", "LEFT"][..],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["LMPOP", "x", "{m}a", "LEFT"],
            "ERR numkeys should be greater than 0",
        ),
        (&["LMPOP", "2", "{m}a", "LEFT"], "ERR syntax error"),
        (&["LMPOP", "1", "{m}a", "MIDDLE"], "ERR syntax error"),
        (
            &["LMPOP", "1", "{m}a", "LEFT", "COUNT", "0"],
            "ERR count should be greater than 0",
        ),
        (
            &["LMPOP", "1", "{m}a", "LEFT", "COUNT", "x"],
            "ERR count should be greater than 0",
        ),
        (
            &["LMPOP", "1", "{m}a", "LEFT", "COUNT", "1", "COUNT", "1"],
            "ERR syntax error",
        ),
        (&["LMPOP", "1", "{m}a", "LEFT", "COUNT"], "ERR syntax error"),
        (&["LMPOP", "1", "{m}a", "LEFT", "FOO"], "ERR syntax error"),
        (
            &["LMPOP", "1"],
            "ERR wrong number of arguments for 'lmpop' command",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
    // The table knows LMPOP's keys from its numkeys argument.
    assert_eq!(
        run::<Vec<String>>(
            &mut c,
            &["COMMAND", "GETKEYS", "LMPOP", "2", "a", "b", "LEFT"]
        )
        .unwrap(),
        ["a", "b"]
    );
    let info: Value = run(&mut c, &["COMMAND", "INFO", "LMPOP"]).unwrap();
    assert!(format!("{info:?}").contains("movablekeys"), "{info:?}");
}

#[test]
fn errors_and_wrong_types() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "{w}s", "v"]);
    int(&mut c, &["RPUSH", "{w}l", "a"]);
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    for args in [
        &["LPUSH", "{w}s", "x"][..],
        &["RPUSH", "{w}s", "x"],
        &["LPUSHX", "{w}s", "x"],
        &["RPUSHX", "{w}s", "x"],
        &["LPOP", "{w}s"],
        &["RPOP", "{w}s", "1"],
        &["LPOP", "{w}s", "0"],
        &["LRANGE", "{w}s", "0", "-1"],
        &["LLEN", "{w}s"],
        &["LINDEX", "{w}s", "0"],
        &["LINDEX", "{w}s", "x"],
        &["LSET", "{w}s", "0", "x"],
        &["LINSERT", "{w}s", "BEFORE", "a", "b"],
        &["LREM", "{w}s", "0", "x"],
        &["LTRIM", "{w}s", "0", "1"],
        &["LPOS", "{w}s", "x"],
        &["LMOVE", "{w}s", "{w}l", "LEFT", "LEFT"],
        &["RPOPLPUSH", "{w}s", "{w}l"],
        &["LMPOP", "1", "{w}s", "LEFT"],
    ] {
        assert_eq!(err(&mut c, args), wrongtype, "{args:?}");
    }
    assert_eq!(run::<String>(&mut c, &["GET", "{w}s"]).unwrap(), "v");
    let positive = "ERR value is out of range, must be positive";
    assert_eq!(err(&mut c, &["LPOP", "{w}l", "-1"]), positive);
    assert_eq!(err(&mut c, &["RPOP", "{w}l", "x"]), positive);
    // The count is checked before the key.
    assert_eq!(err(&mut c, &["LPOP", "{w}s", "-1"]), positive);
    assert_eq!(err(&mut c, &["LPOP", "missing", "-1"]), positive);
    assert_eq!(
        err(&mut c, &["LPOP", "{w}l", "1", "2"]),
        "ERR wrong number of arguments for 'lpop' command"
    );
    let not_int = "ERR value is not an integer or out of range";
    for args in [
        &["LRANGE", "{w}l", "x", "1"][..],
        &["LRANGE", "missing", "0", "x"],
        &["LRANGE", "{w}s", "0", "x"],
        &["LTRIM", "{w}l", "0", "x"],
        &["LTRIM", "{w}s", "x", "0"],
        &["LINDEX", "{w}l", "1.5"],
        &["LREM", "missing", "x", "a"],
    ] {
        assert_eq!(err(&mut c, args), not_int, "{args:?}");
    }
    assert_eq!(
        err(&mut c, &["LREM", "{w}l", "-9223372036854775808", "a"]),
        "ERR value is out of range, value must between -9223372036854775807 and \
         9223372036854775807"
    );
    for args in [
        &["LPUSH", "{w}l"][..],
        &["RPUSHX", "{w}l"],
        &["LRANGE", "{w}l", "0"],
        &["LINDEX", "{w}l"],
        &["LSET", "{w}l", "0"],
        &["LINSERT", "{w}l", "BEFORE", "a"],
        &["LREM", "{w}l", "0"],
        &["LTRIM", "{w}l", "0"],
        &["LPOS", "{w}l"],
        &["LMOVE", "{w}l", "{w}l", "LEFT"],
        &["RPOPLPUSH", "{w}l"],
        &["LLEN"],
        &["LPOP"],
    ] {
        let name = args[0].to_ascii_lowercase();
        assert_eq!(
            err(&mut c, args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
    assert_eq!(lrange(&mut c, "{w}l"), ["a"]);
}

#[test]
fn encoding_follows_the_listpack_limit() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // With the default list-max-listpack-size -2 (8 KiB): 1637 "xxx" (5 bytes each as an
    // entry, 7 of listpack header) fill a listpack to exactly 8192 bytes.
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg("l");
    for _ in 0..1637 {
        cmd.arg("xxx");
    }
    let _: i64 = cmd.query(&mut c).unwrap();
    assert_eq!(encoding(&mut c, "l"), "listpack");
    int(&mut c, &["RPUSH", "l", "xxx"]);
    assert_eq!(encoding(&mut c, "l"), "quicklist");
    // Back to a listpack only at half the budget: 7 + 5 × 817 = 4092 ≤ 4096.
    ok(&mut c, &["LTRIM", "l", "0", "817"]);
    assert_eq!(encoding(&mut c, "l"), "quicklist");
    run::<String>(&mut c, &["RPOP", "l"]).unwrap();
    assert_eq!(int(&mut c, &["LLEN", "l"]), 817);
    assert_eq!(encoding(&mut c, "l"), "listpack");
    // An element past the budget makes a quicklist at once, and leaving makes it a listpack.
    int(&mut c, &["RPUSH", "small", "a"]);
    assert_eq!(encoding(&mut c, "small"), "listpack");
    int(&mut c, &["RPUSH", "small", &"b".repeat(9000)]);
    assert_eq!(encoding(&mut c, "small"), "quicklist");
    assert_eq!(int(&mut c, &["LREM", "small", "0", &"b".repeat(9000)]), 1);
    assert_eq!(encoding(&mut c, "small"), "listpack");
    // LSET and LINSERT of a large value convert too.
    ok(&mut c, &["LSET", "small", "0", &"c".repeat(9000)]);
    assert_eq!(encoding(&mut c, "small"), "quicklist");
    ok(&mut c, &["LSET", "small", "0", "c"]);
    assert_eq!(encoding(&mut c, "small"), "listpack");
    assert_eq!(
        int(
            &mut c,
            &["LINSERT", "small", "BEFORE", "c", &"d".repeat(9000)]
        ),
        2
    );
    assert_eq!(encoding(&mut c, "small"), "quicklist");
    assert_eq!(lrange(&mut c, "small")[1], "c");
}

#[test]
fn scan_type_and_object() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for i in 0..20 {
        int(&mut c, &["RPUSH", &format!("list:{i}"), "x"]);
        ok(&mut c, &["SET", &format!("str:{i}"), "x"]);
    }
    let mut cursor = "0".to_string();
    let mut found = Vec::new();
    loop {
        let (next, keys): (String, Vec<String>) =
            run(&mut c, &["SCAN", &cursor, "TYPE", "list", "COUNT", "100"]).unwrap();
        found.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    found.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("list:{i}")).collect();
    want.sort();
    assert_eq!(found, want);
    assert_eq!(run::<String>(&mut c, &["TYPE", "list:3"]).unwrap(), "list");
    assert_eq!(encoding(&mut c, "list:3"), "listpack");
}

#[test]
fn lists_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
    let mut c = s.conn();
    int(&mut c, &["RPUSH", "small", "a", "1", "-7", "\0x"]);
    let big: Vec<String> = (0..5000).map(|i| format!("e{i}")).collect();
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg("big").arg(&big);
    let _: i64 = cmd.query(&mut c).unwrap();
    int(&mut c, &["LPUSH", "huge", &"h".repeat(20_000), "x"]);
    int(&mut c, &["RPUSH", "ttl", "v"]);
    int(&mut c, &["EXPIRE", "ttl", "1000"]);
    int(&mut c, &["RPUSH", "gone", "v"]);
    run::<String>(&mut c, &["LPOP", "gone"]).unwrap();
    ok(&mut c, &["LSET", "big", "10", "changed"]);
    int(&mut c, &["LINSERT", "big", "AFTER", "e20", "inserted"]);
    let big_before = lrange(&mut c, "big");
    s.kill9();
    s.restart();
    let mut c = s.conn();
    let loaded = common::wait_until(common::DEADLINE, || {
        run::<String>(&mut c, &["INFO", "persistence"])
            .is_ok_and(|i| i.lines().any(|l| l == "loading:0"))
    });
    assert!(loaded, "still loading");
    assert_eq!(lrange(&mut c, "small"), ["a", "1", "-7", "\0x"]);
    assert_eq!(encoding(&mut c, "small"), "listpack");
    assert_eq!(lrange(&mut c, "big"), big_before);
    assert_eq!(encoding(&mut c, "big"), "quicklist");
    assert_eq!(
        lrange(&mut c, "huge"),
        ["x".to_string(), "h".repeat(20_000)]
    );
    assert_eq!(encoding(&mut c, "huge"), "quicklist");
    assert!(int(&mut c, &["TTL", "ttl"]) > 0);
    assert!(!exists(&mut c, "gone"));
}

// ---- random command streams against a model ----

#[derive(Debug, Clone)]
enum Cmd {
    Push(bool, Vec<String>),
    Pop(bool, Option<usize>),
    Set(i64, String),
    Insert(bool, String, String),
    Rem(i64, String),
    Trim(i64, i64),
    Move(bool, bool),
}

fn elem() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop_oneof![Just("a"), Just("b"), Just("7"), Just("-70000"), Just("")]
            .prop_map(String::from),
        1 => (100usize..9000).prop_map(|n| "z".repeat(n)),
    ]
}

fn command() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        4 => (any::<bool>(), proptest::collection::vec(elem(), 1..200))
            .prop_map(|(l, v)| Cmd::Push(l, v)),
        2 => (any::<bool>(), proptest::option::of(0usize..300))
            .prop_map(|(l, n)| Cmd::Pop(l, n)),
        1 => (-300i64..300, elem()).prop_map(|(i, v)| Cmd::Set(i, v)),
        1 => (any::<bool>(), elem(), elem()).prop_map(|(a, p, v)| Cmd::Insert(a, p, v)),
        1 => (-3i64..4, elem()).prop_map(|(n, v)| Cmd::Rem(n, v)),
        1 => (-300i64..300, -300i64..300).prop_map(|(s, e)| Cmd::Trim(s, e)),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(f, t)| Cmd::Move(f, t)),
    ]
}

fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i + len as i64 } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// Runs `cmd` on the server (key `{p}l`, `{p}o` for moves) and on the model; checks replies.
fn step(c: &mut redis::Connection, m: &mut Vec<String>, other: &mut Vec<String>, cmd: &Cmd) {
    let key = "{p}l";
    match cmd {
        Cmd::Push(left, vs) => {
            let mut q = redis::cmd(if *left { "LPUSH" } else { "RPUSH" });
            q.arg(key).arg(vs);
            let n: usize = q.query(c).unwrap();
            for v in vs {
                if *left {
                    m.insert(0, v.clone());
                } else {
                    m.push(v.clone());
                }
            }
            assert_eq!(n, m.len());
        }
        Cmd::Pop(left, count) => {
            let mut q = redis::cmd(if *left { "LPOP" } else { "RPOP" });
            q.arg(key);
            if let Some(n) = count {
                q.arg(n);
            }
            let got: Option<Vec<String>> = match count {
                Some(_) => q.query(c).unwrap(),
                None => q.query::<Option<String>>(c).unwrap().map(|v| vec![v]),
            };
            let was_empty = m.is_empty();
            let n = count.unwrap_or(1).min(m.len());
            let want: Vec<String> = if *left {
                m.drain(..n).collect()
            } else {
                m.drain(m.len() - n..).rev().collect()
            };
            // A missing key is a null, with or without a count; a count of 0 an empty array.
            assert_eq!(got, (!was_empty).then_some(want));
        }
        Cmd::Set(i, v) => {
            let r: redis::RedisResult<String> = redis::cmd("LSET").arg(key).arg(i).arg(v).query(c);
            match index(*i, m.len()) {
                Some(i) => {
                    assert_eq!(r.unwrap(), "OK");
                    m[i] = v.clone();
                }
                None => assert!(r.is_err()),
            }
        }
        Cmd::Insert(after, pivot, v) => {
            let n: i64 = redis::cmd("LINSERT")
                .arg(key)
                .arg(if *after { "AFTER" } else { "BEFORE" })
                .arg(pivot)
                .arg(v)
                .query(c)
                .unwrap();
            let want = match m.iter().position(|x| x == pivot) {
                _ if m.is_empty() => 0,
                None => -1,
                Some(p) => {
                    m.insert(p + usize::from(*after), v.clone());
                    m.len() as i64
                }
            };
            assert_eq!(n, want);
        }
        Cmd::Rem(count, v) => {
            let n: usize = redis::cmd("LREM")
                .arg(key)
                .arg(count)
                .arg(v)
                .query(c)
                .unwrap();
            let mut hits: Vec<usize> = (0..m.len()).filter(|&i| m[i] == *v).collect();
            if *count < 0 {
                hits.reverse();
            }
            if *count != 0 {
                hits.truncate(count.unsigned_abs() as usize);
            }
            hits.sort_unstable();
            for &i in hits.iter().rev() {
                m.remove(i);
            }
            assert_eq!(n, hits.len());
        }
        Cmd::Trim(s, e) => {
            let _: String = redis::cmd("LTRIM").arg(key).arg(s).arg(e).query(c).unwrap();
            let len = m.len() as i64;
            let s = if *s < 0 { (s + len).max(0) } else { *s };
            let e = if *e < 0 { e + len } else { *e };
            if s > e || s >= len {
                m.clear();
            } else {
                let e = e.min(len - 1) as usize;
                m.truncate(e + 1);
                m.drain(..s as usize);
            }
        }
        Cmd::Move(from_left, to_left) => {
            let side = |l: bool| if l { "LEFT" } else { "RIGHT" };
            let got: Option<String> = redis::cmd("LMOVE")
                .arg(key)
                .arg("{p}o")
                .arg(side(*from_left))
                .arg(side(*to_left))
                .query(c)
                .unwrap();
            let want = if m.is_empty() {
                None
            } else if *from_left {
                Some(m.remove(0))
            } else {
                m.pop()
            };
            if let Some(v) = &want {
                if *to_left {
                    other.insert(0, v.clone());
                } else {
                    other.push(v.clone());
                }
            }
            assert_eq!(got, want);
        }
    }
}

#[test]
fn command_streams_match_a_model() {
    let s = Server::start(&[]);
    let conn = std::cell::RefCell::new(s.conn());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(command(), 1..30), |cmds| {
            let c = &mut *conn.borrow_mut();
            let _: i64 = redis::cmd("DEL").arg("{p}l").arg("{p}o").query(c).unwrap();
            let (mut m, mut other) = (Vec::new(), Vec::new());
            for cmd in &cmds {
                step(c, &mut m, &mut other, cmd);
                let got: Vec<String> = lrange(c, "{p}l");
                prop_assert_eq!(&got, &m, "after {:?}", cmd);
                prop_assert_eq!(exists(c, "{p}l"), !m.is_empty());
            }
            prop_assert_eq!(lrange(c, "{p}o"), other);
            Ok(())
        })
        .unwrap();
}
