//! Shard operations on a keyspace of 1M keys (16-byte keys, 32-byte values), one core, no
//! sockets: what a command costs once it has reached the core that owns its key.
//!
//! * `get/hit`, `get/miss`: `Shard::get` of a random present / absent key.
//! * `set/insert`: `SetStr` of a new key (the keys are deleted again outside the timing).
//! * `set/overwrite`: `SetStr` over a random present key (a new value replaces the old one).
//! * `setint/in_place`: `SetInt` with `Ttl::Keep` on a key already holding an integer — the
//!   record INCR writes.
//! * `hset/small_hash`: `HSet` of one field of a random 8-field listpack hash (100K hashes
//!   beside the 1M strings).
//! * `expire/active_step_10pct`: one `active_expire_step(now, 200)` (the server's step size)
//!   over 1M volatile keys of which 10% have expired; what a step deletes is put back outside
//!   the timing, so every step sees the same mix.
//! * `evict/allkeys_lru`: one `evict_one(AllKeysLru, 5)` over 1M keys with random idle
//!   times; a fresh key replaces the evicted one outside the timing.
//!
//! Run with `cargo bench --bench shard` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick pass). Each group builds its keyspace first (about a second each).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tallykv::cluster::{SLOT_COUNT, key_slot};
use tallykv::shard::{EvictPolicy, Mutation, Shard, ShardStats, Ttl, lru_clock};

const N: usize = 1_000_000;
/// A fixed clock: 2023-11-14, on a minute boundary.
const NOW: u64 = 28_333_333 * 60_000;

type Key = [u8; 16];

fn key(prefix: &str, i: usize) -> Key {
    let s = format!("{prefix}{i:012}");
    s.as_bytes()
        .try_into()
        .expect("prefix of 4 bytes + 12 digits")
}

fn value(i: usize) -> [u8; 32] {
    let s = format!("value-{i:026}");
    s.as_bytes().try_into().expect("32 bytes")
}

/// A shard holding `key:000000000000`.. with 32-byte string values, expiring at `expire(i)`.
fn populated(expire: impl Fn(usize) -> Ttl) -> (Shard, Vec<Key>) {
    let mut s = Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()));
    s.clock_ms = NOW;
    let keys: Vec<Key> = (0..N).map(|i| key("key:", i)).collect();
    for (i, k) in keys.iter().enumerate() {
        s.apply(Mutation::SetStr {
            key: k,
            value: &value(i),
            ttl: expire(i),
        });
    }
    assert_eq!(s.len(), N);
    (s, keys)
}

fn strings(c: &mut Criterion) {
    let (mut s, keys) = populated(|_| Ttl::Clear);
    let mut rng = fastrand::Rng::with_seed(1);
    let misses: Vec<Key> = (0..N).map(|i| key("mis:", i)).collect();
    let val = value(7);

    c.bench_function("get/hit", |b| {
        b.iter(|| {
            let k = &keys[rng.usize(..N)];
            black_box(s.get(k, NOW).is_some())
        })
    });
    c.bench_function("get/miss", |b| {
        b.iter(|| {
            let k = &misses[rng.usize(..N)];
            black_box(s.get(k, NOW).is_none())
        })
    });

    let mut next = 0;
    c.bench_function("set/insert", |b| {
        b.iter_custom(|iters| {
            let fresh: Vec<Key> = (0..iters as usize).map(|i| key("new:", next + i)).collect();
            next += fresh.len();
            let start = Instant::now();
            for k in &fresh {
                s.apply(Mutation::SetStr {
                    key: k,
                    value: &val,
                    ttl: Ttl::Clear,
                });
            }
            let took = start.elapsed();
            for k in &fresh {
                s.apply(Mutation::Del { key: k });
            }
            took
        })
    });
    assert_eq!(s.len(), N);

    c.bench_function("set/overwrite", |b| {
        b.iter(|| {
            let k = &keys[rng.usize(..N)];
            s.apply(Mutation::SetStr {
                key: k,
                value: &val,
                ttl: Ttl::Clear,
            })
        })
    });

    for (i, k) in keys.iter().enumerate() {
        s.apply(Mutation::SetInt {
            key: k,
            value: i as i64,
            ttl: Ttl::Clear,
        });
    }
    c.bench_function("setint/in_place", |b| {
        b.iter(|| {
            let i = rng.usize(..N);
            s.apply(Mutation::SetInt {
                key: &keys[i],
                value: black_box(i as i64 + 1),
                ttl: Ttl::Keep,
            })
        })
    });

    const HASHES: usize = 100_000;
    let hkeys: Vec<Key> = (0..HASHES).map(|i| key("hsh:", i)).collect();
    let fields: Vec<Vec<u8>> = (0..8).map(|f| format!("field{f}").into_bytes()).collect();
    for (i, k) in hkeys.iter().enumerate() {
        let v = value(i);
        let pairs: Vec<&[u8]> = fields.iter().flat_map(|f| [&f[..], &v[..]]).collect();
        s.apply(Mutation::HSet {
            key: k,
            pairs: &pairs,
        });
    }
    c.bench_function("hset/small_hash", |b| {
        b.iter(|| {
            let k = &hkeys[rng.usize(..HASHES)];
            let pairs: [&[u8]; 2] = [&fields[rng.usize(..8)], &val];
            s.apply(Mutation::HSet {
                key: k,
                pairs: &pairs,
            })
        })
    });
}

fn active_expire(c: &mut Criterion) {
    let expired = |i: usize| i.is_multiple_of(10);
    let ttl = move |i: usize| {
        if expired(i) {
            Ttl::At(NOW - 1)
        } else {
            Ttl::At(NOW + 3_600_000)
        }
    };
    let (mut s, keys) = populated(ttl);
    // The expired keys of each slot, and how many keys each slot holds when complete.
    let mut doomed: Vec<Vec<usize>> = vec![Vec::new(); SLOT_COUNT];
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| expired(*i)) {
        doomed[key_slot(k) as usize].push(i);
    }
    let full: Vec<usize> = (0..SLOT_COUNT).map(|slot| s.count_in_slot(slot)).collect();
    // The cycle walks slots in order, so what a step deleted lies in the slots from where
    // the previous one stopped: walk forward from there and put the expired keys back.
    let mut pos = 0;
    c.bench_function("expire/active_step_10pct", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let step = s.active_expire_step(NOW, 200);
                took += start.elapsed();
                let mut missing = step.expired;
                while missing > 0 {
                    let gone = full[pos] - s.count_in_slot(pos);
                    if gone > 0 {
                        for &i in &doomed[pos] {
                            s.apply(Mutation::SetStr {
                                key: &keys[i],
                                value: &value(i),
                                ttl: ttl(i),
                            });
                        }
                    }
                    missing -= gone.min(missing);
                    if missing > 0 {
                        pos = (pos + 1) % SLOT_COUNT;
                    }
                }
            }
            took
        })
    });
    assert_eq!(s.len(), N);
}

fn evict(c: &mut Criterion) {
    let (mut s, keys) = populated(|_| Ttl::Clear);
    let mut rng = fastrand::Rng::with_seed(2);
    for k in &keys {
        s.get(k, NOW).expect("present").access = lru_clock(NOW - rng.u64(..3_600_000));
    }
    let val = value(9);
    let mut next = 0;
    c.bench_function("evict/allkeys_lru", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let evicted = s.evict_one(EvictPolicy::AllKeysLru, 5, NOW);
                took += start.elapsed();
                assert!(evicted);
                s.apply(Mutation::SetStr {
                    key: &key("new:", next),
                    value: &val,
                    ttl: Ttl::Clear,
                });
                next += 1;
            }
            took
        })
    });
    assert_eq!(s.len(), N);
}

criterion_group!(benches, strings, active_expire, evict);
criterion_main!(benches);
