//! TLS sessions on the client port: the server side of one accepted connection's handshake,
//! run inside the connection's own task, so a client that stalls its handshake holds only
//! its own task and is dropped after [`HANDSHAKE_TIMEOUT`]. The configuration comes from
//! `security::tls`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use futures_rustls::server::TlsStream;
use rustls::ServerConfig;

/// The TLS configuration new connections on `tls-port` get. `CONFIG SET` of a `tls-*`
/// directive builds a new one and swaps it in (see [`watch_config`]); connections already
/// open keep the session they have.
pub struct TlsCell(RwLock<Arc<ServerConfig>>);

impl TlsCell {
    pub fn new(config: Arc<ServerConfig>) -> Arc<TlsCell> {
        Arc::new(TlsCell(RwLock::new(config)))
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Reloads the TLS configurations from the configuration after every `CONFIG SET` of a
/// `tls-*` directive, as Valkey does: certificates and keys are read again, so a renewed
/// certificate takes effect without a restart — on the client port (`client`) and on the
/// cluster bus (`bus`, `tls-cluster yes`). Both are built before either is swapped in, so a
/// configuration that does not build (a missing file, a key that does not match) changes
/// neither: it fails the CONFIG SET, which puts the old values back; the reason goes to the
/// log.
pub fn watch_config(
    runtime: &Arc<crate::config::Runtime>,
    client: Option<Arc<TlsCell>>,
    bus: Option<Arc<crate::cluster::link::BusTls>>,
) {
    if client.is_none() && bus.is_none() {
        return;
    }
    let rt = Arc::downgrade(runtime);
    runtime.on_apply(move |names| {
        let Some(blame) = names.iter().find(|n| n.starts_with("tls-")) else {
            return Ok(());
        };
        let Some(rt) = rt.upgrade() else {
            return Ok(());
        };
        let settings = rt.tls();
        let built = client
            .as_ref()
            .map(|_| crate::security::tls::server_config(&settings))
            .transpose()
            .and_then(|client| {
                let bus = bus
                    .as_ref()
                    .map(|_| crate::security::tls::bus_configs(&settings))
                    .transpose()?;
                Ok((client, bus))
            });
        match built {
            Ok((new_client, new_bus)) => {
                if let (Some(cell), Some(config)) = (&client, new_client) {
                    *cell.0.write().unwrap_or_else(PoisonError::into_inner) = config;
                }
                if let (Some(cell), Some((server, client))) = (&bus, new_bus) {
                    cell.replace(server, client);
                }
                tracing::info!("TLS configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!("Failed to update the TLS configuration: {e}");
                Err((
                    *blame,
                    "Unable to update TLS configuration. Check server logs.".to_string(),
                ))
            }
        }
    });
}

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

/// The subject of the certificate the client showed (`CN=payments, O=Example`), if any.
pub fn peer_subject<S>(stream: &TlsStream<S>) -> Option<String> {
    let der = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.subject().to_string())
}
