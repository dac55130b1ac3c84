//! Orderly stop on SHUTDOWN, SIGTERM or SIGINT, as Valkey does with an append-only file: stop
//! taking commands, hand every core's last changes to storage, sync, exit 0. A second signal
//! exits at once.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use super::state::Shared;

pub fn install_signal_handlers(shared: Arc<Shared>) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("tallykv-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                if shared.shutting_down.load(SeqCst) {
                    tracing::warn!("{name} received during shutdown: exiting now");
                    std::process::exit(1);
                }
                tracing::warn!("Received {name} scheduling shutdown...");
                begin(shared.clone(), false);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// Starts an orderly stop (once); the process exits from a thread of its own. With `save`, a
/// snapshot is written first (SHUTDOWN SAVE).
pub fn begin(shared: Arc<Shared>, save: bool) {
    if shared.shutting_down.swap(true, SeqCst) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tallykv-shutdown".into())
        .spawn(move || {
            // Every core's ticker notices the flag and hands over its last changes.
            let deadline = Instant::now() + Duration::from_secs(2);
            while shared.shutdown_flushed.load(Relaxed) < shared.cores && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(storage) = shared.storage() {
                if save {
                    let (tx, rx) = std::sync::mpsc::channel();
                    if storage.snapshot(move |r| {
                        let _ = tx.send(r);
                    }) {
                        match rx.recv() {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!("snapshot before shutdown failed: {e}"),
                            Err(_) => tracing::error!("snapshot before shutdown did not finish"),
                        }
                    }
                }
                storage.close(Duration::from_secs(30));
            }
            tracing::info!("tallykv is now ready to exit, bye bye...");
            std::process::exit(0);
        });
    if spawned.is_err() {
        std::process::exit(1);
    }
}
