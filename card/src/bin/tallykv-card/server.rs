//! Walking a live server's keys: a standalone server, or every primary of a cluster (from
//! CLUSTER SLOTS), each with SCAN; a resumable cursor, a rate limit and progress lines on
//! stderr. `rewrap` and `scan` supply what is done with each key.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use redis::{Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value};

use crate::error::{At, CliError};

/// Where to connect.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub cluster: bool,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Which keys to walk, from where, how fast.
pub struct Walk {
    pub pattern: String,
    pub start: Cursor,
    pub rate: Option<f64>,
    pub count: u32,
}

/// A resumable position: the index of a primary (in address order) and a SCAN cursor on it.
/// Printed as `NODE:CURSOR`; a bare `CURSOR` means node 0 (a standalone server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub node: usize,
    pub cursor: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.cursor)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("expected NODE:CURSOR as a previous run printed it, e.g. 0:1536")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Cursor, BadCursor> {
        let (node, cursor) = s.split_once(':').unwrap_or(("0", s));
        Ok(Cursor {
            node: node.parse().map_err(|_| BadCursor)?,
            cursor: cursor.parse().map_err(|_| BadCursor)?,
        })
    }
}

/// One primary being walked.
pub struct Node {
    pub addr: String,
    pub con: Connection,
}

fn connect(target: &Target, host: &str, port: u16) -> Result<Node, CliError> {
    let addr = format!("{host}:{port}");
    let mut redis = RedisConnectionInfo::default();
    if let Some(user) = &target.user {
        redis = redis.set_username(user);
    }
    if let Some(password) = &target.password {
        redis = redis.set_password(password);
    }
    let info = ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()
        .at(&addr)?
        .set_redis_settings(redis);
    let client = redis::Client::open(info).at(&addr)?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .at(&addr)?;
    Ok(Node { addr, con })
}

/// The addresses to walk: the server itself, or every cluster primary in address order (the
/// order a cursor's node index refers to).
fn primaries(target: &Target) -> Result<Vec<(String, u16)>, CliError> {
    if !target.cluster {
        return Ok(vec![(target.host.clone(), target.port)]);
    }
    let mut seed = connect(target, &target.host, target.port)?;
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut seed.con)
        .at(&seed.addr)?;
    let bad = || CliError::ClusterSlots {
        addr: seed.addr.clone(),
    };
    let Value::Array(ranges) = slots else {
        return Err(bad());
    };
    let mut nodes = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else {
            return Err(bad());
        };
        let Some(Value::Array(primary)) = items.get(2) else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        // An empty host means "the address you reached me on".
        let host = if host.is_empty() || host == "?" {
            target.host.clone()
        } else {
            host
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        let port = u16::try_from(*port).map_err(|_| bad())?;
        nodes.push((host, port));
    }
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Paces a loop to at most `rate` iterations per second.
struct Pacer {
    rate: Option<f64>,
    started: Instant,
    done: u64,
}

impl Pacer {
    fn tick(&mut self) {
        self.done += 1;
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.done as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// What a walk does with each key (`rewrap`, `scan`).
pub trait KeyVisitor {
    /// The command's name, for progress lines.
    const NAME: &'static str;
    fn visit(&mut self, node: &mut Node, key: &[u8]) -> Result<(), CliError>;
    /// The visitor's counts so far, for progress lines.
    fn counts(&self) -> String;
}

/// SCANs every node from `walk.start` on, handing each key to `visitor`; prints a progress
/// line on stderr at most once a second and whenever a node is finished, each with the
/// cursor to resume from.
pub fn walk_keys<V: KeyVisitor>(
    target: &Target,
    walk: &Walk,
    visitor: &mut V,
) -> Result<(), CliError> {
    if walk.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(CliError::Rate);
    }
    let nodes = primaries(target)?;
    if walk.start.node > nodes.len() || (walk.start.node == nodes.len() && walk.start.cursor != 0) {
        return Err(CliError::CursorNode {
            node: walk.start.node,
            nodes: nodes.len(),
        });
    }
    let mut pacer = Pacer {
        rate: walk.rate,
        started: Instant::now(),
        done: 0,
    };
    let mut last_line: Option<Instant> = None;
    let mut keys = 0u64;
    for (index, (host, port)) in nodes.iter().enumerate().skip(walk.start.node) {
        let mut node = connect(target, host, *port)?;
        let mut cursor = if index == walk.start.node {
            walk.start.cursor
        } else {
            0
        };
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&walk.pattern)
                .arg("COUNT")
                .arg(walk.count)
                .query(&mut node.con)
                .at(&node.addr)?;
            for key in &batch {
                visitor.visit(&mut node, key)?;
                keys += 1;
                pacer.tick();
            }
            cursor = next;
            let finished = cursor == 0;
            let due = last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if finished || due {
                last_line = Some(Instant::now());
                let resume = if finished {
                    Cursor {
                        node: index + 1,
                        cursor: 0,
                    }
                } else {
                    Cursor {
                        node: index,
                        cursor,
                    }
                };
                eprintln!(
                    "{}: node {}/{} {} {}, {keys} keys, {}; resume with --cursor {resume}",
                    V::NAME,
                    index + 1,
                    nodes.len(),
                    node.addr,
                    if finished { "done" } else { "in progress" },
                    visitor.counts(),
                );
            }
            if finished {
                break;
            }
        }
    }
    Ok(())
}

/// A key or field name as the CLI prints it: card numbers in it masked, unprintable bytes
/// escaped, in double quotes.
pub fn show(name: &[u8]) -> String {
    let masked = card::discover::mask_pans(name);
    let mut out = String::with_capacity(masked.len() + 2);
    out.push('"');
    for &b in &masked {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(
            "2:1536".parse::<Cursor>().unwrap(),
            Cursor {
                node: 2,
                cursor: 1536
            }
        );
        assert_eq!(
            "77".parse::<Cursor>().unwrap(),
            Cursor {
                node: 0,
                cursor: 77
            }
        );
        assert!("a:1".parse::<Cursor>().is_err());
        assert!("1:".parse::<Cursor>().is_err());
        assert_eq!(Cursor { node: 1, cursor: 5 }.to_string(), "1:5");
    }

    #[test]
    fn names_are_masked_and_escaped() {
        assert_eq!(show(b"card:4111111111111111"), "\"card:411111******1111\"");
        assert_eq!(show(b"a\"b\\\x00"), "\"a\\\"b\\\\\\x00\"");
    }
}
