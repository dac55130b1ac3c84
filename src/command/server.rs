//! Server commands that run on the connection's core: INFO, CONFIG.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::connection::ConnCtx;
use super::{is, lossy};
use crate::state::Shared;

/// Valkey's bytesToHuman: two decimals and a unit letter.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    const UNITS: [(f64, &str); 5] = [
        (1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, "P"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "T"),
        (1024.0 * 1024.0 * 1024.0, "G"),
        (1024.0 * 1024.0, "M"),
        (1024.0, "K"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            return format!("{:.2}{unit}", n / size);
        }
    }
    format!("{}B", n as u64)
}

/// Every section, in the order Valkey prints them whatever order they were asked in.
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
];
/// The sections of a plain INFO (and INFO default).
const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];

pub fn info(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let mut wanted: Vec<&str> = Vec::new();
    if args.len() == 1 {
        wanted.extend(DEFAULT_SECTIONS);
    }
    for a in &args[1..] {
        let s = lossy(a, 64).to_ascii_lowercase();
        match s.as_str() {
            "default" => wanted.extend(DEFAULT_SECTIONS),
            "all" | "everything" => wanted.extend(ALL_SECTIONS),
            // Unknown names are ignored, as in Valkey.
            _ => wanted.extend(ALL_SECTIONS.iter().find(|n| **n == s)),
        }
    }
    let text = render_info(ctx.shared, &wanted);
    ctx.out.verbatim(text.as_bytes());
}

/// Renders the named INFO sections, each once, in Valkey's order, separated by a blank line.
pub fn render_info(shared: &Shared, wanted: &[&str]) -> String {
    let mut out = String::new();
    for &s in ALL_SECTIONS.iter().filter(|s| wanted.contains(s)) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        match s {
            "server" => server_section(shared, &mut out),
            "clients" => clients_section(shared, &mut out),
            "memory" => memory_section(shared, &mut out),
            "persistence" => persistence_section(shared, &mut out),
            "stats" => stats_section(shared, &mut out),
            "replication" => replication_section(shared, &mut out),
            "cpu" => cpu_section(&mut out),
            "modules" => out.push_str("# Modules\r\n"),
            "commandstats" => commandstats_section(shared, &mut out),
            "errorstats" => errorstats_section(shared, &mut out),
            // Per-command latency percentiles are not measured yet: the section is empty.
            "latencystats" => out.push_str("# Latencystats\r\n"),
            "cluster" => cluster_section(shared, &mut out),
            "keyspace" => keyspace_section(shared, &mut out),
            _ => unreachable!("ALL_SECTIONS lists only rendered sections"),
        }
    }
    out
}

fn server_section(shared: &Shared, out: &mut String) {
    let uptime = shared.started.elapsed().as_secs();
    let now_us = crate::util::now_us();
    let cfg = &shared.config;
    let _ = write!(
        out,
        "# Server\r\n\
         redis_version:{compat}\r\n\
         server_name:tallykv\r\n\
         tallykv_version:{ver}\r\n\
         redis_git_sha1:00000000\r\n\
         redis_git_dirty:0\r\n\
         redis_build_id:0\r\n\
         server_mode:standalone\r\n\
         redis_mode:standalone\r\n\
         os:{os}\r\n\
         arch_bits:64\r\n\
         monotonic_clock:POSIX clock_gettime\r\n\
         multiplexing_api:io_uring\r\n\
         process_id:{pid}\r\n\
         process_supervised:no\r\n\
         run_id:{run_id}\r\n\
         tcp_port:{port}\r\n\
         server_time_usec:{now_us}\r\n\
         uptime_in_seconds:{uptime}\r\n\
         uptime_in_days:{days}\r\n\
         hz:{hz}\r\n\
         configured_hz:{hz}\r\n\
         lru_clock:{lru}\r\n\
         executable:{exe}\r\n\
         config_file:{conf}\r\n\
         io_threads_active:0\r\n\
         threads:{cores}\r\n",
        compat = crate::REDIS_COMPAT_VERSION,
        ver = env!("CARGO_PKG_VERSION"),
        os = os_string(),
        pid = std::process::id(),
        run_id = shared.run_id,
        port = shared.port(),
        days = uptime / 86400,
        hz = cfg.runtime.hz(),
        lru = crate::shard::lru_clock(now_us / 1000),
        exe = shared.executable,
        conf = shared.config_file,
        cores = shared.cores,
    );
    // One line per listening port, numbered as Valkey numbers them (port 0: no line).
    let bind = cfg.bind.join(",bind=");
    let listeners = [("tcp", shared.port()), ("tls", cfg.runtime.tls_port())];
    for (i, (name, port)) in listeners.iter().filter(|(_, p)| *p != 0).enumerate() {
        let _ = write!(out, "listener{i}:name={name},bind={bind},port={port}\r\n");
    }
}

fn os_string() -> String {
    // SAFETY: utsname is plain data; uname fills it and we read NUL-terminated fields.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "Linux".into();
        }
        let f = |s: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(s.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        format!("{} {} {}", f(&u.sysname), f(&u.release), f(&u.machine))
    }
}

fn clients_section(shared: &Shared, out: &mut String) {
    let _ = write!(
        out,
        "# Clients\r\n\
         connected_clients:{}\r\n\
         cluster_connections:0\r\n\
         maxclients:{}\r\n\
         client_recent_max_input_buffer:0\r\n\
         client_recent_max_output_buffer:0\r\n\
         blocked_clients:{}\r\n\
         tracking_clients:0\r\n\
         pubsub_clients:0\r\n\
         watching_clients:{}\r\n\
         clients_in_timeout_table:{}\r\n\
         total_watched_keys:{}\r\n\
         total_blocking_keys:{}\r\n\
         total_blocking_keys_on_nokey:0\r\n",
        shared.connected_clients.load(Relaxed),
        shared.config.runtime.maxclients(),
        shared.blocked_clients.load(Relaxed),
        shared.watching_clients.load(Relaxed),
        shared.blocked_with_timeout.load(Relaxed),
        shared.sum_shards(|s| s.watched_keys.get()),
        shared.sum_shards(|s| s.blocking_keys.get()),
    );
}

fn memory_section(shared: &Shared, out: &mut String) {
    // The same split as MEMORY STATS (Valkey's getMemoryOverheadData).
    let o = super::memory::overhead(shared);
    let maxmemory = shared.config.runtime.maxmemory();
    let total_system = system_memory();
    let _ = write!(
        out,
        "# Memory\r\n\
         used_memory:{used}\r\n\
         used_memory_human:{used_h}\r\n\
         used_memory_rss:{rss}\r\n\
         used_memory_rss_human:{rss_h}\r\n\
         used_memory_peak:{peak}\r\n\
         used_memory_peak_human:{peak_h}\r\n\
         used_memory_peak_perc:{peak_perc:.2}%\r\n\
         used_memory_overhead:{overhead}\r\n\
         used_memory_startup:{startup}\r\n\
         used_memory_dataset:{dataset}\r\n\
         used_memory_dataset_perc:{dataset_perc:.2}%\r\n\
         allocator_allocated:{aa}\r\n\
         allocator_active:{ac}\r\n\
         allocator_resident:{ar}\r\n\
         allocator_mapped:{am}\r\n\
         allocator_retained:{art}\r\n\
         allocator_frag_ratio:{afr:.2}\r\n\
         total_system_memory:{total_system}\r\n\
         total_system_memory_human:{ts_h}\r\n\
         maxmemory:{maxmemory}\r\n\
         maxmemory_human:{mm_h}\r\n\
         maxmemory_policy:{policy}\r\n\
         mem_fragmentation_ratio:{frag:.2}\r\n\
         mem_fragmentation_bytes:{frag_bytes}\r\n\
         mem_not_counted_for_evict:{not_counted}\r\n\
         mem_clients_slaves:0\r\n\
         mem_clients_normal:{clients_mem}\r\n\
         mem_allocator:{allocator}\r\n\
         active_defrag_running:0\r\n\
         lazyfree_pending_objects:{lazy_pending}\r\n\
         lazyfreed_objects:{lazy_freed}\r\n",
        used = o.total,
        used_h = human_bytes(o.total),
        rss = o.rss,
        peak = o.peak,
        overhead = o.overhead_total,
        startup = o.startup,
        dataset = o.dataset,
        clients_mem = o.clients_normal,
        not_counted = shared.memory.not_counted(),
        dataset_perc = o.dataset_perc,
        frag_bytes = o.total_frag_bytes(),
        rss_h = human_bytes(o.rss),
        peak_h = human_bytes(o.peak),
        peak_perc = o.peak_perc,
        aa = o.alloc.allocated,
        ac = o.alloc.active,
        ar = o.alloc.resident,
        am = o.alloc.mapped,
        art = o.alloc.retained,
        // Valkey's: unused room in small-size-class slabs over allocated, plus one.
        afr = o.allocator_frag(),
        ts_h = human_bytes(total_system),
        mm_h = human_bytes(maxmemory),
        policy = shared.config.runtime.maxmemory_policy().as_str(),
        frag = o.total_frag(),
        allocator = super::memory::allocator_name(),
        lazy_pending = crate::shard::lazyfree::pending_objects(),
        lazy_freed = crate::shard::lazyfree::freed_objects(),
    );
}

fn system_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        0
    }
}

fn persistence_section(shared: &Shared, out: &mut String) {
    let loading = shared.loading();
    let _ = write!(
        out,
        "# Persistence\r\nloading:{}\r\nasync_loading:0\r\n",
        loading as u8
    );
    let loaded = shared.loading_keys.load(Relaxed);
    if loading {
        let started = shared.loading_started_unix.load(Relaxed);
        let expected = shared.loading_expected.load(Relaxed).max(loaded);
        let elapsed = (crate::util::now_ms() / 1000).saturating_sub(started);
        let perc = if expected == 0 {
            0.0
        } else {
            loaded as f64 * 100.0 / expected as f64
        };
        let eta = (elapsed * expected.saturating_sub(loaded))
            .checked_div(loaded)
            .unwrap_or(1);
        let _ = write!(
            out,
            "loading_start_time:{started}\r\n\
             loading_total_keys:{expected}\r\n\
             loading_loaded_keys:{loaded}\r\n\
             loading_loaded_perc:{perc:.2}\r\n\
             loading_eta_seconds:{eta}\r\n"
        );
    }
    let Some(storage) = shared.storage() else {
        let _ = write!(
            out,
            "current_cow_peak:0\r\n\
             current_cow_size:0\r\n\
             current_cow_size_age:0\r\n\
             current_fork_perc:0.00\r\n\
             current_save_keys_processed:0\r\n\
             current_save_keys_total:0\r\n\
             rdb_changes_since_last_save:0\r\n\
             rdb_bgsave_in_progress:0\r\n\
             rdb_last_save_time:{}\r\n\
             rdb_last_bgsave_status:ok\r\n\
             rdb_saves:0\r\n\
             aof_enabled:{}\r\n\
             aof_rewrite_in_progress:0\r\n\
             aof_last_write_status:ok\r\n",
            shared.lastsave_unix(),
            // appendonly yes while the data dir is still opening
            shared.config.runtime.appendonly() as u8
        );
        return;
    };
    let st = &storage.stats;
    let in_progress = st.bgsave_in_progress.load(Relaxed);
    let last_ok = st.last_bgsave_ok.load(Relaxed);
    let last_save_ms = st.last_save_duration_ms.load(Relaxed);
    let fsyncs = st.fsyncs.load(Relaxed);
    let _ = write!(
        out,
        "current_cow_peak:0\r\n\
         current_cow_size:0\r\n\
         current_cow_size_age:0\r\n\
         current_fork_perc:0.00\r\n\
         current_save_keys_processed:{}\r\n\
         current_save_keys_total:{}\r\n\
         rdb_changes_since_last_save:{}\r\n\
         rdb_bgsave_in_progress:{}\r\n\
         rdb_last_save_time:{}\r\n\
         rdb_last_bgsave_status:{}\r\n\
         rdb_last_bgsave_time_sec:{}\r\n\
         rdb_saves:{}\r\n\
         rdb_last_save_keys:{}\r\n\
         rdb_last_load_keys_expired:{}\r\n\
         rdb_last_load_keys_loaded:{}\r\n\
         aof_enabled:1\r\n\
         aof_rewrite_in_progress:{}\r\n\
         aof_rewrite_scheduled:0\r\n\
         aof_last_write_status:ok\r\n\
         aof_fsync_policy:{}\r\n\
         aof_current_size:{}\r\n\
         aof_pending_bio_fsync:0\r\n\
         aof_delayed_fsync:0\r\n\
         aof_fsyncs:{fsyncs}\r\n\
         aof_fsync_last_usec:{}\r\n\
         aof_fsync_avg_usec:{}\r\n\
         aof_fsync_max_usec:{}\r\n\
         aof_last_fsync_time:{}\r\n\
         storage_commits:{}\r\n\
         storage_keys_written:{}\r\n\
         storage_deltas_written:{}\r\n\
         storage_bytes_written:{}\r\n\
         storage_dir:{}\r\n",
        if in_progress {
            st.save_keys_processed.load(Relaxed)
        } else {
            0
        },
        if in_progress {
            st.save_keys_total.load(Relaxed)
        } else {
            0
        },
        st.changes_since_save.load(Relaxed),
        in_progress as u8,
        shared.lastsave_unix(),
        if last_ok { "ok" } else { "err" },
        if st.saves.load(Relaxed) == 0 {
            -1
        } else {
            (last_save_ms / 1000) as i64
        },
        st.saves.load(Relaxed),
        st.last_save_keys.load(Relaxed),
        shared.loading_expired.load(Relaxed),
        loaded.saturating_sub(shared.loading_expired.load(Relaxed)),
        st.compaction_in_progress.load(Relaxed) as u8,
        shared.config.runtime.appendfsync().as_str(),
        storage.disk_space(),
        st.fsync_us_last.load(Relaxed),
        st.fsync_us_total
            .load(Relaxed)
            .checked_div(fsyncs)
            .unwrap_or(0),
        st.fsync_us_max.load(Relaxed),
        st.last_fsync_unix.load(Relaxed),
        st.commits.load(Relaxed),
        st.keys_written.load(Relaxed),
        st.deltas_written.load(Relaxed),
        st.bytes_written.load(Relaxed),
        storage.dir().display(),
    );
    match storage.at_rest_info() {
        None => out.push_str("at_rest_encryption:0\r\n"),
        Some(a) => {
            let _ = write!(
                out,
                "at_rest_encryption:1\r\n\
                 at_rest_active_key:{}\r\n\
                 at_rest_keys_in_use:{}\r\n\
                 at_rest_rotation_in_progress:{}\r\n\
                 at_rest_values_resealed:{}\r\n\
                 at_rest_values_sealed:{}\r\n\
                 at_rest_values_opened:{}\r\n",
                a.active,
                a.keys_in_use.join(","),
                a.rotation_in_progress as u8,
                a.resealed,
                a.sealed,
                a.opened,
            );
        }
    }
}

fn stats_section(shared: &Shared, out: &mut String) {
    let s = |f: fn(&crate::shard::ShardStats) -> u64| shared.sum_shards(f);
    let c = |f: fn(&crate::metrics::CoreStats) -> u64| shared.sum_cores(f);
    let denied = shared.acl.denied_counts();
    let guard = shared.pan_guard.counts();
    let _ = write!(
        out,
        "# Stats\r\n\
         total_connections_received:{}\r\n\
         total_commands_processed:{}\r\n\
         instantaneous_ops_per_sec:{}\r\n\
         total_net_input_bytes:{}\r\n\
         total_net_output_bytes:{}\r\n\
         rejected_connections:{}\r\n\
         expired_keys:{}\r\n\
         expired_fields:{}\r\n\
         expired_stale_perc:0.00\r\n\
         expired_time_cap_reached_count:0\r\n\
         expire_cycle_cpu_milliseconds:{}\r\n\
         evicted_keys:{}\r\n\
         evicted_clients:0\r\n\
         keyspace_hits:{}\r\n\
         keyspace_misses:{}\r\n\
         pubsub_channels:0\r\n\
         pubsub_patterns:0\r\n\
         pubsubshard_channels:0\r\n\
         latest_fork_usec:0\r\n\
         total_forks:0\r\n\
         migrate_cached_sockets:0\r\n\
         total_error_replies:{}\r\n\
         unexpected_error_replies:0\r\n\
         total_reads_processed:0\r\n\
         total_writes_processed:0\r\n\
         client_query_buffer_limit_disconnections:{}\r\n\
         acl_access_denied_auth:{}\r\n\
         acl_access_denied_cmd:{}\r\n\
         acl_access_denied_key:{}\r\n\
         acl_access_denied_channel:0\r\n\
         card_pan_guard_warnings:{}\r\n\
         card_pan_guard_refusals:{}\r\n",
        c(|x| x.connections_received.get()),
        c(|x| x.commands_processed.get()),
        crate::metrics::stats::ops_per_sec(),
        c(|x| x.net_input_bytes.get()),
        c(|x| x.net_output_bytes.get()),
        c(|x| x.rejected_connections.get()),
        s(|x| x.expired_keys.get()),
        s(|x| x.expired_fields.get()),
        s(|x| x.expire_cycle_cpu_us.get()) / 1000,
        s(|x| x.evicted_keys.get()),
        s(|x| x.keyspace_hits.get()),
        s(|x| x.keyspace_misses.get()),
        c(|x| x.error_replies.get()),
        c(|x| x.client_qbuf_limit_disconnections.get()),
        denied[0],
        denied[1],
        denied[2],
        guard.0,
        guard.1,
    );
}

fn cluster_section(shared: &Shared, out: &mut String) {
    out.push_str("# Cluster\r\n");
    if !shared.config.cluster.enabled {
        out.push_str("cluster_enabled:0\r\n");
        return;
    }
    out.push_str("cluster_enabled:1\r\n");
    out.push_str(&super::cluster::info_text(shared.cluster().map(|c| &**c)));
    if let Some(c) = shared.cluster() {
        for line in c.group_lines() {
            out.push_str(&line);
            out.push_str("\r\n");
        }
    }
}

fn replication_section(shared: &Shared, out: &mut String) {
    let _ = write!(
        out,
        "# Replication\r\n\
         role:master\r\n\
         connected_slaves:0\r\n\
         master_failover_state:no-failover\r\n\
         master_replid:{}\r\n\
         master_replid2:0000000000000000000000000000000000000000\r\n\
         master_repl_offset:0\r\n\
         second_repl_offset:-1\r\n\
         repl_backlog_active:0\r\n\
         repl_backlog_size:0\r\n\
         repl_backlog_first_byte_offset:0\r\n\
         repl_backlog_histlen:0\r\n",
        shared.run_id
    );
    // In a cluster, replication is per slot group (Raft): the same per-group lines as INFO
    // cluster (role, term, leader, log and apply positions, followers' lag on the leader).
    if let Some(c) = shared.cluster() {
        for line in c.group_lines() {
            out.push_str(&line);
            out.push_str("\r\n");
        }
    }
}

fn cpu_section(out: &mut String) {
    let usage = |who| {
        // SAFETY: rusage is plain data filled by getrusage.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        (t(ru.ru_stime), t(ru.ru_utime))
    };
    let (sys, user) = usage(libc::RUSAGE_SELF);
    let (csys, cuser) = usage(libc::RUSAGE_CHILDREN);
    let (tsys, tuser) = usage(libc::RUSAGE_THREAD);
    let _ = write!(
        out,
        "# CPU\r\n\
         used_cpu_sys:{sys:.6}\r\n\
         used_cpu_user:{user:.6}\r\n\
         used_cpu_sys_children:{csys:.6}\r\n\
         used_cpu_user_children:{cuser:.6}\r\n\
         used_cpu_sys_main_thread:{tsys:.6}\r\n\
         used_cpu_user_main_thread:{tuser:.6}\r\n"
    );
}

fn keyspace_section(shared: &Shared, out: &mut String) {
    out.push_str("# Keyspace\r\n");
    use crate::shard::stats::{DB_EXPIRES, DB_KEYS, DB_VOLATILE_ITEMS};
    for (db, f) in shared.db_figures() {
        let (keys, expires, volatile_hashes) = (f[DB_KEYS], f[DB_EXPIRES], f[DB_VOLATILE_ITEMS]);
        if keys == 0 {
            continue;
        }
        // Valkey 9's line: `keys_with_volatile_items` counts hashes with field TTLs.
        let _ = write!(
            out,
            "db{db}:keys={keys},expires={expires},avg_ttl=0,keys_with_volatile_items={volatile_hashes}\r\n"
        );
    }
}

/// errorstat_<CODE>:count=<n>, one line per error code seen, sorted by code as Valkey's rax.
fn errorstats_section(shared: &Shared, out: &mut String) {
    out.push_str("# Errorstats\r\n");
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    for core in &shared.core_stats {
        for (code, n) in core.errors_by_code.lock().expect("error stats lock").iter() {
            *totals.entry(code.to_string()).or_default() += n;
        }
    }
    for (code, n) in totals {
        let _ = write!(out, "errorstat_{code}:count={n}\r\n");
    }
}

fn commandstats_section(shared: &Shared, out: &mut String) {
    out.push_str("# Commandstats\r\n");
    let reg = super::table::registry();
    for id in 0..reg.len() {
        let sum = |f: fn(&crate::metrics::stats::CommandStat) -> u64| -> u64 {
            shared.core_stats.iter().map(|c| f(&c.commands[id])).sum()
        };
        let calls = sum(|c| c.calls.get());
        let rejected = sum(|c| c.rejected_calls.get());
        let failed = sum(|c| c.failed_calls.get());
        if calls == 0 && rejected == 0 && failed == 0 {
            continue;
        }
        let usec = sum(|c| c.usec.get());
        let per_call = if calls > 0 {
            usec as f64 / calls as f64
        } else {
            0.0
        };
        let _ = write!(
            out,
            "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n",
            reg.full_name(id)
        );
    }
}

pub fn config_get(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let patterns: Vec<&[u8]> = args[2..].iter().map(|a| &a[..]).collect();
    let pairs = ctx.shared.config.get(&patterns);
    ctx.out.map(pairs.len());
    for (k, v) in &pairs {
        ctx.out.bulk(k.as_bytes());
        ctx.out.bulk(v.as_bytes());
    }
}

pub fn config_set(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    if !args.len().is_multiple_of(2) {
        super::arity_error(ctx.out, "config|set");
        return;
    }
    let pairs: Vec<(&[u8], &[u8])> = args[2..]
        .chunks_exact(2)
        .map(|p| (&p[0][..], &p[1][..]))
        .collect();
    match ctx.shared.config.set(&pairs) {
        Ok(()) => {
            if crate::security::audit::enabled() {
                // The directives' names only: a value may be a password.
                let names: Vec<String> = pairs
                    .iter()
                    .map(|(name, _)| String::from_utf8_lossy(name).to_ascii_lowercase())
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                audit_config(ctx, "set", &names);
            }
            ctx.out.ok()
        }
        Err(e) => ctx.out.error(&e),
    }
}

fn audit_config(ctx: &ConnCtx<'_>, command: &str, directives: &[&str]) {
    crate::security::audit::record(&crate::security::audit::Event::ConfigChange {
        command,
        directives,
        user: &ctx.client.acl.user.name,
        client: &ctx.client.info.addr,
    });
}

pub fn config_resetstat(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    for c in &ctx.shared.core_stats {
        c.reset();
    }
    for s in &ctx.shared.shard_stats {
        s.expired_keys.set(0);
        s.expired_fields.set(0);
        s.evicted_keys.set(0);
        s.keyspace_hits.set(0);
        s.keyspace_misses.set(0);
        s.expire_cycle_cpu_us.set(0);
    }
    crate::shard::lazyfree::reset_stats();
    ctx.shared.acl.reset_denied_counts();
    ctx.shared.pan_guard.reset_counts();
    if crate::security::audit::enabled() {
        audit_config(ctx, "resetstat", &[]);
    }
    ctx.out.ok();
}

pub fn config_help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    super::connection::help(
        ctx.out,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
        ],
    );
}

/// FLUSHALL/FLUSHDB argument check: optional SYNC or ASYNC. Either way the keys are gone
/// when the reply leaves; ASYNC (or neither, under `lazyfree-lazy-user-flush`) frees their
/// memory in the background (see `shard::lazyfree`).
pub fn flush_args_ok(args: &[Bytes]) -> bool {
    match args.len() {
        1 => true,
        2 => is(&args[1], "SYNC") || is(&args[1], "ASYNC"),
        _ => false,
    }
}
