//! The Parquet writer: Arrow batches to zstd (or snappy, or plain) Parquet.
//!
//! arrow-rs's `ArrowWriter` keeps the row group in progress in memory, so the writer closes a
//! row group when it reaches a row count or an in-memory size, whichever comes first; that is
//! what keeps a writer's memory flat however long the table is. Statistics stay on, which is
//! what lets warehouses skip row groups.

use std::io::BufWriter;
use std::path::PathBuf;

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::{CreateFile, TableWriter, WriteError, WrittenFile};
use zephr_core::table::ColumnBatch;
use zephr_dest::StagedFile;

/// Parquet compression codecs the tool offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    /// zstd at [`ParquetOptions::zstd_level`] (the default).
    #[default]
    Zstd,
    /// Snappy: faster, larger files.
    Snappy,
    /// No compression (Parquet's encodings only).
    None,
}

impl ParquetCompression {
    /// The codec's name as `--compression` and the manifest spell it.
    pub fn name(self) -> &'static str {
        match self {
            ParquetCompression::Zstd => "zstd",
            ParquetCompression::Snappy => "snappy",
            ParquetCompression::None => "none",
        }
    }
}

/// Columns of unbounded free text (an attribute's value, the JSON of unmapped fields): no
/// min/max statistics, which would copy every huge value twice (see `properties`).
pub(crate) const UNBOUNDED_TEXT_COLUMNS: [&str; 2] = ["value", "extra"];

/// The default zstd level. Parquet's own encodings already shrink the data; higher levels
/// cost a lot of CPU for a few percent and would put the writers on the critical path.
pub(crate) const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// How Parquet files are laid out.
#[derive(Debug, Clone, Copy)]
pub struct ParquetOptions {
    /// The codec of every column (`--compression`).
    pub compression: ParquetCompression,
    /// zstd level; negative levels trade a little size for a lot of speed.
    pub zstd_level: i32,
    /// Rows per row group at most.
    pub row_group_rows: usize,
    /// Bytes of buffered row group at most; the group is closed early when it grows past this.
    pub row_group_bytes: usize,
    /// Split the table into part files of at most this many rows.
    pub max_rows_per_file: Option<u64>,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: ParquetCompression::Zstd,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            row_group_rows: 122_880,
            row_group_bytes: 8 << 20,
            max_rows_per_file: None,
        }
    }
}

impl ParquetOptions {
    fn properties(&self, dictionary_columns: &[String]) -> WriterProperties {
        let compression = match self.compression {
            ParquetCompression::Zstd => {
                Compression::ZSTD(ZstdLevel::try_new(self.zstd_level).unwrap_or_default())
            }
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        };
        let mut builder = WriterProperties::builder()
            .set_compression(compression)
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("zephr-etl version {}", env!("CARGO_PKG_VERSION")));
        for column in dictionary_columns {
            builder =
                builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), true);
        }
        // arrow-rs copies a page's smallest and largest value whole before truncating them
        // for the statistics: a 60 MB attribute cost 120 MB more than its own size in the
        // writer (measured: 612 MB peak for sixteen such items to Parquet, 323 MB without
        // statistics). The free-text columns, whose min/max prune nothing anyway, go without.
        for column in UNBOUNDED_TEXT_COLUMNS {
            builder = builder
                .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
        }
        builder.build()
    }
}

/// A part being written: the Arrow writer, its final name and its rows so far.
struct Open {
    writer: ArrowWriter<BufWriter<Box<dyn StagedFile>>>,
    name: String,
    rows: u64,
}

/// Writes one table as Parquet.
pub struct ParquetWriter {
    schema: SchemaRef,
    properties: WriterProperties,
    opts: ParquetOptions,
    create: CreateFile,
    current: Option<Open>,
    done: Vec<WrittenFile>,
}

impl ParquetWriter {
    /// A writer of `schema` that dictionary-encodes only `dictionary_columns`; `create(part)`
    /// opens part number `part`.
    pub fn new(
        schema: SchemaRef,
        dictionary_columns: &[String],
        opts: ParquetOptions,
        create: CreateFile,
    ) -> Result<Self, WriteError> {
        let properties = opts.properties(dictionary_columns);
        let mut writer = ParquetWriter {
            schema,
            properties,
            opts,
            create,
            current: None,
            done: Vec::new(),
        };
        writer.open_part()?;
        Ok(writer)
    }

    fn open_part(&mut self) -> Result<(), WriteError> {
        if let Some(previous) = self.current.take() {
            self.done.push(close(previous)?);
        }
        let (file, name) = (self.create)(self.done.len())?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(super::FILE_BUFFER_BYTES, file),
            self.schema.clone(),
            Some(self.properties.clone()),
        )
        .map_err(|source| WriteError::Parquet {
            path: PathBuf::from(&name),
            source,
        })?;
        self.current = Some(Open {
            writer,
            name,
            rows: 0,
        });
        Ok(())
    }
}

fn close(open: Open) -> Result<WrittenFile, WriteError> {
    let buffered = open
        .writer
        .into_inner()
        .map_err(|source| WriteError::Parquet {
            path: PathBuf::from(&open.name),
            source,
        })?;
    super::finish_file(buffered, open.rows, &open.name)
}

impl TableWriter for ParquetWriter {
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
        let Some(record_batch) = &batch.arrow else {
            return Ok(());
        };
        let mut offset = 0;
        while offset < record_batch.num_rows() {
            let open = self
                .current
                .as_mut()
                .expect("a part is always open until finish");
            let room = self
                .opts
                .max_rows_per_file
                .map_or(u64::MAX, |limit| limit - open.rows);
            if room == 0 {
                self.open_part()?;
                continue;
            }
            let take = (record_batch.num_rows() - offset).min(room.min(usize::MAX as u64) as usize);
            let slice = record_batch.slice(offset, take);
            let error = |source| WriteError::Parquet {
                path: PathBuf::from(&open.name),
                source,
            };
            open.writer.write(&slice).map_err(error)?;
            if open.writer.in_progress_size() > self.opts.row_group_bytes {
                open.writer.flush().map_err(error)?;
            }
            // Row groups close here or inside the writer (at the row limit); the staged file
            // syncs what reaches it behind the writer.
            open.rows += take as u64;
            offset += take;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        if let Some(current) = self.current.take() {
            self.done.push(close(current)?);
        }
        Ok(std::mem::take(&mut self.done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_columns_go_without_statistics() {
        let props = ParquetOptions::default().properties(&["key".to_string()]);
        for column in UNBOUNDED_TEXT_COLUMNS {
            assert_eq!(
                props.statistics_enabled(&ColumnPath::from(column)),
                EnabledStatistics::None,
                "{column}"
            );
        }
        for column in ["key", "user_id", "registered"] {
            assert_eq!(
                props.statistics_enabled(&ColumnPath::from(column)),
                EnabledStatistics::Page,
                "{column}"
            );
        }
        assert!(props.dictionary_enabled(&ColumnPath::from("key")));
        assert!(!props.dictionary_enabled(&ColumnPath::from("value")));
    }
}
