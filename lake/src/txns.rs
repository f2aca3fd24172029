//! The `txn` actions a table's Delta log records: for each app id, the offset
//! its writer fenced its last commit on.
//!
//! The Delta libraries answer only for an app id the caller already knows. A
//! month's certificate must list every writer that committed (a collector's
//! app id carries its consumer group, which may have come from its command
//! line), so [`recorded_txns`] reads them all from the log itself: the newest
//! checkpoint at or before the version, then each commit after it.

use std::collections::BTreeMap;

use allot_schemas::layout::{LakeLocation, LakeTable};
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use deltalake::DeltaTableError;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;

use crate::error::LakeError;
use crate::snapshot::table_builder;

/// An offset a commit records for its writer's app id (a Delta `txn`): the
/// collector's Kafka offset of a partition, or a close's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOffset {
    /// Who wrote: a collector's group, topic and partition, or a month's close.
    pub app_id: String,
    /// How far it got.
    pub offset: i64,
}

impl AppOffset {
    /// The offset `offset` of `app_id`.
    pub fn new(app_id: impl Into<String>, offset: i64) -> Self {
        AppOffset {
            app_id: app_id.into(),
            offset,
        }
    }
}

/// What a commit line tells a reader of `txn`s; other actions are skipped.
#[derive(Deserialize)]
pub(crate) struct LogLine {
    pub txn: Option<TxnLine>,
    #[serde(rename = "metaData")]
    pub meta_data: Option<serde::de::IgnoredAny>,
    pub protocol: Option<serde::de::IgnoredAny>,
}

/// A `txn` action.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TxnLine {
    pub app_id: String,
    pub version: i64,
}

/// Every app id whose `txn` the log of `table` records at `version`, with its
/// newest offset.
pub async fn recorded_txns(
    location: &LakeLocation,
    table: LakeTable,
    version: u64,
) -> Result<BTreeMap<String, i64>, LakeError> {
    let name = table.dir_name();
    let unreadable = |message: String| LakeError::table(name)(DeltaTableError::Generic(message));
    let delta = table_builder(location, table)
        .and_then(|builder| builder.build())
        .map_err(LakeError::table(name))?;
    let store = delta.log_store().object_store(None);
    let log = deltalake::Path::from("_delta_log");
    let listed: Vec<deltalake::Path> = store
        .list(Some(&log))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| LakeError::table(name)(e.into()))?;

    // The newest checkpoint at or before `version`, with all of its parts.
    let checkpoint_version = listed
        .iter()
        .filter_map(|path| checkpoint_of(path.filename()?))
        .filter(|&v| v <= version)
        .max();
    let mut offsets = BTreeMap::new();
    if let Some(checkpoint) = checkpoint_version {
        for part in listed
            .iter()
            .filter(|path| path.filename().and_then(checkpoint_of) == Some(checkpoint))
        {
            let bytes = store
                .get(part)
                .await
                .map_err(|e| LakeError::table(name)(e.into()))?
                .bytes()
                .await
                .map_err(|e| LakeError::table(name)(e.into()))?;
            read_checkpoint_txns(bytes, &mut offsets)
                .map_err(|e| unreadable(format!("checkpoint {checkpoint}: {e}")))?;
        }
    }
    let first = checkpoint_version.map_or(0, |v| v + 1);
    for commit in first..=version {
        let path = deltalake::Path::from(format!("_delta_log/{commit:020}.json"));
        let bytes = store
            .get(&path)
            .await
            .map_err(|e| unreadable(format!("commit {commit} cannot be read: {e}")))?
            .bytes()
            .await
            .map_err(|e| LakeError::table(name)(e.into()))?;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line: LogLine = serde_json::from_slice(line)
                .map_err(|e| unreadable(format!("commit {commit}: {e}")))?;
            if let Some(txn) = line.txn {
                offsets.insert(txn.app_id, txn.version);
            }
        }
    }
    Ok(offsets)
}

/// The version of a checkpoint file's name (`<version>.checkpoint[.…].parquet`).
fn checkpoint_of(file_name: &str) -> Option<u64> {
    let (version, rest) = file_name.split_once('.')?;
    (version.len() == 20 && rest.starts_with("checkpoint") && rest.ends_with(".parquet"))
        .then(|| version.parse().ok())
        .flatten()
}

/// Adds the `txn` column of one checkpoint part to `offsets`.
fn read_checkpoint_txns(
    bytes: impl parquet::file::reader::ChunkReader + 'static,
    offsets: &mut BTreeMap<String, i64>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let Some(txn_root) = builder
        .parquet_schema()
        .root_schema()
        .get_fields()
        .iter()
        .position(|field| field.name() == "txn")
    else {
        return Ok(());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [txn_root]);
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let txns = batch.column(0).as_struct();
        let (Some(app_ids), Some(versions)) =
            (txns.column_by_name("appId"), txns.column_by_name("version"))
        else {
            return Err("the txn column has no appId or version".into());
        };
        let app_ids = cast(app_ids, &DataType::Utf8)?;
        let app_ids = app_ids.as_string::<i32>();
        let versions = versions.as_primitive::<Int64Type>();
        for row in 0..txns.len() {
            if txns.is_valid(row) && app_ids.is_valid(row) && versions.is_valid(row) {
                offsets.insert(app_ids.value(row).to_string(), versions.value(row));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_give_their_version() {
        assert_eq!(
            checkpoint_of("00000000000000000012.checkpoint.parquet"),
            Some(12)
        );
        assert_eq!(
            checkpoint_of("00000000000000000012.checkpoint.0000000001.0000000002.parquet"),
            Some(12)
        );
        assert_eq!(checkpoint_of("00000000000000000012.json"), None);
        assert_eq!(checkpoint_of("_last_checkpoint"), None);
        assert_eq!(checkpoint_of("12.checkpoint.parquet"), None);
    }
}
