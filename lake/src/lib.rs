//! allot-lake: everything that knows the lake's Delta tables.
//!
//! The layout and Arrow schemas are the contract in `allot-schemas`; this crate
//! is the code over them, and the only crate that opens a Delta table:
//! - [`snapshot`]: the active files of each table at one version, and the one
//!   way to open a table ([`snapshot::table_builder`]); [`follow`] keeps them in
//!   memory for the server, reading only new commits;
//! - [`tables`]: creating tables on first use and committing maintenance actions;
//! - [`append`]: appending to a table without loading its file list, fenced on
//!   `txn` offsets ([`txns::AppOffset`]); [`file_writer`] writes the files an
//!   append commits, and [`data_file`] reads one Parquet file of the lake;
//! - [`dedup`]: the dedup window (docs/reference.md#duplicates), which copies of an event count;
//! - [`provider`] and [`session`]: DataFusion tables over explicit file lists
//!   and sessions with the deduplicated `usage_events`; [`sql_tables`] the
//!   other tables analysts' SQL reads (hourly and monthly sums, closings,
//!   final invoices);
//! - [`rollup`]: the hourly rollups, their basis, computing and refreshing them;
//!   [`meters`] folds the `max`, `unique_count` and `latest` metrics from
//!   events and rollups alike, [`classes`] sums dimensional counters per the
//!   classes their rates tell apart;
//! - [`compact`], [`vacuum`] and [`offboard`]: maintenance and erasure;
//! - [`columns`]: reading the engine's batches column by column, in one place
//!   (`allot-query` reads through it too).
//!
//! `allot-ingest` writes new events through it and `allot-query` reads through
//! it, both in this crate's types: a backfill's duplicate check lists a
//! tenant-day's files and reads their ids through [`tables::LakeTables`], and
//! new files are [`file_writer::NewFile`]s until an append commits them. No
//! other crate depends on the Delta libraries (`scripts/check-deps` fails if
//! one does; tests may, to build lakes by hand). (The crates' edges are in the
//! README's architecture section, which `scripts/check-deps` holds to the
//! manifests.)

pub mod append;
pub mod classes;
pub mod columns;
pub mod compact;
pub mod data_file;
pub mod dedup;
pub mod error;
pub mod file_writer;
pub mod follow;
pub mod meters;
pub mod offboard;
pub mod provider;
pub mod rollup;
pub mod session;
pub mod snapshot;
pub mod sql_tables;
pub mod tables;
pub mod telemetry;
pub mod txns;
pub mod vacuum;

pub use compact::{CompactOptions, CompactSummary, compact};
pub use error::LakeError;
pub use offboard::{DeleteOptions, DeleteSummary, delete_tenant};
pub use vacuum::{VacuumOptions, VacuumSummary, vacuum};
