//! `zephr-etl generate`: a synthetic export on stdout or in a file.

use std::fs::File;
use std::io::{self, BufWriter};
use std::process::ExitCode;

use anyhow::Context;
use zephr_core::generate::{GenerateSpec, write_export};

use crate::cli::GenerateArgs;

pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let spec = GenerateSpec {
        users: args.users,
        seed: args.seed,
        grants: args.grants,
        attributes: args.attributes,
    };
    match &args.output {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            write_export(&spec, BufWriter::new(file))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => write_export(&spec, io::stdout().lock()).context("cannot write to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}
