//! A signed, retrying HTTP client for the Zephr Admin API, over a blocking ureq agent.
//!
//! Every attempt is a new request with a new timestamp, nonce and signature (SPEC section 2).
//! 429, 5xx, connection errors and truncated bodies are retried with exponential backoff and
//! full jitter, or after the server's `Retry-After`; 401, 403 and other 4xx are final. A page
//! is read into memory whole before it is handed out, so a page that broke off mid-body is
//! fetched again rather than half-committed. The unpaginated export is instead handed out as
//! a stream once its status is known to be good: it can be tens of gigabytes.
//!
//! The signed path is the API path (`/v3/user-export`): a path prefix in the base URL (a
//! proxy's) is sent but not signed, since the Zephr server behind the proxy sees the bare path.
//! 408 is retried like 429 and 5xx; 3xx is final, since a redirect changes the signed path.
//!
//! Timeouts: connecting, and every read (the response's headers and each read of its body)
//! may take at most the configured time without data. A timed-out attempt is retried like a
//! dropped connection, so the silence a run sits through on one page is bounded by
//! `Client::page_wait_bound`, which the error states when the last attempt timed out.
//!
//! No error built here holds the secret or the `Authorization` value: they are never put in
//! a message, and server text quoted in an error is scrubbed of both.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ureq::http::Response;

pub use zephr_core::redact::redact_url;

use super::secret::Credentials;
use super::sign::authorization_header;

/// Longest server text quoted in an error, in characters.
pub(crate) const EXCERPT_CHARS: usize = 300;

/// Default longest silence, in seconds, when connecting or reading.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// How failed attempts are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `retries + 1` attempts at most).
    pub retries: u32,
    /// Backoff before retry `n` is a random delay in `[0, base_delay * 2^n]` ("full jitter")...
    pub base_delay: Duration,
    /// ...and never more than this, which also caps a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based): the server's `Retry-After` when it
    /// gave one, else full jitter; capped by `max_delay` either way.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(31)))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        // Full jitter spreads the retries of parallel page workers apart.
        Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }
}

/// Everything a [`Client`] needs. `Debug` shows the base URL through [`redact_url`].
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://{tenant}.api.zephr.com` or `--base-url`; request paths are appended to it.
    pub base_url: String,
    /// The tenant, named in authentication errors.
    pub tenant: String,
    /// The key pair requests are signed with.
    pub credentials: Credentials,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for any single read, the response headers included: an export page can
    /// take the server a while to prepare, and a body that stalls half way is caught too.
    pub read_timeout: Duration,
    /// Largest page body [`Client::fetch_page`] accepts into memory.
    pub max_page_bytes: u64,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("tenant", &self.tenant)
            .field("credentials", &self.credentials)
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_page_bytes", &self.max_page_bytes)
            .finish()
    }
}

impl ClientConfig {
    /// A config for `tenant` at `base_url` with the default retry policy and timeouts.
    pub fn new(
        base_url: impl Into<String>,
        tenant: impl Into<String>,
        credentials: Credentials,
    ) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            tenant: tenant.into(),
            credentials,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            read_timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            max_page_bytes: 1 << 30,
        }
    }
}

/// The Admin API's address for a tenant.
pub fn tenant_base_url(tenant: &str) -> String {
    format!("https://{tenant}.api.zephr.com")
}

/// A failure that is worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransientFailure {
    /// 429 or 5xx (408 too).
    #[error("HTTP {status}: {excerpt}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body, scrubbed.
        excerpt: String,
    },
    /// No response: connection refused or reset, a broken response.
    #[error("connection error: {0}")]
    Transport(String),
    /// No data for the whole timeout: while connecting, waiting for the response, or in the
    /// middle of its body.
    #[error("no data for {} s ({what})", secs(.after))]
    Timeout {
        /// What timed out, in the transport's words.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// The body ended before its `Content-Length`.
    #[error("body truncated: got {received} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// The `Content-Length`.
        expected: u64,
    },
    /// Reading the body failed part way.
    #[error("error reading the body: {0}")]
    BodyRead(String),
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 401: the key pair or the signature was refused.
    #[error(
        "authentication failed (401): check ZEPHR_ACCESS_KEY and ZEPHR_SECRET_KEY \
         (or the secret key file) for tenant {tenant}, and that this machine's clock is correct"
    )]
    Unauthorized {
        /// The tenant asked.
        tenant: String,
    },
    /// 403: the key pair may not export users.
    #[error(
        "permission denied (403): the key pair needs the user-export permission for tenant {tenant}"
    )]
    Forbidden {
        /// The tenant asked.
        tenant: String,
    },
    /// Another status that retrying will not fix (4xx, or an unexpected 1xx/3xx).
    #[error("HTTP {status} from GET {target}: {excerpt}")]
    Status {
        /// The status code.
        status: u16,
        /// Path and query of the request.
        target: String,
        /// The start of the response body (or the redirect target), scrubbed.
        excerpt: String,
    },
    /// Every attempt failed; the last failure is kept.
    #[error("GET {target} failed after {attempts} attempts: {last}{}", wait_note(.last, .waited, .bound))]
    RetriesExhausted {
        /// Path and query of the request.
        target: String,
        /// Attempts made.
        attempts: u32,
        /// What went wrong the last time.
        last: TransientFailure,
        /// Time spent on the page, from the first attempt to giving up.
        waited: Duration,
        /// The most time the page could have taken in silence (see
        /// `Client::page_wait_bound`).
        bound: Duration,
    },
    /// The request could not be made at all (bad URL, unknown host, TLS failure, ...).
    #[error("GET {target}")]
    Request {
        /// Path and query of the request.
        target: String,
        /// The transport's error.
        source: ureq::Error,
    },
    /// The page body is larger than `max_page_bytes`.
    #[error("GET {target}: page body larger than {limit} bytes")]
    TooLarge {
        /// Path and query of the request.
        target: String,
        /// The limit.
        limit: u64,
    },
    /// The base URL is not an http(s) URL.
    #[error("invalid base URL {0:?}: expected http://HOST[:PORT] or https://HOST[:PORT]")]
    BaseUrl(String),
    /// The caller gave up (another page failed) while this request waited to be retried.
    #[error("cancelled")]
    Cancelled,
}

impl FetchError {
    /// The HTTP status behind this error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Unauthorized { .. } => Some(401),
            FetchError::Forbidden { .. } => Some(403),
            FetchError::Status { status, .. } => Some(*status),
            FetchError::RetriesExhausted {
                last: TransientFailure::Status { status, .. },
                ..
            } => Some(*status),
            _ => None,
        }
    }
}

/// Whole seconds, or tenths below ten seconds (`1.5`, `60`).
fn secs(d: &Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 && d.subsec_millis() != 0 {
        format!("{s:.1}")
    } else {
        format!("{}", d.as_secs())
    }
}

/// After a timeout, how long the page took and how long it could have taken at most.
fn wait_note(last: &TransientFailure, waited: &Duration, bound: &Duration) -> String {
    match last {
        TransientFailure::Timeout { .. } => format!(
            " (gave up on the page after {} s; with these timeout and retry settings a page \
             is given up after at most {} s of silence and backoff)",
            secs(waited),
            secs(bound)
        ),
        _ => String::new(),
    }
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    Retry(TransientFailure, Option<Duration>),
    Fatal(FetchError),
}

/// A signed, retrying client. Share it by reference between threads: it is `Sync`.
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
    tenant: String,
    credentials: Credentials,
    retry: RetryPolicy,
    connect_timeout: Duration,
    read_timeout: Duration,
    max_page_bytes: u64,
    received: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &redact_url(&self.base_url))
            .field("tenant", &self.tenant)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client. Fails only on a base URL that is not `http(s)://...`.
    pub fn new(config: ClientConfig) -> Result<Client, FetchError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let rest = base_url
            .strip_prefix("https://")
            .or_else(|| base_url.strip_prefix("http://"));
        if rest.is_none_or(|host| host.is_empty() || host.contains(['?', '#', ' '])) {
            return Err(FetchError::BaseUrl(redact_url(&config.base_url)));
        }
        let agent = ureq::Agent::config_builder()
            // Statuses are ours to judge: 401/403/429/5xx each need their own handling.
            .http_status_as_error(false)
            // A redirect changes the path, which is signed, so following one cannot work.
            .max_redirects(0)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_per_read(Some(config.read_timeout))
            .timeout_per_write(Some(config.read_timeout))
            .user_agent(concat!("zephr-etl/", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            .build()
            .new_agent();
        Ok(Client {
            agent,
            base_url,
            tenant: config.tenant,
            credentials: config.credentials,
            retry: config.retry,
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            max_page_bytes: config.max_page_bytes,
            received: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The most time a page can cost in silence before the client gives up on it: every
    /// attempt connecting and then waiting for data for the whole timeouts, plus the longest
    /// backoff (a capped `Retry-After`) before each retry. A server that keeps sending,
    /// however slowly, is not silent: a large page takes as long as it takes.
    pub(crate) fn page_wait_bound(&self) -> Duration {
        let attempts = self.retry.retries.saturating_add(1);
        let per_attempt = self.connect_timeout.saturating_add(self.read_timeout);
        per_attempt
            .saturating_mul(attempts)
            .saturating_add(self.retry.max_delay.saturating_mul(self.retry.retries))
    }

    /// The base URL requests go to (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Body bytes received so far: whole pages once read, stream bytes as they are read.
    /// Bodies of failed attempts are not counted; pages the paginator fetched ahead past the
    /// end and dropped are.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The counter behind [`Client::bytes_received`], for a progress thread to poll.
    pub fn bytes_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.received)
    }

    /// GETs `{base_url}{path}?{query}` and reads the whole body, retrying as the policy says.
    pub fn fetch_page(&self, path: &str, query: &str) -> Result<Vec<u8>, FetchError> {
        self.fetch_page_cancellable(path, query, &AtomicBool::new(false))
    }

    /// [`Client::fetch_page`] that gives up with [`FetchError::Cancelled`] when `cancel` is
    /// set before an attempt or during a backoff wait.
    pub(crate) fn fetch_page_cancellable(
        &self,
        path: &str,
        query: &str,
        cancel: &AtomicBool,
    ) -> Result<Vec<u8>, FetchError> {
        self.fetch_typed_page(path, query, cancel)
            .map(|page| page.body)
    }

    /// [`Client::fetch_page_cancellable`] that also gives the response's `Content-Type`.
    pub(crate) fn fetch_typed_page(
        &self,
        path: &str,
        query: &str,
        cancel: &AtomicBool,
    ) -> Result<TypedBody, FetchError> {
        let page = self.with_retries(path, query, cancel, |response, auth| {
            let content_type = header_str(&response, "content-type").map(str::to_owned);
            match self.read_page(response, auth, path, query) {
                Attempt::Done(body) => Attempt::Done(TypedBody { body, content_type }),
                Attempt::Retry(failure, after) => Attempt::Retry(failure, after),
                Attempt::Fatal(e) => Attempt::Fatal(e),
            }
        })?;
        self.received
            .fetch_add(page.body.len() as u64, Ordering::Relaxed);
        Ok(page)
    }

    /// GETs `{base_url}{path}?{query}` and hands out the body as a reader once the status is
    /// good (statuses are retried as for pages). Failures in the body surface as I/O errors
    /// from the reader and are not retried: the caller has already consumed part of it.
    pub fn open_stream(&self, path: &str, query: &str) -> Result<BodyStream, FetchError> {
        self.with_retries(path, query, &AtomicBool::new(false), |response, _| {
            let content_length = response.body().content_length();
            Attempt::Done(BodyStream {
                reader: Box::new(response.into_body().into_reader()),
                content_length,
                read: 0,
                counter: Arc::clone(&self.received),
            })
        })
    }

    /// The retry loop. `on_ok` turns a 2xx response into the result, or asks for a retry.
    fn with_retries<T>(
        &self,
        path: &str,
        query: &str,
        cancel: &AtomicBool,
        mut on_ok: impl FnMut(Response<ureq::Body>, &str) -> Attempt<T>,
    ) -> Result<T, FetchError> {
        let mut retry = 0u32;
        let started = std::time::Instant::now();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(FetchError::Cancelled);
            }
            let outcome = match self.send(path, query) {
                Ok((response, auth)) => {
                    if response.status().is_success() {
                        on_ok(response, &auth)
                    } else {
                        self.judge_status(response, &auth, path, query)
                    }
                }
                Err(e) => self.judge_transport(e, path, query),
            };
            match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(failure, retry_after) => {
                    if retry >= self.retry.retries {
                        return Err(FetchError::RetriesExhausted {
                            target: target(path, query),
                            attempts: retry + 1,
                            last: failure,
                            waited: started.elapsed(),
                            bound: self.page_wait_bound(),
                        });
                    }
                    let delay = self.retry.delay(retry, retry_after);
                    if sleep_unless_cancelled(delay, cancel) {
                        return Err(FetchError::Cancelled);
                    }
                    retry += 1;
                }
            }
        }
    }

    /// One signed attempt; also returns the `Authorization` value, to scrub it from errors.
    fn send(&self, path: &str, query: &str) -> Result<(Response<ureq::Body>, String), ureq::Error> {
        let auth = authorization_header(&self.credentials, b"", path, query, "GET");
        let url = if query.is_empty() {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}{path}?{query}", self.base_url)
        };
        let response = self.agent.get(&url).header("Authorization", &auth).call()?;
        Ok((response, auth))
    }

    fn read_page(
        &self,
        response: Response<ureq::Body>,
        auth: &str,
        path: &str,
        query: &str,
    ) -> Attempt<Vec<u8>> {
        let expected = response.body().content_length();
        // Sized from Content-Length up front: a page read into a growing vector was copied
        // again at every doubling, a few percent of a whole fetch. Capped, as the header is
        // only the server's word.
        let capacity = expected.map_or(0, |n| n.min(self.max_page_bytes).min(64 << 20));
        let mut body = Vec::with_capacity(capacity as usize);
        let result = response
            .into_body()
            .into_with_config()
            .limit(self.max_page_bytes)
            .reader()
            .read_to_end(&mut body)
            .map(|_| body)
            .map_err(ureq::Error::from);
        match result {
            Ok(body) => match expected {
                Some(expected) if (body.len() as u64) < expected => Attempt::Retry(
                    TransientFailure::Truncated {
                        received: body.len() as u64,
                        expected,
                    },
                    None,
                ),
                _ => Attempt::Done(body),
            },
            Err(ureq::Error::BodyExceedsLimit(limit)) => Attempt::Fatal(FetchError::TooLarge {
                target: target(path, query),
                limit,
            }),
            Err(e) if is_timeout(&e) => Attempt::Retry(self.timeout_failure(&e), None),
            Err(e) => Attempt::Retry(
                TransientFailure::BodyRead(self.scrub(&e.to_string(), auth)),
                None,
            ),
        }
    }

    /// A timeout as a failure worth retrying, with the timeout that struck.
    fn timeout_failure(&self, e: &ureq::Error) -> TransientFailure {
        let connect = matches!(e, ureq::Error::Timeout(ureq::Timeout::Connect));
        TransientFailure::Timeout {
            what: e.to_string(),
            after: if connect {
                self.connect_timeout
            } else {
                self.read_timeout
            },
        }
    }

    fn judge_status<T>(
        &self,
        mut response: Response<ureq::Body>,
        auth: &str,
        path: &str,
        query: &str,
    ) -> Attempt<T> {
        match self.status_failure(&mut response, auth, path, query) {
            Ok((failure, retry_after)) => Attempt::Retry(failure, retry_after),
            Err(e) => Attempt::Fatal(e),
        }
    }

    /// Classifies a non-2xx response: `Ok` is a failure worth retrying, `Err` a final one.
    fn status_failure(
        &self,
        response: &mut Response<ureq::Body>,
        auth: &str,
        path: &str,
        query: &str,
    ) -> Result<(TransientFailure, Option<Duration>), FetchError> {
        let status = response.status().as_u16();
        match status {
            401 => {
                return Err(FetchError::Unauthorized {
                    tenant: self.tenant.clone(),
                });
            }
            403 => {
                return Err(FetchError::Forbidden {
                    tenant: self.tenant.clone(),
                });
            }
            _ => {}
        }
        if (300..400).contains(&status) {
            let location = header_str(response, "location").unwrap_or("(no Location)");
            return Err(FetchError::Status {
                status,
                target: target(path, query),
                excerpt: format!("unexpected redirect to {}", self.scrub(location, auth)),
            });
        }
        let retry_after = header_str(response, "retry-after")
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let excerpt = self.excerpt(response, auth);
        if status == 408 || status == 429 || status >= 500 {
            Ok((TransientFailure::Status { status, excerpt }, retry_after))
        } else {
            Err(FetchError::Status {
                status,
                target: target(path, query),
                excerpt,
            })
        }
    }

    fn judge_transport<T>(&self, e: ureq::Error, path: &str, query: &str) -> Attempt<T> {
        if is_timeout(&e) {
            return Attempt::Retry(self.timeout_failure(&e), None);
        }
        match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
            | ureq::Error::Decompress(..) => {
                Attempt::Retry(TransientFailure::Transport(e.to_string()), None)
            }
            _ => Attempt::Fatal(FetchError::Request {
                target: target(path, query),
                source: e,
            }),
        }
    }

    /// The start of an error body as one scrubbed line of at most [`EXCERPT_CHARS`] chars.
    fn excerpt(&self, response: &mut Response<ureq::Body>, auth: &str) -> String {
        let mut raw = Vec::new();
        // Only the start matters, and an error body is no reason to read megabytes.
        let _ = response
            .body_mut()
            .as_reader()
            .take(16 * 1024)
            .read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let text = self.scrub(&text, auth);
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let line: String = line.chars().filter(|c| !c.is_control()).collect();
        if line.is_empty() {
            return "(empty body)".to_owned();
        }
        if line.chars().count() <= EXCERPT_CHARS {
            line
        } else {
            let mut cut: String = line.chars().take(EXCERPT_CHARS - 1).collect();
            cut.push('…');
            cut
        }
    }

    /// Removes the secret and the `Authorization` value from server text, in case a server or
    /// proxy echoes the request back.
    fn scrub(&self, text: &str, auth: &str) -> String {
        let mut out = text.replace(auth, "[redacted]");
        // The signature on its own too: an echo that re-encodes the header (a redirect URL
        // with `%20` for the space) keeps the hex hash verbatim, and it would let anyone
        // replay the request until its timestamp expires.
        if let Some(hash) = auth.rsplit(':').next().filter(|h| h.len() >= 16) {
            out = out.replace(hash, "[redacted]");
        }
        let secret = self.credentials.secret.expose();
        if !secret.is_empty() {
            out = out.replace(secret, "[redacted]");
        }
        out
    }
}

/// Whether a transport error is a timeout, however it was wrapped.
fn is_timeout(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => {
            matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) || io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                .is_some_and(is_timeout)
        }
        _ => false,
    }
}

fn header_str<'a>(response: &'a Response<ureq::Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name)?.to_str().ok()
}

fn target(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// Sleeps `d` in short slices; returns true as soon as `cancel` is set.
fn sleep_unless_cancelled(d: Duration, cancel: &AtomicBool) -> bool {
    const SLICE: Duration = Duration::from_millis(20);
    let mut left = d;
    while !left.is_zero() {
        if cancel.load(Ordering::Relaxed) {
            return true;
        }
        let step = left.min(SLICE);
        std::thread::sleep(step);
        left -= step;
    }
    cancel.load(Ordering::Relaxed)
}

fn random_u64() -> u64 {
    zephr_core::random::u64()
}

/// A whole response body and what the server said it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedBody {
    /// The body.
    pub body: Vec<u8>,
    /// The `Content-Type` header, when sent.
    pub content_type: Option<String>,
}

/// The body of a successful response, handed out as a reader.
///
/// Counts the bytes read into the client's counter, and reports a body that ends before its
/// `Content-Length` as [`io::ErrorKind::UnexpectedEof`].
pub struct BodyStream {
    reader: Box<dyn Read + Send>,
    content_length: Option<u64>,
    read: u64,
    counter: Arc<AtomicU64>,
}

impl BodyStream {
    /// The body's size from `Content-Length`, when the server sent one and the body is not
    /// transfer-compressed (a gzip length would not match the bytes read).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Bytes read from this body so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("content_length", &self.content_length)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Read for BodyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        if n == 0
            && !buf.is_empty()
            && let Some(expected) = self.content_length
            && self.read < expected
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body truncated: got {} of {expected} bytes", self.read),
            ));
        }
        self.read += n as u64;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Parses `Retry-After`: delta-seconds, or an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`, or
/// one of the two obsolete forms HTTP still allows), which becomes the time left until then
/// (zero if it has passed).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn base_urls_hide_queries_and_credentials() {
        for (given, shown) in [
            ("https://u:p@proxy:8080/x", "https://<hidden>@proxy:8080/x"),
            ("http://tok@h", "http://<hidden>@h"),
            ("http://127.0.0.1:9", "http://127.0.0.1:9"),
            ("http://h/a@b", "http://h/a@b"),
            ("http://h/?token=SECRET", "http://h/?<hidden>"),
            ("http://u:p@h?a=1#b", "http://<hidden>@h?<hidden>"),
            ("http://h/x#SECRET", "http://h/x#<hidden>"),
            ("u:p@nowhere/x?k=1", "<hidden>@nowhere/x?<hidden>"),
            ("h?x@y", "h?<hidden>"),
        ] {
            assert_eq!(redact_url(given), shown, "{given}");
        }
    }

    #[test]
    fn http_dates() {
        let epoch = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let at = |v| parse_retry_after(v, UNIX_EPOCH);
        assert_eq!(
            at("Thu, 01 Jan 1970 00:00:10 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", epoch(1_445_412_480 - 5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2000 23:59:59 GMT", epoch(951_868_799 - 1)),
            Some(Duration::from_secs(1))
        );
        for bad in [
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 7:28:00 GMT",
            "",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        let later = now + Duration::from_secs(100);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let p = RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
        };
        for retry in 0..40 {
            let d = p.delay(retry, None);
            let ceiling = Duration::from_millis(100 * (1u64 << retry.min(20))).min(p.max_delay);
            assert!(d <= ceiling, "{retry}: {d:?}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(60))),
            Duration::from_millis(250)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_millis(5))),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn base_url_checked() {
        let creds = Credentials {
            access_key: "AK".into(),
            secret: crate::secret::SecretKey::new("s"),
        };
        for bad in ["ftp://x", "https://", "acme.api.zephr.com", "http://a b"] {
            let e = Client::new(ClientConfig::new(bad, "t", creds.clone())).unwrap_err();
            assert!(matches!(e, FetchError::BaseUrl(_)), "{bad}");
        }
        let c = Client::new(ClientConfig::new("http://127.0.0.1:1/", "t", creds)).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
        assert!(!format!("{c:?}").contains("\"s\""));
    }
}
