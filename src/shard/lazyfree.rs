//! Lazy freeing (Valkey's lazyfree): a big value leaving a shard is dropped by a background
//! thread instead of its core, so deleting a 10M-member set does not stall the core's clients
//! for the second its destructor takes.
//!
//! Which values: those whose *free effort* — Valkey's measure of a destructor's work, about
//! one per allocation it walks (a member of a hashtable or skiplist, a quicklist node; 1 for
//! anything compact) — exceeds [`LAZYFREE_THRESHOLD`], when the removal's cause is lazy:
//! UNLINK and FLUSHALL ASYNC always; DEL, expiry, eviction, overwrites and a plain FLUSHALL
//! as the `lazyfree-lazy-*` directives say. Only *when* memory is released changes: the
//! keyspace is the same either way, so applying a record stays deterministic.
//!
//! Accounting: the thread publishes its own allocation counter like a core does (see
//! `metrics::memory`), so `used_memory` falls as it frees; meanwhile the value's estimated
//! size is counted as pending, which the maxmemory comparison leaves out so that eviction
//! does not evict other keys for memory already on its way out. INFO shows
//! `lazyfree_pending_objects` and `lazyfreed_objects`.
//!
//! One thread per process, fed through a channel: freeing is a matter of memory bandwidth
//! and allocator locks, which more threads would not add to.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, channel};

use hashbrown::HashTable;

use super::Entry;
use super::entry::Value;
use super::usage::DEFAULT_SAMPLES;
use crate::metrics::memory;

/// Values whose free effort exceeds this are freed in the background (Valkey's
/// LAZYFREE_THRESHOLD).
pub const LAZYFREE_THRESHOLD: usize = 64;

/// Which removals free lazily: the `lazyfree-lazy-*` directives, as a shard caches them.
/// Valkey 8's defaults: all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazyFree {
    /// `lazyfree-lazy-eviction`: keys evicted for maxmemory.
    pub eviction: bool,
    /// `lazyfree-lazy-expire`: keys deleted because they expired.
    pub expire: bool,
    /// `lazyfree-lazy-server-del`: values a write replaces or deletes as a side effect (SET
    /// over a set, RENAME's destination, COPY ... REPLACE).
    pub server_del: bool,
    /// `lazyfree-lazy-user-del`: DEL behaves as UNLINK.
    pub user_del: bool,
    /// `lazyfree-lazy-user-flush`: FLUSHALL/FLUSHDB without SYNC or ASYNC behave as ASYNC.
    pub user_flush: bool,
}

impl Default for LazyFree {
    fn default() -> Self {
        LazyFree {
            eviction: true,
            expire: true,
            server_del: true,
            user_del: true,
            user_flush: true,
        }
    }
}

/// Why a value leaves the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// DEL (UNLINK sets the shard's `unlinking` instead).
    UserDel,
    Expire,
    Eviction,
    /// Replaced or deleted by a write as a side effect.
    ServerDel,
}

impl LazyFree {
    pub fn allows(&self, cause: Cause) -> bool {
        match cause {
            Cause::UserDel => self.user_del,
            Cause::Expire => self.expire,
            Cause::Eviction => self.eviction,
            Cause::ServerDel => self.server_del,
        }
    }
}

/// What the background thread frees.
enum Garbage {
    /// One value, with its size as estimated when it was handed over.
    Value(Value, u64),
    /// Whole keys (a flush of some slots), and whole per-slot tables (a flush of a shard):
    /// their size is estimated by the thread before it frees them.
    Entries(Vec<Entry>),
    Tables(Vec<HashTable<Entry>>),
}

/// Objects handed over and not freed yet, and freed since start (or CONFIG RESETSTAT).
static PENDING_OBJECTS: AtomicU64 = AtomicU64::new(0);
static FREED_OBJECTS: AtomicU64 = AtomicU64::new(0);

/// INFO's `lazyfree_pending_objects`.
pub fn pending_objects() -> u64 {
    PENDING_OBJECTS.load(Relaxed)
}

/// INFO's `lazyfreed_objects`.
pub fn freed_objects() -> u64 {
    FREED_OBJECTS.load(Relaxed)
}

/// CONFIG RESETSTAT (Valkey's lazyfreeResetStats).
pub fn reset_stats() {
    FREED_OBJECTS.store(0, Relaxed);
}

/// The channel to the thread, which is started on first use (None: it could not start, and
/// values are freed where they are).
fn thread() -> Option<&'static Sender<Garbage>> {
    static SENDER: OnceLock<Option<Sender<Garbage>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("lazyfree".into())
                .spawn(move || run(rx))
                .map_err(|e| tracing::warn!("lazy freeing runs on the cores: {e}"))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Drops `entry` here, or its collection in the background when it is big (see the module
/// comment); true when it went to the background.
pub fn discard(entry: Entry, lazy: bool) -> bool {
    if !lazy || entry.value().free_effort() <= LAZYFREE_THRESHOLD {
        return false;
    }
    let bytes = entry.value().mem_usage(DEFAULT_SAMPLES) as u64;
    match entry.into_value() {
        value @ (Value::Hash(_) | Value::List(_) | Value::Set(_) | Value::ZSet(_)) => {
            hand_over(Garbage::Value(value, bytes), 1, bytes)
        }
        // A string's effort is 1: it never gets here.
        _ => false,
    }
}

/// Hands a collection that was replaced in place (an overwrite) to the background when it is
/// big and `lazy`; otherwise drops it here.
pub fn discard_value(value: Value, lazy: bool) {
    if !lazy || value.as_ref().free_effort() <= LAZYFREE_THRESHOLD {
        return;
    }
    let bytes = value.as_ref().mem_usage(DEFAULT_SAMPLES) as u64;
    hand_over(Garbage::Value(value, bytes), 1, bytes);
}

/// Hands whole keys to the background (a flush of some slots).
pub fn discard_entries(entries: Vec<Entry>) {
    let n = entries.len() as u64;
    if n > 0 {
        hand_over(Garbage::Entries(entries), n, 0);
    }
}

/// Hands whole per-slot tables holding `keys` keys to the background (a shard's flush).
pub fn discard_tables(tables: Vec<HashTable<Entry>>, keys: u64) {
    if keys > 0 {
        hand_over(Garbage::Tables(tables), keys, 0);
    }
}

/// Counts `objects` (of `bytes` already estimated) as pending and sends them; if the thread
/// is gone they are dropped here. Returns whether they went.
fn hand_over(garbage: Garbage, objects: u64, bytes: u64) -> bool {
    let Some(tx) = thread() else {
        return false;
    };
    PENDING_OBJECTS.fetch_add(objects, Relaxed);
    memory::add_pending_free(bytes);
    if let Err(returned) = tx.send(garbage) {
        PENDING_OBJECTS.fetch_sub(objects, Relaxed);
        memory::sub_pending_free(bytes);
        drop(returned);
        return false;
    }
    true
}

/// Keys freed between two publications of the thread's progress during a flush.
const FLUSH_STEP: u64 = 16 * 1024;

fn run(rx: Receiver<Garbage>) {
    // The values handed over were allocated by the cores; the pages they free are the
    // cores' arenas' (jemalloc routes a free to the owning arena), so this thread needs no
    // arena of its own.
    //
    // Freeing is never urgent, serving is: on a machine with as many busy threads as CPUs,
    // the scheduler should run a core before this thread. A nice value is per thread on
    // Linux (the thread id names the thread); failing to lower it only costs latency.
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
    while let Ok(garbage) = rx.recv() {
        match garbage {
            Garbage::Value(value, bytes) => {
                drop(value);
                done(1, bytes);
            }
            Garbage::Entries(entries) => {
                let estimates: Vec<u64> = entries.iter().map(estimate).collect();
                memory::add_pending_free(estimates.iter().sum());
                let (mut objects, mut bytes) = (0, 0);
                for (entry, size) in entries.into_iter().zip(estimates) {
                    drop(entry);
                    objects += 1;
                    bytes += size;
                    if objects == FLUSH_STEP {
                        done(objects, bytes);
                        (objects, bytes) = (0, 0);
                    }
                }
                done(objects, bytes);
            }
            Garbage::Tables(tables) => {
                let estimates: Vec<(u64, u64)> = tables
                    .iter()
                    .map(|t| (t.len() as u64, t.iter().map(estimate).sum()))
                    .collect();
                memory::add_pending_free(estimates.iter().map(|e| e.1).sum());
                let (mut objects, mut bytes) = (0, 0);
                for (table, (keys, size)) in tables.into_iter().zip(estimates) {
                    drop(table);
                    objects += keys;
                    bytes += size;
                    if objects >= FLUSH_STEP {
                        done(objects, bytes);
                        (objects, bytes) = (0, 0);
                    }
                }
                done(objects, bytes);
            }
        }
    }
}

/// What a key frees (its entry and value), as MEMORY USAGE estimates it.
fn estimate(entry: &Entry) -> u64 {
    entry.memory_usage(DEFAULT_SAMPLES) as u64
}

/// Publishes `objects` freed, of `bytes` estimated: the thread's cache of freed blocks goes
/// back to the arenas first (jemalloc counts cached blocks as allocated), then its counter,
/// then the pending figures drop — in that order, so no moment counts the memory twice.
fn done(objects: u64, bytes: u64) {
    if objects == 0 {
        return;
    }
    memory::flush_thread_cache();
    memory::publish_background();
    memory::sub_pending_free(bytes);
    PENDING_OBJECTS.fetch_sub(objects, Relaxed);
    FREED_OBJECTS.fetch_add(objects, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{SetLimits, SetObj};
    use std::time::{Duration, Instant};

    fn big_set(n: usize) -> Value {
        let mut x = SetObj::new();
        for i in 0..n {
            x.insert(format!("member:{i}").as_bytes(), SetLimits::default());
        }
        Value::Set(Box::new(x))
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        what()
    }

    #[test]
    fn only_big_values_under_a_lazy_cause_go_to_the_background() {
        let limits = LazyFree {
            user_del: false,
            ..LazyFree::default()
        };
        assert!(limits.allows(Cause::Expire) && !limits.allows(Cause::UserDel));
        // 64 members is at the threshold, not past it.
        let at = Entry::new(b"k", big_set(LAZYFREE_THRESHOLD), 0, 0);
        assert!(!discard(at, true));
        let s = Entry::new(b"k", Value::Str(vec![0; 1 << 20].into()), 0, 0);
        assert!(!discard(s, true), "a string is one allocation");
        let big = Entry::new(b"k", big_set(1000), 0, 0);
        assert!(!discard(big, false), "not lazy: dropped here");
        let before = freed_objects();
        let big = Entry::new(b"k", big_set(1000), 0, 0);
        assert!(discard(big, true));
        assert!(wait_for(|| freed_objects() > before));
    }

    #[test]
    fn flushed_keys_are_counted_pending_then_freed() {
        let before = freed_objects();
        let entries: Vec<Entry> = (0..100)
            .map(|i| Entry::new(format!("k{i}").as_bytes(), big_set(3), 0, 0))
            .collect();
        discard_entries(entries);
        let hasher = ahash::RandomState::new();
        let mut table = HashTable::new();
        for i in 0..50u64 {
            let e = Entry::new(&i.to_le_bytes(), big_set(2), 0, 0);
            table.insert_unique(hasher.hash_one(e.key()), e, |e| hasher.hash_one(e.key()));
        }
        discard_tables(vec![table, HashTable::new()], 50);
        // Other tests free concurrently: count at least ours.
        assert!(wait_for(|| freed_objects() >= before + 150));
    }
}
