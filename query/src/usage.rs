//! Aggregating the lake into the inputs of the reports.
//!
//! Each function runs one DataFusion query over the deduplicated `usage_events`
//! (or `rejected_events`) of a [`LakeSession`] and returns exact decimals: raw sums
//! of counters per UTC day, gauge samples per series, usage per time bucket,
//! recent activity. Time ranges are half-open `[from, to)` in UTC microseconds and
//! are also turned into `day` bounds, so only the partitions of the range are read.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::BigInt;
use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::date_bin;
use datafusion::functions_aggregate::expr_fn::{count, max, sum};
use datafusion::logical_expr::Expr;
use datafusion::prelude::{DataFrame, col, lit};

use allot_schemas::decimal::VALUE_SCALE;
use allot_schemas::table_schema::VALUE_PRECISION;

use crate::error::QueryError;
use crate::lake::days_since_epoch;
use crate::noisy::BucketUsage;
use crate::period::day_of_micros;
use crate::pricing::{CounterDay, GaugeSample, GaugeSeries};
use crate::session::LakeSession;

/// Which events of the session an aggregation reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only events with this region.
    pub region: Option<String>,
    /// Only events with this service.
    pub service: Option<String>,
}

/// An instant as a `Timestamp(µs, UTC)` literal.
fn ts_lit(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

fn day_lit(day: NaiveDate) -> Expr {
    lit(ScalarValue::Date32(Some(days_since_epoch(day))))
}

/// `from ≤ ts < to`, plus the matching `day` bounds for partition pruning.
fn time_range(from: i64, to: i64) -> Expr {
    let first_day = day_of_micros(from).unwrap_or(NaiveDate::MIN);
    let last_day = day_of_micros(to.saturating_sub(1)).unwrap_or(NaiveDate::MAX);
    col("day")
        .gt_eq(day_lit(first_day))
        .and(col("day").lt_eq(day_lit(last_day)))
        .and(col("ts").gt_eq(ts_lit(from)))
        .and(col("ts").lt(ts_lit(to)))
}

fn metric_in(metrics: &[String]) -> Expr {
    col("metric").in_list(metrics.iter().map(|m| lit(m.as_str())).collect(), false)
}

async fn filtered_usage(
    session: &LakeSession,
    filter: &UsageFilter,
    from: i64,
    to: i64,
) -> Result<DataFrame, QueryError> {
    let mut predicate = time_range(from, to);
    if let Some(tenant) = &filter.tenant {
        predicate = predicate.and(col("tenant_id").eq(lit(tenant.as_str())));
    }
    if let Some(region) = &filter.region {
        predicate = predicate.and(col("region").eq(lit(region.as_str())));
    }
    if let Some(service) = &filter.service {
        predicate = predicate.and(col("service").eq(lit(service.as_str())));
    }
    session
        .usage_events()
        .await?
        .filter(predicate)
        .map_err(QueryError::engine)
}

async fn collect(frame: DataFrame) -> Result<Vec<RecordBatch>, QueryError> {
    frame.collect().await.map_err(QueryError::engine)
}

/// Reads column `i` of `batch` as Arrow strings, whatever string type it has.
fn strings(batch: &RecordBatch, i: usize) -> Result<ArrayRef, QueryError> {
    arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(QueryError::engine)
}

fn decimals(batch: &RecordBatch, i: usize) -> Result<ArrayRef, QueryError> {
    arrow::compute::cast(
        batch.column(i),
        &DataType::Decimal128(VALUE_PRECISION, VALUE_SCALE as i8),
    )
    .map_err(QueryError::engine)
}

fn timestamps(batch: &RecordBatch, i: usize) -> Result<ArrayRef, QueryError> {
    arrow::compute::cast(
        batch.column(i),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(QueryError::engine)
}

fn decimal_at(array: &ArrayRef, row: usize) -> BigDecimal {
    let raw = array.as_primitive::<Decimal128Type>().value(row);
    BigDecimal::new(BigInt::from(raw), i64::from(VALUE_SCALE))
}

fn string_at(array: &ArrayRef, row: usize) -> Option<String> {
    let strings = array.as_string::<i32>();
    strings
        .is_valid(row)
        .then(|| strings.value(row).to_string())
}

/// Raw sums of counter `metrics` per (tenant, metric, UTC day) over `[from, to)`.
pub async fn counter_days(
    session: &LakeSession,
    filter: &UsageFilter,
    metrics: &[String],
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Vec<CounterDay>>, QueryError> {
    let mut by_tenant: BTreeMap<String, Vec<CounterDay>> = BTreeMap::new();
    if metrics.is_empty() {
        return Ok(by_tenant);
    }
    let frame = filtered_usage(session, filter, from, to)
        .await?
        .filter(metric_in(metrics))
        .and_then(|f| {
            f.aggregate(
                vec![col("tenant_id"), col("metric"), col("day")],
                vec![sum(col("value")).alias("raw_sum")],
            )
        })
        .map_err(QueryError::engine)?;
    for batch in collect(frame).await? {
        let (tenants, names, sums) = (
            strings(&batch, 0)?,
            strings(&batch, 1)?,
            decimals(&batch, 3)?,
        );
        let days = batch.column(2).as_primitive::<Date32Type>().clone();
        for row in 0..batch.num_rows() {
            let (Some(tenant), Some(metric)) = (string_at(&tenants, row), string_at(&names, row))
            else {
                continue;
            };
            let day = NaiveDate::from_num_days_from_ce_opt(days.value(row) + EPOCH_DAYS_FROM_CE)
                .ok_or_else(|| QueryError::Engine("a day out of range".to_string()))?;
            by_tenant.entry(tenant).or_default().push(CounterDay {
                metric,
                day,
                raw_sum: decimal_at(&sums, row),
            });
        }
    }
    Ok(by_tenant)
}

/// Days from 0001-01-01 (CE day 1) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Samples of gauge `metrics` per tenant and series, taken in `[from, to)`.
pub async fn gauge_series(
    session: &LakeSession,
    filter: &UsageFilter,
    metrics: &[String],
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Vec<GaugeSeries>>, QueryError> {
    // Series keyed by "tenant\0metric\0resource" in one reused buffer, so a row
    // allocates nothing unless it starts a new series.
    struct Series {
        tenant: String,
        metric: String,
        resource: Option<String>,
        samples: Vec<GaugeSample>,
    }
    let mut series: HashMap<String, Series> = HashMap::new();
    if !metrics.is_empty() {
        let frame = filtered_usage(session, filter, from, to)
            .await?
            .filter(metric_in(metrics))
            .and_then(|f| f.select_columns(&["tenant_id", "metric", "resource", "ts", "value"]))
            .map_err(QueryError::engine)?;
        let mut key = String::new();
        for batch in collect(frame).await? {
            let (tenants, names, resources) = (
                strings(&batch, 0)?,
                strings(&batch, 1)?,
                strings(&batch, 2)?,
            );
            let (tenants, names, resources) = (
                tenants.as_string::<i32>(),
                names.as_string::<i32>(),
                resources.as_string::<i32>(),
            );
            let (times, values) = (timestamps(&batch, 3)?, decimals(&batch, 4)?);
            let times = times.as_primitive::<TimestampMicrosecondType>();
            for row in 0..batch.num_rows() {
                if tenants.is_null(row) || names.is_null(row) {
                    continue;
                }
                let resource = resources.is_valid(row).then(|| resources.value(row));
                key.clear();
                for part in [
                    tenants.value(row),
                    names.value(row),
                    resource.unwrap_or("\u{1}"),
                ] {
                    key.push_str(part);
                    key.push('\0');
                }
                let sample = GaugeSample {
                    ts_micros: times.value(row),
                    value: decimal_at(&values, row),
                };
                match series.get_mut(key.as_str()) {
                    Some(found) => found.samples.push(sample),
                    None => {
                        series.insert(
                            key.clone(),
                            Series {
                                tenant: tenants.value(row).to_string(),
                                metric: names.value(row).to_string(),
                                resource: resource.map(str::to_string),
                                samples: vec![sample],
                            },
                        );
                    }
                }
            }
        }
    }
    let mut by_tenant: BTreeMap<String, Vec<GaugeSeries>> = BTreeMap::new();
    for found in series.into_values() {
        by_tenant
            .entry(found.tenant)
            .or_default()
            .push(GaugeSeries {
                metric: found.metric,
                resource: found.resource,
                samples: found.samples,
            });
    }
    for list in by_tenant.values_mut() {
        list.sort_by(|a, b| (&a.metric, &a.resource).cmp(&(&b.metric, &b.resource)));
    }
    Ok(by_tenant)
}

/// Usage of counter `metrics` per metric, tenant and bucket of `bucket_micros`, on
/// the grid that starts at `from`, over `[from, to)`; one scan for all metrics.
pub async fn bucket_usage(
    session: &LakeSession,
    filter: &UsageFilter,
    metrics: &[String],
    from: i64,
    to: i64,
    bucket_micros: i64,
) -> Result<BTreeMap<String, Vec<BucketUsage>>, QueryError> {
    let mut by_metric: BTreeMap<String, Vec<BucketUsage>> = BTreeMap::new();
    if metrics.is_empty() {
        return Ok(by_metric);
    }
    let stride = lit(ScalarValue::new_interval_mdn(
        0,
        0,
        bucket_micros.saturating_mul(1_000),
    ));
    let frame = filtered_usage(session, filter, from, to)
        .await?
        .filter(metric_in(metrics))
        .and_then(|f| {
            f.aggregate(
                vec![
                    col("metric"),
                    col("tenant_id"),
                    date_bin(stride, col("ts"), ts_lit(from)).alias("bucket_start"),
                ],
                vec![sum(col("value")).alias("usage")],
            )
        })
        .map_err(QueryError::engine)?;
    for batch in collect(frame).await? {
        let (names, tenants, starts, sums) = (
            strings(&batch, 0)?,
            strings(&batch, 1)?,
            timestamps(&batch, 2)?,
            decimals(&batch, 3)?,
        );
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let (Some(metric), Some(tenant_id)) =
                (string_at(&names, row), string_at(&tenants, row))
            else {
                continue;
            };
            by_metric.entry(metric).or_default().push(BucketUsage {
                tenant_id,
                bucket_start: starts.value(row),
                usage: decimal_at(&sums, row),
            });
        }
    }
    for rows in by_metric.values_mut() {
        rows.sort_by(|a, b| (&a.tenant_id, a.bucket_start).cmp(&(&b.tenant_id, b.bucket_start)));
    }
    Ok(by_metric)
}

/// A tenant's accepted events in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// How many.
    pub events: u64,
    /// The latest event time.
    pub last_event_micros: i64,
}

/// Accepted events per tenant in `[from, to)`: count and latest `ts`.
pub async fn activity(
    session: &LakeSession,
    filter: &UsageFilter,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Activity>, QueryError> {
    let frame = filtered_usage(session, filter, from, to)
        .await?
        .aggregate(
            vec![col("tenant_id")],
            vec![count(lit(1)).alias("events"), max(col("ts")).alias("last")],
        )
        .map_err(QueryError::engine)?;
    let mut by_tenant = BTreeMap::new();
    for batch in collect(frame).await? {
        let last = timestamps(&batch, 2)?;
        let last = last.as_primitive::<TimestampMicrosecondType>();
        for (row, tenant, events) in tenant_counts(&batch)? {
            let last_event_micros = last.value(row);
            by_tenant.insert(
                tenant,
                Activity {
                    events,
                    last_event_micros,
                },
            );
        }
    }
    Ok(by_tenant)
}

/// The rows of a `tenant_id, count, …` aggregate: (row, tenant, count), skipping
/// rows without a tenant.
fn tenant_counts(batch: &RecordBatch) -> Result<Vec<(usize, String, u64)>, QueryError> {
    let tenants = strings(batch, 0)?;
    let counts =
        arrow::compute::cast(batch.column(1), &DataType::Int64).map_err(QueryError::engine)?;
    let counts = counts.as_primitive::<Int64Type>();
    Ok((0..batch.num_rows())
        .filter_map(|row| {
            string_at(&tenants, row)
                .map(|tenant| (row, tenant, u64::try_from(counts.value(row)).unwrap_or(0)))
        })
        .collect())
}

/// Rejected events per tenant (those whose tenant could be read) rejected in
/// `[from, to)`. Needs an all-tenant session.
pub async fn rejected_counts(
    session: &LakeSession,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, u64>, QueryError> {
    let first_day = day_of_micros(from).unwrap_or(NaiveDate::MIN);
    let last_day = day_of_micros(to.saturating_sub(1)).unwrap_or(NaiveDate::MAX);
    let frame = session
        .rejected_events()
        .await?
        .filter(
            col("day")
                .gt_eq(day_lit(first_day))
                .and(col("day").lt_eq(day_lit(last_day)))
                .and(col("rejected_at").gt_eq(ts_lit(from)))
                .and(col("rejected_at").lt(ts_lit(to)))
                .and(col("tenant_id").is_not_null()),
        )
        .and_then(|f| f.aggregate(vec![col("tenant_id")], vec![count(lit(1)).alias("n")]))
        .map_err(QueryError::engine)?;
    let mut by_tenant = BTreeMap::new();
    for batch in collect(frame).await? {
        for (_, tenant, count) in tenant_counts(&batch)? {
            by_tenant.insert(tenant, count);
        }
    }
    Ok(by_tenant)
}

/// The start of the grid bucket of width `bucket` (aligned to the Unix epoch)
/// at or after `micros`.
pub fn ceil_to_grid(micros: i64, bucket: i64) -> i64 {
    let floor = micros.div_euclid(bucket) * bucket;
    if floor == micros {
        floor
    } else {
        floor + bucket
    }
}
