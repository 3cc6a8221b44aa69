//! `zephr-etl fetch`: the export live from the Zephr Admin API.
//!
//! Every flag is checked before the first request. The engine then fetches the user export
//! page by page (resumable) or, with `--no-paginate`, as one streamed array (see
//! `zephr_engine::export::fetch`). Once the user tables are committed, `--state-file` is moved
//! on and the state-events phase runs; its failure keeps the user tables and exits 3.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::progress::{Progress, ProgressMode};
use crate::signal;
use anyhow::Context;
use serde_json::json;
use zephr_api::client::ClientConfig;
use zephr_api::secret::SECRET_KEY_VAR;
use zephr_api::{
    Client, CredentialError, Credentials, EventsQuery, ExportQuery, FetchError, QueryField,
    RetryPolicy, tenant_base_url,
};
use zephr_engine::export::fetch::{FetchPlan, ResumeNotice};
use zephr_engine::feed::SegmentLimit;
use zephr_engine::resume::WorkDir;
use zephr_engine::state_file::{self, StateFileError};
use zephr_engine::wide::{self, USER_SCHEMA_PATH, WideError};

use super::UsageError;
use super::export::{check_side_file, delta_summary, failed, open, tables_summary};
use super::state_events::finish;
use super::wide::{UsersPlan, report_mismatches, wide_error};
use crate::cli::FetchArgs;

/// Everything the flags say, checked.
struct Plan {
    /// The user export, for the engine.
    fetch: FetchPlan,
    users: UsersPlan,
    events: Option<EventsQuery>,
    state_file: Option<PathBuf>,
    /// Where `since` came from when it was not given: the state file's time.
    since_from_state: Option<String>,
}

pub fn run(args: FetchArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let Plan {
        fetch,
        users,
        events,
        state_file: state_path,
        since_from_state,
    } = plan(&args)?;
    let fetch = &fetch;
    if super::postgres::is_target(&args.output) {
        return super::postgres::fetch(&args, fetch, users, state_path, quiet);
    }
    // A side file that is one of the outputs would replace a table, or be replaced.
    let dir = &args.output.output;
    if let Some(raw) = &fetch.save_raw {
        check_side_file(dir, raw, "--save-raw")?;
    }
    if let Some(state) = &state_path {
        check_side_file(dir, state, "--state-file")?;
    }
    signal::install();
    let progress = Progress::new(ProgressMode::detect(quiet));
    let mut export = open(
        &args.output,
        json!({
            "tenant": fetch.tenant,
            "base_url": zephr_api::client::redact_url(&fetch.base_url),
            "query": fetch.query.to_query(None),
            "state_events": events.as_ref().map(|e| e.to_query(None)),
        }),
    )?;

    progress.phase("Preparing user export...");
    users.apply(&mut export, &format!("GET {USER_SCHEMA_PATH}"), || {
        let fields = wide::download_user_schema(&fetch.client).map_err(|e| match e {
            // The tenant's own schema is not an argument: not a usage error.
            WideError::Schema { .. } => anyhow::Error::new(e).context(
                "--wide-attributes: the tenant's user schema cannot be used; pass --user-schema \
                 FILE instead",
            ),
            e => wide_error(e),
        })?;
        Ok(wide::schema_columns(&fields))
    })?;
    if let Some(since) = &since_from_state {
        progress.line(&format!(
            "Fetching users updated since {since} (from --state-file)"
        ));
    }
    let outcome = if args.no_paginate {
        export.fetch_stream(fetch, &progress)
    } else {
        export.fetch_paged(fetch, &progress)
    };
    let fetched = outcome.map_err(|e| failed(&progress, e))?;

    // The tables are in place: only now may the next run start from this one.
    if let Some(path) = &state_path {
        state_file::record(path, &fetch.tenant, &fetched.started_at).context(
            "the tables were written, but the state file could not be updated; the next run \
             with it will fetch from the previous time again",
        )?;
    }
    report_mismatches(&progress, export.users());
    let summary = tables_summary(&progress, &fetched.stats, fetched.bytes);
    if let Some(line) = delta_summary(&export) {
        progress.line(&line);
    }
    let events = events.as_ref().map(|events| {
        let run = || export.fetch_state_events(fetch, events);
        ("Downloading state events...", run)
    });
    Ok(finish(&progress, &summary, events, dir))
}

/// Checks every flag before any request; problems are usage errors (exit 2).
fn plan(args: &FetchArgs) -> anyhow::Result<Plan> {
    let usage = |message: String| anyhow::Error::new(UsageError(message));
    let tenant = args.tenant.trim().to_owned();
    if tenant.is_empty() {
        return Err(usage("--tenant must not be empty".into()));
    }
    if args.output.delete_missing {
        let window = [
            (args.since.is_some(), "--since"),
            (args.state_file.is_some(), "--state-file"),
            (args.registered_since.is_some(), "--registered-since"),
            (args.registered_before.is_some(), "--registered-before"),
        ];
        if let Some((_, flag)) = window.iter().find(|(given, _)| *given) {
            // Users outside a partial export are not gone: they were not asked for.
            return Err(usage(format!(
                "--delete-missing removes every user absent from the run, so it needs a full \
                 export; {flag} fetches only some users: drop one of them"
            )));
        }
    }
    if args.resume && args.output.format.contains(&crate::cli::FormatArg::Delta) {
        // The run's user ids are gathered as its pages are converted; those of pages an
        // earlier process converted are not known to this one.
        return Err(usage(
            "--resume cannot continue a --format delta fetch; rerun the same command \
             without --resume (a partly committed run is completed)"
                .into(),
        ));
    }
    if !args.no_paginate && args.output.format.contains(&crate::cli::FormatArg::Xlsx) {
        // A paginated fetch assembles its tables from resumable segments, and a workbook
        // cannot be appended to.
        return Err(usage(
            "--format xlsx needs --no-paginate with fetch (or fetch with --save-raw FILE, \
             then convert FILE --format xlsx)"
                .into(),
        ));
    }
    let base_url = match &args.base_url {
        Some(url) => url.clone(),
        None => {
            // The tenant becomes a host name: keep it to what a DNS label allows.
            if !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(usage(format!(
                    "--tenant {tenant:?}: expected the tenant's name as in \
                     https://TENANT.api.zephr.com (letters, digits and '-'), or give --base-url"
                )));
            }
            tenant_base_url(&tenant)
        }
    };
    if (args.events_from.is_some() || args.events_to.is_some()) && !args.state_events {
        return Err(usage(
            "--events-from and --events-to need --state-events".into(),
        ));
    }
    let mut query = ExportQuery {
        grants: args.grants,
        // Wide columns are filled from the attributes, so they are asked for too.
        attributes: args.attributes || args.output.wide_attributes,
        app_ids: args.app_ids.clone(),
        app_ids_restrictive: args.app_ids_restrictive,
        since: args.since.clone(),
        registered_since: args.registered_since.clone(),
        registered_before: args.registered_before.clone(),
        rpp: args.rpp,
    };
    query
        .validate()
        .map_err(|e| usage(e.message_with(query_flag)))?;
    let events = if args.state_events {
        let events = EventsQuery {
            from: args.events_from.clone().unwrap_or_default(),
            to: args.events_to.clone().unwrap_or_default(),
            rpp: args.rpp,
        };
        events
            .validate()
            .map_err(|e| usage(e.message_with(query_flag)))?;
        Some(events)
    } else {
        None
    };
    let mut since_from_state = None;
    if let Some(path) = &args.state_file
        && query.since.is_none()
        && let Some(state) = state_file::read(path, &tenant).map_err(|e| match e {
            StateFileError::Invalid { .. } => anyhow::anyhow!("{e}, or pass --since"),
            e => e.into(),
        })?
    {
        query.since = Some(state.last_success_started_at.clone());
        since_from_state = Some(state.last_success_started_at);
    }
    let retry = RetryPolicy {
        retries: args.retries,
        base_delay: Duration::from_millis(args.retry_base_ms),
        max_delay: Duration::from_millis(args.retry_max_ms),
    };
    // The PII key and the user schema, then the credentials: every flag before the keys.
    let users = UsersPlan::check(&args.output)?;
    let client = connect(args, &tenant, &base_url, retry)?;
    let fetch = FetchPlan {
        client,
        query,
        concurrency: args.concurrency as usize,
        segment: SegmentLimit {
            pages: args.segment_pages.map_or(usize::MAX, |n| n as usize),
            bytes: args.segment_bytes,
        },
        save_raw: args.save_raw.clone(),
        resume: args.resume,
        tenant,
        base_url,
        started: SystemTime::now(),
        work: WorkDir::for_destination(
            &args.output.output.to_string_lossy(),
            args.work_dir.as_deref(),
        ),
        announce: |progress, notice| match notice {
            ResumeNotice::Discarding { .. } => {
                progress.line(&format!("{notice} (pass --resume to continue one)"))
            }
            _ => ResumeNotice::print(progress, notice),
        },
    };
    Ok(Plan {
        fetch,
        users,
        events,
        state_file: args.state_file.clone(),
        since_from_state,
    })
}

/// The API client: credentials from the environment or `--secret-key-file` (missing or
/// unreadable keys are configuration errors, exit 2, as a missing ZEPHR_ETL_PII_KEY is).
fn connect(
    args: &FetchArgs,
    tenant: &str,
    base_url: &str,
    retry: RetryPolicy,
) -> anyhow::Result<Arc<Client>> {
    let usage = |message: String| anyhow::Error::new(UsageError(message));
    let credentials =
        Credentials::from_env_or_file(args.secret_key_file.as_deref()).map_err(|e| match e {
            CredentialError::ReadFile { .. } => usage(format!("--secret-key-file: {e}")),
            CredentialError::MissingSecret => usage(format!(
                "{SECRET_KEY_VAR} is not set and no --secret-key-file was given"
            )),
            e => usage(e.to_string()),
        })?;
    let mut config = ClientConfig::new(base_url, tenant, credentials);
    config.retry = retry;
    config.connect_timeout = Duration::from_secs(args.timeout);
    config.read_timeout = Duration::from_secs(args.timeout);
    let client = Client::new(config).map_err(|e| match e {
        FetchError::BaseUrl(_) => usage(format!("--base-url: {e}")),
        e => anyhow::Error::new(e),
    })?;
    Ok(Arc::new(client))
}

/// The flag that sets a query field, for the library's query errors.
fn query_flag(field: QueryField) -> &'static str {
    match field {
        QueryField::AppIds => "--app-ids",
        QueryField::Since => "--since",
        QueryField::RegisteredSince => "--registered-since",
        QueryField::RegisteredBefore => "--registered-before",
        QueryField::Rpp => "--rpp",
        QueryField::EventsFrom => "--events-from",
        QueryField::EventsTo => "--events-to",
    }
}
