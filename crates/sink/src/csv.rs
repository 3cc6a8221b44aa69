//! The CSV writer: a header, then the CSV bytes the workers already formatted.
//!
//! With the Excel dialect the file starts with a UTF-8 byte-order mark (so Excel reads it as
//! UTF-8) and a table longer than a worksheet is split into numbered files, each with the
//! header, so that no row is silently cut off when it is opened.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::{CreateFile, TableWriter, WriteError, WrittenFile};
use zephr_core::table::ColumnBatch;
use zephr_core::table::csv_text::{CsvDialect, push_text_cell};
use zephr_dest::StagedFile;

/// Rows a worksheet holds below its header row (Excel's limit is 1,048,576 rows in all).
pub const EXCEL_MAX_DATA_ROWS: u64 = 1_048_575;

/// A part being written: the buffered staged file, its final name and its rows so far.
struct Open {
    out: BufWriter<Box<dyn StagedFile>>,
    name: String,
    rows: u64,
}

/// Writes one table as CSV.
pub struct CsvWriter {
    header: Vec<u8>,
    dialect: CsvDialect,
    create: CreateFile,
    max_rows_per_file: Option<u64>,
    current: Option<Open>,
    done: Vec<WrittenFile>,
}

impl CsvWriter {
    /// A writer whose header names `columns`. `create(part)` opens part number `part`
    /// (0 for the first file). Files are split after `max_rows_per_file` rows when given.
    pub fn new(
        columns: &[&str],
        dialect: CsvDialect,
        max_rows_per_file: Option<u64>,
        create: CreateFile,
    ) -> Result<Self, WriteError> {
        let mut header = Vec::new();
        if dialect == CsvDialect::Excel {
            header.extend_from_slice("\u{feff}".as_bytes());
        }
        for (i, name) in columns.iter().enumerate() {
            if i > 0 {
                header.push(b',');
            }
            // Names come from the source too (state events), so the Excel guard applies.
            push_text_cell(&mut header, name, dialect);
        }
        header.extend_from_slice(dialect.line_end());
        let mut writer = CsvWriter {
            header,
            dialect,
            create,
            max_rows_per_file,
            current: None,
            done: Vec::new(),
        };
        writer.open_part()?;
        Ok(writer)
    }

    fn open_part(&mut self) -> Result<(), WriteError> {
        let part = self.done.len() + usize::from(self.current.is_some());
        let (file, name) = (self.create)(part)?;
        let mut out = BufWriter::with_capacity(super::FILE_BUFFER_BYTES, file);
        out.write_all(&self.header)
            .map_err(|source| WriteError::Io {
                path: PathBuf::from(&name),
                source,
            })?;
        if let Some(previous) = self.current.replace(Open { out, name, rows: 0 }) {
            self.done.push(close(previous)?);
        }
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8], rows: u64) -> Result<(), WriteError> {
        let open = self
            .current
            .as_mut()
            .expect("a part is always open until finish");
        open.out.write_all(bytes).map_err(|source| WriteError::Io {
            path: PathBuf::from(&open.name),
            source,
        })?;
        open.rows += rows;
        Ok(())
    }
}

fn close(open: Open) -> Result<WrittenFile, WriteError> {
    super::finish_file(open.out, open.rows, &open.name)
}

impl TableWriter for CsvWriter {
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
        let Some(limit) = self.max_rows_per_file else {
            return self.write_bytes(&batch.csv, batch.rows as u64);
        };
        // Split on record boundaries. Records may hold quoted line breaks, so walk them with
        // the quote state rather than counting newlines.
        let line_end = self.dialect.line_end();
        let mut rest = &batch.csv[..];
        while !rest.is_empty() {
            let room = limit - self.current.as_ref().map_or(0, |open| open.rows);
            if room == 0 {
                self.open_part()?;
                continue;
            }
            let (take, rows) = split_records(rest, room, line_end);
            self.write_bytes(&rest[..take], rows)?;
            rest = &rest[take..];
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        if let Some(current) = self.current.take() {
            self.done.push(close(current)?);
        }
        Ok(std::mem::take(&mut self.done))
    }
}

/// The byte length of the first `max_rows` records of `csv` and how many records that is.
fn split_records(csv: &[u8], max_rows: u64, line_end: &[u8]) -> (usize, u64) {
    let mut rows = 0;
    let mut in_quotes = false;
    let last = *line_end.last().expect("line ends are not empty");
    for (i, &b) in csv.iter().enumerate() {
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == last && !in_quotes {
            rows += 1;
            if rows == max_rows {
                return (i + 1, rows);
            }
        }
    }
    (csv.len(), rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_records_not_on_quoted_newlines() {
        let csv = b"a,\"x\ny\"\nb,c\nd,e\n";
        assert_eq!(split_records(csv, 1, b"\n"), (8, 1));
        assert_eq!(split_records(csv, 2, b"\n"), (12, 2));
        assert_eq!(split_records(csv, 9, b"\n"), (csv.len(), 3));
        assert_eq!(split_records(b"a\r\nb\r\n", 1, b"\r\n"), (3, 1));
    }
}
