//! What a paginated `fetch` keeps between runs, so that `--resume` can continue it.
//!
//! Everything lives in a hidden work folder inside the output directory
//! (`DIR/.zephr-etl-fetch/`), never under a table's name: the tables appear only once the
//! whole export is fetched. The run cuts the pages into segments of a few dozen pages; each
//! segment's tables are written into their own folder (`seg-00001/`, each file fsynced) and
//! then recorded in `journal.json`, which is replaced atomically (write, fsync, rename). A segment folder that the journal does not list is a leftover of a crash
//! between those two steps and is removed, so the journal alone says what is committed.
//!
//! The journal also holds the run's arguments (never a secret) and their fingerprint: a rerun
//! with `--resume` continues only when they are the same, because pages fetched with other
//! filters, page sizes or formats cannot be stitched together.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zephr_core::schema::PerTable;

/// The work folder's name inside the output directory.
pub(crate) const WORK_DIR_NAME: &str = ".zephr-etl-fetch";
/// The journal's name inside the work folder.
pub(crate) const JOURNAL_NAME: &str = "journal.json";
/// The journal layout this version writes and reads.
pub(crate) const JOURNAL_VERSION: u32 = 1;

/// One closed segment: pages `first_page..=last_page`, whose tables are in its folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentRecord {
    /// 1-based; the folder is `seg-{number:05}`.
    pub number: u32,
    /// The first page in the segment.
    pub first_page: u32,
    /// The last page in the segment.
    pub last_page: u32,
    /// Items framed from these pages (rejected ones included).
    pub items: u64,
    /// Rows per table (in JSON an array in `Table::ALL` order).
    pub rows: PerTable<u64>,
    /// Items rejected (`--on-error skip`).
    pub rejects: u64,
    /// CSV cells the postgres dialect changed, per table (absent in older journals).
    #[serde(default)]
    pub nul_replaced: PerTable<u64>,
    /// Page body bytes.
    pub bytes: u64,
}

/// The state of an interrupted (or finished but not yet assembled) fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Journal {
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// [`fingerprint`] of `arguments`.
    pub fingerprint: String,
    /// What shapes the tables: tenant, API root, query, formats... (no credentials).
    pub arguments: BTreeMap<String, String>,
    /// When the first attempt of this fetch started (ISO-8601 UTC); what `--state-file`
    /// records once the tables are in place.
    pub started_at: String,
    /// Closed segments, in page order.
    pub segments: Vec<SegmentRecord>,
    /// Whether the last page is in a closed segment: only the final assembly is left.
    pub complete: bool,
}

impl Journal {
    /// A journal for a fetch that has committed nothing yet.
    pub fn new(arguments: BTreeMap<String, String>, started_at: String) -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            fingerprint: fingerprint(&arguments),
            arguments,
            started_at,
            segments: Vec::new(),
            complete: false,
        }
    }

    /// The first page that is not in a closed segment.
    pub(crate) fn next_page(&self) -> u32 {
        self.segments.last().map_or(1, |s| s.last_page + 1)
    }

    /// The number the next segment gets.
    pub(crate) fn next_segment(&self) -> u32 {
        self.segments.last().map_or(1, |s| s.number + 1)
    }

    /// Items in the closed segments.
    pub fn items(&self) -> u64 {
        self.segments.iter().map(|s| s.items).sum()
    }

    /// Rejected items in the closed segments.
    pub fn rejects(&self) -> u64 {
        self.segments.iter().map(|s| s.rejects).sum()
    }

    /// Rows per table in the closed segments.
    pub fn rows(&self) -> PerTable<u64> {
        let mut rows = PerTable::default();
        for s in &self.segments {
            rows.add(&s.rows);
        }
        rows
    }

    /// CSV cells the postgres dialect changed in the closed segments, per table.
    pub fn nul_replaced(&self) -> PerTable<u64> {
        let mut total = PerTable::default();
        for s in &self.segments {
            total.add(&s.nul_replaced);
        }
        total
    }

    /// Page body bytes in the closed segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// Lowercase hex SHA-256 of the arguments' canonical JSON (keys sorted).
pub(crate) fn fingerprint(arguments: &BTreeMap<String, String>) -> String {
    let text = serde_json::to_string(arguments).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Why saved progress cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Reading or writing the work folder failed.
    #[error("cannot use the fetch work folder {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The journal is not one this version wrote.
    #[error(
        "{} is damaged or from another version ({problem}); start the fetch over",
        path.display()
    )]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Resuming with other arguments than the interrupted fetch.
    #[error(
        "the interrupted fetch in {} was started with other arguments ({}); rerun with the \
         same arguments to continue it, or start over",
        dir.display(),
        differences.join("; ")
    )]
    Mismatch {
        /// The output directory.
        dir: PathBuf,
        /// `name: "then" then, "now" now` for each argument that differs.
        differences: Vec<String>,
    },
}

/// Checks that `journal` was made with `arguments`; the error lists what differs.
pub(crate) fn check_same(
    journal: &Journal,
    arguments: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<(), ResumeError> {
    if journal.fingerprint == fingerprint(arguments) {
        return Ok(());
    }
    let mut differences = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        journal.arguments.keys().chain(arguments.keys()).collect();
    for name in names {
        let then = journal.arguments.get(name);
        let now = arguments.get(name);
        if then != now {
            let show = |v: Option<&String>| v.map_or("(not set)".to_owned(), |v| format!("{v:?}"));
            differences.push(format!("{name}: {} then, {} now", show(then), show(now)));
        }
    }
    if differences.is_empty() {
        differences.push("the saved fingerprint does not match".to_owned());
    }
    Err(ResumeError::Mismatch {
        dir: dir.to_path_buf(),
        differences,
    })
}

/// The work folder of one output directory.
#[derive(Debug, Clone)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Where a paginated fetch into `destination` keeps its pages: `chosen` when given, else
    /// inside a local folder, else (a bucket) a local folder named after the destination in
    /// the user's cache (pages never go to a bucket).
    pub fn for_destination(destination: &str, chosen: Option<&Path>) -> WorkDir {
        match chosen {
            Some(dir) => WorkDir::at(dir.to_owned()),
            None if zephr_store::is_local(destination) => WorkDir::of(Path::new(destination)),
            None => WorkDir::at(zephr_store::default_work_dir(destination)),
        }
    }

    /// The work folder of `output_dir` (not created yet).
    pub fn of(output_dir: &Path) -> WorkDir {
        WorkDir {
            path: output_dir.join(WORK_DIR_NAME),
        }
    }

    /// A work folder at `path` itself (`--work-dir`, or one outside a bucket destination).
    pub fn at(path: PathBuf) -> WorkDir {
        WorkDir { path }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the folder exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Creates the folder if needed.
    pub fn create(&self) -> Result<(), ResumeError> {
        fs::create_dir_all(&self.path).map_err(|source| self.io(&self.path, source))
    }

    /// The folder of segment `number`.
    pub(crate) fn segment_dir(&self, number: u32) -> PathBuf {
        self.path.join(format!("seg-{number:05}"))
    }

    /// The saved journal, if there is one.
    pub(crate) fn load(&self) -> Result<Option<Journal>, ResumeError> {
        let path = self.path.join(JOURNAL_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.io(&path, source)),
        };
        let journal: Journal = serde_json::from_str(&text).map_err(|e| ResumeError::Corrupt {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        if journal.version != JOURNAL_VERSION {
            return Err(ResumeError::Corrupt {
                path,
                problem: format!("journal version {}", journal.version),
            });
        }
        Ok(Some(journal))
    }

    /// Replaces the journal atomically: a crash leaves the old one or the new one, whole.
    pub(crate) fn save(&self, journal: &Journal) -> Result<(), ResumeError> {
        let path = self.path.join(JOURNAL_NAME);
        let text = serde_json::to_vec_pretty(journal).map_err(|e| ResumeError::Corrupt {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        let mut text = text;
        text.push(b'\n');
        // The temporary file is a stray to `remove_strays` if a crash leaves it.
        zephr_dest::local::write_atomic(&path, &text, &format!(".{JOURNAL_NAME}.tmp"))
            .map_err(|source| self.io(&path, source))
    }

    /// Removes everything the journal does not account for: segment folders of a crash
    /// between a segment's commit and the journal's update, and temporary files.
    pub(crate) fn remove_strays(&self, journal: &Journal) -> Result<(), ResumeError> {
        let keep: Vec<PathBuf> = journal
            .segments
            .iter()
            .map(|s| self.segment_dir(s.number))
            .collect();
        let entries = fs::read_dir(&self.path).map_err(|source| self.io(&self.path, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| self.io(&self.path, source))?;
            let path = entry.path();
            if entry.file_name() == JOURNAL_NAME || keep.contains(&path) {
                continue;
            }
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|source| self.io(&path, source))?;
        }
        Ok(())
    }

    /// Deletes the folder and everything in it.
    pub fn remove(&self) -> Result<(), ResumeError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(self.io(&self.path, source)),
        }
    }

    fn io(&self, path: &Path, source: io::Error) -> ResumeError {
        ResumeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn segment(number: u32, first_page: u32, last_page: u32) -> SegmentRecord {
        SegmentRecord {
            number,
            first_page,
            last_page,
            items: 3,
            rows: [3, 1, 2].into(),
            rejects: 1,
            nul_replaced: PerTable::default(),
            bytes: 100,
        }
    }

    #[test]
    fn journal_round_trip_and_strays() {
        let root = tempfile::tempdir().unwrap();
        let work = WorkDir::of(root.path());
        assert!(!work.exists());
        work.create().unwrap();
        assert_eq!(work.load().unwrap(), None);
        let mut j = Journal::new(args(&[("tenant", "acme")]), "2024-01-01T00:00:00Z".into());
        assert_eq!((j.next_page(), j.next_segment()), (1, 1));
        j.segments.push(segment(1, 1, 4));
        j.segments.push(segment(2, 5, 8));
        work.save(&j).unwrap();
        assert_eq!(work.load().unwrap(), Some(j.clone()));
        assert_eq!((j.next_page(), j.next_segment()), (9, 3));
        assert_eq!(
            (j.items(), j.rows(), j.rejects(), j.bytes()),
            (6, [6, 2, 4].into(), 2, 200)
        );

        fs::create_dir_all(work.segment_dir(1)).unwrap();
        fs::write(work.segment_dir(1).join("users.csv"), "x").unwrap();
        fs::create_dir_all(work.segment_dir(3)).unwrap();
        fs::write(work.path().join(".journal.json.tmp"), "junk").unwrap();
        work.remove_strays(&j).unwrap();
        assert!(work.segment_dir(1).join("users.csv").exists());
        assert!(!work.segment_dir(3).exists());
        assert!(!work.path().join(".journal.json.tmp").exists());
        assert!(work.path().join(JOURNAL_NAME).exists());

        fs::write(work.path().join(JOURNAL_NAME), "{\"version\":1").unwrap();
        let e = work.load().unwrap_err().to_string();
        assert!(e.contains("is damaged or from another version"), "{e}");
        work.remove().unwrap();
        assert!(!work.exists());
        work.remove().unwrap();
    }

    #[test]
    fn mismatch_names_what_differs() {
        let j = Journal::new(
            args(&[("tenant", "acme"), ("query", "rpp=3")]),
            "2024-01-01T00:00:00Z".into(),
        );
        let dir = Path::new("/out");
        check_same(&j, &args(&[("tenant", "acme"), ("query", "rpp=3")]), dir).unwrap();
        let e = check_same(&j, &args(&[("tenant", "acme"), ("query", "rpp=4")]), dir)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the interrupted fetch in /out was started with other arguments \
             (query: \"rpp=3\" then, \"rpp=4\" now); rerun with the same arguments to continue \
             it, or start over"
        );
        let e = check_same(&j, &args(&[("tenant", "acme")]), dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("query: \"rpp=3\" then, (not set) now"), "{e}");
    }
}
