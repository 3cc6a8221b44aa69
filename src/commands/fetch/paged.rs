//! The paginated fetch: pages in segments into the work folder, then the final tables.
//!
//! Pages arrive in order from a [`PageFeed`]. Every 1 GB of pages or so (`--segment-bytes`,
//! `--segment-pages`), and when the fetch fails part way, the pipeline run over those pages is
//! committed into its own segment folder and recorded in the journal (see `zephr_etl::fetch::resume`). A page is only ever
//! in the pipeline whole, so a retried page is never doubled or lost. Once the last page is in
//! a segment, the segments are assembled into the tables in `DIR` in one all-or-nothing
//! commit, and the work folder is deleted. `--resume` starts from the first page that is not
//! in a closed segment.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use zephr_etl::extension;
use zephr_etl::fetch::feed::{Page, PageFeed};
use zephr_etl::fetch::merge::{
    concat_bytes, concat_csv, concat_parquet, copy_row_groups, feed_csv,
};
use zephr_etl::fetch::resume::{Journal, SegmentRecord, WorkDir, check_same};
use zephr_etl::fetch::state_file::iso_utc;
use zephr_etl::fetch::{Client, USER_EXPORT_PATH};
use zephr_etl::flatten::OnError;
use zephr_etl::manifest::Manifest;
use zephr_etl::pipeline::{OnInterrupt, RunStats};
use zephr_etl::progress::{Progress, Total};
use zephr_etl::schema::Table;
use zephr_etl::signal;
use zephr_etl::sink::output_dir::OutputDir;
use zephr_etl::sink::{WrittenFile, flush_and_sync};

use super::{Fetched, Plan};
use crate::commands::UsageError;
use crate::commands::export::{ExportConfig, REJECTS_NAME};

/// The name of a segment's share of the `--save-raw` copy.
const RAW_PART: &str = "raw.part";

pub(super) fn run(
    config: ExportConfig,
    plan: &Plan,
    client: &Arc<Client>,
    progress: &Progress,
    resume: bool,
    arguments: BTreeMap<String, String>,
    started: SystemTime,
) -> anyhow::Result<Fetched> {
    let dir = config
        .dir
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .path()
        .to_path_buf();
    let work = WorkDir::of(&dir);
    let mut journal = open_journal(&work, &dir, resume, arguments, started, progress)?;
    if !journal.complete {
        let outcome = fetch_segments(&config, plan, client, progress, &work, &mut journal);
        if let Err(mut e) = outcome {
            if signal::interrupted() {
                // The pipeline's own message says nothing was kept, which is not so here.
                e = anyhow!("interrupted (Ctrl-C or SIGTERM)");
            }
            if journal.segments.is_empty() {
                // Nothing to resume from: leave DIR as it was.
                let _ = work.remove();
                return Err(e);
            }
            let hint = format!(
                "pages {}-{} are kept in {}; rerun the same command with --resume to continue \
                 from page {}",
                journal.segments[0].first_page,
                journal.next_page() - 1,
                work.path().display(),
                journal.next_page()
            );
            return Err(e.context(hint));
        }
    }
    let stats = RunStats {
        items: journal.items(),
        rows: journal.rows(),
        rejects: journal.rejects(),
        ..RunStats::default()
    };
    let manifest = assemble(config, &work, &journal, plan.save_raw.as_deref())?;
    if let Err(e) = work.remove() {
        progress.line(&format!("warning: {e}; delete it by hand"));
    }
    Ok(Fetched {
        stats,
        bytes: journal.bytes(),
        started_at: journal.started_at,
        manifest,
    })
}

/// The journal to continue, or a fresh one (discarding what `--resume` was not asked to use).
fn open_journal(
    work: &WorkDir,
    dir: &Path,
    resume: bool,
    arguments: BTreeMap<String, String>,
    started: SystemTime,
    progress: &Progress,
) -> anyhow::Result<Journal> {
    if work.exists() {
        if resume && let Some(journal) = work.load()? {
            check_same(&journal, &arguments, dir)
                .map_err(|e| anyhow::Error::new(UsageError(e.to_string())))?;
            work.remove_strays(&journal)?;
            if journal.complete {
                progress.line("Resuming: every page was fetched; assembling the tables");
            } else if !journal.segments.is_empty() {
                progress.line(&format!(
                    "Resuming from page {} ({} users already fetched)",
                    journal.next_page(),
                    journal.rows()[0]
                ));
            }
            return Ok(journal);
        }
        if !resume {
            progress.line(&format!(
                "Discarding an interrupted fetch in {} (pass --resume to continue one)",
                work.path().display()
            ));
        }
        work.remove()?;
    } else if resume {
        progress.line("Nothing to resume: starting from page 1");
    }
    let journal = Journal::new(arguments, iso_utc(started));
    work.create()?;
    work.save(&journal)?;
    Ok(journal)
}

/// Fetches from the journal's next page to the last, committing segment by segment.
fn fetch_segments(
    config: &ExportConfig,
    plan: &Plan,
    client: &Arc<Client>,
    progress: &Progress,
    work: &WorkDir,
    journal: &mut Journal,
) -> anyhow::Result<()> {
    let query = plan.query.clone();
    let feed = PageFeed::start(
        Arc::clone(client),
        USER_EXPORT_PATH,
        move |page| query.to_query(Some(page)),
        journal.next_page(),
        plan.concurrency,
    )
    .context("cannot start the fetch thread")?;
    // Bytes of the pages committed by earlier runs; the client counts this run's.
    let resumed_bytes = journal.bytes();
    while let Some(first) = feed.next_page() {
        let segment = Segment {
            feed: &feed,
            first,
            resumed_bytes,
        };
        run_segment(config, plan, client, progress, work, journal, segment)?;
    }
    if signal::interrupted() {
        anyhow::bail!("interrupted");
    }
    feed.finish()?;
    journal.complete = true;
    work.save(journal)?;
    Ok(())
}

/// Where the next segment's pages come from.
struct Segment<'a> {
    feed: &'a PageFeed,
    first: Page,
    resumed_bytes: u64,
}

/// Runs the pipeline over the next pages into a new segment folder and records it.
fn run_segment(
    main: &ExportConfig,
    plan: &Plan,
    client: &Client,
    progress: &Progress,
    work: &WorkDir,
    journal: &mut Journal,
    segment: Segment<'_>,
) -> anyhow::Result<()> {
    let number = journal.next_segment();
    let seg_dir = work.segment_dir(number);
    let mut pipeline = main.pipeline;
    pipeline.first_item = journal.items() + 1;
    pipeline.rejects_before = journal.rejects();
    // On Ctrl-C the feed stops handing out pages; the pages it gave are committed as after a
    // network failure, so that --resume continues after them.
    pipeline.on_interrupt = OnInterrupt::InputEnds;
    let seg = main.segment(OutputDir::open(&seg_dir, true)?, pipeline);
    let raw = match plan.save_raw {
        Some(_) => {
            let mut dir = seg.dir.lock().unwrap_or_else(|e| e.into_inner());
            let (file, _) = dir.create(Path::new(RAW_PART))?;
            Some(BufWriter::with_capacity(1 << 20, file))
        }
        None => None,
    };
    let (sources, log) = segment.feed.segment(segment.first, plan.segment, raw);
    let users_before: u64 = journal.rows()[0];
    let received = client.bytes_counter();
    let stats = seg.run_with(sources, &mut |stats: &RunStats| {
        // Users as users; bytes against a total extrapolated from the pages so far.
        let users = users_before + stats.rows[0];
        let total = segment
            .feed
            .estimated_total(segment.resumed_bytes)
            .map(Total::Estimate);
        progress.downloading(
            segment.resumed_bytes + received.load(Ordering::Relaxed),
            total,
            users,
        );
    })?;
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = log.raw_error.take() {
        return Err(anyhow!(e).context("cannot write the --save-raw copy"));
    }
    if let Some(raw) = log.raw.take() {
        let file = raw
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all().map(|()| f))
            .context("cannot write the --save-raw copy")?;
        drop(file);
    }
    seg.commit()?;
    journal.segments.push(SegmentRecord {
        number,
        first_page: log.first_page,
        last_page: log.last_page,
        items: stats.items,
        rows: stats.rows,
        rejects: stats.rejects,
        bytes: log.bytes,
    });
    work.save(journal)?;
    Ok(())
}

/// Builds every final file from the segments and commits them together. Returns the
/// manifest when one is written.
fn assemble(
    config: ExportConfig,
    work: &WorkDir,
    journal: &Journal,
    save_raw: Option<&Path>,
) -> anyhow::Result<Option<Manifest>> {
    if journal.segments.is_empty() {
        anyhow::bail!("internal error: the fetch ended without a single page");
    }
    let parts = |name: &str| -> Vec<PathBuf> {
        journal
            .segments
            .iter()
            .map(|s| work.segment_dir(s.number).join(name))
            .collect()
    };
    let mut stats = RunStats {
        rows: journal.rows(),
        rejects: journal.rejects(),
        ..RunStats::default()
    };
    if config.layout.splits() {
        // Parts or worksheets: the segments' rows go through the final writers again.
        for table in Table::ALL {
            // table_writers gives the CSV writer first, then the Parquet one.
            let mut writers = config.table_writers(table)?;
            let mut i = 0;
            if config.formats.csv {
                feed_csv(
                    &parts(&format!("{}.csv", table.name())),
                    writers[i].as_mut(),
                )?;
                i += 1;
            }
            if config.formats.parquet {
                let schema = extension::schema_of(table, config.users());
                concat_parquet(
                    &parts(&format!("{}.parquet", table.name())),
                    &schema,
                    writers[i].as_mut(),
                )?;
            }
            for writer in writers {
                stats
                    .files
                    .extend(writer.finish()?.into_iter().map(|f| (table, f)));
            }
        }
        if config.pipeline.flatten.on_error == OnError::Skip {
            let (file, temp) = config.create_rejects()?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            concat_bytes(&parts(REJECTS_NAME), &mut out, &temp)?;
            flush_and_sync(out, &temp)?;
        }
    } else {
        for name in config.target_names() {
            let sources = parts(&name);
            let (table, extension) = name.rsplit_once('.').unwrap_or((&name, ""));
            let table = Table::from_name(table);
            let (file, temp) = match table {
                Some(table) => {
                    let mut create = config.file_creator(table.name(), static_extension(extension));
                    create(0)?
                }
                None => config.create_rejects()?,
            };
            if let Some(table) = table {
                stats.files.push((
                    table,
                    WrittenFile {
                        path: temp.clone(),
                        rows: stats.rows[table as usize],
                        bytes: 0,
                    },
                ));
            }
            if let [only] = &sources[..] {
                // One segment: its file already is the table.
                drop(file);
                std::fs::rename(only, &temp)
                    .with_context(|| format!("cannot move {} into place", only.display()))?;
                continue;
            }
            if extension == "parquet" {
                copy_row_groups(&sources, file, &temp)?;
            } else {
                let mut out = BufWriter::with_capacity(1 << 20, file);
                if name.ends_with(".csv") {
                    concat_csv(&sources, &mut out, &temp)?;
                } else {
                    concat_bytes(&sources, &mut out, &temp)?;
                }
                flush_and_sync(out, &temp)?;
            }
        }
    }
    let raw = match save_raw {
        Some(path) => Some(assemble_raw(path, &parts(RAW_PART))?),
        None => None,
    };
    let manifest = config.commit_run(&stats)?;
    if let (Some(raw), Some(path)) = (raw, save_raw) {
        raw.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("the tables were written, but not {}", path.display()))?;
    }
    Ok(manifest)
}

fn static_extension(extension: &str) -> &'static str {
    if extension == "csv" { "csv" } else { "parquet" }
}

/// The `--save-raw` copy as a temporary file next to its final name, renamed after the tables.
fn assemble_raw(path: &Path, parts: &[PathBuf]) -> anyhow::Result<tempfile::NamedTempFile> {
    let temp = super::temp_next_to(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
    concat_bytes(parts, &mut out, path)?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(out);
    temp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(temp)
}
