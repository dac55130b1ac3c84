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
//! challenge: [u32 len]["TKVBUS"][u16 version][u8 2][32-byte server nonce]
//! hello:     [u32 len]["TKVBUS"][u16 version][u64 node][u16 core][u16 target core]
//!            [u32 auth len = 64][32-byte client nonce][32-byte client proof]
//! hello-ack: [u32 len]["TKVBUS"][u16 version][u8 0 accepted][32-byte server proof]
//!        or  [u32 len]["TKVBUS"][u16 version][u8 1 refused][UTF-8 reason]
//! request:   [u32 len][u64 request id][u8 kind][u16 group][payload]
//! response:  [u32 len][u64 request id][u8 status: 0 ok | 1 failed][payload | UTF-8 message]
//! ```
//!
//! **Handshake.** Every connection authenticates both ends on the secret the nodes share
//! (`cluster-secret`, as a [`BusKey`]), challenge–response, so the secret never crosses the
//! network. The accepting side speaks first: a challenge with a fresh random nonce. The
//! dialler answers with its hello, carrying a fresh nonce of its own and its proof,
//! HMAC-SHA-256(secret, `HELLO_LABEL` ‖ server nonce ‖ client nonce ‖ version ‖ node ‖ core ‖
//! target core), and may pipeline requests right behind it. The acceptor checks the proof
//! (in constant time) before it reads a single request, and answers a hello-ack carrying
//! its own proof over the same fields under another label (`ACK_LABEL`), which the dialler
//! checks before it trusts a single response. Each proof covers the other side's fresh
//! nonce, so a recorded handshake proves nothing on another connection (replay), and the
//! labels keep a dialler's proof from passing for an acceptor's (reflection): a stranger
//! can neither be served nor pass for a node to a dialler. What the handshake does not
//! give: after it, frames are neither encrypted nor authenticated, so whoever is on the
//! path between two nodes can read and alter them, or relay a handshake between two real
//! nodes and take the connection over. Mutual TLS (`tls-cluster yes`) is what protects that.
//!
//! **Mutual TLS.** With [`BusTls`] every connection runs the handshake above inside a TLS
//! session in which both ends showed a certificate of the cluster's CA. The socket must
//! reach the dialler's chosen core before the TLS session starts (a session cannot move
//! between threads), so the acceptor first sends `tls-required` in clear and the dialler
//! answers with `route`, also in clear, naming its target core, then starts TLS; the
//! acceptor reads exactly the route frame, hands the socket over, and the target core runs
//! the TLS handshake, then the challenge, and checks that the authenticated hello names the
//! core the route frame did. A node without TLS meeting one with it (either way round) is
//! told so at once instead of timing out:
//!
//! ```text
//! tls-required: [u32 len]["TKVBUS"][u16 version][u8 3]
//! route:        [u32 len]["TKVBUS"][u16 version][u8 4][u16 target core]
//! ```
//!
//! The acceptor refuses a wrong magic, another protocol version, a malformed hello or a
//! failed proof with a refused hello-ack and closes; a failed proof is told only
//! "authentication failed" (the reason is logged, rate-limited, with the peer's address).
//! The challenge is laid out as a hello-ack (status 2), and the magic and version keep
//! their place in every frame of the handshake in every future version, so two versions
//! can always tell each other why they disagree. A frame longer than [`MAX_FRAME_LEN`] (a
//! handshake frame longer than 64 KiB) or shorter than its header closes the connection
//! with a warning.
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
//!   handshake failed — the peer refused the hello, or did not prove it holds the secret —
//!   (nothing ran on a node of the cluster), `ConnectionLost` otherwise (it may have run).
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
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::{Arc, PoisonError, RwLock};
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
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use super::types::NodeId;
use crate::util::log_limit::LogLimit;

/// The largest frame either side accepts, counted after the length prefix. Raft batches are
/// far smaller; the bound only stops a corrupt length from allocating gigabytes.
pub const MAX_FRAME_LEN: usize = 256 << 20;

/// The protocol this build speaks; a peer's hello must carry the same. Version 2 brought
/// the challenge and the proofs (version 1 served whoever connected).
pub const PROTOCOL_VERSION: u16 = 2;

/// First bytes of every frame of the handshake: a stray client (or a port scan) is told
/// apart from a peer speaking another version.
const MAGIC: &[u8; 6] = b"TKVBUS";
/// Handshake frames are small; the bound leaves room for the credentials a later version
/// carries and stops a stray client's first bytes from being taken for a huge length.
const MAX_HELLO_LEN: usize = 64 << 10;
/// Hello body without the auth blob: magic, version, node, core, target core, auth length.
const HELLO_HEAD: usize = MAGIC.len() + 2 + 8 + 2 + 2 + 4;
/// Challenge and hello-ack body without what follows the status: magic, version, status.
const ACK_HEAD: usize = MAGIC.len() + 2 + 1;
const HELLO_ACCEPTED: u8 = 0;
const HELLO_REFUSED: u8 = 1;
/// The status of a challenge: laid out as a hello-ack, so that a version-1 dialler, which
/// takes the first frame it reads for its hello-ack, reports the version it disagrees with.
const CHALLENGE: u8 = 2;
/// The acceptor's first frame under mutual TLS, instead of a challenge (which follows inside
/// the TLS session); no body.
const TLS_REQUIRED: u8 = 3;
/// The dialler's answer to `TLS_REQUIRED`: the core it wants, then its TLS client hello.
const ROUTE: u8 = 4;

/// Fresh random bytes each side brings to a handshake.
const NONCE_LEN: usize = 32;
/// An HMAC-SHA-256 tag.
const PROOF_LEN: usize = 32;
/// A hello's auth blob: the dialler's nonce, then its proof.
const AUTH_LEN: usize = NONCE_LEN + PROOF_LEN;
/// What a dialler's and an acceptor's proofs start with: one never passes for the other, nor
/// for anything else keyed with the secret. Each ends with a NUL, so neither is a prefix of
/// the other.
const HELLO_LABEL: &[u8] = b"tallykv cluster bus v2: hello\0";
const ACK_LABEL: &[u8] = b"tallykv cluster bus v2: hello-ack\0";

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
/// A connection that sends no complete hello within this is closed: it is not a peer. A
/// dialler waits as long for its challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A core logs at most one refused hello per this, with the count of those it did not log:
/// a port scanner, or a node with another secret redialling, cannot flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
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
    /// The handshake failed: the peer refused our hello (another secret, another protocol
    /// version), did not prove it holds the secret, or answered something that is not a
    /// handshake; nothing ran on a node of the cluster. Backed off like an unreachable peer.
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

/// The key both ends of every bus connection prove they hold: `cluster-secret`, as an
/// HMAC-SHA-256 key. Cheap to clone; its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct BusKey(hmac::Key);

impl BusKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The proof, under `label`, of the handshake of `nonces` and `hello`.
    fn prove(&self, label: &[u8], nonces: &Nonces, hello: &Hello) -> [u8; PROOF_LEN] {
        let tag = hmac::sign(&self.0, &signed(label, nonces, hello));
        let mut proof = [0; PROOF_LEN];
        proof.copy_from_slice(tag.as_ref());
        proof
    }

    /// Whether `proof` is that proof; in constant time.
    fn verify(&self, label: &[u8], nonces: &Nonces, hello: &Hello, proof: &[u8]) -> bool {
        hmac::verify(&self.0, &signed(label, nonces, hello), proof).is_ok()
    }
}

impl fmt::Debug for BusKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BusKey(..)")
    }
}

/// Both sides' nonces of one handshake.
/// How a node's bus connections are secured: the shared secret always (the challenge and
/// proofs), and mutual TLS around it when `tls` is set (`tls-cluster yes`).
#[derive(Clone, Debug)]
pub struct BusSecurity {
    pub key: BusKey,
    pub tls: Option<Arc<BusTls>>,
}

impl From<BusKey> for BusSecurity {
    fn from(key: BusKey) -> Self {
        Self { key, tls: None }
    }
}

/// The bus's TLS configurations: the acceptor's (which requires a client certificate) and
/// the dialler's (which shows one). Replaced whole when `CONFIG SET` reloads the
/// certificates; connections open keep the session they have.
pub struct BusTls(RwLock<(Arc<ServerConfig>, Arc<ClientConfig>)>);

impl BusTls {
    pub fn new(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Arc<Self> {
        Arc::new(Self(RwLock::new((server, client))))
    }

    pub fn replace(&self, server: Arc<ServerConfig>, client: Arc<ClientConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = (server, client);
    }

    fn server(&self) -> Arc<ServerConfig> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    fn client(&self) -> Arc<ClientConfig> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }
}

impl fmt::Debug for BusTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BusTls")
    }
}

struct Nonces {
    server: [u8; NONCE_LEN],
    client: [u8; NONCE_LEN],
}

/// What a proof signs: its label, both nonces, and the hello's fields (the acceptor's proof
/// too, so its answer is bound to this very hello). Every part has a fixed length.
fn signed(label: &[u8], nonces: &Nonces, hello: &Hello) -> Vec<u8> {
    let mut data = Vec::with_capacity(label.len() + 2 * NONCE_LEN + 2 + 8 + 2 + 2);
    data.extend_from_slice(label);
    data.extend_from_slice(&nonces.server);
    data.extend_from_slice(&nonces.client);
    data.extend_from_slice(&hello.version.to_be_bytes());
    data.extend_from_slice(&hello.node.to_be_bytes());
    data.extend_from_slice(&hello.core.to_be_bytes());
    data.extend_from_slice(&hello.target_core.to_be_bytes());
    data
}

/// A fresh nonce from the OS's random generator.
fn fresh_nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| io::Error::other("the OS's random generator failed"))?;
    Ok(nonce)
}

/// What the dialling side says after the challenge (its credentials travel beside it).
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
}

impl Hello {
    /// A hello of this build's protocol version.
    pub fn new(node: NodeId, core: u16, target_core: u16) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            node,
            core,
            target_core,
        }
    }

    /// Appends the hello frame with its `auth` blob, length prefix included.
    fn encode(&self, out: &mut Vec<u8>, auth: &[u8]) {
        let len = HELLO_HEAD + auth.len();
        out.extend_from_slice(&frame_len(len).to_be_bytes());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.core.to_be_bytes());
        out.extend_from_slice(&self.target_core.to_be_bytes());
        out.extend_from_slice(&frame_len(auth.len()).to_be_bytes());
        out.extend_from_slice(auth);
    }

    /// Reads a hello body (after its length prefix) and its auth blob; only this build's
    /// version is accepted.
    fn decode(body: &Bytes) -> Result<(Self, Bytes), HandshakeError> {
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
        const TRUNCATED: HandshakeError = HandshakeError::Malformed("truncated");
        let node = cursor.u64().ok_or(TRUNCATED)?;
        let core = cursor.u16().ok_or(TRUNCATED)?;
        let target_core = cursor.u16().ok_or(TRUNCATED)?;
        let auth_len = cursor.u32().ok_or(TRUNCATED)? as usize;
        if cursor.0.len() != auth_len {
            return Err(HandshakeError::Malformed(
                "auth length disagrees with the frame",
            ));
        }
        let hello = Self {
            version,
            node,
            core,
            target_core,
        };
        Ok((hello, body.slice(HELLO_HEAD..)))
    }
}

/// Why a hello was refused; the text is what the dialler is told.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HandshakeError {
    /// The TLS handshake failed (no certificate, one the CA did not sign, not TLS at all):
    /// rustls's reason, logged; the dialler learns of it from TLS's own alert.
    Tls(String),
    BadMagic,
    Version(u16),
    Malformed(&'static str),
    /// The dialler did not prove it holds the secret, for this reason: logged, never told.
    Unauthenticated(&'static str),
}

impl HandshakeError {
    /// What the acceptor logs: the refusal, with the reason the dialler is not told.
    fn logged(&self) -> String {
        match self {
            Self::Unauthenticated(why) => format!("{self}: {why}"),
            Self::Tls(why) => format!("{self}: {why}"),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(_) => write!(f, "TLS handshake failed"),
            Self::BadMagic => write!(f, "not a tallykv bus peer (bad magic)"),
            Self::Version(version) => write!(
                f,
                "protocol version {version} is not supported; the server speaks version \
                 {PROTOCOL_VERSION}"
            ),
            Self::Malformed(why) => write!(f, "malformed hello: {why}"),
            // Nothing that would tell a prober how close it came.
            Self::Unauthenticated(_) => write!(f, "authentication failed"),
        }
    }
}

/// Appends a frame of the acceptor's side of the handshake: a challenge, or a hello-ack
/// (accepted or refused), with `body` after its status.
fn encode_greeting(out: &mut Vec<u8>, status: u8, body: &[u8]) {
    out.extend_from_slice(&frame_len(ACK_HEAD + body.len()).to_be_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.push(status);
    out.extend_from_slice(body);
}

/// A frame of the acceptor's side of the handshake, as the dialler reads it.
#[derive(Debug, PartialEq, Eq)]
enum Greeting {
    Challenge([u8; NONCE_LEN]),
    /// The peer serves the bus over TLS only (`tls-cluster yes`).
    TlsRequired,
    Accepted([u8; PROOF_LEN]),
    Refused(String),
}

/// Reads a challenge or hello-ack body; the error is why the handshake failed.
fn read_greeting(body: &[u8]) -> Result<Greeting, String> {
    let mut cursor = Cursor(body);
    if cursor.take(MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("the peer does not speak the tallykv bus (bad magic in its reply)".into());
    }
    let (Some(version), Some(status)) = (cursor.u16(), cursor.u8()) else {
        return Err("truncated hello-ack".into());
    };
    // Before the version: a peer of another version says why it refused.
    if status == HELLO_REFUSED {
        return Ok(Greeting::Refused(
            String::from_utf8_lossy(cursor.0).into_owned(),
        ));
    }
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "the peer answered with protocol version {version}; this node speaks version \
             {PROTOCOL_VERSION}"
        ));
    }
    let (greeting, what) = match status {
        CHALLENGE => (cursor.array().map(Greeting::Challenge), "challenge"),
        HELLO_ACCEPTED => (cursor.array().map(Greeting::Accepted), "hello-ack"),
        TLS_REQUIRED => (Some(Greeting::TlsRequired), "tls-required"),
        status => return Err(format!("unexpected handshake status {status}")),
    };
    match greeting {
        Some(greeting) if cursor.0.is_empty() => Ok(greeting),
        _ => Err(format!("malformed {what} (wrong length)")),
    }
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

thread_local! {
    /// Refused hellos this thread logged: one per [`REFUSAL_LOG_EVERY`].
    static REFUSALS: RefCell<LogLimit> = const { RefCell::new(LogLimit::new(REFUSAL_LOG_EVERY)) };
}

/// Warns of a refused hello, unless this thread warned of one less than
/// [`REFUSAL_LOG_EVERY`] ago (the next warning counts it).
fn log_refusal(peer: &str, refusal: &HandshakeError) {
    // The audit log (when on) keeps every refusal; its file rotates by size.
    if crate::security::audit::enabled() {
        crate::security::audit::record(&crate::security::audit::Event::BusRejected {
            peer,
            reason: &refusal.logged(),
        });
    }
    let Some(unlogged) = REFUSALS.with(|log| log.borrow_mut().admit(Instant::now())) else {
        return;
    };
    let reason = refusal.logged();
    if unlogged == 0 {
        tracing::warn!(%peer, %reason, "cluster link: refused a connection's hello");
    } else {
        tracing::warn!(
            %peer,
            %reason,
            "cluster link: refused a connection's hello ({unlogged} more refused since the last \
             warning, not logged)"
        );
    }
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

/// What a bus connection runs over: a TCP stream, or a TLS session on one.
trait BusStream: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> BusStream for T {}

/// Writes whatever the outbox holds, one batch per syscall, until the socket fails.
async fn write_out(
    stream: &RefCell<impl BusStream>,
    outbox: &Outbox,
    counters: &Counters,
) -> io::Error {
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
        // A TLS session may keep the end of a batch until flushed (TCP's flush does nothing).
        if let Err(error) = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_flush(cx)).await {
            return error;
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
        stream: &RefCell<impl BusStream>,
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

async fn read_some(stream: &RefCell<impl BusStream>, buf: &mut [u8]) -> io::Result<usize> {
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

/// Why a connection is handed to another core: a hello naming it (checked and acknowledged:
/// the socket is positioned right after it), or, under mutual TLS, a route frame naming it
/// (the socket is positioned at the dialler's TLS client hello; nothing is authenticated yet).
#[derive(Clone, Debug)]
pub enum Handoff {
    Hello(Hello),
    Tls { target_core: u16 },
}

impl Handoff {
    pub fn target_core(&self) -> u16 {
        match self {
            Handoff::Hello(hello) => hello.target_core,
            Handoff::Tls { target_core } => *target_core,
        }
    }
}

/// Hands an accepted connection that names another core to that core, which serves it
/// with [`serve_adopted`]. Giving the socket back (`Err`) serves it on the accepting core.
pub type Route = Rc<dyn Fn(Handoff, OwnedFd) -> Result<(), OwnedFd>>;

/// Serves the bus on `listener` for core `core` until the returned future is dropped, which
/// also closes every connection it serves and drops their requests in flight.
///
/// Each connection is challenged and its hello read first (exactly, so nothing behind it
/// leaves the kernel's buffer) and checked against the key; once acknowledged, a hello for
/// another core goes to `route`, and a bad one is refused and closed. Under mutual TLS the
/// route frame is read first instead, and the connection goes to `route` before its TLS
/// handshake.
pub async fn serve(
    listener: TcpListener,
    core: u16,
    security: impl Into<BusSecurity>,
    handler: Rc<dyn Serve>,
    route: Route,
) {
    let security = security.into();
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
                security.clone(),
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

async fn accept_connection(
    mut stream: TcpStream,
    core: u16,
    security: BusSecurity,
    handler: Rc<dyn Serve>,
    route: Route,
) {
    let peer = peer_name(&stream);
    if let Err(error) = tune_socket(SockRef::from(&socket_of(&stream))) {
        tracing::debug!(%peer, %error, "cluster link: cannot set socket options, closing");
        return;
    }
    let handoff = if security.tls.is_some() {
        let target_core = match within(HELLO_TIMEOUT, read_route(&mut stream)).await {
            None => {
                tracing::debug!(%peer, "cluster link: no route frame within {HELLO_TIMEOUT:?}");
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(%peer, %error, "cluster link: closed before its route frame");
                return;
            }
            // Not a node of a cluster with TLS: the dialler expects TLS next, so there is
            // nothing to tell it in clear.
            Some(Ok(Err(refusal))) => {
                SERVED.with(|counters| bump(&counters.failed_connects, 1));
                log_refusal(&peer, &refusal);
                return;
            }
            Some(Ok(Ok(target_core))) => target_core,
        };
        Handoff::Tls { target_core }
    } else {
        match authenticate(stream, &peer, &security.key).await {
            Some((authenticated, hello)) => {
                stream = authenticated;
                Handoff::Hello(hello)
            }
            None => return,
        }
    };
    if handoff.target_core() != core {
        let socket = match socket_of(&stream).try_clone_to_owned() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%peer, %error, "cluster link: cannot hand a connection over");
                return;
            }
        };
        // The duplicate keeps the socket open; this core lets go of its own descriptor.
        drop(stream);
        match route(handoff.clone(), socket) {
            Ok(()) => return,
            Err(socket) => stream = stream_from(socket),
        }
    }
    serve_handoff(stream, peer, handoff, security, handler).await;
}

/// Serves a connection another core accepted and routed here (see [`Route`]).
pub async fn serve_adopted(
    socket: OwnedFd,
    handoff: Handoff,
    security: BusSecurity,
    handler: Rc<dyn Serve>,
) {
    let stream = stream_from(socket);
    let peer = peer_name(&stream);
    serve_handoff(stream, peer, handoff, security, handler).await;
}

/// Serves a connection on the core it was meant for: at once after a hello, after the TLS
/// handshake and the hello inside it after a route frame.
async fn serve_handoff(
    stream: TcpStream,
    peer: String,
    handoff: Handoff,
    security: BusSecurity,
    handler: Rc<dyn Serve>,
) {
    let target_core = match handoff {
        Handoff::Hello(hello) => return serve_connection(stream, &peer, hello, handler).await,
        Handoff::Tls { target_core } => target_core,
    };
    let Some(tls) = &security.tls else {
        return;
    };
    let accepting = futures_rustls::TlsAcceptor::from(tls.server()).accept(stream);
    let stream = match within(HELLO_TIMEOUT, accepting).await {
        None => {
            tracing::debug!(%peer, "cluster link: no TLS handshake within {HELLO_TIMEOUT:?}");
            return;
        }
        Some(Err(error)) => {
            SERVED.with(|counters| bump(&counters.failed_connects, 1));
            log_refusal(&peer, &HandshakeError::Tls(error.to_string()));
            return;
        }
        Some(Ok(stream)) => stream,
    };
    let Some((stream, hello)) = authenticate(stream, &peer, &security.key).await else {
        return;
    };
    if hello.target_core != target_core {
        let refusal = HandshakeError::Malformed("the hello names another core than the route");
        SERVED.with(|counters| bump(&counters.failed_connects, 1));
        log_refusal(&peer, &refusal);
        refuse(stream, &refusal.to_string()).await;
        return;
    }
    serve_connection(stream, &peer, hello, handler).await;
}

/// Runs the acceptor's side of the handshake with its time limit: the stream and the
/// dialler's hello, or `None` once the connection is refused (and logged) or gone.
async fn authenticate<S: BusStream>(mut stream: S, peer: &str, key: &BusKey) -> Option<(S, Hello)> {
    match within(HELLO_TIMEOUT, handshake(&mut stream, key)).await {
        None => {
            tracing::debug!(%peer, "cluster link: no hello within {HELLO_TIMEOUT:?}, closing");
            None
        }
        Some(Err(error)) => {
            tracing::debug!(%peer, %error, "cluster link: connection closed before its hello");
            None
        }
        Some(Ok(Err(refusal))) => {
            SERVED.with(|counters| bump(&counters.failed_connects, 1));
            log_refusal(peer, &refusal);
            refuse(stream, &refusal.to_string()).await;
            None
        }
        Some(Ok(Ok(hello))) => Some((stream, hello)),
    }
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

/// The acceptor's side of the handshake: challenges the dialler, reads its hello, checks its
/// proof and acknowledges it with a proof of our own. Nothing but the hello is read from the
/// connection: what follows may be served by another core. The inner error is a refusal to
/// send back.
async fn handshake(
    stream: &mut impl BusStream,
    key: &BusKey,
) -> io::Result<Result<Hello, HandshakeError>> {
    let server = fresh_nonce()?;
    let mut frame = Vec::new();
    encode_greeting(&mut frame, CHALLENGE, &server);
    send_handshake(stream, &frame).await?;
    let (hello, auth) = match read_hello(stream).await? {
        Ok(hello) => hello,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let Some((client, proof)) = auth
        .split_first_chunk::<NONCE_LEN>()
        .filter(|_| auth.len() == AUTH_LEN)
    else {
        return Ok(Err(HandshakeError::Unauthenticated(
            "no credentials, or not of the expected length",
        )));
    };
    let nonces = Nonces {
        server,
        client: *client,
    };
    if !key.verify(HELLO_LABEL, &nonces, &hello, proof) {
        return Ok(Err(HandshakeError::Unauthenticated(
            "wrong proof (another cluster-secret, or a replayed hello)",
        )));
    }
    frame.clear();
    encode_greeting(
        &mut frame,
        HELLO_ACCEPTED,
        &key.prove(ACK_LABEL, &nonces, &hello),
    );
    send_handshake(stream, &frame).await?;
    Ok(Ok(hello))
}

/// Under mutual TLS, the acceptor's clear-text step: says TLS is required and reads the
/// dialler's route frame (exactly: its TLS client hello follows, for the core it names).
/// The inner error is a refusal, logged and not sent (the dialler expects TLS next).
async fn read_route(stream: &mut TcpStream) -> io::Result<Result<u16, HandshakeError>> {
    let mut frame = Vec::new();
    encode_greeting(&mut frame, TLS_REQUIRED, &[]);
    send_handshake(stream, &frame).await?;
    let body = match read_frame_exact(stream).await? {
        Ok(body) => body,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut cursor = Cursor(&body);
    if cursor.take(MAGIC.len()) != Some(&MAGIC[..]) {
        return Ok(Err(HandshakeError::BadMagic));
    }
    let (Some(version), Some(status)) = (cursor.u16(), cursor.u8()) else {
        return Ok(Err(HandshakeError::Malformed("truncated route frame")));
    };
    if version != PROTOCOL_VERSION {
        return Ok(Err(HandshakeError::Version(version)));
    }
    match (status, cursor.u16()) {
        (ROUTE, Some(target_core)) if cursor.0.is_empty() => Ok(Ok(target_core)),
        _ => Ok(Err(HandshakeError::Malformed(
            "expected a route frame (a node without tls-cluster?)",
        ))),
    }
}

/// Writes a frame of the acceptor's side of the handshake.
async fn send_handshake(stream: &mut impl BusStream, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await?;
    SERVED.with(|counters| bump(&counters.bytes_sent, frame.len()));
    Ok(())
}

/// Reads exactly one hello frame, not a byte more, and returns it with its auth blob. The
/// inner error is a refusal to send back.
async fn read_hello(
    stream: &mut impl BusStream,
) -> io::Result<Result<(Hello, Bytes), HandshakeError>> {
    Ok(match read_frame_exact(stream).await? {
        Ok(body) => Hello::decode(&body),
        Err(refusal) => Err(refusal),
    })
}

/// Reads exactly one handshake frame's body, not a byte more. The inner error is a refusal.
async fn read_frame_exact(
    stream: &mut impl BusStream,
) -> io::Result<Result<Bytes, HandshakeError>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO_LEN {
        return Ok(Err(HandshakeError::Malformed("longer than 64 KiB")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    SERVED.with(|counters| bump(&counters.bytes_received, 4 + len));
    Ok(Ok(Bytes::from(body)))
}

/// Sends a refusal and closes, draining what the peer pipelined meanwhile (see
/// `REFUSAL_LINGER`).
async fn refuse(mut stream: impl BusStream, reason: &str) {
    let mut frame = Vec::new();
    encode_greeting(&mut frame, HELLO_REFUSED, reason.as_bytes());
    let sent = within(REFUSAL_LINGER, async {
        stream.write_all(&frame).await?;
        stream.close().await
    })
    .await;
    if !matches!(sent, Some(Ok(()))) {
        return;
    }
    let mut sink = vec![0u8; READ_CHUNK];
    let _ = within(REFUSAL_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

type Answer = LocalBoxFuture<'static, (u64, Result<Vec<u8>, String>)>;

async fn serve_connection(
    stream: impl BusStream,
    peer: &str,
    hello: Hello,
    handler: Rc<dyn Serve>,
) {
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
    stream: impl BusStream,
    handler: &dyn Serve,
    counters: &Counters,
) -> io::Result<()> {
    let stream = RefCell::new(stream);
    let outbox = Outbox::default();
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
    stream: &RefCell<impl BusStream>,
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
    security: BusSecurity,
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
    /// TCP connected; waiting for the peer's challenge, or our hello is sent or queued and
    /// the peer's answer not yet read.
    Connected,
    /// The peer acknowledged our hello.
    Ready,
    Closed,
}

/// One connection: frames queued for it and the calls waiting for replies.
struct Conn {
    addr: String,
    peer: Rc<PeerState>,
    /// What the connection's hello says; it goes out ahead of the queued requests once the
    /// peer's challenge is in.
    hello: Hello,
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
    fn new(addr: &str, peer: Rc<PeerState>, hello: Hello) -> Self {
        Self {
            addr: addr.to_owned(),
            peer,
            hello,
            outbox: Outbox::default(),
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
    /// Links for core `core` of node `me`, proving to every peer that they hold `key` (and
    /// requiring the same of it). `local_ip`: the address outgoing connections come from (so
    /// a test proxy or firewall can tell nodes on one loopback apart), or `None` to let the
    /// OS pick. Connections ask the peer for its core of the same index.
    pub fn new(
        local_ip: Option<IpAddr>,
        security: impl Into<BusSecurity>,
        me: NodeId,
        core: u16,
    ) -> Self {
        Self {
            inner: Rc::new(LinksInner {
                local_ip,
                security: security.into(),
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
        let conn = Rc::new(Conn::new(addr, peer.state.clone(), hello));
        let task = glommio::spawn_local(drive(
            conn.clone(),
            self.inner.local_ip,
            self.inner.security.clone(),
        ));
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
    /// Connected, but the handshake was refused, garbled or not proven.
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
async fn drive(conn: Rc<Conn>, local_ip: Option<IpAddr>, security: BusSecurity) {
    let closing = CloseOnDrop(&conn);
    // glommio runs a spawned task at once, up to its first await. Step aside first: the
    // call that opened the connection queues its frame before anything is dialled (a
    // refused loopback connect fails without ever waiting).
    yield_now().await;
    let peer = &*conn.peer;
    let ended = run_client_connection(&conn, peer, local_ip, &security).await;
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

async fn run_client_connection(
    conn: &Conn,
    peer: &PeerState,
    local_ip: Option<IpAddr>,
    security: &BusSecurity,
) -> Ended {
    let dialled = within(CONNECT_TIMEOUT, dial(&conn.addr, local_ip))
        .await
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {CONNECT_TIMEOUT:?}"),
            ))
        });
    let stream = match dialled {
        Ok(stream) => stream,
        Err(error) => return Ended::Unreachable(error.to_string()),
    };
    conn.phase.set(Phase::Connected);
    let Some(tls) = &security.tls else {
        return run_connected(stream, conn, peer, &security.key).await;
    };
    match within(HELLO_TIMEOUT, start_tls(stream, conn, tls)).await {
        Some(Ok(stream)) => run_connected(stream, conn, peer, &security.key).await,
        Some(Err(ended)) => ended,
        None => Ended::Handshake(format!("no TLS session within {HELLO_TIMEOUT:?}")),
    }
}

/// The dialler's side of mutual TLS: reads the peer's `tls-required`, names the core it
/// wants in a route frame and runs the TLS handshake (in which the peer must show a
/// certificate of the cluster's CA, and we show ours).
async fn start_tls(
    mut stream: TcpStream,
    conn: &Conn,
    tls: &BusTls,
) -> Result<futures_rustls::client::TlsStream<TcpStream>, Ended> {
    let counters = &conn.peer.counters;
    let lost = |error: io::Error| Ended::Lost(error.to_string());
    let body = match read_frame_exact(&mut stream).await.map_err(lost)? {
        Ok(body) => body,
        Err(refusal) => return Err(Ended::Handshake(format!("bad greeting: {refusal}"))),
    };
    bump(&counters.bytes_received, 4 + body.len());
    match read_greeting(&body).map_err(Ended::Handshake)? {
        Greeting::TlsRequired => {}
        Greeting::Challenge(_) => {
            return Err(Ended::Handshake(
                "the peer serves the bus without TLS (tls-cluster is yes here and no there)".into(),
            ));
        }
        Greeting::Refused(why) => {
            return Err(Ended::Handshake(format!("refused by the peer: {why}")));
        }
        Greeting::Accepted(_) => {
            return Err(Ended::Handshake(
                "the peer acknowledged a hello before it was sent".into(),
            ));
        }
    }
    let mut frame = Vec::new();
    encode_greeting(&mut frame, ROUTE, &conn.hello.target_core.to_be_bytes());
    stream.write_all(&frame).await.map_err(lost)?;
    bump(&counters.bytes_sent, frame.len());
    // Node names are not checked (see `security::tls::bus_configs`): any valid name does.
    let host = conn
        .addr
        .rsplit_once(':')
        .map_or(&*conn.addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .or_else(|_| ServerName::try_from("tallykv-node"))
        .map_err(|error| Ended::Handshake(error.to_string()))?;
    futures_rustls::TlsConnector::from(tls.client())
        .connect(name, stream)
        .await
        .map_err(|error| Ended::Handshake(format!("TLS handshake failed: {error}")))
}

/// Runs an open connection: the challenge and hello, then requests and replies until it
/// ends.
async fn run_connected(
    stream: impl BusStream,
    conn: &Conn,
    peer: &PeerState,
    key: &BusKey,
) -> Ended {
    let stream = RefCell::new(stream);
    let mut reader = FrameReader::new();
    let answered = within(
        HELLO_TIMEOUT,
        answer_challenge(&stream, &mut reader, conn, key),
    )
    .await;
    let nonces = match answered {
        Some(Ok(nonces)) => nonces,
        Some(Err(ended)) => return ended,
        None => {
            return Ended::Handshake(format!(
                "no challenge from the peer within {HELLO_TIMEOUT:?} (a tallykv speaking protocol \
                 version 1 sends none; this node speaks version {PROTOCOL_VERSION})"
            ));
        }
    };
    // The hello and every frame queued meanwhile leave in the first write.
    let mut reading = pin!(read_replies(&stream, reader, conn, key, &nonces));
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

/// The dialler's first step: reads the peer's challenge and queues our hello, with our
/// nonce and proof, ahead of the requests queued meanwhile (the writer has not run yet).
async fn answer_challenge(
    stream: &RefCell<impl BusStream>,
    reader: &mut FrameReader,
    conn: &Conn,
    key: &BusKey,
) -> Result<Nonces, Ended> {
    let server = match read_handshake(stream, reader, conn, "challenge").await? {
        Greeting::Challenge(nonce) => nonce,
        Greeting::Accepted(_) => {
            return Err(Ended::Handshake(
                "the peer acknowledged a hello before it was sent".into(),
            ));
        }
        Greeting::Refused(why) => {
            return Err(Ended::Handshake(format!("refused by the peer: {why}")));
        }
        Greeting::TlsRequired => {
            return Err(Ended::Handshake(
                "the peer serves the bus over TLS only (tls-cluster is yes there and no here)"
                    .into(),
            ));
        }
    };
    let client = fresh_nonce().map_err(|error| Ended::Handshake(error.to_string()))?;
    let nonces = Nonces { server, client };
    let mut auth = Vec::with_capacity(AUTH_LEN);
    auth.extend_from_slice(&client);
    auth.extend_from_slice(&key.prove(HELLO_LABEL, &nonces, &conn.hello));
    let mut hello = Vec::new();
    conn.hello.encode(&mut hello, &auth);
    conn.outbox.queued.borrow_mut().splice(0..0, hello);
    Ok(nonces)
}

/// Reads the next frame of the peer's side of the handshake (`what` names it for errors).
async fn read_handshake(
    stream: &RefCell<impl BusStream>,
    reader: &mut FrameReader,
    conn: &Conn,
    what: &str,
) -> Result<Greeting, Ended> {
    let counters = &conn.peer.counters;
    let frame = match reader.next(stream, counters, ACK_HEAD, MAX_HELLO_LEN).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Ended::Lost(format!("closed by the peer before its {what}"))),
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            return Err(Ended::Handshake(format!("bad {what}: {error}")));
        }
        Err(error) => return Err(Ended::Lost(error.to_string())),
    };
    read_greeting(&frame).map_err(Ended::Handshake)
}

/// Reads the hello-ack and checks the peer's proof, then hands each response to the call
/// waiting for it.
async fn read_replies(
    stream: &RefCell<impl BusStream>,
    mut reader: FrameReader,
    conn: &Conn,
    key: &BusKey,
    nonces: &Nonces,
) -> Ended {
    let counters = &conn.peer.counters;
    match read_handshake(stream, &mut reader, conn, "hello-ack").await {
        Ok(Greeting::Accepted(proof)) => {
            if !key.verify(ACK_LABEL, nonces, &conn.hello, &proof) {
                return Ended::Handshake(
                    "the peer did not prove it holds cluster-secret (a node with another \
                     secret, or not a node of this cluster)"
                        .into(),
                );
            }
        }
        Ok(Greeting::Refused(why)) => {
            return Ended::Handshake(format!("refused by the peer: {why}"));
        }
        Ok(Greeting::Challenge(_) | Greeting::TlsRequired) => {
            return Ended::Handshake("the peer sent a second challenge".into());
        }
        Err(ended) => return ended,
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

    /// The secret of the tests' cluster.
    fn key() -> BusKey {
        BusKey::new(b"0123456789abcdef0123456789abcdef")
    }

    fn another_key() -> BusKey {
        BusKey::new(b"another cluster's secret: 32 b..")
    }

    /// Starts a bus server on a free loopback port; drop the task to stop it.
    fn start_server(handler: Rc<dyn Serve>) -> (String, Task<()>) {
        let listener = listen("127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        (
            addr,
            glommio::spawn_local(serve(listener, 0, key(), handler, no_route())),
        )
    }

    /// A loopback address nothing listens on.
    fn dead_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").to_string()
    }

    /// A hello of node 5 in protocol `version` with `auth` as its credentials.
    fn hello_frame(version: u16, auth: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        Hello {
            version,
            ..Hello::new(5, 0, 0)
        }
        .encode(&mut frame, auth);
        frame
    }

    /// A request frame of kind 4, group 0, for [`Echo`].
    fn request_frame(id: u64, payload: &[u8]) -> Vec<u8> {
        let mut frame = frame_len(REQUEST_HEAD + payload.len())
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(&id.to_be_bytes());
        frame.push(4);
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// The next frame of an acceptor's side of the handshake, read by hand.
    async fn read_greeting_by_hand(stream: &mut TcpStream) -> Greeting {
        let frame = read_raw_frame(stream).await.expect("a handshake frame");
        read_greeting(&frame).expect("a handshake frame")
    }

    /// Plays a dialler by hand: reads the challenge and answers with a hello of node 5 proven
    /// with `key`, `then` right behind it. Returns the hello frame, its nonces and fields.
    async fn dial_by_hand(
        stream: &mut TcpStream,
        key: &BusKey,
        then: &[u8],
    ) -> (Vec<u8>, Nonces, Hello) {
        let Greeting::Challenge(server) = read_greeting_by_hand(stream).await else {
            panic!("the acceptor did not start with a challenge");
        };
        let nonces = Nonces {
            server,
            client: fresh_nonce().expect("nonce"),
        };
        let hello = Hello::new(5, 0, 0);
        let mut auth = nonces.client.to_vec();
        auth.extend_from_slice(&key.prove(HELLO_LABEL, &nonces, &hello));
        let frame = hello_frame(PROTOCOL_VERSION, &auth);
        stream
            .write_all(&[&frame[..], then].concat())
            .await
            .expect("hello");
        (frame, nonces, hello)
    }

    /// Plays an acceptor by hand: challenges, reads the hello and accepts it with the proof
    /// `prove` makes of the handshake.
    async fn accept_by_hand(
        stream: &mut TcpStream,
        prove: impl FnOnce(&Nonces, &Hello) -> [u8; PROOF_LEN],
    ) {
        let server = fresh_nonce().expect("nonce");
        let mut frame = Vec::new();
        encode_greeting(&mut frame, CHALLENGE, &server);
        stream.write_all(&frame).await.expect("challenge");
        let body = read_raw_frame(stream).await.expect("hello");
        let (hello, auth) = Hello::decode(&Bytes::from(body)).expect("a hello");
        let client = auth[..NONCE_LEN].try_into().expect("the dialler's nonce");
        let nonces = Nonces { server, client };
        frame.clear();
        encode_greeting(&mut frame, HELLO_ACCEPTED, &prove(&nonces, &hello));
        stream.write_all(&frame).await.expect("hello-ack");
    }

    /// A real acceptor's proof of the handshake.
    fn honest(nonces: &Nonces, hello: &Hello) -> [u8; PROOF_LEN] {
        key().prove(ACK_LABEL, nonces, hello)
    }

    /// Whether the peer closes `stream` (EOF, or a reset) within 5 s, ignoring what it sends.
    async fn closed_by_peer(stream: &mut TcpStream) -> bool {
        let mut sink = vec![0u8; 4096];
        let closed = within(5 * SECOND, async {
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        closed.is_some()
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let _server = glommio::spawn_local(serve(
                listener,
                0,
                key(),
                Rc::new(Echo::default()),
                no_route(),
            ));
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
            let (_, nonces, hello) = dial_by_hand(&mut stream, &key(), &[]).await;
            assert_eq!(
                read_greeting_by_hand(&mut stream).await,
                Greeting::Accepted(honest(&nonces, &hello))
            );
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
                accept_by_hand(&mut stream, honest).await;
                let request = read_raw_frame(&mut stream).await.expect("request");
                let mut reply = (MAX_FRAME_LEN as u32 + 1).to_be_bytes().to_vec();
                reply.extend_from_slice(&request[..8]);
                stream.write_all(&reply).await.expect("reply");
                // Stay open: the client must be the one to close.
                glommio::timer::sleep(10 * SECOND).await;
            });
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(Some(local_ip), key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let links = Links::new(None, key(), 1, 0);
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
            let echo = Rc::new(Echo::default());
            let (addr, _server) = start_server(echo.clone());
            // A version-1 dialler sends its hello (no credentials) and a request at once.
            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            let mut pipelined = hello_frame(1, &[]);
            pipelined.extend_from_slice(&request_frame(1, &request(0, b"x")));
            stream.write_all(&pipelined).await.expect("hello");
            // It takes the challenge for its hello-ack, whose version it can read...
            let challenge = read_raw_frame(&mut stream).await.expect("challenge");
            assert_eq!(&challenge[..MAGIC.len()], MAGIC);
            assert_eq!(
                u16::from_be_bytes([challenge[6], challenge[7]]),
                PROTOCOL_VERSION
            );
            assert_eq!(challenge[8], CHALLENGE);
            // ...and then the refusal says why.
            assert_eq!(
                read_greeting_by_hand(&mut stream).await,
                Greeting::Refused(
                    "protocol version 1 is not supported; the server speaks version 2".to_owned()
                )
            );
            let mut byte = [0u8; 1];
            let read = within(5 * SECOND, stream.read(&mut byte)).await;
            assert!(matches!(read, Some(Ok(0))), "{read:?}");

            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            let mut frame = hello_frame(PROTOCOL_VERSION, &[]);
            frame[4..10].copy_from_slice(b"HTTP/1");
            stream.write_all(&frame).await.expect("hello");
            read_greeting_by_hand(&mut stream).await;
            assert_eq!(
                read_greeting_by_hand(&mut stream).await,
                Greeting::Refused("not a tallykv bus peer (bad magic)".to_owned())
            );
            assert_eq!(served_stats().failed_connects, 2);
            assert_eq!(echo.arrived.get(), 0);
        });
    }

    #[test]
    fn a_refused_handshake_fails_the_calls_and_backs_off() {
        run(|| async {
            let listener = listen("127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr").to_string();
            let _server = glommio::spawn_local(async move {
                let mut stream = listener.accept().await.expect("accept");
                let mut challenge = Vec::new();
                encode_greeting(&mut challenge, CHALLENGE, &[1; NONCE_LEN]);
                stream.write_all(&challenge).await.expect("challenge");
                read_raw_frame(&mut stream).await.expect("hello");
                let mut refusal = Vec::new();
                encode_greeting(
                    &mut refusal,
                    HELLO_REFUSED,
                    b"protocol version 2 is not supported",
                );
                stream.write_all(&refusal).await.expect("refusal");
                glommio::timer::sleep(10 * SECOND).await;
            });
            let links = Links::new(None, key(), 1, 0);
            let first = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            assert_eq!(
                first,
                Err(BusError::Handshake(format!(
                    "{addr}: refused by the peer: protocol version 2 is not supported"
                )))
            );
            let second = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
            match second {
                Err(BusError::Unreachable(why)) => assert!(why.contains("next attempt"), "{why}"),
                other => panic!("expected unreachable, got {other:?}"),
            }
        });
    }

    #[test]
    fn a_dialler_with_another_secret_is_refused_and_never_served() {
        run(|| async {
            let echo = Rc::new(Echo::default());
            let (addr, _server) = start_server(echo.clone());
            let stranger = Links::new(None, another_key(), 1, 0);
            let calls: Vec<_> = (0..3)
                .map(|_| stranger.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND))
                .collect();
            for result in join_all(calls).await {
                assert_eq!(
                    result,
                    Err(BusError::Handshake(format!(
                        "{addr}: refused by the peer: authentication failed"
                    )))
                );
            }
            let peer = peer_stats(&stranger, &addr);
            assert_eq!((peer.stats.connects, peer.stats.failed_connects), (0, 1));
            // The requests pipelined behind the hello were drained, never handled.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert_eq!(echo.arrived.get(), 0);
            let served = served_stats();
            assert_eq!((served.connects, served.failed_connects), (0, 1));

            // The same server serves a dialler holding the secret.
            let member = Links::new(None, key(), 1, 0);
            let reply = member
                .call(&addr, 4, 0, request(0, b"ok"), 5 * SECOND)
                .await;
            assert_eq!(reply, Ok(Bytes::from_static(b"ko")));
        });
    }

    /// How a hand-played acceptor proves itself.
    type Prove = fn(&Nonces, &Hello) -> [u8; PROOF_LEN];

    #[test]
    fn a_dialler_detects_an_acceptor_that_does_not_hold_the_secret() {
        /// An acceptor that accepts any hello with the proof `prove` makes, then answers the
        /// first request with "forged".
        fn impostor(prove: Prove) -> (String, Task<()>) {
            let listener = listen("127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr").to_string();
            let task = glommio::spawn_local(async move {
                let mut stream = listener.accept().await.expect("accept");
                accept_by_hand(&mut stream, prove).await;
                let Ok(request) = read_raw_frame(&mut stream).await else {
                    return;
                };
                let mut reply = frame_len(RESPONSE_HEAD + 6).to_be_bytes().to_vec();
                reply.extend_from_slice(&request[..8]);
                reply.push(STATUS_OK);
                reply.extend_from_slice(b"forged");
                let _ = stream.write_all(&reply).await;
                glommio::timer::sleep(10 * SECOND).await;
            });
            (addr, task)
        }
        run(|| async {
            let cases: [(&str, Prove); 3] = [
                ("another secret", |nonces, hello| {
                    another_key().prove(ACK_LABEL, nonces, hello)
                }),
                // What a recorded hello-ack of another connection would carry.
                ("another handshake's proof", |nonces, hello| {
                    let replayed = Nonces {
                        server: nonces.server,
                        client: [0; NONCE_LEN],
                    };
                    key().prove(ACK_LABEL, &replayed, hello)
                }),
                // The dialler's own proof, reflected.
                ("the dialler's proof", |nonces, hello| {
                    key().prove(HELLO_LABEL, nonces, hello)
                }),
            ];
            for (case, prove) in cases {
                let (addr, _impostor) = impostor(prove);
                let links = Links::new(None, key(), 1, 0);
                let result = links.call(&addr, 4, 0, request(0, b"x"), 5 * SECOND).await;
                match result {
                    Err(BusError::Handshake(why)) => assert!(
                        why.contains("did not prove it holds cluster-secret"),
                        "{case}: {why}"
                    ),
                    other => panic!("{case}: expected a failed handshake, got {other:?}"),
                }
                assert!(!peer_stats(&links, &addr).connected, "{case}");
            }
        });
    }

    #[test]
    fn a_replayed_or_unproven_hello_is_refused() {
        run(|| async {
            let echo = Rc::new(Echo::default());
            let (addr, _server) = start_server(echo.clone());
            // A genuine handshake, recorded by whoever watches the wire...
            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            let (recorded, nonces, hello) = dial_by_hand(&mut stream, &key(), &[]).await;
            assert_eq!(
                read_greeting_by_hand(&mut stream).await,
                Greeting::Accepted(honest(&nonces, &hello))
            );
            drop(stream);

            // ...proves nothing on a connection of its own: the challenge is another.
            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            let Greeting::Challenge(server) = read_greeting_by_hand(&mut stream).await else {
                panic!("no challenge");
            };
            assert_ne!(server, nonces.server);
            let replay = [recorded, request_frame(1, &request(0, b"replayed"))].concat();
            stream.write_all(&replay).await.expect("replay");
            assert_eq!(
                read_greeting_by_hand(&mut stream).await,
                Greeting::Refused("authentication failed".to_owned())
            );
            assert!(closed_by_peer(&mut stream).await);

            // Nor is a hello without credentials, or with the wrong number of bytes of them.
            for auth in [&[][..], &[0; AUTH_LEN - 1][..]] {
                let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
                read_greeting_by_hand(&mut stream).await;
                let hello = hello_frame(PROTOCOL_VERSION, auth);
                let unproven = [hello, request_frame(2, &request(0, b"unproven"))].concat();
                stream.write_all(&unproven).await.expect("hello");
                assert_eq!(
                    read_greeting_by_hand(&mut stream).await,
                    Greeting::Refused("authentication failed".to_owned())
                );
                assert!(closed_by_peer(&mut stream).await);
            }
            assert_eq!(echo.arrived.get(), 0, "a request was handled");
            let served = served_stats();
            assert_eq!((served.connects, served.failed_connects), (1, 3));
        });
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_period_with_a_count_of_the_others() {
        let mut log = LogLimit::new(REFUSAL_LOG_EVERY);
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        for s in 1..10 {
            assert_eq!(log.admit(start + s * SECOND), None);
        }
        assert_eq!(log.admit(start + REFUSAL_LOG_EVERY), Some(9));
        assert_eq!(log.admit(start + REFUSAL_LOG_EVERY + SECOND), None);
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
        adopted_connection_serves_everything(key().into(), key().into(), true);
    }

    #[test]
    fn under_mutual_tls_a_connection_is_routed_before_its_tls_handshake() {
        let pki = TestPki::new();
        adopted_connection_serves_everything(pki.node(), pki.node(), false);
    }

    /// Core 1 of a server serves a dialler that asked for it, though core 0 accepted the
    /// connection, in one connection and in order. `one_write`: the hello and every request
    /// queued before the connection opened leave in a single write.
    fn adopted_connection_serves_everything(
        server: BusSecurity,
        client: BusSecurity,
        one_write: bool,
    ) {
        let socket = listening_socket("127.0.0.1:0");
        let addr = socket
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("inet")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (adopt, adopted) = std::sync::mpsc::channel::<(Handoff, OwnedFd)>();
        let adopted_security = server.clone();

        let core0 = executor()
            .spawn({
                let stop = stop.clone();
                move || async move {
                    let route: Route = Rc::new(move |handoff, socket| {
                        adopt.send((handoff, socket)).map_err(|unsent| unsent.0.1)
                    });
                    let serving = serve(
                        listener_from(socket),
                        0,
                        server,
                        Rc::new(Tagged(b'0')),
                        route,
                    );
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
                            Ok((handoff, socket)) => {
                                match &handoff {
                                    Handoff::Hello(hello) => assert_eq!(
                                        (hello.node, hello.core, hello.target_core),
                                        (2, 0, 1)
                                    ),
                                    Handoff::Tls { target_core } => assert_eq!(*target_core, 1),
                                }
                                connections.push(glommio::spawn_local(serve_adopted(
                                    socket,
                                    handoff,
                                    adopted_security.clone(),
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
            let links = Links::new(None, client, 2, 0);
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
            if one_write {
                assert_eq!(peer.stats.writes, 1);
            }
            assert_eq!(peer.stats.frames_received, 20);
        });
        stop.store(true, Ordering::Relaxed);
        core0.join().expect("core 0 ran");
        core1.join().expect("core 1 ran");
    }

    /// A cluster CA and the files of two node certificates signed by it, plus one signed by
    /// another CA, for the bus's mutual TLS.
    struct TestPki {
        dir: tempfile::TempDir,
    }

    impl TestPki {
        fn new() -> TestPki {
            use rcgen::{
                BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
                KeyPair, KeyUsagePurpose,
            };
            let dir = tempfile::tempdir().expect("temp dir");
            let write = |name: &str, text: &str| {
                std::fs::write(dir.path().join(name), text).expect("write PEM");
            };
            let ca = |name: &str| {
                let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA");
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.distinguished_name.push(DnType::CommonName, name);
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
                let key = KeyPair::generate().expect("CA key");
                let cert = params.self_signed(&key).expect("CA cert");
                (cert.pem(), Issuer::new(params, key))
            };
            let node = |issuer: &Issuer<'static, KeyPair>, file: &str| {
                // A name no dialler asks for: node names are not checked, the CA is.
                let mut params =
                    CertificateParams::new(vec!["node.example".to_string()]).expect("leaf");
                params.distinguished_name.push(DnType::CommonName, file);
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                let key = KeyPair::generate().expect("leaf key");
                let cert = params.signed_by(&key, issuer).expect("leaf cert");
                write(&format!("{file}.crt"), &cert.pem());
                write(&format!("{file}.key"), &key.serialize_pem());
            };
            let (ca_pem, issuer) = ca("cluster CA");
            write("ca.crt", &ca_pem);
            node(&issuer, "node");
            let (other_pem, other) = ca("another CA");
            write("other-ca.crt", &other_pem);
            node(&other, "stranger");
            TestPki { dir }
        }

        fn settings(&self, cert: &str, ca: &str) -> crate::security::tls::TlsSettings {
            let path = |name: &str| self.dir.path().join(name).display().to_string();
            crate::security::tls::TlsSettings {
                cert_file: path(&format!("{cert}.crt")),
                key_file: path(&format!("{cert}.key")),
                ca_cert_file: path(ca),
                ..Default::default()
            }
        }

        fn security(&self, cert: &str, ca: &str) -> BusSecurity {
            let (server, client) =
                crate::security::tls::bus_configs(&self.settings(cert, ca)).expect("bus TLS");
            BusSecurity {
                key: key(),
                tls: Some(BusTls::new(server, client)),
            }
        }

        /// A node of the cluster.
        fn node(&self) -> BusSecurity {
            self.security("node", "ca.crt")
        }
    }

    fn start_server_with(security: BusSecurity, handler: Rc<dyn Serve>) -> (String, Task<()>) {
        let listener = listen("127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        (
            addr,
            glommio::spawn_local(serve(listener, 0, security, handler, no_route())),
        )
    }

    #[test]
    fn mutual_tls_serves_nodes_of_the_cluster_ca() {
        let pki = TestPki::new();
        run(|| async move {
            let (addr, _server) = start_server_with(pki.node(), Rc::new(Echo::default()));
            let links = Links::new(None, pki.node(), 1, 0);
            // Large enough for several TLS records each way.
            let body = vec![b'x'; 100_000];
            for _ in 0..3 {
                let reply = links
                    .call(&addr, 1, 0, request(0, &body), 10 * SECOND)
                    .await;
                assert_eq!(reply, Ok(reversed(&body)));
            }
            assert_eq!(peer_stats(&links, &addr).stats.connects, 1);
        });
    }

    #[test]
    fn mutual_tls_refuses_a_certificate_of_another_ca_either_way() {
        let pki = TestPki::new();
        run(|| async move {
            let (addr, _server) = start_server_with(pki.node(), Rc::new(Echo::default()));
            // A dialler whose certificate another CA signed (it trusts ours).
            let stranger = Links::new(None, pki.security("stranger", "ca.crt"), 1, 0);
            let refused = stranger
                .call(&addr, 1, 0, request(0, b"hi"), 10 * SECOND)
                .await;
            assert!(
                matches!(&refused, Err(BusError::Handshake(_))),
                "{refused:?}"
            );
            assert!(served_stats().failed_connects >= 1);
            // A server whose certificate another CA signed: our dialler refuses it.
            let (fake, _fake_server) = start_server_with(
                pki.security("stranger", "other-ca.crt"),
                Rc::new(Echo::default()),
            );
            let member = Links::new(None, pki.node(), 1, 0);
            let refused = member
                .call(&fake, 1, 0, request(0, b"hi"), 10 * SECOND)
                .await;
            let Err(BusError::Handshake(why)) = &refused else {
                panic!("{refused:?}");
            };
            assert!(why.contains("TLS handshake failed"), "{why}");
            // The right certificate but another cluster's secret: TLS passes, the proof not.
            let other_cluster = BusSecurity {
                key: another_key(),
                ..pki.node()
            };
            let outsider = Links::new(None, other_cluster, 1, 0);
            let refused = outsider
                .call(&addr, 1, 0, request(0, b"hi"), 10 * SECOND)
                .await;
            let Err(BusError::Handshake(why)) = &refused else {
                panic!("{refused:?}");
            };
            assert!(why.contains("authentication failed"), "{why}");
        });
    }

    #[test]
    fn a_node_with_tls_and_one_without_say_so_at_once() {
        let pki = TestPki::new();
        run(|| async move {
            let (tls_addr, _tls) = start_server_with(pki.node(), Rc::new(Echo::default()));
            let (plain_addr, _plain) = start_server(Rc::new(Echo::default()));
            let plain = Links::new(None, key(), 1, 0);
            let refused = plain
                .call(&tls_addr, 1, 0, request(0, b"hi"), 10 * SECOND)
                .await;
            let Err(BusError::Handshake(why)) = &refused else {
                panic!("{refused:?}");
            };
            assert!(why.contains("over TLS only"), "{why}");
            let tls = Links::new(None, pki.node(), 1, 0);
            let refused = tls
                .call(&plain_addr, 1, 0, request(0, b"hi"), 10 * SECOND)
                .await;
            let Err(BusError::Handshake(why)) = &refused else {
                panic!("{refused:?}");
            };
            assert!(why.contains("without TLS"), "{why}");
        });
    }

    #[test]
    fn bus_tls_needs_a_ca_and_takes_the_client_certificate_when_given() {
        let pki = TestPki::new();
        let no_ca = crate::security::tls::TlsSettings {
            ca_cert_file: String::new(),
            ..pki.settings("node", "ca.crt")
        };
        let error = crate::security::tls::bus_configs(&no_ca)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tls-cluster yes needs tls-ca-cert-file"),
            "{error}"
        );
        let half = crate::security::tls::TlsSettings {
            client_cert_file: pki.settings("stranger", "ca.crt").cert_file,
            ..pki.settings("node", "ca.crt")
        };
        let error = crate::security::tls::bus_configs(&half)
            .unwrap_err()
            .to_string();
        assert!(error.contains("tls-client-key-file is not"), "{error}");
        // The dialler shows tls-client-cert-file: the stranger's, which the server refuses.
        let stranger_client = crate::security::tls::TlsSettings {
            client_key_file: pki.settings("stranger", "ca.crt").key_file,
            ..half
        };
        let (server, client) = crate::security::tls::bus_configs(&stranger_client).expect("TLS");
        run(|| async move {
            let (addr, _server) = start_server_with(pki.node(), Rc::new(Echo::default()));
            let security = BusSecurity {
                key: key(),
                tls: Some(BusTls::new(server, client)),
            };
            let links = Links::new(None, security, 1, 0);
            let refused = links
                .call(&addr, 1, 0, request(0, b"hi"), 10 * SECOND)
                .await;
            assert!(
                matches!(&refused, Err(BusError::Handshake(_))),
                "{refused:?}"
            );
        });
    }
}
