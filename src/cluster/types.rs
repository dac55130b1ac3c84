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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The 40-hex node name CLUSTER NODES / MYID show.
    pub name: String,
    /// Announced host (hostname or IP) clients are redirected to.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// Node-to-node (bus) port.
    pub bus_port: u16,
    /// TLS client port (`tls-port`; 0: none). Last, so that encoding version 1, which ends
    /// before it, reads as a prefix (see `Deserialize` below).
    pub tls_port: u16,
}

impl NodeInfo {
    /// `host:bus_port`, where peers connect.
    pub fn bus_addr(&self) -> String {
        join_host_port(&self.host, self.bus_port)
    }

    /// The port a client is told to use: for a client on TLS the TLS port, for the others the
    /// plain one (Valkey's rule, so each reaches the node the way it reached this one). When
    /// the node has no port of that kind, its other port: a node always has one, a port 0 is
    /// of no use to anyone, and a map that does not know a node's TLS port yet (it is
    /// announced once the node is a member, see `membership`) then still names a port.
    pub fn client_port(&self, tls: bool) -> u16 {
        let (wanted, other) = if tls {
            (self.tls_port, self.port)
        } else {
            (self.port, self.tls_port)
        };
        if wanted != 0 { wanted } else { other }
    }

    /// `host:port` a client is redirected to (see [`NodeInfo::client_port`]).
    pub fn client_addr(&self, tls: bool) -> String {
        join_host_port(&self.host, self.client_port(tls))
    }
}

/// Written by hand: the bytes of encoding version 1 end before `tls_port`, and postcard (not
/// self-describing) cannot tell, so the version `wire::decode` is reading picks the layout.
impl<'de> Deserialize<'de> for NodeInfo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// NodeInfo as encoding version 1 wrote it.
        #[derive(Deserialize)]
        #[serde(rename = "NodeInfo")]
        struct V1 {
            name: String,
            host: String,
            port: u16,
            bus_port: u16,
        }
        /// NodeInfo as this build writes it.
        #[derive(Deserialize)]
        #[serde(rename = "NodeInfo")]
        struct V2 {
            name: String,
            host: String,
            port: u16,
            bus_port: u16,
            tls_port: u16,
        }
        if super::wire::decoding_version() == 1 {
            let n = V1::deserialize(d)?;
            return Ok(NodeInfo {
                name: n.name,
                host: n.host,
                port: n.port,
                bus_port: n.bus_port,
                tls_port: 0,
            });
        }
        let n = V2::deserialize(d)?;
        Ok(NodeInfo {
            name: n.name,
            host: n.host,
            port: n.port,
            bus_port: n.bus_port,
            tls_port: n.tls_port,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_told_the_port_of_its_kind_else_the_other() {
        let mut n = NodeInfo {
            host: "::1".into(),
            port: 7000,
            tls_port: 7443,
            ..NodeInfo::default()
        };
        assert_eq!(n.client_addr(false), "[::1]:7000");
        assert_eq!(n.client_addr(true), "[::1]:7443");
        n.tls_port = 0; // no TLS, or not announced yet
        assert_eq!(n.client_port(true), 7000);
        n.tls_port = 7443;
        n.port = 0; // TLS only
        assert_eq!(n.client_port(false), 7443);
    }
}
