//! Memory accounting and maxmemory eviction through a real client: INFO used_memory follows
//! the data, the limit holds under a write flood, and each policy evicts what Valkey's would.

use crate::common;

use std::time::Duration;

/// These tests measure the eviction engine against the data's own memory, so they run as a
/// pure cache; tests/persistence.rs covers maxmemory with the storage engine's buffers.
const CACHE: &[&str] = &["--appendonly", "no"];

use common::{DEADLINE, Server, err, run, wait_until};

const MB: u64 = 1024 * 1024;

/// An INFO field as a number.
fn info_num(c: &mut redis::Connection, section: &str, name: &str) -> u64 {
    let text: String = run(c, &["INFO", section]).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {name}"))
        .trim()
        .parse()
        .unwrap()
}

fn used_memory(c: &mut redis::Connection) -> u64 {
    info_num(c, "memory", "used_memory")
}

fn evicted(c: &mut redis::Connection) -> u64 {
    info_num(c, "stats", "evicted_keys")
}

/// Writes `count` keys `<prefix>:<i>` with `size`-byte values, pipelined `batch` at a time,
/// asserting every reply is +OK; calls `after_batch` after each batch.
fn fill(
    c: &mut redis::Connection,
    prefix: &str,
    count: usize,
    size: usize,
    batch: usize,
    ttl: Option<u64>,
    mut after_batch: impl FnMut(&mut redis::Connection),
) {
    let value = vec![b'x'; size];
    let mut i = 0;
    while i < count {
        let mut p = redis::pipe();
        for j in i..(i + batch).min(count) {
            let cmd = p.cmd("SET").arg(format!("{prefix}:{j}")).arg(&value);
            if let Some(t) = ttl {
                cmd.arg("EX").arg(t);
            }
        }
        let replies: Vec<String> = p.query(c).unwrap();
        assert!(replies.iter().all(|r| r == "OK"), "a write failed");
        i += batch;
        after_batch(c);
    }
}

/// Turns eviction off (maxmemory 0) so that counts taken next cannot change under the test:
/// background eviction may otherwise go on while memory hovers at the limit.
fn stop_eviction(c: &mut redis::Connection) {
    run::<()>(c, &["CONFIG", "SET", "maxmemory", "0"]).unwrap();
}

/// How many of `<prefix>:<0..count>` still exist.
fn surviving(c: &mut redis::Connection, prefix: &str, count: usize) -> usize {
    let mut alive = 0;
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("EXISTS").arg(format!("{prefix}:{i}"));
        }
        let r: Vec<i64> = p.query(c).unwrap();
        alive += r.iter().filter(|&&x| x == 1).count();
    }
    alive
}

/// Reads every key of `<prefix>:<0..count>` `times` times (pipelined).
fn read_all(c: &mut redis::Connection, prefix: &str, count: usize, times: usize) {
    for _ in 0..times {
        let mut p = redis::pipe();
        for i in 0..count {
            p.cmd("GET").arg(format!("{prefix}:{i}")).ignore();
        }
        p.query::<()>(c).unwrap();
    }
}

#[test]
fn used_memory_follows_the_data() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    let before = used_memory(&mut c);
    let dataset_before = info_num(&mut c, "memory", "used_memory_dataset");
    assert!(before > 0);
    fill(&mut c, "k", 100_000, 100, 5_000, None, |_| {});
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 100_000);
    let full = used_memory(&mut c);
    // 100k keys of 100 bytes: at least 10 MB more than before.
    assert!(
        full > before + 10 * MB,
        "before {before}, with 100k keys {full}"
    );
    assert!(info_num(&mut c, "memory", "used_memory_peak") >= full);
    let dataset = info_num(&mut c, "memory", "used_memory_dataset");
    assert!(
        dataset > dataset_before + 10 * MB,
        "dataset {dataset_before} -> {dataset}"
    );
    run::<()>(&mut c, &["FLUSHALL"]).unwrap();
    assert!(
        wait_until(DEADLINE, || used_memory(&mut c)
            < before + (full - before) / 4),
        "used_memory did not fall after FLUSHALL: before {before}, full {full}, now {}",
        used_memory(&mut c)
    );
    // The peak remembers.
    assert!(info_num(&mut c, "memory", "used_memory_peak") >= full);
}

#[test]
fn allkeys_lru_holds_the_limit_under_a_write_flood() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            "20mb",
            "maxmemory-policy",
            "allkeys-lru",
        ],
    )
    .unwrap();
    let limit = 20 * MB;
    let mut samples = Vec::new();
    let mut max_seen = 0;
    // 100 MB: 100k values of 1 KiB, 500 per pipeline, INFO after every pipeline.
    fill(&mut c, "flood", 100_000, 1024, 500, None, |c| {
        let used = used_memory(c);
        max_seen = max_seen.max(used);
        samples.push(used);
    });
    assert!(
        max_seen <= limit + limit / 10,
        "used_memory reached {max_seen} (limit {limit}); samples {samples:?}"
    );
    stop_eviction(&mut c);
    let ev = evicted(&mut c);
    assert!(ev > 0);
    let keys: u64 = run::<u64>(&mut c, &["DBSIZE"]).unwrap();
    assert_eq!(
        keys + ev,
        100_000,
        "every key is either there or was evicted"
    );
    assert!(
        keys > 5_000,
        "the limit is used, not emptied: {keys} keys left"
    );
    // Reads still work and the newest keys are there.
    let last: Option<Vec<u8>> = run(&mut c, &["GET", "flood:99999"]).unwrap();
    assert_eq!(last.map(|v| v.len()), Some(1024));
}

#[test]
fn noeviction_refuses_writes_but_serves_reads_and_deletes() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            "12mb",
            "maxmemory-policy",
            "noeviction",
        ],
    )
    .unwrap();
    let value = vec![b'v'; 1024];
    let mut written = 0;
    let oom = "OOM command not allowed when used memory > 'maxmemory'.";
    loop {
        let r = redis::cmd("SET")
            .arg(format!("n:{written}"))
            .arg(&value)
            .query::<()>(&mut c);
        match r {
            Ok(()) => written += 1,
            Err(e) => {
                assert_eq!(common::error_text(&e), oom);
                break;
            }
        }
        assert!(written < 100_000, "never refused a write");
    }
    assert!(written > 1000, "refused too early: {written}");
    // Right at the limit, freed buffers can let a small write through again; set the limit
    // clearly below the data so that every write must be refused.
    let used = used_memory(&mut c);
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory", &(used - 2 * MB).to_string()],
    )
    .unwrap();
    // Every kind of write is refused; nothing was evicted.
    assert_eq!(err(&mut c, &["SET", "new", "v"]), oom);
    assert_eq!(err(&mut c, &["HSET", "h", "f", "v"]), oom);
    assert_eq!(err(&mut c, &["APPEND", "n:0", "more"]), oom);
    assert_eq!(evicted(&mut c), 0);
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), written);
    // Reads and deletes work.
    let v: Vec<u8> = run(&mut c, &["GET", "n:0"]).unwrap();
    assert_eq!(v.len(), 1024);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "n:1"]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["STRLEN", "n:1"]).unwrap(), 1024);
    let mut del = redis::cmd("DEL");
    for i in 0..written {
        del.arg(format!("n:{i}"));
    }
    assert_eq!(del.query::<i64>(&mut c).unwrap(), written);
    // With the memory back, writes work again.
    assert!(wait_until(DEADLINE, || {
        run::<String>(&mut c, &["SET", "after", "v"]).is_ok()
    }));
    // The refused writes were counted as rejected calls.
    let stats: String = run(&mut c, &["INFO", "commandstats"]).unwrap();
    let set = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_set:"))
        .unwrap();
    assert!(!set.contains("rejected_calls=0,"), "{set}");
}

/// Fills 24 MB of keys under a 16 MB limit with `policy`: half persistent, half with a TTL.
/// Returns (persistent survivors, volatile survivors, each out of 6000).
fn volatile_policy_run(policy: &str) -> (usize, usize, redis::Connection, Server) {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(&mut c, &["CONFIG", "SET", "maxmemory-policy", policy]).unwrap();
    // Persistent keys first, under no limit.
    fill(&mut c, "keep", 6000, 1024, 500, None, |_| {});
    let used = used_memory(&mut c);
    // Leave room for about 3000 more keys, then write 6000 with a TTL.
    let limit = used + 3 * MB;
    run::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &limit.to_string()]).unwrap();
    fill(&mut c, "vol", 6000, 1024, 100, Some(10_000), |_| {});
    stop_eviction(&mut c);
    let keep = surviving(&mut c, "keep", 6000);
    let vol = surviving(&mut c, "vol", 6000);
    (keep, vol, c, s)
}

#[test]
fn volatile_lru_evicts_only_keys_with_a_ttl() {
    let (keep, vol, mut c, _s) = volatile_policy_run("volatile-lru");
    assert_eq!(keep, 6000, "a persistent key was evicted");
    assert!(vol < 6000 && vol > 0, "{vol}");
    assert_eq!(evicted(&mut c), 6000 - vol as u64);
}

#[test]
fn volatile_ttl_evicts_only_keys_with_a_ttl() {
    let (keep, vol, mut c, _s) = volatile_policy_run("volatile-ttl");
    assert_eq!(keep, 6000, "a persistent key was evicted");
    assert!(vol < 6000 && vol > 0, "{vol}");
    assert_eq!(evicted(&mut c), 6000 - vol as u64);
}

#[test]
fn volatile_random_evicts_only_keys_with_a_ttl() {
    let (keep, vol, mut c, _s) = volatile_policy_run("volatile-random");
    assert_eq!(keep, 6000, "a persistent key was evicted");
    assert!(vol < 6000 && vol > 0, "{vol}");
    assert_eq!(evicted(&mut c), 6000 - vol as u64);
}

#[test]
fn volatile_policy_without_volatile_keys_refuses_writes() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    fill(&mut c, "p", 3000, 1024, 500, None, |_| {});
    let used = used_memory(&mut c);
    run::<()>(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            &(used + MB).to_string(),
            "maxmemory-policy",
            "volatile-lru",
        ],
    )
    .unwrap();
    let value = vec![b'v'; 1024];
    let mut refused = false;
    for i in 0..5000 {
        if let Err(e) = redis::cmd("SET")
            .arg(format!("q:{i}"))
            .arg(&value)
            .query::<()>(&mut c)
        {
            assert_eq!(
                common::error_text(&e),
                "OOM command not allowed when used memory > 'maxmemory'."
            );
            refused = true;
            break;
        }
    }
    assert!(refused);
    assert_eq!(surviving(&mut c, "p", 3000), 3000);
    assert_eq!(evicted(&mut c), 0);
}

#[test]
fn volatile_ttl_evicts_the_nearest_expiry_first() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"],
    )
    .unwrap();
    // Long TTLs, then short TTLs; then squeeze.
    fill(&mut c, "long", 4000, 1024, 500, Some(100_000), |_| {});
    fill(&mut c, "short", 4000, 1024, 500, Some(1_000), |_| {});
    let used = used_memory(&mut c);
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory", &(used + MB).to_string()],
    )
    .unwrap();
    fill(&mut c, "mid", 4000, 1024, 100, Some(50_000), |_| {});
    stop_eviction(&mut c);
    let long = surviving(&mut c, "long", 4000);
    let short = surviving(&mut c, "short", 4000);
    // Sampling is approximate: demand a clear preference, not perfection.
    assert!(long > 3600, "long-TTL survivors {long}");
    assert!(short < 2000, "short-TTL survivors {short}");
}

#[test]
fn allkeys_lru_keeps_recently_read_keys() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )
    .unwrap();
    fill(&mut c, "hot", 2000, 1024, 500, None, |_| {});
    fill(&mut c, "cold", 8000, 1024, 500, None, |_| {});
    let used = used_memory(&mut c);
    run::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &used.to_string()]).unwrap();
    // The LRU clock counts seconds: let every key age, then read the hot ones.
    std::thread::sleep(Duration::from_millis(2100));
    read_all(&mut c, "hot", 2000, 1);
    // 4000 new keys must push out about as many old ones. (Not more: once the cold keys are
    // scarce, sampling of 5 keys often holds none and the next-oldest, the hot keys, go, as
    // in Valkey.)
    fill(&mut c, "new", 4000, 1024, 100, None, |_| {});
    stop_eviction(&mut c);
    let hot = surviving(&mut c, "hot", 2000);
    let cold = surviving(&mut c, "cold", 8000);
    assert!(evicted(&mut c) >= 3000);
    assert!(hot >= 1800, "recently read keys evicted: {hot}/2000 left");
    let hot_rate = hot as f64 / 2000.0;
    let cold_rate = cold as f64 / 8000.0;
    assert!(
        hot_rate > cold_rate + 0.3,
        "hot {hot}/2000 vs cold {cold}/8000"
    );
}

#[test]
fn allkeys_lfu_keeps_frequently_read_keys() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"],
    )
    .unwrap();
    fill(&mut c, "hot", 1000, 1024, 500, None, |_| {});
    fill(&mut c, "cold", 8000, 1024, 500, None, |_| {});
    read_all(&mut c, "hot", 1000, 30);
    let used = used_memory(&mut c);
    run::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &used.to_string()]).unwrap();
    fill(&mut c, "new", 8000, 1024, 100, None, |_| {});
    stop_eviction(&mut c);
    let hot = surviving(&mut c, "hot", 1000);
    let cold = surviving(&mut c, "cold", 8000);
    assert!(evicted(&mut c) >= 5000);
    assert!(hot >= 900, "frequently read keys evicted: {hot}/1000 left");
    assert!(
        hot as f64 / 1000.0 > cold as f64 / 8000.0 + 0.3,
        "hot {hot}/1000 vs cold {cold}/8000"
    );
}

#[test]
fn object_freq_grows_with_accesses_under_lfu() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(&mut c, &["SET", "k", "v"]).unwrap();
    assert_eq!(
        err(&mut c, &["OBJECT", "FREQ", "k"]),
        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."
    );
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"],
    )
    .unwrap();
    run::<()>(&mut c, &["SET", "f", "v"]).unwrap();
    let fresh: i64 = run(&mut c, &["OBJECT", "FREQ", "f"]).unwrap();
    assert_eq!(fresh, 5, "a new key starts at LFU_INIT_VAL");
    let mut p = redis::pipe();
    for _ in 0..300 {
        p.cmd("GET").arg("f").ignore();
    }
    p.query::<()>(&mut c).unwrap();
    let after: i64 = run(&mut c, &["OBJECT", "FREQ", "f"]).unwrap();
    assert!(after > fresh + 2, "FREQ {fresh} -> {after} after 300 reads");
    assert!(after < 255);
    // OBJECT FREQ itself is not an access.
    for _ in 0..50 {
        run::<i64>(&mut c, &["OBJECT", "FREQ", "f"]).unwrap();
    }
    assert_eq!(run::<i64>(&mut c, &["OBJECT", "FREQ", "f"]).unwrap(), after);
    assert_eq!(
        run::<Option<i64>>(&mut c, &["OBJECT", "FREQ", "missing"]).unwrap(),
        None
    );
    // volatile-lfu tracks frequency too.
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lfu"],
    )
    .unwrap();
    assert!(run::<i64>(&mut c, &["OBJECT", "FREQ", "f"]).is_ok());
}

/// CRC16 (XMODEM), as Redis Cluster hashes keys.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A hash tag whose slot is in the lower half (`low`) or the upper half of the slot space:
/// with two cores, the two halves belong to different cores.
fn tag_in_half(low: bool) -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| ((crc16(t.as_bytes()) % 16384) < 8192) == low)
        .unwrap()
}

#[test]
fn allkeys_lru_evicts_on_the_core_that_holds_the_data() {
    let s = Server::start(CACHE);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )
    .unwrap();
    // All the old data on one core...
    let old = format!("{{{}}}", tag_in_half(true));
    fill(&mut c, &old, 8000, 1024, 500, None, |_| {});
    let limit = used_memory(&mut c) + 2 * MB;
    run::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &limit.to_string()]).unwrap();
    // ...and every new write goes to the other core, which has nothing to evict at first.
    let new = format!("{{{}}}", tag_in_half(false));
    let mut max_seen = 0;
    fill(&mut c, &new, 8000, 1024, 100, None, |c| {
        max_seen = max_seen.max(used_memory(c));
    });
    stop_eviction(&mut c);
    assert!(
        max_seen <= limit + limit / 10,
        "used_memory reached {max_seen}, limit {limit}"
    );
    let old_left = surviving(&mut c, &old, 8000);
    let new_left = surviving(&mut c, &new, 8000);
    assert!(old_left < 8000, "the core holding the data did not evict");
    assert!(new_left > 4000, "new keys: {new_left}");
    assert_eq!(evicted(&mut c), (16000 - old_left - new_left) as u64);
}

#[test]
fn lowering_maxmemory_evicts_without_writes() {
    let s = Server::start(&["--appendonly", "no", "--hz", "50"]);
    let mut c = s.conn();
    run::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
    )
    .unwrap();
    fill(&mut c, "k", 20_000, 1024, 1000, None, |_| {});
    let used = used_memory(&mut c);
    let limit = used - 10 * MB;
    run::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &limit.to_string()]).unwrap();
    // No writes: the background eviction brings memory under the new limit.
    assert!(
        wait_until(DEADLINE, || used_memory(&mut c) <= limit),
        "used_memory {} stayed over {limit}",
        used_memory(&mut c)
    );
    stop_eviction(&mut c);
    let keys: u64 = run(&mut c, &["DBSIZE"]).unwrap();
    assert!(keys < 20_000 && keys > 5_000, "{keys}");
    assert_eq!(keys + evicted(&mut c), 20_000);
}
