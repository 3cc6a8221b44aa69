//! The end of a run whose user tables are committed: `Export complete!` and the summary, or
//! the state-events phase (`convert --state-events FILE`, `fetch --state-events`) with its
//! own summary; the phase's failure leaves the user tables alone and exits with status 3.

use std::path::Path;
use std::process::ExitCode;

use crate::progress::{Progress, stderr_line};
use zephr_engine::export::{ExportError, summary};
use zephr_engine::state_events::{EventsStats, TABLE_NAME};

use super::EXIT_STATE_EVENTS_FAILED;

/// What the failure message starts with (SPEC section 4).
pub const PHASE_FAILED: &str = "State events export failed";

/// Ends a run whose user tables are committed and summed up in `tables_summary`: `Export
/// complete!`, or, when state events were asked for (`events`: the phase's console line and
/// the call that runs it), the phase with its own summary, or its failure (exit 3).
pub fn finish(
    progress: &Progress,
    tables_summary: &str,
    events: Option<(&str, impl FnOnce() -> Result<EventsStats, ExportError>)>,
    dir: &Path,
) -> ExitCode {
    progress.clear();
    let Some((phase, run)) = events else {
        progress.line("Export complete!");
        progress.line(tables_summary);
        return ExitCode::SUCCESS;
    };
    progress.line(tables_summary);
    progress.phase(phase);
    match run() {
        Ok(stats) => {
            progress.clear();
            print_summary(progress, &stats);
            progress.line("All exports complete!");
            ExitCode::SUCCESS
        }
        Err(e) => report_failure(progress, &super::export::explain(e), dir),
    }
}

/// Prints the phase's summary.
pub fn print_summary(progress: &Progress, stats: &EventsStats) {
    for line in summary::events(stats) {
        progress.line(&line);
    }
}

/// Reports a failed phase (even with `--quiet`: it is an error) and gives exit status 3.
pub fn report_failure(progress: &Progress, error: &anyhow::Error, dir: &Path) -> ExitCode {
    progress.clear();
    stderr_line(&format!(
        "zephr-etl: {PHASE_FAILED}: {}",
        super::render_error(error)
    ));
    stderr_line(&format!(
        "zephr-etl: the user tables in {} are complete; only {TABLE_NAME} was not written",
        dir.display()
    ));
    ExitCode::from(EXIT_STATE_EVENTS_FAILED)
}
