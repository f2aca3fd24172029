//! Erasing a tenant from the lake (`allot tenant delete`,
//! docs/reference.md#compaction-and-offboarding).
//!
//! An erasure is not a vacuum: every Parquet file that holds a row of the tenant
//! goes at once, whatever the retention, active or left behind by an earlier
//! version. Per table:
//! - `usage_events`: the tenant's partitions are removed in one Delta commit, then
//!   every file under `tenant_id=<id>/` is deleted;
//! - `rejected_events` and `usage_hourly` (partitioned by day, tenants mixed)
//!   and `alerts` (unpartitioned): the active files holding a row of the tenant
//!   are rewritten without those rows in one commit, then every file of the
//!   table not active any more that holds one is deleted.
//!
//! A row of `alerts` is the tenant's when its notice key
//! (`<rule>/<tenant>/<n>`) names the tenant: its notices and their delivery
//! claims and attempts, whose `tenant_id` is empty. With them goes the tenant's
//! alert state: no notice of it is left to resolve, retry or number from, so
//! nothing is sent about the tenant again (the all-tenants `*` alerts stay).
//! The commit also moves the table's sequence number on, so that a server
//! holding the old rows in memory is fenced and reads the table again before
//! it commits.
//!
//! A file written after the erasure started is left alone (it may be a
//! collector's flush whose commit is in flight); the summary counts what was left
//! so that a second run, once the tenant's traffic has stopped, finishes the job.
//! Closed months' final invoices, allocations and certificates are financial
//! records and stay.
//!
//! An erasure is resumable. Its intent is committed first, as an `audit` row
//! (`tenant_delete`, status `started`); the row of a finished erasure (status
//! `finished`, with the rows and files removed) comes last, once nothing of the
//! tenant is left. A run stopped anywhere in between (a kill, a lost race with a
//! compaction whose files appeared meanwhile) leaves an erasure recorded but not
//! finished, and the next run finishes it whatever is left, even when no active
//! file names the tenant any more. A tenant is known to an erasure by an
//! unfinished erasure, by the configuration, or by anything of it in the lake:
//! active or left-over files under `tenant_id=<id>/`, rejected events, rollup
//! rows. On a local lake the emptied `tenant_id=<id>/` directories go too, so no
//! path names the tenant (an object store has no directories).
//!
//! A dry run writes nothing, and nothing is ever created: a lake without
//! `usage_events` is [`LakeError::NoLake`].

use std::collections::{BTreeMap, HashSet};

use allot_schemas::layout::{LakeLocation, LakeTable};
use allot_schemas::table_schema::{
    ALERTS_APP_ID, alerts_schema, notice_key_tenant, rejected_events_schema, usage_hourly_schema,
};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Transaction};
use deltalake::logstore::object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;

use crate::append::LogAppender;
use crate::data_file::{open_lake_parquet, read_string_column};
use crate::error::LakeError;
use crate::snapshot::read_small_table;
use crate::tables::{
    commit_actions, open_existing_lake, open_existing_table, with_partition_values,
};

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
    /// Whether the configuration names the tenant (`[tenants.<id>]`): it may be
    /// erased with nothing of it in the lake.
    pub configured: bool,
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
    /// When the unfinished erasure this run resumed was started (RFC 3339).
    pub resumed: Option<String>,
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

/// Erases `options.tenant` from `usage_events`, `rejected_events`,
/// `usage_hourly` and `alerts`, recording it in `audit` first and last; see the module docs.
/// A tenant the lake knows nothing of (and the configuration does not name) is
/// [`LakeError::UnknownTenant`].
pub async fn delete_tenant(options: &DeleteOptions) -> Result<DeleteSummary, LakeError> {
    // Files written from here on may be another writer's commit in flight.
    let started = chrono::Utc::now();
    let usage = open_existing_lake(&options.lake).await?;
    let resumed = unfinished_erasure(&options.lake, &options.tenant).await?;
    if resumed.is_none() && !options.configured && !lake_knows(options, &usage).await? {
        return Err(LakeError::UnknownTenant(options.tenant.clone()));
    }
    if !options.dry_run && resumed.is_none() {
        record_audit(options, started, ErasureStatus::Started).await?;
        crash_point(Step::Intent);
    }
    let mut summary = DeleteSummary {
        dry_run: options.dry_run,
        resumed,
        ..DeleteSummary::default()
    };
    let erased = erase_partitions(options, usage, started).await?;
    summary
        .tables
        .insert(LakeTable::UsageEvents.dir_name(), erased);
    for table in ROW_TABLES {
        let erased = match open_existing_table(&options.lake, table).await? {
            Some(delta) => erase_rows(options, delta, table, started).await?,
            None => TableErasure::default(),
        };
        summary.tables.insert(table.dir_name(), erased);
    }
    if !options.dry_run && summary.files_left() == 0 {
        remove_tenant_dirs(options)?;
        // Stamped when it ends: after its intent's row, which it supersedes.
        let finished = chrono::Utc::now();
        record_audit(options, finished, ErasureStatus::Finished(&summary)).await?;
        crash_point(Step::Finished);
    }
    Ok(summary)
}

/// The commits of an erasure, after each of which the crash test stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
enum Step {
    /// The `audit` row of its intent.
    Intent,
    /// A table's commit (named by its directory).
    Table(&'static str),
    /// The `audit` row of the finished erasure.
    Finished,
}

impl Step {
    #[cfg(feature = "test-hooks")]
    fn name(self) -> &'static str {
        match self {
            Step::Intent => "intent",
            Step::Table(name) => name,
            Step::Finished => "finished",
        }
    }
}

/// Environment variable of the erasure's crash test hook: when it names a step
/// (`intent`, `usage_events`, `rejected_events`, `usage_hourly`, `alerts`,
/// `finished`),
/// `allot tenant delete` aborts the process right after that step's commit, as
/// a kill -9 would. Only builds with the `test-hooks` feature (the test
/// suite's) read it.
#[cfg(feature = "test-hooks")]
pub const ABORT_AFTER_ERASURE_STEP_ENV: &str = "ALLOT_TEST_ABORT_AFTER_ERASURE_STEP";

/// Aborts the process after `step` when the crash test asks for it.
fn crash_point(step: Step) {
    #[cfg(feature = "test-hooks")]
    if std::env::var(ABORT_AFTER_ERASURE_STEP_ENV).as_deref() == Ok(step.name()) {
        tracing::error!(step = step.name(), "test hook: aborting the erasure");
        std::process::abort();
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = step;
}

/// Whether anything of the tenant is in the lake: an active partition of
/// `usage_events`, a file left under `tenant_id=<id>/`, or a row of
/// `rejected_events`, `usage_hourly` or `alerts` in any stored file.
async fn lake_knows(options: &DeleteOptions, usage: &DeltaTable) -> Result<bool, LakeError> {
    let name = LakeTable::UsageEvents.dir_name();
    let active = usage
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
        .any(|file| {
            file.partition_values_map()
                .get("tenant_id")
                .cloned()
                .flatten()
                .as_deref()
                == Some(options.tenant.as_str())
        });
    if active {
        return Ok(true);
    }
    let store = usage.log_store().object_store(None);
    let prefix = tenant_prefix(&options.tenant);
    if store
        .list(Some(&prefix))
        .try_next()
        .await
        .map_err(|e| LakeError::table(name)(e.into()))?
        .is_some()
    {
        return Ok(true);
    }
    for table in ROW_TABLES {
        let Some(delta) = open_existing_table(&options.lake, table).await? else {
            continue;
        };
        let store = delta.log_store().object_store(None);
        for meta in stored_files(store.as_ref(), None, table.dir_name()).await? {
            if holds_tenant(&store, &meta.location, table, &options.tenant).await? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The tables whose files mix tenants: the tenant's rows are erased from them.
const ROW_TABLES: [LakeTable; 3] = [
    LakeTable::RejectedEvents,
    LakeTable::UsageHourly,
    LakeTable::Alerts,
];

/// The column of `table` that names a row's tenant, and how to read the tenant
/// from its value: `tenant_id`, or the notice key of an `alerts` row.
fn tenant_column(table: LakeTable) -> (&'static str, fn(&str) -> Option<&str>) {
    match table {
        LakeTable::Alerts => ("key", notice_key_tenant),
        _ => ("tenant_id", tenant_id_value),
    }
}

/// A `tenant_id` value names its tenant.
fn tenant_id_value(value: &str) -> Option<&str> {
    Some(value)
}

/// The directory of the tenant's partitions in `usage_events`.
fn tenant_prefix(tenant: &str) -> deltalake::Path {
    deltalake::Path::from(format!("tenant_id={tenant}"))
}

/// Removes the emptied `tenant_id=<id>/` directory of a local lake, and its
/// emptied `day=` directories: no path then names the tenant. A directory still
/// holding a file (one written during the run) stays.
fn remove_tenant_dirs(options: &DeleteOptions) -> Result<(), LakeError> {
    let Some(root) = options.lake.local_path() else {
        return Ok(());
    };
    let dir = root
        .join(LakeTable::UsageEvents.dir_name())
        .join(tenant_prefix(&options.tenant).as_ref());
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(dir_error(&dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| dir_error(&dir, e))?.path();
        if path.is_dir() {
            remove_empty_dir(&path)?;
        }
    }
    remove_empty_dir(&dir)
}

/// Removes `dir` if it is empty.
fn remove_empty_dir(dir: &std::path::Path) -> Result<(), LakeError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // Not empty: a file written during the run, counted as left.
        Err(_) if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) => Ok(()),
        Err(e) => Err(dir_error(dir, e)),
    }
}

fn dir_error(dir: &std::path::Path, e: std::io::Error) -> LakeError {
    LakeError::table(LakeTable::UsageEvents.dir_name())(deltalake::DeltaTableError::generic(
        format!("removing {}: {e}", dir.display()),
    ))
}

/// When the tenant's latest erasure was started, if it never finished: the
/// newest `audit` row of the tenant is a `tenant_delete` of status `started`.
async fn unfinished_erasure(
    location: &LakeLocation,
    tenant: &str,
) -> Result<Option<String>, LakeError> {
    let mut latest: Option<(String, bool)> = None;
    for batch in read_small_table(location, LakeTable::Audit).await? {
        let column = |name: &str| -> Result<arrow::array::ArrayRef, LakeError> {
            let found = batch
                .column_by_name(name)
                .ok_or_else(|| LakeError::Unreadable {
                    table: LakeTable::Audit.dir_name(),
                    message: format!("no {name} column"),
                })?;
            Ok(arrow::compute::cast(
                found,
                &arrow::datatypes::DataType::Utf8,
            )?)
        };
        let (at, action, tenants, details) = (
            column("at")?,
            column("action")?,
            column("tenant_id")?,
            column("details")?,
        );
        let (at, action, tenants, details) = (
            at.as_string::<i32>(),
            action.as_string::<i32>(),
            tenants.as_string::<i32>(),
            details.as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            if action.value(row) != AUDIT_ACTION || tenants.value(row) != tenant {
                continue;
            }
            // Rows are stamped in UTC with a fixed number of digits: their text
            // sorts as their time. A row without a status predates resumable
            // erasures and was written when its erasure ended.
            let started = serde_json::from_str::<serde_json::Value>(details.value(row))
                .is_ok_and(|d| d["status"] == "started");
            let at = at.value(row).to_string();
            if latest.as_ref().is_none_or(|(newest, _)| at >= *newest) {
                latest = Some((at, started));
            }
        }
    }
    Ok(latest.and_then(|(at, started)| started.then_some(at)))
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
    mut table: DeltaTable,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<TableErasure, LakeError> {
    let name = LakeTable::UsageEvents.dir_name();
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
        crash_point(Step::Table(name));
    }
    let store = table.log_store().object_store(None);
    let prefix = tenant_prefix(&options.tenant);
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

/// `rejected_events`, `usage_hourly` or `alerts`: the tenant's rows, in files
/// shared with other tenants.
async fn erase_rows(
    options: &DeleteOptions,
    mut table: DeltaTable,
    which: LakeTable,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<TableErasure, LakeError> {
    let name = which.dir_name();
    let schema = match which {
        LakeTable::UsageHourly => usage_hourly_schema(),
        LakeTable::Alerts => alerts_schema(),
        _ => rejected_events_schema(),
    };
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
        if !holds_tenant(&store, &path, which, &options.tenant).await? {
            continue;
        }
        let builder = open_lake_parquet(&store, &path).await?;
        let reader = builder.build().map_err(|source| LakeError::File {
            path: path.to_string(),
            source,
        })?;
        for batch in reader {
            let batch = with_partition_values(&batch?, &partition, &schema)?;
            let (kept, dropped) = without_tenant(&batch, which, &options.tenant)?;
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
        if which == LakeTable::Alerts {
            actions.push(next_alerts_sequence(&options.lake).await?);
        }
        let operation = DeltaOperation::Delete {
            predicate: Some(format!("tenant_id = '{}'", options.tenant)),
        };
        commit_actions(&mut table, name, actions, operation).await?;
        crash_point(Step::Table(name));
    }
    let active = active_paths(&mut table, name).await?;
    for meta in stored_files(store.as_ref(), None, name).await? {
        let path = meta.location.as_ref();
        if (active.contains(path) && !removed.contains(path))
            || !holds_tenant(&store, &meta.location, which, &options.tenant).await?
        {
            continue;
        }
        delete_erased(store.as_ref(), &meta, started, options, &mut erasure, name).await?;
    }
    Ok(erasure)
}

/// The `txn` action that moves the `alerts` sequence number on by one: a
/// server's next commit, fenced on the number it read, fails, and the server
/// reads the table again.
async fn next_alerts_sequence(lake: &LakeLocation) -> Result<Action, LakeError> {
    let mut appender = LogAppender::open(lake, LakeTable::Alerts).await?;
    let recorded = appender
        .recorded_offsets(&[ALERTS_APP_ID.to_string()])
        .await?;
    let next = recorded.first().copied().flatten().map_or(0, |seq| seq + 1);
    Ok(Action::Txn(Transaction::new(ALERTS_APP_ID, next)))
}

/// Whether a data file of `table` holds a row of `tenant` (its
/// [`tenant_column`] read).
async fn holds_tenant(
    store: &deltalake::logstore::ObjectStoreRef,
    path: &deltalake::Path,
    table: LakeTable,
    tenant: &str,
) -> Result<bool, LakeError> {
    let (column, tenant_of) = tenant_column(table);
    let mut found = false;
    read_string_column(store.clone(), path, column, |value| {
        found |= tenant_of(value) == Some(tenant)
    })
    .await?;
    Ok(found)
}

/// The rows of `batch` (of `table`) of other tenants, and how many of
/// `tenant`'s were dropped.
fn without_tenant(
    batch: &RecordBatch,
    table: LakeTable,
    tenant: &str,
) -> Result<(RecordBatch, u64), LakeError> {
    let (column, tenant_of) = tenant_column(table);
    let tenants = arrow::compute::cast(
        batch
            .column_by_name(column)
            .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("no {column} column")))?,
        &arrow::datatypes::DataType::Utf8,
    )?;
    let tenants: &StringArray = tenants.as_string::<i32>();
    let keep: BooleanArray = (0..tenants.len())
        .map(|row| Some(tenants.is_null(row) || tenant_of(tenants.value(row)) != Some(tenant)))
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

/// The `audit` action of an erasure.
const AUDIT_ACTION: &str = "tenant_delete";

/// Where an erasure stands, as its `audit` row records it.
enum ErasureStatus<'a> {
    /// Its intent, committed before anything is removed.
    Started,
    /// Done: nothing of the tenant left; what this run removed.
    Finished(&'a DeleteSummary),
}

/// Appends an erasure's row to the `audit` table.
async fn record_audit(
    options: &DeleteOptions,
    at: chrono::DateTime<chrono::Utc>,
    status: ErasureStatus<'_>,
) -> Result<u64, LakeError> {
    let details = match status {
        ErasureStatus::Started => serde_json::json!({ "status": "started" }),
        ErasureStatus::Finished(summary) => {
            let mut details = summary.to_json();
            details["status"] = "finished".into();
            if let Some(resumed) = &summary.resumed {
                details["resumed"] = resumed.clone().into();
            }
            details
        }
    };
    let column = |value: String| std::sync::Arc::new(StringArray::from(vec![value])) as _;
    let row = RecordBatch::try_new(
        allot_schemas::table_schema::audit_schema(),
        vec![
            column(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            column(options.who.clone()),
            column(AUDIT_ACTION.to_string()),
            column(options.tenant.clone()),
            column(details.to_string()),
        ],
    )?;
    crate::append::append_batch(&options.lake, LakeTable::Audit, row, Vec::new(), &[]).await
}
