//! What a run adds to the `users` table: wide attribute columns and hashed identifiers.
//!
//! [`UsersExtension`] is the one place the `users` table's layout comes from when the table
//! is not the fixed one of `schemas/users.json`: its [`TableDef`] (the base columns, then
//! the wide ones) gives the Arrow schema, the CSV header and what `zephr-etl schema` prints.
//! The flattening workers reach it through [`crate::flatten::FlattenOptions::users`] and
//! call [`identifiers`] and `push_wide` from `emit`; with no extension both do what the
//! fixed table does. It lives inside `flatten`, below the modules that build it
//! (`crate::flatten::users` re-exports it), so nothing the workers use imports them back.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_schema::SchemaRef;

use super::item::Item;
use super::wide_columns::WideColumns;
use crate::pii::PiiKey;
use crate::schema::{ColumnType, Table, TableDef};
use crate::table::TableBuilder;

/// The `users` table of a run with `--wide-attributes` and/or `--hash-pii`.
#[derive(Debug)]
pub struct UsersExtension {
    /// The table's definition: base columns, then the wide columns.
    pub def: TableDef,
    /// `def`'s Arrow schema, built once so builders can be reused across batches.
    pub schema: SchemaRef,
    /// `def`'s column types in order, for the table builders.
    pub types: Vec<ColumnType>,
    /// The wide attribute columns (`--wide-attributes`); `None` without them.
    pub wide: Option<WideColumns>,
    /// The key that hashes `email_address` and `username` (`--hash-pii`); `None` keeps them
    /// as they are.
    pub pii: Option<PiiKey>,
}

impl UsersExtension {
    /// The extended table for these options.
    pub fn new(wide: Option<WideColumns>, pii: Option<PiiKey>) -> UsersExtension {
        let mut def = Table::Users.def().clone();
        if let Some(wide) = &wide {
            def.columns.extend(wide.column_defs());
            def.description = format!(
                "{} With wide attribute columns: one attr_ column per attribute key after the base \
                 columns.",
                def.description
            );
        }
        let schema = def.arrow_schema();
        let types = def.column_types();
        UsersExtension {
            def,
            schema,
            types,
            wide,
            pii,
        }
    }
}

/// The schema and column types a table is built with in a run with `ext`.
pub fn layout(table: Table, ext: Option<&UsersExtension>) -> (SchemaRef, Vec<ColumnType>) {
    match (table, ext) {
        (Table::Users, Some(ext)) => (Arc::clone(&ext.schema), ext.types.clone()),
        _ => (table.def().arrow_schema_ref(), table.def().column_types()),
    }
}

/// The schema a table is built with in a run with `ext` (no allocation).
pub fn schema_of(table: Table, ext: Option<&UsersExtension>) -> SchemaRef {
    match (table, ext) {
        (Table::Users, Some(ext)) => Arc::clone(&ext.schema),
        _ => table.def().arrow_schema_ref(),
    }
}

/// The definition of a table in a run with `ext`.
pub fn def_of(table: Table, ext: Option<&UsersExtension>) -> &TableDef {
    match (table, ext) {
        (Table::Users, Some(ext)) => &ext.def,
        _ => table.def(),
    }
}

/// The `email_address` and `username` cells of an item: hashed with `--hash-pii`.
pub fn identifiers<'i>(
    ext: Option<&UsersExtension>,
    item: &'i Item<'_>,
) -> (Option<Cow<'i, str>>, Option<Cow<'i, str>>) {
    let email = item.email_address.as_deref().map(Cow::Borrowed);
    let username = item.username.as_deref().map(Cow::Borrowed);
    match ext.and_then(|e| e.pii.as_ref()) {
        None => (email, username),
        Some(key) => (
            email.map(|v| Cow::Owned(key.hash(&v))),
            username.map(|v| Cow::Owned(key.hash(&v))),
        ),
    }
}

/// Pushes an item's wide cells (nothing without `--wide-attributes`).
pub(crate) fn push_wide(ext: Option<&UsersExtension>, item: &Item<'_>, users: &mut TableBuilder) {
    if let Some(wide) = ext.and_then(|e| e.wide.as_ref()) {
        wide.push_cells(&item.attributes, users);
    }
}
