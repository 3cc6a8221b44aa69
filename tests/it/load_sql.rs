//! `load-sql` (issue 23): the scripts that load a run into a warehouse. DuckDB and PostgreSQL
//! run theirs for real, twice: a first run's export created and loaded, then a second run
//! (users changed, new users, a user_id repeated within it, parts of 7 rows) merged; every
//! cell of the final tables is compared with the current state computed here from the two
//! runs' CSV tables (the independent CSV reader). The BigQuery, Snowflake, Redshift and
//! Databricks scripts parse statement by statement with sqlglot as their dialect; a run in
//! a bucket (moto) gives statements with its s3:// URLs.
//!
//! The engines come as in the ddl tests (`ZEPHR_ETL_TEST_PYTHON`, PostgreSQL's binaries);
//! without them those checks say SKIPPED (under CI they fail).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use arrow_schema::{DataType, TimeUnit};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::ddl::{python, run_python, split_statements};
use crate::loaders::{Postgres, canonical_sql, read_manifest, run_ok, s, skipped};
use crate::support::harness::{generated, write_file};
use crate::support::reference::{format_micros, read_csv};

const TABLES: [&str; 3] = ["users", "grants", "attributes"];

type Rows = Vec<Vec<Option<String>>>;

/// The two runs' exports: the second changes 8 of the first's 40 users (email, no grants
/// for some, one attribute value), adds 10 new ones, and repeats one user_id (first a
/// "first@" row, last a "last@" one).
fn exports(dir: &Path) -> (PathBuf, PathBuf) {
    let first = generated(40, 11);
    let items: Vec<Value> = serde_json::from_slice(&first).unwrap();
    let mut second: Vec<Value> = Vec::new();
    for (i, item) in items.iter().take(8).enumerate() {
        let mut item = item.clone();
        item["user"]["identifiers"]["email_address"] = json!(format!("changed-{i}@example.com"));
        if i % 3 == 0 {
            item["grants"] = json!({"results": []});
        }
        if let Some(attributes) = item["user"]["attributes"].as_object_mut() {
            attributes.insert("plan".into(), json!(format!("plan-{i}")));
        }
        second.push(item);
    }
    let fresh: Vec<Value> = serde_json::from_slice(&generated(10, 12)).unwrap();
    second.extend(fresh);
    let mut repeated = second[1].clone();
    second[1]["user"]["identifiers"]["email_address"] = json!("first@example.com");
    repeated["user"]["identifiers"]["email_address"] = json!("last@example.com");
    second.push(repeated);
    (
        write_file(dir, "first.json", &first),
        write_file(dir, "second.json", &serde_json::to_vec(&second).unwrap()),
    )
}

/// A table of a run, from its CSV files in the manifest's order: header and rows.
fn run_table(dir: &Path, table: &str) -> (Vec<String>, Rows) {
    let manifest = read_manifest(dir);
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for file in manifest["files"].as_array().unwrap() {
        if file["table"] == table && file["format"] == "csv" {
            let (h, r) = read_csv(&dir.join(file["path"].as_str().unwrap()));
            header = h;
            rows.extend(r);
        }
    }
    (header, rows)
}

/// The current state after merging `second` into `first` (SPEC section 7): users by
/// user_id, the last row winning; the grants and attributes of users the second run has,
/// replaced by its rows; everyone else's kept. Rows sorted.
fn expected_state(first: &Path, second: &Path) -> BTreeMap<&'static str, Rows> {
    let (_, users1) = run_table(first, "users");
    let (_, users2) = run_table(second, "users");
    let mut users: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for row in users1.into_iter().chain(users2.iter().cloned()) {
        users.insert(row[0].clone().unwrap(), row);
    }
    let in_second: BTreeSet<String> = users2.iter().map(|r| r[0].clone().unwrap()).collect();
    let mut out = BTreeMap::new();
    out.insert("users", users.into_values().collect::<Rows>());
    for table in ["grants", "attributes"] {
        let (_, old) = run_table(first, table);
        let (_, new) = run_table(second, table);
        let mut rows: Rows = old
            .into_iter()
            .filter(|r| !in_second.contains(r[0].as_deref().unwrap()))
            .chain(new)
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// The Arrow type a manifest type stands for, for [`canonical_sql`].
fn data_type(manifest_type: &str) -> DataType {
    match manifest_type {
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "bool" | "boolean" => DataType::Boolean,
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// The expressions that give a table's cells as text (timestamps as epoch microseconds).
fn cell_exprs(manifest: &Value, table: &str, duckdb: bool) -> Vec<String> {
    manifest["tables"][table]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (name, kind) = (c["name"].as_str().unwrap(), c["type"].as_str().unwrap());
            match kind {
                // PostgreSQL's json would go into the JSON array as JSON: its text instead.
                "json" if !duckdb => format!("\"{name}\"::text"),
                _ => canonical_sql(name, &data_type(kind), duckdb),
            }
        })
        .collect()
}

/// An engine's rows (timestamps back to the CSV's text), sorted.
fn engine_rows(manifest: &Value, table: &str, rows: &Value) -> Rows {
    let types: Vec<DataType> = manifest["tables"][table]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| data_type(c["type"].as_str().unwrap()))
        .collect();
    let mut out: Rows = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .zip(&types)
                .map(|(cell, t)| {
                    let text = cell.as_str()?.to_string();
                    Some(match t {
                        DataType::Timestamp(..) => format_micros(text.parse().unwrap()),
                        _ => text,
                    })
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// The two runs converted (CSV in the postgres dialect; the second in parts of 7 rows).
fn two_runs(dir: &Path) -> (PathBuf, PathBuf) {
    let (first_export, second_export) = exports(dir);
    let first = dir.join("first");
    let second = dir.join("second");
    let common = ["--csv-dialect", "postgres", "-q"];
    let mut args = vec!["convert", s(&first_export), "-o", s(&first)];
    args.extend_from_slice(&common);
    run_ok(&args);
    let mut args = vec!["convert", s(&second_export), "-o", s(&second)];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--max-rows-per-file", "7"]);
    run_ok(&args);
    (first, second)
}

fn check_state(engine: &str, manifest: &Value, want: &BTreeMap<&'static str, Rows>, got: &Value) {
    for table in TABLES {
        let rows = engine_rows(manifest, table, &got[table]);
        assert_eq!(rows.len(), want[table].len(), "{engine} {table}: row count");
        for (got_row, want_row) in rows.iter().zip(&want[table]) {
            assert_eq!(got_row, want_row, "{engine} {table}");
        }
    }
    let users = &want["users"];
    let last = users
        .iter()
        .find(|r| r[1].as_deref() == Some("last@example.com"));
    assert!(last.is_some(), "the repeated user's last row is kept");
    assert!(
        !users
            .iter()
            .any(|r| r[1].as_deref() == Some("first@example.com"))
    );
}

/// The item tables in a fresh DuckDB after `scripts` ran in order, as `engine_rows` reads
/// them (each table's cells by `cell_exprs`), with the count of staging tables left and
/// DuckDB's version.
fn duckdb_after(python: &Path, scripts: &[&str], manifest: &Value) -> Value {
    let queries: BTreeMap<&str, String> = TABLES
        .iter()
        .map(|t| {
            let cells = cell_exprs(manifest, t, true).join(", ");
            (*t, format!("SELECT {cells} FROM \"{t}\""))
        })
        .collect();
    let script = r#"
import json, sys, duckdb
scripts, queries = json.loads(sys.argv[1]), json.loads(sys.argv[2])
con = duckdb.connect()
for sql in scripts:
    con.execute(sql)
out = {t: [list(r) for r in con.execute(q).fetchall()] for t, q in queries.items()}
out["staging"] = con.execute(
    "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'zephr_etl_stage_%'").fetchone()[0]
out["version"] = duckdb.__version__
print(json.dumps(out))
"#;
    run_python(
        python,
        script,
        &[&json!(scripts).to_string(), &json!(queries).to_string()],
    )
}

#[test]
fn duckdb_and_postgres_create_load_then_merge_a_second_run_into_the_current_state() {
    let tmp = TempDir::new().unwrap();
    let (first, second) = two_runs(tmp.path());
    let want = expected_state(&first, &second);
    assert_eq!(want["users"].len(), 40 + 10, "the repeated user once");
    let manifest = read_manifest(&second);
    let parts = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["table"] == "users" && f["format"] == "parquet")
        .count();
    assert!(parts >= 3, "the second run's users span {parts} parts");

    // DuckDB: the Parquet, through read_parquet.
    let (duck1, _) = run_ok(&["load-sql", "--dialect", "duckdb", s(&first)]);
    let (duck2, _) = run_ok(&["load-sql", "--dialect", "duckdb", "--merge", s(&second)]);
    assert!(duck1.contains("INSERT INTO \"users\" (") && duck1.contains("read_parquet(['"));
    assert!(duck2.contains("DELETE FROM \"users\" WHERE"), "{duck2}");
    if let Some(python) = python("load_sql duckdb") {
        let got = duckdb_after(&python, &[&duck1, &duck2], &manifest);
        check_state("duckdb", &manifest, &want, &got);
        assert_eq!(got["staging"], 0, "the staging tables are dropped");
        let _ = writeln!(
            std::io::stderr(),
            "load-sql: DuckDB {} holds the merged state",
            got["version"]
        );
    }

    // PostgreSQL: the postgres-dialect CSV, through \copy, in a schema.
    let (pg1, _) = run_ok(&[
        "load-sql",
        "--dialect",
        "postgres",
        "--schema",
        "zephr",
        s(&first),
    ]);
    let (pg2, _) = run_ok(&[
        "load-sql",
        "--dialect",
        "postgres",
        "--schema",
        "zephr",
        "--merge",
        s(&second),
    ]);
    let copies = pg2.lines().filter(|l| l.starts_with("\\copy ")).count();
    let csv_parts = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["format"] == "csv")
        .count();
    assert_eq!(copies, csv_parts, "one \\copy per CSV part");
    assert!(
        pg2.contains("MERGE INTO \"zephr\".\"users\" AS live"),
        "{pg2}"
    );
    let Some(bin) = Postgres::bin_dir() else {
        skipped(
            "load_sql postgres",
            "PostgreSQL's binaries were not found (run .ci/postgres-setup.sh)",
        );
        return;
    };
    let pg = Postgres::start(bin);
    pg.psql_file(&write_file(tmp.path(), "first.sql", pg1.as_bytes()));
    pg.psql_file(&write_file(tmp.path(), "second.sql", pg2.as_bytes()));
    let mut got = serde_json::Map::new();
    for table in TABLES {
        let cells = cell_exprs(&manifest, table, false).join(", ");
        let text = pg.psql(&format!(
            "SELECT coalesce(json_agg(json_build_array({cells})), '[]') FROM \"zephr\".\"{table}\""
        ));
        got.insert(table.into(), serde_json::from_str(text.trim()).unwrap());
    }
    check_state("postgres", &manifest, &want, &Value::Object(got));
    let version = pg.psql("SHOW server_version");
    let _ = writeln!(
        std::io::stderr(),
        "load-sql: PostgreSQL {} holds the merged state",
        version.trim()
    );
}

/// The cloud warehouses' scripts of a run in a bucket, plain and merging, with and without a
/// schema (the library's, for a run whose manifest names s3:// files).
fn cloud_scripts(manifest: &zephr_core::manifest::Manifest, base: &str) -> Vec<(String, String)> {
    use zephr_core::load_sql::{Base, Options, Warehouse, script};
    let mut out = Vec::new();
    for warehouse in [
        Warehouse::Bigquery,
        Warehouse::Snowflake,
        Warehouse::Redshift,
        Warehouse::Databricks,
    ] {
        for (merge, schema) in [(false, None), (true, Some("analytics"))] {
            let mut options = Options::new(warehouse);
            options.merge = merge;
            options.schema = schema.map(str::to_string);
            let sql = script(manifest, &Base::Bucket(base.into()), &options).unwrap();
            let how = format!("{} merge={merge}", warehouse.name());
            out.push((how, sql));
        }
    }
    out
}

#[test]
fn bigquery_snowflake_redshift_and_databricks_scripts_parse_as_their_dialect() {
    let tmp = TempDir::new().unwrap();
    let (_, second) = two_runs(tmp.path());
    let text = std::fs::read_to_string(second.join("manifest.json")).unwrap();
    let manifest: zephr_core::manifest::Manifest = serde_json::from_str(&text).unwrap();
    let scripts = cloud_scripts(&manifest, "s3://nightly-bucket/zephr/2024-05-01");
    let mut parts = Vec::new();
    for (how, sql) in &scripts {
        for line in sql.lines().filter(|l| l.starts_with("--")) {
            assert!(!line.contains(';'), "{how}: a comment with ';': {line}");
        }
        // Every file of the run is named once in each script.
        for file in &manifest.files {
            let name = if how.starts_with("snowflake") || how.starts_with("databricks") {
                format!("'{}'", file.path)
            } else {
                format!("'s3://nightly-bucket/zephr/2024-05-01/{}'", file.path)
            };
            if file.format == "parquet" {
                assert_eq!(sql.matches(&name).count(), 1, "{how}: {name}");
            }
        }
        parts.push(json!({"how": how, "statements": split_statements(sql)}));
    }
    let Some(python) = python("load_sql cloud dialects (sqlglot)") else {
        return;
    };
    let script = r#"
import json, sys, sqlglot
parts, out = json.loads(sys.argv[1]), {}
for part in parts:
    read = part["how"].split()[0]
    kinds = []
    for statement in part["statements"]:
        try:
            trees = sqlglot.parse(statement, read=read)
        except Exception as e:
            kinds.append(f"ERROR {e}: {statement[:300]}")
            continue
        for tree in trees:
            kind = type(tree).__name__
            if kind == "Command":
                kind += " " + tree.this
            kinds.append(kind)
    out[part["how"]] = kinds
out["version"] = sqlglot.__version__
print(json.dumps(out))
"#;
    let answer = run_python(&python, script, &[&Value::Array(parts).to_string()]);
    let kinds = |how: &str| -> Vec<String> {
        answer[how]
            .as_array()
            .unwrap_or_else(|| panic!("{how}: {answer}"))
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    for (how, _) in &scripts {
        let kinds = kinds(how);
        assert!(
            kinds.iter().all(|k| !k.starts_with("ERROR")),
            "{how}: {kinds:?}"
        );
        // The statement kinds, each once, in order of first appearance.
        let mut seen: Vec<&str> = Vec::new();
        for kind in &kinds {
            if !seen.contains(&kind.as_str()) {
                seen.push(kind);
            }
        }
        let want: &[&str] = match how.as_str() {
            "bigquery merge=false" => &[
                "Create",
                "Drop",
                "LoadData",
                "Transaction",
                "Insert",
                "Commit",
            ],
            "bigquery merge=true" => &[
                "Create",
                "Drop",
                "LoadData",
                "Transaction",
                "Merge",
                "Delete",
                "Insert",
                "Commit",
            ],
            "snowflake merge=false" => {
                &["Create", "Drop", "Copy", "Transaction", "Insert", "Commit"]
            }
            "snowflake merge=true" => &[
                "Create",
                "Drop",
                "Copy",
                "Transaction",
                "Merge",
                "Delete",
                "Insert",
                "Commit",
            ],
            "redshift merge=false" => &["Create", "Transaction", "Copy", "Commit"],
            "redshift merge=true" => &[
                "Create",
                "Transaction",
                "Drop",
                "Copy",
                "Delete",
                "Insert",
                "Commit",
            ],
            "databricks merge=false" => &["Create", "Copy"],
            "databricks merge=true" => &["Create", "Drop", "Copy", "Merge", "Delete", "Insert"],
            other => panic!("{other}"),
        };
        assert_eq!(seen, want, "{how}: {kinds:?}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "load-sql: sqlglot {} parses {answer}",
        answer["version"]
    );
}

#[test]
fn a_run_in_a_bucket_loads_from_its_s3_urls() {
    let Some(server) = crate::support::s3::shared("a_run_in_a_bucket_loads_from_its_s3_urls")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "export.json", &generated(20, 3));
    let bucket = server.bucket("load-sql");
    let prefix = format!("s3://{bucket}/nightly");
    let output = crate::support::harness::zephr()
        .args(["convert", s(&input), "-o", &prefix, "-q"])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let load_sql = |args: &[&str]| {
        let output = crate::support::harness::zephr()
            .arg("load-sql")
            .args(args)
            .envs(server.env())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            stderr,
        )
    };
    let manifest_url = format!("{prefix}/manifest.json");
    let (code, redshift, stderr) = load_sql(&["--dialect", "redshift", &manifest_url]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, by_prefix, _) = load_sql(&["--dialect", "redshift", &format!("{prefix}/")]);
    assert_eq!(redshift, by_prefix, "the run's prefix names its manifest");
    // Every Parquet file the manifest lists, by its full URL, in one COPY each.
    let manifest: Value = serde_json::from_str(&server.python(&format!(
        "import boto3, os, sys\nsys.stdout.write(boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).get_object(Bucket='{bucket}', Key='nightly/manifest.json')['Body'].read().decode())"
    )))
    .unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["format"] == "parquet")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 3);
    for file in &files {
        let copy = format!("FROM '{prefix}/{file}' IAM_ROLE default FORMAT AS PARQUET;");
        assert_eq!(redshift.matches(&copy).count(), 1, "{copy}\n{redshift}");
    }
    let (_, bigquery, _) = load_sql(&["--dialect", "bigquery", "--schema", "ds", &manifest_url]);
    assert!(
        bigquery.contains(&format!("uris = ['{prefix}/{}']", files[0])),
        "{bigquery}"
    );
    let (_, databricks, _) = load_sql(&["--dialect", "databricks", "--merge", &manifest_url]);
    assert!(databricks.contains(&format!("FROM '{prefix}/' FILEFORMAT = PARQUET")));
    // A local manifest for a warehouse that reads buckets only is a usage error that says why.
    let local = tmp.path().join("local");
    run_ok(&["convert", s(&input), "-o", s(&local), "-q"]);
    let (code, _, stderr) = load_sql(&["--dialect", "bigquery", s(&local)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("BigQuery loads files from a bucket"),
        "{stderr}"
    );
}

/// `--merge --delete-missing` takes the run as a full export: in DuckDB, after a first run
/// and the second merged this way, only the second run's users are left, each with exactly
/// the second run's grants and attributes. Without --merge the flag is a usage error.
#[test]
fn delete_missing_leaves_only_the_full_exports_users() {
    let tmp = TempDir::new().unwrap();
    let (first, second) = two_runs(tmp.path());
    let (_, users2) = run_table(&second, "users");
    let keep: BTreeSet<String> = users2.iter().map(|r| r[0].clone().unwrap()).collect();
    let want: BTreeMap<&'static str, Rows> = expected_state(&first, &second)
        .into_iter()
        .map(|(table, rows)| {
            let rows = rows
                .into_iter()
                .filter(|r| keep.contains(r[0].as_deref().unwrap()))
                .collect();
            (table, rows)
        })
        .collect();
    assert_eq!(want["users"].len(), keep.len());
    assert!(
        keep.len() < 50,
        "some of the first run's users are missing from the second"
    );
    let manifest = read_manifest(&second);
    let (duck1, _) = run_ok(&["load-sql", "--dialect", "duckdb", s(&first)]);
    let (duck2, _) = run_ok(&[
        "load-sql",
        "--dialect",
        "duckdb",
        "--merge",
        "--delete-missing",
        s(&second),
    ]);
    assert!(duck2.contains("NOT IN (SELECT \"user_id\" FROM"), "{duck2}");
    crate::support::harness::zephr()
        .args([
            "load-sql",
            "--dialect",
            "duckdb",
            "--delete-missing",
            s(&second),
        ])
        .assert()
        .code(2);
    if let Some(python) = python("load_sql delete-missing") {
        let got = duckdb_after(&python, &[&duck1, &duck2], &manifest);
        check_state("duckdb", &manifest, &want, &got);
        assert_eq!(got["staging"], 0, "the staging tables are dropped");
    }
}
