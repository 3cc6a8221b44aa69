//! `zephr-etl inspect INPUT... [--json]`: what an export holds, without writing tables.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::progress::{Progress, ProgressMode};
use zephr_core::inspect::{Inspector, render};
use zephr_core::source::framer::FramerOptions;
use zephr_engine::input::open_input;

use crate::cli::InspectArgs;

pub fn run(args: &InspectArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let inputs = super::parse_inputs(&args.inputs)?;
    let progress = Progress::new(ProgressMode::detect(quiet));
    progress.phase("Reading the export...");
    let opts = FramerOptions {
        max_item_bytes: args.max_item_bytes,
        ..FramerOptions::default()
    };
    let mut inspector = Inspector::new(args.max_keys as usize);
    let counter = Arc::new(AtomicU64::new(0));
    for spec in &inputs {
        let reader = open_input(spec, counter.clone())?;
        inspector.read(reader, spec.display_name(), opts)?;
    }
    progress.clear();
    let report = inspector.finish(args.inputs.clone());
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        json
    } else {
        render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
