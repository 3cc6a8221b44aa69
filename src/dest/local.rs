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
//! writer ([`SyncBehind`]) and hashed as it is written ([`HashingWriter`]).
//!
//! **Commit** (the steps the fault hook [`fault`] names):
//! - a. every data file is finished (fsynced) in staging;
//! - b. the journal `DIR/.zephr-etl-commit.json` is written atomically (temporary file, fsync,
//!   rename, fsync of DIR): the staging folder, each (staged, final) pair, the manifest's
//!   bytes, the previous manifest's bytes and the names to remove. From here the commit is
//!   decided and recovery rolls it forward;
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
//! [`LocalDir::recover`] redoes c–g from a journal it finds (a file already moved is skipped),
//! and removes every staging folder no journal names: those of dead runs, which is safe
//! because the caller holds the lock.

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
    Commit, DestError, DestLock, Destination, FinishedFile, HashingWriter, MANIFEST_NAME,
    StagedFile, check_name, fault,
};

/// The lock file of older versions (this one locks the folder itself): honoured while another
/// run holds it, removed when nobody does.
pub const LEGACY_LOCK_NAME: &str = ".zephr-etl.lock";
/// The commit journal's name.
pub const JOURNAL_NAME: &str = ".zephr-etl-commit.json";
/// What staging folders (and atomic writes' temporary files) are named with.
pub const STAGING_PREFIX: &str = ".zephr-etl-staging-";
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
/// file systems refuse to sync a folder.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn exists_no_follow(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
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

    /// Step d for one file. A staged file that is gone was moved before (recovery).
    fn move_into_place(&self, staged: &Path, name: &str, overwrite: bool) -> Result<(), DestError> {
        let staged_meta = match fs::symlink_metadata(staged) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
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
        // Readable like the data files (tempfile's own default is 0600), for loaders that
        // run as another user.
        let mut temp = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&self.root)
            .map_err(io_at(&self.root))?;
        temp.write_all(bytes).map_err(io_at(temp.path()))?;
        temp.as_file().sync_all().map_err(io_at(&target))?;
        temp.persist(&target).map_err(|e| io_at(&target)(e.error))?;
        sync_dir(&self.root);
        Ok(())
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
            match self.move_into_place(&staging.join(staged), name, journal.overwrite) {
                Ok(()) => {}
                Err(e @ DestError::Exists { .. }) if !journal.overwrite => {
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
        for (staged, name) in journal.moves.iter().rev() {
            let staged = staging.join(staged);
            let target = self.root.join(name);
            // Without overwrite a staged file is unlinked only once linked at its name, so
            // a missing staged file means the final name holds this run's file.
            if !exists_no_follow(&staged) && exists_no_follow(&target) {
                let _ = fs::rename(&target, &staged);
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
                if journal.version != JOURNAL_VERSION || check_name(&journal.staging).is_err() {
                    return Err(DestError::Journal {
                        path,
                        problem: format!("journal version {}", journal.version),
                    });
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
        for file in &commit.files {
            let staged = state.names.get(&file.name).ok_or_else(|| {
                io_at(&staging)(io::Error::other(format!("{} was never staged", file.name)))
            })?;
            moves.push((staged.clone(), file.name.clone()));
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
            remove: commit.remove,
            overwrite: commit.overwrite,
        };
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
            remove: vec!["old.csv".into(), "../outside".into()],
            overwrite: false,
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
