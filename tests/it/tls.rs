//! TLS on the client port (`tls-port`): redis-rs over `rediss://` and redis-cli `--tls`
//! against the real server, with a CA, a server and client certificates made here (rcgen).
//! Client authentication (`tls-auth-clients yes|optional|no`), a plaintext or silent client
//! on the TLS port, a TLS-only server (`port 0`), and start-up errors for settings rustls
//! cannot honour.

use crate::common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{DEADLINE, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redis::{ClientTlsConfig, TlsCertificates};

/// PEM text of a certificate and its key.
pub(crate) struct Pem {
    cert: String,
    key: String,
}

/// A test PKI in a temporary directory: a CA, a server certificate for 127.0.0.1 and
/// localhost, a client certificate, and a client certificate from a CA the server does not
/// trust. (`tls_cluster` uses it too.)
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    server: Pem,
    pub(crate) client: Pem,
    stranger: Pem,
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA cert");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "tallykv test");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let (ca, issuer) = new_ca("tallykv test CA");
        let server = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(&issuer, &["client"], ExtendedKeyUsagePurpose::ClientAuth);
        let (_, other) = new_ca("another CA");
        let stranger = leaf(&other, &["stranger"], ExtendedKeyUsagePurpose::ClientAuth);
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca,
            server,
            client,
            stranger,
        };
        for (name, text) in [
            ("ca.crt", &pki.ca),
            ("server.crt", &pki.server.cert),
            ("server.key", &pki.server.key),
            ("client.crt", &pki.client.cert),
            ("client.key", &pki.client.key),
        ] {
            std::fs::write(pki.path(name), text).expect("write PEM");
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// The directives of a server with this PKI's certificate, key and CA.
    pub(crate) fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.arg("server.crt"),
            "--tls-key-file".into(),
            self.arg("server.key"),
            "--tls-ca-cert-file".into(),
            self.arg("ca.crt"),
        ]
    }

    /// A redis-rs client of the TLS port, trusting this CA, showing `cert` if given.
    pub(crate) fn client(&self, port: u16, cert: Option<&Pem>) -> redis::Client {
        redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), self.certs(cert))
            .expect("TLS client")
    }

    /// What a redis-rs client trusts (this CA) and shows (`cert`, if given).
    pub(crate) fn certs(&self, cert: Option<&Pem>) -> TlsCertificates {
        TlsCertificates {
            client_tls: cert.map(|c| ClientTlsConfig {
                client_cert: c.cert.as_bytes().to_vec(),
                client_key: c.key.as_bytes().to_vec(),
            }),
            root_cert: Some(self.ca.as_bytes().to_vec()),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A connection and a PING over it, as one result: with TLS 1.3 a client learns that the
/// server refused its certificate only when it reads.
fn ping(client: &redis::Client) -> redis::RedisResult<String> {
    let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
    c.set_read_timeout(Some(DEADLINE))?;
    redis::cmd("PING").query(&mut c)
}

/// A running server with a TLS port (and a plain one unless `--port 0`).
struct TlsServer {
    child: Child,
    /// The plain port; 0 for a TLS-only server.
    port: u16,
    tls_port: u16,
    _data: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary with the harness's usual directives plus `args`.
fn command(data: &Path, port: u16, tls_port: u16, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tallykv-server"));
    cmd.args(["--port", &port.to_string()])
        .args(["--tls-port", &tls_port.to_string()])
        .args([
            "--bind",
            "127.0.0.1",
            "--threads",
            "2",
            "--loglevel",
            "warning",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(data)
        .args(args);
    cmd
}

impl TlsServer {
    /// Starts a server with `args` (after the PKI's certificate directives) and waits until
    /// a TLS client with the client certificate gets PONG. `plain`: also listen on a plain
    /// port (else `port 0`).
    fn start(pki: &Pki, plain: bool, args: &[&str]) -> TlsServer {
        let mut all = pki.server_args();
        all.extend(args.iter().map(|a| a.to_string()));
        for _ in 0..5 {
            let data = tempfile::tempdir().expect("data dir");
            let port = if plain { free_port() } else { 0 };
            let tls_port = free_port();
            let child = command(data.path(), port, tls_port, &all)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn tallykv-server");
            let mut s = TlsServer {
                child,
                port,
                tls_port,
                _data: data,
            };
            let client = pki.client(tls_port, Some(&pki.client));
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = s.child.try_wait() {
                    break; // exited: most likely a port was taken meanwhile
                }
                if ping(&client).is_ok() {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("tallykv-server with TLS did not start after 5 attempts");
    }

    fn plain(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("plain connection");
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c
    }
}

/// Runs the server with `args` and returns its exit status and standard error, expecting it
/// to exit by itself.
fn start_fails(pki: &Pki, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut all = pki.server_args();
    all.extend(args.iter().map(|a| a.to_string()));
    let data = tempfile::tempdir().expect("data dir");
    let mut child = command(data.path(), free_port(), free_port(), &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tallykv-server");
    let exited = wait_until(DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("server output");
    assert!(exited, "the server started despite {args:?}");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn set_and_get_over_tls_with_redis_rs_and_the_plain_port_alongside() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &[]);
    let client = pki.client(s.tls_port, Some(&pki.client));
    let mut c = client.get_connection().expect("TLS connection");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("over tls")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "over tls");
    // A value bigger than one TLS record (16 KiB) and a pipeline.
    let big = "x".repeat(300_000);
    let (n, back): (i64, String) = redis::pipe()
        .cmd("DEL")
        .arg("big")
        .cmd("SET")
        .arg("big")
        .arg(&big)
        .ignore()
        .cmd("GET")
        .arg("big")
        .query(&mut c)
        .unwrap();
    assert_eq!((n, back.len()), (0, big.len()));
    // The plain port serves the same data.
    let v: String = redis::cmd("GET").arg("k").query(&mut s.plain()).unwrap();
    assert_eq!(v, "over tls");
    // CLIENT LIST shows the TLS client's addresses: its local address is the TLS port.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(
        list.contains(&format!("laddr=127.0.0.1:{}", s.tls_port)),
        "{list}"
    );
    assert!(list.lines().any(|l| l.contains(" fd=")), "{list}");
}

#[test]
fn auth_clients_yes_refuses_a_client_without_a_trusted_certificate() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &[]);
    assert!(ping(&pki.client(s.tls_port, None)).is_err());
    assert!(ping(&pki.client(s.tls_port, Some(&pki.stranger))).is_err());
    // The server goes on serving.
    assert_eq!(
        ping(&pki.client(s.tls_port, Some(&pki.client))).unwrap(),
        "PONG"
    );
}

#[test]
fn auth_clients_optional_serves_a_client_without_a_certificate() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &["--tls-auth-clients", "optional"]);
    assert_eq!(ping(&pki.client(s.tls_port, None)).unwrap(), "PONG");
    // A certificate from an untrusted CA is still refused.
    assert!(ping(&pki.client(s.tls_port, Some(&pki.stranger))).is_err());
}

#[test]
fn auth_clients_no_needs_no_ca() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    let args: Vec<String> = [
        "--tls-cert-file",
        &pki.arg("server.crt"),
        "--tls-key-file",
        &pki.arg("server.key"),
        "--tls-auth-clients",
        "no",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let child = command(data.path(), 0, tls_port, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _s = TlsServer {
        child,
        port: 0,
        tls_port,
        _data: data,
    };
    let client = pki.client(tls_port, None);
    assert!(
        wait_until(DEADLINE, || ping(&client).is_ok()),
        "no PONG from a TLS server without a CA"
    );
}

#[test]
fn a_plaintext_or_silent_client_on_the_tls_port_does_not_stop_the_server() {
    use std::io::{Read, Write};
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &[]);
    // A client that connects and says nothing holds only its own handshake.
    let silent = std::net::TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    // A plaintext client gets its connection closed, never a reply.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    raw.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the plaintext connection was left open")
            }
            Err(_) => break, // reset: closed as well
        }
    }
    assert!(
        !String::from_utf8_lossy(&got).contains("PONG"),
        "a plaintext client was served on the TLS port: {got:?}"
    );
    let client = pki.client(s.tls_port, Some(&pki.client));
    assert_eq!(ping(&client).unwrap(), "PONG");
    let pong: String = redis::cmd("PING").query(&mut s.plain()).unwrap();
    assert_eq!(pong, "PONG");
    drop(silent);
}

#[test]
fn port_0_serves_tls_only() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, false, &[]);
    let mut c = pki
        .client(s.tls_port, Some(&pki.client))
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
    let v: i64 = redis::cmd("INCR").arg("a").query(&mut c).unwrap();
    assert_eq!(v, 2);
    let port: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query(&mut c)
        .unwrap();
    assert_eq!(port, ["port", "0"]);
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(
        info.contains(&format!(
            "listener0:name=tls,bind=127.0.0.1,port={}",
            s.tls_port
        )),
        "{info}"
    );
    assert!(!info.contains("name=tcp"), "{info}");
}

#[test]
fn redis_cli_with_tls_sets_and_gets() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &[]);
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", &pki.arg("ca.crt")])
            .args(["--cert", &pki.arg("client.crt")])
            .args(["--key", &pki.arg("client.key")])
            .args(["-h", "127.0.0.1", "-p", &s.tls_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (CI installs redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "cli", "tls"]), "OK");
    assert_eq!(cli(&["GET", "cli"]), "tls");
}

#[test]
fn old_protocols_and_unknown_ciphers_stop_the_server_at_start() {
    let pki = Pki::new();
    let (status, err) = start_fails(&pki, &["--tls-protocols", "TLSv1.1 TLSv1.2"]);
    assert!(!status.success());
    assert!(err.contains("TLSv1.1 is not supported"), "{err}");
    let (status, err) = start_fails(
        &pki,
        &["--tls-ciphers", "ECDHE-RSA-AES256-GCM-SHA384:RC4-MD5"],
    );
    assert!(!status.success());
    assert!(err.contains("unsupported cipher 'RC4-MD5'"), "{err}");
    let (status, err) = start_fails(&pki, &["--tls-ciphersuites", "TLS_AES_128_CCM_SHA256"]);
    assert!(!status.success());
    assert!(
        err.contains("unsupported cipher 'TLS_AES_128_CCM_SHA256'"),
        "{err}"
    );
}

#[test]
fn named_ciphers_and_protocols_are_served() {
    let pki = Pki::new();
    let s = TlsServer::start(
        &pki,
        true,
        &[
            "--tls-protocols",
            "TLSv1.2",
            "--tls-ciphers",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305",
            "--tls-prefer-server-ciphers",
            "yes",
        ],
    );
    assert_eq!(
        ping(&pki.client(s.tls_port, Some(&pki.client))).unwrap(),
        "PONG"
    );
}

/// redis-py with `ssl=True` and a client certificate: commands, a MULTI/EXEC pipeline and a
/// Lua script over TLS.
#[test]
fn redis_py_with_ssl() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, false, &[]);
    let script = format!(
        r#"
import redis
r = redis.Redis(host="127.0.0.1", port={port}, ssl=True, ssl_ca_certs="{ca}",
                ssl_certfile="{cert}", ssl_keyfile="{key}", socket_timeout=10)
assert r.ping()
r.set("py", "tls")
assert r.get("py") == b"tls"
p = r.pipeline()
p.incr("n").incr("n").get("n")
assert p.execute() == [1, 2, b"2"], "transaction over TLS"
assert r.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "n", 40) == 42
print("ok")
"#,
        port = s.tls_port,
        ca = pki.arg("ca.crt"),
        cert = pki.arg("client.crt"),
        key = pki.arg("client.key"),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (CI installs it and redis-py)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "redis-py over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CONFIG SET of the certificate directives reloads them for new connections, as Valkey
/// does: a renewed certificate (here: another CA's) takes effect without a restart and the
/// connections already open keep working; a setting that does not load fails the CONFIG
/// SET with Valkey's reply and changes nothing.
#[test]
fn config_set_reloads_certificates_without_dropping_connections() {
    let old = Pki::new();
    let s = TlsServer::start(&old, true, &[]);
    let mut live = old
        .client(s.tls_port, Some(&old.client))
        .get_connection()
        .expect("TLS connection");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut live)
        .unwrap();

    let new = Pki::new();
    let mut admin = s.plain();
    let reply: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tls-cert-file")
        .arg(new.arg("server.crt"))
        .arg("tls-key-file")
        .arg(new.arg("server.key"))
        .arg("tls-ca-cert-file")
        .arg(new.arg("ca.crt"))
        .query(&mut admin)
        .expect("CONFIG SET of the TLS files");
    assert_eq!(reply, "OK");
    // The open connection keeps its session.
    let v: String = redis::cmd("GET").arg("k").query(&mut live).unwrap();
    assert_eq!(v, "v");
    // New connections get the new certificate and trust the new CA only.
    assert!(ping(&old.client(s.tls_port, Some(&old.client))).is_err());
    assert!(ping(&new.client(s.tls_port, Some(&old.client))).is_err());
    assert_eq!(
        ping(&new.client(s.tls_port, Some(&new.client))).unwrap(),
        "PONG"
    );

    // A file that does not load: refused, and the values stay those that work.
    let missing = new.path("nowhere.crt");
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tls-cert-file")
        .arg(missing.to_str().unwrap())
        .query::<String>(&mut admin)
        .expect_err("a missing certificate file");
    assert_eq!(
        crate::common::error_text(&err),
        "ERR CONFIG SET failed (possibly related to argument 'tls-cert-file') - Unable to \
         update TLS configuration. Check server logs."
    );
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("tls-cert-file")
        .query(&mut admin)
        .unwrap();
    assert_eq!(got, ["tls-cert-file".to_string(), new.arg("server.crt")]);
    assert_eq!(
        ping(&new.client(s.tls_port, Some(&new.client))).unwrap(),
        "PONG"
    );
    let v: String = redis::cmd("GET").arg("k").query(&mut live).unwrap();
    assert_eq!(v, "v");
}

/// A TLS handshake holds its client's place under maxclients from the accept, as in Valkey:
/// stalled handshakes cannot pile up past the limit, and a client over it is dropped.
#[test]
fn handshakes_in_progress_count_against_maxclients() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &[]);
    let mut admin = s.plain();
    let info = |admin: &mut redis::Connection, field: &str| -> String {
        let text: String = redis::cmd("INFO").query(admin).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
            .unwrap_or_default()
    };
    assert!(wait_until(DEADLINE, || info(
        &mut admin,
        "connected_clients"
    ) == "1"));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("2")
        .query(&mut admin)
        .unwrap();
    // A client that connects to the TLS port and says nothing holds the second place.
    let stalled = std::net::TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    assert!(wait_until(DEADLINE, || info(
        &mut admin,
        "connected_clients"
    ) == "2"));
    assert!(ping(&pki.client(s.tls_port, Some(&pki.client))).is_err());
    assert_eq!(info(&mut admin, "rejected_connections"), "1");
    // Its place comes back when it leaves.
    drop(stalled);
    assert!(wait_until(DEADLINE, || info(
        &mut admin,
        "connected_clients"
    ) == "1"));
    assert_eq!(
        ping(&pki.client(s.tls_port, Some(&pki.client))).unwrap(),
        "PONG"
    );
}

/// Two connections of `openssl s_client` over TLS 1.2: whether the second, offering the
/// session of the first, was resumed.
fn resumed(pki: &Pki, port: u16) -> bool {
    let sess = pki.path("session.pem");
    let _ = std::fs::remove_file(&sess);
    let connect = |session: (&str, &Path)| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-tls1_2",
            ])
            .args(["-CAfile", &pki.arg("ca.crt")])
            .args([
                "-cert",
                &pki.arg("client.crt"),
                "-key",
                &pki.arg("client.key"),
            ])
            .arg(session.0)
            .arg(session.1)
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client (the openssl package)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = connect(("-sess_out", &sess));
    assert!(first.contains("New, TLSv1.2"), "{first}");
    connect(("-sess_in", &sess)).contains("Reused, TLSv1.2")
}

/// TLS session resumption (`tls-session-caching`, Valkey's default yes): a client offering
/// the session it was given skips the full handshake; with caching off it cannot.
#[test]
fn sessions_are_resumed_unless_caching_is_off() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, true, &[]);
    assert!(
        resumed(&pki, s.tls_port),
        "a cached session was not resumed"
    );
    let mut admin = s.plain();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tls-session-caching")
        .arg("no")
        .query(&mut admin)
        .unwrap();
    assert!(
        !resumed(&pki, s.tls_port),
        "resumed with tls-session-caching no"
    );
}

/// An encrypted PKCS#8 key (as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it) is read
/// with tls-key-file-pass; without the pass, or with a wrong one, the start stops saying so.
#[test]
fn encrypted_keys_are_read_with_their_passphrase() {
    let pki = Pki::new();
    let encrypted = pki.path("server.enc.key");
    let status = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:key-pass-1",
        ])
        .args(["-in", &pki.arg("server.key"), "-out"])
        .arg(&encrypted)
        .status()
        .expect("openssl pkcs8 (the openssl package)");
    assert!(status.success());
    let text = std::fs::read_to_string(&encrypted).unwrap();
    assert!(text.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{text}");
    let key_arg = encrypted.to_str().unwrap();
    let (_, stderr) = start_fails(&pki, &["--tls-key-file", key_arg]);
    assert!(
        stderr.contains("tls-key-file holds an encrypted key but tls-key-file-pass is empty"),
        "{stderr}"
    );
    let (_, stderr) = start_fails(
        &pki,
        &["--tls-key-file", key_arg, "--tls-key-file-pass", "not-it"],
    );
    assert!(
        stderr.contains("cannot be decrypted with tls-key-file-pass"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-it"),
        "the passphrase was printed: {stderr}"
    );
    let s = TlsServer::start(
        &pki,
        false,
        &[
            "--tls-key-file",
            key_arg,
            "--tls-key-file-pass",
            "key-pass-1",
        ],
    );
    assert_eq!(
        ping(&pki.client(s.tls_port, Some(&pki.client))).unwrap(),
        "PONG"
    );
}
