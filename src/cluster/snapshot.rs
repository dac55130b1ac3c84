//! Slot-group snapshots: a group's keys as of one applied log id, read from a point-in-time
//! view of fjall (the cores flush first, so the view holds exactly the applied state), kept
//! as one file per group so a lagging or emptied replica can be sent it after the log
//! before it was purged.
//!
//! File: `TKVRSNP1`, u32 LE meta length, the bincode SnapshotMeta, then records
//! `[u32 LE key length][stored key][u32 LE value length][stored value]` in the storage
//! codec's encoding (so a snapshot is read with the same decoder as the data dir).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::types::{GroupId, NodeId, NodeInfo};

const MAGIC: &[u8; 8] = b"TKVRSNP1";

pub type Meta = openraft::SnapshotMeta<NodeId, NodeInfo>;

/// Snapshot files of this node's groups, under `<dir>/raft-snapshots`.
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    pub fn new(data_dir: &Path) -> SnapshotFiles {
        SnapshotFiles {
            dir: data_dir.join("raft-snapshots"),
        }
    }

    fn path(&self, g: GroupId) -> PathBuf {
        self.dir.join(format!("g{g}.snap"))
    }

    /// Replaces group `g`'s snapshot with `bytes` (written whole, synced, then renamed).
    pub fn save(&self, g: GroupId, bytes: &[u8]) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path(g).display());
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!("g{g}.snap.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_data().map_err(err)?;
        std::fs::rename(&tmp, self.path(g)).map_err(err)?;
        Ok(())
    }

    /// Deletes group `g`'s snapshot (this node no longer replicates the group).
    pub fn remove(&self, g: GroupId) -> Result<(), String> {
        match std::fs::remove_file(self.path(g)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.path(g).display())),
        }
    }

    /// Group `g`'s snapshot: its meta and whole file, if any.
    pub fn load(&self, g: GroupId) -> Result<Option<(Meta, Vec<u8>)>, String> {
        let path = self.path(g);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let (meta, _) = split(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some((meta, bytes)))
    }
}

/// Starts a snapshot file's bytes with its header.
pub fn begin(meta: &Meta) -> Result<Vec<u8>, String> {
    let meta = bincode::serialize(meta).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(64 + meta.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    Ok(out)
}

/// Appends one stored key and value.
pub fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// The meta and the record section of a snapshot file.
fn split(bytes: &[u8]) -> Result<(Meta, &[u8]), String> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("not a tallykv slot-group snapshot".to_string());
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let meta_bytes = bytes.get(12..12 + len).ok_or("truncated snapshot header")?;
    let meta = bincode::deserialize(meta_bytes).map_err(|e| format!("snapshot meta: {e}"))?;
    Ok((meta, &bytes[12 + len..]))
}

/// The records of a snapshot file, in order.
pub fn records(bytes: &[u8]) -> Result<crate::storage::KeyValues, String> {
    let (_, mut rest) = split(bytes)?;
    let mut out = Vec::new();
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
        let len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("truncated snapshot record")?;
        let v = rest
            .get(4..4 + len)
            .ok_or("truncated snapshot record")?
            .to_vec();
        *rest = &rest[4 + len..];
        Ok(v)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let meta = Meta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "x".into(),
        };
        let mut b = begin(&meta).unwrap();
        push_record(&mut b, b"k1", b"v1");
        push_record(&mut b, b"k2", b"");
        assert_eq!(
            records(&b).unwrap(),
            vec![(b"k1".to_vec(), b"v1".to_vec()), (b"k2".to_vec(), vec![])]
        );
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        assert!(files.load(3).unwrap().is_none());
        files.save(3, &b).unwrap();
        let (m, bytes) = files.load(3).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "x");
        assert_eq!(bytes, b);
        assert!(records(&b[..b.len() - 1]).is_err());
        assert!(records(b"garbage").is_err());
    }
}
