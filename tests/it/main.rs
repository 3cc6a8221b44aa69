//! The one integration-test binary: every module drives the real `zephr-etl` binary (or the
//! library's fetch client) in temporary directories, against the shared helpers in
//! `tests/support/` (the harness, the independent reference flattener, the mock Zephr API).
//! One binary links arrow, parquet and the mock server once, instead of once per file.

#[path = "../support/mod.rs"]
mod support;

mod clouds;
mod commit;
mod convert;
mod ddl;
mod delta;
mod errors;
mod fetch_cli;
mod fetch_client;
mod load_sql;
mod loaders;
mod object_store;
mod postgres;
mod warehouse;
