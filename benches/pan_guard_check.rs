//! What `card-pan-guard` costs per write command, beside what the command costs: the guard's
//! look at a SET's arguments (`PanGuard::inspect`, what the dispatcher runs for every write
//! while the guard is on) for redis-benchmark's SET (`key:<12 digits>`, 32 bytes of `x`), a
//! payment service's value (an amount and a 13-digit millisecond timestamp), a sealed blob
//! (random bytes) and a value holding a card number (found and masked). One core.
//!
//! Run with `cargo bench --bench pan_guard_check`. The target is the guard costing at
//! most 5% of SET throughput; a request costs ~3 µs of server CPU at -P 16 (BENCHMARKS.md),
//! so a look must stay well under 150 ns.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tallykv::command::table::{lookup, registry};
use tallykv::config::Config;
use tallykv::security::pan_guard::PanGuard;

fn bench(c: &mut Criterion) {
    let args = ["--card-pan-guard".to_string(), "refuse".to_string()];
    let config = Config::from_args(&args).expect("config");
    let guard = PanGuard::new(&config.runtime);
    let set = registry().def(lookup(b"set").expect("SET"));
    let args = |value: &[u8]| -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"key:000000123456"),
            Bytes::copy_from_slice(value),
        ]
    };
    let sealed: Vec<u8> = b"tkc\x01\x02k1\x00\x3c"
        .iter()
        .copied()
        .chain((0..96).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8))
        .collect();
    let cases = [
        ("redis-benchmark SET", args(&[b'x'; 32])),
        ("amount+timestamp", args(b"amount=12500;at=1765000000000")),
        ("sealed blob", args(&sealed)),
        ("card number (found)", args(b"pan=4111 1111 1111 1111")),
    ];
    let mut g = c.benchmark_group("pan_guard");
    for (name, args) in &cases {
        g.bench_function(*name, |b| b.iter(|| guard.inspect(set, black_box(args))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
