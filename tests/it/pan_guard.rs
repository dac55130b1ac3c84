//! `card-pan-guard`: a plaintext card number in anything a write stores is refused (`refuse`)
//! or written and reported (`warn`), and ordinary numbers, sealed values and fingerprints never
//! trip it; through redis-rs and raw RESP against the real server.

use crate::common;

use std::io::{Read, Write};

use common::{DEADLINE, Server, err, run, wait_until};

const REFUSED: &str = "ERR card-pan-guard: refused to store what looks like a plaintext card \
                       number (PAN); store it sealed (tallykv-card) or exempt the key with \
                       card-pan-guard-exempt-keys";

fn exists(c: &mut redis::Connection, key: &str) -> bool {
    run::<i64>(c, &["EXISTS", key]).unwrap() == 1
}

#[test]
fn refuse_keeps_card_numbers_out_of_every_kind_of_write() {
    let s = Server::start(&["--card-pan-guard", "refuse"]);
    let mut c = s.conn();
    // Values, in the formats people write them, in every type.
    for (args, key) in [
        (vec!["SET", "card:1", "4111111111111111"], "card:1"),
        (
            vec!["SET", "card:2", "pan=4111 1111 1111 1111;exp=12/29"],
            "card:2",
        ),
        (
            vec!["SETEX", "card:3", "60", "5555-5555-5555-4444"],
            "card:3",
        ),
        (
            vec!["HSET", "cust:1", "name", "Ann", "pan", "378282246310005"],
            "cust:1",
        ),
        (vec!["HSET", "cust:2", "4111111111111111", "x"], "cust:2"),
        (vec!["LPUSH", "list:1", "6011111111111117"], "list:1"),
        (vec!["SADD", "set:1", "a", "3530111333300000"], "set:1"),
        (vec!["ZADD", "z:1", "1", "2221000000000009"], "z:1"),
        (
            vec!["SET", "pan:4111111111111111", "x"],
            "pan:4111111111111111",
        ),
        (vec!["MSET", "m:1", "ok", "m:2", "4012888888881881"], "m:1"),
    ] {
        assert_eq!(err(&mut c, &args), REFUSED, "{args:?}");
        assert!(!exists(&mut c, key), "{args:?} wrote {key}");
    }
    // What payment services store beside them: counters, amounts, timestamps, fingerprints,
    // sealed blobs.
    let now_ms = common::now_ms().to_string();
    let now_us = format!("{now_ms}000");
    let sealed = b"tkc\x01\x02k1\x00\x3c";
    for args in [
        vec!["SET", "ts", now_ms.as_str()],
        vec!["SET", "ts:us", now_us.as_str()],
        vec!["SET", "amount", "1999.99"],
        vec![
            "INCRBY",
            "vel:{Zk3p_Qm9aA2bX0-1kq8wVvYx3T4u5s6r7q8p9o0n1m2}:1h",
            "1",
        ],
        vec!["HSET", "auth:1", "amount", "12500", "at", now_ms.as_str()],
        vec!["SET", "id", "9223372036854775807"],
    ] {
        let () = run(&mut c, &args).map(|_: redis::Value| ()).unwrap();
    }
    // Sealed values are ciphertext: random bytes behind the envelope's header.
    for i in 0..200 {
        let mut blob = sealed.to_vec();
        blob.extend((0..96).map(|_| fastrand::u8(..)));
        let () = redis::cmd("HSET")
            .arg("sealed")
            .arg(format!("f{i}"))
            .arg(blob)
            .query(&mut c)
            .map(|_: redis::Value| ())
            .expect("a sealed value is stored");
    }

    // A transaction holding one is refused whole (EXECABORT); nothing of it is written.
    let mut t = s.raw();
    t.write_all(b"MULTI\r\nSET tx:1 a\r\nSET tx:2 4111111111111111\r\nSET tx:3 b\r\nEXEC\r\n")
        .unwrap();
    let mut got = String::new();
    assert!(
        wait_until(DEADLINE, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = t.read(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            got.contains("EXECABORT")
        }),
        "{got}"
    );
    assert!(got.contains("-ERR card-pan-guard"), "{got}");
    for k in ["tx:1", "tx:2", "tx:3"] {
        assert!(!exists(&mut c, k), "{k}");
    }

    // Exempt keys (ids that look like card numbers).
    let () = run(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "card-pan-guard-exempt-keys",
            "giftcard:* loyalty:*",
        ],
    )
    .unwrap();
    let () = run(&mut c, &["SET", "giftcard:1", "6011111111111117"]).unwrap();
    assert_eq!(
        err(&mut c, &["SET", "other:1", "6011111111111117"]),
        REFUSED
    );
    let info: String = run(&mut c, &["INFO", "stats"]).unwrap();
    assert!(info.contains("card_pan_guard_refusals:12\r\n"), "{info}");
    // Off: written.
    let () = run(&mut c, &["CONFIG", "SET", "card-pan-guard", "no"]).unwrap();
    let () = run(&mut c, &["SET", "card:1", "4111111111111111"]).unwrap();
}

#[test]
fn warn_writes_and_reports_the_masked_number_only() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let log = dir.path().join("server.log");
    let s = Server::start(&[
        "--card-pan-guard",
        "warn",
        "--audit-log-file",
        audit.to_str().unwrap(),
        "--logfile",
        log.to_str().unwrap(),
    ]);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut c = s.conn();
    let () = run(&mut c, &["SET", "card:7", "card 4111-1111-1111-1111 ok"]).unwrap();
    let v: String = run(&mut c, &["GET", "card:7"]).unwrap();
    assert_eq!(v, "card 4111-1111-1111-1111 ok");
    let info: String = run(&mut c, &["INFO", "stats"]).unwrap();
    assert!(info.contains("card_pan_guard_warnings:1\r\n"), "{info}");
    assert!(
        wait_until(DEADLINE, || common::json_lines(&audit)
            .iter()
            .any(|e| e["event"] == "pan_detected")),
        "{}",
        std::fs::read_to_string(&audit).unwrap_or_default()
    );
    let events = common::json_lines(&audit);
    let e = events
        .iter()
        .find(|e| e["event"] == "pan_detected")
        .unwrap();
    assert_eq!(e["action"], "warned");
    assert_eq!(e["context"], "toplevel");
    assert_eq!(e["key"], "card:7");
    assert_eq!(e["masked"], "411111******1111");
    assert_eq!(e["user"], "default");
    // Neither the audit log nor the server's log holds the number.
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("4111-1111-1111-1111"), "{text}");
    assert!(
        wait_until(DEADLINE, || log_text().contains("card-pan-guard")),
        "{}",
        log_text()
    );
    assert!(!log_text().contains("4111-1111-1111-1111"));
    let () = run(&mut c, &["CONFIG", "RESETSTAT"]).unwrap();
    let info: String = run(&mut c, &["INFO", "stats"]).unwrap();
    assert!(info.contains("card_pan_guard_warnings:0\r\n"), "{info}");
}

/// What the arguments alone do not show: APPEND's and SETRANGE's result, and a script's
/// writes.
#[test]
fn results_and_script_writes_are_guarded_too() {
    let s = Server::start(&["--card-pan-guard", "refuse"]);
    let mut c = s.conn();
    // A number completed by APPEND, grouped or not; the value stays as it was.
    let () = run(&mut c, &["SET", "a", "pan 4111 1111"]).unwrap();
    assert_eq!(err(&mut c, &["APPEND", "a", " 1111 1111 end"]), REFUSED);
    let v: String = run(&mut c, &["GET", "a"]).unwrap();
    assert_eq!(v, "pan 4111 1111");
    let () = run(&mut c, &["SET", "b", "41111111"]).unwrap();
    assert_eq!(err(&mut c, &["APPEND", "b", "11111111"]), REFUSED);
    // A longer run is not a card number: appending more digits to one is fine.
    let () = run(&mut c, &["SET", "n", "41111111"]).unwrap();
    let len: i64 = run(&mut c, &["APPEND", "n", "111111110"]).unwrap();
    assert_eq!(len, 17);
    // SETRANGE overwriting the middle of a string so that it holds one.
    let () = run(&mut c, &["SET", "r", "x4111111111111xxx"]).unwrap();
    assert_eq!(err(&mut c, &["SETRANGE", "r", "14", "111"]), REFUSED);
    let v: String = run(&mut c, &["GET", "r"]).unwrap();
    assert_eq!(v, "x4111111111111xxx");
    let len: i64 = run(&mut c, &["SETRANGE", "r", "14", "abc"]).unwrap();
    assert_eq!(len, 17);
    // A script's write: redis.call raises the guard's error; pcall sees it as an error
    // table; nothing is written by the refused call.
    let e = err(
        &mut c,
        &[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2])",
            "1",
            "s:1",
            "41111111",
            "11111111",
        ],
    );
    assert!(e.starts_with(REFUSED), "{e}");
    assert!(!exists(&mut c, "s:1"));
    // The whole script is refused: what it wrote before is undone, and catching the error
    // with pcall does not let it go on writing.
    let () = run(&mut c, &["SET", "s:old", "before"]).unwrap();
    let e = err(
        &mut c,
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], 'new') \
             redis.call('INCR', KEYS[2]) \
             redis.call('RPUSH', KEYS[3], 'a', 'b') \
             local r = redis.pcall('HSET', KEYS[4], 'pan', '5555555555554444') \
             redis.pcall('SET', KEYS[5], 'after') \
             return r['err']",
            "5",
            "s:old",
            "s:n",
            "s:list",
            "s:2",
            "s:after",
        ],
    );
    assert_eq!(e, REFUSED);
    let v: String = run(&mut c, &["GET", "s:old"]).unwrap();
    assert_eq!(v, "before");
    for k in ["s:n", "s:list", "s:2", "s:after"] {
        assert!(!exists(&mut c, k), "{k}");
    }
    // APPEND's result inside a script dooms it too.
    let e = err(
        &mut c,
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], 'x') redis.call('SET', KEYS[2], '41111111') \
             redis.pcall('APPEND', KEYS[2], '11111111') return 1",
            "2",
            "s:3",
            "s:4",
        ],
    );
    assert_eq!(e, REFUSED);
    assert!(!exists(&mut c, "s:3") && !exists(&mut c, "s:4"));
    // The undone writes were not persisted either: a restart finds the state before.
    let mut s = s;
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
    assert!(s.wait_exit(std::time::Duration::from_secs(30)).is_some());
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    let v: String = run(&mut c, &["GET", "s:old"]).unwrap();
    assert_eq!(v, "before");
    for k in ["s:n", "s:list", "s:2", "s:after", "s:3", "s:4"] {
        assert!(!exists(&mut c, k), "{k} after a restart");
    }
    // A script that stores nothing of the kind runs as before.
    let n: i64 = run(
        &mut c,
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], 'v') return redis.call('INCR', KEYS[2])",
            "2",
            "ok:1",
            "ok:2",
        ],
    )
    .unwrap();
    assert_eq!(n, 1);
}
