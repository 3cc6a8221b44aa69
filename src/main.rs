//! The `zephr-etl` binary: parse arguments, run one command, print one error, exit.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any large buffer exists: see the module for why and what it measured.
    zephr_etl::allocator::tune_for_batches();
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(error) => {
            // One message with its context chain; broken pipes (`| head`) end quietly.
            if commands::is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            // Not eprintln!: a closed stderr must not turn a failure into a panic (exit 101).
            zephr_etl::progress::stderr_line(&format!(
                "zephr-etl: {}",
                commands::render_error(&error)
            ));
            ExitCode::from(commands::exit_status(&error))
        }
    }
}
