//! A real S3-protocol server on 127.0.0.1 for the object-store tests: moto's standalone server
//! (`.ci/s3-setup.sh` installs it into `.venv-ci`), one per test binary, on a free port
//! (faults go through `support/proxy.rs` in front of it). No traffic leaves the machine.
//!
//! The server is started by a small Python wrapper that exits as soon as the test binary that
//! started it is gone, so no server outlives its tests. A machine without moto makes every
//! test that needs it print a visible `SKIPPED` line instead of passing silently.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
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

/// A free port on 127.0.0.1 (for a server about to bind it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
