//! The Delta tables' data files: written straight under their final names inside the table
//! folders (`DEST/users/part-....parquet`), in a folder or a bucket, and removed again when
//! the run fails before its commit.
//!
//! A data file needs no staging: nothing reads a file the table's log does not name, and the
//! name (a per-process random tag and a counter) is taken by no one else. A local file is
//! created exclusively, never through a symlink, and synced before the commit names it; an
//! object is streamed as a multipart upload ([`ObjectUpload`]).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use zephr_dest::upload::{ObjectUpload, Shared};
use zephr_dest::{DestError, FinishedFile, HashingWriter, StagedFile};

/// Where the tables live.
pub enum Root {
    /// A local folder (absolute).
    Local(PathBuf),
    /// An object-store prefix: the store every upload of the run shares.
    Object(Arc<Shared>),
}

/// Creates and tracks the run's data files.
pub struct DataFiles {
    root: Root,
    /// Random, per process: a rerun of an interrupted run never meets the names it left.
    tag: String,
    counter: AtomicU64,
    /// Files written and not (yet) named by a committed table version, '/'-separated
    /// relative to DEST.
    uncommitted: Mutex<BTreeSet<String>>,
}

impl DataFiles {
    /// Data files under `root`.
    pub fn new(root: Root) -> DataFiles {
        DataFiles {
            root,
            tag: zephr_core::random::unique_hex()[..16].to_string(),
            counter: AtomicU64::new(0),
            uncommitted: Mutex::new(BTreeSet::new()),
        }
    }

    /// Where the tables live.
    pub fn root(&self) -> &Root {
        &self.root
    }

    fn uncommitted(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.uncommitted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new data file of `table`; its name (relative to DEST) is the staged file's.
    pub fn create(&self, table: &str) -> Result<(Box<dyn StagedFile>, String), DestError> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let name = format!("{table}/part-{}-{n:05}.zstd.parquet", self.tag);
        let file: Box<dyn StagedFile> = match &self.root {
            Root::Local(dir) => {
                let folder = dir.join(table);
                std::fs::create_dir_all(&folder).map_err(|source| DestError::Io {
                    path: folder.clone(),
                    source,
                })?;
                let path = dir.join(&name);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|source| DestError::Io {
                        path: path.clone(),
                        source,
                    })?;
                Box::new(LocalData {
                    out: HashingWriter::new(file),
                    name: name.clone(),
                    path,
                })
            }
            Root::Object(shared) => Box::new(ObjectUpload::new(shared.clone(), name.clone())),
        };
        self.uncommitted().insert(name.clone());
        Ok((file, name))
    }

    /// The commit named `names`: a later discard keeps them.
    pub fn committed(&self, names: &[String]) {
        let mut uncommitted = self.uncommitted();
        for name in names {
            uncommitted.remove(name);
        }
    }

    /// Removes `name` (relative to DEST); one that is gone already is fine.
    pub fn remove(&self, name: &str) -> Result<(), DestError> {
        match &self.root {
            Root::Local(dir) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DestError::Io {
                        path: dir.join(name),
                        source,
                    });
                }
            },
            Root::Object(shared) => shared
                .store
                .delete(name)
                .map_err(|e| DestError::Cloud(shared.store.error("delete", name, e)))?,
        }
        self.uncommitted().remove(name);
        Ok(())
    }

    /// A failed run: aborts the uploads under way and removes every data file no committed
    /// version names (best effort: what stays is unreferenced, and invisible to readers).
    pub fn discard(&self) {
        if let Root::Object(shared) = &self.root {
            // The shared list of finished objects is not ours to trust: only open uploads.
            shared.forget_finished();
            shared.discard_all();
        }
        let names: Vec<String> = self.uncommitted().iter().cloned().collect();
        for name in names {
            let _ = self.remove(&name);
        }
    }
}

/// A data file in a local folder.
struct LocalData {
    out: HashingWriter<File>,
    name: String,
    path: PathBuf,
}

impl Write for LocalData {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl StagedFile for LocalData {
    fn finish(self: Box<Self>) -> Result<FinishedFile, DestError> {
        let LocalData { out, name, path } = *self;
        let (file, bytes, sha256) = out.into_parts();
        file.sync_all()
            .map_err(|source| DestError::Io { path, source })?;
        Ok(FinishedFile {
            name,
            bytes,
            sha256,
        })
    }
}
