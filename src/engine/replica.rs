//! The data path's side of Raft replication: applying committed slot-group entries on the
//! cores that own the group's slots, and the per-core applied marks that make re-applying
//! after a crash exact (see `cluster::sm`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;

use super::core::{Core, CoreMsg, Op, evict_policy, owned_slots};
use crate::cluster::key_slot;
use crate::cluster::node::Evictor;
use crate::cluster::sm::{ApplyItem, Cores};
use crate::cluster::types::{GroupId, LogId, Membership, Request, Response};
use crate::command::table::{lookup, lookup_sub, registry};
use crate::command::{Exec, Fanout, flags};
use crate::protocol::Out;
use crate::shard::Mutation;
use crate::storage::{Batch, Item, KeyValues, Storage, codec};

/// Storage keys of the state machine (tags >= 0x10 of the `raft` keyspace).
const TAG_APPLIED: u8 = 0x10;
const TAG_MEMBERSHIP: u8 = 0x11;
/// The pseudo-group holding node-wide state machine facts (the core count).
const NODE_WIDE: u16 = u16::MAX;

fn applied_key(group: GroupId, core: usize) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(TAG_APPLIED);
    k.push(core as u8);
    k
}

fn membership_key(group: GroupId) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(TAG_MEMBERSHIP);
    k
}

fn cores_key() -> Vec<u8> {
    let mut k = NODE_WIDE.to_be_bytes().to_vec();
    k.push(TAG_APPLIED);
    k
}

/// What each core has applied, per group (loaded lazily from storage).
#[derive(Default)]
pub struct Marks {
    applied: HashMap<GroupId, Option<LogId>>,
    /// Marks changed since the last flush to storage.
    dirty: Vec<GroupId>,
}

impl Marks {
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// The cores, as the Raft state machines see them.
pub struct CoreLink {
    inboxes: Vec<mpsc::UnboundedSender<CoreMsg>>,
    storage: Arc<Storage>,
}

impl CoreLink {
    /// Checks the core count the stored marks were written with: marks are per core, so a
    /// node cannot change `threads` under its Raft state.
    pub fn new(
        inboxes: Vec<mpsc::UnboundedSender<CoreMsg>>,
        storage: Arc<Storage>,
    ) -> Result<CoreLink, String> {
        let cores = inboxes.len() as u32;
        let stored = storage.raft_get(&cores_key())?;
        let link = CoreLink { inboxes, storage };
        match stored {
            Some(v) if v.as_slice() != cores.to_le_bytes() => {
                let was = v.try_into().map(u32::from_le_bytes).unwrap_or(0);
                return Err(format!(
                    "this cluster node's data in {} was written with threads {was}, not {cores}: \
                     start it with threads {was}, or empty its dir to have it catch up from the \
                     other nodes",
                    link.storage.dir().display()
                ));
            }
            Some(_) => {}
            None => link.write_raft_item(cores_key(), cores.to_le_bytes().to_vec()),
        }
        Ok(link)
    }

    fn cores_of(&self, slots: &Range<usize>) -> Vec<usize> {
        let n = self.inboxes.len();
        (0..n)
            .filter(|&c| {
                let r = owned_slots(c, n);
                r.start < slots.end && slots.start < r.end
            })
            .collect()
    }
}

impl CoreLink {
    /// Runs `f` on every core owning part of `slots` (through their inboxes) and resolves
    /// with each core's result; `what` names the work in the error if a core stops.
    fn on_cores<T: Send + 'static>(
        &self,
        slots: &Range<usize>,
        what: &'static str,
        f: impl Fn(&Core) -> T + Send + Sync + 'static,
    ) -> BoxFuture<'static, Result<Vec<T>, String>> {
        let f = Arc::new(f);
        let mut waits = Vec::new();
        for c in self.cores_of(slots) {
            let (tx, rx) = oneshot::channel();
            let f = f.clone();
            let msg = CoreMsg::Call(Box::new(move |core: &Core| {
                let _ = tx.send(f(core));
            }));
            if self.inboxes[c].unbounded_send(msg).is_err() {
                return Box::pin(async { Err("the cores are stopping".to_string()) });
            }
            waits.push(rx);
        }
        Box::pin(async move {
            let mut results = Vec::with_capacity(waits.len());
            for rx in waits {
                results.push(
                    rx.await
                        .map_err(|_| format!("a core stopped while {what}"))?,
                );
            }
            Ok(results)
        })
    }

    /// Writes one key of the `raft` keyspace through the storage queue.
    fn write_raft_item(&self, key: Vec<u8>, value: Vec<u8>) {
        self.storage.write(Batch {
            wipe: None,
            items: Vec::new(),
            raft: vec![Item {
                key,
                value: Some(value),
            }],
            done: None,
        });
    }
}

impl Cores for CoreLink {
    fn apply(
        &self,
        group: GroupId,
        slots: Range<usize>,
        items: Vec<ApplyItem>,
        last: LogId,
    ) -> BoxFuture<'static, Result<Vec<Response>, String>> {
        let items = Arc::new(items);
        let on_core = items.clone();
        let range = slots.clone();
        let parts = self.on_cores(&range, "applying", move |core| {
            apply_on_core(core, group, &slots, &on_core, last)
        });
        Box::pin(async move {
            let mut responses: Vec<Response> = items
                .iter()
                .map(|it| Response {
                    replies: match &*it.request {
                        Request::Commands { cmds, .. } => vec![Bytes::new(); cmds.len()],
                        Request::Expired { .. } | Request::Evict { .. } | Request::Map(_) => {
                            Vec::new()
                        }
                    },
                })
                .collect();
            for (i, j, reply) in parts.await?.into_iter().flatten() {
                responses[i as usize].replies[j as usize] = reply;
            }
            Ok(responses)
        })
    }

    fn applied(&self, group: GroupId, slots: Range<usize>) -> Result<Option<LogId>, String> {
        let mut min: Option<LogId> = None;
        for c in self.cores_of(&slots) {
            let Some(v) = self.storage.raft_get(&applied_key(group, c))? else {
                return Ok(None);
            };
            let mark: Option<LogId> = bincode::deserialize(&v)
                .map_err(|e| format!("slot group {group}: bad applied mark: {e}"))?;
            let Some(mark) = mark else { return Ok(None) };
            if min.is_none_or(|m| mark.index < m.index) {
                min = Some(mark);
            }
        }
        Ok(min)
    }

    fn membership(&self, group: GroupId) -> Result<Option<Membership>, String> {
        self.storage
            .raft_get(&membership_key(group))?
            .map(|v| {
                bincode::deserialize(&v)
                    .map_err(|e| format!("slot group {group}: bad stored membership: {e}"))
            })
            .transpose()
    }

    fn flush(&self, slots: Range<usize>) -> BoxFuture<'static, Result<(), String>> {
        let done = self.on_cores(&slots, "flushing", Core::flush_changes);
        Box::pin(async move { done.await.map(drop) })
    }

    fn install(
        &self,
        group: GroupId,
        slots: Range<usize>,
        records: KeyValues,
        last: Option<LogId>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let range = slots.clone();
        let done = self.on_cores(&range, "installing a snapshot", move |core| {
            install_on_core(core, group, slots.clone(), &records, last)
        });
        Box::pin(async move { done.await?.into_iter().collect() })
    }

    fn install_begin(
        &self,
        group: GroupId,
        slots: Range<usize>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let range = slots.clone();
        let done = self.on_cores(&range, "installing a snapshot", move |core| {
            install_begin_on_core(core, group, slots.clone())
        });
        Box::pin(async move { done.await.map(drop) })
    }

    fn install_records(
        &self,
        _group: GroupId,
        slots: Range<usize>,
        records: KeyValues,
    ) -> BoxFuture<'static, Result<(), String>> {
        let range = slots.clone();
        let done = self.on_cores(&range, "installing a snapshot", move |core| {
            install_records_on_core(core, slots.clone(), &records)
        });
        Box::pin(async move { done.await?.into_iter().collect() })
    }

    fn install_finish(
        &self,
        group: GroupId,
        slots: Range<usize>,
        last: Option<LogId>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let done = self.on_cores(&slots, "installing a snapshot", move |core| {
            install_finish_on_core(core, group, last)
        });
        Box::pin(async move { done.await.map(drop) })
    }

    fn save_membership(&self, group: GroupId, m: &Membership) -> Result<(), String> {
        let value = bincode::serialize(m).map_err(|e| e.to_string())?;
        self.write_raft_item(membership_key(group), value);
        Ok(())
    }
}

/// Applies the entries of `items` whose keys this core owns and that it has not applied
/// yet; returns (item, command, reply) for each command it ran. `slots`: the group's.
fn apply_on_core(
    core: &Core,
    group: GroupId,
    slots: &Range<usize>,
    items: &[ApplyItem],
    last: LogId,
) -> Vec<(u32, u32, Bytes)> {
    let done_upto = core.applied_mark(group).map(|l| l.index);
    let owned = core.shard.borrow().owned_slots();
    let reg = registry();
    let mut replies = Vec::new();
    let mut ends = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if done_upto.is_some_and(|d| item.index <= d) {
            continue;
        }
        match &*item.request {
            Request::Commands { now, resp3, cmds } => {
                {
                    // New keys' LRU/LFU stamps come from the shard's clock: the entry's
                    // time, not whenever this core last served a client directly (a stale
                    // clock made keys written through the log look idle to eviction).
                    let mut shard = core.shard.borrow_mut();
                    core.sync_settings(&mut shard);
                    shard.clock_ms = *now;
                }
                for (j, args) in cmds.iter().enumerate() {
                    let (op, slot) = match resolve(reg, args) {
                        Some(Replicated::Keyed(op, slot)) => (op, slot),
                        Some(Replicated::Flush) => {
                            // FLUSHALL/FLUSHDB through a group's log: the group's keys here.
                            delete_slots_on_core(core, slots);
                            let mut out = Out::new(*resp3);
                            out.ok();
                            replies.push((i as u32, j as u32, Bytes::from(out.buf)));
                            continue;
                        }
                        None => {
                            let mut out = Out::new(*resp3);
                            out.error("ERR command cannot be replicated");
                            replies.push((i as u32, j as u32, Bytes::from(out.buf)));
                            continue;
                        }
                    };
                    if !owned.contains(&slot) {
                        continue;
                    }
                    let mut out = Out::new(*resp3);
                    ends.clear();
                    core.shard.borrow_mut().expire_deletes = true;
                    core.execute(std::slice::from_ref(&op), *now, &mut out, &mut ends);
                    core.shard.borrow_mut().expire_deletes = false;
                    replies.push((i as u32, j as u32, Bytes::from(out.buf)));
                }
            }
            // Only the meta group carries maps, and it does not apply through the cores.
            Request::Map(_) => {}
            Request::Expired { now, keys } => {
                let mut shard = core.shard.borrow_mut();
                shard.expire_deletes = true;
                for key in keys {
                    if owned.contains(&(key_slot(key) as usize)) {
                        // A lookup at the entry's time deletes the key if it is still expired.
                        let _ = shard.get(key, *now);
                    }
                }
                shard.expire_deletes = false;
            }
            Request::Evict { keys } => {
                let mut shard = core.shard.borrow_mut();
                let mut evicted = false;
                for key in keys {
                    if owned.contains(&(key_slot(key) as usize)) {
                        evicted |= shard.evict_decided(key);
                    }
                }
                if evicted {
                    crate::metrics::memory::flush_thread_cache();
                }
            }
        }
    }
    core.set_applied_mark(group, Some(last));
    core.finish();
    replies
}

/// Replaces this core's keys of `slots` with the snapshot's `records`, in one step: the
/// deletions, the records and the new mark reach storage in one batch.
fn install_on_core(
    core: &Core,
    group: GroupId,
    slots: Range<usize>,
    records: &[(Vec<u8>, Vec<u8>)],
    last: Option<LogId>,
) -> Result<(), String> {
    delete_slots_on_core(core, &slots);
    let restored = restore_on_core(core, &slots, records);
    // None (the node stops replicating the group): the log restarts from scratch if the
    // group comes back here, so no entry may be skipped as already applied.
    core.set_applied_mark(group, last);
    core.finish();
    restored
}

/// What a command in a group's log does on a replica.
enum Replicated {
    /// A keyed command: its shard function, and its key's slot.
    Keyed(Op, usize),
    /// FLUSHALL/FLUSHDB: deletes the whole group's keys.
    Flush,
}

/// What a replicated command is (None: neither keyed nor FLUSHALL, not replicable).
fn resolve(reg: &crate::command::table::Registry, args: &[Bytes]) -> Option<Replicated> {
    let mut id = lookup(args.first()?)?;
    let mut def = reg.def(id);
    if matches!(def.exec, Exec::Container) {
        id = lookup_sub(id, args.get(1)?)?;
        def = reg.def(id);
    }
    let exec = match def.exec {
        Exec::Shard(f) | Exec::Multi(f, _) => f,
        Exec::Fanout(Fanout::FlushAll) => return Some(Replicated::Flush),
        _ => return None,
    };
    let slot = key_slot(&args[def.keys.positions(args.len()).next()?]) as usize;
    Some(Replicated::Keyed(
        Op {
            exec,
            args: args.to_vec(),
            // The leader checked memory before proposing; replicas never refuse or evict.
            flags: def.flags & !flags::DENYOOM,
            cmd_id: id as u32,
        },
        slot,
    ))
}

impl Core {
    /// This core's applied mark for `group` (read from storage the first time).
    pub fn applied_mark(&self, group: GroupId) -> Option<LogId> {
        let mut marks = self.marks.borrow_mut();
        if let Some(m) = marks.applied.get(&group) {
            return *m;
        }
        let stored = self
            .shared
            .storage()
            .and_then(|s| s.raft_get(&applied_key(group, self.id)).ok().flatten())
            .and_then(|v| bincode::deserialize::<Option<LogId>>(&v).ok())
            .flatten();
        marks.applied.insert(group, stored);
        stored
    }

    fn set_applied_mark(&self, group: GroupId, last: Option<LogId>) {
        let mut marks = self.marks.borrow_mut();
        marks.applied.insert(group, last);
        if !marks.dirty.contains(&group) {
            marks.dirty.push(group);
        }
    }

    /// The marks changed since the last call, as storage items (written in the same batch as
    /// the data they describe).
    pub fn take_mark_items(&self) -> Vec<Item> {
        let mut marks = self.marks.borrow_mut();
        let dirty = std::mem::take(&mut marks.dirty);
        dirty
            .into_iter()
            .map(|g| Item {
                key: applied_key(g, self.id),
                value: Some(bincode::serialize(&marks.applied[&g]).expect("a log id serializes")),
            })
            .collect()
    }
}

/// Keys expired per active-expiry tick a leader proposes at most (per core).
const EXPIRE_SAMPLE: usize = 200;

/// The leader's active expiry: finds expired keys of the groups this node leads and proposes
/// their deletion (replicas delete them when the entry applies, at the entry's time).
pub fn propose_expired(core: &Core, cluster: &crate::cluster::node::ClusterNode) {
    let now = crate::util::now_ms();
    let mut found = Vec::new();
    core.shard
        .borrow_mut()
        .expired_keys_step(now, EXPIRE_SAMPLE, &mut found);
    if found.is_empty() {
        return;
    }
    let mut per_group: HashMap<GroupId, Vec<Bytes>> = HashMap::new();
    for key in found {
        let g = cluster.group_of(key_slot(&key) as usize);
        if cluster.leader(g) == Some(cluster.id) {
            per_group
                .entry(g)
                .or_default()
                .push(Bytes::from(key.into_vec()));
        }
    }
    for (g, keys) in per_group {
        // Fire and forget: a lost proposal is found again on a later lap.
        drop(cluster.propose(g, Request::Expired { now, keys }));
    }
}

/// Keys one eviction proposal carries at most.
const EVICT_BATCH: usize = 512;

/// The leader's side of eviction (cluster mode): asks the cores owning parts of group `g`'s
/// `slots` to evict about `bytes` of its keys, each in proportion to its part (see
/// [`ClusterNode::request_evictions`] for who asks).
pub fn evictor(inboxes: Vec<mpsc::UnboundedSender<CoreMsg>>) -> Evictor {
    Box::new(move |g, slots, bytes| {
        let n = inboxes.len();
        let width = slots.len().max(1) as u64;
        for (c, inbox) in inboxes.iter().enumerate() {
            let r = owned_slots(c, n);
            let part = r
                .end
                .min(slots.end)
                .saturating_sub(r.start.max(slots.start)) as u64;
            if part == 0 {
                continue;
            }
            let share = bytes * part / width + 1;
            let _ = inbox.unbounded_send(CoreMsg::Call(Box::new(move |core: &Core| {
                propose_evictions(core, g, share)
            })));
        }
    })
}

/// As group `g`'s leader: picks about `bytes` of this core's keys of the group by the
/// maxmemory-policy and proposes their deletion through the group's log, so every replica
/// evicts the same keys and none decides on its own. One proposal per group and core at a
/// time (a request meanwhile is dropped: the node over the limit asks again).
fn propose_evictions(core: &Core, g: GroupId, bytes: u64) {
    let Some(cluster) = core.shared.cluster() else {
        return;
    };
    let rt = &core.shared.config.runtime;
    let Some(policy) = evict_policy(rt.maxmemory_policy()) else {
        return;
    };
    if cluster.leader(g) != Some(cluster.id) || core.evicting.borrow().contains(&g) {
        return;
    }
    let in_group = |k: &[u8]| cluster.group_of(key_slot(k) as usize) == g;
    let victims = {
        let mut shard = core.shard.borrow_mut();
        core.sync_settings(&mut shard);
        let now = crate::util::now_ms();
        shard.pick_victims(
            policy,
            rt.maxmemory_samples(),
            now,
            &in_group,
            bytes,
            EVICT_BATCH,
        )
    };
    if victims.is_empty() {
        return;
    }
    let keys = victims.into_iter().map(Bytes::from).collect();
    let proposal = cluster.propose(g, Request::Evict { keys });
    let Some(me) = core.me.upgrade() else {
        return;
    };
    core.evicting.borrow_mut().insert(g);
    glommio::spawn_local(async move {
        // A refused or lost proposal evicted nothing: a later request picks again.
        let _ = proposal.await;
        me.evicting.borrow_mut().remove(&g);
    })
    .detach();
}

/// (used, limit) when this node's memory is over `maxmemory` (set).
fn over_limit(core: &Core) -> Option<(u64, u64)> {
    let limit = core.shared.config.runtime.maxmemory();
    if limit == 0 {
        return None;
    }
    let mem = &core.shared.memory;
    mem.publish(core.id);
    let used = mem.used_for_eviction();
    (used > limit).then_some((used, limit))
}

/// This node over maxmemory with an evicting policy: asks the leaders of its groups to
/// evict (called each memory sample, and when a write finds memory over the limit).
pub fn evict_pressure(core: &Core) {
    let Some(cluster) = core.shared.cluster() else {
        return;
    };
    if evict_policy(core.shared.config.runtime.maxmemory_policy()).is_none() {
        return;
    }
    if let Some((used, limit)) = over_limit(core) {
        cluster.request_evictions(used - limit);
    }
}

/// Whether writes that may grow memory (DENYOOM) are refused now, as this node's leader
/// checks before proposing them: over maxmemory with noeviction, or over it by more than an
/// eighth with an evicting policy (the evictions, which go through the log, have not kept
/// up). Over the limit with an evicting policy also asks the leaders to evict.
pub fn refuse_growth(core: &Core) -> bool {
    let Some((used, limit)) = over_limit(core) else {
        return false;
    };
    if evict_policy(core.shared.config.runtime.maxmemory_policy()).is_none() {
        return true;
    }
    evict_pressure(core);
    used > limit + limit / 8
}

/// Deletes every key of `slots` this core owns (expired or not).
fn delete_slots_on_core(core: &Core, slots: &Range<usize>) {
    let mut shard = core.shard.borrow_mut();
    let owned = shard.owned_slots();
    let mine = slots.start.max(owned.start)..slots.end.min(owned.end);
    let mut old: Vec<Vec<u8>> = Vec::new();
    for slot in mine {
        // Time 0: every key, expired or not.
        shard.for_each_in_slot(slot, 0, |e| old.push(e.key().to_vec()));
    }
    for key in &old {
        shard.apply(Mutation::Del { key });
    }
}

/// Adds the `records` (stored key, stored value) of `slots` this core owns.
fn restore_on_core(
    core: &Core,
    slots: &Range<usize>,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), String> {
    let mut shard = core.shard.borrow_mut();
    let owned = shard.owned_slots();
    let mine = slots.start.max(owned.start)..slots.end.min(owned.end);
    let limits = shard.hash_limits;
    for (k, v) in records {
        let (slot, key) = codec::decode_key(k)?;
        if !mine.contains(&(slot as usize)) {
            continue;
        }
        let (value, expire_at) = codec::decode_value(v, limits)?;
        shard.apply(Mutation::Restore {
            key,
            value,
            expire_at,
        });
    }
    Ok(())
}

/// A streamed install's first step on this core: deletes its keys of `slots` and clears its
/// applied mark for `group`, handed to storage now in one batch, so no later step's writes
/// can reach the disk before them, and a crash keeps the old keys and mark or neither.
fn install_begin_on_core(core: &Core, group: GroupId, slots: Range<usize>) {
    delete_slots_on_core(core, &slots);
    core.set_applied_mark(group, None);
    core.flush_changes();
    core.finish();
}

/// A streamed install's batch on this core, handed to storage now (so the installer sees
/// the writer's backlog and waits for it).
fn install_records_on_core(
    core: &Core,
    slots: Range<usize>,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), String> {
    let restored = restore_on_core(core, &slots, records);
    core.flush_changes();
    core.finish();
    restored
}

/// A streamed install's last step on this core: its applied mark for `group`, handed to
/// storage after every record.
fn install_finish_on_core(core: &Core, group: GroupId, last: Option<LogId>) {
    core.set_applied_mark(group, last);
    core.flush_changes();
    core.finish();
}
