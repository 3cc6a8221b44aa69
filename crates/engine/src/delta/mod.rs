//! Delta Lake tables (`--format delta`, SPEC section 7): DEST holds the Delta tables
//! `users`, `grants`, `attributes` (and `state_events`), kept through delta-rs (the
//! `deltalake-core` crate): its log, protocol, checkpoints and conflict checks.
//!
//! The pipeline writes each table's rows as Parquet data files straight into the table's
//! folder (`files`), recording the run's user ids on the way (`keys`). [`DeltaRun::commit`]
//! then makes each table's change ONE Delta version: create, overwrite, or a copy-on-write merge
//! keyed by `user_id` (`merge`: only the files holding rows the run replaces are written
//! again), with a `txn` action (app id `APP_ID`, the run's sequence number as version) and
//! the run id in the commit info.
//!
//! Crash safety across tables: before the first table's commit the run writes its record
//! (`PENDING_NAME`: run id, a fingerprint of the command, the txn version), and removes it
//! once `manifest.json` lists every table's version. A table's version either exists whole or
//! not at all (Delta's atomic log entry), so after kill -9 each table reads at its previous
//! or its new version. A rerun of the same command finds the record, takes over its run id and
//! txn version, and skips every table whose `txn` already has it: the tables left behind are
//! completed and none is applied twice. Another command is refused while the record stands
//! (with `--overwrite`, which replaces every table, it is replaced).

mod commit;
mod files;
mod keys;
mod merge;

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake_core::logstore::{
    LogStore, LogStoreFactory, StorageConfig, default_logstore, logstore_factories,
};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use url::Url;

use crate::export::TableMode;
use zephr_core::schema::Table;
use zephr_dest::DestError;
use zephr_dest::upload::Shared;
use zephr_sink::parquet::ParquetOptions;
use zephr_sink::{TableWriter, WriteError};
use zephr_store::store::{Store, StoreOptions};
use zephr_store::{CloudError, Location};

pub(crate) use commit::TableFiles;
pub use commit::TableVersion;
use files::{DataFiles, Root};
use keys::{KeyTracker, RunKeys};

/// The `txn` app id of this tool's commits; its version is the run's sequence number.
pub(crate) const APP_ID: &str = "zephr-etl";

/// The record of a run between its first table commit and its manifest, in DEST.
pub(crate) const PENDING_NAME: &str = ".zephr-etl-delta-run.json";

/// The tables a Delta run may keep, in commit order.
pub(crate) const TABLES: [&str; 4] = ["users", "grants", "attributes", "state_events"];

/// Why the Delta tables could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// delta-rs refused or failed (log, protocol, commit conflict, store).
    #[error("Delta table {table}")]
    Table {
        /// The table (`users`).
        table: String,
        #[source]
        /// delta-rs's error.
        source: DeltaTableError,
    },
    /// A data file could not be read.
    #[error("cannot read data file {path}")]
    Parquet {
        /// The data file.
        path: String,
        #[source]
        /// The `parquet` crate's error.
        source: parquet::errors::ParquetError,
    },
    /// Rows could not be filtered.
    #[error("cannot filter rows: {0}")]
    Arrow(String),
    /// The table's columns are not this run's.
    #[error("Delta table {table}: {detail}")]
    Columns {
        /// The table (`users`).
        table: String,
        /// How its columns differ from the run's.
        detail: String,
    },
    /// The table holds rows and neither replacing nor merging was asked for.
    #[error("{table} is a Delta table that holds rows")]
    HoldsRows {
        /// The table (`users`).
        table: String,
    },
    /// An interrupted run's record stands and this run is another command.
    #[error(
        "{dest} holds an interrupted run ({run_id}) that committed {committed} but not {missing}"
    )]
    Interrupted {
        /// The destination as messages show it.
        dest: String,
        /// The interrupted run's id.
        run_id: String,
        /// The tables it committed.
        committed: String,
        /// The tables it did not.
        missing: String,
    },
    /// The run record cannot be read.
    #[error("{name} is damaged ({problem}); move it away to start afresh")]
    Record {
        /// The record's name in DEST.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    #[error(transparent)]
    /// The destination (lock, store, files) failed.
    Dest(#[from] DestError),
    #[error(transparent)]
    /// A data file could not be written.
    Write(#[from] WriteError),
    /// The runtime delta-rs runs on could not be started.
    #[error("cannot start the Delta threads")]
    Runtime(#[source] std::io::Error),
}

impl DeltaError {
    fn table(table: &str) -> impl FnOnce(DeltaTableError) -> DeltaError + '_ {
        move |source| DeltaError::Table {
            table: table.to_string(),
            source,
        }
    }
}

/// Where the tables go and how their store is reached.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// The `-o` text: a folder, or an object-store prefix.
    pub location: String,
    /// How an object store is reached and retried.
    pub store: StoreOptions,
}

/// The run's record in DEST while its tables are being committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// SHA-256 of what shapes the run (source, parameters, mode): "the same command".
    pub fingerprint: String,
    /// The version of this run's `txn` action in every table.
    pub txn_version: i64,
}

/// One run's Delta tables.
pub struct DeltaRun {
    describe: String,
    files: Arc<DataFiles>,
    runtime: Arc<Runtime>,
    /// For a bucket: the store rooted at the bucket, which delta-rs prefixes per table.
    root_store: Option<Arc<dyn ObjectStore>>,
    /// DEST as a URL ending in '/'.
    base: Url,
    mode: TableMode,
    parquet: ParquetOptions,
    keys: Arc<RunKeys>,
    record: RunRecord,
    /// Whether this run takes over an interrupted one.
    resumed: bool,
    /// Each table's version after this run's commits so far.
    versions: BTreeMap<String, TableVersion>,
}

/// delta-rs's plain log store (commits by conditional PUT) for the schemes it has none for
/// without its cloud crates: the store itself is ours, configured like every other upload.
#[derive(Debug)]
struct PlainLogStores;

impl LogStoreFactory for PlainLogStores {
    fn with_options(
        &self,
        prefixed_store: Arc<dyn ObjectStore>,
        root_store: Arc<dyn ObjectStore>,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

impl DeltaRun {
    /// Opens the tables of `options.location` for a run of `mode` whose fresh id is `run_id`
    /// and whose command has `fingerprint`. Takes over an interrupted run of the same command;
    /// refuses another command while one stands, and tables that hold rows in `Create` mode.
    /// Called with the destination's lock held.
    pub fn open(
        options: &DeltaOptions,
        mode: TableMode,
        parquet: ParquetOptions,
        run_id: &str,
        fingerprint: &str,
    ) -> Result<DeltaRun, DeltaError> {
        let (root, runtime, root_store, base, describe) =
            match zephr_store::parse(&options.location).map_err(DestError::from)? {
                Location::Local(path) => {
                    let path = std::path::absolute(&path).map_err(|source| DestError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    // The process's one runtime, which the stores' clients use too.
                    let runtime =
                        zephr_store::store::shared_runtime().map_err(DeltaError::Runtime)?;
                    let base = Url::from_directory_path(&path)
                        .map_err(|()| DestError::NotADir { path: path.clone() })?;
                    let describe = path.display().to_string();
                    (Root::Local(path), runtime, None, base, describe)
                }
                Location::Cloud(url) => {
                    let store = Store::connect(&url, &options.store).map_err(DestError::from)?;
                    let runtime = store.runtime.clone();
                    let root_store: Arc<dyn ObjectStore> = store.client.clone();
                    let scheme = url.url().scheme().to_string();
                    let key = if url.key.is_empty() {
                        String::new()
                    } else {
                        format!("{}/", url.key)
                    };
                    let base =
                        Url::parse(&format!("{scheme}://{}/{key}", url.bucket)).map_err(|e| {
                            DestError::Cloud(CloudError::Config {
                                url: url.display(),
                                detail: e.to_string(),
                            })
                        })?;
                    if let Ok(scheme_url) = Url::parse(&format!("{scheme}://")) {
                        let factories = logstore_factories();
                        if !factories.contains_key(&scheme_url) {
                            factories.insert(scheme_url, Arc::new(PlainLogStores));
                        }
                    }
                    let describe = url.display();
                    let shared = Arc::new(Shared::new(store, 5 << 20, 3));
                    (
                        Root::Object(shared),
                        runtime,
                        Some(root_store),
                        base,
                        describe,
                    )
                }
            };
        let mut run = DeltaRun {
            describe,
            files: Arc::new(DataFiles::new(root)),
            runtime,
            root_store,
            base,
            mode,
            parquet,
            keys: Arc::default(),
            record: RunRecord {
                run_id: run_id.to_string(),
                fingerprint: fingerprint.to_string(),
                txn_version: 0,
            },
            resumed: false,
            versions: BTreeMap::new(),
        };
        run.check(fingerprint)?;
        Ok(run)
    }

    /// Decides the run's record (taken over or new) and checks the tables against the mode.
    fn check(&mut self, fingerprint: &str) -> Result<(), DeltaError> {
        let mut txns = BTreeMap::new();
        let mut holding = Vec::new();
        for name in TABLES {
            if let Some(table) = self.load(name)? {
                let state = table.snapshot().map_err(DeltaError::table(name))?;
                let txn = self
                    .runtime
                    .block_on(state.transaction_version(table.log_store().as_ref(), APP_ID))
                    .map_err(DeltaError::table(name))?;
                txns.insert(name, txn.unwrap_or(0));
                if state.log_data().num_files() > 0 {
                    holding.push(name);
                }
            }
        }
        let latest = txns.values().copied().max().unwrap_or(0);
        match commit::read_record(self)? {
            Some(record) if record.fingerprint == fingerprint => {
                self.record = record;
                self.resumed = true;
            }
            Some(record) if self.mode != TableMode::Overwrite => {
                let (done, left): (Vec<&str>, Vec<&str>) = TABLES
                    .iter()
                    .partition(|t| txns.get(*t).is_some_and(|&v| v >= record.txn_version));
                let list = |names: Vec<&str>| {
                    if names.is_empty() {
                        "no table".to_string()
                    } else {
                        names.join(", ")
                    }
                };
                return Err(DeltaError::Interrupted {
                    dest: self.describe.clone(),
                    run_id: record.run_id,
                    committed: list(done),
                    missing: list(left),
                });
            }
            _ => self.record.txn_version = latest + 1,
        }
        if self.mode == TableMode::Create {
            // A table this very run (taken over) already filled is not "holding rows".
            if let Some(name) = holding
                .into_iter()
                .find(|t| !(self.resumed && txns[t] >= self.record.txn_version))
            {
                return Err(DeltaError::HoldsRows {
                    table: format!("{}/{name}", self.describe.trim_end_matches('/')),
                });
            }
        }
        Ok(())
    }

    /// The run's id: the fresh one, or the interrupted run's it takes over.
    pub fn run_id(&self) -> &str {
        &self.record.run_id
    }

    /// Whether this run takes over an interrupted one.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Items dropped because a later item had the same user_id.
    pub fn repeated_items(&self) -> u64 {
        self.keys.repeated_items()
    }

    /// Each table's version after the commits so far.
    pub fn versions(&self) -> &BTreeMap<String, TableVersion> {
        &self.versions
    }

    /// The `txn` version of this run.
    pub(crate) fn txn_version(&self) -> i64 {
        self.record.txn_version
    }

    /// The data files, for writers that outlive a borrow.
    pub fn files(&self) -> Arc<DataFiles> {
        self.files.clone()
    }

    /// `inner`, the writer of item table `table`, with the run's user ids recorded on the way.
    pub fn track(&self, table: Table, inner: Box<dyn TableWriter>) -> Box<dyn TableWriter> {
        Box::new(KeyTracker::new(table, self.keys.clone(), inner))
    }

    /// The URL of table `name`.
    fn table_url(&self, name: &str) -> Result<Url, DeltaError> {
        self.base
            .join(&format!("{name}/"))
            .map_err(|e| DeltaError::Columns {
                table: name.to_string(),
                detail: format!("no URL for the table: {e}"),
            })
    }

    /// Table `name`, not loaded (it may not exist).
    fn handle(&self, name: &str) -> Result<DeltaTable, DeltaError> {
        let url = self.table_url(name)?;
        let mut builder =
            DeltaTableBuilder::from_url(url.clone()).map_err(DeltaError::table(name))?;
        if let Some(store) = &self.root_store {
            builder = builder.with_storage_backend(store.clone(), url);
        }
        builder.build().map_err(DeltaError::table(name))
    }

    /// Table `name` loaded at its latest version, or None when there is no table there.
    fn load(&self, name: &str) -> Result<Option<DeltaTable>, DeltaError> {
        let mut table = self.handle(name)?;
        let exists = self
            .runtime
            .block_on(table.verify_deltatable_existence())
            .map_err(DeltaError::table(name))?;
        if !exists {
            return Ok(None);
        }
        self.runtime
            .block_on(table.load())
            .map_err(DeltaError::table(name))?;
        Ok(Some(table))
    }

    /// A failed run: removes the data files no committed version names.
    pub fn discard(&self) {
        self.files.discard();
    }

    /// Where the tables are, for messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }
}
