//! Memory accounting from jemalloc, not estimates.
//!
//! `stats.allocated` is exact but needs an epoch refresh (a global operation, tens of µs), too
//! slow to call per write. jemalloc also keeps per-thread allocated/deallocated byte counters
//! that a thread reads for the price of a pointer load. So: every 100 ms one core refreshes the
//! global figure and records each core's thread counter at that moment (the base); between
//! refreshes a core's current view is `base + Σ (thread net now − thread net at refresh)`,
//! where each core publishes its own thread net on every write check. A write storm therefore
//! sees its own allocations immediately, and the other cores' within one check.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use tikv_jemalloc_ctl::{epoch, stats, thread};

/// jemalloc's name for "every arena" in `arena.<i>.*` and `stats.arenas.<i>.*`
/// (`MALLCTL_ARENAS_ALL` in its headers; the sys crate does not export it).
const ARENAS_ALL: u32 = 4096;

/// The background freeing thread's allocation counter (see `shard::lazyfree`), published as
/// a core's is: it frees what the cores allocated, so `used` must see its frees too. One per
/// process, like the thread.
static BACKGROUND_NET: AtomicI64 = AtomicI64::new(0);

/// Estimated bytes of the values handed to the background freeing thread and not freed yet.
/// They are still allocated (so in `used`, as Valkey's used_memory keeps them), but on their
/// way out: maxmemory leaves them out, or eviction would evict other keys for them.
static PENDING_FREE: AtomicU64 = AtomicU64::new(0);

/// Publishes the calling thread's allocation counter as the background freeing thread's.
pub fn publish_background() {
    BACKGROUND_NET.store(thread_net(), Relaxed);
}

/// Notes `bytes` handed to the background freeing thread (see [`PENDING_FREE`]).
pub fn add_pending_free(bytes: u64) {
    PENDING_FREE.fetch_add(bytes, Relaxed);
}

/// Notes `bytes` of pending frees done. Call it after [`publish_background`]: in between, the
/// freed memory is briefly subtracted twice, which errs on admitting a write, never on
/// evicting a key for memory already freed.
pub fn sub_pending_free(bytes: u64) {
    let _ = PENDING_FREE.fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(bytes)));
}

/// Estimated bytes handed to the background freeing thread and not yet freed.
pub fn pending_free() -> u64 {
    PENDING_FREE.load(Relaxed)
}

/// The bytes jemalloc really sets aside for an allocation of `n` bytes (its size class):
/// what MEMORY USAGE counts, as Valkey's zmalloc_size does.
pub fn alloc_size(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    // SAFETY: nallocx only computes a size class; a non-zero size with no flags is valid.
    match unsafe { tikv_jemalloc_sys::nallocx(n, 0) } {
        0 => n,
        size => size,
    }
}

/// Cores whose counters are tracked; more cores than this share the last slot's accuracy.
pub const MAX_CORES: usize = 256;

#[repr(align(128))]
#[derive(Default)]
struct CoreSlot {
    /// This core's thread net (allocated − deallocated) as last published.
    net: AtomicI64,
    /// Its value at the last global refresh.
    at_refresh: AtomicI64,
}

pub struct Memory {
    /// jemalloc `stats.allocated` at the last refresh.
    base: AtomicI64,
    cores: Box<[CoreSlot]>,
    /// Peak of `used()` seen at refreshes and checks.
    peak: AtomicU64,
    /// Allocated bytes once the server was ready, before any client (used_memory_startup).
    startup: AtomicU64,
    /// [`BACKGROUND_NET`] at the last refresh.
    background_at_refresh: AtomicI64,
    /// Memory the storage engine holds (memtables, block cache): part of `used`, but not
    /// counted for eviction, as Valkey leaves out its AOF buffers (mem_not_counted_for_evict).
    not_counted: AtomicU64,
    /// Per core, the Raft log buffers it holds (its write-ahead log's cache of recent entries
    /// and what is queued for the next write): left out of the maxmemory comparison too, as
    /// Valkey leaves out its replication buffers.
    raft: Box<[AtomicU64]>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

thread_local! {
    static THREAD_COUNTERS: Option<(thread::ThreadLocal<u64>, thread::ThreadLocal<u64>)> =
        match (thread::allocatedp::read(), thread::deallocatedp::read()) {
            (Ok(a), Ok(d)) => Some((a, d)),
            _ => None,
        };
}

/// This thread's allocated − deallocated bytes since it started (0 without jemalloc).
fn thread_net() -> i64 {
    THREAD_COUNTERS.with(|c| {
        c.as_ref()
            .map_or(0, |(a, d)| a.get() as i64 - d.get() as i64)
    })
}

impl Memory {
    pub fn new() -> Memory {
        let cores = (0..MAX_CORES).map(|_| CoreSlot::default()).collect();
        let m = Memory {
            base: AtomicI64::new(0),
            cores,
            peak: AtomicU64::new(0),
            startup: AtomicU64::new(0),
            background_at_refresh: AtomicI64::new(BACKGROUND_NET.load(Relaxed)),
            not_counted: AtomicU64::new(0),
            raft: (0..MAX_CORES).map(|_| AtomicU64::new(0)).collect(),
        };
        m.refresh();
        m
    }

    /// Publishes the calling core's allocation counter (cheap: two pointer loads).
    #[inline]
    pub fn publish(&self, core: usize) {
        self.cores[core.min(MAX_CORES - 1)]
            .net
            .store(thread_net(), Relaxed);
    }

    /// Bytes allocated by the process, as the calling core currently sees it.
    pub fn used(&self) -> u64 {
        let drift: i64 = self
            .cores
            .iter()
            .map(|c| c.net.load(Relaxed) - c.at_refresh.load(Relaxed))
            .sum::<i64>()
            + (BACKGROUND_NET.load(Relaxed) - self.background_at_refresh.load(Relaxed));
        let used = (self.base.load(Relaxed) + drift).max(0) as u64;
        self.peak.fetch_max(used, Relaxed);
        used
    }

    /// What maxmemory is compared with: `used` minus the storage engine's buffers and what
    /// the background freeing thread is about to free.
    pub fn used_for_eviction(&self) -> u64 {
        self.used()
            .saturating_sub(self.not_counted())
            .saturating_sub(pending_free())
    }

    pub fn set_not_counted(&self, bytes: u64) {
        self.not_counted.store(bytes, Relaxed);
    }

    /// Records how many bytes of Raft log buffers core `core` holds.
    pub fn set_raft_buffers(&self, core: usize, bytes: u64) {
        self.raft[core.min(MAX_CORES - 1)].store(bytes, Relaxed);
    }

    pub fn not_counted(&self) -> u64 {
        self.storage_buffers() + self.raft_buffers()
    }

    /// What the storage engine holds (memtables, block cache, the writer's queue).
    pub fn storage_buffers(&self) -> u64 {
        self.not_counted.load(Relaxed)
    }

    /// The Raft log buffers of every core (cluster mode; 0 standalone).
    pub fn raft_buffers(&self) -> u64 {
        self.raft.iter().map(|r| r.load(Relaxed)).sum()
    }

    /// Records the current figure as the startup baseline (call once, when ready to serve).
    pub fn mark_startup(&self) {
        self.refresh();
        self.startup.store(self.used(), Relaxed);
    }

    pub fn startup(&self) -> u64 {
        self.startup.load(Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed).max(self.used())
    }

    /// Re-reads jemalloc's global figure (call every ~100 ms from one core).
    pub fn refresh(&self) {
        if epoch::advance().is_err() {
            return;
        }
        let Ok(allocated) = stats::allocated::read() else {
            return;
        };
        for c in self.cores.iter() {
            c.at_refresh.store(c.net.load(Relaxed), Relaxed);
        }
        self.background_at_refresh
            .store(BACKGROUND_NET.load(Relaxed), Relaxed);
        self.base.store(allocated as i64, Relaxed);
        self.peak.fetch_max(allocated as u64, Relaxed);
    }

    /// jemalloc's resident and active figures (INFO memory), read fresh.
    pub fn allocator_stats() -> AllocatorStats {
        let _ = epoch::advance();
        AllocatorStats {
            allocated: stats::allocated::read().unwrap_or(0) as u64,
            active: stats::active::read().unwrap_or(0) as u64,
            resident: stats::resident::read().unwrap_or(0) as u64,
            mapped: stats::mapped::read().unwrap_or(0) as u64,
            retained: stats::retained::read().unwrap_or(0) as u64,
            muzzy: muzzy_bytes(),
            frag_smallbins: frag_smallbins_bytes(),
        }
    }
}

/// Reads a size_t or unsigned statistic by name (0 when jemalloc does not have it).
fn read_stat<T: Copy + Default + Into<u64>>(name: &str) -> u64 {
    let name = format!("{name}\0");
    // SAFETY: every name passed here is a jemalloc statistic of type T.
    unsafe { tikv_jemalloc_ctl::raw::read::<T>(name.as_bytes()) }.map_or(0, Into::into)
}

/// Pages jemalloc released with MADV_FREE, which the kernel may still count as resident
/// (Valkey's allocator_muzzy), as of the last epoch advance.
fn muzzy_bytes() -> u64 {
    let pages = read_stat::<u64>(&format!("stats.arenas.{ARENAS_ALL}.pmuzzy"));
    pages * read_stat::<u64>("arenas.page")
}

/// Free space inside the small-size-class slabs in use, over every arena: what active
/// defragmentation could give back (Valkey's allocator_frag_smallbins_bytes, the basis of its
/// allocator fragmentation figures), as of the last epoch advance.
fn frag_smallbins_bytes() -> u64 {
    let bins = read_stat::<u32>("arenas.nbins");
    (0..bins)
        .map(|j| {
            let size = read_stat::<u64>(&format!("arenas.bin.{j}.size"));
            let nregs = read_stat::<u32>(&format!("arenas.bin.{j}.nregs"));
            let slabs = read_stat::<u64>(&format!("stats.arenas.{ARENAS_ALL}.bins.{j}.curslabs"));
            let regs = read_stat::<u64>(&format!("stats.arenas.{ARENAS_ALL}.bins.{j}.curregs"));
            (nregs * slabs).saturating_sub(regs) * size
        })
        .sum()
}

/// jemalloc's own statistics report (`malloc_stats_print`), as MEMORY MALLOC-STATS shows it.
pub fn malloc_stats_text() -> String {
    unsafe extern "C" fn append(out: *mut std::ffi::c_void, text: *const std::ffi::c_char) {
        // SAFETY: `out` is the Vec passed below, alive for the whole call; jemalloc hands
        // NUL-terminated strings.
        unsafe {
            let out = &mut *(out as *mut Vec<u8>);
            out.extend_from_slice(std::ffi::CStr::from_ptr(text).to_bytes());
        }
    }
    let mut out: Vec<u8> = Vec::new();
    // SAFETY: the callback only appends to `out`, which outlives the call; no options.
    unsafe {
        tikv_jemalloc_sys::malloc_stats_print(
            Some(append),
            &mut out as *mut Vec<u8> as *mut std::ffi::c_void,
            std::ptr::null(),
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Returns the dirty pages of every arena to the OS (MEMORY PURGE, Valkey's
/// jemalloc_purge). False when jemalloc refused.
pub fn purge() -> bool {
    let name = format!("arena.{ARENAS_ALL}.purge\0");
    // SAFETY: "arena.<i>.purge" takes no old or new value.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr() as *const std::ffi::c_char,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

/// A jemalloc arena of its own for the thread that writes storage (the storage writer):
/// fjall's memtables are allocated there, so their real size — node and size-class overhead included,
/// which fjall's own `write_buffer_size` estimate leaves out (about 60 bytes per entry, a
/// drift of megabytes per million writes until a memtable is flushed) — can be left out of
/// what maxmemory is compared with, as Valkey leaves out its AOF and replication buffers.
/// Values the cores store are allocated on the cores, never there.
fn storage_arena() -> Option<u32> {
    static ARENA: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *ARENA.get_or_init(|| {
        // SAFETY: "arenas.create" returns an unsigned int, the new arena's index.
        unsafe { tikv_jemalloc_ctl::raw::read::<u32>(b"arenas.create\0") }.ok()
    })
}

/// Makes the calling thread allocate from the storage arena (call first thing on the
/// storage writer and Raft threads).
pub fn bind_storage_arena() {
    if let Some(arena) = storage_arena() {
        // SAFETY: "thread.arena" takes an unsigned int naming an existing arena.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write::<u32>(b"thread.arena\0", arena) };
        // Without a thread cache: a cached block is reused whatever arena owns it, so
        // blocks the cores allocated and this thread freed (the values handed to storage)
        // would come back as memtable copies and stay counted in the cores' arenas.
        // SAFETY: "thread.tcache.enabled" takes a bool.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write::<bool>(b"thread.tcache.enabled\0", false) };
    }
}

/// Returns the calling thread's cached free blocks to their arenas. jemalloc counts blocks
/// sitting in a thread cache as allocated, and an idle thread keeps them: after evicting,
/// a core flushes its cache so the memory it freed shows as freed.
pub fn flush_thread_cache() {
    // SAFETY: "thread.tcache.flush" is called with no old or new value (the ctl crate's
    // write would pass a non-null pointer, which jemalloc refuses for this name).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// Bytes currently allocated from the storage arena, as of the last epoch advance (the
/// caller refreshes it, as [`Memory::refresh`] does); None without jemalloc stats.
pub fn storage_arena_allocated() -> Option<u64> {
    let arena = storage_arena()?;
    let read = |what: &str| {
        let name = format!("stats.arenas.{arena}.{what}.allocated\0");
        // SAFETY: these statistics are size_t values.
        unsafe { tikv_jemalloc_ctl::raw::read::<usize>(name.as_bytes()) }.ok()
    };
    Some((read("small")? + read("large")?) as u64)
}

pub struct AllocatorStats {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub mapped: u64,
    pub retained: u64,
    /// Released with MADV_FREE but possibly still resident.
    pub muzzy: u64,
    /// Unused room in the small-size-class slabs in use (see `frag_smallbins_bytes`).
    pub frag_smallbins: u64,
}

/// The process's resident set size from /proc (INFO used_memory_rss).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    // The lib's tests run on jemalloc too, so the arena statistics are real here.
    #[global_allocator]
    static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// Memory handed to the background freeing thread is left out of what maxmemory is
    /// compared with, and comes back into it as the frees are reported.
    #[test]
    fn pending_frees_are_left_out_of_eviction() {
        let m = super::Memory::new();
        // Far more than this process holds, so other tests' frees cannot hide the effect.
        const HUGE: u64 = 1 << 50;
        super::add_pending_free(HUGE);
        assert_eq!(m.used_for_eviction(), 0);
        assert!(m.used() > 0, "used_memory still counts what is pending");
        super::sub_pending_free(HUGE);
        assert!(super::pending_free() < HUGE);
    }

    /// Values allocated on another thread (a core) and handed to a storage thread, which
    /// copies them into fjall's memtable and frees them: the memtable must show up in the
    /// storage arena (with a thread cache, the freed blocks were reused for the copies and
    /// stayed in the other thread's arena).
    #[test]
    fn memtable_lands_in_the_storage_arena() {
        let values: Vec<Vec<u8>> = (0..4000).map(|i| vec![i as u8; 1024]).collect();
        std::thread::spawn(move || {
            super::bind_storage_arena();
            let dir = tempfile::tempdir().unwrap();
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let ks = db
                .keyspace("x", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            tikv_jemalloc_ctl::epoch::advance().unwrap();
            let before = super::storage_arena_allocated().unwrap();
            let mut values = values.into_iter();
            for n in 0..8 {
                let mut b = db.batch();
                for (i, v) in values.by_ref().take(500).enumerate() {
                    b.insert(&ks, format!("k{n}:{i}").into_bytes(), v);
                }
                b.commit().unwrap();
            }
            tikv_jemalloc_ctl::epoch::advance().unwrap();
            let grew = super::storage_arena_allocated().unwrap() - before;
            let estimate = db.write_buffer_size();
            assert!(
                grew >= estimate * 9 / 10,
                "storage arena grew {grew} bytes for a memtable fjall estimates at {estimate}"
            );
        })
        .join()
        .unwrap();
    }
}
