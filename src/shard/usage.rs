//! What a key takes in memory, for MEMORY USAGE and lazy freeing: the real allocation sizes
//! (jemalloc's size classes), with Valkey's sampling for the large encodings — the first
//! `samples` members (or nodes) are measured and their average stands for the rest, so the
//! answer for a 10M-member set costs what 5 members cost. `samples` = `usize::MAX` measures
//! everything (MEMORY USAGE ... SAMPLES 0).

pub use crate::metrics::memory::alloc_size;

/// MEMORY USAGE's default sample count (Valkey's OBJ_COMPUTE_SIZE_DEF_SAMPLES).
pub const DEFAULT_SAMPLES: usize = 5;

/// The sum of the first `samples` of `sizes`, extrapolated to `len` items (exact when it
/// measured them all).
pub fn sampled(sizes: impl Iterator<Item = usize>, len: usize, samples: usize) -> usize {
    let (mut total, mut n) = (0usize, 0usize);
    for size in sizes.take(samples.max(1)) {
        total += size;
        n += 1;
    }
    if n == 0 || n >= len {
        total
    } else {
        (total as f64 / n as f64 * len as f64) as usize
    }
}

/// The one allocation of a hashbrown table of `buckets` slots of `slot` bytes: the slots,
/// then a control byte per slot and a group's worth more (16 bytes with SSE2).
pub fn table_bytes(buckets: usize, slot: usize) -> usize {
    if buckets == 0 {
        0
    } else {
        alloc_size(buckets * (slot + 1) + 16)
    }
}

/// The allocation of a Vec's buffer of `capacity` items of `item` bytes.
pub fn vec_bytes(capacity: usize, item: usize) -> usize {
    alloc_size(capacity * item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_extrapolates_and_is_exact_when_it_sees_everything() {
        assert_eq!(sampled([10, 20, 30].into_iter(), 3, 5), 60);
        assert_eq!(sampled([10, 20, 30].into_iter(), 3, usize::MAX), 60);
        // Two of four measured: their average stands for the other two.
        assert_eq!(sampled([10, 30, 99, 99].into_iter(), 4, 2), 80);
        assert_eq!(sampled(std::iter::empty(), 0, 5), 0);
    }

    #[test]
    fn sizes_are_size_classes() {
        assert_eq!(alloc_size(0), 0);
        assert!(alloc_size(1) >= 1);
        assert!(alloc_size(100) >= 100);
        assert!(alloc_size(4097) >= 4097);
        assert_eq!(table_bytes(0, 16), 0);
        assert!(table_bytes(8, 16) >= 8 * 17 + 16);
    }
}
