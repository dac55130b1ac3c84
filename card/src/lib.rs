//! Card data helpers for Redis/Valkey-compatible servers (tallykv among them), all on the
//! client side: the server never holds a card key.
//!
//! - [`Pan`]: a card number parsed, Luhn-checked, zeroized on drop, printed masked.
//! - [`Sealer`]: AES-256-GCM envelope encryption of a value bound to its Redis key and hash
//!   field, under per-record data keys wrapped by a key-encryption key ([`KeyProvider`],
//!   [`Keyring`]). FORMAT.md specifies the bytes.
//! - [`FingerprintKey`]: HMAC-SHA-256 fingerprints of PANs for velocity counters.
//! - [`MaskPolicy`]: first 6 + last 4, or last 4.
//! - [`SealedFields`]: `hset_sealed` / `hget_open` on any redis-rs connection.
//! - [`rewrap`]: moving one key's sealed values to the active key, compare-and-set.
//! - [`discover`]: finding plaintext PANs in bytes (the CLI's `scan`).
//!
//! This crate may not touch the server's code: it speaks to a server only as a client does.

pub mod discover;
pub mod fingerprint;
pub mod keyring;
pub mod mask;
pub mod pan;
#[cfg(feature = "redis")]
pub mod redis_ext;
#[cfg(feature = "redis")]
pub mod rewrap;
pub mod seal;

#[cfg(test)]
mod vectors;

pub use fingerprint::{Fingerprint, FingerprintKey};
pub use keyring::{KeyId, KeyProvider, Keyring, KeyringError};
pub use mask::MaskPolicy;
pub use pan::{Pan, PanError};
#[cfg(feature = "redis")]
pub use redis_ext::{Sealable, SealedFieldError, SealedFields};
pub use seal::{Envelope, SealError, Sealer};
