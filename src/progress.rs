//! Progress on stderr, in the phases Zephr's console shows.
//!
//! `Preparing user export...`, then `Downloading: X.XMB / Y.YMB` with a bar and a percentage
//! whenever the total is known (the input files' sizes; for a compressed file, the compressed
//! position against the compressed size) or can be estimated (a paginated fetch: the pages
//! done against the last page, the bytes extrapolated from the pages so far and marked `~`),
//! and the users so far; `Downloading state events...`; `Export complete!` or `All exports
//! complete!`. A bar when stderr is a terminal, a plain line every few seconds otherwise (logs
//! of unattended runs stay readable), nothing with `--quiet`.
//!
//! Nothing here may stop a run: a closed or full stderr (`2>&1 | head -1`) drops the text
//! quietly instead of panicking as `eprintln!` does ([`stderr_line`]). Only counts and sizes are
//! ever printed here, never a value from the export or a credential.

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

pub use zephr_engine::control::{Observer, Total, megabytes};

/// Writes one line to stderr, ignoring failure: a closed stderr (`2>&1 | head -1`) must not
/// stop the run, and the exit status still tells how it ended.
pub fn stderr_line(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
    let _ = err.flush();
}

/// What the download line says: the text after the bar, and the bar's position and length
/// (`None` without a total).
fn download_text(bytes: u64, total: Option<Total>, users: u64) -> (String, Option<(u64, u64)>) {
    let users = match users {
        1 => "1 user".to_owned(),
        n => format!("{n} users"),
    };
    match total {
        // An estimate that the download outgrew says nothing any more.
        Some(Total::Estimate(t)) if t < bytes => {
            (format!("Downloading: {} ({users})", megabytes(bytes)), None)
        }
        Some(total) => {
            let t = total.bytes().max(bytes).max(1);
            let shown = match total {
                Total::Exact(_) => megabytes(t),
                Total::Estimate(_) => format!("~{} (estimated)", megabytes(t)),
            };
            (
                format!("Downloading: {} / {shown} ({users})", megabytes(bytes)),
                Some((bytes.min(t), t)),
            )
        }
        None => (format!("Downloading: {} ({users})", megabytes(bytes)), None),
    }
}

/// The percentage of `done` in `total`, 100 only when all is done.
fn percent(done: u64, total: u64) -> u64 {
    if done >= total {
        100
    } else {
        (u128::from(done) * 100 / u128::from(total.max(1))).min(99) as u64
    }
}

/// The progress reporter of one run.
pub struct Progress {
    mode: ProgressMode,
    started: Instant,
    bar: Option<ProgressBar>,
    /// Whether the bar is drawn as a bar (a total is known) rather than a spinner.
    as_bar: Mutex<bool>,
    last_line: Mutex<Instant>,
}

/// The bar: `[#####>-----]  42% Downloading: 12.3MB / 29.0MB (41000 users)`.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}")
        .expect("the template is valid")
        .progress_chars("#>-")
}

/// Without a total: a spinner and the text.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg}").expect("the template is valid")
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(125));
            bar
        });
        Progress {
            mode,
            started: Instant::now(),
            bar,
            as_bar: Mutex::new(false),
            // The first download line comes after a few seconds, as the later ones do.
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prints a phase line such as `Preparing user export...`.
    pub fn phase(&self, message: &str) {
        self.line(message);
    }

    /// Reports bytes read so far (of `total` when known or estimated) and users so far.
    pub fn downloading(&self, bytes: u64, total: Option<Total>, users: u64) {
        let (text, position) = download_text(bytes, total, users);
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                let mut as_bar = self.as_bar.lock().unwrap_or_else(|e| e.into_inner());
                match position {
                    Some((done, total)) => {
                        if !*as_bar {
                            bar.set_style(bar_style());
                            *as_bar = true;
                        }
                        bar.set_length(total);
                        bar.set_position(done);
                    }
                    None if *as_bar => {
                        bar.set_style(spinner_style());
                        *as_bar = false;
                    }
                    None => {}
                }
                bar.set_message(text);
            }
            (None, ProgressMode::Plain) => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    match position {
                        Some((done, total)) => {
                            stderr_line(&format!("{text} {}%", percent(done, total)))
                        }
                        None => stderr_line(&text),
                    }
                }
            }
            _ => {}
        }
    }

    /// Prints a line that must be seen (a phase, a summary, a warning) unless quiet.
    pub fn line(&self, message: &str) {
        match (&self.bar, self.mode) {
            // indicatif writes to the terminal and ignores failures itself.
            (Some(bar), _) => bar.println(message),
            (None, ProgressMode::Plain) => stderr_line(message),
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

/// The engine reports through the bar (or plain lines).
impl Observer for Progress {
    fn line(&self, message: &str) {
        Progress::line(self, message);
    }

    fn downloading(&self, bytes: u64, total: Option<Total>, users: u64) {
        Progress::downloading(self, bytes, total, users);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_lines() {
        assert_eq!(
            download_text(12_345_678, Some(Total::Exact(45_600_000)), 1234),
            (
                "Downloading: 12.3MB / 45.6MB (1234 users)".to_owned(),
                Some((12_345_678, 45_600_000))
            )
        );
        assert_eq!(
            download_text(2_000_000, Some(Total::Estimate(8_000_000)), 1),
            (
                "Downloading: 2.0MB / ~8.0MB (estimated) (1 user)".to_owned(),
                Some((2_000_000, 8_000_000))
            )
        );
        // An outgrown estimate is dropped; an outgrown exact size (a file that grew) is not.
        assert_eq!(
            download_text(9_000_000, Some(Total::Estimate(8_000_000)), 0).0,
            "Downloading: 9.0MB (0 users)"
        );
        assert_eq!(
            download_text(9_000_000, Some(Total::Exact(8_000_000)), 5),
            (
                "Downloading: 9.0MB / 9.0MB (5 users)".to_owned(),
                Some((9_000_000, 9_000_000))
            )
        );
        assert_eq!(
            download_text(100, None, 7).0,
            "Downloading: 0.0MB (7 users)"
        );
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(0, 10), 0);
        assert_eq!(percent(5, 10), 50);
        assert_eq!(percent(999, 1000), 99);
        assert_eq!(percent(10, 10), 100);
        assert_eq!(percent(0, 0), 100);
    }
}
