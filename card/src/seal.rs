//! Sealing a value where it lives: envelope encryption bound to a Redis key and hash field.
//!
//! Every value gets a fresh random 256-bit data key (DEK) and is encrypted with AES-256-GCM
//! under it; the DEK is wrapped by the active key-encryption key (a `KeyProvider`). The
//! associated data of both encryptions names the envelope's format version and key id and the
//! Redis key and field, so a sealed value copied anywhere else does not open. The byte layout
//! is specified in FORMAT.md; this file is its reference implementation.

use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keyring::{KEY_LEN, KeyId, KeyProvider};

/// The first bytes of every sealed value ("tkc", tallykv card).
pub const MAGIC: [u8; 3] = *b"tkc";
/// The format this build writes and reads.
pub const VERSION: u8 = 1;
/// AES-GCM's tag length.
const TAG_LEN: usize = 16;

/// Why a value could not be sealed or opened. Never carries plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed value (it does not start with the tallykv-card envelope's \"tkc\")")]
    NotSealed,
    #[error("unknown sealed-value format version {0} (this build reads version 1)")]
    UnknownVersion(u8),
    #[error("the value is sealed under key id '{0}', which this keyring does not hold")]
    UnknownKeyId(KeyId),
    #[error(
        "the sealed value does not open: it was altered, copied from another key or field, or sealed under another key with the same id"
    )]
    Tampered,
    #[error(
        "key '{0}' has wrapped 2^32 data keys in this process, NIST's limit for random nonces: rotate to a new key"
    )]
    KeyExhausted(KeyId),
    #[error("a key or field name of 4 GiB or more cannot be sealed")]
    NameTooLong,
    #[error("the key provider returned a wrapped data key longer than 65535 bytes")]
    WrappedKeyTooLong,
    #[error("the operating system's random source failed")]
    Random,
    #[error("AES-GCM refused the input (over 64 GiB?)")]
    Crypto,
    #[error("key provider: {0}")]
    Provider(Box<dyn std::error::Error + Send + Sync>),
}

/// A sealed value's parts, as FORMAT.md lays them out.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub version: u8,
    pub key_id: KeyId,
    pub wrapped_dek: &'a [u8],
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub body: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Splits a sealed value into its parts without decrypting anything: `NotSealed` when it
    /// does not start with the magic, `UnknownVersion` for another version byte, `Tampered`
    /// when the lengths do not add up.
    pub fn parse(sealed: &'a [u8]) -> Result<Envelope<'a>, SealError> {
        if sealed.len() < MAGIC.len() + 1 || sealed[..MAGIC.len()] != MAGIC {
            return Err(SealError::NotSealed);
        }
        let version = sealed[MAGIC.len()];
        if version != VERSION {
            return Err(SealError::UnknownVersion(version));
        }
        let mut rest = &sealed[MAGIC.len() + 1..];
        let id_len = take(&mut rest, 1)?[0] as usize;
        let key_id = std::str::from_utf8(take(&mut rest, id_len)?)
            .ok()
            .and_then(|s| KeyId::new(s).ok())
            .ok_or(SealError::Tampered)?;
        let wrapped_len = u16::from_be_bytes(take(&mut rest, 2)?.try_into().expect("took 2 bytes"));
        if wrapped_len == 0 {
            return Err(SealError::Tampered);
        }
        let wrapped_dek = take(&mut rest, wrapped_len as usize)?;
        let nonce = take(&mut rest, NONCE_LEN)?
            .try_into()
            .expect("took NONCE_LEN bytes");
        if rest.len() < TAG_LEN {
            return Err(SealError::Tampered);
        }
        Ok(Envelope {
            version,
            key_id,
            wrapped_dek,
            nonce,
            body: rest,
        })
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], SealError> {
    if rest.len() < n {
        return Err(SealError::Tampered);
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// True when `value` starts like a sealed value (it may still fail to open).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(&MAGIC)
}

/// The associated data of both encryptions in an envelope (FORMAT.md):
/// `magic ‖ version ‖ id_len ‖ key_id ‖ u32be(len key) ‖ key ‖ u32be(len field) ‖ field`.
pub fn associated_data(key_id: &KeyId, key: &[u8], field: &[u8]) -> Result<Vec<u8>, SealError> {
    let key_len = u32::try_from(key.len()).map_err(|_| SealError::NameTooLong)?;
    let field_len = u32::try_from(field.len()).map_err(|_| SealError::NameTooLong)?;
    let id = key_id.as_str().as_bytes();
    let mut aad = Vec::with_capacity(MAGIC.len() + 2 + id.len() + 8 + key.len() + field.len());
    aad.extend_from_slice(&MAGIC);
    aad.push(VERSION);
    aad.push(id.len() as u8); // a KeyId is at most 32 bytes
    aad.extend_from_slice(id);
    aad.extend_from_slice(&key_len.to_be_bytes());
    aad.extend_from_slice(key);
    aad.extend_from_slice(&field_len.to_be_bytes());
    aad.extend_from_slice(field);
    Ok(aad)
}

/// Seals and opens values under a `KeyProvider`'s keys. Cheap to clone; shareable between
/// threads.
#[derive(Clone)]
pub struct Sealer {
    provider: Arc<dyn KeyProvider>,
    rng: SystemRandom,
}

impl Sealer {
    pub fn new(provider: impl KeyProvider + 'static) -> Sealer {
        Sealer::from_arc(Arc::new(provider))
    }

    pub fn from_arc(provider: Arc<dyn KeyProvider>) -> Sealer {
        Sealer {
            provider,
            rng: SystemRandom::new(),
        }
    }

    pub fn provider(&self) -> &dyn KeyProvider {
        &*self.provider
    }

    /// Seals `plaintext` to live in hash `field` of Redis `key` (for a plain string value,
    /// by convention the empty field), under the provider's active key.
    pub fn seal(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let key_id = self.provider.active_key_id();
        let aad = associated_data(&key_id, key.as_ref(), field.as_ref())?;
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut dek[..]).map_err(|_| SealError::Random)?;
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let wrapped = self.provider.wrap_dek(&key_id, &dek, &aad)?;
        assemble(&key_id, &aad, &wrapped, &dek, nonce, plaintext)
    }

    /// Opens a value sealed for hash `field` of Redis `key`. The plaintext is wiped when the
    /// returned buffer is dropped.
    pub fn open(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let env = Envelope::parse(sealed)?;
        let aad = associated_data(&env.key_id, key.as_ref(), field.as_ref())?;
        let dek = self
            .provider
            .unwrap_dek(&env.key_id, env.wrapped_dek, &aad)?;
        let mut buf = Zeroizing::new(env.body.to_vec());
        let aead = data_key(&dek);
        let len = aead
            .open_in_place(
                Nonce::assume_unique_for_key(env.nonce),
                Aad::from(&aad),
                &mut buf[..],
            )
            .map_err(|_| SealError::Tampered)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Re-seals a value under the active key with a fresh data key: `None` when it is already
    /// sealed under the active key. The plaintext exists only inside this call.
    pub fn reseal(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, SealError> {
        let env = Envelope::parse(sealed)?;
        if env.key_id == self.provider.active_key_id() {
            return Ok(None);
        }
        let plaintext = self.open(key.as_ref(), field.as_ref(), sealed)?;
        self.seal(key, field, &plaintext).map(Some)
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("active", &self.provider.active_key_id())
            .finish_non_exhaustive()
    }
}

fn data_key(dek: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte slice is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, dek).expect("32-byte AES-256 key"))
}

/// Lays out an envelope and encrypts `plaintext` into it under `dek`.
fn assemble(
    key_id: &KeyId,
    aad: &[u8],
    wrapped: &[u8],
    dek: &[u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let wrapped_len = u16::try_from(wrapped.len()).map_err(|_| SealError::WrappedKeyTooLong)?;
    let id = key_id.as_str().as_bytes();
    let header = MAGIC.len() + 1 + 1 + id.len() + 2 + wrapped.len() + NONCE_LEN;
    // Sized up front: the plaintext is encrypted where it was copied, never reallocated.
    let mut out = Vec::with_capacity(header + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(id.len() as u8); // a KeyId is at most 32 bytes
    out.extend_from_slice(id);
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(wrapped);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = data_key(dek)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[header..],
        )
        .map_err(|_| SealError::Crypto)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// The random parts of a seal, fixed: what the test vectors are made with.
#[cfg(test)]
pub(crate) struct FixedRandom {
    pub dek: [u8; KEY_LEN],
    pub wrap_nonce: [u8; NONCE_LEN],
    pub data_nonce: [u8; NONCE_LEN],
}

/// The deterministic seal the test vectors are made with: a given DEK and given nonces
/// instead of random ones. Never for production: a repeated nonce under a key breaks GCM.
#[cfg(test)]
pub(crate) fn seal_fixed(
    keyring: &crate::keyring::Keyring,
    key_id: &KeyId,
    fixed: &FixedRandom,
    key: &[u8],
    field: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let aad = associated_data(key_id, key, field)?;
    let wrapped = keyring.wrap_with_nonce(key_id, &fixed.dek, &aad, fixed.wrap_nonce)?;
    assemble(
        key_id,
        &aad,
        &wrapped,
        &fixed.dek,
        fixed.data_nonce,
        plaintext,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;
    use proptest::prelude::*;

    fn id(s: &str) -> KeyId {
        KeyId::new(s).unwrap()
    }

    fn keyring() -> Arc<Keyring> {
        Arc::new(Keyring::generate(id("k1")).unwrap())
    }

    #[test]
    fn roundtrip_and_layout() {
        let sealer = Sealer::new(keyring());
        let sealed = sealer.seal("card:42", "pan", b"4111111111111111").unwrap();
        assert!(is_sealed(&sealed));
        // magic 3 + version 1 + id_len 1 + "k1" 2 + wrapped_len 2 + wrapped 60 + nonce 12 + 16 + tag 16
        assert_eq!(sealed.len(), 3 + 1 + 1 + 2 + 2 + 60 + 12 + 16 + 16);
        let env = Envelope::parse(&sealed).unwrap();
        assert_eq!(env.key_id, id("k1"));
        assert_eq!(&sealed[..4], b"tkc\x01");
        assert_eq!(
            &*sealer.open("card:42", "pan", &sealed).unwrap(),
            b"4111111111111111"
        );
        assert_eq!(
            &*sealer
                .open(b"k", b"", &sealer.seal(b"k", b"", b"").unwrap())
                .unwrap(),
            b""
        );
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let sealer = Sealer::new(keyring());
        assert_ne!(
            sealer.seal("k", "f", b"x").unwrap(),
            sealer.seal("k", "f", b"x").unwrap()
        );
    }

    #[test]
    fn a_value_moved_to_another_key_or_field_does_not_open() {
        let sealer = Sealer::new(keyring());
        let sealed = sealer.seal("card:42", "pan", b"secret").unwrap();
        for (key, field) in [
            ("card:43", "pan"),
            ("card:42", "pan2"),
            ("card:42pan", ""),
            ("card:4", "2pan"),
            ("pan", "card:42"),
        ] {
            assert!(
                matches!(sealer.open(key, field, &sealed), Err(SealError::Tampered)),
                "{key} {field}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let sealer = Sealer::new(keyring());
        let sealed = sealer
            .seal(
                "card:1",
                "blob",
                br#"{"pan":"4111111111111111","exp":"12/30"}"#,
            )
            .unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                let err = sealer.open("card:1", "blob", &bad).unwrap_err();
                let expected = match i {
                    0..=2 => matches!(err, SealError::NotSealed),
                    3 => matches!(err, SealError::UnknownVersion(_)),
                    _ => matches!(err, SealError::Tampered | SealError::UnknownKeyId(_)),
                };
                assert!(expected, "byte {i} bit {bit:#x}: {err:?}");
            }
        }
    }

    #[test]
    fn unknown_version_and_not_sealed() {
        let sealer = Sealer::new(keyring());
        let mut sealed = sealer.seal("k", "f", b"v").unwrap();
        sealed[3] = 2;
        assert!(matches!(
            sealer.open("k", "f", &sealed),
            Err(SealError::UnknownVersion(2))
        ));
        assert!(matches!(
            sealer.open("k", "f", b"4111111111111111"),
            Err(SealError::NotSealed)
        ));
        assert!(matches!(
            sealer.open("k", "f", b""),
            Err(SealError::NotSealed)
        ));
        assert!(matches!(
            sealer.open("k", "f", b"tkc"),
            Err(SealError::NotSealed)
        ));
        assert!(matches!(
            sealer.open("k", "f", b"tkc\x01"),
            Err(SealError::Tampered)
        ));
    }

    #[test]
    fn wrong_or_unknown_key_id() {
        let sealer = Sealer::new(keyring());
        let sealed = sealer.seal("k", "f", b"v").unwrap();
        // Another keyring that has no key k1.
        let other = Sealer::new(Keyring::generate(id("k2")).unwrap());
        match other.open("k", "f", &sealed) {
            Err(SealError::UnknownKeyId(k)) => assert_eq!(k, id("k1")),
            other => panic!("{other:?}"),
        }
        // Another keyring with a different key under the same id.
        let same_id = Sealer::new(Keyring::generate(id("k1")).unwrap());
        assert!(matches!(
            same_id.open("k", "f", &sealed),
            Err(SealError::Tampered)
        ));
    }

    #[test]
    fn reseal_moves_values_to_the_active_key() {
        let mut ring = Keyring::generate(id("k1")).unwrap();
        let old = Sealer::new(Keyring::from_json(&ring.to_json()).unwrap());
        let sealed = old.seal("k", "f", b"v").unwrap();
        assert!(
            old.reseal("k", "f", &sealed).unwrap().is_none(),
            "already under the active key"
        );
        ring.rotate(None).unwrap();
        let new = Sealer::new(ring);
        let resealed = new.reseal("k", "f", &sealed).unwrap().unwrap();
        assert_eq!(Envelope::parse(&resealed).unwrap().key_id, id("k2"));
        assert_eq!(&*new.open("k", "f", &resealed).unwrap(), b"v");
        assert!(matches!(
            old.open("k", "f", &resealed),
            Err(SealError::UnknownKeyId(_))
        ));
        assert!(new.reseal("k", "f", &resealed).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn roundtrip(key in proptest::collection::vec(any::<u8>(), 0..64),
                     field in proptest::collection::vec(any::<u8>(), 0..64),
                     plaintext in proptest::collection::vec(any::<u8>(), 0..512)) {
            let sealer = Sealer::new(keyring());
            let sealed = sealer.seal(&key, &field, &plaintext).unwrap();
            prop_assert_eq!(&*sealer.open(&key, &field, &sealed).unwrap(), &plaintext[..]);
            // Any other location fails.
            let mut other = field.clone();
            other.push(0);
            prop_assert!(sealer.open(&key, &other, &sealed).is_err());
        }

        #[test]
        fn truncation_or_garbage_is_an_error_never_a_panic(
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..200,
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let sealer = Sealer::new(keyring());
            let sealed = sealer.seal("k", "f", &plaintext).unwrap();
            let cut = cut.min(sealed.len() - 1);
            prop_assert!(sealer.open("k", "f", &sealed[..cut]).is_err());
            let mut garbage = b"tkc\x01".to_vec();
            garbage.extend_from_slice(&tail);
            prop_assert!(sealer.open("k", "f", &garbage).is_err());
        }
    }
}
