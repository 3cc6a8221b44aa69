//! The xlsx writer: one Excel workbook per table, written from the batches' Arrow columns.
//!
//! Spreadsheets guess the type of every CSV cell and so damage ids (`00012345`), long numbers
//! and text that looks like a formula or a date. A workbook carries the types instead:
//! - string and JSON columns are text cells, always (a value starting with `=` stays text:
//!   formulas are never written);
//! - timestamps are date-time cells (the UTC instant) shown as `yyyy-mm-dd hh:mm:ss`, with
//!   `.000` when the value has a fraction of a second; dates are date cells `yyyy-mm-dd`.
//!   Instants Excel cannot show are ISO-8601 text: before 1900-03-01, and from the instant
//!   that rounds (to the millisecond Excel shows) past 9999-12-31 23:59:59.999, so the
//!   "never expires" `9999-12-31T23:59:59.999999Z` is text, not 10000-01-01;
//! - booleans are boolean cells; int64 values of at most 15 digits are numbers (shown with
//!   every digit), longer ones text: a spreadsheet keeps 15 significant digits, and
//!   LibreOffice shows and saves 9007199254740993 as 9007199254740990; float64 values are
//!   numbers;
//! - NULL is an empty cell, and so is the empty string (Excel keeps no empty text cell; the
//!   CSV and Parquet tell the two apart); the header row is bold, frozen, with an autofilter.
//!
//! The worksheets are in rust_xlsxwriter's constant-memory mode: each row goes to a temporary
//! file as soon as the next starts, so memory stays flat whatever the table's length. A table
//! longer than a worksheet (1,048,576 rows with the header) goes on in sheets `users (2)`,
//! `users (3)`, ... of the same workbook, each with the header. Excel holds at most 32,767
//! characters (UTF-16 units) in a cell: a longer text is cut there (the CSV and Parquet keep it whole).
//!
//! The zip container is written at the end, streamed into any `Write + Send`
//! (`XlsxBook::finish_into`): the output needs no seeking, so it can be a staged file or an
//! upload as well as a local file.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};

use super::{CreateFile, TableWriter, WriteError, WrittenFile};
use zephr_core::table::ColumnBatch;
use zephr_core::timestamp::write_timestamp;

/// Rows of an Excel worksheet, the header row included.
pub const EXCEL_MAX_ROWS: u32 = 1_048_576;

/// The most characters Excel keeps in one cell.
pub(crate) const EXCEL_MAX_CHARS: usize = 32_767;

/// The largest integer written as a number cell: the largest of 15 digits, the significant
/// digits a spreadsheet keeps (Excel and LibreOffice show and save a 16th digit as 0). Longer
/// int64 values are written as text. (Every integer up to 2^53 would fit the double a cell
/// holds; the display and a re-save would not keep it.)
pub(crate) const MAX_NUMBER_CELL_INTEGER: i64 = 999_999_999_999_999;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// Excel's serial day number of 1970-01-01 (in the 1900 date system).
const EPOCH_SERIAL: i64 = 25_569;

/// Days from 1970-01-01 to 1900-03-01, the first day whose serial number Excel shows right
/// (its calendar has a 29 February 1900 that never was).
const FIRST_DAY: i64 = -25_508;

/// Days from 1970-01-01 to 10000-01-01, the first day Excel cannot show.
const END_DAY: i64 = 2_932_897;

/// The first instant written as text at the end of time: 9999-12-31 23:59:59.9995, which
/// Excel's millisecond display rounds up to 10000-01-01 (and whose double is that serial).
const END_MICROS: i64 = END_DAY * DAY_MICROS - 500;

/// Widest a column is made, in characters; the autofilter arrow needs about two more.
const MAX_WIDTH: usize = 60;

/// How workbooks are laid out.
#[derive(Debug, Clone, Copy)]
pub struct XlsxOptions {
    /// Rows per worksheet, the header included (at least 2). Excel's limit unless a test
    /// wants sheets split early.
    pub max_rows_per_sheet: u32,
}

impl Default for XlsxOptions {
    fn default() -> Self {
        XlsxOptions {
            max_rows_per_sheet: EXCEL_MAX_ROWS,
        }
    }
}

/// The cell formats a workbook uses.
struct Formats {
    header: Format,
    datetime: Format,
    datetime_fraction: Format,
    date: Format,
    integer: Format,
}

/// One table's workbook being filled, independent of where it ends up.
pub(crate) struct XlsxBook {
    name: String,
    schema: SchemaRef,
    workbook: Workbook,
    formats: Formats,
    max_rows: u32,
    /// Worksheets so far; the last one is being filled.
    sheets: usize,
    /// The next row of the current worksheet.
    row: u32,
    /// Data rows written in all.
    rows: u64,
    /// Per column, the widest value seen in the current sheet (in bytes, a cheap bound).
    widths: Vec<usize>,
    /// Reused for timestamps written as text.
    text: Vec<u8>,
}

impl XlsxBook {
    /// A workbook for table `name` with `schema`'s columns, its first sheet started.
    pub fn new(name: &str, schema: SchemaRef, opts: XlsxOptions) -> Result<Self, XlsxError> {
        let formats = Formats {
            header: Format::new().set_bold(),
            datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
            datetime_fraction: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss.000"),
            date: Format::new().set_num_format("yyyy-mm-dd"),
            integer: Format::new().set_num_format("0"),
        };
        let widths = schema.fields().iter().map(|f| f.name().len()).collect();
        let mut book = XlsxBook {
            name: name.to_string(),
            schema,
            workbook: Workbook::new(),
            formats,
            max_rows: opts.max_rows_per_sheet.clamp(2, EXCEL_MAX_ROWS),
            sheets: 0,
            row: 0,
            rows: 0,
            widths,
            text: Vec::new(),
        };
        book.start_sheet()?;
        Ok(book)
    }

    /// Data rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn sheet(&mut self) -> Result<&mut Worksheet, XlsxError> {
        self.workbook.worksheet_from_index(self.sheets - 1)
    }

    /// Adds the next worksheet and writes its header row.
    fn start_sheet(&mut self) -> Result<(), XlsxError> {
        self.sheets += 1;
        let name = match self.sheets {
            1 => self.name.clone(),
            n => format!("{} ({n})", self.name),
        };
        let sheet = self.workbook.add_worksheet_with_constant_memory()?;
        sheet.set_name(&name)?;
        sheet.set_freeze_panes(1, 0)?;
        for (col, field) in self.schema.fields().iter().enumerate() {
            sheet.write_string_with_format(0, col as u16, field.name(), &self.formats.header)?;
        }
        self.row = 1;
        for (width, field) in self.widths.iter_mut().zip(self.schema.fields()) {
            *width = field.name().len();
        }
        Ok(())
    }

    /// Sets the current sheet's autofilter and column widths, once its rows are all written.
    fn end_sheet(&mut self) -> Result<(), XlsxError> {
        let last_col = self.schema.fields().len().saturating_sub(1) as u16;
        let last_row = self.row - 1;
        let widths: Vec<f64> = self
            .schema
            .fields()
            .iter()
            .zip(&self.widths)
            .map(|(field, &seen)| {
                let least = match field.data_type() {
                    DataType::Timestamp(..) => 23,
                    DataType::Date32 => 10,
                    _ => 6,
                };
                // Two more for the autofilter's arrow in the header.
                (seen.max(least) + 2).min(MAX_WIDTH) as f64
            })
            .collect();
        let sheet = self.sheet()?;
        if !widths.is_empty() {
            sheet.autofilter(0, 0, last_row, last_col)?;
        }
        for (col, width) in widths.into_iter().enumerate() {
            sheet.set_column_width(col as u16, width)?;
        }
        Ok(())
    }

    /// Appends the rows of `batch`, starting new sheets as they fill.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), XlsxError> {
        let columns: Vec<Column<'_>> = batch
            .columns()
            .iter()
            .map(|array| Column::of(array.as_ref()))
            .collect();
        for index in 0..batch.num_rows() {
            if self.row >= self.max_rows {
                self.end_sheet()?;
                self.start_sheet()?;
            }
            let row = self.row;
            for (col, column) in columns.iter().enumerate() {
                self.cell(row, col, column, index)?;
            }
            self.row += 1;
            self.rows += 1;
        }
        Ok(())
    }

    /// Writes one cell (nothing for NULL).
    fn cell(
        &mut self,
        row: u32,
        col: usize,
        column: &Column<'_>,
        index: usize,
    ) -> Result<(), XlsxError> {
        let c = col as u16;
        let sheet_index = self.sheets - 1;
        let sheet = self.workbook.worksheet_from_index(sheet_index)?;
        let formats = &self.formats;
        let width = &mut self.widths[col];
        match column {
            Column::Text(a) => {
                if a.is_valid(index) {
                    let value = cut_to_cell(a.value(index));
                    *width = (*width).max(value.len());
                    sheet.write_string(row, c, value)?;
                }
            }
            Column::Boolean(a) => {
                if a.is_valid(index) {
                    sheet.write_boolean(row, c, a.value(index))?;
                }
            }
            Column::Int64(a) => {
                if a.is_valid(index) {
                    let v = a.value(index);
                    let digits = itoa::Buffer::new().format(v).len();
                    *width = (*width).max(digits);
                    if (-MAX_NUMBER_CELL_INTEGER..=MAX_NUMBER_CELL_INTEGER).contains(&v) {
                        sheet.write_number_with_format(row, c, v as f64, &formats.integer)?;
                    } else {
                        sheet.write_string(row, c, itoa::Buffer::new().format(v))?;
                    }
                }
            }
            Column::Float64(a) => {
                if a.is_valid(index) {
                    *width = (*width).max(12);
                    sheet.write_number(row, c, a.value(index))?;
                }
            }
            Column::Date(a) => {
                if a.is_valid(index) {
                    let days = i64::from(a.value(index));
                    if (FIRST_DAY..END_DAY).contains(&days) {
                        let serial = (days + EPOCH_SERIAL) as f64;
                        sheet.write_number_with_format(row, c, serial, &formats.date)?;
                    } else {
                        self.text.clear();
                        write_timestamp(&mut self.text, days * DAY_MICROS);
                        let text = String::from_utf8_lossy(&self.text);
                        let date = text.split('T').next().unwrap_or_default();
                        sheet.write_string(row, c, date)?;
                    }
                }
            }
            Column::Timestamp(a) => {
                if a.is_valid(index) {
                    let micros = a.value(index);
                    match excel_serial(micros) {
                        Some(serial) => {
                            let format = if micros % 1_000_000 == 0 {
                                &formats.datetime
                            } else {
                                &formats.datetime_fraction
                            };
                            sheet.write_number_with_format(row, c, serial, format)?;
                        }
                        None => {
                            self.text.clear();
                            write_timestamp(&mut self.text, micros);
                            *width = (*width).max(self.text.len());
                            sheet.write_string(row, c, &*String::from_utf8_lossy(&self.text))?;
                        }
                    }
                }
            }
            Column::Other(data_type) => {
                return Err(XlsxError::ParameterError(format!(
                    "column {} of {} has type {data_type}, which the xlsx writer does not know",
                    col + 1,
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Closes the last sheet, assembles the workbook and streams it into `out`; returns the
    /// bytes written.
    pub(crate) fn finish_into<W: Write + Send>(mut self, out: W) -> Result<u64, XlsxError> {
        self.end_sheet()?;
        let mut counted = Counted {
            inner: out,
            bytes: 0,
        };
        self.workbook.save_to_writer(&mut counted)?;
        counted.flush()?;
        Ok(counted.bytes)
    }
}

/// A writer that counts the bytes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The Excel serial number (days since 1899-12-30, fraction of a day) of a UTC instant, or
/// `None` when Excel cannot show it: before 1900-03-01, or rounding (to the millisecond it
/// shows) to 10000-01-01 or later. Whole days and the time of day are converted apart, so
/// the double keeps microseconds (for today's dates; near year 9999 a double's step is
/// about 40 µs).
pub(crate) fn excel_serial(micros: i64) -> Option<f64> {
    let days = micros.div_euclid(DAY_MICROS);
    let time = micros.rem_euclid(DAY_MICROS);
    (days >= FIRST_DAY && micros < END_MICROS)
        .then(|| (days + EPOCH_SERIAL) as f64 + time as f64 / DAY_MICROS as f64)
}

/// `text` cut to the most characters a cell holds. Excel counts UTF-16 units (an emoji is
/// two), so that is what is counted here.
fn cut_to_cell(text: &str) -> &str {
    // No character takes more UTF-8 bytes than UTF-16 units: this many bytes always fit.
    if text.len() <= EXCEL_MAX_CHARS {
        return text;
    }
    let mut units = 0;
    for (at, c) in text.char_indices() {
        units += c.len_utf16();
        if units > EXCEL_MAX_CHARS {
            return &text[..at];
        }
    }
    text
}

/// A batch column, downcast once per batch.
enum Column<'a> {
    Text(&'a arrow_array::StringArray),
    Boolean(&'a arrow_array::BooleanArray),
    Int64(&'a arrow_array::PrimitiveArray<Int64Type>),
    Float64(&'a arrow_array::PrimitiveArray<Float64Type>),
    Date(&'a arrow_array::PrimitiveArray<Date32Type>),
    Timestamp(&'a arrow_array::PrimitiveArray<TimestampMicrosecondType>),
    Other(DataType),
}

impl<'a> Column<'a> {
    fn of(array: &'a dyn Array) -> Column<'a> {
        match array.data_type() {
            DataType::Utf8 => Column::Text(array.as_string::<i32>()),
            DataType::Boolean => Column::Boolean(array.as_boolean()),
            DataType::Int64 => Column::Int64(array.as_primitive()),
            DataType::Float64 => Column::Float64(array.as_primitive()),
            DataType::Date32 => Column::Date(array.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Column::Timestamp(array.as_primitive())
            }
            other => Column::Other(other.clone()),
        }
    }
}

/// Writes one table as an xlsx workbook (`XlsxBook`) into the file `create(0)` opens at
/// the end.
pub struct XlsxWriter {
    book: XlsxBook,
    create: CreateFile,
}

impl XlsxWriter {
    /// A writer of table `name` with `schema`'s columns.
    pub fn new(
        name: &str,
        schema: SchemaRef,
        opts: XlsxOptions,
        create: CreateFile,
    ) -> Result<Self, WriteError> {
        let book = XlsxBook::new(name, schema, opts).map_err(|source| WriteError::Xlsx {
            path: PathBuf::from(format!("{name}.xlsx")),
            source: Box::new(source),
        })?;
        Ok(XlsxWriter { book, create })
    }
}

impl TableWriter for XlsxWriter {
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
        let Some(arrow) = &batch.arrow else {
            return Ok(());
        };
        self.book.write(arrow).map_err(|source| WriteError::Xlsx {
            path: PathBuf::from(format!("{}.xlsx", self.book.name)),
            source: Box::new(source),
        })
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        let (staged, name) = (self.create)(0)?;
        let rows = self.book.rows();
        let mut out = BufWriter::with_capacity(super::FILE_BUFFER_BYTES, staged);
        self.book
            .finish_into(&mut out)
            .map_err(|source| WriteError::Xlsx {
                path: PathBuf::from(&name),
                source: Box::new(source),
            })?;
        Ok(vec![super::finish_file(out, rows, &name)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_excels() {
        assert_eq!(excel_serial(0), Some(25_569.0));
        // 2021-02-24T15:43:28Z: day 44251, 56,608 seconds into it.
        let serial = excel_serial(1_614_181_408_000_000).unwrap();
        assert!((serial - (44_251.0 + 56_608.0 / 86_400.0)).abs() < 1e-10);
        // A microsecond survives the round trip.
        let micros = 1_614_181_408_123_457;
        let back = (excel_serial(micros).unwrap() - 25_569.0) * DAY_MICROS as f64;
        assert_eq!(back.round() as i64, micros);
        // 1900-03-01 is serial 61; anything before, and from year 10000 on, is not shown.
        assert_eq!(excel_serial(FIRST_DAY * DAY_MICROS), Some(61.0));
        assert_eq!(excel_serial(FIRST_DAY * DAY_MICROS - 1), None);
        // 9999-12-31 23:59:59.999 is the last instant Excel shows; .9995 rounds past it.
        let last = END_DAY * DAY_MICROS - 1_000;
        assert!(excel_serial(last).is_some_and(|s| s < 2_958_466.0));
        assert!(excel_serial(END_DAY * DAY_MICROS - 501).is_some());
        assert_eq!(excel_serial(END_DAY * DAY_MICROS - 500), None);
        assert_eq!(excel_serial(END_DAY * DAY_MICROS - 1), None);
        assert_eq!(excel_serial(END_DAY * DAY_MICROS), None);
        assert_eq!(excel_serial(i64::MIN), None);
        assert_eq!(excel_serial(i64::MAX), None);
    }

    #[test]
    fn text_is_cut_at_excels_limit_on_a_character() {
        let short = "é".repeat(EXCEL_MAX_CHARS);
        assert_eq!(cut_to_cell(&short), short);
        let long = "é".repeat(EXCEL_MAX_CHARS + 3);
        assert_eq!(cut_to_cell(&long).chars().count(), EXCEL_MAX_CHARS);
        // An emoji is two units: half as many fit, and none is cut in two.
        let emoji = "🦀".repeat(EXCEL_MAX_CHARS);
        assert_eq!(cut_to_cell(&emoji).chars().count(), EXCEL_MAX_CHARS / 2);
    }
}
