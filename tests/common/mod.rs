//! Test harness: starts the real `tallykv-server` binary on a free port and hands out
//! redis-rs connections to it. The server is killed when the handle drops.

#![allow(dead_code)]

use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod load;
pub mod netproxy;

pub struct Server {
    child: Child,
    pub port: u16,
    /// The data dir (`--dir`); removed on drop when the harness created it.
    pub dir: std::path::PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
    args: Vec<String>,
}

/// A port that was free a moment ago (the server is retried on another if it is taken).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl Server {
    /// Starts a server with the default configuration plus `args` (`--directive value` pairs,
    /// after a config file if the first one is not an option).
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Self::start_in(dir.path(), args);
        s._owned_dir = Some(dir);
        s
    }

    /// Starts a server on an existing data dir (not removed on drop).
    pub fn start_in(dir: &std::path::Path, args: &[&str]) -> Server {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for _ in 0..5 {
            if let Some((child, port)) = Self::try_spawn(dir, &args) {
                let s = Server {
                    child,
                    port,
                    dir: dir.to_path_buf(),
                    _owned_dir: None,
                    args,
                };
                s.wait_loaded();
                return s;
            }
        }
        panic!("tallykv-server did not start after 5 attempts");
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same dir with the same arguments (after `kill9` or an
    /// exit), on a fresh port; returns once it answers PING (it may still be loading: see
    /// `wait_loaded`).
    pub fn restart(&mut self) {
        self.kill9();
        for _ in 0..5 {
            if let Some((child, port)) = Self::try_spawn(&self.dir, &self.args) {
                self.child = child;
                self.port = port;
                return;
            }
        }
        panic!("tallykv-server did not restart after 5 attempts");
    }

    /// Waits until INFO persistence says loading:0 (bounded).
    pub fn wait_loaded(&self) {
        let mut c = self.conn();
        if let Some(i) = self.args.iter().position(|a| a == "--requirepass") {
            let _: redis::RedisResult<String> =
                redis::cmd("AUTH").arg(&self.args[i + 1]).query(&mut c);
        }
        let loaded = wait_until(Duration::from_secs(60), || {
            match redis::cmd("INFO")
                .arg("persistence")
                .query::<String>(&mut c)
            {
                Ok(info) => info.lines().any(|l| l == "loading:0"),
                // A password-protected server: its tests authenticate themselves.
                Err(e) => e.code() == Some("NOAUTH"),
            }
        });
        assert!(loaded, "the server was still loading after 60 s");
    }

    /// Spawns the binary and waits until it answers PING; None if it exited first.
    // try_wait() returning Some has reaped the child; the other paths wait or hand it to Drop.
    #[allow(clippy::zombie_processes)]
    fn try_spawn(dir: &std::path::Path, args: &[String]) -> Option<(Child, u16)> {
        let port = free_port();
        // A config file must be the first argument.
        let (file, args) = match args.split_first() {
            Some((first, rest)) if !first.starts_with("--") => (Some(first), rest),
            _ => (None, args),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tallykv-server"));
        cmd.args(file)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir)
            .args(["--loglevel", "warning"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !args.iter().any(|a| a == "--threads") {
            cmd.args(["--threads", "2"]);
        }
        let mut child = cmd.spawn().expect("spawn tallykv-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // exited: most likely the port was taken meanwhile
            }
            if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                && let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING")
                    .query::<String>(&mut c)
                    .map_or_else(|e| e.code() == Some("NOAUTH"), |_| true)
            {
                return Some((child, port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A RESP2 connection.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c
    }

    /// A RESP3 connection (HELLO 3).
    pub fn conn3(&self) -> redis::Connection {
        let client = redis::Client::open(format!("{}?protocol=resp3", self.url())).expect("client");
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c
    }

    /// A raw TCP stream, for protocol-level tests. Reads and writes time out after
    /// [`DEADLINE`], so a server that stops answering (or reading) fails the test instead of
    /// hanging it.
    pub fn raw(&self) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        s.set_write_timeout(Some(DEADLINE)).expect("timeout");
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command and returns its result (reply or server error) for exact comparisons.
pub fn run<T: redis::FromRedisValue>(
    c: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// The full error text of a failing command (e.g. "ERR syntax error").
pub fn err(c: &mut redis::Connection, args: &[&str]) -> String {
    match run::<redis::Value>(c, args) {
        Ok(v) => panic!("expected an error from {args:?}, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// The error's code and message joined the way the server sent them.
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// How long a test waits for a condition that normally holds within milliseconds to a few
/// seconds (a key expiring, a connection closing, a server exiting, a new leader). Generous on
/// purpose: CI's two cores are shared with other builds, and a stall there must never decide
/// a test. Tests assert on what happened, never on how fast; speed is for `benches/`.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The values `TTL` may read soon after a key was given `secs` seconds: `secs` itself (TTL
/// rounds), down to [`DEADLINE`] less, so a stall between setting and reading on a busy
/// machine never decides a test. Narrow enough to tell a TTL that was set from one kept or
/// left alone, which is what the tests check.
pub fn ttl_after(secs: i64) -> RangeInclusive<i64> {
    secs - DEADLINE.as_secs() as i64..=secs
}

/// As [`ttl_after`], for `PTTL` after `ms` milliseconds.
pub fn pttl_after(ms: i64) -> RangeInclusive<i64> {
    ms - DEADLINE.as_millis() as i64..=ms
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Wall-clock Unix milliseconds, for absolute expiry arguments.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Asserts that a command replies +OK.
pub fn ok(c: &mut redis::Connection, args: &[&str]) {
    assert_eq!(
        run::<redis::Value>(c, args).unwrap(),
        redis::Value::Okay,
        "{args:?}"
    );
}

/// Runs a command that must reply with an integer.
pub fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    run::<i64>(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

impl Server {
    /// Waits up to `timeout` for the process to exit by itself (SHUTDOWN, SIGTERM, a fatal
    /// error); its exit status, or None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Copies the directory tree `src` to `dst` (a data dir or snapshot, to start a server on).
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to)
                .unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        }
    }
}

impl Server {
    /// Starts a script that never ends (`while 1 do end`, declaring `key`) on a raw
    /// connection of its own, returned so the caller can read its reply once it is killed.
    pub fn start_runaway_script(&self, key: &str) -> std::net::TcpStream {
        use std::io::Write;
        let mut runner = self.raw();
        let spin = "while 1 do end";
        let key_len = key.len();
        runner
            .write_all(
                format!(
                    "*4\r\n$4\r\nEVAL\r\n${}\r\n{spin}\r\n$1\r\n1\r\n${key_len}\r\n{key}\r\n",
                    spin.len()
                )
                .as_bytes(),
            )
            .unwrap();
        runner
    }

    /// A raw connection with a short read timeout, for commands that may wait on a busy core.
    pub fn raw_short(&self) -> std::net::TcpStream {
        let t = self.raw();
        t.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        t
    }
}

/// What one read of a raw connection returns (None: nothing within its read timeout).
pub fn read_some(t: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    match t.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// What a raw connection reads next, waiting up to DEADLINE (a script's reply once it ends).
pub fn next_reply(t: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    t.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 256];
    let n = t.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The core (of 2, the harness's `--threads 2`) that owns `key`.
pub fn core_of(key: &str) -> usize {
    use tallykv::cluster::{SLOT_COUNT, key_slot};
    usize::from(key_slot(key.as_bytes()) as usize >= SLOT_COUNT / 2)
}

/// The first `prefix{n}` that lives on `core` (of 2).
pub fn key_on(core: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| core_of(k) == core)
        .expect("some key lands on every core")
}

/// The JSON lines of a file (an audit log), parsed; none while it does not exist.
pub fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
