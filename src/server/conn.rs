//! One client connection: read, parse, dispatch, write, until the client leaves.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;

use crate::command::connection::Client;
use crate::engine::core::Core;
use crate::engine::dispatch::Dispatcher;
use crate::protocol::{Limits, RequestParser};
use crate::state::{ClientInfo, ClientMeta, Shared};

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

const MAX_CLIENTS_ERR: &[u8] = b"-ERR max number of clients reached\r\n";

const DENIED: &[u8] = b"-DENIED Running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers, you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting from the same host the server is running, however MAKE SURE the server is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Set up an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// The socket facts CLIENT LIST and `timeout` need, taken from the TCP stream before TLS
/// wraps it.
struct Socket {
    peer: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    fd: i32,
    /// Whether the connection came in on the TLS port.
    tls: bool,
    /// The subject of the client's certificate, when it showed one over TLS.
    tls_subject: Option<String>,
}

/// Serves one accepted connection to its end: on the TLS port (`tls` given) after the TLS
/// handshake, which runs here, in the connection's own task. A panic inside is caught and
/// logged here, so it ends this connection only.
pub async fn serve(core: Rc<Core>, stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
    let socket = Socket {
        peer: stream.peer_addr().ok(),
        local: stream.local_addr().ok(),
        fd: stream.as_raw_fd(),
        tls: tls.is_some(),
        tls_subject: None,
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return serve_stream(core, stream, socket, false).await;
    };
    // A handshake takes its client's place from the start (Valkey counts a TLS client from
    // its accept), so handshakes in progress are capped by maxclients too. One over it is
    // dropped: there is no TLS session yet to tell it why.
    let shared = core.shared.clone();
    if !admit(&shared) {
        shared.core_stats[core.id].rejected_connections.inc();
        return;
    }
    match super::tls::accept(&tls, stream).await {
        Ok(stream) => {
            let mut socket = socket;
            socket.tls_subject = super::tls::peer_subject(&stream);
            serve_stream(core, stream, socket, true).await
        }
        // A plaintext client, a refused certificate, a stalled handshake: dropping the
        // stream closes the socket.
        Err(e) => {
            shared.connected_clients.fetch_sub(1, Relaxed);
            tracing::debug!(peer = ?socket.peer, "TLS handshake failed: {e}");
        }
    }
}

/// Takes a client's place if there is one under maxclients. The place is taken first, then
/// checked, so cores accepting at the same moment cannot together overshoot maxclients.
fn admit(shared: &crate::state::Shared) -> bool {
    let rt = &shared.config.runtime;
    if shared.connected_clients.fetch_add(1, Relaxed) < rt.maxclients() as usize {
        return true;
    }
    shared.connected_clients.fetch_sub(1, Relaxed);
    false
}

/// Serves a connection (plain, or TLS after its handshake) to its end. `admitted`: its place
/// under maxclients is already taken (see [`admit`]).
async fn serve_stream<S>(core: Rc<Core>, mut stream: S, socket: Socket, admitted: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shared = core.shared.clone();
    let stats = &shared.core_stats[core.id];
    let rt = &shared.config.runtime;
    if !admitted && !admit(&shared) {
        stats.rejected_connections.inc();
        let _ = stream.write_all(MAX_CLIENTS_ERR).await;
        let _ = stream.close().await;
        return;
    }
    stats.connections_received.inc();
    let peer = socket.peer;
    if rt.protected_mode()
        && !shared.acl.default_requires_auth()
        && !peer.is_some_and(|p| p.ip().is_loopback())
        && binds_everywhere(&shared.config.bind)
    {
        shared.connected_clients.fetch_sub(1, Relaxed);
        let _ = stream.write_all(DENIED).await;
        let _ = stream.close().await;
        return;
    }
    set_keepalive(socket.fd, rt.tcp_keepalive_secs());
    let now = crate::util::now_ms();
    let info = Arc::new(ClientInfo {
        id: shared.next_client_id.fetch_add(1, Relaxed),
        addr: peer.map(|p| p.to_string()).unwrap_or_default(),
        laddr: socket.local.map(|a| a.to_string()).unwrap_or_default(),
        tls: socket.tls,
        tls_subject: socket.tls_subject,
        fd: socket.fd,
        created_ms: now,
        last_interaction_ms: AtomicU64::new(now),
        last_cmd: AtomicUsize::new(0),
        resp: AtomicUsize::new(2),
        query_buf: AtomicUsize::new(0),
        net_in: AtomicU64::new(0),
        net_out: AtomicU64::new(0),
        commands: AtomicU64::new(0),
        db: Default::default(),
        meta: Mutex::new(ClientMeta::default()),
    });
    shared
        .clients
        .lock()
        .expect("client registry lock")
        .insert(info.id, info.clone());
    let mut client = Client {
        info: info.clone(),
        resp3: false,
        closing: false,
        authenticated: false,
        acl: shared.acl.default_session(),
        readonly: false,
        multi: None,
        watching: None,
        db: 0,
    };
    let result = std::panic::AssertUnwindSafe(run(&core, &mut stream, &mut client))
        .catch_unwind()
        .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(client = info.id, "connection closed: {e}"),
        Err(_) => tracing::error!(
            client = info.id,
            "connection task panicked; connection closed"
        ),
    }
    crate::engine::tx_cleanup(&core, &mut client);
    shared.connected_clients.fetch_sub(1, Relaxed);
    shared
        .clients
        .lock()
        .expect("client registry lock")
        .remove(&info.id);
    let _ = stream.close().await;
}

/// Valkey's `timeout`: shuts down the sockets of clients idle for longer than it (checked
/// against the current setting, so lowering it applies to connections already waiting). The
/// connection's own task then sees the end of input and cleans up. Called periodically.
pub fn close_idle_clients(shared: &Shared) {
    let secs = shared.config.runtime.timeout_secs();
    if secs == 0 {
        return;
    }
    let now = crate::util::now_ms();
    let clients = shared.clients.lock().expect("client registry lock");
    for c in clients.values() {
        if now.saturating_sub(c.last_interaction_ms.load(Relaxed)) > secs as u64 * 1000 {
            // SAFETY: a registered client's socket is open: its task removes it from this
            // registry (under the lock we hold) before closing the socket. shutdown() does not
            // release the descriptor, it only ends the connection.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        }
    }
}

/// True when `bind` is the default "listen everywhere", the case protected mode guards.
fn binds_everywhere(bind: &[String]) -> bool {
    bind.iter()
        .any(|b| matches!(b.trim_start_matches('-'), "*" | "0.0.0.0" | "::*" | "::"))
}

fn set_keepalive(fd: i32, secs: u32) {
    if secs == 0 {
        return;
    }
    let on: libc::c_int = 1;
    let idle = secs as libc::c_int;
    let intvl = (secs / 3).max(1) as libc::c_int;
    let cnt: libc::c_int = 3;
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is a live socket owned by the caller; each option value is a c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            &on as *const _ as *const _,
            size,
        );
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            &idle as *const _ as *const _,
            size,
        );
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            &intvl as *const _ as *const _,
            size,
        );
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            &cnt as *const _ as *const _,
            size,
        );
    }
}

async fn run<S>(core: &Rc<Core>, stream: &mut S, client: &mut Client) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shared = core.shared.clone();
    let rt = &shared.config.runtime;
    let stats = &shared.core_stats[core.id];
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut parser = RequestParser::new();
    let mut dispatcher = Dispatcher::new(core.cores());
    loop {
        // No read timeout: `close_idle_clients` shuts idle sockets down, which ends this read.
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return Err(e),
        };
        stats.net_input_bytes.add(n as u64);
        client.info.net_in.fetch_add(n as u64, Relaxed);
        if rbuf.capacity() - rbuf.len() < n {
            // Reserve for a big pending value in steps: a declared length alone must not
            // make us allocate hundreds of megabytes before the bytes arrive.
            let wanted = parser
                .wanted()
                .saturating_sub(rbuf.len())
                .min(16 * 1024 * 1024);
            rbuf.reserve(n.max(wanted));
        }
        rbuf.extend_from_slice(&chunk[..n]);
        client
            .info
            .last_interaction_ms
            .store(crate::util::now_ms(), Relaxed);

        // A client that must still authenticate gets Valkey's tighter limits, and its
        // commands are parsed one at a time (as Valkey parses every command), so an AUTH
        // lifts them for the requests pipelined behind it.
        let mut more = true;
        while more {
            let unauthenticated = client.auth_required(&shared);
            let limits = Limits {
                max_bulk_len: rt.proto_max_bulk_len(),
                unauthenticated,
                ..Limits::default()
            };
            let mut commands = Vec::new();
            let mut protocol_error = None;
            more = false;
            loop {
                match parser.parse(&mut rbuf, &limits) {
                    Ok(Some(args)) => {
                        commands.push(args);
                        if unauthenticated {
                            more = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        protocol_error = Some(e);
                        break;
                    }
                }
            }
            // What this client's input holds: unparsed bytes plus the request in progress,
            // argument vector included (see `RequestParser::pending_bytes`). Checked after every
            // read, which adds at most READ_CHUNK bytes, so the memory a client can make us hold
            // stays within a small multiple of the limit.
            let buffered = rbuf.len() + parser.pending_bytes();
            client.info.query_buf.store(buffered, Relaxed);
            if buffered > rt.client_query_buffer_limit() {
                let head = &rbuf[..rbuf.len().min(64)];
                tracing::warn!(
                    "Closing client that reached max query buffer length: id={} addr={} \
                 qbuf={buffered} (qbuf initial bytes: {:?})",
                    client.info.id,
                    client.info.addr,
                    String::from_utf8_lossy(head),
                );
                stats.client_qbuf_limit_disconnections.inc();
                return Ok(());
            }
            if !commands.is_empty() {
                dispatcher.run(core, client, commands, &mut wbuf).await;
            }
            if let Some(e) = &protocol_error {
                let start = wbuf.len();
                wbuf.extend_from_slice(b"-ERR ");
                wbuf.extend_from_slice(e.message_bytes());
                wbuf.extend_from_slice(b"\r\n");
                stats.count_error(&wbuf[start..]);
                tracing::debug!(client = client.info.id, "protocol error: {}", e.message());
            }
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
                // TLS holds the last record until flushed; a TCP stream's flush does nothing.
                stream.flush().await?;
                stats.net_output_bytes.add(wbuf.len() as u64);
                client.info.net_out.fetch_add(wbuf.len() as u64, Relaxed);
                wbuf.clear();
                if wbuf.capacity() > 1024 * 1024 {
                    wbuf.shrink_to(16 * 1024);
                }
            }
            if protocol_error.is_some() || client.closing {
                return Ok(());
            }
        }
    }
}
