//! Writing decoded batches to the lake, one Delta commit per table per flush.
//!
//! [`LakeWriter::append`] removes events whose `(tenant_id, event_id)` the
//! tenant already has within the dedup window (`allot_lake::dedup`), writes the
//! rest as Parquet files under `tenant_id=<id>/day=<YYYY-MM-DD>/`, and commits
//! them in one Delta commit. The rejected rows are committed first, so a rejected
//! event is recorded before any offset that covers it. Commits go through
//! [`LogAppender`]s, which never load the tables' file lists. A collector's
//! flush writes and commits one file per tenant-day it touches
//! (`crate::partitions`); a backfill keeps its tenant-days open across batches
//! and commits each when it closes (`crate::open_days`), so its commits are of
//! whole tenant-days.
//!
//! How far the duplicate check looks depends on the source (see [`Mode`]): a
//! file backfill checks each event against the tenant's copies in the lake on
//! the days within the window (their `event_id` and `ts` columns, read from the
//! partitions' files one tenant at a time), so a rerun adds nothing; a collector
//! checks against the ids it wrote recently, so its memory does not grow with
//! the table. Both keep the ids in a bounded cache of recently touched tenants
//! ([`known_ids`]); rejected lines are known by their content
//! ([`rejections`]). What slips through is removed by compaction, and the
//! query engine counts every event once regardless.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use allot_lake::append::LogAppender;
use allot_lake::dedup::DedupWindow;
use allot_lake::file_writer::NewFile;
use allot_lake::tables::LakeTables;
use allot_lake::txns::AppOffset;
use allot_schemas::layout::{DedupTags, LakeLocation, LakeTable, TenantDay};
use allot_schemas::reason::ReasonCode;
use allot_schemas::time::date_of_epoch_days;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;

mod known_ids;
mod rejections;

use known_ids::{KnownEventIds, LoadedDay, WrittenIds, event_columns};
use rejections::RejectionKey;

use crate::assemble::DecodedBatch;
use crate::error::IngestError;
use crate::open_days::{ClosedDay, Closing, OpenDays};
use crate::partitions::{ingested_bounds, partition_columns, write_partitions};
use crate::stages::{Stage, StageClock};
use crate::telemetry::FlushCounts;

/// Most event ids a backfill keeps in its duplicate cache before the least
/// recently touched tenants are dropped.
const BACKFILL_CACHED_KEYS: usize = 1_000_000;

/// Most event ids a collector keeps: its duplicate check covers about this many
/// of the latest events it wrote (tens of MiB).
const COLLECTOR_CACHED_KEYS: usize = 500_000;

/// The Kafka offsets a commit records, and those it expects the lake to hold.
#[derive(Debug, Default, Clone)]
pub struct OffsetCommit {
    /// Per app id, the offset the lake must still record (`None`: none yet).
    pub expected: Vec<(String, Option<i64>)>,
    /// The offsets to record with the files.
    pub records: Vec<AppOffset>,
    /// Test hook: abort the process after writing the files, before the commit.
    /// Only builds with the `test-hooks` feature (the test suite's) act on it.
    pub abort_before_commit: bool,
}

/// What one append did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Events written to `usage_events`.
    pub written: u64,
    /// Events skipped because their `(tenant_id, event_id)` was already there.
    pub duplicates: u64,
    /// Rows written to `rejected_events`.
    pub rejected_written: u64,
    /// Rejections skipped because their source was already recorded.
    pub rejected_duplicates: u64,
    /// Rejections by reason, as decoded.
    pub rejected_by_reason: BTreeMap<ReasonCode, u64>,
    /// Blank lines skipped.
    pub blank_lines: u64,
    /// Tenant-day partitions that received events.
    pub partitions: BTreeSet<TenantDay>,
    /// The `usage_events` version committed, if anything was written.
    pub usage_version: Option<u64>,
    /// Accepted and rejected events per tenant, for the collector's metrics.
    pub counts: FlushCounts,
}

/// Writes decoded batches to the lake.
pub struct LakeWriter {
    usage: SharedAppender,
    rejected: LogAppender,
    mode: Mode,
    stages: Arc<StageClock>,
}

/// A `usage_events` appender shared with whoever reads the recorded offsets (the
/// collector's rebalance handler); a flush holds it for its commit.
pub type SharedAppender = Arc<tokio::sync::Mutex<LogAppender>>;

/// Which source a writer serves, with the state only that source keeps; it
/// decides how far the duplicate check looks and when files are committed.
enum Mode {
    /// A file backfill: see [`Backfill`].
    Backfill(Box<Backfill>),
    /// A Kafka collector: the batch and the ids this writer wrote lately are
    /// checked, with no table reads, so memory does not grow with the table.
    /// Each flush commits its files with its offsets. Rejected rows are
    /// recorded at least once (a batch re-read after a failed commit records
    /// them again).
    Collector { known: KnownEventIds },
}

/// A file backfill's writer state. The batch and each written partition's
/// files in the table are checked, so re-running a file adds nothing: the
/// tables are loaded with their file lists, and rejected rows are checked
/// against every recorded rejection ([`RejectionKey`]). Tenant-days are kept
/// open across batches (`crate::open_days`) and committed as they close.
struct Backfill {
    tables: LakeTables,
    known: KnownEventIds,
    written: WrittenIds,
    /// Every rejection recorded, loaded on the first batch with rejections.
    rejected_keys: Option<HashSet<RejectionKey>>,
    open_days: OpenDays,
    /// Set when a write or commit failed: the open rows are lost and the
    /// duplicate cache names rows not in the lake, so the backfill stops.
    failed: bool,
}

impl Mode {
    fn known(&mut self) -> &mut KnownEventIds {
        match self {
            Mode::Backfill(backfill) => &mut backfill.known,
            Mode::Collector { known } => known,
        }
    }
}

impl LakeWriter {
    /// A writer for a file backfill; see [`Backfill`]. It keeps the
    /// tenant-days it writes open across batches (`crate::open_days`) until
    /// their buffered bytes reach `open_bytes`: an [`append`](Self::append)
    /// commits the tenant-days it closes, and [`finish`](Self::finish) the rest.
    pub async fn for_backfill(
        location: &LakeLocation,
        window: DedupWindow,
        open_bytes: usize,
    ) -> Result<Self, IngestError> {
        let backfill = Backfill {
            tables: LakeTables::open_or_create(location).await?,
            known: KnownEventIds::new(BACKFILL_CACHED_KEYS, window),
            written: WrittenIds::default(),
            rejected_keys: None,
            open_days: OpenDays::new(open_bytes),
            failed: false,
        };
        Self::open(location, Mode::Backfill(Box::new(backfill))).await
    }

    /// A writer for a Kafka collector; see [`Mode::Collector`].
    pub async fn for_collector(
        location: &LakeLocation,
        window: DedupWindow,
    ) -> Result<Self, IngestError> {
        let known = KnownEventIds::new(COLLECTOR_CACHED_KEYS, window);
        Self::open(location, Mode::Collector { known }).await
    }

    async fn open(location: &LakeLocation, mode: Mode) -> Result<Self, IngestError> {
        Ok(LakeWriter {
            usage: Arc::new(tokio::sync::Mutex::new(
                LogAppender::open(location, LakeTable::UsageEvents).await?,
            )),
            rejected: LogAppender::open(location, LakeTable::RejectedEvents).await?,
            mode,
            stages: Arc::default(),
        })
    }

    /// Where this writer's time goes, stage by stage; a source reports its own
    /// stages to the same clock.
    pub fn stages(&self) -> Arc<StageClock> {
        Arc::clone(&self.stages)
    }

    /// The `usage_events` appender, which also answers what offsets the table records.
    pub fn usage_appender(&self) -> SharedAppender {
        self.usage.clone()
    }

    /// Writes one batch: rejected rows first, then the new events in one commit.
    pub async fn append(&mut self, batch: DecodedBatch) -> Result<AppendOutcome, IngestError> {
        self.append_with_offsets(batch, &OffsetCommit::default())
            .await
    }

    /// Like [`append`](Self::append), but the `usage_events` commit also records
    /// Kafka offsets, and only if the table still holds the offsets the batch
    /// started from; otherwise it fails with [`IngestError::Fenced`] and the new
    /// files are never referenced.
    pub async fn append_with_offsets(
        &mut self,
        batch: DecodedBatch,
        offsets: &OffsetCommit,
    ) -> Result<AppendOutcome, IngestError> {
        if matches!(&self.mode, Mode::Backfill(backfill) if backfill.failed) {
            return Err(IngestError::WriterFailed);
        }
        let mut outcome = AppendOutcome {
            rejected_by_reason: batch.rejected_by_reason,
            blank_lines: batch.blank_lines,
            ..AppendOutcome::default()
        };
        outcome.counts.rejected = rejections_by_tenant(&batch.rejected);
        let checking = Instant::now();
        let rejected = match &mut self.mode {
            Mode::Backfill(backfill) => backfill.new_rejections(batch.rejected).await?,
            Mode::Collector { .. } => batch.rejected,
        };
        self.stages.add(Stage::Dedup, checking.elapsed());
        outcome.rejected_written = rejected.num_rows() as u64;
        outcome.rejected_duplicates = outcome
            .rejected_by_reason
            .values()
            .sum::<u64>()
            .saturating_sub(outcome.rejected_written);
        if rejected.num_rows() > 0 {
            let files = write_files(&self.rejected, rejected, &self.stages).await?;
            let committing = Instant::now();
            self.rejected.append(files, Vec::new(), &[]).await?;
            self.stages.add(Stage::Commit, committing.elapsed());
        }

        let checking = Instant::now();
        let (fresh, partitions) = self.new_events(batch.usage).await?;
        self.stages.add(Stage::Dedup, checking.elapsed());
        outcome.written = fresh.num_rows() as u64;
        outcome.duplicates = partitions.duplicates;
        outcome.partitions = partitions.touched;
        if let Mode::Backfill(backfill) = &mut self.mode {
            // Even a batch of duplicates only closes the tenant-days it did not touch.
            debug_assert!(offsets.records.is_empty(), "a backfill records no offsets");
            outcome.counts.accepted = events_by_tenant(&fresh);
            outcome.counts.duplicates = outcome.duplicates;
            let held = backfill
                .hold_and_commit(&self.usage, &self.stages, fresh, partitions.checked_at)
                .await;
            backfill.failed = held.is_err();
            held?.add_to(&mut outcome);
            return Ok(outcome);
        }
        if fresh.num_rows() == 0 && offsets.records.is_empty() {
            return Ok(outcome);
        }
        outcome.counts.accepted = events_by_tenant(&fresh);
        outcome.counts.duplicates = outcome.duplicates;
        // The check above recorded the batch's ids as known: if it is not
        // committed, they must not be, or the batch read again would be taken
        // for duplicates of itself and its offsets recorded without its events.
        let checked = fresh.clone();
        let committed = self.write_and_commit(fresh, offsets, &mut outcome).await;
        match committed {
            Ok(version) => {
                outcome.usage_version = Some(version);
                Ok(outcome)
            }
            Err(err) => {
                self.mode.known().forget(&checked);
                Err(err)
            }
        }
    }

    /// Commits a backfill's tenant-days still open; the writer is done after
    /// it. A collector's writer has nothing to finish.
    pub async fn finish(&mut self) -> Result<AppendOutcome, IngestError> {
        let mut outcome = AppendOutcome::default();
        let Mode::Backfill(backfill) = &mut self.mode else {
            return Ok(outcome);
        };
        if backfill.failed {
            return Err(IngestError::WriterFailed);
        }
        if backfill.open_days.is_empty() {
            return Ok(outcome);
        }
        let committed = backfill
            .commit_closed(&self.usage, &self.stages, Closing::All)
            .await;
        backfill.failed = committed.is_err();
        committed?.add_to(&mut outcome);
        Ok(outcome)
    }

    /// A collector's write: writes the checked events' files and commits them
    /// with `offsets`; returns the version committed.
    async fn write_and_commit(
        &mut self,
        fresh: RecordBatch,
        offsets: &OffsetCommit,
        outcome: &mut AppendOutcome,
    ) -> Result<u64, IngestError> {
        let writing = Instant::now();
        let mut usage = self.usage.lock().await;
        // A collector checks against the ids it keeps, not against a version
        // of the table, so its files claim no version checked.
        let tags = DedupTags {
            version: None,
            checked_at: None,
            ingested: ingested_bounds(&fresh),
        };
        let mut files = write_partitions(&usage, fresh, &self.stages).await?;
        for file in &mut files {
            file.tag(&tags);
        }
        tracing::debug!(
            rows = outcome.written,
            files = files.len(),
            secs = writing.elapsed().as_secs_f64(),
            "wrote the batch's files"
        );
        let committing = Instant::now();
        outcome.counts.bytes = files.iter().map(NewFile::size).sum();
        #[cfg(feature = "test-hooks")]
        if offsets.abort_before_commit {
            usage.check_offsets(&offsets.expected).await?;
            tracing::error!("test hook: aborting between writing files and committing them");
            std::process::abort();
        }
        let version = usage
            .append(files, offsets.records.clone(), &offsets.expected)
            .await?;
        self.stages.add(Stage::Commit, committing.elapsed());
        tracing::debug!(
            version,
            secs = committing.elapsed().as_secs_f64(),
            "committed the batch"
        );
        Ok(version)
    }

    /// Keeps the rows of `usage` whose `(tenant_id, event_id)` has no copy within
    /// the dedup window, in the lake (as far as this writer looks) or earlier in
    /// the batch. Tenants are checked one after the other, and the cache is
    /// trimmed after each, so a backfill holds one tenant's window of ids beyond
    /// the cache's cap.
    ///
    /// A backfill's check is exact as of the table version it lists the files
    /// at (returned in [`PartitionStats::checked_at`]): a cached day is used only
    /// while its files are still the ones cached, and a day whose files this
    /// writer wrote itself is read only when one of the tenant's ids is among the
    /// fingerprints of what it wrote.
    async fn new_events(
        &mut self,
        usage: RecordBatch,
    ) -> Result<(RecordBatch, PartitionStats), IngestError> {
        let (event_ids, times) = event_columns(&usage);
        let (event_ids, times) = (event_ids.clone(), times.clone());
        let (tenants, days) = partition_columns(&usage);
        let (tenants, days) = (tenants.clone(), days.clone());

        // The batch's rows per tenant, in batch order, and each tenant's days.
        let mut index: HashMap<&str, usize, ahash::RandomState> = HashMap::default();
        let mut by_tenant: Vec<(String, Vec<usize>, i32, i32)> = Vec::new();
        for row in 0..usage.num_rows() {
            let day = days.value(row);
            let slot = *index.entry(tenants.value(row)).or_insert_with(|| {
                by_tenant.push((tenants.value(row).to_string(), Vec::new(), day, day));
                by_tenant.len() - 1
            });
            let entry = &mut by_tenant[slot];
            entry.1.push(row);
            entry.2 = entry.2.min(day);
            entry.3 = entry.3.max(day);
        }
        by_tenant.sort_by(|a, b| a.0.cmp(&b.0));
        let reach = i32::try_from(self.mode.known().window.reach_days()).unwrap_or(i32::MAX);
        let wanted = |lo: i32, hi: i32| lo.saturating_sub(reach)..=hi.saturating_add(reach);
        let files = match &mut self.mode {
            Mode::Backfill(backfill) => {
                // Every day within reach: a day known now may be evicted before
                // its tenant's turn.
                let reachable: Vec<TenantDay> = by_tenant
                    .iter()
                    .flat_map(|(tenant, _, lo, hi)| {
                        wanted(*lo, *hi)
                            .filter_map(date_of_epoch_days)
                            .map(move |day| TenantDay::new(tenant.clone(), day))
                    })
                    .collect();
                Some(backfill.tables.usage_partition_files(&reachable).await?)
            }
            Mode::Collector { .. } => None,
        };

        let mut stats = PartitionStats {
            checked_at: files.as_ref().map(|f| f.version),
            ..PartitionStats::default()
        };
        let mut keep = vec![true; usage.num_rows()];
        // A backfill's open tenant-days (and, once checked, this batch's)
        // hold rows checked but not committed: their copies stay in the cache,
        // whatever is read from the lake or dropped over its cap.
        let (holding, mut open_days) = match &self.mode {
            Mode::Backfill(backfill) => (true, backfill.open_days.days_by_tenant()),
            Mode::Collector { .. } => (false, HashMap::new()),
        };
        let no_open_days = BTreeSet::new();
        for (tenant, rows, lo, hi) in by_tenant {
            // A backfill reads the tenant's days within reach that it does not
            // know as they are now.
            let mut loaded = Vec::new();
            if let (Some(lake), Mode::Backfill(backfill)) = (&files, &self.mode) {
                let Backfill {
                    known,
                    written,
                    tables,
                    ..
                } = backfill.as_ref();
                let seen_before =
                    written.has_any(&tenant, rows.iter().map(|&r| event_ids.value(r)));
                for day in wanted(lo, hi) {
                    // A day no date can name holds no file.
                    let Some(date) = date_of_epoch_days(day) else {
                        continue;
                    };
                    let key = TenantDay::new(tenant.clone(), date);
                    let current = lake.files.get(&key).map_or(&[][..], Vec::as_slice);
                    if known.knows_day(&key, current)
                        || (!seen_before && written.wrote_all(current))
                    {
                        continue;
                    }
                    let mut copies = Vec::new();
                    for path in current {
                        read_ids_and_times(tables, path, |id, ts| {
                            copies.push((Box::from(id), ts));
                        })
                        .await?;
                    }
                    let files = current.iter().cloned().collect();
                    loaded.push(LoadedDay { day, files, copies });
                }
            }
            let known = self.mode.known();
            let mut ids = known.tenant_mut(&tenant);
            ids.load_days(loaded, open_days.get(&tenant).unwrap_or(&no_open_days));
            ids.keep_days(wanted(lo, hi));
            let mut kept_days = BTreeSet::new();
            for row in rows {
                if ids.insert(event_ids.value(row), times.value(row)) {
                    kept_days.insert(days.value(row));
                    if let Some(date) = date_of_epoch_days(days.value(row)) {
                        stats.touched.insert(TenantDay::new(tenant.clone(), date));
                    }
                } else {
                    keep[row] = false;
                    stats.duplicates += 1;
                }
            }
            if holding && !kept_days.is_empty() {
                open_days.entry(tenant).or_default().extend(kept_days);
            }
            known.advance(&open_days);
        }
        if stats.duplicates == 0 {
            return Ok((usage, stats));
        }
        let fresh = filter_record_batch(&usage, &BooleanArray::from(keep))?;
        Ok((fresh, stats))
    }
}

/// What a backfill's commit of closed tenant-days adds to an append's outcome.
#[derive(Default)]
struct ClosedCommit {
    version: Option<u64>,
    bytes: u64,
}

impl ClosedCommit {
    fn add_to(self, outcome: &mut AppendOutcome) {
        if self.version.is_some() {
            outcome.usage_version = self.version;
            outcome.counts.bytes = self.bytes;
        }
    }
}

impl Backfill {
    /// Appends the checked events to their open tenant-days, then commits
    /// those the batch closed.
    async fn hold_and_commit(
        &mut self,
        usage: &SharedAppender,
        stages: &Arc<StageClock>,
        fresh: RecordBatch,
        checked_at: Option<u64>,
    ) -> Result<ClosedCommit, IngestError> {
        let appender = usage.lock().await;
        self.open_days
            .write(&appender, fresh, checked_at, &self.written.hasher, stages)
            .await?;
        drop(appender);
        self.commit_closed(usage, stages, Closing::Idle).await
    }

    /// Closes the open tenant-days `closing` names and commits their files in
    /// one commit, then records them as written.
    async fn commit_closed(
        &mut self,
        usage: &SharedAppender,
        stages: &Arc<StageClock>,
        closing: Closing,
    ) -> Result<ClosedCommit, IngestError> {
        let mut appender = usage.lock().await;
        let closed = self.open_days.close(closing, stages).await?;
        if closed.is_empty() {
            return Ok(ClosedCommit::default());
        }
        let committing = Instant::now();
        let mut files = Vec::new();
        let mut closed_files = Vec::with_capacity(closed.len());
        for ClosedDay {
            key,
            files: day_files,
            fingerprints,
            tags,
        } in closed
        {
            let paths: Vec<String> = day_files.iter().map(|f| f.path().to_string()).collect();
            for mut file in day_files {
                file.tag(&tags);
                files.push(file);
            }
            closed_files.push((key, fingerprints, paths));
        }
        let bytes = files.iter().map(NewFile::size).sum();
        let version = appender.append(files, Vec::new(), &[]).await?;
        drop(appender);
        stages.add(Stage::Commit, committing.elapsed());
        for (key, fingerprints, paths) in closed_files {
            self.written
                .record_fingerprints(fingerprints, paths.iter().map(String::as_str));
            for path in paths {
                self.known.add_file(&key, path);
            }
        }
        tracing::debug!(
            version,
            secs = committing.elapsed().as_secs_f64(),
            "committed the closed tenant-days"
        );
        Ok(ClosedCommit {
            version: Some(version),
            bytes,
        })
    }

    /// Keeps the rejected rows not recorded yet ([`RejectionKey`]).
    async fn new_rejections(&mut self, rejected: RecordBatch) -> Result<RecordBatch, IngestError> {
        if rejected.num_rows() == 0 {
            return Ok(rejected);
        }
        if self.rejected_keys.is_none() {
            let mut keys = HashSet::new();
            for path in self.tables.rejected_files()? {
                for batch in self
                    .tables
                    .read_rejected_file(&path, &RejectionKey::COLUMNS)
                    .await?
                {
                    keys.extend(RejectionKey::of_rows(&batch)?);
                }
            }
            self.rejected_keys = Some(keys);
        }
        let known = self.rejected_keys.as_mut().expect("loaded above");
        let keep: Vec<bool> = RejectionKey::of_rows(&rejected)?
            .into_iter()
            .map(|key| known.insert(key))
            .collect();
        if keep.iter().all(|k| *k) {
            return Ok(rejected);
        }
        Ok(filter_record_batch(&rejected, &keep.into())?)
    }
}

/// Counts gathered while deduplicating one batch.
#[derive(Default)]
struct PartitionStats {
    touched: BTreeSet<TenantDay>,
    duplicates: u64,
    /// The table version a backfill checked the batch against (its files are
    /// tagged with it); `None` for a collector, which does not read the table.
    checked_at: Option<u64>,
}

/// Writes one batch as Parquet files of `table` (not yet committed).
async fn write_files(
    table: &LogAppender,
    batch: RecordBatch,
    stages: &StageClock,
) -> Result<Vec<NewFile>, IngestError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut writer = table.file_writer()?;
    let encoding = Instant::now();
    writer.write(batch).await?;
    stages.add(Stage::Encode, encoding.elapsed());
    let writing = Instant::now();
    let files = writer.flush().await?;
    stages.add(Stage::Write, writing.elapsed());
    Ok(files)
}

/// Rows of a `usage_events` batch per tenant.
fn events_by_tenant(batch: &RecordBatch) -> BTreeMap<String, u64> {
    let mut counts: HashMap<&str, u64, ahash::RandomState> = HashMap::default();
    if let Some(tenants) = batch
        .column_by_name("tenant_id")
        .and_then(|c| c.as_string_opt::<i32>())
    {
        for tenant in tenants.iter().flatten() {
            *counts.entry(tenant).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(tenant, n)| (tenant.to_string(), n))
        .collect()
}

/// Rows of a `rejected_events` batch per tenant (`""` when unknown) and reason.
fn rejections_by_tenant(batch: &RecordBatch) -> BTreeMap<(String, ReasonCode), u64> {
    let mut counts = BTreeMap::new();
    let (Some(tenants), Some(reasons)) = (
        batch
            .column_by_name("tenant_id")
            .and_then(|c| c.as_string_opt::<i32>()),
        batch
            .column_by_name("reason")
            .and_then(|c| c.as_string_opt::<i32>()),
    ) else {
        return counts;
    };
    for (tenant, reason) in tenants.iter().zip(reasons.iter()) {
        let Some(reason) = reason.and_then(ReasonCode::from_code) else {
            continue;
        };
        *counts
            .entry((tenant.unwrap_or_default().to_string(), reason))
            .or_default() += 1;
    }
    counts
}

/// Reads the `event_id` and `ts` columns of a `usage_events` file into `sink`.
async fn read_ids_and_times(
    tables: &LakeTables,
    path: &str,
    mut sink: impl FnMut(&str, i64),
) -> Result<(), IngestError> {
    for batch in tables.read_usage_file(path, &["event_id", "ts"]).await? {
        let column = |name: &str, to: &arrow::datatypes::DataType| {
            let found = batch.column_by_name(name).ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("{path} has no {name}"))
            })?;
            arrow::compute::cast(found, to)
        };
        let ids = column("event_id", &arrow::datatypes::DataType::Utf8)?;
        let times = column("ts", &arrow::datatypes::DataType::Int64)?;
        let times = times.as_primitive::<arrow::datatypes::Int64Type>();
        for (row, id) in ids.as_string::<i32>().iter().enumerate() {
            if let Some(id) = id
                && times.is_valid(row)
            {
                sink(id, times.value(row));
            }
        }
    }
    Ok(())
}
