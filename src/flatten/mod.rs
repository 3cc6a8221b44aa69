//! Flattening: a batch of raw items becomes one column batch per table.
//!
//! This is the work the rayon workers do in parallel. Each item is decoded completely
//! (`item.rs`) before its rows are emitted, so a bad item is either rejected whole or stops the
//! run; it never leaves part of its rows behind. Rows keep the order of the export.

pub mod extra;
mod fast;
pub mod item;
pub mod json;
pub mod timestamp;

use std::cell::RefCell;

use crate::error::{BadItem, InputError, Location};
use crate::extension::{self, UsersExtension};
use crate::schema::Table;
use crate::source::framer::RawBatch;
use crate::source::syntax::{self, SyntaxError, describe_byte};
use crate::table::{ColumnBatch, CsvDialect, Formats, TableBuilder, csv_text};
use item::{FieldPath, Item};
use json::{Leaf, compact};

/// What to do with a bad item (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the run at the first bad item.
    #[default]
    Fail,
    /// Leave it out of the tables and write it to `rejects.ndjson`.
    Skip,
}

/// How items are flattened.
#[derive(Debug, Clone, Copy)]
pub struct FlattenOptions {
    pub formats: Formats,
    pub dialect: CsvDialect,
    pub on_error: OnError,
    /// Wide attribute columns and hashed identifiers in `users` (see [`crate::extension`]).
    pub users: Option<&'static UsersExtension>,
}

/// A rejected item: why, and its bytes exactly as they were.
#[derive(Debug)]
pub struct Reject {
    pub bad: BadItem,
    /// `None` when the item was larger than `--max-item-bytes` and its bytes were not kept.
    pub raw: Option<Vec<u8>>,
}

/// The tables' rows from one batch of items.
#[derive(Debug)]
pub struct FlatBatch {
    /// One batch per table, in [`Table::ALL`] order.
    pub tables: Vec<ColumnBatch>,
    pub rejects: Vec<Reject>,
    pub items: u64,
    /// CSV cells the postgres dialect changed (a NUL replaced), in all tables.
    pub nul_replaced: u64,
}

/// Why a batch could not be flattened.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("bad item: {0}")]
    BadItem(BadItem),
}

thread_local! {
    /// Each worker keeps its table builders between batches: their buffers are then allocated
    /// at the size the last batch needed instead of growing from empty every time.
    static BUILDERS: RefCell<Vec<TableBuilder>> = const { RefCell::new(Vec::new()) };
}

/// Takes this worker's builders for the three tables, or makes new ones.
fn take_builders(opts: &FlattenOptions) -> Vec<TableBuilder> {
    let cached = BUILDERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let fits = cached.len() == 3
        && Table::ALL.iter().zip(&cached).all(|(t, b)| {
            b.fits(
                &extension::schema_of(*t, opts.users),
                opts.formats,
                opts.dialect,
            )
        });
    if fits {
        return cached;
    }
    Table::ALL
        .iter()
        .map(|t| {
            let (schema, types) = extension::layout(*t, opts.users);
            TableBuilder::new(schema, &types, opts.formats, opts.dialect)
        })
        .collect()
}

/// Flattens every item of `batch`.
pub fn flatten_batch(batch: &RawBatch, opts: &FlattenOptions) -> Result<FlatBatch, FlattenError> {
    let mut builders = take_builders(opts);
    let [users, grants, attributes] = &mut builders[..] else {
        unreachable!("take_builders returns one builder per table");
    };
    let mut rejects = Vec::new();
    // One UTF-8 check for the whole batch is much cheaper than serde_json checking every
    // string and raw value on its own. The items before a bad byte are still decoded first:
    // a problem in one of them comes earlier in the input and is the one to report.
    let (text, valid_up_to) = match std::str::from_utf8(&batch.data) {
        Ok(text) => (text, batch.data.len()),
        Err(e) => (
            std::str::from_utf8(&batch.data[..e.valid_up_to()]).unwrap_or_default(),
            e.valid_up_to(),
        ),
    };
    // One item, cleared between items, so its vectors are allocated once per batch.
    let mut item = Item::default();
    for (index, span) in batch.items.iter().enumerate() {
        // Items start and end on ASCII bytes in the input, except scalars of an NDJSON stream,
        // which can cut a character in two (`a\xc3 \xa9b`): `get` refuses such a cut.
        let Some(item_text) = text.get(span.start..span.end) else {
            let at = match std::str::from_utf8(batch.item_bytes(index)) {
                Err(e) if span.start + e.valid_up_to() < valid_up_to => {
                    span.start + e.valid_up_to()
                }
                _ => valid_up_to,
            };
            return Err(invalid_utf8(batch, at));
        };
        let bytes = item_text.as_bytes();
        item.clear();
        let mut path = FieldPath::default();
        let bad = if let Some(size) = span.too_large {
            BadItem {
                number: span.number,
                location: batch.location(index),
                user_id: None,
                field: None,
                problem: format!(
                    "the item is {size} bytes, more than --max-item-bytes allows; raise the \
                     limit if the item is genuine"
                ),
            }
        } else {
            let outcome = if bytes.first() == Some(&b'{') {
                item::decode(item_text, &mut item, &mut path)
            } else {
                Err(not_an_object(bytes))
            };
            let Err(e) = outcome else {
                emit(&item, opts.users, users, grants, attributes);
                continue;
            };
            // Decoding stops at the first problem, which may come before broken JSON further
            // on; broken JSON stops the run whatever --on-error says, so check the whole item.
            if let Err(broken) = syntax::check(bytes) {
                return Err(FlattenError::Input(broken_item(batch, index, &broken)));
            }
            if e.classify() != serde_json::error::Category::Data {
                return Err(FlattenError::Input(syntax_in_item(batch, index, &e)));
            }
            let known_id = item.user_id.as_deref().map(str::to_owned);
            BadItem {
                number: span.number,
                location: batch.location(index),
                user_id: known_id.or_else(|| user_id_of(bytes)),
                field: (!path.field.is_empty() || path.grant.is_some()).then(|| path.to_string()),
                problem: plain_message(&e.to_string()),
            }
        };
        match opts.on_error {
            OnError::Fail => return Err(FlattenError::BadItem(bad)),
            OnError::Skip => rejects.push(Reject {
                bad,
                raw: span.too_large.is_none().then(|| bytes.to_vec()),
            }),
        }
    }
    let nul_replaced = builders
        .iter_mut()
        .map(TableBuilder::take_nul_replaced)
        .sum();
    let tables = builders.iter_mut().map(TableBuilder::finish).collect();
    BUILDERS.with(|b| *b.borrow_mut() = builders);
    Ok(FlatBatch {
        tables,
        rejects,
        items: batch.items.len() as u64,
        nul_replaced,
    })
}

fn emit(
    item: &Item<'_>,
    ext: Option<&UsersExtension>,
    users: &mut TableBuilder,
    grants: &mut TableBuilder,
    attributes: &mut TableBuilder,
) {
    let user_id = item.user_id.as_deref().unwrap_or_default();
    let (email_address, username) = extension::identifiers(ext, item);
    // The user id repeats on every grant and attribute row: check its CSV form once.
    let plain_id = csv_text::is_plain(user_id, users.dialect());
    users.text(Some(user_id));
    users.text(email_address.as_deref());
    users.text(username.as_deref());
    users.boolean(item.email_verified);
    users.text(item.tracking_id.as_deref());
    users.timestamp(item.registered);
    users.text(item.registration_tenant.as_deref());
    users.text(item.registration_state.as_deref());
    users.timestamp(item.last_login);
    users.int64(item.seq_no);
    users.text(extra::user_extra(item).as_deref());
    extension::push_wide(ext, item, users);
    users.end_row();

    for grant in &item.grants {
        grants.text_repeated(user_id, plain_id);
        grants.text(grant.grant_id.as_deref());
        grants.text(grant.account_id.as_deref());
        grants.text(grant.expiry_state.as_deref());
        grants.text(grant.entitlement_type.as_deref());
        grants.text(grant.entitlement_id.as_deref());
        grants.text(grant.product_id.as_deref());
        grants.timestamp(grant.start_time);
        grants.timestamp(grant.end_time);
        grants.timestamp(grant.created_at);
        grants.text(extra::grant_extra(grant, user_id).as_deref());
        grants.end_row();
    }

    for (key, leaf) in &item.attributes {
        attributes.text_repeated(user_id, plain_id);
        attributes.text(Some(key));
        match leaf {
            Leaf::Object(raw) | Leaf::Array(raw) => attributes.text(Some(&compact(raw))),
            other => attributes.text(other.clone().into_text().ok().flatten().as_deref()),
        }
        attributes.text_plain(leaf.type_name());
        attributes.end_row();
    }
}

/// The error for an item that is not an object (a bad item if it is valid JSON, which the
/// caller checks).
fn not_an_object(bytes: &[u8]) -> serde_json::Error {
    let found = match bytes.first() {
        Some(b'[') => "an array".to_string(),
        Some(b'"') => "a string".to_string(),
        Some(b't' | b'f') => "a boolean".to_string(),
        Some(b'n') => "null".to_string(),
        _ => format!(
            "the number {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        ),
    };
    serde::de::Error::custom(format!(
        "expected the item to be an object with a `user`, found {found}"
    ))
}

/// Best effort at the user id of an item that failed to decode, for the error message.
fn user_id_of(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match value.get("user")?.get("user_id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// serde_json appends " at line L column C" relative to the item; the caller reports the
/// item's own place instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// serde's "invalid type: map, expected X" in the order a user reads it: "expected X, found
/// an object".
fn plain_message(message: &str) -> String {
    let message = strip_position(message);
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    else {
        return message;
    };
    let found = if let Some(n) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        format!("the number {}", n.trim_matches('`'))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        b.to_string()
    } else if found.starts_with("string ") {
        format!("the {found}")
    } else {
        match found {
            "map" => "an object".to_string(),
            "sequence" => "an array".to_string(),
            other => other.to_string(),
        }
    };
    format!("expected {expected}, found {found}")
}

/// A syntax error `error.offset` bytes into item `index`, located in the input.
fn broken_item(batch: &RawBatch, index: usize, error: &SyntaxError) -> InputError {
    InputError::Syntax {
        location: locate(batch, index, error.offset),
        problem: format!(
            "invalid JSON in item {}: {}",
            batch.items[index].number, error.problem
        ),
    }
}

/// The location of byte `within` of item `index`, found by walking the item's newlines.
fn locate(batch: &RawBatch, index: usize, within: usize) -> Location {
    let span = &batch.items[index];
    let bytes = &batch.item_bytes(index)[..within.min(span.end - span.start)];
    let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
    let column = match memchr::memrchr(b'\n', bytes) {
        Some(last) => (bytes.len() - last) as u64,
        None => span.column + bytes.len() as u64,
    };
    Location {
        input: span.input.clone(),
        offset: span.offset + bytes.len() as u64,
        line: span.line + newlines,
        column,
    }
}

fn invalid_utf8(batch: &RawBatch, valid_up_to: usize) -> FlattenError {
    let index = batch
        .items
        .partition_point(|span| span.end <= valid_up_to)
        .min(batch.items.len() - 1);
    let within = valid_up_to - batch.items[index].start;
    FlattenError::Input(InputError::Syntax {
        location: locate(batch, index, within),
        problem: format!(
            "invalid UTF-8 ({}) in item {}; Zephr exports are UTF-8, so the file was damaged \
             or re-encoded: download it again, or convert it with iconv",
            describe_byte(batch.data[valid_up_to]),
            batch.items[index].number
        ),
    })
}

/// serde_json found broken JSON that [`syntax::check`] accepts (a lone surrogate escape in a
/// key): its line and column within the item, translated to the input's coordinates.
fn syntax_in_item(batch: &RawBatch, index: usize, error: &serde_json::Error) -> InputError {
    let span = &batch.items[index];
    let bytes = batch.item_bytes(index);
    let (line, column) = (error.line().max(1), error.column().max(1));
    // serde_json counts lines and columns; find the byte they point at.
    let mut line_start = 0usize;
    for _ in 1..line {
        match memchr::memchr(b'\n', &bytes[line_start..]) {
            Some(k) => line_start += k + 1,
            None => break,
        }
    }
    let within = (line_start + column - 1).min(bytes.len());
    let mut problem = strip_position(&error.to_string());
    if error.classify() == serde_json::error::Category::Eof {
        problem = format!("{problem} (the item ends early)");
    }
    InputError::Syntax {
        location: locate(batch, index, within),
        problem: format!("invalid JSON in item {}: {problem}", span.number),
    }
}
