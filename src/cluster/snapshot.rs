//! Slot-group snapshots: a group's keys as of one applied log id, read from a point-in-time
//! view of fjall (the cores flush first, so the view holds exactly the applied state), kept
//! as one file per group so a lagging or emptied replica can be sent it after the log
//! before it was purged.
//!
//! File: `TKVRSNP3`, u32 LE meta length, the SnapshotMeta (`wire` encoding), then records
//! `[u32 LE key length][stored key][u32 LE value length][stored value]` in the storage
//! codec's encoding (so a snapshot is read with the same decoder as the data dir), then an
//! end marker: `[u32 LE 0xFFFFFFFF][u64 LE record count][u32 LE CRC-32C of the records'
//! bytes]`. A file cut at a record boundary, or with a flipped bit, is an error, never a
//! smaller snapshot. (`TKVRSNP1`/`TKVRSNP2` files, written with bincode by the 0.9-based
//! cluster, are refused by name: their meta is not readable by this build.)
//!
//! With encryption at rest on (`encryption-at-rest-key-file`), that format is the plaintext
//! of a sealed file (`storage::at_rest`: `TKVAREST`, then AES-GCM chunks). Encryption at rest
//! is the node's own: the bus carries the plaintext (under its own TLS), so a sender opens
//! its file as it reads it and a receiver seals what arrives as it writes it, each under its
//! own key. Files from before encryption was turned on stay readable (their magic says
//! which); a sealed file on a node without the key file is refused by name. A rotation
//! re-seals the complete files under the new key in the background ([`reseal_part`]).
//!
//! A snapshot never sits in memory whole: it is written record by record while the fjall
//! view is read ([`Writer`]), sent and received in chunks straight from and to a file
//! ([`SnapshotFile`], see `net`), and read back record by record ([`Reader`]) to be installed
//! in bounded batches. Files under `<dir>/raft-snapshots`:
//!
//! ```text
//! g{g}.snap            group g's current snapshot (what a lagging replica is sent)
//! g{g}.installing      a received snapshot being installed; found at start, the install was
//!                      cut short and is finished from it (see `sm`)
//! g{g}-{ms}-{n}.tmp    a snapshot being built or re-sealed } partial: deleted when dropped
//! g{g}-{ms}-{n}.recv   a snapshot being received          } and at the next start
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::types::{GroupId, TypeConfig};
use super::wire;
use crate::storage::KeyValues;
use crate::storage::at_rest::{AtRest, FILE_MAGIC, SealedWriter};

const MAGIC: &[u8; 8] = b"TKVRSNP3";
/// The formats of the 0.9-based cluster (bincode meta): refused by name.
const MAGIC_OLD: [&[u8; 8]; 2] = [b"TKVRSNP1", b"TKVRSNP2"];
/// How a sealed file begins, whatever its version (at_rest's magic without the version
/// byte): recognised even by a node without the key file, to say why it cannot read it.
const SEALED_MAGIC: &[u8] = FILE_MAGIC.split_at(8).0;
/// In a key length's place: the records are over and the end marker follows (no key is
/// 4 GiB long).
const END_MARK: u32 = u32::MAX;
/// The checksum of a file's records.
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
/// A header's meta is a log id and a membership: far below this unless the length is corrupt.
const MAX_META_BYTES: usize = 16 * 1024 * 1024;
/// What a read reserves ahead for one key or value at most: a corrupt length then fails at
/// the end of the file instead of allocating up to 4 GiB first.
const MAX_RESERVE: usize = 1024 * 1024;
/// The buffer of a file being written (built, received or re-sealed), and of a reader.
const IO_BUFFER: usize = 1024 * 1024;
/// The buffer under a sealed file's reader, for the small reads (a chunk's length, the
/// header): a chunk itself is read past it.
const SEALED_READ_BUFFER: usize = 8 * 1024;
/// A pass that keeps failing (a damaged file) logs at most once per this: the rotation thread
/// runs it every few hundred milliseconds until it succeeds.
const RESEAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The part of the node's disk state the snapshot files are, in the at-rest rotation's
/// progress (`AtRest::part_done`).
pub const RESEAL_PART: &str = "raft-snapshots";
/// A partial file not written to for this long is given up on (see
/// [`SnapshotFiles::sealing_under_other_key`]): a snapshot being built or received writes
/// every few seconds at most.
const PARTIAL_STALLED: std::time::Duration = std::time::Duration::from_secs(120);
/// Passes a re-seal makes over the directory while files keep changing under it, before it
/// gives up until the next call.
const RESEAL_ROUNDS: usize = 8;

pub type Meta = openraft10::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// One record: a stored key and its stored value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Snapshot files of this node's groups, under `<dir>/raft-snapshots`.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// The node's at-rest keys when encryption at rest is on: every file written here is
    /// sealed with them.
    at_rest: Option<Arc<AtRest>>,
    /// Held while a file takes or leaves a complete snapshot's name (`g{g}.snap`,
    /// `g{g}.installing`), so a re-seal renames its copy over a name only while the name
    /// still holds the file it copied. Holds the partial files being sealed and the key each
    /// began under: a rotation's pass is not done while one began under an earlier key (it
    /// will take its name under that key).
    names: Mutex<BTreeMap<PathBuf, String>>,
    /// The groups with a staged (`.installing`) snapshot: their keys here are being replaced
    /// and are not a state to serve (READONLY reads go to the leader meanwhile).
    staged: Mutex<std::collections::BTreeSet<GroupId>>,
    /// How many groups `staged` holds, so the common case needs no lock.
    staged_count: AtomicU64,
    /// Makes the names of files being built or received unique within this process (the
    /// start time in their names, across restarts).
    next: AtomicU64,
}

/// An error about `path`.
fn path_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl SnapshotFiles {
    /// The snapshot files under `data_dir`, sealed with `at_rest` when it is set. Deletes what
    /// a previous run left half built or half received (never a `.installing` file: that one
    /// is finished at start).
    pub fn new(data_dir: &Path, at_rest: Option<Arc<AtRest>>) -> SnapshotFiles {
        let dir = data_dir.join("raft-snapshots");
        let mut staged = std::collections::BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "installing")
                    && let Some(g) = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.strip_prefix('g'))
                        .and_then(|n| n.parse::<GroupId>().ok())
                {
                    staged.insert(g);
                }
                let partial = path
                    .extension()
                    .is_some_and(|ext| ext == "tmp" || ext == "recv");
                if partial {
                    match std::fs::remove_file(&path) {
                        Ok(()) => tracing::info!("deleted the partial snapshot {}", path.display()),
                        Err(e) => tracing::warn!("cannot delete {}: {e}", path.display()),
                    }
                }
            }
        }
        if let Some(at_rest) = &at_rest {
            // Files from before encryption was on, or under a key rotated away while the node
            // was down, count as behind until a pass re-sealed them.
            at_rest.part_started(RESEAL_PART);
        }
        SnapshotFiles {
            dir,
            at_rest,
            names: Mutex::new(BTreeMap::new()),
            staged_count: AtomicU64::new(staged.len() as u64),
            staged: Mutex::new(staged),
            next: AtomicU64::new(0),
        }
    }

    /// Whether group `g` has a staged snapshot: its install has not finished (or a crash cut
    /// it short and it is finished at start), so this node's copy of the group is partial.
    pub fn is_staged(&self, g: GroupId) -> bool {
        self.staged_count.load(Relaxed) > 0 && self.staged_set().contains(&g)
    }

    fn staged_set(&self) -> MutexGuard<'_, std::collections::BTreeSet<GroupId>> {
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn names(&self) -> MutexGuard<'_, BTreeMap<PathBuf, String>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_staged(&self, g: GroupId, on: bool) {
        let mut set = self.staged_set();
        if on {
            set.insert(g);
        } else {
            set.remove(&g);
        }
        self.staged_count.store(set.len() as u64, Relaxed);
    }

    fn path(&self, g: GroupId) -> PathBuf {
        self.dir.join(format!("g{g}.snap"))
    }

    /// Where group `g`'s received snapshot lies while it is installed.
    pub fn installing_path(&self, g: GroupId) -> PathBuf {
        self.dir.join(format!("g{g}.installing"))
    }

    /// A new, unique path for a partial file of group `g`.
    fn partial_path(&self, g: GroupId, ext: &str) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir).map_err(path_err(&self.dir))?;
        let n = self.next.fetch_add(1, Relaxed);
        let ms = crate::util::now_ms();
        Ok(self.dir.join(format!("g{g}-{ms}-{n}.{ext}")))
    }

    /// A new partial file at `path` to write a snapshot's plaintext into: sealed when
    /// encryption at rest is on, and then noted with the key it begins under (see `names`).
    fn sink(&self, path: &Path) -> Result<Sink, String> {
        let file = File::create_new(path).map_err(path_err(path))?;
        let out = BufWriter::with_capacity(IO_BUFFER, file);
        let Some(at_rest) = &self.at_rest else {
            return Ok(Sink::Plain(out));
        };
        {
            let mut names = self.names();
            // Partial files leave by a rename or a deletion, which need not come here.
            names.retain(|p, _| p.exists());
            // Read under the lock a rotation's check takes: a writer noted after the check
            // read the key after the rotation (the writer below reads it again, as new or
            // newer).
            names.insert(path.to_path_buf(), at_rest.active_key_id());
        }
        match at_rest.writer(out) {
            Ok(w) => Ok(Sink::Sealed(Box::new(w))),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(format!("{}: {e}", path.display()))
            }
        }
    }

    /// Starts building group `g`'s snapshot: a new file with `meta`'s header, which
    /// [`Writer::commit`] makes the group's snapshot.
    pub fn create(&self, g: GroupId, meta: &Meta) -> Result<Writer<'_>, String> {
        let tmp = Partial::new(self.partial_path(g, "tmp")?);
        let out = self.sink(&tmp.path)?;
        let mut w = Writer {
            files: self,
            out,
            dest: self.path(g),
            tmp,
            records: 0,
            crc: CRC32C.digest(),
        };
        let meta = wire::encode(meta);
        w.write(MAGIC)?;
        w.write(&(meta.len() as u32).to_le_bytes())?;
        w.write(&meta)?;
        Ok(w)
    }

    /// A new, empty file to receive a snapshot of group `g` into, chunk by chunk from its
    /// start (deleted if dropped before it is installed).
    pub fn receive(&self, g: GroupId) -> Result<SnapshotFile, String> {
        let path = self.partial_path(g, "recv")?;
        let sink = self.sink(&path)?;
        Ok(SnapshotFile {
            path,
            at_rest: self.at_rest.clone(),
            complete: None,
            receiving: Some(sink),
        })
    }

    /// Reads the snapshot file at `path` (one of this node's: sealed or not).
    pub fn reader(&self, path: &Path) -> Result<Reader, ReadError> {
        Reader::open(path, self.at_rest.as_ref())
    }

    /// Checks a received snapshot of group `g` whole (its header says `meta`, every record
    /// is complete) and moves it to [`installing_path`](Self::installing_path), durably: from
    /// then on a restart finishes installing it. A file that fails the check is deleted.
    /// Blocks (reads the file).
    pub fn stage(&self, g: GroupId, received: &Path, meta: &Meta) -> Result<u64, String> {
        let checked = (|| {
            let mut r = self.reader(received)?;
            if r.meta() != meta {
                return Err(format!(
                    "{}: holds the snapshot at log {}, not the one at log {}",
                    received.display(),
                    show_log_id(r.meta()),
                    show_log_id(meta)
                ));
            }
            let mut records = 0u64;
            while r.skip_record()? {
                records += 1;
            }
            Ok(records)
        })();
        let records = match checked {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(received);
                return Err(e);
            }
        };
        // Marked before the rename: a reader never sees the file without the mark.
        self.set_staged(g, true);
        self.put(received, &self.installing_path(g))?;
        Ok(records)
    }

    /// The meta of group `g`'s snapshot whose install a restart cut short, if any.
    pub fn staged(&self, g: GroupId) -> Result<Option<Meta>, String> {
        match self.reader(&self.installing_path(g)) {
            Ok(r) => Ok(Some(r.meta)),
            Err(ReadError::Missing) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Makes group `g`'s installed snapshot (see [`stage`](Self::stage)) its current one.
    pub fn commit_staged(&self, g: GroupId) -> Result<(), String> {
        self.put(&self.installing_path(g), &self.path(g))?;
        self.set_staged(g, false);
        Ok(())
    }

    /// Makes the complete snapshot file at `from` group `g`'s current snapshot.
    pub fn adopt(&self, g: GroupId, from: &Path) -> Result<(), String> {
        self.put(from, &self.path(g))
    }

    /// Renames `from` to `to` and syncs the directory, so the rename survives a crash.
    fn put(&self, from: &Path, to: &Path) -> Result<(), String> {
        let _names = self.names();
        std::fs::rename(from, to).map_err(path_err(to))?;
        sync_dir(&self.dir)
    }

    /// Deletes group `g`'s snapshot and any install of one (this node no longer replicates
    /// the group).
    pub fn remove(&self, g: GroupId) -> Result<(), String> {
        {
            let _names = self.names();
            for path in [self.path(g), self.installing_path(g)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
        }
        self.set_staged(g, false);
        Ok(())
    }

    /// Group `g`'s snapshot, if any: its meta and the file.
    pub fn load(&self, g: GroupId) -> Result<Option<(Meta, SnapshotFile)>, String> {
        let path = self.path(g);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let header = file.try_clone().map_err(path_err(&path))?;
        let mut plain = plaintext(header, &path, self.at_rest.as_ref())?;
        let (meta, _) = read_header(&mut plain.read, &path)?;
        Ok(Some((meta, self.complete(file, path))))
    }

    /// The complete snapshot file `file`, open at `path`.
    fn complete(&self, file: File, path: PathBuf) -> SnapshotFile {
        SnapshotFile {
            path,
            at_rest: self.at_rest.clone(),
            complete: Some(file),
            receiving: None,
        }
    }

    /// Re-seals every complete snapshot file (`g{g}.snap`, `g{g}.installing`) that is not
    /// sealed under `at_rest`'s active key — written before encryption at rest was on, or
    /// under a key since rotated — under that key. Returns how many it re-sealed.
    ///
    /// A file is copied under the new key to a partial file beside it, synced, and renamed
    /// over its name only if the name still holds the file copied (checked under `names`,
    /// the lock every rename into or out of those names takes): a snapshot built, staged,
    /// adopted or removed meanwhile is never replaced by a stale copy, and the pass looks at
    /// the directory again instead.
    pub fn reseal(&self, at_rest: &Arc<AtRest>) -> Result<usize, String> {
        let mut resealed = 0;
        for _ in 0..RESEAL_ROUNDS {
            let mut changed = false;
            let mut failed = Vec::new();
            for (g, path) in self.complete_files()? {
                match self.sealed_copy(g, &path, at_rest) {
                    Ok(Copied::Current) => {}
                    // Moved or removed since the listing: its new name may not be listed.
                    Ok(Copied::Missing) => changed = true,
                    Ok(Copied::Copy { source, copy }) => {
                        match self.replace_if_same(&path, &source, copy) {
                            Ok(true) => resealed += 1,
                            Ok(false) => changed = true,
                            Err(e) => failed.push(e),
                        }
                    }
                    Err(e) => failed.push(e),
                }
            }
            if !failed.is_empty() {
                return Err(failed.join("; "));
            }
            if !changed {
                return Ok(resealed);
            }
        }
        Err(format!(
            "{}: snapshot files kept changing while they were re-sealed; the next pass retries",
            self.dir.display()
        ))
    }

    /// The complete snapshot files: `g{g}.snap` and `g{g}.installing`.
    fn complete_files(&self) -> Result<Vec<(GroupId, PathBuf)>, String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.dir.display())),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(path_err(&self.dir))?.path();
            let complete = path
                .extension()
                .is_some_and(|ext| ext == "snap" || ext == "installing");
            let group = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix('g'))
                .and_then(|n| n.parse::<GroupId>().ok());
            if let (true, Some(g)) = (complete, group) {
                files.push((g, path));
            }
        }
        Ok(files)
    }

    /// A copy of the complete snapshot file at `path` sealed under `at_rest`'s active key,
    /// with the file it copied (held open: its inode cannot be reused while the copy is
    /// compared with the name).
    fn sealed_copy(
        &self,
        g: GroupId,
        path: &Path,
        at_rest: &Arc<AtRest>,
    ) -> Result<Copied, String> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Copied::Missing),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let source = file.try_clone().map_err(path_err(path))?;
        let mut plain = plaintext(file, path, Some(at_rest))?;
        if plain.key_id.as_deref() == Some(at_rest.active_key_id().as_str()) {
            return Ok(Copied::Current);
        }
        let copy = Partial::new(self.partial_path(g, "tmp")?);
        let out = File::create_new(&copy.path).map_err(path_err(&copy.path))?;
        let sealed = at_rest
            .writer(BufWriter::with_capacity(IO_BUFFER, out))
            .map_err(path_err(&copy.path))?;
        let mut sink = Sink::Sealed(Box::new(sealed));
        std::io::copy(&mut plain.read, &mut sink)
            .map_err(|e| format!("{}: cannot re-seal: {e}", path.display()))?;
        sink.finish().map_err(path_err(&copy.path))?;
        Ok(Copied::Copy { source, copy })
    }

    /// Renames `copy` over `path` if `path` is still the file `source` (see
    /// [`reseal`](Self::reseal)); false, deleting the copy, if it changed meanwhile.
    fn replace_if_same(
        &self,
        path: &Path,
        source: &File,
        mut copy: Partial,
    ) -> Result<bool, String> {
        let _names = self.names();
        let was = source.metadata().map_err(path_err(path))?;
        let same = match std::fs::metadata(path) {
            Ok(now) => now.dev() == was.dev() && now.ino() == was.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if !same {
            return Ok(false);
        }
        std::fs::rename(&copy.path, path).map_err(path_err(path))?;
        copy.kept = true;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Partial files being sealed under a key other than `active`. One not written to for
    /// [`PARTIAL_STALLED`] does not count: a receive whose sender gave up stays open until the
    /// next transfer to its group starts (see `net`), never takes a name, and must not hold
    /// a rotation back meanwhile.
    fn sealing_under_other_key(&self, active: &str) -> usize {
        let mut names = self.names();
        names.retain(|p, _| p.exists());
        let stalled = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > PARTIAL_STALLED))
        };
        names
            .iter()
            .filter(|(p, key)| *key != active && !stalled(p))
            .count()
    }
}

/// What a re-seal found at a complete file's name.
enum Copied {
    /// Nothing (moved or removed since the directory was listed).
    Missing,
    /// A file sealed under the active key already.
    Current,
    /// The file, and its copy under the active key.
    Copy { source: File, copy: Partial },
}

/// One pass of the at-rest rotation over `files` (from the storage layer's background
/// thread): re-seals the complete files under `at_rest`'s active key (see
/// [`SnapshotFiles::reseal`]), then reports the generation the pass began at as done. Returns
/// whether it did: not while a snapshot that began under an earlier key is still being built
/// or received — it takes its name under that key — so the caller calls again later (what
/// it left is re-sealed then).
pub fn reseal_part(files: &SnapshotFiles, at_rest: &Arc<AtRest>) -> Result<bool, String> {
    let generation = at_rest.generation();
    // Checked before the directory is: a file noted here that takes its name after the
    // listing holds the pass back; one that begins after this check seals under the key the
    // pass checks against (or a newer one).
    let behind = files.sealing_under_other_key(&at_rest.active_key_id());
    let resealed = files.reseal(at_rest)?;
    if resealed > 0 {
        tracing::info!(
            "re-sealed {resealed} snapshot files under key id '{}'",
            at_rest.active_key_id()
        );
    }
    if behind > 0 {
        return Ok(false);
    }
    at_rest.part_done(RESEAL_PART, generation);
    Ok(true)
}

/// Has the storage layer's at-rest rotation thread run [`reseal_part`] over `files` (nothing
/// when encryption at rest is off): storage holds no handle on the cluster, so the cluster
/// hands it the pass when it starts. Also runs a first pass now, on a thread of its own: the
/// rotation thread may have finished the current generation before this part was registered,
/// and files written before encryption was turned on, or under a key rotated away while the
/// node was down, are re-sealed without waiting for the next rotation.
pub fn add_reseal_pass(files: &Arc<SnapshotFiles>, storage: &crate::storage::Storage) {
    let Some(at_rest) = files.at_rest.clone() else {
        return;
    };
    let pass = {
        let files = Arc::downgrade(files);
        let failures = Mutex::new(crate::util::log_limit::LogLimit::new(RESEAL_LOG_EVERY));
        move || {
            // The rotation thread runs every pass until its generation is finished: once this
            // part is done, the others' passes are what it waits for.
            if !at_rest.parts_behind().iter().any(|p| p == RESEAL_PART) {
                return;
            }
            let Some(files) = files.upgrade() else {
                return;
            };
            if let Err(e) = reseal_part(&files, &at_rest) {
                let mut failures = failures.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(unlogged) = failures.admit(std::time::Instant::now()) {
                    tracing::error!(
                        "encryption at rest: slot-group snapshot files: {e} ({unlogged} more \
                         failures since the last report)"
                    );
                }
            }
        }
    };
    let pass = Arc::new(pass);
    let first = pass.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("tallykv-snapseal".into())
        .spawn(move || first())
    {
        tracing::warn!("encryption at rest: cannot start re-sealing the snapshot files: {e}");
    }
    storage.add_reseal_pass(move || pass());
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(path_err(dir))
}

/// A partial file, deleted when dropped unless it took its name.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    fn new(path: PathBuf) -> Partial {
        Partial { path, kept: false }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a snapshot's plaintext is written: the file itself, or a sealer in front of it.
enum Sink {
    Plain(BufWriter<File>),
    /// Boxed: the sealer carries its session key and a chunk's buffer.
    Sealed(Box<SealedWriter<BufWriter<File>>>),
}

impl Sink {
    /// Writes what is buffered (a sealed file's last chunk, which marks it whole) and syncs
    /// the file.
    fn finish(self) -> io::Result<File> {
        let mut out = match self {
            Sink::Plain(out) => out,
            Sink::Sealed(sealed) => (*sealed).finish()?,
        };
        out.flush()?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_data()?;
        Ok(file)
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(out) => out.write(data),
            Sink::Sealed(out) => out.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(out) => out.flush(),
            Sink::Sealed(out) => out.flush(),
        }
    }
}

/// Reads a file from a position of its own (positional reads): clones of one handle share
/// the file position, and one snapshot may be sent to two peers at once.
struct At {
    file: File,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A snapshot file's plaintext from its start, and the key it is sealed under (None: a file
/// written before encryption at rest was on).
struct Plaintext {
    read: Box<dyn Read + Send>,
    key_id: Option<String>,
}

/// The plaintext of the snapshot file `file` (at `path`, for errors): what is sealed opens
/// with `at_rest`; what is not is read as it is (the snapshot header then says whether it is
/// a snapshot at all).
fn plaintext(
    file: File,
    path: &Path,
    at_rest: Option<&Arc<AtRest>>,
) -> Result<Plaintext, ReadError> {
    let bad = |what: String| ReadError::Bad(format!("{}: {what}", path.display()));
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(bad(e.to_string())),
        }
    }
    let at = At { file, pos: 0 };
    if &head[..n] != SEALED_MAGIC {
        return Ok(Plaintext {
            read: Box::new(at),
            key_id: None,
        });
    }
    let Some(at_rest) = at_rest else {
        let key = AtRest::file_key_id(path)
            .ok()
            .flatten()
            .map(|id| format!(" (sealed under key id '{id}')"))
            .unwrap_or_default();
        return Err(bad(format!(
            "snapshot encrypted at rest, and encryption-at-rest-key-file is not set{key}"
        )));
    };
    let opened = at_rest
        .reader(BufReader::with_capacity(SEALED_READ_BUFFER, at))
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                bad("truncated snapshot header (encrypted at rest)".to_string())
            }
            _ => bad(e.to_string()),
        })?;
    Ok(Plaintext {
        key_id: Some(opened.key_id().to_owned()),
        read: Box::new(opened),
    })
}

/// A snapshot being built: records are appended as they are read, through a buffer (and
/// sealed, when encryption at rest is on).
pub struct Writer<'a> {
    files: &'a SnapshotFiles,
    out: Sink,
    tmp: Partial,
    dest: PathBuf,
    records: u64,
    /// Of the records' bytes so far.
    crc: crc::Digest<'static, u32>,
}

impl Writer<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out.write_all(bytes).map_err(path_err(&self.tmp.path))
    }

    /// Writes part of a record, into the checksum too.
    fn record_part(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.crc.update(bytes);
        self.write(bytes)
    }

    /// Appends one stored key and value.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if key.len() >= END_MARK as usize || value.len() > u32::MAX as usize {
            return Err(format!(
                "{}: a record too large for a snapshot",
                self.tmp.path.display()
            ));
        }
        self.record_part(&(key.len() as u32).to_le_bytes())?;
        self.record_part(key)?;
        self.record_part(&(value.len() as u32).to_le_bytes())?;
        self.record_part(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker, syncs the file and renames it over the group's snapshot;
    /// returns it open for reading, and its size on disk.
    pub fn commit(mut self) -> Result<(SnapshotFile, u64), String> {
        let crc = std::mem::replace(&mut self.crc, CRC32C.digest()).finalize();
        self.write(&END_MARK.to_le_bytes())?;
        self.write(&self.records.to_le_bytes())?;
        self.write(&crc.to_le_bytes())?;
        let Writer {
            files,
            out,
            mut tmp,
            dest,
            ..
        } = self;
        let err = path_err(&tmp.path);
        let size = out.finish().and_then(|f| f.metadata()).map_err(&err)?.len();
        // Opened before the rename: this handle reads the file committed here, whatever is
        // renamed over its name later.
        let file = File::open(&tmp.path).map_err(&err)?;
        files.put(&tmp.path, &dest)?;
        tmp.kept = true;
        Ok((files.complete(file, dest), size))
    }
}

/// Why a snapshot file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// There is no such file.
    Missing,
    Bad(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => f.write_str("no such snapshot file"),
            ReadError::Bad(e) => f.write_str(e),
        }
    }
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> String {
        e.to_string()
    }
}

/// A snapshot's last log id, for messages.
pub fn show_log_id(meta: &Meta) -> String {
    meta.last_log_id
        .as_ref()
        .map_or("-".to_string(), |l| l.to_string())
}

/// Reads the header of a snapshot file; `path` names it in errors. Also the header's length.
fn read_header(input: &mut impl Read, path: &Path) -> Result<(Meta, u64), ReadError> {
    let bad = |what: &str| ReadError::Bad(format!("{}: {what}", path.display()));
    let mut head = [0u8; 12];
    if let Err(e) = input.read_exact(&mut head) {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad("not a tallykv slot-group snapshot"),
            _ => bad(&e.to_string()),
        });
    }
    match &head[..8] {
        m if m == MAGIC => {}
        m if MAGIC_OLD.iter().any(|o| m == *o) => {
            return Err(bad(
                "a snapshot of the 0.9-based cluster (bincode, format 1/2): this build reads \
                 format 3; empty this node's dir to have it catch up from the other nodes",
            ));
        }
        _ => return Err(bad("not a tallykv slot-group snapshot")),
    }
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_META_BYTES {
        return Err(bad(&format!("snapshot meta of {len} bytes")));
    }
    let mut meta = vec![0u8; len];
    input.read_exact(&mut meta).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad("truncated snapshot header"),
        _ => bad(&e.to_string()),
    })?;
    let meta = wire::decode(&meta, "snapshot meta").map_err(|e| bad(&e.0))?;
    Ok((meta, 12 + len as u64))
}

/// Reads a snapshot file record by record, through a buffer.
pub struct Reader {
    /// The plaintext (opened as it is read, when the file is sealed).
    input: BufReader<Box<dyn Read + Send>>,
    path: PathBuf,
    meta: Meta,
    /// Where the next record starts (for error messages).
    offset: u64,
    /// The end marker was read and checked: no record follows.
    ended: bool,
    records: u64,
    /// Of the records' bytes so far.
    crc: crc::Digest<'static, u32>,
}

impl Reader {
    /// Opens the snapshot file at `path` and reads its header; a sealed file opens with
    /// `at_rest` (see [`SnapshotFiles::reader`]).
    fn open(path: &Path, at_rest: Option<&Arc<AtRest>>) -> Result<Reader, ReadError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
            Err(e) => return Err(ReadError::Bad(format!("{}: {e}", path.display()))),
        };
        let plain = plaintext(file, path, at_rest)?;
        let mut input = BufReader::with_capacity(IO_BUFFER, plain.read);
        let (meta, offset) = read_header(&mut input, path)?;
        Ok(Reader {
            input,
            path: path.to_path_buf(),
            meta,
            offset,
            ended: false,
            records: 0,
            crc: CRC32C.digest(),
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    fn bad(&self, what: impl std::fmt::Display) -> String {
        format!(
            "{}: {what} (record at byte {})",
            self.path.display(),
            self.offset
        )
    }

    /// Whether another record follows (false at the end of the file).
    fn more(&mut self) -> Result<bool, String> {
        match self.input.fill_buf() {
            Ok(buf) => Ok(!buf.is_empty()),
            Err(e) => Err(self.bad(e)),
        }
    }

    /// Reads exactly `buf.len()` bytes; `what` names them if the file ends first.
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), String> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.bad(format!("truncated snapshot {what}")),
            _ => self.bad(e),
        })
    }

    /// Reads a record's length field (into the checksum).
    fn length(&mut self) -> Result<u32, String> {
        let mut len = [0u8; 4];
        self.exact(&mut len, "record")?;
        self.crc.update(&len);
        Ok(u32::from_le_bytes(len))
    }

    /// Reads `len` bytes of a record into `out` (or skips them, for None), into the
    /// checksum.
    fn body(&mut self, len: u32, out: Option<&mut Vec<u8>>) -> Result<(), String> {
        let len = len as usize;
        match out {
            Some(out) => {
                out.reserve(len.min(MAX_RESERVE));
                let start = out.len();
                let got = (&mut self.input)
                    .take(len as u64)
                    .read_to_end(out)
                    .map_err(|e| self.bad(e))?;
                if got != len {
                    return Err(self.bad("truncated snapshot record"));
                }
                self.crc.update(&out[start..]);
            }
            None => {
                let mut scratch = [0u8; 16 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(scratch.len());
                    self.exact(&mut scratch[..n], "record")?;
                    self.crc.update(&scratch[..n]);
                    left -= n;
                }
            }
        }
        Ok(())
    }

    /// Reads the next record into `out` (or skips it); false after the last one, once the
    /// end marker (if the format has one) matched what was read.
    fn record(&mut self, out: Option<(&mut Vec<u8>, &mut Vec<u8>)>) -> Result<bool, String> {
        if self.ended {
            return Ok(false);
        }
        if !self.more()? {
            return Err(self.bad("truncated snapshot: no end marker"));
        }
        let mut len = [0u8; 4];
        self.exact(&mut len, "record")?;
        let key_len = u32::from_le_bytes(len);
        if key_len == END_MARK {
            return self.end().map(|()| false);
        }
        self.crc.update(&len);
        let (key, value) = match out {
            Some((k, v)) => (Some(k), Some(v)),
            None => (None, None),
        };
        self.body(key_len, key)?;
        let value_len = self.length()?;
        self.body(value_len, value)?;
        self.offset += 8 + key_len as u64 + value_len as u64;
        self.records += 1;
        Ok(true)
    }

    /// Checks the end marker against what was read, and that nothing follows it.
    fn end(&mut self) -> Result<(), String> {
        let mut tail = [0u8; 12];
        self.exact(&mut tail, "end marker")?;
        let count = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(tail[8..].try_into().expect("4 bytes"));
        if count != self.records {
            return Err(self.bad(format!(
                "snapshot ends after {} records, its end marker says {count}",
                self.records
            )));
        }
        let read = std::mem::replace(&mut self.crc, CRC32C.digest()).finalize();
        if crc != read {
            return Err(self.bad("snapshot records do not match their checksum"));
        }
        if self.more()? {
            return Err(self.bad("data after the snapshot's end marker"));
        }
        self.ended = true;
        Ok(())
    }

    /// The next record (stored key, stored value), or None after the last.
    pub fn next_record(&mut self) -> Result<Option<Record>, String> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        Ok(self
            .record(Some((&mut key, &mut value)))?
            .then_some((key, value)))
    }

    /// Steps over the next record; false after the last.
    pub fn skip_record(&mut self) -> Result<bool, String> {
        self.record(None)
    }

    /// The next records, at most `max_records` and, past the first, `max_bytes` of keys and
    /// values; empty at the end of the file.
    pub fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<KeyValues, String> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < max_records && (batch.is_empty() || bytes < max_bytes) {
            let Some((k, v)) = self.next_record()? else {
                break;
            };
            bytes += k.len() + v.len();
            batch.push((k, v));
        }
        Ok(batch)
    }
}

/// A group's snapshot data for openraft: a complete snapshot file, whose plaintext is read in
/// chunks when it is sent, or one being received, whose plaintext is appended in chunks (see
/// `net`). Either way callers see the plaintext only: what is sealed on this node's disk is
/// opened as it is read and sealed as it is written here.
pub struct SnapshotFile {
    path: PathBuf,
    at_rest: Option<Arc<AtRest>>,
    /// A complete snapshot's file, open: what is sent is the file this handle was opened on,
    /// whatever is renamed over its name later (a newer snapshot, a re-seal).
    complete: Option<File>,
    /// Set while a snapshot is being received into this file: dropped before it is
    /// installed (the transfer failed, or a newer one came), the file is deleted — and a
    /// sealed one never had its last chunk, so it would not read as a shorter snapshot anyway.
    receiving: Option<Sink>,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("path", &self.path)
            .field("sealed", &self.at_rest.is_some())
            .field("receiving", &self.receiving.is_some())
            .finish()
    }
}

impl SnapshotFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot's plaintext from its start (the format in the module doc), to be sent:
    /// each call reads on its own, from a position of its own.
    pub fn plaintext(&self) -> Result<Box<dyn Read + Send>, String> {
        let file = self.complete.as_ref().ok_or_else(|| {
            format!(
                "{}: a snapshot still being received is not read",
                self.path.display()
            )
        })?;
        let file = file.try_clone().map_err(path_err(&self.path))?;
        Ok(plaintext(file, &self.path, self.at_rest.as_ref())?.read)
    }

    /// Appends the next chunk of a snapshot being received (chunks come in order from its
    /// start).
    pub fn append(&mut self, data: &[u8]) -> Result<(), String> {
        let sink = self
            .receiving
            .as_mut()
            .ok_or_else(|| format!("{}: not a snapshot being received", self.path.display()))?;
        sink.write_all(data).map_err(path_err(&self.path))
    }

    /// Ends receiving: writes what is buffered (a sealed file's last chunk), syncs the file
    /// and returns where it lies, now the caller's to move or delete.
    pub fn finish_receiving(mut self) -> Result<PathBuf, String> {
        let sink = self
            .receiving
            .take()
            .ok_or("this snapshot file was not received")?;
        if let Err(e) = sink.finish() {
            let _ = std::fs::remove_file(&self.path);
            return Err(format!("{}: {e}", self.path.display()));
        }
        Ok(self.path.clone())
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some(sink) = self.receiving.take() {
            drop(sink);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::{LeaderId, LogId};

    fn meta(index: u64) -> Meta {
        Meta {
            last_log_id: Some(LogId::new(
                LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            )),
            last_membership: Default::default(),
        }
    }

    fn read_all(files: &SnapshotFiles, path: &Path) -> Result<KeyValues, String> {
        let mut r = files.reader(path)?;
        let mut out = Vec::new();
        while let Some(kv) = r.next_record()? {
            out.push(kv);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path(), None);
        assert!(files.load(3).unwrap().is_none());
        let mut w = files.create(3, &meta(1)).unwrap();
        w.push(b"k1", b"v1").unwrap();
        w.push(b"k2", b"").unwrap();
        let (_, size) = w.commit().unwrap();
        let path = files.path(3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        let want = vec![(b"k1".to_vec(), b"v1".to_vec()), (b"k2".to_vec(), vec![])];
        assert_eq!(read_all(&files, &path).unwrap(), want);
        let (m, _) = files.load(3).unwrap().unwrap();
        assert_eq!(m, meta(1));
        // Nothing partial is left behind.
        let names: Vec<_> = std::fs::read_dir(&files.dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);

        let bytes = std::fs::read(&path).unwrap();
        let damaged = dir.path().join("damaged.snap");
        // The end marker: 4 + 8 + 4 bytes; the last record: 4 + 2 + 4 + 0.
        for (cut, why) in [
            (1, "truncated snapshot end marker"),
            (7, "truncated snapshot end marker"),
            (17, "truncated snapshot record"),
            (19, "truncated snapshot record"),
            // Cut at a record boundary: it reads as complete records, and is still refused.
            (16, "truncated snapshot: no end marker"),
            (26, "truncated snapshot: no end marker"),
        ] {
            std::fs::write(&damaged, &bytes[..bytes.len() - cut]).unwrap();
            let e = read_all(&files, &damaged).unwrap_err();
            assert!(e.contains("damaged.snap"), "{e}");
            assert!(e.contains(why), "cut {cut}: {e}");
        }
        // A flipped bit in a value, a wrong count, bytes after the end.
        let value_at = bytes.len() - 16 - 10 - 2;
        let mut flipped = bytes.clone();
        flipped[value_at] ^= 1;
        std::fs::write(&damaged, &flipped).unwrap();
        let e = read_all(&files, &damaged).unwrap_err();
        assert!(e.contains("do not match their checksum"), "{e}");
        let mut counted = bytes.clone();
        let count_at = bytes.len() - 12;
        counted[count_at] = 3;
        std::fs::write(&damaged, &counted).unwrap();
        let e = read_all(&files, &damaged).unwrap_err();
        assert!(
            e.contains("ends after 2 records, its end marker says 3"),
            "{e}"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&damaged, &longer).unwrap();
        let e = read_all(&files, &damaged).unwrap_err();
        assert!(e.contains("data after the snapshot's end marker"), "{e}");
        // A snapshot of the 0.9-based cluster is refused by name.
        let mut v2 = bytes.clone();
        v2[..8].copy_from_slice(b"TKVRSNP2");
        std::fs::write(&damaged, &v2).unwrap();
        let e = read_all(&files, &damaged).unwrap_err();
        assert!(e.contains("0.9-based cluster"), "{e}");
        std::fs::write(&damaged, &bytes[..14]).unwrap();
        let e = read_all(&files, &damaged).unwrap_err();
        assert!(e.contains("damaged.snap: truncated snapshot header"), "{e}");
        std::fs::write(&damaged, b"garbage").unwrap();
        let e = read_all(&files, &damaged).unwrap_err();
        assert!(
            e.contains("damaged.snap: not a tallykv slot-group snapshot"),
            "{e}"
        );
        // A valid header whose record lengths are garbage: no huge allocation, an error.
        let mut junk = bytes[..bytes.len() - 18].to_vec();
        junk.extend_from_slice(&[0xff; 40]);
        std::fs::write(&damaged, &junk).unwrap();
        assert!(
            read_all(&files, &damaged)
                .unwrap_err()
                .contains("truncated")
        );
        assert!(matches!(
            files.reader(&dir.path().join("none")),
            Err(ReadError::Missing)
        ));
    }

    #[test]
    fn batches_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path(), None);
        let mut w = files.create(1, &meta(2)).unwrap();
        for i in 0..25u32 {
            w.push(&i.to_be_bytes(), &[7u8; 100]).unwrap();
        }
        w.commit().unwrap();
        let mut r = files.reader(&files.path(1)).unwrap();
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let b = r.next_batch(10, 350).unwrap();
            (!b.is_empty()).then_some(b.len())
        })
        .collect();
        // 104 bytes a record: the batch closes once 350 bytes are reached.
        assert_eq!(sizes, vec![4, 4, 4, 4, 4, 4, 1]);
        let mut r = files.reader(&files.path(1)).unwrap();
        assert_eq!(r.next_batch(3, usize::MAX).unwrap().len(), 3);
        // A record larger than the byte bound still makes a batch of one.
        assert_eq!(r.next_batch(10, 1).unwrap().len(), 1);
    }

    #[test]
    fn received_files_are_staged_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path(), None);
        let mut w = files.create(2, &meta(3)).unwrap();
        w.push(b"a", b"1").unwrap();
        w.commit().unwrap();
        let sent = std::fs::read(files.path(2)).unwrap();
        // Received in two chunks.
        let mut f = files.receive(2).unwrap();
        f.append(&sent[..5]).unwrap();
        f.append(&sent[5..]).unwrap();
        let path = f.finish_receiving().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), sent);
        assert!(files.staged(2).unwrap().is_none());
        assert!(!files.is_staged(2));
        assert_eq!(files.stage(2, &path, &meta(3)).unwrap(), 1);
        assert!(!path.exists());
        assert_eq!(files.staged(2).unwrap().unwrap(), meta(3));
        assert!(files.is_staged(2) && !files.is_staged(3));
        // A restart finds the staged install (and finishes it before serving).
        assert!(SnapshotFiles::new(dir.path(), None).is_staged(2));
        files.commit_staged(2).unwrap();
        assert!(files.staged(2).unwrap().is_none());
        assert!(!files.is_staged(2));

        // Another snapshot's file is refused and deleted.
        let mut f = files.receive(2).unwrap();
        f.append(&sent).unwrap();
        let path = f.finish_receiving().unwrap();
        let e = files.stage(2, &path, &meta(4)).unwrap_err();
        assert!(e.contains("not the one at log"), "{e}");
        assert!(!path.exists());

        // A truncated one too.
        let mut f = files.receive(2).unwrap();
        f.append(&sent[..sent.len() - 1]).unwrap();
        let path = f.finish_receiving().unwrap();
        let e = files.stage(2, &path, &meta(3)).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(!path.exists());

        // A receive given up is deleted; the current snapshot reads back in full.
        let f = files.receive(2).unwrap();
        drop(f);
        let (m, f) = files.load(2).unwrap().unwrap();
        assert_eq!(m, meta(3));
        let mut back = Vec::new();
        f.plaintext().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, sent);
        let names: Vec<String> = std::fs::read_dir(&files.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["g2.snap".to_string()]);
    }

    #[test]
    fn partial_files_are_deleted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path(), None);
        let keep = files.create(4, &meta(5)).unwrap();
        keep.commit().unwrap();
        let recv = files.partial_path(4, "recv").unwrap();
        let tmp = files.partial_path(4, "tmp").unwrap();
        std::fs::write(&recv, b"half").unwrap();
        std::fs::write(&tmp, b"half").unwrap();
        std::fs::write(
            files.installing_path(4),
            std::fs::read(files.path(4)).unwrap(),
        )
        .unwrap();
        let files = SnapshotFiles::new(dir.path(), None);
        assert!(!recv.exists() && !tmp.exists());
        assert!(files.path(4).exists());
        assert_eq!(files.staged(4).unwrap().unwrap(), meta(5));
        files.remove(4).unwrap();
        assert!(files.staged(4).unwrap().is_none() && files.load(4).unwrap().is_none());
    }

    /// The node keys from a new key file under `dir` holding `ids` (the last active), and
    /// the file's path.
    fn keys(dir: &Path, ids: &[&str]) -> (PathBuf, Arc<AtRest>) {
        let path = crate::storage::at_rest::tests::key_file(dir, "keys", ids);
        let at_rest = Arc::new(AtRest::load(&path).unwrap());
        (path, at_rest)
    }

    /// Adds key `id` to the key file at `path`, active, and reloads `at_rest` from it.
    fn rotate(path: &Path, at_rest: &AtRest, id: &str) {
        let mut ring = card::keyring::Keyring::from_file(path).unwrap();
        ring.rotate(Some(card::keyring::KeyId::new(id).unwrap()))
            .unwrap();
        ring.replace_file(path).unwrap();
        at_rest.reload(path).unwrap();
    }

    /// A value no sealed file may show.
    const SECRET: &[u8] = b"4111111111111111-not-on-disk";

    fn shows(bytes: &[u8], what: &[u8]) -> bool {
        bytes.windows(what.len()).any(|w| w == what)
    }

    /// Records over a megabyte (more than one sealed chunk, more than the write buffer), one
    /// of them the secret.
    fn records() -> KeyValues {
        let mut out: KeyValues = (0..300u32)
            .map(|i| (format!("key{i}").into_bytes(), vec![(i % 251) as u8; 4000]))
            .collect();
        out.insert(150, (b"card".to_vec(), SECRET.to_vec()));
        out
    }

    fn build(files: &SnapshotFiles, g: GroupId, index: u64, records: &KeyValues) -> SnapshotFile {
        let mut w = files.create(g, &meta(index)).unwrap();
        for (k, v) in records {
            w.push(k, v).unwrap();
        }
        w.commit().unwrap().0
    }

    fn plaintext_of(file: &SnapshotFile) -> Vec<u8> {
        let mut out = Vec::new();
        file.plaintext().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    /// Receives `plain` into `files` in chunks of `chunk` bytes, as `net` does.
    fn receive_all(files: &SnapshotFiles, g: GroupId, plain: &[u8], chunk: usize) -> PathBuf {
        let mut f = files.receive(g).unwrap();
        for piece in plain.chunks(chunk) {
            f.append(piece).unwrap();
        }
        f.finish_receiving().unwrap()
    }

    #[test]
    fn sealed_files_round_trip_and_hide_values() {
        let key_dir = tempfile::tempdir().unwrap();
        let (_, at_rest) = keys(key_dir.path(), &["k1"]);
        let want = records();
        let mut sent = Vec::new();
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let files = SnapshotFiles::new(dir.path(), sealed.then(|| at_rest.clone()));
            let mut w = files.create(1, &meta(7)).unwrap();
            for (k, v) in &want {
                w.push(k, v).unwrap();
            }
            let (committed, size) = w.commit().unwrap();
            let path = files.path(1);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() as u64, size);
            // Off, the value is in the file (so this test can fail); on, it is not.
            assert_eq!(shows(&bytes, SECRET), !sealed, "sealed: {sealed}");
            assert_eq!(bytes.starts_with(MAGIC), !sealed);
            assert_eq!(
                AtRest::file_key_id(&path).unwrap().as_deref(),
                sealed.then_some("k1")
            );
            assert_eq!(read_all(&files, &path).unwrap(), want);
            let (m, loaded) = files.load(1).unwrap().unwrap();
            assert_eq!(m, meta(7));
            // What is sent is the plaintext, whichever way the file is stored.
            let plain = plaintext_of(&loaded);
            assert!(plain.starts_with(MAGIC) && shows(&plain, SECRET));
            assert_eq!(plaintext_of(&committed), plain);
            if !sealed {
                assert_eq!(plain, bytes);
            }
            sent.push(plain);
            let names: Vec<_> = std::fs::read_dir(&files.dir).unwrap().flatten().collect();
            assert_eq!(names.len(), 1);
        }
        assert_eq!(sent[0], sent[1]);
    }

    #[test]
    fn sealed_files_without_the_key_file_are_refused_by_name() {
        let key_dir = tempfile::tempdir().unwrap();
        let (_, at_rest) = keys(key_dir.path(), &["k1"]);
        let dir = tempfile::tempdir().unwrap();
        let sealed = SnapshotFiles::new(dir.path(), Some(at_rest));
        let file = build(&sealed, 1, 3, &records());
        let received = receive_all(&sealed, 2, &plaintext_of(&file), 1 << 20);
        sealed.stage(2, &received, &meta(3)).unwrap();
        // The same dir on a node started without encryption-at-rest-key-file.
        let plain = SnapshotFiles::new(dir.path(), None);
        for e in [
            plain.load(1).unwrap_err(),
            plain.staged(2).unwrap_err(),
            read_all(&plain, &plain.path(1)).unwrap_err(),
        ] {
            assert!(
                e.contains(
                    "snapshot encrypted at rest, and encryption-at-rest-key-file is not set"
                ),
                "{e}"
            );
            assert!(
                e.contains("key id 'k1'") && e.contains("raft-snapshots/g"),
                "{e}"
            );
        }
        // Under another key file, the key is unknown.
        let other_dir = tempfile::tempdir().unwrap();
        let (_, other) = keys(other_dir.path(), &["k9"]);
        let e = SnapshotFiles::new(dir.path(), Some(other))
            .load(1)
            .unwrap_err();
        assert!(
            e.contains("key id 'k1'") && e.contains("does not hold"),
            "{e}"
        );
    }

    #[test]
    fn plaintext_files_still_read_with_at_rest() {
        let key_dir = tempfile::tempdir().unwrap();
        let (_, at_rest) = keys(key_dir.path(), &["k1"]);
        let dir = tempfile::tempdir().unwrap();
        let want = records();
        let before = SnapshotFiles::new(dir.path(), None);
        build(&before, 1, 4, &want);
        let bytes = std::fs::read(before.path(1)).unwrap();
        // Encryption at rest turned on: the file from before reads as it did.
        let files = SnapshotFiles::new(dir.path(), Some(at_rest));
        assert_eq!(read_all(&files, &files.path(1)).unwrap(), want);
        let (m, loaded) = files.load(1).unwrap().unwrap();
        assert_eq!(m, meta(4));
        assert_eq!(plaintext_of(&loaded), bytes);
        assert_eq!(AtRest::file_key_id(&files.path(1)).unwrap(), None);
        // The next snapshot is sealed.
        build(&files, 1, 5, &want);
        assert_eq!(
            AtRest::file_key_id(&files.path(1)).unwrap().as_deref(),
            Some("k1")
        );
        assert_eq!(files.load(1).unwrap().unwrap().0, meta(5));
    }

    #[test]
    fn reseal_moves_every_file_to_the_active_key() {
        let key_dir = tempfile::tempdir().unwrap();
        let (key_file, at_rest) = keys(key_dir.path(), &["k1"]);
        let dir = tempfile::tempdir().unwrap();
        let want = records();
        let other: KeyValues = vec![(b"a".to_vec(), b"1".to_vec())];
        // g1 from before encryption was on; g2 under k1; g3 staged under k1.
        build(&SnapshotFiles::new(dir.path(), None), 1, 1, &other);
        let files = SnapshotFiles::new(dir.path(), Some(at_rest.clone()));
        assert_eq!(at_rest.parts_behind(), [RESEAL_PART]);
        let file = build(&files, 2, 2, &want);
        let received = receive_all(&files, 3, &plaintext_of(&file), 10_000);
        files.stage(3, &received, &meta(2)).unwrap();
        // A snapshot begun under k1 is still being built when the key rotates, and a receive
        // begun under k1 is stuck (its sender gave up).
        let mut pending = files.create(4, &meta(4)).unwrap();
        pending.push(b"b", SECRET).unwrap();
        let mut stuck = files.receive(6).unwrap();
        stuck.append(b"TKVRSNP3").unwrap();
        rotate(&key_file, &at_rest, "k2");
        assert_eq!(at_rest.parts_behind(), [RESEAL_PART]);
        let key = |path: PathBuf| AtRest::file_key_id(&path).unwrap();
        // The pass re-seals what is complete, and is not done while that one is pending.
        assert!(!reseal_part(&files, &at_rest).unwrap());
        assert_eq!(at_rest.parts_behind(), [RESEAL_PART]);
        for path in [files.path(1), files.path(2), files.installing_path(3)] {
            assert_eq!(key(path).as_deref(), Some("k2"));
        }
        pending.commit().unwrap();
        assert_eq!(key(files.path(4)).as_deref(), Some("k1"));
        // The stuck receive holds the pass back until it has not moved for a while.
        assert!(!reseal_part(&files, &at_rest).unwrap());
        let long_ago = std::time::SystemTime::now() - 2 * PARTIAL_STALLED;
        File::options()
            .write(true)
            .open(stuck.path())
            .and_then(|f| f.set_modified(long_ago))
            .unwrap();
        assert!(reseal_part(&files, &at_rest).unwrap());
        drop(stuck);
        assert!(at_rest.parts_behind().is_empty());
        for path in [
            files.path(1),
            files.path(2),
            files.installing_path(3),
            files.path(4),
        ] {
            assert_eq!(key(path).as_deref(), Some("k2"));
        }
        assert_eq!(files.reseal(&at_rest).unwrap(), 0);
        // Every file still reads back the same.
        assert_eq!(read_all(&files, &files.path(1)).unwrap(), other);
        assert_eq!(read_all(&files, &files.path(2)).unwrap(), want);
        assert_eq!(read_all(&files, &files.installing_path(3)).unwrap(), want);
        assert_eq!(files.staged(3).unwrap().unwrap(), meta(2));
        assert_eq!(
            read_all(&files, &files.path(4)).unwrap(),
            vec![(b"b".to_vec(), SECRET.to_vec())]
        );
        let mut names: Vec<String> = std::fs::read_dir(&files.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["g1.snap", "g2.snap", "g3.installing", "g4.snap"]);
    }

    #[test]
    fn reseal_never_puts_a_stale_copy_over_a_newer_file() {
        let key_dir = tempfile::tempdir().unwrap();
        let (key_file, at_rest) = keys(key_dir.path(), &["k1"]);
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path(), Some(at_rest.clone()));
        let old: KeyValues = vec![(b"old".to_vec(), b"1".to_vec())];
        let new: KeyValues = vec![(b"new".to_vec(), b"2".to_vec())];
        build(&files, 1, 1, &old);
        rotate(&key_file, &at_rest, "k2");
        let path = files.path(1);
        let Copied::Copy { source, copy } = files.sealed_copy(1, &path, &at_rest).unwrap() else {
            panic!("g1.snap is under k1");
        };
        let copy_path = copy.path.clone();
        assert!(copy_path.exists());
        // Meanwhile a newer snapshot takes the name: the copy of the old one is dropped.
        build(&files, 1, 2, &new);
        assert!(!files.replace_if_same(&path, &source, copy).unwrap());
        assert!(!copy_path.exists());
        assert_eq!(files.load(1).unwrap().unwrap().0, meta(2));
        assert_eq!(read_all(&files, &path).unwrap(), new);
        // Removed meanwhile: the name stays free.
        build(&SnapshotFiles::new(dir.path(), None), 5, 1, &old);
        let Copied::Copy { source, copy } = files.sealed_copy(5, &files.path(5), &at_rest).unwrap()
        else {
            panic!("g5.snap is plaintext");
        };
        files.remove(5).unwrap();
        assert!(
            !files
                .replace_if_same(&files.path(5), &source, copy)
                .unwrap()
        );
        assert!(files.load(5).unwrap().is_none());
        assert!(matches!(
            files.sealed_copy(5, &files.path(5), &at_rest),
            Ok(Copied::Missing)
        ));
        // Unchanged, it is replaced.
        build(&SnapshotFiles::new(dir.path(), None), 5, 1, &old);
        let Copied::Copy { source, copy } = files.sealed_copy(5, &files.path(5), &at_rest).unwrap()
        else {
            panic!("g5.snap is plaintext");
        };
        assert!(
            files
                .replace_if_same(&files.path(5), &source, copy)
                .unwrap()
        );
        assert_eq!(
            AtRest::file_key_id(&files.path(5)).unwrap().as_deref(),
            Some("k2")
        );
        assert_eq!(read_all(&files, &files.path(5)).unwrap(), old);
    }

    #[test]
    fn received_snapshots_are_sealed_chunk_by_chunk() {
        // Sender and receiver each seal under keys of their own; the bus carries plaintext.
        let (sender_keys, receiver_keys) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (_, sender_at_rest) = keys(sender_keys.path(), &["s1"]);
        let (_, receiver_at_rest) = keys(receiver_keys.path(), &["r1"]);
        let (sender_dir, receiver_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sender = SnapshotFiles::new(sender_dir.path(), Some(sender_at_rest));
        let receiver = SnapshotFiles::new(receiver_dir.path(), Some(receiver_at_rest));
        let want = records();
        build(&sender, 1, 6, &want);
        let (m, file) = sender.load(1).unwrap().unwrap();
        let plain = plaintext_of(&file);
        // Odd chunk sizes cross the sealed chunks' boundaries.
        let received = receive_all(&receiver, 1, &plain, 70_001);
        let bytes = std::fs::read(&received).unwrap();
        assert!(!shows(&bytes, SECRET));
        assert_eq!(
            AtRest::file_key_id(&received).unwrap().as_deref(),
            Some("r1")
        );
        assert_eq!(receiver.stage(1, &received, &m).unwrap(), want.len() as u64);
        assert_eq!(
            read_all(&receiver, &receiver.installing_path(1)).unwrap(),
            want
        );
        receiver.commit_staged(1).unwrap();
        let (_, installed) = receiver.load(1).unwrap().unwrap();
        assert_eq!(plaintext_of(&installed), plain);

        // A transfer cut at a record boundary and finished anyway is whole as a sealed file,
        // and still no snapshot: the end marker is missing.
        let received = receive_all(&receiver, 1, &plain[..plain.len() - 16], 70_001);
        let e = receiver.stage(1, &received, &m).unwrap_err();
        assert!(e.contains("no end marker"), "{e}");
        assert!(!received.exists());
        // One given up midway: deleted; a copy of what reached the disk does not open (its
        // last chunk was never written).
        let mut f = receiver.receive(1).unwrap();
        // More than the write buffer, so part of it is on disk.
        f.append(&plain[..plain.len() - 16]).unwrap();
        let partial = f.path().to_path_buf();
        let cut = receiver_dir.path().join("cut.snap");
        std::fs::copy(&partial, &cut).unwrap();
        drop(f);
        assert!(!partial.exists());
        let e = read_all(&receiver, &cut).unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        // The current snapshot is untouched.
        assert_eq!(read_all(&receiver, &receiver.path(1)).unwrap(), want);
    }
}
