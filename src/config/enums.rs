//! The enum-valued directives (`maxmemory-policy`, `loglevel`, `appendfsync`): their values
//! in Valkey's order, which is also the order Valkey lists them in its error message.

use std::fmt;
use std::str::FromStr;

/// An enum-valued directive. The table stores a value as its index in [`ConfigEnum::ALL`]
/// and checks and renders it through [`ConfigEnum::NAMES`] (same order).
pub(super) trait ConfigEnum: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    const NAMES: &'static [&'static str];

    fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    fn parse_bytes(s: &[u8]) -> Option<Self> {
        position(Self::NAMES, s).map(Self::from_index)
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&v| v == self).unwrap_or(0)
    }

    fn from_index(i: usize) -> Self {
        Self::ALL[i.min(Self::ALL.len() - 1)]
    }

    /// Valkey's `enumConfigSet` error text.
    fn error() -> String {
        error(Self::NAMES)
    }
}

/// The index of `s` among `names`, case-insensitively.
pub(super) fn position(names: &[&str], s: &[u8]) -> Option<usize> {
    names
        .iter()
        .position(|n| n.as_bytes().eq_ignore_ascii_case(s))
}

/// Valkey's `enumConfigSet` error text for these names.
pub(super) fn error(names: &[&str]) -> String {
    format!(
        "argument(s) must be one of the following: {}",
        names.join(", ")
    )
}

macro_rules! config_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl ConfigEnum for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            const NAMES: &'static [&'static str] = &[$($name),+];
        }

        impl $ty {
            /// The directive value, lowercase, as `CONFIG GET` and `INFO` show it.
            pub fn as_str(self) -> &'static str {
                self.name()
            }

            /// Case-insensitive parse of a directive value.
            pub fn parse(s: &[u8]) -> Option<Self> {
                Self::parse_bytes(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s.as_bytes()).ok_or_else(Self::error)
            }
        }
    };
}

/// `maxmemory-policy`: what to do when a write would exceed `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MaxmemoryPolicy {
    /// Refuse writes that need memory (`-OOM`).
    #[default]
    NoEviction,
    AllKeysLru,
    VolatileLru,
    AllKeysLfu,
    VolatileLfu,
    AllKeysRandom,
    VolatileRandom,
    VolatileTtl,
}

config_enum!(MaxmemoryPolicy {
    VolatileLru => "volatile-lru",
    VolatileLfu => "volatile-lfu",
    VolatileRandom => "volatile-random",
    VolatileTtl => "volatile-ttl",
    AllKeysLru => "allkeys-lru",
    AllKeysLfu => "allkeys-lfu",
    AllKeysRandom => "allkeys-random",
    NoEviction => "noeviction",
});

/// `loglevel`: Valkey's five verbosity levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    Debug,
    Verbose,
    #[default]
    Notice,
    Warning,
    Nothing,
}

config_enum!(LogLevel {
    Debug => "debug",
    Verbose => "verbose",
    Notice => "notice",
    Warning => "warning",
    Nothing => "nothing",
});

impl LogLevel {
    /// The `tracing` filter for this level: debug → TRACE, verbose → DEBUG,
    /// notice → INFO, warning → WARN, nothing → OFF.
    pub fn level_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Debug => LevelFilter::TRACE,
            LogLevel::Verbose => LevelFilter::DEBUG,
            LogLevel::Notice => LevelFilter::INFO,
            LogLevel::Warning => LevelFilter::WARN,
            LogLevel::Nothing => LevelFilter::OFF,
        }
    }
}

/// `appendfsync`: when the append-only file is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AppendFsync {
    Always,
    #[default]
    EverySec,
    No,
}

config_enum!(AppendFsync {
    EverySec => "everysec",
    Always => "always",
    No => "no",
});

/// `tls-auth-clients`: whether a client on the TLS port must show a certificate signed by
/// `tls-ca-cert-file`/`tls-ca-cert-dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TlsAuthClients {
    /// No certificate is asked for.
    No,
    /// A valid certificate is required (Valkey's default).
    #[default]
    Yes,
    /// A certificate is asked for; a client without one is served, one with an invalid
    /// one is refused.
    Optional,
}

config_enum!(TlsAuthClients {
    No => "no",
    Yes => "yes",
    Optional => "optional",
});

/// `card-pan-guard`: what a write storing a plaintext card number gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CardPanGuard {
    /// Not checked.
    #[default]
    No,
    /// Written, counted, logged and audited.
    Warn,
    /// Not written: an error reply.
    Refuse,
}

config_enum!(CardPanGuard {
    No => "no",
    Warn => "warn",
    Refuse => "refuse",
});

/// `log-format`: how a log line is laid out (Valkey's two, and JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    #[default]
    Legacy,
    Logfmt,
    Json,
}

config_enum!(LogFormat {
    Legacy => "legacy",
    Logfmt => "logfmt",
    Json => "json",
});

/// `log-timestamp-format`: how a log line's time is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LogTimestampFormat {
    #[default]
    Legacy,
    Iso8601,
    Milliseconds,
}

config_enum!(LogTimestampFormat {
    Legacy => "legacy",
    Iso8601 => "iso8601",
    Milliseconds => "milliseconds",
});
