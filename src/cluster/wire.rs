//! The encoding of what nodes send each other and what the Raft log and snapshots keep:
//! postcard (maintained, compact, serde) behind a format version byte, so a reader meets a
//! version it does not know with a clear error instead of misreading it. bincode, used before,
//! is unmaintained (RUSTSEC-2025-0141) and positional with no version; data dirs it wrote are
//! refused at start (see `cluster::start`).
//!
//! Versions: 1 wrote `NodeInfo` without its TLS port; 2 (this build) adds it. Data dirs and
//! logs written with version 1 still decode: postcard is not self-describing, so a type that
//! changed between versions asks [`decoding_version`] which layout it is reading (see
//! `NodeInfo`'s `Deserialize`). Every other type reads the same in both.

use std::cell::Cell;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version of every postcard encoding below: what this build writes.
pub const VERSION: u8 = 2;

/// The oldest version this build still reads.
const OLDEST: u8 = 1;

thread_local! {
    /// The version of the bytes [`decode`] is reading on this thread (nested decodes restore
    /// the outer one); [`VERSION`] outside any decode.
    static DECODING: Cell<u8> = const { Cell::new(VERSION) };
}

/// The encoding version being decoded on this thread, for a type whose layout changed
/// between versions; [`VERSION`] when called outside [`decode`].
pub fn decoding_version() -> u8 {
    DECODING.with(Cell::get)
}

/// Sets [`DECODING`] while it lives; restores the previous value when dropped (even if a
/// deserializer panics).
struct Decoding(u8);

impl Decoding {
    fn enter(version: u8) -> Decoding {
        Decoding(DECODING.with(|d| d.replace(version)))
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        DECODING.with(|d| d.set(self.0));
    }
}

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
        Some((&v, rest)) if (OLDEST..=VERSION).contains(&v) => {
            let _version = Decoding::enter(v);
            postcard::from_bytes(rest).map_err(|e| WireError(format!("undecodable {what}: {e}")))
        }
        Some((&v, _)) => Err(WireError(format!(
            "{what} has encoding version {v}; this build reads versions {OLDEST} to {VERSION} \
             (written by a newer tallykv?)"
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

    use crate::cluster::types::NodeInfo;

    /// Something holding a NodeInfo with a field after it, as the log, snapshots and the meta
    /// state do (a membership, a cluster map): the field after must read right too.
    type Holder = (u64, Vec<NodeInfo>, u16);

    fn node(tls_port: u16) -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            host: "127.0.0.1".into(),
            port: 7000,
            bus_port: 17000,
            tls_port,
        }
    }

    /// `(7, [node], 9)` as version 1 (the build before `tls_port`) wrote it.
    const V1_BYTES: &[u8] = &[
        1, // version
        7, // u64
        1, // one node
        2, b'n', b'1', // name
        9, b'1', b'2', b'7', b'.', b'0', b'.', b'0', b'.', b'1', // host
        0xd8, 0x36, // port 7000 (varint)
        0xe8, 0x84, 0x01, // bus_port 17000
        9,    // u16
    ];

    #[test]
    fn version_1_node_info_decodes_without_a_tls_port() {
        // The literal is what version 1's layout gives (a mirror of the old struct).
        #[derive(Serialize)]
        struct V1 {
            name: String,
            host: String,
            port: u16,
            bus_port: u16,
        }
        let old = (
            7u64,
            vec![V1 {
                name: "n1".into(),
                host: "127.0.0.1".into(),
                port: 7000,
                bus_port: 17000,
            }],
            9u16,
        );
        let mut written = vec![1];
        postcard::to_io(&old, &mut written).unwrap();
        assert_eq!(written, V1_BYTES);

        let read: Holder = decode(V1_BYTES, "t").unwrap();
        assert_eq!(read, (7, vec![node(0)], 9));
        assert_eq!(decoding_version(), VERSION, "restored after the decode");
    }

    #[test]
    fn version_2_roundtrips_the_tls_port_and_version_3_is_refused() {
        let v: Holder = (7, vec![node(7443), node(0)], 9);
        let bytes = encode(&v);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<Holder>(&bytes, "t").unwrap(), v);
        let mut newer = bytes;
        newer[0] = 3;
        let e = decode::<Holder>(&newer, "the map").unwrap_err();
        assert!(e.0.contains("version 3") && e.0.contains("1 to 2"), "{e}");
    }
}
