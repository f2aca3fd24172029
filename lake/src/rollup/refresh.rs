//! Keeping `usage_hourly`, the rollups of `usage_events`, up to date.
//!
//! [`refresh_rollups`] runs after each compaction. It finds the tenant-day
//! partitions whose rollups are missing or were computed from other files (or
//! other gauge holds), computes theirs from the deduplicated events a month
//! of days at a time, and rewrites the rollup file of every day it touched — the
//! day's still-current rows plus the new ones, the class rows of dimensional
//! counters in a file of their own — in one Delta commit that removes the
//! day's old rollup files. Each
//! commit records the `txn` app id [`ROLLUP_APP_ID`], so two refreshes racing
//! (two collectors, or `allot compact` beside one) conflict instead of both
//! adding rows for the same partition. Reports check the rollups of the days
//! they read against those partitions' current files, so a stale or missing
//! rollup only costs speed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use allot_schemas::config::MetricCatalog;
use allot_schemas::layout::{LakeLocation, LakeTable, RollupRows, TenantDay};
use allot_schemas::table_schema::{HOURLY_PARTITION_COLUMNS, usage_hourly_schema};
use arrow::array::RecordBatch;
use arrow::compute::{filter_record_batch, is_not_null, is_null};
use chrono::NaiveDate;
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};

use crate::dedup::DedupWindow;
use crate::error::LakeError;
use crate::rollup::{catalog_fingerprint, partition_bases, rollup_rows};
use crate::session::{LakeSession, Scope, SessionLimits};
use crate::snapshot::LakeSnapshot;
use crate::tables::{commit_actions, metadata_with_new_columns, open_or_create_table};

/// The `txn` app id of every rollup commit.
pub const ROLLUP_APP_ID: &str = "allot-rollups";

/// The most days whose rollups one pass computes. The first refresh after a
/// long backfill finds every partition of the lake stale: a year of them
/// computed in one query held tens of GiB, where passes of a month hold what
/// a month of events needs, one after another. (Shorter passes hold no less:
/// past a month, what a refresh holds is the lake's file list and sessions.)
const DAYS_PER_PASS: usize = 31;

/// What a refresh did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollupSummary {
    /// Tenant-day partitions whose rollups were computed.
    pub partitions: u64,
    /// Days whose rollup file was rewritten.
    pub days: u64,
    /// Rollup rows written (new and carried over).
    pub rows: u64,
}

/// The rows of `batch` (of `usage_hourly`) that files of `kind` hold: the
/// class rows (with `dimension_values`) or the others.
fn rows_of_kind(batch: &RecordBatch, kind: RollupRows) -> Result<RecordBatch, LakeError> {
    let values = batch
        .column_by_name("dimension_values")
        .ok_or_else(|| LakeError::Unreadable {
            table: LakeTable::UsageHourly.dir_name(),
            message: "a rollup batch has no `dimension_values` column".to_string(),
        })?;
    let keep = match kind {
        RollupRows::Classes => is_not_null(values),
        _ => is_null(values),
    }
    .map_err(LakeError::from)?;
    filter_record_batch(batch, &keep).map_err(LakeError::from)
}

/// Adds to a `usage_hourly` table created before the columns of
/// `HOURLY_COLUMNS_ADDED_LATER` those it lacks, in a commit of its own, so that
/// the rows written next keep them (a writer on the old schema would drop them).
async fn add_new_columns(table: &mut DeltaTable) -> Result<(), LakeError> {
    let name = LakeTable::UsageHourly.dir_name();
    let state = table.snapshot().map_err(LakeError::table(name))?;
    let Some((metadata, missing)) = metadata_with_new_columns(
        name,
        state.metadata(),
        &state.schema(),
        &usage_hourly_schema(),
    )?
    else {
        return Ok(());
    };
    let operation = DeltaOperation::SetTableProperties {
        properties: std::collections::HashMap::new(),
    };
    commit_actions(table, name, vec![Action::Metadata(metadata)], operation).await?;
    tracing::info!(table = name, ?missing, "added columns");
    Ok(())
}

/// Brings the rollups of every partition of the lake up to date with its files
/// and with `catalog`'s gauges.
pub async fn refresh_rollups(
    location: &LakeLocation,
    catalog: &MetricCatalog,
    window: DedupWindow,
) -> Result<RollupSummary, LakeError> {
    let name = LakeTable::UsageHourly.dir_name();
    let mut table = open_or_create_table(location, LakeTable::UsageHourly).await?;
    add_new_columns(&mut table).await?;
    let snapshot = match LakeSnapshot::load(location).await {
        Ok(snapshot) => snapshot,
        Err(LakeError::NoLake) => return Ok(RollupSummary::default()),
        Err(e) => return Err(e),
    };
    // The snapshot of the rollups must be the one whose files this commit removes.
    if table.version() != snapshot.hourly.version {
        return Err(LakeError::RollupRaced);
    }
    let bases = partition_bases(&snapshot.usage.files, catalog_fingerprint(catalog), window);
    let limits = SessionLimits {
        dedup_window: window,
        ..SessionLimits::default()
    };
    let mut all = LakeSession::new(&snapshot, &Scope::AllTenants, &limits)?;
    all.attach_rollups(&snapshot.hourly, catalog)?;
    let current = all.current_rollups().await?;
    let stale: BTreeMap<_, _> = bases
        .iter()
        .filter(|(key, _)| !current.contains_key(*key))
        .map(|(key, basis)| (key.clone(), *basis))
        .collect();
    if stale.is_empty() {
        return Ok(RollupSummary::default());
    }
    let days: BTreeSet<_> = stale.keys().map(|key| key.day).collect();

    // A few days at a time, each pass's files written before the next pass
    // reads, all committed at once below.
    let mut adds = Vec::new();
    let mut rows = 0;
    let listed: Vec<NaiveDate> = days.iter().copied().collect();
    for pass in listed.chunks(DAYS_PER_PASS) {
        let of_pass = |key: &TenantDay| pass.contains(&key.day);
        // New rows: the stale partitions' events, deduplicated as every
        // report reads them (against the copies in the whole lake).
        let stale_of_pass: BTreeMap<_, _> = stale
            .iter()
            .filter(|(key, _)| of_pass(key))
            .map(|(key, basis)| (key.clone(), *basis))
            .collect();
        let mut batches = vec![rollup_rows(&all, catalog, &stale_of_pass).await?];
        // Carried over: the current rows of the other partitions of those days.
        let kept: BTreeMap<_, _> = current
            .iter()
            .filter(|(key, _)| of_pass(key))
            .map(|(key, basis)| (key.clone(), *basis))
            .collect();
        if let Some(frame) = all.rollup_rows(&kept, RollupRows::Any)? {
            let kept_batches = frame.collect().await.map_err(LakeError::from)?;
            for batch in kept_batches {
                batches.push(
                    batch
                        .with_schema(usage_hourly_schema())
                        .map_err(LakeError::from)?,
                );
            }
        }
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        // The class rows go to files of their own, each file tagged with the
        // rows it holds: a report reads only the files of the rows it needs.
        for kind in [RollupRows::Hourly, RollupRows::Classes] {
            let mut writer = RecordBatchWriter::for_table(&table)
                .map_err(LakeError::table(name))?
                .with_writer_properties(crate::data_file::writer_properties());
            for batch in &batches {
                let of_kind = rows_of_kind(batch, kind)?;
                if of_kind.num_rows() > 0 {
                    writer
                        .write(of_kind)
                        .await
                        .map_err(LakeError::table(name))?;
                }
            }
            for mut add in writer.flush().await.map_err(LakeError::table(name))? {
                kind.write_into(add.tags.get_or_insert_with(HashMap::new));
                adds.push(add);
            }
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions: Vec<Action> = snapshot
        .hourly
        .files
        .iter()
        .filter(|f| days.contains(&f.day))
        .map(|f| {
            Action::Remove(Remove {
                path: f.path.clone(),
                data_change: true,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(false),
                partition_values: Some(std::collections::HashMap::from([(
                    "day".to_string(),
                    Some(f.day.format("%Y-%m-%d").to_string()),
                )])),
                size: i64::try_from(f.size).ok(),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            })
        })
        .collect();
    actions.extend(adds.into_iter().map(Action::Add));
    actions.push(Action::Txn(Transaction::new(
        ROLLUP_APP_ID,
        i64::try_from(snapshot.usage.version.unwrap_or(0)).unwrap_or(i64::MAX),
    )));
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(
            HOURLY_PARTITION_COLUMNS
                .iter()
                .map(|c| c.to_string())
                .collect(),
        ),
        predicate: None,
    };
    commit_actions(&mut table, name, actions, operation).await?;
    Ok(RollupSummary {
        partitions: stale.len() as u64,
        days: days.len() as u64,
        rows: rows as u64,
    })
}
