//! `tallykv-card`: the card crate's command line — keys, sealing and opening through pipes,
//! fingerprints, masking, and two jobs against a live server or cluster: `rewrap` (move every
//! sealed field to the active key) and `scan` (find plaintext PANs).
//!
//! Exit status: 0 done; 1 `scan` found a plaintext PAN, or `rewrap` left a field it could not
//! move; 2 an error (bad arguments, unreadable keyring, unreachable server).

mod error;
mod keys;
mod rewrap;
mod scan;
mod server;
mod text;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use card::{Keyring, MaskPolicy};
use clap::{Args, Parser, Subcommand};

use crate::error::CliError;
use crate::server::{Cursor, Target};

#[derive(Parser)]
#[command(
    name = "tallykv-card",
    version,
    about = "Card data helpers for tallykv and any Redis/Valkey server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new keyring file (one active key-encryption key and a fingerprint key), mode 0600.
    Keygen {
        /// The file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The key-encryption key's id.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Add a new key-encryption key to a keyring file and make it the active one.
    Rotate {
        #[arg(long, value_name = "FILE")]
        keyring: PathBuf,
        /// The new key's id (default: k<N>, the next free number).
        #[arg(long)]
        id: Option<String>,
    },
    /// Seal stdin for hash FIELD of KEY (the empty field for a string key) to stdout.
    Seal {
        key: OsString,
        field: OsString,
        #[command(flatten)]
        keyring: KeyringArg,
        /// Write the sealed value as one line of standard base64 instead of raw bytes.
        #[arg(long)]
        base64: bool,
    },
    /// Open a value sealed for hash FIELD of KEY from stdin to stdout.
    Open {
        key: OsString,
        field: OsString,
        #[command(flatten)]
        keyring: KeyringArg,
        /// Read the sealed value as standard base64 text instead of raw bytes.
        #[arg(long)]
        base64: bool,
    },
    /// Print the keyed fingerprint of each card number on stdin (one per line).
    Fingerprint {
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Print each card number on stdin (one per line) masked.
    Mask {
        /// last4 (************1111) or first6-last4 (411111******1111).
        #[arg(long, default_value_t = MaskPolicy::Last4)]
        policy: MaskPolicy,
    },
    /// Re-seal every sealed hash field (and sealed string value) not under the active key.
    Rewrap {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        keyring: KeyringArg,
        #[command(flatten)]
        walk: WalkArgs,
    },
    /// Find plaintext card numbers in key names, values, fields and members; exit 1 if any.
    Scan {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        walk: WalkArgs,
        /// Report only numbers that also match a card brand's range and length (drops
        /// Luhn-valid timestamps and ids).
        #[arg(long)]
        brands_only: bool,
    },
}

#[derive(Args)]
struct KeyringArg {
    /// The keyring file (default: the keyring JSON in $TALLYKV_CARD_KEYRING).
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
}

impl KeyringArg {
    fn load(&self) -> Result<Keyring, CliError> {
        Ok(match &self.keyring {
            Some(path) => Keyring::from_file(path)?,
            None => Keyring::from_env()?,
        })
    }
}

#[derive(Args)]
struct ServerArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// The server is a cluster node: walk every primary in CLUSTER SLOTS.
    #[arg(long)]
    cluster: bool,
    /// ACL user (the password is read from $REDISCLI_AUTH, as redis-cli reads it).
    #[arg(long)]
    user: Option<String>,
}

impl ServerArgs {
    fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
            cluster: self.cluster,
            user: self.user.clone(),
            password: std::env::var("REDISCLI_AUTH").ok(),
        }
    }
}

#[derive(Args)]
struct WalkArgs {
    /// Only keys matching this SCAN pattern.
    #[arg(long = "match", default_value = "*", value_name = "PATTERN")]
    pattern: String,
    /// Resume from a cursor a previous run printed (NODE:CURSOR).
    #[arg(long, default_value = "0:0")]
    cursor: Cursor,
    /// At most this many keys per second (default: as fast as the server answers).
    #[arg(long, value_name = "KEYS_PER_SECOND")]
    rate: Option<f64>,
    /// SCAN's COUNT hint.
    #[arg(long, default_value_t = 100)]
    count: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tallykv-card: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Keygen { out, id } => keys::keygen(&out, &id),
        Command::Rotate { keyring, id } => keys::rotate(&keyring, id.as_deref()),
        Command::Seal {
            key,
            field,
            keyring,
            base64,
        } => text::seal(keyring.load()?, &key, &field, base64),
        Command::Open {
            key,
            field,
            keyring,
            base64,
        } => text::open(keyring.load()?, &key, &field, base64),
        Command::Fingerprint { keyring } => text::fingerprint(&keyring.load()?),
        Command::Mask { policy } => text::mask(policy),
        Command::Rewrap {
            server,
            keyring,
            walk,
        } => rewrap::run(&server.target(), keyring.load()?, &walk.into()),
        Command::Scan {
            server,
            walk,
            brands_only,
        } => scan::run(&server.target(), &walk.into(), brands_only),
    }
}

impl From<WalkArgs> for server::Walk {
    fn from(w: WalkArgs) -> server::Walk {
        server::Walk {
            pattern: w.pattern,
            start: w.cursor,
            rate: w.rate,
            count: w.count,
        }
    }
}
