//! Valkey functions through real clients: FUNCTION LOAD/LIST/DELETE/FLUSH/DUMP/RESTORE/STATS/
//! KILL and FCALL/FCALL_RO, with Valkey's replies (RESP2 and RESP3) and errors, functions
//! whose keys live on several cores, FUNCTION KILL and -BUSY, libraries surviving a restart
//! and a SAVE, and a cluster where a library loaded on one node is callable on every node,
//! including one restarted and one that joins later.

use crate::common;

use std::io::Write;
use std::time::Duration;

use common::cluster::Cluster;
use common::{DEADLINE, Server, err, run, wait_until};
use redis::Value;

/// Keys on different cores with `--threads 2`.
const ON_CORE_1: &str = "a";
const ON_CORE_0: &str = "b";

const LIB: &str = "#!lua name=mylib\n\
    redis.register_function('hello', function(keys, args) return 'hello ' .. (args[1] or '') end)\n\
    server.register_function{function_name='getkey', callback=function(keys, args) \
      return redis.call('get', keys[1]) end, flags={'no-writes'}, description='reads a key'}\n\
    redis.register_function('setkey', function(keys, args) \
      return redis.call('set', keys[1], args[1]) end)";

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn load(c: &mut redis::Connection, code: &str) -> String {
    run::<String>(c, &["FUNCTION", "LOAD", code]).unwrap_or_else(|e| panic!("{code}: {e}"))
}

#[test]
fn load_call_list_delete_flush_as_valkey() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    assert_eq!(load(&mut c, LIB), "mylib");
    assert_eq!(
        run::<String>(&mut c, &["FCALL", "hello", "0", "you"]).unwrap(),
        "hello you"
    );
    // Function names are case-insensitive for FCALL.
    assert_eq!(
        run::<String>(&mut c, &["FCALL", "HELLO", "0"]).unwrap(),
        "hello "
    );
    assert_eq!(
        run::<String>(&mut c, &["FCALL", "setkey", "1", ON_CORE_1, "v1"]).unwrap(),
        "OK"
    );
    assert_eq!(
        run::<String>(&mut c, &["FCALL_RO", "getkey", "1", ON_CORE_1]).unwrap(),
        "v1"
    );
    assert_eq!(
        run::<Vec<String>>(
            &mut c,
            &["COMMAND", "GETKEYS", "FCALL", "setkey", "1", "x", "y"]
        )
        .unwrap(),
        vec!["x"]
    );

    // FUNCTION LIST, RESP2: maps as flat arrays, flags as arrays of status replies.
    let listed: Value = run(&mut c, &["FUNCTION", "LIST"]).unwrap();
    let function = |name: &str, desc: Option<&str>, flags: &[&str]| {
        Value::Array(vec![
            bulk("name"),
            bulk(name),
            bulk("description"),
            desc.map_or(Value::Nil, bulk),
            bulk("flags"),
            Value::Array(
                flags
                    .iter()
                    .map(|f| Value::SimpleString(f.to_string()))
                    .collect(),
            ),
        ])
    };
    let functions = Value::Array(vec![
        function("hello", None, &[]),
        function("getkey", Some("reads a key"), &["no-writes"]),
        function("setkey", None, &[]),
    ]);
    assert_eq!(
        listed,
        Value::Array(vec![Value::Array(vec![
            bulk("library_name"),
            bulk("mylib"),
            bulk("engine"),
            bulk("LUA"),
            bulk("functions"),
            functions.clone(),
        ])])
    );
    let with_code: Value = run(&mut c, &["FUNCTION", "LIST", "WITHCODE"]).unwrap();
    assert_eq!(
        with_code,
        Value::Array(vec![Value::Array(vec![
            bulk("library_name"),
            bulk("mylib"),
            bulk("engine"),
            bulk("LUA"),
            bulk("functions"),
            functions,
            bulk("library_code"),
            bulk(LIB),
        ])])
    );
    assert_eq!(
        run::<Value>(&mut c, &["FUNCTION", "LIST", "LIBRARYNAME", "other*"]).unwrap(),
        Value::Array(vec![])
    );
    assert_eq!(
        run::<Vec<Value>>(&mut c, &["FUNCTION", "LIST", "LIBRARYNAME", "MY*"])
            .unwrap()
            .len(),
        1
    );
    for (args, expected) in [
        (
            &["FUNCTION", "LIST", "bad_argument"][..],
            "ERR Unknown argument bad_argument",
        ),
        (
            &["FUNCTION", "LIST", "libraryname"],
            "ERR library name argument was not given",
        ),
        (
            &["FUNCTION", "LIST", "withcode", "withcode"],
            "ERR Unknown argument withcode",
        ),
        (
            &[
                "FUNCTION",
                "LIST",
                "withcode",
                "libraryname",
                "a",
                "libraryname",
                "b",
            ],
            "ERR Unknown argument libraryname",
        ),
    ] {
        assert_eq!(err(&mut c, args), expected, "{args:?}");
    }

    // FUNCTION LIST, RESP3: maps, a null description, flags as a set.
    let mut c3 = s.conn3();
    let listed: Value = run(&mut c3, &["FUNCTION", "LIST"]).unwrap();
    let Value::Array(libs) = listed else {
        panic!("{listed:?}")
    };
    let Value::Map(lib) = &libs[0] else {
        panic!("{libs:?}")
    };
    assert_eq!(lib[0], (bulk("library_name"), bulk("mylib")));
    let Value::Array(fs) = &lib[2].1 else {
        panic!("{lib:?}")
    };
    assert_eq!(
        fs[0],
        Value::Map(vec![
            (bulk("name"), bulk("hello")),
            (bulk("description"), Value::Nil),
            (bulk("flags"), Value::Set(vec![])),
        ])
    );
    assert_eq!(
        fs[1],
        Value::Map(vec![
            (bulk("name"), bulk("getkey")),
            (bulk("description"), bulk("reads a key")),
            (
                bulk("flags"),
                Value::Set(vec![Value::SimpleString("no-writes".into())])
            ),
        ])
    );

    // FUNCTION STATS.
    assert_eq!(
        run::<Value>(&mut c, &["FUNCTION", "STATS"]).unwrap(),
        Value::Array(vec![
            bulk("running_script"),
            Value::Nil,
            bulk("engines"),
            Value::Array(vec![
                bulk("LUA"),
                Value::Array(vec![
                    bulk("libraries_count"),
                    Value::Int(1),
                    bulk("functions_count"),
                    Value::Int(3),
                ]),
            ]),
        ])
    );

    // DELETE, then the functions are gone.
    assert_eq!(
        err(&mut c, &["FUNCTION", "DELETE", "nosuch"]),
        "ERR Library not found"
    );
    assert_eq!(
        run::<String>(&mut c, &["FUNCTION", "DELETE", "mylib"]).unwrap(),
        "OK"
    );
    assert_eq!(
        err(&mut c, &["FCALL", "hello", "0"]),
        "ERR Function not found"
    );
    assert_eq!(
        run::<Value>(&mut c, &["FUNCTION", "LIST"]).unwrap(),
        Value::Array(vec![])
    );

    // FLUSH and its options.
    load(&mut c, LIB);
    for mode in [&[][..], &["ASYNC"], &["sync"]] {
        load(
            &mut c,
            "#!lua name=other\nredis.register_function('o', function() return 1 end)",
        );
        let mut args = vec!["FUNCTION", "FLUSH"];
        args.extend_from_slice(mode);
        assert_eq!(run::<String>(&mut c, &args).unwrap(), "OK");
        assert_eq!(
            run::<Value>(&mut c, &["FUNCTION", "LIST"]).unwrap(),
            Value::Array(vec![])
        );
        load(&mut c, LIB);
        run::<String>(&mut c, &["FUNCTION", "DELETE", "mylib"]).unwrap();
    }
    assert_eq!(
        err(&mut c, &["FUNCTION", "FLUSH", "bad_arg"]),
        "ERR FUNCTION FLUSH only supports SYNC|ASYNC option"
    );
    assert_eq!(
        err(&mut c, &["FUNCTION", "FLUSH", "sync", "extra_arg"]),
        "ERR unknown subcommand or wrong number of arguments for 'flush'. Try FUNCTION HELP."
    );
    assert_eq!(
        err(&mut c, &["FUNCTION", "bad_subcommand"]),
        "ERR unknown subcommand 'bad_subcommand'. Try FUNCTION HELP."
    );
    assert_eq!(
        err(&mut c, &["FUNCTION", "KILL"]),
        "NOTBUSY No scripts in execution right now."
    );
    let help: Vec<String> = run(&mut c, &["FUNCTION", "HELP"]).unwrap();
    assert!(help[0].starts_with("FUNCTION <subcommand>"), "{help:?}");
    // FLUSHALL leaves the libraries alone.
    load(&mut c, LIB);
    run::<String>(&mut c, &["FLUSHALL"]).unwrap();
    assert_eq!(
        run::<String>(&mut c, &["FCALL", "hello", "0"]).unwrap(),
        "hello "
    );
}

#[test]
fn load_and_fcall_errors_match_valkey() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    load(&mut c, LIB);
    let lib = |name: &str, body: &str| format!("#!lua name={name}\n{body}");
    let reg = |f: &str| format!("redis.register_function('{f}', function() return 1 end)");
    for (args, expected) in [
        (
            vec!["FUNCTION", "LOAD", "foo", "bar", LIB],
            "ERR Unknown option given: foo".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", LIB],
            "ERR Library 'mylib' already exists".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "return 1"],
            "ERR Missing library metadata".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua name=x"],
            "ERR Invalid library metadata".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua\nreturn 1"],
            "ERR Library name was not given".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua name=t foo=bar\nreturn 1"],
            "ERR Invalid metadata value given: foo=bar".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua name=foo name=bar\nreturn 1"],
            "ERR Invalid metadata value, name argument was given multiple times".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua name=bad-name\nreturn 1"],
            "ERR Library names can only contain letters, numbers, or underscores(_) and must \
             be at least one character long"
                .to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!bad_engine name=t\nreturn 1"],
            "ERR Engine 'bad_engine' not found".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#! name=t\nreturn 1"],
            "ERR Engine '' not found".to_string(),
        ),
        (
            vec![
                "FUNCTION",
                "LOAD",
                "REPLACE",
                "#!lua name=mylib\nbad script",
            ],
            "ERR Error compiling function: user_function:2: '=' expected near 'script'".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua name=t\nreturn 1"],
            "ERR No functions registered".to_string(),
        ),
        (
            vec![
                "FUNCTION",
                "LOAD",
                "#!lua name=t\nreturn redis.call('ping')",
            ],
            "ERR Error registering functions: ERR user_function:2: Script attempted to access \
             nonexistent global variable 'call'"
                .to_string(),
        ),
        (
            vec![
                "FUNCTION",
                "LOAD",
                "#!lua name=t\nlocal a = 1\nwhile 1 do a = a + 1 end",
            ],
            "ERR Error registering functions: ERR FUNCTION LOAD timeout".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", "#!lua name=t\na = 1"],
            "ERR Error registering functions: ERR user_function:2: Attempt to modify a \
             readonly table"
                .to_string(),
        ),
        (
            vec![
                "FUNCTION",
                "LOAD",
                "#!lua name=t\nredis.register_function()",
            ],
            "ERR Error registering functions: ERR wrong number of arguments to \
             server.register_function"
                .to_string(),
        ),
        (
            vec![
                "FUNCTION",
                "LOAD",
                "#!lua name=t\nredis.register_function('a-b', function() end)",
            ],
            "ERR Function names can only contain letters, numbers, or underscores(_) and must \
             be at least one character long"
                .to_string(),
        ),
        (
            vec![
                "FUNCTION",
                "LOAD",
                "#!lua name=t\nredis.register_function('g', function() end)\n\
                 redis.register_function('g', function() end)",
            ],
            "ERR Function already exists in the library".to_string(),
        ),
        (
            vec!["FUNCTION", "LOAD", &lib("t", &reg("HELLO"))],
            "ERR Function HELLO already exists".to_string(),
        ),
        (
            vec!["FCALL", "nosuch", "0"],
            "ERR Function not found".to_string(),
        ),
        (
            vec!["FCALL", "hello", "bad_arg"],
            "ERR Bad number of keys provided".to_string(),
        ),
        (
            vec!["FCALL", "hello", "10", "key1"],
            "ERR Number of keys can't be greater than number of args".to_string(),
        ),
        (
            vec!["FCALL", "hello", "-1", "key1"],
            "ERR Number of keys can't be negative".to_string(),
        ),
        (
            vec!["FCALL_RO", "setkey", "1", "x", "y"],
            "ERR Can not execute a script with write flag using *_ro command.".to_string(),
        ),
    ] {
        let args: Vec<&str> = args.to_vec();
        assert_eq!(err(&mut c, &args), expected, "{args:?}");
    }
    // A failed REPLACE keeps the old library.
    assert_eq!(
        run::<String>(&mut c, &["FCALL", "hello", "0"]).unwrap(),
        "hello "
    );
    // Runtime errors name the function and its line.
    load(
        &mut c,
        "#!lua name=errs\n\
         redis.register_function('boom', function() error('boom') end)\n\
         redis.register_function{function_name='ro_write', callback=function(keys) \
           return redis.call('set', keys[1], 'x') end, flags={'no-writes'}}\n\
         redis.register_function('nested', function() \
           redis.register_function('x', function() end) end)",
    );
    assert_eq!(
        err(&mut c, &["FCALL", "boom", "0"]),
        "ERR user_function:2: boom script: boom, on @user_function:2."
    );
    assert_eq!(
        err(&mut c, &["FCALL", "ro_write", "1", "k"]),
        "ERR Write commands are not allowed from read-only scripts. script: ro_write, on \
         @user_function:3."
    );
    assert!(
        err(&mut c, &["FCALL", "nested", "0"])
            .contains("attempt to call field 'register_function' (a nil value)")
    );
    // REPLACE swaps the code in, on every core.
    assert_eq!(
        err(&mut c, &["FUNCTION", "LOAD", "REPLACE"]),
        "ERR Missing library metadata"
    );
    assert_eq!(
        run::<String>(
            &mut c,
            &[
                "FUNCTION",
                "LOAD",
                "REPLACE",
                "#!lua name=errs\nredis.register_function('boom', function() return 'fixed' end)"
            ]
        )
        .unwrap(),
        "errs"
    );
    for _ in 0..4 {
        // New connections land on either core.
        let mut other = s.conn();
        assert_eq!(
            run::<String>(&mut other, &["FCALL", "boom", "0"]).unwrap(),
            "fixed"
        );
    }
    // MULTI refuses library changes but runs FCALL.
    let mut t = s.conn();
    assert_eq!(run::<String>(&mut t, &["MULTI"]).unwrap(), "OK");
    assert_eq!(
        run::<String>(&mut t, &["FCALL", "hello", "0", "tx"]).unwrap(),
        "QUEUED"
    );
    assert_eq!(
        run::<Vec<String>>(&mut t, &["EXEC"]).unwrap(),
        vec!["hello tx"]
    );
    assert_eq!(run::<String>(&mut t, &["MULTI"]).unwrap(), "OK");
    assert_eq!(
        err(&mut t, &["FUNCTION", "FLUSH"]),
        "ERR Command not allowed inside a transaction"
    );
}

#[test]
fn dump_and_restore_as_valkey() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    load(&mut c, LIB);
    let dump: Vec<u8> = run(&mut c, &["FUNCTION", "DUMP"]).unwrap();
    let restore = |c: &mut redis::Connection, policy: Option<&str>| -> redis::RedisResult<String> {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("RESTORE").arg(&dump);
        if let Some(p) = policy {
            cmd.arg(p);
        }
        cmd.query(c)
    };
    let names = |c: &mut redis::Connection| -> Vec<String> {
        let libs: Vec<Vec<Value>> = run(c, &["FUNCTION", "LIST"]).unwrap();
        let mut names: Vec<String> = libs
            .iter()
            .map(|l| redis::from_redis_value(l[1].clone()).unwrap())
            .collect();
        names.sort();
        names
    };
    run::<String>(&mut c, &["FUNCTION", "DELETE", "mylib"]).unwrap();
    assert_eq!(restore(&mut c, None).unwrap(), "OK");
    assert_eq!(names(&mut c), vec!["mylib"]);
    // APPEND (the default) refuses a library that exists.
    assert_eq!(
        common::error_text(&restore(&mut c, Some("APPEND")).unwrap_err()),
        "ERR Library mylib already exists"
    );
    // REPLACE replaces it; FLUSH drops the others first.
    load(
        &mut c,
        "#!lua name=other\nredis.register_function('o', function() return 'o' end)",
    );
    assert_eq!(restore(&mut c, Some("REPLACE")).unwrap(), "OK");
    assert_eq!(names(&mut c), vec!["mylib", "other"]);
    assert_eq!(restore(&mut c, Some("flush")).unwrap(), "OK");
    assert_eq!(names(&mut c), vec!["mylib"]);
    // A function name taken by another library fails REPLACE and APPEND alike.
    run::<String>(&mut c, &["FUNCTION", "FLUSH"]).unwrap();
    load(
        &mut c,
        "#!lua name=taker\nredis.register_function('hello', function() return 't' end)",
    );
    assert_eq!(
        common::error_text(&restore(&mut c, Some("REPLACE")).unwrap_err()),
        "ERR Function hello already exists"
    );
    assert_eq!(names(&mut c), vec!["taker"]);
    assert_eq!(
        err(&mut c, &["FUNCTION", "RESTORE", "bad_payload"]),
        "ERR DUMP payload version or checksum are wrong"
    );
    assert_eq!(
        common::error_text(&restore(&mut c, Some("bogus")).unwrap_err()),
        "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE."
    );
    assert_eq!(
        err(&mut c, &["FUNCTION", "RESTORE", "arg1", "args2", "arg3"]),
        "ERR unknown subcommand or wrong number of arguments for 'restore'. Try FUNCTION HELP."
    );
    assert_eq!(names(&mut c), vec!["taker"]);
}

#[test]
fn function_kill_stops_a_runaway_function_and_others_get_busy() {
    let s = Server::start(&["--threads", "2", "--busy-reply-threshold", "100"]);
    let mut c = s.conn();
    load(
        &mut c,
        "#!lua name=spin\nredis.register_function('spin', function() \
         local a = 1 while true do a = a + 1 end end)",
    );
    let mut runner = s.raw();
    runner
        .write_all(format!("FCALL spin 1 {ON_CORE_1}\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // From a connection on the other core: the runaway's keys are BUSY (naming FUNCTION
    // KILL), SCRIPT KILL refuses, FUNCTION STATS shows it, FUNCTION KILL stops it.
    let mut killed = false;
    for _ in 0..40 {
        let mut t = s.raw_short();
        t.write_all(format!("GET {ON_CORE_1}\r\n").as_bytes())
            .unwrap();
        let Some(reply) = common::read_some(&mut t) else {
            continue; // this connection is on the busy core
        };
        assert_eq!(
            reply,
            "-BUSY Valkey is busy running a script. You can only call FUNCTION KILL or \
             SHUTDOWN NOSAVE.\r\n"
        );
        t.write_all(b"SCRIPT KILL\r\n").unwrap();
        assert_eq!(
            common::read_some(&mut t).as_deref(),
            Some(
                "-BUSY Valkey is busy running a script. You can only call FUNCTION KILL or \
                 SHUTDOWN NOSAVE.\r\n"
            )
        );
        t.write_all(b"FUNCTION STATS\r\n").unwrap();
        let stats = common::read_some(&mut t).unwrap();
        assert!(
            stats.contains("running_script\r\n*6\r\n$4\r\nname\r\n$4\r\nspin\r\n$7\r\ncommand\r\n*4\r\n$5\r\nFCALL\r\n$4\r\nspin\r\n$1\r\n1\r\n$1\r\na\r\n$11\r\nduration_ms\r\n:"),
            "{stats}"
        );
        t.write_all(b"FUNCTION KILL\r\n").unwrap();
        assert_eq!(common::read_some(&mut t).as_deref(), Some("+OK\r\n"));
        killed = true;
        break;
    }
    assert!(killed, "no connection landed on the other core");
    assert_eq!(
        common::next_reply(&mut runner),
        "-ERR Script killed by user with FUNCTION KILL.\r\n"
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", ON_CORE_1]).unwrap(),
        None
    );
    // FUNCTION KILL does not stop an EVAL script.
    let mut runner = s.start_runaway_script(ON_CORE_1);
    std::thread::sleep(Duration::from_millis(300));
    let mut killed = false;
    for _ in 0..40 {
        let mut t = s.raw_short();
        t.write_all(b"FUNCTION KILL\r\n").unwrap();
        let Some(reply) = common::read_some(&mut t) else {
            continue;
        };
        assert_eq!(
            reply,
            "-BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN \
             NOSAVE.\r\n"
        );
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
}

#[test]
fn a_function_whose_keys_span_cores_is_atomic() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    load(
        &mut c,
        "#!lua name=bank\nredis.register_function('transfer', function(keys, args) \
         redis.call('incrby', keys[1], args[1]) redis.call('decrby', keys[2], args[1]) \
         return redis.call('mget', keys[1], keys[2]) end)",
    );
    run::<()>(&mut c, &["MSET", ON_CORE_1, "0", ON_CORE_0, "0"]).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..100 {
                    let (x, y): (i64, i64) = redis::cmd("FCALL")
                        .arg("transfer")
                        .arg(2)
                        .arg(ON_CORE_1)
                        .arg(ON_CORE_0)
                        .arg(1)
                        .query(&mut c)
                        .unwrap();
                    assert_eq!(x + y, 0, "a function saw another's half");
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
}

#[test]
fn libraries_survive_a_restart_and_travel_with_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let mut c = s.conn();
    load(&mut c, LIB);
    load(
        &mut c,
        "#!lua name=gone\nredis.register_function('gone', function() return 1 end)",
    );
    run::<String>(&mut c, &["FUNCTION", "DELETE", "gone"]).unwrap();
    run::<String>(&mut c, &["FCALL", "setkey", "1", ON_CORE_0, "kept"]).unwrap();
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(
        run::<String>(&mut c, &["FCALL_RO", "getkey", "1", ON_CORE_0]).unwrap(),
        "kept"
    );
    assert_eq!(
        err(&mut c, &["FCALL", "gone", "0"]),
        "ERR Function not found"
    );
    assert_eq!(
        run::<Vec<Value>>(&mut c, &["FUNCTION", "LIST"])
            .unwrap()
            .len(),
        1
    );
    // SAVE writes a data dir that holds the libraries too.
    assert_eq!(run::<String>(&mut c, &["SAVE"]).unwrap(), "OK");
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&dir.path().join("snapshot"), copy.path());
    let s2 = Server::start_in(copy.path(), &["--threads", "2"]);
    let mut c2 = s2.conn();
    assert_eq!(
        run::<String>(&mut c2, &["FCALL", "hello", "0", "again"]).unwrap(),
        "hello again"
    );
    // A flush is durable too.
    run::<String>(&mut c, &["FUNCTION", "FLUSH"]).unwrap();
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(
        run::<Value>(&mut c, &["FUNCTION", "LIST"]).unwrap(),
        Value::Array(vec![])
    );
}

/// FCALL `f` with no keys on node `i`, as a string (or the error text).
fn fcall_on(cl: &Cluster, i: usize, f: &str) -> String {
    let mut c = cl.conn(i);
    match run::<String>(&mut c, &["FCALL", f, "0"]) {
        Ok(v) => v,
        Err(e) => common::error_text(&e),
    }
}

#[test]
fn cluster_libraries_reach_every_node() {
    let mut cl = Cluster::start(3, &[]);
    cl.wait_ok();
    let mut c = cl.conn(1);
    assert_eq!(load(&mut c, LIB), "mylib");
    // The node that took the load answers at once; the others once their meta log applied.
    assert_eq!(fcall_on(&cl, 1, "hello"), "hello ");
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || fcall_on(&cl, i, "hello") == "hello "),
            "node {i}: {}\n{}",
            fcall_on(&cl, i, "hello"),
            cl.logs(20)
        );
    }
    // A function with a key runs through the key's group leader; its write replicates.
    let key = "{fn}:k";
    let leader = cl.leader_of_slot(tallykv::cluster::key_slot(key.as_bytes()) as usize);
    let mut l = cl.conn(leader);
    assert_eq!(
        run::<String>(&mut l, &["FCALL", "setkey", "1", key, "v"]).unwrap(),
        "OK"
    );
    assert_eq!(
        run::<String>(&mut l, &["FCALL_RO", "getkey", "1", key]).unwrap(),
        "v"
    );
    // Errors come back from wherever the change was decided.
    let follower = (leader + 1) % cl.len();
    let mut f = cl.conn(follower);
    assert_eq!(
        err(&mut f, &["FUNCTION", "LOAD", LIB]),
        "ERR Library 'mylib' already exists"
    );
    assert_eq!(
        err(&mut f, &["FUNCTION", "DELETE", "nosuch"]),
        "ERR Library not found"
    );
    load(
        &mut f,
        "#!lua name=second\nredis.register_function('second', function() return 'two' end)",
    );
    assert_eq!(fcall_on(&cl, follower, "second"), "two");
    // A restarted node keeps them.
    cl.restart(2);
    assert!(
        wait_until(DEADLINE, || fcall_on(&cl, 2, "second") == "two"),
        "{}",
        cl.logs(20)
    );
    assert_eq!(fcall_on(&cl, 2, "hello"), "hello ");
    // A node that joins later gets them from the meta group.
    let joiner = cl.add_joiner();
    cl.meet(0, joiner);
    assert!(
        wait_until(Duration::from_secs(60), || fcall_on(&cl, joiner, "second")
            == "two"),
        "joiner: {}\n{}",
        fcall_on(&cl, joiner, "second"),
        cl.logs(30)
    );
    // DELETE on one node removes it everywhere.
    let mut c0 = cl.conn(0);
    assert_eq!(
        run::<String>(&mut c0, &["FUNCTION", "DELETE", "second"]).unwrap(),
        "OK"
    );
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || fcall_on(&cl, i, "second")
                == "ERR Function not found"),
            "node {i}: {}",
            fcall_on(&cl, i, "second")
        );
        let libs: Vec<Value> = run(&mut cl.conn(i), &["FUNCTION", "LIST"]).unwrap();
        assert_eq!(libs.len(), 1, "node {i}");
    }
    // no-cluster functions do not run on a cluster.
    load(
        &mut c0,
        "#!lua name=nc\nredis.register_function{function_name='nc', \
         callback=function() return 1 end, flags={'no-cluster'}}",
    );
    assert_eq!(
        fcall_on(&cl, 0, "nc"),
        "ERR Can not run script on cluster, 'no-cluster' flag is set."
    );
}
