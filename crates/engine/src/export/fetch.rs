//! The live fetch into an [`Export`]: page by page and resumable ([`Export::fetch_paged`]),
//! or the whole export as one streamed body ([`Export::fetch_stream`]).
//!
//! Pages arrive in order from a `PageFeed`. Every 1 GB of pages or so (the segment limit),
//! and when the fetch fails part way, the pipeline run over those pages is written into its
//! own segment folder of the local work folder and recorded in the journal (see
//! [`crate::resume`]). A page is only ever in the pipeline whole, so a retried page is
//! never doubled or lost. Once the last page is in a segment, the segments are assembled into
//! staged files of the destination and committed together, and the work folder is deleted.
//! A resumed fetch starts from the first page that is not in a closed segment.
//!
//! The streamed fetch retries only the status: once the body is being read, a break in it
//! fails the run, since the rows before the break are already in the pipeline.
//!
//! The raw copy of the responses, when asked for, is written beside its final path under a
//! temporary name and moved into place only after the tables are committed.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::layout::{Format, OutputTable, REJECTS_NAME};
use super::{Export, ExportError};
use crate::control::{Observer, Total};
use crate::feed::{Page, PageFeed, SegmentLimit};
use crate::pipeline::{self, OnInterrupt, RunStats, Source, Sources};
use crate::resume::{Journal, SegmentRecord, WorkDir, check_same};
use crate::segments::{concat_bytes, concat_csv, concat_parquet, copy_row_groups, feed_csv};
use crate::state_events::pages::{EventsSpool, events_page_info};
use crate::state_events::{EventsStats, StateEventsError};
use zephr_api::client::redact_url;
use zephr_api::{
    Client, EVENTS_EXPORT_PATH, EventsQuery, ExportQuery, PageReading, USER_EXPORT_PATH,
    fetch_pages_with,
};
use zephr_core::error::Chain;
use zephr_core::flatten::OnError;
use zephr_core::flatten::users;
use zephr_core::schema::Table;
use zephr_core::source::decompress;
use zephr_core::timestamp::iso_utc;
use zephr_dest::StagedFile;
use zephr_dest::local::LocalFile;
use zephr_sink::{CreateFile, dest_error, finish_file};

/// The name of a segment's share of the raw copy.
const RAW_PART: &str = "raw.part";

/// What a fetch needs besides the export's options.
pub struct FetchPlan {
    /// The Admin API client that fetches the pages (credentials, retries).
    pub client: Arc<Client>,
    /// The user-export query (filters, page size).
    pub query: ExportQuery,
    /// Pages fetched at once.
    pub concurrency: usize,
    /// When a resumable segment closes.
    pub segment: SegmentLimit,
    /// Keep the response bodies, as received, in this file.
    pub save_raw: Option<PathBuf>,
    /// Continue an interrupted fetch kept in `work`.
    pub resume: bool,
    /// The tenant and the API root (without credentials), for the resume journal.
    pub tenant: String,
    /// The API root the client talks to; the journal records it redacted.
    pub base_url: String,
    /// When this run started.
    pub started: SystemTime,
    /// The local work folder that keeps fetched segments for resuming.
    pub work: WorkDir,
    /// Says what the work folder held before the first request ([`ResumeNotice::print`],
    /// or the caller's own words, such as the flag that resumes).
    pub announce: fn(&dyn Observer, &ResumeNotice),
}

/// What a paginated fetch found in its work folder before the first request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeNotice {
    /// Resuming: every page was fetched by the run before, only the assembly is left.
    Complete,
    /// Resuming from `page`, with `users` already fetched.
    From {
        /// The first page this run fetches.
        page: u32,
        /// Users in the pages already fetched.
        users: u64,
    },
    /// Resuming was not asked for: the interrupted fetch in `work` is removed.
    Discarding {
        /// The work folder being emptied.
        work: PathBuf,
    },
    /// Resuming was asked for, but there is nothing to resume.
    Nothing,
}

impl ResumeNotice {
    /// Prints the notice as it is.
    pub fn print(progress: &dyn Observer, notice: &ResumeNotice) {
        progress.line(&notice.to_string());
    }
}

impl std::fmt::Display for ResumeNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResumeNotice::Complete => {
                f.write_str("Resuming: every page was fetched; assembling the tables")
            }
            ResumeNotice::From { page, users } => write!(
                f,
                "Resuming from page {page} ({users} users already fetched)"
            ),
            ResumeNotice::Discarding { work } => {
                write!(f, "Discarding an interrupted fetch in {}", work.display())
            }
            ResumeNotice::Nothing => f.write_str("Nothing to resume: starting from page 1"),
        }
    }
}

/// What the user-export phase of a fetch did.
#[derive(Debug)]
pub struct Fetched {
    /// The counts of the whole export, resumed segments included (`files` is empty for a
    /// paginated fetch, whose files the assembly writes).
    pub stats: RunStats,
    /// Body bytes received (this run and, when resumed, the runs before).
    pub bytes: u64,
    /// When the fetch started (its first attempt, when resumed): the next `since`.
    pub started_at: String,
}

impl Export {
    /// Refuses a raw copy's file that exists, unless overwriting was asked for.
    fn check_raw(&self, plan: &FetchPlan) -> Result<(), ExportError> {
        match &plan.save_raw {
            Some(path) if !self.opts.overwrite && path.exists() => Err(ExportError::RawExists {
                path: path.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Fetches the export page by page, resumably, and commits the tables.
    pub fn fetch_paged(
        &mut self,
        plan: &FetchPlan,
        progress: &dyn Observer,
    ) -> Result<Fetched, ExportError> {
        if self.opts.formats.xlsx {
            return Err(ExportError::PagedXlsx);
        }
        self.check_raw(plan)?;
        let work = &plan.work;
        let arguments = self.resume_arguments(plan);
        let mut journal = open_journal(work, plan, arguments, progress)?;
        if !journal.complete
            && let Err(mut e) = self.fetch_segments(plan, progress, &mut journal)
        {
            if self.opts.pipeline.cancel.is_cancelled() {
                // The pipeline's own message says nothing was kept, which is not so here.
                e = ExportError::Interrupted;
            }
            if journal.segments.is_empty() {
                // Nothing to resume from: leave the destination as it was.
                let _ = work.remove();
                return Err(e);
            }
            return Err(ExportError::Resumable {
                first: journal.segments[0].first_page,
                last: journal.next_page() - 1,
                work: work.path().to_path_buf(),
                source: Box::new(e),
            });
        }
        let stats = RunStats {
            items: journal.items(),
            rows: journal.rows(),
            rejects: journal.rejects(),
            nul_replaced: journal.nul_replaced(),
            ..RunStats::default()
        };
        self.assemble(work, &journal, plan.save_raw.as_deref())?;
        if let Err(e) = work.remove() {
            progress.line(&format!("warning: {}; delete it by hand", Chain(&e)));
        }
        Ok(Fetched {
            stats,
            bytes: journal.bytes(),
            started_at: journal.started_at,
        })
    }

    /// Fetches the whole export as one array streamed into the pipeline, and commits.
    pub fn fetch_stream(
        &mut self,
        plan: &FetchPlan,
        progress: &dyn Observer,
    ) -> Result<Fetched, ExportError> {
        self.check_raw(plan)?;
        // Neither `page` nor `rpp`: that is what asks Zephr for the single array.
        let mut query = plan.query.clone();
        query.rpp = None;
        let stream = plan
            .client
            .open_stream(USER_EXPORT_PATH, &query.to_query(None))?;
        let total = stream.content_length();
        let raw = match &plan.save_raw {
            Some(path) => Some((temp_next_to(path)?, path.to_path_buf())),
            None => None,
        };
        let name: Arc<str> = Arc::from(format!("GET {USER_EXPORT_PATH}"));
        let reader: Box<dyn Read + Send> = match &raw {
            Some((temp, path)) => Box::new(Tee {
                inner: stream,
                copy: temp
                    .as_file()
                    .try_clone()
                    .map_err(|source| ExportError::Raw {
                        path: path.clone(),
                        source,
                    })?,
                path: path.clone(),
            }),
            None => Box::new(stream),
        };
        let reader = decompress(reader, &name)
            .map_err(|e| ExportError::Pipeline(crate::pipeline::PipelineError::Input(e)))?;
        let sources: Sources = Box::new(std::iter::once(Ok(Source { name, reader })));
        let counter = plan.client.bytes_counter();
        let stats = self.run(sources, &mut |stats: &RunStats| {
            // Users, as the console counts them (one users row per item).
            progress.downloading(
                counter.load(Ordering::Relaxed),
                total.map(Total::Exact),
                stats.rows[Table::Users],
            );
        });
        let stats = stats?;
        if let Some((temp, path)) = raw {
            temp.as_file()
                .sync_all()
                .and_then(|()| temp.persist(&path).map(drop).map_err(|e| e.error))
                .map_err(|source| ExportError::RawAfterCommit { path, source })?;
        }
        Ok(Fetched {
            stats,
            bytes: counter.load(Ordering::Relaxed),
            started_at: iso_utc(plan.started),
        })
    }

    /// Fetches from the journal's next page to the last, closing segment after segment.
    fn fetch_segments(
        &self,
        plan: &FetchPlan,
        progress: &dyn Observer,
        journal: &mut Journal,
    ) -> Result<(), ExportError> {
        let query = plan.query.clone();
        let feed = PageFeed::start(
            Arc::clone(&plan.client),
            USER_EXPORT_PATH,
            move |page| query.to_query(Some(page)),
            journal.next_page(),
            plan.concurrency,
            self.opts.pipeline.cancel.clone(),
        )
        .map_err(ExportError::FetchThread)?;
        // Bytes of the pages committed by earlier runs; the client counts this run's.
        let resumed_bytes = journal.bytes();
        while let Some(first) = feed.next_page() {
            self.run_segment(plan, progress, journal, &feed, first, resumed_bytes)?;
        }
        if self.opts.pipeline.cancel.is_cancelled() {
            return Err(ExportError::Interrupted);
        }
        feed.finish()?;
        journal.complete = true;
        plan.work.save(journal)?;
        Ok(())
    }

    /// Runs the pipeline over the next pages into a new segment folder and records it.
    fn run_segment(
        &self,
        plan: &FetchPlan,
        progress: &dyn Observer,
        journal: &mut Journal,
        feed: &PageFeed,
        first: Page,
        resumed_bytes: u64,
    ) -> Result<(), ExportError> {
        let number = journal.next_segment();
        let seg_dir = plan.work.segment_dir(number);
        let result = (|| {
            fs::create_dir_all(&seg_dir).map_err(|source| ExportError::Raw {
                path: seg_dir.clone(),
                source,
            })?;
            let mut options = self.opts.pipeline.clone();
            options.first_item = journal.items() + 1;
            options.rejects_before = journal.rejects();
            // On Ctrl-C the feed stops handing out pages; the pages it gave are committed as
            // after a network failure, so that a resumed run continues after them.
            options.on_interrupt = OnInterrupt::InputEnds;
            let writers = Table::ALL
                .into_iter()
                .map(|table| {
                    self.writers_with(table, false, &mut |format| {
                        segment_file(&seg_dir, table.into(), format)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut rejects = match options.flatten.on_error {
                OnError::Skip => {
                    let file = local_file(&seg_dir, REJECTS_NAME)?;
                    Some(BufWriter::with_capacity(1 << 20, file))
                }
                OnError::Fail => None,
            };
            let raw = match plan.save_raw {
                Some(_) => {
                    let path = seg_dir.join(RAW_PART);
                    let file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(|source| ExportError::Raw { path, source })?;
                    Some(BufWriter::with_capacity(1 << 20, file))
                }
                None => None,
            };
            let (sources, log) = feed.segment(first, plan.segment, raw);
            let users_before: u64 = journal.rows()[Table::Users];
            let received = plan.client.bytes_counter();
            let stats = pipeline::run(
                sources,
                writers,
                rejects.as_mut().map(|w| w as &mut (dyn Write + Send)),
                options,
                &mut |stats: &RunStats| {
                    // Users as users; bytes against a total extrapolated from the pages so far.
                    let total = feed.estimated_total(resumed_bytes).map(Total::Estimate);
                    progress.downloading(
                        resumed_bytes + received.load(Ordering::Relaxed),
                        total,
                        users_before + stats.rows[Table::Users],
                    );
                },
            )?;
            if let Some(out) = rejects {
                finish_file(out, stats.rejects, REJECTS_NAME)?;
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            let raw_path = || plan.save_raw.clone().unwrap_or_default();
            if let Some(source) = log.raw_error.take() {
                return Err(ExportError::Raw {
                    path: raw_path(),
                    source,
                });
            }
            if let Some(raw) = log.raw.take() {
                raw.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .map_err(|source| ExportError::Raw {
                        path: raw_path(),
                        source,
                    })?;
            }
            Ok(SegmentRecord {
                number,
                first_page: log.first_page,
                last_page: log.last_page,
                items: stats.items,
                rows: stats.rows,
                rejects: stats.rejects,
                nul_replaced: stats.nul_replaced,
                bytes: log.bytes,
            })
        })();
        match result {
            Ok(record) => {
                journal.segments.push(record);
                plan.work.save(journal)?;
                Ok(())
            }
            Err(e) => {
                // Not in the journal, so not part of what a resumed run continues from.
                let _ = fs::remove_dir_all(&seg_dir);
                Err(e)
            }
        }
    }

    /// Builds every final file from the segments into staged files and commits them.
    fn assemble(
        &mut self,
        work: &WorkDir,
        journal: &Journal,
        save_raw: Option<&Path>,
    ) -> Result<(), ExportError> {
        let parts = |name: &str| -> Vec<PathBuf> {
            journal
                .segments
                .iter()
                .map(|s| work.segment_dir(s.number).join(name))
                .collect()
        };
        let seg_name = |table: Table, format: Format| format!("{}.{}", table.name(), format.name());
        let mut stats = RunStats {
            rows: journal.rows(),
            rejects: journal.rejects(),
            nul_replaced: journal.nul_replaced(),
            ..RunStats::default()
        };
        if journal.segments.is_empty() {
            // An export without a single page still gets its (empty) tables.
            let (empty, rejects) = self.write_tables(
                Box::new(std::iter::empty()),
                self.opts.pipeline.clone(),
                &mut |_| {},
            )?;
            return self.commit_tables(&empty, rejects);
        }
        let mut rejects = None;
        if self.layout.splits() {
            // Parts or worksheets: the segments' rows go through the final writers again.
            for table in Table::ALL {
                let mut writers = self.table_writers(table)?;
                for (writer, format) in writers.iter_mut().zip(self.opts.format_list()) {
                    let sources = parts(&seg_name(table, format));
                    match format {
                        Format::Csv => {
                            feed_csv(&sources, writer.as_mut())?;
                        }
                        Format::Parquet => {
                            let schema = users::schema_of(table, self.users());
                            concat_parquet(&sources, &schema, writer.as_mut())?;
                        }
                        // Refused before the first page (`fetch_paged`).
                        Format::Xlsx => return Err(ExportError::PagedXlsx),
                    }
                }
                for writer in writers {
                    stats
                        .files
                        .extend(writer.finish()?.into_iter().map(|f| (table, f)));
                }
            }
        } else {
            for table in Table::ALL {
                for format in self.opts.format_list() {
                    let sources = parts(&seg_name(table, format));
                    let (file, name) = self.file_creator(table.into(), format)(0)?;
                    let mut out = BufWriter::with_capacity(1 << 20, file);
                    let path = PathBuf::from(&name);
                    if let [only] = &sources[..] {
                        concat_bytes(std::slice::from_ref(only), &mut out, &path)?;
                    } else if format == Format::Parquet {
                        out = copy_row_groups(&sources, out, &path)?.1;
                    } else {
                        concat_csv(&sources, &mut out, &path)?;
                    }
                    let rows = stats.rows[table];
                    stats.files.push((table, finish_file(out, rows, &name)?));
                }
            }
        }
        if self.opts.pipeline.flatten.on_error == OnError::Skip {
            let mut out = self.create_rejects()?;
            concat_bytes(&parts(REJECTS_NAME), &mut out, Path::new(REJECTS_NAME))?;
            rejects = Some(finish_file(out, stats.rejects, REJECTS_NAME)?);
        }
        let raw = match save_raw {
            Some(path) => Some(assemble_raw(path, &parts(RAW_PART))?),
            None => None,
        };
        self.commit_tables(&stats, rejects)?;
        if let (Some(raw), Some(path)) = (raw, save_raw) {
            raw.persist(path).map_err(|e| ExportError::RawAfterCommit {
                path: path.to_path_buf(),
                source: e.error,
            })?;
        }
        Ok(())
    }
}

impl Export {
    /// What shapes the tables of a paginated fetch, for a resumed run to compare (no
    /// credentials, no tuning such as concurrency or retries).
    fn resume_arguments(&self, plan: &FetchPlan) -> BTreeMap<String, String> {
        let opts = &self.opts;
        // Every value by its stable name (the flag's value, as the manifest has it), never
        // by `Debug`: renaming a variant must not make a saved fetch unresumable.
        let formats: Vec<&str> = opts.format_list().into_iter().map(Format::name).collect();
        let mut map = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            map.insert(key.to_string(), value);
        };
        put("zephr-etl", env!("CARGO_PKG_VERSION").into());
        put("tenant", plan.tenant.clone());
        put("base-url", redact_url(&plan.base_url));
        put("query", plan.query.to_query(None));
        put("format", formats.join(","));
        put(
            "on-error",
            opts.pipeline.flatten.on_error.name().to_string(),
        );
        put("compression", opts.parquet.compression.name().to_string());
        put("row-group-size", opts.parquet.row_group_rows.to_string());
        put("save-raw", plan.save_raw.is_some().to_string());
        // What the segments' cells depend on beyond the query: a resume must not mix them.
        put("csv-dialect", opts.dialect.name().to_string());
        if let Some(ext) = self.users() {
            if let Some(key) = &ext.pii {
                put("hash-pii", key.fingerprint());
            }
            if let Some(wide) = &ext.wide {
                let columns: Vec<String> = wide
                    .columns
                    .iter()
                    .map(|c| format!("{}:{}", c.name, c.column_type.name()))
                    .collect();
                put("wide-columns", columns.join(","));
            }
        }
        map
    }

    /// The state-events phase of a fetch: the pages (JSON or CSV) spooled into the work
    /// folder, then converted and committed ([`Export::state_events`]).
    pub fn fetch_state_events(
        &mut self,
        plan: &FetchPlan,
        query: &EventsQuery,
    ) -> Result<EventsStats, ExportError> {
        plan.work.create()?;
        let result = (|| {
            let io = |source| {
                ExportError::StateEvents(StateEventsError::Io {
                    input: "the state events spool file".into(),
                    source,
                })
            };
            let spool = tempfile::Builder::new()
                .prefix("state-events-")
                .suffix(".spool")
                .tempfile_in(plan.work.path())
                .map_err(io)?;
            let mut pages = EventsSpool::new(BufWriter::new(spool.as_file()));
            let events = query.clone();
            // Pages may be JSON or CSV. A CSV page ends the export when it is shorter than the
            // rpp asked for; without one, only an empty page does (the server's default page
            // size is not documented for events, and guessing it wrong would lose rows).
            let rpp = query.rpp.map(u64::from);
            let parse = move |body: &[u8], content_type: Option<&str>| {
                events_page_info(body, content_type, rpp)
            };
            let reading = PageReading {
                parse: &parse,
                progress: None,
            };
            fetch_pages_with(
                &plan.client,
                EVENTS_EXPORT_PATH,
                move |page| events.to_query(Some(page)),
                1,
                plan.concurrency,
                reading,
                |page, typed| {
                    if self.opts.pipeline.cancel.is_cancelled() {
                        return Err(StateEventsError::Interrupted);
                    }
                    pages
                        .add(page, &typed.body, typed.content_type.as_deref())
                        .map(|_| ())
                },
            )?;
            let file = pages
                .into_inner()
                .into_inner()
                .map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            let path = spool.path().to_path_buf();
            let open =
                move || -> io::Result<Box<dyn Read + Send>> { Ok(Box::new(File::open(&path)?)) };
            self.state_events(&open, &format!("GET {EVENTS_EXPORT_PATH}"))
        })();
        // Only the spool lived there; a failure to tidy up is not worth failing over.
        let _ = plan.work.remove();
        result
    }
}

/// The journal to continue, or a fresh one (discarding what resuming was not asked for).
fn open_journal(
    work: &WorkDir,
    plan: &FetchPlan,
    arguments: BTreeMap<String, String>,
    progress: &dyn Observer,
) -> Result<Journal, ExportError> {
    if work.exists() {
        if plan.resume
            && let Some(journal) = work.load()?
        {
            let dir = work.path().parent().unwrap_or(work.path());
            check_same(&journal, &arguments, dir)?;
            work.remove_strays(&journal)?;
            if journal.complete {
                (plan.announce)(progress, &ResumeNotice::Complete);
            } else if !journal.segments.is_empty() {
                let notice = ResumeNotice::From {
                    page: journal.next_page(),
                    users: journal.rows()[Table::Users],
                };
                (plan.announce)(progress, &notice);
            }
            return Ok(journal);
        }
        if !plan.resume {
            let notice = ResumeNotice::Discarding {
                work: work.path().to_owned(),
            };
            (plan.announce)(progress, &notice);
        }
        work.remove()?;
    } else if plan.resume {
        (plan.announce)(progress, &ResumeNotice::Nothing);
    }
    let journal = Journal::new(arguments, iso_utc(plan.started));
    work.create()?;
    work.save(&journal)?;
    Ok(journal)
}

/// A new file `name` in the folder `dir` this run owns.
fn local_file(dir: &Path, name: &str) -> Result<Box<dyn StagedFile>, ExportError> {
    Ok(Box::new(LocalFile::create_new(&dir.join(name), name)?))
}

/// The files of a segment: one per table and format, in the segment's folder.
fn segment_file(dir: &Path, table: OutputTable, format: Format) -> CreateFile {
    let dir = dir.to_path_buf();
    Box::new(move |_part| {
        let name = format!("{}.{}", table.name(), format.name());
        let file =
            LocalFile::create_new(&dir.join(&name), &name).map_err(|e| dest_error(&name, e))?;
        Ok((Box::new(file) as Box<dyn StagedFile>, name))
    })
}

/// The raw copy as a temporary file next to its final name, moved after the tables.
fn assemble_raw(path: &Path, parts: &[PathBuf]) -> Result<tempfile::NamedTempFile, ExportError> {
    let temp = temp_next_to(path)?;
    let raw = |source| ExportError::Raw {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
    concat_bytes(parts, &mut out, path)?;
    out.flush().map_err(raw)?;
    drop(out);
    temp.as_file().sync_all().map_err(raw)?;
    Ok(temp)
}

/// A hidden temporary file in the folder of `path`, so that the final rename is atomic.
fn temp_next_to(path: &Path) -> Result<tempfile::NamedTempFile, ExportError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".zephr-etl-raw-")
        .tempfile_in(&parent)
        .map_err(|source| ExportError::Raw {
            path: path.to_path_buf(),
            source,
        })
}

/// Copies what is read into a file.
struct Tee<R> {
    inner: R,
    copy: File,
    path: PathBuf,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n]).map_err(|e| {
            io::Error::other(format!(
                "cannot write the raw copy {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_notices_name_no_flag() {
        let said = [
            ResumeNotice::Complete,
            ResumeNotice::From { page: 4, users: 9 },
            ResumeNotice::Discarding {
                work: PathBuf::from("out/.zephr-etl-fetch"),
            },
            ResumeNotice::Nothing,
        ]
        .map(|notice| notice.to_string());
        assert_eq!(
            said,
            [
                "Resuming: every page was fetched; assembling the tables",
                "Resuming from page 4 (9 users already fetched)",
                "Discarding an interrupted fetch in out/.zephr-etl-fetch",
                "Nothing to resume: starting from page 1",
            ]
        );
    }
}
