//! Hot-path RESP request parser.
//!
//! Parses client requests the way Valkey's `processMultibulkBuffer` and
//! `processInlineBuffer` (networking.c) do, byte for byte:
//!
//! * **Multibulk** (first byte `*`): `*<n>\r\n` followed by `n` bulk strings
//!   `$<len>\r\n<len bytes>\r\n`. The two bytes after a bulk payload are skipped
//!   without being checked, and so is the byte after the `\r` that ends a
//!   header line, exactly as Valkey does.
//! * **Inline** (any other first byte): one line up to `\n` (a `\r` right
//!   before it is dropped), split into arguments like `sdssplitargs`.
//!
//! Line terminators are searched the way Valkey's `strchr` over the
//! NUL-terminated query buffer finds them: a NUL byte that comes before the
//! terminator hides it. Such a line never completes, and once the unparsed
//! input exceeds [`Limits::max_inline_len`] it fails with the matching
//! "too big" error. Bulk *payloads* are length-delimited and may hold any
//! bytes, NUL included.
//!
//! The parser is resumable: between calls it keeps the arguments read so far,
//! the number still expected, the length of a pending bulk and how far the
//! current line has already been searched, so every input byte is examined at
//! most once however the input is split. Bulk payloads come out as zero-copy
//! [`Bytes`] split off the caller's buffer; [`RequestParser::wanted`] tells
//! the caller how much buffer a large pending bulk needs so it can reserve it
//! in one go (and then the whole payload is handed out without a copy).
//!
//! This file depends only on `bytes` and `std` (the fuzz target includes it
//! by path).

use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// Valkey's `proto-max-bulk-len` default (512 MiB).
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Valkey rejects multibulk counts above `INT_MAX`.
pub const DEFAULT_MAX_MULTIBULK_LEN: usize = i32::MAX as usize;
/// Valkey's `PROTO_INLINE_MAX_SIZE` (64 KiB).
pub const DEFAULT_MAX_INLINE_LEN: usize = 64 * 1024;

/// Never pre-allocate room for more arguments than this on the strength of a
/// multibulk header alone (Valkey uses the same cap for `argv`).
const MAX_ARGS_PREALLOC: usize = 1024;

/// Size limits applied while parsing.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted bulk length (`proto-max-bulk-len`); longer is
    /// "invalid bulk length".
    pub max_bulk_len: usize,
    /// Largest accepted multibulk count; larger is "invalid multibulk length".
    pub max_multibulk_len: usize,
    /// How many unparsed bytes may pile up while no line terminator has been
    /// found: for inline requests, multibulk headers and bulk length lines
    /// alike (Valkey uses `PROTO_INLINE_MAX_SIZE` for all three).
    pub max_inline_len: usize,
    /// The client has not authenticated and must (Valkey's `authRequired`): a multibulk of
    /// more than [`UNAUTHENTICATED_MAX_MULTIBULK`] arguments or a bulk longer than
    /// [`UNAUTHENTICATED_MAX_BULK`] is refused, so a stranger cannot make the server hold
    /// big requests (CVE-2021-32675).
    pub unauthenticated: bool,
}

/// The most arguments a request of a client that must still authenticate may have.
pub const UNAUTHENTICATED_MAX_MULTIBULK: u64 = 10;
/// The longest argument a client that must still authenticate may send.
pub const UNAUTHENTICATED_MAX_BULK: u64 = 16 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_multibulk_len: DEFAULT_MAX_MULTIBULK_LEN,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
            unauthenticated: false,
        }
    }
}

/// A protocol error. The server replies `-ERR <message>\r\n` and closes the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No `\n` within `max_inline_len` bytes of an inline request.
    TooBigInlineRequest,
    /// Inline request with an unterminated quote, or a closing quote followed
    /// by something other than whitespace.
    UnbalancedQuotes,
    /// No `\r` within `max_inline_len` bytes of a multibulk header.
    TooBigMultibulkCount,
    /// Multibulk count is not a strict integer or exceeds `max_multibulk_len`.
    InvalidMultibulkLength,
    /// No `\r` within `max_inline_len` bytes of a bulk length line.
    TooBigBulkCount,
    /// A bulk length line did not start with `$`; holds the byte it started with.
    ExpectedDollar(u8),
    /// Bulk length is not a strict integer, is negative or exceeds `max_bulk_len`.
    InvalidBulkLength,
    /// More than [`UNAUTHENTICATED_MAX_MULTIBULK`] arguments before authenticating.
    UnauthenticatedMultibulkLength,
    /// A bulk longer than [`UNAUTHENTICATED_MAX_BULK`] before authenticating.
    UnauthenticatedBulkLength,
}

const EXPECTED_DOLLAR_PREFIX: &[u8] = b"Protocol error: expected '$', got '";
const EXPECTED_DOLLAR_LEN: usize = EXPECTED_DOLLAR_PREFIX.len() + 2;

/// Exact reply text for `ExpectedDollar(b)`, for every byte. Valkey formats the
/// byte with `%c` and then maps `\r` and `\n` to spaces
/// (`addReplyErrorFormat`); every other byte, NUL and non-ASCII included, is
/// sent as it is.
static EXPECTED_DOLLAR: [[u8; EXPECTED_DOLLAR_LEN]; 256] = build_expected_dollar();

const fn build_expected_dollar() -> [[u8; EXPECTED_DOLLAR_LEN]; 256] {
    let mut table = [[0u8; EXPECTED_DOLLAR_LEN]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < EXPECTED_DOLLAR_PREFIX.len() {
            table[b][i] = EXPECTED_DOLLAR_PREFIX[i];
            i += 1;
        }
        let c = b as u8;
        table[b][i] = if c == b'\r' || c == b'\n' { b' ' } else { c };
        table[b][i + 1] = b'\'';
        b += 1;
    }
    table
}

impl ParseError {
    /// The reply text without the leading `-ERR ` and without CRLF, e.g.
    /// `"Protocol error: invalid bulk length"`.
    ///
    /// Exact for every error except `ExpectedDollar` with a non-ASCII byte:
    /// Valkey sends that raw byte, which a `str` cannot hold, so here it is
    /// shown as U+FFFD. Use [`ParseError::message_bytes`] for the exact bytes.
    #[must_use]
    pub fn message(&self) -> &'static str {
        match self {
            ParseError::TooBigInlineRequest => "Protocol error: too big inline request",
            ParseError::UnbalancedQuotes => "Protocol error: unbalanced quotes in request",
            ParseError::TooBigMultibulkCount => "Protocol error: too big mbulk count string",
            ParseError::InvalidMultibulkLength => "Protocol error: invalid multibulk length",
            ParseError::TooBigBulkCount => "Protocol error: too big bulk count string",
            ParseError::InvalidBulkLength => "Protocol error: invalid bulk length",
            ParseError::UnauthenticatedMultibulkLength => {
                "Protocol error: unauthenticated multibulk length"
            }
            ParseError::UnauthenticatedBulkLength => "Protocol error: unauthenticated bulk length",
            ParseError::ExpectedDollar(b) => {
                match std::str::from_utf8(&EXPECTED_DOLLAR[*b as usize]) {
                    Ok(s) => s,
                    Err(_) => "Protocol error: expected '$', got '\u{FFFD}'",
                }
            }
        }
    }

    /// The exact bytes Valkey puts between `-ERR ` and CRLF.
    #[must_use]
    pub fn message_bytes(&self) -> &'static [u8] {
        match self {
            ParseError::ExpectedDollar(b) => &EXPECTED_DOLLAR[*b as usize],
            other => other.message().as_bytes(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParseError {}

/// Resumable request parser; one per connection.
///
/// Contract: between calls the caller may only *append* to `buf` (what the
/// parser consumed is gone, what it left is kept as it was). After an error
/// the parser stays failed and returns the same error on every call.
#[derive(Debug, Default)]
pub struct RequestParser {
    /// Bulk strings still expected by the multibulk in progress; 0 when the
    /// next byte starts a new request.
    multibulk_remaining: usize,
    /// Length of the bulk whose `$<len>` line was read but whose payload is
    /// not complete yet.
    bulk_len: Option<usize>,
    /// Arguments of the multibulk in progress.
    args: Vec<Bytes>,
    /// Input bytes the multibulk in progress has consumed so far: its header, its length
    /// lines, its payloads and their CRLFs (see [`RequestParser::pending_bytes`]).
    request_bytes: usize,
    /// How many bytes at the front of the buffer have already been searched
    /// for the terminator of the line being read (0 when no line is pending).
    /// Stops at a NUL byte, which hides anything after it.
    scanned: usize,
    /// Sticky protocol error.
    failed: Option<ParseError>,
}

/// Outcome of reading a multibulk header.
enum Header {
    NeedMore,
    /// `*0`, `*-1` and friends: nothing to run, go on with the next request.
    Empty,
    /// Arguments are now expected.
    Started,
}

impl RequestParser {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one complete request from the front of `buf`.
    ///
    /// `Ok(Some(args))`: one command, `args` non-empty, consumed from `buf`.
    /// `Ok(None)`: more bytes are needed; the parser keeps its state and may
    /// already have consumed part of the request from `buf`.
    /// `Err(e)`: protocol error; reply `-ERR <e.message()>` and close.
    /// Empty inline lines and `*0` / `*-1` multibulks are skipped.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ParseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.parse_inner(buf, limits);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.args = Vec::new();
            self.request_bytes = 0;
            self.multibulk_remaining = 0;
            self.bulk_len = None;
            self.scanned = 0;
        }
        result
    }

    /// Minimum total length `buf` must reach before `parse` can make progress,
    /// or 0 if unknown. Non-zero only while a bulk payload is pending: then it
    /// is the payload length plus its CRLF (everything before the payload has
    /// already been consumed), so `buf.reserve(wanted - buf.len())` lets the
    /// whole payload arrive in one allocation and be handed out without a copy.
    #[must_use]
    pub fn wanted(&self) -> usize {
        match self.bulk_len {
            Some(len) if self.multibulk_remaining > 0 && self.failed.is_none() => {
                len.saturating_add(2)
            }
            _ => 0,
        }
    }

    /// Memory the multibulk request in progress holds, for callers that bound per-client
    /// memory (`client-query-buffer-limit`): every input byte it has consumed plus its
    /// argument vector.
    ///
    /// Consumed bytes, not only payload bytes (Valkey's `argv_len_sum`): the arguments are
    /// zero-copy slices of the caller's read buffers, which stay allocated as long as any
    /// slice of them lives, headers and length lines included. And the vector: with
    /// payloads alone, `*2147483647` followed by endless `$0` bulks held nothing by that
    /// count while each empty argument took `size_of::<Bytes>()` bytes of the vector (and
    /// twice that while it doubled), so memory grew without bound under any limit.
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        let vector = self
            .args
            .capacity()
            .saturating_mul(std::mem::size_of::<Bytes>());
        self.request_bytes.saturating_add(vector)
    }

    fn parse_inner(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ParseError> {
        loop {
            if self.multibulk_remaining == 0 {
                let Some(&first) = buf.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.parse_inline(buf, limits)? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(args)),
                    }
                }
                match self.parse_multibulk_header(buf, limits)? {
                    Header::NeedMore => return Ok(None),
                    Header::Empty => continue,
                    Header::Started => {}
                }
            }
            return self.parse_bulks(buf, limits);
        }
    }

    /// Inline request. `Some(vec![])` for a blank line (skipped by the caller).
    fn parse_inline(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ParseError> {
        let newline = match find_terminator(buf, self.scanned, b'\n') {
            Ok(i) => i,
            Err(stop) => {
                self.scanned = stop;
                if buf.len() > limits.max_inline_len {
                    return Err(ParseError::TooBigInlineRequest);
                }
                return Ok(None);
            }
        };
        self.scanned = 0;
        let line_len = if newline > 0 && buf[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        let mut line = buf.split_to(newline + 1).freeze();
        line.truncate(line_len);
        match split_args(&line) {
            Some(args) => Ok(Some(args)),
            None => Err(ParseError::UnbalancedQuotes),
        }
    }

    /// `*<n>\r\n`; `buf[0]` is `*`.
    fn parse_multibulk_header(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Header, ParseError> {
        let cr = match find_terminator(buf, self.scanned, b'\r') {
            // Valkey wants one more byte after the `\r` (assumed to be `\n`,
            // not checked) before it looks at the line.
            Ok(i) if i + 1 < buf.len() => i,
            Ok(i) => {
                self.scanned = i;
                return Ok(Header::NeedMore);
            }
            Err(stop) => {
                self.scanned = stop;
                if buf.len() > limits.max_inline_len {
                    return Err(ParseError::TooBigMultibulkCount);
                }
                return Ok(Header::NeedMore);
            }
        };
        let count = match parse_strict_i64(&buf[1..cr]) {
            Some(n) if n <= 0 => None,
            Some(n) if n as u64 > limits.max_multibulk_len as u64 => {
                return Err(ParseError::InvalidMultibulkLength);
            }
            Some(n) if limits.unauthenticated && n as u64 > UNAUTHENTICATED_MAX_MULTIBULK => {
                return Err(ParseError::UnauthenticatedMultibulkLength);
            }
            Some(n) => Some(n as usize),
            None => return Err(ParseError::InvalidMultibulkLength),
        };
        buf.advance(cr + 2);
        self.scanned = 0;
        match count {
            None => Ok(Header::Empty),
            Some(n) => {
                self.multibulk_remaining = n;
                self.bulk_len = None;
                // The count is the client's word: room for a few arguments at most, the
                // vector grows as they arrive (and counts in `pending_bytes` as it does).
                self.args = Vec::with_capacity(n.min(MAX_ARGS_PREALLOC));
                self.request_bytes = cr + 2;
                Ok(Header::Started)
            }
        }
    }

    /// Bulk strings of the multibulk in progress.
    fn parse_bulks(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ParseError> {
        while self.multibulk_remaining > 0 {
            let len = match self.bulk_len {
                Some(len) => len,
                None => {
                    let len = self.parse_bulk_len(buf, limits)?;
                    match len {
                        Some(len) => len,
                        None => return Ok(None),
                    }
                }
            };
            // Payload plus two bytes Valkey skips without checking them.
            if buf.len() < len.saturating_add(2) {
                return Ok(None);
            }
            let arg = buf.split_to(len).freeze();
            buf.advance(2);
            self.args.push(arg);
            self.request_bytes = self.request_bytes.saturating_add(len + 2);
            self.bulk_len = None;
            self.multibulk_remaining -= 1;
        }
        self.request_bytes = 0;
        Ok(Some(std::mem::take(&mut self.args)))
    }

    /// `$<len>\r\n`; on success consumes the line and records the pending length.
    fn parse_bulk_len(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<usize>, ParseError> {
        let cr = match find_terminator(buf, self.scanned, b'\r') {
            Ok(i) if i + 1 < buf.len() => i,
            Ok(i) => {
                self.scanned = i;
                return Ok(None);
            }
            Err(stop) => {
                self.scanned = stop;
                if buf.len() > limits.max_inline_len {
                    return Err(ParseError::TooBigBulkCount);
                }
                return Ok(None);
            }
        };
        if buf[0] != b'$' {
            return Err(ParseError::ExpectedDollar(buf[0]));
        }
        let len = match parse_strict_i64(&buf[1..cr]) {
            Some(n) if n >= 0 && n as u64 <= limits.max_bulk_len as u64 => {
                if limits.unauthenticated && n as u64 > UNAUTHENTICATED_MAX_BULK {
                    return Err(ParseError::UnauthenticatedBulkLength);
                }
                n as usize
            }
            _ => return Err(ParseError::InvalidBulkLength),
        };
        buf.advance(cr + 2);
        self.request_bytes = self.request_bytes.saturating_add(cr + 2);
        self.scanned = 0;
        self.bulk_len = Some(len);
        Ok(Some(len))
    }
}

/// Search `hay[from..]` for `needle` the way `strchr` searches a
/// NUL-terminated buffer: `Ok(index)` if `needle` comes first, otherwise
/// `Err(stop)` where `stop` is the index of the NUL that ended the search or
/// `hay.len()`. Searching again from `stop` later gives the right answer for
/// the extended buffer without looking at any byte twice (a NUL stop answers
/// at once).
#[inline]
fn find_terminator(hay: &[u8], from: usize, needle: u8) -> Result<usize, usize> {
    let from = from.min(hay.len());
    for (i, &b) in hay[from..].iter().enumerate() {
        if b == needle {
            return Ok(from + i);
        }
        if b == 0 {
            return Err(from + i);
        }
    }
    Err(hay.len())
}

/// Valkey's `string2ll`: optional `-`, then `0` alone or a digit 1-9 followed by
/// digits; no `+`, no spaces, no leading zeros, no `-0`; fewer than 21 bytes;
/// must fit an `i64`.
fn parse_strict_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    let (&first, rest) = digits.split_first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut v = u64::from(first - b'0');
    for &c in rest {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// C `isspace` in the C locale.
#[inline]
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[inline]
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Split an inline request line like Valkey's `sdssplitargs`; `None` on
/// unbalanced quotes. The line holds no NUL and no `\n` (the terminator
/// search guarantees it), so "past the end" plays the role of C's NUL.
///
/// * Blanks between arguments: anything `isspace` (space, `\t`, `\n`, `\v`,
///   `\f`, `\r`). An unquoted argument, however, ends only at space, `\n`,
///   `\r`, `\t` or the end (so `a\vb` is one argument).
/// * A quote inside an unquoted argument opens a quoted part (`ab"c d"` is
///   `abc d`).
/// * Double quotes: `\xHH` (two hex digits), `\n \r \t \b \a`, and `\c` for
///   any other `c`.
/// * Single quotes: only `\'` is an escape.
/// * A closing quote must be followed by whitespace or the end.
///
/// Arguments without quotes are zero-copy slices of `line`.
fn split_args(line: &Bytes) -> Option<Vec<Bytes>> {
    let s: &[u8] = line;
    let at = |p: usize| -> u8 { s.get(p).copied().unwrap_or(0) };
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while at(p) != 0 && is_c_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(args);
        }
        let start = p;
        // Becomes Some once the argument is no longer a plain slice of `s`.
        let mut owned: Option<Vec<u8>> = None;
        let mut in_double = false;
        let mut in_single = false;
        let mut end = start;
        loop {
            let c = at(p);
            let mut done = false;
            if in_double {
                let out = owned.get_or_insert_with(Vec::new);
                let hex = if c == b'\\' && at(p + 1) == b'x' {
                    hex_value(at(p + 2)).zip(hex_value(at(p + 3)))
                } else {
                    None
                };
                if let Some((hi, lo)) = hex {
                    out.push(hi * 16 + lo);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    out.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    out.push(c);
                }
            } else if in_single {
                let out = owned.get_or_insert_with(Vec::new);
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    out.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' | b'\'' => {
                        if c == b'"' {
                            in_double = true;
                        } else {
                            in_single = true;
                        }
                        owned.get_or_insert_with(|| s[start..p].to_vec());
                    }
                    _ => {
                        if let Some(out) = owned.as_mut() {
                            out.push(c);
                        }
                    }
                }
            }
            if done {
                end = p;
            }
            if at(p) != 0 {
                p += 1;
            }
            if done {
                break;
            }
        }
        args.push(match owned {
            Some(v) => Bytes::from(v),
            None => line.slice(start..end),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Event = Result<Vec<Bytes>, ParseError>;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn cmd(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| b(p)).collect()
    }

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Parse everything currently parseable; stops at need-more or the first error.
    fn drain(p: &mut RequestParser, buf: &mut BytesMut, limits: &Limits, out: &mut Vec<Event>) {
        loop {
            match p.parse(buf, limits) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty());
                    out.push(Ok(args));
                }
                Ok(None) => return,
                Err(e) => {
                    out.push(Err(e));
                    return;
                }
            }
        }
    }

    fn failed(out: &[Event]) -> bool {
        matches!(out.last(), Some(Err(_)))
    }

    /// Feed `input` in the given chunk sizes (last chunk takes the rest).
    fn run_chunks(input: &[u8], chunks: &[usize], limits: &Limits) -> (Vec<Event>, BytesMut) {
        let mut p = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() && !failed(&out) {
            let n = if i < chunks.len() {
                chunks[i].max(1)
            } else {
                input.len() - pos
            };
            let n = n.min(input.len() - pos);
            buf.extend_from_slice(&input[pos..pos + n]);
            pos += n;
            i += 1;
            drain(&mut p, &mut buf, limits, &mut out);
        }
        (out, buf)
    }

    fn run_once(input: &[u8], limits: &Limits) -> (Vec<Event>, BytesMut) {
        run_chunks(input, &[], limits)
    }

    fn run_bytewise(input: &[u8], limits: &Limits) -> (Vec<Event>, BytesMut) {
        run_chunks(input, &vec![1; input.len()], limits)
    }

    fn parse_one(input: &[u8]) -> Event {
        let (out, _) = run_once(input, &Limits::default());
        assert_eq!(
            out.len(),
            1,
            "expected exactly one event for {input:?}, got {out:?}"
        );
        out.into_iter().next().unwrap()
    }

    fn parse_err(input: &[u8]) -> ParseError {
        parse_one(input).expect_err("expected an error")
    }

    fn need_more(input: &[u8], limits: &Limits) {
        let (out, _) = run_once(input, limits);
        assert!(
            out.is_empty(),
            "expected need-more for {input:?}, got {out:?}"
        );
    }

    // ---------- multibulk ----------

    #[test]
    fn single_multibulk() {
        assert_eq!(
            parse_one(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"),
            Ok(cmd(&[b"SET", b"key", b"value"]))
        );
    }

    #[test]
    fn pipelined_commands_and_leftover() {
        let mut input = Vec::new();
        input.extend(encode(&[b"PING"]));
        input.extend(encode(&[b"SET", b"a", b"1"]));
        input.extend(encode(&[b"GET", b"a"]));
        input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r"); // incomplete
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&input[..]);
        let l = Limits::default();
        assert_eq!(p.parse(&mut buf, &l), Ok(Some(cmd(&[b"PING"]))));
        assert_eq!(p.parse(&mut buf, &l), Ok(Some(cmd(&[b"SET", b"a", b"1"]))));
        assert_eq!(p.parse(&mut buf, &l), Ok(Some(cmd(&[b"GET", b"a"]))));
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
        // The header and the first argument were consumed; the partial length line stays.
        assert_eq!(&buf[..], b"$1\r");
        buf.extend_from_slice(b"\nb\r\n");
        assert_eq!(p.parse(&mut buf, &l), Ok(Some(cmd(&[b"GET", b"b"]))));
        assert!(buf.is_empty());
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
    }

    #[test]
    fn empty_multibulks_are_skipped() {
        let input = b"*0\r\n*-1\r\n*-100\r\n*1\r\n$4\r\nPING\r\n*0\r\n";
        let (out, rest) = run_once(input, &Limits::default());
        assert_eq!(out, vec![Ok(cmd(&[b"PING"]))]);
        assert!(rest.is_empty());
    }

    #[test]
    fn empty_bulk_argument() {
        assert_eq!(
            parse_one(b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"),
            Ok(cmd(&[b"GET", b""]))
        );
    }

    #[test]
    fn bulk_trailer_is_not_checked() {
        // Valkey skips the two bytes after a payload without looking at them.
        let (out, rest) = run_once(
            b"*2\r\n$3\r\nfooXY$3\r\nbarZZ*1\r\n$1\r\nx\r\n",
            &Limits::default(),
        );
        assert_eq!(out, vec![Ok(cmd(&[b"foo", b"bar"])), Ok(cmd(&[b"x"]))]);
        assert!(rest.is_empty());
    }

    #[test]
    fn header_cr_needs_one_more_byte_which_is_not_checked() {
        let l = Limits::default();
        need_more(b"*1\r", &l);
        need_more(b"*1\r\n$3\r", &l);
        // The byte after '\r' is skipped whatever it is.
        assert_eq!(parse_one(b"*1\rX$3\rYfoo\r\n"), Ok(cmd(&[b"foo"])));
    }

    #[test]
    fn header_line_search_runs_past_lf() {
        // Valkey looks for '\r', not '\n': "*1\n$3\r\n" has the count line "1\n$3".
        assert_eq!(
            parse_err(b"*1\n$3\r\nfoo\r\n"),
            ParseError::InvalidMultibulkLength
        );
    }

    #[test]
    fn multibulk_count_parsing() {
        let l = Limits::default();
        for bad in [
            &b"*\r\n"[..],
            b"*abc\r\n",
            b"*01\r\n",
            b"*-0\r\n",
            b"*+1\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*1a\r\n",
            b"*-\r\n",
            b"*2147483648\r\n",
            b"*9223372036854775808\r\n",
            b"*99999999999999999999\r\n",
            b"*000000000000000000001\r\n",
        ] {
            assert_eq!(
                parse_err(bad),
                ParseError::InvalidMultibulkLength,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        need_more(b"*2147483647\r\n", &l);
        need_more(b"*1\r\n", &l);
        // i64::MIN and other negatives are fine (skipped).
        let (out, rest) = run_once(b"*-9223372036854775808\r\n*-9\r\n", &l);
        assert!(out.is_empty() && rest.is_empty());
        assert_eq!(
            parse_err(b"*-9223372036854775809\r\n"),
            ParseError::InvalidMultibulkLength
        );
    }

    #[test]
    fn multibulk_count_limit() {
        let l = Limits {
            max_multibulk_len: 3,
            ..Limits::default()
        };
        need_more(b"*3\r\n", &l);
        let (out, _) = run_once(b"*4\r\n", &l);
        assert_eq!(out, vec![Err(ParseError::InvalidMultibulkLength)]);
    }

    #[test]
    fn bulk_length_parsing() {
        let l = Limits::default();
        for bad in [
            &b"*1\r\n$\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$01\r\n",
            b"*1\r\n$+1\r\n",
            b"*1\r\n$1 \r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(
                parse_err(bad),
                ParseError::InvalidBulkLength,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        need_more(b"*1\r\n$536870912\r\n", &l);
        let small = Limits {
            max_bulk_len: 5,
            ..Limits::default()
        };
        assert_eq!(
            run_once(b"*1\r\n$5\r\nhello\r\n", &small).0,
            vec![Ok(cmd(&[b"hello"]))]
        );
        assert_eq!(
            run_once(b"*1\r\n$6\r\n", &small).0,
            vec![Err(ParseError::InvalidBulkLength)]
        );
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(parse_err(b"*1\r\n:3\r\n"), ParseError::ExpectedDollar(b':'));
        assert_eq!(
            ParseError::ExpectedDollar(b':').message(),
            "Protocol error: expected '$', got ':'"
        );
        // Only reported once the whole line is there.
        need_more(b"*1\r\nfoo", &Limits::default());
        need_more(b"*1\r\nfoo\r", &Limits::default());
        assert_eq!(
            parse_err(b"*2\r\n$1\r\na\r\nfoo\r\n"),
            ParseError::ExpectedDollar(b'f')
        );
        // An empty line: the byte is '\r', which Valkey prints as a space.
        let e = parse_err(b"*1\r\n\r\n");
        assert_eq!(e, ParseError::ExpectedDollar(b'\r'));
        assert_eq!(e.message(), "Protocol error: expected '$', got ' '");
        assert_eq!(
            ParseError::ExpectedDollar(b'\n').message(),
            "Protocol error: expected '$', got ' '"
        );
        // Non-ASCII bytes go out raw.
        let e = parse_err(b"*1\r\n\xff\r\n");
        assert_eq!(e, ParseError::ExpectedDollar(0xff));
        assert_eq!(
            e.message_bytes(),
            b"Protocol error: expected '$', got '\xff'"
        );
        assert_eq!(e.message(), "Protocol error: expected '$', got '\u{FFFD}'");
        for byte in 0..=255u8 {
            let e = ParseError::ExpectedDollar(byte);
            let bytes = e.message_bytes();
            assert_eq!(bytes.len(), EXPECTED_DOLLAR_LEN);
            assert!(bytes.starts_with(EXPECTED_DOLLAR_PREFIX));
            assert!(!bytes.contains(&b'\r') && !bytes.contains(&b'\n'));
            if byte.is_ascii() {
                assert_eq!(e.message().as_bytes(), bytes);
            }
            assert_eq!(e.to_string(), e.message());
        }
    }

    #[test]
    fn too_big_mbulk_count_string() {
        let l = Limits::default();
        let mut input = vec![b'*'];
        input.resize(64 * 1024, b'1');
        need_more(&input, &l); // exactly 64 KiB: not yet
        input.push(b'1');
        let (out, _) = run_once(&input, &l);
        assert_eq!(out, vec![Err(ParseError::TooBigMultibulkCount)]);
        assert_eq!(
            ParseError::TooBigMultibulkCount.message(),
            "Protocol error: too big mbulk count string"
        );
        // A '\r' anywhere within the buffer means "whole line", checked as a number.
        let mut input = vec![b'*'];
        input.resize(100_000, b'1');
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            run_once(&input, &l).0,
            vec![Err(ParseError::InvalidMultibulkLength)]
        );
        // ...but arriving in small pieces, the limit trips first (as in Valkey).
        assert_eq!(
            run_chunks(&input, &[1000; 200], &l).0,
            vec![Err(ParseError::TooBigMultibulkCount)]
        );
    }

    #[test]
    fn too_big_bulk_count_string() {
        let l = Limits::default();
        let mut input = b"*1\r\n".to_vec();
        input.resize(4 + 64 * 1024, b'$');
        need_more(&input, &l);
        input.push(b'1');
        let (out, _) = run_once(&input, &l);
        assert_eq!(out, vec![Err(ParseError::TooBigBulkCount)]);
        assert_eq!(
            ParseError::TooBigBulkCount.message(),
            "Protocol error: too big bulk count string"
        );
        // The size check comes before the '$' check.
        let mut input = b"*1\r\n".to_vec();
        input.resize(4 + 64 * 1024 + 1, b'x');
        assert_eq!(
            run_once(&input, &l).0,
            vec![Err(ParseError::TooBigBulkCount)]
        );
    }

    #[test]
    fn all_error_messages() {
        let cases = [
            (
                ParseError::TooBigInlineRequest,
                "Protocol error: too big inline request",
            ),
            (
                ParseError::UnbalancedQuotes,
                "Protocol error: unbalanced quotes in request",
            ),
            (
                ParseError::TooBigMultibulkCount,
                "Protocol error: too big mbulk count string",
            ),
            (
                ParseError::InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                ParseError::TooBigBulkCount,
                "Protocol error: too big bulk count string",
            ),
            (
                ParseError::ExpectedDollar(b'X'),
                "Protocol error: expected '$', got 'X'",
            ),
            (
                ParseError::InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
        ];
        for (e, msg) in cases {
            assert_eq!(e.message(), msg);
            assert_eq!(e.message_bytes(), msg.as_bytes());
        }
        assert_eq!(
            ParseError::ExpectedDollar(0).message_bytes(),
            b"Protocol error: expected '$', got '\0'"
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut p = RequestParser::new();
        let l = Limits::default();
        let mut buf = BytesMut::from(&b"*1\r\n$x\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(p.parse(&mut buf, &l), Err(ParseError::InvalidBulkLength));
        let len = buf.len();
        assert_eq!(p.parse(&mut buf, &l), Err(ParseError::InvalidBulkLength));
        assert_eq!(buf.len(), len);
        assert_eq!(p.wanted(), 0);
    }

    #[test]
    fn binary_values_with_all_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut rev = all.clone();
        rev.reverse();
        let crlf_key = b"k\r\ney\r\n\0".to_vec();
        let args: [&[u8]; 4] = [b"SET", &crlf_key, &all, &rev];
        let mut input = encode(&args);
        input.extend(encode(&args));
        let expected: Vec<Event> = vec![Ok(cmd(&args)), Ok(cmd(&args))];
        let l = Limits::default();
        assert_eq!(run_once(&input, &l).0, expected);
        assert_eq!(run_bytewise(&input, &l).0, expected);
        // Each single byte value as its own argument too.
        let singles: Vec<Vec<u8>> = (0..=255u8).map(|x| vec![x]).collect();
        let refs: Vec<&[u8]> = singles.iter().map(|v| &v[..]).collect();
        assert_eq!(run_bytewise(&encode(&refs), &l).0, vec![Ok(cmd(&refs))]);
    }

    // ---------- splitting / resumption ----------

    fn mixed_input() -> Vec<u8> {
        let mut input = Vec::new();
        input.extend(encode(&[b"SET", b"key", b"hello world"]));
        input.extend_from_slice(b"PING\r\n");
        input.extend_from_slice(b"*0\r\n");
        input.extend_from_slice(b"\r\n   \n");
        input.extend(encode(&[b"GET", b""]));
        input.extend_from_slice(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\n");
        input.extend(encode(&[b"MSET", b"\r\n\0", b"$3\r\n", b"*1\r\n"]));
        input.extend_from_slice(b"*-1\r\n");
        input.extend_from_slice(b"*1\rX$2\rYhi\r\n");
        input.extend_from_slice(b"ECHO x\n");
        input
    }

    fn mixed_expected() -> Vec<Event> {
        vec![
            Ok(cmd(&[b"SET", b"key", b"hello world"])),
            Ok(cmd(&[b"PING"])),
            Ok(cmd(&[b"GET", b""])),
            Ok(cmd(&[b"set", b"a b", b"c'd", b"A\n"])),
            Ok(cmd(&[b"MSET", b"\r\n\0", b"$3\r\n", b"*1\r\n"])),
            Ok(cmd(&[b"hi"])),
            Ok(cmd(&[b"ECHO", b"x"])),
        ]
    }

    #[test]
    fn mixed_one_shot() {
        let (out, rest) = run_once(&mixed_input(), &Limits::default());
        assert_eq!(out, mixed_expected());
        assert!(rest.is_empty());
    }

    #[test]
    fn mixed_byte_by_byte() {
        let (out, rest) = run_bytewise(&mixed_input(), &Limits::default());
        assert_eq!(out, mixed_expected());
        assert!(rest.is_empty());
    }

    #[test]
    fn mixed_split_at_every_boundary() {
        let input = mixed_input();
        let expected = mixed_expected();
        for k in 0..=input.len() {
            let (out, rest) = run_chunks(&input, &[k], &Limits::default());
            assert_eq!(out, expected, "split at {k}");
            assert!(rest.is_empty(), "split at {k}");
        }
        for k in 1..input.len() {
            for j in [1, 2, 3, 7] {
                let (out, _) = run_chunks(&input, &[k, j, j, j, j, j, j, j], &Limits::default());
                assert_eq!(out, expected, "split at {k} then {j}s");
            }
        }
    }

    #[test]
    fn errors_split_at_every_boundary() {
        let mut input = mixed_input();
        input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n!oops\r\n");
        let mut expected = mixed_expected();
        expected.push(Err(ParseError::ExpectedDollar(b'!')));
        for k in 0..=input.len() {
            assert_eq!(
                run_chunks(&input, &[k], &Limits::default()).0,
                expected,
                "split at {k}"
            );
        }
        assert_eq!(run_bytewise(&input, &Limits::default()).0, expected);
    }

    /// Tiny deterministic PRNG for the randomized round-trip test.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn randomized_round_trip_any_split() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let l = Limits::default();
        for _round in 0..200 {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..rng.below(8) + 1 {
                let argc = rng.below(5) + 1;
                let args: Vec<Vec<u8>> = (0..argc)
                    .map(|_| {
                        let len = match rng.below(10) {
                            0 => 0,
                            1 => rng.below(3000) as usize,
                            _ => rng.below(20) as usize,
                        };
                        (0..len).map(|_| rng.next() as u8).collect()
                    })
                    .collect();
                let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                input.extend(encode(&refs));
                expected.push(Ok(cmd(&refs)));
                if rng.below(4) == 0 {
                    input.extend_from_slice(b"*0\r\n");
                }
            }
            let chunks: Vec<usize> = (0..input.len())
                .map(|_| rng.below(64) as usize + 1)
                .collect();
            let (out, rest) = run_chunks(&input, &chunks, &l);
            assert_eq!(out, expected);
            assert!(rest.is_empty());
        }
    }

    // ---------- large values ----------

    #[test]
    fn large_value_in_chunks_is_zero_copy() {
        const LEN: usize = 1024 * 1024;
        let value: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
        let input = encode(&[b"SET", b"big", &value]);
        let l = Limits::default();
        let mut p = RequestParser::new();
        let mut buf = BytesMut::with_capacity(4096);
        let mut pos = 0;
        let mut payload_ptr = None;
        let mut result = None;
        let mut calls = 0;
        while pos < input.len() {
            // The caller reserves what the parser asks for, then reads into it.
            let wanted = p.wanted();
            if wanted > buf.len() {
                buf.reserve(wanted - buf.len());
                if payload_ptr.is_none() {
                    payload_ptr = Some(buf.as_ptr() as usize);
                }
            }
            let n = 16 * 1024 - 7; // odd chunk size, not aligned with anything
            let n = n.min(input.len() - pos);
            buf.extend_from_slice(&input[pos..pos + n]);
            pos += n;
            calls += 1;
            if let Some(args) = p.parse(&mut buf, &l).unwrap() {
                result = Some(args);
            }
            if result.is_none() && pos > 40 {
                assert_eq!(p.wanted(), LEN + 2);
            }
        }
        let args = result.expect("command parsed");
        assert!(calls > 60);
        assert_eq!(args.len(), 3);
        assert_eq!(&args[2][..], &value[..]);
        assert_eq!(
            args[2].as_ptr() as usize,
            payload_ptr.unwrap(),
            "payload was copied"
        );
        assert_eq!(p.wanted(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn large_value_byte_by_byte_is_linear() {
        // One byte per call over 4 MiB: a parser that re-scanned would never finish.
        const LEN: usize = 4 * 1024 * 1024;
        let value = vec![b'v'; LEN];
        let input = encode(&[b"SET", b"k", &value]);
        let l = Limits::default();
        let mut p = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut got = None;
        for &byte in &input {
            buf.extend_from_slice(&[byte]);
            if let Some(args) = p.parse(&mut buf, &l).unwrap() {
                got = Some(args);
            }
        }
        assert_eq!(got.unwrap()[2].len(), LEN);
    }

    #[test]
    fn long_lines_byte_by_byte_are_linear() {
        // 1 MiB inline line and 1 MiB of header garbage, one byte per call.
        let l = Limits {
            max_inline_len: 2 * 1024 * 1024,
            ..Limits::default()
        };
        let mut input = vec![b'a'; 1024 * 1024];
        input.extend_from_slice(b" b\r\n");
        let (out, _) = run_bytewise(&input, &l);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap()[1], b(b"b"));

        let mut input = b"*1\r\n".to_vec();
        input.resize(1024 * 1024, b'9');
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            run_bytewise(&input, &l).0,
            vec![Err(ParseError::ExpectedDollar(b'9'))]
        );
    }

    #[test]
    fn wanted_reports_pending_bulk() {
        let l = Limits::default();
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$100000\r\nabc"[..]);
        assert_eq!(p.wanted(), 0);
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
        assert_eq!(p.wanted(), 100_002);
        assert_eq!(&buf[..], b"abc");
        // `*2\r\n`, `$3\r\nSET\r\n` and `$100000\r\n` consumed, room for two arguments.
        let vector = 2 * std::mem::size_of::<Bytes>();
        assert_eq!(p.pending_bytes(), 4 + 9 + 9 + vector);
        buf.extend_from_slice(&vec![b'x'; 99_997]);
        assert_eq!(p.parse(&mut buf, &l), Ok(None)); // CRLF still missing
        assert_eq!(p.wanted(), 100_002);
        buf.extend_from_slice(b"\r\n");
        let args = p.parse(&mut buf, &l).unwrap().unwrap();
        assert_eq!(args[1].len(), 100_000);
        assert_eq!(p.wanted(), 0);
        assert_eq!(p.pending_bytes(), 0);
    }

    // ---------- inline ----------

    fn inline(line: &[u8]) -> Event {
        parse_one(line)
    }

    #[test]
    fn inline_basic() {
        assert_eq!(inline(b"PING\r\n"), Ok(cmd(&[b"PING"])));
        assert_eq!(inline(b"PING\n"), Ok(cmd(&[b"PING"])));
        assert_eq!(inline(b"set a b\r\n"), Ok(cmd(&[b"set", b"a", b"b"])));
        assert_eq!(
            inline(b" \x0b\x0c set \t a  b  \r\n"),
            Ok(cmd(&[b"set", b"a", b"b"]))
        );
        // ...but an unquoted argument ends only at space, \t, \r, \n.
        assert_eq!(
            inline(b"set a\x0b\x0c  b\r\n"),
            Ok(cmd(&[b"set", b"a\x0b\x0c", b"b"]))
        );
        // Only one '\r' is stripped; the other one is a separator.
        assert_eq!(inline(b"PING\r\r\n"), Ok(cmd(&[b"PING"])));
        assert_eq!(inline(b"a\rb\n"), Ok(cmd(&[b"a", b"b"])));
        // \v and \f separate arguments only between them, not inside an unquoted one.
        assert_eq!(inline(b"a\x0bb c\x0cd\n"), Ok(cmd(&[b"a\x0bb", b"c\x0cd"])));
        // Bytes that are not ASCII are ordinary characters.
        assert_eq!(inline(b"\xff\xfe \x80\n"), Ok(cmd(&[b"\xff\xfe", b"\x80"])));
        // '$' or ':' first means inline too.
        assert_eq!(inline(b"$3 x\n"), Ok(cmd(&[b"$3", b"x"])));
    }

    #[test]
    fn inline_blank_lines_are_skipped() {
        let (out, rest) = run_once(b"\r\n\n   \r\n \t \n\x0b\nPING\n\n", &Limits::default());
        assert_eq!(out, vec![Ok(cmd(&[b"PING"]))]);
        assert!(rest.is_empty());
    }

    #[test]
    fn inline_needs_newline() {
        let l = Limits::default();
        need_more(b"PING", &l);
        need_more(b"PING\r", &l);
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"PI"[..]);
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
        buf.extend_from_slice(b"NG\r\nEC");
        assert_eq!(p.parse(&mut buf, &l), Ok(Some(cmd(&[b"PING"]))));
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
        assert_eq!(&buf[..], b"EC");
    }

    #[test]
    fn inline_double_quotes() {
        assert_eq!(
            inline(b"set \"a b\" \"\"\n"),
            Ok(cmd(&[b"set", b"a b", b""]))
        );
        assert_eq!(
            inline(b"x \"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n"),
            Ok(cmd(&[b"x", b"\n\r\t\x08\x07\\\"q"]))
        );
        assert_eq!(
            inline(b"x \"\\x41\\x7a\\xff\\x00\\xAb\"\n"),
            Ok(cmd(&[b"x", b"Az\xff\x00\xab"]))
        );
        // \x without two hex digits is just an escaped 'x'.
        assert_eq!(inline(b"x \"\\xZZ\\x4\"\n"), Ok(cmd(&[b"x", b"xZZx4"])));
        // Quotes in the middle of an argument.
        assert_eq!(inline(b"ab\"c d\" e\n"), Ok(cmd(&[b"abc d", b"e"])));
        // Closing quote followed by any isspace byte is fine, \v included.
        assert_eq!(inline(b"\"a\"\x0bb\n"), Ok(cmd(&[b"a", b"b"])));
        assert_eq!(inline(b"\"a\"\tb\r\n"), Ok(cmd(&[b"a", b"b"])));
        // '\r' inside the line (not the stripped one) is kept inside quotes.
        assert_eq!(inline(b"\"a\rb\"\n"), Ok(cmd(&[b"a\rb"])));
    }

    #[test]
    fn inline_single_quotes() {
        assert_eq!(
            inline(b"set 'a b' 'it\\'s'\n"),
            Ok(cmd(&[b"set", b"a b", b"it's"]))
        );
        // Other backslashes are literal.
        assert_eq!(inline(b"'a\\nb\\\\x'\n"), Ok(cmd(&[b"a\\nb\\\\x"])));
        // ...so a backslash right before the closing quote escapes it.
        assert_eq!(parse_err(b"'a\\\\'\n"), ParseError::UnbalancedQuotes);
        assert_eq!(inline(b"'\"' \"'\"\n"), Ok(cmd(&[b"\"", b"'"])));
        assert_eq!(inline(b"''\n"), Ok(cmd(&[b""])));
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for bad in [
            &b"set \"abc\n"[..],
            b"set 'abc\n",
            b"\"a\"b\n",
            b"'a'b\n",
            b"\"a\"\"b\"\n",
            b"\"abc\\\"\n",
            b"'abc\\'\n",
            b"\"\\\n",
            b"\"\\x4\n",
            b"x \"\r\n",
        ] {
            assert_eq!(
                parse_err(bad),
                ParseError::UnbalancedQuotes,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            ParseError::UnbalancedQuotes.message(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn inline_unquoted_args_are_zero_copy() {
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"SET key \"q\" value\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let args = p.parse(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(args, cmd(&[b"SET", b"key", b"q", b"value"]));
        assert_eq!(args[0].as_ptr() as usize, base);
        assert_eq!(args[1].as_ptr() as usize, base + 4);
        assert_eq!(args[3].as_ptr() as usize, base + 12);
    }

    #[test]
    fn too_big_inline_request() {
        let l = Limits::default();
        let mut input = vec![b'a'; 64 * 1024];
        need_more(&input, &l);
        input.push(b'a');
        assert_eq!(
            run_once(&input, &l).0,
            vec![Err(ParseError::TooBigInlineRequest)]
        );
        assert_eq!(
            run_bytewise(&input, &l).0,
            vec![Err(ParseError::TooBigInlineRequest)]
        );
        // A long line whose newline is already in the buffer is accepted.
        let mut input = vec![b'a'; 100_000];
        input.push(b'\n');
        assert_eq!(run_once(&input, &l).0.len(), 1);
        let small = Limits {
            max_inline_len: 4,
            ..Limits::default()
        };
        need_more(b"PING", &small);
        assert_eq!(
            run_once(b"PINGX", &small).0,
            vec![Err(ParseError::TooBigInlineRequest)]
        );
        assert_eq!(run_once(b"PING\n", &small).0, vec![Ok(cmd(&[b"PING"]))]);
    }

    #[test]
    fn nul_hides_the_terminator_like_strchr() {
        let l = Limits::default();
        // Inline: the NUL comes before '\n', so the line never completes...
        need_more(b"GET a\0b\nPING\n", &l);
        // ...until the unparsed input passes the limit.
        let mut input = b"GET a\0b\n".to_vec();
        input.resize(64 * 1024 + 1, b'\n');
        assert_eq!(
            run_once(&input, &l).0,
            vec![Err(ParseError::TooBigInlineRequest)]
        );
        assert_eq!(
            run_chunks(&input, &[3; 30000], &l).0,
            vec![Err(ParseError::TooBigInlineRequest)]
        );
        // A NUL after the terminator does not matter.
        assert_eq!(run_once(b"PING\n\0", &l).0, vec![Ok(cmd(&[b"PING"]))]);
        // Header and length lines behave the same way.
        need_more(b"*1\0\r\n", &l);
        need_more(b"*1\r\n$3\0\r\nfoo\r\n", &l);
        let mut input = b"*1\r\n$\0".to_vec();
        input.resize(4 + 64 * 1024 + 1, b'\r');
        assert_eq!(
            run_once(&input, &l).0,
            vec![Err(ParseError::TooBigBulkCount)]
        );
        // Inside a bulk payload a NUL is just data.
        assert_eq!(
            run_once(b"*1\r\n$3\r\na\0b\r\n", &l).0,
            vec![Ok(cmd(&[b"a\0b"]))]
        );
    }

    #[test]
    fn strict_integer_parser() {
        assert_eq!(parse_strict_i64(b"0"), Some(0));
        assert_eq!(parse_strict_i64(b"7"), Some(7));
        assert_eq!(parse_strict_i64(b"-7"), Some(-7));
        assert_eq!(parse_strict_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_strict_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"0x10",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"18446744073709551616",
            b"99999999999999999999",
            b"000000000000000000001",
        ] {
            assert_eq!(
                parse_strict_i64(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.max_bulk_len, 512 * 1024 * 1024);
        assert_eq!(l.max_multibulk_len, i32::MAX as usize);
        assert_eq!(l.max_inline_len, 64 * 1024);
    }

    #[test]
    fn huge_count_does_not_preallocate() {
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2147483647\r\n$1\r\na\r\n"[..]);
        assert_eq!(p.parse(&mut buf, &Limits::default()), Ok(None));
        assert!(p.args.capacity() <= MAX_ARGS_PREALLOC);
        assert_eq!(p.args.len(), 1);
    }

    #[test]
    fn empty_bulks_of_a_huge_count_count_toward_pending_bytes() {
        // Each `$0` bulk is an argument that costs its slot in the vector although it has
        // no payload: the count a caller bounds must grow with them.
        let l = Limits::default();
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2147483647\r\n"[..]);
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
        let at_start = p.pending_bytes();
        assert!(at_start <= 13 + MAX_ARGS_PREALLOC * std::mem::size_of::<Bytes>());
        let mut last = at_start;
        for round in 1..=20 {
            buf.extend_from_slice(&b"$0\r\n\r\n".repeat(10_000));
            assert_eq!(p.parse(&mut buf, &l), Ok(None));
            assert!(buf.is_empty());
            let args = round * 10_000;
            assert_eq!(p.args.len(), args);
            let held = p.pending_bytes();
            assert!(held > last, "round {round}: {held} <= {last}");
            // At least the input consumed plus one vector slot per argument.
            assert!(held >= 13 + args * (6 + std::mem::size_of::<Bytes>()));
            last = held;
        }
        // A protocol error drops the request and what it held.
        buf.extend_from_slice(b"$x\r\n");
        assert_eq!(p.parse(&mut buf, &l), Err(ParseError::InvalidBulkLength));
        assert_eq!(p.pending_bytes(), 0);
    }

    #[test]
    fn pending_bytes_count_headers_length_lines_and_payloads() {
        let l = Limits::default();
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva"[..]);
        assert_eq!(p.parse(&mut buf, &l), Ok(None));
        let vector = 3 * std::mem::size_of::<Bytes>();
        assert_eq!(p.pending_bytes(), 4 + 9 + 7 + 4 + vector);
        buf.extend_from_slice(b"lue\r\n");
        assert_eq!(
            p.parse(&mut buf, &l),
            Ok(Some(cmd(&[b"SET", b"k", b"value"])))
        );
        assert_eq!(p.pending_bytes(), 0);
    }

    #[test]
    fn zero_limits_do_not_panic() {
        let l = Limits {
            max_bulk_len: 0,
            max_multibulk_len: 0,
            max_inline_len: 0,
            unauthenticated: false,
        };
        assert_eq!(
            run_once(b"*1\r\n", &l).0,
            vec![Err(ParseError::InvalidMultibulkLength)]
        );
        assert_eq!(
            run_once(b"*0\r\nx", &l).0,
            vec![Err(ParseError::TooBigInlineRequest)]
        );
        assert_eq!(run_once(b"a\n", &l).0, vec![Ok(cmd(&[b"a"]))]);
        let l = Limits {
            max_bulk_len: 0,
            max_multibulk_len: 1,
            max_inline_len: 0,
            unauthenticated: false,
        };
        assert_eq!(run_once(b"*1\r\n$0\r\n\r\n", &l).0, vec![Ok(cmd(&[b""]))]);
        assert_eq!(
            run_once(b"*1\r\n$1\r\n", &l).0,
            vec![Err(ParseError::InvalidBulkLength)]
        );
        let l = Limits {
            max_bulk_len: usize::MAX,
            max_multibulk_len: usize::MAX,
            max_inline_len: usize::MAX,
            unauthenticated: false,
        };
        need_more(b"*9223372036854775807\r\n$9223372036854775807\r\n", &l);
    }
}
