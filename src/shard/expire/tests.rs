//! The field job of the expiry cycle, lazy field expiry on lookups, and the index of hashes
//! with field TTLs that both rely on — checked against a recomputation after random record
//! streams.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;

use crate::cluster::{SLOT_COUNT, key_slot};
use crate::shard::{HashObj, Mutation, Shard, ShardStats, Value, ValueRef};

fn shard() -> Shard {
    Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()))
}

fn hset(s: &mut Shard, key: &[u8], pairs: &[&[u8]]) {
    s.apply(Mutation::HSet { key, pairs });
}

fn expire(s: &mut Shard, key: &[u8], at: u64, fields: &[&[u8]]) {
    s.apply(Mutation::HExpire {
        key,
        at: Some(at),
        fields,
    });
}

/// The index as it should be: every stored hash with field TTLs at its earliest one.
fn recomputed_index(s: &Shard) -> BTreeSet<(u16, u64, Box<[u8]>)> {
    let mut want = BTreeSet::new();
    for slot in 0..SLOT_COUNT {
        s.scan_slot(slot, 0, usize::MAX, |e| {
            if let ValueRef::Hash(h) = e.value()
                && let Some(at) = h.next_expiry()
            {
                want.insert((slot as u16, at, Box::from(e.key())));
            }
        });
    }
    want
}

fn check_index(s: &Shard) {
    assert_eq!(s.volatile_hashes, recomputed_index(s), "field expiry index");
    assert_eq!(
        s.stats.keys_with_volatile_items.get(),
        s.volatile_hashes.len() as u64
    );
}

fn live_fields(s: &Shard, key: &[u8], now: u64) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = match s.peek_stored(key).map(|e| e.value()) {
        Some(ValueRef::Hash(h)) => h.iter_live(now).map(|(f, _)| f.to_vec()).collect(),
        _ => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn a_read_deletes_expired_fields_and_the_last_one_takes_the_key() {
    let mut s = shard();
    hset(&mut s, b"h", &[b"a", b"1", b"b", b"2"]);
    expire(&mut s, b"h", 100, &[b"a"]);
    check_index(&s);
    assert!(s.get(b"h", 100).is_some());
    assert_eq!(s.stats.expired_fields.get(), 0);
    // Past its time the field goes on the next lookup, as a record.
    assert!(s.get(b"h", 101).is_some());
    assert_eq!(live_fields(&s, b"h", 0), vec![b"b".to_vec()]);
    assert_eq!(s.stats.expired_fields.get(), 1);
    check_index(&s);
    expire(&mut s, b"h", 200, &[b"b"]);
    assert!(
        s.get_read(b"h", 201).is_none(),
        "the last field takes the key"
    );
    assert_eq!((s.len(), s.stats.expired_fields.get()), (0, 2));
    check_index(&s);
}

#[test]
fn a_replica_hides_expired_fields_but_leaves_them_to_the_log() {
    let mut s = shard();
    s.expire_deletes = false;
    hset(&mut s, b"h", &[b"a", b"1", b"b", b"2"]);
    expire(&mut s, b"h", 100, &[b"a", b"b"]);
    let Some(ValueRef::Hash(h)) = s.get(b"h", 500).map(|e| e.value()) else {
        panic!("the key stays until the leader's record comes")
    };
    assert_eq!((h.len(), h.live_len(500), h.get(b"a", 500)), (2, 0, None));
    assert_eq!(s.stats.expired_fields.get(), 0);
    // The leader's record deletes them here too, and counts them.
    s.apply(Mutation::HExpired {
        key: b"h",
        fields: &[b"a", b"b"],
    });
    assert_eq!((s.len(), s.stats.expired_fields.get()), (0, 2));
    check_index(&s);
}

#[test]
fn the_cycle_reclaims_fields_nobody_reads() {
    let mut s = shard();
    for i in 0..300 {
        let k = format!("h{i}");
        hset(&mut s, k.as_bytes(), &[b"keep", b"1", b"go", b"2"]);
        expire(&mut s, k.as_bytes(), 100, &[b"go"]);
        if i % 3 == 0 {
            // Fully volatile: the hash itself goes with its fields.
            expire(&mut s, k.as_bytes(), 100, &[b"keep"]);
        }
    }
    // A hash with fields not due yet stays indexed and untouched.
    hset(&mut s, b"later", &[b"f", b"v"]);
    expire(&mut s, b"later", 10_000, &[b"f"]);
    assert_eq!(s.volatile_hashes_len(), 301);
    let mut steps = 0;
    loop {
        let step = s.active_expire_step(101, 50);
        assert!(step.hashes_checked <= 50, "{step:?}");
        steps += 1;
        if !step.worth_another() {
            break;
        }
        assert!(steps < 100, "the cycle keeps going");
    }
    assert_eq!(s.stats.expired_fields.get(), 300 + 100);
    assert_eq!(s.len(), 201);
    assert_eq!(s.volatile_hashes_len(), 1);
    assert_eq!(live_fields(&s, b"h1", 101), vec![b"keep".to_vec()]);
    check_index(&s);
}

#[test]
fn a_huge_expiry_is_worked_off_a_bounded_piece_per_look() {
    let mut s = shard();
    let names: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
    let mut pairs: Vec<&[u8]> = Vec::new();
    for n in &names {
        pairs.extend([n.as_bytes(), b"v"]);
    }
    s.apply(Mutation::HSetEx {
        key: b"big",
        at: 100,
        pairs: &pairs,
    });
    let step = s.active_expire_step(101, 3);
    assert_eq!(step.fields_expired, 3 * super::FIELDS_PER_HASH);
    while s.active_expire_step(101, 3).worth_another() {}
    assert_eq!((s.len(), s.stats.expired_fields.get()), (0, 1000));
    check_index(&s);
}

#[test]
fn a_leader_expires_only_the_slots_it_is_asked_for() {
    let mut s = shard();
    let (a, b) = (b"{a}h".as_slice(), b"{b}h".as_slice());
    let (sa, sb) = (key_slot(a) as usize, key_slot(b) as usize);
    assert_ne!(sa, sb);
    for k in [a, b] {
        hset(&mut s, k, &[b"f", b"1", b"g", b"2"]);
        expire(&mut s, k, 100, &[b"f"]);
    }
    let mut cursor = super::ExpireCursor::default();
    let step = s.expire_step_in(sa..sa + 1, &mut cursor, 101, 100);
    assert_eq!(step.fields_expired, 1);
    assert_eq!(live_fields(&s, a, 0), vec![b"g".to_vec()]);
    assert_eq!(
        live_fields(&s, b, 0),
        vec![b"f".to_vec(), b"g".to_vec()],
        "another group's hash is not touched"
    );
    check_index(&s);
}

#[test]
fn ttls_travel_with_the_value() {
    let mut s = shard();
    hset(&mut s, b"{t}a", &[b"f", b"1", b"g", b"2"]);
    expire(&mut s, b"{t}a", 500, &[b"f"]);
    s.apply(Mutation::Rename {
        from: b"{t}a",
        to: b"{t}b",
    });
    check_index(&s);
    let copy = s.peek_stored(b"{t}b").map(|e| e.to_value()).unwrap();
    s.apply(Mutation::Restore {
        key: b"{t}c",
        value: copy,
        expire_at: None,
    });
    check_index(&s);
    assert_eq!(s.volatile_hashes_len(), 2);
    // A SET over a volatile hash takes it out of the index.
    s.apply(Mutation::SetStr {
        key: b"{t}c",
        value: b"x",
        ttl: crate::shard::Ttl::Clear,
    });
    check_index(&s);
    s.apply(Mutation::FlushAll);
    check_index(&s);
    assert_eq!(s.volatile_hashes_len(), 0);
}

/// One record of the random streams below.
#[derive(Debug, Clone)]
enum Op {
    HSet(u8, Vec<u8>),
    HSetEx(u8, u64, Vec<u8>),
    HExpire(u8, Option<u64>, Vec<u8>),
    HExpired(u8, Vec<u8>),
    HDel(u8, Vec<u8>),
    Del(u8),
    SetStr(u8),
    Rename(u8, u8),
    Copy(u8, u8),
    FlushSlots(u8),
    Read(u8, u64),
    Cycle(u64, usize),
}

const KEYS: [&[u8]; 4] = [b"{x}1", b"{x}2", b"{y}1", b"{z}1"];
const FIELDS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

fn names(ix: &[u8]) -> Vec<&'static [u8]> {
    ix.iter()
        .map(|&i| FIELDS[i as usize % FIELDS.len()])
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..4;
    let fields = proptest::collection::vec(0u8..4, 1..4);
    let at = 1u64..50;
    prop_oneof![
        (key.clone(), fields.clone()).prop_map(|(k, f)| Op::HSet(k, f)),
        (key.clone(), at.clone(), fields.clone()).prop_map(|(k, t, f)| Op::HSetEx(k, t, f)),
        (
            key.clone(),
            proptest::option::of(at.clone()),
            fields.clone()
        )
            .prop_map(|(k, t, f)| Op::HExpire(k, t, f)),
        (key.clone(), fields.clone()).prop_map(|(k, f)| Op::HExpired(k, f)),
        (key.clone(), fields).prop_map(|(k, f)| Op::HDel(k, f)),
        key.clone().prop_map(Op::Del),
        key.clone().prop_map(Op::SetStr),
        (0u8..2, 0u8..2).prop_map(|(a, b)| Op::Rename(a, b)),
        (key.clone(), key.clone()).prop_map(|(a, b)| Op::Copy(a, b)),
        key.clone().prop_map(Op::FlushSlots),
        (key, at.clone()).prop_map(|(k, t)| Op::Read(k, t)),
        (at, 1usize..5).prop_map(|(t, n)| Op::Cycle(t, n)),
    ]
}

proptest! {
    /// Whatever records arrive, the index names exactly the stored hashes with field TTLs,
    /// at their earliest; reads never show a field past its time; no hash is left empty.
    #[test]
    fn the_field_index_stays_exact(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = shard();
        for op in ops {
            match &op {
                Op::HSet(k, f) | Op::HSetEx(k, _, f) => {
                    let (k, f) = (*k, f.clone());
                    let pairs: Vec<&[u8]> = names(&f).into_iter().flat_map(|n| [n, b"v"]).collect();
                    let key = KEYS[k as usize];
                    if let Op::HSetEx(_, at, _) = op {
                        s.apply(Mutation::HSetEx { key, at, pairs: &pairs });
                    } else {
                        s.apply(Mutation::HSet { key, pairs: &pairs });
                    }
                }
                Op::HExpire(k, at, f) => {
                    s.apply(Mutation::HExpire { key: KEYS[*k as usize], at: *at, fields: &names(f) });
                }
                Op::HExpired(k, f) => {
                    s.apply(Mutation::HExpired { key: KEYS[*k as usize], fields: &names(f) });
                }
                Op::HDel(k, f) => {
                    s.apply(Mutation::HDel { key: KEYS[*k as usize], fields: &names(f) });
                }
                Op::Del(k) => {
                    s.apply(Mutation::Del { key: KEYS[*k as usize] });
                }
                Op::SetStr(k) => {
                    s.apply(Mutation::SetStr {
                        key: KEYS[*k as usize],
                        value: b"s",
                        ttl: crate::shard::Ttl::Clear,
                    });
                }
                Op::Rename(a, b) => {
                    s.apply(Mutation::Rename { from: KEYS[*a as usize], to: KEYS[*b as usize] });
                }
                Op::Copy(a, b) => {
                    if let Some(v) = s.peek_stored(KEYS[*a as usize]).map(|e| e.to_value()) {
                        s.apply(Mutation::Restore { key: KEYS[*b as usize], value: v, expire_at: None });
                    }
                }
                Op::FlushSlots(k) => {
                    let slot = key_slot(KEYS[*k as usize]);
                    s.apply(Mutation::FlushSlots { slots: slot..slot + 1 });
                }
                Op::Read(k, now) => {
                    let (key, now) = (KEYS[*k as usize], *now);
                    if let Some(e) = s.get(key, now)
                        && let ValueRef::Hash(h) = e.value()
                    {
                        prop_assert!(h.next_expiry().is_none_or(|at| at >= now || h.live_len(now) < h.len()));
                        prop_assert!(h.live_len(now) > 0, "a read leaves no all-expired hash behind");
                    }
                }
                Op::Cycle(now, n) => {
                    s.active_expire_step(*now, *n);
                }
            }
            check_index(&s);
            for key in KEYS {
                if let Some(ValueRef::Hash(h)) = s.peek_stored(key).map(|e| e.value()) {
                    prop_assert!(!h.is_empty(), "an empty hash is stored");
                    if h.has_field_ttls() {
                        prop_assert_eq!(h.encoding(), "hashtable");
                    }
                }
            }
        }
    }
}

#[test]
fn restore_of_a_volatile_hash_is_indexed() {
    let mut s = shard();
    let mut h = HashObj::new();
    h.set_pairs(&[b"a", b"1"], Default::default());
    h.set_ttl(b"a", Some(7));
    s.apply(Mutation::Restore {
        key: b"r",
        value: Value::Hash(Box::new(h)),
        expire_at: None,
    });
    check_index(&s);
    assert_eq!(s.volatile_hashes_len(), 1);
    while s.active_expire_step(8, 10).worth_another() {}
    assert_eq!(s.len(), 0);
}
