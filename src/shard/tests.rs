//! Unit tests of the shard: expiry, eviction, and (in proptest) random command streams
//! against a simple model.

use std::sync::Arc;

use super::*;

fn shard() -> Shard {
    Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()))
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
    assert!(matches!(&s.get(b"k", 0).unwrap().value, Value::Str(v) if &**v == b"v"));
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
