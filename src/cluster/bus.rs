//! The cluster bus: node-to-node transport for every slot group's Raft RPCs and for the
//! cluster's own admin calls, on one TCP port per node (the client port + 10000 by default,
//! as Redis' bus).
//!
//! A node keeps one connection per peer, shared by all slot groups and opened lazily. Requests
//! are pipelined on it: callers queue encoded frames for a writer that sends whatever piled up
//! in one flush, and a reader hands each response to the caller waiting on its request id. The
//! server answers requests concurrently, so a slow snapshot chunk never holds up a heartbeat.
//!
//! Frames (header fields big-endian; `len` counts the bytes after itself and is at most
//! [`MAX_FRAME_LEN`], a bigger frame closes the connection):
//!
//! ```text
//! request:  [u32 len][u64 request id][u8 kind][u16 group][payload]
//! response: [u32 len][u64 request id][u8 status][payload]
//! ```
//!
//! Kinds: 1 AppendEntries, 2 Vote, 3 InstallSnapshot (openraft's chunked snapshot RPC),
//! 4 Custom (opaque bytes for [`BusHandler::call`]; the group is 0). Raft payloads are bincode 1
//! of openraft's request and response types. Status 0 carries the response, 1 a bincode
//! `RaftError` from the remote `Raft`, 2 a UTF-8 message (unknown group, undecodable request,
//! a failed custom call).
//!
//! This room moves bytes between nodes; it knows nothing of slots, shards or storage.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::types::{GroupId, NodeId, NodeInfo, Raft, TypeConfig};

/// The largest frame either side accepts, counted after the length prefix. Raft batches are
/// far smaller (openraft splits an AppendEntries we refuse as too large, and snapshot chunks
/// are `snapshot_max_chunk_size`); the bound only stops a corrupt length from allocating
/// gigabytes.
pub const MAX_FRAME_LEN: usize = 256 << 20;

/// Request header after the length: request id, kind, group.
const REQUEST_HEAD: usize = 8 + 1 + 2;
/// Response header after the length: request id, status.
const RESPONSE_HEAD: usize = 8 + 1;

const STATUS_OK: u8 = 0;
const STATUS_RAFT_ERROR: u8 = 1;
const STATUS_FAILED: u8 = 2;

/// Socket buffer size on both sides: small frames coalesce into one syscall per flush, a
/// frame bigger than this goes straight to the socket without a copy.
const IO_BUFFER: usize = 64 << 10;
/// At most this many queued frames go into one flush, so the first of them is not held
/// back indefinitely behind a steady stream of new ones.
const MAX_BATCH: usize = 256;

/// First pause after a failed connect (or a connection that died young); it doubles per
/// consecutive failure up to `BACKOFF_MAX`. Calls during the pause fail at once as
/// unreachable instead of dialling again, so a dead peer never sees a connect storm.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait for a connect, whatever the call's timeout: a peer that takes longer is
/// reported unreachable (and backed off) rather than holding every caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that dies sooner than this after opening counts as a failed connect.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// Unacknowledged data older than this makes the kernel drop the connection: a peer behind
/// a partition (packets silently dropped) is noticed, its queue discarded, and the next call
/// redials (and, the peer still being cut off, reports it unreachable).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a request frame asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    AppendEntries = 1,
    Vote = 2,
    InstallSnapshot = 3,
    Custom = 4,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::AppendEntries),
            2 => Some(Self::Vote),
            3 => Some(Self::InstallSnapshot),
            4 => Some(Self::Custom),
            _ => None,
        }
    }
}

/// Why a bus call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// No connection could be opened (refused, no route, connect timed out), or the peer is
    /// in its reconnect backoff after such a failure.
    Unreachable(String),
    /// The connection closed before the reply arrived; the request may or may not have run.
    ConnectionLost(String),
    /// No reply within the call's timeout.
    Timeout(Duration),
    /// The frame would be this many bytes (after the length prefix), over [`MAX_FRAME_LEN`].
    FrameTooLarge(usize),
    /// The peer answered with an error: unknown slot group, undecodable request, or the
    /// message of a failed custom call.
    Remote(String),
    /// A payload could not be encoded, or a reply decoded, with bincode.
    Codec(String),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "peer unreachable: {why}"),
            Self::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Self::Timeout(after) => write!(f, "no reply within {after:?}"),
            Self::FrameTooLarge(len) => {
                write!(
                    f,
                    "frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit"
                )
            }
            Self::Remote(msg) => write!(f, "peer error: {msg}"),
            Self::Codec(msg) => write!(f, "bincode: {msg}"),
        }
    }
}

impl Error for BusError {}

/// What a node serves on its bus port.
pub trait BusHandler: Send + Sync + 'static {
    /// The local Raft of a slot group, or `None` if this node has no such group (yet: during
    /// bootstrap a peer may be asked before it created the group; the caller sees a network
    /// error and openraft retries).
    fn raft(&self, group: GroupId) -> Option<Raft>;

    /// Answers a custom (admin) call. An `Err` reaches the caller as [`BusError::Remote`].
    /// The future is dropped unfinished if the calling node's connection closes.
    fn call(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>>;

    /// Whether vote requests are answered now (a restarted node abstains for a while: it
    /// does not remember which leader it last acknowledged, see `cluster::node`).
    fn votes_allowed(&self) -> bool {
        true
    }

    /// Called when this node accepted a leader's append-entries or snapshot for `group`
    /// (it heard from a live leader: no election is due).
    fn leader_heard(&self, _group: GroupId) {}
}

/// Serves the bus on `listener` until the returned future is dropped; dropping it also closes
/// every connection it accepted and cancels their requests in flight.
pub async fn serve(listener: TcpListener, handler: Arc<dyn BusHandler>) {
    let mut connections = JoinSet::new();
    loop {
        // Finished connections leave their (empty) results here until reaped.
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(stream, peer, handler.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "cluster bus: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, handler: Arc<dyn BusHandler>) {
    if let Err(error) = tune_socket(&stream) {
        tracing::debug!(%peer, %error, "cluster bus: cannot set socket options, closing");
        return;
    }
    tracing::debug!(%peer, "cluster bus: peer connected");
    let (reader, writer) = stream.into_split();
    let (replies, queued) = mpsc::unbounded_channel();
    // The writer only ends on its own by failing: `serve_requests` holds a sender until it
    // returns.
    let ended = tokio::select! {
        ended = serve_requests(reader, replies, handler) => ended,
        ended = write_frames(writer, queued) => ended,
    };
    match ended {
        Ok(()) => tracing::debug!(%peer, "cluster bus: peer disconnected"),
        // A malformed or oversized frame: the peer speaks something else, say so.
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(%peer, %error, "cluster bus: bad frame, connection closed");
        }
        Err(error) => tracing::debug!(%peer, %error, "cluster bus: peer connection failed"),
    }
}

/// Reads requests until the peer closes, answering each in its own task. Returning drops
/// the tasks still running: nobody is left to read their replies.
async fn serve_requests(
    reader: OwnedReadHalf,
    replies: mpsc::UnboundedSender<Vec<u8>>,
    handler: Arc<dyn BusHandler>,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(IO_BUFFER, reader);
    let mut in_flight = JoinSet::new();
    while let Some((head, payload)) = read_frame::<REQUEST_HEAD, _>(&mut reader).await? {
        while in_flight.try_join_next().is_some() {}
        let [id @ .., kind, group_high, group_low] = head;
        let id = u64::from_be_bytes(id);
        let group = GroupId::from_be_bytes([group_high, group_low]);
        let handler = handler.clone();
        let replies = replies.clone();
        in_flight.spawn(async move {
            let (status, body) = AssertUnwindSafe(dispatch(handler, kind, group, payload))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| failure("request handler panicked"));
            // A send error means the connection is closing: the reply has nowhere to go.
            let _ = replies.send(response_frame(id, status, &body));
        });
    }
    Ok(())
}

/// Runs one request; returns the reply's status and payload.
async fn dispatch(
    handler: Arc<dyn BusHandler>,
    kind: u8,
    group: GroupId,
    payload: Vec<u8>,
) -> (u8, Vec<u8>) {
    match Kind::from_u8(kind) {
        Some(Kind::Custom) => match handler.call(payload).await {
            Ok(reply) => (STATUS_OK, reply),
            Err(message) => (STATUS_FAILED, message.into_bytes()),
        },
        Some(Kind::AppendEntries) => {
            let heard = handler.clone();
            raft_request(&*handler, group, &payload, |raft, rpc| async move {
                let reply = raft.append_entries(rpc).await;
                if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    heard.leader_heard(group);
                }
                reply
            })
            .await
        }
        Some(Kind::Vote) if !handler.votes_allowed() => {
            failure("not voting yet: this node started less than a leader lease ago")
        }
        Some(Kind::Vote) => {
            raft_request(&*handler, group, &payload, |raft, rpc| async move {
                raft.vote(rpc).await
            })
            .await
        }
        Some(Kind::InstallSnapshot) => {
            let heard = handler.clone();
            raft_request(
                &*handler,
                group,
                &payload,
                |raft, rpc: InstallSnapshotRequest<TypeConfig>| async move {
                    let vote = rpc.vote;
                    let reply = raft.install_snapshot(rpc).await;
                    if matches!(&reply, Ok(r) if r.vote == vote) {
                        heard.leader_heard(group);
                    }
                    reply
                },
            )
            .await
        }
        None => failure(&format!("unknown request kind {kind}")),
    }
}

/// Decodes a Raft RPC, runs it on the group's Raft and encodes the outcome.
async fn raft_request<Req, Resp, E, Fut>(
    handler: &dyn BusHandler,
    group: GroupId,
    payload: &[u8],
    rpc: impl FnOnce(Raft, Req) -> Fut,
) -> (u8, Vec<u8>)
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
    Fut: Future<Output = Result<Resp, E>>,
{
    let Some(raft) = handler.raft(group) else {
        return failure(&format!("no slot group {group} on this node"));
    };
    let request = match bincode::deserialize(payload) {
        Ok(request) => request,
        Err(error) => return failure(&format!("undecodable request: {error}")),
    };
    let encoded = match rpc(raft, request).await {
        Ok(response) => bincode::serialize(&response).map(|body| (STATUS_OK, body)),
        Err(error) => bincode::serialize(&error).map(|body| (STATUS_RAFT_ERROR, body)),
    };
    encoded.unwrap_or_else(|error| failure(&format!("unencodable reply: {error}")))
}

fn failure(message: &str) -> (u8, Vec<u8>) {
    (STATUS_FAILED, message.as_bytes().to_vec())
}

fn response_frame(id: u64, status: u8, body: &[u8]) -> Vec<u8> {
    match new_frame(RESPONSE_HEAD + body.len()) {
        Ok(mut frame) => {
            frame.extend_from_slice(&id.to_be_bytes());
            frame.push(status);
            frame.extend_from_slice(body);
            frame
        }
        // Recurses once at most: the error message is short.
        Err(too_large) => response_frame(id, STATUS_FAILED, too_large.to_string().as_bytes()),
    }
}

/// Starts a frame whose bytes after the length prefix will number `body_len`.
fn new_frame(body_len: usize) -> Result<Vec<u8>, BusError> {
    if body_len > MAX_FRAME_LEN {
        return Err(BusError::FrameTooLarge(body_len));
    }
    let mut frame = Vec::with_capacity(4 + body_len);
    // MAX_FRAME_LEN < u32::MAX, so the cast is exact.
    frame.extend_from_slice(&(body_len as u32).to_be_bytes());
    Ok(frame)
}

/// Reads one frame: its fixed header and its payload. `None` on a clean close between
/// frames; a close inside a frame, or a length over [`MAX_FRAME_LEN`], is an error.
async fn read_frame<const HEAD: usize, R: AsyncRead + Unpin>(
    reader: &mut R,
) -> io::Result<Option<([u8; HEAD], Vec<u8>)>> {
    let mut len = [0u8; 4];
    let got = reader.read(&mut len).await?;
    if got == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut len[got..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            BusError::FrameTooLarge(len),
        ));
    }
    if len < HEAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is shorter than its {HEAD}-byte header"),
        ));
    }
    let mut head = [0u8; HEAD];
    reader.read_exact(&mut head).await?;
    let mut payload = vec![0u8; len - HEAD];
    reader.read_exact(&mut payload).await?;
    Ok(Some((head, payload)))
}

/// Sends queued frames until every sender is gone. Whatever is queued when the writer wakes
/// goes out together: small frames share one buffer and one syscall.
async fn write_frames<W: AsyncWrite + Unpin>(
    writer: W,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(IO_BUFFER, writer);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for frame in batch.drain(..) {
            writer.write_all(&frame).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Low latency (no Nagle: the writer batches itself) and dead-peer detection on a bus socket.
fn tune_socket(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL),
    )?;
    socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
}

/// Locks a mutex whose holders never leave it half-updated, so a poisoned one is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending side of the bus: one per node, shared by every slot group's [`Network`] and by
/// admin code making custom calls. Holds one connection per peer bus address.
pub struct BusClient {
    local_ip: Option<IpAddr>,
    next_id: AtomicU64,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
}

impl BusClient {
    /// `local_ip`: the address outgoing connections come from (so a test proxy or firewall
    /// can tell nodes on one loopback apart), or `None` to let the OS pick.
    pub fn new(local_ip: Option<IpAddr>) -> Self {
        Self {
            local_ip,
            next_id: AtomicU64::new(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Sends a custom call to the peer at bus address `addr` (`host:port`) and returns its
    /// reply; [`BusHandler::call`] answers it there.
    pub async fn call(
        &self,
        addr: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = request_frame(id, Kind::Custom, 0, payload.len())?;
        frame.extend_from_slice(&payload);
        // The frame holds a copy now; don't keep both alive while waiting for the reply.
        drop(payload);
        let reply = self.round_trip(addr, id, frame, timeout).await?;
        match reply.status {
            STATUS_OK => Ok(reply.payload),
            _ => Err(reply.into_remote_error()),
        }
    }

    /// Sends a Raft RPC to `group` on the peer at `addr`. The outer result is the transport's,
    /// the inner one the remote `Raft`'s.
    async fn raft_call<Req, Resp, E>(
        &self,
        addr: &str,
        kind: Kind,
        group: GroupId,
        request: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, E>, BusError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let codec = |error: bincode::Error| BusError::Codec(error.to_string());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let size = bincode::serialized_size(request).map_err(codec)?;
        let size = usize::try_from(size).map_err(|_| BusError::FrameTooLarge(usize::MAX))?;
        let mut frame = request_frame(id, kind, group, size)?;
        bincode::serialize_into(&mut frame, request).map_err(codec)?;
        let reply = self.round_trip(addr, id, frame, timeout).await?;
        match reply.status {
            STATUS_OK => Ok(Ok(bincode::deserialize(&reply.payload).map_err(codec)?)),
            STATUS_RAFT_ERROR => Ok(Err(bincode::deserialize(&reply.payload).map_err(codec)?)),
            _ => Err(reply.into_remote_error()),
        }
    }

    async fn round_trip(
        &self,
        addr: &str,
        id: u64,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, BusError> {
        let deadline = Instant::now() + timeout;
        let connection = self.connection(addr, deadline).await?;
        connection.request(id, frame, deadline, timeout).await
    }

    /// The open connection to `addr`, dialling it if there is none. Callers queue behind one
    /// dial instead of each opening their own.
    async fn connection(&self, addr: &str, deadline: Instant) -> Result<Arc<Connection>, BusError> {
        let peer = self.peer(addr);
        let Ok(mut link) = tokio::time::timeout_at(deadline, peer.link.lock()).await else {
            return Err(BusError::Unreachable(format!(
                "{addr}: connect still in progress"
            )));
        };
        if let Some(connection) = &link.connection {
            if connection.is_open() {
                return Ok(connection.clone());
            }
            let died_young = connection.opened_at.elapsed() < HEALTHY_AFTER;
            link.connection = None;
            // Its task logged the loss. A connection that died young counts as a failed
            // connect, so a peer that accepts and drops us at once is not redialled in a loop.
            link.down_logged = true;
            if died_young {
                link.last_error = "connection closed right after opening".to_owned();
                link.failed(Instant::now());
            } else {
                link.failures = 0;
            }
        }
        if let Some(retry_at) = link.retry_at
            && Instant::now() < retry_at
        {
            return Err(BusError::Unreachable(format!(
                "{addr}: {} (next attempt in {:?})",
                link.last_error,
                retry_at - Instant::now()
            )));
        }
        let connect_by = deadline.min(Instant::now() + CONNECT_TIMEOUT);
        let dialled = tokio::time::timeout_at(connect_by, connect(addr, self.local_ip))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")));
        match dialled {
            Ok(stream) => {
                if link.down_logged {
                    tracing::info!(peer = addr, "cluster bus: connection re-established");
                } else {
                    tracing::debug!(peer = addr, "cluster bus: connected");
                }
                link.down_logged = false;
                link.retry_at = None;
                let connection = Connection::start(stream, addr.to_owned());
                link.connection = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                if !link.down_logged {
                    tracing::warn!(peer = addr, %error, "cluster bus: cannot connect");
                    link.down_logged = true;
                }
                link.last_error = error.to_string();
                link.failed(Instant::now());
                Err(BusError::Unreachable(format!("{addr}: {error}")))
            }
        }
    }

    fn peer(&self, addr: &str) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get(addr) {
            return peer.clone();
        }
        let peer = Arc::new(Peer::default());
        peers.insert(addr.to_owned(), peer.clone());
        peer
    }
}

/// Starts a request frame with room for a `payload_len`-byte payload.
fn request_frame(
    id: u64,
    kind: Kind,
    group: GroupId,
    payload_len: usize,
) -> Result<Vec<u8>, BusError> {
    let body_len = REQUEST_HEAD
        .checked_add(payload_len)
        .ok_or(BusError::FrameTooLarge(usize::MAX))?;
    let mut frame = new_frame(body_len)?;
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(kind as u8);
    frame.extend_from_slice(&group.to_be_bytes());
    Ok(frame)
}

/// Opens a bus connection to `addr`, from `local_ip` if given.
async fn connect(addr: &str, local_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let mut last_error = None;
    for target in tokio::net::lookup_host(addr).await? {
        if let Some(ip) = local_ip
            && ip.is_ipv4() != target.is_ipv4()
        {
            continue;
        }
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(target).await {
            Ok(stream) => {
                tune_socket(&stream)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address of the local address's family"),
        )
    }))
}

/// One peer's connection state; its lock serializes dialling.
#[derive(Default)]
struct Peer {
    link: tokio::sync::Mutex<Link>,
}

#[derive(Default)]
struct Link {
    connection: Option<Arc<Connection>>,
    /// Consecutive failed connects (or connections that died young): sets the backoff.
    failures: u32,
    /// No dialling before this.
    retry_at: Option<Instant>,
    last_error: String,
    /// The peer's loss was logged and its recovery is not yet: log transitions, not calls.
    down_logged: bool,
}

impl Link {
    fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        self.retry_at = Some(now + (BACKOFF_MIN * 2u32.pow(doublings)).min(BACKOFF_MAX));
    }
}

/// One open connection: a queue to its writer and the callers waiting for replies. Dropping
/// the last handle closes it.
struct Connection {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    waiters: Arc<Mutex<Waiters>>,
    opened_at: Instant,
}

#[derive(Default)]
struct Waiters {
    /// Why the connection closed, once it has: no new waiter may register then.
    closed: Option<String>,
    by_id: HashMap<u64, oneshot::Sender<Result<Reply, BusError>>>,
}

struct Reply {
    status: u8,
    payload: Vec<u8>,
}

impl Reply {
    fn into_remote_error(self) -> BusError {
        match self.status {
            STATUS_FAILED => BusError::Remote(String::from_utf8_lossy(&self.payload).into_owned()),
            status => BusError::Remote(format!("unexpected reply status {status}")),
        }
    }
}

impl Connection {
    fn start(stream: TcpStream, addr: String) -> Arc<Self> {
        let (frames, queued) = mpsc::unbounded_channel();
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        tokio::spawn(run_connection(stream, queued, waiters.clone(), addr));
        Arc::new(Self {
            frames,
            waiters,
            opened_at: Instant::now(),
        })
    }

    fn is_open(&self) -> bool {
        lock(&self.waiters).closed.is_none()
    }

    async fn request(
        &self,
        id: u64,
        frame: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Reply, BusError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.waiters);
            if let Some(why) = &waiters.closed {
                return Err(BusError::ConnectionLost(why.clone()));
            }
            waiters.by_id.insert(id, reply_tx);
        }
        // Deregisters on every way out, including the caller dropping this future.
        let _waiting = Waiting {
            waiters: &self.waiters,
            id,
        };
        if self.frames.send(frame).is_err() {
            return Err(BusError::ConnectionLost("connection closed".into()));
        }
        match tokio::time::timeout_at(deadline, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(BusError::ConnectionLost("connection closed".into())),
            Err(_) => Err(BusError::Timeout(timeout)),
        }
    }
}

/// A registered waiter, removed when the request ends however it ends.
struct Waiting<'a> {
    waiters: &'a Mutex<Waiters>,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.waiters).by_id.remove(&self.id);
    }
}

/// Drives one client connection until it fails or its last handle is dropped, then fails
/// every request still waiting on it.
async fn run_connection(
    stream: TcpStream,
    queued: mpsc::UnboundedReceiver<Vec<u8>>,
    waiters: Arc<Mutex<Waiters>>,
    addr: String,
) {
    let (reader, writer) = stream.into_split();
    let lost = tokio::select! {
        ended = read_replies(reader, &waiters) => Some(match ended {
            Ok(()) => "closed by peer".to_owned(),
            Err(error) => error.to_string(),
        }),
        ended = write_frames(writer, queued) => ended.err().map(|error| error.to_string()),
    };
    let reason = lost.as_deref().unwrap_or("client dropped").to_owned();
    let stranded = {
        let mut waiters = lock(&waiters);
        waiters.closed = Some(reason.clone());
        std::mem::take(&mut waiters.by_id)
    };
    for (_, waiter) in stranded {
        // The caller may have given up meanwhile; nothing to tell it then.
        let _ = waiter.send(Err(BusError::ConnectionLost(reason.clone())));
    }
    if let Some(reason) = lost {
        tracing::warn!(peer = %addr, %reason, "cluster bus: connection lost");
    }
}

/// Hands each reply to the request waiting for it. A reply nobody waits for (its caller
/// timed out) is dropped.
async fn read_replies(reader: OwnedReadHalf, waiters: &Mutex<Waiters>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(IO_BUFFER, reader);
    while let Some((head, payload)) = read_frame::<RESPONSE_HEAD, _>(&mut reader).await? {
        let [id @ .., status] = head;
        let waiter = lock(waiters).by_id.remove(&u64::from_be_bytes(id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ok(Reply { status, payload }));
        }
    }
    Ok(())
}

/// One slot group's Raft network: openraft asks it for a client per peer.
#[derive(Clone)]
pub struct Network {
    client: Arc<BusClient>,
    group: GroupId,
}

impl Network {
    pub fn new(client: Arc<BusClient>, group: GroupId) -> Self {
        Self { client, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = GroupConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupConnection {
        GroupConnection {
            client: self.client.clone(),
            group: self.group,
            target,
            addr: node.bus_addr(),
            node: node.clone(),
        }
    }
}

/// One slot group's view of one peer: Raft RPCs for the group over the shared connection.
pub struct GroupConnection {
    client: Arc<BusClient>,
    group: GroupId,
    target: NodeId,
    node: NodeInfo,
    addr: String,
}

type RpcResult<T, E = Infallible> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

/// A Raft RPC's outcome as the bus sees it: the transport's result around the remote `Raft`'s.
type BusReply<T, E = Infallible> = Result<Result<T, RaftError<NodeId, E>>, BusError>;

impl GroupConnection {
    async fn send<Req, Resp, E>(
        &self,
        kind: Kind,
        request: &Req,
        option: &RPCOption,
    ) -> BusReply<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        RaftError<NodeId, E>: DeserializeOwned,
    {
        self.client
            .raft_call(&self.addr, kind, self.group, request, option.hard_ttl())
            .await
    }

    /// Maps a reply to the error kinds openraft acts on.
    // The error is openraft's own `RPCError`, which `RaftNetwork` returns unboxed.
    #[allow(clippy::result_large_err)]
    fn to_rpc_result<T, E: Error + 'static>(&self, reply: BusReply<T, E>) -> RpcResult<T, E> {
        match reply {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))),
            // openraft backs off before retrying an unreachable peer.
            Err(error @ BusError::Unreachable(_)) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            // Timeouts too: openraft's own `Timeout` wants this node's id, which a group's
            // network does not know, and openraft handles both alike.
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }
}

impl RaftNetwork<TypeConfig> for GroupConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        let reply = self.send(Kind::AppendEntries, &rpc, &option).await;
        if entries > 1 && matches!(reply, Err(BusError::FrameTooLarge(_))) {
            // openraft retries at once with fewer entries.
            return Err(PayloadTooLarge::new_entries_hint(entries / 2).into());
        }
        self.to_rpc_result(reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let reply = self.send(Kind::InstallSnapshot, &rpc, &option).await;
        self.to_rpc_result(reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let reply = self.send(Kind::Vote, &rpc, &option).await;
        self.to_rpc_result(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Custom calls: `[delay ms: u16][body]` answers the body reversed after the delay;
    /// a body of `fail` answers an error. No slot group exists.
    struct Echo;

    impl BusHandler for Echo {
        fn raft(&self, _group: GroupId) -> Option<Raft> {
            None
        }

        fn call(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            Box::pin(async move {
                let (delay, body) = payload.split_at(2);
                let delay = u16::from_be_bytes([delay[0], delay[1]]);
                tokio::time::sleep(Duration::from_millis(delay.into())).await;
                if body == b"fail" {
                    return Err("asked to fail".to_owned());
                }
                Ok(body.iter().rev().copied().collect())
            })
        }
    }

    fn request(delay_ms: u16, body: &[u8]) -> Vec<u8> {
        let mut payload = delay_ms.to_be_bytes().to_vec();
        payload.extend_from_slice(body);
        payload
    }

    /// Starts a bus server on a free loopback port; abort the handle to stop it.
    async fn start_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        (addr, tokio::spawn(serve(listener, Arc::new(Echo))))
    }

    /// A loopback address nothing listens on.
    async fn dead_addr() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("local addr").to_string()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn concurrent_calls_share_one_connection_and_get_their_own_replies() {
        let (addr, _server) = start_server().await;
        let client = BusClient::new(None);
        let started = std::time::Instant::now();
        // Later calls answer sooner, so replies come back out of order.
        let calls = (0..64u16).map(|i| {
            let client = &client;
            let addr = &addr;
            async move {
                let body = format!("call-{i}");
                let reply = client
                    .call(addr, request(200 - 3 * i, body.as_bytes()), 5 * SECOND)
                    .await
                    .expect("reply");
                let expected: Vec<u8> = body.bytes().rev().collect();
                assert_eq!(reply, expected);
            }
        });
        futures::future::join_all(calls).await;
        // Served concurrently: 64 calls of up to 200 ms each, far below their 7 s sum.
        assert!(
            started.elapsed() < 2 * SECOND,
            "took {:?}",
            started.elapsed()
        );
        let peer = client.peer(&addr);
        assert!(peer.link.lock().await.connection.is_some());
        assert_eq!(lock(&client.peers).len(), 1);

        let error = client.call(&addr, request(0, b"fail"), SECOND).await;
        assert_eq!(error, Err(BusError::Remote("asked to fail".to_owned())));
    }

    #[tokio::test]
    async fn dead_peer_is_unreachable_at_once_and_backed_off() {
        let addr = dead_addr().await;
        let client = BusClient::new(None);
        let started = std::time::Instant::now();
        let first = client.call(&addr, request(0, b"x"), 5 * SECOND).await;
        assert!(matches!(first, Err(BusError::Unreachable(_))), "{first:?}");
        // Within the backoff the second call does not dial at all.
        let second = client.call(&addr, request(0, b"x"), 5 * SECOND).await;
        match second {
            Err(BusError::Unreachable(why)) => assert!(why.contains("next attempt"), "{why}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert!(started.elapsed() < SECOND, "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn reconnects_after_the_server_restarts() {
        let (addr, server) = start_server().await;
        let client = BusClient::new(None);
        let reply = client.call(&addr, request(0, b"ab"), SECOND).await;
        assert_eq!(reply, Ok(b"ba".to_vec()));

        server.abort();
        assert!(server.await.expect_err("aborted").is_cancelled());
        // The old connection dies with the server; until it is back, calls fail.
        let mut failed = false;
        for _ in 0..50 {
            if client.call(&addr, request(0, b"ab"), SECOND).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(failed, "calls kept succeeding after the server stopped");

        let listener = TcpListener::bind(&addr).await.expect("rebind");
        let _server = tokio::spawn(serve(listener, Arc::new(Echo)));
        let deadline = std::time::Instant::now() + 5 * SECOND;
        loop {
            match client.call(&addr, request(0, b"cd"), SECOND).await {
                Ok(reply) => {
                    assert_eq!(reply, b"dc");
                    break;
                }
                Err(error) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no reconnect: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    #[tokio::test]
    async fn server_closes_a_connection_announcing_an_oversized_frame() {
        let (addr, _server) = start_server().await;
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let len = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        stream.write_all(&len).await.expect("write");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(SECOND, stream.read(&mut byte)).await;
        // Closed without a reply (EOF, or a reset if our unread bytes were still queued).
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }

    #[tokio::test]
    async fn client_refuses_to_send_an_oversized_frame() {
        let (addr, _server) = start_server().await;
        let client = BusClient::new(None);
        // Fresh zeroed pages from the allocator: never touched, so this costs no memory.
        let payload = vec![0u8; MAX_FRAME_LEN - REQUEST_HEAD + 1];
        let result = client.call(&addr, payload, SECOND).await;
        assert_eq!(result, Err(BusError::FrameTooLarge(MAX_FRAME_LEN + 1)));
        // Nothing was sent: the connection was never even opened.
        assert!(client.peer(&addr).link.lock().await.connection.is_none());
    }

    #[tokio::test]
    async fn client_drops_a_connection_answering_with_an_oversized_frame() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await.expect("request length");
            let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut rest).await.expect("request");
            let mut reply = (MAX_FRAME_LEN as u32 + 1).to_be_bytes().to_vec();
            reply.extend_from_slice(&rest[..8]);
            stream.write_all(&reply).await.expect("reply");
            // Stay open: the client must be the one to close.
            tokio::time::sleep(10 * SECOND).await;
        });
        let client = BusClient::new(None);
        let started = std::time::Instant::now();
        let result = client.call(&addr, request(0, b"x"), 5 * SECOND).await;
        match result {
            Err(BusError::ConnectionLost(why)) => assert!(why.contains("exceeds"), "{why}"),
            other => panic!("expected a lost connection, got {other:?}"),
        }
        assert!(started.elapsed() < SECOND);
    }

    #[tokio::test]
    async fn a_slow_reply_times_out_and_the_connection_carries_on() {
        let (addr, _server) = start_server().await;
        let client = BusClient::new(None);
        let started = std::time::Instant::now();
        let result = client
            .call(&addr, request(300, b"slow"), Duration::from_millis(50))
            .await;
        assert_eq!(result, Err(BusError::Timeout(Duration::from_millis(50))));
        assert!(started.elapsed() < Duration::from_millis(250));
        // The late reply arrives with nobody waiting and is dropped; the connection stays.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = client.call(&addr, request(0, b"ok"), SECOND).await;
        assert_eq!(reply, Ok(b"ko".to_vec()));
        assert!(
            lock(
                &client
                    .peer(&addr)
                    .link
                    .lock()
                    .await
                    .connection
                    .as_ref()
                    .expect("conn")
                    .waiters
            )
            .by_id
            .is_empty()
        );
    }

    fn node_at(addr: &str) -> NodeInfo {
        let addr: SocketAddr = addr.parse().expect("socket address");
        NodeInfo {
            name: "peer".to_owned(),
            host: addr.ip().to_string(),
            port: addr.port().wrapping_sub(10000),
            bus_port: addr.port(),
        }
    }

    fn vote_request() -> VoteRequest<NodeId> {
        VoteRequest::new(openraft::Vote::new(1, 1), None)
    }

    #[tokio::test]
    async fn vote_for_a_group_the_peer_lacks_is_a_network_error() {
        let (addr, _server) = start_server().await;
        let mut network = Network::new(Arc::new(BusClient::new(None)), 7);
        let mut peer = network.new_client(2, &node_at(&addr)).await;
        let result = peer.vote(vote_request(), RPCOption::new(SECOND)).await;
        match result {
            Err(RPCError::Network(error)) => {
                assert!(error.to_string().contains("no slot group 7"), "{error}");
            }
            other => panic!("expected a network error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn vote_to_a_dead_peer_is_unreachable() {
        let addr = dead_addr().await;
        let mut network = Network::new(Arc::new(BusClient::new(None)), 1);
        let mut peer = network.new_client(2, &node_at(&addr)).await;
        let result = peer.vote(vote_request(), RPCOption::new(SECOND)).await;
        assert!(
            matches!(result, Err(RPCError::Unreachable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn outgoing_connections_come_from_the_given_local_ip() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let local_ip: IpAddr = "127.0.0.2".parse().expect("ip");
        let client = BusClient::new(Some(local_ip));
        let call = tokio::spawn(async move { client.call(&addr, request(0, b"x"), SECOND).await });
        let (_stream, from) = listener.accept().await.expect("accept");
        assert_eq!(from.ip(), local_ip);
        // Nobody answers: the call times out.
        let result = call.await.expect("call task");
        assert_eq!(result, Err(BusError::Timeout(SECOND)));
    }
}
