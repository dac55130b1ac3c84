//! Keys as a whole through a real client, on a two-core server: DEL/UNLINK/EXISTS/TOUCH/TYPE,
//! RENAME/RENAMENX/COPY within and across cores, KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHALL/FLUSHDB
//! and OBJECT, compared with Valkey's replies.

use crate::common;

use std::collections::HashSet;

use common::{DEADLINE, Server, core_of, err, key_on, pttl_after, run, ttl_after, wait_until};

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> i64 {
    let info: String = run(c, &["INFO", section]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn del_unlink_exists_touch_type_across_cores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let (a, b) = (key_on(0, "a"), key_on(1, "b"));
    let (h, none) = (key_on(1, "h"), key_on(0, "none"));
    assert_ne!(core_of(&a), core_of(&b));
    run::<String>(&mut c, &["SET", &a, "1"]).unwrap();
    run::<String>(&mut c, &["SET", &b, "2"]).unwrap();
    run::<i64>(&mut c, &["HSET", &h, "f", "v"]).unwrap();

    // A key named twice counts twice for EXISTS and TOUCH, once for DEL.
    assert_eq!(
        run::<i64>(&mut c, &["EXISTS", &a, &b, &a, &h, &none]).unwrap(),
        4
    );
    assert_eq!(run::<i64>(&mut c, &["EXISTS", &none]).unwrap(), 0);
    assert_eq!(
        run::<i64>(&mut c, &["TOUCH", &a, &b, &b, &none]).unwrap(),
        3
    );
    assert_eq!(run::<String>(&mut c, &["TYPE", &a]).unwrap(), "string");
    assert_eq!(run::<String>(&mut c, &["TYPE", &b]).unwrap(), "string");
    assert_eq!(run::<String>(&mut c, &["TYPE", &h]).unwrap(), "hash");
    assert_eq!(run::<String>(&mut c, &["TYPE", &none]).unwrap(), "none");

    assert_eq!(run::<i64>(&mut c, &["DEL", &a, &a, &b, &none]).unwrap(), 2);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", &a, &b]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["DEL", &a]).unwrap(), 0);
    run::<String>(&mut c, &["SET", &a, "1"]).unwrap();
    assert_eq!(run::<i64>(&mut c, &["UNLINK", &h, &a, &h, &b]).unwrap(), 2);
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 0);
    assert_eq!(
        err(&mut c, &["DEL"]),
        "ERR wrong number of arguments for 'del' command"
    );
    assert_eq!(
        err(&mut c, &["EXISTS"]),
        "ERR wrong number of arguments for 'exists' command"
    );
    assert_eq!(
        err(&mut c, &["TYPE", &a, &b]),
        "ERR wrong number of arguments for 'type' command"
    );

    // Many keys over both cores in one call.
    let keys: Vec<String> = (0..100).map(|i| format!("many:{i}")).collect();
    assert!(keys.iter().any(|k| core_of(k) == 0) && keys.iter().any(|k| core_of(k) == 1));
    for k in &keys {
        run::<String>(&mut c, &["SET", k, "x"]).unwrap();
    }
    let mut exists = redis::cmd("EXISTS");
    let mut del = redis::cmd("DEL");
    for k in keys.iter().chain(keys.iter().take(10)) {
        exists.arg(k);
        del.arg(k);
    }
    assert_eq!(exists.query::<i64>(&mut c).unwrap(), 110);
    assert_eq!(del.query::<i64>(&mut c).unwrap(), 100);
}

#[test]
fn reads_count_keyspace_hits_and_misses() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<String>(&mut c, &["SET", "k", "v"]).unwrap();
    run::<String>(&mut c, &["CONFIG", "RESETSTAT"]).unwrap();
    for args in [
        &["EXISTS", "k"][..],
        &["TYPE", "k"],
        &["TTL", "k"],
        &["OBJECT", "ENCODING", "k"],
        &["TOUCH", "k"],
        &["EXISTS", "nope"],
        &["TYPE", "nope"],
        &["PTTL", "nope"],
    ] {
        run::<redis::Value>(&mut c, args).unwrap();
    }
    assert_eq!(info_field(&mut c, "stats", "keyspace_hits"), 5);
    assert_eq!(info_field(&mut c, "stats", "keyspace_misses"), 3);
}

/// RENAME/RENAMENX/COPY behaviour between `src` and `dst` (wherever they live).
fn check_rename(c: &mut redis::Connection, src: &str, dst: &str) {
    run::<i64>(c, &["DEL", src, dst]).unwrap();
    assert_eq!(err(c, &["RENAME", src, dst]), "ERR no such key");
    assert_eq!(err(c, &["RENAMENX", src, dst]), "ERR no such key");

    // A hash with a TTL moves whole, TTL included.
    run::<i64>(c, &["HSET", src, "a", "1", "b", "2"]).unwrap();
    run::<i64>(c, &["PEXPIRE", src, "100000"]).unwrap();
    assert_eq!(run::<String>(c, &["RENAME", src, dst]).unwrap(), "OK");
    assert_eq!(run::<i64>(c, &["EXISTS", src]).unwrap(), 0);
    assert_eq!(
        run::<Vec<String>>(c, &["HGETALL", dst]).unwrap(),
        ["a", "1", "b", "2"]
    );
    let pttl: i64 = run(c, &["PTTL", dst]).unwrap();
    assert!(pttl_after(100_000).contains(&pttl), "{pttl}");

    // RENAME overwrites the destination, and its TTL: a persistent source leaves none.
    run::<String>(c, &["SET", src, "plain"]).unwrap();
    assert_eq!(run::<String>(c, &["RENAME", src, dst]).unwrap(), "OK");
    assert_eq!(run::<String>(c, &["GET", dst]).unwrap(), "plain");
    assert_eq!(run::<i64>(c, &["TTL", dst]).unwrap(), -1);

    // RENAMENX refuses an existing destination and changes nothing.
    run::<String>(c, &["SET", src, "s"]).unwrap();
    assert_eq!(run::<i64>(c, &["RENAMENX", src, dst]).unwrap(), 0);
    assert_eq!(run::<String>(c, &["GET", src]).unwrap(), "s");
    assert_eq!(run::<String>(c, &["GET", dst]).unwrap(), "plain");
    run::<i64>(c, &["DEL", dst]).unwrap();
    assert_eq!(run::<i64>(c, &["RENAMENX", src, dst]).unwrap(), 1);
    assert_eq!(run::<String>(c, &["GET", dst]).unwrap(), "s");
    assert_eq!(run::<i64>(c, &["EXISTS", src]).unwrap(), 0);

    // COPY: the copy is independent, carries the TTL, and needs REPLACE to overwrite.
    run::<i64>(c, &["DEL", src, dst]).unwrap();
    assert_eq!(run::<i64>(c, &["COPY", src, dst]).unwrap(), 0);
    run::<i64>(c, &["HSET", src, "f", "v"]).unwrap();
    run::<i64>(c, &["EXPIRE", src, "1000"]).unwrap();
    assert_eq!(run::<i64>(c, &["COPY", src, dst]).unwrap(), 1);
    let ttl: i64 = run(c, &["TTL", dst]).unwrap();
    assert!(ttl_after(1000).contains(&ttl), "{ttl}");
    run::<i64>(c, &["HSET", dst, "f", "changed"]).unwrap();
    assert_eq!(run::<String>(c, &["HGET", src, "f"]).unwrap(), "v");
    assert_eq!(run::<i64>(c, &["COPY", src, dst]).unwrap(), 0);
    assert_eq!(run::<String>(c, &["HGET", dst, "f"]).unwrap(), "changed");
    assert_eq!(run::<i64>(c, &["COPY", src, dst, "REPLACE"]).unwrap(), 1);
    assert_eq!(run::<String>(c, &["HGET", dst, "f"]).unwrap(), "v");
    // REPLACE onto a persistent key with a persistent source leaves no TTL behind.
    run::<String>(c, &["SET", src, "p"]).unwrap();
    assert_eq!(
        run::<i64>(c, &["COPY", src, dst, "replace", "db", "0"]).unwrap(),
        1
    );
    assert_eq!(run::<String>(c, &["GET", dst]).unwrap(), "p");
    assert_eq!(run::<i64>(c, &["TTL", dst]).unwrap(), -1);
    assert_eq!(
        run::<String>(c, &["OBJECT", "ENCODING", dst]).unwrap(),
        "embstr"
    );
    assert_eq!(
        err(c, &["COPY", src, dst, "DB", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(c, &["COPY", src, dst, "DB", "-1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(c, &["COPY", src, dst, "DB", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(c, &["COPY", src, dst, "DB", "99999999999"]),
        "ERR value is out of range, value must between -2147483648 and 2147483647"
    );
    assert_eq!(err(c, &["COPY", src, dst, "DB"]), "ERR syntax error");
    assert_eq!(err(c, &["COPY", src, dst, "NOPE"]), "ERR syntax error");
    // Options are checked before the keys.
    assert_eq!(
        err(c, &["COPY", "missing", dst, "DB", "16"]),
        "ERR DB index is out of range"
    );
}

#[test]
fn rename_and_copy_on_one_core_and_across_cores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Same slot through a hash tag.
    check_rename(&mut c, "{t}src", "{t}dst");
    // Different slots, same core.
    let (s0, d0) = (key_on(0, "src"), key_on(0, "dst"));
    check_rename(&mut c, &s0, &d0);
    // Different cores, both directions.
    let (s1, d1) = (key_on(1, "src"), key_on(1, "dst"));
    check_rename(&mut c, &s0, &d1);
    check_rename(&mut c, &s1, &d0);

    // A key onto itself.
    run::<String>(&mut c, &["SET", "self", "v"]).unwrap();
    assert_eq!(
        run::<String>(&mut c, &["RENAME", "self", "self"]).unwrap(),
        "OK"
    );
    assert_eq!(
        run::<i64>(&mut c, &["RENAMENX", "self", "self"]).unwrap(),
        0
    );
    assert_eq!(run::<String>(&mut c, &["GET", "self"]).unwrap(), "v");
    assert_eq!(err(&mut c, &["RENAME", "nope", "nope"]), "ERR no such key");
    assert_eq!(
        err(&mut c, &["COPY", "self", "self"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        err(&mut c, &["COPY", "nope", "nope"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        err(&mut c, &["RENAME", "self"]),
        "ERR wrong number of arguments for 'rename' command"
    );

    // An integer-encoded string and a big hash survive a cross-core move.
    run::<String>(&mut c, &["SET", &s0, "12345"]).unwrap();
    run::<String>(&mut c, &["RENAME", &s0, &d1]).unwrap();
    assert_eq!(
        run::<String>(&mut c, &["OBJECT", "ENCODING", &d1]).unwrap(),
        "int"
    );
    assert_eq!(run::<i64>(&mut c, &["INCR", &d1]).unwrap(), 12346);
    run::<i64>(&mut c, &["DEL", &s1]).unwrap();
    let mut hset = redis::cmd("HSET");
    hset.arg(&s1);
    for i in 0..500 {
        hset.arg(i).arg(i * 2);
    }
    hset.query::<i64>(&mut c).unwrap();
    run::<String>(&mut c, &["RENAME", &s1, &d0]).unwrap();
    assert_eq!(run::<i64>(&mut c, &["HLEN", &d0]).unwrap(), 500);
    assert_eq!(
        run::<String>(&mut c, &["OBJECT", "ENCODING", &d0]).unwrap(),
        "hashtable"
    );
    assert_eq!(run::<i64>(&mut c, &["HGET", &d0, "499"]).unwrap(), 998);
}

#[test]
fn keys_with_glob_patterns() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let names = [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "h?llo", "hEllo", "foo", "foo:1",
        "foo:22", "bar[1]", "a\\b",
    ];
    for k in names {
        run::<String>(&mut c, &["SET", k, "v"]).unwrap();
    }
    assert!(names.iter().any(|k| core_of(k) == 0) && names.iter().any(|k| core_of(k) == 1));
    let keys = |c: &mut redis::Connection, pattern: &str| {
        let mut k: Vec<String> = run(c, &["KEYS", pattern]).unwrap();
        k.sort();
        k
    };
    let mut all: Vec<&str> = names.to_vec();
    all.sort();
    assert_eq!(keys(&mut c, "*"), all);
    assert_eq!(
        keys(&mut c, "h?llo"),
        ["h*llo", "h?llo", "hEllo", "hallo", "hello", "hxllo"]
    );
    assert_eq!(
        keys(&mut c, "h*llo"),
        [
            "h*llo", "h?llo", "hEllo", "hallo", "heeeello", "hello", "hllo", "hxllo"
        ]
    );
    assert_eq!(keys(&mut c, "h[ae]llo"), ["hallo", "hello"]);
    assert_eq!(
        keys(&mut c, "h[^e]llo"),
        ["h*llo", "h?llo", "hEllo", "hallo", "hxllo"]
    );
    assert_eq!(keys(&mut c, "h[a-b]llo"), ["hallo"]);
    assert_eq!(keys(&mut c, "h\\*llo"), ["h*llo"]);
    assert_eq!(keys(&mut c, "foo:?"), ["foo:1"]);
    assert_eq!(keys(&mut c, "foo*"), ["foo", "foo:1", "foo:22"]);
    assert_eq!(keys(&mut c, "bar\\[1\\]"), ["bar[1]"]);
    assert_eq!(keys(&mut c, "a\\\\b"), ["a\\b"]);
    assert!(keys(&mut c, "nomatch*").is_empty());
    // Expired keys are not listed.
    run::<String>(&mut c, &["SET", "gone", "v", "PX", "1"]).unwrap();
    assert!(wait_until(DEADLINE, || keys(&mut c, "gone").is_empty()));
}

/// A full SCAN iteration with `extra` options: every key returned, and the number of calls.
fn scan_all(c: &mut redis::Connection, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    for calls in 1.. {
        assert!(calls < 200_000, "SCAN did not terminate");
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let (next, keys): (String, Vec<String>) = run(c, &args).unwrap();
        seen.extend(keys);
        if next == "0" {
            return (seen, calls);
        }
        cursor = next;
    }
    unreachable!()
}

fn set_many(c: &mut redis::Connection, keys: impl Iterator<Item = String>) {
    let mut p = redis::pipe();
    for k in keys {
        p.cmd("SET").arg(k).arg("v").ignore();
    }
    p.query::<()>(c).unwrap();
}

#[test]
fn scan_iterates_every_key() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // An empty keyspace: a full iteration ends with nothing.
    let (seen, _) = scan_all(&mut c, &[]);
    assert!(seen.is_empty());
    // A few keys spread over the cores (pages may be empty, the iteration still ends).
    for k in ["x", "y", "z"] {
        run::<String>(&mut c, &["SET", k, "v"]).unwrap();
    }
    let (mut seen, _) = scan_all(&mut c, &[]);
    seen.sort();
    assert_eq!(seen, ["x", "y", "z"]);
    run::<String>(&mut c, &["FLUSHALL"]).unwrap();

    let all: HashSet<String> = (0..5000).map(|i| format!("key:{i}")).collect();
    set_many(&mut c, all.iter().cloned());
    for count in [None, Some("1"), Some("100"), Some("100000")] {
        let extra: Vec<&str> = count.iter().flat_map(|n| ["COUNT", n]).collect();
        let (seen, calls) = scan_all(&mut c, &extra);
        let got: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(got, all, "COUNT {count:?}");
        // Duplicates are allowed by SCAN's contract, but not wholesale.
        assert!(seen.len() < 2 * all.len(), "{} keys returned", seen.len());
        if count == Some("100") {
            assert!((20..=1000).contains(&calls), "{calls} calls");
        }
    }

    // MATCH filters, TYPE filters.
    for i in 0..20 {
        run::<i64>(&mut c, &["HSET", &format!("hash:{i}"), "f", "v"]).unwrap();
    }
    let (seen, _) = scan_all(&mut c, &["MATCH", "key:1?", "COUNT", "50"]);
    let got: HashSet<String> = seen.into_iter().collect();
    assert_eq!(got, (10..20).map(|i| format!("key:{i}")).collect());
    let (seen, _) = scan_all(&mut c, &["TYPE", "hash", "COUNT", "100"]);
    let got: HashSet<String> = seen.into_iter().collect();
    assert_eq!(got, (0..20).map(|i| format!("hash:{i}")).collect());
    let (seen, _) = scan_all(&mut c, &["TYPE", "STRING", "MATCH", "*:499?"]);
    let got: HashSet<String> = seen.into_iter().collect();
    assert_eq!(got, (4990..5000).map(|i| format!("key:{i}")).collect());
    let (seen, _) = scan_all(&mut c, &["TYPE", "list", "COUNT", "1000"]);
    assert!(seen.is_empty());
}

#[test]
fn scan_returns_keys_present_throughout_while_the_keyspace_grows() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let stable: Vec<String> = (0..2000).map(|i| format!("stable:{i}")).collect();
    set_many(&mut c, stable.iter().cloned());
    let mut cursor = "0".to_string();
    let mut seen = HashSet::new();
    let mut added = 0;
    for calls in 0.. {
        assert!(calls < 200_000, "SCAN did not terminate");
        let (next, keys): (String, Vec<String>) =
            run(&mut c, &["SCAN", &cursor, "COUNT", "50"]).unwrap();
        seen.extend(keys);
        // Grow (and shrink) the keyspace between calls: tables resize under the cursor.
        if added < 20_000 {
            set_many(&mut c, (added..added + 500).map(|i| format!("new:{i}")));
            run::<i64>(&mut c, &["DEL", &format!("new:{}", added / 2)]).unwrap();
            added += 500;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    for k in &stable {
        assert!(seen.contains(k), "missed {k}");
    }
}

#[test]
fn scan_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<String>(&mut c, &["SET", "k", "v"]).unwrap();
    for bad in ["x", "-1", "1.5", "", "18446744073709551616"] {
        assert_eq!(err(&mut c, &["SCAN", bad]), "ERR invalid cursor", "{bad:?}");
    }
    assert_eq!(
        err(&mut c, &["SCAN", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["SCAN", "0", "COUNT", "-1"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["SCAN", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(err(&mut c, &["SCAN", "0", "MATCH"]), "ERR syntax error");
    assert_eq!(
        err(&mut c, &["SCAN", "0", "BOGUS", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["SCAN", "0", "TYPE", "nosuchtype"]),
        "ERR unknown type name 'nosuchtype'"
    );
    assert_eq!(
        err(&mut c, &["SCAN", "0", "NOVALUES"]),
        "ERR NOVALUES option can only be used in HSCAN"
    );
    assert_eq!(
        err(&mut c, &["SCAN", "0", "NOSCORES"]),
        "ERR NOSCORES option can only be used in ZSCAN"
    );
    assert_eq!(
        err(&mut c, &["SCAN"]),
        "ERR wrong number of arguments for 'scan' command"
    );
    // The largest COUNT is a hint like any other.
    set_many(&mut c, (0..100).map(|i| format!("c:{i}")));
    let (seen, _) = scan_all(&mut c, &["COUNT", "9223372036854775807"]);
    assert_eq!(seen.len(), 101);
    // Cursors C's strtoull accepts whole are valid; the largest one too.
    for odd in ["+0", " 0", "18446744073709551615"] {
        let (next, _): (String, Vec<String>) = run(&mut c, &["SCAN", odd]).unwrap();
        assert!(next.parse::<u64>().is_ok(), "{odd:?} gave {next}");
    }
}

#[test]
fn randomkey_dbsize_and_flush() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(run::<Option<String>>(&mut c, &["RANDOMKEY"]).unwrap(), None);
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 0);
    let keys: HashSet<String> = (0..50).map(|i| format!("r:{i}")).collect();
    set_many(&mut c, keys.iter().cloned());
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 50);
    let mut picked = HashSet::new();
    for _ in 0..200 {
        let k: String = run(&mut c, &["RANDOMKEY"]).unwrap();
        assert!(keys.contains(&k), "{k}");
        picked.insert(k);
    }
    assert!(
        picked.len() > 10,
        "RANDOMKEY picked only {} keys",
        picked.len()
    );
    // Keys on both cores are reachable.
    assert!(picked.iter().any(|k| core_of(k) == 0) && picked.iter().any(|k| core_of(k) == 1));

    for flush in [
        &["FLUSHALL"][..],
        &["FLUSHALL", "SYNC"],
        &["FLUSHALL", "async"],
        &["FLUSHDB"],
        &["FLUSHDB", "SYNC"],
        &["FLUSHDB", "ASYNC"],
    ] {
        set_many(&mut c, keys.iter().cloned());
        assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 50);
        assert_eq!(run::<String>(&mut c, flush).unwrap(), "OK", "{flush:?}");
        assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 0, "{flush:?}");
        assert_eq!(run::<Option<String>>(&mut c, &["RANDOMKEY"]).unwrap(), None);
    }
    for bad in [
        &["FLUSHALL", "NOW"][..],
        &["FLUSHALL", "SYNC", "ASYNC"],
        &["FLUSHDB", "x"],
        &["FLUSHDB", "ASYNC", "ASYNC"],
    ] {
        assert_eq!(err(&mut c, bad), "ERR syntax error", "{bad:?}");
    }
    assert_eq!(
        err(&mut c, &["DBSIZE", "x"]),
        "ERR wrong number of arguments for 'dbsize' command"
    );
    assert_eq!(
        err(&mut c, &["RANDOMKEY", "x"]),
        "ERR wrong number of arguments for 'randomkey' command"
    );
}

#[test]
fn object_encoding_refcount_and_help() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let cases = [
        ("int", "12345"),
        ("neg", "-9223372036854775808"),
        ("big", "9223372036854775808"),
        ("lead", "0123"),
        ("emb", "hello"),
        ("emb44", &"x".repeat(44)),
        ("raw45", &"x".repeat(45)),
    ];
    for (k, v) in cases {
        run::<String>(&mut c, &["SET", k, v]).unwrap();
    }
    let enc = |c: &mut redis::Connection, k: &str| -> Option<String> {
        run(c, &["OBJECT", "ENCODING", k]).unwrap()
    };
    for (k, want) in [
        ("int", "int"),
        ("neg", "int"),
        ("big", "embstr"),
        ("lead", "embstr"),
        ("emb", "embstr"),
        ("emb44", "embstr"),
        ("raw45", "raw"),
    ] {
        assert_eq!(enc(&mut c, k).as_deref(), Some(want), "{k}");
    }
    run::<i64>(&mut c, &["HSET", "h", "f", "v"]).unwrap();
    assert_eq!(enc(&mut c, "h").as_deref(), Some("listpack"));
    assert_eq!(enc(&mut c, "missing"), None);
    // Valkey 8.1+ embeds the key in each value object, so no value is shared: refcount 1.
    assert_eq!(
        run::<i64>(&mut c, &["OBJECT", "REFCOUNT", "int"]).unwrap(),
        1
    );
    assert_eq!(run::<i64>(&mut c, &["OBJECT", "REFCOUNT", "h"]).unwrap(), 1);
    assert_eq!(
        run::<Option<i64>>(&mut c, &["OBJECT", "REFCOUNT", "missing"]).unwrap(),
        None
    );

    let help: Vec<String> = run(&mut c, &["OBJECT", "HELP"]).unwrap();
    assert_eq!(
        help[0],
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    );
    for line in [
        "ENCODING <key>",
        "FREQ <key>",
        "IDLETIME <key>",
        "REFCOUNT <key>",
        "HELP",
    ] {
        assert!(
            help.iter().any(|l| l == line),
            "{line} missing from {help:?}"
        );
    }
    assert_eq!(help.len(), 15);
    assert_eq!(
        err(&mut c, &["OBJECT", "NOPE", "k"]),
        "ERR unknown subcommand 'NOPE'. Try OBJECT HELP."
    );
    assert_eq!(
        err(&mut c, &["OBJECT", "ENCODING"]),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        err(&mut c, &["OBJECT", "ENCODING", "a", "b"]),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        err(&mut c, &["OBJECT"]),
        "ERR wrong number of arguments for 'object' command"
    );
}

const LFU_NOT_SELECTED: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
const LFU_SELECTED: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

#[test]
fn object_freq_and_idletime_follow_the_policy() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let (k0, k1) = (key_on(0, "k"), key_on(1, "k"));
    for k in [&k0, &k1] {
        run::<String>(&mut c, &["SET", k, "value"]).unwrap();
        // LRU (the default policy): idle time in seconds (a 1 s clock, so 0 or 1 here), FREQ
        // refused.
        assert!(run::<i64>(&mut c, &["OBJECT", "IDLETIME", k]).unwrap() <= 1);
        assert_eq!(err(&mut c, &["OBJECT", "FREQ", k]), LFU_NOT_SELECTED);
    }
    assert_eq!(
        run::<Option<i64>>(&mut c, &["OBJECT", "FREQ", "missing"]).unwrap(),
        None
    );

    for policy in ["allkeys-lfu", "volatile-lfu"] {
        run::<String>(&mut c, &["CONFIG", "SET", "maxmemory-policy", policy]).unwrap();
        for k in [&k0, &k1] {
            run::<i64>(&mut c, &["DEL", k]).unwrap();
            run::<String>(&mut c, &["SET", k, "value"]).unwrap();
            // A new key starts at LFU_INIT_VAL (5); the first access always counts.
            assert_eq!(
                run::<i64>(&mut c, &["OBJECT", "FREQ", k]).unwrap(),
                5,
                "{policy}"
            );
            run::<String>(&mut c, &["GET", k]).unwrap();
            assert_eq!(
                run::<i64>(&mut c, &["OBJECT", "FREQ", k]).unwrap(),
                6,
                "{policy}"
            );
            // OBJECT, TYPE, EXISTS and TTL are not accesses.
            for args in [&["TYPE", k.as_str()][..], &["EXISTS", k], &["TTL", k]] {
                run::<redis::Value>(&mut c, args).unwrap();
            }
            assert_eq!(run::<i64>(&mut c, &["OBJECT", "FREQ", k]).unwrap(), 6);
            assert_eq!(err(&mut c, &["OBJECT", "IDLETIME", k]), LFU_SELECTED);
        }
    }
    run::<String>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )
    .unwrap();
    for k in [&k0, &k1] {
        assert_eq!(err(&mut c, &["OBJECT", "FREQ", k]), LFU_NOT_SELECTED);
        run::<String>(&mut c, &["SET", k, "value"]).unwrap();
    }

    // Idle time grows while nothing reads the key, survives lookups that are not accesses,
    // and goes back to 0 on a read (the LRU clock ticks in seconds, so "0" may read as 1).
    assert!(wait_until(DEADLINE, || {
        run::<i64>(&mut c, &["OBJECT", "IDLETIME", &k0]).unwrap() >= 2
    }));
    for args in [
        &["TYPE", k0.as_str()][..],
        &["EXISTS", &k0],
        &["TTL", &k0],
        &["OBJECT", "ENCODING", &k0],
    ] {
        run::<redis::Value>(&mut c, args).unwrap();
    }
    assert!(run::<i64>(&mut c, &["OBJECT", "IDLETIME", &k0]).unwrap() >= 2);
    assert!(run::<i64>(&mut c, &["OBJECT", "IDLETIME", &k1]).unwrap() >= 2);
    run::<String>(&mut c, &["GET", &k0]).unwrap();
    run::<i64>(&mut c, &["TOUCH", &k1]).unwrap();
    assert!(run::<i64>(&mut c, &["OBJECT", "IDLETIME", &k0]).unwrap() <= 1);
    assert!(run::<i64>(&mut c, &["OBJECT", "IDLETIME", &k1]).unwrap() <= 1);
}
