//! The pipe commands: `seal`, `open`, `fingerprint`, `mask`. Card data arrives on stdin, never
//! as an argument (arguments are visible to every user of the machine in `ps`).

use std::ffi::OsStr;
use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use card::{Keyring, MaskPolicy, Pan, Sealer};
use zeroize::Zeroizing;

use crate::error::CliError;

fn read_stdin() -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(CliError::Stdin)?;
    Ok(buf)
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CliError::Stdout)
}

pub fn seal(
    keyring: Keyring,
    key: &OsStr,
    field: &OsStr,
    base64: bool,
) -> Result<ExitCode, CliError> {
    let plaintext = read_stdin()?;
    let sealed = Sealer::new(keyring).seal(key.as_bytes(), field.as_bytes(), &plaintext)?;
    if base64 {
        write_stdout(format!("{}\n", STANDARD.encode(&sealed)).as_bytes())?;
    } else {
        write_stdout(&sealed)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn open(
    keyring: Keyring,
    key: &OsStr,
    field: &OsStr,
    base64: bool,
) -> Result<ExitCode, CliError> {
    let input = read_stdin()?;
    let sealed = if base64 {
        STANDARD.decode(input.trim_ascii())?
    } else {
        input.to_vec()
    };
    let plaintext = Sealer::new(keyring).open(key.as_bytes(), field.as_bytes(), &sealed)?;
    write_stdout(&plaintext)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `each` over the card numbers on stdin, one per line, printing one output line per
/// input line; stops at the first line that is not a card number.
fn per_pan(mut each: impl FnMut(&Pan) -> String) -> Result<ExitCode, CliError> {
    let mut out = String::new();
    for (i, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let line = Zeroizing::new(line.map_err(CliError::Stdin)?);
        let pan = Pan::parse_bytes(&line).map_err(|source| CliError::Pan {
            line: i + 1,
            source,
        })?;
        out.push_str(&each(&pan));
        out.push('\n');
    }
    write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn fingerprint(keyring: &Keyring) -> Result<ExitCode, CliError> {
    per_pan(|pan| keyring.fingerprint_key().fingerprint(pan).to_string())
}

pub fn mask(policy: MaskPolicy) -> Result<ExitCode, CliError> {
    per_pan(|pan| pan.masked(policy))
}
