//! TLS sessions on the client port: the server side of one accepted connection's handshake,
//! run inside the connection's own task, so a client that stalls its handshake holds only
//! its own task and is dropped after [`HANDSHAKE_TIMEOUT`]. The configuration comes from
//! `security::tls`.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use futures_rustls::server::TlsStream;
use rustls::ServerConfig;

/// How long a client may take to complete its TLS handshake before it is disconnected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server side of the handshake on an accepted connection, in the caller's task:
/// the TLS stream, or the error (a plaintext client, a refused certificate, a client that
/// did not finish within [`HANDSHAKE_TIMEOUT`]).
pub async fn accept<S>(config: &Arc<ServerConfig>, stream: S) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = futures_rustls::TlsAcceptor::from(config.clone()).accept(stream);
    let timeout = glommio::timer::sleep(HANDSHAKE_TIMEOUT);
    futures::pin_mut!(timeout);
    match futures::future::select(handshake, timeout).await {
        futures::future::Either::Left((result, _)) => result,
        futures::future::Either::Right(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}
