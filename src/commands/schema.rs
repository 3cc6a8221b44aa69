//! `zephr-etl schema [TABLE]`: the output tables' columns and types, from `schemas/`; with
//! `--dialect`, load-ready definitions for a warehouse (see [`zephr_etl::ddl`]).

use std::fmt::Write as _;
use std::process::ExitCode;

use zephr_etl::ddl::{self, Dialect};
use zephr_etl::schema::{self, Table, TableDef};

use super::wide::{UsersPlan, read_user_schema};

use crate::cli::{DialectArg, SchemaArgs};

pub fn run(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let tables: Vec<&str> = match args.table.as_deref() {
        None => vec!["users", "grants", "attributes", "state_events"],
        Some(name @ ("users" | "grants" | "attributes" | "state_events")) => vec![name],
        Some(other) => {
            return Err(anyhow::Error::new(super::UsageError(format!(
                "unknown table {other:?}; the tables are users, grants, attributes and state_events"
            ))));
        }
    };
    // With --user-schema, users is shown as --wide-attributes makes it, from the same
    // definition the writers use.
    let users = match &args.user_schema {
        Some(path) => {
            let plan = UsersPlan {
                pii: None,
                schema: Some(read_user_schema(path)?),
                wide: true,
            };
            plan.build(None).map(|ext| &ext.def)
        }
        None => None,
    };
    if let Some(dialect) = args.dialect {
        print!("{}", definitions(&tables, users, dialect)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    if args.json {
        // One table: its schema file as it is. All of them: one JSON array of those objects,
        // so the output is still a single JSON document.
        let mut documents = Vec::new();
        for name in &tables {
            documents.push(match (users, *name) {
                (Some(def), "users") => serde_json::to_string_pretty(def)? + "\n",
                _ => raw_file(name).to_string(),
            });
        }
        out = match &documents[..] {
            [one] => one.clone(),
            many => format!(
                "[\n{}]\n",
                many.iter()
                    .map(|d| d.trim_end())
                    .collect::<Vec<_>>()
                    .join(",\n")
            ),
        };
    }
    for (i, name) in tables.iter().enumerate() {
        if args.json {
            continue;
        }
        if i > 0 {
            out.push('\n');
        }
        match (users, *name) {
            (Some(def), "users") => render_def(&mut out, def),
            _ => render(&mut out, name),
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The `--dialect` output for `tables` (`users` is `users_def` when given).
fn definitions(
    tables: &[&str],
    users_def: Option<&TableDef>,
    dialect: DialectArg,
) -> anyhow::Result<String> {
    let dialect = match dialect {
        DialectArg::Postgres => Dialect::Postgres,
        DialectArg::Duckdb => Dialect::Duckdb,
        DialectArg::Bigquery => Dialect::Bigquery,
        DialectArg::Snowflake => Dialect::Snowflake,
        DialectArg::Redshift => Dialect::Redshift,
        DialectArg::Spark => Dialect::Spark,
    };
    let def_of = |name: &str| match (users_def, Table::from_name(name)) {
        (Some(def), Some(Table::Users)) => Some(def),
        (_, table) => table.map(Table::def),
    };
    if dialect == Dialect::Bigquery {
        // `bq load --schema FILE` takes one table's fields.
        return match tables {
            [name] => match def_of(name) {
                Some(def) => Ok(ddl::bigquery_schema(def)),
                None => Err(super::UsageError(STATE_EVENTS_NOTE.replace("-- ", "")).into()),
            },
            _ => Err(super::UsageError(
                "the BigQuery schema file holds one table: name it, as in `zephr-etl schema \
                 --dialect bigquery users > users.json`"
                    .into(),
            )
            .into()),
        };
    }
    let mut out = String::new();
    for (i, name) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match def_of(name) {
            Some(def) => out.push_str(&ddl::create_table(def, dialect)),
            None => {
                out.push_str(STATE_EVENTS_NOTE);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// What `--dialect` says of `state_events`, whose columns only its source knows.
const STATE_EVENTS_NOTE: &str = "-- state_events: its columns are the source's own, every one a \
     nullable string; manifest.json lists them (under tables.state_events.columns) once a run \
     has written the table.";

fn raw_file(name: &str) -> &'static str {
    match name {
        "users" => schema::USERS_JSON,
        "grants" => schema::GRANTS_JSON,
        "attributes" => schema::ATTRIBUTES_JSON,
        _ => schema::STATE_EVENTS_JSON,
    }
}

/// A plain-text table: name, type, nullability and source of every column.
fn render(out: &mut String, name: &str) {
    let Some(table) = Table::from_name(name) else {
        let _ = writeln!(out, "state_events: one row per state event");
        let _ = writeln!(
            out,
            "  (the source's own columns, in source order, every one a nullable string)"
        );
        return;
    };
    render_def(out, table.def());
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
