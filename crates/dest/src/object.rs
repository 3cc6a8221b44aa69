//! An object-store prefix as a [`Destination`]: `s3://bucket/prefix`, `gs://...`, `az://...`.
//!
//! The commit protocol is a folder's, adapted to a store that has no rename:
//! - every data object carries the run's tag in its name (`users-20240501T100000Z-1a2b3c4d.parquet`,
//!   `parquet/users/part-00000-20240501T100000Z-1a2b3c4d.parquet`), so no run ever writes over
//!   an object another run or the current dataset uses; each is streamed by a multipart upload
//!   that becomes visible only when it is complete ([`super::upload`]);
//! - before an object is uploaded its name goes into the run's record ([`super::runs`]), and
//!   before the manifest is written the previous dataset's objects it replaces go there too;
//! - `manifest.json` is written last, with one PUT (atomic: readers see the old or the new
//!   one, never a mix), and without overwrite only if none exists yet (`If-None-Match: *`);
//!   it is the commit record, and lists only complete objects. When the answer to that PUT
//!   is lost (a timeout, a dropped connection, a retried conditional PUT answered 412), the
//!   manifest is read back: if it is this run's, the run is committed; if it cannot be read,
//!   nothing of the run is deleted and the next run's recovery decides;
//! - only then are the previous dataset's objects (`Commit::remove`) deleted, and the run's
//!   record; after that a folder such as `parquet/users/` holds the current dataset's parts
//!   only, so Spark, pyarrow or `bq load` can read the folder or a wildcard;
//! - [`recover`](Destination::recover), with the lock held, reads the records of dead runs
//!   and deletes exactly the objects they name that the current manifest does not list. It
//!   never sweeps the prefix: another dataset below it, or an object this tool did not
//!   write, is never deleted.
//!
//! Multipart uploads of a run that fails are aborted; those of a run that is killed cannot be
//! listed through `object_store` and are invisible to readers: a bucket lifecycle rule
//! (S3 `AbortIncompleteMultipartUpload`, GCS and Azure delete uncommitted blocks on their own)
//! removes them. The lock is [`super::lease`]'s.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutMode, UpdateVersion};

use super::lease::{self, LOCK_NAME, LeaseState};
use super::runs::{self, RunRecord};
use super::upload::{ObjectUpload, Shared};
use super::{Commit, DestError, DestLock, Destination, StagedFile};
use zephr_core::manifest::MANIFEST_NAME;
use zephr_core::timestamp::iso_utc;
use zephr_store::store::{Store, StoreOptions};
use zephr_store::{CloudError, CloudUrl};

/// Sizes and times of an object-store destination.
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    /// How the store is reached and how long a request is retried.
    pub store: StoreOptions,
    /// Bytes per multipart part (S3 wants at least 5 MiB for all parts but the last).
    pub part_size: usize,
    /// Parts in flight at once across all the files of a run: with `part_size`, the bound on
    /// upload memory beyond one buffer per open file.
    pub parts_in_flight: usize,
    /// How long the lock stays valid after its last renewal.
    pub lease: Duration,
    /// How often the heartbeat renews it.
    pub renew_every: Duration,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        ObjectOptions {
            store: StoreOptions::default(),
            // Measured on the 200,000-user benchmark: 8 MiB x 4 in flight gave 1.9x the peak
            // memory of a local run; 5 MiB x 3 keeps it near 1.5x.
            part_size: 5 << 20,
            parts_in_flight: 3,
            lease: Duration::from_secs(120),
            renew_every: Duration::from_secs(30),
        }
    }
}

/// A prefix in an object store, written by one run.
pub struct ObjectDest {
    shared: Arc<Shared>,
    run: String,
    options: ObjectOptions,
    lease: Mutex<Option<Arc<LeaseState>>>,
    /// What this run has created (and will remove) since its last commit.
    record: Mutex<RunRecord>,
    /// The version of the manifest this run wrote: a second commit of the run (state events)
    /// replaces exactly that one.
    manifest_version: Mutex<Option<UpdateVersion>>,
    /// The record must outlive this run: its objects may be committed or not (a lost answer
    /// that could not be checked), or some could not be deleted.
    keep_record: AtomicBool,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What became of a manifest PUT.
enum Written {
    /// The manifest is this run's; its version, when the store gave one.
    Committed(Option<UpdateVersion>),
    /// Another manifest is there (a dataset appeared, or another run's commit).
    Refused,
}

impl ObjectDest {
    /// Connects to the store of `url` (configured from the environment; nothing is sent yet).
    pub fn open(url: &CloudUrl, options: ObjectOptions) -> Result<ObjectDest, DestError> {
        let store = Store::connect(url, &options.store)?;
        let run = new_run_tag();
        Ok(ObjectDest {
            shared: Arc::new(Shared::new(
                store,
                options.part_size,
                options.parts_in_flight,
            )),
            record: Mutex::new(RunRecord::new(&run)),
            run,
            options,
            lease: Mutex::new(None),
            manifest_version: Mutex::new(None),
            keep_record: AtomicBool::new(false),
        })
    }

    /// This run's tag, as it appears in every object name it writes.
    pub fn run_tag(&self) -> &str {
        &self.run
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    fn error(&self, action: &'static str, name: &str, e: object_store::Error) -> DestError {
        DestError::Cloud(self.store().error(action, name, e))
    }

    /// Every object under the prefix, as names relative to it (hidden ones included).
    fn list_all(&self) -> Result<Vec<String>, DestError> {
        let store = self.store();
        let client = store.client.clone();
        let prefix = store.path("");
        let listed = store.runtime.block_on(async move {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            client
                .list(prefix.as_ref())
                .map_ok(|meta| meta.location.to_string())
                .try_collect::<Vec<_>>()
                .await
        });
        let keys = listed.map_err(|e| self.error("list", "", e))?;
        Ok(keys.iter().filter_map(|key| self.relative(key)).collect())
    }

    /// An object's key as a name relative to the prefix; `None` when it is not below it.
    fn relative(&self, key: &str) -> Option<String> {
        let base = &self.store().url.key;
        if base.is_empty() {
            return Some(key.to_string());
        }
        key.strip_prefix(base.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string)
    }

    fn delete(&self, names: &[String]) -> Result<(), DestError> {
        for name in names {
            self.store()
                .delete(name)
                .map_err(|e| self.error("delete", name, e))?;
        }
        Ok(())
    }

    /// Writes the manifest (step e), deciding by reading it back whenever the answer is not
    /// a plain yes: a PUT whose answer was lost may have landed, and a retried conditional
    /// PUT is refused by the very manifest it wrote.
    fn put_manifest(&self, bytes: Vec<u8>, overwrite: bool) -> Result<Written, DestError> {
        let store = self.store();
        let mode = match guard(&self.manifest_version).clone() {
            Some(version) => PutMode::Update(version),
            None if overwrite => PutMode::Overwrite,
            None => PutMode::Create,
        };
        let error = match store.put(MANIFEST_NAME, bytes.clone(), mode) {
            Ok(version) => return Ok(Written::Committed(version)),
            Err(e) => e,
        };
        let refused = matches!(
            error,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        );
        match store.get("read", MANIFEST_NAME) {
            Ok(Some(found)) if found.bytes == bytes => Ok(Written::Committed(found.version)),
            Ok(_) if refused => Ok(Written::Refused),
            // Not there, or not ours: the PUT did not land.
            Ok(_) => Err(self.error("write", MANIFEST_NAME, error)),
            Err(read) => {
                // Unknown whether the manifest is this run's: delete nothing of the run. Its
                // record stays, and the next run's recovery decides by the manifest it finds.
                self.shared.forget_finished();
                self.keep_record.store(true, Ordering::SeqCst);
                Err(DestError::Cloud(CloudError::Store {
                    action: "confirm the commit of",
                    target: store.url.target(MANIFEST_NAME),
                    detail: format!(
                        "the answer to writing it was lost ({}) and reading it back failed \
                         ({}); this run's objects are kept, and the next run on this prefix \
                         keeps or removes them as the manifest says",
                        store.error("write", MANIFEST_NAME, error),
                        read
                    ),
                }))
            }
        }
    }

    /// The objects directly in `folder` (relative to the prefix; `""` is the prefix itself),
    /// as names relative to the prefix. One level: never what lies below.
    fn list_folder(&self, folder: &str) -> Result<Vec<String>, DestError> {
        let store = self.store();
        let client = store.client.clone();
        let path = store.path(folder);
        let listed = store.runtime.block_on(async move {
            let prefix = (!path.as_ref().is_empty()).then_some(path);
            client.list_with_delimiter(prefix.as_ref()).await
        });
        let listed = listed.map_err(|e| self.error("list", folder, e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|meta| self.relative(meta.location.as_ref()))
            .collect())
    }

    /// Deletes what `record`'s run left: in each recorded folder, the objects with its tag,
    /// and the previous objects it recorded, except what the manifest `listed`.
    fn sweep(&self, record: &RunRecord, listed: &HashSet<String>) -> Result<(), DestError> {
        let mut doomed = Vec::new();
        for folder in &record.folders {
            if !folder.is_empty() && !is_valid_name(folder) {
                continue; // not a folder this tool makes: never acted on
            }
            doomed.extend(
                self.list_folder(folder)?
                    .into_iter()
                    .filter(|name| run_tag_of(name) == Some(record.run.as_str())),
            );
        }
        // The previous dataset's objects: tagged by the runs that wrote them.
        doomed.extend(
            record
                .remove
                .iter()
                .filter(|name| is_valid_name(name) && run_tag_of(name).is_some())
                .cloned(),
        );
        doomed.retain(|name| !listed.contains(name));
        self.delete(&doomed)
    }

    /// The files the current manifest lists (none when there is none).
    fn listed(&self) -> Result<HashSet<String>, DestError> {
        Ok(match self.read(MANIFEST_NAME)? {
            Some(bytes) => manifest_files(&bytes),
            None => HashSet::new(),
        })
    }
}

impl Destination for ObjectDest {
    fn describe(&self) -> String {
        self.store().url.display()
    }

    fn lock(&self) -> Result<Box<dyn DestLock>, DestError> {
        let (lock, state) = lease::acquire(
            &self.shared,
            &self.run,
            self.options.lease,
            self.options.renew_every,
        )?;
        *guard(&self.lease) = Some(state);
        Ok(Box::new(lock))
    }

    fn recover(&self) -> Result<(), DestError> {
        let listed = self.listed()?;
        for run in runs::list(&self.shared)? {
            if run == self.run {
                continue;
            }
            // A stray or damaged record is never acted on.
            if let Some(record) = runs::read(&self.shared, &run)? {
                self.sweep(&record, &listed)?;
                runs::delete(&self.shared, &run)?;
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, DestError> {
        let mut names: Vec<String> = self
            .list_all()?
            .into_iter()
            .filter(|name| !is_hidden(name))
            .collect();
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DestError> {
        Ok(self.store().get("read", name)?.map(|found| found.bytes))
    }

    fn create(&self, name: &str) -> Result<Box<dyn StagedFile>, DestError> {
        if !is_valid_name(name) {
            return Err(DestError::BadName { name: name.into() });
        }
        let tagged = tagged_name(name, &self.run);
        let folder = tagged.rsplit_once('/').map_or("", |(folder, _)| folder);
        let mut record = guard(&self.record);
        if !record.folders.iter().any(|f| f == folder) {
            // Recorded before a byte is uploaded there: a run killed at any later instant
            // leaves a record that leads to the object.
            record.folders.push(folder.to_string());
            runs::write(&self.shared, &record)?;
        }
        drop(record);
        Ok(Box::new(ObjectUpload::new(self.shared.clone(), tagged)))
    }

    fn final_name(&self, name: &str) -> String {
        tagged_name(name, &self.run)
    }

    fn commit(&self, commit: Commit) -> Result<(), DestError> {
        let finished: HashSet<String> = self
            .shared
            .finished()
            .iter()
            .map(|p| p.to_string())
            .collect();
        for file in &commit.files {
            let key = self.store().path(&file.name).to_string();
            if !finished.contains(&key) {
                return Err(DestError::Cloud(CloudError::Store {
                    action: "commit",
                    target: self.store().url.target(&file.name),
                    detail: "this run did not finish that object".into(),
                }));
            }
        }
        let remove: Vec<String> = commit
            .remove
            .into_iter()
            // The manifest is not a name a run creates (is_valid_name refuses it).
            .filter(|name| is_valid_name(name))
            .collect();
        {
            let mut record = guard(&self.record);
            record.remove.clone_from(&remove);
            runs::write(&self.shared, &record)?;
        }
        // Still ours, for at least one more lease: the last check before the commit record.
        let lease = guard(&self.lease).clone();
        if let Some(lease) = lease {
            lease.renew()?;
        }
        match self.put_manifest(commit.manifest, commit.overwrite)? {
            Written::Committed(version) => *guard(&self.manifest_version) = version,
            Written::Refused => {
                let store = self.store();
                return Err(DestError::Exists {
                    name: format!(
                        "a dataset ({}) at {}",
                        store.url.target(MANIFEST_NAME),
                        store.url.display()
                    ),
                });
            }
        }
        // Committed: these objects are the dataset now, whatever happens next.
        self.shared.forget_finished();
        // Tidying is best effort, as a folder's step f: what cannot be deleted now stays in
        // the record, and the next run's recovery deletes it (the manifest no longer lists it).
        let mut record = guard(&self.record);
        if self.delete(&remove).is_ok() && runs::delete(&self.shared, &self.run).is_ok() {
            *record = RunRecord::new(&self.run);
        } else {
            self.keep_record.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn discard(&self) {
        // Whatever else happens, a multipart upload still open is never part of a dataset.
        let aborted = self.shared.discard_all();
        let mut record = guard(&self.record);
        if record.is_empty() || self.keep_record.load(Ordering::SeqCst) {
            return;
        }
        // The whole of the run's folders, not only the objects it knows it finished: a PUT
        // whose answer was lost may have landed all the same. What the manifest lists (a
        // first commit of this run) stays. The record goes only once all else went.
        let Ok(listed) = self.listed() else { return };
        let own = RunRecord {
            remove: Vec::new(),
            ..record.clone()
        };
        if aborted
            && self.sweep(&own, &listed).is_ok()
            && runs::delete(&self.shared, &self.run).is_ok()
        {
            *record = RunRecord::new(&self.run);
        }
    }
}

/// The `path`s of a manifest's `files` (names relative to the prefix).
fn manifest_files(bytes: &[u8]) -> HashSet<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return HashSet::new();
    };
    value["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f["path"].as_str().or_else(|| f["name"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A name some segment of which starts with `.`: bookkeeping (the lock), never data.
fn is_hidden(name: &str) -> bool {
    name.split('/').any(|segment| segment.starts_with('.'))
}

/// Names the engine may create: relative, `/`-separated, no empty, `.`, `..` or hidden
/// segments, and not the manifest's (written by the commit only).
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != MANIFEST_NAME
        && name != LOCK_NAME
        && !name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.starts_with('.'))
}

/// A new run tag: the start time and 32 random bits, `20240501T100000Z-1a2b3c4d`. Sortable by
/// time, and unique across runs that start in the same second.
fn new_run_tag() -> String {
    let time: String = iso_utc(std::time::SystemTime::now())
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let random = zephr_core::random::u32();
    format!("{time}-{random:08x}")
}

/// `users.parquet` -> `users-TAG.parquet`: the tag goes before the first `.` of the last
/// segment, so the extension (and `users-*.parquet` wildcards) still work.
fn tagged_name(name: &str, tag: &str) -> String {
    let (dir, file) = match name.rfind('/') {
        Some(slash) => name.split_at(slash + 1),
        None => ("", name),
    };
    match file.find('.') {
        Some(dot) => format!("{dir}{}-{tag}{}", &file[..dot], &file[dot..]),
        None => format!("{dir}{file}-{tag}"),
    }
}

/// The run tag in an object's name, if it has one.
fn run_tag_of(name: &str) -> Option<&str> {
    let file = name.rsplit('/').next()?;
    let stem = &file[..file.find('.').unwrap_or(file.len())];
    // 8 digits + `T` + 6 digits + `Z-` + 8 hex digits, after a `-`.
    const LEN: usize = 25;
    if stem.len() < LEN + 1 {
        return None;
    }
    let (head, tag) = stem.split_at(stem.len() - LEN);
    let b = tag.as_bytes();
    let ok = head.ends_with('-')
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    ok.then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "20240501T100000Z-1a2b3c4d";

    #[test]
    fn names_carry_the_run_tag_before_the_extension() {
        assert_eq!(
            tagged_name("users.parquet", TAG),
            format!("users-{TAG}.parquet")
        );
        assert_eq!(
            tagged_name("parquet/users/part-00000.parquet", TAG),
            format!("parquet/users/part-00000-{TAG}.parquet")
        );
        assert_eq!(tagged_name("x.csv.gz", TAG), format!("x-{TAG}.csv.gz"));
        assert_eq!(tagged_name("noext", TAG), format!("noext-{TAG}"));
        for name in ["users.parquet", "parquet/users/part-00000.parquet", "noext"] {
            assert_eq!(run_tag_of(&tagged_name(name, TAG)), Some(TAG), "{name}");
        }
    }

    #[test]
    fn untagged_names_are_not_runs() {
        for name in [
            "users.parquet",
            "manifest.json",
            "a-20240501T100000Z.csv",
            "x-20240501T100000Z-1A2B3C4D.csv",
        ] {
            assert_eq!(run_tag_of(name), None, "{name}");
        }
        let tag = new_run_tag();
        assert_eq!(
            run_tag_of(&tagged_name("users.csv", &tag)),
            Some(tag.as_str())
        );
    }

    #[test]
    fn hidden_and_bad_names() {
        assert!(is_hidden(".zephr-etl.lock"));
        assert!(is_hidden("a/.b/c"));
        assert!(!is_hidden("a/b.c"));
        assert!(is_valid_name("users.csv"));
        assert!(is_valid_name("parquet/users/part-00000.parquet"));
        for bad in [
            "",
            "/abs",
            "a/../b",
            "a//b",
            ".hidden",
            "dir/",
            "manifest.json",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn manifest_paths() {
        let m = br#"{"files": [{"path": "users-x.csv"}, {"path": "p/a.parquet"}]}"#;
        let files = manifest_files(m);
        assert!(files.contains("users-x.csv") && files.contains("p/a.parquet"));
        assert!(manifest_files(b"not json").is_empty());
    }
}
