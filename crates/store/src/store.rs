//! The `object_store` client of a [`CloudUrl`], configured from the cloud's environment, with
//! retries, and the translation of its errors into [`CloudError`]s a user can act on.
//!
//! Credentials and endpoints come only from each cloud's standard variables: for S3
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or
//! `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_ALLOW_HTTP`, and the
//! instance and web-identity chains; for GCS `GOOGLE_APPLICATION_CREDENTIALS` (or
//! `GOOGLE_SERVICE_ACCOUNT`); for Azure `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, `AZURE_CLIENT_ID`... as
//! `object_store`'s `from_env` builders read them.
//!
//! Emulators, by the variables each ecosystem's own SDKs read: for GCS
//! `STORAGE_EMULATOR_HOST` (`http://127.0.0.1:4443`, or `127.0.0.1:4443` meaning http), which
//! sends every request there, over plain http if it says so, anonymous (no OAuth token, no
//! signature: fake-gcs-server checks none); for Azure `AZURE_STORAGE_USE_EMULATOR=true`
//! (Azurite's well-known account and key, plain http), at `AZURITE_BLOB_STORAGE_URL` when set
//! (`http://127.0.0.1:10000` otherwise).
//!
//! The store is async; the tool is not. Each [`Store`] owns a small private tokio runtime and
//! blocks on it from the calling thread, which is never itself a runtime thread.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::multipart::MultipartStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, StaticCredentialProvider, UpdateVersion,
};

use super::{Cloud, CloudError, CloudUrl, redact};

/// What `object_store` offers for one cloud: plain objects and explicit multipart uploads.
pub trait CloudStore: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> CloudStore for T {}

/// How hard to retry and how long to wait.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Retries of a request that failed with a 5xx, a throttling answer or a dropped
    /// connection, at most; `retry_timeout` is what bounds them in practice.
    pub max_retries: usize,
    /// Backoff before the first retry; it doubles up to `max_backoff`.
    pub init_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
    /// Give up retrying a request after this long (`--store-retry-secs`, SPEC section 6).
    pub retry_timeout: Duration,
    /// One request's time limit (a part of 8 MiB on a slow link must fit).
    pub request_timeout: Duration,
    /// Settings applied over the environment's, as `object_store` names them
    /// (`aws_endpoint`, `aws_access_key_id`, `azure_storage_account_name`, ...): for callers
    /// that configure a store without touching the process environment (tests).
    pub config: Vec<(String, String)>,
}

/// How long a failing store request is retried by default, in seconds (`--store-retry-secs`).
pub const DEFAULT_RETRY_SECS: u64 = 180;

impl StoreOptions {
    /// The default options with failing requests retried for `secs` seconds.
    pub fn retrying_for(secs: u64) -> StoreOptions {
        StoreOptions {
            retry_timeout: Duration::from_secs(secs),
            ..StoreOptions::default()
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            // Enough for the whole time budget at the longest backoff, and then some: an
            // outage of minutes is waited out, however the tries fall.
            max_retries: 1_000,
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            retry_timeout: Duration::from_secs(DEFAULT_RETRY_SECS),
            request_timeout: Duration::from_secs(300),
            config: Vec::new(),
        }
    }
}

/// A connected store: the client, the bucket and prefix it serves, and a runtime to block on.
pub struct Store {
    /// The `object_store` client, with the retry and timeout settings of [`StoreOptions`].
    pub client: Arc<dyn CloudStore>,
    /// The bucket and key prefix that [`Store::path`] resolves names under.
    pub url: CloudUrl,
    /// The Tokio runtime the blocking methods run the client's futures on.
    pub runtime: Arc<tokio::runtime::Runtime>,
}

impl Store {
    /// Builds the client of `url` from the environment. Nothing is sent yet.
    pub fn connect(url: &CloudUrl, options: &StoreOptions) -> Result<Store, CloudError> {
        let retry = RetryConfig {
            max_retries: options.max_retries,
            retry_timeout: options.retry_timeout,
            backoff: BackoffConfig {
                init_backoff: options.init_backoff,
                max_backoff: options.max_backoff,
                ..BackoffConfig::default()
            },
        };
        let client_options = ClientOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(Duration::from_secs(30));
        // Keys of the builders' own, parsed by each; unknown ones are a configuration error.
        let extra = options
            .config
            .iter()
            .filter(|(k, _)| !k.ends_with("allow_http"));
        let config_error = |e: object_store::Error| CloudError::Config {
            url: url.display(),
            detail: redact(&e.to_string()),
        };
        let allow_http = env_flag("AWS_ALLOW_HTTP")
            || env_flag("AZURE_ALLOW_HTTP")
            || options
                .config
                .iter()
                .any(|(k, v)| k.ends_with("allow_http") && v == "true");
        let client_options = client_options.with_allow_http(allow_http);
        let client: Arc<dyn CloudStore> = match url.cloud {
            Cloud::S3 => {
                let mistake = |detail| CloudError::Config {
                    url: url.display(),
                    detail,
                };
                super::aws::check_endpoint(options, allow_http).map_err(mistake)?;
                super::aws::check_credentials(options).map_err(mistake)?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(url.url().as_str())
                    .with_retry(retry)
                    .with_client_options(client_options);
                // `AWS_ENDPOINT_URL` is the name the AWS CLI and SDKs read.
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    builder = builder.with_endpoint(endpoint);
                }
                // `If-None-Match: *` and `If-Match` on PUT (S3 has them since 2024): the lock
                // object needs both. A user's own AWS_CONDITIONAL_PUT wins.
                if std::env::var_os("AWS_CONDITIONAL_PUT").is_none() {
                    builder = builder.with_config(AmazonS3ConfigKey::ConditionalPut, "etag");
                }
                for (key, value) in extra {
                    builder = builder.with_config(key.parse().map_err(config_error)?, value);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            Cloud::Gcs => {
                let emulator = gcs_emulator();
                let client_options = match &emulator {
                    Some(base) => client_options.with_allow_http(base.starts_with("http://")),
                    None => client_options,
                };
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_url(url.url().as_str())
                    .with_retry(retry)
                    .with_client_options(client_options);
                if let Some(base) = emulator {
                    // Anonymous: no token is asked of a metadata server. Skipping the
                    // signature alone leaves uploads asking for one (object_store 0.13), so
                    // an empty static token stands in, as its own emulator tests do.
                    let anonymous = GcpCredential {
                        bearer: String::new(),
                    };
                    builder = builder
                        .with_base_url(&base)
                        .with_skip_signature(true)
                        .with_credentials(Arc::new(StaticCredentialProvider::new(anonymous)));
                }
                for (key, value) in extra {
                    builder = builder.with_config(key.parse().map_err(config_error)?, value);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            Cloud::Azure => {
                // With AZURE_STORAGE_USE_EMULATOR the builder itself takes Azurite's account,
                // key and AZURITE_BLOB_STORAGE_URL, and allows plain http.
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_url(url.url().as_str())
                    .with_retry(retry)
                    .with_client_options(client_options);
                for (key, value) in extra {
                    builder = builder.with_config(key.parse().map_err(config_error)?, value);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
        };
        let runtime = shared_runtime().map_err(|e| CloudError::Config {
            url: url.display(),
            detail: format!("cannot start the upload threads: {e}"),
        })?;
        Ok(Store {
            client,
            url: url.clone(),
            runtime,
        })
    }

    /// The object path of `name` under the URL's key prefix.
    pub fn path(&self, name: &str) -> object_store::path::Path {
        let key = &self.url.key;
        let full = match (key.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => key.clone(),
            (false, false) => format!("{key}/{name}"),
        };
        object_store::path::Path::from(full)
    }

    /// The object `name` (relative to the prefix) whole, with what a conditional replace of
    /// it needs; `None` when there is none. A failure is `action`'s (see [`Store::error`]):
    /// a missing bucket is an error, never an absent object.
    pub fn get(&self, action: &'static str, name: &str) -> Result<Option<Fetched>, CloudError> {
        let client = self.client.clone();
        let path = self.path(name);
        let got = self.runtime.block_on(async move {
            let result = client.get(&path).await?;
            let version = version_of(result.meta.e_tag.clone(), result.meta.version.clone());
            let last_modified_ms = result.meta.last_modified.timestamp_millis();
            let bytes = result.bytes().await?;
            Ok::<_, object_store::Error>(Fetched {
                bytes: bytes.to_vec(),
                version,
                last_modified_ms,
            })
        });
        match got {
            Ok(fetched) => Ok(Some(fetched)),
            Err(e) => match self.error(action, name, e) {
                CloudError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Writes the object `name` whole with one PUT in `mode`; the version it now has.
    pub fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> object_store::Result<Option<UpdateVersion>> {
        let client = self.client.clone();
        let path = self.path(name);
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.runtime.block_on(async move {
            let result = client
                .put_opts(&path, PutPayload::from(bytes), options)
                .await?;
            Ok(version_of(result.e_tag, result.version))
        })
    }

    /// Deletes the object `name`; one that is gone already is fine.
    pub fn delete(&self, name: &str) -> object_store::Result<()> {
        let client = self.client.clone();
        let path = self.path(name);
        match self
            .runtime
            .block_on(async move { client.delete(&path).await })
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The error of `action` on `name` (relative to the prefix), in terms a user can act on.
    pub fn error(
        &self,
        action: &'static str,
        name: &str,
        error: object_store::Error,
    ) -> CloudError {
        classify(&self.url, action, &self.url.target(name), error)
    }
}

/// The base URL of a GCS emulator from `STORAGE_EMULATOR_HOST`, as Google's SDKs read it:
/// `http://host:port` as it is, a bare `host:port` as http. `None` when unset or empty.
fn gcs_emulator() -> Option<String> {
    let host = std::env::var("STORAGE_EMULATOR_HOST").ok()?;
    let host = host.trim().trim_end_matches('/');
    if host.is_empty() {
        return None;
    }
    Some(if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    })
}

/// An object as [`Store::get`] read it.
pub struct Fetched {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// What a conditional replace of it needs, when the store gave it.
    pub version: Option<UpdateVersion>,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// What a conditional replace needs: the ETag, and on GCS the generation (object_store's GCS
/// client conditions on the generation). `None` when the store gave neither.
fn version_of(e_tag: Option<String>, version: Option<String>) -> Option<UpdateVersion> {
    (e_tag.is_some() || version.is_some()).then_some(UpdateVersion { e_tag, version })
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Sorts a store error into no such bucket, access denied, wrong region, not found or other.
/// The stores' error texts carry the S3/Azure/GCS error code, which is what tells them apart
/// (a missing bucket and a missing key are both a 404).
pub fn classify(
    url: &CloudUrl,
    action: &'static str,
    target: &str,
    error: object_store::Error,
) -> CloudError {
    let text = redact(&error.to_string());
    let has = |needle: &str| text.contains(needle);
    let bucket = url.bucket.clone();
    if has("NoSuchBucket") || has("ContainerNotFound") || has("The specified bucket does not exist")
    {
        return CloudError::NoSuchBucket { bucket };
    }
    if has("PermanentRedirect")
        || has("AuthorizationHeaderMalformed")
        || has("IncorrectEndpoint")
        || has("301 Moved Permanently")
        || has("incorrectly configured region")
    {
        return CloudError::WrongRegion {
            bucket,
            detail: shorten(&text),
        };
    }
    if matches!(
        error,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || has("AccessDenied")
        || has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AuthenticationFailed")
        || has("AuthorizationFailure")
        || has("403 Forbidden")
    {
        return CloudError::AccessDenied {
            target: target.to_string(),
            detail: shorten(&text),
        };
    }
    if let object_store::Error::NotFound { .. } = error {
        return CloudError::NotFound {
            target: target.to_string(),
        };
    }
    CloudError::Store {
        action,
        target: target.to_string(),
        detail: shorten(&text),
    }
}

/// Store errors quote whole XML bodies; a message needs the first few hundred characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 400;
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= MAX {
        return flat;
    }
    let mut end = MAX;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &flat[..end])
}

/// The process's one runtime for every store: the output's, each input object's, the lock's
/// and the Delta tables' clients share its two threads instead of starting a runtime each.
/// Built on first use; the callers stay synchronous and `block_on` it from their own threads.
pub fn shared_runtime() -> std::io::Result<Arc<tokio::runtime::Runtime>> {
    static RUNTIME: std::sync::OnceLock<Arc<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(Arc::clone(runtime));
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("zephr-etl-store")
        .enable_all()
        .build()?;
    // Two threads may race to build it; one wins and the other's is dropped unused.
    Ok(Arc::clone(RUNTIME.get_or_init(|| Arc::new(built))))
}
