//! What every table-writing command shares: [`OutputArgs`] into the engine's
//! [`ExportOptions`], the opened [`Export`], the summary line, and the engine's errors with
//! the flag that fixes them.

use std::path::Path;
use std::sync::Arc;

use crate::progress::Progress;
use anyhow::anyhow;
use serde_json::{Value, json};
use zephr_core::error::{Chain, ItemProblem};
use zephr_core::flatten::{FlattenOptions, OnError};
use zephr_core::source::framer::FramerOptions;
use zephr_core::table::{CsvDialect, Formats};
use zephr_dest::DestError;
use zephr_engine::delta::{DeltaError, DeltaOptions};
use zephr_engine::export::{
    Export, ExportError, ExportOptions, TableMode, default_threads, summary,
};
use zephr_engine::pipeline::{OnInterrupt, PipelineError, PipelineOptions, RunStats};
use zephr_engine::resume::ResumeError;
use zephr_sink::parquet::{ParquetCompression, ParquetOptions};
use zephr_sink::xlsx::XlsxOptions;
use zephr_store::store::StoreOptions;

use super::UsageError;
use crate::cli::{CompressionArg, CsvDialectArg, FormatArg, OnErrorArg, OutputArgs};

/// The engine's options from the flags.
pub fn options(args: &OutputArgs) -> ExportOptions {
    let delta = args.format.contains(&FormatArg::Delta);
    let formats = Formats {
        csv: args.format.contains(&FormatArg::Csv),
        // Delta tables' data files are Parquet.
        parquet: args.format.contains(&FormatArg::Parquet) || delta,
        xlsx: args.format.contains(&FormatArg::Xlsx),
    };
    let on_error = match args.on_error {
        OnErrorArg::Fail => OnError::Fail,
        OnErrorArg::Skip => OnError::Skip,
    };
    let dialect = match args.csv_dialect {
        CsvDialectArg::Plain => CsvDialect::Plain,
        CsvDialectArg::Excel => CsvDialect::Excel,
        CsvDialectArg::Postgres => CsvDialect::Postgres,
    };
    let threads = args.threads.unwrap_or_else(default_threads);
    ExportOptions {
        formats,
        dialect,
        xlsx: XlsxOptions {
            max_rows_per_sheet: args.xlsx_max_rows,
        },
        parquet: ParquetOptions {
            compression: match args.compression {
                CompressionArg::Zstd => ParquetCompression::Zstd,
                CompressionArg::Snappy => ParquetCompression::Snappy,
                CompressionArg::None => ParquetCompression::None,
            },
            zstd_level: args.zstd_level,
            row_group_rows: args.row_group_size as usize,
            ..ParquetOptions::default()
        },
        pipeline: PipelineOptions {
            threads,
            framer: FramerOptions {
                batch_items: args.batch_size as usize,
                buffer_size: args.buffer_size as usize,
                max_item_bytes: args.max_item_bytes,
                ..FramerOptions::default()
            },
            flatten: FlattenOptions {
                formats,
                dialect,
                on_error,
                users: None,
            },
            max_errors: args.max_errors,
            first_item: 1,
            rejects_before: 0,
            on_interrupt: OnInterrupt::Fail,
            cancel: crate::signal::token(),
        },
        max_rows_per_file: args.max_rows_per_file,
        excel_rows: (dialect == CsvDialect::Excel).then(|| args.excel_max_rows - 1),
        overwrite: args.overwrite,
        table_mode: table_mode(args),
        delta: delta.then(|| DeltaOptions {
            location: args.output.to_string_lossy().into_owned(),
            store: StoreOptions::retrying_for(args.store_retry_secs),
        }),
        source: Value::Null,
        parameters: delta_parameters(args, delta)
            .into_iter()
            .chain([(
                "user_schema".to_string(),
                json!(args.user_schema.as_ref().map(|p| p.display().to_string())),
            )])
            .collect(),
    }
}

/// The table mode the flags ask for (`--overwrite`, `--merge`, `--delete-missing`).
pub fn table_mode(args: &OutputArgs) -> TableMode {
    match (args.merge, args.overwrite) {
        (true, _) => TableMode::Merge {
            delete_missing: args.delete_missing,
        },
        (false, true) => TableMode::Overwrite,
        (false, false) => TableMode::Create,
    }
}

/// The manifest's parameters of a Delta run: its format and mode.
fn delta_parameters(args: &OutputArgs, delta: bool) -> Vec<(String, Value)> {
    if !delta {
        return Vec::new();
    }
    vec![
        ("format".to_string(), json!(["delta"])),
        ("table_mode".to_string(), json!(table_mode(args).name())),
    ]
}

/// `--format delta` and `--merge` together make sense only in one way: refused otherwise
/// (exit 2), before anything is opened.
pub fn check_delta(args: &OutputArgs) -> anyhow::Result<()> {
    let usage = |message: &str| Err(anyhow::Error::new(UsageError(message.to_string())));
    let delta = args.format.contains(&FormatArg::Delta);
    if delta && args.format.iter().any(|f| *f != FormatArg::Delta) {
        return usage(
            "--format delta cannot be combined with other formats (Delta tables are a \
             destination of their own: write the files with another run and -o)",
        );
    }
    if args.merge && !delta {
        return usage(
            "--merge and --delete-missing keep current-state tables, which a folder or bucket \
             of files does not hold: add --format delta, or use -o \
             postgresql://USER@HOST:PORT/DB?schema=S",
        );
    }
    if delta && args.csv_dialect != CsvDialectArg::Plain {
        return usage("--csv-dialect does not apply to --format delta (no CSV is written)");
    }
    Ok(())
}

/// Opens the `-o` folder or bucket prefix and the export into it: locked, recovered, checked.
/// A malformed or unsupported URL, or a store that cannot be configured, is a usage error.
pub fn open(args: &OutputArgs, source: Value) -> anyhow::Result<Export> {
    check_delta(args)?;
    let store = StoreOptions::retrying_for(args.store_retry_secs);
    let dest = zephr_dest::open(&args.output.to_string_lossy(), store).map_err(|e| {
        if e.is_usage() {
            anyhow::Error::new(UsageError(format!("-o: {}", Chain(&e))))
        } else {
            explain(e.into())
        }
    })?;
    let mut opts = options(args);
    opts.source = source;
    Export::open(Arc::from(dest), opts).map_err(explain)
}

/// Refuses a side file (`flag`'s path) that would be one of the run's outputs in DIR.
pub fn check_side_file(dir: &Path, path: &Path, flag: &str) -> anyhow::Result<()> {
    if zephr_engine::export::is_output_path(dir, path) {
        return Err(UsageError(format!(
            "{flag} {}: that is one of the outputs in {}; choose a file outside the dataset",
            path.display(),
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// The engine's error with the flag that fixes it, where one does; exit status 2 for the
/// errors that are about the arguments.
pub fn explain(error: ExportError) -> anyhow::Error {
    match error {
        ExportError::DatasetExists { name } | ExportError::Dest(DestError::Exists { name }) => {
            anyhow!(
                "{name} already exists; pass --overwrite to replace it, or choose another -o \
                 directory"
            )
        }
        ExportError::Resumable {
            first,
            last,
            work,
            source,
        } => explain(*source).context(format!(
            "pages {first}-{last} are kept in {}; rerun the same command with --resume to \
             continue from page {}",
            work.display(),
            last + 1
        )),
        ExportError::Resume(ResumeError::Mismatch { dir, differences }) => {
            anyhow::Error::new(UsageError(format!(
                "--resume: the interrupted fetch in {} was started with other arguments ({}); \
                 rerun with the same arguments to continue it, or drop --resume to start over",
                dir.display(),
                differences.join("; ")
            )))
        }
        ExportError::Resume(ResumeError::Corrupt { path, problem }) => anyhow!(
            "{} is damaged or from another version ({problem}); drop --resume to start the \
             fetch over",
            path.display()
        ),
        ExportError::Pipeline(PipelineError::BadItem(item)) => {
            let limit = match item.problem {
                ItemProblem::TooLarge { .. } => " (--max-item-bytes)",
                ItemProblem::Field(_) => "",
            };
            anyhow!(
                "bad item: {item}{limit}\n(pass --on-error skip to write such items to \
                 rejects.ndjson and go on)"
            )
        }
        ExportError::Pipeline(PipelineError::TooManyRejects { limit, last }) => anyhow!(
            "stopped after {limit} rejected items (--max-errors {limit}); the last was {last}\n\
             (rejects.ndjson is not kept when a run fails: raise --max-errors to get it)"
        ),
        ExportError::Raw { path, source } => anyhow::Error::new(source).context(format!(
            "cannot write the --save-raw copy {}",
            path.display()
        )),
        ExportError::Delta(error) => match *error {
            DeltaError::HoldsRows { table } => anyhow!(
                "{table} is a Delta table that holds rows; pass --merge to update it with \
                 this run's users, or --overwrite to replace its rows"
            ),
            DeltaError::Interrupted {
                dest,
                run_id,
                committed,
                missing,
            } => anyhow!(
                "{dest} holds an interrupted run ({run_id}) that committed {committed} but \
                 not {missing}; rerun that same command to complete it (or pass --overwrite \
                 to replace every table)"
            ),
            other => anyhow::Error::new(other),
        },
        ExportError::RawExists { path } => anyhow!(
            "{} already exists; pass --overwrite to replace it, or choose another --save-raw file",
            path.display()
        ),
        other => anyhow::Error::new(other),
    }
}

/// The console's failure line, then (printed by `main`) the cause with its flag hint.
pub fn failed(progress: &Progress, error: ExportError) -> anyhow::Error {
    progress.clear();
    progress.line("Export failed. Please try again.");
    explain(error)
}

/// The final summary: rows per table, rejects, time and throughput.
pub fn tables_summary(progress: &Progress, stats: &RunStats, raw_bytes: u64) -> String {
    summary::tables(stats, raw_bytes, progress.elapsed())
}

/// The Delta run's line for stderr: each table's version, and the repeated user_ids whose
/// earlier items were dropped (the last item wins). None without `--format delta`.
pub fn delta_summary(export: &Export) -> Option<String> {
    let run = export.delta()?;
    let versions: Vec<String> = run
        .versions()
        .iter()
        .map(|(name, v)| {
            let note = if v.committed_now {
                ""
            } else {
                ", already committed"
            };
            format!("{name} v{}{note}", v.version)
        })
        .collect();
    let mut line = format!("Delta tables: {}", versions.join(", "));
    if run.resumed() {
        line.push_str(" (completed the interrupted run)");
    }
    let repeats = run.repeated_items();
    if repeats > 0 {
        line.push_str(&format!(
            "\n{repeats} items repeated an earlier item's user_id: the last item of each user_id was kept"
        ));
    }
    Some(line)
}
