//! Multi-key commands whose keys live on different cores and that need more than one phase:
//! RENAME/RENAMENX/COPY (read on the source core, write on the destination) and MSETNX
//! (check everywhere, then write everywhere). Each phase is atomic on its core; the whole is
//! not atomic across cores — the README states this, and that keys sharing a hash tag (one
//! slot) always share a core.

use std::rc::Rc;

use bytes::Bytes;

use super::core::Core;
use crate::cluster::key_slot;
use crate::command::{self, NO_SUCH_KEY, keyspace};
use crate::protocol::Out;
use crate::shard::{Mutation, Ttl};

/// The reply when another core did not answer (it panicked or is shutting down): the client
/// must not mistake a failed step for "no such key" or "not set".
const CORE_FAILED: &str = "ERR internal error: another core did not answer (see the server log)";

fn owner(core: &Core, key: &[u8]) -> usize {
    core.owner(key_slot(key) as usize)
}

pub async fn move_key(core: &Rc<Core>, name: &str, args: &[Bytes], out: &mut Out) {
    let copy = name == "copy";
    let nx = name == "renamenx";
    let replace = if copy {
        match keyspace::copy_options(args) {
            Ok(r) => r,
            Err(e) => {
                out.error(e);
                return;
            }
        }
    } else {
        true
    };
    let (src, dst) = (args[1].clone(), args[2].clone());
    let src_core = owner(core, &src);
    let dst_core = owner(core, &dst);
    let key = src.clone();
    let snapshot = core
        .call(src_core, move |c| {
            let now = crate::util::now_ms();
            c.shard
                .borrow_mut()
                .get(&key, now)
                .map(|e| (e.to_value(), e.expire_at()))
        })
        .await;
    let Some(snapshot) = snapshot else {
        out.error(CORE_FAILED);
        return;
    };
    let Some((value, expire_at)) = snapshot else {
        if copy {
            out.int(0)
        } else {
            out.error(NO_SUCH_KEY)
        }
        return;
    };
    let must_be_absent = nx || !replace;
    let key = dst.clone();
    let written = core
        .call(dst_core, move |c| {
            let now = crate::util::now_ms();
            let mut shard = c.shard.borrow_mut();
            if must_be_absent && shard.get(&key, now).is_some() {
                return false;
            }
            shard.apply(Mutation::Restore {
                key: &key,
                value,
                expire_at,
            });
            true
        })
        .await;
    let Some(written) = written else {
        out.error(CORE_FAILED);
        return;
    };
    if written && !copy {
        let key = src.clone();
        core.call(src_core, move |c| {
            c.shard.borrow_mut().apply(Mutation::Del { key: &key })
        })
        .await;
    }
    match (copy || nx, written) {
        (true, w) => out.int(w as i64),
        (false, _) => out.ok(),
    }
}

pub async fn msetnx(core: &Rc<Core>, args: &[Bytes], out: &mut Out) {
    if args.len().is_multiple_of(2) {
        command::arity_error(out, "msetnx");
        return;
    }
    let mut per_core: Vec<Vec<Bytes>> = vec![Vec::new(); core.cores()];
    for pair in args[1..].chunks_exact(2) {
        per_core[owner(core, &pair[0])].extend(pair.iter().cloned());
    }
    for (c, pairs) in per_core.iter().enumerate() {
        if pairs.is_empty() {
            continue;
        }
        let keys: Vec<Bytes> = pairs.chunks_exact(2).map(|p| p[0].clone()).collect();
        let any = core
            .call(c, move |cr| {
                let now = crate::util::now_ms();
                let shard = cr.shard.borrow();
                keys.iter().any(|k| shard.peek(k, now).is_some())
            })
            .await;
        let Some(any) = any else {
            out.error(CORE_FAILED);
            return;
        };
        if any {
            out.int(0);
            return;
        }
    }
    for (c, pairs) in per_core.into_iter().enumerate() {
        if pairs.is_empty() {
            continue;
        }
        core.call(c, move |cr| {
            let mut shard = cr.shard.borrow_mut();
            for p in pairs.chunks_exact(2) {
                shard.apply(Mutation::SetStr {
                    key: &p[0],
                    value: &p[1],
                    ttl: Ttl::Clear,
                });
            }
        })
        .await;
    }
    out.int(1);
}
