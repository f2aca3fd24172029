//! Writing decoded batches to the lake, one Delta commit per table per flush.
//!
//! [`LakeWriter::append`] removes events whose `(tenant_id, event_id)` it already
//! knows, writes the rest as Parquet files under
//! `tenant_id=<id>/day=<YYYY-MM-DD>/`, and commits them in one Delta commit. The
//! rejected rows are committed first, so a rejected event is recorded before any
//! offset that covers it. Commits go through [`LogAppender`]s, which never load
//! the tables' file lists.
//!
//! How far the duplicate check looks depends on the source (see [`Dedup`]): a
//! file backfill checks each tenant-day it writes against the partition's files,
//! so a rerun adds nothing; a collector checks against the ids it wrote recently,
//! so its memory does not grow with the table. Both keep the ids in a bounded
//! cache of recently touched partitions. What slips through is removed by
//! compaction, and the query engine counts every event once regardless.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use allot_query::lake::date_of_epoch_days;
use allot_schemas::lake::{LakeLocation, LakeTable, usage_partition_dir};
use allot_schemas::reason::ReasonCode;
use allot_schemas::table_schema::USAGE_PARTITION_COLUMNS;
use arrow::array::{AsArray, BooleanArray, Date32Array, RecordBatch, StringArray};
use arrow::compute::{SortColumn, filter_record_batch, lexsort_to_indices, take_record_batch};
use arrow::datatypes::Date32Type;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::{Add, Transaction};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::writer::{DeltaWriter, WriteMode};
use indexmap::IndexMap;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::append::LogAppender;
use crate::assemble::DecodedBatch;
use crate::error::IngestError;
use crate::lake::LakeTables;
use crate::telemetry::FlushCounts;

/// A tenant-day partition of `usage_events`: tenant id and days since the epoch.
pub type PartitionKey = (String, i32);

/// Most event ids a backfill keeps in its duplicate cache before old partitions
/// are dropped.
const BACKFILL_CACHED_KEYS: usize = 2_000_000;

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
    pub partitions: BTreeSet<PartitionKey>,
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
}

/// A `usage_events` appender shared with whoever reads the recorded offsets (the
/// collector's rebalance handler); a flush holds it for its commit.
pub type SharedAppender = std::sync::Arc<tokio::sync::Mutex<LogAppender>>;

/// How far a writer's duplicate check looks.
enum Dedup {
    /// The batch and each written partition's files in the table (file
    /// backfills): re-running a file adds nothing. The tables are loaded with
    /// their file lists, and rejected rows are checked against every recorded
    /// source.
    Table {
        tables: LakeTables,
        known: KnownEventIds,
        rejected_sources: Option<HashSet<String>>,
    },
    /// The batch and the ids this writer wrote lately (collectors): no table
    /// reads, so memory does not grow with the table. Rejected rows are recorded
    /// at least once (a batch re-read after a failed commit records them again).
    Recent { known: KnownEventIds },
}

impl LakeWriter {
    /// A writer for a file backfill; see [`Dedup::Table`].
    pub async fn for_backfill(location: &LakeLocation) -> Result<Self, IngestError> {
        let dedup = Dedup::Table {
            tables: LakeTables::open_or_create(location).await?,
            known: KnownEventIds::new(BACKFILL_CACHED_KEYS),
            rejected_sources: None,
        };
        Self::open(location, dedup).await
    }

    /// A writer for a Kafka collector; see [`Dedup::Recent`].
    pub async fn for_collector(location: &LakeLocation) -> Result<Self, IngestError> {
        let dedup = Dedup::Recent {
            known: KnownEventIds::new(COLLECTOR_CACHED_KEYS),
        };
        Self::open(location, dedup).await
    }

    async fn open(location: &LakeLocation, dedup: Dedup) -> Result<Self, IngestError> {
        Ok(LakeWriter {
            usage: std::sync::Arc::new(tokio::sync::Mutex::new(
                LogAppender::open(location, LakeTable::UsageEvents).await?,
            )),
            rejected: LogAppender::open(location, LakeTable::RejectedEvents).await?,
            dedup,
        })
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
        let mut outcome = AppendOutcome {
            rejected_by_reason: batch.rejected_by_reason,
            blank_lines: batch.blank_lines,
            ..AppendOutcome::default()
        };
        outcome.counts.rejected = rejections_by_tenant(&batch.rejected);
        let rejected = self.new_rejections(batch.rejected).await?;
        outcome.rejected_written = rejected.num_rows() as u64;
        outcome.rejected_duplicates = outcome
            .rejected_by_reason
            .values()
            .sum::<u64>()
            .saturating_sub(outcome.rejected_written);
        if rejected.num_rows() > 0 {
            let adds = write_files(&self.rejected, rejected).await?;
            self.rejected.append(adds, Vec::new(), &[]).await?;
        }

        let (fresh, partitions) = self.new_events(batch.usage).await?;
        outcome.written = fresh.num_rows() as u64;
        outcome.duplicates = partitions.duplicates;
        outcome.partitions = partitions.touched;
        if fresh.num_rows() == 0 && offsets.txns.is_empty() {
            return Ok(outcome);
        }
        outcome.counts.accepted = events_by_tenant(&fresh);
        outcome.counts.duplicates = outcome.duplicates;
        let writing = std::time::Instant::now();
        let mut usage = self.usage.lock().await;
        let adds = write_partitions(&usage, fresh).await?;
        tracing::debug!(
            rows = outcome.written,
            files = adds.len(),
            secs = writing.elapsed().as_secs_f64(),
            "wrote the batch's files"
        );
        let committing = std::time::Instant::now();
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
        tracing::debug!(
            version,
            secs = committing.elapsed().as_secs_f64(),
            "committed the batch"
        );
        outcome.usage_version = Some(version);
        Ok(outcome)
    }

    /// Keeps the rows of `usage` whose `(tenant_id, event_id)` is new.
    async fn new_events(
        &mut self,
        usage: RecordBatch,
    ) -> Result<(RecordBatch, PartitionStats), IngestError> {
        let event_ids = usage
            .column_by_name("event_id")
            .expect("schema")
            .as_string::<i32>()
            .clone();
        let (tenants, days) = partition_columns(&usage);
        let (tenants, days) = (tenants.clone(), days.clone());

        // Index the batch's partitions once (borrowing the ids from the arrays),
        // then check each partition's rows against its set of known event ids.
        let mut index: HashMap<(&str, i32), usize, ahash::RandomState> = HashMap::default();
        let mut rows_by_partition: Vec<Vec<usize>> = Vec::new();
        for row in 0..usage.num_rows() {
            let slot = *index
                .entry((tenants.value(row), days.value(row)))
                .or_insert_with(|| {
                    rows_by_partition.push(Vec::new());
                    rows_by_partition.len() - 1
                });
            rows_by_partition[slot].push(row);
        }
        let mut partitions: Vec<(PartitionKey, usize)> = index
            .into_iter()
            .map(|((tenant, day), slot)| ((tenant.to_string(), day), slot))
            .collect();
        partitions.sort();
        let (known, tables) = match &mut self.dedup {
            Dedup::Table { tables, known, .. } => (known, Some(tables)),
            Dedup::Recent { known } => (known, None),
        };
        let missing: Vec<PartitionKey> = partitions
            .iter()
            .map(|(key, _)| key)
            .filter(|key| !known.contains_partition(key))
            .cloned()
            .collect();
        match tables {
            Some(tables) => load_partitions(tables, known, &missing).await?,
            None => {
                for key in missing {
                    known.load_partition(key, EventIdSet::default());
                }
            }
        }

        let mut stats = PartitionStats::default();
        let mut keep = vec![true; usage.num_rows()];
        for (key, slot) in partitions {
            let mut known = known.partition_mut(&key);
            let mut wrote_any = false;
            for &row in &rows_by_partition[slot] {
                if known.insert(event_ids.value(row)) {
                    wrote_any = true;
                } else {
                    keep[row] = false;
                    stats.duplicates += 1;
                }
            }
            if wrote_any {
                stats.touched.insert(key);
            }
        }
        known.evict();
        if stats.duplicates == 0 {
            return Ok((usage, stats));
        }
        let fresh = filter_record_batch(&usage, &BooleanArray::from(keep))?;
        Ok((fresh, stats))
    }

    /// Keeps the rejected rows whose source is not recorded yet.
    async fn new_rejections(&mut self, rejected: RecordBatch) -> Result<RecordBatch, IngestError> {
        let Dedup::Table {
            tables,
            rejected_sources,
            ..
        } = &mut self.dedup
        else {
            return Ok(rejected);
        };
        if rejected.num_rows() == 0 {
            return Ok(rejected);
        }
        if rejected_sources.is_none() {
            let mut sources = HashSet::new();
            let table = &tables.rejected;
            if table.version().unwrap_or(0) > 0 {
                let name = LakeTable::RejectedEvents.dir_name();
                let store = table.log_store().object_store(None);
                let files: Vec<_> = table
                    .snapshot()
                    .map_err(IngestError::lake(name))?
                    .log_data()
                    .iter()
                    .map(|f| f.object_store_path())
                    .collect();
                for path in files {
                    read_string_column(store.clone(), &path, "source", |s| {
                        sources.insert(s.to_string());
                    })
                    .await?;
                }
            }
            *rejected_sources = Some(sources);
        }
        let known = rejected_sources.as_mut().expect("loaded above");
        let sources = rejected
            .column_by_name("source")
            .expect("schema")
            .as_string::<i32>();
        let keep: Vec<bool> = sources
            .iter()
            .map(|s| known.insert(s.unwrap_or_default().to_string()))
            .collect();
        if keep.iter().all(|k| *k) {
            return Ok(rejected);
        }
        Ok(filter_record_batch(&rejected, &keep.into())?)
    }
}

/// Reads the event ids of partitions not in `known` from their files in the
/// table (brought up to date first).
async fn load_partitions(
    tables: &mut LakeTables,
    known: &mut KnownEventIds,
    partitions: &[PartitionKey],
) -> Result<(), IngestError> {
    let name = LakeTable::UsageEvents.dir_name();
    let wanted: HashSet<String> = partitions
        .iter()
        .map(|(tenant, day)| partition_dir(tenant, *day))
        .collect();
    let mut files_by_dir: HashMap<String, Vec<deltalake::Path>> = HashMap::new();
    if !wanted.is_empty() {
        tables
            .usage
            .update_state()
            .await
            .map_err(IngestError::lake(name))?;
        let snapshot = tables.usage.snapshot().map_err(IngestError::lake(name))?;
        for file in snapshot.log_data().iter() {
            let path = file.object_store_path();
            let text = path.as_ref();
            let Some((dir, _)) = text.rsplit_once('/') else {
                continue;
            };
            if wanted.contains(dir) {
                files_by_dir
                    .entry(dir.to_string())
                    .or_default()
                    .push(path.clone());
            }
        }
    }
    let store = tables.usage.log_store().object_store(None);
    for (tenant, day) in partitions {
        let mut ids = EventIdSet::default();
        for path in files_by_dir
            .remove(&partition_dir(tenant, *day))
            .unwrap_or_default()
        {
            read_string_column(store.clone(), &path, "event_id", |id| {
                ids.insert(Box::from(id));
            })
            .await?;
        }
        known.load_partition((tenant.clone(), *day), ids);
    }
    Ok(())
}

/// Counts gathered while deduplicating one batch.
#[derive(Default)]
struct PartitionStats {
    touched: BTreeSet<PartitionKey>,
    duplicates: u64,
}

/// The directory of a tenant-day partition, as Delta writes it.
fn partition_dir(tenant: &str, day: i32) -> String {
    let date = date_of_epoch_days(day)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    usage_partition_dir(tenant, &date).unwrap_or_default()
}

/// The `tenant_id` and `day` columns of a `usage_events` batch.
fn partition_columns(batch: &RecordBatch) -> (&StringArray, &Date32Array) {
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

/// Writes one batch as Parquet files of `table` (not yet committed).
async fn write_files(table: &LogAppender, batch: RecordBatch) -> Result<Vec<Add>, IngestError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut writer = table.file_writer()?;
    writer
        .write(batch)
        .await
        .map_err(IngestError::lake(table.name()))?;
    writer
        .flush()
        .await
        .map_err(IngestError::lake(table.name()))
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
async fn write_partitions(
    table: &LogAppender,
    batch: RecordBatch,
) -> Result<Vec<Add>, IngestError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let order = lexsort_to_indices(
        &[
            SortColumn {
                values: batch.column_by_name("tenant_id").expect("schema").clone(),
                options: None,
            },
            SortColumn {
                values: batch.column_by_name("day").expect("schema").clone(),
                options: None,
            },
        ],
        None,
    )?;
    let ranges = partition_ranges(&batch, &order);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_WRITE_WORKERS)
        .min(ranges.len());
    // Contiguous shares of about equal rows, so each worker's files stay in order.
    let per_worker = batch.num_rows().div_ceil(workers);
    let mut shares: Vec<Vec<std::ops::Range<usize>>> = vec![Vec::new()];
    let mut share_rows = 0;
    for range in ranges {
        if share_rows >= per_worker {
            shares.push(Vec::new());
            share_rows = 0;
        }
        share_rows += range.len();
        shares.last_mut().expect("one share at least").push(range);
    }
    let (batch, order) = (std::sync::Arc::new(batch), std::sync::Arc::new(order));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, share) in shares.into_iter().enumerate() {
        let mut writer = table.file_writer()?;
        let name = table.name();
        let (batch, order) = (batch.clone(), order.clone());
        tasks.spawn(async move {
            let mut adds = Vec::new();
            for range in share {
                let rows = order.slice(range.start, range.len());
                // One tenant-day: its partition values are given, so the Delta
                // writer does not group the rows again.
                let values = partition_values(&batch, rows.value(0) as usize)?;
                let partition = take_record_batch(&batch, &rows)?;
                writer
                    .write_partition(partition, &values, WriteMode::Default)
                    .await
                    .map_err(IngestError::lake(name))?;
                adds.extend(writer.flush().await.map_err(IngestError::lake(name))?);
            }
            Ok::<_, IngestError>((index, adds))
        });
    }
    let mut written = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        written.push(joined.map_err(|e| IngestError::Worker(e.to_string()))??);
    }
    written.sort_by_key(|(index, _)| *index);
    Ok(written.into_iter().flat_map(|(_, adds)| adds).collect())
}

/// The partition values (`tenant_id`, `day`) of one row of a `usage_events` batch.
fn partition_values(
    batch: &RecordBatch,
    row: usize,
) -> Result<IndexMap<String, Scalar>, IngestError> {
    USAGE_PARTITION_COLUMNS
        .iter()
        .map(|&name| {
            let column = batch.column_by_name(name).expect("schema");
            let value = Scalar::from_array(column.as_ref(), row).ok_or_else(|| {
                IngestError::lake(LakeTable::UsageEvents.dir_name())(
                    deltalake::DeltaTableError::Generic(format!("no partition value in {name}")),
                )
            })?;
            Ok((name.to_string(), value))
        })
        .collect()
}

/// Most concurrent Parquet writers of one flush.
const MAX_WRITE_WORKERS: usize = 4;

/// The runs of `order` (row indices sorted by tenant and day) that share a
/// tenant-day partition.
fn partition_ranges(
    batch: &RecordBatch,
    order: &arrow::array::UInt32Array,
) -> Vec<std::ops::Range<usize>> {
    let (tenants, days) = partition_columns(batch);
    let key = |i: usize| {
        let row = order.value(i) as usize;
        (tenants.value(row), days.value(row))
    };
    let mut ranges = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || key(i) != key(start) {
            ranges.push(start..i);
            start = i;
        }
    }
    ranges
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

/// Reads one string column of a Parquet file of the lake into `sink`.
pub(crate) async fn read_string_column(
    store: deltalake::logstore::ObjectStoreRef,
    path: &deltalake::Path,
    column: &str,
    mut sink: impl FnMut(&str),
) -> Result<(), IngestError> {
    let file_error = |source| IngestError::LakeFile {
        path: path.to_string(),
        source,
    };
    let object_error = |e: deltalake::ObjectStoreError| {
        file_error(parquet::errors::ParquetError::External(Box::new(e)))
    };
    let bytes = store
        .get(path)
        .await
        .map_err(object_error)?
        .bytes()
        .await
        .map_err(object_error)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(file_error)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), [column]);
    for batch in builder.with_projection(mask).build().map_err(file_error)? {
        let batch = batch?;
        let values = batch.column(0);
        if let Some(strings) = values.as_string_opt::<i32>() {
            strings.iter().flatten().for_each(&mut sink);
        } else if let Some(views) = values.as_string_view_opt() {
            views.iter().flatten().for_each(&mut sink);
        }
    }
    Ok(())
}

/// Event ids of one partition.
type EventIdSet = HashSet<Box<str>, ahash::RandomState>;

/// Event ids known to be in the lake, for recently touched partitions.
struct KnownEventIds {
    partitions: HashMap<PartitionKey, KnownPartition>,
    max_keys: usize,
    tick: u64,
}

/// The known event ids of one partition and when it was last touched.
struct KnownPartition {
    touched: u64,
    ids: EventIdSet,
}

impl KnownEventIds {
    fn new(max_keys: usize) -> Self {
        KnownEventIds {
            partitions: HashMap::new(),
            max_keys,
            tick: 0,
        }
    }

    fn contains_partition(&self, key: &PartitionKey) -> bool {
        self.partitions.contains_key(key)
    }

    fn load_partition(&mut self, key: PartitionKey, ids: EventIdSet) {
        self.partitions.insert(
            key,
            KnownPartition {
                touched: self.tick,
                ids,
            },
        );
    }

    /// The ids of a loaded partition, marked as touched by the current batch.
    fn partition_mut(&mut self, key: &PartitionKey) -> KnownIds<'_> {
        let partition = self
            .partitions
            .get_mut(key)
            .expect("partitions are loaded before their events are checked");
        partition.touched = self.tick;
        KnownIds(&mut partition.ids)
    }

    fn keys(&self) -> usize {
        self.partitions.values().map(|p| p.ids.len()).sum()
    }

    /// Ends a batch: over the cap, drops the least recently touched partitions
    /// (never those of the batch just checked) until half the cap is free.
    fn evict(&mut self) {
        let current = self.tick;
        self.tick += 1;
        let mut keys = self.keys();
        if keys <= self.max_keys {
            return;
        }
        let mut by_age: Vec<(u64, PartitionKey, usize)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.touched < current)
            .map(|(key, p)| (p.touched, key.clone(), p.ids.len()))
            .collect();
        by_age.sort();
        for (_, key, len) in by_age {
            if keys <= self.max_keys / 2 {
                break;
            }
            self.partitions.remove(&key);
            keys -= len;
        }
    }
}

/// The known ids of one partition, borrowed for checking a batch.
struct KnownIds<'a>(&'a mut EventIdSet);

impl KnownIds<'_> {
    /// Records `event_id`; false when it was already known.
    fn insert(&mut self, event_id: &str) -> bool {
        if self.0.contains(event_id) {
            return false;
        }
        self.0.insert(Box::from(event_id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dirs_match_delta_layout() {
        assert_eq!(partition_dir("acme", 0), "tenant_id=acme/day=1970-01-01");
        assert_eq!(
            partition_dir("acme", 20513),
            "tenant_id=acme/day=2026-03-01"
        );
    }

    #[test]
    fn cache_evicts_old_partitions_and_remembers_new_ids() {
        let mut known = KnownEventIds::new(4);
        let a = ("a".to_string(), 1);
        let b = ("b".to_string(), 1);
        known.load_partition(a.clone(), EventIdSet::default());
        assert!(known.partition_mut(&a).insert("1"));
        assert!(!known.partition_mut(&a).insert("1"));
        assert!(known.partition_mut(&a).insert("2"));
        known.evict();
        known.load_partition(b.clone(), EventIdSet::default());
        for id in ["1", "2", "3"] {
            assert!(known.partition_mut(&b).insert(id));
        }
        known.evict();
        assert!(!known.contains_partition(&a));
        assert!(known.contains_partition(&b));
    }
}
