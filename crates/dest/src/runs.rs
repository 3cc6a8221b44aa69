//! Run records of an object-store prefix: where each run may have left objects, so that
//! recovery deletes only the objects of this prefix's own runs, never by sweeping the prefix.
//!
//! A bucket has no folder a run could stage in and no rename, so a run's objects sit under
//! their final, run-tagged names from the moment they are uploaded. Before a run uploads the
//! first object into a folder (the prefix itself, or `csv/users/` and the like) it records
//! that folder in `PREFIX/.zephr-etl-runs/RUN.json`; before it writes the manifest it also
//! records the previous dataset's objects it will delete afterwards. The record goes once the
//! run is done (committed and tidied, or discarded). A record still there when the next run
//! takes the lock belongs to a run that died or could not tidy up: that run's recovery lists
//! each recorded folder (one level, never below it), deletes the objects that carry the dead
//! run's tag and that the current manifest does not list, deletes the recorded previous
//! objects the manifest no longer lists, and then the record.
//!
//! This is what keeps other data safe: a dataset in `PREFIX/sub/` (with its own manifest) or a
//! user's own object never carries this prefix's run tags and is never named in a record
//! here, so no recovery touches it; and an object a committed manifest lists is never
//! deleted, whatever a record says. A record is a few hundred bytes, written once per folder
//! a run writes into, however many parts the run writes.

use serde::{Deserialize, Serialize};

use futures::TryStreamExt;
use object_store::{ObjectStore, PutMode};

use super::DestError;
use super::upload::Shared;

/// The folder of run records under the prefix (hidden: never listed as data).
pub(crate) const RUNS_DIR: &str = ".zephr-etl-runs";

/// What one run may have left under the prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Always `zephr-etl`: a record of this tool.
    pub tool: String,
    /// The run's tag (the one in its object names).
    pub run: String,
    /// Folders the run wrote objects into (relative to the prefix; `""` is the prefix).
    pub folders: Vec<String>,
    /// The previous dataset's objects the run deletes once its manifest is written.
    pub remove: Vec<String>,
}

impl RunRecord {
    /// An empty record of run `run`.
    pub fn new(run: &str) -> RunRecord {
        RunRecord {
            tool: "zephr-etl".into(),
            run: run.into(),
            folders: Vec::new(),
            remove: Vec::new(),
        }
    }

    /// Whether the record names nothing (nothing to write, nothing to recover).
    pub fn is_empty(&self) -> bool {
        self.folders.is_empty() && self.remove.is_empty()
    }
}

/// The record's name relative to the prefix.
fn record_name(run: &str) -> String {
    format!("{RUNS_DIR}/{run}.json")
}

/// Writes (replaces) the record of `record.run`.
pub(crate) fn write(shared: &Shared, record: &RunRecord) -> Result<(), DestError> {
    let name = record_name(&record.run);
    let body = serde_json::to_vec_pretty(record).unwrap_or_default();
    shared
        .store
        .put(&name, body, PutMode::Overwrite)
        .map(drop)
        .map_err(|e| DestError::Cloud(shared.store.error("write the run record", &name, e)))
}

/// Deletes the record of `run` (gone already is fine).
pub(crate) fn delete(shared: &Shared, run: &str) -> Result<(), DestError> {
    let name = record_name(run);
    shared
        .store
        .delete(&name)
        .map_err(|e| DestError::Cloud(shared.store.error("delete the run record", &name, e)))
}

/// The runs that have a record under the prefix. Lists only the records' own folder.
pub(crate) fn list(shared: &Shared) -> Result<Vec<String>, DestError> {
    let store = &shared.store;
    let client = store.client.clone();
    let folder = store.path(RUNS_DIR);
    let listed = store.runtime.block_on(async move {
        client
            .list(Some(&folder))
            .map_ok(|meta| meta.location.filename().unwrap_or("").to_string())
            .try_collect::<Vec<_>>()
            .await
    });
    let names = listed.map_err(|e| DestError::Cloud(store.error("list", RUNS_DIR, e)))?;
    let mut runs: Vec<String> = names
        .into_iter()
        .filter_map(|file| file.strip_suffix(".json").map(str::to_string))
        .collect();
    runs.sort();
    Ok(runs)
}

/// The record of `run`; `None` when it is gone or is not a record of this tool for that run
/// (a stray or damaged object is never acted on).
pub(crate) fn read(shared: &Shared, run: &str) -> Result<Option<RunRecord>, DestError> {
    let name = record_name(run);
    let Some(found) = shared.store.get("read the run record", &name)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<RunRecord>(&found.bytes)
        .ok()
        .filter(|record| record.tool == "zephr-etl" && record.run == run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_name_their_run() {
        let mut record = RunRecord::new("20240501T100000Z-1a2b3c4d");
        assert!(record.is_empty());
        record.folders.push("csv/users".into());
        let text = serde_json::to_vec(&record).unwrap();
        let back: RunRecord = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, record);
        assert!(!back.is_empty());
        assert_eq!(
            record_name(&record.run),
            ".zephr-etl-runs/20240501T100000Z-1a2b3c4d.json"
        );
    }
}
