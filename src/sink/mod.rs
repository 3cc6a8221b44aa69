//! Writers: column batches to files.
//!
//! Every output format (CSV, Parquet, xlsx) implements [`TableWriter`]. A writer must be finished explicitly:
//! the Parquet footer and the final flush and fsync happen in [`TableWriter::finish`], never in
//! `Drop`, so a failed run cannot leave a file that looks complete.

pub mod csv;
pub mod output_dir;
pub mod parquet;
pub mod sync_behind;
pub mod xlsx;

use std::path::PathBuf;

use crate::table::ColumnBatch;

/// The buffer in front of every table file. Writers hand over whole batches (hundreds of KiB
/// of CSV, or a Parquet page) that `BufWriter` passes straight to the file once they are at
/// least this large; a larger buffer would only copy every byte once more on the way (measured:
/// with 1 MiB, those copies were about 1.7% of a conversion's instructions). Small writes, such
/// as headers and page headers, are still gathered.
pub const FILE_BUFFER_BYTES: usize = 64 << 10;

/// A writer failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write Parquet file {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    #[error("cannot write Excel workbook {path}: {source}")]
    Xlsx {
        path: PathBuf,
        #[source]
        source: Box<rust_xlsxwriter::XlsxError>,
    },
}

/// What a finished writer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// The temporary path the bytes were written to (renamed into place on commit).
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// Consumes one table's batches in order and writes them to a file.
pub trait TableWriter: Send {
    /// Appends the rows of `batch`.
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError>;
    /// Flushes, writes any footer, syncs the file to disk, and reports what was written.
    fn finish(self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError>;
}

/// Flushes a buffered file and syncs it to disk, all at the end: [`finish_file`] without
/// background syncs, for files written in one go (fetch's merge of segments).
pub fn flush_and_sync(
    out: std::io::BufWriter<std::fs::File>,
    path: &std::path::Path,
) -> Result<std::fs::File, WriteError> {
    finish_file(out, None, path)
}

/// The last step of every table writer's `finish`: flushes `out`, waits for the background
/// sync `behind` it, if any (and fails if that failed), then syncs what is left.
pub fn finish_file(
    out: std::io::BufWriter<std::fs::File>,
    behind: Option<sync_behind::SyncBehind>,
    path: &std::path::Path,
) -> Result<std::fs::File, WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    if let Some(behind) = behind {
        behind.finish().map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    Ok(file)
}
