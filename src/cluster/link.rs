//! Core-local links between nodes: the cluster bus transport rebuilt for the glommio core
//! threads, so a slot group's Raft RPCs leave and return on the core that owns the group
//! instead of crossing to a tokio runtime and back.
//!
//! Every core keeps its own [`Links`]: one connection per peer bus address, opened lazily,
//! requests pipelined on it and matched to their callers by request id. A call encodes its
//! frame straight into the connection's outgoing buffer; the connection's task writes
//! whatever accumulated when it next runs, so everything a core's tasks queue for a peer
//! during one pass of the event loop leaves in one `write(2)`. On the other side every core
//! listens on the bus port (SO_REUSEPORT) and serves requests with [`serve`]; the dialling
//! core names the peer core it wants in its hello, and the accepting core hands the socket
//! over (`route`, then [`serve_adopted`] there) so core c of one node talks to core c of
//! the other.
//!
//! Frames (header fields big-endian; `len` counts the bytes after itself):
//!
//! ```text
//! hello:     [u32 len]["TKVBUS"][u16 version][u64 node][u16 core][u16 target core]
//!            [u32 auth len][auth]
//! hello-ack: [u32 len]["TKVBUS"][u16 version][u8 0 accepted | 1 refused][UTF-8 reason]
//! request:   [u32 len][u64 request id][u8 kind][u16 group][payload]
//! response:  [u32 len][u64 request id][u8 status: 0 ok | 1 failed][payload | UTF-8 message]
//! ```
//!
//! The dialling side sends its hello and may pipeline requests right behind it; the server
//! answers a hello-ack before any response, or a refusal (wrong magic, another protocol
//! version, a malformed hello) and closes. The magic and version keep their place in every
//! future version, so two versions can always tell each other why they disagree. A frame
//! longer than [`MAX_FRAME_LEN`] (a hello longer than 64 KiB) or shorter than its header
//! closes the connection with a warning.
//!
//! Guarantees:
//! - **Order.** [`Links::call`] queues its frame before it returns, and a connection's
//!   frames go out in the order they were queued. [`serve`] hands a connection's requests to
//!   [`Serve::request`] synchronously in arrival order. So the requests one core sends to one
//!   peer address reach the peer's handler in call order, whatever their kind and group —
//!   what Raft's pipelined replication needs for (group, kind). This holds per connection:
//!   after a reconnect, a request of the old connection may still reach the handler after
//!   requests of the new one (its caller saw `ConnectionLost`).
//! - **Coalescing.** Frames queued on one connection while its task waits to run go out in
//!   one write; replies whose handler futures finish in one pass likewise.
//! - **Failure.** When a connection fails every call waiting on it fails at once:
//!   `Unreachable` if it never connected (the request was never sent), `Handshake` if the
//!   peer refused the hello (nothing ran), `ConnectionLost` otherwise (it may have run).
//!   Frames are never resent on another connection. A call that times out or is dropped
//!   leaves its frame queued (it may still run); its late reply is discarded.
//!
//! This room moves opaque bytes: `kind` and `group` route requests for the caller, and it
//! knows nothing of Raft, slots or storage.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap as HashMap;
use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use glommio::Task;
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use super::types::NodeId;

/// The largest frame either side accepts, counted after the length prefix. Raft batches are
/// far smaller; the bound only stops a corrupt length from allocating gigabytes.
pub const MAX_FRAME_LEN: usize = 256 << 20;

/// The protocol this build speaks; a peer's hello must carry the same.
pub const PROTOCOL_VERSION: u16 = 1;

/// First bytes of every hello and hello-ack: a stray client (or a port scan) is told apart
/// from a peer speaking another version.
const MAGIC: &[u8; 6] = b"TKVBUS";
/// A hello or hello-ack is small; the bound leaves room for the auth blob a later version
/// carries and stops a stray client's first bytes from being taken for a huge length.
const MAX_HELLO_LEN: usize = 64 << 10;
/// Hello body without the auth blob: magic, version, node, core, target core, auth length.
const HELLO_HEAD: usize = MAGIC.len() + 2 + 8 + 2 + 2 + 4;
/// Hello-ack body without the reason: magic, version, status.
const ACK_HEAD: usize = MAGIC.len() + 2 + 1;
const HELLO_ACCEPTED: u8 = 0;
const HELLO_REFUSED: u8 = 1;

/// Request header after the length: request id, kind, group.
const REQUEST_HEAD: usize = 8 + 1 + 2;
/// Response header after the length: request id, status.
const RESPONSE_HEAD: usize = 8 + 1;
const STATUS_OK: u8 = 0;
const STATUS_FAILED: u8 = 1;

/// What the caller of a request whose handler panicked is told.
const HANDLER_PANICKED: &str = "request handler panicked";

/// Bytes asked of the kernel per read: a burst of small frames arrives in one read.
const READ_CHUNK: usize = 64 << 10;
/// An idle outgoing buffer keeps at most this much capacity, so one large frame (a snapshot
/// chunk) does not pin its size for the life of the connection.
const KEEP_BUFFER: usize = 1 << 20;

/// First pause after a failed connect (or a connection that died young); it doubles per
/// consecutive failure up to `BACKOFF_MAX`. Calls during the pause fail at once as
/// unreachable instead of dialling again, so a dead peer never sees a connect storm.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait for a connect (name lookup included), whatever the calls' timeouts: a peer
/// that takes longer is reported unreachable and backed off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that dies sooner than this after its handshake counts as a failed connect,
/// so a peer that accepts and drops us at once is not redialled in a loop.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// Unacknowledged data older than this makes the kernel drop the connection: a peer behind
/// a partition (packets silently dropped) is noticed, its calls failed, and the next call
/// redials (and, the peer still being cut off, reports it unreachable).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A connection that sends no complete hello within this is closed: it is not a peer.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a hello, how long the server drains what the peer pipelined behind it
/// before closing: closing with unread bytes would reset the connection and could destroy
/// the refusal before the peer reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// No connection could be opened (name lookup failed, refused, no route, connect timed
    /// out), or the peer is in its reconnect backoff after such a failure. The request was
    /// not sent.
    Unreachable(String),
    /// The peer refused our hello (or answered something that is not a hello-ack); nothing
    /// ran. Backed off like an unreachable peer.
    Handshake(String),
    /// The connection closed before the reply arrived; the request may or may not have run.
    ConnectionLost(String),
    /// No reply within the call's timeout; the request may still run.
    Timeout(Duration),
    /// The frame would be this many bytes (after the length prefix), over [`MAX_FRAME_LEN`].
    FrameTooLarge(usize),
    /// The peer's handler answered an error (or panicked).
    Remote(String),
    /// The caller's encoder failed; nothing was sent.
    Encode(String),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "peer unreachable: {why}"),
            Self::Handshake(why) => write!(f, "handshake failed: {why}"),
            Self::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Self::Timeout(after) => write!(f, "no reply within {after:?}"),
            Self::FrameTooLarge(len) => {
                write!(
                    f,
                    "frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit"
                )
            }
            Self::Remote(msg) => write!(f, "peer error: {msg}"),
            Self::Encode(msg) => write!(f, "cannot encode the request: {msg}"),
        }
    }
}

impl Error for BusError {}

/// What the dialling side says first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the dialler speaks.
    pub version: u16,
    /// The dialling node.
    pub node: NodeId,
    /// The dialling core on that node.
    pub core: u16,
    /// The core the dialler wants to be served by (a hint: the peer may have fewer cores).
    pub target_core: u16,
    /// Opaque credentials; empty until the bus authenticates peers.
    pub auth: Bytes,
}

impl Hello {
    /// A hello of this build's protocol version without credentials.
    pub fn new(node: NodeId, core: u16, target_core: u16) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            node,
            core,
            target_core,
            auth: Bytes::new(),
        }
    }

    /// Appends the hello frame, length prefix included.
    fn encode(&self, out: &mut Vec<u8>) {
        let len = HELLO_HEAD + self.auth.len();
        out.extend_from_slice(&frame_len(len).to_be_bytes());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.core.to_be_bytes());
        out.extend_from_slice(&self.target_core.to_be_bytes());
        out.extend_from_slice(&frame_len(self.auth.len()).to_be_bytes());
        out.extend_from_slice(&self.auth);
    }

    /// Reads a hello body (after its length prefix); only this build's version is accepted.
    fn decode(body: &Bytes) -> Result<Self, HandshakeError> {
        let mut cursor = Cursor(body);
        if cursor.take(MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(HandshakeError::BadMagic);
        }
        let version = cursor
            .u16()
            .ok_or(HandshakeError::Malformed("no version"))?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version(version));
        }
        let truncated = HandshakeError::Malformed("truncated");
        let node = cursor.u64().ok_or(truncated)?;
        let core = cursor.u16().ok_or(truncated)?;
        let target_core = cursor.u16().ok_or(truncated)?;
        let auth_len = cursor.u32().ok_or(truncated)? as usize;
        if cursor.0.len() != auth_len {
            return Err(HandshakeError::Malformed(
                "auth length disagrees with the frame",
            ));
        }
        Ok(Self {
            version,
            node,
            core,
            target_core,
            auth: body.slice(HELLO_HEAD..),
        })
    }
}

/// Why a hello was refused; the text is what both sides log and the dialler is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandshakeError {
    BadMagic,
    Version(u16),
    Malformed(&'static str),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not a tallykv bus peer (bad magic)"),
            Self::Version(version) => write!(
                f,
                "protocol version {version} is not supported; the server speaks version \
                 {PROTOCOL_VERSION}"
            ),
            Self::Malformed(why) => write!(f, "malformed hello: {why}"),
        }
    }
}

/// Appends a hello-ack frame: accepted (empty reason) or refused with its reason.
fn encode_ack(out: &mut Vec<u8>, refusal: Option<&str>) {
    let reason = refusal.unwrap_or("").as_bytes();
    out.extend_from_slice(&frame_len(ACK_HEAD + reason.len()).to_be_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.push(if refusal.is_some() {
        HELLO_REFUSED
    } else {
        HELLO_ACCEPTED
    });
    out.extend_from_slice(reason);
}

/// Checks a hello-ack body; the error is why the handshake failed.
fn check_ack(body: &[u8]) -> Result<(), String> {
    let mut cursor = Cursor(body);
    if cursor.take(MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("the peer does not speak the tallykv bus (bad magic in its reply)".into());
    }
    let (Some(version), Some(status)) = (cursor.u16(), cursor.u8()) else {
        return Err("truncated hello-ack".into());
    };
    if status == HELLO_REFUSED {
        return Err(format!(
            "refused by the peer: {}",
            String::from_utf8_lossy(cursor.0)
        ));
    }
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "the peer answered with protocol version {version}; this node speaks version \
             {PROTOCOL_VERSION}"
        ));
    }
    Ok(())
}

/// Reads big-endian fields off the front of a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// A length prefix for a frame already checked against the limits, all far below 4 GiB.
fn frame_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Counters of one side of the bus, for INFO and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Request (client side) or response (server side) frames queued for sending.
    pub frames_sent: u64,
    /// Bytes handed to the kernel, handshakes included.
    pub bytes_sent: u64,
    /// Response (client side) or request (server side) frames received.
    pub frames_received: u64,
    /// Bytes read from the kernel, handshakes included.
    pub bytes_received: u64,
    /// `write(2)` calls that sent something: frames per write is the coalescing achieved.
    pub writes: u64,
    /// Connections whose handshake completed; all but the first to a peer are reconnects.
    pub connects: u64,
    /// Connects that failed (unreachable, refused, or closed before the handshake).
    pub failed_connects: u64,
}

impl LinkStats {
    /// Connections re-established after the first.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }
}

/// One peer address as a core's [`Links`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    pub addr: String,
    /// A connection is open and its handshake done.
    pub connected: bool,
    pub stats: LinkStats,
}

/// [`LinkStats`] as live counters; one thread only.
#[derive(Default)]
struct Counters {
    frames_sent: Cell<u64>,
    bytes_sent: Cell<u64>,
    frames_received: Cell<u64>,
    bytes_received: Cell<u64>,
    writes: Cell<u64>,
    connects: Cell<u64>,
    failed_connects: Cell<u64>,
}

fn bump(counter: &Cell<u64>, by: usize) {
    counter.set(counter.get().wrapping_add(by as u64));
}

impl Counters {
    fn snapshot(&self) -> LinkStats {
        LinkStats {
            frames_sent: self.frames_sent.get(),
            bytes_sent: self.bytes_sent.get(),
            frames_received: self.frames_received.get(),
            bytes_received: self.bytes_received.get(),
            writes: self.writes.get(),
            connects: self.connects.get(),
            failed_connects: self.failed_connects.get(),
        }
    }
}

thread_local! {
    /// The server side's counters for every connection this thread serves: `connects` counts
    /// accepted hellos (adopted ones on the adopting core), `failed_connects` refused ones.
    static SERVED: Rc<Counters> = Rc::default();
}

/// What this thread's [`serve`] and [`serve_adopted`] connections did so far.
pub fn served_stats() -> LinkStats {
    SERVED.with(|counters| counters.snapshot())
}

/// Frames waiting for a connection's writer. Callers append whole frames; the writer takes
/// everything at once, so frames leave in the order they were appended.
#[derive(Default)]
struct Outbox {
    queued: RefCell<Vec<u8>>,
    /// The writer, parked because nothing was queued.
    writer: Cell<Option<Waker>>,
}

impl Outbox {
    /// Wakes the writer if it is parked; frames queued before it runs go out together.
    fn wake_writer(&self) {
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
    }

    /// Swaps everything queued into `into` (empty), or parks the writer if nothing is.
    fn poll_take(&self, cx: &Context<'_>, into: &mut Vec<u8>) -> Poll<()> {
        let mut queued = self.queued.borrow_mut();
        if queued.is_empty() {
            self.writer.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        std::mem::swap(&mut *queued, into);
        Poll::Ready(())
    }
}

/// Writes whatever the outbox holds, one batch per syscall, until the socket fails.
async fn write_out(stream: &RefCell<TcpStream>, outbox: &Outbox, counters: &Counters) -> io::Error {
    let mut sending = Vec::new();
    loop {
        poll_fn(|cx| outbox.poll_take(cx, &mut sending)).await;
        let mut sent = 0;
        while sent < sending.len() {
            let written =
                poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, &sending[sent..]))
                    .await;
            match written {
                Ok(0) => return io::ErrorKind::WriteZero.into(),
                Ok(n) => {
                    sent += n;
                    bump(&counters.writes, 1);
                    bump(&counters.bytes_sent, n);
                }
                Err(error) => return error,
            }
        }
        sending.clear();
        if sending.capacity() > KEEP_BUFFER {
            sending = Vec::new();
        }
    }
}

/// Splits a connection's incoming bytes into frames.
struct FrameReader {
    /// Bytes read and not yet returned as a frame.
    buffered: BytesMut,
    /// What a read lands in before joining `buffered`: reusing it spares zeroing a fresh
    /// read buffer per read (the copy out of it costs no more than that zeroing would).
    scratch: Vec<u8>,
}

/// An undecodable or oversized frame: the peer speaks something else.
fn bad_frame(why: impl Into<Box<dyn Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl FrameReader {
    fn new() -> Self {
        Self {
            buffered: BytesMut::new(),
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// The next frame's body (after its length prefix), at least `shortest` and at most
    /// `longest` bytes. `None` on a clean close between frames.
    async fn next(
        &mut self,
        stream: &RefCell<TcpStream>,
        counters: &Counters,
        shortest: usize,
        longest: usize,
    ) -> io::Result<Option<Bytes>> {
        loop {
            let missing = match self.buffered.first_chunk::<4>() {
                None => 4 - self.buffered.len(),
                Some(len) => {
                    let len = u32::from_be_bytes(*len) as usize;
                    if len > longest {
                        return Err(bad_frame(format!(
                            "frame of {len} bytes exceeds the {longest}-byte limit"
                        )));
                    }
                    if len < shortest {
                        return Err(bad_frame(format!(
                            "frame of {len} bytes is shorter than its {shortest}-byte header"
                        )));
                    }
                    if self.buffered.len() >= 4 + len {
                        let mut frame = self.buffered.split_to(4 + len);
                        let _prefix = frame.split_to(4);
                        return Ok(Some(frame.freeze()));
                    }
                    4 + len - self.buffered.len()
                }
            };
            // A peer that keeps the socket full must not keep the core to itself: every
            // read that finds data returns without ever yielding.
            glommio::yield_if_needed().await;
            // Room for the whole frame at once, so a large one is not copied on every
            // doubling of the buffer.
            self.buffered.reserve(missing);
            let got = read_some(stream, &mut self.scratch).await?;
            self.buffered.extend_from_slice(&self.scratch[..got]);
            bump(&counters.bytes_received, got);
            if got == 0 {
                if self.buffered.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a frame",
                ));
            }
        }
    }
}

async fn read_some(stream: &RefCell<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, buf)).await
}

/// Runs `future` for at most `limit`; `None` if the time ran out first.
async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let mut future = pin!(future);
    let mut timer = Timer::new(limit);
    poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        Pin::new(&mut timer).poll(cx).map(|_| None)
    })
    .await
}

/// The socket behind a glommio stream, for options glommio does not expose.
fn socket_of(stream: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the stream owns this open descriptor for at least the borrow's lifetime.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// Low latency (no Nagle: the writer batches itself) and dead-peer detection on a bus socket.
fn tune_socket(socket: SockRef<'_>) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL),
    )?;
    socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
}

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

/// What a core serves on its bus port.
pub trait Serve {
    /// Answers one request. Called synchronously, in arrival order, for each connection's
    /// requests, so a handler can enqueue into a per-group queue before its first await;
    /// the futures returned run concurrently and each reply is sent when its future ends.
    /// An `Err` (or a panic, here or in the future) reaches the caller as
    /// [`BusError::Remote`]. The future is dropped unfinished if the connection closes.
    fn request(
        &self,
        kind: u8,
        group: u16,
        payload: Bytes,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, String>>;
}

/// Hands an accepted connection whose hello names another core to that core, which serves it
/// with [`serve_adopted`]. Giving the socket back (`Err`) serves it on the accepting core.
pub type Route = Rc<dyn Fn(Hello, OwnedFd) -> Result<(), OwnedFd>>;

/// Serves the bus on `listener` for core `core` until the returned future is dropped, which
/// also closes every connection it serves and drops their requests in flight.
///
/// Each connection's hello is read first (exactly, so nothing behind it leaves the kernel's
/// buffer); a hello for another core goes to `route`, a bad one is refused and closed.
pub async fn serve(listener: TcpListener, core: u16, handler: Rc<dyn Serve>, route: Route) {
    let accepted = Rc::new(Accepted::default());
    // Accepting runs in a task of its own: glommio's accept future keeps one more clone of
    // its task's waker each time it is polled while pending, so polled on every wake-up of
    // a busy connection it would overflow the task's reference count (a panic after 32767
    // polls). Dropping this future drops the task, which stops accepting.
    let _acceptor = glommio::spawn_local(accept_loop(listener, accepted.clone()));
    // Connections are driven from this future (not detached tasks) so that dropping it
    // closes them all.
    let mut connections = FuturesUnordered::new();
    poll_fn(|cx| {
        while let Some(stream) = accepted.take(cx) {
            connections.push(accept_connection(
                stream,
                core,
                handler.clone(),
                route.clone(),
            ));
        }
        while let Poll::Ready(Some(())) = connections.poll_next_unpin(cx) {}
        Poll::Pending
    })
    .await
}

/// Connections accepted and not yet taken up by [`serve`].
#[derive(Default)]
struct Accepted {
    streams: RefCell<Vec<TcpStream>>,
    server: Cell<Option<Waker>>,
}

impl Accepted {
    /// The next accepted connection, or `None` with `cx` woken when there is one.
    fn take(&self, cx: &Context<'_>) -> Option<TcpStream> {
        let stream = self.streams.borrow_mut().pop();
        if stream.is_none() {
            self.server.set(Some(cx.waker().clone()));
        }
        stream
    }
}

async fn accept_loop(listener: TcpListener, accepted: Rc<Accepted>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                accepted.streams.borrow_mut().push(stream);
                if let Some(server) = accepted.server.take() {
                    server.wake();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cluster link: accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

async fn accept_connection(mut stream: TcpStream, core: u16, handler: Rc<dyn Serve>, route: Route) {
    let peer = peer_name(&stream);
    if let Err(error) = tune_socket(SockRef::from(&socket_of(&stream))) {
        tracing::debug!(%peer, %error, "cluster link: cannot set socket options, closing");
        return;
    }
    let hello = match within(HELLO_TIMEOUT, read_hello(&mut stream)).await {
        None => {
            tracing::debug!(%peer, "cluster link: no hello within {HELLO_TIMEOUT:?}, closing");
            return;
        }
        Some(Err(error)) => {
            tracing::debug!(%peer, %error, "cluster link: connection closed before its hello");
            return;
        }
        Some(Ok(Err(refusal))) => {
            SERVED.with(|counters| bump(&counters.failed_connects, 1));
            tracing::warn!(%peer, reason = %refusal, "cluster link: refused a peer's hello");
            refuse(stream, &refusal.to_string()).await;
            return;
        }
        Some(Ok(Ok(hello))) => hello,
    };
    if hello.target_core != core {
        let socket = match socket_of(&stream).try_clone_to_owned() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%peer, %error, "cluster link: cannot hand a connection over");
                return;
            }
        };
        // The duplicate keeps the socket open; this core lets go of its own descriptor.
        drop(stream);
        match route(hello.clone(), socket) {
            Ok(()) => return,
            Err(socket) => stream = stream_from(socket),
        }
    }
    serve_connection(stream, hello, handler).await;
}

/// Serves a connection another core accepted and routed here (see [`Route`]): `socket` is
/// positioned right after the hello, whose fields are `hello`.
pub async fn serve_adopted(socket: OwnedFd, hello: Hello, handler: Rc<dyn Serve>) {
    serve_connection(stream_from(socket), hello, handler).await;
}

/// A glommio stream taking over a connected TCP socket.
fn stream_from(socket: impl Into<OwnedFd>) -> TcpStream {
    let fd = socket.into().into_raw_fd();
    // SAFETY: `fd` is an open TCP socket whose ownership was just released to us.
    unsafe { TcpStream::from_raw_fd(fd) }
}

fn peer_name(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".to_owned(), |addr| addr.to_string())
}

/// Reads exactly one hello frame, not a byte more: what follows may be served by another
/// core. The inner error is a refusal to send back.
async fn read_hello(stream: &mut TcpStream) -> io::Result<Result<Hello, HandshakeError>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO_LEN {
        return Ok(Err(HandshakeError::Malformed("longer than 64 KiB")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    SERVED.with(|counters| bump(&counters.bytes_received, 4 + len));
    Ok(Hello::decode(&Bytes::from(body)))
}

/// Sends a refusal and closes, draining what the peer pipelined meanwhile (see
/// `REFUSAL_LINGER`).
async fn refuse(mut stream: TcpStream, reason: &str) {
    let mut frame = Vec::new();
    encode_ack(&mut frame, Some(reason));
    let sent = within(REFUSAL_LINGER, stream.write_all(&frame)).await;
    if !matches!(sent, Some(Ok(()))) || stream.shutdown(Shutdown::Write).await.is_err() {
        return;
    }
    let mut sink = vec![0u8; READ_CHUNK];
    let _ = within(REFUSAL_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

type Answer = LocalBoxFuture<'static, (u64, Result<Vec<u8>, String>)>;

async fn serve_connection(stream: TcpStream, hello: Hello, handler: Rc<dyn Serve>) {
    let peer = peer_name(&stream);
    let counters = SERVED.with(Rc::clone);
    bump(&counters.connects, 1);
    tracing::debug!(%peer, node = hello.node, core = hello.core, "cluster link: peer connected");
    match run_server_connection(stream, &*handler, &counters).await {
        Ok(()) => tracing::debug!(%peer, "cluster link: peer disconnected"),
        // A malformed or oversized frame: the peer speaks something else, say so.
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(%peer, %error, "cluster link: bad frame, connection closed");
        }
        Err(error) => tracing::debug!(%peer, %error, "cluster link: peer connection failed"),
    }
}

/// Reads requests, runs them, writes their replies; ends when the peer closes or a frame is
/// bad. Everything runs in this one future, polled in a fixed order on each wake-up: new
/// requests are handed to the handler, then finished replies are queued, then the writer
/// sends them — so replies finished in one pass leave in one write.
async fn run_server_connection(
    stream: TcpStream,
    handler: &dyn Serve,
    counters: &Counters,
) -> io::Result<()> {
    let stream = RefCell::new(stream);
    let outbox = Outbox::default();
    encode_ack(&mut outbox.queued.borrow_mut(), None);
    let in_flight: RefCell<FuturesUnordered<Answer>> = RefCell::default();
    let mut reading = pin!(read_requests(&stream, handler, &in_flight, counters));
    let mut writing = pin!(write_out(&stream, &outbox, counters));
    poll_fn(|cx| {
        if let Poll::Ready(ended) = reading.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        // An empty set answers `Ready(None)` without keeping the waker: new requests only
        // come from `reading` above, in this same poll, so nothing is missed.
        let mut answers = in_flight.borrow_mut();
        while let Poll::Ready(Some((id, reply))) = answers.poll_next_unpin(cx) {
            queue_response(&mut outbox.queued.borrow_mut(), id, reply);
            bump(&counters.frames_sent, 1);
        }
        drop(answers);
        writing.as_mut().poll(cx).map(Err)
    })
    .await
}

async fn read_requests(
    stream: &RefCell<TcpStream>,
    handler: &dyn Serve,
    in_flight: &RefCell<FuturesUnordered<Answer>>,
    counters: &Counters,
) -> io::Result<()> {
    let mut reader = FrameReader::new();
    while let Some(frame) = reader
        .next(stream, counters, REQUEST_HEAD, MAX_FRAME_LEN)
        .await?
    {
        bump(&counters.frames_received, 1);
        let mut head = Cursor(&frame);
        let (Some(id), Some(kind), Some(group)) = (head.u64(), head.u8(), head.u16()) else {
            return Err(bad_frame("request shorter than its header"));
        };
        let payload = frame.slice(REQUEST_HEAD..);
        let answer: Answer = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            handler.request(kind, group, payload)
        })) {
            Ok(reply) => AssertUnwindSafe(reply)
                .catch_unwind()
                .map(move |reply| (id, reply.unwrap_or_else(|_| Err(HANDLER_PANICKED.into()))))
                .boxed_local(),
            Err(_) => Box::pin(std::future::ready((id, Err(HANDLER_PANICKED.into())))),
        };
        in_flight.borrow_mut().push(answer);
    }
    Ok(())
}

/// Appends a response frame; a reply too large to send becomes an error saying so.
fn queue_response(out: &mut Vec<u8>, id: u64, reply: Result<Vec<u8>, String>) {
    let (status, body) = match reply {
        Ok(body) if RESPONSE_HEAD + body.len() > MAX_FRAME_LEN => (
            STATUS_FAILED,
            BusError::FrameTooLarge(RESPONSE_HEAD + body.len())
                .to_string()
                .into_bytes(),
        ),
        Ok(body) => (STATUS_OK, body),
        Err(message) => (STATUS_FAILED, message.into_bytes()),
    };
    // An error message is never near the limit; cut one that is rather than fail the frame.
    let body = &body[..body.len().min(MAX_FRAME_LEN - RESPONSE_HEAD)];
    out.extend_from_slice(&frame_len(RESPONSE_HEAD + body.len()).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(status);
    out.extend_from_slice(body);
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

/// One core's links to its peers: one connection per peer bus address, opened on the first
/// call, shared by every caller on the core. A cheap handle (clones share the links); it
/// lives on one glommio executor and is called only from its tasks. Dropping the last handle
/// closes every connection and fails the calls waiting on them.
#[derive(Clone)]
pub struct Links {
    inner: Rc<LinksInner>,
}

struct LinksInner {
    local_ip: Option<IpAddr>,
    me: NodeId,
    core: u16,
    target_core: Cell<u16>,
    next_id: Cell<u64>,
    peers: RefCell<HashMap<String, Peer>>,
}

/// One peer address: its current connection and what outlives connections.
struct Peer {
    state: Rc<PeerState>,
    live: Option<Live>,
}

/// A connection and the task driving it; dropping the task closes the connection.
struct Live {
    conn: Rc<Conn>,
    _task: Task<()>,
}

/// What outlives a peer's connections: reconnect backoff and counters. Shared with the
/// connection task, which records how each connection ended.
#[derive(Default)]
struct PeerState {
    backoff: RefCell<Backoff>,
    counters: Counters,
}

#[derive(Default)]
struct Backoff {
    /// Consecutive failed connects (or connections that died young): sets the pause.
    failures: u32,
    /// No dialling before this.
    retry_at: Option<Instant>,
    last_error: String,
    /// The peer's loss was logged and its recovery is not yet: log transitions, not calls.
    down_logged: bool,
}

impl Backoff {
    fn failed(&mut self, now: Instant, why: String) {
        self.last_error = why;
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        self.retry_at = Some(now + (BACKOFF_MIN * 2u32.pow(doublings)).min(BACKOFF_MAX));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Resolving the address or waiting for the TCP handshake; frames queue meanwhile.
    Dialling,
    /// TCP connected; our hello is sent or queued, the peer's answer not yet read.
    Connected,
    /// The peer acknowledged our hello.
    Ready,
    Closed,
}

/// One connection: frames queued for it and the calls waiting for replies.
struct Conn {
    addr: String,
    peer: Rc<PeerState>,
    outbox: Outbox,
    waiters: RefCell<HashMap<u64, Waiter>>,
    phase: Cell<Phase>,
    ready_at: Cell<Option<Instant>>,
}

enum Waiter {
    Waiting(Option<Waker>),
    Done(Result<Bytes, BusError>),
}

impl Conn {
    fn new(addr: &str, peer: Rc<PeerState>, hello: &Hello) -> Self {
        let outbox = Outbox::default();
        hello.encode(&mut outbox.queued.borrow_mut());
        Self {
            addr: addr.to_owned(),
            peer,
            outbox,
            waiters: RefCell::default(),
            phase: Cell::new(Phase::Dialling),
            ready_at: Cell::new(None),
        }
    }

    /// The reply for `id` if it arrived, else registers `waker` for it.
    fn poll_reply(&self, id: u64, waker: &Waker) -> Option<Result<Bytes, BusError>> {
        let mut waiters = self.waiters.borrow_mut();
        match waiters.get_mut(&id) {
            Some(Waiter::Waiting(slot)) => {
                if !slot.as_ref().is_some_and(|known| known.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                None
            }
            Some(Waiter::Done(_)) => match waiters.remove(&id) {
                Some(Waiter::Done(reply)) => Some(reply),
                _ => None,
            },
            // Only a finished call forgets its entry; a fresh one never polls without one.
            None => Some(Err(BusError::ConnectionLost("reply already taken".into()))),
        }
    }

    /// Hands a response frame to the call waiting for it; nobody may be (it timed out).
    fn complete(&self, frame: &Bytes) -> io::Result<()> {
        let mut head = Cursor(frame);
        let (Some(id), Some(status)) = (head.u64(), head.u8()) else {
            return Err(bad_frame("response shorter than its header"));
        };
        let payload = frame.slice(RESPONSE_HEAD..);
        let reply = match status {
            STATUS_OK => Ok(payload),
            STATUS_FAILED => Err(BusError::Remote(
                String::from_utf8_lossy(&payload).into_owned(),
            )),
            status => Err(BusError::Remote(format!(
                "unexpected reply status {status}"
            ))),
        };
        let waker = match self.waiters.borrow_mut().get_mut(&id) {
            Some(waiter @ Waiter::Waiting(_)) => {
                match std::mem::replace(waiter, Waiter::Done(reply)) {
                    Waiter::Waiting(waker) => waker,
                    Waiter::Done(_) => None,
                }
            }
            _ => None,
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The peer acknowledged our hello: the connection is up.
    fn handshake_done(&self) {
        self.phase.set(Phase::Ready);
        self.ready_at.set(Some(Instant::now()));
        bump(&self.peer.counters.connects, 1);
        let mut backoff = self.peer.backoff.borrow_mut();
        if backoff.down_logged {
            tracing::info!(peer = %self.addr, "cluster link: connection re-established");
        } else {
            tracing::debug!(peer = %self.addr, "cluster link: connected");
        }
        backoff.down_logged = false;
        backoff.retry_at = None;
    }

    /// Fails every waiting call with `error` and drops what was never sent.
    fn close(&self, error: &BusError) {
        if self.phase.replace(Phase::Closed) == Phase::Closed {
            return;
        }
        *self.outbox.queued.borrow_mut() = Vec::new();
        let mut woken = Vec::new();
        for waiter in self.waiters.borrow_mut().values_mut() {
            if let Waiter::Waiting(waker) = waiter {
                woken.extend(waker.take());
                *waiter = Waiter::Done(Err(error.clone()));
            }
        }
        for waker in woken {
            waker.wake();
        }
    }
}

/// A call in flight; resolves to the peer's reply or why there is none. Dropping it gives
/// up on the reply (the request may still run).
pub struct Call {
    state: CallState,
}

enum CallState {
    Failed(Option<BusError>),
    Waiting {
        waiting: Waiting,
        timer: Timer,
        timeout: Duration,
    },
}

/// A registered waiter, removed when the call ends however it ends (reply, timeout, drop).
struct Waiting {
    conn: Rc<Conn>,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.conn.waiters.borrow_mut().remove(&self.id);
    }
}

impl Call {
    fn failed(error: BusError) -> Self {
        Self {
            state: CallState::Failed(Some(error)),
        }
    }
}

impl Future for Call {
    type Output = Result<Bytes, BusError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let ended = match &mut this.state {
            CallState::Failed(error) => match error.take() {
                Some(error) => Err(error),
                None => Err(BusError::ConnectionLost(
                    "call polled after it ended".into(),
                )),
            },
            CallState::Waiting {
                waiting,
                timer,
                timeout,
            } => {
                if let Some(reply) = waiting.conn.poll_reply(waiting.id, cx.waker()) {
                    reply
                } else if Pin::new(timer).poll(cx).is_ready() {
                    Err(BusError::Timeout(*timeout))
                } else {
                    return Poll::Pending;
                }
            }
        };
        // Forgets the waiter (dropping `Waiting`) and answers later polls with an error.
        this.state = CallState::Failed(None);
        Poll::Ready(ended)
    }
}

/// Undoes a partly encoded frame unless committed, so a failing or panicking encoder never
/// leaves half a frame in the outbox.
struct Partial<'a> {
    queued: std::cell::RefMut<'a, Vec<u8>>,
    start: usize,
    committed: bool,
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.queued.truncate(self.start);
        }
    }
}

impl Links {
    /// Links for core `core` of node `me`. `local_ip`: the address outgoing connections come
    /// from (so a test proxy or firewall can tell nodes on one loopback apart), or `None` to
    /// let the OS pick. Connections ask the peer for its core of the same index.
    pub fn new(local_ip: Option<IpAddr>, me: NodeId, core: u16) -> Self {
        Self {
            inner: Rc::new(LinksInner {
                local_ip,
                me,
                core,
                target_core: Cell::new(core),
                next_id: Cell::new(1),
                peers: RefCell::default(),
            }),
        }
    }

    /// Asks peers for core `target` instead, on connections opened from now on.
    pub fn set_target_core(&self, target: u16) {
        self.inner.target_core.set(target);
    }

    /// Sends a request to the peer at bus address `addr` (`host:port`); [`Serve::request`]
    /// answers it there. The frame is queued before this returns (see the module's
    /// ordering guarantee); the returned future only waits for the reply, `timeout` at most.
    pub fn call(
        &self,
        addr: &str,
        kind: u8,
        group: u16,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Call {
        let payload = payload.as_ref();
        // Checked first, so an oversized request does not even open a connection.
        let len = REQUEST_HEAD.saturating_add(payload.len());
        if len > MAX_FRAME_LEN {
            return Call::failed(BusError::FrameTooLarge(len));
        }
        self.call_with(addr, kind, group, timeout, |out| {
            out.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// [`Links::call`] with the payload written by `encode` straight into the connection's
    /// outgoing buffer (after the frame header), sparing a copy. `encode` must only append,
    /// and must not call these links. If it fails (or the frame ends up over
    /// [`MAX_FRAME_LEN`]) its bytes are taken back and the call fails.
    pub fn call_with<E: fmt::Display>(
        &self,
        addr: &str,
        kind: u8,
        group: u16,
        timeout: Duration,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Call {
        let conn = match self.connection(addr) {
            Ok(conn) => conn,
            Err(error) => return Call::failed(error),
        };
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id.wrapping_add(1));
        let was_empty = {
            let queued = conn.outbox.queued.borrow_mut();
            let start = queued.len();
            let mut frame = Partial {
                queued,
                start,
                committed: false,
            };
            frame.queued.extend_from_slice(&[0; 4]);
            frame.queued.extend_from_slice(&id.to_be_bytes());
            frame.queued.push(kind);
            frame.queued.extend_from_slice(&group.to_be_bytes());
            if let Err(error) = encode(&mut frame.queued) {
                return Call::failed(BusError::Encode(error.to_string()));
            }
            let len = frame.queued.len() - start - 4;
            if len > MAX_FRAME_LEN {
                return Call::failed(BusError::FrameTooLarge(len));
            }
            frame.queued[start..start + 4].copy_from_slice(&frame_len(len).to_be_bytes());
            frame.committed = true;
            start == 0
        };
        conn.waiters.borrow_mut().insert(id, Waiter::Waiting(None));
        bump(&conn.peer.counters.frames_sent, 1);
        if was_empty {
            conn.outbox.wake_writer();
        }
        Call {
            state: CallState::Waiting {
                waiting: Waiting { conn, id },
                timer: Timer::new(timeout),
                timeout,
            },
        }
    }

    /// Per peer address: connected or not, and its counters.
    pub fn stats(&self) -> Vec<PeerStats> {
        let peers = self.inner.peers.borrow();
        let mut stats: Vec<_> = peers
            .iter()
            .map(|(addr, peer)| PeerStats {
                addr: addr.clone(),
                connected: peer
                    .live
                    .as_ref()
                    .is_some_and(|live| live.conn.phase.get() == Phase::Ready),
                stats: peer.state.counters.snapshot(),
            })
            .collect();
        stats.sort_by(|a, b| a.addr.cmp(&b.addr));
        stats
    }

    /// The open (or opening) connection to `addr`, starting one unless the peer is backed
    /// off.
    fn connection(&self, addr: &str) -> Result<Rc<Conn>, BusError> {
        let mut peers = self.inner.peers.borrow_mut();
        let peer = peers.entry(addr.to_owned()).or_insert_with(|| Peer {
            state: Rc::default(),
            live: None,
        });
        if let Some(live) = &peer.live
            && live.conn.phase.get() != Phase::Closed
        {
            return Ok(live.conn.clone());
        }
        let backoff = peer.state.backoff.borrow();
        if let Some(retry_at) = backoff.retry_at {
            let now = Instant::now();
            if now < retry_at {
                return Err(BusError::Unreachable(format!(
                    "{addr}: {} (next attempt in {:?})",
                    backoff.last_error,
                    retry_at - now
                )));
            }
        }
        drop(backoff);
        let hello = Hello::new(self.inner.me, self.inner.core, self.inner.target_core.get());
        let conn = Rc::new(Conn::new(addr, peer.state.clone(), &hello));
        let task = glommio::spawn_local(drive(conn.clone(), self.inner.local_ip));
        // Replacing a closed connection drops its finished task.
        peer.live = Some(Live {
            conn: conn.clone(),
            _task: task,
        });
        Ok(conn)
    }
}

/// How a client connection ended.
enum Ended {
    /// Never connected.
    Unreachable(String),
    /// Connected, but the handshake was refused or garbled.
    Handshake(String),
    /// Connected, then lost.
    Lost(String),
}

/// Fails a connection's calls if its task is dropped (the links were dropped) before it
/// ended on its own.
struct CloseOnDrop<'a>(&'a Conn);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0
            .close(&BusError::ConnectionLost("the links were dropped".into()));
    }
}

/// Drives one client connection from dialling to its end, then records the outcome for the
/// backoff and fails the calls still waiting.
async fn drive(conn: Rc<Conn>, local_ip: Option<IpAddr>) {
    let closing = CloseOnDrop(&conn);
    // glommio runs a spawned task at once, up to its first await. Step aside first: the
    // call that opened the connection queues its frame before anything is dialled (a
    // refused loopback connect fails without ever waiting), and the frames queued by the
    // tasks running in this pass leave with the hello in the first write.
    yield_now().await;
    let peer = &*conn.peer;
    let ended = run_client_connection(&conn, peer, local_ip).await;
    let addr = &conn.addr;
    let now = Instant::now();
    let mut backoff = peer.backoff.borrow_mut();
    // A connection that never got to serve: counted, logged once until one succeeds, and
    // retried after the backoff.
    let mut not_opened = |what: &str, why: &str| {
        bump(&peer.counters.failed_connects, 1);
        if !backoff.down_logged {
            tracing::warn!(peer = %addr, reason = %why, "cluster link: {what}");
            backoff.down_logged = true;
        }
        backoff.failed(now, why.to_owned());
        format!("{addr}: {why}")
    };
    let error = match ended {
        Ended::Unreachable(why) => BusError::Unreachable(not_opened("cannot connect", &why)),
        Ended::Handshake(why) => BusError::Handshake(not_opened("handshake failed", &why)),
        Ended::Lost(why) => {
            tracing::warn!(peer = %addr, reason = %why, "cluster link: connection lost");
            backoff.down_logged = true;
            match conn.ready_at.get() {
                Some(ready_at) if now - ready_at >= HEALTHY_AFTER => {
                    backoff.failures = 0;
                    backoff.retry_at = None;
                }
                ready_at => {
                    if ready_at.is_none() {
                        bump(&peer.counters.failed_connects, 1);
                    }
                    backoff.failed(now, "connection closed right after opening".into());
                }
            }
            BusError::ConnectionLost(why)
        }
    };
    drop(backoff);
    // Recorded first, so a caller retrying as soon as it is failed sees the backoff.
    conn.close(&error);
    drop(closing);
}

async fn run_client_connection(conn: &Conn, peer: &PeerState, local_ip: Option<IpAddr>) -> Ended {
    let dialled = within(CONNECT_TIMEOUT, dial(&conn.addr, local_ip))
        .await
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {CONNECT_TIMEOUT:?}"),
            ))
        });
    let stream = match dialled {
        Ok(stream) => RefCell::new(stream),
        Err(error) => return Ended::Unreachable(error.to_string()),
    };
    conn.phase.set(Phase::Connected);
    let mut reading = pin!(read_replies(&stream, conn, peer));
    let mut writing = pin!(write_out(&stream, &conn.outbox, &peer.counters));
    poll_fn(|cx| {
        if let Poll::Ready(ended) = reading.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        writing
            .as_mut()
            .poll(cx)
            .map(|error| Ended::Lost(error.to_string()))
    })
    .await
}

/// Reads the hello-ack, then hands each response to the call waiting for it.
async fn read_replies(stream: &RefCell<TcpStream>, conn: &Conn, peer: &PeerState) -> Ended {
    let counters = &peer.counters;
    let mut reader = FrameReader::new();
    let ack = match reader.next(stream, counters, ACK_HEAD, MAX_HELLO_LEN).await {
        Ok(Some(ack)) => ack,
        Ok(None) => return Ended::Lost("closed by the peer before its hello-ack".into()),
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            return Ended::Handshake(format!("bad hello-ack: {error}"));
        }
        Err(error) => return Ended::Lost(error.to_string()),
    };
    if let Err(why) = check_ack(&ack) {
        return Ended::Handshake(why);
    }
    conn.handshake_done();
    loop {
        let frame = match reader
            .next(stream, counters, RESPONSE_HEAD, MAX_FRAME_LEN)
            .await
        {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ended::Lost("closed by the peer".into()),
            Err(error) => return Ended::Lost(error.to_string()),
        };
        bump(&counters.frames_received, 1);
        if let Err(error) = conn.complete(&frame) {
            return Ended::Lost(error.to_string());
        }
    }
}

/// Lets every other runnable task run before this one resumes.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Opens a bus connection to `addr`, from `local_ip` if given. A host name is resolved on
/// glommio's blocking thread pool: a slow resolver must not stall the core.
async fn dial(addr: &str, local_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let targets: Vec<SocketAddr> = match addr.parse() {
        Ok(target) => vec![target],
        Err(_) => {
            let name = addr.to_owned();
            glommio::executor()
                .spawn_blocking(move || name.to_socket_addrs().map(Iterator::collect))
                .await?
        }
    };
    let mut last_error = None;
    for target in targets {
        if let Some(ip) = local_ip
            && ip.is_ipv4() != target.is_ipv4()
        {
            continue;
        }
        match dial_one(target, local_ip).await {
            Ok(stream) => return Ok(stream),
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

async fn dial_one(target: SocketAddr, local_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Before connecting: the user timeout then also bounds the SYN retries.
    tune_socket(SockRef::from(&socket))?;
    if let Some(ip) = local_ip {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    // glommio cannot connect a socket bound first, so the connect runs in the kernel on its
    // own and a zero-byte send waits for it: it would block (and glommio polls for
    // writability) while the handshake is in flight, then succeeds or reports the
    // connect's error.
    let mut stream = stream_from(socket);
    poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &[])).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::future::join_all;
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Runs a test on a glommio executor of this thread.
    fn run<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
        executor().make().expect("executor").run(test());
    }

    fn executor() -> LocalExecutorBuilder {
        LocalExecutorBuilder::new(Placement::Unbound).io_memory(512 * 1024)
    }

    /// Kind whose handler panics before returning its future.
    const PANIC_AT_ONCE: u8 = 9;
    /// Kind whose handler wakes its connection 40,000 times before answering.
    const BUSY: u8 = 10;

    /// Payload `[delay ms: u16][wait for: u16][body]`: once `wait for` requests have arrived
    /// on this server and the delay has passed, answers the body reversed; a body of `fail`
    /// answers an error, `panic` panics. Records each request's group and body in arrival
    /// order.
    #[derive(Default)]
    struct Echo {
        arrived: Rc<Cell<usize>>,
        seen: RefCell<Vec<(u16, Bytes)>>,
    }

    impl Serve for Echo {
        fn request(
            &self,
            kind: u8,
            group: u16,
            payload: Bytes,
        ) -> LocalBoxFuture<'static, Result<Vec<u8>, String>> {
            assert_ne!(kind, PANIC_AT_ONCE, "asked to panic at once");
            if kind == BUSY {
                return Box::pin(async {
                    for _ in 0..40_000 {
                        yield_now().await;
                    }
                    Ok(b"done".to_vec())
                });
            }
            self.arrived.set(self.arrived.get() + 1);
            let arrived = self.arrived.clone();
            let delay = u16::from_be_bytes([payload[0], payload[1]]);
            let wait_for = u16::from_be_bytes([payload[2], payload[3]]) as usize;
            let body = payload.slice(4..);
            self.seen.borrow_mut().push((group, body.clone()));
            Box::pin(async move {
                let deadline = Instant::now() + 10 * SECOND;
                while arrived.get() < wait_for {
                    if Instant::now() > deadline {
                        return Err(format!("only {} requests arrived", arrived.get()));
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                glommio::timer::sleep(Duration::from_millis(delay.into())).await;
                match &body[..] {
                    b"fail" => Err("asked to fail".to_owned()),
                    b"panic" => panic!("asked to panic"),
                    _ => Ok(body.iter().rev().copied().collect()),
                }
            })
        }
    }

    fn request(delay_ms: u16, body: &[u8]) -> Vec<u8> {
        waiting_request(delay_ms, 0, body)
    }

    fn waiting_request(delay_ms: u16, wait_for: u16, body: &[u8]) -> Vec<u8> {
        let mut payload = delay_ms.to_be_bytes().to_vec();
        payload.extend_from_slice(&wait_for.to_be_bytes());
        payload.extend_from_slice(body);
        payload
    }

    fn reversed(body: &[u8]) -> Bytes {
        body.iter().rev().copied().collect()
    }

    /// A listening socket with SO_REUSEADDR, so a test can listen again on a port it used.
    fn listening_socket(addr: &str) -> Socket {
        let addr: SocketAddr = addr.parse().expect("socket address");
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.bind(&addr.into()).expect("bind");
        socket.listen(128).expect("listen");
        socket
    }

    fn listener_from(socket: Socket) -> TcpListener {
        // SAFETY: a listening socket whose ownership is handed over here.
        unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) }
    }

    fn listen(addr: &str) -> TcpListener {
        listener_from(listening_socket(addr))
    }

    fn no_route() -> Route {
        Rc::new(|_, socket| Err(socket))
    }

    /// Starts a bus server on a free loopback port; drop the task to stop it.
    fn start_server(handler: Rc<dyn Serve>) -> (String, Task<()>) {
        let listener = listen("127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        (
            addr,
            glommio::spawn_local(serve(listener, 0, handler, no_route())),
        )
    }

    /// A loopback address nothing listens on.
    fn dead_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").to_string()
    }

    fn hello_frame(version: u16, target_core: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        Hello {
            version,
            ..Hello::new(5, 0, target_core)
        }
        .encode(&mut frame);
        frame
    }

    async fn read_raw_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await?;
        Ok(body)
    }

    fn peer_stats(links: &Links, addr: &str) -> PeerStats {
        links
            .stats()
            .into_iter()
            .find(|peer| peer.addr == addr)
            .expect("peer known")
    }

    /// Retries `call` until it succeeds, failing the test after `limit`.
    async fn eventually(limit: Duration, mut call: impl FnMut() -> Call) -> Bytes {
        let deadline = Instant::now() + limit;
        loop {
            match call().await {
                Ok(reply) => return reply,
                Err(error) => {
                    assert!(Instant::now() < deadline, "still failing: {error}");
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    #[test]
    fn concurrent_calls_share_one_connection_and_get_their_own_replies() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            // Each request is held until all 64 have arrived, which only a server running
            // them concurrently gets to; later calls then answer sooner, so replies come
            // back out of order.
            let calls = (0..64u16).map(|i| {
                let body = format!("call-{i}");
                let call = links.call(
                    &addr,
                    4,
                    0,
                    waiting_request(200 - 3 * i, 64, body.as_bytes()),
                    10 * SECOND,
                );
                async move { (call.await, reversed(body.as_bytes())) }
            });
            for (reply, expected) in join_all(calls).await {
                assert_eq!(reply, Ok(expected));
            }
            let peer = peer_stats(&links, &addr);
            assert!(peer.connected);
            assert_eq!(peer.stats.connects, 1);
            assert_eq!(peer.stats.frames_received, 64);
            assert_eq!(links.stats().len(), 1);

            let error = links.call(&addr, 4, 0, request(0, b"fail"), SECOND).await;
            assert_eq!(error, Err(BusError::Remote("asked to fail".to_owned())));
        });
    }

    #[test]
    fn dead_peer_is_unreachable_at_once_and_backed_off() {
        run(|| async {
            let addr = dead_addr();
            let links = Links::new(None, 1, 0);
            let first = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            assert!(matches!(first, Err(BusError::Unreachable(_))), "{first:?}");
            // Within the backoff the second call does not dial at all.
            let second = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            match second {
                Err(BusError::Unreachable(why)) => assert!(why.contains("next attempt"), "{why}"),
                other => panic!("expected unreachable, got {other:?}"),
            }
            let peer = peer_stats(&links, &addr);
            assert!(!peer.connected);
            assert_eq!(peer.stats.failed_connects, 1);
            assert_eq!(peer.stats.connects, 0);
        });
    }

    #[test]
    fn reconnects_after_the_server_restarts() {
        run(|| async {
            let (addr, server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            let reply = links.call(&addr, 4, 0, request(0, b"ab"), SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"ba")));

            // Dropping the server's task closes its listener and connections.
            drop(server);
            let deadline = Instant::now() + 5 * SECOND;
            while links
                .call(&addr, 4, 0, request(0, b"ab"), SECOND)
                .await
                .is_ok()
            {
                assert!(Instant::now() < deadline, "calls kept succeeding");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }

            let listener = listen(&addr);
            let _server =
                glommio::spawn_local(serve(listener, 0, Rc::new(Echo::default()), no_route()));
            let reply = eventually(5 * SECOND, || {
                links.call(&addr, 4, 0, request(0, b"cd"), SECOND)
            })
            .await;
            assert_eq!(reply, Bytes::from_static(b"dc"));
            let peer = peer_stats(&links, &addr);
            assert!(peer.connected);
            assert_eq!(peer.stats.reconnects(), 1);
        });
    }

    #[test]
    fn server_closes_a_connection_announcing_an_oversized_frame() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            stream
                .write_all(&hello_frame(PROTOCOL_VERSION, 0))
                .await
                .expect("hello");
            let ack = read_raw_frame(&mut stream).await.expect("hello-ack");
            assert_eq!(check_ack(&ack), Ok(()));
            let len = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
            stream.write_all(&len).await.expect("write");
            let mut byte = [0u8; 1];
            let read = within(5 * SECOND, stream.read(&mut byte)).await;
            // Closed without a reply (EOF, or a reset if our unread bytes were still queued).
            assert!(matches!(read, Some(Ok(0)) | Some(Err(_))), "{read:?}");
        });
    }

    #[test]
    fn client_refuses_to_send_an_oversized_frame() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            // Fresh zeroed pages from the allocator: never touched, so this costs no memory.
            let payload = vec![0u8; MAX_FRAME_LEN - REQUEST_HEAD + 1];
            let result = links.call(&addr, 4, 0, payload, SECOND).await;
            assert_eq!(result, Err(BusError::FrameTooLarge(MAX_FRAME_LEN + 1)));
            // Nothing was sent: the connection was never even opened.
            assert!(links.stats().is_empty());
        });
    }

    #[test]
    fn a_failed_encoder_leaves_nothing_behind() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            let failed = links.call_with(&addr, 4, 0, SECOND, |out| {
                out.extend_from_slice(b"half a frame");
                Err("cannot encode")
            });
            assert_eq!(
                failed.await,
                Err(BusError::Encode("cannot encode".to_owned()))
            );
            // The half-written frame was taken back: the connection still parses.
            let reply = links.call(&addr, 4, 0, request(0, b"ok"), 5 * SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"ko")));
        });
    }

    #[test]
    fn client_drops_a_connection_answering_with_an_oversized_frame() {
        run(|| async {
            let listener = listen("127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr").to_string();
            let _server = glommio::spawn_local(async move {
                let mut stream = listener.accept().await.expect("accept");
                read_raw_frame(&mut stream).await.expect("hello");
                let mut ack = Vec::new();
                encode_ack(&mut ack, None);
                stream.write_all(&ack).await.expect("hello-ack");
                let request = read_raw_frame(&mut stream).await.expect("request");
                let mut reply = (MAX_FRAME_LEN as u32 + 1).to_be_bytes().to_vec();
                reply.extend_from_slice(&request[..8]);
                stream.write_all(&reply).await.expect("reply");
                // Stay open: the client must be the one to close.
                glommio::timer::sleep(10 * SECOND).await;
            });
            let links = Links::new(None, 1, 0);
            let result = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            match result {
                Err(BusError::ConnectionLost(why)) => assert!(why.contains("exceeds"), "{why}"),
                other => panic!("expected a lost connection, got {other:?}"),
            }
        });
    }

    #[test]
    fn a_slow_reply_times_out_and_the_connection_carries_on() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            let short = Duration::from_millis(50);
            let result = links.call(&addr, 4, 0, request(300, b"slow"), short).await;
            assert_eq!(result, Err(BusError::Timeout(short)));
            // The late reply arrives with nobody waiting and is dropped; the connection stays.
            glommio::timer::sleep(Duration::from_millis(400)).await;
            let reply = links.call(&addr, 4, 0, request(0, b"ok"), SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"ko")));
            let peer = peer_stats(&links, &addr);
            assert_eq!(peer.stats.connects, 1);
            assert_eq!(peer.stats.frames_received, 2);
            let peers = links.inner.peers.borrow();
            let live = peers[&addr].live.as_ref().expect("connection");
            assert!(live.conn.waiters.borrow().is_empty());
        });
    }

    #[test]
    fn a_panicking_handler_answers_an_error_and_the_connection_carries_on() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            let panicked = Err(BusError::Remote(HANDLER_PANICKED.to_owned()));
            let later = links.call(&addr, 4, 0, request(0, b"panic"), SECOND).await;
            assert_eq!(later, panicked);
            let at_once = links
                .call(&addr, PANIC_AT_ONCE, 0, request(0, b"x"), SECOND)
                .await;
            assert_eq!(at_once, panicked);
            let reply = links.call(&addr, 4, 0, request(0, b"ok"), SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"ko")));
            assert_eq!(peer_stats(&links, &addr).stats.connects, 1);
        });
    }

    #[test]
    fn a_busy_connection_does_not_wear_out_the_server_task() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            let reply = links.call(&addr, BUSY, 0, [], 60 * SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"done")));
            let reply = links.call(&addr, 4, 0, request(0, b"ok"), 5 * SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"ko")));
        });
    }

    #[test]
    fn outgoing_connections_come_from_the_given_local_ip() {
        run(|| async {
            let listener = listen("127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr").to_string();
            let local_ip: IpAddr = "127.0.0.2".parse().expect("ip");
            let links = Links::new(Some(local_ip), 1, 0);
            let call = links.call(&addr, 4, 0, request(0, b"x"), SECOND);
            let call = glommio::spawn_local(call);
            let stream = listener.accept().await.expect("accept");
            assert_eq!(stream.peer_addr().expect("peer").ip(), local_ip);
            // Nobody answers: the call times out.
            assert_eq!(call.await, Err(BusError::Timeout(SECOND)));
        });
    }

    #[test]
    fn frames_queued_in_one_loop_pass_go_out_in_one_write() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let links = Links::new(None, 1, 0);
            let reply = links.call(&addr, 4, 0, request(0, b"up"), 5 * SECOND).await;
            assert_eq!(reply, Ok(Bytes::from_static(b"pu")));
            let before = peer_stats(&links, &addr).stats;
            // Fifty tasks, each making one call, all run in one pass of the loop.
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let links = links.clone();
                    let addr = addr.clone();
                    glommio::spawn_local(async move {
                        let body = format!("task-{i}");
                        let reply = links
                            .call(&addr, 4, 0, request(0, body.as_bytes()), 5 * SECOND)
                            .await;
                        assert_eq!(reply, Ok(reversed(body.as_bytes())));
                    })
                })
                .collect();
            join_all(tasks).await;
            let after = peer_stats(&links, &addr).stats;
            assert_eq!(after.frames_sent - before.frames_sent, 50);
            assert_eq!(after.writes - before.writes, 1);
        });
    }

    #[test]
    fn pipelined_calls_for_a_group_reach_the_handler_in_call_order() {
        run(|| async {
            let echo = Rc::new(Echo::default());
            let (addr, _server) = start_server(echo.clone());
            let links = Links::new(None, 1, 0);
            let mut calls = Vec::new();
            for batch in 0..4u32 {
                for i in 0..500u32 {
                    let seq = batch * 500 + i;
                    let group = 7 + (seq % 2) as u16;
                    let mut body = seq.to_be_bytes().to_vec();
                    // Some large frames, so writes end part-way and calls queue meanwhile.
                    if seq % 100 == 0 {
                        body.resize(256 << 10, 0);
                    }
                    calls.push(links.call(&addr, 1, group, request(0, &body), 10 * SECOND));
                }
                // Let the writer run between batches.
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            for reply in join_all(calls).await {
                assert!(reply.is_ok(), "{reply:?}");
            }
            let seen = echo.seen.borrow();
            assert_eq!(seen.len(), 2000);
            for group in [7, 8] {
                let order: Vec<u32> = seen
                    .iter()
                    .filter(|(g, _)| *g == group)
                    .map(|(_, body)| u32::from_be_bytes([body[0], body[1], body[2], body[3]]))
                    .collect();
                let expected: Vec<u32> = (0..2000)
                    .filter(|seq| 7 + seq % 2 == group as u32)
                    .collect();
                assert_eq!(order, expected);
            }
        });
    }

    #[test]
    fn a_hello_of_another_version_is_refused_with_a_clear_error() {
        run(|| async {
            let (addr, _server) = start_server(Rc::new(Echo::default()));
            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            let mut pipelined = hello_frame(2, 0);
            pipelined.extend_from_slice(&[0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0]);
            stream.write_all(&pipelined).await.expect("hello");
            let refusal = read_raw_frame(&mut stream).await.expect("refusal");
            assert_eq!(
                check_ack(&refusal),
                Err(
                    "refused by the peer: protocol version 2 is not supported; the server \
                     speaks version 1"
                        .to_owned()
                )
            );
            let mut byte = [0u8; 1];
            let read = within(5 * SECOND, stream.read(&mut byte)).await;
            assert!(matches!(read, Some(Ok(0))), "{read:?}");

            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            let mut frame = hello_frame(PROTOCOL_VERSION, 0);
            frame[4..10].copy_from_slice(b"HTTP/1");
            stream.write_all(&frame).await.expect("hello");
            let refusal = read_raw_frame(&mut stream).await.expect("refusal");
            assert_eq!(
                check_ack(&refusal),
                Err("refused by the peer: not a tallykv bus peer (bad magic)".to_owned())
            );
            assert_eq!(served_stats().failed_connects, 2);
        });
    }

    #[test]
    fn a_refused_handshake_fails_the_calls_and_backs_off() {
        run(|| async {
            let listener = listen("127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr").to_string();
            let _server = glommio::spawn_local(async move {
                let mut stream = listener.accept().await.expect("accept");
                read_raw_frame(&mut stream).await.expect("hello");
                let mut refusal = Vec::new();
                encode_ack(&mut refusal, Some("protocol version 1 is not supported"));
                stream.write_all(&refusal).await.expect("refusal");
                glommio::timer::sleep(10 * SECOND).await;
            });
            let links = Links::new(None, 1, 0);
            let first = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            assert_eq!(
                first,
                Err(BusError::Handshake(format!(
                    "{addr}: refused by the peer: protocol version 1 is not supported"
                )))
            );
            let second = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            match second {
                Err(BusError::Unreachable(why)) => assert!(why.contains("next attempt"), "{why}"),
                other => panic!("expected unreachable, got {other:?}"),
            }
        });
    }

    /// Answers `[tag]:payload` at once.
    struct Tagged(u8);

    impl Serve for Tagged {
        fn request(
            &self,
            _kind: u8,
            _group: u16,
            payload: Bytes,
        ) -> LocalBoxFuture<'static, Result<Vec<u8>, String>> {
            let mut reply = vec![self.0, b':'];
            reply.extend_from_slice(&payload);
            Box::pin(std::future::ready(Ok(reply)))
        }
    }

    /// Polls `stop` until it is set.
    async fn stopped(stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_connection_adopted_by_another_core_serves_everything_pipelined_behind_the_hello() {
        let socket = listening_socket("127.0.0.1:0");
        let addr = socket
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("inet")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (adopt, adopted) = std::sync::mpsc::channel::<(Hello, OwnedFd)>();

        let core0 = executor()
            .spawn({
                let stop = stop.clone();
                move || async move {
                    let route: Route = Rc::new(move |hello, socket| {
                        adopt.send((hello, socket)).map_err(|unsent| unsent.0.1)
                    });
                    let serving = serve(listener_from(socket), 0, Rc::new(Tagged(b'0')), route);
                    futures::future::select(pin!(serving), pin!(stopped(&stop))).await;
                }
            })
            .expect("core 0");
        let core1 = executor()
            .spawn({
                let stop = stop.clone();
                move || async move {
                    let handler: Rc<dyn Serve> = Rc::new(Tagged(b'1'));
                    let mut connections = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match adopted.try_recv() {
                            Ok((hello, socket)) => {
                                assert_eq!((hello.node, hello.core, hello.target_core), (2, 0, 1));
                                connections.push(glommio::spawn_local(serve_adopted(
                                    socket,
                                    hello,
                                    handler.clone(),
                                )));
                            }
                            Err(_) => glommio::timer::sleep(Duration::from_millis(2)).await,
                        }
                    }
                }
            })
            .expect("core 1");

        run(|| async {
            let links = Links::new(None, 2, 0);
            links.set_target_core(1);
            // Queued before the connection's task first runs: the hello and all twenty
            // requests leave in one write and reach core 0 together.
            let calls: Vec<_> = (0..20)
                .map(|i| links.call(&addr, 1, 3, format!("req-{i}"), 10 * SECOND))
                .collect();
            for (i, reply) in join_all(calls).await.into_iter().enumerate() {
                assert_eq!(reply, Ok(Bytes::from(format!("1:req-{i}"))));
            }
            let peer = peer_stats(&links, &addr);
            assert_eq!(peer.stats.writes, 1);
            assert_eq!(peer.stats.frames_received, 20);
        });
        stop.store(true, Ordering::Relaxed);
        core0.join().expect("core 0 ran");
        core1.join().expect("core 1 ran");
    }
}
