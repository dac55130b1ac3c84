//! Encryption at rest in the data dir: the records that say which keys sealed it, the start
//! checks built on them, and the background rotation that moves every stored value to the
//! active key.
//!
//! The `meta` keyspace (plaintext, like every key) holds:
//!
//! ```text
//! at-rest-key:<id>     a key the dir's values may be sealed under; the value is a canary
//!                      ("tallykv" sealed under that key), so a key file holding another key
//!                      under the same id fails the start at once instead of at some value
//! at-rest-plaintext    present while values written before encryption was on may remain
//! ```
//!
//! A start without a key file fails when any `at-rest-key:` record exists; a start with one
//! fails when the file lacks a recorded key or the canary does not open. New records are
//! written, and synced, before anything is sealed under their key.
//!
//! Rotation (a key file with a new active key, at start or by CONFIG SET) runs on one thread:
//! it reads every stored value through a point-in-time view and hands those not under the
//! active key to the writer ([`super::WriteMsg::Reseal`]), which re-seals each one only if it
//! is still the value that was read. Then the SAVE copy is re-sealed, and once every other
//! part of the node's disk state (each core's Raft log, the slot-group snapshot files) has
//! reported the generation done, the records of the old keys are dropped: the key file may
//! then lose them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use fjall::{Database, Keyspace, PersistMode, Readable};

use super::at_rest::{self, AtRest, OpenError};
use super::{Space, Storage, WriteMsg, db_err};

const KEY_PREFIX: &str = "at-rest-key:";
const PLAINTEXT: &str = "at-rest-plaintext";
const CANARY_AAD: &[u8] = b"tallykv at-rest canary";
const CANARY: &[u8] = b"tallykv";
/// The rotation parts this module finishes itself.
pub const VALUES_PART: &str = "values";
pub const SAVE_COPY_PART: &str = "save-copy";
/// Values handed to the writer per rotation step: small enough that client writes queued
/// behind one wait little.
const STEP: usize = 512;

/// The `at-rest-key:` records of a database: (key id, canary).
pub(super) fn key_records(meta: &Keyspace, path: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    meta.prefix(KEY_PREFIX)
        .map(|g| {
            let (k, v) = g.into_inner().map_err(|e| db_err(path, e))?;
            let id = String::from_utf8_lossy(&k[KEY_PREFIX.len()..]).into_owned();
            Ok((id, v.to_vec()))
        })
        .collect()
}

pub(super) fn plaintext_marked(meta: &Keyspace, path: &Path) -> Result<bool, String> {
    meta.contains_key(PLAINTEXT).map_err(|e| db_err(path, e))
}

/// Writes what a copy of the data dir (SAVE) needs to open like the original: a record per
/// key its values are sealed under (with the original's canary when it has one) and the
/// plaintext marker when it holds plaintext values.
pub(super) fn write_records(
    out: &Database,
    path: &Path,
    ids: &BTreeSet<String>,
    plaintext: bool,
    canaries: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let meta = out
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .map_err(|e| db_err(path, e))?;
    let mut b = out.batch();
    for id in ids {
        let canary = canaries
            .iter()
            .find(|(i, _)| i == id)
            .map_or(&[][..], |(_, c)| c);
        b.insert(&meta, format!("{KEY_PREFIX}{id}"), canary);
    }
    if plaintext {
        b.insert(&meta, PLAINTEXT, []);
    }
    b.commit().map_err(|e| db_err(path, e))
}

/// Checks the dir's at-rest records against the key file (see the module doc); for a dir
/// that turns encryption on, records the active key, and marks plaintext when values exist.
/// Returns whether plaintext values may remain.
pub(super) fn check_keys<'a>(
    db: &Database,
    meta: &Keyspace,
    mut keyspaces: impl Iterator<Item = &'a Keyspace>,
    at_rest: Option<&AtRest>,
    path: &Path,
) -> Result<bool, String> {
    let records = key_records(meta, path)?;
    let plaintext = plaintext_marked(meta, path)?;
    let Some(a) = at_rest else {
        return match records.first() {
            Some((id, _)) => Err(format!(
                "{}: {}",
                path.display(),
                OpenError::NoKeyFile(id.clone())
            )),
            None => Ok(false),
        };
    };
    check_canaries(a, &records).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut b = db.batch();
    let mut plaintext_ok = plaintext;
    if records.is_empty() && keyspaces.any(|ks| ks.first_key_value().is_some()) {
        tracing::warn!(
            "encryption at rest is on for a data dir written without it: its values are \
             encrypted in the background (INFO persistence, at_rest_rotation_in_progress)"
        );
        b.insert(meta, PLAINTEXT, []);
        plaintext_ok = true;
    }
    let active = a.active_key_id();
    if !records.iter().any(|(id, _)| *id == active) {
        b.insert(
            meta,
            format!("{KEY_PREFIX}{active}"),
            a.seal(CANARY_AAD, CANARY),
        );
    }
    if !b.is_empty() {
        b.commit().map_err(|e| db_err(path, e))?;
        db.persist(PersistMode::SyncAll)
            .map_err(|e| db_err(path, e))?;
    }
    Ok(plaintext_ok)
}

/// Every recorded key must be in the key file, and be the key its canary was sealed under.
fn check_canaries(a: &AtRest, records: &[(String, Vec<u8>)]) -> Result<(), OpenError> {
    let ids = a.key_ids();
    for (id, canary) in records {
        if !ids.contains(id) {
            return Err(OpenError::UnknownKey(id.clone()));
        }
        if !canary.is_empty() && a.open(CANARY_AAD, canary)? != CANARY {
            return Err(OpenError::Tampered(id.clone()));
        }
    }
    Ok(())
}

/// What INFO persistence shows of encryption at rest.
pub struct AtRestInfo {
    pub active: String,
    pub keys_in_use: Vec<String>,
    pub rotation_in_progress: bool,
    pub resealed: u64,
    pub sealed: u64,
    pub opened: u64,
}

impl Storage {
    /// INFO's view of encryption at rest; None when it is off.
    pub fn at_rest_info(&self) -> Option<AtRestInfo> {
        let a = self.at_rest.as_ref()?;
        let path = self.dir.join(super::DB_DIR);
        let keys_in_use: Vec<String> = key_records(&self.meta, &path)
            .map(|r| r.into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        let active = a.active_key_id();
        let rotation_in_progress = keys_in_use.iter().any(|id| *id != active)
            || self.plaintext_ok.load(Relaxed)
            || !a.parts_behind().is_empty();
        Some(AtRestInfo {
            active,
            keys_in_use,
            rotation_in_progress,
            resealed: a.resealed.load(Relaxed),
            sealed: a.sealed.load(Relaxed),
            opened: a.opened.load(Relaxed),
        })
    }

    /// Reads the key file at `path` (CONFIG SET encryption-at-rest-key-file): it must hold
    /// every key the node's data may still be sealed under; its active key is recorded and
    /// becomes the one new data is sealed under, and the rotation re-seals the rest.
    pub fn reload_at_rest(&self, path: &Path) -> Result<(), String> {
        let Some(a) = &self.at_rest else {
            return Err("encryption at rest is off; turning it on takes a restart".into());
        };
        let db_path = self.dir.join(super::DB_DIR);
        let fresh = AtRest::load(path)?;
        let records = key_records(&self.meta, &db_path)?;
        check_canaries(&fresh, &records).map_err(|e| e.to_string())?;
        let active = fresh.active_key_id();
        if !records.iter().any(|(id, _)| *id == active) {
            self.meta
                .insert(
                    format!("{KEY_PREFIX}{active}"),
                    fresh.seal(CANARY_AAD, CANARY),
                )
                .map_err(|e| db_err(&db_path, e))?;
            self.db
                .persist(PersistMode::SyncAll)
                .map_err(|e| db_err(&db_path, e))?;
        }
        a.reload(path)?;
        tracing::info!(
            "encryption at rest: key file {} loaded, active key '{active}'",
            path.display()
        );
        if let Some(tx) = self
            .reseal_wake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// One pass of the rotation over every stored value, for `generation`.
    fn reseal_values(&self, a: &AtRest) -> Result<(), String> {
        let view = self.db.snapshot();
        let spaces = self.groups.iter().map(|ks| (Space::Data, ks)).chain([
            (Space::Dbs, &self.dbs),
            (Space::Deltas, &self.deltas),
            (Space::Raft, &self.raft),
        ]);
        let mut step = Vec::with_capacity(STEP);
        for (space, ks) in spaces {
            for guard in view.iter(ks) {
                let (k, v) = guard.into_inner().map_err(|e| db_err(ks.path(), e))?;
                if !a.is_current(&v) {
                    step.push((space, k.to_vec(), v));
                }
                if step.len() == STEP {
                    self.reseal_step(std::mem::take(&mut step))?;
                }
            }
        }
        if !step.is_empty() {
            self.reseal_step(step)?;
        }
        Ok(())
    }

    fn reseal_step(&self, values: Vec<(Space, Vec<u8>, fjall::Slice)>) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        let msg = WriteMsg::Reseal(
            values,
            Box::new(move |n| {
                let _ = tx.send(n);
            }),
        );
        if self.try_send(msg).is_err() {
            return Err("the storage writer is not running".into());
        }
        rx.recv()
            .map(|_| ())
            .map_err(|_| "the storage writer dropped a rotation step".into())
    }

    /// Drops the records of keys other than the active one, and the plaintext marker: every
    /// part reported the current generation done.
    fn rotation_finished(&self, a: &AtRest) -> Result<(), String> {
        let path = self.dir.join(super::DB_DIR);
        let active = a.active_key_id();
        let mut b = self.db.batch();
        for (id, _) in key_records(&self.meta, &path)? {
            if id != active {
                b.remove(&self.meta, format!("{KEY_PREFIX}{id}"));
            }
        }
        b.remove(&self.meta, PLAINTEXT);
        b.commit().map_err(|e| db_err(&path, e))?;
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| db_err(&path, e))?;
        self.plaintext_ok.store(false, Relaxed);
        Ok(())
    }
}

/// Starts the rotation thread when encryption at rest is on.
pub(super) fn start(storage: &Arc<Storage>) -> Result<(), String> {
    let Some(a) = storage.at_rest.clone() else {
        return Ok(());
    };
    a.part_started(VALUES_PART);
    a.part_started(SAVE_COPY_PART);
    let (tx, rx) = mpsc::channel();
    *storage
        .reseal_wake
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let weak = Arc::downgrade(storage);
    std::thread::Builder::new()
        .name("tallykv-reseal".into())
        .spawn(move || {
            let mut finished = 0u64;
            loop {
                let generation = a.generation();
                if finished < generation {
                    let Some(storage) = weak.upgrade() else {
                        return;
                    };
                    match rotate(&storage, &a, generation) {
                        Ok(true) => finished = generation,
                        Ok(false) => {}
                        Err(e) => tracing::error!("encryption at rest: rotation: {e}"),
                    }
                }
                // Woken by a reload; otherwise look again shortly (other parts report in
                // their own time).
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    _ => continue,
                }
            }
        })
        .map_err(|e| format!("cannot start the at-rest rotation thread: {e}"))?;
    Ok(())
}

/// Runs this module's parts of `generation` and, once every part is done, finishes it.
/// Returns whether the generation is finished.
fn rotate(storage: &Storage, a: &AtRest, generation: u64) -> Result<bool, String> {
    let path = storage.dir.join(super::DB_DIR);
    let behind = a.parts_behind();
    if behind.iter().any(|p| p == VALUES_PART) {
        let active = a.active_key_id();
        let stale = key_records(&storage.meta, &path)?
            .iter()
            .any(|(id, _)| *id != active);
        if stale || storage.plaintext_ok.load(Relaxed) {
            let before = a.resealed.load(Relaxed);
            storage.reseal_values(a)?;
            tracing::info!(
                "encryption at rest: {} stored values re-encrypted under key '{active}'",
                a.resealed.load(Relaxed) - before
            );
            // The values' older versions stay in their tables until a compaction drops
            // them: compact now rather than leave them to chance. (fjall's journal keeps
            // what was written to it until it has taken 64 MB more; see the README.)
            // Memtables first: a compaction drops an old version only for a newer one (or a
            // tombstone) already in a table.
            for ks in storage
                .groups
                .iter()
                .chain([&storage.raft, &storage.deltas, &storage.dbs])
            {
                ks.rotate_memtable_and_wait()
                    .and_then(|()| ks.major_compact())
                    .map_err(|e| db_err(ks.path(), e))?;
            }
        }
        a.part_done(VALUES_PART, generation);
    }
    if behind.iter().any(|p| p == SAVE_COPY_PART) && storage.reseal_save_copy(a)? {
        a.part_done(SAVE_COPY_PART, generation);
    }
    for pass in storage
        .reseal_passes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        pass();
    }
    if !a.parts_behind().is_empty() || a.generation() != generation {
        return Ok(false);
    }
    storage.rotation_finished(a)?;
    tracing::info!(
        "encryption at rest: everything on disk is under key '{}'",
        a.active_key_id()
    );
    Ok(true)
}

/// The key ids and plaintext found among copied values.
#[derive(Default)]
pub(super) struct Seen {
    pub ids: BTreeSet<String>,
    pub plaintext: bool,
}

impl Seen {
    pub fn note(&mut self, v: &[u8]) {
        match at_rest::key_id_of(v) {
            Some(id) => {
                if !self.ids.contains(id) {
                    self.ids.insert(id.to_owned());
                }
            }
            None => self.plaintext = true,
        }
    }
}
