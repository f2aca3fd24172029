//! Compaction of `usage_events` per tenant-day (`allot compact`, and in the
//! background inside every collector).
//!
//! The small files of a tenant-day partition (under half the configured target
//! size) are merged into few large ones, and rows that do not count under the
//! dedup window (see `crate::dedup`) are removed there: the query engine
//! names the rows a copy ingested earlier beats, in every partition whose
//! rollups are not current (new files in it, or earlier-ingested files in its
//! neighbours within the window, since the last refresh); such a partition is
//! rewritten whole. Otherwise a row whose id is already in one of the
//! partition's large files is dropped, and among the small files the row
//! ingested first is kept; large files are never rewritten, so a busy tenant-day
//! is not read and written again on every run; only their event ids are read.
//!
//! A rewritten file keeps the dedup tags its sources vouch for (see
//! `crate::dedup`): the newest source's `allot.version`; as
//! `allot.checked_at` the version this run judged, when it judged the partition,
//! else the oldest source's; the union of their `allot.ingested_at` bounds. A
//! source without a tag leaves the file without it.
//!
//! A partition that cannot be rewritten never stops the lake's compaction: it
//! is left as it is, logged with its error and counted
//! ([`CompactSummary::skipped`], `allot_compaction_skipped_partitions_total`),
//! and the run goes on with the others. So is a partition whose day lies
//! outside the instants the pipeline supports (docs/reference.md#event-format), which only a lake
//! written before ingest enforced the range can hold: no reader sees its rows.
//!
//! Rewritten partitions are committed many at a time (up to
//! [`COMMIT_INPUT_BYTES`] of files read or [`COMMIT_PARTITIONS`] partitions per
//! commit): one Delta commit removes their old files and adds the new ones, so a
//! reader sees either the old files or the new ones, never both, and the cost of
//! a commit (which brings the table's state forward) is paid per batch, not per
//! tenant-day. A run stopped by a signal commits the partitions already rewritten;
//! the next run resumes with the rest. Collectors appending meanwhile do not
//! conflict: their new files are untouched. Every compaction commit records the `txn` app id
//! [`COMPACTION_APP_ID`], so two compactions committing at once conflict; the
//! loser stops its run (its list of files may be stale) and the next run lists the
//! files again.
//!
//! One file per step: [`plan`] lists what to rewrite, [`judge`] names the
//! beaten rows, [`rewrite`] writes the new files, [`commit`] commits them in
//! batches, [`background`] runs it all inside a collector.

use allot_schemas::config::MetricCatalog;
use allot_schemas::layout::{LakeLocation, LakeTable};
use deltalake::DeltaTable;
use tokio_util::sync::CancellationToken;

use crate::dedup::DedupWindow;
use crate::error::LakeError;
use crate::rollup::{RollupSummary, refresh_rollups};
use crate::tables::open_existing_lake;
use crate::telemetry;

mod background;
mod commit;
mod judge;
pub mod log_table;
mod plan;
mod rewrite;

pub use background::{BackgroundCompaction, run_background_compaction};
use commit::write_checkpoint;
pub use commit::{COMMIT_INPUT_BYTES, COMMIT_PARTITIONS, COMPACTION_APP_ID};
use plan::plan_rewrites;
use rewrite::rewrite_and_commit;

/// What a compaction run needs.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// The lake.
    pub lake: LakeLocation,
    /// Target size of the files written.
    pub target_file_bytes: u64,
    /// Partitions with fewer small files than this are left alone.
    pub min_files: usize,
    /// The catalog whose gauges the rollups weigh.
    pub catalog: MetricCatalog,
    /// The dedup window (`ingest.dedup_window`): rows it rejects are removed.
    pub dedup_window: DedupWindow,
}

/// What a compaction run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactSummary {
    /// Tenant-day partitions rewritten.
    pub partitions: u64,
    /// Files removed from the table.
    pub files_removed: u64,
    /// Files added to the table.
    pub files_added: u64,
    /// Rows dropped because a copy of their event ingested earlier is within the
    /// dedup window.
    pub duplicates_removed: u64,
    /// 1 when the run stopped because another compaction committed meanwhile.
    pub conflicts: u64,
    /// Tenant-day partitions left as they were because they could not be
    /// rewritten (an unreadable file, a row outside what the engine can hold);
    /// each is logged with its error, and the run goes on with the others.
    pub skipped: u64,
    /// What refreshing the rollups afterwards did.
    pub rollups: RollupSummary,
}

/// Compacts every tenant-day partition that has at least `min_files` small files,
/// refreshes the rollups and writes a checkpoint of `usage_events`. A lake
/// without `usage_events` is [`LakeError::NoLake`]: nothing is created.
pub async fn compact(
    options: CompactOptions,
    cancel: CancellationToken,
) -> Result<CompactSummary, LakeError> {
    let table = open_existing_lake(&options.lake).await?;
    compaction_pass(table, &options, &cancel, 0).await
}

/// Compacts, refreshes the rollups, and writes a checkpoint unless the newest is
/// fewer than `checkpoint_after` commits old. The table (with its file list) is
/// loaded for the pass only.
pub(super) async fn compaction_pass(
    mut table: DeltaTable,
    options: &CompactOptions,
    cancel: &CancellationToken,
    checkpoint_after: u64,
) -> Result<CompactSummary, LakeError> {
    let mut summary = compact_table(&mut table, options, cancel).await?;
    summary.rollups =
        refresh_rollups(&options.lake, &options.catalog, options.dedup_window).await?;
    write_checkpoint(&mut table, LakeTable::UsageEvents, checkpoint_after).await?;
    Ok(summary)
}

/// Compacts the tenant-days of `table` (brought up to date first) and records the
/// run in the metrics.
pub async fn compact_table(
    table: &mut DeltaTable,
    options: &CompactOptions,
    cancel: &CancellationToken,
) -> Result<CompactSummary, LakeError> {
    let result = async {
        let planned = plan_rewrites(table, options).await?;
        let mut summary =
            rewrite_and_commit(table, planned.jobs, options.target_file_bytes, cancel).await?;
        summary.skipped += planned.skipped;
        Ok(summary)
    }
    .await;
    let summary = result.as_ref().cloned().unwrap_or_default();
    telemetry::record_compaction(
        result.is_ok(),
        summary.partitions,
        summary.files_removed,
        summary.files_added,
        summary.duplicates_removed,
        summary.conflicts,
        summary.skipped,
    );
    result
}

/// The date of a `YYYY-MM-DD` partition value (`None`: not a date).
pub(super) fn parse_day(day: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use allot_schemas::layout::DedupTags;
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::TimestampMicrosecondType;
    use deltalake::kernel::Remove;

    use super::commit::is_commit_conflict;
    use super::judge::{RowKey, first_ingested_per_event};
    use super::plan::PartitionFiles;
    use super::*;

    fn remove(path: &str) -> Remove {
        Remove {
            path: path.to_string(),
            data_change: false,
            deletion_timestamp: None,
            extended_file_metadata: None,
            partition_values: None,
            size: None,
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
        }
    }

    fn tags(version: Option<u64>, checked_at: Option<u64>) -> DedupTags {
        DedupTags {
            version,
            checked_at,
            ingested: None,
        }
    }

    #[test]
    fn a_rewritten_file_keeps_what_its_sources_vouch_for() {
        let mut files = PartitionFiles {
            small: vec![remove("a"), remove("b")],
            ..PartitionFiles::default()
        };
        let bounds = |ingested, t: DedupTags| DedupTags {
            ingested: Some(ingested),
            ..t
        };
        files
            .tags
            .insert("a".into(), bounds((10, 20), tags(Some(3), Some(2))));
        files
            .tags
            .insert("b".into(), bounds((15, 30), tags(Some(5), Some(4))));
        // Rows in the table by the newest source; checked as far as the oldest;
        // ingested within the sources' bounds.
        assert_eq!(
            files.rewritten_tags(None),
            bounds((10, 30), tags(Some(5), Some(2)))
        );
        // Judged by this run at version 9.
        assert_eq!(
            files.rewritten_tags(Some(9)),
            bounds((10, 30), tags(Some(5), Some(9)))
        );
        // A source without tags (a collector's file): nothing is vouched for,
        // unless this run judged the partition.
        files.tags.insert("b".into(), DedupTags::default());
        assert_eq!(files.rewritten_tags(None), tags(None, None));
        assert_eq!(files.rewritten_tags(Some(9)), tags(None, Some(9)));
    }

    /// A batch of the three columns the in-partition rule reads.
    fn rows(rows: &[(&str, i64, &str)]) -> RecordBatch {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        RecordBatch::try_from_iter([
            (
                "event_id",
                std::sync::Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)))
                    as arrow::array::ArrayRef,
            ),
            (
                "ingested_at",
                std::sync::Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
            ),
            (
                "source",
                std::sync::Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ),
        ])
        .unwrap()
    }

    fn columns(batch: &RecordBatch) -> Vec<(String, i64, String)> {
        let ids = batch.column(0).as_string::<i32>();
        let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let sources = batch.column(2).as_string::<i32>();
        (0..batch.num_rows())
            .map(|r| {
                (
                    ids.value(r).to_string(),
                    times.value(r),
                    sources.value(r).to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn within_a_partition_the_first_ingested_copy_is_kept() {
        let batch = rows(&[
            ("x", 20, "b"),
            ("x", 10, "z"),
            ("y", 5, "a"),
            ("x", 10, "a"),
            ("k", 1, "a"),
            ("w", 7, "a"),
        ]);
        // `k` is already in a large file of the partition; `y`'s copy is one the
        // dedup window rejects against a neighbour.
        let kept: HashSet<String> = ["k".to_string()].into();
        let rejected: HashSet<RowKey> = [("y".to_string(), 5, "a".to_string())].into();
        let (out, dropped) = first_ingested_per_event(&batch, &kept, &rejected).unwrap();
        let mut out = columns(&out);
        out.sort();
        // Of x's copies, the earliest ingested wins, ties broken by source.
        assert_eq!(
            out,
            [
                ("w".to_string(), 7, "a".to_string()),
                ("x".to_string(), 10, "a".to_string())
            ]
        );
        assert_eq!(dropped, 4);
        // Nothing to drop: the batch comes back as it was.
        let unique = rows(&[("a", 1, "s"), ("b", 1, "s")]);
        let (same, none) =
            first_ingested_per_event(&unique, &HashSet::new(), &HashSet::new()).unwrap();
        assert_eq!((columns(&same), none), (columns(&unique), 0));
    }

    #[test]
    fn partition_days_are_dates_or_nothing() {
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(parse_day("1970-01-01"), date(1970, 1, 1));
        assert_eq!(parse_day("2026-03-01"), date(2026, 3, 1));
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("../x"), None);
    }

    #[test]
    fn only_lost_races_count_as_conflicts() {
        let table = "usage_events";
        let lost = LakeError::Table {
            table,
            source: deltalake::DeltaTableError::VersionAlreadyExists(7),
        };
        assert!(is_commit_conflict(&lost));
        let other = LakeError::Table {
            table,
            source: deltalake::DeltaTableError::generic("disk full"),
        };
        assert!(!is_commit_conflict(&other));
        assert!(!is_commit_conflict(&LakeError::NoLake));
    }
}
