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
//! A snapshot never sits in memory whole: it is written record by record while the fjall
//! view is read ([`Writer`]), sent and received in chunks straight from and to a file
//! ([`SnapshotFile`], see `net`), and read back record by record ([`Reader`]) to be installed
//! in bounded batches. Files under `<dir>/raft-snapshots`:
//!
//! ```text
//! g{g}.snap            group g's current snapshot (what a lagging replica is sent)
//! g{g}.installing      a received snapshot being installed; found at start, the install was
//!                      cut short and is finished from it (see `sm`)
//! g{g}-{ms}-{n}.tmp    a snapshot being built       } partial: deleted when dropped and
//! g{g}-{ms}-{n}.recv   a snapshot being received    } at the next start
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::types::{GroupId, TypeConfig};
use super::wire;
use crate::storage::KeyValues;

const MAGIC: &[u8; 8] = b"TKVRSNP3";
/// The formats of the 0.9-based cluster (bincode meta): refused by name.
const MAGIC_OLD: [&[u8; 8]; 2] = [b"TKVRSNP1", b"TKVRSNP2"];
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

pub type Meta = openraft10::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// One record: a stored key and its stored value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Snapshot files of this node's groups, under `<dir>/raft-snapshots`.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// The groups with a staged (`.installing`) snapshot: their keys here are being replaced
    /// and are not a state to serve (READONLY reads go to the leader meanwhile).
    staged: std::sync::Mutex<std::collections::BTreeSet<GroupId>>,
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
    /// The snapshot files under `data_dir`. Deletes what a previous run left half built or half
    /// received (never a `.installing` file: that one is finished at start).
    pub fn new(data_dir: &Path) -> SnapshotFiles {
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
        SnapshotFiles {
            dir,
            staged_count: AtomicU64::new(staged.len() as u64),
            staged: std::sync::Mutex::new(staged),
            next: AtomicU64::new(0),
        }
    }

    /// Whether group `g` has a staged snapshot: its install has not finished (or a crash cut
    /// it short and it is finished at start), so this node's copy of the group is partial.
    pub fn is_staged(&self, g: GroupId) -> bool {
        self.staged_count.load(Relaxed) > 0 && self.staged_set().contains(&g)
    }

    fn staged_set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<GroupId>> {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Starts building group `g`'s snapshot: a new file with `meta`'s header, which
    /// [`Writer::commit`] makes the group's snapshot.
    pub fn create(&self, g: GroupId, meta: &Meta) -> Result<Writer, String> {
        let tmp = self.partial_path(g, "tmp")?;
        let file = File::create_new(&tmp).map_err(path_err(&tmp))?;
        let mut w = Writer {
            out: BufWriter::with_capacity(1024 * 1024, file),
            dest: self.path(g),
            dir: self.dir.clone(),
            tmp,
            bytes: 0,
            records: 0,
            crc: CRC32C.digest(),
            done: false,
        };
        let meta = wire::encode(meta);
        w.write(MAGIC)?;
        w.write(&(meta.len() as u32).to_le_bytes())?;
        w.write(&meta)?;
        Ok(w)
    }

    /// A new, empty file to receive a snapshot of group `g` into (deleted if dropped before
    /// it is installed).
    pub fn receive(&self, g: GroupId) -> Result<SnapshotFile, String> {
        let path = self.partial_path(g, "recv")?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(path_err(&path))?;
        Ok(SnapshotFile {
            file,
            path: path.clone(),
            receiving: Some(path),
        })
    }

    /// Checks a received snapshot of group `g` whole (its header says `meta`, every record
    /// is complete) and moves it to [`installing_path`](Self::installing_path), durably: from
    /// then on a restart finishes installing it. A file that fails the check is deleted.
    /// Blocks (reads the file).
    pub fn stage(&self, g: GroupId, received: &Path, meta: &Meta) -> Result<u64, String> {
        let checked = (|| {
            let mut r = Reader::open(received)?;
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
        match Reader::open(&self.installing_path(g)) {
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
        std::fs::rename(from, to).map_err(path_err(to))?;
        sync_dir(&self.dir)
    }

    /// Deletes group `g`'s snapshot and any install of one (this node no longer replicates
    /// the group).
    pub fn remove(&self, g: GroupId) -> Result<(), String> {
        for path in [self.path(g), self.installing_path(g)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        self.set_staged(g, false);
        Ok(())
    }

    /// Group `g`'s snapshot, if any: its meta and the file.
    pub fn load(&self, g: GroupId) -> Result<Option<(Meta, SnapshotFile)>, String> {
        let path = self.path(g);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let (meta, _) = read_header(&mut file, &path).map_err(|e| e.to_string())?;
        Ok(Some((meta, SnapshotFile::open(file, path))))
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(path_err(dir))
}

/// A snapshot being built: records are appended as they are read, through a buffer.
pub struct Writer {
    out: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    bytes: u64,
    records: u64,
    /// Of the records' bytes so far.
    crc: crc::Digest<'static, u32>,
    done: bool,
}

impl Writer {
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(path_err(&self.tmp))
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
                self.tmp.display()
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
    /// returns it open for reading, and its size.
    pub fn commit(mut self) -> Result<(SnapshotFile, u64), String> {
        let crc = std::mem::replace(&mut self.crc, CRC32C.digest()).finalize();
        self.write(&END_MARK.to_le_bytes())?;
        self.write(&self.records.to_le_bytes())?;
        self.write(&crc.to_le_bytes())?;
        let err = path_err(&self.tmp);
        self.out.flush().map_err(&err)?;
        self.out.get_ref().sync_data().map_err(&err)?;
        std::fs::rename(&self.tmp, &self.dest).map_err(path_err(&self.dest))?;
        self.done = true;
        sync_dir(&self.dir)?;
        let file = File::open(&self.dest).map_err(path_err(&self.dest))?;
        Ok((SnapshotFile::open(file, self.dest.clone()), self.bytes))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
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
    input: BufReader<File>,
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
    /// Opens the snapshot file at `path` and reads its header.
    pub fn open(path: &Path) -> Result<Reader, ReadError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
            Err(e) => return Err(ReadError::Bad(format!("{}: {e}", path.display()))),
        };
        let mut input = BufReader::with_capacity(1024 * 1024, file);
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

/// A group's snapshot data for openraft: a snapshot file, read in chunks when it is sent and
/// written in chunks when one is received (see `net`).
#[derive(Debug)]
pub struct SnapshotFile {
    pub file: File,
    pub path: PathBuf,
    /// Set while a snapshot is being received into this file: dropped before it is
    /// installed (the transfer failed, or a newer one came), the file is deleted.
    receiving: Option<PathBuf>,
}

impl SnapshotFile {
    /// A complete snapshot file, open for reading.
    pub fn open(file: File, path: PathBuf) -> SnapshotFile {
        SnapshotFile {
            file,
            path,
            receiving: None,
        }
    }

    /// Ends receiving: syncs the file and returns where it lies, now the caller's to move or
    /// delete.
    pub fn finish_receiving(mut self) -> Result<PathBuf, String> {
        let path = self
            .receiving
            .take()
            .ok_or("this snapshot file was not received")?;
        if let Err(e) = self.file.sync_data() {
            let _ = std::fs::remove_file(&path);
            return Err(format!("{}: {e}", path.display()));
        }
        Ok(path)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some(path) = self.receiving.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};

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

    fn read_all(path: &Path) -> Result<KeyValues, String> {
        let mut r = Reader::open(path)?;
        let mut out = Vec::new();
        while let Some(kv) = r.next_record()? {
            out.push(kv);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        assert!(files.load(3).unwrap().is_none());
        let mut w = files.create(3, &meta(1)).unwrap();
        w.push(b"k1", b"v1").unwrap();
        w.push(b"k2", b"").unwrap();
        let (_, size) = w.commit().unwrap();
        let path = files.path(3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        let want = vec![(b"k1".to_vec(), b"v1".to_vec()), (b"k2".to_vec(), vec![])];
        assert_eq!(read_all(&path).unwrap(), want);
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
            let e = read_all(&damaged).unwrap_err();
            assert!(e.contains("damaged.snap"), "{e}");
            assert!(e.contains(why), "cut {cut}: {e}");
        }
        // A flipped bit in a value, a wrong count, bytes after the end.
        let value_at = bytes.len() - 16 - 10 - 2;
        let mut flipped = bytes.clone();
        flipped[value_at] ^= 1;
        std::fs::write(&damaged, &flipped).unwrap();
        let e = read_all(&damaged).unwrap_err();
        assert!(e.contains("do not match their checksum"), "{e}");
        let mut counted = bytes.clone();
        let count_at = bytes.len() - 12;
        counted[count_at] = 3;
        std::fs::write(&damaged, &counted).unwrap();
        let e = read_all(&damaged).unwrap_err();
        assert!(
            e.contains("ends after 2 records, its end marker says 3"),
            "{e}"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&damaged, &longer).unwrap();
        let e = read_all(&damaged).unwrap_err();
        assert!(e.contains("data after the snapshot's end marker"), "{e}");
        // A snapshot of the 0.9-based cluster is refused by name.
        let mut v2 = bytes.clone();
        v2[..8].copy_from_slice(b"TKVRSNP2");
        std::fs::write(&damaged, &v2).unwrap();
        let e = read_all(&damaged).unwrap_err();
        assert!(e.contains("0.9-based cluster"), "{e}");
        std::fs::write(&damaged, &bytes[..14]).unwrap();
        let e = read_all(&damaged).unwrap_err();
        assert!(e.contains("damaged.snap: truncated snapshot header"), "{e}");
        std::fs::write(&damaged, b"garbage").unwrap();
        let e = read_all(&damaged).unwrap_err();
        assert!(
            e.contains("damaged.snap: not a tallykv slot-group snapshot"),
            "{e}"
        );
        // A valid header whose record lengths are garbage: no huge allocation, an error.
        let mut junk = bytes[..bytes.len() - 18].to_vec();
        junk.extend_from_slice(&[0xff; 40]);
        std::fs::write(&damaged, &junk).unwrap();
        assert!(read_all(&damaged).unwrap_err().contains("truncated"));
        assert!(matches!(
            Reader::open(&dir.path().join("none")),
            Err(ReadError::Missing)
        ));
    }

    #[test]
    fn batches_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        let mut w = files.create(1, &meta(2)).unwrap();
        for i in 0..25u32 {
            w.push(&i.to_be_bytes(), &[7u8; 100]).unwrap();
        }
        w.commit().unwrap();
        let mut r = Reader::open(&files.path(1)).unwrap();
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let b = r.next_batch(10, 350).unwrap();
            (!b.is_empty()).then_some(b.len())
        })
        .collect();
        // 104 bytes a record: the batch closes once 350 bytes are reached.
        assert_eq!(sizes, vec![4, 4, 4, 4, 4, 4, 1]);
        let mut r = Reader::open(&files.path(1)).unwrap();
        assert_eq!(r.next_batch(3, usize::MAX).unwrap().len(), 3);
        // A record larger than the byte bound still makes a batch of one.
        assert_eq!(r.next_batch(10, 1).unwrap().len(), 1);
    }

    #[test]
    fn received_files_are_staged_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        let mut w = files.create(2, &meta(3)).unwrap();
        w.push(b"a", b"1").unwrap();
        w.commit().unwrap();
        let sent = std::fs::read(files.path(2)).unwrap();
        // Received in two chunks, the second written first.
        let mut f = files.receive(2).unwrap();
        f.file.seek(SeekFrom::Start(5)).unwrap();
        f.file.write_all(&sent[5..]).unwrap();
        f.file.seek(SeekFrom::Start(0)).unwrap();
        f.file.write_all(&sent[..5]).unwrap();
        let path = f.finish_receiving().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), sent);
        assert!(files.staged(2).unwrap().is_none());
        assert!(!files.is_staged(2));
        assert_eq!(files.stage(2, &path, &meta(3)).unwrap(), 1);
        assert!(!path.exists());
        assert_eq!(files.staged(2).unwrap().unwrap(), meta(3));
        assert!(files.is_staged(2) && !files.is_staged(3));
        // A restart finds the staged install (and finishes it before serving).
        assert!(SnapshotFiles::new(dir.path()).is_staged(2));
        files.commit_staged(2).unwrap();
        assert!(files.staged(2).unwrap().is_none());
        assert!(!files.is_staged(2));

        // Another snapshot's file is refused and deleted.
        let mut f = files.receive(2).unwrap();
        f.file.write_all(&sent).unwrap();
        let path = f.finish_receiving().unwrap();
        let e = files.stage(2, &path, &meta(4)).unwrap_err();
        assert!(e.contains("not the one at log"), "{e}");
        assert!(!path.exists());

        // A truncated one too.
        let mut f = files.receive(2).unwrap();
        f.file.write_all(&sent[..sent.len() - 1]).unwrap();
        let path = f.finish_receiving().unwrap();
        let e = files.stage(2, &path, &meta(3)).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(!path.exists());

        // A receive given up is deleted; the current snapshot reads back in full.
        let f = files.receive(2).unwrap();
        drop(f);
        let (m, mut f) = files.load(2).unwrap().unwrap();
        assert_eq!(m, meta(3));
        let mut back = Vec::new();
        f.file.seek(SeekFrom::Start(0)).unwrap();
        f.file.read_to_end(&mut back).unwrap();
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
        let files = SnapshotFiles::new(dir.path());
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
        let files = SnapshotFiles::new(dir.path());
        assert!(!recv.exists() && !tmp.exists());
        assert!(files.path(4).exists());
        assert_eq!(files.staged(4).unwrap().unwrap(), meta(5));
        files.remove(4).unwrap();
        assert!(files.staged(4).unwrap().is_none() && files.load(4).unwrap().is_none());
    }
}
