//! Writing a table's Parquet files before they are committed.
//!
//! A writer of the lake (a collector's flush, a backfill's open tenant-days, a
//! period close) first writes its rows as data files, then commits them with
//! [`crate::append::LogAppender::append`]. A [`FileWriter`] does the first half
//! and hands back [`NewFile`]s: files in the table's directory that no reader
//! sees until a commit adds them. Both are allot's types, so the crates that
//! write never handle the Delta library's writer or actions themselves.

use std::collections::HashMap;

use allot_schemas::layout::{DedupTags, TenantDay};
use allot_schemas::table_schema::USAGE_PARTITION_COLUMNS;
use allot_schemas::time::days_since_epoch;
use arrow::array::RecordBatch;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use indexmap::IndexMap;

use crate::error::LakeError;

/// A data file written to a table's directory and not yet committed.
#[derive(Debug, Clone)]
pub struct NewFile(pub(crate) Add);

impl NewFile {
    /// The file's path, relative to the table's root.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.0.size.max(0) as u64
    }

    /// Records `tags` (what the writer's duplicate check saw) in the file's
    /// entry of the commit that will add it.
    pub fn tag(&mut self, tags: &DedupTags) {
        tags.write_into(self.0.tags.get_or_insert_with(HashMap::new));
    }
}

/// Writes Parquet files of one table, with the lake's codec and encodings
/// (`crate::data_file::writer_properties`).
pub struct FileWriter {
    table: &'static str,
    inner: RecordBatchWriter,
}

impl FileWriter {
    pub(crate) fn new(table: &'static str, inner: RecordBatchWriter) -> Self {
        FileWriter { table, inner }
    }

    /// Buffers `batch`, cut into the table's partitions by their columns.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), LakeError> {
        self.inner
            .write(batch)
            .await
            .map_err(LakeError::table(self.table))
    }

    /// Buffers `batch` of `usage_events`, all of whose rows are of the
    /// tenant-day `partition`: the rows are not grouped again.
    pub async fn write_tenant_day(
        &mut self,
        batch: RecordBatch,
        partition: &TenantDay,
    ) -> Result<(), LakeError> {
        let values: IndexMap<String, Scalar> = USAGE_PARTITION_COLUMNS
            .iter()
            .zip([
                Scalar::String(partition.tenant_id.clone()),
                Scalar::Date(days_since_epoch(partition.day)),
            ])
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        self.inner
            .write_partition(batch, &values, WriteMode::Default)
            .await
            .map_err(LakeError::table(self.table))?;
        Ok(())
    }

    /// Bytes buffered and not yet written as files.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.buffer_len()
    }

    /// Writes what is buffered as files and returns them; the writer can be
    /// used again.
    pub async fn flush(&mut self) -> Result<Vec<NewFile>, LakeError> {
        let adds = self
            .inner
            .flush()
            .await
            .map_err(LakeError::table(self.table))?;
        Ok(adds.into_iter().map(NewFile).collect())
    }
}
