//! Card-authorization load on a Redis Cluster (tallykv or redis-server), optionally with
//! `WAIT 1 0` after each node's pipeline: issue 9's "payment mix", the client of
//! `benches/paymix.py`.
//!
//! One authorization of card c at merchant m for <cents> (uniform in 1.00-500.00), with a fresh
//! idempotency id, is these 12 commands; hash tags put an authorization's keys in three slots
//! (the id's, the card's, the merchant's):
//!
//!     SET     idem:{<id>} 1 NX PX 86400000    idempotency: the first attempt wins
//!     GET     card:{c<c>}                     the cached card (a ~100-byte blob, preloaded)
//!     INCR    vel:{c<c>}:1m                   card velocity, 1-minute window...
//!     PEXPIRE vel:{c<c>}:1m 60000 NX          ...started by its first authorization
//!     INCR    vel:{c<c>}:1h                   card velocity, 1-hour window
//!     PEXPIRE vel:{c<c>}:1h 3600000 NX
//!     INCRBY  amt:{c<c>}:1d <cents>           card spend, 1 day
//!     PEXPIRE amt:{c<c>}:1d 86400000 NX
//!     HMGET   mprof:{m<m>} mcc country risk   the merchant's profile (a hash, preloaded)
//!     HINCRBY mstat:{m<m>} count 1            merchant daily stats
//!     HINCRBY mstat:{m<m>} cents <cents>
//!     PEXPIRE mstat:{m<m>} 86400000 NX
//!
//! i.e. SET NX PX x1, INCR x2, PEXPIRE NX x4, INCRBY x1, HINCRBY x2 (10 writes), GET x1, HMGET x1
//! (2 reads). Cards (--cards, default 1M) and merchants (--merchants, default 100k) are drawn
//! Zipf-distributed with exponent --zipf (default 1.0: the hottest card takes ~7% of the
//! authorizations, the hottest merchant ~8%), by rand_distr's `Zipf`.
//!
//! The commands of an authorization are grouped by the primary that owns their slot (CLUSTER
//! SLOTS of the seed, keys routed by CRC16, so nothing is redirected): one pipeline per node, in
//! the order above, 1 to 3 pipelines. With --wait, `WAIT 1 0` ends each pipeline (the
//! connection's writes are on >= 1 replica). All pipelines are written, then all replies read:
//! the authorization completes when every node has answered, and its latency runs from the first
//! write to the last reply.
//!
//! Connections: --clients (default 50) closed-loop clients, each one authorization in flight on
//! its own connection to every primary (clients x primaries connections), all on one thread with
//! one event loop, like waitload and redis-benchmark. Command names and constant arguments are
//! encoded once; per authorization only keys and numbers are written, into reused buffers.
//!
//! --preload first writes every `card:{c<c>}` (SET) and `mprof:{m<m>}` (HSET), not timed, with
//! deep pipelines, sending refused keys again (preload.rs); `--seconds 0` stops after it.
//!
//! A run counts the authorizations that started after --warmup and completed before the end.
//! `errors` counts error replies, `SET NX` finding its id taken, unexpected replies and WAIT
//! replies of `:0` (also counted alone in `wait_short`); an authorization with any of those is
//! failed: counted in `failed_auths`, not in `auths`, `auths_per_s` nor the percentiles
//! (`null` if no authorization counted). `misses` counts a GET or HMGET that found no preloaded
//! value (not a failure). Prints one JSON line: `{"auths_per_s":..,"commands_per_s":..,
//! "p50_ms":..,"p99_ms":..,"p999_ms":..,"auths":..,"failed_auths":..,"pipelines_per_auth":..,
//! "errors":..,"error_samples":[..],"wait_short":..,"misses":..,"conn_errors":..,"preload_s":..,
//! "preload_retries":..,"preload_restarts":..,"preload_refusal":..}` (only the preload fields
//! with `--seconds 0`; `null` without --preload). `preload_retries`: keys sent again after a
//! refusal such as CLUSTERDOWN; `preload_restarts`: passes started over after a MOVED;
//! `preload_refusal`: the first of those.
//!
//!     cargo build --release --example paymix
//!     target/release/examples/paymix --port 7000 --preload --seconds 0
//!     target/release/examples/paymix --port 7000 --clients 50 --seconds 5 --wait

use std::process::exit;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tallykv::cluster::{SLOT_COUNT, key_slot};

#[path = "../common/cluster_slots.rs"]
mod cluster_slots;
mod preload;
#[path = "../common/replies.rs"]
mod replies;
mod resp;
mod stats;

use cluster_slots::slot_owners;
use preload::preload;
use resp::{Conn, Encoded, Expect, bulk_int, key, tag};
use stats::{Stats, preload_json_fields};

const USAGE: &str = "usage: paymix --port P [--clients N] [--wait] [--warmup S] [--seconds S] \
                     [--cards N] [--merchants N] [--zipf S] [--preload] [--seed N]";

/// Commands per authorization (WAIT not included).
const COMMANDS_PER_AUTH: u64 = 12;

/// How long a client may still be waiting for its last authorization after the run: past that
/// it is reported as a connection error instead of hanging the benchmark.
const STUCK_AFTER_END: Duration = Duration::from_secs(30);

/// The command line.
struct Args {
    port: u16,
    clients: usize,
    wait: bool,
    warmup: f64,
    seconds: f64,
    cards: u64,
    merchants: u64,
    zipf: f64,
    preload: bool,
    seed: u64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            port: 0,
            clients: 50,
            wait: false,
            warmup: 0.5,
            seconds: 5.0,
            cards: 1_000_000,
            merchants: 100_000,
            zipf: 1.0,
            preload: false,
            seed: clock_seed(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--wait" => args.wait = true,
                "--preload" => args.preload = true,
                _ => {
                    let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    let bad = || format!("{flag}: bad value {value:?}");
                    match flag.as_str() {
                        "--port" => args.port = value.parse().map_err(|_| bad())?,
                        "--clients" => args.clients = value.parse().map_err(|_| bad())?,
                        "--warmup" => args.warmup = value.parse().map_err(|_| bad())?,
                        "--seconds" => args.seconds = value.parse().map_err(|_| bad())?,
                        "--cards" => args.cards = value.parse().map_err(|_| bad())?,
                        "--merchants" => args.merchants = value.parse().map_err(|_| bad())?,
                        "--zipf" => args.zipf = value.parse().map_err(|_| bad())?,
                        "--seed" => args.seed = value.parse().map_err(|_| bad())?,
                        _ => return Err(format!("unknown option {flag}")),
                    }
                }
            }
        }
        if args.port == 0 {
            return Err("--port is required".into());
        }
        if args.clients == 0 || args.cards == 0 || args.merchants == 0 {
            return Err("--clients, --cards and --merchants must be positive".into());
        }
        if args.zipf.is_nan() || args.zipf < 0.0 {
            return Err("--zipf must be >= 0".into());
        }
        if !(args.warmup >= 0.0 && (args.seconds > 0.0 || args.seconds == 0.0 && args.preload)) {
            return Err("--warmup must be >= 0 and --seconds > 0 (0 only with --preload)".into());
        }
        Ok(args)
    }
}

/// A seed that differs between runs: the clock's nanoseconds and the process id.
fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn main() {
    let args = Args::parse().unwrap_or_else(|e| {
        eprintln!("paymix: {e}\n{USAGE}");
        exit(2)
    });
    // One thread, like redis-benchmark and waitload: the client costs the servers' shared
    // cores alike whichever cluster it drives.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("paymix: cannot start the runtime: {e}");
            exit(1)
        });
    let local = tokio::task::LocalSet::new();
    match runtime.block_on(local.run_until(run(&args))) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("paymix: {e}");
            exit(1)
        }
    }
}

/// Preloads if asked, then runs the clients; returns the output line.
async fn run(args: &Args) -> Result<String, String> {
    let preloaded = if args.preload {
        Some(preload(args.port, args.cards, args.merchants).await?)
    } else {
        None
    };
    let preload_fields = preload_json_fields(preloaded.as_ref());
    if args.seconds == 0.0 {
        return Ok(format!("{{{preload_fields}}}"));
    }
    // The slot map as it is now: a preload may have seen leaders change.
    let route = Rc::new(Route::new(args.port).await?);
    let stats = load(args, &route).await?;
    Ok(format!(
        "{{{},{preload_fields}}}",
        stats.json_fields(args.seconds)
    ))
}

/// Which primary serves a key: primaries are numbered 0.. in port order.
struct Route {
    ports: Vec<u16>,
    node_of_slot: Vec<u8>,
}

impl Route {
    async fn new(seed: u16) -> Result<Route, String> {
        let owners = slot_owners(seed).await?;
        let mut ports: Vec<u16> = owners.iter().flatten().copied().collect();
        ports.sort_unstable();
        ports.dedup();
        let mut node_of_slot = Vec::with_capacity(SLOT_COUNT);
        for (slot, owner) in owners.iter().enumerate() {
            let port = owner.ok_or_else(|| format!("slot {slot} has no primary"))?;
            // `ports` holds every owner, so the search finds it; a cluster has far fewer than
            // 256 primaries (checked below).
            let node = ports.binary_search(&port).unwrap_or_default();
            node_of_slot.push(u8::try_from(node).map_err(|_| "over 256 primaries")?);
        }
        Ok(Route {
            ports,
            node_of_slot,
        })
    }

    /// The primary of every key tagged `{tag}`.
    fn node(&self, tag: &[u8]) -> usize {
        self.node_of_slot[key_slot(tag) as usize] as usize
    }
}

/// Connects every client to every primary, then runs them all on this thread.
async fn load(args: &Args, route: &Rc<Route>) -> Result<Stats, String> {
    let cards = Zipf::new(args.cards as f64, args.zipf).map_err(|e| format!("--zipf: {e}"))?;
    let merchants =
        Zipf::new(args.merchants as f64, args.zipf).map_err(|e| format!("--zipf: {e}"))?;
    let enc = Rc::new(Encoded::new());
    // Authorization ids must be new on every run against the same cluster, whatever --seed.
    let run_id = clock_seed();

    // Connect everything before the clock starts, so setup is not measured.
    let mut totals = Stats::default();
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let mut conns = Vec::with_capacity(route.ports.len());
        for &port in &route.ports {
            match Conn::open(port).await {
                Ok(conn) => conns.push(conn),
                Err(e) => {
                    totals.conn_errors += 1;
                    totals.sample(e);
                }
            }
        }
        if conns.len() == route.ports.len() {
            clients.push((i, conns));
        }
    }

    let begin = Instant::now();
    let window = Window {
        measure: begin + Duration::from_secs_f64(args.warmup),
        end: begin + Duration::from_secs_f64(args.warmup + args.seconds),
    };
    let expected_auths = (args.seconds * 20_000.0) as usize;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(i, conns)| {
            let client = Client {
                conns,
                route: route.clone(),
                enc: enc.clone(),
                cards,
                merchants,
                rng: SmallRng::seed_from_u64(mix(args.seed ^ mix(i as u64))),
                id_prefix: format!("{run_id}:{i}:").into_bytes(),
                wait: args.wait,
                window,
                // Room for a fast run's share of latencies up front: no growth in the loop.
                stats: Stats {
                    latencies: Vec::with_capacity(expected_auths / args.clients + 1),
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

/// The measured part of the run: authorizations started at or after `measure` and completed
/// by `end`.
#[derive(Clone, Copy)]
struct Window {
    measure: Instant,
    end: Instant,
}

/// One closed-loop client: one authorization in flight, a connection to every primary.
struct Client {
    /// Indexed like `Route::ports`.
    conns: Vec<Conn>,
    route: Rc<Route>,
    enc: Rc<Encoded>,
    cards: Zipf<f64>,
    merchants: Zipf<f64>,
    rng: SmallRng,
    /// `<run id>:<client>:`, followed by a sequence number: the idempotency id.
    id_prefix: Vec<u8>,
    wait: bool,
    window: Window,
    stats: Stats,
}

impl Client {
    async fn run(mut self) -> Stats {
        let deadline = tokio::time::Instant::from_std(self.window.end + STUCK_AFTER_END);
        let mut stats = std::mem::take(&mut self.stats);
        match tokio::time::timeout_at(deadline, self.authorizations(&mut stats)).await {
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

    /// Authorizations one after the other until the end of the run.
    async fn authorizations(&mut self, stats: &mut Stats) -> Result<(), String> {
        let (mut card_tag, mut merchant_tag) = (Vec::new(), Vec::new());
        let mut id_tag = self.id_prefix.clone();
        let id_len = id_tag.len();
        for seq in 0u64.. {
            let start = Instant::now();
            if start >= self.window.end {
                break;
            }
            // Zipf samples are ranks 1..=n: rank 1, card 0, is the hottest.
            let card = self.cards.sample(&mut self.rng) as u64 - 1;
            let merchant = self.merchants.sample(&mut self.rng) as u64 - 1;
            let cents: u64 = self.rng.random_range(100..=50_000);
            tag(&mut card_tag, b'c', card);
            tag(&mut merchant_tag, b'm', merchant);
            id_tag.truncate(id_len);
            id_tag.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
            self.build(&id_tag, &card_tag, &merchant_tag, cents);

            let mut pipelines = 0;
            for conn in &mut self.conns {
                if conn.expect.is_empty() {
                    continue;
                }
                if self.wait {
                    conn.out.extend_from_slice(&self.enc.wait);
                    conn.expect.push(Expect::Wait);
                }
                conn.send().await?;
                pipelines += 1;
            }
            let errors_before = stats.errors;
            for conn in &mut self.conns {
                conn.receive(stats).await?;
            }
            let done = Instant::now();
            if start < self.window.measure || done > self.window.end {
                continue;
            }
            // A refused command fails the authorization: it does not count as one served,
            // however fast the refusal came.
            if stats.errors > errors_before {
                stats.failed_auths += 1;
            } else {
                stats.auths += 1;
                stats.pipelines += pipelines;
                stats.latencies.push((done - start).as_nanos() as u64);
            }
        }
        Ok(())
    }

    /// Appends the authorization's 12 commands to the pipelines of the primaries owning them.
    fn build(&mut self, id: &[u8], card: &[u8], merchant: &[u8], cents: u64) {
        let e = &*self.enc;

        let c = &mut self.conns[self.route.node(id)];
        c.out.extend_from_slice(&e.set);
        key(&mut c.out, b"idem:", id, b"");
        c.out.extend_from_slice(&e.set_nx_tail);
        c.expect.push(Expect::Ok);

        let c = &mut self.conns[self.route.node(card)];
        c.out.extend_from_slice(&e.get);
        key(&mut c.out, b"card:", card, b"");
        c.expect.push(Expect::Value);
        for (suffix, expire) in [(&b":1m"[..], &e.nx_1m), (&b":1h"[..], &e.nx_1h)] {
            c.out.extend_from_slice(&e.incr);
            key(&mut c.out, b"vel:", card, suffix);
            c.out.extend_from_slice(&e.pexpire);
            key(&mut c.out, b"vel:", card, suffix);
            c.out.extend_from_slice(expire);
            c.expect.extend([Expect::Int, Expect::Int]);
        }
        c.out.extend_from_slice(&e.incrby);
        key(&mut c.out, b"amt:", card, b":1d");
        bulk_int(&mut c.out, cents);
        c.out.extend_from_slice(&e.pexpire);
        key(&mut c.out, b"amt:", card, b":1d");
        c.out.extend_from_slice(&e.nx_1d);
        c.expect.extend([Expect::Int, Expect::Int]);

        let c = &mut self.conns[self.route.node(merchant)];
        c.out.extend_from_slice(&e.hmget);
        key(&mut c.out, b"mprof:", merchant, b"");
        c.out.extend_from_slice(&e.hmget_fields);
        c.out.extend_from_slice(&e.hincrby);
        key(&mut c.out, b"mstat:", merchant, b"");
        c.out.extend_from_slice(&e.count_1);
        c.out.extend_from_slice(&e.hincrby);
        key(&mut c.out, b"mstat:", merchant, b"");
        c.out.extend_from_slice(&e.cents);
        bulk_int(&mut c.out, cents);
        c.out.extend_from_slice(&e.pexpire);
        key(&mut c.out, b"mstat:", merchant, b"");
        c.out.extend_from_slice(&e.nx_1d);
        c.expect
            .extend([Expect::Values, Expect::Int, Expect::Int, Expect::Int]);
    }
}

/// splitmix64's finalizer: a well-spread hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
