//! Destinations: where a run's files go, and the commit that makes them a dataset.
//!
//! The engine (`zephr_engine::export`) writes through the [`Destination`] trait and never knows
//! whether it writes into a local folder ([`local::LocalDir`]) or an object store. A run:
//! takes the destination's [`lock`](Destination::lock) for its whole length, lets
//! [`recover`](Destination::recover) finish or undo a commit a crash interrupted, writes each
//! output through a [`StagedFile`] (hashed as the bytes pass, see `HashingWriter`), then
//! [`commit`](Destination::commit)s them with the manifest written last, or
//! [`discard`](Destination::discard)s them when it fails.
//!
//! Readers trust `manifest.json` only: a dataset is exactly the files it lists.
//!
//! [`open`] turns a `-o` text into the destination it names: a folder, or an object-store
//! prefix ([`object`]: streamed multipart uploads in [`upload`], a leased conditional lock
//! object in [`lease`]; URLs parsed by [`zephr_store`]).

#![warn(missing_docs)]

pub mod lease;
pub mod local;
pub mod object;
pub mod runs;
pub(crate) mod sync_behind;
pub mod upload;

use std::io::{self, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use zephr_store::store::StoreOptions;
use zephr_store::{CloudError, Location};

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
    #[error("{}", path.display())]
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
    /// Whether the error is about the arguments or the configuration (a malformed or
    /// unsupported URL, a store that cannot be configured): exit status 2, not a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, DestError::Cloud(e) if e.is_usage())
    }
}

/// The destination a `-o` text names: a local folder (created if missing), or an object-store
/// prefix (`s3://`, `gs://`, `az://` and the other spellings [`zephr_store::parse`] accepts,
/// configured from the cloud's environment). Any other scheme is an error
/// ([`DestError::is_usage`]), never a local folder. `store` says how an object store is
/// reached and how long its failing requests are retried.
pub fn open(text: &str, store: StoreOptions) -> Result<Box<dyn Destination>, DestError> {
    match zephr_store::parse(text)? {
        Location::Local(path) => Ok(Box::new(local::LocalDir::open(&path)?)),
        Location::Cloud(url) => Ok(Box::new(object::ObjectDest::open(
            &url,
            object::ObjectOptions {
                store,
                ..object::ObjectOptions::default()
            },
        )?)),
    }
}

/// A place a run writes its dataset into: a local folder, an object-store prefix.
pub trait Destination: Send + Sync {
    /// The folder or URL, for messages (never credentials).
    fn describe(&self) -> String;
    /// Takes the exclusive lock of the destination for the whole run, or fails at once
    /// with [`DestError::Locked`] naming the destination. Released when the guard drops.
    fn lock(&self) -> Result<Box<dyn DestLock>, DestError>;
    /// Finishes or undoes a commit that a crash interrupted, and removes staged leftovers
    /// of dead runs. Called with the lock held, before anything else.
    fn recover(&self) -> Result<(), DestError>;
    /// Relative '/'-separated names of the files (objects) under the destination, except
    /// the tool's own hidden bookkeeping (names starting with '.').
    fn list(&self) -> Result<Vec<String>, DestError>;
    /// A small file whole (the manifest); None when absent.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DestError>;
    /// A new staged output that becomes `name` (relative, '/'-separated) on commit.
    fn create(&self, name: &str) -> Result<Box<dyn StagedFile>, DestError>;
    /// The name a file created as `name` has once committed, as its [`FinishedFile`] and the
    /// manifest give it: `name` itself in a folder, the run-tagged name in a bucket.
    fn final_name(&self, name: &str) -> String {
        name.to_string()
    }
    /// Makes every staged file final, writes the manifest LAST and atomically, then
    /// removes `commit.remove` (the previous dataset's files this run did not rewrite).
    fn commit(&self, commit: Commit) -> Result<(), DestError>;
    /// Drops the staged files of a failed run (best effort).
    fn discard(&self);
}

/// The lock of a destination; dropping it releases the lock.
pub trait DestLock: Send {}

/// An output being written. Dropped without [`StagedFile::finish`], it is not part of any
/// commit (the destination's discard or recovery removes its bytes).
pub trait StagedFile: Write + Send {
    /// Flushes and makes the bytes durable (fsync / completes the multipart upload).
    fn finish(self: Box<Self>) -> Result<FinishedFile, DestError>;
}

/// A staged output made durable, ready to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedFile {
    /// The final relative name.
    pub name: String,
    /// Bytes written.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// What [`Destination::commit`] makes final.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The staged files this commit makes final.
    pub files: Vec<FinishedFile>,
    /// The bytes of `manifest.json`, written after every file is in place.
    pub manifest: Vec<u8>,
    /// Names of the previous dataset's files to remove once the manifest is written.
    pub remove: Vec<String>,
    /// Whether a file that exists at a final name may be replaced.
    pub overwrite: bool,
}

/// Counts and hashes the bytes written through it, so that no output is ever read back to
/// be described in the manifest.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> HashingWriter<W> {
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
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer took: a short write is hashed as short.
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks that `name` is a relative '/'-separated name that stays inside the destination.
pub(crate) fn check_name(name: &str) -> Result<(), DestError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(DestError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The test-only fault hook: with `ZEPHR_ETL_FAULT=commit:STEP` in the environment, the
/// process aborts (no destructors run, as with `kill -9`) when a commit reaches `STEP`;
/// `commit:STEP#N` aborts the N-th time (a run with state events commits twice). With
/// `ZEPHR_ETL_FAULT=pause:STEP:MS` it sleeps MS milliseconds there, so that a test can act
/// in the middle of a run. The steps are the commit protocol's: `a` (every file finished),
/// `b` (journal written), `c`, `d-mid` (one file moved), `d`, `e` (manifest written),
/// `f-mid`, `f`, `g`; a run into PostgreSQL (`zephr_engine::postgres`) has its own: `pg-locked` (the
/// transaction and its lock taken), `pg-copy` (before each chunk of rows of the `COPY`),
/// `pg-copied`, `pg-applied` (the mode's statements done) and `pg-commit` (just before
/// `COMMIT`). Unset, it costs one environment lookup per process.
///
/// Compiled into debug builds only (what `cargo test` drives): a release binary has no such
/// hook, and the variable means nothing to it.
#[cfg(debug_assertions)]
#[doc(hidden)]
pub fn fault(step: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let Some(spec) = FAULT.get_or_init(|| std::env::var("ZEPHR_ETL_FAULT").ok()) else {
        return;
    };
    if let Some(at) = spec.strip_prefix("commit:") {
        let (at, nth) = match at.split_once('#') {
            Some((at, n)) => (at, n.parse().unwrap_or(1)),
            None => (at, 1),
        };
        if at == step && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            std::process::abort();
        }
    }
    if let Some(rest) = spec.strip_prefix("pause:")
        && let Some((at, ms)) = rest.split_once(':')
        && at == step
    {
        let ms: u64 = ms.parse().unwrap_or(0).min(60_000);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The release build's fault hook: nothing (see the debug build's).
#[cfg(not(debug_assertions))]
#[doc(hidden)]
#[inline(always)]
pub fn fault(_step: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_passes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        let (inner, bytes, sha) = w.into_parts();
        assert_eq!(inner, b"abc");
        assert_eq!(bytes, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_stay_inside() {
        for good in ["users.csv", "csv/users/part-00000.csv", "a..b"] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a//b",
            "a/./b",
            "a/../b",
            "a\\b",
            "x/",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
