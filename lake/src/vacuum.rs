//! `allot vacuum`: deleting data files that no version still in use needs.
//!
//! Compaction only removes files from the table's newest version; their bytes
//! stay on disk so that readers of older versions keep working. Vacuum deletes
//! the files removed longer than `retention` ago, except every file that one of
//! the given `usage_events` versions needs. The caller names those: the versions
//! read by closings younger than `close_retention` (docs/reference.md#verify, see
//! `allot_query::closing::versions_to_keep`), which `allot verify` time-travels to.
//!
//! It also deletes orphans: data files in a table's directory that no commit
//! ever referenced (the output of a compaction, backfill or erasure killed
//! before its commit, or of one that lost a commit race). A file goes only when
//! it lies under the table's directory outside `_delta_log` (and outside any
//! hidden directory), no version still within the retention references it (not
//! active, not removed less than `retention` ago, not in a kept version), and it
//! was written more than `retention` ago: a collector's files wait that long at
//! most for their commit (Delta's "full" vacuum).
//!
//! Vacuum never creates a table: a lake without `usage_events` is
//! [`LakeError::NoLake`], and a missing `rejected_events`, `usage_hourly` or
//! `alerts` is skipped. The files of `alerts` that vacuum deletes are those
//! its compactions replaced (`crate::compact::log_table`).

use std::time::Duration;

use allot_schemas::layout::{LakeLocation, LakeTable};

use crate::error::LakeError;
use deltalake::operations::vacuum::VacuumMode;

use crate::tables::{open_existing_lake, open_existing_table};

/// What `vacuum` is asked to do.
#[derive(Debug, Clone)]
pub struct VacuumOptions {
    /// The lake.
    pub lake: LakeLocation,
    /// Files removed less than this long ago are kept (readers of recent
    /// versions, a collector's commit in flight).
    pub retention: Duration,
    /// The `usage_events` versions whose files are kept whatever their age.
    pub keep_usage_versions: Vec<u64>,
}

/// What a vacuum did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumSummary {
    /// Data files deleted, over every table.
    pub files_deleted: usize,
    /// The `usage_events` versions whose files were kept, sorted.
    pub kept_versions: Vec<u64>,
}

/// Vacuums `usage_events`, `rejected_events`, `usage_hourly` and `alerts`;
/// see the module docs.
pub async fn vacuum(options: VacuumOptions) -> Result<VacuumSummary, LakeError> {
    let mut kept_versions = options.keep_usage_versions;
    kept_versions.sort_unstable();
    kept_versions.dedup();
    let retention = chrono::Duration::from_std(options.retention)?;
    let mut summary = VacuumSummary {
        kept_versions: kept_versions.clone(),
        ..VacuumSummary::default()
    };
    let usage = open_existing_lake(&options.lake).await?;
    let mut tables = vec![(LakeTable::UsageEvents, usage)];
    for table in [
        LakeTable::RejectedEvents,
        LakeTable::UsageHourly,
        LakeTable::Alerts,
    ] {
        if let Some(delta) = open_existing_table(&options.lake, table).await? {
            tables.push((table, delta));
        }
    }
    for (table, delta) in tables {
        let name = table.dir_name();
        let mut builder = delta
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false);
        if table == LakeTable::UsageEvents && !kept_versions.is_empty() {
            let versions: Vec<_> = kept_versions.iter().map(|v| *v as _).collect();
            builder = builder.with_keep_versions(&versions);
        }
        let (_, metrics) = builder.await.map_err(LakeError::table(name))?;
        summary.files_deleted += metrics.files_deleted.len();
    }
    Ok(summary)
}
