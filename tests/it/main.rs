//! The integration tests that share one test binary (one link instead of one per file keeps
//! the debug build small enough for CI's disk). `tests/cluster.rs` and `tests/partition.rs`
//! stay binaries of their own: each runs its tests one at a time behind its own lock, and in
//! this binary the other test thread would run beside them.

#[path = "../common/mod.rs"]
mod common;

mod acl;
mod acl_cluster;
mod at_rest;
mod audit;
mod auth;
mod bitmaps;
mod blocking;
mod card_helpers;
mod connection;
mod counters;
mod crash;
mod databases;
mod eviction;
mod expire;
mod functions;
mod hash_field_expiry;
mod hashes;
mod keyspace;
mod large_values;
mod lists;
mod membership;
mod memory;
mod pan_guard;
mod protocol;
mod python_libraries;
mod recovery;
mod redis_py;
mod replay;
mod scripting;
mod server_cmds;
mod sets;
mod smoke;
mod snapshot_stream;
mod strings;
mod tls;
mod tls_cluster;
mod transactions;
mod zsets;
