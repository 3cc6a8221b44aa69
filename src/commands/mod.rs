//! The commands, one module each; `export` turns the flags they share into the engine's
//! options and its errors into messages with flag hints.

mod completions;
mod convert;
mod export;
mod fetch;
mod generate;
mod inspect;
mod schema;
mod state_events;
mod wide;

use std::process::ExitCode;

use zephr_etl::source::InputSpec;

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

/// The error and its causes on one line, `outer: inner: ...`. A cause whose text the message
/// before it already ends with is left out: library errors quote their source in their own
/// message (`cannot read: {source}`), which `{:#}` would print twice.
pub fn render_error(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether the error is a closed stdout (`zephr-etl generate ... | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
