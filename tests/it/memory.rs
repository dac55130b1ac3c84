//! MEMORY (USAGE, STATS, DOCTOR, MALLOC-STATS, PURGE, HELP) and lazy freeing through a real
//! client: MEMORY USAGE grows with each type's size and follows MOVED in a cluster; MEMORY
//! STATS has Valkey's fields in Valkey's order and types; UNLINK, DEL and FLUSHALL of big
//! values leave the keys gone at once while INFO's lazyfree counters show the background
//! thread freeing them. Waits poll with generous deadlines; nothing asserts on durations.

use crate::common;

use common::cluster::Cluster;
use common::{DEADLINE, Server, err, error_text, int, ok, run, wait_until};
use redis::Value;
use tallykv::cluster::key_slot;

type Conn = redis::Connection;

fn usage(c: &mut Conn, key: &str) -> i64 {
    int(c, &["MEMORY", "USAGE", key])
}

fn info_num(c: &mut Conn, name: &str) -> u64 {
    let text: String = run(c, &["INFO", "memory"]).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO memory has no {name}"))
        .trim()
        .parse()
        .unwrap()
}

/// Runs `cmd key member...` for `n` members `m:<i>`, 10k per command.
fn fill(c: &mut Conn, cmd: &str, key: &str, n: usize) {
    let mut p = redis::pipe();
    for start in (0..n).step_by(10_000) {
        let line = p.cmd(cmd).arg(key);
        for i in start..(start + 10_000).min(n) {
            match cmd {
                "ZADD" => line.arg(i).arg(format!("m:{i}")),
                "HSET" => line.arg(format!("m:{i}")).arg("value"),
                _ => line.arg(format!("m:{i}")),
            };
        }
        line.ignore();
    }
    p.query::<()>(c).unwrap();
}

#[test]
fn memory_usage_grows_with_each_type_and_is_nil_for_a_missing_key() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        run::<Value>(&mut c, &["MEMORY", "USAGE", "missing"]).unwrap(),
        Value::Nil
    );
    ok(&mut c, &["SET", "short", "x"]);
    ok(&mut c, &["SET", "long", &"x".repeat(10_000)]);
    ok(&mut c, &["SET", "int", "12345"]);
    assert!(usage(&mut c, "short") > 0);
    assert!(usage(&mut c, "long") > usage(&mut c, "short") + 9_000);
    for (cmd, kind) in [
        ("RPUSH", "list"),
        ("SADD", "set"),
        ("ZADD", "zset"),
        ("HSET", "hash"),
    ] {
        let (small, large) = (format!("{kind}:small"), format!("{kind}:large"));
        fill(&mut c, cmd, &small, 10);
        fill(&mut c, cmd, &large, 20_000);
        let (a, b) = (usage(&mut c, &small), usage(&mut c, &large));
        // 20k members of 6-9 bytes: several bytes each whatever the encoding.
        assert!(b > a + 20_000 * 4, "{kind}: {a} for 10, {b} for 20000");
        // SAMPLES 0 measures everything; its answer is of the same order as the sampled one.
        let all = int(&mut c, &["MEMORY", "USAGE", &large, "SAMPLES", "0"]);
        assert!(all > b / 2 && all < b * 2, "{kind}: sampled {b}, all {all}");
        let one = int(&mut c, &["MEMORY", "USAGE", &large, "samples", "1"]);
        assert!(one > 0);
    }
    // An expired key is missing.
    ok(&mut c, &["SET", "gone", "x", "PX", "1"]);
    assert!(wait_until(DEADLINE, || run::<Value>(
        &mut c,
        &["MEMORY", "USAGE", "gone"]
    )
    .unwrap()
        == Value::Nil));
}

#[test]
fn memory_usage_refuses_bad_arguments_as_valkey() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "v"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["MEMORY", "USAGE"],
            "ERR wrong number of arguments for 'memory|usage' command",
        ),
        (&["MEMORY", "USAGE", "k", "SAMPLES"], "ERR syntax error"),
        (&["MEMORY", "USAGE", "k", "FOO", "1"], "ERR syntax error"),
        (
            &["MEMORY", "USAGE", "k", "SAMPLES", "-1"],
            "ERR syntax error",
        ),
        (
            &["MEMORY", "USAGE", "k", "SAMPLES", "x"],
            "ERR value is not an integer or out of range",
        ),
        // Options are checked before the key is looked up.
        (
            &["MEMORY", "USAGE", "missing", "SAMPLES", "1.5"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["MEMORY", "STATS", "extra"],
            "ERR wrong number of arguments for 'memory|stats' command",
        ),
        (
            &["MEMORY", "NOPE"],
            "ERR unknown subcommand 'NOPE'. Try MEMORY HELP.",
        ),
        (
            &["MEMORY"],
            "ERR wrong number of arguments for 'memory' command",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(&err(&mut c, args), want, "{args:?}");
    }
    // The key is counted neither as a hit nor a miss, and SAMPLES may repeat.
    assert!(
        int(
            &mut c,
            &["MEMORY", "USAGE", "k", "SAMPLES", "3", "SAMPLES", "0"]
        ) > 0
    );
}

/// MEMORY STATS' field names in Valkey's order (db.0 is there only when keys exist).
const STATS_FIELDS: &[&str] = &[
    "peak.allocated",
    "total.allocated",
    "startup.allocated",
    "replication.backlog",
    "clients.slaves",
    "clients.normal",
    "cluster.links",
    "aof.buffer",
    "lua.caches",
    "functions.caches",
    "db.0",
    "overhead.db.hashtable.lut",
    "overhead.db.hashtable.rehashing",
    "overhead.total",
    "db.dict.rehashing.count",
    "keys.count",
    "keys.bytes-per-key",
    "dataset.bytes",
    "dataset.percentage",
    "peak.percentage",
    "allocator.allocated",
    "allocator.active",
    "allocator.resident",
    "allocator.muzzy",
    "allocator-fragmentation.ratio",
    "allocator-fragmentation.bytes",
    "allocator-rss.ratio",
    "allocator-rss.bytes",
    "rss-overhead.ratio",
    "rss-overhead.bytes",
    "fragmentation",
    "fragmentation.bytes",
];

const RATIOS: &[&str] = &[
    "dataset.percentage",
    "peak.percentage",
    "allocator-fragmentation.ratio",
    "allocator-rss.ratio",
    "rss-overhead.ratio",
    "fragmentation",
];

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// MEMORY STATS as (name, value) pairs, in order (RESP2 sends a flat array, RESP3 a map).
fn stats(c: &mut Conn) -> Vec<(String, Value)> {
    match run::<Value>(c, &["MEMORY", "STATS"]).unwrap() {
        Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), p[1].clone()))
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        other => panic!("MEMORY STATS: {other:?}"),
    }
}

fn stat_int(pairs: &[(String, Value)], name: &str) -> i64 {
    match pairs.iter().find(|(n, _)| n == name) {
        Some((_, Value::Int(v))) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn memory_stats_has_valkeys_fields_in_order_with_their_types() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let empty = stats(&mut c);
    let names: Vec<&str> = empty.iter().map(|(n, _)| n.as_str()).collect();
    let without_db: Vec<&str> = STATS_FIELDS
        .iter()
        .copied()
        .filter(|n| *n != "db.0")
        .collect();
    assert_eq!(names, without_db, "no db.0 without keys");
    assert_eq!(stat_int(&empty, "keys.count"), 0);

    fill(&mut c, "SADD", "set", 50_000);
    ok(&mut c, &["SET", "k", "v"]);
    for mut conn in [s.conn(), s.conn3()] {
        let pairs = stats(&mut conn);
        let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, STATS_FIELDS);
        for (name, value) in &pairs {
            match (name.as_str(), value) {
                ("db.0", Value::Array(v)) => {
                    let inner: Vec<String> = v.iter().step_by(2).map(text).collect();
                    assert_eq!(
                        inner,
                        ["overhead.hashtable.main", "overhead.hashtable.expires"]
                    );
                }
                ("db.0", Value::Map(v)) => assert_eq!(v.len(), 2),
                (n, Value::Double(d)) if RATIOS.contains(&n) => assert!(d.is_finite(), "{n}"),
                // RESP2 carries a double as a bulk string.
                (n, Value::BulkString(b)) if RATIOS.contains(&n) => {
                    let d: f64 = String::from_utf8_lossy(b).parse().unwrap();
                    assert!(d.is_finite(), "{n}");
                }
                (n, Value::Int(_)) if !RATIOS.contains(&n) => {}
                (n, v) => panic!("{n} has the wrong type: {v:?}"),
            }
        }
        assert_eq!(stat_int(&pairs, "keys.count"), 2);
        let total = stat_int(&pairs, "total.allocated");
        assert!(stat_int(&pairs, "peak.allocated") >= total);
        assert!(stat_int(&pairs, "overhead.total") >= stat_int(&pairs, "startup.allocated"));
        assert!(stat_int(&pairs, "overhead.db.hashtable.lut") > 0);
        assert!(stat_int(&pairs, "clients.normal") > 0);
        // The 50k-member set is data. Its members ("m:0".."m:49999") take ~16.5 bytes each in
        // memory once the storage writer took its queued copy (which counts as data until
        // then, as aof.buffer after): half of that leaves room for when the sample falls.
        assert!(stat_int(&pairs, "dataset.bytes") > 50_000 * 8, "{pairs:?}");
        assert!(stat_int(&pairs, "allocator.allocated") > 0);
    }
    // INFO splits memory the same way.
    assert!(info_num(&mut c, "used_memory_overhead") >= info_num(&mut c, "used_memory_startup"));
}

#[test]
fn doctor_malloc_stats_purge_and_help_reply_as_valkey() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let report: String = run(&mut c, &["MEMORY", "DOCTOR"]).unwrap();
    assert!(
        report.starts_with("Hi Sam, ") || report.starts_with("Sam, I detected a few issues"),
        "{report}"
    );
    assert!(report.ends_with('\n'), "{report}");
    let stats: String = run(&mut c, &["MEMORY", "MALLOC-STATS"]).unwrap();
    assert!(
        stats.contains("___ Begin jemalloc statistics ___")
            && stats.contains("--- End jemalloc statistics ---"),
        "{}",
        &stats[..stats.len().min(300)]
    );
    ok(&mut c, &["MEMORY", "PURGE"]);
    let help: Vec<String> = run(&mut c, &["MEMORY", "HELP"]).unwrap();
    assert_eq!(
        help,
        [
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return memory problems reports.",
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
            "HELP",
            "    Print this help.",
        ]
    );
    // RESP3: DOCTOR and MALLOC-STATS are verbatim text.
    let mut c3 = s.conn3();
    assert!(matches!(
        run::<Value>(&mut c3, &["MEMORY", "DOCTOR"]).unwrap(),
        Value::VerbatimString { .. }
    ));
}

#[test]
fn unlink_of_a_big_set_returns_with_the_key_gone_and_frees_it_in_the_background() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut lazyfree: Vec<(String, String)> =
        run(&mut c, &["CONFIG", "GET", "lazyfree-*"]).unwrap();
    lazyfree.sort();
    assert_eq!(
        lazyfree,
        [
            "lazyfree-lazy-eviction",
            "lazyfree-lazy-expire",
            "lazyfree-lazy-server-del",
            "lazyfree-lazy-user-del",
            "lazyfree-lazy-user-flush",
        ]
        .map(|n| (n.to_string(), "yes".to_string()))
    );
    assert_eq!(info_num(&mut c, "lazyfreed_objects"), 0);
    assert_eq!(info_num(&mut c, "lazyfree_pending_objects"), 0);

    fill(&mut c, "SADD", "big", 300_000);
    assert_eq!(int(&mut c, &["SCARD", "big"]), 300_000);
    assert_eq!(int(&mut c, &["UNLINK", "big"]), 1);
    assert_eq!(int(&mut c, &["EXISTS", "big"]), 0);
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    assert!(
        wait_until(DEADLINE, || info_num(&mut c, "lazyfreed_objects") == 1),
        "the set was not freed in the background"
    );
    assert_eq!(info_num(&mut c, "lazyfree_pending_objects"), 0);

    // DEL frees at once when lazyfree-lazy-user-del says no; UNLINK still frees lazily.
    ok(&mut c, &["CONFIG", "SET", "lazyfree-lazy-user-del", "no"]);
    fill(&mut c, "HSET", "h", 1000);
    assert_eq!(int(&mut c, &["DEL", "h"]), 1);
    assert_eq!(info_num(&mut c, "lazyfreed_objects"), 1);
    fill(&mut c, "ZADD", "z", 1000);
    assert_eq!(int(&mut c, &["UNLINK", "z", "nothing"]), 1);
    assert!(wait_until(DEADLINE, || info_num(
        &mut c,
        "lazyfreed_objects"
    ) == 2));
    // A small value is always freed at once.
    ok(&mut c, &["SET", "small", "v"]);
    assert_eq!(int(&mut c, &["UNLINK", "small"]), 1);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);

    // SET over a big set frees it as a server-side delete.
    fill(&mut c, "SADD", "over", 1000);
    ok(&mut c, &["SET", "over", "now a string"]);
    assert_eq!(
        run::<String>(&mut c, &["GET", "over"]).unwrap(),
        "now a string"
    );
    assert!(wait_until(DEADLINE, || info_num(
        &mut c,
        "lazyfreed_objects"
    ) == 3));

    // FLUSHALL ASYNC hands every key over; the keyspace is empty when it replies.
    for i in 0..100 {
        ok(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    ok(&mut c, &["FLUSHALL", "ASYNC"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    assert!(wait_until(DEADLINE, || info_num(
        &mut c,
        "lazyfreed_objects"
    ) == 104));
    // FLUSHALL SYNC frees at once.
    ok(&mut c, &["SET", "k", "v"]);
    ok(&mut c, &["FLUSHALL", "SYNC"]);
    assert_eq!(info_num(&mut c, "lazyfreed_objects"), 104);
    ok(&mut c, &["CONFIG", "RESETSTAT"]);
    assert_eq!(info_num(&mut c, "lazyfreed_objects"), 0);
}

#[test]
fn used_memory_falls_after_an_unlink_and_eviction_does_not_overshoot() {
    // maxmemory well above the data: the big set's pending bytes must not make eviction
    // evict the small keys while the set is being freed.
    let s = Server::start(&[
        "--appendonly",
        "no",
        "--maxmemory",
        "400mb",
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let mut c = s.conn();
    let before = info_num(&mut c, "used_memory");
    fill(&mut c, "SADD", "big", 500_000);
    let full = info_num(&mut c, "used_memory");
    assert!(full > before + 8 * 1024 * 1024, "{before} -> {full}");
    for i in 0..1000 {
        ok(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    assert_eq!(int(&mut c, &["UNLINK", "big"]), 1);
    for i in 1000..2000 {
        ok(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    assert!(
        wait_until(DEADLINE, || info_num(&mut c, "used_memory")
            < before + (full - before) / 4),
        "used_memory did not fall after UNLINK"
    );
    assert_eq!(int(&mut c, &["DBSIZE"]), 2000);
    let evicted: String = run(&mut c, &["INFO", "stats"]).unwrap();
    assert!(evicted.contains("evicted_keys:0\r\n"), "{evicted}");
}

#[test]
fn memory_usage_follows_moved_in_a_cluster() {
    let c = Cluster::start(3, &[]);
    let mut client = c.cluster_client().get_connection().unwrap();
    let key = "memory:key";
    let _: () = redis::cmd("SADD")
        .arg(key)
        .arg(&["a", "b", "c"])
        .query(&mut client)
        .unwrap();
    let through_client: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query(&mut client)
        .unwrap();
    assert!(through_client > 0);
    let slot = key_slot(key.as_bytes()) as usize;
    let leader = c.leader_of_slot(slot);
    let follower = (leader + 1) % c.len();
    let e = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query::<Value>(&mut c.conn(follower))
        .unwrap_err();
    assert_eq!(
        error_text(&e),
        format!("MOVED {slot} 127.0.0.1:{}", c.port(leader))
    );
    let direct: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query(&mut c.conn(leader))
        .unwrap();
    assert!(direct > 0);
    // MEMORY STATS answers on any node, about that node.
    let mut conn = c.conn(follower);
    let pairs = stats(&mut conn);
    assert_eq!(
        pairs.len(),
        STATS_FIELDS.len() - 1 + pairs.iter().any(|(n, _)| n == "db.0") as usize
    );
}
