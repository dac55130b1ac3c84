//! The seam's contract, checked against a model: a leader that applies records while
//! journaling and a replica that applies the committed entries end up with the same data;
//! undoing the uncommitted proposals gives back exactly the committed state; and the images
//! persistence would store are the committed state.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::record::{self, Payload};
use super::spec::Spec;
use crate::cluster::SLOT_COUNT;
use crate::shard::{HashLimits, HashObj, Image, Mutation, Shard, ShardStats, Ttl, Value};

fn shard() -> Shard {
    Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()))
}

/// Every key of every database: (database, key) → (value, expiry).
type Dump = BTreeMap<(usize, Vec<u8>), (Value, Option<u64>)>;

fn dump(s: &mut Shard) -> Dump {
    let mut out = BTreeMap::new();
    s.for_each_db(|s| {
        let db = s.db();
        for slot in 0..SLOT_COUNT {
            s.for_each_in_slot(slot, 0, |e| {
                out.insert((db, e.key().to_vec()), (e.to_value(), e.expire_at()));
            });
        }
    });
    out
}

/// An owned mutation, for generating.
#[derive(Debug, Clone)]
enum M {
    SetStr(u8, Vec<u8>, Option<u64>),
    SetInt(u8, i64),
    Append(u8, Vec<u8>),
    SetRange(u8, usize, Vec<u8>),
    HSet(u8, Vec<Vec<u8>>),
    HDel(u8, Vec<Vec<u8>>),
    Expire(u8, Option<u64>),
    Del(u8),
    Rename(u8, u8),
    Restore(u8, i64),
    FlushSlots,
    /// The command layer selects another database (`cluster-databases`): the records that
    /// follow act on it.
    Db(u8),
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + k]
}

fn apply(s: &mut Shard, m: &M) {
    let k = key(match m {
        M::SetStr(k, ..)
        | M::SetInt(k, _)
        | M::Append(k, _)
        | M::SetRange(k, ..)
        | M::HSet(k, _)
        | M::HDel(k, _)
        | M::Expire(k, _)
        | M::Del(k)
        | M::Rename(k, _)
        | M::Restore(k, _) => *k,
        M::FlushSlots => 0,
        M::Db(db) => {
            s.select(*db as usize);
            return;
        }
    });
    match m {
        M::SetStr(_, v, at) => s.apply(Mutation::SetStr {
            key: &k,
            value: v,
            ttl: at.map_or(Ttl::Keep, Ttl::At),
        }),
        M::SetInt(_, v) => s.apply(Mutation::SetInt {
            key: &k,
            value: *v,
            ttl: Ttl::Clear,
        }),
        M::Append(_, t) => s.apply(Mutation::Append { key: &k, tail: t }),
        M::SetRange(_, o, d) => s.apply(Mutation::SetRange {
            key: &k,
            offset: *o,
            data: d,
        }),
        M::HSet(_, pairs) => {
            let pairs: Vec<&[u8]> = pairs.iter().map(|p| &p[..]).collect();
            if !pairs.len().is_multiple_of(2) {
                return;
            }
            s.apply(Mutation::HSet {
                key: &k,
                pairs: &pairs,
            })
        }
        M::HDel(_, fields) => {
            let fields: Vec<&[u8]> = fields.iter().map(|p| &p[..]).collect();
            s.apply(Mutation::HDel {
                key: &k,
                fields: &fields,
            })
        }
        M::Expire(_, at) => s.apply(Mutation::Expire { key: &k, at: *at }),
        M::Del(_) => s.apply(Mutation::Del { key: &k }),
        M::Rename(_, to) => s.apply(Mutation::Rename {
            from: &k,
            to: &key(*to),
        }),
        M::Restore(_, v) => {
            let value = if *v % 3 == 0 {
                let mut h = HashObj::new();
                h.set_pairs(&[b"f", b"v"], HashLimits::default());
                Value::Hash(Box::new(h))
            } else {
                Value::Int(*v)
            };
            s.apply(Mutation::Restore {
                key: &k,
                value,
                expire_at: None,
            })
        }
        M::FlushSlots => s.apply(Mutation::FlushSlots {
            slots: 0..SLOT_COUNT as u16,
        }),
        M::Db(_) => unreachable!("returned above"),
    };
}

fn small() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4)
}

fn mutation() -> impl Strategy<Value = M> {
    let k = 0u8..4;
    prop_oneof![
        (k.clone(), small(), prop::option::of(1u64..1000)).prop_map(|(k, v, t)| M::SetStr(k, v, t)),
        (k.clone(), any::<i64>()).prop_map(|(k, v)| M::SetInt(k, v)),
        (k.clone(), small()).prop_map(|(k, v)| M::Append(k, v)),
        (k.clone(), 0usize..6, small()).prop_map(|(k, o, d)| M::SetRange(k, o, d)),
        (k.clone(), prop::collection::vec(small(), 0..4)).prop_map(|(k, p)| M::HSet(k, p)),
        (k.clone(), prop::collection::vec(small(), 0..3)).prop_map(|(k, p)| M::HDel(k, p)),
        (k.clone(), prop::option::of(0u64..1000)).prop_map(|(k, t)| M::Expire(k, t)),
        k.clone().prop_map(M::Del),
        (k.clone(), 0u8..4).prop_map(|(a, b)| M::Rename(a, b)),
        (k.clone(), any::<i64>()).prop_map(|(k, v)| M::Restore(k, v)),
        Just(M::FlushSlots),
        (0u8..3).prop_map(M::Db),
    ]
}

/// Applies one proposal's worth of batches on the leader (journaling), returning the
/// payload handed to Raft.
fn propose(
    leader: &mut Shard,
    spec: &mut Spec,
    batches: &[Vec<M>],
    now: u64,
) -> Option<(u64, Vec<u8>)> {
    for batch in batches {
        leader.start_journal();
        for m in batch {
            apply(leader, m);
            leader.journal_mut().expect("journaling").close_unit();
        }
        let j = leader.take_journal().expect("journaling");
        spec.absorb(0, j, now);
    }
    // The engine leaves a shard in database 0 after each batch.
    leader.select(0);
    spec.take_filling(0)
}

fn apply_entry(s: &mut Shard, payload: &[u8]) {
    match record::decode(payload).expect("decodes") {
        Payload::Records(r) => {
            r.validate(s.limits).expect("valid");
            r.apply(s).expect("applies");
            assert_eq!(s.db(), 0, "an entry's units end in database 0");
        }
        Payload::Opaque(_) => panic!("a records entry"),
    }
}

/// What persistence would store for every key: the committed image where a pending
/// proposal changed the key, else the shard's state.
fn committed_view(leader: &mut Shard, spec: &Spec) -> Dump {
    let mut out = dump(leader);
    for db in 0..3 {
        for k in 0..4u8 {
            let key = key(k);
            if let Some(image) = spec.committed_image(db as u32, &key) {
                match image {
                    Some(Image {
                        value, expire_at, ..
                    }) => {
                        out.insert((db, key), (value.clone(), *expire_at));
                    }
                    None => {
                        out.remove(&(db, key));
                    }
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replicas_match_and_undo_restores_the_committed_state(
        proposals in prop::collection::vec(prop::collection::vec(prop::collection::vec(mutation(), 0..4), 1..3), 1..8),
        committed in 0usize..8,
    ) {
        let mut leader = shard();
        let mut replica = shard();
        let mut spec = Spec::default();
        let mut entries = Vec::new();
        for (i, p) in proposals.iter().enumerate() {
            if let Some(e) = propose(&mut leader, &mut spec, p, 1000 + i as u64) {
                entries.push(e);
            }
        }
        // Everything applied on the leader, nothing committed yet: the replica applies the
        // first `committed` entries, the leader commits the same.
        let committed = committed.min(entries.len());
        for (pid, payload) in &entries[..committed] {
            apply_entry(&mut replica, payload);
            prop_assert!(spec.commit(0, *pid).is_some());
            prop_assert_eq!(committed_view(&mut leader, &spec), dump(&mut replica));
        }
        // A replica that applies everything matches the leader.
        let mut all = replica_clone(&mut replica);
        for (_, payload) in &entries[committed..] {
            apply_entry(&mut all, payload);
        }
        prop_assert_eq!(dump(&mut all), dump(&mut leader));
        // Losing the leadership undoes the rest: back to the committed state.
        let undone = spec.rollback(0, &mut leader);
        prop_assert_eq!(undone.len(), entries.len() - committed);
        prop_assert_eq!(dump(&mut leader), dump(&mut replica));
        prop_assert!(spec.is_empty());
    }
}

fn replica_clone(s: &mut Shard) -> Shard {
    let mut out = shard();
    for ((db, k), (v, at)) in dump(s) {
        out.select(db);
        out.apply(Mutation::Restore {
            key: &k,
            value: v,
            expire_at: at,
        });
    }
    out.select(0);
    out
}

#[test]
fn a_proposal_keeps_the_image_from_before_its_first_batch() {
    let mut leader = shard();
    let mut spec = Spec::default();
    leader.apply(Mutation::SetInt {
        key: b"n",
        value: 1,
        ttl: Ttl::Clear,
    });
    for _ in 0..3 {
        leader.start_journal();
        leader.apply(Mutation::SetInt {
            key: b"n",
            value: 5,
            ttl: Ttl::Keep,
        });
        leader.journal_mut().expect("on").close_unit();
        let j = leader.take_journal().expect("on");
        assert_eq!(spec.absorb(0, j, 0), Some(1));
    }
    assert_eq!(spec.last_pid(0, b"n"), Some(1));
    match spec.committed_image(0, b"n") {
        Some(Some(Image { value, .. })) => assert_eq!(value, &Value::Int(1)),
        other => panic!("image {other:?}"),
    }
    let (pid, payload) = spec.take_filling(0).expect("filled");
    match record::decode(&payload).expect("decodes") {
        Payload::Records(r) => {
            assert_eq!(r.units, 3);
            assert_eq!(r.proposal, pid);
        }
        Payload::Opaque(_) => panic!("records"),
    }
    // Another batch after the hand-off opens the next proposal.
    leader.start_journal();
    leader.apply(Mutation::Del { key: b"n" });
    leader.journal_mut().expect("on").close_unit();
    let j = leader.take_journal().expect("on");
    assert_eq!(spec.absorb(0, j, 0), Some(2));
    assert_eq!(spec.commit(0, 2), None, "commits in order only");
    assert_eq!(spec.commit(0, 1).map(|k| k.len()), Some(1));
    assert_eq!(spec.committed(0), 1);
    match spec.committed_image(0, b"n") {
        Some(Some(Image { value, .. })) => assert_eq!(value, &Value::Int(5)),
        other => panic!("image {other:?}"),
    }
}
