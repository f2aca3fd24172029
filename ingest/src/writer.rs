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
//! the table. Both keep the ids in a bounded cache of recently touched tenants.
//! What slips through is removed by compaction, and the query engine counts
//! every event once regardless.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use allot_lake::append::LogAppender;
use allot_lake::tables::LakeTables;
use allot_schemas::layout::{DedupTags, LakeLocation, LakeTable, TenantDay, usage_partition_dir};
use allot_schemas::reason::ReasonCode;
use allot_schemas::time::{date_of_epoch_days, days_since_epoch, epoch_day_of_micros};
use arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::filter_record_batch;
use deltalake::kernel::{Add, Transaction};
use deltalake::writer::DeltaWriter;
use parquet::arrow::ProjectionMask;

use allot_lake::LakeError;
use allot_lake::data_file::open_lake_parquet;
use allot_lake::dedup::DedupWindow;
use arrow::datatypes::TimestampMicrosecondType;

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

/// What identifies a rejection in a backfill's input: its place (the line of a
/// file, whatever name the file was given; a Kafka source as a whole) and a
/// digest of its bytes (the first 4 KiB `rejected_events` keeps, and the full
/// length). The same input read again gives the same keys, so a rerun records
/// nothing twice; a different input under the same name (every `--from-file -`)
/// differs in its bytes, so its rejections are recorded even at line numbers
/// rejected before. It is computed from the stored columns, so rows recorded
/// before it existed count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RejectionKey([u8; 16]);

impl RejectionKey {
    /// The columns of `rejected_events` a key is computed from.
    const COLUMNS: [&'static str; 3] = ["source", "raw", "raw_len"];

    fn new(source: &str, raw: &[u8], raw_len: i64) -> RejectionKey {
        use sha2::Digest as _;
        // `file:<name>:<line>` (the name may hold `:`) keys on its line only.
        let place = match source
            .strip_prefix("file:")
            .and_then(|s| s.rsplit_once(':'))
        {
            Some((_, line)) => format!("line:{line}"),
            None => source.to_string(),
        };
        let mut digest = sha2::Sha256::new();
        for part in [place.as_bytes(), &raw_len.to_le_bytes(), raw] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        let mut key = [0; 16];
        key.copy_from_slice(&digest.finalize()[..16]);
        RejectionKey(key)
    }

    /// The key of every row of a `rejected_events` batch (or of a projection
    /// of it onto [`RejectionKey::COLUMNS`]).
    fn of_rows(batch: &RecordBatch) -> Result<Vec<RejectionKey>, IngestError> {
        use arrow::datatypes::DataType;
        let column = |name: &str, to: &DataType| -> Result<arrow::array::ArrayRef, IngestError> {
            let found = batch
                .column_by_name(name)
                .ok_or_else(|| LakeError::Unreadable {
                    table: LakeTable::RejectedEvents.dir_name(),
                    message: format!("no {name} column"),
                })?;
            Ok(arrow::compute::cast(found, to).map_err(LakeError::from)?)
        };
        let sources = column("source", &DataType::Utf8)?;
        let raws = column("raw", &DataType::Binary)?;
        let lens = column("raw_len", &DataType::Int64)?;
        let (sources, raws, lens) = (
            sources.as_string::<i32>(),
            raws.as_binary::<i32>(),
            lens.as_primitive::<arrow::datatypes::Int64Type>(),
        );
        Ok((0..batch.num_rows())
            .map(|row| RejectionKey::new(sources.value(row), raws.value(row), lens.value(row)))
            .collect())
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

/// The `event_id` and `ts` columns of a `usage_events` batch.
fn event_columns(batch: &RecordBatch) -> (&StringArray, &TimestampMicrosecondArray) {
    let ids = batch
        .column_by_name("event_id")
        .expect("schema")
        .as_string::<i32>();
    let times = batch
        .column_by_name("ts")
        .expect("schema")
        .as_primitive::<TimestampMicrosecondType>();
    (ids, times)
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

/// The `ts` of the copies of one event id a tenant has on the loaded days: one
/// nearly always, so it is kept inline.
enum Copies {
    One(i64),
    Many(Vec<i64>),
}

impl Copies {
    fn times(&self) -> &[i64] {
        match self {
            Copies::One(ts) => std::slice::from_ref(ts),
            Copies::Many(times) => times,
        }
    }

    fn push(&mut self, ts: i64) {
        match self {
            Copies::One(first) => *self = Copies::Many(vec![*first, ts]),
            Copies::Many(times) => times.push(ts),
        }
    }
}

/// The copies a tenant has on the days loaded (or written lately).
#[derive(Default)]
struct TenantIds {
    touched: u64,
    /// Days whose copies are all known, with the files they are known from.
    days: BTreeMap<i32, BTreeSet<String>>,
    ids: HashMap<Box<str>, Copies, ahash::RandomState>,
    copies: usize,
}

impl TenantIds {
    /// Removes one copy of `event_id` at `ts`; false when there is none.
    fn forget(&mut self, event_id: &str, ts: i64) -> bool {
        let Some(copies) = self.ids.get_mut(event_id) else {
            return false;
        };
        match copies {
            Copies::One(only) if *only == ts => {
                self.ids.remove(event_id);
            }
            Copies::One(_) => return false,
            Copies::Many(times) => {
                let Some(at) = times.iter().rposition(|t| *t == ts) else {
                    return false;
                };
                times.remove(at);
                if let [one] = times.as_slice() {
                    *copies = Copies::One(*one);
                }
            }
        }
        self.copies -= 1;
        true
    }
}

/// Event ids known to be in the lake, for recently touched tenants.
struct KnownEventIds {
    tenants: HashMap<String, TenantIds>,
    /// Σ copies over the tenants.
    total: usize,
    window: DedupWindow,
    max_keys: usize,
    /// The copies left after the last pass over the cap: those on open days
    /// (which no pass can drop) and the last tenant's. The next pass waits
    /// until half the cap has been added on top, so that a backfill whose open
    /// days hold more than the cap does not rescan every tenant after each
    /// one it checks.
    left_after_pass: usize,
    tick: u64,
}

impl KnownEventIds {
    fn new(max_keys: usize, window: DedupWindow) -> Self {
        KnownEventIds {
            tenants: HashMap::new(),
            total: 0,
            window,
            max_keys,
            left_after_pass: 0,
            tick: 0,
        }
    }

    /// Whether every copy of the tenant-day is known, its files being `current`.
    fn knows_day(&self, key: &TenantDay, current: &[deltalake::Path]) -> bool {
        self.tenants
            .get(&key.tenant_id)
            .and_then(|t| t.days.get(&days_since_epoch(key.day)))
            .is_some_and(|known| {
                known.len() == current.len() && current.iter().all(|p| known.contains(p.as_ref()))
            })
    }

    /// Records a file written to a tenant-day whose copies are known (its rows
    /// were added when they were checked).
    fn add_file(&mut self, key: &TenantDay, path: String) {
        if let Some(known) = self
            .tenants
            .get_mut(&key.tenant_id)
            .and_then(|t| t.days.get_mut(&days_since_epoch(key.day)))
        {
            known.insert(path);
        }
    }

    /// The known copies of a tenant, marked as touched by the current batch.
    fn tenant_mut(&mut self, tenant: &str) -> KnownIds<'_> {
        let tick = self.tick;
        let ids = self.tenants.entry(tenant.to_string()).or_default();
        ids.touched = tick;
        KnownIds {
            ids,
            total: &mut self.total,
            window: self.window,
        }
    }

    /// Forgets the copies that checking `rows` recorded, once their batch turned
    /// out not to be committed.
    fn forget(&mut self, rows: &RecordBatch) {
        let (tenants, _) = partition_columns(rows);
        let (ids, times) = event_columns(rows);
        for row in 0..rows.num_rows() {
            // A tenant dropped over the cap meanwhile has nothing left to forget.
            if let Some(tenant) = self.tenants.get_mut(tenants.value(row))
                && tenant.forget(ids.value(row), times.value(row))
            {
                self.total -= 1;
            }
        }
    }

    /// Ends the check of one tenant: over the cap, drops the least recently
    /// touched tenants until half the cap is free (the tenant just checked
    /// last). Of a tenant with `open` days (a backfill's rows not committed
    /// yet), only the copies on those days are kept, and all its days count as
    /// unknown, so they are read again when needed.
    fn advance(&mut self, open: &HashMap<String, BTreeSet<i32>>) {
        self.tick += 1;
        if self.total <= self.max_keys.max(self.left_after_pass + self.max_keys / 2) {
            return;
        }
        let mut by_age: Vec<(u64, String, usize)> = self
            .tenants
            .iter()
            .map(|(tenant, t)| (t.touched, tenant.clone(), t.copies))
            .collect();
        by_age.sort();
        for (_, tenant, len) in by_age {
            if self.total <= self.max_keys / 2 {
                break;
            }
            match open.get(&tenant) {
                None => {
                    self.tenants.remove(&tenant);
                    self.total -= len;
                }
                Some(days) => {
                    let ids = self.tenants.get_mut(&tenant).expect("listed above");
                    ids.days.clear();
                    let mut held = KnownIds {
                        ids,
                        total: &mut self.total,
                        window: self.window,
                    };
                    held.retain_copies(|day| days.contains(&day));
                }
            }
        }
        self.left_after_pass = self.total;
    }
}

/// Most fingerprints a backfill keeps of the ids it wrote (8 bytes each, plus
/// the hash set's overhead); beyond it, the days it wrote are read back instead.
const WRITTEN_FINGERPRINTS: usize = 8_000_000;

/// What a backfill wrote itself: the paths of its files and a 64-bit
/// fingerprint of each `(tenant_id, event_id)` in them. A tenant-day whose files
/// are all its own holds no copy of an id without its fingerprint, so it need
/// not be read back while none of the tenant's new ids matches one; a match
/// (a duplicate, or one chance in about 2^64 / n of two ids sharing a
/// fingerprint) reads the days as before, so the check stays exact.
#[derive(Default)]
struct WrittenIds {
    hasher: ahash::RandomState,
    fingerprints: HashSet<u64, ahash::RandomState>,
    paths: HashSet<String>,
    /// Set once the cap is reached: nothing is vouched for any more.
    full: bool,
}

impl WrittenIds {
    fn fingerprint(&self, tenant: &str, event_id: &str) -> u64 {
        self.hasher.hash_one((tenant, event_id))
    }

    /// Whether one of `event_ids` of `tenant` may be among the ids written.
    fn has_any<'a>(&self, tenant: &str, mut event_ids: impl Iterator<Item = &'a str>) -> bool {
        !self.fingerprints.is_empty()
            && event_ids.any(|id| self.fingerprints.contains(&self.fingerprint(tenant, id)))
    }

    /// Whether every one of `files` was written (and fingerprinted) here.
    fn wrote_all(&self, files: &[deltalake::Path]) -> bool {
        !self.full && files.iter().all(|p| self.paths.contains(p.as_ref()))
    }

    /// Records the committed `files` and the [`fingerprint`](Self::fingerprint)s
    /// of the rows they hold.
    fn record_fingerprints<'a>(
        &mut self,
        fingerprints: Vec<u64>,
        files: impl Iterator<Item = &'a str>,
    ) {
        if self.full {
            return;
        }
        if self.fingerprints.len() + fingerprints.len() > WRITTEN_FINGERPRINTS {
            *self = WrittenIds {
                full: true,
                ..WrittenIds::default()
            };
            return;
        }
        self.fingerprints.extend(fingerprints);
        self.paths.extend(files.map(str::to_string));
    }
}

/// A tenant-day read from the lake: its files and the copies (id, `ts`) in them.
struct LoadedDay {
    day: i32,
    files: BTreeSet<String>,
    copies: Vec<(Box<str>, i64)>,
}

/// The known copies of one tenant, borrowed for checking a batch.
struct KnownIds<'a> {
    ids: &'a mut TenantIds,
    total: &'a mut usize,
    window: DedupWindow,
}

impl KnownIds<'_> {
    /// Replaces the copies of the days read from the lake with what was read,
    /// except on the `open` days, whose copies not yet committed are kept: what
    /// was read is added to them, each copy once.
    fn load_days(&mut self, loaded: Vec<LoadedDay>, open: &BTreeSet<i32>) {
        if loaded.is_empty() {
            return;
        }
        let replaced: BTreeSet<i32> = loaded
            .iter()
            .map(|l| l.day)
            .filter(|day| !open.contains(day))
            .collect();
        self.retain_copies(|day| !replaced.contains(&day));
        for LoadedDay { day, files, copies } in loaded {
            self.ids.days.insert(day, files);
            for (id, ts) in copies {
                let held = open.contains(&day)
                    && self
                        .ids
                        .ids
                        .get(&id)
                        .is_some_and(|c| c.times().contains(&ts));
                if !held {
                    self.add(id, ts);
                }
            }
        }
    }

    fn add(&mut self, id: Box<str>, ts: i64) {
        self.ids.copies += 1;
        *self.total += 1;
        match self.ids.ids.get_mut(&id) {
            Some(copies) => copies.push(ts),
            None => {
                self.ids.ids.insert(id, Copies::One(ts));
            }
        }
    }

    /// Forgets the copies on days outside `days`, so a long backfill of one
    /// tenant does not accumulate its whole history.
    fn keep_days(&mut self, days: std::ops::RangeInclusive<i32>) {
        if self.ids.days.keys().all(|d| days.contains(d)) {
            return;
        }
        self.ids.days.retain(|d, _| days.contains(d));
        self.retain_copies(|day| days.contains(&day));
    }

    /// Keeps the copies whose day `keep` accepts.
    fn retain_copies(&mut self, keep: impl Fn(i32) -> bool) {
        let mut left = 0;
        // In place: this runs over every id of a tenant, most with one copy.
        self.ids.ids.retain(|_, copies| match copies {
            Copies::One(ts) => {
                let kept = keep(epoch_day_of_micros(*ts));
                left += usize::from(kept);
                kept
            }
            Copies::Many(times) => {
                times.retain(|ts| keep(epoch_day_of_micros(*ts)));
                left += times.len();
                match times.as_slice() {
                    [] => false,
                    [one] => {
                        *copies = Copies::One(*one);
                        true
                    }
                    _ => true,
                }
            }
        });
        *self.total = *self.total - self.ids.copies + left;
        self.ids.copies = left;
    }

    /// Records a copy of `event_id` at `ts`; false when the tenant already has a
    /// copy within the window.
    fn insert(&mut self, event_id: &str, ts: i64) -> bool {
        if let Some(copies) = self.ids.ids.get(event_id)
            && copies.times().iter().any(|t| self.window.within(*t, ts))
        {
            return false;
        }
        self.add(Box::from(event_id), ts);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_schemas::time::MICROS_PER_DAY;

    #[test]
    fn rejections_are_known_by_their_line_and_bytes_not_their_file_name() {
        let key = RejectionKey::new;
        // The same line of the same bytes, whatever the input was called.
        assert_eq!(key("file:-:3", b"{x", 2), key("file:a:b.jsonl:3", b"{x", 2));
        // Another input with the same name: other bytes, another rejection.
        assert_ne!(key("file:-:3", b"{x", 2), key("file:-:3", b"{y", 2));
        assert_ne!(key("file:-:3", b"{x", 2), key("file:-:4", b"{x", 2));
        // A longer line kept as the same 4 KiB prefix.
        assert_ne!(key("file:-:3", b"{x", 2), key("file:-:3", b"{x", 9_000));
        assert_ne!(key("kafka:t/0@3", b"{x", 2), key("file:-:3", b"{x", 2));
    }

    fn day(day: i32, files: &[&str], copies: &[(&str, i64)]) -> LoadedDay {
        LoadedDay {
            day,
            files: files.iter().map(|f| f.to_string()).collect(),
            copies: copies
                .iter()
                .map(|(id, ts)| (Box::from(*id), *ts))
                .collect(),
        }
    }

    fn paths(names: &[&str]) -> Vec<deltalake::Path> {
        names.iter().map(|n| deltalake::Path::from(*n)).collect()
    }

    #[test]
    fn partition_dirs_match_delta_layout() {
        let key = |days| TenantDay::new("acme", date_of_epoch_days(days).unwrap());
        assert_eq!(partition_dir(&key(0)), "tenant_id=acme/day=1970-01-01");
        assert_eq!(partition_dir(&key(20513)), "tenant_id=acme/day=2026-03-01");
    }

    #[test]
    fn forgetting_a_copy_removes_that_copy_only() {
        let mut tenant = TenantIds::default();
        tenant.ids.insert(Box::from("e1"), Copies::Many(vec![1, 2]));
        tenant.copies = 2;
        assert!(!tenant.forget("e1", 5), "no copy at 5");
        assert!(!tenant.forget("e2", 1), "no such id");
        assert!(tenant.forget("e1", 2));
        assert!(matches!(tenant.ids["e1"], Copies::One(1)));
        assert!(tenant.forget("e1", 1));
        assert!(tenant.ids.is_empty());
        assert_eq!(tenant.copies, 0);
    }

    #[test]
    fn cache_checks_the_window_and_evicts_old_tenants() {
        const DAY: i64 = MICROS_PER_DAY;
        let mut known = KnownEventIds::new(4, DedupWindow::default());
        {
            let mut a = known.tenant_mut("a");
            a.load_days(vec![day(10, &["f1"], &[("x", 10 * DAY)])], &BTreeSet::new());
            // 34 days later: the same event; 35 days later: another one.
            assert!(!a.insert("x", 44 * DAY));
            assert!(a.insert("x", 45 * DAY));
            assert!(!a.insert("x", 45 * DAY + 5));
            assert!(a.insert("y", 45 * DAY));
        }
        known.advance(&HashMap::new());
        let a10 = TenantDay::new("a", date_of_epoch_days(10).unwrap());
        assert!(known.knows_day(&a10, &paths(&["f1"])));
        // Another writer's file on the day: the cached copies are no longer all.
        assert!(!known.knows_day(&a10, &paths(&["f1", "f2"])));
        known.add_file(&a10, "f2".to_string());
        assert!(known.knows_day(&a10, &paths(&["f1", "f2"])));
        // Compaction replaced the files: read the day again.
        assert!(!known.knows_day(&a10, &paths(&["f3"])));
        {
            let mut b = known.tenant_mut("b");
            for (i, id) in ["1", "2"].into_iter().enumerate() {
                assert!(b.insert(id, i as i64));
            }
        }
        // 5 ids over a cap of 4: the older tenant goes, down to half the cap.
        known.advance(&HashMap::new());
        assert!(!known.knows_day(&a10, &paths(&["f1", "f2"])));
        assert!(known.tenants.contains_key("b"));
    }

    #[test]
    fn dropping_a_tenant_keeps_the_copies_of_its_open_days() {
        const DAY: i64 = MICROS_PER_DAY;
        let mut known = KnownEventIds::new(2, DedupWindow::default());
        {
            let mut a = known.tenant_mut("a");
            a.load_days(vec![day(10, &["f1"], &[("x", 10 * DAY)])], &BTreeSet::new());
            // Checked into day 11, which is open: not in any file yet.
            assert!(a.insert("y", 11 * DAY));
        }
        known.advance(&HashMap::new());
        {
            let mut b = known.tenant_mut("b");
            assert!(b.insert("1", 0));
        }
        // Over the cap: a's committed copies go, its open day's stay, and its
        // days are unknown (read again when needed); b goes whole.
        let open = HashMap::from([("a".to_string(), BTreeSet::from([11]))]);
        known.advance(&open);
        let a10 = TenantDay::new("a", date_of_epoch_days(10).unwrap());
        assert!(!known.knows_day(&a10, &paths(&["f1"])));
        assert_eq!(known.total, 1);
        assert!(!known.tenants.contains_key("b"));
        let mut a = known.tenant_mut("a");
        assert!(!a.insert("y", 11 * DAY + 1), "the open copy still counts");
        assert!(a.insert("x", 12 * DAY), "the committed copy left the cache");
    }

    #[test]
    fn copies_no_pass_can_drop_do_not_start_a_pass_per_tenant() {
        const DAY: i64 = MICROS_PER_DAY;
        let mut known = KnownEventIds::new(4, DedupWindow::default());
        let open = HashMap::from([("a".to_string(), BTreeSet::from([11]))]);
        {
            let mut a = known.tenant_mut("a");
            for i in 0..6 {
                assert!(a.insert(&format!("a{i}"), 11 * DAY + i));
            }
        }
        // Over the cap, but every copy is on an open day: the pass keeps them.
        known.advance(&open);
        assert_eq!((known.total, known.left_after_pass), (6, 6));
        // The next tenants are not dropped until half the cap is added on top.
        for tenant in ["b", "c"] {
            assert!(known.tenant_mut(tenant).insert("1", 0));
            known.advance(&open);
            assert!(known.tenants.contains_key(tenant));
        }
        assert_eq!(known.total, 8);
        assert!(known.tenant_mut("d").insert("1", 0));
        known.advance(&open);
        // Every tenant without open days goes; a's open copies stay.
        assert_eq!(known.tenants.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!((known.total, known.left_after_pass), (6, 6));
    }

    #[test]
    fn days_outside_the_range_are_forgotten() {
        let mut known = KnownEventIds::new(100, DedupWindow::default());
        let mut a = known.tenant_mut("a");
        a.load_days(
            vec![
                day(1, &["f1"], &[("x", MICROS_PER_DAY)]),
                day(50, &["f50"], &[("x", 50 * MICROS_PER_DAY)]),
            ],
            &BTreeSet::new(),
        );
        a.keep_days(40..=60);
        assert_eq!(a.ids.copies, 1);
        assert!(a.insert("x", 10 * MICROS_PER_DAY));
        assert!(!a.insert("x", 49 * MICROS_PER_DAY));
    }

    #[test]
    fn reloading_a_day_replaces_its_copies() {
        let mut known = KnownEventIds::new(100, DedupWindow::default());
        let mut a = known.tenant_mut("a");
        let none = BTreeSet::new();
        a.load_days(vec![day(5, &["f1"], &[("x", 5 * MICROS_PER_DAY)])], &none);
        a.load_days(vec![day(5, &["f2"], &[("y", 5 * MICROS_PER_DAY)])], &none);
        assert_eq!(a.ids.copies, 1);
        assert!(a.insert("x", 5 * MICROS_PER_DAY));
        assert!(!a.insert("y", 5 * MICROS_PER_DAY));
    }

    #[test]
    fn reloading_an_open_day_keeps_its_uncommitted_copies() {
        let mut known = KnownEventIds::new(100, DedupWindow::default());
        let mut a = known.tenant_mut("a");
        let open = BTreeSet::from([5]);
        a.load_days(vec![day(5, &["f1"], &[("x", 5 * MICROS_PER_DAY)])], &open);
        // A row checked into the open day, not committed yet.
        assert!(a.insert("y", 5 * MICROS_PER_DAY + 1));
        // The day read again (its committed file holds x only): y stays, x once.
        a.load_days(vec![day(5, &["f1"], &[("x", 5 * MICROS_PER_DAY)])], &open);
        assert_eq!(a.ids.copies, 2);
        assert!(!a.insert("y", 5 * MICROS_PER_DAY + 2));
        assert!(!a.insert("x", 5 * MICROS_PER_DAY + 2));
    }

    #[test]
    fn written_ids_vouch_only_for_their_own_files() {
        let mut written = WrittenIds::default();
        let fingerprints = vec![written.fingerprint("a", "x"), written.fingerprint("a", "y")];
        written.record_fingerprints(fingerprints, ["p1"].into_iter());
        assert!(written.wrote_all(&paths(&["p1"])));
        assert!(written.wrote_all(&[]));
        assert!(!written.wrote_all(&paths(&["p1", "other"])));
        assert!(written.has_any("a", ["z", "y"].into_iter()));
        assert!(!written.has_any("a", ["z"].into_iter()));
        assert!(!written.has_any("b", ["x"].into_iter()));
    }
}
