//! `convert` and `fetch` into PostgreSQL (`-o postgresql://USER@HOST:PORT/DB?schema=S`): the
//! flags checked (usage errors, exit 2, before any connection or request), the run opened,
//! the pipeline fed, the outcome summed up. The engine is `zephr_engine::postgres`.
//!
//! A fetch into PostgreSQL is not resumable: the run is one transaction, and a failed run
//! leaves the tables as they were, so the rerun starts over.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::progress::{Progress, ProgressMode, Total};
use crate::signal;
use anyhow::anyhow;
use serde_json::{Value, json};
use zephr_api::USER_EXPORT_PATH;
use zephr_core::error::Chain;
use zephr_core::flatten::users::UsersExtension;
use zephr_core::schema::Table;
use zephr_core::source::decompress;
use zephr_core::source::drive::{Source, Sources};
use zephr_core::timestamp::iso_utc;
use zephr_engine::export::fetch::FetchPlan;
use zephr_engine::export::{ExportError, summary};
use zephr_engine::feed::{PageFeed, SegmentLimit};
use zephr_engine::input::{InputSpec, open_all};
use zephr_engine::pipeline::{PipelineError, RunStats};
use zephr_engine::postgres::{PgError, PgLoad, PgOptions, PgOutcome, PgStaged, PgTarget};
use zephr_engine::wide::{self, USER_SCHEMA_PATH};

use super::UsageError;
use super::export::{options, table_mode};
use super::wide::{UsersPlan, report_mismatches, wide_error};
use crate::cli::{ConvertArgs, FetchArgs, OutputArgs};

/// Whether `-o` names a PostgreSQL database.
pub fn is_target(args: &OutputArgs) -> bool {
    zephr_engine::postgres::is_postgres_url(&args.output.to_string_lossy())
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The target, and the flags that have no meaning for a database refused.
fn check(args: &OutputArgs) -> anyhow::Result<PgTarget> {
    let target =
        PgTarget::parse(&args.output.to_string_lossy()).map_err(|e| usage(format!("-o: {e}")))?;
    if args.on_error == crate::cli::OnErrorArg::Skip {
        return Err(usage(
            "--on-error skip writes rejects.ndjson into the output folder, which -o \
             postgresql://... does not have; drop it (a bad item then fails the run, and the \
             tables stay as they were)",
        ));
    }
    if args.max_rows_per_file.is_some() {
        return Err(usage(
            "--max-rows-per-file splits files; -o postgresql://... writes tables: drop it",
        ));
    }
    Ok(target)
}

/// The engine's options from the flags.
fn pg_options(
    args: &OutputArgs,
    target: PgTarget,
    users: Option<Arc<UsersExtension>>,
    source: Value,
) -> PgOptions {
    let export = options(args);
    // What shapes the tables; the file-only settings (formats, CSV, Parquet) mean nothing here.
    let mut parameters = export.manifest_parameters();
    for file_only in [
        "format",
        "csv_dialect",
        "excel_max_rows",
        "max_rows_per_file",
        "compression",
        "zstd_level",
        "row_group_size",
    ] {
        parameters.remove(file_only);
    }
    PgOptions {
        target,
        mode: table_mode(args),
        users,
        pipeline: export.pipeline,
        source,
        parameters,
    }
}

/// The engine's error in the flags' words: usage errors exit 2, the rest 1.
fn explain(error: PgError) -> anyhow::Error {
    match error {
        e if e.is_usage() => usage(format!("-o: {}", Chain(&e))),
        PgError::TablesHoldRows { table } => anyhow!(
            "{table} already holds rows; pass --merge to update the users of this run, \
             --overwrite to replace every row, or choose another ?schema="
        ),
        e @ PgError::TableMismatch { .. } => anyhow!(
            "{e}; drop or rename that table (it was made by another version or by hand), or \
             choose another ?schema="
        ),
        PgError::Pipeline(e) => super::export::explain(ExportError::Pipeline(e)),
        e => anyhow::Error::new(e),
    }
}

/// The console's failure line, then (printed by `main`) the cause.
fn failed(progress: &Progress, error: PgError) -> anyhow::Error {
    progress.clear();
    progress.line("Export failed. Please try again.");
    explain(error)
}

/// Connects, locks and checks the tables (before any input is read).
fn open(progress: &Progress, opts: PgOptions) -> anyhow::Result<PgLoad> {
    let load = PgLoad::open(opts).map_err(explain)?;
    if let Some(warning) = &load.warning {
        progress.line(&format!("warning: {warning}"));
    }
    Ok(load)
}

/// `Export complete!` and the summary: the run's rows, then the tables after the run.
fn finish(progress: &Progress, dest: &str, outcome: &PgOutcome, raw_bytes: u64) -> ExitCode {
    progress.clear();
    progress.line("Export complete!");
    progress.line(&summary::tables(
        &outcome.stats,
        raw_bytes,
        progress.elapsed(),
    ));
    if outcome.repeated > 0 {
        progress.line(&format!(
            "{} items repeated a user_id of a later item of the run; the last item of each \
             user_id was applied",
            outcome.repeated
        ));
    }
    let mode = outcome.manifest.parameters.get("mode").cloned();
    let mode = mode.as_ref().and_then(Value::as_str).unwrap_or_default();
    let [users, grants, attributes] = outcome.table_rows;
    let mut line = format!(
        "{dest} ({mode}): users {users} rows, grants {grants} rows, attributes {attributes} rows"
    );
    if outcome.removed_users > 0 {
        line.push_str(&format!(
            "; {} users absent from the run removed",
            outcome.removed_users
        ));
    }
    progress.line(&format!("{line}; run {}", outcome.run_id));
    ExitCode::SUCCESS
}

/// `convert INPUT... -o postgresql://...`.
pub fn convert(args: ConvertArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let target = check(&args.output)?;
    if args.state_events.is_some() {
        return Err(usage(
            "--state-events with -o postgresql://... is not supported yet; convert the state \
             events into a folder",
        ));
    }
    let inputs = super::parse_inputs(&args.inputs)?;
    let users = UsersPlan::check(&args.output)?;
    if users.needs_columns() {
        wide::check_rereadable(&inputs).map_err(wide_error)?;
    }
    signal::install();
    let progress = Progress::new(ProgressMode::detect(quiet));
    let pipeline = options(&args.output).pipeline;
    let mut source = json!({ "inputs": args.inputs });
    let found = if users.needs_columns() {
        progress.phase("Finding attribute keys (first pass)...");
        source["wide_columns_from"] = json!("the attribute keys of the inputs");
        Some(
            wide::discover_columns(&inputs, pipeline.framer, pipeline.threads)
                .map_err(wide_error)?,
        )
    } else {
        None
    };
    let ext = users.build(found);
    progress.phase("Preparing user export...");
    let load = open(
        &progress,
        pg_options(&args.output, target, ext.clone(), source),
    )?;
    let dest = load.describe().to_string();
    let total: Option<u64> = inputs.iter().map(InputSpec::size).sum();
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let sources = open_all(inputs, raw_bytes.clone());
    let staged = load
        .stage(sources, &mut |stats: &RunStats| {
            progress.downloading(
                raw_bytes.load(Ordering::Relaxed),
                total.map(Total::Exact),
                stats.rows[Table::Users],
            );
        })
        .map_err(|e| failed(&progress, e))?;
    let outcome = staged.commit().map_err(|e| failed(&progress, e))?;
    report_mismatches(&progress, ext.as_deref());
    Ok(finish(
        &progress,
        &dest,
        &outcome,
        raw_bytes.load(Ordering::Relaxed),
    ))
}

/// `fetch ... -o postgresql://...`, with `fetch`'s checked plan.
pub fn fetch(
    args: &FetchArgs,
    plan: &FetchPlan,
    users: UsersPlan,
    state_file: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let target = check(&args.output)?;
    for (given, flag) in [
        (args.state_events, "--state-events"),
        (args.resume, "--resume"),
        (args.work_dir.is_some(), "--work-dir"),
        (args.save_raw.is_some(), "--save-raw"),
    ] {
        if given {
            return Err(usage(format!(
                "{flag} is not supported with -o postgresql://... (a run into PostgreSQL is one \
                 transaction: a failed run changes nothing and is simply run again)"
            )));
        }
    }
    signal::install();
    let progress = Progress::new(ProgressMode::detect(quiet));
    progress.phase("Preparing user export...");
    let found = if users.needs_columns() {
        let fields = wide::download_user_schema(&plan.client).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "--wide-attributes: GET {USER_SCHEMA_PATH} failed; pass --user-schema FILE \
                 instead"
            ))
        })?;
        Some(wide::schema_columns(&fields))
    } else {
        None
    };
    let ext = users.build(found);
    let source = json!({
        "tenant": plan.tenant,
        "base_url": zephr_core::redact::redact_url(&plan.base_url),
        "query": plan.query.to_query(None),
    });
    let load = open(
        &progress,
        pg_options(&args.output, target, ext.clone(), source),
    )?;
    let dest = load.describe().to_string();
    let counter = plan.client.bytes_counter();
    let staged = if args.no_paginate {
        stage_stream(plan, load, &progress)?
    } else {
        stage_pages(plan, load, &progress)?
    };
    let outcome = staged.commit().map_err(|e| failed(&progress, e))?;
    if let Some(path) = &state_file {
        zephr_engine::state_file::record(path, &plan.tenant, &iso_utc(plan.started)).map_err(
            |e| {
                anyhow::Error::new(e).context(
                    "the tables were written, but the state file could not be updated; the \
                     next run with it will fetch from the previous time again",
                )
            },
        )?;
    }
    report_mismatches(&progress, ext.as_deref());
    Ok(finish(
        &progress,
        &dest,
        &outcome,
        counter.load(Ordering::Relaxed),
    ))
}

/// The paginated fetch's pages into the staging table; the feed's failure is checked before
/// anything is committed (its pages end early without an error of their own).
fn stage_pages(plan: &FetchPlan, load: PgLoad, progress: &Progress) -> anyhow::Result<PgStaged> {
    let query = plan.query.clone();
    let feed = PageFeed::start(
        Arc::clone(&plan.client),
        USER_EXPORT_PATH,
        move |page| query.to_query(Some(page)),
        1,
        plan.concurrency,
        signal::token(),
    )
    .map_err(|e| {
        failed(
            progress,
            PgError::Pipeline(PipelineError::Internal(e.to_string())),
        )
    })?;
    let sources: Sources = match feed.next_page() {
        Some(first) => {
            let all = SegmentLimit {
                pages: usize::MAX,
                bytes: u64::MAX,
            };
            feed.segment(first, all, None).0
        }
        None => Box::new(std::iter::empty()),
    };
    let received = plan.client.bytes_counter();
    let staged = load
        .stage(sources, &mut |stats: &RunStats| {
            let total = feed.estimated_total(0).map(Total::Estimate);
            progress.downloading(
                received.load(Ordering::Relaxed),
                total,
                stats.rows[Table::Users],
            );
        })
        .map_err(|e| failed(progress, e))?;
    if signal::token().is_cancelled() {
        return Err(failed(
            progress,
            PgError::Pipeline(PipelineError::Interrupted),
        ));
    }
    if let Err(e) = feed.finish() {
        progress.clear();
        progress.line("Export failed. Please try again.");
        return Err(super::export::explain(ExportError::Pages(e)));
    }
    Ok(staged)
}

/// The whole export as one streamed array into the staging table.
fn stage_stream(plan: &FetchPlan, load: PgLoad, progress: &Progress) -> anyhow::Result<PgStaged> {
    let fail = |e: ExportError| {
        progress.clear();
        progress.line("Export failed. Please try again.");
        super::export::explain(e)
    };
    let mut query = plan.query.clone();
    // Neither `page` nor `rpp`: that is what asks Zephr for the single array.
    query.rpp = None;
    let stream = plan
        .client
        .open_stream(USER_EXPORT_PATH, &query.to_query(None))
        .map_err(|e| fail(ExportError::Fetch(e)))?;
    let total = stream.content_length();
    let name: Arc<str> = Arc::from(format!("GET {USER_EXPORT_PATH}"));
    let reader: Box<dyn Read + Send> = Box::new(stream);
    let reader = decompress(reader, &name)
        .map_err(|e| fail(ExportError::Pipeline(PipelineError::Input(e))))?;
    let sources: Sources = Box::new(std::iter::once(Ok(Source { name, reader })));
    let counter = plan.client.bytes_counter();
    load.stage(sources, &mut |stats: &RunStats| {
        progress.downloading(
            counter.load(Ordering::Relaxed),
            total.map(Total::Exact),
            stats.rows[Table::Users],
        );
    })
    .map_err(|e| failed(progress, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zephr_engine::postgres::PgError;

    #[test]
    fn held_tables_name_the_flags_that_fix_them() {
        let e = explain(PgError::TablesHoldRows {
            table: "zephr.users".into(),
        });
        assert_eq!(
            e.to_string(),
            "zephr.users already holds rows; pass --merge to update the users of this run, \
             --overwrite to replace every row, or choose another ?schema="
        );
        assert_eq!(super::super::exit_status(&e), 1);
        let e = explain(PgError::Url("x".into()));
        assert_eq!(super::super::exit_status(&e), 2);
    }
}
