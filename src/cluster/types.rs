//! The Raft type configuration every cluster part shares: what a log entry carries, what
//! applying it returns, and how a node is addressed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's Raft id: assigned once when the node joins (the bootstrap assigns 1..=N in the
/// order of `cluster-peers`), never reused.
pub type NodeId = u64;

/// A slot group: one Raft group owning a contiguous range of hash slots.
pub type GroupId = u16;

/// How clients and peers reach a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The 40-hex node name CLUSTER NODES / MYID show.
    pub name: String,
    /// Announced host (hostname or IP) clients are redirected to.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// Node-to-node (bus) port.
    pub bus_port: u16,
}

impl NodeInfo {
    /// `host:bus_port`, where peers connect.
    pub fn bus_addr(&self) -> String {
        join_host_port(&self.host, self.bus_port)
    }

    /// `host:port`, where clients are redirected.
    pub fn client_addr(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One Raft log payload for a slot group. Deterministic to apply: the leader's clock is in
/// the entry, so every replica expires, computes and replies exactly alike.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Client commands (full argument vectors, name first), run in order at `now` (the
    /// leader's Unix milliseconds). `resp3`: how replies are encoded.
    Commands {
        now: u64,
        resp3: bool,
        cmds: Vec<Vec<Bytes>>,
    },
    /// Keys the leader found expired at `now`: each is deleted if still expired then.
    Expired { now: u64, keys: Vec<Bytes> },
    /// The meta group's only entry: the whole new cluster map (taken if its epoch is newer).
    Map(Box<super::topology::Layout>),
    /// Keys the leader chose to evict (over maxmemory): each is deleted if it still exists.
    /// (Last, so the entries stored before it existed decode unchanged.)
    Evict { keys: Vec<Bytes> },
}

/// What applying an entry returns to the proposer: one encoded RESP reply per command.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub replies: Vec<Bytes>,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = super::snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Membership = openraft::StoredMembership<NodeId, NodeInfo>;
