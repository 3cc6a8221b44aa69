//! What `zephr-etl schema` prints: the tables' columns as plain text, their schema files as
//! JSON, or load-ready definitions for a warehouse ([`crate::ddl`]). The tables are the
//! built-in ones ([`builtin`]) or exactly those a run's manifest lists, with its columns
//! ([`from_manifest`]: a wide run's `users`, the source's `state_events`). The binary only
//! maps its arguments to these calls and prints the result.

use std::fmt::Write as _;

use crate::ddl::{self, Dialect, JsonAs};
use crate::manifest::Manifest;
use crate::schema::{self, ColumnDef, ColumnType, Table, TableDef};

/// Every table `zephr-etl schema` knows, in the order it lists them.
pub const TABLE_NAMES: [&str; 4] = ["users", "grants", "attributes", "state_events"];

/// Why [`definitions`] or [`from_manifest`] cannot give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    /// BigQuery's schema file describes `state_events`, whose columns only its source knows.
    #[error("{}", STATE_EVENTS_NOTE.replace("-- ", ""))]
    StateEventsColumns,
    /// BigQuery's schema file (for `bq load --schema FILE`) holds one table; name one.
    #[error("the BigQuery schema file holds one table: name one")]
    OneTableOnly,
    /// The manifest has no such table.
    #[error("the manifest has no table {table:?}; it lists {listed}")]
    NotInManifest {
        /// The table asked for.
        table: String,
        /// The tables the manifest does list, comma-separated.
        listed: String,
    },
    /// A manifest column's type is none of the schema files' types.
    #[error("the manifest gives column {column:?} of {table} the unknown type {column_type:?}")]
    UnknownType {
        /// The table the column is in.
        table: String,
        /// The column's name.
        column: String,
        /// The type as the manifest writes it.
        column_type: String,
    },
}

/// What the definitions say of `state_events`, whose columns only its source knows. (No `;`:
/// scripts are split on it.)
pub(crate) const STATE_EVENTS_NOTE: &str = "-- state_events: its columns are the source's own, every \
     one a nullable string. A run's manifest.json lists them (tables.state_events.columns) \
     once the table is written, and the definitions made from that manifest include it.";

/// One table as `schema` describes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Described {
    /// A built-in table, as its schema file has it.
    Builtin(Table),
    /// A table with other columns: the wide `users`, or a table a manifest lists.
    Def(TableDef),
    /// `state_events` without a manifest: only a note.
    StateEvents,
}

impl Described {
    /// The table's definition; `None` for `state_events` without a manifest.
    pub fn def(&self) -> Option<&TableDef> {
        match self {
            Described::Builtin(table) => Some(table.def()),
            Described::Def(def) => Some(def),
            Described::StateEvents => None,
        }
    }
}

/// The built-in tables named in `tables` (`users` is `users_def` when given).
pub fn builtin(tables: &[&str], users_def: Option<&TableDef>) -> Vec<Described> {
    tables
        .iter()
        .map(|name| match (users_def, Table::from_name(name)) {
            (Some(def), Some(Table::Users)) => Described::Def(def.clone()),
            (_, Some(table)) => Described::Builtin(table),
            (_, None) => Described::StateEvents,
        })
        .collect()
}

/// Exactly the tables `manifest` lists (only `only` when given), with its columns and
/// types, in the order `schema` lists tables (any other table after them, by name). A
/// column the built-in table also has keeps its nullability and source; every other one
/// (wide attributes, state events) is a nullable column.
pub fn from_manifest(
    manifest: &Manifest,
    only: Option<&str>,
) -> Result<Vec<Described>, DescribeError> {
    if let Some(name) = only
        && !manifest.tables.contains_key(name)
    {
        return Err(DescribeError::NotInManifest {
            table: name.to_string(),
            listed: manifest
                .tables
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut names: Vec<&String> = manifest
        .tables
        .keys()
        .filter(|name| only.is_none_or(|only| only == name.as_str()))
        .collect();
    let rank = |name: &str| {
        TABLE_NAMES
            .iter()
            .position(|t| *t == name)
            .unwrap_or(TABLE_NAMES.len())
    };
    names.sort_by_key(|name| (rank(name), (*name).clone()));
    let mut out = Vec::new();
    for name in names {
        let entry = &manifest.tables[name];
        let known = Table::from_name(name).map(Table::def);
        let mut columns = Vec::new();
        for column in &entry.columns {
            let column_type: ColumnType =
                serde_json::from_value(serde_json::Value::String(column.column_type.clone()))
                    .map_err(|_| DescribeError::UnknownType {
                        table: name.clone(),
                        column: column.name.clone(),
                        column_type: column.column_type.clone(),
                    })?;
            let base = known.and_then(|def| def.columns.iter().find(|c| c.name == column.name));
            let from = match (base, &column.source_name) {
                (Some(base), _) => base.from.clone(),
                (None, Some(source)) => format!("the source's column {source:?}"),
                (None, None) if name == "state_events" => "the source's column".to_string(),
                (None, None) => "a column of the run (manifest.json)".to_string(),
            };
            columns.push(ColumnDef {
                name: column.name.clone(),
                column_type,
                nullable: base.is_none_or(|b| b.nullable),
                dictionary: false,
                from,
            });
        }
        let description = match known {
            Some(def) => def.description.clone(),
            None if name == "state_events" => "one row per state event".to_string(),
            None => "a table of the run".to_string(),
        };
        out.push(Described::Def(TableDef {
            table: name.clone(),
            description,
            columns,
        }));
    }
    Ok(out)
}

/// The `dialect` definitions of `tables`, JSON columns as `json` says: `CREATE TABLE`
/// statements (for Redshift after a note on its longest text), or for BigQuery the one
/// table's schema file.
pub fn definitions(
    tables: &[Described],
    dialect: Dialect,
    json: JsonAs,
) -> Result<String, DescribeError> {
    if dialect == Dialect::Bigquery {
        // `bq load --schema FILE` takes one table's fields.
        return match tables {
            [one] => one
                .def()
                .map(|def| ddl::bigquery_schema_as(def, json))
                .ok_or(DescribeError::StateEventsColumns),
            _ => Err(DescribeError::OneTableOnly),
        };
    }
    let mut out = String::new();
    if dialect == Dialect::Redshift {
        out.push_str(ddl::REDSHIFT_NOTE);
        out.push('\n');
    }
    for (i, described) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match described.def() {
            Some(def) => out.push_str(&ddl::create_table_as(def, dialect, json)),
            None => {
                out.push_str(STATE_EVENTS_NOTE);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The schema files of `tables` as one JSON document: one table's file as it is, several as
/// one array of those objects (a table with other columns serialised as such a file).
pub fn json(tables: &[Described]) -> Result<String, serde_json::Error> {
    let mut documents = Vec::new();
    for described in tables {
        documents.push(match described {
            Described::Def(def) => serde_json::to_string_pretty(def)? + "\n",
            Described::Builtin(table) => raw_file(table.name()).to_string(),
            Described::StateEvents => schema::STATE_EVENTS_JSON.to_string(),
        });
    }
    Ok(match &documents[..] {
        [one] => one.clone(),
        many => format!(
            "[\n{}]\n",
            many.iter()
                .map(|d| d.trim_end())
                .collect::<Vec<_>>()
                .join(",\n")
        ),
    })
}

/// Plain-text tables, a blank line apart: name, type, nullability and source of every column.
pub fn text(tables: &[Described]) -> String {
    let mut out = String::new();
    for (i, described) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match described.def() {
            Some(def) => render_def(&mut out, def),
            None => {
                let _ = writeln!(out, "state_events: one row per state event");
                let _ = writeln!(
                    out,
                    "  (the source's own columns, in source order, every one a nullable string)"
                );
            }
        }
    }
    out
}

fn raw_file(name: &str) -> &'static str {
    match name {
        "users" => schema::USERS_JSON,
        "grants" => schema::GRANTS_JSON,
        "attributes" => schema::ATTRIBUTES_JSON,
        _ => schema::STATE_EVENTS_JSON,
    }
}

fn render_def(out: &mut String, def: &TableDef) {
    let _ = writeln!(out, "{}: {}", def.table, def.description);
    let width = def.columns.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for column in &def.columns {
        let kind = serde_json::to_value(column.column_type).ok();
        let kind = kind.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        let null = if column.nullable { "" } else { " not null" };
        let _ = writeln!(
            out,
            "  {:width$}  {:<18}{}",
            column.name,
            format!("{kind}{null}"),
            column.from
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestColumn, ManifestTable};

    #[test]
    fn bigquery_takes_one_item_table() {
        let all = builtin(&TABLE_NAMES, None);
        assert_eq!(
            definitions(&all, Dialect::Bigquery, JsonAs::Native),
            Err(DescribeError::OneTableOnly)
        );
        assert_eq!(
            definitions(
                &builtin(&["state_events"], None),
                Dialect::Bigquery,
                JsonAs::Native
            ),
            Err(DescribeError::StateEventsColumns)
        );
        let users = definitions(
            &builtin(&["users"], None),
            Dialect::Bigquery,
            JsonAs::Native,
        );
        assert!(users.unwrap().starts_with("[\n"));
    }

    #[test]
    fn text_and_json_list_every_table() {
        let all = builtin(&TABLE_NAMES, None);
        let text = text(&all);
        assert!(text.starts_with("users: "), "{text}");
        assert!(
            text.contains("\nstate_events: one row per state event\n"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&json(&all).unwrap()).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(4));
    }

    fn column(name: &str, column_type: &str) -> ManifestColumn {
        ManifestColumn {
            name: name.into(),
            column_type: column_type.into(),
            source_name: None,
        }
    }

    #[test]
    fn a_manifest_gives_its_own_tables_and_columns() {
        let mut manifest = Manifest::new(String::new(), serde_json::json!({}), Default::default());
        let mut users: Vec<ManifestColumn> = Table::Users
            .def()
            .columns
            .iter()
            .map(|c| {
                let t = serde_json::to_value(c.column_type).unwrap();
                column(&c.name, t.as_str().unwrap())
            })
            .collect();
        users.push(column("attr_age", "float64"));
        let table = |columns| ManifestTable {
            rows: 1,
            nul_replaced: None,
            columns,
        };
        manifest.tables.insert("users".into(), table(users));
        let mut event = column("_1st_seen", "string");
        event.source_name = Some("1st seen".into());
        manifest
            .tables
            .insert("state_events".into(), table(vec![event]));
        let described = from_manifest(&manifest, None).unwrap();
        let names: Vec<&str> = described
            .iter()
            .map(|d| d.def().unwrap().table.as_str())
            .collect();
        assert_eq!(names, ["users", "state_events"]);
        let users = described[0].def().unwrap();
        assert_eq!(users.columns.len(), Table::Users.def().columns.len() + 1);
        assert!(!users.columns[0].nullable, "user_id keeps NOT NULL");
        let age = users.columns.last().unwrap();
        assert_eq!((age.column_type, age.nullable), (ColumnType::Float64, true));
        let sql = definitions(&described, Dialect::Duckdb, JsonAs::Native).unwrap();
        assert!(sql.contains("\"attr_age\"            DOUBLE\n"), "{sql}");
        assert!(
            sql.contains("CREATE TABLE \"state_events\" (\n  \"_1st_seen\" VARCHAR\n);"),
            "{sql}"
        );
        assert_eq!(
            from_manifest(&manifest, Some("grants")),
            Err(DescribeError::NotInManifest {
                table: "grants".into(),
                listed: "state_events, users".into()
            })
        );
        manifest
            .tables
            .insert("odd".into(), table(vec![column("x", "decimal")]));
        assert!(matches!(
            from_manifest(&manifest, None),
            Err(DescribeError::UnknownType { .. })
        ));
    }
}
