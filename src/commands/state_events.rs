//! The state-events phase that `convert --state-events FILE` and `fetch --state-events`
//! share: one source into `DIR/state_events.csv` / `.parquet`, all or nothing, after the user
//! tables are in place. Its failure leaves the user tables alone and exits with status 3.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use zephr_etl::manifest::{Manifest, ManifestColumn, ManifestTable};
use zephr_etl::naming;
use zephr_etl::progress::Progress;
use zephr_etl::sink::output_dir::OutputDir;
use zephr_etl::sink::parquet::ParquetWriter;
use zephr_etl::sink::{TableWriter, WriteError, WrittenFile};
use zephr_etl::state_events::{self, EventsStats, TABLE_NAME};
use zephr_etl::table::ColumnBatch;

use super::EXIT_STATE_EVENTS_FAILED;
use super::export::ExportConfig;
use super::layout::Layout;

/// What the failure message starts with (SPEC section 4).
pub const PHASE_FAILED: &str = "State events export failed";

/// Where and how the state-events table is written: the user tables' settings.
pub struct EventsOutput {
    dir: PathBuf,
    overwrite: bool,
    template: ExportSettings,
}

#[derive(Clone)]
struct ExportSettings {
    formats: zephr_etl::table::Formats,
    dialect: zephr_etl::table::CsvDialect,
    parquet: zephr_etl::sink::parquet::ParquetOptions,
    pipeline: zephr_etl::pipeline::PipelineOptions,
    layout: Layout,
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
                layout: config.layout.clone(),
            },
        }
    }

    /// Fails, before any work, when a state-events file exists and `--overwrite` is not given.
    pub fn check_free(&self, config: &ExportConfig) -> anyhow::Result<()> {
        config.check_outputs(TABLE_NAME)
    }

    /// Converts the source `open` opens (named `input` in messages) into the table and
    /// renames its files into place. `manifest` is the user tables' manifest, which is
    /// rewritten with the state-events files added (when manifests are written).
    pub fn write(
        &self,
        open: &dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
        input: &str,
        manifest: Option<Manifest>,
    ) -> anyhow::Result<EventsStats> {
        let dir = OutputDir::open(&self.dir, self.overwrite)?;
        let t = self.template.clone();
        let config =
            ExportConfig::with_layout(dir, t.formats, t.dialect, t.parquet, t.pipeline, t.layout);
        let stats =
            state_events::export(
                open,
                input,
                config.formats,
                config.dialect,
                &mut |columns, schema| {
                    let mut writers: Vec<Box<dyn TableWriter>> = Vec::new();
                    if config.formats.csv {
                        // The CSV keeps the source's own names: people read it.
                        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                        writers.push(config.csv_writer(TABLE_NAME, &names).map_err(|e| {
                            WriteError::Io {
                                path: TABLE_NAME.into(),
                                source: std::io::Error::other(e.to_string()),
                            }
                        })?);
                    }
                    if config.formats.parquet {
                        // Warehouses refuse most source names (`event-type`, `1st`): Parquet gets
                        // sanitised names, the same columns in the same order.
                        let renamed = warehouse_schema(schema);
                        // Nothing is known of the columns, so none is assumed to repeat much.
                        let inner = ParquetWriter::new(
                            renamed.clone(),
                            &[],
                            config.parquet,
                            config.file_creator(TABLE_NAME, "parquet"),
                        )?;
                        writers.push(Box::new(Relabel {
                            schema: renamed,
                            inner: Box::new(inner),
                        }));
                    }
                    if config.formats.xlsx {
                        // Like the CSV, the workbook keeps the source's names: people read it.
                        writers.push(config.xlsx_writer(TABLE_NAME, schema.clone()).map_err(
                            |e| WriteError::Io {
                                path: TABLE_NAME.into(),
                                source: std::io::Error::other(e.to_string()),
                            },
                        )?);
                    }
                    Ok(writers)
                },
            )?;
        let parquet_names: Vec<String> =
            warehouse_schema(&state_events::arrow_schema(&stats.columns))
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        let mut tables = BTreeMap::new();
        tables.insert(
            TABLE_NAME.to_string(),
            ManifestTable {
                rows: stats.rows,
                columns: parquet_names
                    .into_iter()
                    .zip(&stats.columns)
                    .map(|(name, source)| ManifestColumn {
                        source_name: (name != *source).then(|| source.clone()),
                        name,
                        column_type: "string".into(),
                    })
                    .collect(),
            },
        );
        config.commit_with(&stats.files, 0, tables, manifest)?;
        Ok(stats)
    }
}

/// The state-events schema with every name made warehouse-safe ([`naming::sanitise`], then
/// unique case-insensitively).
pub fn warehouse_schema(schema: &SchemaRef) -> SchemaRef {
    let names = schema
        .fields()
        .iter()
        .map(|f| naming::sanitise(f.name()))
        .collect();
    let names = naming::make_unique(names, &[]);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| f.as_ref().clone().with_name(name))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Writes batches under another schema with the same types (renamed columns).
struct Relabel {
    schema: SchemaRef,
    inner: Box<dyn TableWriter>,
}

impl TableWriter for Relabel {
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
        let Some(arrow) = &batch.arrow else {
            return Ok(());
        };
        // Same columns in the same order, only the names differ, so this cannot fail.
        let arrow = RecordBatch::try_new(self.schema.clone(), arrow.columns().to_vec())
            .expect("a renamed schema fits the same columns");
        self.inner.write(&ColumnBatch {
            rows: batch.rows,
            csv: Vec::new(),
            arrow: Some(arrow),
        })
    }

    fn finish(self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        self.inner.finish()
    }
}

/// Prints the phase's summary line.
pub fn print_summary(progress: &Progress, stats: &EventsStats) {
    progress.line(&format!(
        "{TABLE_NAME}: {} rows, {} columns",
        stats.rows,
        stats.columns.len()
    ));
    if stats.nul_replaced > 0 {
        progress.line(&format!(
            "{TABLE_NAME}: NUL replaced by U+FFFD in {} CSV cells",
            stats.nul_replaced
        ));
    }
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
