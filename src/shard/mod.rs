//! One core's keyspace: the keys of the hash slots this core owns, their values, expiry,
//! eviction and access metadata.
//!
//! A shard knows nothing of sockets, Raft or disk. Reads go through `get`/`peek`; every change
//! goes through [`Shard::apply`] with a [`Mutation`] record, so persistence and replication can
//! replay exactly what happened. Keys live in one hash table per slot: SCAN walks slots in
//! order (a stable cursor), COUNTKEYSINSLOT is a length, and a slot can later move between
//! cores or nodes as a unit.

pub mod blocked;
pub mod deltas;
pub mod entry;
mod evict;
mod expire;
pub mod hash;
pub mod journal;
pub mod lazyfree;
pub mod list;
pub mod mutation;
pub mod scan;
pub mod set;
pub mod stats;
pub mod usage;
pub mod watch;
pub mod zset;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::cluster::{SLOT_COUNT, key_slot};
pub use blocked::{Blocked, Wakeup};
pub use entry::{Entry, Kind, NewValue, Value, ValueRef};
pub use evict::{EvictPolicy, idle_ms, lfu_decayed};
pub use expire::{ExpireCursor, ExpireStep};
pub use hash::{HashLimits, HashObj};
pub use journal::{Image, Journal};
pub use lazyfree::LazyFree;
pub use list::{ListLimits, ListObj};
pub use mutation::{Mutation, Ttl};
pub use set::{SetLimits, SetObj};
pub use stats::ShardStats;
use stats::{DB_EXPIRES, DB_KEYS, DB_TABLE_BYTES, DB_VOLATILE_ITEMS};
pub use watch::{WatchFlag, Watches};
pub use zset::{ZSetLimits, ZSetObj};

/// The encoding limits of every collection type (the `*-max-listpack-*` directives): they
/// decide when a small encoding converts to a scalable one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encodings {
    pub hash: HashLimits,
    pub list: ListLimits,
    pub set: SetLimits,
    pub zset: ZSetLimits,
}

/// How the access field of entries is maintained (it follows maxmemory-policy, as in Valkey).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    Lru,
    Lfu { log_factor: u32, decay_minutes: u32 },
}

#[derive(Default)]
struct SlotTable {
    table: HashTable<Entry>,
    /// Keys in this slot that have an expiry (lets the expiry cycle skip slots).
    volatile: u32,
    /// Bumped whenever the table may rehash, which moves entries (see `before_insert`): SCAN
    /// and expiry cursors carry it and restart the slot when it changed.
    epoch: u32,
}

pub struct Shard {
    slots: Box<[SlotTable]>,
    owned: Range<usize>,
    /// One bit per slot that holds keys, for fast random sampling in sparse keyspaces.
    nonempty: Box<[u64]>,
    hasher: ahash::RandomState,
    keys: usize,
    volatile: usize,
    /// The hashes that have fields with a time to live, as (slot, earliest field expiry,
    /// key): what the field expiry cycle walks (Valkey's `keys_with_volatile_items`), in slot
    /// order so a slot group's part is one range, and within a slot earliest first so a
    /// step looks only at hashes with something to delete. Kept exact by every path that
    /// stores, changes or removes a hash.
    volatile_hashes: BTreeSet<(u16, u64, Box<[u8]>)>,
    pub stats: Arc<ShardStats>,
    pub limits: Encodings,
    pub access_mode: AccessMode,
    evict_pool: evict::Pool,
    expire_cursor: ExpireCursor,
    /// The time of the batch being executed (set by the owner before each batch); only used
    /// for the access metadata of new keys, never for data decisions.
    pub clock_ms: u64,
    /// Keys written since the owner last took them (None: nobody is listening).
    changes: Option<Changes>,
    /// Records applied while changes were tracked (a cheap "did this batch write" test).
    change_count: u64,
    /// Whether reads delete the expired keys they find (lazy expiry). A Raft replica sets it
    /// only while applying log entries: there the leader's time is in the entry and every
    /// replica deletes alike; elsewhere expired keys are hidden and left for the log.
    pub expire_deletes: bool,
    /// While set, every applied record is also written here with the before-images of the
    /// keys it changes (a leader evaluating commands, see [`Journal`]); changes are then not
    /// tracked for persistence: the engine marks them once they commit.
    journal: Option<Journal>,
    /// While set, the before-image of every key a record changes is kept (once per key), so
    /// that a running script can be undone whole (`card-pan-guard refuse`).
    undo: Option<Box<Undo>>,
    /// The clients watching keys of this shard (WATCH).
    pub watches: Watches,
    /// The clients blocked on keys of this shard (BLPOP...).
    pub blocked: Blocked,
    /// The core this shard runs on (None in unit tests).
    pub core: Option<usize>,
    /// A scratch shard holds copies of one command's keys only (see `engine::span`).
    pub scratch: bool,
    /// Whether large values persist as a base plus deltas ([`deltas`]; standalone storage).
    pub use_deltas: bool,
    /// The large keys whose stored base carries a delta epoch, and where their deltas stand.
    pub delta_keys: std::collections::HashMap<Box<[u8]>, deltas::DeltaState, ahash::RandomState>,
    /// Which removals free big values in the background (the `lazyfree-lazy-*` directives).
    pub lazyfree: LazyFree,
    /// Set by the command being run to free what it deletes lazily (`Some(true)`: UNLINK,
    /// FLUSHALL ASYNC) or at once (`Some(false)`: FLUSHALL SYNC) whatever the directives say;
    /// records applied from a log follow the directives (see [`Shard::set_free_mode`]).
    free_mode: Option<bool>,
    /// Bytes of this shard's per-slot tables (MEMORY STATS), kept as they grow.
    table_bytes: usize,
    /// The numbered database (SELECT) whose keys the fields above hold.
    db: usize,
    /// The other databases holding anything, by number (a database left empty is dropped:
    /// `databases` may be large, as in Valkey, and only used ones cost memory).
    parked: std::collections::BTreeMap<usize, Box<DbState>>,
    /// An empty database's tables kept for the next database selected that has none.
    spare: Option<Box<DbState>>,
    /// The parked databases' figures, summed (what the shard's statistics add to its own).
    parked_sums: Sums,
}

type DeltaKeys = std::collections::HashMap<Box<[u8]>, deltas::DeltaState, ahash::RandomState>;

/// What a shard holds for one numbered database. The selected database's part lives in the
/// shard's own fields, where every read and every record goes; the others wait here, and
/// [`Shard::select`] swaps them in and out (a few pointer moves, no key is touched). Valkey's
/// per-database state: the keys, their expiry and eviction bookkeeping, the pending storage
/// changes, and the clients watching or blocked on keys of that database.
struct DbState {
    slots: Box<[SlotTable]>,
    nonempty: Box<[u64]>,
    keys: usize,
    volatile: usize,
    volatile_hashes: BTreeSet<(u16, u64, Box<[u8]>)>,
    evict_pool: evict::Pool,
    expire_cursor: ExpireCursor,
    changes: Option<Changes>,
    delta_keys: DeltaKeys,
    table_bytes: usize,
    watches: Watches,
    blocked: Blocked,
}

impl DbState {
    fn new(tracking: bool) -> DbState {
        let mut slots = Vec::with_capacity(SLOT_COUNT);
        slots.resize_with(SLOT_COUNT, SlotTable::default);
        DbState {
            slots: slots.into_boxed_slice(),
            nonempty: vec![0u64; SLOT_COUNT / 64].into_boxed_slice(),
            keys: 0,
            volatile: 0,
            volatile_hashes: BTreeSet::new(),
            evict_pool: evict::Pool::default(),
            expire_cursor: ExpireCursor::default(),
            changes: tracking.then(Changes::default),
            delta_keys: Default::default(),
            table_bytes: 0,
            watches: Watches::default(),
            blocked: Blocked::default(),
        }
    }
}

/// Figures of parked databases, summed.
#[derive(Default, Clone, Copy)]
struct Sums {
    keys: usize,
    volatile: usize,
    volatile_hashes: usize,
    table_bytes: usize,
    watched: usize,
    blocking: usize,
}

/// The change feed persistence reads: which keys changed since it last looked. It stores each
/// key's state as of when it looks, so a key written many times in between is written once.
#[derive(Default)]
pub struct Changes {
    /// Keys to store whole (or delete).
    pub keys: std::collections::HashSet<Box<[u8]>, ahash::RandomState>,
    /// Large keys whose changes are stored as a delta: their records, encoded one after the
    /// other (see [`deltas`]). A key is in `keys` or here, never both.
    pub deltas: std::collections::HashMap<Box<[u8]>, Vec<u8>, ahash::RandomState>,
    /// Every key of the shard was deleted (FLUSHALL) before the changes in `keys`.
    pub flushed: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.deltas.is_empty() && !self.flushed
    }

    pub fn len(&self) -> usize {
        self.keys.len() + self.deltas.len()
    }

    /// Marks `key` for storing whole (superseding its deltas of this turn).
    fn rewrite(&mut self, key: &[u8]) {
        if !self.keys.contains(key) {
            self.deltas.remove(key);
            self.keys.insert(key.into());
        }
    }
}

/// The before-images [`Shard::begin_undo`] keeps: (database, key, state before the first
/// change), in the order keys were first changed.
struct Undo {
    images: Vec<(u32, Box<[u8]>, Option<Image>)>,
    /// The keys imaged already, by database.
    seen: HashMap<u32, HashSet<Box<[u8]>, ahash::RandomState>, ahash::RandomState>,
    /// Where the journal stood when the script began.
    journal_mark: Option<journal::Mark>,
}

/// Marks a database's storage for a rewrite from scratch: everything stored goes, then every
/// key in `slots` is written again (SWAPDB).
fn rewrite_all(slots: &[SlotTable], changes: &mut Option<Changes>) {
    let Some(c) = changes.as_mut() else { return };
    c.keys.clear();
    c.deltas.clear();
    c.flushed = true;
    for t in slots {
        c.keys
            .extend(t.table.iter().map(|e| Box::<[u8]>::from(e.key())));
    }
}

/// Valkey's LRU clock: seconds, 24 bits, wrapping.
pub const LRU_CLOCK_MAX: u32 = (1 << 24) - 1;

pub fn lru_clock(now_ms: u64) -> u32 {
    ((now_ms / 1000) as u32) & LRU_CLOCK_MAX
}

impl Shard {
    /// A shard owning `owned` slots.
    pub fn new(owned: Range<usize>, stats: Arc<ShardStats>) -> Shard {
        let mut slots = Vec::with_capacity(SLOT_COUNT);
        slots.resize_with(SLOT_COUNT, SlotTable::default);
        Shard {
            slots: slots.into_boxed_slice(),
            owned,
            nonempty: vec![0u64; SLOT_COUNT / 64].into_boxed_slice(),
            hasher: ahash::RandomState::new(),
            keys: 0,
            volatile: 0,
            volatile_hashes: BTreeSet::new(),
            stats,
            limits: Encodings::default(),
            access_mode: AccessMode::Lru,
            evict_pool: evict::Pool::default(),
            expire_cursor: ExpireCursor::default(),
            clock_ms: crate::util::now_ms(),
            changes: None,
            change_count: 0,
            expire_deletes: true,
            journal: None,
            undo: None,
            watches: Watches::default(),
            blocked: Blocked::default(),
            core: None,
            scratch: false,
            use_deltas: false,
            delta_keys: Default::default(),
            lazyfree: LazyFree::default(),
            free_mode: None,
            table_bytes: 0,
            db: 0,
            parked: Default::default(),
            spare: None,
            parked_sums: Sums::default(),
        }
    }

    /// The numbered database reads and records go to.
    pub fn db(&self) -> usize {
        self.db
    }

    /// Makes database `db` the one reads and records go to (Valkey's selectDb). Whoever
    /// selects another database than 0 selects 0 again when done: the engine's paths that know
    /// nothing of databases (Raft, slot hand-over) see database 0.
    #[inline]
    pub fn select(&mut self, db: usize) {
        if db != self.db {
            self.switch_to(db);
        }
    }

    fn switch_to(&mut self, db: usize) {
        let mut st = self.take_parked(db);
        self.swap_data(&mut st);
        std::mem::swap(&mut self.watches, &mut st.watches);
        std::mem::swap(&mut self.blocked, &mut st.blocked);
        let old = std::mem::replace(&mut self.db, db);
        self.park(old, st);
        self.sum_parked();
    }

    /// Database `db`'s parked state, or an empty one.
    fn take_parked(&mut self, db: usize) -> Box<DbState> {
        if let Some(st) = self.parked.remove(&db) {
            return st;
        }
        let tracking = self.changes.is_some();
        match self.spare.take() {
            Some(mut st) => {
                st.changes = tracking.then(Changes::default);
                st
            }
            None => Box::new(DbState::new(tracking)),
        }
    }

    /// Parks database `db`'s state, unless it holds nothing at all: then its tables become
    /// the spare (database 0's part of the figures stays published either way).
    fn park(&mut self, db: usize, mut st: Box<DbState>) {
        let empty = st.keys == 0
            && st.watches.is_empty()
            && st.blocked.is_empty()
            && st.volatile_hashes.is_empty()
            && st.delta_keys.is_empty()
            && st.changes.as_ref().is_none_or(Changes::is_empty);
        if !empty {
            self.parked.insert(db, st);
            return;
        }
        self.stats.publish_db(db, [0; 4]);
        // Tables that grew are freed (their bytes are counted nowhere once dropped here).
        if self.spare.is_none() && st.table_bytes == 0 {
            st.evict_pool.clear();
            st.expire_cursor = ExpireCursor::default();
            self.spare = Some(st);
        }
    }

    /// Swaps the keys of the selected database (and what goes with them: expiry, eviction
    /// and storage bookkeeping) with `st`'s; the clients watching or blocked stay.
    fn swap_data(&mut self, st: &mut DbState) {
        use std::mem::swap;
        swap(&mut self.slots, &mut st.slots);
        swap(&mut self.nonempty, &mut st.nonempty);
        swap(&mut self.keys, &mut st.keys);
        swap(&mut self.volatile, &mut st.volatile);
        swap(&mut self.volatile_hashes, &mut st.volatile_hashes);
        swap(&mut self.evict_pool, &mut st.evict_pool);
        swap(&mut self.expire_cursor, &mut st.expire_cursor);
        swap(&mut self.changes, &mut st.changes);
        swap(&mut self.delta_keys, &mut st.delta_keys);
        swap(&mut self.table_bytes, &mut st.table_bytes);
    }

    fn sum_parked(&mut self) {
        let mut sums = Sums::default();
        for st in self.parked.values() {
            sums.keys += st.keys;
            sums.volatile += st.volatile;
            sums.volatile_hashes += st.volatile_hashes.len();
            sums.table_bytes += st.table_bytes;
            sums.watched += st.watches.len();
            sums.blocking += st.blocked.len();
        }
        self.parked_sums = sums;
    }

    /// The databases that ever held anything here (or were selected), in order.
    pub fn used_dbs(&self) -> Vec<usize> {
        let mut dbs: Vec<usize> = self.parked.keys().copied().collect();
        if let Err(i) = dbs.binary_search(&self.db) {
            dbs.insert(i, self.db);
        }
        dbs
    }

    /// Runs `f` with each used database selected in turn, then selects the one selected
    /// before.
    pub fn for_each_db(&mut self, mut f: impl FnMut(&mut Shard)) {
        if self.parked.is_empty() {
            // One database in use (the usual case): no list to build.
            return f(self);
        }
        let was = self.db;
        for db in self.used_dbs() {
            self.select(db);
            f(self);
        }
        self.select(was);
    }

    /// Keys in every database of this shard.
    pub fn total_len(&self) -> usize {
        self.keys + self.parked_sums.keys
    }

    /// Keys with an expiry in every database of this shard.
    pub fn total_volatile_len(&self) -> usize {
        self.volatile + self.parked_sums.volatile
    }

    /// SWAPDB: databases `a` and `b` exchange their keys. The clients watching a key that
    /// exists in either are told it changed, clients blocked on a key that now has data are
    /// woken (Valkey's touchAllWatchedKeysInDb, scanDatabaseForReadyKeys), and storage is
    /// told to rewrite both databases.
    pub fn swap_dbs(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        let was = self.db;
        self.select(a);
        let mut st = self.take_parked(b);
        self.swap_data(&mut st);
        // Storage holds each database under its own number: both are rewritten whole.
        self.delta_keys.clear();
        st.delta_keys.clear();
        rewrite_all(&self.slots, &mut self.changes);
        rewrite_all(&st.slots, &mut st.changes);
        // Watched keys existing in either database, in both databases' sessions.
        let exists = |slots: &[SlotTable], hasher: &ahash::RandomState, k: &[u8]| {
            let slot = key_slot(k) as usize;
            let hash = hasher.hash_one(k);
            slots[slot].table.find(hash, |e| e.key() == k).is_some()
        };
        let hasher = self.hasher.clone();
        let (mine, theirs) = (&self.slots, &st.slots);
        self.watches
            .touch_where(|k| exists(mine, &hasher, k) || exists(theirs, &hasher, k));
        st.watches
            .touch_where(|k| exists(mine, &hasher, k) || exists(theirs, &hasher, k));
        self.blocked.wake_where(|k| exists(mine, &hasher, k));
        st.blocked.wake_where(|k| exists(theirs, &hasher, k));
        let b_figures = [
            st.keys as u64,
            st.volatile as u64,
            st.volatile_hashes.len() as u64,
            st.table_bytes as u64,
        ];
        self.park(b, st);
        self.stats.publish_db(b, b_figures);
        self.sum_parked();
        self.sync_counts();
        self.sync_volatile_hashes();
        self.sync_waiting_counts();
        self.sync_table_bytes();
        self.select(was);
    }

    /// Makes the removals of the command about to run free lazily (`Some(true)`) or at once
    /// (`Some(false)`) whatever the lazyfree directives say; `None` goes back to them. Only
    /// when memory is released depends on it, never what the keyspace holds.
    pub fn set_free_mode(&mut self, mode: Option<bool>) {
        self.free_mode = mode;
    }

    /// Whether a DEL frees big values lazily (UNLINK always does).
    fn lazy_user_del(&self) -> bool {
        self.free_mode.unwrap_or(self.lazyfree.user_del)
    }

    /// Whether a flush frees lazily (FLUSHALL ASYNC, or a plain FLUSHALL under
    /// `lazyfree-lazy-user-flush`).
    fn lazy_flush(&self) -> bool {
        self.free_mode.unwrap_or(self.lazyfree.user_flush)
    }

    /// Removes `key` and frees its value, in the background when it is big and `lazy`;
    /// whether it was there.
    fn delete(&mut self, key: &[u8], lazy: bool) -> bool {
        match self.remove(key) {
            Some(entry) => {
                lazyfree::discard(entry, lazy);
                true
            }
            None => false,
        }
    }

    /// Starts (or stops) recording which keys change, for [`Shard::take_changes`].
    pub fn track_changes(&mut self, on: bool) {
        self.changes = on.then(Changes::default);
        for st in self.parked.values_mut() {
            st.changes = on.then(Changes::default);
        }
    }

    /// How many keys changed since the last [`Shard::take_changes`] (every database).
    pub fn pending_changes(&self) -> usize {
        let parked = self.parked.values();
        self.changes.as_ref().map_or(0, Changes::len)
            + parked
                .map(|st| st.changes.as_ref().map_or(0, Changes::len))
                .sum::<usize>()
    }

    /// Whether keys changed since the last [`Shard::take_changes`] (in any database).
    pub fn has_changes(&self) -> bool {
        let changed = |c: &Option<Changes>| c.as_ref().is_some_and(|c| !c.is_empty());
        changed(&self.changes) || self.parked.values().any(|st| changed(&st.changes))
    }

    /// The databases with changes not yet taken.
    pub fn changed_dbs(&self) -> Vec<usize> {
        let changed = |c: &Option<Changes>| c.as_ref().is_some_and(|c| !c.is_empty());
        if self.parked.is_empty() {
            return if changed(&self.changes) {
                vec![self.db]
            } else {
                Vec::new()
            };
        }
        self.used_dbs()
            .into_iter()
            .filter(|&d| match self.parked.get(&d) {
                Some(st) => changed(&st.changes),
                None => d == self.db && changed(&self.changes),
            })
            .collect()
    }

    /// Counts records applied while tracking; compare two readings to see if anything was
    /// written in between.
    pub fn change_count(&self) -> u64 {
        self.change_count
    }

    /// The keys changed since the last call (None when not tracking or nothing changed).
    pub fn take_changes(&mut self) -> Option<Changes> {
        let c = self.changes.as_mut()?;
        if c.is_empty() {
            return None;
        }
        Some(std::mem::take(c))
    }

    /// The stored entry for `key`, expired or not (what persistence writes: an expired key
    /// keeps its absolute expiry on disk and is dropped when loaded).
    pub fn peek_stored(&self, key: &[u8]) -> Option<&Entry> {
        let (slot, hash) = self.locate(key);
        self.slots[slot].table.find(hash, |e| e.key() == key)
    }

    fn note_change(&mut self, m: &Mutation<'_>) {
        if self.changes.is_none() {
            return;
        }
        self.change_count += 1;
        // A part of a large value changes: a delta of its stored base may carry it.
        let delta_budget = match m.key() {
            // (Database 0 only: storage keeps no deltas for the others.)
            Some(k) if self.use_deltas && self.db == 0 && deltas::is_partial(m) => self
                .delta_keys
                .get(k)
                .map(deltas::DeltaState::budget)
                .filter(|&b| b > 0 && self.peek_stored(k).is_some_and(deltas::worth_deltas)),
            _ => None,
        };
        let Some(c) = self.changes.as_mut() else {
            return;
        };
        match m {
            Mutation::FlushAll => {
                c.keys.clear();
                c.deltas.clear();
                c.flushed = true;
                self.delta_keys.clear();
            }
            Mutation::Rename { from, to } => {
                c.rewrite(from);
                c.rewrite(to);
            }
            Mutation::FlushSlots { slots } => {
                let keys = {
                    let owned = self.owned.clone();
                    let mine = (slots.start as usize).max(owned.start)
                        ..(slots.end as usize).min(owned.end);
                    let mut keys = Vec::new();
                    for slot in mine {
                        keys.extend(self.slots[slot].table.iter().map(|e| Box::from(e.key())));
                    }
                    keys
                };
                if let Some(c) = self.changes.as_mut() {
                    for k in keys {
                        c.rewrite(&k);
                    }
                }
            }
            m => {
                let Some(k) = m.key() else { return };
                if c.keys.contains(k) {
                    return;
                }
                if let Some(budget) = delta_budget {
                    let buf = match c.deltas.get_mut(k) {
                        Some(buf) => buf,
                        None => c.deltas.entry(k.into()).or_default(),
                    };
                    m.encode(buf);
                    if buf.len() as u64 <= budget {
                        return;
                    }
                }
                c.rewrite(k);
            }
        }
    }

    pub fn owned_slots(&self) -> Range<usize> {
        self.owned.clone()
    }

    /// Changes the slots this shard owns; only while it holds no key (before loading, or a
    /// node joining a cluster).
    pub fn set_owned(&mut self, owned: Range<usize>) {
        debug_assert!(
            self.keys == 0,
            "slots reassigned under a shard holding keys"
        );
        self.owned = owned;
        self.expire_cursor = ExpireCursor::default();
    }

    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Keys with an expiry.
    pub fn volatile_len(&self) -> usize {
        self.volatile
    }

    /// Hashes with at least one field that has a time to live.
    pub fn volatile_hashes_len(&self) -> usize {
        self.volatile_hashes.len()
    }

    pub fn count_in_slot(&self, slot: usize) -> usize {
        self.slots[slot].table.len()
    }

    #[inline]
    fn locate(&self, key: &[u8]) -> (usize, u64) {
        (key_slot(key) as usize, self.hasher.hash_one(key))
    }

    /// The live entry for `key`, with its access metadata updated (a read or write by a
    /// command). An expired key is deleted here (lazy expiry) and reads as absent.
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        self.lookup(key, now, false)
    }

    /// `get` for a read command: also counts a keyspace hit or miss (Valkey's lookupKeyRead).
    pub fn get_read(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        self.lookup(key, now, true)
    }

    #[inline]
    fn lookup(&mut self, key: &[u8], now: u64, count: bool) -> Option<&mut Entry> {
        self.lookup_inner(key, now, count, true)
    }

    /// `lookup`; with `reclaim`, the expired fields of a hash found are deleted first (lazy
    /// field expiry, a record like lazy key expiry), up to [`LAZY_FIELDS`] of them.
    #[inline]
    fn lookup_inner(
        &mut self,
        key: &[u8],
        now: u64,
        count: bool,
        reclaim: bool,
    ) -> Option<&mut Entry> {
        let (slot, hash) = self.locate(key);
        // Find the bucket once; the index then gives O(1) access without re-probing.
        let found = self.slots[slot]
            .table
            .find_bucket_index(hash, |e| e.key() == key);
        let live = found.filter(|&i| {
            !self.slots[slot]
                .table
                .get_bucket(i)
                .is_some_and(|e| e.is_expired(now))
        });
        if count {
            let counter = if live.is_some() {
                &self.stats.keyspace_hits
            } else {
                &self.stats.keyspace_misses
            };
            counter.inc();
        }
        if found.is_some() && live.is_none() {
            if self.expire_deletes {
                self.delete_expired(key, now);
            }
            return None;
        }
        if reclaim
            && self.expire_deletes
            && !self.volatile_hashes.is_empty()
            && let Some(i) = live
        {
            let due = match self.slots[slot].table.get_bucket(i).map(|e| e.value()) {
                Some(ValueRef::Hash(h)) if h.next_expiry().is_some_and(|at| now > at) => {
                    h.expired_fields(now, LAZY_FIELDS)
                }
                _ => Vec::new(),
            };
            if !due.is_empty() {
                let fields: Vec<&[u8]> = due.iter().map(|f| &f[..]).collect();
                self.apply(Mutation::HExpired {
                    key,
                    fields: &fields,
                });
                // The hit or miss was counted above; the key may be gone now.
                return self.lookup_inner(key, now, false, false);
            }
        }
        let mode = self.access_mode;
        let entry = self.slots[slot].table.get_bucket_mut(live?)?;
        touch(entry, mode, now);
        Some(entry)
    }

    /// The live entry for `key` without touching its access metadata (OBJECT, TTL, TYPE do
    /// not count as an access in Valkey). Expired keys read as absent but are not deleted.
    pub fn peek(&self, key: &[u8], now: u64) -> Option<&Entry> {
        let (slot, hash) = self.locate(key);
        self.slots[slot]
            .table
            .find(hash, |e| e.key() == key)
            .filter(|e| !e.is_expired(now))
    }

    /// Lazy-expiry deletion: counted in `expired_keys`.
    fn delete_expired(&mut self, key: &[u8], _now: u64) {
        self.apply(Mutation::Expired { key });
    }

    /// Applies one mutation record. Deterministic: the same records applied to the same state
    /// give the same state on every replica. Returns false only when the record had nothing
    /// to act on (a DEL or EXPIRE of a missing key).
    pub fn apply(&mut self, m: Mutation<'_>) -> bool {
        if let Mutation::Select { db } = m {
            // A journal notes the database of its records itself (see `journal_record`).
            self.select(db as usize);
            return true;
        }
        if !self.watches.is_empty() {
            self.touch_watched(&m);
            self.sync_waiting_counts();
        }
        if !self.blocked.is_empty() {
            self.wake_blocked(&m);
            self.sync_waiting_counts();
        }
        if self.undo.is_some() || self.journal.is_some() {
            // Before-images, for a script's undo and a leader's journal alike.
            let keys = self.changed_keys(&m);
            if self.undo.is_some() {
                self.undo_record(&keys);
            }
            if self.journal.is_some() {
                self.journal_record(&m, keys);
            }
        }
        if self.journal.is_none() {
            self.note_change(&m);
        }
        match m {
            Mutation::SetStr { key, value, ttl } => {
                self.put(key, NewValue::from_bytes(value), ttl);
                true
            }
            Mutation::SetInt { key, value, ttl } => {
                self.put(key, NewValue::Int(value), ttl);
                true
            }
            Mutation::Append { key, tail } => {
                self.update_string(key, |cur| cur.extend_from_slice(tail));
                true
            }
            Mutation::SetRange { key, offset, data } => {
                // In place for a string (a bit flip in a large bitmap touches one byte);
                // an integer is rewritten as its digits first.
                let end = offset + data.len();
                let entry = self.entry_or_insert(key, || Value::Str(Box::default()));
                if let Some(bytes) = entry.str_mut_at_least(end) {
                    bytes[offset..end].copy_from_slice(data);
                } else {
                    self.update_string(key, |cur| {
                        if cur.len() < end {
                            cur.resize(end, 0);
                        }
                        cur[offset..end].copy_from_slice(data);
                    });
                }
                true
            }
            Mutation::HSet { key, pairs } => {
                let limits = self.limits.hash;
                self.edit_hash(key, true, |h| h.set_pairs(pairs, limits))
            }
            Mutation::HSetEx { key, at, pairs } => {
                let limits = self.limits.hash;
                self.edit_hash(key, true, |h| h.set_pairs_expiring(pairs, at, limits))
            }
            Mutation::HDel { key, fields } => self.edit_hash(key, false, |h| {
                for f in fields {
                    h.remove(f);
                }
            }),
            Mutation::HExpire { key, at, fields } => self.edit_hash(key, false, |h| {
                for f in fields {
                    h.set_ttl(f, at);
                }
            }),
            Mutation::HExpired { key, fields } => {
                let mut gone = 0;
                let acted = self.edit_hash(key, false, |h| {
                    gone = fields.iter().filter(|f| h.remove(f)).count();
                });
                self.stats.expired_fields.add(gone as u64);
                acted
            }
            Mutation::ListPush { key, left, elems } => {
                let limits = self.limits.list;
                let entry = self.entry_or_insert(key, || Value::List(Box::default()));
                if let Some(l) = entry.list_mut() {
                    l.push(elems, left, limits);
                }
                true
            }
            Mutation::ListPop { key, left, count } => {
                let limits = self.limits.list;
                self.shrink(key, |e| {
                    let l = e.list_mut()?;
                    l.pop_many(left, count, limits);
                    Some(l.is_empty())
                })
            }
            Mutation::ListSet { key, index, value } => {
                let limits = self.limits.list;
                self.shrink(key, |e| {
                    let l = e.list_mut()?;
                    if index < l.len() {
                        l.set(index, value, limits);
                    }
                    Some(false)
                })
            }
            Mutation::ListInsert { key, index, value } => {
                let limits = self.limits.list;
                self.shrink(key, |e| {
                    let l = e.list_mut()?;
                    l.insert(index.min(l.len()), value, limits);
                    Some(false)
                })
            }
            Mutation::ListRem { key, count, elem } => {
                let limits = self.limits.list;
                self.shrink(key, |e| {
                    let l = e.list_mut()?;
                    l.remove_matching(count, elem, limits);
                    Some(l.is_empty())
                })
            }
            Mutation::ListTrim { key, start, end } => {
                let limits = self.limits.list;
                self.shrink(key, |e| {
                    let l = e.list_mut()?;
                    l.retain_range(start, end, limits);
                    Some(l.is_empty())
                })
            }
            Mutation::SetAdd { key, members } => {
                let limits = self.limits.set;
                let first = members.first().copied().unwrap_or_default();
                // As SADD: the encoding is chosen for the whole argument list first.
                let entry = self.entry_or_insert(key, || {
                    Value::Set(Box::new(SetObj::create(first, members.len(), limits)))
                });
                if let Some(x) = entry.set_mut() {
                    x.add_all(members, limits);
                }
                true
            }
            Mutation::SetRem { key, members } => self.shrink(key, |e| {
                let x = e.set_mut()?;
                for m in members {
                    x.remove(m);
                }
                Some(x.is_empty())
            }),
            Mutation::ZAdd { key, pairs } => {
                let limits = self.limits.zset;
                // Valkey sizes the encoding by the whole write (zsetTypeCreate / MaybeConvert).
                let longest = pairs.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
                let entry = self.entry_or_insert(key, || {
                    Value::ZSet(Box::new(ZSetObj::with_hint(pairs.len(), longest, limits)))
                });
                if let Some(z) = entry.zset_mut() {
                    z.prepare(pairs.len(), longest, limits);
                    for (score, m) in pairs {
                        z.insert(m, *score, limits);
                    }
                }
                true
            }
            Mutation::ZRem { key, members } => self.shrink(key, |e| {
                let z = e.zset_mut()?;
                for m in members {
                    z.remove(m);
                }
                Some(z.is_empty())
            }),
            Mutation::ZRemRange { key, start, end } => self.shrink(key, |e| {
                let z = e.zset_mut()?;
                z.remove_range(start, end);
                Some(z.is_empty())
            }),
            Mutation::Expire { key, at } => self.set_expire(key, at),
            Mutation::Del { key } => self.delete(key, self.lazy_user_del()),
            Mutation::Expired { key } => {
                let removed = self.delete(key, self.lazyfree.expire);
                if removed {
                    self.stats.expired_keys.inc();
                }
                removed
            }
            Mutation::Evicted { key } => {
                let removed = self.delete(key, self.lazyfree.eviction);
                if removed {
                    self.stats.evicted_keys.inc();
                }
                removed
            }
            Mutation::Rename { from, to } => match self.remove(from) {
                Some(entry) => {
                    let expire = entry.expire_at();
                    let access = entry.access;
                    self.insert_entry(Entry::new(to, entry.into_value(), 0, access), expire);
                    true
                }
                None => false,
            },
            Mutation::Restore {
                key,
                value,
                expire_at,
            } => {
                let ttl = expire_at.map_or(Ttl::Clear, Ttl::At);
                self.put(key, NewValue::Owned(value), ttl);
                true
            }
            Mutation::Select { .. } => unreachable!("handled at the top"),
            Mutation::FlushSlots { slots } => {
                let lazy = self.lazy_flush();
                let mut removed = Vec::new();
                for key in self.keys_in(slots.start as usize..slots.end as usize) {
                    removed.extend(self.remove(&key));
                }
                if lazy {
                    lazyfree::discard_entries(removed);
                }
                true
            }
            Mutation::FlushAll => {
                let lazy = self.lazy_flush();
                let mut tables = Vec::new();
                for slot in self.owned.clone() {
                    let old = std::mem::take(&mut self.slots[slot]);
                    if lazy && !old.table.is_empty() {
                        tables.push(old.table);
                    }
                }
                let owned = self.owned.clone();
                self.volatile_hashes
                    .retain(|(slot, _, _)| !owned.contains(&(*slot as usize)));
                self.sync_volatile_hashes();
                if lazy {
                    lazyfree::discard_tables(tables, self.keys as u64);
                }
                self.table_bytes = 0;
                self.sync_table_bytes();
                self.nonempty.iter_mut().for_each(|w| *w = 0);
                self.keys = 0;
                self.volatile = 0;
                self.evict_pool.clear();
                self.sync_counts();
                true
            }
        }
    }

    /// Publishes how many keys are watched and blocked on (INFO clients); call after changing
    /// `watches` or `blocked`.
    pub fn sync_waiting_counts(&self) {
        let p = &self.parked_sums;
        self.stats
            .watched_keys
            .set((self.watches.len() + p.watched) as u64);
        self.stats
            .blocking_keys
            .set((self.blocked.len() + p.blocking) as u64);
    }

    /// Wakes the clients blocked on a key `m` may give data to.
    fn wake_blocked(&mut self, m: &Mutation<'_>) {
        match m {
            Mutation::ListPush { key, .. }
            | Mutation::ListInsert { key, .. }
            | Mutation::ListSet { key, .. }
            | Mutation::ZAdd { key, .. }
            | Mutation::SetStr { key, .. }
            | Mutation::SetInt { key, .. }
            | Mutation::HSet { key, .. }
            | Mutation::HSetEx { key, .. }
            | Mutation::SetAdd { key, .. }
            | Mutation::Restore { key, .. } => self.blocked.wake(key),
            Mutation::Rename { to, .. } => self.blocked.wake(to),
            _ => {}
        }
    }

    /// Marks the WATCH sessions of the keys `m` changes.
    fn touch_watched(&mut self, m: &Mutation<'_>) {
        match m {
            Mutation::FlushAll => self.watches.touch_where(|_| true),
            Mutation::Select { .. } => {}
            Mutation::FlushSlots { slots } => {
                let slots = slots.start as usize..slots.end as usize;
                self.watches
                    .touch_where(|k| slots.contains(&(key_slot(k) as usize)))
            }
            Mutation::Rename { from, to } => {
                self.watches.touch(from);
                self.watches.touch(to);
            }
            m => {
                if let Some(k) = m.key() {
                    self.watches.touch(k);
                }
            }
        }
    }

    /// Changes the collection at `key` in place with `f`, which returns whether it is now
    /// empty (None: the key holds another type, nothing changed); an emptied collection's key
    /// goes, as in Valkey. False when the key is missing.
    fn shrink(&mut self, key: &[u8], f: impl FnOnce(&mut Entry) -> Option<bool>) -> bool {
        let (slot, hash) = self.locate(key);
        let Ok(mut found) = self.slots[slot].table.find_entry(hash, |e| e.key() == key) else {
            return false;
        };
        if f(found.get_mut()) == Some(true) {
            self.remove(key);
        }
        true
    }

    /// Starts journaling: every record applied until [`Shard::take_journal`] is recorded
    /// with the before-images of the keys it changes.
    pub fn start_journal(&mut self) {
        self.journal = Some(Journal::default());
    }

    /// Ends journaling and returns what was recorded.
    pub fn take_journal(&mut self) -> Option<Journal> {
        self.journal.take()
    }

    /// The journal being filled, if any (to close units between commands).
    pub fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.journal.as_mut()
    }

    /// The keys record `m` changes.
    fn changed_keys(&self, m: &Mutation<'_>) -> Vec<Box<[u8]>> {
        match m {
            Mutation::Rename { from, to } => vec![(*from).into(), (*to).into()],
            Mutation::FlushAll => self.keys_in(self.owned.clone()),
            Mutation::FlushSlots { slots } => {
                self.keys_in(slots.start as usize..slots.end as usize)
            }
            m => m.key().map(|k| vec![k.into()]).unwrap_or_default(),
        }
    }

    /// Starts keeping before-images for [`Shard::end_undo`] (a script begins).
    pub fn begin_undo(&mut self) {
        self.undo = Some(Box::new(Undo {
            images: Vec::new(),
            seen: HashMap::default(),
            journal_mark: self.journal.as_ref().map(Journal::mark),
        }));
    }

    /// Stops keeping before-images; with `undo`, puts every key changed since
    /// [`Shard::begin_undo`] back as it was, and drops the journal's records of those changes
    /// (a leader replicates none of them). Returns how many keys went back.
    pub fn end_undo(&mut self, undo: bool) -> usize {
        let Some(u) = self.undo.take() else { return 0 };
        if !undo {
            return 0;
        }
        let Undo {
            images,
            journal_mark,
            ..
        } = *u;
        if let (Some(j), Some(mark)) = (self.journal.as_mut(), journal_mark) {
            j.rewind(mark);
        }
        let db = self.db;
        let n = images.len();
        for (key_db, key, image) in images.into_iter().rev() {
            self.select(key_db as usize);
            self.restore_image(&key, image);
            // Without a journal, changes are tracked for persistence: the key's state is
            // written again as it now is (with one, the engine persists what commits).
            if self.journal.is_none() {
                self.mark_changed(&key);
            }
        }
        self.select(db);
        n
    }

    fn undo_record(&mut self, keys: &[Box<[u8]>]) {
        let db = self.db as u32;
        for key in keys {
            if self
                .undo
                .as_ref()
                .is_some_and(|u| u.seen.get(&db).is_some_and(|s| s.contains(key)))
            {
                continue;
            }
            let image = self.image_of(key);
            if let Some(u) = self.undo.as_mut() {
                u.seen.entry(db).or_default().insert(key.clone());
                u.images.push((db, key.clone(), image));
            }
        }
    }

    /// Records `m` in the journal: first the before-image of each key it is about to change
    /// (once per key and journal), then the record itself.
    fn journal_record(&mut self, m: &Mutation<'_>, keys: Vec<Box<[u8]>>) {
        let db = self.db as u32;
        if let Some(j) = self.journal.as_mut() {
            j.enter_db(db);
        }
        for key in keys {
            if !self.journal.as_ref().is_some_and(|j| j.has_image(db, &key)) {
                let image = self.image_of(&key);
                if let Some(j) = self.journal.as_mut() {
                    j.push_image(db, &key, image);
                }
            }
        }
        if let Some(j) = self.journal.as_mut() {
            m.encode(&mut j.records);
            j.note_record();
        }
    }

    /// Every key stored in `slots` (of those this shard owns), expired or not.
    fn keys_in(&self, slots: Range<usize>) -> Vec<Box<[u8]>> {
        let owned = self.owned.clone();
        let mine = slots.start.max(owned.start)..slots.end.min(owned.end);
        let mut keys = Vec::new();
        for slot in mine {
            keys.extend(self.slots[slot].table.iter().map(|e| Box::from(e.key())));
        }
        keys
    }

    /// A copy of `key`'s stored state, expired or not (None: absent).
    pub fn image_of(&self, key: &[u8]) -> Option<Image> {
        self.peek_stored(key).map(|e| Image {
            value: e.to_value(),
            expire_at: e.expire_at(),
            access: e.access,
        })
    }

    /// Puts `key` back to `image` (undoing changes that never committed). Neither journaled
    /// nor tracked for persistence: what persistence holds never included the undone changes.
    pub fn restore_image(&mut self, key: &[u8], image: Option<Image>) {
        self.delete(key, self.lazyfree.server_del);
        if let Some(image) = image {
            let entry = Entry::new(key, image.value, 0, image.access);
            self.insert_entry(entry, image.expire_at);
        }
    }

    /// Marks `key` as changed for persistence (the engine, when a leader's record commits).
    pub fn mark_changed(&mut self, key: &[u8]) {
        if let Some(c) = self.changes.as_mut() {
            self.change_count += 1;
            c.rewrite(key);
        }
    }

    /// Replaces (or creates) `key` with `value`, handling the TTL as `ttl` says.
    fn put(&mut self, key: &[u8], value: NewValue<'_>, ttl: Ttl) {
        let (slot, hash) = self.locate(key);
        let access = self.fresh_access();
        self.before_insert(slot);
        let table = &mut self.slots[slot].table;
        let hasher = &self.hasher;
        match table.entry(hash, |e| e.key() == key, |e| hasher.hash_one(e.key())) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let entry = o.get_mut();
                let head_before = fields_head(entry);
                // An overwritten collection is a server-side delete (lazyfree-lazy-server-del).
                if self.lazyfree.server_del
                    && entry.value().free_effort() > lazyfree::LAZYFREE_THRESHOLD
                    && let Some(old) = entry.take_collection()
                {
                    lazyfree::discard_value(old, true);
                }
                entry.assign(value);
                let head_after = fields_head(entry);
                let had = entry.expire_at().is_some();
                match ttl {
                    Ttl::Keep => {}
                    Ttl::Clear => entry.set_expire_raw(None),
                    Ttl::At(at) => entry.set_expire_raw(Some(at)),
                }
                let has = entry.expire_at().is_some();
                self.adjust_volatile(slot, had, has);
                self.index_fields(slot, key, head_before, head_after);
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let at = match ttl {
                    Ttl::At(at) => at,
                    _ => 0,
                };
                let entry = Entry::with(key, value, at, access);
                let head = fields_head(&entry);
                v.insert(entry);
                self.after_insert(slot, at != 0);
                self.index_fields(slot, key, None, head);
            }
        }
    }

    /// Stores `entry`, replacing (and freeing, as a server-side delete) what `key` held.
    fn insert_entry(&mut self, mut entry: Entry, expire: Option<u64>) {
        let key: Box<[u8]> = entry.key().into();
        self.delete(&key, self.lazyfree.server_del);
        entry.set_expire_raw(expire);
        let head = fields_head(&entry);
        let (slot, hash) = self.locate(&key);
        self.before_insert(slot);
        let hasher = &self.hasher;
        self.slots[slot]
            .table
            .insert_unique(hash, entry, |e| hasher.hash_one(e.key()));
        self.after_insert(slot, expire.is_some());
        self.index_fields(slot, &key, None, head);
    }

    fn entry_or_insert(&mut self, key: &[u8], make: impl FnOnce() -> Value) -> &mut Entry {
        let (slot, hash) = self.locate(key);
        let exists = self.slots[slot]
            .table
            .find(hash, |e| e.key() == key)
            .is_some();
        if !exists {
            let access = self.fresh_access();
            self.before_insert(slot);
            let hasher = &self.hasher;
            self.slots[slot]
                .table
                .insert_unique(hash, Entry::new(key, make(), 0, access), |e| {
                    hasher.hash_one(e.key())
                });
            self.after_insert(slot, false);
        }
        self.slots[slot]
            .table
            .find_mut(hash, |e| e.key() == key)
            .expect("present: found or inserted above")
    }

    /// Applies `f` to the string form of `key` (empty when missing), keeping the TTL.
    fn update_string(&mut self, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) {
        let entry = self.entry_or_insert(key, || Value::Str(Box::default()));
        let mut bytes = match entry.value() {
            ValueRef::Str(s) => s.to_vec(),
            ValueRef::Int(i) => itoa::Buffer::new().format(i).as_bytes().to_vec(),
            // A collection here means the command did not check the type: a bug, but keep
            // the data.
            _ => return,
        };
        f(&mut bytes);
        // Valkey keeps APPEND/SETRANGE results raw-encoded even when they look numeric.
        entry.set_str(&bytes);
    }

    fn set_expire(&mut self, key: &[u8], at: Option<u64>) -> bool {
        let (slot, hash) = self.locate(key);
        let Some(entry) = self.slots[slot].table.find_mut(hash, |e| e.key() == key) else {
            return false;
        };
        let had = entry.expire_at().is_some();
        entry.set_expire_raw(at);
        // Ask the entry, not `at`: an expiry of 0 is stored as "none" (as `put` treats it).
        let has = entry.expire_at().is_some();
        self.adjust_volatile(slot, had, has);
        true
    }

    /// Removes `key`, returning its entry.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (slot, hash) = self.locate(key);
        let found = self.slots[slot]
            .table
            .find_entry(hash, |e| e.key() == key)
            .ok()?;
        let (entry, _) = found.remove();
        self.after_remove(slot, entry.expire_at().is_some());
        self.index_fields(slot, key, fields_head(&entry), None);
        Some(entry)
    }

    /// Changes the hash at `key` in place with `f` (creating an empty one first with
    /// `create`), keeping the field expiry index in step; a hash left empty goes, as in
    /// Valkey. False when the key is missing; `f` does not run when it holds another type
    /// (the command checked the type: a record never changes a value's type).
    fn edit_hash(&mut self, key: &[u8], create: bool, f: impl FnOnce(&mut HashObj)) -> bool {
        let (slot, hash) = self.locate(key);
        let entry = if create {
            self.entry_or_insert(key, || Value::Hash(Box::default()))
        } else {
            match self.slots[slot].table.find_mut(hash, |e| e.key() == key) {
                Some(e) => e,
                None => return false,
            }
        };
        let Some(h) = entry.hash_mut() else {
            return true;
        };
        let before = h.next_expiry();
        f(h);
        let (after, empty) = (h.next_expiry(), h.is_empty());
        self.index_fields(slot, key, before, after);
        if empty {
            self.remove(key);
        }
        true
    }

    /// Moves `key`'s place in the field expiry index from `before` to `after` (its hash's
    /// earliest field expiry then and now; None: not indexed).
    fn index_fields(&mut self, slot: usize, key: &[u8], before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let slot = slot as u16;
        if let Some(at) = before {
            self.volatile_hashes.remove(&(slot, at, Box::from(key)));
        }
        if let Some(at) = after {
            self.volatile_hashes.insert((slot, at, key.into()));
        }
        self.sync_volatile_hashes();
    }

    fn sync_table_bytes(&self) {
        self.stats
            .table_bytes
            .set((self.table_bytes + self.parked_sums.table_bytes) as u64);
        self.stats
            .set_db(self.db, DB_TABLE_BYTES, self.table_bytes as u64);
    }

    fn sync_volatile_hashes(&self) {
        let n = self.volatile_hashes.len();
        self.stats
            .keys_with_volatile_items
            .set((n + self.parked_sums.volatile_hashes) as u64);
        self.stats.set_db(self.db, DB_VOLATILE_ITEMS, n as u64);
    }

    /// Call before anything that may insert into a slot's table (hashbrown's `entry` makes
    /// room even when the key turns out to exist). Room is made only when the table has none
    /// left, and then either by growing (the bucket count changes, which cursors notice) or,
    /// when deletions left tombstones in a table at most half full, by rehashing in place:
    /// same bucket count, entries moved. The epoch makes cursors notice that too.
    ///
    /// Room is made here, as the insert would make it (hashbrown grows a full table by the
    /// same `reserve(1)`), so that the table's new size is known for MEMORY STATS.
    #[inline]
    fn before_insert(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if s.table.capacity() == s.table.len() {
            s.epoch = s.epoch.wrapping_add(1);
            let before = usage::table_bytes(s.table.num_buckets(), size_of::<Entry>());
            let hasher = &self.hasher;
            s.table.reserve(1, |e| hasher.hash_one(e.key()));
            let after = usage::table_bytes(s.table.num_buckets(), size_of::<Entry>());
            self.table_bytes = self.table_bytes + after - before;
            self.sync_table_bytes();
        }
    }

    fn after_insert(&mut self, slot: usize, volatile: bool) {
        self.keys += 1;
        self.nonempty[slot / 64] |= 1 << (slot % 64);
        if volatile {
            self.slots[slot].volatile += 1;
            self.volatile += 1;
        }
        self.sync_counts();
    }

    fn after_remove(&mut self, slot: usize, volatile: bool) {
        self.keys -= 1;
        if self.slots[slot].table.is_empty() {
            self.nonempty[slot / 64] &= !(1 << (slot % 64));
        }
        if volatile {
            self.slots[slot].volatile -= 1;
            self.volatile -= 1;
        }
        self.sync_counts();
    }

    fn adjust_volatile(&mut self, slot: usize, had: bool, has: bool) {
        match (had, has) {
            (false, true) => {
                self.slots[slot].volatile += 1;
                self.volatile += 1;
            }
            (true, false) => {
                self.slots[slot].volatile -= 1;
                self.volatile -= 1;
            }
            _ => return,
        }
        self.sync_counts();
    }

    fn sync_counts(&self) {
        self.stats
            .keys
            .set((self.keys + self.parked_sums.keys) as u64);
        self.stats
            .expires
            .set((self.volatile + self.parked_sums.volatile) as u64);
        self.stats.set_db(self.db, DB_KEYS, self.keys as u64);
        self.stats.set_db(self.db, DB_EXPIRES, self.volatile as u64);
    }

    fn fresh_access(&self) -> u32 {
        match self.access_mode {
            AccessMode::Lru => lru_clock(self.clock_ms),
            AccessMode::Lfu { .. } => evict::lfu_fresh(self.clock_ms),
        }
    }

    /// Calls `f` for every live key of `slot` (KEYS, and tests).
    pub fn for_each_in_slot(&self, slot: usize, now: u64, mut f: impl FnMut(&Entry)) {
        for e in self.slots[slot].table.iter() {
            if !e.is_expired(now) {
                f(e);
            }
        }
    }

    /// One SCAN step within `slot` from `cursor`; returns the next in-slot cursor (0 = done).
    pub fn scan_slot(&self, slot: usize, cursor: u64, count: usize, f: impl FnMut(&Entry)) -> u64 {
        let s = &self.slots[slot];
        scan::scan_table_at(&s.table, s.epoch, cursor, count, f)
    }

    /// A random live key's entry (RANDOMKEY), or None when the shard is empty.
    pub fn random_entry(&mut self, now: u64) -> Option<&Entry> {
        // Expired keys found while sampling are deleted, as Valkey's RANDOMKEY does; give up
        // after a bounded number of tries when nearly everything has expired.
        for _ in 0..100 {
            let (slot, index) = self.random_position(false)?;
            let expired = {
                let e = self.slots[slot]
                    .table
                    .get_bucket(index)
                    .expect("sampled a full bucket");
                e.is_expired(now)
            };
            if !expired {
                return self.slots[slot].table.get_bucket(index);
            }
            if !self.expire_deletes {
                continue;
            }
            let key: Box<[u8]> = self.slots[slot]
                .table
                .get_bucket(index)
                .expect("full")
                .key()
                .into();
            self.delete_expired(&key, now);
        }
        None
    }

    /// A random full bucket: (slot, bucket index). With `volatile_only`, only slots that hold
    /// keys with an expiry are considered (the entry itself may still be persistent).
    fn random_position(&self, volatile_only: bool) -> Option<(usize, usize)> {
        if self.keys == 0 || (volatile_only && self.volatile == 0) {
            return None;
        }
        let span = self.owned.len();
        let start = self.owned.start + fastrand::usize(..span);
        let mut slot = None;
        for i in 0..span {
            let s = self.owned.start + (start - self.owned.start + i) % span;
            if self.nonempty[s / 64] & (1 << (s % 64)) == 0 {
                continue;
            }
            if volatile_only && self.slots[s].volatile == 0 {
                continue;
            }
            slot = Some(s);
            break;
        }
        let slot = slot?;
        let table = &self.slots[slot].table;
        let buckets = table.num_buckets();
        for _ in 0..16 {
            let i = fastrand::usize(..buckets);
            if table.get_bucket(i).is_some() {
                return Some((slot, i));
            }
        }
        let start = fastrand::usize(..buckets);
        (0..buckets)
            .map(|i| (start + i) % buckets)
            .find(|&i| table.get_bucket(i).is_some())
            .map(|i| (slot, i))
    }
}

/// How many expired fields one lookup deletes at most; the rest stay hidden until the next
/// lookup or the field expiry cycle, so a read never writes an unbounded record.
pub const LAZY_FIELDS: usize = 1024;

/// The earliest field expiry of a hash entry (None for other types and for hashes without
/// field TTLs): its place in the field expiry index.
fn fields_head(entry: &Entry) -> Option<u64> {
    match entry.value() {
        ValueRef::Hash(h) => h.next_expiry(),
        _ => None,
    }
}

/// Records an access in the entry's metadata (LRU clock, or LFU counter with decay).
#[inline]
fn touch(entry: &mut Entry, mode: AccessMode, now: u64) {
    match mode {
        AccessMode::Lru => entry.access = lru_clock(now),
        AccessMode::Lfu {
            log_factor,
            decay_minutes,
        } => entry.access = evict::lfu_touch(entry.access, now, log_factor, decay_minutes),
    }
}

#[cfg(test)]
mod tests;
