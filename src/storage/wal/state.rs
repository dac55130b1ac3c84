//! The log's memory: where each live entry sits, which segments hold live entries, and the
//! bytes of recent entries. Nothing here touches a file.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

use super::GroupId;
use super::record::GroupCheckpoint;
use super::syncer::SegmentFile;

/// Where a live entry's record sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Loc {
    pub(super) seg: u64,
    /// Offset of the record (not of the entry's bytes) in the segment.
    pub(super) at: u64,
    /// The whole record's length.
    pub(super) len: u32,
}

/// The index an append must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// A log that never held anything, or lost everything to a truncation, with nothing
    /// purged: a group's log may begin anywhere (a follower catching up from a snapshot).
    Any,
    Index(u64),
    /// The last index is `u64::MAX`.
    Full,
}

impl Next {
    /// One past the last entry, else one past the purge point.
    pub(super) fn of(last: Option<u64>, purged: Option<u64>) -> Next {
        match last.or(purged) {
            None => Next::Any,
            Some(i) => i.checked_add(1).map_or(Next::Full, Next::Index),
        }
    }

    pub(super) fn accepts(self, index: u64) -> bool {
        match self {
            Next::Any => true,
            Next::Index(i) => i == index,
            Next::Full => false,
        }
    }

    pub(super) fn expected(self) -> Option<u64> {
        match self {
            Next::Index(i) => Some(i),
            _ => None,
        }
    }
}

impl fmt::Display for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Next::Any => write!(f, "any index would do"),
            Next::Index(i) => write!(f, "expected {i}"),
            Next::Full => write!(f, "the log is full"),
        }
    }
}

/// One group's state. Its log is `locs`, entries `first..first + locs.len()`, whole: appends
/// are contiguous and drops only take a prefix (purge) or a suffix (truncate).
#[derive(Default)]
pub(super) struct Group {
    pub(super) vote: Option<Vec<u8>>,
    pub(super) committed: Option<Vec<u8>>,
    pub(super) purged: Option<(u64, Vec<u8>)>,
    /// The index of `locs[0]`; meaningless while `locs` is empty.
    pub(super) first: u64,
    pub(super) locs: VecDeque<Loc>,
    /// The bytes of the newest `cached.len()` entries (a suffix of the log, so a read knows
    /// from the index alone whether it is cached).
    pub(super) cached: VecDeque<Bytes>,
}

impl Group {
    pub(super) fn last(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }

    pub(super) fn next(&self) -> Next {
        Next::of(self.last(), self.purged.as_ref().map(|p| p.0))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.vote.is_none()
            && self.committed.is_none()
            && self.purged.is_none()
            && self.locs.is_empty()
    }

    /// The first index whose bytes are cached.
    pub(super) fn cached_from(&self) -> u64 {
        self.first + (self.locs.len() - self.cached.len()) as u64
    }

    pub(super) fn checkpoint(&self, group: GroupId) -> GroupCheckpoint {
        GroupCheckpoint {
            group,
            vote: self.vote.clone(),
            committed: self.committed.clone(),
            purged: self.purged.clone(),
            log: self.last().map(|last| (self.first, last)),
        }
    }
}

pub(super) struct Segment {
    pub(super) file: Arc<SegmentFile>,
    /// Bytes written to the file (the buffer goes after them).
    pub(super) len: u64,
    /// Live entries in it.
    pub(super) live: usize,
    /// The keys its entry records were sealed under, live or dead.
    pub(super) sealed_under: SealedUnder,
}

/// The at-rest keys a segment's entry records were sealed under (None: plaintext, or a
/// sealed record whose key id does not read). Dead records count too: a rotation is over
/// only once no file holds anything under an old key, so the key may leave the key file.
#[derive(Clone, Debug, Default)]
pub(super) struct SealedUnder(Vec<Option<Box<str>>>);

impl SealedUnder {
    /// Notes a record sealed under `key` (a segment sees one or two keys: the check is cheap).
    pub(super) fn note(&mut self, key: Option<&str>) {
        if !self.0.iter().any(|k| k.as_deref() == key) {
            self.0.push(key.map(Into::into));
        }
    }

    /// Whether a record is in plaintext or sealed under another key than `active`.
    pub(super) fn stale(&self, active: &str) -> bool {
        self.0.iter().any(|k| k.as_deref() != Some(active))
    }
}

/// The segments and which of them may go.
pub(super) struct Segments {
    pub(super) map: BTreeMap<u64, Segment>,
    pub(super) current: u64,
    /// Segments with no live entry left, and the write sequence number that carries the last
    /// record that killed one of their entries: deleted once the syncer is past it.
    pub(super) dying: Vec<(u64, u64)>,
}

impl Segments {
    pub(super) fn current(&mut self) -> &mut Segment {
        self.map
            .get_mut(&self.current)
            .expect("the current segment is never removed from the map")
    }

    /// Counts an entry out of its segment; `dead_at` is the write that will carry the record
    /// that dropped it.
    pub(super) fn release(&mut self, loc: Loc, dead_at: u64) {
        let seg = self
            .map
            .get_mut(&loc.seg)
            .expect("a segment stays in the map while it holds live entries");
        seg.live -= 1;
        if seg.live == 0 && loc.seg != self.current {
            self.dying.push((loc.seg, dead_at));
        }
    }
}

/// The memory of recent entries: each group caches a suffix of its log; this keeps the order
/// they were appended in, across groups, to drop the oldest first.
#[derive(Default)]
pub(super) struct Cache {
    /// (group, index, loc) per cached append, oldest first. An item whose entry has left the
    /// cache another way (truncated, purged, group removed) is stale and skipped.
    pub(super) order: VecDeque<(GroupId, u64, Loc)>,
    pub(super) bytes: usize,
    pub(super) entries: usize,
}

impl Cache {
    fn is_live(groups: &AHashMap<GroupId, Group>, item: &(GroupId, u64, Loc)) -> bool {
        let (group, index, loc) = *item;
        groups.get(&group).is_some_and(|g| {
            !g.cached.is_empty()
                && index >= g.cached_from()
                && g.last().is_some_and(|last| index <= last)
                && g.locs[(index - g.first) as usize] == loc
        })
    }

    pub(super) fn evict(&mut self, groups: &mut AHashMap<GroupId, Group>, limit: usize) {
        while self.bytes > limit {
            let Some(item) = self.order.pop_front() else {
                break;
            };
            if Self::is_live(groups, &item)
                && let Some(g) = groups.get_mut(&item.0)
            {
                // A group's cached entries were appended in index order, so its oldest live
                // item in `order` is its first cached entry.
                debug_assert_eq!(item.1, g.cached_from());
                let Some(b) = g.cached.pop_front() else {
                    continue;
                };
                self.bytes -= b.len();
                self.entries -= 1;
            }
        }
    }

    /// Forgets one entry's bytes (the log dropped it).
    pub(super) fn forget(&mut self, b: Bytes) {
        self.bytes -= b.len();
        self.entries -= 1;
    }

    /// Drops stale items once they outnumber the live ones, so `order` stays bounded when
    /// entries leave by purge and truncation rather than by eviction.
    pub(super) fn compact(&mut self, groups: &AHashMap<GroupId, Group>) {
        if self.order.len() > 2 * self.entries + 1024 {
            self.order.retain(|item| Self::is_live(groups, item));
        }
    }
}
