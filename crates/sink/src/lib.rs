//! Writers: column batches to files.
//!
//! Every output format (CSV, Parquet, xlsx) implements [`TableWriter`]. A writer must be finished explicitly:
//! the Parquet footer and the final flush and fsync happen in [`TableWriter::finish`], never in
//! `Drop`, so a failed run cannot leave a file that looks complete.

#![warn(missing_docs)]

pub mod csv;
pub mod parquet;
pub mod xlsx;

use std::path::PathBuf;

use zephr_core::table::ColumnBatch;
use zephr_dest::{DestError, StagedFile};

/// The buffer in front of every table file. Writers hand over whole batches (hundreds of KiB
/// of CSV, or a Parquet page) that `BufWriter` passes straight to the file once they are at
/// least this large; a larger buffer would only copy every byte once more on the way (measured:
/// with 1 MiB, those copies were about 1.7% of a conversion's instructions). Small writes, such
/// as headers and page headers, are still gathered.
pub(crate) const FILE_BUFFER_BYTES: usize = 64 << 10;

/// A writer failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing, flushing or syncing the staged file failed (a destination's error is carried
    /// here too, see [`dest_error`]).
    #[error("cannot write {path}")]
    Io {
        /// The file's final name in the destination.
        path: PathBuf,
        /// What the file system or destination reported.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet encoder refused a batch or could not write the footer.
    #[error("cannot write Parquet file {path}")]
    Parquet {
        /// The file's final name in the destination.
        path: PathBuf,
        /// The `parquet` crate's error.
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    /// Building or saving the workbook failed.
    #[error("cannot write Excel workbook {path}")]
    Xlsx {
        /// The workbook's final name, or `TABLE.xlsx` before its file is opened.
        path: PathBuf,
        /// The `rust_xlsxwriter` error (boxed: it is large).
        #[source]
        source: Box<rust_xlsxwriter::XlsxError>,
    },
}

/// What a finished writer produced: a staged file, ready to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// The file's final name in the destination (`users.csv`, `csv/users/part-00000.csv`).
    pub name: String,
    /// Data rows in the file (header rows not counted).
    pub rows: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the bytes, computed as they were written.
    pub sha256: String,
}

/// Opens the staged file of part `part` (0 for the first) of one table in one format and
/// gives its final name (for messages); the engine decides the name.
pub type CreateFile =
    Box<dyn FnMut(usize) -> Result<(Box<dyn StagedFile>, String), WriteError> + Send>;

/// Consumes one table's batches in order and writes them to a file.
pub trait TableWriter: Send {
    /// Appends the rows of `batch`.
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError>;
    /// Flushes, writes any footer, syncs the file to disk, and reports what was written.
    fn finish(self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError>;
}

/// The last step of every table writer's `finish`: flushes `out`, then finishes the staged
/// file (its final sync) and describes it with `rows`.
pub fn finish_file(
    out: std::io::BufWriter<Box<dyn StagedFile>>,
    rows: u64,
    name: &str,
) -> Result<WrittenFile, WriteError> {
    let staged = out.into_inner().map_err(|e| WriteError::Io {
        path: PathBuf::from(name),
        source: e.into_error(),
    })?;
    let done = staged.finish().map_err(|e| dest_error(name, e))?;
    Ok(WrittenFile {
        name: done.name,
        rows,
        bytes: done.bytes,
        sha256: done.sha256,
    })
}

/// A destination's error as a writer's.
pub fn dest_error(name: &str, error: DestError) -> WriteError {
    match error {
        DestError::Io { source, .. } => WriteError::Io {
            path: PathBuf::from(name),
            source,
        },
        other => WriteError::Io {
            path: PathBuf::from(name),
            source: std::io::Error::other(other),
        },
    }
}
