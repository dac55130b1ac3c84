//! SCAN cursors over hash tables.
//!
//! Valkey's SCAN promises that every element present for the whole iteration is returned at
//! least once, and allows duplicates. An open-addressing table moves elements when it grows,
//! so a bare bucket index is not a safe cursor. The cursor therefore carries the table's size
//! (log2 of its bucket count) in its low 6 bits: when the table was resized between two calls
//! the walk restarts at bucket 0, which can repeat elements but never skip one. Growth happens
//! at most ~40 times in a table's life, so the extra work is bounded — but a walk that races
//! a table growing faster than it is scanned keeps restarting until the growth pauses. Tables
//! here are per slot (keyspace) or per hash value, which keeps that window small.
//!
//! hashbrown also moves elements without changing size: when deletions have left tombstones
//! and an insert finds no room in a table at most half full, it rehashes in place. The size
//! cannot tell, so the owner of a table keeps an epoch it bumps whenever the table may rehash
//! (`Shard::before_insert`), and the cursor carries its low 12 bits above the size tag.

use hashbrown::HashTable;

const TAG_BITS: u32 = 6;
const EPOCH_BITS: u32 = 12;
/// Cursor bits below the bucket index: size tag and epoch.
const STAMP_BITS: u32 = TAG_BITS + EPOCH_BITS;

/// Walks `table` from `cursor`, calling `emit` for up to about `count` elements, and returns
/// the next cursor (0 when the walk is complete). For a table whose owner keeps no epoch.
pub fn scan_table<T>(table: &HashTable<T>, cursor: u64, count: usize, emit: impl FnMut(&T)) -> u64 {
    scan_table_at(table, 0, cursor, count, emit)
}

/// `scan_table` for a table whose owner bumps `epoch` whenever the table may have rehashed
/// in place; a cursor from another epoch restarts the walk.
pub fn scan_table_at<T>(
    table: &HashTable<T>,
    epoch: u32,
    cursor: u64,
    count: usize,
    mut emit: impl FnMut(&T),
) -> u64 {
    let buckets = table.num_buckets();
    if buckets == 0 || table.is_empty() {
        return 0;
    }
    let tag = buckets.trailing_zeros() as u64;
    let stamp = ((epoch as u64 & ((1 << EPOCH_BITS) - 1)) << TAG_BITS) | tag;
    let mut index = if cursor == 0 || (cursor & ((1 << STAMP_BITS) - 1)) != stamp {
        0
    } else {
        (cursor >> STAMP_BITS) as usize
    };
    let mut emitted = 0;
    // Like Valkey, bound the number of empty buckets visited per call.
    let mut budget = count.max(1).saturating_mul(10);
    while index < buckets && emitted < count.max(1) && budget > 0 {
        if let Some(item) = table.get_bucket(index) {
            emit(item);
            emitted += 1;
        }
        index += 1;
        budget -= 1;
    }
    if index >= buckets {
        0
    } else {
        ((index as u64) << STAMP_BITS) | stamp
    }
}
