//! Fuzz the RESP request parser.
//!
//! Input layout: `[flags] [bulk] [mbulk] [inline] [k] [k chunk sizes] payload`.
//!
//! * flags bit 0 clear, raw mode: `payload` is fed to the parser as it is, in
//!   one piece, in the fuzzer-chosen chunk sizes, and byte by byte. No run may
//!   panic, and all three must give the same commands and error (a chunked run
//!   may only differ by hitting a "too big ..." limit earlier, because those
//!   depend on how much is buffered, as in Valkey).
//! * flags bit 0 set, round-trip mode: `payload` is decoded into commands,
//!   each encoded as a RESP multibulk or as an inline line with `\xHH`
//!   escapes, and the parser must give back exactly those commands.
//! * flags bit 1 clear: small limits taken from the next three bytes, so the
//!   limit checks are reachable with short inputs; set: `Limits::default()`.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

#[path = "../../src/protocol/parser.rs"]
#[allow(dead_code)]
mod parser;

use parser::{Limits, ParseError, RequestParser};

type Event = Result<Vec<Bytes>, ParseError>;

struct Outcome {
    events: Vec<Event>,
    /// Unconsumed bytes and `wanted()` at the end (meaningful without error).
    rest: Vec<u8>,
    wanted: usize,
}

impl Outcome {
    fn failed(&self) -> bool {
        matches!(self.events.last(), Some(Err(_)))
    }
}

/// Feed `input` in pieces of the sizes `chunks` yields (the rest at once when
/// it runs out), parsing everything possible after each piece.
fn run(input: &[u8], mut chunks: impl Iterator<Item = usize>, limits: &Limits) -> Outcome {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut pos = 0;
    'feed: while pos < input.len() {
        let n = chunks
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - pos);
        buf.extend_from_slice(&input[pos..pos + n]);
        pos += n;
        loop {
            let before = buf.len();
            match parser.parse(&mut buf, limits) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty(), "empty command returned");
                    assert!(
                        buf.len() < before,
                        "command returned without consuming input"
                    );
                    events.push(Ok(args));
                }
                Ok(None) => {
                    let wanted = parser.wanted();
                    assert!(
                        wanted == 0 || buf.len() < wanted,
                        "need-more although wanted() bytes are there"
                    );
                    break;
                }
                Err(e) => {
                    assert!(!e.message().is_empty() && !e.message_bytes().is_empty());
                    assert!(
                        !e.message_bytes().contains(&b'\r') && !e.message_bytes().contains(&b'\n')
                    );
                    // Errors are sticky and leave the buffer alone.
                    let len = buf.len();
                    assert_eq!(parser.parse(&mut buf, limits), Err(e.clone()));
                    assert_eq!(buf.len(), len);
                    check_too_big(&e, &buf, limits);
                    events.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    Outcome {
        events,
        rest: buf.to_vec(),
        wanted: parser.wanted(),
    }
}

/// A "too big" error is only right when more than `max_inline_len` bytes are
/// buffered and the line terminator is not among them (as `strchr` sees it:
/// a NUL ends the search).
fn check_too_big(e: &ParseError, buf: &[u8], limits: &Limits) {
    let needle = match e {
        ParseError::TooBigInlineRequest => b'\n',
        ParseError::TooBigMultibulkCount | ParseError::TooBigBulkCount => b'\r',
        _ => return,
    };
    assert!(
        buf.len() > limits.max_inline_len,
        "{e:?} with only {} bytes buffered",
        buf.len()
    );
    let searched = buf
        .iter()
        .position(|&b| b == 0)
        .map_or(buf, |nul| &buf[..nul]);
    assert!(
        !searched.contains(&needle),
        "{e:?} although the terminator is buffered"
    );
    match e {
        ParseError::TooBigInlineRequest => assert_ne!(buf[0], b'*'),
        ParseError::TooBigMultibulkCount => assert_eq!(buf[0], b'*'),
        _ => {}
    }
}

fn is_too_big(e: &ParseError) -> bool {
    matches!(
        e,
        ParseError::TooBigInlineRequest
            | ParseError::TooBigMultibulkCount
            | ParseError::TooBigBulkCount
    )
}

/// `pieces` must equal `whole`, except that it may stop early with a "too
/// big" error where `whole`, which had more input buffered at that point,
/// found the terminator of that line (and went on, or waits for more).
fn check_consistent(whole: &Outcome, pieces: &Outcome, what: &str) {
    if whole.events == pieces.events {
        if !whole.failed() {
            assert_eq!(
                whole.rest, pieces.rest,
                "{what}: different unconsumed bytes"
            );
            assert_eq!(whole.wanted, pieces.wanted, "{what}: different wanted()");
        }
        return;
    }
    let Some((Err(last), prefix)) = pieces.events.split_last() else {
        panic!(
            "{what}: events differ\n whole: {:?}\npieces: {:?}",
            whole.events, pieces.events
        );
    };
    assert!(
        is_too_big(last) && whole.events.starts_with(prefix),
        "{what}: events differ\n whole: {:?}\npieces: {:?}",
        whole.events,
        pieces.events
    );
}

/// Decode the payload into commands: per command one byte for the argument
/// count and the encoding, then per argument a length byte and that many bytes.
fn decode_commands(mut data: &[u8]) -> Vec<(bool, Vec<Vec<u8>>)> {
    let mut commands = Vec::new();
    while let Some((&head, rest)) = data.split_first() {
        data = rest;
        let argc = usize::from(head % 4) + 1;
        let inline = head & 0x80 != 0;
        let mut args = Vec::new();
        for _ in 0..argc {
            let Some((&len, rest)) = data.split_first() else {
                break;
            };
            let len = usize::from(len).min(rest.len());
            args.push(rest[..len].to_vec());
            data = &rest[len..];
        }
        if args.is_empty() {
            break;
        }
        commands.push((inline, args));
    }
    commands
}

fn encode(commands: &[(bool, Vec<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (inline, args) in commands {
        if *inline {
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.push(b'"');
                for byte in arg {
                    out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
                }
                out.push(b'"');
            }
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for arg in args {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let [flags, bulk, mbulk, inline, k] = *header;
    let k = usize::from(k % 16).min(rest.len());
    let (chunk_bytes, payload) = rest.split_at(k);
    let chunk_sizes = || {
        chunk_bytes
            .iter()
            .map(|&c| usize::from(c).max(1))
            .cycle()
            .take(payload.len())
    };

    let limits = if flags & 2 != 0 {
        Limits::default()
    } else {
        Limits {
            max_bulk_len: usize::from(bulk),
            max_multibulk_len: usize::from(mbulk),
            max_inline_len: usize::from(inline) * 4,
        }
    };

    if flags & 1 == 0 {
        let whole = run(payload, std::iter::empty(), &limits);
        let pieces = run(payload, chunk_sizes(), &limits);
        check_consistent(&whole, &pieces, "chunked");
        let bytewise = run(payload, std::iter::repeat(1), &limits);
        check_consistent(&whole, &bytewise, "byte by byte");
    } else {
        let commands = decode_commands(payload);
        let input = encode(&commands);
        let expected: Vec<Event> = commands
            .iter()
            .map(|(_, args)| Ok(args.iter().map(|a| Bytes::copy_from_slice(a)).collect()))
            .collect();
        let limits = Limits::default();
        for outcome in [
            run(&input, std::iter::empty(), &limits),
            run(&input, chunk_sizes(), &limits),
            run(&input, std::iter::repeat(1), &limits),
        ] {
            assert_eq!(outcome.events, expected);
            assert!(outcome.rest.is_empty());
            assert_eq!(outcome.wanted, 0);
        }
    }
});
