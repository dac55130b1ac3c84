//! The card helpers against live servers (Debian's redis-server: the helpers are client-side
//! and must work with any Redis-compatible server): the redis-rs extension trait on standalone
//! and cluster connections, compare-and-set rewrap, and `tallykv-card rewrap` / `scan`
//! through the built binary.

mod common;

use std::time::Instant;

use card::rewrap::{HashWrite, rewrap_key};
use card::{Envelope, Keyring, Pan, SealError, SealedFieldError, SealedFields, Sealer};
use common::{RedisCluster, RedisServer, card, keygen, stderr, stdout};
use redis::{Commands, ConnectionLike};

const PANS: [&str; 4] = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
];

fn key_id_of(sealed: &[u8]) -> String {
    Envelope::parse(sealed).unwrap().key_id.as_str().to_owned()
}

/// Two sealers: `old` seals under k1, `new` (after a rotation) under k2 and still opens k1.
fn rotated_pair() -> (Sealer, Sealer) {
    let mut keyring = Keyring::generate(card::KeyId::new("k1").unwrap()).unwrap();
    let old = Sealer::new(Keyring::from_json(&keyring.to_json()).unwrap());
    keyring.rotate(None).unwrap();
    (old, Sealer::new(keyring))
}

#[test]
fn sealed_fields_on_a_standalone_connection() {
    let server = RedisServer::start();
    let mut con = server.con();
    let sealer = Sealer::new(Keyring::generate(card::KeyId::new("k1").unwrap()).unwrap());
    let pan = Pan::parse("4111 1111 1111 1111").unwrap();

    con.hset_sealed(&sealer, "card:{c1}", "pan", &pan).unwrap();
    con.hset_sealed(&sealer, "card:{c1}", "blob", r#"{"exp":"12/30"}"#)
        .unwrap();
    let raw: Vec<u8> = con.hget("card:{c1}", "pan").unwrap();
    assert!(raw.starts_with(b"tkc\x01"));
    assert!(
        !raw.windows(4).any(|w| w == b"4111"),
        "the server holds no digits of the PAN"
    );

    let back = con
        .hget_open_pan(&sealer, "card:{c1}", "pan")
        .unwrap()
        .unwrap();
    assert_eq!(back.expose_digits(), "4111111111111111");
    assert_eq!(
        &*con
            .hget_open(&sealer, "card:{c1}", "blob")
            .unwrap()
            .unwrap(),
        br#"{"exp":"12/30"}"#
    );
    assert!(
        con.hget_open(&sealer, "card:{c1}", "missing")
            .unwrap()
            .is_none()
    );

    // Copied to another field or key by someone with server access: it does not open.
    let _: () = con.hset("card:{c1}", "pan2", &raw).unwrap();
    let _: () = con.hset("card:{c2}", "pan", &raw).unwrap();
    for (key, field) in [("card:{c1}", "pan2"), ("card:{c2}", "pan")] {
        match con.hget_open(&sealer, key, field) {
            Err(SealedFieldError::Seal(SealError::Tampered)) => {}
            other => panic!("{key} {field}: {other:?}"),
        }
    }
    // Plaintext in a field is reported, not opened.
    let _: () = con.hset("card:{c3}", "pan", "4111111111111111").unwrap();
    assert!(matches!(
        con.hget_open(&sealer, "card:{c3}", "pan"),
        Err(SealedFieldError::Seal(SealError::NotSealed))
    ));
    // A server error is a typed error too.
    let _: () = con.set("str", "x").unwrap();
    assert!(matches!(
        con.hget_open(&sealer, "str", "pan"),
        Err(SealedFieldError::Redis(_))
    ));
}

/// A connection that lets another client write to the key right before each MULTI/EXEC.
struct Meddler<F: FnMut(&mut redis::Connection)> {
    con: redis::Connection,
    other: redis::Connection,
    times: usize,
    meddle: F,
}

impl<F: FnMut(&mut redis::Connection)> ConnectionLike for Meddler<F> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        self.con.req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        if self.times > 0 {
            self.times -= 1;
            (self.meddle)(&mut self.other);
        }
        self.con.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.con.check_connection()
    }

    fn is_open(&self) -> bool {
        self.con.is_open()
    }
}

#[test]
fn rewrap_never_overwrites_a_value_that_changed_meanwhile() {
    let server = RedisServer::start();
    let (old, new) = rotated_pair();
    let mut con = server.con();
    con.hset_sealed(&old, "card:{m}", "pan", PANS[0]).unwrap();
    con.hset_sealed(&old, "card:{m}", "blob", "blob-v1")
        .unwrap();

    // Someone writes a new PAN between rewrap's read and its EXEC: EXEC is refused, the key
    // is read again, and the new value (already under k2) is kept.
    let changed = new.seal("card:{m}", "pan", PANS[1].as_bytes()).unwrap();
    let mut meddler = Meddler {
        con: server.con(),
        other: server.con(),
        times: 1,
        meddle: |c: &mut redis::Connection| {
            let _: () = c.hset("card:{m}", "pan", &changed).unwrap();
        },
    };
    let r = rewrap_key(&mut meddler, &new, b"card:{m}", HashWrite::Hset).unwrap();
    assert_eq!(
        (r.conflicts, r.resealed, r.current, r.gave_up),
        (1, 1, 1, false),
        "{r:?}"
    );
    assert_eq!(
        con.hget_open_pan(&new, "card:{m}", "pan")
            .unwrap()
            .unwrap()
            .expose_digits(),
        PANS[1]
    );
    let blob: Vec<u8> = con.hget("card:{m}", "blob").unwrap();
    assert_eq!(key_id_of(&blob), "k2");
    assert_eq!(&*new.open("card:{m}", "blob", &blob).unwrap(), b"blob-v1");

    // A key that changes before every EXEC is left alone after a few tries.
    con.hset_sealed(&old, "card:{busy}", "pan", PANS[2])
        .unwrap();
    let mut n = 0;
    let mut meddler = Meddler {
        con: server.con(),
        other: server.con(),
        times: usize::MAX,
        meddle: |c: &mut redis::Connection| {
            n += 1;
            let _: () = c.hset("card:{busy}", "seen", n).unwrap();
        },
    };
    let r = rewrap_key(&mut meddler, &new, b"card:{busy}", HashWrite::Hset).unwrap();
    assert!(
        r.gave_up && r.conflicts == card::rewrap::ATTEMPTS as u64,
        "{r:?}"
    );
    let pan: Vec<u8> = con.hget("card:{busy}", "pan").unwrap();
    assert_eq!(key_id_of(&pan), "k1", "nothing was written");
}

/// Fills a server with 300 card hashes and 20 sealed strings under the keyring's first key.
fn fill(con: &mut redis::Connection, sealer: &Sealer) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pipe = redis::pipe();
    for i in 0..300 {
        let key = format!("card:{i}");
        let pan = PANS[i % PANS.len()];
        pipe.hset(
            &key,
            "pan",
            sealer.seal(&key, "pan", pan.as_bytes()).unwrap(),
        )
        .ignore();
        pipe.hset(
            &key,
            "blob",
            sealer
                .seal(&key, "blob", format!("blob {i}").as_bytes())
                .unwrap(),
        )
        .ignore();
        pipe.hset(&key, "note", "not sealed").ignore();
        keys.push(key);
    }
    for i in 0..20 {
        let key = format!("tok:{i}");
        pipe.set_ex(
            &key,
            sealer
                .seal(&key, "", format!("token {i}").as_bytes())
                .unwrap(),
            1000,
        )
        .ignore();
        keys.push(key);
    }
    pipe.rpush("other", "a list is left alone").ignore();
    pipe.exec(con).unwrap();
    keys
}

/// The key id of each sealed value of `key` (fields "pan" and "blob", or the string value),
/// checking that it still opens to what `fill` wrote.
fn ids_of(con: &mut redis::Connection, sealer: &Sealer, key: &str) -> Vec<String> {
    if let Some(i) = key.strip_prefix("tok:") {
        let v: Vec<u8> = con.get(key).unwrap();
        assert_eq!(
            &*sealer.open(key, "", &v).unwrap(),
            format!("token {i}").as_bytes()
        );
        return vec![key_id_of(&v)];
    }
    let i: usize = key.strip_prefix("card:").unwrap().parse().unwrap();
    let pan: Vec<u8> = con.hget(key, "pan").unwrap();
    let blob: Vec<u8> = con.hget(key, "blob").unwrap();
    assert_eq!(
        &*sealer.open(key, "pan", &pan).unwrap(),
        PANS[i % PANS.len()].as_bytes()
    );
    assert_eq!(
        &*sealer.open(key, "blob", &blob).unwrap(),
        format!("blob {i}").as_bytes()
    );
    vec![key_id_of(&pan), key_id_of(&blob)]
}

#[test]
fn rewrap_cli_moves_every_value_to_the_active_key_resumably() {
    let server = RedisServer::start();
    let port = server.port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keygen(dir.path());
    let mut con = server.con();
    let old = Sealer::new(Keyring::from_file(keys_file.as_ref()).unwrap());
    let keys = fill(&mut con, &old);
    let rotated = card(&["rotate", "--keyring", &keys_file], b"", &[]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let new = Sealer::new(Keyring::from_file(keys_file.as_ref()).unwrap());
    assert_eq!(new.provider().active_key_id().as_str(), "k2");
    // Let the server finish growing its key table, so that SCAN never returns a key twice.
    std::thread::sleep(std::time::Duration::from_millis(300));

    // Resume after the first SCAN batch, as if a run had been stopped there.
    let (cursor, first): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("*")
        .arg("COUNT")
        .arg(50)
        .query(&mut con)
        .unwrap();
    assert!(cursor != 0 && !first.is_empty());
    let resume = format!("0:{cursor}");
    let base = [
        "rewrap",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--keyring",
        &keys_file,
        "--count",
        "50",
    ];
    let out = card(&[&base[..], &["--cursor", &resume]].concat(), b"", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("resume with --cursor 1:0"), "{log}");
    assert!(log.contains("0 failed"), "{log}");
    for key in &keys {
        let ids = ids_of(&mut con, &new, key);
        if !first.contains(key) {
            assert!(ids.iter().all(|id| id == "k2"), "{key}: {ids:?}");
        }
    }
    let untouched = first
        .iter()
        .filter(|k| keys.contains(k))
        .filter(|k| ids_of(&mut con, &new, k).contains(&"k1".to_owned()));
    assert!(
        untouched.count() > 0,
        "the keys before the cursor were skipped"
    );

    // A full run, rate-limited: everything ends under k2, TTLs kept.
    let started = Instant::now();
    let out = card(&[&base[..], &["--rate", "500"]].concat(), b"", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed().as_secs_f64() >= 0.6,
        "321 keys at 500/s take 0.64 s at least"
    );
    for key in &keys {
        assert!(
            ids_of(&mut con, &new, key).iter().all(|id| id == "k2"),
            "{key}"
        );
    }
    let ttl: i64 = con.ttl("tok:3").unwrap();
    assert!(ttl > 900, "SET KEEPTTL kept the string's TTL: {ttl}");
    let plain: String = con.hget("card:7", "note").unwrap();
    assert_eq!(plain, "not sealed");

    // A stale value that does not open is reported (masked names), the exit status is 1.
    let wrong_place = old.seal("card:4111111111111111", "pan", b"x").unwrap();
    let _: () = con
        .hset("card:4111111111111111", "pan", &wrong_place)
        .unwrap();
    let _: () = con
        .hset("card:4111111111111111", "pan2", &wrong_place)
        .unwrap();
    let out = card(&base, b"", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("\"card:411111******1111\" field \"pan2\": the sealed value does not open"),
        "{log}"
    );
    assert!(!log.contains("4111111111111111"), "{log}");
}

#[test]
fn scan_cli_reports_plaintext_pans_masked() {
    let server = RedisServer::start();
    let port = server.port.to_string();
    let mut con = server.con();
    let sealer = Sealer::new(Keyring::generate(card::KeyId::new("k1").unwrap()).unwrap());
    let mut pipe = redis::pipe();
    // Plaintext card numbers, one in each place scan looks.
    pipe.set("plain:str", r#"{"pan":"4111111111111111","exp":"12/30"}"#)
        .ignore();
    pipe.hset("plain:hash", "pan", "5555 5555 5555 4444")
        .ignore();
    pipe.hset("plain:hash2", "378282246310005", "field name")
        .ignore();
    pipe.set("card:4222222222222", "in the key name").ignore();
    pipe.sadd("plain:set", "3530111333300000").ignore();
    pipe.zadd("plain:zset", "30569309025904", 1).ignore();
    // Deep in collections too large for one page.
    for i in 0..450 {
        let element = if i == 420 {
            "6011-1111-1111-1117".to_owned()
        } else {
            format!("item {i}")
        };
        pipe.rpush("plain:list", element).ignore();
    }
    for i in 0..500 {
        let value = if i == 333 {
            "ref 6759649826438453".to_owned()
        } else {
            format!("v{i}")
        };
        pipe.hset("plain:bighash", format!("f{i}"), value).ignore();
    }
    // What must not be reported: sealed values, fingerprints, counters, amounts, timestamps.
    pipe.hset(
        "sealed:1",
        "pan",
        sealer.seal("sealed:1", "pan", b"4111111111111111").unwrap(),
    )
    .ignore();
    pipe.set("vel:{rqCWcXrGlGvOk31rGk4NWSwDCE9mQhZ-yGP5Y6Bj4Y8}:1h", 3)
        .ignore();
    pipe.set("amount", "1234.56").ignore();
    pipe.set("ts", "1714000000001").ignore();
    pipe.set("day", "2024-01-15 10:20:30").ignore();
    // Luhn-valid 13 digits but no brand: reported, except with --brands-only.
    pipe.set("ts:luhn", "1714000000005").ignore();
    pipe.exec(&mut con).unwrap();

    let scan = |extra: &[&str]| {
        card(
            &[&["scan", "--host", "127.0.0.1", "--port", &port][..], extra].concat(),
            b"",
            &[],
        )
    };
    let out = scan(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    let mut lines: Vec<&str> = report
        .lines()
        .map(|l| l.split_once(" key ").unwrap().1)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "\"card:422222***2222\" name: 422222***2222 (visa)",
            "\"plain:bighash\" hash field \"f333\" value: 675964******8453 (maestro)",
            "\"plain:hash\" hash field \"pan\" value: 555555******4444 (mastercard)",
            "\"plain:hash2\" hash field name: 378282*****0005 (amex)",
            "\"plain:list\" list element 420: 601111******1117 (discover)",
            "\"plain:set\" set member: 353011******0000 (jcb)",
            "\"plain:str\" value: 411111******1111 (visa)",
            "\"plain:zset\" sorted set member: 305693****5904 (diners)",
            "\"ts:luhn\" value: 171400***0005 (unknown brand)",
        ]
    );
    let everything = format!("{report}{}", stderr(&out));
    for pan in [
        "4111111111111111",
        "5555 5555 5555 4444",
        "378282246310005",
        "4222222222222",
        "6011-1111-1111-1117",
    ] {
        assert!(!everything.contains(pan), "{pan} printed in the clear");
    }
    assert!(
        stderr(&out).contains("9 plaintext card numbers in 9 keys"),
        "{}",
        stderr(&out)
    );

    let brands = scan(&["--brands-only"]);
    assert_eq!(brands.status.code(), Some(1));
    assert_eq!(stdout(&brands).lines().count(), 8);
    assert!(!stdout(&brands).contains("ts:luhn"));

    // Only a key pattern: a clean subset exits 0.
    let clean = scan(&["--match", "sealed:*"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(stdout(&clean).is_empty());
}

#[test]
fn everything_on_a_cluster() {
    let cluster = RedisCluster::start();
    let port = cluster.nodes[0].port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keygen(dir.path());
    let old = Sealer::new(Keyring::from_file(keys_file.as_ref()).unwrap());

    // The extension trait on a redis-rs cluster connection, keys spread over every node.
    let mut con = cluster.con();
    for i in 0..60 {
        let pan = Pan::parse(PANS[i % PANS.len()]).unwrap();
        con.hset_sealed(&old, format!("card:{i}"), "pan", &pan)
            .unwrap();
    }
    for i in 0..60 {
        let back = con
            .hget_open_pan(&old, format!("card:{i}"), "pan")
            .unwrap()
            .unwrap();
        assert_eq!(back.expose_digits(), PANS[i % PANS.len()]);
    }
    for i in 0..30 {
        let _: () = con
            .set(
                format!("leak:{i}"),
                format!("card {}", PANS[i % PANS.len()]),
            )
            .unwrap();
    }
    for node in &cluster.nodes {
        let n: i64 = redis::cmd("DBSIZE").query(&mut node.con()).unwrap();
        assert!(n > 0, "every primary holds some keys");
    }

    // scan --cluster walks every primary.
    let scan = card(
        &["scan", "--cluster", "--host", "127.0.0.1", "--port", &port],
        b"",
        &[],
    );
    assert_eq!(scan.status.code(), Some(1), "{}", stderr(&scan));
    assert_eq!(stdout(&scan).lines().count(), 30, "{}", stdout(&scan));
    assert!(stdout(&scan).lines().all(|l| l.contains("\"leak:")));
    assert!(stderr(&scan).contains("node 3/3"), "{}", stderr(&scan));

    // rewrap --cluster moves every sealed field on every primary.
    let rotated = card(&["rotate", "--keyring", &keys_file], b"", &[]);
    assert!(rotated.status.success());
    let new = Sealer::new(Keyring::from_file(keys_file.as_ref()).unwrap());
    let out = card(
        &[
            "rewrap",
            "--cluster",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--keyring",
            &keys_file,
            "--match",
            "card:*",
        ],
        b"",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("60 re-sealed"), "{}", stderr(&out));
    for i in 0..60 {
        let raw: Vec<u8> = con.hget(format!("card:{i}"), "pan").unwrap();
        assert_eq!(key_id_of(&raw), "k2");
        let back = con
            .hget_open_pan(&new, format!("card:{i}"), "pan")
            .unwrap()
            .unwrap();
        assert_eq!(back.expose_digits(), PANS[i % PANS.len()]);
    }
}
