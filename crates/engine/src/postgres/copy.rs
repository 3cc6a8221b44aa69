//! The rows into PostgreSQL: column batches encoded as binary `COPY` rows of the staging
//! table (`RowEncoder`), and the one `COPY` they all stream into (`CopyStream`).
//!
//! The pipeline writes the three tables from three threads; a connection runs one `COPY` at a
//! time. So each table's writer (`CopyWriter`) encodes whole rows and sends them through a
//! bounded channel to the thread that owns the connection and its `COPY` (rows of different
//! tables may interleave: each carries its table's number). The channel's bound keeps memory
//! to a few batches whatever the run's size. The `COPY` is finished only once every writer
//! said it is done; otherwise the writer is dropped unfinished, which aborts the `COPY`.
//!
//! Binary rather than text: on the 200,000-user benchmark a text `COPY` of the same rows
//! (tab-separated, escaped, timestamps as ISO text) took 18.4 s to create the tables where
//! binary took 15.5 s (docs/performance.md), and binary needs no escaping and no parsing of
//! numbers and timestamps by the server. Text cells with a NUL character (which PostgreSQL
//! text cannot hold) get U+FFFD instead, counted, as the postgres CSV dialect does.

use std::io::Write;
use std::path::PathBuf;
use std::thread::JoinHandle;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, BooleanArray, PrimitiveArray, StringArray};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::sql::table_code;
use zephr_core::schema::{ColumnType, Table};
use zephr_core::table::ColumnBatch;
use zephr_dest::fault;
use zephr_sink::{TableWriter, WriteError, WrittenFile};

/// The binary `COPY` signature, flags and header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary `COPY` trailer: a field count of -1.
pub(crate) const TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// A NULL field.
const NULL: [u8; 4] = (-1i32).to_be_bytes();

/// What goes to the thread that runs the `COPY`.
enum Chunk {
    /// Whole encoded rows.
    Rows(Vec<u8>),
    /// A writer is done: its table and the text cells it changed (a NUL replaced).
    Done(Table, u64),
}

/// Encodes one table's rows as rows of the staging table (see [`super::sql`]).
pub(crate) struct RowEncoder {
    table: Table,
    types: Vec<ColumnType>,
    /// NULL fields before and after this table's columns in the staging row.
    before: usize,
    after: usize,
    /// The run's number of the next batch's first item (every table counts the same items).
    next_item: u64,
    /// The place of the next row in the run.
    next_ord: u64,
    nul_replaced: u64,
}

/// A batch that cannot be encoded: a programming error reported as an error, not a panic.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the {table} rows for COPY: {problem}")]
pub(crate) struct EncodeError {
    table: &'static str,
    problem: &'static str,
}

/// A column of the batch, typed once per batch.
enum Col<'a> {
    Text(&'a StringArray),
    Bool(&'a BooleanArray),
    Int(&'a PrimitiveArray<Int64Type>),
    Float(&'a PrimitiveArray<Float64Type>),
    Date(&'a PrimitiveArray<Date32Type>),
    Time(&'a PrimitiveArray<TimestampMicrosecondType>),
}

impl RowEncoder {
    /// An encoder for `table`, whose columns have `types`, in a staging table whose columns
    /// are `all` tables' columns one after another ([`super::sql::Statements::stage_types`]).
    pub fn new(table: Table, defs: &[Vec<ColumnType>; 3]) -> RowEncoder {
        let code = table_code(table) as usize;
        let before = defs[..code].iter().map(Vec::len).sum();
        let after = defs[code + 1..].iter().map(Vec::len).sum();
        RowEncoder {
            table,
            types: defs[code].clone(),
            before,
            after,
            next_item: 0,
            next_ord: 0,
            nul_replaced: 0,
        }
    }

    fn error(&self, problem: &'static str) -> EncodeError {
        EncodeError {
            table: self.table.name(),
            problem,
        }
    }

    /// Appends the rows of `batch` to `out`.
    pub fn encode(&mut self, batch: &ColumnBatch, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if batch.rows == 0 {
            self.next_item += batch.item_ends.len() as u64;
            return Ok(());
        }
        let arrow = batch
            .arrow
            .as_ref()
            .ok_or_else(|| self.error("the batch has no Arrow columns"))?;
        if arrow.num_columns() != self.types.len()
            || batch.item_ends.last().copied() != Some(batch.rows as u32)
        {
            return Err(self.error("the batch does not match the table's layout"));
        }
        let mut cols = Vec::with_capacity(self.types.len());
        for (array, ty) in arrow.columns().iter().zip(&self.types) {
            let col = match ty {
                ColumnType::String | ColumnType::Json => array.as_string_opt().map(Col::Text),
                ColumnType::Boolean => array.as_boolean_opt().map(Col::Bool),
                ColumnType::Int64 => array.as_primitive_opt().map(Col::Int),
                ColumnType::Float64 => array.as_primitive_opt().map(Col::Float),
                ColumnType::Date => array.as_primitive_opt().map(Col::Date),
                ColumnType::Timestamp => array.as_primitive_opt().map(Col::Time),
            };
            cols.push(col.ok_or_else(|| self.error("a column has an unexpected type"))?);
        }
        let fields = (3 + self.before + self.types.len() + self.after) as i16;
        let code = table_code(self.table);
        let mut item = 0usize;
        for row in 0..batch.rows {
            while row as u32 >= batch.item_ends[item] {
                item += 1;
            }
            out.extend_from_slice(&fields.to_be_bytes());
            out.extend_from_slice(&2i32.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&(self.next_item + item as u64).to_be_bytes());
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&self.next_ord.to_be_bytes());
            self.next_ord += 1;
            for _ in 0..self.before {
                out.extend_from_slice(&NULL);
            }
            for col in &cols {
                self.field(col, row, out);
            }
            for _ in 0..self.after {
                out.extend_from_slice(&NULL);
            }
        }
        self.next_item += batch.item_ends.len() as u64;
        Ok(())
    }

    /// One field: its length, then its bytes in PostgreSQL's binary form.
    fn field(&mut self, col: &Col<'_>, row: usize, out: &mut Vec<u8>) {
        fn fixed(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        let null = match col {
            Col::Text(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::Int(a) => a.is_null(row),
            Col::Float(a) => a.is_null(row),
            Col::Date(a) => a.is_null(row),
            Col::Time(a) => a.is_null(row),
        };
        if null {
            out.extend_from_slice(&NULL);
            return;
        }
        match col {
            Col::Text(a) => {
                let text = a.value(row);
                if memchr::memchr(0, text.as_bytes()).is_some() {
                    self.nul_replaced += 1;
                    fixed(out, text.replace('\0', "\u{fffd}").as_bytes());
                } else {
                    fixed(out, text.as_bytes());
                }
            }
            Col::Bool(a) => fixed(out, &[u8::from(a.value(row))]),
            Col::Int(a) => fixed(out, &a.value(row).to_be_bytes()),
            Col::Float(a) => fixed(out, &a.value(row).to_bits().to_be_bytes()),
            Col::Date(a) => fixed(out, &(a.value(row) - PG_EPOCH_DAYS).to_be_bytes()),
            Col::Time(a) => fixed(
                out,
                &a.value(row).saturating_sub(PG_EPOCH_MICROS).to_be_bytes(),
            ),
        }
    }
}

/// Why the `COPY` did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// The server refused or the connection broke.
    #[error(transparent)]
    Server(#[from] postgres::Error),
    /// Writing into the `COPY` failed (the connection broke).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A writer stopped before it was done (the run failed elsewhere): the `COPY` was
    /// aborted.
    #[error("the run stopped before every table was written")]
    Aborted,
}

/// What a completed `COPY` loaded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Copied {
    /// Rows in the staging table.
    pub rows: u64,
    /// Text cells whose NUL characters were replaced, per table in [`Table::ALL`] order.
    pub nul_replaced: [u64; 3],
}

/// The thread that owns the connection while the rows stream in.
pub(crate) struct CopyStream {
    tx: Sender<Chunk>,
    handle: JoinHandle<(postgres::Client, Result<Copied, CopyError>)>,
}

impl CopyStream {
    /// Starts `sql` (a `COPY ... FROM STDIN (FORMAT binary)`) on `client` in a thread of its
    /// own; it completes once `writers` writers are done.
    pub fn start(
        mut client: postgres::Client,
        sql: String,
        writers: usize,
    ) -> std::io::Result<CopyStream> {
        // A few batches in flight: enough to keep the connection busy while workers encode.
        let (tx, rx) = bounded::<Chunk>(4);
        let handle = std::thread::Builder::new()
            .name("zephr-etl-copy".into())
            .spawn(move || {
                let result = stream(&mut client, &sql, &rx, writers);
                (client, result)
            })?;
        Ok(CopyStream { tx, handle })
    }

    /// A writer for `table` that sends its rows into this `COPY`; `name` names the
    /// destination in its errors.
    pub fn writer(&self, encoder: RowEncoder, name: &str) -> CopyWriter {
        CopyWriter {
            encoder,
            tx: Some(self.tx.clone()),
            name: PathBuf::from(name),
        }
    }

    /// Waits for the `COPY` to end (completed or aborted) and gives the connection back.
    /// Call once every writer was finished or dropped.
    pub fn join(self) -> Result<(postgres::Client, Result<Copied, CopyError>), CopyError> {
        drop(self.tx);
        self.handle.join().map_err(|_| CopyError::Aborted)
    }
}

/// The `COPY` thread's work: the header, every chunk, then the trailer once all are done.
fn stream(
    client: &mut postgres::Client,
    sql: &str,
    rx: &Receiver<Chunk>,
    writers: usize,
) -> Result<Copied, CopyError> {
    let mut copy = client.copy_in(sql)?;
    copy.write_all(HEADER)?;
    let mut copied = Copied::default();
    let mut done = 0;
    for chunk in rx {
        match chunk {
            Chunk::Rows(bytes) => {
                // Test hook: a kill in the middle of the COPY.
                fault("pg-copy");
                copy.write_all(&bytes)?;
            }
            Chunk::Done(table, nul) => {
                copied.nul_replaced[table_code(table) as usize] = nul;
                done += 1;
                if done == writers {
                    break;
                }
            }
        }
    }
    if done < writers {
        // Dropped unfinished: the COPY is aborted and the transaction fails.
        return Err(CopyError::Aborted);
    }
    copy.write_all(&TRAILER)?;
    copied.rows = copy.finish()?;
    Ok(copied)
}

/// One table's writer into the `COPY` (a [`TableWriter`] of the pipeline that writes no file).
pub(crate) struct CopyWriter {
    encoder: RowEncoder,
    tx: Option<Sender<Chunk>>,
    name: PathBuf,
}

impl CopyWriter {
    fn stopped(&self) -> WriteError {
        WriteError::Io {
            path: self.name.clone(),
            source: std::io::Error::other("the COPY into PostgreSQL stopped"),
        }
    }
}

impl TableWriter for CopyWriter {
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
        let mut out = Vec::with_capacity(batch.rows * 160);
        self.encoder
            .encode(batch, &mut out)
            .map_err(|e| WriteError::Io {
                path: self.name.clone(),
                source: std::io::Error::other(e),
            })?;
        if out.is_empty() {
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        tx.send(Chunk::Rows(out)).map_err(|_| self.stopped())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        let tx = self.tx.take().ok_or_else(|| self.stopped())?;
        tx.send(Chunk::Done(self.encoder.table, self.encoder.nul_replaced))
            .map_err(|_| self.stopped())?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zephr_core::table::{CsvDialect, Formats, TableBuilder};

    #[test]
    fn rows_carry_their_item_and_place_and_nulls_outside_their_table() {
        let types = [
            vec![ColumnType::String],
            vec![ColumnType::String, ColumnType::Timestamp],
            vec![ColumnType::Boolean],
        ];
        let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("user_id", arrow_schema::DataType::Utf8, false),
            arrow_schema::Field::new(
                "t",
                arrow_schema::DataType::Timestamp(
                    arrow_schema::TimeUnit::Microsecond,
                    Some("UTC".into()),
                ),
                true,
            ),
        ]));
        let formats = Formats {
            csv: false,
            parquet: true,
            xlsx: false,
        };
        let mut b = TableBuilder::new(schema, &types[1], formats, CsvDialect::Plain);
        // Item 0 has no grant, item 1 two, the second with a NUL.
        b.end_item();
        b.text(Some("x"));
        b.timestamp(Some(PG_EPOCH_MICROS + 5));
        b.end_row();
        b.text(Some("a\0b"));
        b.timestamp(None);
        b.end_row();
        b.end_item();
        let batch = b.finish();
        let mut enc = RowEncoder::new(Table::Grants, &types);
        enc.next_item = 10;
        let mut out = Vec::new();
        enc.encode(&batch, &mut out).unwrap();
        let mut want = Vec::new();
        let field = |w: &mut Vec<u8>, b: &[u8]| {
            w.extend_from_slice(&(b.len() as i32).to_be_bytes());
            w.extend_from_slice(b);
        };
        for (ord, (text, time)) in [("x", Some(5i64)), ("a\u{fffd}b", None)].iter().enumerate() {
            want.extend_from_slice(&7i16.to_be_bytes());
            field(&mut want, &1i16.to_be_bytes());
            field(&mut want, &11u64.to_be_bytes());
            field(&mut want, &(ord as u64).to_be_bytes());
            want.extend_from_slice(&NULL);
            field(&mut want, text.as_bytes());
            match time {
                Some(t) => field(&mut want, &t.to_be_bytes()),
                None => want.extend_from_slice(&NULL),
            }
            want.extend_from_slice(&NULL);
        }
        assert_eq!(out, want);
        assert_eq!((enc.next_item, enc.next_ord, enc.nul_replaced), (12, 2, 1));
    }
}
