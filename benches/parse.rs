//! Request parsing throughput: tallykv's `RequestParser` against
//! redis-protocol 6's RESP2 decoder on the same buffer of 1000 pipelined
//! `SET key:000000000001 <32-byte value>` requests.
//!
//! * `tallykv/RequestParser`: the server's parser, `BytesMut` in, zero-copy
//!   `Bytes` arguments out (one `Vec<Bytes>` per command).
//! * `redis-protocol/decode_range`: redis-protocol's fastest decoder
//!   (frames hold byte ranges into the input; one `Vec` per array, no copies).
//!   Its `decode_bytes_mut` needs the crate's `bytes` feature, which this
//!   crate does not enable, and is `decode_range` plus building `Bytes` views.
//! * `redis-protocol/decode`: owned frames (every bulk string copied into a `Vec<u8>`).
//!
//! Run with `cargo bench --bench parse`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redis_protocol::resp2::decode::{decode, decode_range};
use redis_protocol::resp2::types::{OwnedFrame, RangeFrame};
use tallykv::protocol::parser::{Limits, RequestParser};

const REQUESTS: usize = 1000;

/// `*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$32\r\n<32 bytes>\r\n`, 1000 times.
fn pipelined_sets() -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUESTS * 80);
    for i in 0..REQUESTS {
        let key = format!("key:{i:012}");
        let value = format!("value-{i:026}");
        assert_eq!((key.len(), value.len()), (16, 32));
        out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        out.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
        out.extend_from_slice(format!("${}\r\n{value}\r\n", value.len()).as_bytes());
    }
    out
}

/// Parse every request in `buf` with a fresh parser; returns the number of requests.
fn run_tallykv(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut parser = RequestParser::new();
    let mut requests = 0;
    while let Some(args) = parser.parse(&mut buf, limits).expect("valid input") {
        black_box(&args);
        requests += 1;
    }
    requests
}

fn run_decode_range(input: &[u8]) -> usize {
    let mut offset = 0;
    let mut requests = 0;
    while let Some((frame, consumed)) = decode_range(&input[offset..]).expect("valid input") {
        black_box(&frame);
        offset += consumed;
        requests += 1;
    }
    requests
}

fn run_decode_owned(input: &[u8]) -> usize {
    let mut offset = 0;
    let mut requests = 0;
    while let Some((frame, consumed)) = decode(&input[offset..]).expect("valid input") {
        black_box(&frame);
        offset += consumed;
        requests += 1;
    }
    requests
}

/// Check once, outside the measurements, that every contender sees the same
/// 1000 three-argument requests and consumes the whole buffer.
fn sanity_check(input: &[u8], limits: &Limits) {
    let mut buf = BytesMut::from(input);
    let mut parser = RequestParser::new();
    let mut seen = 0;
    while let Some(args) = parser.parse(&mut buf, limits).expect("valid input") {
        assert_eq!(args.len(), 3);
        assert_eq!(&args[0][..], b"SET");
        assert_eq!(&args[1][..], format!("key:{seen:012}").as_bytes());
        assert_eq!(args[2].len(), 32);
        seen += 1;
    }
    assert_eq!(seen, REQUESTS);
    assert!(buf.is_empty());

    let mut offset = 0;
    let mut seen = 0;
    while let Some((frame, consumed)) = decode_range(&input[offset..]).expect("valid input") {
        assert!(matches!(&frame, RangeFrame::Array(items) if items.len() == 3));
        offset += consumed;
        seen += 1;
    }
    assert_eq!((seen, offset), (REQUESTS, input.len()));

    let (frame, _) = decode(input).expect("valid input").expect("complete frame");
    let OwnedFrame::Array(items) = frame else {
        panic!("expected an array, got {frame:?}");
    };
    assert_eq!(
        items[1],
        OwnedFrame::BulkString(b"key:000000000000".to_vec())
    );
    assert_eq!(run_decode_owned(input), REQUESTS);
}

fn bench_parse(c: &mut Criterion) {
    let input = pipelined_sets();
    let limits = Limits::default();
    sanity_check(&input, &limits);

    let mut group = c.benchmark_group("parse_1000_pipelined_set");
    group.throughput(Throughput::Elements(REQUESTS as u64));

    // The parser consumes its buffer, so each iteration gets a fresh copy;
    // making that copy is setup and not measured.
    group.bench_function("tallykv/RequestParser", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |buf| run_tallykv(buf, &limits),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("redis-protocol/decode_range", |b| {
        b.iter(|| run_decode_range(black_box(&input)))
    });
    group.bench_function("redis-protocol/decode", |b| {
        b.iter(|| run_decode_owned(black_box(&input)))
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
