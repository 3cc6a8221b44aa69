//! The fetch client and paginator against the mock Zephr Admin API: pagination order,
//! retries, error messages, and that every request was signed correctly with a fresh nonce.

use crate::support::mock_zephr;

use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mock_zephr::{Fault, MockConfig, MockServer, RecordedRequest, StateEventsMock};
use zephr_api::client::parse_retry_after;
use zephr_api::{
    BodyShape, Client, ClientConfig, Credentials, EVENTS_EXPORT_PATH, EventsQuery, ExportQuery,
    FetchError, PagesError, PagesSummary, RetryPolicy, SecretKey, USER_EXPORT_PATH, fetch_pages,
};
use zephr_core::error::Chain;

const ACCESS_KEY: &str = "AK-test-1";
const SECRET: &str = "TOPSECRET-0f9e8d7c6b5a";

fn items(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| {
            format!(
                r#"{{"user":{{"user_id":"u{i}","identifiers":{{"email_address":"u{i}@example.com"}}}},"seq-no":{i}}}"#
            )
        })
        .collect()
}

fn start_mock(n_items: usize, faults: Vec<Fault>) -> MockServer {
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items(n_items));
    cfg.faults = faults;
    cfg.lifetime = Duration::from_secs(60);
    MockServer::start(cfg)
}

fn client_with(base_url: &str, secret: &str, retries: u32) -> Client {
    let creds = Credentials {
        access_key: ACCESS_KEY.into(),
        secret: SecretKey::new(secret),
    };
    let mut cfg = ClientConfig::new(base_url, "acme", creds);
    cfg.retry = RetryPolicy {
        retries,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(3),
    };
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.read_timeout = Duration::from_secs(10);
    Client::new(cfg).unwrap()
}

fn new_client(server: &MockServer) -> Client {
    client_with(&server.base_url, SECRET, 3)
}

fn rpp3() -> ExportQuery {
    ExportQuery {
        rpp: Some(3),
        ..Default::default()
    }
}

/// The `user_id`s in a page body (flat or nested results, or a top-level array).
fn user_ids(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let results = if v.is_array() {
        v
    } else {
        v["results"].clone()
    };
    let mut out = Vec::new();
    for r in results.as_array().unwrap() {
        let group = if r.is_array() {
            r.as_array().unwrap().clone()
        } else {
            vec![r.clone()]
        };
        for item in group {
            out.push(item["user"]["user_id"].as_str().unwrap().to_owned());
        }
    }
    out
}

fn ids(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("u{i}")).collect()
}

/// Page numbers and bodies in delivery order, and the summary.
type Collected = (Vec<u32>, Vec<Vec<u8>>, PagesSummary);

/// Runs the paginator and returns the page numbers and bodies in delivery order.
fn collect(
    client: &Client,
    path: &str,
    query: impl Fn(u32) -> String + Sync,
    concurrency: usize,
) -> Result<Collected, PagesError<std::convert::Infallible>> {
    let mut pages = Vec::new();
    let mut bodies = Vec::new();
    let summary = fetch_pages(client, path, query, 1, concurrency, |page, body| {
        pages.push(page);
        bodies.push(body);
        Ok(())
    })?;
    Ok((pages, bodies, summary))
}

/// Every request the server saw was correctly signed, with a nonce never seen before.
fn assert_all_signed(server: &MockServer) {
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    let mut nonces = HashSet::new();
    for r in &reqs {
        assert!(r.signature_ok, "{r:?}");
        assert_eq!(r.method, "GET");
        let nonce = r.nonce().expect("nonce").to_owned();
        assert_eq!(nonce.len(), 32, "{r:?}");
        assert!(nonces.insert(nonce), "nonce reused: {r:?}");
    }
}

fn page_requests(server: &MockServer, page: u32) -> Vec<RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == USER_EXPORT_PATH && r.page == Some(page))
        .collect()
}

fn assert_no_secret(e: &dyn std::fmt::Debug, display: &str, server: &MockServer) {
    let debug = format!("{e:?}");
    for text in [display, debug.as_str()] {
        assert!(!text.contains(SECRET), "{text}");
        for r in server.requests() {
            if let Some(auth) = &r.authorization {
                assert!(!text.contains(auth.as_str()), "{text}");
                let hash = auth.rsplit(':').next().unwrap();
                assert!(!text.contains(hash), "{text}");
            }
        }
    }
}

#[test]
fn seven_items_rpp3_three_pages_in_order() {
    for concurrency in [1, 4] {
        // Page 2 answers late so that, with 4 in flight, page 3 arrives before it.
        let server = start_mock(
            7,
            vec![Fault::Delay {
                page: 2,
                attempt: 1,
                millis: 150,
            }],
        );
        let client = new_client(&server);
        let q = rpp3();
        let (pages, bodies, summary) = collect(
            &client,
            USER_EXPORT_PATH,
            |p| q.to_query(Some(p)),
            concurrency,
        )
        .unwrap();
        assert_eq!(pages, [1, 2, 3], "concurrency {concurrency}");
        let got: Vec<String> = bodies.iter().flat_map(|b| user_ids(b)).collect();
        assert_eq!(got, ids(1..=7));
        assert_eq!(summary.pages, 3);
        assert_eq!(summary.last_page, 3);
        assert_eq!(summary.items, 7);
        assert_eq!(summary.shape, BodyShape::Envelope);
        assert_eq!(
            summary.bytes,
            bodies.iter().map(|b| b.len() as u64).sum::<u64>()
        );
        assert_eq!(client.bytes_received(), summary.bytes);
        // The total is known from page 1's meta, so nothing past page 3 is ever asked for.
        let asked: Vec<u32> = server.requests().iter().filter_map(|r| r.page).collect();
        assert!(asked.iter().all(|&p| (1..=3).contains(&p)), "{asked:?}");
        assert_eq!(asked.len(), 3);
        let queries: HashSet<String> = server.requests().into_iter().map(|r| r.query).collect();
        assert!(queries.contains("rpp=3&page=2"), "{queries:?}");
        assert_all_signed(&server);
    }
}

#[test]
fn without_meta_or_links_the_empty_page_ends_it() {
    for (concurrency, nested) in [(1, false), (4, true)] {
        let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items(7));
        cfg.include_meta = false;
        cfg.include_links = false;
        cfg.nested_results = nested;
        let server = MockServer::start(cfg);
        let client = new_client(&server);
        let q = rpp3();
        let (pages, bodies, summary) = collect(
            &client,
            USER_EXPORT_PATH,
            |p| q.to_query(Some(p)),
            concurrency,
        )
        .unwrap();
        assert_eq!(pages, [1, 2, 3, 4]);
        assert!(user_ids(&bodies[3]).is_empty());
        let got: Vec<String> = bodies.iter().flat_map(|b| user_ids(b)).collect();
        assert_eq!(got, ids(1..=7));
        assert_eq!(summary.items, 7);
        assert_all_signed(&server);
    }
}

#[test]
fn links_next_null_ends_it_without_meta() {
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items(6));
    cfg.include_meta = false;
    let server = MockServer::start(cfg);
    let client = new_client(&server);
    let q = rpp3();
    let (pages, _, _) = collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 1).unwrap();
    assert_eq!(pages, [1, 2]);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn speculative_pages_past_the_end_are_harmless() {
    // Without meta the paginator asks ahead; a failure on a page past the end is never seen.
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items(7));
    cfg.include_meta = false;
    cfg.include_links = false;
    cfg.faults = (5..=8)
        .map(|page| Fault::Status {
            page,
            attempt: 1,
            status: 400,
            retry_after: None,
        })
        .collect();
    let server = MockServer::start(cfg);
    let client = new_client(&server);
    let q = rpp3();
    let (pages, _, summary) =
        collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 4).unwrap();
    assert_eq!(pages, [1, 2, 3, 4]);
    assert_eq!(summary.items, 7);
}

#[test]
fn single_page_export_and_unpaginated_array() {
    let server = start_mock(2, vec![]);
    let client = new_client(&server);
    let q = rpp3();
    let (pages, _, summary) =
        collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 4).unwrap();
    assert_eq!(pages, [1]);
    assert_eq!(summary.items, 2);

    // No page and no rpp: the mock answers the whole export as one array.
    let q = ExportQuery::default();
    let (pages, bodies, summary) =
        collect(&client, USER_EXPORT_PATH, |_| q.to_query(None), 4).unwrap();
    assert_eq!(pages, [1]);
    assert_eq!(summary.shape, BodyShape::Array);
    assert_eq!(user_ids(&bodies[0]), ids(1..=2));
    assert_all_signed(&server);
}

#[test]
fn retry_after_seconds_is_honoured() {
    let server = start_mock(
        7,
        vec![Fault::Status {
            page: 2,
            attempt: 1,
            status: 429,
            retry_after: Some("1".into()),
        }],
    );
    let client = new_client(&server);
    let q = rpp3();
    let start = Instant::now();
    let (pages, bodies, _) =
        collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 1).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(pages, [1, 2, 3]);
    let got: Vec<String> = bodies.iter().flat_map(|b| user_ids(b)).collect();
    assert_eq!(got, ids(1..=7));
    let statuses: Vec<u16> = page_requests(&server, 2).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    assert_all_signed(&server);
}

#[test]
fn retry_after_http_date_is_honoured() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = UNIX_EPOCH + Duration::from_secs(now + 2);
    let when = httpdate::fmt_http_date(at);
    assert_eq!(
        parse_retry_after(&when, UNIX_EPOCH + Duration::from_secs(now)),
        Some(Duration::from_secs(2))
    );
    let server = start_mock(
        3,
        vec![Fault::Status {
            page: 1,
            attempt: 1,
            status: 429,
            retry_after: Some(when),
        }],
    );
    let client = new_client(&server);
    let start = Instant::now();
    let body = client
        .fetch_page(USER_EXPORT_PATH, &rpp3().to_query(Some(1)))
        .unwrap();
    // now + 2 s at whole-second precision: between one and two seconds from now.
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(user_ids(&body), ids(1..=3));
    assert_eq!(page_requests(&server, 1).len(), 2);
    assert_all_signed(&server);
}

#[test]
fn retry_after_is_capped_by_max_delay() {
    let server = start_mock(
        3,
        vec![Fault::Status {
            page: 1,
            attempt: 1,
            status: 503,
            retry_after: Some("3600".into()),
        }],
    );
    let creds = Credentials {
        access_key: ACCESS_KEY.into(),
        secret: SecretKey::new(SECRET),
    };
    let mut cfg = ClientConfig::new(&server.base_url, "acme", creds);
    cfg.retry = RetryPolicy {
        retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let client = Client::new(cfg).unwrap();
    let start = Instant::now();
    client.fetch_page(USER_EXPORT_PATH, "rpp=3&page=1").unwrap();
    // Capped at 50 ms, not the server's hour: a bound far from both, so a busy machine cannot
    // make it flake.
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(page_requests(&server, 1).len(), 2);
}

#[test]
fn server_errors_and_hangups_are_retried() {
    let server = start_mock(
        7,
        vec![
            Fault::Status {
                page: 1,
                attempt: 1,
                status: 503,
                retry_after: None,
            },
            Fault::Hangup {
                page: 2,
                attempt: 1,
            },
            Fault::Status {
                page: 2,
                attempt: 2,
                status: 500,
                retry_after: None,
            },
        ],
    );
    let client = new_client(&server);
    let q = rpp3();
    let (pages, bodies, _) =
        collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 2).unwrap();
    assert_eq!(pages, [1, 2, 3]);
    let got: Vec<String> = bodies.iter().flat_map(|b| user_ids(b)).collect();
    assert_eq!(got, ids(1..=7));
    let p1: Vec<u16> = page_requests(&server, 1).iter().map(|r| r.status).collect();
    assert_eq!(p1, [503, 200]);
    let p2: Vec<u16> = page_requests(&server, 2).iter().map(|r| r.status).collect();
    assert_eq!(p2, [0, 500, 200]);
    assert_all_signed(&server);
}

#[test]
fn truncated_page_is_fetched_again_without_duplicates() {
    let clean = start_mock(7, vec![]);
    let q = rpp3();
    // Bodies quote their server's address in `links`; compare them without it.
    let strip = |bodies: Vec<Vec<u8>>, base: &str| -> Vec<String> {
        bodies
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap().replace(base, ""))
            .collect()
    };
    let (_, expected, _) = collect(
        &new_client(&clean),
        USER_EXPORT_PATH,
        |p| q.to_query(Some(p)),
        1,
    )
    .unwrap();
    let expected = strip(expected, &clean.base_url);

    for concurrency in [1, 3] {
        let server = start_mock(
            7,
            vec![
                Fault::TruncateBody {
                    page: 2,
                    attempt: 1,
                },
                Fault::TruncateBody {
                    page: 3,
                    attempt: 1,
                },
            ],
        );
        let client = new_client(&server);
        let (pages, bodies, summary) = collect(
            &client,
            USER_EXPORT_PATH,
            |p| q.to_query(Some(p)),
            concurrency,
        )
        .unwrap();
        assert_eq!(pages, [1, 2, 3]);
        assert_eq!(client.bytes_received(), summary.bytes);
        assert_eq!(strip(bodies, &server.base_url), expected);
        assert_eq!(page_requests(&server, 2).len(), 2);
        assert_all_signed(&server);
    }
}

#[test]
fn stream_retries_status_then_hands_out_the_body() {
    let server = start_mock(
        5,
        vec![Fault::Status {
            page: 0,
            attempt: 1,
            status: 503,
            retry_after: None,
        }],
    );
    let client = new_client(&server);
    let mut stream = client.open_stream(USER_EXPORT_PATH, "").unwrap();
    let total = stream.content_length().expect("content length");
    let mut body = Vec::new();
    stream.read_to_end(&mut body).unwrap();
    assert_eq!(body.len() as u64, total);
    assert_eq!(stream.bytes_read(), total);
    assert_eq!(client.bytes_received(), total);
    assert_eq!(user_ids(&body), ids(1..=5));
    let statuses: Vec<u16> = page_requests(&server, 0).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
    assert_all_signed(&server);
}

#[test]
fn stream_cut_mid_body_is_an_io_error() {
    let server = start_mock(
        50,
        vec![Fault::TruncateBody {
            page: 0,
            attempt: 1,
        }],
    );
    let client = new_client(&server);
    let mut stream = client.open_stream(USER_EXPORT_PATH, "").unwrap();
    let mut body = Vec::new();
    let err = stream.read_to_end(&mut body).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!((body.len() as u64) < stream.content_length().unwrap());
    // Mid-body failures are the caller's to handle: no second request was made.
    assert_eq!(page_requests(&server, 0).len(), 1);
}

#[test]
fn unauthorized_message() {
    let server = start_mock(3, vec![Fault::Unauthorized]);
    let client = new_client(&server);
    let e = client
        .fetch_page(USER_EXPORT_PATH, "rpp=3&page=1")
        .unwrap_err();
    let msg = Chain(&e).to_string();
    assert_eq!(
        msg,
        "authentication failed (401): check ZEPHR_ACCESS_KEY and ZEPHR_SECRET_KEY \
         (or the secret key file) for tenant acme, and that this machine's clock is correct"
    );
    assert_eq!(e.status(), Some(401));
    assert_no_secret(&e, &msg, &server);
    // Not retried: a retry cannot fix a key.
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn wrong_secret_is_refused_by_the_signature_check() {
    let server = start_mock(3, vec![]);
    let client = client_with(&server.base_url, "not-the-secret", 3);
    let q = rpp3();
    let e = collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 4).unwrap_err();
    let msg = Chain(&e).to_string();
    assert!(
        msg.starts_with("page 1: authentication failed (401): check ZEPHR_ACCESS_KEY"),
        "{msg}"
    );
    assert!(matches!(
        e,
        PagesError::Fetch {
            page: 1,
            source: FetchError::Unauthorized { .. }
        }
    ));
    assert_no_secret(&e, &msg, &server);
    assert!(!msg.contains("not-the-secret"));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].auth_error.as_deref(), Some("signature mismatch"));
}

#[test]
fn forbidden_message() {
    let server = start_mock(3, vec![Fault::Forbidden]);
    let client = new_client(&server);
    let q = rpp3();
    let e = collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 1).unwrap_err();
    let PagesError::Fetch { page: 1, source } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(
        source.to_string(),
        "permission denied (403): the key pair needs the user-export permission for tenant acme"
    );
    assert_no_secret(&e, &Chain(&e).to_string(), &server);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn other_client_errors_are_final_and_quote_the_body() {
    let server = start_mock(
        3,
        vec![Fault::Status {
            page: 1,
            attempt: 1,
            status: 404,
            retry_after: None,
        }],
    );
    let client = new_client(&server);
    let e = client
        .fetch_page(USER_EXPORT_PATH, "rpp=3&page=1")
        .unwrap_err();
    assert_eq!(
        Chain(&e).to_string(),
        "HTTP 404 from GET /v3/user-export?rpp=3&page=1: {\"message\":\"injected fault: HTTP 404\"}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn echoed_credentials_are_scrubbed_and_the_excerpt_is_short() {
    let server = start_mock(
        3,
        vec![Fault::EchoRequest {
            page: 1,
            attempt: 1,
            status: 400,
        }],
    );
    let client = new_client(&server);
    let e = client
        .fetch_page(USER_EXPORT_PATH, "rpp=3&page=1")
        .unwrap_err();
    let FetchError::Status {
        status, excerpt, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(excerpt.chars().count(), 300, "{excerpt}");
    assert!(excerpt.ends_with('…'));
    assert!(
        excerpt.starts_with(
            "{\"message\":\"you sent Authorization: [redacted] (secret [redacted]) padding"
        ),
        "{excerpt}"
    );
    assert_no_secret(&e, &Chain(&e).to_string(), &server);
}

#[test]
fn retries_exhausted_is_clear() {
    let faults = (1..=3)
        .map(|attempt| Fault::Status {
            page: 1,
            attempt,
            status: 503,
            retry_after: None,
        })
        .collect();
    let server = start_mock(3, faults);
    let client = client_with(&server.base_url, SECRET, 2);
    let e = client
        .fetch_page(USER_EXPORT_PATH, "rpp=3&page=1")
        .unwrap_err();
    assert_eq!(
        Chain(&e).to_string(),
        "GET /v3/user-export?rpp=3&page=1 failed after 3 attempts: \
         HTTP 503: {\"message\":\"injected fault: HTTP 503\"}"
    );
    assert_eq!(e.status(), Some(503));
    assert_eq!(page_requests(&server, 1).len(), 3);
    assert_no_secret(&e, &Chain(&e).to_string(), &server);
    assert_all_signed(&server);

    // Truncation on every attempt reads as such.
    let faults = (1..=2)
        .map(|attempt| Fault::TruncateBody { page: 1, attempt })
        .collect();
    let server = start_mock(3, faults);
    let client = client_with(&server.base_url, SECRET, 1);
    let e = client
        .fetch_page(USER_EXPORT_PATH, "rpp=3&page=1")
        .unwrap_err();
    let msg = Chain(&e).to_string();
    assert!(
        msg.starts_with("GET /v3/user-export?rpp=3&page=1 failed after 2 attempts: "),
        "{msg}"
    );
}

#[test]
fn a_failed_page_stops_the_paginator() {
    // Page 3 of 5 fails for good while others are in flight; the error names it.
    let faults = (1..=2)
        .map(|attempt| Fault::Status {
            page: 3,
            attempt,
            status: 502,
            retry_after: None,
        })
        .collect();
    let server = start_mock(15, faults);
    let client = client_with(&server.base_url, SECRET, 1);
    let q = rpp3();
    let mut delivered = Vec::new();
    let e = fetch_pages(
        &client,
        USER_EXPORT_PATH,
        |p| q.to_query(Some(p)),
        1,
        4,
        |p, _| {
            delivered.push(p);
            Ok::<(), String>(())
        },
    )
    .unwrap_err();
    assert_eq!(delivered, [1, 2]);
    assert_eq!(
        Chain(&e).to_string(),
        "page 3: GET /v3/user-export?rpp=3&page=3 failed after 2 attempts: \
         HTTP 502: {\"message\":\"injected fault: HTTP 502\"}"
    );

    // The sink failing stops it too, with the sink's error.
    let server2 = start_mock(15, vec![]);
    let client = new_client(&server2);
    let e = fetch_pages(
        &client,
        USER_EXPORT_PATH,
        |p| q.to_query(Some(p)),
        1,
        4,
        |p, _| {
            if p == 2 {
                Err("disk full".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    assert!(
        matches!(&e, PagesError::Sink(s) if s == "disk full"),
        "{e:?}"
    );
}

#[test]
fn resume_from_a_later_page() {
    let server = start_mock(7, vec![]);
    let client = new_client(&server);
    let q = rpp3();
    let mut pages = Vec::new();
    let summary = fetch_pages(
        &client,
        USER_EXPORT_PATH,
        |p| q.to_query(Some(p)),
        2,
        2,
        |p, _| {
            pages.push(p);
            Ok::<(), ()>(())
        },
    )
    .unwrap();
    assert_eq!(pages, [2, 3]);
    assert_eq!(summary.items, 4);
}

#[test]
fn state_events_pages_and_failure() {
    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items(1));
    cfg.state_events = Some(StateEventsMock {
        rows: (1..=5)
            .map(|i| format!(r#"{{"event_id":"e{i}","state":"active"}}"#))
            .collect(),
        fail: false,
        ..Default::default()
    });
    let server = MockServer::start(cfg);
    let client = new_client(&server);
    let q = EventsQuery {
        from: "2024-01-01T00:00:00Z".into(),
        to: "2024-02-01T00:00:00+01:00".into(),
        rpp: Some(2),
    };
    q.validate().unwrap();
    let (pages, bodies, summary) =
        collect(&client, EVENTS_EXPORT_PATH, |p| q.to_query(Some(p)), 2).unwrap();
    assert_eq!(pages, [1, 2, 3]);
    assert_eq!(summary.items, 5);
    let first: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(first["results"][0]["event_id"], "e1");
    let reqs = server.requests();
    assert!(
        reqs[0].query.starts_with(
            "eventsExport=true&from=2024-01-01T00:00:00Z&to=2024-02-01T00:00:00%2B01:00&rpp=2&page="
        ),
        "{}",
        reqs[0].query
    );
    assert_all_signed(&server);

    let mut cfg = MockConfig::new(ACCESS_KEY, SECRET, items(1));
    cfg.state_events = Some(StateEventsMock {
        rows: Vec::new(),
        fail: true,
        ..Default::default()
    });
    let server = MockServer::start(cfg);
    let client = client_with(&server.base_url, SECRET, 1);
    let e = collect(&client, EVENTS_EXPORT_PATH, |p| q.to_query(Some(p)), 1).unwrap_err();
    assert_eq!(
        Chain(&e).to_string().split(": ").nth(2),
        Some("HTTP 500"),
        "{e}"
    );
}

#[test]
fn export_query_reaches_the_server_as_built() {
    let server = start_mock(2, vec![]);
    let client = new_client(&server);
    let q = ExportQuery {
        grants: true,
        attributes: true,
        app_ids: vec!["app 1".into(), "b".into()],
        app_ids_restrictive: true,
        since: Some("2021-02-24T15:43:28.5+01:00".into()),
        registered_since: Some("2020-01-01".into()),
        registered_before: None,
        rpp: Some(10),
    };
    q.validate().unwrap();
    let (pages, _, _) = collect(&client, USER_EXPORT_PATH, |p| q.to_query(Some(p)), 1).unwrap();
    assert_eq!(pages, [1]);
    assert_eq!(server.requests()[0].query, q.to_query(Some(1)));
    assert_all_signed(&server);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    // A port that was just free: bind, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client_with(&format!("http://127.0.0.1:{port}"), SECRET, 1);
    let e = client.fetch_page(USER_EXPORT_PATH, "page=1").unwrap_err();
    let msg = Chain(&e).to_string();
    assert!(
        msg.starts_with("GET /v3/user-export?page=1 failed after 2 attempts: connection error: "),
        "{msg}"
    );
    assert!(!msg.contains(SECRET));
}
