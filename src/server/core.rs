//! One core: its shard, its links to the other cores, and batch execution.
//!
//! Commands for another core's keys travel as one message per (connection read batch,
//! destination core), never one per command: waking a parked core costs 150+ µs on this VM,
//! a message in a batch ~100 ns. The destination runs the batch without yielding, so the
//! commands of one batch that touch one core are atomic with respect to each other there.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};

use crate::cluster::SLOT_COUNT;
use crate::command::{Ctx, ShardFn, flags};
use crate::config::MaxmemoryPolicy;
use crate::protocol::Out;
use crate::server::state::Shared;
use crate::shard::{AccessMode, EvictPolicy, HashLimits, Shard};

/// One command for a shard: its handler, arguments, flags and registry id (for statistics;
/// `NO_STATS` for the parts of a split command, which are counted once where they were split).
pub struct Op {
    pub exec: ShardFn,
    pub args: Vec<Bytes>,
    pub flags: u32,
    pub cmd_id: u32,
}

pub const NO_STATS: u32 = u32::MAX;

/// The replies of a batch: one buffer, and where each op's reply ends in it.
#[derive(Default)]
pub struct BatchReply {
    pub buf: Vec<u8>,
    pub ends: Vec<u32>,
}

impl BatchReply {
    pub fn reply(&self, idx: usize) -> &[u8] {
        let start = if idx == 0 {
            0
        } else {
            self.ends[idx - 1] as usize
        };
        &self.buf[start..self.ends[idx] as usize]
    }
}

/// Work sent to a core.
pub enum CoreMsg {
    /// Ops to execute in order, replies encoded in RESP2 or RESP3.
    Batch {
        ops: Vec<Op>,
        resp3: bool,
        reply: oneshot::Sender<BatchReply>,
    },
    /// A closure to run against the core (multi-phase cross-core commands such as RENAME).
    Call(Box<dyn FnOnce(&Core) + Send>),
}

pub struct Core {
    pub id: usize,
    pub shard: RefCell<Shard>,
    pub shared: Arc<Shared>,
    senders: Senders<CoreMsg>,
}

/// The slots core `core` of `cores` owns: a contiguous range, so SCAN can walk cores in order.
pub fn owned_slots(core: usize, cores: usize) -> std::ops::Range<usize> {
    (core * SLOT_COUNT / cores)..((core + 1) * SLOT_COUNT / cores)
}

/// The core that owns `slot`.
#[inline]
pub fn slot_owner(slot: usize, cores: usize) -> usize {
    // Inverse of owned_slots: the largest core whose range starts at or before `slot`.
    let c = slot * cores / SLOT_COUNT;
    if c + 1 < cores && owned_slots(c + 1, cores).start <= slot {
        c + 1
    } else {
        c
    }
}

impl Core {
    pub fn new(id: usize, shared: Arc<Shared>, senders: Senders<CoreMsg>) -> Core {
        let stats = shared.shard_stats[id].clone();
        let shard = Shard::new(owned_slots(id, shared.cores), stats);
        Core {
            id,
            shard: RefCell::new(shard),
            shared,
            senders,
        }
    }

    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    /// Copies runtime settings that shards cache (encoding limits, LRU/LFU mode).
    fn sync_settings(&self, shard: &mut Shard) {
        let rt = &self.shared.config.runtime;
        shard.hash_limits = HashLimits {
            max_listpack_entries: rt.hash_max_listpack_entries(),
            max_listpack_value: rt.hash_max_listpack_value(),
        };
        shard.access_mode = if matches!(
            rt.maxmemory_policy(),
            MaxmemoryPolicy::AllKeysLfu | MaxmemoryPolicy::VolatileLfu
        ) {
            AccessMode::Lfu {
                log_factor: rt.lfu_log_factor(),
                decay_minutes: rt.lfu_decay_time(),
            }
        } else {
            AccessMode::Lru
        };
    }

    /// Runs `ops` against this core's shard, appending each reply to `out` and its end offset
    /// to `ends`. Never yields: the batch is atomic on this core.
    pub fn execute(&self, ops: &[Op], out: &mut Out, ends: &mut Vec<u32>) {
        let mut shard = self.shard.borrow_mut();
        self.sync_settings(&mut shard);
        let now = crate::util::now_ms();
        let stats = &self.shared.core_stats[self.id];
        for op in ops {
            let start = out.buf.len();
            let began = Instant::now();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                if op.flags & flags::DENYOOM != 0 && !self.make_room(&mut shard, now) {
                    out.error("OOM command not allowed when used memory > 'maxmemory'.");
                    return false;
                }
                let mut ctx = Ctx {
                    shard: &mut shard,
                    now,
                    out,
                    shared: &self.shared,
                };
                (op.exec)(&mut ctx, &op.args);
                true
            }));
            let ran = match result {
                Ok(ran) => ran,
                Err(_) => {
                    // The panic hook has logged it; the shard stays usable for other commands.
                    out.buf.truncate(start);
                    out.error(
                        "ERR internal error while executing the command (see the server log)",
                    );
                    true
                }
            };
            if op.cmd_id != NO_STATS {
                let s = &stats.commands[op.cmd_id as usize];
                if ran {
                    s.calls.inc();
                    s.usec.add(began.elapsed().as_micros() as u64);
                    if out.buf.get(start) == Some(&b'-') {
                        s.failed_calls.inc();
                    }
                } else {
                    s.rejected_calls.inc();
                }
                stats.commands_processed.inc();
            }
            ends.push(out.buf.len() as u32);
        }
        self.shared.memory.publish(self.id);
    }

    /// Evicts keys until used memory is below maxmemory; false when that is impossible (the
    /// policy is noeviction, or nothing evictable is left on this core).
    fn make_room(&self, shard: &mut Shard, now: u64) -> bool {
        let rt = &self.shared.config.runtime;
        let limit = rt.maxmemory();
        if limit == 0 {
            return true;
        }
        let mem = &self.shared.memory;
        mem.publish(self.id);
        if mem.used() <= limit {
            return true;
        }
        let Some(policy) = evict_policy(rt.maxmemory_policy()) else {
            return false;
        };
        let samples = rt.maxmemory_samples();
        while mem.used() > limit {
            if !shard.evict_one(policy, samples, now) {
                return false;
            }
            mem.publish(self.id);
        }
        true
    }

    /// Sends a batch to another core and waits for its replies.
    pub async fn send_batch(&self, core: usize, ops: Vec<Op>, resp3: bool) -> BatchReply {
        let (tx, rx) = oneshot::channel();
        if self
            .senders
            .send_to(
                core,
                CoreMsg::Batch {
                    ops,
                    resp3,
                    reply: tx,
                },
            )
            .await
            .is_err()
        {
            return BatchReply::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Runs `f` on core `core` (here if it is this core) and returns its result.
    pub async fn call<T: Send + 'static>(
        self: &Rc<Self>,
        core: usize,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Option<T> {
        if core == self.id {
            return Some(f(self));
        }
        let (tx, rx) = oneshot::channel();
        let msg = CoreMsg::Call(Box::new(move |c: &Core| {
            let _ = tx.send(f(c));
        }));
        if self.senders.send_to(core, msg).await.is_err() {
            return None;
        }
        rx.await.ok()
    }

    /// Serves messages from the other cores until they hang up.
    pub fn spawn_receivers(self: &Rc<Self>, mut receivers: Receivers<CoreMsg>) {
        for (_peer, mut stream) in receivers.streams() {
            let core = self.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = stream.next().await {
                    match msg {
                        CoreMsg::Batch { ops, resp3, reply } => {
                            let mut out = Out::new(resp3);
                            let mut ends = Vec::with_capacity(ops.len());
                            core.execute(&ops, &mut out, &mut ends);
                            let _ = reply.send(BatchReply { buf: out.buf, ends });
                        }
                        CoreMsg::Call(f) => {
                            if std::panic::catch_unwind(AssertUnwindSafe(|| f(&core))).is_err() {
                                tracing::error!(
                                    "a cross-core call panicked; its caller gets no reply"
                                );
                            }
                        }
                    }
                }
            })
            .detach();
        }
    }
}

/// The shard's eviction policy for a maxmemory-policy (None for noeviction).
pub fn evict_policy(p: MaxmemoryPolicy) -> Option<EvictPolicy> {
    Some(match p {
        MaxmemoryPolicy::NoEviction => return None,
        MaxmemoryPolicy::AllKeysLru => EvictPolicy::AllKeysLru,
        MaxmemoryPolicy::VolatileLru => EvictPolicy::VolatileLru,
        MaxmemoryPolicy::AllKeysLfu => EvictPolicy::AllKeysLfu,
        MaxmemoryPolicy::VolatileLfu => EvictPolicy::VolatileLfu,
        MaxmemoryPolicy::AllKeysRandom => EvictPolicy::AllKeysRandom,
        MaxmemoryPolicy::VolatileRandom => EvictPolicy::VolatileRandom,
        MaxmemoryPolicy::VolatileTtl => EvictPolicy::VolatileTtl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ownership_is_a_partition() {
        for cores in 1..=7 {
            let mut next = 0;
            for c in 0..cores {
                let r = owned_slots(c, cores);
                assert_eq!(r.start, next);
                next = r.end;
                for s in [r.start, r.end - 1] {
                    assert_eq!(slot_owner(s, cores), c, "slot {s} cores {cores}");
                }
            }
            assert_eq!(next, SLOT_COUNT);
        }
    }
}
