//! `zephr-etl schema [TABLE]`: the output tables' columns and types, from `schemas/`; with
//! `--dialect`, load-ready definitions for a warehouse (see [`zephr_etl::describe`]).

use std::process::ExitCode;

use zephr_etl::ddl::Dialect;
use zephr_etl::describe::{self, DescribeError, TABLE_NAMES};

use super::wide::{UsersPlan, read_user_schema};

use crate::cli::{DialectArg, SchemaArgs};

pub fn run(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let tables: Vec<&str> = match args.table.as_deref() {
        None => TABLE_NAMES.to_vec(),
        Some(name) if TABLE_NAMES.contains(&name) => vec![name],
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
    let out = match (args.dialect, args.json) {
        (Some(dialect), _) => describe::definitions(&tables, users, dialect_of(dialect))
            .map_err(|e| super::UsageError(usage_text(&e)))?,
        (None, true) => describe::json(&tables, users)?,
        (None, false) => describe::text(&tables, users),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn dialect_of(dialect: DialectArg) -> Dialect {
    match dialect {
        DialectArg::Postgres => Dialect::Postgres,
        DialectArg::Duckdb => Dialect::Duckdb,
        DialectArg::Bigquery => Dialect::Bigquery,
        DialectArg::Snowflake => Dialect::Snowflake,
        DialectArg::Redshift => Dialect::Redshift,
        DialectArg::Spark => Dialect::Spark,
    }
}

/// The library's refusal as the CLI says it, with the command that works.
fn usage_text(e: &DescribeError) -> String {
    match e {
        DescribeError::OneTableOnly => "the BigQuery schema file holds one table: name it, as in \
             `zephr-etl schema --dialect bigquery users > users.json`"
            .into(),
        other => other.to_string(),
    }
}
