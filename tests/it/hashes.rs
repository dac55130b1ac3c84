//! Hashes through a real client: the HSET family, HINCRBY(FLOAT), HRANDFIELD, HSCAN, the
//! listpack → hashtable encoding rule, and WRONGTYPE, compared with Valkey's replies.

use crate::common;

use std::collections::{HashMap, HashSet};

use common::{Server, err, run};
use redis::Value;

fn bulk(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("utf-8"),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    run(c, &["OBJECT", "ENCODING", key]).unwrap()
}

/// `HSET key f0 v0 f1 v1 ...` with `n` fields.
fn fill(c: &mut redis::Connection, key: &str, n: usize) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for i in 0..n {
        cmd.arg(format!("f{i}")).arg(format!("v{i}"));
    }
    let added: usize = cmd.query(c).unwrap();
    assert_eq!(added, n);
}

#[test]
fn hset_family_basics() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // A field repeated in one call counts once, and its last value wins.
    assert_eq!(
        run::<i64>(&mut c, &["HSET", "h", "a", "1", "b", "2", "a", "3"]).unwrap(),
        2
    );
    assert_eq!(run::<String>(&mut c, &["HGET", "h", "a"]).unwrap(), "3");
    assert_eq!(
        run::<i64>(&mut c, &["HSET", "h", "a", "4", "c", "5"]).unwrap(),
        1
    );
    assert_eq!(run::<i64>(&mut c, &["HSET", "h", "a", "4"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["HSETNX", "h", "a", "x"]).unwrap(), 0);
    assert_eq!(run::<String>(&mut c, &["HGET", "h", "a"]).unwrap(), "4");
    assert_eq!(run::<i64>(&mut c, &["HSETNX", "h", "d", "6"]).unwrap(), 1);
    assert_eq!(
        run::<i64>(&mut c, &["HSETNX", "fresh", "f", "v"]).unwrap(),
        1
    );
    assert_eq!(run::<String>(&mut c, &["TYPE", "fresh"]).unwrap(), "hash");
    assert_eq!(
        run::<String>(&mut c, &["HMSET", "h", "e", "7", "b", "8"]).unwrap(),
        "OK"
    );
    assert_eq!(
        err(&mut c, &["HMSET", "h", "e", "7", "b"]),
        "ERR wrong number of arguments for 'hmset' command"
    );
    assert_eq!(
        err(&mut c, &["HMSET", "h", "e"]),
        "ERR wrong number of arguments for 'hmset' command"
    );
    assert_eq!(
        err(&mut c, &["HSET", "h", "a", "1", "b"]),
        "ERR wrong number of arguments for 'hset' command"
    );
    assert_eq!(
        err(&mut c, &["HSET", "h"]),
        "ERR wrong number of arguments for 'hset' command"
    );

    assert_eq!(run::<i64>(&mut c, &["HLEN", "h"]).unwrap(), 5);
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["HMGET", "h", "a", "nope", "e"]).unwrap(),
        vec![Some("4".into()), None, Some("7".into())]
    );
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["HMGET", "missing", "a", "b"]).unwrap(),
        vec![None, None]
    );
    assert_eq!(run::<i64>(&mut c, &["HEXISTS", "h", "a"]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["HEXISTS", "h", "zz"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["HEXISTS", "missing", "a"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["HSTRLEN", "h", "e"]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["HSTRLEN", "h", "zz"]).unwrap(), 0);
    assert_eq!(
        run::<i64>(&mut c, &["HSTRLEN", "missing", "zz"]).unwrap(),
        0
    );
    assert_eq!(run::<i64>(&mut c, &["HLEN", "missing"]).unwrap(), 0);
    assert_eq!(
        run::<Option<String>>(&mut c, &["HGET", "missing", "a"]).unwrap(),
        None
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["HGET", "h", "zz"]).unwrap(),
        None
    );

    // Listpack order is insertion order, as in Valkey.
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HKEYS", "h"]).unwrap(),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HVALS", "h"]).unwrap(),
        ["4", "8", "5", "6", "7"]
    );
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HGETALL", "h"]).unwrap(),
        ["a", "4", "b", "8", "c", "5", "d", "6", "e", "7"]
    );
    assert!(
        run::<Vec<String>>(&mut c, &["HGETALL", "missing"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(&mut c, &["HKEYS", "missing"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(&mut c, &["HVALS", "missing"])
            .unwrap()
            .is_empty()
    );

    // HDEL: a field named twice goes once; the key goes with its last field.
    assert_eq!(
        run::<i64>(&mut c, &["HDEL", "h", "a", "a", "nope"]).unwrap(),
        1
    );
    assert_eq!(run::<i64>(&mut c, &["HDEL", "h", "nope"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["HDEL", "missing", "a"]).unwrap(), 0);
    assert_eq!(
        run::<i64>(&mut c, &["HDEL", "h", "b", "c", "d", "e", "b"]).unwrap(),
        4
    );
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "h"]).unwrap(), 0);
    assert_eq!(run::<String>(&mut c, &["TYPE", "h"]).unwrap(), "none");
}

#[test]
fn hset_counts_new_fields_in_a_hashtable_too() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    fill(&mut c, "big", 300);
    assert_eq!(encoding(&mut c, "big"), "hashtable");
    let mut cmd = redis::cmd("HSET");
    cmd.arg("big");
    // 50 existing fields, 50 new ones, each named twice.
    for i in 250..350 {
        for _ in 0..2 {
            cmd.arg(format!("f{i}")).arg("x");
        }
    }
    assert_eq!(cmd.query::<i64>(&mut c).unwrap(), 50);
    assert_eq!(run::<i64>(&mut c, &["HLEN", "big"]).unwrap(), 350);
    let mut del = redis::cmd("HDEL");
    del.arg("big");
    for i in (0..400).chain(0..10) {
        del.arg(format!("f{i}"));
    }
    assert_eq!(del.query::<i64>(&mut c).unwrap(), 350);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "big"]).unwrap(), 0);
}

#[test]
fn hincrby_and_hincrbyfloat() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(run::<i64>(&mut c, &["HINCRBY", "h", "n", "5"]).unwrap(), 5);
    assert_eq!(
        run::<i64>(&mut c, &["HINCRBY", "h", "n", "-7"]).unwrap(),
        -2
    );
    assert_eq!(run::<String>(&mut c, &["HGET", "h", "n"]).unwrap(), "-2");
    assert_eq!(
        err(&mut c, &["HINCRBY", "h", "n", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["HINCRBY", "h", "n", "1.5"]),
        "ERR value is not an integer or out of range"
    );
    run::<i64>(
        &mut c,
        &["HSET", "h", "max", "9223372036854775807", "s", "abc"],
    )
    .unwrap();
    assert_eq!(
        err(&mut c, &["HINCRBY", "h", "max", "1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        run::<String>(&mut c, &["HGET", "h", "max"]).unwrap(),
        "9223372036854775807"
    );
    assert_eq!(
        err(&mut c, &["HINCRBY", "h", "s", "1"]),
        "ERR hash value is not an integer"
    );

    assert_eq!(
        run::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "10.5"]).unwrap(),
        "10.5"
    );
    assert_eq!(
        run::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "0.1"]).unwrap(),
        "10.6"
    );
    assert_eq!(
        run::<String>(&mut c, &["HINCRBYFLOAT", "h", "n", "1.5"]).unwrap(),
        "-0.5"
    );
    assert_eq!(
        run::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "-10.6"]).unwrap(),
        "0"
    );
    assert_eq!(
        err(&mut c, &["HINCRBYFLOAT", "h", "s", "1"]),
        "ERR hash value is not a float"
    );
    assert_eq!(
        err(&mut c, &["HINCRBYFLOAT", "h", "f", "x"]),
        "ERR value is not a valid float"
    );
    // The increment is checked before the key's type.
    run::<String>(&mut c, &["SET", "str", "1"]).unwrap();
    assert_eq!(
        err(&mut c, &["HINCRBYFLOAT", "str", "f", "x"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut c, &["HINCRBY", "str", "f", "x"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn hgetall_and_hrandfield_reply_shapes_in_resp3() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    run::<i64>(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).unwrap();
    let expected: HashMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    match run::<Value>(&mut c, &["HGETALL", "h"]).unwrap() {
        Value::Map(pairs) => {
            let got: HashMap<String, String> =
                pairs.iter().map(|(f, v)| (bulk(f), bulk(v))).collect();
            assert_eq!(got, expected);
            assert_eq!(pairs.len(), 3);
        }
        other => panic!("HGETALL in RESP3 must be a map, got {other:?}"),
    }
    assert_eq!(
        run::<Value>(&mut c, &["HGETALL", "missing"]).unwrap(),
        Value::Map(vec![])
    );

    // WITHVALUES in RESP3: an array of [field, value] pairs, for every count form.
    for count in ["2", "3", "10", "-5"] {
        let pairs = array(run(&mut c, &["HRANDFIELD", "h", count, "WITHVALUES"]).unwrap());
        let want = match count {
            "2" => 2,
            "-5" => 5,
            _ => 3,
        };
        assert_eq!(pairs.len(), want, "count {count}");
        for p in pairs {
            let p = array(p);
            assert_eq!(p.len(), 2);
            assert_eq!(expected[&bulk(&p[0])], bulk(&p[1]));
        }
    }
    // Without WITHVALUES: a flat array of fields.
    let fields = array(run(&mut c, &["HRANDFIELD", "h", "2"]).unwrap());
    assert!(fields.iter().all(|f| expected.contains_key(&bulk(f))));
    assert_eq!(
        run::<Value>(&mut c, &["HRANDFIELD", "missing"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["HRANDFIELD", "missing", "3", "WITHVALUES"]).unwrap(),
        Value::Array(vec![])
    );

    // RESP2 flattens the pairs.
    let mut c2 = s.conn();
    let flat: Vec<String> = run(&mut c2, &["HRANDFIELD", "h", "-4", "WITHVALUES"]).unwrap();
    assert_eq!(flat.len(), 8);
    for p in flat.chunks(2) {
        assert_eq!(expected[&p[0]], p[1]);
    }
}

/// Every count form on `key` (holding `n` fields named f0.. with values v0..).
fn check_hrandfield_forms(c: &mut redis::Connection, key: &str, n: usize) {
    let valid = |f: &str| {
        f.strip_prefix('f')
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i < n)
    };
    let one: String = run(c, &["HRANDFIELD", key]).unwrap();
    assert!(valid(&one), "{one}");
    assert!(
        run::<Vec<String>>(c, &["HRANDFIELD", key, "0"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(c, &["HRANDFIELD", key, "0", "WITHVALUES"])
            .unwrap()
            .is_empty()
    );
    for count in [1, 2, n / 2, n - 1, n, n + 1, 5 * n] {
        let got: Vec<String> = run(c, &["HRANDFIELD", key, &count.to_string()]).unwrap();
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(got.len(), count.min(n), "count {count}");
        assert_eq!(distinct.len(), got.len(), "distinct for count {count}");
        assert!(got.iter().all(|f| valid(f)));
        let pairs: Vec<String> =
            run(c, &["HRANDFIELD", key, &count.to_string(), "withvalues"]).unwrap();
        assert_eq!(pairs.len(), 2 * count.min(n));
        let fields: HashSet<&String> = pairs.iter().step_by(2).collect();
        assert_eq!(fields.len(), count.min(n));
        for p in pairs.chunks(2) {
            assert_eq!(p[1], format!("v{}", &p[0][1..]));
        }
    }
    // Negative: exactly |count| picks, repeats allowed (and certain when |count| > size).
    for count in [1, n, 3 * n] {
        let got: Vec<String> = run(c, &["HRANDFIELD", key, &format!("-{count}")]).unwrap();
        assert_eq!(got.len(), count);
        assert!(got.iter().all(|f| valid(f)));
        if count > n {
            assert!(got.iter().collect::<HashSet<_>>().len() < count);
        }
        let pairs: Vec<String> =
            run(c, &["HRANDFIELD", key, &format!("-{count}"), "WITHVALUES"]).unwrap();
        assert_eq!(pairs.len(), 2 * count);
        for p in pairs.chunks(2) {
            assert_eq!(p[1], format!("v{}", &p[0][1..]));
        }
    }
    // Over many single picks, every field shows up (a uniform sampler, not a fixed one).
    let picks: Vec<String> = run(c, &["HRANDFIELD", key, &format!("-{}", 60 * n)]).unwrap();
    assert_eq!(picks.iter().collect::<HashSet<_>>().len(), n);
}

#[test]
fn hrandfield_count_forms_on_both_encodings() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    fill(&mut c, "small", 5);
    assert_eq!(encoding(&mut c, "small"), "listpack");
    check_hrandfield_forms(&mut c, "small", 5);
    fill(&mut c, "large", 200);
    assert_eq!(encoding(&mut c, "large"), "hashtable");
    check_hrandfield_forms(&mut c, "large", 200);

    assert_eq!(
        run::<Option<String>>(&mut c, &["HRANDFIELD", "missing"]).unwrap(),
        None
    );
    assert!(
        run::<Vec<String>>(&mut c, &["HRANDFIELD", "missing", "5"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(&mut c, &["HRANDFIELD", "missing", "-5", "WITHVALUES"])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn hrandfield_argument_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    fill(&mut c, "h", 3);
    assert_eq!(
        err(&mut c, &["HRANDFIELD", "h", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["HRANDFIELD", "h", "1", "WITHSCORES"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["HRANDFIELD", "h", "1", "WITHVALUES", "x"]),
        "ERR syntax error"
    );
    // The count is parsed before the rest of the arguments are looked at.
    assert_eq!(
        err(&mut c, &["HRANDFIELD", "h", "x", "WITHVALUES", "y"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["HRANDFIELD", "h", "-9223372036854775808"]),
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    assert_eq!(
        err(
            &mut c,
            &["HRANDFIELD", "h", "-4611686018427387904", "WITHVALUES"]
        ),
        "ERR value is out of range"
    );
    assert_eq!(
        err(
            &mut c,
            &["HRANDFIELD", "h", "4611686018427387904", "WITHVALUES"]
        ),
        "ERR value is out of range"
    );
    // Huge positive counts are fine without WITHVALUES: the whole hash.
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HRANDFIELD", "h", "9223372036854775807"])
            .unwrap()
            .len(),
        3
    );
    // Argument errors come before the key is looked at.
    run::<String>(&mut c, &["SET", "s", "x"]).unwrap();
    assert_eq!(
        err(&mut c, &["HRANDFIELD", "s", "x"]),
        "ERR value is not an integer or out of range"
    );
}

/// Runs HSCAN to completion; returns (fields seen with their values, number of calls).
fn hscan_all(
    c: &mut redis::Connection,
    key: &str,
    extra: &[&str],
) -> (Vec<(String, String)>, usize) {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 100_000, "HSCAN did not terminate");
        let mut args = vec!["HSCAN", key, &cursor];
        args.extend_from_slice(extra);
        let (next, items): (String, Vec<String>) = run(c, &args).unwrap();
        if extra.iter().any(|a| a.eq_ignore_ascii_case("NOVALUES")) {
            seen.extend(items.into_iter().map(|f| (f, String::new())));
        } else {
            assert_eq!(items.len() % 2, 0);
            seen.extend(items.chunks(2).map(|p| (p[0].clone(), p[1].clone())));
        }
        if next == "0" {
            return (seen, calls);
        }
        cursor = next;
    }
}

#[test]
fn hscan_small_and_large_hashes() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // A listpack comes back whole in one call, COUNT notwithstanding.
    fill(&mut c, "small", 20);
    let (next, items): (String, Vec<String>) =
        run(&mut c, &["HSCAN", "small", "0", "COUNT", "2"]).unwrap();
    assert_eq!((next.as_str(), items.len()), ("0", 40));
    let (next, items): (String, Vec<String>) =
        run(&mut c, &["HSCAN", "small", "0", "MATCH", "f1*"]).unwrap();
    assert_eq!(next, "0");
    let mut fields: Vec<&String> = items.iter().step_by(2).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "f1", "f10", "f11", "f12", "f13", "f14", "f15", "f16", "f17", "f18", "f19"
        ]
    );
    let (_, items): (String, Vec<String>) =
        run(&mut c, &["HSCAN", "small", "0", "MATCH", "f1?", "NOVALUES"]).unwrap();
    assert_eq!(items.len(), 10);
    assert!(items.iter().all(|f| f.starts_with("f1") && f.len() == 3));

    // A hashtable is walked by cursor; a full iteration returns every field, with its value.
    fill(&mut c, "large", 1000);
    assert_eq!(encoding(&mut c, "large"), "hashtable");
    let (seen, calls) = hscan_all(&mut c, "large", &["COUNT", "10"]);
    assert!(calls > 10, "COUNT 10 over 1000 fields took {calls} calls");
    let map: HashMap<String, String> = seen.into_iter().collect();
    assert_eq!(map.len(), 1000);
    for i in 0..1000 {
        assert_eq!(map[&format!("f{i}")], format!("v{i}"));
    }
    let (seen, _) = hscan_all(&mut c, "large", &["COUNT", "9223372036854775807"]);
    assert_eq!(seen.len(), 1000);
    let (seen, _) = hscan_all(&mut c, "large", &[]);
    assert_eq!(
        seen.iter().map(|p| &p.0).collect::<HashSet<_>>().len(),
        1000
    );
    let (seen, _) = hscan_all(
        &mut c,
        "large",
        &["MATCH", "f99*", "COUNT", "50", "NOVALUES"],
    );
    let got: HashSet<String> = seen.into_iter().map(|p| p.0).collect();
    let want: HashSet<String> = ["f99".to_string()]
        .into_iter()
        .chain((990..1000).map(|i| format!("f{i}")))
        .collect();
    assert_eq!(got, want);

    // Fields present for the whole iteration are returned even while the hash grows.
    let mut cursor = "0".to_string();
    let mut seen = HashSet::new();
    let mut added = 0;
    for calls in 0.. {
        assert!(calls < 100_000, "HSCAN did not terminate");
        let (next, items): (String, Vec<String>) = run(
            &mut c,
            &["HSCAN", "large", &cursor, "COUNT", "20", "NOVALUES"],
        )
        .unwrap();
        seen.extend(items);
        if added < 3000 {
            let mut cmd = redis::cmd("HSET");
            cmd.arg("large");
            for _ in 0..100 {
                cmd.arg(format!("g{added}")).arg("x");
                added += 1;
            }
            cmd.query::<i64>(&mut c).unwrap();
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    for i in 0..1000 {
        assert!(seen.contains(&format!("f{i}")), "missed f{i}");
    }
}

#[test]
fn hscan_errors_and_edge_cases() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    fill(&mut c, "h", 3);
    run::<String>(&mut c, &["SET", "s", "x"]).unwrap();
    assert_eq!(err(&mut c, &["HSCAN", "h", "x"]), "ERR invalid cursor");
    assert_eq!(err(&mut c, &["HSCAN", "h", "-1"]), "ERR invalid cursor");
    assert_eq!(
        err(&mut c, &["HSCAN", "h", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["HSCAN", "h", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["HSCAN", "h", "0", "COUNT"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["HSCAN", "h", "0", "TYPE", "hash"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["HSCAN", "h", "0", "NOSCORES"]),
        "ERR NOSCORES option can only be used in ZSCAN"
    );
    // The key is looked at before the options: a missing key is an empty page whatever the
    // options say, and a key of the wrong type is WRONGTYPE.
    let (next, items): (String, Vec<String>) =
        run(&mut c, &["HSCAN", "missing", "0", "COUNT", "0"]).unwrap();
    assert_eq!((next.as_str(), items.len()), ("0", 0));
    assert_eq!(
        err(&mut c, &["HSCAN", "s", "0", "COUNT", "x"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(err(&mut c, &["HSCAN", "s", "x"]), "ERR invalid cursor");
    // Odd but valid cursors (C's strtoull).
    let (next, _): (String, Vec<String>) = run(&mut c, &["HSCAN", "h", "+0"]).unwrap();
    assert_eq!(next, "0");
}

#[test]
fn encoding_follows_the_listpack_limits() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // The defaults: 128 entries, 64-byte fields and values.
    fill(&mut c, "d", 128);
    assert_eq!(encoding(&mut c, "d"), "listpack");
    run::<i64>(&mut c, &["HSET", "d", "one-more", "x"]).unwrap();
    assert_eq!(encoding(&mut c, "d"), "hashtable");
    run::<i64>(&mut c, &["HSET", "v64", "f", &"x".repeat(64)]).unwrap();
    assert_eq!(encoding(&mut c, "v64"), "listpack");
    run::<i64>(&mut c, &["HSET", "v65", "f", &"x".repeat(65)]).unwrap();
    assert_eq!(encoding(&mut c, "v65"), "hashtable");
    run::<i64>(&mut c, &["HSET", "f65", &"x".repeat(65), "v"]).unwrap();
    assert_eq!(encoding(&mut c, "f65"), "hashtable");

    for (k, v) in [
        ("hash-max-listpack-entries", "4"),
        ("hash-max-listpack-value", "8"),
    ] {
        assert_eq!(
            run::<String>(&mut c, &["CONFIG", "SET", k, v]).unwrap(),
            "OK"
        );
    }
    fill(&mut c, "h", 4);
    assert_eq!(encoding(&mut c, "h"), "listpack");
    run::<i64>(&mut c, &["HSET", "h", "f4", "v"]).unwrap();
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    // Never back: shrinking keeps the table.
    run::<i64>(&mut c, &["HDEL", "h", "f0", "f1", "f2", "f3"]).unwrap();
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    assert_eq!(run::<i64>(&mut c, &["HLEN", "h"]).unwrap(), 1);

    // A value over the limit converts, even when it only updates an existing field.
    run::<i64>(&mut c, &["HSET", "u", "a", "short"]).unwrap();
    assert_eq!(encoding(&mut c, "u"), "listpack");
    run::<i64>(&mut c, &["HSET", "u", "a", "123456789"]).unwrap();
    assert_eq!(encoding(&mut c, "u"), "hashtable");
    assert_eq!(
        run::<String>(&mut c, &["HGET", "u", "a"]).unwrap(),
        "123456789"
    );
    // Exactly at the limit stays.
    run::<i64>(&mut c, &["HSET", "exact", "12345678", "12345678"]).unwrap();
    assert_eq!(encoding(&mut c, "exact"), "listpack");
    // HSETNX, HINCRBY and HINCRBYFLOAT follow the same rules.
    run::<i64>(&mut c, &["HSETNX", "nx", "f", "123456789"]).unwrap();
    assert_eq!(encoding(&mut c, "nx"), "hashtable");
    run::<i64>(&mut c, &["HSET", "inc", "n", "1"]).unwrap();
    run::<i64>(&mut c, &["HINCRBY", "inc", "n", "100000000"]).unwrap();
    assert_eq!(encoding(&mut c, "inc"), "hashtable");
    run::<i64>(&mut c, &["HSET", "incf", "n", "1"]).unwrap();
    run::<String>(&mut c, &["HINCRBYFLOAT", "incf", "n", "0.25"]).unwrap();
    assert_eq!(encoding(&mut c, "incf"), "listpack");
    run::<String>(&mut c, &["HINCRBYFLOAT", "incf", "n", "0.0000001"]).unwrap();
    assert_eq!(encoding(&mut c, "incf"), "hashtable");
    // Valkey converts up front when one write names more pairs than the entry limit, even if
    // they repeat a field.
    run::<i64>(
        &mut c,
        &[
            "HSET", "rep", "a", "1", "a", "2", "a", "3", "a", "4", "a", "5",
        ],
    )
    .unwrap();
    assert_eq!(run::<i64>(&mut c, &["HLEN", "rep"]).unwrap(), 1);
    assert_eq!(encoding(&mut c, "rep"), "hashtable");
    // Data survives conversions.
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HGETALL", "rep"]).unwrap(),
        ["a", "5"]
    );

    // Zero entries allowed: every hash is a table.
    run::<String>(&mut c, &["CONFIG", "SET", "hash-max-listpack-entries", "0"]).unwrap();
    run::<i64>(&mut c, &["HSET", "z", "a", "1"]).unwrap();
    assert_eq!(encoding(&mut c, "z"), "hashtable");
}

#[test]
fn wrongtype_everywhere() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<String>(&mut c, &["SET", "s", "x"]).unwrap();
    let wrong = "WRONGTYPE Operation against a key holding the wrong kind of value";
    let commands: &[&[&str]] = &[
        &["HSET", "s", "f", "v"],
        &["HSETNX", "s", "f", "v"],
        &["HMSET", "s", "f", "v"],
        &["HGET", "s", "f"],
        &["HMGET", "s", "f", "g"],
        &["HGETALL", "s"],
        &["HKEYS", "s"],
        &["HVALS", "s"],
        &["HDEL", "s", "f"],
        &["HLEN", "s"],
        &["HEXISTS", "s", "f"],
        &["HSTRLEN", "s", "f"],
        &["HINCRBY", "s", "f", "1"],
        &["HINCRBYFLOAT", "s", "f", "1.5"],
        &["HRANDFIELD", "s"],
        &["HRANDFIELD", "s", "2"],
        &["HRANDFIELD", "s", "-2", "WITHVALUES"],
        &["HSCAN", "s", "0"],
        &["HSCAN", "s", "0", "MATCH", "*", "COUNT", "5", "NOVALUES"],
    ];
    for args in commands {
        assert_eq!(err(&mut c, args), wrong, "{args:?}");
    }
    // The string is untouched by all of that.
    assert_eq!(run::<String>(&mut c, &["GET", "s"]).unwrap(), "x");
    // And the other way round.
    run::<i64>(&mut c, &["HSET", "h", "f", "v"]).unwrap();
    for args in [
        &["GET", "h"][..],
        &["INCR", "h"],
        &["APPEND", "h", "x"],
        &["STRLEN", "h"],
    ] {
        assert_eq!(err(&mut c, args), wrong, "{args:?}");
    }
    assert_eq!(run::<String>(&mut c, &["HGET", "h", "f"]).unwrap(), "v");
}
