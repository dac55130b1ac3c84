//! In-memory network for the probe: an RPC is a direct call on the target node's `Raft` handle,
//! which on this runtime is a message on the target core's channel and a reply on a oneshot,
//! all on the same thread. The router can cut a node off, to watch a leader lose its quorum.

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::rc::Rc;

use openraft::EmptyNode;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::VoteOf;

use crate::NodeId;
use crate::Raft;
use crate::TypeConfig;
use crate::store::Kv;

/// Every node's `Raft` handle, and which nodes are cut off.
#[derive(Default)]
pub struct Router {
    nodes: RefCell<BTreeMap<NodeId, Raft>>,
    isolated: RefCell<BTreeSet<NodeId>>,
    /// AppendEntries RPCs delivered (heartbeats included): per entry written, how much openraft
    /// batched.
    pub append_rpcs: Cell<u64>,
}

impl Router {
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.nodes.borrow_mut().insert(id, raft);
    }

    /// Drops every handle. The nodes' network factories hold the router, so this is what lets
    /// the nodes go.
    pub fn clear(&self) {
        self.nodes.borrow_mut().clear();
    }

    pub fn isolate(&self, id: NodeId) {
        self.isolated.borrow_mut().insert(id);
    }

    pub fn heal(&self) {
        self.isolated.borrow_mut().clear();
    }

    /// The target's handle, unless either end is cut off. Cloned so that no borrow of the
    /// router is held while the RPC runs.
    fn reach(&self, from: NodeId, to: NodeId) -> Result<Raft, Unreachable<TypeConfig>> {
        let isolated = self.isolated.borrow();
        if isolated.contains(&from) || isolated.contains(&to) {
            return Err(Unreachable::from_string(format!(
                "{from} -> {to}: partitioned"
            )));
        }
        self.nodes
            .borrow()
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("{from} -> {to}: no such node")))
    }
}

/// One node's view of the network.
pub struct Network {
    pub from: NodeId,
    pub router: Rc<Router>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> Connection {
        Connection {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

pub struct Connection {
    from: NodeId,
    to: NodeId,
    router: Rc<Router>,
}

/// The target node failed (stopped): to the caller it is unreachable.
fn unreachable<E: std::error::Error + 'static>(err: E) -> Unreachable<TypeConfig> {
    Unreachable::new(&err)
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Kv;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        let router = &self.router;
        router.append_rpcs.set(router.append_rpcs.get() + 1);
        Ok(raft.append_entries(rpc).await.map_err(unreachable)?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        Ok(raft.vote(rpc).await.map_err(unreachable)?)
    }

    // The trait's default grants every pre-vote without asking the target; forward it, or a
    // rejoining node could disrupt a healthy leader.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        Ok(raft.pre_vote(rpc).await.map_err(unreachable)?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Kv>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        Ok(raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(unreachable)?)
    }
}
