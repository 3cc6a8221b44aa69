//! zephr-etl: stream Zephr user exports into typed users, grants and attributes tables.
//!
//! The pipeline, stage by stage:
//! - [`source`]: bytes from files, stdin or HTTP, decompressed; [`source::framer`] cuts them
//!   into batches of raw items without parsing them;
//! - [`flatten`]: rayon workers decode each item and emit rows into [`table`] column batches;
//! - [`sink`]: CSV and Parquet writers behind one trait, in an all-or-nothing output directory;
//! - [`pipeline`] wires the stages with bounded channels; [`schema`] holds the tables'
//!   definitions from `schemas/`;
//! - [`fetch`] is another source of bytes: the signed, retrying Admin API client, the
//!   paginator and the resumable fetch's journal; [`state_events`] turns the export's second
//!   phase (CSV or JSON of flat objects) into the `state_events` table.
//!
//! Around the core: [`extension`] is the users table of a run with [`wide`] attribute columns
//! and [`pii`]-hashed identifiers; [`naming`] keeps column names warehouse-safe; [`ddl`] writes
//! each warehouse's `CREATE TABLE`; [`manifest`]
//! describes a run's files; [`inspect`] summarises an export without writing tables;
//! [`allocator`] tunes glibc for the batches' large, short-lived buffers.

pub mod allocator;
pub mod ddl;
pub mod error;
pub mod extension;
pub mod fetch;
pub mod flatten;
pub mod generate;
pub mod inspect;
pub mod manifest;
pub mod naming;
pub mod pii;
pub mod pipeline;
pub mod progress;
pub mod schema;
pub mod signal;
pub mod sink;
pub mod source;
pub mod state_events;
pub mod table;
pub mod wide;
