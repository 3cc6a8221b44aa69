//! `zephr-etl convert`: saved exports (files or stdin) into tables.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zephr_etl::pipeline::{Source, Sources};
use zephr_etl::progress::{Progress, ProgressMode};
use zephr_etl::signal;
use zephr_etl::source::{InputSpec, open_input};

use super::export::{ExportConfig, print_summary};
use crate::cli::ConvertArgs;

pub fn run(args: ConvertArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let inputs: Vec<InputSpec> = args.inputs.iter().map(|a| InputSpec::parse(a)).collect();
    if inputs.iter().filter(|i| **i == InputSpec::Stdin).count() > 1 {
        anyhow::bail!("`-` (stdin) can be given only once");
    }
    signal::install();
    let progress = Progress::new(ProgressMode::detect(quiet));
    let config = ExportConfig::open(&args.output)?;
    progress.phase("Preparing user export...");
    let total: Option<u64> = inputs.iter().map(InputSpec::size).sum();
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let counter = raw_bytes.clone();
    let sources: Sources = Box::new(inputs.into_iter().map(move |spec| {
        let reader = open_input(&spec, counter.clone())?;
        Ok(Source {
            name: spec.display_name(),
            reader,
        })
    }));
    let stats = match config.run(sources, &progress, &raw_bytes, total) {
        Ok(stats) => stats,
        Err(e) => {
            // The console's phase line, then (from main) the cause.
            progress.clear();
            progress.line("Export failed.");
            return Err(e);
        }
    };
    config.commit()?;
    progress.clear();
    progress.line("Export complete!");
    print_summary(&progress, &stats, raw_bytes.load(Ordering::Relaxed));
    Ok(ExitCode::SUCCESS)
}
