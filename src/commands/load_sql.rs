//! `zephr-etl load-sql --dialect D [--merge [--delete-missing]] [--schema S] MANIFEST`: the
//! statements that load a run's files into a warehouse, printed on stdout (see
//! [`zephr_core::load_sql`]). Nothing runs and no credential is needed; the manifest is read
//! as `schema --manifest` reads it.

use std::process::ExitCode;

use zephr_core::load_sql::{self, LoadSqlError, Options, Warehouse};

use crate::cli::{LoadSqlArgs, WarehouseArg};

pub fn run(args: &LoadSqlArgs) -> anyhow::Result<ExitCode> {
    let (manifest, base) = super::schema::read_manifest_at(&args.manifest, "MANIFEST")?;
    let options = Options {
        warehouse: warehouse_of(args.dialect),
        merge: args.merge,
        delete_missing: args.delete_missing,
        schema: args.schema.clone(),
        stage: args.stage.clone(),
        iam_role: args.iam_role.clone(),
    };
    let sql = load_sql::script(&manifest, &base, &options).map_err(|e| match e {
        // The manifest's own problems are the run's, not the command line's.
        LoadSqlError::Describe(_) => anyhow::Error::new(e),
        other => super::UsageError(format!("{}: {other}", args.manifest)).into(),
    })?;
    print!("{sql}");
    Ok(ExitCode::SUCCESS)
}

fn warehouse_of(dialect: WarehouseArg) -> Warehouse {
    match dialect {
        WarehouseArg::Bigquery => Warehouse::Bigquery,
        WarehouseArg::Snowflake => Warehouse::Snowflake,
        WarehouseArg::Redshift => Warehouse::Redshift,
        WarehouseArg::Databricks => Warehouse::Databricks,
        WarehouseArg::Duckdb => Warehouse::Duckdb,
        WarehouseArg::Postgres => Warehouse::Postgres,
    }
}
