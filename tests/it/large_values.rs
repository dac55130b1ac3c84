//! Large values persist incrementally: a change to a big list, set, sorted set, hash or
//! string is stored as a delta on top of the value's last full write (see
//! `src/shard/deltas.rs`). These tests change large values in every way a record can, kill
//! the server with SIGKILL, and check that what comes back is exactly what was acknowledged;
//! and that storage wrote deltas, not whole values.

use crate::common;

use std::collections::BTreeMap;

use common::{DEADLINE, Server, int, now_ms, ok, run, wait_until};
use redis::Value;

/// Elements per large value: past the delta threshold (256) with room to shrink.
const N: usize = 1200;

/// Everything a client can see of the data set, per key: type, contents, whether it has a TTL.
type Dump = BTreeMap<Vec<u8>, (String, Vec<Vec<u8>>, bool)>;

fn dump(c: &mut redis::Connection) -> Dump {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    keys.sort();
    let mut out = BTreeMap::new();
    for k in keys {
        let ty: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
        let mut items: Vec<Vec<u8>> = match ty.as_str() {
            "string" => vec![redis::cmd("GET").arg(&k).query(c).unwrap()],
            "list" => redis::cmd("LRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .query(c)
                .unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&k).query(c).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)
                .unwrap(),
            "hash" => redis::cmd("HGETALL").arg(&k).query(c).unwrap(),
            other => panic!("unexpected type {other}"),
        };
        if ty == "set" {
            items.sort();
        }
        if ty == "hash" {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = items
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            pairs.sort();
            items = pairs.into_iter().flat_map(|(f, v)| [f, v]).collect();
        }
        if ty == "hash" {
            // Which fields have a TTL (HTTL: -1 none, > 0 seconds left).
            let fields: Vec<Vec<u8>> = items.iter().step_by(2).cloned().collect();
            let ttls: Vec<i64> = redis::cmd("HTTL")
                .arg(&k)
                .arg("FIELDS")
                .arg(fields.len())
                .arg(&fields)
                .query(c)
                .unwrap();
            items.extend(ttls.iter().map(|&t| vec![u8::from(t > 0)]));
        }
        let ttl: i64 = redis::cmd("PTTL").arg(&k).query(c).unwrap();
        out.insert(k, (ty, items, ttl >= 0));
    }
    out
}

fn info_field(c: &mut redis::Connection, name: &str) -> u64 {
    info_in(c, "persistence", name)
}

fn stat(c: &mut redis::Connection, name: &str) -> u64 {
    info_in(c, "stats", name)
}

fn info_in(c: &mut redis::Connection, section: &str, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {name}"))
        .trim()
        .parse()
        .unwrap()
}

/// Builds one large value of each type (and a few small keys beside them).
fn build(c: &mut redis::Connection) {
    for chunk in (0..N).collect::<Vec<_>>().chunks(300) {
        let elems: Vec<String> = chunk.iter().map(|i| format!("e{i}")).collect();
        let mut p = redis::pipe();
        p.cmd("RPUSH").arg("big:list").arg(&elems);
        p.cmd("SADD").arg("big:set").arg(&elems);
        let z: Vec<(f64, &String)> = chunk.iter().map(|&i| i as f64).zip(&elems).collect();
        p.cmd("ZADD").arg("big:zset").arg(z);
        let h: Vec<(&String, String)> = elems.iter().map(|e| (e, format!("v{e}"))).collect();
        p.cmd("HSET").arg("big:hash").arg(h);
        p.query::<()>(c).unwrap();
    }
    ok(c, &["SET", "big:str", &"x".repeat(20_000)]);
    ok(c, &["SET", "small", "v"]);
    int(c, &["RPUSH", "small:list", "a", "b", "c"]);
}

/// One random partial change to one of the large values (every record kind a delta can carry).
fn random_change(rng: &mut fastrand::Rng, p: &mut redis::Pipeline, step: usize) {
    let e = format!("n{}", rng.usize(0..3 * N));
    match rng.u8(0..20) {
        0 => p.cmd("LPUSH").arg("big:list").arg(&e),
        1 => p.cmd("RPUSH").arg("big:list").arg(&e).arg("tail"),
        2 => p.cmd("LPOP").arg("big:list").arg(rng.usize(1..4)),
        3 => p.cmd("RPOP").arg("big:list"),
        4 => p
            .cmd("LSET")
            .arg("big:list")
            .arg(rng.i64(-200..200))
            .arg(&e),
        5 => p
            .cmd("LINSERT")
            .arg("big:list")
            .arg("BEFORE")
            .arg(format!("e{}", rng.usize(0..N)))
            .arg(&e),
        6 => p
            .cmd("LREM")
            .arg("big:list")
            .arg(rng.i64(-2..3))
            .arg("tail"),
        7 => p
            .cmd("LTRIM")
            .arg("big:list")
            .arg(rng.i64(0..3))
            .arg(-1 - rng.i64(0..3)),
        8 => p.cmd("SADD").arg("big:set").arg(&e),
        9 => p
            .cmd("SREM")
            .arg("big:set")
            .arg(format!("e{}", rng.usize(0..N))),
        10 => p.cmd("SPOP").arg("big:set"),
        11 => p
            .cmd("ZADD")
            .arg("big:zset")
            .arg(rng.i64(-1000..1000) as f64 / 8.0)
            .arg(&e),
        12 => p
            .cmd("ZINCRBY")
            .arg("big:zset")
            .arg(1.5)
            .arg(format!("e{}", rng.usize(0..N))),
        13 => p
            .cmd("ZREM")
            .arg("big:zset")
            .arg(format!("e{}", rng.usize(0..N))),
        14 => p.cmd("ZPOPMIN").arg("big:zset").arg(rng.usize(1..3)),
        15 => p.cmd("ZREMRANGEBYRANK").arg("big:zset").arg(-2).arg(-1),
        16 => p.cmd("HSET").arg("big:hash").arg(&e).arg(step),
        17 => p
            .cmd("HDEL")
            .arg("big:hash")
            .arg(format!("e{}", rng.usize(0..N))),
        18 => p
            .cmd("SETRANGE")
            .arg("big:str")
            .arg(rng.usize(0..25_000))
            .arg(&e),
        _ => match rng.u8(0..3) {
            0 => p.cmd("APPEND").arg("big:str").arg(&e),
            1 => p
                .cmd("SETBIT")
                .arg("big:str")
                .arg(rng.usize(0..200_000))
                .arg(1),
            _ => p.cmd("PEXPIRE").arg("big:hash").arg(3_600_000 + step),
        },
    };
}

#[test]
fn large_values_come_back_exactly_after_sigkill() {
    let mut s = Server::start(&["--appendfsync", "always"]);
    let mut c = s.conn();
    build(&mut c);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut step = 0;
    let mut deltas_before_kill = 0;
    for round in 0..4 {
        // Single commands (a delta each) and pipelines (several records in one delta).
        for _ in 0..150 {
            let mut p = redis::pipe();
            let n = if rng.bool() { 1 } else { rng.usize(2..20) };
            for _ in 0..n {
                random_change(&mut rng, &mut p, step);
                step += 1;
            }
            // Some changes fail (LSET out of range): that is part of the stream.
            let _: redis::RedisResult<Vec<Value>> = p.query(&mut c);
        }
        if round == 2 {
            // A PERSIST recorded as a delta, then a new TTL.
            int(&mut c, &["PERSIST", "big:hash"]);
            int(&mut c, &["EXPIRE", "big:list", "100000"]);
        }
        let expected = dump(&mut c);
        deltas_before_kill += info_field(&mut c, "storage_deltas_written");
        s.kill9();
        s.restart();
        s.wait_loaded();
        c = s.conn();
        let got = dump(&mut c);
        assert_eq!(got.len(), expected.len(), "round {round}: key count");
        for (k, v) in &expected {
            assert_eq!(
                got.get(k),
                Some(v),
                "round {round}: {} differs after restart",
                String::from_utf8_lossy(k)
            );
        }
    }
    assert!(
        deltas_before_kill > 100,
        "large values were rewritten whole instead of through deltas ({deltas_before_kill})"
    );
}

#[test]
fn a_change_to_a_large_list_writes_the_change_not_the_list() {
    let s = Server::start(&["--appendfsync", "always"]);
    let mut c = s.conn();
    let elems: Vec<String> = (0..20_000).map(|i| format!("element-{i:08}")).collect();
    for chunk in elems.chunks(1000) {
        int(
            &mut c,
            &[
                &["RPUSH", "l"][..],
                &chunk.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        );
    }
    // The list's full size on disk: at least its elements' bytes.
    let list_bytes: u64 = elems.iter().map(|e| e.len() as u64).sum();
    let before = info_field(&mut c, "storage_bytes_written");
    const PUSHES: u64 = 400;
    for i in 0..PUSHES {
        int(&mut c, &["LPUSH", "l", &format!("new-{i}")]);
    }
    let written = info_field(&mut c, "storage_bytes_written") - before;
    // Rewriting the list for each push would write PUSHES times its size; deltas write each
    // push and, now and then, the list once more.
    assert!(
        written < 3 * list_bytes,
        "{PUSHES} LPUSHes onto a {list_bytes}-byte list wrote {written} bytes"
    );
    assert_eq!(int(&mut c, &["LLEN", "l"]), 20_000 + PUSHES as i64);
}

#[test]
fn deltas_that_delete_or_expire_a_large_value_or_keep_it() {
    let mut s = Server::start(&["--appendfsync", "always"]);
    let mut c = s.conn();
    let elems: Vec<String> = (0..400).map(|i| format!("m{i}")).collect();
    for key in ["emptied", "expires", "persisted", "flushed"] {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(key).arg(&elems);
        cmd.query::<i64>(&mut c).unwrap();
    }
    // Each list was written whole once (large: with an epoch); what follows are deltas.
    int(&mut c, &["LPUSH", "emptied", "x"]);
    // Popped down to nothing through small pops: the key is gone.
    for _ in 0..401 {
        let _: Value = run(&mut c, &["LPOP", "emptied"]).unwrap();
    }
    assert_eq!(int(&mut c, &["EXISTS", "emptied"]), 0);
    // Fields of a large hash that expire while the server runs: their deletion is a delta.
    let mut cmd = redis::cmd("HSET");
    cmd.arg("fields");
    for e in &elems {
        cmd.arg(e).arg("v");
    }
    cmd.query::<i64>(&mut c).unwrap();
    let set: Vec<i64> = run(
        &mut c,
        &["HPEXPIRE", "fields", "50", "FIELDS", "2", "m1", "m2"],
    )
    .unwrap();
    assert_eq!(set, [1, 1]);
    assert!(
        wait_until(DEADLINE, || stat(&mut c, "expired_fields") == 2),
        "the two fields never expired"
    );
    // A TTL that passes while the server is down.
    let soon = now_ms() + 1500;
    int(&mut c, &["PEXPIREAT", "expires", &soon.to_string()]);
    // A TTL taken back before it passed.
    int(&mut c, &["PEXPIREAT", "persisted", &soon.to_string()]);
    int(&mut c, &["PERSIST", "persisted"]);
    int(&mut c, &["LPUSH", "persisted", "after"]);
    s.kill9();
    assert!(
        wait_until(DEADLINE, || now_ms() > soon + 100),
        "clock did not pass the TTL"
    );
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["EXISTS", "emptied"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "expires"]), 0);
    assert_eq!(int(&mut c, &["TTL", "persisted"]), -1);
    assert_eq!(int(&mut c, &["LLEN", "persisted"]), 401);
    assert_eq!(int(&mut c, &["LLEN", "flushed"]), 400);
    assert_eq!(int(&mut c, &["HLEN", "fields"]), 398);
    // Replaying the deletion is not the fields expiring again.
    assert_eq!(stat(&mut c, "expired_fields"), 0);
    int(&mut c, &["DEL", "fields"]);

    // FLUSHALL takes the deltas with it; a new large value under the same name starts over.
    int(&mut c, &["LPUSH", "flushed", "y"]);
    ok(&mut c, &["FLUSHALL"]);
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg("flushed").arg(&elems[..300]);
    cmd.query::<i64>(&mut c).unwrap();
    int(&mut c, &["RPUSH", "flushed", "z"]);
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    let got: Vec<String> = redis::cmd("LRANGE")
        .arg("flushed")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let mut want: Vec<String> = elems[..300].to_vec();
    want.push("z".into());
    assert_eq!(got, want);
    assert_eq!(int(&mut c, &["DBSIZE"]), 1);
}

#[test]
fn a_snapshot_carries_large_values_deltas() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    build(&mut c);
    let mut rng = fastrand::Rng::with_seed(11);
    for step in 0..300 {
        let mut p = redis::pipe();
        random_change(&mut rng, &mut p, step);
        let _: redis::RedisResult<Vec<Value>> = p.query(&mut c);
    }
    ok(&mut c, &["SAVE"]);
    let expected = dump(&mut c);
    assert!(info_field(&mut c, "storage_deltas_written") > 0);
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&s.dir.join("snapshot"), copy.path());
    let s2 = Server::start_in(copy.path(), &[]);
    let mut c2 = s2.conn();
    assert_eq!(dump(&mut c2), expected);
}
