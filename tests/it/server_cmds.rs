//! Server commands through redis-rs: COMMAND, INFO, CONFIG, TIME, LASTSAVE, and the errors
//! for unknown commands and wrong arities, with Valkey's exact replies.

use crate::common;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{DEADLINE, Server, err, run, wait_until};
use redis::Value;

/// INFO (or INFO <sections>) parsed into field → value, plus the section headers in order.
fn info(c: &mut redis::Connection, sections: &[&str]) -> (HashMap<String, String>, Vec<String>) {
    let mut args = vec!["INFO"];
    args.extend_from_slice(sections);
    let text: String = run(c, &args).unwrap();
    parse_info(&text)
}

fn parse_info(text: &str) -> (HashMap<String, String>, Vec<String>) {
    let mut fields = HashMap::new();
    let mut headers = Vec::new();
    for line in text.split("\r\n") {
        if let Some(h) = line.strip_prefix("# ") {
            headers.push(h.to_string());
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.to_string(), v.to_string());
        } else {
            assert!(line.is_empty(), "stray INFO line {line:?}");
        }
    }
    (fields, headers)
}

fn num(fields: &HashMap<String, String>, name: &str) -> u64 {
    fields
        .get(name)
        .unwrap_or_else(|| panic!("INFO has no {name}"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", fields[name]))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .map(|i| match i {
                Value::SimpleString(s) => s.clone(),
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// The 10 elements of one COMMAND INFO entry.
fn command_info(c: &mut redis::Connection, name: &str) -> Vec<Value> {
    let v: Value = run(c, &["COMMAND", "INFO", name]).unwrap();
    let Value::Array(mut outer) = v else {
        panic!("COMMAND INFO answers an array: {v:?}")
    };
    assert_eq!(outer.len(), 1);
    match outer.remove(0) {
        Value::Array(entry) => {
            assert_eq!(entry.len(), 10, "Redis 7 shape for {name}: {entry:?}");
            entry
        }
        other => panic!("entry for {name}: {other:?}"),
    }
}

#[test]
fn command_count_list_and_info() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let count: i64 = run(&mut c, &["COMMAND", "COUNT"]).unwrap();
    let all: Value = run(&mut c, &["COMMAND"]).unwrap();
    let Value::Array(all) = all else { panic!() };
    assert_eq!(all.len() as i64, count);
    assert!(count > 50, "{count}");

    // LIST includes subcommands by their full names.
    let list: Vec<String> = run(&mut c, &["COMMAND", "LIST"]).unwrap();
    for n in [
        "get",
        "set",
        "client",
        "client|list",
        "config|get",
        "command|info",
    ] {
        assert!(
            list.contains(&n.to_string()),
            "{n} missing from COMMAND LIST"
        );
    }
    let mut clients: Vec<String> = run(
        &mut c,
        &["COMMAND", "LIST", "FILTERBY", "PATTERN", "client*"],
    )
    .unwrap();
    clients.sort();
    assert!(clients.contains(&"client".to_string()));
    assert!(clients.contains(&"client|setname".to_string()));
    assert!(
        clients.iter().all(|n| n.starts_with("client")),
        "{clients:?}"
    );
    let upper: Vec<String> =
        run(&mut c, &["COMMAND", "LIST", "FILTERBY", "pattern", "GET"]).unwrap();
    assert_eq!(upper, ["get"], "pattern matching is case-insensitive");
    let conn: Vec<String> = run(
        &mut c,
        &["COMMAND", "LIST", "FILTERBY", "ACLCAT", "connection"],
    )
    .unwrap();
    assert!(conn.contains(&"ping".to_string()) && !conn.contains(&"get".to_string()));
    let none: Vec<String> = run(&mut c, &["COMMAND", "LIST", "FILTERBY", "MODULE", "x"]).unwrap();
    assert!(none.is_empty());
    assert_eq!(
        err(&mut c, &["COMMAND", "LIST", "FILTERBY", "foo", "x"]),
        "ERR syntax error"
    );
    assert_eq!(err(&mut c, &["COMMAND", "LIST", "foo"]), "ERR syntax error");
    assert_eq!(
        err(&mut c, &["COMMAND", "LIST", "FILTERBY", "PATTERN"]),
        "ERR syntax error"
    );

    // INFO entries in the Redis 7 shape.
    let get = command_info(&mut c, "get");
    assert_eq!(strings(&Value::Array(vec![get[0].clone()])), ["get"]);
    assert_eq!(int(&get[1]), 2);
    let flags = strings(&get[2]);
    assert!(flags.contains(&"readonly".into()) && flags.contains(&"fast".into()));
    assert_eq!((int(&get[3]), int(&get[4]), int(&get[5])), (1, 1, 1));
    assert_eq!(strings(&get[6]), ["@read", "@string", "@fast"]);
    assert_eq!(get[7], Value::Array(vec![]), "tips");
    let Value::Array(specs) = &get[8] else {
        panic!()
    };
    assert_eq!(specs.len(), 1, "one key spec");
    assert_eq!(get[9], Value::Array(vec![]), "no subcommands");

    let set = command_info(&mut c, "SET");
    assert_eq!(int(&set[1]), -3);
    let flags = strings(&set[2]);
    assert!(flags.contains(&"write".into()) && flags.contains(&"denyoom".into()));
    assert_eq!(strings(&set[6]), ["@write", "@string", "@slow"]);

    let list = command_info(&mut c, "client|list");
    assert_eq!(
        strings(&Value::Array(vec![list[0].clone()])),
        ["client|list"]
    );
    assert_eq!(int(&list[1]), -2);
    assert_eq!((int(&list[3]), int(&list[4]), int(&list[5])), (0, 0, 0));
    assert_eq!(
        strings(&list[6]),
        ["@admin", "@slow", "@dangerous", "@connection"]
    );
    assert_eq!(list[8], Value::Array(vec![]), "no key specs");

    let keys = command_info(&mut c, "keys");
    assert_eq!(
        strings(&keys[6]),
        ["@keyspace", "@read", "@slow", "@dangerous"]
    );

    // A container lists its subcommands, each in the same shape.
    let config = command_info(&mut c, "config");
    let Value::Array(subs) = &config[9] else {
        panic!()
    };
    assert!(subs.len() >= 3);
    for s in subs {
        let Value::Array(e) = s else { panic!() };
        assert_eq!(e.len(), 10);
    }

    // Unknown names answer a null entry in place.
    let v: Value = run(
        &mut c,
        &["COMMAND", "INFO", "get", "nosuch", "client|nosuch"],
    )
    .unwrap();
    let Value::Array(v) = v else { panic!() };
    assert_eq!(v.len(), 3);
    assert_eq!(v[1], Value::Nil);
    assert_eq!(v[2], Value::Nil);
}

#[test]
fn command_info_resp3_uses_sets_and_maps() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    let v: Value = run(&mut c, &["COMMAND", "INFO", "get"]).unwrap();
    let Value::Array(outer) = v else { panic!() };
    let Value::Array(e) = &outer[0] else { panic!() };
    assert!(matches!(e[2], Value::Set(_)), "flags are a set: {:?}", e[2]);
    assert!(matches!(e[6], Value::Set(_)), "categories are a set");
    let Value::Array(specs) = &e[8] else { panic!() };
    assert!(matches!(specs[0], Value::Map(_)), "key spec is a map");
}

#[test]
fn command_docs() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    let v: Value = run(&mut c, &["COMMAND", "DOCS", "get", "nosuch"]).unwrap();
    let Value::Map(entries) = v else {
        panic!("{v:?}")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, Value::BulkString(b"get".to_vec()));
    let Value::Map(doc) = &entries[0].1 else {
        panic!()
    };
    let keys: Vec<String> = doc
        .iter()
        .map(|(k, _)| match k {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            _ => panic!(),
        })
        .collect();
    for k in ["summary", "since", "group", "complexity"] {
        assert!(keys.contains(&k.to_string()), "{k} in {keys:?}");
    }
    let v: Value = run(&mut c, &["COMMAND", "DOCS", "client"]).unwrap();
    let Value::Map(entries) = v else { panic!() };
    let Value::Map(doc) = &entries[0].1 else {
        panic!()
    };
    assert!(
        doc.iter()
            .any(|(k, _)| *k == Value::BulkString(b"subcommands".to_vec()))
    );
}

#[test]
fn command_getkeys() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let keys: Vec<String> = run(&mut c, &["COMMAND", "GETKEYS", "GET", "k"]).unwrap();
    assert_eq!(keys, ["k"]);
    let keys: Vec<String> =
        run(&mut c, &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]).unwrap();
    assert_eq!(keys, ["a", "b"]);
    let keys: Vec<String> = run(&mut c, &["COMMAND", "GETKEYS", "del", "x", "y", "z"]).unwrap();
    assert_eq!(keys, ["x", "y", "z"]);
    let keys: Vec<String> =
        run(&mut c, &["COMMAND", "GETKEYS", "SET", "k", "v", "EX", "10"]).unwrap();
    assert_eq!(keys, ["k"]);

    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "nosuch", "a"]),
        "ERR Invalid command specified"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "client", "nosuch"]),
        "ERR Invalid command specified"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "ping"]),
        "ERR The command has no key arguments"
    );
    // Whether the command has keys is decided before its arity is checked.
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "echo", "a", "b"]),
        "ERR The command has no key arguments"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "config", "get"]),
        "ERR The command has no key arguments"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "client"]),
        "ERR The command has no key arguments"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "get"]),
        "ERR Invalid number of arguments specified for command"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS", "get", "a", "b"]),
        "ERR Invalid number of arguments specified for command"
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "GETKEYS"]),
        "ERR wrong number of arguments for 'command|getkeys' command"
    );
}

#[test]
fn command_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        err(&mut c, &["COMMAND", "foo"]),
        "ERR unknown subcommand 'foo'. Try COMMAND HELP."
    );
    assert_eq!(
        err(&mut c, &["COMMAND", "COUNT", "x"]),
        "ERR wrong number of arguments for 'command|count' command"
    );
    let help: Vec<String> = run(&mut c, &["COMMAND", "HELP"]).unwrap();
    assert!(help[0].starts_with("COMMAND <subcommand>"));
}

#[test]
fn unknown_command_and_arity_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        err(&mut c, &["FOO"]),
        "ERR unknown command 'FOO', with args beginning with: "
    );
    assert_eq!(
        err(&mut c, &["foo", "a", "b c"]),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b c' "
    );
    // Valkey quotes arguments until the quoted text reaches 128 bytes.
    let many: Vec<String> = (0..60).map(|i| format!("{:02}", i)).collect();
    let mut args = vec!["nope"];
    args.extend(many.iter().map(|s| s.as_str()));
    let mut expected = String::from("ERR unknown command 'nope', with args beginning with: ");
    let mut quoted = String::new();
    for a in &many {
        if quoted.len() >= 128 {
            break;
        }
        quoted.push_str(&format!("'{a}' "));
    }
    expected.push_str(&quoted);
    assert_eq!(err(&mut c, &args), expected);
    // A long argument is cut at 128 bytes.
    let long = "x".repeat(300);
    assert_eq!(
        err(&mut c, &["nope", &long]),
        format!(
            "ERR unknown command 'nope', with args beginning with: '{}' ",
            "x".repeat(128)
        )
    );
    let long_name = "y".repeat(200);
    assert_eq!(
        err(&mut c, &[&long_name]),
        format!(
            "ERR unknown command '{}', with args beginning with: ",
            "y".repeat(128)
        )
    );

    assert_eq!(
        err(&mut c, &["CONFIG", "GET"]),
        "ERR wrong number of arguments for 'config|get' command"
    );
    assert_eq!(
        err(&mut c, &["config", "set", "maxmemory"]),
        "ERR wrong number of arguments for 'config|set' command"
    );
    assert_eq!(
        err(&mut c, &["CONFIG"]),
        "ERR wrong number of arguments for 'config' command"
    );
    assert_eq!(
        err(&mut c, &["CONFIG", "foo"]),
        "ERR unknown subcommand 'foo'. Try CONFIG HELP."
    );
    assert_eq!(
        err(&mut c, &["TIME", "x"]),
        "ERR wrong number of arguments for 'time' command"
    );
    assert_eq!(
        err(&mut c, &["LASTSAVE", "x"]),
        "ERR wrong number of arguments for 'lastsave' command"
    );
    // The connection is still fine.
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
}

#[test]
fn info_default_sections_and_fields() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(&mut c, &["SET", "k", "v"]).unwrap();
    run::<()>(&mut c, &["SET", "t", "v", "EX", "100"]).unwrap();
    run::<String>(&mut c, &["GET", "k"]).unwrap();
    run::<Option<String>>(&mut c, &["GET", "missing"]).unwrap();
    let (f, headers) = info(&mut c, &[]);
    assert_eq!(
        headers,
        [
            "Server",
            "Clients",
            "Memory",
            "Persistence",
            "Stats",
            "Replication",
            "CPU",
            "Modules",
            "Errorstats",
            "Cluster",
            "Keyspace"
        ]
    );
    assert!(
        f["redis_version"].starts_with("7.2."),
        "{}",
        f["redis_version"]
    );
    assert_eq!(f["redis_mode"], "standalone");
    assert_eq!(num(&f, "tcp_port"), s.port as u64);
    assert_eq!(num(&f, "process_id"), s.pid() as u64);
    assert_eq!(f["run_id"].len(), 40);
    assert!(num(&f, "connected_clients") >= 1);
    assert_eq!(num(&f, "maxclients"), 10000);
    assert!(num(&f, "used_memory") > 0);
    assert!(f["used_memory_human"].ends_with(['B', 'K', 'M', 'G']));
    assert!(num(&f, "used_memory_rss") > 0);
    assert!(num(&f, "used_memory_peak") >= num(&f, "used_memory"));
    let startup = num(&f, "used_memory_startup");
    assert!(startup > 0 && startup <= num(&f, "used_memory"));
    assert!(num(&f, "used_memory_overhead") >= startup);
    assert!(num(&f, "mem_clients_normal") >= 16384);
    assert_eq!(num(&f, "maxmemory"), 0);
    assert_eq!(f["maxmemory_policy"], "noeviction");
    assert_eq!(num(&f, "expired_keys"), 0);
    assert_eq!(num(&f, "evicted_keys"), 0);
    assert_eq!(num(&f, "keyspace_hits"), 1);
    assert_eq!(num(&f, "keyspace_misses"), 1);
    assert!(num(&f, "total_commands_processed") >= 4);
    assert!(num(&f, "total_connections_received") >= 1);
    assert!(num(&f, "total_net_input_bytes") > 0);
    assert_eq!(num(&f, "pubsubshard_channels"), 0);
    assert_eq!(f["role"], "master");
    assert!(f["used_cpu_sys"].parse::<f64>().is_ok());
    assert!(f["used_cpu_user"].parse::<f64>().is_ok());
    assert_eq!(num(&f, "cluster_enabled"), 0);
    assert_eq!(
        f["db0"],
        "keys=2,expires=1,avg_ttl=0,keys_with_volatile_items=0"
    );
    assert_eq!(num(&f, "loading"), 0);
    assert!(num(&f, "rdb_last_save_time") > 0);
    // Not in the default sections.
    assert!(!f.contains_key("cmdstat_get"));
}

#[test]
fn info_section_filtering() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(&mut c, &["SET", "k", "v"]).unwrap();
    run::<String>(&mut c, &["GET", "k"]).unwrap();
    run::<String>(&mut c, &["GET", "k"]).unwrap();

    let (f, h) = info(&mut c, &["server"]);
    assert_eq!(h, ["Server"]);
    assert!(f.contains_key("redis_version") && !f.contains_key("used_memory"));
    let (_, h) = info(&mut c, &["MEMORY"]);
    assert_eq!(h, ["Memory"], "section names are case-insensitive");
    // Several sections come out in Valkey's fixed order, each once.
    let (_, h) = info(&mut c, &["keyspace", "server", "clients", "server"]);
    assert_eq!(h, ["Server", "Clients", "Keyspace"]);
    let (_, h) = info(&mut c, &["nosuchsection"]);
    assert!(h.is_empty());

    let (f, h) = info(&mut c, &["commandstats"]);
    assert_eq!(h, ["Commandstats"]);
    let get = &f["cmdstat_get"];
    assert!(get.starts_with("calls=2,usec="), "cmdstat_get:{get}");
    assert!(get.contains(",usec_per_call="), "{get}");
    assert!(get.ends_with(",rejected_calls=0,failed_calls=0"), "{get}");
    assert!(f["cmdstat_set"].starts_with("calls=1,"));

    let (f, h) = info(&mut c, &["all"]);
    assert_eq!(
        h,
        [
            "Server",
            "Clients",
            "Memory",
            "Persistence",
            "Stats",
            "Replication",
            "CPU",
            "Modules",
            "Commandstats",
            "Errorstats",
            "Latencystats",
            "Cluster",
            "Keyspace"
        ]
    );
    assert!(f.contains_key("cmdstat_get"));
    let (_, h2) = info(&mut c, &["everything"]);
    assert_eq!(h, h2);
    let (_, h3) = info(&mut c, &["default"]);
    assert!(!h3.contains(&"Commandstats".to_string()));
}

#[test]
fn info_keyspace_empty_and_resp3_verbatim() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let text: String = run(&mut c, &["INFO", "keyspace"]).unwrap();
    assert_eq!(text, "# Keyspace\r\n");
    let mut c3 = s.conn3();
    let v: Value = run(&mut c3, &["INFO", "keyspace"]).unwrap();
    assert!(
        matches!(v, Value::VerbatimString { ref text, .. } if text == "# Keyspace\r\n"),
        "{v:?}"
    );
}

#[test]
fn errorstats_count_error_replies_by_code() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(&mut c, &["SET", "s", "x"]).unwrap();
    err(&mut c, &["HSET", "s", "f", "v"]); // WRONGTYPE
    err(&mut c, &["HGET", "s", "f"]); // WRONGTYPE
    err(&mut c, &["INCR", "s"]); // ERR
    err(&mut c, &["NOSUCHCMD"]); // ERR (unknown command)
    err(&mut c, &["GET"]); // ERR (arity)
    err(&mut c, &["HELLO", "9"]); // NOPROTO
    let (f, _) = info(&mut c, &["errorstats"]);
    assert_eq!(f["errorstat_WRONGTYPE"], "count=2");
    assert_eq!(f["errorstat_ERR"], "count=3");
    assert_eq!(f["errorstat_NOPROTO"], "count=1");
    let (f, _) = info(&mut c, &["stats"]);
    assert_eq!(num(&f, "total_error_replies"), 6);
    let (f, _) = info(&mut c, &["commandstats"]);
    assert!(f["cmdstat_get"].ends_with("rejected_calls=1,failed_calls=0"));
    assert!(f["cmdstat_incr"].ends_with("rejected_calls=0,failed_calls=1"));
    // RESETSTAT clears them.
    run::<String>(&mut c, &["CONFIG", "RESETSTAT"]).unwrap();
    let text: String = run(&mut c, &["INFO", "errorstats"]).unwrap();
    assert_eq!(text, "# Errorstats\r\n");
}

#[test]
fn config_get_patterns() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "maxmemory*"]).unwrap();
    assert_eq!(v["maxmemory"], "0");
    assert_eq!(v["maxmemory-policy"], "noeviction");
    assert_eq!(v["maxmemory-samples"], "5");
    assert!(v.keys().all(|k| k.starts_with("maxmemory")));
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "PORT", "timeout"]).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        v.get("PORT").or(v.get("port")).unwrap(),
        &s.port.to_string()
    );
    assert_eq!(v["timeout"], "0");
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "nosuch"]).unwrap();
    assert!(v.is_empty());
    let all: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "*"]).unwrap();
    for k in [
        "maxclients",
        "proto-max-bulk-len",
        "client-query-buffer-limit",
        "hz",
    ] {
        assert!(all.contains_key(k), "{k}");
    }
    // RESP3: a map.
    let mut c3 = s.conn3();
    let v: Value = run(&mut c3, &["CONFIG", "GET", "maxmemory"]).unwrap();
    assert!(matches!(v, Value::Map(ref m) if m.len() == 1), "{v:?}");
}

#[test]
fn config_set_is_atomic_and_checked() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        run::<String>(
            &mut c,
            &[
                "CONFIG",
                "SET",
                "maxmemory",
                "10mb",
                "maxmemory-policy",
                "allkeys-lru"
            ]
        )
        .unwrap(),
        "OK"
    );
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "maxmemory*"]).unwrap();
    assert_eq!(v["maxmemory"], "10485760");
    assert_eq!(v["maxmemory-policy"], "allkeys-lru");
    let (f, _) = info(&mut c, &["memory"]);
    assert_eq!(num(&f, "maxmemory"), 10485760);
    assert_eq!(f["maxmemory_policy"], "allkeys-lru");

    // A bad pair rejects the whole call: nothing changes.
    let e = err(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            "20mb",
            "maxmemory-policy",
            "bogus",
        ],
    );
    assert!(
        e.starts_with("ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - "),
        "{e}"
    );
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "maxmemory"]).unwrap();
    assert_eq!(v["maxmemory"], "10485760");
    assert_eq!(
        err(&mut c, &["CONFIG", "SET", "nosuch", "1"]),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
    assert_eq!(
        err(
            &mut c,
            &["CONFIG", "SET", "maxmemory", "1mb", "maxmemory", "2mb"]
        ),
        "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - duplicate parameter"
    );
    assert_eq!(
        err(&mut c, &["CONFIG", "SET", "maxmemory", "1mb", "timeout"]),
        "ERR wrong number of arguments for 'config|set' command"
    );
    let e = err(&mut c, &["CONFIG", "SET", "maxclients", "abc"]);
    assert!(
        e.starts_with("ERR CONFIG SET failed (possibly related to argument 'maxclients') - "),
        "{e}"
    );
}

#[test]
fn config_resetstat_zeroes_counters() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for i in 0..20 {
        run::<()>(&mut c, &["SET", &format!("k{i}"), "v"]).unwrap();
        run::<String>(&mut c, &["GET", &format!("k{i}")]).unwrap();
        run::<Option<String>>(&mut c, &["GET", &format!("missing{i}")]).unwrap();
    }
    run::<()>(&mut c, &["SET", "gone", "v", "PX", "1"]).unwrap();
    assert!(wait_until(DEADLINE, || {
        let (f, _) = info(&mut c, &["stats"]);
        num(&f, "expired_keys") == 1
    }));
    let (f, _) = info(&mut c, &["stats"]);
    assert!(num(&f, "total_commands_processed") > 60);
    assert_eq!(num(&f, "keyspace_hits"), 20);

    assert_eq!(
        run::<String>(&mut c, &["CONFIG", "RESETSTAT"]).unwrap(),
        "OK"
    );
    let (f, _) = info(&mut c, &["stats"]);
    // The RESETSTAT itself has been counted; INFO counts after it renders.
    assert_eq!(num(&f, "total_commands_processed"), 1);
    for k in [
        "keyspace_hits",
        "keyspace_misses",
        "expired_keys",
        "evicted_keys",
        "total_connections_received",
        "rejected_connections",
        "total_error_replies",
    ] {
        assert_eq!(num(&f, k), 0, "{k}");
    }
    let (f, _) = info(&mut c, &["commandstats"]);
    assert!(!f.contains_key("cmdstat_get"), "{f:?}");
    assert!(f["cmdstat_info"].starts_with("calls=1,"));
    assert!(f["cmdstat_config|resetstat"].starts_with("calls=1,"));
    // The keyspace itself is untouched.
    let (f, _) = info(&mut c, &["keyspace"]);
    assert!(f["db0"].starts_with("keys=20,"), "{}", f["db0"]);
    assert_eq!(
        err(&mut c, &["CONFIG", "RESETSTAT", "x"]),
        "ERR wrong number of arguments for 'config|resetstat' command"
    );
}

#[test]
fn time_and_lastsave() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let before = now_secs();
    let t: Vec<String> = run(&mut c, &["TIME"]).unwrap();
    let after = now_secs();
    assert_eq!(t.len(), 2);
    let secs: u64 = t[0].parse().unwrap();
    let micros: u64 = t[1].parse().unwrap();
    assert!(
        before <= secs && secs <= after,
        "{secs} not in {before}..{after}"
    );
    assert!(micros < 1_000_000);
    let last: i64 = run(&mut c, &["LASTSAVE"]).unwrap();
    assert!(last as u64 <= after && last as u64 + 60 >= before, "{last}");
}

/// INFO's config_file is the absolute path of the file the server was started with, empty
/// without one (as Valkey). The shipped conf/tallykv.conf starts a server with its defaults.
#[test]
fn info_shows_the_config_file() {
    let s = Server::start(&[]);
    let (f, _) = info(&mut s.conn(), &["server"]);
    assert_eq!(f["config_file"], "");

    // Relative to the working directory (the crate's root, where the test runs).
    let s = Server::start(&["conf/tallykv.conf"]);
    let mut c = s.conn();
    let (f, _) = info(&mut c, &["server"]);
    let expected = std::env::current_dir().unwrap().join("conf/tallykv.conf");
    assert_eq!(f["config_file"], expected.display().to_string());
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "maxmemory-samples"]).unwrap();
    assert_eq!(v["maxmemory-samples"], "5");
}

/// `pidfile`: written (the process id and a newline) once the server listens, removed by a
/// clean SHUTDOWN.
#[test]
fn pidfile_is_written_and_removed_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("tallykv.pid");
    let path = pidfile.to_str().expect("a UTF-8 temp path");
    let mut s = Server::start(&["--pidfile", path]);
    let expected = format!("{}\n", s.pid());
    // The first core writes it once its listeners are up; another core may answer before.
    assert!(
        wait_until(DEADLINE, || std::fs::read_to_string(&pidfile)
            .is_ok_and(|t| t == expected)),
        "{path}: {:?}",
        std::fs::read_to_string(&pidfile)
    );
    let mut c = s.conn();
    let v: HashMap<String, String> = run(&mut c, &["CONFIG", "GET", "pidfile"]).unwrap();
    assert_eq!(v["pidfile"], path);
    assert!(run::<Value>(&mut c, &["SHUTDOWN"]).is_err(), "no reply");
    let status = s.wait_exit(2 * DEADLINE).expect("the server exits");
    assert!(status.success(), "{status}");
    assert!(!pidfile.exists(), "{path} is removed");
}

/// CONFIG SET loglevel changes what the running server logs: CONFIG SET's own debug line
/// appears only while loglevel is debug.
#[test]
fn config_set_loglevel_changes_what_is_logged() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    // The harness starts servers with loglevel warning.
    let s = Server::start(&["--logfile", log.to_str().expect("a UTF-8 temp path")]);
    let mut c = s.conn();
    // Sets `directive` (to what it is), then logs a warning after it: once the warning is
    // in the file, CONFIG SET's debug line would be there too had it passed the filter.
    let debug_line_logged = |c: &mut redis::Connection, directive: &str| {
        let v: HashMap<String, String> = run(c, &["CONFIG", "GET", directive]).unwrap();
        let ok: String = run(c, &["CONFIG", "SET", directive, &v[directive]]).unwrap();
        assert_eq!(ok, "OK");
        let mark = format!("after setting {directive}");
        run::<Value>(
            c,
            &["EVAL", "redis.log(redis.LOG_WARNING, ARGV[1])", "0", &mark],
        )
        .unwrap();
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            wait_until(DEADLINE, || text().contains(&mark)),
            "the warning {mark:?} never reached the log:\n{}",
            text()
        );
        // "pid:M 08 Dec 2026 01:20:00.123 - CONFIG SET ...": `-` is Valkey's verbose level,
        // where tallykv's debug events go.
        let verbose = |l: &str| {
            l.split_once(":M ")
                .and_then(|(_, rest)| rest.get(24..27))
                .is_some_and(|mark| mark == " - ")
        };
        text()
            .lines()
            .any(|l| verbose(l) && l.contains("CONFIG SET") && l.contains(directive))
    };
    assert!(!debug_line_logged(&mut c, "timeout"), "loglevel warning");
    let ok: String = run(&mut c, &["CONFIG", "SET", "loglevel", "debug"]).unwrap();
    assert_eq!(ok, "OK");
    assert!(debug_line_logged(&mut c, "tcp-keepalive"), "loglevel debug");
    let ok: String = run(&mut c, &["CONFIG", "SET", "loglevel", "notice"]).unwrap();
    assert_eq!(ok, "OK");
    assert!(!debug_line_logged(&mut c, "maxclients"), "loglevel notice");
}

/// `rename-command` (as seed deployments hide FLUSHALL, CONFIG and DEBUG): a hidden command
/// is unknown to clients, scripts and MULTI; a renamed one answers under its new name only,
/// runs as itself (FLUSHALL renamed still flushes every database, not one), and ACL rules
/// keep naming it by its own name.
#[test]
fn rename_command_hides_and_renames_commands() {
    let server = Server::start(&[
        "--rename-command",
        "config",
        "",
        "--rename-command",
        "FLUSHALL",
        "wipe-7f3a",
        "--rename-command",
        "get",
        "fetch",
    ]);
    let mut c = server.conn();
    assert_eq!(
        err(&mut c, &["CONFIG", "GET", "port"]),
        "ERR unknown command 'CONFIG', with args beginning with: 'GET' 'port' "
    );
    assert!(err(&mut c, &["FLUSHALL"]).starts_with("ERR unknown command 'FLUSHALL'"));
    assert!(err(&mut c, &["GET", "k"]).starts_with("ERR unknown command 'GET'"));
    let _: () = run(&mut c, &["SET", "k", "v"]).unwrap();
    let v: String = run(&mut c, &["FETCH", "k"]).unwrap();
    assert_eq!(v, "v");
    // The renamed command's own errors name it by its own name, as Valkey's do.
    assert_eq!(
        err(&mut c, &["fetch"]),
        "ERR wrong number of arguments for 'get' command"
    );
    // Scripts see the same names.
    assert!(
        err(
            &mut c,
            &["EVAL", "return redis.call('get', KEYS[1])", "1", "k"]
        )
        .contains("Unknown command called from script")
    );
    let v: String = run(
        &mut c,
        &["EVAL", "return redis.call('fetch', KEYS[1])", "1", "k"],
    )
    .unwrap();
    assert_eq!(v, "v");
    // MULTI queues by the new name and runs the command as itself.
    let _: () = run(&mut c, &["SELECT", "1"]).unwrap();
    let _: () = run(&mut c, &["SET", "other-db", "x"]).unwrap();
    let _: () = run(&mut c, &["MULTI"]).unwrap();
    let queued: String = run(&mut c, &["wipe-7f3a"]).unwrap();
    assert_eq!(queued, "QUEUED");
    let _: Value = run(&mut c, &["EXEC"]).unwrap();
    let n: i64 = run(&mut c, &["DBSIZE"]).unwrap();
    assert_eq!(
        n, 0,
        "database 1 emptied too: the renamed FLUSHALL flushed all"
    );
    let _: () = run(&mut c, &["SELECT", "0"]).unwrap();
    let n: i64 = run(&mut c, &["DBSIZE"]).unwrap();
    assert_eq!(n, 0, "database 0 emptied");
    // ACL rules name commands by their own names.
    let _: () = run(
        &mut c,
        &["ACL", "SETUSER", "reader", "on", "nopass", "~*", "+get"],
    )
    .unwrap();
    let _: () = run(&mut c, &["SET", "k", "v"]).unwrap();
    let _: () = run(&mut c, &["AUTH", "reader", "any"]).unwrap();
    let v: String = run(&mut c, &["FETCH", "k"]).unwrap();
    assert_eq!(v, "v");
    assert!(err(&mut c, &["SET", "k", "w"]).starts_with("NOPERM"));
}

/// A rename-command naming no command, or a new name already taken, stops the start with
/// Valkey's message.
#[test]
fn rename_command_errors_stop_the_start() {
    for (args, message) in [
        (["nosuchcmd", "x"], "No such command in rename-command"),
        (["get", "set"], "Target command name already exists"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tallykv-server"))
            .args(["--port", "0", "--bind", "127.0.0.1", "--dir"])
            .arg(dir.path())
            .arg("--rename-command")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// The log as Valkey writes it, in its three formats, switched by CONFIG SET, with no colour
/// codes in the file.
#[test]
fn log_lines_follow_log_format() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("tallykv.log");
    let s = Server::start(&["--logfile", path.to_str().unwrap(), "--loglevel", "notice"]);
    let mut c = s.conn();
    let lines = |from: usize| -> Vec<String> {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .skip(from)
            .map(str::to_string)
            .collect()
    };
    let start = lines(0);
    let pid = s.pid();
    let ready = start
        .iter()
        .find(|l| l.contains("Ready to accept connections"))
        .expect("a ready line");
    // "pid:M 08 Dec 2026 01:20:00.123 * Ready to accept connections ..."
    let prefix = format!("{pid}:M ");
    assert!(ready.starts_with(&prefix), "{ready}");
    let rest = &ready[prefix.len()..];
    assert_eq!(&rest[24..27], " * ", "{ready}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("log-format")
        .arg("logfmt")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("log-format")
        .arg("json")
        .arg("log-timestamp-format")
        .arg("milliseconds")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let after = lines(start.len());
    let logfmt = after
        .iter()
        .find(|l| l.contains("DB saved on disk"))
        .expect("a logfmt save line");
    assert!(
        logfmt.starts_with(&format!("pid={pid} role=master timestamp=\""))
            && logfmt.contains(" level=notice message=\"DB saved on disk"),
        "{logfmt}"
    );
    let json = after
        .iter()
        .filter(|l| l.contains("DB saved on disk"))
        .nth(1)
        .expect("a json save line");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["pid"], pid);
    assert_eq!(v["level"], "notice");
    // Unix time in milliseconds: a JSON number of 13 digits (not a quoted date).
    assert!(
        v["timestamp"].is_u64() && v["timestamp"].to_string().len() == 13,
        "{json}"
    );
    assert!(v["keys"].is_u64(), "{json}");
    assert!(!std::fs::read_to_string(&path).unwrap().contains('\x1b'));
    let e = common::err(&mut c, &["CONFIG", "SET", "log-format", "xml"]);
    assert!(e.contains("log-format"), "{e}");
}
