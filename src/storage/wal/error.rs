//! What can go wrong with a write-ahead log, each with the exact text an operator reads.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::GroupId;
use crate::storage::at_rest::OpenError;

/// Why a [`super::Wal`] call failed.
///
/// Cloneable (the I/O error sits behind an `Arc`) because one failed fdatasync answers every
/// sync request that was waiting on it, and the log keeps the first failure to report it again.
#[derive(Debug, Clone)]
pub enum WalError {
    /// An I/O call on a file of the log failed, e.g.
    /// `writing /data/wal/00000000000000000003.wal: No space left on device (os error 28)`.
    Io {
        /// What was being done: "reading", "writing", "syncing", "creating"…
        action: &'static str,
        path: PathBuf,
        error: Arc<io::Error>,
    },
    /// A record that cannot be what was written, e.g.
    /// `/data/wal/00000000000000000002.wal: corrupt record at offset 4096: checksum mismatch`.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A segment whose header does not start with the magic bytes.
    NotASegment { path: PathBuf },
    /// A segment written in a format version this build does not read (never guessed at).
    UnknownVersion { path: PathBuf, version: u8 },
    /// An append that does not continue the group's log: `expected` is the only index it
    /// accepts (`None`: the log is full up to `u64::MAX`).
    NotContiguous {
        group: GroupId,
        index: u64,
        expected: Option<u64>,
    },
    /// An entry too large for a record's 32-bit length.
    EntryTooLarge {
        group: GroupId,
        index: u64,
        len: usize,
    },
    /// An entry encrypted at rest that does not decrypt: no key file, a key the file does not
    /// hold, or a wrong key under that id, e.g.
    /// `/data/wal/00000000000000000002.wal: entry 7 of group 3 at offset 4096: the data is
    /// encrypted at rest (key id 'k1') and encryption-at-rest-key-file is not set`.
    Sealed {
        path: PathBuf,
        offset: u64,
        group: GroupId,
        index: u64,
        error: OpenError,
    },
    /// Replay ended with a hole in a group's log: an entry that should be live is in no segment.
    MissingEntry {
        dir: PathBuf,
        group: GroupId,
        index: u64,
    },
    /// An earlier write or sync failed. The log cannot tell what reached the disk after a
    /// failed write or fdatasync (the kernel may drop the dirty pages), so it accepts nothing
    /// more until it is reopened, which replays what is really there.
    Failed(Arc<WalError>),
}

impl WalError {
    pub(crate) fn io(action: &'static str, path: &Path, error: io::Error) -> WalError {
        WalError::Io {
            action,
            path: path.to_path_buf(),
            error: Arc::new(error),
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io {
                action,
                path,
                error,
            } => write!(f, "{action} {}: {error}", path.display()),
            WalError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{}: corrupt record at offset {offset}: {reason}",
                path.display()
            ),
            WalError::NotASegment { path } => write!(
                f,
                "{}: not a tallykv write-ahead log segment (bad magic)",
                path.display()
            ),
            WalError::UnknownVersion { path, version } => write!(
                f,
                "{}: write-ahead log format version {version} is not one this build reads ({}); \
                 was it written by a newer tallykv?",
                path.display(),
                super::record::VERSION
            ),
            WalError::NotContiguous {
                group,
                index,
                expected: Some(expected),
            } => write!(
                f,
                "group {group}: entry {index} does not continue the log (expected {expected})"
            ),
            WalError::NotContiguous {
                group,
                index,
                expected: None,
            } => write!(
                f,
                "group {group}: entry {index} does not continue the log (it is full)"
            ),
            WalError::EntryTooLarge { group, index, len } => write!(
                f,
                "group {group}: entry {index} is {len} bytes, more than a record holds"
            ),
            WalError::Sealed {
                path,
                offset,
                group,
                index,
                error,
            } => write!(
                f,
                "{}: entry {index} of group {group} at offset {offset}: {error}",
                path.display()
            ),
            WalError::MissingEntry { dir, group, index } => write!(
                f,
                "{}: group {group}: entry {index} is inside the log but in no segment",
                dir.display()
            ),
            WalError::Failed(first) => write!(
                f,
                "the write-ahead log failed earlier and accepts nothing until reopened: {first}"
            ),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { error, .. } => Some(error.as_ref()),
            WalError::Failed(first) => Some(first.as_ref()),
            _ => None,
        }
    }
}
