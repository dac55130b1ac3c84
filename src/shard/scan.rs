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

use hashbrown::HashTable;

const TAG_BITS: u32 = 6;

/// Walks `table` from `cursor`, calling `emit` for up to about `count` elements, and returns
/// the next cursor (0 when the walk is complete).
pub fn scan_table<T>(
    table: &HashTable<T>,
    cursor: u64,
    count: usize,
    mut emit: impl FnMut(&T),
) -> u64 {
    let buckets = table.num_buckets();
    if buckets == 0 || table.is_empty() {
        return 0;
    }
    let tag = buckets.trailing_zeros() as u64;
    let mut index = if cursor == 0 || (cursor & ((1 << TAG_BITS) - 1)) != tag {
        0
    } else {
        (cursor >> TAG_BITS) as usize
    };
    let mut emitted = 0;
    // Like Valkey, bound the number of empty buckets visited per call.
    let mut budget = count.max(1) * 10;
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
        ((index as u64) << TAG_BITS) | tag
    }
}
