//! The CLI's errors: each says what failed in the words of the command that failed.

use card::{KeyringError, PanError, SealError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    KeyId(#[from] card::keyring::BadKeyId),
    #[error("line {line}: {source}")]
    Pan { line: usize, source: PanError },
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    #[error("writing stdout: {0}")]
    Stdout(std::io::Error),
    #[error("stdin is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("{addr}: {source}")]
    Redis {
        addr: String,
        source: redis::RedisError,
    },
    #[error("{addr}: unexpected CLUSTER SLOTS reply")]
    ClusterSlots { addr: String },
    #[error(
        "the cursor names node {node}, but the server has {nodes} (resume against the same topology)"
    )]
    CursorNode { node: usize, nodes: usize },
    #[error("--rate must be a positive number of keys per second")]
    Rate,
}

/// Attaches the server's address to a redis-rs error.
pub trait At<T> {
    fn at(self, addr: &str) -> Result<T, CliError>;
}

impl<T> At<T> for redis::RedisResult<T> {
    fn at(self, addr: &str) -> Result<T, CliError> {
        self.map_err(|source| CliError::Redis {
            addr: addr.to_owned(),
            source,
        })
    }
}
