//! The object-store destination and inputs against a real S3-protocol server (moto on
//! 127.0.0.1, see `support/s3.rs`): streamed multipart uploads, the commit protocol, the lock
//! object, recovery after a killed run, `--overwrite`-style replacement, errors a user can act
//! on, retries through 503s, and reading an input object back as a stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest, Sha256};
use zephr_dest::object::{ObjectDest, ObjectOptions};
use zephr_dest::{Commit, DestError, Destination, FinishedFile};
use zephr_store::reader::ObjectReader;
use zephr_store::{self as cloud, CloudError, CloudUrl, Location};

use crate::support::harness::{assert_same_tables, convert_locally, untag};
use crate::support::proxy::FaultProxy;
use crate::support::s3::{self, Moto, SECRET_KEY};

const MIB: usize = 1 << 20;

fn url(text: &str) -> CloudUrl {
    match cloud::parse(text).expect("a valid URL") {
        Location::Cloud(url) => url,
        Location::Local(_) => panic!("{text} is not a cloud URL"),
    }
}

/// Options that reach `endpoint`, with 5 MiB parts (S3's minimum) so tests stay small.
fn options(endpoint: &str) -> ObjectOptions {
    let mut options = ObjectOptions {
        part_size: 5 * MIB,
        parts_in_flight: 2,
        ..ObjectOptions::default()
    };
    options.store.config = s3::config_for(endpoint);
    options.store.max_retries = 3;
    options.store.init_backoff = Duration::from_millis(10);
    options.store.max_backoff = Duration::from_millis(50);
    options
}

fn open(server: &Moto, bucket: &str, prefix: &str) -> ObjectDest {
    ObjectDest::open(
        &url(&format!("s3://{bucket}/{prefix}")),
        options(&server.endpoint),
    )
    .expect("the destination opens")
}

/// Bytes that differ everywhere, so a misplaced part cannot go unnoticed.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn write(dest: &ObjectDest, name: &str, data: &[u8]) -> FinishedFile {
    let mut file = dest.create(name).expect("create");
    // Odd-sized writes: part boundaries fall inside them.
    for chunk in data.chunks(777_777) {
        file.write_all(chunk).expect("write");
    }
    file.finish().expect("finish")
}

fn manifest(files: &[FinishedFile]) -> Vec<u8> {
    let files: Vec<_> = files
        .iter()
        .map(|f| serde_json::json!({"path": f.name, "bytes": f.bytes, "sha256": f.sha256}))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "files": files })).unwrap()
}

fn commit(
    dest: &ObjectDest,
    files: Vec<FinishedFile>,
    remove: Vec<String>,
    overwrite: bool,
) -> Result<(), DestError> {
    dest.commit(Commit {
        manifest: manifest(&files),
        files,
        remove,
        overwrite,
    })
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn files_stream_up_and_commit_with_the_manifest_last() {
    let Some(server) = s3::shared("files_stream_up_and_commit_with_the_manifest_last") else {
        return;
    };
    let bucket = server.bucket("roundtrip");
    let dest = open(server, &bucket, "nightly/run");
    assert_eq!(dest.describe(), format!("s3://{bucket}/nightly/run"));
    let _lock = dest.lock().expect("lock");
    dest.recover().expect("recover an empty prefix");
    assert_eq!(dest.read("manifest.json").unwrap(), None);

    let small = b"user_id,email\nu1,a@b.com\n".to_vec();
    let big = pattern(12 * MIB + 12_345, 7); // three parts: 5 + 5 + 2 MiB and a bit
    let a = write(&dest, "users.csv", &small);
    let b = write(&dest, "parquet/users/part-00000.parquet", &big);
    let tag = dest.run_tag().to_string();
    assert_eq!(a.name, format!("users-{tag}.csv"));
    assert_eq!(b.name, format!("parquet/users/part-00000-{tag}.parquet"));
    assert_eq!(
        (a.bytes, a.sha256.as_str()),
        (small.len() as u64, sha(&small).as_str())
    );
    assert_eq!(
        (b.bytes, b.sha256.as_str()),
        (big.len() as u64, sha(&big).as_str())
    );
    // Complete objects are there, but no manifest lists them yet.
    assert_eq!(dest.read("manifest.json").unwrap(), None);

    commit(&dest, vec![a.clone(), b.clone()], vec![], false).expect("commit");
    assert_eq!(dest.read(&a.name).unwrap().unwrap(), small);
    assert_eq!(dest.read(&b.name).unwrap().unwrap(), big);
    let mut expected = vec![a.name.clone(), b.name.clone(), "manifest.json".to_string()];
    expected.sort();
    assert_eq!(dest.list().unwrap(), expected, "the lock object is hidden");
    let listed: serde_json::Value =
        serde_json::from_slice(&dest.read("manifest.json").unwrap().unwrap()).unwrap();
    assert_eq!(listed["files"][1]["sha256"], sha(&big));

    // An independent client sees the same bytes at the same keys.
    let got = server.python(&format!(
        "import boto3,hashlib,os\n\
         s3=boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         b=s3.get_object(Bucket='{bucket}',Key='nightly/run/{}')['Body'].read()\n\
         print(len(b), hashlib.sha256(b).hexdigest())",
        b.name
    ));
    assert_eq!(got.trim(), format!("{} {}", big.len(), sha(&big)));
}

#[test]
fn a_second_run_is_refused_while_the_lock_is_held() {
    let Some(server) = s3::shared("a_second_run_is_refused_while_the_lock_is_held") else {
        return;
    };
    let bucket = server.bucket("lock");
    let first = open(server, &bucket, "p");
    let second = open(server, &bucket, "p");
    let held = first.lock().expect("the first run locks");
    let refused = second.lock().err().expect("the second run is refused");
    let text = refused.to_string();
    assert!(matches!(refused, DestError::Locked { .. }), "{text}");
    assert!(
        text.contains(&format!("s3://{bucket}/p/.zephr-etl.lock")),
        "{text}"
    );
    assert!(text.contains(first.run_tag()), "{text}");
    drop(held);
    let _again = second.lock().expect("free once the first run released it");
}

#[test]
fn an_expired_lock_is_taken_over_and_its_holder_cannot_commit() {
    let Some(server) = s3::shared("an_expired_lock_is_taken_over_and_its_holder_cannot_commit")
    else {
        return;
    };
    let bucket = server.bucket("lease");
    let mut stale_options = options(&server.endpoint);
    stale_options.lease = Duration::from_millis(800);
    stale_options.renew_every = Duration::from_secs(3600); // never renews: like a stalled run
    let stalled = ObjectDest::open(&url(&format!("s3://{bucket}/p")), stale_options).unwrap();
    let stalled_lock = stalled.lock().unwrap();
    let file = write(&stalled, "users.csv", b"a\n");

    let next = open(server, &bucket, "p");
    assert!(matches!(next.lock(), Err(DestError::Locked { .. })));
    std::thread::sleep(Duration::from_millis(1200));
    let _taken = next.lock().expect("an expired lock is taken over");

    let lost = commit(&stalled, vec![file], vec![], false).unwrap_err();
    assert!(
        matches!(lost, DestError::Cloud(CloudError::LockLost { .. })),
        "{lost}"
    );
    assert_eq!(
        next.read("manifest.json").unwrap(),
        None,
        "nothing was committed"
    );
    drop(stalled_lock); // must not delete the new holder's lock
    assert!(matches!(
        open(server, &bucket, "p").lock(),
        Err(DestError::Locked { .. })
    ));
}

#[test]
fn overwrite_replaces_the_dataset_and_removes_the_old_objects_after() {
    let Some(server) =
        s3::shared("overwrite_replaces_the_dataset_and_removes_the_old_objects_after")
    else {
        return;
    };
    let bucket = server.bucket("overwrite");
    let old_names = {
        let dest = open(server, &bucket, "out");
        let _lock = dest.lock().unwrap();
        dest.recover().unwrap();
        let files = vec![
            write(&dest, "users.csv", b"old users\n"),
            write(&dest, "grants.csv", b"old grants\n"),
        ];
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        commit(&dest, files, vec![], false).unwrap();
        names
    };

    // Without permission to overwrite, a prefix that holds a dataset is refused.
    let refused = open(server, &bucket, "out");
    {
        let _lock = refused.lock().unwrap();
        let file = write(&refused, "users.csv", b"new\n");
        let err = commit(&refused, vec![file], vec![], false).unwrap_err();
        assert!(matches!(err, DestError::Exists { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("s3://{bucket}/out")),
            "{err}"
        );
        refused.discard();
    }

    let dest = open(server, &bucket, "out");
    let _lock = dest.lock().unwrap();
    dest.recover().unwrap();
    let new = write(&dest, "users.csv", b"new users\n");
    commit(&dest, vec![new.clone()], old_names.clone(), true).unwrap();
    assert_eq!(
        dest.list().unwrap(),
        vec!["manifest.json".to_string(), new.name.clone()]
    );
    for old in &old_names {
        assert_eq!(dest.read(old).unwrap(), None, "{old} is gone");
    }
    assert_eq!(dest.read(&new.name).unwrap().unwrap(), b"new users\n");
}

#[test]
fn a_failed_run_leaves_nothing_and_recovery_removes_a_dead_runs_objects() {
    let Some(server) =
        s3::shared("a_failed_run_leaves_nothing_and_recovery_removes_a_dead_runs_objects")
    else {
        return;
    };
    let bucket = server.bucket("discard");
    // A run that fails: its finished objects and its open upload go.
    let failed = open(server, &bucket, "x");
    {
        let _lock = failed.lock().unwrap();
        write(&failed, "users.csv", b"partial\n");
        let mut open_upload = failed.create("grants.csv").unwrap();
        open_upload.write_all(&pattern(6 * MIB, 1)).unwrap(); // one part sent
        failed.discard();
        drop(open_upload);
    }
    assert_eq!(failed.list().unwrap(), Vec::<String>::new());
    let uploads = server.python(&format!(
        "import boto3,os\n\
         s3=boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         print(len(s3.list_multipart_uploads(Bucket='{bucket}').get('Uploads',[])))"
    ));
    assert_eq!(uploads.trim(), "0", "the multipart upload was aborted");

    // A run that died without cleaning up: a complete object nobody lists, next to the
    // committed dataset and to a user's own file, which stay.
    let committed = {
        let dest = open(server, &bucket, "y");
        let _lock = dest.lock().unwrap();
        let file = write(&dest, "users.csv", b"kept\n");
        commit(&dest, vec![file.clone()], vec![], false).unwrap();
        file.name
    };
    let dead = open(server, &bucket, "y");
    let orphan = write(&dead, "users.csv", b"orphan\n").name;
    let own = write(&dead, "notes.txt", b"mine\n").name;
    let user_file = "README.txt";
    let next = open(server, &bucket, "y");
    server.python(&format!(
        "import boto3,os\n\
         s3=boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         s3.put_object(Bucket='{bucket}',Key='y/{user_file}',Body=b'hello')"
    ));
    let _lock = next.lock().unwrap();
    next.recover().unwrap();
    let mut expected = vec![
        committed,
        "manifest.json".to_string(),
        user_file.to_string(),
    ];
    expected.sort();
    assert_eq!(
        next.list().unwrap(),
        expected,
        "{orphan} and {own} removed, the rest kept"
    );
}

/// The child half of the kill test: writes slowly until killed (run by the parent only).
#[test]
#[ignore = "run by a_killed_run_leaves_no_manifest_and_the_next_run_succeeds"]
fn child_writer_for_kill_test() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("KILL_TEST_ENDPOINT"),
        std::env::var("KILL_TEST_BUCKET"),
    ) else {
        return;
    };
    let mut options = options(&endpoint);
    options.lease = Duration::from_secs(2);
    options.renew_every = Duration::from_millis(500);
    let dest = ObjectDest::open(&url(&format!("s3://{bucket}/k")), options).unwrap();
    let _lock = dest.lock().unwrap();
    dest.recover().unwrap();
    let done = write(&dest, "users.csv", b"complete object of a run that dies\n");
    let mut file = dest.create("parquet/users/part-00000.parquet").unwrap();
    file.write_all(&pattern(11 * MIB, 3)).unwrap(); // two parts on their way
    println!("UPLOADING {}", done.name);
    std::io::stdout().flush().unwrap();
    // Bounded: the parent kills this process long before.
    for _ in 0..600 {
        file.write_all(&[b'x'; 1024]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_run_leaves_no_manifest_and_the_next_run_succeeds() {
    let Some(server) = s3::shared("a_killed_run_leaves_no_manifest_and_the_next_run_succeeds")
    else {
        return;
    };
    let bucket = server.bucket("kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "object_store::child_writer_for_kill_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILL_TEST_ENDPOINT", &server.endpoint)
        .env("KILL_TEST_BUCKET", &bucket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let orphan = loop {
        let Some(line) = lines.next() else {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("the child ended before uploading: {seen:?} {stderr}");
        };
        let line = line.unwrap();
        seen.push(line.clone());
        // libtest prints `test NAME ... ` before the test's own output on the same line.
        if let Some(at) = line.find("UPLOADING ") {
            break line[at + "UPLOADING ".len()..].trim().to_string();
        }
    };
    child.kill().unwrap(); // SIGKILL: no cleanup of any kind
    child.wait().unwrap();

    let next = open(server, &bucket, "k");
    assert_eq!(
        next.read("manifest.json").unwrap(),
        None,
        "no manifest after a kill"
    );
    assert_eq!(next.list().unwrap(), vec![orphan.clone()]);
    assert!(
        matches!(next.lock(), Err(DestError::Locked { .. })),
        "the dead run's lease runs on"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let _lock = next.lock().expect("taken over once the lease expired");
    next.recover().unwrap();
    assert_eq!(
        next.list().unwrap(),
        Vec::<String>::new(),
        "the dead run's object is gone"
    );
    let file = write(&next, "users.csv", b"fresh\n");
    commit(&next, vec![file.clone()], vec![], false).unwrap();
    assert_eq!(
        next.list().unwrap(),
        vec!["manifest.json".to_string(), file.name]
    );
}

#[test]
fn a_bucket_that_does_not_exist_is_named() {
    let Some(server) = s3::shared("a_bucket_that_does_not_exist_is_named") else {
        return;
    };
    let dest = open(server, "no-such-bucket-zephr", "x");
    let err = dest.lock().err().expect("refused");
    assert!(
        matches!(err, DestError::Cloud(CloudError::NoSuchBucket { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("bucket no-such-bucket-zephr does not exist"),
        "{err}"
    );
}

#[test]
fn wrong_credentials_are_access_denied_without_the_secret() {
    if s3::python().is_none() {
        assert!(std::env::var_os("CI").is_none(), "moto is missing under CI");
        crate::support::harness::skip_notice(
            "wrong_credentials_are_access_denied_without_the_secret: moto is not installed",
        );
        return;
    }
    // A server that checks credentials: none of the tests' keys exist in its IAM.
    let strict = s3::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).expect("moto starts");
    let err = ObjectDest::open(&url("s3://anybucket/x"), options(&strict.endpoint))
        .unwrap()
        .lock()
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, DestError::Cloud(CloudError::AccessDenied { .. })),
        "{err:?}"
    );
    assert!(
        text.contains("access denied to s3://anybucket/x/.zephr-etl.lock"),
        "{text}"
    );
    assert!(!text.contains(SECRET_KEY), "{text}");
    assert!(!format!("{err:?}").contains(SECRET_KEY));
}

#[test]
fn a_store_answering_503_a_few_times_is_retried() {
    let Some(server) = s3::shared("a_store_answering_503_a_few_times_is_retried") else {
        return;
    };
    let bucket = server.bucket("retry");
    let proxy = FaultProxy::start(&server.endpoint, 2);
    let dest =
        ObjectDest::open(&url(&format!("s3://{bucket}/r")), options(&proxy.endpoint)).unwrap();
    let _lock = dest.lock().expect("locked through two 503s");
    let data = pattern(6 * MIB, 9);
    let file = write(&dest, "users.csv", &data);
    commit(&dest, vec![file.clone()], vec![], false).unwrap();
    assert_eq!(
        proxy.failed.load(Ordering::SeqCst),
        2,
        "both faults were served"
    );
    assert_eq!(dest.read(&file.name).unwrap().unwrap(), data);

    // A store that keeps failing: the error names the key and what the store said.
    let always = FaultProxy::start(&server.endpoint, usize::MAX);
    let dest = ObjectDest::open(
        &url(&format!("s3://{bucket}/r2")),
        options(&always.endpoint),
    )
    .unwrap();
    let err = dest.read("manifest.json").unwrap_err().to_string();
    assert!(
        err.contains(&format!("s3://{bucket}/r2/manifest.json")),
        "{err}"
    );
    assert!(err.contains("503"), "{err}");
}

#[test]
fn an_input_object_streams_back_compressed_or_not() {
    let Some(server) = s3::shared("an_input_object_streams_back_compressed_or_not") else {
        return;
    };
    let bucket = server.bucket("input");
    let plain = pattern(3 * MIB + 5, 4);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let dest = open(server, &bucket, "in");
    let gz_name = write(&dest, "export.json.gz", &gz).name;
    // The binary's reader takes its settings from the environment; this one is given them.
    let reader = ObjectReader::open_with(
        &url(&format!("s3://{bucket}/in/{gz_name}")),
        &options(&server.endpoint).store,
    )
    .expect("opens");
    assert_eq!(reader.size(), gz.len() as u64);
    let name = std::sync::Arc::<str>::from("s3 input");
    let mut out = Vec::new();
    zephr_core::source::decompress(reader, &name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);

    let missing = ObjectReader::open_with(
        &url(&format!("s3://{bucket}/in/nope.json")),
        &options(&server.endpoint).store,
    )
    .err()
    .expect("a missing object");
    assert_eq!(
        missing.to_string(),
        format!("s3://{bucket}/in/nope.json does not exist")
    );
}

// ---- The binary: `-o s3://...`, inputs from a bucket, fetch into a bucket ----

/// Every object under `s3://bucket/prefix`, saved under its untagged name in `dir`; the
/// object names.
fn download(server: &Moto, bucket: &str, prefix: &str, dir: &std::path::Path) -> Vec<String> {
    let dest = open(server, bucket, prefix);
    let names = dest.list().unwrap();
    for name in &names {
        let path = dir.join(untag(name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, dest.read(name).unwrap().unwrap()).unwrap();
    }
    names
}

#[test]
fn convert_into_a_bucket_equals_a_local_run_and_pyarrow_reads_it() {
    use crate::support::harness::{generated, zephr};
    let Some(server) = s3::shared("convert_into_a_bucket_equals_a_local_run_and_pyarrow_reads_it")
    else {
        return;
    };
    let bucket = server.bucket("cli");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("export.json");
    std::fs::write(&input, generated(300, 11)).unwrap();
    let local = convert_locally(&input, tmp.path());
    let url = format!("s3://{bucket}/nightly");
    zephr()
        .envs(server.env())
        .arg("convert")
        .arg(&input)
        .args(["-o", &url, "-q"])
        .assert()
        .success();

    let down = tmp.path().join("down");
    let first = download(server, &bucket, "nightly", &down);
    assert!(first.contains(&"manifest.json".to_string()), "{first:?}");
    assert_same_tables(&local, &down);
    let manifest = std::fs::read_to_string(down.join("manifest.json")).unwrap();
    assert!(!manifest.contains(SECRET_KEY) && !manifest.contains("testing-access-key"));

    // An independent reader, straight from the endpoint.
    let rows = server.python(&format!(
        "import os, pyarrow.fs as fs, pyarrow.parquet as pq\n\
         s3 = fs.S3FileSystem(endpoint_override=os.environ['AWS_ENDPOINT_URL'], scheme='http',\n\
              access_key=os.environ['AWS_ACCESS_KEY_ID'], secret_key=os.environ['AWS_SECRET_ACCESS_KEY'],\n\
              region='us-east-1')\n\
         infos = s3.get_file_info(fs.FileSelector('{bucket}/nightly'))\n\
         [users] = [i.path for i in infos if i.base_name.startswith('users-') and i.base_name.endswith('.parquet')]\n\
         t = pq.read_table(users, filesystem=s3)\n\
         print(t.num_rows, t.schema.field('registered').type, t.column('user_id')[0].as_py())"
    ));
    let local_users = crate::support::harness::csv_table(&local, "users").1;
    assert_eq!(
        rows.trim(),
        format!(
            "{} timestamp[us, tz=UTC] {}",
            local_users.len(),
            local_users[0][0].as_deref().unwrap()
        )
    );

    // A prefix that holds a dataset is refused without --overwrite, replaced with it.
    zephr()
        .envs(server.env())
        .arg("convert")
        .arg(&input)
        .args(["-o", &url, "-q"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "already exists; pass --overwrite",
        ));
    zephr()
        .envs(server.env())
        .arg("convert")
        .arg(&input)
        .args(["-o", &url, "-q", "--overwrite"])
        .assert()
        .success();
    let second = open(server, &bucket, "nightly").list().unwrap();
    assert_eq!(second.len(), first.len());
    for old in first.iter().filter(|n| *n != "manifest.json") {
        assert!(!second.contains(old), "{old} was removed");
    }
}

#[test]
fn an_input_in_a_bucket_converts_like_the_local_file() {
    use crate::support::harness::{generated, zephr};
    let Some(server) = s3::shared("an_input_in_a_bucket_converts_like_the_local_file") else {
        return;
    };
    let bucket = server.bucket("cli-in");
    let tmp = tempfile::tempdir().unwrap();
    let export = generated(120, 5);
    let input = tmp.path().join("export.json");
    std::fs::write(&input, &export).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&export).unwrap();
    let gz = gz.finish().unwrap();
    let gz_path = tmp.path().join("export.json.gz");
    std::fs::write(&gz_path, &gz).unwrap();
    server.python(&format!(
        "import boto3, os\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         s3.put_object(Bucket='{bucket}', Key='raw/export.json.gz', Body=open({:?}, 'rb').read())",
        gz_path.display().to_string()
    ));
    let local = convert_locally(&input, tmp.path());
    let from_bucket = tmp.path().join("from-bucket");
    zephr()
        .envs(server.env())
        .args([
            "convert",
            &format!("s3://{bucket}/raw/export.json.gz"),
            "-o",
        ])
        .arg(&from_bucket)
        .arg("-q")
        .assert()
        .success();
    assert_same_tables(&local, &from_bucket);
}

#[test]
fn fetch_into_a_bucket_equals_a_local_fetch() {
    use crate::support::harness::{generated, zephr};
    use crate::support::mock_zephr::{MockConfig, MockServer};
    let Some(server) = s3::shared("fetch_into_a_bucket_equals_a_local_fetch") else {
        return;
    };
    let bucket = server.bucket("cli-fetch");
    let export = generated(80, 3);
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&export).unwrap();
    let items = items.iter().map(|i| i.get().to_owned()).collect();
    let mut cfg = MockConfig::new("ak", "sk", items);
    cfg.default_rpp = 25;
    let zephr_api = MockServer::start(cfg);
    let tmp = tempfile::tempdir().unwrap();
    let fetch = |out: &str, work: &std::path::Path| {
        let mut cmd = zephr();
        cmd.envs(server.env())
            .env("ZEPHR_ACCESS_KEY", "ak")
            .env("ZEPHR_SECRET_KEY", "sk")
            .env("XDG_CACHE_HOME", work)
            .args([
                "fetch",
                "--tenant",
                "acme",
                "--base-url",
                &zephr_api.base_url,
            ])
            .args(["--grants", "--attributes", "--rpp", "25", "-q", "-o", out]);
        cmd
    };
    let local = tmp.path().join("local");
    fetch(local.to_str().unwrap(), tmp.path())
        .assert()
        .success();
    let cache = tmp.path().join("cache");
    fetch(&format!("s3://{bucket}/fetched"), &cache)
        .assert()
        .success();
    let down = tmp.path().join("down");
    download(server, &bucket, "fetched", &down);
    assert_same_tables(&local, &down);
    // The pages were kept locally, in the cache, and removed once the tables were in.
    let work = cache.join("zephr-etl/fetch");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_output_urls_are_usage_errors_and_no_folder_appears() {
    use crate::support::harness::{generated, zephr};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("export.json");
    std::fs::write(&input, generated(3, 1)).unwrap();
    for (out, says) in [
        ("ftp://host/x", "unsupported scheme `ftp://`"),
        ("s3:/bucket/x", "s3://BUCKET/PREFIX (two slashes)"),
        (
            "https://acct.blob.core.windows.net/c/p?sig=SECRETSIG",
            "credentials do not belong in the URL",
        ),
    ] {
        let assert = zephr()
            .current_dir(tmp.path())
            .arg("convert")
            .arg(&input)
            .args(["-o", out])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(says));
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(!stderr.contains("SECRETSIG"), "{stderr}");
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["export.json".to_string()],
        "no local folder was made"
    );
}

#[test]
fn a_missing_bucket_fails_naming_it_and_never_the_secret() {
    use crate::support::harness::{generated, zephr};
    let Some(server) = s3::shared("a_missing_bucket_fails_naming_it_and_never_the_secret") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("export.json");
    std::fs::write(&input, generated(3, 1)).unwrap();
    let out = zephr()
        .envs(server.env())
        .arg("convert")
        .arg(&input)
        .args(["-o", "s3://zephr-missing-bucket/x"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "bucket zephr-missing-bucket does not exist",
        ))
        .get_output()
        .clone();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET_KEY), "{text}");
}

/// `convert INPUT -o URL` with the server's environment and `extra` arguments.
fn convert_into(server: &Moto, input: &std::path::Path, url: &str, extra: &[&str]) {
    crate::support::harness::zephr()
        .envs(server.env())
        .arg("convert")
        .arg(input)
        .args(["-o", url, "-q"])
        .args(extra)
        .assert()
        .success();
}

/// Issue 20, case 1: a run into a parent prefix used to sweep the datasets below it. Now a
/// run (and its recovery) deletes only what its own runs recorded: the dataset in
/// `z/nightly`, and a user's object that merely looks run-tagged, survive runs into `z`,
/// with and without `--overwrite`, and the recovery of a dead run there.
#[test]
fn a_run_into_a_parent_prefix_keeps_the_datasets_below_it() {
    use crate::support::harness::generated;
    let Some(server) = s3::shared("a_run_into_a_parent_prefix_keeps_the_datasets_below_it") else {
        return;
    };
    let bucket = server.bucket("parent");
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.json");
    std::fs::write(&small, generated(30, 3)).unwrap();
    let other = tmp.path().join("other.json");
    std::fs::write(&other, generated(50, 4)).unwrap();
    let local = convert_locally(&small, tmp.path());

    convert_into(server, &small, &format!("s3://{bucket}/z/nightly"), &[]);
    let child = open(server, &bucket, "z/nightly").list().unwrap();
    assert_eq!(child.len(), 7, "6 tables and the manifest: {child:?}");
    let lookalike = "z/backup/users-20240501T100000Z-1a2b3c4d.csv";
    server.python(&format!(
        "import boto3,os\n\
         s3=boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         s3.put_object(Bucket='{bucket}',Key='{lookalike}',Body=b'mine')"
    ));

    // A dead run in the parent: one recorded object, never committed.
    let dead = open(server, &bucket, "z");
    let orphan = write(&dead, "users.csv", b"orphan of a dead run\n").name;

    convert_into(server, &other, &format!("s3://{bucket}/z"), &[]);
    convert_into(
        server,
        &other,
        &format!("s3://{bucket}/z"),
        &["--overwrite"],
    );

    let all = open(server, &bucket, "z").list().unwrap();
    assert!(
        !all.contains(&orphan),
        "the dead run's object went: {all:?}"
    );
    assert!(all.contains(&"backup/users-20240501T100000Z-1a2b3c4d.csv".to_string()));
    assert_eq!(
        open(server, &bucket, "z/nightly").list().unwrap(),
        child,
        "the dataset below is whole"
    );
    let down = tmp.path().join("down");
    download(server, &bucket, "z/nightly", &down);
    assert_same_tables(&local, &down);
    // The parent's own dataset: its manifest's files and nothing of its replaced first run.
    let manifest: serde_json::Value = serde_json::from_slice(
        &open(server, &bucket, "z")
            .read("manifest.json")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let top: Vec<&String> = all
        .iter()
        .filter(|n| !n.contains('/') && *n != "manifest.json")
        .collect();
    assert_eq!(top.len(), 6, "{top:?}");
    for name in top {
        assert!(listed.contains(&name.as_str()), "{name} is listed");
    }
}

/// Issue 20, case 3: in a bucket the manifest names each object's table and format, so a
/// loader that filters by table finds its files (the run-tagged names used to be looked up
/// under their untagged ones, giving "unknown"). A second commit of the same run (state
/// events) replaces the run's own manifest.
#[test]
fn a_bucket_manifest_names_every_objects_table_and_format() {
    use crate::support::harness::generated;
    let Some(server) = s3::shared("a_bucket_manifest_names_every_objects_table_and_format") else {
        return;
    };
    let bucket = server.bucket("kinds");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("export.json");
    let mut bytes = generated(20, 5);
    // One bad item, so the rejects file is part of the dataset too.
    let last = bytes.iter().rposition(|&b| b == b']').unwrap();
    bytes.splice(last..last, b",{\"user\": {}}".iter().copied());
    std::fs::write(&input, bytes).unwrap();
    let events = tmp.path().join("events.csv");
    std::fs::write(&events, "id,kind\n1,a\n2,b\n").unwrap();
    let events_arg = events.display().to_string();
    convert_into(
        server,
        &input,
        &format!("s3://{bucket}/k"),
        &[
            "--format",
            "csv,parquet,xlsx",
            "--on-error",
            "skip",
            "--max-rows-per-file",
            "7",
            "--state-events",
            &events_arg,
        ],
    );
    let dest = open(server, &bucket, "k");
    let manifest: serde_json::Value =
        serde_json::from_slice(&dest.read("manifest.json").unwrap().unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for file in files {
        let path = file["path"].as_str().unwrap();
        let (table, format) = (
            file["table"].as_str().unwrap(),
            file["format"].as_str().unwrap(),
        );
        let untagged = untag(path);
        // FORMAT/TABLE/part-NNNNN.EXT when split, TABLE.EXT otherwise (xlsx, the rejects).
        let expected = match untagged.split_once('/') {
            Some((format, rest)) => (rest.split('/').next().unwrap().to_string(), format.into()),
            None => {
                let (stem, ext) = untagged.split_once('.').unwrap();
                (stem.to_string(), ext.to_string())
            }
        };
        assert_eq!((table.to_string(), format.to_string()), expected, "{path}");
        kinds.insert((table.to_string(), format.to_string()));
        assert!(dest.read(path).unwrap().is_some(), "{path} exists");
    }
    assert_eq!(manifest["tables"]["users"]["rows"], 20);
    assert_eq!(manifest["tables"]["state_events"]["rows"], 2);
    // Every table in every format, and the rejects.
    assert_eq!(kinds.len(), 4 * 3 + 1, "{kinds:?}");
}

/// Issue 20, case 9: set-up mistakes name their fix, before anything is sent.
#[test]
fn bucket_set_up_mistakes_name_their_fix() {
    use crate::support::harness::{generated, zephr};
    let Some(server) = s3::shared("bucket_set_up_mistakes_name_their_fix") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("export.json");
    std::fs::write(&input, generated(3, 1)).unwrap();
    let env: Vec<(&str, String)> = server.env();
    let without = |names: &[&str]| -> Vec<(&'static str, String)> {
        env.iter()
            .filter(|(k, _)| !names.contains(k))
            .cloned()
            .collect()
    };
    // An http endpoint without AWS_ALLOW_HTTP.
    zephr()
        .env_remove("AWS_ALLOW_HTTP")
        .envs(without(&["AWS_ALLOW_HTTP"]))
        .arg("convert")
        .arg(&input)
        .args(["-o", "s3://b/x"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "is plain http; set AWS_ALLOW_HTTP=true",
        ));
    // No credentials anywhere: the metadata service (a closed loopback port here) has none.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = zephr()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .envs(without(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]))
        .env(
            "AWS_METADATA_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        )
        .arg("convert")
        .arg(&input)
        .args(["-o", "s3://b/x"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "no AWS credentials found",
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        &format!("http://127.0.0.1:{closed}"),
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!tmp.path().join("s3:").exists());
}
