//! Keyed fingerprints of PANs: the same card always gives the same short text, nobody without
//! the fingerprint key can tell which card it is, and the text is safe to put in a key name
//! (`vel:{<fingerprint>}:1h`) for velocity counters and de-duplication.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use zeroize::Zeroizing;

use crate::keyring::KEY_LEN;
use crate::pan::Pan;

/// The HMAC-SHA-256 key that fingerprints PANs. Kept apart from every key-encryption key: a
/// fingerprint is not an encryption, and rotating a KEK must not reset every velocity counter.
pub struct FingerprintKey {
    material: Zeroizing<[u8; KEY_LEN]>,
    key: hmac::Key,
}

impl FingerprintKey {
    pub fn from_bytes(material: &[u8; KEY_LEN]) -> FingerprintKey {
        FingerprintKey {
            material: Zeroizing::new(*material),
            key: hmac::Key::new(hmac::HMAC_SHA256, material),
        }
    }

    /// `base64url(HMAC-SHA-256(key, ASCII digits of the PAN))`, without padding: 43 characters
    /// of `A-Z a-z 0-9 - _`. Base64url rather than hex: hex of a digest often holds runs of a
    /// dozen digits, base64url has one of 13 or more with probability about 10^-9.
    pub fn fingerprint(&self, pan: &Pan) -> Fingerprint {
        let tag = hmac::sign(&self.key, pan.expose_digits().as_bytes());
        Fingerprint(URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    pub(crate) fn material(&self) -> &[u8; KEY_LEN] {
        &self.material
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// A PAN's keyed fingerprint (43 characters of base64url).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_card_same_fingerprint_other_key_other_fingerprint() {
        let a = FingerprintKey::from_bytes(&[1; KEY_LEN]);
        let b = FingerprintKey::from_bytes(&[2; KEY_LEN]);
        let pan = Pan::parse("4111 1111 1111 1111").unwrap();
        let same = Pan::parse("4111-1111-1111-1111").unwrap();
        let other = Pan::parse("5555555555554444").unwrap();
        let fp = a.fingerprint(&pan);
        assert_eq!(fp, a.fingerprint(&same));
        assert_ne!(fp, a.fingerprint(&other));
        assert_ne!(fp, b.fingerprint(&pan));
        assert_eq!(fp.as_str().len(), 43);
        assert!(
            fp.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
