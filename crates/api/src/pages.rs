//! Paginated fetching: what a page says about the pages after it, and a paginator that
//! fetches pages in parallel but hands them on strictly in order.
//!
//! A page ends the export when its envelope says so in any of three ways (SPEC section 1):
//! `links` is there but `links.next` is missing or null, `page * meta.rpp >= meta.count`, or
//! its `results` are empty. A body that is a top-level array is the whole, unpaginated export.
//!
//! The last page's number comes from `meta` (`count` and `rpp`) or from `links.last.page`;
//! [`PagesProgress`] shares it, with the pages and bytes handed on, for a progress display.
//! [`fetch_pages_with`] takes another reader of page facts, for pages that are not JSON
//! envelopes (state events served as CSV).

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::client::{Client, FetchError, TypedBody};
use zephr_core::source::scan;

/// The two JSON shapes a page body comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyShape {
    /// A top-level array of items: the whole export, unpaginated.
    Array,
    /// The paginated envelope `{"results": ..., "meta": ..., "links": ...}`.
    Envelope,
}

/// What a page body says about the export's pagination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// `meta.count`: items in the whole export.
    pub count: Option<u64>,
    /// `meta.rpp`: results per page.
    pub rpp: Option<u64>,
    /// Whether `links.next` is set; `None` when there is no `links` object at all.
    pub has_next: Option<bool>,
    /// Items in this page (`[[...]]` counts the inner items).
    pub results: u64,
    /// Array or envelope.
    pub shape: BodyShape,
    /// `links.last.page`: the last page's number, when the links give it.
    pub last_link: Option<u32>,
}

impl PageInfo {
    /// Whether page number `page` (1-based), which this info was parsed from, is the last.
    pub fn is_last(&self, page: u32) -> bool {
        if self.shape == BodyShape::Array || self.has_next == Some(false) || self.results == 0 {
            return true;
        }
        match (self.count, self.rpp) {
            (Some(count), Some(rpp)) if rpp > 0 => u64::from(page).saturating_mul(rpp) >= count,
            _ => false,
        }
    }

    /// The last page's number when `meta` gives both count and rpp (1 for an empty export),
    /// else from `links.last`.
    pub fn last_page(&self) -> Option<u32> {
        match (self.count, self.rpp) {
            (Some(count), Some(rpp)) if rpp > 0 => {
                Some(u32::try_from(count.div_ceil(rpp).max(1)).unwrap_or(u32::MAX))
            }
            _ => self.last_link.filter(|&n| n >= 1),
        }
    }
}

/// A page body that is not an export page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Neither `[` nor `{` first.
    #[error("expected a JSON array or object, found {0}")]
    NotAnExport(String),
    /// An object without `results`.
    #[error("expected a JSON object with \"results\" (a paginated export page)")]
    NoResults,
    /// `"results": null`: not a page of users, and not an empty one either (that is `[]`).
    #[error("\"results\" is null where a page's array of items was expected")]
    NullResults,
    /// Broken JSON, or a field of the wrong type.
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
    /// A page that is not what the pages before it were (its own words say how).
    #[error("{0}")]
    Unexpected(String),
}

/// Reads a page body's pagination facts without building its items.
///
/// An envelope is read by `quick_envelope`; serde reads whatever that declines, and words
/// the error when there is one.
pub fn parse_page_info(body: &[u8]) -> Result<PageInfo, PageError> {
    match quick_envelope(body) {
        Some(info) => Ok(info),
        None => parse_page_info_with_serde(body),
    }
}

/// [`parse_page_info`] by serde alone.
fn parse_page_info_with_serde(body: &[u8]) -> Result<PageInfo, PageError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let Results(n, _) = serde_json::from_slice(body)?;
            Ok(PageInfo {
                count: None,
                rpp: None,
                has_next: Some(false),
                results: n.unwrap_or(0),
                shape: BodyShape::Array,
                last_link: None,
            })
        }
        Some(b'{') => {
            let env: Envelope = serde_json::from_slice(body)?;
            if env.results.1 {
                return Err(PageError::NullResults);
            }
            let results = env.results.0.ok_or(PageError::NoResults)?;
            Ok(envelope_info(results, env.meta, env.links))
        }
        Some(&b) => Err(PageError::NotAnExport(format!("byte 0x{b:02x}"))),
        None => Err(PageError::NotAnExport("an empty body".to_owned())),
    }
}

/// The facts of a well-formed envelope, found by skipping `results` with the framer's
/// structural scan instead of parsing it. serde ignoring every item of every page took as much
/// CPU as a tenth of the conversion, on the thread that keeps the requests going. The items
/// are checked anyway, and errors placed, when the pipeline decodes them. `None` for
/// anything unusual (a key with an escape, a repeated key, a `results` that is not an
/// array or null, broken structure), which [`parse_page_info`] then leaves to serde.
fn quick_envelope(body: &[u8]) -> Option<PageInfo> {
    let ws = |at| skip_ws(body, at);
    let mut at = ws(0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    let mut results = None;
    let mut parts: [Option<&[u8]>; 2] = [None; 2];
    at += 1;
    loop {
        at = ws(at);
        if body.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = scan::value_end(body, at)?;
        let key = body.get(at + 1..key_end - 1)?;
        at = ws(key_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        let start = ws(at + 1);
        let end = if key == b"results" {
            let (count, end) = count_items(body, start)?;
            if results.replace(count).is_some() {
                return None;
            }
            end
        } else {
            let end = scan::value_end(body, start)?;
            let slot = match key {
                b"meta" => Some(0),
                b"links" => Some(1),
                _ if key.contains(&b'\\') => return None,
                _ => None,
            };
            if let Some(slot) = slot
                && parts[slot].replace(&body[start..end]).is_some()
            {
                return None;
            }
            end
        };
        at = ws(end);
        match body.get(at)? {
            b',' => at += 1,
            b'}' => break,
            _ => return None,
        }
    }
    if ws(at + 1) != body.len() {
        return None;
    }
    let results = results?;
    // `meta` and `links` are a few bytes: serde reads them as before.
    let meta: Option<Meta> = parts[0].map_or(Some(None), |m| serde_json::from_slice(m).ok())?;
    let links: Option<Links> = parts[1].map_or(Some(None), |l| serde_json::from_slice(l).ok())?;
    Some(envelope_info(results, meta, links))
}

/// An envelope's facts from its parts, however they were read.
fn envelope_info(results: u64, meta: Option<Meta>, links: Option<Links>) -> PageInfo {
    let meta = meta.unwrap_or_default();
    let last_link = links
        .as_ref()
        .and_then(|l| l.last.as_ref())
        .and_then(|last| last.get("page"))
        .and_then(lenient_u64)
        .and_then(|n| u32::try_from(n).ok());
    PageInfo {
        count: meta.count.and_then(|v| lenient_u64(&v)),
        rpp: meta.rpp.and_then(|v| lenient_u64(&v)),
        has_next: links.map(|l| l.next.is_some()),
        results,
        shape: BodyShape::Envelope,
        last_link,
    }
}

/// Items in the `results` that starts at `body[start]`, as [`Results`] counts them (an inner
/// array counts its elements), and one past its end. `None` when it is not an array (null is
/// left to serde, which words the error), or its structure is broken.
fn count_items(body: &[u8], start: usize) -> Option<(u64, usize)> {
    let mut n = 0;
    let end = for_each_element(body, start, |element| {
        if body.get(element) == Some(&b'[') {
            // A nested page of items (Zephr's published shape): its elements are the items.
            for_each_element(body, element, |item| {
                n += 1;
                scan::value_end(body, item)
            })
        } else {
            n += 1;
            scan::value_end(body, element)
        }
    })?;
    Some((n, end))
}

/// Calls `each` with the start of every element of the JSON array at `body[start]`; `each`
/// returns one past the element's end, so every byte is walked once. Returns one past the
/// array's end.
fn for_each_element(
    body: &[u8],
    start: usize,
    mut each: impl FnMut(usize) -> Option<usize>,
) -> Option<usize> {
    let ws = |at| skip_ws(body, at);
    if body.get(start) != Some(&b'[') {
        return None;
    }
    let mut at = ws(start + 1);
    if body.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        at = ws(each(at)?);
        match body.get(at)? {
            b',' => at = ws(at + 1),
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The first position at or after `at` that is not whitespace.
fn skip_ws(body: &[u8], mut at: usize) -> usize {
    while body.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    results: Results,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    count: Option<serde_json::Value>,
    #[serde(default)]
    rpp: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<IgnoredAny>,
    #[serde(default)]
    last: Option<serde_json::Value>,
}

/// `meta` numbers, also when a server sends them as strings.
fn lenient_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The number of items in `results` (`None` when the key is missing), and whether it was
/// null.
#[derive(Default)]
struct Results(Option<u64>, bool);

impl<'de> Deserialize<'de> for Results {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Results;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of items or of arrays of items")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Results, E> {
                Ok(Results(Some(0), true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Results, A::Error> {
                let mut n = 0u64;
                while let Some(Items(k)) = seq.next_element()? {
                    n += k;
                }
                Ok(Results(Some(n), false))
            }
        }
        d.deserialize_any(V)
    }
}

/// One element of `results`: an item (1), or an inner array of items (its length).
struct Items(u64);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an item or an array of items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut n = 0u64;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Items(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Items(1))
            }
            // Anything else is a (bad) item all the same; judging it is the decoder's job.
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Items, E> {
                Ok(Items(1))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Items, E> {
                Ok(Items(1))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Items, E> {
                Ok(Items(1))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Items, E> {
                Ok(Items(1))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Items, E> {
                Ok(Items(1))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Items, E> {
                Ok(Items(1))
            }
        }
        d.deserialize_any(V)
    }
}

/// What [`fetch_pages`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagesSummary {
    /// Pages handed to `on_page`.
    pub pages: u32,
    /// The last page handed on.
    pub last_page: u32,
    /// Items in those pages.
    pub items: u64,
    /// Body bytes handed on.
    pub bytes: u64,
    /// The shape of the first page (an array means the export was not paginated).
    pub shape: BodyShape,
}

/// Why [`fetch_pages`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PagesError<E> {
    /// A page could not be fetched.
    #[error("page {page}")]
    Fetch {
        /// The page.
        page: u32,
        /// Why.
        source: FetchError,
    },
    /// A page is not an export page.
    #[error("page {page}")]
    Page {
        /// The page.
        page: u32,
        /// Why.
        source: PageError,
    },
    /// A worker thread panicked (a bug, e.g. in `query_for_page`).
    #[error("page {page}: internal error: the fetching thread panicked")]
    WorkerPanicked {
        /// The page it was fetching.
        page: u32,
    },
    /// `on_page` failed.
    #[error("{0}")]
    Sink(E),
}

/// What a worker sends back for a page.
enum Fetched {
    Body(TypedBody),
    Failed(FetchError),
    Panicked,
}

/// How far a paginated fetch is, for a progress display: shared with the fetching thread.
#[derive(Debug, Default)]
pub struct PagesProgress {
    delivered_pages: AtomicU32,
    delivered_bytes: AtomicU64,
    last_page: AtomicU32,
}

impl PagesProgress {
    /// Pages handed on so far (in this fetch, not counting those before `start_page`).
    pub fn pages(&self) -> u32 {
        self.delivered_pages.load(Ordering::Relaxed)
    }

    /// Body bytes of the pages handed on.
    pub fn bytes(&self) -> u64 {
        self.delivered_bytes.load(Ordering::Relaxed)
    }

    /// The last page's number, once a page has told it.
    pub fn last_page(&self) -> Option<u32> {
        Some(self.last_page.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// The whole export's body bytes, extrapolated from the pages handed on: `before_pages`
    /// pages of `before_bytes` came before `start_page` (an earlier run's). `None` until a
    /// page is in and the last page is known.
    pub fn estimated_total(&self, before_pages: u32, before_bytes: u64) -> Option<u64> {
        let last = self.last_page()?;
        let pages = u64::from(before_pages) + u64::from(self.pages());
        if pages == 0 {
            return None;
        }
        let bytes = before_bytes + self.bytes();
        let per_page = bytes as f64 / pages as f64;
        Some((per_page * f64::from(last.max(1))).round() as u64)
    }
}

/// Reads a page's pagination facts from its body and `Content-Type`.
pub(crate) type PageParser = dyn Fn(&[u8], Option<&str>) -> Result<PageInfo, PageError> + Sync;

/// How [`fetch_pages_with`] reads pages and reports its progress.
#[derive(Clone, Copy)]
pub struct PageReading<'a> {
    /// The reader of each page's facts ([`parse_page_info`] for the user export).
    pub parse: &'a PageParser,
    /// Where to report progress, if anywhere.
    pub progress: Option<&'a PagesProgress>,
}

/// Fetches pages `start_page..` of `path` and hands each body to `on_page`, strictly in page
/// order, until the last page (see the module docs).
///
/// Up to `concurrency` requests are in flight, and at most `concurrency` fetched bodies wait
/// for their turn. Only `start_page` is asked for first; when its `meta` gives the total, no
/// page past the last is ever requested. Without a total, pages are requested ahead
/// speculatively, and those that turn out to lie past the end are dropped unseen, failures
/// included. On return, successful or not, every worker thread has been joined.
pub fn fetch_pages<Q, F, E>(
    client: &Client,
    path: &str,
    query_for_page: Q,
    start_page: u32,
    concurrency: usize,
    mut on_page: F,
) -> Result<PagesSummary, PagesError<E>>
where
    Q: Fn(u32) -> String + Sync,
    F: FnMut(u32, Vec<u8>) -> Result<(), E>,
{
    let parse = |body: &[u8], _: Option<&str>| parse_page_info(body);
    let reading = PageReading {
        parse: &parse,
        progress: None,
    };
    fetch_pages_with(
        client,
        path,
        query_for_page,
        start_page,
        concurrency,
        reading,
        |page, typed| on_page(page, typed.body),
    )
}

/// [`fetch_pages`] with the page facts read by `reading.parse`, progress reported to
/// `reading.progress`, and each body handed on with its `Content-Type`.
pub fn fetch_pages_with<Q, F, E>(
    client: &Client,
    path: &str,
    query_for_page: Q,
    start_page: u32,
    concurrency: usize,
    reading: PageReading<'_>,
    mut on_page: F,
) -> Result<PagesSummary, PagesError<E>>
where
    Q: Fn(u32) -> String + Sync,
    F: FnMut(u32, TypedBody) -> Result<(), E>,
{
    let concurrency = concurrency.max(1);
    let start_page = start_page.max(1);
    let cancel = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Created inside the scope so that, should `on_page` panic, unwinding drops the job
        // sender before the scope joins the workers, which then see the channel close.
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<u32>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(u32, Fetched)>();
        for _ in 0..concurrency {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let (cancel, query_for_page) = (&cancel, &query_for_page);
            scope.spawn(move || {
                while let Ok(page) = job_rx.recv() {
                    if cancel.load(Ordering::Relaxed) {
                        continue;
                    }
                    let fetched = catch_unwind(AssertUnwindSafe(|| {
                        client.fetch_typed_page(path, &query_for_page(page), cancel)
                    }));
                    let fetched = match fetched {
                        Ok(Ok(body)) => Fetched::Body(body),
                        Ok(Err(e)) => Fetched::Failed(e),
                        Err(_) => Fetched::Panicked,
                    };
                    if done_tx.send((page, fetched)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));

        let mut order = Order {
            job_tx: &job_tx,
            concurrency,
            next_dispatch: start_page,
            outstanding: 0,
            limit: Some(start_page),
        };
        let result = deliver(&mut order, &done_rx, start_page, reading, &mut on_page);
        // Stop retries and queued pages; results still on their way are dropped unseen.
        cancel.store(true, Ordering::Relaxed);
        drop(job_tx);
        result
    })
}

/// The dispatching side of the paginator.
struct Order<'a> {
    job_tx: &'a crossbeam_channel::Sender<u32>,
    concurrency: usize,
    next_dispatch: u32,
    /// Pages requested and not yet handed on (in flight or in the reorder buffer).
    outstanding: usize,
    /// The highest page that may be requested; `None` once requesting ahead is allowed.
    limit: Option<u32>,
}

impl Order<'_> {
    fn dispatch(&mut self) {
        while self.outstanding < self.concurrency
            && self.limit.is_none_or(|l| self.next_dispatch <= l)
            && self.next_dispatch < u32::MAX
        {
            // The workers outlive this loop, so the send cannot fail.
            let _ = self.job_tx.send(self.next_dispatch);
            self.next_dispatch += 1;
            self.outstanding += 1;
        }
    }
}

fn deliver<F, E>(
    order: &mut Order<'_>,
    done_rx: &crossbeam_channel::Receiver<(u32, Fetched)>,
    start_page: u32,
    reading: PageReading<'_>,
    on_page: &mut F,
) -> Result<PagesSummary, PagesError<E>>
where
    F: FnMut(u32, TypedBody) -> Result<(), E>,
{
    let mut buffer: BTreeMap<u32, Fetched> = BTreeMap::new();
    let mut summary = PagesSummary {
        pages: 0,
        last_page: start_page,
        items: 0,
        bytes: 0,
        shape: BodyShape::Envelope,
    };
    let mut page = start_page;
    order.dispatch();
    loop {
        let fetched = loop {
            if let Some(f) = buffer.remove(&page) {
                break f;
            }
            match done_rx.recv() {
                Ok((p, f)) => {
                    buffer.insert(p, f);
                }
                // Only if every worker died, which catch_unwind rules out; fail, don't hang.
                Err(_) => return Err(PagesError::WorkerPanicked { page }),
            }
        };
        order.outstanding -= 1;
        let body = match fetched {
            Fetched::Body(body) => body,
            Fetched::Failed(source) => return Err(PagesError::Fetch { page, source }),
            Fetched::Panicked => return Err(PagesError::WorkerPanicked { page }),
        };
        let info = (reading.parse)(&body.body, body.content_type.as_deref())
            .map_err(|source| PagesError::Page { page, source })?;
        let last = info.is_last(page);
        if page == start_page {
            summary.shape = info.shape;
            // With the total known, never ask past the end; without it, ask ahead.
            order.limit = info.last_page();
        } else if !last && order.limit.is_some_and(|l| page >= l) {
            // The export grew since the first page (or its meta went missing): follow on.
            order.limit = Some(info.last_page().unwrap_or(0).max(page + 1));
        }
        if !last {
            order.dispatch();
        }
        summary.pages += 1;
        summary.last_page = page;
        summary.items += info.results;
        summary.bytes += body.body.len() as u64;
        if let Some(progress) = reading.progress {
            let known = if last { Some(page) } else { info.last_page() };
            if let Some(known) = known {
                progress.last_page.store(known.max(page), Ordering::Relaxed);
            }
            progress
                .delivered_bytes
                .fetch_add(body.body.len() as u64, Ordering::Relaxed);
            progress.delivered_pages.fetch_add(1, Ordering::Relaxed);
        }
        on_page(page, body).map_err(PagesError::Sink)?;
        if last {
            return Ok(summary);
        }
        page += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(body: &str) -> PageInfo {
        parse_page_info(body.as_bytes()).unwrap()
    }

    #[test]
    fn envelope_facts() {
        let i = info(
            r#"{"results":[{"user":{}},{"user":{}}],"meta":{"count":7,"rpp":3,"paginated":true},
               "links":{"first":{"url":"u","page":1},"next":{"url":"u","page":2},"previous":null}}"#,
        );
        assert_eq!(
            i,
            PageInfo {
                count: Some(7),
                rpp: Some(3),
                has_next: Some(true),
                results: 2,
                shape: BodyShape::Envelope,
                last_link: None,
            }
        );
        assert!(!i.is_last(1));
        assert!(!i.is_last(2));
        assert!(i.is_last(3));
        assert_eq!(i.last_page(), Some(3));
    }

    #[test]
    fn nested_results_and_missing_parts() {
        let i = info(r#"{"results":[[{"a":1},{"b":[1,2]}],[{"c":{}}]]}"#);
        assert_eq!(i.results, 3);
        assert_eq!((i.count, i.rpp, i.has_next), (None, None, None));
        assert!(!i.is_last(5));
        assert_eq!(i.last_page(), None);

        let i = info(r#"{"links":{"next":null},"results":[{}],"meta":null}"#);
        assert_eq!(i.has_next, Some(false));
        assert!(i.is_last(1));

        let i = info(r#"{"links":{},"results":[{}]}"#);
        assert_eq!(i.has_next, Some(false));

        // Without meta, links.last gives the last page.
        let i =
            info(r#"{"results":[{}],"links":{"next":{"page":2},"last":{"url":"u","page":"7"}}}"#);
        assert_eq!((i.last_link, i.last_page()), (Some(7), Some(7)));
        assert!(!i.is_last(2));

        let i = info(r#"{"results":[],"meta":{"count":"10","rpp":"5"}}"#);
        assert_eq!((i.results, i.count, i.rpp), (0, Some(10), Some(5)));
        assert!(i.is_last(1));

        let i = info(r#"{"results":[[]],"meta":{"count":0,"rpp":500}}"#);
        assert_eq!(i.results, 0);
        assert_eq!(i.last_page(), Some(1));
    }

    #[test]
    fn the_quick_envelope_reader_agrees_with_serde() {
        let taken = [
            r#"{"results":[]}"#,
            r#" {"results" : [ [ ] , [ {} , 1 ] , {"a":"]}[{\"\\"} ] ,"meta":{"count":9,"rpp":"3"}, "links":{"next":{"page":2}}} "#,
            r#"{"x":{"results":5},"results":[],"y":[1,"}"],"z":-1.5e3,"links":null}"#,
            r#"{"results":[{"user":{}},true,null,"s",2],"meta":null,"links":{"next":null}}"#,
        ];
        for body in taken {
            let quick = quick_envelope(body.as_bytes());
            assert!(quick.is_some(), "declined {body}");
            assert_eq!(
                quick.unwrap(),
                parse_page_info_with_serde(body.as_bytes()).unwrap()
            );
        }
        let declined = [
            r#"{"results":[],"results":[]}"#,
            r#"{"res\u0075lts":[]}"#,
            r#"{"results":{}}"#,
            r#"{"results":5}"#,
            r#"{"results":[1,]}"#,
            r#"{"results":[,1]}"#,
            r#"{"results":[1 2]}"#,
            r#"{"results":[]} x"#,
            r#"{"results":[],}"#,
            r#"{"results":[]"#,
            r#"{"results":["#,
            r#"{"results":[1,"#,
            r#"{"results":[[1,"#,
            r#"{"results":[ "#,
            r#"{"results":[],"meta":{"count":[}}"#,
            r#"{"results":[],"meta":5}"#,
            r#"{"meta":{}}"#,
            r#"{"results":null}"#,
        ];
        for body in declined {
            assert_eq!(quick_envelope(body.as_bytes()), None, "took {body}");
        }
    }

    #[test]
    fn the_total_is_extrapolated_from_the_pages_so_far() {
        let p = PagesProgress::default();
        assert_eq!(p.estimated_total(0, 0), None);
        p.last_page.store(10, Ordering::Relaxed);
        assert_eq!(p.estimated_total(0, 0), None, "no page in yet");
        p.delivered_pages.store(2, Ordering::Relaxed);
        p.delivered_bytes.store(3_000, Ordering::Relaxed);
        assert_eq!(p.estimated_total(0, 0), Some(15_000));
        // A resumed fetch: pages 1-3 (4,500 bytes) came in an earlier run.
        assert_eq!(p.estimated_total(3, 4_500), Some(15_000));
        assert_eq!((p.pages(), p.bytes(), p.last_page()), (2, 3_000, Some(10)));
    }

    #[test]
    fn array_is_unpaginated() {
        let i = info(" \n[{\"user\":{}},{\"user\":{}},{}]");
        assert_eq!(i.shape, BodyShape::Array);
        assert_eq!(i.results, 3);
        assert!(i.is_last(1));
    }

    #[test]
    fn not_pages() {
        assert_eq!(
            parse_page_info(b"").unwrap_err().to_string(),
            "expected a JSON array or object, found an empty body"
        );
        assert_eq!(
            parse_page_info(b"<html>").unwrap_err().to_string(),
            "expected a JSON array or object, found byte 0x3c"
        );
        assert_eq!(
            parse_page_info(br#"{"message":"nope"}"#)
                .unwrap_err()
                .to_string(),
            "expected a JSON object with \"results\" (a paginated export page)"
        );
        assert_eq!(
            parse_page_info(br#"{"results":null,"meta":{"count":0}}"#)
                .unwrap_err()
                .to_string(),
            "\"results\" is null where a page's array of items was expected"
        );
        assert!(matches!(
            parse_page_info(br#"{"results":[{"a":1}"#),
            Err(PageError::Json(_))
        ));
        assert!(matches!(
            parse_page_info(br#"{"results":5}"#),
            Err(PageError::Json(_))
        ));
    }
}
