//! Encryption at rest (`encryption-at-rest-key-file`) through real processes: what a data dir
//! holds on disk, with it off and on (so the search can fail), the start refused without the
//! right key, and a key rotation while serving.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use card::keyring::{KeyId, Keyring};
use common::cluster::{Cluster, Router};
use common::load::{keys_per_group, replicas_converge, set_until_acked};
use common::{Server, int, ok, run, wait_until};

/// Test card numbers (Visa, Mastercard, Amex, Discover), written in plaintext by clients.
const PANS: [&str; 4] = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
];

/// A keyring file at `dir/name` with keys `ids`, the last one active.
fn key_file(dir: &Path, name: &str, ids: &[&str]) -> PathBuf {
    let mut ring = Keyring::generate(KeyId::new(ids[0]).unwrap()).unwrap();
    for id in &ids[1..] {
        ring.rotate(Some(KeyId::new(id).unwrap())).unwrap();
    }
    let path = dir.join(name);
    ring.write_new(&path).unwrap();
    path
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p);
            }
        }
    }
    found
}

fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let info: String = run(c, &["INFO", "persistence"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO persistence has no {name}:\n{info}"))
        .to_string()
}

/// Writes each PAN through a different data type, a script and a large value's delta.
fn write_pans(c: &mut redis::Connection) {
    ok(c, &["SET", "card:str", PANS[0]]);
    assert_eq!(int(c, &["HSET", "card:hash", "pan", PANS[1]]), 1);
    let filler: Vec<String> = (0..3000).map(|i| format!("item-{i}")).collect();
    let mut push = vec!["RPUSH", "card:list"];
    push.extend(filler.iter().map(String::as_str));
    int(c, &push);
    // A small change to a large list: stored as a delta.
    int(c, &["RPUSH", "card:list", PANS[2]]);
    int(c, &["SADD", "card:set", PANS[3]]);
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("card:script")
        .arg(format!("exp 12/29 {}", PANS[0]))
        .query(c)
        .unwrap();
    ok(c, &["SELECT", "3"]);
    ok(c, &["SET", "card:db3", PANS[1]]);
    ok(c, &["SELECT", "0"]);
}

fn read_pans_back(c: &mut redis::Connection) {
    assert_eq!(run::<String>(c, &["GET", "card:str"]).unwrap(), PANS[0]);
    assert_eq!(
        run::<String>(c, &["HGET", "card:hash", "pan"]).unwrap(),
        PANS[1]
    );
    assert_eq!(
        run::<String>(c, &["LINDEX", "card:list", "-1"]).unwrap(),
        PANS[2]
    );
    assert_eq!(int(c, &["LLEN", "card:list"]), 3001);
    assert_eq!(int(c, &["SISMEMBER", "card:set", PANS[3]]), 1);
    assert!(
        run::<String>(c, &["GET", "card:script"])
            .unwrap()
            .ends_with(PANS[0])
    );
    ok(c, &["SELECT", "3"]);
    assert_eq!(run::<String>(c, &["GET", "card:db3"]).unwrap(), PANS[1]);
    ok(c, &["SELECT", "0"]);
}

fn shutdown(s: &mut Server) {
    let mut c = s.conn();
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
    assert!(
        s.wait_exit(Duration::from_secs(30)).is_some(),
        "SHUTDOWN did not stop the server"
    );
}

#[test]
fn no_file_of_the_data_dir_holds_a_written_pan() {
    for on in [false, true] {
        let keys = tempfile::tempdir().unwrap();
        let path = key_file(keys.path(), "node.keys", &["k1"]);
        let path = path.to_str().unwrap();
        let args: Vec<&str> = if on {
            vec!["--encryption-at-rest-key-file", path]
        } else {
            vec![]
        };
        let mut s = Server::start(&args);
        let mut c = s.conn();
        write_pans(&mut c);
        ok(&mut c, &["SAVE"]);
        // Before the shutdown: fjall's journal holds what was written.
        let mut journal = Vec::new();
        for pan in PANS {
            journal.extend(files_holding(&s.dir, pan.as_bytes()));
        }
        shutdown(&mut s);
        // After it: tables, and the SAVE copy.
        let mut tables = Vec::new();
        for pan in PANS {
            tables.extend(files_holding(&s.dir, pan.as_bytes()));
        }
        if on {
            assert_eq!(
                journal,
                Vec::<PathBuf>::new(),
                "encrypted at rest, yet in plaintext"
            );
            assert_eq!(
                tables,
                Vec::<PathBuf>::new(),
                "encrypted at rest, yet in plaintext"
            );
        } else {
            // The search finds plaintext when there is some: in the journal, the tables and
            // the SAVE copy.
            assert!(
                !journal.is_empty(),
                "the search found no plaintext PAN with encryption off"
            );
            assert!(
                tables.iter().any(|p| p.starts_with(s.dir.join("snapshot"))),
                "{tables:?}"
            );
            assert!(
                tables
                    .iter()
                    .any(|p| p.starts_with(s.dir.join("tallykv.db")))
            );
        }
        // Key names stay plaintext, as the README says.
        assert!(!files_holding(&s.dir, b"card:hash").is_empty());
        s.restart();
        s.wait_loaded();
        let mut c = s.conn();
        read_pans_back(&mut c);
        assert_eq!(
            info_field(&mut c, "at_rest_encryption"),
            if on { "1" } else { "0" }
        );
    }
}

/// Runs the server on `dir` with `args`, expecting it to refuse to start; its stderr.
fn start_fails(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tallykv-server"))
        .args(["--port", "0", "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_or_wrong_key_stops_the_start() {
    let keys = tempfile::tempdir().unwrap();
    let good = key_file(keys.path(), "good.keys", &["k1"]);
    let other = key_file(keys.path(), "other.keys", &["k1"]);
    let elsewhere = key_file(keys.path(), "elsewhere.keys", &["k7"]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(
        dir.path(),
        &["--encryption-at-rest-key-file", good.to_str().unwrap()],
    );
    ok(&mut s.conn(), &["SET", "card", PANS[0]]);
    shutdown(&mut s);
    let stderr = start_fails(dir.path(), &[]);
    assert!(
        stderr
            .contains("encrypted at rest (key id 'k1') and encryption-at-rest-key-file is not set"),
        "{stderr}"
    );
    let stderr = start_fails(
        dir.path(),
        &["--encryption-at-rest-key-file", other.to_str().unwrap()],
    );
    assert!(
        stderr.contains("under key id 'k1' does not decrypt"),
        "{stderr}"
    );
    let stderr = start_fails(
        dir.path(),
        &["--encryption-at-rest-key-file", elsewhere.to_str().unwrap()],
    );
    assert!(
        stderr.contains("key id 'k1', which the encryption-at-rest-key-file does not hold"),
        "{stderr}"
    );
    let stderr = start_fails(
        dir.path(),
        &["--encryption-at-rest-key-file", "/nonexistent/keys"],
    );
    assert!(
        stderr.contains("encryption-at-rest-key-file: cannot read"),
        "{stderr}"
    );
    // Nothing was changed by the refused starts: the right key still opens it.
    s.restart();
    s.wait_loaded();
    assert_eq!(
        run::<String>(&mut s.conn(), &["GET", "card"]).unwrap(),
        PANS[0]
    );
}

#[test]
fn a_rotation_re_encrypts_everything_while_serving() {
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), "node.keys", &["k1"]);
    let mut s = Server::start(&["--encryption-at-rest-key-file", path.to_str().unwrap()]);
    let mut c = s.conn();
    write_pans(&mut c);
    for i in 0..2000 {
        ok(&mut c, &["SET", &format!("v:{i}"), &format!("value {i}")]);
    }
    ok(&mut c, &["SAVE"]);
    assert_eq!(info_field(&mut c, "at_rest_keys_in_use"), "k1");
    // The operator adds k2 (active) and tells the server.
    let mut ring = Keyring::from_file(&path).unwrap();
    ring.rotate(Some(KeyId::new("k2").unwrap())).unwrap();
    ring.replace_file(&path).unwrap();
    ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "encryption-at-rest-key-file",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(info_field(&mut c, "at_rest_active_key"), "k2");
    // Writes go on meanwhile.
    for i in 0..200 {
        ok(&mut c, &["SET", &format!("during:{i}"), "x"]);
    }
    assert!(
        wait_until(Duration::from_secs(60), || {
            info_field(&mut c, "at_rest_rotation_in_progress") == "0"
        }),
        "the rotation did not finish"
    );
    assert_eq!(info_field(&mut c, "at_rest_keys_in_use"), "k2");
    assert!(
        info_field(&mut c, "at_rest_values_resealed")
            .parse::<u64>()
            .unwrap()
            >= 2000
    );
    // A key file that lacks a key still in use is refused, and changes nothing.
    let lacking = key_file(keys.path(), "lacking.keys", &["k3"]);
    let e = common::err(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "encryption-at-rest-key-file",
            lacking.to_str().unwrap(),
        ],
    );
    assert!(e.contains("does not hold"), "{e}");
    assert_eq!(info_field(&mut c, "at_rest_active_key"), "k2");
    shutdown(&mut s);
    // k1 may now leave the file: nothing on disk needs it (the SAVE copy included).
    let ring = Keyring::from_file(&path).unwrap();
    let mut only_k2: serde_json::Value = serde_json::from_slice(&ring.to_json()).unwrap();
    only_k2["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["id"] != "k1");
    std::fs::write(&path, serde_json::to_vec(&only_k2).unwrap()).unwrap();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    read_pans_back(&mut c);
    assert_eq!(
        run::<String>(&mut c, &["GET", "v:1999"]).unwrap(),
        "value 1999"
    );
    assert_eq!(run::<String>(&mut c, &["GET", "during:199"]).unwrap(), "x");
    // The SAVE copy too: a server started on a copy of it with only k2 loads it.
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&s.dir.join("snapshot"), copy.path());
    let s2 = Server::start_in(
        copy.path(),
        &["--encryption-at-rest-key-file", path.to_str().unwrap()],
    );
    let mut c2 = s2.conn();
    read_pans_back(&mut c2);
}

#[test]
fn turning_encryption_on_seals_what_was_written_before() {
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), "node.keys", &["k1"]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    write_pans(&mut c);
    ok(&mut c, &["SAVE"]);
    shutdown(&mut s);
    assert!(!files_holding(dir.path(), PANS[0].as_bytes()).is_empty());
    let mut s = Server::start_in(
        dir.path(),
        &["--encryption-at-rest-key-file", path.to_str().unwrap()],
    );
    let mut c = s.conn();
    read_pans_back(&mut c);
    assert!(
        wait_until(Duration::from_secs(60), || {
            info_field(&mut c, "at_rest_rotation_in_progress") == "0"
        }),
        "the first pass did not finish"
    );
    shutdown(&mut s);
    // The pass compacted the values' old versions away (fjall deletes the tables they were
    // in once no reader holds them: at the latest when it opens next), and re-sealed the
    // SAVE copy. Only fjall's journal keeps what was written before until it rotates (after
    // 64 MB more), as the README says.
    s.restart();
    s.wait_loaded();
    let journal = |p: &PathBuf| p.extension().is_some_and(|e| e == "jnl");
    for pan in PANS {
        let holding = files_holding(dir.path(), pan.as_bytes());
        assert!(holding.iter().all(journal), "{pan}: {holding:?}");
    }
    read_pans_back(&mut s.conn());
}

/// A cluster whose nodes each have their own key: entries and snapshots cross the bus in
/// plaintext (or TLS) and are sealed by the receiver under its key; no node's dir — values,
/// Raft log, snapshot files — holds a written PAN, and with encryption off they do.
#[test]
fn each_cluster_node_seals_its_log_snapshots_and_values_under_its_own_key() {
    for on in [false, true] {
        let keys = tempfile::tempdir().unwrap();
        for i in 0..3 {
            key_file(keys.path(), &format!("node{i}.keys"), &[&format!("n{i}")]);
        }
        let per_node = keys.path().join("node{node}.keys");
        let per_node = per_node.to_str().unwrap();
        let mut args = vec![
            "--cluster-node-timeout",
            "500",
            "--cluster-snapshot-after",
            "20",
        ];
        if on {
            args.extend(["--encryption-at-rest-key-file", per_node]);
        }
        let mut c = Cluster::start(3, &args);
        let mut router = Router::new(&c, Duration::from_secs(5));
        let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
        // More entries per group than a snapshot interval: every leader snapshots and purges.
        for (g, ks) in keys_per_group(&c, "card", 40).iter().enumerate() {
            for (n, k) in ks.iter().enumerate() {
                let v = format!("{g}:{n}:{}", PANS[n % PANS.len()]);
                set_until_acked(&mut router, k, &v);
                expected.insert(k.clone(), Some(v));
            }
        }
        replicas_converge(&c, &expected);
        // A wiped node catches up by the leaders' snapshots, received and sealed under its
        // own key.
        let victim = 2;
        c.kill9(victim);
        c.wipe(victim);
        c.respawn(victim);
        c.wait_ok();
        replicas_converge(&c, &expected);
        assert!(
            c.log_count(victim, "installed the leader's snapshot") > 0,
            "{}",
            c.logs(30)
        );
        for i in 0..c.len() {
            let holding: Vec<PathBuf> = PANS
                .iter()
                .flat_map(|pan| files_holding(c.dir(i), pan.as_bytes()))
                .collect();
            let snapshots = c.dir(i).join("raft-snapshots");
            let snap_files: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            if on {
                assert_eq!(holding, Vec::<PathBuf>::new(), "node {i}");
                for f in &snap_files {
                    let head = std::fs::read(f).unwrap();
                    assert!(head.starts_with(b"TKVAREST"), "{f:?} is not sealed");
                }
                let info: String = c.query(i, redis::cmd("INFO").arg("persistence"));
                assert!(info.contains(&format!("at_rest_active_key:n{i}")), "{info}");
            } else {
                // The log (and on the leaders the snapshot files) hold them in plaintext.
                assert!(
                    holding
                        .iter()
                        .any(|p| !p.starts_with(c.dir(i).join("tallykv.db"))),
                    "node {i}: {holding:?}"
                );
            }
        }
    }
}

/// Whether any file under `dir` holds something sealed under key `id`: a sealed value or log
/// entry (magic, id length, id) or a sealed file's header.
fn sealed_under(dir: &Path, id: &str) -> Vec<PathBuf> {
    let mut value = vec![0xE7, b'A', b'R', 1, id.len() as u8];
    value.extend_from_slice(id.as_bytes());
    let mut file = b"TKVAREST\x01".to_vec();
    file.push(id.len() as u8);
    file.extend_from_slice(id.as_bytes());
    let mut found = files_holding(dir, &value);
    found.extend(files_holding(dir, &file));
    found
}

/// A key rotation on every node of a cluster while it serves: each node re-seals its values,
/// Raft log and snapshot files under its new key, says so in INFO, and restarts with the old
/// key gone from its key file.
#[test]
fn a_cluster_rotates_its_keys_while_serving() {
    let keys = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| key_file(keys.path(), &format!("node{i}.keys"), &["old"]))
        .collect();
    let per_node = keys.path().join("node{node}.keys");
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-node-timeout",
            "500",
            "--cluster-snapshot-after",
            "20",
            "--encryption-at-rest-key-file",
            per_node.to_str().unwrap(),
        ],
    );
    let mut router = Router::new(&c, Duration::from_secs(5));
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut write = |router: &mut Router, round: &str, n: usize| {
        for (g, ks) in keys_per_group(&c, round, n).iter().enumerate() {
            for k in ks {
                let v = format!("{round}:{g}:{k}");
                set_until_acked(router, k, &v);
                expected.insert(k.clone(), Some(v));
            }
        }
    };
    write(&mut router, "before", 30);
    for (i, f) in files.iter().enumerate() {
        let mut ring = Keyring::from_file(f).unwrap();
        ring.rotate(Some(KeyId::new("new").unwrap())).unwrap();
        ring.replace_file(f).unwrap();
        let reply: String = c.query(
            i,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("encryption-at-rest-key-file")
                .arg(f.to_str().unwrap()),
        );
        assert_eq!(reply, "OK");
    }
    write(&mut router, "during", 10);
    for i in 0..c.len() {
        let done = wait_until(Duration::from_secs(90), || {
            let info: String = c.query(i, redis::cmd("INFO").arg("persistence"));
            info.contains("at_rest_rotation_in_progress:0\r\n")
                && info.contains("at_rest_keys_in_use:new\r\n")
        });
        let info: String = c.query(i, redis::cmd("INFO").arg("persistence"));
        assert!(done, "node {i} did not finish its rotation:\n{info}");
        // fjall's journal keeps the versions the rotation replaced until it rotates (after
        // 64 MB), shadowed by the new ones and never read: the restart below, without the
        // old key, proves it. Nothing else holds anything under the old key.
        let left: Vec<PathBuf> = sealed_under(c.dir(i), "old")
            .into_iter()
            .filter(|p| p.extension().is_none_or(|e| e != "jnl"))
            .collect();
        assert_eq!(left, Vec::<PathBuf>::new(), "node {i}");
    }
    replicas_converge(&c, &expected);
    // The old key leaves every key file; the nodes restart and serve everything.
    for (i, f) in files.iter().enumerate() {
        let ring = Keyring::from_file(f).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&ring.to_json()).unwrap();
        json["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["id"] != "old");
        std::fs::remove_file(f).unwrap();
        std::fs::write(f, serde_json::to_vec(&json).unwrap()).unwrap();
        c.restart(i);
    }
    c.wait_ok();
    replicas_converge(&c, &expected);
}
