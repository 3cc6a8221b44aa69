//! `zephr-etl convert`: every input shape, every table, every cell.
//!
//! The tables are checked against `support/reference.rs`, an independent flattening of the
//! same export, so these tests assert values, not just that the tool ran.

use crate::support;

use std::io::Write;
use std::path::Path;

use arrow_schema::{DataType, TimeUnit};
use serde_json::value::RawValue;
use support::harness::{
    csv_table, csv_tables, dir_listing, generated, parquet_cells, write_file, zephr,
};
use support::reference;
use tempfile::TempDir;

const TABLES: [&str; 3] = ["users", "grants", "attributes"];

fn convert_ok(inputs: &[&Path], out: &Path, extra: &[&str]) -> String {
    let mut cmd = zephr();
    cmd.arg("convert");
    for input in inputs {
        cmd.arg(input);
    }
    let output = cmd.arg("-o").arg(out).args(extra).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "convert failed: {stderr}");
    stderr
}

fn items_of(export: &[u8]) -> Vec<Box<RawValue>> {
    serde_json::from_slice(export).expect("the export is a JSON array")
}

fn join(items: &[Box<RawValue>], separator: &str) -> String {
    items
        .iter()
        .map(|i| i.get())
        .collect::<Vec<_>>()
        .join(separator)
}

/// Asserts two output directories hold the same tables, cell for cell, in both formats.
fn assert_same_tables(left: &Path, right: &Path) {
    for table in TABLES {
        assert_eq!(
            csv_table(left, table),
            csv_table(right, table),
            "{table}.csv differs"
        );
        let (lf, lr) = parquet_cells(&left.join(format!("{table}.parquet")));
        let (rf, rr) = parquet_cells(&right.join(format!("{table}.parquet")));
        assert_eq!(lf, rf, "{table}.parquet schema differs");
        assert_eq!(lr, rr, "{table}.parquet rows differ");
    }
}

#[test]
fn every_cell_equals_an_independent_flattening() {
    let tmp = TempDir::new().unwrap();
    let export = generated(400, 7);
    let input = write_file(tmp.path(), "export.json", &export);
    let out = tmp.path().join("out");
    let stderr = convert_ok(&[&input], &out, &[]);

    let expected = reference::flatten_export(&export);
    assert!(
        expected.grants.len() > 100 && expected.attributes.len() > 1000,
        "the sample exercises every table"
    );
    assert_eq!(csv_table(&out, "users").0, reference::USERS_COLUMNS);
    assert_eq!(csv_table(&out, "grants").0, reference::GRANTS_COLUMNS);
    assert_eq!(
        csv_table(&out, "attributes").0,
        reference::ATTRIBUTES_COLUMNS
    );
    let actual = csv_tables(&out);
    for (name, want, got) in [
        ("users", &expected.users, &actual.users),
        ("grants", &expected.grants, &actual.grants),
        ("attributes", &expected.attributes, &actual.attributes),
    ] {
        assert_eq!(want.len(), got.len(), "{name}: row count");
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            assert_eq!(w, g, "{name} row {i}");
        }
    }
    let summary = format!(
        "users: 400 rows, grants: {} rows, attributes: {} rows",
        expected.grants.len(),
        expected.attributes.len()
    );
    assert!(
        stderr.contains("Export complete!") && stderr.contains(&summary),
        "summary: {stderr}"
    );
}

#[test]
fn tricky_values_survive_the_csv_round_trip() {
    let tmp = TempDir::new().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tricky.json");
    let out = tmp.path().join("out");
    convert_ok(&[&input], &out, &[]);
    let export = std::fs::read(&input).unwrap();
    assert_eq!(csv_tables(&out), reference::flatten_export(&export));

    // A few cells pinned by hand, so the reference itself is checked too.
    let users = csv_table(&out, "users").1;
    let cell = |s: &str| Some(s.to_string());
    assert_eq!(users[0][1], cell("zoë@example.com"));
    assert_eq!(
        users[0][2],
        cell(""),
        "an empty username stays an empty string"
    );
    assert_eq!(users[0][4], None, "a null tracking_id is NULL");
    assert_eq!(users[0][5], cell("2021-02-24T15:43:28.500Z"));
    assert_eq!(users[0][9], cell("17"), "\"17\" is a lossless seq-no");
    assert_eq!(
        users[0][10],
        cell(
            r#"{"user":{"identifiers":{"phone":"+44 20"},"nickname":"Say \"hi\", then\nleave\r\n"},"grants":{"meta":{"count":2}},"extended_profiles":{"app":{"x":1}}}"#
        )
    );
    assert_eq!(
        users[1][0],
        cell("12345"),
        "a numeric user_id is kept as written"
    );
    assert_eq!(users[1][5], cell("2020-01-01T00:00:00Z"));
    assert_eq!(users[1][10], None);
    let grants = csv_table(&out, "grants").1;
    assert_eq!(grants.len(), 3);
    assert_eq!(
        grants[0][10], None,
        "a grant user_id equal to the item's is mapped"
    );
    assert_eq!(grants[1][1], cell("g-2"));
    assert_eq!(grants[1][7], cell("2022-06-01T00:00:00.123456Z"));
    assert_eq!(grants[1][9], cell("2022-05-31T23:59:59Z"));
    assert_eq!(
        grants[1][10],
        cell(r#"{"user_id":"someone-else","note":{"k":"v"}}"#)
    );
    assert_eq!(grants[2][8], None, "a null endTime never ends");
    let attributes = csv_table(&out, "attributes").1;
    let find = |key: &str| {
        attributes
            .iter()
            .find(|r| r[1].as_deref() == Some(key))
            .unwrap()
            .clone()
    };
    assert_eq!(find("score")[2..], [cell("1.50"), cell("number")]);
    assert_eq!(
        find("prefs")[2..],
        [cell(r#"{"a":[1,2.0,"x y"]}"#), cell("object")]
    );
    assert_eq!(find("nothing")[2..], [None, cell("null")]);
    assert_eq!(find("empty")[2..], [cell(""), cell("string")]);
    assert_eq!(find("escaped")[2], cell("tab\thereé"));
    assert_eq!(find("first-name")[2], cell("Gwen, \"the\" first"));
}

#[test]
fn every_input_shape_gives_identical_tables() {
    let tmp = TempDir::new().unwrap();
    let export = generated(120, 11);
    let items = items_of(&export);
    let dir = tmp.path();
    let array = write_file(dir, "array.json", &export);
    let pretty = write_file(
        dir,
        "pretty.json",
        &serde_json::to_vec_pretty(&items).unwrap(),
    );
    let envelope = format!(
        r#"{{"results": [{}], "meta": {{"count": {}, "rpp": 500, "paginated": true}}, "links": {{"first": {{"url": "u", "page": 1}}, "next": null}}}}"#,
        join(&items, ","),
        items.len()
    );
    let envelope = write_file(dir, "envelope.json", envelope.as_bytes());
    let nested = format!(
        r#"{{"meta": {{"count": 120}}, "results": [[{}], [], [{}]]}}"#,
        join(&items[..50], ","),
        join(&items[50..], ",\n")
    );
    let nested = write_file(dir, "nested.json", nested.as_bytes());
    let ndjson_text = join(&items, "\n") + "\n";
    let ndjson = write_file(dir, "export.ndjson", ndjson_text.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&export).unwrap();
    let gzip = write_file(dir, "export.bin", &gz.finish().unwrap());
    let zstd = write_file(
        dir,
        "export.zst",
        &zstd::encode_all(ndjson_text.as_bytes(), 3).unwrap(),
    );
    let part1 = write_file(
        dir,
        "part1.json",
        format!("[{}]", join(&items[..40], ",")).as_bytes(),
    );
    let part2 = write_file(
        dir,
        "part2.json",
        format!(r#"{{"results": [{}]}}"#, join(&items[40..80], ",")).as_bytes(),
    );
    let part3 = write_file(dir, "part3.ndjson", join(&items[80..], "\n").as_bytes());

    let baseline = dir.join("out-array");
    convert_ok(&[&array], &baseline, &[]);
    assert_eq!(csv_tables(&baseline), reference::flatten_export(&export));
    for (name, inputs) in [
        ("pretty", vec![pretty.as_path()]),
        ("envelope", vec![envelope.as_path()]),
        ("nested", vec![nested.as_path()]),
        ("ndjson", vec![ndjson.as_path()]),
        ("gzip", vec![gzip.as_path()]),
        ("zstd", vec![zstd.as_path()]),
        (
            "several",
            vec![part1.as_path(), part2.as_path(), part3.as_path()],
        ),
    ] {
        let out = dir.join(format!("out-{name}"));
        convert_ok(&inputs, &out, &[]);
        assert_same_tables(&baseline, &out);
    }
    // stdin as `-`
    let out = dir.join("out-stdin");
    let output = zephr()
        .args(["convert", "-", "-o"])
        .arg(&out)
        .write_stdin(export.clone())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_tables(&baseline, &out);
}

#[test]
fn parquet_has_the_spec_types_and_the_csv_values() {
    let tmp = TempDir::new().unwrap();
    let export = generated(150, 5);
    let input = write_file(tmp.path(), "export.json", &export);
    let out = tmp.path().join("out");
    convert_ok(&[&input], &out, &[]);
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    type Columns = Vec<(&'static str, DataType, bool)>;
    let expected_types: [(&str, Columns); 3] = [
        (
            "users",
            vec![
                ("user_id", DataType::Utf8, false),
                ("email_address", DataType::Utf8, true),
                ("username", DataType::Utf8, true),
                ("email_verified", DataType::Boolean, true),
                ("tracking_id", DataType::Utf8, true),
                ("registered", ts.clone(), true),
                ("registration_tenant", DataType::Utf8, true),
                ("registration_state", DataType::Utf8, true),
                ("last_login", ts.clone(), true),
                ("seq_no", DataType::Int64, true),
                ("extra", DataType::Utf8, true),
            ],
        ),
        (
            "grants",
            vec![
                ("user_id", DataType::Utf8, false),
                ("grant_id", DataType::Utf8, true),
                ("account_id", DataType::Utf8, true),
                ("expiry_state", DataType::Utf8, true),
                ("entitlement_type", DataType::Utf8, true),
                ("entitlement_id", DataType::Utf8, true),
                ("product_id", DataType::Utf8, true),
                ("start_time", ts.clone(), true),
                ("end_time", ts.clone(), true),
                ("created_at", ts.clone(), true),
                ("extra", DataType::Utf8, true),
            ],
        ),
        (
            "attributes",
            vec![
                ("user_id", DataType::Utf8, false),
                ("key", DataType::Utf8, false),
                ("value", DataType::Utf8, true),
                ("value_type", DataType::Utf8, false),
            ],
        ),
    ];
    for (table, types) in expected_types {
        let (fields, rows) = parquet_cells(&out.join(format!("{table}.parquet")));
        let want: Vec<(String, DataType, bool)> = types
            .into_iter()
            .map(|(n, t, null)| (n.to_string(), t, null))
            .collect();
        assert_eq!(fields, want, "{table} schema");
        assert_eq!(
            rows,
            csv_table(&out, table).1,
            "{table}: Parquet and CSV hold the same values"
        );
    }
    // The physical layout a warehouse relies on: zstd, INT64 micros adjusted to UTC.
    let file = std::fs::File::open(out.join("users.parquet")).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let column = meta.row_group(0).column(5);
    assert_eq!(
        column.compression(),
        parquet::basic::Compression::ZSTD(Default::default())
    );
    let descr = meta.file_metadata().schema_descr().column(5);
    assert_eq!(descr.physical_type(), parquet::basic::Type::INT64);
    match descr.logical_type_ref() {
        Some(parquet::basic::LogicalType::Timestamp(t)) => {
            assert!(t.is_adjusted_to_u_t_c, "timestamps are adjusted to UTC");
            assert!(
                matches!(t.unit, parquet::basic::TimeUnit::MICROS),
                "microseconds: {:?}",
                t.unit
            );
        }
        other => panic!("registered is not a timestamp: {other:?}"),
    }
}

#[test]
fn batch_and_buffer_sizes_do_not_change_a_byte() {
    let tmp = TempDir::new().unwrap();
    let export = generated(60, 3);
    let input = write_file(tmp.path(), "export.json", &export);
    let baseline = tmp.path().join("default");
    convert_ok(&[&input], &baseline, &[]);
    // Threads 1 runs the sequential pipeline; 2 and 3 the parallel one.
    for (batch, buffer, threads) in [
        ("1", "1", "3"),
        ("3", "3", "3"),
        ("1", "1048576", "2"),
        ("2048", "1", "3"),
        ("3", "7", "1"),
        ("2048", "3", "1"),
        ("2048", "1048576", "1"),
    ] {
        let out = tmp.path().join(format!("b{batch}-{buffer}-t{threads}"));
        let sizes = [
            "--batch-size",
            batch,
            "--buffer-size",
            buffer,
            "--threads",
            threads,
        ];
        convert_ok(&[&input], &out, &sizes);
        for table in TABLES {
            let name = format!("{table}.csv");
            assert_eq!(
                std::fs::read(baseline.join(&name)).unwrap(),
                std::fs::read(out.join(&name)).unwrap(),
                "{name} batch {batch} buffer {buffer} threads {threads}"
            );
        }
        assert_same_tables(&baseline, &out);
    }
}

/// A batch takes items from as many inputs as it needs, and empty inputs in between (more of
/// them than batches may be in flight) neither lose a batch's place nor hold one up.
#[test]
fn many_inputs_and_empty_ones_share_batches() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let export = generated(25, 5);
    let items = items_of(&export);
    let baseline = dir.join("baseline");
    convert_ok(&[&write_file(dir, "all.json", &export)], &baseline, &[]);
    let mut inputs = Vec::new();
    for (i, chunk) in items.chunks(4).enumerate() {
        // Three empty inputs of each kind before every chunk of four items.
        for (j, empty) in ["[]", r#"{"results": []}"#, r#"{"results": [[]]}"#]
            .iter()
            .enumerate()
        {
            inputs.push(write_file(
                dir,
                &format!("{i}-empty{j}.json"),
                empty.as_bytes(),
            ));
        }
        let page = format!(r#"{{"results": [{}]}}"#, join(chunk, ","));
        inputs.push(write_file(dir, &format!("{i}-page.json"), page.as_bytes()));
    }
    let inputs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    for (batch, threads) in [
        ("2048", "2"),
        ("3", "2"),
        ("1", "3"),
        ("3", "1"),
        ("2048", "1"),
    ] {
        let out = dir.join(format!("b{batch}-t{threads}"));
        convert_ok(
            &inputs,
            &out,
            &["--batch-size", batch, "--threads", threads],
        );
        for table in TABLES {
            let name = format!("{table}.csv");
            assert_eq!(
                std::fs::read(baseline.join(&name)).unwrap(),
                std::fs::read(out.join(&name)).unwrap(),
                "{name} batch {batch} threads {threads}"
            );
        }
    }
}

#[test]
fn an_export_of_no_items_gives_headers_and_no_rows() {
    let tmp = TempDir::new().unwrap();
    for (name, text) in [
        ("array", "[]"),
        ("envelope", r#"{"results": [], "meta": {"count": 0}}"#),
        ("nested", r#"{"results": [[]]}"#),
    ] {
        let input = write_file(tmp.path(), &format!("{name}.json"), text.as_bytes());
        let out = tmp.path().join(name);
        let stderr = convert_ok(&[&input], &out, &[]);
        assert!(
            stderr.contains("users: 0 rows, grants: 0 rows, attributes: 0 rows"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("users.csv")).unwrap(),
            reference::USERS_COLUMNS.join(",") + "\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("attributes.csv")).unwrap(),
            "user_id,key,value,value_type\n"
        );
        for table in TABLES {
            let (fields, rows) = parquet_cells(&out.join(format!("{table}.parquet")));
            assert!(
                rows.is_empty() && !fields.is_empty(),
                "{table}.parquet has its schema and no rows"
            );
        }
    }
}

#[test]
fn format_picks_the_files_and_quiet_prints_nothing() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "export.json", &generated(5, 1));
    let out = tmp.path().join("csv-only");
    let output = zephr()
        .args(["convert", "--quiet", "--format", "csv"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        output.stderr.is_empty() && output.stdout.is_empty(),
        "--quiet prints nothing"
    );
    assert_eq!(
        dir_listing(&out),
        ["attributes.csv", "grants.csv", "manifest.json", "users.csv"]
    );
    let out = tmp.path().join("parquet-only");
    convert_ok(&[&input], &out, &["--format", "parquet"]);
    assert_eq!(
        dir_listing(&out),
        [
            "attributes.parquet",
            "grants.parquet",
            "manifest.json",
            "users.parquet"
        ]
    );
}

#[test]
fn progress_shows_the_console_phases() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "export.json", &generated(10, 2));
    let stderr = convert_ok(&[&input], &tmp.path().join("out"), &[]);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], "Preparing user export...");
    assert!(lines.contains(&"Export complete!"), "{stderr}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("users: 10 rows, grants: ") && last.contains("MB/s)"),
        "{last}"
    );
}

#[test]
fn schema_prints_the_schema_files() {
    let output = zephr()
        .args(["schema", "--json", "users"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let on_disk =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/users.json"))
            .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), on_disk);
    let output = zephr().args(["schema", "grants"]).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("grants: One row per grant"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == ["end_time", "timestamp"]),
        "{text}"
    );
    let output = zephr().args(["schema", "nope"]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unknown table is bad usage"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown table \"nope\""));
}

#[test]
fn generate_is_deterministic_and_valid() {
    let first = zephr()
        .args([
            "generate",
            "--users",
            "25",
            "--seed",
            "9",
            "--grants",
            "--attributes",
        ])
        .output()
        .unwrap();
    let second = zephr()
        .args([
            "generate",
            "--users",
            "25",
            "--seed",
            "9",
            "--grants",
            "--attributes",
        ])
        .output()
        .unwrap();
    assert!(first.status.success());
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(first.stdout, generated(25, 9));
    assert_eq!(items_of(&first.stdout).len(), 25);
}

#[test]
fn usage_errors_exit_with_2() {
    let output = zephr().args(["convert", "-o", "x"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = zephr()
        .args(["convert", "a.json", "-o", "x", "--format", "xml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn repeated_keys_fill_the_column_once_and_keep_the_rest_in_extra() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(
        tmp.path(),
        "dup.json",
        br#"{"user":{"user_id":"u","foo":1,"registered":"2020-01-01","registered":"2021-01-01","identifiers":{"email_address":"a@x","email_address":"b@x"}},"user":{"user_id":"v"},"seq-no":1,"seq-no":2,"grants":[{"grantId":"g1","grantId":"g2"}]}"#,
    );
    let out = tmp.path().join("out");
    convert_ok(&[&input], &out, &[]);
    let users = csv_table(&out, "users").1;
    let cell = |s: &str| Some(s.to_string());
    assert_eq!(users[0][0], cell("u"));
    assert_eq!(users[0][1], cell("a@x"));
    assert_eq!(users[0][5], cell("2020-01-01T00:00:00Z"));
    assert_eq!(users[0][9], cell("1"));
    assert_eq!(
        users[0][10],
        cell(
            r#"{"user":{"foo":1,"registered":"2021-01-01","identifiers":{"email_address":"b@x"}},"user":{"user_id":"v"},"seq-no":2}"#
        )
    );
    let grants = csv_table(&out, "grants").1;
    assert_eq!(grants[0][1], cell("g1"));
    assert_eq!(grants[0][10], cell(r#"{"grantId":"g2"}"#));
}

/// Issue 20, case 8: `--overwrite` replaces the dataset its manifest lists, and nothing else:
/// a user's own files that are merely named like outputs (a hand-made `grants.xlsx`, a
/// `users/part-00000.csv` from elsewhere) stay, byte for byte.
#[test]
fn overwrite_removes_only_what_the_manifest_lists() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "export.json", &generated(12, 8));
    let out = tmp.path().join("out");
    convert_ok(&[&input], &out, &[]);
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(first["files"].as_array().unwrap().len(), 6);
    std::fs::write(out.join("grants.xlsx"), b"a hand-made workbook").unwrap();
    std::fs::create_dir(out.join("users")).unwrap();
    std::fs::write(out.join("users/part-00000.csv"), b"mine\n").unwrap();

    convert_ok(&[&input], &out, &["--overwrite", "--format", "csv"]);
    assert_eq!(
        std::fs::read(out.join("grants.xlsx")).unwrap(),
        b"a hand-made workbook"
    );
    assert_eq!(
        std::fs::read(out.join("users/part-00000.csv")).unwrap(),
        b"mine\n"
    );
    // The previous dataset's Parquet files, which this run did not write, went.
    for table in ["users", "grants", "attributes"] {
        assert!(
            !out.join(format!("{table}.parquet")).exists(),
            "{table}.parquet"
        );
        assert!(out.join(format!("{table}.csv")).exists(), "{table}.csv");
    }
}
