//! Typed errors of the library, each carrying the place in the input it is about.
//!
//! A user with a 30 GB export needs to find the byte that broke a run, so every input error
//! names the input, the byte offset, the line and the column, and says what was expected there
//! and what to do. The binary adds its own context with `anyhow` on top.

use std::fmt;
use std::sync::Arc;

/// An error and its causes on one line, `outer: inner: ...`: how an error is shown where it
/// becomes text (a message, a notice, a field of another error).
///
/// Each error of this workspace owns only its own words and hands the rest to
/// [`std::error::Error::source`], so `Display` alone says "cannot write users.csv" and `Chain`
/// says why. Some third-party errors quote their own source (`db error: ERROR: ...`): a cause
/// whose text the error before it already ends with, after `: `, is left out.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            let quoted = shown == text
                || shown
                    .strip_suffix(text.as_str())
                    .is_some_and(|head| head.ends_with(": "));
            if !quoted {
                write!(f, ": {text}")?;
            }
            shown = text;
            cause = error.source();
        }
        Ok(())
    }
}

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
    #[error("{input}: cannot read")]
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
    #[error("{location}")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_each_cause_once() {
        let error = InputError::Io {
            input: "export.json".into(),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(error.to_string(), "export.json: cannot read");
        assert_eq!(
            Chain(&error).to_string(),
            "export.json: cannot read: disk on fire"
        );
        // A third-party error that quotes its own source is not repeated.
        #[derive(Debug)]
        struct Quoting(std::io::Error);
        impl fmt::Display for Quoting {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "request failed: {}", self.0)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let quoting = Quoting(std::io::Error::other("timed out"));
        assert_eq!(Chain(&quoting).to_string(), "request failed: timed out");
        // Only a quote after `: ` counts: "page 4" after "... from page 4" is its own text.
        #[derive(Debug, thiserror::Error)]
        #[error("continue from page 4")]
        struct Outer(#[source] Page);
        #[derive(Debug, thiserror::Error)]
        #[error("page 4")]
        struct Page(#[source] std::io::Error);
        let outer = Outer(Page(std::io::Error::other("HTTP 503")));
        assert_eq!(
            Chain(&outer).to_string(),
            "continue from page 4: page 4: HTTP 503"
        );
    }
}
