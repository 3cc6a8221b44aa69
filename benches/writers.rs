//! The writer stage: pre-built `ColumnBatch`es → files, with the real `CsvWriter` and
//! `ParquetWriter` into a scratch directory, set up as `convert` sets them up (default
//! options, the schema's dictionary columns).
//!
//! Each table has its own writer thread in the pipeline, so the per-table figures say whether
//! one writer keeps up with the workers; `all_tables` is the sum of the three, as a single
//! core would have to do it. Throughput is in bytes of input JSON, like the other benches.
//! `finish` (footer, flush and fsync) is part of each iteration, as it is part of a run.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zephr_core::schema::Table;
use zephr_core::table::CsvDialect;
use zephr_dest::StagedFile;
use zephr_dest::local::LocalFile;
use zephr_sink::csv::CsvWriter;
use zephr_sink::parquet::{ParquetOptions, ParquetWriter};
use zephr_sink::{CreateFile, TableWriter, dest_error};

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Parquet,
}

/// Creates `dir/stem-partN.ext` (removing an earlier one) as the local destination's staged
/// files are created: hashed and synced behind the writer.
fn creator(dir: &Path, stem: &str, ext: &str) -> CreateFile {
    let (dir, stem, ext) = (dir.to_path_buf(), stem.to_owned(), ext.to_owned());
    Box::new(move |part| {
        let name = format!("{stem}-{part}.{ext}");
        let path: PathBuf = dir.join(&name);
        let _ = std::fs::remove_file(&path);
        let file = LocalFile::create_new(&path, &name).map_err(|e| dest_error(&name, e))?;
        Ok((Box::new(file) as Box<dyn StagedFile>, name))
    })
}

fn writer(format: Format, table: Table, dir: &Path) -> Box<dyn TableWriter> {
    let def = table.def();
    match format {
        Format::Csv => {
            let columns: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
            Box::new(
                CsvWriter::new(
                    &columns,
                    CsvDialect::Plain,
                    None,
                    creator(dir, table.name(), "csv"),
                )
                .expect("opens"),
            )
        }
        Format::Parquet => Box::new(
            ParquetWriter::new(
                def.arrow_schema(),
                &def.dictionary_columns(),
                ParquetOptions::default(),
                creator(dir, table.name(), "parquet"),
            )
            .expect("opens"),
        ),
    }
}

fn writers(c: &mut Criterion) {
    let data = common::export();
    let batches = common::frame(&data);
    let dir = tempfile::tempdir().expect("a scratch directory");
    for (group_name, format, csv, parquet) in [
        ("writers_csv", Format::Csv, true, false),
        ("writers_parquet", Format::Parquet, false, true),
    ] {
        let flat = common::flatten(&batches, &common::options(csv, parquet));
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Bytes(data.len() as u64));
        let cases: [(&str, &[Table]); 4] = [
            ("users", &[Table::Users]),
            ("grants", &[Table::Grants]),
            ("attributes", &[Table::Attributes]),
            ("all_tables", &Table::ALL),
        ];
        for (name, tables) in cases {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let mut bytes = 0u64;
                    for &table in tables {
                        let mut w = writer(format, table, dir.path());
                        for batch in &flat {
                            w.write(&batch.tables[table as usize]).expect("writes");
                        }
                        let files = w.finish().expect("finishes");
                        bytes += files.iter().map(|f| f.bytes).sum::<u64>();
                    }
                    black_box(bytes)
                });
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = writers
}
criterion_main!(benches);
