//! Sources of export bytes: files, stdin, objects in a bucket (`s3://`, `gs://`, `az://`,
//! streamed), and (in `fetch`) HTTP responses.
//!
//! Compression is recognised by magic bytes, never by file name, because exports get renamed
//! and piped. Every source counts the raw bytes it hands out, so progress can show how far
//! through a file or a download the run is.

pub mod drive;
pub mod framer;
pub mod scan;
pub mod syntax;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cloud::reader::ObjectReader;
use crate::cloud::{CloudError, CloudUrl, Location};
use crate::error::InputError;

/// One input as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    Stdin,
    Path(PathBuf),
    /// An object in a bucket, read as a stream.
    Object(CloudUrl),
}

impl InputSpec {
    /// `-` is stdin; `s3://`, `gs://`, `az://` (and the other spellings [`crate::cloud::parse`]
    /// knows) an object; anything else that looks like a URL an error; the rest a path.
    pub fn parse(arg: &str) -> Result<InputSpec, CloudError> {
        if arg == "-" {
            return Ok(InputSpec::Stdin);
        }
        Ok(match crate::cloud::parse(arg)? {
            Location::Local(path) => InputSpec::Path(path),
            Location::Cloud(url) => InputSpec::Object(url),
        })
    }

    /// Every argument, or the first that is a bad URL.
    pub fn parse_all<S: AsRef<str>>(args: &[S]) -> Result<Vec<InputSpec>, CloudError> {
        args.iter().map(|a| InputSpec::parse(a.as_ref())).collect()
    }

    /// The name used in messages.
    pub fn display_name(&self) -> Arc<str> {
        match self {
            InputSpec::Stdin => Arc::from("<stdin>"),
            InputSpec::Path(p) => Arc::from(p.display().to_string()),
            InputSpec::Object(url) => Arc::from(url.display()),
        }
    }

    /// The size on disk, when known (for progress).
    pub fn size(&self) -> Option<u64> {
        match self {
            // An object's size would cost a request before the run starts; progress shows
            // bytes read instead.
            InputSpec::Stdin | InputSpec::Object(_) => None,
            InputSpec::Path(p) => std::fs::metadata(p).ok().map(|m| m.len()),
        }
    }
}

/// Counts bytes read through it into a shared counter.
pub struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R> Counting<R> {
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
    None,
    Gzip,
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

/// Every input, opened lazily in order as the run reaches it, counting bytes read into
/// `counter` (for progress).
pub fn open_all(inputs: Vec<InputSpec>, counter: Arc<AtomicU64>) -> drive::Sources {
    Box::new(inputs.into_iter().map(move |spec| {
        Ok(drive::Input {
            reader: open_input(&spec, counter.clone())?,
            name: spec.display_name(),
        })
    }))
}

/// Opens an input for reading, decompressing as needed; raw bytes read are added to `counter`.
pub fn open_input(
    spec: &InputSpec,
    counter: Arc<AtomicU64>,
) -> Result<Box<dyn Read + Send>, InputError> {
    let name = spec.display_name();
    match spec {
        InputSpec::Stdin => decompress(Counting::new(io::stdin(), counter), &name),
        InputSpec::Path(path) => {
            let file = open_file(path).map_err(|source| InputError::Io {
                input: name.clone(),
                source,
            })?;
            decompress(Counting::new(file, counter), &name)
        }
        InputSpec::Object(url) => {
            let reader = ObjectReader::open(url).map_err(|e| InputError::Io {
                input: name.clone(),
                source: io::Error::other(e),
            })?;
            decompress(Counting::new(reader, counter), &name)
        }
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::other("is a directory, not an export file"));
    }
    Ok(file)
}
