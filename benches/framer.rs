//! The reader stage: export bytes → `RawBatch`es, on one thread (the reader thread of the
//! pipeline). The framer only scans structure, so it must run far faster than the workers
//! parse, or it caps the whole pipeline however many cores there are.

mod common;

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zephr_core::source::framer::{Framer, FramerOptions, RawBatch};

fn framer(c: &mut Criterion) {
    let data = common::export();
    let mut group = c.benchmark_group("framer");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("json_array_5k_users", |b| {
        b.iter(|| {
            let mut framer = Framer::new(
                Cursor::new(data.as_slice()),
                Arc::from("bench"),
                FramerOptions::default(),
                1,
            );
            let mut items = 0usize;
            loop {
                // A fresh batch per call, as the pipeline's reader thread does.
                let mut batch = RawBatch::default();
                let more = framer.next_batch(&mut batch).expect("frames");
                items += batch.items.len();
                black_box(&batch);
                if !more {
                    break;
                }
            }
            assert_eq!(items as u64, common::USERS);
            items
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = framer
}
criterion_main!(benches);
