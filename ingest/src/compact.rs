//! Compaction of `usage_events` per tenant-day (`allot compact`).
//!
//! Small files of a tenant-day partition are merged into few large ones (the
//! configured target size), and rows repeating a `(tenant_id, event_id)` are
//! removed there: the row ingested first is kept. Each partition is rewritten in
//! one Delta commit that removes the old files and adds the new ones, so a reader
//! sees either the old files or the new ones, never both. Collectors appending to
//! the same partition meanwhile do not conflict: their new files are untouched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use allot_schemas::lake::{LakeLocation, LakeTable};
use allot_schemas::table_schema::usage_events_schema;
use arrow::array::{ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, StringArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use deltalake::kernel::{Action, Remove};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

use crate::error::IngestError;
use crate::lake::{LakeTables, commit_actions};

/// What a compaction run needs.
pub struct CompactOptions {
    /// The lake.
    pub lake: LakeLocation,
    /// Target size of the files written.
    pub target_file_bytes: u64,
    /// Partitions with fewer files than this are left alone.
    pub min_files: usize,
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
    /// Rows dropped because their `(tenant_id, event_id)` was already there.
    pub duplicates_removed: u64,
}

/// Compacts every tenant-day partition that has at least `min_files` files.
pub async fn compact(
    options: CompactOptions,
    cancel: CancellationToken,
) -> Result<CompactSummary, IngestError> {
    let name = LakeTable::UsageEvents.dir_name();
    let tables = LakeTables::open_or_create(&options.lake).await?;
    let mut table = tables.usage;
    let mut by_partition: BTreeMap<(String, String), Vec<Remove>> = BTreeMap::new();
    for file in table
        .snapshot()
        .map_err(IngestError::lake(name))?
        .log_data()
        .iter()
    {
        let values = file.partition_values_map();
        let (Some(Some(tenant)), Some(Some(day))) = (values.get("tenant_id"), values.get("day"))
        else {
            continue;
        };
        by_partition
            .entry((tenant.clone(), day.clone()))
            .or_default()
            .push(file.remove_action(false));
    }
    let mut summary = CompactSummary::default();
    for ((tenant_id, day), removes) in by_partition {
        if cancel.is_cancelled() {
            break;
        }
        if removes.len() < options.min_files.max(1) {
            continue;
        }
        let Some(day_number) = parse_day(&day) else {
            continue;
        };
        let (added, duplicates) = compact_partition(
            &mut table,
            &tenant_id,
            day_number,
            &removes,
            options.target_file_bytes,
        )
        .await?;
        summary.partitions += 1;
        summary.files_removed += removes.len() as u64;
        summary.files_added += added;
        summary.duplicates_removed += duplicates;
        tracing::info!(%tenant_id, %day, files = removes.len(), added, duplicates, "compacted tenant-day");
    }
    Ok(summary)
}

/// Days since the epoch of a `YYYY-MM-DD` partition value.
fn parse_day(day: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// Rewrites one partition: returns the files added and the duplicates dropped.
async fn compact_partition(
    table: &mut deltalake::DeltaTable,
    tenant_id: &str,
    day: i32,
    removes: &[Remove],
    target_file_bytes: u64,
) -> Result<(u64, u64), IngestError> {
    let name = LakeTable::UsageEvents.dir_name();
    let store = table.log_store().object_store(None);
    let schema = usage_events_schema();
    let mut batches = Vec::new();
    for remove in removes {
        let path = deltalake::Path::from(remove.path.as_str());
        let file_error = |source| IngestError::LakeFile {
            path: remove.path.clone(),
            source,
        };
        let object_error = |e: deltalake::ObjectStoreError| {
            file_error(parquet::errors::ParquetError::External(Box::new(e)))
        };
        let bytes = store
            .get(&path)
            .await
            .map_err(object_error)?
            .bytes()
            .await
            .map_err(object_error)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(file_error)?
            .build()
            .map_err(file_error)?;
        for batch in reader {
            batches.push(with_partition_columns(&batch?, tenant_id, day, &schema)?);
        }
    }
    let all = concat_batches(&schema, &batches)?;
    let (kept, duplicates) = first_ingested_per_event(&all)?;

    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(IngestError::lake(name))?
        .with_target_file_size(target_file_bytes);
    if kept.num_rows() > 0 {
        writer.write(kept).await.map_err(IngestError::lake(name))?;
    }
    let adds = writer.flush().await.map_err(IngestError::lake(name))?;
    let added = adds.len() as u64;
    let data_change = duplicates > 0;
    let mut actions: Vec<Action> = removes
        .iter()
        .cloned()
        .map(|mut remove| {
            remove.data_change = data_change;
            Action::Remove(remove)
        })
        .collect();
    actions.extend(adds.into_iter().map(|mut add| {
        add.data_change = data_change;
        Action::Add(add)
    }));
    let operation = DeltaOperation::Optimize {
        predicate: Some(format!("tenant_id = '{tenant_id}' AND day = {day}")),
        target_size: i64::try_from(target_file_bytes).unwrap_or(i64::MAX),
    };
    commit_actions(table, name, actions, operation).await?;
    Ok((added, duplicates))
}

/// Adds the partition columns a data file does not store.
fn with_partition_columns(
    batch: &RecordBatch,
    tenant_id: &str,
    day: i32,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, IngestError> {
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "tenant_id" => Ok(Arc::new(StringArray::from(vec![tenant_id; rows])) as ArrayRef),
            "day" => Ok(Arc::new(Date32Array::from_value(day, rows)) as ArrayRef),
            other => batch.column_by_name(other).cloned().ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("data file lacks column {other}"))
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Keeps, for each event id, the row with the earliest `ingested_at` (then the
/// smallest `source`); returns the rows kept and how many were dropped.
fn first_ingested_per_event(batch: &RecordBatch) -> Result<(RecordBatch, u64), IngestError> {
    let ids = batch
        .column_by_name("event_id")
        .expect("schema")
        .as_string::<i32>();
    let ingested = batch
        .column_by_name("ingested_at")
        .expect("schema")
        .as_primitive::<TimestampMicrosecondType>();
    let sources = batch
        .column_by_name("source")
        .expect("schema")
        .as_string::<i32>();
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let key = (ingested.value(row), sources.value(row));
        first
            .entry(ids.value(row))
            .and_modify(|best| {
                if key < (ingested.value(*best), sources.value(*best)) {
                    *best = row;
                }
            })
            .or_insert(row);
    }
    let duplicates = (batch.num_rows() - first.len()) as u64;
    if duplicates == 0 {
        return Ok((batch.clone(), 0));
    }
    let mut keep = vec![false; batch.num_rows()];
    for row in first.into_values() {
        keep[row] = true;
    }
    Ok((
        filter_record_batch(batch, &BooleanArray::from(keep))?,
        duplicates,
    ))
}
