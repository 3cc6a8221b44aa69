//! The lines a run ends with: rows per table, rejects, NUL replacements, time and throughput
//! for the user tables, and rows and columns for the state events.

use std::time::Duration;

use super::layout::REJECTS_NAME;
use crate::control::megabytes;
use crate::pipeline::RunStats;
use crate::state_events::{EventsStats, TABLE_NAME};

/// The user tables' summary: `users: 3 rows, ..., 1.2MB in 0.50 s (2.4 MB/s)`.
pub fn tables(stats: &RunStats, raw_bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let mut line = String::new();
    for (table, rows) in stats.rows.iter() {
        line.push_str(&format!("{}: {rows} rows, ", table.name()));
    }
    if stats.rejects > 0 {
        line.push_str(&format!(
            "rejected: {} items (see {REJECTS_NAME}), ",
            stats.rejects
        ));
    }
    if stats.nul_replaced.total() > 0 {
        line.push_str(&format!(
            "NUL replaced by U+FFFD in {} CSV cells, ",
            stats.nul_replaced.total()
        ));
    }
    line.push_str(&format!(
        "{} in {seconds:.2} s ({:.1} MB/s)",
        megabytes(raw_bytes),
        raw_bytes as f64 / 1e6 / seconds
    ));
    line
}

/// The state events' summary: one line, and a second when NUL characters were replaced.
pub fn events(stats: &EventsStats) -> Vec<String> {
    let mut lines = vec![format!(
        "{TABLE_NAME}: {} rows, {} columns",
        stats.rows,
        stats.columns.len()
    )];
    if stats.nul_replaced > 0 {
        lines.push(format!(
            "{TABLE_NAME}: NUL replaced by U+FFFD in {} CSV cells",
            stats.nul_replaced
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use zephr_core::schema::Table;

    #[test]
    fn the_tables_line_names_every_table_and_what_was_left_out() {
        let mut stats = RunStats::default();
        stats.rows[Table::Users] = 3;
        stats.rows[Table::Grants] = 2;
        stats.rejects = 1;
        let line = tables(&stats, 2_000_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "users: 3 rows, grants: 2 rows, attributes: 0 rows, rejected: 1 items (see \
             rejects.ndjson), 2.0MB in 2.00 s (1.0 MB/s)"
        );
    }
}
