//! The engine's side of `--format delta`: the run's [`DeltaRun`] opened with the export,
//! its data files named for [`Export::commit`], and the commit that hands each table's files
//! to the Delta tables, then writes `manifest.json` with each table's version.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arrow_schema::{DataType, Field, Schema};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Export, ExportError, ExportOptions, FileKind, OutputTable, lock};
use crate::delta::{DeltaRun, TABLES, TableFiles};
use zephr_core::flatten::users;
use zephr_core::manifest::{Manifest, ManifestTable};
use zephr_core::schema::Table;
use zephr_core::timestamp::iso_utc;
use zephr_dest::Commit;
use zephr_sink::{CreateFile, WrittenFile, dest_error};

/// The format name of Delta data files in [`FileKind`].
const DELTA: &str = "delta";

/// Opens the Delta tables when `opts` asks for them: `run_id` is the fresh run's id (an
/// interrupted run of the same command lends its own instead).
pub(super) fn open(opts: &ExportOptions, run_id: &str) -> Result<Option<DeltaRun>, ExportError> {
    let Some(delta) = &opts.delta else {
        return Ok(None);
    };
    // "The same command": what shapes the tables and where the rows come from.
    let shape = json!({
        "source": opts.source,
        "parameters": opts.manifest_parameters(),
        "mode": opts.table_mode.name(),
    });
    let fingerprint = hex::encode(Sha256::digest(shape.to_string().as_bytes()));
    Ok(Some(DeltaRun::open(
        delta,
        opts.table_mode,
        opts.parquet,
        run_id,
        &fingerprint,
    )?))
}

/// Opens new data files of `table` in its Delta table's folder.
pub(super) fn file_creator(
    run: &DeltaRun,
    table: OutputTable,
    kinds: Arc<Mutex<std::collections::HashMap<String, FileKind>>>,
) -> CreateFile {
    let files = run.files();
    Box::new(move |_part| {
        let (file, name) = files
            .create(table.name())
            .map_err(|e| dest_error(table.name(), e))?;
        lock(&kinds).insert(
            name.clone(),
            FileKind {
                table: table.name(),
                format: DELTA,
            },
        );
        Ok((file, name))
    })
}

impl Export {
    /// The run's Delta tables, with `--format delta`.
    pub fn delta(&self) -> Option<&DeltaRun> {
        self.delta.as_ref()
    }

    /// [`Export::commit`] with Delta tables: each table's files become one version of it,
    /// then the manifest (and the rejects, a plain file) records every table's version.
    pub(super) fn commit_delta(
        &mut self,
        files: Vec<WrittenFile>,
        tables: BTreeMap<String, ManifestTable>,
    ) -> Result<(), ExportError> {
        let kinds = lock(&self.kinds).clone();
        let mut by_table: BTreeMap<&str, Vec<WrittenFile>> = BTreeMap::new();
        let mut plain = Vec::new();
        for file in files {
            let kind = FileKind::of(&kinds, &file.name)?;
            if kind.format == DELTA {
                by_table.entry(kind.table).or_default().push(file);
            } else {
                plain.push((kind, file));
            }
        }
        let mut plans = Vec::new();
        for name in TABLES {
            let Some(files) = by_table.remove(name) else {
                continue;
            };
            let item = Table::ALL.into_iter().find(|t| t.name() == name);
            let (schema, dictionary_columns) = match item {
                Some(t) => (
                    users::schema_of(t, self.users()),
                    self.def(t).dictionary_columns(),
                ),
                // State events: every column text, named as the Parquet output names them.
                None => {
                    let fields: Vec<Field> = tables
                        .get(name)
                        .map(|t| {
                            t.columns
                                .iter()
                                .map(|c| Field::new(&c.name, DataType::Utf8, true))
                                .collect()
                        })
                        .unwrap_or_default();
                    (Arc::new(Schema::new(fields)), Vec::new())
                }
            };
            plans.push(TableFiles {
                name: name.to_string(),
                item,
                schema,
                dictionary_columns,
                files,
            });
        }
        let Some(run) = self.delta.as_mut() else {
            return Ok(());
        };
        run.commit(plans)?;
        let mut manifest = self.manifest.clone().unwrap_or_else(|| {
            Manifest::new(
                self.run_id.clone(),
                self.opts.source.clone(),
                self.opts.manifest_parameters(),
            )
        });
        manifest.tables.extend(tables);
        for (name, version) in run.versions() {
            manifest.delta.insert(
                name.clone(),
                serde_json::to_value(version).unwrap_or(Value::Null),
            );
        }
        manifest.delta.insert(
            "txn".into(),
            json!({"app_id": crate::delta::APP_ID, "version": run.txn_version()}),
        );
        manifest
            .delta
            .insert("repeated_items".into(), json!(run.repeated_items()));
        let mut finished = Vec::new();
        for (kind, file) in plain {
            finished.push(kind.record(&mut manifest, file));
        }
        manifest.created_at = iso_utc(SystemTime::now());
        self.dest.commit(Commit {
            files: finished,
            manifest: manifest.to_json().into_bytes(),
            remove: Vec::new(),
            // The manifest is the run's to replace: the tables' modes were checked already.
            overwrite: true,
        })?;
        lock(&self.kinds).clear();
        self.manifest = Some(manifest);
        if let Some(run) = self.delta.as_ref() {
            run.finish()?;
        }
        Ok(())
    }
}
