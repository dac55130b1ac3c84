//! Figures about the process: memory from the allocator, per-core command statistics.
//! (Prometheus export comes with the metrics issue; INFO reads these today.)

pub mod memory;
pub mod stats;

pub use memory::Memory;
pub use stats::CoreStats;
