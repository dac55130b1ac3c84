//! Hash field expiry (Valkey 9.0) through a real client: HEXPIRE and its siblings, the HTTL
//! family, HPERSIST, HGETEX, HSETEX — replies and error texts as Valkey's t_hash.c gives them
//! — and what field TTLs do to the rest of the server: expired fields are invisible to every
//! hash command and reclaimed even when nobody reads them, HSET drops a TTL and HINCRBY keeps
//! it, RENAME/COPY keep them, OBJECT ENCODING and INFO report them, they survive a restart,
//! and in a cluster they replicate and the fields go on every replica.
//!
//! Expiry is polled for with generous deadlines; nothing asserts on how fast it happens.

use crate::common;

use std::collections::BTreeSet;

use common::cluster::Cluster;
use common::{DEADLINE, Server, err, int, now_ms, run, wait_until};
use redis::Value;
use tallykv::cluster::key_slot;

/// Runs a command that replies with an array of integers.
fn ints(c: &mut redis::Connection, args: &[&str]) -> Vec<i64> {
    run::<Vec<i64>>(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that replies with an array of bulk strings or nils.
fn values(c: &mut redis::Connection, args: &[&str]) -> Vec<Option<String>> {
    run::<Vec<Option<String>>>(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn strings(c: &mut redis::Connection, args: &[&str]) -> BTreeSet<String> {
    run::<Vec<String>>(c, args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .into_iter()
        .collect()
}

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    run(c, &["OBJECT", "ENCODING", key]).unwrap()
}

/// A numeric field of INFO.
fn info_num(c: &mut redis::Connection, name: &str) -> u64 {
    let info: String = run(c, &["INFO", "everything"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {name}"))
}

/// INFO keyspace's `db0:` line (None when the keyspace is empty).
fn keyspace(c: &mut redis::Connection) -> Option<String> {
    let info: String = run(c, &["INFO", "keyspace"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("db0:"))
        .map(str::to_string)
}

/// Waits until `field` of `key` reads as gone (HEXISTS 0).
fn wait_field_gone(c: &mut redis::Connection, key: &str, field: &str) {
    let gone = wait_until(DEADLINE, || int(c, &["HEXISTS", key, field]) == 0);
    assert!(gone, "{key}.{field} never expired");
}

#[test]
fn hexpire_family_replies() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]);
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "100", "FIELDS", "2", "a", "nope"]),
        [1, -2]
    );
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "nokey", "100", "FIELDS", "2", "a", "b"]
        ),
        [-2, -2]
    );
    // NX: only fields without a TTL; XX: only fields with one.
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "200", "NX", "FIELDS", "2", "a", "b"]
        ),
        [0, 1]
    );
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "300", "XX", "FIELDS", "2", "a", "c"]
        ),
        [1, 0]
    );
    // GT: no TTL counts as infinite, so never greater; LT: always less.
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "10", "GT", "FIELDS", "1", "c"]),
        [0]
    );
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "400", "GT", "FIELDS", "1", "a"]),
        [1]
    );
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "500", "LT", "FIELDS", "1", "a"]),
        [0]
    );
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "50", "LT", "FIELDS", "1", "a"]),
        [1]
    );
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "60", "lt", "fields", "1", "c"]),
        [1]
    );
    // The absolute forms store exactly the time given.
    let at_s = now_ms() / 1000 + 1000;
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIREAT", "h", &at_s.to_string(), "FIELDS", "1", "a"]
        ),
        [1]
    );
    assert_eq!(
        ints(&mut c, &["HEXPIRETIME", "h", "FIELDS", "1", "a"]),
        [at_s]
    );
    assert_eq!(
        ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "a"]),
        [at_s * 1000]
    );
    let at_ms = now_ms() + 123_456_789;
    assert_eq!(
        ints(
            &mut c,
            &["HPEXPIREAT", "h", &at_ms.to_string(), "FIELDS", "1", "b"]
        ),
        [1]
    );
    assert_eq!(
        ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "b"]),
        [at_ms]
    );
    assert_eq!(
        ints(&mut c, &["HPEXPIRE", "h", "100000", "FIELDS", "1", "b"]),
        [1]
    );
    let pttl = ints(&mut c, &["HPTTL", "h", "FIELDS", "1", "b"])[0];
    assert!(
        (100_000 - DEADLINE.as_millis() as i64..=100_000).contains(&pttl),
        "{pttl}"
    );
    // A field named twice: the second mention sees the first one's effect.
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "700", "NX", "FIELDS", "2", "c", "c"]
        ),
        [0, 0]
    );
    int(&mut c, &["HSET", "h", "d", "4"]);
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "700", "NX", "FIELDS", "2", "d", "d"]
        ),
        [1, 0]
    );
    // A time at or before now deletes the field (2), and the key with its last field; the
    // field named again is gone (-2).
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "0", "FIELDS", "3", "a", "a", "zz"]
        ),
        [2, -2, -2]
    );
    let past = (now_ms() - 10_000).to_string();
    assert_eq!(
        ints(
            &mut c,
            &["HPEXPIREAT", "h", &past, "FIELDS", "3", "b", "c", "d"]
        ),
        [2, 2, 2]
    );
    assert_eq!(int(&mut c, &["EXISTS", "h"]), 0);
    // Conditions are checked before the deletion.
    int(&mut c, &["HSET", "g", "f", "v"]);
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "g", "0", "XX", "FIELDS", "1", "f"]),
        [0]
    );
    assert_eq!(run::<String>(&mut c, &["HGET", "g", "f"]).unwrap(), "v");
}

#[test]
fn hexpire_family_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["HSET", "h", "f", "v"]);
    run::<()>(&mut c, &["SET", "s", "x"]).unwrap();
    let numfields =
        "ERR numfields should be greater than 0 and match the provided number of fields";
    for (args, want) in [
        (
            &["HEXPIRE", "h", "10"][..],
            "ERR wrong number of arguments for 'hexpire' command",
        ),
        (
            &["HEXPIRE", "h", "10", "FIELDS", "0"],
            "ERR wrong number of arguments for 'hexpire' command",
        ),
        (&["HEXPIRE", "h", "10", "FIELDS", "0", "f"], numfields),
        (&["HEXPIRE", "h", "10", "FIELDS", "2", "f"], numfields),
        (&["HEXPIRE", "h", "10", "FIELDS", "1", "f", "g"], numfields),
        (&["HEXPIRE", "h", "10", "FIELDS", "-1", "f"], numfields),
        (&["HEXPIRE", "h", "10", "NX", "NX", "FIELDS"], numfields),
        (&["HEXPIRE", "h", "10", "1", "f", "g"], numfields),
        (
            &["HEXPIRE", "h", "10", "FIELDS", "x", "f"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["HEXPIRE", "h", "abc", "FIELDS", "1", "f"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["HEXPIRE", "h", "-5", "FIELDS", "1", "f"],
            "ERR invalid expire time in 'hexpire' command",
        ),
        (
            &["HPEXPIREAT", "h", "-1", "FIELDS", "1", "f"],
            "ERR invalid expire time in 'hpexpireat' command",
        ),
        (
            &["HEXPIREAT", "h", "9223372036854775807", "FIELDS", "1", "f"],
            "ERR invalid expire time in 'hexpireat' command",
        ),
        (
            &["HPEXPIRE", "h", "9223372036854775807", "FIELDS", "1", "f"],
            "ERR invalid expire time in 'hpexpire' command",
        ),
        (
            &["HEXPIRE", "h", "10", "NX", "XX", "FIELDS", "1", "f"],
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ),
        (
            &["HEXPIRE", "h", "10", "GT", "LT", "FIELDS", "1", "f"],
            "ERR GT and LT options at the same time are not compatible",
        ),
        (
            &["HEXPIRE", "h", "10", "FOO", "FIELDS", "1", "f"],
            "ERR Unsupported option FOO",
        ),
        (
            &["HEXPIRE", "s", "10", "FIELDS", "1", "f"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        // Valkey checks the time before the type.
        (
            &["HEXPIRE", "s", "-1", "FIELDS", "1", "f"],
            "ERR invalid expire time in 'hexpire' command",
        ),
        (
            &["HTTL", "h", "FIELDS", "1"],
            "ERR wrong number of arguments for 'httl' command",
        ),
        (&["HTTL", "h", "FIELDS", "2", "f"], "ERR syntax error"),
        (&["HPTTL", "h", "FIELDS", "0", "f"], "ERR syntax error"),
        (
            &["HEXPIRETIME", "h", "FIELDS", "x", "f"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["HPEXPIRETIME", "s", "FIELDS", "1", "f"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        (&["HPERSIST", "h", "FIELDS", "2", "f"], numfields),
        (
            &["HPERSIST", "s", "FIELDS", "1", "f"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

#[test]
fn httl_family_and_hpersist() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["HSET", "h", "a", "1", "b", "2"]);
    assert_eq!(
        ints(&mut c, &["HTTL", "h", "FIELDS", "3", "a", "b", "x"]),
        [-1, -1, -2]
    );
    assert_eq!(
        ints(&mut c, &["HPTTL", "missing", "FIELDS", "1", "a"]),
        [-2]
    );
    ints(&mut c, &["HEXPIRE", "h", "1000", "FIELDS", "1", "a"]);
    let ttl = ints(&mut c, &["HTTL", "h", "FIELDS", "2", "a", "b"]);
    assert!(common::ttl_after(1000).contains(&ttl[0]), "{ttl:?}");
    assert_eq!(ttl[1], -1);
    // Valkey reads the count at its position whatever the keyword says.
    assert_eq!(ints(&mut c, &["HTTL", "h", "ANYTHING", "1", "b"]), [-1]);
    assert_eq!(
        ints(
            &mut c,
            &["HPERSIST", "h", "FIELDS", "4", "a", "b", "x", "a"]
        ),
        [1, -1, -2, -1]
    );
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "a"]), [-1]);
    assert_eq!(
        ints(&mut c, &["HPERSIST", "nokey", "FIELDS", "1", "a"]),
        [-2]
    );
    // After HPERSIST a new TTL takes.
    ints(&mut c, &["HEXPIRE", "h", "2000", "FIELDS", "1", "a"]);
    assert!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "a"])[0] > 1000);
}

#[test]
fn hgetex_replies_values_and_changes_ttls() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["HSET", "h", "f1", "v1", "f3", "v3"]);
    // No option: HMGET in the FIELDS syntax.
    assert_eq!(
        values(&mut c, &["HGETEX", "h", "FIELDS", "2", "f1", "nope"]),
        [Some("v1".to_string()), None]
    );
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f1"]), [-1]);
    assert_eq!(
        values(
            &mut c,
            &["HGETEX", "h", "EX", "1000", "FIELDS", "3", "f1", "f2", "f3"]
        ),
        [Some("v1".to_string()), None, Some("v3".to_string())]
    );
    assert!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f3"])[0] > 0);
    assert_eq!(
        ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f2"]),
        [-2],
        "not created"
    );
    let at = now_ms() + 5_000_000;
    values(
        &mut c,
        &["HGETEX", "h", "PXAT", &at.to_string(), "FIELDS", "1", "f1"],
    );
    assert_eq!(
        ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "f1"]),
        [at]
    );
    let at_s = now_ms() / 1000 + 7000;
    values(
        &mut c,
        &[
            "HGETEX",
            "h",
            "EXAT",
            &at_s.to_string(),
            "FIELDS",
            "1",
            "f1",
        ],
    );
    assert_eq!(
        ints(&mut c, &["HEXPIRETIME", "h", "FIELDS", "1", "f1"]),
        [at_s]
    );
    values(
        &mut c,
        &["HGETEX", "h", "PX", "9000000", "FIELDS", "1", "f1"],
    );
    assert!(ints(&mut c, &["HPTTL", "h", "FIELDS", "1", "f1"])[0] > 8_000_000);
    assert_eq!(
        values(&mut c, &["HGETEX", "h", "PERSIST", "FIELDS", "1", "f1"]),
        [Some("v1".to_string())]
    );
    assert_eq!(
        ints(&mut c, &["HTTL", "h", "FIELDS", "2", "f1", "f3"])[0],
        -1
    );
    assert!(
        ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f3"])[0] > 0,
        "f3 keeps its TTL"
    );
    // A time now or past: the values, then the fields are gone (a field named twice is
    // gone for its second mention), and the key with them.
    assert_eq!(
        values(
            &mut c,
            &["HGETEX", "h", "EX", "0", "FIELDS", "3", "f1", "f1", "f3"]
        ),
        [Some("v1".to_string()), None, Some("v3".to_string())]
    );
    assert_eq!(int(&mut c, &["EXISTS", "h"]), 0);
    assert_eq!(
        values(
            &mut c,
            &["HGETEX", "h", "EX", "10", "FIELDS", "2", "a", "b"]
        ),
        [None, None]
    );
    run::<()>(&mut c, &["SET", "s", "x"]).unwrap();
    let numfields =
        "ERR numfields should be greater than 0 and match the provided number of fields";
    for (args, want) in [
        (
            &["HGETEX", "h", "EX", "60", "PX", "1000", "FIELDS", "1", "f"][..],
            "ERR syntax error",
        ),
        (
            &["HGETEX", "h", "EX", "FIELDS", "1", "f"],
            "ERR syntax error",
        ),
        (
            &["HGETEX", "h", "PERSIST", "EX", "1", "FIELDS", "1", "f"],
            "ERR syntax error",
        ),
        (
            &["HGETEX", "h", "KEEPTTL", "FIELDS", "1", "f"],
            "ERR syntax error",
        ),
        (
            &["HGETEX", "h", "EX", "-10", "FIELDS", "1", "f"],
            "ERR invalid expire time in 'hgetex' command",
        ),
        (
            &["HGETEX", "h", "EX", "abc", "FIELDS", "1", "f"],
            "ERR value is not an integer or out of range",
        ),
        (&["HGETEX", "h", "EX", "10", "1", "f"], numfields),
        (&["HGETEX", "h", "EX", "10", "FIELDS", "2", "f"], numfields),
        (&["HGETEX", "h", "EX", "10", "FIELDS", "0", "f"], numfields),
        (&["HGETEX", "h", "PERSIST", "PERSIST", "FIELDS"], numfields),
        (
            &["HGETEX", "s", "EX", "10", "FIELDS", "1", "f"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        // The type is checked before the time.
        (
            &["HGETEX", "s", "EX", "-1", "FIELDS", "1", "f"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

#[test]
fn hsetex_sets_with_expiry_and_conditions() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // No option: HSET in the FIELDS syntax, replying 1.
    assert_eq!(
        int(
            &mut c,
            &["HSETEX", "h", "FIELDS", "2", "f1", "v1", "f2", "v2"]
        ),
        1
    );
    assert_eq!(encoding(&mut c, "h"), "listpack");
    assert_eq!(
        int(
            &mut c,
            &["HSETEX", "h", "EX", "100", "FIELDS", "1", "f2", "x"]
        ),
        1
    );
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    assert!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f2"])[0] > 0);
    // KEEPTTL keeps each field's own, and gives none to a new or persistent field.
    let at = ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "f2"])[0];
    assert_eq!(
        int(
            &mut c,
            &[
                "HSETEX", "h", "KEEPTTL", "FIELDS", "3", "f2", "y", "f1", "z", "f3", "w"
            ]
        ),
        1
    );
    assert_eq!(
        ints(
            &mut c,
            &["HPEXPIRETIME", "h", "FIELDS", "3", "f2", "f1", "f3"]
        ),
        [at, -1, -1]
    );
    assert_eq!(
        values(&mut c, &["HMGET", "h", "f1", "f2", "f3"]),
        [Some("z".into()), Some("y".into()), Some("w".into())]
    );
    // A plain write drops the TTL again; another time replaces it.
    assert_eq!(int(&mut c, &["HSETEX", "h", "FIELDS", "1", "f2", "q"]), 1);
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f2"]), [-1]);
    int(
        &mut c,
        &["HSETEX", "h", "EX", "100", "FIELDS", "1", "f2", "a"],
    );
    int(
        &mut c,
        &["HSETEX", "h", "EX", "200", "FIELDS", "1", "f2", "b"],
    );
    assert!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f2"])[0] > 100);
    // FNX: none of the fields may exist; FXX: all must. Either refuses the whole write.
    assert_eq!(
        int(
            &mut c,
            &["HSETEX", "h", "FNX", "FIELDS", "2", "f9", "1", "f1", "2"]
        ),
        0
    );
    assert_eq!(int(&mut c, &["HEXISTS", "h", "f9"]), 0);
    assert_eq!(
        int(
            &mut c,
            &[
                "HSETEX", "h", "FNX", "EX", "10", "FIELDS", "2", "n1", "1", "n2", "2"
            ]
        ),
        1
    );
    assert_eq!(
        int(
            &mut c,
            &["HSETEX", "h", "FXX", "FIELDS", "2", "f1", "1", "nope", "2"]
        ),
        0
    );
    assert_eq!(run::<String>(&mut c, &["HGET", "h", "f1"]).unwrap(), "z");
    assert_eq!(
        int(
            &mut c,
            &[
                "HSETEX", "h", "FXX", "PX", "99999", "FIELDS", "1", "f1", "9"
            ]
        ),
        1
    );
    assert_eq!(
        int(
            &mut c,
            &["HSETEX", "new", "FXX", "EX", "10", "FIELDS", "1", "x", "y"]
        ),
        0
    );
    assert_eq!(int(&mut c, &["EXISTS", "new"]), 0, "FXX creates nothing");
    assert_eq!(
        int(&mut c, &["HSETEX", "new", "FNX", "FIELDS", "1", "x", "y"]),
        1
    );
    // A time now or past deletes the fields named (and the key with its last one).
    int(&mut c, &["HSET", "d", "a", "1", "b", "2"]);
    assert_eq!(
        int(&mut c, &["HSETEX", "d", "PX", "0", "FIELDS", "1", "a", "x"]),
        1
    );
    assert_eq!(
        strings(&mut c, &["HKEYS", "d"]),
        BTreeSet::from(["b".to_string()])
    );
    assert_eq!(
        int(
            &mut c,
            &[
                "HSETEX", "d", "EXAT", "0", "FIELDS", "2", "b", "x", "zz", "y"
            ]
        ),
        1
    );
    assert_eq!(int(&mut c, &["EXISTS", "d"]), 0);
    assert_eq!(
        int(
            &mut c,
            &["HSETEX", "nothing", "EX", "0", "FIELDS", "1", "a", "b"]
        ),
        1
    );
    assert_eq!(int(&mut c, &["EXISTS", "nothing"]), 0);
    run::<()>(&mut c, &["SET", "s", "x"]).unwrap();
    let numfields =
        "ERR numfields should be greater than 0 and match the provided number of fields";
    for (args, want) in [
        (
            &["HSETEX", "h", "FNX", "FXX", "FIELDS", "1", "a", "b"][..],
            "ERR syntax error",
        ),
        (
            &[
                "HSETEX", "h", "EX", "10", "KEEPTTL", "FIELDS", "1", "a", "b",
            ],
            "ERR syntax error",
        ),
        (
            &[
                "HSETEX", "h", "KEEPTTL", "PX", "10", "FIELDS", "1", "a", "b",
            ],
            "ERR syntax error",
        ),
        (
            &["HSETEX", "h", "EX", "1", "PX", "1", "FIELDS", "1", "a", "b"],
            "ERR syntax error",
        ),
        (
            &["HSETEX", "h", "PX", "FIELDS", "1", "a", "b"],
            "ERR syntax error",
        ),
        (
            &["HSETEX", "h", "PERSIST", "FIELDS", "1", "a", "b"],
            "ERR syntax error",
        ),
        (
            &["HSETEX", "h", "NX", "FIELDS", "1", "a", "b"],
            "ERR syntax error",
        ),
        (
            &["HSETEX", "h", "EX", "-10", "FIELDS", "1", "a", "b"],
            "ERR invalid expire time in 'hsetex' command",
        ),
        (
            &["HSETEX", "h", "EX", "abc", "FIELDS", "1", "a", "b"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["HSETEX", "h", "PX", "100", "FIELDS", "1", "a", "b", "extra"],
            numfields,
        ),
        (
            &["HSETEX", "h", "EX", "10", "FIELDS", "2", "a", "b"],
            numfields,
        ),
        (&["HSETEX", "h", "EX", "10", "FIELDS", "0", "a"], numfields),
        (
            &["HSETEX", "h", "KEEPTTL", "KEEPTTL", "KEEPTTL", "FIELDS"],
            numfields,
        ),
        (
            &["HSETEX", "h", "FIELDS", "x", "a", "b"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["HSETEX", "s", "EX", "10", "FIELDS", "1", "a", "b"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        (
            &["HSETEX", "h", "FIELDS", "1", "a"],
            "ERR wrong number of arguments for 'hsetex' command",
        ),
    ] {
        assert_eq!(err(&mut c, args), want, "{args:?}");
    }
}

#[test]
fn expired_fields_are_invisible_and_go() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut pairs = vec!["HSET", "h"];
    let names: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    for n in &names {
        pairs.extend([n.as_str(), "v"]);
    }
    int(&mut c, &pairs);
    // Five fields expire within a millisecond; five stay.
    let mut hx = vec!["HSETEX", "h", "PX", "1", "FIELDS", "5"];
    let gone: Vec<String> = (0..5).map(|i| format!("x{i}")).collect();
    for g in &gone {
        hx.extend([g.as_str(), "gone"]);
    }
    assert_eq!(int(&mut c, &hx), 1);
    wait_field_gone(&mut c, "h", "x0");
    let live: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(int(&mut c, &["HLEN", "h"]), 10);
    assert_eq!(strings(&mut c, &["HKEYS", "h"]), live);
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HVALS", "h"]).unwrap(),
        vec!["v".to_string(); 10]
    );
    let all: Vec<String> = run(&mut c, &["HGETALL", "h"]).unwrap();
    assert_eq!(all.len(), 20);
    for g in &gone {
        assert_eq!(
            run::<Option<String>>(&mut c, &["HGET", "h", g]).unwrap(),
            None
        );
        assert_eq!(int(&mut c, &["HSTRLEN", "h", g]), 0);
        assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", g]), [-2]);
    }
    assert_eq!(
        values(&mut c, &["HMGET", "h", "x1", "p1"]),
        [None, Some("v".into())]
    );
    for _ in 0..20 {
        let f: String = run(&mut c, &["HRANDFIELD", "h"]).unwrap();
        assert!(live.contains(&f), "{f}");
    }
    assert_eq!(strings(&mut c, &["HRANDFIELD", "h", "100"]), live);
    let picks: Vec<String> = run(&mut c, &["HRANDFIELD", "h", "-30"]).unwrap();
    assert!(picks.iter().all(|f| live.contains(f)));
    let (cursor, page): (String, Vec<String>) =
        run(&mut c, &["HSCAN", "h", "0", "COUNT", "100", "NOVALUES"]).unwrap();
    assert_eq!(cursor, "0");
    assert_eq!(page.into_iter().collect::<BTreeSet<_>>(), live);
    // HSET of an expired field creates it anew, with no TTL.
    assert_eq!(int(&mut c, &["HSET", "h", "x0", "back"]), 1);
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "x0"]), [-1]);
    // When the last field goes, the key goes.
    int(
        &mut c,
        &[
            "HSETEX", "only", "PX", "1", "FIELDS", "2", "a", "1", "b", "2",
        ],
    );
    let key_gone = wait_until(DEADLINE, || int(&mut c, &["EXISTS", "only"]) == 0);
    assert!(key_gone, "a hash whose fields all expired is still there");
    assert_eq!(int(&mut c, &["HLEN", "only"]), 0);
    assert!(info_num(&mut c, "expired_fields") >= 7);
}

#[test]
fn the_active_cycle_reclaims_fields_nobody_reads() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for i in 0..200 {
        let k = format!("h{i}");
        int(&mut c, &["HSET", &k, "keep", "1"]);
        int(
            &mut c,
            &["HSETEX", &k, "PX", "1", "FIELDS", "2", "a", "1", "b", "2"],
        );
    }
    for i in 0..50 {
        int(
            &mut c,
            &[
                "HSETEX",
                &format!("all{i}"),
                "PX",
                "1",
                "FIELDS",
                "1",
                "a",
                "1",
            ],
        );
    }
    // Long-lived field TTLs stay counted.
    int(
        &mut c,
        &["HSETEX", "later", "EX", "100000", "FIELDS", "1", "a", "1"],
    );
    // Only INFO is read: nothing touches the hashes.
    let reclaimed = wait_until(DEADLINE, || {
        keyspace(&mut c).as_deref()
            == Some("keys=201,expires=0,avg_ttl=0,keys_with_volatile_items=1")
    });
    assert!(reclaimed, "INFO keyspace: {:?}", keyspace(&mut c));
    assert_eq!(info_num(&mut c, "expired_fields"), 450);
    assert_eq!(
        strings(&mut c, &["HKEYS", "h7"]),
        BTreeSet::from(["keep".to_string()])
    );
    run::<()>(&mut c, &["CONFIG", "RESETSTAT"]).unwrap();
    assert_eq!(info_num(&mut c, "expired_fields"), 0);
}

#[test]
fn hset_drops_a_ttl_and_hincrby_keeps_it() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(
        &mut c,
        &[
            "HSETEX", "h", "EX", "1000", "FIELDS", "3", "a", "1", "n", "10", "x", "1.5",
        ],
    );
    // HSET over a field with a TTL makes it persistent (Valkey 9).
    assert_eq!(int(&mut c, &["HSET", "h", "a", "2"]), 0);
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "a"]), [-1]);
    // HSETNX never touches an existing field.
    assert_eq!(int(&mut c, &["HSETNX", "h", "n", "0"]), 0);
    let at = ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "n"])[0];
    assert!(at > 0);
    // HINCRBY and HINCRBYFLOAT keep the field's TTL.
    assert_eq!(int(&mut c, &["HINCRBY", "h", "n", "5"]), 15);
    assert_eq!(
        ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "n"]),
        [at]
    );
    assert_eq!(
        run::<String>(&mut c, &["HINCRBYFLOAT", "h", "x", "1"]).unwrap(),
        "2.5"
    );
    assert_eq!(
        ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "x"]),
        [at]
    );
    // An expired field counts from zero, with no TTL.
    int(
        &mut c,
        &["HSETEX", "h", "PX", "1", "FIELDS", "1", "e", "100"],
    );
    wait_field_gone(&mut c, "h", "e");
    assert_eq!(int(&mut c, &["HINCRBY", "h", "e", "1"]), 1);
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "e"]), [-1]);
    // HDEL then HSET: a fresh field without the old TTL.
    ints(&mut c, &["HEXPIRE", "h", "500", "FIELDS", "1", "a"]);
    int(&mut c, &["HDEL", "h", "a"]);
    int(&mut c, &["HSET", "h", "a", "3"]);
    assert_eq!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "a"]), [-1]);
}

#[test]
fn encoding_key_ttl_and_info() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    int(&mut c, &["HSET", "h", "f1", "v1", "f2", "v2"]);
    assert_eq!(encoding(&mut c, "h"), "listpack");
    // Conditions that fail, missing fields and deletions convert nothing.
    ints(&mut c, &["HEXPIRE", "h", "100", "XX", "FIELDS", "1", "f1"]);
    ints(&mut c, &["HEXPIRE", "h", "100", "FIELDS", "1", "nope"]);
    assert_eq!(encoding(&mut c, "h"), "listpack");
    assert_eq!(
        keyspace(&mut c).as_deref(),
        Some("keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=0")
    );
    ints(&mut c, &["HEXPIRE", "h", "300", "FIELDS", "1", "f1"]);
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    assert_eq!(
        keyspace(&mut c).as_deref(),
        Some("keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=1")
    );
    // The key's own TTL is independent of its fields'.
    assert_eq!(int(&mut c, &["EXPIRE", "h", "1000"]), 1);
    assert_eq!(int(&mut c, &["PERSIST", "h"]), 1);
    assert!(ints(&mut c, &["HTTL", "h", "FIELDS", "1", "f1"])[0] > 0);
    assert_eq!(int(&mut c, &["TTL", "h"]), -1);
    ints(&mut c, &["HPERSIST", "h", "FIELDS", "1", "f1"]);
    assert_eq!(
        encoding(&mut c, "h"),
        "hashtable",
        "never back to a listpack"
    );
    assert_eq!(
        keyspace(&mut c).as_deref(),
        Some("keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=0")
    );
    // A key TTL shorter than its fields' takes the whole hash.
    ints(&mut c, &["HEXPIRE", "h", "1000", "FIELDS", "1", "f1"]);
    assert_eq!(int(&mut c, &["PEXPIRE", "h", "1"]), 1);
    assert!(wait_until(DEADLINE, || int(&mut c, &["EXISTS", "h"]) == 0));
    assert!(wait_until(DEADLINE, || keyspace(&mut c).is_none()));
    // COMMAND knows the rows.
    let info: Vec<Value> = run(&mut c, &["COMMAND", "INFO", "hsetex", "httl"]).unwrap();
    let arity = |v: &Value| match v {
        Value::Array(a) => a[1].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(arity(&info[0]), Value::Int(-6));
    assert_eq!(arity(&info[1]), Value::Int(-5));
}

#[test]
fn rename_copy_and_transactions_keep_field_ttls() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // Two keys on different cores (two threads split the slots in halves) and two that share
    // a slot: both paths of RENAME and COPY.
    let (near, far) = ("{t}src", "{b}far");
    assert_ne!(
        key_slot(near.as_bytes()) < 8192,
        key_slot(far.as_bytes()) < 8192
    );
    int(&mut c, &["HSET", near, "a", "1", "b", "2"]);
    ints(&mut c, &["HEXPIRE", near, "5000", "FIELDS", "1", "a"]);
    let at = ints(&mut c, &["HPEXPIRETIME", near, "FIELDS", "2", "a", "b"]);
    for dst in ["{t}copy", far] {
        assert_eq!(int(&mut c, &["COPY", near, dst]), 1);
        assert_eq!(
            ints(&mut c, &["HPEXPIRETIME", dst, "FIELDS", "2", "a", "b"]),
            at,
            "{dst}"
        );
        assert_eq!(encoding(&mut c, dst), "hashtable");
    }
    run::<()>(&mut c, &["RENAME", near, "{t}renamed"]).unwrap();
    assert_eq!(
        ints(
            &mut c,
            &["HPEXPIRETIME", "{t}renamed", "FIELDS", "2", "a", "b"]
        ),
        at
    );
    run::<()>(&mut c, &["RENAME", far, "{t}back"]).unwrap();
    assert_eq!(
        ints(
            &mut c,
            &["HPEXPIRETIME", "{t}back", "FIELDS", "2", "a", "b"]
        ),
        at
    );
    assert_eq!(
        keyspace(&mut c).as_deref(),
        Some("keys=3,expires=0,avg_ttl=0,keys_with_volatile_items=3")
    );
    // Inside MULTI and a script.
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("HSETEX")
        .arg(&["m", "EX", "100", "FIELDS", "1", "f", "v"])
        .cmd("HTTL")
        .arg(&["m", "FIELDS", "1", "f"])
        .query(&mut c)
        .unwrap();
    assert_eq!(replies[0], Value::Int(1));
    let script: Vec<i64> = run(
        &mut c,
        &[
            "EVAL",
            "return redis.call('HEXPIRE', KEYS[1], 0, 'FIELDS', 1, 'f')",
            "1",
            "m",
        ],
    )
    .unwrap();
    assert_eq!(script, [2]);
    assert_eq!(int(&mut c, &["EXISTS", "m"]), 0);
}

#[test]
fn field_ttls_survive_a_restart() {
    // appendfsync always: every acknowledged write is on disk, so SIGKILL loses nothing.
    let mut s = Server::start(&["--appendfsync", "always"]);
    let mut c = s.conn();
    int(
        &mut c,
        &["HSET", "h", "keep", "1", "long", "2", "short", "3"],
    );
    let at = now_ms() + 10_000_000;
    ints(
        &mut c,
        &["HPEXPIREAT", "h", &at.to_string(), "FIELDS", "1", "long"],
    );
    ints(&mut c, &["HPEXPIRE", "h", "1500", "FIELDS", "1", "short"]);
    int(
        &mut c,
        &["HSETEX", "gone", "PX", "1500", "FIELDS", "1", "a", "1"],
    );
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(
        ints(
            &mut c,
            &["HPEXPIRETIME", "h", "FIELDS", "2", "long", "keep"]
        ),
        [at, -1]
    );
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    // The short ones expire (possibly while the server was down) and are gone.
    wait_field_gone(&mut c, "h", "short");
    assert!(wait_until(DEADLINE, || int(&mut c, &["EXISTS", "gone"]) == 0));
    assert_eq!(
        strings(&mut c, &["HKEYS", "h"]),
        BTreeSet::from(["keep".to_string(), "long".to_string()])
    );
    // And their deletion is on disk too.
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["HLEN", "h"]), 2);
    // (A deletion not on disk yet when the server was killed is made again.)
    let settled = wait_until(DEADLINE, || {
        keyspace(&mut c).as_deref() == Some("keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=1")
    });
    assert!(settled, "INFO keyspace: {:?}", keyspace(&mut c));
}

/// In a 3-node cluster a field TTL is replicated as an absolute time (every replica reads the
/// same expiry), and fields that expire are deleted on every replica, through the leader's
/// records: each node's count of hashes with field TTLs drops to zero and each counts the
/// deletions in expired_fields.
#[test]
fn field_expiry_replicates_in_a_cluster() {
    let c = Cluster::start(3, &["--cluster-node-timeout", "1000"]);
    let client = c.cluster_client();
    let mut cc = client.get_connection().expect("cluster connection");
    let q = |cc: &mut redis::cluster::ClusterConnection, args: &[&str]| -> Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(cc).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let at = now_ms() + 50_000_000;
    q(
        &mut cc,
        &["HSET", "{hfe}a", "keep", "1", "long", "2", "short", "3"],
    );
    q(
        &mut cc,
        &[
            "HPEXPIREAT",
            "{hfe}a",
            &at.to_string(),
            "FIELDS",
            "1",
            "long",
        ],
    );
    q(
        &mut cc,
        &["HPEXPIRE", "{hfe}a", "1500", "FIELDS", "1", "short"],
    );
    q(
        &mut cc,
        &[
            "HSETEX", "{hfe}b", "PX", "1500", "FIELDS", "2", "x", "1", "y", "2",
        ],
    );
    let before: Vec<u64> = (0..c.len())
        .map(|i| {
            let mut conn = c.conn(i);
            info_num(&mut conn, "expired_fields")
        })
        .collect();
    for (i, &was) in before.iter().enumerate() {
        let mut conn = c.conn(i);
        run::<()>(&mut conn, &["READONLY"]).unwrap();
        // The TTL arrives as the same absolute time on every copy.
        let replicated = wait_until(DEADLINE, || {
            run::<Vec<i64>>(
                &mut conn,
                &["HPEXPIRETIME", "{hfe}a", "FIELDS", "2", "long", "keep"],
            )
            .is_ok_and(|v| v == [at, -1])
        });
        assert!(
            replicated,
            "node {i} never read the replicated TTL\n{}",
            c.logs(20)
        );
        // The short fields go everywhere: hidden, then deleted by the leader's records.
        let deleted = wait_until(DEADLINE, || {
            run::<Vec<String>>(&mut conn, &["HKEYS", "{hfe}a"]).is_ok_and(|k| k.len() == 2)
                && run::<i64>(&mut conn, &["EXISTS", "{hfe}b"]).is_ok_and(|n| n == 0)
                && keyspace(&mut conn).as_deref()
                    == Some("keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=1")
                && info_num(&mut conn, "expired_fields") >= was + 3
        });
        assert!(
            deleted,
            "node {i}: {:?}, expired_fields {}\n{}",
            keyspace(&mut conn),
            info_num(&mut conn, "expired_fields"),
            c.logs(20)
        );
        assert_eq!(
            run::<BTreeSet<String>>(&mut conn, &["HKEYS", "{hfe}a"]).unwrap(),
            BTreeSet::from(["keep".to_string(), "long".to_string()])
        );
    }
    // Writes keep going through the leader afterwards.
    assert_eq!(
        q(&mut cc, &["HPERSIST", "{hfe}a", "FIELDS", "1", "long"]),
        Value::Array(vec![Value::Int(1)])
    );
}
