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
    /// Memory the storage engine holds (memtables, block cache): part of `used`, but not
    /// counted for eviction, as Valkey leaves out its AOF buffers (mem_not_counted_for_evict).
    not_counted: AtomicU64,
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
            not_counted: AtomicU64::new(0),
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
            .sum();
        let used = (self.base.load(Relaxed) + drift).max(0) as u64;
        self.peak.fetch_max(used, Relaxed);
        used
    }

    /// What maxmemory is compared with: `used` minus the storage engine's buffers.
    pub fn used_for_eviction(&self) -> u64 {
        self.used().saturating_sub(self.not_counted.load(Relaxed))
    }

    pub fn set_not_counted(&self, bytes: u64) {
        self.not_counted.store(bytes, Relaxed);
    }

    pub fn not_counted(&self) -> u64 {
        self.not_counted.load(Relaxed)
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
        }
    }
}

pub struct AllocatorStats {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub mapped: u64,
    pub retained: u64,
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
