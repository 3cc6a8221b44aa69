//! The export engine: from plain [`ExportOptions`] and a [`Destination`] to a committed
//! dataset. [`Export`] owns the destination's lock, the `layout` of the files, the writers,
//! the rejects, the state-events phase (`events`), the manifest and the commit; [`fetch`]
//! adds the live fetch (resumable pages, or one streamed body) on top of it.
//!
//! A run:
//! 1. [`Export::open`] takes the lock, lets the destination recover from a crashed run, and
//!    refuses a destination that holds a dataset unless overwriting was asked for, before any
//!    input is read;
//! 2. [`Export::run`] streams the sources through the pipeline into staged files and commits
//!    them with the manifest written last; with overwrite, the previous dataset's files this
//!    run did not write are removed after the manifest landed;
//! 3. [`Export::state_events`] (optional) converts the state events and commits again, adding
//!    its files to the same manifest.
//!
//! Dropping an [`Export`] discards what it staged but did not commit.

mod events;
pub mod fetch;
mod layout;
pub mod summary;
// Delta Lake tables (issue 22): the engine's side of `--format delta`.
mod delta;
mod mode;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;

use crate::pipeline::{self, PipelineError, PipelineOptions, RunStats, Sources};
use crate::resume::ResumeError;
use crate::segments::MergeError;
use crate::state_events::StateEventsError;
use zephr_api::FetchError;
use zephr_core::flatten::OnError;
use zephr_core::flatten::users::{self, UsersExtension};
use zephr_core::manifest::MANIFEST_NAME;
use zephr_core::manifest::{self, Manifest, ManifestColumn, ManifestFile, ManifestTable};
use zephr_core::schema::{Table, TableDef};
use zephr_core::table::{CsvDialect, Formats};
use zephr_core::timestamp::iso_utc;
use zephr_dest::{Commit, DestError, DestLock, Destination, FinishedFile};
use zephr_sink::csv::CsvWriter;
use zephr_sink::parquet::{ParquetOptions, ParquetWriter};
use zephr_sink::xlsx::{XlsxOptions, XlsxWriter};
use zephr_sink::{CreateFile, TableWriter, WriteError, WrittenFile, dest_error};

pub(crate) use layout::{Format, Layout, OutputTable, REJECTS_NAME};
pub use mode::TableMode;

/// Everything that shapes a run's tables and files, as plain values.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// CSV and/or Parquet.
    pub formats: Formats,
    /// How CSV cells are written (`--csv-dialect`).
    pub dialect: CsvDialect,
    /// Parquet's codec and row groups (its `max_rows_per_file` is set from the layout).
    pub parquet: ParquetOptions,
    /// How workbooks are written (with `formats.xlsx`).
    pub xlsx: XlsxOptions,
    /// Threads, framing, flattening (`on_error`, users extension), error limits.
    pub pipeline: PipelineOptions,
    /// Each table and format a folder of parts of at most this many rows.
    pub max_rows_per_file: Option<u64>,
    /// With the Excel dialect: data rows per CSV file at most.
    pub excel_rows: Option<u64>,
    /// Replace the dataset the destination holds.
    pub overwrite: bool,
    /// What a run does with current-state tables that hold rows (Delta tables and
    /// PostgreSQL; SPEC section 7). A folder or bucket of files takes only
    /// [`TableMode::Create`] and [`TableMode::Overwrite`] (which `overwrite` says).
    pub table_mode: TableMode,
    /// Write Delta tables there instead of files (then `formats` is Parquet alone).
    pub delta: Option<crate::delta::DeltaOptions>,
    /// For the manifest: where the data came from (never credentials).
    pub source: Value,
    /// For the manifest: parameters besides those the options give (see
    /// `ExportOptions::manifest_parameters`); never secrets.
    pub parameters: BTreeMap<String, Value>,
}

/// Worker threads when none are asked for: one per core (2 when that cannot be known).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl ExportOptions {
    /// Options with the defaults of the command line: CSV and Parquet, plain CSV, zstd,
    /// failing on a bad item, all cores.
    pub fn new() -> ExportOptions {
        let formats = Formats {
            csv: true,
            parquet: true,
            xlsx: false,
        };
        let threads = default_threads();
        ExportOptions {
            formats,
            dialect: CsvDialect::Plain,
            parquet: ParquetOptions::default(),
            xlsx: XlsxOptions::default(),
            pipeline: PipelineOptions {
                threads,
                framer: Default::default(),
                flatten: zephr_core::flatten::FlattenOptions {
                    formats,
                    dialect: CsvDialect::Plain,
                    on_error: OnError::Fail,
                    users: None,
                },
                max_errors: None,
                first_item: 1,
                rejects_before: 0,
                on_interrupt: crate::pipeline::OnInterrupt::Fail,
                cancel: crate::control::Cancel::new(),
            },
            max_rows_per_file: None,
            excel_rows: None,
            overwrite: false,
            table_mode: TableMode::Create,
            delta: None,
            source: Value::Null,
            parameters: BTreeMap::new(),
        }
    }

    /// The layout these options give.
    pub fn layout(&self) -> Layout {
        Layout {
            partition: self.max_rows_per_file,
            excel_rows: self.excel_rows,
        }
    }

    /// The parameters that shape the tables, for the manifest (`extra` adds to them: the
    /// caller's own, such as where wide columns came from).
    pub fn manifest_parameters(&self) -> BTreeMap<String, Value> {
        use serde_json::json;
        let formats: Vec<&str> = self.format_list().into_iter().map(Format::name).collect();
        let users = self.pipeline.flatten.users.as_deref();
        let mut map = BTreeMap::new();
        map.insert("format".into(), json!(formats));
        map.insert("csv_dialect".into(), json!(self.dialect.name()));
        if let Some(rows) = self.excel_rows {
            // The worksheet's rows, header included.
            map.insert("excel_max_rows".into(), json!(rows + 1));
        }
        map.insert("max_rows_per_file".into(), json!(self.max_rows_per_file));
        map.insert("compression".into(), json!(self.parquet.compression.name()));
        if self.parquet.compression == zephr_sink::parquet::ParquetCompression::Zstd {
            map.insert("zstd_level".into(), json!(self.parquet.zstd_level));
        }
        map.insert("row_group_size".into(), json!(self.parquet.row_group_rows));
        map.insert(
            "on_error".into(),
            json!(self.pipeline.flatten.on_error.name()),
        );
        map.insert(
            "hash_pii".into(),
            json!(users.is_some_and(|u| u.pii.is_some())),
        );
        map.insert(
            "wide_attributes".into(),
            json!(users.is_some_and(|u| u.wide.is_some())),
        );
        map.extend(self.parameters.clone());
        map
    }

    /// The formats asked for, in order.
    pub(crate) fn format_list(&self) -> Vec<Format> {
        Format::ALL
            .into_iter()
            .filter(|f| match f {
                Format::Csv => self.formats.csv,
                Format::Parquet => self.formats.parquet,
                Format::Xlsx => self.formats.xlsx,
            })
            .collect()
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions::new()
    }
}

/// Why an export failed. Never names a command-line flag: the binary adds those hints.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination already holds a dataset (`name` is one of its files) and
    /// overwriting was not asked for.
    #[error("{name} already exists")]
    DatasetExists {
        /// The destination and the file (`out/users.csv`).
        name: String,
    },
    /// The destination refused (locked, a symlink, a file that appeared...).
    #[error(transparent)]
    Dest(#[from] DestError),
    /// The pipeline stopped: an input, a bad item, a writer, the rejects limit.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A table writer could not be made, or failed outside the pipeline.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Assembling the fetch's segments failed.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// The fetch's work folder (resume journal) failed.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// A request to the Admin API failed (after its retries).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The pages of a fetch could not all be had.
    #[error(transparent)]
    Pages(#[from] zephr_api::pages::PagesError<crate::feed::Stopped>),
    /// The state events' pages could not all be had.
    #[error(transparent)]
    EventPages(#[from] zephr_api::pages::PagesError<StateEventsError>),
    /// The state events could not be converted into their table.
    #[error(transparent)]
    StateEvents(#[from] StateEventsError),
    /// The Delta tables could not be written (boxed: a rare error, kept small).
    #[error(transparent)]
    Delta(Box<crate::delta::DeltaError>),
    /// The raw copy of the responses could not be written.
    #[error("cannot write the raw copy {}", path.display())]
    Raw {
        /// The raw copy's file (or the segment folder that holds it).
        path: PathBuf,
        /// What the file system reported.
        #[source]
        source: std::io::Error,
    },
    /// The raw copy's file exists and overwriting was not asked for.
    #[error("{} already exists", path.display())]
    RawExists {
        /// The raw copy's file (`--save-raw`).
        path: PathBuf,
    },
    /// The tables were committed but the raw copy could not be moved into place.
    #[error("the tables were written, but not {}", path.display())]
    RawAfterCommit {
        /// Where the raw copy should have gone.
        path: PathBuf,
        /// What the file system reported.
        #[source]
        source: std::io::Error,
    },
    /// The run was interrupted (Ctrl-C, SIGTERM).
    #[error("interrupted (Ctrl-C or SIGTERM)")]
    Interrupted,
    /// A paginated fetch was asked for workbooks: its tables are assembled from resumable
    /// segments, and a workbook cannot be appended to.
    #[error(
        "a paginated fetch cannot write xlsx workbooks (its tables are assembled from \
         resumable segments, and a workbook cannot be appended to)"
    )]
    PagedXlsx,
    /// The fetch's thread could not be started.
    #[error("cannot start the fetch thread")]
    FetchThread(#[source] std::io::Error),
    /// A paginated fetch failed part way; pages `first..=last` are kept in the work folder
    /// `work`, and a resumed run continues from page `last + 1`.
    #[error(
        "pages {first}-{last} are kept in {}; a resumed run continues from page {}",
        work.display(),
        last + 1
    )]
    Resumable {
        /// The first page kept.
        first: u32,
        /// The last page kept.
        last: u32,
        /// The work folder that holds the pages' segments and journal.
        work: PathBuf,
        /// Why the fetch stopped.
        #[source]
        source: Box<ExportError>,
    },
}

impl From<crate::delta::DeltaError> for ExportError {
    fn from(error: crate::delta::DeltaError) -> Self {
        ExportError::Delta(Box::new(error))
    }
}

/// What to call a table file in the manifest.
#[derive(Debug, Clone)]
struct FileKind {
    table: &'static str,
    format: &'static str,
}

impl FileKind {
    /// The kind of the committed file `name`. Every file a run commits was created through
    /// `file_creator` or `create_rejects`, which name its kind; any other is refused.
    fn of(kinds: &HashMap<String, FileKind>, name: &str) -> Result<FileKind, ExportError> {
        kinds.get(name).cloned().ok_or_else(|| {
            ExportError::Dest(DestError::BadName {
                name: name.to_string(),
            })
        })
    }

    /// Lists `file` in `manifest` as this kind (in place of an entry of the same path) and
    /// hands it on to the commit.
    fn record(&self, manifest: &mut Manifest, file: WrittenFile) -> FinishedFile {
        manifest.files.retain(|f| f.path != file.name);
        manifest.files.push(ManifestFile {
            path: file.name.clone(),
            table: self.table.into(),
            format: self.format.into(),
            rows: file.rows,
            bytes: file.bytes,
            sha256: file.sha256.clone(),
        });
        FinishedFile {
            name: file.name,
            bytes: file.bytes,
            sha256: file.sha256,
        }
    }
}

/// One run's export into one destination.
pub struct Export {
    dest: Arc<dyn Destination>,
    opts: ExportOptions,
    layout: Layout,
    run_id: String,
    /// The previous dataset's files, as its manifest lists them.
    previous: BTreeSet<String>,
    /// The manifest of this run's last commit.
    manifest: Option<Manifest>,
    /// Final name → table and format of every file staged so far.
    kinds: Arc<Mutex<HashMap<String, FileKind>>>,
    /// With `--format delta`: the run's Delta tables.
    delta: Option<crate::delta::DeltaRun>,
    /// Declared last: released after the drop discarded what was staged.
    _lock: Box<dyn DestLock>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Export {
    /// Locks `dest`, recovers it from a crashed run, and checks it: a destination that
    /// holds a dataset is refused unless `opts.overwrite`. Nothing is read or written
    /// before this succeeds.
    pub fn open(dest: Arc<dyn Destination>, opts: ExportOptions) -> Result<Export, ExportError> {
        let guard = dest.lock()?;
        let checked = (|| -> Result<BTreeSet<String>, ExportError> {
            dest.recover()?;
            // The previous dataset is what its manifest lists: only those files are removed
            // after an overwrite. A file merely named like an output (no manifest, or one that
            // does not list it) still makes the destination "hold a dataset" (refused without
            // overwrite), but is never deleted: it may be the user's own.
            let mut previous = BTreeSet::new();
            if let Some(bytes) = dest.read(MANIFEST_NAME)? {
                previous.extend(manifest::listed_files(&bytes));
                previous.insert(MANIFEST_NAME.to_string());
            }
            let mut held: BTreeSet<String> = dest
                .list()?
                .into_iter()
                .filter(|name| layout::dataset_rank(name).is_some())
                .collect();
            held.extend(previous.iter().cloned());
            if opts.delta.is_some() {
                // Delta tables: the mode decides per table (`DeltaRun::open`); nothing of an
                // earlier dataset is removed by name.
                return Ok(BTreeSet::new());
            }
            if !opts.overwrite
                && let Some(first) = held
                    .iter()
                    .min_by_key(|name| layout::dataset_rank(name).unwrap_or(usize::MAX))
            {
                return Err(ExportError::DatasetExists {
                    name: format!("{}/{first}", dest.describe().trim_end_matches('/')),
                });
            }
            Ok(previous)
        })();
        let previous = match checked {
            Ok(previous) => previous,
            Err(e) => {
                dest.discard();
                drop(guard);
                return Err(e);
            }
        };
        let mut opts = opts;
        opts.parquet.max_rows_per_file = opts.max_rows_per_file;
        opts.pipeline.flatten.formats = opts.formats;
        opts.pipeline.flatten.dialect = opts.dialect;
        let mut run_id = manifest::new_run_id();
        let delta = match delta::open(&opts, &run_id) {
            Ok(delta) => delta,
            Err(e) => {
                dest.discard();
                drop(guard);
                return Err(e);
            }
        };
        if let Some(d) = &delta {
            run_id = d.run_id().to_string();
        }
        Ok(Export {
            layout: opts.layout(),
            dest,
            opts,
            run_id,
            previous,
            manifest: None,
            kinds: Arc::default(),
            delta,
            _lock: guard,
        })
    }

    /// The destination, for messages.
    pub fn describe(&self) -> String {
        self.dest.describe()
    }

    /// The options of this run.
    pub fn options(&self) -> &ExportOptions {
        &self.opts
    }

    /// The run's id (also in its manifest).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Uses `ext` for the users table (wide columns, hashed identifiers).
    pub fn set_users(&mut self, ext: Arc<UsersExtension>) {
        self.opts.pipeline.flatten.users = Some(ext);
    }

    /// The users extension of this run, if any.
    pub fn users(&self) -> Option<&UsersExtension> {
        self.opts.pipeline.flatten.users.as_deref()
    }

    /// Adds a parameter to the manifest.
    pub fn set_parameter(&mut self, name: &str, value: Value) {
        self.opts.parameters.insert(name.to_string(), value);
    }

    /// The manifest of the last commit, once there was one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The definition of `table` in this run (users may have wide columns).
    pub fn def(&self, table: Table) -> &TableDef {
        users::def_of(table, self.users())
    }

    /// Runs the pipeline over `sources` into staged files and commits them. `on_progress`
    /// is called as batches are written.
    pub fn run(
        &mut self,
        sources: Sources,
        on_progress: &mut dyn FnMut(&RunStats),
    ) -> Result<RunStats, ExportError> {
        let (stats, rejects) =
            self.write_tables(sources, self.opts.pipeline.clone(), on_progress)?;
        self.commit_tables(&stats, rejects)?;
        Ok(stats)
    }

    /// The pipeline part of [`Export::run`]: staged files, not committed. Returns the stats
    /// and the finished rejects file, if any.
    fn write_tables(
        &self,
        sources: Sources,
        options: PipelineOptions,
        on_progress: &mut dyn FnMut(&RunStats),
    ) -> Result<(RunStats, Option<WrittenFile>), ExportError> {
        let writers = Table::ALL
            .into_iter()
            .map(|table| self.table_writers(table))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rejects = match options.flatten.on_error {
            OnError::Skip => Some(self.create_rejects()?),
            OnError::Fail => None,
        };
        let stats = pipeline::run(
            sources,
            writers,
            rejects.as_mut().map(|w| w as &mut (dyn Write + Send)),
            options,
            on_progress,
        )?;
        let rejects = match rejects {
            Some(out) => Some(zephr_sink::finish_file(out, stats.rejects, REJECTS_NAME)?),
            None => None,
        };
        Ok((stats, rejects))
    }

    /// Opens the staged rejects file.
    fn create_rejects(&self) -> Result<BufWriter<Box<dyn zephr_dest::StagedFile>>, ExportError> {
        let file = self.dest.create(REJECTS_NAME)?;
        lock(&self.kinds).insert(
            self.dest.final_name(REJECTS_NAME),
            FileKind {
                table: "rejects",
                format: "ndjson",
            },
        );
        Ok(BufWriter::with_capacity(1 << 20, file))
    }

    /// A function that opens the staged file of each part of `table` in `format`.
    fn file_creator(&self, table: OutputTable, format: Format) -> CreateFile {
        if let Some(run) = &self.delta {
            return delta::file_creator(run, table, self.kinds.clone());
        }
        let dest = self.dest.clone();
        let kinds = self.kinds.clone();
        let layout = self.layout;
        Box::new(move |part| {
            let name = layout.part_name(table, format, part);
            let file = dest.create(&name).map_err(|e| dest_error(&name, e))?;
            lock(&kinds).insert(
                dest.final_name(&name),
                FileKind {
                    table: table.name(),
                    format: format.name(),
                },
            );
            Ok((file, name))
        })
    }

    /// The writers of one item table: CSV, Parquet and/or xlsx, in [`Format::ALL`] order.
    pub(crate) fn table_writers(
        &self,
        table: Table,
    ) -> Result<Vec<Box<dyn TableWriter>>, WriteError> {
        let out = OutputTable::from(table);
        self.writers_with(table, true, &mut |format| self.file_creator(out, format))
    }

    /// The writers of `table` with files from `create` (the fetch's segments use their own,
    /// one file per table and format: `split` false).
    fn writers_with(
        &self,
        table: Table,
        split: bool,
        create: &mut dyn FnMut(Format) -> CreateFile,
    ) -> Result<Vec<Box<dyn TableWriter>>, WriteError> {
        let mut parquet = self.opts.parquet;
        let mut csv_rows = self.layout.csv_rows();
        if !split {
            parquet.max_rows_per_file = None;
            csv_rows = None;
        }
        let def = self.def(table);
        let mut writers: Vec<Box<dyn TableWriter>> = Vec::new();
        for format in self.opts.format_list() {
            match format {
                Format::Csv => writers.push(Box::new(CsvWriter::new(
                    &def.column_names(),
                    self.opts.dialect,
                    csv_rows,
                    create(format),
                )?)),
                Format::Parquet => {
                    let writer = Box::new(ParquetWriter::new(
                        users::schema_of(table, self.users()),
                        &def.dictionary_columns(),
                        parquet,
                        create(format),
                    )?);
                    writers.push(match &self.delta {
                        Some(run) => run.track(table, writer),
                        None => writer,
                    });
                }
                Format::Xlsx => writers.push(Box::new(XlsxWriter::new(
                    table.name(),
                    users::schema_of(table, self.users()),
                    self.opts.xlsx,
                    create(format),
                )?)),
            }
        }
        Ok(writers)
    }

    /// Commits the item tables of `stats` (and the rejects): the first commit of the run.
    fn commit_tables(
        &mut self,
        stats: &RunStats,
        rejects: Option<WrittenFile>,
    ) -> Result<(), ExportError> {
        let mut files: Vec<WrittenFile> = stats.files.iter().map(|(_, f)| f.clone()).collect();
        files.extend(rejects);
        let mut tables = BTreeMap::new();
        for (table, &rows) in stats.rows.iter() {
            let nul = self.nul_entry(stats.nul_replaced[table]);
            tables.insert(
                table.name().to_string(),
                table_entry(self.def(table), rows, nul),
            );
        }
        self.commit(files, tables)
    }

    /// The manifest's `nul_replaced` for a table of `count` changed cells: shown with the
    /// postgres dialect (where 0 is news too) or when a cell was changed.
    fn nul_entry(&self, count: u64) -> Option<u64> {
        (self.opts.dialect == CsvDialect::Postgres || count > 0).then_some(count)
    }

    /// Commits `files` with the manifest extended by them and `tables`. The first commit of
    /// a run also removes the previous dataset's files it did not rewrite.
    fn commit(
        &mut self,
        files: Vec<WrittenFile>,
        tables: BTreeMap<String, ManifestTable>,
    ) -> Result<(), ExportError> {
        if self.delta.is_some() {
            return self.commit_delta(files, tables);
        }
        let mut manifest = self.manifest.clone().unwrap_or_else(|| {
            Manifest::new(
                self.run_id.clone(),
                self.opts.source.clone(),
                self.opts.manifest_parameters(),
            )
        });
        manifest.tables.extend(tables);
        let kinds = lock(&self.kinds).clone();
        let mut finished = Vec::with_capacity(files.len());
        for file in files {
            let kind = FileKind::of(&kinds, &file.name)?;
            finished.push(kind.record(&mut manifest, file));
        }
        manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.created_at = iso_utc(SystemTime::now());
        let written: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let remove = std::mem::take(&mut self.previous)
            .into_iter()
            .filter(|name| !written.contains(name.as_str()) && name != MANIFEST_NAME)
            .collect();
        self.dest.commit(Commit {
            files: finished,
            manifest: manifest.to_json().into_bytes(),
            remove,
            overwrite: self.opts.overwrite,
        })?;
        lock(&self.kinds).clear();
        self.manifest = Some(manifest);
        Ok(())
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // Nothing staged after the last commit is kept; after a commit this only tidies up.
        self.dest.discard();
        if let Some(run) = &self.delta {
            run.discard();
        }
    }
}

/// The manifest's entry for a table.
pub(crate) fn table_entry(def: &TableDef, rows: u64, nul_replaced: Option<u64>) -> ManifestTable {
    ManifestTable {
        rows,
        nul_replaced,
        columns: def
            .columns
            .iter()
            .map(|c| ManifestColumn {
                name: c.name.clone(),
                column_type: serde_json::to_value(c.column_type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                source_name: None,
            })
            .collect(),
    }
}

/// Whether `path` would be one of a run's outputs in the local folder `dir`: a file named
/// like a dataset's, the manifest, or the tool's own bookkeeping (`.zephr-etl*`). Such a path cannot also
/// receive a side file (a raw copy, a state file). Works before either exists.
pub fn is_output_path(dir: &Path, path: &Path) -> bool {
    let (Some(dir), Some(path)) = (resolve(dir), resolve(path)) else {
        return false;
    };
    let Ok(relative) = path.strip_prefix(&dir) else {
        return false;
    };
    let name = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    layout::dataset_rank(&name).is_some() || name.starts_with(".zephr-etl")
}

/// `path` made absolute and free of `.` and `..`, with its longest existing ancestor's
/// symlinks resolved (the rest does not exist yet, so has none).
fn resolve(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let absolute = std::env::current_dir().ok()?.join(path);
    let mut clean = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return Some(out);
        }
        rest.push(existing.file_name()?.to_owned());
        if !existing.pop() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_that_would_be_outputs_are_recognised() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        assert!(is_output_path(&dir, &dir.join("users.csv")));
        assert!(is_output_path(
            &dir,
            &tmp.path().join("x/../d/manifest.json")
        ));
        assert!(is_output_path(&dir, &dir.join(".zephr-etl.lock")));
        assert!(!is_output_path(&dir, &dir.join("raw.ndjson")));
        assert!(!is_output_path(&dir, &dir.join(".my-state.json")));
        assert!(!is_output_path(&dir, &tmp.path().join("users.csv")));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&dir, tmp.path().join("link")).unwrap();
        assert!(is_output_path(
            &dir,
            &tmp.path().join("link/grants.parquet")
        ));
    }
}
