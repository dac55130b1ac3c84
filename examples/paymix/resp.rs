//! RESP on the client side, as lean as the load needs: commands encoded from pre-encoded heads
//! and constant arguments into reused buffers, one connection per primary with its pipeline,
//! and replies scanned (not built) from a reused read buffer (`common/replies.rs`).

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use crate::replies::{Replies, Reply};
use crate::stats::Stats;

/// Command heads (array length and name) and constant arguments, RESP-encoded once.
pub struct Encoded {
    pub set: Vec<u8>,
    pub set_value: Vec<u8>,
    pub set_nx_tail: Vec<u8>,
    pub get: Vec<u8>,
    pub incr: Vec<u8>,
    pub incrby: Vec<u8>,
    pub pexpire: Vec<u8>,
    pub nx_1m: Vec<u8>,
    pub nx_1h: Vec<u8>,
    pub nx_1d: Vec<u8>,
    pub hmget: Vec<u8>,
    pub hmget_fields: Vec<u8>,
    pub hincrby: Vec<u8>,
    pub count_1: Vec<u8>,
    pub cents: Vec<u8>,
    pub hset: Vec<u8>,
    pub wait: Vec<u8>,
}

impl Encoded {
    pub fn new() -> Encoded {
        Encoded {
            set: head(6, "SET"),
            set_value: head(3, "SET"),
            set_nx_tail: bulks(&["1", "NX", "PX", "86400000"]),
            get: head(2, "GET"),
            incr: head(2, "INCR"),
            incrby: head(3, "INCRBY"),
            pexpire: head(4, "PEXPIRE"),
            nx_1m: bulks(&["60000", "NX"]),
            nx_1h: bulks(&["3600000", "NX"]),
            nx_1d: bulks(&["86400000", "NX"]),
            hmget: head(5, "HMGET"),
            hmget_fields: bulks(&["mcc", "country", "risk"]),
            hincrby: head(4, "HINCRBY"),
            count_1: bulks(&["count", "1"]),
            cents: bulks(&["cents"]),
            hset: head(8, "HSET"),
            // `WAIT 1 0`: return once one replica has acknowledged this connection's writes.
            wait: [head(3, "WAIT"), bulks(&["1", "0"])].concat(),
        }
    }
}

/// `*<args>\r\n$<len>\r\n<name>\r\n`: a command's start, `args` counting the name.
fn head(args: usize, name: &str) -> Vec<u8> {
    let mut out = format!("*{args}\r\n").into_bytes();
    bulk(&mut out, name.as_bytes());
    out
}

fn bulks(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in args {
        bulk(&mut out, a.as_bytes());
    }
    out
}

pub fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

pub fn bulk_int(out: &mut Vec<u8>, n: u64) {
    bulk(out, itoa::Buffer::new().format(n).as_bytes());
}

/// The key `<prefix>{<tag>}<suffix>` as one bulk string.
pub fn key(out: &mut Vec<u8>, prefix: &[u8], tag: &[u8], suffix: &[u8]) {
    let len = prefix.len() + tag.len() + 2 + suffix.len();
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(prefix);
    out.push(b'{');
    out.extend_from_slice(tag);
    out.push(b'}');
    out.extend_from_slice(suffix);
    out.extend_from_slice(b"\r\n");
}

/// `<letter><n>`: a card's (`c`) or merchant's (`m`) hash tag.
pub fn tag(out: &mut Vec<u8>, letter: u8, n: u64) {
    out.clear();
    out.push(letter);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// What a command's reply should be; anything else is counted.
#[derive(Clone, Copy)]
pub enum Expect {
    /// SET: `+OK`; nil (from `SET NX`) means the idempotency id was already taken.
    Ok,
    /// INCR, INCRBY, HINCRBY, PEXPIRE, HSET.
    Int,
    /// GET of a preloaded card: a bulk string; nil is a miss.
    Value,
    /// HMGET of a preloaded profile: an array without nil.
    Values,
    /// `WAIT 1 0`: the number of replicas, 0 counted as short.
    Wait,
}

impl Expect {
    fn command(self) -> &'static str {
        match self {
            Expect::Ok => "SET",
            Expect::Int => "INCR/INCRBY/HINCRBY/PEXPIRE/HSET",
            Expect::Value => "GET",
            Expect::Values => "HMGET",
            Expect::Wait => "WAIT",
        }
    }
}

/// One connection to one primary, with its pipeline buffer and what its replies should be.
pub struct Conn {
    pub stream: TcpStream,
    pub out: Vec<u8>,
    pub expect: Vec<Expect>,
    pub replies: Replies,
}

impl Conn {
    pub async fn open(port: u16) -> Result<Conn, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        Ok(Conn {
            stream,
            out: Vec::with_capacity(1024),
            expect: Vec::with_capacity(16),
            // A card blob is ~100 bytes: 16 KiB holds any pipeline's replies.
            replies: Replies::with_capacity(16 * 1024),
        })
    }

    /// Sends the pipeline built so far.
    pub async fn send(&mut self) -> Result<(), String> {
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.out.clear();
        Ok(())
    }

    /// Reads the replies of the pipeline sent and checks each against what it should be.
    pub async fn receive(&mut self, stats: &mut Stats) -> Result<(), String> {
        for &expect in &self.expect {
            let reply = self.replies.next(&mut self.stream).await?;
            match (expect, reply) {
                (_, Reply::Error(e)) => stats.error(e),
                (Expect::Ok, Reply::Simple)
                | (Expect::Int, Reply::Int(_))
                | (Expect::Value, Reply::Bulk)
                | (Expect::Values, Reply::Array { nils: 0 }) => {}
                (Expect::Ok, Reply::Nil) => {
                    stats.error("SET NX: the idempotency id was already set".into())
                }
                (Expect::Value, Reply::Nil) | (Expect::Values, Reply::Array { .. }) => {
                    stats.misses += 1
                }
                (Expect::Wait, Reply::Int(n)) => {
                    if n == 0 {
                        stats.wait_short += 1;
                        stats.error("WAIT 1 0: 0 replicas".into());
                    }
                }
                (expect, _) => stats.error(format!("unexpected reply to {}", expect.command())),
            }
        }
        self.expect.clear();
        Ok(())
    }
}
