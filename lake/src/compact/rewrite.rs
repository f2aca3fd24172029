//! Rewriting the planned tenant-days, one worker per core, and handing
//! them to the commit batches.

use std::collections::{HashMap, HashSet};

use allot_schemas::layout::{DedupTags, LakeTable};
use allot_schemas::table_schema::usage_events_schema;
use arrow::compute::concat_batches;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

use super::CompactSummary;
use super::commit::{CommitBatch, Rewritten};
use super::judge::{RowKey, first_ingested_per_event};
use super::plan::{PartitionFiles, RewriteJob};
use crate::error::LakeError;
use crate::tables::with_partition_values;

/// Rewrites the `jobs` on one worker per core, in order, and commits them many
/// at a time ([`CommitBatch`]). A stop signal starts no new rewrite; those
/// running finish and are committed with the rest of the batch.
pub(super) async fn rewrite_and_commit(
    table: &mut DeltaTable,
    jobs: Vec<RewriteJob>,
    target_file_bytes: u64,
    cancel: &CancellationToken,
) -> Result<CompactSummary, LakeError> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    // The rewrites read the table's schema and store only: one copy serves all.
    let source = std::sync::Arc::new(table.clone());
    let mut jobs = jobs.into_iter();
    let mut running = std::collections::VecDeque::new();
    let mut summary = CompactSummary::default();
    let mut batch = CommitBatch::default();
    loop {
        while running.len() < workers && !cancel.is_cancelled() {
            let Some(job) = jobs.next() else { break };
            let source = std::sync::Arc::clone(&source);
            running.push_back(tokio::spawn(async move {
                let rewritten = rewrite_partition(
                    &source,
                    &job.files,
                    &job.rejected,
                    target_file_bytes,
                    job.tags,
                )
                .await;
                (job, rewritten)
            }));
        }
        let Some(next) = running.pop_front() else {
            break;
        };
        let joined = next.await.map_err(|e| {
            LakeError::table(LakeTable::UsageEvents.dir_name())(
                deltalake::DeltaTableError::Generic(format!("a rewrite stopped: {e}")),
            )
        });
        let (job, rewritten) = match joined {
            Ok((job, Ok(rewritten))) => (job, rewritten),
            Ok((job, Err(err))) => {
                // One partition must not stop the lake's compaction: it stays
                // as it is, and the others go on.
                tracing::warn!(
                    tenant_id = %job.partition.tenant_id,
                    day = %job.partition.day,
                    %err,
                    "cannot compact this tenant-day; skipped"
                );
                summary.skipped += 1;
                continue;
            }
            Err(err) => {
                // The run fails: the rewrites still running would only leave
                // files no commit references.
                running.iter().for_each(tokio::task::JoinHandle::abort);
                return Err(err);
            }
        };
        tracing::debug!(
            tenant_id = %job.partition.tenant_id,
            day = %job.partition.day,
            files = job.files.small.len(),
            added = rewritten.added,
            duplicates = rewritten.duplicates,
            "rewrote tenant-day"
        );
        batch.push(
            rewritten,
            job.files.small.iter().filter_map(|r| r.size).sum(),
        );
        if batch.is_full() && !batch.commit(table, target_file_bytes, &mut summary).await? {
            // Lost a race: the rewrites running are for files that may be gone.
            running.iter().for_each(tokio::task::JoinHandle::abort);
            return Ok(summary);
        }
    }
    // Also after a stop signal: the partitions rewritten so far are kept.
    batch.commit(table, target_file_bytes, &mut summary).await?;
    Ok(summary)
}

/// Rewrites the small files of one partition (all of them when `rejected` names
/// rows to remove), without the rows of `rejected`: returns the removes and adds
/// for the commit, the files added and the rows dropped.
pub(super) async fn rewrite_partition(
    table: &DeltaTable,
    files: &PartitionFiles,
    rejected: &HashSet<RowKey>,
    target_file_bytes: u64,
    tags: DedupTags,
) -> Result<Rewritten, LakeError> {
    let name = LakeTable::UsageEvents.dir_name();
    let store = table.log_store().object_store(None);
    let schema = usage_events_schema();
    let mut kept_ids: HashSet<String> = HashSet::new();
    for remove in &files.large {
        let path = deltalake::Path::from(remove.path.as_str());
        crate::data_file::read_string_column(store.clone(), &path, "event_id", |id| {
            kept_ids.insert(id.to_string());
        })
        .await?;
    }
    let removes = &files.small;
    let mut batches = Vec::new();
    for remove in removes {
        let path = deltalake::Path::from(remove.path.as_str());
        let file_error = |source| LakeError::File {
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
            let partition = remove.partition_values.clone().unwrap_or_default();
            batches.push(with_partition_values(&batch?, &partition, &schema)?);
        }
    }
    let all = concat_batches(&schema, &batches)?;
    drop(batches);
    let (kept, duplicates) = first_ingested_per_event(&all, &kept_ids, rejected)?;

    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(LakeError::table(name))?
        .with_writer_properties(crate::data_file::writer_properties())
        .with_target_file_size(target_file_bytes);
    if kept.num_rows() > 0 {
        writer.write(kept).await.map_err(LakeError::table(name))?;
    }
    let adds = writer.flush().await.map_err(LakeError::table(name))?;
    let added = adds.len() as u64;
    // `dataChange` false even when duplicates were dropped: the rows removed repeat
    // events the table still holds, and collectors appending meanwhile (whose
    // commits read the whole table) must not conflict with a compaction.
    let data_change = false;
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
        tags.write_into(add.tags.get_or_insert_with(HashMap::new));
        Action::Add(add)
    }));
    Ok(Rewritten {
        actions,
        removed: removes.len() as u64,
        added,
        duplicates,
    })
}
