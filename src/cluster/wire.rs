//! The encoding of what nodes send each other and what the Raft log and snapshots keep:
//! postcard (maintained, compact, serde) behind a format version byte, so a reader meets a
//! version it does not know with a clear error instead of misreading it. bincode, used before,
//! is unmaintained (RUSTSEC-2025-0141) and positional with no version; data dirs it wrote are
//! refused at start (see `cluster::start`).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version of every postcard encoding below.
pub const VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for std::io::Error {
    fn from(e: WireError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.0)
    }
}

/// `value`, encoded after the version byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // postcard fails only on types it cannot represent (none of ours) or a full fixed
    // buffer (we give it a growing Vec).
    postcard::to_io(value, &mut out).expect("postcard encodes every cluster type into a Vec");
    out
}

/// Decodes what [`encode`] wrote; `what` names it in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, WireError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| WireError(format!("undecodable {what}: {e}")))
        }
        Some((&v, _)) => Err(WireError(format!(
            "{what} has encoding version {v}; this build reads version {VERSION} (written by a \
             newer tallykv?)"
        ))),
        None => Err(WireError(format!("{what} is empty"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_roundtrip_and_refusals() {
        let v = (7u64, "x".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(&v);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes, "t").unwrap(), v);
        let mut newer = bytes.clone();
        newer[0] = 9;
        let e = decode::<(u64, String, Vec<u8>)>(&newer, "the test value").unwrap_err();
        assert!(e.0.contains("version 9"), "{e}");
        assert!(decode::<(u64, String, Vec<u8>)>(&bytes[..3], "t").is_err());
        assert!(decode::<u64>(&[], "t").is_err());
    }
}
