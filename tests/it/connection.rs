//! Connection commands through redis-rs and raw sockets: PING, ECHO, SELECT, QUIT, RESET,
//! HELLO, AUTH and CLIENT, with Valkey's exact replies.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, err, run};
use redis::Value;

/// Sends `req` and returns the raw bytes of the next complete reply.
fn roundtrip(s: &mut TcpStream, req: &[u8]) -> Vec<u8> {
    s.write_all(req).expect("write");
    read_reply(s)
}

/// Reads exactly one RESP2/RESP3 reply.
fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(len) = frame_len(&buf) {
            assert_eq!(len, buf.len(), "more than one reply arrived: {buf:?}");
            return buf;
        }
        let n = s.read(&mut chunk).expect("read a reply");
        assert!(n > 0, "connection closed mid-reply; got {:?}", lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the complete reply at the front of `buf`, if there is one. RESP2 frames
/// (`$-1`, `*-1`) only parse as RESP2, the RESP3 types only as RESP3.
fn frame_len(buf: &[u8]) -> Option<usize> {
    match redis_protocol::resp2::decode::decode(buf) {
        Ok(r) => r.map(|(_, len)| len),
        Err(_) => redis_protocol::resp3::decode::complete::decode(buf)
            .ok()
            .flatten()
            .map(|(_, len)| len),
    }
}

/// Reads until the server closes the connection.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("server closes the connection");
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command as a RESP multibulk request.
fn req(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// The value of `field=` in a CLIENT LIST / CLIENT INFO line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn ping_and_echo() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    assert_eq!(
        run::<String>(&mut c, &["ping", "hello world"]).unwrap(),
        "hello world"
    );
    assert_eq!(
        err(&mut c, &["PING", "a", "b"]),
        "ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(run::<String>(&mut c, &["ECHO", "x y"]).unwrap(), "x y");
    assert_eq!(run::<String>(&mut c, &["ECHO", ""]).unwrap(), "");
    assert_eq!(
        err(&mut c, &["ECHO"]),
        "ERR wrong number of arguments for 'echo' command"
    );
    assert_eq!(
        err(&mut c, &["echo", "a", "b"]),
        "ERR wrong number of arguments for 'echo' command"
    );

    // Exact encodings: PING is a status reply, PING <msg> a bulk string, in both protocols.
    let mut r = s.raw();
    assert_eq!(roundtrip(&mut r, &req(&[b"PING"])), b"+PONG\r\n");
    assert_eq!(roundtrip(&mut r, &req(&[b"PING", b"m"])), b"$1\r\nm\r\n");
    roundtrip(&mut r, &req(&[b"HELLO", b"3"]));
    assert_eq!(roundtrip(&mut r, &req(&[b"PING"])), b"+PONG\r\n");
    assert_eq!(
        roundtrip(&mut r, &req(&[b"ECHO", b"\x00\xff"])),
        b"$2\r\n\x00\xff\r\n"
    );
}

#[test]
fn select() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(run::<String>(&mut c, &["SELECT", "0"]).unwrap(), "OK");
    assert_eq!(run::<String>(&mut c, &["SELECT", "15"]).unwrap(), "OK");
    assert_eq!(
        err(&mut c, &["SELECT", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SELECT", "-1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SELECT", "x"]),
        "ERR value is not an integer or out of range"
    );
    // Valkey reads the index as a C int: beyond that it is not an integer.
    assert_eq!(
        err(&mut c, &["SELECT", "4294967296"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["SELECT"]),
        "ERR wrong number of arguments for 'select' command"
    );
    assert_eq!(
        err(&mut c, &["SELECT", "0", "1"]),
        "ERR wrong number of arguments for 'select' command"
    );
}

#[test]
fn quit_replies_ok_then_closes() {
    let s = Server::start(&[]);
    let mut r = s.raw();
    // Commands after QUIT in the same pipeline are not run.
    r.write_all(b"*1\r\n$4\r\nQUIT\r\n*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$1\r\n1\r\n")
        .unwrap();
    assert_eq!(read_to_close(&mut r), b"+OK\r\n");
    let mut c = s.conn();
    assert_eq!(run::<Option<String>>(&mut c, &["GET", "q"]).unwrap(), None);
    // Inline QUIT too.
    let mut r = s.raw();
    r.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_close(&mut r), b"+OK\r\n");
}

#[test]
fn reset_returns_to_resp2_and_clears_the_name() {
    let s = Server::start(&[]);
    let mut r = s.raw();
    let hello = roundtrip(&mut r, &req(&[b"HELLO", b"3", b"SETNAME", b"old"]));
    assert!(hello.starts_with(b"%7\r\n"), "{}", lossy(&hello));
    roundtrip(
        &mut r,
        &req(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"mylib"]),
    );
    assert_eq!(roundtrip(&mut r, &req(&[b"RESET"])), b"+RESET\r\n");
    // RESP2 again: a null is $-1 and HELLO without a version answers a flat array.
    assert_eq!(roundtrip(&mut r, &req(&[b"GET", b"nokey"])), b"$-1\r\n");
    assert_eq!(
        roundtrip(&mut r, &req(&[b"CLIENT", b"GETNAME"])),
        b"$-1\r\n"
    );
    let info = lossy(&roundtrip(&mut r, &req(&[b"CLIENT", b"INFO"])));
    // The library name survives RESET (it still describes the client), the name does not.
    assert_eq!(field(info.trim_end(), "lib-name"), Some("mylib"), "{info}");
    assert_eq!(field(info.trim_end(), "resp"), Some("2"), "{info}");
    let hello = roundtrip(&mut r, &req(&[b"HELLO"]));
    assert!(hello.starts_with(b"*14\r\n"), "{}", lossy(&hello));
    assert!(
        lossy(&hello).contains("$5\r\nproto\r\n:2\r\n"),
        "{}",
        lossy(&hello)
    );
    assert_eq!(
        lossy(&roundtrip(&mut r, &req(&[b"RESET", b"x"]))),
        "-ERR wrong number of arguments for 'reset' command\r\n"
    );
}

#[test]
fn hello_reply_shape() {
    let s = Server::start(&[]);
    let mut r = s.raw();
    let id = {
        let reply = roundtrip(&mut r, &req(&[b"CLIENT", b"ID"]));
        lossy(&reply[1..reply.len() - 2]).parse::<i64>().unwrap()
    };
    let info = lossy(&roundtrip(&mut r, &req(&[b"INFO", b"server"])));
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("redis_version")
        .to_string();
    assert!(version.starts_with("7.2."), "{version}");
    let reply = lossy(&roundtrip(&mut r, &req(&[b"HELLO", b"3"])));
    let id_s = id.to_string();
    let expected = format!(
        "%7\r\n$6\r\nserver\r\n$7\r\ntallykv\r\n$7\r\nversion\r\n${}\r\n{version}\r\n\
         $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id_s}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        version.len()
    );
    assert_eq!(reply, expected);
    // The connection now speaks RESP3: nulls are `_`.
    assert_eq!(roundtrip(&mut r, &req(&[b"GET", b"nokey"])), b"_\r\n");

    // HELLO 2 answers the same fields as a flat array and switches back.
    let reply = lossy(&roundtrip(&mut r, &req(&[b"HELLO", b"2"])));
    assert!(reply.starts_with("*14\r\n$6\r\nserver\r\n"), "{reply}");
    assert!(reply.contains("$5\r\nproto\r\n:2\r\n"), "{reply}");
    assert!(reply.ends_with("$7\r\nmodules\r\n*0\r\n"), "{reply}");
    assert_eq!(roundtrip(&mut r, &req(&[b"GET", b"nokey"])), b"$-1\r\n");
}

#[test]
fn hello_options_and_errors() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for v in ["1", "4", "0", "-3"] {
        assert_eq!(
            err(&mut c, &["HELLO", v]),
            "NOPROTO unsupported protocol version"
        );
    }
    assert_eq!(
        err(&mut c, &["HELLO", "x"]),
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["HELLO", "3", "foo"]),
        "ERR Syntax error in HELLO option 'foo'"
    );
    assert_eq!(
        err(&mut c, &["HELLO", "2", "SETNAME"]),
        "ERR Syntax error in HELLO option 'SETNAME'"
    );
    assert_eq!(
        err(&mut c, &["HELLO", "2", "AUTH", "default"]),
        "ERR Syntax error in HELLO option 'AUTH'"
    );
    // The name is checked as soon as it is read, before later options.
    assert_eq!(
        err(&mut c, &["HELLO", "2", "SETNAME", "a b", "foo"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    // Without a configured password the default user takes any password; others do not exist.
    let ok: Value = run(&mut c, &["HELLO", "2", "AUTH", "default", "whatever"]).unwrap();
    assert!(matches!(ok, Value::Array(ref v) if v.len() == 14), "{ok:?}");
    assert_eq!(
        err(&mut c, &["HELLO", "2", "AUTH", "bob", "pw"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    // A failed HELLO changes nothing: still RESP2 and unnamed.
    let mut r = s.raw();
    let e = roundtrip(&mut r, &req(&[b"HELLO", b"3", b"SETNAME", b"n", b"bogus"]));
    assert_eq!(lossy(&e), "-ERR Syntax error in HELLO option 'bogus'\r\n");
    assert_eq!(
        roundtrip(&mut r, &req(&[b"CLIENT", b"GETNAME"])),
        b"$-1\r\n"
    );

    // HELLO 3 SETNAME names the connection.
    let reply = roundtrip(&mut r, &req(&[b"HELLO", b"3", b"SETNAME", b"x"]));
    assert!(reply.starts_with(b"%7\r\n"));
    assert_eq!(
        roundtrip(&mut r, &req(&[b"CLIENT", b"GETNAME"])),
        b"$1\r\nx\r\n"
    );
    // HELLO with no version keeps the protocol.
    assert!(roundtrip(&mut r, &req(&[b"HELLO"])).starts_with(b"%7\r\n"));
}

#[test]
fn redis_rs_resp3_connection_works() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    assert_eq!(run::<String>(&mut c, &["SET", "k", "v"]).unwrap(), "OK");
    let v: Value = run(&mut c, &["GET", "nokey"]).unwrap();
    assert_eq!(v, Value::Nil);
    let info: String = run(&mut c, &["CLIENT", "INFO"]).unwrap();
    assert_eq!(field(info.trim_end(), "resp"), Some("3"), "{info}");
}

#[test]
fn auth_without_a_password() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        err(&mut c, &["AUTH", "secret"]),
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
    assert_eq!(
        run::<String>(&mut c, &["AUTH", "default", "anything"]).unwrap(),
        "OK"
    );
    assert_eq!(
        err(&mut c, &["AUTH", "alice", "pw"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(err(&mut c, &["AUTH", "a", "b", "c"]), "ERR syntax error");
    assert_eq!(
        err(&mut c, &["AUTH"]),
        "ERR wrong number of arguments for 'auth' command"
    );
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
}

#[test]
fn client_names() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        run::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
        None
    );
    assert_eq!(
        run::<String>(&mut c, &["CLIENT", "SETNAME", "worker-1"]).unwrap(),
        "OK"
    );
    assert_eq!(
        run::<String>(&mut c, &["client", "getname"]).unwrap(),
        "worker-1"
    );
    for bad in ["a b", "a\nb", "tab\there", "caf\u{e9}", "\x7f"] {
        assert_eq!(
            err(&mut c, &["CLIENT", "SETNAME", bad]),
            "ERR Client names cannot contain spaces, newlines or special characters.",
            "{bad:?}"
        );
    }
    // A rejected name leaves the old one.
    assert_eq!(
        run::<String>(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
        "worker-1"
    );
    // The empty name removes it.
    assert_eq!(
        run::<String>(&mut c, &["CLIENT", "SETNAME", ""]).unwrap(),
        "OK"
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
        None
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETNAME"]),
        "ERR wrong number of arguments for 'client|setname' command"
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "GETNAME", "x"]),
        "ERR wrong number of arguments for 'client|getname' command"
    );
}

#[test]
fn client_id_is_unique_and_increasing() {
    let s = Server::start(&[]);
    let mut a = s.conn();
    let mut b = s.conn();
    let ia: i64 = run(&mut a, &["CLIENT", "ID"]).unwrap();
    let ib: i64 = run(&mut b, &["CLIENT", "ID"]).unwrap();
    assert!(ia > 0 && ib > ia, "{ia} {ib}");
    assert_eq!(run::<i64>(&mut a, &["CLIENT", "ID"]).unwrap(), ia);
    assert_eq!(
        err(&mut a, &["CLIENT", "ID", "x"]),
        "ERR wrong number of arguments for 'client|id' command"
    );
}

#[test]
fn client_setinfo() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    // redis-rs announced itself on connect.
    let info: String = run(&mut c, &["CLIENT", "INFO"]).unwrap();
    assert_eq!(
        field(info.trim_end(), "lib-name"),
        Some("redis-rs"),
        "{info}"
    );
    assert!(
        field(info.trim_end(), "lib-ver").is_some_and(|v| !v.is_empty()),
        "{info}"
    );

    assert_eq!(
        run::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "tallylib"]).unwrap(),
        "OK"
    );
    assert_eq!(
        run::<String>(&mut c, &["CLIENT", "SETINFO", "lib-ver", "1.2.3"]).unwrap(),
        "OK"
    );
    let info: String = run(&mut c, &["CLIENT", "INFO"]).unwrap();
    assert_eq!(field(info.trim_end(), "lib-name"), Some("tallylib"));
    assert_eq!(field(info.trim_end(), "lib-ver"), Some("1.2.3"));
    assert_eq!(
        err(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "a b"]),
        "ERR LIB-NAME cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETINFO", "lib-ver", "1\n2"]),
        "ERR lib-ver cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETINFO", "foo", "x"]),
        "ERR Unrecognized option 'foo'"
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETINFO", "LIB-NAME"]),
        "ERR wrong number of arguments for 'client|setinfo' command"
    );
    // An empty value clears it.
    assert_eq!(
        run::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", ""]).unwrap(),
        "OK"
    );
    let info: String = run(&mut c, &["CLIENT", "INFO"]).unwrap();
    assert_eq!(field(info.trim_end(), "lib-name"), Some(""));
}

/// Fields of a CLIENT LIST line in Valkey 8's order.
const LIST_FIELDS: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "name",
    "age",
    "idle",
    "flags",
    "db",
    "sub",
    "psub",
    "ssub",
    "multi",
    "watch",
    "qbuf",
    "qbuf-free",
    "argv-mem",
    "multi-mem",
    "rbs",
    "rbp",
    "obl",
    "oll",
    "omem",
    "tot-mem",
    "events",
    "cmd",
    "user",
    "redir",
    "resp",
    "lib-name",
    "lib-ver",
    "tot-net-in",
    "tot-net-out",
    "tot-cmds",
];

#[test]
fn client_list_format_and_filters() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut other = s.conn();
    run::<String>(&mut other, &["CLIENT", "SETNAME", "other"]).unwrap();
    let my_id: i64 = run(&mut c, &["CLIENT", "ID"]).unwrap();
    let other_id: i64 = run(&mut other, &["CLIENT", "ID"]).unwrap();

    let list: String = run(&mut c, &["CLIENT", "LIST"]).unwrap();
    assert!(list.ends_with('\n'), "{list:?}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    for line in &lines {
        let names: Vec<&str> = line
            .split(' ')
            .map(|kv| kv.split_once('=').expect("key=value").0)
            .collect();
        assert_eq!(names, LIST_FIELDS, "{line}");
    }
    let mine = lines
        .iter()
        .find(|l| field(l, "id") == Some(&my_id.to_string()))
        .expect("own line");
    assert_eq!(field(mine, "cmd"), Some("client|list"));
    assert_eq!(field(mine, "name"), Some(""));
    assert_eq!(field(mine, "resp"), Some("2"));
    assert_eq!(field(mine, "db"), Some("0"));
    assert_eq!(field(mine, "flags"), Some("N"));
    assert_eq!(field(mine, "user"), Some("default"));
    assert_eq!(field(mine, "lib-name"), Some("redis-rs"));
    assert_eq!(
        field(mine, "laddr"),
        Some(&*format!("127.0.0.1:{}", s.port))
    );
    assert!(field(mine, "addr").unwrap().starts_with("127.0.0.1:"));
    for n in ["age", "idle", "fd"] {
        assert!(
            field(mine, n).unwrap().parse::<u64>().is_ok(),
            "{n} in {mine}"
        );
    }
    let theirs = lines
        .iter()
        .find(|l| field(l, "id") == Some(&other_id.to_string()))
        .expect("other line");
    assert_eq!(field(theirs, "name"), Some("other"));
    assert_eq!(field(theirs, "cmd"), Some("client|id"));
    // `other` ran SETINFO twice (redis-rs on connect), SETNAME and ID.
    assert_eq!(field(theirs, "tot-cmds"), Some("4"), "{theirs}");
    let net_in: u64 = field(theirs, "tot-net-in").unwrap().parse().unwrap();
    let net_out: u64 = field(theirs, "tot-net-out").unwrap().parse().unwrap();
    assert!(net_in > 40 && net_out >= 5 + 5 + 5, "{theirs}");

    // TYPE filter.
    let normal: String = run(&mut c, &["CLIENT", "LIST", "TYPE", "normal"]).unwrap();
    assert_eq!(normal.lines().count(), 2);
    for t in ["pubsub", "master", "replica", "slave"] {
        let l: String = run(&mut c, &["CLIENT", "LIST", "TYPE", t]).unwrap();
        assert_eq!(l, "", "TYPE {t}");
    }
    assert_eq!(
        err(&mut c, &["CLIENT", "LIST", "TYPE", "foo"]),
        "ERR Unknown client type 'foo'"
    );
    // ID filter.
    let one: String = run(&mut c, &["CLIENT", "LIST", "ID", &other_id.to_string()]).unwrap();
    assert_eq!(one.lines().count(), 1);
    assert_eq!(field(one.trim_end(), "name"), Some("other"));
    let both: String = run(
        &mut c,
        &[
            "CLIENT",
            "LIST",
            "ID",
            &my_id.to_string(),
            &other_id.to_string(),
            "999999",
        ],
    )
    .unwrap();
    assert_eq!(both.lines().count(), 2);
    assert_eq!(
        err(&mut c, &["CLIENT", "LIST", "ID", "abc"]),
        "ERR Invalid client ID"
    );
    assert_eq!(err(&mut c, &["CLIENT", "LIST", "foo"]), "ERR syntax error");
    assert_eq!(err(&mut c, &["CLIENT", "LIST", "ID"]), "ERR syntax error");

    // A closed connection leaves the list.
    drop(other);
    assert!(common::wait_until(common::DEADLINE, || {
        run::<String>(&mut c, &["CLIENT", "LIST"])
            .unwrap()
            .lines()
            .count()
            == 1
    }));
}

#[test]
fn client_info_resp3_is_verbatim() {
    let s = Server::start(&[]);
    let mut r = s.raw();
    roundtrip(&mut r, &req(&[b"HELLO", b"3"]));
    let reply = lossy(&roundtrip(&mut r, &req(&[b"CLIENT", b"INFO"])));
    assert!(reply.starts_with('='), "{reply}");
    assert!(reply.contains("\r\ntxt:id="), "{reply}");
    assert!(reply.contains(" cmd=client|info "), "{reply}");
}

#[test]
fn client_unknown_subcommand_and_help() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(
        err(&mut c, &["CLIENT", "foo"]),
        "ERR unknown subcommand 'foo'. Try CLIENT HELP."
    );
    assert_eq!(
        err(&mut c, &["client", "FOO", "bar"]),
        "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    );
    assert_eq!(
        err(&mut c, &["CLIENT"]),
        "ERR wrong number of arguments for 'client' command"
    );
    let help: Vec<String> = run(&mut c, &["CLIENT", "HELP"]).unwrap();
    assert!(help[0].starts_with("CLIENT <subcommand>"), "{help:?}");
    assert!(help.iter().any(|l| l == "SETNAME <name>"));
    assert_eq!(help.last().unwrap(), "    Print this help.");
}

#[test]
fn many_connections_get_distinct_ids_across_cores() {
    let s = Server::start(&[]);
    let mut ids = std::collections::BTreeSet::new();
    let conns: Vec<_> = (0..20).map(|_| s.conn()).collect();
    for mut c in conns {
        ids.insert(run::<i64>(&mut c, &["CLIENT", "ID"]).unwrap());
        assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    }
    assert_eq!(ids.len(), 20);
}

#[test]
fn protocol_switch_mid_pipeline_keeps_earlier_replies_in_resp2() {
    let s = Server::start(&[]);
    let mut r = s.raw();
    // Keys on both cores before and after the switch, in one write.
    let gets: Vec<u8> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .flat_map(|k| req(&[b"GET", k.as_bytes()]))
        .collect();
    let mut input = gets.clone();
    input.extend(req(&[b"HELLO", b"3"]));
    input.extend(&gets);
    input.extend(req(&[b"RESET"]));
    input.extend(&gets);
    r.write_all(&input).unwrap();
    let mut replies = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while replies.len() < 20 {
        if let Some(len) = frame_len(&buf) {
            replies.push(buf.drain(..len).collect::<Vec<u8>>());
            continue;
        }
        let n = r.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    for (i, reply) in replies.iter().enumerate() {
        let want: &[u8] = match i {
            0..=5 | 14..=19 => b"$-1\r\n",
            6 => b"%7\r\n",
            7..=12 => b"_\r\n",
            _ => b"+RESET\r\n",
        };
        assert!(reply.starts_with(want), "reply {i}: {}", lossy(reply));
    }
}
