//! `--format delta` (issue 22): Delta Lake tables kept run after run, into a folder and into
//! the S3 test server, read back by an independent reader (the `deltalake` Python package,
//! delta-rs's own binding) and compared cell by cell with the expected current state.
//!
//! The expected state is built here from the items themselves (the run's users replace theirs,
//! the last item of a repeated user_id wins, `--delete-missing` drops the absent), written as
//! an export and converted plainly to Parquet, which the same Python reads: both sides then go
//! through one reader and one formatting of values.
//!
//! The reader is the python of `ZEPHR_ETL_TEST_PYTHON` with `deltalake` installed
//! (`.ci/duckdb-setup.sh`); without it the tests say SKIPPED, and under CI they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::harness::{generated, write_file, zephr};

/// The item tables.
const ITEM_TABLES: [&str; 3] = ["users", "grants", "attributes"];

/// The python with `deltalake`, or None after a visible SKIPPED line (a failure under CI).
fn reader(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("ZEPHR_ETL_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let usable = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import deltalake, pyarrow.parquet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if usable {
        return python;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: ZEPHR_ETL_TEST_PYTHON has no deltalake under CI; .ci/run sets it from \
         .ci/duckdb-setup.sh"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: no python with the deltalake package (set ZEPHR_ETL_TEST_PYTHON from \
         .ci/duckdb-setup.sh)"
    );
    None
}

/// Reads tables with Python: `delta` (DeltaTable at URI/NAME, with storage options) or
/// `parquet` (DIR/NAME.parquet). Each table: its version (Delta), columns, and rows of cells as
/// text (None for null), sorted.
const READ: &str = r#"
import json, sys
def rows(table):
    out = sorted(json.dumps([None if v is None else str(v) for v in r.values()])
                 for r in table.to_pylist())
    return [json.loads(x) for x in out]
kind, where, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
result = {}
for name in names:
    if kind == "delta":
        from deltalake import DeltaTable
        dt = DeltaTable(where + "/" + name, storage_options=options or None)
        table = dt.to_pyarrow_table()
        result[name] = {"version": dt.version(), "columns": table.column_names,
                        "types": [str(f.type) for f in table.schema], "rows": rows(table)}
    else:
        import pyarrow.parquet as pq
        table = pq.read_table(where + "/" + name + ".parquet")
        result[name] = {"columns": table.column_names,
                        "types": [str(f.type) for f in table.schema], "rows": rows(table)}
print(json.dumps(result), flush=True)
# The binding's I/O threads can abort the interpreter's teardown ("terminate called without
# an active exception"): the answer is out, leave at once.
import os
os._exit(0)
"#;

fn python_json(python: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .args(["-c", READ])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

/// The Delta tables `names` at `uri` (a folder or s3:// URL) as the deltalake package reads them.
fn read_delta(python: &Path, uri: &str, names: &[&str], options: &Value) -> Value {
    let names = json!(names).to_string();
    python_json(python, &["delta", uri, &names, &options.to_string()])
}

/// The items of a generated export.
fn items(users: u64, seed: u64) -> Vec<Value> {
    serde_json::from_slice(&generated(users, seed)).expect("a generated export is JSON")
}

fn user_id(item: &Value) -> String {
    item["user"]["user_id"]
        .as_str()
        .expect("items have user ids")
        .to_string()
}

/// The current state after `runs` (each a list of items) with `--merge` (and
/// `--delete-missing` when `delete_missing`): per user_id, its last item; in first-seen order.
fn merged(runs: &[&[Value]], delete_missing: bool) -> Vec<Value> {
    let mut order: Vec<String> = Vec::new();
    let mut state: BTreeMap<String, Value> = BTreeMap::new();
    for run in runs {
        if delete_missing {
            let present: std::collections::BTreeSet<String> = run.iter().map(user_id).collect();
            state.retain(|id, _| present.contains(id));
            order.retain(|id| present.contains(id));
        }
        for item in run.iter() {
            let id = user_id(item);
            if state.insert(id.clone(), item.clone()).is_none() {
                order.push(id);
            }
        }
    }
    order.into_iter().map(|id| state[&id].clone()).collect()
}

/// The expected tables: `items` converted plainly to Parquet, read by the same Python.
fn expected(python: &Path, dir: &Path, items: &[Value]) -> Value {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let input = write_file(
        dir,
        &format!("expected-{n}.json"),
        json!(items).to_string().as_bytes(),
    );
    let out = dir.join(format!("expected-{n}"));
    zephr()
        .args(["convert"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--format", "parquet", "--quiet"])
        .assert()
        .success();
    let names = json!(ITEM_TABLES).to_string();
    python_json(python, &["parquet", out.to_str().unwrap(), &names])
}

/// Every item table of `actual` (Delta) equals `expected` cell by cell, columns included.
fn assert_state(actual: &Value, expected: &Value) {
    for table in ITEM_TABLES {
        assert_eq!(
            actual[table]["columns"], expected[table]["columns"],
            "{table}: columns"
        );
        let (a, e) = (
            actual[table]["rows"].as_array().unwrap(),
            expected[table]["rows"].as_array().unwrap(),
        );
        assert_eq!(a.len(), e.len(), "{table}: row count");
        for (i, (ra, re)) in a.iter().zip(e).enumerate() {
            assert_eq!(ra, re, "{table}: row {i} (sorted)");
        }
    }
}

fn versions(actual: &Value) -> Vec<i64> {
    ITEM_TABLES
        .iter()
        .map(|t| actual[t]["version"].as_i64().unwrap())
        .collect()
}

/// An incremental run over `base`: some users changed (email, grants dropped, an attribute
/// added), new users, and one user_id twice (the second item differs and must win).
fn incremental(base: &[Value]) -> Vec<Value> {
    let mut run = Vec::new();
    for (i, item) in base.iter().enumerate().filter(|(i, _)| i % 4 == 1) {
        let mut item = item.clone();
        item["user"]["identifiers"]["email_address"] = json!(format!("changed-{i}@example.com"));
        if i % 8 == 1 {
            item["grants"] = json!({"results": []});
        }
        item["user"]["attributes"]["merged-run"] = json!(i);
        run.push(item);
    }
    run.extend(items(6, 77));
    // A repeat: the first item of the repeated user changes its email, the second (the one that
    // counts) keeps a different one and no attributes.
    let mut first = base[2].clone();
    first["user"]["identifiers"]["email_address"] = json!("first-of-two@example.com");
    let mut last = base[2].clone();
    last["user"]["identifiers"]["email_address"] = json!("last-of-two@example.com");
    last["user"]["attributes"] = json!({});
    run.insert(0, first);
    run.push(last);
    run
}

/// `convert INPUT -o OUT --format delta EXTRA...`: its output.
fn delta_run(
    input: &Path,
    out: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> std::process::Output {
    let mut cmd = zephr();
    cmd.arg("convert")
        .arg(input)
        .args(["-o", out, "--format", "delta"])
        .args(extra)
        .env_remove("ZEPHR_ETL_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn ok(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "run failed: {stderr}");
    stderr
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("a manifest"))
        .expect("manifest JSON")
}

#[test]
fn delta_create_refuse_overwrite_in_a_folder() {
    let Some(python) = reader("delta_create_refuse_overwrite_in_a_folder") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = items(40, 5);
    let input = write_file(tmp.path(), "base.json", json!(base).to_string().as_bytes());
    let out = tmp.path().join("tables");
    let out_s = out.to_str().unwrap();
    ok(&delta_run(&input, out_s, &["--quiet"], &[]));
    let actual = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_state(&actual, &expected(&python, tmp.path(), &base));
    assert_eq!(versions(&actual), [0, 0, 0]);
    // Column types as the Parquet output has them.
    let types = actual["users"]["types"].as_array().unwrap();
    assert!(
        types[5]
            .as_str()
            .unwrap()
            .starts_with("timestamp[us, tz=UTC]"),
        "{types:?}"
    );
    assert_eq!(types[9], "int64");
    let m = manifest(&out);
    assert_eq!(m["delta"]["users"]["version"], 0);
    assert_eq!(m["delta"]["grants"]["path"], "grants");
    assert_eq!(m["parameters"]["format"], json!(["delta"]));
    assert_eq!(m["parameters"]["table_mode"], "create");
    assert_eq!(m["delta"]["txn"]["app_id"], "zephr-etl");
    assert!(!out.join(".zephr-etl-delta-run.json").exists());

    // Tables that hold rows: refused without a flag, naming the fix, and left unchanged.
    let refused = delta_run(&input, out_s, &[], &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is a Delta table that holds rows")
            && stderr.contains("--merge")
            && stderr.contains("--overwrite"),
        "{stderr}"
    );
    let after = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_eq!(versions(&after), [0, 0, 0]);

    // --overwrite: every row replaced by the run's, one new version per table.
    let other = items(7, 9);
    let input2 = write_file(
        tmp.path(),
        "other.json",
        json!(other).to_string().as_bytes(),
    );
    ok(&delta_run(&input2, out_s, &["--overwrite", "--quiet"], &[]));
    let actual = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_state(&actual, &expected(&python, tmp.path(), &other));
    assert_eq!(versions(&actual), [1, 1, 1]);
    assert_eq!(manifest(&out)["delta"]["attributes"]["version"], 1);
}

#[test]
fn delta_merge_replaces_the_runs_users_and_keeps_the_others() {
    let Some(python) = reader("delta_merge_replaces_the_runs_users_and_keeps_the_others") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = items(40, 5);
    let input = write_file(tmp.path(), "base.json", json!(base).to_string().as_bytes());
    let out = tmp.path().join("tables");
    let out_s = out.to_str().unwrap();
    // --merge into nothing creates the tables.
    ok(&delta_run(&input, out_s, &["--merge", "--quiet"], &[]));
    let run = incremental(&base);
    let input2 = write_file(tmp.path(), "run.json", json!(run).to_string().as_bytes());
    let stderr = ok(&delta_run(&input2, out_s, &["--merge"], &[]));
    assert!(
        stderr.contains("1 items repeated an earlier item's user_id"),
        "{stderr}"
    );
    let want = expected(&python, tmp.path(), &merged(&[&base, &run], false));
    let actual = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_state(&actual, &want);
    assert_eq!(versions(&actual), [1, 1, 1]);
    // The repeated user: its last item's email and no attributes.
    let repeated = user_id(&base[2]);
    let users = actual["users"]["rows"].as_array().unwrap();
    let row = users.iter().find(|r| r[0] == repeated.as_str()).unwrap();
    assert_eq!(row[1], "last-of-two@example.com");
    assert!(
        !actual["attributes"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[0] == repeated.as_str())
    );
    assert_eq!(manifest(&out)["delta"]["repeated_items"], 1);

    // The same run again: the same state, each table one version further (a new run).
    ok(&delta_run(&input2, out_s, &["--merge", "--quiet"], &[]));
    let again = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_state(&again, &want);
    assert_eq!(versions(&again), [2, 2, 2]);
}

#[test]
fn delta_merge_delete_missing_removes_absent_users() {
    let Some(python) = reader("delta_merge_delete_missing_removes_absent_users") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = items(30, 11);
    let input = write_file(tmp.path(), "base.json", json!(base).to_string().as_bytes());
    let out = tmp.path().join("tables");
    let out_s = out.to_str().unwrap();
    ok(&delta_run(&input, out_s, &["--quiet"], &[]));
    // A full export: half the users, one changed, two new.
    let mut full: Vec<Value> = base.iter().step_by(2).cloned().collect();
    full[3]["user"]["registration_state"] = json!("partial");
    full.extend(items(2, 12));
    let input2 = write_file(tmp.path(), "full.json", json!(full).to_string().as_bytes());
    ok(&delta_run(
        &input2,
        out_s,
        &["--merge", "--delete-missing", "--quiet"],
        &[],
    ));
    let actual = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_state(
        &actual,
        &expected(&python, tmp.path(), &merged(&[&base, &full], true)),
    );
    assert_eq!(actual["users"]["rows"].as_array().unwrap().len(), 17);
    assert_eq!(versions(&actual), [1, 1, 1]);
}

#[test]
fn delta_usage_mistakes_exit_2() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "in.json", &generated(2, 1));
    let out = tmp.path().join("o");
    for (args, says) in [
        (
            vec!["--format", "delta,parquet"],
            "--format delta cannot be combined with other formats",
        ),
        (
            vec!["--merge"],
            "which a folder or bucket of files does not hold: add --format delta",
        ),
        (vec!["--format", "delta", "--delete-missing"], "--merge"),
        (
            vec!["--format", "delta", "--merge", "--overwrite"],
            "--overwrite",
        ),
    ] {
        let output = zephr()
            .arg("convert")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!out.join("users").exists());
    let output = zephr()
        .args([
            "fetch",
            "--tenant",
            "t",
            "--since",
            "2024-01-01T00:00:00Z",
            "--format",
            "delta",
            "--merge",
            "--delete-missing",
            "-o",
        ])
        .arg(&out)
        .env("ZEPHR_ACCESS_KEY", "k")
        .env("ZEPHR_SECRET_KEY", "s")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("so it needs a full export"));
}

/// The steps of a Delta commit where the fault hook can kill the run (as kill -9 would).
const STEPS: [&str; 6] = [
    "delta-files",
    "delta-record",
    "delta-users",
    "delta-grants",
    "delta-attributes",
    "delta-manifest",
];

#[test]
fn delta_kill_at_each_step_then_rerun_completes_without_applying_twice() {
    let Some(python) =
        reader("delta_kill_at_each_step_then_rerun_completes_without_applying_twice")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = items(30, 21);
    let run = incremental(&base);
    let input = write_file(tmp.path(), "base.json", json!(base).to_string().as_bytes());
    let input2 = write_file(tmp.path(), "run.json", json!(run).to_string().as_bytes());
    let want = expected(&python, tmp.path(), &merged(&[&base, &run], false));
    let before = expected(&python, tmp.path(), &base);
    for (n, step) in STEPS.iter().enumerate() {
        let out = tmp.path().join(format!("t{n}"));
        let out_s = out.to_str().unwrap();
        ok(&delta_run(&input, out_s, &["--quiet"], &[]));
        let killed = delta_run(
            &input2,
            out_s,
            &["--merge", "--quiet"],
            &[("ZEPHR_ETL_FAULT", format!("commit:{step}"))],
        );
        assert!(!killed.status.success(), "{step}: the fault did not fire");
        // Each table reads at its previous or its new version, whole.
        let now = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
        for (i, table) in ITEM_TABLES.iter().enumerate() {
            let committed = STEPS.iter().position(|s| *s == format!("delta-{table}"));
            let new = committed.is_some_and(|c| c <= n) || n == STEPS.len() - 1;
            assert_eq!(versions(&now)[i], i64::from(new), "{step}: {table} version");
            let reference = if new { &want } else { &before };
            assert_eq!(
                now[table]["rows"], reference[table]["rows"],
                "{step}: {table} rows"
            );
        }
        // Another command is refused while the interrupted run stands.
        if n > 0 {
            let other = delta_run(&input, out_s, &["--merge", "--quiet"], &[]);
            assert_eq!(other.status.code(), Some(1), "{step}");
            let stderr = String::from_utf8_lossy(&other.stderr);
            assert!(
                stderr.contains("rerun that same command"),
                "{step}: {stderr}"
            );
        }
        // The same command again completes the tables left behind, none twice.
        let stderr = ok(&delta_run(&input2, out_s, &["--merge"], &[]));
        if (2..STEPS.len() - 1).contains(&n) {
            assert!(stderr.contains("already committed"), "{step}: {stderr}");
        }
        let done = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
        assert_state(&done, &want);
        assert_eq!(versions(&done), [1, 1, 1], "{step}: applied once");
        assert!(!out.join(".zephr-etl-delta-run.json").exists(), "{step}");
        assert_eq!(manifest(&out)["delta"]["users"]["version"], 1, "{step}");
    }
}

#[test]
fn delta_kill_at_random_moments_then_rerun_converges() {
    let Some(python) = reader("delta_kill_at_random_moments_then_rerun_converges") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = items(3_000, 31);
    let run = incremental(&base[..400]);
    let input = write_file(tmp.path(), "base.json", json!(base).to_string().as_bytes());
    let input2 = write_file(tmp.path(), "run.json", json!(run).to_string().as_bytes());
    let want = expected(&python, tmp.path(), &merged(&[&base, &run], false));
    let before = expected(&python, tmp.path(), &base);
    let out = tmp.path().join("tables");
    let out_s = out.to_str().unwrap();
    ok(&delta_run(&input, out_s, &["--quiet"], &[]));
    let bin = assert_cmd::cargo::cargo_bin("zephr-etl");
    // Delays spread over a run's length (the seed makes them repeatable).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(20 + x % 600);
        let mut child = Command::new(&bin)
            .arg("convert")
            .arg(&input2)
            .args(["-o", out_s, "--format", "delta", "--merge", "--quiet"])
            .env_remove("ZEPHR_ETL_FAULT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // SIGKILL: no handler, no destructor runs.
        let _ = child.kill();
        let _ = child.wait();
        let now = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
        for table in ITEM_TABLES {
            let rows = &now[table]["rows"];
            assert!(
                *rows == want[table]["rows"] || *rows == before[table]["rows"],
                "round {round} ({delay:?}): {table} is neither the old nor the new state"
            );
        }
        // Finish it: the same command completes whatever the kill left.
        ok(&delta_run(&input2, out_s, &["--merge", "--quiet"], &[]));
        let done = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
        assert_state(&done, &want);
        assert!(!out.join(".zephr-etl-delta-run.json").exists());
    }
}

#[test]
fn delta_state_events_are_appended_by_merge() {
    let Some(python) = reader("delta_state_events_are_appended_by_merge") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "in.json", &generated(5, 3));
    let events = write_file(
        tmp.path(),
        "events.csv",
        b"user_id,event-type,at\nu1,login,2024-01-01T00:00:00Z\nu2,logout,2024-01-02T00:00:00Z\n",
    );
    let out = tmp.path().join("tables");
    let out_s = out.to_str().unwrap();
    for mode in [&[][..], &["--merge"][..]] {
        let output = zephr()
            .arg("convert")
            .arg(&input)
            .args([
                "-o",
                out_s,
                "--format",
                "delta",
                "--quiet",
                "--state-events",
            ])
            .arg(&events)
            .args(mode)
            .output()
            .unwrap();
        ok(&output);
    }
    let actual = read_delta(&python, out_s, &["state_events", "users"], &json!({}));
    assert_eq!(
        actual["state_events"]["columns"],
        json!(["user_id", "event_type", "at"])
    );
    let rows = actual["state_events"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0], json!(["u1", "login", "2024-01-01T00:00:00Z"]));
    assert_eq!(rows[1], rows[0]);
    assert_eq!(actual["state_events"]["version"], 1);
    // The users were merged, not appended.
    assert_eq!(actual["users"]["rows"].as_array().unwrap().len(), 5);
    assert_eq!(manifest(&out)["delta"]["state_events"]["version"], 1);
}

#[test]
fn delta_tables_in_the_s3_test_server() {
    let Some(python) = reader("delta_tables_in_the_s3_test_server") else {
        return;
    };
    let Some(moto) = crate::support::s3::shared("delta_tables_in_the_s3_test_server") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let bucket = moto.bucket("delta");
    let url = format!("s3://{bucket}/zephr");
    let env = moto.env();
    let options: serde_json::Map<String, Value> =
        env.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let options = Value::Object(options);
    let base = items(30, 41);
    let run = incremental(&base);
    let input = write_file(tmp.path(), "base.json", json!(base).to_string().as_bytes());
    let input2 = write_file(tmp.path(), "run.json", json!(run).to_string().as_bytes());
    ok(&delta_run(&input, &url, &["--quiet"], &env));
    let actual = read_delta(&python, &url, &ITEM_TABLES, &options);
    assert_state(&actual, &expected(&python, tmp.path(), &base));
    // Refused without a flag.
    assert_eq!(delta_run(&input, &url, &[], &env).status.code(), Some(1));
    // Killed between two table commits, then completed by the same command.
    let mut killed_env = env.clone();
    killed_env.push(("ZEPHR_ETL_FAULT", "commit:delta-users".into()));
    assert!(
        !delta_run(&input2, &url, &["--merge", "--quiet"], &killed_env)
            .status
            .success()
    );
    let half = read_delta(&python, &url, &ITEM_TABLES, &options);
    assert_eq!(versions(&half), [1, 0, 0]);
    // The killed run's lease on the bucket lock would hold for its term: let it expire now.
    moto.python(&format!(
        "import boto3, os\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         s3.delete_object(Bucket='{bucket}', Key='zephr/.zephr-etl.lock')"
    ));
    ok(&delta_run(&input2, &url, &["--merge", "--quiet"], &env));
    let want = merged(&[&base, &run], false);
    let actual = read_delta(&python, &url, &ITEM_TABLES, &options);
    assert_state(&actual, &expected(&python, tmp.path(), &want));
    assert_eq!(versions(&actual), [1, 1, 1]);
    // A full export with --delete-missing.
    let full: Vec<Value> = want.iter().take(10).cloned().collect();
    let input3 = write_file(tmp.path(), "full.json", json!(full).to_string().as_bytes());
    ok(&delta_run(
        &input3,
        &url,
        &["--merge", "--delete-missing", "--quiet"],
        &env,
    ));
    let actual = read_delta(&python, &url, &ITEM_TABLES, &options);
    assert_state(
        &actual,
        &expected(&python, tmp.path(), &merged(&[&want, &full], true)),
    );
    let manifest: Value = serde_json::from_str(&moto.python(&format!(
        "import boto3, os\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         print(s3.get_object(Bucket='{bucket}', Key='zephr/manifest.json')['Body'].read().decode())"
    )))
    .unwrap();
    assert_eq!(manifest["delta"]["users"]["version"], 2);
}

#[test]
fn delta_fetch_creates_then_merges_page_by_page() {
    use crate::support::mock_zephr::{MockConfig, MockServer};
    let Some(python) = reader("delta_fetch_creates_then_merges_page_by_page") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = items(25, 51);
    let run = incremental(&base);
    let out = tmp.path().join("tables");
    let out_s = out.to_str().unwrap();
    for (items, extra) in [(&base, &[][..]), (&run, &["--merge"][..])] {
        let raw: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        let mut cfg = MockConfig::new("ak", "sk", raw);
        cfg.lifetime = Duration::from_secs(60);
        let server = MockServer::start(cfg);
        // Seven users a page, a segment every two pages: the run's user ids come from several
        // pipeline runs, assembled at the end.
        let output = zephr()
            .args([
                "fetch",
                "--tenant",
                "acme",
                "--base-url",
                &server.base_url,
                "-o",
            ])
            .arg(&out)
            .args([
                "--grants",
                "--attributes",
                "--rpp",
                "7",
                "--segment-pages",
                "2",
            ])
            .args(["--format", "delta", "--quiet"])
            .args(extra)
            .env("ZEPHR_ACCESS_KEY", "ak")
            .env("ZEPHR_SECRET_KEY", "sk")
            .output()
            .unwrap();
        ok(&output);
    }
    let actual = read_delta(&python, out_s, &ITEM_TABLES, &json!({}));
    assert_state(
        &actual,
        &expected(&python, tmp.path(), &merged(&[&base, &run], false)),
    );
    assert_eq!(versions(&actual), [1, 1, 1]);
    assert_eq!(manifest(&out)["delta"]["repeated_items"], 1);
}
