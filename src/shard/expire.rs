//! The active expiry cycle: keys and hash fields that are never touched again must still go.
//!
//! Valkey samples its expires dictionary incrementally and keeps going while more than 10% of
//! what it sampled had expired, within a CPU budget per tick. We walk our per-slot tables with
//! a cursor instead of random sampling (every volatile key is visited once per lap, so nothing
//! lingers by bad luck) and keep Valkey's adaptive rule: the caller runs steps while the
//! expired fraction stays above 10% and its time budget lasts.
//!
//! Hash fields with a time to live are a second job, as in Valkey 9 (which alternates a KEYS
//! and a FIELDS job): the shard indexes each such hash by (slot, earliest field expiry), so a
//! step jumps from slot to slot looking only at the earliest hash of each, and deletes the
//! expired fields of the hashes that have some — at most [`FIELDS_PER_HASH`] per hash and
//! step, so one hash with a million fields expiring at once is worked off over many steps.
//! Deletions are records ([`Mutation::Expired`], [`Mutation::HExpired`]) like any write, so
//! persistence and replication see them.

use super::{Mutation, Shard};

/// What one step of the cycle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpireStep {
    /// Keys with an expiry that were looked at.
    pub checked: usize,
    /// Of those, how many had expired and were deleted.
    pub expired: usize,
    /// The key cursor wrapped around: every slot was visited since the lap began.
    pub lap_done: bool,
    /// Hashes with field TTLs that were looked at (each slot's earliest, and every hash
    /// that had expired fields).
    pub hashes_checked: usize,
    /// Of those, how many had expired fields deleted.
    pub hashes_expired: usize,
    /// Expired fields deleted.
    pub fields_expired: usize,
}

impl ExpireStep {
    /// Valkey's rule, per job: another step is worth it while more than 10% of what one job
    /// looked at had expired.
    pub fn worth_another(&self) -> bool {
        let busy = |checked: usize, expired: usize| checked > 0 && expired * 10 >= checked;
        busy(self.checked, self.expired) || busy(self.hashes_checked, self.hashes_expired)
    }
}

/// Where the cycle stopped, for each job: the key walk's slot and in-slot cursor, and the
/// slot the field walk resumes at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpireCursor {
    keys: u64,
    fields: u64,
}

/// Expired fields one step deletes from one hash at most (Valkey: 4 × 20 per callback).
pub const FIELDS_PER_HASH: usize = 80;

const SLOT_BITS: u32 = 14;

impl Shard {
    /// Checks up to `max_checked` keys with an expiry and up to `max_checked` hashes with
    /// field TTLs, continuing where the last step stopped, and deletes what expired at `now`.
    pub fn active_expire_step(&mut self, now: u64, max_checked: usize) -> ExpireStep {
        let range = self.owned.clone();
        let mut cursor = self.expire_cursor;
        let step = self.expire_walk(range, &mut cursor, now, max_checked);
        self.expire_cursor = cursor;
        step
    }

    /// [`Shard::active_expire_step`] over `slots` only (of those this shard owns), from and
    /// to `cursor`: a cluster leader expires the keys of the groups it leads, each group
    /// keeping its own cursor (the deletions are journaled and proposed like any write).
    pub fn expire_step_in(
        &mut self,
        slots: std::ops::Range<usize>,
        cursor: &mut ExpireCursor,
        now: u64,
        max_checked: usize,
    ) -> ExpireStep {
        let owned = self.owned.clone();
        let range = slots.start.max(owned.start)..slots.end.min(owned.end);
        self.expire_walk(range, cursor, now, max_checked)
    }

    fn expire_walk(
        &mut self,
        range: std::ops::Range<usize>,
        cursor: &mut ExpireCursor,
        now: u64,
        max_checked: usize,
    ) -> ExpireStep {
        let mut step = self.key_walk(range.clone(), &mut cursor.keys, now, max_checked);
        self.field_walk(range, &mut cursor.fields, now, max_checked, &mut step);
        step
    }

    fn key_walk(
        &mut self,
        range: std::ops::Range<usize>,
        cursor: &mut u64,
        now: u64,
        max_checked: usize,
    ) -> ExpireStep {
        let mut step = ExpireStep::default();
        if self.volatile == 0 || range.is_empty() {
            step.lap_done = true;
            return step;
        }
        let span = range.len();
        let mut slot = (*cursor & ((1 << SLOT_BITS) - 1)) as usize;
        let mut in_slot = *cursor >> SLOT_BITS;
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
        *cursor = (in_slot << SLOT_BITS) | slot as u64;
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

    /// The field job: from the slot `cursor` names, looks at the earliest hash of each slot
    /// in `range` that has one; when its earliest field has expired, deletes up to
    /// [`FIELDS_PER_HASH`] of its expired fields and looks at the slot again. Stops after
    /// `max_checked` looks or one lap.
    fn field_walk(
        &mut self,
        range: std::ops::Range<usize>,
        cursor: &mut u64,
        now: u64,
        max_checked: usize,
        step: &mut ExpireStep,
    ) {
        if self.volatile_hashes.is_empty() || range.is_empty() {
            return;
        }
        let start = match *cursor as usize {
            s if range.contains(&s) => s,
            _ => range.start,
        };
        let mut slot = start;
        let mut wrapped = false;
        while step.hashes_checked < max_checked {
            // The earliest indexed hash at or after `slot` (a range query jumps over slots
            // without volatile hashes).
            let next = self
                .volatile_hashes
                .range((slot as u16, 0, Box::<[u8]>::default())..)
                .next()
                .filter(|(s, _, _)| (*s as usize) < range.end)
                .map(|(s, at, key)| (*s as usize, *at, key.clone()));
            let Some((found, at, key)) = next else {
                // Past the last one in range: wrap once.
                if wrapped || start == range.start {
                    slot = range.start;
                    break;
                }
                wrapped = true;
                slot = range.start;
                continue;
            };
            if wrapped && found >= start {
                slot = found;
                break;
            }
            step.hashes_checked += 1;
            if now <= at {
                // Nothing expired in this slot yet: the next one.
                slot = found + 1;
                continue;
            }
            slot = found;
            let fields = match self.peek_stored(&key).map(|e| e.value()) {
                Some(super::ValueRef::Hash(h)) => h.expired_fields(now, FIELDS_PER_HASH),
                _ => Vec::new(),
            };
            debug_assert!(!fields.is_empty(), "an indexed hash has an expired field");
            if fields.is_empty() {
                slot = found + 1;
                continue;
            }
            let names: Vec<&[u8]> = fields.iter().map(|f| &f[..]).collect();
            self.apply(Mutation::HExpired {
                key: &key,
                fields: &names,
            });
            step.hashes_expired += 1;
            step.fields_expired += fields.len();
        }
        *cursor = slot as u64;
    }
}

#[cfg(test)]
mod tests;
