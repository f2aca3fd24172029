//! `allot vacuum`: deleting data files that no version still in use needs.
//!
//! Compaction only removes files from the table's newest version; their bytes
//! stay on disk so that readers of older versions keep working. Vacuum deletes
//! the files removed longer than `retention` ago, except every file that a
//! closing's `usage_events` version needs while the closing is younger than
//! `close_retention` (SPEC §7): `allot verify` time-travels to that version.

use std::time::Duration;

use allot_query::closing::closings;
use allot_schemas::lake::{LakeLocation, LakeTable};

use crate::error::IngestError;
use crate::lake::open_or_create_table;

/// What `vacuum` is asked to do.
#[derive(Debug, Clone)]
pub struct VacuumOptions {
    /// The lake.
    pub lake: LakeLocation,
    /// Files removed less than this long ago are kept (readers of recent
    /// versions, a collector's commit in flight).
    pub retention: Duration,
    /// Closings younger than this keep every file of the version they read.
    pub close_retention: Duration,
    /// Now, UTC microseconds.
    pub now_micros: i64,
}

/// What a vacuum did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumSummary {
    /// Data files deleted, over every table.
    pub files_deleted: usize,
    /// The `usage_events` versions whose files were kept for closings.
    pub kept_versions: Vec<u64>,
}

/// Vacuums `usage_events`, `rejected_events` and `usage_hourly`; see the module docs.
pub async fn vacuum(options: VacuumOptions) -> Result<VacuumSummary, IngestError> {
    let close_micros = i64::try_from(options.close_retention.as_micros()).unwrap_or(i64::MAX);
    let found = closings(&options.lake)
        .await
        .map_err(|e| IngestError::Worker(format!("reading the closings: {e}")))?;
    let mut kept_versions: Vec<u64> = found
        .iter()
        .filter(|c| {
            chrono::DateTime::parse_from_rfc3339(&c.closed_at)
                .map(|t| options.now_micros.saturating_sub(t.timestamp_micros()) < close_micros)
                // A closing whose time cannot be read is kept, never lost.
                .unwrap_or(true)
        })
        .map(|c| c.usage_version)
        .collect();
    kept_versions.sort_unstable();
    kept_versions.dedup();
    let retention = chrono::Duration::from_std(options.retention)
        .map_err(|e| IngestError::Worker(format!("vacuum retention: {e}")))?;
    let mut summary = VacuumSummary {
        kept_versions: kept_versions.clone(),
        ..VacuumSummary::default()
    };
    for table in [
        LakeTable::UsageEvents,
        LakeTable::RejectedEvents,
        LakeTable::UsageHourly,
    ] {
        let name = table.dir_name();
        let delta = open_or_create_table(&options.lake, table).await?;
        let mut builder = delta
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false);
        if table == LakeTable::UsageEvents && !kept_versions.is_empty() {
            let versions: Vec<_> = kept_versions.iter().map(|v| *v as _).collect();
            builder = builder.with_keep_versions(&versions);
        }
        let (_, metrics) = builder.await.map_err(IngestError::lake(name))?;
        summary.files_deleted += metrics.files_deleted.len();
    }
    Ok(summary)
}
