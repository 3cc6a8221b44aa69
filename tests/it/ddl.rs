//! `schema --dialect` scripts as runners and warehouses take them (issue 23): split on `;`
//! they are whole statements that each engine parses (DuckDB and PostgreSQL for real, the
//! others with sqlglot), and `--manifest` gives exactly a run's tables, a wide run's 40-odd
//! `users` columns and the source's `state_events` included, which DuckDB and PostgreSQL
//! create and then load that run's Parquet and CSV into.
//!
//! DuckDB and sqlglot run when `ZEPHR_ETL_TEST_PYTHON` names a python that has them
//! (`.ci/duckdb-setup.sh`), PostgreSQL when its binaries are found (`.ci/postgres-setup.sh`);
//! without them the engine checks say SKIPPED (under CI they fail) and the rest still runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::Array as _;
use arrow_array::cast::AsArray as _;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::loaders::{Postgres, parquet_table, read_manifest, run_ok, s, skipped};
use crate::support::harness::{generated, write_file};

/// The python with duckdb and sqlglot, or `None` after saying SKIPPED.
pub(crate) fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ZEPHR_ETL_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            skipped(
                test,
                "ZEPHR_ETL_TEST_PYTHON is not set (see .ci/duckdb-setup.sh)",
            );
            None
        }
    }
}

/// Runs `script` with `args`; fails the test with python's stderr unless it succeeds, and
/// returns its stdout as JSON.
pub(crate) fn run_python(python: &Path, script: &str, args: &[&str]) -> Value {
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("the python of ZEPHR_ETL_TEST_PYTHON runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// A wide run without a user schema (string columns for every attribute key), with state
/// events whose names need sanitising, in `dir/out`; CSV in the postgres dialect too.
fn wide_run(dir: &Path) -> PathBuf {
    let input = write_file(dir, "export.json", &generated(60, 7));
    let events = write_file(
        dir,
        "events.csv",
        b"event-type,1st seen,user id\nlogin,2024-01-01,u1\nlogout,,u2\n",
    );
    let out = dir.join("out");
    run_ok(&[
        "convert",
        s(&input),
        "-o",
        s(&out),
        "--wide-attributes",
        "--csv-dialect",
        "postgres",
        "--state-events",
        s(&events),
        "-q",
    ]);
    out
}

/// The statements of a script split on `;` as a naive runner splits it, comment lines
/// dropped; empty chunks (the tail after the last `;`) left out.
pub(crate) fn split_statements(script: &str) -> Vec<String> {
    script
        .split(';')
        .map(|chunk| {
            chunk
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .filter(|chunk| !chunk.is_empty())
        .collect()
}

const SQL_DIALECTS: [&str; 5] = ["postgres", "duckdb", "snowflake", "redshift", "spark"];

#[test]
fn schema_scripts_split_on_semicolons_into_statements_every_engine_parses() {
    let tmp = TempDir::new().unwrap();
    let out = wide_run(tmp.path());
    let manifest = s(&out.join("manifest.json")).to_string();
    // Every dialect's script, built-in and from the manifest, JSON typed and kept text.
    let mut scripts: Vec<(String, String, String)> = Vec::new();
    for dialect in SQL_DIALECTS {
        for extra in [
            &[][..],
            &["--manifest", &manifest][..],
            &["--json-as-text"][..],
        ] {
            let mut args = vec!["schema", "--dialect", dialect];
            args.extend_from_slice(extra);
            let (sql, _) = run_ok(&args);
            scripts.push((dialect.to_string(), extra.join(" "), sql));
        }
    }
    // BigQuery's `schema` prints the field list; its CREATE TABLE is the library's.
    for table in zephr_core::schema::Table::ALL {
        let sql = zephr_core::ddl::create_table(table.def(), zephr_core::ddl::Dialect::Bigquery);
        scripts.push(("bigquery".into(), format!("library {}", table.name()), sql));
    }
    let mut parts = Vec::new();
    for (dialect, how, sql) in &scripts {
        let statements = split_statements(sql);
        for statement in &statements {
            assert!(
                statement.starts_with("CREATE TABLE ")
                    && (statement.ends_with(')') || statement.ends_with(") USING PARQUET")),
                "{dialect} {how}: {statement:?} is not a whole statement"
            );
        }
        // The built-in script has three tables and a note, the manifest's four tables.
        let tables = match how {
            h if h.starts_with("library") => 1,
            h if h.starts_with("--manifest") => 4,
            _ => 3,
        };
        assert_eq!(statements.len(), tables, "{dialect} {how}: {sql}");
        parts.push(json!({"dialect": dialect, "how": how, "statements": statements}));
    }
    let Some(python) = python("schema_scripts_split_on_semicolons (sqlglot, duckdb)") else {
        return;
    };
    // sqlglot parses each statement as its dialect (Spark's also as Databricks'); DuckDB
    // runs its own.
    let script = r#"
import json, sys, duckdb, sqlglot
from sqlglot import exp
parts, errors, parsed = json.loads(sys.argv[1]), [], 0
for part in parts:
    readers = {"spark": ["spark", "databricks"]}.get(part["dialect"], [part["dialect"]])
    for statement in part["statements"]:
        for read in readers:
            try:
                trees = sqlglot.parse(statement, read=read)
                kinds = [type(t).__name__ for t in trees]
                if kinds != ["Create"]:
                    errors.append(f"{read} {part['how']}: {kinds}: {statement}")
                parsed += 1
            except Exception as e:
                errors.append(f"{read} {part['how']}: {e}: {statement}")
    if part["dialect"] == "duckdb":
        con = duckdb.connect()
        for statement in part["statements"]:
            con.execute(statement)
print(json.dumps({"errors": errors, "parsed": parsed,
                  "versions": [sqlglot.__version__, duckdb.__version__]}))
"#;
    let answer = run_python(&python, script, &[&Value::Array(parts.clone()).to_string()]);
    assert_eq!(answer["errors"], json!([]), "{answer}");
    assert!(answer["parsed"].as_u64().unwrap() > 40, "{answer}");
    // PostgreSQL runs its own, one statement at a time as a splitting runner would.
    match Postgres::bin_dir() {
        Some(bin) => {
            let pg = Postgres::start(bin);
            for part in parts.iter().filter(|p| p["dialect"] == "postgres") {
                for statement in part["statements"].as_array().unwrap() {
                    pg.psql(statement.as_str().unwrap());
                }
                pg.psql("DROP SCHEMA public CASCADE");
                pg.psql("CREATE SCHEMA public");
            }
        }
        None => skipped(
            "schema_scripts_split_on_semicolons (postgres)",
            "PostgreSQL's binaries were not found (run .ci/postgres-setup.sh)",
        ),
    }
    let _ = writeln!(
        std::io::stderr(),
        "sqlglot {} and duckdb {}: {} statements parsed",
        answer["versions"][0],
        answer["versions"][1],
        answer["parsed"]
    );
}

#[test]
fn schema_from_a_wide_runs_manifest_creates_the_tables_its_files_load_into() {
    let tmp = TempDir::new().unwrap();
    let out = wide_run(tmp.path());
    let manifest = read_manifest(&out);
    let columns = |table: &str| {
        manifest["tables"][table]["columns"]
            .as_array()
            .unwrap()
            .len()
    };
    let rows = |table: &str| manifest["tables"][table]["rows"].as_u64().unwrap();
    let wide = columns("users");
    assert!(wide > 11 + 10, "a wide users table: {wide} columns");
    let tables = ["users", "grants", "attributes", "state_events"];
    let path = s(&out.join("manifest.json")).to_string();

    // The JSON and BigQuery forms list the manifest's columns too.
    let (text, _) = run_ok(&["schema", "--manifest", &path, "--json"]);
    let described: Value = serde_json::from_str(&text).unwrap();
    for (def, table) in described.as_array().unwrap().iter().zip(tables) {
        assert_eq!(def["table"], table);
        assert_eq!(
            def["columns"].as_array().unwrap().len(),
            columns(table),
            "{table}"
        );
    }
    let (bq, _) = run_ok(&[
        "schema",
        "users",
        "--dialect",
        "bigquery",
        "--manifest",
        &path,
    ]);
    let fields: Value = serde_json::from_str(&bq).unwrap();
    assert_eq!(fields.as_array().unwrap().len(), wide);
    let (events, _) = run_ok(&[
        "schema",
        "state_events",
        "--dialect",
        "bigquery",
        "--manifest",
        &path,
    ]);
    let events: Value = serde_json::from_str(&events).unwrap();
    assert_eq!(
        events,
        json!([
            {"name": "event_type", "type": "STRING", "mode": "NULLABLE"},
            {"name": "_1st_seen", "type": "STRING", "mode": "NULLABLE"},
            {"name": "user_id", "type": "STRING", "mode": "NULLABLE"}
        ])
    );
    let (folder, _) = run_ok(&["schema", "--dialect", "duckdb", "--manifest", s(&out)]);
    let (ddl, _) = run_ok(&["schema", "--dialect", "duckdb", "--manifest", &path]);
    assert_eq!(folder, ddl, "the run's folder names its manifest");
    let (builtin, _) = run_ok(&["schema", "--dialect", "duckdb"]);

    // A few values to find again: the first user's id and last wide column, from the Parquet.
    let (fields, batches) = parquet_table(&out, "users");
    let last = fields.last().unwrap().0.clone();
    let ids = batches[0].column(0).as_string::<i32>();
    let first_id = ids.value(0).to_string();
    let values = batches[0].column(fields.len() - 1).as_string::<i32>();
    let first_last = values.is_valid(0).then(|| values.value(0).to_string());

    let Some(python) = python("schema_from_a_wide_runs_manifest (duckdb)") else {
        return;
    };
    let script = r#"
import json, os, sys, duckdb
os.chdir(sys.argv[1])
ddl, builtin, tables = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
first_id, last = sys.argv[5], sys.argv[6]
out = {}
# The built-in DDL has 11 users columns: the wide Parquet does not fit.
con = duckdb.connect()
con.execute(builtin)
try:
    con.execute("INSERT INTO users SELECT * FROM read_parquet('users.parquet')")
    out["builtin"] = "loaded"
except Exception as e:
    out["builtin"] = str(e)
con = duckdb.connect()
con.execute(ddl)
for table in tables:
    con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{table}.parquet')")
    out[table] = {
        "rows": con.execute(f"SELECT count(*) FROM {table}").fetchone()[0],
        "columns": len(con.execute(f"DESCRIBE {table}").fetchall()),
    }
out["last"] = con.execute(f'SELECT "{last}" FROM users WHERE user_id = ?', [first_id]).fetchone()[0]
out["extra"] = con.execute(
    "SELECT typeof(extra), count(*), count(*) FILTER (WHERE json_type(extra) = 'OBJECT') "
    "FROM users WHERE extra IS NOT NULL GROUP BY ALL").fetchall()
out["extra_changed"] = con.execute(
    "SELECT count(*) FROM users u JOIN read_parquet('users.parquet') p USING (user_id) "
    "WHERE u.extra::VARCHAR IS DISTINCT FROM p.extra").fetchone()[0]
out["event"] = con.execute(
    'SELECT event_type, "_1st_seen", user_id FROM state_events ORDER BY event_type').fetchall()
print(json.dumps(out))
"#;
    let answer = run_python(
        &python,
        script,
        &[
            s(&out),
            &ddl,
            &builtin,
            &json!(tables).to_string(),
            &first_id,
            &last,
        ],
    );
    let refused = answer["builtin"].as_str().unwrap();
    assert!(
        refused.contains(&format!(
            "table \"users\" has 11 columns but {wide} values were supplied"
        )),
        "{refused}"
    );
    for table in tables {
        assert_eq!(answer[table]["rows"], json!(rows(table)), "{table}");
        assert_eq!(answer[table]["columns"], json!(columns(table)), "{table}");
    }
    assert!(rows("users") == 60 && rows("state_events") == 2);
    assert_eq!(answer["last"], json!(first_last), "{last} of {first_id}");
    // `extra` is JSON, every value an object, its text as the Parquet has it.
    let extra = &answer["extra"];
    assert_eq!(extra[0][0], "JSON", "{extra}");
    assert!(extra[0][1].as_u64().unwrap() > 0, "{extra}");
    assert_eq!(extra[0][1], extra[0][2], "{extra}");
    assert_eq!(answer["extra_changed"], 0);
    assert_eq!(
        answer["event"],
        json!([["login", "2024-01-01", "u1"], ["logout", null, "u2"]])
    );

    // PostgreSQL creates them from its manifest DDL and COPYs the postgres-dialect CSV.
    let Some(bin) = Postgres::bin_dir() else {
        skipped(
            "schema_from_a_wide_runs_manifest (postgres)",
            "PostgreSQL's binaries were not found (run .ci/postgres-setup.sh)",
        );
        return;
    };
    let (pg_ddl, _) = run_ok(&["schema", "--dialect", "postgres", "--manifest", &path]);
    let pg = Postgres::start(bin);
    pg.psql(&pg_ddl);
    let mut script = String::new();
    for table in tables {
        script.push_str(&format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv, HEADER)\n",
            s(&out.join(format!("{table}.csv")))
        ));
    }
    let script_path = write_file(tmp.path(), "load.sql", script.as_bytes());
    pg.psql_file(&script_path);
    for table in tables {
        let count = pg.psql(&format!("SELECT count(*) FROM {table}"));
        assert_eq!(count.trim(), rows(table).to_string(), "{table}");
        let width = pg.psql(&format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}'"
        ));
        assert_eq!(width.trim(), columns(table).to_string(), "{table}");
    }
    let got = pg.psql(&format!(
        "SELECT coalesce(\"{last}\", '<null>') FROM users WHERE user_id = '{first_id}'"
    ));
    assert_eq!(got.trim(), first_last.as_deref().unwrap_or("<null>"));
    // `json` keeps the text as written: every extra as the Parquet has it.
    let got =
        pg.psql("SELECT json_agg(extra::text ORDER BY user_id) FROM users WHERE extra IS NOT NULL");
    let got: Vec<String> = serde_json::from_str(got.trim()).unwrap();
    let mut want: Vec<(String, String)> = Vec::new();
    let extra_at = fields.iter().position(|(name, _)| name == "extra").unwrap();
    for batch in &batches {
        let ids = batch.column(0).as_string::<i32>();
        let extra = batch.column(extra_at).as_string::<i32>();
        for row in (0..batch.num_rows()).filter(|&r| extra.is_valid(r)) {
            want.push((ids.value(row).to_string(), extra.value(row).to_string()));
        }
    }
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, extra)| extra).collect();
    assert_eq!(got, want);
    let _ = writeln!(
        std::io::stderr(),
        "manifest DDL: users {wide} columns, loaded in DuckDB and PostgreSQL"
    );
}

#[test]
fn schema_reads_a_manifest_from_a_bucket() {
    let Some(server) = crate::support::s3::shared("schema_reads_a_manifest_from_a_bucket") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "export.json", &generated(20, 3));
    let bucket = server.bucket("schema-manifest");
    let prefix = format!("s3://{bucket}/nightly");
    let local = tmp.path().join("out");
    for dest in [prefix.as_str(), s(&local)] {
        let output = crate::support::harness::zephr()
            .args(["convert", s(&input), "-o", dest, "--wide-attributes", "-q"])
            .envs(server.env())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (want, _) = run_ok(&["schema", "--dialect", "duckdb", "--manifest", s(&local)]);
    for manifest in [format!("{prefix}/manifest.json"), format!("{prefix}/")] {
        let output = crate::support::harness::zephr()
            .args(["schema", "--dialect", "duckdb", "--manifest", &manifest])
            .envs(server.env())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{manifest}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), want, "{manifest}");
    }
    let output = crate::support::harness::zephr()
        .args([
            "schema",
            "--manifest",
            &format!("s3://{bucket}/nothing/manifest.json"),
        ])
        .envs(server.env())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
