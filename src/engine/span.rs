//! Work whose keys live on several cores (standalone): taking and opening the cores' gates
//! (see `gate`), and running one command against a scratch shard that holds copies of all its
//! keys.
//!
//! A command such as SINTERSTORE, SMOVE, RENAME or LMOVE is written against one shard. When its
//! keys live on different cores, the engine takes those cores' gates, copies the live keys
//! into the core's scratch shard, runs the command there (journaling what it changes), writes
//! the final state of every key it changed back to the key's own core, and opens the gates:
//! to everyone else the command happened at once. The write-back goes through the owners'
//! `Shard::apply`, so persistence, WATCH and keyspace counts see it like any other write.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::core::Core;
use super::gate::TxId;
use crate::cluster::{SLOT_COUNT, key_slot};
use crate::command::{Ctx, ShardFn};
use crate::protocol::Out;
use crate::shard::{Mutation, Shard, ShardStats, Value};

/// The reply when another core did not answer (it panicked or is shutting down).
pub const CORE_FAILED: &str =
    "ERR internal error: another core did not answer (see the server log)";

/// Takes the gates of `cores` (ascending, so concurrent coordinators never deadlock).
pub async fn acquire_all(core: &Rc<Core>, cores: &BTreeSet<usize>, tx: TxId) {
    for &c in cores {
        if c == core.id {
            core.gate.acquire(tx).await;
        } else {
            core.on_core(c, move |cc| {
                Box::pin(async move { cc.gate.acquire(tx).await })
            })
            .await;
        }
    }
}

/// Opens the gates `tx` holds on `cores`.
pub async fn release_all(core: &Rc<Core>, cores: &BTreeSet<usize>, tx: TxId) {
    for &c in cores {
        core.call_as(c, Some(tx), move |cc| cc.gate.release(tx))
            .await;
    }
}

/// Waits until what `cores` (other than this one) applied so far is as durable as
/// appendfsync promises: a gated transaction's parts answer before their durability, so the
/// transaction waits once, here, after opening the gates.
pub async fn durable_barrier(core: &Rc<Core>, cores: &BTreeSet<usize>) {
    for &c in cores {
        if c == core.id {
            continue;
        }
        if let Some(Some(ticket)) = core.call(c, |cc| cc.ticket_since(0)).await {
            let _ = ticket.await;
        }
    }
}

/// The cores owning `keys`.
pub fn owners(core: &Core, keys: &[Bytes]) -> BTreeSet<usize> {
    keys.iter()
        .map(|k| core.owner(key_slot(k) as usize))
        .collect()
}

/// Runs `exec` on `args` in database `db` atomically although its `keys` live on several
/// cores: takes their gates unless `held` (the transaction already holding them), runs it on
/// the scratch shard, writes back, opens the gates. `user`: a script's restricted ACL user
/// (see `Op::user`).
#[allow(clippy::too_many_arguments)]
pub async fn run_spanning(
    core: &Rc<Core>,
    exec: ShardFn,
    args: &[Bytes],
    keys: Vec<Bytes>,
    held: Option<TxId>,
    db: u32,
    user: Option<crate::security::acl::Caller>,
    out: &mut Out,
) {
    let cores = owners(core, &keys);
    let tx = match held {
        Some(tx) => tx,
        None => {
            let tx = super::gate::new_tx_id();
            acquire_all(core, &cores, tx).await;
            tx
        }
    };
    match copy_to_db(core, args, db) {
        Some(Ok(to_db)) => copy_across(core, args, tx, db, to_db, out).await,
        Some(Err(e)) => out.error(e),
        None => run_on_scratch(core, exec, args, keys, tx, db, user, out).await,
    }
    if held.is_none() {
        release_all(core, &cores, tx).await;
        durable_barrier(core, &cores).await;
    }
}

/// SWAPDB index1 index2: every core swaps its part of the two databases while `held` (the
/// transaction running it) or SWAPDB itself holds every core's gate, so no client sees one
/// core swapped and another not.
pub async fn swap_dbs(core: &Rc<Core>, args: &[Bytes], held: Option<TxId>, out: &mut Out) {
    if core.shared.config.cluster.enabled {
        out.error("ERR SWAPDB is not allowed in cluster mode");
        return;
    }
    let index = |a: &[u8], which: &str| {
        crate::util::parse_i64(a)
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| format!("ERR invalid {which} DB index"))
    };
    let (a, b) = match (index(&args[1], "first"), index(&args[2], "second")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            out.error(&e);
            return;
        }
    };
    let databases = core.shared.config.databases as i64;
    if !(0..databases).contains(&a) || !(0..databases).contains(&b) {
        out.error(crate::command::connection::DB_OUT_OF_RANGE);
        return;
    }
    let (a, b) = (a as usize, b as usize);
    if a != b {
        let cores: BTreeSet<usize> = (0..core.cores()).collect();
        let tx = match held {
            Some(tx) => tx,
            None => {
                let tx = super::gate::new_tx_id();
                acquire_all(core, &cores, tx).await;
                tx
            }
        };
        for &c in &cores {
            core.call_as(c, Some(tx), move |cc| {
                cc.shard.borrow_mut().swap_dbs(a, b);
                cc.schedule_flush();
            })
            .await;
        }
        if held.is_none() {
            release_all(core, &cores, tx).await;
            durable_barrier(core, &cores).await;
        }
    }
    out.ok();
}

/// A key's live state as fetched from its core.
type Fetched = (Bytes, Value, Option<u64>);
/// A key's state after the command: its value and expiry, or None when it is gone.
type Final = (Box<[u8]>, Option<(Value, Option<u64>)>);

/// Runs `exec` against copies of `keys` (their gates held by `tx`) and writes back what it
/// changed.
#[allow(clippy::too_many_arguments)]
async fn run_on_scratch(
    core: &Rc<Core>,
    exec: ShardFn,
    args: &[Bytes],
    keys: Vec<Bytes>,
    tx: TxId,
    db: u32,
    user: Option<crate::security::acl::Caller>,
    out: &mut Out,
) {
    let db = db as usize;
    let mut fetched: Vec<Fetched> = Vec::new();
    for c in owners(core, &keys) {
        let mine: Vec<Bytes> = keys
            .iter()
            .filter(|k| core.owner(key_slot(k) as usize) == c)
            .cloned()
            .collect();
        let got = core
            .call_as(c, Some(tx), move |cc| {
                let now = crate::util::now_ms();
                let mut shard = cc.shard.borrow_mut();
                shard.select(db);
                let got = mine
                    .into_iter()
                    .filter_map(|k| {
                        let e = shard.get(&k, now)?;
                        let (v, exp) = (e.to_value(), e.expire_at());
                        Some((k, v, exp))
                    })
                    .collect::<Vec<Fetched>>();
                shard.select(0);
                got
            })
            .await;
        match got {
            Some(v) => fetched.extend(v),
            None => {
                out.error(CORE_FAILED);
                return;
            }
        }
    }
    // This core may own none of the keys: a script may have paused on it meanwhile (see
    // `pause`), its shard not to be touched until it ends.
    core.gate.wait_open(Some(tx)).await;
    let now = core.prepare();
    let changed = {
        let mut slot = core.scratch.borrow_mut();
        let scratch = slot.get_or_insert_with(|| {
            let mut s = Shard::new(0..SLOT_COUNT, Arc::new(ShardStats::default()));
            s.scratch = true;
            s.core = Some(core.id);
            s
        });
        // The command sees the database it runs in.
        scratch.select(db);
        scratch.limits = core.shard.borrow().limits;
        scratch.lazyfree = core.shard.borrow().lazyfree;
        scratch.clock_ms = now;
        for (k, v, exp) in fetched.iter().cloned() {
            scratch.apply(Mutation::Restore {
                key: &k,
                value: v,
                expire_at: exp,
            });
        }
        scratch.start_journal();
        // A script across cores: whether it may grow memory (see `flags::SCRIPT`).
        crate::command::script::set_pre_oom(core.growth_refused());
        crate::command::script::set_caller(user);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut ctx = Ctx {
                shard: scratch,
                now,
                out: &mut *out,
                node: &*core.shared,
            };
            exec(&mut ctx, args);
        }));
        let journal = scratch.take_journal().unwrap_or_default();
        let changed: Vec<Final> = if run.is_err() {
            out.error("ERR internal error while executing the command (see the server log)");
            Vec::new()
        } else {
            journal
                .images
                .into_iter()
                .map(|(_, k, _)| {
                    let now_state = scratch
                        .peek_stored(&k)
                        .map(|e| (e.to_value(), e.expire_at()));
                    (k, now_state)
                })
                .collect()
        };
        // Empty the scratch shard for its next use.
        for (k, _, _) in &fetched {
            scratch.remove(k);
        }
        for (k, _) in &changed {
            scratch.remove(k);
        }
        scratch.select(0);
        changed
    };
    for c in owners(
        core,
        &changed
            .iter()
            .map(|(k, _)| Bytes::copy_from_slice(k))
            .collect::<Vec<_>>(),
    ) {
        let mine: Vec<_> = changed
            .iter()
            .filter(|(k, _)| core.owner(key_slot(k) as usize) == c)
            .cloned()
            .collect();
        core.call_as(c, Some(tx), move |cc| {
            let mut shard = cc.shard.borrow_mut();
            shard.select(db);
            for (k, state) in mine {
                match state {
                    Some((value, expire_at)) => shard.apply(Mutation::Restore {
                        key: &k,
                        value,
                        expire_at,
                    }),
                    None => shard.apply(Mutation::Del { key: &k }),
                };
            }
            shard.select(0);
        })
        .await;
    }
}

/// For a COPY to another database (its DB option), that database (or COPY's error); None
/// for any other command or a COPY within `db`.
fn copy_to_db(core: &Core, args: &[Bytes], db: u32) -> Option<Result<usize, &'static str>> {
    if !crate::command::is(&args[0], "copy") || args.len() <= 3 {
        return None;
    }
    match crate::command::keyspace::copy_options(&*core.shared, db as usize, args) {
        Ok((_, to_db)) if to_db == db as usize => None,
        Ok((_, to_db)) => Some(Ok(to_db)),
        Err(e) => Some(Err(e)),
    }
}

/// COPY source destination DB n with the keys on two cores (their gates held by `tx`): the
/// source's value is read on its core, then written to database `to_db` on the
/// destination's core unless a key is there (and REPLACE was not given).
async fn copy_across(
    core: &Rc<Core>,
    args: &[Bytes],
    tx: TxId,
    db: u32,
    to_db: usize,
    out: &mut Out,
) {
    let replace = args[3..].iter().any(|a| crate::command::is(a, "replace"));
    let (from, to) = (args[1].clone(), args[2].clone());
    let src = core.owner(key_slot(&from) as usize);
    let got = core
        .call_as(src, Some(tx), move |cc| {
            let mut shard = cc.shard.borrow_mut();
            shard.select(db as usize);
            let e = shard.get(&from, crate::util::now_ms());
            let got = e.map(|e| (e.to_value(), e.expire_at()));
            shard.select(0);
            got
        })
        .await;
    let (value, expire_at) = match got {
        None => return out.error(CORE_FAILED),
        Some(None) => return out.int(0),
        Some(Some(v)) => v,
    };
    let dst = core.owner(key_slot(&to) as usize);
    let copied = core
        .call_as(dst, Some(tx), move |cc| {
            let mut shard = cc.shard.borrow_mut();
            shard.select(to_db);
            let free = replace || shard.get(&to, crate::util::now_ms()).is_none();
            if free {
                shard.apply(Mutation::Restore {
                    key: &to,
                    value,
                    expire_at,
                });
            }
            shard.select(0);
            free
        })
        .await;
    match copied {
        None => out.error(CORE_FAILED),
        Some(c) => out.int(c as i64),
    }
}
