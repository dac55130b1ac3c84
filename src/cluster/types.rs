//! The Raft type configuration every cluster part shares (openraft 0.10, single-threaded on
//! the glommio cores): what a log entry carries, how a node is addressed, and how a leader
//! hears that openraft refused or lost one of its proposals.

use std::fmt;

use bytes::Bytes;
use openraft::{OptionalSend, RaftTypeConfig};
use openraft10 as openraft;
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

/// The runtime: openraft's tasks, timers and channels on the glommio executor of the core
/// that hosts the group.
pub type Rt = tallykv_rt_glommio::GlommioRuntime;

/// A log entry's application data: an `engine::record` payload (a slot group's records, or
/// the meta group's map), already encoded and versioned. Serialized as a byte string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data(pub Bytes);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({} bytes)", self.0.len())
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// How openraft answers a proposal: the leader learns here only that a proposal was refused
/// or its fate became unknown; a commit it sees when the entry applies (see `engine`).
pub struct Reply<T> {
    answer: Option<Box<dyn FnOnce(Option<T>)>>,
}

impl<T> Reply<T> {
    /// `answer` runs once: with openraft's result, or with None if openraft drops the
    /// proposal unanswered (its group stopped).
    pub fn new(answer: impl FnOnce(Option<T>) + 'static) -> Self {
        Reply {
            answer: Some(Box::new(answer)),
        }
    }
}

impl<T: 'static> openraft::raft::responder::Responder<TypeConfig, T> for Reply<T> {
    fn on_complete(mut self, result: T) {
        if let Some(answer) = self.answer.take() {
            answer(Some(result));
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer(None);
        }
    }
}

/// Written by hand: `declare_raft_types!` cannot name a generic responder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TypeConfig;

impl RaftTypeConfig for TypeConfig {
    type D = Data;
    type R = ();
    type NodeId = NodeId;
    type Node = NodeInfo;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Data, NodeId, NodeInfo>;
    // With `leader_id_adv` the committed leader id is the leader id itself.
    type Entry = openraft::Entry<Self::LeaderId, Self::Payload>;
    type AsyncRuntime = Rt;
    type Responder<T>
        = Reply<T>
    where
        T: OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

pub type Entry = <TypeConfig as RaftTypeConfig>::Entry;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type Membership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig, super::sm::GroupSm>;
pub type ClientWriteResult = openraft::raft::ClientWriteResult<TypeConfig>;
