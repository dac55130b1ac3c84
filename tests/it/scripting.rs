//! Lua scripting through real clients: EVAL/EVALSHA/EVAL_RO, the script cache, Valkey's
//! replies and errors, redis-rs's `Script`, scripts whose keys span cores (atomic), SCRIPT
//! KILL and -BUSY, persistence of a script's writes, and a cluster where a script's writes
//! reach every replica (which never runs the script).

use crate::common;

use std::io::Write;
use std::time::Duration;

use common::cluster::Cluster;
use common::{DEADLINE, Server, err, run, wait_until};
use redis::Value;
use tallykv::cluster::key_slot;

/// Keys on different cores with `--threads 2`.
const ON_CORE_1: &str = "a";
const ON_CORE_0: &str = "b";

fn eval(c: &mut redis::Connection, script: &str, keys: &[&str], args: &[&str]) -> Value {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd.query(c).unwrap_or_else(|e| panic!("{script}: {e}"))
}

fn eval_err(c: &mut redis::Connection, script: &str, numkeys: &str) -> String {
    err(c, &["EVAL", script, numkeys])
}

#[test]
fn replies_and_errors_match_valkey() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    assert_eq!(
        eval(
            &mut c,
            "return {1, 2, {3, 'x'}, redis.status_reply('OK'), false, true, 3.99}",
            &[],
            &[]
        ),
        Value::Array(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Array(vec![Value::Int(3), Value::BulkString(b"x".to_vec())]),
            Value::Okay,
            Value::Nil,
            Value::Int(1),
            Value::Int(3),
        ])
    );
    assert_eq!(
        eval(&mut c, "return KEYS[1]..ARGV[1]", &["k"], &["v"]),
        Value::BulkString(b"kv".to_vec())
    );
    assert_eq!(
        eval(&mut c, "return cjson.encode({a=1})", &[], &[]),
        Value::BulkString(br#"{"a":1}"#.to_vec())
    );
    assert_eq!(
        eval(
            &mut c,
            "redis.call('incrby', KEYS[1], 5); return redis.call('get', KEYS[1])",
            &["ctr"],
            &[]
        ),
        Value::BulkString(b"5".to_vec())
    );
    let sha_of = |body: &str| tallykv::command::script::sha1_hex(body.as_bytes());
    for (script, expected) in [
        (
            "return redis.call('nosuch')",
            "ERR Unknown command called from script",
        ),
        (
            "return redis.call('get')",
            "ERR Wrong number of args calling command from script",
        ),
        (
            "return redis.call('multi')",
            "ERR This command is not allowed from script",
        ),
        ("error('boom')", "ERR user_script:1: boom"),
        (
            "x = 1",
            "ERR user_script:1: Attempt to modify a readonly table",
        ),
    ] {
        assert_eq!(
            eval_err(&mut c, script, "0"),
            format!("{expected} script: {}, on @user_script:1.", sha_of(script)),
            "{script}"
        );
    }
    let ro = "#!lua flags=no-writes\nreturn redis.call('set','x','y')";
    assert_eq!(
        eval_err(&mut c, ro, "0"),
        format!(
            "ERR Write commands are not allowed from read-only scripts. script: {}, on @user_script:2.",
            sha_of(ro)
        )
    );
    assert_eq!(
        err(
            &mut c,
            &["EVAL_RO", "return redis.call('set','x','y')", "0"]
        ),
        format!(
            "ERR Write commands are not allowed from read-only scripts. script: {}, on @user_script:1.",
            sha_of("return redis.call('set','x','y')")
        )
    );
    // With a shebang, the flags decide: a script that may write does not run from *_RO.
    assert_eq!(
        err(&mut c, &["EVAL_RO", "#!lua\nreturn 1", "0"]),
        "ERR Can not execute a script with write flag using *_ro command."
    );
    assert_eq!(
        run::<i64>(&mut c, &["EVAL_RO", "#!lua flags=no-writes\nreturn 1", "0"]).unwrap(),
        1
    );
    assert_eq!(
        eval_err(&mut c, "#!lua flags=bogus\nreturn 1", "0"),
        "ERR Unexpected flag in script shebang: bogus"
    );
    assert_eq!(
        eval_err(&mut c, "#!python\nreturn 1", "0"),
        "ERR Unexpected engine in script shebang: #!python"
    );
    assert_eq!(
        eval_err(&mut c, "return 1", "-1"),
        "ERR Number of keys can't be negative"
    );
    assert_eq!(
        eval_err(&mut c, "return 1", "5"),
        "ERR Number of keys can't be greater than number of args"
    );
    // The cache.
    assert_eq!(
        err(&mut c, &["EVALSHA", &"a".repeat(40), "0"]),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    let sha: String = run(&mut c, &["SCRIPT", "LOAD", "return 1"]).unwrap();
    assert_eq!(sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    assert_eq!(
        run::<i64>(&mut c, &["EVALSHA", &sha.to_uppercase(), "0"]).unwrap(),
        1
    );
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["SCRIPT", "EXISTS", &sha, &"x".repeat(40)]).unwrap(),
        vec![1, 0]
    );
    assert_eq!(
        err(&mut c, &["SCRIPT", "KILL"]),
        "NOTBUSY No scripts in execution right now."
    );
    assert_eq!(run::<String>(&mut c, &["SCRIPT", "FLUSH"]).unwrap(), "OK");
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["SCRIPT", "EXISTS", &sha]).unwrap(),
        vec![0]
    );
    // redis-rs's Script: EVALSHA, falling back to EVAL after the flush.
    let script = redis::Script::new("return redis.call('incr', KEYS[1])");
    assert_eq!(script.key("hits").invoke::<i64>(&mut c).unwrap(), 1);
    assert_eq!(script.key("hits").invoke::<i64>(&mut c).unwrap(), 2);
}

#[test]
fn a_script_whose_keys_span_cores_is_atomic() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    run::<()>(&mut c, &["MSET", ON_CORE_1, "0", ON_CORE_0, "0"]).unwrap();
    let transfer = "redis.call('incrby', KEYS[1], 1); redis.call('decrby', KEYS[2], 1); \
                    return redis.call('mget', KEYS[1], KEYS[2])";
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..100 {
                    let (x, y): (i64, i64) = redis::cmd("EVAL")
                        .arg(transfer)
                        .arg(2)
                        .arg(ON_CORE_1)
                        .arg(ON_CORE_0)
                        .query(&mut c)
                        .unwrap();
                    assert_eq!(x + y, 0, "a script saw another's half");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["MGET", ON_CORE_1, ON_CORE_0]).unwrap(),
        vec![400, -400]
    );
    // A key the script did not declare, on another core: a clear error, once prefixed.
    let e = err(
        &mut c,
        &[
            "EVAL",
            "return redis.call('get', ARGV[1])",
            "1",
            ON_CORE_1,
            ON_CORE_0,
        ],
    );
    assert!(
        e.starts_with("ERR Script attempted to access a key served by another thread"),
        "{e}"
    );
}

#[test]
fn script_kill_stops_a_runaway_script_and_others_get_busy_meanwhile() {
    let s = Server::start(&["--threads", "2", "--busy-reply-threshold", "100"]);
    let mut runner = s.start_runaway_script(ON_CORE_1);
    std::thread::sleep(Duration::from_millis(300));
    // A connection on the other core answers at once: the runaway's keys are BUSY, and
    // SCRIPT KILL stops it. Connections land on either core: try until one answers.
    let mut killed = false;
    for _ in 0..40 {
        let mut t = s.raw_short();
        t.write_all(format!("GET {ON_CORE_1}\r\n").as_bytes())
            .unwrap();
        let Some(reply) = common::read_some(&mut t) else {
            continue; // this connection is on the busy core
        };
        assert!(reply.starts_with("-BUSY"), "{reply}");
        t.write_all(b"SCRIPT KILL\r\n").unwrap();
        assert_eq!(common::read_some(&mut t).as_deref(), Some("+OK\r\n"));
        killed = true;
        break;
    }
    assert!(killed, "no connection landed on the other core");
    let reply = common::next_reply(&mut runner);
    assert!(
        reply.starts_with("-ERR Script killed by user with SCRIPT KILL"),
        "{reply}"
    );
    // The core serves again.
    let mut c = s.conn();
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", ON_CORE_1]).unwrap(),
        None
    );
    // A script that wrote cannot be killed.
    let mut writer = s.raw();
    let body =
        "redis.call('set', KEYS[1], 'w') local i = 0 while i < 30000000 do i = i + 1 end return i";
    writer
        .write_all(
            format!(
                "*4\r\n$4\r\nEVAL\r\n${}\r\n{body}\r\n$1\r\n1\r\n$1\r\n{ON_CORE_1}\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = false;
    for _ in 0..40 {
        let mut t = s.raw_short();
        t.write_all(b"SCRIPT KILL\r\n").unwrap();
        match common::read_some(&mut t) {
            Some(r) if r.starts_with("-UNKILLABLE") => {
                refused = true;
                break;
            }
            Some(r) if r.starts_with("-NOTBUSY") => break, // it finished already
            _ => continue,
        }
    }
    assert_eq!(common::next_reply(&mut writer), ":30000000\r\n");
    let _ = refused; // UNKILLABLE when a connection landed on the other core in time
    assert_eq!(run::<String>(&mut c, &["GET", ON_CORE_1]).unwrap(), "w");
}

#[test]
fn script_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let mut c = s.conn();
    eval(
        &mut c,
        "redis.call('set', KEYS[1], ARGV[1]); redis.call('set', KEYS[2], ARGV[1]); return 1",
        &[ON_CORE_1, ON_CORE_0],
        &["kept"],
    );
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(
        run::<Vec<String>>(&mut c, &["MGET", ON_CORE_1, ON_CORE_0]).unwrap(),
        vec!["kept", "kept"]
    );
}

#[test]
fn cluster_scripts_write_through_the_group_to_every_replica() {
    let cl = Cluster::start(3, &[]);
    cl.wait_ok();
    let k1 = "{card}:vel";
    let k2 = "{card}:seen";
    let leader = cl.leader_of_slot(key_slot(k1.as_bytes()) as usize);
    let mut c = cl.conn(leader);
    let script = "local n = redis.call('incrby', KEYS[1], ARGV[1]); \
                  redis.call('set', KEYS[2], n); return n";
    for _ in 0..3 {
        eval(&mut c, script, &[k1, k2], &["7"]);
    }
    // A key of another slot: CROSSSLOT, as Valkey.
    assert!(err(&mut c, &["EVAL", "return 1", "2", k1, "other"]).starts_with("CROSSSLOT"));
    // An undeclared key of the next slot (same group, so served here): a script with flags
    // may not reach it without `allow-cross-slot-keys`; one without flags may (Valkey's
    // compatibility mode).
    let next = (key_slot(k1.as_bytes()) + 1) % 16384;
    let other = (0..)
        .map(|i| format!("x{i}"))
        .find(|k| key_slot(k.as_bytes()) == next)
        .unwrap();
    assert_eq!(cl.group_of_key(&other), cl.group_of_key(k1));
    let get_other = "return redis.call('get', ARGV[1])";
    let e = err(
        &mut c,
        &["EVAL", &format!("#!lua\n{get_other}"), "1", k1, &other],
    );
    assert!(
        e.starts_with("ERR Script attempted to access keys that do not hash to the same slot"),
        "{e}"
    );
    let flagged = format!("#!lua flags=allow-cross-slot-keys\n{get_other}");
    assert_eq!(eval(&mut c, &flagged, &[k1], &[&other]), Value::Nil);
    assert_eq!(eval(&mut c, get_other, &[k1], &[&other]), Value::Nil);
    // A key of another group, even one this node leads: its records would belong to that
    // group's log, not this script's entry.
    let led = cl.led_by(leader);
    if let Some(far) = (0..)
        .take(100_000)
        .map(|i| format!("y{i}"))
        .find(|k| cl.group_of_key(k) != cl.group_of_key(k1) && led.contains(&cl.group_of_key(k)))
    {
        let e = err(&mut c, &["EVAL", get_other, "1", k1, &far]);
        assert!(
            e.starts_with(
                "ERR Script attempted to access a non local key in a cluster node script"
            ),
            "{e}"
        );
    }
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || {
                let mut r = cl.conn(i);
                let _: () = redis::cmd("READONLY").query(&mut r).unwrap();
                let got: Vec<Option<i64>> = redis::cmd("MGET")
                    .arg(k1)
                    .arg(k2)
                    .query(&mut r)
                    .unwrap_or_default();
                got == vec![Some(21), Some(21)]
            }),
            "node {i} did not apply the script's records"
        );
    }
}

/// Over maxmemory (noeviction), as Valkey's scripting tests check: a script without flags
/// runs until it calls a command that may grow memory; a script with a shebang needs
/// `allow-oom` (or `no-writes`) to start at all; FCALL follows its function's flags.
#[test]
fn scripts_over_maxmemory_follow_their_allow_oom_flag() {
    let s = Server::start(&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]);
    let mut c = s.conn();
    let write = "redis.call('set', KEYS[1], 1) return 1";
    let err = eval_err_args(&mut c, write, &["x"]);
    assert!(
        err.starts_with("OOM command not allowed when used memory > 'maxmemory'."),
        "{err}"
    );
    assert_eq!(
        eval(
            &mut c,
            "#!lua flags=no-writes\nreturn redis.call('get', KEYS[1])",
            &["x"],
            &[]
        ),
        Value::Nil
    );
    let err = eval_err_args(&mut c, "#!lua\nreturn redis.call('get', KEYS[1])", &["x"]);
    assert_eq!(
        err,
        "OOM allow-oom flag is not set on the script, can not run it when used memory > \
         'maxmemory'"
    );
    assert_eq!(
        eval(&mut c, "return redis.call('get', KEYS[1])", &["x"], &[]),
        Value::Nil
    );
    assert_eq!(
        eval(
            &mut c,
            &format!("#!lua flags=allow-oom\n{write}"),
            &["x"],
            &[]
        ),
        Value::Int(1)
    );
    // Functions: the same rule from their registered flags.
    let lib = "#!lua name=oomlib\n\
               redis.register_function('w', function(keys) return redis.call('set', keys[1], 2) end)\n\
               redis.register_function{function_name='wo', callback=function(keys) \
               return redis.call('set', keys[1], 3) end, flags={'allow-oom'}}";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut c)
        .unwrap();
    let err = common::err(&mut c, &["FCALL", "w", "1", "x"]);
    assert!(err.starts_with("OOM allow-oom flag is not set"), "{err}");
    let _: Value = common::run(&mut c, &["FCALL", "wo", "1", "x"]).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut c)
        .unwrap();
    assert_eq!(eval(&mut c, write, &["x"], &[]), Value::Int(1));
}

fn eval_err_args(c: &mut redis::Connection, script: &str, keys: &[&str]) -> String {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    match cmd.query::<Value>(c) {
        Ok(v) => panic!("expected an error from {script:?}, got {v:?}"),
        Err(e) => common::error_text(&e),
    }
}

/// A Lua body that spins for `ms` milliseconds by the server's clock.
fn spin_for(ms: u64) -> String {
    format!(
        "local function now() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end \
         local s = now() while now() - s < {ms} do end"
    )
}

/// A one-core server running a runaway script (threshold 100 ms), its runner connection,
/// another connection, and that connection's reply to `command`.
fn busy_single_core(command: &str) -> (Server, std::net::TcpStream, std::net::TcpStream, String) {
    let s = Server::start(&["--threads", "1", "--busy-reply-threshold", "100"]);
    let runner = s.start_runaway_script(ON_CORE_1);
    let mut t = s.raw();
    t.set_read_timeout(Some(DEADLINE)).unwrap();
    t.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let reply = common::read_some(&mut t).unwrap_or_default();
    (s, runner, t, reply)
}

/// With one core, a runaway script still leaves room for other connections: past
/// busy-reply-threshold they get -BUSY (Valkey's reply), and SCRIPT KILL stops it.
#[test]
fn a_runaway_script_on_the_only_core_answers_busy_and_dies_by_script_kill() {
    // Asked early, PING waits for the threshold, then answers -BUSY.
    let (_s, mut runner, mut t, reply) = busy_single_core("PING");
    assert!(
        reply.starts_with("-BUSY Valkey is busy running a script"),
        "{reply}"
    );
    // What Valkey serves during a busy script and needs no shard answers at once.
    t.write_all(b"HELLO 2\r\n").unwrap();
    let reply = common::read_some(&mut t).unwrap_or_default();
    assert!(reply.starts_with("*14\r\n$6\r\nserver\r\n"), "{reply}");
    t.write_all(b"SCRIPT KILL\r\n").unwrap();
    assert_eq!(common::read_some(&mut t).as_deref(), Some("+OK\r\n"));
    let reply = common::next_reply(&mut runner);
    assert!(
        reply.starts_with("-ERR Script killed by user with SCRIPT KILL"),
        "{reply}"
    );
    t.write_all(b"PING\r\n").unwrap();
    assert_eq!(common::read_some(&mut t).as_deref(), Some("+PONG\r\n"));
}

/// During a busy script SHUTDOWN is refused with -BUSY unless it says NOSAVE, as in Valkey;
/// SHUTDOWN NOSAVE stops the server although the script never ends.
#[test]
fn shutdown_nosave_stops_a_server_busy_with_a_script() {
    let (mut s, _runner, mut t, reply) = busy_single_core("SHUTDOWN");
    assert!(reply.starts_with("-BUSY"), "{reply}");
    t.write_all(b"SHUTDOWN NOSAVE\r\n").unwrap();
    assert!(s.wait_exit(DEADLINE).is_some(), "the server did not stop");
}

/// A long script pauses now and then so its core's other tasks run (see `engine::pause`),
/// but nothing sees it half done: a reader on the same core never sees its first write
/// without its last, nor a transaction's first command without the script after it.
#[test]
fn a_paused_script_is_still_atomic() {
    let s = Server::start(&["--threads", "1"]);
    let mut c = s.conn();
    let body = format!(
        "redis.call('incr', KEYS[1]) {} redis.call('incr', KEYS[2]) return 1",
        spin_for(300)
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let mut r = s.conn();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got: Vec<Option<i64>> = run(&mut r, &["MGET", "{p}1", "{p}2", "{p}3"]).unwrap();
                let [a, b, t] = [got[0], got[1], got[2]].map(|v| v.unwrap_or(0));
                assert_eq!(a, b, "a reader saw the script half done");
                // Each round runs the script alone, then INCR and the script in MULTI.
                assert!(
                    a == 2 * t || a == 2 * t + 1,
                    "a reader saw the transaction half done"
                );
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..3 {
        eval(&mut c, &body, &["{p}1", "{p}2"], &[]);
        let (n,): (i64,) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("{p}3")
            .ignore()
            .cmd("EVAL")
            .arg(&body)
            .arg(2)
            .arg("{p}1")
            .arg("{p}2")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(
        run::<Vec<i64>>(&mut c, &["MGET", "{p}1", "{p}2", "{p}3"]).unwrap(),
        vec![6, 6, 3]
    );
}

/// A script that runs far longer than the election timeout keeps its leadership: the core
/// running it still serves its groups' Raft traffic between the script's slices, so the
/// script's write commits and reaches every replica.
#[test]
fn a_long_cluster_script_keeps_its_leadership() {
    let cl = Cluster::start(3, &[]);
    cl.wait_ok();
    let k = "{long}:k";
    let leader = cl.leader_of_slot(key_slot(k.as_bytes()) as usize);
    let mut c = cl.conn(leader);
    let body = format!(
        "redis.call('set', KEYS[1], 'before') {} redis.call('set', KEYS[1], 'after') return 7",
        spin_for(3000)
    );
    assert_eq!(eval(&mut c, &body, &[k], &[]), Value::Int(7));
    assert_eq!(cl.leader_of_slot(key_slot(k.as_bytes()) as usize), leader);
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || {
                let mut r = cl.conn(i);
                let _: () = redis::cmd("READONLY").query(&mut r).unwrap();
                redis::cmd("GET")
                    .arg(k)
                    .query::<Option<String>>(&mut r)
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some("after")
            }),
            "node {i} did not apply the script's write"
        );
    }
}

/// Scripts sent from other cores queue behind each other on the core owning their key:
/// when one that paused ends and opens the gate, the next one parked starts at once and may
/// pause too, holding the shard, before the first one is answered. Every script is answered
/// and the server keeps serving (answering used to read the shard the paused script held: a
/// panic, and "core unavailable" errors). redis-benchmark's pipelined EVALSHA of a short
/// script on random keys makes that happen under load; it cannot fail when it does not.
#[test]
fn scripts_queued_from_other_cores_are_all_answered() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    let body = "redis.call('incr', KEYS[1]) redis.call('incr', KEYS[1]) \
                return redis.call('incr', KEYS[1])";
    let sha: String = run(&mut c, &["SCRIPT", "LOAD", body]).unwrap();
    for _ in 0..3 {
        let out = std::process::Command::new("redis-benchmark")
            .args([
                "-p",
                &s.port.to_string(),
                "-c",
                "50",
                "-n",
                "50000",
                "-P",
                "16",
            ])
            .args([
                "-r",
                "100000",
                "--csv",
                "EVALSHA",
                &sha,
                "1",
                "q:__rand_int__",
            ])
            .output()
            .expect("redis-benchmark runs (CI installs redis-tools)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && !text.contains("rror"), "{text}");
    }
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
}
