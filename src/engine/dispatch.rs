//! The pipeline dispatcher: takes the commands of one read batch, runs each where its keys
//! live, and puts the replies back in request order.
//!
//! Commands whose keys are on this core run at once. Commands for other cores are queued per
//! destination and sent as one message per core when the batch ends or a barrier command
//! needs everything before it to have run. Multi-key commands spanning cores are split into
//! per-core parts and gathered; their atomicity then holds per core (the README states the
//! rule: keys that share a slot always share a core).

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::core::{BatchReply, Core, NO_STATS, Op};
use super::gate::TxId;
use super::routing;
use crate::cluster::key_slot;
use crate::cluster::node::ClusterNode;
use crate::cluster::types::GroupId;
use crate::command::connection::{Client, ConnCtx};
use crate::command::table::{self, lookup_client, lookup_sub, registry};
use crate::command::{self, Exec, Fanout, Multi, ShardFn, flags, keyspace, string};
use crate::metrics::CoreStats;
use crate::protocol::Out;
use crate::security;

/// Valkey's reply while the data set loads.
const LOADING: &str = "LOADING Valkey is loading the dataset in memory";

/// Where one reply (or part of one) is.
#[derive(Clone, Copy)]
pub(super) enum Part {
    /// A range of the local output buffer (`usize`: a read batch's replies may pass 4 GiB).
    Local(usize, usize),
    /// Reply `idx` of the batch sent to `core` in flush `round`.
    Remote { round: u32, core: u32, idx: u32 },
}

/// How parts from several cores combine into one reply.
#[derive(Clone, Copy)]
enum Gather {
    /// An array of the parts in order (MGET).
    Array,
    /// The sum of integer parts (DEL, EXISTS, DBSIZE...).
    SumInts,
    /// +OK when every part is +OK, else the first error (MSET, FLUSHALL).
    AllOk,
    /// The concatenation of array parts (KEYS).
    ConcatArrays,
    /// One non-nil part chosen at random, nil if none (RANDOMKEY).
    AnyNonNil,
    /// EXEC's reply from its transaction's op replies, led by its WATCH guard's when
    /// `guarded` (`:0`: a watched key changed, the null array; an error: the batch was
    /// refused as a whole).
    Exec { guarded: bool },
}

enum Slot {
    One(Part),
    Gathered(Gather, Vec<Part>),
}

pub struct Dispatcher {
    pub(super) local: Out,
    /// The time local ops of the current read batch run at.
    now: u64,
    slots: Vec<Slot>,
    /// Ops queued per destination core for the next flush.
    pending: Vec<Vec<Op>>,
    /// Replies of flushed batches: rounds[round][core].
    rounds: Vec<Vec<Option<BatchReply>>>,
    local_ends: Vec<usize>,
    /// A shard command ran here, outside a slot group's path, in cluster mode: its reply
    /// may have seen uncommitted writes and must wait for them (see `replicated`).
    ran_local: bool,
    /// The gated transaction this dispatcher runs for (see `gate`, `tx`): its ops pass the
    /// gates it holds.
    pub(super) tx: Option<TxId>,
    /// Flags added to every op it routes (`flags::TX` while it runs a transaction).
    op_flags: u32,
    /// Running a transaction as one batch: nothing may split the batch (no barrier flush).
    pub(super) atomic: bool,
    /// The next transaction op routed is its first (`flags::TX_BEGIN`).
    tx_begin: bool,
    /// WATCH sessions of transactions queued inline (see `tx::exec_inline`): dropped once the
    /// batch holding their guard has run.
    pub(super) unwatch_after_flush: Vec<(u64, crate::command::connection::Watching)>,
    /// A blocking command's attempt: it answers a null instead of blocking (`blocking`).
    pub(super) no_block: bool,
    /// The commands this dispatcher runs were dispatched before (a transaction's queue, a
    /// blocked command's retry), so they name commands by the table's own names, not as
    /// clients call them after `rename-command`.
    pub(super) redispatch: bool,
    /// The id under which `run_atomic` holds this core's gate (a dispatcher runs one
    /// transaction and is dropped), so a script pausing inside it keeps it atomic.
    holding: Option<TxId>,
    /// This read batch prepared the shard (see `Core::prepare`): something in it may have
    /// run against it, and it must hand its changes over before replying.
    prepared: bool,
    /// The database of the command being dispatched (the client's, as SELECT left it).
    pub(super) db: u32,
    /// The client of the command being dispatched is on TLS (see `Op::tls`).
    tls: bool,
    /// The client's ACL user when restricted (None: allowed everything), for the script ops
    /// this dispatcher builds (see `Op::user`).
    user: Option<crate::security::acl::Caller>,
}

impl Dispatcher {
    pub fn new(cores: usize) -> Dispatcher {
        Dispatcher {
            local: Out::new(false),
            now: 0,
            slots: Vec::new(),
            pending: (0..cores).map(|_| Vec::new()).collect(),
            rounds: Vec::new(),
            local_ends: Vec::new(),
            ran_local: false,
            tx: None,
            op_flags: 0,
            atomic: false,
            tx_begin: false,
            unwatch_after_flush: Vec::new(),
            no_block: false,
            redispatch: false,
            holding: None,
            prepared: false,
            db: 0,
            tls: false,
            user: None,
        }
    }

    /// The gate id this dispatcher's ops carry: its gated transaction's, or the one it holds.
    fn gate_id(&self) -> Option<TxId> {
        self.tx.or(self.holding)
    }

    /// Runs a transaction's `queued` commands as one batch for `dest`, led by its WATCH
    /// `guard` (if any); their replies, or None when the guard found a watched key changed.
    pub(super) async fn run_atomic(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        guard: Option<Op>,
        dest: super::tx::Dest,
        queued: Vec<Vec<Bytes>>,
    ) -> Option<Vec<Vec<u8>>> {
        self.local.resp3 = client.resp3;
        self.op_flags = flags::TX;
        self.redispatch = true;
        self.atomic = true;
        self.tx_begin = true;
        // From here to the flush nothing yields, so nothing else runs on this core: the gate
        // must be open now and stays so.
        core.gate.wait_open(None).await;
        // Its keys all here: it holds the gate, so a script pausing inside it (see `pause`)
        // does not open the gate midway. Released however this returns.
        let hold = matches!(dest, super::tx::Dest::Core(c) if c == core.id)
            .then(|| core.gate.hold_now())
            .flatten();
        self.holding = hold.as_ref().map(|h| h.id());
        self.now = core.prepare();
        let guarded = guard.is_some();
        if let Some(op) = guard {
            let part = match dest {
                super::tx::Dest::Core(c) => {
                    let part = self.route(core, c, op.exec, op.args, op.flags, op.cmd_id);
                    if c == core.id && self.part_bytes(part) == b":0\r\n" {
                        return None;
                    }
                    part
                }
                super::tx::Dest::Group(g) => {
                    let cluster = core.shared.cluster()?;
                    self.queue_for_group(core, cluster, g, op)
                }
            };
            self.slots.push(Slot::One(part));
        }
        for args in queued {
            self.dispatch(core, client, args).await;
        }
        self.flush(core, client.resp3).await;
        core.finish();
        let mut replies = self.take_replies();
        if guarded {
            if replies.first().is_some_and(|r| r == b":0\r\n") {
                return None;
            }
            replies.remove(0);
        }
        Some(replies)
    }

    /// Runs a transaction's `queued` commands, each where its keys live, while `tx` holds the
    /// gates of every core they touch.
    pub(super) async fn run_gated(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        tx: TxId,
        queued: Vec<Vec<Bytes>>,
    ) -> Vec<Vec<u8>> {
        self.local.resp3 = client.resp3;
        self.tx = Some(tx);
        self.op_flags = flags::TX;
        self.redispatch = true;
        self.now = core.prepare();
        for args in queued {
            self.dispatch(core, client, args).await;
        }
        self.flush(core, client.resp3).await;
        core.finish();
        self.take_replies()
    }

    /// An op's flags with `TX_BEGIN` added when it is its transaction's first.
    fn tx_flags(&mut self, flags: u32) -> u32 {
        if flags & flags::TX != 0 && std::mem::take(&mut self.tx_begin) {
            flags | flags::TX_BEGIN
        } else {
            flags
        }
    }

    fn part_bytes(&self, p: Part) -> &[u8] {
        Self::part(&self.local.buf, &self.rounds, p)
    }

    /// Each command's reply, in order (gathered parts combined).
    fn take_replies(&mut self) -> Vec<Vec<u8>> {
        let resp3 = self.local.resp3;
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::One(p) => Self::part(&self.local.buf, &self.rounds, *p).to_vec(),
                Slot::Gathered(g, parts) => {
                    let bufs: Vec<&[u8]> = parts
                        .iter()
                        .map(|p| Self::part(&self.local.buf, &self.rounds, *p))
                        .collect();
                    let mut w = Vec::new();
                    gather(*g, &bufs, resp3, &mut w);
                    w
                }
            })
            .collect()
    }

    /// Runs `commands` (one read batch) and appends their replies, in order, to `wbuf`.
    pub async fn run(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        commands: Vec<Vec<Bytes>>,
        wbuf: &mut Vec<u8>,
    ) {
        self.local.buf.clear();
        self.local.resp3 = client.resp3;
        self.slots.clear();
        self.rounds.clear();
        if core
            .shared
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Valkey stops serving once shutdown begins; the connection just closes.
            client.closing = true;
            return;
        }
        // While a script paused on this core is past busy-reply-threshold, the shard is not to
        // be touched: each command is answered -BUSY or runs without it (see `dispatch`).
        let mut before = 0;
        self.prepared = false;
        if core.wait_unless_busy(None).await.is_ok() {
            before = core.change_count();
            self.now = core.prepare();
            self.prepared = true;
        }
        for args in commands {
            self.dispatch(core, client, args).await;
            if client.closing {
                break;
            }
        }
        self.flush(core, client.resp3).await;
        if !self.prepared && core.gate.blocks(None) {
            // Nothing here touched the shard (every command was answered -BUSY or needs no
            // shard): the replies go now, not once the script ends.
            self.assemble(wbuf, &core.shared.core_stats[core.id]);
            return;
        }
        // A script may have paused on this core meanwhile (see `pause`).
        core.gate.wait_open(None).await;
        core.finish();
        if std::mem::take(&mut self.ran_local)
            && core.pending_replicated()
            && super::replicated::settle_all(core).await.is_err()
        {
            // The writes these replies saw were undone (the leadership changed): nothing
            // confirmed can be sent, and the client retries on a new connection.
            client.closing = true;
            return;
        }
        // appendfsync always: replies after a write leave only once it is on disk (the other
        // cores' parts waited for their own batches before answering).
        // (In cluster mode a write is acknowledged after its Raft commit instead.)
        if core.shared.cluster().is_none()
            && let Some(ticket) = core.ticket_since(before)
            && ticket.await.is_err()
        {
            client.closing = true;
            return;
        }
        self.assemble(wbuf, &core.shared.core_stats[core.id]);
    }

    /// Counts a command that ran here on the connection's core (its reply starts at `start`
    /// of the local buffer) and records where its reply is.
    fn count_local(&mut self, stats: &CoreStats, id: usize, start: usize, began: Instant) {
        let s = &stats.commands[id];
        s.calls.inc();
        s.usec.add(began.elapsed().as_micros() as u64);
        if self.local.buf.get(start) == Some(&b'-') {
            s.failed_calls.inc();
        }
        stats.commands_processed.inc();
        self.push_local(start);
    }

    /// Refuses command `id` before it runs: its error reply, the transaction it was queued
    /// in doomed, a rejected call counted.
    fn reject(
        &mut self,
        client: &mut Client,
        stats: &CoreStats,
        id: usize,
        start: usize,
        error: &str,
    ) {
        self.local.error(error);
        doom(client);
        stats.commands[id].rejected_calls.inc();
        self.push_local(start);
    }

    fn push_local(&mut self, start: usize) {
        self.slots
            .push(Slot::One(Part::Local(start, self.local.buf.len())));
    }

    /// Runs a shard command here, or queues it for the core that owns its keys.
    fn route(
        &mut self,
        core: &Rc<Core>,
        target: usize,
        exec: ShardFn,
        args: Vec<Bytes>,
        flags: u32,
        cmd_id: u32,
    ) -> Part {
        let flags = self.tx_flags(flags | self.op_flags);
        if target == core.id {
            self.ran_local |= core.shared.config.cluster.enabled;
            let start = self.local.buf.len();
            self.local_ends.clear();
            core.execute(
                &[Op {
                    exec,
                    args,
                    flags,
                    cmd_id,
                    db: self.db,
                    user: self.op_user(flags),
                    tls: self.tls,
                }],
                self.now,
                &mut self.local,
                &mut self.local_ends,
            );
            Part::Local(start, self.local.buf.len())
        } else {
            let user = self.op_user(flags);
            let q = &mut self.pending[target];
            q.push(Op {
                exec,
                args,
                flags,
                cmd_id,
                db: self.db,
                user,
                tls: self.tls,
            });
            Part::Remote {
                round: self.rounds.len() as u32,
                core: target as u32,
                idx: (q.len() - 1) as u32,
            }
        }
    }

    /// Runs a script command on this core, where its script may pause (see `pause`).
    async fn run_script_here(
        &mut self,
        core: &Rc<Core>,
        exec: ShardFn,
        args: Vec<Bytes>,
        flags: u32,
        cmd_id: u32,
    ) -> Part {
        let flags = self.tx_flags(flags | self.op_flags);
        let start = self.local.buf.len();
        let op = Op {
            exec,
            args,
            flags,
            cmd_id,
            db: self.db,
            user: self.op_user(flags),
            tls: self.tls,
        };
        let out = std::mem::take(&mut self.local);
        let ran = core.execute_or_pause(vec![op], self.now, out, Vec::new(), self.gate_id());
        let (_, out, _) = ran.done().await;
        self.local = out;
        Part::Local(start, self.local.buf.len())
    }

    /// Answers a command refused or killing while a script paused on this core is past
    /// busy-reply-threshold (see [`while_busy`]): -BUSY dooms a MULTI.
    fn answer_busy(&mut self, core: &Rc<Core>, client: &mut Client, action: WhileBusy, busy: &str) {
        let start = self.local.buf.len();
        match action {
            WhileBusy::Kill { function } => {
                command::script::kill_running(&core.shared.scripts, function, &mut self.local)
            }
            WhileBusy::Run | WhileBusy::Refuse => {
                self.local.error(busy);
                doom(client);
            }
        }
        self.push_local(start);
    }

    /// The user a script op carries (see `Op::user`).
    fn op_user(&self, flags: u32) -> Option<crate::security::acl::Caller> {
        if flags & flags::SCRIPT != 0 {
            self.user.clone()
        } else {
            None
        }
    }

    async fn dispatch(&mut self, core: &Rc<Core>, client: &mut Client, mut args: Vec<Bytes>) {
        self.db = client.db;
        self.tls = client.info.tls;
        // A transaction holding this core's gate, or a script paused here, runs first (see
        // `gate`, `pause`).
        if core.gate.blocks(self.gate_id()) {
            match core.wait_unless_busy(self.gate_id()).await {
                Ok(()) => {
                    self.now = core.prepare();
                    self.prepared = true;
                }
                Err(busy) => match while_busy(&args, self.redispatch) {
                    // What Valkey serves during a busy script needs no shard: it runs below.
                    WhileBusy::Run => {}
                    action => {
                        self.answer_busy(core, client, action, busy);
                        return;
                    }
                },
            }
        }
        let start = self.local.buf.len();
        let stats = &core.shared.core_stats[core.id];
        let name = if self.redispatch {
            table::lookup(&args[0])
        } else {
            lookup_client(&args[0])
        };
        let Some(mut id) = name else {
            if command::is(&args[0], "post") || command::is(&args[0], "host:") {
                // An HTTP request (cross-protocol scripting): like Valkey, drop the connection
                // without answering anything of this read.
                tracing::warn!(
                    "possible security attack: a client sent POST or Host:; connection dropped"
                );
                self.slots.clear();
                self.local.buf.clear();
                client.closing = true;
                return;
            }
            command::unknown_command(&mut self.local, &args);
            doom(client);
            self.push_local(start);
            return;
        };
        let reg = registry();
        let mut def = reg.def(id);
        if table::renamed() && !args[0].eq_ignore_ascii_case(def.name.as_bytes()) {
            // A renamed command runs under its own name from here on: handlers that serve
            // several commands tell them apart by it, and MULTI queues it by it.
            args[0] = Bytes::from_static(def.name.as_bytes());
        }
        if matches!(def.exec, Exec::Container) {
            if args.len() == 1 && def.name == "command" {
                command::meta::command_all(&mut self.local);
                self.push_local(start);
                return;
            }
            if args.len() < 2 {
                command::arity_error(&mut self.local, def.name);
                self.push_local(start);
                return;
            }
            match lookup_sub(id, &args[1]) {
                Some(sub) => {
                    id = sub;
                    def = reg.def(id);
                }
                None => {
                    let msg = format!(
                        "ERR unknown subcommand '{}'. Try {} HELP.",
                        command::lossy(&args[1], 128),
                        def.name.to_ascii_uppercase()
                    );
                    self.local.error(&msg);
                    doom(client);
                    self.push_local(start);
                    return;
                }
            }
        }
        client
            .info
            .last_cmd
            .store(id + 1, std::sync::atomic::Ordering::Relaxed);
        let argc = args.len() as i32;
        if (def.arity > 0 && argc != def.arity) || argc < -def.arity {
            command::arity_error(&mut self.local, reg.full_name(id));
            doom(client);
            stats.commands[id].rejected_calls.inc();
            self.push_local(start);
            return;
        }
        if def.flags & flags::NO_AUTH == 0 && client.auth_required(&core.shared) {
            if !core.shared.acl.sealed() {
                return self.reject(client, stats, id, start, "NOAUTH Authentication required.");
            }
            // A cluster node still opening its storage holds no users yet (see
            // `Users::seal`): its clients are told it is loading, as they are while it loads
            // the data, and PING answers for health checks; they authenticate once it has
            // opened.
            if def.name != "ping" {
                return self.reject(client, stats, id, start, LOADING);
            }
        }
        // ACL: one epoch load and, for an unrestricted user (the default one), one flag test.
        if !core.shared.acl.refresh(&mut client.acl) {
            // The client's user was deleted (ACL DELUSER): Valkey disconnects its clients.
            client.closing = true;
            return;
        }
        // Only a script op carries its caller (see `Op::user`): no clone for other commands.
        self.user = if def.flags & flags::SCRIPT != 0 {
            client.script_caller(&core.shared)
        } else {
            None
        };
        if let Err(denied) = client.acl.user.check(id, def, &args) {
            let msg = security::acl::denied_error(&client.acl.user, reg.full_name(id), &denied);
            self.local.error(&msg);
            // Queued, or run by EXEC (which checks every command again, as Valkey does).
            let context = if client.multi.is_some() || self.op_flags & flags::TX != 0 {
                "multi"
            } else {
                "toplevel"
            };
            command::connection::log_denied(
                &core.shared.acl,
                &client.acl.user,
                &client.info,
                reg.full_name(id),
                &denied,
                context,
                core.shared.config.runtime.acllog_max_len(),
            );
            doom(client);
            stats.commands[id].rejected_calls.inc();
            self.push_local(start);
            return;
        }
        if core.shared.loading() && def.flags & flags::LOADING == 0 && def.name != "ping" {
            // PING is not flagged `loading` in Valkey, but health checks must see a live node.
            return self.reject(client, stats, id, start, LOADING);
        }
        if command::key_too_long(def, &args) {
            return self.reject(client, stats, id, start, &command::key_too_long_error());
        }
        // card-pan-guard: off, one atomic load per write. Refused inside MULTI, the
        // transaction is doomed: nothing of it is written.
        if def.flags & flags::WRITE != 0
            && let Some(finding) = core.shared.pan_guard.inspect(def, &args)
        {
            let context = if client.multi.is_some() || self.op_flags & flags::TX != 0 {
                "multi"
            } else {
                "toplevel"
            };
            let verdict = core.shared.pan_guard.decide(
                &finding,
                context,
                &client.acl.user.name,
                &client.info.addr,
            );
            if verdict == security::pan_guard::Verdict::Refuse {
                return self.reject(client, stats, id, start, security::pan_guard::REFUSED);
            }
        }
        // Past the checks that reject a command before it runs (CLIENT LIST tot-cmds).
        client
            .info
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cmd_id = id as u32;
        if client.multi.is_some() && !super::tx::runs_inside_multi(def) {
            self.queue_in_multi(core, client, def, args);
            self.push_local(start);
            return;
        }
        if def.flags & flags::BLOCKING != 0
            && !self.no_block
            && self.tx.is_none()
            && self.op_flags & flags::TX == 0
        {
            // Whatever this pipeline queued before it runs first.
            self.flush(core, client.resp3).await;
            let start = self.local.buf.len();
            let began = Instant::now();
            self.run_blocking(core, client, def, args).await;
            self.count_local(stats, id, start, began);
            return;
        }
        if let Exec::Tx(cmd) = def.exec {
            let began = Instant::now();
            if self.tx_command(core, client, cmd, args).await {
                // EXEC queued inline: its reply comes with its group's batch.
                let s = &stats.commands[id];
                s.calls.inc();
                s.usec.add(began.elapsed().as_micros() as u64);
                stats.commands_processed.inc();
            } else {
                self.count_local(stats, id, start, began);
            }
            return;
        }
        if core.shared.config.cluster.enabled
            && matches!(
                def.exec,
                Exec::Shard(_) | Exec::Multi(..) | Exec::Fanout(Fanout::FlushAll)
            )
        {
            self.dispatch_cluster(core, client, def, cmd_id, args);
            return;
        }
        let cores = core.cores();
        // The core owning the keys, if they are all on one core.
        let mut positions = def.keys.positions(&args);
        let key_core = positions
            .next()
            .map(|p| core.owner(key_slot(&args[p]) as usize));
        let single_core = key_core
            .is_some_and(|c| positions.all(|p| core.owner(key_slot(&args[p]) as usize) == c));
        match def.exec {
            Exec::Container => unreachable!("containers resolve to a subcommand above"),
            Exec::Shard(f) | Exec::Multi(f, Multi::MSetNx | Multi::Move)
                if key_core.is_some() && !single_core =>
            {
                // Its keys live on several cores: run it on a scratch shard holding them all,
                // under their cores' gates (after what this pipeline queued before it).
                self.flush(core, client.resp3).await;
                let start = self.local.buf.len();
                let began = Instant::now();
                let keys = def.keys.positions(&args).map(|p| args[p].clone()).collect();
                let (tx, db, user) = (self.tx, self.db, self.op_user(def.flags));
                super::span::run_spanning(core, f, &args, keys, tx, db, user, &mut self.local)
                    .await;
                self.count_local(stats, id, start, began);
            }
            Exec::Shard(f)
                if def.flags & flags::SCRIPT != 0 && key_core.unwrap_or(core.id) == core.id =>
            {
                let part = self.run_script_here(core, f, args, def.flags, cmd_id).await;
                self.slots.push(Slot::One(part));
            }
            Exec::Shard(f) => {
                let target = key_core.unwrap_or(core.id);
                let part = self.route(core, target, f, args, def.flags, cmd_id);
                self.slots.push(Slot::One(part));
            }
            Exec::Multi(f, _) if single_core || cores == 1 => {
                let part = self.route(
                    core,
                    key_core.unwrap_or(core.id),
                    f,
                    args,
                    def.flags,
                    cmd_id,
                );
                self.slots.push(Slot::One(part));
            }
            Exec::Multi(_, kind) => {
                self.split(core, def.name, def.flags, cmd_id, kind, args);
            }
            Exec::Fanout(Fanout::SwapDb) => {
                self.flush(core, client.resp3).await;
                let start = self.local.buf.len();
                let began = Instant::now();
                super::span::swap_dbs(core, &args, self.gate_id(), &mut self.local).await;
                self.count_local(stats, id, start, began);
            }
            Exec::Fanout(kind) => self.fanout(core, kind, args, def.flags, cmd_id),
            Exec::Snapshot(background) => {
                // Everything queued before it is part of the snapshot.
                self.flush(core, client.resp3).await;
                let start = self.local.buf.len();
                let began = Instant::now();
                super::persist::snapshot_command(core, background, &args, &mut self.local).await;
                self.count_local(stats, id, start, began);
            }
            Exec::ClusterAdmin => {
                self.flush(core, client.resp3).await;
                let start = self.local.buf.len();
                let began = Instant::now();
                if let Some(req) = command::cluster::admin(&core.shared, &args, &mut self.local) {
                    if security::audit::enabled() {
                        let peer = match &req {
                            command::cluster::AdminRequest::Meet {
                                host,
                                port,
                                bus_port,
                            } => {
                                format!("{host}:{port}@{bus_port}")
                            }
                            // The node's name as the client gave it.
                            command::cluster::AdminRequest::Forget { .. } => {
                                String::from_utf8_lossy(&args[2]).into_owned()
                            }
                        };
                        security::audit::record(&security::audit::Event::ClusterAdmin {
                            command: if matches!(req, command::cluster::AdminRequest::Meet { .. }) {
                                "meet"
                            } else {
                                "forget"
                            },
                            peer: Some(&peer),
                            user: &client.acl.user.name,
                            client: &client.info.addr,
                        });
                    }
                    let done = core
                        .on_core(0, move |core| {
                            Box::pin(async move {
                                let Some(host) = core.host() else {
                                    return Err(crate::cluster::CLUSTERDOWN.to_string());
                                };
                                match req {
                                    command::cluster::AdminRequest::Meet {
                                        host: h,
                                        port,
                                        bus_port,
                                    } => crate::cluster::admin::meet(&host, h, port, bus_port)
                                        .await
                                        .map(drop),
                                    command::cluster::AdminRequest::Forget { id } => {
                                        crate::cluster::admin::forget(&host, id).await
                                    }
                                }
                            })
                        })
                        .await;
                    match done {
                        Some(Ok(())) => self.local.ok(),
                        Some(Err(e)) => self
                            .local
                            .error(&format!("ERR {}", e.trim_start_matches("ERR "))),
                        None => self.local.error("ERR the cluster node stopped"),
                    }
                }
                self.count_local(stats, id, start, began);
            }
            Exec::Libraries => {
                self.flush(core, client.resp3).await;
                let start = self.local.buf.len();
                let began = Instant::now();
                match command::function::prepare_change(&*core.shared, &args) {
                    Err(e) => self.local.error(&e),
                    Ok(change) => {
                        let reply = change.clone();
                        match super::libraries::commit(core, change).await {
                            Ok(()) => command::function::change_reply(&reply, &mut self.local),
                            Err(e) => self.local.error(&e),
                        }
                    }
                }
                self.count_local(stats, id, start, began);
            }
            Exec::Tx(_) => unreachable!("run above"),
            Exec::Users(_) if core.shared.config.cluster.enabled => {
                // The users every node shares: committed through the meta group.
                self.flush(core, client.resp3).await;
                let start = self.local.buf.len();
                let began = Instant::now();
                let outcome = match command::acl::prepare_change(&core.shared, def.name, &args) {
                    Ok(change) => super::users::commit(core, change).await,
                    Err(e) => Err(e),
                };
                let mut ctx = ConnCtx {
                    client,
                    shared: &core.shared,
                    out: &mut self.local,
                    core: core.id,
                };
                command::acl::change_reply(&mut ctx, def.name, &args, outcome);
                self.count_local(stats, id, start, began);
            }
            Exec::Conn(f) | Exec::Users(f) => {
                if def.flags & flags::BARRIER != 0 && !self.atomic {
                    self.flush(core, client.resp3).await;
                }
                let start = self.local.buf.len();
                let began = Instant::now();
                let mut ctx = ConnCtx {
                    client,
                    shared: &core.shared,
                    out: &mut self.local,
                    core: core.id,
                };
                f(&mut ctx, &args);
                if def.name == "reset" {
                    super::tx::unwatch(core, client);
                }
                self.count_local(stats, id, start, began);
            }
        }
    }

    /// A keyed command in cluster mode: queued for its slot group when this node leads it,
    /// run here for a READONLY connection on a replica, else refused with a redirect.
    fn dispatch_cluster(
        &mut self,
        core: &Rc<Core>,
        client: &Client,
        def: &command::CommandDef,
        cmd_id: u32,
        args: Vec<Bytes>,
    ) {
        let start = self.local.buf.len();
        let Some(cluster) = core.shared.cluster() else {
            self.local.error(crate::cluster::CLUSTERDOWN);
            self.push_local(start);
            return;
        };
        if let Exec::Fanout(kind) = def.exec {
            // Only FLUSHALL/FLUSHDB come here (the other fanouts read this node's copies).
            debug_assert!(matches!(kind, Fanout::FlushAll));
            self.flush_led_groups(core, cluster, def, cmd_id, args);
            return;
        }
        let exec = match def.exec {
            Exec::Shard(f) | Exec::Multi(f, _) => f,
            _ => unreachable!("only keyed commands are routed"),
        };
        match routing::route(cluster, def, &args, client.readonly, client.info.tls) {
            // A keyless shard command: runs here.
            None => {
                let part = self.route(core, core.id, exec, args, def.flags, cmd_id);
                self.slots.push(Slot::One(part));
            }
            Some(routing::Route::Refuse(msg)) => {
                self.local.error(&msg);
                self.push_local(start);
            }
            Some(routing::Route::LocalRead) => {
                let target = def
                    .keys
                    .positions(&args)
                    .next()
                    .map_or(core.id, |p| core.owner(key_slot(&args[p]) as usize));
                let part = self.route(core, target, exec, args, def.flags, cmd_id);
                self.slots.push(Slot::One(part));
            }
            Some(routing::Route::Group(g)) => {
                let part = self.queue_for_group(
                    core,
                    cluster,
                    g,
                    Op {
                        exec,
                        args,
                        flags: def.flags,
                        cmd_id,
                        db: self.db,
                        user: self.op_user(def.flags),
                        tls: self.tls,
                    },
                );
                self.slots.push(Slot::One(part));
            }
        }
    }

    /// Queues `op` for slot group `g`'s log (sent when the batch flushes); where its reply
    /// will be.
    pub(super) fn queue_for_group(
        &mut self,
        core: &Rc<Core>,
        cluster: &ClusterNode,
        g: GroupId,
        op: Op,
    ) -> Part {
        let dest = core.cores() + g as usize;
        let op = Op {
            flags: self.tx_flags(op.flags | self.op_flags),
            ..op
        };
        if self.pending.len() <= dest {
            self.pending
                .resize_with(core.cores() + cluster.group_count(), Vec::new);
        }
        let q = &mut self.pending[dest];
        q.push(op);
        Part::Remote {
            round: self.rounds.len() as u32,
            core: dest as u32,
            idx: (q.len() - 1) as u32,
        }
    }

    /// FLUSHALL/FLUSHDB in cluster mode, as on a Valkey cluster primary: deletes the keys of
    /// the slots this node serves as primary, i.e. of every group it leads, through each
    /// group's log so that its replicas delete them too; +OK once every group applied it.
    /// The groups other nodes lead keep their keys (run it on every node, e.g. with
    /// `redis-cli --cluster call`, to empty the cluster). A node leading no group is a
    /// replica only, and refuses as a Valkey replica does.
    fn flush_led_groups(
        &mut self,
        core: &Rc<Core>,
        cluster: &ClusterNode,
        def: &command::CommandDef,
        cmd_id: u32,
        args: Vec<Bytes>,
    ) {
        let start = self.local.buf.len();
        if !command::server::flush_args_ok(&args) {
            self.local.error(command::SYNTAX_ERROR);
            self.push_local(start);
            return;
        }
        let led: Vec<GroupId> = (0..cluster.group_count() as GroupId)
            .filter(|&g| cluster.leader(g) == Some(cluster.id))
            .collect();
        if led.is_empty() {
            self.local
                .error("READONLY You can't write against a read only replica.");
            self.push_local(start);
            return;
        }
        let map = cluster.layout();
        let parts = led
            .into_iter()
            .map(|g| {
                let slots = map.groups[g as usize].slots.clone();
                let mut op_args = vec![
                    args[0].clone(),
                    Bytes::from(slots.start.to_string()),
                    Bytes::from(slots.end.to_string()),
                ];
                // SYNC or ASYNC, checked above.
                op_args.extend(args.get(1).cloned());
                let op = Op {
                    exec: keyspace::flush_slots,
                    args: op_args,
                    flags: def.flags,
                    cmd_id,
                    db: self.db,
                    user: None,
                    tls: self.tls,
                };
                self.queue_for_group(core, cluster, g, op)
            })
            .collect();
        self.slots.push(Slot::Gathered(Gather::AllOk, parts));
    }

    /// A multi-key command whose keys span cores.
    fn split(
        &mut self,
        core: &Rc<Core>,
        name: &str,
        flags: u32,
        cmd_id: u32,
        kind: Multi,
        args: Vec<Bytes>,
    ) {
        let cores = core.cores();
        let owner = |k: &[u8]| core.owner(key_slot(k) as usize);
        let stats = &core.shared.core_stats[core.id];
        stats.commands[cmd_id as usize].calls.inc();
        stats.commands_processed.inc();
        match kind {
            Multi::MGet => {
                let parts = args[1..]
                    .iter()
                    .map(|k| {
                        self.route(
                            core,
                            owner(k),
                            string::mget_one,
                            vec![args[0].clone(), k.clone()],
                            flags,
                            NO_STATS,
                        )
                    })
                    .collect();
                self.slots.push(Slot::Gathered(Gather::Array, parts));
            }
            Multi::SumInts | Multi::MSet => {
                let step = if kind == Multi::MSet { 2 } else { 1 };
                if !(args.len() - 1).is_multiple_of(step) {
                    let start = self.local.buf.len();
                    command::arity_error(&mut self.local, name);
                    self.push_local(start);
                    return;
                }
                let mut per_core: Vec<Vec<Bytes>> = vec![Vec::new(); cores];
                for chunk in args[1..].chunks(step) {
                    let c = owner(&chunk[0]);
                    if per_core[c].is_empty() {
                        per_core[c].push(args[0].clone());
                    }
                    per_core[c].extend(chunk.iter().cloned());
                }
                let exec: ShardFn = match (kind, name) {
                    (Multi::MSet, _) => string::mset,
                    (_, "exists") => keyspace::exists,
                    (_, "touch") => keyspace::touch,
                    (_, "unlink") => keyspace::unlink,
                    _ => keyspace::del,
                };
                let parts = per_core
                    .into_iter()
                    .enumerate()
                    .filter(|(_, a)| !a.is_empty())
                    .map(|(c, a)| self.route(core, c, exec, a, flags, NO_STATS))
                    .collect();
                let gather = if kind == Multi::MSet {
                    Gather::AllOk
                } else {
                    Gather::SumInts
                };
                self.slots.push(Slot::Gathered(gather, parts));
            }
            Multi::MSetNx | Multi::Move => unreachable!("run on a scratch shard (dispatch)"),
        }
    }

    fn fanout(&mut self, core: &Rc<Core>, kind: Fanout, args: Vec<Bytes>, flags: u32, cmd_id: u32) {
        let cores = core.cores();
        let (exec, gather): (ShardFn, Gather) = match kind {
            Fanout::Keys => (keyspace::keys_local, Gather::ConcatArrays),
            Fanout::DbSize => (keyspace::dbsize_local, Gather::SumInts),
            Fanout::RandomKey => (keyspace::randomkey_local, Gather::AnyNonNil),
            Fanout::CountKeysInSlot => (command::cluster::countkeysinslot_local, Gather::SumInts),
            Fanout::GetKeysInSlot => (command::cluster::getkeysinslot_local, Gather::ConcatArrays),
            Fanout::FlushAll => {
                if !command::server::flush_args_ok(&args) {
                    let start = self.local.buf.len();
                    self.local.error(command::SYNTAX_ERROR);
                    self.push_local(start);
                    return;
                }
                (keyspace::flush_local, Gather::AllOk)
            }
            Fanout::SwapDb => unreachable!("run by dispatch"),
            Fanout::Scan => {
                // One core per call: the one owning the cursor's slot.
                let target = keyspace::parse_cursor(&args[1])
                    .map_or(core.id, |c| core.owner(keyspace::scan_cursor_slot(c)));
                let part = self.route(core, target, keyspace::scan, args, flags, cmd_id);
                self.slots.push(Slot::One(part));
                return;
            }
        };
        let stats = &core.shared.core_stats[core.id];
        stats.commands[cmd_id as usize].calls.inc();
        stats.commands_processed.inc();
        let parts = (0..cores)
            .map(|c| self.route(core, c, exec, args.clone(), flags, NO_STATS))
            .collect();
        self.slots.push(Slot::Gathered(gather, parts));
    }

    /// Takes the reply slot of an EXEC queued inline: its ops' `parts` (see `tx`).
    pub(super) fn push_exec(&mut self, guarded: bool, parts: Vec<Part>) {
        self.slots
            .push(Slot::Gathered(Gather::Exec { guarded }, parts));
    }

    /// Sends every queued batch and waits for all replies.
    pub(super) async fn flush(&mut self, core: &Rc<Core>, resp3: bool) {
        self.flush_batches(core, resp3).await;
        // The guards of the transactions queued inline have run.
        for (id, w) in std::mem::take(&mut self.unwatch_after_flush) {
            super::tx::drop_watch(core, id, w);
        }
    }

    async fn flush_batches(&mut self, core: &Rc<Core>, resp3: bool) {
        if self.pending.iter().all(|q| q.is_empty()) {
            return;
        }
        let gated = self.tx;
        let mut round: Vec<Option<BatchReply>> = (0..self.pending.len()).map(|_| None).collect();
        let sends: Vec<_> = self
            .pending
            .iter_mut()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(c, q)| {
                let ops = std::mem::take(q);
                let core = core.clone();
                async move {
                    let cores = core.cores();
                    let threshold = core.shared.config.runtime.busy_reply_threshold();
                    let reply = if c < cores && core.shared.scripts.busy(c, threshold) {
                        // That core is running a long script: Valkey answers -BUSY.
                        super::core::busy_replies(
                            ops.len(),
                            resp3,
                            core.shared.scripts.busy_error(c),
                        )
                    } else if c < cores {
                        core.send_batch(c, ops, resp3, gated).await
                    } else {
                        let g = (c - cores) as crate::cluster::types::GroupId;
                        routing::run_group(&core, g, ops, resp3).await
                    };
                    (c, reply)
                }
            })
            .collect();
        for (c, reply) in futures::future::join_all(sends).await {
            round[c] = Some(reply);
        }
        self.rounds.push(round);
        // Time passed while waiting: commands after this point must not run at an earlier
        // time than the ones the other cores just ran (a PTTL after a remote PEXPIRE would
        // otherwise read more than the TTL that was set). A script may have paused on this
        // core meanwhile (see `pause`).
        core.gate.wait_open(self.gate_id()).await;
        self.now = core.prepare();
    }

    fn part<'a>(local: &'a [u8], rounds: &'a [Vec<Option<BatchReply>>], p: Part) -> &'a [u8] {
        match p {
            Part::Local(s, e) => &local[s..e],
            Part::Remote { round, core, idx } => match rounds
                .get(round as usize)
                .and_then(|r| r[core as usize].as_ref())
            {
                Some(b) if (idx as usize) < b.ends.len() => b.reply(idx as usize),
                // The other core is gone (shutdown): say so rather than break the stream.
                _ => b"-ERR internal error: core unavailable\r\n",
            },
        }
    }

    /// Writes the replies in request order to `wbuf`, counting error replies (INFO errorstats).
    fn assemble(&mut self, wbuf: &mut Vec<u8>, stats: &CoreStats) {
        if self.rounds.is_empty()
            && self
                .slots
                .iter()
                .all(|s| matches!(s, Slot::One(Part::Local(..))))
        {
            // Everything ran here, in order: the local buffer is the reply stream.
            for slot in &self.slots {
                if let Slot::One(Part::Local(s, e)) = *slot
                    && self.local.buf.get(s) == Some(&b'-')
                {
                    stats.count_error(&self.local.buf[s..e]);
                }
            }
            wbuf.extend_from_slice(&self.local.buf);
            return;
        }
        let resp3 = self.local.resp3;
        for slot in &self.slots {
            let start = wbuf.len();
            match slot {
                Slot::One(p) => {
                    wbuf.extend_from_slice(Self::part(&self.local.buf, &self.rounds, *p))
                }
                Slot::Gathered(g, parts) => {
                    let bufs: Vec<&[u8]> = parts
                        .iter()
                        .map(|p| Self::part(&self.local.buf, &self.rounds, *p))
                        .collect();
                    gather(*g, &bufs, resp3, wbuf);
                }
            }
            if wbuf.get(start) == Some(&b'-') {
                stats.count_error(&wbuf[start..]);
            }
        }
    }
}

/// What a command does while a script paused on its core is past busy-reply-threshold.
enum WhileBusy {
    /// It runs as usual: Valkey serves it (the `allow-busy` flag) and it needs no shard.
    Run,
    /// SCRIPT KILL (`function` false) or FUNCTION KILL.
    Kill { function: bool },
    /// -BUSY.
    Refuse,
}

/// Valkey's rule for `args` during a busy script: AUTH, HELLO, QUIT, FUNCTION STATS and
/// SHUTDOWN NOSAVE run (SHUTDOWN without NOSAVE gets -BUSY; the busy core's last changes are
/// not handed to storage, see `Shared::begin_shutdown`), the KILLs kill, the rest is refused.
fn while_busy(args: &[Bytes], redispatch: bool) -> WhileBusy {
    let name = if redispatch {
        table::lookup(&args[0])
    } else {
        lookup_client(&args[0])
    };
    let Some(mut id) = name else {
        return WhileBusy::Refuse;
    };
    let reg = registry();
    if matches!(reg.def(id).exec, Exec::Container) {
        match args.get(1).and_then(|a| lookup_sub(id, a)) {
            Some(sub) => id = sub,
            None => return WhileBusy::Refuse,
        }
    }
    let def = reg.def(id);
    match reg.full_name(id) {
        "script|kill" => WhileBusy::Kill { function: false },
        "function|kill" => WhileBusy::Kill { function: true },
        "shutdown" if args[1..].iter().any(|a| command::is(a, "nosave")) => WhileBusy::Run,
        "shutdown" => WhileBusy::Refuse,
        _ if def.flags & flags::ALLOW_BUSY != 0 && matches!(def.exec, Exec::Conn(_)) => {
            WhileBusy::Run
        }
        _ => WhileBusy::Refuse,
    }
}

/// A queued command that cannot run marks its transaction: EXEC answers EXECABORT.
fn doom(client: &mut Client) {
    if let Some(m) = client.multi.as_mut() {
        m.failed = true;
    }
}

impl Dispatcher {
    /// Inside MULTI: queues the command (`+QUEUED`), or refuses it and dooms the transaction.
    fn queue_in_multi(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        def: &command::CommandDef,
        args: Vec<Bytes>,
    ) {
        if super::tx::refused_inside_multi(def, core.shared.config.cluster.enabled) {
            self.local
                .error("ERR Command not allowed inside a transaction");
            doom(client);
            return;
        }
        if let Some(cluster) = core.shared.cluster()
            && let Some(routing::Route::Refuse(e)) =
                routing::route(cluster, def, &args, client.readonly, client.info.tls)
        {
            self.local.error(&e);
            doom(client);
            return;
        }
        // Out of memory, Valkey refuses whatever a transaction queues (the queue itself would
        // grow without bound), not only the commands that may grow memory.
        if core.out_of_memory() {
            self.local.error(super::core::OOM);
            doom(client);
            return;
        }
        if let Some(m) = client.multi.as_mut() {
            m.queued.push(args);
        }
        self.local.simple("QUEUED");
    }
}

/// Combines per-core replies into one.
fn gather(g: Gather, parts: &[&[u8]], resp3: bool, w: &mut Vec<u8>) {
    if let Some(err) = parts.iter().find(|p| p.first() == Some(&b'-')) {
        // A part failed (e.g. -OOM on one core): report it, as the command did not fully run.
        if !matches!(g, Gather::Array | Gather::Exec { .. }) {
            w.extend_from_slice(err);
            return;
        }
    }
    let mut out = Out {
        buf: std::mem::take(w),
        resp3,
    };
    match g {
        Gather::Array => {
            out.array(parts.len());
            for p in parts {
                out.raw(p);
            }
        }
        Gather::Exec { guarded } => match parts.split_first() {
            Some((guard, _)) if guarded && *guard == b":0\r\n" => out.nil_array(),
            Some((guard, _)) if guarded && guard.first() == Some(&b'-') => out.raw(guard),
            _ => {
                let replies = &parts[guarded as usize..];
                out.array(replies.len());
                for p in replies {
                    out.raw(p);
                }
            }
        },
        Gather::SumInts => out.int(parts.iter().map(|p| parse_int_reply(p)).sum()),
        Gather::AllOk => out.ok(),
        Gather::ConcatArrays => {
            let mut total = 0;
            let mut bodies = Vec::with_capacity(parts.len());
            for p in parts {
                let (n, body) = split_array_header(p);
                total += n;
                bodies.push(body);
            }
            out.array(total);
            for b in bodies {
                out.raw(b);
            }
        }
        Gather::AnyNonNil => {
            let live: Vec<&&[u8]> = parts
                .iter()
                .filter(|p| p.first() == Some(&b'$') && !p.starts_with(b"$-1"))
                .collect();
            if live.is_empty() {
                out.nil();
            } else {
                out.raw(live[fastrand::usize(..live.len())]);
            }
        }
    }
    *w = out.buf;
}

/// The integer of a `:n\r\n` reply (0 for anything else).
fn parse_int_reply(p: &[u8]) -> i64 {
    p.strip_prefix(b":")
        .and_then(|r| r.strip_suffix(b"\r\n"))
        .and_then(crate::util::parse_i64)
        .unwrap_or(0)
}

/// Splits `*n\r\n<body>` into (n, body).
fn split_array_header(p: &[u8]) -> (usize, &[u8]) {
    let Some(end) = p.windows(2).position(|w| w == b"\r\n") else {
        return (0, &[]);
    };
    let n = std::str::from_utf8(&p[1..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (n, &p[end + 2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers() {
        let mut w = Vec::new();
        gather(Gather::SumInts, &[b":2\r\n", b":3\r\n"], false, &mut w);
        assert_eq!(w, b":5\r\n");
        w.clear();
        gather(
            Gather::ConcatArrays,
            &[b"*1\r\n$1\r\na\r\n", b"*0\r\n", b"*1\r\n$1\r\nb\r\n"],
            false,
            &mut w,
        );
        assert_eq!(w, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        w.clear();
        gather(Gather::AllOk, &[b"+OK\r\n", b"-OOM no\r\n"], false, &mut w);
        assert_eq!(w, b"-OOM no\r\n");
        w.clear();
        gather(Gather::Array, &[b"$1\r\na\r\n", b"$-1\r\n"], false, &mut w);
        assert_eq!(w, b"*2\r\n$1\r\na\r\n$-1\r\n");
        w.clear();
        gather(
            Gather::AnyNonNil,
            &[b"$-1\r\n", b"$1\r\nk\r\n"],
            false,
            &mut w,
        );
        assert_eq!(w, b"$1\r\nk\r\n");
    }
}
