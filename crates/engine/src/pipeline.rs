//! The pipeline: reader → rayon workers → one writer thread per table.
//!
//! ```text
//!  sources ──▶ framer (reader thread) ──RawBatch──▶ rayon pool: flatten_batch ──FlatBatch──▶
//!  reorder by sequence (this thread) ──ColumnBatch──▶ users / grants / attributes writer threads
//! ```
//!
//! The reader frames batches of raw items and hands each to the rayon pool; workers finish in
//! any order, and this thread puts batches back in input order before the writers see them, so
//! every table follows the export. A fixed number of permits bounds the batches in flight, and
//! the channels to the writers are bounded, so memory stays flat whatever the input size.
//! Errors travel in sequence too: the first problem in input order is the one reported.
//!
//! Memory is bounded by bytes as well as by batches: a batch's raw bytes are taken from a
//! `ByteBudget` of `max_item_bytes` before it goes to a worker and given back only once
//! every table's writer has written it. Whatever `threads` is, the batches between the reader
//! and the writers hold at most `max_item_bytes` of input (or one batch, when a single batch
//! is larger), so sixteen 60 MB items cost the same memory on 8 threads as on 2.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use crate::control::Cancel;
use zephr_core::error::{BadItem, InputError};
use zephr_core::flatten::{FlatBatch, FlattenError, FlattenOptions, Reject, flatten_batch};
use zephr_core::schema::{PerTable, Table};
use zephr_core::source::drive::{Batches, Driven, drive};
use zephr_core::source::framer::{FramerOptions, RawBatch};
use zephr_core::table::ColumnBatch;
use zephr_sink::{TableWriter, WriteError, WrittenFile};

// The inputs live with the sources (their public home), so that `fetch` (a source of pages)
// never imports the pipeline.
pub(crate) use zephr_core::source::drive::{Source, Sources};

/// Tuning and behaviour of a run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Rayon worker threads.
    pub threads: usize,
    /// How inputs are cut into batches of items (batch size, item size limit).
    pub framer: FramerOptions,
    /// How the workers turn items into rows (formats, CSV dialect, `--on-error`, users layout).
    pub flatten: FlattenOptions,
    /// Stop a `--on-error skip` run once this many items were rejected (counting
    /// `rejects_before`).
    pub max_errors: Option<u64>,
    /// The number of the first item (1 unless this run continues an export, as a resumed
    /// `fetch` does, so that errors and rejects keep their export-wide item numbers).
    pub first_item: u64,
    /// Items the export rejected before this run (earlier `fetch` segments), toward
    /// `max_errors`.
    pub rejects_before: u64,
    /// What Ctrl-C or SIGTERM does to the run.
    pub on_interrupt: OnInterrupt,
    /// Set by the caller to stop the run (Ctrl-C in the binary).
    pub cancel: Cancel,
}

/// What a run does on Ctrl-C or SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInterrupt {
    /// Stop at once and fail with [`PipelineError::Interrupted`]: nothing is kept.
    #[default]
    Fail,
    /// Go on: the sources end by themselves on a signal (a paginated fetch's pages stop
    /// coming), and the run finishes with what they gave, to be committed like the pages
    /// before a network failure.
    InputEnds,
}

impl PipelineOptions {
    /// Whether a signal stops this run now.
    fn interrupted(&self) -> bool {
        self.on_interrupt == OnInterrupt::Fail && self.cancel.is_cancelled()
    }
}

/// Counts of a run, also passed to the progress callback as the run goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Items read, the rejected ones included.
    pub items: u64,
    /// Rows per table.
    pub rows: PerTable<u64>,
    /// Items this run rejected (written to `rejects.ndjson`); earlier segments' not counted.
    pub rejects: u64,
    /// CSV cells the postgres dialect changed (a NUL replaced by U+FFFD), per table.
    pub nul_replaced: PerTable<u64>,
    /// Every file written, staged in the destination (filled in at the end).
    pub files: Vec<(Table, WrittenFile)>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input could not be read or is not a valid export.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A bad item stopped the run (failing on bad items was asked for).
    #[error("bad item: {0}")]
    BadItem(BadItem),
    /// A table writer failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Writing a line of `rejects.ndjson` failed.
    #[error("cannot write rejects.ndjson: {0}")]
    Rejects(std::io::Error),
    /// The limit of rejected items was reached.
    #[error(
        "stopped after {limit} rejected items (the limit); the last was {last}\n\
         (rejects.ndjson is not kept when a run fails: raise the limit to get it)"
    )]
    TooManyRejects {
        /// `--max-errors`.
        limit: u64,
        /// The reject that reached the limit.
        last: Box<BadItem>,
    },
    /// The run was cancelled (with [`OnInterrupt::Fail`]).
    #[error("interrupted (Ctrl-C or SIGTERM); no output file of this run was kept")]
    Interrupted,
    /// A thread could not be started, or panicked or stopped early: a bug or the system's
    /// limits, not the input's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A batch of one table on its way to the writer, with the budget share its input holds
/// (shared by the tables of the batch, given back when the last one is written).
type Written = (ColumnBatch, Option<Arc<Held>>);

enum Message {
    Batch(u64, Result<FlatBatch, FlattenError>, Option<Arc<Held>>),
    Failed(u64, InputError),
    Finished(u64),
}

/// Runs the pipeline over `sources`, writing through `writers` (one list per table, in
/// [`Table::ALL`] order) and `rejects`. `on_progress` is called after each batch is written.
pub fn run(
    sources: Sources,
    writers: Vec<Vec<Box<dyn TableWriter>>>,
    mut rejects: Option<&mut (dyn Write + Send)>,
    opts: PipelineOptions,
    on_progress: &mut dyn FnMut(&RunStats),
) -> Result<RunStats, PipelineError> {
    if opts.threads <= 1 {
        return run_sequential(sources, writers, rejects, opts, on_progress);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("zephr-etl-worker-{i}"))
        .build()
        .map_err(|e| PipelineError::Internal(format!("cannot start worker threads: {e}")))?;
    // Batches framed but not yet handed to the writers: one per worker plus two, enough to
    // keep every worker busy while the writers drain. More only costs memory (measured: 2x
    // the workers gave the same speed with 20 MB more at peak).
    let in_flight = opts.threads.max(1) + 2;
    let (permit_tx, permit_rx) = bounded::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = permit_tx.send(());
    }
    let (result_tx, result_rx) = unbounded::<Message>();
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(ByteBudget::new(opts.framer.max_item_bytes as u64));

    let reader = {
        let (stop, permit_tx, opts) = (stop.clone(), permit_tx.clone(), opts.clone());
        let pool = Arc::new(pool);
        let channels = ReaderChannels {
            permits: permit_rx,
            permit_back: permit_tx,
            results: result_tx,
        };
        thread::Builder::new()
            .name("zephr-etl-reader".into())
            .spawn(move || read_batches(sources, opts, &pool, &channels, &budget, &stop))
            .map_err(|e| PipelineError::Internal(format!("cannot start the reader thread: {e}")))?
    };

    let abort = Arc::new(AtomicBool::new(false));
    let mut table_senders = Vec::new();
    let mut table_threads = Vec::new();
    for (table, table_writers) in Table::ALL.into_iter().zip(writers) {
        let (tx, rx) = bounded::<Written>(2);
        let abort = abort.clone();
        let handle = thread::Builder::new()
            .name(format!("zephr-etl-{}", table.name()))
            .spawn(move || write_table(table_writers, &rx, &abort))
            .map_err(|e| PipelineError::Internal(format!("cannot start a writer thread: {e}")))?;
        table_senders.push(tx);
        table_threads.push(handle);
    }

    let mut stats = RunStats::default();
    let outcome = reorder_and_dispatch(
        &result_rx,
        &permit_tx,
        &table_senders,
        &mut rejects,
        &opts,
        &mut stats,
        on_progress,
    );
    if outcome.is_err() {
        stop.store(true, Ordering::SeqCst);
        abort.store(true, Ordering::SeqCst);
    }
    drop(table_senders);
    let mut write_error = None;
    for (table, handle) in Table::ALL.into_iter().zip(table_threads) {
        match handle.join() {
            Ok(Ok(files)) => stats.files.extend(files.into_iter().map(|f| (table, f))),
            Ok(Err(e)) => write_error = write_error.or(Some(e)),
            Err(_) => return Err(PipelineError::Internal("a writer thread panicked".into())),
        }
    }
    // A writer that failed closed its channel; its own error says more than "send failed".
    if let Some(e) = write_error {
        return Err(PipelineError::Write(e));
    }
    match outcome {
        Err(e) => Err(e),
        // A signal while the writers were finishing: nothing is committed yet, so honour it.
        Ok(()) if opts.interrupted() => Err(PipelineError::Interrupted),
        Ok(()) => {
            // The reader has sent `Finished`; it is done or about to be.
            let _ = reader.join();
            Ok(stats)
        }
    }
}

/// `--threads 1`: one thread frames, flattens and writes, batch after batch, so the run uses
/// one core. This thread only writes rejects, reports progress and watches for Ctrl-C, which
/// it can then honour even while the worker is blocked reading stdin.
fn run_sequential(
    sources: Sources,
    writers: Vec<Vec<Box<dyn TableWriter>>>,
    mut rejects: Option<&mut (dyn Write + Send)>,
    opts: PipelineOptions,
    on_progress: &mut dyn FnMut(&RunStats),
) -> Result<RunStats, PipelineError> {
    // One batch ahead at most: the worker waits while this thread takes in the last one.
    let (result_tx, result_rx) = bounded::<Message>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stop, opts) = (stop.clone(), opts.clone());
        thread::Builder::new()
            .name("zephr-etl-worker".into())
            .spawn(move || sequential_worker(sources, writers, opts, &result_tx, &stop))
            .map_err(|e| PipelineError::Internal(format!("cannot start the worker thread: {e}")))?
    };
    let (no_permits, _) = unbounded::<()>();
    let mut stats = RunStats::default();
    let outcome = reorder_and_dispatch(
        &result_rx,
        &no_permits,
        &[],
        &mut rejects,
        &opts,
        &mut stats,
        on_progress,
    );
    if let Err(e) = outcome {
        stop.store(true, Ordering::SeqCst);
        // A worker that already ended may have ended on a write error, which says more.
        if worker.is_finished()
            && let Ok(Err(write)) = worker.join()
        {
            return Err(PipelineError::Write(write));
        }
        // Otherwise it is not joined: it may be blocked on input, and stops at its next batch.
        return Err(e);
    }
    match worker.join() {
        Ok(Ok(files)) => stats.files = files,
        Ok(Err(e)) => return Err(PipelineError::Write(e)),
        Err(_) => return Err(PipelineError::Internal("the worker thread panicked".into())),
    }
    if opts.interrupted() {
        return Err(PipelineError::Interrupted);
    }
    Ok(stats)
}

/// The worker of [`run_sequential`]: frames, flattens and writes each batch in turn, and sends
/// what the calling thread needs (rejects and counts; the tables' contents stay here).
fn sequential_worker(
    sources: Sources,
    mut writers: Vec<Vec<Box<dyn TableWriter>>>,
    opts: PipelineOptions,
    results: &Sender<Message>,
    stop: &AtomicBool,
) -> Result<Vec<(Table, WrittenFile)>, WriteError> {
    let mut write_error = None;
    let spares = Spares::new(opts.framer.batch_bytes);
    let framed = frame_all(
        sources,
        &opts,
        &spares,
        || stop.load(Ordering::Relaxed),
        || true,
        |seq, batch| {
            let outcome = match flatten_guarded(&batch, &opts.flatten) {
                Ok(mut flat) => {
                    for (table_writers, columns) in writers.iter_mut().zip(&mut flat.tables) {
                        for writer in table_writers.iter_mut() {
                            if let Err(e) = writer.write(columns) {
                                write_error = Some(e);
                                return false;
                            }
                        }
                        // Written: only the row count travels on.
                        *columns = ColumnBatch {
                            rows: columns.rows,
                            csv: Vec::new(),
                            arrow: None,
                            item_ends: Vec::new(),
                        };
                    }
                    Ok(flat)
                }
                Err(e) => Err(e),
            };
            spares.give(batch);
            let failed = outcome.is_err();
            results.send(Message::Batch(seq, outcome, None)).is_ok() && !failed
        },
        || {},
    );
    if let Some(e) = write_error {
        return Err(e);
    }
    match framed {
        Framed::Finished(count) => {
            let mut files = Vec::new();
            for (table, table_writers) in Table::ALL.into_iter().zip(writers) {
                for writer in table_writers {
                    files.extend(writer.finish()?.into_iter().map(|f| (table, f)));
                }
            }
            let _ = results.send(Message::Finished(count));
            Ok(files)
        }
        Framed::Failed(seq, e) => {
            let _ = results.send(Message::Failed(seq, e));
            Ok(Vec::new())
        }
        Framed::Stopped => Ok(Vec::new()),
    }
}

/// How framing every source ended.
enum Framed {
    /// Every source was framed into this many non-empty batches.
    Finished(u64),
    /// A source could not be opened or framed, after this many batches.
    Failed(u64, InputError),
    /// `ready` or `take` said stop.
    Stopped,
}

/// Frames every source in order into batches of raw items, numbering items across sources.
/// A batch is filled from as many sources as it takes: a fetch frames every page as its own
/// source, and batches of one 500-item page each cost 13% more time than full ones.
///
/// `stopped()` is asked before each source is opened and each batch started; before a batch is
/// started `ready()` may wait (for a permit) or say stop. Each non-empty batch goes to
/// `take(seq, batch)`, which says whether to go on; an empty one only calls `skip()`. Batches
/// are framed into the ones flattened earlier, from `spares`, when there are any. The items
/// framed before a framing error are taken first, so that a problem in one of them, which
/// comes earlier in the input, is the one reported.
fn frame_all(
    sources: Sources,
    opts: &PipelineOptions,
    spares: &Spares,
    stopped: impl Fn() -> bool,
    ready: impl FnMut() -> bool,
    take: impl FnMut(u64, RawBatch) -> bool,
    skip: impl FnMut(),
) -> Framed {
    /// The pipeline's side of [`drive`]: permits, spare batches and batch numbers.
    struct Framing<'a, S, R, T, K> {
        spares: &'a Spares,
        stopped: S,
        ready: R,
        take: T,
        skip: K,
        /// Non-empty batches handed on so far.
        seq: u64,
    }
    impl<S, R, T, K> Batches for Framing<'_, S, R, T, K>
    where
        S: Fn() -> bool,
        R: FnMut() -> bool,
        T: FnMut(u64, RawBatch) -> bool,
        K: FnMut(),
    {
        fn go_on(&mut self) -> bool {
            !(self.stopped)()
        }

        fn start(&mut self) -> Option<RawBatch> {
            if !(self.ready)() {
                return None;
            }
            // A used batch keeps its buffers at full size: no growing, copying and page
            // faults for every batch (measured: 6% of the reader thread's time).
            Some(self.spares.take().unwrap_or_default())
        }

        fn take(&mut self, batch: RawBatch) -> bool {
            let go_on = (self.take)(self.seq, batch);
            self.seq += 1;
            go_on
        }

        fn skip(&mut self, _batch: RawBatch) {
            (self.skip)();
        }
    }
    let mut framing = Framing {
        spares,
        stopped,
        ready,
        take,
        skip,
        seq: 0,
    };
    match drive(sources, opts.framer, opts.first_item, &mut framing) {
        Driven::Finished { .. } => Framed::Finished(framing.seq),
        Driven::Failed(e) => Framed::Failed(framing.seq, e),
        Driven::Stopped => Framed::Stopped,
    }
}

/// Flattened batches kept for the reader to frame into again, up to [`Spares::MAX_BYTES`] of
/// buffers in all, whatever the number of threads: with one kept per batch in flight, 18
/// batches of 2 MB items (8 MiB buffers) on 16 threads held 144 MiB that no batch was using.
struct Spares {
    tx: Sender<RawBatch>,
    rx: Receiver<RawBatch>,
    /// Capacity of the buffers kept now.
    bytes: std::sync::atomic::AtomicUsize,
    batch_bytes: usize,
}

impl Spares {
    /// Most bytes of buffers kept: room for several normal batches (a few MiB each).
    const MAX_BYTES: usize = 32 << 20;

    fn new(batch_bytes: usize) -> Arc<Spares> {
        let (tx, rx) = unbounded();
        Arc::new(Spares {
            tx,
            rx,
            bytes: std::sync::atomic::AtomicUsize::new(0),
            batch_bytes,
        })
    }

    /// Keeps a flattened batch for reuse if there is room, unless a huge item blew its buffer
    /// up: that one is freed now rather than held until the reader next starts a batch (it
    /// may be waiting for the byte budget meanwhile, with another huge item framed).
    fn give(&self, batch: RawBatch) {
        let size = batch.data.capacity();
        if size > 2 * self.batch_bytes {
            return;
        }
        let kept = self.bytes.fetch_add(size, Ordering::SeqCst) + size;
        if kept > Self::MAX_BYTES || self.tx.send(batch).is_err() {
            self.bytes.fetch_sub(size, Ordering::SeqCst);
        }
    }

    /// A kept batch, if there is one.
    fn take(&self) -> Option<RawBatch> {
        let batch = self.rx.try_recv().ok()?;
        self.bytes
            .fetch_sub(batch.data.capacity(), Ordering::SeqCst);
        Some(batch)
    }
}

/// Flattens a batch, turning a panic (a bug, never input) into an error for that batch.
fn flatten_guarded(batch: &RawBatch, opts: &FlattenOptions) -> Result<FlatBatch, FlattenError> {
    catch_unwind(AssertUnwindSafe(|| flatten_batch(batch, opts)))
        .unwrap_or_else(|_| Err(FlattenError::Input(internal_error(batch))))
}

/// The reader thread's ends of the channels.
struct ReaderChannels {
    permits: Receiver<()>,
    permit_back: Sender<()>,
    results: Sender<Message>,
}

/// The reader thread: frames every source into batches and hands them to the pool, each once
/// the byte budget has room for it.
fn read_batches(
    sources: Sources,
    opts: PipelineOptions,
    pool: &Arc<rayon::ThreadPool>,
    channels: &ReaderChannels,
    budget: &Arc<ByteBudget>,
    stop: &AtomicBool,
) {
    let ReaderChannels {
        permits,
        permit_back,
        results,
    } = channels;
    let spares = Spares::new(opts.framer.batch_bytes);
    // One copy of the flattening options for every batch's worker.
    let flatten = Arc::new(opts.flatten.clone());
    let framed = frame_all(
        sources,
        &opts,
        &spares,
        || stop.load(Ordering::Relaxed),
        || permits.recv().is_ok(),
        |seq, batch| {
            let Some(held) = budget.acquire(batch.data.len() as u64, stop) else {
                return false;
            };
            let (results, spares, flatten) = (results.clone(), spares.clone(), flatten.clone());
            pool.spawn(move || {
                let outcome = flatten_guarded(&batch, &flatten);
                // The raw bytes go (or back to the spares) before the result is sent; the
                // budget they took is given back when the writers are done with the result.
                spares.give(batch);
                let _ = results.send(Message::Batch(seq, outcome, Some(Arc::new(held))));
            });
            true
        },
        || {
            let _ = permit_back.send(());
        },
    );
    let _ = match framed {
        Framed::Finished(count) => results.send(Message::Finished(count)),
        Framed::Failed(seq, e) => results.send(Message::Failed(seq, e)),
        Framed::Stopped => Ok(()),
    };
}

fn internal_error(batch: &RawBatch) -> InputError {
    InputError::Syntax {
        location: batch.location(0),
        problem: "internal error while flattening the batch of items that starts here; please \
                  report it with the input"
            .into(),
    }
}

/// This thread: puts flattened batches back in order and feeds the writer threads.
fn reorder_and_dispatch(
    results: &Receiver<Message>,
    permit_back: &Sender<()>,
    tables: &[Sender<Written>],
    rejects: &mut Option<&mut (dyn Write + Send)>,
    opts: &PipelineOptions,
    stats: &mut RunStats,
    on_progress: &mut dyn FnMut(&RunStats),
) -> Result<(), PipelineError> {
    type Waiting = (Result<FlatBatch, PipelineError>, Option<Arc<Held>>);
    let mut waiting: BTreeMap<u64, Waiting> = BTreeMap::new();
    let mut next = 0u64;
    let mut total = None;
    loop {
        if opts.interrupted() {
            return Err(PipelineError::Interrupted);
        }
        if total == Some(next) {
            return Ok(());
        }
        match results.recv_timeout(Duration::from_millis(100)) {
            Ok(Message::Batch(seq, outcome, held)) => {
                let outcome = outcome.map_err(|e| match e {
                    FlattenError::Input(e) => PipelineError::Input(e),
                    FlattenError::BadItem(bad) => PipelineError::BadItem(bad),
                });
                waiting.insert(seq, (outcome, held));
            }
            Ok(Message::Failed(seq, e)) => {
                waiting.insert(seq, (Err(PipelineError::Input(e)), None));
            }
            Ok(Message::Finished(count)) => total = Some(count),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                if total.is_none() {
                    return Err(PipelineError::Internal(
                        "the reader stopped without a word".into(),
                    ));
                }
            }
        }
        while let Some((outcome, held)) = waiting.remove(&next) {
            let flat = take_in(outcome?, rejects, opts, stats)?;
            // In sequential mode there are no writer threads: the batch was written already.
            for (tx, batch) in tables.iter().zip(flat) {
                if tx.send((batch, held.clone())).is_err() {
                    return Err(PipelineError::Internal("a writer stopped".into()));
                }
            }
            let _ = permit_back.send(());
            next += 1;
            on_progress(stats);
        }
    }
}

/// Bytes of input that batches between the reader and the writers may hold at once.
///
/// A batch larger than the whole budget is still let through when nothing else is held, so a
/// single item up to `max_item_bytes` (whose batch may be a little larger) never blocks.
pub(crate) struct ByteBudget {
    limit: u64,
    held: Mutex<u64>,
    freed: Condvar,
}

/// A share of a `ByteBudget`, given back when dropped.
pub(crate) struct Held {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> ByteBudget {
        ByteBudget {
            limit: limit.max(1),
            held: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held(&self) -> u64 {
        *self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `bytes` fit (or nothing is held) and takes them; `None` once `stop` is set.
    pub fn acquire(self: &Arc<Self>, bytes: u64, stop: &AtomicBool) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held > 0 && held.saturating_add(bytes) > self.limit {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            held = self
                .freed
                .wait_timeout(held, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *held += bytes;
        Some(Held {
            budget: Arc::clone(self),
            bytes,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = held.saturating_sub(self.bytes);
        self.budget.freed.notify_all();
    }
}

/// Writes a rejected item as a `{"item":N,"offset":B,"error":"...","raw":<item>}` line
/// (`"raw":null,"too_large":true` for an item larger than the item size limit).
/// Takes one flattened batch in input order: writes its rejects (stopping at exactly the
/// N-th reject of `--max-errors`), counts its items and rows, and hands back its tables.
fn take_in(
    flat: FlatBatch,
    rejects: &mut Option<&mut (dyn Write + Send)>,
    opts: &PipelineOptions,
    stats: &mut RunStats,
) -> Result<Vec<ColumnBatch>, PipelineError> {
    for reject in &flat.rejects {
        write_reject(reject, rejects)?;
        stats.rejects += 1;
        if let Some(limit) = opts.max_errors
            && opts.rejects_before + stats.rejects >= limit
        {
            return Err(PipelineError::TooManyRejects {
                limit,
                last: Box::new(reject.bad.clone()),
            });
        }
    }
    stats.items += flat.items;
    stats.nul_replaced.add(&flat.nul_replaced);
    for ((_, rows), batch) in stats.rows.iter_mut().zip(&flat.tables) {
        *rows += batch.rows as u64;
    }
    Ok(flat.tables)
}

fn write_reject(
    reject: &Reject,
    out: &mut Option<&mut (dyn Write + Send)>,
) -> Result<(), PipelineError> {
    let Some(out) = out.as_mut() else {
        return Ok(());
    };
    let mut line = format!(
        "{{\"item\":{},\"offset\":{},\"error\":{},\"raw\":",
        reject.bad.number,
        reject.bad.location.offset,
        serde_json::to_string(&reject.bad.to_string()).unwrap_or_default()
    );
    match &reject.raw {
        // The item is valid JSON, so no line break can be inside a string: turning each into
        // a space keeps every other byte (and every offset) as it was, on one NDJSON line.
        Some(raw) => line.push_str(&String::from_utf8_lossy(raw).replace(['\n', '\r'], " ")),
        // Larger than the item size limit: its bytes were never held in memory.
        None => line.push_str("null,\"too_large\":true"),
    }
    line.push_str("}\n");
    out.write_all(line.as_bytes())
        .map_err(PipelineError::Rejects)
}

/// A writer thread: writes every batch of one table, then finishes its writers.
fn write_table(
    mut writers: Vec<Box<dyn TableWriter>>,
    batches: &Receiver<Written>,
    abort: &AtomicBool,
) -> Result<Vec<WrittenFile>, WriteError> {
    // The budget share (`_held`) goes back once the last table has written the batch.
    for (batch, _held) in batches {
        if abort.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        for writer in &mut writers {
            writer.write(&batch)?;
        }
    }
    if abort.load(Ordering::Relaxed) {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for writer in writers {
        files.extend(writer.finish()?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_batches_are_kept_up_to_a_byte_limit_whatever_their_number() {
        let batch_bytes = 4 << 20;
        let spares = Spares::new(batch_bytes);
        let batch = |capacity: usize| RawBatch {
            data: Vec::with_capacity(capacity),
            items: Vec::new(),
        };
        // Batches of large items (8 MiB buffers): four fit in 32 MiB, the fifth is let go.
        for _ in 0..5 {
            spares.give(batch(8 << 20));
        }
        assert_eq!(spares.bytes.load(Ordering::SeqCst), 32 << 20);
        // One blown up by a huge item is never kept.
        spares.give(batch(20 << 20));
        let kept: Vec<RawBatch> = std::iter::from_fn(|| spares.take()).collect();
        assert_eq!(kept.len(), 4);
        assert_eq!(spares.bytes.load(Ordering::SeqCst), 0);
        // Normal batches: many more of them.
        for _ in 0..20 {
            spares.give(batch(1 << 20));
        }
        assert_eq!(std::iter::from_fn(|| spares.take()).count(), 20);
    }

    #[test]
    fn the_byte_budget_waits_for_room_and_lets_a_lone_large_batch_through() {
        let budget = Arc::new(ByteBudget::new(100));
        let stop = AtomicBool::new(false);
        // Larger than the whole budget, but nothing else is held: it goes through.
        let big = budget.acquire(250, &stop).unwrap();
        assert_eq!(budget.held(), 250);
        // Anything more waits until the big one is given back.
        let waiter = {
            let budget = Arc::clone(&budget);
            thread::spawn(move || {
                let stop = AtomicBool::new(false);
                let held = budget.acquire(60, &stop).unwrap();
                let also = budget.acquire(40, &stop).unwrap();
                (held.bytes, also.bytes)
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(big);
        assert_eq!(waiter.join().unwrap(), (60, 40));
        assert_eq!(budget.held(), 0);
        // A stopped run does not wait.
        let first = budget.acquire(90, &stop).unwrap();
        stop.store(true, Ordering::SeqCst);
        assert!(budget.acquire(20, &stop).is_none());
        drop(first);
        assert_eq!(budget.held(), 0);
    }
}
