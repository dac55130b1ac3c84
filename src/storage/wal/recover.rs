//! Opening a log: replaying its segments, oldest first, into every group's state.
//!
//! Each segment begins with a checkpoint of every group's vote, committed id, purge point and
//! log bounds, so a segment deleted from the middle (no live entries left) costs nothing: the
//! next checkpoint restores the state its records built. Entries replay under the rules they
//! were appended under; entries a checkpoint or a later record says are gone are dropped.
//! At the end every group's log must be whole: a hole is an error, never a shorter log.
//!
//! What a crash can leave, and what is done about it:
//! - a torn record at the end of the last segment (a write cut short): cut off, with a warning;
//! - a last segment whose header or checkpoint never made it: rewritten by the caller;
//! - the crash landed between a rotation and the sync after it, and the kernel wrote the new
//!   segment back before the end of the previous one: the previous one is shorter than the
//!   new one's checkpoint says, or ends in sectors of zeros. Nothing after the missing bytes
//!   was ever synced (a sync covers both segments, oldest first), so the previous one is cut
//!   and the later ones are renamed `*.discarded`, with a warning naming them;
//! - anything else that does not read back (a bad record followed by good ones, a bad record
//!   in an older segment, an unknown version) is an error naming the file and the offset.
//!
//! Entries encrypted at rest are opened as they are replayed, so a missing key file, a key
//! the file lacks or a wrong key stops the open rather than a read later. Only entries that
//! are still live at the end count: a dead one (truncated, purged, or moved by a rotation)
//! in a segment not yet deleted is never read again, so it may be under a key that has left
//! the key file.
//!
//! A rotation's Resealed record takes the place of the entry's earlier record. It is written
//! after that record (into a newer segment), and the segment holding the earlier one is
//! deleted only after the Resealed record is synced; so whatever prefix of a rotation's
//! records a crash leaves, each entry is found either at its earlier place or at its new
//! one, and the log is the same.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ahash::AHashMap;

use super::record::{self, Bad, Frame, HEADER_LEN, MAGIC, Record, VERSION};
use super::state::SealedUnder;
use super::syncer::SegmentFile;
use super::{Group, GroupId, Loc, Next, WalError, segment_path};
use crate::storage::at_rest::{self, AtRest, OpenError};

/// A segment kept after replay.
pub struct RecoveredSegment {
    pub seq: u64,
    pub file: Arc<SegmentFile>,
    pub len: u64,
    pub sealed_under: SealedUnder,
}

pub struct Recovered {
    pub segments: Vec<RecoveredSegment>,
    pub groups: Vec<(GroupId, Group)>,
    /// The last segment holds no checkpoint (its first write was cut short): the caller
    /// rewrites it before appending.
    pub last_needs_checkpoint: bool,
}

/// The sequence numbers of the segments in `dir`, in order. Other files are left alone.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(digits) = name.strip_suffix(".wal")
            && digits.len() == 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seq) = digits.parse()
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Replays the segments in `dir`, opening the entries encrypted at rest with `at_rest`.
pub fn recover(dir: &Path, at_rest: Option<&AtRest>) -> Result<Recovered, WalError> {
    let seqs = list_segments(dir)?;
    let mut replay = Replay {
        at_rest,
        ..Replay::default()
    };
    let mut segments = Vec::new();
    let mut last_needs_checkpoint = false;
    let mut loaded: Option<(File, Vec<u8>)> = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        let (file, data) = match loaded.take() {
            Some(l) => l,
            None => load(&path)?,
        };
        let tail = replay.segment(&path, seq, &data)?;
        let mut is_last = i + 1 == seqs.len();
        // What the next segment's checkpoint says about this one, when it says anything.
        let mut discard_after = false;
        if !is_last {
            let next_path = segment_path(dir, seqs[i + 1]);
            let next = load(&next_path)?;
            match head(&next.1) {
                Head::Checkpoint { prev_seq, prev_len } if prev_seq == seq => {
                    if prev_len > tail.end as u64 && lost_in_crash(&data, tail.end, prev_len) {
                        discard_after = true;
                    } else if prev_len > tail.end as u64 {
                        // Damage, not a crash: reported below like any bad record.
                    } else if prev_len < data.len() as u64 || tail.torn.is_some() {
                        return Err(WalError::corrupt(
                            &path,
                            prev_len.min(tail.end as u64),
                            format!(
                                "the segment is {} bytes long but {} says it ends at {prev_len}",
                                data.len(),
                                next_path.display()
                            ),
                        ));
                    }
                }
                // The next segment never got past its header: the crash came as it began.
                // (Only while this one is there: this one is deleted only after the next
                // one's checkpoint is synced.)
                Head::Torn if i + 2 == seqs.len() && seqs[i + 1] == seq + 1 => {
                    tracing::warn!(
                        "{}: a segment whose first write was cut short by a crash; deleting it",
                        next_path.display()
                    );
                    std::fs::remove_file(&next_path)
                        .map_err(|e| WalError::io("deleting", &next_path, e))?;
                    is_last = true;
                }
                _ => {}
            }
            loaded = Some(next);
        }
        if discard_after {
            is_last = true;
        }
        if !is_last {
            if let Some(reason) = tail.torn {
                return Err(WalError::corrupt(
                    &path,
                    tail.end as u64,
                    format!("{reason}, in a segment that is not the last"),
                ));
            }
            if !tail.checkpointed {
                return Err(WalError::corrupt(
                    &path,
                    HEADER_LEN as u64,
                    "the segment holds no checkpoint and is not the last",
                ));
            }
        }
        // A segment's checkpoint is synced before the segment before it may go, so only the
        // newest segment, right after its predecessor, can have lost it to a crash.
        let after_predecessor = match i {
            0 => seq == 1,
            _ => seqs[i - 1] == seq - 1,
        };
        if is_last && !tail.checkpointed && !after_predecessor {
            return Err(WalError::corrupt(
                &path,
                tail.end as u64,
                "the segment holds no checkpoint and the segment before it is gone",
            ));
        }
        if tail.end < data.len() {
            tracing::warn!(
                "{}: cutting {} bytes from offset {} left by a write a crash interrupted ({})",
                path.display(),
                data.len() - tail.end,
                tail.end,
                tail.torn.as_deref().unwrap_or("incomplete")
            );
            file.set_len(tail.end as u64)
                .map_err(|e| WalError::io("truncating", &path, e))?;
        }
        segments.push(RecoveredSegment {
            seq,
            file: Arc::new(SegmentFile { file, path }),
            len: tail.end as u64,
            sealed_under: tail.sealed_under,
        });
        if discard_after {
            discard(dir, &seqs[i + 1..])?;
        }
        if is_last {
            last_needs_checkpoint = !tail.checkpointed;
            break;
        }
    }
    Ok(Recovered {
        segments,
        groups: replay.finish(dir)?,
        last_needs_checkpoint,
    })
}

fn load(path: &Path) -> Result<(File, Vec<u8>), WalError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("opening", path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| WalError::io("reading", path, e))?;
    Ok((file, data))
}

/// Whether the end of a segment from `end` on, which the next segment's checkpoint says
/// reaches `claimed`, went missing in a crash rather than being damaged afterwards: the file
/// is shorter than it was written (its size never made it), or a whole sector of it reads as
/// zeros (a page never written back). A flipped bit leaves neither.
fn lost_in_crash(data: &[u8], end: usize, claimed: u64) -> bool {
    const SECTOR: usize = 512;
    if (data.len() as u64) < claimed {
        return true;
    }
    let mut s = end.next_multiple_of(SECTOR);
    while s + SECTOR <= data.len() {
        if data[s..s + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Sets segments written after a crash point aside: they were never synced, but are kept for
/// a person to look at rather than deleted.
fn discard(dir: &Path, seqs: &[u64]) -> Result<(), WalError> {
    for &seq in seqs {
        let path = segment_path(dir, seq);
        let aside = PathBuf::from(format!("{}.discarded", path.display()));
        tracing::warn!(
            "{}: written after a write a crash cut short in the segment before it, so never \
             synced; renamed to {}",
            path.display(),
            aside.display()
        );
        std::fs::rename(&path, &aside).map_err(|e| WalError::io("renaming", &path, e))?;
    }
    Ok(())
}

/// How a segment's valid records end.
struct Tail {
    /// Offset just past the last good record.
    end: usize,
    /// Why the bytes at `end` are not a record, when they look like a torn write.
    torn: Option<String>,
    /// The segment's first record, a checkpoint, was read.
    checkpointed: bool,
    /// The keys of the entry records up to `end`.
    sealed_under: SealedUnder,
}

/// What the beginning of a segment says.
enum Head {
    Checkpoint {
        prev_seq: u64,
        prev_len: u64,
    },
    /// The header or the first record is cut short, or the segment is only a header.
    Torn,
    Other,
}

fn head(data: &[u8]) -> Head {
    if check_header(Path::new(""), data).is_err() {
        return Head::Other;
    }
    if data.len() < HEADER_LEN {
        return Head::Torn;
    }
    match record::read(data, HEADER_LEN) {
        Ok(Some(Frame {
            record: Record::Checkpoint(c),
            ..
        })) => Head::Checkpoint {
            prev_seq: c.prev_seq,
            prev_len: c.prev_len,
        },
        Ok(None) => Head::Torn,
        Err(Bad::Frame(_)) if record::looks_torn(data, HEADER_LEN).is_ok() => Head::Torn,
        _ => Head::Other,
    }
}

/// Checks the magic and the version of what there is of a header (a short one may be torn).
fn check_header(path: &Path, data: &[u8]) -> Result<(), WalError> {
    let n = data.len().min(MAGIC.len());
    if data[..n] != MAGIC[..n] {
        return Err(WalError::NotASegment {
            path: path.to_path_buf(),
        });
    }
    match data.get(MAGIC.len()) {
        Some(&version) if version != VERSION => Err(WalError::UnknownVersion {
            path: path.to_path_buf(),
            version,
        }),
        _ => Ok(()),
    }
}

/// A group's state as replay builds it. Unlike a live group, its log may have holes while
/// replay is under way: entries that died in a deleted segment's time are simply absent.
#[derive(Default)]
struct ReplayGroup {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
    /// First and last index of the log as it was when the record being replayed was written.
    log: Option<(u64, u64)>,
    /// The entries replayed so far that are inside `log`, always.
    present: BTreeMap<u64, Loc>,
}

impl ReplayGroup {
    /// Drops the entries outside `log`.
    fn trim(&mut self) {
        match self.log {
            None => self.present.clear(),
            Some((first, last)) => {
                self.present = self.present.split_off(&first);
                if let Some(past) = last.checked_add(1) {
                    self.present.split_off(&past);
                }
            }
        }
    }
}

#[derive(Default)]
struct Replay<'a> {
    groups: AHashMap<GroupId, ReplayGroup>,
    /// The key file's keys (None: encryption at rest is off).
    at_rest: Option<&'a AtRest>,
    /// Sealed entries that did not open, by group and index: an error if still live at the
    /// end (the record at that place is still the entry's).
    failures: AHashMap<(GroupId, u64), (Loc, OpenError)>,
    /// The keys of the entry records of the segment being replayed.
    sealed_under: SealedUnder,
}

impl Replay<'_> {
    fn segment(&mut self, path: &Path, seq: u64, data: &[u8]) -> Result<Tail, WalError> {
        check_header(path, data)?;
        self.sealed_under = SealedUnder::default();
        if data.len() < HEADER_LEN {
            return Ok(Tail {
                end: 0,
                torn: Some("the header is cut short".into()),
                checkpointed: false,
                sealed_under: std::mem::take(&mut self.sealed_under),
            });
        }
        let mut at = HEADER_LEN;
        let mut checkpointed = false;
        loop {
            match record::read(data, at) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let is_checkpoint = matches!(frame.record, Record::Checkpoint(_));
                    if is_checkpoint == checkpointed {
                        return Err(WalError::corrupt(
                            path,
                            at as u64,
                            if checkpointed {
                                "a checkpoint after the first record of a segment"
                            } else {
                                "the segment does not begin with a checkpoint"
                            },
                        ));
                    }
                    checkpointed = true;
                    at += frame.len;
                    self.apply(path, seq, frame)?;
                }
                Err(Bad::Contents(reason)) => {
                    return Err(WalError::corrupt(path, at as u64, reason));
                }
                Err(Bad::Frame(reason)) => match record::looks_torn(data, at) {
                    Ok(()) => {
                        return Ok(Tail {
                            end: at,
                            torn: Some(reason),
                            checkpointed,
                            sealed_under: std::mem::take(&mut self.sealed_under),
                        });
                    }
                    Err(next) => {
                        return Err(WalError::corrupt(
                            path,
                            at as u64,
                            format!("{reason}, and a good record follows at offset {next}"),
                        ));
                    }
                },
            }
        }
        Ok(Tail {
            end: data.len(),
            torn: None,
            checkpointed,
            sealed_under: std::mem::take(&mut self.sealed_under),
        })
    }

    /// Notes the key of an entry record and, when it is sealed, opens it: a failure is kept
    /// until the end shows whether the entry is still live.
    fn check_entry(&mut self, group: GroupId, index: u64, loc: Loc, data: &[u8], sealed: bool) {
        if !sealed {
            self.sealed_under.note(None);
            return;
        }
        self.sealed_under.note(at_rest::key_id_of(data));
        match record::unseal(self.at_rest, group, index, data) {
            Ok(_) => {
                self.failures.remove(&(group, index));
            }
            Err(e) => {
                self.failures.insert((group, index), (loc, e));
            }
        }
    }

    fn apply(&mut self, path: &Path, seq: u64, frame: Frame<'_>) -> Result<(), WalError> {
        let loc = Loc {
            seg: seq,
            at: frame.at as u64,
            len: frame.len as u32,
        };
        match frame.record {
            Record::Checkpoint(c) => {
                // Groups the checkpoint does not name were removed meanwhile: their entries go.
                let mut before = std::mem::take(&mut self.groups);
                for gc in c.groups {
                    let mut g = before.remove(&gc.group).unwrap_or_default();
                    g.vote = gc.vote;
                    g.committed = gc.committed;
                    g.purged = gc.purged;
                    g.log = gc.log;
                    g.trim();
                    self.groups.insert(gc.group, g);
                }
            }
            Record::Entry {
                index,
                data,
                sealed,
            } => {
                self.check_entry(frame.group, index, loc, data, sealed);
                let g = self.groups.entry(frame.group).or_default();
                let next = Next::of(g.log.map(|l| l.1), g.purged.as_ref().map(|p| p.0));
                if !next.accepts(index) {
                    return Err(WalError::corrupt(
                        path,
                        loc.at,
                        format!(
                            "entry {index} of group {} does not continue its log ({next})",
                            frame.group
                        ),
                    ));
                }
                // `present` lies inside `log`, so nothing is at or past `index` to replace.
                g.present.insert(index, loc);
                g.log = Some((g.log.map_or(index, |l| l.0), index));
            }
            Record::Resealed { index, data } => {
                self.check_entry(frame.group, index, loc, data, true);
                let g = self.groups.get_mut(&frame.group);
                match g {
                    // The entry was live when it was moved, and replay has the log's bounds
                    // as they were then: its earlier record, if its segment is still there,
                    // is replaced.
                    Some(g)
                        if g.log
                            .is_some_and(|(first, last)| (first..=last).contains(&index)) =>
                    {
                        g.present.insert(index, loc);
                    }
                    _ => {
                        return Err(WalError::corrupt(
                            path,
                            loc.at,
                            format!(
                                "resealed entry {index} of group {} is not inside its log",
                                frame.group
                            ),
                        ));
                    }
                }
            }
            Record::Vote(v) => self.groups.entry(frame.group).or_default().vote = Some(v.to_vec()),
            Record::Committed(c) => {
                self.groups.entry(frame.group).or_default().committed = Some(c.to_vec())
            }
            Record::Truncate { after } => {
                if let Some(g) = self.groups.get_mut(&frame.group)
                    && let Some((first, last)) = g.log
                {
                    g.log = match after {
                        Some(a) if a >= last => Some((first, last)),
                        Some(a) if a >= first => Some((first, a)),
                        _ => None,
                    };
                    g.trim();
                }
            }
            Record::Purge { upto, log_id } => {
                let g = self.groups.entry(frame.group).or_default();
                if g.purged.as_ref().is_none_or(|p| p.0 < upto) {
                    g.purged = Some((upto, log_id.to_vec()));
                    g.log = match g.log {
                        Some((_, last)) if last <= upto => None,
                        Some((first, last)) => Some((first.max(upto + 1), last)),
                        None => None,
                    };
                    g.trim();
                }
            }
            Record::RemoveGroup => {
                self.groups.remove(&frame.group);
            }
        }
        Ok(())
    }

    fn finish(self, dir: &Path) -> Result<Vec<(GroupId, Group)>, WalError> {
        // The first live entry that did not open, in the order of the files.
        let failed = self
            .failures
            .into_iter()
            .filter(|((group, index), (loc, _))| {
                self.groups
                    .get(group)
                    .and_then(|g| g.present.get(index))
                    .is_some_and(|l| l == loc)
            })
            .min_by_key(|(_, (loc, _))| (loc.seg, loc.at));
        if let Some(((group, index), (loc, error))) = failed {
            return Err(WalError::Sealed {
                path: segment_path(dir, loc.seg),
                offset: loc.at,
                group,
                index,
                error,
            });
        }
        let mut out = Vec::with_capacity(self.groups.len());
        for (id, g) in self.groups {
            let mut group = Group {
                vote: g.vote,
                committed: g.committed,
                purged: g.purged,
                ..Group::default()
            };
            if let Some((first, last)) = g.log {
                if g.present.len() as u64 != last - first + 1 {
                    let missing = (first..=last)
                        .zip(g.present.keys())
                        .find(|(want, have)| want != *have)
                        .map_or(first + g.present.len() as u64, |(want, _)| want);
                    return Err(WalError::MissingEntry {
                        dir: dir.to_path_buf(),
                        group: id,
                        index: missing,
                    });
                }
                group.first = first;
                group.locs = g.present.into_values().collect();
            }
            if !group.is_empty() {
                out.push((id, group));
            }
        }
        out.sort_unstable_by_key(|(id, _)| *id);
        Ok(out)
    }
}
