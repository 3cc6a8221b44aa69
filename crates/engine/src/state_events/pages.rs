//! Fetched pages of state events: JSON or CSV, told apart by their content, spooled into one
//! file the table is then read from.
//!
//! Zephr does not document the events' format, and the console's own downloads are CSV, so a
//! page may be a JSON envelope or array (spooled as NDJSON by `spool_page`) or CSV with a
//! header row on every page. A body that starts with `[` or `{` is JSON unless the server
//! calls it `text/csv` (a CSV header may start with a bracket); anything else is CSV. Every
//! CSV page's header must be the first page's, since the rows are joined under one header; a
//! page whose header differs is an error that names it, as is a page of the other format.
//!
//! A CSV page says nothing of the pages after it: it is the last when it holds fewer rows
//! than the `rpp` asked for, or none at all.

use std::io::Write;

use super::{StateEventsError, spool_page};
use zephr_api::pages::{BodyShape, PageError, PageInfo, parse_page_info};

/// How a page of state events is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageFormat {
    /// A JSON envelope or array of flat objects.
    Json,
    /// CSV with a header row.
    Csv,
}

/// The format of a page, from its first bytes, with the `Content-Type` as a hint.
pub(crate) fn page_format(body: &[u8], content_type: Option<&str>) -> PageFormat {
    let said_csv = content_type.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("csv") || t.starts_with("text/plain")
    });
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[' | b'{') if !said_csv => PageFormat::Json,
        None if !said_csv => PageFormat::Json,
        _ => PageFormat::Csv,
    }
}

/// A CSV page: its header, where its rows start, and how many there are.
struct CsvPage {
    header: Vec<String>,
    rows_start: usize,
    rows: u64,
}

/// Reads a CSV page whole (it is in memory), checking every record.
fn read_csv_page(body: &[u8]) -> Result<CsvPage, csv::Error> {
    let bom = if body.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(&body[bom..]);
    let header = reader.headers()?.iter().map(str::to_owned).collect();
    let mut rows_start = bom + reader.position().byte() as usize;
    // The reader stops a CRLF record after its CR; the LF belongs to the header line.
    if rows_start > 0
        && body.get(rows_start - 1) == Some(&b'\r')
        && body.get(rows_start) == Some(&b'\n')
    {
        rows_start += 1;
    }
    let mut rows = 0;
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record)? {
        rows += 1;
    }
    Ok(CsvPage {
        header,
        rows_start: rows_start.min(body.len()),
        rows,
    })
}

/// The pagination facts of a page of state events; `rpp` is the page size asked for, when
/// one was. JSON pages are read as the user export's are.
pub(crate) fn events_page_info(
    body: &[u8],
    content_type: Option<&str>,
    rpp: Option<u64>,
) -> Result<PageInfo, PageError> {
    match page_format(body, content_type) {
        PageFormat::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(empty_page()),
        PageFormat::Json => parse_page_info(body),
        PageFormat::Csv => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(empty_page());
            }
            let page =
                read_csv_page(body).map_err(|e| PageError::Unexpected(format!("CSV: {e}")))?;
            let short = rpp.is_some_and(|rpp| page.rows < rpp);
            Ok(PageInfo {
                count: None,
                rpp,
                has_next: short.then_some(false),
                results: page.rows,
                shape: BodyShape::Envelope,
                last_link: None,
            })
        }
    }
}

/// A page with nothing in it: the end.
fn empty_page() -> PageInfo {
    PageInfo {
        count: None,
        rpp: None,
        has_next: Some(false),
        results: 0,
        shape: BodyShape::Envelope,
        last_link: None,
    }
}

/// Joins fetched pages into one file: NDJSON for JSON pages, one CSV (the first page's
/// header, then every page's rows as they came) for CSV pages.
pub(crate) struct EventsSpool<W: Write> {
    out: W,
    format: Option<PageFormat>,
    header: Option<Vec<String>>,
    first_page: u32,
    events: u64,
}

impl<W: Write> EventsSpool<W> {
    /// A spool writing to `out`.
    pub fn new(out: W) -> EventsSpool<W> {
        EventsSpool {
            out,
            format: None,
            header: None,
            first_page: 0,
            events: 0,
        }
    }

    #[cfg(test)]
    /// The format of the pages so far (`None` before the first page with content).
    pub fn format(&self) -> Option<PageFormat> {
        self.format
    }

    #[cfg(test)]
    /// Events spooled so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The writer, once every page is in.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Adds page number `page`; returns its number of events.
    pub fn add(
        &mut self,
        page: u32,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<u64, StateEventsError> {
        let bad = |problem: String| {
            StateEventsError::Page(format!("state events page {page}: {problem}"))
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(0);
        }
        let format = page_format(body, content_type);
        match self.format {
            None => {
                self.format = Some(format);
                self.first_page = page;
            }
            Some(first) if first != format => {
                let name = |f| match f {
                    PageFormat::Json => "JSON",
                    PageFormat::Csv => "CSV",
                };
                return Err(bad(format!(
                    "{}, while page {} was {}; the pages of one export must share a format",
                    name(format),
                    self.first_page,
                    name(first)
                )));
            }
            Some(_) => {}
        }
        let count = match format {
            PageFormat::Json => spool_page(body, page, &mut self.out)?,
            PageFormat::Csv => {
                let csv = read_csv_page(body).map_err(|e| bad(format!("CSV: {e}")))?;
                let write_error = |e: std::io::Error| bad(format!("cannot spool: {e}"));
                match &self.header {
                    None => {
                        // The first header as it came, so the table's columns are its own.
                        let head = &body[..csv.rows_start];
                        self.out.write_all(head).map_err(write_error)?;
                        if !head.ends_with(b"\n") {
                            self.out.write_all(b"\n").map_err(write_error)?;
                        }
                        self.header = Some(csv.header);
                    }
                    Some(first) if *first != csv.header => {
                        return Err(bad(format!(
                            "its CSV header ({}) differs from page {}'s ({}); the rows cannot \
                             be joined into one table",
                            csv.header.join(","),
                            self.first_page,
                            first.join(",")
                        )));
                    }
                    Some(_) => {}
                }
                let rows = &body[csv.rows_start..];
                if !rows.iter().all(u8::is_ascii_whitespace) {
                    self.out.write_all(rows).map_err(write_error)?;
                    if !rows.ends_with(b"\n") {
                        self.out.write_all(b"\n").map_err(write_error)?;
                    }
                }
                csv.rows
            }
        };
        self.events += count;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_content_with_the_type_as_a_hint() {
        assert_eq!(page_format(b" [{}]", None), PageFormat::Json);
        assert_eq!(
            page_format(b"{\"results\":[]}", Some("application/json")),
            PageFormat::Json
        );
        assert_eq!(page_format(b"user_id,event\n", None), PageFormat::Csv);
        assert_eq!(
            page_format(b"user_id,event\n", Some("application/json")),
            PageFormat::Csv
        );
        // A CSV header may start with a bracket: the server's word decides then.
        assert_eq!(
            page_format(b"[id],event\n", Some("text/csv; charset=utf-8")),
            PageFormat::Csv
        );
        assert_eq!(page_format(b"\xEF\xBB\xBFid\n", None), PageFormat::Csv);
    }

    #[test]
    fn csv_pages_end_short_or_empty() {
        let page = b"user_id,event\nu1,login\nu2,logout\n";
        let info = events_page_info(page, Some("text/csv"), Some(2)).unwrap();
        assert_eq!(info.results, 2);
        assert!(!info.is_last(1));
        let info = events_page_info(page, Some("text/csv"), Some(3)).unwrap();
        assert!(info.is_last(1));
        // Without an rpp, only a page without rows ends the export.
        assert!(!events_page_info(page, None, None).unwrap().is_last(1));
        assert!(
            events_page_info(b"user_id,event\n", None, None)
                .unwrap()
                .is_last(1)
        );
        assert!(
            events_page_info(b"", Some("text/csv"), None)
                .unwrap()
                .is_last(1)
        );
        let e = events_page_info(b"a,b\n1,2,3\n", None, None).unwrap_err();
        assert!(e.to_string().starts_with("CSV: "), "{e}");
    }

    #[test]
    fn csv_pages_are_joined_under_one_header() {
        let mut spool = EventsSpool::new(Vec::new());
        assert_eq!(
            spool
                .add(1, b"\xEF\xBB\xBFid,e\r\n1,\"a\nb\"\r\n", None)
                .unwrap(),
            1
        );
        assert_eq!(spool.add(2, b"id,e\n2,c", None).unwrap(), 1);
        assert_eq!(spool.add(3, b"id,e\n", None).unwrap(), 0);
        assert_eq!(spool.events(), 2);
        assert_eq!(spool.format(), Some(PageFormat::Csv));
        let out = spool.into_inner();
        assert_eq!(out, b"\xEF\xBB\xBFid,e\r\n1,\"a\nb\"\r\n2,c\n");

        let mut spool = EventsSpool::new(Vec::new());
        spool.add(1, b"id,e\n1,a\n", None).unwrap();
        let e = spool.add(2, b"id,kind\n2,b\n", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "state events page 2: its CSV header (id,kind) differs from page 1's (id,e); the \
             rows cannot be joined into one table"
        );
        let e = spool.add(3, b"[{\"id\":\"3\"}]", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "state events page 3: JSON, while page 1 was CSV; the pages of one export must \
             share a format"
        );
    }

    #[test]
    fn json_pages_are_spooled_as_ndjson() {
        let mut spool = EventsSpool::new(Vec::new());
        assert_eq!(
            spool
                .add(
                    1,
                    br#"{"results":[{"a":1},{"a":2}]}"#,
                    Some("application/json")
                )
                .unwrap(),
            2
        );
        assert_eq!(spool.add(2, b"[]", None).unwrap(), 0);
        assert_eq!(spool.into_inner(), b"{\"a\":1}\n{\"a\":2}\n");
    }
}
