//! Closed-loop `INCR` load on a Redis Cluster (tallykv or redis-server), optionally with
//! `WAIT 1 0` after every batch: the client of `benches/cluster.py`'s "py" part.
//!
//! redis-benchmark cannot send `WAIT`, and a Python client capped redis at a fraction of what
//! redis-benchmark reaches, so "redis cluster + WAIT" was measured with a slower client than
//! everything it was compared with. This one is as lean as redis-benchmark: one thread (as
//! redis-benchmark), one event loop, pre-encoded commands, buffers reused across batches.
//!
//! It reads CLUSTER SLOTS from the seed node, routes keys `wk:<i>` (i < --keys) to their slot's
//! primary, and opens --clients connections round-robin over the primaries, each writing only
//! keys its primary owns (so nothing is redirected). Each connection loops: send --pipeline
//! `INCR <random owned key>` (and `WAIT 1 0` with --wait), read all the replies, repeat. A batch
//! counts (its INCRs towards rps, its latency, send to last reply, towards the percentiles) if
//! it started after --warmup and completed before the end of the run.
//!
//! Prints one JSON line: `{"rps":..,"p50_ms":..,"p99_ms":..,"errors":..,"error_samples":[..],
//! "wait_short":..,"conn_errors":..}` (`wait_short`: WAIT replies of `:0`, no replica
//! acknowledged; p50/p99 are `null` if no batch counted).
//!
//! `--workload slidewin` sends, instead of one INCR, one sliding-window-log rate-limit check
//! as a transaction on the key `sw:<i>`, as limiter libraries that keep sorted sets do:
//!
//!     MULTI
//!     ZADD sw:<i> <now ms> <now ms>-<client>-<n>   this request
//!     ZREMRANGEBYSCORE sw:<i> -inf <now ms - 60000> requests older than the window
//!     ZCARD sw:<i>                                  requests in the window
//!     PEXPIRE sw:<i> 60000                          the log goes with the last request
//!     EXEC
//!
//! (an op is the whole transaction). `--workload evalsha --script FILE` loads FILE on every
//! primary (SCRIPT LOAD) and sends `EVALSHA <sha> 1 mw:<i> 1700000000 100 60 1` per op: the
//! arguments of the `limits` library's moving-window script (timestamp, limit, expiry,
//! amount), as benches/collections.py gives it to redis-benchmark. `--standalone` sends everything to --port without asking
//! for CLUSTER SLOTS (a standalone tallykv or redis-server).
//!
//!     cargo build --release --example waitload
//!     target/release/examples/waitload --port 7000 --clients 50 --pipeline 16 --wait
//!     target/release/examples/waitload --port 6379 --standalone --workload slidewin

use std::collections::BTreeMap;
use std::process::exit;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tallykv::cluster::key_slot;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "common/cluster_slots.rs"]
mod cluster_slots;
#[path = "common/replies.rs"]
mod replies;
use cluster_slots::slot_owners;
use replies::{Replies, Reply, json_string};

const USAGE: &str = "usage: waitload --port P [--clients N] [--pipeline P] [--wait] \
                     [--warmup S] [--seconds S] [--keys K] [--workload incr|slidewin|evalsha] \
                     [--script FILE] [--standalone]";

/// The sliding window of `--workload slidewin`, in ms.
const WINDOW_MS: u64 = 60_000;

/// `WAIT 1 0`: return once one replica has acknowledged this connection's last write.
const WAIT_CMD: &[u8] = b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n";

/// How long a connection may still be waiting for its last batch after the run: past that it
/// is reported as a connection error instead of hanging the benchmark.
const STUCK_AFTER_END: Duration = Duration::from_secs(30);

/// Error replies and connection errors kept as examples.
const MAX_SAMPLES: usize = 3;

/// A primary's keys as pre-encoded RESP bulk strings, shared by the connections bound to it.
type Commands = Rc<[Box<[u8]>]>;

/// What one op of the load is.
#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// `INCR key`.
    Incr,
    /// A sliding-window-log check in MULTI/EXEC (see the module doc).
    SlideWin,
    /// EVALSHA of `--script` (see the module doc).
    EvalSha,
}

/// The command line.
struct Args {
    port: u16,
    clients: usize,
    pipeline: usize,
    wait: bool,
    warmup: f64,
    seconds: f64,
    keys: usize,
    workload: Workload,
    script: Option<String>,
    standalone: bool,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            port: 0,
            clients: 50,
            pipeline: 1,
            wait: false,
            warmup: 0.5,
            seconds: 5.0,
            keys: 100_000,
            workload: Workload::Incr,
            script: None,
            standalone: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--wait" {
                args.wait = true;
                continue;
            }
            if flag == "--standalone" {
                args.standalone = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag}: bad value {value:?}");
            match flag.as_str() {
                "--port" => args.port = value.parse().map_err(|_| bad())?,
                "--clients" => args.clients = value.parse().map_err(|_| bad())?,
                "--pipeline" => args.pipeline = value.parse().map_err(|_| bad())?,
                "--keys" => args.keys = value.parse().map_err(|_| bad())?,
                "--warmup" => args.warmup = value.parse().map_err(|_| bad())?,
                "--seconds" => args.seconds = value.parse().map_err(|_| bad())?,
                "--workload" => {
                    args.workload = match value.as_str() {
                        "incr" => Workload::Incr,
                        "slidewin" => Workload::SlideWin,
                        "evalsha" => Workload::EvalSha,
                        _ => return Err(bad()),
                    }
                }
                "--script" => args.script = Some(value),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if args.port == 0 {
            return Err("--port is required".into());
        }
        if (args.workload == Workload::EvalSha) != args.script.is_some() {
            return Err("--script goes with --workload evalsha, and only with it".into());
        }
        if args.clients == 0 || args.pipeline == 0 || args.keys == 0 {
            return Err("--clients, --pipeline and --keys must be positive".into());
        }
        if !(args.warmup >= 0.0 && args.seconds > 0.0) {
            return Err("--warmup must be >= 0 and --seconds > 0".into());
        }
        Ok(args)
    }
}

fn main() {
    let args = Args::parse().unwrap_or_else(|e| {
        eprintln!("waitload: {e}\n{USAGE}");
        exit(2)
    });
    // One thread, like redis-benchmark: a client with more cores would not be a fair comparison.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("waitload: cannot start the runtime: {e}");
            exit(1)
        });
    let local = tokio::task::LocalSet::new();
    match runtime.block_on(local.run_until(run(&args))) {
        Ok(totals) => println!("{}", totals.json(args.seconds)),
        Err(e) => {
            eprintln!("waitload: {e}");
            exit(1)
        }
    }
}

/// What one connection counted; summed over all connections at the end.
#[derive(Default)]
struct Stats {
    ops: u64,
    /// Batch latencies in nanoseconds (only batches inside the measured window).
    latencies: Vec<u64>,
    errors: u64,
    samples: Vec<String>,
    wait_short: u64,
    conn_errors: u64,
}

impl Stats {
    fn sample(&mut self, s: String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(s);
        }
    }

    fn add(&mut self, other: Stats) {
        self.ops += other.ops;
        self.latencies.extend_from_slice(&other.latencies);
        self.errors += other.errors;
        self.wait_short += other.wait_short;
        self.conn_errors += other.conn_errors;
        for s in other.samples {
            self.sample(s);
        }
    }

    /// The one output line; percentiles as benches/cluster.py computes them (nearest rank).
    fn json(mut self, seconds: f64) -> String {
        self.latencies.sort_unstable();
        let pct = |p: usize| {
            let n = self.latencies.len();
            if n == 0 {
                return "null".to_string();
            }
            format!(
                "{:.3}",
                self.latencies[(n * p / 100).min(n - 1)] as f64 / 1e6
            )
        };
        let samples: Vec<String> = self.samples.iter().map(|s| json_string(s)).collect();
        format!(
            "{{\"rps\":{:.1},\"p50_ms\":{},\"p99_ms\":{},\"errors\":{},\"error_samples\":[{}],\
             \"wait_short\":{},\"conn_errors\":{}}}",
            self.ops as f64 / seconds,
            pct(50),
            pct(99),
            self.errors,
            samples.join(","),
            self.wait_short,
            self.conn_errors
        )
    }
}

/// Routes the keys, connects everything, then runs all connections on this thread.
async fn run(args: &Args) -> Result<Stats, String> {
    let owners = if args.standalone {
        vec![Some(args.port); tallykv::cluster::SLOT_COUNT]
    } else {
        slot_owners(args.port).await?
    };
    let prefix = match args.workload {
        Workload::Incr => "wk",
        Workload::SlideWin => "sw",
        Workload::EvalSha => "mw",
    };
    // Per primary (by port, so the round robin is stable), its keys, pre-encoded.
    let mut by_primary: BTreeMap<u16, Vec<Box<[u8]>>> = BTreeMap::new();
    for i in 0..args.keys {
        let key = format!("{prefix}:{i}");
        let slot = key_slot(key.as_bytes()) as usize;
        let port = owners[slot].ok_or_else(|| format!("slot {slot} has no primary"))?;
        by_primary
            .entry(port)
            .or_default()
            .push(bulk(key.as_bytes()));
    }
    let primaries: Vec<(u16, Commands)> = by_primary
        .into_iter()
        .map(|(port, cmds)| (port, cmds.into()))
        .collect();
    // EVALSHA's command head, once the script is loaded on every primary.
    let mut head: Rc<[u8]> = Rc::from(&b""[..]);
    if let Some(path) = &args.script {
        let body = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let mut sha = None;
        for (port, _) in &primaries {
            sha = Some(script_load(*port, &body).await?);
        }
        let sha = sha.ok_or("no primary")?;
        let mut h = b"*8\r\n$7\r\nEVALSHA\r\n".to_vec();
        put_bulk(&mut h, sha.as_bytes());
        h.extend_from_slice(b"$1\r\n1\r\n");
        head = h.into();
    }

    // Connect every client before the clock starts, so setup is not measured.
    let mut streams = Vec::with_capacity(args.clients);
    let mut totals = Stats::default();
    for i in 0..args.clients {
        let (port, cmds) = &primaries[i % primaries.len()];
        match TcpStream::connect(("127.0.0.1", *port)).await {
            Ok(s) => {
                s.set_nodelay(true)
                    .map_err(|e| format!("TCP_NODELAY: {e}"))?;
                streams.push((s, cmds.clone()));
            }
            Err(e) => {
                totals.conn_errors += 1;
                totals.sample(format!("connect 127.0.0.1:{port}: {e}"));
            }
        }
    }

    let begin = Instant::now();
    let window = Window {
        measure: begin + Duration::from_secs_f64(args.warmup),
        end: begin + Duration::from_secs_f64(args.warmup + args.seconds),
    };
    let expected_batches = (args.seconds * 200_000.0 / args.pipeline as f64) as usize;
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(id, (stream, cmds))| {
            let client = Client {
                id,
                stream,
                cmds,
                head: head.clone(),
                workload: args.workload,
                pipeline: args.pipeline,
                wait: args.wait,
                window,
                // Room for a fast run's share of latencies up front: no growth in the loop.
                stats: Stats {
                    latencies: Vec::with_capacity(expected_batches / args.clients + 1),
                    ..Stats::default()
                },
            };
            tokio::task::spawn_local(client.run())
        })
        .collect();
    for task in tasks {
        let stats = task.await.map_err(|e| format!("client task failed: {e}"))?;
        totals.add(stats);
    }
    Ok(totals)
}

/// The measured part of the run: batches started at or after `measure` and completed by `end`.
#[derive(Clone, Copy)]
struct Window {
    measure: Instant,
    end: Instant,
}

/// One connection, bound to one primary and the keys it owns.
struct Client {
    id: usize,
    stream: TcpStream,
    cmds: Commands,
    /// The command up to the key (EVALSHA).
    head: Rc<[u8]>,
    workload: Workload,
    pipeline: usize,
    wait: bool,
    window: Window,
    stats: Stats,
}

impl Client {
    async fn run(mut self) -> Stats {
        let deadline = tokio::time::Instant::from_std(self.window.end + STUCK_AFTER_END);
        let mut stats = std::mem::take(&mut self.stats);
        match tokio::time::timeout_at(deadline, self.batches(&mut stats)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stats.conn_errors += 1;
                stats.sample(e);
            }
            Err(_) => {
                stats.conn_errors += 1;
                stats.sample(format!("no reply {STUCK_AFTER_END:?} after the end"));
            }
        }
        stats
    }

    /// The send/read loop until the end of the run.
    async fn batches(&mut self, stats: &mut Stats) -> Result<(), String> {
        let mut rng = fastrand::Rng::new();
        let mut batch = Vec::with_capacity(64 * (self.pipeline + 1));
        // Larger than any batch's replies.
        let mut replies = Replies::with_capacity(64 * 1024);
        // Replies per op: INCR's one; MULTI's +OK, four +QUEUED and EXEC's array.
        let per_op = match self.workload {
            Workload::Incr => 1,
            Workload::SlideWin => 6,
            Workload::EvalSha => 1,
        };
        let expect = self.pipeline * per_op + usize::from(self.wait);
        let mut n = 0u64;
        loop {
            let start = Instant::now();
            if start >= self.window.end {
                return Ok(());
            }
            batch.clear();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            for _ in 0..self.pipeline {
                let key = &self.cmds[rng.usize(..self.cmds.len())];
                match self.workload {
                    Workload::Incr => {
                        batch.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n");
                        batch.extend_from_slice(key);
                    }
                    Workload::EvalSha => {
                        batch.extend_from_slice(&self.head);
                        batch.extend_from_slice(key);
                        batch.extend_from_slice(MOVING_WINDOW_ARGS);
                    }
                    Workload::SlideWin => {
                        n += 1;
                        slide_window(
                            &mut batch,
                            key,
                            now_ms,
                            &format!("{now_ms}-{}-{n}", self.id),
                        );
                    }
                }
            }
            if self.wait {
                batch.extend_from_slice(WAIT_CMD);
            }
            self.stream
                .write_all(&batch)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut last_was_zero = false;
            for _ in 0..expect {
                last_was_zero = false;
                match replies.next(&mut self.stream).await? {
                    Reply::Simple => {}
                    Reply::Int(n) => last_was_zero = n == 0,
                    Reply::Error(e) => {
                        stats.errors += 1;
                        stats.sample(e);
                    }
                    // EXEC's: a null array (a WATCH failed; none here) would be an error.
                    Reply::Array { nils: 0 } if self.workload == Workload::SlideWin => {}
                    // The moving window's verdict: true (1) or false (nil).
                    Reply::Nil if self.workload == Workload::EvalSha => {}
                    // INCR and WAIT only ever answer with an integer (or an error).
                    _ => return Err("unexpected reply: not an integer or a status".into()),
                }
            }
            let done = Instant::now();
            if self.wait && last_was_zero {
                stats.wait_short += 1;
            }
            if start >= self.window.measure && done <= self.window.end {
                stats.ops += self.pipeline as u64;
                stats.latencies.push((done - start).as_nanos() as u64);
            }
        }
    }
}

/// The arguments after the key of the moving-window EVALSHA: timestamp, limit, expiry, amount.
const MOVING_WINDOW_ARGS: &[u8] = b"$10\r\n1700000000\r\n$3\r\n100\r\n$2\r\n60\r\n$1\r\n1\r\n";

/// SCRIPT LOAD `body` on the node at `port`; its sha.
async fn script_load(port: u16, body: &[u8]) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect {port}: {e}"))?;
    let mut cmd = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n".to_vec();
    put_bulk(&mut cmd, body);
    stream
        .write_all(&cmd)
        .await
        .map_err(|e| format!("SCRIPT LOAD on {port}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    // `$40\r\n<sha>\r\n`
    while !(buf.len() >= 47 || buf.first() == Some(&b'-') && buf.ends_with(b"\r\n")) {
        use tokio::io::AsyncReadExt;
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("SCRIPT LOAD on {port}: {e}"))?;
        if n == 0 {
            return Err(format!("SCRIPT LOAD on {port}: connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !buf.starts_with(b"$40\r\n") {
        return Err(format!(
            "SCRIPT LOAD on {port}: {}",
            String::from_utf8_lossy(&buf)
        ));
    }
    Ok(String::from_utf8_lossy(&buf[5..45]).into_owned())
}

/// A key as a RESP bulk string, encoded once so the loop only copies bytes.
fn bulk(key: &[u8]) -> Box<[u8]> {
    let mut out = format!("${}\r\n", key.len()).into_bytes();
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
    out.into_boxed_slice()
}

fn put_bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// One sliding-window-log check on `key` (a pre-encoded bulk) as a transaction.
fn slide_window(out: &mut Vec<u8>, key: &[u8], now_ms: u64, member: &str) {
    let now = now_ms.to_string();
    let oldest = now_ms.saturating_sub(WINDOW_MS).to_string();
    out.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    out.extend_from_slice(b"*4\r\n$4\r\nZADD\r\n");
    out.extend_from_slice(key);
    put_bulk(out, now.as_bytes());
    put_bulk(out, member.as_bytes());
    out.extend_from_slice(b"*4\r\n$16\r\nZREMRANGEBYSCORE\r\n");
    out.extend_from_slice(key);
    put_bulk(out, b"-inf");
    put_bulk(out, oldest.as_bytes());
    out.extend_from_slice(b"*2\r\n$5\r\nZCARD\r\n");
    out.extend_from_slice(key);
    out.extend_from_slice(b"*3\r\n$7\r\nPEXPIRE\r\n");
    out.extend_from_slice(key);
    put_bulk(out, WINDOW_MS.to_string().as_bytes());
    out.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
}
