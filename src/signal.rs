//! Ctrl-C and SIGTERM: end the run like a failure, cleanly.
//!
//! The handler only sets a flag. The pipeline checks it between batches and unwinds through
//! the normal error path, which drops the output directory and so removes every temporary
//! file; nothing is deleted from inside the signal handler itself.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler once. Safe to call more than once.
pub fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // If a handler cannot be installed, Ctrl-C falls back to the default (immediate exit,
        // temporary files left behind); the run itself still works.
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

/// Whether Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
