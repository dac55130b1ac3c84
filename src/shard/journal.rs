//! What a shard records while a leader evaluates commands: every record it applied, in wire
//! form (see `mutation`), and each key's state before the first record that changed it, so
//! the changes can be replicated and, if they never commit, undone.
//!
//! The shard only fills the journal in; which proposal the records belong to, when they
//! commit and when they are undone is the engine's business.

use std::collections::HashSet;

use super::entry::Value;

/// A key's state before a change: its value, absolute expiry and access metadata (None when
/// the key did not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub value: Value,
    pub expire_at: Option<u64>,
    pub access: u32,
}

/// Records and before-images of one evaluation (one batch of commands for one slot group).
#[derive(Default)]
pub struct Journal {
    /// The records applied, encoded back to back.
    pub records: Vec<u8>,
    /// Where each closed unit (one command's records, applied atomically) ends in
    /// `records`, and how many records it holds.
    pub units: Vec<(usize, u32)>,
    /// Records since the last closed unit.
    open: u32,
    /// Each key changed, with its state before its first change in this journal, in the
    /// order keys were first changed.
    pub images: Vec<(Box<[u8]>, Option<Image>)>,
    seen: HashSet<Box<[u8]>, ahash::RandomState>,
}

impl Journal {
    /// Whether `key` has its before-image already.
    pub(super) fn has_image(&self, key: &[u8]) -> bool {
        self.seen.contains(key)
    }

    pub(super) fn push_image(&mut self, key: &[u8], image: Option<Image>) {
        self.seen.insert(key.into());
        self.images.push((key.into(), image));
    }

    pub(super) fn note_record(&mut self) {
        self.open += 1;
    }

    /// Closes the current unit (one command's records); nothing happens if it has none.
    pub fn close_unit(&mut self) {
        if self.open > 0 {
            self.units.push((self.records.len(), self.open));
            self.open = 0;
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The number of records in closed units.
    pub fn record_count(&self) -> u32 {
        self.units.iter().map(|u| u.1).sum()
    }
}
