//! Committing rewritten tenant-days many at a time, fenced against other
//! compactions, and the checkpoint a run leaves.

use allot_schemas::layout::LakeTable;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, Transaction};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::protocol::DeltaOperation;

use super::CompactSummary;
use crate::error::LakeError;
use crate::tables::commit_actions;

/// Commits between checkpoints that a background compaction lets pass: the
/// collectors' appends never write one (that would need the file list).
pub(super) const CHECKPOINT_EVERY_COMMITS: u64 = 100;

/// Writes a checkpoint of `which` (`table`, brought up to date first) unless
/// the newest one is fewer than `min_commits` commits old. A checkpoint lets
/// readers load the table from one Parquet file instead of replaying every
/// commit.
pub(super) async fn write_checkpoint(
    table: &mut DeltaTable,
    which: LakeTable,
    min_commits: u64,
) -> Result<(), LakeError> {
    let name = which.dir_name();
    table.update_state().await.map_err(LakeError::table(name))?;
    let version = table.version().unwrap_or(0);
    if min_commits > 0 {
        let last = table
            .log_store()
            .object_store(None)
            .get(&deltalake::Path::from("_delta_log/_last_checkpoint"))
            .await;
        let last_version = match last {
            Ok(found) => found
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["version"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        };
        if version < last_version + min_commits {
            return Ok(());
        }
    }
    deltalake::checkpoints::create_checkpoint(table, None)
        .await
        .map_err(LakeError::table(name))
}

/// The most bytes of small files one commit rewrites: bounds the work a lost
/// race throws away, and what a stop signal waits for.
pub const COMMIT_INPUT_BYTES: i64 = 512 << 20;
/// The most partitions one commit rewrites: bounds the size of its log entry.
pub const COMMIT_PARTITIONS: u64 = 2_000;

/// One partition rewritten, not committed yet.
pub(super) struct Rewritten {
    /// Its removes and adds.
    pub(super) actions: Vec<Action>,
    pub(super) removed: u64,
    pub(super) added: u64,
    pub(super) duplicates: u64,
}

/// Rewritten partitions waiting for their commit.
#[derive(Default)]
pub(super) struct CommitBatch {
    pub(super) actions: Vec<Action>,
    pub(super) partitions: u64,
    pub(super) files_removed: u64,
    pub(super) files_added: u64,
    pub(super) duplicates: u64,
    pub(super) input_bytes: i64,
}

impl CommitBatch {
    pub(super) fn push(&mut self, rewritten: Rewritten, input_bytes: i64) {
        self.actions.extend(rewritten.actions);
        self.partitions += 1;
        self.files_removed += rewritten.removed;
        self.files_added += rewritten.added;
        self.duplicates += rewritten.duplicates;
        self.input_bytes += input_bytes;
    }

    pub(super) fn is_full(&self) -> bool {
        self.input_bytes >= COMMIT_INPUT_BYTES || self.partitions >= COMMIT_PARTITIONS
    }

    /// Commits the batch and counts it in `summary`; `false` when another
    /// compaction committed since the files were listed (the list may name
    /// files it removed, so the run stops and the next one lists again).
    pub(super) async fn commit(
        &mut self,
        table: &mut DeltaTable,
        target_file_bytes: u64,
        summary: &mut CompactSummary,
    ) -> Result<bool, LakeError> {
        let batch = std::mem::take(self);
        if batch.partitions == 0 {
            return Ok(true);
        }
        let mut actions = batch.actions;
        // Every compaction commit records the same `txn` app id, so two
        // compactions (two collectors, or `allot compact` beside them) committing
        // concurrently always conflict, whatever their `dataChange`; otherwise
        // both could remove the same files and add two rewritten copies of them.
        actions.push(Action::Txn(Transaction::new(
            COMPACTION_APP_ID,
            chrono::Utc::now().timestamp_micros(),
        )));
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: i64::try_from(target_file_bytes).unwrap_or(i64::MAX),
        };
        let name = LakeTable::UsageEvents.dir_name();
        match commit_actions(table, name, actions, operation).await {
            Ok(_) => {}
            Err(err) if is_commit_conflict(&err) => {
                tracing::info!(partitions = batch.partitions, %err, "another compaction committed meanwhile; stopping this run");
                summary.conflicts += 1;
                return Ok(false);
            }
            Err(err) => return Err(err),
        }
        summary.partitions += batch.partitions;
        summary.files_removed += batch.files_removed;
        summary.files_added += batch.files_added;
        summary.duplicates_removed += batch.duplicates;
        tracing::info!(
            partitions = batch.partitions,
            files_removed = batch.files_removed,
            files_added = batch.files_added,
            duplicates = batch.duplicates,
            "committed compacted tenant-days"
        );
        Ok(true)
    }
}

/// The `txn` app id every compaction commit records (its version: the commit time
/// in microseconds), which makes concurrent compactions conflict.
pub const COMPACTION_APP_ID: &str = "allot-compaction";

/// Whether a compaction commit lost a race with another commit.
pub(super) fn is_commit_conflict(err: &LakeError) -> bool {
    matches!(
        err,
        LakeError::Table {
            source: deltalake::DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
            } | deltalake::DeltaTableError::VersionAlreadyExists(_),
            ..
        }
    )
}
