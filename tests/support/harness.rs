//! Test harness: run the real binary in temp dirs and read its tables back.
//!
//! Every integration test drives `zephr-etl` as a user would; this module keeps the plumbing
//! (generated exports, temp dirs, CSV and Parquet readers) in one place.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use assert_cmd::Command;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::reference;

/// The binary under test. A run that hangs (a lost permit, a stuck server) is killed after
/// two minutes and fails its test instead of holding up the suite.
pub fn zephr() -> Command {
    let mut cmd = Command::cargo_bin("zephr-etl").expect("the binary builds");
    cmd.env_remove("ZEPHR_ACCESS_KEY")
        .env_remove("ZEPHR_SECRET_KEY")
        .timeout(std::time::Duration::from_secs(120));
    cmd
}

/// A generated export (top-level array) with grants and attributes.
pub fn generated(users: u64, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let spec = zephr_core::generate::GenerateSpec {
        users,
        seed,
        grants: true,
        attributes: true,
    };
    zephr_core::generate::write_export(&spec, &mut out)
        .expect("generation into memory cannot fail");
    out
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temp dir is writable");
    path
}

/// One table read back: header and rows of cells (None = NULL).
pub type CsvTable = (Vec<String>, Vec<Vec<Option<String>>>);

/// Reads `dir/TABLE.csv` with the independent CSV reader.
pub fn csv_table(dir: &Path, table: &str) -> CsvTable {
    reference::read_csv(&dir.join(format!("{table}.csv")))
}

/// The three item tables of `dir` as reference tables.
pub fn csv_tables(dir: &Path) -> reference::Tables {
    reference::Tables {
        users: csv_table(dir, "users").1,
        grants: csv_table(dir, "grants").1,
        attributes: csv_table(dir, "attributes").1,
    }
}

/// Reads every record batch of a Parquet file.
pub fn parquet_batches(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("valid parquet")
        .build()
        .expect("reader");
    reader.map(|b| b.expect("readable batch")).collect()
}

/// A column as Parquet declares it: name, Arrow type, nullable.
pub type Field = (String, DataType, bool);

/// Rows of cells, NULL as `None`.
pub type Rows = Vec<Vec<Option<String>>>;

/// Reads a Parquet table as CSV-convention cell text, to compare with the CSV output.
pub fn parquet_cells(path: &Path) -> (Vec<Field>, Rows) {
    let batches = parquet_batches(path);
    let file = File::open(path).expect("open");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("valid parquet");
    let fields = builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect();
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|column| cell_text(column.as_ref(), row))
                .collect();
            rows.push(cells);
        }
    }
    (fields, rows)
}

fn cell_text(column: &dyn Array, row: usize) -> Option<String> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(row).to_string(),
        DataType::Boolean => column.as_boolean().value(row).to_string(),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            reference::format_micros(column.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        other => panic!("unexpected column type {other:?}"),
    })
}

/// Every file name in `dir`, hidden ones included, sorted.
pub fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Says, where the test output shows it, that an optional check was skipped and why. The
/// test harness captures `eprintln!`, so this writes to the process's stderr directly.
pub fn skip_notice(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {message}");
}

// ---- Comparing an object-store run with a local one ----

/// `convert INPUT -o DIR/local`, the run a bucket's tables are compared with: that folder.
pub fn convert_locally(input: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let local = dir.join("local");
    zephr()
        .arg("convert")
        .arg(input)
        .arg("-o")
        .arg(&local)
        .arg("-q")
        .assert()
        .success();
    local
}

pub const TABLES: [&str; 3] = ["users", "grants", "attributes"];

/// `users-20240501T100000Z-1a2b3c4d.csv` -> `users.csv`: the local name of a tagged object.
pub fn untag(name: &str) -> String {
    let (dir, file) = name.rsplit_once('/').map_or(("", name), |(d, f)| (d, f));
    let dot = file.find('.').unwrap_or(file.len());
    let stem = &file[..dot];
    let stem = if stem.len() > 26 && stem.as_bytes()[stem.len() - 26] == b'-' {
        &stem[..stem.len() - 26]
    } else {
        stem
    };
    let file = format!("{stem}{}", &file[dot..]);
    if dir.is_empty() {
        file
    } else {
        format!("{dir}/{file}")
    }
}

/// The three item tables of two datasets' folders are equal, CSV and Parquet, cell for cell.
pub fn assert_same_tables(left: &std::path::Path, right: &std::path::Path) {
    for table in TABLES {
        assert_eq!(
            csv_table(left, table),
            csv_table(right, table),
            "{table}.csv"
        );
        assert_eq!(
            parquet_cells(&left.join(format!("{table}.parquet"))),
            parquet_cells(&right.join(format!("{table}.parquet"))),
            "{table}.parquet"
        );
    }
}
