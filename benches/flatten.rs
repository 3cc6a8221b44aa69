//! The worker stage: `RawBatch` → `FlatBatch` with `flatten_batch`, on one thread (one rayon
//! worker). Measured for CSV only, Parquet (Arrow builders) only, and both, so the cost of
//! each encoding shows separately; the pipeline runs this on every core at once.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zephr_core::flatten::flatten_batch;

fn flatten(c: &mut Criterion) {
    let data = common::export();
    let batches = common::frame(&data);
    let mut group = c.benchmark_group("flatten");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for (name, csv, parquet) in [
        ("csv", true, false),
        ("parquet", false, true),
        ("csv+parquet", true, true),
    ] {
        let opts = common::options(csv, parquet);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut rows = 0usize;
                for batch in &batches {
                    let flat = flatten_batch(batch, &opts).expect("flattens");
                    rows += flat.tables.iter().map(|t| t.rows).sum::<usize>();
                    black_box(flat);
                }
                rows
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = flatten
}
criterion_main!(benches);
