//! Bad input, faults and atomic outputs (issue 5, SPEC section 5), through the real binary.
//!
//! - `broken_corpus`: every file in `tests/data/broken/` ends with exit 1, the exact message
//!   pinned here, and an empty output directory. Offsets, lines and columns are computed from
//!   the file's own bytes by this test, not copied from the tool's output.
//! - `--on-error skip`, `--max-errors`, `--max-item-bytes`: exact rejects.ndjson lines and tables.
//! - Atomicity: existing outputs, `--overwrite`, the lock, SIGINT and SIGTERM mid-run.
//! - `mutated_exports_convert_or_fail_cleanly`: a property test that mutates small valid
//!   exports at random. It runs 64 cases by default (a few seconds); for a longer search run
//!   `PROPTEST_CASES=5000 cargo test --test it mutated`.
//! - `secrets`: no rendering of an HTTP client error holds the secret or a request signature.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use support::harness::{dir_listing, generated};
use tempfile::TempDir;

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_zephr-etl");

/// Where the broken files live; the tool runs there so messages show bare file names.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broken")
}

/// Runs `zephr-etl ARGS` in `cwd`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a successful default run leaves in its folder: the tables and the manifest (every
/// run writes one since issue 12).
const TABLE_FILES: [&str; 7] = [
    "attributes.csv",
    "attributes.parquet",
    "grants.csv",
    "grants.parquet",
    "manifest.json",
    "users.csv",
    "users.parquet",
];

/// `byte B, line L, column C` of `offset` in `bytes`, counted here independently of the tool.
fn place(bytes: &[u8], offset: usize) -> String {
    let before = &bytes[..offset];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |k| k + 1);
    format!(
        "byte {offset}, line {line}, column {}",
        offset - line_start + 1
    )
}

/// Offset of the first occurrence of `needle`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// Offset of the `n`-th (0-based) line start.
fn line_start(bytes: &[u8], n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .expect("enough lines")
        .0
        + 1
}

/// Everything a decoder yields before its error, read as the tool reads (1 MiB at a time).
fn decoded_prefix(mut decoder: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => panic!("the compressed file is meant to be broken"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return out,
        }
    }
}

const TRUNCATED: &str = "the export is truncated: download it again or check the disk was not full";
const EXPECTED_EXPORT: &str = "expected a Zephr export (a JSON array of items, a paginated \
                               `{\"results\": ...}` object or NDJSON)";
const SKIP_HINT: &str = "(pass --on-error skip to write such items to rejects.ndjson and go on)";
const KEY_NOT_UNICODE: &str = "the key is not valid Unicode: it holds half a surrogate pair \
                               (a \\uD800 to \\uDFFF escape without its other half)";
const TIMESTAMP_HINT: &str =
    "is not a timestamp; expected ISO-8601 such as 2021-02-24T15:43:28Z or 2022-06-01 00:00:00";

/// The expected stderr of a run on `file` (with `--quiet`).
fn expected_stderr(file: &str, bytes: &[u8]) -> String {
    // A broken-JSON message at `offset`.
    let at = |offset: usize, problem: &str| {
        format!("zephr-etl: {file}: {}: {problem}\n", place(bytes, offset))
    };
    // A bad-item message for item `n` starting at `offset`.
    let bad = |n: u64, offset: usize, user_id: Option<&str>, field: Option<&str>, problem: &str| {
        let user = user_id
            .map(|u| format!(", user_id {u}"))
            .unwrap_or_default();
        let field = field.map(|f| format!(", field `{f}`")).unwrap_or_default();
        format!(
            "zephr-etl: bad item: item {n} ({file}: {}{user}){field}: {problem}\n{SKIP_HINT}\n",
            place(bytes, offset)
        )
    };
    let end = bytes.len();
    // Item 2 of the truncated files starts on line 2 (after `[` and item 1).
    let in_item =
        |n: u64, offset: usize| format!("(in item {n}, which starts at {})", place(bytes, offset));
    match file {
        "empty.json" => at(0, &format!("the input is empty; {EXPECTED_EXPORT}")),
        "whitespace-only.json" => at(
            end,
            &format!("the input holds only whitespace; {EXPECTED_EXPORT}"),
        ),
        "not-json.txt" => at(
            0,
            "expected `[` or `{` at the start of a Zephr export, found `h` (this input is not JSON)",
        ),
        "html-error-page.json" => at(
            0,
            "expected `[` or `{` at the start of a Zephr export, found `<` (an HTML or XML page? this input is not JSON)",
        ),
        "top-level-number.json" => at(
            0,
            "expected `[` or `{` at the start of a Zephr export, found a JSON number (a single value is not an export)",
        ),
        "top-level-string.json" => at(
            0,
            "expected `[` or `{` at the start of a Zephr export, found a JSON string (a single value is not an export)",
        ),
        "truncated-mid-key.json" | "truncated-in-escape.json" | "truncated-mid-string.json" => at(
            end,
            &format!(
                "the input ends inside a string; {TRUNCATED} {}",
                in_item(2, line_start(bytes, 2))
            ),
        ),
        "truncated-mid-number.json" => at(
            end,
            &format!(
                "the input ends inside an unclosed object or array; {TRUNCATED} {}",
                in_item(2, line_start(bytes, 2))
            ),
        ),
        "truncated-ndjson.ndjson" => at(
            end,
            &format!(
                "the input ends inside an unclosed object or array; {TRUNCATED} {}",
                in_item(2, line_start(bytes, 1))
            ),
        ),
        "deep-nesting-top-level.json" => at(
            end,
            // The first `[` opens the export, the second a page of items (`[[item, ...]]`).
            &format!(
                "the input ends inside an unclosed object or array; {TRUNCATED} {}",
                in_item(1, 2)
            ),
        ),
        "truncated-after-comma.json" => at(
            end,
            &format!(
                "the input ends inside the array of items (expected an item or `]`); {TRUNCATED}"
            ),
        ),
        "truncated-unclosed-array.json" => at(
            end,
            &format!("the input ends inside the array of items (expected `,` or `]`); {TRUNCATED}"),
        ),
        "truncated-envelope.json" => at(
            end,
            "the input ends inside the `{\"results\": ...}` envelope; the export is truncated: download it again",
        ),
        "invalid-utf8.json" => at(
            find(bytes, b"\xe9"),
            "invalid UTF-8 (the non-ASCII byte 0xe9) in item 1; Zephr exports are UTF-8, so the file was damaged or re-encoded: download it again, or convert it with iconv",
        ),
        // Valid UTF-8 once the framer drops the space between two NDJSON scalars.
        "split-character-ndjson.ndjson" => at(
            find(bytes, b"\xc3"),
            "invalid UTF-8 (the non-ASCII byte 0xc3) in item 2; Zephr exports are UTF-8, so the file was damaged or re-encoded: download it again, or convert it with iconv",
        ),
        "nul-in-string.json" => at(
            find(bytes, b"\0"),
            "invalid JSON in item 1: a NUL byte (0x00) inside a string; control characters must be escaped (\\u0000)",
        ),
        "nul-between-items.json" => at(
            find(bytes, b"\0"),
            "invalid JSON in item 2: expected a value (an object, array, string, number, true, false or null), found a NUL byte (0x00)",
        ),
        "garbage-after-export.json" => at(
            find(bytes, b"END"),
            "unexpected `E` after the end of the export; expected nothing more (is this two exports in one file? give them as separate inputs)",
        ),
        "trailing-comma.json" => at(
            find(bytes, b"]\n"),
            "expected an item after `,`, found `]` (a trailing comma)",
        ),
        "trailing-comma-in-item.json" => at(
            find(bytes, b"}}"),
            "invalid JSON in item 1: expected a key after `,`, found `}` (a trailing comma)",
        ),
        "missing-comma.json" => at(
            line_start(bytes, 2),
            "expected `,` or `]` after an item, found `{`",
        ),
        "missing-comma-in-item.json" => at(
            find(bytes, b"\"email_verified\""),
            "invalid JSON in item 1: expected `,` or `}` after a member of an object, found `\"`",
        ),
        // Valid JSON, but a key must be text: a bad item, named by the key (issue 20).
        "lone-surrogate-in-key.json" => bad(
            1,
            line_start(bytes, 1),
            Some("u1"),
            Some("\\ud800x"),
            KEY_NOT_UNICODE,
        ),
        "results-not-an-array.json" => at(
            find(bytes, b"{\"user\""),
            "expected the envelope's `results` to be an array, found `{`",
        ),
        "truncated.json.gz" => {
            let decoded = decoded_prefix(flate2::read::MultiGzDecoder::new(bytes));
            assert!(
                !decoded.is_empty() && decoded.len() < 9000,
                "{}",
                decoded.len()
            );
            format!(
                "zephr-etl: {file}: {}: cannot decompress the gzip data (incomplete deflate stream); the file is truncated or corrupt: download it again\n",
                place(&decoded, decoded.len())
            )
        }
        "corrupt.json.zst" => {
            let decoded = decoded_prefix(zstd::stream::read::Decoder::new(bytes).unwrap());
            format!(
                "zephr-etl: {file}: {}: cannot decompress the zstd data (Data corruption detected); the file is truncated or corrupt: download it again\n",
                place(&decoded, decoded.len())
            )
        }
        "bad-item-no-user.json" => bad(
            2,
            line_start(bytes, 2),
            None,
            Some("user"),
            "the item has no `user` object",
        ),
        "bad-item-no-user-id.json" => bad(
            1,
            line_start(bytes, 1),
            None,
            Some("user.user_id"),
            "the item has no user.user_id; every user row needs one",
        ),
        "bad-item-null-user-id.json" => bad(
            2,
            find(bytes, b"{\"user\":{\"user_id\":null"),
            None,
            Some("user.user_id"),
            "user_id is null; every user row needs one",
        ),
        "bad-item-bad-timestamp.json" => bad(
            1,
            find(bytes, b"{\n"),
            Some("u1"),
            Some("user.registered"),
            &format!("\"24/02/2021 15:43\" {TIMESTAMP_HINT}"),
        ),
        "bad-item-email-verified-yes.ndjson" => bad(
            2,
            line_start(bytes, 1),
            Some("u2"),
            Some("user.email_verified"),
            "expected true, false or null, found the string \"yes\"",
        ),
        "bad-item-grants-results-object.json" => bad(
            1,
            1,
            Some("u1"),
            Some("grants.results"),
            "expected grants.results to be an array of grants or null, found an object",
        ),
        "bad-item-grant-timestamp.json" => bad(
            1,
            1,
            Some("u1"),
            Some("grants.results[1].endTime"),
            &format!("\"never\" {TIMESTAMP_HINT}"),
        ),
        "bad-item-attributes-not-object.json" => bad(
            1,
            1,
            Some("u1"),
            Some("user.attributes"),
            "expected an attributes object or null, found an array",
        ),
        "bad-item-is-a-number.json" => bad(
            2,
            line_start(bytes, 2),
            None,
            None,
            "expected the item to be an object with a `user`, found the number 17",
        ),
        "deep-nesting-in-item.json" => bad(
            1,
            line_start(bytes, 1),
            None,
            Some("user"),
            "expected the user object, found an array",
        ),
        other => panic!("{other} has no expected message: add one to expected_stderr"),
    }
}

#[test]
fn broken_corpus() {
    let dir = corpus_dir();
    let tmp = TempDir::new().unwrap();
    let mut failures = Vec::new();
    let files = dir_listing(&dir);
    assert!(files.len() >= 35, "{files:?}");
    for file in files.iter().filter(|f| !f.ends_with(".md")) {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let expected = expected_stderr(file, &bytes);
        // The default sizes, and one byte at a time in batches of one item, so that no
        // buffer or batch boundary can change what is reported.
        // Default sizes; 1-byte reads in 1-item batches; and the sequential --threads 1 path.
        for sizes in [
            &[][..],
            &["--buffer-size", "1", "--batch-size", "1"][..],
            &["--buffer-size", "7", "--batch-size", "2", "--threads", "1"][..],
        ] {
            let out_dir = tmp.path().join(format!("{file}{}", sizes.len()));
            let out_arg = out_dir.to_str().unwrap();
            let mut args = vec!["convert", "-q", file.as_str(), "-o", out_arg];
            args.extend_from_slice(sizes);
            let out = run_in(&dir, &args);
            let got = stderr(&out);
            if out.status.code() != Some(1) || got != expected || !dir_listing(&out_dir).is_empty()
            {
                failures.push(format!(
                    "{file} {sizes:?}: exit {:?}, files {:?}\n  got:      {got:?}\n  expected: {expected:?}",
                    out.status.code(),
                    dir_listing(&out_dir)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn without_quiet_the_phases_frame_the_error() {
    let dir = corpus_dir();
    let tmp = TempDir::new().unwrap();
    let out_dir = tmp.path().join("out");
    let out = run_in(
        &dir,
        &[
            "convert",
            "nul-in-string.json",
            "-o",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let bytes = std::fs::read(dir.join("nul-in-string.json")).unwrap();
    assert_eq!(
        stderr(&out),
        format!(
            "Preparing user export...\nExport failed. Please try again.\n{}",
            expected_stderr("nul-in-string.json", &bytes)
        )
    );
    assert!(dir_listing(&out_dir).is_empty());
}

#[test]
fn the_second_input_is_named_and_items_are_numbered_across_inputs() {
    let dir = corpus_dir();
    let tmp = TempDir::new().unwrap();
    let good = tmp.path().join("page1.json");
    std::fs::write(
        &good,
        "[{\"user\":{\"user_id\":\"a\"}},{\"user\":{\"user_id\":\"b\"}}]",
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let bytes = std::fs::read(dir.join("bad-item-no-user.json")).unwrap();
    // A batch takes items from both inputs unless it is too small to: each item keeps its
    // own input's name, whichever batch it lands in.
    for sizes in [
        &[][..],
        &["--batch-size", "1"][..],
        &["--batch-size", "3"][..],
        &["--batch-size", "3", "--threads", "1"][..],
    ] {
        let mut args = vec![
            "convert",
            "-q",
            good.to_str().unwrap(),
            "bad-item-no-user.json",
            "-o",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(sizes);
        let out = run_in(&dir, &args);
        assert_eq!(out.status.code(), Some(1), "{sizes:?}");
        // Item 2 of the second file is item 4 of the export.
        assert_eq!(
            stderr(&out),
            format!(
                "zephr-etl: bad item: item 4 (bad-item-no-user.json: {}), field `user`: the item has no `user` object\n{SKIP_HINT}\n",
                place(&bytes, line_start(&bytes, 2))
            ),
            "{sizes:?}"
        );
        assert!(dir_listing(&out_dir).is_empty());
    }
}

#[test]
fn missing_input_and_directory_input() {
    let tmp = TempDir::new().unwrap();
    let out_dir = tmp.path().join("out");
    let out = run_in(tmp.path(), &["convert", "-q", "nope.json", "-o", "out"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "zephr-etl: nope.json: cannot read: No such file or directory (os error 2)\n"
    );
    std::fs::create_dir(tmp.path().join("adir")).unwrap();
    let out = run_in(tmp.path(), &["convert", "-q", "adir", "-o", "out"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "zephr-etl: adir: cannot read: is a directory, not an export file\n"
    );
    assert!(dir_listing(&out_dir).is_empty());
}

#[test]
fn deep_nesting_in_an_unmapped_field_is_kept() {
    // Valid JSON nested 100000 deep where the tool keeps values as written (`extra`): no
    // stack overflow, no error, and the value arrives whole.
    let tmp = TempDir::new().unwrap();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let input = format!("[{{\"user\":{{\"user_id\":\"u1\"}},\"x\":{deep}}}]");
    std::fs::write(tmp.path().join("deep.json"), &input).unwrap();
    let out = run_in(
        tmp.path(),
        &["convert", "-q", "deep.json", "-o", "out", "--format", "csv"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let users = std::fs::read_to_string(tmp.path().join("out/users.csv")).unwrap();
    let row = users.lines().nth(1).unwrap();
    assert_eq!(row, format!("u1,,,,,,,,,,\"{{\"\"x\"\":{deep}}}\""));
}

// ---------------------------------------------------------------------------------------------
// --on-error skip, --max-errors, --max-item-bytes

/// An export with two good items and one bad item of every SPEC kind, one item per line.
const MIXED: &str = "[\n\
{\"user\":{\"user_id\":\"u1\",\"attributes\":{\"plan\":\"gold\"}},\"seq-no\":1,\"grants\":{\"results\":[{\"grantId\":\"g1\",\"startTime\":\"2022-06-01 00:00:00\"}]}},\n\
{\"seq-no\":2},\n\
{\"user\":{\"email_verified\":true}},\n\
{\"user\":{\"user_id\":null}},\n\
{\"user\":{\"user_id\":\"u5\",\"registered\":\"yesterday\"},\"grants\":{\"results\":[{\"grantId\":\"g5\"}]}},\n\
{\"user\": {\"user_id\": \"u6\", \"email_verified\": \"yes\"}},\n\
{\"user\":{\"user_id\":\"u7\"},\"grants\":{\"results\":{\"grantId\":\"g7\"}}},\n\
17,\n\
{\"user\":{\"user_id\":\"u9\",\"identifiers\":{\"email_address\":\"h@example.com\"}},\"seq-no\":\"9\"}\n\
]\n";

/// The rejects.ndjson line of item `n` (on line `n` of [`MIXED`]).
fn mixed_reject(
    n: usize,
    user_id: Option<&str>,
    field: Option<&str>,
    problem: &str,
    raw: &str,
) -> String {
    let bytes = MIXED.as_bytes();
    let offset = line_start(bytes, n);
    let user = user_id
        .map(|u| format!(", user_id {u}"))
        .unwrap_or_default();
    let field = field.map(|f| format!(", field `{f}`")).unwrap_or_default();
    let error = format!(
        "item {n} (mixed.json: {}{user}){field}: {problem}",
        place(bytes, offset)
    );
    format!(
        "{{\"item\":{n},\"offset\":{offset},\"error\":{},\"raw\":{raw}}}\n",
        serde_json::to_string(&error).unwrap()
    )
}

fn mixed_rejects() -> String {
    [
        mixed_reject(2, None, Some("user"), "the item has no `user` object", "{\"seq-no\":2}"),
        mixed_reject(3, None, Some("user.user_id"), "the item has no user.user_id; every user row needs one", "{\"user\":{\"email_verified\":true}}"),
        mixed_reject(4, None, Some("user.user_id"), "user_id is null; every user row needs one", "{\"user\":{\"user_id\":null}}"),
        mixed_reject(5, Some("u5"), Some("user.registered"), &format!("\"yesterday\" {TIMESTAMP_HINT}"), "{\"user\":{\"user_id\":\"u5\",\"registered\":\"yesterday\"},\"grants\":{\"results\":[{\"grantId\":\"g5\"}]}}"),
        // The raw item is kept byte for byte, spaces included.
        mixed_reject(6, Some("u6"), Some("user.email_verified"), "expected true, false or null, found the string \"yes\"", "{\"user\": {\"user_id\": \"u6\", \"email_verified\": \"yes\"}}"),
        mixed_reject(7, Some("u7"), Some("grants.results"), "expected grants.results to be an array of grants or null, found an object", "{\"user\":{\"user_id\":\"u7\"},\"grants\":{\"results\":{\"grantId\":\"g7\"}}}"),
        mixed_reject(8, None, None, "expected the item to be an object with a `user`, found the number 17", "17"),
    ]
    .concat()
}

const USERS_HEADER: &str = "user_id,email_address,username,email_verified,tracking_id,registered,registration_tenant,registration_state,last_login,seq_no,extra\n";
const GRANTS_HEADER: &str = "user_id,grant_id,account_id,expiry_state,entitlement_type,entitlement_id,product_id,start_time,end_time,created_at,extra\n";
const ATTRIBUTES_HEADER: &str = "user_id,key,value,value_type\n";

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn skip_writes_rejects_and_keeps_the_good_items() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("mixed.json"), MIXED).unwrap();
    for sizes in [
        &[][..],
        &["--buffer-size", "3", "--batch-size", "2", "--threads", "3"][..],
        &["--buffer-size", "3", "--batch-size", "2", "--threads", "1"][..],
    ] {
        let _ = std::fs::remove_dir_all(tmp.path().join("out"));
        let mut args = vec!["convert", "mixed.json", "-o", "out", "--on-error", "skip"];
        args.extend_from_slice(sizes);
        let out = run_in(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines[..2],
            ["Preparing user export...", "Export complete!"],
            "{err}"
        );
        assert!(
            lines[2].starts_with(
                "users: 2 rows, grants: 1 rows, attributes: 1 rows, rejected: 7 items (see rejects.ndjson), "
            ),
            "{err}"
        );
        assert_eq!(lines.len(), 3, "{err}");
        let dir = tmp.path().join("out");
        assert_eq!(read(dir.join("rejects.ndjson")), mixed_rejects());
        assert_eq!(
            read(dir.join("users.csv")),
            format!("{USERS_HEADER}u1,,,,,,,,,1,\nu9,h@example.com,,,,,,,,9,\n")
        );
        assert_eq!(
            read(dir.join("grants.csv")),
            format!("{GRANTS_HEADER}u1,g1,,,,,,2022-06-01T00:00:00Z,,,\n")
        );
        assert_eq!(
            read(dir.join("attributes.csv")),
            format!("{ATTRIBUTES_HEADER}u1,plan,gold,string\n")
        );
        let mut expected: Vec<&str> = TABLE_FILES.to_vec();
        expected.push("rejects.ndjson");
        expected.sort();
        assert_eq!(dir_listing(&dir), expected);
    }
}

#[test]
fn skip_with_no_bad_item_writes_an_empty_rejects_file() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(
        tmp.path().join("good.ndjson"),
        "{\"user\":{\"user_id\":\"a\"}}\n",
    )
    .unwrap();
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "good.ndjson",
            "-o",
            "out",
            "--on-error",
            "skip",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(read(tmp.path().join("out/rejects.ndjson")), "");
}

/// Items whose keys hold half a surrogate pair, in each object the decoder reads, among good
/// ones; item 4's key comes before its user id, which is still found.
const HALF_PAIRS: &str = "[\n\
{\"user\":{\"user_id\":\"u1\",\"attributes\":{\"plan\":\"gold\"}}},\n\
{\"user\":{\"user_id\":\"u2\",\"attributes\":{\"\\ud800x\":1}}},\n\
{\"user\":{\"user_id\":\"u3\"},\"seq-no\":3},\n\
{\"\\udc00\":1,\"user\":{\"user_id\":\"u4\"}},\n\
{\"user\":{\"user_id\":\"u5\",\"identifiers\":{\"e\\ud83d\":\"a\"}}},\n\
{\"user\":{\"user_id\":\"u6\"},\"grants\":[{\"grantId\":\"g6\",\"\\udfff\":2}]},\n\
{\"user\":{\"\\ud800\\u0041\":1,\"user_id\":\"u7\"}}\n\
]\n";

/// Issue 20 (e): such a key made the whole run fail as broken JSON, even with
/// `--on-error skip`; it is a bad item like any other, rejected whole with its raw bytes.
#[test]
fn a_key_holding_half_a_surrogate_pair_is_a_bad_item() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("pairs.json"), HALF_PAIRS).unwrap();
    let bytes = HALF_PAIRS.as_bytes();
    let lines: Vec<&str> = HALF_PAIRS.lines().collect();
    let message = |n: usize, user_id: &str, field: &str| {
        format!(
            "item {n} (pairs.json: {}, user_id {user_id}), field `{field}`: {KEY_NOT_UNICODE}",
            place(bytes, line_start(bytes, n))
        )
    };
    let reject = |n: usize, user_id: &str, field: &str| {
        format!(
            "{{\"item\":{n},\"offset\":{},\"error\":{},\"raw\":{}}}\n",
            line_start(bytes, n),
            serde_json::to_string(&message(n, user_id, field)).unwrap(),
            lines[n].trim_end_matches(',')
        )
    };
    for threads in ["1", "3"] {
        let out_dir = format!("skip{threads}");
        let out = run_in(
            tmp.path(),
            &[
                "convert",
                "-q",
                "pairs.json",
                "-o",
                &out_dir,
                "--on-error",
                "skip",
                "--threads",
                threads,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let dir = tmp.path().join(&out_dir);
        assert_eq!(
            read(dir.join("rejects.ndjson")),
            [
                reject(2, "u2", "user.attributes.\\ud800x"),
                reject(4, "u4", "\\udc00"),
                reject(5, "u5", "user.identifiers.e\\ud83d"),
                reject(6, "u6", "grants.results[0].\\udfff"),
                reject(7, "u7", "user.\\ud800\\u0041"),
            ]
            .concat()
        );
        assert_eq!(
            read(dir.join("users.csv")),
            format!("{USERS_HEADER}u1,,,,,,,,,,\nu3,,,,,,,,,3,\n")
        );
        assert_eq!(
            read(dir.join("attributes.csv")),
            format!("{ATTRIBUTES_HEADER}u1,plan,gold,string\n")
        );
        assert_eq!(read(dir.join("grants.csv")), GRANTS_HEADER);

        let out_dir = format!("fail{threads}");
        let out = run_in(
            tmp.path(),
            &[
                "convert",
                "-q",
                "pairs.json",
                "-o",
                &out_dir,
                "--threads",
                threads,
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!(
                "zephr-etl: bad item: {}\n{SKIP_HINT}\n",
                message(2, "u2", "user.attributes.\\ud800x")
            )
        );
        assert!(dir_listing(&tmp.path().join(&out_dir)).is_empty());
    }
}

#[test]
fn broken_json_stops_a_skip_run_too() {
    // Skipping is for valid JSON that cannot be mapped; broken JSON has no item boundary to
    // trust. Item 2 is a bad item (skipped), item 3 is broken further on than its bad field.
    let tmp = TempDir::new().unwrap();
    let input = "[\n{\"user\":{\"user_id\":\"a\"}},\n{\"seq-no\":1},\n{\"user\":{\"user_id\":null},\"x\":tru}\n]\n";
    std::fs::write(tmp.path().join("in.json"), input).unwrap();
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "in.json",
            "-o",
            "out",
            "--on-error",
            "skip",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let bytes = input.as_bytes();
    assert_eq!(
        stderr(&out),
        format!(
            "zephr-etl: in.json: {}: invalid JSON in item 3: expected `true`, found `}}`\n",
            place(bytes, find(bytes, b"tru}") + 3)
        )
    );
    assert!(dir_listing(&tmp.path().join("out")).is_empty());
}

#[test]
fn max_errors_stops_at_the_nth_reject_and_keeps_nothing() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("mixed.json"), MIXED).unwrap();
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "mixed.json",
            "-o",
            "out",
            "--on-error",
            "skip",
            "--max-errors",
            "3",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let bytes = MIXED.as_bytes();
    assert_eq!(
        stderr(&out),
        format!(
            "zephr-etl: stopped after 3 rejected items (--max-errors 3); the last was item 4 \
             (mixed.json: {}), field `user.user_id`: user_id is null; every user row needs one\n\
             (rejects.ndjson is not kept when a run fails: raise --max-errors to get it)\n",
            place(bytes, line_start(bytes, 4))
        )
    );
    assert!(dir_listing(&tmp.path().join("out")).is_empty());

    // Seven rejects stay under a limit of eight.
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "mixed.json",
            "-o",
            "out",
            "--on-error",
            "skip",
            "--max-errors",
            "8",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read(tmp.path().join("out/rejects.ndjson")), mixed_rejects());

    // Zero would stop every run before it starts: bad usage.
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "mixed.json",
            "-o",
            "out2",
            "--on-error",
            "skip",
            "--max-errors",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--max-errors <N>"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("out2").exists());
}

/// An export whose item 2 is `size`-ish bytes spread over several lines, followed by an item
/// with a bad timestamp (to check that lines are still counted right after the big item).
fn with_big_item() -> (String, usize) {
    let big = format!(
        "{{\"user\":{{\"user_id\":\"big\",\n\"note\":\"{}\\n\"}},\n\"list\":[1,\n2]}}",
        // Escaped quotes and backslashes throughout, so some refill lands inside an escape.
        "ab\\\"c\\\\".repeat(700)
    );
    let input = format!(
        "[\n{{\"user\":{{\"user_id\":\"a\"}}}},\n{big},\n{{\"user\":{{\"user_id\":\"c\",\"last_login\":\"soon\"}}}},\n{{\"user\":{{\"user_id\":\"d\"}}}}\n]\n"
    );
    (input, big.len())
}

#[test]
fn an_item_over_max_item_bytes_is_a_bad_item() {
    let tmp = TempDir::new().unwrap();
    let (input, big_len) = with_big_item();
    std::fs::write(tmp.path().join("big.json"), &input).unwrap();
    let bytes = input.as_bytes();
    let big_at = find(bytes, b"{\"user\":{\"user_id\":\"big\"");
    let c_at = find(bytes, b"{\"user\":{\"user_id\":\"c\"");
    let too_large = format!(
        "the item is {big_len} bytes, larger than the item size limit; raise the limit if the item is genuine"
    );
    // A small read buffer makes the framer drop the big item's bytes as it reads past them.
    for buffer in ["65536", "64", "1", "2", "3", "5", "7"] {
        let common = ["--max-item-bytes", "1000", "--buffer-size", buffer];

        let mut args = vec!["convert", "-q", "big.json", "-o", "fail"];
        args.extend_from_slice(&common);
        let out = run_in(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!(
                "zephr-etl: bad item: item 2 (big.json: {}): {too_large} (--max-item-bytes)\n{SKIP_HINT}\n",
                place(bytes, big_at)
            )
        );
        assert!(dir_listing(&tmp.path().join("fail")).is_empty());

        let out_dir = format!("skip{buffer}");
        let mut args = vec![
            "convert",
            "-q",
            "big.json",
            "-o",
            &out_dir,
            "--on-error",
            "skip",
        ];
        args.extend_from_slice(&common);
        let out = run_in(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let error2 = format!("item 2 (big.json: {}): {too_large}", place(bytes, big_at));
        let error3 = format!(
            "item 3 (big.json: {}, user_id c), field `user.last_login`: \"soon\" {TIMESTAMP_HINT}",
            place(bytes, c_at)
        );
        assert_eq!(
            read(tmp.path().join(&out_dir).join("rejects.ndjson")),
            format!(
                "{{\"item\":2,\"offset\":{big_at},\"error\":{},\"raw\":null,\"too_large\":true}}\n\
                 {{\"item\":3,\"offset\":{c_at},\"error\":{},\"raw\":{{\"user\":{{\"user_id\":\"c\",\"last_login\":\"soon\"}}}}}}\n",
                serde_json::to_string(&error2).unwrap(),
                serde_json::to_string(&error3).unwrap()
            )
        );
        assert_eq!(
            read(tmp.path().join(&out_dir).join("users.csv")),
            format!("{USERS_HEADER}a,,,,,,,,,,\nd,,,,,,,,,,\n")
        );
    }

    // At the limit exactly, the item is kept.
    let limit = big_len.to_string();
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "big.json",
            "-o",
            "exact",
            "--max-item-bytes",
            &limit,
            "--on-error",
            "skip",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let users = read(tmp.path().join("exact/users.csv"));
    assert_eq!(users.lines().count(), 4, "{users}");
    assert!(users.contains("\nbig,"), "{users}");
}

#[test]
fn an_envelope_member_over_max_item_bytes_stops_the_run_naming_the_flag() {
    let tmp = TempDir::new().unwrap();
    let meta = format!("{{\"note\":\"{}\"}}", "m".repeat(2000));
    let input = format!("{{\"meta\":{meta},\"results\":[{{\"user\":{{\"user_id\":\"a\"}}}}]}}");
    std::fs::write(tmp.path().join("env.json"), &input).unwrap();
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "env.json",
            "-o",
            "out",
            "--max-item-bytes",
            "1000",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let at = place(input.as_bytes(), find(input.as_bytes(), b"{\"note\""));
    assert_eq!(
        stderr(&out),
        format!(
            "zephr-etl: env.json: {at}: the envelope's \"meta\" is {} bytes, larger than the \
             item size limit (1000 bytes); raise the limit if the export is genuine \
             (--max-item-bytes)\n",
            meta.len()
        )
    );
    assert!(!tmp.path().join("out").exists());
    // inspect reads the same way and names the same flag.
    let out = run_in(
        tmp.path(),
        &["inspect", "-q", "env.json", "--max-item-bytes", "1000"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "zephr-etl: env.json: {at}: the envelope's \"meta\""
        )) && err.ends_with("raise the limit if the export is genuine (--max-item-bytes)\n"),
        "{err}"
    );
}

#[test]
fn stdin_can_be_given_once_to_convert_and_to_inspect() {
    let tmp = TempDir::new().unwrap();
    for args in [
        &["convert", "-", "-", "-o", "out"][..],
        &["inspect", "-", "-"][..],
    ] {
        let out = run_in(tmp.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&out),
            "zephr-etl: `-` (stdin) can be given only once\n"
        );
    }
    assert!(!tmp.path().join("out").exists());
}

// ---------------------------------------------------------------------------------------------
// Atomic outputs, --overwrite, the lock, signals

/// The names and contents of the files in `dir`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    dir_listing(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

fn one_user(id: &str) -> String {
    format!("[{{\"user\":{{\"user_id\":\"{id}\"}}}}]\n")
}

#[test]
fn a_failed_run_leaves_earlier_outputs_untouched() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("good.json"), one_user("first")).unwrap();
    let out = run_in(tmp.path(), &["convert", "-q", "good.json", "-o", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(&tmp.path().join("out"));
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        TABLE_FILES
    );

    // A run that fails late (the second input is broken) with --overwrite and skip: its
    // tables and its rejects.ndjson were all being written when it failed.
    let second = "[{\"user\":{\"user_id\":\"x\"}},{\"seq-no\":1},";
    std::fs::write(tmp.path().join("second.json"), second).unwrap();
    let out = run_in(
        tmp.path(),
        &[
            "convert",
            "-q",
            "good.json",
            "second.json",
            "-o",
            "out",
            "--overwrite",
            "--on-error",
            "skip",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "zephr-etl: second.json: {}: the input ends inside the array of items (expected an \
             item or `]`); {TRUNCATED}\n",
            place(second.as_bytes(), second.len())
        )
    );
    assert_eq!(snapshot(&tmp.path().join("out")), before);
}

#[test]
fn existing_outputs_are_refused_without_overwrite_and_replaced_with_it() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("first.json"), one_user("first")).unwrap();
    std::fs::write(tmp.path().join("second.json"), one_user("second")).unwrap();
    let out = run_in(tmp.path(), &["convert", "-q", "first.json", "-o", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(&tmp.path().join("out"));

    let out = run_in(tmp.path(), &["convert", "-q", "second.json", "-o", "out"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "zephr-etl: out/users.csv already exists; pass --overwrite to replace it, or choose another -o directory\n"
    );
    assert_eq!(snapshot(&tmp.path().join("out")), before);

    // Only one of the outputs exists: still refused, before any input is read.
    std::fs::write(tmp.path().join("solo.json"), "not even JSON").unwrap();
    std::fs::create_dir(tmp.path().join("solo")).unwrap();
    std::fs::write(tmp.path().join("solo/grants.parquet"), "keep me").unwrap();
    let out = run_in(tmp.path(), &["convert", "-q", "solo.json", "-o", "solo"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "zephr-etl: solo/grants.parquet already exists; pass --overwrite to replace it, or choose another -o directory\n"
    );
    assert_eq!(dir_listing(&tmp.path().join("solo")), ["grants.parquet"]);
    assert_eq!(read(tmp.path().join("solo/grants.parquet")), "keep me");

    let out = run_in(
        tmp.path(),
        &["convert", "-q", "second.json", "-o", "out", "--overwrite"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dir_listing(&tmp.path().join("out")), TABLE_FILES);
    assert_eq!(
        read(tmp.path().join("out/users.csv")),
        format!("{USERS_HEADER}second,,,,,,,,,,\n")
    );
}

#[test]
fn a_live_lock_keeps_a_second_run_out_and_a_stale_one_is_taken_over() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("in.json"), one_user("a")).unwrap();
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let lock = dir.join(".zephr-etl.lock");
    // A live holder of the kernel lock: `flock` from util-linux, holding it while it sleeps
    // (`-o`: the sleep does not inherit it, so killing `flock` releases it).
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    assert!(wait_for(Duration::from_secs(10), || lock.exists()));
    thread::sleep(Duration::from_millis(100));
    let out = run_in(tmp.path(), &["convert", "-q", "in.json", "-o", "out"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "zephr-etl: another zephr-etl run is writing into out; wait for it to finish\n"
    );
    // The other run's lock is left alone, and nothing else was written.
    assert_eq!(dir_listing(&dir), [".zephr-etl.lock"]);

    // A lock file left by a process that died (a crash, kill -9) holds no lock: taken over.
    // Temporary files of the older naming scheme are not this version's and are left alone.
    std::fs::write(&lock, "12345\n").unwrap();
    let other = ".users.csv.zephr-etl-tmp-12345".to_string();
    std::fs::write(dir.join(&other), "someone else's").unwrap();
    let out = run_in(tmp.path(), &["convert", "-q", "in.json", "-o", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut expected = vec![other];
    expected.extend(TABLE_FILES.map(String::from));
    assert_eq!(dir_listing(&dir), expected);
}

/// Waits up to `limit` for `cond`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `convert -` on a slow pipe, sends `signal` mid-run, and checks the run ends as a
/// failure with nothing left behind. With `feed` false nothing is written to the pipe, so the
/// reader is blocked in `read` when the signal comes.
fn interrupt_mid_run(signal: &str, feed: bool) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    let mut child = Command::new(BIN)
        .args([
            "convert",
            "-",
            "-o",
            dir.to_str().unwrap(),
            "--batch-size",
            "16",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let export = generated(3000, 7);
    let total_chunks = export.len().div_ceil(8 << 10);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<usize>();
    let feeder = thread::spawn(move || {
        if feed {
            // About 8 KB every 20 ms: the whole export would take several seconds.
            for (k, chunk) in export.chunks(8 << 10).enumerate() {
                if stdin.write_all(chunk).is_err() {
                    return;
                }
                let _ = sent_tx.send(k + 1);
                thread::sleep(Duration::from_millis(20));
            }
        }
        // Keep the pipe open (and the run going) until the run is gone.
        let _ = sent_rx_keepalive(stdin);
    });
    // The run is under way once its staging folder exists; let it convert a little.
    assert!(wait_for(Duration::from_secs(20), || dir_listing(&dir)
        .iter()
        .any(|n| n.starts_with(".zephr-etl-staging-"))));
    if feed {
        assert!(wait_for(Duration::from_secs(20), || sent_rx
            .try_iter()
            .last()
            .is_some_and(|k| k >= 10)));
    } else {
        thread::sleep(Duration::from_millis(300));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the signal"
    );
    send_signal(child.id(), signal);
    assert!(
        wait_for(Duration::from_secs(10), || child
            .try_wait()
            .unwrap()
            .is_some()),
        // The main thread polls for the signal every 100 ms, even with the reader blocked;
        // 10 s is the bound, since a tight wall-clock bound flakes on two busy cores.
        "no exit after {signal}"
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).ends_with(
            "Export failed. Please try again.\nzephr-etl: interrupted (Ctrl-C or SIGTERM); no output file of this run was kept\n"
        ),
        "{}",
        stderr(&output)
    );
    assert!(dir_listing(&dir).is_empty(), "{:?}", dir_listing(&dir));
    if feed {
        let sent = sent_rx.try_iter().last().unwrap_or(0);
        assert!(
            sent < total_chunks,
            "the whole export was sent before the signal"
        );
    }
    feeder.join().unwrap();
}

/// Holds the write end of the pipe until the reader is gone (a write then fails).
fn sent_rx_keepalive(mut stdin: std::process::ChildStdin) -> std::io::Result<()> {
    loop {
        thread::sleep(Duration::from_millis(50));
        stdin.write_all(b" ")?;
    }
}

#[test]
fn sigint_mid_run_leaves_no_temporary_file() {
    interrupt_mid_run("INT", true);
}

#[test]
fn sigterm_mid_run_leaves_no_temporary_file() {
    interrupt_mid_run("TERM", true);
}

#[test]
fn sigint_while_the_reader_waits_on_stdin() {
    interrupt_mid_run("INT", false);
}

/// Issue 20 (c): Ctrl-C during the state-events phase comes after the user tables' commit, so
/// they are in place (the previous dataset replaced) and the run exits 3 without state_events.
#[test]
fn sigint_in_the_state_events_phase_exits_3_with_the_user_tables_committed() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("old.json"), one_user("old")).unwrap();
    std::fs::write(tmp.path().join("new.json"), one_user("new")).unwrap();
    let out = run_in(tmp.path(), &["convert", "-q", "old.json", "-o", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let old_manifest = read(tmp.path().join("out/manifest.json"));
    // The events come through a pipe that stays open: the phase waits on it for the signal.
    let events = tmp.path().join("events.csv");
    let made = Command::new("mkfifo").arg(&events).status().unwrap();
    assert!(made.success());
    let child = Command::new(BIN)
        .args(["convert", "-q", "new.json", "-o", "out", "--overwrite"])
        .args(["--state-events", "events.csv"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the pipe lets the run check the file and go on to the user tables.
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(&events)
        .unwrap();
    let manifest = tmp.path().join("out/manifest.json");
    assert!(wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&manifest).is_ok_and(|m| m != old_manifest)
    }));
    // Once the phase has the pipe open for reading, a row goes through; then the signal.
    assert!(wait_for(Duration::from_secs(20), || pipe
        .write_all(b"event,at\nlogin,2024-01-01\n")
        .is_ok()));
    thread::sleep(Duration::from_millis(200));
    send_signal(child.id(), "INT");
    thread::sleep(Duration::from_millis(200));
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "zephr-etl: State events export failed: interrupted (Ctrl-C or SIGTERM); no \
         state_events file was kept\n\
         zephr-etl: the user tables in out are complete; only state_events was not written\n"
    );
    let dir = tmp.path().join("out");
    assert_eq!(dir_listing(&dir), TABLE_FILES);
    assert!(read(dir.join("users.csv")).contains("\nnew,"));
    let manifest: serde_json::Value =
        serde_json::from_str(&read(dir.join("manifest.json"))).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 6, "{manifest}");
    assert!(
        files.iter().all(|f| f["table"] != "state_events"),
        "{manifest}"
    );
}

// ---------------------------------------------------------------------------------------------
// Property: a mutated export converts, or fails with a located error and no file

/// The three shapes of SPEC section 1.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Array,
    Envelope,
    Ndjson,
}

/// A small valid export in `shape` (the generator writes an array with one item per line).
fn export_in(shape: Shape, users: u64, seed: u64) -> Vec<u8> {
    let array = String::from_utf8(generated(users, seed)).unwrap();
    if let Shape::Array = shape {
        return array.into_bytes();
    }
    let items: Vec<&str> = array
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| l.trim_end_matches(','))
        .collect();
    assert_eq!(items.len() as u64, users);
    match shape {
        Shape::Envelope => format!(
            "{{\"results\":[{}],\"meta\":{{\"count\":{users},\"rpp\":500,\"paginated\":true}},\"links\":{{\"next\":null}}}}",
            items.join(",")
        ),
        _ => format!("{}\n", items.join("\n")),
    }
    .into_bytes()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match self {
            Mutation::Truncate(at) => bytes.truncate(at.index(len)),
            Mutation::Flip(at, mask) if len > 0 => bytes[at.index(len)] ^= mask,
            Mutation::Insert(at, b) => bytes.insert(at.index(len + 1), *b),
            Mutation::Delete(at) if len > 0 => {
                bytes.remove(at.index(len));
            }
            _ => {}
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to JSON as often as random ones.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[],:\"\\ \n0-.etn\x00\xc3\xff".to_vec()),
    ];
    let index = any::<prop::sample::Index>();
    prop_oneof![
        index.clone().prop_map(Mutation::Truncate),
        (index.clone(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (index.clone(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        index.prop_map(Mutation::Delete),
    ]
}

/// Parses `byte N, line L, column C` at the start of `text`; returns the offset and the rest.
fn parse_place<'a>(text: &'a str, input: &[u8]) -> Result<&'a str, String> {
    let rest = text.strip_prefix("byte ").ok_or("no `byte`")?;
    let (offset, rest) = rest.split_once(", line ").ok_or("no `, line`")?;
    let (line, rest) = rest.split_once(", column ").ok_or("no `, column`")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (column, rest) = rest.split_at(digits);
    let offset: usize = offset.parse().map_err(|_| "offset is not a number")?;
    let (_, _): (u64, u64) = (
        line.parse().map_err(|_| "line is not a number")?,
        column.parse().map_err(|_| "column is not a number")?,
    );
    if offset > input.len() {
        return Err(format!("offset {offset} is past the end ({})", input.len()));
    }
    let claimed = format!("byte {offset}, line {line}, column {column}");
    if claimed != place(input, offset) {
        return Err(format!(
            "{claimed} but the input says {}",
            place(input, offset)
        ));
    }
    Ok(rest)
}

/// Checks that `stderr` is one located error about `in.json` (or a bad item in it).
fn check_located(stderr: &str, input: &[u8]) -> Result<(), String> {
    let message = stderr
        .strip_prefix("zephr-etl: ")
        .ok_or("no `zephr-etl: ` prefix")?;
    if let Some(rest) = message.strip_prefix("in.json: ") {
        let rest = parse_place(rest, input)?;
        let problem = rest.strip_prefix(": ").ok_or("no `: ` after the place")?;
        if problem.trim().is_empty() || problem.lines().count() != 1 {
            return Err("the problem is not one line".into());
        }
        return Ok(());
    }
    let rest = message
        .strip_prefix("bad item: item ")
        .ok_or("neither located nor a bad item")?;
    let (number, rest) = rest.split_once(" (in.json: ").ok_or("no `(in.json: `")?;
    number
        .parse::<u64>()
        .map_err(|_| "the item number is not a number")?;
    let rest = parse_place(rest, input)?;
    // `[, user_id ID])[, field `F`]: PROBLEM` and the hint.
    let rest = match rest.strip_prefix(", user_id ") {
        Some(r) => &r[r.find(')').ok_or("no `)` after the user id")?..],
        None => rest,
    };
    let rest = rest.strip_prefix(')').ok_or("no `)` after the place")?;
    let rest = match rest.strip_prefix(", field `") {
        Some(r) => &r[r.find('`').ok_or("no closing backtick")? + 1..],
        None => rest,
    };
    let problem = rest
        .strip_prefix(": ")
        .and_then(|r| r.strip_suffix(&format!("\n{SKIP_HINT}\n")))
        .ok_or("the bad item message is malformed")?;
    if problem.trim().is_empty() || problem.contains('\n') {
        return Err("the problem is not one line".into());
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Case {
    shape: Shape,
    users: u64,
    seed: u64,
    mutations: Vec<Mutation>,
    buffer_size: Option<u32>,
    /// `--on-error skip`.
    skip: bool,
    /// `--max-item-bytes`: small enough to reject some generated items.
    max_item_bytes: Option<u32>,
}

/// Checks every line of a rejects.ndjson: its fields, and that its error names the place its
/// offset points at.
fn check_rejects(rejects: &str, input: &[u8]) -> Result<(), String> {
    for line in rejects.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        let item = value["item"].as_u64().ok_or("no item number")?;
        let offset = value["offset"].as_u64().ok_or("no offset")? as usize;
        let error = value["error"].as_str().ok_or("no error")?;
        if value.get("raw").is_none() {
            return Err(format!("no raw: {line}"));
        }
        let expected = format!(
            "item {item} (in.json: {}",
            place(input, offset.min(input.len()))
        );
        if !error.starts_with(&expected) {
            return Err(format!("{error:?} does not start with {expected:?}"));
        }
    }
    Ok(())
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut input = export_in(case.shape, case.users, case.seed);
    for m in &case.mutations {
        m.apply(&mut input);
    }
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("in.json"), &input).unwrap();
    let mut args = vec![
        "convert".to_string(),
        "-q".into(),
        "in.json".into(),
        "-o".into(),
        "out".into(),
    ];
    if let Some(size) = case.buffer_size {
        args.extend(["--buffer-size".into(), size.to_string()]);
    }
    if let Some(limit) = case.max_item_bytes {
        args.extend(["--max-item-bytes".into(), limit.to_string()]);
    }
    if case.skip {
        args.extend(["--on-error".into(), "skip".into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in(tmp.path(), &args);
    let err = stderr(&out);
    let dir = tmp.path().join("out");
    let shown = String::from_utf8_lossy(&input).into_owned();
    prop_assert!(!err.contains("panicked"), "a panic: {err}\ninput: {shown}");
    match out.status.code() {
        Some(0) => {
            prop_assert_eq!(&err, "", "input: {}", shown);
            let mut expected: Vec<String> = TABLE_FILES.map(String::from).to_vec();
            if case.skip {
                expected.push("rejects.ndjson".into());
                expected.sort();
                let rejects = read(dir.join("rejects.ndjson"));
                if let Err(why) = check_rejects(&rejects, &input) {
                    return Err(TestCaseError::fail(format!("{why}\ninput: {shown}")));
                }
            }
            prop_assert_eq!(dir_listing(&dir), expected, "input: {}", shown);
        }
        Some(1) => {
            prop_assert!(
                dir_listing(&dir).is_empty(),
                "files left: {:?}\ninput: {}",
                dir_listing(&dir),
                shown
            );
            // A compressed magic number would make offsets refer to decompressed bytes.
            if !input.starts_with(&[0x1f, 0x8b])
                && !input.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
                && let Err(why) = check_located(&err, &input)
            {
                return Err(TestCaseError::fail(format!(
                    "{why}: {err:?}\ninput: {shown}"
                )));
            }
        }
        other => prop_assert!(false, "exit {:?}: {}\ninput: {}", other, err, shown),
    }
    Ok(())
}

#[test]
fn mutated_exports_convert_or_fail_cleanly() {
    // 64 cases keep CI at a few seconds; PROPTEST_CASES=5000 searches longer.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let shape = prop::sample::select(vec![Shape::Array, Shape::Envelope, Shape::Ndjson]);
    let strategy = (
        shape,
        1..=4u64,
        0..1000u64,
        prop::collection::vec(mutation(), 1..=3),
        prop::sample::select(vec![None, Some(1), Some(7), Some(64)]),
        any::<bool>(),
        prop::sample::select(vec![None, Some(600)]),
    )
        .prop_map(
            |(shape, users, seed, mutations, buffer_size, skip, max_item_bytes)| Case {
                shape,
                users,
                seed,
                mutations,
                buffer_size,
                skip,
                max_item_bytes,
            },
        );
    if let Err(e) = runner.run(&strategy, |case| run_case(&case)) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets: no error of the HTTP client carries the secret or the Authorization header

mod secrets {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use zephr_api::{
        Client, ClientConfig, Credentials, FetchError, RetryPolicy, SecretKey, USER_EXPORT_PATH,
    };

    const SECRET: &str = "s3cr3t-never-printed-7f1e";
    const SCHEME: &str = "ZEPHR-HMAC-SHA256";

    /// How the one-shot test server misbehaves.
    #[derive(Clone, Copy)]
    enum Misbehaviour {
        /// Reads the request, then hangs up without a response.
        HangUp,
        /// 400 with the whole request (Authorization included) echoed in the body.
        EchoRequest,
        /// A redirect whose Location carries the Authorization value.
        RedirectWithAuth,
        /// 200 promising 1000 bytes and sending 10.
        ShortBody,
    }

    /// Serves `connections` requests on 127.0.0.1 as `mode` says; returns the base URL and the
    /// Authorization values it received.
    fn serve(mode: Misbehaviour, connections: usize) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut request = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line
                        .strip_prefix("authorization: ")
                        .or_else(|| line.strip_prefix("Authorization: "))
                    {
                        record.lock().unwrap().push(v.trim().to_string());
                    }
                    request.push_str(&line);
                }
                let auth = record.lock().unwrap().last().cloned().unwrap_or_default();
                let response = match mode {
                    Misbehaviour::HangUp => continue,
                    Misbehaviour::EchoRequest => format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{request}",
                        request.len()
                    ),
                    Misbehaviour::RedirectWithAuth => format!(
                        "HTTP/1.1 302 Found\r\nLocation: /login?auth={}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        auth.replace(' ', "%20")
                    ),
                    Misbehaviour::ShortBody => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n[{\"user\":"
                            .to_string()
                    }
                };
                let _ = stream.write_all(response.as_bytes());
                let _ = stream.flush();
                // Drain whatever the client still sends, then close.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                let _ = stream.read(&mut [0u8; 1024]);
            }
        });
        (base, seen)
    }

    fn client(base: &str, retries: u32) -> Client {
        let credentials = Credentials {
            access_key: "AK-secrets-test".into(),
            secret: SecretKey::new(SECRET),
        };
        let mut config = ClientConfig::new(base, "acme", credentials);
        config.retry = RetryPolicy {
            retries,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        config.connect_timeout = Duration::from_secs(5);
        config.read_timeout = Duration::from_secs(5);
        Client::new(config).unwrap()
    }

    /// Every way the error can be printed: Display, Debug, pretty Debug, and the source chain.
    fn renderings(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string(), format!("{e:?}"), format!("{e:#?}")];
        let mut source = e.source();
        while let Some(s) = source {
            out.push(s.to_string());
            out.push(format!("{s:?}"));
            source = s.source();
        }
        out
    }

    /// Neither the secret nor any Authorization value, whole or re-encoded (its signature is
    /// what makes it a credential), shows in any rendering of the error.
    fn assert_clean(e: &FetchError, seen: &[String]) {
        for text in renderings(e) {
            assert!(!text.contains(SECRET), "{text}");
            for auth in seen {
                let hash = auth.rsplit(':').next().unwrap();
                assert_eq!(hash.len(), 64, "{auth}");
                assert!(!text.contains(auth.as_str()), "{text}");
                assert!(!text.contains(hash), "{text}");
            }
        }
    }

    #[test]
    fn client_and_config_debug_hide_the_secret() {
        let c = client("http://127.0.0.1:9", 0);
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!text.contains(SECRET), "{text}");
        }
        let credentials = Credentials {
            access_key: "AK".into(),
            secret: SecretKey::new(SECRET),
        };
        let config = ClientConfig::new("http://x", "acme", credentials);
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(text.contains("SecretKey(***)"), "{text}");
        }
    }

    #[test]
    fn refused_connection() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client(&format!("http://127.0.0.1:{port}"), 1)
            .fetch_page(USER_EXPORT_PATH, "page=1")
            .unwrap_err();
        assert!(matches!(e, FetchError::RetriesExhausted { .. }), "{e:?}");
        assert_clean(&e, &[]);
    }

    #[test]
    fn misbehaving_servers() {
        for (mode, retries) in [
            (Misbehaviour::HangUp, 1),
            (Misbehaviour::EchoRequest, 0),
            (Misbehaviour::RedirectWithAuth, 0),
            (Misbehaviour::ShortBody, 1),
        ] {
            let (base, seen) = serve(mode, retries as usize + 1);
            let e = client(&base, retries)
                .fetch_page(USER_EXPORT_PATH, "rpp=3&page=1")
                .unwrap_err();
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), retries as usize + 1, "{e}");
            assert!(seen.iter().all(|a| a.starts_with(SCHEME)), "{seen:?}");
            assert_clean(&e, &seen);
        }
    }
}
