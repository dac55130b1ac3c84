//! MULTI / EXEC / DISCARD / WATCH / UNWATCH.
//!
//! MULTI makes the dispatcher queue a connection's commands (answering `+QUEUED`, or an error
//! that dooms the transaction to EXECABORT); EXEC runs the queue atomically:
//! - when every key it touches (WATCHed keys included) lives on one core, as one batch on that
//!   core — a batch runs without yielding, so nothing interleaves — led by a guard op that
//!   checks the WATCHed keys there and makes the core skip the rest of the transaction when
//!   one changed (`flags::TX_GUARD`);
//! - standalone, when its keys live on several cores, under those cores' gates (`gate`): the
//!   guards run first, then the commands, each where its keys live (or on the scratch shard
//!   when one command's keys span cores, `span`), then the gates open;
//! - in a cluster, all its keys must share a slot (`-CROSSSLOT` otherwise, as Valkey): the
//!   batch goes to the slot's group, and the leader's journal keeps the transaction's
//!   records as one unit of one log entry.
//!
//! Runtime errors inside EXEC do not roll anything back (Valkey's rule).

use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::Bytes;

use super::core::{Core, Op};
use super::dispatch::Dispatcher;
use super::routing::{self, Route};
use super::span;
use crate::cluster::key_slot;
use crate::command::connection::{Client, Multi, WatchedKey, Watching};
use crate::command::table::{lookup, lookup_sub, registry};
use crate::command::{Ctx, Exec, Fanout, TxCmd, flags};
use crate::protocol::Out;

/// Where a single-batch transaction runs.
#[derive(Clone, Copy)]
pub enum Dest {
    Core(usize),
    Group(crate::cluster::types::GroupId),
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Whether a command is run at once rather than queued inside MULTI.
pub fn runs_inside_multi(def: &crate::command::CommandDef) -> bool {
    matches!(
        def.exec,
        Exec::Tx(TxCmd::Exec | TxCmd::Discard | TxCmd::Multi | TxCmd::Watch)
    ) || matches!(def.name, "quit" | "reset")
}

/// Whether Valkey refuses a command inside MULTI (`no-multi`), or tallykv does: what waits
/// on disk or other nodes, such as a change of the users a `cluster`'s nodes share.
pub fn refused_inside_multi(def: &crate::command::CommandDef, cluster: bool) -> bool {
    def.flags & flags::NO_MULTI != 0
        || matches!(
            def.exec,
            Exec::Snapshot(_) | Exec::ClusterAdmin | Exec::Libraries
        )
        || (cluster && matches!(def.exec, Exec::Users(_)))
}

/// The resolved definition of a queued command (its subcommand for containers).
fn def_of(args: &[Bytes]) -> Option<&'static crate::command::CommandDef> {
    let reg = registry();
    let id = lookup(&args[0])?;
    let def = reg.def(id);
    if matches!(def.exec, Exec::Container) {
        return args
            .get(1)
            .and_then(|a| lookup_sub(id, a))
            .map(|s| reg.def(s));
    }
    Some(def)
}

/// A queued command's id (its subcommand's for containers, as counted in INFO) and
/// definition.
fn resolve(args: &[Bytes]) -> Option<(u32, &'static crate::command::CommandDef)> {
    let reg = registry();
    let id = lookup(&args[0])?;
    let def = reg.def(id);
    if matches!(def.exec, Exec::Container) {
        let sub = lookup_sub(id, args.get(1)?)?;
        return Some((sub as u32, reg.def(sub)));
    }
    Some((id as u32, def))
}

/// The keys of a queued command.
fn keys_of(def: &crate::command::CommandDef, args: &[Bytes]) -> Vec<Bytes> {
    def.keys.positions(args).map(|p| args[p].clone()).collect()
}

/// Guard op: `[_, client id, (db, key, alive (0|1))...]`; answers `:1` when every watched key
/// here is untouched (and still exists if it existed when watched), `:0` otherwise.
fn watch_guard(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let client = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let was = ctx.shard.db();
    let clean = args[2..].chunks_exact(3).all(|kv| {
        let db = crate::util::parse_i64(&kv[0]).unwrap_or(0) as usize;
        let (key, alive) = (&kv[1], &kv[2][..] == b"1");
        ctx.shard.select(db);
        ctx.shard.watches.untouched(key, client)
            && (!alive || ctx.shard.peek(key, ctx.now).is_some())
    });
    ctx.shard.select(was);
    ctx.out.int(clean as i64);
}

fn guard_op(client: u64, keys: &[WatchedKey], core: usize) -> Option<Op> {
    let mine: Vec<&WatchedKey> = keys.iter().filter(|k| k.1 == core).collect();
    if mine.is_empty() {
        return None;
    }
    let mut args = vec![
        Bytes::from_static(b"exec-guard"),
        Bytes::from(client.to_string()),
    ];
    for (k, _, alive, db) in mine {
        args.push(Bytes::from(db.to_string()));
        args.push(k.clone());
        args.push(Bytes::from_static(if *alive { b"1" } else { b"0" }));
    }
    Some(Op {
        exec: watch_guard,
        args,
        flags: flags::TX | flags::TX_GUARD,
        cmd_id: super::core::NO_STATS,
        db: 0,
        user: None,
        // Rebuilt with the client's before it is queued for a slot group (see `tx_op`).
        tls: false,
    })
}

/// Drops a client's WATCH session: its flag at once, its registrations on their cores soon.
pub fn unwatch(core: &Rc<Core>, client: &mut Client) {
    if let Some(w) = client.watching.take() {
        drop_watch(core, client.info.id, w);
    }
}

/// Drops WATCH session `w` of client `id`.
pub(super) fn drop_watch(core: &Rc<Core>, id: u64, w: Watching) {
    core.shared
        .watching_clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let mut by_core: std::collections::BTreeMap<usize, Vec<(Bytes, u32)>> = Default::default();
    for (k, c, _, db) in w.keys {
        by_core.entry(c).or_default().push((k, db));
    }
    for (c, keys) in by_core {
        core.spawn_on(c, move |cc| {
            Box::pin(async move {
                // Not while a script paused there (see `pause`).
                cc.gate.wait_open(None).await;
                let mut shard = cc.shard.borrow_mut();
                for (k, db) in keys {
                    shard.select(db as usize);
                    shard.watches.remove(&k, id);
                }
                shard.select(0);
                shard.sync_waiting_counts();
            })
        });
    }
}

impl Dispatcher {
    /// Runs MULTI, EXEC, DISCARD, WATCH or UNWATCH; the reply goes to the local buffer,
    /// except for an EXEC queued inline (see [`Dispatcher::exec_inline`]): true then, its
    /// reply's slot is taken.
    pub(super) async fn tx_command(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        cmd: TxCmd,
        args: Vec<Bytes>,
    ) -> bool {
        match cmd {
            TxCmd::Multi => {
                if client.multi.is_some() {
                    self.local.error("ERR MULTI calls can not be nested");
                } else {
                    client.multi = Some(Multi::default());
                    self.local.ok();
                }
            }
            TxCmd::Discard => {
                if client.multi.take().is_none() {
                    self.local.error("ERR DISCARD without MULTI");
                } else {
                    unwatch(core, client);
                    self.local.ok();
                }
            }
            TxCmd::Unwatch => {
                unwatch(core, client);
                self.local.ok();
            }
            TxCmd::Watch => {
                if client.multi.is_some() {
                    self.local.error("ERR WATCH inside MULTI is not allowed");
                    return false;
                }
                self.watch(core, client, &args[1..]).await;
            }
            TxCmd::Exec => {
                let Some(multi) = client.multi.take() else {
                    self.local.error("ERR EXEC without MULTI");
                    return false;
                };
                if multi.failed {
                    unwatch(core, client);
                    self.local.error(EXECABORT);
                    return false;
                }
                // A transaction that may grow memory is refused whole when memory is out,
                // as Valkey rejects such an EXEC (never some of its commands).
                let grows = multi
                    .queued
                    .iter()
                    .any(|a| def_of(a).is_some_and(|d| d.flags & flags::DENYOOM != 0));
                if grows && core.out_of_memory() {
                    unwatch(core, client);
                    let why = format!(
                        "EXECABORT Transaction discarded because of: {}",
                        super::core::OOM
                    );
                    self.local.error(&why);
                    return false;
                }
                let queued = match self.exec_inline(core, client, multi.queued) {
                    Ok(()) => return true,
                    Err(queued) => queued,
                };
                // Everything queued before EXEC in this pipeline runs first.
                self.flush(core, client.resp3).await;
                let mut reply = Out::new(client.resp3);
                // Boxed: EXEC dispatches its queued commands, and dispatch runs EXEC.
                Box::pin(exec(core, client, queued, &mut reply)).await;
                unwatch(core, client);
                self.local.raw(&reply.buf);
            }
        }
        false
    }

    /// A cluster transaction whose keys share a slot of a group this node leads: queued
    /// with the rest of the pipeline's ops for that group, led by its WATCH guard, instead
    /// of run on its own. The group's batch runs without yielding, so the transaction is
    /// still atomic and one unit of records (its first op carries `TX_BEGIN`), and a
    /// pipeline of transactions shares one log entry and one commit wait instead of one
    /// each. Its WATCH session is dropped once the batch ran (the guard reads it). Err
    /// hands the queue back when the transaction does not qualify (the general path runs
    /// it: keyless or foreign commands, blocking ones, a redirect to give, a watched key
    /// already changed).
    fn exec_inline(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        queued: Vec<Vec<Bytes>>,
    ) -> Result<(), Vec<Vec<Bytes>>> {
        let Some(cluster) = core.shared.cluster() else {
            return Err(queued);
        };
        if self.atomic || self.tx.is_some() || queued.is_empty() {
            return Err(queued);
        }
        let watched: &[WatchedKey] = client.watching.as_ref().map_or(&[], |w| &w.keys[..]);
        if client
            .watching
            .as_ref()
            .is_some_and(|w| w.flag.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(queued);
        }
        let mut slots: BTreeSet<u16> = watched.iter().map(|w| key_slot(&w.0)).collect();
        let mut ops = Vec::with_capacity(queued.len());
        for args in &queued {
            let Some((cmd_id, def)) = resolve(args) else {
                return Err(queued);
            };
            let exec = match def.exec {
                Exec::Shard(f) | Exec::Multi(f, _) if def.flags & flags::BLOCKING == 0 => f,
                _ => return Err(queued),
            };
            let Some(Route::Group(_)) =
                routing::route(cluster, def, args, client.readonly, client.info.tls)
            else {
                return Err(queued);
            };
            slots.extend(keys_of(def, args).iter().map(|k| key_slot(k)));
            ops.push((exec, def.flags, cmd_id));
        }
        let &[slot] = &slots.iter().copied().collect::<Vec<u16>>()[..] else {
            return Err(queued);
        };
        let g = cluster.group_of(slot as usize);
        if cluster.leader(g) != Some(cluster.id) {
            return Err(queued);
        }
        let guard = guard_op(client.info.id, watched, core.owner(slot as usize));
        let guarded = guard.is_some();
        let mut parts = Vec::with_capacity(queued.len() + guarded as usize);
        let mut first = true;
        let db = client.db;
        let tls = client.info.tls;
        // A queued script carries its caller's user when restricted (see `Op::user`).
        let user = client.script_caller(&core.shared);
        let mut tx_op = |exec, args, flags: u32, cmd_id| {
            let begin = if std::mem::take(&mut first) {
                flags::TX_BEGIN
            } else {
                0
            };
            Op {
                exec,
                args,
                flags: flags | flags::TX | begin,
                cmd_id,
                db,
                user: if flags & flags::SCRIPT != 0 {
                    user.clone()
                } else {
                    None
                },
                tls,
            }
        };
        if let Some(op) = guard {
            let op = tx_op(op.exec, op.args, op.flags, op.cmd_id);
            parts.push(self.queue_for_group(core, cluster, g, op));
        }
        for (args, (exec, flags, cmd_id)) in queued.into_iter().zip(ops) {
            let op = tx_op(exec, args, flags, cmd_id);
            parts.push(self.queue_for_group(core, cluster, g, op));
        }
        self.push_exec(guarded, parts);
        if let Some(w) = client.watching.take() {
            self.unwatch_after_flush.push((client.info.id, w));
        }
        Ok(())
    }

    async fn watch(&mut self, core: &Rc<Core>, client: &mut Client, keys: &[Bytes]) {
        // A transaction queued inline still holds its WATCH session on the cores: dropping
        // it after this WATCH registered would drop this one's registrations too.
        if !self.unwatch_after_flush.is_empty() {
            self.flush(core, client.resp3).await;
        }
        if let Some(cluster) = core.shared.cluster() {
            let def = registry().def(lookup(b"watch").expect("watch is in the table"));
            let mut args = vec![Bytes::from_static(b"watch")];
            args.extend(keys.iter().cloned());
            if let Some(Route::Refuse(e)) =
                routing::route(cluster, def, &args, client.readonly, client.info.tls)
            {
                self.local.error(&e);
                return;
            }
        }
        if client.watching.is_none() {
            core.shared
                .watching_clients
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let flag = client
            .watching
            .get_or_insert_with(|| Watching {
                flag: Default::default(),
                keys: Vec::new(),
            })
            .flag
            .clone();
        let id = client.info.id;
        let db = client.db;
        for key in keys {
            let owner = core.owner(key_slot(key) as usize);
            let (k, f) = (key.clone(), flag.clone());
            let alive = core
                .call_as(owner, self.tx, move |cc| {
                    let now = crate::util::now_ms();
                    let mut shard = cc.shard.borrow_mut();
                    shard.select(db as usize);
                    shard.watches.add(&k, id, &f);
                    let alive = shard.peek(&k, now).is_some();
                    shard.select(0);
                    shard.sync_waiting_counts();
                    alive
                })
                .await
                .unwrap_or(false);
            if let Some(w) = client.watching.as_mut() {
                w.keys.push((key.clone(), owner, alive, db));
            }
        }
        self.local.ok();
    }
}

/// Runs a transaction's queued commands and writes EXEC's reply.
async fn exec(core: &Rc<Core>, client: &mut Client, queued: Vec<Vec<Bytes>>, out: &mut Out) {
    let watched: Vec<WatchedKey> = client
        .watching
        .as_ref()
        .map(|w| w.keys.clone())
        .unwrap_or_default();
    if client
        .watching
        .as_ref()
        .is_some_and(|w| w.flag.load(std::sync::atomic::Ordering::Relaxed))
    {
        out.nil_array();
        return;
    }
    // Where the transaction's keys live.
    let mut cores: BTreeSet<usize> = watched.iter().map(|w| w.1).collect();
    let mut slots: BTreeSet<u16> = watched.iter().map(|w| key_slot(&w.0)).collect();
    let mut everywhere = false;
    for args in &queued {
        let Some(def) = def_of(args) else { continue };
        if matches!(def.exec, Exec::Fanout(f) if f != Fanout::Scan) {
            everywhere = true;
        }
        for k in keys_of(def, args) {
            cores.insert(core.owner(key_slot(&k) as usize));
            slots.insert(key_slot(&k));
        }
    }
    if let Some(cluster) = core.shared.cluster() {
        if slots.len() > 1 {
            out.error(routing::CROSSSLOT);
            return;
        }
        if let Some(&slot) = slots.iter().next() {
            let g = cluster.group_of(slot as usize);
            if cluster.leader(g) != Some(cluster.id) {
                let probe = vec![
                    Bytes::from_static(b"get"),
                    watched
                        .first()
                        .map(|w| w.0.clone())
                        .or_else(|| {
                            queued.iter().find_map(|a| {
                                def_of(a).and_then(|d| keys_of(d, a).into_iter().next())
                            })
                        })
                        .unwrap_or_default(),
                ];
                let def = registry().def(lookup(b"get").expect("get is in the table"));
                if let Some(Route::Refuse(e)) =
                    routing::route(cluster, def, &probe, false, client.info.tls)
                {
                    out.error(&e);
                    return;
                }
            }
        }
        everywhere = false;
    }
    let single_core = !everywhere && cores.len() <= 1 || core.cores() == 1;
    let mut nd = Dispatcher::new(core.cores());
    let replies = if single_core || core.shared.cluster().is_some() {
        // One batch on one core (or one slot group): atomic as it runs.
        let target = cores.iter().next().copied().unwrap_or(core.id);
        let guard = guard_op(client.info.id, &watched, target);
        let dest = match (core.shared.cluster(), slots.iter().next()) {
            (Some(cluster), Some(&slot)) => Dest::Group(cluster.group_of(slot as usize)),
            _ => Dest::Core(target),
        };
        nd.run_atomic(core, client, guard, dest, queued).await
    } else {
        let tx = super::gate::new_tx_id();
        if everywhere {
            cores = (0..core.cores()).collect();
        }
        span::acquire_all(core, &cores, tx).await;
        // With the gates held nothing changes: check the watched keys first.
        let mut clean = true;
        for &c in &cores {
            let Some(op) = guard_op(client.info.id, &watched, c) else {
                continue;
            };
            let ok = core
                .call_as(c, Some(tx), move |cc| {
                    let mut o = Out::new(false);
                    let now = crate::util::now_ms();
                    let mut shard = cc.shard.borrow_mut();
                    let mut ctx = Ctx {
                        shard: &mut shard,
                        now,
                        out: &mut o,
                        node: &*cc.shared,
                    };
                    (op.exec)(&mut ctx, &op.args);
                    o.buf == b":1\r\n"
                })
                .await
                .unwrap_or(false);
            clean &= ok;
        }
        let replies = if clean {
            Some(nd.run_gated(core, client, tx, queued).await)
        } else {
            None
        };
        span::release_all(core, &cores, tx).await;
        span::durable_barrier(core, &cores).await;
        replies
    };
    match replies {
        None => out.nil_array(),
        Some(replies) => {
            out.array(replies.len());
            for r in replies {
                out.raw(&r);
            }
        }
    }
}
