//! Persistence through the real binary: restarts (clean SHUTDOWN, SIGTERM and SIGKILL) keep
//! every type and TTL, keys that expired while down are dropped, `appendonly no` writes
//! nothing, the data dir lock, the LOADING state, SAVE/BGSAVE/LASTSAVE and their INFO fields,
//! the snapshot backup/restore procedure, and damaged files (fjall's recovery or a loud
//! start-up failure, never a silent partial load).

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{DEADLINE, Server, err, int, now_ms, ok, run, wait_until};

const LOADING_ERR: &str = "LOADING Valkey is loading the dataset in memory";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// INFO persistence as field -> value.
fn persistence(c: &mut redis::Connection) -> HashMap<String, String> {
    let info: String = run(c, &["INFO", "persistence"]).unwrap();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field(c: &mut redis::Connection, name: &str) -> String {
    persistence(c)
        .remove(name)
        .unwrap_or_else(|| panic!("no {name} in INFO persistence"))
}

fn field_i64(c: &mut redis::Connection, name: &str) -> i64 {
    let v = field(c, name);
    v.parse()
        .unwrap_or_else(|_| panic!("INFO {name}:{v} is not an integer"))
}

/// Waits (bounded) until the `loading:` line (not `async_loading:`) reads 0.
fn wait_ready(s: &Server) {
    let mut c = s.conn();
    let done = wait_until(Duration::from_secs(30), || {
        persistence(&mut c).get("loading").map(String::as_str) == Some("0")
    });
    assert!(done, "the server was still loading after 30 s");
}

/// `Server::start` plus a correct wait for the end of loading: the harness's `wait_loaded`
/// looks for the substring "loading:0", which `async_loading:0` always contains.
fn start(args: &[&str]) -> Server {
    let s = Server::start(args);
    wait_ready(&s);
    s
}

/// `Server::start_in` plus a correct wait for the end of loading.
fn start_in(dir: &Path, args: &[&str]) -> Server {
    let s = Server::start_in(dir, args);
    wait_ready(&s);
    s
}

/// Writes `n` string keys `{prefix}{i}` = `value(i)` with pipelined MSETs.
fn mset_many(c: &mut redis::Connection, prefix: &str, n: usize, value: impl Fn(usize) -> String) {
    for start in (0..n).step_by(20_000) {
        let mut pipe = redis::pipe();
        for chunk in (start..n.min(start + 20_000)).step_by(1000) {
            let mut cmd = redis::cmd("MSET");
            for i in chunk..n.min(chunk + 1000) {
                cmd.arg(format!("{prefix}{i}")).arg(value(i));
            }
            pipe.add_command(cmd).ignore();
        }
        pipe.query::<()>(c).expect("MSET pipeline");
    }
}

/// The values of `{prefix}{i}` for i in 0..n (None where missing).
fn mget_many(c: &mut redis::Connection, prefix: &str, n: usize) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).step_by(1000) {
        let mut cmd = redis::cmd("MGET");
        for i in chunk..n.min(chunk + 1000) {
            cmd.arg(format!("{prefix}{i}"));
        }
        let vals: Vec<Option<String>> = cmd.query(c).expect("MGET");
        out.extend(vals);
    }
    out
}

/// Sends SHUTDOWN (with `args`) and checks that no reply comes and the process exits 0.
fn shutdown(s: &mut Server, args: &[&str]) {
    let mut c = s.conn();
    let mut cmd = redis::cmd("SHUTDOWN");
    for a in args {
        cmd.arg(*a);
    }
    let reply = cmd.query::<redis::Value>(&mut c);
    assert!(
        reply.is_err(),
        "SHUTDOWN {args:?} must not reply (the connection closes), got {reply:?}"
    );
    wait_exit_0(s, &format!("SHUTDOWN {args:?}"));
}

/// What the server logs when a step of its shutdown gave up waiting (storage close): the
/// exit then comes late and without the guarantee the step stands for.
const SHUTDOWN_GAVE_UP: [&str; 2] = ["did not finish within", "not flushed within"];

/// Waits for the server to exit by itself after `what` (a hang fails after [`DEADLINE`]
/// twice over: the storage close alone may wait 2 × 30 s before giving up), and checks it
/// exited 0.
fn wait_exit_0(s: &mut Server, what: &str) {
    let status = s
        .wait_exit(2 * DEADLINE)
        .unwrap_or_else(|| panic!("{what}: still running after {:?}", 2 * DEADLINE));
    assert!(status.success(), "{what}: exit status {status}");
}

/// The server's log (`--logfile`), checked for shutdown steps that gave up waiting.
fn assert_clean_shutdown(log: &Path, what: &str) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let gave_up: Vec<&str> = text
        .lines()
        .filter(|l| SHUTDOWN_GAVE_UP.iter().any(|p| l.contains(p)))
        .collect();
    assert!(
        gave_up.is_empty(),
        "{what}: a shutdown step gave up waiting:\n{}",
        gave_up.join("\n")
    );
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process spawned by the test itself, with stderr captured.
struct Proc {
    child: Child,
    port: u16,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    fn spawn(dir: &Path, args: &[&str]) -> Proc {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tallykv-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir)
            .args(["--loglevel", "warning", "--threads", "2"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tallykv-server");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        });
        Proc {
            child,
            port,
            stderr: Some(stderr),
        }
    }

    /// Stderr so far; only complete once the process has exited.
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Outcome {
    /// The process exited (status, stderr).
    Exited(ExitStatus, String),
    /// The process serves and has finished loading.
    Ready(Proc),
}

/// Starts a server on `dir` and waits (bounded) until it either exits or finishes loading.
/// Panics if it does neither within `timeout` (a hang is a failure too).
fn start_outcome(dir: &Path, args: &[&str], timeout: Duration) -> Outcome {
    for attempt in 0..5 {
        let mut p = Proc::spawn(dir, args);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                let stderr = p.take_stderr();
                if stderr.contains("Could not create server TCP listening socket") && attempt < 4 {
                    break; // the port was taken meanwhile: try another
                }
                return Outcome::Exited(status, stderr);
            }
            let ready = redis::Client::open(format!("redis://127.0.0.1:{}/", p.port))
                .ok()
                .and_then(|cl| {
                    cl.get_connection_with_timeout(Duration::from_millis(200))
                        .ok()
                })
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("persistence")
                        .query::<String>(&mut c)
                        .ok()
                })
                .is_some_and(|info| info.lines().any(|l| l.trim() == "loading:0"));
            if ready {
                return Outcome::Ready(p);
            }
            assert!(
                Instant::now() < deadline,
                "tallykv-server on {} neither exited nor finished loading within {timeout:?}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unreachable!()
}

fn hgetall(c: &mut redis::Connection, key: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    redis::cmd("HGETALL").arg(key).query(c).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Restart keeps every type and TTL; keys that expired while down are dropped.
// ---------------------------------------------------------------------------------------------

type Fields = BTreeMap<Vec<u8>, Vec<u8>>;

/// What was written, to compare after a restart.
struct Written {
    strings: Vec<(Vec<u8>, Vec<u8>)>,
    /// Key, fields, OBJECT ENCODING.
    hashes: Vec<(Vec<u8>, Fields, &'static str)>,
    /// Keys with a long TTL and their PTTL just before the server went down.
    ttls: Vec<(Vec<u8>, i64)>,
    /// Keys with a [`SHORT_TTL_MS`] TTL (gone after the restart).
    short: Vec<Vec<u8>>,
    /// When the short-TTL keys were written (Unix ms).
    short_written_ms: i64,
}

/// The TTL of the keys that must expire while the server is down. The server must go down
/// before it runs out (the keys are written last, then a few PTTLs and the stop), so it is
/// generous: a stall on a busy CI machine must not expire them early; the tests wait it out
/// after the stop.
const SHORT_TTL_MS: i64 = 3000;

fn bin_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write_typed_data(c: &mut redis::Connection) -> Written {
    let mut strings: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"str:plain".to_vec(), b"hello world".to_vec()),
        (b"str:empty".to_vec(), Vec::new()),
        (b"str:big".to_vec(), bin_bytes(7, 200_000)),
        (b"int:pos".to_vec(), b"12345".to_vec()),
        (b"int:neg".to_vec(), b"-987654321".to_vec()),
        (b"int:max".to_vec(), i64::MAX.to_string().into_bytes()),
        (b"int:min".to_vec(), i64::MIN.to_string().into_bytes()),
        (b"bin:\x00\xff\r\n\x01key".to_vec(), bin_bytes(0, 256)),
        (b"bin:crlf".to_vec(), b"\r\n\x00\r\n$3\r\n*1\r\n".to_vec()),
        (vec![0xff, 0xfe, 0x00], vec![0x00]),
    ];
    for (k, v) in &strings {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(c).unwrap();
    }
    for _ in 0..3 {
        int(c, &["INCR", "int:incr"]);
    }
    int(c, &["INCRBY", "int:incr", "-10"]);
    strings.push((b"int:incr".to_vec(), b"-7".to_vec()));

    let mut hashes = Vec::new();
    let small: BTreeMap<Vec<u8>, Vec<u8>> = (0..10)
        .map(|i| (format!("f{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    let big: BTreeMap<Vec<u8>, Vec<u8>> = (0..300)
        .map(|i| {
            (
                format!("field:{i}").into_bytes(),
                format!("{}", i * 7).into_bytes(),
            )
        })
        .collect();
    let mut binary: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    binary.insert(b"\x00\xff".to_vec(), bin_bytes(3, 64));
    binary.insert(b"".to_vec(), b"empty field name".to_vec());
    binary.insert(b"empty value".to_vec(), b"".to_vec());
    for (key, map, enc) in [
        (b"hash:small".to_vec(), small, "listpack"),
        (b"hash:big".to_vec(), big, "hashtable"),
        (b"hash:\x00bin".to_vec(), binary, "listpack"),
    ] {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&key);
        for (f, v) in &map {
            cmd.arg(f).arg(v);
        }
        let _: i64 = cmd.query(c).unwrap();
        let e: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key)
            .query(c)
            .unwrap();
        assert_eq!(
            e,
            enc,
            "encoding of {:?} before restart",
            String::from_utf8_lossy(&key)
        );
        hashes.push((key, map, enc));
    }

    // Long TTLs on each type.
    ok(c, &["SET", "ttl:str", "with ttl", "EX", "1000"]);
    ok(c, &["SET", "ttl:int", "77", "PX", "5000000"]);
    int(c, &["HSET", "ttl:hash", "a", "1", "b", "2"]);
    int(c, &["EXPIRE", "ttl:hash", "2000"]);
    strings.push((b"ttl:str".to_vec(), b"with ttl".to_vec()));
    strings.push((b"ttl:int".to_vec(), b"77".to_vec()));
    let mut ttl_hash = BTreeMap::new();
    ttl_hash.insert(b"a".to_vec(), b"1".to_vec());
    ttl_hash.insert(b"b".to_vec(), b"2".to_vec());
    hashes.push((b"ttl:hash".to_vec(), ttl_hash, "listpack"));

    // Short TTLs, written last so the server goes down before they expire.
    let short_written_ms = now_ms();
    let short_ttl = SHORT_TTL_MS.to_string();
    ok(c, &["SET", "short:str", "x", "PX", &short_ttl]);
    ok(c, &["SET", "short:int", "5", "PX", &short_ttl]);
    int(c, &["HSET", "short:hash", "f", "v"]);
    int(c, &["PEXPIRE", "short:hash", &short_ttl]);
    let short: Vec<Vec<u8>> = ["short:str", "short:int", "short:hash"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();

    let ttls = ["ttl:str", "ttl:int", "ttl:hash"]
        .iter()
        .map(|k| {
            let p = int(c, &["PTTL", k]);
            assert!(p > 0, "PTTL {k} before restart: {p}");
            (k.as_bytes().to_vec(), p)
        })
        .collect();
    for k in &short {
        let p: i64 = redis::cmd("PTTL").arg(k).query(c).unwrap();
        assert!(
            p > 0,
            "the {SHORT_TTL_MS} ms key expired before the server went down (PTTL {p})"
        );
    }
    Written {
        strings,
        hashes,
        ttls,
        short,
        short_written_ms,
    }
}

fn check_typed_data(c: &mut redis::Connection, w: &Written) {
    for (k, v) in &w.strings {
        let got: Option<Vec<u8>> = redis::cmd("GET").arg(k).query(c).unwrap();
        assert_eq!(
            got.as_ref(),
            Some(v),
            "GET {:?} after restart",
            String::from_utf8_lossy(k)
        );
    }
    for k in [
        "int:pos", "int:neg", "int:max", "int:min", "int:incr", "ttl:int",
    ] {
        let e: String = run(c, &["OBJECT", "ENCODING", k]).unwrap();
        assert_eq!(e, "int", "OBJECT ENCODING {k} after restart");
    }
    assert_eq!(int(c, &["INCR", "int:pos"]), 12346);
    assert_eq!(
        err(c, &["INCR", "int:max"]),
        "ERR increment or decrement would overflow"
    );
    for (k, map, enc) in &w.hashes {
        let name = String::from_utf8_lossy(k);
        assert_eq!(&hgetall(c, k), map, "HGETALL {name} after restart");
        let e: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(k)
            .query(c)
            .unwrap();
        assert_eq!(e, *enc, "OBJECT ENCODING {name} after restart");
    }
    for (k, before) in &w.ttls {
        let p: i64 = redis::cmd("PTTL").arg(k).query(c).unwrap();
        assert!(
            p > 0 && p <= *before,
            "PTTL {:?} after restart: {p} (before: {before})",
            String::from_utf8_lossy(k)
        );
    }
    for k in ["str:plain", "hash:big", "bin:crlf"] {
        assert_eq!(int(c, &["PTTL", k]), -1, "{k} has no TTL after restart");
    }
    for k in &w.short {
        let n: i64 = redis::cmd("EXISTS").arg(k).query(c).unwrap();
        assert_eq!(n, 0, "{:?} expired while down", String::from_utf8_lossy(k));
    }
    let expected_keys = (w.strings.len() + w.hashes.len()) as i64;
    assert_eq!(int(c, &["DBSIZE"]), expected_keys);
    assert_eq!(
        field_i64(c, "rdb_last_load_keys_expired"),
        w.short.len() as i64,
        "rdb_last_load_keys_expired counts the keys that expired while down"
    );
    assert_eq!(field_i64(c, "rdb_last_load_keys_loaded"), expected_keys);
}

/// Waits until the short-TTL keys are past their expiry (with margin), so the restart finds
/// them expired.
fn wait_short_expired(w: &Written) {
    let due = w.short_written_ms + SHORT_TTL_MS + 100;
    let left = u64::try_from(due - now_ms()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(left));
}

#[test]
fn restart_after_shutdown_keeps_types_and_ttls() {
    let mut s = start(&[]);
    let mut c = s.conn();
    let w = write_typed_data(&mut c);
    shutdown(&mut s, &[]);
    wait_short_expired(&w);
    s.restart();
    wait_ready(&s);
    let mut c = s.conn();
    check_typed_data(&mut c, &w);

    // The keys dropped at load were deleted from disk as well: another clean restart finds
    // nothing expired.
    shutdown(&mut s, &[]);
    s.restart();
    wait_ready(&s);
    let mut c = s.conn();
    assert_eq!(field_i64(&mut c, "rdb_last_load_keys_expired"), 0);
    assert_eq!(
        int(&mut c, &["DBSIZE"]),
        (w.strings.len() + w.hashes.len()) as i64
    );
    assert_eq!(
        int(&mut c, &["EXISTS", "short:str", "short:int", "short:hash"]),
        0
    );
}

#[test]
fn restart_after_kill9_keeps_types_and_ttls() {
    // appendfsync always: every acknowledged write is on disk, so SIGKILL loses nothing.
    let mut s = start(&["--appendfsync", "always"]);
    let mut c = s.conn();
    let w = write_typed_data(&mut c);
    s.kill9();
    wait_short_expired(&w);
    s.restart();
    wait_ready(&s);
    let mut c = s.conn();
    check_typed_data(&mut c, &w);
}

/// Deletes, overwrites, PERSIST and FLUSHALL reach the disk too, and the data does not depend
/// on the core count: a restart with another `--threads` reads the same keys.
#[test]
fn deletes_flushall_and_thread_count_changes_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_in(dir.path(), &["--appendfsync", "always"]);
    wait_ready(&s);
    let mut c = s.conn();
    mset_many(&mut c, "old:", 2000, |i| format!("o{i}"));
    ok(&mut c, &["FLUSHALL"]);
    mset_many(&mut c, "k:", 3000, |i| format!("v{i}"));
    for i in 0..500 {
        int(&mut c, &["DEL", &format!("k:{i}")]);
    }
    for i in 500..600 {
        ok(&mut c, &["SET", &format!("k:{i}"), "overwritten"]);
    }
    ok(&mut c, &["SET", "persisted", "p", "EX", "1000"]);
    int(&mut c, &["PERSIST", "persisted"]);
    ok(&mut c, &["SET", "ttl-dropped", "t", "EX", "1000"]);
    ok(&mut c, &["SET", "ttl-dropped", "t2"]);
    let expected = |i: usize| match i {
        0..500 => None,
        500..600 => Some("overwritten".to_string()),
        _ => Some(format!("v{i}")),
    };
    s.kill9();
    drop(s);
    for threads in ["1", "3", "2"] {
        let s = start_in(
            dir.path(),
            &["--appendfsync", "always", "--threads", threads],
        );
        wait_ready(&s);
        let mut c = s.conn();
        let vals = mget_many(&mut c, "k:", 3000);
        for (i, v) in vals.into_iter().enumerate() {
            assert_eq!(
                v,
                expected(i),
                "k:{i} after a restart with --threads {threads}"
            );
        }
        assert_eq!(
            mget_many(&mut c, "old:", 2000).iter().flatten().count(),
            0,
            "keys removed by FLUSHALL came back (--threads {threads})"
        );
        assert_eq!(int(&mut c, &["PTTL", "persisted"]), -1);
        assert_eq!(int(&mut c, &["PTTL", "ttl-dropped"]), -1);
        assert_eq!(
            run::<String>(&mut c, &["GET", "ttl-dropped"]).unwrap(),
            "t2"
        );
        assert_eq!(int(&mut c, &["DBSIZE"]), 2500 + 2, "--threads {threads}");
        // A write under this core count, seen by the next one.
        ok(
            &mut c,
            &[
                "SET",
                &format!("k:{}", 10 + threads.parse::<usize>().unwrap()),
                "gone?",
            ],
        );
        int(
            &mut c,
            &[
                "DEL",
                &format!("k:{}", 10 + threads.parse::<usize>().unwrap()),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. appendonly no
// ---------------------------------------------------------------------------------------------

#[test]
fn appendonly_no_writes_nothing() {
    let mut s = start(&["--appendonly", "no"]);
    let mut c = s.conn();
    mset_many(&mut c, "k", 1000, |i| format!("v{i}"));
    int(&mut c, &["HSET", "h", "f", "v"]);
    assert_eq!(field(&mut c, "aof_enabled"), "0");
    assert_eq!(field(&mut c, "loading"), "0");
    for cmd in [&["SAVE"][..], &["BGSAVE"], &["BGSAVE", "SCHEDULE"]] {
        let e = err(&mut c, cmd);
        assert!(e.starts_with("ERR"), "{cmd:?} with appendonly no: {e}");
    }
    let e = err(&mut c, &["SHUTDOWN", "SAVE"]);
    assert!(
        e.starts_with("ERR"),
        "SHUTDOWN SAVE with appendonly no: {e}"
    );
    let lastsave = int(&mut c, &["LASTSAVE"]);
    assert!(
        (lastsave - now_ms() / 1000).abs() <= 60,
        "LASTSAVE {lastsave}"
    );
    s.kill9();
    assert!(
        !s.dir.join("tallykv.db").exists(),
        "appendonly no created tallykv.db"
    );
    assert!(
        !s.dir.join("snapshot").exists(),
        "appendonly no created a snapshot"
    );
    s.restart();
    wait_ready(&s);
    let mut c = s.conn();
    assert_eq!(
        int(&mut c, &["DBSIZE"]),
        0,
        "appendonly no: a restart starts empty"
    );
    assert!(!s.dir.join("tallykv.db").exists());
}

// ---------------------------------------------------------------------------------------------
// 3. The data dir lock
// ---------------------------------------------------------------------------------------------

#[test]
fn second_server_on_same_dir_is_refused() {
    let mut s = start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "mine", "1"]);
    match start_outcome(&s.dir, &[], DEADLINE) {
        Outcome::Ready(_) => panic!("a second server started on a dir in use"),
        Outcome::Exited(status, stderr) => {
            assert!(!status.success(), "second server exit status {status}");
            assert!(
                stderr.contains("in use by another tallykv-server"),
                "stderr of the second server: {stderr}"
            );
        }
    }
    // The first server is unaffected.
    assert_eq!(run::<String>(&mut c, &["GET", "mine"]).unwrap(), "1");
    // Once it is gone the lock is released (even after SIGKILL).
    s.kill9();
    let s2 = start_in(&s.dir, &["--appendfsync", "always"]);
    wait_ready(&s2);
    let mut c2 = s2.conn();
    assert_eq!(
        run::<Option<String>>(&mut c2, &["GET", "mine"])
            .unwrap()
            .as_deref(),
        Some("1")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. LOADING
// ---------------------------------------------------------------------------------------------

#[test]
fn loading_state_is_visible_and_ends_with_every_key() {
    const N: usize = 20_000;
    let mut s = start(&["--appendfsync", "always", "--key-load-delay", "200"]);
    let mut c = s.conn();
    mset_many(&mut c, "load:", N, |i| format!("value-{i}"));
    s.kill9();
    // Same args: 200 µs per key, about 2 s per core for 10k keys each.
    s.restart();
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["GET", "load:1"]), LOADING_ERR);
    assert_eq!(err(&mut c, &["SET", "other", "1"]), LOADING_ERR);
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    let info = persistence(&mut c);
    assert_eq!(
        info.get("loading").map(String::as_str),
        Some("1"),
        "{info:?}"
    );
    let loaded: i64 = info["loading_loaded_keys"].parse().unwrap();
    assert!(
        (0..=N as i64).contains(&loaded),
        "loading_loaded_keys:{loaded}"
    );
    // CONFIG may run while loading: speed up the rest.
    match run::<redis::Value>(&mut c, &["CONFIG", "SET", "key-load-delay", "0"]) {
        Ok(v) => assert_eq!(v, redis::Value::Okay),
        Err(e) => println!(
            "CONFIG SET during loading refused: {}",
            common::error_text(&e)
        ),
    }
    wait_ready(&s);
    let vals = mget_many(&mut c, "load:", N);
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(
            v.as_deref(),
            Some(format!("value-{i}").as_str()),
            "load:{i}"
        );
    }
    assert_eq!(int(&mut c, &["DBSIZE"]), N as i64);
    assert_eq!(field_i64(&mut c, "rdb_last_load_keys_loaded"), N as i64);
    assert_eq!(field_i64(&mut c, "rdb_last_load_keys_expired"), 0);
    ok(&mut c, &["SET", "other", "1"]);
}

// ---------------------------------------------------------------------------------------------
// 5. SAVE / BGSAVE / LASTSAVE
// ---------------------------------------------------------------------------------------------

#[test]
fn save_bgsave_lastsave_and_info() {
    let s = start(&[]);
    let mut c = s.conn();
    wait_ready(&s);
    let started = now_ms() / 1000;
    let lastsave0 = int(&mut c, &["LASTSAVE"]);
    assert!(
        (started - 60..=started).contains(&lastsave0),
        "LASTSAVE before any save is the start time: {lastsave0} (now {started})"
    );
    let info = persistence(&mut c);
    assert_eq!(info["rdb_last_save_time"], lastsave0.to_string());
    assert_eq!(info["rdb_bgsave_in_progress"], "0");
    assert_eq!(info["rdb_last_bgsave_status"], "ok");
    assert_eq!(info["aof_enabled"], "1");
    assert_eq!(info["rdb_changes_since_last_save"], "0");
    assert!(info.contains_key("aof_fsyncs") && info.contains_key("aof_fsync_avg_usec"));

    assert!(err(&mut c, &["SAVE", "extra"]).starts_with("ERR"));
    assert_eq!(err(&mut c, &["BGSAVE", "extra"]), "ERR syntax error");

    // SAVE: synchronous, resets the change count.
    mset_many(&mut c, "s:", 100, |i| format!("v{i}"));
    assert!(
        wait_until(DEADLINE, || field_i64(
            &mut c,
            "rdb_changes_since_last_save"
        ) >= 100),
        "rdb_changes_since_last_save never reached 100: {}",
        field(&mut c, "rdb_changes_since_last_save")
    );
    assert_eq!(field_i64(&mut c, "rdb_changes_since_last_save"), 100);
    ok(&mut c, &["SAVE"]);
    let info = persistence(&mut c);
    assert_eq!(info["rdb_changes_since_last_save"], "0");
    assert_eq!(info["rdb_saves"], "1");
    assert_eq!(info["rdb_last_save_keys"], "100");
    assert_eq!(info["rdb_bgsave_in_progress"], "0");
    assert_eq!(info["rdb_last_bgsave_status"], "ok");
    let lastsave1 = int(&mut c, &["LASTSAVE"]);
    assert!(lastsave1 >= lastsave0, "LASTSAVE {lastsave1} < {lastsave0}");
    assert_eq!(info["rdb_last_save_time"], lastsave1.to_string());
    assert!(
        s.dir.join("snapshot").join("tallykv.db").is_dir(),
        "SAVE wrote no snapshot"
    );
    assert!(!s.dir.join("snapshot.tmp").exists());

    // BGSAVE SCHEDULE with nothing running starts at once.
    assert_eq!(
        run::<String>(&mut c, &["BGSAVE", "SCHEDULE"]).unwrap(),
        "Background saving started"
    );
    assert!(wait_until(Duration::from_secs(20), || {
        let i = persistence(&mut c);
        i["rdb_bgsave_in_progress"] == "0" && i["rdb_saves"] == "2"
    }));

    // A BGSAVE of 100k keys takes a while (over a second in a debug build): the commands
    // pipelined right behind it find it running.
    const N: usize = 100_000;
    mset_many(&mut c, "big:", N, |i| format!("value-{i}"));
    let saves_before = field_i64(&mut c, "rdb_saves");
    let mut pipe = redis::pipe();
    pipe.cmd("BGSAVE")
        .cmd("BGSAVE")
        .cmd("SAVE")
        .cmd("BGSAVE")
        .arg("SCHEDULE")
        .cmd("INFO")
        .arg("persistence");
    let replies: Vec<redis::RedisResult<redis::Value>> =
        pipe.ignore_errors().query(&mut c).unwrap();
    let text = |r: &redis::RedisResult<redis::Value>| match r {
        Ok(redis::Value::SimpleString(s)) => format!("+{s}"),
        Ok(redis::Value::Okay) => "+OK".to_string(),
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("-{}", common::error_text(e)),
    };
    assert_eq!(text(&replies[0]), "+Background saving started");
    assert_eq!(
        text(&replies[1]),
        "-ERR Background save already in progress"
    );
    assert_eq!(
        text(&replies[2]),
        "-ERR Background save already in progress"
    );
    assert_eq!(text(&replies[3]), "+Background saving scheduled");
    match &replies[4] {
        Ok(redis::Value::BulkString(b)) => {
            let info = String::from_utf8_lossy(b);
            assert!(info.contains("rdb_bgsave_in_progress:1"), "{info}");
        }
        other => panic!("INFO reply {other:?}"),
    }
    // The running save finishes, then the scheduled one runs.
    let finished = wait_until(Duration::from_secs(30), || {
        let i = persistence(&mut c);
        i["rdb_bgsave_in_progress"] == "0" && i["rdb_saves"] == (saves_before + 2).to_string()
    });
    assert!(
        finished,
        "BGSAVE + scheduled BGSAVE did not both finish: {:?}",
        persistence(&mut c)
    );
    let info = persistence(&mut c);
    assert_eq!(info["rdb_last_bgsave_status"], "ok");
    assert_eq!(info["rdb_changes_since_last_save"], "0");
    assert_eq!(info["rdb_last_save_keys"], (N + 100).to_string());
    let lastsave2 = int(&mut c, &["LASTSAVE"]);
    assert!(lastsave2 >= lastsave1);
    assert!(lastsave2 <= now_ms() / 1000);
}

// ---------------------------------------------------------------------------------------------
// 6. Backup and restore through the snapshot directory
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_copy_restores_exactly_the_snapshot() {
    let s = start(&[]);
    let mut c = s.conn();
    // Set A.
    mset_many(&mut c, "a:", 500, |i| format!("va{i}"));
    let hash: BTreeMap<Vec<u8>, Vec<u8>> = (0..200)
        .map(|i| (format!("f{i}").into_bytes(), format!("hv{i}").into_bytes()))
        .collect();
    let mut cmd = redis::cmd("HSET");
    cmd.arg("a:hash");
    for (f, v) in &hash {
        cmd.arg(f).arg(v);
    }
    let _: i64 = cmd.query(&mut c).unwrap();
    ok(&mut c, &["SET", "a:ttl", "t", "EX", "1000"]);
    ok(&mut c, &["SET", "a:int", "42"]);
    const A_KEYS: i64 = 503;

    assert_eq!(
        run::<String>(&mut c, &["BGSAVE"]).unwrap(),
        "Background saving started"
    );
    // Changes made right behind BGSAVE (while it may still run) are not in the snapshot:
    // it is the data set as of the command.
    mset_many(&mut c, "bb:", 100, |i| format!("vbb{i}"));
    for i in 400..450 {
        int(&mut c, &["DEL", &format!("a:{i}")]);
    }
    let done = wait_until(Duration::from_secs(20), || {
        let i = persistence(&mut c);
        i["rdb_bgsave_in_progress"] == "0" && i["rdb_saves"] == "1"
    });
    assert!(done, "BGSAVE did not finish: {:?}", persistence(&mut c));
    assert_eq!(field(&mut c, "rdb_last_bgsave_status"), "ok");
    let pttl_a = int(&mut c, &["PTTL", "a:ttl"]);

    // Set B, and changes to A, after the snapshot.
    mset_many(&mut c, "b:", 100, |i| format!("vb{i}"));
    for i in 0..100 {
        int(&mut c, &["DEL", &format!("a:{i}")]);
    }
    ok(&mut c, &["SET", "a:100", "changed"]);
    int(&mut c, &["HSET", "a:hash", "newfield", "x"]);

    // Copy the snapshot elsewhere and start a server on the copy.
    let backup = tempfile::tempdir().unwrap();
    common::copy_dir(&s.dir.join("snapshot"), backup.path());
    let s2 = start_in(backup.path(), &[]);
    wait_ready(&s2);
    let mut c2 = s2.conn();
    assert_eq!(int(&mut c2, &["DBSIZE"]), A_KEYS);
    let vals = mget_many(&mut c2, "a:", 500);
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(
            v.as_deref(),
            Some(format!("va{i}").as_str()),
            "restored a:{i}"
        );
    }
    assert_eq!(
        mget_many(&mut c2, "b:", 100).iter().flatten().count(),
        0,
        "set B restored"
    );
    assert_eq!(
        mget_many(&mut c2, "bb:", 100).iter().flatten().count(),
        0,
        "writes made after the BGSAVE reply are in the snapshot"
    );
    assert_eq!(hgetall(&mut c2, b"a:hash"), hash);
    assert_eq!(run::<String>(&mut c2, &["GET", "a:int"]).unwrap(), "42");
    let p = int(&mut c2, &["PTTL", "a:ttl"]);
    assert!(
        p > 0 && p <= pttl_a,
        "restored PTTL {p} (snapshot-time {pttl_a})"
    );
    assert_eq!(field_i64(&mut c2, "rdb_last_load_keys_loaded"), A_KEYS);

    // The original keeps its current data.
    assert_eq!(int(&mut c, &["DBSIZE"]), A_KEYS - 150 + 200);
    assert_eq!(int(&mut c, &["EXISTS", "a:400"]), 0);
    assert_eq!(mget_many(&mut c, "bb:", 100).iter().flatten().count(), 100);
    assert_eq!(run::<String>(&mut c, &["GET", "a:100"]).unwrap(), "changed");
    assert_eq!(int(&mut c, &["EXISTS", "a:0"]), 0);
    assert_eq!(mget_many(&mut c, "b:", 100).iter().flatten().count(), 100);
    assert_eq!(int(&mut c, &["HLEN", "a:hash"]), 201);
}

// ---------------------------------------------------------------------------------------------
// 7. Damaged files
// ---------------------------------------------------------------------------------------------

fn corrupt_value(i: usize) -> String {
    format!("val-{i}-{}", "x".repeat(i % 50))
}

/// Starts a server on a damaged `dir` and checks the two acceptable outcomes: a start-up
/// failure naming the dir, or a server whose every key is exact (all `n` of them unless
/// `may_lose`). Returns a line describing what happened.
fn check_damaged(case: &str, dir: &Path, n: usize, may_lose: bool) -> String {
    match start_outcome(dir, &[], DEADLINE) {
        Outcome::Exited(status, stderr) => {
            assert!(
                !status.success(),
                "{case}: exited with {status} (stderr: {stderr})"
            );
            let d = dir.display().to_string();
            assert!(
                stderr.contains(&d),
                "{case}: the start-up error does not name the dir {d}: {stderr}"
            );
            let line = format!(
                "{case}: refused to start ({status}): {}",
                stderr.lines().last().unwrap_or("").trim()
            );
            println!("{line}");
            line
        }
        Outcome::Ready(p) => {
            let mut c = p.conn();
            let vals = mget_many(&mut c, "c:", n);
            let mut present = 0;
            for (i, v) in vals.iter().enumerate() {
                if let Some(v) = v {
                    assert_eq!(v, &corrupt_value(i), "{case}: wrong value served for c:{i}");
                    present += 1;
                }
            }
            let dbsize = int(&mut c, &["DBSIZE"]);
            assert_eq!(
                dbsize, present as i64,
                "{case}: keys served that were never written"
            );
            if !may_lose {
                assert_eq!(
                    present, n,
                    "{case}: silent partial load ({present} of {n} keys)"
                );
            }
            let line = format!("{case}: started with {present} of {n} keys, all values exact");
            println!("{line}");
            line
        }
    }
}

/// Inverts 64 bytes in the middle of `file`.
fn flip_middle(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    let end = (mid + 64).min(bytes.len());
    for b in &mut bytes[mid..end] {
        *b = !*b;
    }
    std::fs::write(file, bytes).unwrap();
}

/// Truncates every journal (`tallykv.db/*.jnl`) in the middle of its data (journals are
/// preallocated: the data ends at the last non-zero byte).
fn truncate_journals(case: &str, dir: &Path) {
    let journals: Vec<PathBuf> = files_under(&dir.join("tallykv.db"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "jnl"))
        .collect();
    assert!(
        !journals.is_empty(),
        "{case}: no *.jnl under {}",
        dir.display()
    );
    for j in &journals {
        let bytes = std::fs::read(j).unwrap();
        let data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        let f = std::fs::OpenOptions::new().write(true).open(j).unwrap();
        f.set_len((data_end / 2) as u64).unwrap();
        println!(
            "{case}: truncated {} from {data_end} data bytes ({} file bytes) to {}",
            j.display(),
            bytes.len(),
            data_end / 2
        );
    }
}

fn largest_file(dir: &Path) -> PathBuf {
    files_under(dir)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .unwrap_or_else(|| panic!("no files under {}", dir.display()))
}

#[test]
fn damaged_files_are_recovered_or_refused() {
    const N: usize = 30_000;
    let base = tempfile::tempdir().unwrap();
    {
        let mut s = start_in(base.path(), &[]);
        wait_ready(&s);
        let mut c = s.conn();
        mset_many(&mut c, "c:", N, corrupt_value);
        // The snapshot is written by bulk ingestion: its keyspaces hold real table files.
        ok(&mut c, &["SAVE"]);
        shutdown(&mut s, &[]);
    }
    let mut report = Vec::new();

    // The intact copy loads everything (the baseline for the damaged ones).
    let intact = tempfile::tempdir().unwrap();
    common::copy_dir(
        &base.path().join("tallykv.db"),
        &intact.path().join("tallykv.db"),
    );
    report.push(check_damaged("intact", intact.path(), N, false));

    // (a1) Journals truncated in the middle of their data, after the clean shutdown.
    let a1 = tempfile::tempdir().unwrap();
    common::copy_dir(
        &base.path().join("tallykv.db"),
        &a1.path().join("tallykv.db"),
    );
    truncate_journals("(a1)", a1.path());
    report.push(check_damaged(
        "(a1) truncated journal after SHUTDOWN",
        a1.path(),
        N,
        true,
    ));

    // (a2) The same after SIGKILL (appendfsync always): whatever a shutdown may flush into
    // tables, here the journal certainly holds the data.
    let a2 = tempfile::tempdir().unwrap();
    {
        let mut s = start_in(a2.path(), &["--appendfsync", "always"]);
        wait_ready(&s);
        let mut c = s.conn();
        mset_many(&mut c, "c:", N, corrupt_value);
        s.kill9();
    }
    truncate_journals("(a2)", a2.path());
    report.push(check_damaged(
        "(a2) truncated journal after SIGKILL",
        a2.path(),
        N,
        true,
    ));

    // (b1) The largest file under the live database's keyspaces/ damaged.
    let b1 = tempfile::tempdir().unwrap();
    common::copy_dir(
        &base.path().join("tallykv.db"),
        &b1.path().join("tallykv.db"),
    );
    let victim = largest_file(&b1.path().join("tallykv.db").join("keyspaces"));
    println!(
        "(b1) flipping 64 bytes in {} ({} bytes)",
        victim.display(),
        std::fs::metadata(&victim).unwrap().len()
    );
    flip_middle(&victim);
    report.push(check_damaged(
        "(b1) damaged keyspace file",
        b1.path(),
        N,
        false,
    ));

    // (b2) The same on a copy of the snapshot, whose keyspaces hold the data tables.
    let b2 = tempfile::tempdir().unwrap();
    common::copy_dir(&base.path().join("snapshot"), b2.path());
    let victim = largest_file(&b2.path().join("tallykv.db").join("keyspaces"));
    println!(
        "(b2) flipping 64 bytes in {} ({} bytes)",
        victim.display(),
        std::fs::metadata(&victim).unwrap().len()
    );
    flip_middle(&victim);
    report.push(check_damaged(
        "(b2) damaged data table",
        b2.path(),
        N,
        false,
    ));

    println!("corruption outcomes:\n  {}", report.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// 8. SHUTDOWN and SIGTERM
// ---------------------------------------------------------------------------------------------

/// Writes keys across both cores, the last ones immediately before the caller stops the
/// server; returns how many `sd:` keys there are.
fn write_before_stop(c: &mut redis::Connection) -> usize {
    const N: usize = 5000;
    mset_many(c, "sd:", N - 10, |i| format!("v{i}"));
    for i in N - 10..N {
        ok(c, &["SET", &format!("sd:{i}"), &format!("v{i}")]);
    }
    N
}

/// Every `sd:` key is there with its value, plus `extra` other keys.
fn check_all_sd(s: &Server, n: usize, extra: i64) {
    wait_ready(s);
    let mut c = s.conn();
    let vals = mget_many(&mut c, "sd:", n);
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(
            v.as_deref(),
            Some(format!("v{i}").as_str()),
            "sd:{i} after restart"
        );
    }
    assert_eq!(int(&mut c, &["DBSIZE"]), n as i64 + extra);
}

/// SHUTDOWN and SIGTERM exit 0, with every write kept and without any shutdown step giving
/// up waiting (the log says so when one does; how long a shutdown takes is not asserted).
#[test]
fn shutdown_and_sigterm_exit_0_and_keep_every_write() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let log_arg = log.to_str().expect("a UTF-8 temp path");
    // Plain SHUTDOWN with appendfsync no: the shutdown itself syncs.
    let mut s = start(&["--appendfsync", "no", "--logfile", log_arg]);
    let mut c = s.conn();
    let n = write_before_stop(&mut c);
    shutdown(&mut s, &[]);
    assert_clean_shutdown(&log, "SHUTDOWN");
    s.restart();
    check_all_sd(&s, n, 0);

    // SIGTERM does the same.
    let mut c = s.conn();
    ok(&mut c, &["SET", "after-restart", "1"]);
    // SAFETY: kill(2) on the pid of our own child process.
    assert_eq!(unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) }, 0);
    wait_exit_0(&mut s, "SIGTERM");
    assert_clean_shutdown(&log, "SIGTERM");
    s.restart();
    check_all_sd(&s, n, 1);

    // SHUTDOWN SAVE NOW FORCE also writes a snapshot, which restores the same data.
    let mut c = s.conn();
    assert_eq!(
        run::<String>(&mut c, &["GET", "after-restart"]).unwrap(),
        "1"
    );
    shutdown(&mut s, &["SAVE", "NOW", "FORCE"]);
    assert_clean_shutdown(&log, "SHUTDOWN SAVE");
    let backup = tempfile::tempdir().unwrap();
    common::copy_dir(&s.dir.join("snapshot"), backup.path());
    let s2 = start_in(backup.path(), &[]);
    check_all_sd(&s2, n, 1);
    drop(s2);

    // SHUTDOWN NOSAVE: exits 0, keeps the data (appendonly still persists it).
    s.restart();
    wait_ready(&s);
    let mut c = s.conn();
    ok(&mut c, &["SET", "last", "x"]);
    shutdown(&mut s, &["NOSAVE"]);
    assert_clean_shutdown(&log, "SHUTDOWN NOSAVE");
    s.restart();
    check_all_sd(&s, n, 2);
}
