//! zephr-etl: stream Zephr user exports into typed users, grants and attributes tables.
//!
//! The pipeline, stage by stage:
//! - [`source`]: bytes from files, stdin or HTTP, decompressed; [`source::framer`] cuts them
//!   into batches of raw items without parsing them;
//! - [`flatten`]: rayon workers decode each item and emit rows into [`table`] column batches;
//! - [`sink`]: CSV and Parquet writers behind one trait, writing into staged files of a
//!   [`dest`]ination (a local folder: kernel lock, staging, journaled commit);
//! - [`export`] is the engine: options to a committed dataset (layout, writers, manifest,
//!   commit, state events, the resumable fetch); the binary only parses arguments into it;
//! - [`pipeline`] wires the stages with bounded channels; [`schema`] holds the tables'
//!   definitions from `schemas/`;
//! - [`fetch`] is another source of bytes: the signed, retrying Admin API client, the
//!   paginator and the resumable fetch's journal; [`state_events`] turns the export's second
//!   phase (CSV or JSON of flat objects) into the `state_events` table.
//!
//! Around the core: [`extension`] is the users table of a run with [`wide`] attribute columns
//! and [`pii`]-hashed identifiers; [`naming`] keeps column names warehouse-safe; [`ddl`] writes
//! each warehouse's `CREATE TABLE` and [`describe`] what `schema` prints; [`load_sql`] the
//! statements that load a run's files into a warehouse (`load-sql`); [`manifest`]
//! describes a run's files; [`inspect`] summarises an export without writing tables;
//! [`allocator`] tunes glibc for the batches' large, short-lived buffers.
//!
//! Where outputs go: [`dest`] is the destination seam (a folder or an object-store prefix,
//! one commit protocol); [`cloud`] parses `s3://`, `gs://` and `az://` URLs and builds their
//! stores, for outputs and for inputs.
//!
//! Modules depend only downwards in this order (each line may use the lines below it, never
//! one above or its own; checked over each module's `crate::` paths outside comments and
//! tests):
//! - [`export`] (the engine);
//! - [`state_events`], [`wide`];
//! - [`fetch`] (the Admin API client, its pages, journal and segment merge), [`pipeline`];
//! - [`sink`], [`inspect`], [`extension`] (a re-export), [`load_sql`];
//! - [`flatten`] (its `users` and `wide_columns` are the extended `users` table's layout),
//!   [`manifest`], [`describe`];
//! - [`source`], [`table`], [`dest`], [`ddl`], [`generate`];
//! - [`schema`], [`timestamp`] (the one calendar), [`error`], [`naming`], [`pii`],
//!   [`progress`], [`cloud`] (object-store URLs and clients, for [`source`] and [`dest`]),
//!   [`allocator`], [`signal`], `random` (the one source of random bytes, crate-private).

pub mod allocator;
pub mod cloud;
pub mod ddl;
pub mod describe;
pub mod dest;
pub mod error;
pub mod export;
pub mod extension;
pub mod fetch;
pub mod flatten;
pub mod generate;
pub mod inspect;
pub mod load_sql;
pub mod manifest;
pub mod naming;
pub mod pii;
pub mod pipeline;
pub mod progress;
mod random;
pub mod schema;
pub mod signal;
pub mod sink;
pub mod source;
pub mod state_events;
pub mod table;
pub mod timestamp;
pub mod wide;
