//! The collector's own metrics: their names, and the functions that record them.
//!
//! Everything is recorded through the `metrics` facade, so this crate never knows
//! where the figures go; the binary installs a Prometheus recorder
//! (`allot ingest --metrics-listen`) and without one every call is a no-op. The
//! names below are the contract with dashboards and alerts: they are documented in
//! docs/operating.md ("Collector metrics") and must not change lightly.
//!
//! Per-tenant series are updated once per flush (one increment per tenant of the
//! batch), never per event, so the cost does not grow with the event rate.

use std::collections::BTreeMap;
use std::time::Duration;

use allot_schemas::reason::ReasonCode;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

/// Events written to `usage_events`, by `tenant`.
pub const EVENTS_ACCEPTED: &str = "allot_events_accepted_total";
/// Events set aside as rejected, by `tenant` (empty when unknown) and `reason`.
pub const EVENTS_REJECTED: &str = "allot_events_rejected_total";
/// Events dropped because their `(tenant_id, event_id)` was already in the lake.
pub const DUPLICATES_DROPPED: &str = "allot_duplicates_dropped_total";
/// Time from the start of a flush to its Delta commit (or failure), in seconds.
pub const FLUSH_DURATION: &str = "allot_flush_duration_seconds";
/// Delta commits of `usage_events` by a collector, by `outcome`
/// (`committed`, `fenced`, `failed`).
pub const DELTA_COMMITS: &str = "allot_delta_commits_total";
/// Rows written to `usage_events` in committed flushes.
pub const ROWS_FLUSHED: &str = "allot_rows_flushed_total";
/// Bytes of Parquet written to `usage_events` in committed flushes.
pub const BYTES_FLUSHED: &str = "allot_bytes_flushed_total";
/// Per Kafka `partition` (and `topic`): high watermark − the next offset the lake
/// needs, i.e. messages not yet committed to the lake.
pub const CONSUMER_LAG: &str = "allot_consumer_lag";
/// Approximate bytes of events buffered and not yet flushed.
pub const BUFFERED_BYTES: &str = "allot_buffered_bytes";
/// Dead letters sent to the dead-letter topic, by `outcome` (`delivered`,
/// `failed`: the flush holding them failed and is read again).
pub const DEAD_LETTERS: &str = "allot_dead_letters_total";
/// Bucket bounds of [`FLUSH_DURATION`], in seconds.
pub const FLUSH_DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Registers the help text and unit of every metric with the installed recorder.
pub fn describe() {
    describe_counter!(EVENTS_ACCEPTED, "Events written to usage_events, by tenant");
    describe_counter!(
        EVENTS_REJECTED,
        "Events rejected, by tenant (empty when unknown) and reason"
    );
    describe_counter!(
        DUPLICATES_DROPPED,
        "Events dropped because their (tenant_id, event_id) was already in the lake"
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Time from the start of a flush to its Delta commit"
    );
    describe_counter!(
        DELTA_COMMITS,
        "Delta commits of usage_events, by outcome (committed, fenced, failed)"
    );
    describe_counter!(ROWS_FLUSHED, "Rows written to usage_events");
    describe_counter!(
        BYTES_FLUSHED,
        Unit::Bytes,
        "Parquet bytes written to usage_events"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages of a Kafka partition not yet committed to the lake"
    );
    describe_gauge!(
        BUFFERED_BYTES,
        Unit::Bytes,
        "Approximate bytes of events buffered, not yet flushed"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Dead letters sent to the dead-letter topic, by outcome (delivered, failed)"
    );
    allot_lake::telemetry::describe();
}

/// What one committed flush wrote, for the counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushCounts {
    /// Events written, per tenant.
    pub accepted: BTreeMap<String, u64>,
    /// Rejections, per (tenant or `""`, reason).
    pub rejected: BTreeMap<(String, ReasonCode), u64>,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Parquet bytes written to `usage_events`.
    pub bytes: u64,
}

/// Records the outcome of one delivery of dead letters.
pub fn record_dead_letters(delivered: usize, failed: usize) {
    counter!(DEAD_LETTERS, "outcome" => "delivered").increment(delivered as u64);
    counter!(DEAD_LETTERS, "outcome" => "failed").increment(failed as u64);
}

/// Records a committed flush.
pub fn record_flush(counts: &FlushCounts) {
    let mut rows = 0;
    for (tenant, &n) in &counts.accepted {
        counter!(EVENTS_ACCEPTED, "tenant" => tenant.clone()).increment(n);
        rows += n;
    }
    for ((tenant, reason), &n) in &counts.rejected {
        counter!(EVENTS_REJECTED, "tenant" => tenant.clone(), "reason" => reason.as_str())
            .increment(n);
    }
    counter!(DUPLICATES_DROPPED).increment(counts.duplicates);
    counter!(ROWS_FLUSHED).increment(rows);
    counter!(BYTES_FLUSHED).increment(counts.bytes);
}

/// The outcome of a collector's Delta commit.
#[derive(Debug, Clone, Copy)]
pub enum CommitOutcome {
    /// Committed.
    Committed,
    /// Abandoned: another collector recorded newer offsets.
    Fenced,
    /// Failed and will be retried.
    Failed,
}

/// Records one commit attempt and how long its flush took.
pub fn record_commit(outcome: CommitOutcome, took: Duration) {
    let label = match outcome {
        CommitOutcome::Committed => "committed",
        CommitOutcome::Fenced => "fenced",
        CommitOutcome::Failed => "failed",
    };
    counter!(DELTA_COMMITS, "outcome" => label).increment(1);
    metrics::histogram!(FLUSH_DURATION).record(took.as_secs_f64());
}

/// Sets the lag of one partition.
pub fn set_lag(topic: &str, partition: i32, lag: i64) {
    // A gauge is a float; lags are far below 2^53, where f64 is exact.
    gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag.max(0) as f64);
}

/// Sets the bytes currently buffered.
pub fn set_buffered_bytes(bytes: usize) {
    gauge!(BUFFERED_BYTES).set(bytes as f64);
}
