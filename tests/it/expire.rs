//! Time to live through a real client: the EXPIRE family with NX/XX/GT/LT, TTL/PTTL,
//! EXPIRETIME/PEXPIRETIME, PERSIST, lazy expiry, the active expiry cycle, and TTLs across
//! RENAME and COPY, compared with Valkey's replies.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{DEADLINE, Server, err, key_on, pttl_after, run, ttl_after, wait_until};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> i64 {
    let info: String = run(c, &["INFO", section]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
        .trim()
        .parse()
        .unwrap()
}

/// The four EXPIRE commands, each with a function giving its argument for "now + ms".
type Form = (&'static str, fn(i64) -> i64);
const FORMS: [Form; 4] = [
    ("EXPIRE", |ms| ms / 1000),
    ("PEXPIRE", |ms| ms),
    ("EXPIREAT", |ms| (now_ms() + ms) / 1000),
    ("PEXPIREAT", |ms| now_ms() + ms),
];

fn pttl(c: &mut redis::Connection, key: &str) -> i64 {
    run(c, &["PTTL", key]).unwrap()
}

#[test]
fn expire_options_on_every_form() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for (cmd, arg) in FORMS {
        let at = |ms: i64| arg(ms).to_string();
        let expire = |c: &mut redis::Connection, ms: i64, opts: &[&str]| -> i64 {
            let when = at(ms);
            let mut args = vec![cmd, "k", when.as_str()];
            args.extend_from_slice(opts);
            run(c, &args).unwrap()
        };
        // Missing key: 0 whatever the options.
        run::<i64>(&mut c, &["DEL", "k"]).unwrap();
        for opts in [&[][..], &["NX"], &["XX"], &["GT"], &["LT"]] {
            assert_eq!(
                expire(&mut c, 100_000, opts),
                0,
                "{cmd} {opts:?} on a missing key"
            );
        }

        // A key without a TTL counts as infinite: NX and LT set it, XX and GT do not.
        for (opts, want) in [
            (&["XX"][..], 0),
            (&["GT"], 0),
            (&["xx", "gt"], 0),
            (&["XX", "LT"], 0),
            (&["NX"], 1),
            (&["LT"], 1),
        ] {
            run::<String>(&mut c, &["SET", "k", "v"]).unwrap();
            assert_eq!(
                expire(&mut c, 100_000, opts),
                want,
                "{cmd} {opts:?} without TTL"
            );
            let expect_ttl = if want == 1 { 1 } else { -1 };
            assert_eq!(
                run::<i64>(&mut c, &["TTL", "k"]).unwrap().signum(),
                expect_ttl,
                "{cmd} {opts:?}"
            );
        }

        // A key with a TTL of 100 s.
        let reset = |c: &mut redis::Connection| {
            run::<String>(c, &["SET", "k", "v"]).unwrap();
            run::<i64>(c, &["PEXPIRE", "k", "100000"]).unwrap();
        };
        for (ms, opts, want) in [
            (200_000, &["NX"][..], 0),
            (200_000, &["XX"], 1),
            (200_000, &["GT"], 1),
            (50_000, &["GT"], 0),
            (50_000, &["LT"], 1),
            (200_000, &["LT"], 0),
            (200_000, &["XX", "GT"], 1),
            (50_000, &["XX", "GT"], 0),
            (50_000, &["Xx", "lT"], 1),
            (200_000, &[], 1),
        ] {
            reset(&mut c);
            assert_eq!(expire(&mut c, ms, opts), want, "{cmd} {ms} {opts:?}");
            let left = pttl(&mut c, "k");
            let target = if want == 1 { ms } else { 100_000 };
            assert!(
                (target - 2_000..=target).contains(&left),
                "{cmd} {ms} {opts:?}: pttl {left}"
            );
        }

        // Incompatible options and unknown ones, checked before the time and the key.
        let nx_err = "ERR NX and XX, GT or LT options at the same time are not compatible";
        let gtlt_err = "ERR GT and LT options at the same time are not compatible";
        for (opts, want) in [
            (&["NX", "XX"][..], nx_err),
            (&["NX", "GT"], nx_err),
            (&["LT", "NX"], nx_err),
            (&["NX", "XX", "GT", "LT"], nx_err),
            (&["GT", "LT"], gtlt_err),
            (&["XX", "GT", "LT"], gtlt_err),
        ] {
            for when in ["100", "notanumber"] {
                let mut args = vec![cmd, "missing", when];
                args.extend_from_slice(opts);
                assert_eq!(err(&mut c, &args), want, "{cmd} {opts:?}");
            }
        }
        assert_eq!(
            err(&mut c, &[cmd, "k", "abc", "NX", "FOO"]),
            "ERR Unsupported option FOO"
        );
        assert_eq!(
            err(&mut c, &[cmd, "k", "100", "XX", "nope"]),
            "ERR Unsupported option nope"
        );
        assert_eq!(
            err(&mut c, &[cmd, "k", "abc"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err(&mut c, &[cmd, "k", "1.5", "GT"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err(&mut c, &[cmd, "k"]),
            format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.to_lowercase()
            )
        );
    }
}

#[test]
fn expire_time_overflow_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<String>(&mut c, &["SET", "k", "v"]).unwrap();
    let max = "9223372036854775807";
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", max]),
        "ERR invalid expire time in 'expire' command"
    );
    // Seconds that fit ×1000 but not once now is added.
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "9223372036854775"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "-9223372036854776"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        err(&mut c, &["PEXPIRE", "k", max]),
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(
        err(&mut c, &["EXPIREAT", "k", max]),
        "ERR invalid expire time in 'expireat' command"
    );
    // An absolute time in ms has no base to add: the largest one is accepted.
    assert_eq!(run::<i64>(&mut c, &["PEXPIREAT", "k", max]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["PEXPIRETIME", "k"]).unwrap(), i64::MAX);
    assert!(pttl(&mut c, "k") > i64::MAX - now_ms() - 10_000);
    // Errors leave the key alone.
    assert_eq!(run::<String>(&mut c, &["GET", "k"]).unwrap(), "v");
}

#[test]
fn negative_and_past_times_delete_the_key() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let past = (now_ms() - 10_000).to_string();
    let past_s = ((now_ms() - 10_000) / 1000).to_string();
    for args in [
        &["EXPIRE", "k", "-1"][..],
        &["EXPIRE", "k", "0"],
        &["PEXPIRE", "k", "0"],
        &["PEXPIRE", "k", "-9223372036854775808"],
        &["EXPIRE", "k", "-9223372036854775"],
        &["EXPIREAT", "k", "1"],
        &["EXPIREAT", "k", &past_s],
        &["PEXPIREAT", "k", &past],
        &["PEXPIREAT", "k", "-5"],
        &["EXPIRE", "k", "-1", "LT"],
        &["EXPIRE", "k", "-1", "NX"],
    ] {
        run::<i64>(&mut c, &["HSET", "k", "f", "v"]).unwrap();
        assert_eq!(run::<i64>(&mut c, args).unwrap(), 1, "{args:?}");
        assert_eq!(run::<i64>(&mut c, &["EXISTS", "k"]).unwrap(), 0, "{args:?}");
        assert_eq!(run::<i64>(&mut c, &["TTL", "k"]).unwrap(), -2);
    }
    // A refused condition leaves the key, even with a past time.
    run::<String>(&mut c, &["SET", "k", "v"]).unwrap();
    assert_eq!(run::<i64>(&mut c, &["EXPIRE", "k", "-1", "GT"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["EXPIRE", "k", "-1", "XX"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "k"]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 1);
}

#[test]
fn ttl_pttl_expiretime_and_persist() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for cmd in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        assert_eq!(run::<i64>(&mut c, &[cmd, "missing"]).unwrap(), -2, "{cmd}");
    }
    run::<String>(&mut c, &["SET", "k", "v"]).unwrap();
    for cmd in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        assert_eq!(run::<i64>(&mut c, &[cmd, "k"]).unwrap(), -1, "{cmd}");
    }
    assert_eq!(run::<i64>(&mut c, &["EXPIRE", "k", "100"]).unwrap(), 1);
    let ttl: i64 = run(&mut c, &["TTL", "k"]).unwrap();
    assert!(ttl_after(100).contains(&ttl), "{ttl}");
    let p = pttl(&mut c, "k");
    assert!(pttl_after(100_000).contains(&p), "{p}");
    // TTL rounds to the nearest second: 100,600 ms left reads 101, 100,400 reads 100. Read
    // between two PTTLs, so that time passing meanwhile (a stall on a busy machine) cannot
    // decide it.
    let round = |ms: i64| (ms + 500) / 1000;
    for set in [100_600, 100_400] {
        run::<i64>(&mut c, &["PEXPIRE", "k", &set.to_string()]).unwrap();
        let before = pttl(&mut c, "k");
        let ttl: i64 = run(&mut c, &["TTL", "k"]).unwrap();
        let after = pttl(&mut c, "k");
        assert!(
            (round(after)..=round(before)).contains(&ttl),
            "PEXPIRE {set}: TTL {ttl} read between PTTL {before} and {after}"
        );
    }

    // Absolute times come back as set; EXPIRETIME rounds to the nearest second as TTL does.
    let at: i64 = 4_102_444_800_600;
    assert_eq!(
        run::<i64>(&mut c, &["PEXPIREAT", "k", &at.to_string()]).unwrap(),
        1
    );
    assert_eq!(run::<i64>(&mut c, &["PEXPIRETIME", "k"]).unwrap(), at);
    assert_eq!(
        run::<i64>(&mut c, &["EXPIRETIME", "k"]).unwrap(),
        4_102_444_801
    );
    run::<i64>(&mut c, &["PEXPIREAT", "k", "4102444800400"]).unwrap();
    assert_eq!(
        run::<i64>(&mut c, &["EXPIRETIME", "k"]).unwrap(),
        4_102_444_800
    );
    assert_eq!(
        run::<i64>(&mut c, &["EXPIREAT", "k", "4102444800"]).unwrap(),
        1
    );
    assert_eq!(
        run::<i64>(&mut c, &["PEXPIRETIME", "k"]).unwrap(),
        4_102_444_800_000
    );

    // PERSIST removes a TTL once.
    assert_eq!(run::<i64>(&mut c, &["PERSIST", "k"]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["TTL", "k"]).unwrap(), -1);
    assert_eq!(run::<i64>(&mut c, &["PERSIST", "k"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["PERSIST", "missing"]).unwrap(), 0);
    assert_eq!(run::<String>(&mut c, &["GET", "k"]).unwrap(), "v");

    // Writes to a hash keep its TTL; SET replaces it.
    run::<i64>(&mut c, &["HSET", "h", "a", "1"]).unwrap();
    run::<i64>(&mut c, &["EXPIRE", "h", "100"]).unwrap();
    run::<i64>(&mut c, &["HSET", "h", "b", "2"]).unwrap();
    run::<i64>(&mut c, &["HINCRBY", "h", "n", "2"]).unwrap();
    run::<i64>(&mut c, &["HDEL", "h", "a"]).unwrap();
    assert!(ttl_after(100).contains(&run::<i64>(&mut c, &["TTL", "h"]).unwrap()));
    run::<String>(&mut c, &["SET", "h", "now a string"]).unwrap();
    assert_eq!(run::<i64>(&mut c, &["TTL", "h"]).unwrap(), -1);
}

#[test]
fn lazy_expiry() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let (k0, k1) = (key_on(0, "lazy"), key_on(1, "lazy"));
    // One pipeline, so that a slow machine cannot let the keys expire before the check.
    let (exists,): (i64,) = redis::pipe()
        .cmd("SET")
        .arg(&k0)
        .arg("v")
        .arg("PX")
        .arg(50)
        .ignore()
        .cmd("SET")
        .arg(&k1)
        .arg("v")
        .arg("PX")
        .arg(50)
        .ignore()
        .cmd("HSET")
        .arg("h")
        .arg("old")
        .arg(1)
        .ignore()
        .cmd("PEXPIRE")
        .arg("h")
        .arg(50)
        .ignore()
        .cmd("EXISTS")
        .arg(&k0)
        .arg(&k1)
        .arg("h")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 3);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(run::<Option<String>>(&mut c, &["GET", &k0]).unwrap(), None);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", &k1]).unwrap(), 0);
    for cmd in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        assert_eq!(run::<i64>(&mut c, &[cmd, &k1]).unwrap(), -2, "{cmd}");
    }
    assert_eq!(run::<String>(&mut c, &["TYPE", &k0]).unwrap(), "none");
    // Expired keys do not count as deleted, renamed or copied.
    run::<String>(&mut c, &["SET", "gone", "v", "PX", "1"]).unwrap();
    assert!(wait_until(DEADLINE, || pttl(&mut c, "gone") == -2));
    run::<String>(&mut c, &["SET", "gone", "v", "PX", "1"]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(run::<i64>(&mut c, &["DEL", "gone"]).unwrap(), 0);
    run::<String>(&mut c, &["SET", "gone", "v", "PX", "1"]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(err(&mut c, &["RENAME", "gone", "other"]), "ERR no such key");
    run::<String>(&mut c, &["SET", "gone", "v", "PX", "1"]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(run::<i64>(&mut c, &["COPY", "gone", "other"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["EXPIRE", "gone", "100"]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["PERSIST", "gone"]).unwrap(), 0);
    // A write to an expired hash starts a new one, without the old fields or TTL.
    assert_eq!(run::<i64>(&mut c, &["HSET", "h", "new", "2"]).unwrap(), 1);
    assert_eq!(
        run::<Vec<String>>(&mut c, &["HKEYS", "h"]).unwrap(),
        ["new"]
    );
    assert_eq!(run::<i64>(&mut c, &["TTL", "h"]).unwrap(), -1);
}

#[test]
fn active_expiry_removes_untouched_keys() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    const N: usize = 200_000;
    for batch in 0..N / 10_000 {
        let mut p = redis::pipe();
        for i in batch * 10_000..(batch + 1) * 10_000 {
            p.cmd("SET")
                .arg(format!("volatile:{i}"))
                .arg("v")
                .arg("PX")
                .arg(100)
                .ignore();
        }
        p.query::<()>(&mut c).unwrap();
    }
    run::<String>(&mut c, &["SET", "persistent", "v"]).unwrap();
    // Only DBSIZE and INFO from here on: nothing looks the volatile keys up.
    assert!(
        wait_until(DEADLINE, || {
            run::<i64>(&mut c, &["DBSIZE"]).unwrap() == 1
        }),
        "{} keys left",
        run::<i64>(&mut c, &["DBSIZE"]).unwrap()
    );
    assert_eq!(info_field(&mut c, "stats", "expired_keys"), N as i64);
    let keyspace: String = run(&mut c, &["INFO", "keyspace"]).unwrap();
    assert!(keyspace.contains("db0:keys=1,expires=0"), "{keyspace}");
    assert_eq!(run::<String>(&mut c, &["GET", "persistent"]).unwrap(), "v");
}

#[test]
fn ttl_survives_rename_and_copy_across_cores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let pairs = [
        ("{tag}a".to_string(), "{tag}b".to_string()),
        (key_on(0, "a"), key_on(0, "b")),
        (key_on(0, "a"), key_on(1, "b")),
        (key_on(1, "a"), key_on(0, "b")),
    ];
    for (src, dst) in &pairs {
        run::<i64>(&mut c, &["DEL", src, dst]).unwrap();
        run::<String>(&mut c, &["SET", src, "v", "PXAT", "4102444800123"]).unwrap();
        run::<String>(&mut c, &["RENAME", src, dst]).unwrap();
        assert_eq!(
            run::<i64>(&mut c, &["PEXPIRETIME", dst]).unwrap(),
            4_102_444_800_123,
            "{src} -> {dst}"
        );
        assert_eq!(run::<i64>(&mut c, &["RENAMENX", dst, src]).unwrap(), 1);
        assert_eq!(
            run::<i64>(&mut c, &["PEXPIRETIME", src]).unwrap(),
            4_102_444_800_123
        );
        assert_eq!(run::<i64>(&mut c, &["COPY", src, dst]).unwrap(), 1);
        assert_eq!(
            run::<i64>(&mut c, &["PEXPIRETIME", dst]).unwrap(),
            4_102_444_800_123
        );
        // A short TTL still fires after the move.
        let (left,): (i64,) = redis::pipe()
            .cmd("PEXPIRE")
            .arg(src)
            .arg(300)
            .ignore()
            .cmd("RENAME")
            .arg(src)
            .arg(dst)
            .ignore()
            .cmd("PTTL")
            .arg(dst)
            .query(&mut c)
            .unwrap();
        assert!((0..=300).contains(&left), "{left}");
        assert!(wait_until(DEADLINE, || {
            run::<i64>(&mut c, &["DBSIZE"]).unwrap() == 0
        }));
    }
}
