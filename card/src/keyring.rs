//! Key-encryption keys (KEKs) with ids, one active; the `KeyProvider` seam a KMS or HSM client
//! implements; and the development keyring that keeps them in a 0600 JSON file or an
//! environment variable. See FORMAT.md for the file's layout.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fingerprint::FingerprintKey;
use crate::seal::SealError;

/// Bytes in a data-encryption key and in a key-encryption key (AES-256).
pub const KEY_LEN: usize = 32;
/// A per-record data-encryption key; wiped when dropped.
pub type Dek = Zeroizing<[u8; KEY_LEN]>;
/// The environment variable that may hold a whole keyring (the file's JSON text).
pub const KEYRING_ENV: &str = "TALLYKV_CARD_KEYRING";
/// NIST SP 800-38D §8.3: with random 96-bit nonces, one AES-GCM key may be used for at most
/// 2^32 encryptions. A KEK encrypts once per sealed record (it wraps that record's DEK), so
/// this is the number of seals one KEK may make before it must be rotated out.
pub const KEK_WRAP_LIMIT: u64 = 1 << 32;

/// The name of a key-encryption key, stored in every envelope sealed under it: 1–32 of
/// `A-Z a-z 0-9 . _ -`, starting with a letter, and never more than 8 digits in a row (an id
/// must not itself look like a card number to a PAN scanner).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

/// Why a text is not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid key id '{0}': 1-32 characters of A-Z a-z 0-9 . _ -, starting with a letter, at most 8 digits in a row"
)]
pub struct BadKeyId(pub String);

impl KeyId {
    pub const MAX_LEN: usize = 32;

    pub fn new(id: &str) -> Result<KeyId, BadKeyId> {
        let bytes = id.as_bytes();
        let charset = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let digit_run = bytes
            .split(|b| !b.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        let ok = (1..=KeyId::MAX_LEN).contains(&bytes.len())
            && bytes[0].is_ascii_alphabetic()
            && charset
            && digit_run <= 8;
        if ok {
            Ok(KeyId(id.to_owned()))
        } else {
            Err(BadKeyId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// Where key-encryption keys live: this keyring for development, a KMS or HSM in production.
/// The sealer never sees a KEK, only asks for a data key to be wrapped or unwrapped under one.
///
/// `aad` is the envelope's associated data (FORMAT.md): a provider must bind the wrapped key
/// to it (AES-GCM's AAD, KMS "encryption context"), so a wrapped key moved to another record
/// does not unwrap. A wrapped key is at most `u16::MAX` bytes.
pub trait KeyProvider: Send + Sync {
    /// The key new values are sealed under.
    fn active_key_id(&self) -> KeyId;
    /// Encrypts `dek` under KEK `key_id`.
    fn wrap_dek(
        &self,
        key_id: &KeyId,
        dek: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError>;
    /// Decrypts a wrapped data key: `SealError::UnknownKeyId` when this provider has no key
    /// `key_id`, `SealError::Tampered` when it does not open.
    fn unwrap_dek(&self, key_id: &KeyId, wrapped: &[u8], aad: &[u8]) -> Result<Dek, SealError>;
}

/// A shared provider is a provider: `Sealer::new(keyring.clone())` with an `Arc<Keyring>` that
/// the service also fingerprints with.
impl<P: KeyProvider + ?Sized> KeyProvider for std::sync::Arc<P> {
    fn active_key_id(&self) -> KeyId {
        (**self).active_key_id()
    }

    fn wrap_dek(
        &self,
        key_id: &KeyId,
        dek: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        (**self).wrap_dek(key_id, dek, aad)
    }

    fn unwrap_dek(&self, key_id: &KeyId, wrapped: &[u8], aad: &[u8]) -> Result<Dek, SealError> {
        (**self).unwrap_dek(key_id, wrapped, aad)
    }
}

/// Why a keyring could not be loaded, made or saved. Never quotes key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read or write keyring {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists: keygen never overwrites a keyring (use rotate to add a key)")]
    Exists(PathBuf),
    #[error("no keyring: pass --keyring FILE or set {KEYRING_ENV} to the keyring's JSON")]
    NotSet,
    #[error("the keyring is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error(
        "the keyring does not follow the tallykv keyring format (line {line}, column {column}){detail}"
    )]
    Schema {
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("unsupported keyring version {0} (this build reads version 1)")]
    UnsupportedVersion(u32),
    #[error(transparent)]
    BadKeyId(#[from] BadKeyId),
    #[error("key '{0}' is not 32 bytes of base64url")]
    BadKeyMaterial(String),
    #[error("the fingerprint key is not 32 bytes of base64url")]
    BadFingerprintKey,
    #[error("key id '{0}' appears twice in the keyring")]
    DuplicateKeyId(KeyId),
    #[error("the active key '{0}' is not in the keyring")]
    ActiveMissing(KeyId),
    #[error("the operating system's random source failed")]
    Random,
}

/// One key-encryption key and how many data keys this process has wrapped with it.
struct Kek {
    id: KeyId,
    material: Zeroizing<[u8; KEY_LEN]>,
    aead: LessSafeKey,
    wraps: AtomicU64,
}

impl Kek {
    fn new(id: KeyId, material: Zeroizing<[u8; KEY_LEN]>) -> Kek {
        // A 32-byte slice is always a valid AES-256 key.
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &material[..]).expect("32-byte AES-256 key"),
        );
        Kek {
            id,
            material,
            aead,
            wraps: AtomicU64::new(0),
        }
    }
}

/// KEKs and the fingerprint key, kept in memory; the development `KeyProvider`.
///
/// Wrapping a data key: a random 96-bit nonce, then AES-256-GCM under the KEK with the
/// envelope's associated data; the wrapped key is `nonce ‖ ciphertext ‖ tag` (60 bytes). Each
/// KEK counts its wraps and refuses past [`KEK_WRAP_LIMIT`] in this process; the count is not
/// shared between processes, which is why FORMAT.md asks for rotation far earlier.
pub struct Keyring {
    keks: Vec<Kek>,
    active: usize,
    fingerprint: FingerprintKey,
    rng: SystemRandom,
}

/// The keyring file, as serde reads and writes it. Key material is borrowed from the
/// (zeroized) file text rather than copied into owned strings.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile<'a> {
    format: &'a str,
    version: u32,
    active: &'a str,
    #[serde(borrow)]
    keys: Vec<KeyEntry<'a>>,
    fingerprint_key: &'a str,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry<'a> {
    id: &'a str,
    key: &'a str,
}

const FILE_FORMAT: &str = "tallykv-keyring";

impl Keyring {
    /// A new keyring: one fresh KEK named `id` (active) and a fresh fingerprint key.
    pub fn generate(id: KeyId) -> Result<Keyring, KeyringError> {
        let rng = SystemRandom::new();
        let kek = Kek::new(id, random_key(&rng)?);
        let fingerprint = FingerprintKey::from_bytes(&*random_key(&rng)?);
        Ok(Keyring {
            keks: vec![kek],
            active: 0,
            fingerprint,
            rng,
        })
    }

    /// Adds a fresh KEK and makes it the active one; `id` defaults to `k<N>`, the first free
    /// number after the count of keys. Old keys stay, to open what they sealed until a
    /// rewrap has moved every value to the new one.
    pub fn rotate(&mut self, id: Option<KeyId>) -> Result<KeyId, KeyringError> {
        let id = match id {
            Some(id) => id,
            None => (self.keks.len() + 1..)
                .map(|n| KeyId(format!("k{n}")))
                .find(|id| self.kek(id).is_none())
                .expect("an unbounded range has a free id"),
        };
        if self.kek(&id).is_some() {
            return Err(KeyringError::DuplicateKeyId(id));
        }
        self.keks.push(Kek::new(id.clone(), random_key(&self.rng)?));
        self.active = self.keks.len() - 1;
        Ok(id)
    }

    /// Reads a keyring file (FORMAT.md, "Keyring file").
    pub fn from_file(path: &Path) -> Result<Keyring, KeyringError> {
        let text = fs::read(path).map_err(|source| KeyringError::Io {
            path: path.to_owned(),
            source,
        })?;
        Keyring::from_json(&Zeroizing::new(text))
    }

    /// Reads the keyring held in the environment variable [`KEYRING_ENV`].
    pub fn from_env() -> Result<Keyring, KeyringError> {
        match std::env::var_os(KEYRING_ENV) {
            Some(v) => Keyring::from_json(&Zeroizing::new(v.into_encoded_bytes())),
            None => Err(KeyringError::NotSet),
        }
    }

    /// Parses a keyring's JSON text.
    pub fn from_json(text: &[u8]) -> Result<Keyring, KeyringError> {
        let file: KeyringFile<'_> = serde_json::from_slice(text).map_err(json_error)?;
        if file.format != FILE_FORMAT {
            return Err(KeyringError::Schema {
                line: 1,
                column: 1,
                detail: format!(": format is not \"{FILE_FORMAT}\""),
            });
        }
        if file.version != 1 {
            return Err(KeyringError::UnsupportedVersion(file.version));
        }
        let mut keks: Vec<Kek> = Vec::with_capacity(file.keys.len());
        for entry in &file.keys {
            let id = KeyId::new(entry.id)?;
            if keks.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateKeyId(id));
            }
            let material =
                decode_key(entry.key).ok_or_else(|| KeyringError::BadKeyMaterial(id.0.clone()))?;
            keks.push(Kek::new(id, material));
        }
        let active_id = KeyId::new(file.active)?;
        let active = keks
            .iter()
            .position(|k| k.id == active_id)
            .ok_or(KeyringError::ActiveMissing(active_id))?;
        let fingerprint =
            decode_key(file.fingerprint_key).ok_or(KeyringError::BadFingerprintKey)?;
        Ok(Keyring {
            keks,
            active,
            fingerprint: FingerprintKey::from_bytes(&fingerprint),
            rng: SystemRandom::new(),
        })
    }

    /// The keyring as the JSON text of a keyring file.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let encoded: Vec<(Zeroizing<String>, &str)> = self
            .keks
            .iter()
            .map(|k| {
                (
                    Zeroizing::new(URL_SAFE_NO_PAD.encode(&k.material[..])),
                    k.id.as_str(),
                )
            })
            .collect();
        let fingerprint = Zeroizing::new(URL_SAFE_NO_PAD.encode(self.fingerprint.material()));
        let file = KeyringFile {
            format: FILE_FORMAT,
            version: 1,
            active: self.keks[self.active].id.as_str(),
            keys: encoded
                .iter()
                .map(|(key, id)| KeyEntry { id, key })
                .collect(),
            fingerprint_key: &fingerprint,
        };
        // Reserved up front so that growing the buffer leaves no stray copies of key material.
        let mut out = Zeroizing::new(Vec::with_capacity(256 + 96 * self.keks.len()));
        // Serializing borrowed strings into a Vec cannot fail.
        serde_json::to_writer_pretty(&mut *out, &file).expect("serializing a keyring into memory");
        out.push(b'\n');
        out
    }

    /// Writes the keyring to a new file, readable by its owner only (0600). Refuses to
    /// replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyringError> {
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(KeyringError::Exists(path.to_owned()));
            }
            Err(source) => {
                return Err(KeyringError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let io = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        file.write_all(&self.to_json()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Replaces the keyring file at `path` atomically (a 0600 temporary file renamed over
    /// it), so a crash leaves either the old keyring or the new one.
    pub fn replace_file(&self, path: &Path) -> Result<(), KeyringError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        self.write_new(&tmp)?;
        fs::rename(&tmp, path).map_err(|source| KeyringError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The ids of every KEK, in the order they were added.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keks.iter().map(|k| &k.id)
    }

    /// The key that fingerprints PANs (separate from every KEK).
    pub fn fingerprint_key(&self) -> &FingerprintKey {
        &self.fingerprint
    }

    /// How many data keys this process has wrapped under `id` (for metrics and the
    /// rotation bound; see [`KEK_WRAP_LIMIT`]).
    pub fn wrap_count(&self, id: &KeyId) -> Option<u64> {
        self.kek(id).map(|k| k.wraps.load(Ordering::Relaxed))
    }

    /// A 256-bit key derived from KEK `id` with HKDF-SHA-256 (RFC 5869): `salt` and `info`
    /// as the RFC names them. For a server that keeps its own data under this keyring's keys
    /// (tallykv's encryption at rest): `info` separates that use from wrapping data keys, so
    /// no key ever serves two purposes. None when the keyring has no key `id`.
    pub fn derive_key(
        &self,
        id: &KeyId,
        salt: &[u8],
        info: &[u8],
    ) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                KEY_LEN
            }
        }
        let kek = self.kek(id)?;
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(&kek.material[..]);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // KEY_LEN is far below HKDF-SHA-256's limit (255 * 32 bytes): neither call can fail.
        prk.expand(&[info], Len)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF-SHA-256 expands 32 bytes");
        Some(out)
    }

    fn kek(&self, id: &KeyId) -> Option<&Kek> {
        self.keks.iter().find(|k| &k.id == id)
    }

    /// Wraps `dek` under `key_id` with the given nonce: the deterministic core of `wrap_dek`,
    /// which the test vectors call with fixed nonces.
    pub(crate) fn wrap_with_nonce(
        &self,
        key_id: &KeyId,
        dek: &[u8; KEY_LEN],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, SealError> {
        let kek = self
            .kek(key_id)
            .ok_or_else(|| SealError::UnknownKeyId(key_id.clone()))?;
        if kek.wraps.fetch_add(1, Ordering::Relaxed) >= KEK_WRAP_LIMIT {
            return Err(SealError::KeyExhausted(key_id.clone()));
        }
        // Sized up front: the DEK is encrypted where it was copied, never reallocated.
        let mut out = Vec::with_capacity(NONCE_LEN + KEY_LEN + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(dek);
        let tag = kek
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| SealError::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }
}

impl KeyProvider for Keyring {
    fn active_key_id(&self) -> KeyId {
        self.keks[self.active].id.clone()
    }

    fn wrap_dek(
        &self,
        key_id: &KeyId,
        dek: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        self.wrap_with_nonce(key_id, dek, aad, nonce)
    }

    fn unwrap_dek(&self, key_id: &KeyId, wrapped: &[u8], aad: &[u8]) -> Result<Dek, SealError> {
        let kek = self
            .kek(key_id)
            .ok_or_else(|| SealError::UnknownKeyId(key_id.clone()))?;
        if wrapped.len() != NONCE_LEN + KEY_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Tampered);
        }
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Tampered)?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = kek
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| SealError::Tampered)?;
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        dek.copy_from_slice(plain);
        Ok(dek)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keks.iter().map(|k| &k.id).collect::<Vec<_>>())
            .field("active", &self.keks[self.active].id)
            .finish_non_exhaustive()
    }
}

fn random_key(rng: &SystemRandom) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyringError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(&mut key[..]).map_err(|_| KeyringError::Random)?;
    Ok(key)
}

fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // decode_slice refuses output longer than the buffer; the length check refuses shorter.
    match URL_SAFE_NO_PAD.decode_slice(text, &mut key[..]) {
        Ok(KEY_LEN) => Some(key),
        _ => None,
    }
}

/// serde_json's message may quote the offending value, which could be key material; keep
/// only its position, and the message when it names a field.
fn json_error(e: serde_json::Error) -> KeyringError {
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => {
            let msg = e.to_string();
            let detail = if msg.starts_with("missing field") || msg.starts_with("unknown field") {
                format!(": {}", msg.split(" at line").next().unwrap_or(&msg))
            } else {
                String::new()
            };
            KeyringError::Schema {
                line,
                column,
                detail,
            }
        }
        _ => KeyringError::Syntax { line, column },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_keys_differ_by_key_salt_and_info() {
        let mut ring = Keyring::generate(KeyId::new("a").unwrap()).unwrap();
        ring.rotate(Some(KeyId::new("b").unwrap())).unwrap();
        let (a, b) = (KeyId::new("a").unwrap(), KeyId::new("b").unwrap());
        let k = |id: &KeyId, salt: &[u8], info: &[u8]| *ring.derive_key(id, salt, info).unwrap();
        assert_eq!(k(&a, b"s", b"i"), k(&a, b"s", b"i"));
        assert_ne!(k(&a, b"s", b"i"), k(&b, b"s", b"i"));
        assert_ne!(k(&a, b"s", b"i"), k(&a, b"t", b"i"));
        assert_ne!(k(&a, b"s", b"i"), k(&a, b"s", b"j"));
        assert!(
            ring.derive_key(&KeyId::new("c").unwrap(), b"s", b"i")
                .is_none()
        );
    }

    use super::*;

    fn id(s: &str) -> KeyId {
        KeyId::new(s).unwrap()
    }

    #[test]
    fn key_ids() {
        for ok in ["k1", "kek-2026.01_a", "a12345678", "K"] {
            assert!(KeyId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1k",
            "-k",
            "k 1",
            "ké",
            "k4111111111111111",
            &"k".repeat(33),
        ] {
            assert!(KeyId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_roundtrip_keeps_keys_and_active() {
        let mut ring = Keyring::generate(id("k1")).unwrap();
        ring.rotate(None).unwrap();
        assert_eq!(ring.active_key_id(), id("k2"));
        let back = Keyring::from_json(&ring.to_json()).unwrap();
        assert_eq!(back.active_key_id(), id("k2"));
        assert_eq!(
            back.key_ids().cloned().collect::<Vec<_>>(),
            [id("k1"), id("k2")]
        );
        let aad = b"aad";
        let dek = [7u8; KEY_LEN];
        let wrapped = ring.wrap_dek(&id("k1"), &dek, aad).unwrap();
        assert_eq!(*back.unwrap_dek(&id("k1"), &wrapped, aad).unwrap(), dek);
        assert!(matches!(
            back.unwrap_dek(&id("k2"), &wrapped, aad),
            Err(SealError::Tampered)
        ));
        assert!(matches!(
            back.unwrap_dek(&id("k1"), &wrapped, b"other"),
            Err(SealError::Tampered)
        ));
        assert!(matches!(
            back.unwrap_dek(&id("k9"), &wrapped, aad),
            Err(SealError::UnknownKeyId(_))
        ));
        assert_eq!(ring.wrap_count(&id("k1")), Some(1));
    }

    #[test]
    fn rotate_refuses_a_duplicate_id() {
        let mut ring = Keyring::generate(id("k1")).unwrap();
        assert!(matches!(
            ring.rotate(Some(id("k1"))),
            Err(KeyringError::DuplicateKeyId(_))
        ));
        assert_eq!(ring.rotate(None).unwrap(), id("k2"));
    }

    #[test]
    fn bad_files_are_refused_without_quoting_keys() {
        let ring = Keyring::generate(id("k1")).unwrap();
        let good = String::from_utf8(ring.to_json().to_vec()).unwrap();
        let secret = good
            .split("\"key\": \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();

        let cases = [
            good.replace("\"version\": 1", "\"version\": 2"),
            good.replace(&secret, &secret[..20]),
            good.replace("\"active\": \"k1\"", "\"active\": \"k7\""),
            good.replace(&format!("\"{secret}\""), &format!("[\"{secret}\"]")),
            good.replace(
                &format!("\"key\": \"{secret}\""),
                &format!("\"key\": 12, \"x\": \"{secret}\""),
            ),
            good.replace("{", "{\"extra\": 1,"),
            good[..good.len() / 2].to_owned(),
            "not json".to_owned(),
        ];
        for text in cases {
            let err = Keyring::from_json(text.as_bytes()).unwrap_err().to_string();
            assert!(!err.contains(&secret[..10]), "{err}");
        }
    }

    #[test]
    fn write_new_is_0600_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let ring = Keyring::generate(id("k1")).unwrap();
        ring.write_new(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            ring.write_new(&path),
            Err(KeyringError::Exists(_))
        ));
        let mut back = Keyring::from_file(&path).unwrap();
        back.rotate(None).unwrap();
        back.replace_file(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Keyring::from_file(&path).unwrap().active_key_id(), id("k2"));
    }
}
