//! Shared by the card crate's integration tests: the `tallykv-card` binary, and real
//! Redis-compatible servers to run it against. The helpers are client-side and must work
//! against any such server, so the tests start Debian's `redis-server` (a standalone server,
//! or three of them as a cluster) on free ports; a missing `redis-server` fails the tests.
// Each test file uses some of these helpers, never all.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Runs `tallykv-card` with `args`, feeding it `stdin`; `TALLYKV_CARD_KEYRING` is cleared
/// unless given in `env`.
pub fn card(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tallykv-card"));
    cmd.args(args)
        .env_remove("TALLYKV_CARD_KEYRING")
        .env_remove("REDISCLI_AUTH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tallykv-card");
    // A child that exits before reading all of stdin closes the pipe: not an error here.
    let _ = child.stdin.take().expect("piped stdin").write_all(stdin);
    child.wait_with_output().expect("waiting for tallykv-card")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a new keyring file with `tallykv-card keygen` and returns its path.
pub fn keygen(dir: &Path) -> String {
    let path = dir
        .join("keyring.json")
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    let out = card(&["keygen", "--out", &path], b"", &[]);
    assert!(out.status.success(), "keygen: {}", stderr(&out));
    path
}

/// A port that is free, and whose cluster bus port (+10000) is free too. Ports are handed
/// out from a per-process range so that parallel tests in one binary never share one.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 40,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 55_000, "no free port found");
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> RedisServer {
        let bin = std::env::var("TALLYKV_CARD_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let child = Command::new(&bin)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--dir", dir.path().to_str().expect("utf-8 temp path")])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => panic!(
                    "cannot start {bin}: {e}. These tests need a Redis-compatible server binary: \
                     `apt-get install redis-server`, or set TALLYKV_CARD_REDIS_SERVER"
                ),
            };
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            if server.wait_ready() {
                return server;
            }
            // Lost a race for the port with another process: try another.
        }
        panic!("{bin} did not start on any of 5 ports");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut con) = redis::Client::open(self.url()).and_then(|c| c.get_connection())
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three `redis-server` primaries forming a cluster, each owning a third of the slots.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
            })
            .collect();
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (lo, hi)) in nodes.iter().zip(ranges) {
            let mut con = node.con();
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(lo)
                .arg(hi)
                .exec(&mut con)
                .expect("ADDSLOTSRANGE");
        }
        let mut first = nodes[0].con();
        for node in &nodes[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .exec(&mut first)
                .expect("MEET");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = nodes.iter().all(|n| {
                let mut con = n.con();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut con)
                    .unwrap_or_default();
                let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query(&mut con)
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && slots.len() == 3
            });
            if ready {
                return RedisCluster { nodes };
            }
            assert!(
                Instant::now() < deadline,
                "the redis-server cluster did not form"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A cluster connection through redis-rs.
    pub fn con(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("cluster client")
            .get_connection()
            .expect("cluster connection")
    }
}
