//! Hourly rollups of `usage_events`: what they are computed from, and computing them.
//!
//! `usage_hourly` holds, per tenant-day partition, the hourly sums of every
//! metric and the pre-weighted samples of every gauge (see
//! `allot_schemas::table_schema::usage_hourly_schema`). Each row carries the
//! *basis* it was computed from: a hash of the partition's active data files and
//! of the catalog's gauge holds. A partition's rollups are used only while its
//! basis is still the same, so a late file, a compaction or a new hold makes the
//! reports read that partition's raw events again until compaction refreshes the
//! rollups. The figures are the same either way; only the speed differs.

pub mod basis;
pub mod refresh;
pub mod rows;
pub mod verify;

pub use basis::{catalog_fingerprint, gauge_hold_micros, partition_bases, partition_bases_where};
pub use refresh::{ROLLUP_APP_ID, RollupSummary, refresh_rollups};
pub use rows::rollup_rows;
pub use verify::{RollupCheck, verify_rollups};
