//! State events: the export's optional second phase, as the `state_events` table.
//!
//! Zephr does not document their columns (SPEC sections 1 and 3), so the table takes the
//! source's own: a CSV file's header, in its order, or for JSON (an array or NDJSON of flat
//! objects) the union of the objects' keys in the order they are first seen. Every cell is a
//! string: JSON strings unescaped, numbers exactly as written, `true`/`false`, objects and
//! arrays as compact JSON, and `null`, a missing key or an empty CSV cell as NULL (the csv
//! reader cannot tell `""` from an empty cell, so both are NULL).
//!
//! JSON is read twice, first for the columns and then for the rows, so memory holds one event
//! at a time however large the file. Fetched pages, JSON or CSV, are first spooled to a file
//! (`pages::EventsSpool`) and then read the same way.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::control::Cancel;
use zephr_core::flatten::json::push_compact;
use zephr_core::schema::ColumnType;
use zephr_core::table::{CsvDialect, Formats, TableBuilder};
use zephr_sink::{TableWriter, WriteError, WrittenFile};

/// The table's file stem: `state_events.csv`, `state_events.parquet`.
pub const TABLE_NAME: &str = "state_events";
/// Rows per batch handed to the writers.
pub(crate) const BATCH_ROWS: usize = 4096;

/// How a state-events source is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsFormat {
    /// CSV with a header row.
    Csv,
    /// A JSON array or NDJSON of flat objects.
    Json,
}

/// What an export of state events produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsStats {
    /// The source's format.
    pub format: EventsFormat,
    /// The columns, in order.
    pub columns: Vec<String>,
    /// Rows written.
    pub rows: u64,
    /// CSV cells the postgres dialect changed (a NUL replaced by U+FFFD).
    pub nul_replaced: u64,
    /// The files written (staged in the destination, not yet committed).
    pub files: Vec<WrittenFile>,
}

/// Why the state events could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum StateEventsError {
    /// The source could not be opened or read.
    #[error("{input}: cannot read")]
    Io {
        /// The source's name.
        input: String,
        /// Why.
        source: io::Error,
    },
    /// Broken CSV (the csv crate's message names the record, line and byte).
    #[error("{input}")]
    Csv {
        /// The source's name.
        input: String,
        /// What the reader found.
        source: csv::Error,
    },
    /// Broken JSON, or an event that is not a flat object.
    #[error("{input}: event {event}")]
    Json {
        /// The source's name.
        input: String,
        /// 1-based number of the event being read.
        event: u64,
        /// What the parser found (it names the line and column).
        source: serde_json::Error,
    },
    /// A CSV header naming a column twice.
    #[error("{input}: the header names column {name:?} twice; every column must have its own name")]
    DuplicateColumn {
        /// The source's name.
        input: String,
        /// The name.
        name: String,
    },
    /// A fetched page that is not an export page.
    #[error("{0}")]
    Page(String),
    /// Writing the table failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Ctrl-C.
    #[error("interrupted (Ctrl-C or SIGTERM); no state_events file was kept")]
    Interrupted,
}

/// Opens the source afresh (JSON is read twice).
pub(crate) type Opener<'a> = &'a dyn Fn() -> io::Result<Box<dyn Read + Send>>;

/// Creates the writers of the table once its columns are known.
pub(crate) type MakeWriters<'a> =
    &'a mut dyn FnMut(&[String], &SchemaRef) -> Result<Vec<Box<dyn TableWriter>>, WriteError>;

/// The table's Arrow schema: one nullable Utf8 column per name.
pub(crate) fn arrow_schema(columns: &[String]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|name| Field::new(name, DataType::Utf8, true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The format, from the first byte that is not blank or a byte-order mark.
pub(crate) fn sniff(head: &[u8]) -> EventsFormat {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[' | b'{') => EventsFormat::Json,
        _ => EventsFormat::Csv,
    }
}

/// Converts the source that `open` opens into the table, through the writers that
/// `make_writers` creates for its columns; finishes the writers.
pub fn export(
    open: Opener<'_>,
    input: &str,
    formats: Formats,
    dialect: CsvDialect,
    cancel: &Cancel,
    make_writers: MakeWriters<'_>,
) -> Result<EventsStats, StateEventsError> {
    let io_error = |source| StateEventsError::Io {
        input: input.to_owned(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, open().map_err(io_error)?);
    let format = sniff(reader.fill_buf().map_err(io_error)?);
    let (columns, rows, nul_replaced, writers) = match format {
        EventsFormat::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(reader);
            let csv_error = |source| StateEventsError::Csv {
                input: input.to_owned(),
                source,
            };
            let mut columns: Vec<String> = csv
                .headers()
                .map_err(csv_error)?
                .iter()
                .map(str::to_owned)
                .collect();
            if let Some(first) = columns.first_mut()
                && let Some(rest) = first.strip_prefix('\u{feff}')
            {
                *first = rest.to_owned();
            }
            check_unique(&columns, input)?;
            let schema = arrow_schema(&columns);
            let mut out = Rows::new(
                &schema,
                formats,
                dialect,
                cancel,
                make_writers(&columns, &schema)?,
            );
            for record in csv.records() {
                let record = record.map_err(csv_error)?;
                out.row(record.iter().map(|cell| (!cell.is_empty()).then_some(cell)))?;
            }
            let (rows, nul_replaced, writers) = out.end()?;
            (columns, rows, nul_replaced, writers)
        }
        EventsFormat::Json => {
            let mut columns: Vec<String> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            read_json(reader, input, &mut |event| {
                for (key, _) in event {
                    if !index.contains_key(&key) {
                        index.insert(key.clone(), columns.len());
                        columns.push(key);
                    }
                }
                Ok(())
            })?;
            let schema = arrow_schema(&columns);
            let mut out = Rows::new(
                &schema,
                formats,
                dialect,
                cancel,
                make_writers(&columns, &schema)?,
            );
            let second = BufReader::with_capacity(1 << 20, open().map_err(io_error)?);
            let mut cells: Vec<Option<String>> = vec![None; columns.len()];
            read_json(second, input, &mut |event| {
                cells.iter_mut().for_each(|c| *c = None);
                for (key, value) in event {
                    // A key the first pass did not see means the source changed in between.
                    let Some(&i) = index.get(&key) else {
                        return Err(StateEventsError::Page(format!(
                            "{input}: changed while it was being read (new key {key:?})"
                        )));
                    };
                    cells[i] = cell_text(&value);
                }
                out.row(cells.iter().map(Option::as_deref))
            })?;
            let (rows, nul_replaced, writers) = out.end()?;
            (columns, rows, nul_replaced, writers)
        }
    };
    let mut files = Vec::new();
    for writer in writers {
        files.extend(writer.finish()?);
    }
    Ok(EventsStats {
        format,
        columns,
        rows,
        nul_replaced,
        files,
    })
}

fn check_unique(columns: &[String], input: &str) -> Result<(), StateEventsError> {
    let mut seen = std::collections::HashSet::new();
    for name in columns {
        if !seen.insert(name) {
            return Err(StateEventsError::DuplicateColumn {
                input: input.to_owned(),
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// What [`Rows::end`] hands back: rows, cells whose NUL was replaced, writers to finish.
type Ended = (u64, u64, Vec<Box<dyn TableWriter>>);

/// Batches rows into the writers.
struct Rows {
    builder: TableBuilder,
    writers: Vec<Box<dyn TableWriter>>,
    columns: usize,
    rows: u64,
    nul_replaced: u64,
    cancel: Cancel,
}

impl Rows {
    fn new(
        schema: &SchemaRef,
        formats: Formats,
        dialect: CsvDialect,
        cancel: &Cancel,
        writers: Vec<Box<dyn TableWriter>>,
    ) -> Rows {
        let types = vec![ColumnType::String; schema.fields().len()];
        Rows {
            builder: TableBuilder::new(schema.clone(), &types, formats, dialect),
            writers,
            columns: types.len(),
            rows: 0,
            nul_replaced: 0,
            cancel: cancel.clone(),
        }
    }

    fn row<'a>(
        &mut self,
        cells: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<(), StateEventsError> {
        // Events without any field carry nothing a table can hold (and Arrow has no batches
        // without columns), so a table of no columns stays without rows.
        if self.columns == 0 {
            return Ok(());
        }
        for cell in cells {
            self.builder.text(cell);
        }
        self.builder.end_row();
        self.rows += 1;
        if self.builder.rows() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StateEventsError> {
        if self.cancel.is_cancelled() {
            return Err(StateEventsError::Interrupted);
        }
        if self.columns == 0 || self.builder.rows() == 0 {
            return Ok(());
        }
        self.nul_replaced += self.builder.take_nul_replaced();
        let batch = self.builder.finish();
        for writer in &mut self.writers {
            writer.write(&batch)?;
        }
        Ok(())
    }

    /// Writes what is left; returns the rows, the cells whose NUL was replaced, and the
    /// writers to finish.
    fn end(mut self) -> Result<Ended, StateEventsError> {
        self.flush()?;
        Ok((self.rows, self.nul_replaced, self.writers))
    }
}

/// One event's fields in source order, values as written.
type Event = Vec<(String, Box<RawValue>)>;

/// A cell's text: strings unescaped, numbers as written, true/false, compact JSON for
/// objects and arrays, `None` for null.
pub(crate) fn cell_text(value: &RawValue) -> Option<String> {
    let raw = value.get().trim();
    match raw.as_bytes().first() {
        Some(b'"') => Some(serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned())),
        Some(b'n') | None => None,
        Some(b'{' | b'[') => {
            let mut out = String::with_capacity(raw.len());
            push_compact(&mut out, raw);
            Some(out)
        }
        Some(_) => Some(raw.to_owned()),
    }
}

/// Calls `on_event` for every event of a JSON array or NDJSON stream.
fn read_json<R: Read>(
    mut reader: BufReader<R>,
    input: &str,
    on_event: &mut dyn FnMut(Event) -> Result<(), StateEventsError>,
) -> Result<(), StateEventsError> {
    // Skip a byte-order mark, which serde_json would refuse.
    if reader
        .fill_buf()
        .map_err(|source| StateEventsError::Io {
            input: input.to_owned(),
            source,
        })?
        .starts_with(b"\xEF\xBB\xBF")
    {
        reader.consume(3);
    }
    let array = sniff_array(&mut reader).map_err(|source| StateEventsError::Io {
        input: input.to_owned(),
        source,
    })?;
    let mut count = 0u64;
    let mut failure: Option<StateEventsError> = None;
    let json_error = |count: u64, source| StateEventsError::Json {
        input: input.to_owned(),
        event: count + 1,
        source,
    };
    if array {
        let mut de = serde_json::Deserializer::from_reader(reader);
        let visitor = EventsVisitor {
            on_event,
            count: &mut count,
            failure: &mut failure,
        };
        let outcome = de.deserialize_seq(visitor).and_then(|()| de.end());
        if let Some(e) = failure {
            return Err(e);
        }
        outcome.map_err(|e| json_error(count, e))
    } else {
        for event in serde_json::Deserializer::from_reader(reader).into_iter::<FlatObject>() {
            let event = event.map_err(|e| json_error(count, e))?;
            count += 1;
            on_event(event.0)?;
        }
        Ok(())
    }
}

/// Whether the first non-blank byte is `[`.
fn sniff_array<R: Read>(reader: &mut BufReader<R>) -> io::Result<bool> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => return Ok(buf[i] == b'['),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// A flat JSON object, keys in source order.
struct FlatObject(Event);

impl<'de> Deserialize<'de> for FlatObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FlatObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object (one state event)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FlatObject, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((k, v));
                }
                Ok(FlatObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// Streams the elements of a top-level array to the callback, one at a time.
struct EventsVisitor<'a, 'b> {
    on_event: &'a mut dyn FnMut(Event) -> Result<(), StateEventsError>,
    count: &'a mut u64,
    failure: &'b mut Option<StateEventsError>,
}

impl<'de> Visitor<'de> for EventsVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of state events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(event) = seq.next_element_seed(FlatSeed)? {
            *self.count += 1;
            if let Err(e) = (self.on_event)(event.0) {
                *self.failure = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

struct FlatSeed;

impl<'de> DeserializeSeed<'de> for FlatSeed {
    type Value = FlatObject;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FlatObject, D::Error> {
        FlatObject::deserialize(d)
    }
}

/// Appends the events of one fetched page (an envelope with `results`, flat or nested, or a
/// top-level array) to `out` as NDJSON, one compact object per line. Returns the count.
pub(crate) fn spool_page(
    body: &[u8],
    page: u32,
    out: &mut dyn Write,
) -> Result<u64, StateEventsError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        results: Option<Box<RawValue>>,
    }
    let bad =
        |problem: String| StateEventsError::Page(format!("state events page {page}: {problem}"));
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let results: Vec<Box<RawValue>> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?,
        Some(b'{') => {
            let env: Envelope = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            match env.results {
                Some(raw) if raw.get().trim() != "null" => {
                    serde_json::from_str(raw.get()).map_err(|e| bad(format!("\"results\": {e}")))?
                }
                _ => Vec::new(),
            }
        }
        _ => return Err(bad("expected a JSON envelope or array".into())),
    };
    let mut count = 0;
    let mut line = String::new();
    let write_error = |e: io::Error| bad(format!("cannot spool: {e}"));
    for element in results {
        let nested: Vec<Box<RawValue>> = if element.get().trim_start().starts_with('[') {
            serde_json::from_str(element.get()).map_err(|e| bad(e.to_string()))?
        } else {
            vec![element]
        };
        for event in nested {
            if !event.get().trim_start().starts_with('{') {
                return Err(bad(format!("event {} is not a JSON object", count + 1)));
            }
            line.clear();
            push_compact(&mut line, event.get());
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(write_error)?;
            count += 1;
        }
    }
    Ok(count)
}

pub(crate) mod pages;

#[cfg(test)]
mod tests;
