//! Tenant-days a file backfill keeps open across its batches.
//!
//! A backfill reads its input in batches (`ingest.backfill_flush_rows`,
//! `ingest.backfill_flush_bytes`), and a tenant-day's rows often straddle two of them:
//! writing each batch's share as a file of its own would leave such a
//! tenant-day with two files or more, for compaction to merge later. Instead
//! each tenant-day being written has one open Parquet file, and batches append
//! to it. A tenant-day is closed (its file finished, then committed by the
//! writer) once a batch brings it no rows, so input in time order writes one
//! file per tenant-day; all of them are closed when their buffered bytes reach
//! the budget (input in no order, or very many tenants), and at the end of the
//! input.
//!
//! The rows of an open tenant-day are checked for duplicates but not committed:
//! the writer keeps their ids in its cache until they are (see
//! `crate::writer`), and tags each file with the oldest table version its rows
//! were checked at and the bounds of their `ingested_at`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use allot_lake::append::LogAppender;
use allot_lake::file_writer::{FileWriter, NewFile};
use allot_schemas::layout::{DedupTags, TenantDay};
use allot_schemas::time::days_since_epoch;
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::take_record_batch;

use crate::error::IngestError;
use crate::partitions::{
    MAX_WRITE_WORKERS, ingested_bounds, join_workers, partition_key, partition_order, worker_shares,
};
use crate::stages::{Stage, StageClock};

/// The open tenant-days of one backfill.
pub(crate) struct OpenDays {
    open: HashMap<TenantDay, OpenDay>,
    /// Batches written so far.
    batches: u64,
    /// Buffered bytes at which every open tenant-day is closed.
    budget_bytes: usize,
}

/// One open tenant-day.
struct OpenDay {
    writer: FileWriter,
    /// The last batch that brought rows.
    last_batch: u64,
    /// Fingerprints of the `(tenant_id, event_id)` of its rows.
    fingerprints: Vec<u64>,
    /// The oldest table version its rows were checked at.
    checked_at: Option<u64>,
    /// The bounds of its rows' `ingested_at`.
    ingested: Option<(i64, i64)>,
}

/// A worker's share of a batch: its rows of each tenant-day (a range of the
/// batch's partition order) and the tenant-day's open file.
type Share = Vec<(std::ops::Range<usize>, TenantDay, OpenDay)>;

/// A closed tenant-day: its file and what the writer records once committed.
pub(crate) struct ClosedDay {
    pub(crate) key: TenantDay,
    pub(crate) files: Vec<NewFile>,
    pub(crate) fingerprints: Vec<u64>,
    pub(crate) tags: DedupTags,
}

/// Which open tenant-days [`OpenDays::close`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Those the latest batch brought no rows, or all when over the budget.
    Idle,
    /// All of them (the end of the input).
    All,
}

impl OpenDays {
    /// No open tenant-day yet; all are closed when their buffered bytes reach
    /// `budget_bytes`.
    pub(crate) fn new(budget_bytes: usize) -> Self {
        OpenDays {
            open: HashMap::new(),
            batches: 0,
            budget_bytes,
        }
    }

    /// The open days of each tenant (as days since the epoch).
    pub(crate) fn days_by_tenant(&self) -> HashMap<String, BTreeSet<i32>> {
        let mut days: HashMap<String, BTreeSet<i32>> = HashMap::new();
        for key in self.open.keys() {
            days.entry(key.tenant_id.clone())
                .or_default()
                .insert(days_since_epoch(key.day));
        }
        days
    }

    /// Appends checked `usage_events` rows to the open files of their
    /// tenant-days, opening those not open yet; each worker (one per core)
    /// writes a contiguous share of the tenant-days. `fingerprint` names a
    /// row's `(tenant_id, event_id)` for the writer's record of what it wrote.
    pub(crate) async fn write(
        &mut self,
        table: &LogAppender,
        batch: RecordBatch,
        checked_at: Option<u64>,
        fingerprint: &ahash::RandomState,
        stages: &Arc<StageClock>,
    ) -> Result<(), IngestError> {
        self.batches += 1;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sorting = Instant::now();
        let ingested = ingested_bounds(&batch);
        let (order, ranges) = partition_order(&batch);
        stages.add(Stage::Build, sorting.elapsed());
        let mut shares: Vec<Share> = Vec::new();
        for ranges in worker_shares(batch.num_rows(), ranges) {
            let mut share = Vec::with_capacity(ranges.len());
            for range in ranges {
                let key = partition_key(&batch, order.value(range.start) as usize)?;
                let day = match self.open.remove(&key) {
                    Some(day) => day,
                    None => OpenDay {
                        writer: table.file_writer()?,
                        last_batch: self.batches,
                        fingerprints: Vec::new(),
                        checked_at,
                        ingested,
                    },
                };
                share.push((range, key, day));
            }
            shares.push(share);
        }
        let (batch, order) = (Arc::new(batch), Arc::new(order));
        let this_batch = self.batches;
        let mut tasks = tokio::task::JoinSet::new();
        for share in shares {
            let (batch, order, stages) = (batch.clone(), order.clone(), Arc::clone(stages));
            let fingerprint = fingerprint.clone();
            tasks.spawn(async move {
                let mut written = Vec::with_capacity(share.len());
                for (range, key, mut day) in share {
                    let started = Instant::now();
                    let rows = order.slice(range.start, range.len());
                    let part = take_record_batch(&batch, &rows)?;
                    let ids = part
                        .column_by_name("event_id")
                        .expect("schema")
                        .as_string::<i32>();
                    day.fingerprints.extend(ids.iter().map(|id| {
                        fingerprint.hash_one((key.tenant_id.as_str(), id.unwrap_or_default()))
                    }));
                    let built = Instant::now();
                    stages.add(Stage::Build, built - started);
                    day.writer.write_tenant_day(part, &key).await?;
                    stages.add(Stage::Encode, built.elapsed());
                    day.last_batch = this_batch;
                    day.checked_at = min_version(day.checked_at, checked_at);
                    day.ingested = widen(day.ingested, ingested);
                    written.push((key, day));
                }
                Ok::<_, IngestError>(written)
            });
        }
        for written in join_workers(tasks, "a tenant-day's writer").await? {
            self.open.extend(written);
        }
        Ok(())
    }

    /// Finishes the files of the tenant-days `closing` names, on one worker per
    /// core, and forgets them.
    pub(crate) async fn close(
        &mut self,
        closing: Closing,
        stages: &Arc<StageClock>,
    ) -> Result<Vec<ClosedDay>, IngestError> {
        let buffered: usize = self.open.values().map(|d| d.writer.buffered_bytes()).sum();
        let all = closing == Closing::All || buffered >= self.budget_bytes;
        let latest = self.batches;
        let keys: Vec<TenantDay> = self
            .open
            .iter()
            .filter(|(_, day)| all || day.last_batch < latest)
            .map(|(key, _)| key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if all && closing == Closing::Idle {
            tracing::debug!(
                buffered,
                tenant_days = keys.len(),
                "open tenant-days over the budget: closing them all"
            );
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_WRITE_WORKERS);
        let mut shares: Vec<Vec<(TenantDay, OpenDay)>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, key) in keys.into_iter().enumerate() {
            let day = self.open.remove(&key).expect("listed above");
            shares[i % workers].push((key, day));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for share in shares.into_iter().filter(|s| !s.is_empty()) {
            let stages = Arc::clone(stages);
            tasks.spawn(async move {
                let mut closed = Vec::with_capacity(share.len());
                for (key, mut day) in share {
                    let started = Instant::now();
                    let files = day.writer.flush().await?;
                    stages.add(Stage::Write, started.elapsed());
                    closed.push(ClosedDay {
                        key,
                        files,
                        fingerprints: day.fingerprints,
                        tags: DedupTags {
                            version: None,
                            checked_at: day.checked_at,
                            ingested: day.ingested,
                        },
                    });
                }
                Ok::<_, IngestError>(closed)
            });
        }
        let mut closed: Vec<ClosedDay> = join_workers(tasks, "a tenant-day's writer")
            .await?
            .into_iter()
            .flatten()
            .collect();
        // In partition order, so the commit lists files as a flush would.
        closed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(closed)
    }

    /// Whether no tenant-day is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The older of two checked-at versions; unknown when either is.
fn min_version(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.min(b?))
}

/// The bounds covering both; unknown when either is.
fn widen(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    let (a, b) = (a?, b?);
    Some((a.0.min(b.0), a.1.max(b.1)))
}
