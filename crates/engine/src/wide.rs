//! `--wide-attributes`: one `users` column per attribute key, next to the long `attributes`
//! table (which stays as it is).
//!
//! The columns come from Zephr's user schema (`GET /v3/schema/users`, a JSON array of fields
//! with a `slug` and an `input-type`), or, without one, from a first pass over the input that
//! collects every attribute key in the order they first appear (`discover_keys`).
//! Types follow the schema's input types (`column_type_for`); discovered keys are strings.
//! Names are `attr_` + the key with every character outside `[A-Za-z0-9_]` replaced by `_`,
//! made unique case-insensitively with `_2`, `_3`, ... (see [`zephr_core::naming`]).
//!
//! A value that does not fit its column's type (`"soon"` in a date column, an object in a
//! number column) is left NULL in the wide column and counted; its exact text is still in the
//! `attributes` table, so nothing is lost and the run does not stop over a form field. When
//! a key appears twice in one item's attributes, the last value fills the wide column.

use std::collections::HashSet;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

use crate::input::{InputSpec, open_input};
use zephr_api::{Client, FetchError};
use zephr_core::error::InputError;
use zephr_core::flatten::decode::decode;
use zephr_core::flatten::item::Item;
use zephr_core::source::drive::{Batches, Driven, Input, drive};
use zephr_core::source::framer::{FramerOptions, RawBatch};

// The columns themselves live with the flattener, which fills them (their public home).
use zephr_core::flatten::wide_columns::{SchemaField, WideColumns};

/// Where the Admin API serves the user schema.
pub const USER_SCHEMA_PATH: &str = "/v3/schema/users";

/// At most this many keys are collected by the first pass; more is refused (a table that wide
/// is rarely what anyone wants, and BigQuery stops at 10,000 columns).
pub const MAX_DISCOVERED_KEYS: usize = 2000;

/// The user schema or the first pass could not give the columns.
#[derive(Debug, thiserror::Error)]
pub enum WideError {
    /// The user schema is not the JSON that `GET /v3/schema/users` returns.
    #[error("user schema {name}: {problem}")]
    Schema {
        /// The schema's file name, or `GET /v3/schema/users` when downloaded.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The first pass found more than [`MAX_DISCOVERED_KEYS`] keys.
    #[error(
        "more than {MAX_DISCOVERED_KEYS} distinct attribute keys in the input; give a user \
         schema to choose the columns"
    )]
    TooManyKeys,
    /// The first pass could not read an input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The first pass reads every input twice, and this one can be read only once.
    #[error(
        "finding the attribute keys reads the input twice, and {input} can be read only once; \
         save it to a file first, or give a user schema"
    )]
    ReadOnce {
        /// The input's name in messages (`<stdin>`, a path that is not a regular file).
        input: Arc<str>,
    },
    /// The user schema could not be downloaded.
    #[error("cannot download the user schema (GET {USER_SCHEMA_PATH})")]
    Download(#[source] FetchError),
    /// The first pass's worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    Threads(String),
}

/// Parses the JSON that `GET /v3/schema/users` returns: an array of field objects with a
/// `slug` (required) and an `input-type`; other members are ignored. An object holding the
/// array under `results` is accepted too. A slug listed twice gives one column.
pub fn parse_user_schema(bytes: &[u8], name: &str) -> Result<Vec<SchemaField>, WideError> {
    let problem = |problem: String| WideError::Schema {
        name: name.to_string(),
        problem,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        problem(format!(
            "not valid JSON ({e}); expected the array that GET /v3/schema/users returns"
        ))
    })?;
    let array = match &value {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("results") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(problem(
                    "expected a JSON array of fields (as GET /v3/schema/users returns), found an \
                     object without a `results` array"
                        .into(),
                ));
            }
        },
        _ => return Err(problem("expected a JSON array of fields".into())),
    };
    let mut fields = Vec::new();
    let mut seen = HashSet::new();
    for (i, field) in array.iter().enumerate() {
        let Some(object) = field.as_object() else {
            return Err(problem(format!("field {i} is not an object")));
        };
        let slug = match object.get("slug") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(problem(format!("field {i} has no `slug` string"))),
        };
        let input_type = ["input-type", "input_type", "inputType"]
            .iter()
            .find_map(|k| object.get(*k))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if seen.insert(slug.clone()) {
            fields.push(SchemaField { slug, input_type });
        }
    }
    Ok(fields)
}

/// Refuses inputs that cannot be read twice (stdin, pipes), before the first pass.
pub fn check_rereadable(inputs: &[InputSpec]) -> Result<(), WideError> {
    for input in inputs {
        let readable_twice = match input {
            InputSpec::Stdin => false,
            InputSpec::Object(_) => true,
            InputSpec::Path(path) => std::fs::metadata(path).map_or(true, |m| m.is_file()),
        };
        if !readable_twice {
            return Err(WideError::ReadOnce {
                input: input.display_name(),
            });
        }
    }
    Ok(())
}

/// The first pass over `inputs` on `threads` workers: a string column for every attribute
/// key, in the order keys first appear (`discover_keys`).
pub fn discover_columns(
    inputs: &[InputSpec],
    framer: FramerOptions,
    threads: usize,
) -> Result<WideColumns, WideError> {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sources = Vec::new();
    for spec in inputs {
        sources.push((spec.display_name(), open_input(spec, counter.clone())?));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| WideError::Threads(e.to_string()))?;
    let keys = pool.install(|| discover_keys(sources, framer))?;
    Ok(WideColumns::from_keys(keys, &users_base()))
}

/// The columns a user schema gives.
pub fn schema_columns(fields: &[SchemaField]) -> WideColumns {
    WideColumns::from_schema(fields, &users_base())
}

/// `GET /v3/schema/users`: the tenant's user schema, parsed.
pub fn download_user_schema(client: &Client) -> Result<Vec<SchemaField>, WideError> {
    let body = client
        .fetch_page(USER_SCHEMA_PATH, "")
        .map_err(WideError::Download)?;
    parse_user_schema(&body, &format!("GET {USER_SCHEMA_PATH}"))
}

/// The base columns of `users`, which wide names must not collide with.
fn users_base() -> Vec<&'static str> {
    zephr_core::schema::Table::Users.def().column_names()
}

/// The first pass: every attribute key of the inputs, in the order keys first appear.
///
/// `sources` are the inputs, opened again from their start (decompressed), with their names
/// for messages. Items are framed as in the real run and decoded by the same
/// decoder, in parallel per batch; items that fail to decode are passed over here (the second
/// pass reports them under `--on-error`), while broken framing stops the run as it would
/// later anyway.
pub(crate) fn discover_keys(
    sources: Vec<(Arc<str>, Box<dyn std::io::Read + Send>)>,
    opts: FramerOptions,
) -> Result<Vec<String>, WideError> {
    /// The keys so far, in first-seen order; `too_many` once past the limit.
    struct Discovery {
        order: Vec<String>,
        seen: HashSet<String>,
        too_many: bool,
    }
    impl Batches for Discovery {
        fn take(&mut self, batch: RawBatch) -> bool {
            for key in batch_keys(&batch) {
                if !self.seen.contains(&key) {
                    if self.order.len() == MAX_DISCOVERED_KEYS {
                        self.too_many = true;
                        return false;
                    }
                    self.seen.insert(key.clone());
                    self.order.push(key);
                }
            }
            true
        }
    }
    let mut discovery = Discovery {
        order: Vec::new(),
        seen: HashSet::new(),
        too_many: false,
    };
    let inputs = sources
        .into_iter()
        .map(|(name, reader)| Ok(Input { name, reader }));
    match drive(inputs, opts, 1, &mut discovery) {
        Driven::Failed(e) => Err(e.into()),
        _ if discovery.too_many => Err(WideError::TooManyKeys),
        _ => Ok(discovery.order),
    }
}

/// The distinct attribute keys of a batch in first-seen order.
fn batch_keys(batch: &RawBatch) -> Vec<String> {
    const CHUNK: usize = 256;
    let chunks: Vec<Vec<String>> = (0..batch.items.len())
        .collect::<Vec<_>>()
        .par_chunks(CHUNK)
        .map(|indexes| {
            let mut seen = HashSet::new();
            let mut keys = Vec::new();
            for &index in indexes {
                let Ok(text) = std::str::from_utf8(batch.item_bytes(index)) else {
                    continue;
                };
                let mut item = Item::default();
                if decode(text, &mut item).is_err() {
                    continue;
                }
                for (key, _) in &item.attributes {
                    if !seen.contains(key.as_ref()) {
                        seen.insert(key.to_string());
                        keys.push(key.to_string());
                    }
                }
            }
            keys
        })
        .collect();
    chunks.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zephr_core::schema::ColumnType;

    #[test]
    fn parses_zephr_user_schema() {
        let json = br#"[{"slug":"first-name","input-type":"text","label":"First"},
            {"slug":"age","input-type":"number"},{"slug":"newsletter","input-type":"checkbox"},
            {"slug":"dob","input-type":"date"},{"slug":"seen","input-type":"datetime"},
            {"slug":"age","input-type":"text"},{"slug":"notes"}]"#;
        let fields = parse_user_schema(json, "s.json").unwrap();
        assert_eq!(fields.len(), 6);
        let wide = WideColumns::from_schema(&fields, &["user_id"]);
        let got: Vec<(&str, ColumnType)> = wide
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.column_type))
            .collect();
        assert_eq!(
            got,
            [
                ("attr_first_name", ColumnType::String),
                ("attr_age", ColumnType::Float64),
                ("attr_newsletter", ColumnType::Boolean),
                ("attr_dob", ColumnType::Date),
                ("attr_seen", ColumnType::Timestamp),
                ("attr_notes", ColumnType::String),
            ]
        );
        assert!(parse_user_schema(b"{}", "s.json").is_err());
        assert!(parse_user_schema(br#"[{"label":"x"}]"#, "s.json").is_err());
        let wrapped = parse_user_schema(br#"{"results":[{"slug":"a"}]}"#, "s").unwrap();
        assert_eq!(wrapped[0].slug, "a");
    }
}
