//! Progress on stderr, in the phases Zephr's console shows.
//!
//! A bar when stderr is a terminal, a plain line every few seconds otherwise (logs of
//! unattended runs stay readable), nothing with `--quiet`. Only counts and sizes are ever
//! printed here, never a value from the export or a credential.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Quiet,
    Plain,
    Bar,
}

impl ProgressMode {
    /// A bar on a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Plain
        }
    }
}

/// Formats a byte count as Zephr's console does: `12.3MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / 1e6)
}

/// The progress reporter of one run.
pub struct Progress {
    mode: ProgressMode,
    started: Instant,
    bar: Option<ProgressBar>,
    last_line: Mutex<Instant>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(125));
            bar
        });
        Progress {
            mode,
            started: Instant::now(),
            bar,
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prints a phase line such as `Preparing user export...`.
    pub fn phase(&self, message: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(message),
            (None, ProgressMode::Plain) => eprintln!("{message}"),
            _ => {}
        }
    }

    /// Reports bytes read so far (of `total` when known) and rows written.
    pub fn downloading(&self, bytes: u64, total: Option<u64>, rows: u64) {
        let message = match total {
            Some(total) if total >= bytes => format!(
                "Downloading: {} / {} ({rows} rows)",
                megabytes(bytes),
                megabytes(total)
            ),
            _ => format!("Downloading: {} ({rows} rows)", megabytes(bytes)),
        };
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(message),
            (None, ProgressMode::Plain) => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    eprintln!("{message}");
                }
            }
            _ => {}
        }
    }

    /// Prints a line that must be seen (a summary, a warning) unless quiet.
    pub fn line(&self, message: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(message),
            (None, ProgressMode::Plain) => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{message}");
            }
            _ => {}
        }
    }

    /// Removes the bar (before the final summary or an error is printed).
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
