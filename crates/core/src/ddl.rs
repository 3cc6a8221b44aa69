//! Load-ready table definitions for each warehouse: `CREATE TABLE` statements, and for
//! BigQuery the JSON field list that `bq load --schema` takes.
//!
//! The types follow the Parquet the tool writes (SPEC section 3), so `CREATE TABLE` then
//! loading the Parquet (or, for PostgreSQL, `COPY` of the postgres-dialect CSV) needs no
//! casts, except that JSON columns (`extra`) take the engine's JSON type where it has one
//! ([`JsonAs::Native`]: PostgreSQL `json`, DuckDB and BigQuery `JSON`, Snowflake `VARIANT`),
//! which the Parquet's string reaches by a cast or a parse step (docs/loading.md shows each);
//! [`JsonAs::Text`] keeps them text. No statement or comment holds a `;` except the one ending each statement, so a
//! runner that splits a script on `;` gets whole statements. Column names are the ones in
//! the files: every name already passes
//! [`crate::naming`]'s rules (at most 63 bytes, ASCII letters, digits and `_`), so quoting only
//! keeps the case of wide columns (`attr_firstName`) where an engine would fold it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::schema::{ColumnType, TableDef};

/// How JSON columns (`extra`) are typed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonAs {
    /// The engine's JSON type where it has one (PostgreSQL `json`, which keeps the text
    /// exactly, not `jsonb`; DuckDB and BigQuery `JSON`; Snowflake `VARIANT`); text elsewhere.
    #[default]
    Native,
    /// The engine's text type, as the Parquet holds them.
    Text,
}

/// What Redshift's definitions say first: its longest text is 65,535 bytes.
pub(crate) const REDSHIFT_NOTE: &str = "\
-- Redshift: VARCHAR(65535) is its longest text, counted in bytes. A longer value (extra,
-- attributes.value, a long attribute) makes COPY of the Parquet fail. Count such values
-- before loading, and to load them cut, COPY that table's CSV with TRUNCATECOLUMNS
-- (docs/loading.md shows both).
";

/// The engines `zephr-etl schema --dialect` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// DuckDB.
    Duckdb,
    /// Google BigQuery.
    Bigquery,
    /// Snowflake.
    Snowflake,
    /// Amazon Redshift.
    Redshift,
    /// Apache Spark SQL.
    Spark,
}

impl Dialect {
    /// Every dialect, in the order the documentation lists them.
    pub const ALL: [Dialect; 6] = [
        Dialect::Postgres,
        Dialect::Duckdb,
        Dialect::Bigquery,
        Dialect::Snowflake,
        Dialect::Redshift,
        Dialect::Spark,
    ];

    /// The dialect's name as `--dialect` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Duckdb => "duckdb",
            Dialect::Bigquery => "bigquery",
            Dialect::Snowflake => "snowflake",
            Dialect::Redshift => "redshift",
            Dialect::Spark => "spark",
        }
    }

    /// The column type of `column_type` in this engine, JSON columns as `json` says.
    pub(crate) fn type_name_as(self, column_type: ColumnType, json: JsonAs) -> &'static str {
        match (column_type, json) {
            (ColumnType::Json, JsonAs::Text) => self.type_name(ColumnType::String),
            _ => self.type_name(column_type),
        }
    }

    /// The column type of `column_type` in this engine (JSON columns in its JSON type).
    pub fn type_name(self, column_type: ColumnType) -> &'static str {
        use ColumnType as T;
        use Dialect as D;
        match (self, column_type) {
            // json, not jsonb: it keeps the text as written (key order, duplicate keys,
            // number spellings such as `1e2`, and `\u0000`, which jsonb refuses).
            (D::Postgres, T::Json) => "json",
            (D::Postgres, T::String) => "text",
            (D::Postgres, T::Boolean) => "boolean",
            (D::Postgres, T::Int64) => "bigint",
            (D::Postgres, T::Float64) => "double precision",
            (D::Postgres, T::Date) => "date",
            (D::Postgres, T::Timestamp) => "timestamptz",
            (D::Duckdb, T::Json) => "JSON",
            (D::Duckdb, T::String) => "VARCHAR",
            (D::Duckdb, T::Boolean) => "BOOLEAN",
            (D::Duckdb, T::Int64) => "BIGINT",
            (D::Duckdb, T::Float64) => "DOUBLE",
            (D::Duckdb, T::Date) => "DATE",
            (D::Duckdb, T::Timestamp) => "TIMESTAMPTZ",
            (D::Bigquery, T::Json) => "JSON",
            (D::Bigquery, T::String) => "STRING",
            (D::Bigquery, T::Boolean) => "BOOLEAN",
            (D::Bigquery, T::Int64) => "INTEGER",
            (D::Bigquery, T::Float64) => "FLOAT",
            (D::Bigquery, T::Date) => "DATE",
            (D::Bigquery, T::Timestamp) => "TIMESTAMP",
            (D::Snowflake, T::Json) => "VARIANT",
            (D::Snowflake, T::String) => "VARCHAR",
            (D::Snowflake, T::Boolean) => "BOOLEAN",
            (D::Snowflake, T::Int64) => "BIGINT",
            (D::Snowflake, T::Float64) => "DOUBLE",
            (D::Snowflake, T::Date) => "DATE",
            (D::Snowflake, T::Timestamp) => "TIMESTAMP_TZ",
            // Redshift's plain VARCHAR is 256 bytes: attribute values and `extra` are longer.
            // 65,535 is its most (REDSHIFT_NOTE); SUPER, its JSON type, does not load from a
            // Parquet string without a JSON_PARSE step, so `extra` stays text.
            (D::Redshift, T::String | T::Json) => "VARCHAR(65535)",
            (D::Redshift, T::Boolean) => "BOOLEAN",
            (D::Redshift, T::Int64) => "BIGINT",
            (D::Redshift, T::Float64) => "DOUBLE PRECISION",
            (D::Redshift, T::Date) => "DATE",
            (D::Redshift, T::Timestamp) => "TIMESTAMPTZ",
            // Spark has no JSON type (Databricks' VARIANT is not Spark's).
            (D::Spark, T::String | T::Json) => "STRING",
            (D::Spark, T::Boolean) => "BOOLEAN",
            (D::Spark, T::Int64) => "BIGINT",
            (D::Spark, T::Float64) => "DOUBLE",
            (D::Spark, T::Date) => "DATE",
            // Spark's TIMESTAMP is an instant (shown in the session's time zone), as in Parquet.
            (D::Spark, T::Timestamp) => "TIMESTAMP",
        }
    }

    /// `name` as an identifier: double quotes where the engine would otherwise fold the case
    /// (PostgreSQL and DuckDB), backticks for Spark, as it is for Snowflake and Redshift
    /// (which match Parquet columns case-insensitively, and whose users write names bare).
    pub fn identifier(self, name: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Duckdb => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
            Dialect::Bigquery | Dialect::Snowflake | Dialect::Redshift => name.to_string(),
        }
    }
}

/// `CREATE TABLE` for `def` in `dialect`, JSON columns in the engine's JSON type (for
/// BigQuery, standard SQL DDL; `bq load` wants `bigquery_schema_as` instead). Ends with `;`
/// and a line break.
pub fn create_table(def: &TableDef, dialect: Dialect) -> String {
    create_table_as(def, dialect, JsonAs::Native)
}

/// [`create_table`] with JSON columns typed as `json` says.
pub(crate) fn create_table_as(def: &TableDef, dialect: Dialect, json: JsonAs) -> String {
    create_table_with(def, dialect, json, &Create::default())
}

/// How `create_table_with` words the statement's head and tail (`load-sql` creates its
/// tables when missing, in a schema, and its staging tables as temporary ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Create {
    /// `CREATE TABLE IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// `CREATE TEMP TABLE` (with `temporary_word`), never schema-qualified.
    pub temporary: Option<&'static str>,
    /// The schema (dataset, database) that qualifies the name.
    pub schema: Option<String>,
    /// Spark's `USING PARQUET` left out: Databricks' default table format (Delta) instead.
    pub no_using: bool,
}

/// `name` qualified by `schema` when there is one, each part an identifier of `dialect`.
pub fn qualified(dialect: Dialect, schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(schema) => format!(
            "{}.{}",
            dialect.identifier(schema),
            dialect.identifier(name)
        ),
        None => dialect.identifier(name),
    }
}

/// `CREATE TABLE` for `def` as `create` says, JSON columns as `json` says.
pub fn create_table_with(
    def: &TableDef,
    dialect: Dialect,
    json: JsonAs,
    create: &Create,
) -> String {
    let mut out = String::new();
    let name = match create.temporary {
        Some(_) => dialect.identifier(&def.table),
        None => qualified(dialect, create.schema.as_deref(), &def.table),
    };
    let _ = writeln!(
        out,
        "CREATE {}TABLE {}{name} (",
        create
            .temporary
            .map(|t| format!("{t} "))
            .unwrap_or_default(),
        if create.if_not_exists {
            "IF NOT EXISTS "
        } else {
            ""
        }
    );
    let width = def
        .columns
        .iter()
        .map(|c| dialect.identifier(&c.name).len())
        .max()
        .unwrap_or(0);
    for (i, column) in def.columns.iter().enumerate() {
        let not_null = if column.nullable { "" } else { " NOT NULL" };
        let comma = if i + 1 < def.columns.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "  {:width$} {}{not_null}{comma}",
            dialect.identifier(&column.name),
            dialect.type_name_as(column.column_type, json),
        );
    }
    let _ = match dialect {
        // Parquet is what Spark loads; the table reads the files where they are put.
        Dialect::Spark if !create.no_using => writeln!(out, ") USING PARQUET;"),
        _ => writeln!(out, ");"),
    };
    out
}

/// One field of BigQuery's schema file.
#[derive(Debug, Serialize)]
struct BigqueryField<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    field_type: &'static str,
    mode: &'static str,
}

/// The JSON schema `bq load --schema=FILE` takes for `def`:
/// `[{"name": ..., "type": ..., "mode": "REQUIRED"|"NULLABLE"}, ...]`, one field a line;
/// JSON columns typed as `json` says.
pub(crate) fn bigquery_schema_as(def: &TableDef, json: JsonAs) -> String {
    let mut out = String::from("[\n");
    for (i, column) in def.columns.iter().enumerate() {
        let field = BigqueryField {
            name: &column.name,
            field_type: Dialect::Bigquery.type_name_as(column.column_type, json),
            mode: if column.nullable {
                "NULLABLE"
            } else {
                "REQUIRED"
            },
        };
        // Serialising three plain fields cannot fail.
        let line = serde_json::to_string(&field).unwrap_or_default();
        let comma = if i + 1 < def.columns.len() { "," } else { "" };
        let _ = writeln!(out, "  {line}{comma}");
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;

    #[test]
    fn postgres_users_has_the_right_types() {
        let sql = create_table(Table::Users.def(), Dialect::Postgres);
        assert!(sql.starts_with("CREATE TABLE \"users\" (\n"), "{sql}");
        assert!(
            sql.contains("\"user_id\"             text NOT NULL,"),
            "{sql}"
        );
        assert!(sql.contains("\"email_verified\"      boolean,"), "{sql}");
        assert!(
            sql.contains("\"registered\"          timestamptz,"),
            "{sql}"
        );
        assert!(sql.contains("\"seq_no\"              bigint,"), "{sql}");
        assert!(sql.ends_with("\"extra\"               json\n);\n"), "{sql}");
        let text = create_table_as(Table::Users.def(), Dialect::Postgres, JsonAs::Text);
        assert!(
            text.ends_with("\"extra\"               text\n);\n"),
            "{text}"
        );
    }

    #[test]
    fn extra_takes_each_engines_json_type_unless_kept_text() {
        let extra = |dialect: Dialect, json: JsonAs| {
            let sql = create_table_as(Table::Grants.def(), dialect, json);
            let line = sql
                .lines()
                .find(|l| l.trim_start().contains("extra"))
                .unwrap();
            line.split_whitespace().nth(1).unwrap().to_string()
        };
        let native = Dialect::ALL.map(|d| extra(d, JsonAs::Native));
        assert_eq!(
            native,
            [
                "json",
                "JSON",
                "JSON",
                "VARIANT",
                "VARCHAR(65535)",
                "STRING"
            ]
        );
        let text = Dialect::ALL.map(|d| extra(d, JsonAs::Text));
        assert_eq!(
            text,
            [
                "text",
                "VARCHAR",
                "STRING",
                "VARCHAR",
                "VARCHAR(65535)",
                "STRING"
            ]
        );
        assert!(
            bigquery_schema_as(Table::Users.def(), JsonAs::Native)
                .contains(r#""name":"extra","type":"JSON""#)
        );
        let kept = bigquery_schema_as(Table::Users.def(), JsonAs::Text);
        assert!(kept.contains(r#""name":"extra","type":"STRING""#), "{kept}");
    }

    #[test]
    fn every_dialect_names_every_column_once() {
        for dialect in Dialect::ALL {
            for table in Table::ALL {
                let def = table.def();
                let sql = create_table(def, dialect);
                assert_eq!(sql.lines().count(), def.columns.len() + 2, "{sql}");
                for column in &def.columns {
                    let start = format!("  {} ", dialect.identifier(&column.name));
                    let lines = sql.lines().filter(|l| l.starts_with(&start)).count();
                    assert_eq!(lines, 1, "{}: {sql}", column.name);
                }
            }
        }
        let spark = create_table(Table::Grants.def(), Dialect::Spark);
        assert!(spark.contains("`start_time`       TIMESTAMP,"), "{spark}");
        assert!(spark.ends_with(") USING PARQUET;\n"), "{spark}");
        let snowflake = create_table(Table::Grants.def(), Dialect::Snowflake);
        assert!(
            snowflake.contains("end_time         TIMESTAMP_TZ,"),
            "{snowflake}"
        );
        let redshift = create_table(Table::Attributes.def(), Dialect::Redshift);
        assert!(
            redshift.contains("value      VARCHAR(65535),"),
            "{redshift}"
        );
    }

    #[test]
    fn bigquery_schema_is_the_field_list_bq_load_takes() {
        let text = bigquery_schema_as(Table::Users.def(), JsonAs::Native);
        let fields: serde_json::Value = serde_json::from_str(&text).unwrap();
        let fields = fields.as_array().unwrap();
        assert_eq!(fields.len(), Table::Users.def().columns.len());
        assert_eq!(
            fields[0],
            serde_json::json!({"name": "user_id", "type": "STRING", "mode": "REQUIRED"})
        );
        let seq = fields.iter().find(|f| f["name"] == "seq_no").unwrap();
        assert_eq!(seq["type"], "INTEGER");
        assert_eq!(seq["mode"], "NULLABLE");
        let registered = fields.iter().find(|f| f["name"] == "registered").unwrap();
        assert_eq!(registered["type"], "TIMESTAMP");
    }
}
