//! `zephr-etl fetch`: the export live from the Zephr Admin API.
//!
//! Every flag is checked before the first request. The user export is then fetched page by
//! page into the same pipeline as `convert` ([`paged`], resumable) or, with `--no-paginate`,
//! as one streamed array ([`stream`]). Once the user tables are in place, `--state-file` is
//! moved on and the state-events phase runs; its failure keeps the user tables and exits 3.

mod paged;
mod stream;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::json;
use zephr_etl::extension::UsersExtension;
use zephr_etl::fetch::client::ClientConfig;
use zephr_etl::fetch::feed::SegmentLimit;
use zephr_etl::fetch::state_file::{self, RunState, STATE_FILE_VERSION};
use zephr_etl::fetch::{
    Client, Credentials, EVENTS_EXPORT_PATH, EventsQuery, ExportQuery, FetchError, RetryPolicy,
    fetch_pages, tenant_base_url,
};
use zephr_etl::manifest::Manifest;
use zephr_etl::pipeline::RunStats;
use zephr_etl::progress::{Progress, ProgressMode};
use zephr_etl::schema::Table;
use zephr_etl::signal;
use zephr_etl::state_events::{StateEventsError, spool_page};
use zephr_etl::wide::{self, USER_SCHEMA_PATH, WideColumns};

use super::UsageError;
use super::export::{ExportConfig, print_summary};
use super::state_events::{EventsOutput, print_summary as print_events, report_failure};
use super::wide::{UsersPlan, report_mismatches};
use crate::cli::FetchArgs;

/// Everything the flags say, checked.
struct Plan {
    tenant: String,
    base_url: String,
    query: ExportQuery,
    events: Option<EventsQuery>,
    retry: RetryPolicy,
    concurrency: usize,
    segment: SegmentLimit,
    save_raw: Option<PathBuf>,
    state_file: Option<PathBuf>,
    /// Where `since` came from when it was not given: the state file's time.
    since_from_state: Option<String>,
}

/// What the user-export phase did.
struct Fetched {
    stats: RunStats,
    /// Body bytes received (this run and, when resumed, the runs before).
    bytes: u64,
    /// When the fetch started (its first attempt, when resumed): the next `since`.
    started_at: String,
    /// The manifest written with the tables, when one was asked for.
    manifest: Option<Manifest>,
}

/// `GET /v3/schema/users`: the user schema that types the wide columns.
fn download_user_schema(client: &Client) -> anyhow::Result<WideColumns> {
    let body = client
        .fetch_page(USER_SCHEMA_PATH, "")
        .with_context(|| format!("--wide-attributes: cannot download the user schema (GET {USER_SCHEMA_PATH}); pass --user-schema FILE instead"))?;
    let fields = wide::parse_user_schema(&body, &format!("GET {USER_SCHEMA_PATH}"))?;
    let base = Table::Users.def().column_names();
    Ok(WideColumns::from_schema(&fields, &base))
}

pub fn run(args: FetchArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let started = SystemTime::now();
    let plan = plan(&args)?;
    let users = UsersPlan::check(&args.output)?;
    let credentials = Credentials::from_env_or_file(args.secret_key_file.as_deref())?;
    let mut client_config = ClientConfig::new(&plan.base_url, &plan.tenant, credentials);
    client_config.retry = plan.retry;
    let client = Arc::new(Client::new(client_config).map_err(|e| match e {
        FetchError::BaseUrl(_) => anyhow::Error::new(UsageError(format!("--base-url: {e}"))),
        e => anyhow::Error::new(e),
    })?);
    signal::install();
    let progress = Progress::new(ProgressMode::detect(quiet));
    let mut config = ExportConfig::open(&args.output)?;
    config.set_source(json!({
        "tenant": plan.tenant,
        "base_url": zephr_etl::fetch::client::strip_userinfo(&plan.base_url),
        "query": plan.query.to_query(None),
        "state_events": plan.events.as_ref().map(|e| e.to_query(None)),
    }));
    let events_out = EventsOutput::new(&args.output.output, args.output.overwrite, &config);
    if plan.events.is_some() {
        events_out.check_free(&config)?;
    }
    if let Some(raw) = &plan.save_raw
        && !args.output.overwrite
        && raw.exists()
    {
        anyhow::bail!(
            "{} already exists; pass --overwrite to replace it, or choose another --save-raw file",
            raw.display()
        );
    }

    progress.phase("Preparing user export...");
    let downloaded = if users.needs_columns() {
        config.set_parameter(
            "wide_columns_from",
            json!(format!("GET {USER_SCHEMA_PATH}")),
        );
        Some(download_user_schema(&client)?)
    } else {
        None
    };
    if let Some(ext) = users.build(downloaded) {
        config.set_users(ext);
    }
    let ext = config.users();
    if let Some(since) = &plan.since_from_state {
        progress.line(&format!(
            "Fetching users updated since {since} (from --state-file)"
        ));
    }
    let outcome = if args.no_paginate {
        stream::run(config, &plan, &client, &progress, started)
    } else {
        let arguments = fingerprint_arguments(&args, &plan, ext);
        paged::run(
            config,
            &plan,
            &client,
            &progress,
            args.resume,
            arguments,
            started,
        )
    };
    let fetched = match outcome {
        Ok(fetched) => fetched,
        Err(e) => {
            // The console's phase line, then (from main) the cause, as `convert` does.
            progress.clear();
            progress.line("Export failed.");
            return Err(e);
        }
    };

    // The tables are in place: only now may the next run start from this one.
    if let Some(path) = &plan.state_file {
        let state = RunState {
            version: STATE_FILE_VERSION,
            tenant: plan.tenant.clone(),
            last_success_started_at: fetched.started_at.clone(),
        };
        state_file::write(path, &state).context(
            "the tables were written, but the state file could not be updated; the next run \
             with it will fetch from the previous time again",
        )?;
    }
    report_mismatches(&progress, ext);
    let Some(events) = &plan.events else {
        progress.clear();
        progress.line("Export complete!");
        print_summary(&progress, &fetched.stats, fetched.bytes);
        return Ok(ExitCode::SUCCESS);
    };
    print_summary(&progress, &fetched.stats, fetched.bytes);
    progress.phase("Downloading state events...");
    match fetch_events(
        &plan,
        events,
        &client,
        &events_out,
        &args.output.output,
        fetched.manifest,
    ) {
        Ok(stats) => {
            progress.clear();
            print_events(&progress, &stats);
            progress.line("All exports complete!");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report_failure(&progress, &e, &args.output.output)),
    }
}

/// Checks every flag before any request; problems are usage errors (exit 2).
fn plan(args: &FetchArgs) -> anyhow::Result<Plan> {
    let usage = |message: String| anyhow::Error::new(UsageError(message));
    let tenant = args.tenant.trim().to_owned();
    if tenant.is_empty() {
        return Err(usage("--tenant must not be empty".into()));
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
    query.validate().map_err(|e| usage(e.to_string()))?;
    let events = if args.state_events {
        let events = EventsQuery {
            from: args.events_from.clone().unwrap_or_default(),
            to: args.events_to.clone().unwrap_or_default(),
            rpp: args.rpp,
        };
        events.validate().map_err(|e| usage(e.to_string()))?;
        Some(events)
    } else {
        None
    };
    let mut since_from_state = None;
    if let Some(path) = &args.state_file
        && query.since.is_none()
        && let Some(state) = state_file::read(path, &tenant)?
    {
        query.since = Some(state.last_success_started_at.clone());
        since_from_state = Some(state.last_success_started_at);
    }
    Ok(Plan {
        tenant,
        base_url,
        query,
        events,
        retry: RetryPolicy {
            retries: args.retries,
            base_delay: Duration::from_millis(args.retry_base_ms),
            max_delay: Duration::from_millis(args.retry_max_ms),
        },
        concurrency: args.concurrency as usize,
        segment: SegmentLimit {
            pages: args.segment_pages.map_or(usize::MAX, |n| n as usize),
            bytes: args.segment_bytes,
        },
        save_raw: args.save_raw.clone(),
        state_file: args.state_file.clone(),
        since_from_state,
    })
}

/// What shapes the tables of a paginated fetch, for `--resume` to compare (no credentials,
/// no tuning such as concurrency or retries).
fn fingerprint_arguments(
    args: &FetchArgs,
    plan: &Plan,
    ext: Option<&UsersExtension>,
) -> BTreeMap<String, String> {
    let out = &args.output;
    let formats: Vec<String> = out.format.iter().map(|f| format!("{f:?}")).collect();
    let mut map = BTreeMap::new();
    map.insert("zephr-etl".into(), env!("CARGO_PKG_VERSION").into());
    map.insert("tenant".into(), plan.tenant.clone());
    map.insert(
        "base-url".into(),
        zephr_etl::fetch::client::strip_userinfo(&plan.base_url),
    );
    map.insert("query".into(), plan.query.to_query(None));
    map.insert("format".into(), formats.join(","));
    map.insert("on-error".into(), format!("{:?}", out.on_error));
    map.insert("compression".into(), format!("{:?}", out.compression));
    map.insert("row-group-size".into(), out.row_group_size.to_string());
    map.insert("save-raw".into(), plan.save_raw.is_some().to_string());
    // What the segments' cells depend on beyond the query: a resume must not mix them.
    map.insert(
        "csv-dialect".into(),
        format!("{:?}", out.csv_dialect).to_lowercase(),
    );
    if let Some(ext) = ext {
        if let Some(key) = &ext.pii {
            map.insert("hash-pii".into(), key.fingerprint());
        }
        if let Some(wide) = &ext.wide {
            let columns: Vec<String> = wide
                .columns
                .iter()
                .map(|c| format!("{}:{:?}", c.name, c.column_type))
                .collect();
            map.insert("wide-columns".into(), columns.join(","));
        }
    }
    map
}

/// The state-events phase: pages spooled as NDJSON into the work folder, then converted.
fn fetch_events(
    plan: &Plan,
    events: &EventsQuery,
    client: &Client,
    out: &EventsOutput,
    dir: &Path,
    manifest: Option<Manifest>,
) -> anyhow::Result<zephr_etl::state_events::EventsStats> {
    let work = zephr_etl::fetch::resume::WorkDir::of(dir);
    work.create()?;
    let result = (|| {
        let spool = tempfile::Builder::new()
            .prefix("state-events-")
            .suffix(".ndjson")
            .tempfile_in(work.path())
            .context("cannot create the state events spool file")?;
        let mut writer = std::io::BufWriter::new(spool.as_file());
        let query = events.clone();
        fetch_pages(
            client,
            EVENTS_EXPORT_PATH,
            move |page| query.to_query(Some(page)),
            1,
            plan.concurrency,
            |page, body| {
                if signal::interrupted() {
                    return Err(StateEventsError::Interrupted);
                }
                spool_page(&body, page, &mut writer).map(|_| ())
            },
        )?;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write the state events spool file")?;
        file.sync_all().ok();
        let path = spool.path().to_path_buf();
        let open =
            move || -> std::io::Result<Box<dyn Read + Send>> { Ok(Box::new(File::open(&path)?)) };
        out.write(&open, &format!("GET {EVENTS_EXPORT_PATH}"), manifest)
    })();
    // Only the spool lived there; a failure to tidy up is not worth failing over.
    let _ = work.remove();
    result
}

/// A hidden temporary file in the folder of `path` (for `--save-raw`), so that the final
/// rename stays atomic.
fn temp_next_to(path: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".zephr-etl-raw-")
        .tempfile_in(&parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))
}

#[cfg(test)]
mod tests {
    use zephr_etl::fetch::client::strip_userinfo;

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("https://u:p@proxy:8080/x"),
            "https://proxy:8080/x"
        );
        assert_eq!(strip_userinfo("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(strip_userinfo("http://h/a@b"), "http://h/a@b");
    }
}
