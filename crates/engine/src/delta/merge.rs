//! Copy-on-write by `user_id`: which data files of a table hold rows a run replaces or
//! removes, and those files written again without them.
//!
//! A file is first read for its `user_id` column alone (a Parquet projection: a few bytes per
//! row), streamed a batch at a time; only a file that holds such rows is read whole, batch by
//! batch, and written again without them. Nothing holds more than a batch and a Parquet row
//! group in progress, whatever the size of the table.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use deltalake_core::ObjectStore;
use deltalake_core::Path as StorePath;
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
// parquet 59.3 deprecates its object-store reader in favour of one's own `AsyncFileReader`;
// it is still the reader delta-rs itself uses, and does exactly this (ranged GETs).
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use tokio::runtime::Runtime;

use super::DeltaError;
use super::files::DataFiles;
use zephr_core::table::ColumnBatch;
use zephr_sink::parquet::{ParquetOptions, ParquetWriter};
use zephr_sink::{TableWriter, WrittenFile, dest_error};

/// Rows read at a time.
const BATCH_ROWS: usize = 8192;

/// One data file of a table, as its log or this run names it.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Relative to the table's folder.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What filtering a file came to.
#[derive(Debug)]
pub(crate) enum Filtered {
    /// Every row stays: the file is kept as it is.
    Untouched,
    /// No row stays: the file goes.
    Emptied,
    /// Some rows go: the file is replaced by this one (named relative to DEST).
    Rewritten(WrittenFile),
}

/// Reads data files of one table (`store` is rooted at the table's folder).
pub(crate) struct FileFilter<'a> {
    /// The runtime the store's requests run on.
    pub runtime: &'a Runtime,
    /// The table's store.
    pub store: Arc<dyn ObjectStore>,
    /// The table's name (its folder under DEST), for new files and messages.
    pub table: &'a str,
    /// Where the rewritten files go.
    pub files: &'a Arc<DataFiles>,
    /// How the rewritten files are written.
    pub parquet: ParquetOptions,
    /// Columns dictionary-encoded in the rewritten files.
    pub dictionary_columns: &'a [String],
}

impl FileFilter<'_> {
    #[allow(deprecated)]
    fn stream(
        &self,
        file: &DataFile,
        only_user_id: bool,
    ) -> Result<
        (
            arrow_schema::SchemaRef,
            parquet::arrow::async_reader::ParquetRecordBatchStream<ParquetObjectReader>,
        ),
        DeltaError,
    > {
        let error = |source| DeltaError::Parquet {
            path: format!("{}/{}", self.table, file.path),
            source,
        };
        let reader =
            ParquetObjectReader::new(self.store.clone(), StorePath::from(file.path.as_str()))
                .with_file_size(file.size);
        let builder = self
            .runtime
            .block_on(ParquetRecordBatchStreamBuilder::new(reader))
            .map_err(error)?;
        let schema = builder.schema().clone();
        let mut builder = builder.with_batch_size(BATCH_ROWS);
        if only_user_id {
            let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
            builder = builder.with_projection(mask);
        }
        Ok((schema, builder.build().map_err(error)?))
    }

    /// Calls `each` with the `user_id` of every row of `file`, in order; reads that column only.
    pub fn scan(&self, file: &DataFile, each: &mut dyn FnMut(&str)) -> Result<(), DeltaError> {
        let (_, mut stream) = self.stream(file, true)?;
        while let Some(batch) = self.runtime.block_on(stream.next()) {
            let batch = batch.map_err(|source| DeltaError::Parquet {
                path: format!("{}/{}", self.table, file.path),
                source,
            })?;
            let ids = user_ids(&batch, self.table, &file.path)?;
            for i in 0..ids.len() {
                each(ids.value(i));
            }
        }
        Ok(())
    }

    /// Whether some row of `file` fails `keep` (reads the `user_id` column only).
    pub(crate) fn drops_any(
        &self,
        file: &DataFile,
        keep: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(bool, bool), DeltaError> {
        let (mut any_dropped, mut any_kept) = (false, false);
        self.scan(file, &mut |id| {
            if keep(id) {
                any_kept = true;
            } else {
                any_dropped = true;
            }
        })?;
        Ok((any_dropped, any_kept))
    }

    /// `file` without the rows that fail `keep` (called once per row, in order): untouched,
    /// emptied, or written again as a new data file of the table.
    pub fn filter(
        &self,
        file: &DataFile,
        keep: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Filtered, DeltaError> {
        let (schema, mut stream) = self.stream(file, false)?;
        let files = self.files.clone();
        let table = self.table.to_string();
        let mut parquet = self.parquet;
        parquet.max_rows_per_file = None;
        let mut writer: Option<ParquetWriter> = None;
        let (mut kept, mut dropped) = (0u64, 0u64);
        while let Some(batch) = self.runtime.block_on(stream.next()) {
            let batch = batch.map_err(|source| DeltaError::Parquet {
                path: format!("{}/{}", self.table, file.path),
                source,
            })?;
            let ids = user_ids(&batch, self.table, &file.path)?;
            let mask: BooleanArray = (0..ids.len()).map(|i| Some(keep(ids.value(i)))).collect();
            let kept_here = mask.true_count();
            dropped += (batch.num_rows() - kept_here) as u64;
            kept += kept_here as u64;
            if kept_here == 0 {
                continue;
            }
            let rows = arrow_select::filter::filter_record_batch(&batch, &mask)
                .map_err(|e| DeltaError::Arrow(e.to_string()))?;
            if writer.is_none() {
                let files = files.clone();
                let table = table.clone();
                writer = Some(ParquetWriter::new(
                    schema.clone(),
                    self.dictionary_columns,
                    parquet,
                    Box::new(move |_| files.create(&table).map_err(|e| dest_error(&table, e))),
                )?);
            }
            if let Some(w) = writer.as_mut() {
                w.write(&ColumnBatch {
                    rows: rows.num_rows(),
                    csv: Vec::new(),
                    arrow: Some(rows),
                    item_ends: Vec::new(),
                })?;
            }
        }
        match writer {
            _ if dropped == 0 => {
                // Nothing went: whatever was written is a copy nobody needs.
                if let Some(w) = writer {
                    for f in Box::new(w).finish()? {
                        self.files.remove(&f.name)?;
                    }
                }
                Ok(Filtered::Untouched)
            }
            None => Ok(Filtered::Emptied),
            Some(w) => {
                let mut written = Box::new(w).finish()?;
                match (written.pop(), kept) {
                    (Some(f), _) => Ok(Filtered::Rewritten(f)),
                    (None, _) => Ok(Filtered::Emptied),
                }
            }
        }
    }
}

/// The `user_id` column (the first of every item table) of `batch`.
fn user_ids<'b>(
    batch: &'b RecordBatch,
    table: &str,
    path: &str,
) -> Result<&'b StringArray, DeltaError> {
    let column = (batch.num_columns() > 0 && batch.schema().field(0).name() == "user_id")
        .then(|| batch.column(0).as_any().downcast_ref::<StringArray>())
        .flatten()
        .filter(|c| c.null_count() == 0);
    column.ok_or_else(|| DeltaError::Columns {
        table: table.to_string(),
        detail: format!("data file {path} has no non-null text user_id as its first column"),
    })
}
