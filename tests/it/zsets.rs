//! Sorted sets through a real client: ZADD's options and errors, member commands, ranges by
//! rank, score and lex (and their STORE/REMRANGE forms), pops, ZRANDMEMBER, ZSCAN, the set
//! algebra, RESP3 reply shapes, the listpack → skiplist encoding rules, and persistence
//! across a restart — each compared with Valkey's replies.
//!
//! Multi-key commands name keys with one hash tag: with `--threads 2` keys in different
//! slots may live on different cores.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::Cluster;
use common::{Server, err, run, wait_until};
use redis::Value;
use tallykv::cluster::key_slot;

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    run(c, &["OBJECT", "ENCODING", key]).unwrap()
}

fn strs(c: &mut redis::Connection, args: &[&str]) -> Vec<String> {
    run(c, args).unwrap()
}

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    run(c, args).unwrap()
}

/// `ZADD key 0 m0 1 m1 ...` in one command.
fn fill(c: &mut redis::Connection, key: &str, n: usize) {
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(key);
    for i in 0..n {
        cmd.arg(i).arg(format!("m{i}"));
    }
    assert_eq!(cmd.query::<usize>(c).unwrap(), n);
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn pair3(m: &str, s: f64) -> Value {
    Value::Array(vec![bulk(m), Value::Double(s)])
}

#[test]
fn zadd_options_replies_and_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["ZADD", "z", "1", "a", "2", "b", "3", "c"]), 3);
    assert_eq!(run::<String>(&mut c, &["TYPE", "z"]).unwrap(), "zset");
    // A member named twice counts once; the last score wins.
    assert_eq!(int(&mut c, &["ZADD", "z", "5", "d", "6", "d"]), 1);
    assert_eq!(run::<String>(&mut c, &["ZSCORE", "z", "d"]).unwrap(), "6");
    // NX only adds, XX only updates, CH counts changes too.
    assert_eq!(int(&mut c, &["ZADD", "z", "NX", "9", "a", "4", "e"]), 1);
    assert_eq!(run::<String>(&mut c, &["ZSCORE", "z", "a"]).unwrap(), "1");
    assert_eq!(
        int(&mut c, &["ZADD", "z", "XX", "CH", "7", "a", "1", "nope"]),
        1
    );
    assert_eq!(int(&mut c, &["EXISTS", "nope"]), 0);
    assert_eq!(int(&mut c, &["ZADD", "z", "CH", "7", "a", "2", "b"]), 0);
    // GT / LT update only upward / downward, and still add new members.
    assert_eq!(
        int(
            &mut c,
            &["ZADD", "z", "GT", "CH", "1", "a", "8", "b", "0", "f"]
        ),
        2
    );
    assert_eq!(
        strs(&mut c, &["ZMSCORE", "z", "a", "b", "f"]),
        ["7", "8", "0"]
    );
    assert_eq!(
        int(&mut c, &["ZADD", "z", "LT", "CH", "9", "a", "1", "b"]),
        1
    );
    assert_eq!(strs(&mut c, &["ZMSCORE", "z", "a", "b"]), ["7", "1"]);
    // INCR replies the new score, or nil when a condition stops it.
    assert_eq!(
        run::<String>(&mut c, &["ZADD", "z", "INCR", "2.5", "a"]).unwrap(),
        "9.5"
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZADD", "z", "NX", "INCR", "1", "a"]).unwrap(),
        None
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZADD", "z", "GT", "INCR", "-1", "a"]).unwrap(),
        None
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZADD", "fresh", "XX", "INCR", "1", "a"]).unwrap(),
        None
    );
    assert_eq!(int(&mut c, &["ZADD", "fresh", "XX", "1", "a"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "fresh"]), 0);
    assert_eq!(
        run::<String>(&mut c, &["ZINCRBY", "z", "-0.5", "a"]).unwrap(),
        "9"
    );
    assert_eq!(
        run::<String>(&mut c, &["ZINCRBY", "new", "3", "m"]).unwrap(),
        "3"
    );
    assert_eq!(
        int(&mut c, &["ZADD", "z", "inf", "top", "-inf", "bottom"]),
        2
    );
    assert_eq!(
        strs(&mut c, &["ZMSCORE", "z", "top", "bottom"]),
        ["inf", "-inf"]
    );

    for (args, want) in [
        (
            &["ZADD", "z", "XX", "NX", "1", "a"][..],
            "ERR XX and NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "GT", "LT", "1", "a"],
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "NX", "GT", "1", "a"],
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "INCR", "1", "a", "2", "b"],
            "ERR INCR option supports a single increment-element pair",
        ),
        (&["ZADD", "z", "NX", "1"], "ERR syntax error"),
        (&["ZADD", "z", "1", "a", "2"], "ERR syntax error"),
        (&["ZADD", "z", "x", "a"], "ERR value is not a valid float"),
        (&["ZADD", "z", "nan", "a"], "ERR value is not a valid float"),
        (
            &["ZADD", "z", "1", "a", "1 ", "b"],
            "ERR value is not a valid float",
        ),
        (
            &["ZADD", "z", "INCR", "-inf", "top"],
            "ERR resulting score is not a number (NaN)",
        ),
        (
            &["ZINCRBY", "z", "x", "a"],
            "ERR value is not a valid float",
        ),
        (&["ZINCRBY", "z", "NX", "a"], "ERR syntax error"),
        (
            &["ZADD", "z", "1"],
            "ERR wrong number of arguments for 'zadd' command",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
    // Nothing of a refused ZADD is applied.
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZSCORE", "z", "b"]).unwrap(),
        Some("1".into())
    );
    run::<()>(&mut c, &["SET", "str", "x"]).unwrap();
    assert_eq!(
        err(&mut c, &["ZADD", "str", "1", "a"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    // Scores are checked before the key's type.
    assert_eq!(
        err(&mut c, &["ZADD", "str", "x", "a"]),
        "ERR value is not a valid float"
    );
}

#[test]
fn member_commands() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(
        &mut c,
        &["ZADD", "z", "1", "a", "2", "b", "2", "c", "3.5", "d"],
    );
    assert_eq!(int(&mut c, &["ZCARD", "z"]), 4);
    assert_eq!(int(&mut c, &["ZCARD", "nokey"]), 0);
    assert_eq!(run::<String>(&mut c, &["ZSCORE", "z", "d"]).unwrap(), "3.5");
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZSCORE", "z", "x"]).unwrap(),
        None
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZSCORE", "nokey", "x"]).unwrap(),
        None
    );
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["ZMSCORE", "z", "a", "x", "c"]).unwrap(),
        [Some("1".into()), None, Some("2".into())]
    );
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["ZMSCORE", "nokey", "a"]).unwrap(),
        [None]
    );
    assert_eq!(int(&mut c, &["ZRANK", "z", "c"]), 2);
    assert_eq!(int(&mut c, &["ZREVRANK", "z", "c"]), 1);
    assert_eq!(
        run::<(i64, String)>(&mut c, &["ZRANK", "z", "d", "WITHSCORE"]).unwrap(),
        (3, "3.5".into())
    );
    assert_eq!(
        run::<(i64, String)>(&mut c, &["ZREVRANK", "z", "d", "withscore"]).unwrap(),
        (0, "3.5".into())
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZRANK", "z", "x"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZRANK", "z", "x", "WITHSCORE"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZRANK", "nokey", "x", "WITHSCORE"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        err(&mut c, &["ZRANK", "z", "a", "WITHSCORES"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["ZRANK", "z", "a", "WITHSCORE", "x"]),
        "ERR wrong number of arguments for 'zrank' command"
    );
    assert_eq!(
        err(&mut c, &["ZREVRANK", "z", "a", "WITHSCORE", "x"]),
        "ERR wrong number of arguments for 'zrevrank' command"
    );

    // ZREM: a member named twice goes once; the key goes with its last member.
    assert_eq!(int(&mut c, &["ZREM", "z", "a", "a", "x"]), 1);
    assert_eq!(int(&mut c, &["ZREM", "z", "x"]), 0);
    assert_eq!(int(&mut c, &["ZREM", "nokey", "x"]), 0);
    assert_eq!(int(&mut c, &["ZREM", "z", "b", "c", "d"]), 3);
    assert_eq!(int(&mut c, &["EXISTS", "z"]), 0);
    assert_eq!(run::<String>(&mut c, &["TYPE", "z"]).unwrap(), "none");

    run::<()>(&mut c, &["SET", "str", "x"]).unwrap();
    for args in [
        &["ZCARD", "str"][..],
        &["ZSCORE", "str", "a"],
        &["ZMSCORE", "str", "a"],
        &["ZRANK", "str", "a"],
        &["ZREM", "str", "a"],
        &["ZINCRBY", "str", "1", "a"],
        &["ZRANGE", "str", "0", "1"],
        &["ZCOUNT", "str", "0", "1"],
        &["ZLEXCOUNT", "str", "-", "+"],
        &["ZPOPMIN", "str"],
        &["ZRANDMEMBER", "str"],
        &["ZSCAN", "str", "0"],
        &["ZREMRANGEBYRANK", "str", "0", "1"],
        &["ZRANGESTORE", "{str}d", "str", "0", "1"],
    ] {
        assert_eq!(
            err(&mut c, args),
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "{args:?}"
        );
    }
}

#[test]
fn ranges_by_rank_score_and_lex() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(
        &mut c,
        &[
            "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e", "6", "f",
        ],
    );
    assert_eq!(strs(&mut c, &["ZRANGE", "z", "0", "2"]), ["a", "b", "c"]);
    assert_eq!(strs(&mut c, &["ZRANGE", "z", "-2", "-1"]), ["e", "f"]);
    assert_eq!(strs(&mut c, &["ZRANGE", "z", "-100", "1"]), ["a", "b"]);
    assert!(strs(&mut c, &["ZRANGE", "z", "4", "2"]).is_empty());
    assert!(strs(&mut c, &["ZRANGE", "z", "6", "10"]).is_empty());
    assert!(strs(&mut c, &["ZRANGE", "nokey", "0", "-1"]).is_empty());
    assert_eq!(
        strs(&mut c, &["ZRANGE", "z", "0", "1", "WITHSCORES"]),
        ["a", "1", "b", "2"]
    );
    assert_eq!(strs(&mut c, &["ZRANGE", "z", "0", "1", "REV"]), ["f", "e"]);
    assert_eq!(strs(&mut c, &["ZREVRANGE", "z", "-2", "-1"]), ["b", "a"]);
    // LIMIT 0 -1 reads as "no LIMIT" (Valkey's sentinel), even for ranks.
    assert_eq!(
        strs(&mut c, &["ZRANGE", "z", "0", "0", "LIMIT", "0", "-1"]),
        ["a"]
    );

    // By score: exclusive bounds, infinities, LIMIT, REV (bounds given max first).
    assert_eq!(
        strs(&mut c, &["ZRANGE", "z", "(1", "3", "BYSCORE"]),
        ["b", "c"]
    );
    assert_eq!(
        strs(&mut c, &["ZRANGEBYSCORE", "z", "-inf", "(3", "WITHSCORES"]),
        ["a", "1", "b", "2"]
    );
    assert_eq!(
        strs(
            &mut c,
            &["ZRANGEBYSCORE", "z", "2", "+inf", "LIMIT", "1", "2"]
        ),
        ["c", "d"]
    );
    assert_eq!(
        strs(
            &mut c,
            &[
                "ZRANGE", "z", "5", "(2", "BYSCORE", "REV", "LIMIT", "1", "-1"
            ]
        ),
        ["d", "c"]
    );
    assert_eq!(
        strs(
            &mut c,
            &["ZREVRANGEBYSCORE", "z", "+inf", "-inf", "LIMIT", "0", "2"]
        ),
        ["f", "e"]
    );
    assert!(strs(&mut c, &["ZRANGEBYSCORE", "z", "3", "2"]).is_empty());
    assert!(strs(&mut c, &["ZRANGEBYSCORE", "z", "(2", "(2"]).is_empty());
    assert!(
        strs(
            &mut c,
            &["ZRANGEBYSCORE", "z", "1", "6", "LIMIT", "-1", "2"]
        )
        .is_empty()
    );
    assert!(strs(&mut c, &["ZRANGEBYSCORE", "z", "1", "6", "LIMIT", "9", "2"]).is_empty());
    // Bounds are read as C strtod reads them.
    assert_eq!(int(&mut c, &["ZCOUNT", "z", " 2", "0x3"]), 2);
    assert_eq!(int(&mut c, &["ZCOUNT", "z", "-inf", "+inf"]), 6);
    assert_eq!(int(&mut c, &["ZCOUNT", "z", "(1", "(6"]), 4);
    assert_eq!(int(&mut c, &["ZCOUNT", "nokey", "0", "1"]), 0);

    // By lex (all scores equal).
    int(
        &mut c,
        &[
            "ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e",
        ],
    );
    assert_eq!(strs(&mut c, &["ZRANGEBYLEX", "l", "-", "(c"]), ["a", "b"]);
    assert_eq!(
        strs(
            &mut c,
            &["ZRANGE", "l", "[b", "[d", "BYLEX", "LIMIT", "1", "5"]
        ),
        ["c", "d"]
    );
    assert_eq!(
        strs(&mut c, &["ZREVRANGEBYLEX", "l", "+", "(c"]),
        ["e", "d"]
    );
    assert_eq!(
        strs(&mut c, &["ZRANGE", "l", "[d", "-", "BYLEX", "REV"]),
        ["d", "c", "b", "a"]
    );
    assert_eq!(int(&mut c, &["ZLEXCOUNT", "l", "[b", "+"]), 4);
    assert_eq!(int(&mut c, &["ZLEXCOUNT", "l", "+", "-"]), 0);
    assert_eq!(int(&mut c, &["ZLEXCOUNT", "nokey", "-", "+"]), 0);

    for (args, want) in [
        (
            &["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"][..],
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ),
        (
            &["ZRANGE", "l", "-", "+", "BYLEX", "WITHSCORES"],
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ),
        (
            &["ZRANGEBYLEX", "l", "-", "+", "WITHSCORES"],
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ),
        (
            &["ZRANGE", "z", "a", "1"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["ZRANGE", "z", "a", "1", "BYSCORE"],
            "ERR min or max is not a float",
        ),
        (
            &["ZRANGE", "z", "1", "nan", "BYSCORE"],
            "ERR min or max is not a float",
        ),
        (
            &["ZRANGE", "z", "1 ", "2", "BYSCORE"],
            "ERR min or max is not a float",
        ),
        (
            &["ZRANGE", "z", "a", "b", "BYLEX"],
            "ERR min or max not valid string range item",
        ),
        (
            &["ZRANGE", "z", "0", "1", "BYSCORE", "BYLEX"],
            "ERR syntax error",
        ),
        (&["ZRANGE", "z", "0", "1", "REV", "REV"], "ERR syntax error"),
        (&["ZRANGE", "z", "0", "1", "LIMIT", "0"], "ERR syntax error"),
        (
            &["ZRANGE", "z", "0", "1", "BYSCORE", "LIMIT", "x", "1"],
            "ERR value is not an integer or out of range",
        ),
        (&["ZRANGEBYSCORE", "z", "0", "1", "REV"], "ERR syntax error"),
        (&["ZREVRANGE", "z", "0", "1", "BYSCORE"], "ERR syntax error"),
        (
            &["ZRANGESTORE", "{z}d", "z", "0", "1", "WITHSCORES"],
            "ERR syntax error",
        ),
        (&["ZCOUNT", "z", "x", "1"], "ERR min or max is not a float"),
        (
            &["ZLEXCOUNT", "z", "a", "+"],
            "ERR min or max not valid string range item",
        ),
        (
            &["ZLEXCOUNT", "z", "+a", "+"],
            "ERR min or max not valid string range item",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }

    // ZRANGESTORE replaces the destination (any type), or deletes it for an empty range.
    run::<()>(&mut c, &["SET", "{z}d", "x"]).unwrap();
    assert_eq!(int(&mut c, &["ZRANGESTORE", "{z}d", "z", "1", "3"]), 3);
    assert_eq!(
        strs(&mut c, &["ZRANGE", "{z}d", "0", "-1", "WITHSCORES"]),
        ["b", "2", "c", "3", "d", "4"]
    );
    assert_eq!(
        int(
            &mut c,
            &[
                "ZRANGESTORE",
                "{z}d",
                "z",
                "+inf",
                "(4",
                "BYSCORE",
                "REV",
                "LIMIT",
                "0",
                "1"
            ]
        ),
        1
    );
    assert_eq!(strs(&mut c, &["ZRANGE", "{z}d", "0", "-1"]), ["f"]);
    assert_eq!(
        int(&mut c, &["ZRANGESTORE", "{z}d", "{z}none", "0", "-1"]),
        0
    );
    assert_eq!(int(&mut c, &["EXISTS", "{z}d"]), 0);
    run::<()>(&mut c, &["SET", "{z}d", "x"]).unwrap();
    assert_eq!(int(&mut c, &["ZRANGESTORE", "{z}d", "z", "5", "1"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "{z}d"]), 0);
}

#[test]
fn range_removals() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(
        &mut c,
        &[
            "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
        ],
    );
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "z", "0", "0"]), 1);
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "z", "5", "1"]), 0);
    assert_eq!(int(&mut c, &["ZREMRANGEBYSCORE", "z", "(3", "+inf"]), 2);
    assert_eq!(strs(&mut c, &["ZRANGE", "z", "0", "-1"]), ["b", "c"]);
    assert_eq!(int(&mut c, &["ZREMRANGEBYSCORE", "z", "9", "10"]), 0);
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "nokey", "0", "-1"]), 0);
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "z", "-100", "100"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "z"]), 0);
    int(
        &mut c,
        &["ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d"],
    );
    assert_eq!(int(&mut c, &["ZREMRANGEBYLEX", "l", "(a", "[c"]), 2);
    assert_eq!(strs(&mut c, &["ZRANGE", "l", "0", "-1"]), ["a", "d"]);
    assert_eq!(int(&mut c, &["ZREMRANGEBYLEX", "l", "-", "+"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "l"]), 0);
    assert_eq!(
        err(&mut c, &["ZREMRANGEBYRANK", "z", "a", "1"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["ZREMRANGEBYSCORE", "z", "a", "1"]),
        "ERR min or max is not a float"
    );
    assert_eq!(
        err(&mut c, &["ZREMRANGEBYLEX", "z", "a", "1"]),
        "ERR min or max not valid string range item"
    );
}

#[test]
fn pops_and_zmpop() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(
        &mut c,
        &["ZADD", "{t}z", "1", "a", "2", "b", "3", "c", "4", "d"],
    );
    assert_eq!(strs(&mut c, &["ZPOPMIN", "{t}z"]), ["a", "1"]);
    assert_eq!(
        strs(&mut c, &["ZPOPMAX", "{t}z", "2"]),
        ["d", "4", "c", "3"]
    );
    assert!(strs(&mut c, &["ZPOPMIN", "{t}z", "0"]).is_empty());
    assert_eq!(strs(&mut c, &["ZPOPMIN", "{t}z", "10"]), ["b", "2"]);
    assert_eq!(int(&mut c, &["EXISTS", "{t}z"]), 0);
    assert!(strs(&mut c, &["ZPOPMIN", "{t}z"]).is_empty());
    assert!(strs(&mut c, &["ZPOPMAX", "{t}z", "3"]).is_empty());
    // A huge count pops what there is without allocating for the count.
    int(&mut c, &["ZADD", "{t}z", "1", "a"]);
    assert_eq!(
        strs(&mut c, &["ZPOPMIN", "{t}z", "9223372036854775807"]),
        ["a", "1"]
    );
    for (args, want) in [
        (
            &["ZPOPMIN", "{t}z", "-1"][..],
            "ERR value is out of range, must be positive",
        ),
        (
            &["ZPOPMIN", "{t}z", "x"],
            "ERR value is out of range, must be positive",
        ),
        (&["ZPOPMIN", "{t}z", "1", "2"], "ERR syntax error"),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }

    // ZMPOP pops from the first non-empty key.
    int(&mut c, &["ZADD", "{t}b", "1", "x", "2", "y", "3", "z"]);
    let v: Value = run(&mut c, &["ZMPOP", "2", "{t}a", "{t}b", "MAX", "COUNT", "2"]).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            bulk("{t}b"),
            Value::Array(vec![
                Value::Array(vec![bulk("z"), bulk("3")]),
                Value::Array(vec![bulk("y"), bulk("2")]),
            ]),
        ])
    );
    let v: Value = run(&mut c, &["ZMPOP", "1", "{t}b", "min"]).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            bulk("{t}b"),
            Value::Array(vec![Value::Array(vec![bulk("x"), bulk("1")])]),
        ])
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZMPOP", "2", "{t}a", "{t}b", "MIN"]).unwrap(),
        Value::Nil
    );
    run::<()>(&mut c, &["SET", "{t}s", "x"]).unwrap();
    int(&mut c, &["ZADD", "{t}b", "1", "x"]);
    assert_eq!(
        err(&mut c, &["ZMPOP", "2", "{t}s", "{t}b", "MIN"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    for (args, want) in [
        (
            &["ZMPOP", "0", "{t}b", "MIN"][..],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["ZMPOP", "x", "{t}b", "MIN"],
            "ERR numkeys should be greater than 0",
        ),
        (&["ZMPOP", "3", "{t}b", "{t}x", "{t}y"], "ERR syntax error"),
        (&["ZMPOP", "1", "{t}b", "UP"], "ERR syntax error"),
        (
            &["ZMPOP", "1", "{t}b", "MIN", "COUNT", "0"],
            "ERR count should be greater than 0",
        ),
        (
            &["ZMPOP", "1", "{t}b", "MIN", "COUNT", "x"],
            "ERR count should be greater than 0",
        ),
        (
            &["ZMPOP", "1", "{t}b", "MIN", "COUNT", "1", "COUNT", "1"],
            "ERR syntax error",
        ),
        (&["ZMPOP", "1", "{t}b", "MIN", "COUNT"], "ERR syntax error"),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

#[test]
fn zrandmember() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["ZADD", "z", "1", "a", "2", "b", "3", "c"]);
    let all: HashSet<String> = ["a", "b", "c"].map(String::from).into();
    let one: String = run(&mut c, &["ZRANDMEMBER", "z"]).unwrap();
    assert!(all.contains(&one));
    assert_eq!(
        run::<Option<String>>(&mut c, &["ZRANDMEMBER", "nokey"]).unwrap(),
        None
    );
    assert!(strs(&mut c, &["ZRANDMEMBER", "nokey", "5"]).is_empty());
    assert!(strs(&mut c, &["ZRANDMEMBER", "z", "0"]).is_empty());
    // A count at least the size returns the whole set, highest first.
    assert_eq!(
        strs(&mut c, &["ZRANDMEMBER", "z", "9", "WITHSCORES"]),
        ["c", "3", "b", "2", "a", "1"]
    );
    let two = strs(&mut c, &["ZRANDMEMBER", "z", "2"]);
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1]);
    assert!(two.iter().all(|m| all.contains(m)));
    // Negative: that many picks, repeats allowed.
    let picks = strs(&mut c, &["ZRANDMEMBER", "z", "-20", "WITHSCORES"]);
    assert_eq!(picks.len(), 40);
    for p in picks.chunks(2) {
        let score = match p[0].as_str() {
            "a" => "1",
            "b" => "2",
            _ => "3",
        };
        assert_eq!(p[1], score);
    }
    // Distinct picks from a large set.
    fill(&mut c, "big", 500);
    let picks = strs(&mut c, &["ZRANDMEMBER", "big", "100"]);
    assert_eq!(picks.iter().collect::<HashSet<_>>().len(), 100);
    let picks = strs(&mut c, &["ZRANDMEMBER", "big", "400"]);
    assert_eq!(picks.iter().collect::<HashSet<_>>().len(), 400);
    for (args, want) in [
        (
            &["ZRANDMEMBER", "z", "-9223372036854775808"][..],
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ),
        (
            &["ZRANDMEMBER", "z", "9223372036854775807", "WITHSCORES"],
            "ERR value is out of range",
        ),
        (&["ZRANDMEMBER", "z", "1", "WITHSCORE"], "ERR syntax error"),
        (
            &["ZRANDMEMBER", "z", "1", "WITHSCORES", "x"],
            "ERR syntax error",
        ),
        (
            &["ZRANDMEMBER", "z", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

#[test]
fn zscan_walks_every_member() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["ZADD", "small", "1.5", "a", "2", "b"]);
    let (cursor, page): (String, Vec<String>) = run(&mut c, &["ZSCAN", "small", "0"]).unwrap();
    assert_eq!(
        (cursor.as_str(), page),
        ("0", vec!["a".into(), "1.5".into(), "b".into(), "2".into()])
    );
    let (_, page): (String, Vec<String>) =
        run(&mut c, &["ZSCAN", "small", "0", "NOSCORES"]).unwrap();
    assert_eq!(page, ["a", "b"]);
    let (_, page): (String, Vec<String>) =
        run(&mut c, &["ZSCAN", "nokey", "0", "NOSCORES"]).unwrap();
    assert!(page.is_empty());

    fill(&mut c, "big", 1000);
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page): (String, Vec<String>) = run(
            &mut c,
            &["ZSCAN", "big", &cursor, "MATCH", "m1*", "COUNT", "50"],
        )
        .unwrap();
        for p in page.chunks(2) {
            assert_eq!(p[0], format!("m{}", p[1]));
            seen.insert(p[0].clone());
        }
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    let want: HashSet<String> = (0..1000)
        .map(|i| format!("m{i}"))
        .filter(|m| m.starts_with("m1"))
        .collect();
    assert_eq!(seen, want);
    run::<i64>(&mut c, &["HSET", "h", "f", "v"]).unwrap();
    for (args, want) in [
        (&["ZSCAN", "big", "x"][..], "ERR invalid cursor"),
        (
            &["ZSCAN", "big", "0", "NOVALUES"],
            "ERR NOVALUES option can only be used in HSCAN",
        ),
        (&["ZSCAN", "big", "0", "TYPE", "zset"], "ERR syntax error"),
        (&["ZSCAN", "big", "0", "COUNT", "0"], "ERR syntax error"),
        (
            &["HSCAN", "h", "0", "NOSCORES"],
            "ERR NOSCORES option can only be used in ZSCAN",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

#[test]
fn union_inter_diff_and_their_stores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["ZADD", "{t}1", "1", "a", "2", "b", "3", "c"]);
    int(&mut c, &["ZADD", "{t}2", "10", "b", "20", "c", "30", "d"]);
    assert_eq!(
        strs(&mut c, &["ZUNION", "2", "{t}1", "{t}2", "WITHSCORES"]),
        ["a", "1", "b", "12", "c", "23", "d", "30"]
    );
    assert_eq!(
        strs(
            &mut c,
            &[
                "ZUNION",
                "2",
                "{t}1",
                "{t}2",
                "WEIGHTS",
                "2",
                "0.5",
                "AGGREGATE",
                "MAX",
                "WITHSCORES"
            ]
        ),
        ["a", "2", "b", "5", "c", "10", "d", "15"]
    );
    assert_eq!(
        strs(
            &mut c,
            &[
                "ZINTER",
                "2",
                "{t}1",
                "{t}2",
                "AGGREGATE",
                "MIN",
                "WITHSCORES"
            ]
        ),
        ["b", "2", "c", "3"]
    );
    assert_eq!(strs(&mut c, &["ZINTER", "2", "{t}1", "{t}2"]), ["b", "c"]);
    assert!(strs(&mut c, &["ZINTER", "2", "{t}1", "{t}none"]).is_empty());
    assert_eq!(
        strs(&mut c, &["ZDIFF", "2", "{t}1", "{t}2", "WITHSCORES"]),
        ["a", "1"]
    );
    assert_eq!(
        strs(&mut c, &["ZDIFF", "2", "{t}1", "{t}none"]),
        ["a", "b", "c"]
    );
    assert_eq!(int(&mut c, &["ZINTERCARD", "2", "{t}1", "{t}2"]), 2);
    assert_eq!(
        int(&mut c, &["ZINTERCARD", "2", "{t}1", "{t}2", "LIMIT", "1"]),
        1
    );
    assert_eq!(
        int(&mut c, &["ZINTERCARD", "2", "{t}1", "{t}2", "LIMIT", "0"]),
        2
    );

    // +inf and -inf add up to 0, not NaN; 0 × inf weighs 0.
    int(&mut c, &["ZADD", "{t}p", "inf", "x"]);
    int(&mut c, &["ZADD", "{t}n", "-inf", "x"]);
    assert_eq!(
        strs(&mut c, &["ZUNION", "2", "{t}p", "{t}n", "WITHSCORES"]),
        ["x", "0"]
    );
    assert_eq!(
        strs(
            &mut c,
            &["ZUNION", "1", "{t}p", "WEIGHTS", "0", "WITHSCORES"]
        ),
        ["x", "0"]
    );

    // STORE forms replace the destination, or delete it for an empty result.
    run::<()>(&mut c, &["SET", "{t}d", "x"]).unwrap();
    assert_eq!(
        int(
            &mut c,
            &[
                "ZUNIONSTORE",
                "{t}d",
                "2",
                "{t}1",
                "{t}2",
                "WEIGHTS",
                "1",
                "2"
            ]
        ),
        4
    );
    assert_eq!(
        strs(&mut c, &["ZRANGE", "{t}d", "0", "-1", "WITHSCORES"]),
        ["a", "1", "b", "22", "c", "43", "d", "60"]
    );
    assert_eq!(
        int(&mut c, &["ZINTERSTORE", "{t}d", "2", "{t}1", "{t}2"]),
        2
    );
    assert_eq!(int(&mut c, &["ZDIFFSTORE", "{t}d", "2", "{t}2", "{t}1"]), 1);
    assert_eq!(strs(&mut c, &["ZRANGE", "{t}d", "0", "-1"]), ["d"]);
    // The destination may be one of the inputs.
    assert_eq!(
        int(&mut c, &["ZUNIONSTORE", "{t}d", "2", "{t}d", "{t}1"]),
        4
    );
    assert_eq!(int(&mut c, &["ZDIFFSTORE", "{t}d", "2", "{t}1", "{t}1"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "{t}d"]), 0);

    run::<()>(&mut c, &["SET", "{t}str", "x"]).unwrap();
    for (args, want) in [
        (
            &["ZUNION", "0", "{t}1"][..],
            "ERR at least 1 input key is needed for 'zunion' command",
        ),
        (
            &["ZUNIONSTORE", "{t}d", "0", "{t}1"],
            "ERR at least 1 input key is needed for 'zunionstore' command",
        ),
        (
            &["ZINTERCARD", "0", "{t}1"],
            "ERR at least 1 input key is needed for 'zintercard' command",
        ),
        (
            &["ZUNION", "x", "{t}1"],
            "ERR value is not an integer or out of range",
        ),
        (&["ZUNION", "3", "{t}1", "{t}2"], "ERR syntax error"),
        (
            &["ZUNION", "2", "{t}1", "{t}2", "WEIGHTS", "1"],
            "ERR syntax error",
        ),
        (
            &["ZUNION", "2", "{t}1", "{t}2", "WEIGHTS", "1", "x"],
            "ERR weight value is not a float",
        ),
        (
            &["ZUNION", "2", "{t}1", "{t}2", "AGGREGATE", "AVG"],
            "ERR syntax error",
        ),
        (
            &["ZUNIONSTORE", "{t}d", "1", "{t}1", "WITHSCORES"],
            "ERR syntax error",
        ),
        (&["ZDIFF", "1", "{t}1", "WEIGHTS", "1"], "ERR syntax error"),
        (
            &["ZINTERCARD", "1", "{t}1", "LIMIT", "-1"],
            "ERR LIMIT can't be negative",
        ),
        (
            &["ZINTERCARD", "1", "{t}1", "WITHSCORES"],
            "ERR syntax error",
        ),
        (
            &["ZUNION", "2", "{t}1", "{t}str", "WEIGHTS", "x"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

/// Plain sets are inputs scoring 1 each.
#[test]
fn plain_sets_are_inputs() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        run::<i64>(&mut c, &["SADD", "{t}s", "a", "b", "x"]).unwrap(),
        3
    );
    int(&mut c, &["ZADD", "{t}z", "1", "a", "2", "b", "3", "c"]);
    assert_eq!(
        strs(&mut c, &["ZUNION", "2", "{t}z", "{t}s", "WITHSCORES"]),
        // Equal scores order by member (redis-server 7.0 answers the same).
        ["x", "1", "a", "2", "b", "3", "c", "3"]
    );
    assert_eq!(
        strs(&mut c, &["ZINTER", "2", "{t}z", "{t}s", "WITHSCORES"]),
        ["a", "2", "b", "3"]
    );
    assert_eq!(
        strs(&mut c, &["ZDIFF", "2", "{t}s", "{t}z", "WITHSCORES"]),
        ["x", "1"]
    );
    assert_eq!(int(&mut c, &["ZINTERCARD", "2", "{t}s", "{t}z"]), 2);
}

#[test]
fn resp3_reply_shapes() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    run::<i64>(&mut c, &["ZADD", "{t}z", "1", "a", "2.5", "b"]).unwrap();
    let pairs = Value::Array(vec![pair3("a", 1.0), pair3("b", 2.5)]);
    assert_eq!(
        run::<Value>(&mut c, &["ZRANGE", "{t}z", "0", "-1", "WITHSCORES"]).unwrap(),
        pairs
    );
    assert_eq!(
        run::<Value>(
            &mut c,
            &["ZRANGEBYSCORE", "{t}z", "-inf", "+inf", "WITHSCORES"]
        )
        .unwrap(),
        pairs
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZUNION", "1", "{t}z", "WITHSCORES"]).unwrap(),
        pairs
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZRANDMEMBER", "{t}z", "5", "WITHSCORES"]).unwrap(),
        Value::Array(vec![pair3("b", 2.5), pair3("a", 1.0)])
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZRANGE", "{t}z", "0", "-1"]).unwrap(),
        Value::Array(vec![bulk("a"), bulk("b")])
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZSCORE", "{t}z", "b"]).unwrap(),
        Value::Double(2.5)
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZINCRBY", "{t}z", "1", "b"]).unwrap(),
        Value::Double(3.5)
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZMSCORE", "{t}z", "a", "x"]).unwrap(),
        Value::Array(vec![Value::Double(1.0), Value::Nil])
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZRANK", "{t}z", "b", "WITHSCORE"]).unwrap(),
        Value::Array(vec![Value::Int(1), Value::Double(3.5)])
    );
    // ZSCAN's scores are bulk strings in RESP3 too.
    assert_eq!(
        run::<Value>(&mut c, &["ZSCAN", "{t}z", "0"]).unwrap(),
        Value::Array(vec![
            bulk("0"),
            Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("3.5")])
        ])
    );
    // ZPOPMIN without a count is flat; with one, nested.
    assert_eq!(
        run::<Value>(&mut c, &["ZPOPMIN", "{t}z"]).unwrap(),
        Value::Array(vec![bulk("a"), Value::Double(1.0)])
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZPOPMAX", "{t}z", "1"]).unwrap(),
        Value::Array(vec![pair3("b", 3.5)])
    );
    run::<i64>(&mut c, &["ZADD", "{t}z", "1", "a"]).unwrap();
    assert_eq!(
        run::<Value>(&mut c, &["ZMPOP", "1", "{t}z", "MIN"]).unwrap(),
        Value::Array(vec![bulk("{t}z"), Value::Array(vec![pair3("a", 1.0)])])
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZMPOP", "1", "{t}z", "MIN"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["ZSCORE", "{t}z", "a"]).unwrap(),
        Value::Nil
    );
}

#[test]
fn encodings_convert_past_the_limits_and_never_back() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    fill(&mut c, "z", 128);
    assert_eq!(encoding(&mut c, "z"), "listpack");
    int(&mut c, &["ZADD", "z", "1", "m0"]);
    assert_eq!(encoding(&mut c, "z"), "listpack");
    int(&mut c, &["ZADD", "z", "1", "new"]);
    assert_eq!(encoding(&mut c, "z"), "skiplist");
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "z", "1", "-1"]), 128);
    assert_eq!(encoding(&mut c, "z"), "skiplist");

    let long = "x".repeat(65);
    int(&mut c, &["ZADD", "long", "1", &long]);
    assert_eq!(encoding(&mut c, "long"), "skiplist");
    int(&mut c, &["ZADD", "ok", "1", &"x".repeat(64)]);
    assert_eq!(encoding(&mut c, "ok"), "listpack");

    // A ZADD naming more pairs than a listpack holds converts up front, even if they repeat.
    let mut cmd = redis::cmd("ZADD");
    cmd.arg("dup");
    for _ in 0..129 {
        cmd.arg(1).arg("same");
    }
    assert_eq!(cmd.query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(encoding(&mut c, "dup"), "skiplist");

    // STORE results take the encoding that fits.
    fill(&mut c, "{t}big", 200);
    assert_eq!(
        int(&mut c, &["ZRANGESTORE", "{t}d", "{t}big", "0", "127"]),
        128
    );
    assert_eq!(encoding(&mut c, "{t}d"), "listpack");
    assert_eq!(
        int(&mut c, &["ZRANGESTORE", "{t}d", "{t}big", "0", "128"]),
        129
    );
    assert_eq!(encoding(&mut c, "{t}d"), "skiplist");
    assert_eq!(
        int(&mut c, &["ZINTERSTORE", "{t}u", "2", "{t}big", "{t}d"]),
        129
    );
    assert_eq!(encoding(&mut c, "{t}u"), "skiplist");
    assert_eq!(int(&mut c, &["ZUNIONSTORE", "{t}u", "1", "{t}small"]), 0);
    int(&mut c, &["ZADD", "{t}small", "1", "a"]);
    assert_eq!(
        int(
            &mut c,
            &["ZUNIONSTORE", "{t}u", "2", "{t}small", "{t}small"]
        ),
        1
    );
    assert_eq!(encoding(&mut c, "{t}u"), "listpack");

    // -0 keeps its sign in a skiplist only, as in Valkey (a listpack stores it as 0).
    int(&mut c, &["ZADD", "z", "-0", "neg"]);
    assert_eq!(
        run::<String>(&mut c, &["ZSCORE", "z", "neg"]).unwrap(),
        "-0"
    );
    int(&mut c, &["ZADD", "lp", "-0", "neg"]);
    assert_eq!(
        run::<String>(&mut c, &["ZSCORE", "lp", "neg"]).unwrap(),
        "0"
    );

    // TYPE and SCAN ... TYPE zset.
    run::<()>(&mut c, &["SET", "str", "x"]).unwrap();
    let mut keys = HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page): (String, Vec<String>) =
            run(&mut c, &["SCAN", &cursor, "TYPE", "zset"]).unwrap();
        keys.extend(page);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    let want: HashSet<String> = [
        "z", "long", "ok", "dup", "{t}big", "{t}d", "{t}u", "{t}small", "lp",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys, want);
}

#[test]
fn large_sets_rank_and_range_exactly() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Several thousand members: the skiplist's order spans many chunks.
    let n = 5000usize;
    let mut cmd = redis::cmd("ZADD");
    cmd.arg("z");
    for i in 0..n {
        // Scores collide in pairs, so ties order by member.
        cmd.arg((i / 2) as f64 * 0.5).arg(format!("k{i:05}"));
    }
    assert_eq!(cmd.query::<usize>(&mut c).unwrap(), n);
    for i in [0, 1, 255, 256, 2500, 4999] {
        assert_eq!(int(&mut c, &["ZRANK", "z", &format!("k{i:05}")]), i as i64);
        assert_eq!(
            int(&mut c, &["ZREVRANK", "z", &format!("k{i:05}")]),
            (n - 1 - i) as i64
        );
    }
    assert_eq!(
        strs(&mut c, &["ZRANGE", "z", "2998", "3001"]),
        ["k02998", "k02999", "k03000", "k03001"]
    );
    assert_eq!(
        strs(&mut c, &["ZRANGE", "z", "0", "1", "REV", "WITHSCORES"]),
        ["k04999", "1249.5", "k04998", "1249.5"]
    );
    assert_eq!(int(&mut c, &["ZCOUNT", "z", "(100", "200"]), 400);
    assert_eq!(
        strs(
            &mut c,
            &["ZRANGEBYSCORE", "z", "(100", "200", "LIMIT", "398", "5"]
        ),
        ["k00800", "k00801"]
    );
    // Remove a middle slice, then check ranks on both sides of it.
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "z", "1000", "3999"]), 3000);
    assert_eq!(int(&mut c, &["ZCARD", "z"]), 2000);
    assert_eq!(int(&mut c, &["ZRANK", "z", "k04000"]), 1000);
    assert_eq!(
        run::<Option<i64>>(&mut c, &["ZRANK", "z", "k02000"]).unwrap(),
        None
    );
    assert_eq!(strs(&mut c, &["ZPOPMAX", "z"]), ["k04999", "1249.5"]);
    // An update moves a member across the whole order.
    int(&mut c, &["ZADD", "z", "-1", "k04998"]);
    assert_eq!(int(&mut c, &["ZRANK", "z", "k04998"]), 0);
    assert_eq!(int(&mut c, &["ZRANK", "z", "k00000"]), 1);
}

#[test]
fn sorted_sets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
    let mut c = s.conn();
    int(
        &mut c,
        &["ZADD", "small", "1.5", "a", "-inf", "b", "0", "\u{0}bin"],
    );
    fill(&mut c, "big", 300);
    int(&mut c, &["ZADD", "big", "-0", "neg"]);
    int(&mut c, &["ZREMRANGEBYRANK", "big", "10", "19"]);
    strs(&mut c, &["ZPOPMAX", "big", "5"]);
    int(&mut c, &["ZADD", "gone", "1", "a"]);
    int(&mut c, &["ZREM", "gone", "a"]);
    run::<()>(&mut c, &["SET", "{t}x", "1"]).unwrap();
    int(&mut c, &["ZADD", "{t}src", "1", "a", "2", "b"]);
    int(
        &mut c,
        &["ZUNIONSTORE", "{t}u", "1", "{t}src", "WEIGHTS", "3"],
    );
    int(&mut c, &["PEXPIRE", "small", "600000"]);
    let before_big = strs(&mut c, &["ZRANGE", "big", "0", "-1", "WITHSCORES"]);
    assert_eq!(before_big.len(), 2 * 286);

    s.restart();
    let mut c = s.conn();
    assert!(
        wait_until(Duration::from_secs(30), || {
            run::<String>(&mut c, &["INFO", "persistence"])
                .is_ok_and(|i| i.lines().any(|l| l == "loading:0"))
        }),
        "still loading"
    );
    assert_eq!(
        strs(&mut c, &["ZRANGE", "small", "0", "-1", "WITHSCORES"]),
        ["b", "-inf", "\u{0}bin", "0", "a", "1.5"]
    );
    assert!(int(&mut c, &["PTTL", "small"]) > 0);
    assert_eq!(
        strs(&mut c, &["ZRANGE", "big", "0", "-1", "WITHSCORES"]),
        before_big
    );
    assert_eq!(encoding(&mut c, "big"), "skiplist");
    assert_eq!(encoding(&mut c, "small"), "listpack");
    assert_eq!(
        run::<String>(&mut c, &["ZSCORE", "big", "neg"]).unwrap(),
        "-0"
    );
    assert_eq!(int(&mut c, &["EXISTS", "gone"]), 0);
    assert_eq!(
        strs(&mut c, &["ZRANGE", "{t}u", "0", "-1", "WITHSCORES"]),
        ["a", "3", "b", "6"]
    );
}

/// In a cluster the leader evaluates each write once and replicates its records (ZAdd with
/// absolute scores, ZRem, ZRemRange, Restore for STOREs): a follower applying them holds the
/// same sets.
#[test]
fn records_replicate_to_followers() {
    let cluster = Cluster::start(3, &[]);
    let slot = key_slot(b"{r}") as usize;
    let leader = cluster.leader_of_slot(slot);
    let follower = (leader + 1) % 3;
    let mut c = cluster.conn(leader);
    let writes: &[&[&str]] = &[
        &["ZADD", "{r}a", "1", "x", "2", "y", "3", "z", "4", "w"],
        &["ZINCRBY", "{r}a", "0.5", "x"],
        &["ZADD", "{r}a", "GT", "CH", "1", "y", "9", "z"],
        &["ZREM", "{r}a", "w", "nope"],
        &["ZADD", "{r}b", "5", "p", "6", "q", "7", "r", "8", "s"],
        &["ZPOPMIN", "{r}b"],
        &["ZPOPMAX", "{r}b", "1"],
        &["ZMPOP", "2", "{r}none", "{r}b", "MIN"],
        &[
            "ZUNIONSTORE",
            "{r}u",
            "2",
            "{r}a",
            "{r}b",
            "WEIGHTS",
            "2",
            "1",
        ],
        &["ZREMRANGEBYSCORE", "{r}u", "(4", "5"],
        &["ZRANGESTORE", "{r}s", "{r}u", "0", "0"],
    ];
    for w in writes {
        run::<Value>(&mut c, w).unwrap_or_else(|e| panic!("{w:?}: {e}"));
    }
    let read = |c: &mut redis::Connection, key: &str| -> Vec<String> {
        run(c, &["ZRANGE", key, "0", "-1", "WITHSCORES"]).unwrap()
    };
    let want: Vec<Vec<String>> = ["{r}a", "{r}b", "{r}u", "{r}s"]
        .iter()
        .map(|k| read(&mut c, k))
        .collect();
    assert_eq!(want[0], ["x", "1.5", "y", "2", "z", "9"].map(String::from));
    let mut fc = cluster.conn(follower);
    run::<()>(&mut fc, &["READONLY"]).unwrap();
    let same = wait_until(Duration::from_secs(30), || {
        ["{r}a", "{r}b", "{r}u", "{r}s"]
            .iter()
            .map(|k| read(&mut fc, k))
            .collect::<Vec<_>>()
            == want
    });
    assert!(same, "the follower's sorted sets differ from the leader's");
    // The keys a numkeys argument counts are routed too: across slots, CROSSSLOT.
    let e = err(&mut c, &["ZUNIONSTORE", "{r}d", "2", "{r}a", "{other}b"]);
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    let e = err(&mut c, &["ZMPOP", "2", "{r}a", "{other}b", "MIN"]);
    assert!(e.starts_with("CROSSSLOT"), "{e}");
}

#[test]
fn command_table_rows() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        strs(
            &mut c,
            &[
                "COMMAND",
                "GETKEYS",
                "ZUNIONSTORE",
                "d",
                "2",
                "a",
                "b",
                "WEIGHTS",
                "1",
                "2"
            ]
        ),
        ["d", "a", "b"]
    );
    assert_eq!(
        strs(
            &mut c,
            &["COMMAND", "GETKEYS", "ZMPOP", "2", "a", "b", "MIN"]
        ),
        ["a", "b"]
    );
    assert_eq!(
        strs(
            &mut c,
            &["COMMAND", "GETKEYS", "ZRANGESTORE", "d", "s", "0", "1"]
        ),
        ["d", "s"]
    );
    let info: Value = run(&mut c, &["COMMAND", "INFO", "zunion", "zadd"]).unwrap();
    let Value::Array(rows) = info else {
        panic!("{info:?}")
    };
    let flags = |row: &Value| -> (i64, Vec<String>, i64) {
        let Value::Array(f) = row else {
            panic!("{row:?}")
        };
        let names = match &f[2] {
            Value::Array(v) | Value::Set(v) => v
                .iter()
                .map(|x| match x {
                    Value::SimpleString(s) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        let Value::Int(arity) = f[1] else { panic!() };
        let Value::Int(first) = f[3] else { panic!() };
        (arity, names, first)
    };
    assert_eq!(
        flags(&rows[0]),
        (-3, vec!["readonly".into(), "movablekeys".into()], 0)
    );
    assert_eq!(
        flags(&rows[1]),
        (-4, vec!["write".into(), "denyoom".into(), "fast".into()], 1)
    );
}
