//! The configuration every table-writing command shares: from [`OutputArgs`] to an opened,
//! locked output directory with a writer per table and format, then one run of the pipeline
//! and an all-or-nothing commit.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use zephr_etl::flatten::{FlattenOptions, OnError};
use zephr_etl::pipeline::{self, PipelineOptions, RunStats, Sources};
use zephr_etl::progress::{Progress, megabytes};
use zephr_etl::schema::Table;
use zephr_etl::sink::csv::{CreateFile, CsvWriter};
use zephr_etl::sink::output_dir::OutputDir;
use zephr_etl::sink::parquet::{ParquetCompression, ParquetOptions, ParquetWriter};
use zephr_etl::sink::{TableWriter, WriteError};
use zephr_etl::source::framer::FramerOptions;
use zephr_etl::table::{CsvDialect, Formats};

use crate::cli::{CompressionArg, FormatArg, OnErrorArg, OutputArgs};

/// The name of the rejects file in the output directory.
pub const REJECTS_NAME: &str = "rejects.ndjson";

/// Everything a run needs, with the output directory opened and locked.
pub struct ExportConfig {
    pub dir: Arc<Mutex<OutputDir>>,
    pub formats: Formats,
    pub dialect: CsvDialect,
    pub parquet: ParquetOptions,
    pub pipeline: PipelineOptions,
}

impl ExportConfig {
    /// Opens and locks the output directory and checks that no output would be replaced
    /// without `--overwrite`, before any input is read.
    pub fn open(args: &OutputArgs) -> anyhow::Result<ExportConfig> {
        let formats = Formats {
            csv: args.format.contains(&FormatArg::Csv),
            parquet: args.format.contains(&FormatArg::Parquet),
        };
        let on_error = match args.on_error {
            OnErrorArg::Fail => OnError::Fail,
            OnErrorArg::Skip => OnError::Skip,
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
                dialect: CsvDialect::Plain,
                on_error,
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
            ..ParquetOptions::default()
        };
        let dir = OutputDir::open(&args.output, args.overwrite)?;
        let config = ExportConfig {
            dir: Arc::new(Mutex::new(dir)),
            formats,
            dialect: CsvDialect::Plain,
            parquet,
            pipeline,
        };
        for name in config.target_names() {
            config.lock_dir().check_free(Path::new(&name))?;
        }
        Ok(config)
    }

    fn lock_dir(&self) -> std::sync::MutexGuard<'_, OutputDir> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The final names this run will write.
    pub fn target_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for table in Table::ALL {
            if self.formats.csv {
                names.push(format!("{}.csv", table.name()));
            }
            if self.formats.parquet {
                names.push(format!("{}.parquet", table.name()));
            }
        }
        if self.pipeline.flatten.on_error == OnError::Skip {
            names.push(REJECTS_NAME.to_string());
        }
        names
    }

    /// A function that creates the temporary file of `name` (part numbers beyond 0 get a
    /// numbered name next to it).
    pub fn file_creator(&self, stem: &str, extension: &'static str) -> CreateFile {
        let dir = self.dir.clone();
        let stem = stem.to_string();
        Box::new(move |part| {
            let name = if part == 0 {
                format!("{stem}.{extension}")
            } else {
                format!("{stem}-{:05}.{extension}", part + 1)
            };
            let mut dir = dir.lock().unwrap_or_else(|e| e.into_inner());
            dir.create(Path::new(&name)).map_err(|e| WriteError::Io {
                path: PathBuf::from(&name),
                source: std::io::Error::other(e.to_string()),
            })
        })
    }

    /// The writers of every table, in [`Table::ALL`] order.
    fn writers(&self) -> anyhow::Result<Vec<Vec<Box<dyn TableWriter>>>> {
        let mut all = Vec::new();
        for table in Table::ALL {
            let def = table.def();
            let mut writers: Vec<Box<dyn TableWriter>> = Vec::new();
            if self.formats.csv {
                let columns: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
                writers.push(Box::new(CsvWriter::new(
                    &columns,
                    self.dialect,
                    None,
                    self.file_creator(table.name(), "csv"),
                )?));
            }
            if self.formats.parquet {
                writers.push(Box::new(ParquetWriter::new(
                    def.arrow_schema(),
                    &def.dictionary_columns(),
                    self.parquet,
                    self.file_creator(table.name(), "parquet"),
                )?));
            }
            all.push(writers);
        }
        Ok(all)
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
                let (file, _) = self.lock_dir().create(Path::new(REJECTS_NAME))?;
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

    /// Renames every file of the run into place and releases the directory.
    pub fn commit(self) -> anyhow::Result<Vec<PathBuf>> {
        let dir = Arc::try_unwrap(self.dir)
            .map_err(|_| anyhow::anyhow!("internal error: the output directory is still in use"))?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(dir.commit()?)
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
    line.push_str(&format!(
        "{} in {seconds:.2} s ({:.1} MB/s)",
        megabytes(raw_bytes),
        raw_bytes as f64 / 1e6 / seconds
    ));
    progress.line(&line);
}
