//! `--no-paginate`: the whole export as one array, streamed straight into the pipeline.
//!
//! Only the status is retried: once the body is being read, a break in it fails the run
//! (nothing is kept), since the rows before the break are already in the pipeline. The size
//! from `Content-Length` gives progress its total. `--save-raw` copies the bytes as they are
//! read, into a temporary file that is renamed only after the tables are in place.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use anyhow::Context;
use zephr_etl::fetch::state_file::iso_utc;
use zephr_etl::fetch::{Client, USER_EXPORT_PATH};
use zephr_etl::pipeline::{Source, Sources};
use zephr_etl::progress::Progress;
use zephr_etl::source::decompress;

use super::{Fetched, Plan};
use crate::commands::export::ExportConfig;

pub(super) fn run(
    config: ExportConfig,
    plan: &Plan,
    client: &Client,
    progress: &Progress,
    started: SystemTime,
) -> anyhow::Result<Fetched> {
    // Neither `page` nor `rpp`: that is what asks Zephr for the single array.
    let mut query = plan.query.clone();
    query.rpp = None;
    let stream = client.open_stream(USER_EXPORT_PATH, &query.to_query(None))?;
    let total = stream.content_length();
    let raw = match &plan.save_raw {
        Some(path) => Some((super::temp_next_to(path)?, path.to_path_buf())),
        None => None,
    };
    let name: Arc<str> = Arc::from(format!("GET {USER_EXPORT_PATH}"));
    let reader: Box<dyn Read + Send> = match &raw {
        Some((temp, path)) => Box::new(Tee {
            inner: stream,
            copy: temp
                .as_file()
                .try_clone()
                .context("cannot open the --save-raw copy")?,
            path: path.clone(),
        }),
        None => Box::new(stream),
    };
    let reader = decompress(reader, &name)?;
    let sources: Sources = Box::new(std::iter::once(Ok(Source { name, reader })));
    let counter = client.bytes_counter();
    let stats = config.run(sources, progress, &counter, total)?;
    if let Some((temp, path)) = &raw {
        temp.as_file()
            .sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let manifest = config.commit_run(&stats)?;
    if let Some((temp, path)) = raw {
        temp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("the tables were written, but not {}", path.display()))?;
    }
    Ok(Fetched {
        stats,
        bytes: counter.load(Ordering::Relaxed),
        started_at: iso_utc(started),
        manifest,
    })
}

/// Copies what is read into a file.
struct Tee<R> {
    inner: R,
    copy: File,
    path: PathBuf,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n]).map_err(|e| {
            io::Error::other(format!(
                "cannot write the --save-raw copy {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(n)
    }
}
