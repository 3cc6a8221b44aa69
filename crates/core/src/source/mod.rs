//! Export bytes on their way in: counted, decompressed, framed into raw items. Where the
//! bytes come from (files, stdin, buckets, HTTP) is the engine's business.
//!
//! Compression is recognised by magic bytes, never by file name, because exports get renamed
//! and piped. Every source counts the raw bytes it hands out, so progress can show how far
//! through a file or a download the run is.

pub mod drive;
pub mod framer;
pub mod scan;
pub(crate) mod syntax;

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::InputError;

/// Counts bytes read through it into a shared counter.
pub struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R> Counting<R> {
    /// Reads from `inner`, adding every byte read to `counter` (which it does not reset).
    pub fn new(inner: R, counter: Arc<AtomicU64>) -> Self {
        Counting { inner, counter }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The compression of a stream, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip, possibly several members back to back.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Recognises gzip (`1f 8b`) and zstd (`28 b5 2f fd`) frames.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub fn decompress<R: Read + Send + 'static>(
    reader: R,
    name: &Arc<str>,
) -> Result<Box<dyn Read + Send>, InputError> {
    let mut buffered = BufReader::with_capacity(256 << 10, reader);
    let io_error = |source| InputError::Io {
        input: name.clone(),
        source,
    };
    // A head shorter than a magic number simply is not compressed.
    let head = buffered.fill_buf().map_err(io_error)?;
    Ok(match Compression::sniff(head) {
        Compression::None => Box::new(buffered),
        // Multi-member gzip: `cat a.gz b.gz` is a valid gzip stream of both.
        Compression::Gzip => Box::new(Decoding {
            inner: flate2::bufread::MultiGzDecoder::new(buffered),
            format: "gzip",
        }),
        Compression::Zstd => Box::new(Decoding {
            inner: zstd::stream::read::Decoder::with_buffer(buffered).map_err(io_error)?,
            format: "zstd",
        }),
    })
}

/// A decompressor whose errors say what failed: "incomplete deflate stream" alone does not
/// tell the user that their gzip file is cut off.
struct Decoding<R> {
    inner: R,
    format: &'static str,
}

impl<R: Read> Read for Decoding<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            io::Error::new(
                e.kind(),
                format!(
                    "cannot decompress the {} data ({e}); the file is truncated or corrupt: \
                     download it again",
                    self.format
                ),
            )
        })
    }
}
