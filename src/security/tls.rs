//! TLS configuration: the rustls server configuration built once at start-up from the
//! `tls-*` directives, with Valkey's meaning (the sessions themselves run in `server::tls`,
//! in each connection's own task). Cipher names are OpenSSL's (what a Valkey configuration holds),
//! mapped onto the suites rustls implements; a name it lacks stops the server at start-up
//! rather than being skipped, so an operator never runs with a policy other than the one
//! written.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, StoresServerSessions, WebPkiClientVerifier};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

use crate::config::TlsAuthClients;

/// The `tls-*` directives the server configuration is built from (read from
/// [`crate::config::Runtime::tls`]).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cert_file: String,
    pub key_file: String,
    pub key_file_pass: String,
    pub ca_cert_file: String,
    pub ca_cert_dir: String,
    pub auth_clients: TlsAuthClients,
    /// `tls-protocols`: space-separated `TLSv1.2`/`TLSv1.3`; empty = both.
    pub protocols: String,
    /// `tls-ciphers`: TLS 1.2 suites, OpenSSL names separated by `:`; empty = all.
    pub ciphers: String,
    /// `tls-ciphersuites`: TLS 1.3 suites, separated by `:`; empty = all.
    pub ciphersuites: String,
    pub prefer_server_ciphers: bool,
    /// `tls-session-caching`, `tls-session-cache-size` (0: no limit) and
    /// `tls-session-cache-timeout`.
    pub session_caching: bool,
    pub session_cache_size: usize,
    pub session_cache_timeout: Duration,
    /// `tls-client-cert-file`, `tls-client-key-file` and `tls-client-key-file-pass`: what
    /// the node shows as a client on its outgoing bus connections (`tls-cluster yes`);
    /// empty: the server certificate and key.
    pub client_cert_file: String,
    pub client_key_file: String,
    pub client_key_file_pass: String,
}

/// Why the TLS configuration cannot be used; each reads as the start-up error an operator
/// sees.
#[derive(Debug)]
pub enum TlsError {
    /// `tls-port` (or `tls-cluster yes`: `needed_by`) is set without a certificate or key.
    MissingFile {
        directive: &'static str,
        needed_by: &'static str,
    },
    /// A file could not be read, or holds nothing usable.
    File {
        directive: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The key file (`directive`) holds an encrypted key and its pass directive is empty.
    EncryptedKey { directive: &'static str },
    /// `tls-auth-clients yes|optional` with no CA to check certificates against.
    NoCa { auth: TlsAuthClients },
    /// `tls-cluster yes` with no CA to check the other nodes' certificates against.
    BusNoCa,
    /// A `tls-protocols` entry rustls does not offer (TLSv1, TLSv1.1) or does not know.
    Protocol { name: String },
    /// `tls-protocols` is given but names nothing.
    NoProtocol,
    /// A cipher name rustls lacks, or given in the other version's directive.
    Cipher {
        directive: &'static str,
        name: String,
        hint: &'static str,
    },
    /// rustls refused the assembled configuration (e.g. the key does not match the cert).
    Rustls { what: &'static str, reason: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Failed to configure TLS: ")?;
        match self {
            TlsError::MissingFile {
                directive,
                needed_by,
            } => write!(f, "{needed_by} is set but {directive} is not"),
            TlsError::File {
                directive,
                path,
                reason,
            } => write!(f, "{directive} '{}': {reason}", path.display()),
            TlsError::EncryptedKey { directive } => write!(
                f,
                "{directive} holds an encrypted key but {directive}-pass is empty"
            ),
            TlsError::NoCa { auth } => write!(
                f,
                "tls-auth-clients {auth} needs tls-ca-cert-file or tls-ca-cert-dir \
                 (or tls-auth-clients no)"
            ),
            TlsError::BusNoCa => f.write_str(
                "tls-cluster yes needs tls-ca-cert-file or tls-ca-cert-dir: the CA that signs \
                 every node's certificate",
            ),
            TlsError::Protocol { name } => match name.to_ascii_lowercase().as_str() {
                "tlsv1" | "tlsv1.0" | "tlsv1.1" => write!(
                    f,
                    "tls-protocols: {name} is not supported (insecure); use TLSv1.2 and/or TLSv1.3"
                ),
                _ => write!(
                    f,
                    "tls-protocols: unknown protocol '{name}' (use TLSv1.2 and/or TLSv1.3)"
                ),
            },
            TlsError::NoProtocol => f.write_str("tls-protocols names no protocol"),
            TlsError::Cipher {
                directive,
                name,
                hint,
            } => write!(f, "{directive}: unsupported cipher '{name}' ({hint})"),
            TlsError::Rustls { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// One cipher suite rustls implements, by its OpenSSL and IANA names.
struct Suite {
    openssl: &'static str,
    iana: &'static str,
    suite: CipherSuite,
}

/// TLS 1.2 suites: OpenSSL names them differently from IANA.
const TLS12_SUITES: &[Suite] = &[
    Suite {
        openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
        iana: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    },
    Suite {
        openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
        iana: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    },
    Suite {
        openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
        iana: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    },
    Suite {
        openssl: "ECDHE-RSA-AES256-GCM-SHA384",
        iana: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    },
    Suite {
        openssl: "ECDHE-RSA-AES128-GCM-SHA256",
        iana: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    },
    Suite {
        openssl: "ECDHE-RSA-CHACHA20-POLY1305",
        iana: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        suite: CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    },
];

/// TLS 1.3 suites: OpenSSL uses the IANA names.
const TLS13_SUITES: &[Suite] = &[
    Suite {
        openssl: "TLS_AES_256_GCM_SHA384",
        iana: "TLS_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS13_AES_256_GCM_SHA384,
    },
    Suite {
        openssl: "TLS_AES_128_GCM_SHA256",
        iana: "TLS_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS13_AES_128_GCM_SHA256,
    },
    Suite {
        openssl: "TLS_CHACHA20_POLY1305_SHA256",
        iana: "TLS_CHACHA20_POLY1305_SHA256",
        suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    },
];

fn find(table: &[Suite], name: &str) -> Option<CipherSuite> {
    table
        .iter()
        .find(|s| s.openssl.eq_ignore_ascii_case(name) || s.iana.eq_ignore_ascii_case(name))
        .map(|s| s.suite)
}

/// The suites a cipher list names, in its order (OpenSSL separates them with `:`, and also
/// accepts `,` and spaces). None when the list is empty: every suite of that version.
fn suites_named(
    list: &str,
    directive: &'static str,
    own: &[Suite],
    other: &[Suite],
    other_directive: &'static str,
) -> Result<Option<Vec<CipherSuite>>, TlsError> {
    let names: Vec<&str> = list
        .split([':', ',', ' '])
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for name in names {
        let error = |hint| TlsError::Cipher {
            directive,
            name: name.to_string(),
            hint,
        };
        match find(own, name) {
            Some(s) if !out.contains(&s) => out.push(s),
            Some(_) => {}
            None if find(other, name).is_some() => {
                return Err(error(if other_directive == "tls-ciphersuites" {
                    "a TLS 1.3 suite: name it in tls-ciphersuites"
                } else {
                    "a TLS 1.2 suite: name it in tls-ciphers"
                }));
            }
            None => {
                return Err(error(
                    "rustls implements only ECDHE with AES-GCM or CHACHA20-POLY1305 for TLS 1.2, \
                     and TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, \
                     TLS_CHACHA20_POLY1305_SHA256 for TLS 1.3",
                ));
            }
        }
    }
    Ok(Some(out))
}

/// `tls-protocols` as rustls versions (empty: TLS 1.2 and 1.3, as Valkey's default).
fn protocol_versions(list: &str) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let names: Vec<&str> = list.split_whitespace().collect();
    if names.is_empty() {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    }
    let mut versions = Vec::new();
    for name in names {
        let v: &'static SupportedProtocolVersion = match name.to_ascii_lowercase().as_str() {
            "tlsv1.2" => &rustls::version::TLS12,
            "tlsv1.3" => &rustls::version::TLS13,
            _ => {
                return Err(TlsError::Protocol {
                    name: name.to_string(),
                });
            }
        };
        if !versions
            .iter()
            .any(|x: &&SupportedProtocolVersion| x.version == v.version)
        {
            versions.push(v);
        }
    }
    if versions.is_empty() {
        return Err(TlsError::NoProtocol);
    }
    Ok(versions)
}

/// The ring provider restricted (and ordered) to the suites the two cipher lists name.
fn provider(s: &TlsSettings) -> Result<CryptoProvider, TlsError> {
    // rustls 0.23.48 deprecates ring's provider because it has no post-quantum key exchange
    // (X25519MLKEM768); aws-lc-rs has it but needs a much heavier C build. The classical
    // groups (X25519, P-256, P-384) are what Valkey's OpenSSL builds offer today.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    let tls13 = suites_named(
        &s.ciphersuites,
        "tls-ciphersuites",
        TLS13_SUITES,
        TLS12_SUITES,
        "tls-ciphers",
    )?;
    let tls12 = suites_named(
        &s.ciphers,
        "tls-ciphers",
        TLS12_SUITES,
        TLS13_SUITES,
        "tls-ciphersuites",
    )?;
    let all = std::mem::take(&mut provider.cipher_suites);
    let is13 = |cs: CipherSuite| TLS13_SUITES.iter().any(|s| s.suite == cs);
    // Keep the provider's own order for a version whose list is empty, the list's order
    // otherwise (it is the server's preference with tls-prefer-server-ciphers).
    let pick = |wanted: &Option<Vec<CipherSuite>>, tls13: bool| {
        let of_version = all.iter().filter(move |s| is13(s.suite()) == tls13);
        match wanted {
            None => of_version.copied().collect::<Vec<_>>(),
            Some(names) => names
                .iter()
                .filter_map(|n| all.iter().find(|s| s.suite() == *n).copied())
                .collect(),
        }
    };
    provider.cipher_suites = pick(&tls13, true);
    provider.cipher_suites.extend(pick(&tls12, false));
    Ok(provider)
}

fn read(directive: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        directive,
        path: PathBuf::from(path),
        reason: crate::config::strerror(&e),
    })
}

/// Every certificate in a PEM text; an error if there is none.
fn certificates(
    directive: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        directive,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The CA certificates client certificates are checked against.
fn ca_roots(s: &TlsSettings) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut add = |directive: &'static str, path: &Path, pem: &[u8]| {
        for cert in certificates(directive, path, pem)? {
            roots.add(cert).map_err(|e| TlsError::File {
                directive,
                path: path.to_path_buf(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
        }
        Ok::<(), TlsError>(())
    };
    if !s.ca_cert_file.is_empty() {
        let pem = read("tls-ca-cert-file", &s.ca_cert_file)?;
        add("tls-ca-cert-file", Path::new(&s.ca_cert_file), &pem)?;
    }
    if !s.ca_cert_dir.is_empty() {
        let dir_error = |e: std::io::Error| TlsError::File {
            directive: "tls-ca-cert-dir",
            path: PathBuf::from(&s.ca_cert_dir),
            reason: crate::config::strerror(&e),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&s.ca_cert_dir)
            .map_err(dir_error)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        // As OpenSSL's hashed directory, files that are not certificates are passed over.
        for file in files {
            let pem = std::fs::read(&file).map_err(dir_error)?;
            if let Ok(certs) = certificates("tls-ca-cert-dir", &file, &pem) {
                for cert in certs {
                    let _ = roots.add(cert);
                }
            }
        }
    }
    Ok(roots)
}

/// The rustls server configuration the `tls-*` directives describe, or the start-up error
/// that explains why there is none. Called once, before any core starts.
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(s, "tls-port")
}

/// [`server_config`], with `needed_by` named by the error for a missing certificate or key.
fn server_config_for(
    s: &TlsSettings,
    needed_by: &'static str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions = protocol_versions(&s.protocols)?;
    let provider = Arc::new(provider(s)?);
    let (chain, key) = identity(
        ("tls-cert-file", &s.cert_file),
        ("tls-key-file", &s.key_file),
        &s.key_file_pass,
        needed_by,
    )?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Rustls {
            what: "tls-protocols with tls-ciphers/tls-ciphersuites",
            reason: e.to_string(),
        })?;
    let builder = match s.auth_clients {
        TlsAuthClients::No => builder.with_no_client_auth(),
        auth => {
            if s.ca_cert_file.is_empty() && s.ca_cert_dir.is_empty() {
                return Err(TlsError::NoCa { auth });
            }
            let roots = Arc::new(ca_roots(s)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if auth == TlsAuthClients::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::Rustls {
                what: "tls-ca-cert-file/tls-ca-cert-dir",
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls {
            what: "tls-cert-file/tls-key-file",
            reason: e.to_string(),
        })?;
    config.ignore_client_order = s.prefer_server_ciphers;
    if s.session_caching {
        config.session_storage = Arc::new(SessionCache::new(
            s.session_cache_size,
            s.session_cache_timeout,
        ));
    } else {
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// A certificate chain and its private key, read from the files two directives name
/// (`pass` decrypts an encrypted key); `needed_by` is what requires them, for the error
/// when one is not set.
fn identity(
    (cert_directive, cert_file): (&'static str, &str),
    (key_directive, key_file): (&'static str, &str),
    pass: &str,
    needed_by: &'static str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    for (directive, file) in [(cert_directive, cert_file), (key_directive, key_file)] {
        if file.is_empty() {
            return Err(TlsError::MissingFile {
                directive,
                needed_by,
            });
        }
    }
    let cert_pem = read(cert_directive, cert_file)?;
    let chain = certificates(cert_directive, Path::new(cert_file), &cert_pem)?;
    let key_pem = read(key_directive, key_file)?;
    let key = match encrypted_key(key_directive, key_file, &key_pem, pass)? {
        Some(key) => key,
        None => PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
            directive: key_directive,
            path: PathBuf::from(key_file),
            reason: match e {
                rustls::pki_types::pem::Error::NoItemsFound => format!(
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1, or an encrypted PKCS#8 \
                     key with {key_directive}-pass)"
                ),
                e => format!("not a PEM private key ({e})"),
            },
        })?,
    };
    Ok((chain, key))
}

/// The two sides of the cluster bus's mutual TLS (`tls-cluster yes`), as Valkey has it: the
/// server side requires a client certificate signed by the CA whatever `tls-auth-clients`
/// says, and the client side shows `tls-client-cert-file` (or the server certificate) and
/// checks the peer's certificate against the same CA. Node names are not checked against
/// the certificate (Valkey does not either): the cluster's CA is what makes a node, and
/// `cluster-secret`, still proven inside the TLS session, ties it to this cluster.
pub fn bus_configs(s: &TlsSettings) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    const NEEDED_BY: &str = "tls-cluster";
    if s.ca_cert_file.is_empty() && s.ca_cert_dir.is_empty() {
        return Err(TlsError::BusNoCa);
    }
    let server = server_config_for(
        &TlsSettings {
            auth_clients: TlsAuthClients::Yes,
            ..s.clone()
        },
        NEEDED_BY,
    )?;
    let (chain, key) = if s.client_cert_file.is_empty() && s.client_key_file.is_empty() {
        identity(
            ("tls-cert-file", &s.cert_file),
            ("tls-key-file", &s.key_file),
            &s.key_file_pass,
            NEEDED_BY,
        )?
    } else {
        identity(
            ("tls-client-cert-file", &s.client_cert_file),
            ("tls-client-key-file", &s.client_key_file),
            &s.client_key_file_pass,
            "tls-client-cert-file or tls-client-key-file",
        )?
    };
    let versions = protocol_versions(&s.protocols)?;
    let provider = Arc::new(provider(s)?);
    let roots = Arc::new(ca_roots(s)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Rustls {
            what: "tls-ca-cert-file/tls-ca-cert-dir",
            reason: e.to_string(),
        })?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Rustls {
            what: "tls-protocols with tls-ciphers/tls-ciphersuites",
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyNodeName(verifier)))
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls {
            what: "tls-client-cert-file/tls-client-key-file (or tls-cert-file/tls-key-file)",
            reason: e.to_string(),
        })?;
    Ok((server, Arc::new(client)))
}

/// Checks a node's certificate as webpki does (chain to the CA, validity, key usage, the
/// handshake's signature) but accepts it whatever names it holds: see [`bus_configs`].
#[derive(Debug)]
struct AnyNodeName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNodeName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name last, after the chain: a name error means all else held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The key of `tls-key-file` when it is an encrypted PKCS#8 key (`-----BEGIN ENCRYPTED
/// PRIVATE KEY-----`, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it), decrypted with
/// `tls-key-file-pass` (RustCrypto's pkcs8: PBES2 with PBKDF2 or scrypt, AES-CBC); None for
/// an unencrypted key, which the pass does not concern, as with OpenSSL. The older
/// OpenSSL-specific encrypted PEM (`Proc-Type: 4,ENCRYPTED`) is refused, saying how to
/// convert it.
fn encrypted_key(
    directive: &'static str,
    path: &str,
    pem: &[u8],
    pass: &str,
) -> Result<Option<PrivateKeyDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::File {
        directive,
        path: PathBuf::from(path),
        reason,
    };
    let text = String::from_utf8_lossy(pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(failed(
            "an encrypted key in OpenSSL's legacy PEM format; convert it to encrypted PKCS#8 \
             with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.key -out new.key`"
                .to_string(),
        ));
    }
    let Some(start) = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") else {
        return Ok(None);
    };
    if pass.is_empty() {
        return Err(TlsError::EncryptedKey { directive });
    }
    let (_, doc) = pkcs8::der::Document::from_pem(&text[start..])
        .map_err(|e| failed(format!("not an encrypted PKCS#8 PEM key ({e})")))?;
    let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| failed(format!("not an encrypted PKCS#8 key ({e})")))?;
    let plain = encrypted.decrypt(pass.as_bytes()).map_err(|_| {
        failed(format!(
            "cannot be decrypted with {directive}-pass (a wrong passphrase?)"
        ))
    })?;
    Ok(Some(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into())))
}

/// The server's TLS sessions for resumption (`tls-session-cache-size`, `-timeout`), as
/// OpenSSL's session cache keeps them for Valkey: at most `size` (0: no limit), the oldest
/// leaving first, none resumed once older than `timeout`.
#[derive(Debug)]
struct SessionCache {
    size: usize,
    timeout: Duration,
    inner: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_key: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    /// Keys in the order they were stored; may hold keys already taken (TLS 1.3 tickets are
    /// used once), pruned as it grows.
    order: VecDeque<Vec<u8>>,
}

impl SessionCache {
    fn new(size: usize, timeout: Duration) -> SessionCache {
        SessionCache {
            size,
            timeout,
            inner: Mutex::default(),
        }
    }

    fn fresh(&self, stored: Instant) -> bool {
        stored.elapsed() <= self.timeout
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest go first: those past the timeout, then any beyond the size.
        while let Some(oldest) = s.order.front() {
            let stale = s.by_key.get(oldest).is_none_or(|(at, _)| !self.fresh(*at));
            let full = self.size > 0 && s.by_key.len() >= self.size;
            if !stale && !full {
                break;
            }
            let oldest = s.order.pop_front().expect("a front");
            s.by_key.remove(&oldest);
        }
        if s.by_key
            .insert(key.clone(), (Instant::now(), value))
            .is_none()
        {
            s.order.push_back(key);
        }
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, value) = s.by_key.get(key)?;
        self.fresh(*at).then(|| value.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, value) = s.by_key.remove(key)?;
        if s.order.len() > 2 * s.by_key.len() + 64 {
            let Sessions { by_key, order } = &mut *s;
            order.retain(|k| by_key.contains_key(k));
        }
        self.fresh(at).then_some(value)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_map_and_refuse_old_versions() {
        assert_eq!(protocol_versions("").unwrap().len(), 2);
        let only12 = protocol_versions("TLSv1.2").unwrap();
        assert_eq!(only12[0].version, rustls::version::TLS12.version);
        assert_eq!(protocol_versions("tlsv1.3 TLSv1.3").unwrap().len(), 1);
        for old in ["TLSv1", "TLSv1.1"] {
            let e = protocol_versions(&format!("TLSv1.2 {old}")).unwrap_err();
            assert!(
                e.to_string().contains(&format!("{old} is not supported")),
                "{e}"
            );
        }
        let e = protocol_versions("SSLv3").unwrap_err();
        assert!(e.to_string().contains("unknown protocol 'SSLv3'"), "{e}");
    }

    #[test]
    fn cipher_names_map_from_openssl() {
        let s = TlsSettings {
            ciphers: "ECDHE-RSA-AES256-GCM-SHA384:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
            ciphersuites: "TLS_CHACHA20_POLY1305_SHA256".into(),
            ..TlsSettings::default()
        };
        let p = provider(&s).unwrap();
        let suites: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ]
        );
        // Empty lists: every suite ring offers.
        let all = provider(&TlsSettings::default()).unwrap();
        assert_eq!(all.cipher_suites.len(), 9);
    }

    #[test]
    fn unknown_or_misplaced_cipher_is_named() {
        let s = TlsSettings {
            ciphers: "ECDHE-RSA-AES256-GCM-SHA384:AES256-SHA".into(),
            ..TlsSettings::default()
        };
        let e = provider(&s).unwrap_err().to_string();
        assert!(
            e.contains("tls-ciphers: unsupported cipher 'AES256-SHA'"),
            "{e}"
        );
        let s = TlsSettings {
            ciphers: "TLS_AES_128_GCM_SHA256".into(),
            ..TlsSettings::default()
        };
        let e = provider(&s).unwrap_err().to_string();
        assert!(e.contains("name it in tls-ciphersuites"), "{e}");
    }

    #[test]
    fn the_session_cache_keeps_the_newest_and_fresh_ones() {
        let cache = SessionCache::new(2, Duration::from_secs(300));
        assert!(cache.put(b"a".to_vec(), b"1".to_vec()));
        cache.put(b"b".to_vec(), b"2".to_vec());
        cache.put(b"c".to_vec(), b"3".to_vec());
        assert_eq!(cache.get(b"a"), None, "the oldest left for the third");
        assert_eq!(cache.get(b"b").as_deref(), Some(&b"2"[..]));
        assert_eq!(cache.take(b"c").as_deref(), Some(&b"3"[..]));
        assert_eq!(cache.get(b"c"), None, "taken");
        // Tickets taken as fast as they are stored never pile up in the order list.
        for i in 0..1000u32 {
            cache.put(i.to_be_bytes().to_vec(), vec![0]);
            cache.take(&i.to_be_bytes());
        }
        assert!(cache.inner.lock().unwrap().order.len() <= 2 + 64 + 1);

        let expired = SessionCache::new(0, Duration::ZERO);
        expired.put(b"a".to_vec(), b"1".to_vec());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(expired.get(b"a"), None, "past the timeout");
        assert_eq!(expired.take(b"a"), None);
    }
}
