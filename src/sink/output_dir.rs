//! The output directory: temporary names, a lock, and an all-or-nothing commit.
//!
//! Every file of a run is written under a hidden temporary name in the output directory (the
//! same file system, so the final rename is atomic) and renamed into place only when every
//! table is complete. Until then, dropping the [`OutputDir`] (a failure, Ctrl-C) removes every
//! temporary file and leaves earlier outputs untouched. A lock file keeps a second run out.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the output directory.
pub const LOCK_NAME: &str = ".zephr-etl.lock";

/// Temporary files are named `.{name}.zephr-etl-tmp-{pid}`.
const TEMP_MARK: &str = ".zephr-etl-tmp-";

/// The output directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot create the output directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another zephr-etl run (pid {pid}) is writing into {dir}; wait for it to finish, or delete \
         {lock} if no such run is alive"
    )]
    Locked {
        dir: PathBuf,
        pid: String,
        lock: PathBuf,
    },
    #[error(
        "{path} already exists; pass --overwrite to replace it, or choose another -o directory"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An output directory that a run holds the lock of.
#[derive(Debug)]
pub struct OutputDir {
    dir: PathBuf,
    lock: PathBuf,
    overwrite: bool,
    /// (temporary path, final path) of every file created so far.
    pending: Vec<(PathBuf, PathBuf)>,
    committed: bool,
    /// Given up (see [`OutputDir::abort`]): nothing more may be created.
    aborted: bool,
}

impl OutputDir {
    /// Creates `dir` if needed and takes its lock.
    pub fn open(dir: &Path, overwrite: bool) -> Result<OutputDir, OutputError> {
        fs::create_dir_all(dir).map_err(|source| OutputError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = dir.join(LOCK_NAME);
        take_lock(dir, &lock)?;
        Ok(OutputDir {
            dir: dir.to_path_buf(),
            lock,
            overwrite,
            pending: Vec::new(),
            committed: false,
            aborted: false,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fails if `relative` exists and `--overwrite` was not given. Called for every final
    /// name before any work starts, so a run never fails late over an existing file.
    pub fn check_free(&self, relative: &Path) -> Result<(), OutputError> {
        let path = self.dir.join(relative);
        if !self.overwrite && fs::symlink_metadata(&path).is_ok() {
            return Err(OutputError::Exists { path });
        }
        Ok(())
    }

    /// Creates the temporary file that becomes `relative` on commit.
    pub fn create(&mut self, relative: &Path) -> Result<(File, PathBuf), OutputError> {
        self.check_free(relative)?;
        let target = self.dir.join(relative);
        let parent = target.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(|source| OutputError::Io {
            path: parent.clone(),
            source,
        })?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|source| OutputError::Io {
                path: temp.clone(),
                source,
            })?;
        if self.aborted {
            // The run was given up while a writer was still busy: leave nothing behind.
            drop(file);
            let _ = fs::remove_file(&temp);
            return Err(OutputError::Io {
                path: temp,
                source: io::Error::other("the run was stopped"),
            });
        }
        self.pending.push((temp.clone(), target));
        Ok((file, temp))
    }

    /// Renames every file into place (after the writers synced them) and releases the lock.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, OutputError> {
        let mut done = Vec::with_capacity(self.pending.len());
        for (temp, target) in &self.pending {
            if self.overwrite && target.is_dir() {
                fs::remove_dir_all(target).map_err(|source| OutputError::Io {
                    path: target.clone(),
                    source,
                })?;
            }
            fs::rename(temp, target).map_err(|source| OutputError::Io {
                path: target.clone(),
                source,
            })?;
            done.push(target.clone());
        }
        // Make the renames themselves durable.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.pending.clear();
        self.committed = true;
        let _ = fs::remove_file(&self.lock);
        Ok(done)
    }
}

impl OutputDir {
    /// Gives the run up: removes every temporary file and the lock, and refuses to create
    /// more. Called on drop, and directly when a failed run cannot wait for every holder of
    /// the directory to let go (a worker blocked on input).
    pub fn abort(&mut self) {
        for (temp, _) in self.pending.drain(..) {
            let _ = fs::remove_file(temp);
        }
        if !self.committed && !self.aborted {
            let _ = fs::remove_file(&self.lock);
        }
        self.aborted = true;
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Takes the lock with `create_new`, which is atomic. A lock left by a process that no longer
/// exists (a crash, `kill -9`) is taken over; a live one is refused.
fn take_lock(dir: &Path, lock: &Path) -> Result<(), OutputError> {
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(lock) {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let pid = fs::read_to_string(lock)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                if process_alive(&pid) {
                    return Err(OutputError::Locked {
                        dir: dir.to_path_buf(),
                        pid,
                        lock: lock.to_path_buf(),
                    });
                }
                // A run that died without cleaning up (kill -9, a power cut) also left its
                // temporary files, named after its pid.
                remove_temporaries_of(dir, &pid);
                let _ = fs::remove_file(lock);
            }
            Err(source) => {
                return Err(OutputError::Io {
                    path: lock.to_path_buf(),
                    source,
                });
            }
        }
    }
    Err(OutputError::Locked {
        dir: dir.to_path_buf(),
        pid: "unknown".into(),
        lock: lock.to_path_buf(),
    })
}

/// Removes the temporary files that the dead run `pid` left in `dir` and in its table
/// folders (`--max-rows-per-file` writes `users/part-00000.parquet`, ...).
fn remove_temporaries_of(dir: &Path, pid: &str) {
    remove_temporaries_in(dir, pid, true);
}

fn remove_temporaries_in(dir: &Path, pid: &str, descend: bool) {
    let suffix = format!("{TEMP_MARK}{pid}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(&suffix) {
            let _ = fs::remove_file(entry.path());
        } else if descend && entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_temporaries_in(&entry.path(), pid, false);
        }
    }
}

fn process_alive(pid: &str) -> bool {
    match pid.parse::<u32>() {
        // On Linux /proc tells; elsewhere assume alive rather than steal a live lock.
        Ok(pid) => !Path::new("/proc").is_dir() || Path::new(&format!("/proc/{pid}")).exists(),
        // A lock being written right now has no pid yet: treat it as alive.
        Err(_) => true,
    }
}
