//! Wall-clock helpers (`CLOCK_REALTIME` via the vDSO: a few ns per call).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_are_sane_and_consistent() {
        let ms = now_ms();
        let us = now_us();
        // After 2020-01-01 and before 2100-01-01.
        assert!(ms > 1_577_836_800_000 && ms < 4_102_444_800_000, "{ms}");
        assert!(us / 1000 >= ms && us / 1000 - ms < 1000, "{us} vs {ms}");
        let later = now_ms();
        assert!(later >= ms);
    }
}
