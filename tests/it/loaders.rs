//! Outputs every loader and spreadsheet takes as they are (issue 14): the postgres CSV
//! dialect, `schema --dialect`, xlsx workbooks read back by an independent reader (calamine),
//! and real engines loading a tricky export: PostgreSQL creates the tables from
//! `schema --dialect postgres` and COPYs every CSV, DuckDB creates them from its DDL and loads
//! the Parquet; each compares counts and every value with the Parquet the tool wrote.
//!
//! PostgreSQL runs when its binaries are found (`ZEPHR_ETL_TEST_PG_BIN`, `initdb` on the
//! PATH, or Debian's /usr/lib/postgresql/*/bin; `.ci/postgres-setup.sh` installs them); DuckDB
//! when `ZEPHR_ETL_TEST_PYTHON` names a python with the `duckdb` package. Without them, those
//! two tests say SKIPPED on the terminal and pass (under CI, which installs both, they fail).

use crate::support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use calamine::{Data, Reader, Xlsx, open_workbook};
use serde_json::Value;
use support::harness::{generated, parquet_batches, write_file, zephr};
use support::reference::read_csv;
use tempfile::TempDir;

const TABLES: [&str; 3] = ["users", "grants", "attributes"];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub(crate) fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Runs the binary; fails the test unless it succeeds. Returns stdout and stderr.
pub(crate) fn run_ok(args: &[&str]) -> (String, String) {
    let output = zephr()
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

/// Converts the tricky export into `out` with wide attributes, plus `extra` flags.
fn convert_tricky(out: &Path, extra: &[&str]) -> String {
    let export = data("loaders.json");
    let schema = data("loaders-user-schema.json");
    let mut args = vec![
        "convert",
        s(&export),
        "-o",
        s(out),
        "--wide-attributes",
        "--user-schema",
        s(&schema),
    ];
    args.extend_from_slice(extra);
    run_ok(&args).1
}

/// A table's Parquet columns: names, types and every batch.
pub(crate) fn parquet_table(
    dir: &Path,
    table: &str,
) -> (Vec<(String, DataType)>, Vec<RecordBatch>) {
    let batches = parquet_batches(&dir.join(format!("{table}.parquet")));
    let fields = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    (fields, batches)
}

/// A cell of Parquet in the canonical text both engines are asked for: strings as they are
/// (NUL as U+FFFD when `nul_replaced`), booleans `true`/`false`, integers in decimal,
/// timestamps as UTC microseconds since the epoch, doubles through `f64` formatting.
fn canonical(column: &dyn Array, row: usize, nul_replaced: bool) -> Option<String> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Utf8 => {
            let v = column.as_string::<i32>().value(row);
            if nul_replaced {
                v.replace('\0', "\u{FFFD}")
            } else {
                v.to_string()
            }
        }
        DataType::Boolean => column.as_boolean().value(row).to_string(),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => column.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => column
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .to_string(),
        other => panic!("unexpected column type {other:?}"),
    })
}

type Rows = Vec<Vec<Option<String>>>;

/// Every row of a table's Parquet in canonical text, sorted (loaders keep no row order).
fn expected_rows(dir: &Path, table: &str, nul_replaced: bool) -> Rows {
    let (_, batches) = parquet_table(dir, table);
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| canonical(c.as_ref(), row, nul_replaced))
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// Doubles compared as numbers: each engine prints them its own way (`41`, `41.0`).
fn normalise_doubles(rows: &mut Rows, types: &[(String, DataType)]) {
    for row in rows.iter_mut() {
        for (cell, (_, t)) in row.iter_mut().zip(types) {
            if *t == DataType::Float64
                && let Some(text) = cell
            {
                let v: f64 = text
                    .parse()
                    .unwrap_or_else(|_| panic!("{text:?} is a number"));
                *text = v.to_string();
            }
        }
    }
    rows.sort();
}

/// Says on the terminal that a test did not run its engine, even while output is captured;
/// under CI, which installs every engine (.ci/run), a missing one fails the test instead.
pub(crate) fn skipped(test: &str, why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}, under CI");
    support::harness::skip_notice(&format!("{test}: {why}"));
}

#[test]
fn postgres_dialect_replaces_nul_counts_it_and_keeps_null_apart_from_empty() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("pg");
    let stderr = convert_tricky(&out, &["--csv-dialect", "postgres"]);
    // Two cells in users (a username and the wide attr_nul), one in attributes.
    assert!(
        stderr.contains("NUL replaced by U+FFFD in 3 CSV cells"),
        "{stderr}"
    );
    for table in TABLES {
        let bytes = std::fs::read(out.join(format!("{table}.csv"))).unwrap();
        assert!(!bytes.contains(&0), "{table}.csv holds a NUL byte");
    }
    // The manifest counts them per table, zeros included under this dialect.
    let manifest = read_manifest(&out);
    let nul = |table: &str| manifest["tables"][table]["nul_replaced"].clone();
    assert_eq!(nul("users"), Value::from(2));
    assert_eq!(nul("grants"), Value::from(0));
    assert_eq!(nul("attributes"), Value::from(1));
    let (header, users) = read_csv(&out.join("users.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(
        users[1][col("username")].as_deref(),
        Some("nul\u{FFFD}name")
    );
    assert_eq!(users[0][col("attr_nul")].as_deref(), Some("a\u{FFFD}b"));
    // The empty string is `""`, NULL an empty cell: COPY keeps them apart.
    assert_eq!(users[1][col("email_address")].as_deref(), Some(""));
    assert_eq!(users[2][col("email_address")], None);
    let (_, attributes) = read_csv(&out.join("attributes.csv"));
    let nul = attributes
        .iter()
        .find(|r| r[1].as_deref() == Some("nul"))
        .unwrap();
    assert_eq!(nul[2].as_deref(), Some("a\u{FFFD}b"));
    // Parquet keeps the value exactly.
    let (_, batches) = parquet_table(&out, "attributes");
    let values: Vec<Option<String>> = (0..batches[0].num_rows())
        .map(|r| canonical(batches[0].column(2).as_ref(), r, false))
        .collect();
    assert!(values.contains(&Some("a\0b".to_string())), "{values:?}");

    // The plain dialect keeps every byte, and says nothing of NUL.
    let plain = tmp.path().join("plain");
    let stderr = convert_tricky(&plain, &[]);
    assert!(!stderr.contains("NUL"), "{stderr}");
    let manifest = read_manifest(&plain);
    for table in TABLES {
        assert!(
            manifest["tables"][table].get("nul_replaced").is_none(),
            "{table}: {manifest}"
        );
    }
    let (_, attributes) = read_csv(&plain.join("attributes.csv"));
    let nul = attributes
        .iter()
        .find(|r| r[1].as_deref() == Some("nul"))
        .unwrap();
    assert_eq!(nul[2].as_deref(), Some("a\0b"));
}

/// The run's `manifest.json`, parsed.
pub(crate) fn read_manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// A sheet's rows as calamine reads them.
fn sheet_rows(path: &Path, sheet: &str) -> Vec<Vec<Data>> {
    let mut book: Xlsx<_> = open_workbook(path).expect("a workbook calamine opens");
    let range = book.worksheet_range(sheet).expect("the sheet");
    range.rows().map(<[Data]>::to_vec).collect()
}

fn sheet_names(path: &Path) -> Vec<String> {
    let book: Xlsx<_> = open_workbook(path).expect("a workbook calamine opens");
    book.sheet_names()
}

/// Excel's serial number of a UTC instant (what a date-time cell holds).
fn serial_of_micros(micros: i64) -> f64 {
    micros as f64 / 86_400_000_000.0 + 25_569.0
}

fn micros_of_serial(serial: f64) -> i64 {
    ((serial - 25_569.0) * 86_400_000_000.0).round() as i64
}

#[test]
fn xlsx_cells_keep_ids_numbers_text_times_and_booleans_exactly() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    convert_tricky(&out, &["--format", "csv,parquet,xlsx"]);
    for table in TABLES {
        assert!(out.join(format!("{table}.xlsx")).is_file(), "{table}.xlsx");
    }
    let users = sheet_rows(&out.join("users.xlsx"), "users");
    let header: Vec<String> = users[0].iter().map(|c| c.to_string()).collect();
    let (csv_header, _) = read_csv(&out.join("users.csv"));
    assert_eq!(header, csv_header);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(users.len(), 4, "a header and three users");
    // Ids keep every zero and digit; text that looks like a number, a date or a formula
    // stays text.
    assert_eq!(users[1][col("user_id")], Data::String("00012345".into()));
    assert_eq!(
        users[2][col("user_id")],
        Data::String("123456789012345678901".into())
    );
    assert_eq!(
        users[1][col("email_address")],
        Data::String("=HYPERLINK(\"http://evil\",\"click\")".into())
    );
    assert_eq!(
        users[1][col("username")],
        Data::String("+44 20 7946 0000".into())
    );
    assert_eq!(users[1][col("tracking_id")], Data::String("1E5".into()));
    assert_eq!(
        users[1][col("registration_state")],
        Data::String("3/4".into())
    );
    assert_eq!(
        users[1][col("attr_formula")],
        Data::String("@SUM(A1:A9)".into())
    );
    assert_eq!(
        users[1][col("attr_emoji")],
        Data::String("🦀 — 東京 — prénom".into())
    );
    assert_eq!(
        users[1][col("attr_first_name")],
        Data::String("Gwen, \"the\" first\nof her name".into())
    );
    // Excel keeps no empty text cell: the empty string and NULL are both empty there.
    assert_eq!(users[2][col("email_address")], Data::Empty);
    assert_eq!(users[3][col("email_address")], Data::Empty);
    // Past 15 digits an int64 is text (a spreadsheet keeps 15); within, a number.
    assert_eq!(
        users[1][col("seq_no")],
        Data::String("9007199254740993".into())
    );
    assert_eq!(
        users[3][col("seq_no")],
        Data::String("-9007199254740993".into())
    );
    assert_eq!(users[2][col("seq_no")], Data::Float(17.0));
    assert_eq!(users[1][col("email_verified")], Data::Bool(true));
    assert_eq!(users[2][col("email_verified")], Data::Bool(false));
    assert_eq!(users[3][col("email_verified")], Data::Empty);
    assert_eq!(users[1][col("attr_age")], Data::Float(41.0));
    assert_eq!(users[2][col("attr_age")], Data::Float(7.5));
    // Timestamps are date-time cells holding the UTC instant, to the microsecond.
    let (_, batches) = parquet_table(&out, "users");
    for (name, row) in [("registered", 0), ("last_login", 0), ("registered", 1)] {
        let micros = batches[0]
            .column(col(name))
            .as_primitive::<TimestampMicrosecondType>()
            .value(row);
        match &users[row + 1][col(name)] {
            Data::DateTime(dt) => {
                assert!((dt.as_f64() - serial_of_micros(micros)).abs() < 1e-9);
                assert_eq!(micros_of_serial(dt.as_f64()), micros, "{name} {row}");
            }
            other => panic!("{name} of row {row} is {other:?}, not a date-time cell"),
        }
    }
    // 2021-02-24T15:43:28Z exactly.
    let Data::DateTime(registered) = &users[1][col("registered")] else {
        unreachable!()
    };
    assert_eq!(micros_of_serial(registered.as_f64()), 1_614_181_408_000_000);

    // Grants: a start time Excel cannot show (1899) is ISO text; the ids stay text.
    let grants = sheet_rows(&out.join("grants.xlsx"), "grants");
    assert_eq!(grants.len(), 3);
    let gheader: Vec<String> = grants[0].iter().map(|c| c.to_string()).collect();
    let g = |name: &str| gheader.iter().position(|h| h == name).unwrap();
    assert_eq!(grants[1][g("grant_id")], Data::String("000777".into()));
    assert_eq!(grants[1][g("account_id")], Data::String("-12".into()));
    assert_eq!(
        grants[1][g("product_id")],
        Data::String("gold\r\nplan".into())
    );
    assert_eq!(
        grants[2][g("start_time")],
        Data::String("1899-12-31T12:00:00Z".into())
    );
    assert_eq!(grants[2][g("end_time")], Data::Empty);
    let Data::DateTime(created) = &grants[1][g("created_at")] else {
        panic!("created_at is {:?}", grants[1][g("created_at")]);
    };
    // 2022-05-31 23:59:59.5
    assert_eq!(micros_of_serial(created.as_f64()), 1_654_041_599_500_000);

    // Attributes: every value as text, the NUL included.
    let attributes = sheet_rows(&out.join("attributes.xlsx"), "attributes");
    let (_, csv_rows) = read_csv(&out.join("attributes.csv"));
    assert_eq!(attributes.len(), csv_rows.len() + 1);
    for (cells, csv_row) in attributes[1..].iter().zip(&csv_rows) {
        let got: Vec<Option<String>> = cells
            .iter()
            .map(|c| match c {
                Data::Empty => None,
                Data::String(s) => Some(s.clone()),
                other => panic!("attributes cell {other:?} is not text"),
            })
            .collect();
        // The empty string is an empty cell in a workbook.
        let want: Vec<Option<String>> = csv_row
            .iter()
            .map(|c| c.clone().filter(|c| !c.is_empty()))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn xlsx_continues_a_long_table_on_numbered_sheets() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "export.json", &generated(40, 3));
    let out = tmp.path().join("out");
    // Ten rows a sheet: a header and nine rows.
    run_ok(&[
        "convert",
        s(&input),
        "-o",
        s(&out),
        "--format",
        "csv,xlsx",
        "--xlsx-max-rows",
        "10",
    ]);
    for table in TABLES {
        let path = out.join(format!("{table}.xlsx"));
        let (header, csv_rows) = read_csv(&out.join(format!("{table}.csv")));
        let names = sheet_names(&path);
        let sheets = csv_rows.len().div_ceil(9).max(1);
        let expected: Vec<String> = (1..=sheets)
            .map(|n| match n {
                1 => table.to_string(),
                n => format!("{table} ({n})"),
            })
            .collect();
        assert_eq!(names, expected, "{table}");
        let mut rows = Vec::new();
        for name in &names {
            let sheet = sheet_rows(&path, name);
            let got: Vec<String> = sheet[0].iter().map(|c| c.to_string()).collect();
            assert_eq!(got, header, "{table} {name}: every sheet has the header");
            assert!(sheet.len() <= 10, "{table} {name}");
            rows.extend(sheet[1..].iter().cloned());
        }
        assert_eq!(rows.len(), csv_rows.len(), "{table}");
        // The first column is text in every table: the rows follow the CSV's order.
        for (cells, csv_row) in rows.iter().zip(&csv_rows) {
            assert_eq!(cells[0], Data::String(csv_row[0].clone().unwrap()));
        }
    }
}

#[test]
fn schema_dialects_print_load_ready_definitions() {
    let (sql, _) = run_ok(&["schema", "--dialect", "postgres"]);
    assert_eq!(sql.matches("CREATE TABLE").count(), 3, "{sql}");
    assert!(
        sql.contains("\"registered\"          timestamptz,"),
        "{sql}"
    );
    assert!(sql.contains("-- state_events:"), "{sql}");
    let (grants, _) = run_ok(&["schema", "grants", "--dialect", "snowflake"]);
    assert!(grants.starts_with("CREATE TABLE grants (\n"), "{grants}");
    assert!(grants.contains("TIMESTAMP_TZ"), "{grants}");
    // BigQuery's schema file is one table's field list.
    let (bq, _) = run_ok(&["schema", "users", "--dialect", "bigquery"]);
    let fields: Value = serde_json::from_str(&bq).unwrap();
    assert_eq!(
        fields[0],
        serde_json::json!({"name": "user_id", "type": "STRING", "mode": "REQUIRED"})
    );
    let output = zephr()
        .args(["schema", "--dialect", "bigquery"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("holds one table"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn wide_names_fit_63_bytes_and_equal_the_ddl_csv_and_parquet_names() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    convert_tricky(&out, &[]);
    let schema = data("loaders-user-schema.json");
    let (bq, _) = run_ok(&[
        "schema",
        "users",
        "--dialect",
        "bigquery",
        "--user-schema",
        s(&schema),
    ]);
    let fields: Value = serde_json::from_str(&bq).unwrap();
    let ddl_names: Vec<String> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let (csv_header, _) = read_csv(&out.join("users.csv"));
    let (parquet_fields, _) = parquet_table(&out, "users");
    let parquet_names: Vec<String> = parquet_fields.into_iter().map(|(n, _)| n).collect();
    assert_eq!(ddl_names, csv_header);
    assert_eq!(ddl_names, parquet_names);
    // The two keys share their first 63 characters; their columns still differ.
    let long: Vec<&String> = ddl_names
        .iter()
        .filter(|n| n.starts_with("attr_preference_"))
        .collect();
    assert_eq!(long.len(), 2, "{ddl_names:?}");
    assert_ne!(long[0], long[1]);
    for name in &ddl_names {
        assert!(name.len() <= 63, "{name}");
    }
}

pub(crate) use support::postgres::Postgres;

/// The SQL that renders a column in the canonical text of [`canonical`].
pub(crate) fn canonical_sql(name: &str, data_type: &DataType, duckdb: bool) -> String {
    let quoted = format!("\"{name}\"");
    match (data_type, duckdb) {
        (DataType::Utf8, _) => quoted,
        (DataType::Timestamp(..), false) => {
            format!("(extract(epoch from {quoted}) * 1000000)::bigint::text")
        }
        (DataType::Timestamp(..), true) => format!("epoch_us({quoted})::VARCHAR"),
        (_, false) => format!("{quoted}::text"),
        (_, true) => format!("{quoted}::VARCHAR"),
    }
}

#[test]
fn postgres_creates_from_its_ddl_and_copies_every_csv() {
    let Some(bin) = Postgres::bin_dir() else {
        skipped(
            "postgres_creates_from_its_ddl_and_copies_every_csv",
            "PostgreSQL's binaries were not found (run .ci/postgres-setup.sh, or set \
             ZEPHR_ETL_TEST_PG_BIN)",
        );
        return;
    };
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    convert_tricky(&out, &["--csv-dialect", "postgres"]);
    let schema = data("loaders-user-schema.json");
    let (ddl, _) = run_ok(&[
        "schema",
        "--dialect",
        "postgres",
        "--user-schema",
        s(&schema),
    ]);
    let pg = Postgres::start(bin);
    pg.psql(&ddl);
    let mut script = String::new();
    for table in TABLES {
        let csv = out.join(format!("{table}.csv"));
        script.push_str(&format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv, HEADER)\n",
            s(&csv)
        ));
        let (fields, _) = parquet_table(&out, table);
        let columns: Vec<String> = fields
            .iter()
            .map(|(name, t)| canonical_sql(name, t, false))
            .collect();
        script.push_str(&format!(
            "\\copy (SELECT {} FROM {table}) TO '{}' WITH (FORMAT csv, HEADER)\n",
            columns.join(", "),
            s(&tmp.path().join(format!("{table}.back.csv")))
        ));
    }
    let script_path = write_file(tmp.path(), "load.sql", script.as_bytes());
    pg.psql_file(&script_path);
    let mut matched = BTreeMap::new();
    for table in TABLES {
        let (fields, _) = parquet_table(&out, table);
        let (_, mut got) = read_csv(&tmp.path().join(format!("{table}.back.csv")));
        let mut want = expected_rows(&out, table, true);
        normalise_doubles(&mut got, &fields);
        normalise_doubles(&mut want, &fields);
        assert!(!want.is_empty(), "{table} has rows");
        assert_eq!(
            got, want,
            "{table}: PostgreSQL holds what the Parquet holds"
        );
        matched.insert(table, got.len());
    }
    let counts = pg.psql("SELECT (SELECT count(*) FROM users) || ' ' || (SELECT count(*) FROM grants) || ' ' || (SELECT count(*) FROM attributes)");
    assert_eq!(
        counts.trim(),
        format!(
            "{} {} {}",
            matched["users"], matched["grants"], matched["attributes"]
        )
    );
    // What the postgres dialect is for: the plain dialect keeps the NUL, which COPY refuses.
    let plain = tmp.path().join("plain");
    convert_tricky(&plain, &[]);
    let refused = Command::new(pg.bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-X", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "\\copy attributes FROM '{}' WITH (FORMAT csv, HEADER)",
            s(&plain.join("attributes.csv"))
        ))
        .output()
        .unwrap();
    // psql's \copy stops the line at the NUL, so the server finds the row's end misplaced
    // (docs/loading.md quotes this; a server-side COPY says `invalid byte sequence for
    // encoding "UTF8": 0x00` instead).
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("ERROR:"), "{message}");
    assert!(
        message.contains("extra data after last expected column"),
        "{message}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "postgres: rows matched {matched:?} (users, grants, attributes)"
    );
}

#[test]
fn duckdb_creates_from_its_ddl_and_loads_the_parquet() {
    let python = match std::env::var_os("ZEPHR_ETL_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            skipped(
                "duckdb_creates_from_its_ddl_and_loads_the_parquet",
                "ZEPHR_ETL_TEST_PYTHON is not set (see .ci/duckdb-setup.sh)",
            );
            return;
        }
    };
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    convert_tricky(&out, &[]);
    let schema = data("loaders-user-schema.json");
    let (ddl, _) = run_ok(&["schema", "--dialect", "duckdb", "--user-schema", s(&schema)]);
    let mut selects = serde_json::Map::new();
    for table in TABLES {
        let (fields, _) = parquet_table(&out, table);
        let columns: Vec<String> = fields
            .iter()
            .map(|(name, t)| canonical_sql(name, t, true))
            .collect();
        selects.insert(
            table.to_string(),
            Value::String(format!("SELECT {} FROM {table}", columns.join(", "))),
        );
    }
    let script = r#"
import duckdb, json, os, sys
os.chdir(sys.argv[1])
ddl, selects = sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect()
con.execute(ddl)
out = {}
for table, query in selects.items():
    con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{table}.parquet')")
    out[table] = con.execute(query).fetchall()
print(json.dumps(out))
"#;
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&out)
        .arg(&ddl)
        .arg(Value::Object(selects).to_string())
        .output()
        .expect("the python of ZEPHR_ETL_TEST_PYTHON runs");
    assert!(
        output.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut matched = BTreeMap::new();
    for table in TABLES {
        let (fields, _) = parquet_table(&out, table);
        let mut got: Rows = answer[table]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .collect();
        let mut want = expected_rows(&out, table, false);
        normalise_doubles(&mut got, &fields);
        normalise_doubles(&mut want, &fields);
        assert_eq!(got, want, "{table}: DuckDB holds what the Parquet holds");
        matched.insert(table, got.len());
    }
    let _ = writeln!(
        std::io::stderr(),
        "duckdb: rows matched {matched:?} (users, grants, attributes)"
    );
}

#[test]
fn state_events_get_a_workbook_and_their_nul_counted() {
    let tmp = TempDir::new().unwrap();
    let events = write_file(
        tmp.path(),
        "events.csv",
        b"event-type,value,at\nlogin,a\0b,00042\nlogout,,=1+1\n",
    );
    let out = tmp.path().join("out");
    let stderr = convert_tricky(
        &out,
        &[
            "--format",
            "csv,parquet,xlsx",
            "--csv-dialect",
            "postgres",
            "--state-events",
            s(&events),
        ],
    );
    assert!(
        stderr.contains("state_events: NUL replaced by U+FFFD in 1 CSV cells"),
        "{stderr}"
    );
    let (header, rows) = read_csv(&out.join("state_events.csv"));
    assert_eq!(header, ["event-type", "value", "at"]);
    assert_eq!(rows[0][1].as_deref(), Some("a\u{FFFD}b"));
    // The workbook keeps the source's names, as the CSV does, and every value as text.
    let sheet = sheet_rows(&out.join("state_events.xlsx"), "state_events");
    let names: Vec<String> = sheet[0].iter().map(|c| c.to_string()).collect();
    assert_eq!(names, ["event-type", "value", "at"]);
    assert_eq!(sheet[1][1], Data::String("a\0b".into()));
    assert_eq!(sheet[1][2], Data::String("00042".into()));
    assert_eq!(sheet[2][1], Data::Empty);
    assert_eq!(sheet[2][2], Data::String("=1+1".into()));
}

/// Issue 23: what a spreadsheet would change is text. Integers of 16 digits and more (a
/// spreadsheet keeps 15) and instants that round past 9999-12-31 23:59:59.999 (the "never
/// expires" sentinel) are text cells; their neighbours of 15 digits and the last instants
/// Excel shows stay numbers and date-time cells. Read back by calamine and, when
/// `ZEPHR_ETL_TEST_PYTHON` has it, openpyxl.
#[test]
fn xlsx_writes_16_digit_integers_and_the_end_of_time_as_text() {
    let tmp = TempDir::new().unwrap();
    let grant = |id: &str, end: &str| serde_json::json!({"grantId": id, "startTime": "2024-01-02T03:04:05Z", "endTime": end});
    let items: Vec<Value> = [
        (9_007_199_254_740_992_i64, "9999-12-31T23:59:59.999999Z"),
        (999_999_999_999_999, "9999-12-31T23:59:59.999Z"),
        (1_000_000_000_000_000, "9999-12-31T23:59:59.9995Z"),
        (-999_999_999_999_999, "9999-12-31T23:59:59.9994Z"),
        (-1_000_000_000_000_000, "9999-12-31T23:59:59Z"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (seq, end))| {
        serde_json::json!({
            "user": {"user_id": format!("u{i}"), "registered": "2021-02-24T15:43:28Z"},
            "seq-no": seq,
            "grants": {"results": [grant(&format!("g{i}"), end)]},
        })
    })
    .collect();
    let input = write_file(
        tmp.path(),
        "edges.json",
        Value::Array(items).to_string().as_bytes(),
    );
    let out = tmp.path().join("out");
    run_ok(&["convert", s(&input), "-o", s(&out), "--format", "csv,xlsx"]);
    let (_, csv_grants) = read_csv(&out.join("grants.csv"));
    let end_csv = |row: usize| csv_grants[row][8].clone().unwrap();
    assert_eq!(end_csv(0), "9999-12-31T23:59:59.999999Z");

    // What each edge cell must be: a number, text, or a date-time of these microseconds.
    #[derive(Debug)]
    enum Want {
        Number(f64),
        Text(String),
        DateTime(i64),
    }
    let last_ms = 253_402_300_799_999_000_i64; // 9999-12-31T23:59:59.999Z
    let seq = [
        Want::Text("9007199254740992".into()),
        Want::Number(999_999_999_999_999.0),
        Want::Text("1000000000000000".into()),
        Want::Number(-999_999_999_999_999.0),
        Want::Text("-1000000000000000".into()),
    ];
    let end = [
        Want::Text(end_csv(0)),
        Want::DateTime(last_ms),
        Want::Text(end_csv(2)),
        Want::DateTime(last_ms + 400),
        Want::DateTime(last_ms - 999_000),
    ];
    let users = sheet_rows(&out.join("users.xlsx"), "users");
    let grants = sheet_rows(&out.join("grants.xlsx"), "grants");
    let col = |header: &[Data], name: &str| {
        header
            .iter()
            .position(|c| matches!(c, Data::String(s) if s == name))
            .unwrap()
    };
    let seq_col = col(&users[0], "seq_no");
    let (end_col, start_col) = (col(&grants[0], "end_time"), col(&grants[0], "start_time"));
    let check = |cell: &Data, want: &Want, what: &str| match (cell, want) {
        (Data::Float(got), Want::Number(v)) => assert_eq!(got, v, "{what}"),
        (Data::String(got), Want::Text(v)) => assert_eq!(got, v, "{what}"),
        (Data::DateTime(dt), Want::DateTime(micros)) => {
            let serial = dt.as_f64();
            assert!(
                serial < 2_958_466.0,
                "{what}: {serial} is 10000-01-01 or later"
            );
            // Near year 9999 a double's step is about 40 µs.
            let got = micros_of_serial(serial);
            assert!((got - micros).abs() < 50, "{what}: {got} against {micros}");
        }
        (other, want) => panic!("{what}: {other:?}, wanted {want:?}"),
    };
    for (row, want) in seq.iter().enumerate() {
        check(&users[row + 1][seq_col], want, &format!("seq_no {row}"));
    }
    for (row, want) in end.iter().enumerate() {
        check(&grants[row + 1][end_col], want, &format!("end_time {row}"));
        // The ordinary instant beside it is a date-time cell.
        let start = 1_704_164_645_000_000; // 2024-01-02T03:04:05Z
        check(
            &grants[row + 1][start_col],
            &Want::DateTime(start),
            "start_time",
        );
    }

    // openpyxl, a second reader: `s` text, `n` number, `d` a number shown as a date.
    let Some(python) = std::env::var_os("ZEPHR_ETL_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        skipped(
            "xlsx_writes_16_digit_integers_and_the_end_of_time_as_text (openpyxl)",
            "ZEPHR_ETL_TEST_PYTHON is not set (see .ci/duckdb-setup.sh)",
        );
        return;
    };
    let script = r#"
import json, sys, openpyxl
out = {}
for table, column in (("users", "seq_no"), ("grants", "end_time"), ("grants", "start_time")):
    sheet = openpyxl.load_workbook(f"{sys.argv[1]}/{table}.xlsx")[table]
    rows = list(sheet.iter_rows())
    at = [c.value for c in rows[0]].index(column)
    out[column] = [[r[at].data_type, r[at].is_date, str(r[at].value)] for r in rows[1:]]
print(json.dumps({"version": openpyxl.__version__, "cells": out}))
"#;
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&out)
        .output()
        .expect("the python of ZEPHR_ETL_TEST_PYTHON runs");
    assert!(
        output.status.success(),
        "openpyxl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let cells = &answer["cells"];
    let cell = |column: &str, row: usize| {
        let c = &cells[column][row];
        (
            c[0].as_str().unwrap().to_string(),
            c[1].as_bool().unwrap(),
            c[2].as_str().unwrap().to_string(),
        )
    };
    let text = |v: &str| ("s".to_string(), false, v.to_string());
    let number = |v: &str| ("n".to_string(), false, v.to_string());
    assert_eq!(cell("seq_no", 0), text("9007199254740992"));
    assert_eq!(cell("seq_no", 1), number("999999999999999"));
    assert_eq!(cell("seq_no", 2), text("1000000000000000"));
    assert_eq!(cell("seq_no", 3), number("-999999999999999"));
    assert_eq!(cell("seq_no", 4), text("-1000000000000000"));
    assert_eq!(cell("end_time", 0), text("9999-12-31T23:59:59.999999Z"));
    assert_eq!(cell("end_time", 2), text(&end_csv(2)));
    for row in [1, 3, 4] {
        let (kind, is_date, value) = cell("end_time", row);
        assert_eq!((kind.as_str(), is_date), ("d", true), "end_time {row}");
        assert!(
            value.starts_with("9999-12-31 23:59:59"),
            "end_time {row}: {value}"
        );
    }
    for row in 0..5 {
        assert_eq!(
            cell("start_time", row),
            ("d".to_string(), true, "2024-01-02 03:04:05".to_string())
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "openpyxl {}: the edge cells are as written",
        answer["version"]
    );
}

/// Issue 23: `--help` says what the excel dialect is for and where spreadsheets should go.
#[test]
fn csv_dialect_help_sends_spreadsheets_to_xlsx() {
    let (help, _) = run_ok(&["convert", "--help"]);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for words in [
        "`excel` is for Excel's own CSV import",
        "LibreOffice still drops ids' leading zeros and 16th digits",
        "for spreadsheets use --format xlsx",
    ] {
        assert!(help.contains(words), "{words:?} not in: {help}");
    }
}
