//! The audit log (`audit-log-file`, off by default): one JSON line per security event —
//! authentications, refused commands and keys, ACL and CONFIG changes, cluster membership
//! changes and refused bus connections — for a PCI DSS trail that log shippers read.
//!
//! What a line may hold: user names, client and peer addresses, a TLS client certificate's
//! subject, command and directive names, node ids, and a key name only when the event is
//! about that key (a refused key). Never a password, a value or any other argument.
//!
//! Threads: [`record`] formats the line on the calling thread (a core) and hands it to a
//! writer thread of the log's own over a channel, so a core never waits for the disk. The
//! writer appends (the file is opened `O_APPEND`, mode 0600), syncs as `appendfsync` says
//! (`always`: after every batch it writes; `everysec`: at most a second after a line;
//! `no`: when the kernel pleases), and rotates by size: before a line would take the file
//! past `audit-log-max-size`, the file is renamed to `<file>.1` (older ones shift up to
//! `<file>.<audit-log-max-files>`, the oldest is removed) and a new file is begun. [`flush`]
//! waits until every line recorded before it is written and synced (shutdown calls it).
//!
//! A write error is logged once (until a write succeeds again) and the line is dropped:
//! the audit log never stops the server.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{AppendFsync, Runtime};

/// Lines waiting for the writer beyond this are dropped (and counted) rather than
/// buffered without bound, should the disk stall.
const QUEUE: usize = 65_536;

/// A security event. The `event` field of the line names its kind.
#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// AUTH or HELLO ... AUTH.
    Auth {
        outcome: Outcome,
        user: &'a str,
        client: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tls_subject: Option<&'a str>,
    },
    /// A command or key refused by the client's ACL user (what ACL LOG also holds).
    Denied {
        /// `command` or `key`.
        reason: &'a str,
        /// `toplevel`, `multi` or `lua`.
        context: &'a str,
        /// The command's full name, or the key.
        object: &'a str,
        user: &'a str,
        client: &'a str,
    },
    /// ACL SETUSER, DELUSER, LOAD, SAVE: who changed which user.
    AclChange {
        /// The subcommand, such as `setuser`.
        command: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<&'a str>,
        user: &'a str,
        client: &'a str,
    },
    /// CONFIG SET (the directives it set, never their values), CONFIG REWRITE, CONFIG
    /// RESETSTAT.
    ConfigChange {
        command: &'a str,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        directives: &'a [&'a str],
        user: &'a str,
        client: &'a str,
    },
    /// CLUSTER MEET, FORGET and the like, from a client.
    ClusterAdmin {
        command: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<&'a str>,
        user: &'a str,
        client: &'a str,
    },
    /// A node joined or left the cluster's membership (as committed by the meta group).
    Membership {
        change: &'a str,
        node: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<&'a str>,
    },
    /// A connection to the cluster bus that failed to authenticate.
    BusRejected { peer: &'a str, reason: &'a str },
    /// `card-pan-guard` found a plaintext card number in a write: `warned` (written) or
    /// `refused`. The key name (numbers in it masked) and the number masked, never the value.
    PanDetected {
        action: &'a str,
        /// `toplevel`, `multi` or `lua`.
        context: &'a str,
        key: &'a str,
        masked: &'a str,
        user: &'a str,
        client: &'a str,
    },
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

enum Msg {
    Line(String),
    /// Answer once everything before is written and synced.
    Flush(SyncSender<()>),
}

struct Log {
    tx: SyncSender<Msg>,
}

static LOG: OnceLock<Log> = OnceLock::new();

/// Opens the audit log when `audit-log-file` names one, and starts its writer thread.
/// Called once at startup; an unopenable file is a startup error.
pub fn open(runtime: &Arc<Runtime>) -> Result<(), String> {
    let Some(path) = runtime.audit_log_file() else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    let file = open_file(&path)
        .map_err(|e| format!("Can't open the audit log file {}: {e}", path.display()))?;
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let writer = Writer {
        size: file.metadata().map(|m| m.len()).unwrap_or(0),
        file,
        path,
        runtime: runtime.clone(),
        dirty_since: None,
        failing: false,
    };
    std::thread::Builder::new()
        .name("audit-log".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| format!("Can't start the audit log writer: {e}"))?;
    LOG.set(Log { tx })
        .map_err(|_| "the audit log was opened twice".to_string())
}

/// Whether an audit log is open: callers skip gathering an event's fields otherwise.
#[inline]
pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// Records `event` (nothing when no audit log is open).
pub fn record(event: &Event<'_>) {
    let Some(log) = LOG.get() else {
        return;
    };
    let line = Line {
        time: timestamp(SystemTime::now()),
        event,
    };
    let mut text = match serde_json::to_string(&line) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!("audit log: cannot encode {event:?}: {e}");
            return;
        }
    };
    text.push('\n');
    if log.tx.try_send(Msg::Line(text)).is_err() {
        tracing::warn!("audit log: the writer is behind; an event was dropped");
    }
}

/// Waits (up to `limit`) until every event recorded so far is written and synced.
pub fn flush(limit: Duration) {
    let Some(log) = LOG.get() else {
        return;
    };
    let (done, wait) = mpsc::sync_channel(1);
    if log.tx.send(Msg::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(limit);
    }
}

/// RFC 3339 UTC with milliseconds, as log shippers parse it: `2026-12-07T18:40:00.123Z`.
fn timestamp(now: SystemTime) -> String {
    let t = time::OffsetDateTime::from(now);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

struct Writer {
    file: File,
    path: PathBuf,
    size: u64,
    runtime: Arc<Runtime>,
    /// When the first line not yet synced was written.
    dirty_since: Option<Instant>,
    /// A write failed and was reported; the next failure is not.
    failing: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<String> = Vec::new();
        let mut flushes = Vec::new();
        loop {
            let first = match self.dirty_since {
                // Wake in time to sync a line at most a second old (`everysec`).
                Some(since) => {
                    let left = Duration::from_secs(1).saturating_sub(since.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => return,
                },
            };
            for msg in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match msg {
                    Msg::Line(line) => batch.push(line),
                    Msg::Flush(done) => flushes.push(done),
                }
            }
            self.write(batch.drain(..));
            let policy = self.runtime.appendfsync();
            let due = match policy {
                AppendFsync::Always => true,
                AppendFsync::EverySec => self
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(1)),
                AppendFsync::No => false,
            };
            if self.dirty_since.is_some() && (due || !flushes.is_empty()) {
                self.sync();
            }
            if policy == AppendFsync::No {
                self.dirty_since = None;
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Writes `lines`, as few writes as rotation allows: a file is rotated before the line
    /// that would take it past `audit-log-max-size`.
    fn write(&mut self, lines: impl Iterator<Item = String>) {
        let max = self.runtime.audit_log_max_size();
        let mut chunk = String::new();
        for line in lines {
            let size = self.size + chunk.len() as u64;
            if max > 0 && size > 0 && size + line.len() as u64 > max {
                self.write_chunk(chunk.as_bytes());
                chunk.clear();
                self.rotate();
            }
            chunk.push_str(&line);
        }
        if !chunk.is_empty() {
            self.write_chunk(chunk.as_bytes());
        }
    }

    fn write_chunk(&mut self, bytes: &[u8]) {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.failing = false;
                self.size += bytes.len() as u64;
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(
                        "audit log: cannot write to {}: {e}; events are lost until it can",
                        self.path.display()
                    );
                }
                self.failing = true;
            }
        }
    }

    fn sync(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!("audit log: cannot sync {}: {e}", self.path.display());
        }
        self.dirty_since = None;
    }

    /// `<file>` becomes `<file>.1`, `.1` becomes `.2` ..., the oldest beyond
    /// `audit-log-max-files` is removed, and a new `<file>` is begun.
    fn rotate(&mut self) {
        self.sync();
        let keep = self.runtime.audit_log_max_files().max(1);
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let _ = std::fs::remove_file(numbered(keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
            tracing::error!("audit log: cannot rotate {}: {e}", self.path.display());
            return;
        }
        match open_file(&self.path) {
            Ok(file) => {
                self.file = file;
                self.size = 0;
                if let Some(dir) = self.path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    if let Ok(d) = File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
            }
            Err(e) => tracing::error!(
                "audit log: cannot begin a new {} after rotating: {e}",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_time_and_event_first() {
        let event = Event::Auth {
            outcome: Outcome::Failure,
            user: "alice",
            client: "127.0.0.1:5000",
            tls_subject: None,
        };
        let line = serde_json::to_string(&Line {
            time: timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_670_000_123)),
            event: &event,
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"time":"2026-12-07T19:00:00.123Z","event":"auth","outcome":"failure","user":"alice","client":"127.0.0.1:5000"}"#
        );
        let directives = ["maxmemory", "requirepass"];
        let line = serde_json::to_string(&Event::ConfigChange {
            command: "set",
            directives: &directives,
            user: "admin",
            client: "10.0.0.1:1",
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"event":"config_change","command":"set","directives":["maxmemory","requirepass"],"user":"admin","client":"10.0.0.1:1"}"#
        );
    }
}
