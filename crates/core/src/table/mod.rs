//! Column batches: the unit that moves from the flattening workers to the writers.
//!
//! A worker fills one [`TableBuilder`] per table for a whole batch of items, cell by cell in
//! column order. The builder encodes each cell at once into what the enabled formats need: CSV
//! bytes and/or Arrow column builders. [`TableBuilder::finish`] hands out a [`ColumnBatch`];
//! writers then only copy bytes or encode pages, so the parallel part of the work is as large
//! as it can be.

pub mod csv_text;
mod text_column;

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::schema::ColumnType;
use crate::timestamp::write_timestamp;
pub use csv_text::CsvDialect;
use text_column::TextColumn;

/// Which encodings a run produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// CSV files, from the CSV bytes each batch carries.
    pub csv: bool,
    /// Parquet files, from the Arrow columns.
    pub parquet: bool,
    /// Excel workbooks, written from the same Arrow columns as Parquet.
    pub xlsx: bool,
}

impl Formats {
    /// Whether batches carry Arrow columns (for Parquet and xlsx).
    pub fn arrow(self) -> bool {
        self.parquet || self.xlsx
    }
}

/// One table's rows from one batch of items.
#[derive(Debug)]
pub struct ColumnBatch {
    /// Rows in the batch (the same in `csv` and `arrow`).
    pub rows: usize,
    /// CSV records (no header), when CSV is written.
    pub csv: Vec<u8>,
    /// The Arrow columns, when Parquet or xlsx is written.
    pub arrow: Option<RecordBatch>,
    /// For each item of the batch, the number of this table's rows once its rows were pushed
    /// ([`TableBuilder::end_item`]), in item order: which item a row came from, for the
    /// current-state merges (the last item of a repeated `user_id` wins). Empty when the rows
    /// were not built from items, as when read back from a file.
    pub item_ends: Vec<u32>,
}

enum ColumnBuilder {
    Text(TextColumn),
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn new(column_type: ColumnType) -> ColumnBuilder {
        match column_type {
            ColumnType::String | ColumnType::Json => {
                ColumnBuilder::Text(TextColumn::with_capacity(0, 0))
            }
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::new()),
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::new()),
            ColumnType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Finishes the array and starts the next one with room for as much again, so batches
    /// after the first fill their buffers without reallocating and copying.
    fn finish(&mut self) -> ArrayRef {
        fn room(n: usize) -> usize {
            n + n / 8 + 16
        }
        match self {
            ColumnBuilder::Text(b) => {
                let (rows, bytes) = (b.len(), b.value_bytes());
                b.finish(room(rows), room(bytes))
            }
            ColumnBuilder::Boolean(b) => {
                let array = b.finish();
                *b = BooleanBuilder::with_capacity(room(array.len()));
                Arc::new(array)
            }
            ColumnBuilder::Int64(b) => {
                let array = b.finish();
                *b = Int64Builder::with_capacity(room(array.len()));
                Arc::new(array)
            }
            ColumnBuilder::Float64(b) => {
                let array = b.finish();
                *b = Float64Builder::with_capacity(room(array.len()));
                Arc::new(array)
            }
            ColumnBuilder::Date(b) => {
                let array = b.finish();
                *b = Date32Builder::with_capacity(room(array.len()));
                Arc::new(array)
            }
            ColumnBuilder::Timestamp(b) => {
                let array = b.finish().with_timezone("UTC");
                *b = TimestampMicrosecondBuilder::with_capacity(room(array.len()))
                    .with_timezone("UTC");
                Arc::new(array)
            }
        }
    }
}

/// Builds one table's [`ColumnBatch`], one cell at a time in column order.
///
/// Cells must be pushed for every column of a row, in schema order, then [`end_row`] called.
/// A push whose type does not match the column is a programming error and panics in debug
/// builds; input can never cause one, because the flatteners decide the types.
///
/// [`end_row`]: TableBuilder::end_row
pub struct TableBuilder {
    schema: SchemaRef,
    dialect: CsvDialect,
    csv_enabled: bool,
    csv: Vec<u8>,
    columns: Option<Vec<ColumnBuilder>>,
    column: usize,
    rows: usize,
    /// `rows` at the end of each item since the last take (see [`ColumnBatch::item_ends`]).
    item_ends: Vec<u32>,
    /// CSV cells the postgres dialect changed (NUL replaced) since the last take.
    nul_replaced: u64,
}

impl TableBuilder {
    /// A builder for `schema`, encoding what `formats` asks for.
    pub fn new(
        schema: SchemaRef,
        types: &[ColumnType],
        formats: Formats,
        dialect: CsvDialect,
    ) -> Self {
        let columns = formats
            .arrow()
            .then(|| types.iter().map(|&t| ColumnBuilder::new(t)).collect());
        TableBuilder {
            schema,
            dialect,
            csv_enabled: formats.csv,
            csv: Vec::new(),
            columns,
            column: 0,
            rows: 0,
            item_ends: Vec::new(),
            nul_replaced: 0,
        }
    }

    /// Whether this builder writes `schema` with `formats` and `dialect` (so it can be reused).
    pub fn fits(&self, schema: &SchemaRef, formats: Formats, dialect: CsvDialect) -> bool {
        Arc::ptr_eq(&self.schema, schema)
            && self.dialect == dialect
            && self.csv_enabled == formats.csv
            && self.columns.is_some() == formats.arrow()
    }

    /// How many CSV cells the postgres dialect changed (a NUL replaced) since the last call;
    /// the count starts again from zero.
    pub fn take_nul_replaced(&mut self) -> u64 {
        std::mem::take(&mut self.nul_replaced)
    }

    /// Rows pushed since the last finish.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn separate(&mut self) {
        if self.csv_enabled && self.column > 0 {
            self.csv.push(b',');
        }
    }

    fn builder(&mut self) -> Option<&mut ColumnBuilder> {
        let column = self.column;
        self.columns.as_mut().map(|c| &mut c[column])
    }

    /// Pushes a text cell (string or JSON columns).
    pub fn text(&mut self, value: Option<&str>) {
        self.separate();
        if self.csv_enabled
            && let Some(v) = value
        {
            if self.dialect == CsvDialect::Postgres && csv_text::has_nul(v) {
                self.nul_replaced += 1;
            }
            csv_text::push_text_cell(&mut self.csv, v, self.dialect);
        }
        if let Some(ColumnBuilder::Text(b)) = self.builder() {
            b.append(value);
        } else {
            debug_assert!(self.columns.is_none(), "column {} is not text", self.column);
        }
        self.column += 1;
    }

    /// Pushes a text cell that [`csv_text::is_plain`] approved: the CSV bytes are copied
    /// without looking at them again.
    pub(crate) fn text_plain(&mut self, value: &str) {
        debug_assert!(
            csv_text::is_plain(value, self.dialect),
            "{value:?} is not plain"
        );
        self.separate();
        if self.csv_enabled {
            csv_text::append_bytes(&mut self.csv, value.as_bytes());
        }
        if let Some(ColumnBuilder::Text(b)) = self.builder() {
            b.append(Some(value));
        } else {
            debug_assert!(self.columns.is_none(), "column {} is not text", self.column);
        }
        self.column += 1;
    }

    /// Pushes a text cell that repeats on many rows: `plain` says whether
    /// [`csv_text::is_plain`] approved it, so it is checked once per item, not once per row.
    pub(crate) fn text_repeated(&mut self, value: &str, plain: bool) {
        if plain {
            self.text_plain(value)
        } else {
            self.text(Some(value))
        }
    }

    /// The CSV dialect the builder writes.
    pub fn dialect(&self) -> CsvDialect {
        self.dialect
    }

    /// Pushes a boolean cell.
    pub fn boolean(&mut self, value: Option<bool>) {
        self.separate();
        if self.csv_enabled
            && let Some(v) = value
        {
            self.csv
                .extend_from_slice(if v { b"true" } else { b"false" });
        }
        if let Some(ColumnBuilder::Boolean(b)) = self.builder() {
            b.append_option(value);
        } else {
            debug_assert!(
                self.columns.is_none(),
                "column {} is not boolean",
                self.column
            );
        }
        self.column += 1;
    }

    /// Pushes an int64 cell.
    pub fn int64(&mut self, value: Option<i64>) {
        self.separate();
        if self.csv_enabled
            && let Some(v) = value
        {
            // Not `append_bytes`: its wide reloads of itoa's freshly stored digits would stall.
            self.csv
                .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
        if let Some(ColumnBuilder::Int64(b)) = self.builder() {
            b.append_option(value);
        } else {
            debug_assert!(
                self.columns.is_none(),
                "column {} is not int64",
                self.column
            );
        }
        self.column += 1;
    }

    /// Pushes a float64 cell; `text` is the value as written in the source, which the CSV keeps.
    pub fn float64(&mut self, value: Option<(f64, &str)>) {
        self.separate();
        if self.csv_enabled
            && let Some((_, text)) = value
        {
            csv_text::append_bytes(&mut self.csv, text.as_bytes());
        }
        if let Some(ColumnBuilder::Float64(b)) = self.builder() {
            b.append_option(value.map(|(v, _)| v));
        } else {
            debug_assert!(
                self.columns.is_none(),
                "column {} is not float64",
                self.column
            );
        }
        self.column += 1;
    }

    /// Pushes a date cell: days since the epoch and the `YYYY-MM-DD` text.
    pub fn date(&mut self, value: Option<(i32, &str)>) {
        self.separate();
        if self.csv_enabled
            && let Some((_, text)) = value
        {
            csv_text::append_bytes(&mut self.csv, text.as_bytes());
        }
        if let Some(ColumnBuilder::Date(b)) = self.builder() {
            b.append_option(value.map(|(v, _)| v));
        } else {
            debug_assert!(
                self.columns.is_none(),
                "column {} is not a date",
                self.column
            );
        }
        self.column += 1;
    }

    /// Pushes a timestamp cell in UTC microseconds.
    pub fn timestamp(&mut self, micros: Option<i64>) {
        self.separate();
        if self.csv_enabled
            && let Some(v) = micros
        {
            write_timestamp(&mut self.csv, v);
        }
        if let Some(ColumnBuilder::Timestamp(b)) = self.builder() {
            b.append_option(micros);
        } else {
            debug_assert!(
                self.columns.is_none(),
                "column {} is not a timestamp",
                self.column
            );
        }
        self.column += 1;
    }

    /// Ends the current row.
    pub fn end_row(&mut self) {
        debug_assert_eq!(
            self.column,
            self.schema.fields().len(),
            "a row must fill every column"
        );
        if self.csv_enabled {
            self.csv.extend_from_slice(self.dialect.line_end());
        }
        self.column = 0;
        self.rows += 1;
    }

    /// Ends the current item: its rows (none or more) are the ones since the last item's end
    /// (see [`ColumnBatch::item_ends`]).
    pub fn end_item(&mut self) {
        self.item_ends.push(self.rows as u32);
    }

    /// Hands out the rows built so far and starts afresh, with buffers sized like this batch.
    pub fn finish(&mut self) -> ColumnBatch {
        let arrow = self.columns.as_mut().map(|columns| {
            let arrays: Vec<ArrayRef> = columns.iter_mut().map(ColumnBuilder::finish).collect();
            // The builders follow the schema's types by construction, so this only fails on a
            // programming error such as a row that was not ended.
            RecordBatch::try_new(self.schema.clone(), arrays)
                .expect("column builders match the schema")
        });
        let next = self.csv.len() + self.csv.len() / 8;
        let csv = std::mem::replace(&mut self.csv, Vec::with_capacity(next));
        let rows = std::mem::replace(&mut self.rows, 0);
        let item_ends = std::mem::take(&mut self.item_ends);
        ColumnBatch {
            rows,
            csv,
            arrow,
            item_ends,
        }
    }
}
