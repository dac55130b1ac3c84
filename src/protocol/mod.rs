//! RESP2/RESP3 on the wire: request parsing and reply encoding.
//!
//! This room knows bytes and frames, nothing about keys or values. The request parser is
//! hand-written because it sits on the hot path: it resumes mid-frame (no re-parse of a large
//! value), reads inline commands, hands out zero-copy arguments and reports Valkey's exact
//! protocol errors; `benches/parse.rs` measures it against redis-protocol's decoders (figures
//! in BENCHMARKS.md). redis-protocol serves the benches and tests, where an independent
//! decoder is worth having.

pub mod parser;
pub mod reply;

pub use parser::{Limits, ParseError, RequestParser};
pub use reply::Out;
