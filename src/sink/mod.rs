//! Writers: column batches to files.
//!
//! Every output format implements [`TableWriter`]. A writer must be finished explicitly:
//! the Parquet footer and the final flush and fsync happen in [`TableWriter::finish`], never in
//! `Drop`, so a failed run cannot leave a file that looks complete.

pub mod csv;
pub mod output_dir;
pub mod parquet;

use std::path::PathBuf;

use crate::table::ColumnBatch;

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

/// Flushes a buffered file and syncs it to disk: the last step of every writer's `finish`.
pub fn flush_and_sync(
    out: std::io::BufWriter<std::fs::File>,
    path: &std::path::Path,
) -> Result<std::fs::File, WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(file)
}

/// Bytes written between two [`start_writeback`] calls.
pub const WRITEBACK_EVERY: u64 = 8 << 20;

/// Asks the kernel to start writing `file`'s dirty pages to disk now, without waiting.
///
/// Every output is fsynced before it is renamed into place; without this, the whole output
/// (hundreds of MB) would be written back only then, and the run would sit idle at the end
/// waiting for the disk. Started as the data is produced, the final fsync has little left.
/// Best effort: on other systems, or if the call fails, the final fsync does all the work.
pub fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open for the
        // duration of the call; offset 0 and length 0 mean the whole file.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}
