//! Opening, creating and committing to the lake's Delta tables.
//!
//! Tables are created on first use with the schemas of
//! `allot_schemas::table_schema`. Appends go through [`crate::append`]; the
//! maintenance commits (compaction, rollups), which rewrite files they read,
//! through [`commit_actions`] on a loaded table.

use std::collections::HashMap;
use std::sync::Arc;

use allot_schemas::layout::{LakeLocation, LakeTable, TenantDay, usage_partition_dir};
use allot_schemas::table_schema::table_schema;
use allot_schemas::time::days_since_epoch;
use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{DataType, Field, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Metadata, MetadataExt, StructType};
use deltalake::logstore::LogStoreRef;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use parquet::arrow::ProjectionMask;

use crate::data_file::open_lake_parquet;
use crate::error::LakeError;
use crate::snapshot::{OpenedTable, open_table, table_builder};

/// The two tables a file backfill writes, loaded with their file lists (its
/// duplicate check reads the files of the partitions it writes to).
pub struct LakeTables {
    usage: DeltaTable,
    rejected: DeltaTable,
}

/// The files of some tenant-days of `usage_events` at one version.
#[derive(Debug, Default)]
pub struct PartitionFiles {
    /// Each tenant-day's files (paths relative to the table's root); a
    /// tenant-day without files is absent.
    pub files: HashMap<TenantDay, Vec<String>>,
    /// The version they were listed at.
    pub version: u64,
}

impl LakeTables {
    /// Opens the lake's tables, creating them (and, for a local lake, its
    /// directories) when they do not exist yet.
    pub async fn open_or_create(location: &LakeLocation) -> Result<LakeTables, LakeError> {
        Ok(LakeTables {
            usage: open_or_create_table(location, LakeTable::UsageEvents).await?,
            rejected: open_or_create_table(location, LakeTable::RejectedEvents).await?,
        })
    }

    /// The files of `partitions` in `usage_events` as of its newest version
    /// (read first).
    pub async fn usage_partition_files(
        &mut self,
        partitions: &[TenantDay],
    ) -> Result<PartitionFiles, LakeError> {
        let name = LakeTable::UsageEvents.dir_name();
        self.usage
            .update_state()
            .await
            .map_err(LakeError::table(name))?;
        let mut found = PartitionFiles {
            files: HashMap::new(),
            version: self.usage.version().unwrap_or_default(),
        };
        if partitions.is_empty() {
            return Ok(found);
        }
        let wanted: HashMap<String, &TenantDay> = partitions
            .iter()
            .map(|key| (tenant_day_dir(key), key))
            .collect();
        let snapshot = self.usage.snapshot().map_err(LakeError::table(name))?;
        for file in snapshot.log_data().iter() {
            let path = file.object_store_path();
            let Some((dir, _)) = path.as_ref().rsplit_once('/') else {
                continue;
            };
            if let Some(key) = wanted.get(dir) {
                found
                    .files
                    .entry((*key).clone())
                    .or_default()
                    .push(path.to_string());
            }
        }
        Ok(found)
    }

    /// The files of `rejected_events` as loaded (none before its first commit).
    pub fn rejected_files(&self) -> Result<Vec<String>, LakeError> {
        if self.rejected.version().unwrap_or(0) == 0 {
            return Ok(Vec::new());
        }
        let name = LakeTable::RejectedEvents.dir_name();
        Ok(self
            .rejected
            .snapshot()
            .map_err(LakeError::table(name))?
            .log_data()
            .iter()
            .map(|f| f.object_store_path().to_string())
            .collect())
    }

    /// The `columns` of one file of `usage_events` (a path it listed).
    pub async fn read_usage_file(
        &self,
        path: &str,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>, LakeError> {
        read_file_columns(&self.usage, path, columns).await
    }

    /// The `columns` of one file of `rejected_events` (a path it listed).
    pub async fn read_rejected_file(
        &self,
        path: &str,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>, LakeError> {
        read_file_columns(&self.rejected, path, columns).await
    }
}

/// The directory of a tenant-day partition, as Delta writes it.
fn tenant_day_dir(key: &TenantDay) -> String {
    usage_partition_dir(&key.tenant_id, &key.day.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// The `columns` of the file at `path` of `table`.
async fn read_file_columns(
    table: &DeltaTable,
    path: &str,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, LakeError> {
    let path = deltalake::Path::from(path);
    let store = table.log_store().object_store(None);
    let builder = open_lake_parquet(&store, &path).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|source| LakeError::File {
            path: path.to_string(),
            source,
        })?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// Opens `table` with its file list, creating it when it does not exist yet.
pub(crate) async fn open_or_create_table(
    location: &LakeLocation,
    table: LakeTable,
) -> Result<DeltaTable, LakeError> {
    let mut delta = DeltaTable::new(ensure_table(location, table).await?);
    delta
        .load()
        .await
        .map_err(LakeError::table(table.dir_name()))?;
    Ok(delta)
}

/// Opens `table` with its file list when it exists; `None` when it does not (a
/// maintenance command must not create what it only reads or cleans).
pub(crate) async fn open_existing_table(
    location: &LakeLocation,
    table: LakeTable,
) -> Result<Option<DeltaTable>, LakeError> {
    Ok(match open_table(location, table, None).await? {
        OpenedTable::Found(delta) => Some(delta),
        OpenedTable::Missing(_) => None,
    })
}

/// Opens `usage_events`, which every maintenance command needs: a lake without
/// it is [`LakeError::NoLake`] (a mistyped `--lake`, say), never created.
pub(crate) async fn open_existing_lake(location: &LakeLocation) -> Result<DeltaTable, LakeError> {
    open_existing_table(location, LakeTable::UsageEvents)
        .await?
        .ok_or(LakeError::NoLake)
}

/// `schema` as a Delta schema, for the log of table `name`.
pub(crate) fn kernel_schema(
    name: &'static str,
    schema: &SchemaRef,
) -> Result<StructType, LakeError> {
    schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| LakeError::table(name)(DeltaTableError::from(e)))
}

/// `metadata`, the metadata of table `name` whose schema is `current`, with the
/// columns of `wanted` that `current` lacks added (a table created before
/// allot's schema gained them); `None` when it lacks none. Rows of the files
/// already there read the added columns as null, so each must be nullable: a
/// missing column that is not is an error.
pub(crate) fn metadata_with_new_columns(
    name: &'static str,
    metadata: &Metadata,
    current: &StructType,
    wanted: &SchemaRef,
) -> Result<Option<(Metadata, Vec<String>)>, LakeError> {
    let missing: Vec<&Field> = wanted
        .fields()
        .iter()
        .filter(|f| current.field(f.name()).is_none())
        .map(AsRef::as_ref)
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    if let Some(field) = missing.iter().find(|f| !f.is_nullable()) {
        return Err(LakeError::table(name)(DeltaTableError::Generic(format!(
            "the table lacks column {}, which cannot be added to rows written before",
            field.name()
        ))));
    }
    let metadata = metadata
        .clone()
        .with_schema(&kernel_schema(name, wanted)?)
        .map_err(|e| LakeError::table(name)(e.into()))?;
    Ok(Some((
        metadata,
        missing.iter().map(|f| f.name().clone()).collect(),
    )))
}

/// Creates `table` (and, for a local lake, its directories) when it does not
/// exist yet, with its schema and partition columns; returns its log store
/// without reading the table.
pub(crate) async fn ensure_table(
    location: &LakeLocation,
    table: LakeTable,
) -> Result<LogStoreRef, LakeError> {
    let name = table.dir_name();
    location.ensure_local_dirs()?;
    let delta = table_builder(location, table)
        .and_then(DeltaTableBuilder::build)
        .map_err(LakeError::table(name))?;
    let log_store = delta.log_store();
    if log_store
        .is_delta_table_location()
        .await
        .map_err(LakeError::table(name))?
    {
        return Ok(log_store);
    }
    let (schema, partition_columns) = table_schema(table);
    let columns = kernel_schema(name, &schema)?;
    let created = delta
        .create()
        .with_table_name(name)
        .with_columns(columns.fields().cloned())
        .with_partition_columns(partition_columns.iter().copied())
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(_) => Ok(log_store),
        // Another writer may have created it at the same moment.
        Err(_) if log_store.is_delta_table_location().await.unwrap_or(false) => Ok(log_store),
        Err(err) => Err(LakeError::table(name)(err)),
    }
}

/// Commits `actions` to `table` as one Delta commit on its current snapshot, and
/// moves the table to the committed version.
pub(crate) async fn commit_actions(
    table: &mut DeltaTable,
    name: &'static str,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> Result<u64, LakeError> {
    let snapshot = table.snapshot().map_err(LakeError::table(name))?;
    let finalized = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(LakeError::table(name))?;
    table.state = Some(finalized.snapshot());
    Ok(finalized.version())
}

/// A data file's rows in the table's `schema`: the partition columns, which a
/// Delta data file does not store, filled in from the file's raw partition values
/// (`tenant_id` as text, `day` as `YYYY-MM-DD`), and the nullable columns added
/// to the schema after the file was written as nulls.
pub(crate) fn with_partition_values(
    batch: &RecordBatch,
    partition: &HashMap<String, Option<String>>,
    schema: &SchemaRef,
) -> Result<RecordBatch, LakeError> {
    let rows = batch.num_rows();
    let missing = |name: &str| {
        arrow::error::ArrowError::SchemaError(format!("data file lacks column {name}"))
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name().as_str();
            if let Some(column) = batch.column_by_name(name) {
                return Ok(column.clone());
            }
            if !partition.contains_key(name) && field.is_nullable() {
                return Ok(new_null_array(field.data_type(), rows));
            }
            let value = partition.get(name).cloned().flatten();
            Ok(match field.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from(vec![value; rows])) as ArrayRef,
                DataType::Date32 => {
                    let day = value
                        .as_deref()
                        .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                        .map(days_since_epoch);
                    Arc::new(Date32Array::from(vec![day; rows])) as ArrayRef
                }
                _ => return Err(missing(name)),
            })
        })
        .collect::<Result<_, arrow::error::ArrowError>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_schemas::time::date_of_epoch_days;

    #[test]
    fn tenant_day_dirs_match_delta_layout() {
        let key = |days| TenantDay::new("acme", date_of_epoch_days(days).unwrap());
        assert_eq!(tenant_day_dir(&key(0)), "tenant_id=acme/day=1970-01-01");
        assert_eq!(tenant_day_dir(&key(20513)), "tenant_id=acme/day=2026-03-01");
    }
}
