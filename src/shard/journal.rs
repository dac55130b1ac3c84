//! What a shard records while a leader evaluates commands: every record it applied, in wire
//! form (see `mutation`), and each key's state before the first record that changed it, so
//! the changes can be replicated and, if they never commit, undone.
//!
//! The shard only fills the journal in; which proposal the records belong to, when they
//! commit and when they are undone is the engine's business.

use std::collections::HashSet;

use super::entry::Value;
use super::mutation::Mutation;

/// A key's state before a change: its value, absolute expiry and access metadata (None when
/// the key did not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub value: Value,
    pub expire_at: Option<u64>,
    pub access: u32,
}

/// A point in a journal's records ([`Journal::mark`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    records: usize,
    units: usize,
    open: u32,
    db: u32,
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
    /// Each key changed (database, key), with its state before its first change in this
    /// journal, in the order keys were first changed.
    pub images: Vec<(u32, Box<[u8]>, Option<Image>)>,
    seen: HashSet<Box<[u8]>, ahash::RandomState>,
    /// `seen` for databases other than 0.
    seen_in_dbs: HashSet<(u32, Box<[u8]>), ahash::RandomState>,
    /// The database the records so far act on: a unit starts and ends in database 0, and a
    /// record of another database is preceded by a [`Mutation::Select`].
    db: u32,
}

impl Journal {
    /// Whether `key` has its before-image already.
    pub(super) fn has_image(&self, db: u32, key: &[u8]) -> bool {
        match db {
            0 => self.seen.contains(key),
            _ => self.seen_in_dbs.contains(&(db, Box::from(key))),
        }
    }

    pub(super) fn push_image(&mut self, db: u32, key: &[u8], image: Option<Image>) {
        match db {
            0 => self.seen.insert(key.into()),
            _ => self.seen_in_dbs.insert((db, key.into())),
        };
        self.images.push((db, key.into(), image));
    }

    /// The next record acts on database `db`: a [`Mutation::Select`] goes first when the
    /// records so far act on another.
    pub(super) fn enter_db(&mut self, db: u32) {
        if self.db != db {
            Mutation::Select { db }.encode(&mut self.records);
            self.note_record();
            self.db = db;
        }
    }

    pub(super) fn note_record(&mut self) {
        self.open += 1;
    }

    /// Closes the current unit (one command's records); nothing happens if it has none.
    pub fn close_unit(&mut self) {
        if self.open > 0 {
            // Whoever applies the unit is back in database 0 after it.
            self.enter_db(0);
            self.units.push((self.records.len(), self.open));
            self.open = 0;
        }
    }

    /// Where the records stand now, to [`Journal::rewind`] to.
    pub fn mark(&self) -> Mark {
        Mark {
            records: self.records.len(),
            units: self.units.len(),
            open: self.open,
            db: self.db,
        }
    }

    /// Drops every record since `mark` (a script undone whole). Before-images taken since
    /// stay: they are the keys' states before the dropped records, which is what the keys are
    /// put back to.
    pub fn rewind(&mut self, mark: Mark) {
        self.records.truncate(mark.records);
        self.units.truncate(mark.units);
        self.open = mark.open;
        self.db = mark.db;
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
