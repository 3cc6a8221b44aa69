//! `zephr-etl fetch` end to end: the real binary against the mock Zephr Admin API.
//!
//! Fetched tables must equal `convert` of the same items, cell for cell (CSV through the
//! strict reference reader, Parquet read back with the parquet crate); faults must neither
//! double nor lose rows; `--resume` must continue without fetching committed pages again;
//! secrets must appear nowhere.

use crate::support::mock_zephr;
use crate::support::reference;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use assert_cmd::Command;
use mock_zephr::{Fault, MockConfig, MockServer, RecordedRequest, StateEventsMock};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::value::RawValue;
use tempfile::TempDir;
use zephr_core::generate::{GenerateSpec, write_export};

const ACCESS_KEY: &str = "AK-cli-test";
const SECRET: &str = "S3CR3T-cli-7d1f0c9e4b2a";
const TABLES: [&str; 3] = ["users", "grants", "attributes"];
const WORK_DIR: &str = ".zephr-etl-fetch";

/// A generated export: its bytes (a JSON array) and the raw JSON of each item.
fn export(users: u64) -> (Vec<u8>, Vec<String>) {
    let spec = GenerateSpec {
        users,
        seed: 7,
        grants: true,
        attributes: true,
    };
    let mut bytes = Vec::new();
    write_export(&spec, &mut bytes).unwrap();
    let items: Vec<&RawValue> = serde_json::from_slice(&bytes).unwrap();
    let items = items.iter().map(|i| i.get().to_owned()).collect();
    (bytes, items)
}

fn mock(items: &[String], faults: Vec<Fault>) -> MockServer {
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items.to_vec());
    cfg.faults = faults;
    cfg.lifetime = Duration::from_secs(90);
    MockServer::start(cfg)
}

/// A mock serving `items` and the state events `events`.
fn events_mock(items: Vec<String>, events: StateEventsMock) -> MockServer {
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items);
    cfg.state_events = Some(events);
    cfg.lifetime = Duration::from_secs(60);
    MockServer::start(cfg)
}

/// `fetch --state-events` of January 2024 into `out`, two rows a page.
fn fetch_january_events(server: &MockServer, out: &Path) -> std::process::Output {
    fetch(server, out, &["--state-events", "--rpp", "2"])
        .args([
            "--events-from",
            "2024-01-01T00:00:00Z",
            "--events-to",
            "2024-02-01",
        ])
        .output()
        .unwrap()
}

/// The binary with credentials in the environment and a bounded lifetime.
fn zephr() -> Command {
    let mut cmd = Command::cargo_bin("zephr-etl").unwrap();
    cmd.env("ZEPHR_ACCESS_KEY", ACCESS_KEY)
        .env("ZEPHR_SECRET_KEY", SECRET)
        .timeout(Duration::from_secs(60));
    cmd
}

/// `fetch` against `server` into `dir` with fast retries, plus `extra`.
fn fetch(server: &MockServer, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = zephr();
    cmd.args([
        "fetch",
        "--tenant",
        "acme",
        "--base-url",
        &server.base_url,
        "-o",
    ])
    .arg(dir)
    .args(["--grants", "--attributes", "--retry-base-ms", "1"])
    .args(extra);
    cmd
}

/// `convert` of `bytes` into a new directory: the expected tables.
fn converted(bytes: &[u8], tmp: &TempDir) -> PathBuf {
    let input = tmp.path().join("export.json");
    std::fs::write(&input, bytes).unwrap();
    let out = tmp.path().join("converted");
    zephr()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .assert()
        .success();
    out
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(1 << 20)
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Both directories hold the same three tables, cell for cell, in CSV and in Parquet.
fn assert_same_tables(got: &Path, want: &Path) {
    for table in TABLES {
        let csv = format!("{table}.csv");
        assert_eq!(
            reference::read_csv(&got.join(&csv)),
            reference::read_csv(&want.join(&csv)),
            "{csv}"
        );
        let parquet = format!("{table}.parquet");
        let (a, b) = (
            read_parquet(&got.join(&parquet)),
            read_parquet(&want.join(&parquet)),
        );
        assert!(
            a.len() <= 1 && b.len() <= 1,
            "{parquet}: small tables read as one batch"
        );
        let columns = |v: &[RecordBatch]| v.first().map(|b| b.columns().to_vec());
        assert_eq!(columns(&a), columns(&b), "{parquet}");
        if let (Some(a), Some(b)) = (a.first(), b.first()) {
            assert_eq!(a.schema().fields(), b.schema().fields(), "{parquet}");
        }
    }
}

/// Names in `dir`, hidden ones included, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn user_pages(server: &MockServer) -> Vec<RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == mock_zephr::USERS_PATH)
        .collect()
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn fetched_tables_equal_convert_rpp3_concurrency_1_and_4() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(10);
    let want = converted(&bytes, &tmp);
    // The reference flattener agrees with `convert` too, so the comparison is not circular.
    let expected = reference::flatten_export(&bytes);
    assert_eq!(
        reference::read_csv(&want.join("users.csv")).1,
        expected.users
    );
    for concurrency in ["1", "4"] {
        // Page 2 answers late, so with 4 in flight pages 3 and 4 arrive before it.
        let server = mock(
            &items,
            vec![Fault::Delay {
                page: 2,
                attempt: 1,
                millis: 150,
            }],
        );
        let out = tmp.path().join(format!("fetched-{concurrency}"));
        let output = fetch(&server, &out, &["--rpp", "3", "--concurrency", concurrency])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        let stderr = stderr_of(&output);
        assert!(stderr.starts_with("Preparing user export...\n"), "{stderr}");
        assert!(
            stderr.contains("Export complete!\nusers: 10 rows"),
            "{stderr}"
        );
        assert_same_tables(&out, &want);
        assert_eq!(
            names(&out),
            [
                "attributes.csv",
                "attributes.parquet",
                "grants.csv",
                "grants.parquet",
                "manifest.json",
                "users.csv",
                "users.parquet"
            ]
        );
        let reqs = user_pages(&server);
        let mut pages: Vec<u32> = reqs.iter().filter_map(|r| r.page).collect();
        pages.sort();
        assert_eq!(pages, [1, 2, 3, 4], "concurrency {concurrency}");
        assert!(reqs.iter().all(|r| r.signature_ok), "{reqs:?}");
        assert!(
            reqs.iter()
                .any(|r| r.query == "attributes=true&grants=true&rpp=3&page=4"),
            "{reqs:?}"
        );
    }
}

#[test]
fn segments_are_assembled_into_the_same_tables() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(23);
    let want = converted(&bytes, &tmp);
    let server = mock(&items, Vec::new());
    let out = tmp.path().join("out");
    let raw = tmp.path().join("raw.txt");
    fetch(
        &server,
        &out,
        &["--rpp", "4", "--segment-pages", "2", "--save-raw"],
    )
    .arg(&raw)
    .args(["--on-error", "skip"])
    .assert()
    .success();
    assert_same_tables(&out, &want);
    assert_eq!(std::fs::read(out.join("rejects.ndjson")).unwrap(), b"");
    // The raw copy: each page body as received, one per line.
    let text = std::fs::read_to_string(&raw).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    let mut ids = Vec::new();
    for line in lines {
        let page: serde_json::Value = serde_json::from_str(line).unwrap();
        for item in page["results"].as_array().unwrap() {
            ids.push(item["user"]["user_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), 23);
    assert!(!out.join(WORK_DIR).exists());
}

#[test]
fn retries_429_with_retry_after_and_503_then_success() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(10);
    let want = converted(&bytes, &tmp);
    let faults = vec![
        Fault::Status {
            page: 2,
            attempt: 1,
            status: 429,
            retry_after: Some("1".into()),
        },
        Fault::Status {
            page: 3,
            attempt: 1,
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            page: 3,
            attempt: 2,
            status: 503,
            retry_after: None,
        },
    ];
    let server = mock(&items, faults);
    let out = tmp.path().join("out");
    let started = Instant::now();
    fetch(&server, &out, &["--rpp", "3", "--retries", "3"])
        .assert()
        .success();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_same_tables(&out, &want);
    let statuses: Vec<(u32, u32, u16)> = user_pages(&server)
        .iter()
        .filter(|r| matches!(r.page, Some(2 | 3)))
        .map(|r| (r.page.unwrap(), r.attempt, r.status))
        .collect();
    for expected in [
        (2, 1, 429),
        (2, 2, 200),
        (3, 1, 503),
        (3, 2, 503),
        (3, 3, 200),
    ] {
        assert!(statuses.contains(&expected), "{statuses:?}");
    }
}

#[test]
fn a_body_cut_off_mid_page_is_fetched_again_without_duplicates() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(10);
    let want = converted(&bytes, &tmp);
    let faults = vec![
        Fault::TruncateBody {
            page: 2,
            attempt: 1,
        },
        Fault::Hangup {
            page: 3,
            attempt: 1,
        },
    ];
    let server = mock(&items, faults);
    let out = tmp.path().join("out");
    fetch(&server, &out, &["--rpp", "3", "--concurrency", "3"])
        .assert()
        .success();
    assert_same_tables(&out, &want);
    let (_, rows) = reference::read_csv(&out.join("users.csv"));
    assert_eq!(rows.len(), 10);
}

#[test]
fn unauthorized_and_forbidden_fail_at_once_naming_what_to_check() {
    let (_, items) = export(4);
    for (fault, expected) in [
        (
            Fault::Unauthorized,
            "Export failed. Please try again.\nzephr-etl: page 1: authentication failed (401): check \
             ZEPHR_ACCESS_KEY and ZEPHR_SECRET_KEY (or the secret key file) for tenant acme, and \
             that this machine's clock is correct (the secret key file is --secret-key-file)\n",
        ),
        (
            Fault::Forbidden,
            "Export failed. Please try again.\nzephr-etl: page 1: permission denied (403): the key pair needs \
             the user-export permission for tenant acme",
        ),
    ] {
        let tmp = TempDir::new().unwrap();
        let server = mock(&items, vec![fault]);
        let out = tmp.path().join("out");
        let output = fetch(&server, &out, &["--retries", "5"]).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = stderr_of(&output);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
        // Final: no retries, and nothing left behind in DIR.
        assert_eq!(user_pages(&server).len(), 1);
        // The run created `out`, so a failed run removes it (issue 12).
        assert!(!out.exists(), "{:?}", names(&out));
    }
}

#[test]
fn an_existing_save_raw_file_is_kept_without_overwrite() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(3);
    let server = mock(&items, Vec::new());
    let raw = tmp.path().join("raw.json");
    std::fs::write(&raw, "PRECIOUS").unwrap();
    let out = tmp.path().join("out");
    for extra in [&[][..], &["--no-paginate"][..]] {
        let mut args = vec!["--save-raw", raw.to_str().unwrap()];
        args.extend_from_slice(extra);
        let output = fetch(&server, &out, &args).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(
            stderr_of(&output).ends_with(&format!(
                "zephr-etl: {} already exists; pass --overwrite to replace it, or choose another \
                 --save-raw file\n",
                raw.display()
            )),
            "{}",
            stderr_of(&output)
        );
        assert_eq!(std::fs::read_to_string(&raw).unwrap(), "PRECIOUS");
        assert!(!out.exists());
    }
    assert!(user_pages(&server).is_empty());
    // With --overwrite the copy replaces it.
    let mut args = vec!["--save-raw", raw.to_str().unwrap(), "--overwrite"];
    args.push("--no-paginate");
    fetch(&server, &out, &args).assert().success();
    assert!(std::fs::read_to_string(&raw).unwrap().starts_with('['));
}

#[test]
fn no_paginate_streams_the_single_array() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(12);
    let want = converted(&bytes, &tmp);
    let server = mock(&items, Vec::new());
    let out = tmp.path().join("out");
    let raw = tmp.path().join("raw.json");
    // --rpp is for state events here: it must not turn the user export into pages.
    fetch(
        &server,
        &out,
        &["--no-paginate", "--rpp", "5", "--save-raw"],
    )
    .arg(&raw)
    .assert()
    .success();
    assert_same_tables(&out, &want);
    let reqs = user_pages(&server);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query, "attributes=true&grants=true");
    assert_eq!(reqs[0].page, Some(0));
    let served = format!("[{}]", items.join(","));
    assert_eq!(std::fs::read_to_string(&raw).unwrap(), served);
}

#[test]
fn resume_continues_after_the_last_committed_page() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(16);
    let want = converted(&bytes, &tmp);
    // 6 pages of 3; page 4 fails twice, which with --retries 1 ends the first run.
    let faults = vec![
        Fault::Status {
            page: 4,
            attempt: 1,
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            page: 4,
            attempt: 2,
            status: 503,
            retry_after: None,
        },
    ];
    let server = mock(&items, faults);
    let out = tmp.path().join("out");
    let args = [
        "--rpp",
        "3",
        "--segment-pages",
        "2",
        "--retries",
        "1",
        "--concurrency",
        "1",
    ];
    let output = fetch(&server, &out, &args).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("Export failed. Please try again.\nzephr-etl: pages 1-3 are kept in "),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rerun the same command with --resume to continue from page 4: page 4: \
             GET /v3/user-export?attributes=true&grants=true&rpp=3&page=4 failed after 2 \
             attempts: HTTP 503"
        ),
        "{stderr}"
    );
    // No table yet: only the hidden work folder.
    assert_eq!(names(&out), [WORK_DIR]);

    // Other arguments: refused, and the saved progress is kept.
    let output = fetch(&server, &out, &["--rpp", "4", "--resume"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("was started with other arguments (query: \"attributes=true&grants=true&rpp=3\" then, \"attributes=true&grants=true&rpp=4\" now); rerun with the same arguments to continue it, or drop --resume to start over"),
        "{stderr}"
    );
    assert_eq!(names(&out), [WORK_DIR]);

    // A successful `fetch ... --resume` into `dir`: its stderr.
    let resumed = |dir: &Path| {
        let output = fetch(&server, dir, &args).arg("--resume").output().unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        stderr_of(&output)
    };
    let before = server.requests().len();
    let stderr = resumed(&out);
    assert!(
        stderr.contains("Resuming from page 4 (9 users already fetched)\n"),
        "{stderr}"
    );
    let asked: Vec<u32> = server.requests()[before..]
        .iter()
        .filter_map(|r| r.page)
        .collect();
    assert_eq!(asked, [4, 5, 6], "committed pages are not fetched again");
    assert_same_tables(&out, &want);
    assert!(!out.join(WORK_DIR).exists());

    // --resume with nothing to resume starts from page 1, and says so.
    let fresh = tmp.path().join("fresh");
    let stderr = resumed(&fresh);
    assert!(
        stderr.contains("Nothing to resume: starting from page 1\n"),
        "{stderr}"
    );
    assert_same_tables(&fresh, &want);
}

/// The pages of each segment the journal of a failed run in `dir` records.
fn journal_segments(dir: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join(WORK_DIR).join("journal.json")).unwrap();
    let journal: serde_json::Value = serde_json::from_str(&text).unwrap();
    journal["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["first_page"].as_u64().unwrap(),
                s["last_page"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn segments_close_by_size_and_a_failed_run_commits_its_open_one() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(10);
    let want = converted(&bytes, &tmp);
    // Page 4 fails twice, which with --retries 1 ends a run after pages 1-3.
    let faults = || {
        (1..=2)
            .map(|attempt| Fault::Status {
                page: 4,
                attempt,
                status: 503,
                retry_after: None,
            })
            .collect()
    };
    let args = ["--rpp", "3", "--retries", "1", "--concurrency", "1"];

    // By default a segment holds about 1 GB: pages 1-3 are one segment, committed on failure.
    let server = mock(&items, faults());
    let out = tmp.path().join("default");
    let output = fetch(&server, &out, &args).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(journal_segments(&out), [(1, 3)]);

    // A byte limit below one page's body closes a segment after every page.
    let server = mock(&items, faults());
    let out = tmp.path().join("small");
    let small = [&args[..], &["--segment-bytes", "1"]].concat();
    let output = fetch(&server, &out, &small).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(journal_segments(&out), [(1, 1), (2, 2), (3, 3)]);
    let output = fetch(&server, &out, &small)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_same_tables(&out, &want);
    assert!(!out.join(WORK_DIR).exists());
}

#[test]
fn a_rerun_without_resume_starts_over() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(10);
    let want = converted(&bytes, &tmp);
    let faults = (1..=2)
        .map(|attempt| Fault::Status {
            page: 3,
            attempt,
            status: 500,
            retry_after: None,
        })
        .collect();
    let server = mock(&items, faults);
    let out = tmp.path().join("out");
    // One page at a time, so that no request of the first run is still on its way when the
    // second starts.
    let args = [
        "--rpp",
        "3",
        "--segment-pages",
        "1",
        "--retries",
        "1",
        "--concurrency",
        "1",
    ];
    fetch(&server, &out, &args).assert().code(1);
    let before = server.requests().len();
    let output = fetch(&server, &out, &args).output().unwrap();
    assert!(output.status.success());
    // The library says what it does; the binary adds the flag that would have kept the pages.
    let work = out.join(".zephr-etl-fetch");
    assert!(
        stderr_of(&output).contains(&format!(
            "Discarding an interrupted fetch in {} (pass --resume to continue one)",
            work.display()
        )),
        "{}",
        stderr_of(&output)
    );
    let asked: Vec<u32> = server.requests()[before..]
        .iter()
        .filter_map(|r| r.page)
        .collect();
    assert_eq!(asked, [1, 2, 3, 4]);
    assert_same_tables(&out, &want);
}

#[test]
fn state_file_is_written_after_success_and_used_as_since() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(5);
    let server = mock(&items, Vec::new());
    let state = tmp.path().join("state").join("acme.json");
    let arg = state.to_str().unwrap();

    // A failed run does not create it.
    let failing = mock(&items, vec![Fault::Unauthorized]);
    fetch(&failing, &tmp.path().join("f"), &["--state-file", arg])
        .assert()
        .code(1);
    assert!(!state.exists());

    let before = zephr_core::timestamp::iso_utc(std::time::SystemTime::now());
    fetch(&server, &tmp.path().join("a"), &["--state-file", arg])
        .assert()
        .success();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["tenant"], "acme");
    let since = saved["last_success_started_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        since >= before && since.ends_with('Z'),
        "{since} vs {before}"
    );
    assert!(
        user_pages(&server)
            .iter()
            .all(|r| !r.query.contains("since="))
    );

    let n = server.requests().len();
    let output = fetch(&server, &tmp.path().join("b"), &["--state-file", arg])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        stderr_of(&output).contains(&format!("users updated since {since} (from --state-file)"))
    );
    let queries: Vec<String> = server.requests()[n..]
        .iter()
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(
        queries,
        [format!("attributes=true&grants=true&since={since}&page=1")]
    );

    // A damaged file is named, with the flag that does without it; nothing is asked.
    let damaged = tmp.path().join("damaged.json");
    std::fs::write(&damaged, "{\"version\": 1").unwrap();
    let n = server.requests().len();
    let output = fetch(
        &server,
        &tmp.path().join("d"),
        &["--state-file", damaged.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr_of(&output);
    assert!(
        err.starts_with(&format!(
            "zephr-etl: state file {} is not one zephr-etl wrote (",
            damaged.display()
        )) && err.ends_with("); fix or delete it, or pass --since\n"),
        "{err}"
    );
    assert_eq!(server.requests().len(), n);

    // --since wins over the file.
    let n = server.requests().len();
    fetch(
        &server,
        &tmp.path().join("c"),
        &["--state-file", arg, "--since", "2020-01-01"],
    )
    .assert()
    .success();
    assert!(server.requests()[n].query.contains("since=2020-01-01&"));
}

fn events_rows() -> Vec<String> {
    [
        r#"{"event_id":"e1","user_id":"u1","state":"active","at":"2024-01-02T03:04:05Z","n":1.50}"#,
        r#"{"event_id":"e2","user_id":"u2","state":null,"detail":{"a":[1, 2]}}"#,
        r#"{"user_id":"u3","event_id":"e3","flag":true,"n":-0}"#,
        r#"{"event_id":"e4","state":"say \"hi\", twice"}"#,
        r#"{"event_id":"e5"}"#,
    ]
    .map(String::from)
    .to_vec()
}

const EVENT_COLUMNS: [&str; 7] = ["event_id", "user_id", "state", "at", "n", "detail", "flag"];

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn expected_event_rows() -> Vec<Vec<Option<String>>> {
    vec![
        vec![
            s("e1"),
            s("u1"),
            s("active"),
            s("2024-01-02T03:04:05Z"),
            s("1.50"),
            None,
            None,
        ],
        vec![s("e2"), s("u2"), None, None, None, s("{\"a\":[1,2]}"), None],
        vec![s("e3"), s("u3"), None, None, s("-0"), None, s("true")],
        vec![
            s("e4"),
            None,
            s("say \"hi\", twice"),
            None,
            None,
            None,
            None,
        ],
        vec![s("e5"), None, None, None, None, None, None],
    ]
}

fn parquet_strings(path: &Path) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    use arrow_array::{Array, StringArray};
    let batches = read_parquet(path);
    let mut rows = Vec::new();
    let mut header = Vec::new();
    for b in &batches {
        header = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for f in b.schema().fields() {
            assert_eq!(f.data_type(), &arrow_schema::DataType::Utf8);
        }
        for row in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        let c = c.as_any().downcast_ref::<StringArray>().unwrap();
                        c.is_valid(row).then(|| c.value(row).to_owned())
                    })
                    .collect(),
            );
        }
    }
    (header, rows)
}

#[test]
fn state_events_are_fetched_with_the_sources_columns() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(4);
    let server = events_mock(
        items,
        StateEventsMock {
            rows: events_rows(),
            fail: false,
            ..Default::default()
        },
    );
    let out = tmp.path().join("out");
    let output = fetch_january_events(&server, &out);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(
            "Downloading state events...\nstate_events: 5 rows, 7 columns\nAll exports complete!\n"
        ),
        "{stderr}"
    );
    let (header, rows) = reference::read_csv(&out.join("state_events.csv"));
    assert_eq!(header, EVENT_COLUMNS);
    assert_eq!(rows, expected_event_rows());
    let (header, rows) = parquet_strings(&out.join("state_events.parquet"));
    assert_eq!(header, EVENT_COLUMNS);
    assert_eq!(rows, expected_event_rows());
    let events: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == mock_zephr::EVENTS_PATH)
        .map(|r| r.query)
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.contains(
        &"eventsExport=true&from=2024-01-01T00:00:00Z&to=2024-02-01&rpp=2&page=3".to_owned()
    ));
    assert!(!out.join(WORK_DIR).exists());
}

#[test]
fn a_failed_state_events_phase_keeps_the_user_tables_and_exits_3() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(4);
    let want = converted(&bytes, &tmp);
    let server = events_mock(
        items,
        StateEventsMock {
            rows: events_rows(),
            fail: true,
            ..Default::default()
        },
    );
    let out = tmp.path().join("out");
    let output = fetch(&server, &out, &["--state-events", "--retries", "1"])
        .args(["--events-from", "2024-01-01", "--events-to", "2024-02-01"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("zephr-etl: State events export failed: page 1: GET /v4/user-export?eventsExport=true&from=2024-01-01&to=2024-02-01&page=1 failed after 2 attempts: HTTP 500"),
        "{stderr}"
    );
    assert_same_tables(&out, &want);
    assert!(
        names(&out)
            .iter()
            .all(|n| !n.starts_with("state_events") && !n.starts_with('.'))
    );
}

#[test]
fn convert_takes_state_events_from_csv_and_ndjson() {
    let tmp = TempDir::new().unwrap();
    let (bytes, _) = export(3);
    let input = tmp.path().join("export.json");
    std::fs::write(&input, &bytes).unwrap();
    let csv = tmp.path().join("events.csv");
    std::fs::write(
        &csv,
        "when,who,what\n2024-01-01,u1,\"a, b\"\n2024-01-02,,x\n",
    )
    .unwrap();
    let ndjson = tmp.path().join("events.ndjson");
    std::fs::write(&ndjson, events_rows().join("\n")).unwrap();
    for (i, (events, header, rows)) in [
        (
            &csv,
            vec!["when", "who", "what"],
            vec![
                vec![s("2024-01-01"), s("u1"), s("a, b")],
                vec![s("2024-01-02"), None, s("x")],
            ],
        ),
        (&ndjson, EVENT_COLUMNS.to_vec(), expected_event_rows()),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("out-{i}"));
        zephr()
            .arg("convert")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .arg("--state-events")
            .arg(events)
            .assert()
            .success()
            .stderr(predicates::str::contains("All exports complete!"));
        let (h, r) = reference::read_csv(&out.join("state_events.csv"));
        assert_eq!(
            (h, r),
            (header.iter().map(|s| s.to_string()).collect(), rows.clone())
        );
        let (h, r) = parquet_strings(&out.join("state_events.parquet"));
        assert_eq!(
            (h, r),
            (header.iter().map(|s| s.to_string()).collect(), rows)
        );
    }
    // A missing events file fails before anything is written.
    let out = tmp.path().join("missing");
    zephr()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--state-events", "nope.csv"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "--state-events: cannot open nope.csv",
        ));
    assert!(!out.exists() || names(&out).is_empty());
    // A broken one exits 3 with the user tables in place.
    let broken = tmp.path().join("broken.ndjson");
    std::fs::write(&broken, "{\"a\":1}\n[2]\n").unwrap();
    let out = tmp.path().join("broken");
    zephr()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("--state-events")
        .arg(&broken)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(format!(
            "zephr-etl: State events export failed: {}: event 2: invalid type: sequence, \
             expected a JSON object (one state event) at line 2",
            broken.display()
        )));
    assert!(out.join("users.csv").exists() && !out.join("state_events.csv").exists());
}

#[test]
fn bad_flags_fail_with_usage_before_any_request() {
    let (_, items) = export(2);
    let server = mock(&items, Vec::new());
    let tmp = TempDir::new().unwrap();
    for (args, message) in [
        (
            vec!["--since", "yesterday"],
            "--since: expected an ISO-8601 time",
        ),
        (
            vec!["--rpp", "0"],
            "--rpp: must be between 1 and 10000, got 0",
        ),
        (
            vec!["--events-from", "2024-01-01"],
            "--events-from and --events-to need --state-events",
        ),
        (
            vec!["--format", "xlsx"],
            "--format xlsx needs --no-paginate with fetch (or fetch with --save-raw FILE, then \
             convert FILE --format xlsx)",
        ),
        (
            vec![
                "--state-events",
                "--events-from",
                "2024-01-01",
                "--events-to",
                "soon",
            ],
            "--events-to: expected an ISO-8601 time",
        ),
    ] {
        fetch(&server, &tmp.path().join("x"), &args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(message));
    }
    zephr()
        .args(["fetch", "--tenant", "acme", "-o"])
        .arg(tmp.path().join("x"))
        .args(["--base-url", "ftp://nope"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--base-url: invalid base URL"));
    // The library's credential error, with the flag named by the binary.
    fetch(&server, &tmp.path().join("x"), &[])
        .env_remove("ZEPHR_SECRET_KEY")
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "ZEPHR_SECRET_KEY is not set and no --secret-key-file was given",
        ));
    assert!(server.requests().is_empty());
}

/// Every file under `dir`, hidden ones and subfolders included.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn assert_no_secret_in(haystacks: &[(String, Vec<u8>)], server: &MockServer) {
    let mut needles = vec![SECRET.to_owned()];
    for r in server.requests() {
        if let Some(auth) = r.authorization {
            needles.push(auth.rsplit(':').next().unwrap().to_owned());
            needles.push(auth);
        }
    }
    for (name, bytes) in haystacks {
        let text = String::from_utf8_lossy(bytes);
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{name} holds {needle:?}");
        }
    }
}

#[test]
fn the_secret_and_the_signature_appear_nowhere() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(10);
    // A careless proxy echoes the request and the secret in an error body, twice on page 3
    // (which with --retries 1 ends the first run and keeps its pages), then all is well.
    let faults = vec![
        Fault::EchoRequest {
            page: 2,
            attempt: 1,
            status: 502,
        },
        Fault::EchoRequest {
            page: 3,
            attempt: 1,
            status: 502,
        },
        Fault::EchoRequest {
            page: 3,
            attempt: 2,
            status: 502,
        },
    ];
    let server = mock(&items, faults);
    let out = tmp.path().join("out");
    let raw = tmp.path().join("raw.txt");
    let args = [
        "--rpp",
        "3",
        "--segment-pages",
        "1",
        "--retries",
        "1",
        "--save-raw",
    ];
    let first = fetch(&server, &out, &args).arg(&raw).output().unwrap();
    assert_eq!(first.status.code(), Some(1));
    assert!(
        stderr_of(&first).contains("[redacted]"),
        "{}",
        stderr_of(&first)
    );
    let mut haystacks = vec![
        ("stdout 1".to_owned(), first.stdout.clone()),
        ("stderr 1".to_owned(), first.stderr.clone()),
    ];
    let work = files_under(&out);
    assert!(work.iter().any(|p| p.ends_with("journal.json")), "{work:?}");
    for path in work {
        haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    let second = fetch(&server, &out, &args)
        .arg(&raw)
        .args(["--resume", "--secret-key-file"])
        .arg({
            let file = tmp.path().join("secret.txt");
            std::fs::write(&file, format!("{SECRET}\n")).unwrap();
            file
        })
        .env_remove("ZEPHR_SECRET_KEY")
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", stderr_of(&second));
    haystacks.push(("stdout 2".to_owned(), second.stdout));
    haystacks.push(("stderr 2".to_owned(), second.stderr));
    for path in files_under(&out) {
        haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    haystacks.push(("raw".to_owned(), std::fs::read(&raw).unwrap()));
    assert!(haystacks.len() > 8);
    assert_no_secret_in(&haystacks, &server);
}

#[test]
fn rejects_keep_their_export_wide_item_numbers_across_segments() {
    let tmp = TempDir::new().unwrap();
    let (_, mut items) = export(10);
    items.insert(7, r#"{"seq-no":99,"no_user":true}"#.to_owned());
    let bytes = format!("[{}]", items.join(",")).into_bytes();
    let input = tmp.path().join("export.json");
    std::fs::write(&input, &bytes).unwrap();
    let want = tmp.path().join("converted");
    zephr()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(&want)
        .args(["-q", "--on-error", "skip"])
        .assert()
        .success();
    let server = mock(&items, Vec::new());
    let out = tmp.path().join("out");
    fetch(
        &server,
        &out,
        &["--rpp", "3", "--segment-pages", "1", "--on-error", "skip"],
    )
    .assert()
    .success()
    .stderr(predicates::str::contains("rejected: 1 items"));
    assert_same_tables(&out, &want);
    let rejects = |dir: &Path| -> Vec<(u64, String)> {
        std::fs::read_to_string(dir.join("rejects.ndjson"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["item"].as_u64().unwrap(), v["raw"].to_string())
            })
            .collect()
    };
    assert_eq!(rejects(&out), rejects(&want));
    assert_eq!(rejects(&out)[0].0, 8);
}

#[test]
fn credentials_in_a_base_url_never_reach_the_message() {
    let out = tempfile::tempdir().unwrap();
    for url in [
        "ftp://user:hunter2@host",
        "http://user:hunter2@ho st",
        "user:hunter2@nowhere",
    ] {
        let output = assert_cmd::Command::cargo_bin("zephr-etl")
            .unwrap()
            .env("ZEPHR_ACCESS_KEY", "AK")
            .env("ZEPHR_SECRET_KEY", "SK")
            .args(["fetch", "--tenant", "t", "--base-url", url, "-o"])
            .arg(out.path().join("o"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}");
        assert!(stderr.contains("invalid base URL"), "{stderr}");
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("user:"),
            "{url}: {stderr}"
        );
    }
}

/// Issue 20 (f): a base URL's query string (a proxy's token) and password are hidden in the
/// usage error, and in the summary and manifest of a run that goes through.
#[test]
fn regression_issue20_a_base_url_query_never_reaches_the_output() {
    let out = tempfile::tempdir().unwrap();
    for (url, shown) in [
        ("http://h/?token=HIDDEN-1", "\"http://h/?<hidden>\""),
        (
            "http://u:HIDDEN-2@h/x?token=HIDDEN-3",
            "\"http://<hidden>@h/x?<hidden>\"",
        ),
        ("acme.example?token=HIDDEN-4", "\"acme.example?<hidden>\""),
        ("https://h/#HIDDEN-5", "\"https://h/#<hidden>\""),
    ] {
        let output = zephr()
            .args(["fetch", "--tenant", "t", "--base-url", url, "-o"])
            .arg(out.path().join("o"))
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "zephr-etl: --base-url: invalid base URL {shown}: expected http://HOST[:PORT] or \
                 https://HOST[:PORT]\n"
            )
        );
        assert!(output.stdout.is_empty(), "{url}");
    }
    // A password in a base URL that works: not in the summary, nor in the manifest.
    let (_, items) = export(3);
    let server = mock(&items, vec![]);
    let with_password = server
        .base_url
        .replacen("http://", "http://user:HIDDEN-6@", 1);
    let dir = out.path().join("run");
    let output = zephr()
        .args([
            "fetch",
            "--tenant",
            "acme",
            "--base-url",
            &with_password,
            "-o",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    for text in [
        stderr_of(&output),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        manifest.clone(),
    ] {
        assert!(!text.contains("HIDDEN"), "{text}");
    }
    let hidden = server.base_url.replacen("http://", "http://<hidden>@", 1);
    assert!(manifest.contains(&format!("\"{hidden}\"")), "{manifest}");
}

/// Issue 20 (g): however the secret key file fails to open or read, its path is not printed
/// (the secret may have been pasted where the path goes, after an existing folder or file).
#[test]
fn regression_issue20_the_secret_key_file_path_is_never_printed() {
    const PASTED: &str = "pasted-secret-0f9e8d7c";
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("existing-file");
    std::fs::write(&file, "x").unwrap();
    std::fs::create_dir_all(tmp.path().join("folder").join(PASTED)).unwrap();
    let looping = tmp.path().join("loop");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    for (given, problem) in [
        // ENOTDIR
        (
            file.join(PASTED),
            "a part of its path before the last `/` is not a folder",
        ),
        // ENOENT
        (
            tmp.path().join("nowhere").join(PASTED),
            "there is no such file",
        ),
        // EISDIR
        (
            tmp.path().join("folder").join(PASTED),
            "it is a folder, not a file",
        ),
        // ELOOP
        (looping.join(PASTED), "Too many levels of symbolic links"),
        // ENAMETOOLONG
        (tmp.path().join(PASTED.repeat(12)), "the name is too long"),
    ] {
        let output = zephr()
            .args([
                "fetch",
                "--tenant",
                "acme",
                "--base-url",
                "http://127.0.0.1:9",
                "-o",
            ])
            .arg(tmp.path().join("out"))
            .arg("--secret-key-file")
            .arg(&given)
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "zephr-etl: --secret-key-file: cannot read the secret key file: {problem}"
            )) && stderr.contains("or set ZEPHR_SECRET_KEY instead"),
            "{stderr}"
        );
        for text in [stderr.as_str(), &String::from_utf8_lossy(&output.stdout)] {
            assert!(!text.contains(PASTED), "{text}");
            assert!(!text.contains(tmp.path().to_str().unwrap()), "{text}");
        }
        assert!(!tmp.path().join("out").exists());
    }
}

// ---- issue 15: a live fetch a nightly job can trust ----

const BIN: &str = env!("CARGO_BIN_EXE_zephr-etl");

/// Waits up to `limit` for `cond`, polling.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Events whose cells are all text, for CSV pages (JSON numbers would be rewritten).
fn csv_event_rows() -> Vec<String> {
    [
        r#"{"event_id":"e1","user_id":"u1","state":"active","at":"2024-01-02T03:04:05Z"}"#,
        r#"{"event_id":"e2","user_id":"u2","state":"say \"hi\", twice\nthen stop","at":"2024-01-03T00:00:00Z"}"#,
        r#"{"event_id":"e3","user_id":"u3","at":"2024-01-04T00:00:00Z"}"#,
        r#"{"event_id":"e4","user_id":"u4","state":"outside the window","at":"2024-03-01T00:00:00Z"}"#,
        r#"{"event_id":"e5","user_id":"u5","state":"paused","at":"2024-01-31T23:59:59Z"}"#,
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn regression_issue15_csv_state_events_over_several_pages() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(3);
    let server = events_mock(
        items,
        StateEventsMock {
            rows: csv_event_rows(),
            csv: true,
            time_field: Some("at".into()),
            ..Default::default()
        },
    );
    let out = tmp.path().join("out");
    let output = fetch_january_events(&server, &out);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("state_events: 4 rows, 4 columns\nAll exports complete!\n"),
        "{stderr}"
    );
    let header = ["event_id", "user_id", "state", "at"];
    let expected = vec![
        vec![s("e1"), s("u1"), s("active"), s("2024-01-02T03:04:05Z")],
        vec![
            s("e2"),
            s("u2"),
            s("say \"hi\", twice\nthen stop"),
            s("2024-01-03T00:00:00Z"),
        ],
        vec![s("e3"), s("u3"), None, s("2024-01-04T00:00:00Z")],
        vec![s("e5"), s("u5"), s("paused"), s("2024-01-31T23:59:59Z")],
    ];
    let (h, rows) = reference::read_csv(&out.join("state_events.csv"));
    assert_eq!(h, header);
    assert_eq!(rows, expected);
    let (h, rows) = parquet_strings(&out.join("state_events.parquet"));
    assert_eq!(h, header);
    assert_eq!(rows, expected);
    // Two full pages of 2, then a page of none (a header only) ends the export.
    let pages: Vec<u32> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == mock_zephr::EVENTS_PATH && r.status == 200)
        .filter_map(|r| r.page)
        .collect();
    for page in 1..=3 {
        assert!(pages.contains(&page), "{pages:?}");
    }
    assert!(!out.join(WORK_DIR).exists());
}

#[test]
fn regression_issue15_grants_and_attributes_only_when_asked() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(4);
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items);
    cfg.honour_includes = true;
    cfg.lifetime = Duration::from_secs(60);
    let server = MockServer::start(cfg);
    let out = tmp.path().join("out");
    zephr()
        .args(["fetch", "--tenant", "acme", "--base-url", &server.base_url])
        .arg("-o")
        .arg(&out)
        .args(["--rpp", "3", "-q"])
        .assert()
        .success();
    let (_, users) = reference::read_csv(&out.join("users.csv"));
    assert_eq!(users.len(), 4);
    for table in ["grants", "attributes"] {
        let (_, rows) = reference::read_csv(&out.join(format!("{table}.csv")));
        assert!(rows.is_empty(), "{table}: {rows:?}");
    }
}

/// `pages 1-N are kept` in a failed run's message: N.
fn kept_pages(stderr: &str) -> u32 {
    let at = stderr
        .find("pages 1-")
        .unwrap_or_else(|| panic!("{stderr}"))
        + "pages 1-".len();
    let digits: String = stderr[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn regression_issue15_sigint_keeps_the_pages_received_and_resume_continues() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(20);
    let want = converted(&bytes, &tmp);
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items);
    // Ten pages of 2, each answered after a while, so that the signal comes mid-fetch.
    cfg.page_delay = Duration::from_millis(250);
    cfg.lifetime = Duration::from_secs(90);
    let server = MockServer::start(cfg);
    let out = tmp.path().join("out");
    let args = ["--rpp", "2", "--concurrency", "1"];
    // The arguments `fetch` adds, so that the --resume below is the same command.
    let mut child = std::process::Command::new(BIN)
        .args(["fetch", "--tenant", "acme", "--base-url", &server.base_url])
        .arg("-o")
        .arg(&out)
        .args(["--grants", "--attributes", "--retry-base-ms", "1"])
        .args(args)
        .env("ZEPHR_ACCESS_KEY", ACCESS_KEY)
        .env("ZEPHR_SECRET_KEY", SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || user_pages(&server).len() >= 3),
        "the fetch did not get going"
    );
    let status = std::process::Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        wait_for(Duration::from_secs(30), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "no exit after SIGINT"
    );
    let output = child.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let kept = kept_pages(&stderr);
    assert!((1..10).contains(&kept), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Export failed. Please try again.\nzephr-etl: pages 1-{kept} are kept in {}",
            out.join(WORK_DIR).display()
        )) && stderr.ends_with(&format!(
            "; rerun the same command with --resume to continue from page {}: interrupted \
             (Ctrl-C or SIGTERM)\n",
            kept + 1
        )),
        "{stderr}"
    );
    assert_eq!(journal_segments(&out), [(1, u64::from(kept))]);

    // The request the interrupted run had in flight is logged once its delay is over: wait
    // until the log has been still for a while.
    let mut seen = server.requests().len();
    let mut still_since = Instant::now();
    let started = Instant::now();
    while still_since.elapsed() < Duration::from_millis(800)
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = server.requests().len();
        if now != seen {
            seen = now;
            still_since = Instant::now();
        }
    }
    let before = server.requests().len();
    let output = fetch(&server, &out, &args)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let asked: Vec<u32> = server.requests()[before..]
        .iter()
        .filter_map(|r| r.page)
        .collect();
    let rest: Vec<u32> = (kept + 1..=10).collect();
    assert_eq!(asked, rest, "pages 1-{kept} are not asked for again");
    eprintln!("issue 15: SIGINT kept pages 1-{kept}; --resume asked for {asked:?}");
    assert_same_tables(&out, &want);
    assert!(!out.join(WORK_DIR).exists());
}

#[test]
fn regression_issue15_a_stalled_page_is_retried_after_the_timeout() {
    let tmp = TempDir::new().unwrap();
    let (bytes, items) = export(10);
    let want = converted(&bytes, &tmp);
    // Page 2 says nothing at all; page 3 stalls after its headers and half its body.
    let faults = vec![
        Fault::Stall {
            page: 2,
            attempt: 1,
            millis: 4_000,
            after_headers: false,
        },
        Fault::Stall {
            page: 3,
            attempt: 1,
            millis: 4_000,
            after_headers: true,
        },
    ];
    let server = mock(&items, faults);
    let out = tmp.path().join("out");
    let started = Instant::now();
    let output = fetch(
        &server,
        &out,
        &["--rpp", "3", "--concurrency", "1", "--timeout", "1"],
    )
    .output()
    .unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "{}", stderr_of(&output));
    eprintln!("issue 15: two stalled pages recovered with --timeout 1 in {took:?} in all");
    assert_same_tables(&out, &want);
    let attempts = |page| {
        user_pages(&server)
            .iter()
            .filter(|r| r.page == Some(page))
            .count()
    };
    assert_eq!((attempts(2), attempts(3)), (2, 2));

    // Without retries the run ends, and says how long a page may take at most.
    let server = mock(
        &items,
        vec![Fault::Stall {
            page: 1,
            attempt: 1,
            millis: 4_000,
            after_headers: false,
        }],
    );
    let out = tmp.path().join("no-retries");
    let output = fetch(&server, &out, &["--timeout", "1", "--retries", "0"])
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed after 1 attempts: no data for 1 s (")
            && stderr.contains(
                "with these timeout and retry settings a page is given up after at most 2 s of \
                 silence and backoff)"
            ),
        "{stderr}"
    );
}

#[test]
fn regression_issue15_progress_bar_under_a_terminal() {
    let tmp = TempDir::new().unwrap();
    let (_, items) = export(12);
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items);
    cfg.page_delay = Duration::from_millis(300);
    cfg.lifetime = Duration::from_secs(60);
    let server = MockServer::start(cfg);
    let out = tmp.path().join("out");
    // `script` gives the run a pseudo-terminal for stderr, as an interactive shell has. A
    // batch per page, so that the bar moves with every page.
    // A wide terminal, so that indicatif does not cut the line at the default 80 columns.
    let command = format!(
        "stty cols 200 rows 40; {BIN} fetch --tenant acme --base-url {} -o '{}' --rpp 2 --concurrency 1 \
         --batch-size 2",
        server.base_url,
        out.display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("ZEPHR_ACCESS_KEY", ACCESS_KEY)
        .env("ZEPHR_SECRET_KEY", SECRET)
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("`script` (util-linux) runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    assert!(screen.contains("Preparing user export..."), "{screen}");
    // A bar with a percentage and the estimated size of a paginated fetch, users as users.
    assert!(screen.contains("% Downloading: "), "{screen}");
    assert!(screen.contains("MB (estimated) ("), "{screen}");
    assert!(screen.contains(" users)"), "{screen}");
    assert!(screen.contains("#"), "{screen}");
    assert!(screen.contains("Export complete!"), "{screen}");
    assert!(!screen.contains(" rows)"), "{screen}");
}

#[test]
fn regression_issue15_a_closed_stderr_never_panics() {
    let tmp = TempDir::new().unwrap();
    let (bytes, _) = export(50);
    let input = tmp.path().join("export.json");
    std::fs::write(&input, &bytes).unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, b"[{\"user\":").unwrap();
    for (file, code) in [(&input, 0), (&bad, 1)] {
        let out = tmp.path().join(format!("out-{code}"));
        let mut child = std::process::Command::new(BIN)
            .arg("convert")
            .arg(file)
            .arg("-o")
            .arg(&out)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away at once, as `| head -1` does after its line.
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{}", file.display());
        assert_eq!(out.join("users.csv").exists(), code == 0);
    }
}

#[test]
fn regression_issue15_credentials_are_configuration_errors() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    let base = [
        "fetch",
        "--tenant",
        "acme",
        "--base-url",
        "http://127.0.0.1:9",
    ];
    // No access key: exit 2, as a missing ZEPHR_ETL_PII_KEY.
    let output = zephr()
        .args(base)
        .arg("-o")
        .arg(&out)
        .env_remove("ZEPHR_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("ZEPHR_ACCESS_KEY is not set"));
    // The secret itself given where its file's name goes is not echoed.
    let output = zephr()
        .args(base)
        .arg("-o")
        .arg(&out)
        .args(["--secret-key-file", SECRET])
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert!(
        stderr.contains("--secret-key-file: cannot read the secret key file: "),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn regression_issue15_an_envelope_without_results_is_no_export() {
    let tmp = TempDir::new().unwrap();
    for (name, body) in [
        ("null.json", r#"{"results": null, "meta": {"count": 0}}"#),
        (
            "none.json",
            r#"{"meta": {"count": 0, "rpp": 500}, "links": {"next": null}}"#,
        ),
    ] {
        let input = tmp.path().join(name);
        std::fs::write(&input, body).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        let output = zephr()
            .arg("convert")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("Export complete!"), "{name}: {stderr}");
        assert!(stderr.contains("results"), "{name}: {stderr}");
    }
}

#[test]
fn regression_issue15_bash_completes_after_a_subcommand() {
    let output = zephr().args(["completions", "bash"]).output().unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("zephr-etl.bash");
    std::fs::write(&path, script).unwrap();
    // What bash does on `zephr-etl convert --wide<TAB>`.
    let probe = format!(
        "source '{}'; COMP_WORDS=(zephr-etl convert --wide); COMP_CWORD=2; \
         _zephr__etl zephr-etl --wide convert; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let output = std::process::Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .unwrap();
    let completions = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(completions, "--wide-attributes\n");
}

#[test]
fn nul_counts_of_the_postgres_dialect_survive_segments() {
    let tmp = TempDir::new().unwrap();
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/loaders.json"))
            .unwrap();
    let items: Vec<&RawValue> = serde_json::from_slice(&bytes).unwrap();
    let items: Vec<String> = items.iter().map(|i| i.get().to_owned()).collect();
    let server = mock(&items, Vec::new());
    let out = tmp.path().join("out");
    fetch(
        &server,
        &out,
        &[
            "--rpp",
            "1",
            "--segment-pages",
            "1",
            "--csv-dialect",
            "postgres",
        ],
    )
    .assert()
    .success();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let nul = |table: &str| manifest["tables"][table]["nul_replaced"].clone();
    // One username and one attribute value hold a NUL, in different pages.
    assert_eq!(nul("users"), serde_json::Value::from(1));
    assert_eq!(nul("grants"), serde_json::Value::from(0));
    assert_eq!(nul("attributes"), serde_json::Value::from(1));
}
