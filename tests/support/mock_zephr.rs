//! A mock Zephr Admin API for the integration tests and the fetch benchmark.
//!
//! Plain `std::net` on 127.0.0.1 only, one thread per connection, HTTP/1.1 with
//! `Connection: close` after every response. It checks every request's signature exactly as
//! SPEC section 2 describes (hash recomputed from the secret, body, path, raw query, method,
//! timestamp and nonce; 401 on a mismatch, a reused nonce or a timestamp more than 5 minutes
//! off) with its own SHA-256 call, not the client's signing code, so the two check each other.
//!
//! Endpoints:
//! - `GET /v3/user-export`: the items of [`MockConfig::items`].
//!   - Paginated when the query has `page` or `rpp` (`rpp` defaults to
//!     [`MockConfig::default_rpp`], `page` to 1): the envelope of SPEC section 1, with
//!     `meta` when [`MockConfig::include_meta`], `links` when [`MockConfig::include_links`],
//!     and `results` as `[[...]]` when [`MockConfig::nested_results`]. A page past the end
//!     has empty results and a null `next`.
//!   - Single-array mode when the query has neither `page` nor `rpp`, or has
//!     `paginate=false`: the whole export as one top-level JSON array, written item by item
//!     (with a `Content-Length`). For faults this request counts as page 0.
//!   - `grants` and `attributes` leave each item's grants and `user.attributes` out unless
//!     `true`, when [`MockConfig::honour_includes`] (the tests' exports are served as they
//!     are otherwise); other parameters (`since`, ...) are accepted and ignored.
//!   - [`MockConfig::page_delay`] holds every answer back that long (to interrupt a run).
//! - `GET /v4/user-export?eventsExport=true&from=..&to=..[&rpp=..][&page=..]`: the rows of
//!   [`StateEventsMock`] in the same envelope, or as CSV with a header on every page when
//!   [`StateEventsMock::csv`]; rows whose [`StateEventsMock::time_field`] lies outside
//!   `[from, to)` are left out. 400 without `eventsExport=true`, `from` and `to`; 500 every
//!   time when [`StateEventsMock::fail`].
//!
//! - `GET /v3/schema/users`: [`MockConfig::user_schema`] as it is (a JSON array of fields);
//!   404 when it is `None`.
//!
//! [`Fault`]s apply to `/v3/user-export` only, by page and by attempt: the n-th request for a
//! page that passed the signature check is attempt n (1-based).
//!
//! The server stops when dropped, and by itself after [`MockConfig::lifetime`] or
//! [`MAX_CONNECTIONS`] connections, whichever comes first.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// How long a server lives unless dropped earlier.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(120);
/// Connections a server accepts before it stops accepting.
pub const MAX_CONNECTIONS: usize = 100_000;
/// Largest accepted clock difference of a request's timestamp, in milliseconds.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// The path of the user export.
pub const USERS_PATH: &str = "/v3/user-export";
/// The path of the state events export.
pub const EVENTS_PATH: &str = "/v4/user-export";
/// The path of the user schema.
pub const USER_SCHEMA_PATH: &str = "/v3/schema/users";

/// What the mock serves and how it misbehaves.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// The access key requests must carry.
    pub access_key: String,
    /// The secret the signatures are checked with.
    pub secret: String,
    /// Raw JSON of each item, served as written.
    pub items: Vec<String>,
    /// `rpp` when a paginated request gives none.
    pub default_rpp: usize,
    /// Injected failures.
    pub faults: Vec<Fault>,
    /// The `/v4` state events; `None` answers 404 there.
    pub state_events: Option<StateEventsMock>,
    /// Put `meta` (`count`, `rpp`, `paginated`) in envelopes.
    pub include_meta: bool,
    /// Put `links` (`first`, `last`, `previous`, `next`) in envelopes.
    pub include_links: bool,
    /// Serve `results` as an array of one array of items, as Zephr's published schema has it.
    pub nested_results: bool,
    /// The server stops by itself after this long.
    pub lifetime: Duration,
    /// The body of `GET /v3/schema/users`; `None` answers 404 there.
    pub user_schema: Option<String>,
    /// Leave grants and attributes out of items unless the query asks for them.
    pub honour_includes: bool,
    /// Wait this long before answering every user-export request.
    pub page_delay: Duration,
}

impl MockConfig {
    /// A well-behaved server for these items: rpp 500, meta and links, flat results.
    pub fn new(access_key: &str, secret: &str, items: Vec<String>) -> MockConfig {
        MockConfig {
            access_key: access_key.to_owned(),
            secret: secret.to_owned(),
            items,
            default_rpp: 500,
            faults: Vec::new(),
            state_events: None,
            include_meta: true,
            include_links: true,
            nested_results: false,
            lifetime: DEFAULT_LIFETIME,
            user_schema: None,
            honour_includes: false,
            page_delay: Duration::ZERO,
        }
    }
}

/// The state events endpoint's data.
#[derive(Clone, Debug, Default)]
pub struct StateEventsMock {
    /// Raw JSON object of each row.
    pub rows: Vec<String>,
    /// Answer 500 to every request.
    pub fail: bool,
    /// Serve pages as `text/csv`, a header row on every page, instead of JSON envelopes.
    pub csv: bool,
    /// The field whose time must lie in `[from, to)` (compared as text); rows without it
    /// are always served.
    pub time_field: Option<String>,
}

/// An injected failure of `/v3/user-export`. `page` 0 is the single-array request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (with `Retry-After` when given) instead of the page.
    Status {
        /// The page.
        page: u32,
        /// The attempt (1-based).
        attempt: u32,
        /// The status to answer.
        status: u16,
        /// A `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// Send the headers (with the full `Content-Length`) and half the body, then close.
    TruncateBody {
        /// The page.
        page: u32,
        /// The attempt (1-based).
        attempt: u32,
    },
    /// Accept the request and go silent for `millis` (after sending the headers and part of
    /// the body when `after_headers`), then close: a stalled server.
    Stall {
        /// The page.
        page: u32,
        /// The attempt (1-based).
        attempt: u32,
        /// How long.
        millis: u64,
        /// Stall after the headers and half the body rather than before answering.
        after_headers: bool,
    },
    /// Close the connection without answering.
    Hangup {
        /// The page.
        page: u32,
        /// The attempt (1-based).
        attempt: u32,
    },
    /// Wait this long before answering (to make pages finish out of order).
    Delay {
        /// The page.
        page: u32,
        /// The attempt (1-based).
        attempt: u32,
        /// How long.
        millis: u64,
    },
    /// Answer this status with a long body that quotes the request's `Authorization` header
    /// and the secret, as a careless proxy might, to check that errors scrub both.
    EchoRequest {
        /// The page.
        page: u32,
        /// The attempt (1-based).
        attempt: u32,
        /// The status to answer.
        status: u16,
    },
    /// Answer 401 to every request, on every path.
    Unauthorized,
    /// Answer 403 to every request, on every path.
    Forbidden,
}

/// One request as the server saw and answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The `Authorization` header, when sent.
    pub authorization: Option<String>,
    /// Whether the signature checked out (right key and hash, fresh nonce, timestamp in range).
    pub signature_ok: bool,
    /// Why the signature did not check out.
    pub auth_error: Option<String>,
    /// The page asked for (0 for the single-array request), when the route has pages.
    pub page: Option<u32>,
    /// The attempt number for that page.
    pub attempt: u32,
    /// The status answered (0 for a hang-up).
    pub status: u16,
}

impl RecordedRequest {
    /// The nonce from the `Authorization` header.
    pub fn nonce(&self) -> Option<&str> {
        self.authorization.as_deref()?.split(':').nth(2)
    }
}

/// A running mock server on 127.0.0.1.
pub struct MockServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

struct State {
    cfg: MockConfig,
    base_url: String,
    nonces: Mutex<HashSet<String>>,
    attempts: Mutex<HashMap<(String, u32), u32>>,
    log: Mutex<Vec<RecordedRequest>>,
}

impl MockServer {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start(cfg: MockConfig) -> MockServer {
        Self::start_on(cfg, 0).expect("bind 127.0.0.1:0")
    }

    /// Binds 127.0.0.1:`port` (0 picks a free one) and starts serving.
    pub fn start_on(cfg: MockConfig, port: u16) -> io::Result<MockServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let base_url = format!("http://{addr}");
        let lifetime = cfg.lifetime;
        let state = Arc::new(State {
            cfg,
            base_url: base_url.clone(),
            nonces: Mutex::new(HashSet::new()),
            attempts: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || accept_loop(listener, state, stop, lifetime))
        };
        Ok(MockServer {
            base_url,
            state,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Every request answered so far, in the order they were answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.log).clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A handler that panicked must not take the whole test down with a poisoned lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>, life: Duration) {
    let deadline = Instant::now() + life;
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    let mut accepted = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && accepted < MAX_CONNECTIONS {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                let state = Arc::clone(&state);
                handlers.push(std::thread::spawn(move || {
                    let _ = handle(stream, &state);
                }));
                // Join finished handlers as we go so a long benchmark does not pile them up.
                let (done, running): (Vec<_>, Vec<_>) =
                    handlers.into_iter().partition(|h| h.is_finished());
                for h in done {
                    let _ = h.join();
                }
                handlers = running;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    drop(listener);
    // Handlers end on their own: socket timeouts bound every read and write.
    for h in handlers {
        let _ = h.join();
    }
}

/// What to send back.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    payload: Payload,
    truncate: bool,
    hangup: bool,
    /// Go silent this long: before answering, or after half the body when `truncate`.
    stall: Option<Duration>,
    content_type: &'static str,
}

enum Payload {
    Bytes(Vec<u8>),
    /// The whole item list as one JSON array, written without building it in memory.
    AllItems,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            payload: Payload::Bytes(body.into_bytes()),
            truncate: false,
            hangup: false,
            stall: None,
            content_type: "application/json",
        }
    }

    fn message(status: u16, message: &str) -> Reply {
        Reply::json(status, format!("{{\"message\":{}}}", json_string(message)))
    }
}

fn handle(stream: TcpStream, state: &State) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);

    let mut request_line = String::new();
    reader.by_ref().take(8192).read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut authorization = None;
    let mut content_length = 0usize;
    let mut header_bytes = 0usize;
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(8192).read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || header_bytes > 64 * 1024 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body)?;

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let auth = state.verify(authorization.as_deref(), &method, &path, &query, &body);
    let mut record = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        authorization,
        signature_ok: auth.is_ok(),
        auth_error: auth.clone().err(),
        page: None,
        attempt: 0,
        status: 0,
    };
    let reply = state.route(&method, &path, &query, auth, &mut record);
    record.status = if reply.hangup { 0 } else { reply.status };
    lock(&state.log).push(record);
    write_reply(stream, state, reply)
}

fn write_reply(mut stream: TcpStream, state: &State, reply: Reply) -> io::Result<()> {
    if reply.hangup {
        return stream.shutdown(Shutdown::Both);
    }
    if let (Some(stall), false) = (reply.stall, reply.truncate) {
        // Silent before the status line; the client's timeout ends it first.
        std::thread::sleep(stall);
        return stream.shutdown(Shutdown::Both);
    }
    let len = match &reply.payload {
        Payload::Bytes(b) => b.len(),
        Payload::AllItems => all_items_len(&state.cfg.items),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let limit = if reply.truncate { len / 2 } else { len };
    let mut out = Limited {
        inner: io::BufWriter::with_capacity(64 * 1024, &mut stream),
        left: limit,
    };
    out.inner.write_all(head.as_bytes())?;
    match &reply.payload {
        Payload::Bytes(b) => out.write_all(b)?,
        Payload::AllItems => {
            out.write_all(b"[")?;
            for (i, item) in state.cfg.items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(item.as_bytes())?;
                if out.left == 0 {
                    break;
                }
            }
            out.write_all(b"]")?;
        }
    }
    out.inner.flush()?;
    drop(out);
    if let Some(stall) = reply.stall {
        // Headers and half the body are out: now silence, as a stalled server's.
        std::thread::sleep(stall);
        return stream.shutdown(Shutdown::Both);
    }
    // Closing (not just dropping) makes a truncated body end with a clean FIN.
    stream.shutdown(Shutdown::Write)
}

/// Writes at most `left` bytes and drops the rest, to cut a body short.
struct Limited<W: Write> {
    inner: W,
    left: usize,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left);
        self.inner.write_all(&buf[..n])?;
        self.left -= n;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn all_items_len(items: &[String]) -> usize {
    2 + items.iter().map(String::len).sum::<usize>() + items.len().saturating_sub(1)
}

impl State {
    /// SPEC section 2, recomputed here independently of the client's signer.
    fn verify(
        &self,
        header: Option<&str>,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let header = header.ok_or("no Authorization header")?;
        let rest = header
            .strip_prefix("ZEPHR-HMAC-SHA256 ")
            .ok_or("not a ZEPHR-HMAC-SHA256 Authorization")?;
        let fields: Vec<&str> = rest.splitn(4, ':').collect();
        let [key, timestamp, nonce, hash] = fields[..] else {
            return Err("expected access_key:timestamp:nonce:hash".into());
        };
        if key != self.cfg.access_key {
            return Err("unknown access key".into());
        }
        let ts: u64 = timestamp.parse().map_err(|_| "timestamp is not a number")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if ts.abs_diff(now) > MAX_SKEW_MS {
            return Err("timestamp more than 5 minutes off".into());
        }
        if nonce.is_empty() {
            return Err("empty nonce".into());
        }
        let mut h = Sha256::new();
        h.update(self.cfg.secret.as_bytes());
        h.update(body);
        h.update(path.as_bytes());
        h.update(query.as_bytes());
        h.update(method.as_bytes());
        h.update(timestamp.as_bytes());
        h.update(nonce.as_bytes());
        if hash != hex::encode(h.finalize()) {
            return Err("signature mismatch".into());
        }
        if !lock(&self.nonces).insert(nonce.to_owned()) {
            return Err("nonce reused".into());
        }
        Ok(())
    }

    fn route(
        &self,
        method: &str,
        path: &str,
        query: &str,
        auth: Result<(), String>,
        record: &mut RecordedRequest,
    ) -> Reply {
        if let Err(why) = auth {
            return Reply::message(401, &format!("unauthorized: {why}"));
        }
        if self.cfg.faults.contains(&Fault::Unauthorized) {
            return Reply::message(401, "unauthorized");
        }
        if self.cfg.faults.contains(&Fault::Forbidden) {
            return Reply::message(403, "forbidden: missing permission user-export");
        }
        if method != "GET" {
            return Reply::message(405, "method not allowed");
        }
        let params = parse_query(query);
        match path {
            USERS_PATH => self.users(path, query, &params, record),
            EVENTS_PATH => self.events(path, query, &params, record),
            USER_SCHEMA_PATH => match &self.cfg.user_schema {
                Some(body) => Reply::json(200, body.clone()),
                None => Reply::message(404, "not found"),
            },
            _ => Reply::message(404, "not found"),
        }
    }

    fn users(
        &self,
        path: &str,
        query: &str,
        params: &HashMap<String, String>,
        record: &mut RecordedRequest,
    ) -> Reply {
        let single = params.get("paginate").is_some_and(|v| v == "false")
            || (!params.contains_key("page") && !params.contains_key("rpp"));
        let paging = if single {
            None
        } else {
            match page_and_rpp(params, self.cfg.default_rpp) {
                Ok(p) => Some(p),
                Err(reply) => return reply,
            }
        };
        let page = paging.map_or(0, |(page, _)| page);
        let attempt = self.next_attempt(path, page);
        record.page = Some(page);
        record.attempt = attempt;
        if !self.cfg.page_delay.is_zero() {
            std::thread::sleep(self.cfg.page_delay);
        }

        let mut fault = None;
        for f in &self.cfg.faults {
            match *f {
                Fault::Delay {
                    page: p,
                    attempt: a,
                    millis,
                } if (p, a) == (page, attempt) => {
                    std::thread::sleep(Duration::from_millis(millis));
                }
                Fault::Status {
                    page: p,
                    attempt: a,
                    ..
                }
                | Fault::TruncateBody {
                    page: p,
                    attempt: a,
                }
                | Fault::Hangup {
                    page: p,
                    attempt: a,
                }
                | Fault::Stall {
                    page: p,
                    attempt: a,
                    ..
                }
                | Fault::EchoRequest {
                    page: p,
                    attempt: a,
                    ..
                } if (p, a) == (page, attempt) && fault.is_none() => fault = Some(f.clone()),
                _ => {}
            }
        }
        let mut reply = match paging {
            None => Reply {
                status: 200,
                headers: Vec::new(),
                payload: Payload::AllItems,
                truncate: false,
                hangup: false,
                stall: None,
                content_type: "application/json",
            },
            Some((page, rpp)) => {
                let items = self.included(params);
                Reply::json(200, self.envelope(&items, path, query, page, rpp))
            }
        };
        match fault {
            Some(Fault::Status {
                status,
                retry_after,
                ..
            }) => {
                reply = Reply::message(status, &format!("injected fault: HTTP {status}"));
                if let Some(v) = retry_after {
                    reply.headers.push(("Retry-After".into(), v));
                }
            }
            Some(Fault::TruncateBody { .. }) => reply.truncate = true,
            Some(Fault::Hangup { .. }) => reply.hangup = true,
            Some(Fault::Stall {
                millis,
                after_headers,
                ..
            }) => {
                reply.stall = Some(Duration::from_millis(millis));
                reply.truncate = after_headers;
            }
            Some(Fault::EchoRequest { status, .. }) => {
                let echo = format!(
                    "you sent Authorization: {} (secret {}) {}",
                    record.authorization.as_deref().unwrap_or(""),
                    self.cfg.secret,
                    "padding ".repeat(100)
                );
                reply = Reply::message(status, &echo);
            }
            _ => {}
        }
        reply
    }

    fn events(
        &self,
        path: &str,
        query: &str,
        params: &HashMap<String, String>,
        record: &mut RecordedRequest,
    ) -> Reply {
        let Some(events) = &self.cfg.state_events else {
            return Reply::message(404, "state events export is not enabled for this tenant");
        };
        if params.get("eventsExport").map(String::as_str) != Some("true")
            || !params.contains_key("from")
            || !params.contains_key("to")
        {
            return Reply::message(400, "eventsExport=true, from and to are required");
        }
        let (page, rpp) = match page_and_rpp(params, self.cfg.default_rpp) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        record.page = Some(page);
        record.attempt = self.next_attempt(path, page);
        if events.fail {
            return Reply::message(500, "state events export failed");
        }
        let rows = events.in_window(&params["from"], &params["to"]);
        if events.csv {
            let mut reply = Reply::json(200, csv_page(&rows, page, rpp));
            reply.content_type = "text/csv; charset=utf-8";
            return reply;
        }
        Reply::json(200, self.envelope(&rows, path, query, page, rpp))
    }

    /// The items as the query asks for them: without grants or attributes unless asked,
    /// when [`MockConfig::honour_includes`].
    /// Borrowed when nothing is left out: copying every item for every page made a
    /// 200,000-user fetch wait a minute on the mock (400 pages x 217 MB).
    fn included(&self, params: &HashMap<String, String>) -> std::borrow::Cow<'_, [String]> {
        let asked = |name: &str| params.get(name).is_some_and(|v| v == "true");
        if !self.cfg.honour_includes || (asked("grants") && asked("attributes")) {
            return std::borrow::Cow::Borrowed(&self.cfg.items);
        }
        self.cfg
            .items
            .iter()
            .map(|raw| {
                let Ok(mut item) = serde_json::from_str::<serde_json::Value>(raw) else {
                    return raw.clone();
                };
                if let Some(item) = item.as_object_mut() {
                    if !asked("grants") {
                        item.remove("grants");
                    }
                    if !asked("attributes")
                        && let Some(user) = item.get_mut("user").and_then(|u| u.as_object_mut())
                    {
                        user.remove("attributes");
                    }
                }
                item.to_string()
            })
            .collect()
    }

    fn next_attempt(&self, path: &str, page: u32) -> u32 {
        let mut attempts = lock(&self.attempts);
        let n = attempts.entry((path.to_owned(), page)).or_insert(0);
        *n += 1;
        *n
    }

    /// The paginated envelope of SPEC section 1 for one page of `rows`.
    fn envelope(&self, rows: &[String], path: &str, query: &str, page: u32, rpp: usize) -> String {
        let count = rows.len();
        let last = count.div_ceil(rpp).max(1) as u32;
        let from = ((page as usize - 1).saturating_mul(rpp)).min(count);
        let to = from.saturating_add(rpp).min(count);
        let items = rows[from..to].join(",");
        let results = if self.cfg.nested_results {
            format!("[[{items}]]")
        } else {
            format!("[{items}]")
        };
        let mut out = format!("{{\"results\":{results}");
        if self.cfg.include_meta {
            out.push_str(&format!(
                ",\"meta\":{{\"count\":{count},\"rpp\":{rpp},\"paginated\":true}}"
            ));
        }
        if self.cfg.include_links {
            let link = |p: u32| {
                let mut q: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
                    .collect();
                let page_kv = format!("page={p}");
                q.push(&page_kv);
                let url = format!("{}{path}?{}", self.base_url, q.join("&"));
                format!("{{\"url\":{},\"page\":{p}}}", json_string(&url))
            };
            let previous = if page > 1 && page - 1 <= last {
                link(page - 1)
            } else {
                "null".to_owned()
            };
            let next = if page < last {
                link(page + 1)
            } else {
                "null".to_owned()
            };
            out.push_str(&format!(
                ",\"links\":{{\"first\":{},\"last\":{},\"previous\":{previous},\"next\":{next}}}",
                link(1),
                link(last)
            ));
        }
        out.push('}');
        out
    }
}

impl StateEventsMock {
    /// The rows whose time field lies in `[from, to)`, compared as text (ISO-8601 times of
    /// one form sort as text).
    fn in_window(&self, from: &str, to: &str) -> Vec<String> {
        let Some(field) = &self.time_field else {
            return self.rows.clone();
        };
        self.rows
            .iter()
            .filter(|raw| {
                let value: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
                match value.get(field).and_then(|v| v.as_str()) {
                    Some(at) => at >= from && at < to,
                    None => true,
                }
            })
            .cloned()
            .collect()
    }
}

/// One page of `rows` (flat JSON objects) as CSV: the header (the union of the keys of all
/// rows, in first-seen order) on every page, as Zephr's CSV pages have it.
fn csv_page(rows: &[String], page: u32, rpp: usize) -> String {
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|raw| serde_json::from_str(raw).unwrap_or_default())
        .collect();
    let mut header: Vec<String> = Vec::new();
    for object in &objects {
        for key in object.keys() {
            if !header.contains(key) {
                header.push(key.clone());
            }
        }
    }
    let cell = |text: &str| {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    };
    let line = |cells: Vec<String>| cells.join(",") + "\r\n";
    let mut out = line(header.iter().map(|h| cell(h)).collect());
    let from = ((page as usize - 1).saturating_mul(rpp)).min(objects.len());
    let to = from.saturating_add(rpp).min(objects.len());
    for object in &objects[from..to] {
        out.push_str(&line(
            header
                .iter()
                .map(|key| match object.get(key) {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => cell(s),
                    Some(other) => cell(&other.to_string()),
                })
                .collect(),
        ));
    }
    out
}

fn page_and_rpp(
    params: &HashMap<String, String>,
    default_rpp: usize,
) -> Result<(u32, usize), Reply> {
    let rpp = match params.get("rpp") {
        None => default_rpp,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => return Err(Reply::message(400, "rpp must be between 1 and 10000")),
        },
    };
    let page = match params.get("page") {
        None => 1,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(Reply::message(400, "page must be a positive integer")),
        },
    };
    Ok((page, rpp))
}

/// Splits a raw query into decoded name/value pairs (the last of a repeated name wins).
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
