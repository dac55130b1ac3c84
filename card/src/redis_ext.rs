//! redis-rs integration: sealed hash fields on any synchronous redis-rs connection —
//! `Connection`, `cluster::ClusterConnection`, a pooled connection — through one extension
//! trait. The connection only ever carries sealed bytes; keys stay in this process.

use redis::{ConnectionLike, RedisError};
use zeroize::Zeroizing;

use crate::pan::{Pan, PanError};
use crate::seal::{SealError, Sealer};

/// What can be sealed: bytes, text, or a [`Pan`] (sealed as its ASCII digits).
pub trait Sealable {
    fn sealable_bytes(&self) -> &[u8];
}

impl Sealable for [u8] {
    fn sealable_bytes(&self) -> &[u8] {
        self
    }
}

impl<const N: usize> Sealable for [u8; N] {
    fn sealable_bytes(&self) -> &[u8] {
        self
    }
}

impl Sealable for Vec<u8> {
    fn sealable_bytes(&self) -> &[u8] {
        self
    }
}

impl Sealable for str {
    fn sealable_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Sealable for String {
    fn sealable_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Sealable for Pan {
    fn sealable_bytes(&self) -> &[u8] {
        self.expose_digits().as_bytes()
    }
}

/// Why a sealed-field command failed.
#[derive(Debug, thiserror::Error)]
pub enum SealedFieldError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the opened value is not a card number: {0}")]
    NotAPan(#[from] PanError),
}

/// Sealed hash fields on any redis-rs connection. The sealer (which holds or reaches the
/// keys) is passed to each call: an extension of someone else's connection type has nowhere
/// to keep it, and a service usually shares one sealer among all its pooled connections.
///
/// ```no_run
/// use card::{Keyring, Pan, SealedFields, Sealer};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sealer = Sealer::new(Keyring::from_env()?);
/// let mut con = redis::Client::open("redis://127.0.0.1/")?.get_connection()?;
/// let pan: Pan = "4111 1111 1111 1111".parse()?;
/// con.hset_sealed(&sealer, "card:{c42}", "pan", &pan)?;
/// let back = con.hget_open_pan(&sealer, "card:{c42}", "pan")?;
/// assert_eq!(back.map(|p| p.to_string()).as_deref(), Some("************1111"));
/// # Ok(()) }
/// ```
pub trait SealedFields: ConnectionLike + Sized {
    /// `HSET key field <value sealed for key and field>`.
    fn hset_sealed<V: Sealable + ?Sized>(
        &mut self,
        sealer: &Sealer,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        value: &V,
    ) -> Result<(), SealedFieldError> {
        let (key, field) = (key.as_ref(), field.as_ref());
        let sealed = sealer.seal(key, field, value.sealable_bytes())?;
        redis::cmd("HSET")
            .arg(key)
            .arg(field)
            .arg(sealed)
            .exec(self)?;
        Ok(())
    }

    /// `HGET key field`, opened: `None` when the field does not exist. The plaintext is wiped
    /// when the buffer is dropped.
    fn hget_open(
        &mut self,
        sealer: &Sealer,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SealedFieldError> {
        let (key, field) = (key.as_ref(), field.as_ref());
        let sealed: Option<Vec<u8>> = redis::cmd("HGET").arg(key).arg(field).query(self)?;
        Ok(sealed.map(|s| sealer.open(key, field, &s)).transpose()?)
    }

    /// [`SealedFields::hget_open`] of a field that holds a sealed [`Pan`].
    fn hget_open_pan(
        &mut self,
        sealer: &Sealer,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
    ) -> Result<Option<Pan>, SealedFieldError> {
        match self.hget_open(sealer, key, field)? {
            Some(bytes) => Ok(Some(Pan::parse_bytes(&bytes)?)),
            None => Ok(None),
        }
    }
}

impl<C: ConnectionLike> SealedFields for C {}
