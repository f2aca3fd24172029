//! Compaction inside a collector: a run every interval until it stops.

use std::time::Duration;

use allot_schemas::layout::LakeTable;
use tokio_util::sync::CancellationToken;

use super::commit::CHECKPOINT_EVERY_COMMITS;
use super::{CompactOptions, compaction_pass};
use crate::tables::open_or_create_table;

/// Background compaction inside a collector: what to compact, and how often.
#[derive(Debug, Clone)]
pub struct BackgroundCompaction {
    /// Time between runs; zero disables background compaction.
    pub interval: Duration,
    /// What each run does.
    pub options: CompactOptions,
}

/// Compacts `table` every `settings.interval` until `cancel` fires. A failed run
/// is logged and retried on the next tick; it never stops the collector.
pub async fn run_background_compaction(settings: BackgroundCompaction, cancel: CancellationToken) {
    if settings.interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        // The collector writes to the lake it compacts: it may create it.
        let pass = async {
            let table =
                open_or_create_table(&settings.options.lake, LakeTable::UsageEvents).await?;
            compaction_pass(table, &settings.options, &cancel, CHECKPOINT_EVERY_COMMITS).await
        };
        match pass.await {
            Ok(summary) => {
                if summary.partitions > 0 || summary.conflicts > 0 || summary.skipped > 0 {
                    tracing::info!(
                        partitions = summary.partitions,
                        files_removed = summary.files_removed,
                        files_added = summary.files_added,
                        duplicates = summary.duplicates_removed,
                        conflicts = summary.conflicts,
                        skipped = summary.skipped,
                        "background compaction done"
                    );
                }
                if summary.rollups.partitions > 0 {
                    tracing::info!(
                        partitions = summary.rollups.partitions,
                        days = summary.rollups.days,
                        rows = summary.rollups.rows,
                        "rollups refreshed"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(%err, "background compaction failed; retrying on the next run");
            }
        }
    }
}
