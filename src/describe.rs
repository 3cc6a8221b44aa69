//! What `zephr-etl schema` prints: the tables' columns as plain text, their schema files as
//! JSON, or load-ready definitions for a warehouse ([`crate::ddl`]). The binary only maps its
//! arguments to these calls and prints the result.

use std::fmt::Write as _;

use crate::ddl::{self, Dialect};
use crate::schema::{self, Table, TableDef};

/// Every table `zephr-etl schema` knows, in the order it lists them.
pub const TABLE_NAMES: [&str; 4] = ["users", "grants", "attributes", "state_events"];

/// Why [`definitions`] cannot write what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    /// BigQuery's schema file describes `state_events`, whose columns only its source knows.
    #[error("{}", STATE_EVENTS_NOTE.replace("-- ", ""))]
    StateEventsColumns,
    /// BigQuery's schema file (for `bq load --schema FILE`) holds one table; name one.
    #[error("the BigQuery schema file holds one table: name one")]
    OneTableOnly,
}

/// What the definitions say of `state_events`, whose columns only its source knows.
pub const STATE_EVENTS_NOTE: &str = "-- state_events: its columns are the source's own, every \
     one a nullable string; manifest.json lists them (under tables.state_events.columns) once \
     a run has written the table.";

/// The definition of `name` (`users` is `users_def` when given; `None` for `state_events`).
fn def_of<'a>(name: &str, users_def: Option<&'a TableDef>) -> Option<&'a TableDef> {
    match (users_def, Table::from_name(name)) {
        (Some(def), Some(Table::Users)) => Some(def),
        (_, table) => table.map(Table::def),
    }
}

/// The `dialect` definitions of `tables` (`users` is `users_def` when given): `CREATE TABLE`
/// statements, or for BigQuery the one table's schema file.
pub fn definitions(
    tables: &[&str],
    users_def: Option<&TableDef>,
    dialect: Dialect,
) -> Result<String, DescribeError> {
    if dialect == Dialect::Bigquery {
        // `bq load --schema FILE` takes one table's fields.
        return match tables {
            [name] => def_of(name, users_def)
                .map(ddl::bigquery_schema)
                .ok_or(DescribeError::StateEventsColumns),
            _ => Err(DescribeError::OneTableOnly),
        };
    }
    let mut out = String::new();
    for (i, name) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match def_of(name, users_def) {
            Some(def) => out.push_str(&ddl::create_table(def, dialect)),
            None => {
                out.push_str(STATE_EVENTS_NOTE);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The schema files of `tables` as one JSON document: one table's file as it is, several as
/// one array of those objects (`users` is `users_def`, serialised, when given).
pub fn json(tables: &[&str], users_def: Option<&TableDef>) -> Result<String, serde_json::Error> {
    let mut documents = Vec::new();
    for name in tables {
        documents.push(match (users_def, *name) {
            (Some(def), "users") => serde_json::to_string_pretty(def)? + "\n",
            _ => raw_file(name).to_string(),
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

/// Plain-text tables, a blank line apart: name, type, nullability and source of every column
/// (`users` is `users_def` when given).
pub fn text(tables: &[&str], users_def: Option<&TableDef>) -> String {
    let mut out = String::new();
    for (i, name) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match def_of(name, users_def) {
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

    #[test]
    fn bigquery_takes_one_item_table() {
        assert_eq!(
            definitions(&TABLE_NAMES, None, Dialect::Bigquery),
            Err(DescribeError::OneTableOnly)
        );
        assert_eq!(
            definitions(&["state_events"], None, Dialect::Bigquery),
            Err(DescribeError::StateEventsColumns)
        );
        let users = definitions(&["users"], None, Dialect::Bigquery).unwrap();
        assert!(users.starts_with("[\n"), "{users}");
    }

    #[test]
    fn text_and_json_list_every_table() {
        let text = text(&TABLE_NAMES, None);
        assert!(text.starts_with("users: "), "{text}");
        assert!(
            text.contains("\nstate_events: one row per state event\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json(&TABLE_NAMES, None).unwrap()).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(4));
    }
}
