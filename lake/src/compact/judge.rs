//! The duplicate judgement: the rows of `usage_events` a copy ingested
//! earlier beats, in every partition whose rollups are not current.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use allot_schemas::layout::TenantDay;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMicrosecondType;

use super::CompactOptions;
use crate::error::LakeError;
use crate::session::{LakeSession, Scope, SessionLimits};
use crate::snapshot::{LakeSnapshot, partition_date};

/// A row of `usage_events` within its partition: event id, `ingested_at`, source.
pub(super) type RowKey = (String, i64, String);

/// The rows the dedup window rejects, per partition.
pub(super) type Beaten = BTreeMap<TenantDay, HashSet<RowKey>>;

/// What a run's judgement of the table found.
#[derive(Default)]
pub(super) struct Judged {
    /// The rows that do not count, in the partitions judged.
    pub(super) beaten: Beaten,
    /// The table version judged (`None`: no table yet).
    pub(super) version: Option<u64>,
    /// The partitions not judged: their rollups were current.
    pub(super) current: BTreeSet<TenantDay>,
}

/// The rows of the partitions whose rollups are not current (new files in them
/// or their neighbours since the last refresh) that the dedup window rejects, as
/// the query engine judges them for every report. Partitions with current
/// rollups were judged, and their rejected rows removed, by an earlier run.
pub(super) async fn beaten_rows(options: &CompactOptions) -> Result<Judged, LakeError> {
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
    session.attach_rollups(&snapshot.hourly, &options.catalog)?;
    let current = session.current_rollups().await?;
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

/// Keeps, for each event id not in `kept_ids`, the row with the earliest
/// `ingested_at` (then the smallest `source`) among those not in `rejected`; returns
/// the rows kept and how many were dropped. Copies on one day are always within
/// the dedup window (at least a day), so this is the window's rule within a
/// partition.
pub(super) fn first_ingested_per_event(
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
