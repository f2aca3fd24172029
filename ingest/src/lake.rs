//! Opening, creating and committing to the lake's Delta tables.
//!
//! Tables are created on first use with the schemas of
//! `allot_schemas::table_schema`. Every append is one Delta commit; a commit may
//! carry `txn` actions recording, per Kafka partition, the last offset it covers.

use allot_schemas::lake::{LakeLocation, LakeTable};
use allot_schemas::table_schema::{
    REJECTED_PARTITION_COLUMNS, USAGE_PARTITION_COLUMNS, rejected_events_schema,
    usage_events_schema,
};
use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};

use crate::error::IngestError;

/// The two tables a collector writes.
pub struct LakeTables {
    /// `usage_events`.
    pub usage: DeltaTable,
    /// `rejected_events`.
    pub rejected: DeltaTable,
}

impl LakeTables {
    /// Opens the lake's tables, creating them (and, for a local lake, its
    /// directories) when they do not exist yet.
    pub async fn open_or_create(location: &LakeLocation) -> Result<LakeTables, IngestError> {
        location.ensure_local_dirs()?;
        let usage = open_or_create_table(
            location,
            LakeTable::UsageEvents,
            usage_events_schema(),
            &USAGE_PARTITION_COLUMNS,
        )
        .await?;
        let rejected = open_or_create_table(
            location,
            LakeTable::RejectedEvents,
            rejected_events_schema(),
            &REJECTED_PARTITION_COLUMNS,
        )
        .await?;
        Ok(LakeTables { usage, rejected })
    }
}

pub(crate) async fn open_or_create_table(
    location: &LakeLocation,
    table: LakeTable,
    schema: SchemaRef,
    partition_columns: &[&str],
) -> Result<DeltaTable, IngestError> {
    let name = table.dir_name();
    let url = location.table_url(table);
    let delta = DeltaTable::try_from_url(url.clone())
        .await
        .map_err(IngestError::lake(name))?;
    if delta.version().is_some() {
        return Ok(delta);
    }
    let columns: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| IngestError::lake(name)(DeltaTableError::from(e)))?;
    let created = delta
        .create()
        .with_table_name(name)
        .with_columns(columns.fields().cloned())
        .with_partition_columns(partition_columns.iter().copied())
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(table) => Ok(table),
        // Another collector may have created it at the same moment.
        Err(_) => {
            let mut reopened = DeltaTable::try_from_url(url)
                .await
                .map_err(IngestError::lake(name))?;
            reopened.load().await.map_err(IngestError::lake(name))?;
            Ok(reopened)
        }
    }
}

/// Commits `adds` to `table` as one append, with the given `txn` actions.
pub(crate) async fn commit_append(
    table: &mut DeltaTable,
    name: &'static str,
    adds: Vec<Add>,
    transactions: Vec<Transaction>,
) -> Result<u64, IngestError> {
    let snapshot = table.snapshot().map_err(IngestError::lake(name))?;
    let partition_by: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: (!partition_by.is_empty()).then_some(partition_by),
        predicate: None,
    };
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    actions.extend(transactions.into_iter().map(Action::Txn));
    commit_actions(table, name, actions, operation).await
}

/// Commits `actions` to `table` as one Delta commit on its current snapshot, and
/// moves the table to the committed version.
pub(crate) async fn commit_actions(
    table: &mut DeltaTable,
    name: &'static str,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> Result<u64, IngestError> {
    let snapshot = table.snapshot().map_err(IngestError::lake(name))?;
    let finalized = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(IngestError::lake(name))?;
    table.state = Some(finalized.snapshot());
    Ok(finalized.version())
}
