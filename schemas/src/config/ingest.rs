//! `[ingest]`: batching, flushes and the dedup window, and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{ByteSize, HumanDuration};

/// How collectors batch and validate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Flush a batch when it holds this many rows (Kafka collectors).
    pub flush_rows: usize,
    /// Rows per commit of a file backfill, which favours fewer, larger files
    /// over latency; `flush_bytes` still bounds its memory.
    pub backfill_flush_rows: usize,
    /// Flush a batch when its Arrow buffers reach this size.
    pub flush_bytes: ByteSize,
    /// Bytes per batch of a file backfill, whose tenant-days stay open across
    /// batches: smaller batches bound its memory at no cost in files.
    pub backfill_flush_bytes: ByteSize,
    /// Flush at least this often.
    pub flush_interval: HumanDuration,
    /// Cap on buffered data across all partitions.
    pub max_buffer_bytes: ByteSize,
    /// How far ahead of the collector's clock an event's `ts` may be.
    pub max_future_skew: HumanDuration,
    /// Largest accepted event.
    pub max_event_bytes: ByteSize,
    /// Target size of compacted files.
    pub compaction_target_bytes: ByteSize,
    /// How often a collector compacts the lake in the background; `0s` disables.
    pub compaction_interval: HumanDuration,
    /// Background compaction rewrites a tenant-day once it has this many small files.
    pub compaction_min_files: usize,
    /// Address a collector serves Prometheus metrics on (`--metrics-listen`).
    pub metrics_listen: Option<String>,
    /// Copies of a `(tenant_id, event_id)` whose `ts` lie closer than this are
    /// one event (docs/reference.md#duplicates); at least one day.
    pub dedup_window: HumanDuration,
    /// `allot vacuum` deletes files removed from `usage_events` longer ago than
    /// this.
    pub vacuum_retention: HumanDuration,
    /// `allot vacuum` keeps every file a closing's version needs while the
    /// closing is younger than this (docs/reference.md#verify).
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
