use super::*;

fn cloud(text: &str) -> CloudUrl {
    match parse(text) {
        Ok(Location::Cloud(url)) => url,
        other => panic!("{text}: {other:?}"),
    }
}

fn bad(text: &str) -> String {
    match parse(text) {
        Err(e @ CloudError::BadUrl { .. }) => e.to_string(),
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn local_paths_stay_local() {
    for text in [
        "out",
        "./s3",
        "/tmp/x",
        "C:\\data\\out",
        "a:b",
        "dir/with:colon",
        "-",
    ] {
        assert_eq!(
            parse(text).unwrap(),
            Location::Local(PathBuf::from(text)),
            "{text}"
        );
    }
}

#[test]
fn clouds_and_their_spellings() {
    let u = cloud("s3://bucket/some/prefix/");
    assert_eq!(
        (u.cloud, u.bucket.as_str(), u.key.as_str()),
        (Cloud::S3, "bucket", "some/prefix")
    );
    assert_eq!(u.display(), "s3://bucket/some/prefix");
    assert_eq!(u.target("users.csv"), "s3://bucket/some/prefix/users.csv");
    let u = cloud("s3a://bucket");
    assert_eq!(
        (u.cloud, u.bucket.as_str(), u.key.as_str()),
        (Cloud::S3, "bucket", "")
    );
    let u = cloud("gs://b/p");
    assert_eq!(
        (u.cloud, u.bucket.as_str(), u.key.as_str()),
        (Cloud::Gcs, "b", "p")
    );
    for text in [
        "az://c/p",
        "azure://c/p",
        "abfs://c@acct.dfs.core.windows.net/p",
        "abfss://c@acct.dfs.core.windows.net/p",
        "https://acct.blob.core.windows.net/c/p",
    ] {
        let u = cloud(text);
        assert_eq!(
            (u.cloud, u.bucket.as_str(), u.key.as_str()),
            (Cloud::Azure, "c", "p"),
            "{text}"
        );
    }
    let u = cloud("https://bkt.s3.eu-west-1.amazonaws.com/a/b");
    assert_eq!(
        (u.cloud, u.bucket.as_str(), u.key.as_str()),
        (Cloud::S3, "bkt", "a/b")
    );
}

#[test]
fn other_schemes_and_near_misses_are_errors() {
    assert!(bad("ftp://host/x").contains("unsupported scheme `ftp://`"));
    assert!(bad("http://host/x").contains("unsupported scheme"));
    assert!(bad("https://example.com/x").contains("unsupported scheme"));
    assert!(bad("s3:/bucket/x").contains("s3://BUCKET/PREFIX (two slashes)"));
    assert!(bad("s3:bucket").contains("two slashes"));
    assert!(bad("s3://").contains("no bucket"));
}

#[test]
fn credentials_in_the_url_are_refused_and_hidden() {
    let e = bad("https://acct.blob.core.windows.net/c/p?sv=2020&sig=SECRETSIG");
    assert!(e.contains("credentials do not belong in the URL"), "{e}");
    assert!(!e.contains("SECRETSIG"), "{e}");
    let e = bad("s3://user:SECRETPW@bucket/x");
    assert!(!e.contains("SECRETPW"), "{e}");
}

#[test]
fn redact_hides_query_strings() {
    assert_eq!(
        redact("PUT https://a.blob.core.windows.net/c/k?sig=abc&se=1 failed"),
        "PUT https://a.blob.core.windows.net/c/k?<hidden> failed"
    );
    assert_eq!(redact("no url here"), "no url here");
}

#[test]
fn work_dir_is_named_after_the_destination() {
    let a = work_dir_name("s3://bucket/nightly");
    let b = work_dir_name("s3://bucket/nightly2");
    assert!(a.starts_with("s3___bucket_nightly-"), "{a}");
    assert_ne!(a, b);
    assert_eq!(a, work_dir_name("s3://bucket/nightly/"));
    let dir = default_work_dir("gs://b/p");
    assert!(
        dir.ends_with(format!("zephr-etl/fetch/{}", work_dir_name("gs://b/p"))),
        "{dir:?}"
    );
}
