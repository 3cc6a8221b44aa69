//! The `zephr-etl` binary: parse arguments, run one command, print one error, exit.

mod allocator;
mod cli;
mod commands;
mod progress;
mod signal;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any large buffer exists: see the module for why and what it measured.
    crate::allocator::tune_for_batches();
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(error) => {
            // One message with its context chain; broken pipes (`| head`) end quietly.
            if commands::is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            // Not eprintln!: a closed stderr must not turn a failure into a panic (exit 101).
            crate::progress::stderr_line(&format!("zephr-etl: {}", commands::render_error(&error)));
            ExitCode::from(commands::exit_status(&error))
        }
    }
}
