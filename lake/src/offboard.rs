//! Erasing a tenant from the lake (`allot tenant delete`, SPEC §2 and §5.1).
//!
//! An erasure is not a vacuum: every Parquet file that holds a row of the tenant
//! goes at once, whatever the retention, active or left behind by an earlier
//! version. Per table:
//! - `usage_events`: the tenant's partitions are removed in one Delta commit, then
//!   every file under `tenant_id=<id>/` is deleted;
//! - `rejected_events` and `usage_hourly` (partitioned by day, tenants mixed): the
//!   active files holding a row of the tenant are rewritten without those rows in
//!   one commit, then every file of the table not active any more that holds one
//!   is deleted.
//!
//! A file written after the erasure started is left alone (it may be a
//! collector's flush whose commit is in flight); the summary counts what was left
//! so that a second run, once the tenant's traffic has stopped, finishes the job.
//! Closed months' final invoices, allocations and certificates are financial
//! records and stay. Last, a row goes to the `audit` table: who, when, what, and
//! the rows and files removed.

use std::collections::{BTreeMap, HashSet};

use allot_schemas::layout::{LakeLocation, LakeTable};
use allot_schemas::table_schema::{rejected_events_schema, usage_hourly_schema};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;

use crate::data_file::{open_lake_parquet, read_string_column};
use crate::error::LakeError;
use crate::tables::{commit_actions, open_or_create_table, with_partition_values};

/// What `delete_tenant` is asked to do.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    /// The lake.
    pub lake: LakeLocation,
    /// The tenant to erase.
    pub tenant: String,
    /// Who runs it, for the audit row.
    pub who: String,
    /// Only count what would go.
    pub dry_run: bool,
}

/// What an erasure did (or, in a dry run, would do) to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableErasure {
    /// Rows of the tenant removed from the table's current version.
    pub rows: u64,
    /// Active files removed (or rewritten without the tenant's rows).
    pub files_removed: u64,
    /// Files deleted from storage, active or not.
    pub files_deleted: u64,
    /// Files holding the tenant's rows written after the erasure started, left
    /// for another run.
    pub files_left: u64,
}

/// What `delete_tenant` did, per table directory name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteSummary {
    /// Per table.
    pub tables: BTreeMap<&'static str, TableErasure>,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

impl DeleteSummary {
    /// The summary as the JSON object the audit row records.
    pub fn to_json(&self) -> serde_json::Value {
        let tables: serde_json::Map<String, serde_json::Value> = self
            .tables
            .iter()
            .map(|(name, t)| {
                let counts = serde_json::json!({
                    "rows": t.rows,
                    "files_removed": t.files_removed,
                    "files_deleted": t.files_deleted,
                    "files_left": t.files_left,
                });
                (name.to_string(), counts)
            })
            .collect();
        serde_json::Value::Object(tables)
    }

    /// Files holding the tenant's rows that were left because they appeared
    /// during the run.
    pub fn files_left(&self) -> u64 {
        self.tables.values().map(|t| t.files_left).sum()
    }
}

/// Erases `options.tenant` from `usage_events`, `rejected_events` and
/// `usage_hourly`, and records it in `audit`; see the module docs.
pub async fn delete_tenant(options: &DeleteOptions) -> Result<DeleteSummary, LakeError> {
    // Files written from here on may be another writer's commit in flight.
    let started = chrono::Utc::now();
    let mut summary = DeleteSummary {
        dry_run: options.dry_run,
        ..DeleteSummary::default()
    };
    let usage = erase_partitions(options, started).await?;
    summary
        .tables
        .insert(LakeTable::UsageEvents.dir_name(), usage);
    for table in [LakeTable::RejectedEvents, LakeTable::UsageHourly] {
        let erased = erase_rows(options, table, started).await?;
        summary.tables.insert(table.dir_name(), erased);
    }
    if !options.dry_run {
        record_audit(options, started, &summary).await?;
    }
    Ok(summary)
}

/// The active files of `table` at its newest version (paths relative to the
/// table): another writer may have committed since the erasure's own commit.
async fn active_paths(
    table: &mut DeltaTable,
    name: &'static str,
) -> Result<HashSet<String>, LakeError> {
    table.update_state().await.map_err(LakeError::table(name))?;
    Ok(table
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
        .map(|file| file.object_store_path().to_string())
        .collect())
}

/// Every Parquet file stored under `prefix` of the table, active or not.
async fn stored_files(
    store: &dyn ObjectStore,
    prefix: Option<&deltalake::Path>,
    name: &'static str,
) -> Result<Vec<ObjectMeta>, LakeError> {
    let listed: Vec<ObjectMeta> = store
        .list(prefix)
        .try_collect()
        .await
        .map_err(|e| LakeError::table(name)(e.into()))?;
    Ok(listed
        .into_iter()
        .filter(|meta| meta.location.as_ref().ends_with(".parquet"))
        .collect())
}

/// `usage_events`: the tenant's partitions.
async fn erase_partitions(
    options: &DeleteOptions,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<TableErasure, LakeError> {
    let name = LakeTable::UsageEvents.dir_name();
    let mut table = open_or_create_table(&options.lake, LakeTable::UsageEvents).await?;
    let mut erasure = TableErasure::default();
    let mut actions = Vec::new();
    let mut removed = HashSet::new();
    for file in table
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
    {
        let tenant = file
            .partition_values_map()
            .get("tenant_id")
            .cloned()
            .flatten();
        if tenant.as_deref() == Some(options.tenant.as_str()) {
            erasure.rows += file.num_records().unwrap_or(0) as u64;
            erasure.files_removed += 1;
            removed.insert(file.object_store_path().to_string());
            actions.push(Action::Remove(file.remove_action(true)));
        }
    }
    if !options.dry_run && !actions.is_empty() {
        let operation = DeltaOperation::Delete {
            predicate: Some(format!("tenant_id = '{}'", options.tenant)),
        };
        commit_actions(&mut table, name, actions, operation).await?;
    }
    let store = table.log_store().object_store(None);
    let prefix = deltalake::Path::from(format!("tenant_id={}", options.tenant));
    let active = active_paths(&mut table, name).await?;
    for meta in stored_files(store.as_ref(), Some(&prefix), name).await? {
        let path = meta.location.as_ref();
        if active.contains(path) && !removed.contains(path) {
            // Committed by another writer during the run.
            erasure.files_left += 1;
            continue;
        }
        delete_erased(store.as_ref(), &meta, started, options, &mut erasure, name).await?;
    }
    Ok(erasure)
}

/// `rejected_events` or `usage_hourly`: the tenant's rows, in files shared with
/// other tenants.
async fn erase_rows(
    options: &DeleteOptions,
    which: LakeTable,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<TableErasure, LakeError> {
    let name = which.dir_name();
    let schema = match which {
        LakeTable::UsageHourly => usage_hourly_schema(),
        _ => rejected_events_schema(),
    };
    let mut table = open_or_create_table(&options.lake, which).await?;
    let store = table.log_store().object_store(None);
    let mut erasure = TableErasure::default();
    let mut actions = Vec::new();
    let mut removed = HashSet::new();
    let mut writer = RecordBatchWriter::for_table(&table)
        .map_err(LakeError::table(name))?
        .with_writer_properties(crate::data_file::writer_properties());
    let files: Vec<_> = table
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
        .map(|file| {
            (
                file.object_store_path(),
                file.partition_values_map(),
                file.remove_action(true),
            )
        })
        .collect();
    for (path, partition, remove) in files {
        if !holds_tenant(&store, &path, &options.tenant).await? {
            continue;
        }
        let builder = open_lake_parquet(&store, &path).await?;
        let reader = builder.build().map_err(|source| LakeError::File {
            path: path.to_string(),
            source,
        })?;
        for batch in reader {
            let batch = with_partition_values(&batch?, &partition, &schema)?;
            let (kept, dropped) = without_tenant(&batch, &options.tenant)?;
            erasure.rows += dropped;
            if kept.num_rows() > 0 && !options.dry_run {
                writer.write(kept).await.map_err(LakeError::table(name))?;
            }
        }
        erasure.files_removed += 1;
        removed.insert(path.to_string());
        actions.push(Action::Remove(remove));
    }
    if !options.dry_run && !actions.is_empty() {
        let adds = writer.flush().await.map_err(LakeError::table(name))?;
        actions.extend(adds.into_iter().map(Action::Add));
        let operation = DeltaOperation::Delete {
            predicate: Some(format!("tenant_id = '{}'", options.tenant)),
        };
        commit_actions(&mut table, name, actions, operation).await?;
    }
    let active = active_paths(&mut table, name).await?;
    for meta in stored_files(store.as_ref(), None, name).await? {
        let path = meta.location.as_ref();
        if (active.contains(path) && !removed.contains(path))
            || !holds_tenant(&store, &meta.location, &options.tenant).await?
        {
            continue;
        }
        delete_erased(store.as_ref(), &meta, started, options, &mut erasure, name).await?;
    }
    Ok(erasure)
}

/// Whether a data file holds a row of `tenant` (its `tenant_id` column read).
async fn holds_tenant(
    store: &deltalake::logstore::ObjectStoreRef,
    path: &deltalake::Path,
    tenant: &str,
) -> Result<bool, LakeError> {
    let mut found = false;
    read_string_column(store.clone(), path, "tenant_id", |t| found |= t == tenant).await?;
    Ok(found)
}

/// The rows of `batch` of other tenants, and how many of `tenant`'s were dropped.
fn without_tenant(batch: &RecordBatch, tenant: &str) -> Result<(RecordBatch, u64), LakeError> {
    let tenants = arrow::compute::cast(
        batch.column_by_name("tenant_id").ok_or_else(|| {
            arrow::error::ArrowError::SchemaError("no tenant_id column".to_string())
        })?,
        &arrow::datatypes::DataType::Utf8,
    )?;
    let tenants: &StringArray = tenants.as_string::<i32>();
    let keep: BooleanArray = (0..tenants.len())
        .map(|row| Some(tenants.is_null(row) || tenants.value(row) != tenant))
        .collect();
    let dropped = keep.iter().filter(|k| *k == Some(false)).count() as u64;
    Ok((filter_record_batch(batch, &keep)?, dropped))
}

/// Deletes a stored file that holds rows of the tenant and is no longer active,
/// unless it was written after the erasure started (it may be a commit in
/// flight: left, and counted) or this is a dry run.
async fn delete_erased(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    started: chrono::DateTime<chrono::Utc>,
    options: &DeleteOptions,
    erasure: &mut TableErasure,
    name: &'static str,
) -> Result<(), LakeError> {
    if meta.last_modified >= started {
        erasure.files_left += 1;
        return Ok(());
    }
    if !options.dry_run {
        store
            .delete(&meta.location)
            .await
            .map_err(|e| LakeError::table(name)(e.into()))?;
    }
    erasure.files_deleted += 1;
    Ok(())
}

/// Appends the erasure's row to the `audit` table.
async fn record_audit(
    options: &DeleteOptions,
    at: chrono::DateTime<chrono::Utc>,
    summary: &DeleteSummary,
) -> Result<u64, LakeError> {
    let column = |value: String| std::sync::Arc::new(StringArray::from(vec![value])) as _;
    let row = RecordBatch::try_new(
        allot_schemas::table_schema::audit_schema(),
        vec![
            column(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            column(options.who.clone()),
            column("tenant_delete".to_string()),
            column(options.tenant.clone()),
            column(summary.to_json().to_string()),
        ],
    )?;
    crate::append::append_batch(&options.lake, LakeTable::Audit, row, Vec::new(), &[]).await
}
