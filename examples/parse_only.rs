//! The parse-only baseline of `benches/compare.sh`: serde_json reads an export and ignores
//! every value (`serde::de::IgnoredAny`), on one thread. Issue 4 wants `convert` at a third of
//! this speed or better.
//!
//! Usage: `parse_only FILE [stream|slice]`; prints the bytes, seconds and MB/s.
//! - `stream` (the default) feeds the file through a buffered reader to
//!   `serde_json::Deserializer::from_reader`, in bounded memory, like `convert` reads.
//! - `slice` reads the whole file into memory first and parses it with `from_slice`.
//!   serde_json's reader path handles one byte at a time and is several times slower than its
//!   slice path, so `slice` is the stricter baseline (the one the "about 800 MB/s"
//!   describes); the time printed covers reading and parsing both.

use std::fs::File;
use std::io::{BufReader, Read};
use std::process::ExitCode;
use std::time::Instant;

use serde::Deserialize;
use serde::de::IgnoredAny;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: parse_only FILE [stream|slice]");
        return ExitCode::from(2);
    };
    let slice = match args.next().as_ref().and_then(|m| m.to_str()) {
        None | Some("stream") => false,
        Some("slice") => true,
        Some(other) => {
            eprintln!("unknown mode {other}: expected stream or slice");
            return ExitCode::from(2);
        }
    };
    let name = path.to_string_lossy().into_owned();
    let start = Instant::now();
    let (bytes, outcome) = match File::open(&path) {
        Err(e) => {
            eprintln!("cannot open {name}: {e}");
            return ExitCode::FAILURE;
        }
        Ok(file) if slice => {
            let mut data = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
            if let Err(e) = BufReader::new(file).read_to_end(&mut data) {
                eprintln!("cannot read {name}: {e}");
                return ExitCode::FAILURE;
            }
            let mut de = serde_json::Deserializer::from_slice(&data);
            let outcome = IgnoredAny::deserialize(&mut de).and_then(|_| de.end());
            (data.len() as u64, outcome)
        }
        Ok(file) => {
            let bytes = file.metadata().map_or(0, |m| m.len());
            let reader = BufReader::with_capacity(1 << 20, file);
            let mut de = serde_json::Deserializer::from_reader(reader);
            // `end` also checks that nothing but whitespace follows the export's value.
            let outcome = IgnoredAny::deserialize(&mut de).and_then(|_| de.end());
            (bytes, outcome)
        }
    };
    let secs = start.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            let mode = if slice { "slice" } else { "stream" };
            println!(
                "{mode}: {bytes} bytes in {secs:.3} s: {:.1} MB/s",
                bytes as f64 / secs / 1e6
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: not valid JSON: {e}");
            ExitCode::FAILURE
        }
    }
}
