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
//! How far the duplicate check looks depends on the source (see [`Dedup`]): a
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

use allot_lake::LakeError;
use allot_lake::append::LogAppender;
use allot_lake::data_file::open_lake_parquet;
use allot_lake::dedup::DedupWindow;
use allot_lake::tables::LakeTables;
use allot_schemas::layout::{DedupTags, LakeLocation, LakeTable, TenantDay, usage_partition_dir};
use allot_schemas::reason::ReasonCode;
use allot_schemas::time::date_of_epoch_days;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use deltalake::kernel::{Add, Transaction};
use deltalake::writer::DeltaWriter;
use parquet::arrow::ProjectionMask;

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
    /// The `txn` actions to commit with the files.
    pub txns: Vec<Transaction>,
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
    dedup: Dedup,
    stages: Arc<StageClock>,
    /// A backfill's tenant-days kept open across batches (`crate::open_days`).
    open_days: Option<OpenDays>,
    /// Set when a backfill's write or commit failed: its open rows are lost
    /// and its duplicate cache names rows not in the lake, so it stops.
    failed: bool,
}

/// A `usage_events` appender shared with whoever reads the recorded offsets (the
/// collector's rebalance handler); a flush holds it for its commit.
pub type SharedAppender = Arc<tokio::sync::Mutex<LogAppender>>;

/// How far a writer's duplicate check looks.
enum Dedup {
    /// The batch and each written partition's files in the table (file
    /// backfills): re-running a file adds nothing. The tables are loaded with
    /// their file lists, and rejected rows are checked against every recorded
    /// rejection ([`RejectionKey`]).
    Table {
        tables: LakeTables,
        known: KnownEventIds,
        written: Box<WrittenIds>,
        rejected_keys: Option<HashSet<RejectionKey>>,
    },
    /// The batch and the ids this writer wrote lately (collectors): no table
    /// reads, so memory does not grow with the table. Rejected rows are recorded
    /// at least once (a batch re-read after a failed commit records them again).
    Recent { known: KnownEventIds },
}

impl Dedup {
    fn known(&mut self) -> &mut KnownEventIds {
        match self {
            Dedup::Table { known, .. } | Dedup::Recent { known } => known,
        }
    }
}

impl LakeWriter {
    /// A writer for a file backfill; see [`Dedup::Table`]. It keeps the
    /// tenant-days it writes open across batches (`crate::open_days`) until
    /// their buffered bytes reach `open_bytes`: an [`append`](Self::append)
    /// commits the tenant-days it closes, and [`finish`](Self::finish) the rest.
    pub async fn for_backfill(
        location: &LakeLocation,
        window: DedupWindow,
        open_bytes: usize,
    ) -> Result<Self, IngestError> {
        let dedup = Dedup::Table {
            tables: LakeTables::open_or_create(location).await?,
            known: KnownEventIds::new(BACKFILL_CACHED_KEYS, window),
            written: Box::default(),
            rejected_keys: None,
        };
        let mut writer = Self::open(location, dedup).await?;
        writer.open_days = Some(OpenDays::new(open_bytes));
        Ok(writer)
    }

    /// A writer for a Kafka collector; see [`Dedup::Recent`].
    pub async fn for_collector(
        location: &LakeLocation,
        window: DedupWindow,
    ) -> Result<Self, IngestError> {
        let dedup = Dedup::Recent {
            known: KnownEventIds::new(COLLECTOR_CACHED_KEYS, window),
        };
        Self::open(location, dedup).await
    }

    async fn open(location: &LakeLocation, dedup: Dedup) -> Result<Self, IngestError> {
        Ok(LakeWriter {
            usage: Arc::new(tokio::sync::Mutex::new(
                LogAppender::open(location, LakeTable::UsageEvents).await?,
            )),
            rejected: LogAppender::open(location, LakeTable::RejectedEvents).await?,
            dedup,
            stages: Arc::default(),
            open_days: None,
            failed: false,
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
        if self.failed {
            return Err(IngestError::WriterFailed);
        }
        let mut outcome = AppendOutcome {
            rejected_by_reason: batch.rejected_by_reason,
            blank_lines: batch.blank_lines,
            ..AppendOutcome::default()
        };
        outcome.counts.rejected = rejections_by_tenant(&batch.rejected);
        let checking = Instant::now();
        let rejected = self.new_rejections(batch.rejected).await?;
        self.stages.add(Stage::Dedup, checking.elapsed());
        outcome.rejected_written = rejected.num_rows() as u64;
        outcome.rejected_duplicates = outcome
            .rejected_by_reason
            .values()
            .sum::<u64>()
            .saturating_sub(outcome.rejected_written);
        if rejected.num_rows() > 0 {
            let adds = write_files(&self.rejected, rejected, &self.stages).await?;
            let committing = Instant::now();
            self.rejected.append(adds, Vec::new(), &[]).await?;
            self.stages.add(Stage::Commit, committing.elapsed());
        }

        let checking = Instant::now();
        let (fresh, partitions) = self.new_events(batch.usage).await?;
        self.stages.add(Stage::Dedup, checking.elapsed());
        outcome.written = fresh.num_rows() as u64;
        outcome.duplicates = partitions.duplicates;
        outcome.partitions = partitions.touched;
        if self.open_days.is_some() {
            // Even a batch of duplicates only closes the tenant-days it did not touch.
            debug_assert!(offsets.txns.is_empty(), "a backfill records no offsets");
            outcome.counts.accepted = events_by_tenant(&fresh);
            outcome.counts.duplicates = outcome.duplicates;
            let held = self
                .hold_and_commit(fresh, partitions.checked_at, &mut outcome)
                .await;
            self.failed = held.is_err();
            held?;
            return Ok(outcome);
        }
        if fresh.num_rows() == 0 && offsets.txns.is_empty() {
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
                self.dedup.known().forget(&checked);
                Err(err)
            }
        }
    }

    /// Commits a backfill's tenant-days still open; the writer is done after it.
    pub async fn finish(&mut self) -> Result<AppendOutcome, IngestError> {
        let mut outcome = AppendOutcome::default();
        if self.failed {
            return Err(IngestError::WriterFailed);
        }
        if self.open_days.as_ref().is_none_or(OpenDays::is_empty) {
            return Ok(outcome);
        }
        let committed = self.commit_closed(Closing::All, &mut outcome).await;
        self.failed = committed.is_err();
        committed?;
        Ok(outcome)
    }

    /// A backfill's write: appends the checked events to their open
    /// tenant-days, then commits those the batch closed.
    async fn hold_and_commit(
        &mut self,
        fresh: RecordBatch,
        checked_at: Option<u64>,
        outcome: &mut AppendOutcome,
    ) -> Result<(), IngestError> {
        let usage = self.usage.lock().await;
        let (Some(open), Dedup::Table { written, .. }) = (&mut self.open_days, &self.dedup) else {
            unreachable!("only a backfill holds tenant-days open");
        };
        open.write(&usage, fresh, checked_at, &written.hasher, &self.stages)
            .await?;
        drop(usage);
        self.commit_closed(Closing::Idle, outcome).await
    }

    /// Closes the open tenant-days `closing` names and commits their files in
    /// one commit, then records them as written.
    async fn commit_closed(
        &mut self,
        closing: Closing,
        outcome: &mut AppendOutcome,
    ) -> Result<(), IngestError> {
        let mut usage = self.usage.lock().await;
        let Some(open) = &mut self.open_days else {
            unreachable!("only a backfill holds tenant-days open");
        };
        let closed = open.close(closing, &self.stages).await?;
        if closed.is_empty() {
            return Ok(());
        }
        let committing = Instant::now();
        let mut adds = Vec::new();
        let mut closed_files = Vec::with_capacity(closed.len());
        for ClosedDay {
            key,
            adds: day_adds,
            fingerprints,
            tags,
        } in closed
        {
            let paths: Vec<String> = day_adds.iter().map(|add| add.path.clone()).collect();
            for mut add in day_adds {
                tags.write_into(add.tags.get_or_insert_with(HashMap::new));
                adds.push(add);
            }
            closed_files.push((key, fingerprints, paths));
        }
        outcome.counts.bytes = adds.iter().map(|a| a.size.max(0) as u64).sum();
        let version = usage.append(adds, Vec::new(), &[]).await?;
        drop(usage);
        self.stages.add(Stage::Commit, committing.elapsed());
        outcome.usage_version = Some(version);
        if let Dedup::Table { known, written, .. } = &mut self.dedup {
            for (key, fingerprints, paths) in closed_files {
                written.record_fingerprints(fingerprints, paths.iter().map(String::as_str));
                for path in paths {
                    known.add_file(&key, path);
                }
            }
        }
        tracing::debug!(
            version,
            secs = committing.elapsed().as_secs_f64(),
            "committed the closed tenant-days"
        );
        Ok(())
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
        let mut adds = write_partitions(&usage, fresh, &self.stages).await?;
        for add in &mut adds {
            tags.write_into(add.tags.get_or_insert_with(HashMap::new));
        }
        tracing::debug!(
            rows = outcome.written,
            files = adds.len(),
            secs = writing.elapsed().as_secs_f64(),
            "wrote the batch's files"
        );
        let committing = Instant::now();
        outcome.counts.bytes = adds.iter().map(|a| a.size.max(0) as u64).sum();
        #[cfg(feature = "test-hooks")]
        if offsets.abort_before_commit {
            usage.check_offsets(&offsets.expected).await?;
            tracing::error!("test hook: aborting between writing files and committing them");
            std::process::abort();
        }
        let version = usage
            .append(adds, offsets.txns.clone(), &offsets.expected)
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
        let reach = i32::try_from(self.dedup.known().window.reach_days()).unwrap_or(i32::MAX);
        let wanted = |lo: i32, hi: i32| lo.saturating_sub(reach)..=hi.saturating_add(reach);
        let files = match &mut self.dedup {
            Dedup::Table { tables, .. } => {
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
                Some(partition_files(tables, &reachable).await?)
            }
            Dedup::Recent { .. } => None,
        };

        let mut stats = PartitionStats {
            checked_at: files.as_ref().map(|f| f.version),
            ..PartitionStats::default()
        };
        let mut keep = vec![true; usage.num_rows()];
        // A backfill's open tenant-days (and, once checked, this batch's)
        // hold rows checked but not committed: their copies stay in the cache,
        // whatever is read from the lake or dropped over its cap.
        let holding = self.open_days.is_some();
        let mut open_days = self
            .open_days
            .as_ref()
            .map(OpenDays::days_by_tenant)
            .unwrap_or_default();
        let no_open_days = BTreeSet::new();
        for (tenant, rows, lo, hi) in by_tenant {
            // A backfill reads the tenant's days within reach that it does not
            // know as they are now.
            let mut loaded = Vec::new();
            if let (Some(lake), Dedup::Table { known, written, .. }) = (&files, &self.dedup) {
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
                        read_ids_and_times(lake.store.clone(), path, |id, ts| {
                            copies.push((Box::from(id), ts));
                        })
                        .await?;
                    }
                    let files = current.iter().map(|p| p.to_string()).collect();
                    loaded.push(LoadedDay { day, files, copies });
                }
            }
            let known = self.dedup.known();
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

    /// Keeps the rejected rows not recorded yet ([`RejectionKey`]).
    async fn new_rejections(&mut self, rejected: RecordBatch) -> Result<RecordBatch, IngestError> {
        let Dedup::Table {
            tables,
            rejected_keys,
            ..
        } = &mut self.dedup
        else {
            return Ok(rejected);
        };
        if rejected.num_rows() == 0 {
            return Ok(rejected);
        }
        if rejected_keys.is_none() {
            let mut keys = HashSet::new();
            let table = &tables.rejected;
            if table.version().unwrap_or(0) > 0 {
                let name = LakeTable::RejectedEvents.dir_name();
                let store = table.log_store().object_store(None);
                let files: Vec<_> = table
                    .snapshot()
                    .map_err(LakeError::table(name))?
                    .log_data()
                    .iter()
                    .map(|f| f.object_store_path())
                    .collect();
                for path in files {
                    let builder = open_lake_parquet(&store, &path).await?;
                    let mask = ProjectionMask::columns(
                        builder.parquet_schema(),
                        RejectionKey::COLUMNS.iter().copied(),
                    );
                    let reader = builder.with_projection(mask).build().map_err(|source| {
                        LakeError::File {
                            path: path.to_string(),
                            source,
                        }
                    })?;
                    for batch in reader {
                        keys.extend(RejectionKey::of_rows(&batch.map_err(LakeError::from)?)?);
                    }
                }
            }
            *rejected_keys = Some(keys);
        }
        let known = rejected_keys.as_mut().expect("loaded above");
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

/// The files of some partitions of `usage_events` at one version.
struct LakeFiles {
    store: deltalake::logstore::ObjectStoreRef,
    files: HashMap<TenantDay, Vec<deltalake::Path>>,
    version: u64,
}

/// The table's files of `partitions` (brought up to date first), and its store.
async fn partition_files(
    tables: &mut LakeTables,
    partitions: &[TenantDay],
) -> Result<LakeFiles, IngestError> {
    let name = LakeTable::UsageEvents.dir_name();
    let wanted: HashMap<String, &TenantDay> = partitions
        .iter()
        .map(|key| (partition_dir(key), key))
        .collect();
    let mut files: HashMap<TenantDay, Vec<deltalake::Path>> = HashMap::new();
    tables
        .usage
        .update_state()
        .await
        .map_err(LakeError::table(name))?;
    if !wanted.is_empty() {
        let snapshot = tables.usage.snapshot().map_err(LakeError::table(name))?;
        for file in snapshot.log_data().iter() {
            let path = file.object_store_path();
            let Some((dir, _)) = path.as_ref().rsplit_once('/') else {
                continue;
            };
            if let Some(key) = wanted.get(dir) {
                files.entry((*key).clone()).or_default().push(path.clone());
            }
        }
    }
    Ok(LakeFiles {
        store: tables.usage.log_store().object_store(None),
        files,
        version: tables.usage.version().unwrap_or_default(),
    })
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

/// The directory of a tenant-day partition, as Delta writes it.
fn partition_dir(key: &TenantDay) -> String {
    usage_partition_dir(&key.tenant_id, &key.day.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// Writes one batch as Parquet files of `table` (not yet committed).
async fn write_files(
    table: &LogAppender,
    batch: RecordBatch,
    stages: &StageClock,
) -> Result<Vec<Add>, IngestError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut writer = table.file_writer()?;
    let encoding = Instant::now();
    writer
        .write(batch)
        .await
        .map_err(LakeError::table(table.name()))?;
    stages.add(Stage::Encode, encoding.elapsed());
    let writing = Instant::now();
    let adds = writer
        .flush()
        .await
        .map_err(LakeError::table(table.name()))?;
    stages.add(Stage::Write, writing.elapsed());
    Ok(adds)
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
    store: deltalake::logstore::ObjectStoreRef,
    path: &deltalake::Path,
    mut sink: impl FnMut(&str, i64),
) -> Result<(), IngestError> {
    let file_error = |source| LakeError::File {
        path: path.to_string(),
        source,
    };
    let builder = open_lake_parquet(&store, path).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["event_id", "ts"]);
    for batch in builder.with_projection(mask).build().map_err(file_error)? {
        let batch = batch?;
        let ids = arrow::compute::cast(
            batch.column_by_name("event_id").ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("{path} has no event_id"))
            })?,
            &arrow::datatypes::DataType::Utf8,
        )?;
        let times = arrow::compute::cast(
            batch.column_by_name("ts").ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("{path} has no ts"))
            })?,
            &arrow::datatypes::DataType::Int64,
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dirs_match_delta_layout() {
        let key = |days| TenantDay::new("acme", date_of_epoch_days(days).unwrap());
        assert_eq!(partition_dir(&key(0)), "tenant_id=acme/day=1970-01-01");
        assert_eq!(partition_dir(&key(20513)), "tenant_id=acme/day=2026-03-01");
    }
}
