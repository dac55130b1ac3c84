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

/// One numbered database's figures on one shard, by index: keys, keys with an expiry,
/// hashes with field TTLs (INFO keyspace's `dbN:` line), bytes of its per-slot key tables
/// (MEMORY STATS `db.N`).
pub type DbFigures = [u64; 4];
pub const DB_KEYS: usize = 0;
pub const DB_EXPIRES: usize = 1;
pub const DB_VOLATILE_ITEMS: usize = 2;
pub const DB_TABLE_BYTES: usize = 3;

/// Databases below this number have their figures in atomics (written on every change);
/// the others, in a map behind a lock (`databases` may be large, as in Valkey).
const DENSE_DBS: usize = 64;

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
    /// Per numbered database: `keys` and `expires` above are their sums.
    dense: Box<[[Counter; 4]]>,
    sparse: std::sync::Mutex<std::collections::BTreeMap<usize, DbFigures>>,
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
            dense: (0..databases.clamp(1, DENSE_DBS))
                .map(|_| Default::default())
                .collect(),
            sparse: Default::default(),
        }
    }

    /// Sets figure `what` (`DB_KEYS`...) of database `db`.
    #[inline]
    pub fn set_db(&self, db: usize, what: usize, v: u64) {
        match self.dense.get(db) {
            Some(f) => f[what].set(v),
            None => {
                let mut sparse = self.sparse.lock().unwrap_or_else(|e| e.into_inner());
                let f = sparse.entry(db).or_default();
                f[what] = v;
                if *f == [0; 4] {
                    sparse.remove(&db);
                }
            }
        }
    }

    /// Sets every figure of database `db`.
    pub fn publish_db(&self, db: usize, figures: DbFigures) {
        for (what, v) in figures.into_iter().enumerate() {
            self.set_db(db, what, v);
        }
    }

    /// The figures of every database that has any.
    pub fn db_figures(&self) -> Vec<(usize, DbFigures)> {
        let mut out: Vec<(usize, DbFigures)> = self
            .dense
            .iter()
            .enumerate()
            .map(|(db, f)| (db, std::array::from_fn(|i| f[i].get())))
            .filter(|(_, f)| *f != [0; 4])
            .collect();
        let sparse = self.sparse.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(sparse.iter().map(|(&db, &f)| (db, f)));
        out
    }
}

impl Default for ShardStats {
    /// Valkey's default of 16 databases.
    fn default() -> ShardStats {
        ShardStats::with_databases(16)
    }
}
