//! The slot map of a Redis Cluster as a load client needs it: for every slot, the port of the
//! primary that serves it, read once from a seed node's CLUSTER SLOTS. Shared by the examples
//! (`#[path = "common/cluster_slots.rs"] mod cluster_slots;`), decoded with redis-protocol.

use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame as Value;
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
            let parsed = decode(&buf).map_err(|e| format!("CLUSTER SLOTS: {e:?}"))?;
            if let Some((value, _)) = parsed {
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
        let (
            Some(&Value::Integer(first)),
            Some(&Value::Integer(last)),
            Some(Value::Array(primary)),
        ) = (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let Some(&Value::Integer(port)) = primary.get(1) else {
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
