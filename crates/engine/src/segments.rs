//! Assembling a table from the segments of a fetch (see [`super::resume`]).
//!
//! CSV segments are appended byte for byte, each without its header line after the first.
//! Parquet segments are joined by copying their encoded row groups into one file with one
//! footer (`copy_row_groups`); only when the output is split into parts are they read back
//! batch by batch and written again through the final [`TableWriter`] (`concat_parquet`).
//! Other files (rejects, raw responses) are plain concatenations.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use zephr_core::table::ColumnBatch;
use zephr_sink::{TableWriter, WriteError};

/// Rows read back from a Parquet segment at a time.
pub(crate) const READ_BATCH_ROWS: usize = 8192;

/// A segment could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Reading a segment or writing the result failed.
    #[error("cannot assemble {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A Parquet segment is unreadable or does not have the table's columns.
    #[error("cannot read the fetch segment {}: {problem}", path.display())]
    Segment {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Writing the result failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends CSV `parts` to `out`: the first whole, the others without their header line,
/// which must equal the first's. Returns the bytes written.
pub(crate) fn concat_csv(
    parts: &[PathBuf],
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<u64, MergeError> {
    let mut header: Option<Vec<u8>> = None;
    let mut written = 0u64;
    for part in parts {
        let file = File::open(part).map_err(io_error(part))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(part))?;
        match &header {
            None => {
                out.write_all(&line).map_err(io_error(out_path))?;
                written += line.len() as u64;
                header = Some(line);
            }
            Some(first) if *first == line => {}
            Some(_) => {
                return Err(MergeError::Segment {
                    path: part.clone(),
                    problem: "its header differs from the first segment's".into(),
                });
            }
        }
        written += copy(&mut reader, out, part, out_path)?;
    }
    Ok(written)
}

/// Writes the records of CSV `parts` (each without its header line) through `writer`, in
/// chunks that end on record boundaries, each with its record count, so that a writer that
/// splits files can split them. Quoted line breaks do not end records. Returns the records.
pub(crate) fn feed_csv(parts: &[PathBuf], writer: &mut dyn TableWriter) -> Result<u64, MergeError> {
    const CHUNK: usize = 1 << 20;
    let mut total = 0u64;
    for part in parts {
        let file = File::open(part).map_err(io_error(part))?;
        let mut reader = BufReader::with_capacity(CHUNK, file);
        let mut header = Vec::new();
        reader
            .read_until(b'\n', &mut header)
            .map_err(io_error(part))?;
        let mut pending: Vec<u8> = Vec::with_capacity(2 * CHUNK);
        let (mut in_quotes, mut scanned, mut end, mut rows) = (false, 0usize, 0usize, 0usize);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(io_error(part)(source)),
            };
            pending.extend_from_slice(&buf[..n]);
            for (i, &b) in pending.iter().enumerate().skip(scanned) {
                if b == b'"' {
                    in_quotes = !in_quotes;
                } else if b == b'\n' && !in_quotes {
                    rows += 1;
                    end = i + 1;
                }
            }
            scanned = pending.len();
            if (end >= CHUNK || n == 0) && end > 0 {
                let rest = pending.split_off(end);
                writer.write(&ColumnBatch {
                    rows,
                    csv: std::mem::replace(&mut pending, rest),
                    arrow: None,
                    item_ends: Vec::new(),
                })?;
                total += rows as u64;
                scanned -= end;
                (end, rows) = (0, 0);
            }
            if n == 0 {
                if !pending.is_empty() {
                    return Err(MergeError::Segment {
                        path: part.clone(),
                        problem: "it ends inside a record".into(),
                    });
                }
                break;
            }
        }
    }
    Ok(total)
}

/// Appends `parts` to `out` byte for byte. Returns the bytes written.
pub(crate) fn concat_bytes(
    parts: &[PathBuf],
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<u64, MergeError> {
    let mut written = 0;
    for part in parts {
        let mut file = File::open(part).map_err(io_error(part))?;
        written += copy(&mut file, out, part, out_path)?;
    }
    Ok(written)
}

fn copy(
    from: &mut dyn Read,
    to: &mut dyn Write,
    from_path: &Path,
    to_path: &Path,
) -> Result<u64, MergeError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(io_error(from_path)(source)),
        };
        to.write_all(&buf[..n]).map_err(io_error(to_path))?;
        total += n as u64;
    }
}

/// Reads every Parquet part in order and writes its rows through `writer`, as columns of
/// `schema` (the table's own, so the result is typed exactly like a one-piece run). Returns
/// the rows copied; the caller finishes the writer.
pub(crate) fn concat_parquet(
    parts: &[PathBuf],
    schema: &SchemaRef,
    writer: &mut dyn TableWriter,
) -> Result<u64, MergeError> {
    let mut rows = 0u64;
    for part in parts {
        let bad = |problem: String| MergeError::Segment {
            path: part.clone(),
            problem,
        };
        let file = File::open(part).map_err(io_error(part))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(e.to_string()))?
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            // Same columns, but metadata read back from the file may differ in details such
            // as field metadata; the table's own schema is what the writer checks against.
            let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(|e| bad(format!("its columns do not match the table: {e}")))?;
            rows += batch.num_rows() as u64;
            writer.write(&ColumnBatch {
                rows: batch.num_rows(),
                csv: Vec::new(),
                arrow: Some(batch),
                item_ends: Vec::new(),
            })?;
        }
    }
    Ok(rows)
}

/// Joins Parquet segments into `out` by copying their row groups as they are: the column
/// chunks are already encoded and compressed, so nothing is decoded or compressed again and
/// the join costs little more than copying bytes (the approach of parquet-rs's
/// `parquet-concat`). Every segment must have the first one's schema. The first segment's
/// key-value metadata (the Arrow schema, so readers see `Timestamp(µs, "UTC")`) is kept.
/// Returns the rows copied.
/// `out` is returned flushed, for the caller to finish.
pub(crate) fn copy_row_groups<W: Write + Send>(
    parts: &[PathBuf],
    out: W,
    out_path: &Path,
) -> Result<(u64, W), MergeError> {
    let write_error = |e: parquet::errors::ParquetError| MergeError::Io {
        path: out_path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    };
    let mut inputs = Vec::with_capacity(parts.len());
    for part in parts {
        let file = File::open(part).map_err(io_error(part))?;
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)
            .map_err(|e| MergeError::Segment {
                path: part.clone(),
                problem: e.to_string(),
            })?;
        inputs.push((part, file, metadata));
    }
    let Some((_, _, first)) = inputs.first() else {
        return Ok((0, out));
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    let properties = WriterProperties::builder()
        .set_key_value_metadata(first.file_metadata().key_value_metadata().cloned())
        .set_created_by(
            first
                .file_metadata()
                .created_by()
                .unwrap_or_default()
                .to_string(),
        )
        .build();
    let mut writer = SerializedFileWriter::new(
        BufWriter::with_capacity(1 << 20, out),
        schema,
        Arc::new(properties),
    )
    .map_err(write_error)?;
    let mut rows = 0u64;
    for (part, file, metadata) in &inputs {
        if metadata.file_metadata().schema() != first.file_metadata().schema() {
            return Err(MergeError::Segment {
                path: (*part).clone(),
                problem: "its schema differs from the first segment's".into(),
            });
        }
        // parquet 59 (the version deltalake-core builds on) keeps the two page indexes apart.
        let (column_indexes, offset_indexes) = (metadata.column_index(), metadata.offset_index());
        for (rg_index, row_group) in metadata.row_groups().iter().enumerate() {
            let mut rg_out = writer.next_row_group().map_err(write_error)?;
            for (col_index, column) in row_group.columns().iter().enumerate() {
                let result = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: row_group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: column_indexes
                        .and_then(|p| p.get(rg_index)?.get(col_index))
                        .cloned(),
                    offset_index: offset_indexes
                        .and_then(|p| p.get(rg_index)?.get(col_index))
                        .cloned(),
                };
                rg_out.append_column(file, result).map_err(write_error)?;
            }
            rg_out.close().map_err(write_error)?;
            rows += row_group.num_rows() as u64;
        }
    }
    let buffered = writer.into_inner().map_err(write_error)?;
    let out = buffered
        .into_inner()
        .map_err(|e| io_error(out_path)(e.into_error()))?;
    Ok((rows, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

    use zephr_sink::parquet::{ParquetOptions, ParquetWriter};

    #[test]
    fn csv_parts_lose_repeated_headers() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        let c = dir.path().join("c.csv");
        std::fs::write(&a, "x,y\n1,\"a\nb\"\n").unwrap();
        std::fs::write(&b, "x,y\n").unwrap();
        std::fs::write(&c, "x,y\n2,\n").unwrap();
        let mut out = Vec::new();
        let n = concat_csv(&[a.clone(), b, c], &mut out, Path::new("out")).unwrap();
        assert_eq!(out, b"x,y\n1,\"a\nb\"\n2,\n");
        assert_eq!(n, out.len() as u64);

        let d = dir.path().join("d.csv");
        std::fs::write(&d, "x,z\n").unwrap();
        let e = concat_csv(&[a, d], &mut Vec::new(), Path::new("out")).unwrap_err();
        assert!(e.to_string().contains("header differs"), "{e}");
    }

    /// Collects what a writer is given.
    struct Collect(Vec<(usize, Vec<u8>)>);

    impl TableWriter for Collect {
        fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
            self.0.push((batch.rows, batch.csv.clone()));
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<Vec<zephr_sink::WrittenFile>, WriteError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn csv_records_are_fed_whole_with_their_counts() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        std::fs::write(&a, "\u{feff}x,y\r\n1,\"a\r\nb\"\r\n2,\r\n").unwrap();
        std::fs::write(&b, "\u{feff}x,y\r\n3,\"\"\"\"\r\n").unwrap();
        let mut out = Collect(Vec::new());
        let n = feed_csv(&[a, b], &mut out).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            out.0,
            [
                (2, b"1,\"a\r\nb\"\r\n2,\r\n".to_vec()),
                (1, b"3,\"\"\"\"\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn parquet_parts_become_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut parts = Vec::new();
        for (i, ids) in [vec![1i64, 2], vec![], vec![3]].into_iter().enumerate() {
            let path = dir.path().join(format!("p{i}.parquet"));
            let names: Vec<Option<String>> = ids
                .iter()
                .map(|i| (i % 2 == 1).then(|| format!("n{i}")))
                .collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .unwrap();
            let mut w =
                ArrowWriter::try_new(File::create(&path).unwrap(), schema.clone(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            parts.push(path);
        }
        let out = dir.path().join("all.parquet");
        let target = out.clone();
        let mut once = Some(());
        let mut writer = ParquetWriter::new(
            schema.clone(),
            &[],
            ParquetOptions::default(),
            Box::new(move |_| {
                once.take().expect("one part");
                let file =
                    zephr_dest::local::LocalFile::create_new(&target, "all.parquet").unwrap();
                Ok((
                    Box::new(file) as Box<dyn zephr_dest::StagedFile>,
                    "all.parquet".into(),
                ))
            }),
        )
        .unwrap();
        assert_eq!(concat_parquet(&parts, &schema, &mut writer).unwrap(), 3);
        Box::new(writer).finish().unwrap();

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&out).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let all = arrow_select_concat(&batches);
        assert_eq!(all.0, vec![1, 2, 3]);
        assert_eq!(all.1, vec![Some("n1".into()), None, Some("n3".into())]);
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> (Vec<i64>, Vec<Option<String>>) {
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for b in batches {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let name = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                ids.push(id.value(i));
                names.push(name.is_valid(i).then(|| name.value(i).to_owned()));
            }
        }
        (ids, names)
    }
}
