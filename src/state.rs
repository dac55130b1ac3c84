//! State shared by every core: configuration, statistics, the client registry, memory.
//! Nothing here is on a lock-protected data path: counters are per-core single-writer atomics,
//! and the registry mutex is taken only on connect, disconnect and CLIENT commands.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::metrics::{CoreStats, Memory};
use crate::shard::ShardStats;

/// What CLIENT LIST/INFO show about a connection; owned by its connection task, readable by all.
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    /// Connected over TLS (on `tls-port`): cluster replies name the nodes' TLS ports.
    pub tls: bool,
    /// The subject of the certificate a TLS client showed (for the audit log).
    pub tls_subject: Option<String>,
    pub fd: i32,
    pub created_ms: u64,
    pub last_interaction_ms: AtomicU64,
    /// Registry id of the last command, +1 (0 = none yet).
    pub last_cmd: AtomicUsize,
    pub resp: AtomicUsize,
    /// The database SELECT chose (CLIENT LIST `db=`).
    pub db: std::sync::atomic::AtomicU32,
    pub query_buf: AtomicUsize,
    /// Bytes read from and written to this client, and commands it ran (CLIENT LIST's
    /// tot-net-in, tot-net-out, tot-cmds). Written by the connection's own task only.
    pub net_in: AtomicU64,
    pub net_out: AtomicU64,
    pub commands: AtomicU64,
    pub meta: Mutex<ClientMeta>,
}

#[derive(Default, Clone)]
pub struct ClientMeta {
    pub name: Option<String>,
    /// The ACL user the client authenticated as (None: `default`), for CLIENT LIST.
    pub user: Option<String>,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
}

pub struct Shared {
    pub config: Config,
    pub cores: usize,
    /// Which core owns each hash slot.
    pub slot_map: crate::slot::SlotMap,
    pub shard_stats: Vec<Arc<ShardStats>>,
    pub core_stats: Vec<Arc<CoreStats>>,
    pub clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    pub next_client_id: AtomicU64,
    pub connected_clients: AtomicUsize,
    /// Clients blocked in a blocking command (of them, with a timeout), and clients with a
    /// WATCH session (INFO clients).
    pub blocked_clients: AtomicUsize,
    pub blocked_with_timeout: AtomicUsize,
    pub watching_clients: AtomicUsize,
    /// Lua scripts: the node's cache and what runs on each core.
    pub scripts: crate::command::script::Scripts,
    /// ACL users (`requirepass` is the default user's password).
    pub acl: Arc<crate::security::acl::Users>,
    /// `card-pan-guard`: plaintext card numbers in writes.
    pub pan_guard: Arc<crate::security::pan_guard::PanGuard>,
    pub memory: Memory,
    pub started: Instant,
    pub started_unix_ms: u64,
    pub run_id: String,
    /// The port actually bound (differs from the config when it said 0).
    pub port: AtomicUsize,
    pub lastsave_unix: AtomicU64,
    pub executable: String,
    /// The absolute path of the config file the server was started with; empty if none.
    pub config_file: String,
    /// The durable store (None with `appendonly no`).
    /// Set once the data dir is open (opening may replay fjall's journal: it runs beside
    /// the cores, which answer -LOADING meanwhile).
    pub storage: std::sync::OnceLock<Arc<crate::storage::Storage>>,
    /// Cores still loading their data at startup; commands without the `loading` flag get
    /// -LOADING while it is not zero.
    pub loading_cores: AtomicUsize,
    pub loading_started_unix: AtomicU64,
    pub loading_keys: AtomicU64,
    pub loading_expected: AtomicU64,
    /// Keys found expired while loading (dropped).
    pub loading_expired: AtomicU64,
    /// Set by SHUTDOWN or SIGTERM: cores hand over their last changes and stop accepting.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// BGSAVE SCHEDULE arrived while a snapshot ran: start one when it ends.
    pub bgsave_scheduled: std::sync::atomic::AtomicBool,
    /// Cores that handed over their last changes after `shutting_down` was set.
    pub shutdown_flushed: AtomicUsize,
    /// This node's cluster part, once started (cluster-enabled yes).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::node::ClusterNode>>,
    /// What the cluster's start needs, checked before the cores start (cluster-enabled yes).
    pub cluster_boot: std::sync::OnceLock<crate::cluster::start::Boot>,
}

impl Shared {
    pub fn new(config: Config, cores: usize, commands: usize) -> Shared {
        let now = crate::util::now_ms();
        let databases = config.effective_databases() as usize;
        // INFO shows the absolute path, or nothing without a file (as Valkey).
        let pan_guard = crate::security::pan_guard::PanGuard::new(&config.runtime);
        let config_file = config
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let users = Arc::new(crate::security::acl::Users::new(
            config.runtime.requirepass().as_deref(),
        ));
        // `requirepass` is the default user's password: CONFIG SET changes it at once, or is
        // refused (and undone) where the cluster's committed users rule.
        let (hook_users, runtime) = (users.clone(), Arc::downgrade(&config.runtime));
        config.runtime.on_apply(move |directives| {
            if directives.contains(&"requirepass")
                && let Some(rt) = runtime.upgrade()
            {
                hook_users
                    .set_requirepass(rt.requirepass().as_deref())
                    .map_err(|why| ("requirepass", why))?;
            }
            Ok(())
        });
        Shared {
            config,
            cores,
            slot_map: crate::slot::SlotMap::even(cores),
            shard_stats: (0..cores)
                .map(|_| Arc::new(ShardStats::with_databases(databases)))
                .collect(),
            core_stats: (0..cores)
                .map(|_| Arc::new(CoreStats::new(commands)))
                .collect(),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            connected_clients: AtomicUsize::new(0),
            blocked_clients: AtomicUsize::new(0),
            blocked_with_timeout: AtomicUsize::new(0),
            watching_clients: AtomicUsize::new(0),
            scripts: crate::command::script::Scripts::new(cores),
            acl: users,
            pan_guard,
            memory: Memory::new(),
            started: Instant::now(),
            started_unix_ms: now,
            run_id: random_run_id(),
            port: AtomicUsize::new(0),
            lastsave_unix: AtomicU64::new(now / 1000),
            executable: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config_file,
            storage: std::sync::OnceLock::new(),
            loading_cores: AtomicUsize::new(0),
            loading_started_unix: AtomicU64::new(0),
            loading_keys: AtomicU64::new(0),
            loading_expected: AtomicU64::new(0),
            loading_expired: AtomicU64::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            shutdown_flushed: AtomicUsize::new(0),
            bgsave_scheduled: std::sync::atomic::AtomicBool::new(false),
            cluster: std::sync::OnceLock::new(),
            cluster_boot: std::sync::OnceLock::new(),
        }
    }

    /// The cluster node, when cluster mode is on and started.
    #[inline]
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::node::ClusterNode>> {
        self.cluster.get()
    }

    /// LASTSAVE: the last successful snapshot, or the start time if none yet (as Valkey).
    pub fn lastsave_unix(&self) -> u64 {
        match self.storage() {
            Some(s) if s.stats.last_save_unix.load(Relaxed) != 0 => {
                s.stats.last_save_unix.load(Relaxed)
            }
            _ => self.lastsave_unix.load(Relaxed),
        }
    }

    /// The durable store, once open (never with `appendonly no`).
    pub fn storage(&self) -> Option<&Arc<crate::storage::Storage>> {
        self.storage.get()
    }

    /// Whether the dataset is still being loaded (commands answer -LOADING).
    #[inline]
    pub fn loading(&self) -> bool {
        self.loading_cores.load(Relaxed) != 0
    }

    #[inline]
    pub fn proto_max_bulk_len(&self) -> usize {
        self.config.runtime.proto_max_bulk_len()
    }

    /// Sum of a per-shard counter over all cores.
    /// Every database's figures (see [`ShardStats::db_figures`]) summed over the shards, by
    /// database.
    pub fn db_figures(&self) -> std::collections::BTreeMap<usize, crate::shard::stats::DbFigures> {
        let mut sums: std::collections::BTreeMap<usize, crate::shard::stats::DbFigures> =
            Default::default();
        for s in &self.shard_stats {
            for (db, f) in s.db_figures() {
                let sum = sums.entry(db).or_default();
                for (a, b) in sum.iter_mut().zip(f) {
                    *a += b;
                }
            }
        }
        sums
    }

    pub fn sum_shards(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        self.shard_stats.iter().map(|s| f(s)).sum()
    }

    /// Sum of a per-core counter over all cores.
    pub fn sum_cores(&self, f: impl Fn(&CoreStats) -> u64) -> u64 {
        self.core_stats.iter().map(|s| f(s)).sum()
    }

    pub fn port(&self) -> u16 {
        self.port.load(Relaxed) as u16
    }
}

fn random_run_id() -> String {
    (0..40)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).expect("digit below 16"))
        .collect()
}

impl Shared {
    /// Starts an orderly stop (once; SHUTDOWN, SIGTERM, SIGINT): cores stop taking commands
    /// and hand over their last changes, storage syncs, the process exits from a thread of its
    /// own. With `save`, a snapshot is written first (SHUTDOWN SAVE).
    pub fn begin_shutdown(self: &Arc<Self>, save: bool) {
        let shared = self.clone();
        if shared
            .shutting_down
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("tallykv-shutdown".into())
            .spawn(move || {
                // Every core's ticker notices the flag and hands over its last changes.
                let deadline = Instant::now() + std::time::Duration::from_secs(2);
                while shared.shutdown_flushed.load(Relaxed) < shared.cores
                    && Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let flushed = shared.shutdown_flushed.load(Relaxed);
                if flushed < shared.cores {
                    // Standalone, what those cores changed since their last hand-over is not
                    // stored; in a cluster it is in the Raft log and replayed at restart.
                    tracing::warn!(
                        "shutdown: {} of {} cores did not hand over their last changes within 2 s; \
                         stopping without them",
                        shared.cores - flushed,
                        shared.cores
                    );
                }
                if let Some(storage) = shared.storage() {
                    if save {
                        let (tx, rx) = std::sync::mpsc::channel();
                        if storage.snapshot(move |r| {
                            let _ = tx.send(r);
                        }) {
                            match rx.recv() {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => {
                                    tracing::error!("snapshot before shutdown failed: {e}")
                                }
                                Err(_) => {
                                    tracing::error!("snapshot before shutdown did not finish")
                                }
                            }
                        }
                    }
                    storage.close(std::time::Duration::from_secs(30));
                }
                crate::server::pidfile::remove(&shared.config.pidfile);
                crate::security::audit::flush(std::time::Duration::from_secs(5));
                tracing::info!("tallykv is now ready to exit, bye bye...");
                std::process::exit(0);
            });
        if spawned.is_err() {
            std::process::exit(1);
        }
    }
}

impl crate::command::NodeView for Shared {
    fn proto_max_bulk_len(&self) -> usize {
        self.config.runtime.proto_max_bulk_len()
    }

    fn clustered(&self) -> bool {
        self.config.cluster.enabled
    }

    fn databases(&self) -> u32 {
        self.config.effective_databases()
    }

    fn serves(&self, slot: usize) -> bool {
        self.cluster().is_none_or(|c| c.serves(slot))
    }

    fn same_group(&self, a: usize, b: usize) -> bool {
        self.cluster()
            .is_none_or(|c| c.group_of(a) == c.group_of(b))
    }

    fn scripts(&self) -> &crate::command::script::Scripts {
        &self.scripts
    }
    fn pan_guard(&self) -> Option<&crate::security::pan_guard::PanGuard> {
        Some(&self.pan_guard)
    }
}
