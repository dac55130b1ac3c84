//! `keygen` and `rotate`: making and extending keyring files.

use std::path::Path;
use std::process::ExitCode;

use card::{KeyId, KeyProvider, Keyring};

use crate::error::CliError;

/// Writes a new keyring with one key, `id`, to `out` (0600, never over an existing file).
pub fn keygen(out: &Path, id: &str) -> Result<ExitCode, CliError> {
    let keyring = Keyring::generate(KeyId::new(id)?)?;
    keyring.write_new(out)?;
    eprintln!(
        "tallykv-card: wrote {} (active key {id}); keep it secret, keep a backup",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Adds a key to the keyring at `path` and makes it active, replacing the file atomically.
pub fn rotate(path: &Path, id: Option<&str>) -> Result<ExitCode, CliError> {
    let mut keyring = Keyring::from_file(path)?;
    let previous = keyring.active_key_id();
    let id = keyring.rotate(id.map(KeyId::new).transpose()?)?;
    keyring.replace_file(path)?;
    eprintln!(
        "tallykv-card: {} now seals under {id} (was {previous}); run rewrap to move existing values",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
