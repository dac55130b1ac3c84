//! The directive table: every directive tallykv knows, one entry each, in the order
//! `CONFIG GET *` lists them and `conf/tallykv.conf` documents them. Everything else in
//! `config` (parsing a file or `--directive value`, `CONFIG GET`/`SET`, the stored values,
//! the documented config file) is driven by these entries.
//!
//! An entry reads:
//!
//! ```text
//! /// Its comment in conf/tallykv.conf (none: the entry above describes it too).
//! Key {
//!     section: "TITLE",          // optional: starts a section of the conf file
//!     name: "directive-name",
//!     alias: "old-name",         // optional
//!     access: Mutable,           // or Immutable (startup only), Protected
//!     sensitive: true,           // optional: never logged (a password)
//!     kind: int(0, 65535),       // unsigned, memory, clamped, Bool, Enum(T::NAMES), Str, Special(&X)
//!     default: "6379",           // as a config file writes it ("" = the empty string)
//! }
//! ```

use super::enums::{
    AppendFsync, CardPanGuard, ConfigEnum, LogFormat, LogLevel, LogTimestampFormat,
    MaxmemoryPolicy, TlsAuthClients,
};
use super::spec::Access::{Immutable, Mutable, Protected};
use super::spec::Kind::{Bool, Enum, Special, Str};
use super::spec::{
    BIND, DAEMONIZE, DIR, INT_MAX, INT_MIN, LONG_MAX, MB, PEERS, RENAME, SAVE, SECRET, Spec, USER,
    clamped, int, memory, unsigned,
};
// The cap of proto-max-bulk-len: the longest string storage holds.
use crate::storage::codec::MAX_STRING_LEN;

/// Generates [`Key`] (one variant per entry, in table order) and [`SPECS`] (the entries).
macro_rules! directives {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident {
            $(section: $section:literal,)?
            name: $name:literal,
            $(alias: $alias:literal,)?
            access: $access:ident,
            $(sensitive: $sensitive:literal,)?
            kind: $kind:expr,
            default: $default:literal $(,)?
        }
    )+) => {
        /// A directive: its entry's index in [`SPECS`] and its value's slot in the store.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Key {
            $($key),+
        }

        /// Every directive tallykv knows, in the order `CONFIG GET *` lists them.
        pub(super) const SPECS: &[Spec] = &[$(
            Spec {
                key: Key::$key,
                name: $name,
                alias: directives!(@option $($alias)?),
                access: $access,
                sensitive: directives!(@flag $($sensitive)?),
                kind: $kind,
                default: $default,
                doc: &[$($doc),*],
                section: directives!(@option $($section)?),
            }
        ),+];
    };
    (@option) => { None };
    (@option $v:literal) => { Some($v) };
    (@flag) => { false };
    (@flag $v:literal) => { $v };
}

/// How many directives there are.
pub(super) const KEYS: usize = SPECS.len();

/// Bounds of a TCP port.
const PORT: super::spec::Kind = int(0, 65535);

directives! {
    /// TCP port to accept connections on. 0 disables the TCP listener.
    Port {
        section: "NETWORK",
        name: "port",
        access: Immutable,
        kind: PORT,
        default: "6379",
    }

    /// Addresses to listen on, separated by spaces (at most 16). "*" means every
    /// IPv4 address (0.0.0.0) and "::*" every IPv6 address (::). A leading "-"
    /// marks an address as optional: if it is not available on this machine (for
    /// example no IPv6), it is skipped instead of stopping the server. The default
    /// listens everywhere, IPv6 only if available. An empty value means the
    /// default. Use "bind 127.0.0.1 -::1" to accept local connections only.
    Bind {
        name: "bind",
        access: Immutable,
        kind: Special(&BIND),
        default: "* -::*",
    }

    /// Protected mode, as in Valkey: a safety net for servers accidentally exposed
    /// to the network. When yes, and the server is neither given explicit bind
    /// addresses nor a password, only clients connecting from loopback addresses
    /// are served. Only turn it off if you are sure other hosts must connect with
    /// no authentication.
    ProtectedMode {
        name: "protected-mode",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }

    /// Most client connections open at the same time. Further connections are
    /// closed with "-ERR max number of clients reached".
    Maxclients {
        name: "maxclients",
        access: Mutable,
        kind: unsigned(1, u32::MAX as u64),
        default: "10000",
    }

    /// Close a client connection after it has been idle this many seconds.
    /// 0 means never.
    Timeout {
        name: "timeout",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "0",
    }

    /// Send TCP keepalive probes to idle clients every this many seconds, which
    /// detects dead peers and keeps middleboxes from dropping quiet connections.
    /// 0 disables keepalive.
    TcpKeepalive {
        name: "tcp-keepalive",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "300",
    }

    /// Memory limit for the data set. When a write would go above it, keys are
    /// evicted according to maxmemory-policy, or the write is refused with an OOM
    /// error under noeviction. 0 means no limit.
    Maxmemory {
        section: "LIMITS",
        name: "maxmemory",
        access: Mutable,
        kind: memory(0, u64::MAX),
        default: "0",
    }

    /// Which keys to evict when maxmemory is reached:
    ///
    ///   volatile-lru     least recently used among keys with an expire set
    ///   allkeys-lru      least recently used among all keys
    ///   volatile-lfu     least frequently used among keys with an expire set
    ///   allkeys-lfu      least frequently used among all keys
    ///   volatile-random  a random key among keys with an expire set
    ///   allkeys-random   a random key
    ///   volatile-ttl     the key with the nearest expire time
    ///   noeviction       evict nothing; refuse writes that need memory
    ///
    MaxmemoryPolicy {
        name: "maxmemory-policy",
        access: Mutable,
        kind: Enum(MaxmemoryPolicy::NAMES),
        default: "noeviction",
    }

    /// LRU, LFU and TTL eviction are approximate: they pick the best victim among
    /// this many sampled keys. More samples are more accurate and cost more CPU.
    /// Between 1 and 64.
    MaxmemorySamples {
        name: "maxmemory-samples",
        access: Mutable,
        kind: int(1, 64),
        default: "5",
    }

    /// LFU tuning, as in Valkey. The access counter of a key grows
    /// logarithmically; a higher lfu-log-factor needs more hits to saturate it.
    /// lfu-decay-time is the number of minutes after which an idle key's counter
    /// is halved (0 never decays).
    LfuLogFactor {
        name: "lfu-log-factor",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "10",
    }
    LfuDecayTime {
        name: "lfu-decay-time",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "1",
    }

    /// The largest single string (bulk) a client may send, such as a value in SET.
    /// At least 1mb, at most 4293918720 (4 GiB - 1 MiB: the longest value storage
    /// holds). Keys of write commands are at most 65517 bytes whatever this says.
    ProtoMaxBulkLen {
        name: "proto-max-bulk-len",
        access: Mutable,
        kind: memory(MB, MAX_STRING_LEN as u64),
        default: "512mb",
    }

    /// The most unparsed input buffered for one client; a client exceeding it is
    /// disconnected. Protects the server from clients that send endless commands.
    /// At least 1mb.
    ClientQueryBufferLimit {
        name: "client-query-buffer-limit",
        access: Mutable,
        kind: memory(MB, LONG_MAX as u64),
        default: "1gb",
    }

    /// Hashes with at most this many fields, none longer than
    /// hash-max-listpack-value bytes, use the compact encoding that OBJECT ENCODING
    /// reports as "listpack"; larger ones are converted to a hash table. The old
    /// names hash-max-ziplist-entries and hash-max-ziplist-value are accepted.
    /// (Valkey's default for the entry count is 512 in recent versions; tallykv
    /// keeps 128.)
    HashMaxListpackEntries {
        name: "hash-max-listpack-entries",
        alias: "hash-max-ziplist-entries",
        access: Mutable,
        kind: unsigned(0, LONG_MAX as u64),
        default: "128",
    }
    HashMaxListpackValue {
        name: "hash-max-listpack-value",
        alias: "hash-max-ziplist-value",
        access: Mutable,
        kind: memory(0, LONG_MAX as u64),
        default: "64",
    }

    /// Lists: a positive size is the most elements one listpack node holds; a
    /// negative one is a byte budget per node: -1 4kb, -2 8kb, -3 16kb, -4 32kb,
    /// -5 64kb. A list that fits one node reports "listpack", a longer one
    /// "quicklist". Old name: list-max-ziplist-size.
    ListMaxListpackSize {
        name: "list-max-listpack-size",
        alias: "list-max-ziplist-size",
        access: Mutable,
        kind: int(INT_MIN, INT_MAX),
        default: "-2",
    }

    /// Sets of integers only, at most this many, are an "intset"; other small sets
    /// (at most set-max-listpack-entries members of at most set-max-listpack-value
    /// bytes) a "listpack"; larger ones a "hashtable".
    SetMaxIntsetEntries {
        name: "set-max-intset-entries",
        access: Mutable,
        kind: unsigned(0, LONG_MAX as u64),
        default: "512",
    }
    SetMaxListpackEntries {
        name: "set-max-listpack-entries",
        access: Mutable,
        kind: unsigned(0, LONG_MAX as u64),
        default: "128",
    }
    SetMaxListpackValue {
        name: "set-max-listpack-value",
        access: Mutable,
        kind: memory(0, LONG_MAX as u64),
        default: "64",
    }

    /// Sorted sets with at most this many members, none longer than
    /// zset-max-listpack-value bytes, are a "listpack"; larger ones a "skiplist".
    /// Old names: zset-max-ziplist-entries, zset-max-ziplist-value.
    ZsetMaxListpackEntries {
        name: "zset-max-listpack-entries",
        alias: "zset-max-ziplist-entries",
        access: Mutable,
        kind: unsigned(0, LONG_MAX as u64),
        default: "128",
    }
    ZsetMaxListpackValue {
        name: "zset-max-listpack-value",
        alias: "zset-max-ziplist-value",
        access: Mutable,
        kind: memory(0, LONG_MAX as u64),
        default: "64",
    }

    /// How long (milliseconds) a Lua script may run before the server answers other
    /// clients' commands for its keys with -BUSY and SCRIPT KILL may stop it (when it
    /// has not written yet). Old name: lua-time-limit.
    BusyReplyThreshold {
        name: "busy-reply-threshold",
        alias: "lua-time-limit",
        access: Mutable,
        kind: int(0, LONG_MAX),
        default: "5000",
    }

    /// Freeing a big value (a set, hash or sorted set of more than 64 members in
    /// its hashtable or skiplist encoding, a list of more than 64 nodes) takes time
    /// proportional to its size: a 10 million member set takes about a second, during
    /// which its core would answer nobody. Lazy freeing hands such values to a
    /// background thread instead; the key is gone at once, only the memory comes
    /// back a little later (INFO shows lazyfree_pending_objects, and maxmemory does
    /// not count memory on its way out). Small values are always freed at once.
    ///
    /// UNLINK and FLUSHALL/FLUSHDB ASYNC always free lazily, DEL and FLUSHALL SYNC
    /// never do unless these say so. As in Valkey 8, every one defaults to yes:
    ///
    ///   lazyfree-lazy-eviction    keys evicted for maxmemory
    ///   lazyfree-lazy-expire      keys deleted because they expired
    ///   lazyfree-lazy-server-del  values replaced or deleted as a side effect of a
    ///                             write (SET over a set, RENAME's destination,
    ///                             COPY ... REPLACE)
    ///   lazyfree-lazy-user-del    DEL behaves as UNLINK
    ///   lazyfree-lazy-user-flush  FLUSHALL/FLUSHDB without SYNC or ASYNC behave as
    ///                             ASYNC
    ///
    LazyfreeLazyEviction {
        section: "LAZY FREEING",
        name: "lazyfree-lazy-eviction",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }
    LazyfreeLazyExpire {
        name: "lazyfree-lazy-expire",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }
    LazyfreeLazyServerDel {
        name: "lazyfree-lazy-server-del",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }
    LazyfreeLazyUserDel {
        name: "lazyfree-lazy-user-del",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }
    LazyfreeLazyUserFlush {
        name: "lazyfree-lazy-user-flush",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }

    /// Worker threads serving clients. 0 means one per CPU core. This directive is
    /// tallykv's own; Valkey has no equivalent.
    Threads {
        section: "RUNTIME",
        name: "threads",
        access: Immutable,
        kind: int(0, 1024),
        default: "0",
    }

    /// How many times per second background tasks run, most importantly active
    /// expiry (removing expired keys nobody reads). Higher values reclaim expired
    /// keys sooner and cost more idle CPU. Values below 1 or above 500 are accepted
    /// and clamped to that range, as in Valkey.
    Hz {
        name: "hz",
        access: Mutable,
        kind: clamped(0, INT_MAX, 1, 500),
        default: "10",
    }

    /// Number of numbered databases: SELECT <dbid> picks one of 0..databases-1
    /// (the default is 0). A cluster has cluster-databases instead.
    Databases {
        name: "databases",
        access: Immutable,
        kind: int(1, INT_MAX),
        default: "16",
    }

    /// tallykv always runs in the foreground; run it under a supervisor (systemd,
    /// a container runtime, ...) to get a background service. Only "no" is
    /// accepted.
    Daemonize {
        name: "daemonize",
        access: Immutable,
        kind: Special(&DAEMONIZE),
        default: "no",
    }

    /// Write the process id to this file once the server listens, and remove it
    /// on a clean shutdown (SHUTDOWN, SIGTERM, SIGINT). Empty means no pid file.
    Pidfile {
        name: "pidfile",
        access: Immutable,
        kind: Str,
        default: "",
    }

    /// How much to log: debug, verbose, notice, warning, or nothing. notice is
    /// meant for production.
    Loglevel {
        section: "LOGGING",
        name: "loglevel",
        access: Mutable,
        kind: Enum(LogLevel::NAMES),
        default: "notice",
    }

    /// File to log to, appended to. Empty means standard output. The file must be
    /// writable when the server starts.
    Logfile {
        name: "logfile",
        access: Immutable,
        kind: Str,
        default: "",
    }

    /// How a log line is laid out: legacy (Valkey's "pid:M date time * message"),
    /// logfmt (pid=... role=... timestamp=... level=... message=...), or json (one
    /// object per line, for log shippers). Fields an event carries follow the message.
    /// Never with colour codes.
    LogFormat {
        name: "log-format",
        access: Mutable,
        kind: Enum(LogFormat::NAMES),
        default: "legacy",
    }

    /// How a log line's time is written (UTC): legacy ("08 Dec 2026 01:20:00.123"),
    /// iso8601 ("2026-12-08T01:20:00.123+00:00") or milliseconds (Unix time in ms).
    LogTimestampFormat {
        name: "log-timestamp-format",
        access: Mutable,
        kind: Enum(LogTimestampFormat::NAMES),
        default: "legacy",
    }

    /// Directory for data files: the live data in <dir>/tallykv.db (fjall), the
    /// last SAVE/BGSAVE snapshot in <dir>/snapshot. Two servers cannot share a dir
    /// (the second refuses to start). Changing it at runtime is refused, as Valkey
    /// does by default ("can't set protected config").
    Dir {
        section: "PERSISTENCE",
        name: "dir",
        access: Protected,
        kind: Special(&DIR),
        default: "./data",
    }

    /// Persist data under dir. yes: every write reaches <dir>/tallykv.db within the
    /// appendfsync promise and a restart loads it. no: a pure cache, nothing is
    /// written to disk (SAVE/BGSAVE are refused). Set at startup only: switching
    /// persistence on or off would need a full rewrite of the data dir.
    Appendonly {
        name: "appendonly",
        access: Immutable,
        kind: Bool,
        default: "yes",
    }

    /// When writes are made durable (fsync), as in Valkey:
    ///   always    a reply leaves only after the write is on disk. Writes arriving
    ///             together share one fsync (group commit).
    ///   everysec  fsync at most one second after a write: a crash of the machine
    ///             loses about the last second of writes. A crash of the process
    ///             alone (kill -9) loses what was still queued for the storage
    ///             writer (at most 8 MiB, about a quarter second at full load).
    ///   no        never fsync explicitly; the OS writes data out when it likes.
    Appendfsync {
        name: "appendfsync",
        access: Mutable,
        kind: Enum(AppendFsync::NAMES),
        default: "everysec",
    }

    /// Snapshot rules, as "save <seconds> <changes>" pairs: take a snapshot (as
    /// BGSAVE does, into <dir>/snapshot) when at least <changes> keys were written
    /// and <seconds> passed since the last one. Several "save" lines add up, and
    /// 'save ""' clears the list. Empty (the default) means no automatic
    /// snapshots; the live data is durable without them.
    Save {
        name: "save",
        access: Mutable,
        kind: Special(&SAVE),
        default: "",
    }

    /// Debugging: pause this many microseconds per key while loading at startup
    /// (as Valkey's key-load-delay; tests use it to observe -LOADING). 0 = off.
    LoadDelay {
        name: "key-load-delay",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "0",
    }

    /// Password clients must give with AUTH (or HELLO ... AUTH) before any other
    /// command; until then commands get -NOAUTH. Empty means no password.
    Requirepass {
        section: "SECURITY",
        name: "requirepass",
        access: Mutable,
        sensitive: true,
        kind: Str,
        default: "",
    }

    /// How many entries ACL LOG keeps (refused commands, keys and authentications;
    /// similar refusals within a minute count in one entry).
    AcllogMaxLen {
        name: "acllog-max-len",
        access: Mutable,
        kind: int(0, LONG_MAX),
        default: "128",
    }

    /// An ACL user created at startup, in ACL SETUSER's rules: one "user" line per
    /// user, any number of lines, e.g.
    ///
    ///   user admin on >a-long-password ~* &* +@all
    ///   user default off
    ///
    /// (the second makes every client authenticate), or on the command line
    /// --user "admin on >a-long-password ~* &* +@all". "user default ..." redefines
    /// the default user from scratch, requirepass included. A bad rule or a user named
    /// twice stops the server. Passwords are kept as SHA-256 digests only (CONFIG GET
    /// shows the users as ACL LIST does). Users cannot be declared here when an aclfile
    /// is set. In a cluster they seed the users every node shares when the cluster
    /// forms; a node that holds the cluster's users enforces those instead.
    User {
        name: "user",
        access: Immutable,
        sensitive: true,
        kind: Special(&USER),
        default: "",
    }

    /// A file of ACL users instead: "user <name> <rules...>" lines as ACL LIST shows
    /// them (no comments). Loaded at startup, where a missing or malformed file stops
    /// the server, as in Valkey (create an empty one to start with the default user
    /// only); reloaded by ACL LOAD, all or nothing; written by ACL SAVE (passwords as
    /// SHA-256 digests only, atomically). A default user the file does not declare is
    /// the usual one, with requirepass as its password. A relative path is relative to
    /// the directory tallykv is started from. Empty: no ACL file. In a cluster it
    /// seeds the shared users like "user" lines, ACL LOAD commits its users to every
    /// node and ACL SAVE writes the users this node enforces.
    Aclfile {
        name: "aclfile",
        access: Immutable,
        kind: Str,
        default: "",
    }

    /// The audit log: one JSON line per security event (authentications, refused
    /// commands and keys, ACL and CONFIG changes, cluster membership changes, refused
    /// bus connections), never a password, a value or an argument. Appended, synced
    /// as appendfsync says, and created with mode 0600. Empty (the default): no
    /// audit log. Startup only.
    AuditLogFile {
        name: "audit-log-file",
        access: Immutable,
        kind: Str,
        default: "",
    }

    /// Rotate the audit log at this size: the file becomes <file>.1, older ones
    /// shift up. 0 = never rotate.
    AuditLogMaxSize {
        name: "audit-log-max-size",
        access: Mutable,
        kind: memory(0, LONG_MAX as u64),
        default: "64mb",
    }

    /// How many rotated audit log files (<file>.1 ... <file>.N) are kept.
    AuditLogMaxFiles {
        name: "audit-log-max-files",
        access: Mutable,
        kind: int(1, 1000),
        default: "10",
    }

    /// Plaintext card numbers (PANs) in what writes store: every key name, hash field,
    /// value and member a write command carries (for APPEND and SETRANGE, the stored
    /// result) is checked for a run of 13-19 digits, optionally grouped by single
    /// spaces or dashes, that matches a card brand's range and length and passes Luhn.
    ///   no      not checked (no cost)
    ///   warn    written, counted (INFO card_pan_guard_warnings), logged and audited
    ///           with the key name and the number masked (first 6, last 4)
    ///   refuse  not written: the command gets an error naming the guard (a
    ///           transaction or script holding one is refused as a whole)
    /// Sealed values, fingerprints, timestamps, amounts and counters never trip it.
    CardPanGuard {
        name: "card-pan-guard",
        access: Mutable,
        kind: Enum(CardPanGuard::NAMES),
        default: "no",
    }

    /// Keys the guard does not look at: glob patterns separated by spaces (keys that
    /// hold ids indistinguishable from card numbers, e.g. "giftcard:* loyalty:*"). A
    /// command is exempt when all its keys match.
    CardPanGuardExemptKeys {
        name: "card-pan-guard-exempt-keys",
        access: Mutable,
        kind: Str,
        default: "",
    }

    /// Encryption at rest: a key file as "tallykv-card keygen --out FILE" writes it
    /// (keys with ids, one active). Everything this node writes to disk - stored
    /// values, the Raft log, slot-group snapshots and SAVE copies - is then AES-256-GCM
    /// encrypted under the active key, so a copied data dir or backup reveals no value
    /// (key names stay plaintext). A missing key or a wrong one stops the start with an
    /// error. To rotate, add a key ("tallykv-card rotate") and CONFIG SET this to the
    /// file again: values under older keys are re-encrypted in the background (INFO
    /// persistence, at_rest_*), and an old key may leave the file once
    /// at_rest_rotation_in_progress is 0. Turned on or off at startup only; data
    /// written in plaintext before is encrypted by the same background pass.
    EncryptionAtRestKeyFile {
        name: "encryption-at-rest-key-file",
        access: Mutable,
        kind: Str,
        default: "",
    }

    /// Renames a command, or hides it with "" as the new name, for every client
    /// and script: "rename-command CONFIG \"\"", "rename-command FLUSHALL
    /// b840fc02d524045429941cc15f59e41cb7be6c52". One line per command; the server
    /// keeps calling it by its own name inside (ACL rules and INFO commandstats use
    /// that name). Startup only.
    RenameCommand {
        name: "rename-command",
        access: Immutable,
        sensitive: true,
        kind: Special(&RENAME),
        default: "",
    }

    /// TCP port for TLS client connections (rustls), beside or instead of port:
    /// "port 0" with a tls-port serves TLS only. 0 disables TLS. Clients connect with
    /// e.g. "redis-cli --tls --cacert ca.crt", rediss:// URLs or ssl=True.
    TlsPort {
        section: "TLS/SSL",
        name: "tls-port",
        access: Immutable,
        kind: PORT,
        default: "0",
    }

    /// The server's certificate chain and private key, PEM encoded (the key as PKCS#8,
    /// PKCS#1 or SEC1). tls-key-file-pass is the passphrase of an encrypted PKCS#8 key
    /// ("BEGIN ENCRYPTED PRIVATE KEY", as "openssl pkcs8 -topk8 -v2 aes-256-cbc"
    /// writes it). CONFIG SET of any tls-* directive
    /// but tls-port reads the files again and applies to new connections (open ones
    /// keep their session); a setting that does not load fails the CONFIG SET and
    /// changes nothing.
    TlsCertFile {
        name: "tls-cert-file",
        access: Mutable,
        kind: Str,
        default: "",
    }
    TlsKeyFile {
        name: "tls-key-file",
        access: Mutable,
        kind: Str,
        default: "",
    }
    TlsKeyFilePass {
        name: "tls-key-file-pass",
        access: Mutable,
        sensitive: true,
        kind: Str,
        default: "",
    }

    /// Certificates of the CAs that sign client certificates: a PEM file (any number
    /// of certificates) and/or a directory whose files are PEM certificates.
    TlsCaCertFile {
        name: "tls-ca-cert-file",
        access: Mutable,
        kind: Str,
        default: "",
    }
    TlsCaCertDir {
        name: "tls-ca-cert-dir",
        access: Mutable,
        kind: Str,
        default: "",
    }

    /// Whether TLS clients must show a certificate signed by one of those CAs:
    ///   yes       required (a client without one is refused during the handshake)
    ///   optional  asked for; a client without one is served, a bad one refused
    ///   no        not asked for (no CA needed)
    TlsAuthClients {
        name: "tls-auth-clients",
        access: Mutable,
        kind: Enum(TlsAuthClients::NAMES),
        default: "yes",
    }

    /// TLS versions to accept, separated by spaces: "TLSv1.2", "TLSv1.3" (TLSv1 and
    /// TLSv1.1 are insecure and refused). Empty means "TLSv1.2 TLSv1.3".
    TlsProtocols {
        name: "tls-protocols",
        access: Mutable,
        kind: Str,
        default: "",
    }

    /// Cipher suites, by their OpenSSL names: tls-ciphers for TLS 1.2, separated by
    /// ":" (e.g. "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"),
    /// tls-ciphersuites for TLS 1.3 (e.g. "TLS_AES_256_GCM_SHA384"). Only suites
    /// rustls implements (AES-GCM and CHACHA20-POLY1305 with ECDHE) can be named; any
    /// other name stops the server at startup (or fails CONFIG SET). Empty means all
    /// of them.
    TlsCiphers {
        name: "tls-ciphers",
        access: Mutable,
        kind: Str,
        default: "",
    }
    TlsCiphersuites {
        name: "tls-ciphersuites",
        access: Mutable,
        kind: Str,
        default: "",
    }

    /// Choose the cipher suite in the server's order of preference (the order of
    /// tls-ciphers / tls-ciphersuites) rather than the client's.
    TlsPreferServerCiphers {
        name: "tls-prefer-server-ciphers",
        access: Mutable,
        kind: Bool,
        default: "no",
    }

    /// TLS session resumption: a client that reconnects with a session it was given
    /// (a TLS 1.2 session id or a TLS 1.3 ticket for a session the server keeps) skips
    /// the full handshake. tls-session-cache-size sessions are kept at most (0: no
    /// limit), each for tls-session-cache-timeout seconds.
    TlsSessionCaching {
        name: "tls-session-caching",
        access: Mutable,
        kind: Bool,
        default: "yes",
    }
    TlsSessionCacheSize {
        name: "tls-session-cache-size",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "20480",
    }
    TlsSessionCacheTimeout {
        name: "tls-session-cache-timeout",
        access: Mutable,
        kind: int(0, INT_MAX),
        default: "300",
    }

    /// Mutual TLS on the cluster bus: every node-to-node connection is TLS, both ends
    /// show a certificate signed by the CA of tls-ca-cert-file / tls-ca-cert-dir (a
    /// peer without one cannot connect), and cluster-secret is still proven inside the
    /// session. Every node of a cluster must say the same. Startup only.
    TlsCluster {
        name: "tls-cluster",
        access: Immutable,
        kind: Bool,
        default: "no",
    }

    /// The certificate and key a node shows when it dials a peer under tls-cluster
    /// yes (tls-client-key-file-pass for an encrypted key); empty: tls-cert-file and
    /// tls-key-file. Reloaded by CONFIG SET like the other tls-* files.
    TlsClientCertFile {
        name: "tls-client-cert-file",
        access: Mutable,
        kind: Str,
        default: "",
    }
    TlsClientKeyFile {
        name: "tls-client-key-file",
        access: Mutable,
        kind: Str,
        default: "",
    }
    TlsClientKeyFilePass {
        name: "tls-client-key-file-pass",
        access: Mutable,
        sensitive: true,
        kind: Str,
        default: "",
    }

    /// Cluster mode: every group of hash slots is a Raft group replicated on
    /// cluster-replication-factor nodes, so an acknowledged write survives the loss
    /// of any minority of them. Clients use the Redis Cluster protocol (MOVED).
    /// The cluster's own configuration is replicated among its nodes, so every
    /// cluster-* directive is read at startup only.
    ClusterEnabled {
        section: "CLUSTER",
        name: "cluster-enabled",
        access: Immutable,
        kind: Bool,
        default: "no",
    }

    /// Every initial member's host:port (client ports), the same list on every node,
    /// e.g. "node1:6379,node2:6379,node3:6379". The first start forms the cluster;
    /// later starts use the node id and cluster map stored in the data dir. Empty: the
    /// node waits until a member runs CLUSTER MEET <its host> <its port> (CLUSTER
    /// FORGET <name> moves a node's replicas away and removes it).
    ClusterPeers {
        name: "cluster-peers",
        access: Immutable,
        kind: Special(&PEERS),
        default: "",
    }

    /// Numbered databases of a cluster (Valkey 9): SELECT, MOVE and COPY ... DB work
    /// in 0..cluster-databases-1; every slot holds its keys of every database, and a
    /// slot group's log carries them all. 1: database 0 only, as Valkey 8 clusters.
    ClusterDatabases {
        name: "cluster-databases",
        access: Immutable,
        kind: int(1, INT_MAX),
        default: "1",
    }

    /// The node-to-node port; 0 means the client port + 10000 (what peers expect).
    ClusterPort {
        name: "cluster-port",
        access: Immutable,
        kind: PORT,
        default: "0",
    }

    /// The secret the nodes share to authenticate each other on the bus: every
    /// connection between two nodes starts with a challenge-response in which each
    /// side proves it holds this secret (an HMAC over fresh random nonces; the secret
    /// itself never crosses the network), so whoever reaches the bus port without it
    /// can neither join the cluster nor send a single request. Required with
    /// cluster-enabled yes (a node refuses to start without one), at least 16 bytes,
    /// the same on every node. Generate one with "openssl rand -hex 32" and write it
    /// here, in a file only the server's user can read, rather than on the command
    /// line, where ps shows it. CONFIG GET shows only whether it is set. It does not
    /// encrypt the bus: see "Cluster bus" in the README.
    ClusterSecret {
        name: "cluster-secret",
        access: Immutable,
        sensitive: true,
        kind: Special(&SECRET),
        default: "",
    }

    /// How this node appears in cluster-peers and in redirects (containers, NAT).
    /// Empty/0: the first specific bind address (else 127.0.0.1) and the real ports.
    ClusterAnnounceHostname {
        name: "cluster-announce-hostname",
        access: Immutable,
        kind: Str,
        default: "",
    }
    ClusterAnnounceIp {
        name: "cluster-announce-ip",
        access: Immutable,
        kind: Str,
        default: "",
    }
    ClusterAnnouncePort {
        name: "cluster-announce-port",
        access: Immutable,
        kind: PORT,
        default: "0",
    }
    ClusterAnnounceBusPort {
        name: "cluster-announce-bus-port",
        access: Immutable,
        kind: PORT,
        default: "0",
    }

    /// Voters per slot group (capped at the number of nodes).
    ClusterReplicationFactor {
        name: "cluster-replication-factor",
        access: Immutable,
        kind: int(1, 9),
        default: "3",
    }

    /// Raft groups the 16384 slots are split into; 0 means two per node.
    ClusterSlotGroups {
        name: "cluster-slot-groups",
        access: Immutable,
        kind: int(0, 1024),
        default: "0",
    }

    /// Milliseconds without hearing from a group's leader before its followers
    /// stand for election (after a pre-vote) (Valkey's default is 15000; failover
    /// takes about 1.1-1.5x this). The leader's read lease is half of it.
    ClusterNodeTimeout {
        name: "cluster-node-timeout",
        access: Immutable,
        kind: int(100, INT_MAX),
        default: "1000",
    }

    /// Log entries a slot group applies before it snapshots its data and purges the
    /// log before the snapshot (a replica too far behind is sent the snapshot).
    ClusterSnapshotAfter {
        name: "cluster-snapshot-after",
        access: Immutable,
        kind: int(1, LONG_MAX),
        default: "100000",
    }

    /// Milliseconds leaderships must stay unevenly spread (one node leading two groups
    /// more than another that replicates one of them, e.g. after a failover or a
    /// CLUSTER MEET) before a leadership is handed over; each hand-off is an election
    /// round for that group. 0 = never.
    ClusterLeaderBalanceDelay {
        name: "cluster-leader-balance-delay",
        access: Immutable,
        kind: int(0, LONG_MAX),
        default: "60000",
    }
}
