//! `zephr-etl convert`: saved exports (files, stdin, or objects in a bucket) into tables.

use std::fs::File;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::progress::{Progress, ProgressMode, Total};
use crate::signal;
use anyhow::Context;
use serde_json::json;
use zephr_core::schema::Table;
use zephr_engine::input::{InputSpec, open_all};
use zephr_engine::pipeline::RunStats;
use zephr_engine::wide;

use super::export::{delta_summary, failed, open, tables_summary};
use super::state_events::finish;
use super::wide::{UsersPlan, report_mismatches, wide_error};
use crate::cli::ConvertArgs;

pub fn run(args: ConvertArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if super::postgres::is_target(&args.output) {
        return super::postgres::convert(args, quiet);
    }
    let inputs = super::parse_inputs(&args.inputs)?;
    let users = UsersPlan::check(&args.output)?;
    if users.needs_columns() {
        wide::check_rereadable(&inputs).map_err(wide_error)?;
    }
    if let Some(path) = &args.state_events {
        // Found missing now rather than after the user tables were written.
        File::open(path)
            .with_context(|| format!("--state-events: cannot open {}", path.display()))?;
    }
    signal::install();
    let progress = Progress::new(ProgressMode::detect(quiet));
    let mut export = open(
        &args.output,
        json!({
            "inputs": args.inputs,
            "state_events": args.state_events.as_ref().map(|p| p.display().to_string()),
        }),
    )?;
    let pipeline = export.options().pipeline.clone();
    users.apply(&mut export, "the attribute keys of the inputs", || {
        progress.phase("Finding attribute keys (first pass)...");
        wide::discover_columns(&inputs, pipeline.framer, pipeline.threads).map_err(wide_error)
    })?;
    progress.phase("Preparing user export...");
    let total: Option<u64> = inputs.iter().map(InputSpec::size).sum();
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let sources = open_all(inputs, raw_bytes.clone());
    let outcome = export.run(sources, &mut |stats: &RunStats| {
        // Users, as the console counts them (one users row per item).
        let users = stats.rows[Table::Users];
        progress.downloading(
            raw_bytes.load(Ordering::Relaxed),
            total.map(Total::Exact),
            users,
        );
    });
    let stats = outcome.map_err(|e| failed(&progress, e))?;
    report_mismatches(&progress, export.users());
    let summary = tables_summary(&progress, &stats, raw_bytes.load(Ordering::Relaxed));
    if let Some(line) = delta_summary(&export) {
        progress.line(&line);
    }
    let events = args.state_events.as_ref().map(|path| {
        let run = || export.state_events_file(path);
        ("Converting state events...", run)
    });
    Ok(finish(&progress, &summary, events, &args.output.output))
}
