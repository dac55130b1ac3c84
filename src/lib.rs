//! tallykv: a Redis/Valkey-compatible, thread-per-core cache store.
//!
//! Rooms (see DESIGN.md): `protocol` (RESP on the wire), `command` (the command table and
//! families), `shard` (one core's keyspace), `server` (executors, connections, dispatch),
//! `cluster` (slots), `config`, `metrics`, `script` (the Lua VM scripts run in), `util`
//! (Valkey-exact parsing and formatting).

pub mod cluster;
pub mod command;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod protocol;
pub mod script;
pub mod security;
pub mod server;
pub mod shard;
pub mod slot;
pub mod state;
pub mod storage;
pub mod util;

/// The Redis version we report (`redis_version`, HELLO): clients detect features from it,
/// and Valkey reports 7.2.4 for the same reason.
pub const REDIS_COMPAT_VERSION: &str = "7.2.4";
