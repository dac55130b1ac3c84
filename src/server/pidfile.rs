//! `pidfile`, as Valkey: the process id is written once the server listens, and the file is
//! removed on a clean shutdown. Failing to write it is worth a warning, not a refusal to run.

/// Writes this process's id (and a newline) to `path`; nothing when `path` is empty.
pub fn write(path: &str) {
    if path.is_empty() {
        return;
    }
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        tracing::warn!("Failed to write PID file {path}: {e}");
    }
}

/// Removes the file [`write`] wrote; nothing when `path` is empty.
pub fn remove(path: &str) {
    if path.is_empty() {
        return;
    }
    tracing::info!("Removing the pid file.");
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("Failed to remove PID file {path}: {e}");
    }
}
