//! Compaction of a log table (`alerts`): a small unpartitioned table that
//! gains one file per commit through a [`LogAppender`], every commit fenced on
//! one app id's offset, and that its readers read whole.
//!
//! ```text
//! list the active files ─▶ read their rows ─▶ write them as one file
//!     ─▶ commit: remove the listed files, add the new one, offset + 1 (fenced)
//!     ─▶ checkpoint
//! ```
//!
//! The new file holds every row of the files it replaces, in the order its
//! readers read them (files in path order, each file's rows in order), so the
//! table says exactly what it said before. The commit is fenced on the offset
//! the caller read, and moves it on: a writer that committed since the files
//! were listed (its file would be left out) fences the compaction, and two
//! compactions never both remove the same files. A checkpoint then lets
//! readers load the table without replaying every commit, and the log
//! entries older than the table's log retention (Delta's
//! `logRetentionDuration`, 30 days by default) that precede a checkpoint as
//! old are deleted, so the log too stays bounded; the removed data files stay
//! until `allot vacuum` deletes them after its retention.
//!
//! A run killed before its commit leaves one file no commit references, which
//! readers never see and vacuum deletes; a run killed after it is done.

use allot_schemas::layout::{LakeLocation, LakeTable};
use deltalake::kernel::Remove;

use super::commit::write_checkpoint;
use crate::append::LogAppender;
use crate::error::LakeError;
use crate::snapshot::{OpenedTable, open_table, read_table_files};
use crate::txns::AppOffset;

/// What one compaction of a log table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCompaction {
    /// Files replaced.
    pub files_removed: usize,
    /// Files written in their place.
    pub files_added: usize,
    /// Rows carried over.
    pub rows: usize,
    /// The version of the commit.
    pub version: u64,
}

/// Compacts `table` when it has at least `min_files` active files; see the
/// module docs. `offset` is recorded, provided the table still records
/// `expected` (else [`LakeError::Fenced`]). `None`: too few files to bother.
pub async fn compact_log_table(
    location: &LakeLocation,
    table: LakeTable,
    appender: &mut LogAppender,
    offset: AppOffset,
    expected: &[(String, Option<i64>)],
    min_files: usize,
) -> Result<Option<LogCompaction>, LakeError> {
    let name = table.dir_name();
    let OpenedTable::Found(mut delta) = open_table(location, table, None).await? else {
        return Ok(None);
    };
    let mut listed: Vec<(String, Remove)> = delta
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
        .map(|file| {
            (
                file.object_store_path().to_string(),
                file.remove_action(false),
            )
        })
        .collect();
    if listed.len() < min_files.max(2) {
        return Ok(None);
    }
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let paths: Vec<String> = listed.iter().map(|(path, _)| path.clone()).collect();
    let batches = read_table_files(&delta, table, &paths).await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut writer = appender.file_writer()?;
    for batch in batches {
        writer.write(batch).await?;
    }
    let files = writer.flush().await?;
    let files_added = files.len();
    abort_before_commit_hook();
    let removes = listed.into_iter().map(|(_, remove)| remove).collect();
    let version = appender
        .replace(removes, files, vec![offset], expected)
        .await?;
    tracing::info!(
        table = name,
        files_removed = paths.len(),
        files_added,
        rows,
        version,
        "compacted"
    );
    write_checkpoint(&mut delta, table, 0).await?;
    // Log entries older than the table's log retention (30 days unless set)
    // and before a checkpoint as old: nobody reads them any more.
    let expired = deltalake::checkpoints::cleanup_metadata(&delta, None)
        .await
        .map_err(LakeError::table(name))?;
    tracing::debug!(table = name, expired, "expired log entries deleted");
    Ok(Some(LogCompaction {
        files_removed: paths.len(),
        files_added,
        rows,
        version,
    }))
}

/// The env var of the crash test's hook (builds with `test-hooks` only): the
/// process aborts after writing the merged file, before its commit, as a
/// kill -9 would.
#[cfg(feature = "test-hooks")]
pub const ABORT_BEFORE_COMMIT_ENV: &str = "ALLOT_TEST_ABORT_LOG_COMPACTION_BEFORE_COMMIT";

fn abort_before_commit_hook() {
    #[cfg(feature = "test-hooks")]
    if std::env::var_os(ABORT_BEFORE_COMMIT_ENV).is_some() {
        tracing::error!("test hook: aborting the compaction before its commit");
        std::process::abort();
    }
}
