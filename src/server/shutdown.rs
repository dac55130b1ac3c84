//! Orderly stop on SHUTDOWN, SIGTERM or SIGINT, as Valkey does with an append-only file: stop
//! taking commands, hand every core's last changes to storage, sync, exit 0. A second signal
//! exits at once.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::state::Shared;

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
                shared.begin_shutdown(false);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
