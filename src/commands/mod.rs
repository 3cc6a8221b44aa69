//! The commands, one module each; `export` is the configuration they share.

mod convert;
mod export;
mod fetch;
mod generate;
mod schema;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit status of a failed run (usage errors exit with 2, through clap).
pub const EXIT_FAILED: u8 = 1;
/// Exit status when the user tables were written but the state-events phase failed.
pub const EXIT_STATE_EVENTS_FAILED: u8 = 3;

/// Runs the command that `cli` asks for.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(args) => convert::run(args, cli.quiet),
        Command::Fetch(args) => fetch::run(*args, cli.quiet),
        Command::Schema(args) => schema::run(&args),
        Command::Generate(args) => generate::run(&args),
    }
}

/// The error and its causes on one line, each said once: a message that already shows its
/// `#[source]` (thiserror's `"...: {source}"`) would otherwise repeat it.
pub fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Whether the error is a closed stdout (`zephr-etl generate ... | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
