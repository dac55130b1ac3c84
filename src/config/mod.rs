//! Configuration: the config file, `--directive value` arguments, and
//! `CONFIG GET` / `CONFIG SET`, following Valkey's `config.c`.
//!
//! * `table.rs` lists every directive, one entry each: name, alias, whether `CONFIG SET`
//!   may change it, its kind of value (which brings its parsing, checks and rendering),
//!   its default and its comment in `conf/tallykv.conf`. Nothing else in this room
//!   names a directive, except the typed getters the rest of the server reads.
//! * [`Config::from_args`] reads `tallykv-server [/path/to/tallykv.conf] [-] [--directive value...]`
//!   the way valkey-server does: the file first, then stdin if `-` is given,
//!   then the arguments as extra lines, so the last setting wins.
//! * Every value lives in [`Runtime`] (shared as `Arc<Runtime>`), as atomics for
//!   anything the data path reads, so reading a setting never takes a lock. The
//!   startup-only ones are also plain fields of [`Config`], for convenience.
//! * [`Config::get`] and [`Config::set`] implement the two commands without
//!   knowing about sockets; errors come back as Valkey's exact reply texts.
//! * `conf/tallykv.conf` is rendered from the table (`conf_file.rs`); a unit test keeps
//!   the shipped file equal to it, and it parses to the defaults.
//!
//! # Adding a directive
//!
//! Add one entry to the `directives!` list in `table.rs`, where it should appear in
//! `CONFIG GET *` and in the config file: its `///` comment for operators (the text of
//! `conf/tallykv.conf`; none if the entry above describes it), a `Key` variant name,
//! `name` (and optionally `alias`), `access` (`Mutable` for `CONFIG SET`, `Immutable` for
//! startup only, `Protected`), optionally `sensitive: true` for secrets, `kind` (`int`,
//! `unsigned`, `memory` or `clamped` bounds; `Bool`; `Enum(T::NAMES)` for a type made
//! with `config_enum!` in `enums.rs`; `Str`; or `Special(&X)` with its own parse, render
//! and merge functions in `spec.rs`) and `default` as a config file writes it. Parsing
//! from a file or the command line, checking, `CONFIG GET`/`SET`, storage and the
//! documentation follow from the entry. Then give the code that reads it a one-line
//! typed getter on [`Runtime`] (`self.num(Key::X)`, `self.flag(..)`, `self.choice(..)`,
//! `self.text(..)` or `self.list(..)`), register a [`Runtime::on_change`] hook if a new
//! value needs an action, and rewrite `conf/tallykv.conf` with
//! `TALLYKV_WRITE_CONF=1 cargo test -p tallykv --lib config`.

mod conf_file;
mod enums;
mod error;
pub(crate) mod parse;
mod runtime;
mod spec;
mod table;
#[cfg(test)]
mod tests;

pub use enums::{
    AppendFsync, CardPanGuard, LogFormat, LogLevel, LogTimestampFormat, MaxmemoryPolicy,
    TlsAuthClients,
};
pub(crate) use error::strerror;
pub use error::{ConfigError, ConfigSource};
pub use runtime::Runtime;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime::{Applier, lock};
use spec::{Access, MB, Spec, Value, utf8};
use table::{KEYS, Key, SPECS};

/// The version printed in configuration error banners.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How deep `include` may nest before we assume a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

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
/// Every directive's value is in [`Config::runtime`] (clone the `Arc` into every thread
/// that needs them); the fields are the startup-only ones, copied out of it once by
/// [`Config::from_args`] for convenience. Cloning a `Config` shares its `Runtime`.
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
    /// Every directive's value, shared across threads.
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
    /// `cluster-secret`: what the nodes prove to each other they hold when they open a bus
    /// connection. Never empty when `enabled` (checked at load).
    pub secret: Secret,
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

impl ClusterConfig {
    fn from_runtime(rt: &Runtime) -> ClusterConfig {
        ClusterConfig {
            enabled: rt.flag(Key::ClusterEnabled),
            port: rt.num(Key::ClusterPort) as u16,
            secret: Secret(rt.text(Key::ClusterSecret)),
            peers: rt.list(Key::ClusterPeers),
            announce_hostname: rt.text(Key::ClusterAnnounceHostname),
            announce_ip: rt.text(Key::ClusterAnnounceIp),
            announce_port: rt.num(Key::ClusterAnnouncePort) as u16,
            announce_bus_port: rt.num(Key::ClusterAnnounceBusPort) as u16,
            replication_factor: rt.num(Key::ClusterReplicationFactor) as usize,
            slot_groups: rt.num(Key::ClusterSlotGroups) as usize,
            node_timeout_ms: rt.num(Key::ClusterNodeTimeout),
            snapshot_after: rt.num(Key::ClusterSnapshotAfter),
            leader_balance_delay_ms: rt.num(Key::ClusterLeaderBalanceDelay),
        }
    }
}

/// The shortest `cluster-secret` accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A secret directive's value (`cluster-secret`). `Debug` shows only whether it is set, so
/// a configuration printed whole never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes, for the one place that keys a MAC with them.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() { "\"\"" } else { "<set>" })
    }
}

impl Default for ClusterConfig {
    /// The table's defaults.
    fn default() -> Self {
        ClusterConfig::from_runtime(&Runtime::default())
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
    /// The table's defaults.
    fn default() -> Self {
        Config::from_runtime(Arc::new(Runtime::default()), None)
    }
}

/// Loader state for one `from_args` call.
struct Loader {
    runtime: Runtime,
    /// Directives a line of this configuration has set: a [`spec::Special`] `merge` treats
    /// the first line differently (Valkey's `save_loaded`).
    loaded: [bool; KEYS],
    config_file: Option<PathBuf>,
}

/// One stretch of the pseudo-file: (byte offset where it starts, source).
type Segments = [(usize, ConfigSource)];

impl Config {
    /// The configuration these values make; the fields are copied out of `runtime`.
    fn from_runtime(runtime: Arc<Runtime>, config_file: Option<PathBuf>) -> Config {
        let rt = &runtime;
        Config {
            port: rt.num(Key::Port) as u16,
            bind: rt.list(Key::Bind),
            dir: PathBuf::from(rt.text(Key::Dir)),
            logfile: rt.text(Key::Logfile),
            threads: rt.num(Key::Threads) as usize,
            databases: rt.num(Key::Databases) as u32,
            cluster_databases: rt.num(Key::ClusterDatabases) as u32,
            pidfile: rt.text(Key::Pidfile),
            config_file,
            cluster: ClusterConfig::from_runtime(rt),
            runtime,
        }
    }

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
            runtime: Runtime::default(),
            loaded: [false; KEYS],
            config_file: None,
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
            loader.config_file = Some(abs);
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

    /// The documented config file, `conf/tallykv.conf`: every directive with its comment
    /// and default, rendered from the directive table.
    pub fn documented_file() -> String {
        conf_file::render()
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
                        self.runtime.render(spec.key),
                    ));
                }
                continue;
            }
            for (spec, name) in names() {
                if !seen.contains(&name) && crate::util::glob_match(pattern, name.as_bytes(), true)
                {
                    seen.push(name);
                    out.push((name.to_string(), self.runtime.render(spec.key)));
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
            let args: Vec<Vec<u8>> = if spec.multi() {
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
            let parsed = spec.parse(&args).map_err(|reason| failed(entry, &reason))?;
            values.push((spec, parsed));
        }

        {
            let _serialised = lock(&self.runtime.set_lock);
            let before: Vec<(Key, Value)> = values
                .iter()
                .map(|(spec, _)| (spec.key, self.runtime.value(spec.key)))
                .collect();
            let names: Vec<&'static str> = values
                .into_iter()
                .map(|(spec, value)| {
                    // No value: it may be a password.
                    tracing::debug!(directive = spec.name, "CONFIG SET");
                    self.runtime.store(spec.key, value);
                    spec.name
                })
                .collect();
            let appliers: Vec<Applier> = lock(&self.runtime.appliers).clone();
            for apply in &appliers {
                if let Err((blame, reason)) = apply(&names) {
                    for (key, value) in before {
                        self.runtime.store(key, value);
                    }
                    return Err(failed(blame, &reason));
                }
            }
        }
        Ok(())
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
                let values: Vec<Vec<u8>> = if !spec.multi() {
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
                let value = spec.parse(&values).map_err(|reason| err(&name, reason))?;
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
        let value = match SPECS[key as usize].kind {
            spec::Kind::Special(spec::Special {
                merge: Some(merge), ..
            }) => merge(self.runtime.value(key), value, !self.loaded[key as usize]),
            _ => value,
        };
        self.loaded[key as usize] = true;
        self.runtime.store(key, value);
    }

    /// Checks on the configuration as a whole, as Valkey does after loading.
    fn finish(self) -> Result<Config, ConfigError> {
        let cfg = Config::from_runtime(Arc::new(self.runtime), self.config_file);
        // Valkey's words (it refuses a second `user` line for a user as it reads it).
        let users = cfg.runtime.user_declarations();
        let name = |u: &String| u.split(' ').next().unwrap_or_default().to_string();
        if let Some(twice) =
            (1..users.len()).find(|&i| users[..i].iter().any(|u| name(u) == name(&users[i])))
        {
            return Err(ConfigError::General {
                reason: format!(
                    "Error in user declaration '{}': Duplicate user found. A user can only be \
                     defined once in config files",
                    name(&users[twice])
                ),
            });
        }
        // Valkey's words (it checks this as it loads the users).
        if cfg.runtime.aclfile().is_some() && !users.is_empty() {
            return Err(ConfigError::General {
                reason: "Configuring Valkey with users defined in valkey.conf and at the same \
                         setting an ACL file path is invalid. This setup is very likely to lead \
                         to configuration errors and security holes, please define either an \
                         ACL file or declare users directly in your valkey.conf, but not both."
                    .to_string(),
            });
        }
        // A cluster node without cluster-peers waits for another node's CLUSTER MEET.
        if cfg.cluster.enabled && cfg.port == 0 {
            return Err(ConfigError::General {
                reason: "cluster-enabled yes needs a TCP port".to_string(),
            });
        }
        // The bus is never open to whoever reaches it: a cluster node authenticates its peers
        // with cluster-secret, with `tls-cluster yes` too (a certificate from the CA proves a
        // node of the organisation; the secret, one of this cluster).
        if cfg.cluster.enabled && cfg.cluster.secret.is_empty() {
            return Err(ConfigError::General {
                reason: "cluster-enabled yes needs a cluster-secret: the nodes prove to each \
                         other that they hold it before the bus serves them. Generate one with \
                         `openssl rand -hex 32` and put the same `cluster-secret <secret>` line \
                         in every node's config file"
                    .to_string(),
            });
        }
        // Said without quoting the line, which would show the secret.
        if !cfg.cluster.secret.is_empty() && cfg.cluster.secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::General {
                reason: format!(
                    "cluster-secret must be at least {MIN_SECRET_LEN} bytes (generate one with \
                     `openssl rand -hex 32`)"
                ),
            });
        }
        if !cfg.logfile.is_empty()
            && let Err(e) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.logfile)
        {
            return Err(ConfigError::General {
                reason: format!("Can't open the log file: {}", error::strerror(&e)),
            });
        }
        Ok(cfg)
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
