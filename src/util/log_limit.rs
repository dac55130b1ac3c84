//! At most one log line per period for a kind of event, with a count of the events not logged
//! since the last line: for events a stranger can cause at will (refused bus connections,
//! writes the PAN guard catches), so that they cannot flood the log. Kept per thread by its
//! users (a `thread_local!`), so no lock.

use std::time::{Duration, Instant};

pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    /// Events since the last one logged.
    unlogged: u64,
}

impl LogLimit {
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// Whether an event at `now` is logged, and if so how many went unlogged before it.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}
