//! The inputs of a run as named on the command line: paths, stdin and objects in a bucket,
//! opened lazily in order, counted and decompressed.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use zephr_core::error::InputError;
use zephr_core::source::{Counting, decompress, drive};
use zephr_store::reader::ObjectReader;
use zephr_store::{CloudError, CloudUrl, Location};

/// One input as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// `-`: standard input.
    Stdin,
    /// A local file.
    Path(PathBuf),
    /// An object in a bucket, read as a stream.
    Object(CloudUrl),
}

impl InputSpec {
    /// `-` is stdin; `s3://`, `gs://`, `az://` (and the other spellings [`zephr_store::parse`]
    /// knows) an object; anything else that looks like a URL an error; the rest a path.
    pub fn parse(arg: &str) -> Result<InputSpec, CloudError> {
        if arg == "-" {
            return Ok(InputSpec::Stdin);
        }
        Ok(match zephr_store::parse(arg)? {
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
