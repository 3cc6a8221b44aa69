//! From the paginator to the pipeline: whole pages, in order, through a bounded channel.
//!
//! `fetch_pages` calls back with each page body in page order; the pipeline pulls its inputs
//! from an iterator. A fetch thread runs the paginator and sends the bodies over a channel of
//! a few slots, so at most `concurrency` bodies wait in the paginator and a few more in the
//! channel, whatever the export's size. `PageFeed::segment` hands out the next pages as the
//! pipeline's [`Sources`], one `Source` per page named `page N`, at most a given number of
//! pages at a time, so the caller can commit the export segment by segment.
//!
//! A page only ever reaches the pipeline whole (the client reads a body completely before the
//! paginator hands it on), so a page that failed and was retried is never half-committed.
//!
//! Ctrl-C and SIGTERM end the feed as a network failure does: no page is handed out after
//! the signal, the pipeline finishes the pages it has (it runs with its
//! `OnInterrupt::InputEnds`), and the caller commits them for `--resume`.
//! `PageFeed::estimated_total` extrapolates the export's size for progress.

use std::fs::File;
use std::io::{self, BufWriter, Cursor, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded};

use crate::control::Cancel;
use zephr_api::client::Client;
use zephr_api::pages::{
    PageReading, PagesError, PagesProgress, PagesSummary, fetch_pages_with, parse_page_info,
};
use zephr_core::source::drive::{Source, Sources};

/// A page: its number and its whole body.
pub(crate) type Page = (u32, Vec<u8>);

/// The pipeline stopped taking pages (a failure elsewhere, or Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the fetch was stopped")]
pub struct Stopped;

/// How the fetch thread ended.
pub(crate) type FeedResult = Result<PagesSummary, PagesError<Stopped>>;

/// A running fetch whose pages come out in order.
pub struct PageFeed {
    rx: Receiver<Page>,
    handle: Option<JoinHandle<FeedResult>>,
    cancel: Stop,
    progress: Arc<PagesProgress>,
    start_page: u32,
}

impl PageFeed {
    /// Starts fetching `path` from `start_page` on, `concurrency` requests at a time;
    /// `query_for_page` builds each page's query string.
    pub fn start<Q>(
        client: Arc<Client>,
        path: &'static str,
        query_for_page: Q,
        start_page: u32,
        concurrency: usize,
        run: Cancel,
    ) -> io::Result<PageFeed>
    where
        Q: Fn(u32) -> String + Send + Sync + 'static,
    {
        let concurrency = concurrency.max(1);
        let (tx, rx) = bounded::<Page>(concurrency.min(4));
        let cancel = Stop {
            own: Arc::new(AtomicBool::new(false)),
            run,
        };
        let stop = cancel.clone();
        let progress = Arc::new(PagesProgress::default());
        let shared = Arc::clone(&progress);
        let handle = std::thread::Builder::new()
            .name("zephr-etl-fetch".into())
            .spawn(move || {
                let parse = |body: &[u8], _: Option<&str>| parse_page_info(body);
                let reading = PageReading {
                    parse: &parse,
                    progress: Some(&shared),
                };
                fetch_pages_with(
                    &client,
                    path,
                    query_for_page,
                    start_page,
                    concurrency,
                    reading,
                    |page, typed| send(&tx, (page, typed.body), &stop),
                )
            })?;
        Ok(PageFeed {
            rx,
            handle: Some(handle),
            cancel,
            progress,
            start_page: start_page.max(1),
        })
    }

    /// The export's body bytes, extrapolated from the pages fetched so far against the last
    /// page's number (see [`PagesProgress::estimated_total`]); `before_bytes` are the bytes
    /// of the pages before the first one this feed fetches (a resumed fetch's).
    pub fn estimated_total(&self, before_bytes: u64) -> Option<u64> {
        self.progress
            .estimated_total(self.start_page - 1, before_bytes)
    }

    /// The next page; `None` once the fetch has ended (done or failed; [`PageFeed::finish`]
    /// says which), or on Ctrl-C.
    pub fn next_page(&self) -> Option<Page> {
        recv(&self.rx, &self.cancel)
    }

    /// The pipeline's sources for a segment: `first` (from [`PageFeed::next_page`]) and the
    /// pages after it, up to `limit`. Each body also goes to `raw` when given, followed by a
    /// newline. The log says which pages went out.
    pub fn segment(
        &self,
        first: Page,
        limit: SegmentLimit,
        raw: Option<BufWriter<File>>,
    ) -> (Sources, Arc<Mutex<SegmentLog>>) {
        let log = Arc::new(Mutex::new(SegmentLog {
            first_page: first.0,
            last_page: first.0,
            pages: 0,
            bytes: 0,
            raw,
            raw_error: None,
        }));
        let pages = SegmentPages {
            first: Some(first),
            rx: self.rx.clone(),
            left: limit.pages.max(1),
            bytes_left: limit.bytes.max(1),
            log: Arc::clone(&log),
            cancel: self.cancel.clone(),
        };
        (Box::new(pages), log)
    }

    /// Waits for the fetch thread and returns how it ended. Call once [`PageFeed::next_page`]
    /// has returned `None`.
    pub fn finish(mut self) -> FeedResult {
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(PagesError::WorkerPanicked { page: 0 }),
        }
    }
}

impl Drop for PageFeed {
    fn drop(&mut self) {
        // Unblocks the fetch thread, which then cancels its requests. It is not joined here:
        // a request in a backoff wait must not hold up the error a failed run reports.
        self.cancel.own.store(true, Ordering::SeqCst);
    }
}

/// When a segment closes: after `pages` pages, or after the page that brings its bodies to
/// `bytes`, whichever comes first. Every segment holds at least one page.
///
/// A segment is committed whole, and the segments are joined into the destination once the
/// fetch is done, which copies every output once more; so segments are large (fewer joins).
/// A failing or interrupted run commits the pages it has anyway; only a hard kill loses the
/// open segment.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimit {
    /// Pages per segment at most (`usize::MAX`: no page limit); 0 counts as 1.
    pub pages: usize,
    /// Bytes of page bodies per segment: the page that reaches it is the segment's last.
    pub bytes: u64,
}

/// What a segment's sources handed to the pipeline.
#[derive(Debug)]
pub struct SegmentLog {
    /// The first page.
    pub first_page: u32,
    /// The last page handed out.
    pub last_page: u32,
    /// Pages handed out.
    pub pages: u32,
    /// Their body bytes.
    pub bytes: u64,
    /// The `--save-raw` part of this segment.
    pub raw: Option<BufWriter<File>>,
    /// Writing `raw` failed: the segment stopped early and must not be committed.
    pub raw_error: Option<io::Error>,
}

struct SegmentPages {
    first: Option<Page>,
    rx: Receiver<Page>,
    left: usize,
    bytes_left: u64,
    log: Arc<Mutex<SegmentLog>>,
    cancel: Stop,
}

impl Iterator for SegmentPages {
    type Item = Result<Source, zephr_core::error::InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.bytes_left == 0 {
            return None;
        }
        let (page, body) = match self.first.take() {
            Some(first) => first,
            None => recv(&self.rx, &self.cancel)?,
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(raw) = log.raw.as_mut()
            && let Err(e) = raw.write_all(&body).and_then(|()| raw.write_all(b"\n"))
        {
            log.raw_error = Some(e);
            self.left = 0;
            return None;
        }
        log.last_page = page;
        log.pages += 1;
        log.bytes += body.len() as u64;
        self.left -= 1;
        self.bytes_left = self.bytes_left.saturating_sub(body.len() as u64);
        Some(Ok(Source {
            name: Arc::from(format!("page {page}")),
            reader: Box::new(Cursor::new(body)),
        }))
    }
}

/// When the fetch stops: the feed's own flag (set when the feed is dropped) or the run's
/// cancellation token.
#[derive(Clone)]
struct Stop {
    own: Arc<AtomicBool>,
    run: Cancel,
}

impl Stop {
    fn is_set(&self) -> bool {
        self.own.load(Ordering::Relaxed) || self.run.is_cancelled()
    }
}

/// Sends a page, giving up when the receiving side stopped.
fn send(tx: &Sender<Page>, mut page: Page, cancel: &Stop) -> Result<(), Stopped> {
    loop {
        if cancel.is_set() {
            return Err(Stopped);
        }
        match tx.send_timeout(page, Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(p)) => page = p,
            Err(SendTimeoutError::Disconnected(_)) => return Err(Stopped),
        }
    }
}

/// Receives a page; `None` when the sender is gone, or on cancel or Ctrl-C.
fn recv(rx: &Receiver<Page>, cancel: &Stop) -> Option<Page> {
    loop {
        if cancel.is_set() {
            return None;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(page) => return Some(page),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}
