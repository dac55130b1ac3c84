//! Startup configuration errors, printed the way valkey-server prints them.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The config file named on the command line, or one it `include`s.
    File(PathBuf),
    /// Config read from standard input (`tallykv -` / `tallykv file -`).
    Stdin,
    /// `--directive value` arguments. Like valkey-server, they are appended to
    /// the file as extra lines, so their line numbers continue after the file's
    /// (with no file, the first option is line 2).
    CommandLine,
}

/// Why the configuration could not be loaded.
///
/// `Display` gives the text valkey-server prints before exiting, without
/// Valkey's leading blank line, e.g.
///
/// ```text
/// *** FATAL CONFIG FILE ERROR (Version 0.1.0) ***
/// Reading the configuration file '/etc/tallykv.conf', at line 3
/// >>> 'maxmemroy 1gb'
/// Bad directive or wrong number of arguments
/// ```
///
/// Valkey prints no file name; tallykv adds it for file lines (quoted, after
/// "file") and otherwise keeps Valkey's wording. Lines from the command line
/// read exactly as in Valkey: `Reading the configuration file, at line 2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A line of the (pseudo-)file is wrong.
    Line {
        source: ConfigSource,
        /// 1-based, counted the way Valkey counts it.
        line: usize,
        /// The offending line, trimmed, as it appears after `>>>`.
        text: String,
        /// The directive name (first word, lowercased), empty if the line could
        /// not be split into words.
        directive: String,
        /// Valkey's reason, e.g. `argument must be a memory value`.
        reason: String,
    },
    /// A problem with the configuration as a whole (no line to point at),
    /// e.g. `Can't open the log file: Permission denied`.
    General { reason: String },
    /// A config file (or an `include`d one) could not be read.
    Open { path: PathBuf, reason: String },
}

impl ConfigError {
    /// The reason alone, without the banner and the line.
    pub fn reason(&self) -> &str {
        match self {
            ConfigError::Line { reason, .. }
            | ConfigError::General { reason }
            | ConfigError::Open { reason, .. } => reason,
        }
    }

    /// The 1-based line number, for errors tied to a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Line { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The directive the error is about, for errors tied to a line.
    pub fn directive(&self) -> Option<&str> {
        match self {
            ConfigError::Line { directive, .. } => Some(directive),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Open { path, reason } => {
                // valkey-server logs this one without the banner.
                write!(
                    f,
                    "Fatal error, can't open config file '{}': {reason}",
                    path.display()
                )
            }
            ConfigError::General { reason } => {
                writeln!(
                    f,
                    "*** FATAL CONFIG FILE ERROR (Version {}) ***",
                    super::VERSION
                )?;
                write!(f, "{reason}")
            }
            ConfigError::Line {
                source,
                line,
                text,
                reason,
                ..
            } => {
                writeln!(
                    f,
                    "*** FATAL CONFIG FILE ERROR (Version {}) ***",
                    super::VERSION
                )?;
                match source {
                    ConfigSource::File(path) => writeln!(
                        f,
                        "Reading the configuration file '{}', at line {line}",
                        path.display()
                    )?,
                    ConfigSource::Stdin => {
                        writeln!(f, "Reading the configuration file (stdin), at line {line}")?
                    }
                    ConfigSource::CommandLine => {
                        writeln!(f, "Reading the configuration file, at line {line}")?
                    }
                }
                writeln!(f, ">>> '{text}'")?;
                write!(f, "{reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// `strerror`-style text for an I/O error: Rust's message without the
/// trailing " (os error N)".
pub(crate) fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
