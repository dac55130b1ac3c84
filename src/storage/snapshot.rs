//! SAVE / BGSAVE: a point-in-time copy of the database, written while the node serves.
//!
//! The copy is read through a fjall snapshot (a consistent view at one sequence number, taken
//! by the writer thread after committing everything queued before the request), bulk-loaded
//! into a fresh database under `dir/snapshot.tmp`, synced, and renamed to `dir/snapshot`.
//! The result is itself a data directory: starting a server with `--dir` pointing at a copy of
//! it restores exactly that data.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use fjall::{Database, PersistMode, Readable};

use super::{
    DB_DIR, FUNCTIONS_RECORD, RAFT_KEYSPACE, SNAPSHOT_DIR, Storage, db_err, group_options,
    write_layout,
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
        self.stats
            .save_keys_total
            .store(self.approximate_len(), Relaxed);
        let mut keys = 0u64;
        {
            let out = Database::builder(&path)
                .cache_size(1024 * 1024)
                .open()
                .map_err(|e| db_err(&path, e))?;
            write_layout(&out, &path, self.groups.len())?;
            for (g, ks) in self.groups.iter().enumerate() {
                let dest = out
                    .keyspace(&format!("g{g}"), group_options)
                    .map_err(|e| db_err(&path, e))?;
                let mut ingest = dest.start_ingestion().map_err(|e| db_err(&path, e))?;
                for guard in snap.iter(ks) {
                    let (k, v) = guard.into_inner().map_err(|e| db_err(ks.path(), e))?;
                    ingest.write(k, v).map_err(|e| db_err(&path, e))?;
                    keys += 1;
                    if keys.is_multiple_of(65536) {
                        self.stats.save_keys_processed.store(keys, Relaxed);
                    }
                }
                ingest.finish().map_err(|e| db_err(&path, e))?;
            }
            // The numbered databases other than 0.
            let dest = out
                .keyspace(super::DBS_KEYSPACE, group_options)
                .map_err(|e| db_err(&path, e))?;
            let mut ingest = dest.start_ingestion().map_err(|e| db_err(&path, e))?;
            for guard in snap.iter(&self.dbs) {
                let (k, v) = guard.into_inner().map_err(|e| db_err(self.dbs.path(), e))?;
                ingest.write(k, v).map_err(|e| db_err(&path, e))?;
                keys += 1;
            }
            ingest.finish().map_err(|e| db_err(&path, e))?;
            // Large values' deltas since their last full write: the copy loads like the
            // original.
            let dest = out
                .keyspace(super::DELTAS_KEYSPACE, group_options)
                .map_err(|e| db_err(&path, e))?;
            let mut ingest = dest.start_ingestion().map_err(|e| db_err(&path, e))?;
            for guard in snap.iter(&self.deltas) {
                let (k, v) = guard
                    .into_inner()
                    .map_err(|e| db_err(self.deltas.path(), e))?;
                ingest.write(k, v).map_err(|e| db_err(&path, e))?;
            }
            ingest.finish().map_err(|e| db_err(&path, e))?;
            // The function libraries belong to the data set (Valkey keeps them in the RDB).
            if let Some(v) = snap
                .get(&self.raft, FUNCTIONS_RECORD)
                .map_err(|e| db_err(self.raft.path(), e))?
            {
                let raft = out
                    .keyspace(RAFT_KEYSPACE, group_options)
                    .map_err(|e| db_err(&path, e))?;
                raft.insert(FUNCTIONS_RECORD, v)
                    .map_err(|e| db_err(&path, e))?;
            }
            out.persist(PersistMode::SyncAll)
                .map_err(|e| db_err(&path, e))?;
        }
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
}
