//! MULTI / EXEC / DISCARD / WATCH / UNWATCH through real clients, standalone (two cores, so
//! transactions span cores) and in a cluster (one slot, one log entry), compared with
//! Valkey's replies.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::cluster::Cluster;
use common::{DEADLINE, Server, err, run, wait_until};
use redis::Value;
use tallykv::cluster::key_slot;

/// Keys that live on different cores with `--threads 2` (slots 15495 and 3300).
const ON_CORE_1: &str = "a";
const ON_CORE_0: &str = "b";

fn slot_of(key: &str) -> usize {
    key_slot(key.as_bytes()) as usize
}

fn two_cores() -> Server {
    Server::start(&["--threads", "2"])
}

fn raw(c: &mut redis::Connection, args: &[&str]) -> Value {
    run::<Value>(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Sends `request` (raw RESP) and reads until `expected.len()` bytes arrived.
fn exchange(s: &Server, request: &str, expected: &str) {
    use std::io::{Read, Write};
    let mut t = s.raw();
    t.write_all(request.as_bytes()).unwrap();
    let mut got = vec![0u8; expected.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

fn resp(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s += &format!("${}\r\n{a}\r\n", a.len());
    }
    s
}

#[test]
fn queued_commands_run_at_exec_with_their_replies_in_order() {
    let s = two_cores();
    let cmds: &[&[&str]] = &[
        &["MULTI"],
        &["SET", ON_CORE_1, "1"],
        &["SET", ON_CORE_0, "x"],
        &["INCR", ON_CORE_1],
        &["INCR", ON_CORE_0],
        &["MGET", ON_CORE_1, ON_CORE_0],
        &["PING"],
        &["EXEC"],
    ];
    let request: String = cmds.iter().map(|c| resp(c)).collect();
    // A runtime error (INCR of "x") does not roll the transaction back (Valkey's rule).
    let expected = "+OK\r\n".to_string()
        + &"+QUEUED\r\n".repeat(6)
        + "*6\r\n+OK\r\n+OK\r\n:2\r\n-ERR value is not an integer or out of range\r\n\
           *2\r\n$1\r\n2\r\n$1\r\nx\r\n+PONG\r\n";
    exchange(&s, &request, &expected);
}

#[test]
fn misuse_is_answered_as_valkey_does() {
    let s = two_cores();
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["EXEC"]), "ERR EXEC without MULTI");
    assert_eq!(err(&mut c, &["DISCARD"]), "ERR DISCARD without MULTI");
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(err(&mut c, &["MULTI"]), "ERR MULTI calls can not be nested");
    assert_eq!(
        err(&mut c, &["WATCH", "k"]),
        "ERR WATCH inside MULTI is not allowed"
    );
    // Neither error dooms the transaction.
    assert_eq!(
        raw(&mut c, &["SET", "k", "v"]),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(raw(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));

    // A command refused while queuing (unknown, wrong arity) dooms it: EXECABORT, nothing runs.
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(
        raw(&mut c, &["SET", "k", "changed"]),
        Value::SimpleString("QUEUED".into())
    );
    assert!(err(&mut c, &["NOSUCHCMD"]).starts_with("ERR unknown command 'NOSUCHCMD'"));
    assert_eq!(
        err(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&mut c, &["EXEC"]),
        "EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(run::<String>(&mut c, &["GET", "k"]).unwrap(), "v");

    // DISCARD drops the queue.
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(
        raw(&mut c, &["SET", "k", "discarded"]),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(raw(&mut c, &["DISCARD"]), Value::Okay);
    assert_eq!(run::<String>(&mut c, &["GET", "k"]).unwrap(), "v");
    assert_eq!(err(&mut c, &["EXEC"]), "ERR EXEC without MULTI");

    // An empty transaction answers an empty array.
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(raw(&mut c, &["EXEC"]), Value::Array(vec![]));
    // Not allowed inside a transaction.
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(
        err(&mut c, &["SAVE"]),
        "ERR Command not allowed inside a transaction"
    );
    assert_eq!(
        err(&mut c, &["EXEC"]),
        "EXECABORT Transaction discarded because of previous errors."
    );
}

#[test]
fn redis_rs_atomic_pipelines_span_cores() {
    let s = two_cores();
    let mut c = s.conn();
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCRBY")
        .arg(ON_CORE_1)
        .arg(5)
        .cmd("DECRBY")
        .arg(ON_CORE_0)
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!((x, y), (5, -5));
    // RENAME and MSETNX across cores are single atomic commands too.
    assert_eq!(raw(&mut c, &["RENAME", ON_CORE_1, "moved-b"]), Value::Okay);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", ON_CORE_1]).unwrap(), 0);
    assert_eq!(run::<i64>(&mut c, &["GET", "moved-b"]).unwrap(), 5);
    assert_eq!(
        run::<i64>(&mut c, &["MSETNX", ON_CORE_1, "1", ON_CORE_0, "2"]).unwrap(),
        0
    );
    assert_eq!(run::<i64>(&mut c, &["EXISTS", ON_CORE_1]).unwrap(), 0);
}

/// A watched key that changes makes EXEC answer a null array and run nothing.
fn assert_aborted(c: &mut redis::Connection, key_to_set: &str) {
    assert_eq!(raw(c, &["MULTI"]), Value::Okay);
    assert_eq!(
        raw(c, &["SET", key_to_set, "from-tx"]),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(raw(c, &["EXEC"]), Value::Nil);
    assert_ne!(
        run::<Option<String>>(c, &["GET", key_to_set])
            .unwrap()
            .as_deref(),
        Some("from-tx")
    );
}

#[test]
fn watch_is_invalidated_by_any_change() {
    let s = two_cores();
    let mut c = s.conn();
    let mut other = s.conn();
    // Another client's write, on the watched key's core or another one.
    for (watched, written) in [(ON_CORE_1, ON_CORE_0), (ON_CORE_0, ON_CORE_1)] {
        assert_eq!(raw(&mut c, &["WATCH", watched]), Value::Okay);
        assert_eq!(raw(&mut other, &["SET", watched, "changed"]), Value::Okay);
        assert_aborted(&mut c, written);
    }
    // A delete, FLUSHALL, an expiry (even one nobody observed yet).
    assert_eq!(raw(&mut c, &["WATCH", ON_CORE_1]), Value::Okay);
    assert_eq!(run::<i64>(&mut other, &["DEL", ON_CORE_1]).unwrap(), 1);
    assert_aborted(&mut c, ON_CORE_0);
    raw(&mut other, &["SET", ON_CORE_1, "v"]);
    assert_eq!(raw(&mut c, &["WATCH", ON_CORE_1]), Value::Okay);
    assert_eq!(raw(&mut other, &["FLUSHALL"]), Value::Okay);
    assert_aborted(&mut c, ON_CORE_0);
    raw(&mut other, &["SET", ON_CORE_1, "v", "PX", "30"]);
    assert_eq!(raw(&mut c, &["WATCH", ON_CORE_1]), Value::Okay);
    std::thread::sleep(Duration::from_millis(60));
    assert_aborted(&mut c, ON_CORE_0);

    // Untouched, UNWATCHed or DISCARDed sessions commit.
    raw(&mut other, &["SET", ON_CORE_1, "v"]);
    assert_eq!(raw(&mut c, &["WATCH", ON_CORE_1, ON_CORE_0]), Value::Okay);
    // INFO clients counts the session and its keys.
    let info: String = run(&mut other, &["INFO", "clients"]).unwrap();
    assert!(
        info.contains("watching_clients:1\r\n") && info.contains("total_watched_keys:2\r\n"),
        "{info}"
    );
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    raw(&mut c, &["SET", ON_CORE_0, "committed"]);
    assert_eq!(raw(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));
    assert_eq!(raw(&mut c, &["WATCH", ON_CORE_1]), Value::Okay);
    assert_eq!(raw(&mut c, &["UNWATCH"]), Value::Okay);
    raw(&mut other, &["SET", ON_CORE_1, "again"]);
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    raw(&mut c, &["SET", ON_CORE_0, "unwatched"]);
    assert_eq!(raw(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));
    // EXEC ends the session: a later change does not affect the next transaction.
    raw(&mut other, &["SET", ON_CORE_1, "later"]);
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    raw(&mut c, &["GET", ON_CORE_1]);
    assert_eq!(
        raw(&mut c, &["EXEC"]),
        Value::Array(vec![Value::BulkString(b"later".to_vec())])
    );

    // RESP3: the aborted EXEC is a null.
    let mut c3 = s.conn3();
    assert_eq!(raw(&mut c3, &["WATCH", ON_CORE_1]), Value::Okay);
    raw(&mut other, &["SET", ON_CORE_1, "x"]);
    assert_eq!(raw(&mut c3, &["MULTI"]), Value::Okay);
    raw(&mut c3, &["SET", ON_CORE_0, "y"]);
    assert_eq!(raw(&mut c3, &["EXEC"]), Value::Nil);
}

#[test]
fn concurrent_transactions_are_atomic_and_lose_nothing() {
    let s = two_cores();
    let mut c = s.conn();
    raw(&mut c, &["MSET", ON_CORE_1, "0", ON_CORE_0, "0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(AtomicU64::new(0));
    // A reader checks the invariant a + b == 0 with transactions of its own.
    let reader = {
        let (url, stop, torn) = (s.url(), stop.clone(), torn.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut reads = 0u64;
            while !stop.load(Relaxed) || reads == 0 {
                let (a, b): (i64, i64) = redis::pipe()
                    .atomic()
                    .get(ON_CORE_1)
                    .get(ON_CORE_0)
                    .query(&mut c)
                    .unwrap();
                if a + b != 0 {
                    torn.fetch_add(1, Relaxed);
                }
                reads += 1;
            }
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..150 {
                    let _: () = redis::pipe()
                        .atomic()
                        .incr(ON_CORE_1, 1)
                        .ignore()
                        .decr(ON_CORE_0, 1)
                        .ignore()
                        .query(&mut c)
                        .unwrap();
                }
                // WATCH retry loops: a check-and-set that must not lose an update.
                for _ in 0..50 {
                    loop {
                        let _: () = redis::cmd("WATCH").arg("cas").query(&mut c).unwrap();
                        let v: Option<i64> = redis::cmd("GET").arg("cas").query(&mut c).unwrap();
                        let done: Option<(String,)> = redis::pipe()
                            .atomic()
                            .set("cas", v.unwrap_or(0) + 1)
                            .query(&mut c)
                            .unwrap();
                        if done.is_some() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Relaxed);
    reader.join().unwrap();
    assert_eq!(torn.load(Relaxed), 0, "a reader saw half a transaction");
    assert_eq!(run::<i64>(&mut c, &["GET", ON_CORE_1]).unwrap(), 1200);
    assert_eq!(run::<i64>(&mut c, &["GET", ON_CORE_0]).unwrap(), -1200);
    assert_eq!(run::<i64>(&mut c, &["GET", "cas"]).unwrap(), 400);
}

#[test]
fn a_transaction_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let mut c = s.conn();
    let _: () = redis::pipe()
        .atomic()
        .set(ON_CORE_1, "one")
        .ignore()
        .set(ON_CORE_0, "zero")
        .ignore()
        .query(&mut c)
        .unwrap();
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(
        run::<Vec<String>>(&mut c, &["MGET", ON_CORE_1, ON_CORE_0]).unwrap(),
        vec!["one", "zero"]
    );
}

#[test]
fn cluster_transactions_are_one_slot_and_reach_every_replica() {
    let cl = Cluster::start(3, &[]);
    cl.wait_ok();
    let key = |k: &str| format!("{{acct}}:{k}");
    let leader = cl.leader_of_slot(slot_of(&key("x")));
    let mut c = cl.conn(leader);
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr(key("x"), 10)
        .decr(key("y"), 10)
        .query(&mut c)
        .unwrap();
    assert_eq!((x, y), (10, -10));
    // Keys of different slots: CROSSSLOT, and nothing runs.
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    raw(&mut c, &["INCR", &key("x")]);
    let other = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| cl.leader_of_slot(slot_of(k)) == leader && slot_of(k) != slot_of(&key("x")))
        .expect("a key of another slot this node leads");
    raw(&mut c, &["INCR", &other]);
    assert_eq!(
        err(&mut c, &["EXEC"]),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(run::<i64>(&mut c, &["GET", &key("x")]).unwrap(), 10);
    // WATCH works through the group.
    assert_eq!(raw(&mut c, &["WATCH", &key("x")]), Value::Okay);
    let mut c2 = cl.conn(leader);
    raw(&mut c2, &["INCR", &key("x")]);
    assert_eq!(raw(&mut c, &["MULTI"]), Value::Okay);
    raw(&mut c, &["SET", &key("y"), "0"]);
    assert_eq!(raw(&mut c, &["EXEC"]), Value::Nil);
    // Every replica applied the transaction's records (READONLY reads of its copy).
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || {
                let mut r = cl.conn(i);
                let _: () = redis::cmd("READONLY").query(&mut r).unwrap();
                let got: Vec<Option<i64>> = redis::cmd("MGET")
                    .arg(key("x"))
                    .arg(key("y"))
                    .query(&mut r)
                    .unwrap_or_default();
                got == vec![Some(11), Some(-10)]
            }),
            "node {i} did not apply the transaction"
        );
    }
}

/// Sends `commands` in one write on a raw connection to `port` and reads the whole reply
/// stream, `expected` bytes.
fn pipelined(port: u16, commands: &[&[&str]], expected: &str) {
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_read_timeout(Some(DEADLINE)).unwrap();
    let request: String = commands.iter().map(|c| resp(c)).collect();
    t.write_all(request.as_bytes()).unwrap();
    let mut got = vec![0u8; expected.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

/// A pipeline of cluster transactions (queued together into their group's batch): each keeps
/// its own replies, its own WATCH guard and its own runtime errors, and every replica ends
/// with the same keys.
#[test]
fn pipelined_cluster_transactions_stay_apart() {
    let cl = Cluster::start(3, &[]);
    cl.wait_ok();
    let key = |k: &str| format!("{{card}}:{k}");
    let (x, y, s) = (key("x"), key("y"), key("s"));
    let leader = cl.leader_of_slot(slot_of(&x));
    let port = cl.port(leader);
    // Sixteen transactions in one write, with commands between them.
    let mut commands: Vec<Vec<&str>> = Vec::new();
    let mut expected = String::new();
    for i in 1..=16 {
        commands.push(vec!["MULTI"]);
        commands.push(vec!["INCR", &x]);
        commands.push(vec!["INCRBY", &y, "2"]);
        commands.push(vec!["EXEC"]);
        commands.push(vec!["GET", &x]);
        expected += &format!("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:{i}\r\n:{}\r\n", 2 * i);
        expected += &format!("${}\r\n{i}\r\n", i.to_string().len());
    }
    let refs: Vec<&[&str]> = commands.iter().map(|c| &c[..]).collect();
    pipelined(port, &refs, &expected);
    // A runtime error stays inside its transaction; the next one runs in full.
    pipelined(
        port,
        &[
            &["MULTI"],
            &["SET", &s, "abc"],
            &["INCR", &s],
            &["EXEC"],
            &["MULTI"],
            &["INCR", &x],
            &["EXEC"],
        ],
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n\
         +OK\r\n+QUEUED\r\n*1\r\n:17\r\n",
    );
    // WATCH, then the same connection writes the key in the pipeline before its EXEC: the
    // guard (run in the batch, after that write) fails that transaction only; the next one
    // in the pipeline is not watched and runs.
    {
        use std::io::{Read, Write};
        let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.set_read_timeout(Some(DEADLINE)).unwrap();
        t.write_all(resp(&["WATCH", &x]).as_bytes()).unwrap();
        let mut ok = [0u8; 5];
        t.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        let request: String = [
            resp(&["SET", &x, "100"]),
            resp(&["MULTI"]),
            resp(&["INCRBY", &y, "1000"]),
            resp(&["EXEC"]),
            resp(&["MULTI"]),
            resp(&["INCR", &x]),
            resp(&["EXEC"]),
        ]
        .concat();
        t.write_all(request.as_bytes()).unwrap();
        let expected = "+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n+OK\r\n+QUEUED\r\n*1\r\n:101\r\n";
        let mut got = vec![0u8; expected.len()];
        t.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }
    // Every replica holds what the leader holds.
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || {
                let mut r = cl.conn(i);
                let _: () = redis::cmd("READONLY").query(&mut r).unwrap();
                let got: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&x)
                    .arg(&y)
                    .arg(&s)
                    .query(&mut r)
                    .unwrap_or_default();
                got == vec![Some("101".into()), Some("32".into()), Some("abc".into())]
            }),
            "node {i} does not hold the transactions' keys"
        );
    }
}

/// Out of memory, as Valkey: EXEC of a transaction holding a command that may grow memory
/// is refused whole (EXECABORT with the OOM reason, nothing runs), any command queued while
/// out of memory is refused and dooms its transaction, and a read-only transaction queued
/// before still runs.
#[test]
fn out_of_memory_refuses_whole_transactions() {
    let s = two_cores();
    let mut a = s.conn();
    let mut b = s.conn();
    let _: () = run(&mut a, &["SET", ON_CORE_0, "before"]).unwrap();
    assert_eq!(raw(&mut a, &["MULTI"]), Value::Okay);
    raw(&mut a, &["SET", ON_CORE_0, "during"]);
    raw(&mut a, &["INCR", ON_CORE_1]);
    let mut r = s.conn();
    assert_eq!(raw(&mut r, &["MULTI"]), Value::Okay);
    raw(&mut r, &["GET", ON_CORE_0]);
    let _: () = run(&mut b, &["CONFIG", "SET", "maxmemory", "1"]).unwrap();
    assert_eq!(
        err(&mut a, &["EXEC"]),
        "EXECABORT Transaction discarded because of: OOM command not allowed when used \
         memory > 'maxmemory'."
    );
    // The read-only transaction runs.
    assert_eq!(
        raw(&mut r, &["EXEC"]),
        Value::Array(vec![Value::BulkString(b"before".to_vec())])
    );
    // Queued while out of memory: refused, and the transaction is doomed.
    assert_eq!(raw(&mut a, &["MULTI"]), Value::Okay);
    assert_eq!(
        err(&mut a, &["GET", ON_CORE_0]),
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    assert_eq!(
        err(&mut a, &["EXEC"]),
        "EXECABORT Transaction discarded because of previous errors."
    );
    let _: () = run(&mut b, &["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    assert_eq!(
        run::<String>(&mut a, &["GET", ON_CORE_0]).unwrap(),
        "before"
    );
    assert_eq!(
        run::<Option<i64>>(&mut a, &["GET", ON_CORE_1]).unwrap(),
        None
    );
    let (v,): (i64,) = redis::pipe()
        .atomic()
        .incr(ON_CORE_1, 1)
        .query(&mut a)
        .unwrap();
    assert_eq!(v, 1);
}

/// EXEC checks every queued command against the user again, as Valkey does: a command the
/// user lost the right to since it was queued is refused in EXEC's reply, the rest run, and
/// ACL LOG notes it in the `multi` context.
#[test]
fn exec_checks_acl_again() {
    use std::io::Write;
    let s = Server::start(&[]);
    let mut admin = s.conn();
    let _: () = run(
        &mut admin,
        &["ACL", "SETUSER", "u", "on", "nopass", "~*", "+@all"],
    )
    .unwrap();
    // Raw: redis-rs turns an EXEC reply holding an error into an error of its own.
    let mut c = s.raw();
    c.write_all(b"AUTH u x\r\nMULTI\r\nSET k v\r\nINCR n\r\n")
        .unwrap();
    let mut got = String::new();
    while got.matches("QUEUED").count() < 2 {
        got += &common::next_reply(&mut c);
    }
    assert_eq!(got, "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    let _: () = run(&mut admin, &["ACL", "SETUSER", "u", "-set"]).unwrap();
    c.write_all(b"EXEC\r\n").unwrap();
    let want = "*2\r\n-NOPERM User u has no permissions to run the 'set' command\r\n:1\r\n";
    let mut got = String::new();
    while got.len() < want.len() {
        got += &common::next_reply(&mut c);
    }
    assert_eq!(got, want);
    let k: Option<String> = run(&mut admin, &["GET", "k"]).unwrap();
    assert_eq!(k, None);
    let log: Vec<Value> = run(&mut admin, &["ACL", "LOG", "1"]).unwrap();
    let text = format!("{log:?}");
    assert!(text.contains("multi") && text.contains("\"set\""), "{text}");
}
