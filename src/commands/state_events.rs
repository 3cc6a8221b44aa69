//! The state-events phase that `convert --state-events FILE` and `fetch --state-events`
//! share: one source into `DIR/state_events.csv` / `.parquet`, all or nothing, after the user
//! tables are in place. Its failure leaves the user tables alone and exits with status 3.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use zephr_etl::progress::Progress;
use zephr_etl::sink::TableWriter;
use zephr_etl::sink::csv::CsvWriter;
use zephr_etl::sink::output_dir::OutputDir;
use zephr_etl::sink::parquet::ParquetWriter;
use zephr_etl::state_events::{self, EventsStats, TABLE_NAME};

use super::EXIT_STATE_EVENTS_FAILED;
use super::export::ExportConfig;

/// What the failure message starts with (SPEC section 4).
pub const PHASE_FAILED: &str = "State events export failed";

/// Where and how the state-events table is written: the user tables' settings.
pub struct EventsOutput {
    dir: PathBuf,
    overwrite: bool,
    template: ExportSettings,
}

#[derive(Clone, Copy)]
struct ExportSettings {
    formats: zephr_etl::table::Formats,
    dialect: zephr_etl::table::CsvDialect,
    parquet: zephr_etl::sink::parquet::ParquetOptions,
    pipeline: zephr_etl::pipeline::PipelineOptions,
}

impl EventsOutput {
    /// The settings of `config` (opened on `dir`), before it is committed.
    pub fn new(dir: &Path, overwrite: bool, config: &ExportConfig) -> EventsOutput {
        EventsOutput {
            dir: dir.to_path_buf(),
            overwrite,
            template: ExportSettings {
                formats: config.formats,
                dialect: config.dialect,
                parquet: config.parquet,
                pipeline: config.pipeline,
            },
        }
    }

    /// The table's final file names.
    pub fn target_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.template.formats.csv {
            names.push(format!("{TABLE_NAME}.csv"));
        }
        if self.template.formats.parquet {
            names.push(format!("{TABLE_NAME}.parquet"));
        }
        names
    }

    /// Fails, before any work, when a state-events file exists and `--overwrite` is not given.
    pub fn check_free(&self, config: &ExportConfig) -> anyhow::Result<()> {
        let dir = config.dir.lock().unwrap_or_else(|e| e.into_inner());
        for name in self.target_names() {
            dir.check_free(Path::new(&name))?;
        }
        Ok(())
    }

    /// Converts the source `open` opens (named `input` in messages) into the table and
    /// renames its files into place.
    pub fn write(
        &self,
        open: &dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
        input: &str,
    ) -> anyhow::Result<EventsStats> {
        let dir = OutputDir::open(&self.dir, self.overwrite)?;
        let config = ExportConfig {
            dir: Arc::new(Mutex::new(dir)),
            formats: self.template.formats,
            dialect: self.template.dialect,
            parquet: self.template.parquet,
            pipeline: self.template.pipeline,
        };
        let stats = state_events::export(
            open,
            input,
            config.formats,
            config.dialect,
            &mut |columns, schema| {
                let mut writers: Vec<Box<dyn TableWriter>> = Vec::new();
                if config.formats.csv {
                    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                    writers.push(Box::new(CsvWriter::new(
                        &names,
                        config.dialect,
                        None,
                        config.file_creator(TABLE_NAME, "csv"),
                    )?));
                }
                if config.formats.parquet {
                    // Nothing is known of the columns, so none is assumed to repeat much.
                    writers.push(Box::new(ParquetWriter::new(
                        schema.clone(),
                        &[],
                        config.parquet,
                        config.file_creator(TABLE_NAME, "parquet"),
                    )?));
                }
                Ok(writers)
            },
        )?;
        config.commit()?;
        Ok(stats)
    }
}

/// Prints the phase's summary line.
pub fn print_summary(progress: &Progress, stats: &EventsStats) {
    progress.line(&format!(
        "{TABLE_NAME}: {} rows, {} columns",
        stats.rows,
        stats.columns.len()
    ));
}

/// Reports a failed phase (even with `--quiet`: it is an error) and gives exit status 3.
pub fn report_failure(progress: &Progress, error: &anyhow::Error, dir: &Path) -> ExitCode {
    progress.clear();
    eprintln!("zephr-etl: {PHASE_FAILED}: {}", super::render_error(error));
    eprintln!(
        "zephr-etl: the user tables in {} are complete; only {TABLE_NAME} was not written",
        dir.display()
    );
    ExitCode::from(EXIT_STATE_EVENTS_FAILED)
}
