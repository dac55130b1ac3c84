//! Configuration: the config file, `--directive value` arguments, and
//! `CONFIG GET` / `CONFIG SET`, following Valkey's `config.c`.
//!
//! * [`Config::from_args`] reads `tallykv [/path/to/tallykv.conf] [-] [--directive value...]`
//!   the way valkey-server does: the file first, then stdin if `-` is given,
//!   then the arguments as extra lines, so the last setting wins.
//! * Startup-only values are plain fields of [`Config`]. Everything `CONFIG SET`
//!   can change lives in [`Runtime`] (shared as `Arc<Runtime>`), as atomics for
//!   anything the data path reads, so reading a setting never takes a lock.
//! * [`Config::get`] and [`Config::set`] implement the two commands without
//!   knowing about sockets; errors come back as Valkey's exact reply texts.
//!
//! `conf/tallykv.conf` documents every directive; it parses to the defaults.

mod error;
pub(crate) mod parse;
#[cfg(test)]
mod tests;

pub use error::{ConfigError, ConfigSource};

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The version printed in configuration error banners.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The most addresses `bind` takes (Valkey's `CONFIG_BINDADDR_MAX`).
const MAX_BIND_ADDRS: usize = 16;
/// How deep `include` may nest before we assume a loop.
const MAX_INCLUDE_DEPTH: usize = 16;
/// `hz` is a hint: values outside this range are accepted and clamped, as in Valkey.
const MIN_HZ: u64 = 1;
const MAX_HZ: u64 = 500;

// ---------------------------------------------------------------------------
// Enumerated values
// ---------------------------------------------------------------------------

/// An enum-valued directive: its values in Valkey's order (which is the order
/// Valkey lists them in its error message) and their names.
trait ConfigEnum: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;

    fn parse_bytes(s: &[u8]) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name().as_bytes().eq_ignore_ascii_case(s))
    }

    fn index(self) -> u8 {
        Self::ALL.iter().position(|&v| v == self).unwrap_or(0) as u8
    }

    fn from_index(i: u8) -> Self {
        Self::ALL[usize::from(i).min(Self::ALL.len() - 1)]
    }

    /// Valkey's `enumConfigSet` error text.
    fn error() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
        format!(
            "argument(s) must be one of the following: {}",
            names.join(", ")
        )
    }
}

macro_rules! config_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl ConfigEnum for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl $ty {
            /// The directive value, lowercase, as `CONFIG GET` and `INFO` show it.
            pub fn as_str(self) -> &'static str {
                self.name()
            }

            /// Case-insensitive parse of a directive value.
            pub fn parse(s: &[u8]) -> Option<Self> {
                Self::parse_bytes(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s.as_bytes()).ok_or_else(Self::error)
            }
        }
    };
}

/// `maxmemory-policy`: what to do when a write would exceed `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MaxmemoryPolicy {
    /// Refuse writes that need memory (`-OOM`).
    #[default]
    NoEviction,
    AllKeysLru,
    VolatileLru,
    AllKeysLfu,
    VolatileLfu,
    AllKeysRandom,
    VolatileRandom,
    VolatileTtl,
}

config_enum!(MaxmemoryPolicy {
    VolatileLru => "volatile-lru",
    VolatileLfu => "volatile-lfu",
    VolatileRandom => "volatile-random",
    VolatileTtl => "volatile-ttl",
    AllKeysLru => "allkeys-lru",
    AllKeysLfu => "allkeys-lfu",
    AllKeysRandom => "allkeys-random",
    NoEviction => "noeviction",
});

/// `loglevel`: Valkey's five verbosity levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    Debug,
    Verbose,
    #[default]
    Notice,
    Warning,
    Nothing,
}

config_enum!(LogLevel {
    Debug => "debug",
    Verbose => "verbose",
    Notice => "notice",
    Warning => "warning",
    Nothing => "nothing",
});

impl LogLevel {
    /// The `tracing` filter for this level: debug → TRACE, verbose → DEBUG,
    /// notice → INFO, warning → WARN, nothing → OFF.
    pub fn level_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Debug => LevelFilter::TRACE,
            LogLevel::Verbose => LevelFilter::DEBUG,
            LogLevel::Notice => LevelFilter::INFO,
            LogLevel::Warning => LevelFilter::WARN,
            LogLevel::Nothing => LevelFilter::OFF,
        }
    }
}

/// `appendfsync`: when the append-only file is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AppendFsync {
    Always,
    #[default]
    EverySec,
    No,
}

config_enum!(AppendFsync {
    EverySec => "everysec",
    Always => "always",
    No => "no",
});

// ---------------------------------------------------------------------------
// The directive table
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Port,
    Bind,
    ProtectedMode,
    Maxclients,
    Maxmemory,
    MaxmemoryPolicy,
    MaxmemorySamples,
    Timeout,
    TcpKeepalive,
    Dir,
    Loglevel,
    Logfile,
    Threads,
    ProtoMaxBulkLen,
    ClientQueryBufferLimit,
    Databases,
    ClusterDatabases,
    Hz,
    LfuLogFactor,
    LfuDecayTime,
    HashMaxListpackEntries,
    HashMaxListpackValue,
    ListMaxListpackSize,
    BusyReplyThreshold,
    SetMaxIntsetEntries,
    SetMaxListpackEntries,
    SetMaxListpackValue,
    ZsetMaxListpackEntries,
    ZsetMaxListpackValue,
    Appendonly,
    Appendfsync,
    LoadDelay,
    Save,
    Requirepass,
    Daemonize,
    Pidfile,
    ClusterEnabled,
    ClusterPort,
    ClusterPeers,
    ClusterAnnounceHostname,
    ClusterAnnounceIp,
    ClusterAnnouncePort,
    ClusterAnnounceBusPort,
    ClusterReplicationFactor,
    ClusterSlotGroups,
    ClusterNodeTimeout,
    ClusterSnapshotAfter,
    ClusterLeaderBalanceDelay,
    LazyfreeLazyEviction,
    LazyfreeLazyExpire,
    LazyfreeLazyServerDel,
    LazyfreeLazyUserDel,
    LazyfreeLazyUserFlush,
}

/// Whether `CONFIG SET` may change a directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Mutable,
    /// Valkey's `IMMUTABLE_CONFIG`: startup only.
    Immutable,
    /// Valkey's `PROTECTED_CONFIG` with `enable-protected-configs no` (its default).
    Protected,
}

struct Spec {
    key: Key,
    name: &'static str,
    alias: Option<&'static str>,
    access: Access,
    /// Valkey's `MULTI_ARG_CONFIG`: takes any number of arguments.
    multi: bool,
}

const fn spec(key: Key, name: &'static str, access: Access) -> Spec {
    Spec {
        key,
        name,
        alias: None,
        access,
        multi: false,
    }
}

use Access::{Immutable, Mutable, Protected};

/// Every directive tallykv knows, in the order `CONFIG GET *` lists them.
const SPECS: &[Spec] = &[
    spec(Key::Port, "port", Immutable),
    Spec {
        multi: true,
        ..spec(Key::Bind, "bind", Immutable)
    },
    spec(Key::ProtectedMode, "protected-mode", Mutable),
    spec(Key::Maxclients, "maxclients", Mutable),
    spec(Key::Maxmemory, "maxmemory", Mutable),
    spec(Key::MaxmemoryPolicy, "maxmemory-policy", Mutable),
    spec(Key::MaxmemorySamples, "maxmemory-samples", Mutable),
    spec(Key::Timeout, "timeout", Mutable),
    spec(Key::TcpKeepalive, "tcp-keepalive", Mutable),
    spec(Key::Dir, "dir", Protected),
    spec(Key::Loglevel, "loglevel", Mutable),
    spec(Key::Logfile, "logfile", Immutable),
    spec(Key::Threads, "threads", Immutable),
    spec(Key::ProtoMaxBulkLen, "proto-max-bulk-len", Mutable),
    spec(
        Key::ClientQueryBufferLimit,
        "client-query-buffer-limit",
        Mutable,
    ),
    spec(Key::Databases, "databases", Immutable),
    spec(Key::ClusterDatabases, "cluster-databases", Immutable),
    spec(Key::Hz, "hz", Mutable),
    spec(Key::LfuLogFactor, "lfu-log-factor", Mutable),
    spec(Key::LfuDecayTime, "lfu-decay-time", Mutable),
    // Which removals free big values in a background thread (see `shard::lazyfree`).
    spec(Key::LazyfreeLazyEviction, "lazyfree-lazy-eviction", Mutable),
    spec(Key::LazyfreeLazyExpire, "lazyfree-lazy-expire", Mutable),
    spec(
        Key::LazyfreeLazyServerDel,
        "lazyfree-lazy-server-del",
        Mutable,
    ),
    spec(Key::LazyfreeLazyUserDel, "lazyfree-lazy-user-del", Mutable),
    spec(
        Key::LazyfreeLazyUserFlush,
        "lazyfree-lazy-user-flush",
        Mutable,
    ),
    Spec {
        alias: Some("hash-max-ziplist-entries"),
        ..spec(
            Key::HashMaxListpackEntries,
            "hash-max-listpack-entries",
            Mutable,
        )
    },
    Spec {
        alias: Some("hash-max-ziplist-value"),
        ..spec(
            Key::HashMaxListpackValue,
            "hash-max-listpack-value",
            Mutable,
        )
    },
    Spec {
        alias: Some("list-max-ziplist-size"),
        ..spec(Key::ListMaxListpackSize, "list-max-listpack-size", Mutable)
    },
    spec(Key::SetMaxIntsetEntries, "set-max-intset-entries", Mutable),
    Spec {
        alias: Some("lua-time-limit"),
        ..spec(Key::BusyReplyThreshold, "busy-reply-threshold", Mutable)
    },
    spec(
        Key::SetMaxListpackEntries,
        "set-max-listpack-entries",
        Mutable,
    ),
    spec(Key::SetMaxListpackValue, "set-max-listpack-value", Mutable),
    Spec {
        alias: Some("zset-max-ziplist-entries"),
        ..spec(
            Key::ZsetMaxListpackEntries,
            "zset-max-listpack-entries",
            Mutable,
        )
    },
    Spec {
        alias: Some("zset-max-ziplist-value"),
        ..spec(
            Key::ZsetMaxListpackValue,
            "zset-max-listpack-value",
            Mutable,
        )
    },
    // Switching persistence on or off needs a full rewrite of the data dir (Valkey's AOF
    // rewrite); tallykv sets it at startup only for now.
    spec(Key::Appendonly, "appendonly", Immutable),
    spec(Key::Appendfsync, "appendfsync", Mutable),
    spec(Key::LoadDelay, "key-load-delay", Mutable),
    Spec {
        multi: true,
        ..spec(Key::Save, "save", Mutable)
    },
    spec(Key::Requirepass, "requirepass", Mutable),
    spec(Key::Daemonize, "daemonize", Immutable),
    spec(Key::Pidfile, "pidfile", Immutable),
    // Cluster: startup only (the cluster's own configuration is replicated, not set here).
    spec(Key::ClusterEnabled, "cluster-enabled", Immutable),
    spec(Key::ClusterPort, "cluster-port", Immutable),
    spec(Key::ClusterPeers, "cluster-peers", Immutable),
    spec(
        Key::ClusterAnnounceHostname,
        "cluster-announce-hostname",
        Immutable,
    ),
    spec(Key::ClusterAnnounceIp, "cluster-announce-ip", Immutable),
    spec(Key::ClusterAnnouncePort, "cluster-announce-port", Immutable),
    spec(
        Key::ClusterAnnounceBusPort,
        "cluster-announce-bus-port",
        Immutable,
    ),
    spec(
        Key::ClusterReplicationFactor,
        "cluster-replication-factor",
        Immutable,
    ),
    spec(Key::ClusterSlotGroups, "cluster-slot-groups", Immutable),
    spec(Key::ClusterNodeTimeout, "cluster-node-timeout", Immutable),
    spec(
        Key::ClusterSnapshotAfter,
        "cluster-snapshot-after",
        Immutable,
    ),
    spec(
        Key::ClusterLeaderBalanceDelay,
        "cluster-leader-balance-delay",
        Immutable,
    ),
];

/// Every name a directive answers to (aliases are separate entries, as in
/// Valkey, so `CONFIG GET *` lists both `hash-max-listpack-entries` and
/// `hash-max-ziplist-entries`).
fn names() -> impl Iterator<Item = (&'static Spec, &'static str)> {
    SPECS
        .iter()
        .flat_map(|s| std::iter::once((s, s.name)).chain(s.alias.map(|a| (s, a))))
}

/// Case-insensitive lookup by name or alias.
fn lookup(name: &[u8]) -> Option<(&'static Spec, &'static str)> {
    names().find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Bounds and syntax of a numeric directive (Valkey's `numericConfigData`).
#[derive(Clone, Copy)]
struct Num {
    min: u64,
    max: u64,
    /// Valkey's `MEMORY_CONFIG`: accepts units, rejects anything else.
    memory: bool,
    /// The C type is unsigned: a negative integer wraps to a huge value and
    /// fails the bounds check rather than the syntax check.
    unsigned: bool,
}

const INT_MAX: u64 = i32::MAX as u64;
const LONG_MAX: u64 = i64::MAX as u64;
const MB: u64 = 1024 * 1024;

const fn int(min: u64, max: u64) -> Num {
    Num {
        min,
        max,
        memory: false,
        unsigned: false,
    }
}

fn num_spec(key: Key) -> Option<Num> {
    Some(match key {
        Key::Port | Key::ClusterPort | Key::ClusterAnnouncePort | Key::ClusterAnnounceBusPort => {
            int(0, 65535)
        }
        Key::ClusterReplicationFactor => int(1, 9),
        Key::ClusterSlotGroups => int(0, 1024),
        Key::ClusterNodeTimeout => int(100, INT_MAX),
        Key::ClusterSnapshotAfter => int(1, LONG_MAX),
        Key::ClusterLeaderBalanceDelay => int(0, LONG_MAX),
        Key::Maxclients => Num {
            unsigned: true,
            ..int(1, u32::MAX as u64)
        },
        Key::Maxmemory => Num {
            memory: true,
            unsigned: true,
            ..int(0, u64::MAX)
        },
        Key::MaxmemorySamples => int(1, 64),
        Key::Timeout | Key::TcpKeepalive | Key::Hz | Key::LfuLogFactor | Key::LfuDecayTime => {
            int(0, INT_MAX)
        }
        Key::Databases => int(1, INT_MAX),
        Key::ClusterDatabases => int(1, INT_MAX),
        Key::LoadDelay => int(0, INT_MAX),
        Key::Threads => int(0, 1024),
        Key::ProtoMaxBulkLen => Num {
            memory: true,
            ..int(MB, LONG_MAX)
        },
        Key::ClientQueryBufferLimit => Num {
            memory: true,
            unsigned: true,
            ..int(MB, LONG_MAX)
        },
        Key::BusyReplyThreshold => int(0, LONG_MAX),
        Key::HashMaxListpackEntries
        | Key::SetMaxIntsetEntries
        | Key::SetMaxListpackEntries
        | Key::ZsetMaxListpackEntries => Num {
            unsigned: true,
            ..int(0, LONG_MAX)
        },
        Key::HashMaxListpackValue | Key::SetMaxListpackValue | Key::ZsetMaxListpackValue => Num {
            memory: true,
            unsigned: true,
            ..int(0, LONG_MAX)
        },
        _ => return None,
    })
}

/// A parsed, validated directive value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(u64),
    Bool(bool),
    Policy(MaxmemoryPolicy),
    Level(LogLevel),
    Fsync(AppendFsync),
    Str(String),
    List(Vec<String>),
    /// `save`: `clear` is the `save ""` form.
    Save {
        clear: bool,
        pairs: Vec<(u64, u64)>,
    },
}

fn utf8(arg: &[u8]) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| "argument must be valid UTF-8".to_string())
}

/// Valkey's `numericParseString` + `numericBoundaryCheck`.
fn parse_num(arg: &[u8], n: Num) -> Result<u64, String> {
    let v: i128 = if n.memory {
        i128::from(parse::memtoull(arg).ok_or("argument must be a memory value")?)
    } else {
        let v = parse::string2ll(arg).ok_or("argument couldn't be parsed into an integer")?;
        if n.unsigned {
            i128::from(v as u64)
        } else {
            i128::from(v)
        }
    };
    if v < i128::from(n.min) || v > i128::from(n.max) {
        return Err(format!(
            "argument must be between {} and {} inclusive",
            n.min, n.max
        ));
    }
    Ok(v as u64)
}

/// Parse and validate the arguments of one directive. The reason texts are
/// Valkey's where Valkey has the directive.
fn parse_value(key: Key, args: &[Vec<u8>]) -> Result<Value, String> {
    let one = || -> Result<&[u8], String> {
        match args {
            [a] => Ok(a.as_slice()),
            _ => Err("wrong number of arguments".to_string()),
        }
    };
    let yes_no =
        |a: &[u8]| parse::yesno(a).ok_or_else(|| "argument must be 'yes' or 'no'".to_string());
    if let Some(n) = num_spec(key) {
        let v = parse_num(one()?, n)?;
        return Ok(Value::Num(if key == Key::Hz {
            v.clamp(MIN_HZ, MAX_HZ)
        } else {
            v
        }));
    }
    Ok(match key {
        Key::ListMaxListpackSize => {
            // Signed (Valkey's INT_MIN..INT_MAX): negative sizes are byte budgets.
            let v =
                parse::string2ll(one()?).ok_or("argument couldn't be parsed into an integer")?;
            if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) {
                return Err(format!(
                    "argument must be between {} and {} inclusive",
                    i32::MIN,
                    i32::MAX
                ));
            }
            Value::Num(v as u64)
        }
        Key::ProtectedMode
        | Key::Appendonly
        | Key::ClusterEnabled
        | Key::LazyfreeLazyEviction
        | Key::LazyfreeLazyExpire
        | Key::LazyfreeLazyServerDel
        | Key::LazyfreeLazyUserDel
        | Key::LazyfreeLazyUserFlush => Value::Bool(yes_no(one()?)?),
        Key::ClusterAnnounceHostname | Key::ClusterAnnounceIp => Value::Str(utf8(one()?)?),
        Key::ClusterPeers => {
            let list = utf8(one()?)?;
            let peers: Vec<String> = list
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            for p in &peers {
                parse_host_port(p)?;
            }
            Value::List(peers)
        }
        Key::Daemonize => {
            if yes_no(one()?)? {
                return Err("tallykv cannot daemonize: the argument must be 'no' (run it in the foreground \
                            under a supervisor such as systemd)"
                    .to_string());
            }
            Value::Bool(false)
        }
        Key::MaxmemoryPolicy => {
            Value::Policy(MaxmemoryPolicy::parse(one()?).ok_or_else(MaxmemoryPolicy::error)?)
        }
        Key::Loglevel => Value::Level(LogLevel::parse(one()?).ok_or_else(LogLevel::error)?),
        Key::Appendfsync => {
            Value::Fsync(AppendFsync::parse(one()?).ok_or_else(AppendFsync::error)?)
        }
        Key::Dir => {
            let dir = utf8(one()?)?;
            if dir.is_empty() {
                return Err("dir can't be empty".to_string());
            }
            Value::Str(dir)
        }
        Key::Logfile | Key::Pidfile | Key::Requirepass => Value::Str(utf8(one()?)?),
        Key::Bind => {
            if args.len() > MAX_BIND_ADDRS {
                return Err("Too many bind addresses specified.".to_string());
            }
            let addrs = match args {
                [a] if a.is_empty() => Vec::new(),
                _ => args.iter().map(|a| utf8(a)).collect::<Result<_, _>>()?,
            };
            Value::List(addrs)
        }
        Key::Save => {
            let (clear, args) = match args {
                [a] if a.is_empty() => (true, &args[..0]),
                _ => (false, args),
            };
            if args.len() % 2 == 1 {
                return Err("Invalid save parameters".to_string());
            }
            let mut pairs = Vec::with_capacity(args.len() / 2);
            for pair in args.chunks(2) {
                let num = |a: &[u8]| {
                    std::str::from_utf8(a)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                };
                match (num(&pair[0]), num(&pair[1])) {
                    (Some(secs), Some(changes)) if secs >= 1 && changes >= 0 => {
                        pairs.push((secs as u64, changes as u64))
                    }
                    _ => return Err("Invalid save parameters".to_string()),
                }
            }
            Value::Save { clear, pairs }
        }
        _ => unreachable!("numeric directive {key:?} handled above"),
    })
}

// ---------------------------------------------------------------------------
// Runtime: everything CONFIG SET can change
// ---------------------------------------------------------------------------

type Hook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The runtime-settable configuration, shared by every thread as
/// `Arc<Runtime>` (the [`Config::runtime`] field).
///
/// Every numeric and enum setting is an atomic read with `Relaxed` ordering:
/// cheap enough for the data path, and a value changed by `CONFIG SET` is seen
/// by other threads shortly after, which is all a configuration change needs.
/// The few strings (`save`, `requirepass`) sit behind a mutex; nothing on the
/// data path reads them.
///
/// There are no public setters: changes go through [`Config::set`], which
/// validates them.
pub struct Runtime {
    maxclients: AtomicU32,
    maxmemory: AtomicU64,
    maxmemory_policy: AtomicU8,
    maxmemory_samples: AtomicU32,
    timeout: AtomicU32,
    tcp_keepalive: AtomicU32,
    loglevel: AtomicU8,
    proto_max_bulk_len: AtomicU64,
    client_query_buffer_limit: AtomicU64,
    hz: AtomicU32,
    lfu_log_factor: AtomicU32,
    lfu_decay_time: AtomicU32,
    hash_max_listpack_entries: AtomicU64,
    hash_max_listpack_value: AtomicU64,
    /// An i64 stored in two's complement.
    list_max_listpack_size: AtomicU64,
    set_max_intset_entries: AtomicU64,
    busy_reply_threshold: AtomicU64,
    set_max_listpack_entries: AtomicU64,
    set_max_listpack_value: AtomicU64,
    zset_max_listpack_entries: AtomicU64,
    zset_max_listpack_value: AtomicU64,
    protected_mode: AtomicBool,
    /// `lazyfree-lazy-eviction`, `-expire`, `-server-del`, `-user-del`, `-user-flush`.
    lazyfree: [AtomicBool; 5],
    appendonly: AtomicBool,
    appendfsync: AtomicU8,
    key_load_delay: AtomicU32,
    save: Mutex<Vec<(u64, u64)>>,
    requirepass: Mutex<String>,
    /// Serialises `CONFIG SET` calls so two multi-parameter sets never interleave.
    set_lock: Mutex<()>,
    hooks: Mutex<Vec<Hook>>,
}

/// The slot of a `lazyfree-lazy-*` directive in [`Runtime::lazyfree`]'s array.
fn lazyfree_index(key: Key) -> usize {
    match key {
        Key::LazyfreeLazyEviction => 0,
        Key::LazyfreeLazyExpire => 1,
        Key::LazyfreeLazyServerDel => 2,
        Key::LazyfreeLazyUserDel => 3,
        Key::LazyfreeLazyUserFlush => 4,
        _ => unreachable!("{key:?} is not a lazyfree directive"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn secs(v: u32) -> Option<Duration> {
    (v != 0).then(|| Duration::from_secs(u64::from(v)))
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            maxclients: AtomicU32::new(10_000),
            maxmemory: AtomicU64::new(0),
            maxmemory_policy: AtomicU8::new(MaxmemoryPolicy::NoEviction.index()),
            maxmemory_samples: AtomicU32::new(5),
            timeout: AtomicU32::new(0),
            tcp_keepalive: AtomicU32::new(300),
            loglevel: AtomicU8::new(LogLevel::Notice.index()),
            proto_max_bulk_len: AtomicU64::new(512 * MB),
            client_query_buffer_limit: AtomicU64::new(1024 * MB),
            hz: AtomicU32::new(10),
            lfu_log_factor: AtomicU32::new(10),
            lfu_decay_time: AtomicU32::new(1),
            hash_max_listpack_entries: AtomicU64::new(128),
            hash_max_listpack_value: AtomicU64::new(64),
            list_max_listpack_size: AtomicU64::new(-2i64 as u64),
            set_max_intset_entries: AtomicU64::new(512),
            busy_reply_threshold: AtomicU64::new(5000),
            set_max_listpack_entries: AtomicU64::new(128),
            set_max_listpack_value: AtomicU64::new(64),
            zset_max_listpack_entries: AtomicU64::new(128),
            zset_max_listpack_value: AtomicU64::new(64),
            protected_mode: AtomicBool::new(true),
            // Valkey 8's defaults: every removal of a big value frees it in the background.
            lazyfree: std::array::from_fn(|_| AtomicBool::new(true)),
            appendonly: AtomicBool::new(true),
            key_load_delay: AtomicU32::new(0),
            appendfsync: AtomicU8::new(AppendFsync::EverySec.index()),
            save: Mutex::new(Vec::new()),
            requirepass: Mutex::new(String::new()),
            set_lock: Mutex::new(()),
            hooks: Mutex::new(Vec::new()),
        }
    }
}

impl Runtime {
    /// `maxclients`: the most simultaneous client connections.
    pub fn maxclients(&self) -> u32 {
        self.maxclients.load(Relaxed)
    }

    /// `maxmemory` in bytes; 0 means no limit.
    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Relaxed)
    }

    pub fn maxmemory_policy(&self) -> MaxmemoryPolicy {
        MaxmemoryPolicy::from_index(self.maxmemory_policy.load(Relaxed))
    }

    /// `maxmemory-samples`: keys sampled per eviction (1..=64).
    pub fn maxmemory_samples(&self) -> usize {
        self.maxmemory_samples.load(Relaxed) as usize
    }

    /// `timeout` in seconds; 0 means idle clients are never closed.
    pub fn timeout_secs(&self) -> u32 {
        self.timeout.load(Relaxed)
    }

    /// `timeout` as a duration, `None` when disabled.
    pub fn idle_timeout(&self) -> Option<Duration> {
        secs(self.timeout_secs())
    }

    /// `tcp-keepalive` in seconds; 0 means no keepalive.
    pub fn tcp_keepalive_secs(&self) -> u32 {
        self.tcp_keepalive.load(Relaxed)
    }

    /// `tcp-keepalive` as a duration, `None` when disabled.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        secs(self.tcp_keepalive_secs())
    }

    pub fn loglevel(&self) -> LogLevel {
        LogLevel::from_index(self.loglevel.load(Relaxed))
    }

    /// `proto-max-bulk-len`: the largest bulk string a client may send.
    pub fn proto_max_bulk_len(&self) -> usize {
        to_usize(self.proto_max_bulk_len.load(Relaxed))
    }

    /// `client-query-buffer-limit`: the most unparsed input a client may have.
    pub fn client_query_buffer_limit(&self) -> usize {
        to_usize(self.client_query_buffer_limit.load(Relaxed))
    }

    /// `hz`, already clamped to 1..=500.
    /// `key-load-delay`: microseconds to pause per key while loading (Valkey's debugging
    /// knob, used by tests to observe the loading state; 0 = none).
    pub fn key_load_delay(&self) -> u32 {
        self.key_load_delay.load(Relaxed)
    }

    pub fn hz(&self) -> u32 {
        self.hz.load(Relaxed)
    }

    pub fn lfu_log_factor(&self) -> u32 {
        self.lfu_log_factor.load(Relaxed)
    }

    /// `lfu-decay-time` in minutes.
    pub fn lfu_decay_time(&self) -> u32 {
        self.lfu_decay_time.load(Relaxed)
    }

    pub fn hash_max_listpack_entries(&self) -> usize {
        to_usize(self.hash_max_listpack_entries.load(Relaxed))
    }

    pub fn hash_max_listpack_value(&self) -> usize {
        to_usize(self.hash_max_listpack_value.load(Relaxed))
    }

    /// The collection encoding limits shards cache (`*-max-listpack-*`, `*-max-intset-*`).
    pub fn encodings(&self) -> crate::shard::Encodings {
        let get = |a: &AtomicU64| to_usize(a.load(Relaxed));
        crate::shard::Encodings {
            hash: crate::shard::HashLimits {
                max_listpack_entries: get(&self.hash_max_listpack_entries),
                max_listpack_value: get(&self.hash_max_listpack_value),
            },
            list: crate::shard::ListLimits {
                max_listpack_size: self.list_max_listpack_size(),
            },
            set: crate::shard::SetLimits {
                max_intset_entries: get(&self.set_max_intset_entries),
                max_listpack_entries: get(&self.set_max_listpack_entries),
                max_listpack_value: get(&self.set_max_listpack_value),
            },
            zset: crate::shard::ZSetLimits {
                max_listpack_entries: get(&self.zset_max_listpack_entries),
                max_listpack_value: get(&self.zset_max_listpack_value),
            },
        }
    }

    /// `busy-reply-threshold` (ms): how long a script runs before others get -BUSY.
    pub fn busy_reply_threshold(&self) -> u64 {
        self.busy_reply_threshold.load(Relaxed)
    }

    pub fn list_max_listpack_size(&self) -> i64 {
        self.list_max_listpack_size.load(Relaxed) as i64
    }

    pub fn protected_mode(&self) -> bool {
        self.protected_mode.load(Relaxed)
    }

    /// The `lazyfree-lazy-*` directives: which removals free big values in the background.
    pub fn lazyfree(&self) -> crate::shard::LazyFree {
        let get = |k: Key| self.lazyfree[lazyfree_index(k)].load(Relaxed);
        crate::shard::LazyFree {
            eviction: get(Key::LazyfreeLazyEviction),
            expire: get(Key::LazyfreeLazyExpire),
            server_del: get(Key::LazyfreeLazyServerDel),
            user_del: get(Key::LazyfreeLazyUserDel),
            user_flush: get(Key::LazyfreeLazyUserFlush),
        }
    }

    /// `appendonly`: whether data is persisted under `dir` (no = a pure cache).
    pub fn appendonly(&self) -> bool {
        self.appendonly.load(Relaxed)
    }

    pub fn appendfsync(&self) -> AppendFsync {
        AppendFsync::from_index(self.appendfsync.load(Relaxed))
    }

    /// `save` as (seconds, changes) pairs; empty means no snapshots.
    pub fn save_params(&self) -> Vec<(u64, u64)> {
        lock(&self.save).clone()
    }

    /// `requirepass`, `None` when empty (accepted, not yet enforced).
    pub fn requirepass(&self) -> Option<String> {
        let pass = lock(&self.requirepass);
        (!pass.is_empty()).then(|| pass.clone())
    }

    /// Call `hook` with the canonical directive name after every successful
    /// `CONFIG SET` that set it (once per directive, after all of the call's
    /// directives are in place, even if the value did not change). Use it for
    /// side effects the new value needs: reloading the log filter for
    /// `loglevel`, starting eviction for `maxmemory`, and so on. Hooks run on
    /// the thread that ran `CONFIG SET`, with no lock held.
    pub fn on_change(&self, hook: impl Fn(&'static str) + Send + Sync + 'static) {
        lock(&self.hooks).push(Arc::new(hook));
    }

    /// Store a validated value of a runtime-settable directive.
    fn store(&self, key: Key, value: Value) {
        let n32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        match (key, value) {
            (Key::Maxclients, Value::Num(v)) => self.maxclients.store(n32(v), Relaxed),
            (Key::Maxmemory, Value::Num(v)) => self.maxmemory.store(v, Relaxed),
            (Key::MaxmemoryPolicy, Value::Policy(p)) => {
                self.maxmemory_policy.store(p.index(), Relaxed)
            }
            (Key::MaxmemorySamples, Value::Num(v)) => self.maxmemory_samples.store(n32(v), Relaxed),
            (Key::Timeout, Value::Num(v)) => self.timeout.store(n32(v), Relaxed),
            (Key::TcpKeepalive, Value::Num(v)) => self.tcp_keepalive.store(n32(v), Relaxed),
            (Key::Loglevel, Value::Level(l)) => self.loglevel.store(l.index(), Relaxed),
            (Key::ProtoMaxBulkLen, Value::Num(v)) => self.proto_max_bulk_len.store(v, Relaxed),
            (Key::ClientQueryBufferLimit, Value::Num(v)) => {
                self.client_query_buffer_limit.store(v, Relaxed)
            }
            (Key::Hz, Value::Num(v)) => self.hz.store(n32(v), Relaxed),
            (Key::LoadDelay, Value::Num(v)) => self.key_load_delay.store(n32(v), Relaxed),
            (Key::LfuLogFactor, Value::Num(v)) => self.lfu_log_factor.store(n32(v), Relaxed),
            (Key::LfuDecayTime, Value::Num(v)) => self.lfu_decay_time.store(n32(v), Relaxed),
            (Key::HashMaxListpackEntries, Value::Num(v)) => {
                self.hash_max_listpack_entries.store(v, Relaxed)
            }
            (Key::HashMaxListpackValue, Value::Num(v)) => {
                self.hash_max_listpack_value.store(v, Relaxed)
            }
            (Key::ListMaxListpackSize, Value::Num(v)) => {
                self.list_max_listpack_size.store(v, Relaxed)
            }
            (Key::BusyReplyThreshold, Value::Num(v)) => self.busy_reply_threshold.store(v, Relaxed),
            (Key::SetMaxIntsetEntries, Value::Num(v)) => {
                self.set_max_intset_entries.store(v, Relaxed)
            }
            (Key::SetMaxListpackEntries, Value::Num(v)) => {
                self.set_max_listpack_entries.store(v, Relaxed)
            }
            (Key::SetMaxListpackValue, Value::Num(v)) => {
                self.set_max_listpack_value.store(v, Relaxed)
            }
            (Key::ZsetMaxListpackEntries, Value::Num(v)) => {
                self.zset_max_listpack_entries.store(v, Relaxed)
            }
            (Key::ZsetMaxListpackValue, Value::Num(v)) => {
                self.zset_max_listpack_value.store(v, Relaxed)
            }
            (Key::ProtectedMode, Value::Bool(b)) => self.protected_mode.store(b, Relaxed),
            (
                k @ (Key::LazyfreeLazyEviction
                | Key::LazyfreeLazyExpire
                | Key::LazyfreeLazyServerDel
                | Key::LazyfreeLazyUserDel
                | Key::LazyfreeLazyUserFlush),
                Value::Bool(b),
            ) => self.lazyfree[lazyfree_index(k)].store(b, Relaxed),
            (Key::Appendonly, Value::Bool(b)) => self.appendonly.store(b, Relaxed),
            (Key::Appendfsync, Value::Fsync(f)) => self.appendfsync.store(f.index(), Relaxed),
            (Key::Requirepass, Value::Str(s)) => *lock(&self.requirepass) = s,
            // CONFIG SET save replaces the whole list (the file's accumulation
            // rule is handled by the loader).
            (Key::Save, Value::Save { pairs, .. }) => *lock(&self.save) = pairs,
            (key, value) => unreachable!("{key:?} is not a runtime directive or got {value:?}"),
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("maxclients", &self.maxclients())
            .field("maxmemory", &self.maxmemory())
            .field("maxmemory_policy", &self.maxmemory_policy())
            .field("maxmemory_samples", &self.maxmemory_samples())
            .field("timeout", &self.timeout_secs())
            .field("tcp_keepalive", &self.tcp_keepalive_secs())
            .field("loglevel", &self.loglevel())
            .field("proto_max_bulk_len", &self.proto_max_bulk_len())
            .field(
                "client_query_buffer_limit",
                &self.client_query_buffer_limit(),
            )
            .field("hz", &self.hz())
            .field("lfu_log_factor", &self.lfu_log_factor())
            .field("lfu_decay_time", &self.lfu_decay_time())
            .field(
                "hash_max_listpack_entries",
                &self.hash_max_listpack_entries(),
            )
            .field("hash_max_listpack_value", &self.hash_max_listpack_value())
            .field("protected_mode", &self.protected_mode())
            .field("lazyfree", &self.lazyfree())
            .field("appendonly", &self.appendonly())
            .field("appendfsync", &self.appendfsync())
            .field("save", &self.save_params())
            .field("requirepass", &self.requirepass().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Config: startup values + the shared runtime part
// ---------------------------------------------------------------------------

/// One `bind` entry, decoded from Valkey's notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAddr {
    /// The host to listen on: an IP address (`*` → `0.0.0.0`, `::*` → `::`)
    /// or whatever else was written (a hostname is resolved by the listener).
    pub host: String,
    /// Written with a leading `-`: skip it if the address is unavailable
    /// (e.g. no IPv6 on this machine) instead of failing to start.
    pub optional: bool,
}

impl BindAddr {
    pub fn parse(entry: &str) -> BindAddr {
        let (optional, host) = match entry.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let host = match host {
            "*" => "0.0.0.0",
            "::*" => "::",
            other => other,
        };
        BindAddr {
            host: host.to_string(),
            optional,
        }
    }
}

/// The whole configuration.
///
/// Fields are the startup-only directives; they do not change after
/// [`Config::from_args`]. The runtime-settable ones are read through
/// [`Config::runtime`] (clone the `Arc` into every thread that needs them).
/// Cloning a `Config` shares its `Runtime`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `port`: TCP port to listen on (0 = no TCP listener, as in Valkey).
    pub port: u16,
    /// `bind`: addresses in Valkey notation (`*`, `-::*`, `127.0.0.1`, ...),
    /// never empty (an empty `bind ""` means the default `* -::*`, which is
    /// also what Valkey listens on then). See [`Config::bind_addrs`].
    pub bind: Vec<String>,
    /// `dir`: the data directory, as written (not created or checked here).
    pub dir: PathBuf,
    /// `logfile`: empty means standard output.
    pub logfile: String,
    /// `threads`: worker threads; 0 means one per CPU core.
    pub threads: usize,
    /// `databases`: how many numbered databases SELECT may choose from (Valkey's default 16;
    /// a cluster has database 0 only).
    pub databases: u32,
    /// `cluster-databases` (Valkey 9): how many numbered databases a cluster node has
    /// (default 1: database 0 only, as Valkey 8 clusters).
    pub cluster_databases: u32,
    /// `pidfile`: empty means none.
    pub pidfile: String,
    /// The absolute path of the config file, if one was given.
    pub config_file: Option<PathBuf>,
    /// The runtime-settable part, shared across threads.
    pub runtime: Arc<Runtime>,
    /// `cluster-*` directives.
    pub cluster: ClusterConfig,
}

/// The `cluster-*` directives (startup only).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `cluster-enabled`.
    pub enabled: bool,
    /// `cluster-port`: the node-to-node port; 0 = client port + 10000, as in Valkey.
    pub port: u16,
    /// `cluster-peers`: every initial member's `host:port` (client ports), the same list on
    /// every node; it forms the cluster on first start.
    pub peers: Vec<String>,
    /// `cluster-announce-hostname`: what clients are redirected to (else the announce IP).
    pub announce_hostname: String,
    /// `cluster-announce-ip`: the address peers and clients reach this node at.
    pub announce_ip: String,
    /// `cluster-announce-port` / `cluster-announce-bus-port`: 0 = the real ports.
    pub announce_port: u16,
    pub announce_bus_port: u16,
    /// `cluster-replication-factor`: voters per slot group (capped at the node count).
    pub replication_factor: usize,
    /// `cluster-slot-groups`: Raft groups the slots are split into; 0 = two per node.
    pub slot_groups: usize,
    /// `cluster-node-timeout` (ms): a leader silent this long is replaced (the Raft election
    /// timeout). Valkey's default is 15000; tallykv's 1000 makes failover take about a
    /// second.
    pub node_timeout_ms: u64,
    /// `cluster-snapshot-after`: log entries a group applies before it snapshots its data
    /// and purges the log before it.
    pub snapshot_after: u64,
    /// `cluster-leader-balance-delay` (ms): how long leaderships must stay unevenly spread
    /// before the meta leader hands some over; 0 = never.
    pub leader_balance_delay_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            port: 0,
            peers: Vec::new(),
            announce_hostname: String::new(),
            announce_ip: String::new(),
            announce_port: 0,
            announce_bus_port: 0,
            replication_factor: 3,
            slot_groups: 0,
            node_timeout_ms: 1000,
            snapshot_after: 100_000,
            leader_balance_delay_ms: 60_000,
        }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("'{s}' is not host:port");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 6379,
            bind: default_bind(),
            dir: PathBuf::from("./data"),
            logfile: String::new(),
            threads: 0,
            databases: 16,
            cluster_databases: 1,
            pidfile: String::new(),
            config_file: None,
            runtime: Arc::new(Runtime::default()),
            cluster: ClusterConfig::default(),
        }
    }
}

fn default_bind() -> Vec<String> {
    vec!["*".to_string(), "-::*".to_string()]
}

/// Loader state for one `from_args` call.
struct Loader {
    cfg: Config,
    /// Valkey's `save_loaded`: the first `save` line of the configuration
    /// replaces the default, later ones add to it.
    save_loaded: bool,
}

/// One stretch of the pseudo-file: (byte offset where it starts, source).
type Segments = [(usize, ConfigSource)];

impl Config {
    /// Build the configuration from the process arguments (without `argv[0]`),
    /// the way valkey-server does:
    ///
    /// * If the first argument does not start with `--` (and is not `-`), it
    ///   is the config file.
    /// * A `-` as the first or last argument reads more config from stdin.
    /// * Every `--name` starts a new directive line; the arguments after it are
    ///   its values (quoted, so spaces survive) until the next `--` argument.
    ///   A directive given no value yet takes the next argument even if it
    ///   starts with `--` (so `--requirepass --x` works), except `--save`
    ///   directly followed by another option, which means `save ""`.
    /// * The file is read first, then stdin, then the arguments, so arguments
    ///   override the file.
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let mut loader = Loader {
            cfg: Config::default(),
            save_loaded: false,
        };
        let mut text: Vec<u8> = Vec::new();
        let mut segments: Vec<(usize, ConfigSource)> = Vec::new();
        let mut j = 0;

        if let Some(first) = args.first()
            && first != "-"
            && !first.starts_with("--")
        {
            let path = PathBuf::from(first);
            text = read_file(&path)?;
            let abs = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
            segments.push((0, ConfigSource::File(abs.clone())));
            loader.cfg.config_file = Some(abs);
            j = 1;
        }

        let mut from_stdin = false;
        let mut options = String::new();
        let mut handled_last_arg = true;
        while j < args.len() {
            let arg = &args[j];
            let last = j + 1 == args.len();
            if arg == "-" && (j == 0 || last) {
                from_stdin = true;
            } else if handled_last_arg && arg.starts_with("--") {
                if !options.is_empty() {
                    options.push('\n');
                }
                options.push_str(&arg[2..]);
                options.push(' ');
                // "--port 7000" given as one argument carries its own value.
                handled_last_arg =
                    parse::split_args(arg.as_bytes()).is_none_or(|words| words.len() != 1);
                if !handled_last_arg && arg.eq_ignore_ascii_case("--save") {
                    if !last && args[j + 1].starts_with("--") {
                        options.push_str("\"\"");
                        handled_last_arg = true;
                    } else if last {
                        options.push_str("\"\"");
                    }
                }
            } else {
                options.push_str(&parse::repr(arg.as_bytes()));
                options.push(' ');
                handled_last_arg = true;
            }
            j += 1;
        }

        if from_stdin {
            segments.push((text.len(), ConfigSource::Stdin));
            std::io::stdin()
                .read_to_end(&mut text)
                .map_err(|e| ConfigError::Open {
                    path: PathBuf::from("-"),
                    reason: error::strerror(&e),
                })?;
        }
        if !args.is_empty() {
            // Valkey appends "\n" + options whenever there are arguments.
            text.push(b'\n');
            segments.push((text.len(), ConfigSource::CommandLine));
            text.extend_from_slice(options.as_bytes());
        }

        loader.load(&text, &segments, 0)?;
        loader.finish()
    }

    /// `bind` decoded: the hosts to listen on and whether each is optional.
    pub fn bind_addrs(&self) -> Vec<BindAddr> {
        self.bind.iter().map(|b| BindAddr::parse(b)).collect()
    }

    /// The numbered databases SELECT may choose from: `cluster-databases` in a cluster,
    /// `databases` standalone (Valkey 9's rule).
    pub fn effective_databases(&self) -> u32 {
        if self.cluster.enabled {
            self.cluster_databases
        } else {
            self.databases
        }
    }

    /// Things worth logging at startup once logging is set up: directives that
    /// are accepted but not acted on yet, and suspicious values.
    pub fn startup_warnings(&self) -> Vec<String> {
        let rt = &self.runtime;
        let mut w = Vec::new();
        if !rt.save_params().is_empty() && !rt.appendonly() {
            w.push("save is set, but appendonly is no: there is no data dir, so no snapshots will be taken".into());
        }
        let maxmemory = rt.maxmemory();
        if maxmemory > 0 && maxmemory < MB {
            w.push(format!(
                "WARNING: You specified a maxmemory value that is less than 1MB (current value is {maxmemory} \
                 bytes). Are you sure this is what you really want?"
            ));
        }
        w
    }

    /// `CONFIG GET pattern [pattern ...]`: every directive whose name matches
    /// one of the glob patterns (case-insensitive), each once, with its value
    /// rendered as Valkey renders it. A pattern without `*?[` is an exact,
    /// case-insensitive lookup and, as in Valkey, is answered under the name
    /// as the client spelled it. Aliases are names too (`CONFIG GET *` lists
    /// `hash-max-ziplist-entries` as well as `hash-max-listpack-entries`).
    pub fn get(&self, patterns: &[&[u8]]) -> Vec<(String, String)> {
        let mut seen: Vec<&'static str> = Vec::new();
        let mut out = Vec::new();
        for &pattern in patterns {
            if !pattern.iter().any(|c| matches!(c, b'*' | b'?' | b'[')) {
                if let Some((spec, name)) = lookup(pattern)
                    && !seen.contains(&name)
                {
                    seen.push(name);
                    out.push((
                        String::from_utf8_lossy(pattern).into_owned(),
                        self.render(spec.key),
                    ));
                }
                continue;
            }
            for (spec, name) in names() {
                if !seen.contains(&name) && crate::util::glob_match(pattern, name.as_bytes(), true)
                {
                    seen.push(name);
                    out.push((name.to_string(), self.render(spec.key)));
                }
            }
        }
        out
    }

    /// `CONFIG SET name value [name value ...]` with Valkey 7 semantics: all
    /// pairs are checked and validated before any is applied, so either all
    /// take effect or none does. Errors are Valkey's reply texts, starting
    /// with `ERR ` (the caller adds the `-`):
    ///
    /// * unknown name: `ERR Unknown option or number of arguments for CONFIG SET - '<name>'`
    /// * startup-only: `ERR CONFIG SET failed (possibly related to argument '<name>') - can't set immutable config`
    ///   (`dir`: `... - can't set protected config`)
    /// * same directive twice: `ERR CONFIG SET failed (possibly related to argument '<name>') - duplicate parameter`
    /// * bad value: `ERR CONFIG SET failed (possibly related to argument '<name>') - <reason>`
    ///
    /// As in Valkey, the first problem found in argument order is reported, by
    /// the name as the client wrote it, except value errors, which use the
    /// lowercase name or alias. The caller checks the argument count
    /// (`ERR syntax error` for an odd number).
    pub fn set(&self, pairs: &[(&[u8], &[u8])]) -> Result<(), String> {
        let failed = |name: &str, reason: &str| {
            format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")
        };
        let mut chosen: Vec<(&'static Spec, &'static str, &[u8])> = Vec::with_capacity(pairs.len());
        for &(name, value) in pairs {
            let shown = String::from_utf8_lossy(name);
            let Some((spec, entry)) = lookup(name) else {
                return Err(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{shown}'"
                ));
            };
            match spec.access {
                Access::Immutable => return Err(failed(&shown, "can't set immutable config")),
                Access::Protected => return Err(failed(&shown, "can't set protected config")),
                Access::Mutable => {}
            }
            if chosen.iter().any(|(s, _, _)| s.key == spec.key) {
                return Err(failed(&shown, "duplicate parameter"));
            }
            chosen.push((spec, entry, value));
        }

        let mut values = Vec::with_capacity(chosen.len());
        for (spec, entry, value) in chosen {
            let args: Vec<Vec<u8>> = if spec.multi {
                // Valkey splits multi-argument values on spaces.
                value
                    .split(|&c| c == b' ')
                    .filter(|a| !a.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect()
            } else {
                vec![value.to_vec()]
            };
            // Valkey names the entry used (an alias is its own entry).
            let parsed = parse_value(spec.key, &args).map_err(|reason| failed(entry, &reason))?;
            values.push((spec, parsed));
        }

        let names: Vec<&'static str> = {
            let _serialised = lock(&self.runtime.set_lock);
            values
                .into_iter()
                .map(|(spec, value)| {
                    // No value: it may be a password.
                    tracing::debug!(directive = spec.name, "CONFIG SET");
                    self.runtime.store(spec.key, value);
                    spec.name
                })
                .collect()
        };
        let hooks: Vec<Hook> = lock(&self.runtime.hooks).clone();
        for name in names {
            for hook in &hooks {
                hook(name);
            }
        }
        Ok(())
    }

    /// A directive's current value as `CONFIG GET` shows it.
    fn render(&self, key: Key) -> String {
        let rt = &self.runtime;
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        match key {
            Key::Port => self.port.to_string(),
            Key::Bind => self.bind.join(" "),
            Key::ProtectedMode => yes_no(rt.protected_mode()),
            Key::Maxclients => rt.maxclients().to_string(),
            Key::Maxmemory => rt.maxmemory().to_string(),
            Key::MaxmemoryPolicy => rt.maxmemory_policy().as_str().to_string(),
            Key::MaxmemorySamples => rt.maxmemory_samples().to_string(),
            Key::Timeout => rt.timeout_secs().to_string(),
            Key::TcpKeepalive => rt.tcp_keepalive_secs().to_string(),
            // Valkey answers with its (absolute) working directory.
            Key::Dir => std::path::absolute(&self.dir)
                .unwrap_or_else(|_| self.dir.clone())
                .display()
                .to_string(),
            Key::Loglevel => rt.loglevel().as_str().to_string(),
            Key::Logfile => self.logfile.clone(),
            Key::Threads => self.threads.to_string(),
            Key::ProtoMaxBulkLen => rt.proto_max_bulk_len().to_string(),
            Key::ClientQueryBufferLimit => rt.client_query_buffer_limit().to_string(),
            Key::Databases => self.databases.to_string(),
            Key::ClusterDatabases => self.cluster_databases.to_string(),
            Key::Hz => rt.hz().to_string(),
            Key::LoadDelay => rt.key_load_delay().to_string(),
            Key::LfuLogFactor => rt.lfu_log_factor().to_string(),
            Key::LfuDecayTime => rt.lfu_decay_time().to_string(),
            Key::LazyfreeLazyEviction => yes_no(rt.lazyfree().eviction),
            Key::LazyfreeLazyExpire => yes_no(rt.lazyfree().expire),
            Key::LazyfreeLazyServerDel => yes_no(rt.lazyfree().server_del),
            Key::LazyfreeLazyUserDel => yes_no(rt.lazyfree().user_del),
            Key::LazyfreeLazyUserFlush => yes_no(rt.lazyfree().user_flush),
            Key::HashMaxListpackEntries => rt.hash_max_listpack_entries().to_string(),
            Key::HashMaxListpackValue => rt.hash_max_listpack_value().to_string(),
            Key::ListMaxListpackSize => rt.list_max_listpack_size().to_string(),
            Key::SetMaxIntsetEntries => rt.encodings().set.max_intset_entries.to_string(),
            Key::BusyReplyThreshold => rt.busy_reply_threshold().to_string(),
            Key::SetMaxListpackEntries => rt.encodings().set.max_listpack_entries.to_string(),
            Key::SetMaxListpackValue => rt.encodings().set.max_listpack_value.to_string(),
            Key::ZsetMaxListpackEntries => rt.encodings().zset.max_listpack_entries.to_string(),
            Key::ZsetMaxListpackValue => rt.encodings().zset.max_listpack_value.to_string(),
            Key::Appendonly => yes_no(rt.appendonly()),
            Key::Appendfsync => rt.appendfsync().as_str().to_string(),
            Key::Save => {
                let pairs: Vec<String> = rt
                    .save_params()
                    .iter()
                    .map(|(s, c)| format!("{s} {c}"))
                    .collect();
                pairs.join(" ")
            }
            Key::Requirepass => rt.requirepass().unwrap_or_default(),
            Key::Daemonize => "no".to_string(),
            Key::Pidfile => self.pidfile.clone(),
            Key::ClusterEnabled => yes_no(self.cluster.enabled),
            Key::ClusterPort => self.cluster.port.to_string(),
            Key::ClusterPeers => self.cluster.peers.join(","),
            Key::ClusterAnnounceHostname => self.cluster.announce_hostname.clone(),
            Key::ClusterAnnounceIp => self.cluster.announce_ip.clone(),
            Key::ClusterAnnouncePort => self.cluster.announce_port.to_string(),
            Key::ClusterAnnounceBusPort => self.cluster.announce_bus_port.to_string(),
            Key::ClusterReplicationFactor => self.cluster.replication_factor.to_string(),
            Key::ClusterSlotGroups => self.cluster.slot_groups.to_string(),
            Key::ClusterNodeTimeout => self.cluster.node_timeout_ms.to_string(),
            Key::ClusterSnapshotAfter => self.cluster.snapshot_after.to_string(),
            Key::ClusterLeaderBalanceDelay => self.cluster.leader_balance_delay_ms.to_string(),
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Open {
        path: path.to_path_buf(),
        reason: error::strerror(&e),
    })
}

impl Loader {
    /// Valkey's `loadServerConfigFromString`. `segments` says which source each
    /// stretch of `text` came from, for error messages.
    fn load(&mut self, text: &[u8], segments: &Segments, depth: usize) -> Result<(), ConfigError> {
        let mut offset = 0;
        for (i, raw) in text.split(|&c| c == b'\n').enumerate() {
            let start = offset;
            offset += raw.len() + 1;
            let line = trim(raw);
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let source = segments
                .iter()
                .rev()
                .find(|(at, _)| *at <= start)
                .map(|(_, s)| s.clone())
                .unwrap_or(ConfigSource::CommandLine);
            let err = |directive: &str, reason: String| ConfigError::Line {
                source: source.clone(),
                line: i + 1,
                text: String::from_utf8_lossy(line).into_owned(),
                directive: directive.to_string(),
                reason,
            };
            let Some(args) = parse::split_args(line) else {
                return Err(err("", "Unbalanced quotes in configuration line".into()));
            };
            let Some(first) = args.first() else { continue };
            let name = String::from_utf8_lossy(first).to_ascii_lowercase();
            if let Some((spec, _)) = lookup(name.as_bytes()) {
                let values: Vec<Vec<u8>> = if !spec.multi {
                    if args.len() != 2 {
                        return Err(err(&name, "wrong number of arguments".into()));
                    }
                    args[1..].to_vec()
                } else if args.len() == 2 && !args[1].is_empty() {
                    // `--bind "127.0.0.1 ::1"`: one argument holding several.
                    parse::split_args(&args[1]).ok_or_else(|| {
                        err(&name, "Unbalanced quotes in configuration line".into())
                    })?
                } else {
                    args[1..].to_vec()
                };
                let value = parse_value(spec.key, &values).map_err(|reason| err(&name, reason))?;
                self.apply(spec.key, value);
            } else if name == "include" && args.len() == 2 {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(err(
                        &name,
                        "include nesting is too deep (is a file including itself?)".into(),
                    ));
                }
                let path = utf8(&args[1]).map_err(|reason| err(&name, reason))?;
                self.include(Path::new(&path), depth + 1)
                    .map_err(|e| match e {
                        // An include pattern we cannot expand is this line's fault.
                        ConfigError::General { reason } => err(&name, reason),
                        other => other,
                    })?;
            } else {
                return Err(err(
                    &name,
                    "Bad directive or wrong number of arguments".into(),
                ));
            }
        }
        Ok(())
    }

    /// `include path`: load another file in place. As in Valkey, a relative
    /// path is relative to the working directory, and a path whose file name
    /// holds `*`, `?` or `[` includes every matching file (sorted), none being
    /// fine.
    fn include(&mut self, path: &Path, depth: usize) -> Result<(), ConfigError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_glob = |s: &str| s.contains(['*', '?', '[']);
        if !is_glob(&file_name) {
            let text = read_file(path)?;
            return self.load(&text, &[(0, ConfigSource::File(path.to_path_buf()))], depth);
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if is_glob(&dir.to_string_lossy()) {
            return Err(ConfigError::General {
                reason:
                    "include patterns may only use wildcards in the file name, not in directories"
                        .into(),
            });
        }
        let mut matches: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| {
                    crate::util::glob_match(
                        file_name.as_bytes(),
                        e.file_name().as_encoded_bytes(),
                        false,
                    )
                })
                .map(|e| dir.join(e.file_name()))
                .collect(),
            // Like glob(3) failing: nothing to include.
            Err(_) => Vec::new(),
        };
        matches.sort();
        for file in matches {
            let text = read_file(&file)?;
            self.load(&text, &[(0, ConfigSource::File(file.clone()))], depth)?;
        }
        Ok(())
    }

    /// Put a value loaded from the configuration in place.
    fn apply(&mut self, key: Key, value: Value) {
        let cfg = &mut self.cfg;
        match (key, value) {
            (Key::Port, Value::Num(v)) => cfg.port = v as u16,
            (Key::Bind, Value::List(addrs)) => {
                cfg.bind = if addrs.is_empty() {
                    default_bind()
                } else {
                    addrs
                }
            }
            (Key::Dir, Value::Str(s)) => cfg.dir = PathBuf::from(s),
            (Key::Logfile, Value::Str(s)) => cfg.logfile = s,
            (Key::Pidfile, Value::Str(s)) => cfg.pidfile = s,
            (Key::Threads, Value::Num(v)) => cfg.threads = v as usize,
            (Key::Databases, Value::Num(v)) => cfg.databases = v as u32,
            (Key::ClusterDatabases, Value::Num(v)) => cfg.cluster_databases = v as u32,
            (Key::Daemonize, _) => {}
            (Key::ClusterEnabled, Value::Bool(b)) => cfg.cluster.enabled = b,
            (Key::ClusterPort, Value::Num(v)) => cfg.cluster.port = v as u16,
            (Key::ClusterPeers, Value::List(p)) => cfg.cluster.peers = p,
            (Key::ClusterAnnounceHostname, Value::Str(s)) => cfg.cluster.announce_hostname = s,
            (Key::ClusterAnnounceIp, Value::Str(s)) => cfg.cluster.announce_ip = s,
            (Key::ClusterAnnouncePort, Value::Num(v)) => cfg.cluster.announce_port = v as u16,
            (Key::ClusterAnnounceBusPort, Value::Num(v)) => {
                cfg.cluster.announce_bus_port = v as u16
            }
            (Key::ClusterReplicationFactor, Value::Num(v)) => {
                cfg.cluster.replication_factor = v as usize
            }
            (Key::ClusterSlotGroups, Value::Num(v)) => cfg.cluster.slot_groups = v as usize,
            (Key::ClusterNodeTimeout, Value::Num(v)) => cfg.cluster.node_timeout_ms = v,
            (Key::ClusterSnapshotAfter, Value::Num(v)) => cfg.cluster.snapshot_after = v,
            (Key::ClusterLeaderBalanceDelay, Value::Num(v)) => {
                cfg.cluster.leader_balance_delay_ms = v
            }
            (Key::Save, Value::Save { clear, pairs }) => {
                // Valkey: `save ""` empties the list; the first `save` line
                // replaces the defaults; later lines append.
                let mut save = lock(&cfg.runtime.save);
                if clear || !self.save_loaded {
                    save.clear();
                }
                self.save_loaded = true;
                save.extend(pairs);
            }
            (key, value) => cfg.runtime.store(key, value),
        }
    }

    /// Checks on the configuration as a whole, as Valkey does after loading.
    fn finish(self) -> Result<Config, ConfigError> {
        // A cluster node without cluster-peers waits for another node's CLUSTER MEET.
        let c = &self.cfg.cluster;
        if c.enabled && self.cfg.port == 0 {
            return Err(ConfigError::General {
                reason: "cluster-enabled yes needs a TCP port".to_string(),
            });
        }
        if !self.cfg.logfile.is_empty()
            && let Err(e) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.cfg.logfile)
        {
            return Err(ConfigError::General {
                reason: format!("Can't open the log file: {}", error::strerror(&e)),
            });
        }
        Ok(self.cfg)
    }
}

/// Valkey's `sdstrim(line, " \t\r\n")`.
fn trim(mut line: &[u8]) -> &[u8] {
    let blank = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    while let Some((c, rest)) = line.split_first()
        && blank(c)
    {
        line = rest;
    }
    while let Some((c, rest)) = line.split_last()
        && blank(c)
    {
        line = rest;
    }
    line
}
