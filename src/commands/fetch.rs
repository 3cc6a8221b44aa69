//! `zephr-etl fetch`: the export live from the Zephr Admin API.

use std::process::ExitCode;

use crate::cli::FetchArgs;

pub fn run(_args: FetchArgs, _quiet: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("fetch is being wired in")
}
