//! What one ACL check costs per command, beside what the command costs: `User::check` of a
//! SET and a GET of `key:<n>` by a user with the key patterns benches/acl.py gives its 100
//! users (its own four patterns first, `~key:*` last, so every pattern is tried), against
//! the unrestricted default user. One core, no sockets, 100 users in the registry.
//!
//! Run with `cargo bench --bench acl_check`. The target is ACL checks costing at most
//! 5% of throughput; a request costs ~3 µs of server CPU at -P 16 (BENCHMARKS.md), so a
//! check must stay well under 150 ns.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tallykv::command::table::{lookup, registry};
use tallykv::security::acl::Users;

fn rules(i: usize) -> Vec<Bytes> {
    [
        "on".to_string(),
        ">bench-password".into(),
        format!("~team{i}:*"),
        format!("~idem:{i}:*"),
        format!("%R~card:{i}:*"),
        format!("%W~vel:{{{i}}}:*"),
        "~key:*".into(),
        "+@read".into(),
        "+@write".into(),
        "+@connection".into(),
        "-@dangerous".into(),
        "-flushdb".into(),
    ]
    .into_iter()
    .map(Bytes::from)
    .collect()
}

fn bench(c: &mut Criterion) {
    let users = Users::new(None);
    for i in 0..100 {
        users
            .set_user(format!("team{i}").as_bytes(), &rules(i))
            .expect("valid rules");
    }
    let restricted = users.get(b"team99").expect("team99");
    let default = users.get(b"default").expect("default");
    let reg = registry();
    for (name, args) in [
        ("set", vec!["SET", "key:000000012345", "xxx"]),
        ("get", vec!["GET", "key:000000012345"]),
    ] {
        let id = lookup(name.as_bytes()).expect("a command");
        let def = reg.def(id);
        let args: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
        let mut g = c.benchmark_group(format!("acl_check/{name}"));
        g.bench_function("default_user", |b| {
            b.iter(|| black_box(default.check(id, def, black_box(&args))).is_ok())
        });
        g.bench_function("100_users_5_patterns", |b| {
            b.iter(|| black_box(restricted.check(id, def, black_box(&args))).is_ok())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
