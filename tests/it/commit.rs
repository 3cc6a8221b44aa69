//! The commit protocol (issue 12), through the real binary and through the library.
//!
//! - `crash_matrix`: the process aborts (like `kill -9`) at every step of the commit, through
//!   the test-only hook `ZEPHR_ETL_FAULT=commit:STEP`; whatever the manifest lists then is
//!   there with its SHA-256 and rows, and the next run (refused without `--overwrite`, then
//!   with it) recovers and leaves nothing behind;
//! - `kill_9_at_random_moments`: the same with real `kill -9`s of running conversions;
//! - the lock (parallel runs, with and without a stale lock file, a lock file deleted during a
//!   run), symlinks planted at every name the tool writes, overwriting with fewer outputs, a
//!   file appearing during a run;
//! - planted journals that name files outside the folder (issue 20), a staging folder
//!   deleted during a run;
//! - `the_library_runs_a_conversion_without_the_binary`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::harness::generated;
use support::reference::read_csv;
use tempfile::TempDir;

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_zephr-etl");

/// The commit's steps, in order, as the fault hook names them.
const STEPS: [&str; 9] = ["a", "b", "c", "d-mid", "d", "e", "f-mid", "f", "g"];

fn command(cwd: &Path, args: &[&str], fault: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("ZEPHR_ETL_FAULT")
        .env_remove("ZEPHR_ACCESS_KEY")
        .env_remove("ZEPHR_SECRET_KEY");
    if let Some(fault) = fault {
        cmd.env("ZEPHR_ETL_FAULT", fault);
    }
    cmd
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    command(cwd, args, None).output().expect("the binary runs")
}

/// Runs with the fault hook `fault` and checks that it killed the process (no exit status).
fn crash_at(cwd: &Path, args: &[&str], fault: &str) {
    let crashed = command(cwd, args, Some(fault))
        .output()
        .expect("the binary runs");
    assert_eq!(crashed.status.code(), None, "{fault}: {}", stderr(&crashed));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every entry under `dir` (hidden ones too), relative, '/'-separated, folders with a
/// trailing '/'; symlinks are listed, never followed.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{name}/"));
                pending.push((entry.path(), format!("{name}/")));
            } else {
                out.insert(name);
            }
        }
    }
    out
}

/// Regular files only (no folders) of [`tree`].
fn files(dir: &Path) -> BTreeSet<String> {
    tree(dir)
        .into_iter()
        .filter(|n| !n.ends_with('/'))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Data rows of a dataset file, counted by independent readers.
fn rows_of(path: &Path, format: &str) -> u64 {
    match format {
        "csv" => read_csv(path).1.len() as u64,
        "parquet" => {
            let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
            reader.metadata().file_metadata().num_rows() as u64
        }
        "ndjson" => std::fs::read(path)
            .unwrap()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64,
        other => panic!("unexpected format {other}"),
    }
}

/// The manifest of `dir`, after checking that every file it lists is a regular file in `dir`
/// with the listed bytes, SHA-256 and rows. `None` when there is no manifest.
fn verified_manifest(dir: &Path) -> Option<Value> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).ok()?;
    let manifest: Value = serde_json::from_slice(&bytes).expect("a whole manifest");
    for file in manifest["files"].as_array().unwrap() {
        let name = file["path"].as_str().unwrap();
        let full = dir.join(name);
        let meta = std::fs::symlink_metadata(&full)
            .unwrap_or_else(|e| panic!("{name} is listed but missing: {e}"));
        assert!(meta.is_file(), "{name} is not a regular file");
        let data = std::fs::read(&full).unwrap();
        assert_eq!(file["bytes"], data.len() as u64, "{name}");
        assert_eq!(file["sha256"], sha256(&data), "{name}");
        let format = file["format"].as_str().unwrap();
        assert_eq!(file["rows"], rows_of(&full, format), "{name}");
    }
    Some(manifest)
}

/// Asserts that `dir` holds exactly its manifest and the files it lists: no staging
/// folder, journal, lock or stale file.
fn assert_clean(dir: &Path) {
    let manifest = verified_manifest(dir).expect("a manifest");
    let mut expected: BTreeSet<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    expected.insert("manifest.json".into());
    assert_eq!(files(dir), expected);
}

fn users_rows(manifest: &Value) -> u64 {
    manifest["tables"]["users"]["rows"].as_u64().unwrap()
}

/// A temp dir with `a.json` (40 users) and `b.json` (25 users).
fn inputs() -> TempDir {
    let tmp = TempDir::new().unwrap();
    std::fs::write(tmp.path().join("a.json"), generated(40, 1)).unwrap();
    std::fs::write(tmp.path().join("b.json"), generated(25, 2)).unwrap();
    tmp
}

#[test]
fn crash_matrix() {
    let tmp = inputs();
    let cwd = tmp.path();
    for (round, step) in STEPS.iter().enumerate() {
        let out = format!("out-{round}");
        let dir = cwd.join(&out);
        // The previous dataset: both formats in parts of 10 rows.
        let first = run(
            cwd,
            &[
                "convert",
                "-q",
                "a.json",
                "-o",
                &out,
                "--max-rows-per-file",
                "10",
            ],
        );
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        let before = verified_manifest(&dir).unwrap();
        // The new one replaces it with CSV only, in one file per table: removes the rest.
        let args = [
            "convert",
            "-q",
            "b.json",
            "-o",
            &out,
            "--format",
            "csv",
            "--overwrite",
        ];
        crash_at(cwd, &args, &format!("commit:{step}"));
        // Whatever the manifest says is so, right after the crash.
        match verified_manifest(&dir) {
            Some(m) if m["run_id"] == before["run_id"] => {
                assert!(
                    ["a", "b"].contains(step),
                    "step {step}: still the old manifest"
                )
            }
            Some(m) => {
                assert_eq!(users_rows(&m), 25);
                assert!(["e", "f-mid", "f", "g"].contains(step), "step {step}");
            }
            None => assert!(["c", "d-mid", "d"].contains(step), "step {step}"),
        }
        // The next run recovers first: refused (a dataset is there), but recovered.
        let refused = run(cwd, &["convert", "-q", "a.json", "-o", &out]);
        assert_eq!(refused.status.code(), Some(1), "step {step}");
        assert!(stderr(&refused).contains("already exists; pass --overwrite"));
        assert_clean(&dir);
        let recovered = verified_manifest(&dir).unwrap();
        // Before the journal the old dataset stays; from it on the new one is finished.
        let expected_users = if *step == "a" { 40 } else { 25 };
        assert_eq!(users_rows(&recovered), expected_users, "step {step}");
        // And with --overwrite it writes, leaving nothing of the earlier ones.
        let next = run(cwd, &["convert", "-q", "a.json", "-o", &out, "--overwrite"]);
        assert_eq!(
            next.status.code(),
            Some(0),
            "step {step}: {}",
            stderr(&next)
        );
        assert_clean(&dir);
        assert_eq!(users_rows(&verified_manifest(&dir).unwrap()), 40);
        assert_eq!(files(&dir).len(), 7, "step {step}: {:?}", files(&dir));
    }
}

/// The same steps in a fresh folder without `--overwrite` (files are linked into place,
/// not renamed; nothing to remove).
#[test]
fn crash_matrix_into_a_fresh_folder() {
    let tmp = inputs();
    let cwd = tmp.path();
    // `f-mid` is never reached: there is nothing to remove.
    for (round, step) in STEPS.iter().filter(|s| **s != "f-mid").enumerate() {
        let out = format!("fresh-{round}");
        let dir = cwd.join(&out);
        let args = [
            "convert",
            "-q",
            "b.json",
            "-o",
            &out,
            "--max-rows-per-file",
            "10",
        ];
        crash_at(cwd, &args, &format!("commit:{step}"));
        match verified_manifest(&dir) {
            Some(m) => {
                assert_eq!(users_rows(&m), 25);
                assert!(["e", "f-mid", "f", "g"].contains(step), "step {step}");
            }
            None => assert!(["a", "b", "c", "d-mid", "d"].contains(step), "step {step}"),
        }
        // Recovery, then the same run again: refused once the commit was decided (it is
        // finished), written when it was not (step a).
        let again = run(cwd, &args);
        if *step == "a" {
            assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
        } else {
            assert_eq!(
                again.status.code(),
                Some(1),
                "step {step}: {}",
                stderr(&again)
            );
        }
        assert_clean(&dir);
        assert_eq!(users_rows(&verified_manifest(&dir).unwrap()), 25);
    }
}

#[test]
fn a_crash_in_the_state_events_commit_is_finished_by_the_next_run() {
    let tmp = inputs();
    let cwd = tmp.path();
    std::fs::write(cwd.join("events.csv"), "id,kind\n1,a\n2,b\n").unwrap();
    let args = [
        "convert",
        "-q",
        "a.json",
        "-o",
        "out",
        "--state-events",
        "events.csv",
    ];
    // The second commit (state events) is cut while its files are moved.
    crash_at(cwd, &args, "commit:d-mid#2");
    assert!(verified_manifest(&cwd.join("out")).is_none());
    let refused = run(cwd, &args);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_clean(&cwd.join("out"));
    let manifest = verified_manifest(&cwd.join("out")).unwrap();
    assert_eq!(manifest["tables"]["state_events"]["rows"], 2);
    assert_eq!(users_rows(&manifest), 40);
    assert!(files(&cwd.join("out")).contains("state_events.parquet"));
}

/// A pseudo-random sequence, the same every run (the test must not be flaky by design).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn kill_9_at_random_moments() {
    let tmp = TempDir::new().unwrap();
    let cwd = tmp.path();
    std::fs::write(cwd.join("big.json"), generated(3000, 3)).unwrap();
    std::fs::write(cwd.join("small.json"), generated(30, 4)).unwrap();
    let args = |input: &'static str| {
        vec![
            "convert",
            "-q",
            input,
            "-o",
            "out",
            "--overwrite",
            "--max-rows-per-file",
            "700",
        ]
    };
    // How long a whole run takes here, to spread the kills over it.
    let started = Instant::now();
    let full = run(cwd, &args("big.json"));
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
    let span = started.elapsed().as_micros().max(1000) as u64;
    eprintln!("kill -9: a whole run takes {span} µs here");
    let dir = cwd.join("out");
    let mut seed = 12;
    let (mut killed, mut mid_commit, mut without_manifest) = (0, 0, 0);
    for round in 0..20 {
        let mut child: Child = command(cwd, &args("big.json"), None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = lcg(&mut seed) % (span + span / 10);
        thread::sleep(Duration::from_micros(delay));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed += 1;
            if dir.join(".zephr-etl-commit.json").exists() {
                mid_commit += 1;
            }
        }
        // Whatever the manifest lists is whole, at any instant.
        match verified_manifest(&dir) {
            Some(m) => assert!([30, 3000].contains(&users_rows(&m)), "round {round}"),
            None => without_manifest += 1,
        }
        // The next run recovers and leaves exactly the new dataset.
        let next = run(cwd, &args("small.json"));
        assert_eq!(
            next.status.code(),
            Some(0),
            "round {round}: {}",
            stderr(&next)
        );
        assert_clean(&dir);
        assert_eq!(users_rows(&verified_manifest(&dir).unwrap()), 30);
    }
    eprintln!(
        "kill -9: {killed} of 20 runs killed while running, {mid_commit} of them inside the \
         commit (journal present), {without_manifest} left no manifest until the next run"
    );
    assert!(killed > 0, "no run was killed while running");
}

#[test]
fn parallel_runs_one_writes_the_other_is_refused_at_once() {
    let tmp = inputs();
    let cwd = tmp.path();
    for stale in [false, true] {
        let out = if stale { "stale" } else { "fresh" };
        let dir = cwd.join(out);
        std::fs::create_dir(&dir).unwrap();
        if stale {
            // A lock file a dead run left behind (any content: no pid is read).
            std::fs::write(dir.join(".zephr-etl.lock"), "99999\n").unwrap();
        }
        let args = ["convert", "-q", "a.json", "-o", out, "--overwrite"];
        // Both wait at the commit, so that they overlap whatever the scheduling.
        let spawn = || {
            command(cwd, &args, Some("pause:a:3000"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = (spawn(), spawn());
        let started = Instant::now();
        let outputs = [
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        ];
        let codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
        assert!(
            codes.contains(&Some(0)) && codes.contains(&Some(1)),
            "{codes:?}: {} / {}",
            stderr(&outputs[0]),
            stderr(&outputs[1])
        );
        let refused = outputs.iter().find(|o| o.status.code() == Some(1)).unwrap();
        assert_eq!(
            stderr(refused),
            format!(
                "zephr-etl: another zephr-etl run is writing into {out}; wait for it to finish\n"
            )
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_clean(&dir);
        assert_eq!(users_rows(&verified_manifest(&dir).unwrap()), 40);
    }
}

/// Plants a symlink at `link` to `target`.
fn symlink(target: &Path, link: &Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

#[test]
fn symlinks_at_final_names_are_replaced_never_followed() {
    let tmp = inputs();
    let cwd = tmp.path();
    let outside = cwd.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dir = cwd.join("out");
    let finals = [
        "users.csv",
        "users.parquet",
        "grants.csv",
        "grants.parquet",
        "attributes.csv",
        "attributes.parquet",
        "rejects.ndjson",
        "manifest.json",
    ];
    for (i, name) in finals.iter().enumerate() {
        let victim = outside.join(format!("victim-{i}"));
        std::fs::write(&victim, format!("VICTIM {i}\n")).unwrap();
        symlink(&victim, &dir.join(name));
    }
    let before = contents(&outside);
    let args = ["convert", "-q", "a.json", "-o", "out", "--on-error", "skip"];
    let refused = run(cwd, &args);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_eq!(contents(&outside), before);
    let mut overwrite = args.to_vec();
    overwrite.push("--overwrite");
    let done = run(cwd, &overwrite);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(contents(&outside), before, "a file outside DIR changed");
    for name in finals {
        let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is still a symlink");
    }
    assert_clean(&dir);
}

#[test]
fn a_symlink_at_a_part_name_is_replaced_with_overwrite() {
    let tmp = inputs();
    let cwd = tmp.path();
    let victim = cwd.join("victim");
    std::fs::write(&victim, "VICTIM\n").unwrap();
    let dir = cwd.join("out");
    symlink(&victim, &dir.join("csv/users/part-00000.csv"));
    let args = [
        "convert",
        "-q",
        "a.json",
        "-o",
        "out",
        "--max-rows-per-file",
        "10",
    ];
    let refused = run(cwd, &args);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("out/csv/users/part-00000.csv already exists"));
    let mut overwrite = args.to_vec();
    overwrite.push("--overwrite");
    let done = run(cwd, &overwrite);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "VICTIM\n");
    assert!(
        std::fs::symlink_metadata(dir.join("csv/users/part-00000.csv"))
            .unwrap()
            .is_file()
    );
    assert_clean(&dir);
}

#[test]
fn symlinks_at_staging_lock_and_journal_names_are_not_followed() {
    let tmp = inputs();
    let cwd = tmp.path();
    let outside = cwd.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "VICTIM\n").unwrap();
    std::fs::create_dir(outside.join("folder")).unwrap();
    std::fs::write(outside.join("folder/keep"), "KEEP\n").unwrap();
    let dir = cwd.join("out");
    symlink(
        &outside.join("folder"),
        &dir.join(".zephr-etl-staging-AAAAAA"),
    );
    symlink(
        &outside.join("secret"),
        &dir.join(".zephr-etl-staging-file"),
    );
    symlink(&outside.join("secret"), &dir.join(".zephr-etl.lock"));
    symlink(&outside.join("secret"), &dir.join(".zephr-etl-commit.json"));
    symlink(
        &outside.join("secret"),
        &dir.join(".users.csv.zephr-etl-tmp-1"),
    );
    let before = contents(&outside);
    let done = run(cwd, &["convert", "-q", "a.json", "-o", "out"]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(contents(&outside), before, "a file outside DIR changed");
    assert!(tree(&outside).contains("folder/keep"));
    verified_manifest(&dir).unwrap();
}

#[test]
fn symlinked_table_folders_are_refused() {
    let tmp = inputs();
    let cwd = tmp.path();
    let outside = cwd.join("outside");
    std::fs::create_dir(&outside).unwrap();
    for (link, flags) in [("csv", &[][..]), ("parquet/users", &["--overwrite"][..])] {
        let out = format!("out-{}", link.replace('/', "-"));
        let dir = cwd.join(&out);
        symlink(&outside, &dir.join(link));
        let mut args = vec![
            "convert",
            "-q",
            "a.json",
            "-o",
            &out,
            "--max-rows-per-file",
            "10",
        ];
        args.extend(flags);
        let failed = run(cwd, &args);
        assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
        assert!(
            stderr(&failed).contains("is a symbolic link"),
            "{}",
            stderr(&failed)
        );
        assert!(tree(&outside).is_empty(), "{:?}", tree(&outside));
        assert!(!dir.join("manifest.json").exists());
        // Nothing of the run is left: only the planted link (and its folder).
        assert!(files(&dir).iter().all(|n| n == link), "{:?}", tree(&dir));
    }
}

#[test]
fn overwrite_with_fewer_outputs_leaves_no_stale_file() {
    let tmp = inputs();
    let cwd = tmp.path();
    std::fs::write(cwd.join("events.csv"), "id\n1\n").unwrap();
    // A bad item (no user_id), so that there are rejects.
    std::fs::write(
        cwd.join("bad.json"),
        "{\"user\":{\"user_id\":\"u1\"}}\n{\"user\":{}}\n{\"user\":{\"user_id\":\"u2\"}}\n",
    )
    .unwrap();
    let first = run(
        cwd,
        &[
            "convert",
            "-q",
            "bad.json",
            "-o",
            "out",
            "--on-error",
            "skip",
            "--state-events",
            "events.csv",
            "--max-rows-per-file",
            "4",
        ],
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let dir = cwd.join("out");
    assert!(files(&dir).contains("rejects.ndjson"));
    assert!(files(&dir).contains("csv/state_events/part-00000.csv"));
    assert_clean(&dir);

    // Another format alone, without --overwrite: refused whatever the formats.
    let refused = run(
        cwd,
        &[
            "convert", "-q", "a.json", "-o", "out", "--format", "parquet",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("already exists; pass --overwrite"));

    // Fewer formats, no rejects, no state events, no parts: nothing else stays.
    let second = run(
        cwd,
        &[
            "convert",
            "-q",
            "a.json",
            "-o",
            "out",
            "--format",
            "csv",
            "--overwrite",
        ],
    );
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_clean(&dir);
    assert_eq!(
        tree(&dir).into_iter().collect::<Vec<_>>(),
        ["attributes.csv", "grants.csv", "manifest.json", "users.csv"]
    );

    // Files without a manifest that lists them are no dataset (SPEC section 5), only named
    // like one: they make the folder refused without --overwrite, and with it they stay (they
    // may be the user's own, issue 20 case 8), except the names the new run writes.
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    std::fs::create_dir_all(dir.join("users")).unwrap();
    std::fs::write(dir.join("users/part-00003.parquet"), "old").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let third = run(
        cwd,
        &[
            "convert",
            "-q",
            "b.json",
            "-o",
            "out",
            "--format",
            "parquet",
            "--overwrite",
        ],
    );
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert_eq!(
        std::fs::read(dir.join("users/part-00003.parquet")).unwrap(),
        b"old"
    );
    assert_eq!(
        tree(&dir).into_iter().collect::<Vec<_>>(),
        [
            "attributes.csv",
            "attributes.parquet",
            "grants.csv",
            "grants.parquet",
            "manifest.json",
            "notes.txt",
            "users.csv",
            "users.parquet",
            "users/",
            "users/part-00003.parquet"
        ]
    );
}

/// Issue 12's "datasets mix": a CSV dataset, then Parquet of another export into it.
#[test]
fn another_format_into_a_dataset_is_refused() {
    let tmp = inputs();
    let cwd = tmp.path();
    let first = run(
        cwd,
        &["convert", "-q", "a.json", "-o", "d", "--format", "csv"],
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before = contents(&cwd.join("d"));
    let second = run(
        cwd,
        &["convert", "-q", "b.json", "-o", "d", "--format", "parquet"],
    );
    assert_eq!(second.status.code(), Some(1));
    assert_eq!(
        stderr(&second),
        "zephr-etl: d/users.csv already exists; pass --overwrite to replace it, or choose \
         another -o directory\n"
    );
    assert_eq!(contents(&cwd.join("d")), before);
}

#[test]
fn a_file_that_appears_during_the_run_is_not_replaced() {
    let tmp = inputs();
    let cwd = tmp.path();
    let dir = cwd.join("out");
    let child = command(
        cwd,
        &["convert", "-q", "a.json", "-o", "out"],
        Some("pause:a:3000"),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The run is under way once its staging folder exists.
    let start = Instant::now();
    while !tree(&dir)
        .iter()
        .any(|n| n.starts_with(".zephr-etl-staging-"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no staging folder"
        );
        thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(dir.join("users.csv"), "PRECIOUS\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("out/users.csv already exists"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("users.csv")).unwrap(),
        "PRECIOUS\n"
    );
    assert_eq!(tree(&dir).into_iter().collect::<Vec<_>>(), ["users.csv"]);
}

#[test]
fn a_failed_run_removes_the_folder_it_created_and_only_that() {
    let tmp = inputs();
    let cwd = tmp.path();
    std::fs::write(cwd.join("broken.json"), "[{\"user\": ").unwrap();
    let failed = run(cwd, &["convert", "-q", "broken.json", "-o", "new/deeper"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(!cwd.join("new/deeper").exists());
    // A folder that was there stays (empty), as does what it held.
    std::fs::create_dir(cwd.join("mine")).unwrap();
    std::fs::write(cwd.join("mine/notes.txt"), "x").unwrap();
    let failed = run(cwd, &["convert", "-q", "broken.json", "-o", "mine"]);
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(
        tree(&cwd.join("mine")).into_iter().collect::<Vec<_>>(),
        ["notes.txt"]
    );
}

#[test]
fn side_files_that_would_be_outputs_are_refused() {
    let tmp = inputs();
    let cwd = tmp.path();
    for (flag, path) in [
        ("--save-raw", "d/users.csv"),
        ("--save-raw", "d/manifest.json"),
        ("--state-file", "d/parquet/users/part-00000.parquet"),
    ] {
        let out = command(
            cwd,
            &[
                "fetch",
                "--tenant",
                "acme",
                "--base-url",
                "http://127.0.0.1:9",
                "-o",
                "d",
                flag,
                path,
            ],
            None,
        )
        .env("ZEPHR_ACCESS_KEY", "ak")
        .env("ZEPHR_SECRET_KEY", "sk")
        .output()
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {path}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("that is one of the outputs"),
            "{}",
            stderr(&out)
        );
        assert!(!cwd.join("d").exists());
    }
}

#[test]
fn the_library_runs_a_conversion_without_the_binary() {
    use zephr_core::source::drive::{Source, Sources};
    use zephr_dest::local::LocalDir;
    use zephr_engine::export::{Export, ExportError, ExportOptions};
    use zephr_engine::input::{InputSpec, open_all};

    let tmp = TempDir::new().unwrap();
    let dir: PathBuf = tmp.path().join("lib");
    let sources = |users: u64| -> Sources {
        let reader = Box::new(Cursor::new(generated(users, 9)));
        Box::new(std::iter::once(Ok(Source {
            name: Arc::from("memory"),
            reader,
        })))
    };
    let mut opts = ExportOptions::new();
    opts.max_rows_per_file = Some(5);
    let dest = Arc::new(LocalDir::open(&dir).unwrap());
    let mut export = Export::open(dest.clone(), opts.clone()).unwrap();
    // The lock is held for the whole export.
    assert!(matches!(
        Export::open(dest.clone(), opts.clone()),
        Err(ExportError::Dest(zephr_dest::DestError::Locked { .. }))
    ));
    let stats = export.run(sources(12), &mut |_| {}).unwrap();
    assert_eq!(stats.rows[zephr_core::schema::Table::Users], 12);
    let run_id = export.run_id().to_string();
    drop(export);
    let manifest = verified_manifest(&dir).unwrap();
    assert_eq!(manifest["run_id"], run_id.as_str());
    assert!(files(&dir).contains("parquet/users/part-00002.parquet"));
    assert_clean(&dir);
    // A dataset is there: refused without overwrite, replaced with it.
    assert!(matches!(
        Export::open(dest.clone(), opts.clone()),
        Err(ExportError::DatasetExists { .. })
    ));
    opts.overwrite = true;
    opts.max_rows_per_file = None;
    let mut export = Export::open(dest, opts).unwrap();
    // As the README shows it: inputs by name, opened as the run reaches them.
    let file = tmp.path().join("three.json");
    std::fs::write(&file, generated(3, 9)).unwrap();
    let inputs = InputSpec::parse_all(&[file.to_str().unwrap()]).unwrap();
    let stats = export
        .run(open_all(inputs, Default::default()), &mut |_| {})
        .unwrap();
    assert_eq!(stats.rows[zephr_core::schema::Table::Users], 3);
    drop(export);
    assert_clean(&dir);
    assert_eq!(files(&dir).len(), 7);
}

/// Plants, in `dir`, the journal of a commit that no run of the tool wrote: `moves` are
/// (staged, final) pairs in an empty staging folder. `dir` is created when missing.
fn plant_journal(dir: &Path, moves: &[(&str, &str)], overwrite: bool) {
    let staging = ".zephr-etl-staging-PLANTD";
    std::fs::create_dir_all(dir.join(staging)).unwrap();
    let journal = serde_json::json!({
        "version": 1,
        "staging": staging,
        "moves": moves,
        "manifest": "{}\n",
        "previous_manifest": null,
        "remove": [],
        "overwrite": overwrite,
    });
    std::fs::write(
        dir.join(".zephr-etl-commit.json"),
        serde_json::to_vec(&journal).unwrap(),
    )
    .unwrap();
}

/// Runs a plain conversion into `out` and checks that it refuses the planted journal
/// (exit 1, the journal named, `problem` said, the fix given) with everything in `out` left
/// as it was.
fn assert_journal_refused(cwd: &Path, out: &str, problem: &str) {
    let dir = cwd.join(out);
    let before = tree(&dir);
    let refused = run(cwd, &["convert", "-q", "a.json", "-o", out]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_eq!(
        stderr(&refused),
        format!(
            "zephr-etl: {out}/.zephr-etl-commit.json is damaged ({problem}); move it away to \
             start afresh\n"
        )
    );
    assert_eq!(tree(&dir), before, "something in {out} moved");
}

/// Issue 20, 6: a staged name with `..` would move `DIR/evil.txt` out of DIR (through the
/// roll-back that a file appearing at `taken.csv` sets off).
#[test]
fn a_planted_journal_cannot_move_a_file_out_of_the_folder() {
    let tmp = inputs();
    let cwd = tmp.path();
    std::fs::create_dir(cwd.join("victim")).unwrap();
    let dir = cwd.join("out");
    plant_journal(
        &dir,
        &[
            ("../../victim/planted.sh", "evil.txt"),
            ("000001", "taken.csv"),
        ],
        false,
    );
    std::fs::write(dir.join(".zephr-etl-staging-PLANTD/000001"), "staged\n").unwrap();
    std::fs::write(dir.join("evil.txt"), "#!/bin/sh\nEVIL\n").unwrap();
    std::fs::write(dir.join("taken.csv"), "TAKEN\n").unwrap();
    assert_journal_refused(
        cwd,
        "out",
        "staged name \"../../victim/planted.sh\" is not one zephr-etl makes",
    );
    assert!(
        tree(&cwd.join("victim")).is_empty(),
        "{:?}",
        tree(&cwd.join("victim"))
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("evil.txt")).unwrap(),
        "#!/bin/sh\nEVIL\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("taken.csv")).unwrap(),
        "TAKEN\n"
    );
}

/// Issue 20, 6: with `overwrite` a staged name with `..` would move a file from outside DIR
/// into it; a final name with `..` would put one outside.
#[test]
fn a_planted_journal_cannot_move_a_file_into_the_folder() {
    let tmp = inputs();
    let cwd = tmp.path();
    std::fs::create_dir(cwd.join("home")).unwrap();
    std::fs::write(cwd.join("home/id_rsa"), "PRIVATE KEY\n").unwrap();
    plant_journal(&cwd.join("out"), &[("../../home/id_rsa", "loot.csv")], true);
    assert_journal_refused(
        cwd,
        "out",
        "staged name \"../../home/id_rsa\" is not one zephr-etl makes",
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("home/id_rsa")).unwrap(),
        "PRIVATE KEY\n"
    );
    assert!(!cwd.join("out/loot.csv").exists());

    let dir = cwd.join("out2");
    plant_journal(&dir, &[("000001", "../home/planted.csv")], true);
    std::fs::write(dir.join(".zephr-etl-staging-PLANTD/000001"), "planted\n").unwrap();
    assert_journal_refused(
        cwd,
        "out2",
        "final name \"../home/planted.csv\" is not a data file's name inside the folder",
    );
    assert_eq!(
        tree(&cwd.join("home")).into_iter().collect::<Vec<_>>(),
        ["id_rsa"]
    );
}

/// Waits until `dir` holds a staging folder with `count` entries (every output of a run
/// created), and returns it.
fn wait_for_staging(dir: &Path, count: usize) -> PathBuf {
    let start = Instant::now();
    loop {
        let staging = tree(dir)
            .into_iter()
            .find(|n| n.starts_with(".zephr-etl-staging-") && n.ends_with('/'));
        if let Some(name) = staging {
            let path = dir.join(name.trim_end_matches('/'));
            if std::fs::read_dir(&path).map_or(0, |d| d.count()) == count {
                return path;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no staging folder with {count} files: {:?}",
            tree(dir)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Issue 20, 7: the staging folder deleted during a run; the commit must not take the
/// missing files for moved ones and write a manifest that lists them.
#[test]
fn a_staging_folder_deleted_during_the_run_fails_the_commit() {
    let tmp = inputs();
    let cwd = tmp.path();
    let dir = cwd.join("out");
    let first = run(cwd, &["convert", "-q", "a.json", "-o", "out"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before = contents(&dir);
    let child = command(
        cwd,
        &["convert", "-q", "b.json", "-o", "out", "--overwrite"],
        Some("pause:a:2000"),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Six outputs: three tables in CSV and in Parquet. Once all are created, deleting the
    // folder does not stop the writing (into unlinked files): the commit is reached.
    let staging = wait_for_staging(&dir, 6);
    std::fs::remove_dir_all(&staging).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("the staged file is missing"),
        "{}",
        stderr(&output)
    );
    assert_eq!(contents(&dir), before, "the previous dataset changed");
    assert_clean(&dir);
    assert_eq!(users_rows(&verified_manifest(&dir).unwrap()), 40);
}

/// Issue 20, 7: the lock cannot be lost by deleting a file: a second run is refused while the
/// first holds it, whatever happened to `.zephr-etl.lock`.
#[test]
fn a_deleted_lock_file_lets_no_second_run_in() {
    let tmp = inputs();
    let cwd = tmp.path();
    let dir = cwd.join("out");
    let first = command(
        cwd,
        &["convert", "-q", "a.json", "-o", "out"],
        Some("pause:a:3000"),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_staging(&dir, 6);
    match std::fs::remove_file(dir.join(".zephr-etl.lock")) {
        Ok(()) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }
    let second = run(cwd, &["convert", "-q", "b.json", "-o", "out"]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert_eq!(
        stderr(&second),
        "zephr-etl: another zephr-etl run is writing into out; wait for it to finish\n"
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_clean(&dir);
    assert_eq!(users_rows(&verified_manifest(&dir).unwrap()), 40);
}
