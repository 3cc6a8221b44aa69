//! The commands, one module each; `export` turns the flags they share into the engine's
//! options and its errors into messages with flag hints.

mod completions;
mod convert;
mod export;
mod fetch;
mod generate;
mod inspect;
mod load_sql;
mod postgres;
mod schema;
mod state_events;
mod wide;

use std::process::ExitCode;

use zephr_api::FetchError;
use zephr_core::error::{Chain, InputError};
use zephr_engine::export::ExportError;
use zephr_engine::input::InputSpec;
use zephr_engine::pipeline::PipelineError;
use zephr_engine::wide::WideError;

use crate::cli::{Cli, Command};

/// The INPUT arguments of `convert` and `inspect`; a bad URL or a second `-` is a usage error.
pub fn parse_inputs(args: &[String]) -> anyhow::Result<Vec<InputSpec>> {
    let inputs = InputSpec::parse_all(args).map_err(|e| UsageError(e.to_string()))?;
    if inputs.iter().filter(|i| **i == InputSpec::Stdin).count() > 1 {
        return Err(UsageError("`-` (stdin) can be given only once".into()).into());
    }
    Ok(inputs)
}

/// Exit status of a failed run.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of bad usage: clap's own errors, and [`UsageError`]s found after parsing.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the user tables were written but the state-events phase failed.
pub const EXIT_STATE_EVENTS_FAILED: u8 = 3;

/// Runs the command that `cli` asks for.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(args) => convert::run(args, cli.quiet),
        Command::Fetch(args) => fetch::run(*args, cli.quiet),
        Command::Schema(args) => schema::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Inspect(args) => inspect::run(&args, cli.quiet),
        Command::LoadSql(args) => load_sql::run(&args),
        Command::Completions(args) => completions::run(&args),
    }
}

/// A usage problem found after clap parsed the arguments (a flag value the API would refuse,
/// flags that do not go together): the run exits with [`EXIT_USAGE`] before any work starts.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit status for an error: [`EXIT_USAGE`] for a [`UsageError`], else [`EXIT_FAILED`].
pub fn exit_status(error: &anyhow::Error) -> u8 {
    if error.chain().any(|cause| cause.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

/// The error and its causes on one line, `outer: inner: ...` ([`Chain`]): each library error
/// owns only its own words, the binary's context sits on top.
///
/// The library words its errors without flags; the flag that answers one is added at the end
/// ([`flag_hint`]).
pub fn render_error(error: &anyhow::Error) -> String {
    let mut out = Chain(error.as_ref()).to_string();
    if let Some(hint) = flag_hint(error) {
        out.push_str(hint);
    }
    out
}

/// The flag for a library error found anywhere in the chain: the item size limit that an
/// input's part exceeds, or the other place a refused secret key can come from.
fn flag_hint(error: &anyhow::Error) -> Option<&'static str> {
    error.chain().find_map(|cause| {
        if let Some(FetchError::Unauthorized { .. }) = fetch_error(cause) {
            return Some(" (the secret key file is --secret-key-file)");
        }
        match input_error(cause) {
            Some(InputError::TooLarge { .. }) => Some(" (--max-item-bytes)"),
            _ => None,
        }
    })
}

/// The [`FetchError`] a cause is, or wraps without showing it as a cause of its own.
fn fetch_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a FetchError> {
    match cause.downcast_ref::<ExportError>() {
        Some(ExportError::Fetch(e)) => Some(e),
        _ => cause.downcast_ref::<FetchError>(),
    }
}

/// The [`InputError`] a cause is, or wraps without showing it as a cause of its own.
fn input_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a InputError> {
    fn in_pipeline(e: &PipelineError) -> Option<&InputError> {
        match e {
            PipelineError::Input(e) => Some(e),
            _ => None,
        }
    }
    if let Some(ExportError::Pipeline(e)) = cause.downcast_ref::<ExportError>() {
        return in_pipeline(e);
    }
    if let Some(WideError::Input(e)) = cause.downcast_ref::<WideError>() {
        return Some(e);
    }
    match cause.downcast_ref::<PipelineError>() {
        Some(e) => in_pipeline(e),
        None => cause.downcast_ref::<InputError>(),
    }
}

/// Whether the error is a closed stdout (`zephr-etl generate ... | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
