//! [`Runtime`]: the current value of every directive, one cell per table entry, shared by
//! every thread as `Arc<Runtime>`.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::enums::{AppendFsync, ConfigEnum, LogLevel, MaxmemoryPolicy};
use super::spec::Value;
use super::table::{KEYS, Key, SPECS};

/// Puts a `CONFIG SET` into effect where that can fail (see [`Runtime::on_apply`]): given
/// the directives the call set, Ok, or the directive to blame and why.
pub(super) type Applier =
    Arc<dyn Fn(&[&'static str]) -> Result<(), (&'static str, String)> + Send + Sync>;

/// Where one directive's value lives.
enum Cell {
    /// Numbers, booleans and enums: a `Relaxed` load, cheap enough for the data path.
    Num(AtomicU64),
    /// Strings, lists and `save`: nothing on the data path reads them.
    Other(Mutex<Value>),
}

/// Every directive's current value, shared by every thread as `Arc<Runtime>` (the
/// [`super::Config::runtime`] field).
///
/// Every numeric and enum setting is an atomic read with `Relaxed` ordering:
/// cheap enough for the data path, and a value changed by `CONFIG SET` is seen
/// by other threads shortly after, which is all a configuration change needs.
/// Startup-only directives live here too (they just never change), so `CONFIG GET`
/// renders every directive the same way.
///
/// There are no public setters: changes go through [`super::Config::set`], which
/// validates them.
pub struct Runtime {
    /// Indexed by [`Key`].
    cells: [Cell; KEYS],
    /// Serialises `CONFIG SET` calls so two multi-parameter sets never interleave.
    pub(super) set_lock: Mutex<()>,
    pub(super) appliers: Mutex<Vec<Applier>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn secs(v: u32) -> Option<Duration> {
    (v != 0).then(|| Duration::from_secs(u64::from(v)))
}

impl Default for Runtime {
    /// Every directive at the default its table entry gives.
    fn default() -> Self {
        Runtime {
            cells: std::array::from_fn(|i| match SPECS[i].default_value() {
                Value::Num(v) => Cell::Num(AtomicU64::new(v)),
                other => Cell::Other(Mutex::new(other)),
            }),
            set_lock: Mutex::new(()),
            appliers: Mutex::new(Vec::new()),
        }
    }
}

// The generic store, driven by the table.
impl Runtime {
    /// Store a checked value (parsed by the directive's own entry, so it has the shape of
    /// its default).
    pub(super) fn store(&self, key: Key, value: Value) {
        match (&self.cells[key as usize], value) {
            (Cell::Num(a), Value::Num(v)) => a.store(v, Relaxed),
            (Cell::Other(m), value) if !matches!(value, Value::Num(_)) => *lock(m) = value,
            (_, value) => unreachable!("{key:?} cannot hold {value:?}"),
        }
    }

    /// A directive's current value.
    pub(super) fn value(&self, key: Key) -> Value {
        match &self.cells[key as usize] {
            Cell::Num(a) => Value::Num(a.load(Relaxed)),
            Cell::Other(m) => lock(m).clone(),
        }
    }

    /// A directive's current value as `CONFIG GET` shows it.
    pub(super) fn render(&self, key: Key) -> String {
        SPECS[key as usize].render(&self.value(key))
    }

    /// A number, boolean (0/1) or enum (its index) directive.
    pub(super) fn num(&self, key: Key) -> u64 {
        match &self.cells[key as usize] {
            Cell::Num(a) => a.load(Relaxed),
            Cell::Other(_) => unreachable!("{key:?} is not a number"),
        }
    }

    pub(super) fn flag(&self, key: Key) -> bool {
        self.num(key) != 0
    }

    pub(super) fn choice<E: ConfigEnum>(&self, key: Key) -> E {
        E::from_index(to_usize(self.num(key)))
    }

    pub(super) fn text(&self, key: Key) -> String {
        match self.value(key) {
            Value::Text(s) => s,
            other => unreachable!("{key:?} holds {other:?}, not a string"),
        }
    }

    pub(super) fn list(&self, key: Key) -> Vec<String> {
        match self.value(key) {
            Value::List(items) => items,
            other => unreachable!("{key:?} holds {other:?}, not a list"),
        }
    }

    /// Call `hook` with the canonical directive name after every successful
    /// `CONFIG SET` that set it (once per directive, after all of the call's
    /// directives are in place, even if the value did not change): an [`Runtime::on_apply`]
    /// that cannot fail, for side effects such as reloading the log filter for `loglevel`.
    pub fn on_change(&self, hook: impl Fn(&'static str) + Send + Sync + 'static) {
        self.on_apply(move |names| {
            names.iter().for_each(|&name| hook(name));
            Ok(())
        });
    }

    /// Call `apply` with the directives of every `CONFIG SET`, after the new values are
    /// stored and before the call answers (on the thread that ran it, with CONFIG SET's
    /// lock held, so two calls never interleave): an error (the directive to blame, and
    /// why) puts back every value the call set and fails it with Valkey's `CONFIG SET
    /// failed` reply. For settings that take effect only if something can be built from
    /// them (TLS certificates).
    pub fn on_apply(
        &self,
        apply: impl Fn(&[&'static str]) -> Result<(), (&'static str, String)> + Send + Sync + 'static,
    ) {
        lock(&self.appliers).push(Arc::new(apply));
    }
}

// The typed getters the rest of the server reads.
impl Runtime {
    /// `maxclients`: the most simultaneous client connections.
    pub fn maxclients(&self) -> u32 {
        self.num(Key::Maxclients) as u32
    }

    /// `maxmemory` in bytes; 0 means no limit.
    pub fn maxmemory(&self) -> u64 {
        self.num(Key::Maxmemory)
    }

    pub fn maxmemory_policy(&self) -> MaxmemoryPolicy {
        self.choice(Key::MaxmemoryPolicy)
    }

    /// `maxmemory-samples`: keys sampled per eviction (1..=64).
    pub fn maxmemory_samples(&self) -> usize {
        to_usize(self.num(Key::MaxmemorySamples))
    }

    /// `timeout` in seconds; 0 means idle clients are never closed.
    pub fn timeout_secs(&self) -> u32 {
        self.num(Key::Timeout) as u32
    }

    /// `timeout` as a duration, `None` when disabled.
    pub fn idle_timeout(&self) -> Option<Duration> {
        secs(self.timeout_secs())
    }

    /// `tcp-keepalive` in seconds; 0 means no keepalive.
    pub fn tcp_keepalive_secs(&self) -> u32 {
        self.num(Key::TcpKeepalive) as u32
    }

    /// `tcp-keepalive` as a duration, `None` when disabled.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        secs(self.tcp_keepalive_secs())
    }

    pub fn loglevel(&self) -> LogLevel {
        self.choice(Key::Loglevel)
    }

    /// `log-format`.
    pub fn log_format(&self) -> crate::config::LogFormat {
        self.choice(Key::LogFormat)
    }

    /// `log-timestamp-format`.
    pub fn log_timestamp_format(&self) -> crate::config::LogTimestampFormat {
        self.choice(Key::LogTimestampFormat)
    }

    /// `proto-max-bulk-len`: the largest bulk string a client may send.
    pub fn proto_max_bulk_len(&self) -> usize {
        to_usize(self.num(Key::ProtoMaxBulkLen))
    }

    /// `client-query-buffer-limit`: the most unparsed input a client may have.
    pub fn client_query_buffer_limit(&self) -> usize {
        to_usize(self.num(Key::ClientQueryBufferLimit))
    }

    /// `key-load-delay`: microseconds to pause per key while loading (Valkey's debugging
    /// knob, used by tests to observe the loading state; 0 = none).
    pub fn key_load_delay(&self) -> u32 {
        self.num(Key::LoadDelay) as u32
    }

    /// `hz`, already clamped to 1..=500.
    pub fn hz(&self) -> u32 {
        self.num(Key::Hz) as u32
    }

    pub fn lfu_log_factor(&self) -> u32 {
        self.num(Key::LfuLogFactor) as u32
    }

    /// `lfu-decay-time` in minutes.
    pub fn lfu_decay_time(&self) -> u32 {
        self.num(Key::LfuDecayTime) as u32
    }

    pub fn hash_max_listpack_entries(&self) -> usize {
        to_usize(self.num(Key::HashMaxListpackEntries))
    }

    pub fn hash_max_listpack_value(&self) -> usize {
        to_usize(self.num(Key::HashMaxListpackValue))
    }

    pub fn list_max_listpack_size(&self) -> i64 {
        self.num(Key::ListMaxListpackSize) as i64
    }

    /// The collection encoding limits shards cache (`*-max-listpack-*`, `*-max-intset-*`).
    pub fn encodings(&self) -> crate::shard::Encodings {
        let get = |k: Key| to_usize(self.num(k));
        crate::shard::Encodings {
            hash: crate::shard::HashLimits {
                max_listpack_entries: get(Key::HashMaxListpackEntries),
                max_listpack_value: get(Key::HashMaxListpackValue),
            },
            list: crate::shard::ListLimits {
                max_listpack_size: self.list_max_listpack_size(),
            },
            set: crate::shard::SetLimits {
                max_intset_entries: get(Key::SetMaxIntsetEntries),
                max_listpack_entries: get(Key::SetMaxListpackEntries),
                max_listpack_value: get(Key::SetMaxListpackValue),
            },
            zset: crate::shard::ZSetLimits {
                max_listpack_entries: get(Key::ZsetMaxListpackEntries),
                max_listpack_value: get(Key::ZsetMaxListpackValue),
            },
        }
    }

    /// `busy-reply-threshold` (ms): how long a script runs before others get -BUSY.
    pub fn busy_reply_threshold(&self) -> u64 {
        self.num(Key::BusyReplyThreshold)
    }

    pub fn protected_mode(&self) -> bool {
        self.flag(Key::ProtectedMode)
    }

    /// The `lazyfree-lazy-*` directives: which removals free big values in the background.
    pub fn lazyfree(&self) -> crate::shard::LazyFree {
        crate::shard::LazyFree {
            eviction: self.flag(Key::LazyfreeLazyEviction),
            expire: self.flag(Key::LazyfreeLazyExpire),
            server_del: self.flag(Key::LazyfreeLazyServerDel),
            user_del: self.flag(Key::LazyfreeLazyUserDel),
            user_flush: self.flag(Key::LazyfreeLazyUserFlush),
        }
    }

    /// `appendonly`: whether data is persisted under `dir` (no = a pure cache).
    pub fn appendonly(&self) -> bool {
        self.flag(Key::Appendonly)
    }

    pub fn appendfsync(&self) -> AppendFsync {
        self.choice(Key::Appendfsync)
    }

    /// `save` as (seconds, changes) pairs; empty means no snapshots.
    pub fn save_params(&self) -> Vec<(u64, u64)> {
        match self.value(Key::Save) {
            Value::Pairs(pairs) => pairs,
            other => unreachable!("save holds {other:?}"),
        }
    }

    /// `card-pan-guard`.
    pub fn card_pan_guard(&self) -> crate::config::CardPanGuard {
        self.choice(Key::CardPanGuard)
    }

    /// `card-pan-guard-exempt-keys`, split into its glob patterns.
    pub fn card_pan_guard_exempt_keys(&self) -> Vec<Vec<u8>> {
        self.text(Key::CardPanGuardExemptKeys)
            .split_ascii_whitespace()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    }

    /// `tls-cluster`: mutual TLS on the cluster bus.
    pub fn tls_cluster(&self) -> bool {
        self.flag(Key::TlsCluster)
    }

    /// `tls-port`: 0 means no TLS listener.
    pub fn tls_port(&self) -> u16 {
        self.num(Key::TlsPort) as u16
    }

    /// The `tls-*` directives the TLS server configuration is built from.
    pub fn tls(&self) -> crate::security::tls::TlsSettings {
        crate::security::tls::TlsSettings {
            cert_file: self.text(Key::TlsCertFile),
            key_file: self.text(Key::TlsKeyFile),
            key_file_pass: self.text(Key::TlsKeyFilePass),
            ca_cert_file: self.text(Key::TlsCaCertFile),
            ca_cert_dir: self.text(Key::TlsCaCertDir),
            auth_clients: self.choice(Key::TlsAuthClients),
            protocols: self.text(Key::TlsProtocols),
            ciphers: self.text(Key::TlsCiphers),
            ciphersuites: self.text(Key::TlsCiphersuites),
            prefer_server_ciphers: self.flag(Key::TlsPreferServerCiphers),
            session_caching: self.flag(Key::TlsSessionCaching),
            session_cache_size: to_usize(self.num(Key::TlsSessionCacheSize)),
            session_cache_timeout: Duration::from_secs(self.num(Key::TlsSessionCacheTimeout)),
            client_cert_file: self.text(Key::TlsClientCertFile),
            client_key_file: self.text(Key::TlsClientKeyFile),
            client_key_file_pass: self.text(Key::TlsClientKeyFilePass),
        }
    }

    /// `requirepass`, `None` when empty.
    pub fn requirepass(&self) -> Option<String> {
        Some(self.text(Key::Requirepass)).filter(|p| !p.is_empty())
    }

    /// `rename-command` lines as (command, new name) pairs, in order; an empty new name
    /// hides the command.
    pub fn renamed_commands(&self) -> Vec<(String, String)> {
        self.list(Key::RenameCommand)
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect()
    }

    /// `encryption-at-rest-key-file`, `None` when empty (encryption at rest off).
    pub fn encryption_at_rest_key_file(&self) -> Option<String> {
        Some(self.text(Key::EncryptionAtRestKeyFile)).filter(|p| !p.is_empty())
    }

    /// `audit-log-file`, `None` when empty (no audit log).
    pub fn audit_log_file(&self) -> Option<String> {
        Some(self.text(Key::AuditLogFile)).filter(|p| !p.is_empty())
    }

    /// `audit-log-max-size` in bytes: rotate at this size (0: never).
    pub fn audit_log_max_size(&self) -> u64 {
        self.num(Key::AuditLogMaxSize)
    }

    /// `audit-log-max-files`: how many rotated files are kept.
    pub fn audit_log_max_files(&self) -> usize {
        usize::try_from(self.num(Key::AuditLogMaxFiles)).unwrap_or(usize::MAX)
    }

    /// `acllog-max-len`: the most entries ACL LOG keeps.
    pub fn acllog_max_len(&self) -> usize {
        usize::try_from(self.num(Key::AcllogMaxLen)).unwrap_or(usize::MAX)
    }

    /// The `user` lines: each user as ACL LIST shows it, without the leading `user `
    /// (see `security::acl::declaration`), in the order the configuration gave them.
    pub fn user_declarations(&self) -> Vec<String> {
        self.list(Key::User)
    }

    /// `aclfile`, `None` when empty.
    pub fn aclfile(&self) -> Option<String> {
        Some(self.text(Key::Aclfile)).filter(|p| !p.is_empty())
    }
}

impl fmt::Debug for Runtime {
    /// Every directive as `CONFIG GET` shows it, sensitive ones as `<set>` (or empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for spec in SPECS {
            let value = self.render(spec.key);
            if spec.sensitive && !value.is_empty() {
                map.entry(&spec.name, &"<set>");
            } else {
                map.entry(&spec.name, &value);
            }
        }
        map.finish()
    }
}
