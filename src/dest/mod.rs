//! Destinations: where a run's files go, and the commit protocol that makes them a dataset.
//!
//! The engine writes every output through a [`Destination`]: it takes the destination's lock,
//! lets it [`recover`](Destination::recover) from an interrupted earlier run, streams each file
//! into a [`StagedFile`], and ends with one [`Commit`] that makes the new files the dataset
//! (the manifest last, as the commit record) and only then removes the previous dataset's
//! files. The engine never knows whether it writes into a folder or a bucket.
//!
//! [`crate::cloud`] tells a local path from an object-store URL (`s3://`, `gs://`, `az://`,
//! ...); [`object`] is the object-store destination (streamed multipart uploads in
//! [`upload`], a conditional lock object in [`lease`]); [`HashingWriter`] counts and hashes
//! bytes as they pass, for the manifest.

pub mod lease;
pub mod object;
pub mod upload;

use std::io::{self, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::cloud::CloudError;

/// Where a run's output files go: a local folder or an object-store prefix.
pub trait Destination: Send + Sync {
    /// The folder or URL, for messages; never credentials.
    fn describe(&self) -> String;
    /// Takes the destination's lock for the whole run; refused at once when another run holds it.
    fn lock(&self) -> Result<Box<dyn DestLock>, DestError>;
    /// Finishes or undoes an interrupted commit and drops dead runs' leftovers (lock held).
    fn recover(&self) -> Result<(), DestError>;
    /// Relative `/`-separated names of the files there; hidden bookkeeping (`.`-names) excluded.
    fn list(&self) -> Result<Vec<String>, DestError>;
    /// A small file whole (the manifest), `None` when it does not exist.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DestError>;
    /// A new file that becomes `name` (or the run-unique name its [`FinishedFile`] gives) on commit.
    fn create(&self, name: &str) -> Result<Box<dyn StagedFile>, DestError>;
    /// Staged files become final, the manifest LAST, then `commit.remove` is removed.
    fn commit(&self, commit: Commit) -> Result<(), DestError>;
    /// A failed run: drops its staged output (aborts multipart uploads).
    fn discard(&self);
}

/// The destination's lock, held while it lives.
pub trait DestLock: Send {}

/// A file being written; durable once [`finish`](StagedFile::finish)ed.
pub trait StagedFile: std::io::Write + Send {
    /// Makes the file durable (fsync / complete multipart) and says what it holds.
    fn finish(self: Box<Self>) -> Result<FinishedFile, DestError>;
}

/// A file written in full, not yet part of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedFile {
    /// Final relative name.
    pub name: String,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// What makes a run's files the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub files: Vec<FinishedFile>,
    /// The manifest's bytes, written last as the commit record.
    pub manifest: Vec<u8>,
    /// The previous dataset's files that the new one does not keep, removed after the manifest.
    pub remove: Vec<String>,
    /// Whether a dataset already there may be replaced.
    pub overwrite: bool,
}

/// Why a destination could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// Another run holds the destination's lock.
    #[error("another zephr-etl run is writing into {dest}; wait for it to finish")]
    Locked {
        /// The destination, as [`Destination::describe`] gives it.
        dest: String,
    },
    /// A file exists at a final name and replacing was not asked for.
    #[error("{name} already exists")]
    Exists {
        /// The destination and the name, for messages (`out/users.csv`).
        name: String,
    },
    /// The destination (or a folder on the way to an output) is not a directory.
    #[error("{path} is not a directory")]
    NotADir {
        /// The offending path.
        path: PathBuf,
    },
    /// A symbolic link where the tool would write, or on the way there: never followed.
    #[error("{path} is a symbolic link; zephr-etl never writes through one (remove it)")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A name that would leave the destination (`..`, absolute, empty parts).
    #[error("{name:?} is not a file name inside the destination")]
    BadName {
        /// The name.
        name: String,
    },
    /// The commit journal of an interrupted run cannot be read.
    #[error("{path} is damaged ({problem}); move it away to start afresh")]
    Journal {
        /// The journal.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The object store refused or failed: no such bucket, access denied, wrong region, a
    /// lock lost to another run, or another failure after the retries.
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

impl DestError {
    /// Whether the error is one of usage or configuration (exit 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, DestError::Cloud(e) if e.is_usage())
    }
}

/// Counts and hashes the bytes written through it, as they pass.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner writer, the byte count and the lowercase hex SHA-256.
    pub fn into_parts(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Hash only what the inner writer took: a short write must not hash bytes twice.
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (inner, bytes, sha) = w.into_parts();
        assert_eq!(inner, b"abc");
        assert_eq!(bytes, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
