//! Re-sealing one key's sealed values under the active key, in place, compare-and-set: the
//! step `tallykv-card rewrap` takes for every key it scans, usable by a service on its own.
//!
//! The key is WATCHed, read, its stale values re-sealed (the plaintext exists only inside
//! `Sealer::reseal`), and written in MULTI/EXEC, which the server refuses if the key changed
//! meanwhile; the key is then read again, a few times at most. A value that changed is thus
//! never overwritten with an older one. A hash is written with `HSETEX key KEEPTTL FIELDS …`
//! where the server has it (Valkey 9, tallykv), so fields keep their TTLs; elsewhere with HSET
//! (a server without HSETEX has no field TTLs to lose). A string keeps its TTL (SET KEEPTTL).
//!
//! WATCH needs one connection to the node that owns the key: on a cluster, connect to the
//! primary being scanned, not through a cluster connection.

use redis::{ConnectionLike, RedisResult, Value};

use crate::seal::{SealError, Sealer, is_sealed};

/// A key that keeps changing is left for a later run after this many tries.
pub const ATTEMPTS: usize = 5;

/// How a hash's re-sealed fields are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashWrite {
    /// `HSETEX key KEEPTTL FIELDS n field value …`: field TTLs survive.
    HsetexKeepTtl,
    /// `HSET key field value …`, for servers without HSETEX.
    Hset,
}

impl HashWrite {
    /// The best write the server behind `con` offers (COMMAND INFO HSETEX).
    pub fn detect(con: &mut impl ConnectionLike) -> RedisResult<HashWrite> {
        let info: Vec<Value> = redis::cmd("COMMAND").arg("INFO").arg("HSETEX").query(con)?;
        let known = matches!(info.first(), Some(v) if !matches!(v, Value::Nil));
        Ok(if known {
            HashWrite::HsetexKeepTtl
        } else {
            HashWrite::Hset
        })
    }
}

/// What rewrapping one key did.
#[derive(Debug, Default)]
pub struct Rewrapped {
    /// Values re-sealed under the active key and written.
    pub resealed: u64,
    /// Sealed values already under the active key.
    pub current: u64,
    /// Values that are not sealed at all (left alone).
    pub plain: u64,
    /// Sealed values that did not open (unknown key id, tampered…): field name and why.
    pub failed: Vec<(Vec<u8>, SealError)>,
    /// Times the key changed between the read and EXEC.
    pub conflicts: u64,
    /// The key changed on every attempt and was left as it was.
    pub gave_up: bool,
}

/// Re-seals every stale sealed value of `key` (each hash field; a string's value, sealed for
/// the empty field) under `sealer`'s active key. Other types are left alone.
pub fn rewrap_key(
    con: &mut impl ConnectionLike,
    sealer: &Sealer,
    key: &[u8],
    write: HashWrite,
) -> RedisResult<Rewrapped> {
    let kind: String = redis::cmd("TYPE").arg(key).query(con)?;
    let is_hash = match kind.as_str() {
        "hash" => true,
        "string" => false,
        _ => return Ok(Rewrapped::default()),
    };
    let mut conflicts = 0;
    for _ in 0..ATTEMPTS {
        redis::cmd("WATCH").arg(key).exec(con)?;
        let values: Vec<(Vec<u8>, Vec<u8>)> = if is_hash {
            redis::cmd("HGETALL").arg(key).query(con)?
        } else {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(con)?;
            v.map(|v| (Vec::new(), v)).into_iter().collect()
        };
        let mut out = Rewrapped {
            conflicts,
            ..Rewrapped::default()
        };
        let mut updates: Vec<(&[u8], Vec<u8>)> = Vec::new();
        for (field, value) in &values {
            if !is_sealed(value) {
                out.plain += 1;
                continue;
            }
            match sealer.reseal(key, field, value) {
                Ok(Some(resealed)) => updates.push((field, resealed)),
                Ok(None) => out.current += 1,
                Err(e) => out.failed.push((field.clone(), e)),
            }
        }
        if updates.is_empty() {
            redis::cmd("UNWATCH").exec(con)?;
            return Ok(out);
        }
        let mut tx = redis::pipe();
        tx.atomic();
        if !is_hash {
            tx.cmd("SET").arg(key).arg(&updates[0].1).arg("KEEPTTL");
        } else {
            let c = match write {
                HashWrite::HsetexKeepTtl => tx
                    .cmd("HSETEX")
                    .arg(key)
                    .arg("KEEPTTL")
                    .arg("FIELDS")
                    .arg(updates.len()),
                HashWrite::Hset => tx.cmd("HSET").arg(key),
            };
            for (f, v) in &updates {
                c.arg(*f).arg(v);
            }
        }
        // EXEC answers nil when the watched key changed: nothing was written.
        let exec: Option<Value> = tx.query(con)?;
        if exec.is_some() {
            out.resealed = updates.len() as u64;
            return Ok(out);
        }
        conflicts += 1;
    }
    Ok(Rewrapped {
        conflicts,
        gave_up: true,
        ..Rewrapped::default()
    })
}
