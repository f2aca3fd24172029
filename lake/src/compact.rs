//! Compaction of `usage_events` per tenant-day (`allot compact`, and in the
//! background inside every collector).
//!
//! The small files of a tenant-day partition (under half the configured target
//! size) are merged into few large ones, and rows that do not count under the
//! dedup window (see `crate::dedup`) are removed there: the query engine
//! names the rows a copy ingested earlier beats, in every partition whose
//! rollups are not current (new files in it, or earlier-ingested files in its
//! neighbours within the window, since the last refresh); such a partition is
//! rewritten whole. Otherwise a row whose id is already in one of the
//! partition's large files is dropped, and among the small files the row
//! ingested first is kept; large files are never rewritten, so a busy tenant-day
//! is not read and written again on every run; only their event ids are read.
//!
//! A rewritten file keeps the dedup tags its sources vouch for (see
//! `crate::dedup`): the newest source's `allot.version`; as
//! `allot.checked_at` the version this run judged, when it judged the partition,
//! else the oldest source's; the union of their `allot.ingested_at` bounds. A
//! source without a tag leaves the file without it.
//!
//! A partition that cannot be rewritten never stops the lake's compaction: it
//! is left as it is, logged with its error and counted
//! ([`CompactSummary::skipped`], `allot_compaction_skipped_partitions_total`),
//! and the run goes on with the others. So is a partition whose day lies
//! outside the instants the pipeline supports (docs/reference.md#event-format), which only a lake
//! written before ingest enforced the range can hold: no reader sees its rows.
//!
//! Rewritten partitions are committed many at a time (up to
//! [`COMMIT_INPUT_BYTES`] of files read or [`COMMIT_PARTITIONS`] partitions per
//! commit): one Delta commit removes their old files and adds the new ones, so a
//! reader sees either the old files or the new ones, never both, and the cost of
//! a commit (which brings the table's state forward) is paid per batch, not per
//! tenant-day. A run stopped by a signal commits the partitions already rewritten;
//! the next run resumes with the rest. Collectors appending meanwhile do not
//! conflict: their new files are untouched. Every compaction commit records the `txn` app id
//! [`COMPACTION_APP_ID`], so two compactions committing at once conflict; the
//! loser stops its run (its list of files may be stale) and the next run lists the
//! files again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use allot_schemas::config::MetricCatalog;
use allot_schemas::layout::{DedupTags, LakeLocation, LakeTable, TenantDay};
use allot_schemas::table_schema::usage_events_schema;
use allot_schemas::time::is_supported_event_day;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, Remove, Transaction};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

use crate::dedup::DedupWindow;
use crate::error::LakeError;
use crate::rollup::{RollupSummary, refresh_rollups};
use crate::session::{LakeSession, Scope, SessionLimits};
use crate::snapshot::{LakeSnapshot, partition_date};
use crate::tables::{
    commit_actions, open_existing_lake, open_or_create_table, with_partition_values,
};
use crate::telemetry;

/// What a compaction run needs.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// The lake.
    pub lake: LakeLocation,
    /// Target size of the files written.
    pub target_file_bytes: u64,
    /// Partitions with fewer small files than this are left alone.
    pub min_files: usize,
    /// The catalog whose gauges the rollups weigh.
    pub catalog: MetricCatalog,
    /// The dedup window (`ingest.dedup_window`): rows it rejects are removed.
    pub dedup_window: DedupWindow,
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
    /// Rows dropped because a copy of their event ingested earlier is within the
    /// dedup window.
    pub duplicates_removed: u64,
    /// 1 when the run stopped because another compaction committed meanwhile.
    pub conflicts: u64,
    /// Tenant-day partitions left as they were because they could not be
    /// rewritten (an unreadable file, a row outside what the engine can hold);
    /// each is logged with its error, and the run goes on with the others.
    pub skipped: u64,
    /// What refreshing the rollups afterwards did.
    pub rollups: RollupSummary,
}

/// Compacts every tenant-day partition that has at least `min_files` small files,
/// refreshes the rollups and writes a checkpoint of `usage_events`. A lake
/// without `usage_events` is [`LakeError::NoLake`]: nothing is created.
pub async fn compact(
    options: CompactOptions,
    cancel: CancellationToken,
) -> Result<CompactSummary, LakeError> {
    let table = open_existing_lake(&options.lake).await?;
    compaction_pass(table, &options, &cancel, 0).await
}

/// Compacts, refreshes the rollups, and writes a checkpoint unless the newest is
/// fewer than `checkpoint_after` commits old. The table (with its file list) is
/// loaded for the pass only.
async fn compaction_pass(
    mut table: DeltaTable,
    options: &CompactOptions,
    cancel: &CancellationToken,
    checkpoint_after: u64,
) -> Result<CompactSummary, LakeError> {
    let mut summary = compact_table(&mut table, options, cancel).await?;
    summary.rollups =
        refresh_rollups(&options.lake, &options.catalog, options.dedup_window).await?;
    write_checkpoint(&mut table, checkpoint_after).await?;
    Ok(summary)
}

/// Commits between checkpoints that a background compaction lets pass: the
/// collectors' appends never write one (that would need the file list).
const CHECKPOINT_EVERY_COMMITS: u64 = 100;

/// Writes a checkpoint of `usage_events` (brought up to date first) unless the
/// newest one is fewer than `min_commits` commits old. A checkpoint lets readers
/// load the table from one Parquet file instead of replaying every commit.
async fn write_checkpoint(table: &mut DeltaTable, min_commits: u64) -> Result<(), LakeError> {
    let name = LakeTable::UsageEvents.dir_name();
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

/// Background compaction inside a collector: what to compact, and how often.
#[derive(Debug, Clone)]
pub struct BackgroundCompaction {
    /// Time between runs; zero disables background compaction.
    pub interval: Duration,
    /// What each run does.
    pub options: CompactOptions,
}

/// Compacts `table` every `settings.interval` until `cancel` fires. A failed run
/// is logged and retried on the next tick; it never stops the collector.
pub async fn run_background_compaction(settings: BackgroundCompaction, cancel: CancellationToken) {
    if settings.interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        // The collector writes to the lake it compacts: it may create it.
        let pass = async {
            let table =
                open_or_create_table(&settings.options.lake, LakeTable::UsageEvents).await?;
            compaction_pass(table, &settings.options, &cancel, CHECKPOINT_EVERY_COMMITS).await
        };
        match pass.await {
            Ok(summary) => {
                if summary.partitions > 0 || summary.conflicts > 0 || summary.skipped > 0 {
                    tracing::info!(
                        partitions = summary.partitions,
                        files_removed = summary.files_removed,
                        files_added = summary.files_added,
                        duplicates = summary.duplicates_removed,
                        conflicts = summary.conflicts,
                        skipped = summary.skipped,
                        "background compaction done"
                    );
                }
                if summary.rollups.partitions > 0 {
                    tracing::info!(
                        partitions = summary.rollups.partitions,
                        days = summary.rollups.days,
                        rows = summary.rollups.rows,
                        "rollups refreshed"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(%err, "background compaction failed; retrying on the next run");
            }
        }
    }
}

/// Compacts the tenant-days of `table` (brought up to date first) and records the
/// run in the metrics.
pub async fn compact_table(
    table: &mut DeltaTable,
    options: &CompactOptions,
    cancel: &CancellationToken,
) -> Result<CompactSummary, LakeError> {
    let result = compact_partitions(table, options, cancel).await;
    let summary = result.as_ref().cloned().unwrap_or_default();
    telemetry::record_compaction(
        result.is_ok(),
        summary.partitions,
        summary.files_removed,
        summary.files_added,
        summary.duplicates_removed,
        summary.conflicts,
        summary.skipped,
    );
    result
}

/// The files of one tenant-day partition.
#[derive(Default)]
struct PartitionFiles {
    /// Files under half the target size: merged.
    small: Vec<Remove>,
    /// Larger files: kept, only their event ids are read (unless the partition
    /// holds rows the dedup window rejects: then they are rewritten too).
    large: Vec<Remove>,
    /// The dedup tags of every file, by path.
    tags: HashMap<String, DedupTags>,
}

impl PartitionFiles {
    /// The dedup tags of a file rewriting the small files: its rows were all in
    /// the table by the newest source's version; they were checked at `judged_at`
    /// when this run judged the partition, else as far as every source was; their
    /// `ingested_at` lies within the sources' bounds.
    fn rewritten_tags(&self, judged_at: Option<u64>) -> DedupTags {
        let sources: Vec<DedupTags> = self
            .small
            .iter()
            .map(|r| self.tags.get(&r.path).copied().unwrap_or_default())
            .collect();
        let all = |get: fn(&DedupTags) -> Option<u64>| -> Option<Vec<u64>> {
            sources.iter().map(get).collect()
        };
        let ingested: Option<Vec<(i64, i64)>> = sources.iter().map(|t| t.ingested).collect();
        DedupTags {
            version: all(|t| t.version).and_then(|v| v.into_iter().max()),
            checked_at: judged_at.or_else(|| all(|t| t.checked_at)?.into_iter().min()),
            ingested: ingested.and_then(|bounds| {
                let min = bounds.iter().map(|b| b.0).min()?;
                let max = bounds.iter().map(|b| b.1).max()?;
                Some((min, max))
            }),
        }
    }
}

/// A row of `usage_events` within its partition: event id, `ingested_at`, source.
type RowKey = (String, i64, String);

/// The rows the dedup window rejects, per partition.
type Beaten = BTreeMap<TenantDay, HashSet<RowKey>>;

/// What a run's judgement of the table found.
#[derive(Default)]
struct Judged {
    /// The rows that do not count, in the partitions judged.
    beaten: Beaten,
    /// The table version judged (`None`: no table yet).
    version: Option<u64>,
    /// The partitions not judged: their rollups were current.
    current: BTreeSet<TenantDay>,
}

async fn compact_partitions(
    table: &mut DeltaTable,
    options: &CompactOptions,
    cancel: &CancellationToken,
) -> Result<CompactSummary, LakeError> {
    let (target_file_bytes, min_files) = (options.target_file_bytes, options.min_files);
    let name = LakeTable::UsageEvents.dir_name();
    table.update_state().await.map_err(LakeError::table(name))?;
    let Judged {
        mut beaten,
        version: judged_version,
        current,
    } = beaten_rows(options).await?;
    let small_below = target_file_bytes / 2;
    let mut by_partition: BTreeMap<TenantDay, PartitionFiles> = BTreeMap::new();
    let mut unsupported: BTreeSet<TenantDay> = BTreeSet::new();
    for file in table
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
    {
        // Delta-rs offers a file's tags only through its Add action, which also
        // carries its partition values.
        #[allow(deprecated)]
        let add = file.add_action();
        let values = &add.partition_values;
        let (Some(Some(tenant)), Some(Some(day))) = (values.get("tenant_id"), values.get("day"))
        else {
            continue;
        };
        let Some(day) = parse_day(day) else {
            continue;
        };
        if !is_supported_event_day(day) {
            // Stored before ingest refused such a `ts`: the query engine cannot
            // hold its rows, and no reader sees them.
            unsupported.insert(TenantDay::new(tenant.clone(), day));
            continue;
        }
        let files = by_partition
            .entry(TenantDay::new(tenant.clone(), day))
            .or_default();
        files
            .tags
            .insert(add.path.clone(), DedupTags::read(add.tags.as_ref()));
        if u64::try_from(file.size()).unwrap_or(0) < small_below {
            files.small.push(file.remove_action(false));
        } else {
            files.large.push(file.remove_action(false));
        }
    }
    let mut jobs = Vec::new();
    for (partition, mut files) in by_partition {
        let rejected = beaten.remove(&partition).unwrap_or_default();
        if rejected.is_empty() && files.small.len() < min_files.max(2) {
            continue;
        }
        if !rejected.is_empty() {
            // Rejected rows may sit in large files: rewrite the whole partition.
            let large = std::mem::take(&mut files.large);
            files.small.extend(large);
        }
        // Every file listed here was in the table this run judged (listed first),
        // so a partition it judged is checked as of that version.
        let judged = !current.contains(&partition);
        let tags = files.rewritten_tags(judged_version.filter(|_| judged));
        jobs.push(RewriteJob {
            partition,
            files,
            rejected,
            tags,
        });
    }
    for partition in &unsupported {
        tracing::warn!(
            tenant_id = %partition.tenant_id,
            day = %partition.day,
            "cannot compact this tenant-day: its day is outside the supported range \
             (1970-01-01 to 2261-12-31); skipped"
        );
    }
    let mut summary = rewrite_and_commit(table, jobs, target_file_bytes, cancel).await?;
    summary.skipped += unsupported.len() as u64;
    Ok(summary)
}

/// One tenant-day to rewrite, with what its rewrite needs.
struct RewriteJob {
    partition: TenantDay,
    files: PartitionFiles,
    rejected: HashSet<RowKey>,
    tags: DedupTags,
}

/// Rewrites the `jobs` on one worker per core, in order, and commits them many
/// at a time ([`CommitBatch`]). A stop signal starts no new rewrite; those
/// running finish and are committed with the rest of the batch.
async fn rewrite_and_commit(
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

/// The most bytes of small files one commit rewrites: bounds the work a lost
/// race throws away, and what a stop signal waits for.
pub const COMMIT_INPUT_BYTES: i64 = 512 << 20;
/// The most partitions one commit rewrites: bounds the size of its log entry.
pub const COMMIT_PARTITIONS: u64 = 2_000;

/// Rewritten partitions waiting for their commit.
#[derive(Default)]
struct CommitBatch {
    actions: Vec<Action>,
    partitions: u64,
    files_removed: u64,
    files_added: u64,
    duplicates: u64,
    input_bytes: i64,
}

impl CommitBatch {
    fn push(&mut self, rewritten: Rewritten, input_bytes: i64) {
        self.actions.extend(rewritten.actions);
        self.partitions += 1;
        self.files_removed += rewritten.removed;
        self.files_added += rewritten.added;
        self.duplicates += rewritten.duplicates;
        self.input_bytes += input_bytes;
    }

    fn is_full(&self) -> bool {
        self.input_bytes >= COMMIT_INPUT_BYTES || self.partitions >= COMMIT_PARTITIONS
    }

    /// Commits the batch and counts it in `summary`; `false` when another
    /// compaction committed since the files were listed (the list may name
    /// files it removed, so the run stops and the next one lists again).
    async fn commit(
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

/// One partition rewritten, not committed yet.
struct Rewritten {
    /// Its removes and adds.
    actions: Vec<Action>,
    removed: u64,
    added: u64,
    duplicates: u64,
}

/// The `txn` app id every compaction commit records (its version: the commit time
/// in microseconds), which makes concurrent compactions conflict.
pub const COMPACTION_APP_ID: &str = "allot-compaction";

/// Whether a compaction commit lost a race with another commit.
fn is_commit_conflict(err: &LakeError) -> bool {
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

/// The date of a `YYYY-MM-DD` partition value (`None`: not a date).
fn parse_day(day: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The rows of the partitions whose rollups are not current (new files in them
/// or their neighbours since the last refresh) that the dedup window rejects, as
/// the query engine judges them for every report. Partitions with current
/// rollups were judged, and their rejected rows removed, by an earlier run.
async fn beaten_rows(options: &CompactOptions) -> Result<Judged, LakeError> {
    let snapshot = match LakeSnapshot::load(&options.lake).await {
        Ok(snapshot) => snapshot,
        Err(LakeError::NoLake) => return Ok(Judged::default()),
        Err(e) => return Err(e),
    };
    let limits = SessionLimits {
        dedup_window: options.dedup_window,
        ..SessionLimits::default()
    };
    let mut session = LakeSession::new(&snapshot, &Scope::AllTenants, &limits)?;
    session
        .attach_rollups(&snapshot.hourly, &options.catalog)
        .await?;
    let current = session.current_rollups().clone();
    let frame = session
        .beaten_events_where(|tenant, day| !current.contains_key(&TenantDay::new(tenant, day)))?;
    let mut judged = Judged {
        beaten: Beaten::new(),
        version: snapshot.usage.version,
        current: current.into_keys().collect(),
    };
    let Some(frame) = frame else {
        return Ok(judged);
    };
    let batches = frame
        .select_columns(&["tenant_id", "day", "event_id", "ingested_at", "source"])
        .map_err(LakeError::from)?
        .collect()
        .await
        .map_err(LakeError::from)?;
    for batch in batches {
        let column =
            |i: usize, to: &arrow::datatypes::DataType| arrow::compute::cast(batch.column(i), to);
        let utf8 = arrow::datatypes::DataType::Utf8;
        let tenants = column(0, &utf8)?;
        let days = column(1, &arrow::datatypes::DataType::Date32)?;
        let ids = column(2, &utf8)?;
        let ingested = column(3, &arrow::datatypes::DataType::Int64)?;
        let sources = column(4, &utf8)?;
        let (tenants, ids, sources) = (
            tenants.as_string::<i32>(),
            ids.as_string::<i32>(),
            sources.as_string::<i32>(),
        );
        let days = days.as_primitive::<arrow::datatypes::Date32Type>();
        let ingested = ingested.as_primitive::<arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            let day = partition_date(days.value(row))?;
            judged
                .beaten
                .entry(TenantDay::new(tenants.value(row), day))
                .or_default()
                .insert((
                    ids.value(row).to_string(),
                    ingested.value(row),
                    sources.value(row).to_string(),
                ));
        }
    }
    Ok(judged)
}

/// Rewrites the small files of one partition (all of them when `rejected` names
/// rows to remove), without the rows of `rejected`: returns the removes and adds
/// for the commit, the files added and the rows dropped.
async fn rewrite_partition(
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

/// Keeps, for each event id not in `kept_ids`, the row with the earliest
/// `ingested_at` (then the smallest `source`) among those not in `rejected`; returns
/// the rows kept and how many were dropped. Copies on one day are always within
/// the dedup window (at least a day), so this is the window's rule within a
/// partition.
fn first_ingested_per_event(
    batch: &RecordBatch,
    kept_ids: &HashSet<String>,
    rejected: &HashSet<RowKey>,
) -> Result<(RecordBatch, u64), LakeError> {
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
        if kept_ids.contains(ids.value(row))
            || (!rejected.is_empty()
                && rejected.contains(&(
                    ids.value(row).to_string(),
                    ingested.value(row),
                    sources.value(row).to_string(),
                )))
        {
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn remove(path: &str) -> Remove {
        Remove {
            path: path.to_string(),
            data_change: false,
            deletion_timestamp: None,
            extended_file_metadata: None,
            partition_values: None,
            size: None,
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
        }
    }

    fn tags(version: Option<u64>, checked_at: Option<u64>) -> DedupTags {
        DedupTags {
            version,
            checked_at,
            ingested: None,
        }
    }

    #[test]
    fn a_rewritten_file_keeps_what_its_sources_vouch_for() {
        let mut files = PartitionFiles {
            small: vec![remove("a"), remove("b")],
            ..PartitionFiles::default()
        };
        let bounds = |ingested, t: DedupTags| DedupTags {
            ingested: Some(ingested),
            ..t
        };
        files
            .tags
            .insert("a".into(), bounds((10, 20), tags(Some(3), Some(2))));
        files
            .tags
            .insert("b".into(), bounds((15, 30), tags(Some(5), Some(4))));
        // Rows in the table by the newest source; checked as far as the oldest;
        // ingested within the sources' bounds.
        assert_eq!(
            files.rewritten_tags(None),
            bounds((10, 30), tags(Some(5), Some(2)))
        );
        // Judged by this run at version 9.
        assert_eq!(
            files.rewritten_tags(Some(9)),
            bounds((10, 30), tags(Some(5), Some(9)))
        );
        // A source without tags (a collector's file): nothing is vouched for,
        // unless this run judged the partition.
        files.tags.insert("b".into(), DedupTags::default());
        assert_eq!(files.rewritten_tags(None), tags(None, None));
        assert_eq!(files.rewritten_tags(Some(9)), tags(None, Some(9)));
    }

    /// A batch of the three columns the in-partition rule reads.
    fn rows(rows: &[(&str, i64, &str)]) -> RecordBatch {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        RecordBatch::try_from_iter([
            (
                "event_id",
                std::sync::Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)))
                    as arrow::array::ArrayRef,
            ),
            (
                "ingested_at",
                std::sync::Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
            ),
            (
                "source",
                std::sync::Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ),
        ])
        .unwrap()
    }

    fn columns(batch: &RecordBatch) -> Vec<(String, i64, String)> {
        let ids = batch.column(0).as_string::<i32>();
        let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let sources = batch.column(2).as_string::<i32>();
        (0..batch.num_rows())
            .map(|r| {
                (
                    ids.value(r).to_string(),
                    times.value(r),
                    sources.value(r).to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn within_a_partition_the_first_ingested_copy_is_kept() {
        let batch = rows(&[
            ("x", 20, "b"),
            ("x", 10, "z"),
            ("y", 5, "a"),
            ("x", 10, "a"),
            ("k", 1, "a"),
            ("w", 7, "a"),
        ]);
        // `k` is already in a large file of the partition; `y`'s copy is one the
        // dedup window rejects against a neighbour.
        let kept: HashSet<String> = ["k".to_string()].into();
        let rejected: HashSet<RowKey> = [("y".to_string(), 5, "a".to_string())].into();
        let (out, dropped) = first_ingested_per_event(&batch, &kept, &rejected).unwrap();
        let mut out = columns(&out);
        out.sort();
        // Of x's copies, the earliest ingested wins, ties broken by source.
        assert_eq!(
            out,
            [
                ("w".to_string(), 7, "a".to_string()),
                ("x".to_string(), 10, "a".to_string())
            ]
        );
        assert_eq!(dropped, 4);
        // Nothing to drop: the batch comes back as it was.
        let unique = rows(&[("a", 1, "s"), ("b", 1, "s")]);
        let (same, none) =
            first_ingested_per_event(&unique, &HashSet::new(), &HashSet::new()).unwrap();
        assert_eq!((columns(&same), none), (columns(&unique), 0));
    }

    #[test]
    fn partition_days_are_dates_or_nothing() {
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(parse_day("1970-01-01"), date(1970, 1, 1));
        assert_eq!(parse_day("2026-03-01"), date(2026, 3, 1));
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("../x"), None);
    }

    #[test]
    fn only_lost_races_count_as_conflicts() {
        let table = "usage_events";
        let lost = LakeError::Table {
            table,
            source: deltalake::DeltaTableError::VersionAlreadyExists(7),
        };
        assert!(is_commit_conflict(&lost));
        let other = LakeError::Table {
            table,
            source: deltalake::DeltaTableError::generic("disk full"),
        };
        assert!(!is_commit_conflict(&other));
        assert!(!is_commit_conflict(&LakeError::NoLake));
    }
}
