//! A local folder as a [`Destination`]: a kernel lock, unpredictable staging, and a journaled
//! commit that a crash at any instant cannot break.
//!
//! **Lock.** `flock` (non-blocking) on the folder itself, opened `O_RDONLY|O_DIRECTORY`. The
//! kernel releases it when the process dies, however it dies, and it means the same in every
//! PID namespace: no pid is written or guessed. There is no lock file: nothing anyone can
//! delete to let a second run in, and nothing a run removes when it ends, so a run never
//! removes another's lock. A `.zephr-etl.lock` file is what older versions locked: one still
//! locked keeps this run out, one nobody holds is a leftover and goes.
//!
//! **Staging.** Outputs are written into `DIR/.zephr-etl-staging-XXXXXX/` (mkdtemp: a random
//! name, mode 0700), each file created with `O_CREAT|O_EXCL|O_NOFOLLOW`, synced behind the
//! writer (`SyncBehind`) and hashed as it is written (`HashingWriter`).
//!
//! **Commit** (the steps the fault hook [`fault`] names):
//! - a. every data file is finished (fsynced) in staging; each must still be there (a
//!   staging folder removed during the run fails the commit, nothing replaced);
//! - b. the journal `DIR/.zephr-etl-commit.json` is written atomically (temporary file, fsync,
//!   rename, fsync of DIR): the staging folder, each (staged, final) pair with the file's size
//!   and SHA-256, the manifest's bytes, the previous manifest's bytes and the names to remove.
//!   From here the commit is decided and recovery rolls it forward;
//! - c. the old `manifest.json` is removed, so no reader follows it to new bytes;
//! - d. each staged file is moved to its final name: without overwrite by `link` + `unlink`
//!   (`link` fails if anything, even a dangling symlink, appeared at the name: the commit is
//!   then undone and the run fails, nothing replaced); with overwrite by `rename` (which
//!   replaces a symlink itself, never what it points to). Folders on the way are created
//!   inside DIR; one that is a symlink or not a folder is refused;
//! - e. `manifest.json` is written atomically: the record readers trust;
//! - f. the previous dataset's files this run did not rewrite are removed (never through a
//!   symlink), with folders they leave empty;
//! - g. the journal is deleted, then the staging folder.
//!
//! [`LocalDir::recover`] redoes c–g from a journal it finds, and removes every staging folder
//! no journal names: those of dead runs, which is safe because the caller holds the lock. A
//! journal is trusted only for names this tool makes (a staging folder `.zephr-etl-staging-*`,
//! staged names of digits, final names inside DIR that are neither hidden nor the manifest),
//! and a staged file that is gone counts as moved only when its final name holds exactly that
//! file (size and SHA-256); anything else is refused before anything is moved or removed.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::sync_behind::SyncBehind;
use super::{
    Commit, DestError, DestLock, Destination, FinishedFile, HashingWriter, StagedFile, check_name,
    fault,
};
use zephr_core::manifest::MANIFEST_NAME;

/// The lock file of older versions (this one locks the folder itself): honoured while another
/// run holds it, removed when nobody does.
pub(crate) const LEGACY_LOCK_NAME: &str = ".zephr-etl.lock";
/// The commit journal's name.
pub const JOURNAL_NAME: &str = ".zephr-etl-commit.json";
/// What staging folders (and atomic writes' temporary files) are named with.
pub(crate) const STAGING_PREFIX: &str = ".zephr-etl-staging-";
/// The journal layout this version writes.
const JOURNAL_VERSION: u32 = 1;

/// A local output folder.
pub struct LocalDir {
    root: PathBuf,
    /// This run created the folder: a failed run removes it again (when it is empty).
    created: bool,
    committed: AtomicBool,
    /// Shared with the lock guard, which removes the folder before it lets the lock go.
    remove_root: Arc<AtomicBool>,
    state: Mutex<Staging>,
}

/// The current run's staging folder and the files staged in it.
#[derive(Default)]
struct Staging {
    dir: Option<PathBuf>,
    next: u64,
    /// Final name → staged file name (inside `dir`).
    names: HashMap<String, String>,
    discarded: bool,
}

impl Staging {
    /// The run's staging folder in `root`, made (`mkdtemp`, mode 0700) the first time.
    fn dir_in(&mut self, root: &Path) -> Result<PathBuf, DestError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(root)
            .map_err(io_at(root))?
            .keep();
        self.dir = Some(dir.clone());
        Ok(dir)
    }
}

/// What the journal holds: everything recovery needs to finish (or undo) the commit.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    version: u32,
    /// The staging folder's name in DIR.
    staging: String,
    /// (staged name inside the staging folder, final name).
    moves: Vec<(String, String)>,
    manifest: String,
    previous_manifest: Option<String>,
    remove: Vec<String>,
    overwrite: bool,
    /// Each moved file's size and SHA-256, in the order of `moves` (empty in journals of
    /// older versions, which recorded none).
    #[serde(default)]
    sums: Vec<Sum>,
}

/// A staged file's size and SHA-256, to tell it at its final name once it was moved.
#[derive(Debug, Serialize, Deserialize)]
struct Sum {
    bytes: u64,
    sha256: String,
}

impl Journal {
    /// Checks that every name is one this tool makes: a journal found in DIR may have been
    /// planted, and recovery must never move a file across DIR's border. Says what is wrong.
    fn check_names(&self) -> Result<(), String> {
        if self.version != JOURNAL_VERSION {
            return Err(format!("journal version {}", self.version));
        }
        let staging = &self.staging;
        if !staging.starts_with(STAGING_PREFIX) || staging.contains(['/', '\\', '\0']) {
            return Err(format!(
                "staging folder {staging:?} is not one zephr-etl makes"
            ));
        }
        for (staged, name) in &self.moves {
            if staged.is_empty() || !staged.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("staged name {staged:?} is not one zephr-etl makes"));
            }
            let hidden = name.split('/').any(|part| part.starts_with('.'));
            if check_name(name).is_err() || hidden || name == MANIFEST_NAME {
                return Err(format!(
                    "final name {name:?} is not a data file's name inside the folder"
                ));
            }
        }
        if let Some(name) = self.remove.iter().find(|n| check_name(n).is_err()) {
            return Err(format!("name to remove {name:?} is not inside the folder"));
        }
        if !self.sums.is_empty() && self.sums.len() != self.moves.len() {
            return Err(format!(
                "{} sizes and hashes for {} files",
                self.sums.len(),
                self.moves.len()
            ));
        }
        Ok(())
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DestError + '_ {
    move |source| DestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock_state<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the entries of `dir` (creations, renames, removals) durable; best effort, as some
/// file systems refuse to sync a folder. The crate's one such routine (the fetch's journal
/// and state file use it too).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` with `bytes`, atomically and durably: a temporary file beside it, named
/// `prefix` and random characters, created exclusively (so never through a symlink) and
/// readable like the data files, then fsynced, renamed over `path` (a symlink there is
/// replaced, not followed), and the folder synced. A crash leaves the old file or the new one,
/// whole; a failure removes the temporary file. The tool's one atomic write: the manifest and
/// journal of a folder, the fetch's resume journal and its state file.
pub fn write_atomic(path: &Path, bytes: &[u8], prefix: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // 0644 rather than tempfile's 0600: loaders may run as another user.
    let mut temp = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

fn exists_no_follow(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The error of a staged file that is not there (nor at its final name).
fn missing(staged: &Path) -> DestError {
    io_at(staged)(io::Error::new(
        io::ErrorKind::NotFound,
        "the staged file is missing (was the staging folder removed during the run?)",
    ))
}

impl LocalDir {
    /// The folder `root`, created (with its parents) when missing. `root` itself may be a
    /// symlink to a folder: that is the user's choice; nothing inside it is ever followed.
    pub fn open(root: &Path) -> Result<LocalDir, DestError> {
        let created = match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => false,
            Ok(_) => {
                return Err(DestError::NotADir {
                    path: root.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(io_at(parent))?;
                }
                match fs::create_dir(root) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(io_at(root)(e)),
                }
            }
            Err(e) => return Err(io_at(root)(e)),
        };
        Ok(LocalDir {
            root: root.to_path_buf(),
            created,
            committed: AtomicBool::new(false),
            remove_root: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(Staging::default()),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn shown(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// Creates the folders of `name`'s parent inside the root, refusing a symlink or a
    /// non-folder on the way; returns the final path.
    fn prepare_parent(&self, name: &str) -> Result<PathBuf, DestError> {
        self.walk_parent(name, true)
    }

    /// Fails when a folder on the way to `name` is a symlink or not a folder (without
    /// creating anything).
    fn check_parent(&self, name: &str) -> Result<(), DestError> {
        self.walk_parent(name, false).map(drop)
    }

    /// Walks the folders of `name`'s parent inside the root, refusing a symlink or a
    /// non-folder on the way. A missing folder is created when `create`; otherwise the walk
    /// stops there (nothing below it can be in the way). Returns the final path.
    fn walk_parent(&self, name: &str, create: bool) -> Result<PathBuf, DestError> {
        check_name(name)?;
        let mut path = self.root.clone();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(DestError::Symlink { path });
                }
                Ok(meta) if !meta.is_dir() => return Err(DestError::NotADir { path }),
                Ok(_) => {}
                Err(_) if !create => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Created meanwhile: check it again rather than trust it.
                        let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
                        if !meta.is_dir() {
                            return Err(DestError::NotADir { path });
                        }
                    }
                    Err(e) => return Err(io_at(&path)(e)),
                },
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(self.root.join(name))
    }

    /// Whether `DIR/name` is a regular file (reached through no symlink) with exactly the
    /// size and SHA-256 of `sum`: a staged file moved there. False without a `sum`.
    fn holds(&self, name: &str, sum: Option<&Sum>) -> bool {
        let Some(sum) = sum else {
            return false;
        };
        if self.check_parent(name).is_err() {
            return false;
        }
        let path = self.root.join(name);
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == sum.bytes) {
            return false;
        }
        let Ok(mut file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        else {
            return false;
        };
        let mut hashed = HashingWriter::new(io::sink());
        if io::copy(&mut file, &mut hashed).is_err() {
            return false;
        }
        let (_, bytes, sha256) = hashed.into_parts();
        bytes == sum.bytes && sha256 == sum.sha256
    }

    /// Checks, before recovery acts on `journal`, that its staging folder is a folder (or
    /// gone) and that each staged file is there as a regular file, or was moved: its final
    /// name holds exactly that file. Says what is wrong.
    fn check_staged(&self, journal: &Journal) -> Result<(), String> {
        let staging = self.root.join(&journal.staging);
        match fs::symlink_metadata(&staging) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a folder", journal.staging)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", journal.staging)),
        }
        for (i, (staged, name)) in journal.moves.iter().enumerate() {
            let shown = format!("{}/{staged}", journal.staging);
            match fs::symlink_metadata(staging.join(staged)) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => return Err(format!("staged file {shown} is not a regular file")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !self.holds(name, journal.sums.get(i)) {
                        return Err(format!(
                            "staged file {shown} is missing and {name} is not that file"
                        ));
                    }
                }
                Err(e) => return Err(format!("staged file {shown}: {e}")),
            }
        }
        Ok(())
    }

    /// Step d for one file. A staged file that is gone was moved before (recovery) only when
    /// `DIR/name` holds exactly it (`sum`); otherwise the commit cannot go on.
    fn move_into_place(
        &self,
        staged: &Path,
        name: &str,
        overwrite: bool,
        sum: Option<&Sum>,
    ) -> Result<(), DestError> {
        let staged_meta = match fs::symlink_metadata(staged) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return if self.holds(name, sum) {
                    Ok(())
                } else {
                    Err(missing(staged))
                };
            }
            Err(e) => return Err(io_at(staged)(e)),
        };
        let target = self.prepare_parent(name)?;
        if overwrite {
            if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                return Err(DestError::Exists {
                    name: self.shown(name),
                });
            }
            // rename replaces the entry at `target`, a symlink included, never its target.
            return fs::rename(staged, &target).map_err(io_at(&target));
        }
        match fs::hard_link(staged, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Linked before a crash, not yet unlinked: the same file, so go on.
                let same = fs::symlink_metadata(&target)
                    .is_ok_and(|m| m.ino() == staged_meta.ino() && m.dev() == staged_meta.dev());
                if !same {
                    return Err(DestError::Exists {
                        name: self.shown(name),
                    });
                }
            }
            Err(e) => return Err(io_at(&target)(e)),
        }
        fs::remove_file(staged).map_err(io_at(staged))
    }

    /// Writes `bytes` to `DIR/name` atomically: a temporary file (named like a staging
    /// folder, so recovery sweeps it), fsync, rename, fsync of DIR.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), DestError> {
        let target = self.root.join(name);
        write_atomic(&target, bytes, STAGING_PREFIX).map_err(io_at(&target))
    }

    /// Removes a previous dataset's file `name` (step f): never through a symlink on the
    /// way, and the folders it leaves empty. Best effort: the manifest is already written.
    fn remove_old(&self, name: &str) {
        if check_name(name).is_err() {
            return;
        }
        let parts: Vec<&str> = name.split('/').collect();
        let mut path = self.root.clone();
        for part in &parts[..parts.len() - 1] {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() && !meta.file_type().is_symlink() => {}
                _ => return,
            }
        }
        let target = self.root.join(name);
        match fs::symlink_metadata(&target) {
            Ok(meta) if !meta.is_dir() => {
                // A symlink is removed itself; what it points to is left alone.
                let _ = fs::remove_file(&target);
            }
            _ => return,
        }
        let mut folder = target.parent().map(Path::to_path_buf);
        while let Some(dir) = folder {
            if dir == self.root || fs::remove_dir(&dir).is_err() {
                break;
            }
            folder = dir.parent().map(Path::to_path_buf);
        }
    }

    /// Steps c to g of `journal`. A file that appeared at a final name without overwrite
    /// undoes the commit and returns [`DestError::Exists`].
    fn apply(&self, journal: &Journal) -> Result<(), DestError> {
        let staging = self.root.join(&journal.staging);
        // c.
        let manifest = self.root.join(MANIFEST_NAME);
        match fs::remove_file(&manifest) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&manifest)(e)),
        }
        fault("c");
        // d.
        let mut parents = HashSet::new();
        for (i, (staged, name)) in journal.moves.iter().enumerate() {
            let sum = journal.sums.get(i);
            match self.move_into_place(&staging.join(staged), name, journal.overwrite, sum) {
                Ok(()) => {}
                // Without overwrite nothing was replaced yet: undo, the previous dataset
                // stays whole.
                Err(e @ (DestError::Exists { .. } | DestError::Io { .. }))
                    if !journal.overwrite =>
                {
                    self.roll_back(journal);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            if let Some(parent) = self.root.join(name).parent() {
                parents.insert(parent.to_path_buf());
            }
            if i == 0 {
                fault("d-mid");
            }
        }
        for parent in &parents {
            sync_dir(parent);
        }
        sync_dir(&staging);
        fault("d");
        // e.
        self.write_atomic(MANIFEST_NAME, journal.manifest.as_bytes())?;
        fault("e");
        // f.
        let written: HashSet<&str> = journal.moves.iter().map(|(_, n)| n.as_str()).collect();
        for (i, name) in journal.remove.iter().enumerate() {
            if written.contains(name.as_str()) || name == MANIFEST_NAME {
                continue;
            }
            self.remove_old(name);
            if i == 0 {
                fault("f-mid");
            }
        }
        sync_dir(&self.root);
        fault("f");
        // g.
        let path = self.root.join(JOURNAL_NAME);
        fs::remove_file(&path).map_err(io_at(&path))?;
        sync_dir(&self.root);
        fault("g");
        remove_entry(&staging);
        Ok(())
    }

    /// Undoes steps c and d of `journal`: the files it moved go back into staging, the
    /// previous manifest is written back, the journal and the staging folder removed.
    fn roll_back(&self, journal: &Journal) {
        let staging = self.root.join(&journal.staging);
        for (i, (staged, name)) in journal.moves.iter().enumerate().rev() {
            let staged = staging.join(staged);
            // Without overwrite a staged file is unlinked only once linked at its name; it
            // goes back only when that name holds exactly this run's file.
            if !exists_no_follow(&staged) && self.holds(name, journal.sums.get(i)) {
                let _ = fs::rename(self.root.join(name), &staged);
            }
        }
        if let Some(previous) = &journal.previous_manifest {
            let _ = self.write_atomic(MANIFEST_NAME, previous.as_bytes());
        }
        let _ = fs::remove_file(self.root.join(JOURNAL_NAME));
        sync_dir(&self.root);
        remove_entry(&staging);
    }
}

/// Removes a file, a symlink (itself) or a folder tree (never following symlinks in it).
fn remove_entry(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The lock of a [`LocalDir`]: the folder itself, open and `flock`ed; closing it unlocks.
struct LocalLock {
    _folder: File,
    root: PathBuf,
    remove_root: Arc<AtomicBool>,
}

impl DestLock for LocalLock {}

impl Drop for LocalLock {
    fn drop(&mut self) {
        if self.remove_root.load(Ordering::SeqCst) {
            // Only an empty folder goes: remove_dir refuses anything else. Still locked, so
            // a run that opened it meanwhile finds it gone once it gets the lock (see `lock`).
            let _ = fs::remove_dir(&self.root);
        }
    }
}

impl LocalDir {
    /// Keeps a run of an older version out, which locked `DIR/.zephr-etl.lock` instead of
    /// the folder: such a file still locked means one is writing. One nobody holds is a
    /// leftover and is removed (a symlink there goes itself, never what it names; anything
    /// else there is left alone).
    fn clear_legacy_lock(&self) -> Result<(), DestError> {
        let path = self.root.join(LEGACY_LOCK_NAME);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&path)(e)),
        };
        // Held (locked) until the file is removed, so that an older run that opened it
        // meanwhile finds it gone and starts again (then on a new file, which this version
        // does not see: runs of two versions at once are kept apart only up to there).
        let _held = if meta.is_file() {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_at(&path))?;
            match file.try_lock() {
                Ok(()) => Some(file),
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(DestError::Locked {
                        dest: self.describe(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_at(&path)(e)),
            }
        } else if meta.file_type().is_symlink() {
            // Not a lock any run made: the link goes, never what it names.
            None
        } else {
            // A folder or anything else: not a lock file; left alone.
            return Ok(());
        };
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&path)(e)),
            _ => Ok(()),
        }
    }
}

impl Destination for LocalDir {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn lock(&self) -> Result<Box<dyn DestLock>, DestError> {
        // A handful of tries: each retry means the folder this run opened was removed (by a
        // failed run that had created it) or replaced before this run got its lock.
        for _ in 0..16 {
            let folder = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&self.root)
                .map_err(io_at(&self.root))?;
            match folder.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(DestError::Locked {
                        dest: self.describe(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_at(&self.root)(e)),
            }
            let same = match (folder.metadata(), fs::metadata(&self.root)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            self.clear_legacy_lock()?;
            // A new run over this folder: nothing staged, nothing given up yet.
            *lock_state(&self.state) = Staging::default();
            self.remove_root.store(false, Ordering::SeqCst);
            return Ok(Box::new(LocalLock {
                _folder: folder,
                root: self.root.clone(),
                remove_root: self.remove_root.clone(),
            }));
        }
        Err(DestError::Locked {
            dest: self.describe(),
        })
    }

    fn recover(&self) -> Result<(), DestError> {
        let path = self.root.join(JOURNAL_NAME);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            // Not a journal of ours: the link goes, never what it names.
            fs::remove_file(&path).map_err(io_at(&path))?;
        }
        match fs::read(&path) {
            Ok(bytes) => {
                let journal: Journal =
                    serde_json::from_slice(&bytes).map_err(|e| DestError::Journal {
                        path: path.clone(),
                        problem: e.to_string(),
                    })?;
                // Validated whole before anything is moved or removed.
                if let Err(problem) = journal
                    .check_names()
                    .and_then(|()| self.check_staged(&journal))
                {
                    return Err(DestError::Journal { path, problem });
                }
                match self.apply(&journal) {
                    // Undone: the previous dataset is back, which is what recovery is for.
                    Ok(()) | Err(DestError::Exists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
        // No journal names a staging folder now: every one left is a dead run's.
        let entries = fs::read_dir(&self.root).map_err(io_at(&self.root))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                remove_entry(&entry.path());
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, DestError> {
        let mut names = Vec::new();
        // Datasets are at most three folders deep (csv/users/part-00000.csv); a little more
        // is looked at, and no deeper, so a deep tree cannot keep a run busy.
        let mut pending = vec![(self.root.clone(), String::new(), 0u32)];
        while let Some((dir, prefix, depth)) = pending.pop() {
            let entries = fs::read_dir(&dir).map_err(io_at(&dir))?;
            for entry in entries {
                let entry = entry.map_err(io_at(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let relative = format!("{prefix}{name}");
                let kind = entry.file_type().map_err(io_at(&entry.path()))?;
                if kind.is_dir() {
                    if depth < 4 {
                        pending.push((entry.path(), format!("{relative}/"), depth + 1));
                    }
                } else {
                    names.push(relative);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DestError> {
        check_name(name)?;
        let path = self.root.join(name);
        match fs::symlink_metadata(&path) {
            // Not a file this tool wrote; never read through it.
            Ok(meta) if !meta.is_file() => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        }
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn create(&self, name: &str) -> Result<Box<dyn StagedFile>, DestError> {
        check_name(name)?;
        let mut state = lock_state(&self.state);
        if state.discarded {
            return Err(io_at(&self.root)(io::Error::other("the run was stopped")));
        }
        if state.names.contains_key(name) {
            return Err(DestError::BadName {
                name: name.to_string(),
            });
        }
        let dir = state.dir_in(&self.root)?;
        state.next += 1;
        let staged = format!("{:06}", state.next);
        state.names.insert(name.to_string(), staged.clone());
        drop(state);
        Ok(Box::new(LocalFile::create_new(&dir.join(staged), name)?))
    }

    fn commit(&self, commit: Commit) -> Result<(), DestError> {
        fault("a");
        let mut state = lock_state(&self.state);
        let staging = state.dir_in(&self.root)?;
        let mut moves = Vec::with_capacity(commit.files.len());
        let mut sums = Vec::with_capacity(commit.files.len());
        for file in &commit.files {
            let staged = state.names.get(&file.name).ok_or_else(|| {
                io_at(&staging)(io::Error::other(format!("{} was never staged", file.name)))
            })?;
            moves.push((staged.clone(), file.name.clone()));
            sums.push(Sum {
                bytes: file.bytes,
                sha256: file.sha256.clone(),
            });
        }
        // Every staged file is still there (nobody removed the staging folder): a missing
        // one is never taken for a moved one.
        if !fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir()) {
            return Err(missing(&staging));
        }
        for (staged, _) in &moves {
            let path = staging.join(staged);
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                return Err(missing(&path));
            }
        }
        // Checked before anything changes (`link` catches a file that appears after this):
        // a commit that could only fail half way is not started.
        for (_, name) in &moves {
            self.check_parent(name)?;
            let target = self.root.join(name);
            let taken = match fs::symlink_metadata(&target) {
                Ok(meta) => !commit.overwrite || meta.is_dir(),
                Err(_) => false,
            };
            if taken {
                return Err(DestError::Exists {
                    name: self.shown(name),
                });
            }
        }
        let previous_manifest = self
            .read(MANIFEST_NAME)?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let journal = Journal {
            version: JOURNAL_VERSION,
            staging: staging
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            moves,
            manifest: String::from_utf8(commit.manifest)
                .map_err(|_| io_at(&self.root)(io::Error::other("the manifest is not UTF-8")))?,
            previous_manifest,
            // A previous manifest may list any name: one outside DIR is never removed.
            remove: commit
                .remove
                .into_iter()
                .filter(|name| check_name(name).is_ok())
                .collect(),
            overwrite: commit.overwrite,
            sums,
        };
        // Never a journal that recovery would refuse.
        journal
            .check_names()
            .map_err(|problem| io_at(&self.root)(io::Error::other(problem)))?;
        let text = serde_json::to_vec(&journal)
            .map_err(|e| io_at(&self.root)(io::Error::other(e.to_string())))?;
        self.write_atomic(JOURNAL_NAME, &text)?;
        fault("b");
        // The journal owns the staging folder now.
        state.dir = None;
        state.names.clear();
        drop(state);
        self.apply(&journal)?;
        self.committed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn discard(&self) {
        let mut state = lock_state(&self.state);
        state.discarded = true;
        state.names.clear();
        if let Some(dir) = state.dir.take() {
            remove_entry(&dir);
        }
        if self.created && !self.committed.load(Ordering::SeqCst) {
            self.remove_root.store(true, Ordering::SeqCst);
        }
    }
}

/// A file written straight into a folder this run owns (a staging folder, or a fetch
/// segment's folder): created exclusively without following a symlink, synced behind the
/// writer, hashed as written, fsynced by [`StagedFile::finish`].
pub struct LocalFile {
    out: HashingWriter<File>,
    behind: SyncBehind,
    path: PathBuf,
    name: String,
}

impl LocalFile {
    /// Creates `path`, which must not exist; `name` is what [`FinishedFile::name`] will say.
    pub fn create_new(path: &Path, name: &str) -> Result<LocalFile, DestError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_at(path))?;
        let behind = SyncBehind::new(&file);
        Ok(LocalFile {
            out: HashingWriter::new(file),
            behind,
            path: path.to_path_buf(),
            name: name.to_string(),
        })
    }
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.behind.progress(self.out.bytes())?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl StagedFile for LocalFile {
    fn finish(self: Box<Self>) -> Result<FinishedFile, DestError> {
        let LocalFile {
            out,
            behind,
            path,
            name,
        } = *self;
        let (file, bytes, sha256) = out.into_parts();
        behind.finish().map_err(io_at(&path))?;
        file.sync_all().map_err(io_at(&path))?;
        Ok(FinishedFile {
            name,
            bytes,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(dir: &LocalDir, name: &str, bytes: &[u8]) -> FinishedFile {
        let mut file = dir.create(name).unwrap();
        file.write_all(bytes).unwrap();
        file.finish().unwrap()
    }

    #[test]
    fn commits_files_then_the_manifest_and_removes_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let dir = LocalDir::open(&root).unwrap();
        let guard = dir.lock().unwrap();
        assert!(matches!(dir.lock(), Err(DestError::Locked { .. })));
        dir.recover().unwrap();
        fs::write(root.join("old.csv"), "old").unwrap();
        let a = stage(&dir, "csv/users/part-00000.csv", b"abc");
        assert_eq!(a.bytes, 3);
        dir.commit(Commit {
            files: vec![a],
            manifest: b"{}\n".to_vec(),
            remove: vec!["old.csv".into()],
            overwrite: false,
        })
        .unwrap();
        assert_eq!(
            dir.list().unwrap(),
            ["csv/users/part-00000.csv", "manifest.json"]
        );
        assert_eq!(dir.read("manifest.json").unwrap().unwrap(), b"{}\n");
        let mode = fs::metadata(root.join("manifest.json"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
        drop(guard);
        let mut left: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["csv", "manifest.json"]);
    }

    #[test]
    fn a_file_that_appeared_is_not_replaced_and_the_commit_is_undone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LocalDir::open(tmp.path()).unwrap();
        let _guard = dir.lock().unwrap();
        let a = stage(&dir, "a.csv", b"new a");
        let b = stage(&dir, "b.csv", b"new b");
        fs::write(tmp.path().join("b.csv"), "PRECIOUS").unwrap();
        let error = dir
            .commit(Commit {
                files: vec![a, b],
                manifest: b"{}".to_vec(),
                remove: vec![],
                overwrite: false,
            })
            .unwrap_err();
        assert!(matches!(error, DestError::Exists { .. }), "{error}");
        assert_eq!(
            fs::read_to_string(tmp.path().join("b.csv")).unwrap(),
            "PRECIOUS"
        );
        assert!(!tmp.path().join("a.csv").exists());
        assert!(!tmp.path().join("manifest.json").exists());
    }

    /// A crash between `link` and `unlink` of step d: recovery sees the same file at both
    /// names and goes on; the manifest lands, the journal and staging go.
    #[test]
    fn recovery_rolls_a_half_moved_commit_forward() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let staging = root.join(format!("{STAGING_PREFIX}test01"));
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("000001"), "a").unwrap();
        fs::write(staging.join("000002"), "b").unwrap();
        fs::create_dir(root.join("csv")).unwrap();
        fs::hard_link(staging.join("000001"), root.join("csv/a.csv")).unwrap();
        let journal = Journal {
            version: JOURNAL_VERSION,
            staging: format!("{STAGING_PREFIX}test01"),
            moves: vec![
                ("000001".into(), "csv/a.csv".into()),
                ("000002".into(), "b.csv".into()),
            ],
            manifest: "{\"new\": true}\n".into(),
            previous_manifest: None,
            remove: vec!["old.csv".into()],
            overwrite: false,
            sums: vec![],
        };
        fs::write(
            root.join(JOURNAL_NAME),
            serde_json::to_vec(&journal).unwrap(),
        )
        .unwrap();
        fs::write(root.join("old.csv"), "old").unwrap();
        fs::write(tmp.path().join("stray"), "x").unwrap();
        let dir = LocalDir::open(root).unwrap();
        let _guard = dir.lock().unwrap();
        dir.recover().unwrap();
        assert_eq!(fs::read_to_string(root.join("csv/a.csv")).unwrap(), "a");
        assert_eq!(fs::read_to_string(root.join("b.csv")).unwrap(), "b");
        assert_eq!(
            fs::read_to_string(root.join(MANIFEST_NAME)).unwrap(),
            "{\"new\": true}\n"
        );
        assert!(!root.join("old.csv").exists());
        assert!(!root.join(JOURNAL_NAME).exists());
        assert!(!staging.exists());
        assert_eq!(
            dir.list().unwrap(),
            ["b.csv", "csv/a.csv", "manifest.json", "stray"]
        );
    }

    #[test]
    fn a_symlinked_folder_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("csv")).unwrap();
        let dir = LocalDir::open(&root).unwrap();
        let _guard = dir.lock().unwrap();
        let a = stage(&dir, "csv/users/part-00000.csv", b"x");
        let error = dir
            .commit(Commit {
                files: vec![a],
                manifest: b"{}".to_vec(),
                remove: vec![],
                overwrite: true,
            })
            .unwrap_err();
        assert!(matches!(error, DestError::Symlink { .. }), "{error}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    /// A journal of `moves` in the staging folder `.zephr-etl-staging-test01`, written into
    /// `root` with that folder.
    fn plant(root: &Path, moves: &[(&str, &str)], remove: &[&str], sums: Vec<Sum>) -> Journal {
        let journal = Journal {
            version: JOURNAL_VERSION,
            staging: format!("{STAGING_PREFIX}test01"),
            moves: moves
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            manifest: "{\"new\": true}\n".into(),
            previous_manifest: None,
            remove: remove.iter().map(|n| n.to_string()).collect(),
            overwrite: true,
            sums,
        };
        fs::create_dir_all(root.join(&journal.staging)).unwrap();
        fs::write(
            root.join(JOURNAL_NAME),
            serde_json::to_vec(&journal).unwrap(),
        )
        .unwrap();
        journal
    }

    fn sum_of(bytes: &[u8]) -> Sum {
        let mut hashed = HashingWriter::new(io::sink());
        hashed.write_all(bytes).unwrap();
        let (_, bytes, sha256) = hashed.into_parts();
        Sum { bytes, sha256 }
    }

    /// Every entry under `root` with its bytes (folders and symlinks as such).
    fn snapshot(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for entry in walk(root) {
            let meta = fs::symlink_metadata(&entry).unwrap();
            out.push((
                entry.clone(),
                meta.is_file().then(|| fs::read(&entry).unwrap()),
            ));
        }
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out
    }

    /// Issue 20, 6: each name a journal could use to reach outside DIR (or the tool's own
    /// files) refuses the whole journal, before anything moves.
    #[test]
    fn a_journal_with_names_the_tool_does_not_make_is_refused_whole() {
        // (staged, final, a name to remove, what is said)
        let cases = [
            ("../../x", "a.csv", None, "staged name \"../../x\""),
            ("000001/../x", "a.csv", None, "staged name \"000001/../x\""),
            ("x", "a.csv", None, "staged name \"x\""),
            ("000001", "../a.csv", None, "final name \"../a.csv\""),
            ("000001", "/tmp/a.csv", None, "final name \"/tmp/a.csv\""),
            (
                "000001",
                MANIFEST_NAME,
                None,
                "final name \"manifest.json\"",
            ),
            (
                "000001",
                JOURNAL_NAME,
                None,
                "final name \".zephr-etl-commit.json\"",
            ),
            (
                "000001",
                "csv/.zephr-etl.lock",
                None,
                "final name \"csv/.zephr-etl.lock\"",
            ),
            (
                "000001",
                "a.csv",
                Some("../victim"),
                "name to remove \"../victim\"",
            ),
        ];
        for (staged, name, remove, problem) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("out");
            fs::create_dir(&root).unwrap();
            let remove: Vec<&str> = remove.into_iter().collect();
            plant(&root, &[(staged, name)], &remove, vec![]);
            fs::write(
                root.join(format!("{STAGING_PREFIX}test01/000001")),
                "staged",
            )
            .unwrap();
            fs::write(root.join("a.csv"), "old a").unwrap();
            fs::write(tmp.path().join("victim"), "VICTIM").unwrap();
            let before = snapshot(tmp.path());
            let dir = LocalDir::open(&root).unwrap();
            let _guard = dir.lock().unwrap();
            match dir.recover() {
                Err(DestError::Journal { path, problem: got }) => {
                    assert_eq!(path, root.join(JOURNAL_NAME));
                    assert!(got.starts_with(problem), "{got}");
                }
                other => panic!("{problem}: {other:?}"),
            }
            assert_eq!(snapshot(tmp.path()), before, "{problem}");
        }
        // A staging folder that is not one this tool makes.
        for staging in ["..", "../elsewhere", "plain"] {
            let tmp = tempfile::tempdir().unwrap();
            let mut journal = plant(tmp.path(), &[("000001", "a.csv")], &[], vec![]);
            journal.staging = staging.to_string();
            fs::write(
                tmp.path().join(JOURNAL_NAME),
                serde_json::to_vec(&journal).unwrap(),
            )
            .unwrap();
            let dir = LocalDir::open(tmp.path()).unwrap();
            let _guard = dir.lock().unwrap();
            let error = dir.recover().unwrap_err().to_string();
            assert!(
                error.contains(&format!(
                    "staging folder {staging:?} is not one zephr-etl makes"
                )),
                "{error}"
            );
        }
    }

    /// Issue 20, 7: a staged file that is gone counts as moved only when its final name holds
    /// exactly it; otherwise recovery stops before writing a manifest.
    #[test]
    fn a_missing_staged_file_counts_as_moved_only_when_its_name_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        plant(root, &[("000001", "a.csv")], &[], vec![sum_of(b"new a")]);
        fs::write(root.join("a.csv"), "other").unwrap();
        let dir = LocalDir::open(root).unwrap();
        let _guard = dir.lock().unwrap();
        let error = dir.recover().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is damaged (staged file {STAGING_PREFIX}test01/000001 is missing and a.csv \
                 is not that file); move it away to start afresh",
                root.join(JOURNAL_NAME).display()
            )
        );
        assert!(!root.join(MANIFEST_NAME).exists());
        // A journal of an older version has no sums: nothing to tell the file by.
        plant(root, &[("000001", "a.csv")], &[], vec![]);
        fs::write(root.join("a.csv"), "new a").unwrap();
        assert!(matches!(dir.recover(), Err(DestError::Journal { .. })));
        assert!(!root.join(MANIFEST_NAME).exists());
        // The same size and hash: moved before a crash; the commit is finished.
        plant(root, &[("000001", "a.csv")], &[], vec![sum_of(b"new a")]);
        dir.recover().unwrap();
        assert_eq!(
            fs::read_to_string(root.join(MANIFEST_NAME)).unwrap(),
            "{\"new\": true}\n"
        );
        assert_eq!(fs::read_to_string(root.join("a.csv")).unwrap(), "new a");
        assert!(!root.join(JOURNAL_NAME).exists());
    }

    /// Issue 20, 7: a live commit whose staged files are gone fails before anything changes.
    #[test]
    fn a_commit_whose_staged_files_are_gone_replaces_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join(MANIFEST_NAME), "{\"old\": true}\n").unwrap();
        fs::write(root.join("a.csv"), "old a").unwrap();
        let dir = LocalDir::open(root).unwrap();
        let _guard = dir.lock().unwrap();
        let a = stage(&dir, "a.csv", b"new a");
        let staging = lock_state(&dir.state).dir.clone().unwrap();
        fs::remove_dir_all(&staging).unwrap();
        let error = dir
            .commit(Commit {
                files: vec![a],
                manifest: b"{}".to_vec(),
                remove: vec![],
                overwrite: true,
            })
            .unwrap_err();
        let text = zephr_core::error::Chain(&error).to_string();
        assert!(text.contains("the staged file is missing"), "{text}");
        assert_eq!(
            fs::read_to_string(root.join(MANIFEST_NAME)).unwrap(),
            "{\"old\": true}\n"
        );
        assert_eq!(fs::read_to_string(root.join("a.csv")).unwrap(), "old a");
        assert!(!root.join(JOURNAL_NAME).exists());
    }

    /// Issue 20, 7: the lock is the folder's own, so there is no file to delete; an older
    /// version's lock file is honoured while held and removed when not.
    #[test]
    fn the_lock_is_the_folders_and_an_older_lock_file_is_honoured() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = LocalDir::open(root).unwrap();
        let guard = dir.lock().unwrap();
        assert!(!root.join(LEGACY_LOCK_NAME).exists());
        let other = LocalDir::open(root).unwrap();
        assert!(matches!(other.lock(), Err(DestError::Locked { .. })));
        drop(guard);
        let legacy = root.join(LEGACY_LOCK_NAME);
        fs::write(&legacy, "12345\n").unwrap();
        let held = File::open(&legacy).unwrap();
        held.lock().unwrap();
        assert!(matches!(dir.lock(), Err(DestError::Locked { .. })));
        drop(held);
        let guard = dir.lock().unwrap();
        assert!(!legacy.exists());
        drop(guard);
        assert_eq!(fs::read_dir(root).unwrap().count(), 0);
    }
}
