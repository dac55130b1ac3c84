//! The bytes of a segment: its header and its records. Nothing here touches a file.
//!
//! ```text
//! header   "TKVWAL" [version u8 = 1] [9 reserved zero bytes]                      16 bytes
//! record   [len u32][crc u32][type u8][group u16][payload]                      little-endian
//!          len counts type + group + payload; crc is CRC-32C (iSCSI) of those same bytes
//! ```
//!
//! Payloads by type:
//!
//! ```text
//! 1 Entry        [index u64][entry bytes]
//! 2 Vote         [vote bytes]
//! 3 Committed    [committed bytes]
//! 4 Truncate     [0u8] (drop every entry) | [1u8][after u64] (drop entries > after)
//! 5 Purge        [upto u64][log id bytes]
//! 6 RemoveGroup  (empty)
//! 7 Checkpoint   group 0; [prev_seq u64][prev_len u64][count u32] then per group:
//!                [group u16][flags u8] then, as flagged, [vote: u32 len, bytes]
//!                [committed: u32 len, bytes] [purged: upto u64, u32 len, bytes]
//!                [log: first u64, last u64]
//! 8 SealedEntry  [index u64][sealed entry]: an Entry, encrypted at rest
//! 9 Resealed     [index u64][sealed entry]: entry `index`, already in the log, rewritten
//!                here under the active key by a key rotation: it takes the place of the
//!                record that held the entry before (it is not an append)
//! ```
//!
//! `prev_seq`/`prev_len` name the segment before the checkpoint's one and the length it had
//! when the log moved on, so recovery can tell a predecessor cut short by a crash.
//!
//! A sealed entry is an `at_rest` sealed value (magic, key id, session, counter, ciphertext
//! and tag) whose AAD is [`entry_aad`]: the group and the index, which every record that can
//! hold the entry carries, so it opens wherever a rotation moved it, and a sealed entry
//! copied to another index or group does not. Its own kinds, rather than the at-rest magic at
//! the start of an entry, tell a sealed entry from a plaintext one: a plaintext entry may
//! begin with any bytes. The other records hold no user data (ids, votes, log bounds) and stay
//! plaintext.

use crc::{CRC_32_ISCSI, Crc, Table};

use super::GroupId;
use crate::storage::at_rest::{self, AtRest, OpenError};

pub const MAGIC: &[u8; 6] = b"TKVWAL";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
/// The length and checksum in front of every record.
pub const FRAME_LEN: usize = 8;
/// Type and group, the checksummed bytes in front of the payload.
const KIND_LEN: usize = 3;
/// Where an entry's bytes start inside its record.
pub const ENTRY_DATA_AT: usize = FRAME_LEN + KIND_LEN + 8;
/// The largest entry a record holds (a record's whole length must fit 32 bits).
pub const MAX_ENTRY_LEN: usize = u32::MAX as usize - ENTRY_DATA_AT;
/// What sealing adds to an entry at most: `at_rest::overhead` of the longest key id (its
/// length is a u8).
pub const MAX_SEAL_OVERHEAD: usize = 4 + 1 + 255 + 16 + 8 + 16;
/// The largest entry a sealed record holds.
pub const MAX_SEALED_ENTRY_LEN: usize = MAX_ENTRY_LEN - MAX_SEAL_OVERHEAD;

// Slice-by-16: a 100-byte entry checksums in ~40 ns instead of ~150 ns byte by byte.
static CRC: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()] = VERSION;
    h
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Entry = 1,
    Vote = 2,
    Committed = 3,
    Truncate = 4,
    Purge = 5,
    RemoveGroup = 6,
    Checkpoint = 7,
    SealedEntry = 8,
    Resealed = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::Vote,
            3 => Kind::Committed,
            4 => Kind::Truncate,
            5 => Kind::Purge,
            6 => Kind::RemoveGroup,
            7 => Kind::Checkpoint,
            8 => Kind::SealedEntry,
            9 => Kind::Resealed,
            _ => return None,
        })
    }
}

/// Appends one record made of `parts` (concatenated into its payload) to `buf`; returns its
/// length. Callers keep a payload under [`MAX_ENTRY_LEN`] + 8 bytes.
pub fn put(buf: &mut Vec<u8>, kind: Kind, group: GroupId, parts: &[&[u8]]) -> usize {
    let start = buf.len();
    let payload: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(FRAME_LEN + KIND_LEN + payload);
    begin(buf, kind, group);
    for p in parts {
        buf.extend_from_slice(p);
    }
    end(buf, start)
}

/// The frame's placeholders, the type and the group of a record starting at `buf.len()`.
fn begin(buf: &mut Vec<u8>, kind: Kind, group: GroupId) {
    buf.extend_from_slice(&[0; FRAME_LEN]);
    buf.push(kind as u8);
    buf.extend_from_slice(&group.to_le_bytes());
}

/// Fills in the length and checksum of the record from `start` to the end of `buf`.
fn end(buf: &mut [u8], start: usize) -> usize {
    let len = (buf.len() - start - FRAME_LEN) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = CRC.checksum(&buf[start + FRAME_LEN..]);
    buf[start + 4..start + FRAME_LEN].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// The AAD a sealed entry is bound to: its group and index (see the module doc). The prefix
/// keeps it apart from the AADs of the other values sealed under the same keys.
pub fn entry_aad(group: GroupId, index: u64) -> [u8; 22] {
    let mut aad = [0; 22];
    aad[..12].copy_from_slice(b"tallykv-wal\0");
    aad[12..14].copy_from_slice(&group.to_le_bytes());
    aad[14..].copy_from_slice(&index.to_le_bytes());
    aad
}

/// Appends a record of `kind` (SealedEntry or Resealed) holding `entry` sealed under the
/// active key, sealed straight into `buf` (the entry's only copy); returns its length.
/// Callers keep `entry` under [`MAX_SEALED_ENTRY_LEN`].
pub fn put_sealed(
    buf: &mut Vec<u8>,
    kind: Kind,
    group: GroupId,
    index: u64,
    entry: &[u8],
    at_rest: &AtRest,
) -> usize {
    debug_assert!(matches!(kind, Kind::SealedEntry | Kind::Resealed));
    let start = buf.len();
    buf.reserve(ENTRY_DATA_AT + MAX_SEAL_OVERHEAD + entry.len());
    begin(buf, kind, group);
    buf.extend_from_slice(&index.to_le_bytes());
    at_rest.seal_into(&entry_aad(group, index), entry, buf);
    end(buf, start)
}

/// The plaintext of entry `index` of `group` sealed as `sealed` (None for `at_rest`: the log
/// was opened without a key file).
pub fn unseal(
    at_rest: Option<&AtRest>,
    group: GroupId,
    index: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    match at_rest {
        Some(a) => a.open(&entry_aad(group, index), sealed),
        None => Err(
            at_rest::key_id_of(sealed).map_or(OpenError::Malformed, |id| {
                OpenError::NoKeyFile(id.to_owned())
            }),
        ),
    }
}

/// One group's state in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupCheckpoint {
    pub group: GroupId,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    pub purged: Option<(u64, Vec<u8>)>,
    /// First and last index of the group's log, when it holds entries.
    pub log: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub prev_seq: u64,
    pub prev_len: u64,
    pub groups: Vec<GroupCheckpoint>,
}

const HAS_VOTE: u8 = 1;
const HAS_COMMITTED: u8 = 2;
const HAS_PURGED: u8 = 4;
const HAS_LOG: u8 = 8;

pub fn put_checkpoint(buf: &mut Vec<u8>, c: &Checkpoint) -> usize {
    let mut p = Vec::with_capacity(20 + c.groups.len() * 32);
    p.extend_from_slice(&c.prev_seq.to_le_bytes());
    p.extend_from_slice(&c.prev_len.to_le_bytes());
    p.extend_from_slice(&(c.groups.len() as u32).to_le_bytes());
    let bytes = |p: &mut Vec<u8>, b: &[u8]| {
        p.extend_from_slice(&(b.len() as u32).to_le_bytes());
        p.extend_from_slice(b);
    };
    for g in &c.groups {
        p.extend_from_slice(&g.group.to_le_bytes());
        let flags = (if g.vote.is_some() { HAS_VOTE } else { 0 })
            | (if g.committed.is_some() {
                HAS_COMMITTED
            } else {
                0
            })
            | (if g.purged.is_some() { HAS_PURGED } else { 0 })
            | (if g.log.is_some() { HAS_LOG } else { 0 });
        p.push(flags);
        if let Some(v) = &g.vote {
            bytes(&mut p, v);
        }
        if let Some(c) = &g.committed {
            bytes(&mut p, c);
        }
        if let Some((upto, id)) = &g.purged {
            p.extend_from_slice(&upto.to_le_bytes());
            bytes(&mut p, id);
        }
        if let Some((first, last)) = g.log {
            p.extend_from_slice(&first.to_le_bytes());
            p.extend_from_slice(&last.to_le_bytes());
        }
    }
    put(buf, Kind::Checkpoint, 0, &[&p])
}

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// An append: `data` is the entry, or its sealed form when `sealed`.
    Entry {
        index: u64,
        data: &'a [u8],
        sealed: bool,
    },
    /// A live entry moved here, sealed under the active key.
    Resealed {
        index: u64,
        data: &'a [u8],
    },
    Vote(&'a [u8]),
    Committed(&'a [u8]),
    Truncate {
        after: Option<u64>,
    },
    Purge {
        upto: u64,
        log_id: &'a [u8],
    },
    RemoveGroup,
    Checkpoint(Checkpoint),
}

/// A record whose frame checks out: its place, group and decoded contents.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Offset of the record's first byte in the segment.
    pub at: usize,
    /// The whole record's length, frame included.
    pub len: usize,
    pub group: GroupId,
    pub record: Record<'a>,
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// The frame does not check out (short, bad length, wrong checksum): a write that never
    /// completed, or damage; [`looks_torn`] tells which.
    Frame(String),
    /// The checksum holds but the contents make no sense: never a torn write.
    Contents(String),
}

/// Reads the record at `at`, or None at the end of `data`.
pub fn read(data: &[u8], at: usize) -> Result<Option<Frame<'_>>, Bad> {
    if at == data.len() {
        return Ok(None);
    }
    let (len, kind) = check_frame(data, at)?;
    let body = &data[at + FRAME_LEN..at + FRAME_LEN + len];
    let group = u16::from_le_bytes([body[1], body[2]]);
    let record = decode(kind, &body[KIND_LEN..]).map_err(Bad::Contents)?;
    Ok(Some(Frame {
        at,
        len: FRAME_LEN + len,
        group,
        record,
    }))
}

/// Checks the frame at `at`: returns the checksummed length and the type.
fn check_frame(data: &[u8], at: usize) -> Result<(usize, Kind), Bad> {
    let rest = &data[at..];
    if rest.len() < FRAME_LEN {
        return Err(Bad::Frame(format!(
            "{} bytes left, less than a record header",
            rest.len()
        )));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len < KIND_LEN {
        return Err(Bad::Frame(format!("record length {len} is too short")));
    }
    if len > rest.len() - FRAME_LEN {
        return Err(Bad::Frame(format!(
            "record length {len} runs past the end of the file"
        )));
    }
    let body = &rest[FRAME_LEN..FRAME_LEN + len];
    if CRC.checksum(body) != crc {
        return Err(Bad::Frame("checksum mismatch".into()));
    }
    let kind = Kind::from_u8(body[0])
        .ok_or_else(|| Bad::Contents(format!("unknown record type {}", body[0])))?;
    Ok((len, kind))
}

/// Whether the bad frame at `at` is the torn end of an interrupted write rather than damage:
/// torn when nothing after it parses as a record, or when only zeros lie between it and the
/// next record (pages the kernel never wrote back while later ones made it: unsynced, so
/// nothing acknowledged follows them). Otherwise returns the offset of the record that
/// follows the damage.
pub fn looks_torn(data: &[u8], at: usize) -> Result<(), usize> {
    let Some(nonzero) = data[at..].iter().position(|&b| b != 0) else {
        return Ok(());
    };
    for p in at + nonzero + 1..data.len() {
        // The type byte filters out most offsets before the checksum is computed.
        let plausible = data
            .get(p + FRAME_LEN)
            .is_some_and(|&t| Kind::from_u8(t).is_some());
        if plausible && check_frame(data, p).is_ok() {
            return Err(p);
        }
    }
    Ok(())
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn decode(kind: Kind, p: &[u8]) -> Result<Record<'_>, String> {
    let short = || format!("{kind:?} record payload of {} bytes is too short", p.len());
    Ok(match kind {
        Kind::Entry | Kind::SealedEntry => Record::Entry {
            index: u64_at(p, 0).ok_or_else(short)?,
            data: &p[8..],
            sealed: kind == Kind::SealedEntry,
        },
        Kind::Resealed => Record::Resealed {
            index: u64_at(p, 0).ok_or_else(short)?,
            data: &p[8..],
        },
        Kind::Vote => Record::Vote(p),
        Kind::Committed => Record::Committed(p),
        Kind::Truncate => match p {
            [0] => Record::Truncate { after: None },
            [1, rest @ ..] if rest.len() == 8 => Record::Truncate {
                after: u64_at(rest, 0),
            },
            _ => return Err(format!("Truncate record payload {p:?} is malformed")),
        },
        Kind::Purge => Record::Purge {
            upto: u64_at(p, 0).ok_or_else(short)?,
            log_id: &p[8..],
        },
        Kind::RemoveGroup if p.is_empty() => Record::RemoveGroup,
        Kind::RemoveGroup => return Err("RemoveGroup record has a payload".into()),
        Kind::Checkpoint => Record::Checkpoint(decode_checkpoint(p).ok_or_else(short)?),
    })
}

fn decode_checkpoint(p: &[u8]) -> Option<Checkpoint> {
    let mut at = 0;
    let take_u64 = |at: &mut usize| {
        let v = u64_at(p, *at);
        *at += 8;
        v
    };
    let prev_seq = take_u64(&mut at)?;
    let prev_len = take_u64(&mut at)?;
    let count = u32_at(p, at)? as usize;
    at += 4;
    let bytes = |at: &mut usize| -> Option<Vec<u8>> {
        let n = u32_at(p, *at)? as usize;
        let b = p.get(*at + 4..*at + 4 + n)?.to_vec();
        *at += 4 + n;
        Some(b)
    };
    // Each group takes at least 3 bytes: a huge count from a bad payload fails fast.
    let mut groups = Vec::with_capacity(count.min(p.len() / 3));
    for _ in 0..count {
        let group = u16::from_le_bytes(p.get(at..at + 2)?.try_into().ok()?);
        let flags = *p.get(at + 2)?;
        at += 3;
        let mut g = GroupCheckpoint {
            group,
            ..Default::default()
        };
        if flags & HAS_VOTE != 0 {
            g.vote = Some(bytes(&mut at)?);
        }
        if flags & HAS_COMMITTED != 0 {
            g.committed = Some(bytes(&mut at)?);
        }
        if flags & HAS_PURGED != 0 {
            let upto = take_u64(&mut at)?;
            g.purged = Some((upto, bytes(&mut at)?));
        }
        if flags & HAS_LOG != 0 {
            g.log = Some((take_u64(&mut at)?, take_u64(&mut at)?));
        }
        groups.push(g);
    }
    (at == p.len()).then_some(Checkpoint {
        prev_seq,
        prev_len,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        let ck = Checkpoint {
            prev_seq: 3,
            prev_len: 1234,
            groups: vec![
                GroupCheckpoint {
                    group: 7,
                    vote: Some(b"v".to_vec()),
                    committed: None,
                    purged: Some((9, b"id".to_vec())),
                    log: Some((10, 12)),
                },
                GroupCheckpoint {
                    group: 8,
                    committed: Some(vec![]),
                    ..Default::default()
                },
            ],
        };
        put_checkpoint(&mut buf, &ck);
        put(&mut buf, Kind::Entry, 7, &[&13u64.to_le_bytes(), b"hello"]);
        put(&mut buf, Kind::Truncate, 7, &[&[1], &5u64.to_le_bytes()]);
        put(&mut buf, Kind::Truncate, 7, &[&[0]]);
        put(&mut buf, Kind::Purge, 7, &[&20u64.to_le_bytes(), b"x"]);
        put(&mut buf, Kind::RemoveGroup, 7, &[]);
        let mut at = 0;
        let mut got = Vec::new();
        while let Some(f) = read(&buf, at).unwrap() {
            at += f.len;
            got.push((f.group, f.record));
        }
        assert_eq!(
            got,
            vec![
                (0, Record::Checkpoint(ck)),
                (
                    7,
                    Record::Entry {
                        index: 13,
                        data: b"hello",
                        sealed: false,
                    }
                ),
                (7, Record::Truncate { after: Some(5) }),
                (7, Record::Truncate { after: None }),
                (
                    7,
                    Record::Purge {
                        upto: 20,
                        log_id: b"x"
                    }
                ),
                (7, Record::RemoveGroup),
            ]
        );
    }

    #[test]
    fn sealed_entries_open_at_their_group_and_index_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::storage::at_rest::tests::key_file(dir.path(), "k", &["k1"]);
        let a = AtRest::load(&path).unwrap();
        assert_eq!(MAX_SEAL_OVERHEAD, at_rest::overhead(&"k".repeat(255)));
        let mut buf = Vec::new();
        let len = put_sealed(&mut buf, Kind::SealedEntry, 7, 13, b"hello", &a);
        put_sealed(&mut buf, Kind::Resealed, 7, 13, b"hello", &a);
        assert_eq!(len, ENTRY_DATA_AT + 5 + at_rest::overhead("k1"));
        let f = read(&buf, 0).unwrap().unwrap();
        let Record::Entry {
            index: 13,
            data,
            sealed: true,
        } = f.record
        else {
            panic!("{:?}", f.record);
        };
        assert_eq!(unseal(Some(&a), 7, 13, data).unwrap(), b"hello");
        assert_eq!(
            unseal(Some(&a), 7, 14, data),
            Err(OpenError::Tampered("k1".into()))
        );
        assert_eq!(
            unseal(Some(&a), 8, 13, data),
            Err(OpenError::Tampered("k1".into()))
        );
        assert_eq!(
            unseal(None, 7, 13, data),
            Err(OpenError::NoKeyFile("k1".into()))
        );
        let f = read(&buf, len).unwrap().unwrap();
        assert!(
            matches!(f.record, Record::Resealed { index: 13, data } if unseal(Some(&a), 7, 13, data).is_ok())
        );
    }

    #[test]
    fn torn_or_damaged() {
        let mut buf = Vec::new();
        for i in 0..3u64 {
            put(&mut buf, Kind::Entry, 1, &[&i.to_le_bytes(), b"abcdef"]);
        }
        let rec = buf.len() / 3;
        // The last record cut anywhere: torn.
        for cut in 2 * rec + 1..buf.len() {
            assert!(matches!(read(&buf[..cut], 2 * rec), Err(Bad::Frame(_))));
            assert_eq!(looks_torn(&buf[..cut], 2 * rec), Ok(()));
        }
        // A flipped byte in the middle one: damage, with the next record named.
        let mut damaged = buf.clone();
        damaged[rec + 12] ^= 1;
        assert_eq!(
            read(&damaged, rec).unwrap_err(),
            Bad::Frame("checksum mismatch".into())
        );
        assert_eq!(looks_torn(&damaged, rec), Err(2 * rec));
        // Zeros where the middle one should be, a record after them: pages never written.
        let mut hole = buf.clone();
        hole[rec..2 * rec].fill(0);
        assert_eq!(looks_torn(&hole, rec), Ok(()));
    }
}
