//! How the caller steers and watches a run: a cancellation token it may set at any time, and
//! an observer that hears progress and notices. The engine owns no globals and knows no
//! terminal; the binary's Ctrl-C handler sets the token and its progress bar is the observer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared flag that asks a run to stop. Clones share the flag. The pipeline polls it between
/// batches and unwinds through the normal error path, so a cancelled run ends like a failed
/// one: clean, nothing half-written.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A token that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every run holding a clone of this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The size a download is heading for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Known: file sizes, or a `Content-Length`.
    Exact(u64),
    /// Extrapolated from the part done so far (a paginated fetch).
    Estimate(u64),
}

impl Total {
    /// The byte count, estimated or not.
    pub fn bytes(self) -> u64 {
        match self {
            Total::Exact(n) | Total::Estimate(n) => n,
        }
    }
}

/// Formats a byte count as Zephr's console does: `12.3MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / 1e6)
}

/// Hears what a run reports as it goes.
pub trait Observer: Send + Sync {
    /// A line for the user (a notice or a warning), shown between progress updates.
    fn line(&self, message: &str);
    /// Bytes downloaded so far, towards `total` when it is known, and users seen.
    fn downloading(&self, bytes: u64, total: Option<Total>, users: u64);
}
