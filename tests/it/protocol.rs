//! The wire protocol over raw sockets: inline commands, big pipelines, every malformed-RESP
//! case, the size limits, maxclients, idle timeouts, and binary safety in RESP2 and RESP3.
//! After every bad input the server must still be alive and answer on a fresh connection.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{DEADLINE, Server, int, run, wait_until};

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

/// The length of the complete reply at the front of `buf`, if there is one.
fn frame_len(buf: &[u8]) -> Option<usize> {
    match redis_protocol::resp2::decode::decode(buf) {
        Ok(r) => r.map(|(_, len)| len),
        Err(_) => redis_protocol::resp3::decode::complete::decode(buf)
            .ok()
            .flatten()
            .map(|(_, len)| len),
    }
}

/// Reads `n` complete replies and returns their raw bytes, one entry each.
fn read_replies(s: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(n);
    let mut chunk = vec![0u8; 64 * 1024];
    while out.len() < n {
        if let Some(len) = frame_len(&buf) {
            out.push(buf.drain(..len).collect());
            continue;
        }
        let got = s.read(&mut chunk).expect("read replies");
        assert!(got > 0, "closed after {} of {n} replies", out.len());
        buf.extend_from_slice(&chunk[..got]);
    }
    assert!(buf.is_empty(), "unexpected extra bytes: {:?}", lossy(&buf));
    out
}

fn roundtrip(s: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).expect("write");
    read_replies(s, 1).remove(0)
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("connection not closed: {e}; got {:?}", lossy(&out)),
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The server is alive and answers PING on a new connection.
fn assert_serving(s: &mut Server) {
    assert!(s.alive(), "the server process died");
    let mut r = s.raw();
    assert_eq!(roundtrip(&mut r, b"*1\r\n$4\r\nPING\r\n"), b"+PONG\r\n");
}

/// Sends `input` on a fresh connection and returns all it gets back before the server closes.
fn send_and_collect(s: &Server, input: &[u8]) -> Vec<u8> {
    let mut r = s.raw();
    // The server may close before it has read everything: a failed write is fine here.
    let _ = r.write_all(input);
    read_to_close(&mut r)
}

#[test]
fn inline_commands() {
    let mut s = Server::start(&[]);
    let mut r = s.raw();
    assert_eq!(roundtrip(&mut r, b"PING\r\n"), b"+PONG\r\n");
    assert_eq!(roundtrip(&mut r, b"ping\n"), b"+PONG\r\n");
    assert_eq!(roundtrip(&mut r, b"SET a \"b c\"\r\n"), b"+OK\r\n");
    assert_eq!(roundtrip(&mut r, b"GET a\r\n"), b"$3\r\nb c\r\n");
    // sdssplitargs escapes inside double quotes, literal text inside single quotes.
    assert_eq!(
        roundtrip(&mut r, b"SET e \"\\x41\\n\\t\\\"\"\r\n"),
        b"+OK\r\n"
    );
    assert_eq!(roundtrip(&mut r, b"GET e\r\n"), b"$4\r\nA\n\t\"\r\n");
    assert_eq!(roundtrip(&mut r, b"ECHO 'it\\'s'\r\n"), b"$4\r\nit's\r\n");
    assert_eq!(
        roundtrip(&mut r, b"   SET    spaced    value   \r\n"),
        b"+OK\r\n"
    );
    assert_eq!(roundtrip(&mut r, b"GET spaced\r\n"), b"$5\r\nvalue\r\n");
    // Blank lines are skipped; several inline commands in one write are answered in order.
    r.write_all(b"\r\n\n   \r\nPING\r\nECHO x\r\nGET nokey\r\n")
        .unwrap();
    assert_eq!(
        read_replies(&mut r, 3),
        vec![
            b"+PONG\r\n".to_vec(),
            b"$1\r\nx\r\n".to_vec(),
            b"$-1\r\n".to_vec()
        ]
    );
    // Inline and multibulk mix on one connection.
    r.write_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$1\r\ny\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_replies(&mut r, 3)[1], b"$1\r\ny\r\n");
    // An inline command split across writes.
    r.write_all(b"ECH").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    r.write_all(b"O split\r\n").unwrap();
    assert_eq!(read_replies(&mut r, 1)[0], b"$5\r\nsplit\r\n");
    assert_serving(&mut s);
}

#[test]
fn pipeline_of_ten_thousand_raw_commands_in_one_write() {
    let mut s = Server::start(&[]);
    let mut r = s.raw();
    let mut input = Vec::new();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for i in 0..10_000u32 {
        match i % 4 {
            0 => {
                input.extend(req(&[
                    b"SET",
                    format!("key:{i}").as_bytes(),
                    i.to_string().as_bytes(),
                ]));
                expected.push(b"+OK\r\n".to_vec());
            }
            1 => {
                let k = format!("key:{}", i - 1);
                input.extend(req(&[b"GET", k.as_bytes()]));
                let v = (i - 1).to_string();
                expected.push(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
            }
            2 => {
                input.extend(req(&[b"INCR", b"counter"]));
                expected.push(format!(":{}\r\n", i / 4 + 1).into_bytes());
            }
            _ => {
                input.extend_from_slice(b"PING\r\n");
                expected.push(b"+PONG\r\n".to_vec());
            }
        }
    }
    // Write from another thread so neither side can block the other on full socket buffers.
    let mut w = r.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&input).unwrap());
    let replies = read_replies(&mut r, expected.len());
    writer.join().unwrap();
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(lossy(got), lossy(want), "reply {i}");
    }
    assert_serving(&mut s);
}

#[test]
fn malformed_requests_get_a_protocol_error_and_the_connection_closes() {
    let mut s = Server::start(&[]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"*abc\r\n".to_vec(), "invalid multibulk length"),
        (b"*3000000000\r\n".to_vec(), "invalid multibulk length"),
        (b"*1\r\nfoo\r\n".to_vec(), "expected '$', got 'f'"),
        (
            b"*2\r\n$4\r\nECHO\r\n:1\r\n".to_vec(),
            "expected '$', got ':'",
        ),
        (b"*1\r\n$abc\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$-5\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$-1\r\n".to_vec(), "invalid bulk length"),
        (
            b"*1\r\n$99999999999999999999\r\n".to_vec(),
            "invalid bulk length",
        ),
        (b"SET a \"b\r\n".to_vec(), "unbalanced quotes in request"),
        (b"SET a \"b\"c\r\n".to_vec(), "unbalanced quotes in request"),
        (b"ECHO 'x\r\n".to_vec(), "unbalanced quotes in request"),
        (vec![b'a'; 70 * 1024], "too big inline request"),
        (
            [b"*".as_slice(), &vec![b'1'; 70 * 1024]].concat(),
            "too big mbulk count string",
        ),
        (
            [b"*1\r\n$".as_slice(), &vec![b'1'; 70 * 1024]].concat(),
            "too big bulk count string",
        ),
    ];
    for (input, msg) in &cases {
        let got = send_and_collect(&s, input);
        assert_eq!(
            lossy(&got),
            format!("-ERR Protocol error: {msg}\r\n"),
            "input {:?}",
            lossy(&input[..input.len().min(40)])
        );
        assert_serving(&mut s);
    }
    // Commands before the bad one in the same read still run and are answered first.
    let got = send_and_collect(&s, b"SET before 1\r\nPING\r\n*x\r\nSET after 1\r\n");
    assert_eq!(
        lossy(&got),
        "+OK\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
    );
    let mut c = s.conn();
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", "before"])
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", "after"]).unwrap(),
        None
    );
    // Empty multibulks are skipped, not errors.
    let mut r = s.raw();
    assert_eq!(
        roundtrip(&mut r, b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"),
        b"+PONG\r\n"
    );
    let (errors, _) = error_count(&mut c);
    assert_eq!(errors, cases.len() as u64 + 1);
    assert_serving(&mut s);
}

/// INFO's total_error_replies (protocol errors count, as in Valkey).
fn error_count(c: &mut redis::Connection) -> (u64, String) {
    let text: String = run(c, &["INFO", "stats"]).unwrap();
    let n = text
        .lines()
        .find_map(|l| l.strip_prefix("total_error_replies:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (n, text)
}

#[test]
fn http_requests_are_dropped() {
    let mut s = Server::start(&[]);
    // Cross-protocol scripting: Valkey closes the connection at a POST or Host: line
    // without replying to anything of that read.
    let got = send_and_collect(&s, b"GET / HTTP/1.1\r\nHost: example.com\r\nPING\r\n");
    assert_eq!(lossy(&got), "");
    let got = send_and_collect(&s, b"POST / HTTP/1.1\r\nPING\r\n");
    assert_eq!(lossy(&got), "");
    assert_serving(&mut s);
}

#[test]
fn garbage_never_kills_the_server() {
    let mut s = Server::start(&[]);
    let mut rng = fastrand::Rng::with_seed(0x007a_119b);
    let alphabet = b"*$:+-\r\n0123456789 \"'\\abcPINGSET\x00\xff";
    for round in 0..200 {
        let len = rng.usize(1..400);
        let input: Vec<u8> = (0..len)
            .map(|_| {
                if rng.bool() {
                    alphabet[rng.usize(..alphabet.len())]
                } else {
                    rng.u8(..)
                }
            })
            .collect();
        let mut r = s.raw();
        r.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let _ = r.write_all(&input);
        let mut sink = [0u8; 4096];
        // Drain whatever comes back; an incomplete request simply waits, which is fine.
        while let Ok(n) = r.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        if round % 50 == 0 {
            assert_serving(&mut s);
        }
    }
    assert_serving(&mut s);
}

#[test]
fn proto_max_bulk_len() {
    let mut s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(&mut c, &["CONFIG", "SET", "proto-max-bulk-len", "1mb"]).unwrap();
    // Exactly the limit is fine.
    let mut r = s.raw();
    let at_limit = vec![b'v'; 1024 * 1024];
    assert_eq!(
        roundtrip(&mut r, &req(&[b"SET", b"k", &at_limit])),
        b"+OK\r\n"
    );
    assert_eq!(run::<i64>(&mut c, &["STRLEN", "k"]).unwrap(), 1024 * 1024);
    // One more byte is refused as soon as the length is read.
    let got = send_and_collect(&s, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n");
    assert_eq!(lossy(&got), "-ERR Protocol error: invalid bulk length\r\n");
    assert_serving(&mut s);
    run::<()>(&mut c, &["CONFIG", "SET", "proto-max-bulk-len", "512mb"]).unwrap();
    let mut r = s.raw();
    let big = vec![b'w'; 2 * 1024 * 1024];
    assert_eq!(roundtrip(&mut r, &req(&[b"SET", b"k2", &big])), b"+OK\r\n");
}

#[test]
fn client_query_buffer_limit() {
    let mut s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "client-query-buffer-limit", "1mb"],
    )
    .unwrap();
    // Many small commands in one write are fine: each is consumed as it is parsed.
    let mut r = s.raw();
    let mut pipeline = Vec::new();
    for i in 0..40_000 {
        pipeline.extend(req(&[b"SET", format!("q{i}").as_bytes(), b"0123456789"]));
    }
    assert!(pipeline.len() > 1024 * 1024);
    let mut w = r.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&pipeline).unwrap());
    let replies = read_replies(&mut r, 40_000);
    writer.join().unwrap();
    assert!(replies.iter().all(|r| r == b"+OK\r\n"));

    // One request that keeps growing past the limit closes the connection. (A server that
    // stopped reading it without closing would fail a write at the raw socket's timeout.)
    let mut r = s.raw();
    let _ = r.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4000000\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut closed = false;
    for _ in 0..64 {
        match r.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server neither read the oversized request nor closed it: {e}")
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    if !closed {
        // All 4 MB were accepted by the socket buffers; the server must still close it.
        assert_eq!(read_to_close(&mut r), b"");
    }
    // Other clients are unaffected, the key was never set.
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    assert_eq!(run::<Option<String>>(&mut c, &["GET", "k"]).unwrap(), None);
    assert_serving(&mut s);
}

#[test]
fn maxclients() {
    let mut s = Server::start(&[]);
    let mut a = s.raw();
    assert_eq!(
        roundtrip(&mut a, &req(&[b"CONFIG", b"SET", b"maxclients", b"2"])),
        b"+OK\r\n"
    );
    // The harness's own connections (start-up checks) may not have been seen closing yet.
    assert!(
        wait_until(DEADLINE, || lossy(&roundtrip(
            &mut a,
            &req(&[b"INFO", b"clients"])
        ))
        .contains("connected_clients:1\r\n")),
        "the harness's connections never closed"
    );
    let mut b = s.raw();
    assert_eq!(roundtrip(&mut b, b"PING\r\n"), b"+PONG\r\n");
    // The third is told and closed, whatever it sends.
    for _ in 0..3 {
        let mut third = s.raw();
        let _ = third.write_all(b"PING\r\n");
        assert_eq!(
            lossy(&read_to_close(&mut third)),
            "-ERR max number of clients reached\r\n"
        );
    }
    let text = lossy(&roundtrip(&mut a, &req(&[b"INFO", b"stats"])));
    assert!(text.contains("rejected_connections:3\r\n"), "{text}");
    assert!(
        lossy(&roundtrip(&mut a, &req(&[b"INFO", b"clients"]))).contains("connected_clients:2\r\n")
    );
    // Once one leaves, a new one is admitted.
    drop(b);
    assert!(wait_until(DEADLINE, || {
        let mut n = s.raw();
        let _ = n.write_all(b"PING\r\n");
        read_to_close_or_reply(&mut n) == b"+PONG\r\n"
    }));
    assert_eq!(
        roundtrip(&mut a, &req(&[b"CONFIG", b"SET", b"maxclients", b"10000"])),
        b"+OK\r\n"
    );
    assert!(s.alive());
}

/// The first reply, or what came before the server closed.
fn read_to_close_or_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some(len) = frame_len(&buf) {
            buf.truncate(len);
            return buf;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the server has closed `s` (a reset counts), without waiting: nothing may have
/// been sent on it.
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!(
            "unexpected bytes on an idle connection: {:?}",
            lossy(&b[..n])
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("reading an idle connection: {e}"),
    }
}

#[test]
fn idle_timeout_closes_idle_connections_only() {
    let mut s = Server::start(&[]);
    // Connected (and waiting) before the setting changes: closed all the same.
    let mut early = s.raw();
    assert_eq!(roundtrip(&mut early, b"PING\r\n"), b"+PONG\r\n");
    let mut c = s.conn();
    run::<()>(&mut c, &["CONFIG", "SET", "timeout", "3"]).unwrap();
    let mut idle = s.raw();
    let mut busy = s.raw();
    // The busy one talks every 100 ms, far more often than the 3 s timeout, until the idle
    // one (connected at the same time) has been closed silently, so for longer than the
    // timeout; it is served throughout and stays open.
    let deadline = Instant::now() + DEADLINE;
    while !closed_now(&mut idle) {
        assert!(
            Instant::now() < deadline,
            "a connection idle for {DEADLINE:?} with timeout 3 is still open"
        );
        assert_eq!(roundtrip(&mut busy, b"PING\r\n"), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(roundtrip(&mut busy, b"PING\r\n"), b"+PONG\r\n");
    // Idle for longer than the one just closed: closed as well.
    assert_eq!(read_to_close(&mut early), b"");
    // The redis-rs connection that set it was idle too: closed as well. timeout 0 turns the
    // check off again.
    assert!(run::<String>(&mut c, &["PING"]).is_err());
    let mut c = s.conn();
    run::<()>(&mut c, &["CONFIG", "SET", "timeout", "0"]).unwrap();
    assert_serving(&mut s);
}

#[test]
fn binary_safe_keys_and_values_resp2_and_resp3() {
    let s = Server::start(&[]);
    let all: Vec<u8> = (0..=255u8).collect();
    for mut c in [s.conn(), s.conn3()] {
        // A key and a value holding every byte.
        redis::cmd("SET")
            .arg(&all)
            .arg(&all)
            .query::<()>(&mut c)
            .unwrap();
        let got: Vec<u8> = redis::cmd("GET").arg(&all).query(&mut c).unwrap();
        assert_eq!(got, all);
        // Each single byte as a key, spread over the cores, through MSET/MGET.
        let mut mset = redis::cmd("MSET");
        for b in 0..=255u8 {
            mset.arg(vec![b]).arg(vec![b, b'\r', b'\n', b]);
        }
        mset.query::<()>(&mut c).unwrap();
        let mut mget = redis::cmd("MGET");
        for b in 0..=255u8 {
            mget.arg(vec![b]);
        }
        let vals: Vec<Vec<u8>> = mget.query(&mut c).unwrap();
        for (b, v) in vals.iter().enumerate() {
            assert_eq!(v, &vec![b as u8, b'\r', b'\n', b as u8]);
        }
        // CRLF and protocol-looking text inside values.
        let tricky = b"\r\n$3\r\nfoo\r\n*1\r\n-ERR x\r\n\0".to_vec();
        redis::cmd("SET")
            .arg("tricky")
            .arg(&tricky)
            .query::<()>(&mut c)
            .unwrap();
        let got: Vec<u8> = redis::cmd("GET").arg("tricky").query(&mut c).unwrap();
        assert_eq!(got, tricky);
        redis::cmd("HSET")
            .arg("hash:bin")
            .arg(&tricky)
            .arg(&all)
            .query::<()>(&mut c)
            .unwrap();
        let got: Vec<u8> = redis::cmd("HGET")
            .arg("hash:bin")
            .arg(&tricky)
            .query(&mut c)
            .unwrap();
        assert_eq!(got, all);
        // 1 MiB and 16 MiB values of every byte value.
        for size in [1 << 20, 16 << 20] {
            let big: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
            redis::cmd("SET")
                .arg("big")
                .arg(&big)
                .query::<()>(&mut c)
                .unwrap();
            let got: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
            assert!(got == big, "{size}-byte value came back different");
            assert_eq!(
                redis::cmd("STRLEN")
                    .arg("big")
                    .query::<usize>(&mut c)
                    .unwrap(),
                size
            );
        }
    }
}

#[test]
fn big_value_arriving_in_small_pieces() {
    let s = Server::start(&[]);
    let mut r = s.raw();
    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let request = req(&[b"SET", b"slow", &value]);
    // Dribble the request in uneven pieces.
    let mut at = 0;
    let mut step = 1;
    while at < request.len() {
        let end = (at + step).min(request.len());
        r.write_all(&request[at..end]).unwrap();
        at = end;
        step = step * 3 + 1;
        if step > 200_000 {
            step = 7;
        }
    }
    assert_eq!(read_replies(&mut r, 1)[0], b"+OK\r\n");
    let reply = roundtrip(&mut r, &req(&[b"GET", b"slow"]));
    let header = format!("${}\r\n", value.len());
    assert!(reply.starts_with(header.as_bytes()));
    assert_eq!(&reply[header.len()..reply.len() - 2], &value[..]);
}

/// The resident and peak resident memory of process `pid`, in bytes (Linux /proc).
fn rss_and_peak(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stats_field(c: &mut redis::Connection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO stats has no {name}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn argument_headers_count_toward_the_query_buffer_limit() {
    let mut s = Server::start(&[]);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "client-query-buffer-limit", "1mb"],
    )
    .unwrap();
    assert_eq!(
        stats_field(&mut c, "client_query_buffer_limit_disconnections"),
        0
    );
    let (rss_before, _) = rss_and_peak(s.pid());
    // A count the client never fills, then empty bulks: no payload at all, but every one is
    // an argument the server holds. 64 MB of them grew the server by ~400 MB when only
    // payload bytes counted.
    let mut r = s.raw();
    r.write_all(b"*2147483647\r\n").unwrap();
    let chunk = b"$0\r\n\r\n".repeat(10_000);
    let mut sent = 0usize;
    let mut closed = false;
    while sent < 64 * 1024 * 1024 {
        match r.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server neither read the request nor closed it: {e}")
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "64 MB of empty arguments were accepted");
    // Closed without a reply, as Valkey does.
    assert_eq!(read_to_close(&mut r), b"");
    let (_, peak_after) = rss_and_peak(s.pid());
    let grown = peak_after.saturating_sub(rss_before);
    assert!(
        grown < 32 * 1024 * 1024,
        "the server grew by {grown} bytes for a 1 MB query buffer limit (sent {sent})"
    );
    assert_eq!(
        stats_field(&mut c, "client_query_buffer_limit_disconnections"),
        1
    );
    // Everyone else is served.
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    assert_serving(&mut s);
}

#[test]
fn proto_max_bulk_len_is_capped_at_what_storage_holds() {
    let mut s = Server::start(&[]);
    let mut c = s.conn();
    let e = common::err(&mut c, &["CONFIG", "SET", "proto-max-bulk-len", "4gb"]);
    assert!(
        e.contains("argument must be between 1048576 and 4293918720 inclusive"),
        "{e}"
    );
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "proto-max-bulk-len", "4293918720"],
    )
    .unwrap();
    assert_eq!(
        run::<Vec<String>>(&mut c, &["CONFIG", "GET", "proto-max-bulk-len"]).unwrap(),
        ["proto-max-bulk-len", "4293918720"]
    );
    // A bulk one byte longer than the cap is refused as the length is read.
    let got = send_and_collect(&s, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4293918721\r\n");
    assert_eq!(lossy(&got), "-ERR Protocol error: invalid bulk length\r\n");
    assert_serving(&mut s);
    // At start-up too.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tallykv-server"))
        .args(["--port", "0", "--dir"])
        .arg(dir.path())
        .args(["--proto-max-bulk-len", "5gb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = lossy(&out.stderr);
    assert!(
        stderr.contains("argument must be between 1048576 and 4293918720 inclusive"),
        "{stderr}"
    );
}

#[test]
fn a_key_longer_than_storage_holds_is_refused_and_the_node_persists_the_rest() {
    let mut s = Server::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut c = s.conn();
    let long = "k".repeat(70_000);
    let longest = "m".repeat(65_517);
    let too_long = "ERR key is too long: keys of a write command are at most 65517 bytes";
    assert_eq!(common::err(&mut c, &["SET", &long, "v"]), too_long);
    assert_eq!(common::err(&mut c, &["RPUSH", &long, "a"]), too_long);
    assert_eq!(
        common::err(&mut c, &["MSET", "a", "1", &long, "2"]),
        too_long
    );
    let e = common::err(
        &mut c,
        &["EVAL", "return redis.call('SET', KEYS[1], 'v')", "1", &long],
    );
    assert!(e.starts_with(too_long), "{e}");
    // Reads of such a key just find nothing; the longest key storage holds works.
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", &long]).unwrap(),
        None
    );
    run::<()>(&mut c, &["SET", &longest, "v1"]).unwrap();
    assert_eq!(int(&mut c, &["HSET", "h", "f", "v"]), 1);
    // A refused command dooms its transaction.
    run::<()>(&mut c, &["MULTI"]).unwrap();
    let _ = run::<redis::Value>(&mut c, &["SET", &long, "v"]);
    assert!(common::err(&mut c, &["EXEC"]).starts_with("EXECABORT"));
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", &long]).unwrap(),
        None
    );
    // Storage kept writing: everything acknowledged comes back after a restart.
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", &longest]).unwrap(),
        Some("v1".to_string())
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["HGET", "h", "f"]).unwrap(),
        Some("v".to_string())
    );
    assert_eq!(int(&mut c, &["EXISTS", &long]), 0);
    assert_serving(&mut s);
}

/// A client that must still authenticate may send requests of at most 10 arguments of at
/// most 16 KiB each (Valkey's limits against CVE-2021-32675); an AUTH lifts them for the
/// requests pipelined right behind it, and a node without a password has no such limits.
#[test]
fn unauthenticated_clients_get_small_requests_only() {
    let mut s = Server::start(&["--requirepass", "pw-for-limits"]);
    let big = vec![b'v'; 16 * 1024 + 1];
    let eleven: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 11).collect();
    for (request, error) in [
        (req(&eleven), "unauthenticated multibulk length"),
        (req(&[b"AUTH", &big]), "unauthenticated bulk length"),
    ] {
        let mut r = s.raw();
        r.write_all(&request).unwrap();
        assert_eq!(
            lossy(&read_to_close(&mut r)),
            format!("-ERR Protocol error: {error}\r\n")
        );
    }
    // At the limits: answered (NOAUTH), not refused.
    let mut r = s.raw();
    let ten: Vec<&[u8]> = std::iter::once(&b"DEL"[..])
        .chain(std::iter::repeat_n(&b"x"[..], 9))
        .collect();
    assert!(lossy(&roundtrip(&mut r, &req(&ten))).starts_with("-NOAUTH"));
    let at_limit = vec![b'v'; 16 * 1024];
    assert!(lossy(&roundtrip(&mut r, &req(&[b"ECHO", &at_limit]))).starts_with("-NOAUTH"));
    // AUTH, then a big SET in the same write.
    let mut pipeline = req(&[b"AUTH", b"pw-for-limits"]);
    pipeline.extend_from_slice(&req(&[b"SET", b"k", &big]));
    pipeline.extend_from_slice(&req(&[b"STRLEN", b"k"]));
    r.write_all(&pipeline).unwrap();
    let replies = read_replies(&mut r, 3);
    assert_eq!(replies, [&b"+OK\r\n"[..], b"+OK\r\n", b":16385\r\n"]);
    assert!(s.alive(), "the server process died");
}
