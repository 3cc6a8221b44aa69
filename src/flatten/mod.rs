//! Flattening: a batch of raw items becomes one column batch per table.
//!
//! This is the work the rayon workers do in parallel. Each item is decoded completely
//! (`decode.rs`, into the `Item` of `item.rs`) before its rows are emitted, so a bad item is
//! either rejected whole or stops the run; it never leaves part of its rows behind. Rows keep
//! the order of the export. A problem comes back from the decoder as a kind
//! ([`problem::DecodeError`]): broken JSON is located by the syntax check and stops the run;
//! a bad item follows `--on-error`.

pub mod decode;
pub mod extra;
pub mod item;
pub mod json;
pub mod problem;
pub mod users;
pub mod wide_columns;

/// The calendar moved below the tables (`crate::timestamp`); this path still reaches it.
pub use crate::timestamp;

use std::cell::RefCell;

use crate::error::{BadItem, InputError, ItemProblem, Location};
use crate::schema::{PerTable, Table};
use crate::source::framer::RawBatch;
use crate::source::syntax::{self, SyntaxError, describe_byte};
use crate::table::{ColumnBatch, CsvDialect, Formats, TableBuilder, csv_text};
use item::Item;
use json::{Leaf, compact};
use problem::DecodeError;
use users::UsersExtension;

/// What to do with a bad item (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the run at the first bad item.
    #[default]
    Fail,
    /// Leave it out of the tables and write it to `rejects.ndjson`.
    Skip,
}

impl OnError {
    /// The mode's name as `--on-error` and the manifest spell it.
    pub fn name(self) -> &'static str {
        match self {
            OnError::Fail => "fail",
            OnError::Skip => "skip",
        }
    }
}

/// How items are flattened.
#[derive(Debug, Clone, Copy)]
pub struct FlattenOptions {
    pub formats: Formats,
    pub dialect: CsvDialect,
    pub on_error: OnError,
    /// Wide attribute columns and hashed identifiers in `users` (see [`users`]).
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
    /// CSV cells the postgres dialect changed (a NUL replaced), per table.
    pub nul_replaced: PerTable<u64>,
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
                &users::schema_of(*t, opts.users),
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
            let (schema, types) = users::layout(*t, opts.users);
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
    // One UTF-8 check for the whole batch is much cheaper than checking every string and raw
    // value on its own, and lets the decoder work on `&str`. The items before a bad byte are still decoded first:
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
        let bad = if let Some(size) = span.too_large {
            BadItem {
                number: span.number,
                location: batch.location(index),
                user_id: None,
                field: None,
                problem: ItemProblem::TooLarge { size },
            }
        } else {
            let Err(e) = decode::decode(item_text, &mut item) else {
                emit(&item, opts.users, users, grants, attributes);
                continue;
            };
            // Decoding stops at the first problem, which may come before broken JSON further
            // on; broken JSON stops the run whatever --on-error says, so check the whole item.
            if let Err(broken) = syntax::check(bytes) {
                return Err(FlattenError::Input(broken_item(batch, index, &broken)));
            }
            let (path, problem) = match e {
                DecodeError::Bad { path, problem } => (path, problem),
                DecodeError::Invalid { offset, problem } => {
                    return Err(FlattenError::Input(invalid_item(
                        batch, index, offset, &problem,
                    )));
                }
                // The syntax check agrees with the decoder on what is JSON; should they ever
                // differ, the item is reported where it starts rather than taken.
                DecodeError::Broken => {
                    let broken = SyntaxError {
                        offset: 0,
                        problem: "the item is not valid JSON".into(),
                    };
                    return Err(FlattenError::Input(broken_item(batch, index, &broken)));
                }
            };
            let known_id = item.user_id.as_deref().map(str::to_owned);
            BadItem {
                number: span.number,
                location: batch.location(index),
                user_id: known_id.or_else(|| user_id_of(bytes)),
                field: problem.field(&path),
                problem: ItemProblem::Field(problem.to_string()),
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
    let mut nul_replaced = PerTable::default();
    for ((_, n), builder) in nul_replaced.iter_mut().zip(builders.iter_mut()) {
        *n = builder.take_nul_replaced();
    }
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
    let (email_address, username) = users::identifiers(ext, item);
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
    users::push_wide(ext, item, users);
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
    users.end_item();
    grants.end_item();
    attributes.end_item();
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

/// JSON that the syntax check accepts but the decoder refuses (a number out of serde_json's
/// range where the decoder describes a value): `problem` at byte `within` of item `index`.
fn invalid_item(batch: &RawBatch, index: usize, within: usize, problem: &str) -> InputError {
    InputError::Syntax {
        location: locate(batch, index, within),
        problem: format!(
            "invalid JSON in item {}: {problem}",
            batch.items[index].number
        ),
    }
}
