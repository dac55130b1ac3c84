//! Encryption at rest (`encryption-at-rest-key-file`): every value tallykv writes to disk —
//! fjall values, the Raft log's entries, slot-group snapshot files and SAVE copies — is
//! AES-256-GCM encrypted under a node key, so a copied data dir or backup reveals no value.
//! Key names (fjall keys) stay in plaintext.
//!
//! The key file is a keyring as `tallykv-card keygen --out FILE` writes it (card/FORMAT.md):
//! key-encryption keys with ids, one active. tallykv never uses a keyring key directly: each
//! *session* (a process's writing under one key, or one file) draws 16 random bytes and
//! derives its own AES-256 key from the keyring key with HKDF-SHA-256 (salt = the session id,
//! info = [`INFO`]). Nonces are then a counter within the session — NIST SP 800-38D's
//! deterministic construction (§8.2.1) — so no key meets the 2^32 limit of random nonces,
//! however much a node writes; a session ends well before its counter could wrap. The info
//! string keeps these keys apart from the data keys the card helpers wrap with the same
//! keyring.
//!
//! A sealed value:
//!
//! ```text
//! E7 41 52 01       magic "\xE7AR" and format version 1
//! u8                key id length, then the key id (ASCII)
//! [16]              session id
//! u64 LE            counter: the nonce is 4 zero bytes ‖ this counter (LE)
//! ciphertext ‖ tag  AES-256-GCM, 16-byte tag; AAD = the caller's, e.g. keyspace and key
//! ```
//!
//! A sealed file (a stream; [`SealedWriter`], [`OpenedReader`]):
//!
//! ```text
//! "TKVAREST" 01     magic and version
//! u8 + key id, [16] session id
//! chunks            [u32 LE length][ciphertext ‖ tag]: at most CHUNK plaintext bytes each;
//!                   nonce = 4 zero bytes ‖ chunk number (u64 LE); AAD = the header's bytes
//!                   ‖ one byte, 1 on the last chunk and 0 before, so a cut file is an error
//! ```
//!
//! Rotation: the key file names several keys and the active one. Values sealed under another
//! key (or written before encryption was on) still open; the storage layers re-seal them
//! under the active key in the background ([`AtRest::is_current`] tells which need it).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use card::keyring::{KeyId, KeyProvider, Keyring};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// HKDF's info for every key tallykv derives for encryption at rest.
const INFO: &[u8] = b"tallykv encryption at rest v1";
/// The first bytes of a sealed value.
pub const VALUE_MAGIC: [u8; 4] = [0xE7, b'A', b'R', 1];
/// The first bytes of a sealed file.
pub const FILE_MAGIC: &[u8; 9] = b"TKVAREST\x01";
const SESSION_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk of a sealed file.
pub const CHUNK: usize = 64 * 1024;
/// A session seals at most this many values before the next one starts (far below the
/// 2^64 a counter could count, and below any bound on GCM's invocations per key).
const SESSION_LIMIT: u64 = 1 << 48;

/// Why a stored value or file does not open. Never quotes the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key the key file does not hold.
    UnknownKey(String),
    /// Not a sealed value, or cut short.
    Malformed,
    /// The key is known but the tag does not verify: a wrong key under that id, a changed
    /// byte, or a value moved to another place (another AAD).
    Tampered(String),
    /// Encryption at rest is off and the data is sealed.
    NoKeyFile(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::UnknownKey(id) => write!(
                f,
                "data encrypted at rest under key id '{id}', which the encryption-at-rest-key-file does not hold"
            ),
            OpenError::Malformed => {
                write!(f, "a value encrypted at rest is malformed or cut short")
            }
            OpenError::Tampered(id) => write!(
                f,
                "a value encrypted at rest under key id '{id}' does not decrypt: the key file holds another key under that id, or the data was changed"
            ),
            OpenError::NoKeyFile(id) => write!(
                f,
                "the data is encrypted at rest (key id '{id}') and encryption-at-rest-key-file is not set"
            ),
        }
    }
}

impl From<OpenError> for String {
    fn from(e: OpenError) -> String {
        e.to_string()
    }
}

/// One session's key and its next nonce.
struct Session {
    key_id: String,
    id: [u8; SESSION_LEN],
    aead: LessSafeKey,
    next: AtomicU64,
}

struct Keys {
    ring: Keyring,
    active: String,
    /// The session values are sealed in now (under the active key).
    writing: Arc<Session>,
    /// Sessions met while opening, by session id (random, so one per key: the key id a
    /// value names is checked against the session's).
    seen: HashMap<[u8; SESSION_LEN], Arc<Session>>,
}

/// The node's at-rest keys. Shared by the writer thread, the cores' logs and the snapshot
/// code; [`AtRest::reload`] swaps in a new key file while they run.
pub struct AtRest {
    path: std::sync::Mutex<PathBuf>,
    keys: RwLock<Keys>,
    rng: SystemRandom,
    /// Values and chunks sealed, and opened (for INFO).
    pub sealed: AtomicU64,
    pub opened: AtomicU64,
    /// Bumped by every [`AtRest::reload`]: each part of the node's disk state re-seals what
    /// is not under the active key, then reports the generation it finished.
    generation: AtomicU64,
    /// The parts that re-seal (the fjall values, each core's Raft log, the snapshot files,
    /// the SAVE copy) and the last generation each finished.
    parts: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Values re-sealed under the active key by the background passes.
    pub resealed: AtomicU64,
}

impl std::fmt::Debug for AtRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtRest")
            .field("path", &self.path())
            .field("active", &self.active_key_id())
            .finish_non_exhaustive()
    }
}

fn load_ring(path: &Path) -> Result<Keyring, String> {
    Keyring::from_file(path).map_err(|e| format!("encryption-at-rest-key-file: {e}"))
}

impl AtRest {
    /// Reads the key file (a `tallykv-card keygen` keyring).
    pub fn load(path: &Path) -> Result<AtRest, String> {
        let ring = load_ring(path)?;
        let rng = SystemRandom::new();
        let active = ring.active_key_id().as_str().to_owned();
        let writing = Arc::new(new_session(&ring, &rng, &active)?);
        Ok(AtRest {
            path: std::sync::Mutex::new(path.to_owned()),
            keys: RwLock::new(Keys {
                ring,
                active,
                writing,
                seen: HashMap::new(),
            }),
            rng,
            sealed: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            generation: AtomicU64::new(1),
            parts: Default::default(),
            resealed: AtomicU64::new(0),
        })
    }

    /// Reads the key file again, or the one at `path` (after a rotation added a key and
    /// made it active). Values already sealed keep opening as long as the file still holds
    /// their keys. Nothing changes when the file cannot be read.
    pub fn reload(&self, path: &Path) -> Result<(), String> {
        let ring = load_ring(path)?;
        let active = ring.active_key_id().as_str().to_owned();
        let writing = Arc::new(new_session(&ring, &self.rng, &active)?);
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        // Cached sessions of keys the file still holds stay valid only if the key material
        // did not change under the same id: derive again rather than trust the cache.
        keys.seen.clear();
        keys.ring = ring;
        keys.active = active;
        keys.writing = writing;
        drop(keys);
        *self.path.lock().unwrap_or_else(|p| p.into_inner()) = path.to_owned();
        self.generation.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The current rotation generation: 1 after open, one more per [`AtRest::reload`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Registers a part of the node's disk state that re-seals in the background (`name`
    /// such as "wal-core-0"), not yet done with any generation.
    pub fn part_started(&self, name: &str) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts.entry(name.to_owned()).or_insert(0);
    }

    /// Part `name` holds nothing sealed under another key than the one active at
    /// `generation` (nor plaintext).
    pub fn part_done(&self, name: &str, generation: u64) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let done = parts.entry(name.to_owned()).or_insert(0);
        *done = (*done).max(generation);
    }

    /// Parts that have not finished the current generation.
    pub fn parts_behind(&self) -> Vec<String> {
        let generation = self.generation();
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts
            .iter()
            .filter(|&(_, &done)| done < generation)
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn path(&self) -> PathBuf {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The key new data is sealed under.
    pub fn active_key_id(&self) -> String {
        self.read().active.clone()
    }

    /// Every key id the key file holds.
    pub fn key_ids(&self) -> Vec<String> {
        let keys = self.read();
        keys.ring.key_ids().map(|k| k.as_str().to_owned()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The session to seal with and its next counter value.
    fn next_nonce(&self) -> (Arc<Session>, u64) {
        let session = self.read().writing.clone();
        let n = session.next.fetch_add(1, Relaxed);
        if n < SESSION_LIMIT {
            return (session, n);
        }
        // The session is used up: start another (once; racing sealers take the new one).
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&keys.writing, &session) {
            let active = keys.active.clone();
            match new_session(&keys.ring, &self.rng, &active) {
                Ok(s) => keys.writing = Arc::new(s),
                Err(e) => panic!("cannot start an at-rest key session: {e}"),
            }
        }
        let session = keys.writing.clone();
        let n = session.next.fetch_add(1, Relaxed);
        (session, n)
    }

    /// Appends the sealed form of `plain` to `out`, bound to `aad` (where the value lives).
    pub fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let (session, n) = self.next_nonce();
        out.reserve(overhead(&session.key_id) + plain.len());
        out.extend_from_slice(&VALUE_MAGIC);
        out.push(session.key_id.len() as u8);
        out.extend_from_slice(session.key_id.as_bytes());
        out.extend_from_slice(&session.id);
        out.extend_from_slice(&n.to_le_bytes());
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = session
            .aead
            .seal_in_place_separate_tag(nonce(n), Aad::from(aad), &mut out[at..])
            .expect("AES-GCM seals any length tallykv stores");
        out.extend_from_slice(tag.as_ref());
        self.sealed.fetch_add(1, Relaxed);
    }

    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(aad, plain, &mut out);
        out
    }

    /// The plaintext of a sealed value. A value that is not sealed (no magic) is refused:
    /// callers that accept plaintext left from before encryption was on check
    /// [`is_sealed`] first.
    pub fn open(&self, aad: &[u8], stored: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (key_id, session_id, n, body) = split(stored)?;
        let session = self.session(key_id, session_id)?;
        let mut buf = body.to_vec();
        let len = session
            .aead
            .open_in_place(nonce(n), Aad::from(aad), &mut buf)
            .map_err(|_| OpenError::Tampered(key_id.to_owned()))?
            .len();
        buf.truncate(len);
        self.opened.fetch_add(1, Relaxed);
        Ok(buf)
    }

    /// Whether `stored` is sealed under the active key (nothing to re-seal on rotation).
    pub fn is_current(&self, stored: &[u8]) -> bool {
        match split(stored) {
            Ok((key_id, ..)) => self.read().active == key_id,
            Err(_) => false,
        }
    }

    /// The session `key_id`/`session_id` names, derived once and cached.
    fn session(
        &self,
        key_id: &str,
        session_id: [u8; SESSION_LEN],
    ) -> Result<Arc<Session>, OpenError> {
        {
            let keys = self.read();
            if keys.writing.id == session_id && keys.writing.key_id == key_id {
                return Ok(keys.writing.clone());
            }
            if let Some(s) = keys.seen.get(&session_id).filter(|s| s.key_id == key_id) {
                return Ok(s.clone());
            }
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let session = Arc::new(
            derive_session(&keys.ring, key_id, session_id)
                .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?,
        );
        keys.seen.insert(session_id, session.clone());
        Ok(session)
    }

    /// A writer that seals everything written to `inner` as one file under the active key.
    pub fn writer<W: Write>(self: &Arc<Self>, mut inner: W) -> io::Result<SealedWriter<W>> {
        let active = self.active_key_id();
        let session = {
            let keys = self.read();
            new_session(&keys.ring, &self.rng, &active).map_err(io::Error::other)?
        };
        let mut header = FILE_MAGIC.to_vec();
        header.push(active.len() as u8);
        header.extend_from_slice(active.as_bytes());
        header.extend_from_slice(&session.id);
        inner.write_all(&header)?;
        Ok(SealedWriter {
            inner,
            session,
            header,
            buf: Vec::with_capacity(CHUNK + TAG_LEN),
            chunk: 0,
            at_rest: self.clone(),
        })
    }

    /// A reader of the plaintext of a sealed file read from `inner`.
    pub fn reader<R: Read>(self: &Arc<Self>, mut inner: R) -> io::Result<OpenedReader<R>> {
        let (header, key_id, session_id) = read_file_header(&mut inner)?;
        let session = self
            .session(&key_id, session_id)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(OpenedReader {
            inner,
            session,
            header,
            key_id,
            chunk: 0,
            plain: Vec::new(),
            at: 0,
            done: false,
        })
    }

    /// The key id a sealed file's header names (None when the file is not sealed).
    pub fn file_key_id(path: &Path) -> io::Result<Option<String>> {
        let mut f = std::fs::File::open(path)?;
        let mut magic = [0u8; FILE_MAGIC.len()];
        if f.read_exact(&mut magic).is_err() || &magic != FILE_MAGIC {
            return Ok(None);
        }
        let mut f = io::Cursor::new(magic.to_vec()).chain(f);
        read_file_header(&mut f).map(|(_, id, _)| Some(id))
    }
}

/// Whether `stored` begins like a sealed value.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(&VALUE_MAGIC)
}

/// The key id a sealed value names, or None when it is not sealed.
pub fn key_id_of(stored: &[u8]) -> Option<&str> {
    split(stored).ok().map(|(id, ..)| id)
}

/// Bytes a sealed value adds to its plaintext under key `key_id`.
pub fn overhead(key_id: &str) -> usize {
    VALUE_MAGIC.len() + 1 + key_id.len() + SESSION_LEN + 8 + TAG_LEN
}

fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// The parts of a sealed value: key id, session id, counter, ciphertext ‖ tag.
type Parts<'a> = (&'a str, [u8; SESSION_LEN], u64, &'a [u8]);

fn split(stored: &[u8]) -> Result<Parts<'_>, OpenError> {
    let rest = stored
        .strip_prefix(&VALUE_MAGIC[..])
        .ok_or(OpenError::Malformed)?;
    let (&len, rest) = rest.split_first().ok_or(OpenError::Malformed)?;
    let len = len as usize;
    if rest.len() < len + SESSION_LEN + 8 + TAG_LEN {
        return Err(OpenError::Malformed);
    }
    let key_id = std::str::from_utf8(&rest[..len]).map_err(|_| OpenError::Malformed)?;
    let session: [u8; SESSION_LEN] = rest[len..len + SESSION_LEN].try_into().unwrap();
    let n = u64::from_le_bytes(
        rest[len + SESSION_LEN..len + SESSION_LEN + 8]
            .try_into()
            .unwrap(),
    );
    Ok((key_id, session, n, &rest[len + SESSION_LEN + 8..]))
}

fn derive_session(ring: &Keyring, key_id: &str, id: [u8; SESSION_LEN]) -> Option<Session> {
    let kid = KeyId::new(key_id).ok()?;
    let material = ring.derive_key(&kid, &id, INFO)?;
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &material[..]).expect("a 32-byte AES-256 key"),
    );
    Some(Session {
        key_id: key_id.to_owned(),
        id,
        aead,
        next: AtomicU64::new(0),
    })
}

fn new_session(ring: &Keyring, rng: &SystemRandom, key_id: &str) -> Result<Session, String> {
    let mut id = [0u8; SESSION_LEN];
    rng.fill(&mut id)
        .map_err(|_| "the operating system's random source failed".to_string())?;
    derive_session(ring, key_id, id)
        .ok_or_else(|| format!("encryption-at-rest-key-file holds no key '{key_id}'"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn read_file_header(inner: &mut impl Read) -> io::Result<(Vec<u8>, String, [u8; SESSION_LEN])> {
    let mut header = vec![0u8; FILE_MAGIC.len() + 1];
    inner.read_exact(&mut header)?;
    if &header[..FILE_MAGIC.len()] != FILE_MAGIC {
        return Err(invalid(
            "not a file encrypted at rest (or of an unknown version)",
        ));
    }
    let len = header[FILE_MAGIC.len()] as usize;
    let mut rest = vec![0u8; len + SESSION_LEN];
    inner.read_exact(&mut rest)?;
    header.extend_from_slice(&rest);
    let key_id = std::str::from_utf8(&rest[..len])
        .map_err(|_| invalid("a file encrypted at rest has a malformed key id"))?
        .to_owned();
    let session: [u8; SESSION_LEN] = rest[len..].try_into().unwrap();
    Ok((header, key_id, session))
}

/// Seals a file chunk by chunk; [`SealedWriter::finish`] writes the last chunk. A writer
/// dropped without `finish` leaves a file that does not open (cut short), never a shorter
/// one that does.
pub struct SealedWriter<W: Write> {
    inner: W,
    session: Session,
    header: Vec<u8>,
    buf: Vec<u8>,
    chunk: u64,
    at_rest: Arc<AtRest>,
}

impl<W: Write> SealedWriter<W> {
    fn flush_chunk(&mut self, last: bool) -> io::Result<()> {
        let mut aad = self.header.clone();
        aad.push(last as u8);
        let tag = self
            .session
            .aead
            .seal_in_place_separate_tag(nonce(self.chunk), Aad::from(&aad[..]), &mut self.buf)
            .map_err(|_| io::Error::other("AES-GCM refused a chunk"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.inner
            .write_all(&(self.buf.len() as u32).to_le_bytes())?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.chunk += 1;
        self.at_rest.sealed.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Writes the last chunk and returns the inner writer (not flushed or synced).
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_chunk(true)?;
        // Moves `inner` out: `self` has no Drop of its own.
        Ok(self.inner)
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk(false)?;
        }
        Ok(n)
    }

    /// Flushes the inner writer; a partial chunk stays buffered (chunks are whole).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The plaintext of a sealed file, chunk by chunk; a cut, reordered or changed chunk is an
/// `InvalidData` error.
pub struct OpenedReader<R: Read> {
    inner: R,
    session: Arc<Session>,
    header: Vec<u8>,
    key_id: String,
    chunk: u64,
    plain: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: Read> OpenedReader<R> {
    /// The key the file is sealed under.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        if let Err(e) = self.inner.read_exact(&mut len) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("a file encrypted at rest is cut short")
            } else {
                e
            });
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
            return Err(invalid("a file encrypted at rest has a malformed chunk"));
        }
        self.plain.resize(len, 0);
        self.inner.read_exact(&mut self.plain).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("a file encrypted at rest is cut short")
            } else {
                e
            }
        })?;
        let ciphertext = std::mem::take(&mut self.plain);
        for last in [false, true] {
            let mut aad = self.header.clone();
            aad.push(last as u8);
            let mut buf = ciphertext.clone();
            if let Ok(p) =
                self.session
                    .aead
                    .open_in_place(nonce(self.chunk), Aad::from(&aad[..]), &mut buf)
            {
                let n = p.len();
                buf.truncate(n);
                self.plain = buf;
                self.at = 0;
                self.chunk += 1;
                self.done = last;
                return Ok(());
            }
        }
        Err(invalid(&format!(
            "a file encrypted at rest under key id '{}' does not decrypt: another key under that id, or the file was changed",
            self.key_id
        )))
    }
}

impl<R: Read> Read for OpenedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A key file with keys `ids` (the last active) under `dir`.
    pub(crate) fn key_file(dir: &Path, name: &str, ids: &[&str]) -> PathBuf {
        let mut ring = Keyring::generate(KeyId::new(ids[0]).unwrap()).unwrap();
        for id in &ids[1..] {
            ring.rotate(Some(KeyId::new(id).unwrap())).unwrap();
        }
        let path = dir.join(name);
        ring.write_new(&path).unwrap();
        path
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tallykv-at-rest-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn values_round_trip_and_are_bound_to_their_place() {
        let dir = tmp();
        let a = AtRest::load(&key_file(&dir, "k", &["k1"])).unwrap();
        let sealed = a.seal(b"g0/key", b"4111111111111111");
        assert!(is_sealed(&sealed));
        assert_eq!(key_id_of(&sealed), Some("k1"));
        assert_eq!(sealed.len(), 16 + overhead("k1"));
        assert!(!sealed.windows(4).any(|w| w == b"4111"));
        assert_eq!(a.open(b"g0/key", &sealed).unwrap(), b"4111111111111111");
        assert_eq!(
            a.open(b"g0/other", &sealed),
            Err(OpenError::Tampered("k1".into()))
        );
        // Two seals of one value differ (the counter moves on).
        assert_ne!(a.seal(b"x", b"v"), a.seal(b"x", b"v"));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(a.open(b"g0/key", &bad).is_err(), "byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(a.open(b"g0/key", &sealed[..n]).is_err());
        }
        assert_eq!(a.open(b"", b"plain"), Err(OpenError::Malformed));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn another_key_file_cannot_open_and_rotation_keeps_old_keys() {
        let dir = tmp();
        let path = key_file(&dir, "k", &["k1"]);
        let a = AtRest::load(&path).unwrap();
        let old = a.seal(b"a", b"value");
        // A different key under the same id: Tampered, never garbage.
        let other = AtRest::load(&key_file(&dir, "other", &["k1"])).unwrap();
        assert_eq!(
            other.open(b"a", &old),
            Err(OpenError::Tampered("k1".into()))
        );
        let third = AtRest::load(&key_file(&dir, "third", &["k9"])).unwrap();
        assert_eq!(
            third.open(b"a", &old),
            Err(OpenError::UnknownKey("k1".into()))
        );
        // Rotate: the file gains k2 (active); old values open, new ones use k2.
        let mut ring = Keyring::from_file(&path).unwrap();
        ring.rotate(Some(KeyId::new("k2").unwrap())).unwrap();
        ring.replace_file(&path).unwrap();
        assert!(a.is_current(&old));
        a.reload(&path).unwrap();
        assert!(!a.is_current(&old));
        assert_eq!(a.open(b"a", &old).unwrap(), b"value");
        let new = a.seal(b"a", b"value");
        assert_eq!(key_id_of(&new), Some("k2"));
        assert!(a.is_current(&new));
        assert_eq!(a.key_ids(), ["k1", "k2"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_round_trip_and_a_cut_or_changed_file_is_an_error() {
        let dir = tmp();
        let a = Arc::new(AtRest::load(&key_file(&dir, "k", &["k1"])).unwrap());
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut w = a.writer(Vec::new()).unwrap();
            // Odd write sizes cross chunk boundaries.
            for piece in data.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let file = w.finish().unwrap();
            let mut back = Vec::new();
            a.reader(&file[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "len {len}");
            // Cut anywhere past the header: an error, never a shorter plaintext.
            for cut in [
                file.len() - 1,
                file.len() - TAG_LEN - 4,
                FILE_MAGIC.len() + 20,
            ] {
                let mut r = a.reader(&file[..cut]).unwrap();
                assert!(
                    r.read_to_end(&mut Vec::new()).is_err(),
                    "len {len} cut {cut}"
                );
            }
            let mut bad = file.clone();
            let i = bad.len() - 3;
            bad[i] ^= 0x40;
            assert!(
                a.reader(&bad[..])
                    .unwrap()
                    .read_to_end(&mut Vec::new())
                    .is_err()
            );
        }
        let path = dir.join("f");
        let mut w = a.writer(std::fs::File::create(&path).unwrap()).unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        assert_eq!(AtRest::file_key_id(&path).unwrap().as_deref(), Some("k1"));
        std::fs::write(&path, b"plain").unwrap();
        assert_eq!(AtRest::file_key_id(&path).unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
