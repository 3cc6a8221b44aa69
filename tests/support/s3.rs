//! A real S3-protocol server on 127.0.0.1 for the object-store tests: moto's standalone server
//! (`.ci/s3-setup.sh` installs it into `.venv-ci`), one per test binary, on a free port, and a
//! tiny fault-injecting proxy in front of it. No traffic leaves the machine.
//!
//! The server is started by a small Python wrapper that exits as soon as the test binary that
//! started it is gone, so no server outlives its tests. A machine without moto makes every
//! test that needs it print a visible `SKIPPED` line instead of passing silently.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The access key the tests use; moto accepts any unless told to check.
pub const ACCESS_KEY: &str = "testing-access-key";
/// The secret the tests use: it must never appear in any output.
pub const SECRET_KEY: &str = "Testing-Secret-Key-9f8e7d6c";

/// A moto server on 127.0.0.1.
pub struct Moto {
    pub endpoint: String,
    pub python: PathBuf,
    child: Mutex<Child>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The venv python that has moto and pyarrow: `ZEPHR_ETL_TEST_S3_PYTHON`, else `.venv-ci`.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("ZEPHR_ETL_TEST_S3_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-ci/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import moto.server, pyarrow.fs"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

/// The shared server of this test binary, or `None` (with a visible skip line) without moto.
pub fn shared(test: &str) -> Option<&'static Moto> {
    static SERVER: OnceLock<Option<Moto>> = OnceLock::new();
    let server = SERVER.get_or_init(|| start(&[])).as_ref();
    if server.is_none() {
        // CI installs moto (.ci/s3-setup.sh): there, a missing server is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: moto's S3 server did not start under CI; .ci/run sets \
             ZEPHR_ETL_TEST_S3_PYTHON from .ci/s3-setup.sh"
        );
        // Straight to the process's stderr: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: moto's S3 server is not installed; run `bash .ci/s3-setup.sh` \
             (or set ZEPHR_ETL_TEST_S3_PYTHON) to run the object-store tests"
        );
    }
    server
}

/// Starts a moto server with extra environment (for example `INITIAL_NO_AUTH_ACTION_COUNT=0`,
/// which makes it check credentials).
pub fn start(env: &[(&str, &str)]) -> Option<Moto> {
    let python = python()?;
    let port = free_port();
    // Exits when its parent (the test binary) is gone: no server outlives the tests.
    let script = r#"
import os, sys, time
from moto.server import ThreadedMotoServer
parent = os.getppid()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
deadline = time.time() + 3600
while os.getppid() == parent and time.time() < deadline:
    time.sleep(0.5)
server.stop()
"#;
    let mut child = Command::new(&python)
        .args(["-c", script, &port.to_string()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let stdout = child.stdout.take()?;
    BufReader::new(stdout).read_line(&mut line).ok()?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return None;
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Moto {
        endpoint,
        python,
        child: Mutex::new(child),
    })
}

impl Moto {
    /// Creates a bucket with a name unique to this test binary and call.
    pub fn bucket(&self, label: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "zt-{}-{}-{}",
            label.replace('_', "-"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let response = ureq::put(&format!("{}/{name}", self.endpoint))
            .send_empty()
            .expect("moto creates the bucket");
        assert!(response.status().is_success());
        name
    }

    /// The store settings that point the library at this server.
    pub fn config(&self) -> Vec<(String, String)> {
        config_for(&self.endpoint)
    }

    /// The environment that points the binary (or pyarrow) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Runs a Python snippet in the moto venv with this server's environment; its stdout.
    pub fn python(&self, code: &str) -> String {
        let out = Command::new(&self.python)
            .args(["-c", code])
            .envs(self.env())
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Store settings for an S3 endpoint (the server, or a proxy in front of it).
pub fn config_for(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("aws_endpoint".into(), endpoint.into()),
        ("aws_access_key_id".into(), ACCESS_KEY.into()),
        ("aws_secret_access_key".into(), SECRET_KEY.into()),
        ("aws_region".into(), "us-east-1".into()),
        ("aws_allow_http".into(), "true".into()),
    ]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A proxy on 127.0.0.1 in front of `upstream` that answers `503 Slow Down` to the first
/// request of its first `failures` connections, then forwards bytes both ways untouched.
pub struct FaultProxy {
    pub endpoint: String,
    /// Requests answered with 503 so far.
    pub failed: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream: &str, failures: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let failed = Arc::new(AtomicUsize::new(0));
        let count = failed.clone();
        std::thread::spawn(move || {
            // Bounded: the proxy serves at most this many connections, then stops.
            for stream in listener.incoming().take(10_000) {
                let Ok(client) = stream else { break };
                let fail = count.fetch_add(1, Ordering::SeqCst) < failures;
                if !fail {
                    count.fetch_sub(1, Ordering::SeqCst);
                }
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    if fail {
                        refuse(client);
                    } else {
                        forward(client, &upstream);
                    }
                });
            }
        });
        FaultProxy { endpoint, failed }
    }
}

/// Reads one request (headers and a `Content-Length` body) and answers 503, closing.
fn refuse(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut length = 0usize;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        line.clear();
    }
    let _ = std::io::copy(
        &mut reader.by_ref().take(length as u64),
        &mut std::io::sink(),
    );
    let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = write!(
        client,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
}

fn forward(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut c_read, mut s_write) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let (mut s_read, mut c_write) = (server, client);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
}
