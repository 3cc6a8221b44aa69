//! Two S3 set-up mistakes caught before the first request, each named with its fix: a
//! plain-http endpoint without `AWS_ALLOW_HTTP` (which the HTTP client otherwise reports as a
//! bare "builder error"), and no credentials anywhere (which otherwise surfaces minutes later
//! as an error from the instance metadata service that never says credentials were missing).

use std::time::Duration;

use super::redact;
use super::store::StoreOptions;

/// Where `object_store` asks for credentials when nothing else is configured.
const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";

/// A setting as the S3 builder sees it: the caller's own `config` first, then the first of
/// `vars` set (non-empty) in the environment.
fn setting(options: &StoreOptions, key: &str, vars: &[&str]) -> Option<String> {
    options
        .config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .or_else(|| {
            vars.iter()
                .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        })
        .filter(|v| !v.is_empty())
}

/// Refuses a plain-http endpoint unless plain http was allowed.
pub(crate) fn check_endpoint(options: &StoreOptions, allow_http: bool) -> Result<(), String> {
    let Some(endpoint) = setting(
        options,
        "aws_endpoint",
        &["AWS_ENDPOINT_URL", "AWS_ENDPOINT"],
    ) else {
        return Ok(());
    };
    if allow_http || !endpoint.to_ascii_lowercase().starts_with("http://") {
        return Ok(());
    }
    Err(format!(
        "the endpoint {} (AWS_ENDPOINT_URL) is plain http; set AWS_ALLOW_HTTP=true to allow \
         it (an emulator or a local server), or use an https endpoint",
        redact(&endpoint)
    ))
}

/// Checks that some source of credentials exists: keys, a web identity, container
/// credentials, unsigned requests, or else an instance metadata service that answers. The
/// service is asked once, briefly, and only when nothing else is configured.
pub(crate) fn check_credentials(options: &StoreOptions) -> Result<(), String> {
    let configured = |key: &str, vars: &[&str]| setting(options, key, vars).is_some();
    let skip_signature = setting(options, "aws_skip_signature", &["AWS_SKIP_SIGNATURE"])
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    if skip_signature
        || configured("aws_access_key_id", &["AWS_ACCESS_KEY_ID"])
        || configured(
            "aws_web_identity_token_file",
            &["AWS_WEB_IDENTITY_TOKEN_FILE"],
        )
        || configured(
            "aws_container_credentials_relative_uri",
            &["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"],
        )
        || configured(
            "aws_container_credentials_full_uri",
            &["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
        )
    {
        return Ok(());
    }
    let endpoint = setting(options, "aws_metadata_endpoint", &["AWS_METADATA_ENDPOINT"])
        .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.to_string());
    let answer = match probe_metadata(&endpoint) {
        Ok(()) => return Ok(()),
        Err(answer) => answer,
    };
    Err(format!(
        "no AWS credentials found: looked for AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and \
         AWS_CONTAINER_CREDENTIALS_FULL_URI, then asked the instance metadata service at {} \
         ({answer}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an \
         instance role is available",
        redact(&endpoint)
    ))
}

/// Asks the instance metadata service for a session token (IMDSv2, as `object_store` does):
/// `Ok` when it gives one, else what happened.
fn probe_metadata(endpoint: &str) -> Result<(), String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{}/latest/api/token", endpoint.trim_end_matches('/'));
    match agent
        .put(&url)
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send_empty()
    {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("it answered {}", response.status())),
        Err(e) => Err(format!("it did not answer: {}", redact(&e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(config: &[(&str, &str)]) -> StoreOptions {
        StoreOptions {
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..StoreOptions::default()
        }
    }

    #[test]
    fn a_plain_http_endpoint_needs_the_allow_variable() {
        let options = with(&[("aws_endpoint", "http://127.0.0.1:9000/?x=SECRET")]);
        let message = check_endpoint(&options, false).unwrap_err();
        assert!(message.contains("AWS_ALLOW_HTTP=true"), "{message}");
        assert!(!message.contains("SECRET"), "{message}");
        check_endpoint(&options, true).unwrap();
        check_endpoint(&with(&[("aws_endpoint", "https://s3.example")]), false).unwrap();
    }

    #[test]
    fn no_credentials_name_what_was_looked_for() {
        // A closed loopback port stands in for a machine without a metadata service.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let options = with(&[
            ("aws_metadata_endpoint", endpoint.as_str()),
            ("aws_access_key_id", ""),
        ]);
        // Only meaningful where the environment has no credentials of its own.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
            || std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
        {
            return;
        }
        let message = check_credentials(&options).unwrap_err();
        for needle in [
            "no AWS credentials found",
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &endpoint,
            "it did not answer",
        ] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
        check_credentials(&with(&[("aws_access_key_id", "AKIA")])).unwrap();
        check_credentials(&with(&[("aws_skip_signature", "true")])).unwrap();
    }
}
