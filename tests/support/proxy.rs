//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of any store (moto, fake-gcs-server,
//! Azurite): the place where a test puts a fault between a request and its answer.
//!
//! It parses every request (headers, then a `Content-Length` or chunked body) and every answer,
//! so several requests on one kept-alive connection are matched one by one. The fault in force
//! is switched at run time with [`FaultProxy::set`]:
//! - [`Fault::Pass`]: forward untouched;
//! - [`Fault::Burst`]: `503` to every matching request for the next few seconds;
//! - [`Fault::FailFirst`]: `503` to the next `n` matching requests;
//! - [`Fault::DropAnswer`]: forward the next `n` matching requests, read the store's whole
//!   answer, then close the client's connection without sending it (the request took effect,
//!   the client never learns it);
//! - [`Fault::Stall`]: hold matching requests for a while before forwarding them.
//!
//! Every thread is bounded: the accept loop stops when the proxy is dropped (or after a fixed
//! number of connections), connection threads when their client or the store goes quiet.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which requests a fault applies to: a method (any when `None`) and a substring of the
/// request target (path and query; any when empty).
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub method: Option<String>,
    pub path: String,
}

impl Match {
    /// Every request.
    pub fn any() -> Match {
        Match::default()
    }

    /// Requests of any method whose target contains `path`.
    pub fn path(path: &str) -> Match {
        Match {
            method: None,
            path: path.to_string(),
        }
    }

    /// Requests with this method whose target contains `path`.
    pub fn req(method: &str, path: &str) -> Match {
        Match {
            method: Some(method.to_string()),
            path: path.to_string(),
        }
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && target.contains(&self.path)
    }
}

/// The fault in force.
#[derive(Debug, Clone)]
pub enum Fault {
    Pass,
    /// `503` to every matching request during the next `secs` seconds.
    Burst {
        matching: Match,
        secs: f64,
    },
    /// `503` to the next `n` matching requests.
    FailFirst {
        matching: Match,
        n: usize,
    },
    /// Forward the next `n` matching requests, then drop their answers.
    DropAnswer {
        matching: Match,
        n: usize,
    },
    /// Hold the next `n` matching requests `ms` milliseconds before forwarding them.
    Stall {
        matching: Match,
        ms: u64,
        n: usize,
    },
    /// Pass everything until a request matches `trigger`; from that one on, `503` to every
    /// request that matches `then` for `secs` seconds (an object unreachable from a moment on).
    OutageFrom {
        trigger: Match,
        then: Match,
        secs: f64,
    },
}

/// The fault as the proxy applies it: a burst's end as an instant, counts left.
enum Active {
    Pass,
    Burst(Match, Instant),
    FailFirst(Match, usize),
    DropAnswer(Match, usize),
    Stall(Match, Duration, usize),
    OutageFrom(Match, Match, Duration),
}

/// What to do with one request.
enum Action {
    Forward,
    Refuse,
    Drop,
    Stall(Duration),
}

struct State {
    upstream: String,
    fault: Mutex<Active>,
    stop: AtomicBool,
    seen: AtomicUsize,
    faulted: AtomicUsize,
    refused: Arc<AtomicUsize>,
    /// `METHOD target` of every request seen, in order.
    log: Mutex<Vec<String>>,
}

impl State {
    fn decide(&self, method: &str, target: &str) -> Action {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut log) = self.log.lock() {
            log.push(format!("{method} {target}"));
        }
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let action = match &mut *fault {
            Active::Pass => Action::Forward,
            Active::Burst(m, until) if m.matches(method, target) && Instant::now() < *until => {
                Action::Refuse
            }
            Active::FailFirst(m, left) if *left > 0 && m.matches(method, target) => {
                *left -= 1;
                Action::Refuse
            }
            Active::DropAnswer(m, left) if *left > 0 && m.matches(method, target) => {
                *left -= 1;
                Action::Drop
            }
            Active::Stall(m, time, left) if *left > 0 && m.matches(method, target) => {
                *left -= 1;
                Action::Stall(*time)
            }
            Active::OutageFrom(trigger, then, length) if trigger.matches(method, target) => {
                let then = std::mem::take(then);
                let until = Instant::now() + *length;
                let refuse = then.matches(method, target);
                *fault = Active::Burst(then, until);
                if refuse {
                    Action::Refuse
                } else {
                    Action::Forward
                }
            }
            _ => Action::Forward,
        };
        if !matches!(action, Action::Forward) {
            self.faulted.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(action, Action::Refuse) {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        action
    }
}

/// A proxy on 127.0.0.1; stops accepting when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Requests answered with 503 so far.
    pub failed: Arc<AtomicUsize>,
    state: Arc<State>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://host:port` or `host:port`) that answers 503 to
    /// the first `failures` requests, then passes everything through until told otherwise.
    pub fn start(upstream: &str, failures: usize) -> FaultProxy {
        let proxy = FaultProxy::pass(upstream);
        proxy.set(Fault::FailFirst {
            matching: Match::any(),
            n: failures,
        });
        proxy
    }

    /// A proxy in front of `upstream` that passes everything through until told otherwise.
    pub fn pass(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(State {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            fault: Mutex::new(Active::Pass),
            stop: AtomicBool::new(false),
            seen: AtomicUsize::new(0),
            faulted: AtomicUsize::new(0),
            refused: Arc::new(AtomicUsize::new(0)),
            log: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            // Bounded: at most this many connections, and none after the proxy is dropped.
            for stream in listener.incoming().take(20_000) {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = stream else { break };
                let state = shared.clone();
                std::thread::spawn(move || serve(client, &state));
            }
        });
        FaultProxy {
            endpoint: format!("http://{address}"),
            failed: state.refused.clone(),
            state,
        }
    }

    /// Puts `fault` in force from the next request on.
    pub fn set(&self, fault: Fault) {
        let active = match fault {
            Fault::Pass => Active::Pass,
            Fault::Burst { matching, secs } => Active::Burst(
                matching,
                Instant::now() + Duration::from_secs_f64(secs.max(0.0)),
            ),
            Fault::FailFirst { matching, n } => Active::FailFirst(matching, n),
            Fault::DropAnswer { matching, n } => Active::DropAnswer(matching, n),
            Fault::Stall { matching, ms, n } => {
                Active::Stall(matching, Duration::from_millis(ms), n)
            }
            Fault::OutageFrom {
                trigger,
                then,
                secs,
            } => Active::OutageFrom(trigger, then, Duration::from_secs_f64(secs.max(0.0))),
        };
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = active;
    }

    /// Requests seen so far.
    pub fn seen(&self) -> usize {
        self.state.seen.load(Ordering::SeqCst)
    }

    /// Requests refused, dropped or stalled so far.
    pub fn faulted(&self) -> usize {
        self.state.faulted.load(Ordering::SeqCst)
    }

    /// `METHOD target` of every request seen so far.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (at most `limit`) until `faulted()` reaches `n`; whether it did.
    pub fn wait_faulted(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.faulted() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// One HTTP message as read off a connection: its head (start line and headers, as sent) and
/// its body bytes (chunk framing included), ready to be written on unchanged.
struct Message {
    head: String,
    body: Vec<u8>,
    close: bool,
}

impl Message {
    fn start_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.as_bytes().to_vec();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads one message; `None` at a clean end of the connection or on any error. `request`
/// tells how a body without length is framed (a request has none, an answer runs to the
/// close); `no_body` is for answers to HEAD and 1xx/204/304.
fn read_message(
    reader: &mut BufReader<TcpStream>,
    request: bool,
    head_request: bool,
) -> Option<Message> {
    let mut head = String::new();
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    // Bounded: a head of more than 200 lines is not something these stores send.
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if head.is_empty() && line.trim().is_empty() {
            continue; // stray CRLF between messages
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        } else if let Some(v) = lower.strip_prefix("transfer-encoding:") {
            chunked = v.contains("chunked");
        } else if let Some(v) = lower.strip_prefix("connection:") {
            close = v.contains("close");
        }
    }
    if !head.ends_with("\r\n\r\n") && !head.ends_with("\n\n") {
        return None;
    }
    let status: u16 = if request {
        0
    } else {
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let no_body = !request && (head_request || status < 200 || status == 204 || status == 304);
    let mut body = Vec::new();
    if no_body {
    } else if chunked {
        // Bounded by the data: each round reads one chunk; the last one has size 0.
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line).ok()? == 0 {
                return None;
            }
            body.extend_from_slice(size_line.as_bytes());
            let hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(hex, 16).ok()?;
            if size == 0 {
                // Trailers, then the empty line.
                for _ in 0..100 {
                    let mut line = String::new();
                    if reader.read_line(&mut line).ok()? == 0 {
                        return None;
                    }
                    body.extend_from_slice(line.as_bytes());
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size + 2, 0); // the data and its CRLF
            reader.read_exact(&mut body[start..]).ok()?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    } else if !request {
        reader.read_to_end(&mut body).ok()?;
        close = true;
    }
    Some(Message { head, body, close })
}

/// Serves one client connection: request after request, each forwarded (or faulted) on one
/// upstream connection of its own.
fn serve(client: TcpStream, state: &State) {
    let idle = Some(Duration::from_secs(30));
    let _ = client.set_read_timeout(idle);
    let Ok(client_read) = client.try_clone() else {
        return;
    };
    let mut from_client = BufReader::new(client_read);
    let mut client = client;
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    // Bounded: a kept-alive connection serves at most this many requests.
    for _ in 0..10_000 {
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(request) = read_message(&mut from_client, true, false) else {
            break;
        };
        let mut words = request.start_line().split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("").to_string();
        let action = state.decide(&method, &target);
        if let Action::Refuse = action {
            let body = "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>The \
                        server is busy (injected by the test proxy).</Message></Error>";
            let _ = write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            break;
        }
        if let Action::Stall(time) = action {
            let until = Instant::now() + time;
            while Instant::now() < until && !state.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if upstream.is_none() {
            let Ok(server) = TcpStream::connect(&state.upstream) else {
                break;
            };
            let _ = server.set_read_timeout(Some(Duration::from_secs(120)));
            let Ok(server_read) = server.try_clone() else {
                break;
            };
            upstream = Some((server, BufReader::new(server_read)));
        }
        let Some((server, from_server)) = upstream.as_mut() else {
            break;
        };
        if server.write_all(&request.bytes()).is_err() {
            break;
        }
        let Some(answer) = read_message(from_server, false, method == "HEAD") else {
            break;
        };
        if let Action::Drop = action {
            // The store did it; the client never hears.
            break;
        }
        if client.write_all(&answer.bytes()).is_err() {
            break;
        }
        if request.close || answer.close {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    if let Some((server, _)) = upstream {
        let _ = server.shutdown(Shutdown::Both);
    }
}
