//! The state-events phase of a run: one source (a saved file, or the spooled pages of a
//! fetch) into the `state_events` table, committed as a second commit of the same run that
//! adds its files to the manifest. Its failure leaves the user tables' commit alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};

use super::layout::{Format, OutputTable};
use super::{Export, ExportError};
use crate::manifest::{ManifestColumn, ManifestTable};
use crate::naming;
use crate::sink::csv::CsvWriter;
use crate::sink::parquet::ParquetWriter;
use crate::sink::xlsx::XlsxWriter;
use crate::sink::{TableWriter, WriteError, WrittenFile};
use crate::source::decompress;
use crate::state_events::{self, EventsStats, Opener, TABLE_NAME};
use crate::table::ColumnBatch;

impl Export {
    /// [`Export::state_events`] of a saved file (CSV, JSON array or NDJSON; gzip or zstd).
    pub fn state_events_file(&mut self, path: &Path) -> Result<EventsStats, ExportError> {
        let name: Arc<str> = Arc::from(path.display().to_string());
        let open = || -> std::io::Result<Box<dyn Read + Send>> {
            decompress(File::open(path)?, &name).map_err(std::io::Error::other)
        };
        self.state_events(&open, &name)
    }

    /// Converts the source `open` opens (named `input` in messages) into the state-events
    /// table and commits it, after the user tables' commit.
    pub fn state_events(
        &mut self,
        open: Opener<'_>,
        input: &str,
    ) -> Result<EventsStats, ExportError> {
        let formats = self.opts.formats;
        let dialect = self.opts.dialect;
        let stats = state_events::export(open, input, formats, dialect, &mut |columns, schema| {
            let mut writers: Vec<Box<dyn TableWriter>> = Vec::new();
            for format in self.opts.format_list() {
                let create = self.file_creator(OutputTable::StateEvents, format);
                match format {
                    Format::Csv => {
                        // The CSV keeps the source's own names: people read it.
                        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                        writers.push(Box::new(CsvWriter::new(
                            &names,
                            dialect,
                            self.layout.csv_rows(),
                            create,
                        )?));
                    }
                    Format::Parquet => {
                        // Warehouses refuse most source names (`event-type`, `1st`): Parquet
                        // gets sanitised names, the same columns in the same order. Nothing is
                        // known of the columns, so none is assumed to repeat much.
                        let renamed = warehouse_schema(schema);
                        let inner =
                            ParquetWriter::new(renamed.clone(), &[], self.opts.parquet, create)?;
                        writers.push(Box::new(Relabel {
                            schema: renamed,
                            inner: Box::new(inner),
                        }));
                    }
                    Format::Xlsx => {
                        // Like the CSV, the workbook keeps the source's names: people read it.
                        writers.push(Box::new(XlsxWriter::new(
                            TABLE_NAME,
                            schema.clone(),
                            self.opts.xlsx,
                            create,
                        )?));
                    }
                }
            }
            Ok(writers)
        })?;
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
                nul_replaced: self.nul_entry(stats.nul_replaced),
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
        self.commit(stats.files.clone(), tables)?;
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
            item_ends: Vec::new(),
        })
    }

    fn finish(self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        self.inner.finish()
    }
}
