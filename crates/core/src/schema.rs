//! The output tables' definitions, loaded from the files in `schemas/`.
//!
//! `schemas/*.json` is the contract (SPEC section 3) kept as data: the Arrow schemas, the CSV
//! headers and `zephr-etl schema` all come from these files, so they cannot drift apart. The
//! flatteners write columns by position; a test checks those positions against the files.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// The logical type of a column, as written in `schemas/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// A string that holds a JSON object.
    Json,
    /// `true` or `false`.
    Boolean,
    /// A 64-bit signed integer.
    Int64,
    /// A 64-bit float.
    Float64,
    /// A calendar date (Parquet DATE / Arrow Date32).
    Date,
    /// UTC microseconds (Parquet TIMESTAMP(MICROS, isAdjustedToUTC=true)).
    Timestamp,
}

impl ColumnType {
    /// The type's name as `schemas/` and the manifest write it (`string`, `int64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Json => "json",
            ColumnType::Boolean => "boolean",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

impl ColumnType {
    /// The Arrow type that carries this column in Parquet.
    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ColumnDef {
    /// The column's name, in the CSV header and the Arrow schema.
    pub name: String,
    /// The column's logical type (`type` in the file).
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Whether a cell may be empty (NULL).
    pub nullable: bool,
    /// Few distinct values or long runs of one value (states, types, keys, the user id of
    /// grants and attributes): Parquet dictionary-encodes only these columns. Unique columns
    /// such as ids would pay for a dictionary and then fall back to plain encoding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dictionary: bool,
    /// Where the value comes from in the export, for people reading the schema.
    pub from: String,
}

/// A table's definition as kept in `schemas/TABLE.json`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TableDef {
    /// The table's name (`users`), which is also its file stem.
    pub table: String,
    /// What one row is, for people reading the schema.
    pub description: String,
    /// The columns, in the order files hold them.
    pub columns: Vec<ColumnDef>,
}

impl TableDef {
    /// The Arrow schema of the table.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.arrow_type(), c.nullable))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The column names in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The names of the columns to dictionary-encode.
    pub fn dictionary_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.dictionary)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The Arrow schema of an item table, built once and shared, so builders can tell by
    /// pointer whether they are for the same schema.
    pub(crate) fn arrow_schema_ref(&self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<(String, SchemaRef)>> = OnceLock::new();
        let schemas = SCHEMAS.get_or_init(|| {
            Table::ALL
                .iter()
                .map(|t| (t.name().to_string(), t.def().arrow_schema()))
                .collect()
        });
        match schemas.iter().find(|(name, _)| *name == self.table) {
            Some((_, schema)) => schema.clone(),
            None => self.arrow_schema(),
        }
    }

    /// The column types in order.
    pub(crate) fn column_types(&self) -> Vec<ColumnType> {
        self.columns.iter().map(|c| c.column_type).collect()
    }
}

/// One value per item table, indexed by [`Table`] rather than by position. Serialised as
/// an array in [`Table::ALL`] order (the form older journals already hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerTable<T>([T; 3]);

impl<T> PerTable<T> {
    /// A value per table, made by `f`.
    pub fn from_fn(mut f: impl FnMut(Table) -> T) -> PerTable<T> {
        PerTable(Table::ALL.map(&mut f))
    }

    /// Each table with its value, in [`Table::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Table, &T)> {
        Table::ALL.into_iter().zip(&self.0)
    }

    /// Each table with its value, mutable, in [`Table::ALL`] order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Table, &mut T)> {
        Table::ALL.into_iter().zip(&mut self.0)
    }
}

impl PerTable<u64> {
    /// The sum over the tables.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other` table by table.
    pub fn add(&mut self, other: &PerTable<u64>) {
        for (total, n) in self.0.iter_mut().zip(other.0) {
            *total += n;
        }
    }
}

impl<T> From<[T; 3]> for PerTable<T> {
    /// The values in [`Table::ALL`] order.
    fn from(values: [T; 3]) -> PerTable<T> {
        PerTable(values)
    }
}

impl<T> std::ops::Index<Table> for PerTable<T> {
    type Output = T;
    fn index(&self, table: Table) -> &T {
        &self.0[table as usize]
    }
}

impl<T> std::ops::IndexMut<Table> for PerTable<T> {
    fn index_mut(&mut self, table: Table) -> &mut T {
        &mut self.0[table as usize]
    }
}

/// The tables an export flattens into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per item (user).
    Users,
    /// One row per grant of a user.
    Grants,
    /// One row per attribute key of a user.
    Attributes,
}

impl Table {
    /// Every item table, in the order they are written and reported.
    pub const ALL: [Table; 3] = [Table::Users, Table::Grants, Table::Attributes];

    /// The table's file stem (`users` gives `users.csv` and `users.parquet`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Grants => "grants",
            Table::Attributes => "attributes",
        }
    }

    /// Looks a table up by name.
    pub(crate) fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's definition from `schemas/`.
    pub fn def(self) -> &'static TableDef {
        static DEFS: OnceLock<[TableDef; 3]> = OnceLock::new();
        let defs = DEFS.get_or_init(|| {
            [USERS_JSON, GRANTS_JSON, ATTRIBUTES_JSON].map(|text| {
                // The files are compiled in and covered by tests, so a parse failure is a
                // build defect, not something input can cause.
                serde_json::from_str(text).expect("schemas/*.json is valid")
            })
        });
        &defs[self as usize]
    }
}

/// The raw text of each schema file, as shipped in `schemas/`.
pub(crate) const USERS_JSON: &str = include_str!("../../../schemas/users.json");
pub(crate) const GRANTS_JSON: &str = include_str!("../../../schemas/grants.json");
pub(crate) const ATTRIBUTES_JSON: &str = include_str!("../../../schemas/attributes.json");
pub(crate) const STATE_EVENTS_JSON: &str = include_str!("../../../schemas/state_events.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_type_names_are_their_serialised_forms() {
        use ColumnType as T;
        for t in [
            T::String,
            T::Json,
            T::Boolean,
            T::Int64,
            T::Float64,
            T::Date,
            T::Timestamp,
        ] {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.name())
            );
            assert_eq!(
                serde_json::from_value::<T>(serde_json::json!(t.name())).unwrap(),
                t
            );
        }
    }

    #[test]
    fn per_table_is_indexed_by_table_and_serialised_as_an_array() {
        let mut rows: PerTable<u64> = [3, 1, 2].into();
        rows[Table::Grants] += 4;
        assert_eq!(rows[Table::Users], 3);
        assert_eq!(rows[Table::Grants], 5);
        assert_eq!(rows.total(), 10);
        let pairs: Vec<(Table, u64)> = rows.iter().map(|(t, &n)| (t, n)).collect();
        assert_eq!(
            pairs,
            [
                (Table::Users, 3),
                (Table::Grants, 5),
                (Table::Attributes, 2)
            ]
        );
        // The journal's old form: a plain array in Table::ALL order.
        assert_eq!(serde_json::to_string(&rows).unwrap(), "[3,5,2]");
        let back: PerTable<u64> = serde_json::from_str("[1,2,3]").unwrap();
        assert_eq!(back, PerTable::from_fn(|t| t as u64 + 1));
    }

    #[test]
    fn every_schema_file_loads_and_names_its_table() {
        for table in Table::ALL {
            assert_eq!(table.def().table, table.name());
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
        let state: serde_json::Value = serde_json::from_str(STATE_EVENTS_JSON).unwrap();
        assert_eq!(state["table"], "state_events");
    }

    #[test]
    fn arrow_types_follow_the_spec() {
        let users = Table::Users.def().arrow_schema();
        assert_eq!(
            users.field_with_name("seq_no").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            users.field_with_name("email_verified").unwrap().data_type(),
            &DataType::Boolean
        );
        assert_eq!(
            users.field_with_name("registered").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(!users.field_with_name("user_id").unwrap().is_nullable());
    }
}
