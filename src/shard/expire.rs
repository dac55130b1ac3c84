//! The active expiry cycle: keys that are never touched again must still go.
//!
//! Valkey samples its expires dictionary incrementally and keeps going while more than 10% of
//! what it sampled had expired, within a CPU budget per tick. We walk our per-slot tables with
//! a cursor instead of random sampling (every volatile key is visited once per lap, so nothing
//! lingers by bad luck) and keep Valkey's adaptive rule: the caller runs steps while the
//! expired fraction stays above 10% and its time budget lasts.

use super::{Mutation, Shard};

/// What one step of the cycle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpireStep {
    /// Keys with an expiry that were looked at.
    pub checked: usize,
    /// Of those, how many had expired and were deleted.
    pub expired: usize,
    /// The cursor wrapped around: every slot was visited since the lap began.
    pub lap_done: bool,
}

const SLOT_BITS: u32 = 14;

impl Shard {
    /// Checks up to `max_checked` keys with an expiry, continuing where the last step stopped,
    /// and deletes those expired at `now`.
    pub fn active_expire_step(&mut self, now: u64, max_checked: usize) -> ExpireStep {
        let range = self.owned.clone();
        self.expire_walk_in(range, now, max_checked)
    }

    /// [`Shard::active_expire_step`] over `slots` only (of those this shard owns), from and
    /// to `cursor`: a cluster leader expires the keys of the groups it leads, each group
    /// keeping its own cursor (the deletions are journaled and proposed like any write).
    pub fn expire_step_in(
        &mut self,
        slots: std::ops::Range<usize>,
        cursor: &mut u64,
        now: u64,
        max_checked: usize,
    ) -> ExpireStep {
        let owned = self.owned.clone();
        let range = slots.start.max(owned.start)..slots.end.min(owned.end);
        let saved = self.expire_cursor;
        self.expire_cursor = *cursor;
        let step = self.expire_walk_in(range, now, max_checked);
        *cursor = self.expire_cursor;
        self.expire_cursor = saved;
        step
    }

    fn expire_walk_in(
        &mut self,
        range: std::ops::Range<usize>,
        now: u64,
        max_checked: usize,
    ) -> ExpireStep {
        let mut step = ExpireStep::default();
        if self.volatile == 0 || range.is_empty() {
            step.lap_done = true;
            return step;
        }
        let span = range.len();
        let mut slot = (self.expire_cursor & ((1 << SLOT_BITS) - 1)) as usize;
        let mut in_slot = self.expire_cursor >> SLOT_BITS;
        if !range.contains(&slot) {
            slot = range.start;
            in_slot = 0;
        }
        let mut slots_visited = 0;
        while step.checked < max_checked && slots_visited <= span {
            if self.slots[slot].volatile > 0 {
                let (next, checked, expired) =
                    self.expire_in_slot(slot, in_slot, max_checked - step.checked, now);
                step.checked += checked;
                step.expired += expired;
                if next != 0 {
                    in_slot = next;
                    break;
                }
            }
            in_slot = 0;
            slot += 1;
            slots_visited += 1;
            if slot >= range.end {
                slot = range.start;
                step.lap_done = true;
            }
        }
        self.expire_cursor = (in_slot << SLOT_BITS) | slot as u64;
        step
    }

    /// Walks one slot's table from `cursor`; returns (next cursor or 0, checked, expired).
    /// Expired keys are deleted.
    fn expire_in_slot(
        &mut self,
        slot: usize,
        cursor: u64,
        budget: usize,
        now: u64,
    ) -> (u64, usize, usize) {
        let mut doomed: Vec<Box<[u8]>> = Vec::new();
        let mut checked = 0;
        let s = &self.slots[slot];
        let next = super::scan::scan_table_at(&s.table, s.epoch, cursor, budget, |e| {
            if let Some(at) = e.expire_at() {
                checked += 1;
                if now > at {
                    doomed.push(e.key().into());
                }
            }
        });
        let expired = doomed.len();
        for key in &doomed {
            self.apply(Mutation::Expired { key });
        }
        (next, checked, expired)
    }
}
