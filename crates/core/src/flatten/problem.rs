//! Why an item did not decode, as kinds that callers match on and that word themselves.
//!
//! The decoder stops at the first problem. Broken JSON is only flagged ([`DecodeError::Broken`]):
//! the caller runs the exact syntax check (`source::syntax`) over the item, which names the
//! byte and what was expected. What the grammar allows but serde_json refuses, a number out of
//! its range where a value is described, comes with its own place and words
//! ([`DecodeError::Invalid`]). Everything else is valid JSON that cannot be mapped, a key
//! holding half a surrogate pair among them: a [`Problem`] at a [`FieldPath`], which becomes a
//! bad item.

use std::fmt;

use super::item::FieldPath;

/// Why [`super::decode::decode`] refused an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The item is not valid JSON; the syntax check says where and why.
    Broken,
    /// JSON that serde_json, the reference for what a JSON text means, refuses although the
    /// grammar accepts it: `problem` (its wording) at byte `offset` of the item.
    Invalid {
        /// Byte offset in the item of the refused value.
        offset: usize,
        /// serde_json's wording of what is wrong.
        problem: String,
    },
    /// Valid JSON that cannot be mapped faithfully: a bad item.
    Bad {
        /// The field the problem is in.
        path: FieldPath,
        /// What is wrong there.
        problem: Problem,
    },
}

/// What is wrong with a bad item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A value of the wrong kind.
    WrongType {
        /// What the field should have held.
        expected: Expected,
        /// What it held instead.
        found: Found,
    },
    /// A string that is not a timestamp (the string, unescaped).
    NotATimestamp(String),
    /// `user.user_id` is null.
    NullUserId,
    /// The user has no `user_id`.
    NoUserId,
    /// The item has no `user`.
    NoUser,
    /// A key of the object at the path holds half a UTF-16 surrogate pair (`\ud800` without
    /// its other half), so it is not text: `key` as written, without quotes, cut short.
    KeyNotUnicode {
        /// The key as written, without quotes, cut short.
        key: String,
    },
}

impl Problem {
    /// The field a message names for this problem at `path`: the path, and for a key that is
    /// not text, that key as written below it (`user.attributes.\ud800x`).
    pub fn field(&self, path: &FieldPath) -> Option<String> {
        match self {
            Problem::KeyNotUnicode { key } if path.is_empty() => Some(key.clone()),
            Problem::KeyNotUnicode { key } => Some(format!("{path}.{key}")),
            _ => (!path.is_empty()).then(|| path.to_string()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            Problem::NotATimestamp(text) => write!(
                f,
                "{text:?} is not a timestamp; expected ISO-8601 such as 2021-02-24T15:43:28Z or \
                 2022-06-01 00:00:00"
            ),
            Problem::NullUserId => f.write_str("user_id is null; every user row needs one"),
            Problem::NoUserId => {
                f.write_str("the item has no user.user_id; every user row needs one")
            }
            Problem::NoUser => f.write_str("the item has no `user` object"),
            Problem::KeyNotUnicode { .. } => f.write_str(
                "the key is not valid Unicode: it holds half a surrogate pair (a \\uD800 to \\uDFFF \
                 escape without its other half)",
            ),
        }
    }
}

/// What a field's value should have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The item itself.
    Item,
    /// `user`: an object.
    User,
    /// `user.identifiers`: an object or null.
    Identifiers,
    /// `user.attributes`: an object or null.
    Attributes,
    /// `grants`: an object with `results`, an array of grants, or null.
    Grants,
    /// `grants.results`: an array of grants or null.
    GrantsResults,
    /// One grant: an object.
    Grant,
    /// A string cell.
    Text,
    /// A boolean cell: `true`, `false` or null.
    Bool,
    /// An integer (`seq-no`).
    Integer,
    /// A timestamp cell given something other than a string.
    TimestampString,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Item => "the item to be an object with a `user`",
            Expected::User => "the user object",
            Expected::Identifiers => "an identifiers object or null",
            Expected::Attributes => "an attributes object or null",
            Expected::Grants => {
                "grants to be an object with `results`, an array of grants, or null"
            }
            Expected::GrantsResults => "grants.results to be an array of grants or null",
            Expected::Grant => "a grant object",
            Expected::Text => "text, a number or a boolean",
            Expected::Bool => "true, false or null",
            Expected::Integer => "an integer",
            Expected::TimestampString => "a timestamp string",
        })
    }
}

/// What a field's value was, in the words a message uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `null`.
    Null,
    /// `` `true` `` or `` `false` ``.
    Bool(bool),
    /// "the number 17", the number as serde_json reads it.
    Number(String),
    /// "the string \"x\"", the string unescaped and quoted.
    String(String),
    /// "an object".
    Object,
    /// "an array".
    Array,
    /// A fixed description: "a string", "boolean".
    Described(&'static str),
    /// "the string \"yes\"": a kind and the value as written (cut short).
    Written {
        /// The value's kind ("string", "number", ...).
        kind: &'static str,
        /// The value as written (a long one cut short).
        text: String,
    },
    /// A value as written, with nothing before it ("1.5", for an integer field).
    Bare(String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Null => f.write_str("null"),
            Found::Bool(b) => write!(f, "`{b}`"),
            Found::Number(n) => write!(f, "the number {n}"),
            Found::String(s) => write!(f, "the string {s:?}"),
            Found::Object => f.write_str("an object"),
            Found::Array => f.write_str("an array"),
            Found::Described(what) => f.write_str(what),
            Found::Written { kind, text } => write!(f, "the {kind} {text}"),
            Found::Bare(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_word_themselves() {
        let wrong = |expected, found| Problem::WrongType { expected, found }.to_string();
        assert_eq!(
            wrong(Expected::GrantsResults, Found::Object),
            "expected grants.results to be an array of grants or null, found an object"
        );
        assert_eq!(
            wrong(Expected::User, Found::Bool(true)),
            "expected the user object, found `true`"
        );
        assert_eq!(
            wrong(Expected::Grant, Found::String("a\"b".into())),
            "expected a grant object, found the string \"a\\\"b\""
        );
        assert_eq!(
            wrong(
                Expected::Bool,
                Found::Written {
                    kind: "string",
                    text: "\"yes\"".into()
                }
            ),
            "expected true, false or null, found the string \"yes\""
        );
        assert_eq!(
            Problem::NotATimestamp("never".into()).to_string(),
            "\"never\" is not a timestamp; expected ISO-8601 such as 2021-02-24T15:43:28Z or \
             2022-06-01 00:00:00"
        );
    }
}
