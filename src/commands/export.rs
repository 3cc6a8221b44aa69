//! The configuration every table-writing command shares: from [`OutputArgs`] to an opened,
//! locked output directory with a writer per table and format, then one run of the pipeline
//! and an all-or-nothing commit.
//!
//! File names follow the [`Layout`]: `TABLE.csv` and `TABLE.parquet` by default;
//! `TABLE.csv`, `TABLE-00002.csv`, ... when the Excel dialect splits a table at the
//! worksheet limit; `TABLE/part-00000.csv`, `TABLE/part-00000.parquet`, ... with
//! `--max-rows-per-file` (the names and manifest entries are in `layout.rs`).
//! `manifest.json` is written last when asked for (see [`zephr_etl::manifest`]). With
//! `--overwrite`, files an earlier run left under these names that this run did not write
//! again are removed after the commit, so that a directory of parts never mixes two runs.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use anyhow::Context;
use serde_json::Value;
use zephr_etl::extension::{self, UsersExtension};
use zephr_etl::fetch::state_file::iso_utc;
use zephr_etl::flatten::{FlattenOptions, OnError};
use zephr_etl::manifest::{
    MANIFEST_NAME, Manifest, ManifestFile, ManifestTable, sha256_file, write_to,
};
use zephr_etl::pipeline::{self, PipelineOptions, RunStats, Sources};
use zephr_etl::progress::{Progress, megabytes};
use zephr_etl::schema::{Table, TableDef};
use zephr_etl::sink::csv::{CreateFile, CsvWriter};
use zephr_etl::sink::output_dir::{OutputDir, OutputError};
use zephr_etl::sink::parquet::{ParquetCompression, ParquetOptions, ParquetWriter};
use zephr_etl::sink::xlsx::{XlsxOptions, XlsxWriter};
use zephr_etl::sink::{TableWriter, WriteError, WrittenFile};
use zephr_etl::source::framer::FramerOptions;
use zephr_etl::table::{CsvDialect, Formats};

use crate::cli::{CompressionArg, CsvDialectArg, FormatArg, OnErrorArg, OutputArgs};

use super::layout::{Layout, ManifestContext, existing_outputs, parameters, table_entry};

/// The name of the rejects file in the output directory.
pub const REJECTS_NAME: &str = "rejects.ndjson";

/// Everything a run needs, with the output directory opened and locked.
pub struct ExportConfig {
    pub dir: Arc<Mutex<OutputDir>>,
    pub formats: Formats,
    pub dialect: CsvDialect,
    pub parquet: ParquetOptions,
    pub xlsx: XlsxOptions,
    pub pipeline: PipelineOptions,
    pub layout: Layout,
    /// Every file created so far, for the manifest and the clean-up of stale parts.
    created: Arc<Mutex<Vec<Created>>>,
    /// Gives the directory up when the config is dropped without a commit, even if a worker
    /// that is still blocked on input holds the directory too.
    _abort: AbortOnDrop,
    /// Declared last so it drops after `dir`: table folders this run created are removed
    /// once the temporary files in them are gone, unless the run committed.
    folders: FolderCleanup,
}

/// Aborts the output directory on drop. A `Weak` reference: it neither keeps the directory
/// alive nor stands in the way of the commit, which takes the directory out of its `Arc`.
struct AbortOnDrop(Weak<Mutex<OutputDir>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.upgrade() {
            lock(&dir).abort();
        }
    }
}

/// A file this run created: its temporary path, final relative name, table and format.
#[derive(Debug, Clone)]
struct Created {
    temp: PathBuf,
    relative: String,
    table: String,
    format: String,
}

/// Removes empty table folders a failed run created.
#[derive(Default)]
struct FolderCleanup {
    folders: Arc<Mutex<Vec<PathBuf>>>,
    committed: bool,
}

impl Drop for FolderCleanup {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for folder in lock(&self.folders).iter() {
            // Only an empty folder goes: remove_dir refuses anything else.
            let _ = std::fs::remove_dir(folder);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExportConfig {
    /// Opens and locks the output directory and checks that no output would be replaced
    /// without `--overwrite`, before any input is read.
    pub fn open(args: &OutputArgs) -> anyhow::Result<ExportConfig> {
        let formats = Formats {
            csv: args.format.contains(&FormatArg::Csv),
            parquet: args.format.contains(&FormatArg::Parquet),
            xlsx: args.format.contains(&FormatArg::Xlsx),
        };
        let on_error = match args.on_error {
            OnErrorArg::Fail => OnError::Fail,
            OnErrorArg::Skip => OnError::Skip,
        };
        let dialect = match args.csv_dialect {
            CsvDialectArg::Plain => CsvDialect::Plain,
            CsvDialectArg::Excel => CsvDialect::Excel,
            CsvDialectArg::Postgres => CsvDialect::Postgres,
        };
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let pipeline = PipelineOptions {
            threads,
            framer: FramerOptions {
                batch_items: args.batch_size as usize,
                buffer_size: args.buffer_size as usize,
                max_item_bytes: args.max_item_bytes,
                ..FramerOptions::default()
            },
            flatten: FlattenOptions {
                formats,
                dialect,
                on_error,
                users: None,
            },
            max_errors: args.max_errors,
            first_item: 1,
            rejects_before: 0,
        };
        let parquet = ParquetOptions {
            compression: match args.compression {
                CompressionArg::Zstd => ParquetCompression::Zstd,
                CompressionArg::Snappy => ParquetCompression::Snappy,
                CompressionArg::None => ParquetCompression::None,
            },
            zstd_level: args.zstd_level,
            row_group_rows: args.row_group_size as usize,
            max_rows_per_file: args.max_rows_per_file,
            ..ParquetOptions::default()
        };
        let layout = Layout {
            partition: args.max_rows_per_file,
            excel_rows: (dialect == CsvDialect::Excel).then(|| args.excel_max_rows - 1),
            overwrite: args.overwrite,
            manifest: (args.manifest || args.max_rows_per_file.is_some()).then(|| {
                ManifestContext {
                    source: Value::Null,
                    parameters: parameters(args),
                }
            }),
        };
        let dir = OutputDir::open(&args.output, args.overwrite)?;
        let mut config =
            ExportConfig::with_layout(dir, formats, dialect, parquet, pipeline, layout);
        config.xlsx.max_rows_per_sheet = args.xlsx_max_rows;
        for table in Table::ALL {
            config.check_outputs(table.name())?;
        }
        if config.pipeline.flatten.on_error == OnError::Skip {
            config.lock_dir().check_free(Path::new(REJECTS_NAME))?;
        }
        if config.layout.manifest.is_some() {
            config.lock_dir().check_free(Path::new(MANIFEST_NAME))?;
        }
        Ok(config)
    }

    /// A configuration over an opened directory.
    pub fn with_layout(
        dir: OutputDir,
        formats: Formats,
        dialect: CsvDialect,
        parquet: ParquetOptions,
        pipeline: PipelineOptions,
        layout: Layout,
    ) -> ExportConfig {
        let dir = Arc::new(Mutex::new(dir));
        ExportConfig {
            _abort: AbortOnDrop(Arc::downgrade(&dir)),
            dir,
            formats,
            dialect,
            parquet,
            xlsx: XlsxOptions::default(),
            pipeline,
            layout,
            created: Arc::default(),
            folders: FolderCleanup::default(),
        }
    }

    /// The configuration of one segment of a paginated fetch, in `dir`: the same tables and
    /// cells, but one file per table and no manifest; the final layout is applied when the
    /// segments are assembled.
    pub fn segment(&self, dir: OutputDir, pipeline: PipelineOptions) -> ExportConfig {
        let mut parquet = self.parquet;
        parquet.max_rows_per_file = None;
        let mut segment = ExportConfig::with_layout(
            dir,
            self.formats,
            self.dialect,
            parquet,
            pipeline,
            Layout::default(),
        );
        segment.xlsx = self.xlsx;
        segment
    }

    /// Uses `ext` for the users table (wide columns, hashed identifiers).
    pub fn set_users(&mut self, ext: &'static UsersExtension) {
        self.pipeline.flatten.users = Some(ext);
    }

    /// The users extension of this run, if any.
    pub fn users(&self) -> Option<&'static UsersExtension> {
        self.pipeline.flatten.users
    }

    /// Records the run's source for the manifest (input names, or the fetch's tenant).
    pub fn set_source(&mut self, source: Value) {
        if let Some(manifest) = &mut self.layout.manifest {
            manifest.source = source;
        }
    }

    /// Adds a parameter to the manifest.
    pub fn set_parameter(&mut self, name: &str, value: Value) {
        if let Some(manifest) = &mut self.layout.manifest {
            manifest.parameters.insert(name.to_string(), value);
        }
    }

    fn lock_dir(&self) -> std::sync::MutexGuard<'_, OutputDir> {
        lock(&self.dir)
    }

    /// Fails when a file this run could write for table `stem` exists (under any of the
    /// layouts' names) and `--overwrite` was not given.
    pub fn check_outputs(&self, stem: &str) -> anyhow::Result<()> {
        if self.layout.overwrite {
            return Ok(());
        }
        let dir = self.lock_dir().path().to_path_buf();
        for extension in self.extensions() {
            if let Some(path) = existing_outputs(&dir, stem, extension).into_iter().next() {
                return Err(OutputError::Exists { path }.into());
            }
        }
        Ok(())
    }

    fn extensions(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.formats.csv {
            out.push("csv");
        }
        if self.formats.parquet {
            out.push("parquet");
        }
        if self.formats.xlsx {
            out.push("xlsx");
        }
        out
    }

    /// The final names this run will write when no table is split (the names a paginated
    /// fetch assembles its segments into).
    pub fn target_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for table in Table::ALL {
            if self.formats.csv {
                names.push(format!("{}.csv", table.name()));
            }
            if self.formats.parquet {
                names.push(format!("{}.parquet", table.name()));
            }
            if self.formats.xlsx {
                names.push(format!("{}.xlsx", table.name()));
            }
        }
        if self.pipeline.flatten.on_error == OnError::Skip {
            names.push(REJECTS_NAME.to_string());
        }
        names
    }

    /// A function that creates the temporary file of part `part` of table `stem`, named by
    /// the layout (see [`Layout::part_name`]).
    pub fn file_creator(&self, stem: &str, extension: &'static str) -> CreateFile {
        self.creator(stem, extension, self.layout.clone())
    }

    /// [`ExportConfig::file_creator`] with names from `layout`.
    fn creator(&self, stem: &str, extension: &'static str, layout: Layout) -> CreateFile {
        let dir = self.dir.clone();
        let created = self.created.clone();
        let folders = self.folders.folders.clone();
        let stem = stem.to_string();
        Box::new(move |part| {
            let name = layout.part_name(&stem, extension, part);
            let mut dir = lock(&dir);
            if layout.partition.is_some() {
                let folder = dir.path().join(&stem);
                if !folder.exists() {
                    lock(&folders).push(folder);
                }
            }
            let (file, temp) = dir.create(Path::new(&name)).map_err(|e| WriteError::Io {
                path: PathBuf::from(&name),
                source: std::io::Error::other(e.to_string()),
            })?;
            lock(&created).push(Created {
                temp: temp.clone(),
                relative: name,
                table: stem.clone(),
                format: extension.to_string(),
            });
            Ok((file, temp))
        })
    }

    /// The CSV writer of a table with these columns.
    pub fn csv_writer(&self, stem: &str, columns: &[&str]) -> anyhow::Result<Box<dyn TableWriter>> {
        Ok(Box::new(CsvWriter::new(
            columns,
            self.dialect,
            self.layout.csv_rows(),
            self.file_creator(stem, "csv"),
        )?))
    }

    /// The xlsx writer of a table with these columns: one workbook `stem.xlsx` whatever the
    /// layout (a long table goes on in more worksheets, not more files).
    pub fn xlsx_writer(
        &self,
        stem: &str,
        schema: arrow_schema::SchemaRef,
    ) -> anyhow::Result<Box<dyn TableWriter>> {
        let single = Layout {
            partition: None,
            ..self.layout.clone()
        };
        let create = self.creator(stem, "xlsx", single);
        Ok(Box::new(XlsxWriter::new(stem, schema, self.xlsx, create)?))
    }

    /// The writers of one table: CSV, Parquet and/or xlsx, in that order.
    pub fn table_writers(&self, table: Table) -> anyhow::Result<Vec<Box<dyn TableWriter>>> {
        let def = self.def(table);
        let mut writers: Vec<Box<dyn TableWriter>> = Vec::new();
        if self.formats.csv {
            let columns = def.column_names();
            writers.push(self.csv_writer(table.name(), &columns)?);
        }
        if self.formats.parquet {
            writers.push(Box::new(ParquetWriter::new(
                extension::schema_of(table, self.users()),
                &def.dictionary_columns(),
                self.parquet,
                self.file_creator(table.name(), "parquet"),
            )?));
        }
        if self.formats.xlsx {
            writers
                .push(self.xlsx_writer(table.name(), extension::schema_of(table, self.users()))?);
        }
        Ok(writers)
    }

    /// The definition of `table` in this run (users may have wide columns).
    pub fn def(&self, table: Table) -> &TableDef {
        extension::def_of(table, self.users())
    }

    /// The writers of every table, in [`Table::ALL`] order.
    fn writers(&self) -> anyhow::Result<Vec<Vec<Box<dyn TableWriter>>>> {
        Table::ALL
            .into_iter()
            .map(|table| self.table_writers(table))
            .collect()
    }

    /// Runs the pipeline over `sources` into temporary files. `raw_bytes` counts the bytes
    /// read from the inputs (compressed, as on disk or on the wire); `total` is their size
    /// when known. The files are renamed into place by [`ExportConfig::commit`].
    pub fn run(
        &self,
        sources: Sources,
        progress: &Progress,
        raw_bytes: &AtomicU64,
        total: Option<u64>,
    ) -> anyhow::Result<RunStats> {
        let mut on_progress = |stats: &RunStats| {
            let rows = stats.rows.iter().sum();
            progress.downloading(raw_bytes.load(Ordering::Relaxed), total, rows);
        };
        self.run_with(sources, &mut on_progress)
    }

    /// [`ExportConfig::run`] with the progress callback given: `fetch` runs the pipeline once
    /// per segment of pages and reports rows across all of them.
    pub fn run_with(
        &self,
        sources: Sources,
        on_progress: &mut dyn FnMut(&RunStats),
    ) -> anyhow::Result<RunStats> {
        let writers = self.writers()?;
        let mut rejects = match self.pipeline.flatten.on_error {
            OnError::Skip => {
                let (file, _) = self.create_rejects()?;
                Some(BufWriter::new(file))
            }
            OnError::Fail => None,
        };
        let stats = pipeline::run(
            sources,
            writers,
            rejects.as_mut().map(|w| w as &mut (dyn Write + Send)),
            self.pipeline,
            on_progress,
        )?;
        if let Some(mut rejects) = rejects {
            rejects.flush().context("cannot write rejects.ndjson")?;
            rejects
                .get_ref()
                .sync_all()
                .context("cannot write rejects.ndjson")?;
        }
        Ok(stats)
    }

    /// Creates the temporary rejects file.
    pub fn create_rejects(&self) -> anyhow::Result<(std::fs::File, PathBuf)> {
        let (file, temp) = self.lock_dir().create(Path::new(REJECTS_NAME))?;
        lock(&self.created).push(Created {
            temp: temp.clone(),
            relative: REJECTS_NAME.into(),
            table: "rejects".into(),
            format: "ndjson".into(),
        });
        Ok((file, temp))
    }

    /// Renames every file of the run into place and releases the directory.
    pub fn commit(mut self) -> anyhow::Result<Vec<PathBuf>> {
        let dir = Arc::try_unwrap(self.dir)
            .map_err(|_| anyhow::anyhow!("internal error: the output directory is still in use"))?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let done = dir.commit()?;
        self.folders.committed = true;
        Ok(done)
    }

    /// Finishes a run of the item tables: writes `manifest.json` when asked (from the
    /// finished temporary files; `stats.files` gives each file's rows), renames everything
    /// into place with the manifest last, and with `--overwrite` removes the files of an
    /// earlier run that this one did not replace. Returns the manifest.
    pub fn commit_run(self, stats: &RunStats) -> anyhow::Result<Option<Manifest>> {
        let files: Vec<WrittenFile> = stats.files.iter().map(|(_, f)| f.clone()).collect();
        let mut tables = BTreeMap::new();
        for (table, rows) in Table::ALL.into_iter().zip(stats.rows) {
            tables.insert(table.name().to_string(), table_entry(self.def(table), rows));
        }
        self.commit_with(&files, stats.rejects, tables, None)
    }

    /// [`ExportConfig::commit_run`] for any tables: `files` are the writers' files,
    /// `tables` the manifest's table entries, and `base` an earlier manifest of the same
    /// directory whose files and tables are kept (the state-events phase adds to the user
    /// tables' manifest).
    pub fn commit_with(
        self,
        files: &[WrittenFile],
        rejects: u64,
        tables: BTreeMap<String, ManifestTable>,
        base: Option<Manifest>,
    ) -> anyhow::Result<Option<Manifest>> {
        let created = std::mem::take(&mut *lock(&self.created));
        let manifest = match &self.layout.manifest {
            None => None,
            Some(context) => {
                let mut manifest = base.unwrap_or_else(|| {
                    Manifest::new(context.source.clone(), context.parameters.clone())
                });
                manifest.tables.extend(tables);
                for c in &created {
                    let rows = if c.table == "rejects" {
                        rejects
                    } else {
                        files
                            .iter()
                            .find(|f| f.path == c.temp)
                            .map_or(0, |f| f.rows)
                    };
                    let (sha256, bytes) = sha256_file(&c.temp)
                        .with_context(|| format!("cannot read back {}", c.temp.display()))?;
                    manifest.files.retain(|f| f.path != c.relative);
                    manifest.files.push(ManifestFile {
                        path: c.relative.clone(),
                        table: c.table.clone(),
                        format: c.format.clone(),
                        rows,
                        bytes,
                        sha256,
                    });
                }
                manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
                manifest.created_at = iso_utc(SystemTime::now());
                Some(manifest)
            }
        };
        let dir_path = self.lock_dir().path().to_path_buf();
        let replace_manifest = manifest.is_some()
            && self
                .lock_dir()
                .check_free(Path::new(MANIFEST_NAME))
                .is_err();
        if let Some(manifest) = &manifest
            && !replace_manifest
        {
            let (file, temp) = self.lock_dir().create(Path::new(MANIFEST_NAME))?;
            write_to(manifest, file).with_context(|| format!("cannot write {}", temp.display()))?;
        }
        let overwrite = self.layout.overwrite;
        let written_manifest = self.layout.manifest.is_some();
        let stems: Vec<(String, Vec<&'static str>)> = {
            let mut stems: Vec<String> = created.iter().map(|c| c.table.clone()).collect();
            stems.sort();
            stems.dedup();
            stems.into_iter().map(|s| (s, self.extensions())).collect()
        };
        self.commit()?;
        if replace_manifest && let Some(manifest) = &manifest {
            // A manifest of this very run (the user tables'), extended by a later phase.
            zephr_etl::manifest::replace(&dir_path, manifest).with_context(|| {
                format!("cannot write {}", dir_path.join(MANIFEST_NAME).display())
            })?;
        }
        if overwrite {
            let keep: HashSet<PathBuf> =
                created.iter().map(|c| dir_path.join(&c.relative)).collect();
            for (stem, extensions) in &stems {
                if stem == "rejects" {
                    continue;
                }
                for extension in extensions {
                    for stale in existing_outputs(&dir_path, stem, extension) {
                        if !keep.contains(&stale) {
                            let _ = std::fs::remove_file(&stale);
                        }
                    }
                }
                let _ = std::fs::remove_dir(dir_path.join(stem));
            }
            if !written_manifest {
                let _ = std::fs::remove_file(dir_path.join(MANIFEST_NAME));
            }
        }
        Ok(manifest)
    }
}

/// Prints the final summary: rows per table, rejects, time and throughput.
pub fn print_summary(progress: &Progress, stats: &RunStats, raw_bytes: u64) {
    let seconds = progress.elapsed().as_secs_f64().max(1e-9);
    let mut line = String::new();
    for (table, rows) in Table::ALL.iter().zip(stats.rows) {
        line.push_str(&format!("{}: {rows} rows, ", table.name()));
    }
    if stats.rejects > 0 {
        line.push_str(&format!(
            "rejected: {} items (see {REJECTS_NAME}), ",
            stats.rejects
        ));
    }
    if stats.nul_replaced > 0 {
        line.push_str(&format!(
            "NUL replaced by U+FFFD in {} CSV cells, ",
            stats.nul_replaced
        ));
    }
    line.push_str(&format!(
        "{} in {seconds:.2} s ({:.1} MB/s)",
        megabytes(raw_bytes),
        raw_bytes as f64 / 1e6 / seconds
    ));
    progress.line(&line);
}
