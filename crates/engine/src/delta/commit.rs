//! One Delta version per table and run: the actions (add the run's files; remove the
//! replaced ones), the `txn` that makes a repeated commit a no-op, and the run record that
//! lets a rerun after a crash complete the tables left behind (see the module above).

use std::collections::HashMap;
use std::future::IntoFuture;

use arrow_schema::SchemaRef;
use deltalake_core::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, MetadataExt, Remove, StructType, Transaction};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use object_store::PutMode;
use serde::Serialize;
use serde_json::json;

use super::files::Root;
use super::merge::{DataFile, FileFilter, Filtered};
use super::{APP_ID, DeltaError, DeltaRun, PENDING_NAME, RunRecord};
use crate::export::TableMode;
use zephr_core::schema::Table;
use zephr_core::timestamp::now_ms;
use zephr_dest::local::{sync_dir, write_atomic};
use zephr_dest::{DestError, fault};
use zephr_sink::WrittenFile;

/// The run's new data files of one table, to commit.
#[derive(Debug, Clone)]
pub struct TableFiles {
    /// The table (its folder under DEST).
    pub name: String,
    /// The item table it is (merged by user_id); None for state events (appended).
    pub item: Option<Table>,
    /// The columns, for a table that does not exist yet.
    pub schema: SchemaRef,
    /// Dictionary-encoded columns, for files written again.
    pub dictionary_columns: Vec<String>,
    /// Named relative to DEST (`users/part-....parquet`), in the order the rows came.
    pub files: Vec<WrittenFile>,
}

/// A table after the run, for the manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableVersion {
    /// The table's folder, relative to DEST.
    pub path: String,
    /// Its Delta version after the run.
    pub version: u64,
    /// Whether this process committed it (false: an interrupted run of the same command had).
    pub committed_now: bool,
    /// Data files the version added and removed.
    pub files_added: usize,
    /// Data files the version removed.
    pub files_removed: usize,
}

/// The run record in DEST, if there is one.
pub(crate) fn read_record(run: &DeltaRun) -> Result<Option<RunRecord>, DeltaError> {
    let bytes = match run.files.root() {
        Root::Local(dir) => match std::fs::read(dir.join(PENDING_NAME)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DestError::Io {
                    path: dir.join(PENDING_NAME),
                    source,
                }
                .into());
            }
        },
        Root::Object(shared) => match shared.store.get("read", PENDING_NAME) {
            Ok(Some(fetched)) => fetched.bytes.to_vec(),
            Ok(None) => return Ok(None),
            Err(e) => return Err(DestError::Cloud(e).into()),
        },
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| DeltaError::Record {
            name: PENDING_NAME.into(),
            problem: e.to_string(),
        })
}

/// Writes the run record durably (replacing any).
fn write_record(run: &DeltaRun) -> Result<(), DeltaError> {
    let bytes = serde_json::to_vec_pretty(&run.record).unwrap_or_default();
    match run.files.root() {
        Root::Local(dir) => {
            let path = dir.join(PENDING_NAME);
            write_atomic(&path, &bytes, ".zephr-etl-delta-run-")
                .map_err(|source| DestError::Io { path, source })?;
        }
        Root::Object(shared) => {
            shared
                .store
                .put(PENDING_NAME, bytes, PutMode::Overwrite)
                .map_err(|e| DestError::Cloud(shared.store.error("write", PENDING_NAME, e)))?;
        }
    }
    Ok(())
}

impl DeltaRun {
    /// Commits each table of `tables` as one version (in order), between the run record
    /// written first and [`DeltaRun::finish`]. A table whose `txn` already has this run's
    /// version is left as it is and this run's files for it are removed.
    pub fn commit(&mut self, tables: Vec<TableFiles>) -> Result<(), DeltaError> {
        fault("delta-files");
        if let Root::Local(dir) = self.files.root() {
            // Each data file was fsynced; its name in the table's folder is made durable here,
            // before a log entry can name it (the run record's write syncs DEST itself).
            for plan in &tables {
                sync_dir(&dir.join(&plan.name));
            }
        }
        write_record(self)?;
        fault("delta-record");
        for plan in tables {
            let name = plan.name.clone();
            let version = self.apply(plan)?;
            self.versions.insert(name.clone(), version);
            fault(&format!("delta-{name}"));
        }
        Ok(())
    }

    /// The manifest that lists every table's version is written: the run record goes.
    pub fn finish(&self) -> Result<(), DeltaError> {
        fault("delta-manifest");
        match self.files.root() {
            Root::Local(dir) => match std::fs::remove_file(dir.join(PENDING_NAME)) {
                Ok(()) => sync_dir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DestError::Io {
                        path: dir.join(PENDING_NAME),
                        source,
                    }
                    .into());
                }
            },
            Root::Object(shared) => shared
                .store
                .delete(PENDING_NAME)
                .map_err(|e| DestError::Cloud(shared.store.error("delete", PENDING_NAME, e)))?,
        }
        Ok(())
    }

    /// One table's version.
    fn apply(&mut self, plan: TableFiles) -> Result<TableVersion, DeltaError> {
        let name = plan.name.as_str();
        let existing = self.load(name)?;
        let table = match existing {
            Some(t) => t,
            None => self.handle(name)?,
        };
        let state = table.snapshot().ok();
        if let Some(state) = state {
            let txn = self
                .runtime
                .block_on(state.transaction_version(table.log_store().as_ref(), APP_ID))
                .map_err(DeltaError::table(name))?;
            if txn.is_some_and(|v| v >= self.record.txn_version) {
                // Applied by the interrupted run this one takes over: never twice.
                for f in &plan.files {
                    self.files.remove(&f.name)?;
                }
                return Ok(TableVersion {
                    path: name.to_string(),
                    version: state.version(),
                    committed_now: false,
                    files_added: 0,
                    files_removed: 0,
                });
            }
        }
        let filter = FileFilter {
            runtime: &self.runtime,
            store: table.log_store().object_store(None),
            table: name,
            files: &self.files,
            parquet: self.parquet,
            dictionary_columns: &plan.dictionary_columns,
        };
        let prefix = format!("{name}/");
        let relative =
            |f: &WrittenFile| f.name.strip_prefix(&prefix).unwrap_or(&f.name).to_string();
        // The run's own files: empty ones dropped, repeated users' earlier items removed.
        let mut new = Vec::new();
        for f in plan.files {
            if f.rows == 0 {
                self.files.remove(&f.name)?;
            } else {
                new.push(f);
            }
        }
        if let Some(item) = plan.item {
            let keep_last = self.keys.keep_last(item);
            if !keep_last.is_empty() {
                new = self.keep_last_items(&filter, new, keep_last, &relative)?;
            }
        }
        let mut removed: Vec<DataFile> = Vec::new();
        if let Some(state) = state {
            let existing: Vec<DataFile> = state
                .log_data()
                .iter()
                .map(|f| DataFile {
                    path: f.path().to_string(),
                    size: f.size().max(0) as u64,
                })
                .collect();
            match (self.mode, plan.item) {
                (TableMode::Create, _) if !existing.is_empty() => {
                    return Err(DeltaError::HoldsRows {
                        table: format!("{}/{name}", self.describe.trim_end_matches('/')),
                    });
                }
                (TableMode::Create, _) | (TableMode::Merge { .. }, None) => {}
                // With delete-missing every row there goes: the run's users are replaced, the
                // others removed. No file needs reading.
                (TableMode::Overwrite, _)
                | (
                    TableMode::Merge {
                        delete_missing: true,
                    },
                    Some(_),
                ) => removed = existing,
                (
                    TableMode::Merge {
                        delete_missing: false,
                    },
                    Some(_),
                ) => {
                    let keys = self.keys.clone();
                    let mut keep = |id: &str| !keys.contains(id);
                    for file in existing {
                        let (drops, keeps) = filter.drops_any(&file, &mut keep)?;
                        if !drops {
                            continue;
                        }
                        if keeps && let Filtered::Rewritten(w) = filter.filter(&file, &mut keep)? {
                            new.push(w);
                        }
                        removed.push(file);
                    }
                }
            }
        }
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let mut actions: Vec<Action> = Vec::new();
        for f in &new {
            actions.push(Action::Add(Add {
                path: relative(f),
                size: f.bytes as i64,
                modification_time: now,
                data_change: true,
                stats: Some(json!({ "numRecords": f.rows }).to_string()),
                ..Add::default()
            }));
        }
        for f in &removed {
            actions.push(Action::Remove(Remove {
                path: f.path.clone(),
                data_change: true,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(true),
                partition_values: Some(HashMap::new()),
                size: Some(f.size as i64),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            }));
        }
        let properties = CommitProperties::default()
            .with_metadata([
                ("zephr_etl_run_id".to_string(), json!(self.record.run_id)),
                ("zephr_etl_mode".to_string(), json!(self.mode.name())),
            ])
            .with_application_transaction(Transaction::new_with_last_update(
                APP_ID,
                self.record.txn_version,
                Some(now),
            ));
        let columns = StructType::try_from_arrow(plan.schema.as_ref())
            .map_err(|e| DeltaError::table(name)(e.into()))?;
        let version = match state {
            None => {
                let created = self
                    .runtime
                    .block_on(
                        CreateBuilder::new()
                            .with_log_store(table.log_store())
                            .with_columns(columns.fields().cloned())
                            .with_actions(actions)
                            .with_commit_properties(properties)
                            .into_future(),
                    )
                    .map_err(DeltaError::table(name))?;
                created.version().unwrap_or(0)
            }
            Some(state) => {
                let current = state.schema();
                if !same_columns(&current, &columns) {
                    if self.mode != TableMode::Overwrite {
                        return Err(DeltaError::Columns {
                            table: name.to_string(),
                            detail: "the table's columns are not this run's".into(),
                        });
                    }
                    let metadata = state
                        .metadata()
                        .clone()
                        .with_schema(&columns)
                        .map_err(|e| DeltaError::table(name)(e.into()))?;
                    actions.push(Action::Metadata(metadata));
                }
                let mode = match self.mode {
                    TableMode::Overwrite => SaveMode::Overwrite,
                    _ => SaveMode::Append,
                };
                let operation = DeltaOperation::Write {
                    mode,
                    partition_by: None,
                    predicate: None,
                };
                let done = self
                    .runtime
                    .block_on(
                        CommitBuilder::from(properties)
                            .with_actions(actions)
                            .build(Some(state), table.log_store(), operation)
                            .into_future(),
                    )
                    .map_err(DeltaError::table(name))?;
                done.version()
            }
        };
        let names: Vec<String> = new.iter().map(|f| f.name.clone()).collect();
        self.files.committed(&names);
        Ok(TableVersion {
            path: name.to_string(),
            version,
            committed_now: true,
            files_added: new.len(),
            files_removed: removed.len(),
        })
    }

    /// The run's new files of a table without the rows of repeated users' earlier items:
    /// per repeated user, its rows (in the run's order) but the last `keep[user]`.
    fn keep_last_items(
        &self,
        filter: &FileFilter<'_>,
        files: Vec<WrittenFile>,
        keep: HashMap<Box<str>, u32>,
        relative: &dyn Fn(&WrittenFile) -> String,
    ) -> Result<Vec<WrittenFile>, DeltaError> {
        let data = |f: &WrittenFile| DataFile {
            path: relative(f),
            size: f.bytes,
        };
        // How many rows of each repeated user the run's files hold, and which files hold any.
        let mut total: HashMap<Box<str>, u32> = HashMap::new();
        let mut holding = Vec::with_capacity(files.len());
        for f in &files {
            let mut any = false;
            filter.scan(&data(f), &mut |id| {
                if keep.contains_key(id) {
                    any = true;
                    *total.entry(Box::from(id)).or_default() += 1;
                }
            })?;
            holding.push(any);
        }
        let mut to_drop: HashMap<Box<str>, u32> = total
            .into_iter()
            .map(|(id, n)| {
                let k = keep.get(&id).copied().unwrap_or(n);
                (id, n.saturating_sub(k))
            })
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for (f, any) in files.into_iter().zip(holding) {
            if !any {
                out.push(f);
                continue;
            }
            let mut keep_row = |id: &str| match to_drop.get_mut(id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            };
            match filter.filter(&data(&f), &mut keep_row)? {
                Filtered::Untouched => out.push(f),
                Filtered::Emptied => self.files.remove(&f.name)?,
                Filtered::Rewritten(w) => {
                    self.files.remove(&f.name)?;
                    out.push(w);
                }
            }
        }
        Ok(out)
    }
}

/// Whether two schemas have the same columns (names, types, nullability), metadata aside.
fn same_columns(a: &StructType, b: &StructType) -> bool {
    let cols = |s: &StructType| {
        s.fields()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect::<Vec<_>>()
    };
    cols(a) == cols(b)
}
