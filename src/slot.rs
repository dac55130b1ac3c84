//! CRC16 key slots, exactly as Redis Cluster computes them (hash tags included), slot groups,
//! and which core owns which slots.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A hash slot, 0..16384.
pub type Slot = u16;

/// Number of hash slots, fixed by the Redis Cluster protocol.
pub const SLOT_COUNT: usize = 16384;

/// The slot of `key`: CRC16-XMODEM of the key (or of the first non-empty `{hash tag}`) mod 16384.
pub fn key_slot(key: &[u8]) -> Slot {
    let hashed = hash_tag(key).unwrap_or(key);
    (XMODEM.checksum(hashed) as usize % SLOT_COUNT) as Slot
}

/// CRC16-XMODEM (the CCITT polynomial Redis Cluster uses), slice-by-16 tables: every command
/// hashes its keys, so the table-per-byte variant showed up at ~6% of a SET profile.
static XMODEM: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

/// The part of the key between the first `{` and the next `}`, if that part is non-empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The slots of group `g` of `groups`: contiguous, so a group is a few shards' ranges in
/// CLUSTER SLOTS.
pub fn group_slots(g: usize, groups: usize) -> Range<usize> {
    (g * SLOT_COUNT / groups)..((g + 1) * SLOT_COUNT / groups)
}

/// The group owning `slot` (the inverse of [`group_slots`]).
#[inline]
pub fn group_of(slot: usize, groups: usize) -> u16 {
    let g = slot * groups / SLOT_COUNT;
    let g = if g + 1 < groups && group_slots(g + 1, groups).start <= slot {
        g + 1
    } else {
        g
    };
    g as u16
}

/// Which core owns each hash slot: one contiguous range per core, in core order (SCAN walks
/// the cores in that order). Standalone, the slots are split evenly; in a cluster, whole slot
/// groups go to each core (a group's Raft, log and keys live on one core), `groups * c /
/// cores` onwards for core c. It changes only when a node with no data joins a cluster, so
/// reads are relaxed atomics.
pub struct SlotMap {
    /// Core c owns `bounds[c]..bounds[c + 1]`.
    bounds: Box<[AtomicUsize]>,
}

impl SlotMap {
    /// Slots split evenly over `cores`.
    pub fn even(cores: usize) -> SlotMap {
        SlotMap {
            bounds: (0..=cores)
                .map(|c| AtomicUsize::new(c * SLOT_COUNT / cores))
                .collect(),
        }
    }

    /// Slot groups split over `cores`, each group whole on one core.
    pub fn by_groups(cores: usize, groups: usize) -> SlotMap {
        let map = SlotMap::even(cores);
        map.assign_groups(groups);
        map
    }

    /// Reassigns the slots to the cores by `groups` slot groups (a joining node, empty).
    pub fn assign_groups(&self, groups: usize) {
        let cores = self.cores();
        for c in 0..=cores {
            let first_group = groups * c / cores;
            let start = if first_group >= groups {
                SLOT_COUNT
            } else {
                group_slots(first_group, groups).start
            };
            self.bounds[c].store(start, Relaxed);
        }
    }

    pub fn cores(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The slots core `core` owns.
    pub fn range(&self, core: usize) -> Range<usize> {
        self.bounds[core].load(Relaxed)..self.bounds[core + 1].load(Relaxed)
    }

    /// The core that owns `slot`.
    #[inline]
    pub fn core_of(&self, slot: usize) -> usize {
        // The last core whose range starts at or before the slot (ranges may be empty).
        let cores = self.cores();
        let mut lo = 0;
        let mut hi = cores;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.bounds[mid].load(Relaxed) <= slot {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots_from_the_cluster_spec() {
        // Values as printed by `CLUSTER KEYSLOT` on Redis/Valkey.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            XMODEM.checksum(b"foo{}{bar}") % 16384
        );
        // Only the first tag counts.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn slot_maps_cover_every_slot_in_core_order() {
        for cores in 1..6 {
            let even = SlotMap::even(cores);
            for groups in [1, 2, 3, 6, 7, 16] {
                let by = SlotMap::by_groups(cores, groups);
                for map in [&even, &by] {
                    let mut next = 0;
                    for c in 0..cores {
                        let r = map.range(c);
                        assert_eq!(r.start, next);
                        next = r.end;
                        for s in r {
                            assert_eq!(map.core_of(s), c, "slot {s} cores {cores}");
                        }
                    }
                    assert_eq!(next, SLOT_COUNT);
                }
                // Every group lies on one core.
                for g in 0..groups {
                    let r = group_slots(g, groups);
                    assert_eq!(by.core_of(r.start), by.core_of(r.end - 1));
                    assert_eq!(group_of(r.start, groups) as usize, g);
                    assert_eq!(group_of(r.end - 1, groups) as usize, g);
                }
            }
        }
    }
}
