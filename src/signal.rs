//! Ctrl-C and SIGTERM: end the run like a failure, cleanly.
//!
//! The handler only sets the engine's cancellation token. The pipeline checks it between
//! batches and unwinds through the normal error path, which drops the output directory and so
//! removes every temporary file; nothing is deleted from inside the signal handler itself.

use std::sync::OnceLock;

use zephr_engine::control::Cancel;

/// The process's one cancellation token: every run this process starts holds a clone.
pub fn token() -> Cancel {
    static TOKEN: OnceLock<Cancel> = OnceLock::new();
    TOKEN.get_or_init(Cancel::new).clone()
}

/// Installs the handler once; Ctrl-C and SIGTERM then cancel [`token`]. Safe to call more
/// than once.
pub fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let cancel = token();
        // If a handler cannot be installed, Ctrl-C falls back to the default (immediate exit,
        // temporary files left behind); the run itself still works.
        let _ = ctrlc::set_handler(move || cancel.cancel());
    });
}
