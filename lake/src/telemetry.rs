//! Compaction's metrics: their names, and the function that records them.
//!
//! Like the collector's own (`allot_ingest::telemetry`), they go through the
//! `metrics` facade and are a no-op until a recorder is installed; the names are
//! the contract with dashboards and alerts and are documented in
//! docs/operating.md ("Collector metrics").

use metrics::{counter, describe_counter};

/// Compaction runs, by `outcome` (`ok`, `failed`).
pub const COMPACTION_RUNS: &str = "allot_compaction_runs_total";
/// Tenant-days rewritten by compaction.
pub const COMPACTION_PARTITIONS: &str = "allot_compaction_partitions_total";
/// Files removed from `usage_events` by compaction.
pub const COMPACTION_FILES_REMOVED: &str = "allot_compaction_files_removed_total";
/// Files added to `usage_events` by compaction.
pub const COMPACTION_FILES_ADDED: &str = "allot_compaction_files_added_total";
/// Duplicate rows removed by compaction.
pub const COMPACTION_DUPLICATES_REMOVED: &str = "allot_compaction_duplicates_removed_total";
/// Compaction runs stopped because another compaction committed meanwhile (the
/// next run starts over).
pub const COMPACTION_CONFLICTS: &str = "allot_compaction_conflicts_total";
/// Tenant-days compaction skipped because it could not rewrite them (each is
/// logged with its error); the run goes on with the others.
pub const COMPACTION_SKIPPED: &str = "allot_compaction_skipped_partitions_total";

/// Registers the help text of every compaction metric with the installed recorder.
pub fn describe() {
    describe_counter!(COMPACTION_RUNS, "Compaction runs, by outcome (ok, failed)");
    describe_counter!(COMPACTION_PARTITIONS, "Tenant-days rewritten by compaction");
    describe_counter!(
        COMPACTION_FILES_REMOVED,
        "Files removed from usage_events by compaction"
    );
    describe_counter!(
        COMPACTION_FILES_ADDED,
        "Files added to usage_events by compaction"
    );
    describe_counter!(
        COMPACTION_DUPLICATES_REMOVED,
        "Duplicate rows removed by compaction"
    );
    describe_counter!(
        COMPACTION_CONFLICTS,
        "Compaction runs stopped because another compaction committed meanwhile"
    );
    describe_counter!(
        COMPACTION_SKIPPED,
        "Tenant-days compaction could not rewrite and left as they were"
    );
}

/// Records a compaction run.
pub fn record_compaction(
    ok: bool,
    partitions: u64,
    files_removed: u64,
    files_added: u64,
    duplicates: u64,
    conflicts: u64,
    skipped: u64,
) {
    counter!(COMPACTION_RUNS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    counter!(COMPACTION_PARTITIONS).increment(partitions);
    counter!(COMPACTION_FILES_REMOVED).increment(files_removed);
    counter!(COMPACTION_FILES_ADDED).increment(files_added);
    counter!(COMPACTION_DUPLICATES_REMOVED).increment(duplicates);
    counter!(COMPACTION_CONFLICTS).increment(conflicts);
    counter!(COMPACTION_SKIPPED).increment(skipped);
}
