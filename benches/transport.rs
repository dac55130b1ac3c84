//! CPU figures for the cluster's two transports, for BENCHMARKS.md: the Raft log (one pass
//! appending 1 000 entries of 100 bytes across 6 groups and writing them; the latency of an
//! fdatasync on this disk) and the node bus (CPU per round trip between two executors on
//! loopback, one call at a time and fifty in flight).
//!
//! `cargo bench --bench transport` (both), `-- wal` or `-- link` for one.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::executor::block_on;
use futures::future::{LocalBoxFuture, join_all};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};
use tallykv::cluster::link::{BusKey, Links, Route, Serve, serve};
use tallykv::storage::wal::{GroupId, Wal, WalOptions};

/// The secret both ends of the bus hold (the handshake is outside what is measured).
fn bench_key() -> BusKey {
    BusKey::new(b"transport bench secret, 32 bytes")
}

fn main() {
    // `cargo bench` passes `--bench`; anything else names what to run.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);
    if wants("wal") {
        wal();
    }
    if wants("link") {
        link();
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of this process so far, all threads.
fn process_cpu() -> Duration {
    // SAFETY: `getrusage` only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn wal() {
    let dir = tempfile::tempdir().expect("scratch dir");
    let mut wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let payload = Bytes::from(vec![7u8; 100]);
    let mut next = [1u64; 6];
    let (mut pass, mut write) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let batch: Vec<Bytes> = (0..1000).map(|_| payload.clone()).collect();
        let start = thread_cpu();
        for (i, entry) in batch.into_iter().enumerate() {
            let g = (i % 6) as GroupId;
            wal.append(g, next[g as usize], entry).expect("append");
            next[g as usize] += 1;
        }
        let written = thread_cpu();
        wal.write().expect("write");
        let end = thread_cpu();
        pass.push(end - start);
        write.push(end - written);
        for g in 0..6 {
            wal.purge(g, next[g as usize].saturating_sub(2000), b"");
        }
    }
    pass.sort_unstable();
    write.sort_unstable();
    println!(
        "wal: append+write of 1000 x 100 B over 6 groups: p50 {:.1} us CPU, p90 {:.1} us, min \
         {:.1} us; of which the pwrite p50 {:.1} us",
        percentile(&pass, 50),
        percentile(&pass, 90),
        percentile(&pass, 0),
        percentile(&write, 50),
    );
    let mut round_trips = Vec::new();
    let before = wal.stats();
    for i in 0..200u64 {
        wal.save_committed(0, &i.to_le_bytes());
        wal.write().expect("write");
        let t = Instant::now();
        block_on(wal.sync()).expect("sync");
        round_trips.push(t.elapsed());
    }
    round_trips.sort_unstable();
    let s = wal.stats();
    println!(
        "wal: fdatasync of a small write: mean {} us on the syncer thread; sync() round trip \
         p50 {:.0} us, p99 {:.0} us",
        (s.sync_us_total - before.sync_us_total) / (s.sync_rounds - before.sync_rounds).max(1),
        percentile(&round_trips, 50),
        percentile(&round_trips, 99),
    );
}

/// Answers every request with its payload behind a two-byte tag.
struct Tagged;

impl Serve for Tagged {
    fn request(
        &self,
        _kind: u8,
        _group: u16,
        payload: Bytes,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, String>> {
        let mut reply = b"p:".to_vec();
        reply.extend_from_slice(&payload);
        Box::pin(std::future::ready(Ok(reply)))
    }
}

fn executor() -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound).io_memory(512 * 1024)
}

fn run<F: Future<Output = ()>>(body: impl FnOnce() -> F) {
    executor().make().expect("executor").run(body());
}

fn link() {
    const SECOND: Duration = Duration::from_secs(1);
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(128).expect("listen");
    let addr = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet")
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let server = executor()
        .spawn({
            let stop = stop.clone();
            move || async move {
                // SAFETY: a listening socket whose ownership is handed over here.
                let listener = unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) };
                let route: Route = Rc::new(|_, socket| Err(socket));
                let serving = serve(listener, 0, bench_key(), Rc::new(Tagged), route);
                let stopped = async {
                    while !stop.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                };
                futures::future::select(pin!(serving), pin!(stopped)).await;
            }
        })
        .expect("server");
    run(|| async {
        let links = Links::new(None, bench_key(), 1, 0);
        let payload = [7u8; 64];
        for _ in 0..2000 {
            links
                .call(&addr, 1, 0, payload, SECOND)
                .await
                .expect("warm-up");
        }
        let calls = 20_000u32;
        let (cpu, wall) = (process_cpu(), Instant::now());
        for _ in 0..calls {
            links
                .call(&addr, 1, 0, payload, SECOND)
                .await
                .expect("call");
        }
        let (cpu, wall) = (process_cpu() - cpu, wall.elapsed());
        println!(
            "link: one call at a time: {:.1} us CPU, {:.1} us wall per round trip",
            cpu.as_secs_f64() * 1e6 / f64::from(calls),
            wall.as_secs_f64() * 1e6 / f64::from(calls),
        );

        let stats = |links: &Links| {
            links
                .stats()
                .into_iter()
                .find(|peer| peer.addr == addr)
                .expect("peer known")
                .stats
        };
        let (tasks, per_task) = (50u32, 1000u32);
        let before = stats(&links);
        let (cpu, wall) = (process_cpu(), Instant::now());
        let workers: Vec<_> = (0..tasks)
            .map(|_| {
                let (links, addr) = (links.clone(), addr.clone());
                glommio::spawn_local(async move {
                    for _ in 0..per_task {
                        links
                            .call(&addr, 1, 0, payload, SECOND)
                            .await
                            .expect("call");
                    }
                })
            })
            .collect();
        join_all(workers).await;
        let (cpu, wall) = (process_cpu() - cpu, wall.elapsed());
        let after = stats(&links);
        let total = f64::from(tasks * per_task);
        println!(
            "link: 50 in flight: {:.2} us CPU, {:.2} us wall per call; {:.1} frames per write",
            cpu.as_secs_f64() * 1e6 / total,
            wall.as_secs_f64() * 1e6 / total,
            (after.frames_sent - before.frames_sent) as f64
                / (after.writes - before.writes).max(1) as f64,
        );
    });
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server ran");
}
