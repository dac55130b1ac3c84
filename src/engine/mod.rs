//! The write path: where a command's records go once a handler has produced them.
//!
//! One seam with two sides (DESIGN.md): standalone, a core applies records to its shard and
//! hands the changed keys to storage; in a cluster, the slot group's leader applies them
//! while it evaluates (recording before-images, `spec`), proposes them through the group's
//! Raft log as one entry per loop pass (`record`), and answers once that entry commits;
//! replicas apply the records and never execute a command.
//!
//! This room knows commands only through the command table and handlers; it never touches
//! sockets (server) or files (storage).

mod blocking;
pub mod core;
pub mod dispatch;
pub mod gate;
pub mod libraries;
pub mod pause;
pub mod persist;
pub mod record;
pub mod replicated;
mod routing;
mod span;
pub mod spec;
mod tx;
pub mod users;

#[cfg(test)]
mod tests;

/// A closing connection's transaction state: its WATCH registrations are dropped.
pub fn tx_cleanup(core: &std::rc::Rc<core::Core>, client: &mut crate::command::connection::Client) {
    client.multi = None;
    tx::unwatch(core, client);
}
