//! Bitmap commands on large strings, one core, no sockets: the handlers run against a shard
//! the way the engine runs them.
//!
//! * `bitcount/1MB`, `bitcount/64MB`: BITCOUNT of a whole bitmap (POPCNT a word at a time;
//!   a byte-at-a-time count runs at ~1.2 GB/s on the 2-vCPU VM, the portable word loop at
//!   ~14 GB/s and with POPCNT at ~30 GB/s on cache-resident data, ~7 GB/s from memory).
//!   Measured: 37 µs and 4.6 ms.
//! * `bitpos/1MB_last_bit`: BITPOS 1 when the only set bit is the last one (whole words
//!   skipped). Measured: 35 µs.
//! * `setbit/64MB`: SETBIT of a random bit of a 64 MB bitmap: the record changes one byte in
//!   place (it copied the whole value twice before SetRange learnt to: ~40 ms per SETBIT in
//!   a debug build). Measured: 0.54 µs.
//! * `bitop_and/2x1MB`: BITOP AND of two 1 MB bitmaps into a third, stored. Folding each
//!   source into the result a slice at a time took it from 430 µs (all sources a word at a
//!   time) to 180 µs.
//! * `bitfield/incrby_3`: BITFIELD with three INCRBYs on a 1 MB bitmap. Measured: 0.79 µs.
//!
//! Run with `cargo bench --bench bitmap` (add `-- --warm-up-time 1 --measurement-time 3` for
//! a quick pass).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tallykv::cluster::SLOT_COUNT;
use tallykv::command::bitmap;
use tallykv::command::{Ctx, NodeView};
use tallykv::protocol::Out;
use tallykv::shard::{Mutation, Shard, ShardStats, Ttl};

struct Node;

impl NodeView for Node {
    fn proto_max_bulk_len(&self) -> usize {
        512 << 20
    }
    fn clustered(&self) -> bool {
        false
    }
    fn serves(&self, _slot: usize) -> bool {
        true
    }
    fn scripts(&self) -> &tallykv::command::script::Scripts {
        static SCRIPTS: std::sync::OnceLock<tallykv::command::script::Scripts> =
            std::sync::OnceLock::new();
        SCRIPTS.get_or_init(|| tallykv::command::script::Scripts::new(1))
    }
}

fn args(a: &[&str]) -> Vec<Bytes> {
    a.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

fn run(shard: &mut Shard, out: &mut Out, f: fn(&mut Ctx<'_>, &[Bytes]), a: &[Bytes]) {
    out.buf.clear();
    let mut ctx = Ctx {
        shard,
        now: 1,
        out,
        node: &Node,
    };
    f(&mut ctx, a);
}

fn bitmaps(c: &mut Criterion) {
    let mut shard = Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()));
    let pattern = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 2_654_435_761) as u8).collect() };
    for (key, value) in [
        ("{b}1MB", pattern(1 << 20)),
        ("{b}1MB_b", pattern((1 << 20) + 3)),
        ("{b}64MB", pattern(64 << 20)),
    ] {
        shard.apply(Mutation::SetStr {
            key: key.as_bytes(),
            value: &value,
            ttl: Ttl::Clear,
        });
    }
    let mut last = vec![0u8; 1 << 20];
    *last.last_mut().expect("not empty") = 1;
    shard.apply(Mutation::SetStr {
        key: b"{b}last",
        value: &last,
        ttl: Ttl::Clear,
    });
    let mut out = Out::new(false);

    let mut g = c.benchmark_group("bitmap");
    for key in ["{b}1MB", "{b}64MB"] {
        let a = args(&["BITCOUNT", key]);
        let name = format!("bitcount/{}", &key[3..]);
        g.bench_function(name, |b| {
            b.iter(|| run(&mut shard, &mut out, bitmap::bitcount, black_box(&a)))
        });
    }
    let a = args(&["BITPOS", "{b}last", "1"]);
    g.bench_function("bitpos/1MB_last_bit", |b| {
        b.iter(|| run(&mut shard, &mut out, bitmap::bitpos, black_box(&a)))
    });
    let mut i = 0u64;
    g.bench_function("setbit/64MB", |b| {
        b.iter(|| {
            i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let offset = (i >> 20) % (64 << 23);
            let a = args(&["SETBIT", "{b}64MB", &offset.to_string(), "1"]);
            run(&mut shard, &mut out, bitmap::setbit, &a)
        })
    });
    let a = args(&["BITOP", "AND", "{b}dest", "{b}1MB", "{b}1MB_b"]);
    g.bench_function("bitop_and/2x1MB", |b| {
        b.iter(|| run(&mut shard, &mut out, bitmap::bitop, black_box(&a)))
    });
    let a = args(&[
        "BITFIELD", "{b}1MB", "INCRBY", "u8", "#100", "1", "INCRBY", "i5", "77777", "3", "INCRBY",
        "u63", "5000000", "-1",
    ]);
    g.bench_function("bitfield/incrby_3", |b| {
        b.iter(|| run(&mut shard, &mut out, bitmap::bitfield, black_box(&a)))
    });
    g.finish();
}

criterion_group!(benches, bitmaps);
criterion_main!(benches);
