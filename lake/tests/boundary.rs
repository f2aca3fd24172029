//! allot-lake at its own boundary: what a writer of the lake relies on, in the
//! crate's own types, without a collector or the binary around it.
//!
//! - Fencing: an append commits only while the table still records the offset
//!   its batch started from; a fenced append's files are never referenced; a
//!   commit of another writer in between is no conflict.
//! - Compaction: a tenant-day's small files become one, its duplicates within
//!   the dedup window are dropped, and the writers' offsets survive it, so a
//!   writer that opened before it appends after it unfenced.

use std::sync::Arc;

use allot_lake::append::LogAppender;
use allot_lake::dedup::DedupWindow;
use allot_lake::snapshot::LakeSnapshot;
use allot_lake::txns::{AppOffset, recorded_txns};
use allot_lake::{CompactOptions, LakeError, compact};
use allot_schemas::config::MetricCatalog;
use allot_schemas::layout::{LakeLocation, LakeTable, TenantDay};
use allot_schemas::table_schema::usage_events_schema;
use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

/// 2026-09-01T00:00:00Z in microseconds.
const SEPT_1: i64 = 1_788_220_800_000_000;
const HOUR: i64 = 3_600_000_000;

struct Lake {
    _dir: tempfile::TempDir,
    location: LakeLocation,
}

impl Lake {
    fn new() -> Lake {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = LakeLocation::parse(dir.path().to_str().expect("utf-8")).expect("lake");
        Lake {
            _dir: dir,
            location,
        }
    }

    async fn usage(&self) -> LogAppender {
        LogAppender::open(&self.location, LakeTable::UsageEvents)
            .await
            .expect("open usage_events")
    }

    /// The `(tenant, event id)` of every active row of `usage_events`, sorted,
    /// read back through a snapshot.
    async fn rows(&self) -> Vec<(String, String)> {
        let snapshot = LakeSnapshot::load(&self.location).await.expect("snapshot");
        let mut rows = Vec::new();
        for file in &snapshot.usage.files {
            let path = deltalake::Path::from(file.path.as_str());
            let builder = allot_lake::data_file::open_lake_parquet(&snapshot.usage.store, &path)
                .await
                .expect("open file");
            for batch in builder.build().expect("reader") {
                let batch = batch.expect("batch");
                let ids = string_column(&batch, "event_id");
                let tenant = file.tenant_id.clone().expect("usage file has a tenant");
                rows.extend(ids.into_iter().map(|id| (tenant.clone(), id)));
            }
        }
        rows.sort();
        rows
    }

    async fn file_count(&self) -> usize {
        LakeSnapshot::load(&self.location)
            .await
            .expect("snapshot")
            .usage
            .files
            .len()
    }
}

fn string_column(batch: &RecordBatch, name: &str) -> Vec<String> {
    let column = batch.column_by_name(name).expect("column");
    let strings = column
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("strings");
    strings
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect()
}

/// A `usage_events` batch of one tenant-day: an event per `(id, hour)`, each
/// one unit of `compute_seconds`, ingested at `ingested_at`.
fn events(tenant: &str, events: &[(&str, i64)], ingested_at: i64) -> RecordBatch {
    let schema = usage_events_schema();
    let n = events.len();
    let strings = |value: &str| Arc::new(StringArray::from(vec![value; n])) as ArrayRef;
    let micros = |values: Vec<i64>| {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC")) as ArrayRef
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "event_id" => {
                Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.0))) as ArrayRef
            }
            "ts" => micros(events.iter().map(|e| SEPT_1 + e.1 * HOUR).collect()),
            "metric" => strings("compute_seconds"),
            "value" => Arc::new(
                Decimal128Array::from(vec![1_000_000_000_i128; n])
                    .with_data_type(field.data_type().clone()),
            ),
            "schema_version" => Arc::new(Int32Array::from(vec![1; n])),
            "source" => strings("file:test.jsonl:1"),
            "ingested_at" => micros(vec![ingested_at; n]),
            "tenant_id" => strings(tenant),
            "day" => Arc::new(Date32Array::from(vec![day_number(); n])),
            _ => new_null_array(field.data_type(), n),
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("a usage_events batch")
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 9, 1).expect("date")
}

fn day_number() -> i32 {
    allot_schemas::time::days_since_epoch(day())
}

/// Writes `batch` as a file of its tenant-day and commits it with `offsets`,
/// fenced on `expected`.
async fn append(
    appender: &mut LogAppender,
    tenant: &str,
    batch: RecordBatch,
    offsets: Vec<AppOffset>,
    expected: &[(String, Option<i64>)],
) -> Result<u64, LakeError> {
    let mut writer = appender.file_writer()?;
    writer
        .write_tenant_day(batch, &TenantDay::new(tenant, day()))
        .await?;
    let files = writer.flush().await?;
    assert_eq!(files.len(), 1, "one tenant-day, one file");
    appender.append(files, offsets, expected).await
}

const APP: &str = "group/usage/0";

#[tokio::test]
async fn a_fenced_append_commits_nothing_and_the_winner_stays() {
    let lake = Lake::new();
    let mut first = lake.usage().await;
    let mut second = lake.usage().await;
    let from_start = [(APP.to_string(), None)];

    append(
        &mut first,
        "acme",
        events("acme", &[("a1", 1), ("a2", 2)], SEPT_1),
        vec![AppOffset::new(APP, 10)],
        &from_start,
    )
    .await
    .expect("the first writer commits");

    // The second writer read the same offsets (none) and lost the race.
    let fenced = append(
        &mut second,
        "acme",
        events("acme", &[("b1", 1)], SEPT_1),
        vec![AppOffset::new(APP, 12)],
        &from_start,
    )
    .await;
    assert!(
        matches!(fenced, Err(LakeError::Fenced(_))),
        "expected a fence, got {fenced:?}"
    );
    assert_eq!(
        lake.rows().await,
        [("acme".into(), "a1".into()), ("acme".into(), "a2".into())],
        "the fenced batch's file is never referenced"
    );
    let version = first.recorded_offsets(&[APP.into()]).await.unwrap();
    assert_eq!(version, [Some(10)]);

    // Resuming from what the lake records, it commits.
    append(
        &mut second,
        "acme",
        events("acme", &[("a3", 3)], SEPT_1),
        vec![AppOffset::new(APP, 11)],
        &[(APP.into(), Some(10))],
    )
    .await
    .expect("a writer resuming from the recorded offset commits");
    assert_eq!(lake.rows().await.len(), 3);
}

#[tokio::test]
async fn another_writers_commit_in_between_is_no_conflict() {
    let lake = Lake::new();
    let mut collector = lake.usage().await;
    let mut other = lake.usage().await;
    append(
        &mut other,
        "bravo",
        events("bravo", &[("x", 1)], SEPT_1),
        vec![AppOffset::new("group/usage/1", 5)],
        &[("group/usage/1".into(), None)],
    )
    .await
    .unwrap();
    // `collector` has not read that commit: its append takes the next version.
    let version = append(
        &mut collector,
        "acme",
        events("acme", &[("y", 1)], SEPT_1),
        vec![AppOffset::new(APP, 1)],
        &[(APP.into(), None)],
    )
    .await
    .expect("a blind append is not fenced by another app id");
    let txns = recorded_txns(&lake.location, LakeTable::UsageEvents, version)
        .await
        .unwrap();
    assert_eq!(txns.get(APP), Some(&1));
    assert_eq!(txns.get("group/usage/1"), Some(&5));
}

#[tokio::test]
async fn compaction_merges_a_tenant_days_files_and_keeps_the_offsets() {
    let lake = Lake::new();
    let mut writer = lake.usage().await;
    let mut offset = None;
    // Four flushes of one tenant-day; "e2" is sent again an hour of ingest
    // later (a producer's retry), which the dedup window drops.
    let flushes: [&[(&str, i64)]; 4] = [
        &[("e1", 1), ("e2", 2)],
        &[("e3", 3)],
        &[("e2", 2), ("e4", 4)],
        &[("e5", 5)],
    ];
    for (i, rows) in flushes.into_iter().enumerate() {
        let next = i as i64 * 10 + 9;
        append(
            &mut writer,
            "acme",
            events("acme", rows, SEPT_1 + i as i64 * HOUR),
            vec![AppOffset::new(APP, next)],
            &[(APP.into(), offset)],
        )
        .await
        .unwrap();
        offset = Some(next);
    }
    assert_eq!(lake.file_count().await, 4);

    let summary = compact(
        CompactOptions {
            lake: lake.location.clone(),
            target_file_bytes: 64 << 20,
            min_files: 2,
            catalog: MetricCatalog::default(),
            dedup_window: DedupWindow::default(),
        },
        CancellationToken::new(),
    )
    .await
    .expect("compaction");
    assert_eq!(summary.partitions, 1);
    assert_eq!(summary.files_removed, 4);
    assert_eq!(summary.files_added, 1);
    assert_eq!(summary.duplicates_removed, 1);
    assert_eq!(lake.file_count().await, 1);
    let ids: Vec<String> = lake.rows().await.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5"]);

    // The writer opened before the compaction still appends from its offset.
    append(
        &mut writer,
        "acme",
        events("acme", &[("e6", 6)], SEPT_1 + 5 * HOUR),
        vec![AppOffset::new(APP, 49)],
        &[(APP.into(), offset)],
    )
    .await
    .expect("compaction does not fence a collector");
    assert_eq!(
        writer.recorded_offsets(&[APP.into()]).await.unwrap(),
        [Some(49)]
    );
}
