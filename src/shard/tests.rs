//! Unit tests of the shard: a property test that runs random streams of mutation records and
//! reads against a simple model, then targeted tests of the eviction pool, LFU counters, SCAN
//! cursors and the expiry/eviction counters.
//!
//! The model works at the level of records, as `apply` does: a record acts on whatever is
//! stored, expired or not (lazy expiry before a write is the command layer's job). Expired
//! keys leave only through the paths that delete them — `get`, `active_expire_step`,
//! `random_entry` — or through eviction, and the model follows those by reading back which
//! keys are still stored.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// A shard whose tables hash keys the same way in every run, so that tests which sample
/// keys (eviction) see the same layout each time, with `fastrand::seed` fixing the samples.
fn shard() -> Shard {
    let mut s = Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()));
    s.hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    s
}

/// A Unix time in ms on a minute boundary (so LFU minute arithmetic is easy to follow).
const T0: u64 = 28_333_333 * 60_000;

fn set(s: &mut Shard, key: &[u8], ttl: Ttl) {
    s.apply(Mutation::SetStr {
        key,
        value: b"v",
        ttl,
    });
}

#[test]
fn set_get_delete() {
    let mut s = shard();
    s.apply(Mutation::SetStr {
        key: b"k",
        value: b"v",
        ttl: Ttl::Clear,
    });
    assert_eq!(s.len(), 1);
    assert!(s.get(b"k", 0).unwrap().value() == ValueRef::Str(b"v"));
    assert!(s.apply(Mutation::Del { key: b"k" }));
    assert!(s.get(b"k", 0).is_none());
    assert_eq!(s.len(), 0);
}

#[test]
fn lazy_and_active_expiry() {
    let mut s = shard();
    for i in 0..1000 {
        let k = format!("k{i}");
        s.apply(Mutation::SetStr {
            key: k.as_bytes(),
            value: b"v",
            ttl: Ttl::At(100),
        });
    }
    assert_eq!(s.volatile_len(), 1000);
    assert!(s.get(b"k1", 50).is_some());
    assert!(s.get(b"k1", 101).is_none());
    let mut total = 1;
    loop {
        let step = s.active_expire_step(101, 200);
        total += step.expired;
        if step.checked == 0 {
            break;
        }
    }
    assert_eq!(total, 1000);
    assert_eq!(s.len(), 0);
    assert_eq!(s.stats.expired_keys.get(), 1000);
}

// ---------------------------------------------------------------------------------------------
// The model-based property test.

/// Keys: three in slots of their own, eight sharing one slot through a hash tag (so a slot
/// holds several keys, persistent and volatile mixed, as it does at scale).
const KEYS: [&[u8]; 11] = [
    b"a", b"b", b"c", b"{t}1", b"{t}2", b"{t}3", b"{t}4", b"{t}5", b"{t}6", b"{t}7", b"{t}8",
];

/// Small enough that random HSETs convert hashes to tables both by count and by length.
const LIMITS: HashLimits = HashLimits {
    max_listpack_entries: 4,
    max_listpack_value: 8,
};

const POLICIES: [EvictPolicy; 7] = [
    EvictPolicy::AllKeysLru,
    EvictPolicy::VolatileLru,
    EvictPolicy::AllKeysLfu,
    EvictPolicy::VolatileLfu,
    EvictPolicy::AllKeysRandom,
    EvictPolicy::VolatileRandom,
    EvictPolicy::VolatileTtl,
];

#[derive(Debug, Clone, PartialEq)]
enum ModelValue {
    /// A string; `int` is whether the shard should hold it as an integer (OBJECT ENCODING).
    Str { bytes: Vec<u8>, int: bool },
    /// A hash; `table` is whether it should be a hash table rather than a listpack.
    Hash {
        fields: BTreeMap<Vec<u8>, Vec<u8>>,
        table: bool,
    },
}

type Stored = (ModelValue, Option<u64>);

/// The model's own rule for "canonical i64", written independently of `util::parse_i64`.
fn canonical_int(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .is_some_and(|v| v.to_string().as_bytes() == bytes)
}

fn model_of(value: &Value) -> ModelValue {
    match value {
        Value::Str(s) => ModelValue::Str {
            bytes: s.to_vec(),
            int: false,
        },
        Value::Int(i) => ModelValue::Str {
            bytes: i.to_string().into_bytes(),
            int: true,
        },
        Value::Hash(h) => {
            let fields: BTreeMap<_, _> = h.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
            assert_eq!(fields.len(), h.len(), "a hash holds a field twice");
            ModelValue::Hash {
                fields,
                table: h.encoding() == "hashtable",
            }
        }
        other => panic!("the string/hash model holds no {:?}", other.kind()),
    }
}

/// What the shard stores under `key`, expired or not, read without touching anything.
fn raw(s: &Shard, key: &[u8]) -> Option<Stored> {
    let mut found = None;
    let mut copies = 0;
    let next = s.scan_slot(key_slot(key) as usize, 0, usize::MAX, |e| {
        if e.key() == key {
            copies += 1;
            found = Some((model_of(&e.to_value()), e.expire_at()));
        }
    });
    assert_eq!(next, 0, "an unbounded scan step ends the walk");
    assert!(copies <= 1, "{key:?} stored {copies} times");
    found
}

#[derive(Debug, Clone)]
enum TtlArg {
    Keep,
    Clear,
    /// Relative to the test clock (negative: already past).
    At(i64),
    /// The raw value 0, which the entry layout cannot tell from "no expiry".
    AtZero,
}

#[derive(Debug, Clone)]
enum RestoreValue {
    Str(Vec<u8>),
    Int(i64),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
}

#[derive(Debug, Clone)]
enum Op {
    SetStr(usize, Vec<u8>, TtlArg),
    SetInt(usize, i64, TtlArg),
    Append(usize, Vec<u8>),
    SetRange(usize, usize, Vec<u8>),
    HSet(usize, Vec<(Vec<u8>, Vec<u8>)>),
    HDel(usize, Vec<Vec<u8>>),
    Expire(usize, Option<i64>),
    ExpireZero(usize),
    Del(usize),
    Rename(usize, usize),
    Restore(usize, RestoreValue, Option<i64>),
    FlushAll,
    Advance(u64),
    Get(usize),
    GetRead(usize),
    Peek(usize),
    Scan(usize),
    ActiveExpire(usize),
    RandomEntry,
    Evict(usize, usize),
}

fn key_index() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

/// Short strings over digits and '-', so canonical and non-canonical integers both occur.
fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"0123456789-x".to_vec()), 0..6)
}

fn field() -> impl Strategy<Value = Vec<u8>> {
    (0..6u8).prop_map(|i| format!("f{i}").into_bytes())
}

/// Hash values up to 10 bytes: some exceed the listpack value limit (8).
fn hash_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"abv".to_vec()), 0..11)
}

fn pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    prop::collection::vec((field(), hash_value()), 1..7)
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![8 => -100i64..100, 1 => Just(i64::MIN), 1 => Just(i64::MAX)]
}

fn ttl() -> impl Strategy<Value = TtlArg> {
    prop_oneof![
        3 => Just(TtlArg::Keep),
        3 => Just(TtlArg::Clear),
        5 => (-30i64..80).prop_map(TtlArg::At),
        1 => Just(TtlArg::AtZero),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key_index(), small_bytes(), ttl()).prop_map(|(k, v, t)| Op::SetStr(k, v, t)),
        3 => (key_index(), int(), ttl()).prop_map(|(k, v, t)| Op::SetInt(k, v, t)),
        2 => (key_index(), small_bytes()).prop_map(|(k, v)| Op::Append(k, v)),
        2 => (key_index(), 0..12usize, small_bytes()).prop_map(|(k, o, d)| Op::SetRange(k, o, d)),
        5 => (key_index(), pairs()).prop_map(|(k, p)| Op::HSet(k, p)),
        // A hash past the lazy-freeing threshold, so deleting or replacing it may free it in
        // the background.
        1 => (key_index(), 65..80usize).prop_map(|(k, n)| Op::HSet(
            k,
            (0..n).map(|i| (format!("f{i}").into_bytes(), b"v".to_vec())).collect(),
        )),
        2 => (key_index(), prop::collection::vec(field(), 1..4)).prop_map(|(k, f)| Op::HDel(k, f)),
        4 => (key_index(), prop::option::weighted(0.8, -30i64..80))
            .prop_map(|(k, at)| Op::Expire(k, at)),
        1 => key_index().prop_map(Op::ExpireZero),
        2 => key_index().prop_map(Op::Del),
        2 => (key_index(), key_index()).prop_map(|(f, t)| Op::Rename(f, t)),
        2 => (
            key_index(),
            prop_oneof![
                small_bytes().prop_map(RestoreValue::Str),
                int().prop_map(RestoreValue::Int),
                pairs().prop_map(RestoreValue::Hash),
            ],
            prop::option::of(-30i64..80),
        )
            .prop_map(|(k, v, at)| Op::Restore(k, v, at)),
        1 => Just(Op::FlushAll),
        4 => (0..40u64).prop_map(Op::Advance),
        4 => key_index().prop_map(Op::Get),
        2 => key_index().prop_map(Op::GetRead),
        2 => key_index().prop_map(Op::Peek),
        1 => (1..6usize).prop_map(Op::Scan),
        2 => (1..5usize).prop_map(Op::ActiveExpire),
        2 => Just(Op::RandomEntry),
        3 => (0..POLICIES.len(), 1..6usize).prop_map(|(p, n)| Op::Evict(p, n)),
    ]
}

struct Harness {
    s: Shard,
    m: BTreeMap<Vec<u8>, Stored>,
    now: u64,
    lfu: bool,
    expired: u64,
    evicted: u64,
    hits: u64,
    misses: u64,
}

impl Harness {
    fn new(lfu: bool, lazyfree: LazyFree) -> Harness {
        let mut s = shard();
        s.limits.hash = LIMITS;
        // Freeing in the background or here must not change what the shard holds.
        s.lazyfree = lazyfree;
        if lfu {
            s.access_mode = AccessMode::Lfu {
                log_factor: 10,
                decay_minutes: 1,
            };
        }
        Harness {
            s,
            m: BTreeMap::new(),
            now: T0,
            lfu,
            expired: 0,
            evicted: 0,
            hits: 0,
            misses: 0,
        }
    }

    fn at(&self, delta: i64) -> u64 {
        self.now
            .checked_add_signed(delta)
            .expect("the clock starts far from 0")
    }

    fn ttl(&self, t: &TtlArg) -> Ttl {
        match *t {
            TtlArg::Keep => Ttl::Keep,
            TtlArg::Clear => Ttl::Clear,
            TtlArg::At(d) => Ttl::At(self.at(d)),
            TtlArg::AtZero => Ttl::At(0),
        }
    }

    fn is_expired(&self, stored: &Stored) -> bool {
        stored.1.is_some_and(|at| self.now > at)
    }

    fn live(&self, key: &[u8]) -> Option<Stored> {
        self.m.get(key).filter(|v| !self.is_expired(v)).cloned()
    }

    /// The model of `put`: replace the value, treating the TTL as `ttl` says.
    fn model_put(&mut self, key: &[u8], value: ModelValue, ttl: Ttl) {
        let old = self.m.get(key).map(|(_, at)| *at);
        let at = match (old, ttl) {
            (Some(old), Ttl::Keep) => old,
            (None, Ttl::Keep) | (_, Ttl::Clear) => None,
            // The entry stores 0 for "no expiry": an expiry of 0 is no expiry.
            (_, Ttl::At(at)) => (at != 0).then_some(at),
        };
        self.m.insert(key.to_vec(), (value, at));
    }

    /// The model of APPEND/SETRANGE: edit the string form (creating an empty, persistent
    /// string), which is then raw-encoded; a hash is left alone.
    fn model_edit_string(&mut self, key: &[u8], edit: impl FnOnce(&mut Vec<u8>)) {
        let (value, _) = self.m.entry(key.to_vec()).or_insert((
            ModelValue::Str {
                bytes: Vec::new(),
                int: false,
            },
            None,
        ));
        if let ModelValue::Str { bytes, int } = value {
            edit(bytes);
            *int = false;
        }
    }

    /// Drops from the model the keys the shard no longer stores; returns them.
    fn reconcile(&mut self) -> Vec<Vec<u8>> {
        let gone: Vec<Vec<u8>> = self
            .m
            .keys()
            .filter(|k| raw(&self.s, k).is_none())
            .cloned()
            .collect();
        for k in &gone {
            self.m.remove(k);
        }
        gone
    }

    /// Removed keys must all have been expired (nothing else may go on these paths).
    fn reconcile_expired(&mut self, before: &BTreeMap<Vec<u8>, Stored>) -> Vec<Vec<u8>> {
        let gone = self.reconcile();
        for k in &gone {
            assert!(
                self.is_expired(&before[k]),
                "deleted {k:?}, which had not expired: {:?}",
                before[k]
            );
        }
        self.expired += gone.len() as u64;
        gone
    }

    fn run(&mut self, op: &Op) {
        self.s.clock_ms = self.now;
        match op {
            Op::SetStr(k, value, t) => {
                let (key, ttl) = (KEYS[*k], self.ttl(t));
                assert!(self.s.apply(Mutation::SetStr { key, value, ttl }));
                let int = canonical_int(value);
                let bytes = value.clone();
                self.model_put(key, ModelValue::Str { bytes, int }, ttl);
            }
            Op::SetInt(k, value, t) => {
                let (key, ttl) = (KEYS[*k], self.ttl(t));
                assert!(self.s.apply(Mutation::SetInt {
                    key,
                    value: *value,
                    ttl
                }));
                let bytes = value.to_string().into_bytes();
                self.model_put(key, ModelValue::Str { bytes, int: true }, ttl);
            }
            Op::Append(k, tail) => {
                let key = KEYS[*k];
                assert!(self.s.apply(Mutation::Append { key, tail }));
                self.model_edit_string(key, |b| b.extend_from_slice(tail));
            }
            Op::SetRange(k, offset, data) => {
                let key = KEYS[*k];
                let offset = *offset;
                assert!(self.s.apply(Mutation::SetRange { key, offset, data }));
                self.model_edit_string(key, |b| {
                    if b.len() < offset + data.len() {
                        b.resize(offset + data.len(), 0);
                    }
                    b[offset..offset + data.len()].copy_from_slice(data);
                });
            }
            Op::HSet(k, pairs) => {
                let key = KEYS[*k];
                let flat: Vec<&[u8]> = pairs.iter().flat_map(|(f, v)| [&f[..], &v[..]]).collect();
                assert!(self.s.apply(Mutation::HSet { key, pairs: &flat }));
                let (value, _) = self.m.entry(key.to_vec()).or_insert((
                    ModelValue::Hash {
                        fields: BTreeMap::new(),
                        table: false,
                    },
                    None,
                ));
                if let ModelValue::Hash { fields, table } = value {
                    for (f, v) in pairs {
                        fields.insert(f.clone(), v.clone());
                    }
                    // Valkey's rule: too many pairs named, any argument too long, or too many
                    // fields afterwards, and the listpack becomes a table for good.
                    *table |= pairs.len() > LIMITS.max_listpack_entries
                        || flat.iter().any(|a| a.len() > LIMITS.max_listpack_value)
                        || fields.len() > LIMITS.max_listpack_entries;
                }
            }
            Op::HDel(k, names) => {
                let key = KEYS[*k];
                let fields: Vec<&[u8]> = names.iter().map(|f| &f[..]).collect();
                let acted = self.s.apply(Mutation::HDel {
                    key,
                    fields: &fields,
                });
                let mut emptied = false;
                match self.m.get_mut(key) {
                    None => assert!(!acted, "HDEL of a missing key acted"),
                    Some((value, _)) => {
                        assert!(acted);
                        if let ModelValue::Hash { fields, .. } = value {
                            for f in names {
                                fields.remove(f);
                            }
                            emptied = fields.is_empty();
                        }
                    }
                }
                if emptied {
                    self.m.remove(key);
                }
            }
            Op::Expire(k, delta) => {
                let key = KEYS[*k];
                let at = delta.map(|d| self.at(d));
                let acted = self.s.apply(Mutation::Expire { key, at });
                assert_eq!(acted, self.m.contains_key(key));
                if let Some(stored) = self.m.get_mut(key) {
                    stored.1 = at;
                }
            }
            Op::ExpireZero(k) => {
                let key = KEYS[*k];
                let acted = self.s.apply(Mutation::Expire { key, at: Some(0) });
                assert_eq!(acted, self.m.contains_key(key));
                if let Some(stored) = self.m.get_mut(key) {
                    stored.1 = None;
                }
            }
            Op::Del(k) => {
                let key = KEYS[*k];
                let acted = self.s.apply(Mutation::Del { key });
                assert_eq!(acted, self.m.remove(key).is_some());
            }
            Op::Rename(from, to) => {
                let (from, to) = (KEYS[*from], KEYS[*to]);
                let acted = self.s.apply(Mutation::Rename { from, to });
                match self.m.remove(from) {
                    Some(stored) => {
                        assert!(acted);
                        self.m.insert(to.to_vec(), stored);
                    }
                    None => assert!(!acted, "RENAME of a missing key acted"),
                }
            }
            Op::Restore(k, value, delta) => {
                let key = KEYS[*k];
                let value = match value {
                    RestoreValue::Str(b) => Value::Str(b.clone().into_boxed_slice()),
                    RestoreValue::Int(i) => Value::Int(*i),
                    RestoreValue::Hash(pairs) => {
                        let mut h = HashObj::new();
                        for (f, v) in pairs {
                            h.set(f, v, LIMITS);
                        }
                        Value::Hash(Box::new(h))
                    }
                };
                let expire_at = delta.map(|d| self.at(d));
                let model = model_of(&value);
                assert!(self.s.apply(Mutation::Restore {
                    key,
                    value,
                    expire_at
                }));
                self.model_put(key, model, expire_at.map_or(Ttl::Clear, Ttl::At));
            }
            Op::FlushAll => {
                assert!(self.s.apply(Mutation::FlushAll));
                self.m.clear();
            }
            Op::Advance(ms) => self.now += ms,
            Op::Get(k) | Op::GetRead(k) => {
                let key = KEYS[*k];
                let stored = self.m.get(key).cloned();
                let live = self.live(key);
                let now = self.now;
                let got = if matches!(op, Op::GetRead(_)) {
                    self.s.get_read(key, now)
                } else {
                    self.s.get(key, now)
                };
                let got = got.map(|e| ((model_of(&e.to_value()), e.expire_at()), e.access));
                assert_eq!(got.as_ref().map(|g| &g.0), live.as_ref(), "get {key:?}");
                if let Some((_, access)) = got {
                    if self.lfu {
                        assert_eq!(access >> 8, ((now / 60_000) & 0xFFFF) as u32);
                    } else {
                        assert_eq!(access, lru_clock(now), "a read refreshes the LRU clock");
                    }
                }
                if stored.is_some() && live.is_none() {
                    // Lazy expiry: the read deleted it.
                    self.m.remove(key);
                    self.expired += 1;
                }
                if matches!(op, Op::GetRead(_)) {
                    if live.is_some() {
                        self.hits += 1;
                    } else {
                        self.misses += 1;
                    }
                }
            }
            Op::Peek(k) => {
                // Covered for every key by `check`; here the point is that it deletes nothing.
                let key = KEYS[*k];
                let got = self.s.peek(key, self.now);
                assert_eq!(
                    got.map(|e| (model_of(&e.to_value()), e.expire_at())),
                    self.live(key)
                );
            }
            Op::Scan(count) => {
                let mut seen = HashSet::new();
                for slot in 0..SLOT_COUNT {
                    let mut cursor = 0;
                    for step in 0.. {
                        assert!(step < 1000, "SCAN of slot {slot} does not end");
                        cursor = self.s.scan_slot(slot, cursor, *count, |e| {
                            seen.insert(e.key().to_vec());
                        });
                        if cursor == 0 {
                            break;
                        }
                    }
                }
                for k in self.m.keys() {
                    if self.live(k).is_some() {
                        assert!(seen.contains(k), "SCAN missed {k:?}");
                    }
                }
                for k in &seen {
                    assert!(self.m.contains_key(k), "SCAN returned unknown {k:?}");
                }
            }
            Op::ActiveExpire(max_checked) => {
                let before = self.m.clone();
                for step in 0.. {
                    assert!(
                        step < 1000,
                        "the expiry cycle never gets to every expired key"
                    );
                    let done = self.s.active_expire_step(self.now, *max_checked);
                    assert!(done.checked <= *max_checked, "{done:?}");
                    let gone = self.reconcile_expired(&before);
                    assert_eq!(gone.len(), done.expired, "{done:?}");
                    if self.m.values().all(|v| !self.is_expired(v)) {
                        break;
                    }
                }
            }
            Op::RandomEntry => {
                let before = self.m.clone();
                let any_live = self.m.values().any(|v| !self.is_expired(v));
                let now = self.now;
                let picked = self.s.random_entry(now).map(|e| e.key().to_vec());
                self.reconcile_expired(&before);
                match picked {
                    Some(k) => assert!(self.live(&k).is_some(), "RANDOMKEY gave {k:?}"),
                    // Fewer keys than its 100 tries: it cannot give up while one is live.
                    None => assert!(!any_live, "RANDOMKEY found nothing in {:?}", self.m),
                }
            }
            Op::Evict(p, samples) => {
                let policy = POLICIES[*p];
                let volatile_only = matches!(
                    policy,
                    EvictPolicy::VolatileLru
                        | EvictPolicy::VolatileLfu
                        | EvictPolicy::VolatileRandom
                        | EvictPolicy::VolatileTtl
                );
                let eligible: BTreeSet<Vec<u8>> = self
                    .m
                    .iter()
                    .filter(|(_, (_, at))| !volatile_only || at.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                let evicted = self.s.evict_one(policy, *samples, self.now);
                let gone = self.reconcile();
                if evicted {
                    assert_eq!(gone.len(), 1, "{policy:?} evicted {gone:?}");
                    assert!(eligible.contains(&gone[0]), "{policy:?} evicted {gone:?}");
                    self.evicted += 1;
                } else {
                    assert!(gone.is_empty(), "{policy:?} said no but deleted {gone:?}");
                    assert!(
                        eligible.is_empty(),
                        "{policy:?} gave up while {eligible:?} could be evicted"
                    );
                }
            }
        }
        self.check();
    }

    /// Everything the shard reports agrees with the model.
    fn check(&self) {
        let s = &self.s;
        let volatile = self.m.values().filter(|(_, at)| at.is_some()).count();
        assert_eq!(s.len(), self.m.len(), "len");
        assert_eq!(s.is_empty(), self.m.is_empty());
        assert_eq!(s.volatile_len(), volatile, "volatile_len");
        assert_eq!(s.stats.keys.get(), self.m.len() as u64);
        assert_eq!(s.stats.expires.get(), volatile as u64);
        assert_eq!(s.stats.expired_keys.get(), self.expired, "expired_keys");
        assert_eq!(s.stats.evicted_keys.get(), self.evicted, "evicted_keys");
        assert_eq!(s.stats.keyspace_hits.get(), self.hits);
        assert_eq!(s.stats.keyspace_misses.get(), self.misses);
        let mut slots = BTreeSet::new();
        for key in KEYS {
            assert_eq!(raw(s, key), self.m.get(key).cloned(), "stored {key:?}");
            let peeked = s.peek(key, self.now);
            assert_eq!(
                peeked.map(|e| (model_of(&e.to_value()), e.expire_at())),
                self.live(key),
                "peek {key:?}"
            );
            slots.insert(key_slot(key) as usize);
        }
        for slot in slots {
            let in_model = self
                .m
                .keys()
                .filter(|k| key_slot(k) as usize == slot)
                .count();
            assert_eq!(s.count_in_slot(slot), in_model, "count_in_slot({slot})");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        // Keep the tree clean: a failure prints its minimal case, which belongs in a test.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn shard_matches_model(
        lfu in any::<bool>(),
        lazy in any::<[bool; 5]>(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        // Sampling (eviction, RANDOMKEY, LFU increments) draws from fastrand: seed it so a
        // failing case replays.
        fastrand::seed(seed);
        let lazyfree = LazyFree {
            eviction: lazy[0],
            expire: lazy[1],
            server_del: lazy[2],
            user_del: lazy[3],
            user_flush: lazy[4],
        };
        let mut h = Harness::new(lfu, lazyfree);
        for op in &ops {
            h.run(op);
        }
        // Finally every stored key that expired must still be removable by the cycle.
        h.run(&Op::ActiveExpire(3));
        h.run(&Op::Scan(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Eviction choice.

fn key(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}{i}").into_bytes()
}

/// Gives `key` the LRU clock it had `idle_ms` before `now`.
fn make_idle(s: &mut Shard, key: &[u8], now: u64, idle_ms: u64) {
    s.get(key, now).expect("present").access = lru_clock(now - idle_ms);
}

#[test]
fn lru_evicts_the_idlest_keys_first_when_everything_is_sampled() {
    fastrand::seed(1);
    let mut s = shard();
    s.clock_ms = T0;
    for i in 0..5 {
        set(&mut s, &key("k", i), Ttl::Clear);
        make_idle(&mut s, &key("k", i), T0, (i as u64 + 1) * 10_000);
    }
    // 64 samples over 5 keys see them all; the pool then hands them out idlest first.
    for i in (0..5).rev() {
        assert!(s.evict_one(EvictPolicy::AllKeysLru, 64, T0));
        assert!(s.peek(&key("k", i), T0).is_none(), "k{i} should go next");
        assert_eq!(s.len(), i);
    }
    assert!(!s.evict_one(EvictPolicy::AllKeysLru, 64, T0));
    assert_eq!(s.stats.evicted_keys.get(), 5);
}

#[test]
fn picked_victims_are_the_idlest_allowed_keys_and_stay_until_evicted() {
    fastrand::seed(3);
    let mut s = shard();
    s.clock_ms = T0;
    for i in 0..10 {
        for prefix in ["a", "b"] {
            set(&mut s, &key(prefix, i), Ttl::Clear);
            make_idle(&mut s, &key(prefix, i), T0, (i as u64 + 1) * 10_000);
        }
    }
    let only_a = |k: &[u8]| k.starts_with(b"a");
    // Everything sampled: the three idlest "a" keys, whatever "b" keys are idler.
    let mut picked = s.pick_victims(EvictPolicy::AllKeysLru, 64, T0, &only_a, u64::MAX, 3);
    picked.sort();
    assert_eq!(
        picked,
        vec![key("a", 7).into(), key("a", 8).into(), key("a", 9).into()]
    );
    assert_eq!(s.len(), 20, "picking deletes nothing");
    assert_eq!(s.stats.evicted_keys.get(), 0);
    // A byte budget stops the picking once the victims' sizes cover it.
    let one = s.pick_victims(EvictPolicy::AllKeysLru, 64, T0, &only_a, 1, 100);
    assert_eq!(one.len(), 1);
    // Applied from the log: deleted and counted as evictions; a key already gone is not.
    for k in &picked {
        assert!(s.evict_decided(k));
    }
    assert!(!s.evict_decided(&key("a", 9)));
    assert_eq!((s.len(), s.stats.evicted_keys.get()), (17, 3));
    // Nothing allowed: nothing picked.
    assert!(
        s.pick_victims(EvictPolicy::AllKeysLru, 64, T0, &|_| false, u64::MAX, 10)
            .is_empty()
    );
}

#[test]
fn lru_sampling_with_the_pool_approximates_lru() {
    fastrand::seed(2);
    let mut s = shard();
    let n = 2000;
    // Key i is idle for i seconds: its rank by idleness is i / n.
    for i in 0..n {
        set(&mut s, &key("k", i), Ttl::Clear);
        make_idle(&mut s, &key("k", i), T0, i as u64 * 1000);
    }
    let evictions = 100;
    let mut rank_sum = 0.0;
    for _ in 0..evictions {
        assert!(s.evict_one(EvictPolicy::AllKeysLru, 5, T0));
        let gone = (0..n)
            .find(|&i| s.peek(&key("k", i), T0).is_none())
            .expect("one key went");
        rank_sum += gone as f64 / n as f64;
        // Put it back just accessed, so the population stays the same and it ranks last.
        set(&mut s, &key("k", gone), Ttl::Clear);
        make_idle(&mut s, &key("k", gone), T0, 0);
    }
    // The best of 5 random samples has an expected rank of 5/6; the pool only improves it.
    let mean = rank_sum / evictions as f64;
    assert!(mean > 0.75, "mean idleness rank of evicted keys {mean:.3}");
}

#[test]
fn volatile_ttl_evicts_the_soonest_expiry_and_never_a_persistent_key() {
    fastrand::seed(3);
    let mut s = shard();
    // One slot (hash tag) holds persistent keys idler than every volatile key.
    for i in 0..5 {
        set(&mut s, &key("{v}p", i), Ttl::Clear);
        make_idle(&mut s, &key("{v}p", i), T0, 1_000_000);
        set(&mut s, &key("{v}e", i), Ttl::At(T0 + 1000 * (5 - i as u64)));
    }
    for i in (0..5).rev() {
        assert!(s.evict_one(EvictPolicy::VolatileTtl, 64, T0));
        assert!(
            s.peek(&key("{v}e", i), T0).is_none(),
            "e{i} expires soonest"
        );
    }
    assert!(!s.evict_one(EvictPolicy::VolatileTtl, 64, T0));
    assert_eq!((s.len(), s.volatile_len()), (5, 0));
}

#[test]
fn volatile_policies_find_a_lone_volatile_key_among_persistent_ones() {
    // At scale a slot holds many keys of which few may have a TTL: a volatile policy must
    // still find them (a false return makes the server answer -OOM with keys to evict).
    for policy in [
        EvictPolicy::VolatileLru,
        EvictPolicy::VolatileLfu,
        EvictPolicy::VolatileRandom,
        EvictPolicy::VolatileTtl,
    ] {
        fastrand::seed(4);
        let mut s = shard();
        for i in 0..200 {
            set(&mut s, &key("{same}p", i), Ttl::Clear);
        }
        for round in 0..20 {
            set(&mut s, b"{same}volatile", Ttl::At(T0 + 1000));
            assert!(
                s.evict_one(policy, 5, T0),
                "{policy:?} round {round}: the volatile key was not found"
            );
            assert!(s.peek(b"{same}volatile", T0).is_none());
            assert_eq!(s.len(), 200);
        }
        assert!(!s.evict_one(policy, 5, T0));
    }
}

#[test]
fn lfu_evicts_the_least_frequently_used_after_decay() {
    fastrand::seed(5);
    let mut s = shard();
    s.access_mode = AccessMode::Lfu {
        log_factor: 10,
        decay_minutes: 1,
    };
    let minute = ((T0 / 60_000) & 0xFFFF) as u32;
    // (key, minutes since last decrement, counter): decayed counters are 20, 10, 1, 200.
    let keys: [(&[u8], u32, u32); 4] = [
        (b"recent", 0, 20),
        (b"was-hot", 90, 100),
        (b"cold", 0, 1),
        (b"hot", 0, 200),
    ];
    for (k, ago, counter) in keys {
        set(&mut s, k, Ttl::Clear);
        s.get(k, T0).expect("present").access = ((minute - ago) << 8) | counter;
    }
    for expected in [&b"cold"[..], b"was-hot", b"recent", b"hot"] {
        assert!(s.evict_one(EvictPolicy::AllKeysLfu, 64, T0));
        assert!(
            s.peek(expected, T0).is_none(),
            "{expected:?} should go next"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// LFU counters.

#[test]
fn lfu_decay_is_one_step_per_period() {
    let minute = (T0 / 60_000) & 0xFFFF;
    let access = ((minute as u32) << 8) | 100;
    assert_eq!(lfu_decayed(access, T0, 1), 100);
    assert_eq!(
        lfu_decayed(access, T0 + 59_999, 1),
        100,
        "not a whole minute yet"
    );
    assert_eq!(lfu_decayed(access, T0 + 10 * 60_000, 1), 90);
    assert_eq!(lfu_decayed(access, T0 + 10 * 60_000, 5), 98);
    assert_eq!(
        lfu_decayed(access, T0 + 10 * 60_000, 0),
        100,
        "decay time 0: never"
    );
    assert_eq!(
        lfu_decayed(access, T0 + 200 * 60_000, 1),
        0,
        "saturates at 0"
    );
    // The 16-bit minute clock wraps: last decrement at 65533, now at minute 2 (of the next
    // lap). Valkey's LFUTimeElapsed counts 65535 - 65533 + 2 = 4 minutes.
    let now = (65536 * 400 + 2) * 60_000;
    assert_eq!(lfu_decayed((65533 << 8) | 100, now, 1), 96);
}

/// The counter of `key` after `hits` reads at `now` through the shard's touch path.
fn lfu_counter_after(log_factor: u32, hits: usize) -> u32 {
    let mut s = shard();
    s.access_mode = AccessMode::Lfu {
        log_factor,
        decay_minutes: 1,
    };
    s.clock_ms = T0;
    set(&mut s, b"k", Ttl::Clear);
    for _ in 0..hits {
        s.get(b"k", T0).expect("present");
    }
    lfu_decayed(s.peek(b"k", T0).expect("present").access, T0, 1)
}

#[test]
fn lfu_counter_grows_logarithmically() {
    fastrand::seed(6);
    // A new key starts at LFU_INIT_VAL, stamped with the current minute.
    let mut s = shard();
    s.access_mode = AccessMode::Lfu {
        log_factor: 10,
        decay_minutes: 1,
    };
    s.clock_ms = T0;
    set(&mut s, b"k", Ttl::Clear);
    let access = s.peek(b"k", T0).expect("present").access;
    assert_eq!(access & 0xFF, 5);
    assert_eq!(access >> 8, ((T0 / 60_000) & 0xFFFF) as u32);

    // From counter c, a hit increments with probability 1 / ((c - 5) * factor + 1), so
    // reaching 5 + b takes about 5b² hits at factor 10 (Valkey's table in valkey.conf:
    // 100 hits → 10, 1000 hits → 18, 100K hits → 142). One run varies by a few steps;
    // compare the mean of ten.
    let mean = |factor, hits| {
        (0..10)
            .map(|_| lfu_counter_after(factor, hits))
            .sum::<u32>() as f64
            / 10.0
    };
    let m100 = mean(10, 100);
    assert!((8.5..=11.5).contains(&m100), "100 hits: {m100}");
    let m1000 = mean(10, 1000);
    assert!((17.0..=22.5).contains(&m1000), "1000 hits: {m1000}");
    let m100k = mean(10, 100_000);
    assert!((135.0..=152.0).contains(&m100k), "100K hits: {m100k}");
    // Factor 0: every hit counts, and the counter saturates at 255.
    assert_eq!(lfu_counter_after(0, 100), 105);
    assert_eq!(lfu_counter_after(0, 1000), 255);
    // A larger factor grows slower.
    let m100f = mean(100, 1000);
    assert!(
        (8.5..=12.5).contains(&m100f),
        "factor 100, 1000 hits: {m100f}"
    );
}

#[test]
fn a_read_decays_the_lfu_counter_before_counting() {
    fastrand::seed(7);
    let mut s = shard();
    s.access_mode = AccessMode::Lfu {
        log_factor: 10,
        decay_minutes: 1,
    };
    let minute = ((T0 / 60_000) & 0xFFFF) as u32;
    set(&mut s, b"k", Ttl::Clear);
    s.get(b"k", T0).expect("present").access = (minute << 8) | 50;
    // Three minutes later: three decay steps, then at most one increment (p = 1/421).
    let later = T0 + 3 * 60_000;
    let access = s.get(b"k", later).expect("present").access;
    assert!(
        matches!(access & 0xFF, 47 | 48),
        "counter {}",
        access & 0xFF
    );
    assert_eq!(access >> 8, minute + 3, "the decrement time moves to now");
    // peek does not count as an access.
    assert_eq!(
        s.peek(b"k", later + 600_000).expect("present").access,
        access
    );
}

// ---------------------------------------------------------------------------------------------
// SCAN cursors.

/// Walks `slot` to the end with `count` per step, calling `between` after every step.
fn scan_with(
    s: &mut Shard,
    slot: usize,
    count: usize,
    mut between: impl FnMut(&mut Shard, usize),
) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    let mut cursor = 0;
    for step in 0.. {
        assert!(step < 100_000, "SCAN does not end");
        cursor = s.scan_slot(slot, cursor, count, |e| seen.push(e.key().to_vec()));
        if cursor == 0 {
            return seen;
        }
        between(s, step);
    }
    unreachable!("the loop returns or panics")
}

#[test]
fn scan_returns_every_key_present_throughout_while_others_come_and_go() {
    let mut s = shard();
    let slot = key_slot(b"{s}") as usize;
    for i in 0..300 {
        set(&mut s, &key("{s}base", i), Ttl::Clear);
    }
    // Between steps: insert 40 new keys (growing the table several times over) and delete
    // some of the new ones and some base keys, which are then no longer owed.
    let mut deleted_base = BTreeSet::new();
    let seen = scan_with(&mut s, slot, 7, |s, step| {
        if step < 60 {
            for j in 0..40 {
                set(s, &key("{s}new", step * 40 + j), Ttl::Clear);
            }
            s.apply(Mutation::Del {
                key: &key("{s}new", step * 20),
            });
        }
        if step % 5 == 0 && step < 300 {
            let victim = (step * 7) % 300;
            s.apply(Mutation::Del {
                key: &key("{s}base", victim),
            });
            deleted_base.insert(victim);
        }
    });
    let seen: HashSet<Vec<u8>> = seen.into_iter().collect();
    for i in (0..300).filter(|i| !deleted_base.contains(i)) {
        assert!(seen.contains(&key("{s}base", i)), "missed base{i}");
    }
    assert!(!deleted_base.is_empty());
}

#[test]
fn scan_returns_every_key_present_throughout_under_churn_at_a_stable_size() {
    // Inserting and deleting at a stable size leaves tombstones in the table; once they use
    // up its room, hashbrown rehashes in place (same bucket count, entries moved) when the
    // table is at most half full, instead of growing.
    let mut s = shard();
    let slot = key_slot(b"{c}") as usize;
    for i in 0..100 {
        set(&mut s, &key("{c}base", i), Ttl::Clear);
    }
    for i in 0..300 {
        set(&mut s, &key("{c}churn", i), Ttl::Clear);
    }
    let (mut next, mut oldest) = (300, 0);
    let seen = scan_with(&mut s, slot, 4, |s, step| {
        if step < 3000 {
            for _ in 0..30 {
                set(s, &key("{c}churn", next), Ttl::Clear);
                s.apply(Mutation::Del {
                    key: &key("{c}churn", oldest),
                });
                next += 1;
                oldest += 1;
            }
        }
    });
    let seen: HashSet<Vec<u8>> = seen.into_iter().collect();
    let missed: Vec<usize> = (0..100)
        .filter(|&i| !seen.contains(&key("{c}base", i)))
        .collect();
    assert!(missed.is_empty(), "missed base keys {missed:?}");
    assert_eq!(s.count_in_slot(slot), 400);
}

#[test]
fn scan_returns_every_key_present_throughout_when_the_table_rehashes_in_place() {
    // Deleting from a dense table leaves tombstones; when inserts use up its room while it is
    // at most half full, hashbrown rehashes it in place: same bucket count (so the cursor's
    // size tag still matches), and entries that had been displaced by collisions move back
    // towards their home buckets — possibly from ahead of the cursor to behind it. Whether a
    // given run moves a key across the cursor is chance (about half the runs did before the
    // fix), so try the burst at twenty cursor positions.
    let slot = key_slot(b"{r}") as usize;
    for trial in 0..20 {
        let mut s = shard();
        // Fill 512 buckets to 7/8; the kept keys go in last, into a dense table (displaced).
        for i in 0..398 {
            set(&mut s, &key("{r}churn", i), Ttl::Clear);
        }
        for i in 0..50 {
            set(&mut s, &key("{r}kept", i), Ttl::Clear);
        }
        for i in 0..298 {
            s.apply(Mutation::Del {
                key: &key("{r}churn", i),
            });
        }
        let (mut next, mut oldest) = (398, 298);
        let mut rehashed = false;
        let seen = scan_with(&mut s, slot, 3, |s, step| {
            if step != trial {
                return;
            }
            // Between two SCAN calls: writes at a stable size until the table rehashes in
            // place (its capacity jumps back up as the tombstones are cleared).
            for _ in 0..100_000 {
                let table = &s.slots[slot].table;
                let (buckets, capacity) = (table.num_buckets(), table.capacity());
                set(s, &key("{r}churn", next), Ttl::Clear);
                s.apply(Mutation::Del {
                    key: &key("{r}churn", oldest),
                });
                next += 1;
                oldest += 1;
                let table = &s.slots[slot].table;
                assert_eq!(table.num_buckets(), buckets, "the table did not grow");
                if table.capacity() > capacity + 1 {
                    rehashed = true;
                    return;
                }
            }
        });
        assert!(rehashed, "trial {trial}: no rehash in place happened");
        let seen: HashSet<Vec<u8>> = seen.into_iter().collect();
        let missed: Vec<usize> = (0..50)
            .filter(|&i| !seen.contains(&key("{r}kept", i)))
            .collect();
        assert!(
            missed.is_empty(),
            "trial {trial}: missed kept keys {missed:?}"
        );
    }
}

#[test]
fn scan_of_a_table_that_does_not_grow_returns_each_key_once() {
    let mut s = shard();
    let slot = key_slot(b"{s}") as usize;
    for i in 0..500 {
        set(&mut s, &key("{s}k", i), Ttl::Clear);
    }
    // Deletes (and updates in place) never move entries: no restart, no duplicates.
    let seen = scan_with(&mut s, slot, 10, |s, step| {
        s.apply(Mutation::Del {
            key: &key("{s}k", (step * 13) % 500),
        });
        set(s, &key("{s}k", (step * 17 + 1) % 500), Ttl::Keep);
    });
    let unique: HashSet<&Vec<u8>> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates without a resize");
    // Nothing else lives in this slot, and an empty slot ends at once.
    assert_eq!(s.scan_slot(slot + 1, 0, 10, |_| panic!("empty slot")), 0);
}

// ---------------------------------------------------------------------------------------------
// Counters INFO reports.

#[test]
fn expiry_and_eviction_counters() {
    let mut s = shard();
    let stats = Arc::clone(&s.stats);
    for k in [&b"e1"[..], b"e2", b"e3", b"e4"] {
        set(&mut s, k, Ttl::At(T0 + 10));
    }
    set(&mut s, b"p", Ttl::Clear);
    assert_eq!((stats.keys.get(), stats.expires.get()), (5, 4));

    let later = T0 + 11;
    // peek hides an expired key but neither deletes nor counts it.
    assert!(s.peek(b"e1", later).is_none());
    assert_eq!((s.len(), stats.expired_keys.get()), (5, 0));
    // A read deletes it: counted once, as an expiry and (for a read command) as a miss.
    assert!(s.get_read(b"e1", later).is_none());
    assert!(s.get_read(b"e1", later).is_none());
    assert!(s.get_read(b"p", later).is_some());
    assert_eq!(stats.expired_keys.get(), 1);
    assert_eq!(
        (stats.keyspace_hits.get(), stats.keyspace_misses.get()),
        (1, 2)
    );
    assert_eq!((stats.keys.get(), stats.expires.get()), (4, 3));
    // An explicit DEL of an expired key is not an expiry.
    assert!(s.apply(Mutation::Del { key: b"e2" }));
    assert_eq!(stats.expired_keys.get(), 1);
    // PERSIST and EXPIRE move keys in and out of the volatile count; RENAME keeps it.
    assert!(s.apply(Mutation::Expire {
        key: b"p",
        at: Some(T0 + 1_000_000)
    }));
    assert_eq!(stats.expires.get(), 3);
    assert!(s.apply(Mutation::Rename {
        from: b"p",
        to: b"q"
    }));
    assert_eq!((stats.keys.get(), stats.expires.get()), (3, 3));
    assert!(s.apply(Mutation::Expire {
        key: b"q",
        at: None
    }));
    assert_eq!(stats.expires.get(), 2);
    // An expiry of 0 is "no expiry" in the entry: it must not count the key as volatile.
    assert!(s.apply(Mutation::Expire {
        key: b"q",
        at: Some(0)
    }));
    assert_eq!((s.volatile_len(), stats.expires.get()), (2, 2));
    assert_eq!(s.peek(b"q", later).expect("persistent").expire_at(), None);
    // The active cycle counts what it deletes.
    let step = s.active_expire_step(later, 100);
    assert_eq!((step.checked, step.expired), (2, 2));
    assert_eq!(stats.expired_keys.get(), 3);
    assert_eq!((stats.keys.get(), stats.expires.get()), (1, 0));
    // Eviction counts separately.
    assert!(s.evict_one(EvictPolicy::AllKeysRandom, 5, later));
    assert_eq!((stats.evicted_keys.get(), stats.expired_keys.get()), (1, 3));
    // FLUSHALL resets the gauges, not the totals.
    set(&mut s, b"x", Ttl::At(T0 + 5));
    assert!(s.apply(Mutation::FlushAll));
    assert_eq!((stats.keys.get(), stats.expires.get()), (0, 0));
    assert_eq!((stats.evicted_keys.get(), stats.expired_keys.get()), (1, 3));
}

// ---------------------------------------------------------------------------------------------
// Lazy freeing and memory usage.

/// A set of `n` members at `key`.
fn add_set(s: &mut Shard, key: &[u8], n: usize) {
    let members: Vec<Vec<u8>> = (0..n).map(|i| format!("member:{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = members.iter().map(|m| &m[..]).collect();
    s.apply(Mutation::SetAdd {
        key,
        members: &refs,
    });
}

fn wait_freed(at_least: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lazyfree::freed_objects() < at_least {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

#[test]
fn big_values_leave_the_keyspace_at_once_whoever_frees_them() {
    let mut s = shard();
    let before = lazyfree::freed_objects();
    // DEL (lazyfree-lazy-user-del yes by default), an expiry, an eviction, an overwrite,
    // RENAME over a big value, and FLUSHALL: each big value goes to the background thread.
    for k in [&b"del"[..], b"exp", b"evict", b"over", b"dest", b"src"] {
        add_set(&mut s, k, 500);
    }
    assert!(s.apply(Mutation::Del { key: b"del" }));
    assert!(s.apply(Mutation::Expired { key: b"exp" }));
    assert!(s.apply(Mutation::Evicted { key: b"evict" }));
    s.apply(Mutation::SetStr {
        key: b"over",
        value: b"now a string",
        ttl: Ttl::Clear,
    });
    assert_eq!(
        s.peek(b"over", 0).unwrap().value(),
        ValueRef::Str(b"now a string")
    );
    s.apply(Mutation::Rename {
        from: b"src",
        to: b"dest",
    });
    assert!(matches!(s.peek(b"dest", 0).unwrap().value(), ValueRef::Set(x) if x.len() == 500));
    assert_eq!(s.len(), 2);
    assert!(
        wait_freed(before + 5),
        "five big values freed in the background"
    );
    s.apply(Mutation::FlushAll);
    assert!(s.is_empty());
    assert!(wait_freed(before + 7), "and the two keys of the flush");
}

#[test]
fn unlink_frees_lazily_even_when_del_does_not() {
    let mut s = shard();
    s.lazyfree = LazyFree {
        user_del: false,
        ..LazyFree::default()
    };
    add_set(&mut s, b"a", 200);
    add_set(&mut s, b"b", 200);
    let before = lazyfree::freed_objects();
    s.apply(Mutation::Del { key: b"a" });
    s.set_free_mode(Some(true));
    s.apply(Mutation::Del { key: b"b" });
    s.set_free_mode(None);
    assert!(s.is_empty());
    // Other tests free concurrently, so only "at least one more" is certain.
    assert!(wait_freed(before + 1));
}

#[test]
fn memory_usage_grows_with_the_value_and_sampling_estimates_it() {
    let mut s = shard();
    let usage = |s: &Shard, k: &[u8], samples| s.peek(k, 0).unwrap().memory_usage(samples);
    s.apply(Mutation::SetStr {
        key: b"short",
        value: b"x",
        ttl: Ttl::Clear,
    });
    s.apply(Mutation::SetStr {
        key: b"long",
        value: &[b'x'; 1000],
        ttl: Ttl::Clear,
    });
    assert!(usage(&s, b"long", 5) > usage(&s, b"short", 5) + 900);
    add_set(&mut s, b"small", 10);
    add_set(&mut s, b"large", 10_000);
    let (small, large) = (usage(&s, b"small", 5), usage(&s, b"large", usize::MAX));
    // 10k members of 11-16 bytes: at least 16 bytes each in the table.
    assert!(large > small + 10_000 * 16, "{small} {large}");
    // The members are alike, so five samples estimate the whole closely.
    let sampled = usage(&s, b"large", 5);
    assert!(sampled.abs_diff(large) < large / 10, "{sampled} vs {large}");
    for n in [10usize, 1000] {
        let key = format!("h{n}");
        let pairs: Vec<Vec<u8>> = (0..n)
            .flat_map(|i| [format!("field:{i}").into_bytes(), vec![b'v'; 20]])
            .collect();
        let refs: Vec<&[u8]> = pairs.iter().map(|p| &p[..]).collect();
        s.apply(Mutation::HSet {
            key: key.as_bytes(),
            pairs: &refs,
        });
        let elems: Vec<&[u8]> = refs.iter().step_by(2).copied().collect();
        s.apply(Mutation::ListPush {
            key: format!("l{n}").as_bytes(),
            left: false,
            elems: &elems,
        });
        let scored: Vec<(f64, &[u8])> = elems
            .iter()
            .enumerate()
            .map(|(i, m)| (i as f64, *m))
            .collect();
        s.apply(Mutation::ZAdd {
            key: format!("z{n}").as_bytes(),
            pairs: &scored,
        });
    }
    for kind in ["h", "l", "z"] {
        let small = usage(&s, format!("{kind}10").as_bytes(), 5);
        let large = usage(&s, format!("{kind}1000").as_bytes(), 5);
        assert!(large > small * 20, "{kind}: {small} {large}");
    }
}

#[test]
fn table_bytes_follow_growth_and_flush() {
    let mut s = shard();
    assert_eq!(s.stats.table_bytes.get(), 0);
    for i in 0..5000 {
        set(&mut s, format!("k{i}").as_bytes(), Ttl::Clear);
    }
    let grown = s.stats.table_bytes.get();
    // At least a 32-byte slot per key.
    assert!(grown >= 5000 * 32, "{grown}");
    s.apply(Mutation::FlushAll);
    assert_eq!(s.stats.table_bytes.get(), 0);
}

/// The published key count of each database holding keys.
fn db_keys(s: &Shard) -> Vec<(usize, u64)> {
    let figures = s.stats.db_figures().into_iter();
    figures
        .map(|(db, f)| (db, f[stats::DB_KEYS]))
        .filter(|d| d.1 > 0)
        .collect()
}

/// Numbered databases: each keeps its own keys, counts, changes and expiry; the shard's
/// statistics add them up, and SWAPDB exchanges keys, counts and pending storage changes.
#[test]
fn databases_keep_keys_counts_and_changes_apart() {
    let mut s = shard();
    s.track_changes(true);
    set(&mut s, b"a", Ttl::Clear);
    s.select(3);
    assert!(s.get(b"a", 0).is_none(), "database 3 starts empty");
    set(&mut s, b"a", Ttl::At(T0));
    set(&mut s, b"b", Ttl::Clear);
    assert_eq!((s.len(), s.volatile_len()), (2, 1));
    assert_eq!((s.total_len(), s.total_volatile_len()), (3, 1));
    assert_eq!(s.stats.keys.get(), 3);
    assert_eq!(s.stats.expires.get(), 1);
    assert_eq!(db_keys(&s), [(0, 1), (3, 2)]);
    assert_eq!(s.used_dbs(), [0, 3]);
    assert_eq!(s.changed_dbs(), [0, 3]);
    assert_eq!(s.pending_changes(), 3);

    // Each database's changes are taken with it selected.
    let c3 = s.take_changes().unwrap();
    assert_eq!(c3.keys.len(), 2);
    assert_eq!(s.changed_dbs(), [0]);
    s.select(0);
    assert_eq!(s.len(), 1);
    assert!(s.take_changes().unwrap().keys.contains(&b"a"[..]));
    assert!(!s.has_changes());

    // The expiry cycle of database 3 deletes its own expired key only.
    s.select(3);
    s.active_expire_step(T0 + 1, 100);
    assert_eq!((s.len(), s.total_len()), (1, 2));
    s.select(0);
    assert!(s.get(b"a", T0 + 1).is_some());
    let _ = s.take_changes();
    s.select(3);
    let _ = s.take_changes();

    // SWAPDB: database 0 gets b, database 3 gets a; both are rewritten whole.
    s.select(0);
    s.swap_dbs(0, 3);
    assert_eq!(s.db(), 0);
    assert!(s.get(b"b", 0).is_some() && s.get(b"a", 0).is_none());
    assert_eq!(db_keys(&s), [(0, 1), (3, 1)]);
    let c0 = s.take_changes().unwrap();
    assert!(c0.flushed && c0.keys.contains(&b"b"[..]) && c0.keys.len() == 1);
    s.select(3);
    let c3 = s.take_changes().unwrap();
    assert!(c3.flushed && c3.keys.contains(&b"a"[..]) && c3.keys.len() == 1);

    // FLUSHALL of one database leaves the others.
    s.apply(Mutation::FlushAll);
    assert_eq!((s.len(), s.total_len()), (0, 1));
    assert_eq!(s.stats.keys.get(), 1);
    s.select(0);
    assert_eq!(s.len(), 1);
}

/// Eviction reaches keys in any database, not only the selected one.
#[test]
fn eviction_reaches_every_database() {
    let mut s = shard();
    s.select(5);
    for i in 0..10 {
        set(&mut s, format!("k{i}").as_bytes(), Ttl::Clear);
    }
    s.select(0);
    assert_eq!((s.len(), s.total_len()), (0, 10));
    for _ in 0..10 {
        assert!(s.evict_one_any_db(EvictPolicy::AllKeysRandom, 5, T0));
    }
    assert!(!s.evict_one_any_db(EvictPolicy::AllKeysRandom, 5, T0));
    assert_eq!(s.total_len(), 0);
    assert_eq!(s.db(), 0);
}

/// Databases are sparse: a large `databases` costs nothing until used, an emptied database is
/// dropped, and the figures of databases past the dense ones are published too.
#[test]
fn databases_are_sparse() {
    let mut s = Shard::new(
        0..SLOT_COUNT,
        Arc::new(ShardStats::with_databases(i32::MAX as usize)),
    );
    s.track_changes(true);
    s.select(2_000_000_000);
    set(&mut s, b"k", Ttl::At(T0));
    s.select(0);
    assert_eq!(s.used_dbs(), [0, 2_000_000_000]);
    assert_eq!(db_keys(&s), [(2_000_000_000, 1)]);
    assert_eq!(s.stats.expires.get(), 1);
    s.select(2_000_000_000);
    let _ = s.take_changes();
    assert!(s.apply(Mutation::Del { key: b"k" }));
    let _ = s.take_changes();
    s.select(7);
    // Reading an empty database leaves nothing behind either.
    assert!(s.get(b"k", 0).is_none());
    s.select(0);
    assert_eq!(s.used_dbs(), [0]);
    assert!(db_keys(&s).is_empty());
    assert_eq!((s.stats.keys.get(), s.stats.expires.get()), (0, 0));
}
