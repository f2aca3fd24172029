//! Computing the rollup rows of tenant-day partitions from the deduplicated
//! `usage_events` of a session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use allot_schemas::config::{MetricCatalog, MetricKind};
use allot_schemas::decimal::VALUE_SCALE;
use allot_schemas::gauge::{GaugeSample, weight_before_last};
use allot_schemas::layout::TenantDay;
use allot_schemas::table_schema::{VALUE_PRECISION, distinct_value_field, usage_hourly_schema};
use allot_schemas::time::{MICROS_PER_HOUR, day_start_micros, days_since_epoch};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Int64Array, ListArray,
    ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::BigInt;
use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::date_bin;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::prelude::{col, lit};

use futures::StreamExt;

use super::basis::gauge_hold_micros;
use crate::classes::{ClassFold, ScaledSum};
use crate::columns::{string_column, typed, utc_micros, value_type};
use crate::error::LakeError;
use crate::meters::{MeterFold, meter_event_columns, meter_metrics};
use crate::session::LakeSession;
use crate::snapshot::partition_date;

/// The rollup rows of the partitions of `bases` (read from the deduplicated
/// `usage_events` of `session`), stamped with their bases; gauge rows for the
/// gauges of `catalog`. A partition whose weighted gauge sum does not fit the
/// table's decimal gets no rows at all, so that reports keep reading it raw.
pub async fn rollup_rows(
    session: &LakeSession,
    catalog: &MetricCatalog,
    bases: &BTreeMap<TenantDay, i64>,
) -> Result<RecordBatch, LakeError> {
    let mut rows = RollupRows::default();
    let epoch = lit(ScalarValue::TimestampMicrosecond(
        Some(0),
        Some("UTC".into()),
    ));
    let hour = lit(ScalarValue::new_interval_mdn(0, 0, MICROS_PER_HOUR * 1_000));
    let events = || session.usage_events_where(|t, d| bases.contains_key(&TenantDay::new(t, d)));
    let hourly = events()?
        .aggregate(
            vec![
                col("tenant_id"),
                col("day"),
                col("metric"),
                date_bin(hour, col("ts"), epoch).alias("start"),
            ],
            vec![
                count(lit(1)).alias("events"),
                sum(col("value")).alias("value_sum"),
                min(col("ts")).alias("first_ts"),
                max(col("ts")).alias("last_ts"),
            ],
        )
        .map_err(LakeError::from)?;
    for batch in hourly.collect().await.map_err(LakeError::from)? {
        let tenants = string_column(&batch, 0)?;
        let days = typed(&batch, 1, &DataType::Date32)?;
        let days = days.as_primitive::<Date32Type>();
        let metrics = string_column(&batch, 2)?;
        let starts = typed(&batch, 3, &utc_micros())?;
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        let events = typed(&batch, 4, &DataType::Int64)?;
        let events = events.as_primitive::<Int64Type>();
        let sums = typed(&batch, 5, &value_type())?;
        let sums = sums.as_primitive::<Decimal128Type>();
        let firsts = typed(&batch, 6, &utc_micros())?;
        let firsts = firsts.as_primitive::<TimestampMicrosecondType>();
        let lasts = typed(&batch, 7, &utc_micros())?;
        let lasts = lasts.as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let day = partition_date(days.value(row))?;
            rows.push(RollupRow {
                tenant: tenants.value(row).to_string(),
                day,
                metric: metrics.value(row).to_string(),
                gauge: false,
                start: starts.value(row),
                events: events.value(row),
                value_sum: sums.value(row),
                first_ts: firsts.value(row),
                last_ts: lasts.value(row),
                resource: None,
                last_value: None,
                meter: None,
                dimension_values: None,
            });
        }
    }

    // The meters' figures of each hour, filled into the hour's row.
    let meters = meter_metrics(catalog);
    let mut too_large: BTreeSet<TenantDay> = BTreeSet::new();
    if !meters.is_empty() {
        let mut fold = MeterFold::new(catalog, 0, MICROS_PER_HOUR).unbounded();
        let frame = meter_event_columns(events()?, catalog, &meters)?;
        let mut stream = frame.execute_stream().await.map_err(LakeError::from)?;
        while let Some(batch) = stream.next().await {
            fold.add_events(&batch.map_err(LakeError::from)?)?;
        }
        let mut hours = fold.summaries;
        for row in &mut rows.rows {
            let Some(summary) = hours.remove(&(row.tenant.clone(), row.metric.clone(), row.start))
            else {
                continue;
            };
            let Some(spec) = catalog.get(&row.metric) else {
                continue;
            };
            let bound = spec.distinct.as_ref().map_or(u64::MAX, |d| d.max_distinct);
            let last_value = summary
                .last
                .as_ref()
                .map(|last| scaled_decimal(&last.value));
            let value_max = summary.max.as_ref().map(scaled_decimal);
            if summary.check_distinct(bound).is_err()
                || last_value == Some(None)
                || value_max == Some(None)
            {
                // Reports read such a partition raw (and refuse the month).
                too_large.insert(TenantDay::new(row.tenant.clone(), row.day));
                continue;
            }
            row.last_value = last_value.flatten();
            row.meter = Some(HourMeter {
                value_max: value_max.flatten(),
                last_event_id: summary.last.map(|last| last.event_id),
                distinct: (spec.kind == MetricKind::UniqueCount)
                    .then(|| summary.distinct.into_iter().map(Some).collect()),
            });
        }
    }

    // The daily sums of the dimensional counters per match class.
    let classes = catalog.dimensional_counters();
    if !classes.is_empty() {
        let fold = ClassFold::new(classes).sum_events(events()?).await?;
        for ((tenant, day, metric), sum) in fold.into_sums() {
            let day = partition_date(day)?;
            let ScaledSum::Small(value_sum) = sum.value_sum else {
                too_large.insert(TenantDay::new(tenant, day));
                continue;
            };
            if scaled_decimal(&sum.value_sum.to_decimal()).is_none() {
                too_large.insert(TenantDay::new(tenant, day));
                continue;
            }
            rows.push(RollupRow {
                start: day_start_micros(day),
                events: sum.events,
                value_sum,
                first_ts: sum.first_ts,
                last_ts: sum.last_ts,
                resource: None,
                last_value: None,
                meter: None,
                dimension_values: Some(sum.values),
                tenant,
                day,
                metric,
                gauge: false,
            });
        }
    }

    let gauges: HashMap<String, i64> = catalog
        .iter()
        .filter(|(_, spec)| spec.kind == MetricKind::Gauge)
        .map(|(name, spec)| (name.to_string(), gauge_hold_micros(spec.hold)))
        .collect();
    if !gauges.is_empty() {
        let names: Vec<_> = gauges.keys().map(|name| lit(name.as_str())).collect();
        let samples = events()?
            .filter(col("metric").in_list(names, false))
            .and_then(|f| {
                f.select_columns(&["tenant_id", "day", "metric", "resource", "ts", "value"])
            })
            .map_err(LakeError::from)?;
        type SeriesKey = (String, i32, String, Option<String>);
        let mut series: HashMap<SeriesKey, Vec<GaugeSample>> = HashMap::new();
        for batch in samples.collect().await.map_err(LakeError::from)? {
            let tenants = string_column(&batch, 0)?;
            let days = typed(&batch, 1, &DataType::Date32)?;
            let days = days.as_primitive::<Date32Type>();
            let metrics = string_column(&batch, 2)?;
            let resources = string_column(&batch, 3)?;
            let times = typed(&batch, 4, &utc_micros())?;
            let times = times.as_primitive::<TimestampMicrosecondType>();
            let values = typed(&batch, 5, &value_type())?;
            let values = values.as_primitive::<Decimal128Type>();
            for row in 0..batch.num_rows() {
                let key = (
                    tenants.value(row).to_string(),
                    days.value(row),
                    metrics.value(row).to_string(),
                    resources
                        .is_valid(row)
                        .then(|| resources.value(row).to_string()),
                );
                series.entry(key).or_default().push(GaugeSample {
                    ts_micros: times.value(row),
                    value: BigDecimal::new(BigInt::from(values.value(row)), VALUE_SCALE.into()),
                });
            }
        }
        for ((tenant, day, metric, resource), mut samples) in series {
            samples.sort();
            let day = partition_date(day)?;
            let weighted = weight_before_last(&samples, gauges[metric.as_str()]);
            let (first, last) = (&samples[0], &samples[samples.len() - 1]);
            let (Some(value_sum), Some(last_value)) =
                (scaled_decimal(&weighted), scaled_decimal(&last.value))
            else {
                too_large.insert(TenantDay::new(tenant, day));
                continue;
            };
            rows.push(RollupRow {
                start: day_start_micros(day),
                events: samples.len() as i64,
                value_sum,
                first_ts: first.ts_micros,
                last_ts: last.ts_micros,
                resource,
                last_value: Some(last_value),
                meter: None,
                dimension_values: None,
                tenant,
                day,
                metric,
                gauge: true,
            });
        }
    }
    rows.rows
        .retain(|row| !too_large.contains(&TenantDay::new(row.tenant.clone(), row.day)));
    rows.into_batch(bases)
}

/// A list column of `usage_hourly` (`distinct_values`, `dimension_values`)
/// of rows each with its texts or none.
fn text_list<'a, T: AsRef<str> + 'a>(
    rows: impl Iterator<Item = Option<&'a [Option<T>]>>,
) -> ListArray {
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(distinct_value_field());
    for values in rows {
        match values {
            Some(values) => {
                for value in values {
                    builder.values().append_option(value.as_ref());
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    builder.finish()
}

/// A value as the table's `Decimal128(38, 9)`, if it fits.
fn scaled_decimal(value: &BigDecimal) -> Option<i128> {
    let (digits, scale) = value
        .with_scale(VALUE_SCALE.into())
        .into_bigint_and_exponent();
    debug_assert_eq!(scale, i64::from(VALUE_SCALE));
    let scaled = i128::try_from(digits).ok()?;
    (scaled.unsigned_abs() < 10u128.pow(u32::from(VALUE_PRECISION))).then_some(scaled)
}

struct RollupRow {
    tenant: String,
    day: NaiveDate,
    metric: String,
    gauge: bool,
    start: i64,
    events: i64,
    value_sum: i128,
    first_ts: i64,
    last_ts: i64,
    resource: Option<String>,
    last_value: Option<i128>,
    meter: Option<HourMeter>,
    /// A dimensional counter's day row: its class's values.
    dimension_values: Option<Vec<Option<String>>>,
}

/// What an hourly row of a meter metric keeps besides `last_value`.
struct HourMeter {
    value_max: Option<i128>,
    last_event_id: Option<String>,
    /// The distinct values, sorted (`unique_count` rows only).
    distinct: Option<Vec<Option<String>>>,
}

#[derive(Default)]
struct RollupRows {
    rows: Vec<RollupRow>,
}

impl RollupRows {
    fn push(&mut self, row: RollupRow) {
        self.rows.push(row);
    }

    /// The rows as a `usage_hourly` batch; rows of partitions without a basis are
    /// dropped (there are none when the session read only `bases`' partitions).
    fn into_batch(self, bases: &BTreeMap<TenantDay, i64>) -> Result<RecordBatch, LakeError> {
        let rows: Vec<(RollupRow, i64)> = self
            .rows
            .into_iter()
            .filter_map(|row| {
                let basis = bases
                    .get(&TenantDay::new(row.tenant.clone(), row.day))
                    .copied()?;
                Some((row, basis))
            })
            .collect();
        let decimal = |values: Vec<Option<i128>>| -> Result<ArrayRef, LakeError> {
            Ok(Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(VALUE_PRECISION, VALUE_SCALE as i8)
                    .map_err(LakeError::from)?,
            ))
        };
        let micros = |values: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(r, _)| r.tenant.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, b)| *b))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(r, _)| r.metric.as_str()),
            )),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|(r, _)| Some(r.gauge)),
            )),
            micros(rows.iter().map(|(r, _)| r.start).collect()),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(r, _)| r.events),
            )),
            decimal(rows.iter().map(|(r, _)| Some(r.value_sum)).collect())?,
            micros(rows.iter().map(|(r, _)| r.first_ts).collect()),
            micros(rows.iter().map(|(r, _)| r.last_ts).collect()),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(r, _)| r.resource.as_deref()),
            )),
            decimal(rows.iter().map(|(r, _)| r.last_value).collect())?,
            decimal(
                rows.iter()
                    .map(|(r, _)| r.meter.as_ref().and_then(|m| m.value_max))
                    .collect(),
            )?,
            Arc::new(StringArray::from_iter(rows.iter().map(|(r, _)| {
                r.meter.as_ref().and_then(|m| m.last_event_id.as_deref())
            }))),
            Arc::new(text_list(rows.iter().map(|(r, _)| {
                r.meter.as_ref().and_then(|m| m.distinct.as_deref())
            }))),
            Arc::new(text_list(
                rows.iter().map(|(r, _)| r.dimension_values.as_deref()),
            )),
            Arc::new(Date32Array::from_iter_values(
                rows.iter().map(|(r, _)| days_since_epoch(r.day)),
            )),
        ];
        RecordBatch::try_new(usage_hourly_schema(), columns).map_err(LakeError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_that_do_not_fit_are_refused() {
        assert_eq!(scaled_decimal(&"1.5".parse().unwrap()), Some(1_500_000_000));
        assert_eq!(scaled_decimal(&"1e30".parse().unwrap()), None);
    }
}
