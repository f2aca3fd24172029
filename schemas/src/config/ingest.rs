//! `[ingest]`: batching, flushes and the dedup window, and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{ByteSize, HumanDuration};

/// How collectors and file backfills batch and check events, how the lake
/// is compacted, and how long `allot vacuum` keeps files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// A collector flushes once one Kafka partition has buffered this many
    /// events (at least 1).
    pub flush_rows: usize,
    /// Rows per batch of `allot ingest --from-file` (at least 1). A
    /// backfill's tenant-days stay open across batches, so a file in time
    /// order still gets one Parquet file per tenant-day.
    pub backfill_flush_rows: usize,
    /// A collector also flushes once this much Arrow data is buffered
    /// (above 0).
    pub flush_bytes: ByteSize,
    /// A batch of `--from-file` ends at this much buffered data (above 0);
    /// it bounds a backfill's memory to about six batches.
    pub backfill_flush_bytes: ByteSize,
    /// A collector flushes at least this often.
    pub flush_interval: HumanDuration,
    /// The most data a collector buffers across all its partitions (at
    /// least `ingest.flush_bytes`).
    pub max_buffer_bytes: ByteSize,
    /// How far ahead of the collector's clock an event's `ts` may be; an
    /// event further ahead is rejected.
    pub max_future_skew: HumanDuration,
    /// The largest event accepted (above 0); a larger one is rejected as
    /// `event_too_large`.
    pub max_event_bytes: ByteSize,
    /// The size compaction aims its files at; a file under half of it is
    /// small.
    pub compaction_target_bytes: ByteSize,
    /// How often each collector compacts the lake in the background; `"0s"`
    /// turns background compaction off.
    pub compaction_interval: HumanDuration,
    /// Background compaction rewrites a tenant-day once it has this many
    /// small files (at least 2).
    pub compaction_min_files: usize,
    /// The address a collector serves Prometheus `/metrics` on; unset, none
    /// (`--metrics-listen` wins).
    pub metrics_listen: Option<String>,
    /// Copies of a `(tenant_id, event_id)` whose `ts` are less than this
    /// apart are one event, the first ingested counting
    /// (docs/reference.md#duplicates). Between `1d` and `3650d`; ingest,
    /// compaction and every report apply it.
    pub dedup_window: HumanDuration,
    /// `allot vacuum` deletes the files removed from a table longer ago than
    /// this (`--retention` wins).
    pub vacuum_retention: HumanDuration,
    /// `allot vacuum` keeps every file the `usage_events` version of a
    /// closing needs while the closing is younger than this, so that it can
    /// still be verified (docs/reference.md#verify).
    pub close_retention: HumanDuration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            flush_rows: 100_000,
            backfill_flush_rows: 1_000_000,
            flush_bytes: ByteSize(64 << 20),
            backfill_flush_bytes: ByteSize(32 << 20),
            flush_interval: HumanDuration(Duration::from_secs(10)),
            max_buffer_bytes: ByteSize(256 << 20),
            max_future_skew: HumanDuration(Duration::from_secs(86_400)),
            max_event_bytes: ByteSize(1 << 20),
            compaction_target_bytes: ByteSize(128 << 20),
            compaction_interval: HumanDuration(Duration::from_secs(600)),
            compaction_min_files: 10,
            metrics_listen: None,
            dedup_window: HumanDuration(DEFAULT_DEDUP_WINDOW),
            vacuum_retention: HumanDuration(Duration::from_secs(7 * 86_400)),
            close_retention: HumanDuration(Duration::from_secs(400 * 86_400)),
        }
    }
}

/// The default `ingest.dedup_window`: 35 days.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(35 * 86_400);

impl IngestConfig {
    /// `[ingest]`: flush sizes, buffers, compaction, the dedup window.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.flush_rows == 0 {
            return Err(ConfigError::new("ingest.flush_rows", "must be at least 1"));
        }
        if self.backfill_flush_rows == 0 {
            return Err(ConfigError::new(
                "ingest.backfill_flush_rows",
                "must be at least 1",
            ));
        }
        if self.backfill_flush_bytes.0 == 0 {
            return Err(ConfigError::new(
                "ingest.backfill_flush_bytes",
                "must be above 0",
            ));
        }
        if self.flush_bytes.0 == 0 || self.max_buffer_bytes.0 < self.flush_bytes.0 {
            return Err(ConfigError::new(
                "ingest.max_buffer_bytes",
                "must be at least ingest.flush_bytes, which must be above 0",
            ));
        }
        if self.compaction_min_files < 2 {
            return Err(ConfigError::new(
                "ingest.compaction_min_files",
                "must be at least 2",
            ));
        }
        if self.dedup_window.0 < Duration::from_secs(86_400)
            || self.dedup_window.0 > Duration::from_secs(3650 * 86_400)
        {
            return Err(ConfigError::new(
                "ingest.dedup_window",
                "must be between 1d and 3650d: copies on the same UTC day are always one event",
            ));
        }
        if self.max_event_bytes.0 == 0 {
            return Err(ConfigError::new(
                "ingest.max_event_bytes",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
