//! Per-core server statistics (commands processed, network bytes, per-command calls and time),
//! each written by its own core only and summed by INFO.

use crate::shard::stats::Counter;

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
            commands: (0..commands).map(|_| CommandStat::default()).collect(),
        }
    }

    pub fn reset(&self) {
        self.commands_processed.set(0);
        self.net_input_bytes.set(0);
        self.net_output_bytes.set(0);
        self.connections_received.set(0);
        self.rejected_connections.set(0);
        for c in self.commands.iter() {
            c.calls.set(0);
            c.usec.set(0);
            c.rejected_calls.set(0);
            c.failed_calls.set(0);
        }
    }
}
