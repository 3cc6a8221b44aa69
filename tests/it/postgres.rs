//! `-o postgresql://...` (SPEC section 7) against a real PostgreSQL cluster started per test
//! (`tests/support/postgres.rs`; skipped with a notice when PostgreSQL is not installed,
//! never under CI):
//! - the tables hold exactly what `\copy` of the postgres-dialect CSV of the same run loads
//!   (every cell, wide columns of every type included);
//! - create, refuse, `--overwrite`, `--merge` (a user repeated inside one run: its last item
//!   wins, grants and attributes too) and `--merge --delete-missing`, checked cell by cell;
//! - the flags that do not go together exit 2 before connecting;
//! - the password is never shown (wrong password, password in the URL, the pgpass file);
//! - two runs on one schema wait for each other (the advisory lock);
//! - `kill -9` at each step of the load (the test hook `ZEPHR_ETL_FAULT`) and at random
//!   moments leaves the previous state; the rerun converges;
//! - `fetch --merge` from the mock Zephr API, paginated and streamed;
//! - batch sizes 1, 3 and the default give the same tables.

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::loaders::{Postgres, run_ok, s, skipped};
use crate::support::harness::{generated, write_file, zephr};
use crate::support::mock_zephr::{MockConfig, MockServer};

const TABLES: [&str; 3] = ["users", "grants", "attributes"];

/// A cluster, or `None` after the skip notice (a failure under CI).
fn cluster(test: &str) -> Option<Postgres> {
    match Postgres::bin_dir() {
        Some(bin) => Some(Postgres::start(bin)),
        None => {
            skipped(
                test,
                "PostgreSQL's binaries were not found (run .ci/postgres-setup.sh, or set \
                 ZEPHR_ETL_TEST_PG_BIN)",
            );
            None
        }
    }
}

/// Runs the binary with `args` and no password variables of the caller's.
fn run(args: &[&str]) -> Output {
    zephr()
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env_remove("ZEPHR_ETL_FAULT")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every row of every table of `schema` as text, sorted: what two states are compared by.
fn dump(pg: &Postgres, schema: &str) -> [String; 3] {
    TABLES.map(|table| {
        pg.psql(&format!(
            "SELECT t::text FROM \"{schema}\".\"{table}\" AS t ORDER BY 1"
        ))
    })
}

/// An export of hand-written items.
fn export(dir: &Path, name: &str, items: &[String]) -> String {
    let path = write_file(dir, name, format!("[{}]", items.join(",\n")).as_bytes());
    s(&path).to_string()
}

/// An item: user `id` with `email`, its grants (ids) and attributes (key, value).
fn item(id: &str, email: &str, grants: &[&str], attributes: &[(&str, &str)]) -> String {
    let grants: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                r#"{{"grantId":"{g}","product_id":"p-{g}","startTime":"2024-01-02T03:04:05.5Z"}}"#
            )
        })
        .collect();
    let attributes: Vec<String> = attributes
        .iter()
        .map(|(k, v)| format!(r#""{k}":"{v}""#))
        .collect();
    format!(
        r#"{{"user":{{"user_id":"{id}","identifiers":{{"email_address":"{email}"}},"attributes":{{{}}}}},"seq-no":7,"grants":{{"results":[{}]}}}}"#,
        attributes.join(","),
        grants.join(",")
    )
}

#[test]
fn postgres_tables_hold_what_copy_of_the_csv_loads_and_tables_with_rows_are_refused() {
    let Some(pg) = cluster("postgres_tables_hold_what_copy_of_the_csv_loads") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (input, schema) = (
        data.join("loaders.json"),
        data.join("loaders-user-schema.json"),
    );
    let wide = ["--wide-attributes", "--user-schema", s(&schema)];
    let url = pg.url("zephr");
    let mut args = vec!["convert", s(&input), "-o", &url];
    args.extend(wide);
    let (_, err) = run_ok(&args);
    assert!(err.contains("(create): users "), "{err}");
    // The same run as postgres-dialect CSV, \copy'd into tables made by `schema`.
    let out = tmp.path().join("csv");
    let mut csv_args = vec![
        "convert",
        s(&input),
        "-o",
        s(&out),
        "--csv-dialect",
        "postgres",
    ];
    csv_args.extend(wide);
    run_ok(&csv_args);
    let (ddl, _) = run_ok(&[
        "schema",
        "--dialect",
        "postgres",
        "--user-schema",
        s(&schema),
    ]);
    pg.psql(&format!(
        "CREATE SCHEMA want; SET search_path = want; {ddl}"
    ));
    let mut script = String::new();
    for table in TABLES {
        script.push_str(&format!(
            "\\copy want.{table} FROM '{}' WITH (FORMAT csv, HEADER)\n",
            s(&out.join(format!("{table}.csv")))
        ));
    }
    pg.psql_file(&write_file(tmp.path(), "load.sql", script.as_bytes()));
    let got = dump(&pg, "zephr");
    assert_eq!(got, dump(&pg, "want"));
    assert!(!got[1].is_empty() && !got[2].is_empty());
    // Keys, indexes and json, as the README says.
    let indexes = pg.psql(
        "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'zephr' \
         ORDER BY 1",
    );
    assert!(
        indexes.contains(
            "users_pkey CREATE UNIQUE INDEX users_pkey ON zephr.users USING btree (user_id)"
        ),
        "{indexes}"
    );
    assert!(
        indexes.contains("grants_user_id_idx CREATE INDEX"),
        "{indexes}"
    );
    assert!(
        indexes.contains("attributes_user_id_idx CREATE INDEX"),
        "{indexes}"
    );
    assert_eq!(
        pg.psql(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'zephr' \
             AND column_name = 'extra' ORDER BY table_name"
        ),
        "json\njson\n"
    );
    // A second run without a mode is refused and changes nothing.
    let refused = run(&args);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(
            "zephr.users already holds rows; pass --merge to update the users of this run, \
             --overwrite to replace every row"
        ),
        "{}",
        stderr(&refused)
    );
    assert_eq!(dump(&pg, "zephr"), got);
    // --overwrite replaces every row: the same run gives the same tables.
    let mut overwrite = args.clone();
    overwrite.push("--overwrite");
    run_ok(&overwrite);
    assert_eq!(dump(&pg, "zephr"), got);
    let runs = pg.psql(
        "SELECT mode || ' ' || (manifest->'tables'->'users'->>'rows') FROM zephr.zephr_etl_runs \
         ORDER BY finished_at",
    );
    let users = pg.psql("SELECT count(*) FROM zephr.users");
    assert_eq!(users, "3\n");
    assert_eq!(runs, "create 3\noverwrite 3\n");
}

#[test]
fn postgres_merge_replaces_the_runs_users_and_the_last_item_of_a_repeated_user_wins() {
    let Some(pg) = cluster("postgres_merge_replaces_the_runs_users") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let first = export(
        tmp.path(),
        "first.json",
        &[
            item("a", "a@x", &["g1", "g2"], &[("k", "1")]),
            item("b", "b@x", &["g3"], &[("k", "2")]),
            item("c", "c@x", &[], &[("k", "3")]),
        ],
    );
    let second = export(
        tmp.path(),
        "second.json",
        &[
            item("b", "b-early@x", &["g4", "g5"], &[("early", "yes")]),
            item("d", "d@x", &["g6"], &[]),
            item("b", "b-last@x", &["g9"], &[("z", "last")]),
        ],
    );
    let url = pg.url("zephr");
    run_ok(&["convert", &first, "-o", &url]);
    for batch in ["1", "3", "1024"] {
        let (_, err) = run_ok(&[
            "convert",
            &second,
            "-o",
            &url,
            "--merge",
            "--batch-size",
            batch,
        ]);
        assert!(
            err.contains(
                "1 items repeated a user_id of a later item of the run; the last item of each \
                 user_id was applied"
            ),
            "{err}"
        );
        assert!(
            err.contains("(merge): users 4 rows, grants 4 rows, attributes 3 rows"),
            "{err}"
        );
        assert_eq!(
            pg.psql("SELECT user_id, email_address, seq_no FROM zephr.users ORDER BY 1"),
            "a|a@x|7\nb|b-last@x|7\nc|c@x|7\nd|d@x|7\n",
            "--batch-size {batch}"
        );
        assert_eq!(
            pg.psql(
                "SELECT user_id, grant_id, product_id, start_time = '2024-01-02T03:04:05.5Z' \
                 FROM zephr.grants ORDER BY 1, 2"
            ),
            "a|g1|p-g1|t\na|g2|p-g2|t\nb|g9|p-g9|t\nd|g6|p-g6|t\n"
        );
        assert_eq!(
            pg.psql("SELECT user_id, key, value, value_type FROM zephr.attributes ORDER BY 1, 2"),
            "a|k|1|string\nb|z|last|string\nc|k|3|string\n"
        );
    }
    let record = pg.psql(
        "SELECT manifest->'parameters'->>'repeated_user_ids', \
         manifest->'parameters'->'run_rows'->>'users', manifest->'tables'->'users'->>'rows' \
         FROM zephr.zephr_etl_runs WHERE mode = 'merge' ORDER BY finished_at DESC LIMIT 1",
    );
    assert_eq!(record, "1|3|4\n");
}

#[test]
fn postgres_merge_delete_missing_removes_the_users_absent_from_the_run() {
    let Some(pg) = cluster("postgres_merge_delete_missing") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let first = export(
        tmp.path(),
        "first.json",
        &[
            item("a", "a@x", &["g1"], &[("k", "1")]),
            item("b", "b@x", &["g2"], &[("k", "2")]),
            item("c", "c@x", &["g3"], &[("k", "3")]),
        ],
    );
    let full = export(
        tmp.path(),
        "full.json",
        &[
            item("b", "b2@x", &[], &[("k", "new")]),
            item("d", "d@x", &["g4"], &[]),
        ],
    );
    let url = pg.url("s1");
    run_ok(&["convert", &first, "-o", &url]);
    let (_, err) = run_ok(&["convert", &full, "-o", &url, "--merge", "--delete-missing"]);
    assert!(
        err.contains("; 2 users absent from the run removed"),
        "{err}"
    );
    assert_eq!(
        pg.psql("SELECT user_id, email_address FROM s1.users ORDER BY 1"),
        "b|b2@x\nd|d@x\n"
    );
    assert_eq!(
        pg.psql("SELECT user_id, grant_id FROM s1.grants ORDER BY 1"),
        "d|g4\n"
    );
    assert_eq!(
        pg.psql("SELECT user_id, key, value FROM s1.attributes ORDER BY 1"),
        "b|k|new\n"
    );
}

#[test]
fn postgres_usage_errors_exit_2_before_connecting() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "e.json", &generated(2, 1));
    let input = s(&input);
    // Port 9 on loopback: nothing listens, so a run that tried to connect would exit 1.
    let url = "postgresql://etl@127.0.0.1:9/db?schema=z";
    let folder = tmp.path().join("out");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["convert", input, "-o", url, "--delete-missing"],
            "--delete-missing <",
        ),
        (
            vec!["convert", input, "-o", s(&folder), "--merge"],
            "--merge and --delete-missing keep current-state tables, which a folder or bucket",
        ),
        (
            vec!["convert", input, "-o", url, "--merge", "--overwrite"],
            "cannot be used with",
        ),
        (
            vec![
                "convert",
                input,
                "-o",
                "postgresql://etl@127.0.0.1:9/db?sslmode=require",
            ],
            "sslmode=require needs TLS",
        ),
        (
            vec!["convert", input, "-o", url, "--on-error", "skip"],
            "--on-error skip writes rejects.ndjson",
        ),
        (
            vec!["convert", input, "-o", "postgresql://etl@127.0.0.1:9/"],
            "no database",
        ),
    ];
    for (args, want) in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert!(!folder.exists(), "a refused run made its folder");
    for window in [
        &["--since", "2024-01-01T00:00:00Z"][..],
        &["--registered-since", "2024-01-01T00:00:00Z"][..],
        &["--registered-before", "2024-01-01T00:00:00Z"][..],
    ] {
        let out = zephr()
            .env("ZEPHR_ACCESS_KEY", "AK")
            .env("ZEPHR_SECRET_KEY", "SK")
            .args([
                "fetch",
                "--tenant",
                "acme",
                "--base-url",
                "http://127.0.0.1:9",
            ])
            .args(["-o", url, "--merge", "--delete-missing"])
            .args(window)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{window:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "--delete-missing removes every user absent from the run, so it needs a full \
                 export; {} fetches only some users",
                window[0]
            )),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn postgres_password_comes_from_the_environment_or_pgpass_and_never_shows() {
    let Some(bin) = Postgres::bin_dir() else {
        skipped(
            "postgres_password_never_shows",
            "PostgreSQL's binaries were not found",
        );
        return;
    };
    let secret = "Pw-7c1e2f-right";
    let wrong = "Pw-3a9d0b-wrong";
    let pg = Postgres::start_with_password(bin, secret);
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "e.json", &generated(5, 2));
    let url = pg.url("zephr");
    let base = ["convert", s(&input), "-o", &url, "--merge"];
    let shown = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A wrong password: exit 1, authentication named, no password shown.
    let out = zephr()
        .env("PGPASSWORD", wrong)
        .args(base)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let text = shown(&out);
    assert!(
        text.contains("cannot connect to postgresql://postgres@127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(secret), "{text}");
    // A password in the URL: exit 2 without echoing it.
    let in_url = url.replace("postgres@", &format!("postgres:{wrong}@"));
    let out = run(&["convert", s(&input), "-o", &in_url]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(!shown(&out).contains(wrong), "{}", shown(&out));
    assert!(
        shown(&out).contains("a password in the URL is refused"),
        "{}",
        shown(&out)
    );
    // No password at all: the server asks for one.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = zephr()
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env("HOME", &home)
        .args(base)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    // PGPASSWORD works.
    let out = zephr()
        .env("PGPASSWORD", secret)
        .args(base)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(!shown(&out).contains(secret));
    // ~/.pgpass (0600) works; readable by others, it is ignored with a warning.
    use std::os::unix::fs::PermissionsExt;
    let pgpass = home.join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:postgres:postgres:{secret}\n", pg.port()),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_home = |home: &Path, passfile: Option<&Path>| {
        let mut cmd = zephr();
        cmd.env_remove("PGPASSWORD").env("HOME", home);
        match passfile {
            Some(p) => cmd.env("PGPASSFILE", p),
            None => cmd.env_remove("PGPASSFILE"),
        };
        cmd.args(base).output().unwrap()
    };
    let out = with_home(&home, None);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(!shown(&out).contains(secret));
    // PGPASSFILE names another file.
    let other = tmp.path().join("passfile");
    std::fs::rename(&pgpass, &other).unwrap();
    let out = with_home(&home, Some(&other));
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = with_home(&home, Some(&other));
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(shown(&out).contains("is readable by its group or others and is ignored"));
    assert!(!shown(&out).contains(secret));
    // Nothing the runs wrote holds it either.
    let records = pg.psql("SELECT manifest::text FROM zephr.zephr_etl_runs");
    assert!(!records.contains(secret) && !records.contains(wrong));
}

#[test]
fn postgres_concurrent_runs_on_one_schema_wait_for_each_other() {
    let Some(pg) = cluster("postgres_concurrent_runs") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "e.json", &generated(50, 3));
    let url = pg.url("zephr");
    let spawn = |mode: Option<&str>, fault: &str| -> Child {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("zephr-etl"));
        cmd.args(["convert", "-q", s(&input), "-o", &url])
            .args(mode)
            .env("ZEPHR_ETL_FAULT", fault)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let started = Instant::now();
    // The first run holds the lock for 3 s; the second (a merge) must wait for it to commit.
    let first = spawn(None, "pause:pg-locked:3000");
    thread::sleep(Duration::from_millis(800));
    let second = spawn(Some("--merge"), "");
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(started.elapsed() >= Duration::from_millis(3000));
    assert_eq!(
        pg.psql("SELECT mode FROM zephr.zephr_etl_runs ORDER BY finished_at"),
        "create\nmerge\n"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM zephr.users"), "50\n");
}

/// Runs with the fault hook and checks that it killed the run (no exit status).
fn killed_at(args: &[&str], fault: &str) {
    let out = zephr()
        .env_remove("PGPASSWORD")
        .env("ZEPHR_ETL_FAULT", fault)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "{fault}: {}", stderr(&out));
}

#[test]
fn postgres_kill_9_during_a_load_leaves_the_previous_state_and_the_rerun_converges() {
    let Some(pg) = cluster("postgres_kill_9_during_a_load") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let v1 = write_file(tmp.path(), "v1.json", &generated(300, 5));
    let v2 = write_file(tmp.path(), "v2.json", &generated(3000, 6));
    // The expected end state: v1, then v2 merged, with no fault.
    let clean = pg.url("clean");
    run_ok(&["convert", "-q", s(&v1), "-o", &clean]);
    // How long a merge takes here, to spread the random kills below over it.
    let started = Instant::now();
    run_ok(&["convert", "-q", s(&v2), "-o", &clean, "--merge"]);
    let span = started.elapsed().as_micros().max(1000) as u64;
    let merged = dump(&pg, "clean");
    let url = pg.url("zephr");
    run_ok(&["convert", "-q", s(&v1), "-o", &url]);
    let before = dump(&pg, "zephr");
    assert_ne!(before, merged);
    let args = [
        "convert",
        "-q",
        s(&v2),
        "-o",
        &url,
        "--merge",
        "--batch-size",
        "50",
    ];
    for step in [
        "pg-locked",
        "pg-copy#5",
        "pg-copied",
        "pg-applied",
        "pg-commit",
    ] {
        killed_at(&args, &format!("commit:{step}"));
        assert_eq!(dump(&pg, "zephr"), before, "killed at {step}");
    }
    // Real kills at random moments: the tables are always one state or the other. A round
    // that ends in the new state is followed by a return to the old one (an overwrite with
    // the first export), so that every round can show a half-applied run.
    let reset = ["convert", "-q", s(&v1), "-o", &url, "--overwrite"];
    let mut seed: u64 = 23;
    let (mut killed, mut old, mut new) = (0, 0, 0);
    for _ in 0..8 {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("zephr-etl"))
            .args(args)
            .env_remove("ZEPHR_ETL_FAULT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        thread::sleep(Duration::from_micros((seed >> 33) % (span + span / 10)));
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() {
            killed += 1;
        }
        let now = dump(&pg, "zephr");
        if now == before {
            old += 1;
        } else {
            assert_eq!(
                now, merged,
                "a state that is neither the old nor the new one"
            );
            new += 1;
            run_ok(&reset);
            assert_eq!(dump(&pg, "zephr"), before);
        }
    }
    eprintln!("kill -9: {killed} of 8 runs killed; then {old} times the old state, {new} the new");
    assert!(killed > 0, "no run was killed while running");
    run_ok(&args);
    assert_eq!(dump(&pg, "zephr"), merged);
    // A merge repeated changes nothing more.
    run_ok(&args);
    assert_eq!(dump(&pg, "zephr"), merged);
}

#[test]
fn postgres_fetch_merge_from_the_api_paginated_and_streamed() {
    let Some(pg) = cluster("postgres_fetch_merge_from_the_api") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let first: Vec<String> = vec![
        item("a", "a@x", &["g1"], &[("k", "1")]),
        item("b", "b@x", &["g2"], &[("k", "2")]),
        item("c", "c@x", &[], &[]),
    ];
    let second: Vec<String> = vec![
        item("b", "b2@x", &["g7"], &[("k", "two")]),
        item("e", "e@x", &[], &[("k", "5")]),
        item("b", "b3@x", &["g8"], &[("k", "three")]),
    ];
    let state = tmp.path().join("nightly.state");
    for (schema, extra) in [
        ("paged", &["--rpp", "2"][..]),
        ("streamed", &["--no-paginate"][..]),
    ] {
        let url = pg.url(schema);
        let _ = std::fs::remove_file(&state);
        for (run, items) in [&first, &second].into_iter().enumerate() {
            let mut cfg = MockConfig::new("AK-pg", "SK-pg-secret", items.clone());
            cfg.lifetime = Duration::from_secs(60);
            let server = MockServer::start(cfg);
            let out = zephr()
                .env("ZEPHR_ACCESS_KEY", "AK-pg")
                .env("ZEPHR_SECRET_KEY", "SK-pg-secret")
                .env_remove("PGPASSWORD")
                .args(["fetch", "--tenant", "acme", "--base-url", &server.base_url])
                .args(["--grants", "--attributes", "--retry-base-ms", "1"])
                .args(["-o", &url, "--merge"])
                .args(extra)
                .arg("--state-file")
                .arg(&state)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{schema}: {}", stderr(&out));
            assert!(!stderr(&out).contains("SK-pg-secret"));
            // The state file moves on after each committed run; the second run asks for the
            // users updated since the first started.
            let recorded = std::fs::read_to_string(&state).unwrap();
            assert!(recorded.contains("\"acme\""), "{recorded}");
            let since = server
                .requests()
                .iter()
                .filter(|r| r.path.ends_with("user-export"))
                .all(|r| r.query.contains("since="));
            assert_eq!(since, run == 1, "{schema} run {run}");
        }
        assert_eq!(
            pg.psql(&format!(
                "SELECT user_id, email_address FROM {schema}.users ORDER BY 1"
            )),
            "a|a@x\nb|b3@x\nc|c@x\ne|e@x\n",
            "{schema}"
        );
        assert_eq!(
            pg.psql(&format!(
                "SELECT user_id, grant_id FROM {schema}.grants ORDER BY 1, 2"
            )),
            "a|g1\nb|g8\n",
            "{schema}"
        );
        assert_eq!(
            pg.psql(&format!(
                "SELECT user_id, key, value FROM {schema}.attributes ORDER BY 1, 2"
            )),
            "a|k|1\nb|k|three\ne|k|5\n",
            "{schema}"
        );
        let source = pg.psql(&format!(
            "SELECT manifest->'source'->>'tenant' FROM {schema}.zephr_etl_runs LIMIT 1"
        ));
        assert_eq!(source, "acme\n");
    }
    drop(tmp);
}

#[test]
fn postgres_batch_sizes_and_threads_give_the_same_tables() {
    let Some(pg) = cluster("postgres_batch_sizes") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    // Users repeated across batch boundaries: the last item must win whatever the batching.
    let base: Vec<serde_json::Value> = serde_json::from_slice(&generated(40, 9)).unwrap();
    let later: Vec<serde_json::Value> = serde_json::from_slice(&generated(6, 10)).unwrap();
    let mut all = base.clone();
    let mut want = String::new();
    for (i, mut v) in later.into_iter().enumerate() {
        let id = base[i * 7]["user"]["user_id"].clone();
        v["user"]["user_id"] = id.clone();
        let email = v["user"]["identifiers"]["email_address"]
            .as_str()
            .unwrap_or("");
        want.push_str(&format!("{}|{email}\n", id.as_str().unwrap()));
        all.push(v);
    }
    let bytes = serde_json::to_vec(&all).unwrap();
    let input = write_file(tmp.path(), "e.json", &bytes);
    let mut dumps = Vec::new();
    for (schema, extra) in [
        ("b1", &["--batch-size", "1"][..]),
        ("b3", &["--batch-size", "3", "--threads", "1"][..]),
        ("bdefault", &[][..]),
    ] {
        let url = pg.url(schema);
        let mut args = vec!["convert", "-q", s(&input), "-o", &url];
        args.extend(extra);
        run_ok(&args);
        dumps.push(dump(&pg, schema));
    }
    assert_eq!(dumps[0], dumps[1]);
    assert_eq!(dumps[0], dumps[2]);
    assert_eq!(dumps[0][0].lines().count(), 40);
    let ids: Vec<String> = (0..6)
        .map(|i| format!("'{}'", base[i * 7]["user"]["user_id"].as_str().unwrap()))
        .collect();
    let got = pg.psql(&format!(
        "SELECT user_id, coalesce(email_address, '') FROM bdefault.users WHERE user_id IN ({}) \
         ORDER BY array_position(ARRAY[{}], user_id)",
        ids.join(", "),
        ids.join(", ")
    ));
    assert_eq!(got, want);
}

#[test]
fn postgres_refused_connections_and_foreign_tables_fail_with_exit_1_and_change_nothing() {
    let tmp = TempDir::new().unwrap();
    let input = write_file(tmp.path(), "e.json", &generated(3, 4));
    // Nothing listens on port 9 of the loopback.
    let out = run(&[
        "convert",
        s(&input),
        "-o",
        "postgresql://etl@127.0.0.1:9/db?schema=z",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot connect to postgresql://etl@127.0.0.1:9/db?schema=z: "),
        "{}",
        stderr(&out)
    );
    let Some(pg) = cluster("postgres_foreign_tables_fail_with_exit_1") else {
        return;
    };
    // A users table someone else made, with other columns: refused, left as it was.
    pg.psql("CREATE SCHEMA mine; CREATE TABLE mine.users (user_id text, name text); INSERT INTO mine.users VALUES ('u', 'n')");
    let out = run(&["convert", s(&input), "-o", &pg.url("mine"), "--merge"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "mine.users has the columns (user_id, name) but this run writes (user_id, \
             email_address, username, email_verified, tracking_id, registered, \
             registration_tenant, registration_state, last_login, seq_no, extra); drop or \
             rename that table"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg.psql("SELECT * FROM mine.users"), "u|n\n");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'mine'"),
        "1\n",
        "the run created tables it then rolled back"
    );
}
