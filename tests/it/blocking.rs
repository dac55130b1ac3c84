//! Blocking list commands through real connections: a client blocked on keys is woken by a
//! push from any connection on any core, times out with a null array, never blocks inside
//! MULTI, and a client that hangs up while blocked is never handed an element (nothing is
//! lost). Replies compared byte for byte with Valkey's (redis-server 7.0 agrees).

use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{DEADLINE, Server, run};

/// Keys on different cores with `--threads 2`.
const ON_CORE_1: &str = "a";
const ON_CORE_0: &str = "b";

fn send(t: &mut std::net::TcpStream, req: &str) {
    t.write_all(req.as_bytes()).unwrap();
}

/// Reads exactly `expected.len()` bytes and compares.
fn expect(t: &mut std::net::TcpStream, expected: &str) {
    let mut got = vec![0u8; expected.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

fn inline(cmd: &str) -> String {
    format!("{cmd}\r\n")
}

#[test]
fn non_blocking_answers_match_valkey() {
    let s = Server::start(&["--threads", "2"]);
    let mut t = s.raw();
    let script = [
        "BRPOPLPUSH x y 0.1",
        "BLMOVE x y LEFT LEFT 0.1",
        "BLPOP x 0.1",
        "MULTI",
        "BLMOVE x y LEFT LEFT 0",
        "BLPOP x 0",
        "EXEC",
        "BLPOP x -1",
        "BLPOP x abc",
        "BLMPOP 0.1 1 x LEFT",
        "SET s v",
        "BLPOP s 0.1",
        "BLMPOP 0 0 x LEFT",
    ];
    send(
        &mut t,
        &script.iter().map(|c| inline(c)).collect::<String>(),
    );
    expect(
        &mut t,
        "*-1\r\n*-1\r\n*-1\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$-1\r\n*-1\r\n\
         -ERR timeout is negative\r\n-ERR timeout is not a float or out of range\r\n*-1\r\n\
         +OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n\
         -ERR numkeys should be greater than 0\r\n",
    );
}

#[test]
fn a_push_on_any_core_wakes_the_blocked_client() {
    let s = Server::start(&["--threads", "2"]);
    let mut pusher = s.conn();
    // BLPOP on keys of both cores, served by a push to the second key.
    let mut b = s.raw();
    send(&mut b, &inline(&format!("BLPOP {ON_CORE_1} {ON_CORE_0} 0")));
    // INFO clients counts the blocked client and the keys it waits on.
    assert!(common::wait_until(DEADLINE, || {
        let info: String = run(&mut pusher, &["INFO", "clients"]).unwrap();
        info.contains("blocked_clients:1\r\n") && info.contains("total_blocking_keys:2\r\n")
    }));
    assert_eq!(
        run::<i64>(&mut pusher, &["RPUSH", ON_CORE_0, "hello"]).unwrap(),
        1
    );
    expect(&mut b, "*2\r\n$1\r\nb\r\n$5\r\nhello\r\n");
    assert!(common::wait_until(DEADLINE, || {
        let info: String = run(&mut pusher, &["INFO", "clients"]).unwrap();
        info.contains("blocked_clients:0\r\n") && info.contains("total_blocking_keys:0\r\n")
    }));
    // BLMOVE across cores.
    send(
        &mut b,
        &inline(&format!("BLMOVE {ON_CORE_1} {ON_CORE_0} RIGHT LEFT 0")),
    );
    std::thread::sleep(Duration::from_millis(100));
    run::<i64>(&mut pusher, &["LPUSH", ON_CORE_1, "moved"]).unwrap();
    expect(&mut b, "$5\r\nmoved\r\n");
    assert_eq!(
        run::<Vec<String>>(&mut pusher, &["LRANGE", ON_CORE_0, "0", "-1"]).unwrap(),
        vec!["moved"]
    );
    // BLMPOP with a count, woken by a push of several elements.
    send(&mut b, &inline("BLMPOP 0 2 q1 q2 RIGHT COUNT 2"));
    std::thread::sleep(Duration::from_millis(100));
    run::<i64>(&mut pusher, &["RPUSH", "q2", "1", "2", "3"]).unwrap();
    expect(&mut b, "*2\r\n$2\r\nq2\r\n*2\r\n$1\r\n3\r\n$1\r\n2\r\n");
    // Several clients blocked on one key are each served once.
    let mut waiters: Vec<_> = (0..4)
        .map(|_| {
            let mut w = s.raw();
            send(&mut w, &inline("BRPOP jobs 0"));
            w
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    run::<i64>(&mut pusher, &["LPUSH", "jobs", "j1", "j2", "j3", "j4"]).unwrap();
    let mut got = Vec::new();
    for w in &mut waiters {
        let mut buf = vec![0u8; "*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n".len()];
        w.read_exact(&mut buf).unwrap();
        got.push(String::from_utf8_lossy(&buf[buf.len() - 4..buf.len() - 2]).into_owned());
    }
    got.sort();
    assert_eq!(got, ["j1", "j2", "j3", "j4"]);
    assert_eq!(run::<i64>(&mut pusher, &["EXISTS", "jobs"]).unwrap(), 0);
}

#[test]
fn a_timeout_answers_a_null_array_and_a_client_that_left_loses_nothing() {
    let s = Server::start(&["--threads", "2"]);
    let mut c = s.conn();
    let mut b = s.raw();
    send(&mut b, &inline("BLPOP nothing 0.2"));
    expect(&mut b, "*-1\r\n");
    // The connection serves normally afterwards.
    send(&mut b, &inline("PING"));
    expect(&mut b, "+PONG\r\n");
    // A client that hangs up while blocked forever: a later push stays in the list.
    let mut gone = s.raw();
    send(&mut gone, &inline("BLPOP kept 0"));
    std::thread::sleep(Duration::from_millis(150));
    drop(gone);
    std::thread::sleep(Duration::from_millis(300));
    run::<i64>(&mut c, &["RPUSH", "kept", "v"]).unwrap();
    assert!(common::wait_until(DEADLINE, || run::<i64>(
        &mut c,
        &["LLEN", "kept"]
    )
    .unwrap()
        == 1));
    assert_eq!(
        run::<Vec<String>>(&mut c, &["LRANGE", "kept", "0", "-1"]).unwrap(),
        vec!["v"]
    );
}
