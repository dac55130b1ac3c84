//! Per-core server statistics (commands processed, network bytes, per-command calls and time),
//! each written by its own core only and summed by INFO.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::shard::stats::Counter;

/// Valkey stops tracking new error codes after this many distinct ones (errorstats), so a
/// client cannot grow the table without bound by inventing codes.
pub const MAX_ERROR_CODES: usize = 128;

#[derive(Default)]
pub struct CommandStat {
    pub calls: Counter,
    pub usec: Counter,
    pub rejected_calls: Counter,
    pub failed_calls: Counter,
}

#[repr(align(128))]
pub struct CoreStats {
    pub commands_processed: Counter,
    pub net_input_bytes: Counter,
    pub net_output_bytes: Counter,
    pub connections_received: Counter,
    pub rejected_connections: Counter,
    /// Clients closed for passing client-query-buffer-limit (INFO
    /// client_query_buffer_limit_disconnections).
    pub client_qbuf_limit_disconnections: Counter,
    /// Every error reply sent (INFO total_error_replies).
    pub error_replies: Counter,
    /// Error replies per error code ("ERR", "WRONGTYPE", ...), for INFO errorstats. Only the
    /// core's own connections write it, and only on an error reply, so the lock is uncontended.
    pub errors_by_code: Mutex<Vec<(Box<str>, u64)>>,
    /// Indexed by the command registry's id (subcommands included).
    pub commands: Box<[CommandStat]>,
}

impl CoreStats {
    pub fn new(commands: usize) -> CoreStats {
        CoreStats {
            commands_processed: Counter::default(),
            net_input_bytes: Counter::default(),
            net_output_bytes: Counter::default(),
            connections_received: Counter::default(),
            rejected_connections: Counter::default(),
            client_qbuf_limit_disconnections: Counter::default(),
            error_replies: Counter::default(),
            errors_by_code: Mutex::new(Vec::new()),
            commands: (0..commands).map(|_| CommandStat::default()).collect(),
        }
    }

    pub fn reset(&self) {
        self.commands_processed.set(0);
        self.net_input_bytes.set(0);
        self.net_output_bytes.set(0);
        self.connections_received.set(0);
        self.rejected_connections.set(0);
        self.client_qbuf_limit_disconnections.set(0);
        self.error_replies.set(0);
        self.errors_by_code
            .lock()
            .expect("error stats lock")
            .clear();
        for c in self.commands.iter() {
            c.calls.set(0);
            c.usec.set(0);
            c.rejected_calls.set(0);
            c.failed_calls.set(0);
        }
    }
}

impl CoreStats {
    /// Counts one error reply (`reply` starts with `-`): its code is the text up to the first
    /// space, as Valkey's errorstats keys it.
    pub fn count_error(&self, reply: &[u8]) {
        self.error_replies.inc();
        let body = reply.strip_prefix(b"-").unwrap_or(reply);
        let end = body
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(body.len());
        let code = String::from_utf8_lossy(&body[..end]);
        let mut codes = self.errors_by_code.lock().expect("error stats lock");
        if let Some(entry) = codes.iter_mut().find(|(c, _)| **c == *code) {
            entry.1 += 1;
        } else if codes.len() < MAX_ERROR_CODES {
            codes.push((code.into(), 1));
        }
    }
}

static OPS_SAMPLES: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
static OPS_LAST: AtomicU64 = AtomicU64::new(0);
static OPS_INDEX: AtomicU64 = AtomicU64::new(0);

/// Records commands/second over the last 100 ms (called by core 0 only).
pub fn sample_ops(shared: &crate::state::Shared) {
    let total = shared.sum_cores(|c| c.commands_processed.get());
    let last = OPS_LAST.swap(total, Relaxed);
    let i = OPS_INDEX.fetch_add(1, Relaxed) as usize % OPS_SAMPLES.len();
    OPS_SAMPLES[i].store(total.saturating_sub(last) * 10, Relaxed);
}

/// INFO's instantaneous_ops_per_sec: the mean of the last 16 samples.
pub fn ops_per_sec() -> u64 {
    OPS_SAMPLES.iter().map(|s| s.load(Relaxed)).sum::<u64>() / OPS_SAMPLES.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_code() {
        let s = CoreStats::new(0);
        s.count_error(b"-ERR syntax error\r\n");
        s.count_error(b"-WRONGTYPE Operation\r\n");
        s.count_error(b"-ERR x\r\n");
        s.count_error(b"-NOPROTO\r\n");
        assert_eq!(s.error_replies.get(), 4);
        let codes = s.errors_by_code.lock().unwrap().clone();
        assert_eq!(
            codes,
            vec![
                ("ERR".into(), 2),
                ("WRONGTYPE".into(), 1),
                ("NOPROTO".into(), 1)
            ]
        );
        s.reset();
        assert_eq!(s.error_replies.get(), 0);
        assert!(s.errors_by_code.lock().unwrap().is_empty());
    }
}
