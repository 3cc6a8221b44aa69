//! zephr-engine: export options to a committed dataset.
//!
//! The engine wires the role crates together: it opens the [`input`]s (files, stdin, bucket
//! objects), runs the [`pipeline`] (framer, rayon flatteners, table writers, on bounded
//! channels) into a destination, and commits the dataset with its manifest ([`export`]).
//! A live fetch feeds pages from the Admin API client into the same pipeline ([`feed`]); a
//! paginated fetch is committed in segments that [`resume`] records and [`segments`]
//! assembles; [`state_file`] remembers the last run. [`state_events`] turns the export's second
//! phase into its table, and [`wide`] finds the attribute keys of a wide run.
//!
//! The engine knows no terminal: it reports through an observer and stops when its
//! cancellation token is set.

#![warn(missing_docs)]

pub mod control;
pub mod delta;
pub mod export;
pub mod feed;
pub mod input;
pub mod pipeline;
pub mod postgres;
pub mod resume;
pub mod segments;
pub mod state_events;
pub mod state_file;
pub mod wide;
