//! SAVE / BGSAVE: a point-in-time copy of the database, written while the node serves.
//!
//! The copy is read through a fjall snapshot (a consistent view at one sequence number, taken
//! by the writer thread after committing everything queued before the request), bulk-loaded
//! into a fresh database under `dir/snapshot.tmp`, synced, and renamed to `dir/snapshot`.
//! The result is itself a data directory: starting a server with `--dir` pointing at a copy of
//! it restores exactly that data.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use std::path::Path;

use fjall::{Database, Keyspace, PersistMode, Readable};

use super::at_rest::{self, AtRest};
use super::{
    DB_DIR, FUNCTIONS_RECORD, RAFT_KEYSPACE, SNAPSHOT_DIR, Space, Storage, db_err, group_options,
    rotation, value_aad, write_layout,
};

impl Storage {
    pub(super) fn write_snapshot(&self, snap: fjall::Snapshot) -> Result<(), String> {
        let started = Instant::now();
        let changes_at_start = self.stats.changes_since_save.load(Relaxed);
        let result = self.copy_snapshot(snap);
        let s = &self.stats;
        match &result {
            Ok(keys) => {
                s.last_save_unix
                    .store(crate::util::now_ms() / 1000, Relaxed);
                s.last_save_duration_ms
                    .store(started.elapsed().as_millis() as u64, Relaxed);
                s.last_save_keys.store(*keys, Relaxed);
                s.changes_since_save.fetch_sub(changes_at_start, Relaxed);
                s.saves.fetch_add(1, Relaxed);
                s.last_bgsave_ok.store(true, Relaxed);
                tracing::info!(
                    keys,
                    ms = started.elapsed().as_millis() as u64,
                    "DB saved on disk ({})",
                    self.dir.join(SNAPSHOT_DIR).display()
                );
            }
            Err(e) => {
                s.last_bgsave_ok.store(false, Relaxed);
                tracing::error!("snapshot failed: {e}");
            }
        }
        s.save_keys_processed.store(0, Relaxed);
        s.save_keys_total.store(0, Relaxed);
        s.bgsave_in_progress.store(false, Relaxed);
        result.map(|_| ())
    }

    fn copy_snapshot(&self, snap: fjall::Snapshot) -> Result<u64, String> {
        self.stats
            .save_keys_total
            .store(self.approximate_len(), Relaxed);
        let canaries = match self.at_rest {
            Some(_) => rotation::key_records(&self.meta, &self.dir.join(DB_DIR))?,
            None => Vec::new(),
        };
        let source = Source {
            snap: &snap,
            groups: &self.groups,
            dbs: &self.dbs,
            deltas: &self.deltas,
            raft: &self.raft,
        };
        self.replace_copy(|out, path| self.copy_into(&source, out, path, false, &canaries))
    }

    /// Writes a new copy through `dir/snapshot.tmp` with `fill` and renames it over
    /// `dir/snapshot`; returns what `fill` returned.
    fn replace_copy(
        &self,
        fill: impl FnOnce(&Database, &Path) -> Result<u64, String>,
    ) -> Result<u64, String> {
        let target = self.dir.join(SNAPSHOT_DIR);
        let tmp = self.dir.join(format!("{SNAPSHOT_DIR}.tmp"));
        let old = self.dir.join(format!("{SNAPSHOT_DIR}.old"));
        let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
            format!("{what} {}: {e}", p.display())
        };
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io("cannot remove", &tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        let path = tmp.join(DB_DIR);
        let keys = {
            let out = Database::builder(&path)
                .cache_size(1024 * 1024)
                .open()
                .map_err(|e| db_err(&path, e))?;
            let keys = fill(&out, &path)?;
            out.persist(PersistMode::SyncAll)
                .map_err(|e| db_err(&path, e))?;
            keys
        };
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io("cannot remove", &old, e))?;
        }
        if target.exists() {
            std::fs::rename(&target, &old).map_err(|e| io("cannot rename", &target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| io("cannot rename", &tmp, e))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(keys)
    }

    /// Copies `src` into the new database `out`: every value as it is stored, or, with
    /// `reseal`, opened and sealed again under the active at-rest key. Writes the layout and
    /// the at-rest records the copied values need (`canaries`: the source's records).
    fn copy_into(
        &self,
        src: &Source<'_>,
        out: &Database,
        path: &Path,
        reseal: bool,
        canaries: &[(String, Vec<u8>)],
    ) -> Result<u64, String> {
        write_layout(out, path, src.groups.len())?;
        let mut seen = rotation::Seen::default();
        let mut keys = 0u64;
        let mut aad = Vec::new();
        let mut value = |space: Space, k: &[u8], v: fjall::Slice| -> Result<fjall::Slice, String> {
            let Some(a) = self.at_rest.as_ref() else {
                return Ok(v);
            };
            let v = if reseal {
                let plain = if at_rest::is_sealed(&v) {
                    value_aad(space, k, &mut aad);
                    a.open(&aad, &v)
                        .map_err(|e| format!("{}: {e}", path.display()))?
                } else {
                    v.to_vec()
                };
                value_aad(space, k, &mut aad);
                fjall::Slice::from(a.seal(&aad, &plain))
            } else {
                v
            };
            seen.note(&v);
            Ok(v)
        };
        let mut copy = |space: Space, from: &Keyspace, name: &str, count: bool| {
            let dest = out
                .keyspace(name, group_options)
                .map_err(|e| db_err(path, e))?;
            let mut ingest = dest.start_ingestion().map_err(|e| db_err(path, e))?;
            for guard in src.snap.iter(from) {
                let (k, v) = guard.into_inner().map_err(|e| db_err(from.path(), e))?;
                let v = value(space, &k, v)?;
                ingest.write(k, v).map_err(|e| db_err(path, e))?;
                if count {
                    keys += 1;
                    if keys.is_multiple_of(65536) {
                        self.stats.save_keys_processed.store(keys, Relaxed);
                    }
                }
            }
            ingest.finish().map_err(|e| db_err(path, e))
        };
        for (g, ks) in src.groups.iter().enumerate() {
            copy(Space::Data, ks, &format!("g{g}"), true)?;
        }
        // The numbered databases other than 0.
        copy(Space::Dbs, src.dbs, super::DBS_KEYSPACE, true)?;
        // Large values' deltas since their last full write: the copy loads like the
        // original.
        copy(Space::Deltas, src.deltas, super::DELTAS_KEYSPACE, false)?;
        // The function libraries belong to the data set (Valkey keeps them in the RDB); the
        // rest of the raft keyspace is this node's cluster state, which a copy does not hold.
        if let Some(v) = src
            .snap
            .get(src.raft, FUNCTIONS_RECORD)
            .map_err(|e| db_err(src.raft.path(), e))?
        {
            let v = value(Space::Raft, &FUNCTIONS_RECORD, v)?;
            let raft = out
                .keyspace(RAFT_KEYSPACE, group_options)
                .map_err(|e| db_err(path, e))?;
            raft.insert(FUNCTIONS_RECORD, v)
                .map_err(|e| db_err(path, e))?;
        }
        if self.at_rest.is_some() {
            rotation::write_records(out, path, &seen.ids, seen.plaintext, canaries)?;
        }
        Ok(keys)
    }

    /// The rotation's pass over the SAVE copy: re-seals it when it holds values under other
    /// keys than the active one (or plaintext). Ok(false) while a BGSAVE runs: try again.
    pub(super) fn reseal_save_copy(&self, a: &AtRest) -> Result<bool, String> {
        let copy = self.dir.join(SNAPSHOT_DIR).join(DB_DIR);
        if !copy.exists() {
            return Ok(true);
        }
        if self.stats.bgsave_in_progress.swap(true, Relaxed) {
            return Ok(false);
        }
        let result = (|| {
            let db = Database::builder(&copy)
                .cache_size(1024 * 1024)
                .open()
                .map_err(|e| db_err(&copy, e))?;
            let meta = db
                .keyspace("meta", fjall::KeyspaceCreateOptions::default)
                .map_err(|e| db_err(&copy, e))?;
            let records = rotation::key_records(&meta, &copy)?;
            let active = a.active_key_id();
            // No record at all: a copy made before encryption was on.
            if !records.is_empty()
                && records.iter().all(|(id, _)| *id == active)
                && !rotation::plaintext_marked(&meta, &copy)?
            {
                return Ok(());
            }
            let groups = super::open_layout(&db, &copy)?;
            let ks = |name: &str| {
                db.keyspace(name, group_options)
                    .map_err(|e| db_err(&copy, e))
            };
            let (dbs, deltas, raft) = (
                ks(super::DBS_KEYSPACE)?,
                ks(super::DELTAS_KEYSPACE)?,
                ks(RAFT_KEYSPACE)?,
            );
            let snap = db.snapshot();
            let source = Source {
                snap: &snap,
                groups: &groups,
                dbs: &dbs,
                deltas: &deltas,
                raft: &raft,
            };
            let canaries = rotation::key_records(&self.meta, &self.dir.join(DB_DIR))?;
            let keys =
                self.replace_copy(|out, path| self.copy_into(&source, out, path, true, &canaries))?;
            tracing::info!(
                "encryption at rest: the SAVE copy ({keys} keys) re-encrypted under key '{active}'"
            );
            Ok(())
        })();
        self.stats.bgsave_in_progress.store(false, Relaxed);
        result.map(|()| true)
    }
}

/// What a copy is read from: a point-in-time view and its keyspaces.
struct Source<'a> {
    snap: &'a fjall::Snapshot,
    groups: &'a [Keyspace],
    dbs: &'a Keyspace,
    deltas: &'a Keyspace,
    raft: &'a Keyspace,
}
