//! Typed errors of the library, each carrying the place in the input it is about.
//!
//! A user with a 30 GB export needs to find the byte that broke a run, so every input error
//! names the input, the byte offset, the line and the column, and says what was expected there
//! and what to do. The binary adds its own context with `anyhow` on top.

use std::fmt;
use std::sync::Arc;

/// A place in one input: what a user needs to open the file at the right spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input's name as given on the command line (`-` shows as `<stdin>`).
    pub input: Arc<str>,
    /// Byte offset from the start of the (decompressed) input, 0-based.
    pub offset: u64,
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in bytes.
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: byte {}, line {}, column {}",
            self.input, self.offset, self.line, self.column
        )
    }
}

/// The input cannot be read as an export at all: the run must stop.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input could not be opened, or its first bytes (which tell its compression) read.
    #[error("{input}: cannot read: {source}")]
    Io {
        /// The input's name as given on the command line (`-` shows as `<stdin>`).
        input: Arc<str>,
        /// What reading reported.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a valid export there: broken JSON, a cut-off document, invalid UTF-8.
    #[error("{location}: {problem}")]
    Syntax {
        /// The offending byte.
        location: Location,
        /// What was found and what was expected there.
        problem: String,
    },
    /// A part of the export the run cannot do without (an envelope member, not an item) is
    /// larger than the item size limit (the framer's `max_item_bytes`).
    #[error(
        "{location}: {what} is {size} bytes, larger than the item size limit ({limit} bytes); \
         raise the limit if the export is genuine"
    )]
    TooLarge {
        /// Where the part starts.
        location: Location,
        /// What is too large (`the envelope's "meta"`).
        what: String,
        /// The part's size in bytes.
        size: u64,
        /// The item size limit, in bytes.
        limit: usize,
    },
    /// Reading stopped part way: a corrupt or cut-off compressed file, a dropped connection.
    /// The location is where the data stopped.
    #[error("{location}: {source}")]
    Read {
        /// Where the data stopped.
        location: Location,
        /// What the reader or decompressor reported.
        #[source]
        source: std::io::Error,
    },
}

/// An item that is valid JSON but cannot be mapped faithfully (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadItem {
    /// 1-based number of the item in the export (across all inputs).
    pub number: u64,
    /// Where the item starts.
    pub location: Location,
    /// The item's user id, when it has a usable one.
    pub user_id: Option<String>,
    /// The path of the offending field (`user.registered`, `grants.results[2].startTime`).
    pub field: Option<String>,
    /// What is wrong.
    pub problem: ItemProblem,
}

/// Why an item is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemProblem {
    /// Larger than the item size limit: its bytes were read past, never held.
    TooLarge {
        /// The item's size in bytes.
        size: u64,
    },
    /// A field that cannot be mapped faithfully: what is wrong and, where there is one, the fix.
    Field(String),
}

impl fmt::Display for ItemProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemProblem::TooLarge { size } => write!(
                f,
                "the item is {size} bytes, larger than the item size limit; raise the limit if \
                 the item is genuine"
            ),
            ItemProblem::Field(problem) => f.write_str(problem),
        }
    }
}

impl fmt::Display for BadItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item {} ({}", self.number, self.location)?;
        if let Some(id) = &self.user_id {
            write!(f, ", user_id {id}")?;
        }
        write!(f, ")")?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for BadItem {}
