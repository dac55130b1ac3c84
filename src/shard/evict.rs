//! maxmemory eviction: approximated LRU/LFU/TTL by sampling, with Valkey's eviction pool.
//!
//! Exact LRU would need a linked list through every key (16 bytes a key and a cache miss per
//! access). Valkey instead samples `maxmemory-samples` keys per eviction and keeps the best
//! candidates seen so far in a small pool, which approaches true LRU closely at 5–10 samples.
//! We do the same per shard: each core evicts from the keys it owns.

use super::{Entry, LRU_CLOCK_MAX, Mutation, Shard, lru_clock};

/// The eviction policies that evict (noeviction is decided before calling in here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictPolicy {
    AllKeysLru,
    VolatileLru,
    AllKeysLfu,
    VolatileLfu,
    AllKeysRandom,
    VolatileRandom,
    VolatileTtl,
}

impl EvictPolicy {
    /// Whether the policy evicts only keys with an expiry.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictPolicy::VolatileLru
                | EvictPolicy::VolatileLfu
                | EvictPolicy::VolatileRandom
                | EvictPolicy::VolatileTtl
        )
    }
}

const POOL_SIZE: usize = 16;
/// What an entry costs beyond its key and value bytes (table slot, header): for estimating
/// how much a set of victims frees.
const ENTRY_OVERHEAD: usize = 48;
pub(super) const LFU_INIT_VAL: u32 = 5;

/// The best eviction candidates seen so far, ascending by score (best last).
#[derive(Default)]
pub(super) struct Pool {
    items: Vec<(u64, Box<[u8]>)>,
}

impl Pool {
    pub(super) fn clear(&mut self) {
        self.items.clear();
    }

    fn offer(&mut self, score: u64, key: &[u8]) {
        if self.items.len() >= POOL_SIZE && score <= self.items[0].0 {
            return;
        }
        if self.items.iter().any(|(_, k)| &**k == key) {
            return;
        }
        let pos = self.items.partition_point(|(s, _)| *s < score);
        self.items.insert(pos, (score, key.into()));
        if self.items.len() > POOL_SIZE {
            self.items.remove(0);
        }
    }
}

/// Minutes since the epoch, 16 bits, as Valkey's LFU clock.
fn lfu_minutes(now_ms: u64) -> u32 {
    ((now_ms / 60_000) & 0xFFFF) as u32
}

/// LFU data for a new key: now, and the initial counter (so new keys are not evicted at once).
pub(super) fn lfu_fresh(now_ms: u64) -> u32 {
    (lfu_minutes(now_ms) << 8) | LFU_INIT_VAL
}

/// The LFU counter after decay: one step per `decay_minutes` since the last decrement.
pub fn lfu_decayed(access: u32, now_ms: u64, decay_minutes: u32) -> u32 {
    let last = access >> 8;
    let counter = access & 0xFF;
    let now = lfu_minutes(now_ms);
    let elapsed = if now >= last {
        now - last
    } else {
        65535 - last + now
    };
    // lfu-decay-time 0 means the counter never decays.
    let periods = elapsed.checked_div(decay_minutes).unwrap_or(0);
    counter.saturating_sub(periods)
}

/// An access under LFU: decay, then a logarithmic increment (the more hits a key has, the
/// less likely another hit raises the counter; `log_factor` sets the curve).
pub(super) fn lfu_touch(access: u32, now_ms: u64, log_factor: u32, decay_minutes: u32) -> u32 {
    let mut counter = lfu_decayed(access, now_ms, decay_minutes);
    if counter < 255 {
        let base = counter.saturating_sub(LFU_INIT_VAL) as f64;
        let p = 1.0 / (base * log_factor as f64 + 1.0);
        if fastrand::f64() < p {
            counter += 1;
        }
    }
    (lfu_minutes(now_ms) << 8) | counter
}

/// Milliseconds since the entry was last accessed, from its LRU clock (wrap-around aware).
pub fn idle_ms(access: u32, now_ms: u64) -> u64 {
    let clock = lru_clock(now_ms);
    let secs = if clock >= access {
        clock - access
    } else {
        clock + (LRU_CLOCK_MAX - access)
    };
    secs as u64 * 1000
}

impl Shard {
    /// Evicts one key under `policy`, sampling `samples` keys; returns false when there is
    /// nothing left that the policy may evict.
    pub fn evict_one(&mut self, policy: EvictPolicy, samples: usize, now: u64) -> bool {
        match self.next_victim(policy, samples, now, &|_| true) {
            Some(key) => {
                self.evict_key(&key);
                true
            }
            None => false,
        }
    }

    /// [`Shard::evict_one`] over every database: Valkey's pool samples all of them; here each
    /// eviction picks one database with a probability proportional to the keys `policy` may
    /// evict there (the others are tried when it has none after all).
    pub fn evict_one_any_db(&mut self, policy: EvictPolicy, samples: usize, now: u64) -> bool {
        if self.parked.is_empty() {
            return self.evict_one(policy, samples, now);
        }
        let volatile = policy.volatile_only();
        let dbs = self.used_dbs();
        let counts: Vec<usize> = dbs
            .iter()
            .map(|&d| match self.parked.get(&d) {
                Some(st) if volatile => st.volatile,
                Some(st) => st.keys,
                None if volatile => self.volatile,
                None => self.keys,
            })
            .collect();
        let total: usize = counts.iter().sum();
        if total == 0 {
            return false;
        }
        let mut pick = fastrand::usize(..total);
        let first = counts
            .iter()
            .position(|&n| {
                if pick < n {
                    true
                } else {
                    pick -= n;
                    false
                }
            })
            .unwrap_or(0);
        let was = self.db;
        let mut done = false;
        for i in 0..dbs.len() {
            let at = (first + i) % dbs.len();
            if counts[at] == 0 {
                continue;
            }
            self.select(dbs[at]);
            if self.evict_one(policy, samples, now) {
                done = true;
                break;
            }
        }
        self.select(was);
        done
    }

    /// Chooses keys to evict under `policy` without deleting them, among those `allowed`
    /// accepts, until their sizes add up to `bytes` or there are `max` of them. A cluster
    /// leader evicts this way: it proposes the deletes through its group's log (only keys
    /// of the groups it leads are allowed), and every replica applies them.
    pub fn pick_victims(
        &mut self,
        policy: EvictPolicy,
        samples: usize,
        now: u64,
        allowed: &dyn Fn(&[u8]) -> bool,
        bytes: u64,
        max: usize,
    ) -> Vec<Box<[u8]>> {
        let mut picked: ahash::AHashSet<Box<[u8]>> = ahash::AHashSet::new();
        let mut freed = 0u64;
        while freed < bytes && picked.len() < max {
            let Some(key) =
                self.next_victim(policy, samples, now, &|k| allowed(k) && !picked.contains(k))
            else {
                break;
            };
            freed += self.peek(&key, 0).map_or(0, |e| {
                (e.key().len() + e.heap_size() + ENTRY_OVERHEAD) as u64
            });
            picked.insert(key);
        }
        picked.into_iter().collect()
    }

    /// The next key `policy` would evict among those `allowed` accepts (None when sampling
    /// finds none).
    fn next_victim(
        &mut self,
        policy: EvictPolicy,
        samples: usize,
        now: u64,
        allowed: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Box<[u8]>> {
        let volatile_only = policy.volatile_only();
        if matches!(
            policy,
            EvictPolicy::AllKeysRandom | EvictPolicy::VolatileRandom
        ) {
            for _ in 0..samples.max(1) * 4 {
                let (slot, index) = self.sample_position(volatile_only)?;
                let entry = self.slots[slot]
                    .table
                    .get_bucket(index)
                    .expect("sampled a full bucket");
                if (volatile_only && entry.expire_at().is_none()) || !allowed(entry.key()) {
                    continue;
                }
                return Some(entry.key().into());
            }
            return None;
        }
        loop {
            // Refill the pool with fresh samples.
            let mut sampled = 0;
            for _ in 0..samples.max(1) * 4 {
                if sampled >= samples.max(1) {
                    break;
                }
                let Some((slot, index)) = self.sample_position(volatile_only) else {
                    break;
                };
                let entry = self.slots[slot]
                    .table
                    .get_bucket(index)
                    .expect("sampled a full bucket");
                if (volatile_only && entry.expire_at().is_none()) || !allowed(entry.key()) {
                    continue;
                }
                sampled += 1;
                let score = self.evict_score(policy, entry, now);
                let key: Box<[u8]> = entry.key().into();
                self.evict_pool.offer(score, &key);
            }
            // The best candidate that still exists (and is still eligible).
            while let Some((_, key)) = self.evict_pool.items.pop() {
                let eligible = allowed(&key)
                    && self
                        .peek(&key, 0)
                        .is_some_and(|e| !volatile_only || e.expire_at().is_some());
                if eligible {
                    return Some(key);
                }
            }
            if sampled == 0 {
                return None;
            }
        }
    }

    /// Deletes `key` as an eviction the leader decided (applied from the log); false if it
    /// no longer exists.
    pub fn evict_decided(&mut self, key: &[u8]) -> bool {
        if self.peek(key, 0).is_none() {
            return false;
        }
        self.evict_key(key);
        true
    }

    /// A random entry's position for eviction sampling. With `volatile_only` it is always a
    /// key with an expiry (if the shard has one): the slot is chosen among slots holding such
    /// keys, then searched for one, so persistent keys sharing the slot cannot make sampling
    /// fail while evictable keys exist.
    fn sample_position(&self, volatile_only: bool) -> Option<(usize, usize)> {
        let (slot, index) = self.random_position(volatile_only)?;
        if !volatile_only {
            return Some((slot, index));
        }
        let table = &self.slots[slot].table;
        let volatile_at = |i: usize| table.get_bucket(i).is_some_and(|e| e.expire_at().is_some());
        if volatile_at(index) {
            return Some((slot, index));
        }
        let buckets = table.num_buckets();
        for _ in 0..16 {
            let i = fastrand::usize(..buckets);
            if volatile_at(i) {
                return Some((slot, i));
            }
        }
        let start = fastrand::usize(..buckets);
        (0..buckets)
            .map(|i| (start + i) % buckets)
            .find(|&i| volatile_at(i))
            .map(|i| (slot, i))
    }

    fn evict_key(&mut self, key: &[u8]) {
        self.apply(Mutation::Evicted { key });
    }

    /// Higher is a better eviction candidate.
    fn evict_score(&self, policy: EvictPolicy, entry: &Entry, now: u64) -> u64 {
        match policy {
            EvictPolicy::AllKeysLru | EvictPolicy::VolatileLru => match self.access_mode {
                super::AccessMode::Lru => idle_ms(entry.access, now),
                super::AccessMode::Lfu { .. } => 0,
            },
            EvictPolicy::AllKeysLfu | EvictPolicy::VolatileLfu => match self.access_mode {
                super::AccessMode::Lfu { decay_minutes, .. } => {
                    255 - lfu_decayed(entry.access, now, decay_minutes) as u64
                }
                super::AccessMode::Lru => 0,
            },
            EvictPolicy::VolatileTtl => u64::MAX - entry.expire_at().unwrap_or(u64::MAX),
            EvictPolicy::AllKeysRandom | EvictPolicy::VolatileRandom => 0,
        }
    }
}
