//! The slot map of a Redis Cluster as a load client needs it: for every slot, the port of the
//! primary that serves it, read once from a seed node's CLUSTER SLOTS. Shared by the examples
//! (`#[path = "common/cluster_slots.rs"] mod cluster_slots;`); not a general RESP client.

use std::time::Duration;

use tallykv::cluster::SLOT_COUNT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// For every slot, the port of its primary per the seed's CLUSTER SLOTS (the first node of
/// each range). Nodes are reached on 127.0.0.1 whatever address they announce: the benchmark
/// runs every node on loopback.
pub async fn slot_owners(seed: u16) -> Result<Vec<Option<u16>>, String> {
    let ask = async {
        let mut stream = TcpStream::connect(("127.0.0.1", seed))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{seed}: {e}"))?;
        stream
            .write_all(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")
            .await
            .map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            if let Some((value, _)) = parse_value(&buf)? {
                return Ok::<_, String>(value);
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
            if n == 0 {
                return Err("CLUSTER SLOTS: connection closed".into());
            }
        }
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .map_err(|_| "CLUSTER SLOTS: no reply in 10 s".to_string())??;
    let ranges = match reply {
        Value::Array(ranges) => ranges,
        Value::Error(e) => return Err(format!("CLUSTER SLOTS: {e}")),
        _ => return Err("CLUSTER SLOTS: not an array".into()),
    };
    let mut owners = vec![None; SLOT_COUNT];
    for range in &ranges {
        let bad = || "CLUSTER SLOTS: malformed range".to_string();
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(&Value::Int(first)), Some(&Value::Int(last)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let Some(&Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        let port = u16::try_from(port).map_err(|_| bad())?;
        if !(0 <= first && first <= last && last < SLOT_COUNT as i64) {
            return Err(bad());
        }
        for owner in &mut owners[first as usize..=last as usize] {
            *owner = Some(port);
        }
    }
    Ok(owners)
}

/// A RESP2 reply, as much of it as CLUSTER SLOTS needs.
enum Value {
    Int(i64),
    Bytes,
    Error(String),
    Array(Vec<Value>),
}

/// One complete RESP2 value at the start of `buf` and its length, `None` if more bytes are needed.
fn parse_value(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    if nl < 2 || buf[nl - 1] != b'\r' {
        return Err("CLUSTER SLOTS: malformed reply".into());
    }
    let line = &buf[1..nl - 1];
    let after = nl + 1;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "CLUSTER SLOTS: bad number".to_string())
    };
    match buf[0] {
        b':' => Ok(Some((Value::Int(number()?), after))),
        b'+' => Ok(Some((Value::Bytes, after))),
        b'-' => Ok(Some((
            Value::Error(String::from_utf8_lossy(line).into_owned()),
            after,
        ))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Value::Bytes, after)));
            }
            let total = after + len as usize + 2;
            Ok((buf.len() >= total).then_some((Value::Bytes, total)))
        }
        b'*' => {
            let len = number()?;
            let mut items = Vec::with_capacity(len.max(0) as usize);
            let mut at = after;
            for _ in 0..len.max(0) {
                let Some((item, used)) = parse_value(&buf[at..])? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            Ok(Some((Value::Array(items), at)))
        }
        other => Err(format!(
            "CLUSTER SLOTS: unexpected reply type {:?}",
            other as char
        )),
    }
}
