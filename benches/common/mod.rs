//! Shared set-up of the criterion benches: one synthetic export, framed and flattened once.
//!
//! Every bench reports `Throughput::Bytes` of the export's JSON, whatever stage it measures,
//! so the figures of the framer, the flattener and the writers compare directly with each
//! other and with the end-to-end MB/s of `benches/compare.sh`.

// Each bench binary includes this file and uses a different part of it.
#![allow(dead_code)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use zephr_core::flatten::{FlatBatch, FlattenOptions, OnError, flatten_batch};
use zephr_core::generate::{GenerateSpec, write_export};
use zephr_core::source::framer::{Framer, FramerOptions, RawBatch};
use zephr_core::table::{CsvDialect, Formats};

/// Users in the bench export: about 5.4 MB of JSON, large enough to span several batches of
/// the framer's default size, small enough that the measuring of all benches stays near a
/// minute (the release build before it takes longer: docs/performance.md).
pub const USERS: u64 = 5_000;

/// Criterion settings that keep every bench short: 10 samples, about 3 s per bench.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// The bench export: `generate --users 5000 --grants --attributes --seed 1`.
pub fn export() -> Vec<u8> {
    let spec = GenerateSpec {
        users: USERS,
        seed: 1,
        grants: true,
        attributes: true,
    };
    let mut out = Vec::new();
    write_export(&spec, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Frames `data` with the framer's default options, as `convert` does.
pub fn frame(data: &[u8]) -> Vec<RawBatch> {
    let mut framer = Framer::new(
        Cursor::new(data),
        Arc::from("bench"),
        FramerOptions::default(),
        1,
    );
    let mut batches = Vec::new();
    loop {
        let mut batch = RawBatch::default();
        let more = framer
            .next_batch(&mut batch)
            .expect("the bench export frames");
        if !batch.items.is_empty() {
            batches.push(batch);
        }
        if !more {
            return batches;
        }
    }
}

/// Flattening options for `formats`, with the defaults of `convert` otherwise.
pub fn options(csv: bool, parquet: bool) -> FlattenOptions {
    FlattenOptions {
        formats: Formats {
            csv,
            parquet,
            xlsx: false,
        },
        dialect: CsvDialect::Plain,
        on_error: OnError::Fail,
        users: None,
    }
}

/// Flattens every batch, one after another on this thread.
pub fn flatten(batches: &[RawBatch], opts: &FlattenOptions) -> Vec<FlatBatch> {
    batches
        .iter()
        .map(|b| flatten_batch(b, opts).expect("the bench export flattens"))
        .collect()
}
