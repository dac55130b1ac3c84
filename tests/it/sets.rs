//! Sets through a real client: SADD/SREM and the membership reads, SPOP/SRANDMEMBER, the set
//! algebra and its STORE forms, SINTERCARD, SMOVE, SSCAN, the intset → listpack → hashtable
//! encoding rules, WRONGTYPE, RESP3 set replies and persistence, compared with Valkey 8's
//! replies. Multi-key commands use one hash tag, so their keys share a slot (and a core).

use crate::common;

use std::collections::{BTreeSet, HashMap};

use common::{Server, err, run};
use redis::Value;

type Conn = redis::Connection;

fn members(c: &mut Conn, key: &str) -> BTreeSet<String> {
    let v: Vec<String> = run(c, &["SMEMBERS", key]).unwrap();
    let set: BTreeSet<String> = v.iter().cloned().collect();
    assert_eq!(set.len(), v.len(), "SMEMBERS {key} repeated a member");
    set
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn strings(items: impl IntoIterator<Item = impl ToString>) -> Vec<String> {
    items.into_iter().map(|s| s.to_string()).collect()
}

fn encoding(c: &mut Conn, key: &str) -> String {
    run(c, &["OBJECT", "ENCODING", key]).unwrap()
}

fn int(c: &mut Conn, args: &[&str]) -> i64 {
    run(c, args).unwrap()
}

/// `SADD key` with `items`, in one command.
fn sadd(c: &mut Conn, key: &str, items: &[String]) -> i64 {
    let mut cmd = redis::cmd("SADD");
    cmd.arg(key);
    for m in items {
        cmd.arg(m);
    }
    cmd.query(c).unwrap()
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

#[test]
fn sadd_srem_and_membership() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["SADD", "s", "a", "b", "a", "c"]), 3);
    assert_eq!(int(&mut c, &["SADD", "s", "a", "d"]), 1);
    assert_eq!(int(&mut c, &["SADD", "s", "a"]), 0);
    assert_eq!(members(&mut c, "s"), set_of(&["a", "b", "c", "d"]));
    assert_eq!(int(&mut c, &["SCARD", "s"]), 4);
    assert_eq!(int(&mut c, &["SCARD", "missing"]), 0);
    assert_eq!(int(&mut c, &["SISMEMBER", "s", "b"]), 1);
    assert_eq!(int(&mut c, &["SISMEMBER", "s", "z"]), 0);
    assert_eq!(int(&mut c, &["SISMEMBER", "missing", "z"]), 0);
    let m: Vec<i64> = run(&mut c, &["SMISMEMBER", "s", "b", "z", "c", "b"]).unwrap();
    assert_eq!(m, [1, 0, 1, 1]);
    let m: Vec<i64> = run(&mut c, &["SMISMEMBER", "missing", "a", "b"]).unwrap();
    assert_eq!(m, [0, 0]);
    assert_eq!(int(&mut c, &["SREM", "s", "z"]), 0);
    assert_eq!(int(&mut c, &["SREM", "missing", "a"]), 0);
    assert_eq!(int(&mut c, &["SREM", "s", "a", "a", "z", "b"]), 2);
    assert_eq!(members(&mut c, "s"), set_of(&["c", "d"]));
    // The key goes with its last member.
    assert_eq!(int(&mut c, &["SREM", "s", "c", "d"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "s"]), 0);
    let empty: Vec<String> = run(&mut c, &["SMEMBERS", "s"]).unwrap();
    assert!(empty.is_empty());

    // Binary-safe members.
    let odd: &[&[u8]] = &[b"\x00", b"a\r\nb", b"\xff\xfe", b""];
    let added: i64 = redis::cmd("SADD")
        .arg("bin")
        .arg(odd)
        .query(&mut c)
        .unwrap();
    assert_eq!(added, 4);
    let got: BTreeSet<Vec<u8>> = redis::cmd("SMEMBERS").arg("bin").query(&mut c).unwrap();
    assert_eq!(got, odd.iter().map(|m| m.to_vec()).collect());
    let there: i64 = redis::cmd("SISMEMBER")
        .arg("bin")
        .arg(&b"a\r\nb"[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(there, 1);

    for (args, name) in [
        (&["SADD", "s"][..], "sadd"),
        (&["SREM", "s"], "srem"),
        (&["SCARD"], "scard"),
        (&["SCARD", "a", "b"], "scard"),
        (&["SISMEMBER", "s"], "sismember"),
        (&["SMISMEMBER", "s"], "smismember"),
        (&["SMEMBERS"], "smembers"),
        (&["SPOP"], "spop"),
        (&["SRANDMEMBER"], "srandmember"),
        (&["SINTER"], "sinter"),
        (&["SINTERSTORE", "d"], "sinterstore"),
        (&["SINTERCARD", "1"], "sintercard"),
        (&["SUNION"], "sunion"),
        (&["SUNIONSTORE", "d"], "sunionstore"),
        (&["SDIFF"], "sdiff"),
        (&["SDIFFSTORE", "d"], "sdiffstore"),
        (&["SMOVE", "a", "b"], "smove"),
        (&["SSCAN", "s"], "sscan"),
    ] {
        assert_eq!(
            err(&mut c, args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
}

#[test]
fn type_and_scan_know_sets() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    sadd(&mut c, "set1", &strings(["x"]));
    sadd(&mut c, "set2", &strings(1..1000));
    run::<()>(&mut c, &["SET", "str", "v"]).unwrap();
    assert_eq!(run::<String>(&mut c, &["TYPE", "set1"]).unwrap(), "set");
    assert_eq!(run::<String>(&mut c, &["TYPE", "set2"]).unwrap(), "set");
    let mut found = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) =
            run(&mut c, &["SCAN", &cursor, "TYPE", "set", "COUNT", "100"]).unwrap();
        found.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(found, set_of(&["set1", "set2"]));
}

#[test]
fn replies_are_sets_in_resp3() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    sadd(&mut c, "{t}a", &strings(["x", "y", "z"]));
    sadd(&mut c, "{t}b", &strings(["y"]));
    let set_len = |v: Value| match v {
        Value::Set(items) => items.len(),
        other => panic!("expected a set reply, got {other:?}"),
    };
    for (args, n) in [
        (&["SMEMBERS", "{t}a"][..], 3),
        (&["SMEMBERS", "{t}missing"], 0),
        (&["SINTER", "{t}a", "{t}b"], 1),
        (&["SINTER", "{t}a", "{t}missing"], 0),
        (&["SUNION", "{t}a", "{t}b"], 3),
        (&["SDIFF", "{t}a", "{t}b"], 2),
        (&["SPOP", "{t}missing", "2"], 0),
        (&["SPOP", "{t}a", "0"], 0),
        (&["SPOP", "{t}a", "1"], 1),
    ] {
        assert_eq!(set_len(run(&mut c, args).unwrap()), n, "{args:?}");
    }
    // SRANDMEMBER with a count is an array, SPOP without one a bulk (or null).
    match run(&mut c, &["SRANDMEMBER", "{t}a", "-5"]).unwrap() {
        Value::Array(items) => assert_eq!(items.len(), 5),
        other => panic!("SRANDMEMBER -5: {other:?}"),
    }
    match run(&mut c, &["SRANDMEMBER", "{t}missing", "5"]).unwrap() {
        Value::Array(items) => assert!(items.is_empty()),
        other => panic!("SRANDMEMBER missing 5: {other:?}"),
    }
    assert_eq!(
        run::<Value>(&mut c, &["SPOP", "{t}missing"]).unwrap(),
        Value::Nil
    );
    assert_eq!(
        run::<Value>(&mut c, &["SRANDMEMBER", "{t}missing"]).unwrap(),
        Value::Nil
    );
}

#[test]
fn encodings_follow_valkeys_rules() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Integers: an intset up to set-max-intset-entries (512).
    sadd(&mut c, "i", &strings(0..512));
    assert_eq!(encoding(&mut c, "i"), "intset");
    sadd(&mut c, "i", &strings([512]));
    assert_eq!(encoding(&mut c, "i"), "hashtable");
    // Non-canonical integers are strings.
    sadd(&mut c, "n", &strings(["1", "2"]));
    assert_eq!(encoding(&mut c, "n"), "intset");
    sadd(&mut c, "n", &strings(["007"]));
    assert_eq!(encoding(&mut c, "n"), "listpack");
    assert_eq!(members(&mut c, "n"), set_of(&["1", "2", "007"]));
    // A string joining fewer than 128 integers makes a listpack; 128 integers, a table.
    sadd(&mut c, "l", &strings(0..127));
    sadd(&mut c, "l", &strings(["a"]));
    assert_eq!(encoding(&mut c, "l"), "listpack");
    sadd(&mut c, "h", &strings(0..128));
    sadd(&mut c, "h", &strings(["a"]));
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    // Listpack: up to 128 members of up to 64 bytes.
    sadd(&mut c, "lp", &strings((0..128).map(|i| format!("m{i}"))));
    assert_eq!(encoding(&mut c, "lp"), "listpack");
    sadd(&mut c, "lp", &strings(["m128"]));
    assert_eq!(encoding(&mut c, "lp"), "hashtable");
    sadd(&mut c, "long", &strings(["a", &"x".repeat(64)]));
    assert_eq!(encoding(&mut c, "long"), "listpack");
    sadd(&mut c, "long", &strings([&"x".repeat(65)]));
    assert_eq!(encoding(&mut c, "long"), "hashtable");
    // Never back: a table stays one when it shrinks.
    for i in 0..128 {
        run::<i64>(&mut c, &["SREM", "lp", &format!("m{i}")]).unwrap();
    }
    assert_eq!(encoding(&mut c, "lp"), "hashtable");
    assert_eq!(members(&mut c, "lp"), set_of(&["m128"]));
    // SADD picks the encoding for its whole argument list up front.
    sadd(&mut c, "hint", &strings(std::iter::repeat_n("x", 129)));
    assert_eq!(encoding(&mut c, "hint"), "hashtable");
    assert_eq!(int(&mut c, &["SCARD", "hint"]), 1);
    // An intset answers in ascending order, a listpack in insertion order.
    sadd(&mut c, "ord", &strings([5, -3, 100, 0]));
    let v: Vec<String> = run(&mut c, &["SMEMBERS", "ord"]).unwrap();
    assert_eq!(v, ["-3", "0", "5", "100"]);
    sadd(&mut c, "ordl", &strings(["c", "a", "b", "d"]));
    run::<i64>(&mut c, &["SREM", "ordl", "a"]).unwrap();
    let v: Vec<String> = run(&mut c, &["SMEMBERS", "ordl"]).unwrap();
    assert_eq!(v, ["c", "b", "d"]);
}

#[test]
fn store_results_take_valkeys_encodings() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    sadd(&mut c, "{t}ints", &strings(0..300));
    sadd(&mut c, "{t}more", &strings(100..600));
    sadd(
        &mut c,
        "{t}mixed",
        &strings((0..150).map(|i| i.to_string()).chain(["x".into()])),
    );
    // The smallest set is an intset: the intersection is one too.
    assert_eq!(
        int(&mut c, &["SINTERSTORE", "{t}d", "{t}ints", "{t}more"]),
        200
    );
    assert_eq!(encoding(&mut c, "{t}d"), "intset");
    // The smallest set is a table, but every member in common is an integer: an intset.
    assert_eq!(
        int(&mut c, &["SINTERSTORE", "{t}d", "{t}mixed", "{t}more"]),
        50
    );
    assert_eq!(encoding(&mut c, "{t}d"), "intset");
    // A union of integers past 512 is a table; a small union with a string a listpack.
    assert_eq!(
        int(&mut c, &["SUNIONSTORE", "{t}d", "{t}ints", "{t}more"]),
        600
    );
    assert_eq!(encoding(&mut c, "{t}d"), "hashtable");
    sadd(&mut c, "{t}few", &strings(["1", "2", "a"]));
    sadd(&mut c, "{t}few2", &strings(["3"]));
    assert_eq!(
        int(&mut c, &["SUNIONSTORE", "{t}d", "{t}few2", "{t}few"]),
        4
    );
    assert_eq!(encoding(&mut c, "{t}d"), "listpack");
    let v: Vec<String> = run(&mut c, &["SMEMBERS", "{t}d"]).unwrap();
    // Built as Valkey builds it: an intset {3}, then {1, 2, 3}, then a listpack when "a"
    // comes.
    assert_eq!(v, ["1", "2", "3", "a"]);
    // A difference of intsets is an intset.
    assert_eq!(
        int(&mut c, &["SDIFFSTORE", "{t}d", "{t}ints", "{t}more"]),
        100
    );
    assert_eq!(encoding(&mut c, "{t}d"), "intset");
}

#[test]
fn intersections_unions_and_differences() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for (k, items) in [
        ("{t}a", &["1", "2", "3", "4", "x"][..]),
        ("{t}b", &["2", "3", "4", "5", "x", "y"]),
        ("{t}c", &["3", "4", "x", "z"]),
    ] {
        sadd(&mut c, k, &strings(items));
    }
    let sinter: BTreeSet<String> = run(&mut c, &["SINTER", "{t}a", "{t}b", "{t}c"]).unwrap();
    assert_eq!(sinter, set_of(&["3", "4", "x"]));
    let one: BTreeSet<String> = run(&mut c, &["SINTER", "{t}a"]).unwrap();
    assert_eq!(one, members(&mut c, "{t}a"));
    let same: BTreeSet<String> = run(&mut c, &["SINTER", "{t}a", "{t}a"]).unwrap();
    assert_eq!(same, members(&mut c, "{t}a"));
    let none: Vec<String> = run(&mut c, &["SINTER", "{t}a", "{t}missing"]).unwrap();
    assert!(none.is_empty());
    let sunion: BTreeSet<String> = run(&mut c, &["SUNION", "{t}a", "{t}missing", "{t}c"]).unwrap();
    assert_eq!(sunion, set_of(&["1", "2", "3", "4", "x", "z"]));
    let sdiff: BTreeSet<String> = run(&mut c, &["SDIFF", "{t}b", "{t}a", "{t}missing"]).unwrap();
    assert_eq!(sdiff, set_of(&["5", "y"]));
    let sdiff: BTreeSet<String> = run(&mut c, &["SDIFF", "{t}a", "{t}b", "{t}c"]).unwrap();
    assert_eq!(sdiff, set_of(&["1"]));
    let self_diff: Vec<String> = run(&mut c, &["SDIFF", "{t}a", "{t}b", "{t}a"]).unwrap();
    assert!(self_diff.is_empty());
    let from_missing: Vec<String> = run(&mut c, &["SDIFF", "{t}missing", "{t}a"]).unwrap();
    assert!(from_missing.is_empty());

    // SINTERCARD and its LIMIT.
    assert_eq!(int(&mut c, &["SINTERCARD", "3", "{t}a", "{t}b", "{t}c"]), 3);
    assert_eq!(
        int(
            &mut c,
            &["SINTERCARD", "3", "{t}a", "{t}b", "{t}c", "LIMIT", "2"]
        ),
        2
    );
    assert_eq!(
        int(&mut c, &["SINTERCARD", "2", "{t}a", "{t}b", "limit", "0"]),
        4
    );
    assert_eq!(
        int(
            &mut c,
            &["SINTERCARD", "1", "{t}a", "LIMIT", "1", "LIMIT", "100"]
        ),
        5
    );
    assert_eq!(int(&mut c, &["SINTERCARD", "2", "{t}a", "{t}missing"]), 0);
    for (args, e) in [
        (
            &["SINTERCARD", "0", "{t}a"][..],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["SINTERCARD", "x", "{t}a"],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["SINTERCARD", "-1", "{t}a"],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["SINTERCARD", "2", "{t}a"],
            "ERR Number of keys can't be greater than number of args",
        ),
        (&["SINTERCARD", "1", "{t}a", "LIMIT"], "ERR syntax error"),
        (&["SINTERCARD", "1", "{t}a", "{t}b"], "ERR syntax error"),
        (
            &["SINTERCARD", "1", "{t}a", "LIMIT", "-1"],
            "ERR LIMIT can't be negative",
        ),
        (
            &["SINTERCARD", "1", "{t}a", "LIMIT", "x"],
            "ERR LIMIT can't be negative",
        ),
    ] {
        assert_eq!(err(&mut c, args), e, "{args:?}");
    }

    // STORE: the destination is replaced whatever it held, and its TTL goes.
    run::<()>(&mut c, &["SET", "{t}d", "a string"]).unwrap();
    run::<i64>(&mut c, &["EXPIRE", "{t}d", "1000"]).unwrap();
    assert_eq!(
        int(&mut c, &["SINTERSTORE", "{t}d", "{t}a", "{t}b", "{t}c"]),
        3
    );
    assert_eq!(members(&mut c, "{t}d"), set_of(&["3", "4", "x"]));
    assert_eq!(int(&mut c, &["TTL", "{t}d"]), -1);
    assert_eq!(int(&mut c, &["SUNIONSTORE", "{t}d", "{t}a", "{t}c"]), 6);
    assert_eq!(
        members(&mut c, "{t}d"),
        set_of(&["1", "2", "3", "4", "x", "z"])
    );
    assert_eq!(int(&mut c, &["SDIFFSTORE", "{t}d", "{t}b", "{t}a"]), 2);
    assert_eq!(members(&mut c, "{t}d"), set_of(&["5", "y"]));
    // A source may be the destination.
    assert_eq!(int(&mut c, &["SUNIONSTORE", "{t}d", "{t}d", "{t}c"]), 6);
    assert_eq!(
        members(&mut c, "{t}d"),
        set_of(&["5", "y", "3", "4", "x", "z"])
    );
    // An empty result deletes the destination.
    for args in [
        &["SINTERSTORE", "{t}d", "{t}a", "{t}missing"][..],
        &["SUNIONSTORE", "{t}d", "{t}missing"],
        &["SDIFFSTORE", "{t}d", "{t}a", "{t}a"],
        &["SINTERSTORE", "{t}d", "{t}a", "{t}b", "{t}c", "{t}d"],
    ] {
        sadd(&mut c, "{t}d", &strings(["old"]));
        assert_eq!(int(&mut c, args), 0, "{args:?}");
        assert_eq!(int(&mut c, &["EXISTS", "{t}d"]), 0, "{args:?}");
    }
    assert_eq!(int(&mut c, &["SINTERSTORE", "{t}d", "{t}missing"]), 0);
}

#[test]
fn spop_and_srandmember() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for (key, items) in [
        ("ints", strings(0..50)),
        ("lp", strings((0..50).map(|i| format!("m{i}")))),
        ("ht", strings((0..500).map(|i| format!("m{i}")))),
    ] {
        sadd(&mut c, key, &items);
        let all: BTreeSet<String> = items.iter().cloned().collect();
        let n = all.len();
        // SRANDMEMBER: distinct members for a positive count, all of them past the size.
        for count in [1, 5, n / 2, n - 1, n, n + 10] {
            let got: Vec<String> = run(&mut c, &["SRANDMEMBER", key, &count.to_string()]).unwrap();
            let distinct: BTreeSet<String> = got.iter().cloned().collect();
            assert_eq!(got.len(), count.min(n), "{key} {count}");
            assert_eq!(distinct.len(), got.len(), "{key} {count}: repeats");
            assert!(distinct.is_subset(&all));
        }
        let huge: Vec<String> = run(&mut c, &["SRANDMEMBER", key, "9223372036854775807"]).unwrap();
        assert_eq!(huge.len(), n);
        // Negative: exactly that many picks, repeats allowed, every one a member.
        let got: Vec<String> = run(&mut c, &["SRANDMEMBER", key, "-3000"]).unwrap();
        assert_eq!(got.len(), 3000);
        assert!(got.iter().all(|m| all.contains(m)));
        let one: String = run(&mut c, &["SRANDMEMBER", key]).unwrap();
        assert!(all.contains(&one));
        assert_eq!(
            int(&mut c, &["SCARD", key]),
            n as i64,
            "reads change nothing"
        );

        // SPOP: the members popped are gone, the rest stay.
        let popped: Vec<String> = run(&mut c, &["SPOP", key, "7"]).unwrap();
        let popped_set: BTreeSet<String> = popped.iter().cloned().collect();
        assert_eq!(popped_set.len(), 7);
        let one: String = run(&mut c, &["SPOP", key]).unwrap();
        assert!(!popped_set.contains(&one));
        let left = members(&mut c, key);
        assert_eq!(left.len(), n - 8);
        assert!(left.is_disjoint(&popped_set) && !left.contains(&one));
        let mut union = left.clone();
        union.extend(popped_set);
        union.insert(one);
        assert_eq!(union, all);
        // Most of what is left, then more than is left: the key goes.
        let most: Vec<String> = run(&mut c, &["SPOP", key, &(n - 10).to_string()]).unwrap();
        assert_eq!(most.len(), n - 10);
        assert_eq!(int(&mut c, &["SCARD", key]), 2);
        let rest: Vec<String> = run(&mut c, &["SPOP", key, "100"]).unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(int(&mut c, &["EXISTS", key]), 0);
    }

    // SRANDMEMBER with a negative count is fair: 3 members, 3000 picks.
    sadd(&mut c, "three", &strings(["a", "b", "c"]));
    let picks: Vec<String> = run(&mut c, &["SRANDMEMBER", "three", "-3000"]).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in picks {
        *counts.entry(p).or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(
        counts.values().all(|&n| (700..1300).contains(&n)),
        "{counts:?}"
    );
    // The last member popped takes the key with it.
    sadd(&mut c, "one", &strings(["only"]));
    assert_eq!(run::<String>(&mut c, &["SPOP", "one"]).unwrap(), "only");
    assert_eq!(int(&mut c, &["EXISTS", "one"]), 0);

    // Popping a whole listpack answers as Valkey's SUNION of it would: integers first,
    // ascending (it rebuilds the set from an intset).
    sadd(&mut c, "lpints", &strings(["x", "2", "1"]));
    run::<i64>(&mut c, &["SREM", "lpints", "x"]).unwrap();
    assert_eq!(encoding(&mut c, "lpints"), "listpack");
    let all: Vec<String> = run(&mut c, &["SPOP", "lpints", "5"]).unwrap();
    assert_eq!(all, ["1", "2"]);

    // Missing keys, count 0 and errors, in Valkey's order.
    assert_eq!(
        run::<Option<String>>(&mut c, &["SPOP", "missing"]).unwrap(),
        None
    );
    assert!(
        run::<Vec<String>>(&mut c, &["SPOP", "missing", "3"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(&mut c, &["SPOP", "three", "0"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(&mut c, &["SRANDMEMBER", "three", "0"])
            .unwrap()
            .is_empty()
    );
    assert!(
        run::<Vec<String>>(&mut c, &["SRANDMEMBER", "missing", "-3"])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["SRANDMEMBER", "missing"]).unwrap(),
        None
    );
    for (args, e) in [
        (
            &["SPOP", "three", "-1"][..],
            "ERR value is out of range, must be positive",
        ),
        (
            &["SPOP", "three", "x"],
            "ERR value is out of range, must be positive",
        ),
        (
            &["SPOP", "missing", "-1"],
            "ERR value is out of range, must be positive",
        ),
        (&["SPOP", "three", "1", "2"], "ERR syntax error"),
        (
            &["SRANDMEMBER", "three", "x"],
            "ERR value is not an integer or out of range",
        ),
        (&["SRANDMEMBER", "three", "1", "2"], "ERR syntax error"),
        (
            &["SRANDMEMBER", "three", "-9223372036854775808"],
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ),
    ] {
        assert_eq!(err(&mut c, args), e, "{args:?}");
    }
    assert_eq!(int(&mut c, &["SCARD", "three"]), 3);
}

#[test]
fn smove_moves_one_member() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    sadd(&mut c, "{t}src", &strings(["a", "b"]));
    sadd(&mut c, "{t}dst", &strings(["b", "c"]));
    assert_eq!(int(&mut c, &["SMOVE", "{t}src", "{t}dst", "a"]), 1);
    assert_eq!(members(&mut c, "{t}src"), set_of(&["b"]));
    assert_eq!(members(&mut c, "{t}dst"), set_of(&["a", "b", "c"]));
    // Already in the destination: it still leaves the source (and takes the key with it).
    assert_eq!(int(&mut c, &["SMOVE", "{t}src", "{t}dst", "b"]), 1);
    assert_eq!(int(&mut c, &["EXISTS", "{t}src"]), 0);
    assert_eq!(members(&mut c, "{t}dst"), set_of(&["a", "b", "c"]));
    assert_eq!(int(&mut c, &["SMOVE", "{t}dst", "{t}new", "5"]), 0);
    assert_eq!(int(&mut c, &["SMOVE", "{t}dst", "{t}new", "c"]), 1);
    assert_eq!(members(&mut c, "{t}new"), set_of(&["c"]));
    assert_eq!(encoding(&mut c, "{t}new"), "listpack");
    sadd(&mut c, "{t}ints", &strings([1, 2]));
    assert_eq!(int(&mut c, &["SMOVE", "{t}ints", "{t}fresh", "1"]), 1);
    assert_eq!(encoding(&mut c, "{t}fresh"), "intset");
    // Same key: 1 if the member is there, nothing moves.
    assert_eq!(int(&mut c, &["SMOVE", "{t}dst", "{t}dst", "a"]), 1);
    assert_eq!(int(&mut c, &["SMOVE", "{t}dst", "{t}dst", "z"]), 0);
    assert_eq!(members(&mut c, "{t}dst"), set_of(&["a", "b"]));
    // A missing source answers 0 before any type check; then both types are checked.
    run::<()>(&mut c, &["SET", "{t}str", "x"]).unwrap();
    assert_eq!(int(&mut c, &["SMOVE", "{t}missing", "{t}str", "a"]), 0);
    assert_eq!(err(&mut c, &["SMOVE", "{t}dst", "{t}str", "a"]), WRONGTYPE);
    assert_eq!(err(&mut c, &["SMOVE", "{t}dst", "{t}str", "zz"]), WRONGTYPE);
    assert_eq!(err(&mut c, &["SMOVE", "{t}str", "{t}dst", "a"]), WRONGTYPE);
    assert_eq!(members(&mut c, "{t}dst"), set_of(&["a", "b"]));
}

fn sscan_all(c: &mut Conn, key: &str, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 100_000, "SSCAN did not terminate");
        let mut args = vec!["SSCAN", key, &cursor];
        args.extend_from_slice(extra);
        let (next, items): (String, Vec<String>) = run(c, &args).unwrap();
        seen.extend(items);
        if next == "0" {
            return (seen, calls);
        }
        cursor = next;
    }
}

#[test]
fn sscan_small_and_large_sets() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Intsets and listpacks come whole, cursor 0, whatever the COUNT or the cursor.
    sadd(&mut c, "ints", &strings(0..100));
    sadd(&mut c, "lp", &strings((0..100).map(|i| format!("m{i}"))));
    for key in ["ints", "lp"] {
        let (next, items): (String, Vec<String>) =
            run(&mut c, &["SSCAN", key, "0", "COUNT", "1"]).unwrap();
        assert_eq!((next.as_str(), items.len()), ("0", 100), "{key}");
        let (next, items): (String, Vec<String>) = run(&mut c, &["SSCAN", key, "77"]).unwrap();
        assert_eq!((next.as_str(), items.len()), ("0", 100), "{key}");
    }
    let (items, _) = sscan_all(&mut c, "ints", &["MATCH", "1*"]);
    assert_eq!(items.len(), 11, "1 and 10..19");
    // A table by pages; every member exactly as SMEMBERS has them.
    let all = strings((0..5000).map(|i| format!("member:{i}")));
    sadd(&mut c, "big", &all);
    assert_eq!(encoding(&mut c, "big"), "hashtable");
    let (items, calls) = sscan_all(&mut c, "big", &["COUNT", "100"]);
    assert!(calls > 10, "paged ({calls} calls)");
    let seen: BTreeSet<String> = items.into_iter().collect();
    assert_eq!(seen, all.iter().cloned().collect());
    let (items, _) = sscan_all(&mut c, "big", &["MATCH", "member:42*", "COUNT", "1000"]);
    let matched: BTreeSet<String> = items.into_iter().collect();
    assert_eq!(matched.len(), 1 + 10 + 100, "42, 420..429, 4200..4299");
    assert!(matched.iter().all(|m| m.starts_with("member:42")));

    // Errors: the cursor first, then the key, then the options.
    run::<()>(&mut c, &["SET", "str", "x"]).unwrap();
    for (args, e) in [
        (&["SSCAN", "big", "x"][..], "ERR invalid cursor"),
        (&["SSCAN", "str", "x"], "ERR invalid cursor"),
        (&["SSCAN", "str", "0"], WRONGTYPE),
        (&["SSCAN", "str", "0", "BOGUS"], WRONGTYPE),
        (&["SSCAN", "big", "0", "COUNT", "0"], "ERR syntax error"),
        (
            &["SSCAN", "big", "0", "COUNT", "x"],
            "ERR value is not an integer or out of range",
        ),
        (&["SSCAN", "big", "0", "MATCH"], "ERR syntax error"),
        (&["SSCAN", "big", "0", "TYPE", "set"], "ERR syntax error"),
        (
            &["SSCAN", "big", "0", "NOVALUES"],
            "ERR NOVALUES option can only be used in HSCAN",
        ),
        (
            &["SSCAN", "big", "0", "NOSCORES"],
            "ERR NOSCORES option can only be used in ZSCAN",
        ),
    ] {
        assert_eq!(err(&mut c, args), e, "{args:?}");
    }
    let (next, items): (String, Vec<String>) =
        run(&mut c, &["SSCAN", "missing", "0", "BOGUS"]).unwrap();
    assert_eq!((next.as_str(), items.len()), ("0", 0));
}

#[test]
fn wrongtype_everywhere() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(&mut c, &["SET", "{t}str", "x"]).unwrap();
    sadd(&mut c, "{t}s", &strings(["a"]));
    for args in [
        &["SADD", "{t}str", "a"][..],
        &["SREM", "{t}str", "a"],
        &["SCARD", "{t}str"],
        &["SISMEMBER", "{t}str", "a"],
        &["SMISMEMBER", "{t}str", "a"],
        &["SMEMBERS", "{t}str"],
        &["SPOP", "{t}str"],
        &["SPOP", "{t}str", "0"],
        &["SRANDMEMBER", "{t}str"],
        &["SRANDMEMBER", "{t}str", "0"],
        &["SINTER", "{t}s", "{t}str"],
        // Every source's type is checked, even after a missing one.
        &["SINTER", "{t}missing", "{t}str"],
        &["SINTERSTORE", "{t}d", "{t}missing", "{t}str"],
        &["SINTERCARD", "2", "{t}missing", "{t}str"],
        &["SUNION", "{t}s", "{t}missing", "{t}str"],
        &["SUNIONSTORE", "{t}d", "{t}str"],
        &["SDIFF", "{t}missing", "{t}str"],
        &["SDIFFSTORE", "{t}d", "{t}s", "{t}str"],
        &["SSCAN", "{t}str", "0"],
    ] {
        assert_eq!(err(&mut c, args), WRONGTYPE, "{args:?}");
    }
    // A failed STORE leaves the destination alone.
    sadd(&mut c, "{t}d", &strings(["keep"]));
    assert_eq!(
        err(&mut c, &["SUNIONSTORE", "{t}d", "{t}s", "{t}str"]),
        WRONGTYPE
    );
    assert_eq!(members(&mut c, "{t}d"), set_of(&["keep"]));
    assert_eq!(run::<String>(&mut c, &["GET", "{t}str"]).unwrap(), "x");
}

#[test]
fn sintercard_names_its_keys_by_count() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let keys: Vec<String> = run(
        &mut c,
        &[
            "COMMAND",
            "GETKEYS",
            "SINTERCARD",
            "2",
            "a",
            "b",
            "LIMIT",
            "1",
        ],
    )
    .unwrap();
    assert_eq!(keys, ["a", "b"]);
    let keys: Vec<String> = run(
        &mut c,
        &["COMMAND", "GETKEYS", "SINTERSTORE", "d", "a", "b"],
    )
    .unwrap();
    assert_eq!(keys, ["d", "a", "b"]);
    let keys: Vec<String> = run(&mut c, &["COMMAND", "GETKEYS", "SMOVE", "a", "b", "m"]).unwrap();
    assert_eq!(keys, ["a", "b"]);
    let info: Vec<Value> = run(&mut c, &["COMMAND", "INFO", "SINTERCARD"]).unwrap();
    let Value::Array(row) = &info[0] else {
        panic!("{info:?}")
    };
    let flags: Vec<String> = redis::from_redis_value(row[2].clone()).unwrap();
    assert_eq!(flags, ["readonly", "movablekeys"]);
}

#[test]
fn sets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
    let mut c = s.conn();
    let table = strings((0..1000).map(|i| format!("member:{i}")));
    sadd(&mut c, "ints", &strings(0..100));
    sadd(&mut c, "lp", &strings(["b", "a", "c"]));
    sadd(&mut c, "ht", &table);
    sadd(&mut c, "long", &strings(["short", &"L".repeat(100)]));
    sadd(&mut c, "ttl", &strings(["x"]));
    run::<i64>(&mut c, &["EXPIRE", "ttl", "1000"]).unwrap();
    sadd(&mut c, "gone", &strings(["x"]));
    run::<i64>(&mut c, &["SREM", "gone", "x"]).unwrap();
    sadd(&mut c, "popped", &strings(0..20));
    let popped: Vec<String> = run(&mut c, &["SPOP", "popped", "5"]).unwrap();
    sadd(&mut c, "{t}a", &strings(0..10));
    sadd(&mut c, "{t}b", &strings(5..15));
    run::<i64>(&mut c, &["SINTERSTORE", "{t}d", "{t}a", "{t}b"]).unwrap();
    let before: Vec<(String, BTreeSet<String>, String)> =
        ["ints", "lp", "ht", "long", "ttl", "popped", "{t}d"]
            .iter()
            .map(|k| (k.to_string(), members(&mut c, k), encoding(&mut c, k)))
            .collect();
    drop(c);
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    for (k, m, enc) in &before {
        assert_eq!(&members(&mut c, k), m, "{k}");
        assert_eq!(&encoding(&mut c, k), enc, "{k}");
    }
    let v: Vec<String> = run(&mut c, &["SMEMBERS", "lp"]).unwrap();
    assert_eq!(v, ["b", "a", "c"], "a listpack keeps its order");
    assert!(int(&mut c, &["TTL", "ttl"]) > 0);
    assert_eq!(int(&mut c, &["EXISTS", "gone"]), 0);
    assert_eq!(int(&mut c, &["SCARD", "popped"]), 15);
    assert!(
        popped
            .iter()
            .all(|m| int(&mut c, &["SISMEMBER", "popped", m]) == 0)
    );
}

/// The algebra on two sets of a million members each (half in common): every STORE result
/// is exact. Persistence off: this is about the commands, not the disk.
#[test]
fn million_member_store_operations_are_exact() {
    const N: usize = 1_000_000;
    let s = Server::start(&["--appendonly", "no"]);
    let mut c = s.conn();
    let fill = |c: &mut Conn, key: &str, range: std::ops::Range<usize>| {
        let mut p = redis::pipe();
        for chunk in range.collect::<Vec<_>>().chunks(10_000) {
            p.cmd("SADD")
                .arg(key)
                .arg(
                    chunk
                        .iter()
                        .map(|i| format!("member:{i}"))
                        .collect::<Vec<_>>(),
                )
                .ignore();
        }
        p.query::<()>(c).unwrap();
    };
    fill(&mut c, "{big}a", 0..N);
    fill(&mut c, "{big}b", N / 2..N + N / 2);
    assert_eq!(int(&mut c, &["SCARD", "{big}a"]), N as i64);
    assert_eq!(
        int(&mut c, &["SINTERSTORE", "{big}i", "{big}a", "{big}b"]),
        (N / 2) as i64
    );
    assert_eq!(
        int(&mut c, &["SUNIONSTORE", "{big}u", "{big}a", "{big}b"]),
        (N + N / 2) as i64
    );
    assert_eq!(
        int(&mut c, &["SDIFFSTORE", "{big}d", "{big}a", "{big}b"]),
        (N / 2) as i64
    );
    assert_eq!(
        int(&mut c, &["SINTERCARD", "2", "{big}a", "{big}b"]),
        (N / 2) as i64
    );
    assert_eq!(
        int(
            &mut c,
            &["SINTERCARD", "2", "{big}a", "{big}b", "LIMIT", "10"]
        ),
        10
    );
    for (key, i, there) in [
        ("{big}i", N / 2, true),
        ("{big}i", N - 1, true),
        ("{big}i", N / 2 - 1, false),
        ("{big}i", N, false),
        ("{big}u", 0, true),
        ("{big}u", N + N / 2 - 1, true),
        ("{big}d", 0, true),
        ("{big}d", N / 2 - 1, true),
        ("{big}d", N / 2, false),
    ] {
        assert_eq!(
            int(&mut c, &["SISMEMBER", key, &format!("member:{i}")]),
            there as i64,
            "{key} member:{i}"
        );
    }
    // Exact contents, counted on the server (reading a million members back through a
    // debug-built client would be most of the test): with the sizes above, these overlaps
    // pin every result down — i = a ∩ b, u = a ∪ b, d = a \ b.
    let card = |c: &mut Conn, x: &str, y: &str| int(c, &["SINTERCARD", "2", x, y]);
    assert_eq!(card(&mut c, "{big}i", "{big}a"), (N / 2) as i64);
    assert_eq!(card(&mut c, "{big}i", "{big}b"), (N / 2) as i64);
    assert_eq!(card(&mut c, "{big}u", "{big}a"), N as i64);
    assert_eq!(card(&mut c, "{big}u", "{big}b"), N as i64);
    assert_eq!(card(&mut c, "{big}d", "{big}a"), (N / 2) as i64);
    assert_eq!(card(&mut c, "{big}d", "{big}b"), 0);
    // SPOP from the big union takes exactly what it names.
    let popped: Vec<String> = run(&mut c, &["SPOP", "{big}u", "1000"]).unwrap();
    assert_eq!(popped.iter().collect::<BTreeSet<_>>().len(), 1000);
    assert_eq!(int(&mut c, &["SCARD", "{big}u"]), (N + N / 2 - 1000) as i64);
    for m in popped.iter().take(20) {
        assert_eq!(int(&mut c, &["SISMEMBER", "{big}u", m]), 0);
        // The sources keep it: both when it was in the intersection.
        let i: usize = m["member:".len()..].parse().unwrap();
        let in_sources =
            int(&mut c, &["SISMEMBER", "{big}a", m]) + int(&mut c, &["SISMEMBER", "{big}b", m]);
        assert_eq!(
            in_sources,
            if (N / 2..N).contains(&i) { 2 } else { 1 },
            "{m}"
        );
    }
}
