//! zephr-core: the tables and their bytes.
//!
//! Everything here works on bytes and memory, never on a network or a destination:
//! - [`source`]: decompression by magic bytes, and [`source::framer`], which cuts export bytes
//!   into batches of raw items without parsing them;
//! - [`flatten`]: decodes each item and emits rows into [`table`] column batches (the one
//!   decoder; [`flatten::users`] is the users table of a run with wide attribute columns and
//!   [`pii`]-hashed identifiers);
//! - [`schema`]: the tables' definitions from `schemas/`; [`naming`] keeps column names
//!   warehouse-safe; [`ddl`] writes each warehouse's `CREATE TABLE`, [`describe`] what the
//!   `schema` command prints, and [`load_sql`] the statements that load a run's files;
//! - [`manifest`]: what a run's dataset holds (its commit record);
//! - [`timestamp`]: the one calendar; [`error`]: where bad input is and what is wrong there;
//! - [`inspect`] summarises an export; [`generate`] writes synthetic ones (tests, benchmarks).

#![warn(missing_docs)]

mod byte_class;
pub mod ddl;
pub mod describe;
pub mod error;
pub mod flatten;
pub mod generate;
pub mod inspect;
pub mod load_sql;
pub mod manifest;
pub mod naming;
pub mod pii;
pub mod random;
pub mod redact;
pub mod schema;
pub mod source;
pub mod table;
pub mod timestamp;
