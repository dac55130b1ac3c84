//! openraft's network over the cluster bus (`link`): each core's groups talk to the same
//! groups on the peers through that core's links, and the bus frames a core's tasks queue in
//! one event-loop pass go out in one write. Replication is pipelined: a leader streams
//! AppendEntries without waiting for each reply (openraft's `stream_append`), the follower
//! feeds them in arrival order to its Raft and answers them in order.
//!
//! Payloads are [`wire`] encodings of openraft's request and response types. A request kind
//! is one byte, the slot group the frame's group field:
//!
//! | kind | request | reply |
//! |---|---|---|
//! | 1 stream append | AppendEntriesRequest | StreamAppendResult |
//! | 2 vote | VoteRequest | VoteResponse |
//! | 3 pre-vote | VoteRequest | VoteResponse |
//! | 4 snapshot chunk | [`Chunk`] | `Option<SnapshotResponse>` (on the last chunk) |
//! | 5 transfer leader | TransferLeaderRequest | TransferLeaderResponse |
//! | 6 append | AppendEntriesRequest | AppendEntriesResponse |
//! | 7 admin | `node::Call` (`admin`) | its reply |
//!
//! A failure that is not openraft's answer (unknown group, undecodable request, Raft stopped)
//! is an error frame, which the caller sees as a network error and retries.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Read;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::{FutureExt, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::type_config::alias::SnapshotOf;
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use openraft10 as openraft;
use serde::{Deserialize, Serialize};

use super::link::{BusError, Links};
use super::node::ClusterNode;
use super::snapshot::{Meta, SnapshotFile};
use super::types::{GroupId, NodeId, NodeInfo, Raft, TypeConfig, Vote};
use super::wire;

pub const KIND_STREAM_APPEND: u8 = 1;
pub const KIND_VOTE: u8 = 2;
pub const KIND_PRE_VOTE: u8 = 3;
pub const KIND_SNAPSHOT: u8 = 4;
pub const KIND_TRANSFER_LEADER: u8 = 5;
pub const KIND_APPEND: u8 = 6;
pub const KIND_ADMIN: u8 = 7;

/// Bytes of a snapshot per chunk: large enough that a big snapshot is not thousands of round
/// trips, small enough to sit in memory twice (one read ahead).
const SNAPSHOT_CHUNK: usize = 4 * 1024 * 1024;
/// Appends one stream keeps in flight at most.
const STREAM_WINDOW: usize = 64;

/// One piece of a snapshot transfer; the last carries the meta and asks for the install.
#[derive(Serialize, Deserialize)]
pub struct Chunk {
    pub vote: Vote,
    pub offset: u64,
    pub data: Bytes,
    /// On the last chunk: the snapshot's meta.
    pub done: Option<Meta>,
}

fn rpc_err(e: BusError) -> RPCError<TypeConfig> {
    match e {
        BusError::Unreachable(_) | BusError::Handshake(_) => {
            RPCError::Unreachable(Unreachable::from_string(e.to_string()))
        }
        _ => RPCError::Network(NetworkError::from_string(e.to_string())),
    }
}

fn decode_err(e: wire::WireError) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e.0))
}

/// Creates a group's connections to its peers.
pub struct NetFactory {
    pub group: GroupId,
    pub links: Rc<Links>,
    pub node: Arc<ClusterNode>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = GroupConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupConnection {
        GroupConnection {
            group: self.group,
            target,
            addr: node.bus_addr(),
            links: self.links.clone(),
            me: self.node.id,
        }
    }
}

/// One group's connection to one peer (over the core's shared link to it).
pub struct GroupConnection {
    group: GroupId,
    target: NodeId,
    addr: String,
    links: Rc<Links>,
    me: NodeId,
}

impl GroupConnection {
    async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        kind: u8,
        req: &Req,
        timeout: Duration,
        what: &str,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let reply = self
            .links
            .call(&self.addr, kind, self.group, wire::encode(req), timeout)
            .await
            .map_err(|e| match e {
                BusError::Timeout(t) => RPCError::Timeout(Timeout {
                    action: RPCTypes::AppendEntries,
                    id: self.me,
                    target: self.target,
                    timeout: t,
                }),
                e => rpc_err(e),
            })?;
        wire::decode(&reply, what).map_err(decode_err)
    }
}

impl RaftNetworkV2<TypeConfig> for GroupConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_APPEND, &rpc, option.soft_ttl(), "append reply")
            .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        let (links, addr, group) = (self.links.clone(), self.addr.clone(), self.group);
        let timeout = option.soft_ttl();
        let send = move |req: &AppendEntriesRequest<TypeConfig>| {
            links.call(&addr, KIND_STREAM_APPEND, group, wire::encode(req), timeout)
        };
        let decode = |reply: Result<Bytes, BusError>| {
            let reply = reply.map_err(rpc_err)?;
            wire::decode::<StreamAppendResult<TypeConfig>>(&reply, "stream append reply")
                .map_err(decode_err)
        };
        // Each job's frame is queued as the stream reaches it (in order, on the one
        // connection); up to STREAM_WINDOW jobs are awaited at once, answered in order.
        let replies = Coalesce::new(input)
            .map(move |job| {
                let first = send(job.first());
                let send = send.clone();
                async move {
                    match job {
                        Job::One(_) => vec![decode(first.await)],
                        Job::Behind { probe, .. } => {
                            let with = decode(first.await);
                            match with {
                                // The entries' success says the follower holds everything up
                                // to their previous entry, so up to the probe's too, and it
                                // carried a commit index at least as recent.
                                Ok(Ok(_)) => vec![Ok(Ok(probe.prev_log_id)), with],
                                // Anything else: ask the follower what it says to the probe.
                                other => vec![decode(send(&probe).await), other],
                            }
                        }
                    }
                }
            })
            .buffered(STREAM_WINDOW)
            .flat_map(futures::stream::iter);
        // An error ends the stream (openraft restarts replication after it).
        let mut failed = false;
        let out = replies
            .take_while(move |r| {
                let go = !failed;
                failed |= r.is_err();
                futures::future::ready(go)
            })
            .boxed_local();
        Box::pin(async move { Ok(out) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_VOTE, &rpc, option.soft_ttl(), "vote reply")
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_PRE_VOTE, &rpc, option.soft_ttl(), "pre-vote reply")
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Snapshot { meta, snapshot } = snapshot;
        // Read on a thread of its own, one chunk ahead: a large snapshot not in the page
        // cache must not stall the core. The peer is sent the plaintext (offsets count its
        // bytes): a file sealed at rest here is opened as it is read, and the peer seals
        // under its own key what it receives (the bus has its own TLS).
        let (tx, mut rx) = mpsc::channel::<Result<(u64, Vec<u8>), String>>(1);
        std::thread::Builder::new()
            .name("tallykv-snapsend".into())
            .spawn(move || {
                let mut tx = tx;
                let mut offset = 0u64;
                // Opened here, not on the core: opening a sealed file reads its header.
                let mut file = match snapshot.plaintext() {
                    Ok(file) => file,
                    Err(e) => {
                        let _ =
                            futures::executor::block_on(futures::SinkExt::send(&mut tx, Err(e)));
                        return;
                    }
                };
                loop {
                    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                    let mut n = 0;
                    let read = loop {
                        match file.read(&mut buf[n..]) {
                            Ok(0) => break Ok(()),
                            Ok(k) => {
                                n += k;
                                if n == buf.len() {
                                    break Ok(());
                                }
                            }
                            Err(e) => break Err(e.to_string()),
                        }
                    };
                    buf.truncate(n);
                    let item = read.map(|()| (offset, buf));
                    let last = !matches!(&item, Ok((_, b)) if !b.is_empty());
                    offset += n as u64;
                    if futures::executor::block_on(futures::SinkExt::send(&mut tx, item)).is_err()
                        || last
                    {
                        return;
                    }
                }
            })
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
        let send = async {
            let timeout = option.soft_ttl().max(Duration::from_secs(30));
            let mut next = rx.next().await;
            loop {
                let (offset, data) = match next.take() {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => {
                        return Err(StreamingError::Network(NetworkError::from_string(e)));
                    }
                    None => (0, Vec::new()),
                };
                let following = if data.is_empty() {
                    None
                } else {
                    rx.next().await
                };
                let last = data.is_empty()
                    || match &following {
                        None => true,
                        Some(Ok((_, d))) => d.is_empty(),
                        Some(Err(_)) => false,
                    };
                let chunk = Chunk {
                    vote,
                    offset,
                    data: Bytes::from(data),
                    done: last.then(|| meta.clone()),
                };
                let reply: Option<SnapshotResponse<TypeConfig>> = self
                    .call(KIND_SNAPSHOT, &chunk, timeout, "snapshot reply")
                    .await
                    .map_err(StreamingError::from)?;
                if last {
                    return reply.ok_or_else(|| {
                        StreamingError::Network(NetworkError::from_string(
                            "the peer did not install the snapshot",
                        ))
                    });
                }
                next = following;
            }
        };
        futures::pin_mut!(send);
        let cancel = cancel.fuse();
        futures::pin_mut!(cancel);
        futures::select! {
            r = send.fuse() => r,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            KIND_TRANSFER_LEADER,
            &req,
            option.soft_ttl(),
            "transfer reply",
        )
        .await
    }
}

/// How long an append without entries (openraft sends one to pass on a new commit index)
/// waits for the next append with entries, which carries a commit index at least as recent:
/// while writes flow, the commit rides the next entry's frame instead of costing a round trip
/// of its own; when they stop, it goes out after this.
const PROBE_DELAY: Duration = Duration::from_millis(20);

/// What the replication stream sends: one append, or a held probe (no entries) answered
/// by the append with entries that followed it.
enum Job {
    One(AppendEntriesRequest<TypeConfig>),
    Behind {
        probe: AppendEntriesRequest<TypeConfig>,
        with: AppendEntriesRequest<TypeConfig>,
    },
}

impl Job {
    /// The request sent first (the only one sent, for a probe whose follower answers).
    fn first(&self) -> &AppendEntriesRequest<TypeConfig> {
        match self {
            Job::One(r) => r,
            Job::Behind { with, .. } => with,
        }
    }
}

/// Turns openraft's appends into jobs, holding an append without entries for up to
/// [`PROBE_DELAY`] in case entries follow (see [`PROBE_DELAY`]).
struct Coalesce<S> {
    input: S,
    held: Option<AppendEntriesRequest<TypeConfig>>,
    timer: Option<glommio::timer::Timer>,
    queued: VecDeque<Job>,
    ended: bool,
}

impl<S> Coalesce<S> {
    fn new(input: S) -> Self {
        Coalesce {
            input,
            held: None,
            timer: None,
            queued: VecDeque::new(),
            ended: false,
        }
    }
}

impl<S> futures::Stream for Coalesce<S>
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    type Item = Job;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Job>> {
        use std::task::Poll;
        let me = &mut *self;
        loop {
            if let Some(job) = me.queued.pop_front() {
                return Poll::Ready(Some(job));
            }
            if me.ended {
                return Poll::Ready(me.held.take().map(Job::One));
            }
            match std::pin::Pin::new(&mut me.input).poll_next(cx) {
                Poll::Ready(Some(req)) if req.entries.is_empty() => {
                    if let Some(older) = me.held.replace(req) {
                        me.queued.push_back(Job::One(older));
                    }
                    me.timer = Some(glommio::timer::Timer::new(PROBE_DELAY));
                }
                Poll::Ready(Some(req)) => {
                    me.timer = None;
                    return Poll::Ready(Some(match me.held.take() {
                        Some(probe) => Job::Behind { probe, with: req },
                        None => Job::One(req),
                    }));
                }
                Poll::Ready(None) => me.ended = true,
                Poll::Pending => {
                    if let Some(timer) = me.timer.as_mut()
                        && std::pin::Pin::new(timer).poll(cx).is_ready()
                    {
                        me.timer = None;
                        if let Some(probe) = me.held.take() {
                            return Poll::Ready(Some(Job::One(probe)));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A snapshot being received for a group: the file, from whom, and the next offset.
struct Receiving {
    vote: Vote,
    file: SnapshotFile,
    next: u64,
}

/// The server side of a core's groups' Raft traffic.
pub struct RaftServer {
    groups: Weak<dyn Groups>,
    /// Per group, its append stream: the requests go in in arrival order, the replies come
    /// out in the same order.
    streams: RefCell<HashMap<GroupId, AppendStream>>,
    receiving: RefCell<HashMap<GroupId, Receiving>>,
}

/// The groups a core hosts, as the server needs them.
pub trait Groups {
    fn raft(&self, g: GroupId) -> Option<Raft>;
    fn node(&self) -> &Arc<ClusterNode>;
    /// Admin calls (`node::Call`).
    fn admin(&self, payload: Bytes) -> LocalBoxFuture<'static, Result<Vec<u8>, String>>;
}

struct AppendStream {
    input: mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
    replies: ReplyQueue,
}

type Reply = LocalBoxFuture<'static, Result<Vec<u8>, String>>;

/// Who waits for each append sent on a stream, oldest first.
type ReplyQueue = Rc<RefCell<VecDeque<oneshot::Sender<Result<Vec<u8>, String>>>>>;

fn ready(r: Result<Vec<u8>, String>) -> Reply {
    Box::pin(futures::future::ready(r))
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], what: &str) -> Result<T, String> {
    wire::decode(payload, what).map_err(|e| e.0)
}

impl RaftServer {
    pub fn new(groups: Weak<dyn Groups>) -> RaftServer {
        RaftServer {
            groups,
            streams: RefCell::new(HashMap::new()),
            receiving: RefCell::new(HashMap::new()),
        }
    }

    /// Answers one Raft or admin request for group `g` (synchronously queued in arrival
    /// order; see `link::Serve`).
    pub fn request(self: &Rc<Self>, kind: u8, g: GroupId, payload: Bytes) -> Reply {
        let Some(groups) = self.groups.upgrade() else {
            return ready(Err("this node is stopping".into()));
        };
        if kind == KIND_ADMIN {
            return groups.admin(payload);
        }
        let Some(raft) = groups.raft(g) else {
            return ready(Err(format!("slot group {g} is not hosted here")));
        };
        match kind {
            KIND_STREAM_APPEND => match decode(&payload, "stream append") {
                Ok(req) => self.stream_append(g, raft, req),
                Err(e) => ready(Err(e)),
            },
            KIND_APPEND => Box::pin(async move {
                let req: AppendEntriesRequest<TypeConfig> = decode(&payload, "append")?;
                let resp = raft.append_entries(req).await.map_err(|e| e.to_string())?;
                Ok(wire::encode(&resp))
            }),
            KIND_VOTE | KIND_PRE_VOTE if !groups.node().votes_allowed() => ready(Err(
                "this node restarted recently and does not vote yet".to_string(),
            )),
            KIND_VOTE | KIND_PRE_VOTE => Box::pin(async move {
                let req: VoteRequest<TypeConfig> = decode(&payload, "vote")?;
                let resp = if kind == KIND_VOTE {
                    raft.vote(req).await
                } else {
                    raft.pre_vote(req).await
                };
                Ok(wire::encode(&resp.map_err(|e| e.to_string())?))
            }),
            KIND_TRANSFER_LEADER => Box::pin(async move {
                let req: TransferLeaderRequest<TypeConfig> = decode(&payload, "transfer")?;
                let resp = raft
                    .handle_transfer_leader(req)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(wire::encode(&resp))
            }),
            KIND_SNAPSHOT => {
                let me = self.clone();
                Box::pin(async move {
                    let chunk: Chunk = decode(&payload, "snapshot chunk")?;
                    me.snapshot_chunk(g, raft, chunk, &groups).await
                })
            }
            k => ready(Err(format!("unknown bus request kind {k}"))),
        }
    }

    /// Feeds an append into group `g`'s stream (started on first use, restarted after it
    /// ended on an error) and returns the future of its reply.
    fn stream_append(
        self: &Rc<Self>,
        g: GroupId,
        raft: Raft,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Reply {
        let (tx, rx) = oneshot::channel();
        let mut streams = self.streams.borrow_mut();
        let stream = streams
            .entry(g)
            .or_insert_with(|| self.start_stream(g, raft));
        stream.replies.borrow_mut().push_back(tx);
        if stream.input.unbounded_send(req).is_err() {
            // Ended meanwhile: its drainer fails what it holds, this one included.
            streams.remove(&g);
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the append stream restarted".to_string()))
        })
    }

    fn start_stream(self: &Rc<Self>, g: GroupId, raft: Raft) -> AppendStream {
        let (input, rx) = mpsc::unbounded();
        let replies: ReplyQueue = Rc::default();
        let out = raft.stream_append(rx);
        let (me, queue) = (Rc::downgrade(self), replies.clone());
        glommio::spawn_local(async move {
            futures::pin_mut!(out);
            while let Some(item) = out.next().await {
                let Some(tx) = queue.borrow_mut().pop_front() else {
                    break;
                };
                let _ = tx.send(match item {
                    Ok(result) => Ok(wire::encode(&result)),
                    Err(fatal) => Err(fatal.to_string()),
                });
            }
            // The stream ended (an error reply, or Raft stopped): later appends start a new
            // one; those already queued here get an error and are resent by the leader.
            if let Some(me) = me.upgrade() {
                let mut streams = me.streams.borrow_mut();
                if streams
                    .get(&g)
                    .is_some_and(|s| Rc::ptr_eq(&s.replies, &queue))
                {
                    streams.remove(&g);
                }
            }
            queue.borrow_mut().clear();
        })
        .detach();
        AppendStream { input, replies }
    }

    /// Takes one chunk of a snapshot for group `g`; on the last, installs it.
    async fn snapshot_chunk(
        &self,
        g: GroupId,
        raft: Raft,
        chunk: Chunk,
        groups: &Rc<dyn Groups>,
    ) -> Result<Vec<u8>, String> {
        let files = groups.node().files.clone();
        {
            let mut receiving = self.receiving.borrow_mut();
            if chunk.offset == 0 {
                receiving.insert(
                    g,
                    Receiving {
                        vote: chunk.vote,
                        file: files.receive(g)?,
                        next: 0,
                    },
                );
            }
            let r = receiving
                .get_mut(&g)
                .filter(|r| r.vote == chunk.vote && r.next == chunk.offset)
                .ok_or("snapshot chunk out of order; resend from the start")?;
            // Sealed as it is written when encryption at rest is on.
            r.file.append(&chunk.data)?;
            r.next += chunk.data.len() as u64;
        }
        let Some(meta) = chunk.done else {
            return Ok(wire::encode(&None::<SnapshotResponse<TypeConfig>>));
        };
        let r = self
            .receiving
            .borrow_mut()
            .remove(&g)
            .ok_or("the snapshot transfer was restarted")?;
        let resp = raft
            .install_full_snapshot(
                chunk.vote,
                Snapshot {
                    meta,
                    snapshot: r.file,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(wire::encode(&Some(resp)))
    }
}
