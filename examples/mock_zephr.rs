//! A mock Zephr Admin API on 127.0.0.1, for trying `zephr-etl fetch` without the internet.
//!
//! ```text
//! cargo run --example mock_zephr -- --items examples/export.json --port 8080 \
//!     --access-key DEMO-KEY --secret demo-secret [--events examples/events.ndjson] \
//!     [--events-csv] [--rpp 500] [--minutes 60]
//! ```
//!
//! `--items` is an export as `zephr-etl generate` writes it (a JSON array of items) or NDJSON,
//! one item per line; grants and attributes are only served when the query asks for them, as
//! Zephr does. `--events` serves state events (NDJSON of flat objects, or a JSON array) at
//! `/v4/user-export?eventsExport=true`, only those whose `timestamp` lies in the `from`/`to`
//! window, as JSON envelopes or, with `--events-csv`, as CSV pages. Every request's signature
//! is checked as Zephr does (SPEC section 2). It is the same server the integration tests use
//! (`tests/support/mock_zephr.rs`); it stops after `--minutes` or on Ctrl-C.

#[path = "../tests/support/mock_zephr.rs"]
mod mock_zephr;

use std::process::ExitCode;
use std::time::Duration;

use mock_zephr::{MockConfig, MockServer, StateEventsMock};
use serde_json::value::RawValue;

const USAGE: &str = "\
A mock Zephr Admin API on 127.0.0.1, for trying `zephr-etl fetch` without the internet.

Usage: mock_zephr --items FILE --access-key KEY --secret SECRET [OPTIONS]

Options:
  --items FILE        the users: a JSON array of items (as `zephr-etl generate` writes) or NDJSON
  --access-key KEY    the access key requests must be signed with
  --secret SECRET     the secret key requests must be signed with
  --events FILE       serve these state events (NDJSON or a JSON array of flat objects)
  --events-csv        serve the state events as CSV pages (a header on every page)
  --port N            the port on 127.0.0.1 [default: 8080]
  --rpp N             results per page when a request gives none [default: 500]
  --minutes N         stop after this many minutes [default: 60]
  -h, --help          print this help
";

struct Options {
    items: String,
    events: Option<String>,
    events_csv: bool,
    port: u16,
    access_key: String,
    secret: String,
    rpp: usize,
    minutes: u64,
}

/// The options, or `None` when help was asked for.
fn parse() -> Result<Option<Options>, String> {
    let mut o = Options {
        items: String::new(),
        events: None,
        events_csv: false,
        port: 8080,
        access_key: String::new(),
        secret: String::new(),
        rpp: 500,
        minutes: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--items" => o.items = value()?,
            "-h" | "--help" => return Ok(None),
            "--events" => o.events = Some(value()?),
            "--events-csv" => o.events_csv = true,
            "--port" => o.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--access-key" => o.access_key = value()?,
            "--secret" => o.secret = value()?,
            "--rpp" => o.rpp = value()?.parse().map_err(|e| format!("--rpp: {e}"))?,
            "--minutes" => o.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?,
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    if o.items.is_empty() || o.access_key.is_empty() || o.secret.is_empty() {
        return Err("--items, --access-key and --secret are required (see --help)".into());
    }
    Ok(Some(o))
}

/// The raw JSON of each element of an array, or of each non-blank line.
fn read_values(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    if text.trim_start().starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        return Ok(items.iter().map(|v| v.get().to_owned()).collect());
    }
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

fn main() -> ExitCode {
    let run = || -> Result<(), String> {
        let Some(o) = parse()? else {
            print!("{USAGE}");
            return Ok(());
        };
        let mut cfg = MockConfig::new(&o.access_key, &o.secret, read_values(&o.items)?);
        cfg.default_rpp = o.rpp.max(1);
        cfg.lifetime = Duration::from_secs(o.minutes * 60);
        cfg.honour_includes = true;
        if let Some(path) = &o.events {
            cfg.state_events = Some(StateEventsMock {
                rows: read_values(path)?,
                fail: false,
                csv: o.events_csv,
                time_field: Some("timestamp".into()),
            });
        }
        let items = cfg.items.len();
        let server =
            MockServer::start_on(cfg, o.port).map_err(|e| format!("port {}: {e}", o.port))?;
        eprintln!(
            "mock Zephr Admin API with {items} users at {} (stops in {} min or on Ctrl-C)",
            server.base_url, o.minutes
        );
        std::thread::sleep(Duration::from_secs(o.minutes * 60));
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock_zephr: {e}");
            ExitCode::from(2)
        }
    }
}
