//! The server: one glommio executor per core, each listening on the client port and the
//! TLS port (SO_REUSEPORT) and owning its connections and its shard.
//!
//! This room owns sockets, executors and timers. It calls into `command` through the
//! dispatcher and never touches a shard's data itself.

pub mod conn;
pub mod pidfile;
pub mod shutdown;
pub mod tls;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::engine::core::{Core, CoreMsg};
use crate::state::Shared;

/// Runs the server until the process is stopped. Returns an error if it cannot start.
pub fn run(config: Config) -> Result<(), String> {
    let cores = if config.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.threads
    };
    crate::command::table::rename_commands(&config.runtime.renamed_commands())?;
    crate::security::audit::open(&config.runtime)?;
    let tls_port = config.runtime.tls_port();
    let tls = match tls_port {
        0 => None,
        _ => Some(tls::TlsCell::new(
            crate::security::tls::server_config(&config.runtime.tls())
                .map_err(|e| e.to_string())?,
        )),
    };
    // Mutual TLS on the cluster bus (`tls-cluster yes`), whether or not clients get TLS.
    let bus_tls = if config.cluster.enabled && config.runtime.tls_cluster() {
        let (server, client) =
            crate::security::tls::bus_configs(&config.runtime.tls()).map_err(|e| e.to_string())?;
        Some(crate::cluster::link::BusTls::new(server, client))
    } else {
        None
    };
    tls::watch_config(&config.runtime, tls.clone(), bus_tls.clone());
    // `port 0` with a tls-port serves TLS only, as in Valkey.
    let port = if config.port == 0 && tls_port != 0 {
        0
    } else {
        resolve_port(&config)?
    };
    let mut addrs = Vec::new();
    if port != 0 {
        addrs.extend(listen_addrs(&config, port, None));
    }
    if let Some(tls) = &tls {
        addrs.extend(listen_addrs(&config, tls_port, Some(tls)));
    }
    // Bind once up front so a port in use is reported clearly before any executor starts.
    probe_bind(&addrs)?;
    let shared = Arc::new(Shared::new(
        config,
        cores,
        crate::command::table::registry().len(),
    ));
    shared.port.store(port as usize, Relaxed);
    // The users the node starts with: the config's `user` lines, or the aclfile's.
    let rt = &shared.config.runtime;
    shared.acl.load_at_startup(
        &rt.user_declarations(),
        rt.aclfile().as_deref(),
        rt.requirepass().as_deref(),
    )?;
    if shared.config.cluster.enabled {
        crate::cluster::start::prepare(&shared, bus_tls)?;
        // Until the data dir says whether the cluster committed other users (see
        // `engine::users::load_stored`), nobody authenticates.
        shared.acl.seal();
    }
    if shared.config.runtime.appendonly() {
        open_storage(shared.clone(), cores)?;
    } else {
        tracing::info!("appendonly no: nothing is written to disk");
    }
    shutdown::install_signal_handlers(shared.clone())?;

    let mesh = MeshBuilder::<CoreMsg, _>::full(cores, 1024);
    let placement = if cores
        <= std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    {
        PoolPlacement::MaxSpread(cores, None)
    } else {
        PoolPlacement::Unbound(cores)
    };
    tracing::info!(
        port,
        tls_port,
        threads = cores,
        "tallykv {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("tallykv-core")
        // No file I/O goes through glommio's DMA buffers; keep locked memory small so the
        // server starts under the default `ulimit -l`.
        .io_memory(512 * 1024)
        .ring_depth(256)
        .on_all_shards(move || {
            let shared = shared.clone();
            let mesh = mesh.clone();
            let addrs = addrs.clone();
            async move { core_main(shared, mesh, addrs).await }
        })
        .map_err(|e| format!("cannot start executors: {e}"))?;
    for r in handles.join_all() {
        match r {
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("executor failed: {e:?}")),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}

/// Opens the data dir beside the cores: fjall replays its journal on open (about a second per
/// 30 MB here), and clients should get -LOADING meanwhile, not a refused connection. A
/// directory that is locked or cannot be opened still stops the server with its error; the
/// lock is checked first, here, so a second server on the same dir fails before it listens.
/// CONFIG SET encryption-at-rest-key-file: reads the key file again (a rotation), refused
/// when encryption at rest is off or the file cannot serve the data on disk.
fn watch_at_rest(shared: &Arc<Shared>) {
    const NAME: &str = "encryption-at-rest-key-file";
    let weak = Arc::downgrade(shared);
    shared.config.runtime.on_apply(move |names| {
        if !names.contains(&NAME) {
            return Ok(());
        }
        let Some(shared) = weak.upgrade() else {
            return Ok(());
        };
        let Some(storage) = shared.storage.get() else {
            return Err((NAME, "the data dir is still being opened".into()));
        };
        let path = shared.config.runtime.encryption_at_rest_key_file().ok_or((
            NAME,
            "encryption at rest is turned off at startup only".to_string(),
        ))?;
        storage
            .reload_at_rest(std::path::Path::new(&path))
            .map_err(|e| (NAME, e))
    });
}

fn open_storage(shared: Arc<Shared>, cores: usize) -> Result<(), String> {
    watch_at_rest(&shared);
    crate::engine::persist::loading_begins(&shared, cores);
    let dir = shared.config.dir.clone();
    crate::storage::check_not_locked(&dir)?;
    // A key file that cannot be read stops the start here, before the port opens.
    let at_rest = match shared.config.runtime.encryption_at_rest_key_file() {
        Some(path) => Some(Arc::new(crate::storage::at_rest::AtRest::load(
            std::path::Path::new(&path),
        )?)),
        None => None,
    };
    // Every part of the disk state that re-seals on its own is known before the rotation
    // starts: it must not take the first pass as finished while a core's Raft log, opened
    // later, still holds data under an old key (or plaintext).
    if let Some(a) = &at_rest
        && shared.config.cluster.enabled
    {
        for core in 0..cores {
            a.part_started(&format!("wal-core-{core}"));
        }
        a.part_started(crate::cluster::snapshot::RESEAL_PART);
    }
    std::thread::Builder::new()
        .name("tallykv-open".into())
        .spawn(move || {
            let rt = shared.config.runtime.clone();
            let opened =
                crate::storage::Storage::open(&dir, Box::new(move || rt.appendfsync()), at_rest)
                    .and_then(|storage| {
                        crate::engine::libraries::load_stored(&shared, &storage)?;
                        if shared.config.cluster.enabled {
                            crate::engine::users::load_stored(&shared, &storage)?;
                            crate::cluster::start::storage_opened(&shared, &storage)?;
                        }
                        Ok(storage)
                    });
            match opened {
                Ok(storage) => {
                    tracing::info!(
                        "data dir {} (appendonly yes, appendfsync {})",
                        storage.dir().display(),
                        shared.config.runtime.appendfsync().as_str()
                    );
                    shared
                        .loading_expected
                        .store(storage.approximate_len(), Relaxed);
                    // Valkey's used_memory_startup: the engine is up, no data loaded yet.
                    shared.memory.mark_startup();
                    let _ = shared.storage.set(storage);
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the storage thread: {e}"))?;
    Ok(())
}

/// The port to listen on: the configured one, or a free one chosen now when it is 0.
fn resolve_port(config: &Config) -> Result<u16, String> {
    if config.port != 0 {
        return Ok(config.port);
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot pick a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// One address every core listens on.
#[derive(Clone)]
struct ListenAddr {
    addr: String,
    /// Written with a leading `-` in `bind`: skipped if unavailable.
    optional: bool,
    /// The TLS configuration of `tls-port` listeners; None on the plain port.
    tls: Option<Arc<tls::TlsCell>>,
}

/// Socket addresses for the bind list (`*` → 0.0.0.0, `::*` → ::; a leading `-` marks an
/// address that may be unavailable, e.g. IPv6 on a host without it).
fn listen_addrs(config: &Config, port: u16, tls: Option<&Arc<tls::TlsCell>>) -> Vec<ListenAddr> {
    config
        .bind_addrs()
        .into_iter()
        .map(|b| {
            let host = if b.host.contains(':') {
                format!("[{}]", b.host)
            } else {
                b.host.clone()
            };
            ListenAddr {
                addr: format!("{host}:{port}"),
                optional: b.optional,
                tls: tls.cloned(),
            }
        })
        .collect()
}

fn probe_bind(addrs: &[ListenAddr]) -> Result<(), String> {
    for ListenAddr { addr, optional, .. } in addrs {
        if let Err(e) = std::net::TcpListener::bind(addr.as_str())
            && !optional
        {
            return Err(format!(
                "Could not create server TCP listening socket {addr}: {e}"
            ));
        }
    }
    Ok(())
}

/// A listening socket for one core. Like Valkey, SO_REUSEADDR, so a restarted server binds
/// its port while connections of the previous one sit in TIME_WAIT; SO_REUSEPORT, so every
/// core listens on the same port and the kernel spreads connections (glommio's own `bind`
/// sets only the latter).
pub fn bind_listener(addr: &str) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::other("empty address"))?;
    let sk = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sk.set_only_v6(true)?;
    }
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    // SAFETY: the fd is a bound, listening TCP socket that nothing else owns.
    Ok(unsafe { TcpListener::from_raw_fd(sk.into_raw_fd()) })
}

async fn core_main(
    shared: Arc<Shared>,
    mesh: MeshBuilder<CoreMsg, glommio::channels::channel_mesh::Full>,
    addrs: Vec<ListenAddr>,
) -> Result<(), String> {
    // glommio can miss the cross-executor wakeup of a mesh join, leaving a core asleep with
    // no deadline (seen as a start that hung once in about thirty, both executors parked in
    // io_uring). A periodic timer bounds every sleep until the join is done, and each wakeup
    // rechecks the shared channels.
    let nudge = glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    });
    let joined = mesh.join().await;
    nudge.cancel().await;
    let (senders, receivers) = joined.map_err(|_| "cannot join the core mesh".to_string())?;
    let id = senders.peer_id();
    let core = Core::new(id, shared.clone(), senders);
    core.spawn_receivers(receivers);
    core.start_loading();
    spawn_ticker(core.clone());
    if shared.config.cluster.enabled {
        crate::cluster::start::serve_bus(&core)?;
        if id == 0 {
            glommio::spawn_local(crate::cluster::start::start(core.clone())).detach();
        }
    }
    let mut listeners = Vec::new();
    for ListenAddr {
        addr,
        optional,
        tls,
    } in &addrs
    {
        match bind_listener(addr) {
            Ok(l) => listeners.push((l, tls.clone())),
            Err(e) if *optional => tracing::debug!("optional listener {addr} not available: {e}"),
            Err(e) => {
                return Err(format!(
                    "Could not create server TCP listening socket {addr}: {e}"
                ));
            }
        }
    }
    if id == 0 {
        if !shared.config.runtime.appendonly() {
            // With storage, the open thread marks it once the engine is up.
            shared.memory.mark_startup();
        }
        if shared.port() != 0 {
            tracing::info!("Ready to accept connections tcp on port {}", shared.port());
        }
        let tls_port = shared.config.runtime.tls_port();
        if tls_port != 0 {
            tracing::info!("Ready to accept connections tls on port {tls_port}");
        }
        pidfile::write(&shared.config.pidfile);
    }
    let accepts: Vec<_> = listeners
        .into_iter()
        .map(|(listener, tls)| {
            let core = core.clone();
            glommio::spawn_local(async move {
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            // A TLS handshake runs in the connection's own task, so a slow
                            // or silent client holds up nobody else.
                            let tls = tls.as_ref().map(|cell| cell.current());
                            glommio::spawn_local(conn::serve(core.clone(), stream, tls)).detach();
                        }
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        })
        .collect();
    futures::future::join_all(accepts).await;
    Ok(())
}

/// Per-core background work: the active expiry cycle (hz times a second, at most 25% of a
/// tick), eviction when over maxmemory, and (core 0) memory and ops/sec sampling.
fn spawn_ticker(core: Rc<Core>) {
    glommio::spawn_local(async move {
        let mut last_sample = Instant::now();
        let mut last_flush = Instant::now();
        loop {
            let hz = core.shared.config.runtime.hz().clamp(1, 500);
            let period = Duration::from_micros(1_000_000 / hz as u64);
            glommio::timer::sleep(period).await;
            // Nothing here touches the shard while a transaction holds the core or a script
            // paused on it (see `engine::gate`, `engine::pause`).
            core.gate.wait_open(None).await;
            if core.shared.shutting_down.load(Relaxed) {
                if let Some(host) = core.host() {
                    host.shutdown().await;
                }
                core.gate.wait_open(None).await;
                core.flush_changes();
                core.shared.shutdown_flushed.fetch_add(1, Relaxed);
                return;
            }
            if !core.shared.loading() {
                // A cluster node expires and evicts through its groups' leaders only (the
                // deletions are records in the logs): see `cluster::host`.
                if !core.shared.config.cluster.enabled {
                    // Not in the middle of a transaction holding this core (see `gate`).
                    core.gate.wait_open(None).await;
                    active_expire(&core, period / 4).await;
                    core.evict_if_over_limit();
                } else if let Some(host) = core.host() {
                    host.tick();
                    if last_flush.elapsed() >= crate::engine::persist::CLUSTER_FLUSH_INTERVAL {
                        last_flush = Instant::now();
                        core.flush_changes();
                    }
                }
                core.gate.wait_open(None).await;
                core.schedule_flush();
            }
            if core.id == 0 && last_sample.elapsed() >= Duration::from_millis(100) {
                last_sample = Instant::now();
                core.shared.memory.refresh();
                if let Some(storage) = core.shared.storage() {
                    core.shared.memory.set_not_counted(storage.memory_bytes());
                }
                crate::cluster::evict::pressure(&core);
                crate::metrics::stats::sample_ops(&core.shared);
                crate::engine::persist::snapshot_tick(&core);
                conn::close_idle_clients(&core.shared);
            }
        }
    })
    .detach();
}

/// Valkey's adaptive rule: keep expiring while more than 10% of the keys (or of the hashes
/// with field TTLs) checked had expired, within the time budget; yield to connections
/// between steps.
async fn active_expire(core: &Rc<Core>, budget: Duration) {
    let started = Instant::now();
    loop {
        if core.gate.holder().is_some() {
            // A transaction took this core while we yielded: it must see no deletion.
            break;
        }
        let worth_another = {
            let mut shard = core.shard.borrow_mut();
            let now = crate::util::now_ms();
            let mut worth = false;
            // Every numbered database in turn (Valkey's cycle walks them too).
            shard.for_each_db(|s| worth |= s.active_expire_step(now, 200).worth_another());
            worth
        };
        if !worth_another || started.elapsed() >= budget {
            break;
        }
        glommio::yield_if_needed().await;
    }
    core.shared.shard_stats[core.id]
        .expire_cycle_cpu_us
        .add(started.elapsed().as_micros() as u64);
    core.shared.memory.publish(core.id);
}
