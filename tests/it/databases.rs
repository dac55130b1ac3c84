//! Numbered databases through real clients on a two-core server: SELECT, MOVE, COPY ... DB,
//! SWAPDB, FLUSHDB/FLUSHALL, the keyspace commands per database, WATCH, blocking pops,
//! transactions and scripts that SELECT, INFO keyspace, expiry, and persistence across a
//! restart, compared with Valkey's replies.

use crate::common;

use std::time::Duration;

use common::{DEADLINE, Server, err, int, key_on, ok, run, ttl_after, wait_until};

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    run(c, &["GET", key]).unwrap()
}

/// The `dbN:` lines of INFO keyspace.
fn keyspace_lines(c: &mut redis::Connection) -> Vec<String> {
    let info: String = run(c, &["INFO", "keyspace"]).unwrap();
    info.lines()
        .filter(|l| l.starts_with("db"))
        .map(str::to_string)
        .collect()
}

#[test]
fn databases_keep_their_keys_apart() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let (a, b) = (key_on(0, "a"), key_on(1, "b"));
    ok(&mut c, &["SET", &a, "zero"]);
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(get(&mut c, &a), None);
    ok(&mut c, &["SET", &a, "one"]);
    ok(&mut c, &["SET", &b, "one-b"]);
    int(&mut c, &["RPUSH", "list", "x"]);
    assert_eq!(run::<String>(&mut c, &["TYPE", "list"]).unwrap(), "list");
    assert_eq!(int(&mut c, &["DBSIZE"]), 3);
    let mut keys: Vec<String> = run(&mut c, &["KEYS", "*"]).unwrap();
    keys.sort();
    let mut want = vec![a.clone(), b.clone(), "list".to_string()];
    want.sort();
    assert_eq!(keys, want);
    // SCAN walks the selected database only, across both cores.
    let mut cursor = "0".to_string();
    let mut scanned = Vec::new();
    loop {
        let (next, batch): (String, Vec<String>) = run(&mut c, &["SCAN", &cursor]).unwrap();
        scanned.extend(batch);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    scanned.sort();
    assert_eq!(scanned, want);
    assert!(
        run::<Option<String>>(&mut c, &["RANDOMKEY"])
            .unwrap()
            .is_some()
    );
    assert_eq!(int(&mut c, &["EXISTS", &a, &b]), 2);

    // Another connection starts in database 0; redis-rs selects from the URL.
    let mut other = s.conn();
    assert_eq!(get(&mut other, &a).as_deref(), Some("zero"));
    assert_eq!(get(&mut other, &b), None);
    assert_eq!(int(&mut other, &["DBSIZE"]), 1);
    let mut one = redis::Client::open(format!("{}1", s.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(get(&mut one, &a).as_deref(), Some("one"));

    let mut lines = keyspace_lines(&mut c);
    lines.sort();
    assert_eq!(
        lines,
        [
            "db0:keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=0",
            "db1:keys=3,expires=0,avg_ttl=0,keys_with_volatile_items=0",
        ]
    );
    // MEMORY STATS has a `db.N` entry per database holding keys.
    let stats: Vec<redis::Value> = run(&mut c, &["MEMORY", "STATS"]).unwrap();
    let names: Vec<String> = stats
        .iter()
        .step_by(2)
        .filter_map(|v| redis::from_redis_value::<String>(v.clone()).ok())
        .filter(|n| n.starts_with("db.") && n[3..].parse::<u32>().is_ok())
        .collect();
    assert_eq!(names, ["db.0", "db.1"]);
    let list: String = run(&mut c, &["CLIENT", "LIST"]).unwrap();
    let me: i64 = run(&mut c, &["CLIENT", "ID"]).unwrap();
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("id={me} ")))
        .expect("own line");
    assert!(line.contains(" db=1 "), "{line}");

    // FLUSHDB empties the selected database only; FLUSHALL every one.
    ok(&mut c, &["FLUSHDB"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    assert_eq!(get(&mut other, &a).as_deref(), Some("zero"));
    ok(&mut c, &["SET", &b, "again"]);
    ok(&mut c, &["FLUSHALL"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    assert_eq!(int(&mut other, &["DBSIZE"]), 0);
    assert!(keyspace_lines(&mut c).is_empty());

    // RESET goes back to database 0.
    ok(&mut c, &["SELECT", "2"]);
    ok(&mut c, &["SET", "k", "two"]);
    assert_eq!(run::<String>(&mut c, &["RESET"]).unwrap(), "RESET");
    assert_eq!(get(&mut c, "k"), None);
}

#[test]
fn select_checks_the_index_against_databases() {
    let s = Server::start(&["--databases", "4"]);
    let mut c = s.conn();
    ok(&mut c, &["SELECT", "3"]);
    assert_eq!(
        err(&mut c, &["SELECT", "4"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["MOVE", "k", "4"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SWAPDB", "0", "4"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        run::<Vec<String>>(&mut c, &["CONFIG", "GET", "databases"]).unwrap(),
        ["databases", "4"]
    );
}

#[test]
fn move_takes_the_key_with_its_ttl() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SET", "k", "v", "EX", "100"]);
    assert_eq!(int(&mut c, &["MOVE", "k", "2"]), 1);
    assert_eq!(get(&mut c, "k"), None);
    ok(&mut c, &["SELECT", "2"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("v"));
    assert!(ttl_after(100).contains(&int(&mut c, &["TTL", "k"])));
    // Nothing to move, or the key exists there already: 0, both keys stay.
    assert_eq!(int(&mut c, &["MOVE", "missing", "0"]), 0);
    ok(&mut c, &["SELECT", "0"]);
    ok(&mut c, &["SET", "k", "mine"]);
    assert_eq!(int(&mut c, &["MOVE", "k", "2"]), 0);
    assert_eq!(get(&mut c, "k").as_deref(), Some("mine"));
    assert_eq!(
        err(&mut c, &["MOVE", "k", "0"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        err(&mut c, &["MOVE", "k", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["MOVE", "k", "-1"]),
        "ERR DB index is out of range"
    );
    // A collection moves whole.
    int(&mut c, &["ZADD", "z", "1", "a", "2", "b"]);
    assert_eq!(int(&mut c, &["MOVE", "z", "5"]), 1);
    ok(&mut c, &["SELECT", "5"]);
    assert_eq!(int(&mut c, &["ZCARD", "z"]), 2);
}

#[test]
fn copy_to_another_database_on_one_core_and_across_cores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for (src, dst) in [
        ("{t}src".to_string(), "{t}dst".to_string()),
        (key_on(0, "src"), key_on(1, "dst")),
        (key_on(1, "src"), key_on(0, "dst")),
    ] {
        ok(&mut c, &["SELECT", "0"]);
        int(&mut c, &["HSET", &src, "f", "v"]);
        int(&mut c, &["EXPIRE", &src, "100"]);
        assert_eq!(int(&mut c, &["COPY", &src, &dst, "DB", "3"]), 1);
        assert_eq!(int(&mut c, &["EXISTS", &dst]), 0);
        // The same name in another database is another key.
        assert_eq!(int(&mut c, &["COPY", &src, &src, "DB", "3"]), 1);
        ok(&mut c, &["SELECT", "3"]);
        assert_eq!(
            run::<Option<String>>(&mut c, &["HGET", &dst, "f"])
                .unwrap()
                .as_deref(),
            Some("v")
        );
        assert!(ttl_after(100).contains(&int(&mut c, &["TTL", &dst])));
        ok(&mut c, &["SELECT", "0"]);
        // Exists there: 0 unless REPLACE.
        int(&mut c, &["HSET", &src, "f", "w"]);
        assert_eq!(int(&mut c, &["COPY", &src, &dst, "DB", "3"]), 0);
        assert_eq!(int(&mut c, &["COPY", &src, &dst, "DB", "3", "REPLACE"]), 1);
        ok(&mut c, &["SELECT", "3"]);
        assert_eq!(
            run::<Option<String>>(&mut c, &["HGET", &dst, "f"])
                .unwrap()
                .as_deref(),
            Some("w")
        );
        // From database 3 back to 0, within database 3.
        assert_eq!(int(&mut c, &["COPY", &dst, "back", "DB", "0"]), 1);
        assert_eq!(int(&mut c, &["COPY", &dst, "{t}x", "DB", "3"]), 1);
        assert_eq!(
            err(&mut c, &["COPY", &dst, &dst, "DB", "3"]),
            "ERR source and destination objects are the same"
        );
        ok(&mut c, &["FLUSHALL"]);
    }
}

#[test]
fn swapdb_swaps_on_every_core_at_once() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let (a, b) = (key_on(0, "a"), key_on(1, "b"));
    ok(&mut c, &["MSET", &a, "0a", &b, "0b"]);
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["SET", &a, "1a"]);
    ok(&mut c, &["SELECT", "0"]);
    ok(&mut c, &["SWAPDB", "0", "1"]);
    // The connection stays in database 0, which now holds database 1's keys.
    assert_eq!(get(&mut c, &a).as_deref(), Some("1a"));
    assert_eq!(get(&mut c, &b), None);
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(
        run::<Vec<Option<String>>>(&mut c, &["MGET", &a, &b]).unwrap(),
        [Some("0a".to_string()), Some("0b".to_string())]
    );
    assert_eq!(int(&mut c, &["DBSIZE"]), 2);
    ok(&mut c, &["SWAPDB", "1", "1"]);
    // With a database never used.
    ok(&mut c, &["SWAPDB", "1", "7"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    ok(&mut c, &["SELECT", "7"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 2);
    assert_eq!(
        err(&mut c, &["SWAPDB", "x", "1"]),
        "ERR invalid first DB index"
    );
    assert_eq!(
        err(&mut c, &["SWAPDB", "1", "y"]),
        "ERR invalid second DB index"
    );
    assert_eq!(
        err(&mut c, &["SWAPDB", "1", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SWAPDB", "1"]),
        "ERR wrong number of arguments for 'swapdb' command"
    );
    // Inside a transaction too.
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("SWAPDB")
        .arg(7)
        .arg(0)
        .cmd("DBSIZE")
        .cmd("SELECT")
        .arg(0)
        .cmd("DBSIZE");
    let (swapped, in7, _, in0): (String, i64, String, i64) = tx.query(&mut c).unwrap();
    assert_eq!((swapped.as_str(), in7, in0), ("OK", 1, 2));
    // Scripts cannot swap (Valkey allows it; a tallykv script runs on one core).
    let e = err(&mut c, &["EVAL", "return redis.call('swapdb', 0, 1)", "0"]);
    assert!(
        e.starts_with("ERR This command is not allowed from script"),
        "{e}"
    );
}

#[test]
fn watch_and_blocking_pops_follow_their_database() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut other = s.conn();
    // A write to the same name in another database leaves the WATCH alone.
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["WATCH", "w"]);
    ok(&mut other, &["SET", "w", "db0"]);
    let mut tx = redis::pipe();
    tx.atomic().cmd("SET").arg("w").arg("tx");
    let r: Option<(String,)> = tx.query(&mut c).unwrap();
    assert_eq!(r, Some(("OK".to_string(),)));
    // A write in its own database fails the EXEC.
    ok(&mut c, &["WATCH", "w"]);
    ok(&mut other, &["SELECT", "1"]);
    ok(&mut other, &["SET", "w", "db1"]);
    let r: Option<(String,)> = tx.query(&mut c).unwrap();
    assert_eq!(r, None);
    // SWAPDB touches the watched keys that exist in either database.
    ok(&mut c, &["WATCH", "w"]);
    ok(&mut other, &["SWAPDB", "1", "9"]);
    let r: Option<(String,)> = tx.query(&mut c).unwrap();
    assert_eq!(r, None);

    // A client blocked in database 1 is not woken by a push to database 0...
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut other, &["SELECT", "0"]);
    let url = s.url();
    let blocked = std::thread::spawn(move || {
        let mut b = redis::Client::open(format!("{url}1"))
            .unwrap()
            .get_connection()
            .unwrap();
        run::<Option<(String, String)>>(&mut b, &["BLPOP", "q", "0"]).unwrap()
    });
    let blocked_clients = |c: &mut redis::Connection| {
        let info: String = run(c, &["INFO", "clients"]).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .map(|n| n.trim().parse::<i64>().unwrap())
            .unwrap()
    };
    assert!(wait_until(DEADLINE, || blocked_clients(&mut other) == 1));
    int(&mut other, &["RPUSH", "q", "db0"]);
    // ...but by one to database 1.
    int(&mut c, &["RPUSH", "q", "db1"]);
    let got = blocked.join().unwrap();
    assert_eq!(got, Some(("q".to_string(), "db1".to_string())));
    assert_eq!(int(&mut other, &["LLEN", "q"]), 1);

    // SWAPDB wakes a client blocked on a key the swap gives data.
    let url = s.url();
    let blocked = std::thread::spawn(move || {
        let mut b = redis::Client::open(format!("{url}4"))
            .unwrap()
            .get_connection()
            .unwrap();
        run::<Option<(String, String)>>(&mut b, &["BLPOP", "q", "0"]).unwrap()
    });
    assert!(wait_until(DEADLINE, || blocked_clients(&mut other) == 1));
    ok(&mut other, &["SWAPDB", "0", "4"]);
    assert_eq!(
        blocked.join().unwrap(),
        Some(("q".to_string(), "db0".to_string()))
    );
}

#[test]
fn transactions_and_scripts_select() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // SELECT inside MULTI switches the database for what follows, and for the connection.
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("SET")
        .arg("k")
        .arg("zero")
        .cmd("SELECT")
        .arg(6)
        .cmd("SET")
        .arg("k")
        .arg("six");
    let _: (String, String, String) = tx.query(&mut c).unwrap();
    assert_eq!(get(&mut c, "k").as_deref(), Some("six"));
    ok(&mut c, &["SELECT", "0"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("zero"));

    // A script's SELECT changes the script's database only.
    let script = "redis.call('select', 6) \
                  local v = redis.call('get', KEYS[1]) \
                  redis.call('set', KEYS[1], 'script') \
                  return v";
    assert_eq!(
        run::<String>(&mut c, &["EVAL", script, "1", "k"]).unwrap(),
        "six"
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some("zero"));
    ok(&mut c, &["SELECT", "6"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("script"));
    // A script starts in the caller's database.
    assert_eq!(
        run::<String>(
            &mut c,
            &["EVAL", "return redis.call('get', KEYS[1])", "1", "k"]
        )
        .unwrap(),
        "script"
    );
    let e = err(&mut c, &["EVAL", "return redis.call('select', 16)", "0"]);
    assert!(e.starts_with("ERR DB index is out of range"), "{e}");
}

#[test]
fn keys_expire_in_every_database() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    ok(&mut c, &["SELECT", "3"]);
    for i in 0..50 {
        ok(&mut c, &["SET", &format!("k{i}"), "v", "PX", "50"]);
    }
    ok(&mut c, &["SET", "stays", "v"]);
    // Nobody reads them: the active expiry cycle deletes them.
    assert!(wait_until(DEADLINE, || int(&mut c, &["DBSIZE"]) == 1));
    let expired: String = run(&mut c, &["INFO", "stats"]).unwrap();
    assert!(expired.contains("expired_keys:50"), "{expired}");
}

#[test]
fn databases_survive_a_restart() {
    let mut s = Server::start(&["--appendfsync", "always"]);
    {
        let mut c = s.conn();
        let (a, b) = (key_on(0, "a"), key_on(1, "b"));
        ok(&mut c, &["SET", &a, "zero"]);
        ok(&mut c, &["SELECT", "1"]);
        ok(&mut c, &["SET", &a, "one"]);
        int(&mut c, &["SADD", &b, "m1", "m2"]);
        ok(&mut c, &["SET", "gone", "v", "PX", "100"]);
        ok(&mut c, &["SELECT", "2"]);
        ok(&mut c, &["SET", &b, "two"]);
        ok(&mut c, &["SELECT", "12"]);
        ok(&mut c, &["SET", "flushed", "v"]);
        ok(&mut c, &["FLUSHDB"]);
        ok(&mut c, &["SWAPDB", "2", "5"]);
        ok(&mut c, &["SELECT", "0"]);
        assert_eq!(int(&mut c, &["MOVE", &a, "8"]), 1);
    }
    s.kill9();
    std::thread::sleep(Duration::from_millis(150));
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    let (a, b) = (key_on(0, "a"), key_on(1, "b"));
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    ok(&mut c, &["SELECT", "8"]);
    assert_eq!(get(&mut c, &a).as_deref(), Some("zero"));
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(get(&mut c, &a).as_deref(), Some("one"));
    assert_eq!(int(&mut c, &["SCARD", &b]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "gone"]), 0);
    ok(&mut c, &["SELECT", "2"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    ok(&mut c, &["SELECT", "5"]);
    assert_eq!(get(&mut c, &b).as_deref(), Some("two"));
    ok(&mut c, &["SELECT", "12"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
    let mut lines = keyspace_lines(&mut c);
    lines.sort();
    assert_eq!(
        lines,
        [
            "db1:keys=2,expires=0,avg_ttl=0,keys_with_volatile_items=0",
            "db5:keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=0",
            "db8:keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=0",
        ]
    );
    // A snapshot holds every database.
    ok(&mut c, &["SAVE"]);
    drop(c);
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&s.dir.join("snapshot"), copy.path());
    let t = Server::start_in(copy.path(), &[]);
    let mut c = t.conn();
    ok(&mut c, &["SELECT", "8"]);
    assert_eq!(get(&mut c, &a).as_deref(), Some("zero"));
}

#[test]
fn fewer_databases_than_the_data_holds_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
        let mut c = s.conn();
        ok(&mut c, &["SELECT", "9"]);
        ok(&mut c, &["SET", "k", "v"]);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tallykv-server"))
        .args(["--port", &port, "--bind", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .args(["--databases", "4", "--threads", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the data set holds keys of database 9, but `databases` is 4"),
        "{stderr}"
    );
}

#[test]
fn databases_may_be_many_and_cost_only_what_is_used() {
    // Valkey allows up to INT_MAX databases; only the used ones take memory.
    let s = Server::start(&["--databases", "2147483647"]);
    let mut c = s.conn();
    ok(&mut c, &["SELECT", "2147483646"]);
    ok(&mut c, &["SET", "k", "v"]);
    assert_eq!(int(&mut c, &["MOVE", "k", "70"]), 1);
    ok(&mut c, &["SELECT", "70"]);
    assert_eq!(get(&mut c, "k").as_deref(), Some("v"));
    ok(&mut c, &["SET", "k2", "v"]);
    ok(&mut c, &["SWAPDB", "70", "2000000000"]);
    assert_eq!(
        keyspace_lines(&mut c),
        ["db2000000000:keys=2,expires=0,avg_ttl=0,keys_with_volatile_items=0"]
    );
    assert_eq!(
        err(&mut c, &["SELECT", "2147483647"]),
        "ERR DB index is out of range"
    );
}
