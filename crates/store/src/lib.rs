//! Object-store locations: telling `s3://`, `gs://` and `az://` URLs from local paths, the
//! store behind each, and the errors a user can act on.
//!
//! A text names an object store when it starts with a scheme (`s3://bucket/prefix`). The
//! clouds' usual spellings are accepted (`s3a://`, `abfs://`, `abfss://`, `azure://`,
//! `https://ACCOUNT.blob.core.windows.net/...`); any other scheme, and near misses such as
//! `s3:/bucket`, are errors, never a local folder named `s3:`. Credentials come from each
//! cloud's standard environment, never from the URL: a URL that carries a password or a query
//! string (an Azure SAS token) is refused, so no secret reaches a message or a manifest.
//!
//! [`store`] builds the `object_store` client with retries; [`reader`] reads an object as a
//! sync stream (inputs of `convert`).

#![warn(missing_docs)]

mod aws;
pub mod reader;
pub mod store;

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use url::Url;

/// The cloud an object-store URL belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon S3 or an S3-compatible store (`s3://`, `s3a://`, `https://...amazonaws.com`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage or Data Lake (`az://`, `abfs://`, `https://ACCOUNT.blob.core.windows.net`).
    Azure,
}

/// An object-store location: a bucket (container) and a key or key prefix in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudUrl {
    /// The cloud the URL's scheme (or `https` host) names.
    pub cloud: Cloud,
    /// The URL as given (checked to hold no credentials).
    url: Url,
    /// The bucket (S3, GCS) or container (Azure).
    pub bucket: String,
    /// The key or key prefix inside the bucket, without leading or trailing `/`.
    pub key: String,
}

impl CloudUrl {
    /// The URL for messages: `scheme://bucket/key`, never credentials.
    pub fn display(&self) -> String {
        let scheme = match self.cloud {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        };
        if self.key.is_empty() {
            format!("{scheme}://{}", self.bucket)
        } else {
            format!("{scheme}://{}/{}", self.bucket, self.key)
        }
    }

    /// The URL the store builder parses (bucket, account, endpoint host).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `bucket/key/name` for messages about one object under this prefix.
    pub fn target(&self, name: &str) -> String {
        let base = self.display();
        if name.is_empty() {
            base
        } else {
            format!("{}/{name}", base.trim_end_matches('/'))
        }
    }
}

/// A location given on the command line: a local path or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file or folder, as given (not made absolute).
    Local(PathBuf),
    /// An object-store URL.
    Cloud(CloudUrl),
}

/// The object store could not be used. Messages name the bucket and key, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The text is neither a local path nor a supported object-store URL.
    #[error("{text}: {problem}")]
    BadUrl {
        /// The text as given, with any credentials redacted.
        text: String,
        /// What is wrong with it and how to write it instead.
        problem: String,
    },
    /// The store could not be configured (missing account, unreadable credentials file, ...).
    #[error("cannot use {url}: {detail}")]
    Config {
        /// The location, as [`CloudUrl::display`] gives it.
        url: String,
        /// The builder's or our own complaint, secrets redacted.
        detail: String,
    },
    /// The bucket (container) does not exist, or these credentials cannot see it.
    #[error(
        "bucket {bucket} does not exist (or is not visible with these credentials): create it \
         or correct the URL"
    )]
    NoSuchBucket {
        /// The bucket (container) name.
        bucket: String,
    },
    /// The credentials were refused or lack the permission for this request.
    #[error(
        "access denied to {target}: {detail}; check the credentials in the environment and \
         their permissions on this bucket"
    )]
    AccessDenied {
        /// The object or prefix refused, as [`CloudUrl::target`] gives it.
        target: String,
        /// The store's error text, shortened and redacted.
        detail: String,
    },
    /// The bucket lives in another region than the client was configured for.
    #[error(
        "bucket {bucket} is in another region than the one configured: {detail}; set the \
         bucket's region in the environment (AWS_REGION for S3)"
    )]
    WrongRegion {
        /// The bucket name.
        bucket: String,
        /// The store's error text, shortened and redacted.
        detail: String,
    },
    /// The object does not exist (the bucket does).
    #[error("{target} does not exist")]
    NotFound {
        /// The missing object, as [`CloudUrl::target`] gives it.
        target: String,
    },
    /// The run's lock was taken over (its lease had expired) or could not be renewed.
    #[error(
        "the lock {lock} is no longer this run's ({detail}); nothing of this run was \
         committed: run again"
    )]
    LockLost {
        /// The lock object, as [`CloudUrl::target`] gives it.
        lock: String,
        /// Why it is no longer this run's (taken over after its lease expired, or the store gave
        /// no ETag to renew it by).
        detail: String,
    },
    /// Any other failure of the store, after its retries.
    #[error("cannot {action} {target}: {detail}")]
    Store {
        /// What was being done, as a verb phrase for the message (`read`, `renew the lock`).
        action: &'static str,
        /// The object or prefix it was done to, as [`CloudUrl::target`] gives it.
        target: String,
        /// The store's error text, shortened and redacted.
        detail: String,
    },
}

impl CloudError {
    /// A usage or configuration error (exit 2), not a failure of the run.
    pub fn is_usage(&self) -> bool {
        matches!(self, CloudError::BadUrl { .. } | CloudError::Config { .. })
    }
}

/// Schemes that name an object store; `https` only with a cloud's host (see [`parse`]).
const SCHEMES: &[(&str, Cloud)] = &[
    ("s3", Cloud::S3),
    ("s3a", Cloud::S3),
    ("gs", Cloud::Gcs),
    ("az", Cloud::Azure),
    ("adl", Cloud::Azure),
    ("azure", Cloud::Azure),
    ("abfs", Cloud::Azure),
    ("abfss", Cloud::Azure),
];

/// Tells a local path from an object-store URL. Anything that looks like a URL but is not a
/// supported one is an error: `ftp://x`, `http://x`, `s3:/bucket` (one slash), `s3:bucket`.
pub fn parse(text: &str) -> Result<Location, CloudError> {
    let Some(scheme) = scheme_of(text) else {
        return Ok(Location::Local(PathBuf::from(text)));
    };
    let lower = scheme.to_ascii_lowercase();
    let bad = |problem: String| CloudError::BadUrl {
        text: zephr_core::redact::redact_url(text),
        problem,
    };
    let known = SCHEMES.iter().find(|(s, _)| *s == lower).map(|&(_, c)| c);
    let rest = &text[scheme.len() + 1..];
    if !rest.starts_with("//") {
        return Err(bad(format!(
            "not a valid URL: write {lower}://BUCKET/PREFIX (two slashes), or ./{text} for a \
             local path"
        )));
    }
    let url = Url::parse(text).map_err(|e| bad(format!("not a valid URL ({e})")))?;
    if !url.password().unwrap_or("").is_empty() || url.query().is_some() || url.fragment().is_some()
    {
        return Err(bad(
            "credentials do not belong in the URL (they would end up in logs and manifests): \
             remove the password or query string and set them in the environment"
                .into(),
        ));
    }
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let cloud = match known {
        Some(cloud) => cloud,
        None if lower == "https"
            && (host.ends_with(".blob.core.windows.net")
                || host.ends_with(".dfs.core.windows.net")) =>
        {
            Cloud::Azure
        }
        None if lower == "https" && host.ends_with(".amazonaws.com") => Cloud::S3,
        None => {
            return Err(bad(format!(
                "unsupported scheme `{scheme}://`: use a local path, s3://BUCKET/PREFIX, \
                 gs://BUCKET/PREFIX or az://CONTAINER/PREFIX"
            )));
        }
    };
    let path: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    let (bucket, key) = match (lower.as_str(), cloud) {
        // https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY and S3's path style.
        ("https", Cloud::Azure) => split_first(&path),
        ("https", _) if host.starts_with("s3.") || host.starts_with("s3-") => split_first(&path),
        // Virtual-hosted S3: BUCKET.s3.REGION.amazonaws.com/KEY.
        ("https", _) => (
            host.split(".s3").next().unwrap_or("").to_string(),
            path.join("/"),
        ),
        // abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/KEY
        (_, Cloud::Azure) if !url.username().is_empty() => {
            (url.username().to_string(), path.join("/"))
        }
        _ => (host.clone(), path.join("/")),
    };
    if bucket.is_empty() {
        return Err(bad(format!("no bucket: write {lower}://BUCKET/PREFIX")));
    }
    Ok(Location::Cloud(CloudUrl {
        cloud,
        url,
        bucket,
        key,
    }))
}

fn split_first(path: &[&str]) -> (String, String) {
    match path.split_first() {
        Some((first, rest)) => (first.to_string(), rest.join("/")),
        None => (String::new(), String::new()),
    }
}

/// The scheme of a URL-looking text: two or more letters, digits, `+`, `-`, `.` before a `:`
/// that a `/` follows, or any known object-store scheme before a `:`. One letter is a Windows
/// drive (`C:\...`), not a scheme.
fn scheme_of(text: &str) -> Option<&str> {
    let colon = text.find(':')?;
    let scheme = &text[..colon];
    let valid = scheme.len() >= 2
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    if !valid {
        return None;
    }
    let lower = scheme.to_ascii_lowercase();
    let known = SCHEMES.iter().any(|(s, _)| *s == lower) || lower == "https" || lower == "http";
    (known || text[colon + 1..].starts_with('/')).then_some(scheme)
}

/// The default local work folder of a resumable fetch into `destination` (a local path or an
/// object-store URL): `$XDG_CACHE_HOME/zephr-etl/fetch/NAME` (or `~/.cache/...`, else the
/// temporary directory), where NAME is the destination's readable part and a hash of it, so
/// two destinations never share a folder and the same one always finds its pages again.
pub fn default_work_dir(destination: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("zephr-etl")
        .join("fetch")
        .join(work_dir_name(destination))
}

/// `s3___bucket_prefix-0123456789ab`: readable, safe on every file system, unique by hash.
fn work_dir_name(destination: &str) -> String {
    // A local destination is named by its absolute path: `out` run from two folders differs.
    let key = match parse(destination) {
        Ok(Location::Local(path)) => std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string(),
        Ok(Location::Cloud(url)) => url.display(),
        Err(_) => destination.to_string(),
    };
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tail: String = readable
        .trim_matches('_')
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    format!("{tail}-{}", &hash[..12])
}

/// Whether `text` names a local path (not an object-store URL, nor a malformed one).
pub fn is_local(text: &str) -> bool {
    matches!(parse(text), Ok(Location::Local(_)))
}

/// Hides secrets in a message from a store: the values of the clouds' secret environment
/// variables, and every URL's query string (SAS tokens, presigned signatures).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let end = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .map_or(rest.len(), |e| start + e);
        let url = &rest[..end];
        match url[start..].find('?') {
            Some(q) => {
                out.push_str(&url[..start + q]);
                out.push_str("?<hidden>");
            }
            None => out.push_str(url),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    for name in SECRET_VARS {
        if let Ok(value) = std::env::var(name)
            && value.len() >= 4
        {
            out = out.replace(&value, "<hidden>");
        }
    }
    out
}

/// Environment variables whose values are secrets.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

#[cfg(test)]
mod tests;
