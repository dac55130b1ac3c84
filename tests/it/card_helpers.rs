//! The card crate's redis-rs helpers against tallykv itself (card/'s own tests run them
//! against Debian's redis-server): sealed fields, fingerprints as counter keys and rewrap,
//! standalone and on a cluster, with `card-pan-guard refuse` on — what the helpers store
//! never trips the guard, while a plaintext card number is refused.

use crate::common;

use card::rewrap::{HashWrite, rewrap_key};
use card::{KeyId, Keyring, Pan, SealedFields, Sealer};
use common::Server;
use common::cluster::Cluster;

const PANS: [&str; 4] = [
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "6011111111111117",
];

fn digits(pan: &str) -> String {
    pan.chars().filter(char::is_ascii_digit).collect()
}

fn keyring(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("card.keys");
    Keyring::generate(KeyId::new("k1").unwrap())
        .unwrap()
        .write_new(&path)
        .unwrap();
    path
}

fn guard_refuses(con: &mut impl redis::ConnectionLike, key: &str) {
    let e = redis::cmd("SET")
        .arg(key)
        .arg(format!("card {}", PANS[0]))
        .exec(con)
        .unwrap_err();
    assert!(common::error_text(&e).contains("card-pan-guard"), "{e}");
}

#[test]
fn sealed_fields_fingerprints_and_rewrap_on_a_guarded_server() {
    let s = Server::start(&["--card-pan-guard", "refuse"]);
    let mut con = s.conn();
    let dir = tempfile::tempdir().unwrap();
    let path = keyring(dir.path());
    let ring = std::sync::Arc::new(Keyring::from_file(&path).unwrap());
    let sealer = Sealer::new(ring.clone());
    for (i, pan) in PANS.iter().enumerate() {
        let pan: Pan = pan.parse().unwrap();
        let key = format!("card:{i}");
        con.hset_sealed(&sealer, &key, "pan", &pan).unwrap();
        con.hset_sealed(&sealer, &key, "holder", "J. DOE 12/29".as_bytes())
            .unwrap();
        // The velocity counter keyed by the card's fingerprint, not by the card.
        let fp = ring.fingerprint_key().fingerprint(&pan);
        let n: i64 = redis::cmd("INCR")
            .arg(format!("vel:{{{}}}:1h", fp.as_str()))
            .query(&mut con)
            .unwrap();
        assert_eq!(n, 1);
    }
    guard_refuses(&mut con, "leak");
    for (i, pan) in PANS.iter().enumerate() {
        let back = con
            .hget_open_pan(&sealer, format!("card:{i}"), "pan")
            .unwrap()
            .unwrap();
        assert_eq!(back.expose_digits(), digits(pan));
    }
    // A sealed value copied to another key does not open.
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg("card:0")
        .arg("pan")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("card:x")
        .arg("pan")
        .arg(sealed)
        .query(&mut con)
        .unwrap();
    assert!(con.hget_open_pan(&sealer, "card:x", "pan").is_err());
    // Rotation: rewrap moves every field to k2 with WATCH/MULTI, through the guard.
    let mut ring = Keyring::from_file(&path).unwrap();
    ring.rotate(Some(KeyId::new("k2").unwrap())).unwrap();
    let sealer = Sealer::new(ring);
    let write = HashWrite::detect(&mut con).unwrap();
    assert_eq!(write, HashWrite::HsetexKeepTtl, "tallykv has HSETEX");
    for i in 0..PANS.len() {
        let done = rewrap_key(&mut con, &sealer, format!("card:{i}").as_bytes(), write).unwrap();
        assert_eq!(
            (done.resealed, done.failed.len(), done.gave_up),
            (2, 0, false)
        );
        let raw: Vec<u8> = redis::cmd("HGET")
            .arg(format!("card:{i}"))
            .arg("pan")
            .query(&mut con)
            .unwrap();
        assert_eq!(card::Envelope::parse(&raw).unwrap().key_id.as_str(), "k2");
        let back = con
            .hget_open_pan(&sealer, format!("card:{i}"), "pan")
            .unwrap()
            .unwrap();
        assert_eq!(back.expose_digits(), digits(PANS[i]));
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
    assert!(info.contains("card_pan_guard_refusals:1\r\n"), "{info}");
}

#[test]
fn sealed_fields_on_a_cluster() {
    let c = Cluster::start(3, &["--card-pan-guard", "refuse"]);
    let mut con = c.cluster_client().get_connection().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(Keyring::from_file(&keyring(dir.path())).unwrap());
    for i in 0..60 {
        let pan: Pan = PANS[i % PANS.len()].parse().unwrap();
        con.hset_sealed(&sealer, format!("card:{i}"), "pan", &pan)
            .unwrap();
    }
    for i in 0..60 {
        let back = con
            .hget_open_pan(&sealer, format!("card:{i}"), "pan")
            .unwrap()
            .unwrap();
        assert_eq!(back.expose_digits(), digits(PANS[i % PANS.len()]));
    }
    guard_refuses(&mut con, "leak");
    // A script that tries to store a card number is refused whole on the leader, and none
    // of its writes reach the replicas (its records are dropped before they are proposed).
    let _: () = redis::cmd("SET")
        .arg("{c}:old")
        .arg("before")
        .query(&mut con)
        .unwrap();
    let e = redis::cmd("EVAL")
        .arg(
            "redis.call('SET', KEYS[1], 'new') redis.call('INCR', KEYS[2]) \
             redis.pcall('SET', KEYS[3], ARGV[1]) return 1",
        )
        .arg(3)
        .arg("{c}:old")
        .arg("{c}:n")
        .arg("{c}:pan")
        .arg(PANS[0])
        .exec(&mut con)
        .unwrap_err();
    assert!(common::error_text(&e).contains("card-pan-guard"), "{e}");
    let _: () = redis::cmd("SET")
        .arg("{c}:later")
        .arg("x")
        .query(&mut con)
        .unwrap();
    let expected: std::collections::BTreeMap<String, Option<String>> = [
        ("{c}:old", Some("before")),
        ("{c}:n", None),
        ("{c}:pan", None),
        ("{c}:later", Some("x")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    common::load::replicas_converge(&c, &expected);
    // Spread over the nodes: every node leads some of them.
    for i in 0..c.len() {
        let n: i64 = c.query(i, &redis::cmd("DBSIZE"));
        assert!(n > 0, "node {i} holds none");
    }
}
