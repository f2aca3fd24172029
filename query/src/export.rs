//! A tenant's own data as files (`allot tenant export`,
//! docs/reference.md#compaction-and-offboarding): its distinct
//! events as JSON Lines in the v1 format, with exact values (the copies the dedup
//! window counts, so the tenant can recompute a closed month's digests from
//! them), and its rejected events.
//!
//! Both come as [`JsonlChunks`]: the JSON Lines of one batch at a time, as the
//! engine produces them, so an export holds one batch's text in memory however
//! many events the tenant has; the caller writes each chunk where it goes.

use std::fmt::Write as _;

use allot_lake::session::{LakeSession, Scope, SessionLimits};
use allot_lake::snapshot::LakeSnapshot;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, TimeUnit, TimestampMicrosecondType};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, col, lit};
use futures::StreamExt;

use crate::error::QueryError;

/// The JSON Lines of an export, one batch of rows at a time.
pub struct JsonlChunks {
    /// The session the stream reads through, kept for as long as it runs.
    _session: LakeSession,
    stream: SendableRecordBatchStream,
    write: fn(&RecordBatch, &mut String) -> Result<usize, QueryError>,
}

impl JsonlChunks {
    async fn new(
        session: LakeSession,
        frame: DataFrame,
        write: fn(&RecordBatch, &mut String) -> Result<usize, QueryError>,
    ) -> Result<JsonlChunks, QueryError> {
        let stream = frame.execute_stream().await.map_err(QueryError::from)?;
        Ok(JsonlChunks {
            _session: session,
            stream,
            write,
        })
    }

    /// The lines of the next batch and how many rows they are, or `None` once
    /// every row was given.
    pub async fn next(&mut self) -> Option<Result<(String, usize), QueryError>> {
        let batch = self.stream.next().await?;
        Some(batch.map_err(QueryError::from).and_then(|batch| {
            let mut lines = String::new();
            let rows = (self.write)(&batch, &mut lines)?;
            Ok((lines, rows))
        }))
    }
}

/// The tenant's counted events, ordered by `ts` then `event_id`, as JSON Lines.
pub async fn events_jsonl(
    snapshot: &LakeSnapshot,
    limits: &SessionLimits,
    tenant: &str,
) -> Result<JsonlChunks, QueryError> {
    let own = LakeSession::new(snapshot, &Scope::Tenant(tenant.to_string()), limits)?;
    let frame = own
        .usage_events()
        .await?
        .sort(vec![
            col("ts").sort(true, false),
            col("event_id").sort(true, false),
        ])
        .map_err(QueryError::from)?;
    JsonlChunks::new(own, frame, write_events).await
}

/// The tenant's rejected events, ordered by `source`, as JSON Lines.
pub async fn rejections_jsonl(
    snapshot: &LakeSnapshot,
    limits: &SessionLimits,
    tenant: &str,
) -> Result<JsonlChunks, QueryError> {
    let all = LakeSession::new(snapshot, &Scope::AllTenants, limits)?;
    let frame = all
        .rejected_events()
        .await?
        .filter(col("tenant_id").eq(lit(tenant)))
        .and_then(|f| f.sort(vec![col("source").sort(true, false)]))
        .map_err(QueryError::from)?;
    JsonlChunks::new(all, frame, write_rejections).await
}

/// A JSON string literal.
fn json_text(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The exact decimal text of a `Decimal128(38, 9)` value, without trailing zeros
/// (`3600`, `0.000000003`).
fn decimal_text(value: i128) -> String {
    bigdecimal::BigDecimal::new(value.into(), 9)
        .normalized()
        .to_plain_string()
}

/// A microsecond timestamp as RFC 3339 in UTC with microseconds.
fn ts_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// A column of `batch` cast to `to`, or an error naming it.
fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, QueryError> {
    let found = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::Stored(format!("the export lacks column {name}")))?;
    arrow::compute::cast(found, to).map_err(|e| QueryError::Stored(format!("column {name}: {e}")))
}

/// Appends the rows of a `usage_events` batch to `out` as v1 JSON Lines.
fn write_events(batch: &RecordBatch, out: &mut String) -> Result<usize, QueryError> {
    let utf8 = DataType::Utf8;
    let ids = column(batch, "event_id", &utf8)?;
    let tenants = column(batch, "tenant_id", &utf8)?;
    let metrics = column(batch, "metric", &utf8)?;
    let times = column(
        batch,
        "ts",
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let values = column(batch, "value", &DataType::Decimal128(38, 9))?;
    let optional: Vec<(&str, ArrayRef)> = ["resource", "region", "service"]
        .into_iter()
        .map(|name| Ok((name, column(batch, name, &utf8)?)))
        .collect::<Result<_, QueryError>>()?;
    let labels = batch
        .column_by_name("labels")
        .and_then(|l| l.as_map_opt().cloned());
    let (ids, tenants, metrics) = (
        ids.as_string::<i32>(),
        tenants.as_string::<i32>(),
        metrics.as_string::<i32>(),
    );
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let values = values.as_primitive::<Decimal128Type>();
    for row in 0..batch.num_rows() {
        let _ = write!(
            out,
            "{{\"event_id\":{},\"tenant_id\":{},\"ts\":\"{}\",\"metric\":{},\"value\":{}",
            json_text(ids.value(row)),
            json_text(tenants.value(row)),
            ts_text(times.value(row)),
            json_text(metrics.value(row)),
            decimal_text(values.value(row)),
        );
        for (name, array) in &optional {
            let array = array.as_string::<i32>();
            if array.is_valid(row) {
                let _ = write!(out, ",\"{name}\":{}", json_text(array.value(row)));
            }
        }
        if let Some(map) = &labels
            && map.is_valid(row)
        {
            let entries = map.value(row);
            let keys = arrow::compute::cast(entries.column(0), &utf8).map_err(QueryError::from)?;
            let vals = arrow::compute::cast(entries.column(1), &utf8).map_err(QueryError::from)?;
            let object: serde_json::Map<String, serde_json::Value> = (0..keys.len())
                .map(|i| {
                    let key = keys.as_string::<i32>().value(i).to_string();
                    let vals = vals.as_string::<i32>();
                    let value = vals.is_valid(i).then(|| vals.value(i).to_string());
                    (
                        key,
                        value.map_or(serde_json::Value::Null, serde_json::Value::String),
                    )
                })
                .collect();
            let _ = write!(out, ",\"labels\":{}", serde_json::Value::Object(object));
        }
        out.push_str("}\n");
    }
    Ok(batch.num_rows())
}

/// Appends the rows of a `rejected_events` batch to `out` as JSON Lines.
fn write_rejections(batch: &RecordBatch, out: &mut String) -> Result<usize, QueryError> {
    let utf8 = DataType::Utf8;
    let fields = [
        "tenant_id",
        "reason",
        "message",
        "raw",
        "source",
        "rejected_at",
    ];
    let columns: Vec<ArrayRef> = fields
        .iter()
        .map(|name| column(batch, name, &utf8))
        .collect::<Result<_, _>>()?;
    for row in 0..batch.num_rows() {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .zip(&columns)
            .map(|(name, array)| {
                let array = array.as_string::<i32>();
                let value = array.is_valid(row).then(|| array.value(row).to_string());
                (
                    name.to_string(),
                    value.map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        out.push_str(&serde_json::Value::Object(object).to_string());
        out.push('\n');
    }
    Ok(batch.num_rows())
}
