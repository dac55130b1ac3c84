//! MEMORY: USAGE (on the key's core, like any keyed read), and STATS, DOCTOR, MALLOC-STATS,
//! PURGE and HELP (on the connection's core, like INFO), with Valkey's replies.
//!
//! STATS and DOCTOR read one [`Overhead`] — what Valkey's getMemoryOverheadData computes —
//! and INFO memory reads it too, so `used_memory_overhead` and `dataset.bytes` agree.

use bytes::Bytes;

use super::connection::ConnCtx;
use super::flags::{LOADING, READONLY, STALE};
use super::table::{CommandDef, NOKEY, container, def, k};
use super::{Ctx, Exec, KeyAccess, NOT_INTEGER, SYNTAX_ERROR, arg_i64, is};
use crate::metrics::memory::{AllocatorStats, Memory, rss_bytes};
use crate::shard::usage::DEFAULT_SAMPLES;
use crate::state::Shared;

/// MEMORY USAGE key [SAMPLES count]: the bytes the key and its value take (see
/// `shard::usage`), nil for a missing key. Options are checked before the key is looked up,
/// as Valkey does; the lookup neither touches the key nor counts a hit or miss.
pub fn usage(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let mut samples = DEFAULT_SAMPLES;
    let mut j = 3;
    while j < args.len() {
        if !(is(&args[j], "SAMPLES") && j + 1 < args.len()) {
            ctx.out.error(SYNTAX_ERROR);
            return;
        }
        match arg_i64(&args[j + 1]) {
            None => {
                ctx.out.error(NOT_INTEGER);
                return;
            }
            Some(n) if n < 0 => {
                ctx.out.error(SYNTAX_ERROR);
                return;
            }
            // 0 measures every member.
            Some(0) => samples = usize::MAX,
            Some(n) => samples = usize::try_from(n).unwrap_or(usize::MAX),
        }
        j += 2;
    }
    match ctx.shard.peek(&args[2], ctx.now) {
        Some(e) => {
            let bytes = e.memory_usage(samples);
            ctx.out.int(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        None => ctx.out.nil(),
    }
}

/// The node's memory, split as Valkey's getMemoryOverheadData splits it: what the server
/// needs to run (overhead) and what the data takes (the dataset: the rest).
pub struct Overhead {
    pub peak: u64,
    pub total: u64,
    pub startup: u64,
    /// In a cluster, the Raft log buffers (the log is tallykv's replication stream); 0
    /// standalone, where there is no replication.
    pub repl_backlog: u64,
    pub clients_normal: u64,
    /// The storage engine's buffers (fjall's memtables and block cache, the writer's queue):
    /// memory kept for persistence, not data, and left out of maxmemory as Valkey leaves out
    /// its AOF buffer.
    pub aof_buffer: u64,
    /// The Lua script cache.
    pub lua_caches: u64,
    /// The keyspace's per-slot tables. Their slots hold each key's header (what Valkey's
    /// robj and dict entry are), so Valkey's `overhead.hashtable.main` and its lookup-table
    /// figure are the same bytes here.
    pub hashtable_main: u64,
    pub overhead_total: u64,
    pub keys: u64,
    pub dataset: u64,
    pub dataset_perc: f64,
    pub peak_perc: f64,
    pub bytes_per_key: u64,
    pub alloc: AllocatorStats,
    pub rss: u64,
    /// Clients connected (MEMORY DOCTOR's average client buffer).
    pub clients: u64,
}

impl Overhead {
    pub fn allocator_frag(&self) -> f64 {
        ratio(self.alloc.frag_smallbins, self.alloc.allocated) + 1.0
    }

    pub fn allocator_rss(&self) -> f64 {
        ratio(self.alloc.resident, self.alloc.active)
    }

    pub fn allocator_rss_bytes(&self) -> i64 {
        self.alloc.resident as i64 - self.alloc.active as i64
    }

    pub fn rss_extra(&self) -> f64 {
        ratio(self.rss, self.alloc.resident)
    }

    pub fn rss_extra_bytes(&self) -> i64 {
        self.rss as i64 - self.alloc.resident as i64
    }

    pub fn total_frag(&self) -> f64 {
        ratio(self.rss, self.total)
    }

    pub fn total_frag_bytes(&self) -> i64 {
        self.rss as i64 - self.total as i64
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// What clients hold (their buffers, as CLIENT LIST's tot-mem), and how many there are.
fn clients_memory(shared: &Shared) -> (u64, u64) {
    let clients = shared.clients.lock().expect("client registry lock");
    let bytes = clients
        .values()
        .map(|c| super::connection::client_memory(c) as u64)
        .sum();
    (bytes, clients.len() as u64)
}

/// Measures the node's memory now (refreshing jemalloc's figures).
pub fn overhead(shared: &Shared) -> Overhead {
    let mem = &shared.memory;
    mem.refresh();
    let total = mem.used();
    let peak = mem.peak();
    // Memory released since start (an engine's transient buffers) can leave `used` below the
    // mark; Valkey's figure never exceeds used_memory.
    let startup = mem.startup().min(total);
    let (clients_normal, clients) = clients_memory(shared);
    let repl_backlog = mem.raft_buffers();
    let aof_buffer = mem.storage_buffers();
    let lua_caches = shared.scripts.cache_memory() as u64;
    let hashtable_main = shared.sum_shards(|s| s.table_bytes.get());
    // Replica clients, cluster bus links and FUNCTION libraries take nothing here: Raft
    // followers are no client connections, and FUNCTION does not exist. (The bus's buffers
    // are not measured: they are counted in the dataset.)
    let overhead_total =
        startup + repl_backlog + clients_normal + aof_buffer + lua_caches + hashtable_main;
    let keys = shared.sum_shards(|s| s.keys.get());
    let dataset = total.saturating_sub(overhead_total);
    let net = match total.saturating_sub(startup) {
        0 => 1,
        n => n,
    };
    Overhead {
        peak,
        total,
        startup,
        repl_backlog,
        clients_normal,
        aof_buffer,
        lua_caches,
        hashtable_main,
        overhead_total,
        keys,
        dataset,
        dataset_perc: dataset as f64 * 100.0 / net as f64,
        peak_perc: ratio(total, peak) * 100.0,
        bytes_per_key: dataset.checked_div(keys).unwrap_or(0),
        alloc: Memory::allocator_stats(),
        rss: rss_bytes(),
        clients,
    }
}

/// MEMORY STATS: Valkey's fields, in its order and types.
pub fn stats(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let o = overhead(ctx.shared);
    let out = &mut *ctx.out;
    // One `db.N` entry per database holding keys, as Valkey.
    use crate::shard::stats::{DB_KEYS, DB_TABLE_BYTES};
    let dbs: Vec<(usize, u64)> = ctx
        .shared
        .db_figures()
        .into_iter()
        .filter(|(_, f)| f[DB_KEYS] > 0)
        .map(|(db, f)| (db, f[DB_TABLE_BYTES]))
        .collect();
    out.map(31 + dbs.len());
    let int = |out: &mut crate::protocol::Out, name: &str, v: i64| {
        out.bulk(name.as_bytes());
        out.int(v);
    };
    let double = |out: &mut crate::protocol::Out, name: &str, v: f64| {
        out.bulk(name.as_bytes());
        out.double(v);
    };
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    int(out, "peak.allocated", n(o.peak));
    int(out, "total.allocated", n(o.total));
    int(out, "startup.allocated", n(o.startup));
    int(out, "replication.backlog", n(o.repl_backlog));
    // No replica connections: a cluster's followers are fed through the Raft log above.
    int(out, "clients.slaves", 0);
    int(out, "clients.normal", n(o.clients_normal));
    // Not measured (see `overhead`); 0 standalone, where there are no links.
    int(out, "cluster.links", 0);
    int(out, "aof.buffer", n(o.aof_buffer));
    int(out, "lua.caches", n(o.lua_caches));
    // No FUNCTION libraries exist.
    int(out, "functions.caches", 0);
    for (db, table_bytes) in dbs {
        out.bulk(format!("db.{db}").as_bytes());
        out.map(2);
        int(out, "overhead.hashtable.main", n(table_bytes));
        // Expiry times live in the keys' headers: there is no expires table.
        int(out, "overhead.hashtable.expires", 0);
    }
    int(out, "overhead.db.hashtable.lut", n(o.hashtable_main));
    // hashbrown rehashes a table in one step, never incrementally: no table is ever
    // half-way through a rehash, so both rehashing figures are 0 by what they mean.
    int(out, "overhead.db.hashtable.rehashing", 0);
    int(out, "overhead.total", n(o.overhead_total));
    int(out, "db.dict.rehashing.count", 0);
    int(out, "keys.count", n(o.keys));
    int(out, "keys.bytes-per-key", n(o.bytes_per_key));
    int(out, "dataset.bytes", n(o.dataset));
    double(out, "dataset.percentage", o.dataset_perc);
    double(out, "peak.percentage", o.peak_perc);
    int(out, "allocator.allocated", n(o.alloc.allocated));
    int(out, "allocator.active", n(o.alloc.active));
    int(out, "allocator.resident", n(o.alloc.resident));
    int(out, "allocator.muzzy", n(o.alloc.muzzy));
    double(out, "allocator-fragmentation.ratio", o.allocator_frag());
    int(
        out,
        "allocator-fragmentation.bytes",
        n(o.alloc.frag_smallbins),
    );
    double(out, "allocator-rss.ratio", o.allocator_rss());
    int(out, "allocator-rss.bytes", o.allocator_rss_bytes());
    double(out, "rss-overhead.ratio", o.rss_extra());
    int(out, "rss-overhead.bytes", o.rss_extra_bytes());
    double(out, "fragmentation", o.total_frag());
    int(out, "fragmentation.bytes", o.total_frag_bytes());
}

const MB: u64 = 1024 * 1024;

/// MEMORY DOCTOR's report (Valkey's getMemoryDoctorReport), from the figures of `o`.
pub fn doctor_report(o: &Overhead, scripts: usize) -> String {
    if o.total < 5 * MB {
        return "Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting.\n".into();
    }
    let big_peak = o.peak as f64 / o.total as f64 > 1.5;
    let high_frag = o.total_frag() > 1.4 && o.total_frag_bytes() > 10 << 20;
    let high_alloc_frag = o.allocator_frag() > 1.1 && o.alloc.frag_smallbins > 10 << 20;
    let high_alloc_rss = o.allocator_rss() > 1.1 && o.allocator_rss_bytes() > 10 << 20;
    let high_proc_rss = o.rss_extra() > 1.1 && o.rss_extra_bytes() > 10 << 20;
    // The client asking is connected, so there is at least one.
    let big_client_buf = o.clients_normal / o.clients.max(1) > 200 * 1024;
    // There are no replica connections (see `stats`): never "big replica buffers".
    let many_scripts = scripts > 1000;
    let mut s = String::new();
    if big_peak {
        s.push_str(" * Peak memory: In the past this instance used more than 150% the memory that is currently using. The allocator is normally not able to release memory after a peak, so you can expect to see a big fragmentation ratio, however this is actually harmless and is only due to the memory peak, and if the Valkey instance Resident Set Size (RSS) is currently bigger than expected, the memory will be used as soon as you fill the Valkey instance with more data. If the memory peak was only occasional and you want to try to reclaim memory, please try the MEMORY PURGE command, otherwise the only other option is to shutdown and restart the instance.\n\n");
    }
    if high_frag {
        s.push_str(&format!(" * High total RSS: This instance has a memory fragmentation and RSS overhead greater than 1.4 (this means that the Resident Set Size of the Valkey process is much larger than the sum of the logical allocations Valkey performed). This problem is usually due either to a large peak memory (check if there is a peak memory entry above in the report) or may result from a workload that causes the allocator to fragment memory a lot. If the problem is a large peak memory, then there is no issue. Otherwise, make sure you are using the Jemalloc allocator and not the default libc malloc. Note: The currently used allocator is \"{}\".\n\n", allocator_name()));
    }
    if high_alloc_frag {
        s.push_str(" * High allocator fragmentation: This instance has an allocator external fragmentation greater than 1.1. This problem is usually due either to a large peak memory (check if there is a peak memory entry above in the report) or may result from a workload that causes the allocator to fragment memory a lot. You can try enabling 'activedefrag' config option.\n\n");
    }
    if high_alloc_rss {
        s.push_str(" * High allocator RSS overhead: This instance has an RSS memory overhead is greater than 1.1 (this means that the Resident Set Size of the allocator is much larger than the sum what the allocator actually holds). This problem is usually due to a large peak memory (check if there is a peak memory entry above in the report), you can try the MEMORY PURGE command to reclaim it.\n\n");
    }
    if high_proc_rss {
        s.push_str(" * High process RSS overhead: This instance has non-allocator RSS memory overhead is greater than 1.1 (this means that the Resident Set Size of the Valkey process is much larger than the RSS the allocator holds). This problem may be due to Lua scripts or Modules.\n\n");
    }
    if big_client_buf {
        s.push_str(" * Big client buffers: The clients output buffers in this instance are greater than 200K per client (on average). This may result from different causes, like Pub/Sub clients subscribed to channels bot not receiving data fast enough, so that data piles on the Valkey instance output buffer, or clients sending commands with large replies or very large sequences of commands in the same pipeline. Please use the CLIENT LIST command in order to investigate the issue if it causes problems in your instance, or to understand better why certain clients are using a big amount of memory.\n\n");
    }
    if many_scripts {
        s.push_str(" * Many scripts: There seem to be many cached scripts in this instance (more than 1000). This may be because scripts are generated and `EVAL`ed, instead of being parameterized (with KEYS and ARGV), `SCRIPT LOAD`ed and `EVALSHA`ed. Unless `SCRIPT FLUSH` is called periodically, the scripts' caches may end up consuming most of your memory.\n\n");
    }
    if s.is_empty() {
        return "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n".into();
    }
    format!(
        "Sam, I detected a few issues in this Valkey instance memory implants:\n\n{s}I'm here to keep you safe, Sam. I want to help you.\n"
    )
}

/// Valkey's ZMALLOC_LIB for jemalloc: "jemalloc-<major>.<minor>.<bugfix>".
pub fn allocator_name() -> String {
    let version = tikv_jemalloc_ctl::version::read().unwrap_or("");
    match version.split('-').next() {
        Some(v) if !v.is_empty() => format!("jemalloc-{v}"),
        _ => "jemalloc".into(),
    }
}

pub fn doctor(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let o = overhead(ctx.shared);
    let report = doctor_report(&o, ctx.shared.scripts.count());
    ctx.out.verbatim(report.as_bytes());
}

pub fn malloc_stats(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let text = crate::metrics::memory::malloc_stats_text();
    ctx.out.verbatim(text.as_bytes());
}

pub fn purge(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    if crate::metrics::memory::purge() {
        ctx.out.ok();
    } else {
        ctx.out.error("ERR Error purging dirty pages");
    }
}

pub fn help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    super::connection::help(
        ctx.out,
        "MEMORY",
        &[
            "DOCTOR",
            "    Return memory problems reports.",
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
        ],
    );
}

/// How long a jemalloc report takes: it walks every arena and size class.
const ALLOCATOR_COMPLEXITY: &str = "Depends on how much memory is allocated, could be slow";

pub static COMMANDS: &[CommandDef] = &[container(
    "memory",
    "server",
    "4.0.0",
    "A container for memory diagnostics commands.",
    &[
        def(
            "doctor",
            2,
            0,
            NOKEY,
            "server",
            "4.0.0",
            "Outputs a memory problems report.",
            "O(1)",
            Exec::Conn(doctor),
        ),
        def(
            "help",
            2,
            LOADING | STALE,
            NOKEY,
            "server",
            "4.0.0",
            "Returns helpful text about the different subcommands.",
            "O(1)",
            Exec::Conn(help),
        ),
        def(
            "malloc-stats",
            2,
            LOADING,
            NOKEY,
            "server",
            "4.0.0",
            "Returns the allocator statistics.",
            ALLOCATOR_COMPLEXITY,
            Exec::Conn(malloc_stats),
        ),
        def(
            "purge",
            2,
            LOADING,
            NOKEY,
            "server",
            "4.0.0",
            "Asks the allocator to release memory.",
            ALLOCATOR_COMPLEXITY,
            Exec::Conn(purge),
        ),
        def(
            "stats",
            2,
            0,
            NOKEY,
            "server",
            "4.0.0",
            "Returns details about memory usage.",
            "O(1)",
            Exec::Conn(stats),
        ),
        def(
            "usage",
            -3,
            READONLY,
            k(2, 2, 1),
            "server",
            "4.0.0",
            "Estimates the memory usage of a key.",
            "O(N) where N is the number of samples.",
            Exec::Shard(usage),
        )
        .key_access(KeyAccess::METADATA),
    ],
)];

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(total: u64, peak: u64) -> Overhead {
        Overhead {
            peak,
            total,
            startup: 1 << 20,
            repl_backlog: 0,
            clients_normal: 20_000,
            aof_buffer: 0,
            lua_caches: 0,
            hashtable_main: 0,
            overhead_total: 0,
            keys: 0,
            dataset: 0,
            dataset_perc: 0.0,
            peak_perc: 0.0,
            bytes_per_key: 0,
            alloc: AllocatorStats {
                allocated: total,
                active: total,
                resident: total,
                mapped: total,
                retained: 0,
                muzzy: 0,
                frag_smallbins: 0,
            },
            rss: total,
            clients: 1,
        }
    }

    #[test]
    fn doctor_reports_as_valkey() {
        assert!(
            doctor_report(&figures(1 << 20, 1 << 20), 0)
                .starts_with("Hi Sam, this instance is empty")
        );
        assert_eq!(
            doctor_report(&figures(100 * MB, 100 * MB), 0),
            "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n"
        );
        let r = doctor_report(&figures(100 * MB, 400 * MB), 5000);
        assert!(r.starts_with("Sam, I detected a few issues in this Valkey instance memory implants:\n\n * Peak memory:"), "{r}");
        assert!(r.contains("\n\n * Many scripts:"), "{r}");
        assert!(
            r.ends_with("I'm here to keep you safe, Sam. I want to help you.\n"),
            "{r}"
        );
        let mut fragmented = figures(100 * MB, 100 * MB);
        fragmented.rss = 200 * MB;
        let r = doctor_report(&fragmented, 0);
        assert!(
            r.contains(" * High total RSS:") && r.contains(" * High process RSS overhead:"),
            "{r}"
        );
        assert!(r.contains(&format!("\"{}\"", allocator_name())), "{r}");
    }

    #[test]
    fn allocator_is_named_with_its_version() {
        let name = allocator_name();
        assert!(name.starts_with("jemalloc-5."), "{name}");
    }
}
