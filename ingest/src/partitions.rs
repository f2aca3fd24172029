//! Cutting a `usage_events` batch into its tenant-day partitions, and writing
//! them as Parquet files: one file per tenant-day per batch for a collector's
//! flush ([`write_partitions`]); a backfill's open tenant-days
//! (`crate::open_days`) cut batches the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use allot_lake::append::LogAppender;
use allot_lake::file_writer::NewFile;
use allot_schemas::layout::TenantDay;
use allot_schemas::time::date_of_epoch_days;
use arrow::array::{AsArray, Date32Array, RecordBatch, StringArray};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Date32Type, TimestampMicrosecondType};

use crate::error::IngestError;
use crate::stages::{Stage, StageClock};

/// The earliest and latest `ingested_at` of a `usage_events` batch: bounds for
/// each of the files written from it.
pub(crate) fn ingested_bounds(batch: &RecordBatch) -> Option<(i64, i64)> {
    let ingested = batch
        .column_by_name("ingested_at")?
        .as_primitive_opt::<TimestampMicrosecondType>()?;
    Some((
        arrow::compute::min(ingested)?,
        arrow::compute::max(ingested)?,
    ))
}

/// The `tenant_id` and `day` columns of a `usage_events` batch.
pub(crate) fn partition_columns(batch: &RecordBatch) -> (&StringArray, &Date32Array) {
    let tenants = batch
        .column_by_name("tenant_id")
        .expect("schema")
        .as_string::<i32>();
    let days = batch
        .column_by_name("day")
        .expect("schema")
        .as_primitive::<Date32Type>();
    (tenants, days)
}

/// Writes a `usage_events` batch as Parquet files (not yet committed), one file
/// per tenant-day partition.
///
/// Delta's writer keeps an open Parquet writer (encoders and upload buffer) per
/// partition until it is flushed; given a batch spread over 10,000 tenants at once
/// it would hold 10,000 of them. Here the rows are ordered by partition and each
/// worker writes its share of the partitions one after the other, flushing after
/// each, so at most one writer per worker is open and memory does not grow with
/// the number of tenants. Partitions are cut from the batch as they are written
/// (no sorted copy of the whole batch). Creating thousands of small files is
/// mostly file-system work, so the workers (one per core, at most
/// [`MAX_WRITE_WORKERS`]) run on the runtime's threads side by side.
pub(crate) async fn write_partitions(
    table: &LogAppender,
    batch: RecordBatch,
    stages: &Arc<StageClock>,
) -> Result<Vec<NewFile>, IngestError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let sorting = Instant::now();
    let (order, ranges) = partition_order(&batch);
    stages.add(Stage::Build, sorting.elapsed());
    let shares = worker_shares(batch.num_rows(), ranges);
    let (batch, order) = (Arc::new(batch), Arc::new(order));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, share) in shares.into_iter().enumerate() {
        let mut writer = table.file_writer()?;
        let (batch, order, stages) = (batch.clone(), order.clone(), Arc::clone(stages));
        tasks.spawn(async move {
            let mut files = Vec::new();
            for range in share {
                let started = Instant::now();
                let rows = order.slice(range.start, range.len());
                // One tenant-day: its partition values are given, so the Delta
                // writer does not group the rows again.
                let key = partition_key(&batch, rows.value(0) as usize)?;
                let partition = take_record_batch(&batch, &rows)?;
                let built = Instant::now();
                stages.add(Stage::Build, built - started);
                writer.write_tenant_day(partition, &key).await?;
                let encoded = Instant::now();
                stages.add(Stage::Encode, encoded - built);
                files.extend(writer.flush().await?);
                stages.add(Stage::Write, encoded.elapsed());
            }
            Ok::<_, IngestError>((index, files))
        });
    }
    let mut written = join_workers(tasks, "a partition's writer").await?;
    written.sort_by_key(|(index, _)| *index);
    Ok(written.into_iter().flat_map(|(_, files)| files).collect())
}

/// Waits for every task of `tasks` (writers of one batch's tenant-days) and
/// returns their results as they finish; the first failure, or a task's panic
/// reported as `worker`'s, ends the wait and aborts the rest.
pub(crate) async fn join_workers<T: 'static>(
    mut tasks: tokio::task::JoinSet<Result<T, IngestError>>,
    worker: &'static str,
) -> Result<Vec<T>, IngestError> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.map_err(|source| IngestError::Worker { worker, source })??);
    }
    Ok(results)
}

/// The tenant-day of one row of a `usage_events` batch.
pub(crate) fn partition_key(batch: &RecordBatch, row: usize) -> Result<TenantDay, IngestError> {
    let (tenants, days) = partition_columns(batch);
    let day = date_of_epoch_days(days.value(row)).ok_or_else(|| {
        arrow::error::ArrowError::ComputeError(format!("day {} has no date", days.value(row)))
    })?;
    Ok(TenantDay::new(tenants.value(row), day))
}

/// The tenant-day `ranges` of a batch of `rows` rows in contiguous shares of
/// about equal rows, one per worker (one per core, at most
/// [`MAX_WRITE_WORKERS`]), so each worker's files stay in order.
pub(crate) fn worker_shares(
    rows: usize,
    ranges: Vec<std::ops::Range<usize>>,
) -> Vec<Vec<std::ops::Range<usize>>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_WRITE_WORKERS)
        .min(ranges.len())
        .max(1);
    let per_worker = rows.div_ceil(workers);
    let mut shares = vec![Vec::new()];
    let mut share_rows = 0;
    for range in ranges {
        if share_rows >= per_worker {
            shares.push(Vec::new());
            share_rows = 0;
        }
        share_rows += range.len();
        shares.last_mut().expect("one share at least").push(range);
    }
    shares
}

/// Most concurrent Parquet writers of one flush.
pub(crate) const MAX_WRITE_WORKERS: usize = 4;

/// The rows of a `usage_events` batch ordered by tenant and day (batch order
/// within a tenant-day), and the runs of that order that share a tenant-day.
///
/// Each row is keyed by one integer, the tenant's rank among the batch's
/// tenants and its day, so the sort compares integers, not strings.
pub(crate) fn partition_order(
    batch: &RecordBatch,
) -> (arrow::array::UInt32Array, Vec<std::ops::Range<usize>>) {
    let (tenants, days) = partition_columns(batch);
    let mut ranks: HashMap<&str, u64, ahash::RandomState> = HashMap::default();
    for tenant in tenants.iter().flatten() {
        ranks.entry(tenant).or_default();
    }
    let mut names: Vec<&str> = ranks.keys().copied().collect();
    names.sort_unstable();
    for (rank, name) in names.into_iter().enumerate() {
        ranks.insert(name, rank as u64);
    }
    // The day's bits flipped at the sign so that earlier days sort first.
    let keys: Vec<u64> = (0..batch.num_rows())
        .map(|row| {
            let rank = ranks[tenants.value(row)];
            (rank << 32) | u64::from(days.value(row) as u32 ^ 0x8000_0000)
        })
        .collect();
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_by_key(|&row| keys[row as usize]);
    let mut ranges = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || keys[order[i] as usize] != keys[order[start] as usize] {
            ranges.push(start..i);
            start = i;
        }
    }
    (order.into(), ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_ordered_by_tenant_then_day_keeping_batch_order() {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("tenant_id", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("day", arrow::datatypes::DataType::Date32, false),
        ]));
        let tenants = ["b", "a", "b", "a", "a", "b", "c"];
        let days = [3, 5, -2, 5, -1, 3, 0];
        let rows = RecordBatch::try_new(
            schema,
            vec![
                std::sync::Arc::new(StringArray::from(tenants.to_vec())),
                std::sync::Arc::new(Date32Array::from(days.to_vec())),
            ],
        )
        .unwrap();
        let (order, ranges) = partition_order(&rows);
        assert_eq!(order.values().to_vec(), vec![4, 1, 3, 2, 0, 5, 6]);
        assert_eq!(ranges, vec![0..1, 1..3, 3..4, 4..6, 6..7]);
    }
}
