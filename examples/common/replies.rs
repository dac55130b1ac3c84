//! RESP2 replies as the load clients read them: scanned (not built) from a reused read
//! buffer, one complete reply at a time. Shared by the examples
//! (`#[path = "common/replies.rs"] mod replies;`); not a general RESP client.
// Each example reads the parts of a reply it checks (waitload no array's nils).
#![allow(dead_code)]

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A reply, as much of it as the checks need.
pub enum Reply {
    Simple,
    Int(i64),
    Bulk,
    Nil,
    /// An array and how many of its elements are nil.
    Array {
        nils: usize,
    },
    Error(String),
}

/// A read buffer handing out one complete reply at a time.
pub struct Replies {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Replies {
    /// A buffer of `bytes`: make it larger than any pipeline's replies, so that a read is
    /// short and tokio skips the extra read() that would only return EAGAIN.
    pub fn with_capacity(bytes: usize) -> Replies {
        Replies {
            buf: vec![0; bytes].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub async fn next(&mut self, stream: &mut TcpStream) -> Result<Reply, String> {
        loop {
            if let Some((reply, used)) = scan(&self.buf[self.start..self.end])? {
                self.start += used;
                return Ok(reply);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                // Keep the partial reply, make room behind it.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.end == self.buf.len() {
                    return Err("reply longer than the read buffer".into());
                }
            }
            let n = stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            self.end += n;
        }
    }
}

/// One complete RESP2 reply at the start of `buf` and its length, `None` if more bytes are
/// needed.
pub fn scan(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    if nl < 2 || buf[nl - 1] != b'\r' {
        return Err("malformed reply".into());
    }
    let line = &buf[1..nl - 1];
    let after = nl + 1;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(line)))
    };
    match buf[0] {
        b'+' => Ok(Some((Reply::Simple, after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'-' => Ok(Some((
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            after,
        ))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let total = after + len as usize + 2;
            Ok((buf.len() >= total).then_some((Reply::Bulk, total)))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let (mut nils, mut at) = (0, after);
            for _ in 0..len {
                let Some((item, used)) = scan(&buf[at..])? else {
                    return Ok(None);
                };
                nils += usize::from(matches!(item, Reply::Nil));
                at += used;
            }
            Ok(Some((Reply::Array { nils }, at)))
        }
        other => Err(format!("unexpected reply type {:?}", other as char)),
    }
}

/// `s` as a JSON string literal (the clients print one JSON line).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
