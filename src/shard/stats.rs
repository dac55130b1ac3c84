//! Per-shard counters, written only by the shard's own core and read by any core (INFO).
//! Single-writer, so an increment is a plain load + store, not a locked read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with exactly one writer thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One numbered database's keyspace figures on one shard (INFO keyspace's `dbN:` line).
#[derive(Debug, Default)]
pub struct DbCounts {
    pub keys: Counter,
    pub expires: Counter,
    pub volatile_items: Counter,
    /// Bytes of the database's per-slot key tables (MEMORY STATS `db.N`).
    pub table_bytes: Counter,
}

/// Keyspace figures of one shard, as INFO reports them (summed over shards).
#[derive(Debug)]
#[repr(align(128))] // keep shards' counters on separate cache lines
pub struct ShardStats {
    pub keys: Counter,
    pub expires: Counter,
    pub expired_keys: Counter,
    /// Hash fields deleted because their time to live passed (INFO `expired_fields`).
    pub expired_fields: Counter,
    /// Hashes with fields that have a time to live (a gauge: INFO's
    /// `keys_with_volatile_items`).
    pub keys_with_volatile_items: Counter,
    pub expired_stale_perc_x100: Counter,
    pub expire_cycle_cpu_us: Counter,
    pub evicted_keys: Counter,
    pub keyspace_hits: Counter,
    pub keyspace_misses: Counter,
    /// Keys some client WATCHes, and keys some client is blocked on (gauges).
    pub watched_keys: Counter,
    pub blocking_keys: Counter,
    /// Bytes of the shard's per-slot key tables (a gauge; MEMORY STATS).
    pub table_bytes: Counter,
    /// Per numbered database (`databases` of them): `keys` and `expires` above are their sums.
    pub dbs: Box<[DbCounts]>,
}

impl ShardStats {
    /// Counters for a node with `databases` numbered databases.
    pub fn with_databases(databases: usize) -> ShardStats {
        ShardStats {
            keys: Counter::default(),
            expires: Counter::default(),
            expired_keys: Counter::default(),
            expired_fields: Counter::default(),
            keys_with_volatile_items: Counter::default(),
            expired_stale_perc_x100: Counter::default(),
            expire_cycle_cpu_us: Counter::default(),
            evicted_keys: Counter::default(),
            keyspace_hits: Counter::default(),
            keyspace_misses: Counter::default(),
            watched_keys: Counter::default(),
            blocking_keys: Counter::default(),
            table_bytes: Counter::default(),
            dbs: (0..databases.max(1)).map(|_| DbCounts::default()).collect(),
        }
    }
}

impl Default for ShardStats {
    /// Valkey's default of 16 databases.
    fn default() -> ShardStats {
        ShardStats::with_databases(16)
    }
}
