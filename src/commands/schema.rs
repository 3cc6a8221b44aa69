//! `zephr-etl schema [TABLE]`: the output tables' columns and types, from `schemas/` or from
//! a run's manifest; with `--dialect`, load-ready definitions for a warehouse (see
//! [`zephr_core::describe`]).

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use zephr_core::ddl::{Dialect, JsonAs};
use zephr_core::describe::{self, DescribeError, Described, TABLE_NAMES};
use zephr_core::load_sql::Base;
use zephr_core::manifest::{MANIFEST_NAME, Manifest};
use zephr_store::{self as cloud, Location, reader::ObjectReader};

use super::wide::{UsersPlan, read_user_schema};

use crate::cli::{DialectArg, SchemaArgs};

pub fn run(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let tables = match &args.manifest {
        Some(text) => {
            let manifest = read_manifest(text)?;
            describe::from_manifest(&manifest, args.table.as_deref())
                .map_err(|e| super::UsageError(format!("{text}: {e}")))?
        }
        None => builtin(args)?,
    };
    let json = if args.json_as_text {
        JsonAs::Text
    } else {
        JsonAs::Native
    };
    let out = match (args.dialect, args.json) {
        (Some(dialect), _) => describe::definitions(&tables, dialect_of(dialect), json)
            .map_err(|e| super::UsageError(usage_text(&e)))?,
        (None, true) => describe::json(&tables)?,
        (None, false) => describe::text(&tables),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The built-in tables asked for; with --user-schema, users as --wide-attributes makes it,
/// from the same definition the writers use.
fn builtin(args: &SchemaArgs) -> anyhow::Result<Vec<Described>> {
    let tables: Vec<&str> = match args.table.as_deref() {
        None => TABLE_NAMES.to_vec(),
        Some(name) if TABLE_NAMES.contains(&name) => vec![name],
        Some(other) => {
            return Err(anyhow::Error::new(super::UsageError(format!(
                "unknown table {other:?}; the tables are users, grants, attributes and state_events"
            ))));
        }
    };
    let users = match &args.user_schema {
        Some(path) => {
            let plan = UsersPlan {
                pii: None,
                schema: Some(read_user_schema(path)?),
                wide: true,
            };
            plan.build(None).map(|ext| ext.def.clone())
        }
        None => None,
    };
    Ok(describe::builtin(&tables, users.as_ref()))
}

/// The manifest at `text`: a file or an object, or the manifest.json of a run's folder or
/// prefix.
fn read_manifest(text: &str) -> anyhow::Result<Manifest> {
    read_manifest_at(text, "--manifest").map(|(manifest, _)| manifest)
}

/// [`read_manifest`], and where the run's files are: the manifest's folder (absolute) or
/// bucket prefix. `what` names the argument in a usage error.
pub(super) fn read_manifest_at(text: &str, what: &str) -> anyhow::Result<(Manifest, Base)> {
    let location = cloud::parse(text).map_err(|e| super::UsageError(format!("{what}: {e}")))?;
    let (bytes, base) = match location {
        Location::Local(path) => {
            let path = if path.is_dir() {
                path.join(MANIFEST_NAME)
            } else {
                path
            };
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", show(&path)))?;
            let folder = std::path::absolute(&path)
                .with_context(|| format!("cannot read {}", show(&path)))?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            (bytes, Base::Local(folder))
        }
        // A run's prefix names its manifest, as a run's folder does.
        Location::Cloud(_) if !text.ends_with(".json") => {
            return read_manifest_at(
                &format!("{}/{MANIFEST_NAME}", text.trim_end_matches('/')),
                what,
            );
        }
        Location::Cloud(url) => {
            let mut bytes = Vec::new();
            ObjectReader::open(&url)
                .and_then(|mut reader| {
                    reader
                        .read_to_end(&mut bytes)
                        .map_err(|e| cloud::CloudError::Store {
                            action: "read",
                            target: url.display(),
                            detail: e.to_string(),
                        })
                })
                .with_context(|| format!("cannot read {text}"))?;
            let prefix = text.rsplit_once('/').map_or(text, |(prefix, _)| prefix);
            (bytes, Base::Bucket(prefix.to_string()))
        }
    };
    let manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{text} is not a zephr-etl manifest.json"))?;
    Ok((manifest, base))
}

fn show(path: &Path) -> String {
    path.display().to_string()
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
        DescribeError::StateEventsColumns => {
            format!("{e} (pass the run's manifest with --manifest to get its field list)")
        }
        other => other.to_string(),
    }
}
