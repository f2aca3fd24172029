//! allot-lake: everything that knows the lake's Delta tables.
//!
//! The layout and Arrow schemas are the contract in `allot-schemas`; this crate
//! is the code over them, and the only crate that opens a Delta table:
//! - [`snapshot`]: the active files of each table at one version, and the one
//!   way to open a table ([`snapshot::table_builder`]); [`follow`] keeps them in
//!   memory for the server, reading only new commits;
//! - [`tables`]: creating tables on first use and committing maintenance actions;
//! - [`append`]: appending to a table without loading its file list, fenced on
//!   `txn` offsets, and [`data_file`] for reading one Parquet file of the lake;
//! - [`dedup`]: the dedup window (docs/reference.md#duplicates), which copies of an event count;
//! - [`provider`] and [`session`]: DataFusion tables over explicit file lists
//!   and sessions with the deduplicated `usage_events`;
//! - [`rollup`]: the hourly rollups, their basis, computing and refreshing them;
//! - [`compact`], [`vacuum`] and [`offboard`]: maintenance and erasure.
//!
//! `allot-ingest` writes new events through it and `allot-query` reads through
//! it. Every table is opened here, but `allot-ingest` still uses delta-rs
//! directly on the tables this crate hands it: its writer reads the active
//! files of `usage_events` from the table's snapshot (and their `event_id` and
//! `ts` columns) for the duplicate check, and encodes new files with delta-rs's
//! Parquet writer before committing them through [`append`]. `allot-query`
//! reaches the tables only through this crate. (The crates' edges are in the
//! README's architecture section, which `scripts/check-deps` holds to the
//! manifests.)

pub mod append;
pub mod compact;
pub mod data_file;
pub mod dedup;
pub mod error;
pub mod follow;
pub mod offboard;
pub mod provider;
pub mod rollup;
pub mod session;
pub mod snapshot;
pub mod tables;
pub mod telemetry;
pub mod txns;
pub mod vacuum;

pub use compact::{CompactOptions, CompactSummary, compact};
pub use error::LakeError;
pub use offboard::{DeleteOptions, DeleteSummary, delete_tenant};
pub use vacuum::{VacuumOptions, VacuumSummary, vacuum};
